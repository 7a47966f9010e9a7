//! Workloads that mount their credentials, for real: Pods on the test node get
//! tokens from a real Hydra with the files of their app's Secret, and
//! `restartOnRotate` rolls them onto a new secret.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use registrar::api::{AppRegistration, GrantType, WorkloadKind, WorkloadRef};
use serde_json::json;

use crate::support::{
    TestNamespace,
    apps::{apply, confidential, secret_value, wait_issued},
    eventually,
    hydra::Hydra,
    install_registrar, node,
    operator::Operator,
};

/// Gets a token at the mounted token URL with the mounted Client ID and
/// secret (HTTP Basic, client_credentials): exits non-zero when refused.
const GET_TOKEN: &str = r#"
    id=$(/busybox cat /creds/client_id); secret=$(/busybox cat /creds/client_secret)
    auth=$(printf '%s:%s' "$id" "$secret" | /busybox base64 | /busybox tr -d '\n')
    /busybox wget -q -O /dev/null --header "Authorization: Basic $auth" \
      --post-data 'grant_type=client_credentials&scope=read' "$(/busybox cat /creds/token_url)""#;

/// A container of busybox that mounts the `api-credentials` Secret at /creds.
fn container(readiness: bool) -> serde_json::Value {
    let mut container = json!({
        "name": "api",
        "image": "registrar.local/busybox:1",
        "imagePullPolicy": "Never",
        "command": ["/busybox", "sleep", "3600"],
        "securityContext": {
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [{ "name": "creds", "mountPath": "/creds", "readOnly": true }],
    });
    if readiness {
        container["readinessProbe"] = json!({
            "exec": { "command": ["/busybox", "sh", "-c", GET_TOKEN] },
            "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 5,
        });
    }
    container
}

fn pod_spec(readiness: bool) -> serde_json::Value {
    json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 1,
        "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [container(readiness)],
        "volumes": [{ "name": "creds", "secret": { "secretName": "api-credentials" } }],
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && pod.metadata.deletion_timestamp.is_none()
}

/// What the container of the Pod of UID `uid` reads at /creds/client_secret.
fn mounted_secret(uid: &str) -> Option<String> {
    let pid = *node::node().container_pids(uid).first()?;
    std::fs::read_to_string(format!("/proc/{pid}/root/creds/client_secret")).ok()
}

/// A Deployment of three replicas mounts its app's credentials and is Ready
/// only while each Pod gets tokens from Hydra with the mounted files (its
/// readiness probe asks for one every second). A rotation rolls it
/// (`restartOnRotate`): every Pod is replaced and gets tokens with the new
/// secret, the old one is refused at Hydra; the time from the rotate
/// annotation to every Pod on the new secret is printed. A Pod that mounts the
/// Secret and is not restarted sees the new file within the kubelet's sync
/// period (printed too).
#[tokio::test]
async fn workloads_get_tokens_with_their_mounted_credentials_through_a_rollout() {
    if node::skipped() {
        eprintln!("E2E_NODE=off: skipped");
        return;
    }
    let _cluster_wide = node::CLUSTER_WIDE.lock().await;
    node::node();
    let ns = TestNamespace::new("node-workloads").await;
    install_registrar(&ns.client).await;
    let hydra = Hydra::start("http://127.0.0.1:1").await;
    let mut args: Vec<String> = vec!["--watch-namespace".into(), ns.name.clone()];
    args.extend(hydra.operator_args("60s"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start_with(&args).await;

    let mut app = confidential("api");
    app.spec.grant_types = Some(vec![GrantType::ClientCredentials]);
    app.spec.restart_on_rotate = vec![WorkloadRef { kind: WorkloadKind::Deployment, name: "api".into() }];
    apply(&ns, &app).await;
    let (_, secret) = wait_issued(&ns, "api").await;
    let old_secret = secret_value(&secret, "client_secret").expect("a secret");
    let client_id = secret_value(&secret, "client_id").expect("a Client ID");

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "api" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "api" } },
            "template": { "metadata": { "labels": { "app": "api" } }, "spec": pod_spec(true) },
        },
    }))
    .expect("a Deployment");
    let deployments: Api<Deployment> = ns.api();
    deployments.create(&PostParams::default(), &deployment).await.expect("create the Deployment");
    let watcher: Pod =
        serde_json::from_value(json!({ "metadata": { "name": "watcher" }, "spec": pod_spec(false) })).expect("a Pod");
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &watcher).await.expect("create the watcher Pod");
    let app_pods = || async {
        let list = pods.list(&ListParams::default().labels("app=api")).await.ok()?;
        Some(list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect::<Vec<_>>())
    };
    let before: BTreeSet<String> = eventually(
        "three Pods Ready, each with a token got with its mounted files",
        Duration::from_secs(120),
        || async {
            let pods = app_pods().await?;
            (pods.len() == 3 && pods.iter().all(is_ready)).then(|| pods.iter().filter_map(|p| p.uid()).collect())
        },
    )
    .await;
    let watcher_uid = eventually("the watcher Pod running", Duration::from_secs(60), || async {
        let pod = pods.get("watcher").await.ok()?;
        let uid = pod.uid()?;
        (mounted_secret(&uid).as_deref() == Some(old_secret.as_str())).then_some(uid)
    })
    .await;

    // Rotate.
    let rotated = Instant::now();
    let patch = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "rollout" } } }));
    ns.api::<AppRegistration>().patch("api", &PatchParams::default(), &patch).await.expect("rotate");
    let secrets: Api<Secret> = ns.api();
    let new_secret = eventually("the Secret to hold version 2", Duration::from_secs(60), || async {
        let secret = secrets.get("api-credentials").await.ok()?;
        (secret.annotations().get("registrar.dev/secret-version").map(String::as_str) == Some("2"))
            .then(|| secret_value(&secret, "client_secret"))
            .flatten()
    })
    .await;
    let secret_written = rotated.elapsed();
    assert_ne!(new_secret, old_secret);

    // Both at once: the watcher, not restarted, sees the new file within the
    // kubelet's sync period; the Deployment rolls: every Pod new, Ready (its
    // token got with the files it mounts), each mounting the new secret.
    let (file_changed, rolled) = tokio::join!(
        async {
            eventually("the watcher's mounted file to change", Duration::from_secs(60), || async {
                (mounted_secret(&watcher_uid).as_deref() == Some(new_secret.as_str())).then_some(())
            })
            .await;
            rotated.elapsed()
        },
        async {
            eventually("every Pod replaced, Ready, on the new secret", Duration::from_secs(180), || async {
                let pods = app_pods().await?;
                let all_new = pods.iter().all(|p| p.uid().is_some_and(|uid| !before.contains(&uid)));
                let on_new = pods.iter().all(|p| {
                    is_ready(p) && p.uid().and_then(|uid| mounted_secret(&uid)).as_deref() == Some(new_secret.as_str())
                });
                (pods.len() == 3 && all_new && on_new).then_some(())
            })
            .await;
            rotated.elapsed()
        }
    );
    eprintln!(
        "rotate annotation → Secret at version 2: {:.1} s; → the file of a Pod not restarted: {:.1} s; → every \
         Pod of the Deployment replaced, Ready and on the new secret: {:.1} s",
        secret_written.as_secs_f64(),
        file_changed.as_secs_f64(),
        rolled.as_secs_f64()
    );
    let (code, answer) = hydra.client_credentials(&client_id, &new_secret, "read").await;
    assert_eq!(code, 200, "the new secret gets tokens: {answer}");
    let (code, _) = hydra.client_credentials(&client_id, &old_secret, "read").await;
    assert_eq!(code, 401, "Hydra keeps one secret: the old one is refused");
    ns.delete().await;
}
