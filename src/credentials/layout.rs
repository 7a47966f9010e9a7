//! The credentials Secret: its name, keys, labels and annotations, building the
//! desired object and reading back an observed one.
//!
//! The Secret is `Opaque`, lives in the app's namespace, has a controller owner
//! reference to the AppRegistration, and carries `app.kubernetes.io/managed-by`
//! and `registrar.dev/app` labels (the operator watches the metadata of the
//! Secrets with the latter). Its annotations record the Client ID, the secret
//! version, the rotate request it answers, and the seal (`super::seal`) that
//! proves registrar wrote exactly this: what lets a reconcile after a crash
//! between the Secret write and the status write finish from the Secret.
//!
//! Labels and owner references only say which app a Secret claims to belong
//! to; anyone who can write Secrets in the namespace can set them. Only the
//! seal, and status, are trusted.
//!
//! The AppRegistration's own labels and annotations are never copied: GitOps
//! tracking labels would make those tools prune the Secret.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::{
    ClientSecret,
    seal::{SEAL_ANNOTATION, SealKey, Sealed},
};
use crate::api::AppRegistration;

pub use crate::api::keys::{
    APP_LABEL, CLIENT_ID_ANNOTATION, EXTRA_KEYS_ANNOTATION, MANAGED_BY, ROTATE_REQUEST_ANNOTATION, VERSION_ANNOTATION,
};
pub use crate::api::{
    DEFAULT_CLIENT_ID_KEY, DEFAULT_CLIENT_SECRET_KEY, DEFAULT_ISSUER_KEY, DEFAULT_TOKEN_URL_KEY, MANAGED_BY_LABEL,
};

/// The longest Client ID read back from a Secret; a longer value is not one
/// registrar wrote (minted IDs have 22 characters).
const MAX_CLIENT_ID_BYTES: usize = 256;
/// The longest client secret read back from a Secret; a longer value is not one
/// registrar wrote, and is never held in memory.
const MAX_SECRET_BYTES: usize = 4096;
/// The longest URL (issuer, token URL) read back from a Secret.
const MAX_URL_BYTES: usize = 2048;

/// Where and how an app's credentials are stored, resolved from its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLayout {
    pub name: String,
    pub client_id_key: String,
    pub client_secret_key: String,
    pub issuer_key: String,
    pub token_url_key: String,
    pub extra_labels: BTreeMap<String, String>,
    pub extra_annotations: BTreeMap<String, String>,
    /// The authorization server's issuer and token URL, written beside the
    /// credentials when one is configured.
    pub server: Option<ServerUrls>,
}

/// Where a workload gets tokens: written into the Secret with a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrls {
    pub issuer: String,
    pub token_url: String,
}

