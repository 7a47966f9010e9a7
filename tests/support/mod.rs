//! Test harness: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) shared by every test in one test binary, and a fresh
//! namespace per test.
//!
//! The control plane is the `controlplane` binary built from the official
//! Kubernetes Go modules by `tests/controlplane/build.sh` (or the binary named by
//! `REGISTRAR_CONTROLPLANE`). It is started once, on first use, as a supervisor
//! process (`controlplane up --exit-on-stdin-close --cleanup`) whose standard
//! input is a pipe held by this process: when the test binary exits — normally,
//! after a panic, or killed — the pipe closes and the supervisor stops every
//! component and removes its temporary directory.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

pub mod apps;
pub mod helm;
pub mod hydra;
pub mod ledger_attacks;
pub mod memory_attacks;
pub mod node;
pub mod operator;
pub mod proxies;
pub mod registry;
pub mod tenants;
pub mod tls;
pub mod webhook;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

/// The prefix of every harness state directory; the leftover check looks for it.
pub const STATE_DIR_PREFIX: &str = "registrar-e2e-";

/// A running control plane.
pub struct ControlPlane {
    binary: PathBuf,
    kubeconfig: PathBuf,
    /// The one node's identity (system:node:127.0.0.1), for a test node's kubelet.
    kubelet_kubeconfig: PathBuf,
    ca: PathBuf,
    server: String,
    // Held for the life of the process: closing it stops the control plane.
    // Each line written to it is a command (see [`ControlPlane::disturb`]),
    // answered by a line of the supervisor's output.
    supervisor: Mutex<(Child, ChildStdin, BufReader<std::process::ChildStdout>)>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first call.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| ControlPlane::start().unwrap_or_else(|e| panic!("{e}")))
}

impl ControlPlane {
    /// Another control plane, separate from this binary's (nothing installed
    /// in it); stopped when dropped.
    pub fn start_separate() -> Result<Self, String> {
        Self::start()
    }

    fn start() -> Result<Self, String> {
        let binary = controlplane_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "{STATE_DIR_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut child = Command::new(&binary)
            .args(["up", "--exit-on-stdin-close", "--cleanup", "--dir"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        // `up` prints one JSON line once etcd, the apiserver and the
        // controller-manager are ready, or exits (with its logs on stderr).
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line).map_err(|e| format!("reading from controlplane up: {e}"))?;
        let ready: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            format!("the control plane did not start ({status}); see its output above")
        })?;
        let field = |k: &str| ready[k].as_str().map(str::to_owned).ok_or(format!("no {k} in {line}"));
        Ok(ControlPlane {
            binary,
            kubeconfig: field("kubeconfig")?.into(),
            kubelet_kubeconfig: field("kubelet_kubeconfig")?.into(),
            ca: field("ca")?.into(),
            server: field("server")?,
            supervisor: Mutex::new((child, stdin, stdout)),
        })
    }

    /// Disturbs the cluster, for the chaos tests (whose binary has the
    /// control plane to itself): "restart" stops etcd, kube-apiserver and
    /// kube-controller-manager and starts them again on the same data, ports
    /// and certificates; "stop" and "start" do so in two steps; "freeze" and
    /// "thaw" send them SIGSTOP and SIGCONT. Returns once it is done (after
    /// a start, once all three are ready again).
    pub async fn disturb(&'static self, command: &'static str) {
        tokio::task::spawn_blocking(move || self.command(command))
            .await
            .expect("the command's thread")
            .unwrap_or_else(|e| panic!("controlplane {command}: {e}"));
    }

    fn command(&self, command: &str) -> Result<(), String> {
        use std::io::Write;
        let mut supervisor = self.supervisor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, stdin, stdout) = &mut *supervisor;
        writeln!(stdin, "{command}").and_then(|()| stdin.flush()).map_err(|e| format!("writing: {e}"))?;
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| format!("reading: {e}"))?;
        let reply: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        match reply["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(reply["error"].as_str().unwrap_or(&line).to_owned()),
        }
    }

    /// Path of an admin kubeconfig, for tests that drive kubectl or helm.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The control-plane binary (it runs any of its components, and kubectl).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A kubeconfig with the test node's identity (system:node:127.0.0.1).
    pub fn kubelet_kubeconfig(&self) -> &Path {
        &self.kubelet_kubeconfig
    }

    /// The cluster's CA certificate.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// The apiserver's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The kubectl of the control plane's own release, pointed at it.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("kubectl").env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// A kubeconfig for the same cluster that impersonates `user` (for example
    /// `system:serviceaccount:NS:NAME`), written next to the admin one.
    pub fn impersonating_kubeconfig(&self, user: &str) -> PathBuf {
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        for named in &mut kubeconfig.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(user.to_owned());
            }
        }
        let path = self.kubeconfig.with_file_name(format!("as-{:08x}.kubeconfig", rand::random::<u32>()));
        let text = serde_json::to_string(&kubeconfig).expect("serialize kubeconfig");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A client that impersonates `user`.
    pub async fn client_as(&self, user: &str) -> Client {
        self.client_as_in(user, &[]).await
    }

    /// A client that impersonates `user` in `groups` (`--as-group`).
    pub async fn client_as_in(&self, user: &str, groups: &[&str]) -> Client {
        let mut kubeconfig = Kubeconfig::read_from(self.impersonating_kubeconfig(user)).expect("read kubeconfig");
        if !groups.is_empty() {
            for named in &mut kubeconfig.auth_infos {
                if let Some(auth) = named.auth_info.as_mut() {
                    auth.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
                }
            }
        }
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
        Client::try_from(config).expect("client")
    }

    /// An admin client. Each test builds its own: a client belongs to the tokio
    /// runtime it was made on.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("load kubeconfig");
        Client::try_from(config).expect("build client")
    }
}

