//! The watches registrar runs — AppRegistrations, AppConsents, the metadata of
//! the Secrets labelled `registrar.dev/app`, the metadata of Namespaces, and the
//! Client ID ledger — each feeding a reflector store, the [`Index`] or the
//! [`Ledger`], and turning every change into reconcile requests for exactly the
//! objects it affects:
//!
//! - an app changed: the app, and every consent pointing at it;
//! - a consent changed or deleted: the consent, and its app (status.consents);
//! - a Secret changed or deleted: the app that owns it;
//! - a namespace's organization changed: the consents in it, and the consents
//!   of the apps registered in it;
//! - an organization's policy changed: the policy, and every consent in a
//!   namespace of that organization;
//! - a retained Secret deleted (or one retained before the ledger existed):
//!   the ledger's keeper (the app controller's `retention`).
//!
//! Requests flow only once the controllers run ([`Gate`]); they start with a
//! pass over everything cached ([`crate::runtime::catch_up`]). While a watch lists
//! (at first, and again when it re-lists, as after an apiserver restart) its
//! events ask for nothing: the cache holds the previous list until the new
//! one is complete, so a controller would look a new object up and not find
//! it, or decide on what it replaced. Once a re-list is complete the
//! controllers pass over everything cached ([`Triggers::relists`]).
//!
//! Secrets are watched for their metadata only: anyone who can write Secrets in
//! a namespace can label them, and their data (up to a megabyte each) must not
//! be downloaded, let alone held, because of a label. The controller reads a
//! Secret's data when a decision needs it, and keeps only what registrar wrote.
//! Their metadata is held compactly ([`SecretMetas`]), and so are the apps
//! ([`Apps`]): packed, decoded when read (`cluster::packed`).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, PoisonError, RwLock},
};

use futures::{SinkExt, StreamExt, channel::mpsc};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, reflector},
        watcher::{self, Event, watcher},
    },
};
use tracing::{info, warn};

use crate::{
    api::{AppConsent, AppRegistration, ClientIdEntry, OrganizationPolicy, keys::ORGANIZATION_LABEL},
    credentials::{layout::APP_LABEL, retention::RETAINED_SEAL_ANNOTATION, seal::SealKey},
    runtime::{Key, key_of},
};

use super::{
    index::Index,
    kept,
    ledger::Ledger,
    packed::{self, PackedApp},
};

/// Bound of each reconcile-request queue; the controllers' schedulers drain and
/// deduplicate them continuously.
const TRIGGER_QUEUE: usize = 4096;

/// Which objects this operator instance manages.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// Manage only AppRegistrations and AppConsents matching this label selector.
    pub selector: Option<String>,
    /// Read each watch's first list page by page (a list request) rather than
    /// as a stream of watch events (Kubernetes' WatchList, on by default since
    /// 1.34): for apiservers with WatchList turned off. A stream never holds
    /// the whole list in memory at once; a page of 500 objects does, and an
    /// apiserver serving the list from its cache may answer in one page.
    pub paginated_lists: bool,
}

/// The read model: what this instance knows of the cluster, kept by the
/// watches (the only writer) and shared by the controllers, the registry and
/// the authorization-server sync. It answers questions; how each answer is
/// kept (apps packed, Secrets as metadata only, the indexes) is its own.
#[derive(Clone)]
pub struct Caches {
    apps: Apps,
    consents: Store<AppConsent>,
    /// The metadata of the Secrets labelled `registrar.dev/app`.
    secrets: SecretMetas,
    /// Every OrganizationPolicy (cluster-scoped, named after its organization).
    policies: Store<OrganizationPolicy>,
    index: Arc<Index>,
    /// The Client ID ledger, as read by this instance.
    ledger: Arc<Ledger>,
    /// The operator's seal key (what the caches' seals are checked against).
    seal_key: SealKey,
    listed: Arc<Listed>,
}

impl Caches {
    /// Whether every cache has seen its first full list.
    pub fn is_synced(&self) -> bool {
        self.listed.is_synced()
    }

    /// Resolves once every cache has seen its first full list.
    pub async fn synced(&self) {
        self.listed.synced().await;
    }

    // === apps ===

    /// The app `namespace/name`, decoded.
    pub fn app(&self, namespace: &str, name: &str) -> Option<Arc<AppRegistration>> {
        self.apps.get(namespace, name)
    }

    /// Every app, decoded (a scan: a decode per app).
    pub fn apps(&self) -> Vec<Arc<AppRegistration>> {
        self.apps.state()
    }

    /// Every app as packed, for scans that need only what [`PackedApp`]
    /// keeps unpacked.
    pub fn packed_apps(&self) -> Vec<Arc<PackedApp>> {
        self.apps.packed()
    }

