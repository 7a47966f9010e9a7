//! Client authentication against the hashes status holds: argon2id on a
//! bounded pool, bounded against abuse.
//!
//! - Verified credentials are cached (by Client ID and a SHA-256 of the
//!   presented secret, with the hash they verified against, so a rotation or a
//!   revocation takes effect on the next request).
//! - A failure is cached briefly too (keyed also by the hashes it failed
//!   against, so a rotation never leaves a new secret refused): the same wrong
//!   secret presented again costs no hash.
//! - Concurrent presentations of the same credentials share one verification,
//!   which runs as its own task: a caller that hangs up neither stops it nor
//!   escapes its cost (the hashing turn is held until the hash ends, and a
//!   failure is charged to the budgets below).
//! - Failures are throttled per Client ID, per namespace and per caller: past
//!   a small burst, more unknown secrets for that client (or that namespace's
//!   clients, or from that caller) are refused (429) without hashing, so one
//!   client's — or one tenant's many clients' — flood of wrong secrets cannot
//!   starve everyone else's first verification, nor spend the budget of a
//!   caller (a shared proxy) that other namespaces go through.
//! - Hashing turns are handed out namespace by namespace: when every worker
//!   is busy, the next turn goes to the next namespace waiting, in turn, so a
//!   namespace's queue of verifications (one tenant's flood over many clients)
//!   delays another namespace's first verification by at most the hashes
//!   already running. A verification whose budget was spent while it waited
//!   is refused without hashing.
//! - A verification waits a bounded time for a hashing turn, then is shed (429).

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::FutureExt;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::credentials::{ClientSecret, Hasher};

/// Verified credentials kept at most.
const MAX_VERIFIED: u64 = 100_000;
/// Failures kept at most, and for how long.
const MAX_FAILED: u64 = 100_000;
const FAILED_TTL: Duration = Duration::from_secs(5);

/// How the verifier is bounded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failed verifications a Client ID may cost in a burst, and per second after.
    pub client_burst: u32,
    pub client_per_second: u32,
    /// Failed verifications the clients of one namespace may cost in a burst,
    /// and per second after.
    pub namespace_burst: u32,
    pub namespace_per_second: u32,
    /// Failed verifications a caller may cost in a burst, and per second after.
    pub caller_burst: u32,
    pub caller_per_second: u32,
    /// Longest a verification waits for a hashing turn before it is shed.
    pub wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            client_burst: 5,
            client_per_second: 1,
            namespace_burst: 20,
            namespace_per_second: 5,
            caller_burst: 100,
            caller_per_second: 20,
            wait: Duration::from_secs(2),
        }
    }
}

/// (Client ID, SHA-256 of a presented secret).
type CredentialKey = (String, [u8; 32]);

/// What a presentation came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Verified {
        cached: bool,
    },
    Wrong {
        cached: bool,
    },
    /// No hashing turn came within the wait.
    Shed,
    /// The client's or the caller's failure budget is spent; retry after this long.
    Throttled(Duration),
}

/// The outcome of one argon2id verification.
#[derive(Clone)]
enum Verdict {
    /// The secret verified against this hash.
    Verified(String),
    Wrong,
    Shed,
    Throttled(Duration),
}

/// A verification running as its own task: every presentation of the same
/// credentials awaits the same one, and it runs to its end (and is charged to
/// the failure budgets) even when every request waiting for it goes away.
type Running = futures::future::Shared<futures::future::BoxFuture<'static, Verdict>>;

/// Cheap to clone: the caches and budgets are shared.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    hasher: Hasher,
    limits: Limits,
    verified: Cache<CredentialKey, String>,
    /// (Client ID, secret digest, digest of the hashes it failed against).
    failed: Cache<(CredentialKey, [u8; 32]), ()>,
    in_flight: Mutex<HashMap<CredentialKey, Running>>,
    per_client: Throttle<String>,
    per_namespace: Throttle<String>,
    per_caller: Throttle<String>,
    turns: Turns,
}

