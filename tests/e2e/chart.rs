//! The Helm chart against the real apiserver: it lints, its manifests pass a
//! server-side dry run, and the operator binary run with exactly the chart's
//! ServiceAccount identity and RBAC goes through the lifecycle; a verb outside
//! its ClusterRole is refused; the aggregated roles extend admin, edit and view.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::{ConfigMap, Secret},
    rbac::v1::ClusterRole,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::api::{AppConsent, AppConsentSpec, AppRef, AppRegistration, WorkloadKind, WorkloadRef};
use serde_json::json;

use super::registration::{confidential, status, wait_app, wait_issued};
use crate::support::{
    TestNamespace, control_plane, eventually,
    helm::{chart, helm, kubectl_apply, render, run},
    install_registrar,
    operator::Operator,
};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn chart_lints_and_passes_a_server_side_dry_run() {
    run(helm().args(["lint", "--strict", &chart(), "--kube-version", "1.36.3"]));
    let ns = TestNamespace::new("chart-dry").await;
    let manifests = render("dry", &ns.name);
    let out = kubectl_apply(&manifests, &["--dry-run=server"]);
    for kind in ["deployment.apps/dry-registrar", "clusterrole.rbac.authorization.k8s.io/dry-registrar-operator"] {
        assert!(out.contains(kind), "{kind} missing from: {out}");
    }
    // A non-default platform namespace reaches the Global-scope policy.
    let other = run(helm().args([
        "template",
        "dry",
        &chart(),
        "--namespace",
        &ns.name,
        "--kube-version",
        "1.36.3",
        "--set",
        "platformNamespace=platform-team",
    ]));
    assert!(other.contains("'platform-team'") && !other.contains("'registrar-system'"));
    // An authorization server: its flags, its CA and credentials mounted; the
    // admin URL and issuer are required.
    let hydra = [
        "authServer.type=hydra",
        "authServer.adminUrl=http://hydra-admin.hydra:4445",
        "authServer.issuer=https://auth.example.com",
        "authServer.caConfigMap=hydra-ca",
        "authServer.credentialsSecret=hydra-admin",
        "authServer.credentialsKey=basic",
    ];
    let chart = chart();
    let mut args = vec!["template", "dry", &chart, "--namespace", &ns.name, "--kube-version", "1.36.3"];
    for value in &hydra {
        args.extend(["--set", value]);
    }
    let with_hydra = run(helm().args(&args));
    for expected in [
        "--auth-server=hydra",
        "--auth-server-admin-url=http://hydra-admin.hydra:4445",
        "--auth-server-issuer=https://auth.example.com",
        "--auth-server-ca-file=/etc/registrar/authserver-ca/ca.crt",
        "--auth-server-basic-auth-file=/etc/registrar/authserver-credentials/basic",
    ] {
        assert!(with_hydra.contains(expected), "{expected} missing");
    }
    kubectl_apply(&with_hydra, &["--dry-run=server"]);
    let incomplete = helm()
        .args(["template", "dry", &chart, "--kube-version", "1.36.3", "--set", "authServer.type=hydra"])
        .output()
        .expect("helm");
    assert!(!incomplete.status.success());
    assert!(String::from_utf8_lossy(&incomplete.stderr).contains("authServer.adminUrl is required"));
    // The schema refuses a bad value with a clear message.
    let bad = helm()
        .args(["template", "dry", &chart, "--kube-version", "1.36.3", "--set", "logFormat=xml"])
        .output()
        .expect("helm");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("logFormat"), "{}", String::from_utf8_lossy(&bad.stderr));
    ns.delete().await;
}

