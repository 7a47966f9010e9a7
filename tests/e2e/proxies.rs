//! Real reverse proxies — nginx with `auth_request`, Caddy with
//! `forward_auth`, from Debian's packages — in front of an upstream the test
//! serves, asking registrar's forward-auth endpoint about each request's
//! client credentials.

use std::time::{Duration, Instant};

use axum::{Json, Router, http::HeaderMap, routing::get};
use kube::api::{DeleteParams, Patch, PatchParams};
use registrar::api::AppRegistration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, secret_value, status, wait_app, wait_issued},
    eventually, install_registrar,
    proxies::{Kind, Proxy},
    registry::{caller_token, http, registry_operator},
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// An upstream that answers with the client headers the proxy passed on.
async fn upstream() -> u16 {
    async fn echo(headers: HeaderMap) -> Json<Value> {
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        Json(json!({ "clientId": header("x-client-id"), "clientNamespace": header("x-client-namespace") }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, Router::new().route("/{*path}", get(echo))).await });
    port
}

async fn get_through(proxy: &Proxy, client_id: &str, secret: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("http://127.0.0.1:{}/orders", proxy.port))
        .basic_auth(client_id, Some(secret))
        .send()
        .await
        .expect("request through the proxy");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Through the proxy: valid client credentials reach the upstream with
/// X-Client-Id and X-Client-Namespace; a wrong secret, a secret rotated out
/// (gracePeriod 0) and a revoked app are refused.
async fn clients_are_authenticated_through(kind: Kind) {
    let ns = TestNamespace::new(&format!("proxy-{kind:?}").to_lowercase()).await;
    install_registrar(&ns.client).await;
    let (_operator, registry) = registry_operator(&["--watch-namespace", &ns.name]).await;
    let token = caller_token(&ns, "proxy", true).await;
    let proxy = Proxy::start(kind, registry, &token, upstream().await).await;
    apply(&ns, &confidential("web")).await;
    let (app, secret) = wait_issued(&ns, "web").await;
    let client_id = status(&app).client_id.expect("id");
    let old = secret_value(&secret, "client_secret").expect("secret");

    let (code, seen) = get_through(&proxy, &client_id, &old).await;
    assert_eq!(code, StatusCode::OK, "{seen} / {}", proxy.log());
    assert_eq!(seen, json!({ "clientId": client_id, "clientNamespace": ns.name }));
    let (code, _) = get_through(&proxy, &client_id, "not-the-secret").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "a wrong secret is refused");
    let (code, _) = get_through(&proxy, "no-such-client", &old).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "an unknown client is refused");

    // Rotate (gracePeriod 0): the old secret is refused through the proxy.
    let rotate = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "r1" } } }));
    let asked = Instant::now();
    ns.api::<AppRegistration>().patch("web", &PatchParams::default(), &rotate).await.expect("rotate");
    let refused_after = eventually("the old secret to be refused through the proxy", TIMEOUT, || async {
        (get_through(&proxy, &client_id, &old).await.0 == StatusCode::UNAUTHORIZED).then(|| asked.elapsed())
    })
    .await;
    eprintln!("{kind:?}: rotate annotation → old secret refused through the proxy: {refused_after:?}");
    wait_app(&ns, "web", "the rotation", |a| status(a).secret_version == Some(2)).await;
    let (_, rotated) = wait_issued(&ns, "web").await;
    let new = secret_value(&rotated, "client_secret").expect("secret");
    assert_eq!(get_through(&proxy, &client_id, &new).await.0, StatusCode::OK, "the new secret passes");

    // Revoke: refused.
    ns.api::<AppRegistration>().delete("web", &DeleteParams::default()).await.expect("delete");
    eventually("the revoked app to be refused through the proxy", TIMEOUT, || async {
        (get_through(&proxy, &client_id, &new).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn nginx_auth_request_authenticates_clients_through_the_registry() {
    clients_are_authenticated_through(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_forward_auth_authenticates_clients_through_the_registry() {
    clients_are_authenticated_through(Kind::Caddy).await;
}
