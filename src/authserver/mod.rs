//! Authorization servers registrar keeps in step with its apps, so workloads
//! get tokens from the server the platform runs with the credentials they mount.
//!
//! registrar stays the source of truth: each issued app is registered at the
//! authorization server (AS) under registrar's Client ID, with its secret,
//! redirect URIs, grant types and scopes, and marked as registrar's; spec edits
//! and new secrets follow; a deleted app's client goes, with its tokens. A
//! periodic comparison with the AS's list of registrar's clients repairs what
//! was lost or altered there and removes what no app owns any more.
//!
//! The interface is one enum, [`AuthServer`], whose variants are backends, and
//! what each can do ([`Capabilities`]): Ory Hydra v2 keeps one secret per client
//! and takes the secret registrar minted; a server that mints secrets itself
//! (Keycloak) would return its secret from [`AuthServer::register`] for
//! registrar to issue instead.
//!
//! Several clusters, and several instances of one cluster, may share a server.
//! Each stays in its lane ([`Lane`]): a client carries the cluster's mark (the
//! UID of its kube-system namespace, `--cluster-id`) and the namespace, name
//! and UID of its app, and registrar changes or deletes a client only when
//! those name this cluster and the app the Client ID ledger gives it to — never
//! on the owner string alone, which every cluster left at one value shares.

pub mod hydra;
pub mod sync;

use std::{path::PathBuf, time::Duration};

use sha2::{Digest, Sha256};

use crate::{
    api::{AppRegistration, DEFAULT_GRANT_TYPES, GrantType, Holder},
    credentials::ClientSecret,
    runtime::Key,
    runtime::Uid,
};

/// How to reach the authorization server, from flags and environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kind: Kind,
    /// The admin API's base URL (Hydra: the admin port, without `/admin`).
    pub admin_url: url::Url,
    /// PEM CA bundle to trust for the admin API instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token for the admin API.
    pub token_file: Option<PathBuf>,
    /// A file holding `user:password` for HTTP Basic on the admin API.
    pub basic_auth_file: Option<PathBuf>,
    /// The public issuer URL workloads see.
    pub issuer: url::Url,
    /// The token endpoint workloads use (default: derived from the issuer).
    pub token_url: Option<url::Url>,
    /// The owner that marks a client as registrar's at the server (what the
    /// comparison lists).
    pub owner: String,
    /// This cluster's mark on its clients (default: the kube-system namespace's UID).
    pub cluster: String,
    /// Owners of clients registered before clients carried a cluster mark,
    /// which this cluster takes into its lane when its ledger gives their
    /// Client ID to the app they name (`--auth-server-adopt-owner`).
    pub adopt_owners: Vec<String>,
    /// How often the server's clients are compared with the apps.
    pub sync_interval: Duration,
    /// How long a deleted app waits for its client to be deleted at the
    /// server while the server fails (transiently) before the deletion
    /// completes without it (the comparison deletes it later).
    pub deregister_within: Duration,
}

/// The kinds of authorization server registrar can keep in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Ory Hydra v2 (admin API).
    Hydra,
}

/// What a backend can do, so that status and docs claim no more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The server's name, for messages.
    pub name: &'static str,
    /// It keeps the previous secret working after a rotation (a grace
    /// period). Hydra v2.3 keeps one secret per client.
    pub keeps_previous_secret: bool,
    /// It mints client secrets itself (registrar then issues the server's).
    pub mints_secrets: bool,
    /// The scopes it gives a client registered with none.
    pub default_scopes: &'static [&'static str],
}

/// A backend.
#[derive(Clone)]
pub enum AuthServer {
    Hydra(hydra::Hydra),
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthServer({}, issuer {})", self.capabilities().name, self.issuer())
    }
}

/// What registrar registers for an app: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRegistration {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    /// A public client: no secret (`token_endpoint_auth_method: none`).
    pub public: bool,
    /// `namespace/name` of the app, recorded at the server.
    pub app: String,
    /// The app's UID, recorded at the server (not part of the digest: a
    /// client of another UID is not in the app's lane, see [`Lane`]).
    pub uid: String,
}

