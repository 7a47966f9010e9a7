//! Ownership and portability on the real control plane: imported Client IDs
//! (`spec.clientId`), `deletionPolicy: Retain` and the take-over of what was
//! retained, at the registry and at a real Ory Hydra, attacked as a tenant.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use registrar::api::{AppRegistration, DeletionPolicy, GrantType};
use serde_json::json;

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, credentials, ready_reason, secret_value, status, wait_app, wait_event, wait_issued},
    eventually, free_port,
    hydra::Hydra,
    install_registrar,
    operator::Operator,
    registry::Caller,
    tenants::Tenants,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn not_ready(app: &AppRegistration, reason: &str) -> bool {
    ready_reason(app).is_some_and(|(s, r, _)| s == "False" && r == reason)
}

/// An imported Client ID is issued as given, fixed at creation (the
/// apiserver refuses a change; it may be added later only as the Client ID
/// the app has), and unique: another namespace importing it, or importing a
/// minted Client ID of another app, gets ClientIdConflict and nothing, and
/// learns nothing of who holds it.
#[tokio::test]
async fn imported_client_ids_are_issued_unique_and_fixed_at_creation() {
    let t = Tenants::new("import").await;
    let imported = format!("legacy-portal-{}", t.run);
    let mut moved = t.labelled(confidential("moved"));
    moved.spec.client_id = Some(imported.clone());
    apply(&t.b, &moved).await;
    let (app, secret) = wait_issued(&t.b, "moved").await;
    assert_eq!(status(&app).client_id.as_deref(), Some(imported.as_str()));
    assert_eq!(secret_value(&secret, "client_id").as_deref(), Some(imported.as_str()));
    let value = secret_value(&secret, "client_secret").expect("a minted secret");
    eventually("the imported Client ID to authenticate", TIMEOUT, || async {
        t.authenticates(&imported, &value).await.then_some(())
    })
    .await;

    // Fixed at creation: a change is refused by the apiserver, with the rule's message.
    let change = Patch::Merge(json!({ "spec": { "clientId": "something-else" } }));
    let refused = t.b.api::<AppRegistration>().patch("moved", &PatchParams::default(), &change).await;
    let message = format!("{refused:?}");
    assert!(message.contains("spec.clientId is set at creation only"), "{message}");
    // Pinning a minted Client ID in the manifest is allowed; any other value is not.
    let billing = t.b.api::<AppRegistration>();
    let other = Patch::Merge(json!({ "spec": { "clientId": "not-its-own" } }));
    assert!(billing.patch("billing", &PatchParams::default(), &other).await.is_err());
    let pin = Patch::Merge(json!({ "spec": { "clientId": t.victim_client_id } }));
    billing.patch("billing", &PatchParams::default(), &pin).await.expect("pinning its own Client ID");
    wait_app(&t.b, "billing", "the pinned app to stay issued", |a| {
        status(a).client_id.as_deref() == Some(t.victim_client_id.as_str())
            && ready_reason(a).is_some_and(|r| r.0 == "True")
    })
    .await;

    // Mallory, in A, imports B's Client IDs: the imported one and the minted one.
    for (name, id) in [("grab-imported", imported.clone()), ("grab-minted", t.victim_client_id.clone())] {
        let mut grab = t.labelled(confidential(name));
        grab.spec.client_id = Some(id.clone());
        let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
        crate::support::gitops_apply(&apps, &grab).await.expect("mallory may create apps in A");
        let refused = wait_app(&t.a, name, "the import to be refused", |a| not_ready(a, "ClientIdConflict")).await;
        let (_, _, message) = ready_reason(&refused).expect("condition");
        assert!(message.contains(&id) && message.contains("not available"), "{message}");
        assert!(!message.contains(&t.b.name), "the holder's namespace is not told: {message}");
        assert_eq!(status(&refused).client_id, None, "nothing issued");
        assert!(credentials(&t.a, &format!("{name}-credentials")).await.is_none(), "no Secret");
    }
    t.assert_victim_intact("not-the-secret").await;
    assert!(t.authenticates(&imported, &value).await);
    t.delete().await;
}

