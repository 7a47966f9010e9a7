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
    apps::{apply, confidential, ready_reason, secret_value, status, wait_app, wait_event, wait_issued},
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
    assert_eq!(client["owner"], json!(Hydra::cluster_owner(&ns.client).await), "one owner per cluster");
    assert_eq!(client["metadata"]["registrar.dev/app"], json!(format!("{}/worker", ns.name)));
    assert_eq!(client["metadata"]["registrar.dev/uid"], json!(app.metadata.uid), "the app's lane: its UID");
    let cluster = client["metadata"]["registrar.dev/cluster"].as_str().expect("the cluster's mark").to_owned();
    assert!(Hydra::cluster_owner(&ns.client).await.ends_with(&cluster), "the kube-system namespace's UID");
    assert_eq!(client["token_endpoint_auth_method"], json!("client_secret_basic"));
    // The plugin's details view names where to get tokens.
    let shown = crate::plugin::plugin_at(
        crate::support::control_plane().kubeconfig(),
        &["show", "worker", "-n", &ns.name, "-o", "json"],
        None,
    )
    .await;
    let details: serde_json::Value = serde_json::from_str(&shown.stdout).expect("show -o json");
    assert_eq!(details["issuer"], json!(hydra.issuer()));
    assert_eq!(details["tokenUrl"], json!(hydra.token_url()));

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
    assert!(mounted(&unchanged).client_secret == new.client_secret, "not the same secret (values not printed)");
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

    // A restart with DSN=memory empties Hydra (the comparison may already be
    // re-creating clients by the time it answers again).
    hydra.restart().await;
    let restarted = Instant::now();
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

/// The login and consent app the test serves for Hydra: it logs in a user of
/// the group the test chose, and grants consent only when registrar's
/// authorize-check says that group may use the client.
mod login_consent {
    use std::sync::{Arc, Mutex};

    use axum::{
        Router,
        extract::{Query, State},
        response::Redirect,
        routing::get,
    };
    use serde::Deserialize;
    use serde_json::{Value, json};

    #[derive(Clone)]
    pub struct App {
        pub hydra_admin: String,
        pub registry: String,
        pub registry_token: String,
        /// The group (namespace) the next user acts in.
        pub group: Arc<Mutex<String>>,
        pub http: reqwest::Client,
    }

    #[derive(Deserialize)]
    struct Challenge {
        login_challenge: Option<String>,
        consent_challenge: Option<String>,
    }

    async fn login(State(app): State<App>, Query(q): Query<Challenge>) -> Redirect {
        let challenge = q.login_challenge.unwrap_or_default();
        let group = app.group.lock().unwrap().clone();
        let accepted: Value = app
            .http
            .put(format!("{}/admin/oauth2/auth/requests/login/accept", app.hydra_admin))
            .query(&[("login_challenge", &challenge)])
            .json(&json!({ "subject": format!("user@{group}") }))
            .send()
            .await
            .expect("accept login")
            .json()
            .await
            .expect("login redirect");
        Redirect::to(accepted["redirect_to"].as_str().expect("redirect_to"))
    }

    async fn consent(State(app): State<App>, Query(q): Query<Challenge>) -> Redirect {
        let challenge = q.consent_challenge.unwrap_or_default();
        let request: Value = app
            .http
            .get(format!("{}/admin/oauth2/auth/requests/consent", app.hydra_admin))
            .query(&[("consent_challenge", &challenge)])
            .send()
            .await
            .expect("consent request")
            .json()
            .await
            .expect("consent JSON");
        let client_id = request["client"]["client_id"].as_str().expect("client_id").to_owned();
        let url = url::Url::parse(request["request_url"].as_str().expect("request_url"))
            .or_else(|_| {
                url::Url::parse("http://hydra.invalid").unwrap().join(request["request_url"].as_str().unwrap())
            })
            .expect("request_url");
        let param = |k: &str| url.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).unwrap_or_default();
        let group = app.group.lock().unwrap().clone();
        let scopes = request["requested_scope"].clone();
        let check: Value = app
            .http
            .post(format!("{}/v1/clients/{client_id}/authorize-check", app.registry))
            .bearer_auth(&app.registry_token)
            .json(&json!({
                "redirect_uri": param("redirect_uri"),
                "group": group,
                "scope": scopes,
                "code_challenge_method": param("code_challenge_method"),
            }))
            .send()
            .await
            .expect("authorize-check")
            .json()
            .await
            .expect("authorize-check JSON");
        let (path, body) = if check["allowed"] == json!(true) {
            // The group goes into the session: Hydra hands it to registrar's
            // token hook at every code exchange and refresh.
            ("accept", json!({ "grant_scope": scopes, "session": { "access_token": { "registrar_group": group } } }))
        } else {
            ("reject", json!({ "error": "access_denied", "error_description": check["reason"] }))
        };
        let answer: Value = app
            .http
            .put(format!("{}/admin/oauth2/auth/requests/consent/{path}", app.hydra_admin))
            .query(&[("consent_challenge", &challenge)])
            .json(&body)
            .send()
            .await
            .expect("answer consent")
            .json()
            .await
            .expect("consent redirect");
        Redirect::to(answer["redirect_to"].as_str().expect("redirect_to"))
    }

    /// Serves the app on `listener` until the test ends.
    pub fn serve(listener: tokio::net::TcpListener, app: App) {
        let router = Router::new().route("/login", get(login)).route("/consent", get(consent)).with_state(app);
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
}

