//! Retained credentials without any admission policy: only what registrar
//! recorded can be taken over, and only in its own namespace. (With the
//! policies, mallory could not even write a Secret labelled as registrar's.)

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use registrar::api::{AppRegistration, DeletionPolicy};

use crate::support::{
    apps::{apply, confidential, credentials, ready_reason, secret_value, status, wait_app, wait_event, wait_issued},
    eventually,
    tenants::Tenants,
};

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn not_ready(app: &AppRegistration, reason: &str) -> bool {
    ready_reason(app).is_some_and(|(s, r, _)| s == "False" && r == reason)
}

/// Retained credentials are taken over only in their own namespace and only
/// as registrar recorded them: mallory copies B's retention record (seal and
/// all) onto a Secret in A and imports the Client ID there — refused; a
/// retention she forges for a Client ID of her own choosing yields nothing
/// but a fresh secret; B's retained client keeps its own secret.
#[tokio::test]
async fn a_forged_or_copied_retention_is_never_taken_over() {
    let t = Tenants::new("forge").await;
    let mut kept = t.labelled(confidential("kept"));
    kept.spec.deletion_policy = Some(DeletionPolicy::Retain);
    apply(&t.b, &kept).await;
    let (app, secret) = wait_issued(&t.b, "kept").await;
    let id = status(&app).client_id.expect("id");
    let value = secret_value(&secret, "client_secret").expect("secret");
    t.b.api::<AppRegistration>().delete("kept", &DeleteParams::default()).await.expect("delete");
    wait_event(&t.b, "Retained", &id).await;
    let retained = credentials(&t.b, "kept-credentials").await.expect("retained Secret");

    // The record copied, seal and all, onto a Secret in A named for the app
    // that imports the Client ID there.
    let copy = Secret {
        metadata: ObjectMeta {
            name: Some("kept-credentials".into()),
            labels: retained.metadata.labels.clone(),
            annotations: retained.metadata.annotations.clone(),
            ..Default::default()
        },
        data: Some(
            [
                ("client_id".to_string(), k8s_openapi::ByteString(id.clone().into_bytes())),
                (
                    "client_secret".to_string(),
                    k8s_openapi::ByteString(b"mallorys-own-secret-0123456789abcdef".to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(t.mallory.clone(), &t.a.name);
    secrets.create(&PostParams::default(), &copy).await.expect("mallory writes Secrets in A");
    let mut grab = t.labelled(confidential("kept"));
    grab.spec.client_id = Some(id.clone());
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    crate::support::gitops_apply(&apps, &grab).await.expect("apply");
    let refused = wait_app(&t.a, "kept", "the import to be refused", |a| not_ready(a, "ClientIdConflict")).await;
    let (_, _, message) = ready_reason(&refused).expect("condition");
    assert!(message.contains("not available"), "{message}");
    assert!(!message.contains(&t.b.name), "{message}");
    eventually("B's retained client to keep its secret", TIMEOUT, || async {
        t.authenticates(&id, &value).await.then_some(())
    })
    .await;
    assert!(!t.authenticates(&id, "mallorys-own-secret-0123456789abcdef").await);

    // A retention forged for a Client ID of her choosing: not registrar's, so
    // the import is a plain one, with a secret registrar mints.
    let forged_id = format!("forged-{}", t.run);
    let mut annotations = retained.metadata.annotations.clone().unwrap_or_default();
    annotations.insert("registrar.dev/retained-client-id".into(), forged_id.clone());
    let forged = Secret {
        metadata: ObjectMeta { name: Some("forged-retention".into()), annotations: Some(annotations), ..copy.metadata },
        data: Some(
            [
                ("client_id".to_string(), k8s_openapi::ByteString(forged_id.clone().into_bytes())),
                (
                    "client_secret".to_string(),
                    k8s_openapi::ByteString(b"mallorys-own-secret-0123456789abcdef".to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &forged).await.expect("forged retention");
    let mut import = t.labelled(confidential("forged"));
    import.spec.client_id = Some(forged_id.clone());
    crate::support::gitops_apply(&apps, &import).await.expect("apply");
    let (app, issued) = wait_issued(&t.a, "forged").await;
    assert_eq!(status(&app).client_id.as_deref(), Some(forged_id.as_str()));
    assert_ne!(
        secret_value(&issued, "client_secret").as_deref(),
        Some("mallorys-own-secret-0123456789abcdef"),
        "a forged retention never yields its secret"
    );
    assert!(!t.authenticates(&forged_id, "mallorys-own-secret-0123456789abcdef").await);
    t.delete().await;
}
