//! At scale, run alone (ignored by the parallel e2e run; scripts/test.sh runs
//! them in a phase of their own, one at a time, on a control plane of their
//! own, so an operator may manage the whole cluster): one tenant's 10,000
//! consents do not block its organization's switch to Restricted.

use std::{collections::BTreeMap, time::Instant};

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{
    Api, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::api::{
    AppConsent, AppConsentSpec, AppRef, AppRegistration, ConsentGrant, OrganizationPolicy, OrganizationPolicySpec,
    PolicyKind, Scope,
};
use serde_json::json;

use crate::support::{
    TestNamespace, allowed_in,
    apps::{confidential, status},
    control_plane, eventually, gitops_apply, install_registrar,
    registry::registry_operator,
};

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);
const RUN_LABEL: &str = "e2e.registrar.dev/run";
const PLATFORM: &str = "registrar-system";
const TENANT: &str = "mallory-scale";

/// The Granted reason of a consent, if it has one for its current generation.
fn reason(consent: &AppConsent) -> Option<&str> {
    let status = consent.status.as_ref()?;
    (status.observed_generation == consent.metadata.generation).then_some(())?;
    status.conditions.iter().find(|c| c.type_ == "Granted").map(|c| c.reason.as_str())
}

/// Every consent of `api`, read in pages.
async fn all(api: &Api<AppConsent>) -> Vec<AppConsent> {
    let mut params = ListParams::default().limit(500);
    let mut out = Vec::new();
    loop {
        let Ok(page) = api.list(&params).await else { return out };
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return out,
        }
    }
}

