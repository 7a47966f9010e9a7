//! `AppRegistration`: one OAuth 2.0 client ("custom app") registered by a group.
//!
//! The schema carries every rule the apiserver can enforce on `kubectl apply`
//! (lengths, counts, enums, CEL rules with messages); `validation` checks the
//! rest and the controller reports those as `Ready=False, reason=InvalidSpec`.
//! No field has a schema default: an absent field means its documented default,
//! so GitOps diffs stay clean.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use serde::{Deserialize, Serialize};

/// An OAuth 2.0 client registration. registrar mints its Client ID and Client
/// Secret into a Secret in the same namespace, rotates the secret when the
/// `registrar.dev/rotate` annotation changes, and revokes both when the
/// registration is deleted.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "registrar.dev",
    version = "v1alpha1",
    kind = "AppRegistration",
    plural = "appregistrations",
    shortname = "appreg",
    shortname = "appregs",
    category = "registrar",
    namespaced,
    status = "AppRegistrationStatus",
    selectable = ".spec.scope",
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.scope"),
    printcolumn(name = "Registered By", type_ = "string", json_path = ".status.registeredBy"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".status.owner.name"),
    printcolumn(name = "Client ID", type_ = "string", json_path = ".status.clientId"),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretFingerprint",
        description = "First 8 hex digits of the SHA-256 of the current client secret"
    ),
    printcolumn(name = "PKCE", type_ = "boolean", json_path = ".status.accepted.requirePkce"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "An OAuth 2.0 client registration: registrar mints its Client ID and Client Secret into a Secret.",
    validation = Rule::new(
        "(has(self.spec.clientId) ? self.spec.clientId : '') == (has(oldSelf.spec.clientId) ? oldSelf.spec.clientId : '') || (!has(oldSelf.spec.clientId) && has(self.spec.clientId) && has(oldSelf.status) && has(oldSelf.status.clientId) && self.spec.clientId == oldSelf.status.clientId)"
    ).message("spec.clientId is set at creation only and never changes (it may be added later only as the Client ID the app already has, status.clientId)")
)]
#[x_kube(validation = Rule::new(
    "!(has(self.publicClient) && self.publicClient) || (has(self.requirePkce) && self.requirePkce)"
).message("a public client must set requirePkce: true"))]
#[x_kube(validation = Rule::new(
    "!(has(self.publicClient) && self.publicClient) || !has(self.grantTypes) || !self.grantTypes.exists(g, g == 'client_credentials')"
).message("a public client cannot use the client_credentials grant: it has no secret"))]
#[x_kube(validation = Rule::new(
    "(has(self.publicClient) && self.publicClient) || !has(self.redirectUris) || self.redirectUris.all(u, u.matches('^(?i)https?://'))"
).message("private-use URI schemes (such as com.example.app:/callback) are allowed only for public clients"))]
#[x_kube(validation = Rule::new(
    "(has(self.publicClient) && self.publicClient) == (has(oldSelf.publicClient) && oldSelf.publicClient)"
).message("publicClient cannot be changed after creation; create a new AppRegistration"))]
#[x_kube(validation = Rule::new(
    "!(has(self.publicClient) && self.publicClient) || !has(self.secret) || !has(self.secret.sourceRef)"
).message("a public client has no secret: secret.sourceRef is for confidential clients"))]
#[x_kube(validation = Rule::new(
    "(has(self.secret) && has(self.secret.name) ? self.secret.name : '') == (has(oldSelf.secret) && has(oldSelf.secret.name) ? oldSelf.secret.name : '')"
).message("secret.name cannot be changed after creation"))]
#[x_kube(validation = Rule::new(
    "(has(self.secret) && has(self.secret.keys) && has(self.secret.keys.clientId) ? self.secret.keys.clientId : '') == (has(oldSelf.secret) && has(oldSelf.secret.keys) && has(oldSelf.secret.keys.clientId) ? oldSelf.secret.keys.clientId : '') && (has(self.secret) && has(self.secret.keys) && has(self.secret.keys.clientSecret) ? self.secret.keys.clientSecret : '') == (has(oldSelf.secret) && has(oldSelf.secret.keys) && has(oldSelf.secret.keys.clientSecret) ? oldSelf.secret.keys.clientSecret : '')"
).message("secret.keys cannot be changed after creation"))]
#[serde(rename_all = "camelCase")]
pub struct AppRegistrationSpec {
    /// The application name users see (1 to 100 characters, no control characters).
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("!self.matches('[\\\\x00-\\\\x1f\\\\x7f]')").message("displayName must not contain control characters"))]
    pub display_name: String,

    /// Who may discover and consent to the app: its own namespace (Group), the
    /// namespaces of its organization (Organization), or every namespace
    /// (Global, only in the platform namespace). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("scope cannot be changed after creation; create a new AppRegistration with the desired scope"))]
    pub scope: Scope,

    /// A public client (a browser or native app) has no secret and must require
    /// PKCE. Default false. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_client: Option<bool>,

    /// Require a PKCE code verifier (S256) on token requests. Default false;
    /// must be true for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_pkce: Option<bool>,

    /// Callback URLs, matched exactly at authorization time: https, or http on
    /// 127.0.0.1 / [::1] (any port); private-use schemes only for public clients.
    /// No fragment, userinfo or wildcard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 2048)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(u, u.matches('^[a-zA-Z][a-zA-Z0-9+.-]*:'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, !u.matches('^[a-zA-Z][a-zA-Z0-9+.-]*:'))[0] + ' is not an absolute URI'".into())))]
    #[x_kube(validation = Rule::new("self.all(u, !u.matches('^(?i)(javascript|data|file|vbscript):'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, u.matches('^(?i)(javascript|data|file|vbscript):'))[0] + ' uses a forbidden scheme (javascript:, data:, file: and vbscript: are never allowed)'".into())))]
    #[x_kube(validation = Rule::new("self.all(u, !u.contains('#'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, u.contains('#'))[0] + ' must not contain a fragment (#)'".into())))]
    #[x_kube(validation = Rule::new("self.all(u, !u.matches('%(0[0-9a-fA-F]|1[0-9a-fA-F]|7[fF])'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, u.matches('%(0[0-9a-fA-F]|1[0-9a-fA-F]|7[fF])'))[0] + ' contains a percent-encoded control character (%00 to %1F, %7F)'".into())))]
    #[x_kube(validation = Rule::new("self.all(u, !u.contains('*'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, u.contains('*'))[0] + ' must not contain a wildcard (*)'".into())))]
    #[x_kube(validation = Rule::new("self.all(u, !u.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, u.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@'))[0] + ' must not contain userinfo (user@)'".into())))]
    #[x_kube(validation = Rule::new("self.all(u, !u.matches('^(?i)http:') || u.matches('^(?i)http://(127\\\\.0\\\\.0\\\\.1|\\\\[::1\\\\])(:[0-9]+)?([/?].*)?$'))")
        .message(Message::Expression("'redirect URI ' + self.filter(u, u.matches('^(?i)http:') && !u.matches('^(?i)http://(127\\\\.0\\\\.0\\\\.1|\\\\[::1\\\\])(:[0-9]+)?([/?].*)?$'))[0] + ' uses http on a host other than the loopback IP literals 127.0.0.1 and [::1]; use https'".into())))]
    pub redirect_uris: Vec<String>,

    /// OAuth 2.0 grant types. Default authorization_code and refresh_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub grant_types: Option<Vec<GrantType>>,

    /// The API scopes the app asks for (RFC 6749 section 3.3 scope tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), regex(pattern = r"^[\x21\x23-\x5B\x5D-\x7E]+$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub oauth_scopes: Vec<String>,

    /// The credentials Secret: name (default `<name>-credentials`), keys, and
    /// extra labels and annotations. Name and keys are immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretTemplate>,

    /// Secret rotation: grace period for the previous secret, optional schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,

    /// Workloads to roll after a rotation (a pod-template annotation changes),
    /// because environment variables from a Secret never refresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"]))]
    pub restart_on_rotate: Vec<WorkloadRef>,

    /// An existing Client ID to use instead of a minted one: how a client moves
    /// in from another authorization server without reconfiguring its
    /// consumers (with secret.sourceRef, its secret too). 1 to 128 characters:
    /// letters, digits, `-`, `.`, `_`, `~`. Unique cluster-wide. Set at
    /// creation only; it may be added later only as the Client ID the app
    /// already has (to pin it in a GitOps manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._~-]+$"))]
    pub client_id: Option<String>,

    /// What deleting the app does. Revoke (default): the Secret and the client
    /// at the authorization server are deleted, the Client ID is never used
    /// again. Retain: the Secret is kept (no longer owned by the app), the
    /// client keeps working at the authorization server and the registry, and
    /// a new AppRegistration in the same namespace naming the Client ID in
    /// spec.clientId takes it over with the same secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Who owns the app: a user or a group that must be able to manage it
    /// (update AppRegistrations in this namespace). Default: the user who
    /// registered it. An owner who can no longer manage it is replaced by the
    /// organization's owner (status.owner says who is in effect). Never a
    /// `system:` user or group (the apiserver's own identities, which may
    /// always manage everything: ownership would never pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.name.startsWith('system:')").message("spec.owner may not name a system: user or group (the cluster's own identities, which never lose access, so ownership would never pass); name a person or a team's group"))]
    #[x_kube(validation = Rule::new("!self.name.matches('[\\\\x00-\\\\x1f\\\\x7f]')").message("spec.owner.name must not contain control characters"))]
    pub owner: Option<Owner>,
}

