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

/// Without the Registered By policies, `registrar.dev/registered-by` is
/// whatever an editor of apps writes: eve, who may edit AppRegistrations but
/// not read Secrets, names as registering user someone who may read
/// everything (the test's admin, in system:masters). registrar believes no
/// such annotation while it cannot see the policies installed: the source is
/// refused (`SecretSource=False, reason=Forbidden`, naming the missing
/// policy), nothing is issued, and nothing of the value shows anywhere.
#[tokio::test]
async fn a_forged_registered_by_reads_no_source() {
    use crate::support::{TestNamespace, control_plane, grant_role, install_crds, operator::Operator};

    let ns = TestNamespace::new("forged-by").await;
    install_crds(&ns.client).await;
    let _operator = Operator::start(&ns.name).await;
    let eve = format!("eve-{}", ns.name);
    let apps_only = serde_json::json!([
        { "apiGroups": ["registrar.dev"], "resources": ["appregistrations"], "verbs": ["*"] }
    ]);
    grant_role(&ns, &eve, "apps-only", apps_only).await;
    let value = "Qz8vR3nW6tY1uI4oP7aS0dF2gH5jK9lZx";
    let source = Secret {
        metadata: ObjectMeta { name: Some("db-password".into()), ..Default::default() },
        string_data: Some([("client_secret".to_string(), value.to_string())].into()),
        ..Default::default()
    };
    ns.api::<Secret>().create(&PostParams::default(), &source).await.expect("the source Secret");
    let as_eve: Api<AppRegistration> = Api::namespaced(control_plane().client_as(&eve).await, &ns.name);
    let mut app = confidential("deputy");
    app.metadata.annotations = Some(
        [
            ("registrar.dev/registered-by".to_string(), "registrar-test-admin".to_string()),
            ("registrar.dev/registered-by-groups".to_string(), "system:masters,system:authenticated".to_string()),
        ]
        .into(),
    );
    app.spec.secret = Some(registrar::api::SecretTemplate {
        source_ref: Some(registrar::api::SecretSourceRef { name: "db-password".into(), key: None }),
        ..Default::default()
    });
    as_eve.create(&PostParams::default(), &app).await.expect("without the policies eve writes the annotation");
    let refused = wait_app(&ns, "deputy", "the source refused", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "SecretSource" && c.status == "False" && c.reason == "Forbidden")
        })
    })
    .await;
    let message = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SecretSource"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("MutatingAdmissionPolicy registrar-registered-by is not installed"), "{message}");
    assert!(message.contains("nothing was read"), "{message}");
    assert_eq!(status(&refused).client_id, None, "nothing issued");
    assert_eq!(status(&refused).secret_fingerprint, None);
    assert!(credentials(&ns, "deputy-credentials").await.is_none(), "no credentials Secret");
    let everything = serde_json::to_string(&(
        ns.api::<AppRegistration>().list(&Default::default()).await.expect("apps").items,
        crate::support::apps::events(&ns).await,
    ))
    .expect("json");
    assert!(!everything.contains(value), "nothing of the value anywhere");
    ns.delete().await;
}
