//! Export without secrets, and Import (seed 004).

use std::path::PathBuf;

use clap::Args;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{
    AppName, CliError, Format,
    apps::{FIELD_MANAGER, get_app, wait_settled},
    cluster::Target,
    render::{self, BOLD, paint},
};
use crate::{
    api::{AppRegistration, keys},
    credentials::layout::SecretLayout,
};

/// Annotations that describe one object's history, not the app: set by
/// admission or by a request, never carried to a copy.
const SERVER_ANNOTATIONS: [&str; 4] = [
    keys::REGISTERED_BY_ANNOTATION,
    keys::REGISTERED_BY_GROUPS_ANNOTATION,
    keys::ROTATE_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration",
];

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// NAME, or NAMESPACE/NAME (or --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub app: Option<AppName>,
    /// Every app of the namespace (with -A: of every namespace).
    #[arg(long)]
    pub all: bool,
    /// With --all: every namespace.
    #[arg(short = 'A', long, requires = "all")]
    pub all_namespaces: bool,
    /// Keep spec.clientId (Client IDs are unique cluster-wide: the copy gets it
    /// only once the original is gone or retained in the same namespace).
    #[arg(long)]
    pub keep_client_id: bool,
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: Format,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A file from `kubectl registrar export` (YAML or JSON); `-` reads stdin.
    pub file: PathBuf,
}

/// The app as a re-appliable manifest: no status, no server-set metadata, no
/// secret (the spec holds none; sourceRef is a reference), and without the
/// Client ID unless `keep_client_id`.
pub fn exportable(app: &AppRegistration, keep_client_id: bool) -> Value {
    let meta = &app.metadata;
    let annotations: serde_json::Map<String, Value> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !SERVER_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut metadata = json!({ "name": meta.name, "namespace": meta.namespace });
    if let Some(labels) = meta.labels.as_ref().filter(|l| !l.is_empty()) {
        metadata["labels"] = json!(labels);
    }
    if !annotations.is_empty() {
        metadata["annotations"] = Value::Object(annotations);
    }
    let mut spec = serde_json::to_value(&app.spec).unwrap_or(Value::Null);
    if !keep_client_id && let Some(spec) = spec.as_object_mut() {
        spec.remove("clientId");
    }
    json!({ "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "metadata": metadata, "spec": spec })
}

pub async fn export(target: &Target, args: ExportArgs) -> Result<(), CliError> {
    let apps = match &args.app {
        Some(app) => vec![get_app(target, app).await?],
        None => {
            let (api, ns): (Api<AppRegistration>, Option<&str>) = if args.all_namespaces {
                (Api::all(target.client.clone()), None)
            } else {
                (target.apps(&target.namespace), Some(target.namespace.as_str()))
            };
            match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => return Err(target.explain(e, "list", "appregistrations", ns).await),
            }
        }
    };
    let mut docs: Vec<Value> = apps
        .iter()
        .filter(|a| a.metadata.deletion_timestamp.is_none())
        .map(|a| exportable(a, args.keep_client_id))
        .collect();
    docs.sort_by_key(|d| (d["metadata"]["namespace"].to_string(), d["metadata"]["name"].to_string()));
    let text = match args.output {
        Format::Json => {
            let value = match (&args.app, docs.len()) {
                (Some(_), 1) => docs.remove(0),
                _ => json!({ "apiVersion": "v1", "kind": "List", "items": docs }),
            };
            serde_json::to_string_pretty(&value).map_err(|e| CliError::Input(e.to_string()))?
        }
        _ => {
            let mut text = String::from(
                "# Exported by kubectl registrar: status, server-set fields and secrets are removed.\n\
                 # Importing it (kubectl registrar import FILE) issues new credentials.\n",
            );
            for doc in &docs {
                text.push_str("---\n");
                text.push_str(&serde_saphyr::to_string(doc).map_err(|e| CliError::Input(e.to_string()))?);
            }
            text
        }
    };
    render::out(text.trim_end());
    if docs.is_empty() {
        render::note("no apps to export");
    }
    Ok(())
}

/// The AppRegistrations of an export (YAML documents, a JSON object, or a
/// JSON List).
pub fn parse_export(text: &str) -> Result<Vec<AppRegistration>, CliError> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(text).map_err(|e| CliError::Input(format!("reading JSON: {e}")))?;
        match value {
            Value::Array(items) => items,
            Value::Object(ref o) if o.get("kind") == Some(&json!("List")) => {
                o.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
            }
            other => vec![other],
        }
    } else {
        let docs: Vec<Option<Value>> =
            serde_saphyr::from_multiple(text).map_err(|e| CliError::Input(format!("reading YAML: {e}")))?;
        docs.into_iter().flatten().filter(|v| !v.is_null()).collect()
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let kind = value.get("kind").and_then(Value::as_str).unwrap_or("an object without a kind");
            let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
            if kind != "AppRegistration" || !api_version.starts_with("registrar.dev/") {
                return Err(CliError::Input(format!(
                    "document {} is {kind} ({api_version}): import takes AppRegistrations, as kubectl registrar \
                     export writes them",
                    i + 1
                )));
            }
            serde_json::from_value(value)
                .map_err(|e| CliError::Input(format!("document {} is not a valid AppRegistration: {e}", i + 1)))
        })
        .collect()
}