#[tokio::test]
async fn operator_works_with_exactly_the_charts_rbac() {
    let release = format!("rel{:06x}", rand::random::<u32>() & 0xffffff);
    let install = TestNamespace::new("chart-install").await;
    install_registrar(&install.client).await;
    kubectl_apply(&render(&release, &install.name), &[]);
    let identity = format!("system:serviceaccount:{}:{release}-registrar", install.name);

    // The apiserver's RBAC cache learns of the chart's bindings asynchronously.
    eventually("the chart's RBAC to take effect", TIMEOUT, || async {
        let apps = crate::support::allowed(&install.client, &identity, "registrar.dev", "appregistrations", "watch");
        let secrets = crate::support::allowed(&install.client, &identity, "", "secrets", "create");
        let ns = Some(install.name.as_str());
        let lease =
            crate::support::allowed_in(&install.client, ns, &identity, "coordination.k8s.io", "leases", "create");
        (apps.await && secrets.await && lease.await).then_some(())
    })
    .await;

    // A verb outside the ClusterRole is refused.
    let sa = control_plane().client_as(&identity).await;
    let refused = Api::<ConfigMap>::namespaced(sa.clone(), &install.name).list(&ListParams::default()).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.is_forbidden()), "{refused:?}");
    let apps = TestNamespace::labelled("chart-apps", &[("registrar.dev/organization", &release)]).await;
    let refused = Api::<AppRegistration>::namespaced(sa.clone(), &apps.name)
        .create(&PostParams::default(), &confidential("nope"))
        .await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.is_forbidden()), "the operator never creates apps");
    let refused = Api::<Deployment>::namespaced(sa.clone(), &apps.name).delete("x", &DeleteParams::default()).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.is_forbidden()), "{refused:?}");

    // The operator binary, as the chart's ServiceAccount, with leader election
    // and the registry API.
    let selector = format!("e2e.registrar.dev/run={release}");
    let registry_addr = format!("127.0.0.1:{}", crate::support::free_port());
    let operator = Operator::start_as(
        control_plane().impersonating_kubeconfig(&identity),
        &[
            "--selector",
            &selector,
            "--leader-election",
            "--leader-election-namespace",
            &install.name,
            "--leader-election-lease",
            &format!("{release}-registrar"),
            "--registry-addr",
            &registry_addr,
            "--registry-insecure-http",
            "--registered-by-policy",
            &format!("{release}-registrar-registered-by"),
        ],
    )
    .await;
    eventually("leadership", TIMEOUT, || async { (operator.metric("registrar_leader").await == 1.0).then_some(()) })
        .await;

    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" },
        "spec": {
            "selector": { "matchLabels": { "app": "api" } },
            "template": { "metadata": { "labels": { "app": "api" } },
                          "spec": { "containers": [{ "name": "api", "image": "registry.invalid/api:1" }] } }
        }
    }))
    .expect("deployment");
    apps.api::<Deployment>().create(&PostParams::default(), &deployment).await.expect("deployment");
    let labels = BTreeMap::from([("e2e.registrar.dev/run".to_string(), release.clone())]);
    let mut app = confidential("billing");
    app.metadata.labels = Some(labels.clone());
    app.spec.restart_on_rotate = vec![WorkloadRef { kind: WorkloadKind::Deployment, name: "api".into() }];
    crate::support::gitops_apply(&apps.api(), &app).await.expect("apply app");
    let (issued, _) = wait_issued(&apps, "billing").await;

    // The registry authenticates and authorizes its callers (TokenReview and
    // SubjectAccessReview) under the chart's RBAC; callers bind <release>-registry-client.
    let token =
        super::registry::caller_token_bound_to(&install, "authz", &format!("{release}-registrar-registry-client"))
            .await;
    let client_id = status(&issued).client_id.expect("client id");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = reqwest::Client::new()
        .get(format!("http://{registry_addr}/v1/clients/{client_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("registry lookup");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);

    // A secret from a source (the release's Registered By policies read, a
    // SubjectAccessReview for the registering user, the source Secret read).
    crate::support::registered_by_believed(&install.client, &format!("{release}-registrar-registered-by")).await;
    let source = Secret {
        metadata: ObjectMeta { name: Some("vault-secret".into()), ..Default::default() },
        string_data: Some([("client_secret".to_string(), "Wm4rT8yU2iO6pA0sD3fG7hJ1kL5zX9cVb".to_string())].into()),
        ..Default::default()
    };
    apps.api::<Secret>().create(&PostParams::default(), &source).await.expect("source Secret");
    let mut sourced = confidential("sourced");
    sourced.metadata.labels = Some(labels.clone());
    sourced.spec.secret = Some(registrar::api::SecretTemplate {
        source_ref: Some(registrar::api::SecretSourceRef { name: "vault-secret".into(), key: None }),
        ..Default::default()
    });
    crate::support::gitops_apply(&apps.api(), &sourced).await.expect("apply sourced app");
    wait_issued(&apps, "sourced").await;

    // Rotate (Secret patch, workload patch, Events).
    let patch = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "rbac-1" } } }));
    apps.api::<AppRegistration>().patch("billing", &PatchParams::default(), &patch).await.expect("rotate");
    wait_app(&apps, "billing", "the rotation", |a| status(a).secret_version == Some(2)).await;
    eventually("the workload to roll", TIMEOUT, || async {
        let d = apps.api::<Deployment>().get("api").await.ok()?;
        let annotations = d.spec?.template.metadata?.annotations?;
        (annotations.get("registrar.dev/secret-version").map(String::as_str) == Some("2")).then_some(())
    })
    .await;
    // Drift (Secret get and create).
    apps.api::<Secret>().delete("billing-credentials", &DeleteParams::default()).await.expect("delete Secret");
    wait_app(&apps, "billing", "a re-mint", |a| status(a).secret_version == Some(3)).await;
    // Consent from another namespace of the organization (consent status patch).
    let consumer = TestNamespace::labelled("chart-consumer", &[("registrar.dev/organization", &release)]).await;
    let consent = AppConsent {
        metadata: ObjectMeta { name: Some("billing".into()), labels: Some(labels.clone()), ..Default::default() },
        spec: AppConsentSpec {
            app_ref: AppRef { namespace: apps.name.clone(), name: "billing".into() },
            oauth_scopes: None,
        },
        status: None,
    };
    consumer.api::<AppConsent>().create(&PostParams::default(), &consent).await.expect("consent");
    wait_app(&apps, "billing", "the consent to be counted", |a| status(a).consents.is_some()).await;
    // Revoke (finalizer patch, Secret delete).
    apps.api::<AppRegistration>().delete("billing", &DeleteParams::default()).await.expect("delete app");
    eventually("revocation", TIMEOUT, || async {
        let gone = apps.api::<AppRegistration>().get_opt("billing").await.ok()?.is_none();
        let secret_gone = apps.api::<Secret>().get_opt("billing-credentials").await.ok()?.is_none();
        (gone && secret_gone).then_some(())
    })
    .await;
    let revoked = eventually("the consent to turn AppRevoked", TIMEOUT, || async {
        let c = consumer.api::<AppConsent>().get("billing").await.ok()?;
        c.status.as_ref()?.conditions.iter().any(|c| c.reason == "AppRevoked").then_some(c)
    })
    .await;
    assert_eq!(revoked.status.and_then(|s| s.client_id), status(&issued).client_id);

    let log = operator.log();
    assert!(!log.to_lowercase().contains("forbidden"), "a request was forbidden under the chart's RBAC:\n{log}");
    assert_eq!(
        operator
            .metric("registrar_reconcile_errors_total{controller=\"appregistration\",error=\"write_secret\"}")
            .await,
        0.0
    );
    drop(operator);
    for ns in [consumer, apps, install] {
        ns.delete().await;
    }
}

