//! Runs the registrar binary as its own process against the test control plane,
//! watching one test's namespace, with its log captured to a file.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{TestNamespace, control_plane, eventually};

/// A running operator process. Killed when dropped.
///
/// It binds its own ports (`127.0.0.1:0`) and the harness reads from its log
/// which it got: a port chosen free by the harness and bound later by the
/// operator can be taken by another process meanwhile.
pub struct Operator {
    kubeconfig: PathBuf,
    metrics_addr: String,
    /// The registry's port, once bound (kept across restarts).
    registry_port: Option<u16>,
    log: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Operator {
    /// Starts registrar for `namespace` and waits until its caches are synced.
    pub async fn start(namespace: &str) -> Self {
        Self::start_with(&["--watch-namespace", namespace]).await
    }

    /// Starts registrar with these arguments (besides the metrics address and
    /// log format) and waits until its caches are synced.
    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_as(control_plane().kubeconfig().to_path_buf(), args).await
    }

    /// Starts registrar with the identity and cluster of `kubeconfig`.
    pub async fn start_as(kubeconfig: PathBuf, args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("registrar-operator-{:08x}.log", rand::random::<u32>()));
        let mut operator = Operator {
            kubeconfig,
            metrics_addr: String::new(),
            registry_port: None,
            log,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        operator.spawn().await;
        operator
    }

    async fn spawn(&mut self) {
        // A restarted operator serves the registry where it did before.
        if let Some(port) = self.registry_port {
            for arg in &mut self.extra_args {
                if arg == "127.0.0.1:0" {
                    *arg = format!("127.0.0.1:{port}");
                }
            }
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open operator log");
        let from = log.metadata().map_or(0, |m| m.len() as usize);
        let child = Command::new(env!("CARGO_BIN_EXE_registrar"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(&self.extra_args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,registrar=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("start the registrar binary");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let said = self.log().get(from..).unwrap_or_default().to_owned();
            if let Some(addr) = logged_addr(&said, "serving /metrics, /healthz and /readyz") {
                self.metrics_addr = addr;
                // Ready means the registry listens, when it is on: it said where first.
                if http_get(&self.metrics_addr, "/readyz").await.is_some_and(|(status, _)| status == 200) {
                    let said = self.log().get(from..).unwrap_or_default().to_owned();
                    let registry = logged_addr(&said, "the registry API listens");
                    if let Some(port) = registry.and_then(|a| a.rsplit(':').next()?.parse().ok()) {
                        self.registry_port = Some(port);
                    }
                    return;
                }
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                // What it said is what a reader of a failed run needs.
                let tail: Vec<&str> = said.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "the operator did not become ready within 60s (exit: {exited:?}); its last lines:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port the registry API listens on, when the operator serves it.
    pub fn registry_port(&self) -> Option<u16> {
        self.registry_port
    }

    /// The operator's process ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod: the exit status, once it exited
    /// (panics if it has not within `within`).
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the operator is running");
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        eventually("the operator to exit after SIGTERM", within, || std::future::ready(child.try_wait().ok().flatten()))
            .await
    }

    /// Starts the process again after [`Operator::kill`].
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> String {
        http_get(&self.metrics_addr, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    /// The value of a counter or gauge line (`name` with its labels, e.g.
    /// `registrar_kube_requests_total{verb="PATCH"}`), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Write requests (POST, PUT, PATCH, DELETE) the operator has made, less
    /// the access and token reviews (POSTs that change nothing).
    pub async fn writes(&self) -> f64 {
        let mut total = 0.0;
        for verb in ["POST", "PUT", "PATCH", "DELETE"] {
            total += self.metric(&format!("registrar_kube_requests_total{{verb=\"{verb}\"}}")).await;
        }
        total - self.metric("registrar_kube_reviews_total").await
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        // A failing test leaves the log behind, and says where.
        if std::thread::panicking() {
            eprintln!("operator log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Two replicas of registrar for `ns` with leader election on a lease of
/// `lease_seconds`, and which of them leads once one does.
pub async fn two_replicas(ns: &TestNamespace, lease_seconds: u64) -> ([Operator; 2], usize) {
    let duration = lease_seconds.to_string();
    let args = [
        "--watch-namespace",
        &ns.name,
        "--leader-election",
        "--leader-election-namespace",
        &ns.name,
        "--leader-election-duration",
        &duration,
    ];
    let replicas = [Operator::start_with(&args).await, Operator::start_with(&args).await];
    let leader = eventually("exactly one leader", Duration::from_secs(60), || async {
        match (replicas[0].metric("registrar_leader").await, replicas[1].metric("registrar_leader").await) {
            (1.0, 0.0) => Some(0),
            (0.0, 1.0) => Some(1),
            _ => None,
        }
    })
    .await;
    (replicas, leader)
}

/// The address in the first JSON log line whose message is `message`.
fn logged_addr(log: &str, message: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let line: serde_json::Value = serde_json::from_str(line).ok()?;
        (line.get("message")?.as_str()? == message).then(|| line.get("addr")?.as_str().map(str::to_owned))?
    })
}

/// A minimal HTTP/1.0 GET on loopback: (status, body).
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr = addr.to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((status, body))
    })
    .await
    .ok()
    .flatten()
}
