//! The registry API for authorization servers and reverse proxies, served from
//! the operator's caches (no apiserver call per request beyond cached caller
//! checks):
//!
//! - `GET  /v1/clients/{clientId}` — the client, or 404 (unknown or deleted);
//! - `POST /v1/clients/authenticate` — RFC 6749 §2.3.1 client authentication;
//! - `POST /v1/clients/{clientId}/authorize-check` — redirect, PKCE, consent, scopes;
//! - `GET  /v1/catalog?namespace=NS` — the apps NS may enable (Organization and Global);
//! - `GET  /v1/forward-auth` — Basic client credentials for nginx / Caddy / Envoy.
//!
//! What it serves of an app is the last spec the controller accepted
//! (`status.accepted`): an edit it rejects changes nothing here until fixed.
//! Callers are authenticated and authorized in `callers`, credentials read in
//! `client_auth`, secrets verified in `verifier`, the listener is `server`.
//! Never a secret or a hash in a response or a log line.

pub mod authorize;
pub mod callers;
mod catalog;
pub mod client_auth;
mod server;
pub mod verifier;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    api::{AcceptedSpec, AppRegistration, GrantType, Scope},
    cluster::Caches,
    credentials::{ClientSecret, Hasher},
    runtime::Uid,
    runtime::admin_server::Gate,
    runtime::metrics::{Metrics, ReasonLabels, RequestLabels},
    runtime::{Key, key_of},
};
use authorize::{AuthorizeRequest, authorize, token_allowed};
use callers::{Access, Caller, Callers, Refusal};
use client_auth::{bearer, caller_authorization, credentials};
use verifier::{Limits, Outcome, Verifier};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;
/// Longest a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the registry is served.
#[derive(Clone, Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    /// PEM certificate chain and private key; required unless `insecure_http`.
    /// Reloaded when either file changes.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub insecure_http: bool,
    pub platform_namespace: String,
    /// The audience callers' tokens must be issued for.
    pub audience: String,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Failure throttles and the wait for a hashing turn.
    pub limits: Limits,
    /// An authorization server is configured: the registry serves an app
    /// only once it is registered there.
    pub backend: bool,
}

struct Registry {
    caches: Caches,
    verifier: Verifier,
    callers: Callers,
    platform_namespace: String,
    metrics: Metrics,
    /// An authorization server is configured: only apps registered there are served.
    backend: bool,
}

/// Why a request failed, as an HTTP answer with an OAuth-style body.
enum Failure {
    Caller(Refusal),
    NotReady,
    NotFound,
    InvalidClient,
    /// Too much at once (shed, or throttled): retry after this long.
    Busy(Duration),
    BadRequest(&'static str),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Caller(refusal)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            Failure::Caller(Refusal::Unauthenticated) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token for the registry's audience is required",
            ),
            Failure::Caller(Refusal::Forbidden) => {
                (StatusCode::FORBIDDEN, "forbidden", "the caller may not use this registry endpoint in this namespace")
            }
            Failure::Caller(Refusal::Unavailable) | Failure::NotReady => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the registry is not ready")
            }
            Failure::Caller(Refusal::Throttled(after)) => return Failure::Busy(after).into_response(),
            Failure::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such client"),
            Failure::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed"),
            Failure::Busy(after) => {
                let body = json!({ "error": "temporarily_unavailable", "error_description": "too many authentications at once; retry" });
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                let secs = after.as_secs().max(1).to_string();
                if let Ok(value) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return response;
            }
            Failure::BadRequest(what) => (StatusCode::BAD_REQUEST, "invalid_request", what),
        };
        (status, Json(json!({ "error": error, "error_description": description }))).into_response()
    }
}

/// What the registry serves of an app: the last accepted spec, or the spec of
/// an app issued before registrar recorded it.
fn served(app: &AppRegistration) -> AcceptedSpec {
    app.status
        .as_ref()
        .and_then(|s| s.accepted.clone())
        .unwrap_or_else(|| AcceptedSpec::of(&app.spec, app.metadata.generation.unwrap_or_default()))
}

impl Registry {
    /// Authenticates the caller's bearer token; `source` is where it called from.
    async fn caller(&self, headers: &HeaderMap, source: IpAddr) -> Result<Caller, Failure> {
        let token = caller_authorization(headers).and_then(|v| v.to_str().ok()).and_then(bearer);
        Ok(self.callers.authenticate(token, source).await?)
    }

