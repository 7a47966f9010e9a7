//! The AppRegistration controller: reconcile = read → validate → plan (pure) →
//! apply (I/O) → status.
//!
//! It reads the shared caches (`crate::watches`): AppRegistrations, the
//! metadata of the Secrets labelled `registrar.dev/app` (so unrelated Secrets
//! are never cached, and no Secret's data is held because of a label), and the
//! consents that point at each app. Deletion runs a finalizer that revokes the
//! credentials.

mod error;
pub mod owner;
pub mod plan;
mod reconcile;
pub mod registered_by;
pub mod retention;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Client,
    runtime::{Controller, controller::Config as ControllerConfig, events::Reporter, reflector::ObjectRef},
};
use tracing::{info, warn};

pub use error::Error;
pub use reconcile::{Context, FIELD_MANAGER, FINALIZER, status_patch};

use crate::{
    authserver::{AuthServer, sync::SyncState},
    credentials::{Hasher, seal::SealKey},
    metrics::Metrics,
    packed::PackedApp,
    watches::Caches,
};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The only namespace where Global apps are accepted.
    pub platform_namespace: String,
    /// Apps reconciled at once.
    pub concurrency: u16,
    /// Name reported on Events (the pod name in a cluster).
    pub instance: Option<String>,
    /// The key registrar seals the credentials Secrets it writes with.
    pub seal_key: SealKey,
    /// The authorization server apps are registered at, and what the periodic
    /// comparison with it found.
    pub auth_server: Option<(AuthServer, Arc<SyncState>)>,
    /// How often a `secret.sourceRef` is read again without any event.
    pub source_recheck: std::time::Duration,
    /// The MutatingAdmissionPolicy that writes `registrar.dev/registered-by`
    /// (and, with `-immutable`, the ValidatingAdmissionPolicy that keeps it):
    /// a source is read only while they are installed.
    pub registered_by_policy: String,
    /// Who takes over an app whose owner can no longer manage it, where its
    /// organization names nobody.
    pub default_owner: crate::api::Owner,
    /// How often an app's owner is checked without any change to the app.
    pub owner_check: std::time::Duration,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    hasher: Hasher,
    metrics: Metrics,
    caches: Caches,
    triggers: impl futures::Stream<Item = ObjectRef<PackedApp>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter { controller: "registrar".into(), instance: settings.instance.clone() };
    let reader = caches.apps.store();
    let concurrency = settings.concurrency;
    let sweep_every = (settings.owner_check / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
    let ctx = Arc::new(Context::new(client, settings, hasher, metrics, reporter, caches));
    let (sweep_tx, sweep_rx) = futures::channel::mpsc::channel(1024);
    let sweeping = tokio::spawn(sweep_owner_checks(ctx.clone(), sweep_tx, sweep_every));
    let (pass_tx, pass_rx) = futures::channel::mpsc::channel(usize::from(concurrency));
    let passing = tokio::spawn(first_pass(ctx.clone(), pass_tx));

    info!("AppRegistration controller started");
    let found_gone = ctx.clone();
    Controller::for_shared_stream(futures::stream::pending(), reader)
        .reconcile_on(futures::stream::select(futures::stream::select(triggers, sweep_rx), pass_rx))
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                Err(kube::runtime::controller::Error::ObjectNotFound(gone)) => {
                    // Deleted since it was queued.
                    found_gone.catch_up.started(&(gone.namespace.unwrap_or_default(), gone.name));
                }
                Err(other) => warn!(error = %other, "controller event"),
            }
            futures::future::ready(())
        })
        .await;
    sweeping.abort();
    passing.abort();
    info!("AppRegistration controller stopped");
}

/// One reconcile of every cached app when the controller starts (see
/// [`crate::catch_up`]), namespace by namespace.
async fn first_pass(ctx: Arc<Context>, mut to: futures::channel::mpsc::Sender<ObjectRef<PackedApp>>) {
    ctx.caches.synced().await;
    let started = std::time::Instant::now();
    let mut asked = 0;
    ctx.expect_apps(ctx.caches.apps.len());
    for namespace in ctx.caches.index.namespaces_with_apps() {
        let names = ctx.caches.index.app_names_in(&namespace);
        asked += ctx.catch_up.ask(names.into_iter().map(|name| (namespace.clone(), name)), &mut to).await;
    }
    info!(apps = asked, seconds = started.elapsed().as_secs_f64(), "asked for a reconcile of every app");
}

/// Every `every`, asks for a reconcile of each app whose owner is due for its
/// periodic check (a period since the last; spread after a restart). One
/// sweep for all apps rather than a timer each.
async fn sweep_owner_checks(
    ctx: Arc<Context>,
    mut to: futures::channel::mpsc::Sender<ObjectRef<PackedApp>>,
    every: Duration,
) {
    use futures::SinkExt;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for (namespace, name) in ctx.owner_checks_due() {
            if to.send(ObjectRef::new(&name).within(&namespace)).await.is_err() {
                return;
            }
        }
    }
}

/// Counts the cached apps by their Ready condition into `registrar_apps` every
/// `every`, for dashboards and the "apps not Ready" alert. A scan of the cache
/// (no request); every replica reports what its cache holds.
pub async fn count_apps(caches: Caches, metrics: Metrics, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let mut counts = std::collections::BTreeMap::from([("True", 0i64), ("False", 0), ("Unknown", 0)]);
        for app in caches.apps.packed() {
            if app.deleting() {
                continue;
            }
            let ready = match app.ready() {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            };
            *counts.entry(ready).or_default() += 1;
        }
        for (ready, n) in counts {
            metrics.apps.get_or_create(&crate::metrics::ReadyLabels { ready: ready.into() }).set(n);
        }
    }
}
