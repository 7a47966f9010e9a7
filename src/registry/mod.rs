//! The registry API for authorization servers and reverse proxies, served from
//! the operator's caches (no apiserver call per request beyond cached caller
//! checks):
//!
//! - `GET  /v1/clients/{clientId}` — the client, or 404 (unknown or deleted);
//! - `POST /v1/clients/authenticate` — RFC 6749 §2.3.1 client authentication;
//! - `POST /v1/clients/{clientId}/authorize-check` — redirect, PKCE, consent, scopes;
//! - `GET  /v1/catalog?namespace=NS` — the apps NS may enable (Organization and Global);
//! - `GET  /v1/forward-auth` — Basic client credentials for nginx / Envoy.
//!
//! Never a secret or a hash in a response or a log line.

pub mod authorize;
pub mod callers;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::{
    api::{AppRegistration, DEFAULT_GRANT_TYPES, GrantType, Scope, conditions},
    consent::visibility::ORGANIZATION_LABEL,
    credentials::{ClientSecret, Hasher},
    watches::Caches,
};
use authorize::{AuthorizeRequest, authorize};
use callers::{Access, Callers, Refusal};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;
/// Longest a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the cache of verified credentials; a full cache is cleared.
const MAX_VERIFIED: usize = 100_000;

/// How the registry is served.
#[derive(Clone, Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    /// PEM certificate chain and private key; required unless `insecure_http`.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub insecure_http: bool,
    pub platform_namespace: String,
}

struct Registry {
    caches: Caches,
    hasher: Hasher,
    callers: Callers,
    platform_namespace: String,
    /// (Client ID, SHA-256 of a presented secret) → the hash it verified against.
    verified: Mutex<HashMap<CredentialKey, String>>,
    /// Verifications running, by the same key: concurrent presentations of the
    /// same credentials (a burst of logins on a cold cache) wait for one
    /// verification instead of each taking a hashing turn, or being refused one.
    in_flight: Mutex<HashMap<CredentialKey, Arc<OnceCell<Verdict>>>>,
}

/// (Client ID, SHA-256 of a presented secret).
type CredentialKey = (String, [u8; 32]);

/// The outcome of one argon2id verification of presented credentials.
#[derive(Clone)]
enum Verdict {
    /// The secret verified against this hash.
    Verified(String),
    Wrong,
    /// No hashing turn was free.
    Busy,
}

/// Removes a finished (or abandoned) verification from `in_flight`, unless a
/// newer one took its place.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<CredentialKey, Arc<OnceCell<Verdict>>>>,
    key: CredentialKey,
    cell: Arc<OnceCell<Verdict>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.key).is_some_and(|cell| Arc::ptr_eq(cell, &self.cell)) {
            map.remove(&self.key);
        }
    }
}

/// Why a request failed, as an HTTP answer with an OAuth-style body.
enum Failure {
    Caller(Refusal),
    NotReady,
    NotFound,
    InvalidClient,
    Busy,
    BadRequest(&'static str),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            Failure::Caller(Refusal::Unauthenticated) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
            }
            Failure::Caller(Refusal::Forbidden) => {
                (StatusCode::FORBIDDEN, "forbidden", "the caller may not use this registry endpoint")
            }
            Failure::Caller(Refusal::Unavailable) | Failure::NotReady => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the registry is not ready")
            }
            Failure::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such client"),
            Failure::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed"),
            Failure::Busy => {
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({ "error": "temporarily_unavailable", "error_description": "too many authentications at once; retry" })),
                )
                    .into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Failure::BadRequest(what) => (StatusCode::BAD_REQUEST, "invalid_request", what),
        };
        (status, Json(json!({ "error": error, "error_description": description }))).into_response()
    }
}

impl Registry {
    async fn caller(&self, headers: &HeaderMap, access: Access) -> Result<String, Failure> {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        self.callers.check(authorization, access).await.map_err(Failure::Caller)
    }

