//! The seal: proof that registrar itself wrote a credentials Secret.
//!
//! Anyone with RBAC in a namespace can write a Secret that looks like
//! registrar's (its labels, annotations and even a controller owner reference to
//! the app). What they cannot do is compute an HMAC under a key only registrar
//! holds. Every credentials Secret registrar writes carries
//! `registrar.dev/seal`: HMAC-SHA256, under the operator's seal key, of where the
//! Secret belongs (namespace, Secret name, app UID) and what it holds (Client ID,
//! secret version, SHA-256 of the client secret, the rotate request it answers).
//!
//! The seal is what lets a reconcile after a crash between the Secret write and
//! the status write finish from the Secret: a Secret found ahead of status is
//! adopted only when its seal verifies. Anything else is someone else's writing.
//!
//! Which app holds a Client ID is not sealed: the Client ID ledger records it
//! (`crate::cluster::ledger`), written only by registrar's identity.
//!
//! The key lives in a Secret in the operator's own namespace (tenants cannot
//! read it), created at first start and shared by every replica. Losing it costs
//! nothing issued: Secrets at the version status records are checked against
//! status, and only an interrupted mint (a Secret ahead of status) is re-minted
//! instead of adopted.

use std::{collections::BTreeMap, fmt};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::ClientSecret;
use crate::api::{MANAGED_BY_LABEL, keys::MANAGED_BY};

pub use crate::api::keys::SEAL_ANNOTATION;
/// The default name of the Secret holding the seal key.
pub const DEFAULT_KEY_SECRET: &str = "registrar-seal-key";
/// The data key of the seal key in its Secret.
const KEY_DATA: &str = "key";
/// Bytes of a newly generated key (256 bits).
const KEY_BYTES: usize = 32;
/// Prefix of a seal, naming the scheme so a later one can be told apart.
const SCHEME: &str = "v1.";

/// The operator's seal key. `Debug` is redacted; the bytes are wiped on drop.
#[derive(Clone)]
pub struct SealKey(Zeroizing<Vec<u8>>);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// What a seal vouches for: where a credentials Secret belongs and what it holds.
#[derive(Clone, Copy, Debug)]
pub struct Sealed<'a> {
    pub namespace: &'a str,
    pub secret_name: &'a str,
    pub app_uid: &'a str,
    pub client_id: &'a str,
    pub version: Option<i64>,
    pub secret: Option<&'a ClientSecret>,
    pub rotate_request: Option<&'a str>,
}

/// Whose grant record a consent's seal vouches for: the consent (`namespace/name`
/// and UID, so a record copied to another consent, or to a consent recreated
/// under the same name, proves nothing) and its app (`namespace/name`).
#[derive(Clone, Copy, Debug)]
pub struct ConsentOf<'a> {
    pub consent: &'a str,
    pub uid: &'a str,
    pub app: &'a str,
}