#[tokio::test]
async fn aggregated_roles_extend_admin_edit_and_view_but_view_reads_no_secrets() {
    let release = format!("agg{:06x}", rand::random::<u32>() & 0xffffff);
    let ns = TestNamespace::new("chart-roles").await;
    kubectl_apply(&render(&release, &ns.name), &[]);
    let roles = Api::<ClusterRole>::all(ns.client.clone());
    for (role, verb) in [("view", "list"), ("edit", "create"), ("admin", "delete")] {
        eventually(&format!("the built-in {role} role to aggregate registrar's rules"), TIMEOUT, || async {
            let rules = roles.get(role).await.ok()?.rules?;
            rules
                .iter()
                .any(|r| {
                    r.resources.as_ref().is_some_and(|res| res.iter().any(|x| x == "appregistrations"))
                        && r.verbs.iter().any(|v| v == verb)
                })
                .then_some(())
        })
        .await;
    }
    // A viewer of a namespace reads apps and consents, never Secrets.
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "viewer" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer" }]
    });
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(binding).expect("binding"))
        .await
        .expect("bind view");
    let can = |group: &'static str, resource: &'static str| {
        let client = ns.client.clone();
        let namespace = ns.name.clone();
        async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some("viewer".into()),
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(namespace),
                        group: Some(group.into()),
                        resource: Some(resource.into()),
                        verb: Some("get".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = Api::<SubjectAccessReview>::all(client).create(&PostParams::default(), &review).await;
            answer.expect("SubjectAccessReview").status.is_some_and(|s| s.allowed)
        }
    };
    // The apiserver's RBAC cache learns of the new RoleBinding asynchronously.
    eventually("the viewer to read apps and consents", TIMEOUT, || async {
        (can("registrar.dev", "appregistrations").await && can("registrar.dev", "appconsents").await).then_some(())
    })
    .await;
    assert!(!can("", "secrets").await, "view never reads Secrets");
    ns.delete().await;
}

