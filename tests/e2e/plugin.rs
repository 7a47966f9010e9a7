//! The kubectl plugin (`kubectl-registrar`) on the real control plane: every
//! command, its errors, and what it prints — a client secret only where the
//! command's purpose is to show it once.

use std::{path::Path, process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use registrar::api::{AppConsent, AppRegistration};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    ControlPlane, TestNamespace,
    apps::{credentials, secret_value, status, wait_app},
    control_plane, eventually, install_registrar,
    operator::Operator,
    registry::{Caller, registry_operator},
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// What one run of the plugin did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "the plugin failed:\n{}\n{}", self.stdout, self.stderr);
        self
    }

    fn failed(self) -> Self {
        assert_eq!(self.code, 1, "the plugin should have failed:\n{}\n{}", self.stdout, self.stderr);
        self
    }

    fn everything(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the plugin against `kubeconfig` with `input` on stdin (none: stdin is
/// not a terminal and empty).
pub async fn plugin_at(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Run {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let input = input.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-registrar"))
            .args(&args)
            .args(["--timeout", "60s"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl-registrar");
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(input.unwrap_or_default().as_bytes());
        drop(stdin);
        let out = child.wait_with_output().expect("kubectl-registrar");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

async fn plugin(args: &[&str]) -> Run {
    plugin_at(control_plane().kubeconfig(), args, None).await
}

/// Namespaces of one organization (and a run label the operator selects).
struct Org {
    run: String,
    label: String,
    namespaces: Vec<TestNamespace>,
}

impl Org {
    async fn new(prefix: &str, count: usize) -> Self {
        let run = format!("{:08x}", rand::random::<u32>());
        let org = format!("{prefix}-{run}");
        let mut namespaces = Vec::new();
        for _ in 0..count {
            namespaces.push(TestNamespace::labelled(prefix, &[("registrar.dev/organization", org.as_str())]).await);
        }
        install_registrar(&namespaces[0].client).await;
        Org { label: format!("e2e.registrar.dev/run={run}"), run, namespaces }
    }

    fn selector(&self) -> Vec<String> {
        vec!["--selector".into(), self.label.clone()]
    }

    async fn delete(self) {
        for ns in self.namespaces {
            ns.delete().await;
        }
    }
}

async fn secret_of(ns: &TestNamespace, name: &str) -> String {
    let secret = credentials(ns, &format!("{name}-credentials")).await.expect("credentials Secret");
    secret_value(&secret, "client_secret").expect("a client secret")
}

async fn authenticates(caller: &Caller, id: &str, secret: &str) {
    eventually("the registry to accept the secret", TIMEOUT, || async {
        (caller.authenticate(id, secret).await.0 == StatusCode::OK).then_some(())
    })
    .await;
}

/// Register shows the Client ID and the secret once, with the warning; show
/// hides the secret unless --reveal; rotate shows the new one once (or says
/// where it is); revoke refuses without its confirmation, then revokes and
/// counts the consents it revoked.
#[tokio::test]
async fn register_show_rotate_and_revoke_an_app() {
    let org = Org::new("plug", 2).await;
    let args: Vec<String> = org.selector();
    let (_operator, port) = registry_operator(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (a, b) = (&org.namespaces[0], &org.namespaces[1]);
    let caller = Caller::new(a, port).await;

    let registered = plugin(&[
        "register",
        "billing",
        "-n",
        &a.name,
        "--scope",
        "organization",
        "--display-name",
        "Billing Portal",
        "--redirect-uri",
        "https://billing.example.com/cb",
        "--oauth-scope",
        "invoices.read",
        "--label",
        &org.label,
    ])
    .await
    .ok();
    let app = a.api::<AppRegistration>().get("billing").await.expect("created");
    let id = status(&app).client_id.expect("issued");
    let secret = secret_of(a, "billing").await;
    assert_eq!(registered.stdout.matches(&secret).count(), 1, "{}", registered.stdout);
    assert!(registered.stdout.contains(&id) && registered.stdout.contains("will not be shown again"));
    assert!(!registered.stderr.contains(&secret));
    assert!(!registered.everything().contains('\u{1b}'), "no colours off a terminal");
    authenticates(&caller, &id, &secret).await;

    let shown = plugin(&["show", "billing", "-n", &a.name]).await.ok();
    assert!(!shown.everything().contains(&secret), "{}", shown.stdout);
    for expected in [id.as_str(), "Billing Portal", "Organization", "invoices.read", "--reveal", "Secret Version: 1"] {
        assert!(shown.stdout.contains(expected), "{expected} in {}", shown.stdout);
    }
    let revealed = plugin(&["show", "billing", "-n", &a.name, "--reveal"]).await.ok();
    assert!(revealed.stdout.contains(&secret));
    let json: Value =
        serde_json::from_str(&plugin(&["show", "billing", "-n", &a.name, "-o", "json"]).await.ok().stdout)
            .expect("json");
    assert_eq!(json["clientId"], id.as_str());
    assert!(json.get("clientSecret").is_none());

    let rotated = plugin(&["rotate", "billing", "-n", &a.name, "--grace", "1h"]).await.ok();
    let second = secret_of(a, "billing").await;
    assert_ne!(second, secret);
    assert_eq!(rotated.stdout.matches(&second).count(), 1, "{}", rotated.stdout);
    assert!(rotated.stdout.contains("version 2") && !rotated.everything().contains(&secret));
    let app = a.api::<AppRegistration>().get("billing").await.expect("get");
    let grace = app.spec.rotation.and_then(|r| r.grace_period).map(Duration::from);
    assert_eq!(grace, Some(Duration::from_secs(3600)));
    authenticates(&caller, &id, &second).await;
    let quiet = plugin(&["rotate", "billing", "-n", &a.name, "--no-show"]).await.ok();
    let third = secret_of(a, "billing").await;
    assert!(!quiet.everything().contains(&third), "{}", quiet.stdout);
    assert!(quiet.stdout.contains(&format!("Secret {}/billing-credentials, key client_secret", a.name)));

    // Another namespace of the organization consents.
    plugin(&["consent", "add", &format!("{}/billing", a.name), "-n", &b.name, "--label", &org.label]).await.ok();
    wait_app(a, "billing", "the consent in status", |a| status(a).consents.is_some_and(|c| c.count == 1)).await;

    // Without a terminal and without --yes, nothing is revoked.
    let refused = plugin(&["revoke", "billing", "-n", &a.name]).await.failed();
    assert!(refused.stderr.contains("type the app's name"), "{}", refused.stderr);
    assert!(a.api::<AppRegistration>().get_opt("billing").await.expect("get").is_some());
    let revoked = plugin(&["revoke", "billing", "-n", &a.name, "--yes"]).await.ok();
    assert!(revoked.stdout.contains(&id) && revoked.stdout.contains("1 consent(s) revoked"), "{}", revoked.stdout);
    assert!(a.api::<AppRegistration>().get_opt("billing").await.expect("get").is_none(), "gone when it returns");
    assert!(a.api::<Secret>().get_opt("billing-credentials").await.expect("get").is_none());
    eventually("the consent to report the revocation", TIMEOUT, || async {
        let c = b.api::<AppConsent>().get("billing").await.ok()?;
        let reason = c.status?.conditions.into_iter().find(|c| c.type_ == "Granted")?.reason;
        (reason == "AppRevoked").then_some(())
    })
    .await;
    org.delete().await;
}

/// Browse shows the namespace's Organization and Global tabs with what it
/// consented to; consent add grants and says so, or says why not (an app of
/// another organization is not visible); consent remove withdraws it.
#[tokio::test]
async fn browse_and_consents() {
    let org = Org::new("browse", 2).await;
    let other = TestNamespace::labelled("elsewhere", &[("registrar.dev/organization", "elsewhere")]).await;
    let args: Vec<String> = org.selector();
    let _operator = Operator::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (a, b) = (&org.namespaces[0], &org.namespaces[1]);
    let register = |ns: &str, name: &str, scope: &str| {
        let (ns, name, scope, label) = (ns.to_owned(), name.to_owned(), scope.to_owned(), org.label.clone());
        async move {
            plugin(&[
                "register",
                &name,
                "-n",
                &ns,
                "--scope",
                &scope,
                "--redirect-uri",
                "https://app.example.com/cb",
                "--oauth-scope",
                "things.read",
                "--label",
                &label,
            ])
            .await
            .ok()
        }
    };
    crate::support::ensure_namespace(&a.client, "registrar-system").await;
    register(&a.name, "shared", "organization").await;
    register(&other.name, "foreign", "organization").await;
    let global = format!("directory-{}", org.run);
    register("registrar-system", &global, "global").await;

    let granted =
        plugin(&["consent", "add", &format!("{}/shared", a.name), "-n", &b.name, "-l", &org.label]).await.ok();
    assert!(granted.stdout.contains("Granted:") && granted.stdout.contains("things.read"), "{}", granted.stdout);

    let panel = plugin(&["browse", "-n", &b.name]).await.ok().stdout;
    assert!(panel.contains(&format!("Organization (browse-{})", org.run)) && panel.contains("Global"), "{panel}");
    let row = panel.lines().find(|l| l.contains(&format!("{}/shared", a.name))).unwrap_or_default();
    assert!(row.ends_with("yes"), "consented: {panel}");
    assert!(panel.contains(&format!("registrar-system/{global}")), "{panel}");
    assert!(!panel.contains("foreign"), "another organization's app is not shown: {panel}");
    let json: Value =
        serde_json::from_str(&plugin(&["browse", "-n", &b.name, "-o", "json"]).await.ok().stdout).expect("json");
    let apps = |tab: &str| json[tab].as_array().cloned().unwrap_or_default();
    assert!(apps("organizationApps").iter().any(|e| e["name"] == "shared" && e["consented"] == true));
    assert!(apps("globalApps").iter().any(|e| e["name"] == global.as_str() && e["consented"] == false));

    let hidden =
        plugin(&["consent", "add", &format!("{}/foreign", other.name), "-n", &b.name, "-l", &org.label]).await.failed();
    assert!(hidden.stderr.contains("not visible from this namespace"), "{}", hidden.stderr);

    let removed = plugin(&["consent", "remove", &format!("{}/shared", a.name), "-n", &b.name]).await.ok();
    assert!(removed.stdout.contains("may no longer use it"), "{}", removed.stdout);
    assert!(b.api::<AppConsent>().get_opt("shared").await.expect("get").is_none());
    let again = plugin(&["consent", "remove", &format!("{}/shared", a.name), "-n", &b.name]).await.failed();
    assert!(again.stderr.contains("not found"), "{}", again.stderr);

    let platform: Api<AppRegistration> = Api::namespaced(a.client.clone(), "registrar-system");
    let _ = platform.delete(&global, &Default::default()).await;
    other.delete().await;
    org.delete().await;
}

/// An export carries no status, server-set field or secret; imported into
/// another namespace it is a new, working app with its own secret; imported
/// again it existed.
#[tokio::test]
async fn export_then_import_into_another_namespace() {
    let org = Org::new("move", 2).await;
    let args: Vec<String> = org.selector();
    let (_operator, port) = registry_operator(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (a, c) = (&org.namespaces[0], &org.namespaces[1]);
    let caller = Caller::new(c, port).await;
    plugin(&["register", "ledger", "-n", &a.name, "--redirect-uri", "https://l.example.com/cb", "-l", &org.label])
        .await
        .ok();
    let original = a.api::<AppRegistration>().get("ledger").await.expect("get");
    let original_id = status(&original).client_id.expect("id");
    let original_secret = secret_of(a, "ledger").await;

    let exported = plugin(&["export", "ledger", "-n", &a.name]).await.ok().stdout;
    for absent in ["status:", "secretHash", "uid", "resourceVersion", "registered-by", original_id.as_str()] {
        assert!(!exported.contains(absent), "{absent} in {exported}");
    }
    assert!(!exported.contains(&original_secret));
    assert!(exported.contains("kind: AppRegistration") && exported.contains(&org.run), "{exported}");

    let imported = plugin_at(control_plane().kubeconfig(), &["import", "-", "-n", &c.name], Some(&exported)).await.ok();
    assert!(imported.stdout.contains(&format!("{}/ledger: created", c.name)), "{}", imported.stdout);
    assert!(imported.stdout.contains("new credentials issued"), "{}", imported.stdout);
    let copy = c.api::<AppRegistration>().get("ledger").await.expect("imported");
    let id = status(&copy).client_id.expect("issued");
    let secret = secret_of(c, "ledger").await;
    assert!(id != original_id && secret != original_secret);
    assert!(!imported.everything().contains(&secret), "import never prints a secret");
    authenticates(&caller, &id, &secret).await;

    let again = plugin_at(control_plane().kubeconfig(), &["import", "-", "-n", &c.name], Some(&exported)).await.ok();
    assert!(again.stdout.contains("existed, unchanged"), "{}", again.stdout);
    org.delete().await;
}

/// A consent whose status the apiserver refuses: the failure is a Warning
/// Event on the consent naming the step and the apiserver's reason, and the
/// consent is decided once the refusal ends.
#[tokio::test]
async fn a_failed_consent_reconcile_is_told_and_retried() {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let org = Org::new("consent-fail", 2).await;
    let args: Vec<String> = org.selector();
    let _operator = Operator::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (a, b) = (&org.namespaces[0], &org.namespaces[1]);
    plugin(&[
        "register",
        "tool",
        "-n",
        &a.name,
        "--scope",
        "organization",
        "--redirect-uri",
        "https://t.example.com/cb",
        "-l",
        &org.label,
    ])
    .await
    .ok();
    let name = format!("e2e-refuse-consent-status-{}", org.run);
    let manifests = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{ name: {name} }}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{ apiGroups: [registrar.dev], apiVersions: ["*"], operations: [UPDATE], resources: [appconsents/status] }}
  matchConditions:
    - {{ name: this-test, expression: "request.namespace == '{ns}'" }}
  validations:
    - {{ expression: "false", message: "consent status frozen by the e2e test" }}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{ name: {name} }}
spec: {{ policyName: {name}, validationActions: [Deny] }}
"#,
        ns = b.name
    );
    crate::support::helm::kubectl_apply(&manifests, &[]);
    // Created once the refusal is in force, so its first decision is refused.
    let consents = b.api::<AppConsent>();
    eventually("the refusal to take effect", TIMEOUT, || async {
        let mut probe = AppConsent::new("probe", registrar::api::AppConsentSpec::default());
        probe.spec.app_ref = registrar::api::AppRef { namespace: a.name.clone(), name: "tool".into() };
        let created = consents.create(&Default::default(), &probe).await.ok()?;
        let patch = kube::api::Patch::Merge(serde_json::json!({ "status": { "app": "x" } }));
        let refused = consents.patch_status("probe", &Default::default(), &patch).await.is_err();
        let _ = consents.delete(&created.metadata.name.unwrap_or_default(), &Default::default()).await;
        refused.then_some(())
    })
    .await;
    let mut consent = AppConsent::new("tool", registrar::api::AppConsentSpec::default());
    consent.spec.app_ref = registrar::api::AppRef { namespace: a.name.clone(), name: "tool".into() };
    consent.metadata.labels = Some([("e2e.registrar.dev/run".to_string(), org.run.clone())].into());
    consents.create(&Default::default(), &consent).await.expect("consent");
    let event = crate::support::apps::wait_event(b, "ReconcileFailed", "writing the status of AppConsent").await;
    let note = event.message.unwrap_or_default();
    assert!(note.contains("consent status frozen by the e2e test") && note.contains("retrying in"), "{note}");
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // The refusal ends: the retry (with backoff) decides it.
    Api::<ValidatingAdmissionPolicyBinding>::all(b.client.clone())
        .delete(&name, &Default::default())
        .await
        .expect("unbind");
    Api::<ValidatingAdmissionPolicy>::all(b.client.clone()).delete(&name, &Default::default()).await.expect("unpolicy");
    eventually("the consent to be granted", TIMEOUT, || async {
        let c = consents.get("tool").await.ok()?;
        let granted = c.status?.conditions.into_iter().any(|c| c.type_ == "Granted" && c.status == "True");
        granted.then_some(())
    })
    .await;
    org.delete().await;
}

/// Clear errors: registrar not installed, a forbidden action (naming the verb
/// and resource), an app that does not exist.
#[tokio::test]
async fn errors_say_what_is_missing_or_forbidden() {
    let ns = TestNamespace::new("plug-err").await;
    install_registrar(&ns.client).await;
    let forbidden =
        plugin(&["--as", "nobody", "register", "x", "-n", &ns.name, "--redirect-uri", "https://x.example.com/cb"])
            .await
            .failed();
    assert!(
        forbidden
            .stderr
            .contains(&format!("you may not create appregistrations.registrar.dev in namespace \"{}\"", ns.name)),
        "{}",
        forbidden.stderr
    );
    // An admission policy's refusal is not mistaken for RBAC.
    let global =
        plugin(&["register", "g", "-n", &ns.name, "--scope", "global", "--redirect-uri", "https://g.example.com/cb"])
            .await
            .failed();
    assert!(global.stderr.contains("the apiserver refused") && !global.stderr.contains("RBAC"), "{}", global.stderr);
    // Someone who may register apps but not read Secrets: the app is
    // registered, and the error says where its credentials are.
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "registers-apps" },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["appregistrations"], "verbs": ["create", "get", "list", "watch"] }]
    }))
    .expect("role");
    ns.api::<Role>().create(&Default::default(), &role).await.expect("role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "registers-apps" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "registers-apps" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "registrant" }]
    }))
    .expect("binding");
    ns.api::<RoleBinding>().create(&Default::default(), &binding).await.expect("binding");
    let _operator = Operator::start(&ns.name).await;
    let partial = plugin(&[
        "--as",
        "registrant",
        "register",
        "half",
        "-n",
        &ns.name,
        "--redirect-uri",
        "https://h.example.com/cb",
    ])
    .await
    .failed();
    assert!(partial.stdout.contains("Registered half"), "{}", partial.stdout);
    assert!(
        partial.stderr.contains("half-credentials") && partial.stderr.contains("you may not get secrets"),
        "{}",
        partial.stderr
    );
    let missing = plugin(&["show", "nope", "-n", &ns.name]).await.failed();
    assert!(missing.stderr.contains(&format!("AppRegistration \"nope\" not found in namespace \"{}\"", ns.name)));
    let usage = plugin(&["show"]).await;
    assert_eq!(usage.code, 2, "a usage error: {}", usage.stderr);

    // A dry run prints the manifest, which the apiserver accepts as is.
    let manifest =
        plugin(&["register", "dry", "-n", &ns.name, "--redirect-uri", "https://d.example.com/cb", "--dry-run"])
            .await
            .ok()
            .stdout;
    let app: AppRegistration = serde_saphyr::from_str(&manifest).expect("a YAML AppRegistration");
    assert_eq!((app.metadata.name.as_deref(), app.spec.redirect_uris.len()), (Some("dry"), 1));
    let created = ns.api::<AppRegistration>().create(&Default::default(), &app).await;
    assert!(created.is_ok(), "{created:?}");

    // A cluster where registrar was never installed.
    let bare = tokio::task::spawn_blocking(ControlPlane::start_separate).await.expect("join").expect("control plane");
    let not_installed = plugin_at(bare.kubeconfig(), &["show", "billing", "-n", "default"], None).await.failed();
    assert!(not_installed.stderr.contains("registrar is not installed in this cluster"), "{}", not_installed.stderr);
    let browse = plugin_at(bare.kubeconfig(), &["browse", "-n", "default"], None).await.failed();
    assert!(browse.stderr.contains("registrar is not installed"), "{}", browse.stderr);
    drop(bare);
    ns.delete().await;
}
