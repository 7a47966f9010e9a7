//! An organization's policy over the apps its namespaces may consent to
//! (`OrganizationPolicy`), as consents and the registry apply it: pure rules.
//!
//! Unrestricted (the default) allows what visibility allows. Restricted allows
//! an app that is internal (registered in a namespace of the organization)
//! while auto-approval is on — with every scope it offers — or one on the
//! allowlist, or a consent granted when the organization switched to
//! Restricted (grandfathered) — each with the scopes listed there: scopes
//! pinned, more wait until listed.

use std::collections::BTreeSet;

use crate::{
    api::{AllowlistEntry, Grant, OrganizationPolicy, PolicyKind},
    credentials::seal::SealKey,
};

/// What the organization's policy allows an app, seen from one consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// Everything visibility allows (Unrestricted, or an internal app).
    Unpinned,
    /// Only these scopes (allowlisted or grandfathered); more stay held.
    Pinned(BTreeSet<String>),
    /// Nothing: the organization is Restricted and the app is neither.
    Refused,
    /// The organization asks to be Restricted, and registrar has not yet
    /// recorded the grants of the moment (the policy is not in force): what
    /// was granted stays granted (it will be recorded), nothing new is.
    Switching,
}

/// The organization's policy in force, as a consent (or the registry) sees it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyFacts<'a> {
    pub organization: &'a str,
    /// The policy object, if the organization has one.
    pub policy: Option<&'a OrganizationPolicy>,
    pub seal_key: &'a SealKey,
}

/// The app a consent points at, as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyApp<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub organization: &'a str,
    pub client_id: &'a str,
}

/// The reason of a policy's `Ready=False` when registrar refused a switch to
/// Restricted: more grants to keep than a policy holds.
pub const TOO_MANY_GRANTS: &str = "TooManyGrants";

/// Whether registrar refused `policy`'s switch to Restricted ([`TOO_MANY_GRANTS`]).
pub fn switch_refused(policy: &OrganizationPolicy) -> bool {
    policy.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == crate::api::conditions::READY && c.reason == TOO_MANY_GRANTS)
    })
}

