//! Status conditions: the one place their types, reasons and constructors live.
//!
//! Conditions follow the kstatus convention (`Ready` with `observedGeneration`),
//! so `kubectl wait --for=condition=Ready`, Argo CD and Flux can wait on them. A
//! condition keeps its `lastTransitionTime` unless its status really flips, and
//! comparisons ignore that timestamp, so an unchanged object is never rewritten.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition every AppRegistration carries.
pub const READY: &str = "Ready";

/// The condition an AppRegistration with `restartOnRotate` carries once a
/// workload restart failed: whether its workloads run the current secret.
pub const WORKLOADS_RESTARTED: &str = "WorkloadsRestarted";

/// The condition an AppRegistration carries when registrar registers apps at
/// an authorization server: whether the server holds the app as issued.
pub const REGISTERED: &str = "Registered";

/// The condition an AppRegistration with `secret.sourceRef` carries: whether
/// its source holds a secret registrar can issue.
pub const SECRET_SOURCE: &str = "SecretSource";

/// The condition an AppRegistration carries once its ownership was
/// transferred: whether its secret should be rotated.
pub const ROTATION_RECOMMENDED: &str = "RotationRecommended";

/// The condition every AppConsent carries.
pub const GRANTED: &str = "Granted";

/// Reasons of the `Granted` condition.
pub mod consent_reason {
    /// The app is visible to the namespace and the consent is in force.
    pub const GRANTED: &str = "Granted";
    /// No such app (or it has no Client ID yet).
    pub const APP_NOT_FOUND: &str = "AppNotFound";
    /// The app's scope does not reach this namespace.
    pub const NOT_VISIBLE: &str = "NotVisible";
    /// The consent asks for API scopes the app does not offer.
    pub const SCOPE_MISMATCH: &str = "ScopeMismatch";
    /// The app this consent was granted to was deleted.
    pub const APP_REVOKED: &str = "AppRevoked";
    /// The namespace's organization is Restricted and does not allow the app.
    pub const NOT_ALLOWLISTED: &str = "NotAllowlisted";
    /// The namespace's organization is switching to Restricted: nothing new is
    /// granted until the policy is in force.
    pub const POLICY_PENDING: &str = "PolicyPending";
}

/// Reasons of the `Ready` condition.
pub mod reason {
    /// Credentials are issued and current.
    pub const ISSUED: &str = "Issued";
    /// The spec breaks a rule; credentials already issued are kept.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Secret registrar does not own holds the credentials Secret's name.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// The scope is not allowed in this namespace.
    pub const SCOPE_NOT_PERMITTED: &str = "ScopeNotPermitted";
    /// The app is being deleted; the registry no longer accepts it.
    pub const REVOKED: &str = "Revoked";
    /// The Client ID in status belongs to another app; this one is not served.
    pub const CLIENT_ID_CONFLICT: &str = "ClientIdConflict";
    /// The app is being deleted and its credentials are retained (deletionPolicy: Retain).
    pub const RETAINED: &str = "Retained";
    /// `secret.sourceRef` names a Secret (or key) that does not exist.
    pub const SECRET_SOURCE_MISSING: &str = "SecretSourceMissing";
    /// `secret.sourceRef` holds a secret too weak to issue.
    pub const WEAK_SECRET: &str = "WeakSecret";
    /// The user who registered the app may not read the Secret `secret.sourceRef` names.
    pub const FORBIDDEN: &str = "Forbidden";
    /// The client secret comes from `secret.sourceRef`.
    pub const SOURCED: &str = "Sourced";
    /// Ownership passed to the organization's owner: rotate.
    pub const OWNER_TRANSFERRED: &str = "OwnerTransferred";
    /// The secret was rotated since the transfer.
    pub const ROTATED: &str = "Rotated";
    /// The owner named is in effect.
    pub const OWNER_IN_EFFECT: &str = "OwnerInEffect";
    /// `Ready`: issued, but not (yet) held by the authorization server.
    pub const NOT_REGISTERED: &str = "NotRegistered";
    /// `Registered`: the authorization server holds the client as issued.
    pub const REGISTERED: &str = "Registered";
    /// `Registered`: the authorization server cannot be reached (or fails).
    pub const UNAVAILABLE: &str = "Unavailable";
    /// `Registered`: the authorization server refused the client.
    pub const REFUSED: &str = "Refused";
    /// `Registered`: a client with this Client ID exists there and is not registrar's.
    pub const CLIENT_EXISTS: &str = "ClientExists";
    /// `WorkloadsRestarted`: every workload was rolled to the current secret.
    pub const RESTARTED: &str = "Restarted";
    /// `WorkloadsRestarted`: a workload restart was refused; retried with backoff.
    pub const RESTART_FAILED: &str = "RestartFailed";
}

