//! The AppRegistration controller: reconcile = read → validate → plan (pure) →
//! apply (I/O) → status.
//!
//! It watches AppRegistrations, and only the Secrets labelled
//! `registrar.dev/app` (so unrelated Secrets are never cached), mapped to their
//! owning app. Deletion runs a finalizer that revokes the credentials.

mod error;
pub mod plan;
mod reconcile;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        events::{Recorder, Reporter},
        reflector, watcher,
    },
};
use tracing::{info, warn};

pub use error::Error;
pub use reconcile::{Context, FIELD_MANAGER, FINALIZER};

use crate::{
    admin_server::Readiness,
    api::AppRegistration,
    credentials::{Hasher, layout::APP_LABEL},
    metrics::Metrics,
};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// The only namespace where Global apps are accepted.
    pub platform_namespace: String,
    /// Apps reconciled at once.
    pub concurrency: u16,
    /// Name reported on Events (the pod name in a cluster).
    pub instance: Option<String>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Resolves once `store` has seen its first full list.
///
/// `Store::wait_until_ready` wakes only the most recent of several concurrent
/// waiters (one oneshot receiver inside), and the Controller waits on its own
/// store too; polling with a short timeout re-registers our waker each time.
async fn synced<K: kube::Resource + Clone>(store: &reflector::Store<K>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await.is_err() {}
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    hasher: Hasher,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = settings.watch_namespace.as_deref();
    let apps = api::<AppRegistration>(&client, ns);
    let secrets = api::<Secret>(&client, ns);

    let (secret_store, secret_writer) = reflector::store();
    let secret_events = reflector(secret_writer, watcher(secrets, watcher::Config::default().labels(APP_LABEL)))
        .default_backoff()
        .touched_objects();

    let controller = Controller::new(apps, watcher::Config::default())
        .owns_stream(secret_events)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency).debounce(Duration::from_millis(50)));
    let app_store = controller.store();

    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "registrar".into(), instance: settings.instance.clone() });
    let ctx = Arc::new(Context::new(client, settings, hasher, metrics, recorder, secret_store.clone()));

    // Ready once both caches hold a full list: acting earlier could mistake a
    // not-yet-listed Secret for a deleted one.
    let ready_stores = (app_store.clone(), secret_store.clone());
    tokio::spawn(async move {
        let (apps, secrets) = ready_stores;
        synced(&apps).await;
        synced(&secrets).await;
        info!("caches are synced");
        readiness.set_ready();
    });

    info!("AppRegistration controller started");
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    kube::runtime::controller::Error::ReconcilerFailed(..) => {} // logged by error_policy
                    other => warn!(error = %other, "controller event"),
                }
            }
        })
        .await;
    info!("AppRegistration controller stopped");
}
