//! In-memory indexes fed by the watches, shared by the controllers and the
//! registry API: consents by app and by namespace, apps by namespace, and
//! the organization of every namespace. One change fans out to exactly the
//! objects it affects, without listing the cluster.
//!
//! The indexes are hints kept next to the reflector stores, which stay the
//! source of truth: an entry that outlived its object (deleted while a watch
//! was re-listing) is dropped by readers that look the object up.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use k8s_openapi::jiff::Timestamp;

use crate::{consent::visibility::organization_of, packed::Uid};

/// How many revoked Client IDs are remembered.
pub const MAX_REVOKED: usize = 100_000;

/// `(namespace, name)` of an object.
pub type Key = (String, String);

/// The indexes. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Index {
    default_organization: String,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The app each consent points at.
    consent_app: HashMap<Key, Key>,
    consents_by_app: HashMap<Key, HashSet<Key>>,
    consents_by_namespace: HashMap<String, HashSet<Key>>,
    apps_by_namespace: HashMap<String, HashSet<String>>,
    /// The app holding each Client ID, and the Client ID each app holds.
    app_by_client_id: HashMap<String, Holder>,
    client_id_of_app: HashMap<Key, String>,
    /// The first full list of apps was read: holders are settled.
    apps_listed: bool,
    /// Client IDs of deleted apps, most recent last (bounded): the registry
    /// answers "revoked" for them rather than "unknown".
    revoked: VecDeque<String>,
    revoked_set: HashSet<String>,
    /// The namespaces without an organization label (the default
    /// organization's), and those with one (its value).
    unlabelled: BTreeSet<String>,
    namespace_org: HashMap<String, String>,
    namespaces_by_org: HashMap<String, BTreeSet<String>>,
    /// A digest of what consents read of each organization's policy.
    policy_views: HashMap<String, u64>,
    /// A digest of what consents read of each app that has consents.
    app_views: HashMap<Key, u64>,
    /// Imported Client IDs an app is about to claim (decided, status not yet
    /// written): no other app may claim them meanwhile.
    reserved: HashMap<String, (Key, Uid)>,
    /// Client IDs kept by a sealed retention, and where: `(namespace, Secret)`.
    retained: HashMap<String, Key>,
    retained_by_secret: HashMap<Key, String>,
}

/// Whether an app may import a Client ID (`spec.clientId`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Import {
    /// Nobody has it: reserved for the app.
    Free,
    /// Kept by a retention in the app's own namespace, in this Secret:
    /// reserved for the app, which takes it over.
    Retained(String),
    /// Another app holds it (or is about to).
    Held(Key),
    /// Its app was deleted (revoked): never used again.
    Revoked,
    /// Kept by a retention in another namespace.
    RetainedElsewhere(String),
}

/// An app's claim on a Client ID: its status names it.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub client_id: &'a str,
    pub uid: &'a str,
    pub created: Option<Timestamp>,
    /// Its status carries registrar's seal of this Client ID for this app.
    pub proven: bool,
}

/// The app holding a Client ID.
#[derive(Debug)]
struct Holder {
    app: Key,
    uid: Uid,
    created: Option<Timestamp>,
    proven: bool,
}

impl Holder {
    /// Older first; an app without a creation time (never from a real
    /// apiserver) counts as newest.
    fn age(&self) -> (bool, Option<Timestamp>, Uid) {
        (self.created.is_none(), self.created, self.uid)
    }
}

impl Inner {
    fn is_holder(&self, client_id: &str, app: &Key, uid: Uid) -> bool {
        self.app_by_client_id.get(client_id).is_some_and(|h| h.app == *app && h.uid == uid)
    }

    /// `app` no longer holds `client_id`: it is revoked, never held again.
    fn release(&mut self, app: &Key, client_id: &str) {
        self.client_id_of_app.remove(app);
        if self.app_by_client_id.get(client_id).is_some_and(|h| h.app == *app) {
            self.app_by_client_id.remove(client_id);
        }
        if self.revoked_set.insert(client_id.to_owned()) {
            self.revoked.push_back(client_id.to_owned());
            if self.revoked.len() > MAX_REVOKED
                && let Some(oldest) = self.revoked.pop_front()
            {
                self.revoked_set.remove(&oldest);
            }
        }
    }
}

