//! The I/O shell of the AppRegistration controller: gathers what `plan` needs,
//! carries out its decision (Secret first, then status — the crash-safe order),
//! and publishes Events. An unchanged, healthy app costs no write.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
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
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{
    Settings,
    error::{Error, Step},
    plan::{self, Decision, Inputs, IssuedHash, MintReason, StatusInputs},
};
use crate::{
    api::{
        AppRegistration, AppRegistrationStatus, ConsentSummary, MAX_LISTED_CONSENTS, Scope, WorkloadKind,
        conditions::{self, DesiredCondition, reason},
        validation::validate_spec,
    },
    credentials::{
        ClientSecret, Hasher,
        layout::{Issued, Observed, SecretLayout, VERSION_ANNOTATION},
    },
    metrics::{ErrorLabels, Metrics, ReasonLabels},
    watches::Caches,
};

/// The field manager of every write registrar makes.
pub const FIELD_MANAGER: &str = "registrar";
/// The finalizer that revokes credentials on deletion.
pub const FINALIZER: &str = "registrar.dev/revoke";

/// Shared state of the controller.
pub struct Context {
    client: Client,
    settings: Settings,
    hasher: Hasher,
    metrics: Metrics,
    reporter: Reporter,
    /// Publishes Events that may repeat (warnings), folding repeats into a
    /// series; it keeps each Event it published for six minutes to do so.
    recorder: Recorder,
    caches: Caches,
    memory: Mutex<Memory>,
}

/// What this process remembers between reconciles, keyed by app UID.
#[derive(Default)]
struct Memory {
    /// The secret version this process last wrote to status: a cached app
    /// showing less is a lagging cache, not a reason to act.
    written: HashMap<String, i64>,
    /// Consecutive failures, for exponential backoff.
    failures: HashMap<String, u32>,
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
        Context { client, settings, hasher, metrics, reporter, recorder, caches, memory: Mutex::default() }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding this lock cannot leave it inconsistent in a way
        // that matters: every entry is an optimisation or a retry counter.
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key(app: &AppRegistration) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

fn uid(app: &AppRegistration) -> String {
    app.uid().unwrap_or_default()
}

/// Entry point called by the kube-runtime Controller.
pub async fn reconcile(app: Arc<AppRegistration>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Deciding on a partial view could take a not-yet-listed Secret for a deleted one.
    ctx.caches.synced().await;
    ctx.metrics.cached_secrets.set(i64::try_from(ctx.caches.secrets.len()).unwrap_or(i64::MAX));
    let object_key = key(&app);
    let result = reconcile_with_finalizer(&app, &ctx).await;
    // Counted once finished, so a reader of the metric knows its writes are done.
    ctx.metrics.reconciliations.inc();
    let action = result?;
    ctx.memory().failures.remove(&object_key);
    Ok(action)
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
        let action = revoke(app, ctx).await?;
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
        api.patch(&app.name_any(), &params, &json_patch(patch))
            .await
            .map_err(|e| Error::kube(Step::AddFinalizer, key(app), e))?;
    }
    apply(app, ctx).await
}

fn json_patch(patch: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(patch).expect("a well-formed JSON patch"))
}

