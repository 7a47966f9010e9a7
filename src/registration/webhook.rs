//! The mutating admission webhook: on clusters without MutatingAdmissionPolicy
//! (Kubernetes 1.35), or where registrar's policies are not installed, it does
//! what deploy/registered-by-policy.yaml and deploy/revoke-finalizer-policy.yaml
//! do there.
//!
//! - On CREATE of an AppRegistration it records the requesting user and groups
//!   in `registrar.dev/registered-by` and `registrar.dev/registered-by-groups`
//!   (overwriting what the manifest carried) and adds the revoke finalizer.
//! - On UPDATE it restores either annotation when the new object lacks one the
//!   stored object has (a server-side apply of a manifest that does not mention
//!   it, as GitOps tools do), and adds the finalizer back to a live object.
//!
//! Keeping the annotations unchanged stays with the ValidatingAdmissionPolicy
//! `…-registered-by-immutable`, served on every supported version. The webhook
//! configuration sends no object being deleted ([`NOT_BEING_DELETED`]): an
//! outage of the webhook never holds up a deletion, since the last write of
//! one (registrar releasing its finalizer) is an UPDATE of such an object.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use axum::{Json, Router, extract::DefaultBodyLimit, routing::post};
use axum_server::tls_rustls::RustlsAcceptor;
use json_patch::{AddOperation, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::{api::authentication::v1::UserInfo, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde_json::Value;
use tracing::{debug, info};

use crate::{
    api::keys::{FINALIZER, REGISTERED_BY_ANNOTATION, REGISTERED_BY_GROUPS_ANNOTATION},
    runtime::{admin_server::Gate, tls},
};

/// The path the webhook configuration calls.
pub const PATH: &str = "/mutate/appregistrations";

/// The match condition the webhook configuration carries, by name and CEL
/// expression: an object being deleted is never sent (see the module's
/// documentation). The registered-by check accepts no other condition.
pub const NOT_BEING_DELETED: (&str, &str) = ("not-being-deleted", "!has(object.metadata.deletionTimestamp)");

/// The largest review accepted: an object and its old version, each up to
/// the apiserver's 1.5 MiB limit, with room to spare.
const BODY_LIMIT: usize = 8 << 20;

/// What the webhook changes in an AppRegistration's metadata on `operation`
/// by `user`: JSON Patch operations against `object` (the object as it
/// arrives), given the stored `old` one on an UPDATE.
pub fn mutations(
    operation: &Operation,
    user: &UserInfo,
    object: &ObjectMeta,
    old: Option<&ObjectMeta>,
) -> Vec<PatchOperation> {
    let mut annotations: Vec<(&str, String)> = Vec::new();
    match operation {
        Operation::Create => {
            annotations.push((REGISTERED_BY_ANNOTATION, user.username.clone().unwrap_or_default()));
            annotations.push((REGISTERED_BY_GROUPS_ANNOTATION, user.groups.as_deref().unwrap_or_default().join(",")));
        }
        Operation::Update => {
            let stored = old.and_then(|o| o.annotations.as_ref());
            let present = object.annotations.as_ref();
            for key in [REGISTERED_BY_ANNOTATION, REGISTERED_BY_GROUPS_ANNOTATION] {
                if let Some(value) = stored.and_then(|a| a.get(key))
                    && !present.is_some_and(|a| a.contains_key(key))
                {
                    annotations.push((key, value.clone()));
                }
            }
        }
        _ => return Vec::new(),
    }
    let mut patch = Vec::new();
    let add = |path: &[&str], value: Value| {
        PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(path.iter().copied()), value })
    };
    if !annotations.is_empty() {
        if object.annotations.is_none() {
            let map = annotations.iter().map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect();
            patch.push(add(&["metadata", "annotations"], Value::Object(map)));
        } else {
            for (key, value) in annotations {
                patch.push(add(&["metadata", "annotations", key], Value::String(value)));
            }
        }
    }
    let live = object.deletion_timestamp.is_none();
    let finalized = object.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if live && !finalized {
        match object.finalizers {
            None => patch.push(add(&["metadata", "finalizers"], Value::Array(vec![FINALIZER.into()]))),
            Some(_) => patch.push(add(&["metadata", "finalizers", "-"], FINALIZER.into())),
        }
    }
    patch
}

