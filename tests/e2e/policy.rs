//! Organization policies (OrganizationPolicy) on the real control plane:
//! Restricted organizations, the allowlist and its scopes, the grants kept at
//! the switch, auto-approval of internal apps, the registry's answers, who may
//! change a policy, and the guide's walkthrough (docs/guide.md). Each test has an organization
//! of its own (policies are cluster-scoped).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::api::{
    AllowlistEntry, AppConsent, AppConsentSpec, AppRef, AppRegistration, OrganizationPolicy, OrganizationPolicySpec,
    PolicyKind, Scope,
};
use serde_json::json;

use crate::support::{
    TestNamespace, allowed,
    apps::{confidential, status},
    control_plane, eventually, gitops_apply, install_registrar,
    operator::Operator,
    registry::{Caller, registry_operator},
};

const TIMEOUT: Duration = Duration::from_secs(60);
const RUN_LABEL: &str = "e2e.registrar.dev/run";
const PLATFORM: &str = "registrar-system";

/// An organization of its own: an app namespace and two consumer namespaces
/// in it, a Global app from the platform namespace (external to it), and an
/// operator managing this run's objects (and serving the registry).
struct World {
    run: String,
    org: String,
    apps: TestNamespace,
    b: TestNamespace,
    c: TestNamespace,
    /// Name of this run's Global app in the platform namespace.
    global: String,
    operator: Operator,
    registry: u16,
    admin: kube::Client,
}