    /// A Client ID the registry places in no namespace (unknown, revoked,
    /// released): only a caller allowed in every namespace learns which; any
    /// other gets the answer it gets for another namespace's client (403),
    /// whatever the Client ID.
    async fn unplaced(&self, caller: &Caller, access: Access) -> Result<(), Failure> {
        Ok(self.callers.authorize(caller, access, callers::EVERY_NAMESPACE).await?)
    }

    fn ready(&self) -> Result<(), Failure> {
        // Lists complete: readiness is tracked by the watches.
        if self.caches.is_synced() { Ok(()) } else { Err(Failure::NotReady) }
    }

    /// The app's Client ID, when the ledger gives it to the app, and its namespace.
    fn held_client_id(&self, app: &AppRegistration) -> Option<(String, String)> {
        let client_id = app.status.as_ref()?.client_id.clone()?;
        let key = key_of(app);
        let held = self.caches.ledger().holds(&key, app.meta().uid.as_deref().unwrap_or_default(), &client_id);
        held.then_some((client_id, key.namespace))
    }

    /// A retained Client ID (`deletionPolicy: Retain`): who retained it, and
    /// the ledger's verifier of its secret (`None`: a public client). Only
    /// while the Secret keeping it exists.
    fn retained(&self, client_id: &str) -> Option<(Identity, Option<String>)> {
        let (Key { namespace: ns, name }, at) = self.caches.ledger().retained(client_id)?;
        self.caches.secret_meta(&ns, &at.secret_name)?;
        Some((Identity { namespace: ns, name, scope: Scope::Group, state: "retained" }, at.verifier))
    }

    /// The app the ledger gives `client_id` to, issued (and, with an
    /// authorization server configured, registered there), and whether it is
    /// being deleted. Anything else — a Client ID no app holds, an app that is
    /// not its holder, an import the server refused because another client of
    /// that ID exists there — is a client the registry does not know.
    fn client(&self, client_id: &str) -> Option<(Arc<AppRegistration>, bool)> {
        let (Key { namespace: ns, name }, uid) = self.caches.ledger().holder(client_id)?;
        let app = self.caches.app(&ns, &name)?;
        if Uid::of(app.meta().uid.as_deref().unwrap_or_default()) != uid {
            return None;
        }
        let status = app.status.as_ref()?;
        let issued = status.client_id.as_deref() == Some(client_id);
        let registered = !self.backend || status.registered_at_server();
        let deleting = app.meta().deletion_timestamp.is_some();
        (issued && registered).then_some((app, deleting))
    }

    /// The scopes `group` may use with `app`: all of the app's in its own
    /// namespace, a granted consent's elsewhere, `None` without one.
    fn granted_scopes(&self, app: &AppRegistration, group: &str) -> Option<Vec<String>> {
        let key = key_of(app);
        if group == key.namespace {
            return Some(served(app).oauth_scopes);
        }
        let client_id = app.status.as_ref()?.client_id.as_deref()?;
        let consent = self.caches.consent_granted_in(group, &key, client_id)?;
        consent.status.as_ref().map(|s| s.granted_scopes.clone())
    }

    /// Whether `group`'s organization policy allows `app` there (its own
    /// namespace always does).
    fn policy_allows(&self, app: &AppRegistration, group: &str) -> bool {
        let key = key_of(app);
        if group == key.namespace {
            return true;
        }
        let Some((client_id, _)) = self.held_client_id(app) else { return false };
        crate::consent::policy_allows(&self.caches, group, &key, &client_id)
    }

    fn consenting_namespaces(&self, app: &AppRegistration) -> Vec<String> {
        app.status.as_ref().and_then(|s| s.consents.as_ref()).map(|c| c.namespaces.clone()).unwrap_or_default()
    }