/// A namespace with an operator serving the registry and registering at a
/// real Hydra (comparison every second).
async fn retaining(prefix: &str) -> (TestNamespace, Hydra, Operator, Caller) {
    let ns = TestNamespace::new(prefix).await;
    install_registrar(&ns.client).await;
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> =
        ["--watch-namespace", &ns.name, "--registry-addr", &addr, "--registry-insecure-http"].map(String::from).into();
    args.extend(hydra.operator_args("1s"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&args).await;
    let caller = Caller::new(&ns, port).await;
    (ns, hydra, operator, caller)
}

/// Waits for `n` more comparisons with Hydra than `before`.
async fn comparisons(operator: &Operator, after: f64) {
    eventually("two more comparisons with Hydra", TIMEOUT, || async {
        let done = operator.metric("registrar_authserver_calls_total{call=\"list\",outcome=\"ok\"}").await;
        (done >= after + 2.0).then_some(())
    })
    .await;
}

/// The GitOps delete and re-create: an app with `deletionPolicy: Retain`
/// (its minted Client ID pinned in the manifest) is pruned; its Secret stays
/// (no longer owned), the registry still authenticates it, Hydra keeps the
/// client through its comparisons; the same manifest applied again takes it
/// over with the same Client ID and secret. A second time under a new name,
/// the new app's Secret gets the secret and the retained one goes.
#[tokio::test]
async fn retain_then_recreate_keeps_the_client_id_and_secret() {
    let (ns, hydra, operator, caller) = retaining("retain").await;
    let mut manifest = confidential("portal");
    manifest.spec.grant_types = Some(vec![GrantType::ClientCredentials]);
    manifest.spec.deletion_policy = Some(DeletionPolicy::Retain);
    apply(&ns, &manifest).await;
    let (app, secret) = wait_issued(&ns, "portal").await;
    let id = status(&app).client_id.expect("a Client ID");
    let value = secret_value(&secret, "client_secret").expect("secret");
    manifest.spec.client_id = Some(id.clone()); // pinned, as docs/guide.md advises
    apply(&ns, &manifest).await;
    eventually("the client at Hydra", TIMEOUT, || async { hydra.client(&id).await.map(|_| ()) }).await;

    // Pruned.
    let apps = ns.api::<AppRegistration>();
    apps.delete("portal", &DeleteParams::default()).await.expect("delete");
    eventually("the app to be gone", TIMEOUT, || async { apps.get_opt("portal").await.ok()?.is_none().then_some(()) })
        .await;
    wait_event(&ns, "Retained", &id).await;
    let kept = credentials(&ns, "portal-credentials").await.expect("the Secret is kept");
    assert!(kept.owner_references().is_empty(), "no longer owned: the garbage collector leaves it");
    assert_eq!(kept.annotations().get("registrar.dev/retained-client-id"), Some(&id));
    assert!(
        secret_value(&kept, "client_secret").as_deref() == Some(value.as_str()),
        "not the same secret (values not printed)"
    );
    // The registry reads the operator's caches, a moment behind the apiserver.
    eventually("the retained client to authenticate", TIMEOUT, || async {
        let (code, answer) = caller.authenticate(&id, &value).await;
        (code.is_success() && answer["state"] == json!("retained")).then_some(())
    })
    .await;
    assert_eq!(caller.lookup(&id).await.1["state"], json!("retained"));
    let listed = operator.metric("registrar_authserver_calls_total{call=\"list\",outcome=\"ok\"}").await;
    comparisons(&operator, listed).await;
    assert!(hydra.client(&id).await.is_some(), "Hydra keeps a retained client through the comparisons");
    assert_eq!(hydra.client_credentials(&id, &value, "read").await.0, 200);

    // Re-created from the same manifest: taken over, same Client ID and secret.
    apply(&ns, &manifest).await;
    let again = wait_app(&ns, "portal", "the take-over", |a| ready_reason(a).is_some_and(|r| r.0 == "True")).await;
    assert_eq!(status(&again).client_id.as_deref(), Some(id.as_str()));
    wait_event(&ns, "TakenOver", &id).await;
    let owned = credentials(&ns, "portal-credentials").await.expect("Secret");
    assert!(
        secret_value(&owned, "client_secret").as_deref() == Some(value.as_str()),
        "not the same secret (values not printed)"
    );
    assert_eq!(owned.owner_references().len(), 1, "owned by the new app");
    assert!(!owned.annotations().contains_key("registrar.dev/retained-client-id"), "no longer retained");
    eventually("the registry to serve the app again", TIMEOUT, || async {
        (caller.authenticate(&id, &value).await.1["state"] == json!("active")).then_some(())
    })
    .await;
    eventually("Hydra to give tokens to the same secret", TIMEOUT, || async {
        (hydra.client_credentials(&id, &value, "read").await.0 == 200).then_some(())
    })
    .await;

    // Again, and re-created under another name: the new Secret, the old one gone.
    apps.delete("portal", &DeleteParams::default()).await.expect("delete");
    eventually("the app to be gone", TIMEOUT, || async { apps.get_opt("portal").await.ok()?.is_none().then_some(()) })
        .await;
    let mut renamed = manifest.clone();
    renamed.metadata.name = Some("portal-v2".into());
    apply(&ns, &renamed).await;
    let v2 = wait_app(&ns, "portal-v2", "the take-over", |a| ready_reason(a).is_some_and(|r| r.0 == "True")).await;
    assert_eq!(status(&v2).client_id.as_deref(), Some(id.as_str()));
    let v2_secret = credentials(&ns, "portal-v2-credentials").await.expect("the new app's Secret");
    assert!(
        secret_value(&v2_secret, "client_secret").as_deref() == Some(value.as_str()),
        "not the same secret (values not printed)"
    );
    eventually("the retained Secret to go", TIMEOUT, || async {
        credentials(&ns, "portal-credentials").await.is_none().then_some(())
    })
    .await;
    // Deleted with Revoke now: gone everywhere.
    let revoke = Patch::Merge(json!({ "spec": { "deletionPolicy": "Revoke" } }));
    apps.patch("portal-v2", &PatchParams::default(), &revoke).await.expect("switch to Revoke");
    wait_app(&ns, "portal-v2", "the edit", |a| ready_reason(a).is_some_and(|r| r.0 == "True")).await;
    apps.delete("portal-v2", &DeleteParams::default()).await.expect("delete");
    eventually("the client to be gone from Hydra", TIMEOUT, || async {
        hydra.client(&id).await.is_none().then_some(())
    })
    .await;
    eventually("the registry to refuse the revoked client", TIMEOUT, || async {
        (caller.authenticate(&id, &value).await.0.as_u16() == 401).then_some(())
    })
    .await;
    ns.delete().await;
}

/// Writes the source Secret `name` holding `value` under `client_secret`.
async fn put_source(ns: &TestNamespace, name: &str, value: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some([("client_secret".to_string(), value.to_string())].into()),
        ..Default::default()
    };
    let body = serde_json::to_value(&secret).expect("secret");
    let body =
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": body["metadata"], "stringData": body["stringData"] });
    ns.api::<Secret>()
        .patch(name, &PatchParams::apply("e2e-external-secrets").force(), &Patch::Apply(body))
        .await
        .expect("write the source Secret");
}