impl World {
    async fn new(prefix: &str) -> Self {
        let run = format!("{:08x}", rand::random::<u32>());
        let org = format!("{prefix}-{run}");
        let label = [("registrar.dev/organization", org.as_str())];
        let apps = TestNamespace::labelled(&format!("{prefix}-apps"), &label).await;
        install_registrar(&apps.client).await;
        let b = TestNamespace::labelled(&format!("{prefix}-b"), &label).await;
        let c = TestNamespace::labelled(&format!("{prefix}-c"), &label).await;
        let admin = control_plane().client().await;
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": PLATFORM } })).expect("namespace"),
            )
            .await;
        let selector = format!("{RUN_LABEL}={run}");
        let (operator, registry) = registry_operator(&["--selector", &selector]).await;
        let world = World { global: format!("global-{run}"), run, org, apps, b, c, operator, registry, admin };
        world.app(&world.apps.name, "internal", Scope::Organization, &["read"]).await;
        world.app(PLATFORM, &world.global, Scope::Global, &["read"]).await;
        world
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(RUN_LABEL.to_string(), self.run.clone())])
    }

    async fn app(&self, ns: &str, name: &str, scope: Scope, scopes: &[&str]) -> AppRegistration {
        let mut app = confidential(name);
        app.metadata.labels = Some(self.labels());
        app.spec.scope = scope;
        app.spec.oauth_scopes = scopes.iter().map(|s| s.to_string()).collect();
        let apps: Api<AppRegistration> = Api::namespaced(self.admin.clone(), ns);
        gitops_apply(&apps, &app).await.expect("apply app");
        eventually(&format!("{ns}/{name} to be issued"), TIMEOUT, || async {
            let app = apps.get(name).await.ok()?;
            status(&app).client_id.is_some().then_some(app)
        })
        .await
    }

    async fn consent(&self, ns: &TestNamespace, name: &str, app_ns: &str, app: &str) {
        let consent = AppConsent {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(self.labels()), ..Default::default() },
            spec: AppConsentSpec { app_ref: AppRef { namespace: app_ns.into(), name: app.into() }, oauth_scopes: None },
            status: None,
        };
        ns.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("create consent");
    }

    fn policies(&self) -> Api<OrganizationPolicy> {
        Api::all(self.admin.clone())
    }

    /// Applies the organization's policy (as a GitOps tool would).
    async fn policy(&self, kind: PolicyKind, auto_approve_internal: Option<bool>, allowlist: Vec<AllowlistEntry>) {
        let policy = OrganizationPolicy {
            metadata: ObjectMeta { name: Some(self.org.clone()), labels: Some(self.labels()), ..Default::default() },
            spec: OrganizationPolicySpec { policy: Some(kind), auto_approve_internal, allowlist, ..Default::default() },
            status: None,
        };
        let mut body = serde_json::to_value(&policy).expect("policy");
        body.as_object_mut().expect("object").remove("status");
        self.policies()
            .patch(&self.org, &PatchParams::apply("e2e-gitops").force(), &Patch::Apply(body))
            .await
            .expect("apply policy");
    }

    /// Waits until the policy in force is `kind`.
    async fn in_force(&self, kind: PolicyKind) -> OrganizationPolicy {
        eventually(&format!("{} to be {kind:?} in force", self.org), TIMEOUT, || async {
            let policy = self.policies().get(&self.org).await.ok()?;
            let status = policy.status.as_ref()?;
            (status.policy == Some(kind) && status.observed_generation == policy.metadata.generation).then_some(policy)
        })
        .await
    }

    fn entry(&self, ns: &str, name: &str, scopes: &[&str]) -> AllowlistEntry {
        AllowlistEntry {
            app: AppRef { namespace: ns.into(), name: name.into() },
            client_id: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    async fn delete(self) {
        let _ = self.policies().delete(&self.org, &DeleteParams::default()).await;
        let global: Api<AppRegistration> = Api::namespaced(self.admin.clone(), PLATFORM);
        let _ = global.delete(&self.global, &DeleteParams::default()).await;
        drop(self.operator);
        for ns in [self.apps, self.b, self.c] {
            ns.delete().await;
        }
    }
}

/// The consent's Granted condition: (status, reason, message).
fn granted(consent: &AppConsent) -> Option<(String, String, String)> {
    let c = consent.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Granted")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the consent's Granted reason is `reason`, and returns it.
async fn wait_consent(ns: &TestNamespace, name: &str, reason: &str) -> AppConsent {
    let consents = ns.api::<AppConsent>();
    eventually(&format!("consent {}/{name} to be {reason}", ns.name), TIMEOUT, || async {
        let consent = consents.get(name).await.ok()?;
        let current = consent.status.as_ref()?.observed_generation == consent.metadata.generation;
        (current && granted(&consent)?.1 == reason).then_some(consent)
    })
    .await
}

fn scopes(consent: &AppConsent) -> (Vec<String>, Vec<String>, Vec<String>) {
    let s = consent.status.clone().unwrap_or_default();
    (s.granted_scopes, s.pending_scopes, s.held_scopes)
}

/// Runs a command the operator printed for an administrator, as a shell would.
fn run_printed(command: &str) {
    let kubectl_dir = control_plane().kubeconfig().parent().expect("dir").to_path_buf();
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-kubectl");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let link = bin.join("kubectl");
    let _ = std::fs::remove_file(&link);
    let controlplane = std::env::var("REGISTRAR_CONTROLPLANE").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        let out = std::process::Command::new("bash")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/build.sh"))
            .output()
            .expect("build.sh");
        String::from_utf8_lossy(&out.stdout).trim().into()
    });
    std::os::unix::fs::symlink(controlplane.with_file_name("kubectl"), &link).expect("kubectl link");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("bash")
        .args(["-c", command])
        .env("PATH", path)
        .env("KUBECONFIG", control_plane().kubeconfig())
        .current_dir(kubectl_dir)
        .output()
        .expect("run the printed command");
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The printed command in a NotAllowlisted message.
fn command_in(message: &str) -> &str {
    &message[message.find("kubectl patch organizationpolicy").expect("a command in the message")..]
}

/// Restricted: an internal app is granted (auto-approval); an external one is
/// NotAllowlisted, and the message names the app, the scopes and the command
/// that allowlists it; running that command grants it within a second. The
/// policy's columns and the consent's Events show it.
#[tokio::test]
async fn a_restricted_organization_grants_internal_apps_and_allowlisted_ones() {
    let w = World::new("orgr").await;
    w.policy(PolicyKind::Restricted, None, vec![]).await;
    w.in_force(PolicyKind::Restricted).await;
    w.consent(&w.b, "internal", &w.apps.name, "internal").await;
    w.consent(&w.b, "external", PLATFORM, &w.global).await;
    wait_consent(&w.b, "internal", "Granted").await;
    let refused = wait_consent(&w.b, "external", "NotAllowlisted").await;
    let (_, _, message) = granted(&refused).expect("condition");
    for needle in [w.org.as_str(), &w.global, "read", "kubectl patch organizationpolicy"] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
    let table = control_plane().kubectl().args(["get", "orgpolicy", &w.org]).output().expect("kubectl");
    let table = String::from_utf8_lossy(&table.stdout);
    let header: Vec<&str> =
        table.lines().next().unwrap_or_default().split("  ").filter(|s| !s.trim().is_empty()).map(str::trim).collect();
    assert_eq!(header, ["NAME", "POLICY", "AUTO-APPROVE INTERNAL", "ALLOWLISTED", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap_or_default().contains("Restricted"), "{table}");

    let asked = Instant::now();
    run_printed(command_in(&message));
    let allowed = wait_consent(&w.b, "external", "Granted").await;
    eprintln!("allowlist command → consent granted: {:?}", asked.elapsed());
    assert_eq!(scopes(&allowed).0, ["read"]);
    // Each change's Event follows its status (published once the controller is idle).
    let events = w.b.api::<Event>();
    eventually("a NotAllowlisted and a Granted Event on the consent", TIMEOUT, || async {
        let reasons: Vec<_> =
            events.list(&ListParams::default()).await.ok()?.items.into_iter().filter_map(|e| e.reason).collect();
        (reasons.iter().any(|r| r == "NotAllowlisted") && reasons.iter().any(|r| r == "Granted")).then_some(())
    })
    .await;
    w.delete().await;
}

/// Switching to Restricted keeps every consent granted at that moment: each
/// consent carries registrar's sealed record of its grant (status.grant), the
/// policy's status counts them and lists their apps, nothing is written into
/// spec. A record copied onto another consent grants nothing. Listing the app
/// in spec.revoked, or removing an allowlist entry, revokes it for the
/// organization, and the consents say why.
#[tokio::test]
async fn the_switch_to_restricted_keeps_what_was_granted_until_an_admin_removes_it() {
    let w = World::new("orgg").await;
    w.consent(&w.b, "external", PLATFORM, &w.global).await;
    w.consent(&w.b, "internal", &w.apps.name, "internal").await;
    let before = wait_consent(&w.b, "external", "Granted").await;
    wait_consent(&w.b, "internal", "Granted").await;
    let record = eventually("the grant's record", TIMEOUT, || async {
        w.b.api::<AppConsent>().get("external").await.ok()?.status?.grant
    })
    .await;
    let client_id = before.status.as_ref().and_then(|s| s.client_id.clone()).expect("bound");
    assert_eq!((record.organization.as_str(), record.client_id.as_str()), (w.org.as_str(), client_id.as_str()));
    assert_eq!(record.scopes, ["read"]);
    w.policy(PolicyKind::Restricted, None, vec![]).await;
    let policy = w.in_force(PolicyKind::Restricted).await;
    // Kept: the external app's consent; the internal one is auto-approved
    // (not counted), and stays granted.
    let status = policy.status.as_ref().expect("status");
    assert_eq!(status.grandfathered_count, 1, "{status:?}");
    assert!(status.grandfathered.is_empty(), "nothing per consent in the policy");
    let listed = &status.grandfathered_apps;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].app.clone(), listed[0].client_id.clone()),
        (format!("{PLATFORM}/{}", w.global), client_id.clone())
    );
    assert_eq!(listed[0].consents, 1);
    assert!(status.restricted_at.as_ref().is_some_and(|at| record.since.0 < at.0));
    assert!(policy.spec.allowlist.is_empty() && policy.spec.revoked.is_empty(), "nothing is written into spec");
    wait_consent(&w.b, "internal", "Granted").await;
    let described =
        control_plane().kubectl().args(["describe", "orgpolicy", &w.org]).output().expect("kubectl describe");
    assert!(String::from_utf8_lossy(&described.stdout).contains(&format!("{PLATFORM}/{}", w.global)));
    // Still granted, with its record as it was; a new consent from another
    // namespace is not, even with the kept consent's record copied onto it.
    let still = wait_consent(&w.b, "external", "Granted").await;
    assert_eq!(scopes(&still).0, ["read"]);
    assert_eq!(still.status.as_ref().and_then(|s| s.grant.as_ref()), Some(&record), "the record stays");
    w.consent(&w.c, "external", PLATFORM, &w.global).await;
    wait_consent(&w.c, "external", "NotAllowlisted").await;
    let copy = Patch::Merge(
        json!({ "status": { "grant": record, "clientId": still.status.as_ref().and_then(|s| s.client_id.clone()) } }),
    );
    w.c.api::<AppConsent>().patch_status("external", &PatchParams::default(), &copy).await.expect("copy the record");
    eventually("the copied record to be dropped", TIMEOUT, || async {
        let c = w.c.api::<AppConsent>().get("external").await.ok()?;
        let s = c.status.as_ref()?;
        (s.grant.is_none() && granted(&c)?.1 == "NotAllowlisted").then_some(())
    })
    .await;
    // The registry, asked for c, refuses it by the policy.
    let caller = Caller::new(&w.apps, w.registry).await;
    let ask = json!({ "redirect_uri": "https://app.example.com/callback", "group": w.c.name, "scope": "read" });
    let answer = caller.authorize(&client_id, ask).await;
    assert_eq!(answer["reason"], json!("not_allowlisted"), "{answer}");

    // An organization admin revokes the app: refused for the organization.
    let revoke =
        Patch::Merge(json!({ "spec": { "revoked": [{ "app": { "namespace": PLATFORM, "name": w.global } }] } }));
    let removed = Instant::now();
    w.policies().patch(&w.org, &PatchParams::default(), &revoke).await.expect("revoke the app");
    let revoked = wait_consent(&w.b, "external", "NotAllowlisted").await;
    eprintln!("app revoked → consent refused: {:?}", removed.elapsed());
    assert!(granted(&revoked).expect("condition").2.contains("revoked"), "{:?}", granted(&revoked));
    assert_eq!(revoked.status.as_ref().and_then(|s| s.grant.as_ref()), None, "no grant, no record");

    // Allowlisted, then the entry removed: granted, then refused again, and
    // the revocation no longer listed changes nothing: it stays refused.
    w.policy(PolicyKind::Restricted, None, vec![w.entry(PLATFORM, &w.global, &["read"])]).await;
    wait_consent(&w.b, "external", "Granted").await;
    let unrevoke = Patch::Merge(json!({ "spec": { "revoked": null } }));
    w.policies().patch(&w.org, &PatchParams::default(), &unrevoke).await.expect("unlist");
    w.policy(PolicyKind::Restricted, None, vec![]).await;
    let refused = wait_consent(&w.b, "external", "NotAllowlisted").await;
    assert!(granted(&refused).expect("condition").2.contains("revoked"));
    // Back to Unrestricted: granted, and nothing kept.
    w.policy(PolicyKind::Unrestricted, None, vec![]).await;
    let policy = w.in_force(PolicyKind::Unrestricted).await;
    let status = policy.status.expect("status");
    assert!(status.grandfathered_apps.is_empty() && status.grandfathered_count == 0 && status.restricted_at.is_none());
    wait_consent(&w.b, "external", "Granted").await;
    w.delete().await;
}