impl Index {
    pub fn new(default_organization: impl Into<String>) -> Self {
        Index { default_organization: default_organization.into(), inner: RwLock::default() }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every update leaves the maps consistent before it can panic.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The organization the operator assigns to namespaces without the label.
    pub fn default_organization(&self) -> &str {
        &self.default_organization
    }

    // === consents ===

    /// Records a consent (new or changed) and the app it points at.
    pub fn consent_applied(&self, consent: Key, app: Key) {
        let mut inner = self.write();
        if let Some(old) = inner.consent_app.insert(consent.clone(), app.clone())
            && old != app
            && let Some(set) = inner.consents_by_app.get_mut(&old)
        {
            set.remove(&consent);
            if set.is_empty() {
                inner.consents_by_app.remove(&old);
            }
        }
        inner.consents_by_app.entry(app).or_default().insert(consent.clone());
        inner.consents_by_namespace.entry(consent.0.clone()).or_default().insert(consent);
    }

    /// Forgets a deleted consent; returns the app it pointed at.
    pub fn consent_deleted(&self, consent: &Key) -> Option<Key> {
        let mut inner = self.write();
        let app = inner.consent_app.remove(consent)?;
        if let Some(set) = inner.consents_by_app.get_mut(&app) {
            set.remove(consent);
            if set.is_empty() {
                inner.consents_by_app.remove(&app);
            }
        }
        if let Some(set) = inner.consents_by_namespace.get_mut(&consent.0) {
            set.remove(consent);
            if set.is_empty() {
                inner.consents_by_namespace.remove(&consent.0);
            }
        }
        Some(app)
    }

    /// The consents pointing at an app.
    pub fn consents_of_app(&self, app: &Key) -> Vec<Key> {
        self.read().consents_by_app.get(app).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// The consents in a namespace.
    pub fn consents_in_namespace(&self, namespace: &str) -> Vec<Key> {
        self.read().consents_by_namespace.get(namespace).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    // === apps ===

    /// Records an app and the Client ID its status names (`None` before the
    /// first mint). Returns whether the app holds that Client ID.
    ///
    /// A Client ID belongs to one app, cluster-wide. A claim that registrar
    /// sealed (`status.clientIdSeal`) beats one it did not, whatever the order:
    /// a status written by anyone else never takes a Client ID from the app
    /// registrar issued it to. Between claims alike, the first app seen holds
    /// it and any other is refused for as long as this process runs; while the
    /// first list is read, the oldest (creation time, then UID) wins, so a
    /// restarted operator picks the same holder. A Client ID whose holder was
    /// deleted is never held again.
    pub fn app_applied(&self, app: &Key, claim: Option<Claim<'_>>) -> bool {
        let mut inner = self.write();
        inner.apps_by_namespace.entry(app.0.clone()).or_default().insert(app.1.clone());
        // The app (this incarnation of its name) let go of what it held before:
        // a Client ID never moves, so the old one is retired.
        if let Some(held) = inner.client_id_of_app.get(app).cloned()
            && claim.as_ref().is_none_or(|c| c.client_id != held || !inner.is_holder(&held, app, Uid::of(c.uid)))
        {
            inner.release(app, &held);
        }
        let Some(claim) = claim else { return false };
        let contender =
            Holder { app: app.clone(), uid: Uid::of(claim.uid), created: claim.created, proven: claim.proven };
        let holds = match inner.app_by_client_id.get(claim.client_id) {
            Some(holder) if holder.app == contender.app && holder.uid == contender.uid => true,
            Some(holder) if holder.proven != contender.proven => contender.proven,
            Some(holder) => !inner.apps_listed && contender.age() < holder.age(),
            None => !inner.revoked_set.contains(claim.client_id),
        };
        if holds {
            if inner.reserved.get(claim.client_id).is_some_and(|(k, _)| k == app) {
                inner.reserved.remove(claim.client_id);
            }
            if let Some(previous) = inner.app_by_client_id.insert(claim.client_id.to_owned(), contender)
                && previous.app != *app
            {
                inner.client_id_of_app.remove(&previous.app);
            }
            inner.client_id_of_app.insert(app.clone(), claim.client_id.to_owned());
        }
        holds
    }

    /// The first full list of apps is in: from now on a holder keeps its
    /// Client ID against any later claimant, older or not.
    pub fn apps_listed(&self) {
        self.write().apps_listed = true;
    }

    /// Forgets a deleted app; the Client ID it held is remembered as revoked,
    /// unless the app retained it (`deletionPolicy: Retain`: its retention
    /// decides).
    pub fn app_deleted(&self, app: &Key, retained: bool) {
        let mut inner = self.write();
        inner.reserved.retain(|_, (holder, _)| holder != app);
        if let Some(held) = inner.client_id_of_app.get(app).cloned() {
            if retained {
                inner.client_id_of_app.remove(app);
                if inner.app_by_client_id.get(&held).is_some_and(|h| h.app == *app) {
                    inner.app_by_client_id.remove(&held);
                }
            } else {
                inner.release(app, &held);
            }
        }
        if let Some(set) = inner.apps_by_namespace.get_mut(&app.0) {
            set.remove(&app.1);
            if set.is_empty() {
                inner.apps_by_namespace.remove(&app.0);
            }
        }
    }

    /// The app holding a Client ID.
    pub fn app_of_client(&self, client_id: &str) -> Option<Key> {
        self.read().app_by_client_id.get(client_id).map(|h| h.app.clone())
    }

    /// Whether the app `app` (of UID `uid`) holds `client_id`.
    pub fn holds(&self, app: &Key, uid: impl Into<Uid>, client_id: &str) -> bool {
        self.read().is_holder(client_id, app, uid.into())
    }

    /// Whether `client_id` is held by an app other than `app` (of UID `uid`),
    /// reserved for one, kept by a retention in another namespace, or was
    /// revoked: then `app` may never use it. A Client ID the index has not
    /// seen yet (a status write not yet through the watch) is not taken.
    pub fn taken_by_other(&self, app: &Key, uid: impl Into<Uid>, client_id: &str) -> bool {
        let uid = uid.into();
        let inner = self.read();
        if inner.reserved.get(client_id).is_some_and(|(k, u)| k != app || *u != uid) {
            return true;
        }
        match inner.app_by_client_id.get(client_id) {
            Some(holder) => holder.app != *app || holder.uid != uid,
            None => {
                inner.revoked_set.contains(client_id)
                    || inner.retained.get(client_id).is_some_and(|(ns, _)| *ns != app.0)
            }
        }
    }

    /// Whether `app` (of UID `uid`) may import `client_id`; reserves it for
    /// the app when it may (until the app is deleted or its status claims it).
    pub fn import(&self, app: &Key, uid: impl Into<Uid>, client_id: &str) -> Import {
        let uid = uid.into();
        let mut inner = self.write();
        if let Some(holder) = inner.app_by_client_id.get(client_id) {
            if holder.app == *app && holder.uid == uid {
                return Import::Free;
            }
            return Import::Held(holder.app.clone());
        }
        if let Some((holder, holder_uid)) = inner.reserved.get(client_id)
            && (holder != app || *holder_uid != uid)
        {
            return Import::Held(holder.clone());
        }
        let retained = inner.retained.get(client_id).cloned();
        if let Some((ns, _)) = &retained
            && *ns != app.0
        {
            return Import::RetainedElsewhere(ns.clone());
        }
        if retained.is_none() && inner.revoked_set.contains(client_id) {
            return Import::Revoked;
        }
        inner.reserved.insert(client_id.to_owned(), (app.clone(), uid));
        match retained {
            Some((_, secret)) => Import::Retained(secret),
            None => Import::Free,
        }
    }

    /// The Secret `(namespace, name)` carries a sealed retention of `client_id`.
    pub fn secret_retained(&self, secret: &Key, client_id: &str) {
        let mut inner = self.write();
        if let Some(old) = inner.retained_by_secret.insert(secret.clone(), client_id.to_owned())
            && old != client_id
        {
            inner.retained.remove(&old);
        }
        inner.retained.insert(client_id.to_owned(), secret.clone());
    }

    /// The Secret `(namespace, name)` no longer carries a retention (deleted,
    /// or taken over). A Client ID no app of its namespace is taking over is
    /// revoked: a retention given up is not free for anyone to import.
    pub fn secret_unretained(&self, secret: &Key) {
        let mut inner = self.write();
        let Some(client_id) = inner.retained_by_secret.remove(secret) else { return };
        if inner.retained.get(&client_id) == Some(secret) {
            inner.retained.remove(&client_id);
        }
        let taken_over = inner.reserved.get(&client_id).is_some_and(|(app, _)| app.0 == secret.0)
            || inner.app_by_client_id.get(&client_id).is_some_and(|h| h.app.0 == secret.0);
        if !taken_over && inner.revoked_set.insert(client_id.clone()) {
            inner.revoked.push_back(client_id);
            if inner.revoked.len() > MAX_REVOKED
                && let Some(oldest) = inner.revoked.pop_front()
            {
                inner.revoked_set.remove(&oldest);
            }
        }
    }

    /// The Client ID retained in the Secret `(namespace, name)`, if any.
    pub fn retention_at(&self, secret: &Key) -> Option<String> {
        self.read().retained_by_secret.get(secret).cloned()
    }

    /// Where a retained Client ID is kept: `(namespace, Secret name)`.
    pub fn retained(&self, client_id: &str) -> Option<Key> {
        self.read().retained.get(client_id).cloned()
    }

    /// Whether a Client ID belonged to an app that was deleted (remembered for
    /// the last [`MAX_REVOKED`] deletions).
    pub fn is_revoked(&self, client_id: &str) -> bool {
        self.read().revoked_set.contains(client_id)
    }

    /// The apps registered in a namespace.
    pub fn apps_in_namespace(&self, namespace: &str) -> Vec<Key> {
        self.read()
            .apps_by_namespace
            .get(namespace)
            .map(|s| s.iter().map(|name| (namespace.to_owned(), name.clone())).collect())
            .unwrap_or_default()
    }

    /// The namespaces with apps registered.
    pub fn namespaces_with_apps(&self) -> Vec<String> {
        self.read().apps_by_namespace.keys().cloned().collect()
    }

    /// The names of the apps registered in a namespace.
    pub fn app_names_in(&self, namespace: &str) -> Vec<String> {
        self.read().apps_by_namespace.get(namespace).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    // === namespaces ===

    /// Records a namespace's organization label (`None`: no label). Returns
    /// whether its organization changed.
    pub fn namespace_applied(&self, namespace: &str, label: Option<&str>) -> bool {
        {
            let mut inner = self.write();
            if label.is_some_and(|l| !l.is_empty()) {
                inner.unlabelled.remove(namespace);
            } else {
                inner.unlabelled.insert(namespace.to_owned());
            }
        }
        self.organization_changed(namespace, label)
    }

    fn organization_changed(&self, namespace: &str, label: Option<&str>) -> bool {
        let mut inner = self.write();
        let new = label.filter(|l| !l.is_empty()).map(str::to_owned);
        let old = match &new {
            Some(org) => inner.namespace_org.insert(namespace.to_owned(), org.clone()),
            None => inner.namespace_org.remove(namespace),
        };
        if old == new {
            return false;
        }
        if let Some(old) = &old
            && let Some(set) = inner.namespaces_by_org.get_mut(old)
        {
            set.remove(namespace);
            if set.is_empty() {
                inner.namespaces_by_org.remove(old);
            }
        }
        if let Some(new) = new {
            inner.namespaces_by_org.entry(new).or_default().insert(namespace.to_owned());
        }
        true
    }

    pub fn namespace_deleted(&self, namespace: &str) -> bool {
        self.write().unlabelled.remove(namespace);
        self.organization_changed(namespace, None)
    }

    /// Every namespace of `org`: those labelled with it, and for the default
    /// organization those without a label.
    pub fn namespaces_of(&self, org: &str) -> Vec<String> {
        let inner = self.read();
        let mut namespaces: Vec<String> =
            inner.namespaces_by_org.get(org).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        if org == self.default_organization {
            namespaces.extend(inner.unlabelled.iter().cloned());
        }
        namespaces
    }

    /// Records what consents read of `app` (`None`: the app is gone); returns
    /// whether its consents must look again. An app event that changes none of
    /// it — registrar's own status bookkeeping, a rotation — re-evaluates no
    /// consent. Only apps with consents are remembered.
    pub fn app_seen(&self, app: &Key, view: Option<u64>) -> bool {
        let mut inner = self.write();
        let has_consents = inner.consents_by_app.get(app).is_some_and(|c| !c.is_empty());
        let old = match view {
            Some(view) if has_consents => inner.app_views.insert(app.clone(), view),
            _ => inner.app_views.remove(app),
        };
        has_consents && old != view
    }

    /// Records what consents read of `org`'s policy (`None`: no policy);
    /// returns whether it changed. A policy event that changes none of it —
    /// registrar's own status bookkeeping — need not re-evaluate consents.
    pub fn policy_seen(&self, org: &str, view: Option<u64>) -> bool {
        let mut inner = self.write();
        let old = match view {
            Some(view) => inner.policy_views.insert(org.to_owned(), view),
            None => inner.policy_views.remove(org),
        };
        old != view
    }

    /// The organization of a namespace.
    pub fn organization_of(&self, namespace: &str) -> String {
        let inner = self.read();
        organization_of(inner.namespace_org.get(namespace).map(String::as_str), &self.default_organization).to_owned()
    }

    /// The namespaces that carry the organization label with value `org`
    /// (namespaces in the default organization by absence of the label are not listed).
    pub fn labelled_namespaces_of(&self, org: &str) -> Vec<String> {
        self.read().namespaces_by_org.get(org).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> Key {
        (ns.to_owned(), name.to_owned())
    }

    #[test]
    fn an_app_event_reaches_its_consents_only_when_what_they_read_changed() {
        let index = Index::new("default");
        let app = key("team-a", "billing");
        assert!(!index.app_seen(&app, Some(1)), "no consents: nothing to tell");
        index.consent_applied(key("team-b", "c1"), app.clone());
        assert!(index.app_seen(&app, Some(1)), "first sight with consents");
        assert!(!index.app_seen(&app, Some(1)), "its own status bookkeeping: no fan-out");
        assert!(index.app_seen(&app, Some(2)), "scopes, Client ID, name or deletion changed");
        assert!(index.app_seen(&app, None), "gone");
    }

    #[test]
    fn the_default_organization_holds_the_unlabelled_namespaces() {
        let index = Index::new("default");
        index.namespace_applied("a", None);
        index.namespace_applied("b", Some("acme"));
        index.namespace_applied("c", Some(""));
        assert_eq!(index.namespaces_of("default"), ["a", "c"]);
        index.namespace_applied("a", Some("acme"));
        index.namespace_applied("b", None);
        assert_eq!(index.namespaces_of("default"), ["b", "c"]);
        assert_eq!(index.namespaces_of("acme"), ["a"]);
        index.namespace_deleted("c");
        assert_eq!(index.namespaces_of("default"), ["b"]);
    }

    #[test]
    fn consents_are_found_by_app_and_by_namespace() {
        let index = Index::new("default");
        index.consent_applied(key("team-b", "c1"), key("team-a", "billing"));
        index.consent_applied(key("team-c", "c2"), key("team-a", "billing"));
        let mut of_app = index.consents_of_app(&key("team-a", "billing"));
        of_app.sort();
        assert_eq!(of_app, [key("team-b", "c1"), key("team-c", "c2")]);
        assert_eq!(index.consents_in_namespace("team-b"), [key("team-b", "c1")]);
    }

    #[test]
    fn a_deleted_consent_leaves_every_index_and_names_its_app() {
        let index = Index::new("default");
        index.consent_applied(key("team-b", "c1"), key("team-a", "billing"));
        assert_eq!(index.consent_deleted(&key("team-b", "c1")), Some(key("team-a", "billing")));
        assert!(index.consents_of_app(&key("team-a", "billing")).is_empty());
        assert!(index.consents_in_namespace("team-b").is_empty());
        assert_eq!(index.consent_deleted(&key("team-b", "c1")), None);
    }

    #[test]
    fn a_consent_moved_to_another_app_leaves_the_old_one() {
        let index = Index::new("default");
        index.consent_applied(key("team-b", "c1"), key("team-a", "old"));
        index.consent_applied(key("team-b", "c1"), key("team-a", "new"));
        assert!(index.consents_of_app(&key("team-a", "old")).is_empty());
        assert_eq!(index.consents_of_app(&key("team-a", "new")), [key("team-b", "c1")]);
    }

    fn claim<'a>(client_id: &'a str, uid: &'a str, created: i64) -> Option<Claim<'a>> {
        Some(Claim { client_id, uid, created: Some(Timestamp::from_second(created).unwrap()), proven: false })
    }

    fn sealed_claim<'a>(client_id: &'a str, uid: &'a str, created: i64) -> Option<Claim<'a>> {
        claim(client_id, uid, created).map(|c| Claim { proven: true, ..c })
    }

    #[test]
    fn a_sealed_claim_beats_an_unsealed_one_whatever_the_order_or_age() {
        let (original, copy) = (key("team-b", "billing"), key("team-a", "copy"));
        // Listing, the copy first and older; and after listing, the copy holding first.
        for listed in [false, true] {
            let index = Index::new("default");
            if listed {
                index.apps_listed();
            }
            assert!(index.app_applied(&copy, claim("cid", "u-copy", 1)), "alone, an unsealed claim holds");
            assert!(index.app_applied(&original, sealed_claim("cid", "u-orig", 5)));
            assert!(!index.app_applied(&copy, claim("cid", "u-copy", 1)));
            assert_eq!(index.app_of_client("cid"), Some(original.clone()));
            assert!(index.taken_by_other(&copy, "u-copy", "cid"));
        }
        // A sealed holder is never displaced by an unsealed claim.
        let index = Index::new("default");
        assert!(index.app_applied(&original, sealed_claim("cid", "u-orig", 5)));
        assert!(!index.app_applied(&copy, claim("cid", "u-copy", 1)));
        index.apps_listed();
        assert!(!index.app_applied(&copy, claim("cid", "u-copy", 1)));
        assert_eq!(index.app_of_client("cid"), Some(original));
    }

    #[test]
    fn apps_are_found_by_namespace() {
        let index = Index::new("default");
        assert!(!index.app_applied(&key("team-a", "billing"), None));
        assert!(index.app_applied(&key("team-a", "billing"), claim("cid", "u1", 1)));
        assert_eq!(index.apps_in_namespace("team-a"), [key("team-a", "billing")]);
        assert_eq!(index.app_of_client("cid"), Some(key("team-a", "billing")));
        assert!(index.holds(&key("team-a", "billing"), "u1", "cid"));
        index.app_deleted(&key("team-a", "billing"), false);
        assert!(index.apps_in_namespace("team-a").is_empty());
        assert_eq!(index.app_of_client("cid"), None);
        assert!(index.is_revoked("cid"));
        assert!(!index.is_revoked("other"));
    }

    #[test]
    fn a_second_app_never_takes_a_held_client_id() {
        let index = Index::new("default");
        index.apps_listed();
        let (original, newcomer) = (key("team-b", "billing"), key("team-a", "evil"));
        assert!(index.app_applied(&original, claim("cid", "u-b", 10)));
        // Older or not, a later claimant is refused while the holder lives.
        assert!(!index.app_applied(&newcomer, claim("cid", "u-a", 1)));
        assert_eq!(index.app_of_client("cid"), Some(original.clone()));
        assert!(!index.holds(&newcomer, "u-a", "cid"));
        assert!(index.taken_by_other(&newcomer, "u-a", "cid"));
        assert!(!index.taken_by_other(&original, "u-b", "cid"));
        assert!(!index.taken_by_other(&newcomer, "u-a", "not-seen-yet"));
        assert!(index.app_applied(&original, claim("cid", "u-b", 10)), "the holder keeps it on every update");
        // Deleting the newcomer revokes nothing of the original's.
        index.app_deleted(&newcomer, false);
        assert!(!index.is_revoked("cid"));
        assert_eq!(index.app_of_client("cid"), Some(original.clone()));
    }

    #[test]
    fn a_client_id_whose_holder_is_gone_is_never_held_again() {
        let index = Index::new("default");
        index.apps_listed();
        let (original, newcomer) = (key("team-b", "billing"), key("team-a", "evil"));
        assert!(index.app_applied(&original, claim("cid", "u-b", 10)));
        assert!(!index.app_applied(&newcomer, claim("cid", "u-a", 20)));
        index.app_deleted(&original, false);
        assert!(!index.app_applied(&newcomer, claim("cid", "u-a", 20)), "revoked, not passed on");
        assert!(index.taken_by_other(&newcomer, "u-a", "cid"));
        assert_eq!(index.app_of_client("cid"), None);
        // Nor by a new object of the original's name.
        assert!(!index.app_applied(&original, claim("cid", "u-b2", 30)));
    }

    #[test]
    fn a_new_object_under_a_held_name_does_not_inherit_its_client_id() {
        let index = Index::new("default");
        index.apps_listed();
        let app = key("team-a", "billing");
        assert!(index.app_applied(&app, claim("cid", "u1", 10)));
        // The deletion was missed (a re-list): the name comes back with a new UID.
        assert!(!index.app_applied(&app, claim("cid", "u2", 20)));
        assert!(index.is_revoked("cid"));
        assert!(index.app_applied(&app, claim("cid2", "u2", 20)));
    }

    #[test]
    fn while_listing_the_oldest_claimant_wins_whatever_the_order() {
        let (older, younger) = (key("team-z", "original"), key("team-a", "copy"));
        for order in [[&older, &younger], [&younger, &older]] {
            let index = Index::new("default");
            for app in order {
                let (uid, created) = if *app == older { ("u-old", 10) } else { ("u-new", 20) };
                index.app_applied(app, claim("cid", uid, created));
            }
            index.apps_listed();
            assert_eq!(index.app_of_client("cid"), Some(older.clone()), "{order:?}");
            assert!(index.holds(&older, "u-old", "cid"));
            assert!(!index.holds(&younger, "u-new", "cid"));
            assert!(index.app_applied(&older, claim("cid", "u-old", 10)));
            assert!(!index.app_applied(&younger, claim("cid", "u-new", 20)));
        }
    }

    #[test]
    fn organizations_come_from_the_label_or_the_default() {
        let index = Index::new("acme");
        assert_eq!(index.organization_of("unlabelled"), "acme");
        assert!(index.namespace_applied("team-b", Some("globex")));
        assert!(!index.namespace_applied("team-b", Some("globex")), "unchanged");
        assert_eq!(index.organization_of("team-b"), "globex");
        assert_eq!(index.labelled_namespaces_of("globex"), ["team-b"]);
        assert!(index.namespace_applied("team-b", Some("initech")));
        assert!(index.labelled_namespaces_of("globex").is_empty());
        assert!(index.namespace_applied("team-b", Some("")), "an empty label means the default");
        assert_eq!(index.organization_of("team-b"), "acme");
        index.namespace_applied("team-c", Some("globex"));
        index.namespace_applied("plain", None);
        assert_eq!(index.namespaces_of("acme"), ["plain", "team-b"], "the default organization: every unlabelled one");
        assert_eq!(index.namespaces_of("globex"), ["team-c"]);
        assert!(!index.namespace_deleted("team-b"));
        assert_eq!(index.namespaces_of("acme"), ["plain"]);
    }

    #[test]
    fn an_import_reserves_a_free_client_id_against_every_other_app() {
        let index = Index::new("default");
        let (a, b) = (key("team-a", "portal"), key("team-b", "portal"));
        assert_eq!(index.import(&a, "u-a", "legacy"), Import::Free);
        assert_eq!(index.import(&a, "u-a", "legacy"), Import::Free, "the same app asks again");
        assert_eq!(index.import(&b, "u-b", "legacy"), Import::Held(a.clone()));
        assert!(index.taken_by_other(&b, "u-b", "legacy"));
        // Its status claims it: still held; deleted (revoked): never again.
        assert!(index.app_applied(&a, sealed_claim("legacy", "u-a", 1)));
        assert_eq!(index.import(&b, "u-b", "legacy"), Import::Held(a.clone()));
        index.app_deleted(&a, false);
        assert_eq!(index.import(&b, "u-b", "legacy"), Import::Revoked);
    }

    #[test]
    fn a_retained_client_id_is_taken_over_only_from_its_namespace() {
        let index = Index::new("default");
        let original = key("team-a", "portal");
        assert!(index.app_applied(&original, sealed_claim("kept", "u-1", 1)));
        index.app_deleted(&original, true);
        let secret = key("team-a", "portal-credentials");
        index.secret_retained(&secret, "kept");
        assert_eq!(index.retention_at(&secret).as_deref(), Some("kept"));
        let (elsewhere, again) = (key("team-b", "portal"), key("team-a", "portal"));
        assert_eq!(index.import(&elsewhere, "u-x", "kept"), Import::RetainedElsewhere("team-a".into()));
        assert!(index.taken_by_other(&elsewhere, "u-x", "kept"));
        assert_eq!(index.import(&again, "u-2", "kept"), Import::Retained("portal-credentials".into()));
        // Taken over: the retention goes, the Client ID is not revoked.
        index.secret_unretained(&secret);
        assert!(index.app_applied(&again, sealed_claim("kept", "u-2", 2)));
        assert!(!index.is_revoked("kept"));
    }

    #[test]
    fn a_retention_given_up_revokes_its_client_id() {
        let index = Index::new("default");
        let secret = key("team-a", "portal-credentials");
        index.secret_retained(&secret, "kept");
        index.secret_unretained(&secret);
        assert!(index.is_revoked("kept"));
        assert_eq!(index.import(&key("team-b", "x"), "u", "kept"), Import::Revoked);
    }
}
