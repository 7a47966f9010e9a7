//! Memory a tenant could make registrar hold by writing metadata: the
//! scenario that the e2e binary runs with the admission policies installed
//! (where a tenant cannot label a Secret as registrar's) and the bare binary
//! without them.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::api::{AppConsent, AppConsentSpec, AppRef, AppRegistration};
use serde_json::json;

use super::{
    apps::{confidential, status},
    eventually, gitops_apply, proc_memory_kib,
    tenants::{RUN_LABEL, Tenants},
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// Objects of each kind mallory writes.
const OBJECTS: usize = 60;
/// Objects annotated first, before memory is measured: the first objects of
/// 240 KB grow the watches' read buffers once (about 2.3 MiB, measured the
/// same with 20 objects or 120: bounded by the connections, not the objects).
const WARM_UP: usize = 5;
/// Bytes of annotations she puts on each (the apiserver takes up to 256 KiB).
const ANNOTATION_BYTES: usize = 240 * 1024;

/// Incompressible annotations of about [`ANNOTATION_BYTES`], under a key
/// registrar does not read and one of its own prefix.
fn stuffing() -> BTreeMap<String, String> {
    let random = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random::<u8>() as usize % 36]))
            .collect()
    };
    BTreeMap::from([
        ("example.com/notes".to_string(), random(ANNOTATION_BYTES - 2048)),
        ("registrar.dev/not-read".to_string(), random(1024)),
    ])
}

/// The operator's resident memory once it settles (no reading further than
/// 256 KiB from the others for 2 s: freed pages go back within a second), in KiB.
async fn settled_rss(pid: u32) -> u64 {
    let rss = || proc_memory_kib(pid, "VmRSS").expect("VmRSS");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut window = vec![rss()];
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        window.push(rss());
        if window.len() > 8 {
            window.remove(0);
        }
        let (low, high) = (window.iter().min().copied().unwrap_or(0), window.iter().max().copied().unwrap_or(0));
        if window.len() == 8 && high - low < 256 {
            return *window.last().unwrap_or(&high);
        }
        assert!(tokio::time::Instant::now() < deadline, "the operator's memory did not settle");
    }
}

async fn reconciles(t: &Tenants, controller: &str) -> f64 {
    t.operator.metric(&format!("registrar_reconciliations_total{{controller=\"{controller}\"}}")).await
}

/// mallory writes apps and consents — and, with `secrets`, Secrets labelled
/// as registrar's and claiming her apps as their controller — and, once the
/// operator has handled them all, puts 240 KB of annotations on 60 of each:
/// the operator looks at every one again (a reconcile each) and its memory
/// grows by less than 2 MiB, for it keeps only what it reads of them.
pub async fn annotations_of_a_tenant_do_not_grow_the_operator(t: &Tenants, secrets: bool) {
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let consents: Api<AppConsent> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let labelled: Api<Secret> = Api::namespaced(t.mallory.clone(), &t.a.name);
    for batch in (0..OBJECTS + WARM_UP).collect::<Vec<_>>().chunks(10) {
        futures::future::join_all(batch.iter().map(|&i| {
            let (apps, consents, labelled) = (apps.clone(), consents.clone(), labelled.clone());
            async move {
                let app =
                    gitops_apply(&apps, &t.labelled(confidential(&name(i)))).await.expect("mallory applies an app");
                let mut consent = AppConsent::new(
                    &name(i),
                    AppConsentSpec {
                        app_ref: AppRef { namespace: t.b.name.clone(), name: "billing".into() },
                        oauth_scopes: None,
                    },
                );
                consent.metadata.labels = Some(BTreeMap::from([(RUN_LABEL.to_string(), t.run.clone())]));
                consents.create(&PostParams::default(), &consent).await.expect("mallory creates a consent");
                if secrets {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(format!("{}-extra", name(i))),
                            labels: Some(BTreeMap::from([("registrar.dev/app".to_string(), name(i))])),
                            owner_references: Some(vec![app.controller_owner_ref(&()).expect("owner")]),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    labelled.create(&PostParams::default(), &secret).await.expect("mallory labels a Secret");
                }
            }
        }))
        .await;
    }
    let (a_apps, a_consents) = (t.a.api::<AppRegistration>(), t.a.api::<AppConsent>());
    eventually("every app issued and every consent decided", TIMEOUT, || async {
        let issued =
            a_apps.list(&Default::default()).await.ok()?.items.iter().filter(|a| status(a).client_id.is_some()).count();
        let decided =
            a_consents.list(&Default::default()).await.ok()?.items.iter().filter(|c| c.status.is_some()).count();
        (issued >= OBJECTS + WARM_UP && decided >= OBJECTS + WARM_UP).then_some(())
    })
    .await;
    let pid = t.operator.pid().expect("pid");
    annotate(t, 0..WARM_UP, secrets).await;
    let before = settled_rss(pid).await;
    annotate(t, WARM_UP..WARM_UP + OBJECTS, secrets).await;
    let after = settled_rss(pid).await;
    let grown = after.saturating_sub(before);
    let kinds = if secrets { "apps, consents and labelled Secrets" } else { "apps and consents" };
    eprintln!(
        "operator RSS: {before} KiB before, {after} KiB after 240 KB of annotations on each of {OBJECTS} {kinds} (+{grown} KiB)"
    );
    assert!(grown < 2 * 1024, "RSS grew by {grown} KiB");
}

/// Puts 240 KB of annotations on mallory's objects `range` (apps, consents
/// and, with `secrets`, labelled Secrets), and waits until the operator has
/// looked at each again.
async fn annotate(t: &Tenants, range: std::ops::Range<usize>, secrets: bool) {
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let consents: Api<AppConsent> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let labelled: Api<Secret> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let (app_reconciles, consent_reconciles) =
        (reconciles(t, "appregistration").await, reconciles(t, "appconsent").await);
    let n = range.len();
    for batch in range.collect::<Vec<_>>().chunks(10) {
        futures::future::join_all(batch.iter().map(|&i| {
            let (apps, consents, labelled) = (apps.clone(), consents.clone(), labelled.clone());
            async move {
                let params = PatchParams::default();
                let patch = || Patch::Merge(json!({ "metadata": { "annotations": stuffing() } }));
                apps.patch(&name(i), &params, &patch()).await.expect("mallory annotates her app");
                consents.patch(&name(i), &params, &patch()).await.expect("mallory annotates her consent");
                if secrets {
                    let secret = format!("{}-extra", name(i));
                    labelled.patch(&secret, &params, &patch()).await.expect("mallory annotates a Secret");
                }
            }
        }))
        .await;
    }
    // An app is looked at for its own change and, with `secrets`, its Secret's.
    let per_app = if secrets { 2.0 } else { 1.0 };
    eventually("the operator to look at every annotated object", TIMEOUT, || async {
        let apps_seen = reconciles(t, "appregistration").await - app_reconciles;
        let consents_seen = reconciles(t, "appconsent").await - consent_reconciles;
        (apps_seen >= per_app * n as f64 && consents_seen >= n as f64).then_some(())
    })
    .await;
}

fn name(i: usize) -> String {
    format!("stuffed-{i:02}")
}
