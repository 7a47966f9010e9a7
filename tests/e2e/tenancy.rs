//! Tenants are adversaries, with registrar's admission policies installed (the
//! same attacks without them: tests/bare): a forged credentials Secret is
//! refused at the door; Secrets a tenant labels cannot grow the operator's
//! memory; a workload restart the apiserver refuses never leaves a rotation
//! half done.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    ByteString,
    api::{apps::v1::Deployment, core::v1::Secret},
};
use kube::{
    Api, Resource,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::api::{AppRegistration, WorkloadKind, WorkloadRef};
use serde_json::json;

use crate::support::{
    TestNamespace,
    apps::{apply, assert_verifies, confidential, ready_reason, status, wait_app, wait_event, wait_issued},
    eventually, gitops_apply,
    helm::kubectl_apply,
    install_registrar,
    operator::Operator,
    tenants::{Tenants, forged_secret, replace_secret},
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The issue's attack, with the policy of deploy/credentials-secret-policy.yaml:
/// a namespace editor can neither create nor update a Secret that claims to be
/// registrar's, and the refusal says why. registrar's own writes pass.
#[tokio::test]
async fn the_policy_refuses_a_forged_credentials_secret_at_admission() {
    let setup = TestNamespace::new("policy-setup").await;
    install_registrar(&setup.client).await;
    let t = Tenants::new("policy").await;
    let secrets: Api<Secret> = Api::namespaced(t.mallory.clone(), &t.a.name);
    // The policy takes effect asynchronously: probe with a dry run.
    let probe: Secret = serde_json::from_value(json!({
        "metadata": { "name": "probe", "labels": { "registrar.dev/app": "probe" } }
    }))
    .expect("probe");
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    eventually("the credentials Secret policy to take effect", TIMEOUT, || async {
        secrets.create(&dry_run, &probe).await.is_err_and(|e| e.to_string().contains("only registrar")).then_some(())
    })
    .await;
    let squatter: Secret = serde_json::from_value(json!({
        "metadata": { "name": "evil-credentials" }, "stringData": { "note": "mine" }
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &squatter).await.expect("a plain Secret is mallory's to write");
    gitops_apply(&Api::namespaced(t.mallory.clone(), &t.a.name), &t.labelled(confidential("evil")))
        .await
        .expect("mallory applies an app");
    let evil = wait_app(&t.a, "evil", "SecretConflict", |a| {
        ready_reason(a).is_some_and(|(s, r, _)| s == "False" && r == "SecretConflict")
    })
    .await;

    let forged = forged_secret("evil-credentials", &evil, 1, &t.victim_client_id, "attacker-chosen-secret-000001");
    let refusal = replace_secret(&t.mallory, &t.a.name, &forged).await.expect_err("the forged update is refused");
    let message = refusal.to_string();
    assert!(message.contains("only registrar writes those"), "{message}");
    let mut fresh = forged.clone();
    fresh.metadata.name = Some("another-credentials".into());
    let created = secrets.create(&PostParams::default(), &fresh).await;
    assert!(created.is_err_and(|e| e.to_string().contains("claims to be a registrar credentials Secret")));

    // Nothing was adopted, B is intact, and registrar itself still issues.
    let evil = t.a.api::<AppRegistration>().get("evil").await.expect("get");
    assert_eq!(status(&evil).client_id, None);
    t.assert_victim_intact("attacker-chosen-secret-000001").await;
    secrets.delete("evil-credentials", &DeleteParams::default()).await.expect("mallory may delete her own Secret");
    let (evil, secret) = wait_issued(&t.a, "evil").await;
    assert_verifies(&evil, &secret);
    assert_ne!(status(&evil).client_id.as_deref(), Some(t.victim_client_id.as_str()));
    // And a tenant cannot alter registrar's Secret either (deleting stays open).
    let mut altered = secret.clone();
    altered.data.get_or_insert_default().insert("client_secret".into(), ByteString(b"mine".to_vec()));
    assert!(secrets.replace("evil-credentials", &PostParams::default(), &altered).await.is_err());
    t.delete().await;
    setup.delete().await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    crate::support::proc_memory_kib(pid, "VmRSS").expect("VmRSS")
}

/// 200 Secrets of 1 MiB each, labelled registrar.dev/app and claiming an app
/// as their controller, raise the operator's resident memory by less than
/// 10 MiB: it watches Secret metadata only, and reads data only of the one
/// Secret a decision needs.
#[tokio::test]
async fn labelled_secrets_of_a_tenant_do_not_grow_the_operators_memory() {
    const SECRETS: usize = 200;
    let ns = TestNamespace::new("mem").await;
    install_registrar(&ns.client).await;
    let operator = Operator::start(&ns.name).await;
    let app = apply(&ns, &confidential("target")).await;
    wait_issued(&ns, "target").await;
    let pid = operator.pid().expect("pid");
    // Settle: the first reconciles done, two readings 300 ms apart agree.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut before = rss_kib(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss_kib(pid);
        let settled = now.abs_diff(before) < 256;
        before = now;
        if settled {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the operator's memory did not settle");
    }

    let payload = ByteString(vec![b'x'; 1 << 20]);
    let owner = app.controller_owner_ref(&()).expect("owner ref");
    let secrets = ns.api::<Secret>();
    for batch in (0..SECRETS).collect::<Vec<_>>().chunks(20) {
        futures::future::join_all(batch.iter().map(|i| {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(format!("bulk-{i:03}")),
                    labels: Some(BTreeMap::from([("registrar.dev/app".to_string(), "target".to_string())])),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([("blob".to_string(), payload.clone())])),
                ..Default::default()
            };
            let secrets = secrets.clone();
            async move { secrets.create(&PostParams::default(), &secret).await.expect("create a 1 MiB Secret") }
        }))
        .await;
    }
    eventually("the operator to have seen every Secret", TIMEOUT, || async {
        (operator.metric("registrar_cached_secrets").await >= (SECRETS + 1) as f64).then_some(())
    })
    .await;
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("operator RSS: {before} KiB before, {after} KiB after {SECRETS} labelled 1 MiB Secrets (+{grown} KiB)");
    assert!(grown < 10 * 1024, "RSS grew by {grown} KiB");
    // The app is untouched by it all.
    let (target, secret) = wait_issued(&ns, "target").await;
    assert_verifies(&target, &secret);
    assert_eq!(status(&target).secret_version, Some(1));
    ns.delete().await;
}

/// A ValidatingAdmissionPolicy that refuses every change to Deployments named
/// `frozen` in `namespace`: a workload restart the apiserver refuses.
async fn freeze_deployments(client: &kube::Client, namespace: &str) -> String {
    let name = format!("e2e-freeze-{namespace}");
    let manifests = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{ name: {name} }}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{ apiGroups: [apps], apiVersions: ["*"], operations: [UPDATE], resources: [deployments] }}
  matchConditions:
    - {{ name: frozen, expression: "request.namespace == '{namespace}' && request.name == 'frozen'" }}
  validations:
    - {{ expression: "false", message: "deployment frozen is frozen by the e2e test" }}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{ name: {name} }}
