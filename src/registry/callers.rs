//! Who may call the registry: bearer tokens checked with TokenReview for the
//! registry's own audience (default `registrar`, so a token for the apiserver
//! is no good here and a registry token is no good at the apiserver), and
//! callers authorized with SubjectAccessReview on the virtual resource
//! `registry.registrar.dev` in the namespace of what they ask about (verb
//! `get` for lookups and the catalog, `create` for authentication and
//! authorization checks): a RoleBinding in namespace A reaches A's clients
//! only, a ClusterRoleBinding every namespace. Answers are cached briefly
//! (a grant or an authentication 30 s, a refusal 2 s), keyed by a SHA-256 of
//! the token, never the token itself. Tokens the apiserver refuses cost each
//! source address a budget (a burst of 10, then 2 a second): past it, a new
//! token from there is turned away (429) without a TokenReview, so random
//! tokens cannot make the registry flood the apiserver.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, UserInfo},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use tracing::warn;

use crate::runtime::metrics::{CacheLabels, Metrics};

const TTL: Duration = Duration::from_secs(30);
const REFUSAL_TTL: Duration = Duration::from_secs(2);
/// Refused tokens a source may present at once, and then per second.
const REFUSED_BURST: f64 = 10.0;
const REFUSED_PER_SECOND: f64 = 2.0;
/// The namespace of a SubjectAccessReview about every namespace.
pub const EVERY_NAMESPACE: &str = "";
/// Bound of each cache.
const MAX_ENTRIES: u64 = 10_000;

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
    /// No token, or one the apiserver does not accept for this audience: 401.
    Unauthenticated,
    /// Authenticated, not allowed: 403.
    Forbidden,
    /// The apiserver could not be asked: 503.
    Unavailable,
    /// Too many refused tokens from this source: 429, retry after this long.
    Throttled(Duration),
}

/// What a source may still spend on refused tokens: a burst, refilled at a
/// steady rate.
#[derive(Debug)]
struct Budget {
    left: f64,
    at: Instant,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Budget { left: REFUSED_BURST, at: now }
    }

    /// Takes one review from the budget, if it has one now; if not, how
    /// long until it has. Taken before the review, not after it is refused,
    /// so reviews in flight at once cannot overdraw it.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() * REFUSED_PER_SECOND;
        self.left = (self.left + refilled).min(REFUSED_BURST);
        self.at = now;
        if self.left < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - self.left) / REFUSED_PER_SECOND));
        }
        self.left -= 1.0;
        Ok(())
    }

    /// Gives back a review taken for a token that was not refused.
    fn give_back(&mut self) {
        self.left = (self.left + 1.0).min(REFUSED_BURST);
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub username: String,
    token_key: [u8; 32],
    user: UserInfo,
}

