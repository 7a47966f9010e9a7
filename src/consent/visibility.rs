//! Who may see and use an app, and what a consent grants: pure rules.
//!
//! A namespace is a group; its organization is the value of its
//! `registrar.dev/organization` label, or the configured default organization.
//! A Group app is visible only in its own namespace, an Organization app in the
//! namespaces of the same organization, a Global app everywhere.

use std::collections::BTreeSet;

use super::policy::Allowance;
use crate::api::{
    AppConsentStatus, Scope,
    conditions::{DesiredCondition, consent_reason as reason},
};

/// Whether an app of `scope` registered in `app_namespace` (of organization
/// `app_org`) is visible in `namespace` (of organization `org`).
pub fn visible_to(scope: Scope, app_namespace: &str, app_org: &str, namespace: &str, org: &str) -> bool {
    match scope {
        Scope::Group => app_namespace == namespace,
        Scope::Organization => app_namespace == namespace || app_org == org,
        Scope::Global => true,
    }
}

/// The app as a consent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppFacts<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub organization: &'a str,
    pub scope: Scope,
    pub display_name: &'a str,
    /// `None` until the app is issued.
    pub client_id: Option<&'a str>,
    pub oauth_scopes: &'a [String],
    /// Deletion has begun: revoked.
    pub deleting: bool,
}

/// The consent, and where it stands.
#[derive(Clone, Debug)]
pub struct ConsentFacts<'a> {
    pub namespace: &'a str,
    /// The app it names, `namespace/name` (`spec.appRef`).
    pub app: &'a str,
    pub organization: &'a str,
    /// `spec.oauthScopes`; `None` accepts every scope offered at the first grant.
    pub requested_scopes: Option<&'a [String]>,
    pub status: &'a AppConsentStatus,
    /// What the organization's policy allows the app (`super::policy`), and
    /// what to tell the namespace when it allows nothing.
    pub allowance: Allowance,
    pub refusal: Option<String>,
}

/// What the consent's status should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub condition: DesiredCondition,
    /// The Client ID the consent is bound to (kept once bound).
    pub client_id: Option<String>,
    pub display_name: Option<String>,
    pub granted_scopes: Vec<String>,
    pub pending_scopes: Vec<String>,
    pub held_scopes: Vec<String>,
}

impl Evaluation {
    /// Not granted. The binding and the scopes accepted so far are kept, so a
    /// consent that becomes visible again comes back as it was; they are in
    /// force only while `Granted` is True.
    fn denied(status: &AppConsentStatus, reason: &'static str, message: String) -> Self {
        Evaluation {
            condition: DesiredCondition::not_granted(reason, message),
            client_id: status.client_id.clone(),
            display_name: status.display_name.clone(),
            granted_scopes: status.granted_scopes.clone(),
            pending_scopes: status.pending_scopes.clone(),
            held_scopes: status.held_scopes.clone(),
        }
    }
}

/// The app was revoked: said in the same words while it is being deleted and
/// once it is gone, so its deletion changes each consent once (one status
/// write, one Event), not twice.
fn revoked(status: &AppConsentStatus, app_key: &str, client_id: &str) -> Evaluation {
    Evaluation::denied(
        status,
        reason::APP_REVOKED,
        format!(
            "AppRegistration {app_key} (Client ID {client_id}) was revoked; delete this AppConsent (and create a new \
             one if the app is registered again)"
        ),
    )
}

fn list(scopes: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    scopes.into_iter().map(|s| s.as_ref().to_owned()).collect::<Vec<_>>().join(", ")
}