/// A client moves in completely: an imported Client ID and a secret of the
/// user's choice from a Secret they provide (as External Secrets would write
/// it). Nothing is issued while that Secret is missing; once there, its value
/// is issued; a new value is a rotation (with its grace period); a weak value
/// is refused with the reason, and the issued secret keeps working. No value
/// appears in the log, Events or status.
#[tokio::test]
async fn a_client_moves_in_with_its_client_id_and_a_secret_from_a_source() {
    let ns = TestNamespace::new("source").await;
    install_registrar(&ns.client).await;
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--watch-namespace",
        &ns.name,
        "--registry-addr",
        &addr,
        "--registry-insecure-http",
        "--secret-source-interval",
        "1s",
    ]
    .map(String::from)
    .into();
    args.extend(hydra.operator_args("60s"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&args).await;
    let caller = Caller::new(&ns, port).await;
    let imported = format!("billing-from-keycloak-{:06x}", rand::random::<u32>() & 0xffffff);
    let mut app = confidential("billing");
    app.spec.grant_types = Some(vec![GrantType::ClientCredentials]);
    app.spec.client_id = Some(imported.clone());
    app.spec.secret = Some(registrar::api::SecretTemplate {
        source_ref: Some(registrar::api::SecretSourceRef { name: "billing-from-vault".into(), key: None }),
        ..Default::default()
    });
    app.spec.rotation =
        Some(registrar::api::Rotation { grace_period: Some("1h".parse().expect("duration")), interval: None });
    apply(&ns, &app).await;
    let pending = wait_app(&ns, "billing", "SecretSourceMissing", |a| not_ready(a, "SecretSourceMissing")).await;
    assert!(ready_reason(&pending).expect("condition").2.contains("billing-from-vault"));
    assert_eq!(status(&pending).client_id, None, "nothing issued");
    assert!(credentials(&ns, "billing-credentials").await.is_none(), "nothing invented");

    let first = "kH3v9QmZp2Lx7TbN4cRw8YsJ1dFg6UaE0oVi5Ky";
    put_source(&ns, "billing-from-vault", first).await;
    let (issued, secret) = wait_issued(&ns, "billing").await;
    assert_eq!(status(&issued).client_id.as_deref(), Some(imported.as_str()));
    assert!(secret_value(&secret, "client_secret").as_deref() == Some(first), "the chosen secret is issued");
    eventually("the chosen secret to authenticate", TIMEOUT, || async {
        caller.authenticate(&imported, first).await.0.is_success().then_some(())
    })
    .await;
    // And at Hydra, under the imported Client ID.
    eventually("a token at Hydra for the chosen secret", TIMEOUT, || async {
        (hydra.client_credentials(&imported, first, "read").await.0 == 200).then_some(())
    })
    .await;

    // A new value at the source: a rotation, the old one kept for the grace period.
    let second = "Wq5eR8tY2uI4oP7aS1dF3gH6jK9lZ0xC2vB5nMq";
    put_source(&ns, "billing-from-vault", second).await;
    wait_app(&ns, "billing", "the rotation", |a| status(a).secret_version == Some(2)).await;
    wait_event(&ns, "Rotated", "secret.sourceRef changed").await;
    let rotated = credentials(&ns, "billing-credentials").await.expect("Secret");
    assert!(
        secret_value(&rotated, "client_secret").as_deref() == Some(second),
        "not the same secret (values not printed)"
    );
    eventually("the new secret to authenticate", TIMEOUT, || async {
        caller.authenticate(&imported, second).await.0.is_success().then_some(())
    })
    .await;
    assert!(caller.authenticate(&imported, first).await.0.is_success(), "the previous one, in its grace period");
    eventually("Hydra to hold the new secret", TIMEOUT, || async {
        (hydra.client_credentials(&imported, second, "read").await.0 == 200).then_some(())
    })
    .await;

    // A weak value: refused, nothing issued changes.
    let weak = "passwordpasswordpasswordpassword";
    put_source(&ns, "billing-from-vault", weak).await;
    let refused = wait_app(&ns, "billing", "WeakSecret", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "SecretSource" && c.status == "False" && c.reason == "WeakSecret")
        })
    })
    .await;
    assert_eq!(ready_reason(&refused).map(|r| r.0).as_deref(), Some("True"), "the issued secret still works");
    assert_eq!(status(&refused).secret_version, Some(2));
    let event = wait_event(&ns, "WeakSecret", "is refused").await;
    let note = event.message.unwrap_or_default();
    assert!(!note.contains("32 characters;") && !note.contains("guesses"), "nothing said of the value: {note}");
    assert!(caller.authenticate(&imported, second).await.0.is_success());
    assert_eq!(caller.authenticate(&imported, weak).await.0.as_u16(), 401);
    assert_eq!(hydra.client_credentials(&imported, weak, "read").await.0, 401, "Hydra never got the weak one");
    assert_eq!(hydra.client_credentials(&imported, second, "read").await.0, 200);
    let unchanged = credentials(&ns, "billing-credentials").await.expect("Secret");
    assert!(
        secret_value(&unchanged, "client_secret").as_deref() == Some(second),
        "not the same secret (values not printed)"
    );
    crate::support::apps::assert_no_leak(&ns, &operator, &[first.into(), second.into(), weak.into()]).await;
    ns.delete().await;
}

