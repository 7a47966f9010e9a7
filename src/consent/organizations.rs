//! The OrganizationPolicy controller: puts an organization's policy in force.
//!
//! A switch to Restricted keeps every consent of the organization's namespaces
//! granted at that moment. Each consent carries registrar's sealed record of
//! its grant (`status.grant`, written by the consent controller with the
//! grant), so the switch writes nothing per consent: it reports Restricted as
//! the policy in force (status.policy, status.restrictedAt), which is what
//! consents obey, and counts the consents kept (read from the cache, or from
//! the apiserver when other instances manage some). Between the request
//! (spec) and that moment nothing new is granted. A consent granted without a
//! break since before that moment keeps its scopes until the organization
//! lists its app in spec.revoked. Registrar never writes spec.
//!
//! Every instance obeys every policy (the watches read them all), but only
//! one writes a policy's status: an instance that watches all namespaces and
//! whose `--selector` (if any) matches the policy's labels. The consents
//! counted are the organization's, whichever instance manages each one.

use std::{collections::BTreeMap, sync::Arc};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{controller::Action, reflector::ObjectRef, watcher},
};
use tracing::{info, warn};

use super::policy::{ConsentSeen, PolicyApp, PolicyFacts, to_micro_time};
use crate::{
    api::{
        AppConsent, GrandfatheredApp, OrganizationPolicy, OrganizationPolicyStatus, PolicyKind,
        conditions::{self, DesiredCondition},
    },
    cluster::{Caches, Selection},
    runtime::controller::{self, Harness, Reconciler, Source},
    runtime::kube::{status_patch, to_time},
    runtime::{Key, key_of},
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
    /// The read model; its seal key checks the grants' records.
    caches: Caches,
    /// This instance manages every consent of the cluster (no `--selector`):
    /// its cache holds them all, and the survey reads it instead of the
    /// apiserver.
    sees_all: bool,
}

impl Reconciler for Context {
    type Object = OrganizationPolicy;
    type Read = OrganizationPolicy;
    type Error = Error;
    const KIND: &'static str = "OrganizationPolicy";
    const CONTROLLER: &'static str = "organizationpolicy";

    async fn synced(&self) {
        self.caches.synced().await;
    }

    fn everything(&self) -> Vec<Key> {
        self.caches.policies().iter().map(|p| key_of(p.as_ref())).collect()
    }

    fn read(policy: Arc<OrganizationPolicy>) -> Arc<OrganizationPolicy> {
        policy
    }

    async fn reconcile(&self, policy: Arc<OrganizationPolicy>) -> Result<Action, Error> {
        decide_and_write(&policy, self).await
    }

    fn category(error: &Error) -> &'static str {
        if error.doing == WRITING_THE_STATUS { "write_status" } else { "list_consents" }
    }
}

const WRITING_THE_STATUS: &str = "writing the status";

/// Runs the OrganizationPolicy controller until `shutdown` resolves: a
/// failure is retried, and logged (no Event: a policy is cluster-scoped, and
/// its organization's administrators read its status).
pub async fn run(
    harness: Harness,
    caches: Caches,
    triggers: mpsc::Receiver<ObjectRef<OrganizationPolicy>>,
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
    // Its own watch (with the selector) reconciles every policy it lists; a
    // pass after another watch re-lists, and every resync period, asks again.
    let api: Api<OrganizationPolicy> = Api::all(harness.client.clone());
    let ctx = Context { client: harness.client.clone(), caches, sees_all: selection.selector.is_none() };
    let harness = Harness { failure_events: false, ..harness };
    controller::run(Arc::new(ctx), harness, Source::Watch(Box::new((api, config))), triggers, shutdown).await;
}

async fn decide_and_write(policy: &OrganizationPolicy, ctx: &Context) -> Result<Action, Error> {
    let organization = policy.name_any();
    // Observe: a switch to Restricted surveys the consents it keeps.
    let survey = match policy.switching_to_restricted() {
        true => {
            let surveying = std::time::Instant::now();
            let survey = survey(&organization, policy, ctx).await?;
            info!(
                organization,
                kept = survey.kept,
                unrecorded = survey.unrecorded,
                took = ?surveying.elapsed(),
                "organization switched to Restricted"
            );
            if survey.unrecorded > 0 {
                warn!(
                    organization,
                    consents = survey.unrecorded,
                    "not kept at the switch to Restricted: consents whose status shows a grant registrar has no \
                     record of"
                );
            }
            Some(survey)
        }
        false => None,
    };
    // Plan.
    let namespaces = ctx.caches.namespaces_of(&organization).len();
    let next = planned_status(policy, survey.as_ref(), namespaces, Timestamp::now());
    // Carry out.
    if policy.status.as_ref() != Some(&next) {
        let api: Api<OrganizationPolicy> = Api::all(ctx.client.clone());
        let (params, patch) = status_patch(policy, policy.status.as_ref(), &next);
        match api.patch_status(&organization, &params, &patch).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_conflict() => return Ok(Action::await_change()),
            Err(e) => return Err(Error { doing: WRITING_THE_STATUS, object: organization, source: Box::new(e) }),
        }
    }
    Ok(Action::await_change())
}