/// Scopes are pinned to the allowlist: more scopes asked by the app keep the
/// existing consents working with what was allowed, new consents are granted
/// those, and the rest is held until the entry lists it; fewer scopes need
/// nothing.
#[tokio::test]
async fn scopes_are_pinned_to_the_allowlist_entry() {
    let w = World::new("orgs").await;
    w.policy(PolicyKind::Restricted, None, vec![w.entry(PLATFORM, &w.global, &["read"])]).await;
    w.in_force(PolicyKind::Restricted).await;
    w.consent(&w.b, "external", PLATFORM, &w.global).await;
    assert_eq!(scopes(&wait_consent(&w.b, "external", "Granted").await).0, ["read"]);

    // The app asks for more.
    let asked = Instant::now();
    w.app(PLATFORM, &w.global, Scope::Global, &["read", "write"]).await;
    let kept = eventually("the new scope to be held", TIMEOUT, || async {
        let c = wait_consent(&w.b, "external", "Granted").await;
        (scopes(&c).2 == ["write"]).then_some(c)
    })
    .await;
    eprintln!("app asks for a scope → held on the consent: {:?}", asked.elapsed());
    assert_eq!(scopes(&kept).0, ["read"], "existing consent keeps what was allowed");
    assert!(granted(&kept).expect("condition").2.contains("held until organization"));
    w.consent(&w.c, "external", PLATFORM, &w.global).await;
    let fresh = wait_consent(&w.c, "external", "Granted").await;
    assert_eq!((scopes(&fresh).0, scopes(&fresh).2), (vec!["read".to_string()], vec!["write".to_string()]));

    // The allowlist lists it: nothing held. Existing default consents have it
    // pending their namespace's acceptance (as any scope an app adds); a
    // consent created now is granted both.
    w.policy(PolicyKind::Restricted, None, vec![w.entry(PLATFORM, &w.global, &["read", "write"])]).await;
    for ns in [&w.b, &w.c] {
        let existing = eventually(&format!("{} to hold nothing", ns.name), TIMEOUT, || async {
            let c = wait_consent(ns, "external", "Granted").await;
            scopes(&c).2.is_empty().then_some(c)
        })
        .await;
        assert_eq!((scopes(&existing).0, scopes(&existing).1), (vec!["read".to_string()], vec!["write".to_string()]));
    }
    w.consent(&w.c, "newer", PLATFORM, &w.global).await;
    let newer = wait_consent(&w.c, "newer", "Granted").await;
    assert_eq!((scopes(&newer).0, scopes(&newer).2), (vec!["read".to_string(), "write".to_string()], vec![]));

    // The app drops a scope: nothing to do, the grant shrinks.
    w.app(PLATFORM, &w.global, Scope::Global, &["write"]).await;
    eventually("the grant to shrink", TIMEOUT, || async {
        let c = wait_consent(&w.c, "newer", "Granted").await;
        (scopes(&c).0 == ["write"]).then_some(())
    })
    .await;
    w.delete().await;
}

