//! Apps registered at a real Ory Hydra v2.3.0 and proven at its token
//! endpoint: the credentials a workload mounts get tokens there; rotation,
//! edits, deletion, loss and drift at Hydra, Hydra down and back.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use registrar::api::{AppRegistration, GrantType};
use reqwest::Method;
use serde_json::json;

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, ready_reason, secret_value, status, wait_app, wait_issued},
    eventually,
    hydra::Hydra,
    install_registrar,
    operator::Operator,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A confidential app that may use client_credentials with scope `read`.
fn worker(name: &str) -> AppRegistration {
    let mut app = confidential(name);
    app.spec.grant_types = Some(vec![GrantType::ClientCredentials]);
    app
}

fn condition(app: &AppRegistration, type_: &str) -> Option<(String, String, String)> {
    let c = app.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn registered(app: &AppRegistration) -> bool {
    condition(app, "Registered").is_some_and(|(s, _, _)| s == "True")
        && ready_reason(app).is_some_and(|r| r.0 == "True")
}

/// The values a workload reads from the mounted Secret.
struct Mounted {
    client_id: String,
    client_secret: String,
    token_url: String,
    issuer: String,
}

fn mounted(secret: &Secret) -> Mounted {
    let value = |k: &str| secret_value(secret, k).unwrap_or_else(|| panic!("the Secret has no {k}"));
    Mounted {
        client_id: value("client_id"),
        client_secret: value("client_secret"),
        token_url: value("token_url"),
        issuer: value("issuer"),
    }
}

async fn setup(prefix: &str, sync_interval: &str) -> (TestNamespace, Hydra, Operator) {
    let ns = TestNamespace::new(prefix).await;
    install_registrar(&ns.client).await;
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let mut args: Vec<String> = vec!["--watch-namespace".into(), ns.name.clone()];
    args.extend(hydra.operator_args(sync_interval));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&args).await;
    (ns, hydra, operator)
}

/// The mounted credentials get a token at Hydra's token endpoint, which
/// introspects active for that Client ID; a rotation with gracePeriod 0 makes
/// the old secret `invalid_client` there at once; an edit follows without
/// touching the secret; deleting the app deletes the client and its tokens.
#[tokio::test]
async fn mounted_credentials_get_tokens_at_hydra_through_rotation_edit_and_deletion() {
    let (ns, hydra, operator) = setup("hydra-life", "60s").await;
    apply(&ns, &worker("worker")).await;
    let app = wait_app(&ns, "worker", "the app to be registered at Hydra", registered).await;
    let (_, secret) = wait_issued(&ns, "worker").await;
    let creds = mounted(&secret);
    assert_eq!(creds.token_url, hydra.token_url());
    assert_eq!(creds.issuer, hydra.issuer());
    assert_eq!(status(&app).client_id.as_deref(), Some(creds.client_id.as_str()));

    let (code, answer) = hydra.client_credentials(&creds.client_id, &creds.client_secret, "read").await;
    assert_eq!(code, 200, "{answer}");
    let token = answer["access_token"].as_str().expect("a token").to_owned();
    let introspected = hydra.introspect(&token).await;
    assert_eq!(introspected["active"], json!(true), "{introspected}");
    assert_eq!(introspected["client_id"], json!(creds.client_id));
    let client = hydra.client(&creds.client_id).await.expect("the client at Hydra");
    assert_eq!(client["owner"], json!("registrar"));
    assert_eq!(client["metadata"]["registrar.dev/app"], json!(format!("{}/worker", ns.name)));
    assert_eq!(client["token_endpoint_auth_method"], json!("client_secret_basic"));

    // Rotate with gracePeriod 0: the old secret is refused at Hydra.
    let rotate = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "r1" } } }));
    let asked = Instant::now();
    ns.api::<AppRegistration>().patch("worker", &PatchParams::default(), &rotate).await.expect("rotate");
    let refused_after = eventually("the old secret to be refused at Hydra", TIMEOUT, || async {
        let (code, answer) = hydra.client_credentials(&creds.client_id, &creds.client_secret, "read").await;
        (code == 401 && answer["error"] == json!("invalid_client")).then(|| asked.elapsed())
    })
    .await;
    eprintln!("rotate annotation → old secret refused at Hydra's token endpoint: {refused_after:?}");
    wait_app(&ns, "worker", "the rotation", |a| status(a).secret_version == Some(2) && registered(a)).await;
    let (_, rotated) = wait_issued(&ns, "worker").await;
    let new = mounted(&rotated);
    assert_eq!(new.client_id, creds.client_id);
    assert_ne!(new.client_secret, creds.client_secret);
    let (code, answer) = hydra.client_credentials(&new.client_id, &new.client_secret, "read").await;
    assert_eq!(code, 200, "the new secret gets a token: {answer}");
    assert_eq!(
        hydra.client_credentials(&creds.client_id, &creds.client_secret, "read").await.0,
        401,
        "no grace at Hydra"
    );

    // Edit the display name and a redirect URI: Hydra follows; the secret stays.
    let mut edited = worker("worker");
    edited.spec.display_name = "Worker, renamed".into();
    edited.spec.grant_types = Some(vec![GrantType::ClientCredentials, GrantType::AuthorizationCode]);
    edited.spec.redirect_uris = vec!["https://worker.example.com/callback".into()];
    apply(&ns, &edited).await;
    eventually("Hydra's client to follow the edit", TIMEOUT, || async {
        let client = hydra.client(&new.client_id).await?;
        let follows = client["client_name"] == json!("Worker, renamed")
            && client["redirect_uris"] == json!(["https://worker.example.com/callback"]);
        follows.then_some(())
    })
    .await;
    let (code, _) = hydra.client_credentials(&new.client_id, &new.client_secret, "read").await;
    assert_eq!(code, 200, "the same secret still gets tokens");
    let (_, unchanged) = wait_issued(&ns, "worker").await;
    assert_eq!(mounted(&unchanged).client_secret, new.client_secret);
    let token = hydra.client_credentials(&new.client_id, &new.client_secret, "read").await.1["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Delete the app: the client is gone from Hydra, its token inactive.
    ns.api::<AppRegistration>().delete("worker", &DeleteParams::default()).await.expect("delete");
    eventually("the client to be gone from Hydra", TIMEOUT, || async {
        hydra.client(&new.client_id).await.is_none().then_some(())
    })
    .await;
    assert_eq!(hydra.introspect(&token).await["active"], json!(false));
    assert_eq!(operator.metric("registrar_secret_mints_total{reason=\"Initial\"}").await, 1.0);
    ns.delete().await;
}

