//! A controller's passes over everything cached: every object gets one
//! reconcile, a window at a time.
//!
//! The first when it starts (or its replica takes over the lease): until the
//! controllers run, the watches send them no reconcile requests (their gate
//! is closed): nobody would read them. This pass covers what was not sent.
//! Again after any watch re-lists (after an apiserver restart, say): a
//! re-list's objects reach the cache only once the list is complete, so the
//! watches send no requests for them and this pass covers them. And every period (`--resync-interval`, 10 minutes), a
//! safety net: whatever a bug lost is found within one period, and an
//! object that has not drifted costs a read of the caches and no write.
//!
//! A pass asks for a few reconciles more than the controller runs at
//! once and asks for more as they start, rather than queueing every object at
//! once: kube's scheduler keeps room for every object queued at once, and
//! keeps it after the queue drains, for the life of the process
//! (docs/benchmarks.md, "Memory").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::{SinkExt, channel::mpsc};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info};

use crate::runtime::Key;

/// How long a request waits for room before it is sent anyway: a reconcile
/// that never starts (its controller stopping) cannot hold the pass up.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(5);

/// When the next pass is due: after any watch re-lists, and every period.
pub struct Passes {
    relists: tokio::sync::watch::Receiver<u64>,
    period: Option<Duration>,
}

impl Passes {
    /// Passes after each change of `relists` (a count of completed
    /// re-lists), and every `period` unless it is zero.
    pub fn new(mut relists: tokio::sync::watch::Receiver<u64>, period: Duration) -> Self {
        relists.mark_unchanged();
        Passes { relists, period: (!period.is_zero()).then_some(period) }
    }

    /// Waits until the next pass is due; returns why it is.
    pub async fn next(&mut self) -> &'static str {
        let period = self.period;
        let periodic = async move {
            match period {
                Some(period) => tokio::time::sleep(period).await,
                None => std::future::pending().await,
            }
        };
        let relisted = async {
            if self.relists.changed().await.is_err() {
                // The watches stopped: only the period is left.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = relisted => "a watch re-listed",
            () = periodic => "the resync period passed",
        }
    }
}

/// The objects asked for and not yet started, at most a window of them.
pub struct CatchUp {
    room: Arc<Semaphore>,
    waiting: Mutex<HashMap<Key, OwnedSemaphorePermit>>,
}

impl CatchUp {
    /// Keeps at most `window` objects asked for and not yet started.
    pub fn new(window: usize) -> Self {
        CatchUp { room: Arc::new(Semaphore::new(window.max(1))), waiting: Mutex::default() }
    }

    /// For a controller reconciling `concurrency` objects at once: a few more
    /// than that wait, so the controller never waits for the pass.
    pub fn for_concurrency(concurrency: u16) -> Self {
        CatchUp::new(4 * usize::from(concurrency))
    }