impl SealKey {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealKeyError> {
        if bytes.len() < KEY_BYTES {
            return Err(SealKeyError::TooShort(bytes.len()));
        }
        Ok(SealKey(Zeroizing::new(bytes.to_vec())))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; KEY_BYTES]);
        rand::fill(&mut bytes[..]);
        SealKey(bytes)
    }

    fn mac(&self, what: &Sealed<'_>) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        // Length-prefixed fields: no two different inputs encode alike.
        let version = what.version.map(|v| v.to_string()).unwrap_or_default();
        let digest = what.secret.map(ClientSecret::digest);
        let fields: [&[u8]; 8] = [
            b"registrar credentials seal v1",
            what.namespace.as_bytes(),
            what.secret_name.as_bytes(),
            what.app_uid.as_bytes(),
            what.client_id.as_bytes(),
            version.as_bytes(),
            digest.as_ref().map_or(&[][..], |d| &d[..]),
            what.rotate_request.unwrap_or_default().as_bytes(),
        ];
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.update(&[u8::from(what.secret.is_some()), u8::from(what.rotate_request.is_some())]);
        mac
    }

    /// The seal of `what`, as the annotation value.
    pub fn seal(&self, what: &Sealed<'_>) -> String {
        format!("{SCHEME}{}", URL_SAFE_NO_PAD.encode(self.mac(what).finalize().into_bytes()))
    }

    /// Whether `seal` (an annotation value) is this key's seal of `what`.
    /// Constant-time in the comparison.
    pub fn verifies(&self, what: &Sealed<'_>, seal: &str) -> bool {
        let Some(tag) = seal.strip_prefix(SCHEME).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()) else {
            return false;
        };
        self.mac(what).verify_slice(&tag).is_ok()
    }

    /// The short fingerprint of a secret shown in status (the Secret column):
    /// the first 32 bits of an HMAC of it under this key, in hex. A plain hash
    /// there would let anyone who may read status test guesses of a chosen
    /// secret at hashing speed; this one needs the key.
    pub fn fingerprint(&self, secret: &ClientSecret) -> String {
        let digest = secret.digest();
        let tag = self.fields_mac(&[b"registrar fingerprint v1", &digest]).finalize().into_bytes();
        tag[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An HMAC over length-prefixed `fields` (the first names what is sealed).
    fn fields_mac(&self, fields: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac
    }

    fn grant_mac(&self, organization: &str, grant: &crate::api::Grant) -> Hmac<Sha256> {
        let scopes = grant.scopes.join(" ");
        self.fields_mac(&[
            b"registrar grant seal v1",
            organization.as_bytes(),
            grant.consent.as_bytes(),
            grant.app.as_bytes(),
            grant.client_id.as_bytes(),
            scopes.as_bytes(),
        ])
    }

    /// The seal of a grant recorded in `organization`'s policy status (by a
    /// registrar from before consents carried their record; tests make them).
    #[cfg(test)]
    pub fn seal_grant(&self, organization: &str, grant: &crate::api::Grant) -> String {
        format!("{SCHEME}{}", URL_SAFE_NO_PAD.encode(self.grant_mac(organization, grant).finalize().into_bytes()))
    }

    /// Whether a grant carries this key's seal for `organization`.
    pub fn verifies_grant(&self, organization: &str, grant: &crate::api::Grant) -> bool {
        let Some(tag) = grant.seal.strip_prefix(SCHEME).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()) else {
            return false;
        };
        self.grant_mac(organization, grant).verify_slice(&tag).is_ok()
    }

    fn retention_mac(&self, namespace: &str, secret_name: &str, client_id: &str, hash: &str) -> Hmac<Sha256> {
        self.fields_mac(&[
            b"registrar retention seal v1",
            namespace.as_bytes(),
            secret_name.as_bytes(),
            client_id.as_bytes(),
            hash.as_bytes(),
        ])
    }

    /// The seal of a retention (`super::retention`): registrar kept the Secret
    /// `namespace/secret_name` holding `client_id`, whose secret hashes to
    /// `hash` (empty for a public client), when its app was deleted.
    pub fn seal_retention(&self, namespace: &str, secret_name: &str, client_id: &str, hash: &str) -> String {
        let tag = self.retention_mac(namespace, secret_name, client_id, hash).finalize().into_bytes();
        format!("{SCHEME}{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `seal` is this key's seal of that retention.
    pub fn verifies_retention(
        &self,
        namespace: &str,
        secret_name: &str,
        client_id: &str,
        hash: &str,
        seal: &str,
    ) -> bool {
        let Some(tag) = seal.strip_prefix(SCHEME).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()) else {
            return false;
        };
        self.retention_mac(namespace, secret_name, client_id, hash).verify_slice(&tag).is_ok()
    }

    fn consent_grant_mac(&self, of: &ConsentOf<'_>, grant: &crate::api::ConsentGrant) -> Hmac<Sha256> {
        let since = grant.since.0.as_microsecond().to_string();
        let scopes = grant.scopes.join(" ");
        self.fields_mac(&[
            b"registrar consent grant seal v1",
            of.consent.as_bytes(),
            of.uid.as_bytes(),
            of.app.as_bytes(),
            grant.organization.as_bytes(),
            grant.client_id.as_bytes(),
            since.as_bytes(),
            scopes.as_bytes(),
        ])
    }

    /// The seal of a consent's grant record (`status.grant`).
    pub fn seal_consent_grant(&self, of: &ConsentOf<'_>, grant: &crate::api::ConsentGrant) -> String {
        format!("{SCHEME}{}", URL_SAFE_NO_PAD.encode(self.consent_grant_mac(of, grant).finalize().into_bytes()))
    }

    /// Whether `grant` carries this key's seal for the consent `of`.
    pub fn verifies_consent_grant(&self, of: &ConsentOf<'_>, grant: &crate::api::ConsentGrant) -> bool {
        let Some(tag) = grant.seal.strip_prefix(SCHEME).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()) else {
            return false;
        };
        self.consent_grant_mac(of, grant).verify_slice(&tag).is_ok()
    }

    /// Reads the seal key from the Secret `namespace/name`, creating it with a
    /// random key if it does not exist (several replicas may race: the loser of
    /// the create reads the winner's).
    pub async fn load_or_create(client: &Client, namespace: &str, name: &str) -> Result<Self, SealKeyError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let object = format!("{namespace}/{name}");
        let read = |secret: Secret| -> Result<Self, SealKeyError> {
            let data = secret.data.unwrap_or_default();
            let bytes = data.get(KEY_DATA).ok_or_else(|| SealKeyError::Malformed(object.clone()))?;
            Self::from_bytes(&bytes.0).map_err(|_| SealKeyError::Malformed(object.clone()))
        };
        if let Some(secret) = api.get_opt(name).await.map_err(|e| SealKeyError::kube(&object, e))? {
            return read(secret);
        }
        let key = Self::generate();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())])),
                annotations: Some(BTreeMap::from([(
                    "registrar.dev/purpose".to_owned(),
                    "the key registrar seals the credentials Secrets it writes with; only registrar may read it"
                        .to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(KEY_DATA.to_owned(), ByteString(key.0.to_vec()))])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(key),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let secret = api.get(name).await.map_err(|e| SealKeyError::kube(&object, e))?;
                read(secret)
            }
            Err(e) => Err(SealKeyError::kube(&object, e)),
        }
    }
}

