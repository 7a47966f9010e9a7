//! The I/O shell of the AppRegistration controller: gathers what `plan` needs
//! (the app, what its Secret holds, the ledger's word on Client IDs), claims
//! in the ledger the Client ID the plan issues before anything else is
//! written, hashes what the plan issues, and carries out the plan's outcome
//! (Secret first, then status — the crash-safe order — then Events). An
//! unchanged, healthy app costs no write and no read beyond the caches.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::Secret,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, GetParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{
    Settings,
    error::{Error, Step},
    event::PlannedEvent,
    ledger::{Claim, Clerk},
    owner::{self, Ownership},
    plan::{
        self, AuthServerView, Decision, Fresh, Import, Inputs, IssuedHash, MintReason, Outcome, Registration,
        RestartReport, RetainedSecret, SecretWrite, SourceRefusal,
    },
};
use crate::{
    api::{
        AppRegistration, AppRegistrationStatus, ConsentSummary, DeletionPolicy, Holder, MAX_LISTED_CONSENTS, Owner,
        Scope, WorkloadKind,
        validation::{Violation, go_duration, validate_spec},
    },
    authserver::{self, AsError, AuthServer},
    cluster::Caches,
    cluster::ledger::Word,
    credentials::{
        ClientSecret, Hasher, SecretOrigin,
        layout::{Issued, Observed, SecretContents, SecretLayout, VERSION_ANNOTATION, controlled_by},
        retention::{RETAINED_CLIENT_ID_ANNOTATION, RETAINED_FROM_ANNOTATION, RETAINED_SEAL_ANNOTATION},
        seal::SEAL_ANNOTATION,
    },
    runtime::Uid,
    runtime::kube::status_patch,
    runtime::metrics::{Metrics, ReasonLabels},
    runtime::retry,
    runtime::{Key, key_of},
};

pub use crate::api::keys::{FIELD_MANAGER, FINALIZER};
use crate::api::keys::{REGISTERED_BY_ANNOTATION, REGISTERED_BY_GROUPS_ANNOTATION};

/// Shared state of the controller.
pub struct Context {
    client: Client,
    pub(super) settings: Settings,
    hasher: Hasher,
    metrics: Metrics,
    reporter: Reporter,
    /// Publishes Events that may repeat (warnings), folding repeats into a
    /// series; it keeps each Event it published for six minutes to do so.
    recorder: Recorder,
    pub(super) caches: Caches,
    /// Writes to the Client ID ledger.
    clerk: Clerk,
    memory: Mutex<Memory>,
    /// Recent answers to "may this owner manage apps in this namespace?".
    owner_answers: moka::sync::Cache<(Owner, Vec<String>, String), bool>,
    /// Recent answers to "may the user who registered an app get this Secret?"
    /// ((user, groups, namespace, Secret) → allowed), for `secret.sourceRef`.
    source_answers: moka::sync::Cache<(String, Vec<String>, String, String), bool>,
    /// Whether the Registered By admission policies are installed, so that
    /// `registrar.dev/registered-by` is true.
    registered_by: super::registered_by::Guard,
}

/// What this process remembers between reconciles, one entry per app (held
/// for every app, so kept small), for the incarnation of its name with the
/// UID recorded.
#[derive(Default)]
struct Memory(HashMap<Key, Remembered>);

#[derive(Default)]
struct Remembered {
    uid: Uid,
    /// The secret version this process last wrote to status: a cached app
    /// showing less is a lagging cache, not a reason to act.
    written: Option<i64>,
    /// What the app's Secret holds, as registrar last wrote or read it (only
    /// Secrets it sealed), so a reconcile needs no read while the Secret's
    /// resourceVersion is unchanged. The data of other Secrets is never kept.
    /// Boxed: most of an entry, and absent until the first read or write.
    contents: Option<Box<KnownContents>>,
    /// When the app's owner was last checked.
    owner_checked: Option<Instant>,
    /// When the periodic sweep last asked for a reconcile to check the owner.
    owner_swept: Option<Instant>,
    /// A deleted app: since when, and how many times, the authorization
    /// server failed to delete its client.
    deregistering: Option<(Instant, u32)>,
}

impl Memory {
    fn get(&self, app: &AppRegistration) -> Option<&Remembered> {
        self.0.get(&key_of(app)).filter(|r| r.uid == uid(app))
    }

    /// The app's entry; a new one for a new incarnation of its name.
    fn of(&mut self, app: &AppRegistration) -> &mut Remembered {
        let uid = uid(app);
        let entry = self.0.entry(key_of(app)).or_default();
        if entry.uid != uid {
            *entry = Remembered { uid, ..Default::default() };
        }
        entry
    }

    /// Nobody to check for this app: the sweep leaves it alone.
    fn no_owner(&mut self, app: &AppRegistration) {
        if let Some(remembered) = self.0.get_mut(&key_of(app)).filter(|r| r.uid == uid(app)) {
            remembered.owner_checked = None;
        }
    }

    fn forget(&mut self, app: &AppRegistration) {
        if self.get(app).is_some() {
            self.0.remove(&key_of(app));
        }
    }

    /// Room for `apps` entries in all, made at once: a table that grows
    /// doubles, holding the old table and the new one for a moment.
    fn reserve(&mut self, apps: usize) {
        self.0.reserve(apps.saturating_sub(self.0.len()));
    }

    /// The apps whose owner was checked `every` ago or longer, and not swept
    /// for it within `every`; each is marked swept.
    fn owner_checks_due(&mut self, every: Duration) -> Vec<Key> {
        let mut due = Vec::new();
        for (key, remembered) in &mut self.0 {
            let checked_long_ago = remembered.owner_checked.is_some_and(|at| at.elapsed() >= every);
            let swept_lately = remembered.owner_swept.is_some_and(|at| at.elapsed() < every);
            if checked_long_ago && !swept_lately {
                remembered.owner_swept = Some(Instant::now());
                due.push(key.clone());
            }
        }
        due
    }
}

/// What an app's Secret holds at a resourceVersion.
struct KnownContents {
    secret_name: String,
    resource_version: String,
    contents: SecretContents,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        hasher: Hasher,
        metrics: Metrics,
        reporter: Reporter,
        caches: Caches,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        // Answers are shared by the apps of one owner and namespace, for half a check period.
        let owner_answers = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live((settings.owner_check / 2).max(Duration::from_millis(500)))
            .build();
        let registered_by = super::registered_by::Guard::new(settings.registered_by_policy.clone());
        let clerk = Clerk::new(client.clone(), caches.ledger().clone());
        Context {
            clerk,
            client,
            settings,
            hasher,
            metrics,
            reporter,
            recorder,
            caches,
            memory: Mutex::default(),
            owner_answers,
            source_answers: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            registered_by,
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding this lock cannot leave it inconsistent in a way
        // that matters: every entry is an optimisation or a retry counter.
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `namespace/name`, for errors.
fn key(app: &AppRegistration) -> String {
    key_of(app).to_string()
}

fn uid(app: &AppRegistration) -> Uid {
    Uid::of(app.meta().uid.as_deref().unwrap_or_default())
}

impl Context {
    /// Makes room in the controller's memory for `apps` apps, before a pass
    /// that reconciles each of them.
    pub fn expect_apps(&self, apps: usize) {
        self.memory().reserve(apps);
    }

    /// The apps whose owner is due for its periodic check (each once per
    /// period), for the sweep that asks for their reconcile.
    pub fn owner_checks_due(&self) -> Vec<Key> {
        self.memory().owner_checks_due(self.settings.owner_check)
    }
}

/// One reconcile of the app, as cached (unpacked).
pub(super) async fn reconcile(app: &AppRegistration, ctx: &Context) -> Result<Action, Error> {
    ctx.metrics.cached_secrets.set(i64::try_from(ctx.caches.secret_count()).unwrap_or(i64::MAX));
    reconcile_with_finalizer(app, ctx).await
}

/// The finalizer protocol, in one pass: a deleted app is revoked and then
/// released; a live app gets the finalizer (if missing) and is applied at once,
/// rather than waiting for the finalizer's own watch event to come back.
async fn reconcile_with_finalizer(app: &AppRegistration, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AppRegistration> = Api::namespaced(ctx.client.clone(), &ns);
    let position = app.finalizers().iter().position(|f| f == FINALIZER);
    if app.meta().deletion_timestamp.is_some() {
        let Some(position) = position else {
            return Ok(Action::await_change());
        };
        let action = match revoke(app, ctx).await? {
            Revocation::Done(action) => action,
            // The finalizer stays until the authorization server is done.
            Revocation::Waiting(retry) => return Ok(retry),
        };
        // The test makes the removal safe against a concurrent change to the list.
        let path = format!("/metadata/finalizers/{position}");
        let patch = json!([
            { "op": "test", "path": path, "value": FINALIZER },
            { "op": "remove", "path": path },
        ]);
        return match api.patch(&app.name_any(), &PatchParams::default(), &json_patch(patch)).await {
            Ok(_) => Ok(action),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(action),
            Err(e) => Err(Error::kube(Step::RemoveFinalizer, key(app), e)),
        };
    }
    if position.is_none() {
        // The test fails (and the pass is retried) if the list changed meanwhile:
        // the apiserver does not deduplicate finalizers.
        let patch = if app.finalizers().is_empty() {
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
            ])
        } else {
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": app.finalizers() },
                { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
            ])
        };
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let mut patched = api
            .patch(&app.name_any(), &params, &json_patch(patch))
            .await
            .map_err(|e| Error::kube(Step::AddFinalizer, key(app), e))?;
        // Applied from the object as patched (its resourceVersion is the status
        // write's precondition), read as the cache keeps it.
        crate::cluster::as_cached(&mut patched);
        return apply(&patched, ctx).await;
    }
    apply(app, ctx).await
}

