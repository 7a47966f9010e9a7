//! Groups, organizations and consent against a real apiserver: one operator
//! per test watches all namespaces but manages only the test's own objects
//! (a label selector), so tests can run side by side.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::api::{AppConsent, AppConsentSpec, AppRef, AppRegistration, ConsentSummary, Scope};
use serde_json::json;

use super::registration::{confidential, is_ready, status, wait_app};
use crate::support::{TestNamespace, eventually, gitops_apply, install_registrar, operator::Operator};

const TIMEOUT: Duration = Duration::from_secs(60);
const RUN_LABEL: &str = "e2e.registrar.dev/run";
const ORG_LABEL: &str = "registrar.dev/organization";

/// One test's world: namespaces in two organizations and one without a label,
/// and an operator managing only objects labelled with this test's run id.
struct World {
    run: String,
    acme: String,
    team_a: TestNamespace,
    team_b: TestNamespace,
    team_c: TestNamespace,
    other: TestNamespace,
    plain: TestNamespace,
    operator: Operator,
}

impl World {
    async fn new() -> Self {
        let run = format!("{:08x}", rand::random::<u32>());
        let acme = format!("acme-{run}");
        let globex = format!("globex-{run}");
        let team_a = TestNamespace::labelled("team-a", &[(ORG_LABEL, &acme)]).await;
        install_registrar(&team_a.client).await;
        let team_b = TestNamespace::labelled("team-b", &[(ORG_LABEL, &acme)]).await;
        let team_c = TestNamespace::labelled("team-c", &[(ORG_LABEL, &acme)]).await;
        let other = TestNamespace::labelled("other", &[(ORG_LABEL, &globex)]).await;
        let plain = TestNamespace::new("plain").await;
        let selector = format!("{RUN_LABEL}={run}");
        let default_org = format!("default-{run}");
        let operator = Operator::start_with(&["--selector", &selector, "--default-organization", &default_org]).await;
        World { run, acme, team_a, team_b, team_c, other, plain, operator }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(RUN_LABEL.to_string(), self.run.clone())])
    }

    async fn app(&self, ns: &TestNamespace, name: &str, scope: Scope, scopes: &[&str]) -> AppRegistration {
        let mut app = confidential(name);
        app.metadata.labels = Some(self.labels());
        app.spec.scope = scope;
        app.spec.oauth_scopes = scopes.iter().map(|s| s.to_string()).collect();
        gitops_apply(&ns.api(), &app).await.expect("apply app");
        wait_app(ns, name, &format!("app {name} Ready"), is_ready).await
    }

    async fn consent(&self, ns: &TestNamespace, app_ns: &TestNamespace, app: &str, scopes: Option<&[&str]>) {
        let consent = AppConsent {
            metadata: ObjectMeta { name: Some(app.into()), labels: Some(self.labels()), ..Default::default() },
            spec: AppConsentSpec {
                app_ref: AppRef { namespace: app_ns.name.clone(), name: app.into() },
                oauth_scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
            },
            status: None,
        };
        ns.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("create consent");
    }

    async fn delete(self) {
        drop(self.operator);
        for ns in [self.team_a, self.team_b, self.team_c, self.other, self.plain] {
            ns.delete().await;
        }
    }
}