impl PolicyFacts<'_> {
    /// The policy in force: Restricted only once registrar recorded the grants
    /// of the moment of the switch (status), so none is lost in between.
    pub fn restricted(&self) -> bool {
        self.policy.and_then(|p| p.status.as_ref()).and_then(|s| s.policy) == Some(PolicyKind::Restricted)
    }

    /// Restricted is asked for (spec) but not yet in force (status), and the
    /// switch was not refused (too many grants to keep: the organization then
    /// stays as it was): a consent granted now would be recorded as granted
    /// before the switch.
    pub fn switching(&self) -> bool {
        self.policy.is_some_and(|p| p.spec.policy == Some(PolicyKind::Restricted) && !switch_refused(p))
            && !self.restricted()
    }

    fn auto_approve_internal(&self) -> bool {
        self.policy.and_then(|p| p.spec.auto_approve_internal).unwrap_or(true)
    }

    /// The allowlist entry naming `app` (and its Client ID, when the entry pins one).
    pub fn allowlisted(&self, app: &PolicyApp<'_>) -> Option<&AllowlistEntry> {
        self.policy?.spec.allowlist.iter().find(|e| {
            e.app.namespace == app.namespace
                && e.app.name == app.name
                && e.client_id.as_deref().is_none_or(|id| id == app.client_id)
        })
    }

    /// The grant recorded for `consent` (`namespace/name`) to `app` at the
    /// switch, if registrar sealed it.
    pub fn grandfathered(&self, consent: &str, app: &PolicyApp<'_>) -> Option<&Grant> {
        let status = self.policy?.status.as_ref()?;
        let app_key = format!("{}/{}", app.namespace, app.name);
        status.grandfathered.iter().find(|g| {
            g.consent == consent
                && g.app == app_key
                && g.client_id == app.client_id
                && self.seal_key.verifies_grant(self.organization, g)
        })
    }

    /// What the policy allows `app` for `consent` (`namespace/name`; `None`:
    /// a namespace that has no consent, as the registry asks).
    pub fn allowance(&self, consent: Option<&str>, app: &PolicyApp<'_>) -> Allowance {
        if app.organization == self.organization && self.auto_approve_internal() {
            return Allowance::Unpinned;
        }
        if !self.restricted() {
            return if self.switching() { Allowance::Switching } else { Allowance::Unpinned };
        }
        let listed = self.allowlisted(app).map(|e| e.scopes.iter().cloned());
        let kept = consent.and_then(|c| self.grandfathered(c, app)).map(|g| g.scopes.iter().cloned());
        if listed.is_none() && kept.is_none() {
            return Allowance::Refused;
        }
        Allowance::Pinned(listed.into_iter().flatten().chain(kept.into_iter().flatten()).collect())
    }

    /// Why `app` is refused, and the one command that allowlists it with `scopes`.
    pub fn refusal(&self, app: &PolicyApp<'_>, scopes: &[&str], was_granted: bool) -> String {
        let internal = app.organization == self.organization;
        let why = if internal {
            "it is internal, but the organization does not auto-approve internal apps"
        } else {
            "it is not on the organization's allowlist"
        };
        let entry = serde_json::json!({
            "app": { "namespace": app.namespace, "name": app.name },
            "clientId": app.client_id,
            "scopes": scopes,
        });
        let has_list = self.policy.is_some_and(|p| !p.spec.allowlist.is_empty());
        let op = if has_list {
            serde_json::json!([{ "op": "add", "path": "/spec/allowlist/-", "value": entry }])
        } else {
            serde_json::json!([{ "op": "add", "path": "/spec/allowlist", "value": [entry] }])
        };
        let scope_words =
            if scopes.is_empty() { "no API scopes".to_owned() } else { format!("the scopes {}", scopes.join(", ")) };
        let revoked =
            if was_granted { "; this consent was granted before, and the organization revoked it" } else { "" };
        format!(
            "organization {org} is Restricted and does not allow app {ns}/{name} (Client ID {id}): {why}{revoked}. \
             Ask an administrator of organization {org} to allowlist it with {scope_words}: kubectl patch \
             organizationpolicy {org} --type=json -p '{op}'",
            org = self.organization,
            ns = app.namespace,
            name = app.name,
            id = app.client_id,
            op = serde_json::to_string(&op).unwrap_or_default(),
        )
    }
}

