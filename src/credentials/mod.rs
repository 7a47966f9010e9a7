//! Client credentials: minting Client IDs and secrets, hashing and verifying
//! secrets with argon2id on a bounded blocking pool, and fingerprints.
//!
//! A plaintext secret only ever lives in a [`ClientSecret`], whose `Debug` is
//! redacted and whose memory is wiped on drop, so it cannot slip into a log line,
//! an Event, status or an error by accident.

pub mod layout;
pub mod retention;
pub mod seal;

use std::{fmt, sync::Arc};

use argon2::{Algorithm, Argon2, Block, Params, Version, password_hash::phc};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// Bytes of randomness in a Client ID (128 bits).
const CLIENT_ID_BYTES: usize = 16;
/// Bytes of randomness in a client secret (256 bits).
const SECRET_BYTES: usize = 32;

/// Mints a Client ID: 128 bits from the OS-seeded CSPRNG, base64url without padding.
pub fn mint_client_id() -> String {
    let mut bytes = [0u8; CLIENT_ID_BYTES];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A plaintext client secret. Never printed: `Debug` shows `<redacted>`, there
/// is no `Display`, and the memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(Zeroizing<String>);

impl ClientSecret {
    /// Mints a secret: 256 bits from the OS-seeded CSPRNG, base64url without padding.
    pub fn mint() -> Self {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::fill(&mut bytes[..]);
        ClientSecret(Zeroizing::new(URL_SAFE_NO_PAD.encode(&bytes[..])))
    }

    /// Wraps a secret read back from a Secret or presented by a client.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().map(|s| ClientSecret(Zeroizing::new(s.to_owned())))
    }

    /// The plaintext, for writing into the credentials Secret only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// First 8 hex digits of the SHA-256 of the secret: the fingerprint status
    /// held before fingerprints were keyed (`SealKey::fingerprint`), still
    /// recognized on apps issued then.
    pub fn plain_fingerprint(&self) -> String {
        let digest = self.digest();
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SHA-256 of the secret, for keying caches of verified secrets.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// The shortest client secret registrar accepts from a source of the user's
/// choice (`spec.secret.sourceRef`).
pub const MIN_CHOSEN_SECRET_CHARS: usize = 32;
/// The least a chosen secret's guess count may be, as a power of ten (about 53
/// bits). zxcvbn counts in a u64, so random secrets all land at its ceiling
/// (about 10^19.3); patterns land far below (a keyboard walk of 36 characters:
/// 10^12; a repeated word: 10^1).
const MIN_CHOSEN_SECRET_GUESSES_LOG10: f64 = 16.0;

impl ClientSecret {
    /// Whether a secret of the user's choice is too weak to issue: fewer than
    /// 32 characters, control characters, or a pattern a guesser tries early
    /// (repeats, sequences, keyboard walks, dictionary words, dates),
    /// estimated with zxcvbn. Only yes or no: which of these, and how close, is
    /// a description of the value, for nobody to read.
    pub fn is_weak(&self) -> bool {
        let text = self.expose();
        text.chars().count() < MIN_CHOSEN_SECRET_CHARS
            || text.chars().any(char::is_control)
            || zxcvbn::zxcvbn(text, &[]).guesses_log10() < MIN_CHOSEN_SECRET_GUESSES_LOG10
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashParams {
    /// For secrets a person chose: the OWASP minimum for argon2id, m=19456
    /// KiB, t=2, p=1 (configurable with --argon2-*).
    fn default() -> Self {
        HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

impl HashParams {
    /// For secrets registrar mints: 256 random bits cannot be guessed, so
    /// slow, memory-hard hashing buys nothing against an attacker who has the
    /// hash (NIST SP 800-63B §5.1.2.2: secrets of 112 bits or more need only an
    /// approved one-way function). argon2id at its smallest useful cost (256 KiB,
    /// one pass; its CPU cost is in docs/benchmarks.md) keeps one format for
    /// every hash.
    pub const MINTED: HashParams = HashParams { memory_kib: 256, iterations: 1, parallelism: 1 };
}

/// Where a secret comes from, which decides what its hash must withstand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Minted by registrar: 256 random bits, hashed at [`HashParams::MINTED`].
    Minted,
    /// Chosen by someone (a secret source, a retained secret taken over):
    /// hashed at the password cost the hasher was made with.
    Chosen,
}

/// What went wrong while hashing or verifying. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("argon2id hashing failed: {0}")]
    Hash(String),
    #[error("the stored secret hash is not a valid PHC string")]
    MalformedHash,
    #[error("the hashing pool was shut down")]
    PoolClosed,
}

/// Hashes and verifies secrets with argon2id on tokio's blocking pool, at most
/// `permits` at a time (by default one per core), so hashing never starves the
/// async runtime or queues unboundedly on threads.
///
/// argon2id's working memory (19 MiB at the default cost) is reused from hash
/// to hash rather than allocated and zeroed each time: that spares the CPU of
/// clearing it (about 7% of a hash) and keeps the operator's memory flat. Hashers
/// made with [`Hasher::sharing_memory`] draw on the same buffers.
#[derive(Clone)]
pub struct Hasher {
    /// For chosen secrets.
    params: Params,
    /// For minted secrets.
    minted: Params,
    permits: Arc<Semaphore>,
    /// How many permits there are.
    workers: usize,
    memory: Arc<WorkingMemory>,
    running: Arc<Running>,
}

/// argon2 working-memory buffers, kept between hashes: one per hash running at
/// once, of which at most `keep` stay allocated when idle.
struct WorkingMemory {
    blocks: usize,
    keep: usize,
    free: std::sync::Mutex<Vec<Box<[Block]>>>,
}

impl WorkingMemory {
    fn take(&self, blocks: usize) -> Box<[Block]> {
        if blocks == self.blocks
            && let Some(buffer) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop()
        {
            return buffer;
        }
        vec![Block::default(); blocks].into_boxed_slice()
    }

    fn give_back(&self, buffer: Box<[Block]>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.len() == self.blocks && free.len() < self.keep {
            free.push(buffer);
        }
    }
}

/// Bytes of salt in each hash (128 bits, the PHC recommendation).
const SALT_BYTES: usize = 16;
/// Bytes of argon2 output in each hash.
const OUTPUT_BYTES: usize = 32;

impl Hasher {
    pub fn new(params: HashParams, permits: usize) -> Result<Self, CredentialError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, Some(OUTPUT_BYTES))
            .map_err(|e| CredentialError::Params(e.to_string()))?;
        let m = HashParams::MINTED;
        let minted = Params::new(m.memory_kib, m.iterations, m.parallelism, Some(OUTPUT_BYTES))
            .map_err(|e| CredentialError::Params(e.to_string()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Only the password-cost buffers are worth keeping: a minted hash's
        // 256 KiB is allocated in a few microseconds.
        let memory = WorkingMemory { blocks: params.block_count(), keep: cores, free: Default::default() };
        Ok(Hasher {
            params,
            minted,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            workers: permits.max(1),
            memory: Arc::new(memory),
            running: Arc::default(),
        })
    }

    /// A hasher with one permit per available core.
    pub fn per_core(params: HashParams) -> Result<Self, CredentialError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(params, cores)
    }

    /// A hasher with its own `permits` (so one caller cannot take another's
    /// turns) that shares this one's parameters and working memory.
    pub fn sharing_memory(&self, permits: usize) -> Self {
        Hasher {
            params: self.params.clone(),
            minted: self.minted.clone(),
            permits: Arc::new(Semaphore::new(permits.max(1))),
            workers: permits.max(1),
            memory: self.memory.clone(),
            running: Arc::default(),
        }
    }

    /// How many hashes may run at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Hashes running now, and the most ever running at once.
    pub fn running(&self) -> (usize, usize) {
        (self.running.now.load(Ordering::Relaxed), self.running.peak.load(Ordering::Relaxed))
    }

    /// Runs `work` on the blocking pool holding `permit` until it finishes:
    /// a caller that goes away (a dropped future) frees nothing while the work
    /// runs on, so at most `permits` hashes ever run at once.
    async fn run<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&WorkingMemory) -> T + Send + 'static,
    ) -> Result<T, CredentialError> {
        let (memory, running) = (self.memory.clone(), self.running.clone());
        tokio::task::spawn_blocking(move || {
            let counted = running.enter();
            let out = work(&memory);
            // Counted out before the turn is handed on.
            drop(counted);
            drop(permit);
            out
        })
        .await
        .map_err(|_| CredentialError::PoolClosed)
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt, at the
    /// cost its origin calls for (recorded in the string, so any cost verifies).
    pub async fn hash(&self, secret: &ClientSecret, origin: SecretOrigin) -> Result<String, CredentialError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| CredentialError::PoolClosed)?;
        let params = match origin {
            SecretOrigin::Minted => self.minted.clone(),
            SecretOrigin::Chosen => self.params.clone(),
        };
        let secret = secret.clone();
        self.run(permit, move |memory| hash_blocking(&params, memory, &secret)).await?
    }

    /// Like [`Hasher::verify`], but waits at most `wait` for a turn: `None`
    /// when none came, for request paths that must shed load rather than
    /// queue without bound.
    pub async fn verify_within(
        &self,
        secret: &ClientSecret,
        hash: &str,
        wait: std::time::Duration,
    ) -> Result<Option<bool>, CredentialError> {
        let permit = match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(CredentialError::PoolClosed),
            Err(_) => return Ok(None),
        };
        let (secret, hash) = (secret.clone(), hash.to_owned());
        self.run(permit, move |memory| verify_blocking(memory, &secret, &hash).map(Some)).await?
    }

    /// Whether `secret` matches the PHC string `hash` (parameters are read from
    /// the hash, so secrets hashed under older settings still verify).
    pub async fn verify(&self, secret: &ClientSecret, hash: &str) -> Result<bool, CredentialError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| CredentialError::PoolClosed)?;
        let (secret, hash) = (secret.clone(), hash.to_owned());
        self.run(permit, move |memory| verify_blocking(memory, &secret, &hash)).await?
    }
}

