//! The chart installed for real: registrar's image (built by scripts/image.sh
//! around this build's binary) imported into the node, `helm install` with the
//! chart's defaults but the image and what one host network needs, the
//! operator running as a Pod.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use registrar::api::{
    AppRegistration,
    keys::{FINALIZER, REGISTERED_BY_ANNOTATION},
};
use serde_json::json;

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, is_ready, wait_issued},
    control_plane, eventually, free_port, gitops_apply,
    helm::{chart, helm, run},
    node,
    webhook::serves_mutating_policies,
};

/// Builds registrar's image around this build's binary, tagged `tag`, and
/// returns the docker-archive.
pub fn image(tag: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/image.sh"))
        .env("REGISTRAR_BINARY", env!("CARGO_BIN_EXE_registrar"))
        .env("IMAGE_TAG", tag)
        .output()
        .expect("run scripts/image.sh");
    assert!(out.status.success(), "scripts/image.sh: {}", String::from_utf8_lossy(&out.stderr));
    root.join(String::from_utf8_lossy(&out.stdout).trim())
}

/// The values a node whose Pods share the host's network needs, beside the
/// image: one replica (two would bind the same port), its metrics and its
/// admission webhook (where the cluster has no MutatingAdmissionPolicy) on
/// loopback at free ports, and the webhook called there.
pub fn host_network_values(tag: &str, metrics_port: u16, webhook_port: u16) -> Vec<String> {
    [
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".into(),
        "replicaCount=1".into(),
        format!("metrics.port={metrics_port}"),
        "metrics.bindAddress=127.0.0.1".into(),
        // No Service reaches a Pod here (an endpoint may not be loopback):
        // the apiserver calls the webhook where the Pod listens.
        format!("admissionPolicies.webhook.port={webhook_port}"),
        "admissionPolicies.webhook.bindAddress=127.0.0.1".into(),
        format!("admissionPolicies.webhook.url=https://127.0.0.1:{webhook_port}/mutate/appregistrations"),
    ]
    .into_iter()
    .flat_map(|value| ["--set".to_owned(), value])
    .collect()
}

