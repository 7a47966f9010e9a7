//! A mock apiserver for the shells' tests: a kube `Client` whose every request
//! the test receives, checks and answers, one at a time — so a test pins the
//! exact requests a reconcile makes, and that an unchanged object makes none.
//! Built on tower-test's mock service (as kube-rs's controller-rs fixtures are).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use tower_test::mock::{self, Handle, SendResponse};

/// How long a test waits for a request it expects.
const EXPECTED_WITHIN: Duration = Duration::from_secs(5);

/// The apiserver's side of a mock client.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// A client talking to a mock apiserver, and that apiserver.
pub fn pair() -> (kube::Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer(handle))
}

/// One request the client sent, waiting for its answer.
pub struct Received {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    /// The body as JSON (`Null` when empty).
    pub body: serde_json::Value,
    respond: SendResponse<Response<Body>>,
}

impl Received {
    /// Answers with `status` and the JSON `body`.
    pub fn answer(self, status: u16, body: &serde_json::Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("an HTTP status"))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("JSON")))
            .expect("a response");
        self.respond.send_response(response);
    }

    /// Answers with a Kubernetes `Status` failure of `code` and `reason`.
    pub fn fail(self, code: u16, reason: &str) {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("mock apiserver: {reason}"), "reason": reason, "code": code,
        });
        self.answer(code, &status);
    }
}

impl ApiServer {
    /// The next request; panics when none comes within a few seconds.
    pub async fn next(&mut self) -> Received {
        let (request, respond) = tokio::time::timeout(EXPECTED_WITHIN, self.0.next_request())
            .await
            .expect("a request within 5 s")
            .expect("the client is alive");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("the request body");
        let body =
            if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
        Received {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body,
            respond,
        }
    }

    /// Panics if a request comes within `wait`.
    pub async fn expect_none_within(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.0.next_request()).await {
            panic!("no request expected, got {} {}", request.method(), request.uri());
        }
    }
}