/// How many hashes run now, and the most that ever ran at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Running {
    fn enter(self: &Arc<Self>) -> impl Drop + use<> {
        let now = self.now.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        RunningGuard(self.clone())
    }
}

struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// argon2 of `secret` with `salt`, in a working-memory buffer from `memory`.
fn argon2_output(
    argon2: &Argon2<'_>,
    memory: &WorkingMemory,
    secret: &ClientSecret,
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), CredentialError> {
    let mut blocks = memory.take(argon2.params().block_count());
    let result = argon2.hash_password_into_with_memory(secret.expose().as_bytes(), salt, out, &mut blocks[..]);
    memory.give_back(blocks);
    result.map_err(|e| CredentialError::Hash(e.to_string()))
}

fn hash_blocking(params: &Params, memory: &WorkingMemory, secret: &ClientSecret) -> Result<String, CredentialError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; SALT_BYTES];
    rand::fill(&mut salt);
    let mut out = Zeroizing::new([0u8; OUTPUT_BYTES]);
    argon2_output(&argon2, memory, secret, &salt, &mut out[..])?;
    let phc = |e: phc::Error| CredentialError::Hash(e.to_string());
    let hash = argon2::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: phc::ParamsString::try_from(params).map_err(|e| CredentialError::Hash(e.to_string()))?,
        salt: Some(phc::Salt::new(&salt).map_err(phc)?),
        hash: Some(phc::Output::new(&out[..]).map_err(phc)?),
    };
    Ok(hash.to_string())
}

