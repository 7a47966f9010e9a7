//! A real node beside the test control plane: kubelet, containerd and runc,
//! kube-scheduler and the controllers Pods need, started once per test binary
//! by `tests/node/node.sh` (see there), under the kubelet's own identity.
//!
//! Like the control plane, the node's supervisor holds a pipe from this
//! process: when the test binary exits, it stops every container, the kubelet
//! and containerd, and removes its cgroups; its mounts live in a private mount
//! namespace that ends with them. It needs root (mounts, cgroups): with
//! `E2E_NODE=off` the tests that need it skip instead.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use super::{STATE_DIR_PREFIX, control_plane, free_port};

/// The running node.
pub struct Node {
    dir: PathBuf,
    containerd: PathBuf,
    tools: PathBuf,
    /// From the supervisor's start to Node Ready (its builds, cached, aside).
    startup: Duration,
    // Held for the life of the process: closing it stops the node.
    _supervisor: Mutex<(Child, ChildStdin)>,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// Held by a test that installs cluster-wide objects (the CRDs, the chart's
/// ClusterRoles), so that two such tests do not take them from each other.
pub static CLUSTER_WIDE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the tests that need a node are skipped (`E2E_NODE=off`).
pub fn skipped() -> bool {
    std::env::var("E2E_NODE").is_ok_and(|v| v == "off")
}

/// The node of this test binary, started on first call.
pub fn node() -> &'static Node {
    NODE.get_or_init(|| Node::start().unwrap_or_else(|e| panic!("{e}")))
}

impl Node {
    fn start() -> Result<Self, String> {
        if not_root() {
            return Err("the test node needs root (mounts and cgroups); run as root, or set E2E_NODE=off".into());
        }
        let cp = control_plane();
        let dir = std::env::temp_dir().join(format!(
            "{STATE_DIR_PREFIX}node-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/node.sh");
        let (kubelet_port, healthz_port) = (free_port(), free_port());
        let mut child = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .arg(cp.binary())
            .arg(cp.kubeconfig())
            .arg(cp.kubelet_kubeconfig())
            .arg(cp.ca())
            .args([kubelet_port.to_string(), healthz_port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("reading from node.sh: {e}"))?;
        let ready: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            format!("the test node did not start ({status}); see its output above")
        })?;
        let field = |k: &str| ready[k].as_str().map(PathBuf::from).ok_or(format!("no {k} in {line}"));
        let node = Node {
            dir: field("dir")?,
            containerd: field("containerd")?,
            tools: field("tools")?,
            startup: Duration::from_millis(ready["millis"].as_u64().unwrap_or_default()),
            _supervisor: Mutex::new((child, stdin)),
        };
        eprintln!("the test node is Ready, {:.1} s after its supervisor started", node.startup.as_secs_f64());
        Ok(node)
    }

    /// How long the node took from its supervisor's start to Ready.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The node's state directory (its logs are in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The resident memory of the kubelet and of containerd, in MiB.
    pub fn memory_mib(&self) -> (f64, f64) {
        let rss = |pidfile: &str| {
            let pid: u32 = std::fs::read_to_string(self.dir.join(pidfile)).ok()?.trim().parse().ok()?;
            super::proc_memory_kib(pid, "VmRSS").map(|kib| kib as f64 / 1024.0)
        };
        (rss("kubelet.pid").unwrap_or_default(), rss("containerd.pid").unwrap_or_default())
    }

    /// The host PIDs of the processes the containers of the Pod of UID
    /// `pod_uid` run (its sandbox aside), found by their cgroups.
    pub fn container_pids(&self, pod_uid: &str) -> Vec<u32> {
        let marker = format!("/pod{pod_uid}/");
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let in_pod = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&marker));
            let sandbox = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"/pause"));
            if in_pod && !sandbox {
                pids.push(pid);
            }
        }
        pids
    }

    /// Imports a docker-archive into the node's containerd (Pods use it with
    /// `imagePullPolicy: Never`).
    pub fn import_image(&self, archive: &Path) {
        let out = Command::new(self.tools.join("usr/bin/ctr"))
            .env("LD_LIBRARY_PATH", self.tools.join("usr/lib/x86_64-linux-gnu"))
            .arg("--address")
            .arg(&self.containerd)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("run ctr");
        assert!(out.status.success(), "importing {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// Whether this process runs as another user than root.
fn not_root() -> bool {
    // Read from /proc rather than a libc call (no `unsafe` in this project).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) != Some("0")))
        .unwrap_or(true)
}