    /// RFC 6749 §2.3.1 for a caller allowed to check clients of the client's
    /// namespace: is `secret` the current (or, in a grace period, the
    /// previous) secret of `client_id`?
    async fn authenticate(&self, caller: &Caller, client_id: &str, secret: &ClientSecret) -> Result<Identity, Failure> {
        let (identity, accepted) = match self.client(client_id) {
            Some((app, deleting)) => {
                self.callers.authorize(caller, Access::Check, &app.namespace().unwrap_or_default()).await?;
                if deleting {
                    return Err(Failure::InvalidClient);
                }
                let status = app.status.clone().unwrap_or_default();
                let now = Timestamp::now();
                // A minted secret's hashes are in status, a chosen one's in the ledger.
                let key = key_of(app.as_ref());
                let uid = app.meta().uid.as_deref().unwrap_or_default();
                let (current, previous, until) =
                    match (&status.secret_hash, self.caches.ledger().verifiers(&key, uid, client_id)) {
                        (None, Some(v)) => (Some(v.current), v.previous, v.previous_expires_at),
                        _ => (
                            status.secret_hash.clone(),
                            status.previous_secret_hash.clone(),
                            status.previous_secret_expires_at.clone(),
                        ),
                    };
                let previous = previous.filter(|_| until.as_ref().is_some_and(|t| t.0 > now));
                let accepted: Vec<String> = current.into_iter().chain(previous).collect();
                let identity = Identity {
                    namespace: app.namespace().unwrap_or_default(),
                    name: app.name_any(),
                    scope: app.spec.scope,
                    state: "active",
                };
                (identity, accepted)
            }
            None => {
                let Some((identity, hash)) = self.retained(client_id) else {
                    self.unplaced(caller, Access::Check).await?;
                    return Err(Failure::InvalidClient);
                };
                self.callers.authorize(caller, Access::Check, &identity.namespace).await?;
                (identity, hash.into_iter().collect())
            }
        };
        if accepted.is_empty() {
            return Err(Failure::InvalidClient); // a public client has no secret
        }
        let outcome = self.verifier.check(client_id, &identity.namespace, secret, &accepted, &caller.username).await;
        let (label, cache) = match &outcome {
            Outcome::Verified { cached } => ("verified", cached.then_some("verified")),
            Outcome::Wrong { cached } => ("refused", cached.then_some("failed")),
            Outcome::Shed => ("shed", None),
            Outcome::Throttled(_) => ("throttled", None),
        };
        self.metrics.registry_verifications.get_or_create(&ReasonLabels { reason: label.into() }).inc();
        if let Some(cache) = cache {
            self.metrics
                .registry_cache_hits
                .get_or_create(&crate::runtime::metrics::CacheLabels { cache: cache.into() })
                .inc();
        }
        match outcome {
            Outcome::Verified { .. } => Ok(identity),
            Outcome::Wrong { .. } => Err(Failure::InvalidClient),
            Outcome::Shed => Err(Failure::Busy(Duration::from_secs(1))),
            Outcome::Throttled(after) => Err(Failure::Busy(after)),
        }
    }
}

/// The view of a client an authorization server gets. No secret, no hash.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientView {
    client_id: String,
    display_name: String,
    namespace: String,
    name: String,
    scope: Scope,
    public: bool,
    require_pkce: bool,
    redirect_uris: Vec<String>,
    grant_types: Vec<GrantType>,
    oauth_scopes: Vec<String>,
    consenting_namespaces: Vec<String>,
    /// The owner in effect (`kind` absent for a user).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<crate::api::Owner>,
    state: &'static str,
    /// The generation of the spec served (the last one accepted).
    served_generation: i64,
}

async fn lookup(
    State(registry): State<Arc<Registry>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let caller = registry.caller(&headers, source.ip()).await?;
    registry.ready()?;
    let Some((app, deleting)) = registry.client(&client_id) else {
        // Retained: it still authenticates; there is no app to describe.
        let Some((identity, hash)) = registry.retained(&client_id) else {
            registry.unplaced(&caller, Access::Read).await?;
            return Err(Failure::NotFound);
        };
        registry.callers.authorize(&caller, Access::Read, &identity.namespace).await?;
        let body = json!({
            "clientId": client_id,
            "namespace": identity.namespace,
            "name": identity.name,
            "public": hash.is_none(),
            "state": identity.state,
        });
        return Ok(Json(body).into_response());
    };
    let namespace = app.namespace().unwrap_or_default();
    registry.callers.authorize(&caller, Access::Read, &namespace).await?;
    if deleting {
        return Err(Failure::NotFound);
    }
    let served = served(&app);
    Ok(Json(ClientView {
        client_id,
        display_name: served.display_name,
        namespace,
        name: app.name_any(),
        scope: app.spec.scope,
        public: app.spec.is_public_client(),
        require_pkce: served.require_pkce,
        redirect_uris: served.redirect_uris,
        grant_types: served.grant_types,
        oauth_scopes: served.oauth_scopes,
        consenting_namespaces: registry.consenting_namespaces(&app),
        owner: app.status.as_ref().and_then(|s| s.owner.as_ref()).map(crate::api::OwnerStatus::owner),
        state: "active",
        served_generation: served.generation,
    })
    .into_response())
}

