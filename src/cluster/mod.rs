//! The read model: what registrar knows of the cluster, kept by its watches
//! and read by everything else.
//!
//! - [`watches`]: one watch per kind (AppRegistrations, AppConsents,
//!   OrganizationPolicies, the metadata of credentials Secrets and of
//!   Namespaces, the Client ID ledger), the only writer of the caches; each
//!   change becomes reconcile requests for exactly the objects it affects.
//! - [`Caches`]: no public field; it answers questions (an app or a consent by
//!   key, the consents in force for a Client ID or in a namespace, the
//!   organization of a namespace and its policy, the ledger's word on a Client
//!   ID, synced or not).
//! - [`ledger`]: who holds each Client ID, as the watch of the ledger shows it
//!   (and as this instance's own ledger writes return it, so that it never
//!   acts on a view older than its own writes).
//!
//! How each answer is kept is private to this module: apps packed (`packed`),
//! Secrets as metadata only, the indexes that fan a change out to the objects
//! it affects (`index`), and what is dropped of every object before it is
//! cached (`kept`).

mod index;
mod kept;
pub mod ledger;
mod packed;
pub mod watches;

#[cfg(test)]
pub use watches::Contents;
pub use watches::{Caches, Selection, start};

pub use packed::PackedApp;

/// `app` as the cache keeps it: what registrar never reads dropped (for an
/// object a write returned, compared with cached ones).
pub fn as_cached(app: &mut crate::api::AppRegistration) {
    kept::app(app);
}
