//! The app controller's writes to the Client ID ledger (as registrar's
//! identity): a claim is the create of a Client ID's entry, which the
//! apiserver lets exactly one writer win; every other write replaces the entry
//! on condition of the resourceVersion just read. What a write returns is fed
//! to the read model ([`crate::cluster::ledger`]) at once, so this instance
//! never acts on a view older than its own writes.

use std::sync::Arc;

use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams, Preconditions},
};
use tracing::{debug, info};

use crate::{
    api::keys::FIELD_MANAGER,
    api::{ClientIdEntry, Holder, LedgerState, Retained, Verifiers, entry_name},
    cluster::ledger::{Ledger, Standing, Word},
    runtime::{Key, Uid},
};

/// What a claim came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The app holds the Client ID.
    Held,
    /// Someone else has it (or it was revoked): the ledger's word on it now.
    Refused(Word),
}

/// Why a ledger write failed.
#[derive(Debug, thiserror::Error)]
#[error("the Client ID ledger ({entry}): {source}")]
pub struct LedgerError {
    entry: String,
    #[source]
    source: kube::Error,
}

/// Writes to the ledger (as registrar's identity), each fed to the read model.
#[derive(Clone)]
pub struct Clerk {
    api: Api<ClientIdEntry>,
    ledger: Arc<Ledger>,
}

impl Clerk {
    pub fn new(client: Client, ledger: Arc<Ledger>) -> Self {
        Clerk { api: Api::all(client), ledger }
    }

