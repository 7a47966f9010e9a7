//! The pure core of the AppRegistration controller: from what was observed,
//! decide what to do with the credentials, and what status results.
//!
//! Whether to (re)mint is a chain of small named checks, in priority order, kept
//! apart from how minting is done (cert-manager's trigger model).

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use crate::{
    api::{
        AppRegistration, AppRegistrationStatus,
        conditions::{self, DesiredCondition, reason},
        validation::{Violation, summarize},
    },
    credentials::layout::{Issued, Observed},
};

/// Annotation whose new value asks for one rotation.
pub const ROTATE_ANNOTATION: &str = "registrar.dev/rotate";
/// Annotation set at admission to the user who created the app.
pub const REGISTERED_BY_ANNOTATION: &str = "registrar.dev/registered-by";

/// Why a secret is minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// The app has no credentials yet.
    Initial,
    /// The credentials Secret was deleted.
    SecretMissing,
    /// The Secret's client secret no longer verifies against status (or its
    /// Client ID or version was altered).
    SecretAltered,
    /// A new `registrar.dev/rotate` value.
    RotateRequested(String),
    /// `rotation.interval` elapsed since the last rotation.
    Scheduled,
}

impl MintReason {
    /// Rotations keep the previous secret verifying during the grace period;
    /// a re-mint after drift does not (the old secret is lost or tampered with).
    pub fn is_rotation(&self) -> bool {
        matches!(self, MintReason::RotateRequested(_) | MintReason::Scheduled)
    }
}

/// What to do with the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The spec breaks rules the apiserver did not catch: report them and change
    /// nothing already issued.
    Reject { reason: &'static str, message: String },
    /// A Secret this app does not control holds the name: never overwrite it.
    Conflict,
    /// Write a new secret version (and the Client ID when there is none yet).
    Mint { reason: MintReason, client_id: String, version: i64, rotate_request: Option<String> },
    /// The Secret is ahead of status (a crash between the two writes): finish
    /// from the Secret.
    Adopt(Issued),
    /// Credentials are current. `repair_metadata`: the Secret's labels or
    /// annotations drifted and are rewritten, the secret kept.
    Keep { repair_metadata: bool },
}

/// Everything the decision depends on, observed by the shell.
pub struct Inputs<'a> {
    pub app: &'a AppRegistration,
    pub violations: &'a [Violation],
    /// False for a Global app outside the platform namespace.
    pub scope_permitted: bool,
    pub platform_namespace: &'a str,
    pub observed: &'a Observed,
    /// Whether the owned Secret's client secret verifies against
    /// `status.secretHash`; `None` when there is nothing to verify.
    pub secret_verifies: Option<bool>,
    pub now: Timestamp,
}

fn status_of(app: &AppRegistration) -> AppRegistrationStatus {
    app.status.clone().unwrap_or_default()
}

fn is_public(app: &AppRegistration) -> bool {
    app.spec.public_client == Some(true)
}

/// The pending rotate request: the annotation's value when it differs from the
/// last one handled.
pub fn pending_rotate(app: &AppRegistration) -> Option<String> {
    let requested = app.annotations().get(ROTATE_ANNOTATION)?;
    (status_of(app).last_handled_rotate.as_ref() != Some(requested)).then(|| requested.clone())
}

fn interval_due(app: &AppRegistration, now: Timestamp) -> bool {
    next_scheduled_rotation(app).is_some_and(|due| now >= due)
}

/// When `rotation.interval` next rotates the secret.
pub fn next_scheduled_rotation(app: &AppRegistration) -> Option<Timestamp> {
    if is_public(app) {
        return None;
    }
    let interval: Duration = app.spec.rotation.as_ref()?.interval?.into();
    let last = status_of(app).last_rotated_at?.0;
    last.checked_add(interval).ok()
}

/// Decides what to do with the credentials.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let app = inputs.app;
    let status = status_of(app);
    let current_version = status.secret_version.unwrap_or(0);
    let annotation = app.annotations().get(ROTATE_ANNOTATION).cloned();

    if !inputs.violations.is_empty() {
        return Decision::Reject { reason: reason::INVALID_SPEC, message: summarize(inputs.violations) };
    }
    if !inputs.scope_permitted {
        return Decision::Reject {
            reason: reason::SCOPE_NOT_PERMITTED,
            message: format!(
                "scope Global is allowed only in the platform namespace {}; use Organization or Group here",
                inputs.platform_namespace
            ),
        };
    }

    let mint = |reason: MintReason, client_id: Option<String>| Decision::Mint {
        client_id: client_id.unwrap_or_else(crate::credentials::mint_client_id),
        version: current_version.max(observed_version(inputs.observed)) + 1,
        rotate_request: match &reason {
            MintReason::RotateRequested(value) => Some(value.clone()),
            _ => annotation.clone(),
        },
        reason,
    };

    let owned = match inputs.observed {
        Observed::Foreign => return Decision::Conflict,
        Observed::Missing => {
            return match status.client_id {
                None => mint(MintReason::Initial, None),
                Some(id) => mint(MintReason::SecretMissing, Some(id)),
            };
        }
        Observed::Owned(owned) => owned,
    };

    let issued = &owned.issued;
    let secret_version = issued.version.unwrap_or(0);
    let client_id_matches = status.client_id.as_deref().is_none_or(|id| id == issued.client_id);
    // Finish an interrupted mint: the Secret carries a newer version than status.
    if secret_version > current_version && client_id_matches && !issued.client_id.is_empty() {
        let complete = is_public(app) || issued.secret.is_some();
        if complete {
            return Decision::Adopt(issued.clone());
        }
    }
    let Some(client_id) = status.client_id.clone() else {
        // Our Secret without a usable Client ID and nothing in status: start over.
        return mint(MintReason::Initial, None);
    };
    let intact = client_id_matches
        && secret_version == current_version
        && (is_public(app) || (issued.secret.is_some() && inputs.secret_verifies == Some(true)));
    if !intact {
        return mint(MintReason::SecretAltered, Some(client_id));
    }
    if let Some(request) = pending_rotate(app)
        && !is_public(app)
    {
        return mint(MintReason::RotateRequested(request), Some(client_id));
    }
    if interval_due(app, inputs.now) {
        return mint(MintReason::Scheduled, Some(client_id));
    }
    Decision::Keep { repair_metadata: !owned.metadata_current }
}