/// PKCE material: a verifier and its S256 challenge.
fn pkce() -> (String, String) {
    use base64::Engine;
    use sha2::Digest;
    let verifier: String = (0..64).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Runs the browser side of an authorization-code flow (a user agent with a
/// cookie jar, following redirects by hand) until Hydra sends it to the
/// client's redirect URI; returns that URL's query (`code`, or `error`).
async fn authorize(
    hydra: &Hydra,
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    scope: &str,
) -> Vec<(String, String)> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("browser");
    let mut next = url::Url::parse_with_params(
        &format!("{}/oauth2/auth", hydra.issuer()),
        &[
            ("client_id", client_id),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", "state-0123456789"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("authorize URL");
    for _ in 0..16 {
        if next.as_str().starts_with(redirect_uri) {
            return next.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        }
        let response = browser.get(next.clone()).send().await.expect("browser step");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no redirect from {next} ({})", response.status()));
        next = next.join(location).expect("redirect URL");
    }
    panic!("the authorization flow did not reach the redirect URI");
}

/// Exchanges a code at Hydra's token endpoint as a public client.
async fn exchange(
    hydra: &Hydra,
    client_id: &str,
    redirect_uri: &str,
    code: &str,
    verifier: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", client_id),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    let response = reqwest::Client::new().post(hydra.token_url()).form(&form).send().await.expect("token");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Refreshes a token at Hydra's token endpoint as a public client.
async fn refresh(hydra: &Hydra, client_id: &str, refresh_token: &str) -> (u16, serde_json::Value) {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client_id)];
    let response = reqwest::Client::new().post(hydra.token_url()).form(&form).send().await.expect("refresh");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// With Hydra's token hook pointed at the registry, what an organization
/// revokes reaches the tokens Hydra would still issue: a group's refresh
/// works while its Restricted organization (internal apps not auto-approved)
/// allowlists the app, and is refused
/// (`access_denied`) once the entry is removed, as it is for a group that
/// removed its consent; another group keeps refreshing. Tokens Hydra already
/// issued live until they expire (Hydra cannot revoke them per group).
#[tokio::test]
async fn hydra_refuses_refreshes_once_the_organization_revokes_the_app_or_the_group_its_consent() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ObjectMeta, PostParams};
    use registrar::api::{
        AllowlistEntry, AppConsent, AppConsentSpec, AppRef, OrganizationPolicy, OrganizationPolicySpec, PolicyKind,
        Scope,
    };

    let run = format!("{:08x}", rand::random::<u32>());
    let run_labels = || Some([("e2e.registrar.dev/run".to_string(), run.clone())].into());
    let org = format!("hook-{run}");
    let owner_ns = TestNamespace::labelled("hook-a", &[("registrar.dev/organization", org.as_str())]).await;
    install_registrar(&owner_ns.client).await;
    let b = TestNamespace::labelled("hook-b", &[("registrar.dev/organization", org.as_str())]).await;
    let c = TestNamespace::labelled("hook-c", &[("registrar.dev/organization", org.as_str())]).await;

    let registry_port = crate::support::free_port();
    let registry = format!("http://127.0.0.1:{registry_port}");
    let hook_token = crate::support::registry::caller_token(&owner_ns, "hydra", true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let login_base = format!("http://{}", listener.local_addr().expect("addr"));
    let hook_url = format!("{registry}/v1/hooks/hydra/token");
    let hydra = Hydra::start_with_token_hook(&login_base, Some((&hook_url, &hook_token))).await;
    let registry_addr = format!("127.0.0.1:{registry_port}");
    let selector = format!("e2e.registrar.dev/run={run}");
    let mut args: Vec<String> =
        ["--registry-addr", &registry_addr, "--registry-insecure-http", "--selector", &selector]
            .map(String::from)
            .into();
    args.extend(hydra.operator_args("60s"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&args).await;
    let group = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    login_consent::serve(
        listener,
        login_consent::App {
            hydra_admin: hydra.admin_url(),
            registry: registry.clone(),
            registry_token: hook_token.clone(),
            group: group.clone(),
            http: reqwest::Client::new(),
        },
    );

    let redirect_uri = "http://127.0.0.1:8123/callback";
    let mut app = confidential("reports");
    app.metadata.labels = run_labels();
    app.spec.scope = Scope::Organization;
    app.spec.public_client = Some(true);
    app.spec.require_pkce = Some(true);
    app.spec.redirect_uris = vec![redirect_uri.into()];
    app.spec.oauth_scopes = vec!["offline".into(), "read".into()];
    apply(&owner_ns, &app).await;
    let app = wait_app(&owner_ns, "reports", "the app to be registered", registered).await;
    let client_id = status(&app).client_id.expect("Client ID");

    let mut policy = OrganizationPolicy::new(
        &org,
        OrganizationPolicySpec {
            policy: Some(PolicyKind::Restricted),
            // Internal apps need an entry too: the entry is what is revoked.
            auto_approve_internal: Some(false),
            allowlist: vec![AllowlistEntry {
                app: AppRef { namespace: owner_ns.name.clone(), name: "reports".into() },
                client_id: None,
                scopes: vec!["offline".into(), "read".into()],
            }],
            ..Default::default()
        },
    );
    policy.metadata.labels = run_labels();
    let policies = kube::Api::<OrganizationPolicy>::all(owner_ns.client.clone());
    policies.create(&PostParams::default(), &policy).await.expect("policy");
    for ns in [&b, &c] {
        let consent = AppConsent {
            metadata: ObjectMeta { name: Some("reports".into()), labels: run_labels(), ..Default::default() },
            spec: AppConsentSpec {
                app_ref: AppRef { namespace: owner_ns.name.clone(), name: "reports".into() },
                oauth_scopes: None,
            },
            status: None,
        };
        ns.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("consent");
        eventually("the consent to be granted", TIMEOUT, || async {
            let c = ns.api::<AppConsent>().get("reports").await.ok()?;
            c.status?.conditions.iter().any(|c| c.type_ == "Granted" && c.status == "True").then_some(())
        })
        .await;
    }

    // A refresh token for each group.
    let mut refresh_tokens = Vec::new();
    for ns in [&b, &c] {
        *group.lock().unwrap() = ns.name.clone();
        let (verifier, challenge) = pkce();
        let answer = authorize(&hydra, &client_id, redirect_uri, &challenge, "read offline").await;
        let code = answer.iter().find(|(k, _)| k == "code").map(|(_, v)| v.clone());
        let code = code.unwrap_or_else(|| panic!("{} gets a code: {answer:?}", ns.name));
        let (status_code, tokens) = exchange(&hydra, &client_id, redirect_uri, &code, Some(&verifier)).await;
        assert_eq!(status_code, 200, "{tokens}");
        let token = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();
        let (status_code, tokens) = refresh(&hydra, &client_id, &token).await;
        assert_eq!(status_code, 200, "refresh while allowed: {tokens}");
        refresh_tokens.push(tokens["refresh_token"].as_str().expect("the next refresh token").to_owned());
    }

    // Refreshes until one is refused (a refresh token is single-use: each
    // success hands over the next one), and returns the refusal.
    let refused = |first: String| {
        let (hydra, client_id) = (&hydra, client_id.clone());
        let tokens = std::sync::Mutex::new(first);
        async move {
            eventually("the refresh to be refused", TIMEOUT, || async {
                let current = tokens.lock().unwrap().clone();
                let (status_code, answer) = refresh(hydra, &client_id, &current).await;
                if status_code == 200 {
                    *tokens.lock().unwrap() = answer["refresh_token"].as_str().expect("refresh token").to_owned();
                    return None;
                }
                Some((status_code, answer))
            })
            .await
        }
    };

    // C removes its consent: C's refresh is refused, B's still works.
    c.api::<AppConsent>().delete("reports", &DeleteParams::default()).await.expect("remove consent");
    let (status_code, answer) = refused(refresh_tokens[1].clone()).await;
    assert_eq!((status_code, answer["error"].as_str()), (403, Some("access_denied")), "{answer}");
    let (status_code, tokens) = refresh(&hydra, &client_id, &refresh_tokens[0]).await;
    assert_eq!(status_code, 200, "B still refreshes: {tokens}");
    refresh_tokens[0] = tokens["refresh_token"].as_str().expect("refresh token").to_owned();

    // The organization removes the allowlist entry: B's refresh is refused.
    let revoke = Patch::Merge(json!({ "spec": { "allowlist": [] } }));
    let revoked = Instant::now();
    policies.patch(&org, &PatchParams::default(), &revoke).await.expect("remove the entry");
    let (status_code, answer) = refused(refresh_tokens[0].clone()).await;
    eprintln!("allowlist entry removed → refresh refused at Hydra: {:?}", revoked.elapsed());
    assert_eq!((status_code, answer["error"].as_str()), (403, Some("access_denied")), "{answer}");
    // Both refusals were the registry's, for the reasons expected.
    for reason in ["not_consented", "not_allowlisted"] {
        let line = format!("registrar_registry_token_refusals_total{{reason=\"{reason}\"}}");
        assert!(operator.metric(&line).await >= 1.0, "{line}");
    }

    let _ = policies.delete(&org, &DeleteParams::default()).await;
    for ns in [owner_ns, b, c] {
        let _ = kube::Api::<Namespace>::all(ns.client.clone()).delete(&ns.name, &DeleteParams::default()).await;
    }
}

/// A public client with PKCE through Hydra's authorization-code flow, with
/// a login and consent app that asks registrar's authorize-check about the
/// user's group: it succeeds for a group that consented; after Remove Consent
/// it fails for that group and still succeeds for another consenting group;
/// the code exchange needs the S256 verifier.
#[tokio::test]
async fn a_public_client_completes_pkce_at_hydra_for_consenting_groups_only() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ObjectMeta, PostParams};
    use registrar::api::{AppConsent, AppConsentSpec, AppRef, Scope};

    let run = format!("{:08x}", rand::random::<u32>());
    let org = format!("pkce-{run}");
    let labels = [("registrar.dev/organization", org.as_str())];
    let owner_ns = TestNamespace::labelled("pkce-a", &labels).await;
    install_registrar(&owner_ns.client).await;
    let b = TestNamespace::labelled("pkce-b", &labels).await;
    let c = TestNamespace::labelled("pkce-c", &labels).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let login_base = format!("http://{}", listener.local_addr().expect("addr"));
    let hydra = Hydra::start(&login_base).await;
    let selector = format!("e2e.registrar.dev/run={run}");
    let mut args = vec!["--selector".to_string(), selector];
    args.extend(hydra.operator_args("60s"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_operator, port) = crate::support::registry::registry_operator(&args).await;
    let group = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    login_consent::serve(
        listener,
        login_consent::App {
            hydra_admin: hydra.admin_url(),
            registry: format!("http://127.0.0.1:{port}"),
            registry_token: crate::support::registry::caller_token(&owner_ns, "login-app", true).await,
            group: group.clone(),
            http: reqwest::Client::new(),
        },
    );

    let redirect_uri = "http://127.0.0.1:8123/callback";
    let mut app = confidential("spa");
    app.metadata.labels = Some([("e2e.registrar.dev/run".to_string(), run.clone())].into());
    app.spec.scope = Scope::Organization;
    app.spec.public_client = Some(true);
    app.spec.require_pkce = Some(true);
    app.spec.redirect_uris = vec![redirect_uri.into()];
    apply(&owner_ns, &app).await;
    let app = wait_app(&owner_ns, "spa", "the public client to be registered", registered).await;
    let client_id = status(&app).client_id.expect("Client ID");
    let client = hydra.client(&client_id).await.expect("at Hydra");
    assert_eq!(client["token_endpoint_auth_method"], json!("none"));
    for ns in [&b, &c] {
        let consent = AppConsent {
            metadata: ObjectMeta {
                name: Some("spa".into()),
                labels: Some([("e2e.registrar.dev/run".to_string(), run.clone())].into()),
                ..Default::default()
            },
            spec: AppConsentSpec {
                app_ref: AppRef { namespace: owner_ns.name.clone(), name: "spa".into() },
                oauth_scopes: None,
            },
            status: None,
        };
        ns.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("consent");
        eventually("the consent to be granted", TIMEOUT, || async {
            let c = ns.api::<AppConsent>().get("spa").await.ok()?;
            c.status?.conditions.iter().any(|c| c.type_ == "Granted" && c.status == "True").then_some(())
        })
        .await;
    }

    let flow = |ns: &TestNamespace| {
        let ns_name = ns.name.clone();
        let (group, hydra, client_id) = (group.clone(), &hydra, client_id.clone());
        async move {
            *group.lock().unwrap() = ns_name;
            let (verifier, challenge) = pkce();
            let answer = authorize(hydra, &client_id, redirect_uri, &challenge, "read").await;
            let get = |k: &str| answer.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            (get("code"), get("error"), verifier)
        }
    };

    // Group B consented: the flow completes; the exchange needs the verifier.
    let (code, error, _) = flow(&b).await;
    let code = code.unwrap_or_else(|| panic!("no code: {error:?}"));
    let (status_code, answer) = exchange(&hydra, &client_id, redirect_uri, &code, None).await;
    assert_eq!(status_code, 400, "no verifier, no token: {answer}");
    let (code, _, _) = flow(&b).await;
    let (status_code, _) = exchange(&hydra, &client_id, redirect_uri, &code.expect("code"), Some(&pkce().0)).await;
    assert_eq!(status_code, 400, "a verifier of another challenge, no token");
    let (code, _, verifier) = flow(&b).await;
    let (status_code, answer) = exchange(&hydra, &client_id, redirect_uri, &code.expect("code"), Some(&verifier)).await;
    assert_eq!(status_code, 200, "{answer}");
    let introspected = hydra.introspect(answer["access_token"].as_str().expect("token")).await;
    assert_eq!(introspected["client_id"], json!(client_id));
    assert_eq!(introspected["sub"], json!(format!("user@{}", b.name)));

    // Remove Consent in B: refused for B, still fine for C.
    b.api::<AppConsent>().delete("spa", &DeleteParams::default()).await.expect("remove consent");
    eventually("B's flow to be refused", TIMEOUT, || async {
        let (code, error, _) = flow(&b).await;
        (code.is_none() && error.as_deref() == Some("access_denied")).then_some(())
    })
    .await;
    let (code, error, verifier) = flow(&c).await;
    let code = code.unwrap_or_else(|| panic!("C still consents: {error:?}"));
    assert_eq!(exchange(&hydra, &client_id, redirect_uri, &code, Some(&verifier)).await.0, 200);

    for ns in [owner_ns, b, c] {
        let _ = kube::Api::<Namespace>::all(ns.client.clone()).delete(&ns.name, &DeleteParams::default()).await;
    }
}

/// 1,000 apps at Hydra (four pages of its client list): Hydra restarted empty
/// has every client back within one comparison period, and deleting their
/// namespace leaves none of them behind.
#[tokio::test]
async fn a_thousand_apps_come_back_after_a_hydra_restart_and_leave_nothing_when_their_namespace_goes() {
    const APPS: usize = 1000;
    let ns = TestNamespace::new("hydra-many").await;
    install_registrar(&ns.client).await;
    let mut hydra = Hydra::start("http://127.0.0.1:1").await;
    let mut args: Vec<String> = vec!["--watch-namespace".into(), ns.name.clone()];
    args.extend(hydra.operator_args("2s"));
    // A cheap argon2id cost: this test is about Hydra, not hashing.
    args.extend(["--argon2-memory-kib", "256", "--argon2-iterations", "1"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start_with(&args).await;
    let owner = Hydra::cluster_owner(&ns.client).await;

    let started = Instant::now();
    let names: Vec<String> = (0..APPS).map(|i| format!("app-{i:04}")).collect();
    for chunk in names.chunks(50) {
        futures::future::join_all(chunk.iter().map(|n| async { apply(&ns, &worker(n)).await })).await;
    }
    eventually("every app to be registered at Hydra", Duration::from_secs(300), || async {
        (hydra.clients_of(&owner).await.len() == APPS).then_some(())
    })
    .await;
    eprintln!("{APPS} apps registered at Hydra {:?} after the first apply", started.elapsed());

    hydra.restart().await;
    let restarted = Instant::now();
    eventually("every client back at Hydra after its restart", Duration::from_secs(120), || async {
        (hydra.clients_of(&owner).await.len() == APPS).then_some(())
    })
    .await;
    eprintln!("Hydra restarted empty: all {APPS} clients back {:?} later (comparison every 2s)", restarted.elapsed());

    let deleted = Instant::now();
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .delete(&ns.name, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    eventually("no client of the namespace left at Hydra", Duration::from_secs(300), || async {
        hydra.clients_of(&owner).await.is_empty().then_some(())
    })
    .await;
    eprintln!("namespace with {APPS} apps deleted: none of their clients left at Hydra {:?} later", deleted.elapsed());
}

/// Sends `signal` (STOP, CONT) to Hydra's process: frozen, it takes
/// connections and answers nothing.
fn signal_hydra(hydra: &Hydra, signal: &str) {
    let pid = hydra.pid().expect("Hydra's process").to_string();
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Deleting an app while Hydra answers nothing: its finalizer waits for
/// Hydra (the app, and its client there, stay; a Warning says so), and once
/// Hydra answers the client is deleted before the app goes, so no token is
/// issued after the deletion completed. Past --auth-server-deregister-within
/// the deletion completes without Hydra, says so (Event, metric), and the
/// comparison deletes the client once Hydra answers.
#[tokio::test]
async fn a_deletion_waits_for_hydra_within_a_bound() {
    let ns = TestNamespace::new("hydra-wait").await;
    install_registrar(&ns.client).await;
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let mut args: Vec<String> = vec!["--watch-namespace".into(), ns.name.clone()];
    args.extend(hydra.operator_args("2s"));
    args.extend(["--auth-server-deregister-within".into(), "20s".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&args).await;
    let mut creds = Vec::new();
    for name in ["waits", "gives-up"] {
        apply(&ns, &worker(name)).await;
        wait_app(&ns, name, "the app to be registered at Hydra", registered).await;
        creds.push(mounted(&wait_issued(&ns, name).await.1));
    }
    let apps = ns.api::<AppRegistration>();
    let gone = |name: &'static str| {
        let apps = apps.clone();
        async move { apps.get_opt(name).await.ok()?.is_none().then_some(()) }
    };

    // Frozen while "waits" is deleted: the app stays until Hydra answers.
    signal_hydra(&hydra, "STOP");
    apps.delete("waits", &DeleteParams::default()).await.expect("delete");
    let waiting = wait_event(&ns, "NotDeregistered", "retrying").await;
    assert!(waiting.message.as_deref().unwrap_or_default().contains(&creds[0].client_id));
    assert!(apps.get_opt("waits").await.expect("get").is_some(), "the finalizer waits for Hydra");
    signal_hydra(&hydra, "CONT");
    eventually("the deletion to complete once Hydra answers", TIMEOUT, || gone("waits")).await;
    assert!(hydra.client(&creds[0].client_id).await.is_none(), "the client went before the app");
    let (code, _) = hydra.client_credentials(&creds[0].client_id, &creds[0].client_secret, "read").await;
    assert_eq!(code, 401, "no token after the deletion completed");

    // Frozen for longer than the bound: the deletion completes without Hydra.
    signal_hydra(&hydra, "STOP");
    let started = Instant::now();
    apps.delete("gives-up", &DeleteParams::default()).await.expect("delete");
    eventually("the deletion to complete past the bound", TIMEOUT, || gone("gives-up")).await;
    let took = started.elapsed();
    eprintln!("deleted without Hydra after {took:?} (bound 20 s)");
    assert!(took >= Duration::from_secs(20), "not before the bound: {took:?}");
    wait_event(&ns, "DeregistrationDeferred", "next comparison").await;
    assert_eq!(operator.metric("registrar_authserver_deregistrations_deferred_total").await, 1.0);
    signal_hydra(&hydra, "CONT");
    eventually("the comparison to delete the client", TIMEOUT, || async {
        hydra.client(&creds[1].client_id).await.is_none().then_some(())
    })
    .await;
    let (code, _) = hydra.client_credentials(&creds[1].client_id, &creds[1].client_secret, "read").await;
    assert_eq!(code, 401);
    drop(operator);
    ns.delete().await;
}

/// Create/delete churn against Hydra while workloads keep asking it for
/// tokens: the token requests write to Hydra's database beside the
/// deletions, and Hydra answers some deletions "Unable to serialize access
/// due to a concurrent update in another session" (400). 30 apps stay while
/// 40 are created and deleted four times over. Once a deleted app is gone,
/// Hydra holds no client for it and gives its credentials no token; the 30
/// keep theirs.
#[tokio::test]
async fn churn_leaves_no_deleted_app_with_a_client_at_hydra() {
    use futures::future::join_all;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let (ns, hydra, operator) = setup("hydra-churn", "60s").await;
    let apps = ns.api::<AppRegistration>();
    let issue = |names: Vec<String>| {
        let ns = &ns;
        async move {
            join_all(names.iter().map(|name| async move { apply(ns, &worker(name)).await })).await;
            join_all(names.iter().map(|name| async move {
                wait_app(ns, name, "registered at Hydra", registered).await;
                mounted(&wait_issued(ns, name).await.1)
            }))
            .await
        }
    };
    let staying = issue((0..30).map(|i| format!("stay-{i:02}")).collect()).await;

    // Eight workloads asking for tokens with the staying credentials, for as
    // long as the churn lasts.
    let churning = AtomicBool::new(true);
    let tokens = AtomicUsize::new(0);
    let load = join_all((0..8).map(|worker| {
        let (hydra, staying, churning, tokens) = (&hydra, &staying, &churning, &tokens);
        async move {
            for c in staying.iter().cycle().skip(worker * 4) {
                if !churning.load(Ordering::Relaxed) {
                    break;
                }
                hydra.client_credentials(&c.client_id, &c.client_secret, "read").await;
                tokens.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    let churn = async {
        let mut after_deletion = Vec::new();
        for cycle in 0..4 {
            let names: Vec<String> = (0..40).map(|i| format!("churn-{cycle}-{i:02}")).collect();
            let creds = issue(names.clone()).await;
            let deleted = join_all(names.iter().zip(&creds).map(|(name, c)| {
                let apps = apps.clone();
                let hydra = &hydra;
                async move {
                    apps.delete(name, &DeleteParams::default()).await.expect("delete");
                    eventually(&format!("{name} to be gone"), TIMEOUT, || async {
                        apps.get_opt(name).await.ok()?.is_none().then_some(())
                    })
                    .await;
                    // The deletion completed: nothing of the client may be
                    // left. (Hydra, busy too, may answer the token request
                    // 500: that is no answer, ask again.)
                    let code = eventually(&format!("Hydra to answer {name}'s token request"), TIMEOUT, || async {
                        let (code, _) = hydra.client_credentials(&c.client_id, &c.client_secret, "read").await;
                        (code < 500).then_some(code)
                    })
                    .await;
                    let there = hydra.client(&c.client_id).await.is_some();
                    (code != 401 || there).then(|| format!("{name}: token answer {code}, client still there: {there}"))
                }
            }))
            .await;
            after_deletion.extend(deleted.into_iter().flatten());
        }
        churning.store(false, Ordering::Relaxed);
        after_deletion
    };
    let (_, after_deletion) = futures::join!(load, churn);
    let busy = operator.metric("registrar_authserver_calls_total{call=\"delete\",outcome=\"Unavailable\"}").await;
    eprintln!(
        "160 deletions under churn beside {} token requests; deletions that still failed after the quick retries: {busy}",
        tokens.load(Ordering::Relaxed)
    );
    assert!(after_deletion.is_empty(), "deleted apps still at Hydra: {after_deletion:?}");
    for c in &staying {
        let code = eventually("Hydra to answer a staying app's token request", TIMEOUT, || async {
            let (code, _) = hydra.client_credentials(&c.client_id, &c.client_secret, "read").await;
            (code < 500).then_some(code)
        })
        .await;
        assert_eq!(code, 200);
    }
    drop(operator);
    ns.delete().await;
}
