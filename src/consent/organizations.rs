//! The OrganizationPolicy controller: puts an organization's policy in force.
//!
//! A switch to Restricted first records every consent of the organization's
//! namespaces granted at that moment (status.grandfathered, each sealed; read
//! from the apiserver, not the cache, so a grant written a moment ago counts) and
//! only then reports Restricted as the policy in force (status.policy), which
//! is what consents obey: no consent granted before the switch is lost in
//! between. A switch back to Unrestricted drops the record. An organization
//! admin removes a grant from status to revoke it; registrar never adds one
//! back. Registrar never writes spec.
//!
//! Every instance obeys every policy (the watches read them all), but only
//! one writes a policy's status: an instance that watches all namespaces and
//! whose `--selector` (if any) matches the policy's labels. The grants
//! recorded are the organization's, whichever instance manages each consent.

use std::sync::Arc;

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PatchParams},
    runtime::{
        Controller,
        controller::{Action, Config as ControllerConfig},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{info, warn};

use super::policy::{PolicyApp, PolicyFacts, grant};
use crate::{
    api::{
        AppConsent, Grant, OrganizationPolicy, PolicyKind,
        conditions::{self, DesiredCondition},
    },
    credentials::seal::SealKey,
    metrics::{ErrorLabels, Metrics},
    registration::{FIELD_MANAGER, plan::to_time, status_patch},
    retry,
    watches::{Caches, Selection},
};

/// Why a policy reconcile failed.
#[derive(Debug, thiserror::Error)]
#[error("{doing} for OrganizationPolicy {object} failed: {source}")]
pub struct Error {
    doing: &'static str,
    object: String,
    #[source]
    source: Box<kube::Error>,
}

struct Context {
    client: Client,
    caches: Caches,
    metrics: Metrics,
    seal_key: SealKey,
    failures: retry::Failures,
}

/// Runs the OrganizationPolicy controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    caches: Caches,
    triggers: mpsc::Receiver<ObjectRef<OrganizationPolicy>>,
    metrics: Metrics,
    seal_key: SealKey,
    selection: Selection,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    if let Some(namespace) = &selection.namespace {
        info!(
            namespace,
            "watching one namespace: OrganizationPolicies are obeyed, and put in force by an instance that watches \
             all namespaces"
        );
        // Nothing to put in force here: requests are drained until the stop
        // (not until the watches end: they are stopped after the controllers).
        tokio::select! {
            () = triggers.for_each(|_| async {}) => {}
            () = shutdown => {}
        }
        return;
    }
    let mut config = watcher::Config::default();
    if let Some(selector) = &selection.selector {
        config = config.labels(selector);
    }
    let api: Api<OrganizationPolicy> = Api::all(client.clone());
    let ctx = Arc::new(Context { client, caches, metrics, seal_key, failures: Default::default() });
    info!("OrganizationPolicy controller started");
    Controller::new(api, config)
        .reconcile_on(triggers)
        .with_config(ControllerConfig::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    info!("OrganizationPolicy controller stopped");
}

async fn reconcile(policy: Arc<OrganizationPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches.synced().await;
    let started = std::time::Instant::now();
    let result = decide_and_write(&policy, &ctx).await;
    ctx.metrics.reconciled("organizationpolicy", started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.succeeded(&policy.name_any());
    }
    result
}

async fn decide_and_write(policy: &Arc<OrganizationPolicy>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let organization = policy.name_any();
    let current = policy.status.clone().unwrap_or_default();
    let wanted = policy.spec.policy.unwrap_or_default();
    let now = Timestamp::now();
    let mut next = current.clone();
    next.auto_approve_internal = Some(policy.spec.auto_approve_internal.unwrap_or(true));
    next.allowlisted = i64::try_from(policy.spec.allowlist.len()).unwrap_or(i64::MAX);
    let mut refused = None;
    match (wanted, current.policy) {
        (PolicyKind::Restricted, Some(PolicyKind::Restricted)) => {}
        (PolicyKind::Restricted, _) => match to_keep(&organization, granted_now(&organization, policy, ctx).await?) {
            Ok(grants) => {
                next.grandfathered = grants;
                next.restricted_since = Some(to_time(now));
                next.policy = Some(PolicyKind::Restricted);
                info!(organization, grandfathered = next.grandfathered.len(), "organization switched to Restricted");
            }
            Err(message) => {
                warn!(organization, "too many consents to keep at the switch to Restricted");
                refused = Some(message);
            }
        },
        (PolicyKind::Unrestricted, _) => {
            next.grandfathered = Vec::new();
            next.restricted_since = None;
            next.policy = Some(PolicyKind::Unrestricted);
        }
    }
    next.grandfathered_count = i64::try_from(next.grandfathered.len()).unwrap_or(i64::MAX);
    next.observed_generation = policy.metadata.generation;
    let namespaces = ctx.caches.index.namespaces_of(&organization).len();
    let message = match next.policy {
        Some(PolicyKind::Restricted) => format!(
            "Restricted for {namespaces} namespace(s) of organization {organization}: internal apps {}, {} allowlisted, \
             {} consent(s) kept from before the switch",
            if next.auto_approve_internal == Some(false) { "need an allowlist entry" } else { "approved" },
            next.allowlisted,
            next.grandfathered_count
        ),
        _ => format!("Unrestricted for {namespaces} namespace(s) of organization {organization}"),
    };
    let ready = match refused {
        Some(message) => DesiredCondition {
            type_: conditions::READY,
            status: false,
            reason: super::policy::TOO_MANY_GRANTS,
            message,
        },
        None => DesiredCondition { type_: conditions::READY, status: true, reason: "InForce", message },
    };
    next.conditions = conditions::settle(&current.conditions, &[ready], policy.metadata.generation, &to_time(now));
    if policy.status.as_ref() != Some(&next) {
        let api: Api<OrganizationPolicy> = Api::all(ctx.client.clone());
        match api
            .patch_status(
                &organization,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &status_patch(policy.as_ref(), &next),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_conflict() => return Ok(Action::await_change()),
            Err(e) => return Err(Error { doing: "writing the status", object: organization, source: Box::new(e) }),
        }
    }
    Ok(Action::await_change())
}

/// The grants to keep at the switch, or why the switch cannot happen: more
/// than [`MAX_GRANTS`] (the organization stays as it is, nothing is lost).
fn to_keep(organization: &str, grants: Vec<Grant>) -> Result<Vec<Grant>, String> {
    if grants.len() <= MAX_GRANTS {
        return Ok(grants);
    }
    let mut apps: Vec<&str> = grants.iter().map(|g| g.app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    Err(format!(
        "not switched to Restricted: {} consents of organization {organization} are granted to apps the policy would \
         not allow, more than the {MAX_GRANTS} it can keep; allowlist the apps they use ({}{}) with the scopes they \
         were granted, and the switch keeps only the rest",
        grants.len(),
        apps.iter().take(10).copied().collect::<Vec<_>>().join(", "),
        if apps.len() > 10 { format!(" and {} more", apps.len() - 10) } else { String::new() },
    ))
}

/// The most grants a policy's status keeps (about 220 bytes each: far below
/// the apiserver's object size limit).
pub const MAX_GRANTS: usize = 2000;

/// Every consent of the organization's namespaces granted right now that the
/// Restricted policy would not allow by itself (an internal app while
/// auto-approval is on, or an allowlist entry with all of its scopes), sealed:
/// listed from the apiserver (one list per namespace of the organization,
/// whichever instance manages its consents), so a consent granted a moment
/// ago, not yet in this process' cache, counts.
async fn granted_now(organization: &str, policy: &OrganizationPolicy, ctx: &Context) -> Result<Vec<Grant>, Error> {
    let facts = PolicyFacts { organization, policy: Some(policy), seal_key: &ctx.seal_key };
    let auto_approve_internal = policy.spec.auto_approve_internal.unwrap_or(true);
    let params = ListParams::default();
    let mut grants = Vec::new();
    for namespace in ctx.caches.index.namespaces_of(organization) {
        let consents =
            Api::<AppConsent>::namespaced(ctx.client.clone(), &namespace).list(&params).await.map_err(|e| Error {
                doing: "listing the consents granted at the switch",
                object: organization.to_owned(),
                source: Box::new(e),
            })?;
        grants.extend(consents.items.into_iter().filter_map(|consent| {
            let status = consent.status.as_ref()?;
            if !conditions::is_true(&status.conditions, conditions::GRANTED) {
                return None;
            }
            let app = &consent.spec.app_ref;
            let client_id = status.client_id.as_deref()?;
            let app_org = ctx.caches.index.organization_of(&app.namespace);
            let subject = PolicyApp { namespace: &app.namespace, name: &app.name, organization: &app_org, client_id };
            let covered = (app_org == organization && auto_approve_internal)
                || facts
                    .allowlisted(&subject)
                    .is_some_and(|entry| status.granted_scopes.iter().all(|s| entry.scopes.contains(s)));
            if covered {
                return None;
            }
            Some(grant(
                &ctx.seal_key,
                organization,
                format!("{namespace}/{}", consent.name_any()),
                format!("{}/{}", app.namespace, app.name),
                status.client_id.clone()?,
                status.granted_scopes.clone(),
            ))
        }));
    }
    grants.sort_by(|a, b| a.consent.cmp(&b.consent));
    Ok(grants)
}

fn error_policy(policy: Arc<OrganizationPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = if error.doing == "writing the status" { "write_status" } else { "list_consents" };
    let labels = ErrorLabels { controller: "organizationpolicy".into(), error: kind.into() };
    ctx.metrics.reconcile_errors.get_or_create(&labels).inc();
    let delay = retry::backoff(ctx.failures.failed(&policy.name_any()));
    warn!(organization = policy.name_any(), error = %error, retry_in = ?delay, "organization policy reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(n: usize, apps: usize) -> Vec<Grant> {
        (0..n)
            .map(|i| Grant {
                consent: format!("ns-{i}/c"),
                app: format!("team/app-{:02}", i % apps),
                client_id: format!("id-{}", i % apps),
                scopes: vec!["read".into()],
                seal: "seal".into(),
            })
            .collect()
    }

    #[test]
    fn up_to_the_limit_every_grant_is_kept() {
        assert_eq!(to_keep("acme", grants(MAX_GRANTS, 3)).map(|g| g.len()), Ok(MAX_GRANTS));
    }

    #[test]
    fn past_the_limit_the_switch_waits_and_names_the_apps_to_allowlist() {
        let message = to_keep("acme", grants(MAX_GRANTS + 1, 12)).expect_err("refused");
        assert!(message.starts_with("not switched to Restricted: 2001 consents of organization acme"), "{message}");
        assert!(message.contains("team/app-00, team/app-01") && message.contains("and 2 more"), "{message}");
        assert!(!message.contains("seal"), "{message}");
    }
}