impl Verifier {
    pub fn new(hasher: Hasher, limits: Limits) -> Self {
        Verifier {
            inner: Arc::new(Inner {
                limits,
                verified: Cache::builder().max_capacity(MAX_VERIFIED).build(),
                failed: Cache::builder().max_capacity(MAX_FAILED).time_to_live(FAILED_TTL).build(),
                in_flight: Mutex::default(),
                per_client: Throttle::new(limits.client_burst, limits.client_per_second),
                per_namespace: Throttle::new(limits.namespace_burst, limits.namespace_per_second),
                per_caller: Throttle::new(limits.caller_burst, limits.caller_per_second),
                turns: Turns::new(hasher.workers()),
                hasher,
            }),
        }
    }

    pub fn hasher(&self) -> &Hasher {
        &self.inner.hasher
    }

    /// Is `secret` one of `accepted` (the current hash, and during a grace
    /// period the previous one) of `client_id`, a client of `namespace`?
    /// `caller` is who asks.
    pub async fn check(
        &self,
        client_id: &str,
        namespace: &str,
        secret: &ClientSecret,
        accepted: &[String],
        caller: &str,
    ) -> Outcome {
        let inner = &self.inner;
        let key = (client_id.to_owned(), secret.digest());
        if inner.verified.get(&key).is_some_and(|hash| accepted.contains(&hash)) {
            return Outcome::Verified { cached: true };
        }
        let failed_key = (key.clone(), digest_of(accepted));
        if inner.failed.contains_key(&failed_key) {
            return Outcome::Wrong { cached: true };
        }
        // A spent budget refuses at once, before any task or hash.
        if let Some(after) = inner.blocked(client_id, namespace, caller) {
            return Outcome::Throttled(after);
        }
        let running = {
            let mut in_flight = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            in_flight
                .entry(key.clone())
                .or_insert_with(|| {
                    let task = tokio::spawn(inner.clone().verify(
                        key.clone(),
                        namespace.to_owned(),
                        secret.clone(),
                        accepted.to_vec(),
                        caller.to_owned(),
                    ));
                    let verdict: futures::future::BoxFuture<'static, Verdict> =
                        Box::pin(async move { task.await.unwrap_or(Verdict::Shed) });
                    verdict.shared()
                })
                .clone()
        };
        match running.await {
            // Verified against a hash still accepted (it may have been rotated
            // out while this request waited for another's verification).
            Verdict::Verified(hash) if accepted.contains(&hash) => Outcome::Verified { cached: false },
            Verdict::Verified(_) | Verdict::Wrong => Outcome::Wrong { cached: false },
            Verdict::Shed => Outcome::Shed,
            Verdict::Throttled(after) => Outcome::Throttled(after),
        }
    }
}

impl Inner {
    /// One verification of `secret` against each accepted hash. The caches
    /// and budgets learn its verdict before it leaves `in_flight`, so no
    /// presentation arriving meanwhile verifies it again.
    async fn verify(
        self: Arc<Self>,
        key: CredentialKey,
        namespace: String,
        secret: ClientSecret,
        accepted: Vec<String>,
        caller: String,
    ) -> Verdict {
        let verdict = self.run(&key.0, &namespace, &secret, &accepted, &caller).await;
        match &verdict {
            Verdict::Verified(hash) => {
                self.verified.insert(key.clone(), hash.clone());
            }
            Verdict::Wrong => {
                self.failed.insert((key.clone(), digest_of(&accepted)), ());
                self.per_client.failed(key.0.clone());
                // A namespace's clients spend its budget first: once it is
                // spent, its failures no longer reach the caller's.
                if !self.per_namespace.failed(namespace) {
                    self.per_caller.failed(caller);
                }
            }
            Verdict::Shed | Verdict::Throttled(_) => {}
        }
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        verdict
    }

