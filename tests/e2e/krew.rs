//! The krew manifest: scripts/krew-package.sh packs the plugin and fills in
//! the checked-in template deploy/krew/registrar.yaml.tmpl, and a real krew
//! v0.4.3 (scripts/install-krew.sh, or the binary named by `REGISTRAR_KREW`)
//! validates the manifest, checks the archive's SHA-256 and installs
//! `kubectl registrar` under its own `KREW_ROOT`, where kubectl finds it. No
//! cluster is involved: kubectl only dispatches to the plugin.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use crate::support::STATE_DIR_PREFIX;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The path a script prints on stdout (a cached tool it builds if needed).
fn built_by(script: &str) -> PathBuf {
    let script = repo().join(script);
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("run build script");
    assert!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout).trim().into()
}

fn krew() -> PathBuf {
    std::env::var_os("REGISTRAR_KREW").map_or_else(|| built_by("scripts/install-krew.sh"), PathBuf::from)
}

/// kubectl, as the control-plane binary bundles it (`controlplane kubectl`).
fn kubectl() -> Command {
    let binary = std::env::var_os("REGISTRAR_CONTROLPLANE")
        .map_or_else(|| built_by("tests/controlplane/build.sh"), PathBuf::from);
    let mut cmd = Command::new(binary);
    cmd.arg("kubectl");
    cmd
}

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("{STATE_DIR_PREFIX}krew-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` to success and returns its stdout and its stderr.
fn run(cmd: &mut Command) -> (String, String) {
    let Output { status, stdout, stderr } = cmd.stdin(Stdio::null()).output().expect("run command");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned());
    assert!(status.success(), "{cmd:?} failed ({status}):\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn the_krew_manifest_installs_the_plugin() {
    let version = env!("CARGO_PKG_VERSION");
    let base_url = format!("https://github.com/registrar-dev/registrar/releases/download/v{version}");
    let archive_name = format!("kubectl-registrar_{version}_linux_amd64.tar.gz");
    let temp = TempDir::new();
    let (out, root, home) = (temp.0.join("out"), temp.0.join("krew"), temp.0.join("home"));
    std::fs::create_dir_all(&home).expect("create home");

    // Package the debug build exactly as a release packs the release build.
    run(Command::new("bash")
        .arg(repo().join("scripts/krew-package.sh"))
        .args([version, &base_url])
        .arg(&out)
        .env("KUBECTL_REGISTRAR_BIN", env!("CARGO_BIN_EXE_kubectl-registrar")));
    let manifest_path = out.join("registrar.yaml");
    let archive = out.join(&archive_name);
    let manifest = std::fs::read_to_string(&manifest_path).expect("read the manifest");
    assert!(manifest.contains(&format!("\n  version: v{version}\n")), "{manifest}");
    assert!(manifest.contains(&format!("\n      uri: {base_url}/{archive_name}\n")), "{manifest}");
    assert!(!manifest.contains("${"), "a placeholder was left:\n{manifest}");

    // krew validates the manifest and the archive's SHA-256, then installs.
    let (stdout, stderr) = run(Command::new(krew())
        .arg("install")
        .arg(format!("--manifest={}", manifest_path.display()))
        .arg(format!("--archive={}", archive.display()))
        .env("KREW_ROOT", &root)
        .env("HOME", &home)
        .env("KREW_NO_UPGRADE_CHECK", "1"));
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("Installed plugin: registrar"), "{said}");
    assert!(said.contains("kubectl registrar --help"), "the caveats were not shown:\n{said}");
    assert!(root.join("receipts/registrar.yaml").is_file(), "krew kept no receipt");

    let plugin = root.join("bin/kubectl-registrar");
    assert!(plugin.exists(), "{} is missing", plugin.display());
    let (stdout, _) = run(Command::new(&plugin).arg("--version"));
    assert_eq!(stdout.trim(), format!("kubectl-registrar {version}"));
    let (stdout, _) = run(Command::new(&plugin).arg("--help"));
    assert!(stdout.contains("register"), "{stdout}");

    // kubectl finds it in krew's bin directory as `kubectl registrar`.
    let (stdout, _) = run(kubectl().args(["registrar", "--version"]).env("PATH", root.join("bin")).env("HOME", &home));
    assert_eq!(stdout.trim(), format!("kubectl-registrar {version}"));
}
