//! An organization's policy over the apps its namespaces may consent to
//! (`OrganizationPolicy`), as consents and the registry apply it: pure rules.
//!
//! Unrestricted (the default) allows what visibility allows. Restricted allows
//! an app that is internal (registered in a namespace of the organization)
//! while auto-approval is on — with every scope it offers — or one on the
//! allowlist, or to a consent granted without a break since before the switch
//! to Restricted (kept) — each with the scopes listed there or recorded on the
//! consent: scopes pinned, more wait until listed.
//!
//! What a consent was granted, and since when, is recorded on the consent
//! itself (`status.grant`, sealed by registrar and bound to that consent), so
//! a switch writes nothing per consent and keeps any number of them: a
//! consent's record stays as it is while its organization is Restricted (or
//! switching), follows its grant while Unrestricted, and goes when the grant
//! does.

use std::collections::BTreeSet;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp};

use crate::{
    api::{AllowlistEntry, ConsentGrant, Grant, OrganizationPolicy},
    credentials::seal::{ConsentOf, SealKey},
};

/// What the organization's policy allows an app, seen from one consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// Everything visibility allows (Unrestricted, or an internal app).
    Unpinned,
    /// Only these scopes (allowlisted or kept from before the switch); more
    /// stay held.
    Pinned(BTreeSet<String>),
    /// Nothing: the organization is Restricted and the app is neither.
    Refused,
    /// The organization asks to be Restricted and the policy is not in force
    /// yet: nothing new is granted (a consent with registrar's record of a
    /// grant keeps it: `Pinned`).
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

impl PolicyApp<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A consent as the policy sees it: which one, and the record of its grant
/// its status carries (proven only by registrar's seal).
#[derive(Clone, Copy, Debug)]
pub struct ConsentSeen<'a> {
    /// `namespace/name`.
    pub key: &'a str,
    pub uid: &'a str,
    pub grant: Option<&'a ConsentGrant>,
}

/// A timestamp as a record keeps it: whole microseconds (what `MicroTime`
/// writes), so a record reads back as it was sealed.
pub fn to_micro_time(ts: Timestamp) -> MicroTime {
    MicroTime(Timestamp::from_microsecond(ts.as_microsecond()).unwrap_or(ts))
}

