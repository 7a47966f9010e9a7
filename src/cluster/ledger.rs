//! The Client ID ledger: who holds each Client ID, recorded in the cluster
//! (`ClientIdEntry`, one cluster-scoped object per Client ID) rather than in
//! one process's memory, so that a restart, a second instance (`--selector`
//! shards), a leader change or a replaced seal key never hands a Client ID to
//! another app.
//!
//! - [`Ledger`] is the read model, fed by the watch of the entries: every
//!   instance reads it, and it answers "who holds this Client ID", "is it
//!   retained, and where", "was it revoked" without a request.
//! - The app controller's clerk (`registration::ledger`) makes the writes
//!   that move a Client ID through the ledger. A
//!   Client ID is claimed by creating its entry: the apiserver lets exactly one
//!   create succeed, so it decides every race, between reconciles and between
//!   instances. Every other write replaces the entry on condition of the
//!   resourceVersion just read. What a write returns is fed to the read model
//!   at once, so an instance never acts on a view older than its own writes.
//!
//! A Client ID's life: claimed (Active, held by one app — by namespace, name
//! and UID, so a new object of the same name holds nothing); on deletion
//! Revoked (a tombstone, never issued again) or, with `deletionPolicy: Retain`,
//! Retained (with the verifier of its secret, for a later app of the same
//! namespace to take over); a retention given up (its Secret deleted) is
//! Revoked. Only an entry whose Client ID was never issued anywhere — an
//! import refused by the authorization server because another client of that
//! ID exists there — is deleted when its app goes.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use kube::runtime::watcher::Event;

use crate::{
    api::{ClientIdEntry, LedgerState, Verifiers},
    runtime::{Key, Uid},
};

// === impl Ledger ===

/// The ledger as this instance has read it. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: RwLock<Inner>,
    /// Keys the digests of revoked Client IDs (random per process, so nobody
    /// can pick two Client IDs that share one).
    revoked_keys: RandomState,
}

#[derive(Debug, Default)]
struct Inner {
    /// Active and Retained entries.
    live: HashMap<Box<str>, Standing>,
    /// The Client ID each app (by namespace and name) holds, Active.
    by_app: HashMap<Key, Box<str>>,
    /// The Client ID kept in each Secret (namespace, name), Retained.
    by_secret: HashMap<Key, Box<str>>,
    /// Digests of revoked Client IDs: a tombstone costs 8 bytes here.
    revoked: HashSet<u64>,
    /// A re-list in progress: filled, then swapped in once complete, so
    /// readers see the previous state meanwhile rather than a partial one.
    listing: Option<Box<Inner>>,
}

/// What the ledger says of a Client ID that is not revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Active or Retained.
    pub state: LedgerState,
    /// The holding (or retaining) app: namespace and name.
    pub holder: Key,
    pub uid: Uid,
    /// The retained Secret and the verifier of its secret (Retained, and
    /// while an app takes it over).
    pub retained: Option<Box<RetainedAt>>,
    /// The app it was taken over from (namespace and name, UID), whose name
    /// its client at the authorization server may still carry.
    pub taken_over_from: Option<Box<(Key, Uid)>>,
    /// The verifiers of the holder's chosen secret (not in its status).
    pub verifiers: Option<Box<Verifiers>>,
}

/// Where a retained Client ID is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedAt {
    pub secret_name: String,
    /// The argon2id hash of the retained secret (`None`: a public client).
    pub verifier: Option<String>,
}

/// The ledger's word on a Client ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Word {
    /// No entry: nobody holds it.
    Free,
    Standing(Standing),
    /// Given up: never issued again.
    Revoked,
}

impl Standing {
    /// What `entry` says of its Client ID, unless it is Revoked.
    pub fn of(entry: &ClientIdEntry) -> Option<Standing> {
        let spec = &entry.spec;
        if spec.state == LedgerState::Revoked {
            return None;
        }
        Some(Standing {
            state: spec.state,
            holder: Key::new(&spec.holder.namespace, &spec.holder.name),
            uid: Uid::of(&spec.holder.uid),
            retained: spec
                .retained
                .as_ref()
                .map(|r| Box::new(RetainedAt { secret_name: r.secret_name.clone(), verifier: r.verifier.clone() })),
            taken_over_from: spec
                .taken_over_from
                .as_ref()
                .map(|h| Box::new((Key::new(&h.namespace, &h.name), Uid::of(&h.uid)))),
            verifiers: spec.verifiers.clone().map(Box::new),
        })
    }