    /// How many apps are cached.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Every app, namespace by namespace.
    pub fn app_keys(&self) -> Vec<Key> {
        let names = |ns: String| self.index.app_names_in(&ns).into_iter().map(move |name| Key::new(&ns, name));
        self.index.namespaces_with_apps().into_iter().flat_map(names).collect()
    }

    /// The apps registered in `namespace`.
    pub fn apps_in(&self, namespace: &str) -> Vec<Key> {
        self.index.apps_in_namespace(namespace)
    }

    /// The app store, for the app controller.
    pub fn app_store(&self) -> Store<PackedApp> {
        self.apps.store()
    }

    // === consents ===

    /// The consent `key`.
    pub fn consent(&self, key: &Key) -> Option<Arc<AppConsent>> {
        self.consents.get(&key.to_ref())
    }

    /// Every consent.
    pub fn consents(&self) -> Vec<Arc<AppConsent>> {
        self.consents.state()
    }

    /// The consents in `namespace`.
    pub fn consents_in(&self, namespace: &str) -> Vec<Arc<AppConsent>> {
        self.index.consents_in_namespace(namespace).iter().filter_map(|key| self.consent(key)).collect()
    }

    /// The consents in force for the app `app`'s Client ID `client_id`
    /// (granted to that Client ID, not to an earlier holder of the name).
    pub fn consents_granted_to(&self, app: &Key, client_id: &str) -> Vec<Arc<AppConsent>> {
        let consents = self.index.consents_of_app(app).into_iter().filter_map(|key| self.consent(&key));
        consents.filter(|consent| consent.grants(&app.namespace, &app.name, client_id)).collect()
    }

    /// The consent in `namespace` in force for the app `app`'s Client ID
    /// `client_id`, if any.
    pub fn consent_granted_in(&self, namespace: &str, app: &Key, client_id: &str) -> Option<Arc<AppConsent>> {
        self.consents_in(namespace).into_iter().find(|consent| consent.grants(&app.namespace, &app.name, client_id))
    }

    /// The consents in `namespace` that point at the app `app`, whatever
    /// their answer.
    pub fn consents_to(&self, namespace: &str, app: &Key) -> Vec<Arc<AppConsent>> {
        let points_here =
            |c: &Arc<AppConsent>| c.spec.app_ref.namespace == app.namespace && c.spec.app_ref.name == app.name;
        self.consents_in(namespace).into_iter().filter(points_here).collect()
    }

    /// The consent store, for the consent controller.
    pub fn consent_store(&self) -> Store<AppConsent> {
        self.consents.clone()
    }

    // === organizations and their policies ===

    /// The organization `namespace` belongs to.
    pub fn organization_of(&self, namespace: &str) -> String {
        self.index.organization_of(namespace)
    }

    /// The namespaces of the organization `organization`.
    pub fn namespaces_of(&self, organization: &str) -> Vec<String> {
        self.index.namespaces_of(organization)
    }

    /// The policy of the organization `organization`, if it has one.
    pub fn policy(&self, organization: &str) -> Option<Arc<OrganizationPolicy>> {
        self.policies.get(&ObjectRef::new(organization))
    }

    /// Every organization's policy.
    pub fn policies(&self) -> Vec<Arc<OrganizationPolicy>> {
        self.policies.state()
    }

    /// The organization `namespace` belongs to, and its policy: what governs
    /// consents there.
    pub fn policy_for(&self, namespace: &str) -> (String, Option<Arc<OrganizationPolicy>>) {
        let organization = self.organization_of(namespace);
        let policy = self.policy(&organization);
        (organization, policy)
    }

    // === Secrets and the ledger ===

    /// The metadata of registrar's Secret `namespace/name`.
    pub fn secret_meta(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        self.secrets.get(namespace, name)
    }

    /// Every registrar Secret cached.
    pub fn secret_keys(&self) -> Vec<Key> {
        self.secrets.keys()
    }

    /// How many registrar Secrets are cached.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// The Client ID ledger as this instance reads it (cluster-wide).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The key registrar's seals in the cached objects are checked against.
    pub fn seal_key(&self) -> &SealKey {
        &self.seal_key
    }
}

/// What test [`Caches`] hold: the objects as the watches would have listed them.
#[cfg(test)]
pub struct Contents {
    pub apps: Vec<AppRegistration>,
    pub consents: Vec<AppConsent>,
    pub policies: Vec<OrganizationPolicy>,
    /// Namespaces and the organization each is labelled with.
    pub namespaces: Vec<(&'static str, Option<&'static str>)>,
    pub ledger: Vec<ClientIdEntry>,
    pub secrets: Vec<PartialObjectMeta<Secret>>,
    pub default_organization: &'static str,
    pub seal_key: SealKey,
}

#[cfg(test)]
impl Default for Contents {
    fn default() -> Self {
        Contents {
            apps: Vec::new(),
            consents: Vec::new(),
            policies: Vec::new(),
            namespaces: Vec::new(),
            ledger: Vec::new(),
            secrets: Vec::new(),
            default_organization: "default",
            seal_key: SealKey::from_bytes(&[7; 32]).expect("a 32-byte key"),
        }
    }
}