/// Answers one AdmissionReview: allowed, with [`mutations`] as a JSON Patch
/// when the request is for an AppRegistration (any other request, which the
/// configuration does not send, is allowed unchanged).
pub fn review(review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return AdmissionResponse::invalid("the AdmissionReview carries no request").into_review(),
    };
    let response = AdmissionResponse::from(&request);
    let ours = request.resource.group == "registrar.dev"
        && request.resource.resource == "appregistrations"
        && request.sub_resource.as_deref().unwrap_or_default().is_empty();
    let Some(object) = request.object.as_ref().filter(|_| ours) else { return response.into_review() };
    let old = request.old_object.as_ref().map(|o| &o.metadata);
    let patch = mutations(&request.operation, &request.user_info, &object.metadata, old);
    debug!(
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = request.name,
        operation = ?request.operation,
        changes = patch.len(),
        "admitted an AppRegistration"
    );
    if patch.is_empty() {
        return response.into_review();
    }
    match response.with_patch(json_patch::Patch(patch)) {
        Ok(patched) => patched.into_review(),
        // Serializing a patch of strings cannot fail; refuse rather than
        // admit without Registered By should it ever.
        Err(e) => AdmissionResponse::from(&request).deny(format!("registrar's webhook: {e}")).into_review(),
    }
}