/// A namespace moving into a Restricted organization follows its policy at
/// once, and gets its grant back when it moves out.
#[tokio::test]
async fn a_namespace_moving_between_organizations_follows_the_policy_of_the_one_it_joins() {
    let w = World::new("orgm").await;
    w.policy(PolicyKind::Restricted, None, vec![]).await;
    w.in_force(PolicyKind::Restricted).await;
    let elsewhere = format!("{}-elsewhere", w.org);
    let d = TestNamespace::labelled("orgm-d", &[("registrar.dev/organization", elsewhere.as_str())]).await;
    w.consent(&d, "external", PLATFORM, &w.global).await;
    wait_consent(&d, "external", "Granted").await;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(w.admin.clone());
    let relabel = |org: String| {
        let namespaces = namespaces.clone();
        let name = d.name.clone();
        async move {
            let patch = Patch::Merge(json!({ "metadata": { "labels": { "registrar.dev/organization": org } } }));
            namespaces.patch(&name, &PatchParams::default(), &patch).await.expect("relabel the namespace");
        }
    };
    let moved = Instant::now();
    relabel(w.org.clone()).await;
    let refused = wait_consent(&d, "external", "NotAllowlisted").await;
    eprintln!("namespace moved into a Restricted organization → consent refused: {:?}", moved.elapsed());
    assert!(granted(&refused).expect("condition").2.contains(&w.org));
    let moved = Instant::now();
    relabel(elsewhere).await;
    wait_consent(&d, "external", "Granted").await;
    eprintln!("namespace moved out → consent granted again: {:?}", moved.elapsed());
    d.delete().await;
    w.delete().await;
}

