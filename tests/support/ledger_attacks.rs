//! The attacks on Client IDs that the ledger closes, as a tenant would try
//! them: each a scenario that the e2e binary runs with the admission policies
//! installed and the bare binary without them. A tenant is `mallory`, who
//! holds the built-in `edit` role in namespace A only and acts through
//! impersonation (`--as mallory`) on the real control plane.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use registrar::api::{AppRegistration, DeletionPolicy, GrantType};
use serde_json::{Value, json};

use super::{
    ControlPlane, OPERATOR_NAMESPACE,
    apps::{confidential, ready_reason, secret_value, status, wait_app, wait_event, wait_issued},
    eventually, gitops_apply,
    hydra::Hydra,
    install_crds,
    operator::Operator,
    registry::{Caller, http, registry_operator},
    tenants::{RUN_LABEL, Tenants},
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A confidential app that may also get tokens for itself (client_credentials).
fn worker(name: &str) -> AppRegistration {
    let mut app = confidential(name);
    app.spec.grant_types =
        Some(vec![GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials]);
    app
}

fn refused(app: &AppRegistration, reason: &str) -> bool {
    ready_reason(app).is_some_and(|(s, r, _)| s == "False" && r == reason)
}

fn registered_condition(app: &AppRegistration) -> Option<(String, String)> {
    let c = app.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Registered")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// An app `name` importing `client_id`, with a redirect URI of the importer's.
fn importing(name: &str, client_id: &str) -> AppRegistration {
    let mut app = worker(name);
    app.spec.client_id = Some(client_id.into());
    app.spec.redirect_uris = vec!["https://mallory.example.com/callback".into()];
    app
}

/// mallory's app `name` in A, labelled for the operator of `run`, importing `client_id`.
fn import(name: &str, run: &str, client_id: &str) -> AppRegistration {
    let mut app = importing(name, client_id);
    app.labels_mut().insert(RUN_LABEL.into(), run.into());
    app
}

/// What a client at Hydra is, for "untouched": every field registrar could change.
fn fingerprint(client: &Value) -> Value {
    json!([
        client["redirect_uris"],
        client["grant_types"],
        client["scope"],
        client["owner"],
        client["metadata"],
        client["client_name"],
        client["updated_at"],
    ])
}

/// The operator's comparisons with the authorization server so far.
async fn comparisons(operator: &Operator) -> f64 {
    let mut total = 0.0;
    for outcome in ["ok", "Unavailable", "Refused", "ClientExists"] {
        total +=
            operator.metric(&format!("registrar_authserver_calls_total{{call=\"list\",outcome=\"{outcome}\"}}")).await;
    }
    total
}

/// Waits until `operator` has compared its apps with the server twice more.
async fn two_comparisons(operator: &Operator) {
    let before = comparisons(operator).await;
    eventually("two more comparisons with Hydra", TIMEOUT, || async {
        (comparisons(operator).await >= before + 2.0).then_some(())
    })
    .await;
}

/// The victim's client at Hydra still gives its own secret a token, and that
/// token is active.
async fn victim_gets_tokens(hydra: &Hydra, t: &Tenants) {
    let (code, answer) = hydra.client_credentials(&t.victim_client_id, &t.victim_secret, "read").await;
    assert_eq!(code, 200, "the victim's secret still gets tokens at Hydra: {answer}");
    let token = answer["access_token"].as_str().expect("a token");
    assert_eq!(hydra.introspect(token).await["active"], json!(true));
}

/// Two instances split by `--selector` share one Hydra. mallory labels an
/// app of hers for the second instance and imports the Client ID of an app
/// the first manages: the second instance refuses it (`ClientIdConflict`),
/// never touches the victim's client at Hydra — not at registration, not in
/// its comparisons — and deleting her app deletes nothing of the victim's.
pub async fn two_instances_split_by_selector_on_one_hydra() {
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let args = hydra.operator_args("1s");
    let t = Tenants::with_args("shard", &args, worker("billing")).await;
    wait_app(&t.b, "billing", "the victim to be registered at Hydra", |a| {
        registered_condition(a).is_some_and(|(s, _)| s == "True")
    })
    .await;
    let before = fingerprint(&hydra.client(&t.victim_client_id).await.expect("the victim's client"));
    victim_gets_tokens(&hydra, &t).await;

    let other_run = format!("{:08x}", rand::random::<u32>());
    let selector = format!("{RUN_LABEL}={other_run}");
    let mut second_args = vec!["--selector", selector.as_str()];
    second_args.extend(args.iter().map(String::as_str));
    let (second, second_port) = registry_operator(&second_args).await;

    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    gitops_apply(&apps, &import("evil", &other_run, &t.victim_client_id)).await.expect("mallory applies her app");
    let evil = wait_app(&t.a, "evil", "mallory's import to be refused", |a| refused(a, "ClientIdConflict")).await;
    let message = ready_reason(&evil).expect("Ready").2;
    assert!(!message.contains(&t.b.name), "the refusal names nobody: {message}");
    assert_eq!(status(&evil).client_id, None, "nothing issued");
    assert!(t.a.api::<Secret>().get_opt("evil-credentials").await.expect("get").is_none(), "no Secret written");

    two_comparisons(&second).await;
    let after = hydra.client(&t.victim_client_id).await.expect("the victim's client is still at Hydra");
    assert_eq!(fingerprint(&after), before, "the victim's client is untouched");
    victim_gets_tokens(&hydra, &t).await;
    t.assert_victim_intact("mallorys-guess-0123456789abcdef0123456789").await;
    let seen_by_second = Caller { base: format!("http://127.0.0.1:{second_port}"), ..t.caller.clone() };
    assert_eq!(
        seen_by_second.authenticate(&t.victim_client_id, "mallorys-guess-0123456789abcdef").await.0.as_u16(),
        401
    );

    // Deleting mallory's app deletes nothing of the victim's.
    apps.delete("evil", &DeleteParams::default()).await.expect("mallory deletes her app");
    eventually("mallory's app to be gone", TIMEOUT, || async {
        apps.get_opt("evil").await.ok()?.is_none().then_some(())
    })
    .await;
    two_comparisons(&second).await;
    let after = hydra.client(&t.victim_client_id).await.expect("the victim's client survives her deletion");
    assert_eq!(fingerprint(&after), before);
    victim_gets_tokens(&hydra, &t).await;
    t.assert_victim_intact("mallorys-guess-0123456789abcdef0123456789").await;
    drop(second);
    t.delete().await;
}

/// A revoked Client ID is never issued again, whatever process asks: the
/// victim's app is deleted (revoked) under two replicas with leader election;
/// the leader is killed (the standby takes over) and mallory imports the
/// Client ID — refused; then every replica restarts, and her import is
/// still refused.
pub async fn a_revoked_client_id_stays_revoked_across_restarts_and_leader_changes() {
    let lease = [
        "--leader-election".to_owned(),
        "--leader-election-lease".to_owned(),
        format!("revoked-{:08x}", rand::random::<u32>()),
        "--leader-election-namespace".to_owned(),
        OPERATOR_NAMESPACE.to_owned(),
        "--leader-election-duration".to_owned(),
        "3".to_owned(),
    ];
    let mut t = Tenants::with_args("revoked", &lease, confidential("billing")).await;
    let selector = format!("{RUN_LABEL}={}", t.run);
    let mut args = vec!["--selector", selector.as_str()];
    args.extend(lease.iter().map(String::as_str));
    let mut standby = Operator::start_with(&args).await;

    t.b.api::<AppRegistration>().delete("billing", &DeleteParams::default()).await.expect("delete the victim");
    wait_event(&t.b, "Revoked", &t.victim_client_id).await;
    eventually("the victim's app to be gone", TIMEOUT, || async {
        t.b.api::<AppRegistration>().get_opt("billing").await.ok()?.is_none().then_some(())
    })
    .await;

    // A leader change: the leader (the first operator) killed, the standby takes over.
    t.operator.kill();
    eventually("the standby to lead", TIMEOUT, || async {
        (standby.metric("registrar_leader").await == 1.0).then_some(())
    })
    .await;
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    gitops_apply(&apps, &import("thief", &t.run, &t.victim_client_id)).await.expect("mallory imports");
    let thief =
        wait_app(&t.a, "thief", "the import of a revoked Client ID refused", |a| refused(a, "ClientIdConflict")).await;
    let message = ready_reason(&thief).expect("Ready").2;
    assert!(message.contains("not available"), "{message}");

    // Every replica restarts: an app importing it now is refused too, and so
    // is the earlier one once it is looked at again (a spec edit).
    standby.restart().await;
    t.operator.restart().await;
    eventually("a leader after the restarts", TIMEOUT, || async {
        (t.operator.metric("registrar_leader").await + standby.metric("registrar_leader").await == 1.0).then_some(())
    })
    .await;
    gitops_apply(&apps, &import("thief-2", &t.run, &t.victim_client_id)).await.expect("mallory imports again");
    let again =
        wait_app(&t.a, "thief-2", "a new import refused after the restarts", |a| refused(a, "ClientIdConflict")).await;
    assert_eq!(status(&again).client_id, None);
    let mut edited = import("thief", &t.run, &t.victim_client_id);
    edited.spec.display_name = "Thief, edited after the restarts".into();
    let edited = gitops_apply(&apps, &edited).await.expect("mallory edits her app");
    let thief = wait_app(&t.a, "thief", "the edited import still refused", |a| {
        refused(a, "ClientIdConflict")
            && a.status.as_ref().and_then(|s| s.observed_generation) == edited.metadata.generation
    })
    .await;
    assert_eq!(status(&thief).client_id, None);
    for name in ["thief", "thief-2"] {
        let secret = t.a.api::<Secret>().get_opt(&format!("{name}-credentials")).await.expect("get");
        assert!(secret.is_none(), "{name}: nothing issued");
    }
    let (code, _) = t.caller.authenticate(&t.victim_client_id, &t.victim_secret).await;
    assert_eq!(code.as_u16(), 401, "a revoked Client ID authenticates nothing");
    assert_eq!(t.caller.lookup(&t.victim_client_id).await.0.as_u16(), 404);
    drop(standby);
    t.delete().await;
}

/// Hydra's token hook, as Hydra calls it, for a token of `client_id` to a
/// user of `group`: the status code registrar answers.
async fn token_hook(caller: &Caller, client_id: &str, group: &str) -> u16 {
    let body = json!({
        "session": { "extra": { "registrar_group": group } },
        "request": { "client_id": client_id, "granted_scopes": ["read"], "grant_types": ["refresh_token"] }
    });
    let response = caller
        .http
        .post(format!("{}/v1/hooks/hydra/token", caller.base))
        .bearer_auth(&caller.token)
        .json(&body)
        .send()
        .await
        .expect("token hook");
    response.status().as_u16()
}

/// An admin's client at Hydra (another owner) that mallory imports: Hydra is
/// left alone (`Registered=False, reason=ClientExists`), and the registry
/// answers as for a client it does not know — authenticate 401, lookup 404,
/// authorize-check 404, forward-auth 401, and its token hook (called as Hydra
/// calls it, with a group) lets the admin's client's tokens through — while
/// mallory's app exists and after she deletes it (which releases the Client
/// ID: it was never issued). The admin's client keeps getting tokens at Hydra.
pub async fn an_imported_foreign_hydra_client_is_never_vouched_for() {
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let t = Tenants::with_args("foreign", &hydra.operator_args("1s"), worker("billing")).await;

    // The platform's own client, created at Hydra by its admin.
    let admin_id = format!("platform-admin-{:08x}", rand::random::<u32>());
    let admin_secret = "the-platform-admins-own-secret-0123456789";
    let created = http()
        .post(format!("{}/admin/clients", hydra.admin_url()))
        .json(&json!({
            "client_id": admin_id, "client_secret": admin_secret, "owner": "platform-admin",
            "grant_types": ["client_credentials"], "scope": "read",
            "redirect_uris": ["https://admin.example.com/callback"],
        }))
        .send()
        .await
        .expect("create the admin's client");
    assert!(created.status().is_success(), "{}", created.status());
    let before = fingerprint(&hydra.client(&admin_id).await.expect("the admin's client"));

    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    gitops_apply(&apps, &import("squatter", &t.run, &admin_id)).await.expect("mallory imports the admin's Client ID");
    let squatter = wait_app(&t.a, "squatter", "Hydra to refuse the import", |a| {
        registered_condition(a).is_some_and(|(s, r)| s == "False" && r == "ClientExists")
    })
    .await;
    assert!(refused(&squatter, "NotRegistered"), "{:?}", ready_reason(&squatter));
    let (_, secret) = eventually("mallory's Secret", TIMEOUT, || async {
        let secret = t.a.api::<Secret>().get_opt("squatter-credentials").await.ok()??;
        Some(((), secret))
    })
    .await;
    let mallorys = secret_value(&secret, "client_secret").expect("mallory's secret");

    let unknown = |caller: &Caller| {
        let (caller, admin_id, mallorys) = (caller.clone(), admin_id.clone(), mallorys.clone());
        async move {
            assert_eq!(caller.authenticate(&admin_id, &mallorys).await.0.as_u16(), 401, "authenticate");
            assert_eq!(caller.lookup(&admin_id).await.0.as_u16(), 404, "lookup");
            let check = caller
                .http
                .post(format!("{}/v1/clients/{admin_id}/authorize-check", caller.base))
                .bearer_auth(&caller.token)
                .json(&json!({ "redirect_uri": "https://mallory.example.com/callback", "group": "anyone" }))
                .send()
                .await
                .expect("authorize-check");
            assert_eq!(check.status().as_u16(), 404, "authorize-check");
            assert_eq!(token_hook(&caller, &admin_id, "anyone").await, 204, "the token hook passes it");
            let forward = caller
                .http
                .get(format!("{}/v1/forward-auth", caller.base))
                .header("x-registry-authorization", format!("Bearer {}", caller.token))
                .basic_auth(&admin_id, Some(&mallorys))
                .send()
                .await
                .expect("forward-auth");
            assert_eq!(forward.status().as_u16(), 401, "forward-auth admits nobody as the admin's client");
        }
    };
    unknown(&t.caller).await;
    two_comparisons(&t.operator).await;
    assert_eq!(fingerprint(&hydra.client(&admin_id).await.expect("still there")), before, "Hydra left alone");
    let (code, answer) = hydra.client_credentials(&admin_id, admin_secret, "read").await;
    assert_eq!(code, 200, "the admin's client gets tokens: {answer}");
    let (code, _) = hydra.client_credentials(&admin_id, &mallorys, "read").await;
    assert_eq!(code, 401, "mallory's secret gets nothing at Hydra");

    apps.delete("squatter", &DeleteParams::default()).await.expect("mallory deletes her app");
    eventually("mallory's app to be gone", TIMEOUT, || async {
        apps.get_opt("squatter").await.ok()?.is_none().then_some(())
    })
    .await;
    unknown(&t.caller).await;
    two_comparisons(&t.operator).await;
    assert_eq!(fingerprint(&hydra.client(&admin_id).await.expect("still there")), before, "Hydra left alone");
    let (code, answer) = hydra.client_credentials(&admin_id, admin_secret, "read").await;
    assert_eq!(code, 200, "the admin's client still gets tokens: {answer}");
    t.delete().await;
}

/// The seal key is replaced and the operator restarted: a retained Client ID
/// (`deletionPolicy: Retain`, recorded in the ledger with its verifier, not
/// under the seal) is kept — it still authenticates, its client stays at
/// Hydra through the comparisons, mallory's import of it in another
/// namespace is refused — and B takes it over with its secret.
pub async fn a_replaced_seal_key_costs_no_retained_client_id() {
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    // Its own seal key, so replacing it touches no other test's operator.
    let key_secret = format!("seal-key-{:08x}", rand::random::<u32>());
    let mut args = hydra.operator_args("1s");
    args.extend(["--seal-key-secret".to_owned(), key_secret.clone()]);
    let mut kept = worker("billing");
    kept.spec.deletion_policy = Some(DeletionPolicy::Retain);
    let mut t = Tenants::with_args("sealkey", &args, kept.clone()).await;
    wait_app(&t.b, "billing", "the victim to be registered at Hydra", |a| {
        registered_condition(a).is_some_and(|(s, _)| s == "True")
    })
    .await;
    t.b.api::<AppRegistration>().delete("billing", &DeleteParams::default()).await.expect("delete with Retain");
    wait_event(&t.b, "Retained", &t.victim_client_id).await;

    // The key replaced (deleted: the next start creates another), then a restart.
    let secrets: Api<Secret> = Api::namespaced(t.a.client.clone(), OPERATOR_NAMESPACE);
    let old_key = secrets.get(&key_secret).await.expect("the seal key");
    secrets.delete(&key_secret, &DeleteParams::default()).await.expect("delete the seal key");
    t.operator.restart().await;
    let new_key = secrets.get(&key_secret).await.expect("a new seal key");
    assert_ne!(new_key.data, old_key.data, "the key was replaced");

    let (code, answer) = eventually("the retained client to authenticate", TIMEOUT, || async {
        let answer = t.caller.authenticate(&t.victim_client_id, &t.victim_secret).await;
        answer.0.is_success().then_some(answer)
    })
    .await;
    assert!(code.is_success());
    assert_eq!(answer["state"], json!("retained"), "{answer}");
    two_comparisons(&t.operator).await;
    victim_gets_tokens(&hydra, &t).await;

    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    gitops_apply(&apps, &import("taker", &t.run, &t.victim_client_id)).await.expect("mallory imports");
    let taker = wait_app(&t.a, "taker", "the import refused", |a| refused(a, "ClientIdConflict")).await;
    assert!(ready_reason(&taker).expect("Ready").2.contains("not available"));
    two_comparisons(&t.operator).await;
    victim_gets_tokens(&hydra, &t).await;

    // B takes its Client ID over, with its secret, under the new key.
    kept.spec.client_id = Some(t.victim_client_id.clone());
    gitops_apply(&t.b.api(), &t.labelled(kept)).await.expect("re-apply in B");
    let (app, secret) = wait_issued(&t.b, "billing").await;
    assert_eq!(status(&app).client_id.as_deref(), Some(t.victim_client_id.as_str()));
    assert!(secret_value(&secret, "client_secret").as_deref() == Some(t.victim_secret.as_str()), "its secret kept");
    wait_event(&t.b, "TakenOver", &t.victim_client_id).await;
    victim_gets_tokens(&hydra, &t).await;
    let _ = secrets.delete(&key_secret, &DeleteParams::default()).await;
    t.delete().await;
}

/// Two clusters' operators on one Hydra, both left at the same owner (the
/// worst case; by default each cluster has its own): each registers its own
/// apps, neither touches the other's clients — not when a tenant of the
/// second imports a Client ID the first holds (`ClientExists`), not in the
/// comparisons, not when that app is deleted.
pub async fn two_clusters_on_one_hydra_never_touch_each_others_clients() {
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let mut args = hydra.operator_args("1s");
    args.extend(["--auth-server-owner".to_owned(), "registrar-shared".to_owned()]);
    let t = Tenants::with_args("cluster-1", &args, worker("billing")).await;
    wait_app(&t.b, "billing", "cluster 1's app to be registered", |a| {
        registered_condition(a).is_some_and(|(s, _)| s == "True")
    })
    .await;
    let before = fingerprint(&hydra.client(&t.victim_client_id).await.expect("cluster 1's client"));

    let second =
        tokio::task::spawn_blocking(ControlPlane::start_separate).await.expect("join").expect("a second control plane");
    let client = second.client().await;
    install_crds(&client).await;
    let ns = "cluster-2-apps";
    super::ensure_namespace(&client, ns).await;
    let mut second_args = vec!["--watch-namespace".to_owned(), ns.to_owned()];
    second_args.extend(args.iter().cloned());
    let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
    let operator = Operator::start_as(second.kubeconfig().to_path_buf(), &second_args).await;
    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), ns);
    let wait = |name: &'static str, what: &'static str, check: fn(&AppRegistration) -> bool| {
        let apps = apps.clone();
        async move {
            eventually(what, TIMEOUT, || async {
                let app = apps.get(name).await.ok()?;
                check(&app).then_some(app)
            })
            .await
        }
    };

    // Cluster 2's own app is registered beside cluster 1's.
    gitops_apply(&apps, &worker("own")).await.expect("apply in cluster 2");
    let own =
        wait("own", "cluster 2's app to be registered", |a| registered_condition(a).is_some_and(|(s, _)| s == "True"))
            .await;
    let own_id = status(&own).client_id.expect("a Client ID");

    // A Client ID cluster 1 holds, imported in cluster 2.
    gitops_apply(&apps, &importing("copy", &t.victim_client_id)).await.expect("import in cluster 2");
    wait("copy", "Hydra to refuse cluster 2's import", |a| {
        registered_condition(a).is_some_and(|(s, r)| s == "False" && r == "ClientExists")
    })
    .await;
    two_comparisons(&operator).await;
    two_comparisons(&t.operator).await;
    assert_eq!(fingerprint(&hydra.client(&t.victim_client_id).await.expect("still there")), before);
    assert!(hydra.client(&own_id).await.is_some(), "cluster 1 never deletes cluster 2's client");
    victim_gets_tokens(&hydra, &t).await;

    apps.delete("copy", &DeleteParams::default()).await.expect("delete cluster 2's import");
    eventually("cluster 2's import to be gone", TIMEOUT, || async {
        apps.get_opt("copy").await.ok()?.is_none().then_some(())
    })
    .await;
    two_comparisons(&operator).await;
    assert_eq!(fingerprint(&hydra.client(&t.victim_client_id).await.expect("still there")), before);
    victim_gets_tokens(&hydra, &t).await;
    assert!(hydra.client(&own_id).await.is_some());
    drop(operator);
    drop(second);
    t.delete().await;
}

/// The ledger is registrar's alone by RBAC: mallory (namespace `edit`) may
/// neither read nor write it, whatever admission policies say.
pub async fn a_tenant_can_neither_read_nor_write_the_ledger() {
    use registrar::api::{ClientIdEntry, Holder};
    let t = Tenants::new("ledger-rbac").await;
    let ledger: Api<ClientIdEntry> = Api::all(t.mallory.clone());
    let forged = ClientIdEntry::active(
        &t.victim_client_id,
        Holder { namespace: t.a.name.clone(), name: "evil".into(), uid: "00000000-0000-0000-0000-000000000000".into() },
    );
    let refused = |e: kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    assert!(ledger.create(&PostParams::default(), &forged).await.is_err_and(refused), "create");
    let name = registrar::api::entry_name(&t.victim_client_id);
    assert!(ledger.get(&name).await.is_err_and(refused), "get");
    assert!(ledger.list(&Default::default()).await.is_err_and(refused), "list");
    assert!(ledger.delete(&name, &DeleteParams::default()).await.is_err_and(refused), "delete");
    t.assert_victim_intact("mallorys-guess-0123456789abcdef0123456789").await;
    t.delete().await;
}