    /// Asks for a reconcile of each of `keys` through `to`, waiting for room
    /// in the window. Returns how many were asked for; stops early when the
    /// controller no longer reads `to`.
    pub async fn ask<K>(&self, keys: impl IntoIterator<Item = Key>, to: &mut mpsc::Sender<ObjectRef<K>>) -> usize
    where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        let mut asked = 0;
        for key in keys {
            match tokio::time::timeout(WAIT_FOR_ROOM, self.room.clone().acquire_owned()).await {
                Ok(Ok(permit)) => {
                    self.waiting().insert(key.clone(), permit);
                }
                Ok(Err(_closed)) => {}
                Err(_elapsed) => debug!("no reconcile started for a while; asking without waiting"),
            }
            if to.send(key.to_ref()).await.is_err() {
                break;
            }
            asked += 1;
        }
        asked
    }

    /// Passes over `keys()` now, then whenever `passes` says, until the
    /// controller no longer reads `to`; `kind` names the objects in the log.
    pub async fn keep_passing<K>(
        &self,
        kind: &'static str,
        mut passes: Passes,
        keys: impl Fn() -> Vec<Key>,
        mut to: mpsc::Sender<ObjectRef<K>>,
    ) where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        let mut why = "the controller started";
        loop {
            let started = std::time::Instant::now();
            let asked = self.ask(keys(), &mut to).await;
            info!(
                kind,
                objects = asked,
                why,
                seconds = started.elapsed().as_secs_f64(),
                "asked for a reconcile of every object"
            );
            if to.is_closed() {
                return;
            }
            why = passes.next().await;
        }
    }

    /// A reconcile of `key` started, or the controller found it gone: its
    /// place in the window is free.
    pub fn started(&self, key: &Key) {
        // Dropping the permit makes the room.
        self.waiting().remove(key);
    }

    /// Whether nothing asked for is waiting.
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.waiting().is_empty()
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Key, OwnedSemaphorePermit>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn key(i: usize) -> Key {
        Key::new("ns", format!("app-{i}"))
    }

    /// Never more than the window asked for and not started; every object
    /// asked for exactly once.
    #[tokio::test(start_paused = true)]
    async fn the_pass_asks_a_window_at_a_time_and_for_everything() {
        let catch_up = Arc::new(CatchUp::new(3));
        let (mut tx, mut rx) = mpsc::channel::<ObjectRef<ConfigMap>>(100);
        let pass = {
            let catch_up = catch_up.clone();
            tokio::spawn(async move { catch_up.ask((0..10).map(key), &mut tx).await })
        };
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(rx.next().await.expect("a request").name);
        }
        let fourth = tokio::time::timeout(Duration::from_secs(1), rx.next()).await;
        assert!(fourth.is_err(), "a fourth waits until one of the window starts");
        catch_up.started(&key(0));
        while let Some(request) = rx.next().await {
            seen.push(request.name);
            catch_up.started(&key(seen.len() - 3));
        }
        assert_eq!(pass.await.unwrap(), 10);
        assert_eq!(seen, (0..10).map(|i| format!("app-{i}")).collect::<Vec<_>>());
        for i in 0..10 {
            catch_up.started(&key(i));
        }
        assert!(catch_up.is_idle());
    }

    /// An object that never starts holds its place only for a while.
    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_never_starts_does_not_hold_the_pass_up() {
        let catch_up = CatchUp::new(1);
        let (mut tx, rx) = mpsc::channel::<ObjectRef<ConfigMap>>(100);
        assert_eq!(catch_up.ask((0..3).map(key), &mut tx).await, 3);
        drop(tx);
        assert_eq!(rx.collect::<Vec<_>>().await.len(), 3);
    }

    /// A pass is due after each re-list (several at once: one pass), and
    /// every period; with a period of zero, only after re-lists.
    #[tokio::test(start_paused = true)]
    async fn passes_follow_relists_and_the_period() {
        let (relisted, relists) = tokio::sync::watch::channel(0u64);
        relisted.send_modify(|n| *n += 1); // before the controller started: its first pass covers it
        let mut passes = Passes::new(relists.clone(), Duration::from_secs(600));
        let started = tokio::time::Instant::now();
        assert_eq!(passes.next().await, "the resync period passed");
        assert_eq!(started.elapsed(), Duration::from_secs(600));
        relisted.send_modify(|n| *n += 1);
        relisted.send_modify(|n| *n += 1);
        let started = tokio::time::Instant::now();
        assert_eq!(passes.next().await, "a watch re-listed");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(passes.next().await, "the resync period passed", "two re-lists, one pass");

        let mut only_relists = Passes::new(relists, Duration::ZERO);
        let waited = tokio::time::timeout(Duration::from_secs(86_400), only_relists.next()).await;
        assert!(waited.is_err(), "no period");
        drop(relisted);
        let waited = tokio::time::timeout(Duration::from_secs(86_400), only_relists.next()).await;
        assert!(waited.is_err(), "the watches gone, nothing is due");
    }

    /// Each pass asks for everything cached then, once per object.
    #[tokio::test(start_paused = true)]
    async fn every_pass_asks_for_everything() {
        let catch_up = Arc::new(CatchUp::new(1000));
        let (relisted, relists) = tokio::sync::watch::channel(0u64);
        let (tx, mut rx) = mpsc::channel::<ObjectRef<ConfigMap>>(1000);
        let cached = Arc::new(Mutex::new(2));
        let keys = {
            let cached = cached.clone();
            move || (0..*cached.lock().unwrap()).map(key).collect()
        };
        let passing = {
            let catch_up = catch_up.clone();
            tokio::spawn(async move {
                catch_up.keep_passing("ConfigMap", Passes::new(relists, Duration::from_secs(600)), keys, tx).await;
            })
        };
        let mut take = async |n: usize| {
            let mut names = Vec::new();
            for _ in 0..n {
                let request = rx.next().await.expect("a request");
                catch_up.started(&Key::new("ns", &request.name));
                names.push(request.name);
            }
            names
        };
        assert_eq!(take(2).await, ["app-0", "app-1"], "the first pass");
        *cached.lock().unwrap() = 3;
        relisted.send_modify(|n| *n += 1);
        assert_eq!(take(3).await, ["app-0", "app-1", "app-2"], "after a re-list");
        assert_eq!(take(3).await, ["app-0", "app-1", "app-2"], "after the period");
        drop(rx);
        relisted.send_modify(|n| *n += 1);
        passing.await.expect("the passes end when the controller stops reading");
    }

    /// The controller stopped reading: the pass ends.
    #[tokio::test]
    async fn the_pass_ends_when_the_controller_stops() {
        let catch_up = CatchUp::new(100);
        let (mut tx, rx) = mpsc::channel::<ObjectRef<ConfigMap>>(100);
        drop(rx);
        assert_eq!(catch_up.ask((0..3).map(key), &mut tx).await, 0);
    }
}
