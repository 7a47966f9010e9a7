//! The periodic comparison of the authorization server's clients with the apps.
//!
//! Every `sync_interval` (about a minute by default) the leader lists every
//! client with registrar's owner at the server (all pages) and compares it
//! with what each app's status says the server holds:
//! - a client missing there, altered, or not in the app's lane (another
//!   app's or another cluster's mark, or none) marks its app stale, and the
//!   app's reconcile registers it again (the secret comes from the credentials
//!   Secret) — where the client is not the app's, that reports `ClientExists`;
//! - a client with this cluster's mark whose Client ID the ledger has revoked
//!   is deleted, with its tokens; so is one the ledger has no entry for, once
//!   the apiserver confirms that the app it names is gone;
//! - a server that cannot be reached makes every app report it
//!   (`Registered=False`, `Ready=False`), and its return makes them recover.
//!
//! Clients of another owner are never listed; another cluster's, or clients
//! without a cluster mark, never deleted.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{SinkExt, channel::mpsc};
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use tracing::{info, warn};

use super::{AuthServer, Lane, Mark, RemoteClient};
use crate::{
    api::AppRegistration,
    api::Holder,
    cluster::Caches,
    cluster::PackedApp,
    cluster::ledger::Word,
    runtime::metrics::{Metrics, ReasonLabels},
    runtime::{Key, key_of},
};

/// What the comparisons found, shared with the controller.
#[derive(Debug, Default)]
pub struct SyncState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Why the last comparison could not reach the server.
    unreachable: Option<String>,
    /// Apps whose client the server lost or altered, until registered again.
    stale: HashSet<Key>,
}

impl SyncState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the server could not be reached at the last comparison, if it could not.
    pub fn unreachable(&self) -> Option<String> {
        self.lock().unreachable.clone()
    }

    /// The server lost or altered the app's client.
    pub fn is_stale(&self, app: &Key) -> bool {
        self.lock().stale.contains(app)
    }

    /// The app's client was registered again.
    pub fn repaired(&self, app: &Key) {
        self.lock().stale.remove(app);
    }

    /// Records the comparison's reachability; true when it changed.
    fn reached(&self, outcome: Option<String>) -> bool {
        let mut inner = self.lock();
        let changed = inner.unreachable.is_some() != outcome.is_some();
        inner.unreachable = outcome;
        changed
    }
}

/// What one comparison did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub owned: usize,
    pub missing: usize,
    pub altered: usize,
    pub orphans_deleted: usize,
}

/// Compares every `sync_interval` until `shutdown` resolves. Run by the leader only.
pub async fn run(
    server: AuthServer,
    kube: kube::Client,
    caches: Caches,
    state: Arc<SyncState>,
    mut triggers: mpsc::Sender<ObjectRef<PackedApp>>,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    caches.synced().await;
    let mut ticks = tokio::time::interval(server.sync_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let started = std::time::Instant::now();
        match compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await {
            Ok(c) if c.missing + c.altered + c.orphans_deleted > 0 => info!(
                server = server.capabilities().name,
                owned = c.owned,
                missing = c.missing,
                altered = c.altered,
                orphans_deleted = c.orphans_deleted,
                took = ?started.elapsed(),
                "compared the authorization server's clients with the apps"
            ),
            Ok(_) => {}
            Err(reason) => {
                warn!(server = server.capabilities().name, reason, "cannot compare with the authorization server")
            }
        }
    }
}