/// Evaluates a consent against its app (`None`: no such app).
pub fn evaluate(consent: &ConsentFacts<'_>, app: Option<&AppFacts<'_>>) -> Evaluation {
    let status = consent.status;
    let bound = status.client_id.as_deref();
    let Some(app) = app else {
        return match bound {
            Some(id) => revoked(status, consent.app, id),
            None => Evaluation::denied(status, reason::APP_NOT_FOUND, "no such AppRegistration".to_owned()),
        };
    };
    let app_key = format!("{}/{}", app.namespace, app.name);
    // Visibility first: of an app this namespace may not see, it learns nothing
    // (no Client ID, no display name, not whether it is being deleted).
    if !visible_to(app.scope, app.namespace, app.organization, consent.namespace, consent.organization) {
        return Evaluation::denied(
            status,
            reason::NOT_VISIBLE,
            format!(
                "AppRegistration {app_key} is not visible to namespace {} (organization {}): only Organization apps \
                 of this organization and Global apps are; ask the app's owners to share it",
                consent.namespace, consent.organization
            ),
        );
    }
    if app.deleting {
        return revoked(status, &app_key, bound.or(app.client_id).unwrap_or("none"));
    }
    let Some(client_id) = app.client_id else {
        return Evaluation::denied(
            status,
            reason::APP_NOT_FOUND,
            format!("AppRegistration {app_key} has no Client ID yet; the consent is evaluated again once it has"),
        );
    };
    if let Some(id) = bound
        && id != client_id
    {
        return Evaluation::denied(
            status,
            reason::APP_REVOKED,
            format!(
                "this consent was granted to Client ID {id}, which was revoked; AppRegistration {app_key} is a new app \
                 (Client ID {client_id}): delete this AppConsent and create a new one to consent to it"
            ),
        );
    }

    let offered: BTreeSet<&str> = app.oauth_scopes.iter().map(String::as_str).collect();
    // What the organization's policy lets this namespace be granted.
    let allowed: BTreeSet<&str> = match &consent.allowance {
        Allowance::Refused => {
            let message = consent.refusal.clone().unwrap_or_else(|| "the organization does not allow this app".into());
            return Evaluation::denied(status, reason::NOT_ALLOWLISTED, message);
        }
        Allowance::Switching if bound.is_none() => {
            return Evaluation::denied(
                status,
                reason::POLICY_PENDING,
                format!(
                    "organization {} is switching to Restricted; registrar grants nothing new until the policy is in \
                     force (its status says Restricted), then evaluates this consent again",
                    consent.organization
                ),
            );
        }
        // What was granted stays granted until the switch records it.
        Allowance::Switching => {
            offered.iter().copied().filter(|s| status.granted_scopes.iter().any(|g| g == s)).collect()
        }
        Allowance::Unpinned => offered.clone(),
        Allowance::Pinned(pinned) => offered.iter().copied().filter(|s| pinned.contains(*s)).collect(),
    };
    let previously_granted: Option<BTreeSet<&str>> =
        bound.map(|_| status.granted_scopes.iter().map(String::as_str).collect());
    let (granted, pending, held, note): (BTreeSet<&str>, BTreeSet<&str>, BTreeSet<&str>, Option<String>) =
        match consent.requested_scopes {
            Some(requested) => {
                let requested: BTreeSet<&str> = requested.iter().map(String::as_str).collect();
                let previous = previously_granted.clone().unwrap_or_default();
                // Asked for but not offered: either granted once and since dropped
                // by the app (the grant shrinks), or never offered (a mismatch).
                let (dropped, unknown): (Vec<&str>, Vec<&str>) =
                    requested.difference(&offered).copied().partition(|scope| previous.contains(scope));
                if !unknown.is_empty() {
                    return Evaluation::denied(
                        status,
                        reason::SCOPE_MISMATCH,
                        format!(
                            "AppRegistration {app_key} does not offer {}; it offers: {}",
                            list(&unknown),
                            if offered.is_empty() { "no scopes".to_owned() } else { list(&offered) }
                        ),
                    );
                }
                let granted: BTreeSet<&str> = requested.intersection(&allowed).copied().collect();
                let held: BTreeSet<&str> =
                    requested.intersection(&offered).copied().filter(|s| !allowed.contains(s)).collect();
                // An explicit list is the namespace's choice: nothing is pending.
                let note = (!dropped.is_empty()).then(|| format!("; no longer offered by the app: {}", list(&dropped)));
                (granted, BTreeSet::new(), held, note)
            }
            None => {
                let held: BTreeSet<&str> = offered.difference(&allowed).copied().collect();
                match previously_granted {
                    // Default consent: what was granted stays granted while offered
                    // (and allowed); scopes the app adds later wait for this
                    // namespace to accept them.
                    Some(previous) => {
                        let granted: BTreeSet<&str> = previous.intersection(&allowed).copied().collect();
                        let pending: BTreeSet<&str> = allowed.difference(&granted).copied().collect();
                        (granted, pending, held, None)
                    }
                    None => (allowed.clone(), BTreeSet::new(), held, None),
                }
            }
        };
    let mut message = format!("Client ID {client_id} of {app_key} is enabled in this namespace");
    if granted.is_empty() {
        message.push_str(" with no API scopes");
    } else {
        message.push_str(&format!(" with scopes {}", list(&granted)));
    }
    if !pending.is_empty() {
        message.push_str(&format!(
            "; new scopes pending: {} (list them in spec.oauthScopes to accept them)",
            list(&pending)
        ));
    }
    if !held.is_empty() {
        message.push_str(&format!(
            "; held until organization {} allowlists them: {}",
            consent.organization,
            list(&held)
        ));
    }
    if let Some(note) = note {
        message.push_str(&note);
    }
    Evaluation {
        condition: DesiredCondition::granted(reason::GRANTED, message),
        client_id: Some(client_id.to_owned()),
        display_name: Some(app.display_name.to_owned()),
        granted_scopes: granted.into_iter().map(str::to_owned).collect(),
        pending_scopes: pending.into_iter().map(str::to_owned).collect(),
        held_scopes: held.into_iter().map(str::to_owned).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::GRANTED;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    const DEFAULT_ORG: &str = "default-org";
    const ORG: &str = "acme";
    const OTHER_ORG: &str = "globex";
    const APP_NS: &str = "team-a";
    const APP_NAME: &str = "billing";
    const APP_KEY: &str = "team-a/billing";
    const CONSENT_NS: &str = "team-b";
    const CLIENT: &str = "client-1111";
    const NEW_CLIENT: &str = "client-2222";
    const DISPLAY: &str = "Billing";

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    /// An issued Organization app in `team-a` of `acme`, offering `offered`.
    fn app(offered: &[String]) -> AppFacts<'_> {
        AppFacts {
            namespace: APP_NS,
            name: APP_NAME,
            organization: ORG,
            scope: Scope::Organization,
            display_name: DISPLAY,
            client_id: Some(CLIENT),
            oauth_scopes: offered,
            deleting: false,
        }
    }

    /// A consent in `team-b` of `acme`.
    fn consent<'a>(requested: Option<&'a [String]>, status: &'a AppConsentStatus) -> ConsentFacts<'a> {
        ConsentFacts {
            namespace: CONSENT_NS,
            app: APP_KEY,
            organization: ORG,
            requested_scopes: requested,
            status,
            allowance: Allowance::Unpinned,
            refusal: None,
        }
    }

    /// Never granted: an empty status.
    fn unbound() -> AppConsentStatus {
        AppConsentStatus::default()
    }

    /// Bound to `client_id` with `granted` scopes, as a previous grant leaves it.
    fn bound(client_id: &str, granted: &[&str]) -> AppConsentStatus {
        AppConsentStatus {
            app: Some(APP_KEY.to_owned()),
            client_id: Some(client_id.to_owned()),
            display_name: Some(DISPLAY.to_owned()),
            granted_scopes: scopes(granted),
            ..AppConsentStatus::default()
        }
    }

    /// `bound`, with `pending` scopes waiting for acceptance.
    fn bound_with_pending(client_id: &str, granted: &[&str], pending: &[&str]) -> AppConsentStatus {
        AppConsentStatus { pending_scopes: scopes(pending), ..bound(client_id, granted) }
    }

    /// The status a controller would write from `evaluation` (condition omitted).
    fn status_after(evaluation: &Evaluation) -> AppConsentStatus {
        AppConsentStatus {
            app: Some(APP_KEY.to_owned()),
            client_id: evaluation.client_id.clone(),
            display_name: evaluation.display_name.clone(),
            granted_scopes: evaluation.granted_scopes.clone(),
            pending_scopes: evaluation.pending_scopes.clone(),
            ..AppConsentStatus::default()
        }
    }

    fn assert_granted(e: &Evaluation) {
        assert_eq!(e.condition.type_, GRANTED);
        assert!(e.condition.status, "expected Granted, got {:?}", e.condition);
        assert_eq!(e.condition.reason, reason::GRANTED);
    }

    fn assert_denied(e: &Evaluation, expected_reason: &str) {
        assert_eq!(e.condition.type_, GRANTED);
        assert!(!e.condition.status, "expected not granted, got {:?}", e.condition);
        assert_eq!(e.condition.reason, expected_reason, "{}", e.condition.message);
    }

    /// A denial carries the status' binding and scopes over unchanged.
    fn assert_keeps(e: &Evaluation, status: &AppConsentStatus) {
        assert_eq!(e.client_id, status.client_id);
        assert_eq!(e.display_name, status.display_name);
        assert_eq!(e.granted_scopes, status.granted_scopes);
        assert_eq!(e.pending_scopes, status.pending_scopes);
    }

    // visible_to

    #[test]
    fn group_app_is_visible_only_in_its_own_namespace() {
        assert!(visible_to(Scope::Group, APP_NS, ORG, APP_NS, ORG));
        assert!(!visible_to(Scope::Group, APP_NS, ORG, CONSENT_NS, ORG), "not even in the same organization");
        assert!(!visible_to(Scope::Group, APP_NS, ORG, CONSENT_NS, OTHER_ORG));
    }

    #[test]
    fn organization_app_is_visible_in_its_own_namespace() {
        assert!(visible_to(Scope::Organization, APP_NS, ORG, APP_NS, ORG));
    }

    #[test]
    fn organization_app_is_visible_in_namespaces_of_the_same_organization() {
        assert!(visible_to(Scope::Organization, APP_NS, ORG, CONSENT_NS, ORG));
        assert!(visible_to(Scope::Organization, APP_NS, DEFAULT_ORG, CONSENT_NS, DEFAULT_ORG));
    }

    #[test]
    fn organization_app_is_not_visible_in_other_organizations() {
        assert!(!visible_to(Scope::Organization, APP_NS, ORG, CONSENT_NS, OTHER_ORG));
        assert!(!visible_to(Scope::Organization, APP_NS, ORG, CONSENT_NS, DEFAULT_ORG));
    }

    #[test]
    fn global_app_is_visible_everywhere() {
        assert!(visible_to(Scope::Global, APP_NS, ORG, APP_NS, ORG));
        assert!(visible_to(Scope::Global, APP_NS, ORG, CONSENT_NS, ORG));
        assert!(visible_to(Scope::Global, APP_NS, ORG, CONSENT_NS, OTHER_ORG));
    }

    // evaluate: the app is missing, deleting, not issued or replaced

    #[test]
    fn missing_app_never_bound_is_app_not_found() {
        let status = unbound();
        let e = evaluate(&consent(None, &status), None);
        assert_denied(&e, reason::APP_NOT_FOUND);
        assert_eq!(e.condition.message, "no such AppRegistration");
        assert_keeps(&e, &status);
        assert_eq!(e.client_id, None);
    }

    #[test]
    fn missing_app_once_bound_is_revoked_naming_the_old_client_id() {
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&consent(None, &status), None);
        assert_denied(&e, reason::APP_REVOKED);
        assert!(e.condition.message.contains(CLIENT), "{}", e.condition.message);
        assert_keeps(&e, &status);
    }

    #[test]
    fn deleting_app_is_revoked() {
        let offered = scopes(&["read"]);
        let deleting = AppFacts { deleting: true, ..app(&offered) };
        let status = unbound();
        let e = evaluate(&consent(None, &status), Some(&deleting));
        assert_denied(&e, reason::APP_REVOKED);
        assert!(e.condition.message.contains(APP_KEY), "{}", e.condition.message);
        assert!(e.condition.message.contains(CLIENT), "{}", e.condition.message);
        assert_keeps(&e, &status);
    }

    #[test]
    fn a_deleted_app_reads_as_revoked_in_the_words_used_while_it_was_being_deleted() {
        let offered = scopes(&["read"]);
        let deleting = AppFacts { deleting: true, ..app(&offered) };
        let status = bound(CLIENT, &["read"]);
        let while_deleting = evaluate(&consent(None, &status), Some(&deleting));
        let once_gone = evaluate(&consent(None, &status_after(&while_deleting)), None);
        assert_denied(&once_gone, reason::APP_REVOKED);
        // Nothing to write (nor announce) when the app finally goes.
        assert_eq!(once_gone, while_deleting);
        assert!(once_gone.condition.message.contains(APP_KEY), "{}", once_gone.condition.message);
    }

    #[test]
    fn deleting_app_revokes_a_bound_consent_naming_the_bound_client_id() {
        let offered = scopes(&["read"]);
        let deleting = AppFacts { deleting: true, client_id: Some(NEW_CLIENT), ..app(&offered) };
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&consent(None, &status), Some(&deleting));
        assert_denied(&e, reason::APP_REVOKED);
        assert!(e.condition.message.contains(CLIENT), "{}", e.condition.message);
        assert_keeps(&e, &status);
    }

    #[test]
    fn app_without_client_id_yet_is_app_not_found_saying_so() {
        let offered = scopes(&["read"]);
        let unissued = AppFacts { client_id: None, ..app(&offered) };
        let status = unbound();
        let e = evaluate(&consent(None, &status), Some(&unissued));
        assert_denied(&e, reason::APP_NOT_FOUND);
        assert!(e.condition.message.contains(APP_KEY), "{}", e.condition.message);
        assert!(e.condition.message.contains("no Client ID yet"), "{}", e.condition.message);
        assert_keeps(&e, &status);
    }

    #[test]
    fn bound_to_another_client_id_is_revoked_naming_both_and_keeping_the_binding() {
        let offered = scopes(&["read", "write"]);
        let new_app = AppFacts { client_id: Some(NEW_CLIENT), ..app(&offered) };
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&consent(None, &status), Some(&new_app));
        assert_denied(&e, reason::APP_REVOKED);
        assert!(e.condition.message.contains(CLIENT), "{}", e.condition.message);
        assert!(e.condition.message.contains(NEW_CLIENT), "{}", e.condition.message);
        assert!(e.condition.message.contains(APP_KEY), "{}", e.condition.message);
        assert_eq!(e.client_id.as_deref(), Some(CLIENT), "the binding never moves to the new app");
        assert_keeps(&e, &status);
    }

    #[test]
    fn visibility_is_reported_before_the_revocation_of_an_app_replaced_meanwhile() {
        let offered = scopes(&["read"]);
        let new_app = AppFacts { client_id: Some(NEW_CLIENT), ..app(&offered) };
        let status = bound(CLIENT, &["read"]);
        let elsewhere = ConsentFacts { organization: OTHER_ORG, ..consent(None, &status) };
        let e = evaluate(&elsewhere, Some(&new_app));
        assert_denied(&e, reason::NOT_VISIBLE);
        assert!(!e.condition.message.contains(NEW_CLIENT), "{}", e.condition.message);
        assert_keeps(&e, &status);
    }

    // evaluate: visibility

    #[test]
    fn group_app_from_another_namespace_is_not_visible() {
        let offered = scopes(&["read"]);
        let group_app = AppFacts { scope: Scope::Group, ..app(&offered) };
        let status = unbound();
        let e = evaluate(&consent(None, &status), Some(&group_app));
        assert_denied(&e, reason::NOT_VISIBLE);
        assert!(e.condition.message.contains(APP_KEY), "{}", e.condition.message);
        assert!(!e.condition.message.contains("Group"), "the app's scope is not told: {}", e.condition.message);
        assert_keeps(&e, &status);
    }

    #[test]
    fn group_app_in_its_own_namespace_is_granted() {
        let offered = scopes(&["read"]);
        let group_app = AppFacts { scope: Scope::Group, ..app(&offered) };
        let status = unbound();
        let own = ConsentFacts { namespace: APP_NS, ..consent(None, &status) };
        let e = evaluate(&own, Some(&group_app));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["read"]);
    }

    #[test]
    fn organization_app_from_another_organization_is_not_visible_naming_only_the_consents_organization() {
        let offered = scopes(&["read"]);
        let status = unbound();
        let elsewhere = ConsentFacts { organization: OTHER_ORG, ..consent(None, &status) };
        let e = evaluate(&elsewhere, Some(&app(&offered)));
        assert_denied(&e, reason::NOT_VISIBLE);
        assert!(e.condition.message.contains(APP_KEY), "{}", e.condition.message);
        assert!(e.condition.message.contains(OTHER_ORG), "{}", e.condition.message);
        assert!(!e.condition.message.contains(ORG), "the app's organization is not told: {}", e.condition.message);
        assert_keeps(&e, &status);
    }

    /// Of an app it may not see, a namespace learns nothing beyond NotVisible:
    /// not its Client ID or display name, not whether it is issued, replaced or
    /// being deleted.
    #[test]
    fn an_app_that_is_not_visible_reveals_nothing_in_any_state() {
        let offered = scopes(&["read"]);
        let states = [
            ("issued", app(&offered)),
            ("deleting", AppFacts { deleting: true, ..app(&offered) }),
            ("unissued", AppFacts { client_id: None, ..app(&offered) }),
            ("replaced", AppFacts { client_id: Some(NEW_CLIENT), ..app(&offered) }),
            ("deleting group app", AppFacts { scope: Scope::Group, deleting: true, ..app(&offered) }),
        ];
        for (state, facts) in states {
            let status = unbound();
            let elsewhere = ConsentFacts { organization: OTHER_ORG, ..consent(None, &status) };
            let e = evaluate(&elsewhere, Some(&facts));
            assert_denied(&e, reason::NOT_VISIBLE);
            assert_eq!((e.client_id.as_deref(), e.display_name.as_deref()), (None, None), "{state}");
            assert!(e.granted_scopes.is_empty() && e.pending_scopes.is_empty(), "{state}");
            for secret in [CLIENT, NEW_CLIENT, DISPLAY, ORG, "revoked", "Client ID"] {
                assert!(!e.condition.message.contains(secret), "{state}: {secret} in {}", e.condition.message);
            }
        }
    }

    #[test]
    fn global_app_is_granted_in_any_organization() {
        let offered = scopes(&["read"]);
        let global_app = AppFacts { scope: Scope::Global, ..app(&offered) };
        let status = unbound();
        let elsewhere = ConsentFacts { organization: OTHER_ORG, ..consent(None, &status) };
        let e = evaluate(&elsewhere, Some(&global_app));
        assert_granted(&e);
    }

    // evaluate: the first grant

    #[test]
    fn first_default_grant_accepts_every_offered_scope_sorted() {
        let offered = scopes(&["write", "read", "admin", "read"]);
        let status = unbound();
        let e = evaluate(&consent(None, &status), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["admin", "read", "write"]);
        assert!(e.pending_scopes.is_empty());
        assert_eq!(e.client_id.as_deref(), Some(CLIENT), "bound to the app's Client ID");
        assert_eq!(e.display_name.as_deref(), Some(DISPLAY));
        assert_eq!(
            e.condition.message,
            format!("Client ID {CLIENT} of {APP_KEY} is enabled in this namespace with scopes admin, read, write")
        );
    }

    #[test]
    fn first_default_grant_of_an_app_without_scopes_grants_no_api_scopes() {
        let offered = scopes(&[]);
        let status = unbound();
        let e = evaluate(&consent(None, &status), Some(&app(&offered)));
        assert_granted(&e);
        assert!(e.granted_scopes.is_empty());
        assert!(e.pending_scopes.is_empty());
        assert_eq!(e.client_id.as_deref(), Some(CLIENT));
        assert!(e.condition.message.ends_with("with no API scopes"), "{}", e.condition.message);
    }

    #[test]
    fn first_explicit_grant_grants_the_requested_subset() {
        let offered = scopes(&["admin", "read", "write"]);
        let requested = scopes(&["write", "read"]);
        let status = unbound();
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["read", "write"]);
        assert_eq!(e.client_id.as_deref(), Some(CLIENT));
        assert_eq!(e.display_name.as_deref(), Some(DISPLAY));
        assert!(e.condition.message.contains("with scopes read, write"), "{}", e.condition.message);
        assert!(!e.condition.message.contains("admin"), "{}", e.condition.message);
    }

    #[test]
    fn first_explicit_grant_of_an_empty_list_grants_no_api_scopes() {
        let offered = scopes(&["read"]);
        let requested = scopes(&[]);
        let status = unbound();
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert_granted(&e);
        assert!(e.granted_scopes.is_empty());
        assert_eq!(e.client_id.as_deref(), Some(CLIENT));
        assert!(e.condition.message.ends_with("with no API scopes"), "{}", e.condition.message);
    }

    #[test]
    fn first_explicit_grant_of_an_unoffered_scope_is_scope_mismatch() {
        let offered = scopes(&["write", "read"]);
        let requested = scopes(&["read", "delete"]);
        let status = unbound();
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert_denied(&e, reason::SCOPE_MISMATCH);
        assert_eq!(
            e.condition.message,
            format!("AppRegistration {APP_KEY} does not offer delete; it offers: read, write")
        );
        assert_keeps(&e, &status);
        assert_eq!(e.client_id, None, "a mismatch does not bind");
    }

    #[test]
    fn scope_mismatch_against_an_app_without_scopes_says_it_offers_none() {
        let offered = scopes(&[]);
        let requested = scopes(&["read"]);
        let status = unbound();
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert_denied(&e, reason::SCOPE_MISMATCH);
        assert!(e.condition.message.contains("does not offer read"), "{}", e.condition.message);
        assert!(e.condition.message.ends_with("it offers: no scopes"), "{}", e.condition.message);
    }

    // evaluate: the app's scopes change after the grant

    #[test]
    fn narrowed_app_shrinks_a_default_grant_to_the_intersection() {
        let offered = scopes(&["read"]);
        let status = bound(CLIENT, &["read", "write"]);
        let e = evaluate(&consent(None, &status), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["read"]);
        assert!(e.pending_scopes.is_empty());
        assert_eq!(e.client_id.as_deref(), Some(CLIENT));
        assert!(!e.condition.message.contains("write"), "{}", e.condition.message);
    }

    #[test]
    fn narrowed_app_with_explicit_consent_grants_the_intersection_and_notes_what_is_no_longer_offered() {
        let offered = scopes(&["read"]);
        let requested = scopes(&["read", "write"]);
        let status = bound(CLIENT, &["read", "write"]);
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["read"]);
        assert!(e.pending_scopes.is_empty());
        assert!(
            e.condition.message.ends_with("with scopes read; no longer offered by the app: write"),
            "{}",
            e.condition.message
        );
    }

    #[test]
    fn widened_app_leaves_a_default_grant_unchanged_with_the_new_scopes_pending() {
        let offered = scopes(&["read", "write", "admin"]);
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&consent(None, &status), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["read"]);
        assert_eq!(e.pending_scopes, ["admin", "write"]);
        assert!(e.condition.message.contains("with scopes read;"), "{}", e.condition.message);
        assert!(e.condition.message.contains("new scopes pending: admin, write"), "{}", e.condition.message);
    }

    #[test]
    fn widened_app_with_explicit_consent_listing_the_new_scope_grows_the_grant() {
        let offered = scopes(&["read", "admin"]);
        let requested = scopes(&["read", "admin"]);
        let status = bound_with_pending(CLIENT, &["read"], &["admin"]);
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["admin", "read"]);
        assert!(e.pending_scopes.is_empty());
        assert!(!e.condition.message.contains("pending"), "{}", e.condition.message);
    }

    #[test]
    fn a_granted_evaluation_is_stable_when_fed_back() {
        let offered = scopes(&["read", "write"]);
        let status = bound(CLIENT, &["read"]);
        let first = evaluate(&consent(None, &status), Some(&app(&offered)));
        let next_status = status_after(&first);
        let second = evaluate(&consent(None, &next_status), Some(&app(&offered)));
        assert_eq!(first, second);
    }

    #[test]
    fn a_bound_consent_is_not_re_granted_scopes_the_app_dropped_and_added_back() {
        // Narrowed, then widened again: the dropped scope comes back as pending.
        let narrowed = scopes(&["read"]);
        let status = bound(CLIENT, &["read", "write"]);
        let after_narrowing = status_after(&evaluate(&consent(None, &status), Some(&app(&narrowed))));
        let widened = scopes(&["read", "write"]);
        let e = evaluate(&consent(None, &after_narrowing), Some(&app(&widened)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, ["read"]);
        assert_eq!(e.pending_scopes, ["write"]);
    }

    // evaluate: denials keep what was granted

    #[test]
    fn a_denied_evaluation_keeps_the_binding_and_the_scopes() {
        let offered = scopes(&["read", "write", "admin"]);
        let status = bound_with_pending(CLIENT, &["read", "write"], &["admin"]);
        let elsewhere = ConsentFacts { organization: OTHER_ORG, ..consent(None, &status) };
        let e = evaluate(&elsewhere, Some(&app(&offered)));
        assert_denied(&e, reason::NOT_VISIBLE);
        assert_keeps(&e, &status);
    }

    #[test]
    fn relabelling_back_restores_the_same_grant() {
        let offered = scopes(&["read", "write", "admin"]);
        let status = bound(CLIENT, &["read", "write"]);
        let granted = evaluate(&consent(None, &status), Some(&app(&offered)));
        assert_granted(&granted);
        assert_eq!(granted.pending_scopes, ["admin"]);

        // The consuming namespace moves to another organization...
        let granted_status = status_after(&granted);
        let moved = ConsentFacts { organization: OTHER_ORG, ..consent(None, &granted_status) };
        let denied = evaluate(&moved, Some(&app(&offered)));
        assert_denied(&denied, reason::NOT_VISIBLE);

        // ...and back.
        let denied_status = status_after(&denied);
        let restored = evaluate(&consent(None, &denied_status), Some(&app(&offered)));
        assert_eq!(restored, granted);
    }

    #[test]
    fn messages_contain_only_names_ids_scopes_and_organizations() {
        const LEAKS: [&str; 5] = ["LEAK-APP", "LEAK-DISPLAY", "LEAK-CONDITION", "LEAK-REASON", "4242"];
        let leaky = |client_id: Option<&str>, granted: &[&str]| AppConsentStatus {
            app: Some("LEAK-APP".to_owned()),
            client_id: client_id.map(str::to_owned),
            display_name: Some("LEAK-DISPLAY".to_owned()),
            granted_scopes: scopes(granted),
            pending_scopes: scopes(&[]),
            held_scopes: scopes(&[]),
            grant: None,
            observed_generation: Some(4242),
            conditions: vec![Condition {
                type_: GRANTED.to_owned(),
                status: "True".to_owned(),
                reason: "LEAK-REASON".to_owned(),
                message: "LEAK-CONDITION".to_owned(),
                observed_generation: Some(4242),
                last_transition_time: Time(Timestamp::from_second(0).unwrap()),
            }],
        };
        let unbound = leaky(None, &[]);
        let bound = leaky(Some(CLIENT), &["read"]);
        let offered = scopes(&["read", "write"]);
        let narrowed = scopes(&["write"]);
        let requested = scopes(&["read", "delete"]);
        let base = app(&offered);
        let deleting = AppFacts { deleting: true, ..app(&offered) };
        let unissued = AppFacts { client_id: None, ..app(&offered) };
        let replaced = AppFacts { client_id: Some(NEW_CLIENT), ..app(&offered) };
        let group = AppFacts { scope: Scope::Group, ..app(&offered) };
        let narrowed_app = app(&narrowed);
        let here = |status| consent(None, status);
        let elsewhere = |status| ConsentFacts { organization: OTHER_ORG, ..consent(None, status) };
        let explicit = |status| consent(Some(&requested), status);

        let cases: Vec<(&str, Evaluation)> = vec![
            ("missing, unbound", evaluate(&here(&unbound), None)),
            ("missing, bound", evaluate(&here(&bound), None)),
            ("deleting", evaluate(&here(&bound), Some(&deleting))),
            ("unissued", evaluate(&here(&bound), Some(&unissued))),
            ("replaced", evaluate(&here(&bound), Some(&replaced))),
            ("group elsewhere", evaluate(&here(&unbound), Some(&group))),
            ("organization elsewhere", evaluate(&elsewhere(&bound), Some(&base))),
            ("mismatch", evaluate(&explicit(&unbound), Some(&base))),
            ("first grant", evaluate(&here(&unbound), Some(&base))),
            ("pending", evaluate(&here(&bound), Some(&base))),
            ("narrowed explicit", evaluate(&explicit(&bound), Some(&narrowed_app))),
        ];
        let mut reasons = BTreeSet::new();
        for (case, e) in &cases {
            let message = &e.condition.message;
            reasons.insert(e.condition.reason);
            assert!(!message.is_empty(), "{case}: empty message");
            for leak in LEAKS {
                assert!(!message.contains(leak), "{case}: {leak} leaked into {message:?}");
            }
            for debug in ["Some(", "None", "[", "]", "\"", "{", "}"] {
                assert!(!message.contains(debug), "{case}: debug formatting {debug:?} in {message:?}");
            }
        }
        assert_eq!(reasons.len(), 5, "every reason was exercised: {reasons:?}");
    }

    /// A bound consent that lists a scope the app never offered (a typo, say)
    /// is told that scope is "no longer offered by the app", which is false:
    /// it was never offered nor granted.
    #[test]
    fn bound_explicit_consent_does_not_call_a_never_offered_scope_no_longer_offered() {
        let offered = scopes(&["read"]);
        let requested = scopes(&["read", "delete"]);
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&consent(Some(&requested), &status), Some(&app(&offered)));
        assert!(
            !e.condition.message.contains("no longer offered by the app: delete"),
            "delete was never offered: {}",
            e.condition.message
        );
    }

    // Organization policy: pinned and refused allowances.

    fn pinned(allowed: &[&str]) -> Allowance {
        Allowance::Pinned(allowed.iter().map(|s| (*s).to_owned()).collect())
    }

    fn under<'a>(c: ConsentFacts<'a>, allowance: Allowance) -> ConsentFacts<'a> {
        ConsentFacts { allowance, ..c }
    }

    #[test]
    fn a_pinned_default_consent_keeps_its_scopes_and_holds_the_new_ones() {
        // Granted read when the app offered read; the app now also offers write,
        // which the allowlist does not list.
        let offered = scopes(&["read", "write"]);
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&under(consent(None, &status), pinned(&["read"])), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!(e.granted_scopes, scopes(&["read"]));
        assert_eq!(e.pending_scopes, scopes(&[]), "held scopes are not pending: the namespace cannot accept them");
        assert_eq!(e.held_scopes, scopes(&["write"]));
        assert!(
            e.condition.message.contains("held until organization acme allowlists them: write"),
            "{}",
            e.condition.message
        );

        // A new consent gets what the allowlist allows, and the rest is held.
        let fresh = unbound();
        let e = evaluate(&under(consent(None, &fresh), pinned(&["read"])), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!((e.granted_scopes, e.held_scopes), (scopes(&["read"]), scopes(&["write"])));

        // Once the entry lists write, it is pending for the existing consent
        // (the namespace accepts it, as any scope an app adds).
        let e = evaluate(&under(consent(None, &status), pinned(&["read", "write"])), Some(&app(&offered)));
        assert_eq!(
            (e.granted_scopes, e.pending_scopes, e.held_scopes),
            (scopes(&["read"]), scopes(&["write"]), scopes(&[]))
        );
    }

    #[test]
    fn a_pinned_explicit_consent_is_granted_what_is_allowed_and_told_what_is_held() {
        let offered = scopes(&["read", "write"]);
        let requested = scopes(&["read", "write"]);
        let status = unbound();
        let e = evaluate(&under(consent(Some(&requested), &status), pinned(&["read"])), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!((e.granted_scopes, e.held_scopes), (scopes(&["read"]), scopes(&["write"])));
    }

    #[test]
    fn an_app_that_drops_scopes_under_a_pin_needs_nothing() {
        let offered = scopes(&["read"]);
        let status = bound(CLIENT, &["read", "write"]);
        let e = evaluate(&under(consent(None, &status), pinned(&["read", "write"])), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!((e.granted_scopes, e.pending_scopes, e.held_scopes), (scopes(&["read"]), scopes(&[]), scopes(&[])));
    }

    #[test]
    fn a_refused_app_is_not_allowlisted_with_the_policy_message_and_keeps_the_binding() {
        let offered = scopes(&["read"]);
        let status = bound(CLIENT, &["read"]);
        let facts = ConsentFacts {
            refusal: Some("ask your organization admin".to_owned()),
            ..under(consent(None, &status), Allowance::Refused)
        };
        let e = evaluate(&facts, Some(&app(&offered)));
        assert_denied(&e, reason::NOT_ALLOWLISTED);
        assert_eq!(e.condition.message, "ask your organization admin");
        assert_keeps(&e, &status);
    }

    #[test]
    fn during_a_switch_to_restricted_nothing_new_is_granted_and_grants_stay() {
        let offered = scopes(&["read", "write"]);
        let status = unbound();
        let e = evaluate(&under(consent(None, &status), Allowance::Switching), Some(&app(&offered)));
        assert_denied(&e, reason::POLICY_PENDING);
        assert!(e.condition.message.contains("switching to Restricted"), "{}", e.condition.message);
        let status = bound(CLIENT, &["read"]);
        let e = evaluate(&under(consent(None, &status), Allowance::Switching), Some(&app(&offered)));
        assert_granted(&e);
        assert_eq!((e.granted_scopes, e.pending_scopes), (scopes(&["read"]), scopes(&[])));
    }

    #[test]
    fn visibility_and_revocation_come_before_the_policy() {
        let offered = scopes(&["read"]);
        let status = unbound();
        let foreign = AppFacts { organization: OTHER_ORG, ..app(&offered) };
        let e = evaluate(&under(consent(None, &status), Allowance::Refused), Some(&foreign));
        assert_denied(&e, reason::NOT_VISIBLE);
        let deleting = AppFacts { deleting: true, ..app(&offered) };
        let e = evaluate(&under(consent(None, &status), Allowance::Refused), Some(&deleting));
        assert_denied(&e, reason::APP_REVOKED);
    }
}