spec: {{ policyName: {name}, validationActions: [Deny] }}
"#
    );
    kubectl_apply(&manifests, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    eventually("the freeze to take effect", TIMEOUT, || async {
        let probe = Patch::Merge(json!({ "metadata": { "annotations": { "e2e/probe": "1" } } }));
        let params = PatchParams { dry_run: true, ..Default::default() };
        deployments.patch("frozen", &params, &probe).await.is_err().then_some(())
    })
    .await;
    name
}

/// A restart refused by the apiserver: status follows the Secret at once (the
/// new secret verifies), the failure shows as a Warning Event and a
/// `WorkloadsRestarted=False` condition, and the restart is retried with
/// backoff until it goes through.
#[tokio::test]
async fn a_refused_workload_restart_never_leaves_a_rotation_half_done() {
    let ns = TestNamespace::new("restart").await;
    install_registrar(&ns.client).await;
    let _operator = Operator::start(&ns.name).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "frozen" },
        "spec": {
            "selector": { "matchLabels": { "app": "frozen" } },
            "template": { "metadata": { "labels": { "app": "frozen" } },
                          "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] } }
        }
    }))
    .expect("deployment");
    ns.api::<Deployment>().create(&PostParams::default(), &deployment).await.expect("deployment");
    let mut app = confidential("rolled");
    app.spec.restart_on_rotate = vec![WorkloadRef { kind: WorkloadKind::Deployment, name: "frozen".into() }];
    apply(&ns, &app).await;
    wait_issued(&ns, "rolled").await;
    let policy = freeze_deployments(&ns.client, &ns.name).await;

    let rotate = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "r1" } } }));
    ns.api::<AppRegistration>().patch("rolled", &PatchParams::default(), &rotate).await.expect("rotate");
    let failed = wait_app(&ns, "rolled", "the refused restart to show", |a| {
        status(a).pending_restart == Some(2)
            && a.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "WorkloadsRestarted" && c.status == "False"))
    })
    .await;
    assert_eq!(status(&failed).secret_version, Some(2), "status follows the Secret");
    assert_eq!(status(&failed).last_handled_rotate.as_deref(), Some("r1"));
    assert!(ready_reason(&failed).is_some_and(|(s, _, _)| s == "True"), "credentials are not blocked");
    let (issued, secret) = wait_issued(&ns, "rolled").await;
    assert_verifies(&issued, &secret);
    let condition = failed.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "WorkloadsRestarted");
    let message = &condition.expect("condition").message;
    assert!(message.contains("Deployment frozen") && message.contains("frozen by the e2e test"), "{message}");
    wait_event(&ns, "RestartFailed", "Deployment frozen").await;
    // The failed reconcile is told too, naming the step.
    wait_event(&ns, "ReconcileFailed", "restarting Deployment frozen").await;

    // Thawed: the retry (with backoff) rolls it, and the condition says so.
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("thaw");
    let rolled = wait_app(&ns, "rolled", "the retried restart", |a| {
        status(a).pending_restart.is_none()
            && a.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "WorkloadsRestarted" && c.status == "True"))
    })
    .await;
    assert_eq!(status(&rolled).secret_version, Some(2), "the retry did not rotate again");
    let deployment = ns.api::<Deployment>().get("frozen").await.expect("deployment");
    let annotations = deployment.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations);
    assert_eq!(annotations.unwrap_or_default().get("registrar.dev/secret-version").map(String::as_str), Some("2"));
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy>::all(ns.client.clone())
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete the policy");
    ns.delete().await;
}

