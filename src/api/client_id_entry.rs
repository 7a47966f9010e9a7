//! `ClientIdEntry`: one entry of the Client ID ledger, the cluster's record
//! of who holds each Client ID registrar ever issued.
//!
//! Cluster-scoped, one object per Client ID (named by [`entry_name`]), written
//! only by registrar's identity: no aggregated role grants it, and
//! `deploy/client-id-ledger-policy.yaml` refuses anyone else as a second wall.
//! A Client ID is claimed by creating its entry — the apiserver lets exactly
//! one create succeed, so two instances, or two reconciles, never both hold
//! it — and the entry then follows the Client ID for good: Active while an
//! app holds it, Retained while a Secret keeps it for a later app of the same
//! namespace (`deletionPolicy: Retain`), Revoked once given up. Revoked
//! entries stay, as tombstones, so a Client ID is never issued twice.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The ledger entry of one Client ID: who holds it, and in what state.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "registrar.dev",
    version = "v1alpha1",
    kind = "ClientIdEntry",
    plural = "clientidentries",
    shortname = "ledger",
    printcolumn(name = "Client ID", type_ = "string", json_path = ".spec.clientId"),
    printcolumn(name = "State", type_ = "string", json_path = ".spec.state"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".spec.holder.namespace"),
    printcolumn(name = "App", type_ = "string", json_path = ".spec.holder.name"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "The Client ID ledger: one entry per Client ID registrar issued, naming the app that holds it. Written \
           only by registrar."
)]
#[serde(rename_all = "camelCase")]
pub struct ClientIdEntrySpec {
    /// The Client ID. Immutable; the object's name is derived from it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clientId is immutable"))]
    #[schemars(length(min = 1, max = 128))]
    pub client_id: String,
    /// Active (an app holds it), Retained (kept for a later app of the same
    /// namespace) or Revoked (never issued again).
    pub state: LedgerState,
    /// The app that holds the Client ID (Active), retained it (Retained), or
    /// last held it (Revoked).
    pub holder: Holder,
    /// Where a retained Client ID is kept, and the verifier of its secret:
    /// while Retained, and while the app taking it over is issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<Retained>,
    /// The app a retained Client ID was taken over from (its client at the
    /// authorization server may still name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<Holder>,
    /// The verifiers of the holder's secret when it is one of someone's
    /// choosing (`secret.sourceRef`, or a retained secret taken over): kept
    /// here, which only registrar and cluster administrators read, rather than
    /// in the app's status, which whoever may view the app reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifiers: Option<Verifiers>,
}

/// What verifies an app's chosen secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verifiers {
    /// The argon2id hash of the current secret.
    #[schemars(length(max = 512))]
    pub current: String,
    /// The previous secret's hash, during a grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub previous: Option<String>,
    /// When the previous secret stops verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_expires_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The state of a Client ID in the ledger.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum LedgerState {
    /// An app holds it.
    #[default]
    Active,
    /// An app was deleted with `deletionPolicy: Retain`: its Secret keeps the
    /// Client ID for a later app of the same namespace.
    Retained,
    /// Given up: never issued again.
    Revoked,
}

impl LedgerState {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerState::Active => "Active",
            LedgerState::Retained => "Retained",
            LedgerState::Revoked => "Revoked",
        }
    }
}

/// An AppRegistration, by namespace, name and UID: one incarnation of a name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub struct Holder {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 128))]
    pub uid: String,
}

impl Holder {
    /// The holder that `app` is: its namespace, name and UID.
    pub fn of(app: &impl kube::Resource) -> Holder {
        let meta = app.meta();
        Holder {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

/// A retained Client ID's Secret, and what proves its secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retained {
    /// The Secret, in the holder's namespace, that keeps the credentials.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The argon2id hash of the retained secret (absent for a public client):
    /// the registry authenticates against it, and an app taking the Client ID
    /// over keeps the secret only if the Secret still holds what it verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub verifier: Option<String>,
}

/// The name of the ledger entry of `client_id`: the first 160 bits of its
/// SHA-256, in hex. Client IDs are case-sensitive and may hold characters an
/// object name may not (`A–Z`, `_`, `~`); a digest is a valid name for any
/// of them, and two Client IDs never share one.
pub fn entry_name(client_id: &str) -> String {
    let digest = Sha256::digest(client_id.as_bytes());
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

impl ClientIdEntry {
    /// A new Active entry: `holder` claims `client_id`.
    pub fn active(client_id: &str, holder: Holder) -> Self {
        ClientIdEntry::new(
            &entry_name(client_id),
            ClientIdEntrySpec {
                client_id: client_id.to_owned(),
                state: LedgerState::Active,
                holder,
                retained: None,
                taken_over_from: None,
                verifiers: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_valid_object_names_and_tell_case_apart() {
        for id in ["qPq0dZ0ZrfC2v1e3bWk3Jg", "QPQ0DZ0ZRFC2V1E3BWK3JG", "legacy.portal_2019~x", &"a".repeat(128)] {
            let name = entry_name(id);
            assert_eq!(name.len(), 40);
            assert!(name.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{name}");
        }
        assert_ne!(entry_name("abc"), entry_name("ABC"));
        assert_eq!(entry_name("abc"), entry_name("abc"));
    }
}