    /// The issued app holding `client_id`, and whether it is being deleted.
    fn client(&self, client_id: &str) -> Option<(Arc<AppRegistration>, bool)> {
        let (ns, name) = self.caches.index.app_of_client(client_id)?;
        let app = self.caches.apps.get(&ObjectRef::new(&name).within(&ns))?;
        let issued = app.status.as_ref()?.client_id.as_deref() == Some(client_id);
        let deleting = app.meta().deletion_timestamp.is_some();
        issued.then_some((app, deleting))
    }

    /// The scopes `group` may use with `app`: all of the app's in its own
    /// namespace, a granted consent's elsewhere, `None` without one.
    fn granted_scopes(&self, app: &AppRegistration, group: &str) -> Option<Vec<String>> {
        let app_ns = app.namespace().unwrap_or_default();
        if group == app_ns {
            return Some(app.spec.oauth_scopes.clone());
        }
        let client_id = app.status.as_ref()?.client_id.as_deref()?;
        self.caches
            .index
            .consents_in_namespace(group)
            .into_iter()
            .filter_map(|(ns, name)| self.caches.consents.get(&ObjectRef::new(&name).within(&ns)))
            .find_map(|consent| {
                let status = consent.status.as_ref()?;
                let points_here =
                    consent.spec.app_ref.namespace == app_ns && consent.spec.app_ref.name == app.name_any();
                let in_force = status.client_id.as_deref() == Some(client_id)
                    && conditions::is_true(&status.conditions, conditions::GRANTED);
                (points_here && in_force).then(|| status.granted_scopes.clone())
            })
    }

    fn consenting_namespaces(&self, app: &AppRegistration) -> Vec<String> {
        app.status.as_ref().and_then(|s| s.consents.as_ref()).map(|c| c.namespaces.clone()).unwrap_or_default()
    }

    /// RFC 6749 §2.3.1: is `secret` the current (or, in a grace period, the
    /// previous) secret of `client_id`?
    async fn authenticate(&self, client_id: &str, secret: &ClientSecret) -> Result<Arc<AppRegistration>, Failure> {
        let (app, deleting) = self.client(client_id).ok_or(Failure::InvalidClient)?;
        if deleting {
            return Err(Failure::InvalidClient);
        }
        let status = app.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        let previous = status
            .previous_secret_hash
            .clone()
            .filter(|_| status.previous_secret_expires_at.as_ref().is_some_and(|t| t.0 > now));
        let accepted: Vec<String> = status.secret_hash.clone().into_iter().chain(previous).collect();
        if accepted.is_empty() {
            return Err(Failure::InvalidClient); // a public client has no secret
        }
        let key = (client_id.to_owned(), secret.digest());
        let known = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        if known.is_some_and(|hash| accepted.contains(&hash)) {
            return Ok(app);
        }
        let cell = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        let running = InFlight { map: &self.in_flight, key: key.clone(), cell: cell.clone() };
        let verdict = cell.get_or_init(|| self.verify(secret, &accepted)).await.clone();
        drop(running);
        match verdict {
            // Verified against a hash still accepted (it may have been rotated
            // out while this request waited for another's verification).
            Verdict::Verified(hash) if accepted.contains(&hash) => {
                let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(key, hash);
                Ok(app)
            }
            Verdict::Verified(_) | Verdict::Wrong => Err(Failure::InvalidClient),
            Verdict::Busy => Err(Failure::Busy),
        }
    }

    /// Verifies `secret` against each accepted hash, shedding rather than queueing.
    async fn verify(&self, secret: &ClientSecret, accepted: &[String]) -> Verdict {
        for hash in accepted {
            match self.hasher.try_verify(secret, hash).await {
                Ok(Some(true)) => return Verdict::Verified(hash.clone()),
                Ok(Some(false)) | Err(_) => {}
                Ok(None) => return Verdict::Busy,
            }
        }
        Verdict::Wrong
    }