/// Binds `user` to a Role that may update AppRegistrations in `ns`.
async fn may_manage_apps(ns: &TestNamespace, user: &str) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "app-managers" },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["appregistrations"], "verbs": ["get", "update", "patch"] }]
    }))
    .expect("role");
    let _ = ns.api::<Role>().create(&kube::api::PostParams::default(), &role).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("owner-{user}") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-managers" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
    }))
    .expect("binding");
    ns.api::<RoleBinding>().create(&kube::api::PostParams::default(), &binding).await.expect("bind");
    eventually(&format!("{user} to manage apps"), TIMEOUT, || async {
        crate::support::allowed_in(&ns.client, Some(&ns.name), user, "registrar.dev", "appregistrations", "update")
            .await
            .then_some(())
    })
    .await;
}

async fn may_no_longer_manage_apps(ns: &TestNamespace, user: &str) {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    ns.api::<RoleBinding>().delete(&format!("owner-{user}"), &DeleteParams::default()).await.expect("unbind");
}

fn owner_of(app: &AppRegistration) -> Option<(String, String)> {
    let owner = app.status.as_ref()?.owner.as_ref()?;
    Some((owner.name.clone(), owner.reason.clone()))
}

fn rotation_recommended(app: &AppRegistration) -> Option<(String, String)> {
    let c = app.status.as_ref()?.conditions.iter().find(|c| c.type_ == "RotationRecommended")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The owner named in spec is in effect (a printer column, and part of the
/// registry's lookup). When their RoleBinding goes, ownership passes to the
/// organization's owner, with an Event and a condition recommending a
/// rotation, which a rotation clears; in an organization that rotates on a
/// transfer, the secret is rotated at once. An admin names a new owner by
/// editing spec.owner.
#[tokio::test]
async fn ownership_passes_to_the_organization_when_the_owner_can_no_longer_manage_the_app() {
    use registrar::api::{OrganizationPolicy, OrganizationPolicySpec, Owner};
    let run = format!("{:08x}", rand::random::<u32>());
    let org = format!("owners-{run}");
    let ns = TestNamespace::labelled("owner", &[("registrar.dev/organization", org.as_str())]).await;
    install_registrar(&ns.client).await;
    let label = ("e2e.registrar.dev/run".to_string(), run.clone());
    let selector = format!("{}={}", label.0, label.1);
    let (operator, port) =
        crate::support::registry::registry_operator(&["--selector", &selector, "--owner-check-interval", "1s"]).await;
    let caller = Caller::new(&ns, port).await;
    let admins = format!("org-admins-{run}");
    let mut policy = OrganizationPolicy::new(
        &org,
        OrganizationPolicySpec { owner: Some(Owner::group(admins.clone())), ..Default::default() },
    );
    policy.metadata.labels = Some([label.clone()].into());
    let policies: Api<OrganizationPolicy> = Api::all(ns.client.clone());
    policies.create(&kube::api::PostParams::default(), &policy).await.expect("policy");

    let (olivia, nadia, omar) = (format!("olivia-{run}"), format!("nadia-{run}"), format!("omar-{run}"));
    for user in [&olivia, &nadia, &omar] {
        may_manage_apps(&ns, user).await;
    }
    let owned = |name: &str, owner: &str| {
        let mut app = confidential(name);
        app.metadata.labels = Some([label.clone()].into());
        app.spec.owner = Some(Owner::user(owner));
        app
    };
    apply(&ns, &owned("ledger", &olivia)).await;
    let ledger =
        wait_app(&ns, "ledger", "olivia to own it", |a| owner_of(a) == Some((olivia.clone(), "Specified".into())))
            .await;
    let id = status(&ledger).client_id.expect("id");
    let table = crate::support::control_plane()
        .kubectl()
        .args(["get", "appreg", "ledger", "-n", &ns.name])
        .output()
        .expect("kubectl");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().next().unwrap_or_default().contains("OWNER") && table.contains(&olivia), "{table}");
    eventually("the owner in the registry's lookup", TIMEOUT, || async {
        (caller.lookup(&id).await.1["owner"]["name"] == json!(olivia)).then_some(())
    })
    .await;

    // Olivia loses the right: ownership passes to the organization's owner.
    may_no_longer_manage_apps(&ns, &olivia).await;
    let moved =
        wait_app(&ns, "ledger", "the transfer", |a| owner_of(a) == Some((admins.clone(), "Transferred".into()))).await;
    let owner = status(&moved).owner.expect("owner");
    assert_eq!(owner.transferred_from.as_deref(), Some(format!("User {olivia}").as_str()));
    assert_eq!(rotation_recommended(&moved), Some(("True".into(), "OwnerTransferred".into())));
    assert_eq!(status(&moved).secret_version, Some(1), "recommended, not rotated");
    wait_event(&ns, "OwnerTransferred", &olivia).await;
    // A rotation clears the recommendation.
    let rotate = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "after-transfer" } } }));
    ns.api::<AppRegistration>().patch("ledger", &PatchParams::default(), &rotate).await.expect("rotate");
    wait_app(&ns, "ledger", "the recommendation to clear", |a| {
        rotation_recommended(a) == Some(("False".into(), "Rotated".into()))
    })
    .await;
    // An admin names a new owner.
    apply(&ns, &owned("ledger", &nadia)).await;
    wait_app(&ns, "ledger", "nadia to own it", |a| owner_of(a) == Some((nadia.clone(), "Specified".into()))).await;

    // An organization that rotates on a transfer.
    let rotating = Patch::Merge(json!({ "spec": { "rotateOnOwnerTransfer": true } }));
    policies.patch(&org, &PatchParams::default(), &rotating).await.expect("policy");
    apply(&ns, &owned("vault", &omar)).await;
    let (vault, _) = wait_issued(&ns, "vault").await;
    assert_eq!(status(&vault).secret_version, Some(1));
    wait_app(&ns, "vault", "omar to own it", |a| owner_of(a) == Some((omar.clone(), "Specified".into()))).await;
    may_no_longer_manage_apps(&ns, &omar).await;
    let rotated = wait_app(&ns, "vault", "the transfer with a rotation", |a| {
        owner_of(a).is_some_and(|(_, r)| r == "Transferred") && status(a).secret_version == Some(2)
    })
    .await;
    assert_eq!(rotation_recommended(&rotated).map(|r| r.0).as_deref(), Some("False"), "rotated: nothing to recommend");
    wait_event(&ns, "Rotated", "ownership passed").await;
    let _ = policies.delete(&org, &DeleteParams::default()).await;
    drop(operator);
    ns.delete().await;
}