#[cfg(test)]
impl Caches {
    /// Caches holding `listing`, synced, kept the way the watches keep them
    /// (the same stores, indexes and ledger), for tests of the shells.
    pub fn holding(listing: Contents) -> Caches {
        let index = Arc::new(Index::new(listing.default_organization));
        let ledger = Arc::new(Ledger::new());
        let (apps, mut app_writer) = reflector::store::<PackedApp>();
        for app in &listing.apps {
            let mut kept = app.clone();
            kept::app(&mut kept);
            index.app_applied(&key_of(app));
            index.app_seen(&key_of(app), Some(app_view(app)));
            app_writer.apply_watcher_event(&Event::Apply(PackedApp::new(&kept)));
        }
        let (consents, mut consent_writer) = reflector::store::<AppConsent>();
        for consent in listing.consents {
            let app = Key::new(&consent.spec.app_ref.namespace, &consent.spec.app_ref.name);
            index.consent_applied(key_of(&consent), app);
            consent_writer.apply_watcher_event(&Event::Apply(consent));
        }
        let (policies, mut policy_writer) = reflector::store::<OrganizationPolicy>();
        for policy in listing.policies {
            policy_writer.apply_watcher_event(&Event::Apply(policy));
        }
        for (namespace, organization) in listing.namespaces {
            index.namespace_applied(namespace, organization);
        }
        for entry in &listing.ledger {
            ledger.applied(entry);
        }
        let secrets = SecretMetas::default();
        for secret in listing.secrets {
            secrets.apply(&Event::Apply(secret));
        }
        let listed = Arc::new(Listed::new(1));
        listed.one_listed();
        Caches { apps: Apps(apps), consents, secrets, policies, index, ledger, seal_key: listing.seal_key, listed }
    }
}

/// The app cache: every AppRegistration selected, packed
/// (`cluster::packed`) and decoded when read.
#[derive(Clone)]
pub struct Apps(Store<PackedApp>);

impl Apps {
    /// The app `namespace/name`, decoded.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<AppRegistration>> {
        self.0.get(&ObjectRef::new(name).within(namespace)).map(|packed| Arc::new(packed.unpack()))
    }

    /// Every app, decoded (a scan: a decode per app).
    pub fn state(&self) -> Vec<Arc<AppRegistration>> {
        self.0.state().iter().map(|packed| Arc::new(packed.unpack())).collect()
    }

    /// Every app as packed, for scans that need only what [`PackedApp`]
    /// keeps unpacked.
    pub fn packed(&self) -> Vec<Arc<PackedApp>> {
        self.0.state()
    }

    /// How many apps are cached.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no app is cached.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The store itself, for the controller.
    pub fn store(&self) -> Store<PackedApp> {
        self.0.clone()
    }
}

/// Which watches have delivered their first full list. Tracked here, from the
/// watch events, rather than with `Store::wait_until_ready`: that wakes only the
/// most recent of several waiters, and the Controllers wait on their stores too.
#[derive(Debug)]
struct Listed {
    pending: std::sync::atomic::AtomicUsize,
    done: tokio::sync::watch::Sender<bool>,
}

impl Listed {
    fn new(watches: usize) -> Self {
        Listed { pending: watches.into(), done: tokio::sync::watch::channel(false).0 }
    }

    /// A watch delivered its first full list (later re-lists are ignored by the caller).
    fn one_listed(&self) {
        if self.pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.done.send_replace(true);
        }
    }

    fn is_synced(&self) -> bool {
        *self.done.borrow()
    }

    async fn synced(&self) {
        let _ = self.done.subscribe().wait_for(|done| *done).await;
    }
}

/// Reconcile requests for the controllers.
pub struct Triggers {
    pub apps: mpsc::Receiver<ObjectRef<PackedApp>>,
    pub consents: mpsc::Receiver<ObjectRef<AppConsent>>,
    pub policies: mpsc::Receiver<ObjectRef<OrganizationPolicy>>,
    /// Secrets the ledger's keeper looks at: a retained one deleted, or one
    /// retained before the ledger existed.
    pub retentions: mpsc::Receiver<Key>,
    /// Closed until the controllers run: open it when they start.
    pub gate: Gate,
    /// How many re-lists the watches completed: each controller passes over
    /// everything cached when it changes ([`crate::runtime::catch_up::Passes`]).
    pub relists: tokio::sync::watch::Receiver<u64>,
}

/// Whether the watches send reconcile requests to the controllers. Closed
/// until the controllers run (on the leader, once the caches are synced):
/// until then nobody reads the requests, and a full queue would stop the
/// watches, freezing a standby's caches and the registry it serves. Each
/// controller starts with a pass over everything cached
/// ([`crate::runtime::catch_up`]), which covers every request not sent.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<std::sync::atomic::AtomicBool>);

