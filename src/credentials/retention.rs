//! Retention records from before the Client ID ledger.
//!
//! A retained Client ID (`deletionPolicy: Retain`) is recorded in the ledger
//! (`crate::cluster::ledger`), with the verifier of its secret; the Secret that keeps
//! it only loses its owner reference and gains annotations naming the Client
//! ID and the app, for people. Before the ledger, the record was on the Secret:
//! the Client ID, the argon2id hash of its secret and a seal over both and over
//! where the Secret is (`SealKey::seal_retention`). Such a record enters the
//! ledger once, when its seal verifies on the very Secret registrar wrote it
//! for (a copied or forged one never does).

use std::collections::BTreeMap;

use super::seal::SealKey;

pub use crate::api::keys::{
    RETAINED_CLIENT_ID_ANNOTATION, RETAINED_FROM_ANNOTATION, RETAINED_HASH_ANNOTATION, RETAINED_SEAL_ANNOTATION,
};

/// A retention registrar recorded (its seal verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub client_id: String,
    /// The argon2id hash of the secret; `None` for a public client.
    pub secret_hash: Option<String>,
}

impl Retention {
    /// The annotations recording this retention on `namespace/secret_name`,
    /// as registrar wrote them before the ledger (what an upgrade finds).
    pub fn annotations(
        &self,
        namespace: &str,
        secret_name: &str,
        from: &str,
        key: &SealKey,
    ) -> BTreeMap<String, String> {
        let hash = self.secret_hash.clone().unwrap_or_default();
        let mut annotations = BTreeMap::from([
            (RETAINED_CLIENT_ID_ANNOTATION.to_owned(), self.client_id.clone()),
            (RETAINED_FROM_ANNOTATION.to_owned(), from.to_owned()),
            (RETAINED_SEAL_ANNOTATION.to_owned(), key.seal_retention(namespace, secret_name, &self.client_id, &hash)),
        ]);
        if !hash.is_empty() {
            annotations.insert(RETAINED_HASH_ANNOTATION.to_owned(), hash);
        }
        annotations
    }

    /// The retention recorded on the Secret `namespace/secret_name` with these
    /// annotations, if registrar sealed it for exactly that Secret.
    pub fn read(
        namespace: &str,
        secret_name: &str,
        annotations: &BTreeMap<String, String>,
        key: &SealKey,
    ) -> Option<Retention> {
        let client_id = annotations.get(RETAINED_CLIENT_ID_ANNOTATION)?;
        let seal = annotations.get(RETAINED_SEAL_ANNOTATION)?;
        let hash = annotations.get(RETAINED_HASH_ANNOTATION).cloned().unwrap_or_default();
        key.verifies_retention(namespace, secret_name, client_id, &hash, seal)
            .then(|| Retention { client_id: client_id.clone(), secret_hash: (!hash.is_empty()).then_some(hash) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention() -> Retention {
        Retention {
            client_id: "legacy-portal".into(),
            secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        }
    }

    #[test]
    fn a_retention_reads_back_only_where_registrar_recorded_it() {
        let key = SealKey::generate();
        let annotations = retention().annotations("team-a", "portal-credentials", "portal", &key);
        assert_eq!(Retention::read("team-a", "portal-credentials", &annotations, &key), Some(retention()));
        // Copied to another namespace, or another Secret: nothing.
        assert_eq!(Retention::read("team-b", "portal-credentials", &annotations, &key), None);
        assert_eq!(Retention::read("team-a", "other-credentials", &annotations, &key), None);
        // Under another key (a forger's): nothing.
        assert_eq!(Retention::read("team-a", "portal-credentials", &annotations, &SealKey::generate()), None);
    }

    #[test]
    fn an_altered_client_id_or_hash_breaks_the_seal() {
        let key = SealKey::generate();
        let mut annotations = retention().annotations("team-a", "portal-credentials", "portal", &key);
        annotations.insert(RETAINED_CLIENT_ID_ANNOTATION.into(), "someone-elses-id".into());
        assert_eq!(Retention::read("team-a", "portal-credentials", &annotations, &key), None);
        let mut annotations = retention().annotations("team-a", "portal-credentials", "portal", &key);
        annotations.insert(RETAINED_HASH_ANNOTATION.into(), "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b3RoZXI".into());
        assert_eq!(Retention::read("team-a", "portal-credentials", &annotations, &key), None);
        annotations.remove(RETAINED_HASH_ANNOTATION);
        assert_eq!(Retention::read("team-a", "portal-credentials", &annotations, &key), None, "nor a dropped hash");
    }

    #[test]
    fn a_public_clients_retention_has_no_hash() {
        let key = SealKey::generate();
        let public = Retention { client_id: "spa".into(), secret_hash: None };
        let annotations = public.annotations("team-a", "spa-credentials", "spa", &key);
        assert!(!annotations.contains_key(RETAINED_HASH_ANNOTATION));
        assert_eq!(Retention::read("team-a", "spa-credentials", &annotations, &key), Some(public));
    }
}