impl SecretLayout {
    pub fn for_app(app: &AppRegistration) -> Self {
        let template = app.spec.secret.clone().unwrap_or_default();
        let keys = template.keys.unwrap_or_default();
        SecretLayout {
            name: template.name.unwrap_or_else(|| format!("{}-credentials", app.name_any())),
            client_id_key: keys.client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID_KEY.into()),
            client_secret_key: keys.client_secret.unwrap_or_else(|| DEFAULT_CLIENT_SECRET_KEY.into()),
            issuer_key: keys.issuer.unwrap_or_else(|| DEFAULT_ISSUER_KEY.into()),
            token_url_key: keys.token_url.unwrap_or_else(|| DEFAULT_TOKEN_URL_KEY.into()),
            extra_labels: template.labels,
            extra_annotations: template.annotations,
            server: None,
        }
    }

    /// The layout with the authorization server's URLs written beside the credentials.
    pub fn with_server(mut self, server: Option<ServerUrls>) -> Self {
        self.server = server;
        self
    }

    /// The informational data the Secret carries beside the credentials.
    fn extras(&self) -> Vec<(&str, &str)> {
        match &self.server {
            Some(s) => vec![(self.issuer_key.as_str(), s.issuer.as_str()), (&self.token_url_key, &s.token_url)],
            None => Vec::new(),
        }
    }

    fn labels(&self, app: &AppRegistration) -> BTreeMap<String, String> {
        let mut labels = self.extra_labels.clone();
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        labels.insert(APP_LABEL.into(), app.name_any());
        labels
    }

    /// What the seal of `issued` in this app's Secret vouches for.
    fn sealed<'a>(&'a self, app: &'a AppRegistration, issued: &'a Issued) -> Sealed<'a> {
        Sealed {
            namespace: app.meta().namespace.as_deref().unwrap_or_default(),
            secret_name: &self.name,
            app_uid: app.meta().uid.as_deref().unwrap_or_default(),
            client_id: &issued.client_id,
            version: issued.version,
            secret: issued.secret.as_ref(),
            rotate_request: issued.rotate_request.as_deref(),
        }
    }

    /// The record of the extra keys this layout writes; `None` when there are none.
    pub fn extra_keys_record(&self) -> Option<String> {
        if self.extra_labels.is_empty() && self.extra_annotations.is_empty() {
            return None;
        }
        let join = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>().join(",");
        Some(format!("labels={};annotations={}", join(&self.extra_labels), join(&self.extra_annotations)))
    }

    /// The extra labels and annotations a Secret (of `meta`) still carries that
    /// registrar wrote (its record says so) and this layout no longer wants.
    pub fn stale_extras(&self, meta: &ObjectMeta) -> (Vec<String>, Vec<String>) {
        let (recorded_labels, recorded_annotations) = recorded_extras(meta);
        let present = |map: &Option<BTreeMap<String, String>>, k: &str| map.as_ref().is_some_and(|m| m.contains_key(k));
        let labels = recorded_labels
            .into_iter()
            .filter(|k| !self.extra_labels.contains_key(k) && present(&meta.labels, k))
            .collect();
        let mut annotations: Vec<String> = recorded_annotations
            .into_iter()
            .filter(|k| !self.extra_annotations.contains_key(k) && present(&meta.annotations, k))
            .collect();
        if self.extra_keys_record().is_none() && present(&meta.annotations, EXTRA_KEYS_ANNOTATION) {
            annotations.push(EXTRA_KEYS_ANNOTATION.to_owned());
        }
        (labels, annotations)
    }

    fn annotations(&self, app: &AppRegistration, issued: &Issued, key: &SealKey) -> BTreeMap<String, String> {
        let mut annotations = self.extra_annotations.clone();
        if let Some(record) = self.extra_keys_record() {
            annotations.insert(EXTRA_KEYS_ANNOTATION.into(), record);
        }
        annotations.insert(CLIENT_ID_ANNOTATION.into(), issued.client_id.clone());
        if let Some(version) = issued.version {
            annotations.insert(VERSION_ANNOTATION.into(), version.to_string());
        }
        if let Some(request) = &issued.rotate_request {
            annotations.insert(ROTATE_REQUEST_ANNOTATION.into(), request.clone());
        }
        annotations.insert(SEAL_ANNOTATION.into(), key.seal(&self.sealed(app, issued)));
        annotations
    }

    /// The Secret holding `issued` for `app`, sealed with `key`.
    pub fn desired(&self, app: &AppRegistration, issued: &Issued, key: &SealKey) -> Secret {
        let mut data = BTreeMap::new();
        data.insert(self.client_id_key.clone(), ByteString(issued.client_id.clone().into_bytes()));
        if let Some(secret) = &issued.secret {
            data.insert(self.client_secret_key.clone(), ByteString(secret.expose().as_bytes().to_vec()));
        }
        for (key, value) in self.extras() {
            data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: app.namespace(),
                labels: Some(self.labels(app)),
                annotations: Some(self.annotations(app, issued, key)),
                owner_references: app.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// What registrar reads from a Secret's data: the Client ID and the client
    /// secret under this layout's keys, each only when of a size registrar could
    /// have written. Nothing else of the data is kept.
    pub fn contents(&self, secret: &Secret) -> SecretContents {
        let data = secret.data.as_ref();
        let value =
            |key: &str, max: usize| data.and_then(|d| d.get(key)).map(|b| b.0.as_slice()).filter(|b| b.len() <= max);
        SecretContents {
            client_id: value(&self.client_id_key, MAX_CLIENT_ID_BYTES)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned),
            secret: value(&self.client_secret_key, MAX_SECRET_BYTES).and_then(ClientSecret::from_bytes),
            extras: self
                .extras()
                .into_iter()
                .filter_map(|(key, _)| {
                    let text = std::str::from_utf8(value(key, MAX_URL_BYTES)?).ok()?;
                    Some((key.to_owned(), text.to_owned()))
                })
                .collect(),
        }
    }

    /// Reads what a Secret claiming to be `app`'s holds: `meta` is its metadata
    /// (controlled by the app: see [`controlled_by`]) and `contents` its data.
    pub fn observe_owned(
        &self,
        app: &AppRegistration,
        meta: &ObjectMeta,
        contents: &SecretContents,
        key: &SealKey,
    ) -> OwnedSecret {
        let no_annotations = BTreeMap::new();
        let annotations = meta.annotations.as_ref().unwrap_or(&no_annotations);
        let issued = Issued {
            client_id: contents.client_id.clone().unwrap_or_default(),
            secret: contents.secret.clone(),
            version: annotations.get(VERSION_ANNOTATION).and_then(|v| v.parse().ok()),
            rotate_request: annotations.get(ROTATE_REQUEST_ANNOTATION).cloned(),
        };
        let sealed =
            annotations.get(SEAL_ANNOTATION).is_some_and(|seal| key.verifies(&self.sealed(app, &issued), seal));
        let no_labels = BTreeMap::new();
        let labels = meta.labels.as_ref().unwrap_or(&no_labels);
        let labels_current = self.labels(app).iter().all(|(k, v)| labels.get(k) == Some(v));
        let annotations_current = sealed
            && self.extra_annotations.iter().all(|(k, v)| annotations.get(k) == Some(v))
            && annotations.get(CLIENT_ID_ANNOTATION) == Some(&issued.client_id);
        let extras_current =
            self.extras().into_iter().all(|(key, value)| contents.extras.get(key).map(String::as_str) == Some(value));
        // Keys dropped from spec.secret are removed; the record follows the spec.
        let (stale_labels, stale_annotations) = self.stale_extras(meta);
        let record_current = annotations.get(EXTRA_KEYS_ANNOTATION) == self.extra_keys_record().as_ref()
            && stale_labels.is_empty()
            && stale_annotations.is_empty();
        OwnedSecret {
            issued,
            sealed,
            metadata_current: labels_current && annotations_current && extras_current && record_current,
            resource_version: meta.resource_version.clone(),
        }
    }

    /// Reads what `secret` (the object named [`SecretLayout::name`], if any) holds for `app`.
    pub fn observe(&self, app: &AppRegistration, secret: Option<&Secret>, key: &SealKey) -> Observed {
        match secret {
            None => Observed::Missing,
            Some(secret) if !controlled_by(app, &secret.metadata) => Observed::Foreign,
            Some(secret) => Observed::Owned(self.observe_owned(app, &secret.metadata, &self.contents(secret), key)),
        }
    }
}

