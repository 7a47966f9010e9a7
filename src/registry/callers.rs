//! Who may call the registry: bearer tokens checked with TokenReview, callers
//! authorized with SubjectAccessReview on the virtual resource
//! `registry.registrar.dev` (verb `get` for lookups and the catalog, `create`
//! for authentication and authorization checks). Both answers are cached
//! briefly, keyed by a SHA-256 of the token, never the token itself.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};

/// How long an answer is reused: a grant or an authentication for 30 s; a
/// refusal only briefly, so a permission just granted takes effect fast.
const TTL: Duration = Duration::from_secs(30);
const REFUSAL_TTL: Duration = Duration::from_secs(2);
/// Bound of each cache; full caches are cleared.
const MAX_ENTRIES: usize = 10_000;

/// The two kinds of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Lookups and the catalog.
    Read,
    /// Client authentication, authorization checks, forward-auth.
    Check,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "get",
            Access::Check => "create",
        }
    }
}

/// Why a caller is turned away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one the apiserver does not accept: 401.
    Unauthenticated,
    /// Authenticated, not allowed: 403.
    Forbidden,
    /// The apiserver could not be asked: 503.
    Unavailable,
}

/// Entries expire at the instant stored with them.
type Cached<T> = Mutex<HashMap<[u8; 32], (Instant, T)>>;

pub struct Callers {
    client: Client,
    users: Cached<Option<UserInfo>>,
    decisions: Cached<bool>,
}

fn lookup<T: Clone>(cache: &Cached<T>, key: &[u8; 32]) -> Option<T> {
    let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.get(key).filter(|(expires, _)| Instant::now() < *expires).map(|(_, v)| v.clone())
}

fn remember<T>(cache: &Cached<T>, key: [u8; 32], value: T, positive: bool) {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MAX_ENTRIES {
        cache.clear();
    }
    let ttl = if positive { TTL } else { REFUSAL_TTL };
    cache.insert(key, (Instant::now() + ttl, value));
}

impl Callers {
    pub fn new(client: Client) -> Self {
        Callers { client, users: Mutex::default(), decisions: Mutex::default() }
    }

    /// Checks the `Authorization: Bearer` token of a request for `access`.
    pub async fn check(&self, authorization: Option<&str>, access: Access) -> Result<String, Refusal> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let token_key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let user = match lookup(&self.users, &token_key) {
            Some(user) => user,
            None => {
                let user = self.review(token).await?;
                let positive = user.is_some();
                remember(&self.users, token_key, user.clone(), positive);
                user
            }
        };
        let user = user.ok_or(Refusal::Unauthenticated)?;
        let username = user.username.clone().unwrap_or_default();
        let mut decision_key = Sha256::new();
        decision_key.update(token_key);
        decision_key.update(access.verb().as_bytes());
        let decision_key: [u8; 32] = decision_key.finalize().into();
        let allowed = match lookup(&self.decisions, &decision_key) {
            Some(allowed) => allowed,
            None => {
                let allowed = self.authorize(&user, access).await?;
                remember(&self.decisions, decision_key, allowed, allowed);
                allowed
            }
        };
        if allowed { Ok(username) } else { Err(Refusal::Forbidden) }
    }

    async fn review(&self, token: &str) -> Result<Option<UserInfo>, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), ..Default::default() },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        let status = answer.status.unwrap_or_default();
        Ok(if status.authenticated == Some(true) { status.user } else { None })
    }

    async fn authorize(&self, user: &UserInfo, access: Access) -> Result<bool, Refusal> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("registrar.dev".into()),
                    resource: Some("registry".into()),
                    verb: Some(access.verb().into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}
