//! Two tenants on one cluster, for attacking registrar as a tenant would: a
//! victim namespace B with an issued app, and a namespace A where `mallory`
//! holds only the built-in `edit` role (which the chart's aggregated roles
//! extend to AppRegistrations and AppConsents). One operator manages both
//! (selected by a run label) and serves the registry API.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    ByteString,
    api::{core::v1::Secret, rbac::v1::RoleBinding},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use registrar::api::AppRegistration;
use serde_json::json;

use super::{
    TestNamespace, allowed_in,
    apps::{confidential, status, wait_issued},
    control_plane, eventually, gitops_apply,
    helm::{chart, helm, kubectl_apply, run},
    install_crds,
    operator::Operator,
    registry::{Caller, caller_token, http, registry_operator},
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The attacker: a user with the `edit` role in namespace A only.
pub const MALLORY: &str = "mallory";
/// The label that selects the apps of one test's operator (`--selector`).
pub const RUN_LABEL: &str = "e2e.registrar.dev/run";

/// The victim's issued app in B, what it was issued, and the attacker in A.
pub struct Tenants {
    pub run: String,
    pub a: TestNamespace,
    pub b: TestNamespace,
    /// A client acting as [`MALLORY`].
    pub mallory: Client,
    pub operator: Operator,
    pub caller: Caller,
    /// B's app `billing`: its Client ID and secret.
    pub victim_client_id: String,
    pub victim_secret: String,
}

impl Tenants {
    /// Namespaces A and B, mallory bound to `edit` in A, an operator for both,
    /// and B's app `billing` issued.
    pub async fn new(prefix: &str) -> Self {
        Self::with_args(prefix, &[], confidential("billing")).await
    }

    /// [`Tenants::new`], the operator started with `extra` arguments too, and
    /// `victim` as B's app `billing`.
    pub async fn with_args(prefix: &str, extra: &[String], victim: AppRegistration) -> Self {
        let run = format!("{:08x}", rand::random::<u32>());
        let a = TestNamespace::new(&format!("{prefix}-a")).await;
        let b = TestNamespace::new(&format!("{prefix}-b")).await;
        install_crds(&a.client).await;
        install_aggregated_roles();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": { "name": "mallory-edit" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit" },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": MALLORY }]
        }))
        .expect("binding");
        a.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("bind edit");
        eventually("mallory's edit role (with registrar's rules) to take effect", TIMEOUT, || async {
            let ns = Some(a.name.as_str());
            let apps = allowed_in(&a.client, ns, MALLORY, "registrar.dev", "appregistrations", "create").await;
            let secrets = allowed_in(&a.client, ns, MALLORY, "", "secrets", "update").await;
            let status = allowed_in(&a.client, ns, MALLORY, "registrar.dev", "appregistrations/status", "patch").await;
            assert!(!status, "edit must never grant AppRegistration status");
            (apps && secrets).then_some(())
        })
        .await;
        let mallory = control_plane().client_as(MALLORY).await;

        let selector = format!("{RUN_LABEL}={run}");
        let mut args = vec!["--selector", &selector];
        args.extend(extra.iter().map(String::as_str));
        let (operator, port) = registry_operator(&args).await;
        let caller = Caller {
            base: format!("http://127.0.0.1:{port}"),
            token: caller_token(&b, "authz", true).await,
            http: http(),
        };
        let mut tenants = Tenants {
            run,
            a,
            b,
            mallory,
            operator,
            caller,
            victim_client_id: String::new(),
            victim_secret: String::new(),
        };
        gitops_apply(&tenants.b.api(), &tenants.labelled(victim)).await.expect("apply B's app");
        let (app, secret) = wait_issued(&tenants.b, "billing").await;
        tenants.victim_client_id = status(&app).client_id.expect("B's Client ID");
        tenants.victim_secret = super::apps::secret_value(&secret, "client_secret").expect("B's secret");
        tenants
    }

    /// `app` with this run's label, so the operator manages it.
    pub fn labelled(&self, mut app: AppRegistration) -> AppRegistration {
        app.labels_mut().insert(RUN_LABEL.into(), self.run.clone());
        app
    }

    /// Whether the registry authenticates `client_id` with `secret`.
    pub async fn authenticates(&self, client_id: &str, secret: &str) -> bool {
        let (status, _) = self.caller.authenticate(client_id, secret).await;
        status.is_success()
    }

    /// The registry's answer to B's Client ID with B's secret and with
    /// `attacker_secret`: B's must pass, the attacker's must get 401, and the
    /// lookup must still name B's app.
    pub async fn assert_victim_intact(&self, attacker_secret: &str) {
        let (ok, _) = self.caller.authenticate(&self.victim_client_id, &self.victim_secret).await;
        assert!(ok.is_success(), "B's own secret must authenticate: {ok}");
        let (refused, _) = self.caller.authenticate(&self.victim_client_id, attacker_secret).await;
        assert_eq!(refused.as_u16(), 401, "the attacker's secret must get 401");
        let (found, view) = self.caller.lookup(&self.victim_client_id).await;
        assert!(found.is_success());
        assert_eq!(view["namespace"], json!(self.b.name), "{view}");
        assert_eq!(view["name"], json!("billing"), "{view}");
    }

    pub async fn delete(self) {
        drop(self.operator);
        self.a.delete().await;
        self.b.delete().await;
    }
}