/// Runs kubectl as docs/guide.md shows it (with `input` on stdin) and returns
/// its standard output; fails the test with its error output otherwise.
fn kubectl(args: &[&str], input: Option<&str>) -> String {
    use std::{io::Write, process::Stdio};
    let mut child = crate::support::control_plane()
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.unwrap_or_default().as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guide's walkthrough (docs/guide.md) (examples/portability): an existing client moves
/// in with its Client ID and its secret, the source rotates it, a delete and
/// re-create keeps both, and ownership passes to the organization's owner
/// when the owning group's RoleBinding goes.
#[tokio::test]
async fn the_moving_clients_walkthrough_works_as_the_readme_shows() {
    let admin = crate::support::control_plane().client().await;
    install_registrar(&admin).await;
    let _operator = Operator::start_with(&[
        "--selector",
        "app.kubernetes.io/part-of=registrar-portability-example",
        "--owner-check-interval",
        "1s",
        "--secret-source-interval",
        "1s",
    ])
    .await;
    let ns = TestNamespace { name: "initech-billing".into(), client: admin.clone() };
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portability");
    // The namespace first: the rest lands in it.
    kubectl(&["apply", "-f", &format!("{examples}/00-namespace.yaml")], None);
    kubectl(&["apply", "-f", examples], None);

    let (app, secret) = wait_issued(&ns, "invoicing").await;
    assert_eq!(status(&app).client_id.as_deref(), Some("initech-invoicing-2019"));
    assert_eq!(secret_value(&secret, "client_id").as_deref(), Some("initech-invoicing-2019"));
    let source = kubectl(
        &["get", "secret", "-n", "initech-billing", "invoicing-client-secret", "-o", "jsonpath={.data.client_secret}"],
        None,
    );
    let chosen = secret_value(&secret, "client_secret").expect("the secret");
    assert_eq!(
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &chosen),
        source,
        "the source's secret is issued"
    );
    let owned = wait_app(&ns, "invoicing", "the group to own it", |a| {
        owner_of(a).is_some_and(|(n, _)| n == "initech-billing-admins")
    })
    .await;
    assert_eq!(owner_of(&owned).map(|o| o.1).as_deref(), Some("Specified"));
    let table = kubectl(&["get", "appreg", "-n", "initech-billing", "invoicing"], None);
    assert!(table.contains("initech-billing-admins") && table.contains("initech-invoicing-2019"), "{table}");

    // The secret store rotates: a new value at the source.
    let set_source = |value: &str| {
        let literal = format!("--from-literal=client_secret={value}");
        let create = ["create", "secret", "generic", "invoicing-client-secret", "-n", "initech-billing"];
        let manifest = kubectl(&[&create[..], &[&literal, "--dry-run=client", "-o", "yaml"]].concat(), None);
        kubectl(&["apply", "-f", "-"], Some(&manifest));
    };
    let fresh = format!("{}{}", rand::random::<u128>(), rand::random::<u128>());
    set_source(&fresh);
    let rotated =
        wait_app(&ns, "invoicing", "the rotation from the source", |a| status(a).secret_version == Some(2)).await;
    wait_event(&ns, "Rotated", "version 2: the secret in secret.sourceRef changed").await;
    let (_, secret) = wait_issued(&ns, "invoicing").await;
    assert!(
        secret_value(&secret, "client_secret").as_deref() == Some(fresh.as_str()),
        "not the same secret (values not printed)"
    );

    // A GitOps prune and the same manifest again: same Client ID, same secret.
    kubectl(&["delete", "appreg", "-n", "initech-billing", "invoicing"], None);
    let kept = credentials(&ns, "invoicing-credentials").await.expect("the Secret is retained");
    assert!(kept.owner_references().is_empty(), "no longer owned by the deleted app");
    kubectl(&["apply", "-f", &format!("{examples}/30-app.yaml")], None);
    wait_event(&ns, "TakenOver", "initech-invoicing-2019").await;
    let (back, secret) = wait_issued(&ns, "invoicing").await;
    assert_ne!(back.uid(), rotated.uid(), "a new object");
    assert_eq!(status(&back).client_id.as_deref(), Some("initech-invoicing-2019"));
    assert_eq!(status(&back).secret_version, Some(1), "a new app counts its own versions");
    assert!(
        secret_value(&secret, "client_secret").as_deref() == Some(fresh.as_str()),
        "not the same secret (values not printed)"
    );

    // The billing admins lose the right: the platform team owns it now.
    kubectl(&["delete", "rolebinding", "-n", "initech-billing", "invoicing-owners"], None);
    let moved = wait_app(&ns, "invoicing", "the transfer", |a| {
        owner_of(a) == Some(("initech-platform".into(), "Transferred".into()))
    })
    .await;
    let owner =
        kubectl(&["get", "appreg", "-n", "initech-billing", "invoicing", "-o", "jsonpath={.status.owner}"], None);
    assert!(owner.contains("\"transferredFrom\":\"Group initech-billing-admins\""), "{owner}");
    assert_eq!(rotation_recommended(&moved), Some(("True".into(), "OwnerTransferred".into())));
    let events =
        kubectl(&["get", "events", "-n", "initech-billing", "--field-selector", "reason=OwnerTransferred"], None);
    assert!(events.contains("initech-platform"), "{events}");
    // The next value at the source clears the recommendation.
    set_source(&format!("{}{}", rand::random::<u128>(), rand::random::<u128>()));
    wait_app(&ns, "invoicing", "the recommendation to clear", |a| {
        rotation_recommended(a) == Some(("False".into(), "Rotated".into()))
    })
    .await;

    // Clean up as docs/guide.md says.
    kubectl(&["delete", "-f", examples, "--ignore-not-found", "--wait=false"], None);
    let _ = ns.api::<Secret>().delete("invoicing-credentials", &DeleteParams::default()).await;
}