    /// Whether the app `app` (of UID `uid`) holds it, Active.
    pub fn is_held_by(&self, app: &Key, uid: Uid) -> bool {
        self.state == LedgerState::Active && self.holder == *app && self.uid == uid
    }

    /// The Secret keeping it, while Retained.
    fn retained_secret(&self) -> Option<Key> {
        match (&self.state, &self.retained) {
            (LedgerState::Retained, Some(at)) => Some(Key::new(&self.holder.namespace, &at.secret_name)),
            _ => None,
        }
    }
}

impl Inner {
    fn forget(&mut self, client_id: &str) {
        if let Some(old) = self.live.remove(client_id) {
            if self.by_app.get(&old.holder).is_some_and(|id| &**id == client_id) {
                self.by_app.remove(&old.holder);
            }
            if let Some(secret) = old.retained_secret()
                && self.by_secret.get(&secret).is_some_and(|id| &**id == client_id)
            {
                self.by_secret.remove(&secret);
            }
        }
    }

    fn apply(&mut self, entry: &ClientIdEntry, revoked_digest: u64) {
        let client_id = entry.spec.client_id.as_str();
        self.forget(client_id);
        match Standing::of(entry) {
            None => {
                self.revoked.insert(revoked_digest);
            }
            Some(standing) => {
                self.revoked.remove(&revoked_digest);
                if standing.state == LedgerState::Active {
                    self.by_app.insert(standing.holder.clone(), client_id.into());
                }
                if let Some(secret) = standing.retained_secret() {
                    self.by_secret.insert(secret, client_id.into());
                }
                self.live.insert(client_id.into(), standing);
            }
        }
    }

    fn delete(&mut self, client_id: &str, revoked_digest: u64) {
        self.forget(client_id);
        self.revoked.remove(&revoked_digest);
    }
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every update leaves the maps consistent before it can panic.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn digest(&self, client_id: &str) -> u64 {
        self.revoked_keys.hash_one(client_id)
    }

    /// The ledger's word on `client_id`.
    pub fn word(&self, client_id: &str) -> Word {
        let inner = self.read();
        match inner.live.get(client_id) {
            Some(standing) => Word::Standing(standing.clone()),
            None if inner.revoked.contains(&self.digest(client_id)) => Word::Revoked,
            None => Word::Free,
        }
    }

    /// The app holding `client_id`, Active: its namespace, name and UID.
    pub fn holder(&self, client_id: &str) -> Option<(Key, Uid)> {
        let inner = self.read();
        let standing = inner.live.get(client_id).filter(|s| s.state == LedgerState::Active)?;
        Some((standing.holder.clone(), standing.uid))
    }

    /// Whether the app `app` (of UID `uid`) holds `client_id`.
    pub fn holds(&self, app: &Key, uid: impl Into<Uid>, client_id: &str) -> bool {
        let uid = uid.into();
        self.read().live.get(client_id).is_some_and(|s| s.is_held_by(app, uid))
    }

    /// The verifiers the ledger keeps of the chosen secret of the app `app`
    /// (of UID `uid`) holding `client_id`.
    pub fn verifiers(&self, app: &Key, uid: impl Into<Uid>, client_id: &str) -> Option<Verifiers> {
        let uid = uid.into();
        let inner = self.read();
        let standing = inner.live.get(client_id).filter(|s| s.is_held_by(app, uid))?;
        standing.verifiers.as_deref().cloned()
    }

    /// The app `client_id` was taken over from, if it was.
    pub fn taken_over_from(&self, client_id: &str) -> Option<(Key, Uid)> {
        self.read().live.get(client_id)?.taken_over_from.as_deref().cloned()
    }