/// The control-plane binary: `REGISTRAR_CONTROLPLANE`, or built (and cached) by
/// tests/controlplane/build.sh.
fn controlplane_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("REGISTRAR_CONTROLPLANE") {
        return Ok(path.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().into())
}

/// One test's own namespace on the shared control plane.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<random>` and an admin client.
    pub async fn new(prefix: &str) -> Self {
        Self::labelled(prefix, &[]).await
    }

    /// Creates a namespace named `<prefix>-<random>` with these labels.
    pub async fn labelled(prefix: &str, labels: &[(&str, &str)]) -> Self {
        let client = control_plane().client().await;
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNamespace { name, client }
    }

    /// An `Api` for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace as a user would: its apps keep registrar's
    /// finalizer, so the running operator revokes each one before it goes.
    /// For tests that measure or check revocation; [`TestNamespace::delete`]
    /// cleans up after them.
    pub async fn delete_as_a_user(&self) {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete namespace {}: {e}", self.name));
    }

    /// Deletes the namespace (the controller-manager removes its contents),
    /// and its apps with it, taking registrar's finalizer off them: the
    /// test's operator is gone or about to go, and a namespace holding a
    /// finalizer nobody removes stays Terminating for the rest of the run,
    /// its deletion retried by the controller-manager every 8 seconds (80
    /// such namespaces by the end of an e2e run: a load on every later test,
    /// and a namespace deleted by a test waited minutes behind them). The
    /// apps are deleted first, so a running operator cannot put the
    /// finalizer back. Tests that check revocation delete their apps or
    /// namespaces themselves, with their operator running
    /// ([`TestNamespace::delete_as_a_user`]).
    /// A namespace left behind by a failed test goes with the control plane.
    pub async fn delete(self) {
        let _ = self.delete_contents().await;
    }

    /// [`TestNamespace::delete`], then waits (up to 3 minutes) until the
    /// namespace is gone: for tests that run one at a time and measure, so
    /// the next starts on a quiet control plane.
    pub async fn delete_and_wait(self) {
        let (namespaces, name) = self.delete_contents().await;
        eventually(&format!("namespace {name} to be gone"), Duration::from_secs(180), || async {
            namespaces.get_opt(&name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    async fn delete_contents(self) -> (Api<Namespace>, String) {
        use futures::StreamExt;
        use kube::api::{ListParams, Patch, PatchParams};

        let namespaces = Api::<Namespace>::all(self.client.clone());
        let _ = namespaces.delete(&self.name, &DeleteParams::default()).await;
        let apps = Api::<registrar::api::AppRegistration>::namespaced(self.client.clone(), &self.name);
        let _ = apps.delete_collection(&DeleteParams::default(), &ListParams::default()).await;
        let left = apps.list_metadata(&ListParams::default()).await.map(|list| list.items).unwrap_or_default();
        let release = Patch::Merge(serde_json::json!({ "metadata": { "finalizers": null } }));
        futures::stream::iter(left.iter().filter(|app| app.metadata.finalizers.is_some()))
            .for_each_concurrent(16, |app| {
                let (apps, release) = (&apps, &release);
                async move {
                    let name = app.metadata.name.as_deref().unwrap_or_default();
                    let _ = apps.patch_metadata(name, &PatchParams::default(), release).await;
                }
            })
            .await;
        (namespaces, self.name)
    }
}

/// Whether `user` may `verb` the `resource` of `group` (in `namespace`, or
/// cluster-wide) — a SubjectAccessReview: tests wait on it after granting RBAC,
/// which the apiserver's authorizer learns of asynchronously.
pub async fn allowed_in(
    client: &Client,
    namespace: Option<&str>,
    user: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let groups = user.starts_with("system:serviceaccount:").then(|| vec!["system:serviceaccounts".to_string()]);
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups,
            resource_attributes: Some(ResourceAttributes {
                namespace: namespace.map(str::to_owned),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .is_ok_and(|r| r.status.is_some_and(|s| s.allowed))
}

/// Grants `user` the Role `role` in `ns` (created with `rules`, bound to the
/// user), and waits until the apiserver allows the first rule's first verb on
/// its first resource.
pub async fn grant_role(ns: &TestNamespace, user: &str, role: &str, rules: serde_json::Value) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let first = &rules[0];
    let (group, resource, verb) = (
        first["apiGroups"][0].as_str().unwrap_or_default().to_owned(),
        first["resources"][0].as_str().expect("a resource").to_owned(),
        first["verbs"][0].as_str().expect("a verb").to_owned(),
    );
    let role_object: Role =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": role }, "rules": rules })).expect("Role");
    ns.api::<Role>().create(&PostParams::default(), &role_object).await.expect("create the Role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{role}-{user}") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
    }))
    .expect("RoleBinding");
    ns.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("create the RoleBinding");
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.name.clone()),
                group: Some(group),
                resource: Some(resource),
                verb: Some(if verb == "*" { "create".to_owned() } else { verb }),
                name: first["resourceNames"][0].as_str().map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews = Api::<SubjectAccessReview>::all(ns.client.clone());
    eventually(&format!("{user}'s Role {role} to take effect"), Duration::from_secs(60), || async {
        let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
        answer.status.is_some_and(|s| s.allowed).then_some(())
    })
    .await;
}