fn json_patch(patch: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(patch).expect("a well-formed JSON patch"))
}

async fn apply(app: &AppRegistration, ctx: &Context) -> Result<Action, Error> {
    // A chosen secret's verifiers are the ledger's, not status's: the plan
    // reads them where status held them before; status is compared as it is.
    let merged = with_ledger_verifiers(app, ctx);
    apply_as(app, merged.as_ref().unwrap_or(app), ctx).await
}

/// `app` with the verifiers the ledger keeps of its chosen secret put where
/// status keeps a minted secret's hash; `None` when there are none.
fn with_ledger_verifiers(app: &AppRegistration, ctx: &Context) -> Option<AppRegistration> {
    let status = app.status.as_ref()?;
    if status.secret_hash.is_some() {
        return None;
    }
    let verifiers = ctx.caches.ledger().verifiers(&key_of(app), uid(app), status.client_id.as_deref()?)?;
    let mut merged = app.clone();
    let status = merged.status.get_or_insert_default();
    status.secret_hash = Some(verifiers.current);
    status.previous_secret_hash = verifiers.previous;
    status.previous_secret_expires_at = verifiers.previous_expires_at;
    Some(merged)
}

/// Reconciles `app` (its status as the plan reads it); `real` is the app as
/// cached, whose status a write is compared with. Observe (reads only), plan
/// (pure: every decision and every word), carry out (writes, in the order that
/// survives a crash between any two).
async fn apply_as(real: &AppRegistration, app: &AppRegistration, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    // Our own status write may not have reached the cache yet.
    let status_version = app.status.as_ref().and_then(|s| s.secret_version).unwrap_or(0);
    if ctx.memory().get(app).and_then(|r| r.written).is_some_and(|written| status_version < written) {
        debug!(namespace = ns, name = app.name_any(), "cache lags the last status write; waiting");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let server = ctx.settings.auth_server.as_ref();
    let layout = SecretLayout::for_app(app).with_server(server.map(|(s, _)| s.urls()));

    let Some(seen) = observe_all(app, &layout, ctx).await? else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let Seen {
        observed,
        cached,
        import,
        retained,
        chosen_secret,
        ownership,
        source,
        violations,
        secret_verifies,
        status_client_id_taken,
        secret_client_id_taken,
        consents,
        fresh,
        unreachable,
        stale,
        retention_in_the_way,
    } = seen;
    let inputs = Inputs {
        app,
        violations: &violations,
        scope_permitted: app.spec.scope != Scope::Global || ns == ctx.settings.platform_namespace,
        platform_namespace: &ctx.settings.platform_namespace,
        observed: &observed,
        secret_verifies,
        status_client_id_taken,
        secret_client_id_taken,
        consents,
        seal_key: &ctx.settings.seal_key,
        fresh: &fresh,
        auth_server: server.map(|(s, _)| AuthServerView {
            capabilities: s.capabilities(),
            urls: s.urls(),
            unreachable: unreachable.as_deref(),
            stale,
        }),
        import,
        retained: retained.as_ref(),
        chosen_secret: chosen_secret.as_ref(),
        retention_in_the_way,
        source,
        ownership,
        now: Timestamp::now(),
    };

    let decision = plan::decide(&inputs);
    if !ready_to_issue(&inputs, &decision, &layout, cached.as_ref(), ctx).await? {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Decision::Adopt(issued) = &decision {
        info!(
            namespace = ns,
            name = app.name_any(),
            client_id = issued.client_id,
            secret_version = issued.version,
            "finishing an interrupted mint from the sealed Secret"
        );
    }
    let hash = match decision.issued(&inputs) {
        Some(issued) => {
            // A secret of someone's choosing (a source, or a retained one taken
            // over, whose origin is not known) gets the password cost.
            let chosen =
                inputs.chosen_secret.is_some() || app.spec.secret.as_ref().is_some_and(|s| s.source_ref.is_some());
            let origin = if chosen { SecretOrigin::Chosen } else { SecretOrigin::Minted };
            Some(hash_issued(app, &issued, origin, ctx).await?)
        }
        None => None,
    };
    let outcome = plan::outcome(&inputs, &decision, hash.as_ref());
    carry_out(&inputs, &layout, outcome, real, ctx).await
}

/// What one pass read, from the caches and the apiserver: everything the plan
/// decides on. Nothing is written while it is gathered.
struct Seen {
    /// The app's Secret.
    observed: Observed,
    /// That Secret's metadata as cached, to confirm a re-mint against.
    cached: Option<ObjectMeta>,
    /// An imported Client ID (spec.clientId) before the app has one: may it
    /// be had, and is it a retained one to take over?
    import: Option<Import>,
    retained: Option<RetainedSecret>,
    /// A secret to issue instead of a fresh one: a source's, or a retained
    /// one taken over.
    chosen_secret: Option<ClientSecret>,
    ownership: Option<Ownership>,
    source: Option<plan::Source>,
    violations: Vec<Violation>,
    secret_verifies: Option<bool>,
    status_client_id_taken: bool,
    secret_client_id_taken: bool,
    consents: Option<ConsentSummary>,
    /// What a mint would issue (a first issuance interrupted after its claim
    /// uses the Client ID claimed).
    fresh: Fresh,
    /// Why the authorization server could not be reached at its last comparison.
    unreachable: Option<String>,
    /// The server lost or altered the app's client.
    stale: bool,
    retention_in_the_way: Option<String>,
}

/// Reads what the plan decides on. `None`: something changed while it was
/// read (the Secret, or a retention); look again.
async fn observe_all(app: &AppRegistration, layout: &SecretLayout, ctx: &Context) -> Result<Option<Seen>, Error> {
    let ns = app.namespace().unwrap_or_default();
    let status = app.status.clone().unwrap_or_default();
    let cached = ctx.caches.secret_meta(&ns, &layout.name);
    let Some(observed) = observe(app, layout, cached.as_ref(), ctx).await? else { return Ok(None) };
    let app_key = key_of(app);
    let ledger = ctx.caches.ledger();
    let taken = |id: Option<&str>| id.is_some_and(|id| ledger.taken_from(&app_key, uid(app), id));
    let secret_client_id = match &observed {
        Observed::Owned(owned) => Some(owned.issued.client_id.as_str()),
        _ => None,
    };
    let (status_client_id_taken, secret_client_id_taken) =
        (taken(status.client_id.as_deref()), taken(secret_client_id));
    let mut retained = None;
    let mut chosen_secret = None;
    let import = match (&app.spec.client_id, &status.client_id) {
        (Some(id), None) => {
            let state = Import::from_word(ledger.word(id), &app_key, uid(app));
            if let Import::Retained(secret_name) = &state {
                let Some((found, secret)) = read_retained(app, secret_name, id, ctx).await? else { return Ok(None) };
                retained = Some(found);
                chosen_secret = secret;
            }
            Some(state)
        }
        _ => None,
    };
    let ownership = ownership(app, &status, ctx).await;
    // A secret of the user's choice: read at every pass (and every recheck).
    let source = read_source(app, ctx).await?;
    if let Some(plan::Source { read: plan::SourceRead::Value(value), .. }) = &source {
        chosen_secret = Some(value.clone());
    }
    let mut fresh = Fresh::mint();
    if let Some(claimed) = ledger.held_by(&app_key, uid(app)) {
        fresh.client_id = claimed;
    }
    let sync = ctx.settings.auth_server.as_ref().map(|(_, sync)| sync);
    Ok(Some(Seen {
        secret_verifies: secret_verifies(app, &status, &observed, ctx).await?,
        observed,
        cached,
        import,
        retained,
        chosen_secret,
        ownership,
        source,
        violations: validate_spec(&app.spec),
        status_client_id_taken,
        secret_client_id_taken,
        consents: consent_summary(app, ctx),
        fresh,
        unreachable: sync.and_then(|sync| sync.unreachable()),
        stale: sync.is_some_and(|sync| sync.is_stale(&app_key)),
        retention_in_the_way: ledger.retention_at(&Key::new(&ns, &layout.name)),
    }))
}

/// What must hold before the decision issues anything: a re-mint because the
/// cached Secret looks deleted or altered is confirmed with the apiserver (a
/// cache that has not caught up must not cost a secret), and the Client ID
/// goes to this app in the ledger before anything is written (the apiserver
/// decides a race with any other app, of any instance). `false`: look again.
async fn ready_to_issue(
    inputs: &Inputs<'_>,
    decision: &Decision,
    layout: &SecretLayout,
    cached: Option<&ObjectMeta>,
    ctx: &Context,
) -> Result<bool, Error> {
    let app = inputs.app;
    if let Decision::Mint {
        reason: MintReason::SecretMissing | MintReason::SecretAltered | MintReason::SecretUntrusted,
        ..
    } = decision
        && cache_lags(layout, &app.namespace().unwrap_or_default(), cached, ctx).await?
    {
        return Ok(false);
    }
    match decision.client_id(inputs) {
        Some(client_id) if !ctx.caches.ledger().holds(&key_of(app), uid(app), client_id) => {
            claim(app, client_id, inputs, ctx).await
        }
        _ => Ok(true),
    }
}

/// Carries out a planned outcome: a takeover settled, the Secret, the
/// ledger's verifiers, the authorization server, the workload restarts, the
/// status, the Events — in that order, so a crash between any two leaves a
/// state the next pass finishes (a sealed Secret ahead of status is adopted).
async fn carry_out(
    inputs: &Inputs<'_>,
    layout: &SecretLayout,
    mut outcome: Outcome,
    real: &AppRegistration,
    ctx: &Context,
) -> Result<Action, Error> {
    let app = inputs.app;
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    if let Some(client_id) = app.status.as_ref().and_then(|s| s.client_id.as_deref()) {
        settle_takeover(app, layout, client_id, ctx).await?;
    }
    let written = match &outcome.secret {
        None => None,
        Some(SecretWrite::Create(secret)) => match create_secret(&ns, secret, ctx).await? {
            Some(created) => Some(created),
            None if foreign_secret_holds_the_name(app, layout, &ns, ctx).await? => {
                // Taken since the cache looked: never overwritten.
                let observed = Observed::Foreign;
                let inputs = inputs.observing(&observed);
                let outcome = plan::outcome(&inputs, &Decision::Conflict, None);
                return Box::pin(carry_out(&inputs, layout, outcome, real, ctx)).await;
            }
            None => return Ok(Action::requeue(Duration::from_secs(1))),
        },
        Some(SecretWrite::TakeOver { secret, resource_version }) => {
            let mut body = secret.clone();
            body.metadata.resource_version = Some(resource_version.clone());
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match Api::<Secret>::namespaced(ctx.client.clone(), &ns).replace(&secret.name_any(), &params, &body).await {
                Ok(replaced) => Some(replaced),
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                Err(e) => return Err(Error::kube(Step::WriteSecret, format!("{ns}/{}", secret.name_any()), e)),
            }
        }
        Some(SecretWrite::Replace { secret, resource_version }) => {
            match apply_secret(&ns, secret, resource_version.clone(), layout, ctx).await? {
                Some(applied) => Some(applied),
                None => return Ok(Action::requeue(Duration::from_secs(1))),
            }
        }
    };
    if let (Some(write), Some(written)) = (&outcome.secret, &written) {
        remember(app, layout, written, layout.contents(write.secret()), ctx);
    }
    // A chosen secret's verifiers go to the ledger before status names its version.
    if let Some(client_id) = outcome.status.client_id.as_deref()
        && ctx.caches.ledger().holds(&key_of(app), uid(app), client_id)
        && ctx.caches.ledger().verifiers(&key_of(app), uid(app), client_id) != outcome.verifiers
        && !ctx
            .clerk
            .set_verifiers(client_id, &Holder::of(app), outcome.verifiers.as_ref())
            .await
            .map_err(|source| Error::Ledger { object: key(app), source })?
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // The authorization server, in the same pass as the Secret.
    let mut registration_failed = None;
    if let (Some(registration), Some((server, sync))) = (&outcome.registration, &ctx.settings.auth_server) {
        let lane = lane_of(app, registration.client_id(), ctx);
        let result = register(server, registration, &lane, ctx).await;
        match &result {
            Ok(()) => sync.repaired(&key_of(app)),
            Err(e) => {
                warn!(namespace = ns, name = app.name_any(), error = %e, "registering at the authorization server failed");
                registration_failed = Some(e.clone());
            }
        }
        plan::after_registration(inputs, &mut outcome, &result);
    }

    let mut restart_failed = None;
    if let Some(version) = outcome.restart {
        let report = restart_workloads(app, version, ctx).await;
        restart_failed = report.failed.as_ref().map(|(workload, _)| workload.clone());
        plan::after_restart(inputs, &mut outcome, &report);
    }

    if !write_status(real, &outcome.status, ctx).await? {
        // The app changed since it was read (or another instance wrote): look again.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Some(reason) = &outcome.minted {
        ctx.metrics.mints.get_or_create(&ReasonLabels { reason: reason.label().into() }).inc();
        let issued = outcome.status.secret_version;
        info!(
            namespace = ns,
            name = app.name_any(),
            client_id = outcome.status.client_id,
            secret_version = issued,
            reason = reason.label(),
            "minted credentials"
        );
    }
    for event in &outcome.events {
        let related = written.as_ref().filter(|_| event.about_secret).map(|w| {
            // The Secret, at the version just written: which Secret, and which version of it, to look at.
            let mut related = w.object_ref(&());
            related.resource_version = w.resource_version();
            related
        });
        publish(app, event, related, ctx).await;
    }
    if let Some(source) = registration_failed {
        return Err(Error::Registration { object: key(app), source });
    }
    if let Some(workload) = restart_failed {
        return Err(Error::RestartRefused { object: key(app), workload });
    }
    Ok(outcome.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The app's lane at the authorization server for `client_id`: the app, and
/// the app it took the Client ID over from.
fn lane_of(app: &AppRegistration, client_id: &str, ctx: &Context) -> authserver::Lane {
    authserver::Lane::of(&Holder::of(app), ctx.caches.ledger().taken_over_from(client_id))
}

/// Carries out a registration at the authorization server, in the app's lane.
async fn register(
    server: &AuthServer,
    registration: &Registration,
    lane: &authserver::Lane,
    ctx: &Context,
) -> Result<(), AsError> {
    match registration {
        Registration::Register { registration, secret } => {
            let result = server.register(registration, secret.as_ref(), lane).await.map(drop);
            ctx.metrics.count_authserver("register", authserver::outcome(&result));
            result
        }
        Registration::Update { registration, secret } => {
            let updated = server.update(registration, lane).await;
            ctx.metrics.count_authserver("update", authserver::outcome(&updated));
            if updated? {
                return Ok(());
            }
            // Missing there: register it anew.
            let result = server.register(registration, secret.as_ref(), lane).await.map(drop);
            ctx.metrics.count_authserver("register", authserver::outcome(&result));
            result
        }
    }
}

/// What the app's Secret holds. `cached` is its metadata from the watch; the
/// data is what registrar last wrote or read at that resourceVersion, or else
/// is read from the apiserver (only for a Secret claiming this app). Only the
/// contents of Secrets registrar sealed are remembered. `None`: the Secret
/// changed while it was read; look again.
async fn observe(
    app: &AppRegistration,
    layout: &SecretLayout,
    cached: Option<&ObjectMeta>,
    ctx: &Context,
) -> Result<Option<Observed>, Error> {
    let Some(cached) = cached else { return Ok(Some(Observed::Missing)) };
    if !controlled_by(app, cached) {
        return Ok(Some(Observed::Foreign));
    }
    let rv = cached.resource_version.clone().unwrap_or_default();
    let known = ctx
        .memory()
        .get(app)
        .and_then(|r| r.contents.as_ref())
        .filter(|k| k.secret_name == layout.name && k.resource_version == rv)
        .map(|k| k.contents.clone());
    if let Some(contents) = known {
        return Ok(Some(Observed::Owned(layout.observe_owned(app, cached, &contents, &ctx.settings.seal_key))));
    }
    let ns = app.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // Not older than the cached metadata: served from the apiserver's watch cache.
    let live = match api.get_with(&layout.name, &GetParams::at(&rv)).await {
        Ok(live) => live,
        Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(None),
        Err(e) => return Err(Error::kube(Step::ReadSecret, format!("{ns}/{}", layout.name), e)),
    };
    let observed = layout.observe(app, Some(&live), &ctx.settings.seal_key);
    if let Observed::Owned(owned) = &observed
        && owned.sealed
    {
        remember(app, layout, &live, layout.contents(&live), ctx);
    }
    Ok(Some(observed))
}

/// Whether the owned Secret holds the secret status was written for: its
/// fingerprint ([`plan::secret_verifies`]), or, when that differs (a seal key
/// since replaced), an argon2id verification against status's hash, once: the
/// plan then writes the fingerprint under the current key.
async fn secret_verifies(
    app: &AppRegistration,
    status: &AppRegistrationStatus,
    observed: &Observed,
    ctx: &Context,
) -> Result<Option<bool>, Error> {
    let verifies = plan::secret_verifies(status, observed, &ctx.settings.seal_key);
    if verifies == Some(false)
        && let Observed::Owned(owned) = observed
        && let (Some(secret), Some(hash)) = (&owned.issued.secret, &status.secret_hash)
        && crate::credentials::is_well_formed(hash)
    {
        let verified =
            ctx.hasher.verify(secret, hash).await.map_err(|source| Error::Credentials { object: key(app), source })?;
        return Ok(Some(verified));
    }
    Ok(verifies)
}

/// Claims `client_id` for `app` in the ledger (a takeover, for a retained
/// Client ID the app imports). `false` when it is not the app's: the next
/// pass sees the ledger's word (a conflict).
async fn claim(app: &AppRegistration, client_id: &str, inputs: &Inputs<'_>, ctx: &Context) -> Result<bool, Error> {
    let holder = Holder::of(app);
    let taking_over =
        matches!(inputs.import, Some(Import::Retained(_))) && app.spec.client_id.as_deref() == Some(client_id);
    let claimed = match taking_over {
        true => ctx.clerk.take_over(client_id, &holder).await,
        false => ctx.clerk.claim(client_id, &holder).await,
    }
    .map_err(|source| Error::Ledger { object: key(app), source })?;
    if let Claim::Refused(word) = &claimed {
        debug!(
            namespace = holder.namespace,
            name = holder.name,
            client_id,
            ?word,
            "the ledger gives the Client ID to another app"
        );
    }
    Ok(claimed == Claim::Held)
}

/// Reads the retained Secret `secret_name` that `app` takes over with
/// `client_id`. The secret is kept when the Secret still holds, under this
/// app's key, the secret the ledger's verifier verifies. `None`: the ledger
/// has no retention of it there (any more), or the Secret is gone (its
/// retention is being given up): look again.
async fn read_retained(
    app: &AppRegistration,
    secret_name: &str,
    client_id: &str,
    ctx: &Context,
) -> Result<Option<(RetainedSecret, Option<ClientSecret>)>, Error> {
    let ns = app.namespace().unwrap_or_default();
    let verifier = match ctx.caches.ledger().word(client_id) {
        Word::Standing(standing) => match standing.retained {
            Some(at) if at.secret_name == secret_name => at.verifier,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let live =
        api.get_opt(secret_name).await.map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{secret_name}"), e))?;
    let Some(live) = live else { return Ok(None) };
    let found = RetainedSecret {
        name: secret_name.to_owned(),
        uid: live.uid().unwrap_or_default(),
        resource_version: live.resource_version().unwrap_or_default(),
        client_id: client_id.to_owned(),
    };
    let layout = SecretLayout::for_app(app);
    let value = layout.contents(&live).secret;
    let secret = match (value, verifier) {
        (Some(value), Some(hash)) => {
            let intact = ctx
                .hasher
                .verify(&value, &hash)
                .await
                .map_err(|source| Error::Credentials { object: key(app), source })?;
            intact.then_some(value)
        }
        _ => None,
    };
    Ok(Some((found, secret)))
}

/// Reads the app's `secret.sourceRef`, if it has one. The value is held only
/// for this pass; its contents are never logged.
async fn read_source(app: &AppRegistration, ctx: &Context) -> Result<Option<plan::Source>, Error> {
    let Some(source) = app.spec.secret.as_ref().and_then(|s| s.source_ref.as_ref()) else { return Ok(None) };
    let ns = app.namespace().unwrap_or_default();
    let key = source.key.clone().unwrap_or_else(|| crate::api::DEFAULT_CLIENT_SECRET_KEY.to_owned());
    let found = |read| plan::Source {
        secret: source.name.clone(),
        key: key.clone(),
        read,
        recheck: ctx.settings.source_recheck,
    };
    // Read for the user who registered the app, never on registrar's own authority.
    if let Some(refusal) = source_refusal(app, &source.name, ctx).await? {
        return Ok(Some(found(plan::SourceRead::Forbidden(refusal))));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let live = api
        .get_opt(&source.name)
        .await
        .map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{}", source.name), e))?;
    let read = match live.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(&key)) {
        None if live.is_none() => plan::SourceRead::NoSecret,
        None => plan::SourceRead::NoKey,
        // Too long, not text, or weak: refused alike, nothing told of the value.
        Some(bytes) if bytes.0.len() > MAX_CHOSEN_SECRET_BYTES => plan::SourceRead::Weak,
        Some(bytes) => match ClientSecret::from_bytes(&bytes.0) {
            Some(value) if !value.is_weak() => plan::SourceRead::Value(value),
            _ => plan::SourceRead::Weak,
        },
    };
    Ok(Some(found(read)))
}

/// Why registrar may not read the Secret `secret` for `app`, if it may not.
/// `secret.sourceRef` acts for the user who registered the app (a
/// SubjectAccessReview: may that user, with the groups recorded at admission,
/// `get` it?): an editor of AppRegistrations who may not read a Secret cannot
/// have registrar read it for them, nor learn whether it exists.
async fn source_refusal(app: &AppRegistration, secret: &str, ctx: &Context) -> Result<Option<SourceRefusal>, Error> {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let ns = app.namespace().unwrap_or_default();
    let Some(user) = app.annotations().get(REGISTERED_BY_ANNOTATION).filter(|u| !u.is_empty()) else {
        return Ok(Some(SourceRefusal::NoRegisteringUser));
    };
    // The annotation is the editor's to write unless the policies that set
    // and keep it are in place, and were before the app was created.
    let verdict =
        ctx.registered_by.verdict(&ctx.client).await.map_err(|e| {
            Error::kube(Step::ReadSecret, format!("admission policy {}", ctx.registered_by.policy()), e)
        })?;
    if let Some(why) = super::registered_by::doubt(&verdict, app.meta().creation_timestamp.as_ref()) {
        return Ok(Some(SourceRefusal::RegisteredByDoubted(why)));
    }
    let groups: Vec<String> = app
        .annotations()
        .get(REGISTERED_BY_GROUPS_ANNOTATION)
        .map(|g| g.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let key = (user.clone(), groups.clone(), ns.clone(), secret.to_owned());
    let allowed = match ctx.source_answers.get(&key) {
        Some(allowed) => allowed,
        None => {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.clone()),
                    groups: (!groups.is_empty()).then_some(groups),
                    resource_attributes: Some(ResourceAttributes {
                        resource: Some("secrets".into()),
                        verb: Some("get".into()),
                        namespace: Some(ns.clone()),
                        name: Some(secret.to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = Api::<SubjectAccessReview>::all(ctx.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{secret}"), e))?;
            let allowed = answer.status.is_some_and(|s| s.allowed);
            ctx.source_answers.insert(key, allowed);
            allowed
        }
    };
    Ok((!allowed).then(|| SourceRefusal::NotAllowed { user: user.clone() }))
}

/// Who owns the app this pass: the owner named, whether they may still
/// manage it (asked when the app changed, and every owner-check period), and
/// who takes over in its organization.
async fn ownership(app: &AppRegistration, status: &AppRegistrationStatus, ctx: &Context) -> Option<Ownership> {
    let ns = app.namespace().unwrap_or_default();
    let named = match (&app.spec.owner, app.annotations().get(REGISTERED_BY_ANNOTATION)) {
        (Some(owner), _) => Some((owner.clone(), owner::SPECIFIED)),
        (None, Some(user)) => Some((Owner::user(user.clone()), owner::REGISTERED)),
        (None, None) => None,
    };
    // The registering user is asked about with the groups they had then (the
    // apiserver cannot look groups up); a user named in spec.owner, alone.
    let groups: Vec<String> = match (&app.spec.owner, app.annotations().get(REGISTERED_BY_GROUPS_ANNOTATION)) {
        (None, Some(groups)) => groups.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let organization = ctx.caches.organization_of(&ns);
    let policy = ctx.caches.policy(&organization);
    let organization_owner =
        policy.as_ref().and_then(|p| p.spec.owner.clone()).unwrap_or_else(|| ctx.settings.default_owner.clone());
    let rotate_on_transfer = policy.as_ref().is_some_and(|p| p.spec.rotate_on_owner_transfer == Some(true));
    let every = ctx.settings.owner_check;
    // An owner already in status, for the spec it was decided on, was checked
    // by an earlier process: its next check is spread over one period rather
    // than all at once after a restart.
    let settled = status.owner.is_some() && app.metadata.generation == status.observed_generation;
    let last_checked = {
        let mut memory = ctx.memory();
        match memory.get(app).and_then(|r| r.owner_checked) {
            Some(at) => Some(at),
            None if settled && named.is_some() => {
                let spread = every.mul_f64(rand::random::<f64>());
                let at = Instant::now().checked_sub(spread).unwrap_or_else(Instant::now);
                memory.of(app).owner_checked = Some(at);
                Some(at)
            }
            None => None,
        }
    };
    let due = !settled || last_checked.is_none_or(|at| at.elapsed() >= every);
    // The check is asked again a period after this one, answered or not, by
    // the sweep (`owner_checks_due`) rather than a timer per app.
    let can_manage = match (&named, due) {
        (Some((owner, _)), true) => {
            let answer = may_manage(owner, &groups, &ns, ctx).await;
            ctx.memory().of(app).owner_checked = Some(Instant::now());
            answer
        }
        (Some(_), false) => None,
        (None, _) => {
            ctx.memory().no_owner(app);
            None
        }
    };
    Some(Ownership { named, can_manage, organization_owner, rotate_on_transfer })
}

/// Whether `owner` (a user with `groups`, or a group) may update
/// AppRegistrations in `namespace` (a SubjectAccessReview; `None` when the
/// apiserver could not say).
async fn may_manage(owner: &Owner, groups: &[String], namespace: &str, ctx: &Context) -> Option<bool> {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let key = (owner.clone(), groups.to_vec(), namespace.to_owned());
    if let Some(answer) = ctx.owner_answers.get(&key) {
        return Some(answer);
    }
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: (!owner.is_group()).then(|| owner.name.clone()),
            groups: if owner.is_group() {
                Some(vec![owner.name.clone()])
            } else {
                (!groups.is_empty()).then(|| groups.to_vec())
            },
            resource_attributes: Some(ResourceAttributes {
                group: Some("registrar.dev".into()),
                resource: Some("appregistrations".into()),
                verb: Some("update".into()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<SubjectAccessReview>::all(ctx.client.clone()).create(&PostParams::default(), &review).await {
        Ok(answer) => {
            let allowed = answer.status.is_some_and(|s| s.allowed);
            ctx.owner_answers.insert(key, allowed);
            Some(allowed)
        }
        Err(e) => {
            warn!(namespace, owner = owner.describe(), error = %e, "could not check whether the owner may manage the app");
            None
        }
    }
}

/// The longest secret accepted from a source.
const MAX_CHOSEN_SECRET_BYTES: usize = 1024;

/// Once an app is issued the Client ID it took over, the takeover is
/// settled: a retained Secret of another name goes (one Client ID, one
/// Secret), and the verifier of the retained secret leaves the ledger.
async fn settle_takeover(
    app: &AppRegistration,
    layout: &SecretLayout,
    client_id: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = app.namespace().unwrap_or_default();
    let app_key = key_of(app);
    let Word::Standing(standing) = ctx.caches.ledger().word(client_id) else { return Ok(()) };
    if !standing.is_held_by(&app_key, uid(app)) {
        return Ok(());
    }
    let Some(at) = standing.retained else { return Ok(()) };
    if at.secret_name != layout.name {
        let name = at.secret_name;
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let live =
            api.get_metadata_opt(&name).await.map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{name}"), e))?;
        // Only the Secret that records this retention (never one this app controls).
        if let Some(live) = live.filter(|l| {
            !controlled_by(app, &l.metadata)
                && l.annotations().get(RETAINED_CLIENT_ID_ANNOTATION).map(String::as_str) == Some(client_id)
        }) {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: live.uid(), resource_version: live.resource_version() }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => info!(
                    namespace = ns,
                    name = app.name_any(),
                    secret = name,
                    client_id,
                    "deleted the retained Secret taken over"
                ),
                Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => return Ok(()),
                Err(e) => return Err(Error::kube(Step::DeleteSecret, format!("{ns}/{name}"), e)),
            }
        }
    }
    ctx.clerk.settle(client_id, &Holder::of(app)).await.map_err(|source| Error::Ledger { object: key(app), source })
}

/// Remembers what the app's Secret holds at the resourceVersion of `secret`.
fn remember(app: &AppRegistration, layout: &SecretLayout, secret: &Secret, contents: SecretContents, ctx: &Context) {
    let known = KnownContents {
        secret_name: layout.name.clone(),
        resource_version: secret.resource_version().unwrap_or_default(),
        contents,
    };
    ctx.memory().of(app).contents = Some(Box::new(known));
}

/// Reads the Secret of the app's name from the apiserver (foreign Secrets are
/// not in the cache) and says whether something other than this app controls it.
async fn foreign_secret_holds_the_name(
    app: &AppRegistration,
    layout: &SecretLayout,
    ns: &str,
    ctx: &Context,
) -> Result<bool, Error> {
    let live = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_metadata_opt(&layout.name)
        .await
        .map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{}", layout.name), e))?;
    Ok(live.is_some_and(|live| !controlled_by(app, &live.metadata)))
}

async fn hash_issued(
    app: &AppRegistration,
    issued: &Issued,
    origin: SecretOrigin,
    ctx: &Context,
) -> Result<IssuedHash, Error> {
    let Some(secret) = &issued.secret else {
        return Ok(IssuedHash { hash: None, fingerprint: None });
    };
    let started = Instant::now();
    let hash =
        ctx.hasher.hash(secret, origin).await.map_err(|source| Error::Credentials { object: key(app), source })?;
    ctx.metrics.hash_seconds.observe(started.elapsed().as_secs_f64());
    Ok(IssuedHash { hash: Some(hash), fingerprint: Some(ctx.settings.seal_key.fingerprint(secret)) })
}

/// Before re-minting because the cached Secret looks deleted or altered, asks
/// the apiserver: a cache that has not caught up must not cost a secret.
async fn cache_lags(
    layout: &SecretLayout,
    ns: &str,
    cached: Option<&ObjectMeta>,
    ctx: &Context,
) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let live = api
        .get_metadata_opt(&layout.name)
        .await
        .map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{}", layout.name), e))?;
    let rv = |m: Option<&ObjectMeta>| m.and_then(|m| m.resource_version.clone());
    Ok(rv(live.as_ref().map(|l| &l.metadata)) != rv(cached))
}

/// Creates the Secret; never overwrites an existing one. `None` when a Secret
/// of that name exists: ours but not yet in the cache, or a foreign one.
async fn create_secret(ns: &str, secret: &Secret, ctx: &Context) -> Result<Option<Secret>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, secret).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(None),
        Err(e) => Err(Error::kube(Step::WriteSecret, format!("{ns}/{}", secret.name_any()), e)),
    }
}

/// Server-side applies our Secret, on condition that it is still the version
/// observed (`resource_version`). `None` on a conflict (retry later). Extra
/// labels and annotations registrar wrote and the spec dropped are removed
/// (server-side apply keeps those the Secret's first create wrote).
async fn apply_secret(
    ns: &str,
    secret: &Secret,
    resource_version: Option<String>,
    layout: &SecretLayout,
    ctx: &Context,
) -> Result<Option<Secret>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let cached = ctx.caches.secret_meta(ns, &secret.name_any());
    let (stale_labels, stale_annotations) = cached.map(|m| layout.stale_extras(&m)).unwrap_or_default();
    let mut body = secret.clone();
    body.metadata.resource_version = resource_version;
    body.metadata.managed_fields = None;
    let patch = Patch::Apply(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": body.metadata,
        "type": body.type_,
        "data": body.data,
    }));
    let applied = match api.patch(&secret.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &patch).await {
        Ok(applied) => applied,
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => return Ok(None),
        Err(e) => return Err(Error::kube(Step::WriteSecret, format!("{ns}/{}", secret.name_any()), e)),
    };
    let has = |map: &Option<std::collections::BTreeMap<String, String>>, k: &String| {
        map.as_ref().is_some_and(|m| m.contains_key(k))
    };
    let labels: serde_json::Map<String, serde_json::Value> = stale_labels
        .iter()
        .filter(|k| has(&applied.metadata.labels, k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    let annotations: serde_json::Map<String, serde_json::Value> = stale_annotations
        .iter()
        .filter(|k| has(&applied.metadata.annotations, k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    if labels.is_empty() && annotations.is_empty() {
        return Ok(Some(applied));
    }
    let removal = Patch::Merge(json!({ "metadata": {
        "resourceVersion": applied.metadata.resource_version,
        "labels": labels,
        "annotations": annotations,
    } }));
    match api.patch(&secret.name_any(), &PatchParams::default(), &removal).await {
        Ok(cleaned) => Ok(Some(cleaned)),
        // What was applied stands (status follows it); the next pass finds the
        // keys still there and tries again.
        Err(e) => {
            warn!(namespace = ns, secret = secret.name_any(), error = %e, "could not remove dropped labels or annotations");
            Ok(Some(applied))
        }
    }
}

/// Writes the desired status, unless it is already as desired. `false` when
/// the app changed since it was read (the write was refused; look again).
async fn write_status(app: &AppRegistration, desired: &AppRegistrationStatus, ctx: &Context) -> Result<bool, Error> {
    if app.status.as_ref() == Some(desired) {
        return Ok(true);
    }
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AppRegistration> = Api::namespaced(ctx.client.clone(), &ns);
    let (params, patch) = status_patch(app, app.status.as_ref(), desired);
    match api.patch_status(&app.name_any(), &params, &patch).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_conflict() => {
            debug!(namespace = ns, name = app.name_any(), "the app changed since it was read; not writing status");
            return Ok(false);
        }
        Err(e) => return Err(Error::kube(Step::WriteStatus, key(app), e)),
    }
    if let Some(version) = desired.secret_version {
        ctx.memory().of(app).written = Some(version);
    }
    Ok(true)
}

/// The namespaces holding a consent granted to this app's Client ID.
fn consent_summary(app: &AppRegistration, ctx: &Context) -> Option<ConsentSummary> {
    let client_id = app.status.as_ref()?.client_id.as_deref()?;
    let consents = ctx.caches.consents_granted_to(&key_of(app), client_id);
    let namespaces: BTreeSet<String> = consents.iter().filter_map(|consent| consent.namespace()).collect();
    if namespaces.is_empty() {
        return None;
    }
    Some(ConsentSummary {
        count: i64::try_from(namespaces.len()).unwrap_or(i64::MAX),
        namespaces: namespaces.into_iter().take(MAX_LISTED_CONSENTS).collect(),
    })
}

/// Rolls the app's `restartOnRotate` workloads by setting a pod-template
/// annotation to the new secret version (idempotent). Every workload is tried;
/// the report says which do not exist and the first that was refused.
async fn restart_workloads(app: &AppRegistration, version: i64, ctx: &Context) -> RestartReport {
    let ns = app.namespace().unwrap_or_default();
    let patch = Patch::Merge(json!({
        "spec": { "template": { "metadata": { "annotations": { VERSION_ANNOTATION: version.to_string() } } } }
    }));
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let mut report = RestartReport::default();
    for workload in &app.spec.restart_on_rotate {
        let result = match workload.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
                .patch(&workload.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
                .patch(&workload.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
                .patch(&workload.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        let named = format!("{:?} {}", workload.kind, workload.name);
        match result {
            Ok(()) => {
                info!(namespace = ns, name = app.name_any(), workload = workload.name, kind = ?workload.kind, secret_version = version, "restarted workload")
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => report.missing.push(named),
            Err(e) => {
                warn!(namespace = ns, name = app.name_any(), workload = workload.name, kind = ?workload.kind, error = %e, "restarting a workload was refused");
                if report.failed.is_none() {
                    let answer = match e {
                        kube::Error::Api(status) => status.message,
                        other => other.to_string(),
                    };
                    report.failed = Some((named, answer));
                }
            }
        }
    }
    report
}

/// What a deletion pass came to.
enum Revocation {
    /// Revoked (or retained): the finalizer may go.
    Done(Action),
    /// Waiting for the authorization server to delete the client: again then.
    Waiting(Action),
}

/// Deletion: mark the app revoked, delete its client at the authorization
/// server, give its Client ID up in the ledger, delete its Secret (already
/// gone is fine). With `deletionPolicy: Retain`, the Client ID is Retained in
/// the ledger and the Secret kept instead. The finalizer is removed by the
/// caller once this succeeds; a pass interrupted anywhere is finished by the
/// next, and revokes nothing of another app's.
async fn revoke(app: &AppRegistration, ctx: &Context) -> Result<Revocation, Error> {
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let held = held_at_deletion(app, ctx).await?;
    let holder = Holder::of(app);
    let ledger_failed = |source| Error::Ledger { object: key(app), source };
    if app.spec.deletion_policy == Some(DeletionPolicy::Retain)
        && let Some(id) = &held
        && let Some(secret_name) = retain_secret(app, id, ctx).await?
    {
        let (desired, event) = plan::retained(app, id, &secret_name, Timestamp::now());
        match write_status(app, &desired, ctx).await {
            Ok(_) => {}
            Err(Error::Kube { source, .. }) if matches!(source.as_ref(), kube::Error::Api(s) if s.is_not_found()) => {}
            Err(e) => return Err(e),
        }
        ctx.memory().forget(app);
        info!(namespace = ns, name = app.name_any(), client_id = id, secret = secret_name, "retained");
        publish(app, &event, None, ctx).await;
        return Ok(Revocation::Done(Action::await_change()));
    }
    let (desired, event) = plan::revoked(app, held.as_deref(), Timestamp::now());
    match write_status(app, &desired, ctx).await {
        // Changed meanwhile, or already on its way out: revocation must not hang on status.
        Ok(_) => {}
        Err(Error::Kube { source, .. }) if matches!(source.as_ref(), kube::Error::Api(s) if s.is_not_found()) => {}
        Err(e) => return Err(e),
    }
    if let (Some(id), Some((server, _))) = (&held, &ctx.settings.auth_server) {
        let attempted = Instant::now();
        let deleted = server.delete(id, &lane_of(app, id, ctx)).await;
        ctx.metrics.count_authserver("delete", authserver::outcome(&deleted));
        if let Err(e) = deleted {
            let name = server.capabilities().name;
            let within = server.deregister_within();
            let (since, attempts) = {
                let mut memory = ctx.memory();
                // Failing since the first failed attempt began.
                let failing = memory.of(app).deregistering.get_or_insert((attempted, 0));
                failing.1 += 1;
                *failing
            };
            // While the client is there it may still get tokens: the
            // finalizer waits for the server, retried with backoff, within a bound.
            if matches!(e, AsError::Unavailable { .. } | AsError::Busy { .. }) && since.elapsed() < within {
                warn!(namespace = ns, name = app.name_any(), client_id = id, error = %e, attempts, "the authorization server could not delete the client yet; retrying");
                if attempts == 1 {
                    let note = format!(
                        "Client ID {id} could not be deleted at {name} yet ({e}); retrying for up to {} before the \
                         deletion completes without it",
                        go_duration(within.into())
                    );
                    let event = PlannedEvent {
                        warning: true,
                        reason: "NotDeregistered",
                        note,
                        about_secret: false,
                        may_repeat: true,
                    };
                    publish(app, &event, None, ctx).await;
                }
                let backoff = Duration::from_secs(1 << attempts.min(4)).min(within.saturating_sub(since.elapsed()));
                return Ok(Revocation::Waiting(Action::requeue(backoff.max(Duration::from_millis(100)))));
            }
            // The deletion goes on without it: the periodic comparison deletes
            // the client (revoked in the ledger by then) once the server answers.
            ctx.metrics.deregistrations_deferred.inc();
            warn!(namespace = ns, name = app.name_any(), client_id = id, error = %e, "could not delete the client at the authorization server; the comparison deletes it later");
            let note = format!(
                "Client ID {id} could not be deleted at {name} ({e}; tried for {}); it is deleted there once the \
                 server answers, at the next comparison",
                go_duration(Duration::from_secs(since.elapsed().as_secs()).into())
            );
            let event = PlannedEvent {
                warning: true,
                reason: "DeregistrationDeferred",
                note,
                about_secret: false,
                may_repeat: true,
            };
            publish(app, &event, None, ctx).await;
        }
    }
    if let Some(id) = &held {
        match plan::giving_up(app, ctx.settings.auth_server.is_some()) {
            plan::GiveUp::Revoke => ctx.clerk.revoke(id, &holder.uid).await.map_err(ledger_failed)?,
            plan::GiveUp::Release => ctx.clerk.release(id, &holder.uid).await.map_err(ledger_failed)?,
        }
    }
    let layout = SecretLayout::for_app(app);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(secret) =
        api.get_metadata_opt(&layout.name).await.map_err(|e| Error::kube(Step::ReadSecret, key(app), e))?
        && controlled_by(app, &secret.metadata)
    {
        // Exactly the Secret just read: a Secret put in its place meanwhile is not ours to delete.
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: secret.uid(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&layout.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(Error::kube(Step::DeleteSecret, key(app), e)),
        }
    }
    ctx.memory().forget(app);
    info!(namespace = ns, name = app.name_any(), client_id = held, "revoked");
    publish(app, &event, None, ctx).await;
    Ok(Revocation::Done(Action::await_change()))
}

/// The Client ID a deleted app gives up: the one its status names, when the
/// ledger has it as this app's (Active, or Retained by a pass of this
/// deletion that stopped short), or one it claimed for a first issuance that
/// never completed. An app issued before the ledger existed, and deleted
/// before its first pass after the upgrade, claims it first, so that it is
/// revoked (or retained) like any other.
async fn held_at_deletion(app: &AppRegistration, ctx: &Context) -> Result<Option<String>, Error> {
    let holder = Holder::of(app);
    let Some(id) = app.status.as_ref().and_then(|s| s.client_id.clone()) else {
        return Ok(ctx.caches.ledger().held_by(&Key::new(&holder.namespace, &holder.name), uid(app)));
    };
    let ours = match ctx.caches.ledger().word(&id) {
        Word::Standing(standing) => {
            standing.holder == Key::new(&holder.namespace, &holder.name) && standing.uid == uid(app)
        }
        Word::Revoked => false,
        Word::Free => {
            ctx.clerk.claim(&id, &holder).await.map_err(|source| Error::Ledger { object: key(app), source })?
                == Claim::Held
        }
    };
    Ok(ours.then_some(id))
}

/// Keeps the app's credentials Secret past the app (`deletionPolicy: Retain`):
/// its Client ID Retained in the ledger with the verifier of the current
/// secret, and the Secret without its owner reference (so the garbage
/// collector leaves it). `None` when there is nothing to keep (no Secret of
/// the app's, or it holds another Client ID): then the app is revoked as usual.
async fn retain_secret(app: &AppRegistration, client_id: &str, ctx: &Context) -> Result<Option<String>, Error> {
    let ns = app.namespace().unwrap_or_default();
    let layout = SecretLayout::for_app(app);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let object = format!("{ns}/{}", layout.name);
    let Some(mut live) =
        api.get_opt(&layout.name).await.map_err(|e| Error::kube(Step::ReadSecret, object.clone(), e))?
    else {
        return Ok(None);
    };
    let kept_already = !controlled_by(app, &live.metadata)
        && live.annotations().get(RETAINED_CLIENT_ID_ANNOTATION).map(String::as_str) == Some(client_id);
    if !kept_already
        && (!controlled_by(app, &live.metadata) || layout.contents(&live).client_id.as_deref() != Some(client_id))
    {
        return Ok(None);
    }
    // A minted secret's hash is in status; a chosen one's in the ledger
    // entry, which the clerk reads.
    let minted = app.status.as_ref().and_then(|s| s.secret_hash.clone());
    let retained = ctx
        .clerk
        .retain(client_id, &Holder::of(app), &layout.name, minted)
        .await
        .map_err(|source| Error::Ledger { object: key(app), source })?;
    if !retained {
        return Ok(None);
    }
    if kept_already {
        return Ok(Some(layout.name)); // a pass that stopped before the finalizer went
    }
    live.metadata.owner_references = None;
    live.metadata.managed_fields = None;
    let annotations = live.metadata.annotations.get_or_insert_with(Default::default);
    annotations.remove(SEAL_ANNOTATION);
    annotations.remove(RETAINED_SEAL_ANNOTATION);
    // For people reading the Secret; the ledger is the record registrar trusts.
    annotations.insert(RETAINED_CLIENT_ID_ANNOTATION.to_owned(), client_id.to_owned());
    annotations.insert(RETAINED_FROM_ANNOTATION.to_owned(), app.name_any());
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.replace(&layout.name, &params, &live).await {
        Ok(_) => Ok(Some(layout.name)),
        Err(e) => Err(Error::kube(Step::WriteSecret, object, e)),
    }
}

/// Publishes a planned Event about the app (and `related`, the Secret just written).
async fn publish(
    app: &AppRegistration,
    planned: &PlannedEvent,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ctx: &Context,
) {
    let event = Event {
        type_: if planned.warning { EventType::Warning } else { EventType::Normal },
        reason: planned.reason.into(),
        // Within what the apiserver takes, whatever the apiserver's own words in it.
        note: Some(retry::event_note(&planned.note)),
        action: "Reconcile".into(),
        secondary: related,
    };
    let regarding = app.object_ref(&());
    // A mint or a revocation, each naming what it did, skips the shared
    // recorder: it keeps every Event it publishes for six minutes (to fold
    // repeats into a series) and scans them all on each publish, so 10,000 new
    // apps would hold 10,000 Events in memory.
    let published = if planned.may_repeat {
        ctx.recorder.publish(&event, &regarding).await
    } else {
        Recorder::new(ctx.client.clone(), ctx.reporter.clone()).publish(&event, &regarding).await
    };
    if let Err(e) = published {
        warn!(namespace = app.namespace().unwrap_or_default(), name = app.name_any(), error = %e, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AppRegistrationSpec;

    fn app(name: &str, uid: &str) -> AppRegistration {
        let mut app = AppRegistration::new(name, AppRegistrationSpec::default());
        app.metadata.namespace = Some("team".into());
        app.metadata.uid = Some(uid.into());
        app
    }

    #[test]
    fn the_owner_sweep_asks_once_per_period_for_apps_checked_a_period_ago() {
        let every = Duration::from_secs(60);
        let mut memory = Memory::default();
        let (due, fresh, unchecked) = (app("due", "u1"), app("fresh", "u2"), app("unchecked", "u3"));
        memory.of(&due).owner_checked = Instant::now().checked_sub(Duration::from_secs(61));
        memory.of(&fresh).owner_checked = Some(Instant::now());
        memory.of(&unchecked).written = Some(1);
        assert_eq!(memory.owner_checks_due(every), vec![Key::new("team", "due")]);
        assert!(memory.owner_checks_due(every).is_empty(), "asked once per period, not at every sweep");
    }

    #[test]
    fn what_is_remembered_belongs_to_one_incarnation_of_a_name() {
        let mut memory = Memory::default();
        let first = app("billing", "u1");
        memory.of(&first).written = Some(3);
        let second = app("billing", "u2");
        assert!(memory.get(&second).is_none(), "a recreated app starts afresh");
        memory.of(&second).written = Some(1);
        assert!(memory.get(&first).is_none());
        memory.forget(&first);
        assert_eq!(memory.get(&second).and_then(|r| r.written), Some(1), "forgetting the old one keeps the new");
        memory.forget(&second);
        assert!(memory.get(&second).is_none());
    }

    /// The shell against a mock apiserver: the exact requests an app's
    /// reconciles make, in order, and the crash-safe order among them.
    mod shell {
        use std::{collections::BTreeMap, sync::Arc};

        use serde_json::{Value, json};

        use super::*;
        use crate::{
            cluster::Contents,
            credentials::HashParams,
            runtime::mock::{self, ApiServer},
        };

        const UID: &str = "33333333-3333-3333-3333-333333333333";

        fn context(client: Client, caches: Caches) -> Arc<Context> {
            let settings = Settings {
                platform_namespace: "platform".into(),
                seal_key: caches.seal_key().clone(),
                auth_server: None,
                source_recheck: Duration::from_secs(60),
                registered_by_policy: "registrar-registered-by".into(),
                default_owner: Owner { kind: None, name: "platform-admins".into() },
                owner_check: Duration::from_secs(600),
            };
            let hasher = Hasher::new(HashParams::MINTED, 1).expect("a hasher");
            let reporter = Reporter { controller: "registrar".into(), instance: None };
            Arc::new(Context::new(client, settings, hasher, Metrics::new(), reporter, caches))
        }

        fn new_app() -> AppRegistration {
            let spec = crate::api::AppRegistrationSpec { display_name: "Billing".into(), ..Default::default() };
            let mut app = AppRegistration::new("billing", spec);
            app.metadata.namespace = Some("team".into());
            app.metadata.uid = Some(UID.into());
            app.metadata.resource_version = Some("1".into());
            app.metadata.generation = Some(1);
            app
        }

        /// `object` as the apiserver returns it after a write: at `version`,
        /// with a UID.
        fn stored(mut object: Value, version: &str) -> Value {
            object["metadata"]["resourceVersion"] = json!(version);
            if object["metadata"]["uid"].is_null() {
                object["metadata"]["uid"] = json!("44444444-4444-4444-4444-444444444444");
            }
            object
        }

        /// A reconcile of `app` running beside the test, which answers its requests.
        fn spawn_reconcile(
            app: &AppRegistration,
            ctx: &Arc<Context>,
        ) -> tokio::task::JoinHandle<Result<Action, Error>> {
            let (app, ctx) = (app.clone(), ctx.clone());
            tokio::spawn(async move { reconcile(&app, &ctx).await })
        }

        /// Answers every request the reconcile of `app` makes as a healthy
        /// apiserver would; returns them as `METHOD path` in order, and the
        /// bodies by that name.
        async fn serve(
            apiserver: &mut ApiServer,
            app: &AppRegistration,
            ctx: &Arc<Context>,
        ) -> (Vec<String>, BTreeMap<String, Value>, AppRegistration) {
            let reconciling = spawn_reconcile(app, ctx);
            let mut seen = Vec::new();
            let mut bodies = BTreeMap::new();
            let mut current = serde_json::to_value(app).expect("JSON");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !reconciling.is_finished() {
                assert!(Instant::now() < deadline, "the reconcile finished within 30 s (requests so far: {seen:?})");
                let Ok(request) = tokio::time::timeout(Duration::from_millis(500), apiserver.next()).await else {
                    continue;
                };
                let name = format!("{} {}", request.method, request.path);
                seen.push(name.clone());
                bodies.insert(name.clone(), request.body.clone());
                match (request.method.as_str(), request.path.as_str()) {
                    ("PATCH", "/apis/registrar.dev/v1alpha1/namespaces/team/appregistrations/billing") => {
                        current["metadata"]["finalizers"] = json!([FINALIZER]);
                        let answer = stored(current.clone(), "2");
                        request.answer(200, &answer);
                    }
                    ("PATCH", "/apis/registrar.dev/v1alpha1/namespaces/team/appregistrations/billing/status") => {
                        current["status"] = request.body["status"].clone();
                        let answer = stored(current.clone(), "4");
                        request.answer(200, &answer);
                    }
                    ("POST", _) => {
                        let answer = stored(request.body.clone(), "3");
                        request.answer(201, &answer);
                    }
                    ("GET", _) => request.fail(404, "NotFound"),
                    other => panic!("unexpected request {other:?}"),
                }
            }
            reconciling.await.expect("joined").expect("reconciled");
            (seen, bodies, serde_json::from_value(current).expect("an app"))
        }

        /// A new app: the finalizer first, the Client ID claimed in the
        /// ledger before anything names it, the sealed Secret before the
        /// status that points at it, the Event last; nothing else.
        #[tokio::test]
        async fn a_new_app_is_issued_in_the_crash_safe_order_with_nothing_else() {
            let (client, mut apiserver) = mock::pair();
            let app = new_app();
            let ctx = context(client, Caches::holding(Contents { apps: vec![app.clone()], ..Default::default() }));
            let (seen, bodies, _) = serve(&mut apiserver, &app, &ctx).await;
            assert_eq!(
                seen,
                [
                    "PATCH /apis/registrar.dev/v1alpha1/namespaces/team/appregistrations/billing",
                    "POST /apis/registrar.dev/v1alpha1/clientidentries",
                    "POST /api/v1/namespaces/team/secrets",
                    "PATCH /apis/registrar.dev/v1alpha1/namespaces/team/appregistrations/billing/status",
                    "POST /apis/events.k8s.io/v1/namespaces/team/events",
                ]
            );
            let claim = &bodies["POST /apis/registrar.dev/v1alpha1/clientidentries"];
            let secret = &bodies["POST /api/v1/namespaces/team/secrets"];
            let status = &bodies["PATCH /apis/registrar.dev/v1alpha1/namespaces/team/appregistrations/billing/status"];
            let client_id = status["status"]["clientId"].as_str().expect("a Client ID");
            assert_eq!(claim["spec"]["clientId"], client_id, "the Client ID claimed is the one issued");
            assert_eq!(claim["spec"]["holder"]["uid"], UID);
            assert!(secret["metadata"]["annotations"][crate::credentials::seal::SEAL_ANNOTATION].is_string(), "sealed");
            assert_eq!(status["metadata"]["resourceVersion"], "2", "conditional on the app as the finalizer left it");
            assert_eq!(status["status"]["conditions"][0]["reason"], "Issued");
            let event = &bodies["POST /apis/events.k8s.io/v1/namespaces/team/events"];
            assert_eq!(event["reason"], "Issued");
            // The secret itself is in the Secret and nowhere else.
            use base64::Engine;
            let data =
                secret["data"][crate::credentials::layout::DEFAULT_CLIENT_SECRET_KEY].as_str().expect("the secret");
            let plain = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
            let plain = String::from_utf8(plain).expect("text");
            assert!(plain.len() >= 32, "a minted secret");
            for (request, body) in bodies.iter().filter(|(name, _)| !name.ends_with("/secrets")) {
                assert!(!body.to_string().contains(&plain), "the secret leaked into {request}");
            }
        }

        /// After a restart an issued app costs one read (its Secret's data,
        /// which no cache holds) and no write; after that, nothing at all.
        #[tokio::test]
        async fn an_issued_app_costs_one_read_after_a_restart_then_nothing() {
            let (client, mut apiserver) = mock::pair();
            let app = new_app();
            let ctx = context(client, Caches::holding(Contents { apps: vec![app.clone()], ..Default::default() }));
            let (_, bodies, issued) = serve(&mut apiserver, &app, &ctx).await;
            let secret = stored(bodies["POST /api/v1/namespaces/team/secrets"].clone(), "3");
            let claim = stored(bodies["POST /apis/registrar.dev/v1alpha1/clientidentries"].clone(), "3");
            let meta: ObjectMeta = serde_json::from_value(secret["metadata"].clone()).expect("metadata");

            // A new process: the same cluster, nothing remembered.
            let (client, mut apiserver) = mock::pair();
            let caches = Caches::holding(Contents {
                apps: vec![issued.clone()],
                ledger: vec![serde_json::from_value(claim).expect("an entry")],
                secrets: vec![kube::core::PartialObjectMetaExt::into_response_partial::<Secret>(meta)],
                ..Default::default()
            });
            let ctx = context(client, caches);
            let reconciling = spawn_reconcile(&issued, &ctx);
            let read = apiserver.next().await;
            assert_eq!(read.method, http::Method::GET);
            assert!(read.path.starts_with("/api/v1/namespaces/team/secrets/"), "{}", read.path);
            read.answer(200, &secret);
            apiserver.expect_none_within(Duration::from_millis(300)).await;
            reconciling.await.expect("joined").expect("reconciled");

            let again = spawn_reconcile(&issued, &ctx);
            apiserver.expect_none_within(Duration::from_millis(300)).await;
            again.await.expect("joined").expect("reconciled");
        }
    }
}