fn verify_blocking(memory: &WorkingMemory, secret: &ClientSecret, hash: &str) -> Result<bool, CredentialError> {
    let parsed = argon2::PasswordHash::new(hash).map_err(|_| CredentialError::MalformedHash)?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|_| CredentialError::MalformedHash)?;
    let version =
        parsed.version.map_or(Ok(Version::V0x13), Version::try_from).map_err(|_| CredentialError::MalformedHash)?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(CredentialError::MalformedHash);
    };
    let params = Params::try_from(&parsed).map_err(|_| CredentialError::MalformedHash)?;
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    argon2_output(&argon2, memory, secret, salt.as_ref(), &mut out).map_err(|_| CredentialError::MalformedHash)?;
    // Output's equality is constant-time.
    Ok(phc::Output::new(&out).map_err(|_| CredentialError::MalformedHash)? == *expected)
}

/// Whether `hash` is an argon2 PHC string that a secret could verify against
/// (algorithm, parameters, salt and output all present and valid). Cheap: no hashing.
/// Whether `hash` is a minted secret's (argon2id at [`HashParams::MINTED`]):
/// 256 random bits, nothing to guess. Any other — a secret someone chose, at
/// the password cost — is a verifier registrar keeps out of status (see
/// `crate::cluster::ledger`).
pub fn is_minted_hash(hash: &str) -> bool {
    // The parameters field of the PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    let Some(params) = hash.split('$').nth(3) else { return false };
    let m = HashParams::MINTED;
    hash.starts_with("$argon2id$") && params == format!("m={},t={},p={}", m.memory_kib, m.iterations, m.parallelism)
}