/// Every metric a PromQL expression reads.
fn metric_names(expr: &promql_parser::parser::Expr, names: &mut Vec<String>) {
    use promql_parser::parser::Expr;
    match expr {
        Expr::Aggregate(a) => {
            metric_names(&a.expr, names);
            if let Some(p) = &a.param {
                metric_names(p, names);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, names),
        Expr::Binary(b) => {
            metric_names(&b.lhs, names);
            metric_names(&b.rhs, names);
        }
        Expr::Paren(p) => metric_names(&p.expr, names),
        Expr::Subquery(s) => metric_names(&s.expr, names),
        Expr::VectorSelector(v) => names.extend(v.name.clone()),
        Expr::MatrixSelector(m) => names.extend(m.vs.name.clone()),
        Expr::Call(c) => c.args.args.iter().for_each(|a| metric_names(a, names)),
        _ => {}
    }
}

/// The monitoring the chart ships — ServiceMonitor, PrometheusRule alerts and
/// the Grafana dashboard — renders, every alert and panel query parses as
/// PromQL, and every metric they read is one the operator exports.
#[tokio::test]
async fn the_charts_alerts_and_dashboard_read_metrics_that_exist() {
    let rendered = run(helm().args([
        "template",
        "mon",
        &chart(),
        "--namespace",
        "observed",
        "--kube-version",
        "1.36.3",
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.grafanaDashboard.enabled=true",
    ]));
    let docs: Vec<Option<serde_json::Value>> = serde_saphyr::from_multiple(&rendered).expect("YAML");
    let docs: Vec<serde_json::Value> = docs.into_iter().flatten().collect();
    let of_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned().unwrap_or_else(|| panic!("no {kind}"));
    let monitor = of_kind("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let rules = of_kind("PrometheusRule");
    let mut queries: Vec<(String, String)> = Vec::new();
    for group in rules["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            assert!(expr.contains("namespace=\"observed\""), "alerts are about this release: {expr}");
            queries.push((rule["alert"].as_str().expect("alert").to_owned(), expr.to_owned()));
        }
    }
    assert_eq!(
        queries.len(),
        5,
        "reconcile errors, apps not Ready, objects never reconciled, leader missing, registry shedding"
    );
    let dashboard = of_kind("ConfigMap");
    let dashboard: serde_json::Value =
        serde_json::from_str(dashboard["data"]["registrar.json"].as_str().expect("dashboard JSON")).expect("JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }

    // What the operator exports: every family it registers (an empty family
    // renders nothing yet), checked against what a running operator renders.
    let series = registrar::runtime::metrics::Metrics::new().series_names();
    let ns = TestNamespace::new("observed").await;
    install_registrar(&ns.client).await;
    let (operator, _) = crate::support::registry::registry_operator(&["--watch-namespace", &ns.name]).await;
    let exported = operator.metrics().await;
    let rendered: Vec<&str> = exported.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    assert!(!rendered.is_empty(), "{exported}");
    for family in &rendered {
        assert!(series.iter().any(|s| s.starts_with(family)), "{family} is rendered but not listed");
    }
    let exists = |name: &str| series.iter().any(|s| s == name);
    for (what, expr) in &queries {
        let parsed =
            promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("{what}: {expr:?} does not parse: {e}"));
        let mut names = Vec::new();
        metric_names(&parsed, &mut names);
        assert!(!names.is_empty(), "{what} reads no metric");
        for name in names {
            assert!(exists(&name), "{what} reads {name}, which the operator does not export:\n{exported}");
        }
    }
    drop(operator);
    ns.delete().await;
}