/// With autoApproveInternal off, an internal app needs an allowlist entry too.
#[tokio::test]
async fn without_auto_approval_internal_apps_need_an_allowlist_entry() {
    let w = World::new("orga").await;
    w.policy(PolicyKind::Restricted, Some(false), vec![]).await;
    w.in_force(PolicyKind::Restricted).await;
    w.consent(&w.b, "internal", &w.apps.name, "internal").await;
    let refused = wait_consent(&w.b, "internal", "NotAllowlisted").await;
    assert!(granted(&refused).expect("condition").2.contains("does not auto-approve internal apps"));
    let changed = Instant::now();
    w.policy(PolicyKind::Restricted, Some(true), vec![]).await;
    wait_consent(&w.b, "internal", "Granted").await;
    eprintln!("auto-approval turned on → internal consent granted: {:?}", changed.elapsed());
    w.delete().await;
}

/// The registry follows the policy: authorize-check answers not_allowlisted
/// where a consent would not be granted, and the catalog marks each app.
#[tokio::test]
async fn the_registry_answers_not_allowlisted_and_marks_the_catalog() {
    let w = World::new("orgq").await;
    let caller = Caller::new(&w.apps, w.registry).await;
    let global = Api::<AppRegistration>::namespaced(w.admin.clone(), PLATFORM).get(&w.global).await.expect("global");
    let global_id = status(&global).client_id.expect("id");
    let check = |group: String| {
        let caller = &caller;
        let id = global_id.clone();
        async move {
            caller
                .authorize(
                    &id,
                    json!({ "redirect_uri": "https://app.example.com/callback", "group": group, "scope": "read" }),
                )
                .await
        }
    };
    w.consent(&w.b, "external", PLATFORM, &w.global).await;
    wait_consent(&w.b, "external", "Granted").await;
    assert_eq!(check(w.b.name.clone()).await["allowed"], json!(true));
    w.policy(PolicyKind::Restricted, None, vec![]).await;
    w.in_force(PolicyKind::Restricted).await;
    // c (no consent) is refused by the policy, before consent; b's grant is
    // kept. The registry answers from the operator's cache, which may be a
    // moment behind the status just read from the apiserver.
    eventually("the registry to refuse c by the policy", TIMEOUT, || async {
        (check(w.c.name.clone()).await["reason"] == json!("not_allowlisted")).then_some(())
    })
    .await;
    assert_eq!(check(w.b.name.clone()).await["allowed"], json!(true));
    let catalog = |ns: String| {
        let caller = &caller;
        async move {
            caller
                .http
                .get(format!("{}/v1/catalog?namespace={ns}", caller.base))
                .bearer_auth(&caller.token)
                .send()
                .await
                .expect("catalog")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let listed = |catalog: &serde_json::Value, tab: &str, name: &str| {
        catalog[tab]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == json!(name)).map(|a| a["allowlisted"].clone()))
    };
    let c_catalog = catalog(w.c.name.clone()).await;
    assert_eq!(listed(&c_catalog, "globalApps", &w.global), Some(json!(false)), "{c_catalog}");
    assert_eq!(listed(&c_catalog, "organizationApps", "internal"), Some(json!(true)), "{c_catalog}");
    w.policy(PolicyKind::Restricted, None, vec![w.entry(PLATFORM, &w.global, &["read"])]).await;
    eventually("the allowlist to reach the registry", TIMEOUT, || async {
        (check(w.c.name.clone()).await["reason"] == json!("not_consented")).then_some(())
    })
    .await;
    let c_catalog = catalog(w.c.name.clone()).await;
    assert_eq!(listed(&c_catalog, "globalApps", &w.global), Some(json!(true)));
    w.delete().await;
}