/// Hydra restarted with its in-memory database empty: the comparison brings
/// every client back within one period, with the same secrets. A client
/// deleted or altered at Hydra is repaired; a foreign client is left alone.
#[tokio::test]
async fn lost_and_altered_clients_are_repaired_and_foreign_ones_left_alone() {
    const APPS: usize = 20;
    let (ns, mut hydra, _operator) = setup("hydra-loss", "2s").await;
    let names: Vec<String> = (0..APPS).map(|i| format!("w{i:02}")).collect();
    for name in &names {
        apply(&ns, &worker(name)).await;
    }
    let mut creds = Vec::new();
    for name in &names {
        wait_app(&ns, name, "registered", registered).await;
        creds.push(mounted(&wait_issued(&ns, name).await.1));
    }
    let foreign = json!({
        "client_id": "foreign-client", "client_secret": "foreign-secret-123", "owner": "someone-else",
        "grant_types": ["client_credentials"], "scope": "read"
    });
    assert_eq!(hydra.admin(Method::POST, "/admin/clients", Some(foreign.clone())).await, 201);

    hydra.restart().await;
    let restarted = Instant::now();
    assert!(hydra.client(&creds[0].client_id).await.is_none(), "the in-memory database is empty");
    for c in &creds {
        eventually("every client back at Hydra", TIMEOUT, || async {
            (hydra.client_credentials(&c.client_id, &c.client_secret, "read").await.0 == 200).then_some(())
        })
        .await;
    }
    eprintln!("Hydra restarted empty: {APPS} clients back, same secrets, {:?} later", restarted.elapsed());

    // Deleted at Hydra directly, and altered there: repaired.
    assert_eq!(hydra.admin(Method::POST, "/admin/clients", Some(foreign)).await, 201);
    assert_eq!(hydra.admin(Method::DELETE, &format!("/admin/clients/{}", creds[0].client_id), None).await, 204);
    let mut altered = hydra.client(&creds[1].client_id).await.expect("client");
    altered["grant_types"] = json!(["authorization_code"]);
    altered["client_name"] = json!("tampered");
    assert_eq!(hydra.admin(Method::PUT, &format!("/admin/clients/{}", creds[1].client_id), Some(altered)).await, 200);
    for c in &creds[..2] {
        eventually("the deleted and the altered client to be repaired", TIMEOUT, || async {
            (hydra.client_credentials(&c.client_id, &c.client_secret, "read").await.0 == 200).then_some(())
        })
        .await;
    }
    let repaired = hydra.client(&creds[1].client_id).await.expect("client");
    assert_eq!(repaired["client_name"], json!("App w01"));
    // The foreign client: untouched through all of it.
    let foreign = hydra.client("foreign-client").await.expect("the foreign client is still there");
    assert_eq!(foreign["owner"], json!("someone-else"));
    assert_eq!(hydra.client_credentials("foreign-client", "foreign-secret-123", "read").await.0, 200);
    ns.delete().await;
}

/// Hydra stopped: apps go Ready=False with reason NotRegistered (Registered:
/// Unavailable) and no secret changes; Hydra back: they recover.
#[tokio::test]
async fn hydra_down_shows_on_every_app_and_costs_no_secret() {
    let (ns, mut hydra, operator) = setup("hydra-down", "2s").await;
    for name in ["a", "b"] {
        apply(&ns, &worker(name)).await;
    }
    let mut before = Vec::new();
    for name in ["a", "b"] {
        wait_app(&ns, name, "registered", registered).await;
        before.push(mounted(&wait_issued(&ns, name).await.1));
    }
    hydra.stop();
    for name in ["a", "b"] {
        let app = wait_app(&ns, name, "Unavailable", |a| {
            condition(a, "Registered").is_some_and(|(s, r, _)| s == "False" && r == "Unavailable")
        })
        .await;
        let (ready, reason, message) = ready_reason(&app).expect("Ready");
        assert_eq!((ready.as_str(), reason.as_str()), ("False", "NotRegistered"));
        assert!(message.contains("Hydra"), "{message}");
        assert_eq!(status(&app).secret_version, Some(1), "no secret changes while Hydra is down");
    }
    hydra.restart().await;
    for (name, c) in ["a", "b"].iter().zip(&before) {
        let app = wait_app(&ns, name, "recovered", registered).await;
        assert_eq!(status(&app).secret_version, Some(1));
        let (code, answer) = hydra.client_credentials(&c.client_id, &c.client_secret, "read").await;
        assert_eq!(code, 200, "{answer}");
    }
    assert_eq!(operator.metric("registrar_secret_mints_total{reason=\"SecretAltered\"}").await, 0.0);
    assert_eq!(operator.metric("registrar_secret_mints_total{reason=\"SecretMissing\"}").await, 0.0);
    ns.delete().await;
}
