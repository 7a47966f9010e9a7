//! One harness under every controller: a [`Reconciler`] says what one
//! reconcile of an object does, what is cached and when the caches are
//! complete; [`run`] does the rest, the same way for each of them:
//!
//! - it starts kube-runtime's `Controller` over the cache (or a watch of its
//!   own), fed by the watches' reconcile requests;
//! - it passes over everything cached when it starts, after a watch re-lists
//!   and every resync period ([`crate::runtime::catch_up`]), and asks for the
//!   reconciles the reconciler finds due on its periodic sweep;
//! - each reconcile waits for the caches, frees its place in the pass, and is
//!   timed into `registrar_reconciliations_total` and
//!   `registrar_reconcile_duration_seconds` by a guard (counted once the
//!   reconcile is over, so a reader of the metric knows its writes are done);
//! - a failure is retried with per-object exponential backoff and jitter
//!   ([`crate::runtime::retry`]), counted in `registrar_reconcile_errors_total`
//!   under the category the reconciler gives its error, logged, and told on
//!   the object with a rate-limited `ReconcileFailed` Warning Event.
//!
//! It knows no domain type: the controllers plug in.

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt, channel::mpsc};
use kube::{
    Api, Client, Resource,
    runtime::{
        Controller,
        controller::{Action, Config as ControllerConfig, Error as ControllerError},
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::{
    Key,
    catch_up::{CatchUp, Passes},
    key_of,
    metrics::{ErrorLabels, Metrics},
    retry,
};

/// What one controller does with one object; [`run`] does everything around it.
pub trait Reconciler: Send + Sync + 'static {
    /// The object reconciled, as its cache holds it.
    type Object: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static;
    /// The object as a reconcile reads it: its name, namespace and UID are
    /// its own (a cache may keep its objects in another form; see
    /// [`Reconciler::read`]).
    type Read: Resource<DynamicType = ()> + Send + Sync + 'static;
    /// Why a reconcile failed: its text names the object and the step, never
    /// a secret (it goes to the log and to a Warning Event).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The kind reconciled, for the log.
    const KIND: &'static str;
    /// The `controller` label of the metrics: the kind in lower case.
    const CONTROLLER: &'static str;

    /// Waits until every cache the reconciler reads is complete: deciding on
    /// a partial view could take a not-yet-listed object for a deleted one.
    fn synced(&self) -> impl Future<Output = ()> + Send;

    /// Every object cached now, for a pass over everything.
    fn everything(&self) -> Vec<Key>;

    /// The cached `object` as a reconcile reads it (decoded, say).
    fn read(object: Arc<Self::Object>) -> Arc<Self::Read>;

    /// One reconcile of `object`.
    fn reconcile(&self, object: Arc<Self::Read>) -> impl Future<Output = Result<Action, Self::Error>> + Send;

    /// A small fixed label for the error metric (what failed, never a name).
    fn category(error: &Self::Error) -> &'static str;

    /// Called before each pass over everything (to make room, say).
    fn before_pass(&self) {}

    /// How often [`Reconciler::due`] is asked; `None`: no sweep.
    fn sweep_every(&self) -> Option<Duration> {
        None
    }

    /// The objects due for a reconcile without any change (the periodic
    /// sweep); each is asked for once.
    fn due(&self) -> Vec<Key> {
        Vec::new()
    }
}

/// Where the objects reconciled come from.
pub enum Source<K: Resource<DynamicType = ()> + Clone + 'static> {
    /// A cache the watches keep (and send reconcile requests for).
    Cache(Store<K>),
    /// A watch of the controller's own: each change it sees is reconciled.
    Watch(Box<(Api<K>, watcher::Config)>),
}

/// How a controller runs.
pub struct Harness {
    pub client: Client,
    /// Objects reconciled at once.
    pub concurrency: u16,
    /// Whether a lasting failure is told with `ReconcileFailed` Events.
    pub failure_events: bool,
    /// The name reported on Events (the pod name in a cluster).
    pub instance: Option<String>,
    pub metrics: Metrics,
    /// When a pass over everything is due.
    pub passes: Passes,
}

/// The reconciler and what the harness keeps beside it.
struct Shell<R> {
    reconciler: Arc<R>,
    metrics: Metrics,
    catch_up: CatchUp,
    failures: retry::Failures,
    /// Publishes the failures' Events, folding repeats into a series.
    recorder: Option<Recorder>,
}