/// A tenant (`mallory-scale`, who may create AppConsents in its namespace and
/// write their status) has 10,000 consents to a Global app of another
/// organization granted; its organization switches to Restricted. The switch
/// comes in force, keeps all 10,000 granted and counts them, writes nothing
/// per consent; a consent created after it is refused, and neither a kept
/// consent's record copied onto it nor a forged one changes that.
#[tokio::test]
#[ignore = "at scale: run alone (scripts/test.sh runs it in a phase of its own)"]
async fn ten_thousand_consents_of_one_tenant_do_not_block_the_switch_to_restricted() {
    // REGISTRAR_SCALE_CONSENTS measures another size (docs/benchmarks.md).
    let wanted = std::env::var("REGISTRAR_SCALE_CONSENTS").ok().and_then(|v| v.parse().ok());
    let total: usize = wanted.unwrap_or(10_000);
    let run = format!("{:08x}", rand::random::<u32>());
    let org = format!("scale-{run}");
    let a = TestNamespace::labelled("scale-a", &[("registrar.dev/organization", org.as_str())]).await;
    install_registrar(&a.client).await;
    let admin = control_plane().client().await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": PLATFORM } })).expect("ns"),
        )
        .await;
    let labels = BTreeMap::from([(RUN_LABEL.to_string(), run.clone())]);
    // As shipped: one instance for the whole cluster (this test has its
    // control plane to itself). REGISTRAR_SCALE_SELECTOR=1 measures an
    // instance with a --selector (docs/benchmarks.md).
    let selector = format!("{RUN_LABEL}={run}");
    let selected = std::env::var("REGISTRAR_SCALE_SELECTOR").is_ok_and(|v| v == "1");
    let args = ["--selector", selector.as_str()];
    let (operator, _) = registry_operator(if selected { &args[..] } else { &[] }).await;
    let global = format!("global-{run}");
    let mut app = confidential(&global);
    app.metadata.labels = Some(labels.clone());
    app.spec.scope = Scope::Global;
    app.spec.oauth_scopes = vec!["read".into()];
    let platform: Api<AppRegistration> = Api::namespaced(admin.clone(), PLATFORM);
    gitops_apply(&platform, &app).await.expect("the Global app");
    let client_id = eventually("the Global app to be issued", TIMEOUT, || async {
        status(&platform.get(&global).await.ok()?).client_id
    })
    .await;

    // The tenant: consents and their status in its namespace, nothing else.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "consents" },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["appconsents", "appconsents/status"], "verbs": ["*"] }]
    }))
    .expect("role");
    a.api::<Role>().create(&PostParams::default(), &role).await.expect("Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "tenant-consents" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "consents" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT }]
    }))
    .expect("binding");
    a.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("RoleBinding");
    eventually("the tenant's role to take effect", TIMEOUT, || async {
        allowed_in(&a.client, Some(&a.name), TENANT, "registrar.dev", "appconsents/status", "patch").await.then_some(())
    })
    .await;
    let tenant: Api<AppConsent> = Api::namespaced(control_plane().client_as(TENANT).await, &a.name);
    let consent = |name: String| AppConsent {
        metadata: ObjectMeta { name: Some(name), labels: Some(labels.clone()), ..Default::default() },
        spec: AppConsentSpec {
            app_ref: AppRef { namespace: PLATFORM.into(), name: global.clone() },
            oauth_scopes: None,
        },
        status: None,
    };

    let started = Instant::now();
    futures::stream::iter(0..total)
        .for_each_concurrent(16, |i| {
            let (tenant, consent) = (tenant.clone(), consent(format!("c-{i:05}")));
            async move {
                tenant.create(&PostParams::default(), &consent).await.expect("the tenant creates a consent");
            }
        })
        .await;
    eprintln!("{total} consents created in {:?}", started.elapsed());
    eventually("every consent to be granted, with its record", TIMEOUT, || async {
        let consents = all(&tenant).await;
        let granted = consents
            .iter()
            .filter(|c| reason(c) == Some("Granted") && c.status.as_ref().is_some_and(|s| s.grant.is_some()))
            .count();
        (granted == total).then_some(())
    })
    .await;
    eprintln!("{total} consents granted {:?} after the first was created", started.elapsed());
    // Their Events follow their statuses: all out before the switch is measured.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &a.name);
    eventually("every consent's Event", TIMEOUT, || async {
        let page = events.list(&ListParams::default().limit(1)).await.ok()?;
        let n = page.items.len() as i64 + page.metadata.remaining_item_count.unwrap_or(0);
        (n >= total as i64).then_some(())
    })
    .await;
    eprintln!("{total} consents' Events published {:?} after the first was created", started.elapsed());

    // The switch.
    let policies: Api<OrganizationPolicy> = Api::all(admin.clone());
    let policy = OrganizationPolicy {
        metadata: ObjectMeta { name: Some(org.clone()), labels: Some(labels.clone()), ..Default::default() },
        spec: OrganizationPolicySpec { policy: Some(PolicyKind::Restricted), ..Default::default() },
        status: None,
    };
    const RECONCILES: &str = "registrar_reconciliations_total{controller=\"appconsent\"}";
    let writes_before = operator.writes().await;
    let reconciles_before = operator.metric(RECONCILES).await;
    let switched = Instant::now();
    policies.create(&PostParams::default(), &policy).await.expect("Restricted");
    let in_force = eventually("the switch to be in force", TIMEOUT, || async {
        let p = policies.get(&org).await.ok()?;
        (p.status.as_ref()?.policy == Some(PolicyKind::Restricted)).then_some(p)
    })
    .await;
    let took = switched.elapsed();
    eprintln!("switch to Restricted with {total} consents of one tenant in force after {took:?}");
    let log = operator.log();
    let switch = log.lines().find(|l| l.contains("organization switched to Restricted")).unwrap_or_default();
    let took = serde_json::from_str::<serde_json::Value>(switch).ok().map(|l| l["took"].clone());
    eprintln!("the operator's survey of the consents took {took:?}");
    let s = in_force.status.expect("status");
    assert_eq!(s.grandfathered_count, total as i64, "every consent kept");
    assert_eq!(s.grandfathered_apps.len(), 1);
    assert_eq!(s.grandfathered_apps[0].app, format!("{PLATFORM}/{global}"));
    assert_eq!(
        (s.grandfathered_apps[0].client_id.as_str(), s.grandfathered_apps[0].consents),
        (client_id.as_str(), total as i64)
    );
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "InForce"), "{}", ready.message);
    // Every consent is looked at again under the policy in force, and none
    // is written: what it had is what it keeps.
    eventually("every consent to be evaluated under Restricted", TIMEOUT, || async {
        (operator.metric(RECONCILES).await >= reconciles_before + total as f64).then_some(())
    })
    .await;
    let writes = operator.writes().await - writes_before;
    eprintln!("writes by the operator for the switch and the {total} evaluations after it: {writes}");
    assert!(writes <= 2.0, "{writes} writes: the switch writes the policy's status, nothing per consent");

    // A late consent, and the tenant's attacks on it.
    tenant.create(&PostParams::default(), &consent("late".into())).await.expect("a late consent");
    let late = |what: &'static str| {
        let tenant = tenant.clone();
        async move {
            eventually(what, TIMEOUT, || async {
                let c = tenant.get("late").await.ok()?;
                (reason(&c) == Some("NotAllowlisted") && c.status.as_ref()?.grant.is_none()).then_some(())
            })
            .await
        }
    };
    late("the late consent to be refused").await;
    let kept = tenant.get("c-00042").await.expect("a kept consent");
    let record = kept.status.as_ref().and_then(|s| s.grant.clone()).expect("its record");
    let forge = |grant: &ConsentGrant| {
        Patch::Merge(json!({ "status": {
            "clientId": client_id, "grantedScopes": ["read"], "grant": grant,
            "conditions": [{ "type": "Granted", "status": "True", "reason": "Granted", "message": "forged",
                             "lastTransitionTime": "2020-01-01T00:00:00Z" }],
        } }))
    };
    tenant.patch_status("late", &PatchParams::default(), &forge(&record)).await.expect("copy a kept record");
    late("a copied record to grant nothing").await;
    let forged = ConsentGrant { seal: "v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(), ..record.clone() };
    tenant.patch_status("late", &PatchParams::default(), &forge(&forged)).await.expect("forge a record");
    late("a forged record to grant nothing").await;

    // All still granted, their records as they were; the switch wrote the
    // policy's status, nothing per consent.
    let consents = all(&tenant).await;
    let still = consents.iter().filter(|c| reason(c) == Some("Granted")).count();
    assert_eq!(still, total, "every kept consent is still granted");
    let unchanged = consents.iter().find(|c| c.name_any() == "c-00042").and_then(|c| c.status.clone()?.grant);
    assert_eq!(unchanged.as_ref(), Some(&record));

    let _ = policies.delete(&org, &Default::default()).await;
    let _ = platform.delete(&global, &Default::default()).await;
    drop(operator);
    a.delete().await;
}
