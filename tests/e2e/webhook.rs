//! registrar's admission webhook (src/registration/webhook.rs) against a real
//! kube-apiserver: what it records, and what its outage leaves working. On a
//! cluster without MutatingAdmissionPolicy the whole suite records Registered
//! By through it (support::install_registrar); these tests run on every version.

use std::time::Duration;

use k8s_openapi::api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::ConfigMap};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};
use registrar::api::{AppRegistration, keys::FINALIZER};

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, credentials, wait_issued},
    eventually, install_registrar,
    operator::Operator,
    webhook::Webhook,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A webhook that is down refuses new apps and changes to apps (failurePolicy
/// Fail: none may go in unrecorded), with an error that names it, and blocks
/// nothing else: an app is deleted and revoked (registrar's release of its
/// finalizer is an UPDATE of an object being deleted, which the configuration
/// never sends), other resources are written, and the namespace goes.
/// The configuration is this test's, for its namespace only.
#[tokio::test]
async fn the_webhooks_outage_blocks_no_delete() {
    let run = format!("{:08x}", rand::random::<u32>());
    let label = ("e2e.registrar.dev/webhook-outage", run.as_str());
    let ns = TestNamespace::labelled("hook-outage", &[label]).await;
    install_registrar(&ns.client).await;
    let hook = Webhook::start();
    let name = format!("e2e-outage-{run}");
    hook.install(&ns.client, &name, Some(label)).await;
    let _operator = Operator::start(&ns.name).await;

    let created = apply(&ns, &confidential("kept")).await;
    assert!(created.finalizers().iter().any(|f| f == FINALIZER), "the finalizer comes with the object");
    wait_issued(&ns, "kept").await;

    hook.stop();
    let apps = ns.api::<AppRegistration>();
    let refusal = eventually("creating an app to be refused while the webhook is down", TIMEOUT, || async {
        let probe = confidential("unrecorded");
        match apps.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await {
            Err(kube::Error::Api(status)) => Some(status.message),
            _ => None,
        }
    })
    .await;
    assert!(refusal.contains("registered-by.registrar.dev"), "the refusal names the webhook: {refusal}");

    // Everything but AppRegistrations is written as ever.
    let config_map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "unaffected" }, "data": { "k": "v" }
    }))
    .expect("a ConfigMap");
    ns.api::<ConfigMap>().create(&PostParams::default(), &config_map).await.expect("a ConfigMap is written");

    // The delete goes through, registrar revokes and releases the app.
    apps.delete("kept", &DeleteParams::default()).await.expect("delete while the webhook is down");
    eventually("the app and its Secret to be gone", TIMEOUT, || async {
        let app_gone = apps.get_opt("kept").await.ok()?.is_none();
        let secret_gone = credentials(&ns, "kept-credentials").await.is_none();
        (app_gone && secret_gone).then_some(())
    })
    .await;

    let configurations = Api::<MutatingWebhookConfiguration>::all(ns.client.clone());
    ns.delete_and_wait().await;
    configurations.delete(&name, &DeleteParams::default()).await.expect("remove the test's configuration");
}