/// Only organization administrators change a policy: a namespace admin of the
/// organization cannot; the chart's organization-admin role can. A policy for
/// an organization with no namespace is harmless.
#[tokio::test]
async fn only_organization_admins_change_policies() {
    let ns = TestNamespace::labelled("orgrbac", &[("registrar.dev/organization", "orgrbac-org")]).await;
    install_registrar(&ns.client).await;
    let release = format!("rb{:06x}", rand::random::<u32>() & 0xffffff);
    let roles = crate::support::helm::run(crate::support::helm::helm().args([
        "template",
        &release,
        &crate::support::helm::chart(),
        "--show-only",
        "templates/aggregated-roles.yaml",
        "--kube-version",
        "1.36.3",
    ]));
    crate::support::helm::kubectl_apply(&roles, &[]);
    let bind = |name: &str, kind: &str, role: &str, user: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": { "name": name, "namespace": ns.name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
        })
    };
    let rb: k8s_openapi::api::rbac::v1::RoleBinding =
        serde_json::from_value(bind("ns-admin", "RoleBinding", "admin", "nsadmin")).expect("rb");
    ns.api::<k8s_openapi::api::rbac::v1::RoleBinding>().create(&PostParams::default(), &rb).await.expect("bind admin");
    let crb: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(bind(
        &format!("{release}-orgadmin"),
        "ClusterRoleBinding",
        &format!("{release}-registrar-organization-admin"),
        "orgadmin",
    ))
    .expect("crb");
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(ns.client.clone())
        .create(&PostParams::default(), &crb)
        .await
        .expect("bind org admin");
    eventually("the organization admin's role to take effect", TIMEOUT, || async {
        allowed(&ns.client, "orgadmin", "registrar.dev", "organizationpolicies", "create").await.then_some(())
    })
    .await;
    assert!(!allowed(&ns.client, "nsadmin", "registrar.dev", "organizationpolicies", "create").await);
    let policy = OrganizationPolicy::new(
        "orgrbac-org",
        OrganizationPolicySpec { policy: Some(PolicyKind::Restricted), ..Default::default() },
    );
    let as_ns_admin = Api::<OrganizationPolicy>::all(control_plane().client_as("nsadmin").await);
    let refused = as_ns_admin.create(&PostParams::default(), &policy).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.is_forbidden()), "{refused:?}");
    let as_org_admin = Api::<OrganizationPolicy>::all(control_plane().client_as("orgadmin").await);
    as_org_admin.create(&PostParams::default(), &policy).await.expect("the organization admin creates it");
    let patch = Patch::Merge(json!({ "spec": { "policy": "Unrestricted" } }));
    let refused = as_ns_admin.patch("orgrbac-org", &PatchParams::default(), &patch).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.is_forbidden()), "{refused:?}");
    // A policy for an organization without namespaces is allowed and harmless.
    let mut lonely = OrganizationPolicy::new(
        &format!("nobody-{release}"),
        OrganizationPolicySpec { policy: Some(PolicyKind::Restricted), ..Default::default() },
    );
    lonely.metadata.labels = Some(BTreeMap::from([(RUN_LABEL.to_string(), release.clone())]));
    as_org_admin.create(&PostParams::default(), &lonely).await.expect("an empty organization's policy");
    let _operator = Operator::start_with(&["--selector", &format!("{RUN_LABEL}={release}")]).await;
    eventually("the empty organization's policy to be in force", TIMEOUT, || async {
        let p = as_org_admin.get(&lonely.name_any()).await.ok()?;
        (p.status?.policy == Some(PolicyKind::Restricted)).then_some(())
    })
    .await;
    for name in ["orgrbac-org".to_string(), lonely.name_any()] {
        let _ = as_org_admin.delete(&name, &DeleteParams::default()).await;
    }
    ns.delete().await;
}