/// Who a Client ID authenticates as.
struct Identity {
    namespace: String,
    name: String,
    scope: Scope,
    /// `active`, or `retained` (deletionPolicy: Retain, no app holds it).
    state: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authenticated {
    client_id: String,
    state: &'static str,
    namespace: String,
    name: String,
    scope: Scope,
}

async fn authenticate(
    State(registry): State<Arc<Registry>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Authenticated>, Failure> {
    let caller = registry.caller(&headers, source.ip()).await?;
    registry.ready()?;
    let (client_id, secret) = credentials(&headers, &body).ok_or(Failure::InvalidClient)?;
    let identity = registry.authenticate(&caller, &client_id, &secret).await?;
    Ok(Json(Authenticated {
        client_id,
        namespace: identity.namespace,
        name: identity.name,
        scope: identity.scope,
        state: identity.state,
    }))
}

async fn authorize_check(
    State(registry): State<Arc<Registry>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<AuthorizeRequest>,
) -> Result<Response, Failure> {
    let caller = registry.caller(&headers, source.ip()).await?;
    registry.ready()?;
    if request.group.is_empty() {
        return Err(Failure::BadRequest("group (the namespace the user acts in) is required"));
    }
    let decision = match registry.client(&client_id) {
        Some((app, deleting)) => {
            registry.callers.authorize(&caller, Access::Check, &app.namespace().unwrap_or_default()).await?;
            let served = served(&app);
            let allowed = registry.policy_allows(&app, &request.group);
            authorize(&served, deleting, allowed, registry.granted_scopes(&app, &request.group).as_deref(), &request)
        }
        None => {
            registry.unplaced(&caller, Access::Check).await?;
            if !registry.caches.ledger().is_revoked(&client_id) {
                return Err(Failure::NotFound);
            }
            Err(authorize::Denial::Revoked)
        }
    };
    Ok(match decision {
        Ok(()) => Json(json!({ "allowed": true })).into_response(),
        Err(denial) => {
            Json(json!({ "allowed": false, "reason": denial, "description": denial.description() })).into_response()
        }
    })
}

/// The group claim's name in Hydra's session (`?group_claim=` on the hook URL).
fn default_group_claim() -> String {
    "registrar_group".to_owned()
}

#[derive(Deserialize)]
struct TokenHookQuery {
    #[serde(default = "default_group_claim")]
    group_claim: String,
}

/// What registrar reads of Ory Hydra's token hook request.
#[derive(Deserialize)]
struct TokenHook {
    #[serde(default)]
    session: TokenHookSession,
    request: TokenHookRequest,
}

#[derive(Default, Deserialize)]
struct TokenHookSession {
    /// The access token's extra claims, as the login and consent app set them
    /// when it accepted the consent (`session.access_token`).
    #[serde(default)]
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct TokenHookRequest {
    client_id: String,
    #[serde(default)]
    granted_scopes: Vec<String>,
}

/// Ory Hydra's token hook (`oauth2.token_hook`), called before every token
/// Hydra issues — a code exchange, a refresh: 204 lets it through, 403 refuses
/// it (Hydra answers `access_denied`). A token for a user whose group the
/// login and consent app recorded (the `registrar_group` claim) is refused
/// once the group may no longer use the client: consent removed, the
/// organization's policy no longer allowing it, the scopes no longer granted,
/// the app revoked. Tokens without the claim (client credentials) and clients
/// that are not registrar's pass.
async fn hydra_token_hook(
    State(registry): State<Arc<Registry>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenHookQuery>,
    headers: HeaderMap,
    Json(hook): Json<TokenHook>,
) -> Result<Response, Failure> {
    let caller = registry.caller(&headers, source.ip()).await?;
    registry.ready()?;
    let extra = hook.session.extra.unwrap_or_default();
    let Some(group) = extra.get(&query.group_claim).and_then(serde_json::Value::as_str).filter(|g| !g.is_empty())
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let client_id = &hook.request.client_id;
    let decision = match registry.client(client_id) {
        Some((app, deleting)) => {
            registry.callers.authorize(&caller, Access::Check, &app.namespace().unwrap_or_default()).await?;
            let allowed = registry.policy_allows(&app, group);
            let granted = registry.granted_scopes(&app, group);
            token_allowed(&served(&app), deleting, allowed, granted.as_deref(), &hook.request.granted_scopes)
        }
        None => {
            registry.unplaced(&caller, Access::Check).await?;
            if !registry.caches.ledger().is_revoked(client_id) {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Err(authorize::Denial::Revoked)
        }
    };
    Ok(match decision {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(denial) => {
            let reason = serde_json::to_value(denial).ok().and_then(|v| v.as_str().map(str::to_owned));
            let labels = ReasonLabels { reason: reason.unwrap_or_default() };
            registry.metrics.registry_token_refusals.get_or_create(&labels).inc();
            let body = json!({ "allowed": false, "reason": denial, "description": denial.description() });
            (StatusCode::FORBIDDEN, Json(body)).into_response()
        }
    })
}

#[derive(Deserialize)]
struct CatalogQuery {
    namespace: String,
}

async fn catalog(
    State(registry): State<Arc<Registry>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    Query(query): Query<CatalogQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Failure> {
    let caller = registry.caller(&headers, source.ip()).await?;
    registry.ready()?;
    registry.callers.authorize(&caller, Access::Read, &query.namespace).await?;
    Ok(Json(catalog::catalog(&registry, &query.namespace)))
}

async fn forward_auth(
    State(registry): State<Arc<Registry>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let caller = registry.caller(&headers, source.ip()).await?;
    registry.ready()?;
    let refused = || {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"registrar\""));
        response
    };
    let Some((client_id, secret)) = credentials(&headers, &[]) else { return Ok(refused()) };
    match registry.authenticate(&caller, &client_id, &secret).await {
        Ok(identity) => {
            let mut response = StatusCode::OK.into_response();
            let h = response.headers_mut();
            if let (Ok(id), Ok(ns)) = (HeaderValue::from_str(&client_id), HeaderValue::from_str(&identity.namespace)) {
                h.insert("x-client-id", id);
                h.insert("x-client-namespace", ns);
            }
            Ok(response)
        }
        Err(failure @ (Failure::Busy(_) | Failure::Caller(_) | Failure::NotReady)) => Err(failure),
        Err(_) => Ok(refused()),
    }
}

async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "temporarily_unavailable" }))).into_response()
        }
    }
}