/// One comparison. `Err`: the server could not be reached (every app is told).
pub async fn compare(
    server: &AuthServer,
    kube: &kube::Client,
    caches: &Caches,
    state: &SyncState,
    triggers: &mut mpsc::Sender<ObjectRef<PackedApp>>,
    metrics: &Metrics,
) -> Result<Comparison, String> {
    let listed = server.list_owned().await;
    metrics.count_authserver("list", super::outcome(&listed));
    let apps = caches.apps();
    let remote = match listed {
        Ok(remote) => remote,
        Err(e) => {
            let reason = e.to_string();
            metrics.authserver_reachable.set(0);
            if state.reached(Some(reason.clone())) {
                trigger_all(&apps, triggers).await;
            }
            return Err(reason);
        }
    };
    metrics.authserver_reachable.set(1);
    let flipped = state.reached(None);

    let by_id: HashMap<&str, &RemoteClient> = remote.iter().map(|c| (c.registration.client_id.as_str(), c)).collect();
    let mut comparison = Comparison { owned: remote.len(), ..Default::default() };
    let mut stale = Vec::new();
    let mut accounted: HashSet<&str> = HashSet::new();
    for app in &apps {
        let Some((key, client_id, recorded, lane)) = registered(app, caches) else { continue };
        accounted.insert(client_id);
        match by_id.get(client_id) {
            None => {
                comparison.missing += 1;
                stale.push(key);
            }
            Some(client) if client.registration.digest() != recorded || !in_lane(client, &lane) => {
                comparison.altered += 1;
                stale.push(key);
            }
            Some(_) => {}
        }
    }
    for client in &remote {
        let id = client.registration.client_id.as_str();
        if accounted.contains(id) || client.mark != Mark::Ours || !is_orphan(client, kube, caches).await {
            continue;
        }
        let deleted = server.delete(id, &Lane::listed(&client.registration)).await;
        metrics.count_authserver("delete", super::outcome(&deleted));
        match deleted {
            Ok(()) => {
                comparison.orphans_deleted += 1;
                info!(client_id = id, app = client.registration.app, "deleted a client whose Client ID is revoked");
            }
            Err(e) => warn!(client_id = id, error = %e, "could not delete a client whose Client ID is revoked"),
        }
    }
    for (kind, n) in [("Missing", comparison.missing), ("Altered", comparison.altered)] {
        metrics.authserver_repairs.get_or_create(&ReasonLabels { reason: kind.into() }).inc_by(n as u64);
    }
    metrics
        .authserver_repairs
        .get_or_create(&ReasonLabels { reason: "Orphan".into() })
        .inc_by(comparison.orphans_deleted as u64);

    if flipped {
        trigger_all(&apps, triggers).await;
    }
    for key in stale {
        state.lock().stale.insert(key.clone());
        let _ = triggers.send(key.to_ref()).await;
    }
    Ok(comparison)
}

/// An app the server should hold, with its key, its Client ID, the digest
/// of the registration status says the server holds, and its lane there.
fn registered<'a>(app: &'a AppRegistration, caches: &Caches) -> Option<(Key, &'a str, &'a str, Lane)> {
    if app.meta().deletion_timestamp.is_some() {
        return None;
    }
    let status = app.status.as_ref()?;
    let client_id = status.client_id.as_deref()?;
    let recorded = status.authorization_server.as_ref()?.registered.as_deref()?;
    let key = key_of(app);
    let uid = app.uid().unwrap_or_default();
    if !caches.ledger().holds(&key, uid.as_str(), client_id) {
        return None;
    }
    let lane = Lane::of(&Holder::of(app), caches.ledger().taken_over_from(client_id));
    Some((key, client_id, recorded, lane))
}

/// Whether a listed client is the app's in this cluster.
fn in_lane(client: &RemoteClient, lane: &Lane) -> bool {
    client.mark == Mark::Ours && lane.admits(&client.registration.app, &client.registration.uid)
}

/// A client with this cluster's mark that no app accounts for, whose Client
/// ID is revoked in the ledger. One the ledger has no entry for (released, or
/// from before the ledger) goes once the apiserver confirms that the app it
/// names is gone. Never a Client ID the ledger gives an app, or retains: an
/// app being issued or deleted (its finalizer deletes its client) or held by
/// another instance is not an orphan.
async fn is_orphan(client: &RemoteClient, kube: &kube::Client, caches: &Caches) -> bool {
    match caches.ledger().word(&client.registration.client_id) {
        Word::Revoked => true,
        Word::Standing(_) => false,
        Word::Free => {
            let Some((namespace, name)) = client.registration.app.split_once('/') else { return false };
            match kube::Api::<AppRegistration>::namespaced(kube.clone(), namespace).get_opt(name).await {
                Ok(None) => true,
                Ok(Some(app)) => app.uid().is_some_and(|uid| uid != client.registration.uid),
                Err(_) => false,
            }
        }
    }
}

async fn trigger_all(apps: &[Arc<AppRegistration>], triggers: &mut mpsc::Sender<ObjectRef<PackedApp>>) {
    for app in apps {
        let _ = triggers.send(key_of(app.as_ref()).to_ref()).await;
    }
}