/// [`allowed_in`] cluster-wide.
pub async fn allowed(client: &Client, user: &str, group: &str, resource: &str, verb: &str) -> bool {
    allowed_in(client, None, user, group, resource, verb).await
}

/// Starts `program` with `args` under a shell that ends it when its standard
/// input (a pipe from this process) closes: on drop of the child's stdin, on a
/// panic, or when the test binary is killed. Output goes to `log`.
pub fn spawn_supervised(
    program: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::ffi::OsStr)],
    log: &Path,
) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let script = r#""$@" & pid=$!; cat >/dev/null; kill "$pid" 2>/dev/null; wait "$pid""#;
    let mut command = Command::new("bash");
    command.args(["-c", script, "supervisor"]).arg(program).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

/// Ends a child started by [`spawn_supervised`] and waits for it.
pub fn stop_supervised(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// A free loopback port (released for the caller to bind).
///
/// Chosen below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`,
/// 32768–60999 by default), which the port 0 trick draws from: every outgoing
/// connection of every test takes its local port there too, so a port found
/// free there can be some client's by the time a server binds it (Hydra once
/// lost its port so). A random port here is never handed out by the kernel,
/// and two tests pick the same one with a chance of one in 22,000.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 10_000 + rand::random::<u16>() % 22_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 10000 and 32000 on 127.0.0.1");
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
/// Tests wait on conditions with deadlines, never on fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The operator's namespace in tests (the operators run without POD_NAMESPACE).
pub const OPERATOR_NAMESPACE: &str = "default";

/// Installs registrar's CRDs (server-side apply, idempotent) and waits until the
/// apiserver serves them; creates the seal key the operators share (as the
/// first operator would), so no test's write count includes it.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};

    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply("registrar-tests").force();
    for crd in registrar::api::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        api.patch(&name, &params, &Patch::Apply(&crd)).await.unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        eventually(&format!("CRD {name} to be established"), Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let established =
                    crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        })
        .await;
    }
    registrar::credentials::seal::SealKey::load_or_create(
        client,
        OPERATOR_NAMESPACE,
        registrar::credentials::seal::DEFAULT_KEY_SECRET,
    )
    .await
    .expect("the seal key");
}