/// A user or a group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// User (default) or Group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<OwnerKind>,
    /// The user or group name, as the apiserver authenticates it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Owner {
    pub fn user(name: impl Into<String>) -> Self {
        Owner { kind: None, name: name.into() }
    }

    pub fn group(name: impl Into<String>) -> Self {
        Owner { kind: Some(OwnerKind::Group), name: name.into() }
    }

    pub fn is_group(&self) -> bool {
        self.kind == Some(OwnerKind::Group)
    }

    /// `User alice` or `Group platform`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", if self.is_group() { "Group" } else { "User" }, self.name)
    }
}

impl std::str::FromStr for Owner {
    type Err = String;

    /// `User:alice` or `Group:platform-admins`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("User", name)) if !name.is_empty() => Ok(Owner::user(name)),
            Some(("Group", name)) if !name.is_empty() => Ok(Owner::group(name)),
            _ => Err(format!("an owner is User:<name> or Group:<name>, not {text:?}")),
        }
    }
}

/// Whether an owner is a user or a group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum OwnerKind {
    #[default]
    User,
    Group,
}

/// The owner in effect.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<OwnerKind>,
    pub name: String,
    /// Specified (spec.owner), Registered (the registering user), Organization
    /// (no owner named: the organization's), or Transferred (the owner named
    /// could no longer manage the app).
    pub reason: String,
    /// Since when.
    pub since: Time,
    /// The owner it was transferred from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_from: Option<String>,
}

