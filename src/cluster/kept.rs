//! What the caches keep of the objects registrar watches: only the labels
//! and annotations registrar reads, never the rest.
//!
//! Whoever holds RBAC in a namespace writes the metadata of its apps,
//! consents and Secrets — up to the apiserver's 256 KiB of annotations per
//! object — and every replica caches those objects. Keeping only what
//! registrar reads makes the memory they cost registrar's own choice: a
//! tenant's annotations under other keys cost nothing, and the few values
//! registrar reads that a tenant writes freely are kept short.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Namespace,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, core::PartialObjectMeta};
use sha2::{Digest, Sha256};

use crate::{
    api::{
        AppConsent, AppRegistration, OrganizationPolicy,
        keys::{
            APP_LABEL, CLIENT_ID_ANNOTATION, EXTRA_KEYS_ANNOTATION, MANAGED_BY_LABEL, ORGANIZATION_LABEL,
            REGISTERED_BY_ANNOTATION, REGISTERED_BY_GROUPS_ANNOTATION, RETAINED_CLIENT_ID_ANNOTATION,
            RETAINED_FROM_ANNOTATION, RETAINED_HASH_ANNOTATION, RETAINED_SEAL_ANNOTATION, ROTATE_ANNOTATION,
            ROTATE_REQUEST_ANNOTATION, SEAL_ANNOTATION, VERSION_ANNOTATION,
        },
    },
    credentials::layout::recorded_extras,
};

/// A rotate request longer than this is kept as a digest of it: it only has
/// to differ from the last one handled.
pub const MAX_ROTATE_REQUEST: usize = 256;
/// The longest Registered By user name kept (longer: as if absent).
const MAX_REGISTERED_BY: usize = 512;
/// The longest list of Registered By groups kept (longer: as if absent).
const MAX_REGISTERED_BY_GROUPS: usize = 8 * 1024;
/// The longest value of an annotation registrar writes on a Secret whose
/// values it bounds (a Client ID, a version, a seal, a retention record);
/// longer is someone else's writing, kept as if absent.
const MAX_REGISTRARS_VALUE: usize = 1024;

