//! Ory Hydra v2 (checked against v2.3.0) through its admin API.
//!
//! Semantics registrar relies on: `POST /admin/clients` takes a caller-chosen
//! `client_id` and `client_secret` (409 when the ID exists); `PUT` replaces the
//! whole client and keeps its secret when none is sent; `DELETE` removes the
//! client and, through the database's cascade, every token issued to it;
//! `GET /admin/clients?owner=…` is paged (`page_size` up to 1,000, `page_token`
//! from the `Link` header; its `X-Total-Count` ignores the filter, so paging
//! stops at a short page). Hydra keeps one secret per client: no grace period
//! there. Every change registrar makes to an existing client first reads it and
//! goes ahead only when the client is in the app's lane ([`super::Lane`]): its
//! metadata names this cluster and the app (namespace, name, UID).

use std::{path::Path, time::Duration};

use reqwest::{
    Method, RequestBuilder, StatusCode,
    header::{AUTHORIZATION, HeaderValue, LINK},
};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{AsError, Capabilities, ClientRegistration, Lane, Mark, RemoteClient, Settings, SettingsError};
use crate::credentials::ClientSecret;

pub const CAPABILITIES: Capabilities = Capabilities {
    name: "Hydra",
    keeps_previous_secret: false,
    mints_secrets: false,
    // oidc.dynamic_client_registration.default_scope, sorted.
    default_scopes: &["offline", "offline_access", "openid"],
};
const SERVER: &str = "Hydra";
/// The metadata key naming the app a client belongs to (`namespace/name`).
const APP_METADATA: &str = crate::api::keys::APP_LABEL;
/// The metadata key naming the app's UID.
const UID_METADATA: &str = "registrar.dev/uid";
/// The metadata key naming the cluster the client belongs to.
const CLUSTER_METADATA: &str = "registrar.dev/cluster";
/// Clients per page when listing (Hydra clamps to 1..1000).
const PAGE_SIZE: usize = 500;
/// Longest an admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A Hydra admin API client.
#[derive(Clone)]
pub struct Hydra {
    http: reqwest::Client,
    admin: Url,
    authorization: Option<HeaderValue>,
    issuer: String,
    token_url: String,
    owner: String,
    cluster: String,
    adopt_owners: Vec<String>,
    sync_interval: Duration,
    deregister_within: Duration,
}

