//! The credentials Secret: its name, keys, labels and annotations, building the
//! desired object and reading back an observed one.
//!
//! The Secret is `Opaque`, lives in the app's namespace, has a controller owner
//! reference to the AppRegistration, and carries `app.kubernetes.io/managed-by`
//! and `registrar.dev/app` labels (the operator watches only Secrets with the
//! latter). Its annotations record the Client ID, the secret version and the
//! rotate request it answers, which is what lets a reconcile after a crash
//! between the Secret write and the status write finish from the Secret.
//! The AppRegistration's own labels and annotations are never copied: GitOps
//! tracking labels would make those tools prune the Secret.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::ClientSecret;
use crate::api::AppRegistration;

pub use crate::api::{DEFAULT_CLIENT_ID_KEY, DEFAULT_CLIENT_SECRET_KEY, MANAGED_BY_LABEL};
pub const MANAGED_BY: &str = "registrar";
/// Label naming the app a Secret belongs to; the Secret watch selects on it.
pub const APP_LABEL: &str = "registrar.dev/app";
pub const CLIENT_ID_ANNOTATION: &str = "registrar.dev/client-id";
pub const VERSION_ANNOTATION: &str = "registrar.dev/secret-version";
/// The `registrar.dev/rotate` value this secret version answers, if any.
pub const ROTATE_REQUEST_ANNOTATION: &str = "registrar.dev/rotate-request";

/// Where and how an app's credentials are stored, resolved from its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLayout {
    pub name: String,
    pub client_id_key: String,
    pub client_secret_key: String,
    pub extra_labels: BTreeMap<String, String>,
    pub extra_annotations: BTreeMap<String, String>,
}

impl SecretLayout {
    pub fn for_app(app: &AppRegistration) -> Self {
        let template = app.spec.secret.clone().unwrap_or_default();
        let keys = template.keys.unwrap_or_default();
        SecretLayout {
            name: template.name.unwrap_or_else(|| format!("{}-credentials", app.name_any())),
            client_id_key: keys.client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID_KEY.into()),
            client_secret_key: keys.client_secret.unwrap_or_else(|| DEFAULT_CLIENT_SECRET_KEY.into()),
            extra_labels: template.labels,
            extra_annotations: template.annotations,
        }
    }

    fn labels(&self, app: &AppRegistration) -> BTreeMap<String, String> {
        let mut labels = self.extra_labels.clone();
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        labels.insert(APP_LABEL.into(), app.name_any());
        labels
    }

    fn annotations(&self, issued: &Issued) -> BTreeMap<String, String> {
        let mut annotations = self.extra_annotations.clone();
        annotations.insert(CLIENT_ID_ANNOTATION.into(), issued.client_id.clone());
        if let Some(version) = issued.version {
            annotations.insert(VERSION_ANNOTATION.into(), version.to_string());
        }
        if let Some(request) = &issued.rotate_request {
            annotations.insert(ROTATE_REQUEST_ANNOTATION.into(), request.clone());
        }
        annotations
    }

    /// The Secret holding `issued` for `app`.
    pub fn desired(&self, app: &AppRegistration, issued: &Issued) -> Secret {
        let mut data = BTreeMap::new();
        data.insert(self.client_id_key.clone(), ByteString(issued.client_id.clone().into_bytes()));
        if let Some(secret) = &issued.secret {
            data.insert(self.client_secret_key.clone(), ByteString(secret.expose().as_bytes().to_vec()));
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: app.namespace(),
                labels: Some(self.labels(app)),
                annotations: Some(self.annotations(issued)),
                owner_references: app.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Default::default()
        }
    }

    /// Reads what `secret` (the object named [`SecretLayout::name`], if any) holds for `app`.
    pub fn observe(&self, app: &AppRegistration, secret: Option<&Secret>) -> Observed {
        let Some(secret) = secret else {
            return Observed::Missing;
        };
        let owned = secret
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == app.meta().uid.as_ref());
        if !owned {
            return Observed::Foreign;
        }
        let data = secret.data.as_ref();
        let value = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.as_slice());
        let annotations = secret.annotations();
        let issued = Issued {
            client_id: value(&self.client_id_key)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned)
                .unwrap_or_default(),
            secret: value(&self.client_secret_key).and_then(ClientSecret::from_bytes),
            version: annotations.get(VERSION_ANNOTATION).and_then(|v| v.parse().ok()),
            rotate_request: annotations.get(ROTATE_REQUEST_ANNOTATION).cloned(),
        };
        let desired_labels = self.labels(app);
        let labels_current = desired_labels.iter().all(|(k, v)| secret.labels().get(k) == Some(v));
        let desired_annotations = self.annotations(&issued);
        let annotations_current = desired_annotations.iter().all(|(k, v)| annotations.get(k) == Some(v))
            && annotations.get(CLIENT_ID_ANNOTATION) == Some(&issued.client_id);
        Observed::Owned(OwnedSecret {
            issued,
            metadata_current: labels_current && annotations_current,
            resource_version: secret.resource_version(),
        })
    }
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
    /// This app's Secret.
    Owned(OwnedSecret),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSecret {
    pub issued: Issued,
    /// Labels and annotations registrar sets are all present and current.
    pub metadata_current: bool,
    pub resource_version: Option<String>,
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
    fn desired_secret_is_owned_labelled_and_annotated_without_the_apps_labels() {
        let app = app();
        let mut spec_secret = SecretTemplate {
            name: Some("creds".into()),
            keys: Some(SecretKeys { client_id: Some("id".into()), client_secret: Some("pw".into()) }),
            ..Default::default()
        };
        spec_secret.labels.insert("team".into(), "a".into());
        let mut app2 = app.clone();
        app2.spec.secret = Some(spec_secret);
        let layout = SecretLayout::for_app(&app2);
        let secret = layout.desired(&app2, &issued());
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
        let secret = layout
            .desired(&app, &Issued { client_id: "cid".into(), secret: None, version: None, rotate_request: None });
        assert_eq!(secret.data.unwrap().keys().collect::<Vec<_>>(), ["client_id"]);
    }

    #[test]
    fn observe_reads_back_what_desired_wrote() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let secret = layout.desired(&app, &issued());
        let Observed::Owned(owned) = layout.observe(&app, Some(&secret)) else { panic!("not owned") };
        assert_eq!(owned.issued, issued());
        assert!(owned.metadata_current);
    }

    #[test]
    fn observe_notices_label_drift() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued());
        secret.metadata.labels.as_mut().unwrap().remove(MANAGED_BY_LABEL);
        let Observed::Owned(owned) = layout.observe(&app, Some(&secret)) else { panic!("not owned") };
        assert!(!owned.metadata_current);
    }

    #[test]
    fn a_secret_controlled_by_another_object_is_foreign() {
        let app = app();
        let layout = SecretLayout::for_app(&app);
        let mut secret = layout.desired(&app, &issued());
        secret.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert_eq!(layout.observe(&app, Some(&secret)), Observed::Foreign);
        secret.metadata.owner_references = None;
        assert_eq!(layout.observe(&app, Some(&secret)), Observed::Foreign);
        assert_eq!(layout.observe(&app, None), Observed::Missing);
    }
}