/// `secret.sourceRef` acts for the user who registered the app, never for
/// registrar: eve may edit AppRegistrations in the namespace but may not get
/// Secret `db-password`; pointing an app at it, or at a Secret that does not
/// exist, reads nothing and tells her nothing (`SecretSource=False,
/// reason=Forbidden`, the same words either way: not whether it exists, not
/// its length). Once she may get it, it is issued; its fingerprint in status
/// is keyed, not the SHA-256 anyone could test guesses against.
#[tokio::test]
async fn a_source_is_read_only_for_a_user_who_may_read_it() {
    let ns = TestNamespace::new("deputy").await;
    install_registrar(&ns.client).await;
    // A refused source is asked again at every recheck: eve's new Role is seen within a second.
    let _operator = Operator::start_with(&["--watch-namespace", &ns.name, "--secret-source-interval", "1s"]).await;
    let eve = format!("eve-{}", ns.name);
    let apps_only = json!([{ "apiGroups": ["registrar.dev"], "resources": ["appregistrations"], "verbs": ["*"] }]);
    crate::support::grant_role(&ns, &eve, "apps-only", apps_only).await;
    let value = "db-pa55w0rd";
    put_source(&ns, "db-password", value).await;
    let as_eve: Api<AppRegistration> = Api::namespaced(crate::support::control_plane().client_as(&eve).await, &ns.name);
    let sourced = |name: &str, secret: &str| {
        let mut app = confidential(name);
        app.spec.secret = Some(registrar::api::SecretTemplate {
            source_ref: Some(registrar::api::SecretSourceRef { name: secret.into(), key: None }),
            ..Default::default()
        });
        app
    };
    let forbidden = |a: &AppRegistration| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "SecretSource" && c.status == "False" && c.reason == "Forbidden")
        })
    };
    let mut messages = Vec::new();
    for (name, secret) in [("deputy", "db-password"), ("probe", "no-such-secret")] {
        crate::support::gitops_apply(&as_eve, &sourced(name, secret)).await.expect("eve applies an app");
        let app = wait_app(&ns, name, "the source refused", forbidden).await;
        assert_eq!(status(&app).client_id, None, "nothing issued");
        let condition = app.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "SecretSource"));
        let message = condition.expect("SecretSource").message.clone();
        assert!(message.contains(&format!("{eve}, who registered the app, may not get Secret {secret}")), "{message}");
        messages.push(message.replace(secret, "SECRET"));
    }
    assert_eq!(messages[0], messages[1], "whether the Secret exists is not told");
    let everything = serde_json::to_string(&(
        ns.api::<AppRegistration>().list(&Default::default()).await.expect("apps").items,
        crate::support::apps::events(&ns).await,
    ))
    .expect("json");
    assert!(!everything.contains("11 characters") && !everything.contains(value), "nothing of the value anywhere");

    // Allowed to read it, eve's app is issued from it (a strong value).
    let strong = "Hn4kQ8wZr2Vb6Tc9Xm1Lp5Sd7Fg3Jy0Ue";
    put_source(&ns, "db-password", strong).await;
    let reader =
        json!([{ "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db-password"], "verbs": ["get"] }]);
    crate::support::grant_role(&ns, &eve, "read-db-password", reader).await;
    let (app, secret) = wait_issued(&ns, "deputy").await;
    assert!(
        secret_value(&secret, "client_secret").as_deref() == Some(strong),
        "not the same secret (values not printed)"
    );
    let plain = registrar::credentials::ClientSecret::from_bytes(strong.as_bytes()).expect("utf-8").plain_fingerprint();
    assert_ne!(status(&app).secret_fingerprint.as_deref(), Some(plain.as_str()), "the fingerprint is keyed");
    assert_eq!(status(&app).secret_hash, None, "the verifier of a chosen secret is not in status (view reads status)");
    let entry = kube::Api::<registrar::api::ClientIdEntry>::all(ns.client.clone())
        .get(&registrar::api::entry_name(&status(&app).client_id.expect("id")))
        .await
        .expect("the ledger entry");
    assert!(entry.spec.verifiers.is_some_and(|v| v.current.starts_with("$argon2id$")), "it is in the ledger");
    ns.delete().await;
}
