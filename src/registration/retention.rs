//! The keeper of retentions (`deletionPolicy: Retain`) in the Client ID
//! ledger, run by the leader beside the app controller:
//!
//! - a retained Secret deleted gives its Client ID up: the ledger revokes it
//!   (a namespace deletion takes its retained Secrets, and their Client IDs,
//!   with it);
//! - a Secret retained before the ledger existed (a retention record sealed
//!   under the operator's key) enters the ledger as Retained, once, so it can
//!   be taken over as before, and is refused to every other namespace.
//!
//! It starts with a pass over every retention the ledger and the Secret cache
//! know, then follows the Secrets the watches point it at. Every decision is
//! checked against the apiserver: a cache that lags never revokes a Client ID.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::{
    api::{ClientIdEntry, Holder, LedgerState, Retained, entry_name},
    cluster::Caches,
    cluster::ledger::Word,
    credentials::retention::{RETAINED_FROM_ANNOTATION, RETAINED_SEAL_ANNOTATION, Retention},
    runtime::Key,
};

use super::ledger::Clerk;

/// Looks after retentions until `triggers` ends: those in `namespace` (with
/// `--watch-namespace`), or in every namespace.
pub async fn keep(client: Client, caches: Caches, namespace: Option<String>, triggers: impl Stream<Item = Key>) {
    caches.synced().await;
    let clerk = Clerk::new(client.clone(), caches.ledger().clone());
    // The ledger's retentions here, and sealed records from before the ledger.
    let mut first: Vec<Key> = caches.ledger().retained_secrets();
    first.extend(caches.secret_keys().into_iter().filter(|key| {
        caches
            .secret_meta(&key.namespace, &key.name)
            .is_some_and(|meta| meta.annotations.is_some_and(|a| a.contains_key(RETAINED_SEAL_ANNOTATION)))
    }));
    let watched = |secret: &Key| namespace.as_ref().is_none_or(|ns| *ns == secret.namespace);
    for secret in first.iter().filter(|s| watched(s)) {
        look_at(secret, &client, &caches, &clerk).await;
    }
    let mut triggers = std::pin::pin!(triggers);
    while let Some(secret) = triggers.next().await {
        look_at(&secret, &client, &caches, &clerk).await;
    }
}

/// Revokes the Client ID retained in `secret` if the Secret is gone; records
/// a sealed retention from before the ledger.
async fn look_at(secret: &Key, client: &Client, caches: &Caches, clerk: &Clerk) {
    let Key { namespace, name } = secret;
    let live = match Api::<Secret>::namespaced(client.clone(), namespace).get_metadata_opt(name).await {
        Ok(live) => live,
        Err(e) => {
            warn!(namespace, secret = name, error = %e, "could not read a retained Secret; looked at again on its next change");
            return;
        }
    };
    let Some(live) = live else {
        if let Some(client_id) = caches.ledger().retention_at(secret)
            && let Err(e) = clerk.revoke_retention(&client_id, secret).await
        {
            warn!(namespace, secret = name, client_id, error = %e, "could not revoke a retention given up");
        }
        return;
    };
    if caches.ledger().retention_at(secret).is_some() {
        return;
    }
    let Some(retention) = Retention::read(namespace, name, live.annotations(), caches.seal_key()) else { return };
    if caches.ledger().word(&retention.client_id) != Word::Free {
        return;
    }
    let holder = Holder {
        namespace: namespace.clone(),
        name: live.annotations().get(RETAINED_FROM_ANNOTATION).cloned().unwrap_or_else(|| name.clone()),
        // The app is gone and its UID was not recorded; the Secret's stands in.
        uid: live.uid().unwrap_or_default(),
    };
    let mut entry = ClientIdEntry::active(&retention.client_id, holder);
    entry.spec.state = LedgerState::Retained;
    entry.spec.retained = Some(Retained { secret_name: name.clone(), verifier: retention.secret_hash });
    match clerk.record(&entry).await {
        Ok(true) => info!(
            namespace,
            secret = name,
            client_id = retention.client_id,
            entry = entry_name(&retention.client_id),
            "recorded a retention from before the ledger"
        ),
        Ok(false) => {}
        Err(e) => warn!(namespace, secret = name, error = %e, "could not record a retention in the ledger"),
    }
}