impl Gate {
    /// Requests flow from now on.
    pub fn open(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_open(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Senders {
    apps: mpsc::Sender<ObjectRef<PackedApp>>,
    consents: mpsc::Sender<ObjectRef<AppConsent>>,
    policies: mpsc::Sender<ObjectRef<OrganizationPolicy>>,
    retentions: mpsc::Sender<Key>,
    index: Arc<Index>,
    ledger: Arc<Ledger>,
    gate: Gate,
    /// The event comes from a list in progress: it asks the controllers for
    /// nothing (the pass after the list covers it).
    listing: bool,
}

impl Senders {
    /// Whether requests for the controllers are sent.
    fn asking(&self) -> bool {
        self.gate.is_open() && !self.listing
    }

    async fn app(&mut self, app: Key) {
        if self.asking() {
            let _ = self.apps.send(app.to_ref()).await;
        }
    }

    async fn consent(&mut self, consent: Key) {
        if self.asking() {
            let _ = self.consents.send(consent.to_ref()).await;
        }
    }

    async fn policy(&mut self, name: &str) {
        if self.asking() {
            let _ = self.policies.send(ObjectRef::new(name)).await;
        }
    }

    async fn retention(&mut self, secret: Key) {
        if self.gate.is_open() {
            let _ = self.retentions.send(secret).await;
        }
    }

    /// Every consent in a namespace of `org`.
    async fn organization(&mut self, org: &str) {
        if !self.asking() {
            return;
        }
        for namespace in self.index.namespaces_of(org) {
            for consent in self.index.consents_in_namespace(&namespace) {
                self.consent(consent).await;
            }
        }
    }

    async fn consents_of_app(&mut self, app: &Key) {
        if !self.asking() {
            return;
        }
        for consent in self.index.consents_of_app(app) {
            self.consent(consent).await;
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts the watches. Returns the caches, the reconcile requests, and the
/// future that drives the watches (run it for as long as the controllers run).
pub fn start(
    client: &Client,
    selection: &Selection,
    default_organization: &str,
    seal_key: &SealKey,
) -> (Caches, Triggers, impl Future<Output = ()> + Send + 'static) {
    let ns = selection.namespace.as_deref();
    let config = || {
        if selection.paginated_lists {
            watcher::Config::default()
        } else {
            watcher::Config::default().streaming_lists()
        }
    };
    let mut selected = config();
    if let Some(selector) = &selection.selector {
        selected = selected.labels(selector);
    }
    let index = Arc::new(Index::new(default_organization));
    let ledger = Arc::new(Ledger::new());
    let (app_tx, app_rx) = mpsc::channel(TRIGGER_QUEUE);
    let (consent_tx, consent_rx) = mpsc::channel(TRIGGER_QUEUE);
    let (policy_tx, policy_rx) = mpsc::channel(TRIGGER_QUEUE);
    let (retention_tx, retention_rx) = mpsc::channel(TRIGGER_QUEUE);
    let senders = Senders {
        apps: app_tx,
        consents: consent_tx,
        policies: policy_tx,
        retentions: retention_tx,
        index: index.clone(),
        ledger: ledger.clone(),
        gate: Gate::default(),
        listing: false,
    };
    let gate = senders.gate.clone();

    // Packed as decoded (`PackedApp`'s Deserialize slims first).
    let (apps, app_writer) = reflector::store();
    let app_events =
        retrying("AppRegistration", reflector(app_writer, watcher(api::<PackedApp>(client, ns), selected.clone())));
    let (consents, consent_writer) = reflector::store();
    let consent_events = retrying(
        "AppConsent",
        reflector(consent_writer, watcher(api::<AppConsent>(client, ns), selected).modify(kept::consent)),
    );
    let secrets = SecretMetas::default();
    let secret_events =
        retrying("Secret", watcher(api::<PartialObjectMeta<Secret>>(client, ns), config().labels(APP_LABEL)));
    let mut namespace_config = config();
    if let Some(ns) = ns {
        namespace_config = namespace_config.fields(&format!("metadata.name={ns}"));
    }
    // Read into the index only (organizations), not kept in a store.
    let namespace_events = retrying(
        "Namespace",
        watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), namespace_config).modify(kept::namespace),
    );

    let (policies, policy_writer) = reflector::store();
    let policy_events = retrying(
        "OrganizationPolicy",
        reflector(
            policy_writer,
            watcher(Api::<OrganizationPolicy>::all(client.clone()), config()).modify(kept::policy),
        ),
    );

    // The ledger is read whatever this instance selects: a Client ID is one
    // cluster-wide. Kept only as the read model holds it (no store).
    let ledger_events = retrying("ClientIdEntry", watcher(Api::<ClientIdEntry>::all(client.clone()), config()));

    let listed = Arc::new(Listed::new(6));
    let (relisted, relists) = tokio::sync::watch::channel(0u64);
    let secret_metas = secrets.clone();
    let ledger_view = ledger.clone();
    let drive = {
        let app_senders = senders.clone();
        let consent_senders = senders.clone();
        let secret_senders = senders.clone();
        let policy_senders = senders.clone();
        let ledger_senders = senders.clone();
        let namespace_senders = senders;
        let listed = listed.clone();
        let listed = Listing { first: listed, relisted };
        async move {
            tokio::join!(
                drain("AppRegistration", app_events, app_senders, &listed, on_app),
                drain("AppConsent", consent_events, consent_senders, &listed, on_consent),
                drain("Secret", secret_events, secret_senders, &listed, |event, to| {
                    secret_metas.apply(&event);
                    on_secret(event, to)
                }),
                drain("Namespace", namespace_events, namespace_senders, &listed, on_namespace),
                drain("OrganizationPolicy", policy_events, policy_senders, &listed, on_policy),
                drain("ClientIdEntry", ledger_events, ledger_senders, &listed, |event, _| {
                    ledger_view.watched(&event);
                    std::future::ready(())
                }),
            );
        }
    };
    let caches =
        Caches { apps: Apps(apps), consents, secrets, policies, index, ledger, seal_key: seal_key.clone(), listed };
    let triggers =
        Triggers { apps: app_rx, consents: consent_rx, policies: policy_rx, retentions: retention_rx, gate, relists };
    (caches, triggers, drive)
}

/// A watch that waits [`watch_backoff`] after a failure, except after the
/// apiserver's "too old resource version" (410 Expired): that is an answer,
/// not a failure — the apiserver is up and tells the watch to list again —
/// so the watch re-lists at once, once a minute at most (a second 410 within
/// the minute waits its backoff step, so an apiserver that keeps answering
/// 410 gets no list storm). After an apiserver restart this is the moment its
/// custom-resource watch cache is ready: waiting a backoff step here (up to
/// 2 s) was waiting for nothing.
fn retrying<K>(
    kind: &'static str,
    events: impl futures::Stream<Item = Result<Event<K>, watcher::Error>>,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> {
    let mut relisted_at_once: Option<tokio::time::Instant> = None;
    events
        .filter_map(move |event| {
            let event = match event {
                Err(watcher::Error::WatchError(status))
                    if status.code == 410
                        && relisted_at_once.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) =>
                {
                    relisted_at_once = Some(tokio::time::Instant::now());
                    info!(kind, reason = %status.message, "watch expired (too old resource version); re-listing now");
                    None
                }
                event => Some(event),
            };
            std::future::ready(event)
        })
        .backoff(watch_backoff())
}

/// How long a failed watch waits before it tries again: from 250 ms,
/// doubling, with jitter, to at most 2 s (kube's default grows to 30 s and
/// stays there for two minutes, so a watch could come back half a minute
/// after the apiserver did). A re-list after the apiserver's "too old
/// resource version" does not wait ([`retrying`]). Six watches reconnecting
/// every 2 s are little load; the apiserver's priority and fairness guards it
/// beyond that.
fn watch_backoff() -> kube::runtime::utils::ResetTimerBackoff<kube::runtime::watcher::ExponentialBackoff> {
    let growing = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(growing.into(), std::time::Duration::from_secs(60))
}

/// The metadata of registrar's Secrets (those labelled `registrar.dev/app`),
/// each kept as what registrar reads of it — resource version, labels,
/// annotations, controller reference — packed (`cluster::packed`), and decoded
/// when asked for (once per reconcile). Decoded, a `BTreeMap` holds even one
/// entry in a node of eleven slots: several times the memory.
#[derive(Clone, Default)]
pub struct SecretMetas(Arc<RwLock<MetaState>>);

#[derive(Default)]
struct MetaState {
    live: HashMap<Key, Box<[u8]>>,
    /// Filled by a (re-)list, swapped in when it is complete, so readers see
    /// the previous state meanwhile rather than a partial one.
    listing: Option<HashMap<Key, Box<[u8]>>>,
}

impl SecretMetas {
    /// The metadata of the Secret `namespace/name`, if it is one of registrar's.
    pub fn get(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let state = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let encoded = state.live.get(&Key::new(namespace, name))?;
        let mut meta: ObjectMeta = packed::unpack(packed::Kind::SecretMeta, encoded);
        meta.namespace = Some(namespace.to_owned());
        meta.name = Some(name.to_owned());
        Some(meta)
    }

    /// Every cached Secret, by namespace and name.
    pub fn keys(&self) -> Vec<Key> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).live.keys().cloned().collect()
    }

    /// How many Secrets are cached.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn apply(&self, event: &Event<PartialObjectMeta<Secret>>) {
        let mut state = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Init => state.listing = Some(HashMap::new()),
            Event::InitApply(secret) => {
                let entry = (key_of(secret), compact(&secret.metadata));
                state.listing.get_or_insert_default().insert(entry.0, entry.1);
            }
            Event::InitDone => {
                let mut listed = state.listing.take().unwrap_or_default();
                listed.shrink_to_fit();
                state.live = listed;
            }
            Event::Apply(secret) => {
                state.live.insert(key_of(secret), compact(&secret.metadata));
            }
            Event::Delete(secret) => {
                state.live.remove(&key_of(secret));
            }
        }
    }
}