impl OwnerStatus {
    pub fn owner(&self) -> Owner {
        Owner { kind: self.kind.filter(|k| *k == OwnerKind::Group), name: self.name.clone() }
    }
}

/// What deleting an app does with its credentials.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Revoke,
    Retain,
}

/// Visibility of an app.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Scope {
    /// Only the registering namespace.
    #[default]
    Group,
    /// The namespaces of the registering namespace's organization.
    Organization,
    /// Every namespace; only in the platform namespace.
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Group => "Group",
            Scope::Organization => "Organization",
            Scope::Global => "Global",
        }
    }
}

/// An OAuth 2.0 grant type. `implicit` and `password` do not exist here.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// The default grant types of an app that names none.
pub const DEFAULT_GRANT_TYPES: [GrantType; 2] = [GrantType::AuthorizationCode, GrantType::RefreshToken];

/// Default data key of the Client ID in the credentials Secret.
pub const DEFAULT_CLIENT_ID_KEY: &str = "client_id";
/// Default data key of the Client Secret in the credentials Secret.
pub const DEFAULT_CLIENT_SECRET_KEY: &str = "client_secret";
pub use super::keys::MANAGED_BY_LABEL;

/// Layout of the credentials Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Secret name. Default `<metadata.name>-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,
    /// Data keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<SecretKeys>,
    /// Extra labels for the Secret (not in the registrar.dev/ namespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('registrar.dev/') && k != 'app.kubernetes.io/managed-by')")
        .message("secret.labels must not set registrar.dev/ labels or app.kubernetes.io/managed-by: registrar owns them"))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the Secret (not in the registrar.dev/ namespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('registrar.dev/'))")
        .message("secret.annotations must not set registrar.dev/ annotations: registrar owns them"))]
    pub annotations: BTreeMap<String, String>,
    /// A client secret of your choice, from a Secret you provide in this
    /// namespace (written by External Secrets, Vault, or by hand) instead of
    /// one registrar mints. registrar reads it and never writes it; a new
    /// value there is a rotation; a weak value is refused. Confidential
    /// clients only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SecretSourceRef>,
}

