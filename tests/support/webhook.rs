//! registrar's admission webhook (src/registration/webhook.rs, the code the
//! operator serves with --webhook-tls-cert) served from the test binary on a
//! loopback port, with a throwaway CA: the recorder of Registered By on a test
//! cluster without MutatingAdmissionPolicy (Kubernetes 1.35), and the webhook
//! a test takes down.

use std::{
    net::SocketAddr,
    sync::{Mutex, OnceLock, atomic::AtomicU32},
};

use base64::Engine;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use registrar::registration::webhook;

use super::{control_plane, tls::TestCa};

/// A webhook served from a thread of this process.
pub struct Webhook {
    pub addr: SocketAddr,
    ca: TestCa,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static SUITE: OnceLock<Webhook> = OnceLock::new();

/// The webhook this test binary's cluster records Registered By with, when it
/// serves no MutatingAdmissionPolicy (started on first call).
pub fn for_suite() -> &'static Webhook {
    SUITE.get_or_init(Webhook::start)
}

impl Webhook {
    /// Serves the webhook on a free loopback port; its certificate lives in
    /// the control plane's state directory (removed with it).
    pub fn start() -> Webhook {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = control_plane().kubeconfig().parent().expect("the state directory").join(format!("webhook-{n}"));
        std::fs::create_dir_all(&dir).expect("the webhook's directory");
        let ca = TestCa::new(&format!("webhook {n}"));
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        ca.issue(&cert, &key);
        let settings = webhook::Settings { addr: "127.0.0.1:0".parse().expect("addr"), cert, key };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let gate = registrar::runtime::admin_server::Readiness::default().gate("the webhook");
                let serving = tokio::spawn(webhook::serve(settings, gate, Some(tx), async {
                    let _ = stopped.await;
                }));
                if let Ok(addr) = rx.await {
                    let _ = bound_tx.send(addr);
                }
                let _ = serving.await;
            });
        });
        let addr = bound_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the webhook to listen");
        Webhook { addr, ca, stop: Mutex::new(Some(stop)), thread: Mutex::new(Some(thread)) }
    }

    /// Stops serving: connections are refused from when this returns.
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().expect("lock").take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.lock().expect("lock").take() {
            thread.join().expect("the webhook's thread");
        }
    }

    /// A MutatingWebhookConfiguration `name` calling this webhook as the
    /// chart's does (charts/registrar/templates/webhook.yaml), for every
    /// namespace or only those labelled `selector`.
    pub fn configuration(&self, name: &str, selector: Option<(&str, &str)>) -> serde_json::Value {
        let (condition, expression) = webhook::NOT_BEING_DELETED;
        let mut hook = serde_json::json!({
            "name": "registered-by.registrar.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "clientConfig": {
                "url": format!("https://{}{}", self.addr, webhook::PATH),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(self.ca.pem()),
            },
            "rules": [{
                "apiGroups": ["registrar.dev"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["appregistrations"], "scope": "Namespaced"
            }],
            "matchConditions": [{ "name": condition, "expression": expression }],
        });
        if let Some((key, value)) = selector {
            hook["namespaceSelector"] = serde_json::json!({ "matchLabels": { key: value } });
        }
        serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": name },
            "webhooks": [hook],
        })
    }

    /// Creates or updates the configuration `name` (server-side apply).
    pub async fn install(&self, client: &Client, name: &str, selector: Option<(&str, &str)>) {
        use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
        let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
        api.patch(
            name,
            &PatchParams::apply("registrar-tests").force(),
            &Patch::Apply(self.configuration(name, selector)),
        )
        .await
        .unwrap_or_else(|e| panic!("apply MutatingWebhookConfiguration {name}: {e}"));
    }
}

/// Whether the cluster serves MutatingAdmissionPolicy (Kubernetes 1.36+).
pub async fn serves_mutating_policies(client: &Client) -> bool {
    let resources = client
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await
        .expect("discover admissionregistration.k8s.io/v1");
    resources.resources.iter().any(|r| r.name == "mutatingadmissionpolicies")
}