/// A condition as the controller wants it, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl DesiredCondition {
    pub fn granted(reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: GRANTED, status: true, reason, message: message.into() }
    }

    pub fn not_granted(reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: GRANTED, status: false, reason, message: message.into() }
    }

    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: READY, status: true, reason, message: message.into() }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: READY, status: false, reason, message: message.into() }
    }

    pub fn registered(ok: bool, reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: REGISTERED, status: ok, reason, message: message.into() }
    }

    pub fn restarted(ok: bool, reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: WORKLOADS_RESTARTED, status: ok, reason, message: message.into() }
    }

    pub fn sourced(ok: bool, reason: &'static str, message: impl Into<String>) -> Self {
        DesiredCondition { type_: SECRET_SOURCE, status: ok, reason, message: message.into() }
    }
}

fn status_word(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the condition list: `desired` replaces conditions of the same type;
/// the transition time is kept when the status did not flip, else set to `now`.
/// Conditions of other types are kept as they are.
pub fn settle(
    existing: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> =
        existing.iter().filter(|c| !desired.iter().any(|d| d.type_ == c.type_)).cloned().collect();
    for d in desired {
        let status = status_word(d.status);
        let previous = existing.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: d.type_.to_owned(),
            status: status.to_owned(),
            reason: d.reason.to_owned(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).and_then(truth) == Some(true)
}

/// What a condition's status says: `Some(true)` for `True`, `Some(false)` for
/// `False`, `None` for `Unknown` (or anything else).
pub fn truth(condition: &Condition) -> Option<bool> {
    match condition.status.as_str() {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    }
}

/// The status word of a truth: `True`, `False` or `Unknown`.
pub fn word(truth: Option<bool>) -> &'static str {
    match truth {
        Some(status) => status_word(status),
        None => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    /// docs/reference.md lists every condition type and reason declared here.
    #[test]
    fn the_reference_lists_every_condition_and_reason() {
        let reference = include_str!("../../docs/reference.md");
        let declared: Vec<&str> = include_str!("conditions.rs")
            .lines()
            .filter_map(|line| line.trim().strip_prefix("pub const ")?.split('"').nth(1))
            .collect();
        assert!(declared.len() > 30, "read the constants: {declared:?}");
        let missing: Vec<&&str> = declared.iter().filter(|name| !reference.contains(&format!("`{name}`"))).collect();
        assert!(missing.is_empty(), "docs/reference.md, \"Conditions and reasons\", misses {missing:?}");
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn a_status_word_reads_as_a_truth_and_back() {
        for (status, expected) in [("True", Some(true)), ("False", Some(false)), ("Unknown", None), ("", None)] {
            let condition = Condition {
                type_: READY.into(),
                status: status.into(),
                reason: String::new(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            };
            assert_eq!(truth(&condition), expected, "{status}");
        }
        assert_eq!([word(Some(true)), word(Some(false)), word(None)], ["True", "False", "Unknown"]);
    }

    #[test]
    fn new_condition_gets_now_and_generation() {
        let out = settle(&[], &[DesiredCondition::ready(reason::ISSUED, "ok")], Some(3), &at(100));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].reason, "Issued");
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(out[0].last_transition_time, at(100));
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let first = settle(&[], &[DesiredCondition::not_ready(reason::INVALID_SPEC, "a")], Some(1), &at(100));
        let second = settle(&first, &[DesiredCondition::not_ready(reason::SECRET_CONFLICT, "b")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "SecretConflict");
        let same = settle(&second, &[DesiredCondition::not_ready(reason::SECRET_CONFLICT, "b")], Some(2), &at(300));
        assert_eq!(same, second, "re-settling an unchanged condition changes nothing");
    }

    #[test]
    fn flipped_status_moves_the_transition_time() {
        let first = settle(&[], &[DesiredCondition::not_ready(reason::INVALID_SPEC, "a")], Some(1), &at(100));
        let second = settle(&first, &[DesiredCondition::ready(reason::ISSUED, "ok")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(200));
        assert!(is_true(&second, READY));
    }

    #[test]
    fn other_condition_types_are_kept() {
        let other = Condition {
            type_: "Other".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: at(1),
        };
        let out = settle(std::slice::from_ref(&other), &[DesiredCondition::ready(reason::ISSUED, "ok")], None, &at(5));
        assert_eq!(out.len(), 2);
        assert!(out.contains(&other));
    }
}