/// mallory's apps and consents with 240 KB of annotations each cost the
/// operator less than 2 MiB (with the policies she cannot label a Secret as
/// registrar's; the bare binary tries that too).
#[tokio::test]
async fn annotations_of_a_tenant_do_not_grow_the_operators_memory() {
    let t = crate::support::tenants::Tenants::new("stuffed").await;
    crate::support::memory_attacks::annotations_of_a_tenant_do_not_grow_the_operator(&t, false).await;
    t.delete().await;
}

/// Owners are real and clean. The CRD refuses `system:` owners and control
/// characters; with the policies, mallory may name only herself or a group
/// she is in — when she sets an owner and when she changes it — while a
/// cluster admin (or a GitOps tool holding admin rights) names anyone.
#[tokio::test]
async fn owners_are_real_and_clean() {
    use registrar::api::Owner;

    use crate::support::{
        control_plane,
        tenants::{MALLORY, unreal_owners_are_refused},
    };

    let setup = TestNamespace::new("owner-setup").await;
    install_registrar(&setup.client).await;
    let t = Tenants::new("owners").await;
    unreal_owners_are_refused(&t).await;

    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let owned = |name: &str, owner: Owner| {
        let mut app = t.labelled(confidential(name));
        app.spec.owner = Some(owner);
        app
    };
    // The policy takes effect asynchronously: the first refusal is awaited.
    let message = eventually("the owner policy to refuse naming someone else", TIMEOUT, || async {
        match gitops_apply(&apps, &owned("owned", Owner::user("alice"))).await {
            Err(kube::Error::Api(status)) => Some(status.message),
            Ok(_) => {
                let _ = apps.delete("owned", &DeleteParams::default()).await;
                None
            }
            Err(_) => None,
        }
    })
    .await;
    assert!(message.contains("you may name only yourself (mallory)"), "{message}");

    gitops_apply(&apps, &owned("owned", Owner::user(MALLORY))).await.expect("mallory names herself");
    let app =
        wait_app(&t.a, "owned", "mallory to own her app", |a| status(a).owner.is_some_and(|o| o.name == MALLORY)).await;
    assert!(ready_reason(&app).is_some_and(|r| r.0 == "True"));
    let handed = gitops_apply(&apps, &owned("owned", Owner::user("alice"))).await;
    assert!(handed.is_err(), "nor may she hand her app to someone else: {handed:?}");

    let in_group = control_plane().client_as_in(MALLORY, &["team-a-admins"]).await;
    let grouped: Api<AppRegistration> = Api::namespaced(in_group, &t.a.name);
    gitops_apply(&grouped, &owned("team-owned", Owner::group("team-a-admins"))).await.expect("a group she is in");
    let refused = gitops_apply(&grouped, &owned("other-owned", Owner::group("platform-admins"))).await;
    let Err(kube::Error::Api(status)) = refused else { panic!("a group she is not in was accepted: {refused:?}") };
    assert!(status.message.contains("the group platform-admins"), "{}", status.message);

    // A cluster admin hands the app to alice.
    gitops_apply(&t.a.api(), &owned("owned", Owner::user("alice"))).await.expect("an admin names anyone");
    t.delete().await;
    setup.delete().await;
}