impl PolicyFacts<'_> {
    /// The policy in force: Restricted only once registrar has put it in
    /// force (status), after the consents granted before had their records.
    pub fn restricted(&self) -> bool {
        self.policy.is_some_and(OrganizationPolicy::restricted_in_force)
    }

    /// Restricted is asked for (spec) but not yet in force (status): nothing
    /// new is granted meanwhile.
    pub fn switching(&self) -> bool {
        self.policy.is_some_and(OrganizationPolicy::switching_to_restricted)
    }

    fn auto_approve_internal(&self) -> bool {
        self.policy.and_then(|p| p.spec.auto_approve_internal).unwrap_or(true)
    }

    /// Whether `app` is internal and approved without an allowlist entry.
    pub fn covers_internally(&self, app: &PolicyApp<'_>) -> bool {
        app.organization == self.organization && self.auto_approve_internal()
    }

    /// The allowlist entry naming `app` (and its Client ID, when the entry pins one).
    pub fn allowlisted(&self, app: &PolicyApp<'_>) -> Option<&AllowlistEntry> {
        self.policy?.spec.allowlist.iter().find(|e| {
            e.app.namespace == app.namespace
                && e.app.name == app.name
                && e.client_id.as_deref().is_none_or(|id| id == app.client_id)
        })
    }

    /// Whether the organization revoked the consents kept for `app`.
    pub fn revoked(&self, app: &PolicyApp<'_>) -> bool {
        self.policy.is_some_and(|p| {
            p.spec.revoked.iter().any(|r| {
                r.app.namespace == app.namespace
                    && r.app.name == app.name
                    && r.client_id.as_deref().is_none_or(|id| id == app.client_id)
            })
        })
    }

    /// The consent's record of its grant of `app`, if registrar sealed it for
    /// this consent, this organization and the app's Client ID.
    pub fn recorded<'c>(&self, consent: &ConsentSeen<'c>, app: &PolicyApp<'_>) -> Option<&'c ConsentGrant> {
        let grant = consent.grant?;
        let app_key = app.key();
        let of = ConsentOf { consent: consent.key, uid: consent.uid, app: &app_key };
        (grant.organization == self.organization
            && grant.client_id == app.client_id
            && self.seal_key.verifies_consent_grant(&of, grant))
        .then_some(grant)
    }

    /// The grant recorded for `consent` (`namespace/name`) to `app` in the
    /// policy's status by registrar before consents carried their record, if
    /// registrar sealed it.
    pub fn grandfathered(&self, consent: &str, app: &PolicyApp<'_>) -> Option<&Grant> {
        let status = self.policy?.status.as_ref()?;
        let app_key = app.key();
        status.grandfathered.iter().find(|g| {
            g.consent == consent
                && g.app == app_key
                && g.client_id == app.client_id
                && self.seal_key.verifies_grant(self.organization, g)
        })
    }

    /// The scopes kept for `consent` from before the switch to Restricted: it
    /// has been granted without a break since before the policy came in force
    /// (or an earlier registrar recorded it in the policy's status), and the
    /// organization has not revoked the app.
    pub fn kept(&self, consent: &ConsentSeen<'_>, app: &PolicyApp<'_>) -> Option<BTreeSet<String>> {
        if !self.restricted() || self.revoked(app) {
            return None;
        }
        let restricted_at = self.policy?.status.as_ref()?.restricted_at.as_ref();
        let recorded = self
            .recorded(consent, app)
            .filter(|g| restricted_at.is_some_and(|at| g.since.0 < at.0))
            .map(|g| g.scopes.iter().cloned().collect());
        recorded.or_else(|| self.grandfathered(consent.key, app).map(|g| g.scopes.iter().cloned().collect()))
    }

    /// What the policy allows `app` for `consent` (`None`: a namespace that has
    /// no consent, as the registry asks).
    pub fn allowance(&self, consent: Option<&ConsentSeen<'_>>, app: &PolicyApp<'_>) -> Allowance {
        if self.covers_internally(app) {
            return Allowance::Unpinned;
        }
        if !self.restricted() {
            if !self.switching() {
                return Allowance::Unpinned;
            }
            // What registrar granted stays granted through the switch; nothing new is.
            return match consent.and_then(|c| self.recorded(c, app)) {
                Some(grant) => Allowance::Pinned(grant.scopes.iter().cloned().collect()),
                None => Allowance::Switching,
            };
        }
        let listed = self.allowlisted(app).map(|e| e.scopes.iter().cloned());
        let kept = consent.and_then(|c| self.kept(c, app));
        if listed.is_none() && kept.is_none() {
            return Allowance::Refused;
        }
        Allowance::Pinned(listed.into_iter().flatten().chain(kept.into_iter().flatten()).collect())
    }

    /// The record `consent` should carry when it is granted `granted` scopes
    /// of `app` now (`None`: not granted, and no record). A grant without a
    /// break keeps the moment it began; its scopes follow the grant while the
    /// organization is Unrestricted and stay as they are while it is
    /// Restricted or switching (they are what the switch keeps).
    pub fn record(
        &self,
        consent: &ConsentSeen<'_>,
        app: &PolicyApp<'_>,
        granted: Option<&[String]>,
        now: Timestamp,
    ) -> Option<ConsentGrant> {
        let granted = granted?;
        let mut scopes = granted.to_vec();
        scopes.sort();
        scopes.dedup();
        let previous = self.recorded(consent, app);
        if previous.is_none() && self.switching() && !self.covers_internally(app) {
            // Nothing new is granted while switching: a consent that shows a
            // grant without registrar's record (its status, which its
            // namespace may write) gets none, and the switch does not keep it.
            return None;
        }
        if let Some(previous) = previous
            && (previous.scopes == scopes || self.restricted() || self.switching())
        {
            return Some(previous.clone());
        }
        let mut grant = ConsentGrant {
            organization: self.organization.to_owned(),
            client_id: app.client_id.to_owned(),
            since: previous.map_or_else(|| to_micro_time(now), |p| p.since.clone()),
            scopes,
            seal: String::new(),
        };
        let app_key = app.key();
        grant.seal = self
            .seal_key
            .seal_consent_grant(&ConsentOf { consent: consent.key, uid: consent.uid, app: &app_key }, &grant);
        Some(grant)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppRef, OrganizationPolicySpec, OrganizationPolicyStatus, PolicyKind, RevokedApp};

    const ORG: &str = "acme";
    /// When the policy came in force in these tests (seconds since the epoch).
    const SWITCH: i64 = 1_800_000_000;

    fn key() -> SealKey {
        SealKey::from_bytes(&[3; 32]).unwrap()
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
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
        let restricted_at = (kind == PolicyKind::Restricted).then(|| to_micro_time(at(SWITCH)));
        p.status = Some(OrganizationPolicyStatus {
            policy: Some(kind),
            grandfathered: grants,
            restricted_at,
            ..Default::default()
        });
        p
    }

    /// The policy asked to be Restricted, not in force yet.
    fn switching() -> OrganizationPolicy {
        let mut p = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let status = p.status.as_mut().unwrap();
        status.policy = Some(PolicyKind::Unrestricted);
        status.restricted_at = None;
        p
    }

    fn unrestricted() -> OrganizationPolicy {
        policy(PolicyKind::Unrestricted, None, vec![], vec![])
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

    fn strings(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    fn seen(grant: Option<&ConsentGrant>) -> ConsentSeen<'_> {
        ConsentSeen { key: "team-b/c", uid: "uid-1", grant }
    }

    /// The record registrar writes for team-b/c granted `scopes` of the
    /// external app at `second` while the organization was Unrestricted.
    fn recorded_at(second: i64, scopes: &[&str]) -> ConsentGrant {
        let key = key();
        let p = unrestricted();
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        facts.record(&seen(None), &external(), Some(&strings(scopes)), at(second)).expect("a record")
    }

    #[test]
    fn unrestricted_allows_everything_and_restricted_applies_only_once_in_force() {
        let key = key();
        let p = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Refused);
        // Not in force until registrar says so; meanwhile nothing new is
        // granted, and what registrar granted stays.
        let p = switching();
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Switching);
        let grant = recorded_at(SWITCH - 60, &["read"]);
        assert_eq!(facts.allowance(Some(&seen(Some(&grant))), &external()), pinned(&["read"]));
        assert_eq!(facts.allowance(Some(&seen(None)), &internal()), Allowance::Unpinned, "auto-approved internal");
        let mut p = switching();
        p.status = None;
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Switching);
        let p = unrestricted();
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Unpinned);
        let none = PolicyFacts { organization: ORG, policy: None, seal_key: &key };
        assert_eq!(none.allowance(Some(&seen(None)), &external()), Allowance::Unpinned);
    }

    #[test]
    fn internal_apps_are_approved_while_auto_approval_is_on() {
        let key = key();
        for (auto, expected) in
            [(None, Allowance::Unpinned), (Some(true), Allowance::Unpinned), (Some(false), Allowance::Refused)]
        {
            let p = policy(PolicyKind::Restricted, auto, vec![], vec![]);
            let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
            assert_eq!(facts.allowance(Some(&seen(None)), &internal()), expected, "{auto:?}");
        }
    }

    #[test]
    fn an_allowlist_entry_pins_the_scopes_and_its_client_id() {
        let key = key();
        let p = policy(PolicyKind::Restricted, None, vec![entry(&["read"], None)], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), pinned(&["read"]));
        let p = policy(PolicyKind::Restricted, None, vec![entry(&["read"], Some("other"))], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Refused, "pinned to another Client ID");
    }

    #[test]
    fn a_consent_granted_since_before_the_switch_keeps_its_scopes_and_a_later_one_does_not() {
        let key = key();
        let p = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        let before = recorded_at(SWITCH - 1, &["write", "read"]);
        assert_eq!(before.scopes, ["read", "write"], "sorted");
        assert_eq!(facts.allowance(Some(&seen(Some(&before))), &external()), pinned(&["read", "write"]));
        // A microsecond before counts; the moment itself and after do not.
        let mut just = recorded_at(SWITCH, &["read"]);
        just.since = MicroTime(at(SWITCH) - k8s_openapi::jiff::SignedDuration::from_micros(1));
        let of = ConsentOf { consent: "team-b/c", uid: "uid-1", app: "vendor/crm" };
        just.seal = key.seal_consent_grant(&of, &just);
        assert_eq!(facts.allowance(Some(&seen(Some(&just))), &external()), pinned(&["read"]));
        let after = recorded_at(SWITCH, &["read"]);
        assert_eq!(facts.allowance(Some(&seen(Some(&after))), &external()), Allowance::Refused);
        // The registry's question for a namespace without a consent.
        assert_eq!(facts.allowance(None, &external()), Allowance::Refused);
        // Kept and allowlisted scopes add up.
        let p = policy(PolicyKind::Restricted, None, vec![entry(&["admin"], None)], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(Some(&before))), &external()), pinned(&["admin", "read", "write"]));
    }

    #[test]
    fn a_record_proves_nothing_for_another_consent_app_organization_or_client_id_or_once_changed() {
        let key = key();
        let p = policy(PolicyKind::Restricted, None, vec![], vec![]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        let grant = recorded_at(SWITCH - 60, &["read"]);
        let refused = |consent: ConsentSeen<'_>, app: PolicyApp<'_>| facts.allowance(Some(&consent), &app);
        // Copied to another consent, or to one recreated under the same name.
        assert_eq!(refused(ConsentSeen { key: "team-b/d", ..seen(Some(&grant)) }, external()), Allowance::Refused);
        assert_eq!(refused(ConsentSeen { uid: "uid-2", ..seen(Some(&grant)) }, external()), Allowance::Refused);
        assert_eq!(
            refused(seen(Some(&grant)), PolicyApp { name: "other", ..external() }),
            Allowance::Refused,
            "another app"
        );
        assert_eq!(
            refused(seen(Some(&grant)), PolicyApp { client_id: "new", ..external() }),
            Allowance::Refused,
            "the app's next Client ID"
        );
        // Edited: more scopes, an earlier moment, another organization.
        for edited in [
            ConsentGrant { scopes: strings(&["admin", "read"]), ..grant.clone() },
            ConsentGrant { since: to_micro_time(at(0)), ..grant.clone() },
            ConsentGrant { organization: "globex".into(), ..grant.clone() },
            ConsentGrant { seal: "v1.forged".into(), ..grant.clone() },
        ] {
            assert_eq!(refused(seen(Some(&edited)), external()), Allowance::Refused, "{edited:?}");
        }
        // Sealed under another key (a replaced key): nothing either.
        let other = SealKey::from_bytes(&[4; 32]).unwrap();
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &other };
        assert_eq!(facts.allowance(Some(&seen(Some(&grant))), &external()), Allowance::Refused);
    }

    #[test]
    fn a_record_keeps_its_beginning_follows_the_grant_while_unrestricted_and_stays_while_restricted() {
        let key = key();
        let u = unrestricted();
        let open = PolicyFacts { organization: ORG, policy: Some(&u), seal_key: &key };
        let first = recorded_at(100, &["read"]);
        let same = open.record(&seen(Some(&first)), &external(), Some(&strings(&["read"])), at(200)).unwrap();
        assert_eq!(same, first, "nothing changed: the same record, no write");
        let more = open.record(&seen(Some(&first)), &external(), Some(&strings(&["read", "write"])), at(200)).unwrap();
        assert_eq!((more.since.clone(), more.scopes.clone()), (first.since.clone(), strings(&["read", "write"])));
        assert!(open.recorded(&seen(Some(&more)), &external()).is_some(), "sealed again");
        assert_eq!(open.record(&seen(Some(&more)), &external(), None, at(300)), None, "not granted: no record");
        let fresh = open.record(&seen(None), &external(), Some(&strings(&["read"])), at(400)).unwrap();
        assert_eq!(fresh.since, to_micro_time(at(400)), "a new grant begins now");
        // A record of another Client ID (the app was replaced) begins again.
        let again = open
            .record(
                &seen(Some(&first)),
                &PolicyApp { client_id: "new", ..external() },
                Some(&strings(&["read"])),
                at(500),
            )
            .unwrap();
        assert_eq!((again.client_id.as_str(), again.since.clone()), ("new", to_micro_time(at(500))));
        // Switching and Restricted: the record stays as the switch found it.
        for p in [switching(), policy(PolicyKind::Restricted, None, vec![entry(&["admin"], None)], vec![])] {
            let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
            let kept = facts.record(&seen(Some(&more)), &external(), Some(&strings(&["admin", "read"])), at(600));
            assert_eq!(kept.as_ref(), Some(&more));
        }
        // Switching: a grant without a record (a status someone wrote) gets none.
        let p = switching();
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.record(&seen(None), &external(), Some(&strings(&["read"])), at(600)), None);
        assert!(facts.record(&seen(None), &internal(), Some(&strings(&["read"])), at(600)).is_some(), "internal");
    }

    #[test]
    fn a_revoked_app_keeps_nothing_but_its_allowlist_entry() {
        let key = key();
        let grant = recorded_at(SWITCH - 60, &["read"]);
        let legacy = grant_for_status();
        let mut p = policy(PolicyKind::Restricted, None, vec![], vec![legacy]);
        p.spec.revoked =
            vec![RevokedApp { app: AppRef { namespace: "vendor".into(), name: "crm".into() }, client_id: None }];
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(Some(&grant))), &external()), Allowance::Refused);
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Refused, "nor a status grant");
        p.spec.allowlist = vec![entry(&["admin"], None)];
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(Some(&grant))), &external()), pinned(&["admin"]));
        // Revoking another Client ID of the app leaves this one.
        p.spec.revoked[0].client_id = Some("old".into());
        p.spec.allowlist.clear();
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(Some(&grant))), &external()), pinned(&["read"]));
    }

    /// A grant as an earlier registrar kept it in the policy's status.
    fn grant_for_status() -> Grant {
        let mut grant = Grant {
            consent: "team-b/c".into(),
            app: "vendor/crm".into(),
            client_id: "cid".into(),
            scopes: vec!["read".into(), "write".into()],
            seal: String::new(),
        };
        grant.seal = key().seal_grant(ORG, &grant);
        grant
    }

    #[test]
    fn a_grant_an_earlier_registrar_sealed_in_the_policy_status_still_keeps_its_consent() {
        let key = key();
        let kept = grant_for_status();
        let p = policy(PolicyKind::Restricted, None, vec![], vec![kept.clone()]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), pinned(&["read", "write"]));
        let other = ConsentSeen { key: "team-b/other", ..seen(None) };
        assert_eq!(facts.allowance(Some(&other), &external()), Allowance::Refused, "another consent");
        let forged = Grant { scopes: vec!["admin".into()], ..kept };
        let p = policy(PolicyKind::Restricted, None, vec![], vec![forged]);
        let facts = PolicyFacts { organization: ORG, policy: Some(&p), seal_key: &key };
        assert_eq!(facts.allowance(Some(&seen(None)), &external()), Allowance::Refused);
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
