//! Client credentials: minting Client IDs and secrets, hashing and verifying
//! secrets with argon2id on a bounded blocking pool, and fingerprints.
//!
//! A plaintext secret only ever lives in a [`ClientSecret`], whose `Debug` is
//! redacted and whose memory is wiped on drop, so it cannot slip into a log line,
//! an Event, status or an error by accident.

pub mod layout;

use std::{fmt, sync::Arc};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
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

    /// First 8 hex digits of the SHA-256 of the secret: shown in the Secret
    /// column, safe to print, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = self.digest();
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SHA-256 of the secret, for keying caches of verified secrets.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
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
    /// The OWASP minimum for argon2id: m=19456 KiB, t=2, p=1.
    fn default() -> Self {
        HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
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
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
}

impl Hasher {
    pub fn new(params: HashParams, permits: usize) -> Result<Self, CredentialError> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| CredentialError::Params(e.to_string()))?;
        Ok(Hasher { params, permits: Arc::new(Semaphore::new(permits.max(1))) })
    }

    /// A hasher with one permit per available core.
    pub fn per_core(params: HashParams) -> Result<Self, CredentialError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(params, cores)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt.
    pub async fn hash(&self, secret: &ClientSecret) -> Result<String, CredentialError> {
        let _permit = self.permits.acquire().await.map_err(|_| CredentialError::PoolClosed)?;
        let argon2 = self.argon2();
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || {
            argon2
                .hash_password(secret.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| CredentialError::Hash(e.to_string()))
        })
        .await
        .map_err(|_| CredentialError::PoolClosed)?
    }

    /// Like [`Hasher::verify`], but `None` at once when every permit is taken:
    /// for request paths that must shed load rather than queue.
    pub async fn try_verify(&self, secret: &ClientSecret, hash: &str) -> Result<Option<bool>, CredentialError> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else { return Ok(None) };
        let argon2 = self.argon2();
        let secret = secret.clone();
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || verify_blocking(&argon2, &secret, &hash).map(Some))
            .await
            .map_err(|_| CredentialError::PoolClosed)?
    }

    /// Whether `secret` matches the PHC string `hash` (parameters are read from
    /// the hash, so secrets hashed under older settings still verify).
    pub async fn verify(&self, secret: &ClientSecret, hash: &str) -> Result<bool, CredentialError> {
        let _permit = self.permits.acquire().await.map_err(|_| CredentialError::PoolClosed)?;
        let argon2 = self.argon2();
        let secret = secret.clone();
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || verify_blocking(&argon2, &secret, &hash))
            .await
            .map_err(|_| CredentialError::PoolClosed)?
    }
}

fn verify_blocking(argon2: &Argon2<'_>, secret: &ClientSecret, hash: &str) -> Result<bool, CredentialError> {
    match argon2.verify_password(secret.expose().as_bytes(), hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(CredentialError::MalformedHash),
    }
}

/// Whether `hash` is an argon2 PHC string that a secret could verify against
/// (algorithm, parameters, salt and output all present and valid). Cheap: no hashing.
pub fn is_well_formed(hash: &str) -> bool {
    let Ok(parsed) = argon2::PasswordHash::new(hash) else { return false };
    Algorithm::try_from(parsed.algorithm.as_str()).is_ok()
        && Params::try_from(&parsed).is_ok()
        && parsed.salt.is_some()
        && parsed.hash.is_some()
}

/// Verifies outside any runtime; for tests and tools.
pub fn verify_now(secret: &ClientSecret, hash: &str) -> Result<bool, CredentialError> {
    verify_blocking(&Argon2::default(), secret, hash)
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
    fn fingerprint_is_first_8_hex_of_sha256() {
        let s = ClientSecret::from_bytes(b"abc").unwrap();
        // SHA-256("abc") = ba7816bf...
        assert_eq!(s.fingerprint(), "ba7816bf");
    }

    #[tokio::test]
    async fn hash_verifies_the_secret_and_nothing_else() {
        let hasher = cheap();
        let secret = ClientSecret::mint();
        let hash = hasher.hash(&secret).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!hash.contains(secret.expose()));
        assert!(hasher.verify(&secret, &hash).await.unwrap());
        assert!(!hasher.verify(&ClientSecret::mint(), &hash).await.unwrap());
        assert!(verify_now(&secret, &hash).unwrap());
    }

    #[tokio::test]
    async fn each_hash_has_its_own_salt() {
        let hasher = cheap();
        let secret = ClientSecret::mint();
        assert_ne!(hasher.hash(&secret).await.unwrap(), hasher.hash(&secret).await.unwrap());
    }

    #[tokio::test]
    async fn default_parameters_are_the_owasp_minimum() {
        let hasher = Hasher::new(HashParams::default(), 1).unwrap();
        let hash = hasher.hash(&ClientSecret::mint()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_not_a_mismatch() {
        let err = cheap().verify(&ClientSecret::mint(), "not-a-hash").await.unwrap_err();
        assert!(matches!(err, CredentialError::MalformedHash));
    }

    #[tokio::test]
    async fn well_formed_hashes_are_told_from_tampered_ones() {
        let hash = cheap().hash(&ClientSecret::mint()).await.unwrap();
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
}