/// Counts each answer by route pattern (never a concrete path: bounded) and status.
async fn count(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    metrics.registry_requests.get_or_create(&RequestLabels { route, status: response.status().as_u16() }).inc();
    response
}

fn router(registry: Arc<Registry>) -> Router {
    let metrics = registry.metrics.clone();
    Router::new()
        .route("/v1/clients/authenticate", post(authenticate))
        .route("/v1/clients/{client_id}", get(lookup))
        .route("/v1/clients/{client_id}/authorize-check", post(authorize_check))
        .route("/v1/catalog", get(catalog))
        .route("/v1/forward-auth", get(forward_auth))
        .route("/v1/hooks/hydra/token", post(hydra_token_hook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(close_after_refused_body))
        .layer(middleware::from_fn(deadline))
        .route_layer(middleware::from_fn_with_state(metrics, count))
        .with_state(registry)
}

/// A body refused as too large was not read to its end, so the connection
/// cannot carry another request: say so, or a client that reuses it from its
/// pool fails with a broken pipe on its next request.
async fn close_after_refused_body(mut response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Errors starting the registry.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the registry needs --registry-tls-cert and --registry-tls-key, or --registry-insecure-http")]
    NoTls,
    #[error("loading the registry's TLS certificate and key: {0}")]
    Tls(String),
    #[error("serving the registry: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the registry until the process ends.
pub async fn serve(
    settings: Settings,
    client: kube::Client,
    caches: Caches,
    hasher: Hasher,
    metrics: Metrics,
    listening: Gate,
) -> Result<(), ServeError> {
    // The hashing pool's occupancy, for /metrics (also while nobody waits on it).
    let (gauges, pool) = (metrics.clone(), hasher.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let (running, peak) = pool.running();
            gauges.registry_hashes_running.set(i64::try_from(running).unwrap_or(i64::MAX));
            gauges.registry_hashes_running_peak.set(i64::try_from(peak).unwrap_or(i64::MAX));
        }
    });
    let registry = Arc::new(Registry {
        caches,
        verifier: Verifier::new(hasher, settings.limits),
        callers: Callers::new(client, settings.audience.clone(), metrics.clone()),
        platform_namespace: settings.platform_namespace.clone(),
        metrics: metrics.clone(),
        backend: settings.backend,
    });
    server::serve(&settings, router(registry), metrics, listening).await
}

