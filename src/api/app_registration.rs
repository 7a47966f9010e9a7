//! `AppRegistration`: one OAuth 2.0 client ("custom app") registered by a group.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An OAuth 2.0 client registration. registrar mints its Client ID and Client
/// Secret into a Secret in the same namespace, rotates the secret on request and
/// revokes both when the registration is deleted.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "registrar.dev",
    version = "v1alpha1",
    kind = "AppRegistration",
    plural = "appregistrations",
    shortname = "appreg",
    namespaced,
    status = "AppRegistrationStatus",
    doc = "An OAuth 2.0 client registration: registrar mints its Client ID and Client Secret into a Secret."
)]
#[serde(rename_all = "camelCase")]
pub struct AppRegistrationSpec {
    /// The application name users see.
    pub display_name: String,
    /// Who may discover and consent to the app: its own namespace (Group), the
    /// namespaces of its organization (Organization), or every namespace (Global).
    pub scope: Scope,
}

/// Visibility of an app.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Scope {
    Group,
    Organization,
    Global,
}

/// What the operator observed and issued. Written only by registrar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRegistrationStatus {
    /// The Client ID, minted once and never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