/// The guide's walkthrough (docs/guide.md) (examples/organization-policy): a Restricted
/// organization grants its internal app, refuses the external one with the
/// command, grants it once allowlisted, and holds scopes it asks for later.
#[tokio::test]
async fn the_organization_policy_walkthrough_works_as_the_readme_shows() {
    let admin = control_plane().client().await;
    install_registrar(&admin).await;
    let _operator = Operator::start_with(&["--selector", "app.kubernetes.io/part-of=registrar-policy-example"]).await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/organization-policy");
    let out = control_plane().kubectl().args(["apply", "-f"]).arg(&examples).output().expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sales = TestNamespace { name: "globex-sales".into(), client: admin.clone() };
    wait_consent(&sales, "payroll", "Granted").await;
    let refused = wait_consent(&sales, "vendor-analytics", "NotAllowlisted").await;
    run_printed(command_in(&granted(&refused).expect("condition").2));
    assert_eq!(scopes(&wait_consent(&sales, "vendor-analytics", "Granted").await).0, ["reports.read"]);
    let more = Patch::Merge(json!({ "spec": { "oauthScopes": ["reports.read", "reports.export"] } }));
    Api::<AppRegistration>::namespaced(admin.clone(), PLATFORM)
        .patch("vendor-analytics", &PatchParams::default(), &more)
        .await
        .expect("more scopes");
    eventually("reports.export to be held", TIMEOUT, || async {
        let c = wait_consent(&sales, "vendor-analytics", "Granted").await;
        (scopes(&c).2 == ["reports.export"]).then_some(())
    })
    .await;
    // Leave the example as it was for the next run.
    let _ = Api::<OrganizationPolicy>::all(admin.clone()).delete("globex", &DeleteParams::default()).await;
    for ns in ["globex-hr", "globex-sales"] {
        let _ =
            Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone()).delete(ns, &DeleteParams::default()).await;
    }
    let _ =
        Api::<AppRegistration>::namespaced(admin, PLATFORM).delete("vendor-analytics", &DeleteParams::default()).await;
}