/// The grants to record when `organization` switches to Restricted: every
/// consent of its namespaces granted at that moment, sealed.
pub fn grant(
    key: &SealKey,
    organization: &str,
    consent: String,
    app: String,
    client_id: String,
    mut scopes: Vec<String>,
) -> Grant {
    scopes.sort();
    let mut grant = Grant { consent, app, client_id, scopes, seal: String::new() };
    grant.seal = key.seal_grant(organization, &grant);
    grant
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppRef, OrganizationPolicySpec, OrganizationPolicyStatus};

    const ORG: &str = "acme";

    fn key() -> SealKey {
        SealKey::from_bytes(&[3; 32]).unwrap()
    }

    fn policy(
        kind: PolicyKind,
        auto: Option<bool>,
        allowlist: Vec<AllowlistEntry>,
        grants: Vec<Grant>,
    ) -> OrganizationPolicy {
        let mut p = OrganizationPolicy::new(
            ORG,
            OrganizationPolicySpec { policy: Some(kind), auto_approve_internal: auto, allowlist, ..Default::default() },
        );
        p.status = Some(OrganizationPolicyStatus { policy: Some(kind), grandfathered: grants, ..Default::default() });
        p
    }

    fn external() -> PolicyApp<'static> {
        PolicyApp { namespace: "vendor", name: "crm", organization: "globex", client_id: "cid" }
    }

    fn internal() -> PolicyApp<'static> {
        PolicyApp { namespace: "team-a", name: "billing", organization: ORG, client_id: "cid2" }
    }

    fn entry(scopes: &[&str], client_id: Option<&str>) -> AllowlistEntry {
        AllowlistEntry {
            app: AppRef { namespace: "vendor".into(), name: "crm".into() },
            client_id: client_id.map(str::to_owned),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn pinned(scopes: &[&str]) -> Allowance {
        Allowance::Pinned(scopes.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn unrestricted_allows_everything_and_restricted_applies_only_once_in_force() {
        let key = key();
        let mut p = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Refused);
        // The switch is not in force until its grants are recorded; meanwhile
        // nothing new is granted (what was granted then stays).
        p.status.as_mut().unwrap().policy = Some(PolicyKind::Unrestricted);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Switching);
        assert_eq!(facts.allowance(Some("team-b/c"), &internal()), Allowance::Unpinned, "auto-approved internal");
        p.status = None;
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Switching);
        // A refused switch (too many grants to keep) leaves the organization as it was.
        let mut refused = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let status = refused.status.as_mut().unwrap();
        status.policy = Some(PolicyKind::Unrestricted);
        status.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: crate::api::conditions::READY.into(),
            status: "False".into(),
            reason: TOO_MANY_GRANTS.into(),
            message: "too many".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }];
        let facts = PolicyFacts { organization: ORG, policy: Some(&refused), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Unpinned);
        let unrestricted = policy(PolicyKind::Unrestricted, None, vec![], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&unrestricted), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Unpinned);
        let none = PolicyFacts { organization: ORG, policy: None, seal_key: &key };
        assert_eq!(none.allowance(Some("team-b/c"), &external()), Allowance::Unpinned);
    }

    #[test]
    fn internal_apps_are_approved_while_auto_approval_is_on() {
        let key = key();
        for (auto, expected) in
            [(None, Allowance::Unpinned), (Some(true), Allowance::Unpinned), (Some(false), Allowance::Refused)]
        {
            let p = policy(PolicyKind::Restricted, auto, vec![], vec![]);
            let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
            assert_eq!(facts.allowance(Some("team-b/c"), &internal()), expected, "{auto:?}");
        }
    }

    #[test]
    fn an_allowlist_entry_pins_the_scopes_and_its_client_id() {
        let key = key();
        let p = policy(PolicyKind::Restricted, None, vec![entry(&["read"], None)], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), pinned(&["read"]));
        let p = policy(PolicyKind::Restricted, None, vec![entry(&["read"], Some("other"))], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Refused, "pinned to another Client ID");
    }

    #[test]
    fn a_sealed_grant_keeps_its_consent_and_a_forged_one_grants_nothing() {
        let key = key();
        let kept =
            grant(&key, ORG, "team-b/c".into(), "vendor/crm".into(), "cid".into(), vec!["write".into(), "read".into()]);
        let p = policy(PolicyKind::Restricted, None, vec![], vec![kept.clone()]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), pinned(&["read", "write"]));
        assert_eq!(facts.allowance(Some("team-b/other"), &external()), Allowance::Refused, "another consent");
        assert_eq!(facts.allowance(None, &external()), Allowance::Refused, "a namespace without a consent");
        let forged = Grant { scopes: vec!["admin".into()], ..kept.clone() };
        let p = policy(PolicyKind::Restricted, None, vec![], vec![forged]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), Allowance::Refused);
        // Grants and the allowlist add up.
        let p = policy(PolicyKind::Restricted, None, vec![entry(&["admin"], None)], vec![kept]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some("team-b/c"), &external()), pinned(&["admin", "read", "write"]));
    }

    #[test]
    fn the_refusal_names_the_app_the_scopes_and_the_command() {
        let key = key();
        let p = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        let message = facts.refusal(&external(), &["read", "write"], false);
        for needle in [
            "organization acme is Restricted",
            "vendor/crm",
            "Client ID cid",
            "read, write",
            "kubectl patch organizationpolicy acme --type=json",
        ] {
            assert!(message.contains(needle), "{needle:?} in {message}");
        }
        assert!(
            message.contains(r#""path":"/spec/allowlist""#),
            "no allowlist yet: the first entry creates it: {message}"
        );
        let p = policy(PolicyKind::Restricted, None, vec![entry(&[], Some("x"))], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert!(facts.refusal(&external(), &[], true).contains(r#""path":"/spec/allowlist/-""#));
        assert!(facts.refusal(&external(), &[], true).contains("revoked"));
    }
}