/// A client as Hydra returns it: the fields registrar sets (never the secret).
#[derive(Deserialize, Debug)]
struct Client {
    client_id: String,
    #[serde(default)]
    client_name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    redirect_uris: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    grant_types: Vec<String>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    token_endpoint_auth_method: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    metadata: Value,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl Client {
    fn registration(&self) -> ClientRegistration {
        let sorted = |v: &Vec<String>| {
            let mut v = v.clone();
            v.sort();
            v
        };
        let mut scopes: Vec<String> = self.scope.split_whitespace().map(str::to_owned).collect();
        scopes.sort();
        ClientRegistration {
            client_id: self.client_id.clone(),
            name: self.client_name.clone(),
            redirect_uris: sorted(&self.redirect_uris),
            grant_types: sorted(&self.grant_types),
            scopes,
            public: self.token_endpoint_auth_method == "none",
            app: self.metadata_str(APP_METADATA).unwrap_or_default().to_owned(),
            uid: self.metadata_str(UID_METADATA).unwrap_or_default().to_owned(),
        }
    }

    fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// Whose cluster's mark the client carries.
    fn mark(&self, cluster: &str) -> Mark {
        match self.metadata_str(CLUSTER_METADATA) {
            Some(c) if c == cluster => Mark::Ours,
            Some(_) => Mark::Elsewhere,
            None => Mark::Unmarked,
        }
    }
}

/// Hydra's error body.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

fn read(what: &'static str, path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).map_err(|source| SettingsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl Hydra {
    pub fn new(settings: &Settings) -> Result<Self, SettingsError> {
        // reqwest's rustls takes the process's crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).connect_timeout(Duration::from_secs(3));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|source| SettingsError::Read {
                what: "the admin API's CA bundle",
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SettingsError::Invalid(format!("the CA bundle {} is not PEM: {e}", path.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        let authorization = match (&settings.token_file, &settings.basic_auth_file) {
            (Some(_), Some(_)) => {
                return Err(SettingsError::Invalid(
                    "give the admin API a bearer token or Basic credentials, not both".into(),
                ));
            }
            (Some(path), None) => Some(format!("Bearer {}", read("the admin API token", path)?)),
            (None, Some(path)) => {
                use base64::Engine;
                let credentials = read("the admin API credentials", path)?;
                if !credentials.contains(':') {
                    return Err(SettingsError::Invalid(format!("{} must hold user:password", path.display())));
                }
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)))
            }
            (None, None) => None,
        };
        let authorization = authorization
            .map(|v| {
                let mut value = HeaderValue::from_str(&v)
                    .map_err(|_| SettingsError::Invalid("the admin API credentials are not a valid header".into()))?;
                value.set_sensitive(true);
                Ok::<_, SettingsError>(value)
            })
            .transpose()?;
        let issuer = settings.issuer.as_str().trim_end_matches('/').to_owned();
        let token_url = settings.token_url.as_ref().map_or_else(|| format!("{issuer}/oauth2/token"), |u| u.to_string());
        let http = builder.build().map_err(|e| SettingsError::Invalid(format!("building the HTTP client: {e}")))?;
        Ok(Hydra {
            http,
            admin: settings.admin_url.clone(),
            authorization,
            issuer,
            token_url,
            owner: settings.owner.clone(),
            cluster: settings.cluster.clone(),
            adopt_owners: settings.adopt_owners.clone(),
            sync_interval: settings.sync_interval,
            deregister_within: settings.deregister_within,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    pub fn deregister_within(&self) -> Duration {
        self.deregister_within
    }

    /// `segments` appended to the admin URL's path.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.admin.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Sends a request; a 5xx or a failure to reach Hydra is Unavailable.
    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, AsError> {
        let response =
            request.send().await.map_err(|e| AsError::Unavailable { server: SERVER, reason: describe(&e) })?;
        if response.status().is_server_error() {
            let message = error_message(response).await;
            return Err(AsError::Busy { server: SERVER, reason: message });
        }
        Ok(response)
    }

    /// The JSON Hydra takes for `registration` (with `secret` when given).
    fn body(&self, registration: &ClientRegistration, secret: Option<&ClientSecret>) -> Value {
        let code = registration.grant_types.iter().any(|g| g == "authorization_code");
        let mut body = json!({
            "client_id": registration.client_id,
            "client_name": registration.name,
            "redirect_uris": registration.redirect_uris,
            "grant_types": registration.grant_types,
            "response_types": if code { vec!["code"] } else { vec![] },
            "scope": registration.scopes.join(" "),
            "token_endpoint_auth_method": if registration.public { "none" } else { "client_secret_basic" },
            "owner": self.owner,
            "metadata": {
                APP_METADATA: registration.app,
                UID_METADATA: registration.uid,
                CLUSTER_METADATA: self.cluster,
            },
        });
        if let Some(secret) = secret {
            body["client_secret"] = Value::String(secret.expose().to_owned());
        }
        body
    }

    /// The client of that ID: `Ok(None)` when there is none.
    async fn get(&self, client_id: &str) -> Result<Option<Client>, AsError> {
        let response = self.send(self.request(Method::GET, self.url(&["admin", "clients", client_id]))).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => response.json().await.map(Some).map_err(|e| AsError::Unavailable {
                server: SERVER,
                reason: format!("an unreadable client: {}", describe(&e)),
            }),
            _ => Err(refused(response).await),
        }
    }

    /// The client of that ID if it is in `lane`; NotOurs if it is anyone
    /// else's: another cluster's, another app's, or not registrar's at all.
    async fn get_ours(&self, client_id: &str, lane: &Lane) -> Result<Option<Client>, AsError> {
        let Some(client) = self.get(client_id).await? else { return Ok(None) };
        let app = client.metadata_str(APP_METADATA).unwrap_or_default();
        let ours = match client.mark(&self.cluster) {
            Mark::Ours => lane.admits(app, client.metadata_str(UID_METADATA).unwrap_or_default()),
            // Registered before clients carried a mark: adopted only where asked.
            Mark::Unmarked => self.adopt_owners.contains(&client.owner) && lane.names(app),
            Mark::Elsewhere => false,
        };
        if ours {
            return Ok(Some(client));
        }
        let whose = match client.mark(&self.cluster) {
            Mark::Ours => "this cluster's client of another app, or of an earlier app of this name".to_owned(),
            Mark::Elsewhere => format!("owner {:?}, another cluster's", client.owner),
            Mark::Unmarked if client.owner == self.owner || lane.names(app) => format!(
                "owner {:?}, without a cluster mark: if a registrar of this cluster registered it before the Client \
                 ID ledger, adopt it with --auth-server-adopt-owner {}",
                client.owner, client.owner
            ),
            Mark::Unmarked => format!("owner {:?}", client.owner),
        };
        Err(AsError::NotOurs { server: SERVER, whose })
    }

    async fn put(&self, registration: &ClientRegistration, secret: Option<&ClientSecret>) -> Result<(), AsError> {
        let url = self.url(&["admin", "clients", &registration.client_id]);
        let response = self.send(self.request(Method::PUT, url).json(&self.body(registration, secret))).await?;
        if response.status().is_success() { Ok(()) } else { Err(refused(response).await) }
    }

    pub async fn register(
        &self,
        registration: &ClientRegistration,
        secret: Option<&ClientSecret>,
        lane: &Lane,
    ) -> Result<(), AsError> {
        let created = self
            .send(self.request(Method::POST, self.url(&["admin", "clients"])).json(&self.body(registration, secret)))
            .await?;
        match created.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => match self.get_ours(&registration.client_id, lane).await? {
                Some(_) => self.put(registration, secret).await,
                // Deleted meanwhile: the next pass creates it.
                None => Err(AsError::Busy { server: SERVER, reason: "the client changed meanwhile".into() }),
            },
            _ => Err(refused(created).await),
        }
    }

    pub async fn update(&self, registration: &ClientRegistration, lane: &Lane) -> Result<bool, AsError> {
        if self.get_ours(&registration.client_id, lane).await?.is_none() {
            return Ok(false);
        }
        self.put(registration, None).await.map(|()| true)
    }

    pub async fn delete(&self, client_id: &str, lane: &Lane) -> Result<(), AsError> {
        match self.get_ours(client_id, lane).await {
            Ok(Some(_)) => {}
            // Gone already, or not this app's: nothing of this app's to delete.
            Ok(None) | Err(AsError::NotOurs { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        // Access tokens explicitly, then the client (its refresh tokens and
        // codes go with it through the database's cascade).
        let mut tokens = self.url(&["admin", "oauth2", "tokens"]);
        tokens.query_pairs_mut().append_pair("client_id", client_id);
        let response = self.send(self.request(Method::DELETE, tokens)).await?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        let response = self.send(self.request(Method::DELETE, self.url(&["admin", "clients", client_id]))).await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(refused(response).await),
        }
    }

    pub async fn list_owned(&self) -> Result<Vec<RemoteClient>, AsError> {
        let mut clients = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut url = self.url(&["admin", "clients"]);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("owner", &self.owner).append_pair("page_size", &PAGE_SIZE.to_string());
                if let Some(token) = &page_token {
                    query.append_pair("page_token", token);
                }
            }
            let response = self.send(self.request(Method::GET, url)).await?;
            if !response.status().is_success() {
                return Err(refused(response).await);
            }
            let next = response.headers().get(LINK).and_then(|v| v.to_str().ok()).and_then(next_page_token);
            let page: Vec<Client> = response.json().await.map_err(|e| AsError::Unavailable {
                server: SERVER,
                reason: format!("an unreadable client list: {}", describe(&e)),
            })?;
            let full = page.len() >= PAGE_SIZE;
            clients.extend(
                page.iter()
                    .filter(|c| c.owner == self.owner)
                    .map(|c| RemoteClient { registration: c.registration(), mark: c.mark(&self.cluster) }),
            );
            match next {
                Some(token) if full && page_token.as_ref() != Some(&token) => page_token = Some(token),
                _ => return Ok(clients),
            }
        }
    }
}

/// The `page_token` of the `rel="next"` link in a `Link` header.
fn next_page_token(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let target = part.split(';').next()?.trim().trim_start_matches('<').trim_end_matches('>');
        let url = Url::parse("http://hydra.invalid").ok()?.join(target).ok()?;
        url.query_pairs().find(|(k, _)| k == "page_token").map(|(_, v)| v.into_owned())
    })
}