/// Where a client secret of the user's choice is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretSourceRef {
    /// The Secret's name (in the app's namespace; not the credentials Secret).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The data key holding the secret. Default `client_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// Data keys of the credentials Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "(has(self.clientId) ? self.clientId : 'client_id') != (has(self.clientSecret) ? self.clientSecret : 'client_secret')"
).message("secret.keys.clientId and secret.keys.clientSecret must differ"))]
#[serde(rename_all = "camelCase")]
pub struct SecretKeys {
    /// Key of the Client ID. Default `client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_id: Option<String>,
    /// Key of the Client Secret. Default `client_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_secret: Option<String>,
    /// Key of the authorization server's issuer URL, written when registrar
    /// registers apps at one. Default `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub issuer: Option<String>,
    /// Key of the authorization server's token endpoint URL, written when
    /// registrar registers apps at one. Default `token_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub token_url: Option<String>,
}

/// Default data key of the authorization server's issuer URL.
pub const DEFAULT_ISSUER_KEY: &str = "issuer";
/// Default data key of the authorization server's token endpoint URL.
pub const DEFAULT_TOKEN_URL_KEY: &str = "token_url";

/// Secret rotation settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// How long the previous secret keeps verifying after a rotation (Go
    /// duration, 0s to 168h). Default 0s: it stops working at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('168h')")
        .message("rotation.gracePeriod must be between 0s and 168h"))]
    pub grace_period: Option<Duration>,
    /// Rotate on a schedule, this long after the last rotation (Go duration,
    /// at least 1m). Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')")
        .message("rotation.interval must be at least 1m"))]
    pub interval: Option<Duration>,
}

/// A workload rolled after a rotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload registrar can roll.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// The namespaces that consented to an app: the first [`MAX_LISTED_CONSENTS`]
/// in name order, and how many there are in all.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct ConsentSummary {
    /// Consenting namespaces, sorted, at most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Number of consenting namespaces.
    pub count: i64,
}

/// The most consenting namespaces listed in an app's status.
pub const MAX_LISTED_CONSENTS: usize = 100;

/// The part of the spec that the registry API serves: the last spec the
/// controller accepted, so an edit it rejects (InvalidSpec) changes nothing
/// that authorization servers are told until it is fixed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedSpec {
    /// The generation of the spec accepted.
    pub generation: i64,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oauth_scopes: Vec<String>,
    pub require_pkce: bool,
}