    /// Whether `client_id` is not the app's to use: another app holds or
    /// retains it, or it was revoked. A Client ID without an entry is not
    /// taken: claiming it decides.
    pub fn taken_from(&self, app: &Key, uid: impl Into<Uid>, client_id: &str) -> bool {
        match self.word(client_id) {
            Word::Free => false,
            Word::Revoked => true,
            Word::Standing(standing) => !standing.is_held_by(app, uid.into()),
        }
    }

    /// The Client ID the app `app` (of UID `uid`) holds, if any: what an
    /// interrupted first issuance claimed before it could write anything else.
    pub fn held_by(&self, app: &Key, uid: impl Into<Uid>) -> Option<String> {
        let uid = uid.into();
        let inner = self.read();
        let client_id = inner.by_app.get(app)?;
        inner.live.get(client_id).filter(|s| s.is_held_by(app, uid)).map(|_| client_id.to_string())
    }

    /// The retained Client ID `client_id`: who retained it, the Secret keeping
    /// it and the verifier of its secret.
    pub fn retained(&self, client_id: &str) -> Option<(Key, RetainedAt)> {
        let inner = self.read();
        let standing = inner.live.get(client_id).filter(|s| s.state == LedgerState::Retained)?;
        Some((standing.holder.clone(), standing.retained.as_deref()?.clone()))
    }

    /// Every Secret keeping a retained Client ID.
    pub fn retained_secrets(&self) -> Vec<Key> {
        self.read().by_secret.keys().cloned().collect()
    }

    /// The Client ID retained in the Secret `(namespace, name)`, if any.
    pub fn retention_at(&self, secret: &Key) -> Option<String> {
        self.read().by_secret.get(secret).map(|id| id.to_string())
    }

    /// Whether `client_id` was revoked (never issued again).
    pub fn is_revoked(&self, client_id: &str) -> bool {
        let digest = self.digest(client_id);
        let inner = self.read();
        !inner.live.contains_key(client_id) && inner.revoked.contains(&digest)
    }

