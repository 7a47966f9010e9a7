//! Tests on a real node: a kubelet with containerd and runc beside this test
//! binary's control plane (`support::node`), so that Pods run for real.
//! They need root; `E2E_NODE=off` skips them (CI runs them).

#[path = "../support/mod.rs"]
mod support;

mod chart;
mod workloads;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use serde_json::json;
use support::{TestNamespace, eventually, node};

/// A Pod that mounts a Secret runs on the node as the chart runs registrar:
/// non-root, a read-only root filesystem, no capabilities, the runtime's
/// seccomp profile; it reads the mounted file, and fails if any of that does
/// not hold.
#[tokio::test]
async fn a_pod_mounting_a_secret_runs_unprivileged_on_the_node() {
    if node::skipped() {
        eprintln!("E2E_NODE=off: skipped");
        return;
    }
    let node = node::node();
    eprintln!("node Ready in {:.1} s", node.startup().as_secs_f64());
    let ns = TestNamespace::new("node-pod").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "greeting" },
        "stringData": { "greeting": "hello-v1" },
    }))
    .expect("a Secret");
    ns.api::<Secret>().create(&PostParams::default(), &secret).await.expect("create the Secret");
    // Exits 0 only when the file holds the value, no capability is in effect
    // and the root filesystem refuses a write.
    let check = r#"
        test "$(/busybox cat /secret/greeting)" = hello-v1 || { echo "the mounted Secret is not as written"; exit 1; }
        /busybox grep -Eq '^CapEff:[[:space:]]+0+$' /proc/self/status || { echo "capabilities in effect"; exit 1; }
        /busybox touch /probe 2>/dev/null && { echo "the root filesystem is writable"; exit 1; }
        test "$(/busybox id -u)" = 65532 || { echo "not uid 65532"; exit 1; }
        echo ok"#;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "reader" },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "reader",
                "image": "registrar.local/busybox:1",
                "imagePullPolicy": "Never",
                "command": ["/busybox", "sh", "-c", check],
                "securityContext": {
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                },
                "volumeMounts": [{ "name": "secret", "mountPath": "/secret", "readOnly": true }],
            }],
            "volumes": [{ "name": "secret", "secret": { "secretName": "greeting" } }],
        },
    }))
    .expect("a Pod");
    let pods = ns.api::<Pod>();
    let created = pods.create(&PostParams::default(), &pod).await.expect("create the Pod");
    assert_eq!(created.spec.as_ref().and_then(|s| s.host_network), Some(true), "the test node's policy");
    let phase = eventually("the Pod to finish", Duration::from_secs(120), || async {
        let pod = pods.get("reader").await.ok()?;
        let phase = pod.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    assert_eq!(phase, "Succeeded", "the Pod failed its checks; its log is under {}", node.dir().display());
    let (kubelet, containerd) = node.memory_mib();
    eprintln!("node memory with one Pod run: kubelet {kubelet:.1} MiB, containerd {containerd:.1} MiB");
    ns.delete().await;
}