/// Consent Events are fair between tenants: while mallory churns 40 consents
/// in A (each flipped between granted and a scope the app does not offer, a
/// status write and an Event each time, without rest), a consent B creates
/// has its Event while A still churns, once at most a few of A's have gone
/// out after its status: A's Events wait on A; B's wait neither for A to rest
/// (then only the five-second bound would let them out) nor behind a queue of
/// A's. Counted rather than timed where load matters (each Event a slower
/// request on a loaded machine): every moment is taken from watches as it
/// happens.
#[tokio::test]
async fn one_tenants_churn_does_not_hold_another_namespaces_events() {
    use k8s_openapi::api::events::v1::Event;
    use registrar::api::{AppConsent, AppConsentSpec, AppRef};

    use crate::support::tenants::RUN_LABEL;

    const CHURNED: usize = 40;
    let t = Tenants::new("fair").await;
    let consent = |name: &str, scopes: &[&str]| {
        let mut consent = AppConsent::new(
            name,
            AppConsentSpec {
                app_ref: AppRef { namespace: t.b.name.clone(), name: "billing".into() },
                oauth_scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
            },
        );
        consent.metadata.labels = Some(BTreeMap::from([(RUN_LABEL.to_string(), t.run.clone())]));
        consent
    };
    let mallorys: Api<AppConsent> = Api::namespaced(t.mallory.clone(), &t.a.name);
    for i in 0..CHURNED {
        mallorys.create(&PostParams::default(), &consent(&format!("churn-{i:02}"), &["read"])).await.expect("create");
    }
    let churning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let churn = {
        let (mallorys, churning) = (mallorys.clone(), churning.clone());
        tokio::spawn(async move {
            let mut round = 0usize;
            while churning.load(std::sync::atomic::Ordering::Relaxed) {
                let scopes = if round.is_multiple_of(2) { json!(["read", "not-offered"]) } else { json!(["read"]) };
                let flips = (0..CHURNED).map(|i| {
                    let (mallorys, scopes) = (mallorys.clone(), scopes.clone());
                    async move {
                        let patch = Patch::Merge(json!({ "spec": { "oauthScopes": scopes } }));
                        let _ = mallorys.patch(&format!("churn-{i:02}"), &PatchParams::default(), &patch).await;
                    }
                });
                futures::future::join_all(flips).await;
                round += 1;
            }
            round
        })
    };
    // Let the churn build up: the controller is never idle from here on.
    let events = t.a.api::<Event>();
    eventually("mallory's churn to produce Events", TIMEOUT, || async {
        let n = events.list(&Default::default()).await.ok()?.items.len();
        (n >= CHURNED).then_some(())
    })
    .await;

    // Seen as they happen (watches, not polls): B's consent granted, and its Event.
    let theirs: Api<AppConsent> = t.b.api();
    let granted = first_seen(theirs.clone(), |c: &AppConsent| {
        c.metadata.name.as_deref() == Some("watched")
            && c.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Granted" && c.status == "True"))
    })
    .await;
    let announced = first_seen(t.b.api::<Event>(), |e: &Event| {
        e.reason.as_deref() == Some("Granted")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("watched")
    })
    .await;
    // Every Event of A's as it is seen.
    let a_events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watching_a = {
        let (a_events, api) = (a_events.clone(), t.a.api::<Event>());
        let (listening, ready) = tokio::sync::oneshot::channel();
        let watching = tokio::spawn(async move {
            use futures::StreamExt;
            use kube::runtime::watcher;
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            let mut listening = Some(listening);
            while let Some(Ok(event)) = events.next().await {
                match event {
                    watcher::Event::InitDone => {
                        listening.take().map(|l| l.send(()));
                    }
                    watcher::Event::Apply(_) => a_events.lock().unwrap().push(tokio::time::Instant::now()),
                    _ => {}
                }
            }
        });
        ready.await.expect("the watch of A's Events to list");
        watching
    };
    theirs.create(&PostParams::default(), &consent("watched", &["read"])).await.expect("B's consent");
    let (granted_at, announced_at) = (granted.await.expect("granted"), announced.await.expect("announced"));
    churning.store(false, std::sync::atomic::Ordering::Relaxed);
    let rounds = churn.await.expect("churn");
    watching_a.abort();
    let waited = announced_at.saturating_duration_since(granted_at);
    let a_seen = a_events.lock().unwrap().clone();
    let a_between = a_seen.iter().filter(|at| **at > granted_at && **at < announced_at).count();
    let a_per_second =
        a_seen.len() as f64 / a_seen.last().map_or(1.0, |l| l.duration_since(a_seen[0]).as_secs_f64().max(1.0));
    eprintln!(
        "B's Event {waited:?} after its status; {a_between} of A's Events went out meanwhile ({a_per_second:.0} a \
         second), while mallory flipped {CHURNED} consents {rounds} times"
    );
    assert!(rounds >= 2, "the churn ran");
    // Not let out by the bound on how long an Event waits for its namespace
    // (registrar::runtime::announce::MAX_DELAY, 5 s): B's namespace was idle.
    assert!(waited < Duration::from_secs(4), "B's Event waited {waited:?}: for A's churn to rest?");
    // Served in turns, B's Event waits behind the one of A's being sent, and
    // the next (watches deliver a moment apart); a queue of A's is dozens.
    assert!(a_between <= 4, "B's Event waited behind {a_between} of A's Events ({waited:?})");
    t.delete().await;
}

/// When a watch of `api` first sees an object for which `seen` holds: the
/// watch runs in the background and is listening when this returns.
async fn first_seen<K>(
    api: Api<K>,
    seen: impl Fn(&K) -> bool + Send + Sync + 'static,
) -> tokio::task::JoinHandle<tokio::time::Instant>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::watcher;
    let (listening, ready) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        let mut listening = Some(listening);
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Some(event) = events.next().await {
                match event.expect("watch") {
                    watcher::Event::InitDone => {
                        listening.take().map(|l| l.send(()));
                    }
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) if seen(&o) => return,
                    _ => {}
                }
            }
            panic!("the watch ended");
        });
        found.await.expect("in time");
        tokio::time::Instant::now()
    });
    ready.await.expect("the watch to list");
    handle
}
