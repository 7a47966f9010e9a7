//! registrar on a cluster that has its CRDs but none of the admission policies
//! of `deploy/` (as with the chart's `admissionPolicies.install=false`). Its own
//! test binary, so its control plane has never seen those policies.

mod ledger;
mod portability;
#[path = "../support/mod.rs"]
mod support;
mod tenancy;

use std::time::Duration;

use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams},
};
use registrar::api::{AppRegistration, AppRegistrationSpec, Scope};
use support::{TestNamespace, eventually, gitops_apply, install_crds, operator::Operator};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Without the finalizer policy the operator adds the revoke finalizer itself,
/// in the same pass as the first mint (one more write: five instead of four),
/// and deleting the app still revokes it.
#[tokio::test]
async fn without_the_admission_policies_the_operator_sets_the_finalizer_itself() {
    let ns = TestNamespace::new("bare").await;
    install_crds(&ns.client).await;
    let operator = Operator::start(&ns.name).await;
    let apps = ns.api::<AppRegistration>();
    let app = AppRegistration::new(
        "plain",
        AppRegistrationSpec {
            display_name: "Plain".into(),
            scope: Scope::Organization,
            redirect_uris: vec!["https://app.example.com/callback".into()],
            oauth_scopes: vec!["read".into()],
            ..Default::default()
        },
    );
    let created = gitops_apply(&apps, &app).await.expect("apply");
    assert!(created.finalizers().is_empty(), "no policy, so nothing is added at admission");

    eventually("the finalizer, the Secret and the Issued Event", TIMEOUT, || async {
        let app = apps.get("plain").await.ok()?;
        let has_finalizer = app.finalizers().iter().any(|f| f == "registrar.dev/revoke");
        let has_secret = ns.api::<Secret>().get_opt("plain-credentials").await.ok()?.is_some();
        let events = ns.api::<Event>().list(&ListParams::default()).await.ok()?.items;
        let issued = events.iter().any(|e| e.reason.as_deref() == Some("Issued"));
        (has_finalizer && has_secret && issued).then_some(())
    })
    .await;
    assert_eq!(
        operator.writes().await,
        5.0,
        "the finalizer patch, the ledger's claim, the Secret, the status and the Event"
    );

    apps.delete("plain", &DeleteParams::default()).await.expect("delete");
    eventually("the app and its Secret to be gone", TIMEOUT, || async {
        let app_gone = apps.get_opt("plain").await.ok()?.is_none();
        let secret_gone = ns.api::<Secret>().get_opt("plain-credentials").await.ok()?.is_none();
        (app_gone && secret_gone).then_some(())
    })
    .await;
    ns.delete().await;
}