/// The host PID of the operator process started with its metrics on `metrics_port`.
fn container_pid(metrics_port: u16) -> u32 {
    let arg = format!("--metrics-addr=127.0.0.1:{metrics_port}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| a == "/usr/local/bin/registrar") && args.contains(&arg) {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "one operator process with {arg}: {found:?}");
    found[0]
}

/// `helm install` of the chart with the image built here: the operator Pod
/// runs and is Ready, holds the leader Lease and issues an app, as uid 65532
/// with a read-only root filesystem and no capability (read from the
/// container's own `/proc/1`), serves its metrics; `helm upgrade` to an image
/// of another tag rolls the operator while 100 apps rotate, each exactly once;
/// `helm uninstall` keeps the CRDs and the credentials Secrets. (One test:
/// two releases of the chart would share its cluster-scoped objects.)
#[tokio::test]
async fn the_chart_runs_the_operator_from_its_image() {
    if node::skipped() {
        eprintln!("E2E_NODE=off: skipped");
        return;
    }
    let _cluster_wide = node::CLUSTER_WIDE.lock().await;
    let node = node::node();
    let tag = format!("e2e-{:08x}", rand::random::<u32>());
    let archive = image(&tag);
    node.import_image(&archive);
    let _ = std::fs::remove_file(&archive);
    let release_ns = TestNamespace::new("node-chart").await;
    let release = "registrar";
    let (metrics_port, webhook_port) = (free_port(), free_port());
    run(helm().args(["install", release, &chart(), "--namespace", &release_ns.name]).args(host_network_values(
        &tag,
        metrics_port,
        webhook_port,
    )));

    let deployments: Api<Deployment> = release_ns.api();
    eventually("the operator Deployment to be available", Duration::from_secs(120), || async {
        let d = deployments.get(release).await.ok()?;
        (d.status?.available_replicas? == 1).then_some(())
    })
    .await;
    let pods: Api<Pod> = release_ns.api();
    let pod = pods.list(&ListParams::default()).await.expect("list Pods").items.pop().expect("the operator Pod");
    let leases: Api<Lease> = release_ns.api();
    eventually("the operator Pod to hold the leader Lease", Duration::from_secs(60), || async {
        let lease = leases.get(release).await.ok()?;
        (lease.spec?.holder_identity? == pod.name_any()).then_some(())
    })
    .await;

    let apps_ns = TestNamespace::new("node-chart-apps").await;
    // The webhook's Service reaches the apiserver once its EndpointSlice does.
    let portal = eventually("the first app to be admitted", Duration::from_secs(60), || async {
        gitops_apply(&apps_ns.api(), &confidential("portal")).await.ok()
    })
    .await;
    // Recorded at admission, by the MutatingAdmissionPolicies or, on a
    // cluster without them, the chart's webhook served by the operator Pod.
    assert!(portal.annotations().contains_key(REGISTERED_BY_ANNOTATION), "Registered By: {:?}", portal.metadata);
    assert!(portal.finalizers().iter().any(|f| f == FINALIZER), "the finalizer comes with the object");
    let webhook = !serves_mutating_policies(&apps_ns.client).await;
    let webhook_tls = || async {
        let secret = Api::<Secret>::namespaced(apps_ns.client.clone(), &release_ns.name)
            .get("registrar-webhook-tls")
            .await
            .expect("the webhook's certificate");
        let data = secret.data.expect("data");
        (data["ca.crt"].clone(), data["tls.crt"].clone())
    };
    let tls_at_install = if webhook {
        let configuration = Api::<MutatingWebhookConfiguration>::all(apps_ns.client.clone())
            .get("registrar-registered-by")
            .await
            .expect("the chart's webhook configuration");
        let bundle = configuration.webhooks.expect("webhooks")[0].client_config.ca_bundle.clone().expect("caBundle");
        let tls = webhook_tls().await;
        assert_eq!(bundle, tls.0, "the configuration trusts the CA in the Secret");
        Some(tls)
    } else {
        None
    };
    wait_issued(&apps_ns, "portal").await;

    // The container as the kernel runs it, from its own /proc.
    let pid = container_pid(metrics_port);
    let own = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/root/proc/1/{file}")).expect(file);
    let status = own("status");
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(field("Uid:"), Some(vec!["65532"; 4]), "{status}");
    assert_eq!(field("Gid:").map(|g| g[0]), Some("65532"));
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(caps), Some(vec!["0000000000000000"]), "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), Some(vec!["1"]));
    let mounts = own("mountinfo");
    let root = mounts.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).expect("the root mount");
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    assert!(options.split(',').any(|o| o == "ro"), "the root filesystem is read-only: {root}");

    // The reconcile that issued the app is counted once it returns, a moment
    // after its status is written.
    let metrics = eventually("the Pod's metrics to count a reconciliation", Duration::from_secs(30), || async {
        let url = format!("http://127.0.0.1:{metrics_port}/metrics");
        let metrics = reqwest::get(url).await.ok()?.text().await.ok()?;
        metrics.contains("registrar_reconciliations_total").then_some(metrics)
    })
    .await;
    assert!(metrics.contains("registrar_leader 1"), "the Pod is the leader");

    // 100 apps rotate while `helm upgrade` rolls the operator to an image of
    // another tag: each rotation happens exactly once.
    let names: Vec<String> = (0..100).map(|i| format!("app-{i:03}")).collect();
    futures::stream::iter(&names)
        .for_each_concurrent(16, |name| {
            let apps_ns = &apps_ns;
            async move {
                apply(apps_ns, &confidential(name)).await;
            }
        })
        .await;
    let apps: Api<AppRegistration> = apps_ns.api();
    let versions = || async {
        let list = apps.list(&ListParams::default()).await.ok()?;
        let versions: Vec<i64> = list
            .items
            .iter()
            .filter(|a| a.name_any().starts_with("app-"))
            .filter(|a| is_ready(a))
            .filter_map(|a| a.status.as_ref()?.secret_version)
            .collect();
        Some(versions)
    };
    eventually("100 apps issued", Duration::from_secs(180), || async {
        let v = versions().await?;
        (v.len() == 100 && v.iter().all(|v| *v == 1)).then_some(())
    })
    .await;
    let upgraded = format!("{tag}-upgraded");
    let archive = image(&upgraded);
    node.import_image(&archive);
    let _ = std::fs::remove_file(&archive);
    if webhook {
        // The chart renews the webhook's certificate on the first upgrade
        // past its renew-after time: say it is due now.
        let due = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/renew-after": "0" } } }));
        Api::<Secret>::namespaced(apps_ns.client.clone(), &release_ns.name)
            .patch("registrar-webhook-tls", &PatchParams::default(), &due)
            .await
            .expect("mark the webhook's certificate due");
    }
    let rotating = {
        let apps = apps.clone();
        let names = names.clone();
        tokio::spawn(async move {
            let patch = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "upgrade" } } }));
            futures::stream::iter(&names)
                .for_each_concurrent(8, |name| {
                    let (apps, patch) = (&apps, &patch);
                    // Where the webhook records Registered By, one replica on
                    // one host network leaves a moment of the rollout when
                    // no Pod serves it: a write then is refused (failurePolicy
                    // Fail) and, as a GitOps tool would, sent again.
                    async move {
                        eventually(
                            &format!("{name} to take the rotate annotation"),
                            Duration::from_secs(120),
                            || async move { apps.patch(name, &PatchParams::default(), patch).await.ok().map(|_| ()) },
                        )
                        .await;
                    }
                })
                .await;
        })
    };
    let upgrade = {
        let (namespace, values) = (release_ns.name.clone(), host_network_values(&upgraded, metrics_port, webhook_port));
        tokio::task::spawn_blocking(move || {
            run(helm().args(["upgrade", release, &chart(), "--namespace", &namespace]).args(values))
        })
    };
    rotating.await.expect("rotations asked for");
    upgrade.await.expect("helm upgrade");
    eventually("the operator rolled to the new image", Duration::from_secs(180), || async {
        let pods = pods.list(&ListParams::default()).await.ok()?.items;
        let ready = pods.iter().filter(|p| {
            let image = p.spec.as_ref().map(|s| s.containers[0].image.clone().unwrap_or_default()).unwrap_or_default();
            let is_ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            image.ends_with(&upgraded) && is_ready && p.metadata.deletion_timestamp.is_none()
        });
        (pods.len() == 1 && ready.count() == 1).then_some(())
    })
    .await;
    eventually("every app rotated", Duration::from_secs(180), || async {
        let v = versions().await?;
        (v.len() == 100 && v.iter().all(|v| *v == 2)).then_some(())
    })
    .await;
    // The upgrade renewed the webhook's certificate, signed by the CA it
    // kept (helm read both back), so the configuration's CA bundle still
    // holds: the rotations above went through the webhook served with it.
    if let Some((ca, cert)) = tls_at_install {
        let (ca_now, cert_now) = webhook_tls().await;
        assert!(ca_now == ca, "helm upgrade keeps the webhook's CA");
        assert!(cert_now != cert, "and renews its certificate when due");
        let configuration = Api::<MutatingWebhookConfiguration>::all(apps_ns.client.clone())
            .get("registrar-registered-by")
            .await
            .expect("the chart's webhook configuration");
        let bundle = configuration.webhooks.expect("webhooks")[0].client_config.ca_bundle.clone().expect("caBundle");
        assert!(bundle == ca, "the CA bundle is unchanged");
        let after = eventually("an app admitted after the renewal", Duration::from_secs(60), || async {
            gitops_apply(&apps_ns.api(), &confidential("after-renewal")).await.ok()
        })
        .await;
        assert!(after.annotations().contains_key(REGISTERED_BY_ANNOTATION));
    }
    // Exactly once: no app went past version 2, and each Secret holds version 2.
    for name in &names {
        let (app, secret) = wait_issued(&apps_ns, name).await;
        assert_eq!(app.status.as_ref().and_then(|s| s.secret_version), Some(2), "{name} rotated exactly once");
        assert_eq!(secret.annotations().get("registrar.dev/secret-version").map(String::as_str), Some("2"));
    }

    run(helm().args(["uninstall", release, "--namespace", &release_ns.name, "--wait", "--timeout", "120s"]));
    let crds =
        control_plane().kubectl().args(["get", "crd", "appregistrations.registrar.dev"]).output().expect("kubectl");
    assert!(crds.status.success(), "helm uninstall keeps the CRDs");
    let secrets: Api<Secret> = apps_ns.api();
    assert!(secrets.get_opt("portal-credentials").await.expect("get").is_some(), "and the credentials Secrets");
    apps_ns.delete().await;
    release_ns.delete().await;
}
