//! A caller of the registry API in tests: a ServiceAccount token bound (or
//! not) to the registry's verbs, a plain HTTP client, and the operator serving
//! the registry on a free loopback port.

use std::time::Duration;

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{TestNamespace, eventually, operator::Operator};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A caller (an authorization server's ServiceAccount) and the registry's address.
#[derive(Clone)]
pub struct Caller {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// A ServiceAccount token; `allowed` binds it to the registry's verbs.
pub async fn caller_token(ns: &TestNamespace, name: &str, allowed: bool) -> String {
    if !allowed {
        return service_account_token(ns, name).await;
    }
    let role_name = format!("{}-{name}", ns.name);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role_name },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["registry"], "verbs": ["get", "create"] }]
    }))
    .expect("role");
    Api::<ClusterRole>::all(ns.client.clone()).create(&PostParams::default(), &role).await.expect("ClusterRole");
    caller_token_bound_to(ns, name, &role_name).await
}

/// A token of a new ServiceAccount bound to the ClusterRole `role`.
pub async fn caller_token_bound_to(ns: &TestNamespace, name: &str, role: &str) -> String {
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("{}-{name}", ns.name) },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns.name }]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(ns.client.clone()).create(&PostParams::default(), &binding).await.expect("binding");
    let token = service_account_token(ns, name).await;
    // The apiserver's RBAC cache learns of the binding asynchronously.
    let user = format!("system:serviceaccount:{}:{name}", ns.name);
    eventually("the caller's permission to take effect", TIMEOUT, || async {
        super::allowed(&ns.client, &user, "registrar.dev", "registry", "create").await.then_some(())
    })
    .await;
    token
}

/// The audience registry callers' tokens are issued for (the operator's default).
pub const AUDIENCE: &str = "registrar";

/// A token of a new ServiceAccount for the registry's audience.
pub async fn service_account_token(ns: &TestNamespace, name: &str) -> String {
    service_account_token_for(ns, name, Some(AUDIENCE)).await
}

/// A token of a new ServiceAccount for `audience` (`None`: the apiserver's default).
pub async fn service_account_token_for(ns: &TestNamespace, name: &str, audience: Option<&str>) -> String {
    let accounts = ns.api::<ServiceAccount>();
    let sa =
        ServiceAccount { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    accounts.create(&PostParams::default(), &sa).await.expect("ServiceAccount");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            audiences: audience.map(|a| vec![a.to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = accounts.create_token_request(name, &PostParams::default(), &request).await.expect("token");
    issued.status.and_then(|s| s.token).expect("a token")
}

impl Caller {
    pub async fn new(ns: &TestNamespace, port: u16) -> Self {
        Caller { base: format!("http://127.0.0.1:{port}"), token: caller_token(ns, "authz", true).await, http: http() }
    }

    pub async fn authenticate(&self, client_id: &str, secret: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/clients/authenticate", self.base))
            .header("x-registry-authorization", format!("Bearer {}", self.token))
            .basic_auth(client_id, Some(secret))
            .send()
            .await
            .expect("authenticate");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn lookup(&self, client_id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/v1/clients/{client_id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("lookup");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The lookup of a client the test saw issued, once the operator's cache
    /// has it too (the status the test read may be ahead of the operator's
    /// watch): the first answer other than 404.
    pub async fn lookup_issued(&self, client_id: &str) -> (StatusCode, Value) {
        eventually("the registry to know the client", TIMEOUT, || async {
            let answer = self.lookup(client_id).await;
            (answer.0 != StatusCode::NOT_FOUND).then_some(answer)
        })
        .await
    }

    pub async fn authorize(&self, client_id: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/clients/{client_id}/authorize-check", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("authorize-check");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }
}

pub fn reason(answer: &Value) -> &str {
    if answer["allowed"] == json!(true) { "allowed" } else { answer["reason"].as_str().unwrap_or("?") }
}

pub fn secret_of(secret: &Secret) -> String {
    String::from_utf8(secret.data.as_ref().expect("data")["client_secret"].0.clone()).expect("utf-8")
}

/// An operator serving the registry over plain HTTP on a loopback port it
/// binds itself, and that port.
pub async fn registry_operator(args: &[&str]) -> (Operator, u16) {
    let mut all = vec!["--registry-addr", "127.0.0.1:0", "--registry-insecure-http"];
    all.extend_from_slice(args);
    let operator = Operator::start_with(&all).await;
    let port = operator.registry_port().expect("the registry's port");
    (operator, port)
}
