//! `AppConsent`: a namespace enabling a shared app for itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A group's consent to use a shared app, created in the consuming namespace.
/// Deleting it removes the consent for that namespace only.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "registrar.dev",
    version = "v1alpha1",
    kind = "AppConsent",
    plural = "appconsents",
    shortname = "appconsent",
    namespaced,
    status = "AppConsentStatus",
    doc = "A namespace's consent to use a shared AppRegistration."
)]
#[serde(rename_all = "camelCase")]
pub struct AppConsentSpec {
    /// The app consented to.
    pub app_ref: AppRef,
}

/// Reference to an AppRegistration in another (or the same) namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AppRef {
    /// Namespace of the AppRegistration.
    pub namespace: String,
    /// Name of the AppRegistration.
    pub name: String,
}

/// Whether the consent is granted, and why not. Written only by registrar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppConsentStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Granted` and its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