fn observed_version(observed: &Observed) -> i64 {
    match observed {
        Observed::Owned(o) => o.issued.version.unwrap_or(0),
        _ => 0,
    }
}

/// The hash side of newly issued credentials, computed by the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedHash {
    /// argon2id PHC string; `None` for a public client.
    pub hash: Option<String>,
    pub fingerprint: Option<String>,
}

/// Truncates to whole seconds: metav1.Time has second precision, and a value
/// that does not survive a round trip would make every comparison differ.
pub fn to_time(ts: Timestamp) -> Time {
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

/// The status after the decision's credentials are in place.
pub struct StatusInputs<'a> {
    pub app: &'a AppRegistration,
    pub now: Timestamp,
    pub condition: DesiredCondition,
    /// Newly issued credentials (Mint or Adopt): what they are, why, and their hash.
    pub issued: Option<(&'a Issued, &'a IssuedHash, bool)>,
}

/// Builds the desired status. Deterministic: for an unchanged app it returns
/// the current status exactly, so nothing is written.
pub fn desired_status(inputs: StatusInputs<'_>) -> AppRegistrationStatus {
    let app = inputs.app;
    let current = status_of(app);
    let now_time = to_time(inputs.now);
    let mut next = current.clone();

    if let Some((issued, hash, is_rotation)) = inputs.issued {
        let grace: Duration =
            app.spec.rotation.as_ref().and_then(|r| r.grace_period).map(Into::into).unwrap_or_default();
        let (previous_hash, previous_expires) = match (&current.secret_hash, is_rotation && !grace.is_zero()) {
            (Some(old), true) => (Some(old.clone()), inputs.now.checked_add(grace).ok().map(to_time)),
            _ => (None, None),
        };
        next.client_id = Some(issued.client_id.clone());
        next.secret_hash = hash.hash.clone();
        next.secret_fingerprint = hash.fingerprint.clone();
        next.secret_version = issued.version;
        next.previous_secret_hash = previous_hash;
        next.previous_secret_expires_at = previous_expires;
        next.last_rotated_at = Some(now_time.clone());
        if let Some(request) = &issued.rotate_request {
            next.last_handled_rotate = Some(request.clone());
        }
    }
    if is_public(app)
        && let Some(request) = app.annotations().get(ROTATE_ANNOTATION)
    {
        // A public client has no secret: a rotate request is acknowledged as is.
        next.last_handled_rotate = Some(request.clone());
    }
    // The previous secret stops verifying when its grace period ends.
    if next.previous_secret_expires_at.as_ref().is_none_or(|t| t.0 <= inputs.now) {
        next.previous_secret_hash = None;
        next.previous_secret_expires_at = None;
    }
    if let Some(user) = app.annotations().get(REGISTERED_BY_ANNOTATION) {
        next.registered_by = Some(user.clone());
    }
    next.observed_generation = app.metadata.generation;
    next.conditions = conditions::settle(&current.conditions, &[inputs.condition], app.metadata.generation, &now_time);
    next
}

/// When the controller must look at the app again without any event: the end
/// of a grace period or the next scheduled rotation.
pub fn next_wakeup(app: &AppRegistration, status: &AppRegistrationStatus, now: Timestamp) -> Option<Duration> {
    let grace_end = status.previous_secret_expires_at.as_ref().map(|t| t.0);
    let rotation = {
        let mut with_status = app.clone();
        with_status.status = Some(status.clone());
        next_scheduled_rotation(&with_status)
    };
    [grace_end, rotation]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.duration_since(now).try_into().unwrap_or(Duration::ZERO).max(Duration::from_secs(1)))
}

/// The Ready condition once credentials are in place.
pub fn issued_condition(status_client_id: &str, version: Option<i64>, public: bool) -> DesiredCondition {
    let message = match (public, version) {
        (true, _) => format!("Client ID {status_client_id} is issued (public client: no secret)"),
        (false, Some(v)) => {
            format!("Client ID {status_client_id} and client secret version {v} are issued")
        }
        (false, None) => format!("Client ID {status_client_id} is issued"),
    };
    DesiredCondition::ready(reason::ISSUED, message)
}