    /// How many Client IDs are Active or Retained, and how many revoked.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.live.len(), inner.revoked.len())
    }

    /// Takes in an entry as written (by this instance) or watched.
    pub fn applied(&self, entry: &ClientIdEntry) {
        let digest = self.digest(&entry.spec.client_id);
        let mut inner = self.write();
        if let Some(listing) = &mut inner.listing {
            listing.apply(entry, digest);
        }
        inner.apply(entry, digest);
    }

    /// Forgets a deleted entry.
    pub fn deleted(&self, entry: &ClientIdEntry) {
        let digest = self.digest(&entry.spec.client_id);
        let mut inner = self.write();
        if let Some(listing) = &mut inner.listing {
            listing.delete(&entry.spec.client_id, digest);
        }
        inner.delete(&entry.spec.client_id, digest);
    }

    /// Takes in one event of the entries' watch.
    pub fn watched(&self, event: &Event<ClientIdEntry>) {
        match event {
            Event::Init => self.write().listing = Some(Box::default()),
            Event::InitApply(entry) => {
                let digest = self.digest(&entry.spec.client_id);
                self.write().listing.get_or_insert_default().apply(entry, digest);
            }
            Event::InitDone => {
                let mut inner = self.write();
                let mut listed = inner.listing.take().unwrap_or_default();
                listed.live.shrink_to_fit();
                listed.revoked.shrink_to_fit();
                *inner = *listed;
            }
            Event::Apply(entry) => self.applied(entry),
            Event::Delete(entry) => self.deleted(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Holder, Retained};

    fn key(ns: &str, name: &str) -> Key {
        Key::new(ns, name)
    }

    const UID_A: &str = "11111111-1111-1111-1111-111111111111";
    const UID_B: &str = "22222222-2222-2222-2222-222222222222";

    fn entry(client_id: &str, state: LedgerState, ns: &str, name: &str, uid: &str) -> ClientIdEntry {
        let mut entry =
            ClientIdEntry::active(client_id, Holder { namespace: ns.into(), name: name.into(), uid: uid.into() });
        entry.spec.state = state;
        entry
    }

    fn retained(client_id: &str, ns: &str, secret: &str) -> ClientIdEntry {
        let mut entry = entry(client_id, LedgerState::Retained, ns, "portal", UID_A);
        entry.spec.retained = Some(Retained { secret_name: secret.into(), verifier: Some("$argon2id$…".into()) });
        entry
    }

    #[test]
    fn an_active_entry_names_its_holder_by_name_and_uid() {
        let ledger = Ledger::new();
        let app = key("team-a", "billing");
        assert_eq!(ledger.word("cid"), Word::Free);
        ledger.applied(&entry("cid", LedgerState::Active, "team-a", "billing", UID_A));
        assert!(ledger.holds(&app, UID_A, "cid"));
        assert!(!ledger.holds(&app, UID_B, "cid"), "a new object of the same name holds nothing");
        assert!(!ledger.holds(&key("team-b", "billing"), UID_A, "cid"));
        assert_eq!(ledger.holder("cid"), Some((app.clone(), Uid::of(UID_A))));
        assert_eq!(ledger.held_by(&app, UID_A).as_deref(), Some("cid"));
        assert_eq!(ledger.held_by(&app, UID_B), None);
        assert!(!ledger.is_revoked("cid"));
    }

    #[test]
    fn a_revoked_entry_is_remembered_as_a_digest_and_never_held() {
        let ledger = Ledger::new();
        let app = key("team-a", "billing");
        ledger.applied(&entry("cid", LedgerState::Active, "team-a", "billing", UID_A));
        ledger.applied(&entry("cid", LedgerState::Revoked, "team-a", "billing", UID_A));
        assert_eq!(ledger.word("cid"), Word::Revoked);
        assert!(ledger.is_revoked("cid"));
        assert!(!ledger.holds(&app, UID_A, "cid"));
        assert_eq!(ledger.held_by(&app, UID_A), None);
        assert_eq!(ledger.holder("cid"), None);
        assert_eq!(ledger.counts(), (0, 1));
        assert!(!ledger.is_revoked("other"));
    }

    #[test]
    fn a_retained_entry_is_found_by_its_secret_until_taken_over() {
        let ledger = Ledger::new();
        ledger.applied(&retained("kept", "team-a", "portal-credentials"));
        let secret = key("team-a", "portal-credentials");
        assert_eq!(ledger.retention_at(&secret).as_deref(), Some("kept"));
        let (by, at) = ledger.retained("kept").expect("retained");
        assert_eq!(by, key("team-a", "portal"));
        assert_eq!(at.secret_name, "portal-credentials");
        assert_eq!(ledger.holder("kept"), None, "a retained Client ID has no holder");
        // Taken over: Active for the new app, the retention still recorded until settled.
        let mut taken = retained("kept", "team-a", "portal-credentials");
        taken.spec.state = LedgerState::Active;
        taken.spec.holder = Holder { namespace: "team-a".into(), name: "portal-2".into(), uid: UID_B.into() };
        ledger.applied(&taken);
        assert_eq!(ledger.retention_at(&secret), None);
        assert_eq!(ledger.retained("kept"), None);
        assert!(ledger.holds(&key("team-a", "portal-2"), UID_B, "kept"));
    }

    #[test]
    fn a_relist_replaces_the_view_only_once_complete() {
        let ledger = Ledger::new();
        ledger.applied(&entry("gone", LedgerState::Active, "team-a", "old", UID_A));
        ledger.watched(&Event::Init);
        ledger.watched(&Event::InitApply(entry("new", LedgerState::Active, "team-a", "new", UID_B)));
        assert!(ledger.holder("gone").is_some(), "the previous view until the list is complete");
        assert!(ledger.holder("new").is_none());
        // A write of this instance during the list counts in both.
        ledger.applied(&entry("mine", LedgerState::Active, "team-a", "mine", UID_A));
        ledger.watched(&Event::InitDone);
        assert!(ledger.holder("gone").is_none());
        assert!(ledger.holder("new").is_some());
        assert!(ledger.holder("mine").is_some());
    }

    #[test]
    fn a_deleted_entry_frees_its_client_id() {
        let ledger = Ledger::new();
        let active = entry("cid", LedgerState::Active, "team-a", "billing", UID_A);
        ledger.applied(&active);
        ledger.deleted(&active);
        assert_eq!(ledger.word("cid"), Word::Free);
        assert_eq!(ledger.held_by(&key("team-a", "billing"), UID_A), None);
    }
}
