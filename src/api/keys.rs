//! The API contract's names in one place: the labels, annotations, finalizer
//! and field managers registrar reads and writes. Users, admission policies
//! (deploy/) and other tools rely on these strings; they never change lightly.

// On AppRegistrations.

/// Annotation whose new value asks for one rotation.
pub const ROTATE_ANNOTATION: &str = "registrar.dev/rotate";
/// Annotation set at admission to the user who created the app.
pub const REGISTERED_BY_ANNOTATION: &str = "registrar.dev/registered-by";
/// Annotation set at admission to that user's groups, comma-separated.
pub const REGISTERED_BY_GROUPS_ANNOTATION: &str = "registrar.dev/registered-by-groups";
/// The finalizer that revokes credentials on deletion.
pub const FINALIZER: &str = "registrar.dev/revoke";

// On namespaces.

/// The namespace label naming its organization.
pub const ORGANIZATION_LABEL: &str = "registrar.dev/organization";

// On credentials Secrets.

/// Label registrar sets on every Secret it manages; `secret.labels` may not set it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "registrar";
/// Label naming the app a Secret belongs to; the Secret watch selects on it.
/// Also the metadata key naming the app of a client at the authorization server.
pub const APP_LABEL: &str = "registrar.dev/app";
pub const CLIENT_ID_ANNOTATION: &str = "registrar.dev/client-id";
/// The secret version; also the pod-template annotation of restarted workloads.
pub const VERSION_ANNOTATION: &str = "registrar.dev/secret-version";
/// The `registrar.dev/rotate` value this secret version answers, if any.
pub const ROTATE_REQUEST_ANNOTATION: &str = "registrar.dev/rotate-request";
/// The keys of `spec.secret.labels` and `annotations` registrar last wrote
/// (`labels=a,b;annotations=c`), so a key removed from the spec is removed
/// from the Secret while labels others put there stay.
pub const EXTRA_KEYS_ANNOTATION: &str = "registrar.dev/extra-keys";
/// The annotation carrying a credentials Secret's seal.
pub const SEAL_ANNOTATION: &str = "registrar.dev/seal";
/// The Client ID a retained Secret holds.
pub const RETAINED_CLIENT_ID_ANNOTATION: &str = "registrar.dev/retained-client-id";
/// The argon2id hash of a retained Secret's client secret (absent for a public client).
pub const RETAINED_HASH_ANNOTATION: &str = "registrar.dev/retained-secret-hash";
/// The AppRegistration a Secret was retained from (information only).
pub const RETAINED_FROM_ANNOTATION: &str = "registrar.dev/retained-from";
/// registrar's seal of a retention.
pub const RETAINED_SEAL_ANNOTATION: &str = "registrar.dev/retained-seal";

// Writers.

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "registrar";
/// The field manager of everything the kubectl plugin writes.
pub const PLUGIN_FIELD_MANAGER: &str = "kubectl-registrar";
