//! The registrar operator: reconciles AppRegistrations into credentials
//! Secrets, and serves /metrics, /healthz and /readyz.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use registrar::{
    authserver::{self, AuthServer, sync::SyncState},
    cluster::{self, Selection},
    consent,
    credentials::{
        HashParams, Hasher,
        seal::{self, SealKey},
    },
    registration::{self, Settings},
    registry,
    runtime::admin_server::{self, Readiness},
    runtime::leadership::{self, LeaseSettings},
    runtime::metrics::{self, Metrics},
    runtime::telemetry::{self, LogFormat},
};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Turns OAuth 2.0 client registrations into declarative Kubernetes resources.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Log line format.
    #[arg(long, env = "REGISTRAR_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "REGISTRAR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Manage only AppRegistrations and AppConsents matching this label
    /// selector (for sharding; default: all).
    #[arg(long, env = "REGISTRAR_SELECTOR")]
    selector: Option<String>,
    /// Read the watches' first lists page by page instead of streaming them
    /// (for apiservers with the WatchList feature turned off).
    #[arg(long, env = "REGISTRAR_PAGINATED_LISTS")]
    paginated_lists: bool,
    /// Organization of namespaces without the registrar.dev/organization label.
    #[arg(long, env = "REGISTRAR_DEFAULT_ORGANIZATION", default_value = "default")]
    default_organization: String,
    /// The only namespace where Global-scope apps are accepted.
    #[arg(long, env = "REGISTRAR_PLATFORM_NAMESPACE", default_value = "registrar-system")]
    platform_namespace: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "REGISTRAR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// AppRegistrations reconciled at once.
    #[arg(long, env = "REGISTRAR_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// argon2id memory cost in KiB.
    #[arg(long, env = "REGISTRAR_ARGON2_MEMORY_KIB", default_value_t = HashParams::default().memory_kib)]
    argon2_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, env = "REGISTRAR_ARGON2_ITERATIONS", default_value_t = HashParams::default().iterations)]
    argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "REGISTRAR_ARGON2_PARALLELISM", default_value_t = HashParams::default().parallelism)]
    argon2_parallelism: u32,
    /// Hashes computed at once (default: one per core).
    #[arg(long, env = "REGISTRAR_HASH_WORKERS")]
    hash_workers: Option<usize>,
    /// Instance name on Events and identity in the leader lease (the pod name
    /// in a cluster; default: the host name and a random suffix).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Address of the registry API.
    #[arg(long, env = "REGISTRAR_REGISTRY_ADDR", default_value = "0.0.0.0:8443")]
    registry_addr: SocketAddr,
    /// PEM certificate chain of the registry API.
    #[arg(long, env = "REGISTRAR_REGISTRY_TLS_CERT", requires = "registry_tls_key")]
    registry_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the registry API.
    #[arg(long, env = "REGISTRAR_REGISTRY_TLS_KEY", requires = "registry_tls_cert")]
    registry_tls_key: Option<std::path::PathBuf>,
    /// Serve the registry API over plain HTTP (only behind a TLS-terminating proxy, or for development).
    #[arg(long, env = "REGISTRAR_REGISTRY_INSECURE_HTTP", default_value_t = false)]
    registry_insecure_http: bool,
    /// Secret verifications the registry API runs at once (default: one per
    /// core); a verification waits up to 2 s for a turn, then gets 429.
    #[arg(long, env = "REGISTRAR_REGISTRY_HASH_WORKERS")]
    registry_hash_workers: Option<usize>,
    /// The audience registry callers' tokens must be issued for
    /// (`kubectl create token SA --audience registrar`).
    #[arg(long, env = "REGISTRAR_REGISTRY_AUDIENCE", default_value = "registrar")]
    registry_audience: String,
    /// Connections the registry keeps open at once; more are closed at once.
    #[arg(long, env = "REGISTRAR_REGISTRY_MAX_CONNECTIONS", default_value_t = 1024)]
    registry_max_connections: usize,
    /// Longest a registry client may take to send a request's headers (a Go duration).
    #[arg(long, env = "REGISTRAR_REGISTRY_HEADER_READ_TIMEOUT", default_value = "10s")]
    registry_header_read_timeout: kube::core::Duration,
    /// Address of the admission webhook (served when its certificate is given).
    #[arg(long, env = "REGISTRAR_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    webhook_addr: SocketAddr,
    /// PEM certificate chain of the admission webhook: with its key, registrar
    /// serves the webhook that records Registered By and adds the revoke
    /// finalizer on clusters without MutatingAdmissionPolicy (the chart sets
    /// both up: charts/registrar/README.md, "Admission").
    #[arg(long, env = "REGISTRAR_WEBHOOK_TLS_CERT", requires = "webhook_tls_key")]
    webhook_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the admission webhook.
    #[arg(long, env = "REGISTRAR_WEBHOOK_TLS_KEY", requires = "webhook_tls_cert")]
    webhook_tls_key: Option<std::path::PathBuf>,
    /// Run only while holding the leader Lease (for several replicas).
    #[arg(long, env = "REGISTRAR_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// The operator's own namespace (the pod's): the leader Lease and the seal
    /// key Secret live here. Tenants must not be able to read Secrets in it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    operator_namespace: String,
    /// Namespace of the leader Lease (default: the operator's namespace).
    #[arg(long, env = "REGISTRAR_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "REGISTRAR_LEADER_ELECTION_LEASE", default_value = "registrar")]
    leader_election_lease: String,
    /// Lease duration in seconds: the longest a failover takes.
    #[arg(long, env = "REGISTRAR_LEADER_ELECTION_DURATION", default_value_t = 15)]
    leader_election_duration: u64,
    /// Register every app at this authorization server (default: none).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER", value_enum, requires_all = ["auth_server_admin_url", "auth_server_issuer"])]
    auth_server: Option<authserver::Kind>,
    /// The authorization server's admin API (Hydra: its admin port, e.g. http://hydra-admin:4445).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_ADMIN_URL")]
    auth_server_admin_url: Option<url::Url>,
    /// The issuer URL workloads see (Hydra: its public URL); written into every credentials Secret.
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_ISSUER")]
    auth_server_issuer: Option<url::Url>,
    /// The token endpoint written into every credentials Secret (default: the issuer's /oauth2/token).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_TOKEN_URL")]
    auth_server_token_url: Option<url::Url>,
    /// PEM CA bundle to trust for the admin API (default: the system's roots).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_CA_FILE")]
    auth_server_ca_file: Option<std::path::PathBuf>,
    /// A file holding a bearer token for the admin API.
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_TOKEN_FILE", conflicts_with = "auth_server_basic_auth_file")]
    auth_server_token_file: Option<std::path::PathBuf>,
    /// A file holding `user:password` for HTTP Basic on the admin API.
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_BASIC_AUTH_FILE")]
    auth_server_basic_auth_file: Option<std::path::PathBuf>,
    /// The owner that marks a client as registrar's at the server (default:
    /// `registrar:<cluster id>`, one per cluster).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_OWNER")]
    auth_server_owner: Option<String>,
    /// Owners of clients registered before clients carried a cluster mark
    /// (registrar before the Client ID ledger: `registrar`, or the owner it
    /// was given): such a client is taken into this cluster's lane when this
    /// cluster's ledger gives its Client ID to the app it names.
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_ADOPT_OWNER", value_delimiter = ',')]
    auth_server_adopt_owner: Vec<String>,
    /// This cluster's mark on its clients at the authorization server
    /// (default: the UID of the kube-system namespace).
    #[arg(long, env = "REGISTRAR_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// How often the server's clients are compared with the apps (a Go duration).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_SYNC_INTERVAL", default_value = "60s")]
    auth_server_sync_interval: kube::core::Duration,
    /// How long a deleted app's finalizer waits for its client to be deleted
    /// at the authorization server while the server fails (retried with
    /// backoff) before the deletion completes without it; the comparison
    /// deletes the client once the server answers (a Go duration).
    #[arg(long, env = "REGISTRAR_AUTH_SERVER_DEREGISTER_WITHIN", default_value = "2m")]
    auth_server_deregister_within: kube::core::Duration,
    /// The Secret, in the operator's namespace, holding the key registrar seals
    /// the credentials Secrets it writes with (created at first start).
    #[arg(long, env = "REGISTRAR_SEAL_KEY_SECRET", default_value = seal::DEFAULT_KEY_SECRET)]
    seal_key_secret: String,
    /// How often a Secret named by `secret.sourceRef` is read again for a new
    /// value (a Go duration); any change to the app reads it at once.
    #[arg(long, env = "REGISTRAR_SECRET_SOURCE_INTERVAL", default_value = "60s")]
    secret_source_interval: kube::core::Duration,
    /// The MutatingAdmissionPolicy that records who registered each app
    /// (deploy/registered-by-policy.yaml; the chart names it after the
    /// release), or on clusters without it the MutatingWebhookConfiguration
    /// of registrar's webhook, of the same name. A `secret.sourceRef` is read
    /// for that user only while one of them, the ValidatingAdmissionPolicy
    /// `<name>-immutable` and their bindings are installed; registrar needs
    /// `get` on the five.
    #[arg(long, env = "REGISTRAR_REGISTERED_BY_POLICY", default_value = "registrar-registered-by")]
    registered_by_policy: String,
    /// How often each controller passes over every object it caches, a
    /// safety net that finds whatever was missed (a Go duration; `0s` turns
    /// it off). An object that has not drifted costs a cache read, no write.
    /// A pass also follows every watch re-list (after an apiserver restart).
    #[arg(long, env = "REGISTRAR_RESYNC_INTERVAL", default_value = "10m")]
    resync_interval: kube::core::Duration,
    /// Who takes over an app whose owner can no longer manage it, in an
    /// organization whose OrganizationPolicy names no owner (User:<name> or Group:<name>).
    #[arg(long, env = "REGISTRAR_DEFAULT_OWNER", default_value = "Group:system:masters")]
    default_owner: registrar::api::Owner,
    /// How often each app's owner is checked (a SubjectAccessReview) without
    /// any change to the app (a Go duration).
    #[arg(long, env = "REGISTRAR_OWNER_CHECK_INTERVAL", default_value = "10m")]
    owner_check_interval: kube::core::Duration,
}

