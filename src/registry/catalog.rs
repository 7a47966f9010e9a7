//! The Browse panel of a namespace: the Organization apps of its organization
//! and the Global apps of the platform namespace, each with whether this
//! namespace consented.

use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use super::Registry;
use crate::api::Scope;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogEntry {
    client_id: String,
    display_name: String,
    namespace: String,
    name: String,
    scope: Scope,
    oauth_scopes: Vec<String>,
    consented: bool,
    /// Whether the namespace's organization policy allows it (always, when Unrestricted).
    allowlisted: bool,
}

/// The catalog of `namespace`.
pub(super) fn catalog(registry: &Registry, namespace: &str) -> Value {
    let caches = &registry.caches;
    let org = caches.organization_of(namespace);
    let mut org_namespaces = caches.namespaces_of(&org);
    if !org_namespaces.iter().any(|n| n == namespace) {
        org_namespaces.push(namespace.to_owned());
    }
    let entries = |namespaces: &[String], scope: Scope| -> Vec<CatalogEntry> {
        let mut entries: Vec<CatalogEntry> = namespaces
            .iter()
            .flat_map(|ns| caches.apps_in(ns))
            .filter_map(|app| caches.app(&app.namespace, &app.name))
            .filter(|app| app.spec.scope == scope && app.meta().deletion_timestamp.is_none())
            .filter_map(|app| {
                let (client_id, _) = registry.held_client_id(&app)?;
                let served = super::served(&app);
                Some(CatalogEntry {
                    consented: registry.granted_scopes(&app, namespace).is_some(),
                    allowlisted: registry.policy_allows(&app, namespace),
                    client_id,
                    display_name: served.display_name,
                    namespace: app.namespace().unwrap_or_default(),
                    name: app.name_any(),
                    scope,
                    oauth_scopes: served.oauth_scopes,
                })
            })
            .collect();
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        entries
    };
    json!({
        "namespace": namespace,
        "organization": org,
        "organizationApps": entries(&org_namespaces, Scope::Organization),
        "globalApps": entries(std::slice::from_ref(&registry.platform_namespace), Scope::Global),
    })
}