    fn failed(client_id: &str) -> impl FnOnce(kube::Error) -> LedgerError + '_ {
        move |source| LedgerError { entry: format!("{} (Client ID {client_id})", entry_name(client_id)), source }
    }

    /// The entry of `client_id` as the apiserver has it now (fed to the read model).
    async fn fetch(&self, client_id: &str) -> Result<Option<ClientIdEntry>, LedgerError> {
        let live = self.api.get_opt(&entry_name(client_id)).await.map_err(Self::failed(client_id))?;
        if let Some(entry) = &live {
            self.ledger.applied(entry);
        }
        Ok(live)
    }

    /// Replaces `entry` with `spec`, on condition that it is unchanged since
    /// read. `false`: it changed meanwhile (read again).
    async fn replace(
        &self,
        mut entry: ClientIdEntry,
        change: impl FnOnce(&mut ClientIdEntry),
    ) -> Result<bool, LedgerError> {
        let client_id = entry.spec.client_id.clone();
        change(&mut entry);
        entry.metadata.managed_fields = None;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.api.replace(&entry.name_any(), &params, &entry).await {
            Ok(written) => {
                self.ledger.applied(&written);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {
                self.fetch(&client_id).await?;
                Ok(false)
            }
            Err(e) => Err(Self::failed(&client_id)(e)),
        }
    }

    /// Claims `client_id` for `holder`: creates its entry (Active). Refused
    /// when the entry exists and is not `holder`'s.
    pub async fn claim(&self, client_id: &str, holder: &Holder) -> Result<Claim, LedgerError> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.api.create(&params, &ClientIdEntry::active(client_id, holder.clone())).await {
            Ok(created) => {
                self.ledger.applied(&created);
                debug!(
                    client_id,
                    namespace = holder.namespace,
                    name = holder.name,
                    "claimed a Client ID in the ledger"
                );
                Ok(Claim::Held)
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let app = Key::new(&holder.namespace, &holder.name);
                let live = self.fetch(client_id).await?;
                Ok(match live {
                    Some(entry) if Standing::of(&entry).is_some_and(|s| s.is_held_by(&app, Uid::of(&holder.uid))) => {
                        Claim::Held
                    }
                    _ => Claim::Refused(self.ledger.word(client_id)),
                })
            }
            Err(e) => Err(Self::failed(client_id)(e)),
        }
    }

    /// Records `entry` as it stands (a retention from before the ledger).
    /// `false` when the Client ID has an entry already.
    pub async fn record(&self, entry: &ClientIdEntry) -> Result<bool, LedgerError> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.api.create(&params, entry).await {
            Ok(created) => {
                self.ledger.applied(&created);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                self.fetch(&entry.spec.client_id).await?;
                Ok(false)
            }
            Err(e) => Err(Self::failed(&entry.spec.client_id)(e)),
        }
    }

    /// Takes over the Client ID retained in `holder`'s namespace: the entry
    /// becomes Active for `holder`, keeping where it was retained (for the
    /// secret) until [`Clerk::settle`]. Refused when it is not retained there.
    pub async fn take_over(&self, client_id: &str, holder: &Holder) -> Result<Claim, LedgerError> {
        let app = Key::new(&holder.namespace, &holder.name);
        for _ in 0..3 {
            let Some(entry) = self.fetch(client_id).await? else { return self.claim(client_id, holder).await };
            let spec = &entry.spec;
            if Standing::of(&entry).is_some_and(|s| s.is_held_by(&app, Uid::of(&holder.uid))) {
                return Ok(Claim::Held);
            }
            if spec.state != LedgerState::Retained || spec.holder.namespace != holder.namespace {
                return Ok(Claim::Refused(self.ledger.word(client_id)));
            }
            let previous = spec.holder.clone();
            let replaced = self
                .replace(entry, |e| {
                    e.spec.state = LedgerState::Active;
                    e.spec.taken_over_from = Some(previous);
                    e.spec.holder = holder.clone();
                    e.spec.verifiers = None;
                })
                .await?;
            if replaced {
                info!(client_id, namespace = holder.namespace, name = holder.name, "took over a retained Client ID");
                return Ok(Claim::Held);
            }
        }
        Ok(Claim::Refused(self.ledger.word(client_id)))
    }

    /// Keeps `verifiers` as those of `holder`'s chosen secret (or none).
    pub async fn set_verifiers(
        &self,
        client_id: &str,
        holder: &Holder,
        verifiers: Option<&Verifiers>,
    ) -> Result<bool, LedgerError> {
        let app = Key::new(&holder.namespace, &holder.name);
        for _ in 0..3 {
            let Some(entry) = self.fetch(client_id).await? else { return Ok(false) };
            if !Standing::of(&entry).is_some_and(|s| s.is_held_by(&app, Uid::of(&holder.uid))) {
                return Ok(false);
            }
            if entry.spec.verifiers.as_ref() == verifiers {
                return Ok(true);
            }
            let verifiers = verifiers.cloned();
            if self.replace(entry, |e| e.spec.verifiers = verifiers).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A takeover is complete (the app is issued): the retained Secret's
    /// verifier leaves the ledger.
    pub async fn settle(&self, client_id: &str, holder: &Holder) -> Result<(), LedgerError> {
        let app = Key::new(&holder.namespace, &holder.name);
        for _ in 0..3 {
            let Some(entry) = self.fetch(client_id).await? else { return Ok(()) };
            let held = Standing::of(&entry).is_some_and(|s| s.is_held_by(&app, Uid::of(&holder.uid)));
            if !held || entry.spec.retained.is_none() {
                return Ok(());
            }
            if self.replace(entry, |e| e.spec.retained = None).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The app `holder` is deleted with `deletionPolicy: Retain`: its Client
    /// ID is Retained in `secret_name`, with the verifier of its secret (a
    /// minted secret's, from its status; else the chosen secret's the entry
    /// keeps, read from the apiserver, never from a cache that may lag).
    /// `false` when the app does not hold it.
    pub async fn retain(
        &self,
        client_id: &str,
        holder: &Holder,
        secret_name: &str,
        minted: Option<String>,
    ) -> Result<bool, LedgerError> {
        for _ in 0..3 {
            let Some(entry) = self.fetch(client_id).await? else { return Ok(false) };
            let spec = &entry.spec;
            if spec.holder.uid != holder.uid || spec.state == LedgerState::Revoked {
                return Ok(false);
            }
            let verifier = minted.clone().or_else(|| match spec.state {
                LedgerState::Retained => spec.retained.as_ref().and_then(|r| r.verifier.clone()),
                _ => spec.verifiers.as_ref().map(|v| v.current.clone()),
            });
            let retained = Retained { secret_name: secret_name.to_owned(), verifier };
            if spec.state == LedgerState::Retained && spec.retained.as_ref() == Some(&retained) {
                return Ok(true);
            }
            let replaced = self
                .replace(entry, |e| {
                    e.spec.state = LedgerState::Retained;
                    e.spec.retained = Some(retained);
                    e.spec.verifiers = None;
                })
                .await?;
            if replaced {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `client_id` is given up by the app of UID `uid` (deleted), or by its
    /// retention: Revoked, for good. Nothing when someone else holds it.
    pub async fn revoke(&self, client_id: &str, uid: &str) -> Result<(), LedgerError> {
        for _ in 0..3 {
            let Some(entry) = self.fetch(client_id).await? else { return Ok(()) };
            if entry.spec.holder.uid != uid || entry.spec.state == LedgerState::Revoked {
                return Ok(());
            }
            if self
                .replace(entry, |e| {
                    e.spec.state = LedgerState::Revoked;
                    e.spec.retained = None;
                    e.spec.verifiers = None;
                })
                .await?
            {
                info!(client_id, "revoked the Client ID in the ledger");
                return Ok(());
            }
        }
        Ok(())
    }

    /// The retention in the Secret `secret` was given up (the Secret is gone):
    /// its Client ID is Revoked, unless it was taken over meanwhile.
    pub async fn revoke_retention(&self, client_id: &str, secret: &Key) -> Result<(), LedgerError> {
        let Some(entry) = self.fetch(client_id).await? else { return Ok(()) };
        let kept_there = entry.spec.state == LedgerState::Retained
            && entry.spec.holder.namespace == secret.namespace
            && entry.spec.retained.as_ref().is_some_and(|r| r.secret_name == secret.name);
        if kept_there {
            let uid = entry.spec.holder.uid.clone();
            return self.revoke(client_id, &uid).await;
        }
        Ok(())
    }

    /// Deletes the entry of a Client ID the app of UID `uid` holds but never
    /// issued anywhere (the authorization server holds another client of that
    /// ID): nothing was issued to revoke, and the ID stays importable.
    pub async fn release(&self, client_id: &str, uid: &str) -> Result<(), LedgerError> {
        let Some(entry) = self.fetch(client_id).await? else { return Ok(()) };
        if entry.spec.holder.uid != uid || entry.spec.state != LedgerState::Active {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: entry.uid(), resource_version: entry.resource_version() }),
            ..Default::default()
        };
        match self.api.delete(&entry.name_any(), &params).await {
            Ok(_) => {
                self.ledger.deleted(&entry);
                info!(client_id, "released a Client ID that was never issued");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                self.fetch(client_id).await?;
                Ok(())
            }
            Err(e) => Err(Self::failed(client_id)(e)),
        }
    }
}
