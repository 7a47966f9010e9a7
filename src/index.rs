//! In-memory indexes fed by the watches, shared by the controllers (and later
//! the registry API): consents by app and by namespace, apps by namespace, and
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

use crate::consent::visibility::organization_of;

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
    /// The app holding each Client ID.
    app_by_client_id: HashMap<String, Key>,
    /// Client IDs of deleted apps, most recent last (bounded): the registry
    /// answers "revoked" for them rather than "unknown".
    revoked: VecDeque<String>,
    revoked_set: HashSet<String>,
    /// Namespaces with an organization label, and its value.
    namespace_org: HashMap<String, String>,
    namespaces_by_org: HashMap<String, BTreeSet<String>>,
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

    /// Records an app and, once issued, its Client ID.
    pub fn app_applied(&self, app: &Key, client_id: Option<&str>) {
        let mut inner = self.write();
        inner.apps_by_namespace.entry(app.0.clone()).or_default().insert(app.1.clone());
        if let Some(id) = client_id {
            inner.app_by_client_id.insert(id.to_owned(), app.clone());
        }
    }

    /// Forgets a deleted app; its Client ID is remembered as revoked.
    pub fn app_deleted(&self, app: &Key, client_id: Option<&str>) {
        let mut inner = self.write();
        if let Some(id) = client_id
            && inner.app_by_client_id.get(id) == Some(app)
        {
            inner.app_by_client_id.remove(id);
            if inner.revoked_set.insert(id.to_owned()) {
                inner.revoked.push_back(id.to_owned());
                if inner.revoked.len() > MAX_REVOKED
                    && let Some(oldest) = inner.revoked.pop_front()
                {
                    inner.revoked_set.remove(&oldest);
                }
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
        self.read().app_by_client_id.get(client_id).cloned()
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

    // === namespaces ===

    /// Records a namespace's organization label (`None`: no label). Returns
    /// whether its organization changed.
    pub fn namespace_applied(&self, namespace: &str, label: Option<&str>) -> bool {
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
        self.namespace_applied(namespace, None)
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

    #[test]
    fn apps_are_found_by_namespace() {
        let index = Index::new("default");
        index.app_applied(&key("team-a", "billing"), None);
        index.app_applied(&key("team-a", "billing"), Some("cid"));
        assert_eq!(index.apps_in_namespace("team-a"), [key("team-a", "billing")]);
        assert_eq!(index.app_of_client("cid"), Some(key("team-a", "billing")));
        index.app_deleted(&key("team-a", "billing"), Some("cid"));
        assert!(index.apps_in_namespace("team-a").is_empty());
        assert_eq!(index.app_of_client("cid"), None);
        assert!(index.is_revoked("cid"));
        assert!(!index.is_revoked("other"));
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
        assert!(!index.namespace_deleted("team-b"));
    }
}