/// What registrar reads of a Secret's metadata ([`kept::secret_meta`]),
/// packed (name and namespace are the key).
fn compact(meta: &ObjectMeta) -> Box<[u8]> {
    packed::pack(packed::Kind::SecretMeta, &kept::secret_meta(meta))
}

/// Where the watches report their lists: the first of each to `first`, the
/// re-lists to `relisted` (counted).
struct Listing {
    first: Arc<Listed>,
    relisted: tokio::sync::watch::Sender<u64>,
}

/// Consumes one watch, handing each event to `handle` (with requests held
/// back while it lists), and reports its lists to `listing`.
async fn drain<K, S, H, Fut>(kind: &'static str, events: S, senders: Senders, listing: &Listing, handle: H)
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>>,
    H: Fn(Event<K>, Senders) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut events = std::pin::pin!(events);
    let mut first_list = true;
    let mut in_list = false;
    let with = |listing: bool| Senders { listing, ..senders.clone() };
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => {
                in_list = true;
                handle(Event::Init, with(true)).await;
            }
            Ok(Event::InitDone) => {
                in_list = false;
                handle(Event::InitDone, with(false)).await;
                if first_list {
                    first_list = false;
                    listing.first.one_listed();
                } else {
                    info!(kind, "watch re-listed; the controllers pass over everything cached");
                    listing.relisted.send_modify(|n| *n += 1);
                }
            }
            Ok(event) => handle(event, with(in_list)).await,
            Err(e) => warn!(kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

async fn on_app(event: Event<PackedApp>, mut to: Senders) {
    match event {
        Event::Apply(app) | Event::InitApply(app) => {
            let key = key_of(&app);
            let app = app.unpack();
            to.index.app_applied(&key);
            to.app(key.clone()).await;
            // Its consents look again only when something they read changed.
            if to.index.app_seen(&key, Some(app_view(&app))) {
                to.consents_of_app(&key).await;
            }
        }
        Event::Delete(app) => {
            let key = key_of(&app);
            to.index.app_deleted(&key);
            to.index.app_seen(&key, None);
            to.consents_of_app(&key).await;
        }
        Event::Init | Event::InitDone => {}
    }
}

async fn on_consent(event: Event<AppConsent>, mut to: Senders) {
    match event {
        Event::Apply(consent) | Event::InitApply(consent) => {
            let key = key_of(&consent);
            let app = Key::new(&consent.spec.app_ref.namespace, &consent.spec.app_ref.name);
            to.index.consent_applied(key.clone(), app.clone());
            to.consent(key).await;
            to.app(app).await;
        }
        Event::Delete(consent) => {
            if let Some(app) = to.index.consent_deleted(&key_of(&consent)) {
                to.app(app).await;
            }
        }
        Event::Init | Event::InitDone => {}
    }
}

async fn on_secret(event: Event<PartialObjectMeta<Secret>>, mut to: Senders) {
    let (secret, deleted) = match event {
        Event::Apply(s) | Event::InitApply(s) => (s, false),
        Event::Delete(s) => (s, true),
        Event::Init | Event::InitDone => return,
    };
    // A retained Secret gone gives its Client ID up; one retained before the
    // ledger existed enters it. The keeper checks either against the apiserver.
    let at = key_of(&secret);
    let retained_here = to.ledger.retention_at(&at).is_some();
    let recorded_before = !deleted && secret.annotations().contains_key(RETAINED_SEAL_ANNOTATION);
    if (deleted && retained_here) || (recorded_before && !retained_here) {
        to.retention(at).await;
    }
    let owner = secret.owner_references().iter().find(|o| {
        o.controller == Some(true)
            && o.kind == AppRegistration::kind(&())
            && o.api_version == AppRegistration::api_version(&())
    });
    if let Some(owner) = owner {
        to.app(Key::new(secret.namespace().unwrap_or_default(), &owner.name)).await;
    }
}

async fn on_policy(event: Event<OrganizationPolicy>, mut to: Senders) {
    let (policy, view) = match event {
        Event::Apply(policy) | Event::InitApply(policy) => {
            let view = consent_view(&policy);
            (policy, Some(view))
        }
        Event::Delete(policy) => (policy, None),
        Event::Init | Event::InitDone => return,
    };
    let org = policy.name_any();
    to.policy(&org).await;
    if to.index.policy_seen(&org, view) {
        to.organization(&org).await;
    }
}

/// A digest of what consents read of an app: which object it is, its scope,
/// display name, scopes, Client ID and whether it is being
/// deleted. Not its secret versions, conditions or consent summary.
fn app_view(app: &AppRegistration) -> u64 {
    use std::hash::{Hash, Hasher};
    let status = app.status.as_ref();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    app.meta().uid.hash(&mut hasher);
    app.spec.scope.as_str().hash(&mut hasher);
    app.spec.display_name.hash(&mut hasher);
    app.spec.oauth_scopes.hash(&mut hasher);
    status.and_then(|s| s.client_id.as_deref()).hash(&mut hasher);
    app.meta().deletion_timestamp.is_some().hash(&mut hasher);
    hasher.finish()
}

/// A digest of what consents read of a policy: the policy asked for, the one
/// in force and since when, the grants kept by an earlier registrar, the apps
/// revoked, auto-approval and the allowlist.
fn consent_view(policy: &OrganizationPolicy) -> u64 {
    use std::hash::{Hash, Hasher};
    let status = policy.status.as_ref();
    let read = serde_json::json!([
        policy.spec.policy,
        status.and_then(|s| s.policy),
        status.and_then(|s| s.restricted_at.as_ref()),
        status.map(|s| &s.grandfathered),
        policy.spec.revoked,
        policy.spec.auto_approve_internal,
        policy.spec.allowlist,
    ]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    read.to_string().hash(&mut hasher);
    hasher.finish()
}

async fn on_namespace(event: Event<PartialObjectMeta<Namespace>>, mut to: Senders) {
    let (name, changed) = match event {
        Event::Apply(ns) | Event::InitApply(ns) => {
            let name = ns.name_any();
            let changed = to.index.namespace_applied(&name, ns.labels().get(ORGANIZATION_LABEL).map(String::as_str));
            (name, changed)
        }
        Event::Delete(ns) => {
            let name = ns.name_any();
            let changed = to.index.namespace_deleted(&name);
            (name, changed)
        }
        Event::Init | Event::InitDone => return,
    };
    if !changed {
        return;
    }
    for consent in to.index.consents_in_namespace(&name) {
        to.consent(consent).await;
    }
    for app in to.index.apps_in_namespace(&name) {
        to.consents_of_app(&app).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};

    use super::*;

    fn expired() -> Result<Event<ClientIdEntry>, watcher::Error> {
        let status = kube::core::Status::failure("too old resource version: 1 (2)", "Expired").with_code(410);
        Err(watcher::Error::WatchError(status.boxed()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_watch_relists_at_once() {
        let started = tokio::time::Instant::now();
        let events: Vec<_> = retrying("test", futures::stream::iter([expired(), Ok(Event::Init)])).collect().await;
        assert!(matches!(events[..], [Ok(Event::Init)]), "the 410 is not passed on as a failure");
        assert_eq!(started.elapsed(), std::time::Duration::ZERO, "no backoff step before the re-list");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_expiry_within_a_minute_waits_its_backoff_step() {
        let started = tokio::time::Instant::now();
        let events = [expired(), Ok(Event::Init), Ok(Event::InitDone), expired(), Ok(Event::Init)];
        let events: Vec<_> = retrying("test", futures::stream::iter(events)).collect().await;
        assert_eq!(events.len(), 4);
        assert!(matches!(events[2], Err(watcher::Error::WatchError(_))));
        assert!(started.elapsed() >= std::time::Duration::from_millis(250), "waited {:?}", started.elapsed());
    }

    fn consent(name: &str) -> AppConsent {
        let mut consent = AppConsent::new(
            name,
            crate::api::AppConsentSpec {
                app_ref: crate::api::AppRef { namespace: "owner".into(), name: "billing".into() },
                oauth_scopes: None,
            },
        );
        consent.metadata.namespace = Some("team".into());
        consent
    }

    /// While a watch lists (at first, or again) its events ask the
    /// controllers for nothing: their caches hold the previous list until the
    /// new one is complete. A completed re-list is counted (the controllers
    /// pass over everything then); the first list is not.
    #[tokio::test]
    async fn a_list_asks_for_nothing_and_a_relist_asks_for_a_pass() {
        let (apps, mut app_rx) = mpsc::channel(16);
        let (consents, mut consent_rx) = mpsc::channel(16);
        let (policies, _policy_rx) = mpsc::channel(16);
        let (retentions, _retention_rx) = mpsc::channel(16);
        let senders = Senders {
            apps,
            consents,
            policies,
            retentions,
            index: Arc::new(Index::new("default")),
            ledger: Arc::new(Ledger::new()),
            gate: Gate::default(),
            listing: false,
        };
        senders.gate.open();
        let (relisted, mut relists) = tokio::sync::watch::channel(0u64);
        let listing = Listing { first: Arc::new(Listed::new(1)), relisted };
        let events = futures::stream::iter(
            [
                Event::Init,
                Event::InitApply(consent("listed-first")),
                Event::InitDone,
                Event::Apply(consent("changed")),
                Event::Init,
                Event::InitApply(consent("relisted")),
                Event::InitDone,
                Event::Delete(consent("changed")),
            ]
            .map(Ok),
        );
        drain("AppConsent", events, senders, &listing, on_consent).await;

        let mut asked = Vec::new();
        while let Ok(request) = consent_rx.try_recv() {
            asked.push(request.name);
        }
        assert_eq!(asked, ["changed"], "only the change outside a list asks for its consent");
        let mut apps_asked = 0;
        while app_rx.try_recv().is_ok() {
            apps_asked += 1;
        }
        assert_eq!(apps_asked, 2, "the change and the deletion ask for the app (its status counts consents)");
        assert!(listing.first.is_synced(), "the first list is reported");
        assert!(relists.has_changed().expect("open"));
        assert_eq!(*relists.borrow_and_update(), 1, "one re-list, counted");
    }

    #[allow(clippy::field_reassign_with_default)] // PartialObjectMeta has a private field
    fn secret(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let owner = |name: &str, controller: bool| OwnerReference {
            api_version: "registrar.dev/v1alpha1".into(),
            kind: "AppRegistration".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(controller),
            ..Default::default()
        };
        let mut meta = PartialObjectMeta::<Secret>::default();
        meta.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            resource_version: Some(rv.into()),
            uid: Some("secret-uid".into()),
            labels: Some(BTreeMap::from([(APP_LABEL.into(), "billing".into())])),
            annotations: Some(BTreeMap::from([
                ("registrar.dev/seal".into(), "sealed".into()),
                ("kubectl.kubernetes.io/last-applied-configuration".into(), "{\"a huge\": \"copy\"}".into()),
            ])),
            owner_references: Some(vec![owner("billing", true), owner("someone-else", false)]),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            ..Default::default()
        };
        meta
    }

    #[test]
    fn answering_questions_leaves_the_cached_apps_metadata_undecoded() {
        let app = |ns: &str, name: &str| {
            let mut app = AppRegistration::new(name, Default::default());
            app.metadata.namespace = Some(ns.into());
            app.metadata.uid = Some(format!("uid-{name}"));
            app
        };
        let caches = Caches::holding(Contents {
            apps: vec![app("team-a", "billing"), app("team-a", "payroll"), app("team-b", "portal")],
            ..Default::default()
        });
        assert_eq!(
            caches.app("team-a", "billing").and_then(|a| a.metadata.uid.clone()).as_deref(),
            Some("uid-billing")
        );
        assert_eq!(caches.apps().len(), 3);
        assert_eq!(caches.app_count(), 3);
        assert_eq!(caches.app_keys().len(), 3);
        assert_eq!(caches.apps_in("team-a").len(), 2);
        assert!(caches.packed_apps().iter().all(|a| !a.deleting()));
        let cached = caches.app_store().state();
        assert!(cached.iter().all(|a| !a.holds_metadata()), "no cached copy decoded its metadata");
    }

    #[test]
    fn secret_metadata_is_kept_compactly_with_what_registrar_reads() {
        let metas = SecretMetas::default();
        metas.apply(&Event::Apply(secret("billing-credentials", "7")));
        let meta = metas.get("team", "billing-credentials").expect("cached");
        assert_eq!(meta.name.as_deref(), Some("billing-credentials"));
        assert_eq!(meta.namespace.as_deref(), Some("team"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(meta.labels.unwrap()[APP_LABEL], "billing");
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations["registrar.dev/seal"], "sealed");
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        let owners = meta.owner_references.unwrap();
        assert_eq!(owners.len(), 1, "only the controller reference");
        assert_eq!(owners[0].uid, "uid-billing");
        assert!(meta.managed_fields.is_none());
        assert!(metas.get("other", "billing-credentials").is_none());

        metas.apply(&Event::Delete(secret("billing-credentials", "8")));
        assert!(metas.get("team", "billing-credentials").is_none());
        assert!(metas.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_secret_metadata_only_once_complete() {
        let metas = SecretMetas::default();
        metas.apply(&Event::Apply(secret("gone-meanwhile", "1")));
        metas.apply(&Event::Init);
        metas.apply(&Event::InitApply(secret("billing-credentials", "2")));
        // Until the list is complete, readers see what was there before it.
        assert!(metas.get("team", "gone-meanwhile").is_some());
        assert!(metas.get("team", "billing-credentials").is_none());
        metas.apply(&Event::InitDone);
        assert!(metas.get("team", "gone-meanwhile").is_none());
        assert_eq!(metas.get("team", "billing-credentials").unwrap().resource_version.as_deref(), Some("2"));
        assert_eq!(metas.len(), 1);
    }
}
