//! `AppConsent`: a namespace enabling a shared app for itself ("Add Consent").
//! Deleting it is "Remove Consent": only that namespace loses access.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A group's consent to use a shared app, created in the consuming namespace.
/// Deleting it removes the consent for that namespace only.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "registrar.dev",
    version = "v1alpha1",
    kind = "AppConsent",
    plural = "appconsents",
    shortname = "appconsent",
    category = "registrar",
    namespaced,
    status = "AppConsentStatus",
    printcolumn(name = "App", type_ = "string", json_path = ".status.app"),
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(name = "Granted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Granted\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Granted\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "A namespace's consent to use a shared AppRegistration."
)]
#[serde(rename_all = "camelCase")]
pub struct AppConsentSpec {
    /// The app consented to. Immutable: a consent is bound to one app.
    #[x_kube(validation = Rule::new("self == oldSelf").message("appRef cannot be changed; delete this AppConsent and create a new one"))]
    pub app_ref: AppRef,
    /// The API scopes this namespace accepts, a subset of the app's. Default:
    /// every scope the app offers when the consent is first granted; scopes the
    /// app adds later stay pending until listed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub oauth_scopes: Option<Vec<String>>,
}

/// Reference to an AppRegistration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub struct AppRef {
    /// Namespace of the AppRegistration.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the AppRegistration.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Whether the consent is granted, and why not. Written only by registrar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppConsentStatus {
    /// `<namespace>/<name>` of the app, for the App column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The Client ID this consent is bound to, from its first grant on. It never
    /// moves to another Client ID: a revoked app's consent stays revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The app's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The scopes granted to the app in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,
    /// For a consent without spec.oauthScopes: scopes the app added after the
    /// grant, not accepted yet (list them in spec.oauthScopes to accept them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_scopes: Vec<String>,
    /// Scopes this namespace would be granted that its organization's
    /// Restricted policy does not allow yet (until its allowlist lists them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_scopes: Vec<String>,
    /// registrar's sealed record of this consent's grant, which a switch of
    /// its organization to Restricted keeps. A record it did not seal, or
    /// sealed for another consent, grants nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<ConsentGrant>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Granted`, with reason Granted, AppNotFound, NotVisible, ScopeMismatch,
    /// NotAllowlisted, PolicyPending or AppRevoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// What registrar granted a consent, and since when: the record a switch of
/// its organization to Restricted keeps (the consent keeps these scopes while
/// it stays granted). Sealed under registrar's key, bound to this consent (its
/// namespace, name and UID), its app and its organization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentGrant {
    /// The organization of the consent's namespace when it was granted.
    pub organization: String,
    /// The Client ID granted.
    pub client_id: String,
    /// Granted without a break since then (registrar's clock).
    pub since: MicroTime,
    /// The scopes granted, as of the last change while the organization was
    /// Unrestricted (they stay as they are while it is Restricted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// registrar's seal of this record.
    pub seal: String,
}

impl AppConsent {
    /// Whether the consent is in force for the app `namespace/name` with the
    /// Client ID `client_id`: it points at that app, and its status grants
    /// that Client ID (a grant to an earlier holder of the name is not).
    pub fn grants(&self, namespace: &str, name: &str, client_id: &str) -> bool {
        let points_here = self.spec.app_ref.namespace == namespace && self.spec.app_ref.name == name;
        points_here
            && self.status.as_ref().is_some_and(|s| {
                s.client_id.as_deref() == Some(client_id)
                    && super::conditions::is_true(&s.conditions, super::conditions::GRANTED)
            })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn consent(granted: &str, client_id: &str) -> AppConsent {
        let spec = AppConsentSpec {
            app_ref: AppRef { namespace: "owner".into(), name: "billing".into() },
            oauth_scopes: None,
        };
        let mut consent = AppConsent::new("use-billing", spec);
        consent.status = Some(AppConsentStatus {
            client_id: Some(client_id.into()),
            conditions: vec![Condition {
                type_: "Granted".into(),
                status: granted.into(),
                reason: "Granted".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: None,
            }],
            ..Default::default()
        });
        consent
    }

    /// In force only for the app it points at, the Client ID its status
    /// names, and while Granted is True.
    #[test]
    fn a_consent_grants_one_app_s_client_id_while_granted() {
        assert!(consent("True", "id-1").grants("owner", "billing", "id-1"));
        assert!(!consent("True", "id-1").grants("owner", "billing", "id-2"), "an earlier holder's grant");
        assert!(!consent("True", "id-1").grants("owner", "other", "id-1"));
        assert!(!consent("True", "id-1").grants("elsewhere", "billing", "id-1"));
        assert!(!consent("False", "id-1").grants("owner", "billing", "id-1"));
        let mut unevaluated = consent("True", "id-1");
        unevaluated.status = None;
        assert!(!unevaluated.grants("owner", "billing", "id-1"));
    }
}
