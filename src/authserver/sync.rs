//! The periodic comparison of the authorization server's clients with the apps.
//!
//! Every `sync_interval` (about a minute by default) the leader lists every
//! client registrar owns at the server (all pages) and compares it with what
//! each app's status says the server holds:
//! - a client missing or altered there marks its app stale, and the app's
//!   reconcile registers it again (the secret comes from the credentials Secret);
//! - a client of registrar's whose app is gone (or holds another Client ID now)
//!   is deleted, with its tokens, once the apiserver confirms it (an app outside
//!   this instance's namespace or selector is not gone);
//! - a server that cannot be reached makes every app report it
//!   (`Registered=False`, `Ready=False`), and its return makes them recover.
//!
//! Clients that are not registrar's (another owner) are never listed, let
//! alone touched.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{SinkExt, channel::mpsc};
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use tracing::{info, warn};

use super::AuthServer;
use crate::{
    api::AppRegistration,
    credentials::retention::Retention,
    index::Key,
    metrics::{Metrics, ReasonLabels},
    packed::PackedApp,
    watches::Caches,
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
    metrics.count_authserver("list", &listed);
    let apps = caches.apps.state();
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

    let by_id: HashMap<&str, &super::RemoteClient> =
        remote.iter().map(|c| (c.registration.client_id.as_str(), c)).collect();
    let mut comparison = Comparison { owned: remote.len(), ..Default::default() };
    let mut stale = Vec::new();
    let mut accounted: HashSet<&str> = HashSet::new();
    for app in &apps {
        let Some((key, client_id, recorded)) = registered(app, caches) else { continue };
        accounted.insert(client_id);
        match by_id.get(client_id) {
            None => {
                comparison.missing += 1;
                stale.push(key);
            }
            Some(client) if client.registration.digest() != recorded => {
                comparison.altered += 1;
                stale.push(key);
            }
            Some(_) => {}
        }
    }
    let mut retained_in: HashMap<String, Option<HashSet<String>>> = HashMap::new();
    for client in &remote {
        let id = client.registration.client_id.as_str();
        if accounted.contains(id)
            || !is_orphan(client, caches)
            || !confirmed_orphan(client, kube, caches, &mut retained_in).await
        {
            continue;
        }
        let deleted = server.delete(id).await;
        metrics.count_authserver("delete", &deleted);
        match deleted {
            Ok(()) => {
                comparison.orphans_deleted += 1;
                info!(client_id = id, app = client.registration.app, "deleted a client whose app is gone");
            }
            Err(e) => warn!(client_id = id, error = %e, "could not delete a client whose app is gone"),
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
        let _ = triggers.send(ObjectRef::new(&key.1).within(&key.0)).await;
    }
    Ok(comparison)
}

/// An app the server should hold, with its key, its Client ID and the digest
/// of the registration status says the server holds.
fn registered<'a>(app: &'a AppRegistration, caches: &Caches) -> Option<(Key, &'a str, &'a str)> {
    if app.meta().deletion_timestamp.is_some() {
        return None;
    }
    let status = app.status.as_ref()?;
    let client_id = status.client_id.as_deref()?;
    let recorded = status.authorization_server.as_ref()?.registered.as_deref()?;
    let key = (app.namespace().unwrap_or_default(), app.name_any());
    let uid = app.uid().unwrap_or_default();
    (!caches.index.taken_by_other(&key, uid.as_str(), client_id)).then_some((key, client_id, recorded))
}

/// Asks the apiserver whether the client's app is really gone: an app outside
/// this instance's caches (another namespace with `--watch-namespace`, another
/// shard with `--selector`) may still hold it. Anything but a clear "gone" or
/// "holds another Client ID" keeps the client.
async fn confirmed_orphan(
    client: &super::RemoteClient,
    kube: &kube::Client,
    caches: &Caches,
    retained_in: &mut HashMap<String, Option<HashSet<String>>>,
) -> bool {
    let Some((namespace, name)) = client.registration.app.split_once('/') else { return true };
    // Retained (deletionPolicy: Retain) in its namespace: kept, whatever this
    // instance watches. One list per namespace and comparison.
    if !retained_in.contains_key(namespace) {
        let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), namespace);
        let labelled = kube::api::ListParams::default().labels(crate::credentials::layout::APP_LABEL);
        let found = secrets.list_metadata(&labelled).await.ok().map(|list| {
            list.items
                .iter()
                .filter_map(|s| Retention::read(namespace, &s.name_any(), s.annotations(), &caches.seal_key))
                .map(|r| r.client_id)
                .collect()
        });
        retained_in.insert(namespace.to_owned(), found);
    }
    match retained_in.get(namespace) {
        Some(Some(ids)) if !ids.contains(&client.registration.client_id) => {}
        // Retained there, or the Secrets could not be listed: kept.
        _ => return false,
    }
    match kube::Api::<AppRegistration>::namespaced(kube.clone(), namespace).get_opt(name).await {
        Ok(None) => true,
        Ok(Some(app)) => {
            app.meta().deletion_timestamp.is_none()
                && app
                    .status
                    .as_ref()
                    .and_then(|s| s.client_id.as_deref())
                    .is_some_and(|held| held != client.registration.client_id)
        }
        Err(_) => false,
    }
}

/// A client of registrar's that no live app accounts for: its app is gone, or
/// holds another Client ID now. Never a client whose ID an app holds, and
/// never while its app is minting (no Client ID yet) or being deleted (the
/// finalizer deletes it).
fn is_orphan(client: &super::RemoteClient, caches: &Caches) -> bool {
    let id = &client.registration.client_id;
    if caches.index.app_of_client(id).is_some() || caches.index.retained(id).is_some() {
        return false;
    }
    let Some((namespace, name)) = client.registration.app.split_once('/') else { return true };
    match caches.apps.get(namespace, name) {
        None => true,
        Some(app) if app.meta().deletion_timestamp.is_some() => false,
        Some(app) => app.status.as_ref().and_then(|s| s.client_id.as_deref()).is_some_and(|held| held != id),
    }
}

async fn trigger_all(apps: &[Arc<AppRegistration>], triggers: &mut mpsc::Sender<ObjectRef<PackedApp>>) {
    for app in apps {
        let _ = triggers.send(ObjectRef::new(&app.name_any()).within(&app.namespace().unwrap_or_default())).await;
    }
}