// jemalloc, with one arena and freed pages handed back after a second
// (.cargo/config.toml): the caches grow by many small allocations from several
// threads, which glibc's per-thread arenas held apart. The allocators compared
// (glibc, jemalloc's defaults, this configuration, mimalloc) and what each
// held are in docs/benchmarks.md, "Memory".
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "registrar stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let params = HashParams {
        memory_kib: args.argon2_memory_kib,
        iterations: args.argon2_iterations,
        parallelism: args.argon2_parallelism,
    };
    let hasher = match args.hash_workers {
        Some(n) => Hasher::new(params, n)?,
        None => Hasher::per_core(params)?,
    };
    let metrics = Metrics::new();
    let config = kube::Config::infer().await?;
    let client = metrics::counted_client(config, &metrics)?;
    let version = client.apiserver_version().await?;
    info!(server = %version.git_version, "connected to the Kubernetes API server");
    check_crds(&client).await?;
    let seal_key = SealKey::load_or_create(&client, &args.operator_namespace, &args.seal_key_secret).await?;
    let auth_server = match (args.auth_server, args.auth_server_admin_url.clone(), args.auth_server_issuer.clone()) {
        (Some(kind), Some(admin_url), Some(issuer)) => {
            let cluster = match args.cluster_id.clone() {
                Some(id) => id,
                None => cluster_id(&client).await?,
            };
            let settings = authserver::Settings {
                kind,
                admin_url,
                ca_file: args.auth_server_ca_file.clone(),
                token_file: args.auth_server_token_file.clone(),
                basic_auth_file: args.auth_server_basic_auth_file.clone(),
                issuer,
                token_url: args.auth_server_token_url.clone(),
                owner: args.auth_server_owner.clone().unwrap_or_else(|| authserver::default_owner(&cluster)),
                cluster,
                adopt_owners: args.auth_server_adopt_owner.clone(),
                sync_interval: std::time::Duration::from(args.auth_server_sync_interval)
                    .max(std::time::Duration::from_secs(1)),
                deregister_within: std::time::Duration::from(args.auth_server_deregister_within),
            };
            let server = AuthServer::connect(&settings)?;
            info!(
                ?server,
                admin = %settings.admin_url,
                owner = settings.owner,
                cluster = settings.cluster,
                "registering apps at an authorization server"
            );
            Some((server, Arc::new(SyncState::default())))
        }
        _ => None,
    };
    info!(secret = format!("{}/{}", args.operator_namespace, args.seal_key_secret), "loaded the seal key");

    let readiness = Readiness::default();
    let caches_synced = readiness.gate("caches to sync");
    let (addr, serve) = admin_server::bind(args.metrics_addr, metrics.clone(), readiness.clone()).await?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            error!(error = %e, "the metrics server stopped");
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = signal_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let selection =
        Selection { namespace: args.watch_namespace, selector: args.selector, paginated_lists: args.paginated_lists };
    info!(?selection, default_organization = args.default_organization, ?params, "starting");
    let (caches, triggers, drive) = cluster::start(&client, &selection, &args.default_organization, &seal_key);
    let watching = tokio::spawn(drive);
    let synced = caches.clone();
    tokio::spawn(async move {
        synced.synced().await;
        info!("caches are synced");
        caches_synced.open();
    });
    tokio::spawn(registration::count_apps(caches.clone(), metrics.clone(), std::time::Duration::from_secs(15)));

    // Every replica serves the registry from its caches, leader or not.
    let registry_settings = registry::Settings {
        addr: args.registry_addr,
        tls: args.registry_tls_cert.clone().zip(args.registry_tls_key.clone()),
        insecure_http: args.registry_insecure_http,
        platform_namespace: args.platform_namespace.clone(),
        audience: args.registry_audience.clone(),
        max_connections: args.registry_max_connections,
        header_read_timeout: args.registry_header_read_timeout.into(),
        limits: registry::verifier::Limits::default(),
        backend: auth_server.is_some(),
    };
    if registry_settings.tls.is_none() && !registry_settings.insecure_http {
        warn!("the registry API is off: give --registry-tls-cert and --registry-tls-key (or --registry-insecure-http)");
    } else {
        // Its own turns, so a burst of mints cannot starve authentication (or
        // the reverse); the working memory is shared.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let registry_hasher = hasher.sharing_memory(args.registry_hash_workers.unwrap_or(cores));
        let (client, caches, metrics) = (client.clone(), caches.clone(), metrics.clone());
        let listening = readiness.gate("the registry API to listen");
        tokio::spawn(async move {
            let serving = registry::serve(registry_settings, client, caches, registry_hasher, metrics, listening);
            if let Err(e) = serving.await {
                error!(error = %e, "the registry API stopped");
            }
        });
    }

    // Every replica serves the webhook too: admission must not wait for a failover.
    if let Some((cert, key)) = args.webhook_tls_cert.clone().zip(args.webhook_tls_key.clone()) {
        let settings = registration::webhook::Settings { addr: args.webhook_addr, cert, key };
        let listening = readiness.gate("the admission webhook to listen");
        tokio::spawn(async move {
            if let Err(e) = registration::webhook::serve(settings, listening, None, std::future::pending()).await {
                error!(error = %e, "the admission webhook stopped");
            }
        });
    }

    // Standbys keep warm caches; only the leader reconciles.
    let identity = args.instance.clone().unwrap_or_else(default_identity);
    let mut leadership = None;
    if args.leader_election {
        let lease = LeaseSettings {
            namespace: args.leader_election_namespace.unwrap_or_else(|| args.operator_namespace.clone()),
            name: args.leader_election_lease,
            identity,
            duration_secs: args.leader_election_duration.max(2),
        };
        match leadership::acquire(client.clone(), &lease, stopped()).await? {
            Some(held) => leadership = Some(held),
            None => return Ok(()),
        }
    }
    metrics.leader.set(1);
    let lost = Arc::new(AtomicBool::new(false));
    let (give_back, give_back_rx) = tokio::sync::oneshot::channel::<()>();
    let leadership = leadership.map(|mut held| {
        let (lost, stop_tx) = (lost.clone(), stop_tx.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = held.lost() => {
                    lost.store(true, Ordering::Release);
                    let _ = stop_tx.send(true);
                    None
                }
                _ = give_back_rx => Some(held),
            }
        })
    });

    let settings = Settings {
        source_recheck: std::time::Duration::from(args.secret_source_interval),
        registered_by_policy: args.registered_by_policy.clone(),
        default_owner: args.default_owner,
        owner_check: std::time::Duration::from(args.owner_check_interval),
        platform_namespace: args.platform_namespace,
        seal_key: seal_key.clone(),
        auth_server: auth_server.clone(),
    };
    // The comparison with the authorization server runs on the leader, and
    // asks for reconciles of what it finds through its own queue.
    let (sync_tx, sync_rx) = futures::channel::mpsc::channel(1024);
    let syncing = auth_server.map(|(server, state)| {
        tokio::spawn(authserver::sync::run(
            server,
            client.clone(),
            caches.clone(),
            state,
            sync_tx,
            metrics.clone(),
            stopped(),
        ))
    });
    // Reconcile requests flow from the watches once the controllers can take
    // them; each controller starts with a pass over everything cached.
    tokio::select! {
        () = caches.synced() => triggers.gate.open(),
        () = stopped() => {}
    }
    let app_triggers = futures::stream::select(triggers.apps, sync_rx);
    let keeping = tokio::spawn(registration::retention::keep(
        client.clone(),
        caches.clone(),
        selection.namespace.clone(),
        triggers.retentions,
    ));
    let resync = std::time::Duration::from(args.resync_interval);
    let harness = |concurrency, failure_events| registrar::runtime::controller::Harness {
        client: client.clone(),
        concurrency,
        failure_events,
        instance: args.instance.clone(),
        metrics: metrics.clone(),
        passes: registrar::runtime::catch_up::Passes::new(triggers.relists.clone(), resync),
    };
    tokio::join!(
        registration::run(harness(args.concurrency, true), settings, hasher, caches.clone(), app_triggers, stopped()),
        consent::run(harness(args.concurrency, true), caches.clone(), triggers.consents, stopped()),
        consent::organizations::run(harness(4, false), caches, triggers.policies, selection, stopped()),
    );
    watching.abort();
    keeping.abort();
    if let Some(syncing) = syncing {
        syncing.abort();
    }
    metrics.leader.set(0);
    if lost.load(Ordering::Acquire) {
        return Err("lost the leader lease; exiting to rejoin as a standby".into());
    }
    if let Some(task) = leadership {
        // Released on a clean stop, so a standby takes over without waiting for expiry.
        let _ = give_back.send(());
        if let Ok(Some(held)) = task.await {
            held.release().await;
            info!("released the leader lease");
        }
    }
    Ok(())
}

/// This cluster's identity at a shared authorization server: the UID of its
/// kube-system namespace (created with the cluster, never renamed).
async fn cluster_id(client: &kube::Client) -> Result<String, Box<dyn std::error::Error>> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces.get_metadata("kube-system").await {
        Ok(ns) => ns.metadata.uid.ok_or_else(|| "the kube-system namespace has no UID".into()),
        Err(e) => Err(format!(
            "cannot read the kube-system namespace's UID, this cluster's mark at the authorization server ({e}); \
             grant `get` on namespaces/kube-system or give --cluster-id"
        )
        .into()),
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{}-{:08x}", if host.is_empty() { "registrar" } else { &host }, rand::random::<u32>())
}

async fn check_crds(client: &kube::Client) -> Result<(), Box<dyn std::error::Error>> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in registrar::api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        match crds.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "the CustomResourceDefinition {name} is not installed; apply crds/ first (kubectl apply --server-side -f crds/)"
                )
                .into());
            }
            // Without permission to read CRDs (a least-privilege install), carry on:
            // the watches fail loudly if the CRDs are missing.
            Err(kube::Error::Api(s)) if s.is_forbidden() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