/// The policy's status after this pass: the policy in force, and what a switch
/// to Restricted kept (`survey`, taken at the switch) — every word of its
/// Ready condition decided here.
fn planned_status(
    policy: &OrganizationPolicy,
    survey: Option<&Survey>,
    namespaces: usize,
    now: Timestamp,
) -> OrganizationPolicyStatus {
    let organization = policy.name_any();
    let current = policy.status.clone().unwrap_or_default();
    let mut next = current.clone();
    next.auto_approve_internal = Some(policy.spec.auto_approve_internal.unwrap_or(true));
    next.allowlisted = i64::try_from(policy.spec.allowlist.len()).unwrap_or(i64::MAX);
    let mut unrecorded = 0;
    match (policy.spec.policy.unwrap_or_default(), current.policy, survey) {
        (PolicyKind::Restricted, Some(PolicyKind::Restricted), _) => {
            if next.restricted_at.is_none() {
                // Put in force by a registrar from before consents carried
                // their record: the grants it kept are counted here.
                next.grandfathered_count = count(next.grandfathered.len());
            }
        }
        (PolicyKind::Restricted, _, survey) => {
            let survey = survey.cloned().unwrap_or_default();
            unrecorded = survey.unrecorded;
            next.policy = Some(PolicyKind::Restricted);
            next.restricted_since = Some(to_time(now));
            next.restricted_at = Some(to_micro_time(now));
            next.grandfathered = Vec::new();
            next.grandfathered_count = count(survey.kept);
            next.grandfathered_apps = survey.apps();
        }
        (PolicyKind::Unrestricted, ..) => {
            next.policy = Some(PolicyKind::Unrestricted);
            next.restricted_since = None;
            next.restricted_at = None;
            next.grandfathered = Vec::new();
            next.grandfathered_count = 0;
            next.grandfathered_apps = Vec::new();
        }
    }
    next.observed_generation = policy.metadata.generation;
    let message = match next.policy {
        Some(PolicyKind::Restricted) => format!(
            "Restricted for {namespaces} namespace(s) of organization {organization}: internal apps {}, {} \
             allowlisted, {} consent(s) kept from before the switch{}",
            if next.auto_approve_internal == Some(false) { "need an allowlist entry" } else { "approved" },
            next.allowlisted,
            next.grandfathered_count,
            match unrecorded {
                0 => String::new(),
                n => format!(" ({n} consent(s) whose status showed a grant registrar has no record of were not kept)"),
            }
        ),
        _ => format!("Unrestricted for {namespaces} namespace(s) of organization {organization}"),
    };
    let ready = DesiredCondition { type_: conditions::READY, status: true, reason: "InForce", message };
    next.conditions = conditions::settle(&current.conditions, &[ready], policy.metadata.generation, &to_time(now));
    next
}

/// The most apps listed in status.grandfatheredApps.
const LISTED_APPS: usize = 100;

/// The consents of the organization's namespaces granted right now that the
/// Restricted policy would not allow by itself (an internal app while
/// auto-approval is on, or an allowlist entry with all of its scopes).
#[derive(Clone, Debug, Default)]
struct Survey {
    /// With registrar's record of their grant: kept by the switch.
    kept: usize,
    /// Showing a grant registrar has no record of (yet).
    unrecorded: usize,
    /// Kept consents by app and Client ID.
    by_app: BTreeMap<(String, String), usize>,
}

