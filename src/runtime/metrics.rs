//! Prometheus metrics of the operator, and the client layer that counts every
//! request the operator makes to the apiserver (the "quiet" property is measured
//! with it: an unchanged app costs zero writes).
//!
//! Labels are small fixed sets (verbs, reasons, error variants), never object
//! names, so cardinality stays bounded.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// appregistration, appconsent or organizationpolicy.
    pub controller: String,
    pub error: String,
}

/// An app's Ready condition: True, False or Unknown (not reconciled yet).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub ready: String,
}

/// A kind of object: AppRegistration or AppConsent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Which controller: appregistration, appconsent or organizationpolicy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

impl ControllerLabels {
    pub fn of(controller: &str) -> Self {
        ControllerLabels { controller: controller.to_owned() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The operator's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Every family registered: its exported name and type.
    families: Arc<Vec<(String, &'static str)>>,
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub mints: Family<ReasonLabels, Counter>,
    pub hash_seconds: Histogram,
    pub kube_requests: Family<VerbLabels, Counter>,
    pub kube_reviews: Counter,
    pub cached_secrets: Gauge,
    pub apps: Family<ReadyLabels, Gauge>,
    /// Objects created more than a minute ago that registrar has not given a
    /// status yet: nonzero for long means something lost their reconcile.
    pub without_status: Family<KindLabels, Gauge>,
    pub leader: Gauge,
    pub authserver_requests: Family<AuthServerLabels, Counter>,
    /// Deleted apps whose client the authorization server failed to delete
    /// for longer than --auth-server-deregister-within.
    pub deregistrations_deferred: Counter,
    pub authserver_repairs: Family<ReasonLabels, Counter>,
    pub authserver_reachable: Gauge,
    pub registry_requests: Family<RequestLabels, Counter>,
    pub registry_verifications: Family<ReasonLabels, Counter>,
    pub registry_cache_hits: Family<CacheLabels, Counter>,
    pub registry_tokenreview_seconds: Histogram,
    pub registry_hashes_running: Gauge,
    pub registry_hashes_running_peak: Gauge,
    pub registry_connections: Gauge,
    pub registry_connections_refused: Counter,
    pub registry_token_refusals: Family<ReasonLabels, Counter>,
    pub registry_token_throttled: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern (`/v1/clients/{client_id}`), never a concrete path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// verified, failed, token, decision.
    pub cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthServerLabels {
    /// register, update, delete, list.
    pub call: String,
    /// ok, or the error's reason (Unavailable, Refused, ClientExists).
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("registrar");
        let mut families: Vec<(String, &'static str)> = Vec::new();
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "reconciliations",
            "Reconciliations run, by controller",
            reconciliations.clone(),
        );
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        register(
            &mut registry,
            &mut families,
            "reconcile_duration_seconds",
            "How long reconciliations take, by controller",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "reconcile_errors",
            "Failed reconciliations by controller and error kind",
            reconcile_errors.clone(),
        );
        let mints = Family::<ReasonLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "secret_mints",
            "Client secrets minted, by reason (Initial, RotateRequested, Scheduled, SecretMissing, SecretAltered, SecretUntrusted)",
            mints.clone(),
        );
        let hash_seconds = Histogram::new([0.0002, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        register(
            &mut registry,
            &mut families,
            "secret_hash_seconds",
            "argon2id hashing latency, including waiting for the pool",
            hash_seconds.clone(),
        );
        let kube_requests = Family::<VerbLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "kube_requests",
            "Requests to the Kubernetes API by HTTP method",
            kube_requests.clone(),
        );
        let kube_reviews = Counter::default();
        register(
            &mut registry,
            &mut families,
            "kube_reviews",
            "Of the POST requests, SubjectAccessReviews and TokenReviews: questions that change nothing",
            kube_reviews.clone(),
        );
        let apps = Family::<ReadyLabels, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "apps",
            "AppRegistrations in the cache, by their Ready condition",
            apps.clone(),
        );
        let without_status = Family::<KindLabels, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "objects_without_status",
            "AppRegistrations and AppConsents in the cache, created over a minute ago, that have no status yet",
            without_status.clone(),
        );
        let cached_secrets = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "cached_secrets",
            "Secrets in the operator's cache (only those labelled registrar.dev/app)",
            cached_secrets.clone(),
        );
        let leader = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "leader",
            "1 while this replica reconciles (holds the leader lease, or runs without election)",
            leader.clone(),
        );
        let authserver_requests = Family::<AuthServerLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "authserver_calls",
            "Calls to the authorization server's admin API, by call and outcome",
            authserver_requests.clone(),
        );
        let deregistrations_deferred = Counter::default();
        register(
            &mut registry,
            &mut families,
            "authserver_deregistrations_deferred",
            "Deleted apps whose client the authorization server failed to delete within \
             --auth-server-deregister-within: their deletion completed, the comparison deletes the client later",
            deregistrations_deferred.clone(),
        );
        let authserver_repairs = Family::<ReasonLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "authserver_repairs",
            "What the periodic comparison with the authorization server found, by kind (Missing, Altered, Orphan)",
            authserver_repairs.clone(),
        );
        let authserver_reachable = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "authserver_reachable",
            "1 when the last comparison with the authorization server succeeded",
            authserver_reachable.clone(),
        );
        let registry_requests = Family::<RequestLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "registry_requests",
            "Registry API requests by route pattern and HTTP status",
            registry_requests.clone(),
        );
        let registry_verifications = Family::<ReasonLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "registry_verifications",
            "Client secret presentations by outcome (verified, refused, shed, throttled; cached ones too)",
            registry_verifications.clone(),
        );
        let registry_cache_hits = Family::<CacheLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "registry_cache_hits",
            "Registry answers served from a cache, by cache (verified, failed, token, decision)",
            registry_cache_hits.clone(),
        );
        let registry_tokenreview_seconds = Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]);
        register(
            &mut registry,
            &mut families,
            "registry_tokenreview_seconds",
            "Latency of the TokenReviews that authenticate registry callers",
            registry_tokenreview_seconds.clone(),
        );
        let registry_hashes_running = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "registry_hashes_running",
            "argon2id verifications the registry runs now",
            registry_hashes_running.clone(),
        );
        let registry_hashes_running_peak = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "registry_hashes_running_peak",
            "The most argon2id verifications the registry ever ran at once",
            registry_hashes_running_peak.clone(),
        );
        let registry_connections = Gauge::default();
        register(
            &mut registry,
            &mut families,
            "registry_connections",
            "Connections the registry API holds open",
            registry_connections.clone(),
        );
        let registry_connections_refused = Counter::default();
        let registry_token_refusals = Family::<ReasonLabels, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "registry_token_refusals",
            "Tokens refused through the authorization server's token hook, by reason",
            registry_token_refusals.clone(),
        );
        register(
            &mut registry,
            &mut families,
            "registry_connections_refused",
            "Connections the registry API closed at once: it held as many as it allows",
            registry_connections_refused.clone(),
        );
        let registry_token_throttled = Counter::default();
        register(
            &mut registry,
            &mut families,
            "registry_callers_throttled",
            "Registry callers turned away without a TokenReview: their source presented too many refused tokens",
            registry_token_throttled.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            families: Arc::new(families),
            reconciliations,
            reconcile_duration,
            reconcile_errors,
            mints,
            hash_seconds,
            kube_requests,
            kube_reviews,
            cached_secrets,
            apps,
            without_status,
            leader,
            authserver_requests,
            deregistrations_deferred,
            authserver_repairs,
            authserver_reachable,
            registry_requests,
            registry_verifications,
            registry_cache_hits,
            registry_tokenreview_seconds,
            registry_hashes_running,
            registry_hashes_running_peak,
            registry_connections,
            registry_connections_refused,
            registry_token_refusals,
            registry_token_throttled,
        }
    }

    /// Counts one call to the authorization server, with its outcome (`ok`,
    /// or the reason it failed).
    pub fn count_authserver(&self, call: &str, outcome: &str) {
        self.authserver_requests.get_or_create(&AuthServerLabels { call: call.into(), outcome: outcome.into() }).inc();
    }

    /// Every metric family the operator exports, `(name, type)`, with or
    /// without samples yet (an empty family is not rendered).
    pub fn families(&self) -> &[(String, &'static str)] {
        &self.families
    }

    /// The series names a family's samples carry (`_total` for a counter,
    /// `_bucket`, `_sum` and `_count` for a histogram).
    pub fn series_names(&self) -> Vec<String> {
        self.families
            .iter()
            .flat_map(|(name, kind)| {
                let suffixes: &[&str] = match *kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                suffixes.iter().map(move |s| format!("{name}{s}"))
            })
            .collect()
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts one finished reconciliation of `controller` that took `seconds`.
    pub fn reconciled(&self, controller: &str, seconds: f64) {
        let labels = ControllerLabels::of(controller);
        self.reconciliations.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one request to the apiserver.
    pub fn count_request(&self, method: &http::Method, path: &str) {
        self.kube_requests.get_or_create(&VerbLabels { verb: method.as_str().to_owned() }).inc();
        let review =
            ["/apis/authorization.k8s.io/", "/apis/authentication.k8s.io/"].iter().any(|p| path.starts_with(p));
        if method == http::Method::POST && review {
            self.kube_reviews.inc();
        }
    }
}

/// Registers `metric` as `registrar_<name>`, and records its name and type.
fn register(
    registry: &mut Registry,
    families: &mut Vec<(String, &'static str)>,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    use prometheus_client::metrics::MetricType;
    let kind = match metric.metric_type() {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Info => "info",
        _ => "unknown",
    };
    families.push((format!("registrar_{name}"), kind));
    registry.register(name, help, metric);
}

/// Builds a client that counts its requests in `metrics`.
pub fn counted_client(config: kube::Config, metrics: &Metrics) -> Result<kube::Client, kube::Error> {
    let metrics = metrics.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        metrics.count_request(req.method(), req.uri().path());
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_prefix() {
        let m = Metrics::new();
        m.reconciliations.get_or_create(&ControllerLabels::of("appregistration")).inc();
        m.count_request(&http::Method::PATCH, "/api/v1/namespaces/a/secrets/b");
        m.count_request(&http::Method::POST, "/apis/authorization.k8s.io/v1/subjectaccessreviews");
        m.count_request(&http::Method::POST, "/api/v1/namespaces/a/secrets");
        let text = m.render();
        assert!(text.contains("registrar_reconciliations_total{controller=\"appregistration\"} 1"), "{text}");
        assert!(text.contains("registrar_kube_requests_total{verb=\"PATCH\"} 1"), "{text}");
        assert!(text.contains("registrar_kube_requests_total{verb=\"POST\"} 2"), "{text}");
        assert!(text.contains("registrar_kube_reviews_total 1"), "{text}");
    }
}