impl AcceptedSpec {
    /// `spec` (of `generation`) as the registry serves it, defaults applied.
    pub fn of(spec: &AppRegistrationSpec, generation: i64) -> Self {
        AcceptedSpec {
            generation,
            display_name: spec.display_name.clone(),
            redirect_uris: spec.redirect_uris.clone(),
            grant_types: spec.grant_types.clone().unwrap_or_else(|| DEFAULT_GRANT_TYPES.to_vec()),
            oauth_scopes: spec.oauth_scopes.clone(),
            require_pkce: spec.is_public_client() || spec.require_pkce == Some(true),
        }
    }
}

/// What the authorization server holds of an app.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthServerStatus {
    /// A digest of the client registration it holds (redirect URIs, grant
    /// types, scopes, name, public or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<String>,
    /// The secret version it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<i64>,
}

/// What the operator observed and issued. Written only by registrar, with
/// server-side apply under one field manager. Never holds a plaintext secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRegistrationStatus {
    /// The Client ID: 128 random bits, URL-safe, minted once, never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// No longer written or read: the Client ID ledger (ClientIdEntry)
    /// records which app holds a Client ID. Kept as found on apps issued
    /// before the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_seal: Option<String>,
    /// argon2id PHC string of the current client secret (confidential clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// Increments at every mint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<i64>,
    /// First 8 hex digits of the SHA-256 of the current secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_fingerprint: Option<String>,
    /// argon2id hash of the previous secret, during a grace period only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_hash: Option<String>,
    /// When the previous secret stops verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Time>,
    /// When the current secret was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<Time>,
    /// The `registrar.dev/rotate` annotation value already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rotate: Option<String>,
    /// The user who created the app, recorded at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_by: Option<String>,
    /// The owner in effect (spec.owner, the registering user, or the
    /// organization's owner after a transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerStatus>,
    /// The namespaces holding a granted consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consents: Option<ConsentSummary>,
    /// The spec the registry API serves: the last one accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<AcceptedSpec>,
    /// Where the app stands at the authorization server, when one is
    /// configured: what it holds (see the `Registered` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<AuthServerStatus>,
    /// The secret version the `restartOnRotate` workloads still have to be
    /// rolled to: a restart was refused, and is retried with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<i64>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, with reason Issued, InvalidSpec, SecretConflict, ScopeNotPermitted,
    /// ClientIdConflict, NotRegistered or Revoked; `Registered` with an
    /// authorization server; `WorkloadsRestarted` once a restart failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl AppRegistrationSpec {
    /// A public client (`publicClient: true`): no secret is issued; PKCE
    /// stands in for it.
    pub fn is_public_client(&self) -> bool {
        self.public_client == Some(true)
    }
}

impl AppRegistrationStatus {
    /// Whether the authorization server holds registrar's client for this
    /// app: registrar registered it, and the server has not since answered
    /// that a client of that ID is someone else's.
    pub fn registered_at_server(&self) -> bool {
        self.authorization_server.as_ref().is_some_and(|a| a.registered.is_some()) && !self.client_exists_at_server()
    }

    /// Whether the authorization server holds a client of this Client ID
    /// that is not registrar's (`Registered=False, reason=ClientExists`).
    pub fn client_exists_at_server(&self) -> bool {
        super::conditions::find(&self.conditions, super::conditions::REGISTERED).is_some_and(|c| {
            super::conditions::truth(c) == Some(false) && c.reason == super::conditions::reason::CLIENT_EXISTS
        })
    }

    /// What its Ready condition says (`None`: none yet, or Unknown).
    pub fn ready(&self) -> Option<bool> {
        super::conditions::find(&self.conditions, super::conditions::READY).and_then(super::conditions::truth)
    }
}
