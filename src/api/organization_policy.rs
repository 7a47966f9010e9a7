//! `OrganizationPolicy`: an organization's authorization policy over the apps
//! its groups may consent to (seed 003, MuleSoft's Unrestricted / Restricted
//! with an allowlist). Cluster-scoped, named after the organization.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::AppRef;

/// An organization's policy over the apps its namespaces may consent to.
/// Unrestricted (the default): consents are granted as visibility allows.
/// Restricted: only internal apps (registered in the organization, while
/// auto-approval is on) and allowlisted apps, with the allowlist's scopes.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "registrar.dev",
    version = "v1alpha1",
    kind = "OrganizationPolicy",
    plural = "organizationpolicies",
    shortname = "orgpolicy",
    shortname = "orgpolicies",
    category = "registrar",
    status = "OrganizationPolicyStatus",
    printcolumn(name = "Policy", type_ = "string", json_path = ".status.policy"),
    printcolumn(name = "Auto-approve internal", type_ = "boolean", json_path = ".status.autoApproveInternal"),
    printcolumn(name = "Allowlisted", type_ = "integer", json_path = ".status.allowlisted"),
    printcolumn(name = "Grandfathered", type_ = "integer", json_path = ".status.grandfatheredCount", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "An organization's authorization policy over the apps its namespaces may consent to."
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationPolicySpec {
    /// Unrestricted (default): consents are granted as the apps' scopes allow.
    /// Restricted: only internal apps (while autoApproveInternal) and
    /// allowlisted ones. Switching to Restricted keeps every consent granted
    /// at that moment, with the scopes it had (each consent's status.grant
    /// records it), until the app is listed in revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyKind>,
    /// Under Restricted, grant consents to apps registered in a namespace of
    /// this organization without an allowlist entry. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve_internal: Option<bool>,
    /// Apps the organization's namespaces may consent to under Restricted,
    /// each with the API scopes allowed for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub allowlist: Vec<AllowlistEntry>,
    /// Apps whose consents kept from before the switch to Restricted the
    /// organization revokes (an allowlist entry for the app still grants what
    /// it lists). A revoked consent stays revoked when the entry is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub revoked: Vec<RevokedApp>,
    /// Who takes over an app of this organization whose owner can no longer
    /// manage it. Default: registrar's cluster-wide default (--default-owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<super::Owner>,
    /// Rotate an app's secret when its ownership is transferred (the previous
    /// owner may know it), instead of only recommending it. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_on_owner_transfer: Option<bool>,
}

/// Unrestricted or Restricted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyKind {
    #[default]
    Unrestricted,
    Restricted,
}

impl OrganizationPolicy {
    /// Restricted is in force: registrar has put it in force (status), after
    /// the consents granted before had their records.
    pub fn restricted_in_force(&self) -> bool {
        self.status.as_ref().and_then(|s| s.policy) == Some(PolicyKind::Restricted)
    }

    /// Restricted is asked for (spec) but not yet in force (status): the switch
    /// is under way, and nothing new is granted meanwhile.
    pub fn switching_to_restricted(&self) -> bool {
        self.spec.policy == Some(PolicyKind::Restricted) && !self.restricted_in_force()
    }
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Unrestricted => "Unrestricted",
            PolicyKind::Restricted => "Restricted",
        }
    }
}

/// An app the organization allows, and the scopes allowed for it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowlistEntry {
    /// The app (its namespace and name).
    pub app: AppRef,
    /// Pins the entry to this Client ID: a new app under the same name is not
    /// allowlisted by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id: Option<String>,
    /// The API scopes the organization allows for the app; scopes the app asks
    /// for beyond these stay pending until listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub scopes: Vec<String>,
}

/// An app whose consents kept from before the switch to Restricted the
/// organization revokes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokedApp {
    /// The app (its namespace and name).
    pub app: AppRef,
    /// Only while the app has this Client ID (default: whichever it has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id: Option<String>,
}

/// A consent granted when the organization switched to Restricted, as
/// registrar recorded it before consents carried their own record (in the
/// policy's status, at most 2,000): it keeps working, with the scopes it
/// had, until it is removed from here or its app is revoked.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The AppConsent, `namespace/name`.
    pub consent: String,
    /// The app, `namespace/name`.
    pub app: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// registrar's seal of this grant: an entry it did not record grants nothing.
    pub seal: String,
}

/// An app whose consents the switch to Restricted kept, and how many.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrandfatheredApp {
    /// The app, `namespace/name`.
    pub app: String,
    pub client_id: String,
    /// How many of the organization's consents to it were kept.
    pub consents: i64,
}

/// The policy in force, and what the switch to Restricted kept. Written by
/// registrar (an organization admin may remove a grant an earlier registrar
/// recorded here: that revokes it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationPolicyStatus {
    /// The policy in force: Restricted once the grants of the moment of the
    /// switch are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyKind>,
    /// Whether internal apps are approved without an allowlist entry (in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve_internal: Option<bool>,
    /// Allowlist entries.
    #[serde(default)]
    pub allowlisted: i64,
    /// When the organization became Restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted_since: Option<Time>,
    /// The same moment to the microsecond: a consent granted without a break
    /// since before it (its status.grant) keeps what it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted_at: Option<MicroTime>,
    /// Consents kept at a switch to Restricted by registrar before consents
    /// carried their own record; still in force until removed from here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grandfathered: Vec<Grant>,
    /// How many consents were granted at the switch to Restricted that the
    /// policy would not allow by itself (kept).
    #[serde(default)]
    pub grandfathered_count: i64,
    /// The apps of the consents kept at the switch, most consents first (at
    /// most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grandfathered_apps: Vec<GrandfatheredApp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