/// Why the seal key could not be had. Never carries the key.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    #[error("a seal key must be at least 32 bytes, not {0}")]
    TooShort(usize),
    #[error(
        "the seal key Secret {0} has no data key `key` of at least 32 bytes; delete it and registrar creates a new one \
         (only credentials whose mint was interrupted are then minted anew)"
    )]
    Malformed(String),
    #[error(
        "reading or creating the seal key Secret {object} failed: {source}; registrar needs get and create on Secrets \
         in its own namespace"
    )]
    Kube {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl SealKeyError {
    fn kube(object: &str, source: kube::Error) -> Self {
        SealKeyError::Kube { object: object.to_owned(), source: Box::new(source) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClientSecret {
        ClientSecret::from_bytes(s.as_bytes()).unwrap()
    }

    fn what<'a>(s: &'a ClientSecret) -> Sealed<'a> {
        Sealed {
            namespace: "team-a",
            secret_name: "billing-credentials",
            app_uid: "uid-1",
            client_id: "cid",
            version: Some(2),
            secret: Some(s),
            rotate_request: Some("r1"),
        }
    }

    #[test]
    fn a_seal_verifies_under_its_key_only() {
        let key = SealKey::from_bytes(&[7; 32]).unwrap();
        let s = secret("s3cret");
        let seal = key.seal(&what(&s));
        assert!(seal.starts_with("v1."), "{seal}");
        assert!(key.verifies(&what(&s), &seal));
        assert!(!SealKey::from_bytes(&[8; 32]).unwrap().verifies(&what(&s), &seal));
        assert!(!key.verifies(&what(&s), "v1.AAAA"));
        assert!(!key.verifies(&what(&s), "garbage"));
        assert!(!key.verifies(&what(&s), ""));
    }

    #[test]
    fn changing_any_field_breaks_the_seal() {
        let key = SealKey::generate();
        let s = secret("s3cret");
        let other = secret("other");
        let seal = key.seal(&what(&s));
        let variants = [
            Sealed { namespace: "team-b", ..what(&s) },
            Sealed { secret_name: "other-credentials", ..what(&s) },
            Sealed { app_uid: "uid-2", ..what(&s) },
            Sealed { client_id: "cie", ..what(&s) },
            Sealed { version: Some(3), ..what(&s) },
            Sealed { version: None, ..what(&s) },
            Sealed { secret: Some(&other), ..what(&s) },
            Sealed { secret: None, ..what(&s) },
            Sealed { rotate_request: None, ..what(&s) },
            Sealed { rotate_request: Some(""), ..what(&s) },
            Sealed { rotate_request: Some("r2"), ..what(&s) },
        ];
        for variant in variants {
            assert!(!key.verifies(&variant, &seal), "{variant:?} verified");
        }
    }

    #[test]
    fn fields_cannot_be_shifted_into_each_other() {
        let key = SealKey::generate();
        let a = Sealed {
            namespace: "ab",
            secret_name: "c",
            app_uid: "u",
            client_id: "x",
            version: None,
            secret: None,
            rotate_request: None,
        };
        let b = Sealed { namespace: "a", secret_name: "bc", ..a };
        assert!(!key.verifies(&b, &key.seal(&a)));
    }

    #[test]
    fn short_keys_are_refused_and_the_key_never_prints() {
        assert!(matches!(SealKey::from_bytes(&[1; 31]), Err(SealKeyError::TooShort(31))));
        let key = SealKey::from_bytes(&[0x41; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
    }
}