pub async fn import(target: &Target, args: ImportArgs) -> Result<(), CliError> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::Input(format!("reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| CliError::Input(format!("reading {}: {e}", args.file.display())))?
    };
    let apps = parse_export(&text)?;
    if apps.is_empty() {
        return Err(CliError::Input(format!("{} holds no AppRegistration", args.file.display())));
    }
    let mut created = Vec::new();
    for app in &apps {
        // -n moves the apps; without it they go where the file says.
        let ns = match (&target.namespace_flag, app.namespace()) {
            (Some(flag), _) => flag.clone(),
            (None, Some(ns)) => ns,
            (None, None) => target.namespace.clone(),
        };
        let name = app.name_any();
        let mut manifest = exportable(app, true);
        manifest["metadata"]["namespace"] = json!(ns);
        let api = target.apps(&ns);
        let existed = match api.get_opt(&name).await {
            Ok(found) => found,
            Err(e) => return Err(target.explain(e, "get", "appregistrations", Some(&ns)).await),
        };
        match api.patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&manifest)).await {
            Ok(applied) => match existed {
                Some(before) if before.resource_version() == applied.resource_version() => {
                    render::out(&format!("{ns}/{name}: existed, unchanged"))
                }
                Some(_) => render::out(&format!("{ns}/{name}: existed, updated to the file's spec")),
                None => {
                    render::out(&format!("{ns}/{name}: created"));
                    created.push((ns.clone(), name.clone()));
                }
            },
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
                return Err(CliError::Refused(format!("{ns}/{name}: the apiserver refused it: {}", s.message)));
            }
            Err(e) => return Err(target.explain(e, "patch", "appregistrations", Some(&ns)).await),
        }
    }
    for (ns, name) in &created {
        let issued = wait_settled(target, ns, name, &format!("{name} to be issued")).await?;
        let layout = SecretLayout::for_app(&issued);
        render::out(&format!(
            "{ns}/{name}: new credentials issued (Client ID {}) into Secret {ns}/{}; `kubectl registrar show {name} \
             -n {ns} --reveal` shows the secret",
            paint(BOLD, issued.status.as_ref().and_then(|s| s.client_id.as_deref()).unwrap_or("-")),
            layout.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{AppRegistrationSpec, AppRegistrationStatus, Scope};

    fn issued() -> AppRegistration {
        let mut app = AppRegistration::new(
            "billing",
            AppRegistrationSpec {
                display_name: "Billing".into(),
                scope: Scope::Organization,
                redirect_uris: vec!["https://b.example.com/cb".into()],
                client_id: Some("legacy-billing".into()),
                ..Default::default()
            },
        );
        app.metadata.namespace = Some("team-a".into());
        app.metadata.uid = Some("u-1".into());
        app.metadata.resource_version = Some("42".into());
        app.metadata.finalizers = Some(vec!["registrar.dev/revoke".into()]);
        app.metadata.labels = Some(BTreeMap::from([("team".into(), "billing".into())]));
        app.metadata.annotations = Some(BTreeMap::from([
            ("registrar.dev/registered-by".into(), "alice".into()),
            ("registrar.dev/rotate".into(), "7".into()),
            ("note".into(), "kept".into()),
        ]));
        app.status = Some(AppRegistrationStatus {
            client_id: Some("legacy-billing".into()),
            secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            ..Default::default()
        });
        app
    }

    #[test]
    fn an_export_keeps_the_app_and_drops_status_server_fields_and_the_client_id() {
        let doc = exportable(&issued(), false);
        assert_eq!(
            doc["metadata"],
            json!({ "name": "billing", "namespace": "team-a", "labels": { "team": "billing" }, "annotations": { "note": "kept" } })
        );
        assert!(doc.get("status").is_none());
        assert!(doc["spec"].get("clientId").is_none());
        assert_eq!(doc["spec"]["displayName"], "Billing");
        let text = doc.to_string();
        assert!(!text.contains("argon2") && !text.contains("u-1") && !text.contains("revoke"), "{text}");
        assert_eq!(exportable(&issued(), true)["spec"]["clientId"], "legacy-billing");
    }

    #[test]
    fn an_export_reads_back_as_yaml_or_json() {
        let doc = exportable(&issued(), false);
        let yaml = format!(
            "# a comment\n---\n{}---\n{}",
            serde_saphyr::to_string(&doc).unwrap(),
            serde_saphyr::to_string(&doc).unwrap()
        );
        assert_eq!(parse_export(&yaml).expect("yaml").len(), 2);
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": [doc.clone()] });
        assert_eq!(parse_export(&list.to_string()).expect("json list")[0].spec.display_name, "Billing");
        assert_eq!(parse_export(&doc.to_string()).expect("json object").len(), 1);
    }

    #[test]
    fn import_refuses_what_is_not_an_app() {
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n";
        let message = parse_export(secret).expect_err("refused").to_string();
        assert!(message.contains("document 1 is Secret"), "{message}");
    }
}
