//! The registry API with a real HTTP client: callers authenticated by
//! TokenReview and authorized by SubjectAccessReview; client authentication
//! across rotations, grace periods and revocation; authorization checks; the
//! catalog; forward-auth; TLS; load shedding.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use registrar::api::{AppConsent, AppConsentSpec, AppRef, AppRegistration, Rotation, Scope};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::registration::{apply, confidential, status, wait_app, wait_issued};
pub(crate) use crate::support::registry::*;
use crate::support::{TestNamespace, control_plane, eventually, free_port, install_registrar, operator::Operator};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn authentication_follows_rotation_grace_and_revocation() {
    let ns = TestNamespace::new("registry-auth").await;
    install_registrar(&ns.client).await;
    let (operator, port) = registry_operator(&["--watch-namespace", &ns.name]).await;
    let caller = Caller::new(&ns, port).await;

    apply(&ns, &confidential("api")).await;
    let (app, secret) = wait_issued(&ns, "api").await;
    let client_id = status(&app).client_id.expect("client id");
    let first = secret_of(&secret);
    let (code, body) = caller.authenticate(&client_id, &first).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["clientId"], json!(client_id));
    assert_eq!(body["namespace"], json!(ns.name));

    // Wrong secret and unknown client look the same.
    let (code, wrong) = caller.authenticate(&client_id, "not-the-secret").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, unknown) = caller.authenticate("no-such-client", "x").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], json!("invalid_client"));
    // Form fields work too (RFC 6749 §2.3.1).
    let form = format!("client_id={client_id}&client_secret={}", first);
    let response = caller
        .http
        .post(format!("{}/v1/clients/authenticate", caller.base))
        .bearer_auth(&caller.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("form");
    assert_eq!(response.status(), StatusCode::OK);

    // Lookup shows the client, no secret or hash.
    let (code, view) = caller.lookup(&client_id).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(view["redirectUris"], json!(["https://app.example.com/callback"]));
    assert_eq!(view["state"], json!("active"));
    let text = view.to_string();
    assert!(!text.contains("argon2") && !text.contains(&first));

    // Rotation with gracePeriod 0: the old secret fails on the next request.
    let patch = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "r1" } } }));
    ns.api::<AppRegistration>().patch("api", &PatchParams::default(), &patch).await.expect("rotate");
    let annotated = tokio::time::Instant::now();
    eventually("the old secret to be refused", TIMEOUT, || async {
        (caller.authenticate(&client_id, &first).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    eprintln!("annotation to old-secret-401: {:?}", annotated.elapsed());
    let (app, secret) = wait_issued(&ns, "api").await;
    assert_eq!(status(&app).secret_version, Some(2));
    let second = secret_of(&secret);
    assert_eq!(caller.authenticate(&client_id, &second).await.0, StatusCode::OK);

    // With a grace period both verify until it ends.
    let mut graced = confidential("api");
    graced.spec.rotation = Some(Rotation { grace_period: Some("1m".parse().expect("duration")), interval: None });
    graced.metadata.annotations = Some(BTreeMap::from([("registrar.dev/rotate".into(), "r2".into())]));
    apply(&ns, &graced).await;
    wait_app(&ns, "api", "the graceful rotation", |a| status(a).secret_version == Some(3)).await;
    let (_, secret) = wait_issued(&ns, "api").await;
    let third = secret_of(&secret);
    assert_eq!(caller.authenticate(&client_id, &third).await.0, StatusCode::OK);
    assert_eq!(
        caller.authenticate(&client_id, &second).await.0,
        StatusCode::OK,
        "the previous secret, in its grace period"
    );
    assert_eq!(caller.authenticate(&client_id, &first).await.0, StatusCode::UNAUTHORIZED);
    // End the grace period early (back-dated under the operator's field manager).
    let apps = ns.api::<AppRegistration>();
    let mut st = status(&apps.get("api").await.expect("get"));
    st.previous_secret_expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(Timestamp::now().as_second() - 1).expect("time"),
    ));
    let patch =
        Patch::Apply(json!({ "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "status": st }));
    apps.patch_status("api", &PatchParams::apply("registrar").force(), &patch).await.expect("back-date");
    eventually("the previous secret to expire", TIMEOUT, || async {
        (caller.authenticate(&client_id, &second).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(caller.authenticate(&client_id, &third).await.0, StatusCode::OK);

    // Forward-auth for reverse proxies.
    let response = caller
        .http
        .get(format!("{}/v1/forward-auth", caller.base))
        .header("x-registry-authorization", format!("Bearer {}", caller.token))
        .basic_auth(&client_id, Some(&third))
        .send()
        .await
        .expect("forward-auth");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-client-id"], client_id.as_str());
    assert_eq!(response.headers()["x-client-namespace"], ns.name.as_str());
    let response = caller
        .http
        .get(format!("{}/v1/forward-auth", caller.base))
        .header("x-registry-authorization", format!("Bearer {}", caller.token))
        .basic_auth(&client_id, Some("wrong"))
        .send()
        .await
        .expect("forward-auth");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Revoke: 401, 404 and "revoked" at once.
    apps.delete("api", &DeleteParams::default()).await.expect("delete");
    let deleted = tokio::time::Instant::now();
    eventually("the deleted client to be refused", TIMEOUT, || async {
        (caller.authenticate(&client_id, &third).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    eprintln!("delete to 401: {:?}", deleted.elapsed());
    assert_eq!(caller.lookup(&client_id).await.0, StatusCode::NOT_FOUND);
    let answer = caller
        .authorize(&client_id, json!({ "redirect_uri": "https://app.example.com/callback", "group": ns.name }))
        .await;
    assert_eq!(reason(&answer), "revoked");
    let log = operator.log();
    for s in [&first, &second, &third] {
        assert!(!log.contains(s.as_str()), "a secret appears in the operator log");
    }
    ns.delete().await;
}

#[tokio::test]
async fn authorize_check_matches_redirects_pkce_consent_and_scopes() {
    let run = format!("{:08x}", rand::random::<u32>());
    let org = format!("acme-{run}");
    let team_a = TestNamespace::labelled("registry-a", &[("registrar.dev/organization", &org)]).await;
    install_registrar(&team_a.client).await;
    let team_b = TestNamespace::labelled("registry-b", &[("registrar.dev/organization", &org)]).await;
    let team_c = TestNamespace::labelled("registry-c", &[("registrar.dev/organization", &org)]).await;
    let selector = format!("e2e.registrar.dev/run={run}");
    let (_operator, port) = registry_operator(&["--selector", &selector]).await;
    let caller = Caller::new(&team_a, port).await;
    let labels = BTreeMap::from([("e2e.registrar.dev/run".to_string(), run.clone())]);

    let mut app = confidential("web");
    app.metadata.labels = Some(labels.clone());
    app.spec.scope = Scope::Organization;
    app.spec.require_pkce = Some(true);
    app.spec.redirect_uris = vec!["https://app.example.com/cb".into(), "http://127.0.0.1/cb".into()];
    app.spec.oauth_scopes = vec!["read".into(), "write".into()];
    apply(&team_a, &app).await;
    let (issued, _) = wait_issued(&team_a, "web").await;
    let client_id = status(&issued).client_id.expect("client id");
    for ns in [&team_b, &team_c] {
        let consent = AppConsent {
            metadata: ObjectMeta { name: Some("web".into()), labels: Some(labels.clone()), ..Default::default() },
            spec: AppConsentSpec {
                app_ref: AppRef { namespace: team_a.name.clone(), name: "web".into() },
                oauth_scopes: Some(vec!["read".into()]),
            },
            status: None,
        };
        ns.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("consent");
    }
    wait_app(&team_a, "web", "two consents", |a| status(a).consents.as_ref().is_some_and(|c| c.count == 2)).await;

    let check = |uri: &str, group: &str, method: Option<&str>, scope: &str| {
        let mut body = json!({ "redirect_uri": uri, "group": group, "scope": scope });
        if let Some(m) = method {
            body["code_challenge_method"] = json!(m);
        }
        body
    };
    let b = team_b.name.as_str();
    let cases = [
        (check("https://app.example.com/cb", b, Some("S256"), "read"), "allowed"),
        (check("https://app.example.com/cb/../x", b, Some("S256"), "read"), "redirect_mismatch"),
        (check("https://app.example.com:8443/cb", b, Some("S256"), "read"), "redirect_mismatch"),
        (check("https://app.example.com/cb", b, Some("plain"), "read"), "pkce_method_not_allowed"),
        (check("https://app.example.com/cb", b, None, "read"), "pkce_required"),
        (check("http://127.0.0.1:9999/cb", b, Some("S256"), "read"), "allowed"),
        (check("https://app.example.com/cb", b, Some("S256"), "read write"), "scope_not_granted"),
        (check("https://app.example.com/cb", &team_a.name, Some("S256"), "read write"), "allowed"),
    ];
    for (body, want) in cases {
        let answer = caller.authorize(&client_id, body.clone()).await;
        assert_eq!(reason(&answer), want, "{body}");
    }

    // Catalog: team-b sees the Organization app, consented.
    let catalog: Value = caller
        .http
        .get(format!("{}/v1/catalog?namespace={b}", caller.base))
        .bearer_auth(&caller.token)
        .send()
        .await
        .expect("catalog")
        .json()
        .await
        .expect("json");
    let apps = catalog["organizationApps"].as_array().expect("organizationApps");
    let entry = apps.iter().find(|e| e["clientId"] == json!(client_id)).expect("the app is listed");
    assert_eq!(entry["consented"], json!(true));
    assert!(!catalog.to_string().contains("argon2"));

    // Removing team-b's consent affects only team-b.
    team_b.api::<AppConsent>().delete("web", &DeleteParams::default()).await.expect("remove consent");
    eventually("team-b to lose access", TIMEOUT, || async {
        let answer = caller.authorize(&client_id, check("https://app.example.com/cb", b, Some("S256"), "read")).await;
        (reason(&answer) == "not_consented").then_some(())
    })
    .await;
    let answer =
        caller.authorize(&client_id, check("https://app.example.com/cb", &team_c.name, Some("S256"), "read")).await;
    assert_eq!(reason(&answer), "allowed");
    for ns in [team_c, team_b, team_a] {
        ns.delete().await;
    }
}

#[tokio::test]
async fn callers_need_a_token_and_permission_and_failures_are_throttled() {
    let ns = TestNamespace::new("registry-callers").await;
    install_registrar(&ns.client).await;
    let (_operator, port) = registry_operator(&["--watch-namespace", &ns.name, "--registry-hash-workers", "1"]).await;
    let caller = Caller::new(&ns, port).await;
    apply(&ns, &confidential("api")).await;
    let (app, credentials) = wait_issued(&ns, "api").await;
    let client_id = status(&app).client_id.expect("client id");

    let url = format!("{}/v1/clients/{client_id}", caller.base);
    assert_eq!(caller.http.get(&url).send().await.expect("get").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        caller.http.get(&url).bearer_auth("garbage").send().await.expect("get").status(),
        StatusCode::UNAUTHORIZED
    );
    let stranger = caller_token(&ns, "stranger", false).await;
    assert_eq!(caller.http.get(&url).bearer_auth(&stranger).send().await.expect("get").status(), StatusCode::FORBIDDEN);
    assert_eq!(caller.lookup(&client_id).await.0, StatusCode::OK);

    // Oversized bodies are refused.
    let big = "x".repeat(64 * 1024);
    let response = caller
        .http
        .post(format!("{}/v1/clients/authenticate", caller.base))
        .bearer_auth(&caller.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close"),
        "the unread body leaves the connection unusable, so the answer closes it"
    );

    // A burst of the same (right) credentials on a cold cache shares one
    // verification: nothing is shed, even with one hashing turn.
    let secret = secret_of(&credentials);
    let burst = (0..24).map(|_| caller.authenticate(&client_id, &secret));
    let answers: Vec<StatusCode> = futures::future::join_all(burst).await.into_iter().map(|(s, _)| s).collect();
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");

    // Wrong secrets for one client are throttled past a small burst: 429 with
    // Retry-After, without hashing.
    let mut answers = Vec::new();
    for i in 0..20 {
        let response = caller
            .http
            .post(format!("{}/v1/clients/authenticate", caller.base))
            .header("x-registry-authorization", format!("Bearer {}", caller.token))
            .basic_auth(&client_id, Some(format!("wrong-{i}")))
            .send()
            .await
            .expect("authenticate");
        answers.push((response.status(), response.headers().get("retry-after").is_some()));
    }
    assert!(answers[..5].iter().all(|(s, _)| *s == StatusCode::UNAUTHORIZED), "the burst: {answers:?}");
    assert!(answers.iter().any(|(s, retry)| *s == StatusCode::TOO_MANY_REQUESTS && *retry), "{answers:?}");
    assert!(answers.iter().all(|(s, _)| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)));

    ns.delete().await;
}

#[tokio::test]
async fn the_registry_serves_tls_from_certificate_files() {
    let ns = TestNamespace::new("registry-tls").await;
    install_registrar(&ns.client).await;
    // The test control plane's serving certificate covers 127.0.0.1; reuse it.
    let pki = control_plane().kubeconfig().with_file_name("pki");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cert = pki.join("apiserver.crt").display().to_string();
    let key = pki.join("apiserver.key").display().to_string();
    let _operator = Operator::start_with(&[
        "--watch-namespace",
        &ns.name,
        "--registry-addr",
        &addr,
        "--registry-tls-cert",
        &cert,
        "--registry-tls-key",
        &key,
    ])
    .await;
    let token = caller_token(&ns, "authz", true).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.crt")).expect("ca")).expect("ca pem");
    let https = reqwest::Client::builder().add_root_certificate(ca).build().expect("https client");
    let url = format!("https://127.0.0.1:{port}/v1/clients/nobody");
    let status = eventually("the TLS registry to answer", TIMEOUT, || async {
        https.get(&url).bearer_auth(&token).send().await.ok().map(|r| r.status())
    })
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let plain = http().get(format!("http://127.0.0.1:{port}/v1/clients/nobody")).send().await;
    assert!(plain.map(|r| r.status() != StatusCode::NOT_FOUND).unwrap_or(true), "no plain HTTP on the TLS port");
    ns.delete().await;
}