fn granted(consent: &AppConsent) -> Option<(String, String)> {
    let c = consent.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Granted")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Waits until the consent named `app` in `ns` has Granted with this status and reason.
async fn wait_consent(ns: &TestNamespace, name: &str, want: (&str, &str)) -> AppConsent {
    let consents = ns.api::<AppConsent>();
    let what = format!("consent {}/{name} to be Granted={} ({})", ns.name, want.0, want.1);
    eventually(&what, TIMEOUT, || async {
        let consent = consents.get(name).await.ok()?;
        let (status, reason) = granted(&consent)?;
        let current = consent.status.as_ref()?.observed_generation == consent.metadata.generation;
        (current && status == want.0 && reason == want.1).then_some(consent)
    })
    .await
}

async fn wait_consents(world: &World, app: &str, namespaces: &[&TestNamespace]) -> AppRegistration {
    let mut want: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    want.sort();
    let expected = (!want.is_empty()).then(|| ConsentSummary { count: want.len() as i64, namespaces: want.clone() });
    wait_app(&world.team_a, app, &format!("status.consents of {app} to be {want:?}"), |a| {
        status(a).consents == expected
    })
    .await
}

async fn relabel(ns: &TestNamespace, org: &str) {
    let patch = Patch::Merge(json!({ "metadata": { "labels": { ORG_LABEL: org } } }));
    Api::<Namespace>::all(ns.client.clone()).patch(&ns.name, &PatchParams::default(), &patch).await.expect("relabel");
}

#[tokio::test]
async fn organization_app_is_granted_inside_its_organization_only() {
    let world = World::new().await;
    let app = world.app(&world.team_a, "billing", Scope::Organization, &["read", "write"]).await;
    world.consent(&world.team_b, &world.team_a, "billing", None).await;
    world.consent(&world.other, &world.team_a, "billing", None).await;
    world.consent(&world.plain, &world.team_a, "billing", None).await;

    let granted_b = wait_consent(&world.team_b, "billing", ("True", "Granted")).await;
    let st = granted_b.status.clone().expect("status");
    assert_eq!(st.client_id, status(&app).client_id);
    assert_eq!(st.display_name.as_deref(), Some("App billing"));
    assert_eq!(st.granted_scopes, ["read", "write"]);
    assert_eq!(st.app, Some(format!("{}/billing", world.team_a.name)));
    let other = wait_consent(&world.other, "billing", ("False", "NotVisible")).await;
    assert_reveals_nothing(&other, &app, &world.acme);
    wait_consent(&world.plain, "billing", ("False", "NotVisible")).await;
    wait_consents(&world, "billing", &[&world.team_b]).await;
    world.delete().await;
}

#[tokio::test]
async fn group_and_global_apps_follow_their_scope() {
    let world = World::new().await;
    world.app(&world.team_a, "local", Scope::Group, &[]).await;
    world.consent(&world.team_b, &world.team_a, "local", None).await;
    world.consent(&world.team_a, &world.team_a, "local", None).await;
    wait_consent(&world.team_b, "local", ("False", "NotVisible")).await;
    wait_consent(&world.team_a, "local", ("True", "Granted")).await;

    // Global apps live in the platform namespace and are visible everywhere.
    let platform = Api::<Namespace>::all(world.team_a.client.clone());
    let ns = Namespace {
        metadata: ObjectMeta { name: Some("registrar-system".into()), ..Default::default() },
        ..Default::default()
    };
    let _ = platform.create(&PostParams::default(), &ns).await; // shared by tests; may exist
    let platform_ns = TestNamespaceRef("registrar-system".into(), world.team_a.client.clone());
    let global_name = format!("global-{}", world.run);
    let mut app = confidential(&global_name);
    app.metadata.labels = Some(world.labels());
    app.spec.scope = Scope::Global;
    gitops_apply(&platform_ns.apps(), &app).await.expect("apply Global app in the platform namespace");
    let consent = AppConsent {
        metadata: ObjectMeta { name: Some("global".into()), labels: Some(world.labels()), ..Default::default() },
        spec: AppConsentSpec {
            app_ref: AppRef { namespace: "registrar-system".into(), name: global_name.clone() },
            oauth_scopes: None,
        },
        status: None,
    };
    world.other.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("create consent");
    wait_consent(&world.other, "global", ("True", "Granted")).await;
    platform_ns.apps().delete(&global_name, &DeleteParams::default()).await.expect("delete Global app");
    wait_consent(&world.other, "global", ("False", "AppRevoked")).await;
    world.delete().await;
}

/// The platform namespace is shared by tests; this names it without owning it.
struct TestNamespaceRef(String, kube::Client);

impl TestNamespaceRef {
    fn apps(&self) -> Api<AppRegistration> {
        Api::namespaced(self.1.clone(), &self.0)
    }
}

#[tokio::test]
async fn relabelling_a_namespace_moves_it_in_and_out_of_visibility() {
    let world = World::new().await;
    world.app(&world.team_a, "billing", Scope::Organization, &["read"]).await;
    world.consent(&world.team_b, &world.team_a, "billing", None).await;
    wait_consent(&world.team_b, "billing", ("True", "Granted")).await;

    relabel(&world.team_b, &format!("globex-{}", world.run)).await;
    wait_consent(&world.team_b, "billing", ("False", "NotVisible")).await;
    wait_consents(&world, "billing", &[]).await;

    relabel(&world.team_b, &world.acme).await;
    let back = wait_consent(&world.team_b, "billing", ("True", "Granted")).await;
    assert_eq!(back.status.expect("status").granted_scopes, ["read"]);
    wait_consents(&world, "billing", &[&world.team_b]).await;
    world.delete().await;
}

/// A consent to an app its namespace may not see learns nothing of the app
/// beyond NotVisible: no Client ID, display name or organization.
fn assert_reveals_nothing(consent: &AppConsent, app: &AppRegistration, app_org: &str) {
    let st = consent.status.clone().expect("status");
    assert_eq!((st.client_id.as_deref(), st.display_name.as_deref()), (None, None), "{st:?}");
    assert!(st.granted_scopes.is_empty(), "{st:?}");
    let text = serde_json::to_string(&st).expect("serialize");
    let client_id = status(app).client_id.expect("the app is issued");
    for revealing in [client_id.as_str(), app.spec.display_name.as_str(), app_org] {
        assert!(!text.contains(revealing), "{revealing:?} in {text}");
    }
}

/// Not even while the app is being deleted does a namespace that may not see
/// it learn its Client ID (a namespace that may see it learns it was revoked).
#[tokio::test]
async fn a_consent_to_an_app_it_may_not_see_learns_nothing_even_during_deletion() {
    const HOLD: &str = "e2e.registrar.dev/hold";
    let world = World::new().await;
    let app = world.app(&world.team_a, "billing", Scope::Organization, &["read"]).await;
    world.consent(&world.team_b, &world.team_a, "billing", None).await;
    wait_consent(&world.team_b, "billing", ("True", "Granted")).await;

    // Keep the app in its deletion: registrar revokes it and lets go, the hold stays.
    let apps = world.team_a.api::<AppRegistration>();
    let hold = Patch::Merge(json!({ "metadata": { "finalizers": ["registrar.dev/revoke", HOLD] } }));
    apps.patch("billing", &PatchParams::default(), &hold).await.expect("hold");
    apps.delete("billing", &DeleteParams::default()).await.expect("delete");
    wait_consent(&world.team_b, "billing", ("False", "AppRevoked")).await;
    eventually("registrar to release the app", TIMEOUT, || async {
        let app = apps.get("billing").await.ok()?;
        (app.finalizers() == [HOLD]).then_some(())
    })
    .await;

    world.consent(&world.other, &world.team_a, "billing", None).await;
    world.consent(&world.plain, &world.team_a, "billing", None).await;
    for ns in [&world.other, &world.plain] {
        let consent = wait_consent(ns, "billing", ("False", "NotVisible")).await;
        assert_reveals_nothing(&consent, &app, &world.acme);
    }

    let release = Patch::Merge(json!({ "metadata": { "finalizers": null } }));
    apps.patch("billing", &PatchParams::default(), &release).await.expect("release");
    world.delete().await;
}

#[tokio::test]
async fn deleting_the_app_revokes_every_consent_and_a_new_app_does_not_revive_them() {
    let world = World::new().await;
    world.app(&world.team_a, "billing", Scope::Organization, &[]).await;
    world.consent(&world.team_b, &world.team_a, "billing", None).await;
    world.consent(&world.team_c, &world.team_a, "billing", None).await;
    wait_consent(&world.team_b, "billing", ("True", "Granted")).await;
    wait_consent(&world.team_c, "billing", ("True", "Granted")).await;

    world.team_a.api::<AppRegistration>().delete("billing", &DeleteParams::default()).await.expect("delete app");
    let started = tokio::time::Instant::now();
    wait_consent(&world.team_b, "billing", ("False", "AppRevoked")).await;
    wait_consent(&world.team_c, "billing", ("False", "AppRevoked")).await;
    eprintln!("every consent AppRevoked {:?} after the delete", started.elapsed());

    // A new app with the same name gets a new Client ID; the old consents stay revoked.
    eventually("the old app to be gone", TIMEOUT, || async {
        world.team_a.api::<AppRegistration>().get_opt("billing").await.ok()?.is_none().then_some(())
    })
    .await;
    let reconciles = world.operator.metric("registrar_reconciliations_total{controller=\"appconsent\"}").await;
    let new_app = world.app(&world.team_a, "billing", Scope::Organization, &[]).await;
    eventually("the consents to be re-evaluated against the new app", TIMEOUT, || async {
        (world.operator.metric("registrar_reconciliations_total{controller=\"appconsent\"}").await >= reconciles + 2.0)
            .then_some(())
    })
    .await;
    for ns in [&world.team_b, &world.team_c] {
        let consent = wait_consent(ns, "billing", ("False", "AppRevoked")).await;
        assert_ne!(consent.status.expect("status").client_id, status(&new_app).client_id);
    }
    wait_consents(&world, "billing", &[]).await;
    world.delete().await;
}

#[tokio::test]
async fn removing_one_consent_drops_only_that_namespace() {
    let world = World::new().await;
    world.app(&world.team_a, "billing", Scope::Organization, &[]).await;
    world.consent(&world.team_b, &world.team_a, "billing", None).await;
    world.consent(&world.team_c, &world.team_a, "billing", None).await;
    wait_consents(&world, "billing", &[&world.team_b, &world.team_c]).await;

    world.team_b.api::<AppConsent>().delete("billing", &DeleteParams::default()).await.expect("remove consent");
    let app = wait_consents(&world, "billing", &[&world.team_c]).await;
    assert!(is_ready(&app), "the app is untouched");
    wait_consent(&world.team_c, "billing", ("True", "Granted")).await;
    world.delete().await;
}

#[tokio::test]
async fn consent_before_the_app_and_scope_changes() {
    let world = World::new().await;
    // A consent created first waits for its app.
    world.consent(&world.team_b, &world.team_a, "billing", None).await;
    wait_consent(&world.team_b, "billing", ("False", "AppNotFound")).await;
    world.app(&world.team_a, "billing", Scope::Organization, &["read", "write"]).await;
    let consent = wait_consent(&world.team_b, "billing", ("True", "Granted")).await;
    assert_eq!(consent.status.expect("status").granted_scopes, ["read", "write"]);

    // Narrowed: the grant shrinks to the intersection.
    world.app(&world.team_a, "billing", Scope::Organization, &["read"]).await;
    let consents = world.team_b.api::<AppConsent>();
    eventually("granted scopes to shrink", TIMEOUT, || async {
        let st = consents.get("billing").await.ok()?.status?;
        (st.granted_scopes == ["read"]).then_some(())
    })
    .await;
    // Widened: nothing new is granted until asked for; the new scope is pending.
    world.app(&world.team_a, "billing", Scope::Organization, &["read", "admin"]).await;
    let st = eventually("the new scope to be pending", TIMEOUT, || async {
        let st = consents.get("billing").await.ok()?.status?;
        (st.pending_scopes == ["admin"]).then_some(st)
    })
    .await;
    assert_eq!(st.granted_scopes, ["read"]);
    assert!(st.conditions[0].message.contains("pending"), "{}", st.conditions[0].message);
    // Asking for it grants it.
    let patch = Patch::Merge(json!({ "spec": { "oauthScopes": ["read", "admin"] } }));
    consents.patch("billing", &PatchParams::default(), &patch).await.expect("accept the new scope");
    eventually("the accepted scope to be granted", TIMEOUT, || async {
        let st = consents.get("billing").await.ok()?.status?;
        (st.granted_scopes == ["admin", "read"] && st.pending_scopes.is_empty()).then_some(())
    })
    .await;

    // Asking for a scope the app never offered: ScopeMismatch.
    world.consent(&world.team_c, &world.team_a, "billing", Some(&["delete"])).await;
    let mismatch = wait_consent(&world.team_c, "billing", ("False", "ScopeMismatch")).await;
    assert!(mismatch.status.expect("status").conditions[0].message.contains("delete"));
    world.delete().await;
}

/// The guide's walkthrough (docs/guide.md): examples/organizations applied as is.
#[tokio::test]
async fn organization_examples_work_as_the_readme_shows() {
    let admin = crate::support::control_plane().client().await;
    install_registrar(&admin).await;
    let operator = Operator::start_with(&["--selector", "app.kubernetes.io/part-of=registrar-example"]).await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/organizations");
    let out = crate::support::control_plane().kubectl().args(["apply", "-f"]).arg(&examples).output().expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (ns, name) in [("team-b", "billing-portal"), ("team-b", "company-directory")] {
        let consents: Api<AppConsent> = Api::namespaced(admin.clone(), ns);
        eventually(&format!("consent {ns}/{name} to be granted"), TIMEOUT, || async {
            let consent = consents.get(name).await.ok()?;
            (granted(&consent)? == ("True".to_string(), "Granted".to_string())).then_some(())
        })
        .await;
    }
    let billing: Api<AppRegistration> = Api::namespaced(admin.clone(), "team-a");
    eventually("billing-portal to list team-b as consenting", TIMEOUT, || async {
        let app = billing.get("billing-portal").await.ok()?;
        (status(&app).consents?.namespaces == ["team-b"]).then_some(())
    })
    .await;
    let out = crate::support::control_plane()
        .kubectl()
        .args(["get", "appconsents", "-n", "team-b"])
        .output()
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .eq(["NAME", "APP", "CLIENT", "ID", "GRANTED", "REASON", "AGE"]),
        "{table}"
    );
    drop(operator);
}
