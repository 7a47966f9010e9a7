//! helm and the chart in tests: helm as built by scripts/install-helm.sh, the
//! chart rendered for a release, manifests applied with the bundled kubectl.

use std::{path::Path, process::Command};

use super::control_plane;

pub fn helm() -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-helm.sh");
    let out = Command::new("bash").arg(script).output().expect("run install-helm.sh");
    assert!(out.status.success(), "install-helm.sh: {}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = Command::new(String::from_utf8_lossy(&out.stdout).trim());
    cmd.env("KUBECONFIG", control_plane().kubeconfig());
    cmd
}

pub fn chart() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/registrar").display().to_string()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Renders the chart for `release` into `namespace`, for the test cluster.
/// Where the chart's admission webhook records Registered By (a cluster
/// without MutatingAdmissionPolicy), its configuration calls the webhook this
/// test binary serves (support::webhook) instead of the release's Service:
/// the operators of these tests run beside the cluster, not in Pods (the
/// tests on the node install the chart for real, Service and all).
pub fn render(release: &str, namespace: &str) -> String {
    let capabilities = cluster_capabilities();
    let rendered = run(helm().args(["template", release, &chart(), "--namespace", namespace]).args(&capabilities));
    let policies = capabilities.iter().any(|f| f == "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy");
    if policies {
        return rendered;
    }
    let docs: Vec<Option<serde_json::Value>> = serde_saphyr::from_multiple(&rendered).expect("the chart's YAML");
    let mut out = String::new();
    for mut doc in docs.into_iter().flatten() {
        if doc["kind"] == "MutatingWebhookConfiguration" {
            let served = super::webhook::for_suite().configuration("unused", None);
            for hook in doc["webhooks"].as_array_mut().expect("webhooks") {
                hook["clientConfig"] = served["webhooks"][0]["clientConfig"].clone();
            }
        }
        out.push_str(&serde_json::to_string(&doc).expect("JSON"));
        out.push_str("\n---\n");
    }
    out
}

/// What the test cluster is, as Argo CD tells `helm template`: `--kube-version`
/// and an `--api-versions` for every group version it serves, and for every
/// kind of admissionregistration.k8s.io/v1 (the chart picks its recorder of
/// Registered By by whether MutatingAdmissionPolicy is served).
pub fn cluster_capabilities() -> Vec<String> {
    let kubectl = |args: &[&str]| {
        let out = control_plane().kubectl().args(args).output().expect("run kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version: serde_json::Value = serde_json::from_str(&kubectl(&["version", "-o", "json"])).expect("version");
    let server = version["serverVersion"]["gitVersion"].as_str().expect("the server's version").to_owned();
    let mut flags = vec!["--kube-version".to_owned(), server];
    for group_version in kubectl(&["api-versions"]).lines().filter(|l| !l.is_empty()) {
        flags.extend(["--api-versions".to_owned(), group_version.to_owned()]);
    }
    let admission = "admissionregistration.k8s.io/v1";
    let resources: serde_json::Value =
        serde_json::from_str(&kubectl(&["get", "--raw", &format!("/apis/{admission}")])).expect("resources");
    for resource in resources["resources"].as_array().into_iter().flatten() {
        if let Some(kind) =
            resource["kind"].as_str().filter(|_| !resource["name"].as_str().unwrap_or("/").contains('/'))
        {
            flags.extend(["--api-versions".to_owned(), format!("{admission}/{kind}")]);
        }
    }
    flags
}

/// Applies rendered manifests with the bundled kubectl; `extra` adds flags.
pub fn kubectl_apply(manifests: &str, extra: &[&str]) -> String {
    kubectl_apply_as(manifests, "helm-e2e", extra)
}

/// Applies manifests server-side as the field manager `manager`.
pub fn kubectl_apply_as(manifests: &str, manager: &str, extra: &[&str]) -> String {
    use std::io::Write;
    let mut child = control_plane()
        .kubectl()
        .args(["apply", "--server-side", &format!("--field-manager={manager}"), "-f", "-"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    child.stdin.take().expect("stdin").write_all(manifests.as_bytes()).expect("write manifests");
    let out = child.wait_with_output().expect("kubectl");
    assert!(out.status.success(), "kubectl apply {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