/// Whether the object of `meta` names `app` as its controller. Only a claim:
/// whoever writes Secrets in the namespace can set it.
pub fn controlled_by(app: &AppRegistration, meta: &ObjectMeta) -> bool {
    let uid = app.meta().uid.as_ref();
    meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && Some(&o.uid) == uid)
}

/// The values registrar reads from a credentials Secret's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretContents {
    pub client_id: Option<String>,
    pub secret: Option<ClientSecret>,
    /// The informational values (issuer, token URL) under the layout's keys.
    pub extras: BTreeMap<String, String>,
}

/// Credentials as written to, or read from, the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub client_id: String,
    /// The plaintext secret; `None` for a public client (or when missing).
    pub secret: Option<ClientSecret>,
    /// The secret version; `None` for a public client.
    pub version: Option<i64>,
    pub rotate_request: Option<String>,
}

/// What the Secret of an app's name holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// No Secret of that name.
    Missing,
    /// A Secret of that name not controlled by this app: never overwritten.
    Foreign,
    /// A Secret naming this app as its controller: registrar's, unless altered
    /// (see `sealed`).
    Owned(OwnedSecret),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSecret {
    pub issued: Issued,
    /// Its seal verifies: registrar wrote exactly what it holds.
    pub sealed: bool,
    /// Labels, annotations (the seal included) and informational data
    /// (issuer, token URL) registrar sets are all present and current.
    pub metadata_current: bool,
    pub resource_version: Option<String>,
}

