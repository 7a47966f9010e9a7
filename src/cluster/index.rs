//! In-memory indexes fed by the watches, shared by the controllers and the
//! registry API: consents by app and by namespace, apps by namespace, and
//! the organization of every namespace. One change fans out to exactly the
//! objects it affects, without listing the cluster.
//!
//! The indexes are hints kept next to the reflector stores, which stay the
//! source of truth: an entry that outlived its object (deleted while a watch
//! was re-listing) is dropped by readers that look the object up.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use crate::api::organization_of;

use crate::runtime::Key;

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
    /// The namespaces without an organization label (the default
    /// organization's), and those with one (its value).
    unlabelled: BTreeSet<String>,
    namespace_org: HashMap<String, String>,
    namespaces_by_org: HashMap<String, BTreeSet<String>>,
    /// A digest of what consents read of each organization's policy.
    policy_views: HashMap<String, u64>,
    /// A digest of what consents read of each app that has consents.
    app_views: HashMap<Key, u64>,
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
        inner.consents_by_namespace.entry(consent.namespace.clone()).or_default().insert(consent);
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
        if let Some(set) = inner.consents_by_namespace.get_mut(&consent.namespace) {
            set.remove(consent);
            if set.is_empty() {
                inner.consents_by_namespace.remove(&consent.namespace);
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

    /// Records an app (new or changed).
    pub fn app_applied(&self, app: &Key) {
        let mut inner = self.write();
        if !inner.apps_by_namespace.get(&app.namespace).is_some_and(|s| s.contains(&app.name)) {
            inner.apps_by_namespace.entry(app.namespace.clone()).or_default().insert(app.name.clone());
        }
    }

    /// Forgets a deleted app.
    pub fn app_deleted(&self, app: &Key) {
        let mut inner = self.write();
        if let Some(set) = inner.apps_by_namespace.get_mut(&app.namespace) {
            set.remove(&app.name);
            if set.is_empty() {
                inner.apps_by_namespace.remove(&app.namespace);
            }
        }
    }

    /// The apps registered in a namespace.
    pub fn apps_in_namespace(&self, namespace: &str) -> Vec<Key> {
        self.read()
            .apps_by_namespace
            .get(namespace)
            .map(|s| s.iter().map(|name| Key::new(namespace, name)).collect())
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
    #[cfg(test)]
    pub fn labelled_namespaces_of(&self, org: &str) -> Vec<String> {
        self.read().namespaces_by_org.get(org).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> Key {
        Key::new(ns, name)
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

    #[test]
    fn apps_are_found_by_namespace() {
        let index = Index::new("default");
        index.app_applied(&key("team-a", "billing"));
        index.app_applied(&key("team-a", "billing"));
        assert_eq!(index.apps_in_namespace("team-a"), [key("team-a", "billing")]);
        assert_eq!(index.namespaces_with_apps(), ["team-a"]);
        index.app_deleted(&key("team-a", "billing"));
        assert!(index.apps_in_namespace("team-a").is_empty());
        assert!(index.namespaces_with_apps().is_empty());
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
}
