//! The AppRegistration controller: reconcile = read → validate → plan (pure) →
//! apply (I/O) → status.
//!
//! It reads the shared caches (`crate::watches`): AppRegistrations, the
//! metadata of the Secrets labelled `registrar.dev/app` (so unrelated Secrets
//! are never cached, and no Secret's data is held because of a label), and the
//! consents that point at each app. Deletion runs a finalizer that revokes the
//! credentials.

mod error;
pub mod event;
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
pub use reconcile::{Context, FIELD_MANAGER, FINALIZER};

use crate::{
    authserver::{AuthServer, sync::SyncState},
    credentials::{Hasher, seal::SealKey},
    packed::PackedApp,
    runtime::catch_up::Passes,
    runtime::metrics::Metrics,
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
// The shared controller runtime (issue 28) will carry these together.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    settings: Settings,
    hasher: Hasher,
    metrics: Metrics,
    caches: Caches,
    triggers: impl futures::Stream<Item = ObjectRef<PackedApp>> + Send + 'static,
    passes: Passes,
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
    let passing = tokio::spawn(pass_over_everything(ctx.clone(), passes, pass_tx));

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

/// One reconcile of every cached app when the controller starts, after a
/// watch re-lists and every resync period (see [`crate::runtime::catch_up`]),
/// namespace by namespace.
async fn pass_over_everything(
    ctx: Arc<Context>,
    passes: Passes,
    to: futures::channel::mpsc::Sender<ObjectRef<PackedApp>>,
) {
    ctx.caches.synced().await;
    ctx.expect_apps(ctx.caches.apps.len());
    let index = ctx.caches.index.clone();
    let every_app = move || {
        let namespaces = index.namespaces_with_apps();
        let names = |ns: String| index.app_names_in(&ns).into_iter().map(move |name| (ns.clone(), name));
        namespaces.into_iter().flat_map(names).collect()
    };
    ctx.catch_up.keep_passing("AppRegistration", passes, every_app, to).await;
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

/// Counts the cached apps by their Ready condition into `registrar_apps`, and
/// the apps and consents created over a minute ago that have no status yet
/// into `registrar_objects_without_status`, every `every`, for dashboards and
/// alerts. A scan of the cache (no request); every replica reports what its
/// cache holds.
pub async fn count_apps(caches: Caches, metrics: Metrics, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let tally = Tally::of(&caches.apps.packed(), &caches.consents.state(), k8s_openapi::jiff::Timestamp::now());
        for (ready, n) in tally.ready {
            metrics.apps.get_or_create(&crate::runtime::metrics::ReadyLabels { ready: ready.into() }).set(n);
        }
        for (kind, n) in [("AppRegistration", tally.apps_without_status), ("AppConsent", tally.consents_without_status)]
        {
            let labels = crate::runtime::metrics::KindLabels { kind: kind.into() };
            metrics.without_status.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// What [`count_apps`] reports of one look at the caches.
#[derive(Debug, PartialEq)]
struct Tally {
    /// Apps not being deleted, by their Ready condition (True, False, Unknown).
    ready: std::collections::BTreeMap<&'static str, i64>,
    /// Apps not being deleted, created over [`UNTOUCHED_FOR`] seconds before
    /// now, with no Ready condition.
    apps_without_status: usize,
    /// The same of consents (no condition at all).
    consents_without_status: usize,
}

impl Tally {
    fn of(
        apps: &[Arc<PackedApp>],
        consents: &[Arc<crate::api::AppConsent>],
        now: k8s_openapi::jiff::Timestamp,
    ) -> Self {
        let overdue = |created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            created.is_some_and(|t| now.duration_since(t.0).as_secs() > UNTOUCHED_FOR)
        };
        let mut ready = std::collections::BTreeMap::from([("True", 0i64), ("False", 0), ("Unknown", 0)]);
        let mut apps_without_status = 0;
        for app in apps.iter().filter(|app| !app.deleting()) {
            let condition = match app.ready() {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            };
            *ready.entry(condition).or_default() += 1;
            if app.ready().is_none() && overdue(app.unpack().metadata.creation_timestamp.as_ref()) {
                apps_without_status += 1;
            }
        }
        let consents_without_status = consents
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter(|c| c.status.as_ref().is_none_or(|s| s.conditions.is_empty()))
            .filter(|c| overdue(c.metadata.creation_timestamp.as_ref()))
            .count();
        Tally { ready, apps_without_status, consents_without_status }
    }
}

/// Seconds after its creation from which an object without status counts in
/// `registrar_objects_without_status`.
const UNTOUCHED_FOR: i64 = 60;

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::{SignedDuration, Timestamp},
    };

    use super::*;
    use crate::api::{AppConsent, AppConsentSpec, AppRef, AppRegistration, AppRegistrationSpec, AppRegistrationStatus};

    fn app(name: &str, created: Timestamp, ready: Option<&str>, deleting: bool) -> Arc<PackedApp> {
        let mut app = AppRegistration::new(name, AppRegistrationSpec::default());
        app.metadata.namespace = Some("team".into());
        app.metadata.creation_timestamp = Some(Time(created));
        if deleting {
            app.metadata.deletion_timestamp = Some(Time(created));
        }
        app.status = ready.map(|status| AppRegistrationStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: "Issued".into(),
                message: String::new(),
                last_transition_time: Time(created),
                observed_generation: None,
            }],
            ..Default::default()
        });
        Arc::new(PackedApp::new(&app))
    }

    fn consent(name: &str, created: Timestamp) -> Arc<AppConsent> {
        let spec = AppConsentSpec {
            app_ref: AppRef { namespace: "owner".into(), name: "billing".into() },
            oauth_scopes: None,
        };
        let mut consent = AppConsent::new(name, spec);
        consent.metadata.creation_timestamp = Some(Time(created));
        Arc::new(consent)
    }

    #[test]
    fn objects_count_as_without_status_only_after_a_minute_and_not_while_deleted() {
        let now = Timestamp::now();
        let ago = |seconds: i64| now - SignedDuration::from_secs(seconds);
        let apps = [
            app("fresh", ago(30), None, false),
            app("forgotten", ago(120), None, false),
            app("going", ago(120), None, true),
            app("issued", ago(120), Some("True"), false),
            app("refused", ago(120), Some("False"), false),
        ];
        let consents = [consent("fresh", ago(30)), consent("forgotten", ago(120))];
        let tally = Tally::of(&apps, &consents, now);
        assert_eq!(
            tally,
            Tally {
                ready: [("False", 1), ("True", 1), ("Unknown", 2)].into(),
                apps_without_status: 1,
                consents_without_status: 1,
            }
        );
    }
}
