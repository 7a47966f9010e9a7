//! The chart installed for real: registrar's image (built by scripts/image.sh
//! around this build's binary) imported into the node, `helm install` with the
//! chart's defaults but the image and what one host network needs, the
//! operator running as a Pod.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{Api, ResourceExt, api::ListParams};

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, wait_issued},
    control_plane, eventually, free_port,
    helm::{chart, helm, run},
    node,
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
/// image: one replica (two would bind the same port), its metrics on
/// loopback at a free port.
pub fn host_network_values(tag: &str, metrics_port: u16) -> Vec<String> {
    [
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".into(),
        "replicaCount=1".into(),
        format!("metrics.port={metrics_port}"),
        "metrics.bindAddress=127.0.0.1".into(),
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
/// container's own `/proc/1`), serves its metrics; `helm uninstall` keeps the
/// CRDs and the credentials Secrets.
#[tokio::test]
async fn the_chart_runs_the_operator_from_its_image() {
    if node::skipped() {
        eprintln!("E2E_NODE=off: skipped");
        return;
    }
    let node = node::node();
    let tag = format!("e2e-{:08x}", rand::random::<u32>());
    let archive = image(&tag);
    node.import_image(&archive);
    let _ = std::fs::remove_file(&archive);
    let release_ns = TestNamespace::new("node-chart").await;
    let release = "registrar";
    let metrics_port = free_port();
    run(helm()
        .args(["install", release, &chart(), "--namespace", &release_ns.name])
        .args(host_network_values(&tag, metrics_port)));

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
    apply(&apps_ns, &confidential("portal")).await;
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

    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("scrape the Pod's metrics")
        .text()
        .await
        .expect("metrics");
    assert!(metrics.contains("registrar_reconciliations_total"), "{metrics}");
    assert!(metrics.contains("registrar_leader 1"), "the Pod is the leader");

    run(helm().args(["uninstall", release, "--namespace", &release_ns.name, "--wait", "--timeout", "120s"]));
    let crds =
        control_plane().kubectl().args(["get", "crd", "appregistrations.registrar.dev"]).output().expect("kubectl");
    assert!(crds.status.success(), "helm uninstall keeps the CRDs");
    let secrets: Api<Secret> = apps_ns.api();
    assert!(secrets.get_opt("portal-credentials").await.expect("get").is_some(), "and the credentials Secrets");
    apps_ns.delete().await;
    release_ns.delete().await;
}
