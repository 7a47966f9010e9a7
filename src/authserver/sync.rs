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
    ledger::{self, Word},
    packed::PackedApp,
    runtime::metrics::{Metrics, ReasonLabels},
    runtime::{Key, key_of},
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
    metrics.count_authserver("list", super::outcome(&listed));
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
    if !caches.ledger.holds(&key, uid.as_str(), client_id) {
        return None;
    }
    let lane = Lane::of(&ledger::holder_of(app), caches.ledger.taken_over_from(client_id));
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
    match caches.ledger.word(&client.registration.client_id) {
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
        let _ = triggers.send(ObjectRef::new(&app.name_any()).within(&app.namespace().unwrap_or_default())).await;
    }
}