    /// How long the client's, its namespace's or the caller's spent failure
    /// budget blocks them.
    fn blocked(&self, client_id: &str, namespace: &str, caller: &str) -> Option<Duration> {
        let now = Instant::now();
        [
            self.per_client.blocked(client_id, now),
            self.per_namespace.blocked(namespace, now),
            self.per_caller.blocked(caller, now),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    async fn run(
        &self,
        client_id: &str,
        namespace: &str,
        secret: &ClientSecret,
        accepted: &[String],
        caller: &str,
    ) -> Verdict {
        if let Some(after) = self.blocked(client_id, namespace, caller) {
            return Verdict::Throttled(after);
        }
        let Some(_turn) = self.turns.take(namespace, self.limits.wait).await else { return Verdict::Shed };
        // The budget may have been spent while this waited for its turn.
        if let Some(after) = self.blocked(client_id, namespace, caller) {
            return Verdict::Throttled(after);
        }
        for hash in accepted {
            match self.hasher.verify_within(secret, hash, self.limits.wait).await {
                Ok(Some(true)) => return Verdict::Verified(hash.clone()),
                Ok(Some(false)) | Err(_) => {}
                Ok(None) => return Verdict::Shed,
            }
        }
        Verdict::Wrong
    }
}

/// Hashing turns, handed out namespace by namespace (see the module's doc).
struct Turns {
    state: Mutex<TurnState>,
}

struct TurnState {
    /// Turns nobody holds (only while nobody waits).
    free: usize,
    /// Who waits, by namespace, first come first served.
    queues: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// The namespaces waiting, in the order they are served.
    order: VecDeque<String>,
}

/// A turn held; the next goes out when it is dropped.
struct Turn<'a> {
    turns: &'a Turns,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.hand_on();
    }
}