/// The comparison against a fake Hydra admin API on loopback that keeps
/// clients in memory and counts every call: what each comparison costs the
/// server, and what it repairs.
#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use axum::{
        Json, Router,
        extract::{Path, Query, State},
        http::StatusCode,
        routing::{delete, get},
    };
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        api::{AppRegistrationSpec, AppRegistrationStatus, AuthServerStatus, ClientIdEntry, Holder, LedgerState},
        authserver::{ClientRegistration, Kind, Settings},
        cluster::Contents,
        runtime::mock,
    };

    const UID: &str = "66666666-6666-6666-6666-666666666666";

    #[derive(Clone, Default)]
    struct Fake {
        clients: Arc<Mutex<BTreeMap<String, Value>>>,
        calls: Arc<Mutex<Vec<String>>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Fake {
        fn called(&self, call: String) -> Result<(), StatusCode> {
            self.calls.lock().unwrap().push(call);
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                Err(StatusCode::SERVICE_UNAVAILABLE)
            } else {
                Ok(())
            }
        }

        /// The calls since the last look.
        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    async fn list(
        State(fake): State<Fake>,
        Query(q): Query<BTreeMap<String, String>>,
    ) -> Result<Json<Value>, StatusCode> {
        fake.called("GET /admin/clients".into())?;
        let clients = fake.clients.lock().unwrap();
        let owned: Vec<Value> = clients.values().filter(|c| c["owner"] == q["owner"]).cloned().collect();
        Ok(Json(Value::Array(owned)))
    }

    async fn create(
        State(fake): State<Fake>,
        Json(mut client): Json<Value>,
    ) -> Result<(StatusCode, Json<Value>), StatusCode> {
        fake.called("POST /admin/clients".into())?;
        client.as_object_mut().expect("an object").remove("client_secret");
        let id = client["client_id"].as_str().expect("an id").to_owned();
        fake.clients.lock().unwrap().insert(id, client.clone());
        Ok((StatusCode::CREATED, Json(client)))
    }

    async fn read(State(fake): State<Fake>, Path(id): Path<String>) -> Result<Json<Value>, StatusCode> {
        fake.called("GET /admin/clients/{id}".into())?;
        fake.clients.lock().unwrap().get(&id).cloned().map(Json).ok_or(StatusCode::NOT_FOUND)
    }

    async fn remove(State(fake): State<Fake>, Path(id): Path<String>) -> Result<StatusCode, StatusCode> {
        fake.called("DELETE /admin/clients/{id}".into())?;
        fake.clients.lock().unwrap().remove(&id);
        Ok(StatusCode::NO_CONTENT)
    }

    async fn revoke_tokens(State(fake): State<Fake>) -> Result<StatusCode, StatusCode> {
        fake.called("DELETE /admin/oauth2/tokens".into())?;
        Ok(StatusCode::NO_CONTENT)
    }

    async fn fake_hydra() -> (Fake, url::Url) {
        let fake = Fake::default();
        let router = Router::new()
            .route("/admin/clients", get(list).post(create))
            .route("/admin/clients/{id}", get(read).delete(remove))
            .route("/admin/oauth2/tokens", delete(revoke_tokens))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().expect("an address"))).expect("a URL");
        tokio::spawn(async move { axum::serve(listener, router).await });
        (fake, url)
    }

    fn server(admin_url: url::Url) -> AuthServer {
        AuthServer::connect(&Settings {
            kind: Kind::Hydra,
            admin_url,
            ca_file: None,
            token_file: None,
            basic_auth_file: None,
            issuer: url::Url::parse("http://127.0.0.1:4444/").expect("a URL"),
            token_url: None,
            owner: "registrar".into(),
            cluster: "cluster-a".into(),
            adopt_owners: Vec::new(),
            sync_interval: Duration::from_secs(60),
            deregister_within: Duration::from_secs(60),
        })
        .expect("a server")
    }

    fn registration(client_id: &str, app: &str, uid: &str) -> ClientRegistration {
        ClientRegistration {
            client_id: client_id.into(),
            name: "Billing".into(),
            redirect_uris: vec!["https://billing.example/cb".into()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec!["openid".into()],
            public: true,
            app: app.into(),
            uid: uid.into(),
        }
    }

    /// The app team/billing, registered at the server as its status records.
    fn app() -> AppRegistration {
        let mut app = AppRegistration::new("billing", AppRegistrationSpec::default());
        app.metadata.namespace = Some("team".into());
        app.metadata.uid = Some(UID.into());
        let registered = registration("id-billing", "team/billing", UID).digest();
        app.status = Some(AppRegistrationStatus {
            client_id: Some("id-billing".into()),
            authorization_server: Some(AuthServerStatus { registered: Some(registered), secret_version: None }),
            ..Default::default()
        });
        app
    }

    fn caches() -> Caches {
        let holder = |name: &str, uid: &str| Holder { namespace: "team".into(), name: name.into(), uid: uid.into() };
        let mut revoked = ClientIdEntry::active("id-gone", holder("gone", "77777777-7777-7777-7777-777777777777"));
        revoked.spec.state = LedgerState::Revoked;
        let mut elsewhere = ClientIdEntry::active("id-theirs", holder("theirs", UID));
        elsewhere.spec.state = LedgerState::Revoked;
        Caches::holding(Contents {
            apps: vec![app()],
            ledger: vec![ClientIdEntry::active("id-billing", holder("billing", UID)), revoked, elsewhere],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn each_comparison_lists_once_and_repairs_only_what_differs() {
        let (fake, url) = fake_hydra().await;
        let server = server(url);
        let caches = caches();
        let (kube, mut apiserver) = mock::pair();
        let (state, metrics) = (SyncState::default(), Metrics::new());
        let (mut triggers, mut asked) = mpsc::channel(16);
        let lane = Lane::of(&Holder::of(&app()), None);
        server.register(&registration("id-billing", "team/billing", UID), None, &lane).await.expect("registered");
        fake.calls();

        // In step: one list, nothing else, nobody asked to reconcile.
        let c = compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await.expect("compared");
        assert_eq!((c.owned, c.missing, c.altered, c.orphans_deleted), (1, 0, 0, 0));
        assert_eq!(fake.calls(), ["GET /admin/clients"]);
        assert!(asked.try_recv().is_err(), "no reconcile asked for");

        // Lost at the server: the app is stale and asked for, at the cost of the list.
        fake.clients.lock().unwrap().clear();
        let c = compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await.expect("compared");
        assert_eq!((c.owned, c.missing), (0, 1));
        assert_eq!(fake.calls(), ["GET /admin/clients"]);
        assert_eq!(asked.try_recv().expect("asked").name, "billing");
        assert!(state.is_stale(&Key::new("team", "billing")));

        // This cluster's client of a revoked Client ID goes, with its tokens;
        // another cluster's of a revoked one stays.
        let gone = registration("id-gone", "team/gone", "77777777-7777-7777-7777-777777777777");
        server.register(&gone, None, &Lane::listed(&gone)).await.expect("registered");
        let mut theirs = json!({
            "client_id": "id-theirs", "owner": "registrar",
            "metadata": {
                crate::api::keys::APP_LABEL: "team/theirs", "registrar.dev/uid": UID, "registrar.dev/cluster": "cluster-b",
            },
        });
        theirs["client_name"] = json!("Theirs");
        fake.clients.lock().unwrap().insert("id-theirs".into(), theirs);
        fake.calls();
        let c = compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await.expect("compared");
        assert_eq!(c.orphans_deleted, 1);
        assert_eq!(
            fake.calls(),
            [
                "GET /admin/clients",
                "GET /admin/clients/{id}",
                "DELETE /admin/oauth2/tokens",
                "DELETE /admin/clients/{id}",
            ]
        );
        let left: Vec<String> = fake.clients.lock().unwrap().keys().cloned().collect();
        assert_eq!(left, ["id-theirs"]);
        apiserver.expect_none_within(Duration::from_millis(100)).await;
    }

    /// A server that cannot be reached: every app is told, once; its return
    /// tells them again.
    #[tokio::test]
    async fn an_unreachable_server_is_told_to_every_app_once() {
        let (fake, url) = fake_hydra().await;
        let server = server(url);
        let caches = caches();
        let (kube, _apiserver) = mock::pair();
        let (state, metrics) = (SyncState::default(), Metrics::new());
        let (mut triggers, mut asked) = mpsc::channel(16);
        fake.down.store(true, std::sync::atomic::Ordering::Relaxed);
        compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await.expect_err("unreachable");
        assert!(state.unreachable().is_some());
        assert_eq!(asked.try_recv().expect("asked").name, "billing");
        compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await.expect_err("still unreachable");
        assert!(asked.try_recv().is_err(), "told once");
        fake.down.store(false, std::sync::atomic::Ordering::Relaxed);
        compare(&server, &kube, &caches, &state, &mut triggers, &metrics).await.expect("back");
        assert!(state.unreachable().is_none());
        assert_eq!(asked.try_recv().expect("asked").name, "billing");
    }
}