/// Retries a failed app with exponential backoff (1s doubling to 5 min), per object.
pub fn error_policy(app: Arc<AppRegistration>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { error: error.metric_label().into() }).inc();
    let failures = {
        let mut memory = ctx.memory();
        let n = memory.failures.entry(key(&app)).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let delay = Duration::from_secs(1u64 << failures.min(9).saturating_sub(1)).min(Duration::from_secs(300));
    warn!(namespace = app.namespace().unwrap_or_default(), name = app.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(app: &AppRegistration, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let status = app.status.clone().unwrap_or_default();
    let status_version = status.secret_version.unwrap_or(0);

    // Our own status write may not have reached the cache yet.
    if ctx.memory().written.get(&uid(app)).is_some_and(|written| status_version < *written) {
        debug!(namespace = ns, name = app.name_any(), "cache lags the last status write; waiting");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let layout = SecretLayout::for_app(app);
    let cached = ctx.caches.secrets.get(&ObjectRef::new(&layout.name).within(&ns));
    let observed = layout.observe(app, cached.as_deref());
    let secret_verifies = verify_observed(&status, &observed);
    let violations = validate_spec(&app.spec);
    let now = Timestamp::now();
    let scope_permitted = app.spec.scope != Scope::Global || ns == ctx.settings.platform_namespace;
    let inputs = Inputs {
        app,
        violations: &violations,
        scope_permitted,
        platform_namespace: &ctx.settings.platform_namespace,
        observed: &observed,
        secret_verifies,
        now,
    };
    let decision = plan::decide(&inputs);

    let desired = match decision {
        Decision::Reject { reason, message } => {
            let condition = DesiredCondition::not_ready(reason, message);
            warn_on_new_condition(app, &condition, ctx).await;
            plan::desired_status(StatusInputs { app, now, condition, issued: None })
        }
        Decision::Conflict => return conflict(app, &layout, now, ctx).await,
        Decision::Mint { reason, client_id, version, rotate_request } => {
            if matches!(reason, MintReason::SecretMissing | MintReason::SecretAltered)
                && cache_lags(&layout, &ns, cached.as_deref(), ctx).await?
            {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            let public = app.spec.public_client == Some(true);
            let issued = Issued {
                client_id,
                secret: (!public).then(ClientSecret::mint),
                version: Some(version),
                rotate_request,
            };
            let hash = hash_issued(app, &issued, ctx).await?;
            let secret = layout.desired(app, &issued);
            let written = match &observed {
                Observed::Owned(owned) => apply_secret(&ns, &secret, owned.resource_version.clone(), ctx).await?,
                _ => match create_secret(&ns, &secret, ctx).await? {
                    Some(created) => Some(created),
                    None => {
                        if foreign_secret_holds_the_name(app, &layout, &ns, ctx).await? {
                            return conflict(app, &layout, now, ctx).await;
                        }
                        None
                    }
                },
            };
            let Some(written) = written else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            if reason != MintReason::Initial {
                restart_workloads(app, version, ctx).await?;
            }
            let condition = plan::issued_condition(&issued.client_id, issued.version, public);
            let desired = plan::desired_status(StatusInputs {
                app,
                now,
                condition,
                issued: Some((&issued, &hash, reason.is_rotation())),
            });
            let action = finish(app, &desired, now, ctx).await?;
            ctx.metrics.mints.get_or_create(&ReasonLabels { reason: reason_label(&reason).into() }).inc();
            announce_mint(app, &reason, &layout, &issued, &written, ctx).await;
            return Ok(action);
        }
        Decision::Adopt(issued) => {
            info!(
                namespace = ns,
                name = app.name_any(),
                client_id = issued.client_id,
                secret_version = issued.version,
                "finishing an interrupted mint from the Secret"
            );
            let hash = hash_issued(app, &issued, ctx).await?;
            if let Some(version) = issued.version.filter(|v| *v > 1) {
                restart_workloads(app, version, ctx).await?;
            }
            let public = app.spec.public_client == Some(true);
            // Finishing the interrupted mint comes first; a spec that turned
            // invalid meanwhile is still reported.
            let condition = match plan::rejection(&inputs) {
                Some((reason, message)) => DesiredCondition::not_ready(reason, message),
                None => plan::issued_condition(&issued.client_id, issued.version, public),
            };
            let is_rotation = status.client_id.is_some();
            let desired =
                plan::desired_status(StatusInputs { app, now, condition, issued: Some((&issued, &hash, is_rotation)) });
            return finish(app, &desired, now, ctx).await;
        }
        Decision::Keep { repair_metadata } => {
            if repair_metadata && let Observed::Owned(owned) = &observed {
                info!(
                    namespace = ns,
                    name = app.name_any(),
                    "repairing the credentials Secret's labels and annotations"
                );
                let secret = layout.desired(app, &owned.issued);
                if apply_secret(&ns, &secret, owned.resource_version.clone(), ctx).await?.is_none() {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
            }
            let public = app.spec.public_client == Some(true);
            let condition =
                plan::issued_condition(status.client_id.as_deref().unwrap_or_default(), status.secret_version, public);
            plan::desired_status(StatusInputs { app, now, condition, issued: None })
        }
    };
    finish(app, &desired, now, ctx).await
}

/// A Secret registrar does not own holds the name: report it, touch nothing.
async fn conflict(
    app: &AppRegistration,
    layout: &SecretLayout,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action, Error> {
    let condition = DesiredCondition::not_ready(
        reason::SECRET_CONFLICT,
        format!(
            "Secret {} already exists and is not managed by this AppRegistration; registrar never overwrites it. \
             Delete or rename that Secret, or set spec.secret.name",
            layout.name
        ),
    );
    warn_on_new_condition(app, &condition, ctx).await;
    let desired = plan::desired_status(StatusInputs { app, now, condition, issued: None });
    write_status(app, &desired, ctx).await?;
    // Foreign Secrets are not watched: look again later.
    Ok(Action::requeue(Duration::from_secs(30)))
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
        .get_opt(&layout.name)
        .await
        .map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{}", layout.name), e))?;
    Ok(matches!(layout.observe(app, live.as_ref()), Observed::Foreign))
}

/// Writes the desired status (when it differs) and says when to look again.
async fn finish(
    app: &AppRegistration,
    desired: &AppRegistrationStatus,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action, Error> {
    write_status(app, desired, ctx).await?;
    Ok(plan::next_wakeup(app, desired, now).map_or_else(Action::await_change, Action::requeue))
}

/// Whether the owned Secret holds the secret `status` was written for: its
/// fingerprint (32 bits of its SHA-256) matches `status.secretFingerprint`, and
/// `status.secretHash` is a well-formed argon2 hash.
///
/// Deliberately not an argon2id verification: that costs ~30 ms of CPU per app,
/// which after a restart is minutes of CPU for 10,000 apps, and it would only
/// catch what the fingerprint already catches (a Secret edited by hand or by a
/// tool) except for someone who can write the Secret and searches 2^32 secrets
/// for a colliding fingerprint: they could break the app's credentials more
/// simply by deleting the Deployment. The registry verifies with argon2id on
/// every authentication.
fn verify_observed(status: &AppRegistrationStatus, observed: &Observed) -> Option<bool> {
    let Observed::Owned(owned) = observed else {
        return None;
    };
    let (Some(hash), Some(version)) = (&status.secret_hash, status.secret_version) else {
        return None;
    };
    if owned.issued.version != Some(version) {
        return None;
    }
    let Some(secret) = &owned.issued.secret else {
        return Some(false);
    };
    // A hash that does not parse was tampered with, and nothing can verify against it: mint anew.
    Some(
        status.secret_fingerprint.as_deref() == Some(secret.fingerprint().as_str())
            && crate::credentials::is_well_formed(hash),
    )
}

async fn hash_issued(app: &AppRegistration, issued: &Issued, ctx: &Context) -> Result<IssuedHash, Error> {
    let Some(secret) = &issued.secret else {
        return Ok(IssuedHash { hash: None, fingerprint: None });
    };
    let started = Instant::now();
    let hash = ctx.hasher.hash(secret).await.map_err(|source| Error::Credentials { object: key(app), source })?;
    ctx.metrics.hash_seconds.observe(started.elapsed().as_secs_f64());
    Ok(IssuedHash { hash: Some(hash), fingerprint: Some(secret.fingerprint()) })
}

/// Before re-minting because the cached Secret looks deleted or altered, asks
/// the apiserver: a cache that has not caught up must not cost a secret.
async fn cache_lags(layout: &SecretLayout, ns: &str, cached: Option<&Secret>, ctx: &Context) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let live = api
        .get_opt(&layout.name)
        .await
        .map_err(|e| Error::kube(Step::ReadSecret, format!("{ns}/{}", layout.name), e))?;
    let rv = |s: Option<&Secret>| s.and_then(|s| s.resource_version());
    Ok(rv(live.as_ref()) != rv(cached))
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
/// observed (`resource_version`). `None` on a conflict (retry later).
async fn apply_secret(
    ns: &str,
    secret: &Secret,
    resource_version: Option<String>,
    ctx: &Context,
) -> Result<Option<Secret>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
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
    match api.patch(&secret.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &patch).await {
        Ok(applied) => Ok(Some(applied)),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => Ok(None),
        Err(e) => Err(Error::kube(Step::WriteSecret, format!("{ns}/{}", secret.name_any()), e)),
    }
}

/// Writes status with server-side apply, unless it is already as desired.
/// Every write carries the consent summary: a field left out of an apply is removed.
async fn write_status(app: &AppRegistration, desired: &AppRegistrationStatus, ctx: &Context) -> Result<(), Error> {
    let desired = &AppRegistrationStatus { consents: consent_summary(app, ctx), ..desired.clone() };
    if app.status.as_ref() == Some(desired) {
        return Ok(());
    }
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<AppRegistration> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = Patch::Apply(json!({
        "apiVersion": AppRegistration::api_version(&()),
        "kind": AppRegistration::kind(&()),
        "status": desired,
    }));
    api.patch_status(&app.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &patch)
        .await
        .map_err(|e| Error::kube(Step::WriteStatus, key(app), e))?;
    if let Some(version) = desired.secret_version {
        ctx.memory().written.insert(uid(app), version);
    }
    Ok(())
}

/// The namespaces holding a consent granted to this app's Client ID, from the
/// consents index (entries are checked against the consent cache).
fn consent_summary(app: &AppRegistration, ctx: &Context) -> Option<ConsentSummary> {
    let client_id = app.status.as_ref()?.client_id.as_deref()?;
    let key = (app.namespace().unwrap_or_default(), app.name_any());
    let namespaces: BTreeSet<String> = ctx
        .caches
        .index
        .consents_of_app(&key)
        .into_iter()
        .filter_map(|(ns, name)| ctx.caches.consents.get(&ObjectRef::new(&name).within(&ns)))
        .filter(|consent| {
            let app_ref = &consent.spec.app_ref;
            let status = consent.status.as_ref();
            app_ref.namespace == key.0
                && app_ref.name == key.1
                && status.and_then(|s| s.client_id.as_deref()) == Some(client_id)
                && status.is_some_and(|s| conditions::is_true(&s.conditions, conditions::GRANTED))
        })
        .filter_map(|consent| consent.namespace())
        .collect();
    if namespaces.is_empty() {
        return None;
    }
    Some(ConsentSummary {
        count: i64::try_from(namespaces.len()).unwrap_or(i64::MAX),
        namespaces: namespaces.into_iter().take(MAX_LISTED_CONSENTS).collect(),
    })
}

/// Rolls the app's `restartOnRotate` workloads by setting a pod-template
/// annotation to the new secret version (idempotent). A missing workload is
/// reported and skipped.
async fn restart_workloads(app: &AppRegistration, version: i64, ctx: &Context) -> Result<(), Error> {
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let patch = Patch::Merge(json!({
        "spec": { "template": { "metadata": { "annotations": { VERSION_ANNOTATION: version.to_string() } } } }
    }));
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
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
        match result {
            Ok(()) => {
                info!(namespace = ns, name = app.name_any(), workload = workload.name, kind = ?workload.kind, secret_version = version, "restarted workload")
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                publish(
                    app,
                    EventType::Warning,
                    "RestartTargetMissing",
                    format!("{:?} {} named in restartOnRotate does not exist", workload.kind, workload.name),
                    ctx,
                )
                .await;
            }
            Err(e) => return Err(Error::kube(Step::RestartWorkload, key(app), e)),
        }
    }
    Ok(())
}

/// Deletion: mark the app revoked, delete its Secret (already gone is fine),
/// forget it. The finalizer is removed by the caller once this succeeds.
async fn revoke(app: &AppRegistration, ctx: &Context) -> Result<Action, Error> {
    let ns = app.namespace().ok_or(Error::NoNamespace)?;
    let now = Timestamp::now();
    let condition = DesiredCondition::not_ready(
        reason::REVOKED,
        "the AppRegistration is being deleted; its credentials are revoked",
    );
    let desired = plan::desired_status(StatusInputs { app, now, condition, issued: None });
    match write_status(app, &desired, ctx).await {
        Ok(()) => {}
        // The object may already be on its way out; revocation must not hang on status.
        Err(Error::Kube { source, .. }) if matches!(source.as_ref(), kube::Error::Api(s) if s.is_not_found() || s.is_conflict()) =>
            {}
        Err(e) => return Err(e),
    }
    let layout = SecretLayout::for_app(app);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(secret) = api.get_opt(&layout.name).await.map_err(|e| Error::kube(Step::ReadSecret, key(app), e))?
        && matches!(layout.observe(app, Some(&secret)), Observed::Owned(_))
    {
        match api.delete(&layout.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(Error::kube(Step::DeleteSecret, key(app), e)),
        }
    }
    {
        let mut memory = ctx.memory();
        memory.written.remove(&uid(app));
    }
    let client_id = app.status.as_ref().and_then(|s| s.client_id.clone()).unwrap_or_default();
    info!(namespace = ns, name = app.name_any(), client_id, "revoked");
    let note = format!("Client ID {client_id} is revoked and its Secret deleted");
    publish_related(app, Repeats::Never, EventType::Normal, "Revoked", note, None, ctx).await;
    Ok(Action::await_change())
}

fn reason_label(reason: &MintReason) -> &'static str {
    match reason {
        MintReason::Initial => "Initial",
        MintReason::SecretMissing => "SecretMissing",
        MintReason::SecretAltered => "SecretAltered",
        MintReason::RotateRequested(_) => "RotateRequested",
        MintReason::Scheduled => "Scheduled",
    }
}

async fn announce_mint(
    app: &AppRegistration,
    reason: &MintReason,
    layout: &SecretLayout,
    issued: &Issued,
    written: &Secret,
    ctx: &Context,
) {
    let version = issued.version.unwrap_or_default();
    let ns = app.namespace().unwrap_or_default();
    info!(
        namespace = ns,
        name = app.name_any(),
        client_id = issued.client_id,
        secret_version = version,
        reason = reason_label(reason),
        "minted credentials"
    );
    let (type_, event_reason, note) = match reason {
        MintReason::Initial => (
            EventType::Normal,
            "Issued",
            format!("Issued Client ID {} into Secret {} (secret version {version})", issued.client_id, layout.name),
        ),
        MintReason::RotateRequested(value) => (
            EventType::Normal,
            "Rotated",
            format!("Rotated the client secret to version {version} as requested by registrar.dev/rotate={value}"),
        ),
        MintReason::Scheduled => (
            EventType::Normal,
            "Rotated",
            format!("Rotated the client secret to version {version} on schedule (rotation.interval)"),
        ),
        MintReason::SecretMissing => (
            EventType::Warning,
            "SecretRecreated",
            format!(
                "Secret {} was deleted; a secret cannot be recovered, so a new one was minted (version {version})",
                layout.name
            ),
        ),
        MintReason::SecretAltered => (
            EventType::Warning,
            "SecretReminted",
            format!(
                "The client secret in Secret {} no longer matched the registration; a new one was minted (version {version})",
                layout.name
            ),
        ),
    };
    // The Secret, at the version just written, as the related object: it tells
    // which Secret (and which version of it) to look at.
    let mut related = written.object_ref(&());
    related.resource_version = written.resource_version();
    publish_related(app, Repeats::Never, type_, event_reason, note, Some(related), ctx).await;
}

/// Publishes a Warning Event when the Ready condition moves to a new reason or
/// message, so a persisting problem is reported once, not on every pass.
async fn warn_on_new_condition(app: &AppRegistration, condition: &DesiredCondition, ctx: &Context) {
    let current = app.status.as_ref().and_then(|s| conditions::find(&s.conditions, condition.type_).cloned());
    let unchanged = current.is_some_and(|c| c.reason == condition.reason && c.message == condition.message);
    if !unchanged {
        publish(app, EventType::Warning, condition.reason, condition.message.clone(), ctx).await;
    }
}

/// Whether an Event can recur.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeats {
    /// A warning that may come back: repeats fold into one Event's series.
    Maybe,
    /// A mint or a revocation, each naming what it did: it skips the shared
    /// recorder, which keeps every Event it publishes for six minutes (to build
    /// series) and scans them all on each publish. 10,000 new apps would
    /// otherwise hold 10,000 Events in memory.
    Never,
}

async fn publish(app: &AppRegistration, type_: EventType, reason: &str, note: String, ctx: &Context) {
    publish_related(app, Repeats::Maybe, type_, reason, note, None, ctx).await;
}

async fn publish_related(
    app: &AppRegistration,
    repeats: Repeats,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ctx: &Context,
) {
    let event =
        Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: related };
    let regarding = app.object_ref(&());
    let published = match repeats {
        Repeats::Maybe => ctx.recorder.publish(&event, &regarding).await,
        Repeats::Never => Recorder::new(ctx.client.clone(), ctx.reporter.clone()).publish(&event, &regarding).await,
    };
    if let Err(e) = published {
        warn!(namespace = app.namespace().unwrap_or_default(), name = app.name_any(), error = %e, "could not publish an Event");
    }
}