/// A rotate request as registrar handles it: as written when short, else
/// `sha256:<hex>` of it.
pub fn rotate_request(value: &str) -> String {
    if value.len() <= MAX_ROTATE_REQUEST {
        return value.to_owned();
    }
    let digest = Sha256::digest(value.as_bytes());
    format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// An app as cached: its rotate request and Registered By annotations, no
/// labels, no managed fields.
pub fn app(app: &mut AppRegistration) {
    let meta = &mut app.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = meta.annotations.take().and_then(|mut annotations| {
        annotations.retain(|key, value| match key.as_str() {
            ROTATE_ANNOTATION => {
                *value = rotate_request(value);
                true
            }
            REGISTERED_BY_ANNOTATION => value.len() <= MAX_REGISTERED_BY,
            REGISTERED_BY_GROUPS_ANNOTATION => value.len() <= MAX_REGISTERED_BY_GROUPS,
            _ => false,
        });
        (!annotations.is_empty()).then_some(annotations)
    });
}

/// A consent as cached: no labels, annotations or managed fields.
pub fn consent(consent: &mut AppConsent) {
    let meta = &mut consent.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
}

/// A namespace as cached: its organization label.
pub fn namespace(namespace: &mut PartialObjectMeta<Namespace>) {
    let meta = &mut namespace.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = meta.labels.take().and_then(|mut labels| {
        labels.retain(|key, _| key == ORGANIZATION_LABEL);
        (!labels.is_empty()).then_some(labels)
    });
}

/// An organization's policy as cached (written by organization admins, read
/// whole): without its managed fields and kubectl's last-applied copy.
pub fn policy(policy: &mut OrganizationPolicy) {
    let meta = policy.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The annotation `kubectl apply` (client-side) keeps a full copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What registrar reads of a credentials Secret's metadata: its resource
/// version, its controller reference, registrar's own labels and annotations,
/// and — on a Secret an app controls — the extra ones its record says
/// registrar wrote there.
pub fn secret_meta(meta: &ObjectMeta) -> ObjectMeta {
    let controller: Vec<OwnerReference> =
        meta.owner_references.iter().flatten().filter(|o| o.controller == Some(true)).cloned().collect();
    let app_controls = controller.iter().any(|o| o.kind == AppRegistration::kind(&()));
    let (extra_labels, extra_annotations) = if app_controls { recorded_extras(meta) } else { (Vec::new(), Vec::new()) };
    let labels = kept(meta.labels.as_ref(), |key, _| {
        key == APP_LABEL || key == MANAGED_BY_LABEL || extra_labels.iter().any(|k| k == key)
    });
    // A Secret no app controls is read only for a retention record.
    let annotations = kept(meta.annotations.as_ref(), |key, value| match key {
        RETAINED_CLIENT_ID_ANNOTATION
        | RETAINED_FROM_ANNOTATION
        | RETAINED_HASH_ANNOTATION
        | RETAINED_SEAL_ANNOTATION => value.len() <= MAX_REGISTRARS_VALUE,
        CLIENT_ID_ANNOTATION | VERSION_ANNOTATION | SEAL_ANNOTATION => {
            app_controls && value.len() <= MAX_REGISTRARS_VALUE
        }
        ROTATE_REQUEST_ANNOTATION => app_controls && value.len() <= MAX_ROTATE_REQUEST.max("sha256:".len() + 64),
        EXTRA_KEYS_ANNOTATION => app_controls,
        _ => extra_annotations.iter().any(|k| k == key),
    });
    ObjectMeta {
        resource_version: meta.resource_version.clone(),
        labels,
        annotations,
        owner_references: (!controller.is_empty()).then_some(controller),
        ..Default::default()
    }
}

fn kept(map: Option<&BTreeMap<String, String>>, keep: impl Fn(&str, &str) -> bool) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> =
        map?.iter().filter(|(k, v)| keep(k, v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    (!kept.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppConsentSpec, AppRegistrationSpec};

    fn stuffed() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("example.com/junk".to_string(), "x".repeat(240 * 1024)),
            (LAST_APPLIED.to_string(), "{}".to_string()),
            ("registrar.dev/not-read".to_string(), "y".repeat(1024)),
        ])
    }

    #[test]
    fn an_app_keeps_only_the_annotations_registrar_reads_and_short() {
        let mut app = AppRegistration::new("billing", AppRegistrationSpec::default());
        let mut annotations = stuffed();
        annotations.insert(ROTATE_ANNOTATION.into(), "2026-12-07".into());
        annotations.insert(REGISTERED_BY_ANNOTATION.into(), "alice".into());
        annotations.insert(REGISTERED_BY_GROUPS_ANNOTATION.into(), "g".repeat(MAX_REGISTERED_BY_GROUPS + 1));
        app.metadata.annotations = Some(annotations);
        app.metadata.labels = Some(BTreeMap::from([("team".to_string(), "z".repeat(63))]));
        super::app(&mut app);
        let kept = app.metadata.annotations.clone().unwrap();
        assert_eq!(kept.keys().collect::<Vec<_>>(), [REGISTERED_BY_ANNOTATION, ROTATE_ANNOTATION]);
        assert_eq!(kept[ROTATE_ANNOTATION], "2026-12-07", "a short request as written");
        assert!(app.metadata.labels.is_none());

        let mut long = AppRegistration::new("billing", AppRegistrationSpec::default());
        long.metadata.annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.to_string(), "r".repeat(100_000))]));
        super::app(&mut long);
        let request = &long.metadata.annotations.unwrap()[ROTATE_ANNOTATION];
        assert!(request.starts_with("sha256:") && request.len() == 71, "{request}");
        assert_eq!(*request, rotate_request(&"r".repeat(100_000)), "the same request, the same digest");
        assert_ne!(*request, rotate_request(&"r".repeat(100_001)));
    }

    #[test]
    fn a_consent_and_a_namespace_keep_nothing_a_tenant_adds() {
        let mut consent = AppConsent::new("c", AppConsentSpec::default());
        consent.metadata.annotations = Some(stuffed());
        consent.metadata.labels = Some(BTreeMap::from([("a".to_string(), "b".to_string())]));
        super::consent(&mut consent);
        assert!(consent.metadata.annotations.is_none() && consent.metadata.labels.is_none());

        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.annotations = Some(stuffed());
        ns.metadata.labels = Some(BTreeMap::from([
            (ORGANIZATION_LABEL.to_string(), "acme".to_string()),
            ("kubernetes.io/metadata.name".to_string(), "team-a".to_string()),
        ]));
        super::namespace(&mut ns);
        assert!(ns.metadata.annotations.is_none());
        assert_eq!(ns.metadata.labels.unwrap().keys().collect::<Vec<_>>(), [ORGANIZATION_LABEL]);
    }

    fn owner(kind: &str) -> OwnerReference {
        OwnerReference {
            api_version: "registrar.dev/v1alpha1".into(),
            kind: kind.into(),
            name: "billing".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_keeps_registrars_keys_and_the_extras_it_recorded() {
        let mut annotations = stuffed();
        annotations.insert(SEAL_ANNOTATION.into(), "v1.seal".into());
        annotations.insert(CLIENT_ID_ANNOTATION.into(), "c".repeat(MAX_REGISTRARS_VALUE + 1));
        annotations.insert(EXTRA_KEYS_ANNOTATION.into(), "labels=team;annotations=note".into());
        annotations.insert("note".into(), "from the spec".into());
        let mut labels = BTreeMap::from([
            (APP_LABEL.to_string(), "billing".to_string()),
            (MANAGED_BY_LABEL.to_string(), "registrar".to_string()),
            ("team".to_string(), "a".to_string()),
            ("other".to_string(), "b".to_string()),
        ]);
        let meta = ObjectMeta {
            resource_version: Some("7".into()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            owner_references: Some(vec![owner("AppRegistration")]),
            ..Default::default()
        };
        let kept = secret_meta(&meta);
        assert_eq!(kept.resource_version.as_deref(), Some("7"));
        assert_eq!(
            kept.annotations.unwrap().keys().collect::<Vec<_>>(),
            ["note", EXTRA_KEYS_ANNOTATION, SEAL_ANNOTATION],
            "an over-long Client ID is someone else's writing"
        );
        labels.remove("other");
        assert_eq!(kept.labels.unwrap(), labels);

        // A labelled Secret no app controls: registrar reads only a retention record.
        let loose = ObjectMeta { owner_references: None, annotations: Some(annotations), ..meta };
        let kept = secret_meta(&loose);
        assert_eq!(kept.annotations, None, "nothing registrar reads of a Secret no app controls");
        assert_eq!(kept.labels.unwrap().len(), 2);
    }
}