/// A transport error in words, without the URL's query (nothing secret is in
/// it, but a token could be in a misconfigured URL).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() {
        "unreadable answer"
    } else {
        "request failed"
    };
    match e.url() {
        Some(url) => format!("{kind} ({}://{}{})", url.scheme(), url.host_str().unwrap_or_default(), url.path()),
        None => kind.to_owned(),
    }
}

/// Hydra's own words for a failed request.
async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body: ErrorBody = response.json().await.unwrap_or_default();
    let words = match (body.error.is_empty(), body.error_description.is_empty()) {
        (false, false) => format!("{}: {}", body.error, body.error_description),
        (false, true) => body.error,
        (true, false) => body.error_description,
        (true, true) => String::new(),
    };
    if words.is_empty() { format!("HTTP {status}") } else { format!("{words} (HTTP {})", status.as_u16()) }
}

async fn refused(response: reqwest::Response) -> AsError {
    let status = response.status();
    classify(status, error_message(response).await)
}

/// A refusal in Hydra's words: a conflict between its own transactions
/// (answered 400, "Unable to serialize access due to a concurrent update")
/// passes, so it is transient; any other 4xx is the server's answer.
fn classify(status: StatusCode, message: String) -> AsError {
    let transient = status == StatusCode::BAD_REQUEST
        && ["serialize access", "concurrent update"].iter().any(|m| message.to_lowercase().contains(m));
    if transient {
        AsError::Busy { server: SERVER, reason: message }
    } else {
        AsError::Refused { server: SERVER, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_between_hydras_own_transactions_is_transient() {
        let conflict = "Unable to serialize access due to a concurrent update in another session".to_owned();
        assert!(matches!(classify(StatusCode::BAD_REQUEST, conflict), AsError::Busy { .. }));
        let invalid = "The request was malformed or contained invalid parameters".to_owned();
        assert!(matches!(classify(StatusCode::BAD_REQUEST, invalid), AsError::Refused { .. }));
        assert!(matches!(classify(StatusCode::FORBIDDEN, "no".into()), AsError::Refused { .. }));
    }

    #[test]
    fn the_next_page_token_comes_from_the_link_header() {
        let link = r#"</admin/clients?page_size=500&page_token=eyJvZmZzZXQiOiI1MDAiLCJ2IjoyfQ>; rel="next",</admin/clients?page_size=500&page_token=eyJvZmZzZXQiOiIxMDAwIiwidiI6Mn0>; rel="last""#;
        assert_eq!(next_page_token(link).as_deref(), Some("eyJvZmZzZXQiOiI1MDAiLCJ2IjoyfQ"));
        assert_eq!(next_page_token(r#"</admin/clients?page_size=500&page_token=x>; rel="first""#), None);
        assert_eq!(next_page_token(""), None);
    }

    fn hydra() -> Hydra {
        Hydra::new(&Settings {
            kind: super::super::Kind::Hydra,
            admin_url: Url::parse("http://127.0.0.1:4445/").unwrap(),
            ca_file: None,
            token_file: None,
            basic_auth_file: None,
            issuer: Url::parse("http://127.0.0.1:4444/").unwrap(),
            token_url: None,
            owner: "registrar".into(),
            cluster: "cluster-1".into(),
            adopt_owners: vec![],
            sync_interval: Duration::from_secs(60),
            deregister_within: Duration::from_secs(120),
        })
        .unwrap()
    }

    #[test]
    fn urls_and_the_token_endpoint_follow_the_settings() {
        let hydra = hydra();
        assert_eq!(hydra.url(&["admin", "clients", "a b"]).as_str(), "http://127.0.0.1:4445/admin/clients/a%20b");
        assert_eq!(hydra.issuer(), "http://127.0.0.1:4444");
        assert_eq!(hydra.token_url(), "http://127.0.0.1:4444/oauth2/token");
    }

    #[test]
    fn the_body_marks_the_client_as_registrars_and_carries_the_secret_only_when_given() {
        let hydra = hydra();
        let registration = ClientRegistration {
            client_id: "cid".into(),
            name: "Billing".into(),
            redirect_uris: vec!["https://a.example.com/cb".into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: vec!["read".into(), "write".into()],
            public: false,
            app: "team-a/billing".into(),
            uid: "11111111-1111-1111-1111-111111111111".into(),
        };
        let body = hydra.body(&registration, None);
        assert_eq!(body["owner"], "registrar");
        assert_eq!(body["metadata"]["registrar.dev/app"], "team-a/billing");
        assert_eq!(body["metadata"]["registrar.dev/uid"], "11111111-1111-1111-1111-111111111111");
        assert_eq!(body["metadata"]["registrar.dev/cluster"], "cluster-1");
        assert_eq!(body["scope"], "read write");
        assert_eq!(body["response_types"], json!(["code"]));
        assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
        assert!(body.get("client_secret").is_none());
        let secret = ClientSecret::from_bytes(b"s3cret-value").unwrap();
        assert_eq!(hydra.body(&registration, Some(&secret))["client_secret"], "s3cret-value");
        let public =
            ClientRegistration { public: true, grant_types: vec!["client_credentials".into()], ..registration };
        let body = hydra.body(&public, None);
        assert_eq!(body["token_endpoint_auth_method"], "none");
        assert_eq!(body["response_types"], json!([]));
        // Read back, a client is the registration it was made from.
        let client: Client = serde_json::from_value(json!({
            "client_id": "cid", "client_name": "Billing", "redirect_uris": null,
            "grant_types": ["client_credentials"], "scope": "", "token_endpoint_auth_method": "none",
            "owner": "registrar", "metadata": {
                "registrar.dev/app": "team-a/billing", "registrar.dev/uid": "11111111-1111-1111-1111-111111111111",
                "registrar.dev/cluster": "cluster-1"
            }
        }))
        .unwrap();
        assert_eq!(client.registration(), ClientRegistration { redirect_uris: vec![], scopes: vec![], ..public });
        assert_eq!(client.mark("cluster-1"), Mark::Ours);
        assert_eq!(client.mark("cluster-2"), Mark::Elsewhere);
    }
}