/// Server-side applies an AppRegistration as a GitOps tool would (field
/// manager `e2e-gitops`, forced), leaving status out.
pub async fn gitops_apply(
    api: &Api<registrar::api::AppRegistration>,
    app: &registrar::api::AppRegistration,
) -> Result<registrar::api::AppRegistration, kube::Error> {
    use kube::{
        ResourceExt,
        api::{Patch, PatchParams},
    };
    let mut body = serde_json::to_value(app).map_err(kube::Error::SerdeError)?;
    if let Some(object) = body.as_object_mut() {
        object.remove("status");
    }
    api.patch(&app.name_any(), &PatchParams::apply("e2e-gitops").force(), &Patch::Apply(body)).await
}

/// Installs registrar's CRDs and admission policies (Registered By, Global
/// scope), and waits until the policies act (they take effect asynchronously).
/// On a cluster without MutatingAdmissionPolicy (Kubernetes 1.35) the
/// ValidatingAdmissionPolicies go in as they are, and registrar's webhook,
/// served by this test binary, records Registered By and adds the finalizer
/// under the name of the policy it stands in for.
pub async fn install_registrar(client: &Client) {
    use registrar::api::{AppRegistration, AppRegistrationSpec};

    install_crds(client).await;
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let policies = webhook::serves_mutating_policies(client).await;
    let mut manifests = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .expect("read deploy/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a policy");
        for doc in text.split("\n---\n") {
            let mutating = doc.lines().any(|l| l.starts_with("kind: MutatingAdmissionPolicy"));
            if policies || !mutating {
                manifests.push_str(doc);
                manifests.push_str("\n---\n");
            }
        }
    }
    helm::kubectl_apply_as(&manifests, "registrar-tests", &[]);
    if !policies {
        webhook::for_suite().install(client, "registrar-registered-by", None).await;
    }

    let apps: Api<AppRegistration> = Api::namespaced(client.clone(), "default");
    eventually("the Registered By policy to take effect", Duration::from_secs(60), || {
        let apps = apps.clone();
        async move {
            let probe = AppRegistration::new(
                &format!("policy-probe-{:08x}", rand::random::<u32>()),
                AppRegistrationSpec { display_name: "probe".into(), ..Default::default() },
            );
            let created = apps.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await.ok()?;
            let mut global = probe.clone();
            global.spec.scope = registrar::api::Scope::Global;
            let global_refused =
                apps.create(&PostParams { dry_run: true, ..Default::default() }, &global).await.is_err();
            (global_refused && created.metadata.annotations?.contains_key("registrar.dev/registered-by")).then_some(())
        }
    })
    .await;
    registered_by_believed(client, "registrar-registered-by").await;
}

/// Waits until registrar believes the Registered By annotation of an app
/// created now: from two seconds after the newest creation time of the
/// policies named after `name` and their bindings (registered_by::TAKES_EFFECT).
pub async fn registered_by_believed(client: &Client, name: &str) {
    let newest = registered_by_policies_created(client, name).await;
    eventually("the Registered By policies to be believed", Duration::from_secs(10), || async {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        (now > newest + registrar::registration::registered_by::TAKES_EFFECT).then_some(())
    })
    .await;
}

/// The newest creation time (in seconds) of the Registered By policies and
/// bindings, the webhook's configuration standing in for the mutating policy
/// where the cluster has none.
async fn registered_by_policies_created(client: &Client, name: &str) -> i64 {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, MutatingWebhookConfiguration,
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    fn created<K: kube::Resource>(object: K) -> i64 {
        object.meta().creation_timestamp.as_ref().map_or(0, |t| t.0.as_second())
    }
    let immutable = registrar::registration::registered_by::immutable_name(name);
    let immutable = immutable.as_str();
    let recorder = if webhook::serves_mutating_policies(client).await {
        let m = Api::<MutatingAdmissionPolicy>::all(client.clone()).get(name).await.expect("policy");
        let mb = Api::<MutatingAdmissionPolicyBinding>::all(client.clone()).get(name).await.expect("binding");
        created(m).max(created(mb))
    } else {
        created(Api::<MutatingWebhookConfiguration>::all(client.clone()).get(name).await.expect("the webhook"))
    };
    let v = Api::<ValidatingAdmissionPolicy>::all(client.clone()).get(immutable).await.expect("policy");
    let vb = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()).get(immutable).await.expect("binding");
    recorder.max(created(v)).max(created(vb))
}

/// Creates the namespace `name` unless it exists (shared ones, such as the
/// platform namespace, outlive any one test).
pub async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace =
        Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// A memory line of a process's /proc status (`VmRSS`, `VmHWM`, …), in KiB;
/// `None` when the process or the line is gone.
pub fn proc_memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