impl Survey {
    /// The apps of the kept consents, most consents first, at most [`LISTED_APPS`].
    fn apps(&self) -> Vec<GrandfatheredApp> {
        let mut apps: Vec<_> = self.by_app.iter().collect();
        apps.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        apps.into_iter()
            .take(LISTED_APPS)
            .map(|((app, client_id), consents)| GrandfatheredApp {
                app: app.clone(),
                client_id: client_id.clone(),
                consents: count(*consents),
            })
            .collect()
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Surveys the consents of the organization's namespaces: from this
/// instance's cache when it manages them all, else listed from the apiserver
/// in pages (whichever instance manages them). Either may miss a consent
/// granted a moment ago (its status write still on its way): it is kept all
/// the same (its record is older than the switch), only not counted.
async fn survey(organization: &str, policy: &OrganizationPolicy, ctx: &Context) -> Result<Survey, Error> {
    let facts = PolicyFacts { organization, policy: Some(policy), seal_key: ctx.caches.seal_key() };
    let mut survey = Survey::default();
    if ctx.sees_all {
        for namespace in ctx.caches.namespaces_of(organization) {
            for consent in ctx.caches.consents_in(&namespace) {
                survey.add(&facts, &ctx.caches, &consent);
            }
        }
        return Ok(survey);
    }
    for namespace in ctx.caches.namespaces_of(organization) {
        let api = Api::<AppConsent>::namespaced(ctx.client.clone(), &namespace);
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = api.list(&params).await.map_err(|e| Error {
                doing: "listing the consents granted at the switch",
                object: organization.to_owned(),
                source: Box::new(e),
            })?;
            for consent in &page.items {
                survey.add(&facts, &ctx.caches, consent);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(survey)
}

/// Consents read per page by the survey.
const PAGE: u32 = 500;

impl Survey {
    fn add(&mut self, facts: &PolicyFacts<'_>, caches: &Caches, consent: &AppConsent) {
        let Some(status) = consent.status.as_ref() else { return };
        if !conditions::is_true(&status.conditions, conditions::GRANTED) {
            return;
        }
        let Some(client_id) = status.client_id.as_deref() else { return };
        let app = &consent.spec.app_ref;
        let app_org = caches.organization_of(&app.namespace);
        let subject = PolicyApp { namespace: &app.namespace, name: &app.name, organization: &app_org, client_id };
        let covered = facts.covers_internally(&subject)
            || facts
                .allowlisted(&subject)
                .is_some_and(|entry| status.granted_scopes.iter().all(|s| entry.scopes.contains(s)));
        if covered {
            return;
        }
        let key = key_of(consent).to_string();
        let seen = ConsentSeen {
            key: &key,
            uid: consent.metadata.uid.as_deref().unwrap_or_default(),
            grant: status.grant.as_ref(),
        };
        if facts.recorded(&seen, &subject).is_some() {
            self.kept += 1;
            *self.by_app.entry((format!("{}/{}", app.namespace, app.name), client_id.to_owned())).or_default() += 1;
        } else {
            self.unrecorded += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::api::ObjectMeta;

    use super::*;
    use crate::{
        api::{AppConsentSpec, AppConsentStatus, AppRef, OrganizationPolicySpec, OrganizationPolicyStatus},
        cluster::Contents,
        credentials::seal::SealKey,
        runtime::mock,
    };

    /// A consent in `namespace` shown Granted to the vendor's app, with
    /// registrar's sealed record of the grant when `recorded`.
    fn granted(namespace: &str, name: &str, recorded: bool) -> AppConsent {
        let uid = format!("uid-{name}");
        let grant = recorded.then(|| {
            let unrestricted = PolicyFacts { organization: "acme", policy: None, seal_key: &SEAL };
            let key = format!("{namespace}/{name}");
            let seen = ConsentSeen { key: &key, uid: &uid, grant: None };
            let app = PolicyApp { namespace: "vendor", name: "tool", organization: "other", client_id: "id-tool" };
            unrestricted.record(&seen, &app, Some(&["read".to_owned()]), Timestamp::now()).expect("a record")
        });
        let status = AppConsentStatus {
            client_id: Some("id-tool".into()),
            granted_scopes: vec!["read".into()],
            grant,
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: conditions::GRANTED.into(),
                status: "True".into(),
                reason: "Granted".into(),
                message: String::new(),
                last_transition_time: to_time(Timestamp::now()),
                observed_generation: None,
            }],
            ..Default::default()
        };
        AppConsent {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                uid: Some(uid),
                ..Default::default()
            },
            spec: AppConsentSpec {
                app_ref: AppRef { namespace: "vendor".into(), name: "tool".into() },
                oauth_scopes: None,
            },
            status: Some(status),
        }
    }

    static SEAL: std::sync::LazyLock<SealKey> =
        std::sync::LazyLock::new(|| SealKey::from_bytes(&[7; 32]).expect("a key"));

    fn restricted() -> OrganizationPolicy {
        let spec = OrganizationPolicySpec { policy: Some(PolicyKind::Restricted), ..Default::default() };
        let mut policy = OrganizationPolicy::new("acme", spec);
        policy.metadata.resource_version = Some("9".into());
        policy.metadata.generation = Some(2);
        policy
    }

    /// Acme's two namespaces: one consent with registrar's record (kept), one
    /// showing a grant without it (not kept).
    fn context(client: Client, sees_all: bool) -> Arc<Context> {
        let caches = Caches::holding(Contents {
            consents: vec![granted("acme-a", "uses-tool", true), granted("acme-b", "claims-tool", false)],
            policies: vec![restricted()],
            namespaces: vec![("acme-a", Some("acme")), ("acme-b", Some("acme")), ("vendor", Some("other"))],
            seal_key: SEAL.clone(),
            ..Default::default()
        });
        Arc::new(Context { client, caches, sees_all })
    }

    /// The plan alone: a switch counts what its survey kept and says what it
    /// did not keep; a policy already in force keeps its count and its words;
    /// Unrestricted forgets the switch.
    #[test]
    fn the_status_planned_for_a_switch_a_policy_in_force_and_unrestricted() {
        let now = Timestamp::now();
        let ready = |status: &OrganizationPolicyStatus| {
            conditions::find(&status.conditions, conditions::READY).expect("Ready").message.clone()
        };
        let mut survey = Survey { kept: 3, unrecorded: 1, ..Default::default() };
        survey.by_app.insert(("vendor/tool".into(), "id-tool".into()), 3);
        let switched = planned_status(&restricted(), Some(&survey), 2, now);
        assert_eq!(switched.policy, Some(PolicyKind::Restricted));
        assert_eq!((switched.grandfathered_count, switched.grandfathered_apps.len()), (3, 1));
        assert!(switched.restricted_at.is_some() && switched.observed_generation == Some(2));
        assert_eq!(
            ready(&switched),
            "Restricted for 2 namespace(s) of organization acme: internal apps approved, 0 allowlisted, 3 consent(s) \
             kept from before the switch (1 consent(s) whose status showed a grant registrar has no record of were \
             not kept)"
        );

        let mut in_force = restricted();
        in_force.status = Some(switched.clone());
        let again = planned_status(&in_force, None, 2, now);
        assert_eq!((again.grandfathered_count, again.restricted_at.clone()), (3, switched.restricted_at.clone()));
        assert!(ready(&again).ends_with("3 consent(s) kept from before the switch"), "{}", ready(&again));

        in_force.spec.policy = Some(PolicyKind::Unrestricted);
        let lifted = planned_status(&in_force, None, 2, now);
        assert_eq!((lifted.policy, lifted.grandfathered_count), (Some(PolicyKind::Unrestricted), 0));
        assert!(lifted.restricted_at.is_none() && lifted.grandfathered_apps.is_empty());
        assert_eq!(ready(&lifted), "Unrestricted for 2 namespace(s) of organization acme");
    }

    fn decide(policy: &OrganizationPolicy, ctx: &Arc<Context>) -> tokio::task::JoinHandle<Result<Action, Error>> {
        let (policy, ctx) = (policy.clone(), ctx.clone());
        tokio::spawn(async move { decide_and_write(&policy, &ctx).await })
    }

    /// The status write of a switch: what it kept, conditional on the version read.
    fn assert_switched(write: &mock::Received) -> OrganizationPolicyStatus {
        assert_eq!(write.method, http::Method::PATCH);
        assert_eq!(write.path, "/apis/registrar.dev/v1alpha1/organizationpolicies/acme/status");
        assert_eq!(write.body["metadata"]["resourceVersion"], "9");
        let status: OrganizationPolicyStatus = serde_json::from_value(write.body["status"].clone()).expect("a status");
        assert_eq!(status.policy, Some(PolicyKind::Restricted));
        assert_eq!(status.grandfathered_count, 1, "the recorded consent is kept");
        let apps: Vec<_> = status.grandfathered_apps.iter().map(|a| (a.app.as_str(), a.consents)).collect();
        assert_eq!(apps, [("vendor/tool", 1)]);
        let message = &status.conditions[0].message;
        assert!(message.contains("1 consent(s) kept") && message.contains("(1 consent(s) whose status"), "{message}");
        status
    }

    /// Managing every consent, the switch reads them from the cache: one
    /// request, the status; done again, none.
    #[tokio::test]
    async fn a_switch_surveys_the_cache_and_writes_one_status() {
        let (client, mut apiserver) = mock::pair();
        let ctx = context(client, true);
        let deciding = decide(&restricted(), &ctx);
        let write = apiserver.next().await;
        let status = assert_switched(&write);
        let mut written = restricted();
        written.status = Some(status.clone());
        write.answer(200, &serde_json::to_value(&written).expect("JSON"));
        assert_eq!(deciding.await.expect("joined").expect("decided"), Action::await_change());
        apiserver.expect_none_within(Duration::from_millis(200)).await;

        // The next pass keeps what the switch kept; it drops the note on the
        // consents not kept from the message (once), then writes nothing.
        let again = decide(&written, &ctx);
        let write = apiserver.next().await;
        let status: OrganizationPolicyStatus = serde_json::from_value(write.body["status"].clone()).expect("a status");
        assert_eq!((status.grandfathered_count, status.restricted_at.is_some()), (1, true));
        written.status = Some(status);
        write.answer(200, &serde_json::to_value(&written).expect("JSON"));
        assert_eq!(again.await.expect("joined").expect("decided"), Action::await_change());
        let quiet = decide(&written, &ctx);
        apiserver.expect_none_within(Duration::from_millis(200)).await;
        assert_eq!(quiet.await.expect("joined").expect("decided"), Action::await_change());
    }

    /// Managing some consents (a selector), the switch lists each namespace's
    /// consents from the apiserver, page by page, then writes the status.
    #[tokio::test]
    async fn with_a_selector_the_switch_lists_each_namespace_in_pages() {
        let (client, mut apiserver) = mock::pair();
        let ctx = context(client, false);
        let deciding = decide(&restricted(), &ctx);
        let list = |items: Vec<AppConsent>, next: &str| {
            serde_json::json!({
                "apiVersion": "registrar.dev/v1alpha1", "kind": "AppConsentList",
                "metadata": { "continue": next }, "items": items,
            })
        };
        let mut listed = Vec::new();
        loop {
            let request = apiserver.next().await;
            if request.method == http::Method::PATCH {
                let mut written = restricted();
                written.status = Some(assert_switched(&request));
                request.answer(200, &serde_json::to_value(&written).expect("JSON"));
                break;
            }
            assert_eq!(request.method, http::Method::GET);
            assert!(request.query.contains("limit=500"), "{}", request.query);
            listed.push(format!("{}?{}", request.path, request.query.contains("continue=page-2")));
            match (request.path.as_str(), request.query.contains("continue=page-2")) {
                ("/apis/registrar.dev/v1alpha1/namespaces/acme-a/appconsents", false) => {
                    request.answer(200, &list(vec![], "page-2"));
                }
                ("/apis/registrar.dev/v1alpha1/namespaces/acme-a/appconsents", true) => {
                    request.answer(200, &list(vec![granted("acme-a", "uses-tool", true)], ""));
                }
                ("/apis/registrar.dev/v1alpha1/namespaces/acme-b/appconsents", false) => {
                    request.answer(200, &list(vec![granted("acme-b", "claims-tool", false)], ""));
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        listed.sort();
        assert_eq!(
            listed,
            [
                "/apis/registrar.dev/v1alpha1/namespaces/acme-a/appconsents?false",
                "/apis/registrar.dev/v1alpha1/namespaces/acme-a/appconsents?true",
                "/apis/registrar.dev/v1alpha1/namespaces/acme-b/appconsents?false",
            ]
        );
        assert_eq!(deciding.await.expect("joined").expect("decided"), Action::await_change());
    }

    /// A list refused is an error the harness retries, named by its category.
    #[tokio::test]
    async fn a_refused_list_is_a_list_consents_error() {
        let (client, mut apiserver) = mock::pair();
        let ctx = context(client, false);
        let deciding = decide(&restricted(), &ctx);
        apiserver.next().await.fail(403, "Forbidden");
        let error = deciding.await.expect("joined").expect_err("a failure");
        assert_eq!(<Context as Reconciler>::category(&error), "list_consents");
    }

    #[test]
    fn the_kept_apps_are_listed_most_consents_first_and_at_most_a_hundred() {
        let mut survey = Survey::default();
        for i in 0..150usize {
            survey.by_app.insert((format!("team/app-{i:03}"), format!("id-{i}")), i % 7 + 1);
        }
        let apps = survey.apps();
        assert_eq!(apps.len(), LISTED_APPS);
        assert!(apps.windows(2).all(|w| w[0].consents >= w[1].consents), "{apps:?}");
        assert_eq!((apps[0].app.as_str(), apps[0].consents), ("team/app-006", 7));
    }
}
