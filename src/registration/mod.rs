//! The AppRegistration controller: reconcile = read → validate → plan (pure) →
//! apply (I/O) → status.
//!
//! It reads the shared caches (`crate::cluster`): AppRegistrations, the
//! metadata of the Secrets labelled `registrar.dev/app` (so unrelated Secrets
//! are never cached, and no Secret's data is held because of a label), and the
//! consents that point at each app. Deletion runs a finalizer that revokes the
//! credentials.

mod error;
pub mod event;
pub mod ledger;
pub mod owner;
pub mod plan;
mod reconcile;
pub mod registered_by;
pub mod retention;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use kube::runtime::{controller::Action, events::Reporter, reflector::ObjectRef};

pub use error::Error;
pub use reconcile::{Context, FIELD_MANAGER, FINALIZER};

use crate::{
    api::AppRegistration,
    authserver::{AuthServer, sync::SyncState},
    cluster::Caches,
    cluster::PackedApp,
    credentials::{Hasher, seal::SealKey},
    runtime::Key,
    runtime::controller::{self, Harness, Reconciler, Source},
    runtime::metrics::Metrics,
};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The only namespace where Global apps are accepted.
    pub platform_namespace: String,
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
    harness: Harness,
    settings: Settings,
    hasher: Hasher,
    caches: Caches,
    triggers: impl futures::Stream<Item = ObjectRef<PackedApp>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter { controller: "registrar".into(), instance: harness.instance.clone() };
    let store = caches.app_store();
    let ctx = Context::new(harness.client.clone(), settings, hasher, harness.metrics.clone(), reporter, caches);
    controller::run(Arc::new(ctx), harness, Source::Cache(store), triggers, shutdown).await;
}

impl Reconciler for Context {
    type Object = PackedApp;
    type Read = AppRegistration;
    type Error = Error;
    const KIND: &'static str = "AppRegistration";
    const CONTROLLER: &'static str = "appregistration";

    async fn synced(&self) {
        self.caches.synced().await;
    }

    /// Namespace by namespace.
    fn everything(&self) -> Vec<Key> {
        self.caches.app_keys()
    }

    /// The cache keeps apps packed: a reconcile reads one decoded.
    fn read(app: Arc<PackedApp>) -> Arc<AppRegistration> {
        Arc::new(app.unpack())
    }

    async fn reconcile(&self, app: Arc<AppRegistration>) -> Result<Action, Error> {
        reconcile::reconcile(&app, self).await
    }

    fn category(error: &Error) -> &'static str {
        error.metric_label()
    }

    fn before_pass(&self) {
        self.expect_apps(self.caches.app_count());
    }

    /// A tenth of the owner check period, so each owner is checked within a
    /// tenth of a period of its due time.
    fn sweep_every(&self) -> Option<Duration> {
        Some((self.settings.owner_check / 10).clamp(Duration::from_millis(200), Duration::from_secs(30)))
    }

    /// The apps whose owner is due for its periodic check (a period since the
    /// last; spread after a restart).
    fn due(&self) -> Vec<Key> {
        self.owner_checks_due()
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
        let tally = Tally::of(&caches.packed_apps(), &caches.consents(), k8s_openapi::jiff::Timestamp::now());
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
            *ready.entry(crate::api::conditions::word(app.ready())).or_default() += 1;
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

    /// The harness keys, backs off and tells Events by the app as read
    /// (decoded), the same app as the cache's copy names.
    #[test]
    fn the_harness_reads_a_cached_app_with_its_name() {
        let cached = Arc::new(app("billing", Timestamp::now(), None, false).as_ref().clone());
        let read = <Context as Reconciler>::read(cached.clone());
        assert_eq!(crate::runtime::key_of(read.as_ref()), Key::new("team", "billing"));
        assert_eq!(crate::runtime::key_of(cached.as_ref()), Key::new("team", "billing"), "the copy answers alike");
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