/// The webhook's HTTP routes.
pub fn router() -> Router {
    Router::new()
        .route(PATH, post(|Json(body): Json<AdmissionReview<DynamicObject>>| async move { Json(review(body)) }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Where and with which certificate the webhook is served.
#[derive(Clone, Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("loading the webhook's TLS certificate and key: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("serving the webhook: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the webhook over TLS until `stop` completes (the certificate is
/// reloaded when its files change); opens `listening` once the socket is
/// bound, and sends the address bound (the port chosen, for port 0).
pub async fn serve(
    settings: Settings,
    listening: Gate,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = tls::watched("webhook", &settings.cert, &settings.key)?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        stop.await;
        stopping.shutdown();
    });
    let watching = handle.clone();
    tokio::spawn(async move {
        if let Some(addr) = watching.listening().await {
            info!(%addr, "the admission webhook listens");
            listening.open();
            if let Some(bound) = bound {
                let _ = bound.send(addr);
            }
        }
    });
    let mut server = axum_server::bind(settings.addr).acceptor(RustlsAcceptor::new(config)).handle(handle);
    // One request per connection: an idle connection the server closes (its
    // header deadline) while the apiserver sends its next review on it ends
    // in "broken pipe", and the apiserver does not retry a POST.
    server.http_builder().http1().header_read_timeout(Duration::from_secs(10)).keep_alive(false);
    // The caller logs an error (the binary: "the admission webhook stopped").
    server.serve(router().into_make_service()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: Some(name.into()),
            groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
            ..Default::default()
        }
    }

    fn meta(annotations: &[(&str, &str)], finalizers: &[&str]) -> ObjectMeta {
        ObjectMeta {
            annotations: (!annotations.is_empty())
                .then(|| annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            finalizers: (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| (*f).to_owned()).collect()),
            ..Default::default()
        }
    }

    /// The object after the patch.
    fn applied(object: &ObjectMeta, patch: Vec<PatchOperation>) -> ObjectMeta {
        let mut doc = serde_json::json!({ "metadata": object });
        json_patch::patch(&mut doc, &patch).expect("the patch applies");
        serde_json::from_value(doc["metadata"].clone()).expect("metadata")
    }

    fn annotations(object: &ObjectMeta) -> BTreeMap<String, String> {
        object.annotations.clone().unwrap_or_default()
    }

    #[test]
    fn a_created_app_records_its_user_over_what_the_manifest_claimed_and_carries_the_finalizer() {
        let forged = meta(&[(REGISTERED_BY_ANNOTATION, "admin"), ("team", "a")], &["example.com/keep"]);
        let patch = mutations(&Operation::Create, &user("alice", &["dev", "system:authenticated"]), &forged, None);
        let after = applied(&forged, patch);
        assert_eq!(annotations(&after)[REGISTERED_BY_ANNOTATION], "alice");
        assert_eq!(annotations(&after)[REGISTERED_BY_GROUPS_ANNOTATION], "dev,system:authenticated");
        assert_eq!(annotations(&after)["team"], "a");
        assert_eq!(after.finalizers.unwrap(), vec!["example.com/keep".to_owned(), FINALIZER.to_owned()]);

        let bare = ObjectMeta::default();
        let after = applied(&bare, mutations(&Operation::Create, &user("bob", &[]), &bare, None));
        assert_eq!(annotations(&after)[REGISTERED_BY_ANNOTATION], "bob");
        assert_eq!(annotations(&after)[REGISTERED_BY_GROUPS_ANNOTATION], "");
        assert_eq!(after.finalizers.unwrap(), vec![FINALIZER.to_owned()]);
    }

    #[test]
    fn an_update_restores_what_an_apply_left_out_and_changes_nothing_else() {
        let stored =
            meta(&[(REGISTERED_BY_ANNOTATION, "alice"), (REGISTERED_BY_GROUPS_ANNOTATION, "dev")], &[FINALIZER]);
        // A GitOps apply of a manifest without them (and without the finalizer).
        let applied_manifest = meta(&[("team", "a")], &[]);
        let patch = mutations(&Operation::Update, &user("argocd", &[]), &applied_manifest, Some(&stored));
        let after = applied(&applied_manifest, patch);
        assert_eq!(annotations(&after)[REGISTERED_BY_ANNOTATION], "alice");
        assert_eq!(annotations(&after)[REGISTERED_BY_GROUPS_ANNOTATION], "dev");
        assert_eq!(after.finalizers.unwrap(), vec![FINALIZER.to_owned()]);

        // No annotations at all: the map is added whole.
        let bare = ObjectMeta::default();
        let after = applied(&bare, mutations(&Operation::Update, &user("x", &[]), &bare, Some(&stored)));
        assert_eq!(annotations(&after).len(), 2);

        // Unchanged: nothing to do (a changed value is the policy's to refuse).
        let forged =
            meta(&[(REGISTERED_BY_ANNOTATION, "mallory"), (REGISTERED_BY_GROUPS_ANNOTATION, "dev")], &[FINALIZER]);
        assert!(mutations(&Operation::Update, &user("mallory", &[]), &stored, Some(&stored)).is_empty());
        assert!(mutations(&Operation::Update, &user("mallory", &[]), &forged, Some(&stored)).is_empty());

        // An app created before Registered By was recorded stays without it.
        let unrecorded = meta(&[], &[FINALIZER]);
        assert!(mutations(&Operation::Update, &user("eve", &[]), &unrecorded, Some(&unrecorded)).is_empty());
    }

    #[test]
    fn an_object_being_deleted_gets_no_finalizer_back() {
        let mut deleting = meta(&[(REGISTERED_BY_ANNOTATION, "alice"), (REGISTERED_BY_GROUPS_ANNOTATION, "")], &[]);
        deleting.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(mutations(&Operation::Update, &user("registrar", &[]), &deleting, Some(&deleting)).is_empty());
    }

    #[test]
    fn a_review_answers_with_the_request_uid_and_a_json_patch() {
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "registrar.dev", "version": "v1alpha1", "kind": "AppRegistration"},
                "resource": {"group": "registrar.dev", "version": "v1alpha1", "resource": "appregistrations"},
                "name": "reports",
                "namespace": "team-a",
                "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["dev"]},
                "object": {
                    "apiVersion": "registrar.dev/v1alpha1",
                    "kind": "AppRegistration",
                    "metadata": {"name": "reports", "namespace": "team-a"},
                    "spec": {"displayName": "Reports"}
                },
                "oldObject": null,
                "dryRun": false
            }
        });
        let answer = review(serde_json::from_value(body).expect("a review"));
        let answer = serde_json::to_value(answer).expect("json");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        // kube-core writes the patch's bytes as a JSON array, which the
        // apiserver's decoder takes for a []byte as well as base64.
        let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).expect("the patch's bytes");
        let patch: Vec<PatchOperation> = serde_json::from_slice(&bytes).expect("a JSON Patch");
        assert_eq!(patch.len(), 2);

        // A status update is not the webhook's (the configuration sends none).
        let status = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "1", "operation": "UPDATE", "subResource": "status",
                "kind": {"group": "registrar.dev", "version": "v1alpha1", "kind": "AppRegistration"},
                "resource": {"group": "registrar.dev", "version": "v1alpha1", "resource": "appregistrations"},
                "userInfo": {"username": "registrar"},
                "object": {"apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "metadata": {"name": "a"}},
                "oldObject": {"apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "metadata": {"name": "a"}}
            }
        });
        let answer = serde_json::to_value(review(serde_json::from_value(status).unwrap())).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
    }
}