pub struct Callers {
    client: Client,
    audience: String,
    metrics: Metrics,
    users: Cache<[u8; 32], UserInfo>,
    unknown_tokens: Cache<[u8; 32], ()>,
    /// What each source address may still spend on refused tokens.
    budgets: Cache<IpAddr, Arc<Mutex<Budget>>>,
    /// (token, verb, namespace) → allowed.
    grants: Cache<([u8; 32], &'static str, String), bool>,
    refusals: Cache<([u8; 32], &'static str, String), bool>,
}

fn cache<K, V>(ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(MAX_ENTRIES).time_to_live(ttl).build()
}

impl Callers {
    pub fn new(client: Client, audience: String, metrics: Metrics) -> Self {
        Callers {
            client,
            audience,
            metrics,
            users: cache(TTL),
            unknown_tokens: cache(REFUSAL_TTL),
            // Idle for a burst's refill time, a source's budget is whole again.
            budgets: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_idle(Duration::from_secs_f64(REFUSED_BURST / REFUSED_PER_SECOND))
                .build(),
            grants: cache(TTL),
            refusals: cache(REFUSAL_TTL),
        }
    }

    fn hit(&self, cache: &str) {
        self.metrics.registry_cache_hits.get_or_create(&CacheLabels { cache: cache.into() }).inc();
    }

    /// Authenticates the bearer token of a request from `source`.
    pub async fn authenticate(&self, token: Option<&str>, source: IpAddr) -> Result<Caller, Refusal> {
        let token = token.ok_or(Refusal::Unauthenticated)?;
        let token_key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.users.get(&token_key) {
            self.hit("token");
            return Ok(Caller { username: user.username.clone().unwrap_or_default(), token_key, user });
        }
        if self.unknown_tokens.contains_key(&token_key) {
            self.hit("token");
            return Err(Refusal::Unauthenticated);
        }
        let budget = self.budgets.get_with(source, || Arc::new(Mutex::new(Budget::new(Instant::now()))));
        let lock = |budget: &Mutex<Budget>| budget.lock().unwrap_or_else(|p| p.into_inner()).take(Instant::now());
        lock(&budget).map_err(|after| {
            self.metrics.registry_token_throttled.inc();
            Refusal::Throttled(after)
        })?;
        let give_back = || budget.lock().unwrap_or_else(|p| p.into_inner()).give_back();
        match self.review(token).await {
            Ok(Some(user)) => {
                give_back();
                self.users.insert(token_key, user.clone());
                Ok(Caller { username: user.username.clone().unwrap_or_default(), token_key, user })
            }
            Ok(None) => {
                self.unknown_tokens.insert(token_key, ());
                Err(Refusal::Unauthenticated)
            }
            Err(refusal) => {
                give_back();
                Err(refusal)
            }
        }
    }

    /// Whether `caller` may `access` the registry in `namespace`.
    pub async fn authorize(&self, caller: &Caller, access: Access, namespace: &str) -> Result<(), Refusal> {
        let key = (caller.token_key, access.verb(), namespace.to_owned());
        let allowed = match self.grants.get(&key).or_else(|| self.refusals.get(&key)) {
            Some(allowed) => {
                self.hit("decision");
                allowed
            }
            None => {
                let allowed = self.review_access(&caller.user, access, namespace).await?;
                if allowed {
                    self.grants.insert(key, true)
                } else {
                    self.refusals.insert(key, false)
                }
                allowed
            }
        };
        if allowed { Ok(()) } else { Err(Refusal::Forbidden) }
    }

    async fn review(&self, token: &str) -> Result<Option<UserInfo>, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), audiences: Some(vec![self.audience.clone()]) },
            ..Default::default()
        };
        let started = Instant::now();
        let answer = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await;
        self.metrics.registry_tokenreview_seconds.observe(started.elapsed().as_secs_f64());
        // The error names the request, never the token it carried.
        let status = answer
            .map_err(|e| {
                warn!(error = %e, "TokenReview failed: the registry's caller could not be authenticated");
                Refusal::Unavailable
            })?
            .status
            .unwrap_or_default();
        // The apiserver answers for the audiences it was asked about; a token
        // that holds none of them is not ours.
        let for_us = status.audiences.as_ref().is_some_and(|a| a.contains(&self.audience));
        Ok(if status.authenticated == Some(true) && for_us { status.user } else { None })
    }

    async fn review_access(&self, user: &UserInfo, access: Access, namespace: &str) -> Result<bool, Refusal> {
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
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                warn!(namespace, error = %e, "SubjectAccessReview failed: the registry's caller could not be authorized");
                Refusal::Unavailable
            })?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_spends_a_burst_of_refused_tokens_then_two_a_second() {
        let start = Instant::now();
        let mut budget = Budget::new(start);
        for _ in 0..10 {
            assert!(budget.take(start).is_ok());
        }
        let wait = budget.take(start).expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO, "{wait:?}");
        assert!(budget.take(start + Duration::from_millis(500)).is_ok(), "one more after half a second");
        assert!(budget.take(start + Duration::from_millis(600)).is_err());
        assert!(budget.take(start + Duration::from_secs(60)).is_ok());
        assert!(budget.left <= REFUSED_BURST, "never more than a burst");
    }

    /// Reviews in flight at once each hold their share: ten at the edge of
    /// the budget are not all let through because none was refused yet.
    #[test]
    fn reviews_in_flight_cannot_overdraw_the_budget() {
        let start = Instant::now();
        let mut budget = Budget::new(start);
        let taken = (0..20).filter(|_| budget.take(start).is_ok()).count();
        assert_eq!(taken, 10, "the burst, however many are asked for at once");
        budget.give_back();
        assert!(budget.take(start).is_ok(), "a token that was not refused gives its review back");
        assert!(budget.take(start).is_err());
        for _ in 0..20 {
            budget.give_back();
        }
        assert!(budget.left <= REFUSED_BURST, "never more than a burst");
    }
}
