//! Who may see and use an app, and what a consent grants: pure rules.
//!
//! A namespace is a group; its organization is the value of its
//! `registrar.dev/organization` label, or the configured default organization.
//! A Group app is visible only in its own namespace, an Organization app in the
//! namespaces of the same organization, a Global app everywhere.

use std::collections::BTreeSet;

use crate::api::{
    AppConsentStatus, Scope,
    conditions::{DesiredCondition, consent_reason as reason},
};

/// The namespace label naming its organization.
pub const ORGANIZATION_LABEL: &str = "registrar.dev/organization";

/// The organization of a namespace with the given organization label value.
pub fn organization_of<'a>(label: Option<&'a str>, default_organization: &'a str) -> &'a str {
    label.filter(|l| !l.is_empty()).unwrap_or(default_organization)
}

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
    pub organization: &'a str,
    /// `spec.oauthScopes`; `None` accepts every scope offered at the first grant.
    pub requested_scopes: Option<&'a [String]>,
    pub status: &'a AppConsentStatus,
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
        }
    }
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
            Some(id) => Evaluation::denied(
                status,
                reason::APP_REVOKED,
                format!(
                    "the app with Client ID {id} was revoked; delete this AppConsent (and create a new one for a new app)"
                ),
            ),
            None => Evaluation::denied(status, reason::APP_NOT_FOUND, "no such AppRegistration".to_owned()),
        };
    };
    let app_key = format!("{}/{}", app.namespace, app.name);
    if app.deleting {
        let id = bound.or(app.client_id).unwrap_or("none");
        return Evaluation::denied(
            status,
            reason::APP_REVOKED,
            format!("AppRegistration {app_key} (Client ID {id}) was revoked; delete this AppConsent"),
        );
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
    if !visible_to(app.scope, app.namespace, app.organization, consent.namespace, consent.organization) {
        let why = match app.scope {
            Scope::Group => "a Group app is visible only in its own namespace".to_owned(),
            Scope::Organization => format!(
                "an Organization app is visible only in its organization {}; this namespace belongs to {}",
                app.organization, consent.organization
            ),
            Scope::Global => unreachable_global(),
        };
        return Evaluation::denied(
            status,
            reason::NOT_VISIBLE,
            format!("AppRegistration {app_key} is not visible here: {why}"),
        );
    }

    let offered: BTreeSet<&str> = app.oauth_scopes.iter().map(String::as_str).collect();
    let previously_granted: Option<BTreeSet<&str>> =
        bound.map(|_| status.granted_scopes.iter().map(String::as_str).collect());
    let (granted, pending, note): (BTreeSet<&str>, BTreeSet<&str>, Option<String>) = match consent.requested_scopes {
        Some(requested) => {
            let requested: BTreeSet<&str> = requested.iter().map(String::as_str).collect();
            let not_offered: Vec<&str> = requested.difference(&offered).copied().collect();
            if bound.is_none() && !not_offered.is_empty() {
                return Evaluation::denied(
                    status,
                    reason::SCOPE_MISMATCH,
                    format!(
                        "AppRegistration {app_key} does not offer {}; it offers: {}",
                        list(&not_offered),
                        if offered.is_empty() { "no scopes".to_owned() } else { list(&offered) }
                    ),
                );
            }
            let granted = requested.intersection(&offered).copied().collect();
            let note =
                (!not_offered.is_empty()).then(|| format!("; no longer offered by the app: {}", list(&not_offered)));
            (granted, BTreeSet::new(), note)
        }
        None => match previously_granted {
            // Default consent: what was granted stays granted while offered;
            // scopes the app adds later wait for this namespace to accept them.
            Some(previous) => {
                let granted: BTreeSet<&str> = previous.intersection(&offered).copied().collect();
                let pending: BTreeSet<&str> = offered.difference(&granted).copied().collect();
                (granted, pending, None)
            }
            None => (offered.clone(), BTreeSet::new(), None),
        },
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
    if let Some(note) = note {
        message.push_str(&note);
    }
    Evaluation {
        condition: DesiredCondition::granted(reason::GRANTED, message),
        client_id: Some(client_id.to_owned()),
        display_name: Some(app.display_name.to_owned()),
        granted_scopes: granted.into_iter().map(str::to_owned).collect(),
        pending_scopes: pending.into_iter().map(str::to_owned).collect(),
    }
}

fn unreachable_global() -> String {
    // visible_to is always true for Global.
    "a Global app is visible everywhere".to_owned()
}