pub fn is_well_formed(hash: &str) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(hash) else { return false };
    Algorithm::try_from(parsed.algorithm.as_str()).is_ok()
        && Params::try_from(&parsed).is_ok()
        && parsed.salt.is_some()
        && parsed.hash.is_some()
}

/// Hashes outside any runtime, with the default parameters; for tests and tools.
pub fn hash_now(secret: &ClientSecret) -> Result<String, CredentialError> {
    hash_now_with(secret, HashParams::default())
}

/// Hashes outside any runtime; for tests and tools.
pub fn hash_now_with(secret: &ClientSecret, p: HashParams) -> Result<String, CredentialError> {
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(OUTPUT_BYTES))
        .map_err(|e| CredentialError::Params(e.to_string()))?;
    let memory = WorkingMemory { blocks: 0, keep: 0, free: Default::default() };
    hash_blocking(&params, &memory, secret)
}

/// Verifies outside any runtime; for tests and tools.
pub fn verify_now(secret: &ClientSecret, hash: &str) -> Result<bool, CredentialError> {
    let memory = WorkingMemory { blocks: 0, keep: 0, free: Default::default() };
    verify_blocking(&memory, secret, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(HashParams { memory_kib: 64, iterations: 1, parallelism: 1 }, 2).unwrap()
    }

    #[test]
    fn client_ids_are_128_bit_url_safe_and_unique() {
        let a = mint_client_id();
        let b = mint_client_id();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn secrets_are_256_bit_url_safe_and_unique() {
        let a = ClientSecret::mint();
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, ClientSecret::mint());
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = ClientSecret::mint();
        let printed = format!("{s:?} {:?}", Some(&s));
        assert!(!printed.contains(s.expose()));
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn minted_hashes_are_told_from_chosen_ones_by_their_cost() {
        let secret = ClientSecret::mint();
        assert!(is_minted_hash(&hash_now_with(&secret, HashParams::MINTED).unwrap()));
        assert!(!is_minted_hash(&hash_now(&secret).unwrap()), "the password cost: a chosen secret's");
        assert!(!is_minted_hash("not a hash"));
    }

    #[test]
    fn the_plain_fingerprint_is_first_8_hex_of_sha256() {
        let s = ClientSecret::from_bytes(b"abc").unwrap();
        // SHA-256("abc") = ba7816bf...
        assert_eq!(s.plain_fingerprint(), "ba7816bf");
    }

    #[tokio::test]
    async fn hash_verifies_the_secret_and_nothing_else() {
        let hasher = cheap();
        let secret = ClientSecret::mint();
        let hash = hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!hash.contains(secret.expose()));
        assert!(hasher.verify(&secret, &hash).await.unwrap());
        assert!(!hasher.verify(&ClientSecret::mint(), &hash).await.unwrap());
        assert!(verify_now(&secret, &hash).unwrap());
    }

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crates_own_phc_strings() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let hasher = cheap();
        let secret = ClientSecret::mint();
        // Ours verify with the reference implementation…
        let ours = hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).unwrap());
        assert!(reference.verify_password(secret.expose().as_bytes(), ours.as_str()).is_ok());
        // …and the reference implementation's (hashes written by earlier
        // versions, or under other parameters) verify with ours.
        let theirs = reference.hash_password(secret.expose().as_bytes()).unwrap().to_string();
        assert!(hasher.verify(&secret, &theirs).await.unwrap());
        assert!(!hasher.verify(&ClientSecret::mint(), &theirs).await.unwrap());
        let other_cost = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(128, 2, 1, None).unwrap())
            .hash_password(secret.expose().as_bytes())
            .unwrap()
            .to_string();
        assert!(hasher.verify(&secret, &other_cost).await.unwrap());
    }

    #[tokio::test]
    async fn working_memory_is_reused_and_shared() {
        let hasher = cheap();
        let registry = hasher.sharing_memory(1);
        let secret = ClientSecret::mint();
        let hash = hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap();
        assert!(registry.verify_within(&secret, &hash, std::time::Duration::ZERO).await.unwrap().unwrap());
        let kept = hasher.memory.free.lock().unwrap().len();
        assert_eq!(kept, 1, "one hash at a time needs one buffer, kept for the next");
        assert!(Arc::ptr_eq(&hasher.memory, &registry.memory));
    }

    /// A caller that goes away frees no hashing turn while its hash runs on:
    /// at most `permits` hashes ever run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_verification_keeps_its_turn_until_the_hash_ends() {
        let hasher = Hasher::new(HashParams { memory_kib: 8192, iterations: 4, parallelism: 1 }, 2).unwrap();
        let secret = ClientSecret::mint();
        let hash = hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap();
        for i in 0..40 {
            let (hasher, hash) = (hasher.clone(), hash.clone());
            let wrong = ClientSecret::from_bytes(format!("wrong-{i}").as_bytes()).unwrap();
            let verification =
                tokio::spawn(
                    async move { hasher.verify_within(&wrong, &hash, std::time::Duration::from_secs(5)).await },
                );
            tokio::task::yield_now().await;
            verification.abort();
        }
        // Let whatever started finish, then look at the most that ran at once.
        let _ = hasher.verify(&secret, &hash).await;
        let _ = hasher.verify(&secret, &hash).await;
        let (_, peak) = hasher.running();
        assert!(peak <= 2, "{peak} hashes ran at once with 2 permits");
    }

    #[tokio::test]
    async fn each_hash_has_its_own_salt() {
        let hasher = cheap();
        let secret = ClientSecret::mint();
        assert_ne!(
            hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap(),
            hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap()
        );
    }

    #[tokio::test]
    async fn default_parameters_are_the_owasp_minimum() {
        let hasher = Hasher::new(HashParams::default(), 1).unwrap();
        let hash = hasher.hash(&ClientSecret::mint(), SecretOrigin::Chosen).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    }

    #[tokio::test]
    async fn minted_secrets_are_hashed_cheaply_and_chosen_ones_at_the_password_cost() {
        let hasher = Hasher::new(HashParams::default(), 1).unwrap();
        let secret = ClientSecret::mint();
        let minted = hasher.hash(&secret, SecretOrigin::Minted).await.unwrap();
        assert!(minted.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{minted}");
        let chosen = hasher.hash(&secret, SecretOrigin::Chosen).await.unwrap();
        assert!(chosen.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{chosen}");
        // Either verifies, whatever the hasher's settings: the cost is in the hash.
        assert!(cheap().verify(&secret, &minted).await.unwrap() && cheap().verify(&secret, &chosen).await.unwrap());
        assert!(
            hasher.memory.free.lock().unwrap().iter().all(|b| b.len() == 19_456),
            "only password-cost buffers kept"
        );
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_not_a_mismatch() {
        let err = cheap().verify(&ClientSecret::mint(), "not-a-hash").await.unwrap_err();
        assert!(matches!(err, CredentialError::MalformedHash));
    }

    #[tokio::test]
    async fn well_formed_hashes_are_told_from_tampered_ones() {
        let hash = cheap().hash(&ClientSecret::mint(), SecretOrigin::Chosen).await.unwrap();
        assert!(is_well_formed(&hash));
        assert!(!is_well_formed("not-a-hash"));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&hash.replace("argon2id", "scrypt")));
        assert!(!is_well_formed(&hash.replace("m=64", "m=0")));
        let without_output = hash.rsplit_once('$').unwrap().0;
        assert!(!is_well_formed(without_output));
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        assert!(Hasher::new(HashParams { memory_kib: 1, iterations: 0, parallelism: 1 }, 1).is_err());
    }

    #[test]
    fn chosen_secrets_must_be_long_and_patternless() {
        let secret = |s: &str| ClientSecret::from_bytes(s.as_bytes()).unwrap();
        assert!(!ClientSecret::mint().is_weak(), "registrar's own secrets pass");
        assert!(!secret("Zq8mV1xR4tYp0LkN7cWb3sHd6FgJ2aEu").is_weak(), "32 random characters pass");
        for weak in [
            "s3cr3t-but-short",
            "passwordpasswordpasswordpassword",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "0123456789abcdefghijklmnopqrstuvwxyz",
            "qwertyuiopasdfghjklzxcvbnmqwertyuiop",
            "abcdabcdabcdabcdabcdabcdabcdabcdabcd",
            "Zq8mV1xR4tYp0LkN7cWb3sHd6FgJ2aEu\n",
        ] {
            assert!(secret(weak).is_weak(), "{weak:?} passed");
        }
    }
}