impl ClientRegistration {
    /// The registration of `app` under `client_id`.
    pub fn for_app(app: &AppRegistration, client_id: &str) -> Self {
        let grant_types = app.spec.grant_types.clone().unwrap_or_else(|| DEFAULT_GRANT_TYPES.to_vec());
        let mut grant_types: Vec<String> = grant_types
            .iter()
            .map(|g| match g {
                GrantType::AuthorizationCode => "authorization_code",
                GrantType::RefreshToken => "refresh_token",
                GrantType::ClientCredentials => "client_credentials",
            })
            .map(str::to_owned)
            .collect();
        grant_types.sort();
        let mut scopes = app.spec.oauth_scopes.clone();
        scopes.sort();
        let mut redirect_uris = app.spec.redirect_uris.clone();
        redirect_uris.sort();
        ClientRegistration {
            client_id: client_id.to_owned(),
            name: app.spec.display_name.clone(),
            redirect_uris,
            grant_types,
            scopes,
            public: app.spec.is_public_client(),
            app: format!(
                "{}/{}",
                app.metadata.namespace.as_deref().unwrap_or_default(),
                app.metadata.name.as_deref().unwrap_or_default()
            ),
            uid: app.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// A short digest of the registration (`status.authorizationServer.registered`):
    /// a change of the spec the server holds shows as a new digest.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        let fields: [&[u8]; 3] = [self.client_id.as_bytes(), self.name.as_bytes(), self.app.as_bytes()];
        for field in fields {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        for list in [&self.redirect_uris, &self.grant_types, &self.scopes] {
            hasher.update((list.len() as u64).to_be_bytes());
            for item in list {
                hasher.update((item.len() as u64).to_be_bytes());
                hasher.update(item.as_bytes());
            }
        }
        hasher.update([u8::from(self.public)]);
        hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A client with registrar's owner at the server, as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteClient {
    pub registration: ClientRegistration,
    /// Whose cluster's mark it carries.
    pub mark: Mark,
}

/// The cluster mark on a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// This cluster's.
    Ours,
    /// Another cluster's: never touched.
    Elsewhere,
    /// None: registered before clients carried a mark.
    Unmarked,
}

/// The apps whose client registrar may change at the server: by
/// `namespace/name` and UID, the app the ledger gives the Client ID to, and
/// the app it was taken over from (whose client it still is until registered
/// again). A client of this cluster naming any other app — or another
/// cluster's, whatever it names — is not registrar's to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lane(Vec<(String, Uid)>);

impl Lane {
    /// The lane of the app `holder`, and of the app it took its Client ID over from.
    pub fn of(holder: &Holder, taken_over_from: Option<(Key, Uid)>) -> Lane {
        let mut apps = vec![(format!("{}/{}", holder.namespace, holder.name), Uid::of(&holder.uid))];
        if let Some((app, uid)) = taken_over_from {
            apps.push((app.to_string(), uid));
        }
        Lane(apps)
    }

    /// The lane of a client as listed (its own app and UID).
    pub fn listed(registration: &ClientRegistration) -> Lane {
        Lane(vec![(registration.app.clone(), Uid::of(&registration.uid))])
    }

    /// Whether a client naming `app` (`namespace/name`) with `uid` is in this lane.
    pub fn admits(&self, app: &str, uid: &str) -> bool {
        !uid.is_empty() && self.0.iter().any(|(a, u)| a == app && *u == Uid::of(uid))
    }

    /// Whether a client naming `app` (no UID: registered before the ledger) may be adopted.
    pub fn names(&self, app: &str) -> bool {
        self.0.iter().any(|(a, _)| a == app)
    }
}

/// Why a call to the authorization server failed. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AsError {
    /// Not reachable, or timed out: try again later.
    #[error("{server} is unavailable: {reason}")]
    Unavailable { server: &'static str, reason: String },
    /// It answered that it cannot do it now (5xx, a conflict between its own
    /// transactions): try again at once.
    #[error("{server} could not do it now: {reason}")]
    Busy { server: &'static str, reason: String },
    /// It refused the request (4xx), with its own words.
    #[error("{server} refused the client: {message}")]
    Refused { server: &'static str, message: String },
    /// A client of that ID exists there and is not this app's in this
    /// cluster: never touched.
    #[error(
        "{server} holds a client with this Client ID that is not this app's in this cluster ({whose}); it is never touched"
    )]
    NotOurs { server: &'static str, whose: String },
}

/// The outcome of a call to the server, for `registrar_authserver_calls_total`:
/// `ok`, or the error's [`AsError::reason`].
pub fn outcome<T>(result: &Result<T, AsError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

impl AsError {
    /// A short reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AsError::Unavailable { .. } | AsError::Busy { .. } => "Unavailable",
            AsError::Refused { .. } => "Refused",
            AsError::NotOurs { .. } => "ClientExists",
        }
    }
}

/// Pauses between the quick retries of a request the server failed
/// transiently (unreachable, 5xx, a conflict between its own transactions):
/// what is still failing after them is left to the caller's backoff.
const QUICK_RETRIES: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(200), Duration::from_millis(800)];

/// Runs `request`, again after each pause of [`QUICK_RETRIES`] while the
/// server answers that it cannot do it now ([`AsError::Busy`]); one that does
/// not answer at all is left to the caller's backoff (each try would wait for
/// the request's timeout).
async fn retrying<T, F, Fut>(mut request: F) -> Result<T, AsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AsError>>,
{
    for pause in QUICK_RETRIES {
        match request().await {
            Err(AsError::Busy { .. }) => tokio::time::sleep(pause).await,
            done => return done,
        }
    }
    request().await
}

/// The owner registrar marks its clients with by default: one per cluster.
pub fn default_owner(cluster: &str) -> String {
    format!("registrar:{cluster}")
}

/// Why the settings do not make a backend.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl AuthServer {
    /// The backend the settings describe.
    pub fn connect(settings: &Settings) -> Result<Self, SettingsError> {
        match settings.kind {
            Kind::Hydra => Ok(AuthServer::Hydra(hydra::Hydra::new(settings)?)),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        match self {
            AuthServer::Hydra(_) => hydra::CAPABILITIES,
        }
    }

    /// The public issuer URL.
    pub fn issuer(&self) -> &str {
        match self {
            AuthServer::Hydra(h) => h.issuer(),
        }
    }

    /// The token endpoint workloads use.
    pub fn token_url(&self) -> &str {
        match self {
            AuthServer::Hydra(h) => h.token_url(),
        }
    }

    /// How often the server's clients are compared with the apps.
    pub fn sync_interval(&self) -> Duration {
        match self {
            AuthServer::Hydra(h) => h.sync_interval(),
        }
    }

    /// Creates the client, or replaces the client of that ID in `lane`, with
    /// `secret` (`None` for a public client). Returns the secret the server
    /// minted, for a server that mints its own (Hydra does not: `None`).
    pub async fn register(
        &self,
        registration: &ClientRegistration,
        secret: Option<&ClientSecret>,
        lane: &Lane,
    ) -> Result<Option<ClientSecret>, AsError> {
        retrying(|| async {
            match self {
                AuthServer::Hydra(h) => h.register(registration, secret, lane).await.map(|()| None),
            }
        })
        .await
    }

    /// Updates the client in `lane`, keeping its secret. `Ok(false)` when
    /// there is no such client (register it).
    pub async fn update(&self, registration: &ClientRegistration, lane: &Lane) -> Result<bool, AsError> {
        retrying(|| async {
            match self {
                AuthServer::Hydra(h) => h.update(registration, lane).await,
            }
        })
        .await
    }

    /// Revokes the client's tokens and deletes it, when it is in `lane`; a
    /// client already gone is done, one outside the lane is left alone.
    pub async fn delete(&self, client_id: &str, lane: &Lane) -> Result<(), AsError> {
        retrying(|| async {
            match self {
                AuthServer::Hydra(h) => h.delete(client_id, lane).await,
            }
        })
        .await
    }

    /// How long a deleted app waits for its client's deletion here while the
    /// server fails, before it completes without it.
    pub fn deregister_within(&self) -> Duration {
        match self {
            AuthServer::Hydra(h) => h.deregister_within(),
        }
    }

    /// Every client with registrar's owner at the server (all pages).
    pub async fn list_owned(&self) -> Result<Vec<RemoteClient>, AsError> {
        match self {
            AuthServer::Hydra(h) => h.list_owned().await,
        }
    }
}

impl AuthServer {
    /// Where workloads get tokens, for the credentials Secret.
    pub fn urls(&self) -> crate::credentials::layout::ServerUrls {
        crate::credentials::layout::ServerUrls {
            issuer: self.issuer().to_owned(),
            token_url: self.token_url().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppRegistrationSpec, Scope};

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_quickly_and_answers_are_not() {
        let unavailable = || AsError::Busy { server: "Hydra", reason: "a concurrent update".into() };
        // Passes on the third try.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let result = retrying(|| async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0 | 1 => Err(unavailable()),
                _ => Ok(()),
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(250), "after 50 and 200 ms");
        // Still failing after every pause: the last failure is the answer.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), _> = retrying(|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(unavailable())
        })
        .await;
        assert!(matches!(result, Err(AsError::Busy { .. })));
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), QUICK_RETRIES.len() + 1);
        // No answer at all: left to the caller (a try waits for the timeout).
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), _> = retrying(|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(AsError::Unavailable { server: "Hydra", reason: "timed out".into() })
        })
        .await;
        assert!(matches!(result, Err(AsError::Unavailable { .. })));
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A refusal is the server's answer: not retried.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let result: Result<(), _> = retrying(|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(AsError::Refused { server: "Hydra", message: "invalid".into() })
        })
        .await;
        assert!(matches!(result, Err(AsError::Refused { .. })));
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    fn app() -> AppRegistration {
        let mut app = AppRegistration::new(
            "billing",
            AppRegistrationSpec {
                display_name: "Billing".into(),
                scope: Scope::Organization,
                redirect_uris: vec!["https://b.example.com/cb".into(), "https://a.example.com/cb".into()],
                oauth_scopes: vec!["write".into(), "read".into()],
                ..Default::default()
            },
        );
        app.metadata.namespace = Some("team-a".into());
        app
    }

    #[test]
    fn a_registration_carries_the_apps_spec_in_a_stable_order() {
        let registration = ClientRegistration::for_app(&app(), "cid");
        assert_eq!(registration.client_id, "cid");
        assert_eq!(registration.name, "Billing");
        assert_eq!(registration.redirect_uris, ["https://a.example.com/cb", "https://b.example.com/cb"]);
        assert_eq!(registration.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(registration.scopes, ["read", "write"]);
        assert!(!registration.public);
        assert_eq!(registration.app, "team-a/billing");
    }

    #[test]
    fn a_lane_admits_its_apps_by_name_and_uid_only() {
        let uid = "11111111-1111-1111-1111-111111111111";
        let holder = Holder { namespace: "team-a".into(), name: "billing".into(), uid: uid.into() };
        let lane = Lane::of(&holder, None);
        assert!(lane.admits("team-a/billing", uid));
        assert!(!lane.admits("team-a/billing", "22222222-2222-2222-2222-222222222222"), "another incarnation");
        assert!(!lane.admits("team-b/billing", uid));
        assert!(!lane.admits("team-a/billing", ""), "a client without a UID is not admitted");
        assert!(lane.names("team-a/billing") && !lane.names("team-a/other"));
        let old = "33333333-3333-3333-3333-333333333333";
        let taken = Lane::of(&holder, Some((Key::new("team-a", "portal"), Uid::of(old))));
        assert!(taken.admits("team-a/portal", old), "the app it was taken over from");
        assert!(taken.admits("team-a/billing", uid));
    }

    #[test]
    fn the_digest_follows_every_field_and_not_the_order() {
        let base = ClientRegistration::for_app(&app(), "cid");
        let mut reordered = app();
        reordered.spec.oauth_scopes.reverse();
        reordered.spec.redirect_uris.reverse();
        assert_eq!(ClientRegistration::for_app(&reordered, "cid").digest(), base.digest());
        let mut other_uid = base.clone();
        other_uid.uid = "another".into();
        assert_eq!(other_uid.digest(), base.digest(), "the UID is checked as the lane, not compared");
        let changes: [fn(&mut ClientRegistration); 7] = [
            |r| r.client_id.push('x'),
            |r| r.name.push('x'),
            |r| r.redirect_uris.push("https://c.example.com/cb".into()),
            |r| r.grant_types.push("client_credentials".into()),
            |r| r.scopes.pop().map(drop).unwrap_or_default(),
            |r| r.public = true,
            |r| r.app.push('x'),
        ];
        for change in changes {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.digest(), base.digest(), "{changed:?}");
        }
        assert_eq!(base.digest().len(), 16);
    }
}
