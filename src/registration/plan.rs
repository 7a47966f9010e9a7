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

/// Why the app may not be issued credentials as it stands, if it may not: the
/// reason and message of its `Ready=False` condition.
pub fn rejection(inputs: &Inputs<'_>) -> Option<(&'static str, String)> {
    if !inputs.violations.is_empty() {
        return Some((reason::INVALID_SPEC, summarize(inputs.violations)));
    }
    if !inputs.scope_permitted {
        return Some((
            reason::SCOPE_NOT_PERMITTED,
            format!(
                "scope Global is allowed only in the platform namespace {}; use Organization or Group here",
                inputs.platform_namespace
            ),
        ));
    }
    None
}

/// Decides what to do with the credentials.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let app = inputs.app;
    let status = status_of(app);
    let current_version = status.secret_version.unwrap_or(0);
    let annotation = app.annotations().get(ROTATE_ANNOTATION).cloned();

    let mint = |reason: MintReason, client_id: Option<String>| Decision::Mint {
        client_id: client_id.unwrap_or_else(crate::credentials::mint_client_id),
        version: current_version.max(observed_version(inputs.observed)) + 1,
        rotate_request: match &reason {
            MintReason::RotateRequested(value) => Some(value.clone()),
            _ => annotation.clone(),
        },
        reason,
    };

    // Finish an interrupted mint first, whatever the spec says now: until status
    // catches up, the Secret holds a secret that does not verify against it.
    if let Observed::Owned(owned) = inputs.observed {
        let issued = &owned.issued;
        let ahead = issued.version.unwrap_or(0) > current_version;
        let same_client = status.client_id.as_deref().is_none_or(|id| id == issued.client_id);
        let complete = !issued.client_id.is_empty() && (is_public(app) || issued.secret.is_some());
        if ahead && same_client && complete {
            return Decision::Adopt(issued.clone());
        }
    }
    if let Some((reason, message)) = rejection(inputs) {
        return Decision::Reject { reason, message };
    }

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
    // A time already past needs no wake-up: the pass that just ran acted on it,
    // or a rejected spec blocks it until the spec changes (which is an event).
    [grace_end, rotation]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        api::{AppRegistrationSpec, Rotation, Scope, conditions::READY},
        credentials::{
            ClientSecret,
            layout::{APP_LABEL, OwnedSecret, SecretLayout},
        },
    };

    const PLATFORM_NAMESPACE: &str = "registrar-system";
    /// The Client ID status already holds (22 characters, like a minted one).
    const CLIENT_ID: &str = "c2xpZW50LWlkLTAwMDAwMQ";
    const PLAINTEXT: &str = "plaintext-client-secret-never-shown";
    const OLD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$b2xk$b2xkLWhhc2g";
    const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3LWhhc2g";
    /// When the current secret was minted.
    const T0: i64 = 1_700_000_000;
    /// When the reconcile under test runs: one minute after `T0`.
    const NOW: i64 = T0 + 60;

    // ---- fixtures -------------------------------------------------------

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn time(second: i64) -> Time {
        Time(at(second))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A confidential Group app in "team-a", uid "uid-1", generation 1, no status.
    fn app() -> AppRegistration {
        let mut app = AppRegistration::new(
            "billing",
            AppRegistrationSpec { display_name: "Billing".into(), scope: Scope::Group, ..Default::default() },
        );
        app.metadata.namespace = Some("team-a".into());
        app.metadata.uid = Some("uid-1".into());
        app.metadata.generation = Some(1);
        app
    }

    fn public_app() -> AppRegistration {
        let mut app = app();
        app.spec.public_client = Some(true);
        app.spec.require_pkce = Some(true);
        app
    }

    fn annotated(mut app: AppRegistration, key: &str, value: &str) -> AppRegistration {
        app.annotations_mut().insert(key.into(), value.into());
        app
    }

    fn with_status(mut app: AppRegistration, status: AppRegistrationStatus) -> AppRegistration {
        app.status = Some(status);
        app
    }

    fn with_rotation(mut app: AppRegistration, grace_period: Option<&str>, interval: Option<&str>) -> AppRegistration {
        app.spec.rotation = Some(Rotation {
            grace_period: grace_period.map(|d| d.parse().unwrap()),
            interval: interval.map(|d| d.parse().unwrap()),
        });
        app
    }

    /// Status of an app whose secret `version` was minted at `T0`.
    fn issued_status(version: i64) -> AppRegistrationStatus {
        AppRegistrationStatus {
            client_id: Some(CLIENT_ID.into()),
            secret_hash: Some(OLD_HASH.into()),
            secret_version: Some(version),
            secret_fingerprint: Some("0badf00d".into()),
            last_rotated_at: Some(time(T0)),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    /// Status of a public app (no secret) whose `version` was minted at `T0`.
    fn public_status(version: i64) -> AppRegistrationStatus {
        AppRegistrationStatus { secret_hash: None, secret_fingerprint: None, ..issued_status(version) }
    }

    fn issued(client_id: &str, version: i64) -> Issued {
        Issued {
            client_id: client_id.into(),
            secret: ClientSecret::from_bytes(PLAINTEXT.as_bytes()),
            version: Some(version),
            rotate_request: None,
        }
    }

    fn public_issued(client_id: &str, version: i64) -> Issued {
        Issued { secret: None, ..issued(client_id, version) }
    }

    /// What the reconciler observes when the app's Secret holds `issued`,
    /// written by `SecretLayout::desired` and read back by `observe`.
    fn observe(app: &AppRegistration, issued: &Issued) -> Observed {
        let layout = SecretLayout::for_app(app);
        layout.observe(app, Some(&layout.desired(app, issued)))
    }

    fn owned(app: &AppRegistration, issued: &Issued) -> OwnedSecret {
        match observe(app, issued) {
            Observed::Owned(owned) => owned,
            other => panic!("expected an owned Secret, got {other:?}"),
        }
    }

    /// Inputs of a valid, permitted app whose Secret verifies, at `NOW`.
    fn inputs<'a>(app: &'a AppRegistration, observed: &'a Observed) -> Inputs<'a> {
        Inputs {
            app,
            violations: &[],
            scope_permitted: true,
            platform_namespace: PLATFORM_NAMESPACE,
            observed,
            secret_verifies: Some(true),
            now: at(NOW),
        }
    }

    fn violation(field: &str, message: &str) -> Violation {
        Violation { field: field.into(), message: message.into() }
    }

    fn new_hash() -> IssuedHash {
        IssuedHash { hash: Some(NEW_HASH.into()), fingerprint: Some("feedc0de".into()) }
    }

    fn public_hash() -> IssuedHash {
        IssuedHash { hash: None, fingerprint: None }
    }

    /// `desired_status` with the Ready condition the reconciler builds for it.
    fn status_after(
        app: &AppRegistration,
        now: Timestamp,
        issued: Option<(&Issued, &IssuedHash, bool)>,
    ) -> AppRegistrationStatus {
        let public = is_public(app);
        let condition = match issued {
            Some((issued, _, _)) => issued_condition(&issued.client_id, issued.version, public),
            None => {
                let status = status_of(app);
                issued_condition(status.client_id.as_deref().unwrap_or_default(), status.secret_version, public)
            }
        };
        desired_status(StatusInputs { app, now, condition, issued })
    }

    fn assert_fresh_client_id(client_id: &str) {
        assert_eq!(client_id.len(), 22, "128 bits, base64url without padding: {client_id}");
        assert!(client_id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{client_id}");
        assert_ne!(client_id, CLIENT_ID);
    }

    // ---- decide: mint on missing Secret ---------------------------------

    #[test]
    fn missing_secret_without_client_id_mints_initial_credentials() {
        let app = app();
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) });
        let Decision::Mint { reason, client_id, version, rotate_request } = decision else {
            panic!("expected a mint, got {decision:?}");
        };
        assert_eq!(reason, MintReason::Initial);
        assert_fresh_client_id(&client_id);
        assert_eq!(version, 1);
        assert_eq!(rotate_request, None);
    }

    #[test]
    fn initial_mint_mints_a_different_client_id_each_time() {
        let app = app();
        let mint_id = || match decide(&inputs(&app, &Observed::Missing)) {
            Decision::Mint { client_id, .. } => client_id,
            other => panic!("expected a mint, got {other:?}"),
        };
        assert_ne!(mint_id(), mint_id());
    }

    #[test]
    fn initial_mint_answers_the_current_rotate_annotation() {
        let app = annotated(app(), ROTATE_ANNOTATION, "2024-01-01");
        let decision = decide(&inputs(&app, &Observed::Missing));
        let Decision::Mint { reason, rotate_request, version, .. } = decision else {
            panic!("expected a mint, got {decision:?}");
        };
        assert_eq!(reason, MintReason::Initial);
        assert_eq!(version, 1);
        assert_eq!(rotate_request.as_deref(), Some("2024-01-01"), "re-applying the manifest must not rotate later");
    }

    #[test]
    fn missing_secret_with_client_id_keeps_the_client_id_and_bumps_the_version() {
        let app = with_status(app(), issued_status(3));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretMissing,
                client_id: CLIENT_ID.into(),
                version: 4,
                rotate_request: None
            }
        );
    }

    #[test]
    fn missing_secret_remint_carries_the_current_rotate_annotation() {
        let app = annotated(with_status(app(), issued_status(3)), ROTATE_ANNOTATION, "r1");
        let decision = decide(&inputs(&app, &Observed::Missing));
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretMissing,
                client_id: CLIENT_ID.into(),
                version: 4,
                rotate_request: Some("r1".into())
            }
        );
    }

    #[test]
    fn missing_secret_of_a_public_client_remints_its_client_id_secret() {
        let app = with_status(public_app(), public_status(2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &Observed::Missing) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretMissing,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    // ---- decide: conflict and rejection ---------------------------------

    #[test]
    fn foreign_secret_is_a_conflict() {
        let app = app();
        assert_eq!(decide(&inputs(&app, &Observed::Foreign)), Decision::Conflict);
        let issued_app = with_status(app, issued_status(2));
        assert_eq!(decide(&inputs(&issued_app, &Observed::Foreign)), Decision::Conflict);
    }

    #[test]
    fn foreign_secret_seen_through_the_layout_is_a_conflict() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(CLIENT_ID, 1));
        secret.metadata.owner_references = None;
        let observed = layout.observe(&app, Some(&secret));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Conflict);
    }

    #[test]
    fn violations_reject_with_invalid_spec_and_the_summarized_message() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let violations = [
            violation("spec.redirectUris[1]", "redirect URI http://example.com/cb must use https"),
            violation("spec.requirePkce", "a public client must set requirePkce: true"),
        ];
        let decision = decide(&Inputs { violations: &violations, ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Reject {
                reason: reason::INVALID_SPEC,
                message: "spec.redirectUris[1]: redirect URI http://example.com/cb must use https; \
                          spec.requirePkce: a public client must set requirePkce: true"
                    .into(),
            }
        );
        assert_eq!(decision, Decision::Reject { reason: "InvalidSpec", message: summarize(&violations) });
    }

    #[test]
    fn violations_are_rejected_before_anything_is_minted_or_conflicts() {
        let app = app();
        let violations = [violation("spec.displayName", "must not be blank")];
        for observed in [Observed::Missing, Observed::Foreign] {
            let decision = decide(&Inputs { violations: &violations, ..inputs(&app, &observed) });
            assert!(matches!(decision, Decision::Reject { reason: reason::INVALID_SPEC, .. }), "{decision:?}");
        }
    }

    #[test]
    fn scope_not_permitted_rejects_naming_the_platform_namespace() {
        let mut app = app();
        app.spec.scope = Scope::Global;
        let decision = decide(&Inputs { scope_permitted: false, ..inputs(&app, &Observed::Missing) });
        let Decision::Reject { reason, message } = decision else {
            panic!("expected a rejection, got {decision:?}");
        };
        assert_eq!(reason, reason::SCOPE_NOT_PERMITTED);
        assert!(message.contains(PLATFORM_NAMESPACE), "{message}");
        assert!(message.contains("Global"), "{message}");
    }

    #[test]
    fn invalid_spec_is_reported_before_scope_not_permitted() {
        let app = app();
        let violations = [violation("spec.displayName", "must not be blank")];
        let decision =
            decide(&Inputs { violations: &violations, scope_permitted: false, ..inputs(&app, &Observed::Missing) });
        assert!(matches!(decision, Decision::Reject { reason: reason::INVALID_SPEC, .. }), "{decision:?}");
    }

    // ---- decide: finishing an interrupted mint --------------------------

    #[test]
    fn secret_ahead_of_status_is_adopted() {
        let app = with_status(app(), issued_status(1));
        let ahead = Issued { rotate_request: Some("r1".into()), ..issued(CLIENT_ID, 2) };
        let observed = observe(&app, &ahead);
        // The new secret cannot verify against the old hash still in status.
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(ahead));
    }

    #[test]
    fn secret_written_before_the_first_status_is_adopted() {
        let app = app();
        let first = issued("bmV3LWNsaWVudC1pZC0wMDE", 1);
        let observed = observe(&app, &first);
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(first));
    }

    #[test]
    fn public_secret_ahead_of_status_is_adopted_without_a_secret() {
        let app = with_status(public_app(), public_status(1));
        let ahead = public_issued(CLIENT_ID, 2);
        let observed = observe(&app, &ahead);
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(ahead));
    }

    #[test]
    fn secret_ahead_with_a_different_client_id_mints_secret_altered_instead_of_adopting() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &issued("b3RoZXItY2xpZW50LWlkLTE", 2));
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            },
            "the status Client ID is kept, and the version passes the Secret's"
        );
    }

    #[test]
    fn confidential_secret_ahead_without_its_secret_is_reminted_not_adopted() {
        let app = with_status(app(), issued_status(1));
        let observed = observe(&app, &Issued { secret: None, ..issued(CLIENT_ID, 2) });
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    #[test]
    fn owned_secret_without_client_id_or_version_and_empty_status_starts_over() {
        let app = app();
        let observed = observe(&app, &Issued { client_id: String::new(), version: None, ..issued(CLIENT_ID, 1) });
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        let Decision::Mint { reason, client_id, version, .. } = decision else {
            panic!("expected a mint, got {decision:?}");
        };
        assert_eq!(reason, MintReason::Initial);
        assert_fresh_client_id(&client_id);
        assert_eq!(version, 1);
    }

    // ---- decide: drift --------------------------------------------------

    #[test]
    fn owned_secret_that_does_not_verify_mints_secret_altered() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    #[test]
    fn owned_secret_that_could_not_be_verified_is_not_trusted() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert!(
            matches!(decision, Decision::Mint { reason: MintReason::SecretAltered, version: 3, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn owned_secret_whose_client_secret_was_removed_mints_secret_altered() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &Issued { secret: None, ..issued(CLIENT_ID, 2) });
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert!(
            matches!(decision, Decision::Mint { reason: MintReason::SecretAltered, version: 3, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn owned_secret_with_a_version_lower_than_status_mints_secret_altered() {
        let app = with_status(app(), issued_status(3));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&inputs(&app, &observed));
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 4,
                rotate_request: None
            }
        );
    }

    #[test]
    fn owned_secret_with_an_altered_client_id_mints_secret_altered_keeping_the_status_client_id() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued("YWx0ZXJlZC1jbGllbnQtaWQ", 2));
        let decision = decide(&inputs(&app, &observed));
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
    }

    #[test]
    fn drift_remint_answers_a_pending_rotate_request() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::SecretAltered,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: Some("r1".into())
            }
        );
    }

    #[test]
    fn metadata_drift_keeps_the_secret_and_repairs_its_metadata() {
        let app = with_status(app(), issued_status(2));
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(CLIENT_ID, 2));
        secret.metadata.labels.as_mut().unwrap().remove(APP_LABEL);
        let observed = layout.observe(&app, Some(&secret));
        assert!(matches!(&observed, Observed::Owned(o) if !o.metadata_current));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: true });
    }

    #[test]
    fn metadata_drift_is_repaired_from_an_owned_secret_built_by_hand() {
        let app = with_status(app(), issued_status(2));
        let observed = Observed::Owned(OwnedSecret { metadata_current: false, ..owned(&app, &issued(CLIENT_ID, 2)) });
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: true });
    }

    #[test]
    fn intact_secret_is_kept_without_repair() {
        let app = with_status(app(), issued_status(2));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn intact_public_secret_is_kept_without_verification() {
        let app = with_status(public_app(), public_status(2));
        let observed = observe(&app, &public_issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    // ---- decide: rotation -----------------------------------------------

    #[test]
    fn pending_rotate_annotation_mints_rotate_requested_with_the_next_version() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        assert_eq!(
            decide(&inputs(&app, &observed)),
            Decision::Mint {
                reason: MintReason::RotateRequested("r2".into()),
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: Some("r2".into())
            }
        );
    }

    #[test]
    fn rotate_annotation_different_from_the_last_handled_one_rotates() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r2");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&inputs(&app, &observed));
        assert!(
            matches!(&decision, Decision::Mint { reason: MintReason::RotateRequested(r), version: 3, .. } if r == "r2"),
            "{decision:?}"
        );
    }

    #[test]
    fn rotate_annotation_equal_to_the_last_handled_one_keeps() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        assert_eq!(decide(&inputs(&app, &observed)), Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn public_client_with_a_rotate_annotation_keeps_without_minting() {
        let app = annotated(with_status(public_app(), public_status(2)), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &public_issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn elapsed_rotation_interval_mints_scheduled() {
        let app = with_rotation(with_status(app(), issued_status(2)), None, Some("1h"));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), ..inputs(&app, &observed) });
        assert_eq!(
            decision,
            Decision::Mint {
                reason: MintReason::Scheduled,
                client_id: CLIENT_ID.into(),
                version: 3,
                rotate_request: None
            }
        );
        let later = decide(&Inputs { now: at(T0 + 7 * 3600), ..inputs(&app, &observed) });
        assert!(matches!(later, Decision::Mint { reason: MintReason::Scheduled, .. }), "{later:?}");
    }

    #[test]
    fn scheduled_rotation_carries_the_already_handled_rotate_annotation() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_rotation(with_status(app(), status), None, Some("1h")), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), ..inputs(&app, &observed) });
        assert!(
            matches!(&decision, Decision::Mint { reason: MintReason::Scheduled, rotate_request: Some(r), .. } if r == "r1"),
            "{decision:?}"
        );
    }

    #[test]
    fn rotation_interval_not_yet_elapsed_keeps() {
        let app = with_rotation(with_status(app(), issued_status(2)), None, Some("1h"));
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3599), ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn public_client_is_never_rotated_on_schedule() {
        let app = with_rotation(with_status(public_app(), public_status(2)), None, Some("1h"));
        let observed = observe(&app, &public_issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 10 * 3600), secret_verifies: None, ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Keep { repair_metadata: false });
    }

    #[test]
    fn rotate_request_takes_priority_over_a_due_schedule() {
        let app =
            annotated(with_rotation(with_status(app(), issued_status(2)), None, Some("1h")), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), ..inputs(&app, &observed) });
        assert!(matches!(decision, Decision::Mint { reason: MintReason::RotateRequested(_), .. }), "{decision:?}");
    }

    #[test]
    fn drift_takes_priority_over_a_pending_rotation() {
        let app =
            annotated(with_rotation(with_status(app(), issued_status(2)), None, Some("1h")), ROTATE_ANNOTATION, "r1");
        let observed = observe(&app, &issued(CLIENT_ID, 2));
        let decision = decide(&Inputs { now: at(T0 + 3600), secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert!(matches!(decision, Decision::Mint { reason: MintReason::SecretAltered, .. }), "{decision:?}");
    }

    #[test]
    fn only_requested_and_scheduled_mints_are_rotations() {
        assert!(MintReason::RotateRequested("r1".into()).is_rotation());
        assert!(MintReason::Scheduled.is_rotation());
        assert!(!MintReason::Initial.is_rotation());
        assert!(!MintReason::SecretMissing.is_rotation());
        assert!(!MintReason::SecretAltered.is_rotation());
    }

    /// DESIGN.md: "No path leaves a Secret whose secret does not verify against
    /// status". A crash between the Secret and the status writes (e.g. the
    /// operator pod replaced by an upgrade whose validation is stricter) followed
    /// by a spec that now fails validation leaves the Secret ahead of status for
    /// as long as the spec stays invalid: workloads mounting it fail to authenticate.
    #[test]
    fn interrupted_mint_is_finished_even_when_the_spec_turned_invalid() {
        let app = with_status(app(), issued_status(1));
        let ahead = issued(CLIENT_ID, 2);
        let observed = observe(&app, &ahead);
        let violations = [violation("spec.redirectUris[0]", "redirect URI must use https")];
        let decision =
            decide(&Inputs { violations: &violations, secret_verifies: Some(false), ..inputs(&app, &observed) });
        assert_eq!(decision, Decision::Adopt(ahead));
    }

    // ---- desired_status -------------------------------------------------

    #[test]
    fn initial_mint_status_holds_the_issued_credentials_at_second_precision() {
        let app = app();
        let first = issued("bmV3LWNsaWVudC1pZC0wMDE", 1);
        let now = Timestamp::new(NOW, 750_000_000).unwrap();
        let status = status_after(&app, now, Some((&first, &new_hash(), false)));
        assert_eq!(status.client_id.as_deref(), Some("bmV3LWNsaWVudC1pZC0wMDE"));
        assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(status.secret_fingerprint.as_deref(), Some("feedc0de"));
        assert_eq!(status.secret_version, Some(1));
        assert_eq!(status.last_rotated_at, Some(time(NOW)), "sub-second part dropped");
        assert_eq!(status.last_handled_rotate, None);
        assert_eq!(status.previous_secret_hash, None);
        assert_eq!(status.previous_secret_expires_at, None);
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn mint_status_records_the_answered_rotate_request_as_handled() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2");
        let rotated = Issued { rotate_request: Some("r2".into()), ..issued(CLIENT_ID, 3) };
        let status = status_after(&app, at(NOW), Some((&rotated, &new_hash(), true)));
        assert_eq!(status.last_handled_rotate.as_deref(), Some("r2"));
        assert_eq!(status.secret_version, Some(3));
        assert_eq!(status.last_rotated_at, Some(time(NOW)));
    }

    #[test]
    fn mint_without_a_rotate_request_keeps_the_last_handled_rotate() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = with_status(app(), status);
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 3), &new_hash(), false)));
        assert_eq!(status.last_handled_rotate.as_deref(), Some("r1"));
    }

    #[test]
    fn rotation_with_a_grace_period_keeps_the_previous_hash_until_now_plus_grace() {
        let app = with_rotation(with_status(app(), issued_status(2)), Some("1h"), None);
        let now = Timestamp::new(NOW, 400_000_000).unwrap();
        let status = status_after(&app, now, Some((&issued(CLIENT_ID, 3), &new_hash(), true)));
        assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(status.previous_secret_hash.as_deref(), Some(OLD_HASH));
        assert_eq!(status.previous_secret_expires_at, Some(time(NOW + 3600)));
    }

    #[test]
    fn rotation_with_a_zero_grace_period_drops_the_previous_hash_at_once() {
        for app in [
            with_status(app(), issued_status(2)),
            with_rotation(with_status(app(), issued_status(2)), Some("0s"), None),
        ] {
            let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 3), &new_hash(), true)));
            assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
            assert_eq!(status.previous_secret_hash, None);
            assert_eq!(status.previous_secret_expires_at, None);
        }
    }

    #[test]
    fn drift_remint_keeps_no_previous_hash_even_with_a_grace_period() {
        let status = AppRegistrationStatus {
            previous_secret_hash: Some("$argon2id$older".into()),
            previous_secret_expires_at: Some(time(NOW + 600)),
            ..issued_status(2)
        };
        let app = with_rotation(with_status(app(), status), Some("1h"), None);
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 3), &new_hash(), false)));
        assert_eq!(status.secret_hash.as_deref(), Some(NEW_HASH));
        assert_eq!(status.previous_secret_hash, None);
        assert_eq!(status.previous_secret_expires_at, None);
    }

    #[test]
    fn public_client_rotation_has_no_hash_and_no_previous_hash() {
        let app = with_rotation(with_status(public_app(), public_status(1)), Some("1h"), None);
        let status = status_after(&app, at(NOW), Some((&public_issued(CLIENT_ID, 2), &public_hash(), true)));
        assert_eq!(status.secret_hash, None);
        assert_eq!(status.secret_fingerprint, None);
        assert_eq!(status.previous_secret_hash, None);
        assert_eq!(status.previous_secret_expires_at, None);
        assert_eq!(status.secret_version, Some(2));
    }

    #[test]
    fn expired_previous_hash_is_dropped() {
        for expires in [NOW - 1, NOW] {
            let status = AppRegistrationStatus {
                previous_secret_hash: Some(OLD_HASH.into()),
                previous_secret_expires_at: Some(time(expires)),
                ..issued_status(3)
            };
            let app = with_status(app(), status);
            let status = status_after(&app, at(NOW), None);
            assert_eq!(status.previous_secret_hash, None, "expired at {expires}");
            assert_eq!(status.previous_secret_expires_at, None, "expired at {expires}");
        }
    }

    #[test]
    fn unexpired_previous_hash_is_kept() {
        let status = AppRegistrationStatus {
            previous_secret_hash: Some(OLD_HASH.into()),
            previous_secret_expires_at: Some(time(NOW + 1)),
            ..issued_status(3)
        };
        let app = with_status(app(), status);
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.previous_secret_hash.as_deref(), Some(OLD_HASH));
        assert_eq!(status.previous_secret_expires_at, Some(time(NOW + 1)));
    }

    #[test]
    fn previous_hash_without_an_expiry_is_dropped() {
        let status = AppRegistrationStatus { previous_secret_hash: Some(OLD_HASH.into()), ..issued_status(3) };
        let status = status_after(&with_status(app(), status), at(NOW), None);
        assert_eq!(status.previous_secret_hash, None);
    }

    #[test]
    fn registered_by_is_copied_from_the_annotation() {
        let app = annotated(app(), REGISTERED_BY_ANNOTATION, "alice@example.com");
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 1), &new_hash(), false)));
        assert_eq!(status.registered_by.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn registered_by_is_kept_when_the_annotation_is_absent() {
        let status = AppRegistrationStatus { registered_by: Some("alice@example.com".into()), ..issued_status(1) };
        let status = status_after(&with_status(app(), status), at(NOW), None);
        assert_eq!(status.registered_by.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn observed_generation_follows_metadata_generation() {
        let mut app = with_status(app(), issued_status(1));
        app.metadata.generation = Some(7);
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.observed_generation, Some(7));
        let ready = conditions::find(&status.conditions, READY).expect("a Ready condition");
        assert_eq!(ready.observed_generation, Some(7));
    }

    #[test]
    fn status_carries_the_ready_condition_given() {
        let app = app();
        let status = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 1), &new_hash(), false)));
        assert_eq!(status.conditions.len(), 1);
        let ready = &status.conditions[0];
        assert_eq!(ready.type_, READY);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, reason::ISSUED);
        assert_eq!(ready.last_transition_time, time(NOW));
    }

    #[test]
    fn status_without_issued_credentials_leaves_them_untouched() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(4) };
        let app = with_status(app(), status.clone());
        let condition = DesiredCondition::not_ready(reason::INVALID_SPEC, "spec.displayName: must not be blank");
        let next = desired_status(StatusInputs { app: &app, now: at(NOW), condition, issued: None });
        assert_eq!(next.client_id, status.client_id);
        assert_eq!(next.secret_hash, status.secret_hash);
        assert_eq!(next.secret_fingerprint, status.secret_fingerprint);
        assert_eq!(next.secret_version, status.secret_version);
        assert_eq!(next.last_rotated_at, status.last_rotated_at);
        assert_eq!(next.last_handled_rotate, status.last_handled_rotate);
        assert!(!conditions::is_true(&next.conditions, READY));
        assert_eq!(conditions::find(&next.conditions, READY).unwrap().reason, reason::INVALID_SPEC);
    }

    #[test]
    fn public_client_rotate_annotation_is_acknowledged_without_a_mint() {
        let app = annotated(with_status(public_app(), public_status(2)), ROTATE_ANNOTATION, "r1");
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.last_handled_rotate.as_deref(), Some("r1"));
        assert_eq!(status.secret_version, Some(2));
        assert_eq!(status.last_rotated_at, Some(time(T0)));
    }

    #[test]
    fn confidential_rotate_annotation_is_not_acknowledged_without_a_mint() {
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r1");
        let status = status_after(&app, at(NOW), None);
        assert_eq!(status.last_handled_rotate, None);
    }

    #[test]
    fn desired_status_never_holds_the_plaintext_secret() {
        let app =
            with_rotation(annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2"), Some("1h"), None);
        let rotated = Issued { rotate_request: Some("r2".into()), ..issued(CLIENT_ID, 3) };
        let status = status_after(&app, at(NOW), Some((&rotated, &new_hash(), true)));
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains(PLAINTEXT), "{json}");
    }

    /// Quietness: feeding the computed status back in, later, computes it again
    /// exactly, so an unchanged app is never rewritten.
    fn assert_quiet(app: &AppRegistration, first: AppRegistrationStatus, later: Timestamp) {
        let app = with_status(app.clone(), first.clone());
        let again = status_after(&app, later, None);
        assert_eq!(again, first, "an unchanged app's status must not change");
    }

    #[test]
    fn unchanged_healthy_app_status_is_quiet() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(
            annotated(with_rotation(with_status(app(), status), None, Some("24h")), ROTATE_ANNOTATION, "r1"),
            REGISTERED_BY_ANNOTATION,
            "alice@example.com",
        );
        let first = status_after(&app, at(NOW), None);
        assert_quiet(&app, first, at(NOW + 3600));
    }

    #[test]
    fn status_after_a_rotation_in_its_grace_period_is_quiet() {
        let app =
            with_rotation(annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r2"), Some("1h"), None);
        let rotated = Issued { rotate_request: Some("r2".into()), ..issued(CLIENT_ID, 3) };
        let now = Timestamp::new(NOW, 999_000_000).unwrap();
        let first = status_after(&app, now, Some((&rotated, &new_hash(), true)));
        assert_quiet(&app, first, at(NOW + 1800));
    }

    #[test]
    fn status_after_an_initial_mint_is_quiet() {
        let app = annotated(app(), REGISTERED_BY_ANNOTATION, "alice@example.com");
        let first = status_after(&app, at(NOW), Some((&issued(CLIENT_ID, 1), &new_hash(), false)));
        assert_quiet(&app, first, at(NOW + 86_400));
    }

    #[test]
    fn acknowledged_public_client_status_is_quiet() {
        let app = annotated(with_status(public_app(), public_status(1)), ROTATE_ANNOTATION, "r1");
        let first = status_after(&app, at(NOW), None);
        assert_quiet(&app, first, at(NOW + 60));
    }

    #[test]
    fn rejected_app_status_is_quiet() {
        let app = with_status(app(), issued_status(2));
        let condition = || DesiredCondition::not_ready(reason::INVALID_SPEC, "spec.displayName: must not be blank");
        let first = desired_status(StatusInputs { app: &app, now: at(NOW), condition: condition(), issued: None });
        let app = with_status(app, first.clone());
        let again =
            desired_status(StatusInputs { app: &app, now: at(NOW + 600), condition: condition(), issued: None });
        assert_eq!(again, first);
    }

    // ---- next_wakeup ----------------------------------------------------

    fn in_grace_until(expires: i64) -> AppRegistrationStatus {
        AppRegistrationStatus {
            previous_secret_hash: Some(OLD_HASH.into()),
            previous_secret_expires_at: Some(time(expires)),
            ..issued_status(3)
        }
    }

    #[test]
    fn next_wakeup_is_the_end_of_the_grace_period() {
        let app = with_rotation(app(), Some("1h"), None);
        assert_eq!(next_wakeup(&app, &in_grace_until(NOW + 300), at(NOW)), Some(secs(300)));
    }

    #[test]
    fn next_wakeup_is_the_next_scheduled_rotation() {
        let app = with_rotation(app(), None, Some("1h"));
        // Minted at T0, so due at T0 + 3600, one hour less a minute from NOW.
        assert_eq!(next_wakeup(&app, &issued_status(2), at(NOW)), Some(secs(3540)));
    }

    #[test]
    fn next_wakeup_reads_the_schedule_from_the_status_given_not_the_apps() {
        let app = with_rotation(with_status(app(), issued_status(1)), None, Some("1h"));
        let rotated_now = AppRegistrationStatus { last_rotated_at: Some(time(NOW)), ..issued_status(2) };
        assert_eq!(next_wakeup(&app, &rotated_now, at(NOW)), Some(secs(3600)));
    }

    #[test]
    fn next_wakeup_is_the_earlier_of_grace_end_and_scheduled_rotation() {
        let app = with_rotation(app(), Some("1h"), Some("2h"));
        // Rotation due at T0 + 7200.
        assert_eq!(next_wakeup(&app, &in_grace_until(NOW + 600), at(NOW)), Some(secs(600)));
        let app = with_rotation(app, Some("1h"), Some("5m"));
        // Rotation due at T0 + 300 = NOW + 240, before the grace ends.
        assert_eq!(next_wakeup(&app, &in_grace_until(NOW + 600), at(NOW)), Some(secs(240)));
    }

    #[test]
    fn next_wakeup_is_none_without_grace_period_or_schedule() {
        let app = app();
        assert_eq!(next_wakeup(&app, &issued_status(2), at(NOW)), None);
        assert_eq!(next_wakeup(&app, &AppRegistrationStatus::default(), at(NOW)), None);
        let scheduled_but_never_minted = with_rotation(app, None, Some("1h"));
        assert_eq!(next_wakeup(&scheduled_but_never_minted, &AppRegistrationStatus::default(), at(NOW)), None);
    }

    #[test]
    fn next_wakeup_ignores_the_schedule_of_a_public_client() {
        let app = with_rotation(public_app(), None, Some("1h"));
        assert_eq!(next_wakeup(&app, &public_status(2), at(NOW)), None);
    }

    #[test]
    fn next_wakeup_is_at_least_one_second_and_never_for_a_past_time() {
        let graced = with_rotation(app(), Some("1h"), None);
        assert_eq!(next_wakeup(&graced, &in_grace_until(NOW), at(NOW)), None, "due now: handled by this pass");
        assert_eq!(next_wakeup(&graced, &in_grace_until(NOW - 30), at(NOW)), None, "overdue: handled by this pass");
        let half_second_before = Timestamp::new(NOW - 1, 500_000_000).unwrap();
        assert_eq!(next_wakeup(&graced, &in_grace_until(NOW), half_second_before), Some(secs(1)), "sub-second");
        let overdue_rotation = with_rotation(app(), None, Some("1m"));
        assert_eq!(
            next_wakeup(&overdue_rotation, &issued_status(2), at(NOW + 3600)),
            None,
            "an overdue rotation blocked by a rejected spec waits for the spec to change"
        );
    }

    // ---- next_scheduled_rotation ----------------------------------------

    #[test]
    fn scheduled_rotation_is_interval_after_the_last_rotation() {
        let app = with_rotation(with_status(app(), issued_status(2)), None, Some("90m"));
        assert_eq!(next_scheduled_rotation(&app), Some(at(T0 + 5400)));
    }

    #[test]
    fn no_scheduled_rotation_without_interval_last_rotation_or_secret() {
        assert_eq!(next_scheduled_rotation(&with_status(app(), issued_status(2))), None);
        assert_eq!(
            next_scheduled_rotation(&with_rotation(with_status(app(), issued_status(2)), Some("1h"), None)),
            None
        );
        let never_rotated = AppRegistrationStatus { last_rotated_at: None, ..issued_status(2) };
        assert_eq!(next_scheduled_rotation(&with_rotation(with_status(app(), never_rotated), None, Some("1h"))), None);
        assert_eq!(
            next_scheduled_rotation(&with_rotation(with_status(public_app(), public_status(2)), None, Some("1h"))),
            None
        );
    }

    // ---- pending_rotate -------------------------------------------------

    #[test]
    fn pending_rotate_is_none_without_the_annotation() {
        assert_eq!(pending_rotate(&app()), None);
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        assert_eq!(pending_rotate(&with_status(app(), status)), None);
    }

    #[test]
    fn pending_rotate_is_the_annotation_when_nothing_was_handled() {
        assert_eq!(pending_rotate(&annotated(app(), ROTATE_ANNOTATION, "r1")).as_deref(), Some("r1"));
        let app = annotated(with_status(app(), issued_status(2)), ROTATE_ANNOTATION, "r1");
        assert_eq!(pending_rotate(&app).as_deref(), Some("r1"));
    }

    #[test]
    fn pending_rotate_is_a_new_value_different_from_the_last_handled() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r2");
        assert_eq!(pending_rotate(&app).as_deref(), Some("r2"));
    }

    #[test]
    fn pending_rotate_is_none_once_the_value_was_handled() {
        let status = AppRegistrationStatus { last_handled_rotate: Some("r1".into()), ..issued_status(2) };
        let app = annotated(with_status(app(), status), ROTATE_ANNOTATION, "r1");
        assert_eq!(pending_rotate(&app), None);
    }

    #[test]
    fn pending_rotate_ignores_other_annotations() {
        let mut app = app();
        app.metadata.annotations = Some(BTreeMap::from([("registrar.dev/rotate-request".into(), "r1".into())]));
        assert_eq!(pending_rotate(&app), None);
    }

    // ---- to_time --------------------------------------------------------

    #[test]
    fn to_time_drops_the_sub_second_part() {
        assert_eq!(to_time(Timestamp::new(NOW, 999_999_999).unwrap()), time(NOW));
        assert_eq!(to_time(Timestamp::new(NOW, 1).unwrap()), time(NOW));
    }

    #[test]
    fn to_time_keeps_whole_seconds() {
        assert_eq!(to_time(at(NOW)), time(NOW));
        assert_eq!(to_time(at(0)), time(0));
    }

    #[test]
    fn to_time_survives_a_json_round_trip() {
        let t = to_time(Timestamp::new(NOW, 123_456_789).unwrap());
        let back: Time = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    // ---- issued_condition -----------------------------------------------

    #[test]
    fn issued_condition_is_ready_with_reason_issued() {
        let condition = issued_condition(CLIENT_ID, Some(3), false);
        assert_eq!(condition.type_, READY);
        assert!(condition.status);
        assert_eq!(condition.reason, reason::ISSUED);
    }

    #[test]
    fn issued_condition_messages_name_the_client_id_and_version() {
        assert_eq!(
            issued_condition(CLIENT_ID, Some(3), false).message,
            format!("Client ID {CLIENT_ID} and client secret version 3 are issued")
        );
        assert_eq!(
            issued_condition(CLIENT_ID, Some(3), true).message,
            format!("Client ID {CLIENT_ID} is issued (public client: no secret)")
        );
        assert_eq!(issued_condition(CLIENT_ID, None, false).message, format!("Client ID {CLIENT_ID} is issued"));
    }

    #[test]
    fn issued_condition_messages_never_contain_a_secret() {
        let secret = ClientSecret::mint();
        let app = with_status(app(), issued_status(1));
        let rotated = Issued { secret: Some(secret.clone()), ..issued(CLIENT_ID, 2) };
        for (version, public) in [(Some(2), false), (None, false), (Some(2), true), (None, true)] {
            let message = issued_condition(&rotated.client_id, version, public).message;
            assert!(!message.contains(secret.expose()), "{message}");
            assert!(!message.contains(PLAINTEXT), "{message}");
        }
        let status = status_after(&app, at(NOW), Some((&rotated, &new_hash(), true)));
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains(secret.expose()), "{json}");
    }
}
