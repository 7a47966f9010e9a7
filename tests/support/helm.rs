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

/// Renders the chart for `release` into `namespace`.
pub fn render(release: &str, namespace: &str) -> String {
    run(helm().args(["template", release, &chart(), "--namespace", namespace, "--kube-version", "1.36.3"]))
}

/// Applies rendered manifests with the bundled kubectl; `extra` adds flags.
pub fn kubectl_apply(manifests: &str, extra: &[&str]) -> String {
    use std::io::Write;
    let mut child = control_plane()
        .kubectl()
        .args(["apply", "--server-side", "--field-manager=helm-e2e", "-f", "-"])
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