    fn ready(&self) -> Result<(), Failure> {
        // Lists complete: Store::len is cheap, readiness is tracked by the watches.
        if self.caches.is_synced() { Ok(()) } else { Err(Failure::NotReady) }
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
    state: &'static str,
}

async fn lookup(
    State(registry): State<Arc<Registry>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ClientView>, Failure> {
    registry.caller(&headers, Access::Read).await?;
    registry.ready()?;
    let (app, deleting) = registry.client(&client_id).ok_or(Failure::NotFound)?;
    if deleting {
        return Err(Failure::NotFound);
    }
    let public = app.spec.public_client == Some(true);
    Ok(Json(ClientView {
        client_id,
        display_name: app.spec.display_name.clone(),
        namespace: app.namespace().unwrap_or_default(),
        name: app.name_any(),
        scope: app.spec.scope,
        public,
        require_pkce: public || app.spec.require_pkce == Some(true),
        redirect_uris: app.spec.redirect_uris.clone(),
        grant_types: app.spec.grant_types.clone().unwrap_or_else(|| DEFAULT_GRANT_TYPES.to_vec()),
        oauth_scopes: app.spec.oauth_scopes.clone(),
        consenting_namespaces: registry.consenting_namespaces(&app),
        state: "active",
    }))
}

/// Client credentials from HTTP Basic (form-urlencoded parts, RFC 6749 §2.3.1)
/// or from `client_id` / `client_secret` form fields.
fn credentials(headers: &HeaderMap, body: &[u8]) -> Option<(String, ClientSecret)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
    {
        let decoded = STANDARD.decode(basic.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| -> String {
            form_urlencoded::parse(format!("v={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
        };
        return Some((unescape(id), ClientSecret::from_bytes(unescape(secret).as_bytes())?));
    }
    let mut id = None;
    let mut secret = None;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "client_id" => id = Some(v.into_owned()),
            "client_secret" => secret = ClientSecret::from_bytes(v.as_bytes()),
            _ => {}
        }
    }
    Some((id?, secret?))
}

/// The caller's bearer token travels in `X-Registry-Authorization` when the
/// `Authorization` header carries client credentials (Basic).
fn caller_headers(headers: &HeaderMap) -> HeaderMap {
    let mut caller = HeaderMap::new();
    if let Some(token) = headers.get("x-registry-authorization") {
        caller.insert(header::AUTHORIZATION, token.clone());
    } else if let Some(auth) = headers.get(header::AUTHORIZATION) {
        caller.insert(header::AUTHORIZATION, auth.clone());
    }
    caller
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authenticated {
    client_id: String,
    namespace: String,
    name: String,
    scope: Scope,
}

async fn authenticate(
    State(registry): State<Arc<Registry>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Authenticated>, Failure> {
    registry.caller(&caller_headers(&headers), Access::Check).await?;
    registry.ready()?;
    let (client_id, secret) = credentials(&headers, &body).ok_or(Failure::InvalidClient)?;
    let app = registry.authenticate(&client_id, &secret).await?;
    Ok(Json(Authenticated {
        client_id,
        namespace: app.namespace().unwrap_or_default(),
        name: app.name_any(),
        scope: app.spec.scope,
    }))
}

async fn authorize_check(
    State(registry): State<Arc<Registry>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<AuthorizeRequest>,
) -> Result<Response, Failure> {
    registry.caller(&headers, Access::Check).await?;
    registry.ready()?;
    if request.group.is_empty() {
        return Err(Failure::BadRequest("group (the namespace the user acts in) is required"));
    }
    let decision = match registry.client(&client_id) {
        Some((app, deleting)) => {
            authorize(&app, deleting, registry.granted_scopes(&app, &request.group).as_deref(), &request)
        }
        None if registry.caches.index.is_revoked(&client_id) => Err(authorize::Denial::Revoked),
        None => return Err(Failure::NotFound),
    };
    Ok(match decision {
        Ok(()) => Json(json!({ "allowed": true })).into_response(),
        Err(denial) => {
            Json(json!({ "allowed": false, "reason": denial, "description": denial.description() })).into_response()
        }
    })
}

#[derive(Deserialize)]
struct CatalogQuery {
    namespace: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogEntry {
    client_id: String,
    display_name: String,
    namespace: String,
    name: String,
    scope: Scope,
    oauth_scopes: Vec<String>,
    consented: bool,
}

async fn catalog(
    State(registry): State<Arc<Registry>>,
    Query(query): Query<CatalogQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Failure> {
    registry.caller(&headers, Access::Read).await?;
    registry.ready()?;
    let index = &registry.caches.index;
    let org = index.organization_of(&query.namespace);
    let mut org_namespaces = index.labelled_namespaces_of(&org);
    if org == index.default_organization() {
        org_namespaces.extend(
            registry
                .caches
                .namespaces
                .state()
                .iter()
                .filter(|ns| ns.labels().get(ORGANIZATION_LABEL).is_none_or(|l| l.is_empty()))
                .map(|ns| ns.name_any()),
        );
    }
    if !org_namespaces.contains(&query.namespace) {
        org_namespaces.push(query.namespace.clone());
    }
    let entries = |namespaces: &[String], scope: Scope| -> Vec<CatalogEntry> {
        let mut entries: Vec<CatalogEntry> = namespaces
            .iter()
            .flat_map(|ns| index.apps_in_namespace(ns))
            .filter_map(|(ns, name)| registry.caches.apps.get(&ObjectRef::new(&name).within(&ns)))
            .filter(|app| app.spec.scope == scope && app.meta().deletion_timestamp.is_none())
            .filter_map(|app| {
                let client_id = app.status.as_ref()?.client_id.clone()?;
                Some(CatalogEntry {
                    consented: registry.granted_scopes(&app, &query.namespace).is_some(),
                    client_id,
                    display_name: app.spec.display_name.clone(),
                    namespace: app.namespace().unwrap_or_default(),
                    name: app.name_any(),
                    scope,
                    oauth_scopes: app.spec.oauth_scopes.clone(),
                })
            })
            .collect();
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        entries
    };
    Ok(Json(json!({
        "namespace": query.namespace,
        "organization": org,
        "organizationApps": entries(&org_namespaces, Scope::Organization),
        "globalApps": entries(std::slice::from_ref(&registry.platform_namespace), Scope::Global),
    })))
}

async fn forward_auth(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Result<Response, Failure> {
    registry.caller(&caller_headers(&headers), Access::Check).await?;
    registry.ready()?;
    let refused = || {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"registrar\""));
        response
    };
    let Some((client_id, secret)) = credentials(&headers, &[]) else { return Ok(refused()) };
    match registry.authenticate(&client_id, &secret).await {
        Ok(app) => {
            let mut response = StatusCode::OK.into_response();
            let h = response.headers_mut();
            if let (Ok(id), Ok(ns)) =
                (HeaderValue::from_str(&client_id), HeaderValue::from_str(&app.namespace().unwrap_or_default()))
            {
                h.insert("x-client-id", id);
                h.insert("x-client-namespace", ns);
            }
            Ok(response)
        }
        Err(Failure::Busy) => Err(Failure::Busy),
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

fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v1/clients/authenticate", post(authenticate))
        .route("/v1/clients/{client_id}", get(lookup))
        .route("/v1/clients/{client_id}/authorize-check", post(authorize_check))
        .route("/v1/catalog", get(catalog))
        .route("/v1/forward-auth", get(forward_auth))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(close_after_refused_body))
        .layer(middleware::from_fn(deadline))
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
pub async fn serve(settings: Settings, client: kube::Client, caches: Caches, hasher: Hasher) -> Result<(), ServeError> {
    let registry = Arc::new(Registry {
        caches,
        hasher,
        callers: Callers::new(client),
        platform_namespace: settings.platform_namespace.clone(),
        verified: Mutex::default(),
        in_flight: Mutex::default(),
    });
    let app = router(registry).into_make_service();
    match (&settings.tls, settings.insecure_http) {
        (Some((cert, key)), _) => {
            let config = tls_config(cert, key)?;
            info!(addr = %settings.addr, "serving the registry API over TLS");
            axum_server::bind_rustls(settings.addr, axum_server::tls_rustls::RustlsConfig::from_config(config))
                .serve(app)
                .await?;
        }
        (None, true) => {
            warn!(addr = %settings.addr, "serving the registry API over plain HTTP (--registry-insecure-http)");
            let listener = tokio::net::TcpListener::bind(settings.addr).await?;
            axum::serve(listener, app).await?;
        }
        (None, false) => return Err(ServeError::NoTls),
    }
    Ok(())
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}