/// Runs `reconciler` over `source` until `shutdown` resolves, reconciling
/// what `requests` asks for besides the passes and sweeps.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    harness: Harness,
    source: Source<R::Object>,
    requests: impl futures::Stream<Item = ObjectRef<R::Object>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Harness { client, concurrency, failure_events, instance, metrics, passes } = harness;
    let reporter = Reporter { controller: "registrar".into(), instance };
    let shell = Arc::new(Shell {
        reconciler,
        metrics,
        catch_up: CatchUp::for_concurrency(concurrency),
        failures: retry::Failures::default(),
        recorder: failure_events.then(|| Recorder::new(client, reporter)),
    });
    let (pass_tx, pass_rx) = mpsc::channel(usize::from(concurrency));
    let passing = tokio::spawn(pass_over_everything(shell.clone(), passes, pass_tx));
    let (sweep_tx, sweep_rx) = mpsc::channel(1024);
    let sweeping = shell.reconciler.sweep_every().map(|every| tokio::spawn(sweep(shell.clone(), every, sweep_tx)));

    let controller = match source {
        Source::Cache(store) => Controller::for_shared_stream(futures::stream::pending(), store),
        Source::Watch(watch) => Controller::new(watch.0, watch.1),
    };
    info!(kind = R::KIND, "controller started");
    let found_gone = shell.clone();
    controller
        .reconcile_on(futures::stream::select(futures::stream::select(requests, sweep_rx), pass_rx))
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shell)
        .for_each(|result| {
            match result {
                Ok(_) | Err(ControllerError::ReconcilerFailed(..)) => {} // told by error_policy
                // Deleted since it was asked for: its place in the pass is free.
                Err(ControllerError::ObjectNotFound(gone)) => found_gone.catch_up.started(&Key::from(gone.as_ref())),
                Err(other) => warn!(kind = R::KIND, error = %other, "controller event"),
            }
            futures::future::ready(())
        })
        .await;
    passing.abort();
    if let Some(sweeping) = sweeping {
        sweeping.abort();
    }
    info!(kind = R::KIND, "controller stopped");
}

/// Times a reconcile into the metrics when it is dropped (finished or cancelled).
struct Timer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: std::time::Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics.reconciled(self.controller, self.started.elapsed().as_secs_f64());
    }
}

async fn reconcile<R: Reconciler>(object: Arc<R::Object>, shell: Arc<Shell<R>>) -> Result<Action, R::Error> {
    let object = R::read(object);
    let key = key_of(object.as_ref());
    shell.catch_up.started(&key);
    shell.reconciler.synced().await;
    let _timer = Timer { metrics: &shell.metrics, controller: R::CONTROLLER, started: std::time::Instant::now() };
    let action = shell.reconciler.reconcile(object).await?;
    shell.failures.succeeded(&key);
    Ok(action)
}

/// Retries a failed object with per-object exponential backoff and jitter
/// (about 1 s doubling to 5 min), and tells its owners with a rate-limited
/// Warning Event naming what failed.
fn error_policy<R: Reconciler>(object: Arc<R::Object>, error: &R::Error, shell: Arc<Shell<R>>) -> Action {
    let labels = ErrorLabels { controller: R::CONTROLLER.into(), error: R::category(error).into() };
    shell.metrics.reconcile_errors.get_or_create(&labels).inc();
    let object = R::read(object);
    let key = key_of(object.as_ref());
    let failures = shell.failures.failed(&key);
    let delay = retry::backoff(failures);
    let (namespace, name) = (&key.namespace, &key.name);
    warn!(kind = R::KIND, namespace, name, error = %error, retry_in = ?delay, "reconcile failed");
    if let Some(recorder) = shell.recorder.clone().filter(|_| retry::worth_an_event(failures)) {
        let event = Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(retry::failure_note(error, delay, failures)),
            action: "Reconcile".into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
                warn!(kind = R::KIND, namespace = key.namespace, name = key.name, error = %e, "could not publish an Event");
            }
        });
    }
    Action::requeue(delay)
}

/// One reconcile of every cached object when the controller starts, after a
/// watch re-lists and every resync period (see [`crate::runtime::catch_up`]).
async fn pass_over_everything<R: Reconciler>(
    shell: Arc<Shell<R>>,
    passes: Passes,
    to: mpsc::Sender<ObjectRef<R::Object>>,
) {
    shell.reconciler.synced().await;
    let reconciler = shell.reconciler.clone();
    let everything = move || {
        reconciler.before_pass();
        reconciler.everything()
    };
    shell.catch_up.keep_passing(R::KIND, passes, everything, to).await;
}

/// Every `every`, asks for a reconcile of each object the reconciler finds
/// due: one sweep for all objects rather than a timer each.
async fn sweep<R: Reconciler>(shell: Arc<Shell<R>>, every: Duration, mut to: mpsc::Sender<ObjectRef<R::Object>>) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for key in shell.reconciler.due() {
            if to.send(key.to_ref()).await.is_err() {
                return;
            }
        }
    }
}