/// The router in-process (`oneshot`), its apiserver a mock: what each answer
/// costs in TokenReviews and SubjectAccessReviews, and that cached answers
/// cost none.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::{
        api::{AppRegistrationSpec, AppRegistrationStatus, ClientIdEntry, Holder},
        cluster::Contents,
        runtime::mock,
    };

    const UID: &str = "55555555-5555-5555-5555-555555555555";
    const AUDIENCE: &str = "registrar";

    fn registry(client: kube::Client) -> Arc<Registry> {
        let spec = AppRegistrationSpec { display_name: "Billing".into(), ..Default::default() };
        let mut app = AppRegistration::new("billing", spec);
        app.metadata.namespace = Some("team".into());
        app.metadata.uid = Some(UID.into());
        app.status = Some(AppRegistrationStatus { client_id: Some("id-billing".into()), ..Default::default() });
        let holder = Holder { namespace: "team".into(), name: "billing".into(), uid: UID.into() };
        let caches = Caches::holding(Contents {
            apps: vec![app],
            ledger: vec![ClientIdEntry::active("id-billing", holder)],
            namespaces: vec![("team", None)],
            ..Default::default()
        });
        let metrics = Metrics::new();
        let hasher = Hasher::new(crate::credentials::HashParams::MINTED, 1).expect("a hasher");
        Arc::new(Registry {
            caches,
            verifier: Verifier::new(hasher, verifier::Limits::default()),
            callers: Callers::new(client, AUDIENCE.into(), metrics.clone()),
            platform_namespace: "platform".into(),
            metrics,
            backend: false,
        })
    }

    fn lookup(token: Option<&str>) -> Request<Body> {
        let mut request = Request::get("/v1/clients/id-billing");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = request.body(Body::empty()).expect("a request");
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        request
    }

    async fn answer(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = router.clone().oneshot(request).await.expect("an answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("a body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The apiserver says who the token is and whether they may read `team`.
    async fn review(apiserver: &mut mock::ApiServer, allowed: bool) {
        let review = apiserver.next().await;
        assert_eq!(
            (review.method.as_str(), review.path.as_str()),
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
        );
        assert_eq!(review.body["spec"]["audiences"], serde_json::json!([AUDIENCE]));
        let mut answered = review.body.clone();
        answered["status"] = serde_json::json!({
            "authenticated": true, "audiences": [AUDIENCE],
            "user": { "username": "system:serviceaccount:team:gateway", "groups": ["system:serviceaccounts"] },
        });
        review.answer(201, &answered);
        let access = apiserver.next().await;
        assert_eq!(
            (access.method.as_str(), access.path.as_str()),
            ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews")
        );
        let attributes = &access.body["spec"]["resourceAttributes"];
        assert_eq!((&attributes["verb"], &attributes["namespace"]), (&Value::from("get"), &Value::from("team")));
        let mut answered = access.body.clone();
        answered["status"] = serde_json::json!({ "allowed": allowed });
        access.answer(201, &answered);
    }

    #[tokio::test]
    async fn without_a_token_the_answer_is_401_and_the_apiserver_is_not_asked() {
        let (client, mut apiserver) = mock::pair();
        let router = router(registry(client));
        let (status, _) = answer(&router, lookup(None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        apiserver.expect_none_within(Duration::from_millis(200)).await;
    }

    /// One TokenReview and one SubjectAccessReview for the first lookup; the
    /// second is answered from the caches alone.
    #[tokio::test]
    async fn a_lookup_reviews_the_caller_once_then_answers_from_the_caches() {
        let (client, mut apiserver) = mock::pair();
        let router = router(registry(client));
        let first = tokio::spawn({
            let router = router.clone();
            async move { answer(&router, lookup(Some("gateway-token"))).await }
        });
        review(&mut apiserver, true).await;
        let (status, body) = first.await.expect("joined");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!((&body["clientId"], &body["namespace"]), (&Value::from("id-billing"), &Value::from("team")));

        let (status, again) = answer(&router, lookup(Some("gateway-token"))).await;
        assert_eq!((status, again), (StatusCode::OK, body));
        apiserver.expect_none_within(Duration::from_millis(200)).await;
    }

    /// A caller the apiserver does not allow in the client's namespace is
    /// refused, and learns nothing of the client.
    #[tokio::test]
    async fn a_caller_not_allowed_in_the_namespace_is_refused() {
        let (client, mut apiserver) = mock::pair();
        let router = router(registry(client));
        let asking = tokio::spawn({
            let router = router.clone();
            async move { answer(&router, lookup(Some("stranger-token"))).await }
        });
        review(&mut apiserver, false).await;
        let (status, body) = asking.await.expect("joined");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!body.to_string().contains("billing"), "{body}");
    }
}
