//! The harness itself: the control plane stores and validates registrar's
//! resources, and its controller-manager deletes namespaces and collects garbage.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ObjectMeta, PostParams},
    core::GroupVersionKind,
};
use registrar::api::{AppRegistration, AppRegistrationSpec, Scope};
use serde_json::json;

use crate::support::{TestNamespace, control_plane, eventually, install_crds};

const TIMEOUT: Duration = Duration::from_secs(60);

fn config_map(name: &str) -> ConfigMap {
    ConfigMap { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
}

#[tokio::test]
async fn app_registration_round_trips_through_the_apiserver() {
    let ns = TestNamespace::new("smoke-crd").await;
    install_crds(&ns.client).await;

    let apps = ns.api::<AppRegistration>();
    let app = AppRegistration::new(
        "billing",
        AppRegistrationSpec { display_name: "Billing".into(), scope: Scope::Organization, ..Default::default() },
    );
    apps.create(&PostParams::default(), &app).await.expect("create AppRegistration");
    let stored = apps.get("billing").await.expect("read AppRegistration back");
    assert_eq!(stored.spec, app.spec);
    assert!(stored.uid().is_some());

    // The harness's kubeconfig drives the bundled kubectl, short name included.
    let out =
        control_plane().kubectl().args(["get", "appreg", "-n", &ns.name, "-o", "name"]).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "appregistration.registrar.dev/billing");

    ns.delete().await;
}

#[tokio::test]
async fn apiserver_rejects_a_wrongly_typed_field() {
    let ns = TestNamespace::new("smoke-schema").await;
    install_crds(&ns.client).await;

    let gvk = GroupVersionKind::gvk(
        &AppRegistration::group(&()),
        &AppRegistration::version(&()),
        &AppRegistration::kind(&()),
    );
    let resource = ApiResource::from_gvk_with_plural(&gvk, &AppRegistration::plural(&()));
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let mut bad = DynamicObject::new("typo", &resource);
    bad.data = json!({ "spec": { "displayName": 42, "scope": "Group" } });

    let err = api.create(&PostParams::default(), &bad).await.expect_err("a number is not a string");
    let kube::Error::Api(status) = &err else {
        panic!("expected an API error, got {err}");
    };
    assert!(status.is_invalid(), "expected 422 Invalid, got {status:?}");
    assert!(status.message.contains("spec.displayName"), "{}", status.message);
    assert!(api.get_opt("typo").await.expect("get").is_none());

    ns.delete().await;
}

/// Fails against an apiserver without a controller-manager: the namespace would
/// stay Terminating with its ConfigMap inside forever.
#[tokio::test]
async fn deleted_namespace_disappears_with_its_contents() {
    let ns = TestNamespace::new("smoke-nsdel").await;
    ns.api::<ConfigMap>().create(&PostParams::default(), &config_map("content")).await.expect("create ConfigMap");

    let namespaces = Api::<Namespace>::all(ns.client.clone());
    namespaces.delete(&ns.name, &DeleteParams::default()).await.expect("delete namespace");
    eventually("the namespace to be gone", TIMEOUT, || async {
        namespaces.get_opt(&ns.name).await.expect("get namespace").is_none().then_some(())
    })
    .await;
}

/// Fails against an apiserver without a controller-manager: nothing would
/// delete the dependent.
#[tokio::test]
async fn dependent_is_garbage_collected_with_its_owner() {
    let ns = TestNamespace::new("smoke-gc").await;
    let config_maps = ns.api::<ConfigMap>();
    let owner = config_maps.create(&PostParams::default(), &config_map("owner")).await.expect("create owner");
    let mut dependent = config_map("dependent");
    dependent.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).expect("owner reference")]);
    config_maps.create(&PostParams::default(), &dependent).await.expect("create dependent");

    config_maps.delete("owner", &DeleteParams::default()).await.expect("delete owner");
    eventually("the dependent to be garbage-collected", TIMEOUT, || async {
        config_maps.get_opt("dependent").await.expect("get dependent").is_none().then_some(())
    })
    .await;

    ns.delete().await;
}

/// Service-account tokens are signed and TokenReview authenticates them (the
/// registry API authenticates its callers this way).
#[tokio::test]
async fn service_account_tokens_pass_token_review() {
    use k8s_openapi::api::{
        authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec},
        core::v1::ServiceAccount,
    };

    let ns = TestNamespace::new("smoke-token").await;
    let accounts = ns.api::<ServiceAccount>();
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some("caller".into()), ..Default::default() },
        ..Default::default()
    };
    accounts.create(&PostParams::default(), &account).await.expect("create ServiceAccount");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() }),
        ..Default::default()
    };
    let issued =
        accounts.create_token_request("caller", &PostParams::default(), &request).await.expect("request a token");
    let token = issued.status.expect("token status").token.expect("a token");

    let review = TokenReview { spec: TokenReviewSpec { token, ..Default::default() }, ..Default::default() };
    let reviewed =
        Api::<TokenReview>::all(ns.client.clone()).create(&PostParams::default(), &review).await.expect("TokenReview");
    let status = reviewed.status.expect("review status");
    assert_eq!(status.authenticated, Some(true), "{:?}", status.error);
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    assert_eq!(username, format!("system:serviceaccount:{}:caller", ns.name));
    ns.delete().await;
}
