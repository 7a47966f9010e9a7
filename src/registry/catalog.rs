//! The Browse panel of a namespace: the Organization apps of its organization
//! and the Global apps of the platform namespace, each with whether this
//! namespace consented.

use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};
use serde::Serialize;
use serde_json::{Value, json};

use super::Registry;
use crate::{api::Scope, consent::visibility::ORGANIZATION_LABEL};

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
}

/// The catalog of `namespace`.
pub(super) fn catalog(registry: &Registry, namespace: &str) -> Value {
    let index = &registry.caches.index;
    let org = index.organization_of(namespace);
    let mut org_namespaces = index.labelled_namespaces_of(&org);
    if org == index.default_organization() {
        org_namespaces.extend(
            registry
                .caches
                .namespaces
                .state()
                .iter()
                .filter(|ns| ns.labels().get(ORGANIZATION_LABEL).is_none_or(|l| l.is_empty()))
                .map(|ns| ns.name_any()),
        );
    }
    if !org_namespaces.iter().any(|n| n == namespace) {
        org_namespaces.push(namespace.to_owned());
    }
    let entries = |namespaces: &[String], scope: Scope| -> Vec<CatalogEntry> {
        let mut entries: Vec<CatalogEntry> = namespaces
            .iter()
            .flat_map(|ns| index.apps_in_namespace(ns))
            .filter_map(|(ns, name)| registry.caches.apps.get(&ObjectRef::new(&name).within(&ns)))
            .filter(|app| app.spec.scope == scope && app.meta().deletion_timestamp.is_none())
            .filter_map(|app| {
                let (client_id, _) = registry.held_client_id(&app)?;
                let served = super::served(&app);
                Some(CatalogEntry {
                    consented: registry.granted_scopes(&app, namespace).is_some(),
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