/// The chart renders anywhere: `helm template` with no cluster and no
/// `--kube-version`, and as Argo CD and Flux render it for each supported
/// release (its version and the API versions it serves): the webhook records
/// Registered By on 1.35, the MutatingAdmissionPolicies on 1.36 and 1.37; a
/// release older than 1.35 is refused with a message that says so.
#[tokio::test]
async fn the_chart_renders_for_every_supported_kubernetes() {
    let chart = chart();
    let kinds = |rendered: &str| -> Vec<String> {
        let docs: Vec<Option<serde_json::Value>> = serde_saphyr::from_multiple(rendered).expect("YAML");
        docs.into_iter().flatten().filter_map(|d| d["kind"].as_str().map(str::to_owned)).collect()
    };
    run(helm().args(["lint", "--strict", &chart]));
    let anywhere = run(helm().args(["template", "anywhere", &chart]));
    assert!(kinds(&anywhere).iter().any(|k| k == "MutatingWebhookConfiguration"), "helm's defaults have no MAP");

    let admission = "admissionregistration.k8s.io/v1";
    for (version, policies) in [("1.35.4", false), ("1.36.3", true), ("1.37.2", true)] {
        let mut args = vec!["template", "argo", &chart, "--namespace", "registrar-system", "--kube-version", version];
        let served = [format!("{admission}/ValidatingAdmissionPolicy"), format!("{admission}/MutatingAdmissionPolicy")];
        let served = if policies { &served[..] } else { &served[..1] };
        for api in served {
            args.extend(["--api-versions", api.as_str()]);
        }
        run(helm().args(["lint", "--strict", &chart, "--kube-version", version]));
        let rendered = kinds(&run(helm().args(&args)));
        let count = |kind: &str| rendered.iter().filter(|k| *k == kind).count();
        if policies {
            assert_eq!(count("MutatingAdmissionPolicy"), 2, "{version}: Registered By and the finalizer");
            assert_eq!(count("MutatingWebhookConfiguration"), 0, "{version}");
        } else {
            assert_eq!(count("MutatingAdmissionPolicy"), 0, "{version}: none served");
            assert_eq!(count("MutatingWebhookConfiguration"), 1, "{version}: the webhook instead");
        }
        assert_eq!(count("ValidatingAdmissionPolicy"), 5, "{version}: every validating policy");
    }

    let old = helm().args(["template", "old", &chart, "--kube-version", "1.34.4"]).output().expect("helm");
    assert!(!old.status.success());
    let said = String::from_utf8_lossy(&old.stderr);
    assert!(said.contains("registrar supports Kubernetes 1.35 and later; this cluster runs v1.34.4"), "{said}");
    let recorder = ["--set", "admissionPolicies.recorder=sometimes"];
    let bad = helm().args(["template", "bad", &chart]).args(recorder).output().expect("helm");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("admissionPolicies/recorder"));
}