/// The chart's aggregated ClusterRoles (registrar's rules in admin, edit, view).
fn install_aggregated_roles() {
    let roles = run(helm().args([
        "template",
        "tenancy",
        &chart(),
        "--show-only",
        "templates/aggregated-roles.yaml",
        "--kube-version",
        "1.36.3",
    ]));
    kubectl_apply(&roles, &[]);
}

/// A Secret that claims to be registrar's credentials Secret of `app` — owner
/// reference, label, version annotation — holding `client_id` and
/// `client_secret` of the forger's choosing (`name`: the Secret's name).
pub fn forged_secret(name: &str, app: &AppRegistration, version: i64, client_id: &str, client_secret: &str) -> Secret {
    let owner = OwnerReference {
        api_version: "registrar.dev/v1alpha1".into(),
        kind: "AppRegistration".into(),
        name: app.name_any(),
        uid: app.uid().expect("app uid"),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("registrar.dev/app".to_string(), app.name_any()),
                ("app.kubernetes.io/managed-by".to_string(), "registrar".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                ("registrar.dev/client-id".to_string(), client_id.to_string()),
                ("registrar.dev/secret-version".to_string(), version.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            ("client_id".to_string(), ByteString(client_id.as_bytes().to_vec())),
            ("client_secret".to_string(), ByteString(client_secret.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// Replaces the Secret `name` in one update, as `client`, with `forged` (at
/// the live object's resourceVersion).
pub async fn replace_secret(client: &Client, namespace: &str, forged: &Secret) -> Result<Secret, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = forged.name_any();
    let mut body = forged.clone();
    if let Some(live) = api.get_opt(&name).await? {
        body.metadata.resource_version = live.resource_version();
        api.replace(&name, &PostParams::default(), &body).await
    } else {
        api.create(&PostParams::default(), &body).await
    }
}

/// mallory's attempts at naming owners that are not real (a `system:` group,
/// a name with terminal escape sequences): the CRD refuses both, with or
/// without the admission policies. Returns nothing; panics on a refusal missing.
pub async fn unreal_owners_are_refused(t: &Tenants) {
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    for (owner, says) in [
        (registrar::api::Owner::group("system:masters"), "may not name a system: user or group"),
        (registrar::api::Owner::user("system:admin"), "may not name a system: user or group"),
        (registrar::api::Owner::user("alice\u{1b}]0;pwned\u{7}\u{1b}[2J"), "must not contain control characters"),
    ] {
        let mut app = t.labelled(confidential("owned"));
        app.spec.owner = Some(owner.clone());
        let refused = gitops_apply(&apps, &app).await;
        let Err(kube::Error::Api(status)) = &refused else { panic!("{owner:?} was accepted: {refused:?}") };
        assert!(status.message.contains(says), "{owner:?}: {}", status.message);
    }
    assert!(apps.get_opt("owned").await.expect("get").is_none(), "nothing was stored");
}