/// The extra label and annotation keys a Secret's record says registrar
/// wrote there (`registrar.dev/extra-keys`: `labels=a,b;annotations=c`).
pub fn recorded_extras(meta: &ObjectMeta) -> (Vec<String>, Vec<String>) {
    let record = meta.annotations.as_ref().and_then(|a| a.get(EXTRA_KEYS_ANNOTATION)).map(String::as_str);
    let listed = |kind: &str| -> Vec<String> {
        record
            .unwrap_or_default()
            .split(';')
            .find_map(|part| part.strip_prefix(kind)?.strip_prefix('='))
            .map(|keys| keys.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    (listed("labels"), listed("annotations"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppRegistrationSpec, Scope, SecretKeys, SecretTemplate};

    fn app() -> AppRegistration {
        let mut app = AppRegistration::new(
            "billing",
            AppRegistrationSpec { display_name: "Billing".into(), scope: Scope::Group, ..Default::default() },
        );
        app.metadata.namespace = Some("team-a".into());
        app.metadata.uid = Some("uid-1".into());
        app.metadata.labels = Some([("argocd.argoproj.io/instance".to_string(), "x".to_string())].into());
        app
    }

    fn key() -> SealKey {
        SealKey::from_bytes(&[7; 32]).unwrap()
    }

    fn issued() -> Issued {
        Issued {
            client_id: "cid".into(),
            secret: Some(ClientSecret::from_bytes(b"s3cret").unwrap()),
            version: Some(2),
            rotate_request: Some("r1".into()),
        }
    }

    #[test]
    fn defaults_name_and_keys() {
        let layout = SecretLayout::for_app(&app());
        assert_eq!(layout.name, "billing-credentials");
        assert_eq!(layout.client_id_key, "client_id");
        assert_eq!(layout.client_secret_key, "client_secret");
    }

    #[test]
    fn dropped_extras_are_stale_and_others_labels_are_not() {
        let mut app = app();
        let template = app.spec.secret.get_or_insert_with(Default::default);
        template.labels.insert("team".into(), "a".into());
        template.labels.insert("tier".into(), "gold".into());
        template.annotations.insert("note".into(), "x".into());
        let before = SecretLayout::for_app(&app);
        assert_eq!(before.extra_keys_record().as_deref(), Some("labels=team,tier;annotations=note"));
        let pairs = |items: &[(&str, &str)]| -> BTreeMap<String, String> {
            items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let meta = ObjectMeta {
            labels: Some(pairs(&[("team", "a"), ("tier", "gold"), ("backup", "daily")])),
            annotations: Some(pairs(&[("note", "x"), (EXTRA_KEYS_ANNOTATION, "labels=team,tier;annotations=note")])),
            ..Default::default()
        };
        assert_eq!(before.stale_extras(&meta), (vec![], vec![]));
        let template = app.spec.secret.as_mut().unwrap();
        template.labels.remove("tier");
        template.annotations.clear();
        let after = SecretLayout::for_app(&app);
        assert_eq!(after.stale_extras(&meta), (vec!["tier".to_string()], vec!["note".to_string()]));
        app.spec.secret = None;
        let none = SecretLayout::for_app(&app);
        let (labels, annotations) = none.stale_extras(&meta);
        assert_eq!(labels, ["team", "tier"]);
        assert_eq!(annotations, ["note", EXTRA_KEYS_ANNOTATION]);
    }

    #[test]
    fn desired_secret_is_owned_labelled_and_annotated_without_the_apps_labels() {
        let app = app();
        let mut spec_secret = SecretTemplate {
            name: Some("creds".into()),
            keys: Some(SecretKeys {
                client_id: Some("id".into()),
                client_secret: Some("pw".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        spec_secret.labels.insert("team".into(), "a".into());
        let mut app2 = app.clone();
        app2.spec.secret = Some(spec_secret);
        let layout = SecretLayout::for_app(&app2);
        let secret = layout.desired(&app2, &issued(), &key());
        assert_eq!(secret.metadata.name.as_deref(), Some("creds"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let labels = secret.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some("registrar"));
        assert_eq!(labels.get(APP_LABEL).map(String::as_str), Some("billing"));
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert!(!labels.contains_key("argocd.argoproj.io/instance"));
        let annotations = secret.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[VERSION_ANNOTATION], "2");
        assert_eq!(annotations[CLIENT_ID_ANNOTATION], "cid");
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["id"].0, b"cid");
        assert_eq!(data["pw"].0, b"s3cret");
    }

    #[test]
    fn public_client_secret_holds_only_the_client_id() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let secret = layout.desired(
            &app,
            &Issued { client_id: "cid".into(), secret: None, version: None, rotate_request: None },
            &key(),
        );
        assert_eq!(secret.data.unwrap().keys().collect::<Vec<_>>(), ["client_id"]);
    }

    #[test]
    fn observe_reads_back_what_desired_wrote() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let secret = layout.desired(&app, &issued(), &key());
        let Observed::Owned(owned) = layout.observe(&app, Some(&secret), &key()) else { panic!("not owned") };
        assert_eq!(owned.issued, issued());
        assert!(owned.sealed);
        assert!(owned.metadata_current);
    }

    #[test]
    fn a_secret_that_claims_the_app_without_its_seal_is_not_sealed() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut forged = layout.desired(&app, &issued(), &SealKey::from_bytes(&[9; 32]).unwrap());
        let Observed::Owned(owned) = layout.observe(&app, Some(&forged), &key()) else { panic!("not owned") };
        assert!(!owned.sealed, "sealed under another key");
        assert!(!owned.metadata_current);
        forged.metadata.annotations.as_mut().unwrap().remove(SEAL_ANNOTATION);
        let Observed::Owned(owned) = layout.observe(&app, Some(&forged), &key()) else { panic!("not owned") };
        assert!(!owned.sealed, "no seal at all");
    }

    #[test]
    fn any_change_to_a_sealed_secret_breaks_its_seal() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let sealed = layout.desired(&app, &issued(), &key());
        let changes: [fn(&mut Secret); 4] = [
            |s| {
                s.data.as_mut().unwrap().insert("client_id".into(), ByteString(b"other".to_vec()));
            },
            |s| {
                s.data.as_mut().unwrap().insert("client_secret".into(), ByteString(b"chosen".to_vec()));
            },
            |s| {
                s.metadata.annotations.as_mut().unwrap().insert(VERSION_ANNOTATION.into(), "3".into());
            },
            |s| {
                s.metadata.annotations.as_mut().unwrap().insert(ROTATE_REQUEST_ANNOTATION.into(), "r9".into());
            },
        ];
        for change in changes {
            let mut altered = sealed.clone();
            change(&mut altered);
            let Observed::Owned(owned) = layout.observe(&app, Some(&altered), &key()) else { panic!("not owned") };
            assert!(!owned.sealed, "{:?}", altered.metadata.annotations);
        }
        // The same Secret, moved to another app, does not carry that app's seal.
        let mut other = app.clone();
        other.metadata.uid = Some("uid-2".into());
        let mut moved = sealed.clone();
        moved.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-2".into();
        let Observed::Owned(owned) = layout.observe(&other, Some(&moved), &key()) else { panic!("not owned") };
        assert!(!owned.sealed);
    }

    #[test]
    fn with_a_server_the_secret_carries_its_urls_and_notices_their_drift() {
        let app = app();
        let server =
            ServerUrls { issuer: "https://id.example.com".into(), token_url: "https://id.example.com/t".into() };
        let layout = SecretLayout::for_app(&app).with_server(Some(server));
        let mut secret = layout.desired(&app, &issued(), &key());
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["issuer"].0, b"https://id.example.com");
        assert_eq!(data["token_url"].0, b"https://id.example.com/t");
        let Observed::Owned(owned) = layout.observe(&app, Some(&secret), &key()) else { panic!("not owned") };
        assert!(owned.sealed && owned.metadata_current);
        secret.data.as_mut().unwrap().insert("token_url".into(), ByteString(b"https://evil.example.com".to_vec()));
        let Observed::Owned(owned) = layout.observe(&app, Some(&secret), &key()) else { panic!("not owned") };
        assert!(owned.sealed, "the URLs are not credentials");
        assert!(!owned.metadata_current, "but they are repaired");
        // Without a server they are neither written nor expected.
        let plain = SecretLayout::for_app(&app);
        assert!(!plain.desired(&app, &issued(), &key()).data.unwrap().contains_key("issuer"));
    }

    #[test]
    fn values_larger_than_registrar_writes_are_not_read() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(), &key());
        let data = secret.data.as_mut().unwrap();
        data.insert("client_id".into(), ByteString(vec![b'a'; 257]));
        data.insert("client_secret".into(), ByteString(vec![b'b'; 4097]));
        data.insert("junk".into(), ByteString(vec![0; 1 << 20]));
        assert_eq!(layout.contents(&secret), SecretContents::default());
    }

    #[test]
    fn observe_notices_label_drift() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(), &key());
        secret.metadata.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        let Observed::Owned(owned) = layout.observe(&app, Some(&secret), &key()) else { panic!("not owned") };
        assert!(!owned.metadata_current);
    }

    #[test]
    fn a_secret_controlled_by_another_object_is_foreign() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued(), &key());
        secret.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert_eq!(layout.observe(&app, Some(&secret), &key()), Observed::Foreign);
        secret.metadata.owner_references = None;
        assert_eq!(layout.observe(&app, Some(&secret), &key()), Observed::Foreign);
        assert_eq!(layout.observe(&app, None, &key()), Observed::Missing);
    }
}