impl Turns {
    fn new(workers: usize) -> Self {
        let state = TurnState { free: workers.max(1), queues: HashMap::new(), order: VecDeque::new() };
        Turns { state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A turn for a verification of `namespace`, within `wait` (else `None`).
    async fn take(&self, namespace: &str, wait: Duration) -> Option<Turn<'_>> {
        let mut handed = {
            let mut state = self.lock();
            if state.free > 0 {
                state.free -= 1;
                return Some(Turn { turns: self });
            }
            let (tx, rx) = oneshot::channel();
            let queue = state.queues.entry(namespace.to_owned()).or_default();
            queue.push_back(tx);
            if queue.len() == 1 {
                state.order.push_back(namespace.to_owned());
            }
            rx
        };
        match tokio::time::timeout(wait, &mut handed).await {
            Ok(Ok(())) => Some(Turn { turns: self }),
            Ok(Err(_)) => None,
            Err(_) => {
                // Closed, so no turn is handed here from now on; one handed
                // in the meantime is taken (and handed on when dropped).
                handed.close();
                handed.try_recv().ok().map(|()| Turn { turns: self })
            }
        }
    }

    /// The next namespace in turn gets the turn given back; nobody waiting,
    /// it is free.
    fn hand_on(&self) {
        let mut state = self.lock();
        while let Some(namespace) = state.order.pop_front() {
            let Some(queue) = state.queues.get_mut(&namespace) else { continue };
            let mut handed = false;
            while let Some(waiter) = queue.pop_front() {
                if waiter.send(()).is_ok() {
                    handed = true;
                    break;
                }
            }
            if queue.is_empty() {
                state.queues.remove(&namespace);
            } else {
                state.order.push_back(namespace);
            }
            if handed {
                return;
            }
        }
        state.free += 1;
    }
}

fn digest_of(hashes: &[String]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for hash in hashes {
        digest.update((hash.len() as u64).to_be_bytes());
        digest.update(hash.as_bytes());
    }
    digest.finalize().into()
}

/// A failure budget per key (GCRA, governor): each failure spends from it;
/// once spent, the key is blocked until the budget allows one more.
struct Throttle<K: Hash + Eq + Clone + Send + Sync + 'static> {
    limiter: DefaultKeyedRateLimiter<K>,
    blocked: Cache<K, Instant>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Throttle<K> {
    fn new(burst: u32, per_second: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        Throttle {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            blocked: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build(),
        }
    }

    /// How long `key` stays blocked, if it is.
    fn blocked<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.blocked.get(key).and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// A failure spends from `key`'s budget; spent, `key` is blocked (and
    /// this returns `true`).
    fn failed(&self, key: K) -> bool {
        let spent = match self.limiter.check_key(&key) {
            Ok(()) => false,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                self.blocked.insert(key, Instant::now() + wait);
                true
            }
        };
        // Keys of budgets that are full again take no memory.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{HashParams, hash_now_with};

    fn cheap() -> HashParams {
        HashParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    fn verifier(limits: Limits) -> Verifier {
        Verifier::new(Hasher::new(cheap(), 2).unwrap(), limits)
    }

    fn secret(s: &str) -> ClientSecret {
        ClientSecret::from_bytes(s.as_bytes()).unwrap()
    }

    fn hash(s: &str) -> String {
        hash_now_with(&secret(s), cheap()).unwrap()
    }

    #[tokio::test]
    async fn a_verification_is_cached_until_the_hash_is_rotated_out() {
        let v = verifier(Limits::default());
        let (old, new) = (hash("old-secret"), hash("new-secret"));
        assert_eq!(
            v.check("c", "ns", &secret("old-secret"), std::slice::from_ref(&old), "as").await,
            Outcome::Verified { cached: false }
        );
        assert_eq!(
            v.check("c", "ns", &secret("old-secret"), std::slice::from_ref(&old), "as").await,
            Outcome::Verified { cached: true }
        );
        // In a grace period both verify; after it, only the new one.
        let both = [new.clone(), old.clone()];
        assert_eq!(v.check("c", "ns", &secret("old-secret"), &both, "as").await, Outcome::Verified { cached: true });
        assert_eq!(
            v.check("c", "ns", &secret("old-secret"), std::slice::from_ref(&new), "as").await,
            Outcome::Wrong { cached: false }
        );
        assert_eq!(v.check("c", "ns", &secret("new-secret"), &[new], "as").await, Outcome::Verified { cached: false });
    }

    #[tokio::test]
    async fn a_failure_is_cached_but_never_against_a_new_hash() {
        let v = verifier(Limits::default());
        let old = hash("old-secret");
        assert_eq!(
            v.check("c", "ns", &secret("next-secret"), std::slice::from_ref(&old), "as").await,
            Outcome::Wrong { cached: false }
        );
        assert_eq!(v.check("c", "ns", &secret("next-secret"), &[old], "as").await, Outcome::Wrong { cached: true });
        // The rotation to it reaches the registry: it verifies at once.
        let next = hash("next-secret");
        assert_eq!(
            v.check("c", "ns", &secret("next-secret"), &[next], "as").await,
            Outcome::Verified { cached: false }
        );
    }

    #[tokio::test]
    async fn failures_are_throttled_per_client_and_other_clients_are_not() {
        let v = verifier(Limits { client_burst: 3, client_per_second: 1, ..Limits::default() });
        let h = hash("right");
        let mut outcomes = Vec::new();
        for i in 0..6 {
            outcomes
                .push(v.check("flooded", "ns", &secret(&format!("wrong-{i}")), std::slice::from_ref(&h), "as").await);
        }
        assert_eq!(
            &outcomes[..3],
            &[Outcome::Wrong { cached: false }, Outcome::Wrong { cached: false }, Outcome::Wrong { cached: false }]
        );
        assert!(
            outcomes[4..].iter().all(|o| matches!(o, Outcome::Throttled(d) if *d <= Duration::from_secs(1))),
            "{outcomes:?}"
        );
        // Another client's first correct verification is untouched.
        assert_eq!(v.check("other", "ns", &secret("right"), &[h], "as").await, Outcome::Verified { cached: false });
    }

    #[tokio::test]
    async fn one_namespaces_many_clients_spend_its_budget_not_the_callers() {
        let v = verifier(Limits { namespace_burst: 3, namespace_per_second: 1, caller_burst: 5, ..Limits::default() });
        let h = hash("right");
        // A tenant's flood spread over many clients of its namespace, through a shared proxy.
        let mut outcomes = Vec::new();
        for i in 0..10 {
            outcomes
                .push(v.check(&format!("t{i}"), "tenant", &secret("wrong"), std::slice::from_ref(&h), "proxy").await);
        }
        assert!(outcomes[..3].iter().all(|o| *o == Outcome::Wrong { cached: false }), "the burst: {outcomes:?}");
        assert!(outcomes[4..].iter().all(|o| matches!(o, Outcome::Throttled(_))), "then refused: {outcomes:?}");
        // The same proxy still verifies other namespaces' clients, first time or not.
        assert_eq!(
            v.check("other", "team-b", &secret("right"), std::slice::from_ref(&h), "proxy").await,
            Outcome::Verified { cached: false }
        );
        assert_eq!(v.check("other", "team-b", &secret("wrong"), &[h], "proxy").await, Outcome::Wrong { cached: false });
    }

    #[tokio::test]
    async fn failures_are_throttled_per_caller() {
        let v = verifier(Limits { client_burst: 100, caller_burst: 2, caller_per_second: 1, ..Limits::default() });
        let h = hash("right");
        for i in 0..3 {
            v.check(&format!("c{i}"), "ns", &secret("wrong"), std::slice::from_ref(&h), "mallory").await;
        }
        assert!(matches!(
            v.check("c9", "ns", &secret("wrong"), std::slice::from_ref(&h), "mallory").await,
            Outcome::Throttled(_)
        ));
        assert_eq!(v.check("c9", "ns", &secret("right"), &[h], "honest").await, Outcome::Verified { cached: false });
    }

    #[tokio::test]
    async fn concurrent_presentations_share_one_verification() {
        let v = Arc::new(verifier(Limits { client_burst: 1, ..Limits::default() }));
        let h = hash("right");
        let all = futures::future::join_all((0..20).map(|_| {
            let (v, h) = (v.clone(), h.clone());
            async move { v.check("c", "ns", &secret("wrong"), &[h], "as").await }
        }))
        .await;
        assert!(all.iter().all(|o| matches!(o, Outcome::Wrong { .. })), "one failure, not twenty: {all:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn hashing_turns_go_to_namespaces_in_turn() {
        let turns = Arc::new(Turns::new(1));
        let served = Arc::new(Mutex::new(Vec::new()));
        let first = turns.take("flood", Duration::from_secs(2)).await.expect("a free turn");
        let mut waiting = Vec::new();
        // The flooding namespace queues five, then another namespace one.
        for (i, namespace) in ["flood", "flood", "flood", "flood", "flood", "other"].into_iter().enumerate() {
            let (turns, served) = (turns.clone(), served.clone());
            waiting.push(tokio::spawn(async move {
                let _turn = turns.take(namespace, Duration::from_secs(2)).await.expect("a turn");
                served.lock().unwrap().push(format!("{namespace}-{i}"));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }));
            tokio::task::yield_now().await;
        }
        drop(first);
        for task in waiting {
            task.await.unwrap();
        }
        let served = served.lock().unwrap().clone();
        assert_eq!(served[..2], ["flood-0", "other-5"], "the other namespace is next but one: {served:?}");
        assert_eq!(served.len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_verification_that_gives_up_waiting_loses_no_turn() {
        let turns = Turns::new(1);
        let held = turns.take("a", Duration::from_secs(2)).await.expect("a free turn");
        assert!(turns.take("b", Duration::from_millis(100)).await.is_none(), "no turn within the wait");
        drop(held);
        let again = turns.take("c", Duration::from_millis(1)).await;
        assert!(again.is_some(), "the turn given back is free, not handed to one who left");
    }
}
