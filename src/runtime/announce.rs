//! Events that wait for the status writes, served namespace by namespace.
//!
//! A consent's answer is its status; the Event that tells of a change is for
//! the people reading `kubectl describe`. One change upstream (an app deleted,
//! an allowlist edited) changes thousands of consents at once, and an Event
//! costs the apiserver about half of what the status write does. So the
//! consent controller queues each change's Event here, and the queue publishes
//! it once no reconcile of its namespace is in flight, or at the latest
//! [`MAX_DELAY`] after it was queued, or at once when its namespace's queue is
//! full (holding it longer would only hold the namespace's reconciles back):
//! the statuses settle first, the Events follow, in order within a namespace,
//! one at a time. (client-go's recorder is asynchronous too.) When the
//! namespace's consents are idle, an Event goes out at once.
//!
//! Namespaces are served in turn, one Event each, and each has a queue of its
//! own: a namespace whose consents churn without rest waits on itself, and
//! another namespace's Event waits behind at most one of its Events.
//!
//! At most [`PER_NAMESPACE`] Events wait for a namespace, and [`CAPACITY`] in
//! all; beyond that a reconcile waits for room, so none is dropped. When the
//! controller stops, what is queued is published without waiting (the caller
//! bounds how long).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use kube::runtime::events::Event;
use tokio::{
    sync::Notify,
    time::{Duration, Instant},
};

/// How long an Event waits at most for its namespace's reconciles to end.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// How many Events may wait for one namespace (each a few hundred bytes).
pub const PER_NAMESPACE: usize = 256;

/// How many Events may wait in all.
pub const CAPACITY: usize = 4096;

/// The queue's handle, shared by the reconciles.
pub struct Announcer<O> {
    shared: Arc<Shared<O>>,
}

struct Shared<O> {
    state: Mutex<State<O>>,
    /// Something was queued, a reconcile ended, or the queue stops.
    changed: Notify,
    /// An Event left the queue: room for a waiting reconcile.
    room: Notify,
}

struct State<O> {
    /// Each namespace's Events, oldest first.
    queues: HashMap<String, VecDeque<Queued<O>>>,
    /// The namespaces with Events, in the order they are served.
    turns: VecDeque<String>,
    /// Reconciles in flight, by namespace.
    in_flight: HashMap<String, usize>,
    queued: usize,
    stopping: bool,
}

struct Queued<O> {
    event: Event,
    object: O,
    at: Instant,
}

impl<O> State<O> {
    /// The next Event due: the first namespace in turn whose oldest Event may
    /// go out now (its namespace idle, waited long enough, or stopping); else
    /// when the soonest becomes due.
    fn next(&mut self, now: Instant) -> Result<(String, Queued<O>), Option<Instant>> {
        let mut soonest: Option<Instant> = None;
        for turn in 0..self.turns.len() {
            let namespace = &self.turns[turn];
            let Some(head) = self.queues.get(namespace).and_then(VecDeque::front) else { continue };
            let idle = self.in_flight.get(namespace).copied().unwrap_or(0) == 0;
            // A full queue holds a reconcile back: waiting longer stalls it.
            let full = self.queues.get(namespace).map_or(0, VecDeque::len) >= PER_NAMESPACE || self.queued >= CAPACITY;
            let due = head.at + MAX_DELAY;
            if self.stopping || idle || full || now >= due {
                let namespace = self.turns.remove(turn).unwrap_or_default();
                let queue = self.queues.get_mut(&namespace).expect("a namespace in turn has a queue");
                let queued = queue.pop_front().expect("checked above");
                if queue.is_empty() {
                    self.queues.remove(&namespace);
                } else {
                    self.turns.push_back(namespace.clone());
                }
                self.queued -= 1;
                return Ok((namespace, queued));
            }
            soonest = Some(soonest.map_or(due, |s| s.min(due)));
        }
        Err(soonest)
    }
}

/// A reconcile in flight; its namespace's Events wait while one is held.
#[must_use = "the reconcile counts as in flight only while this is held"]
pub struct Busy<O> {
    shared: Arc<Shared<O>>,
    namespace: String,
}

impl<O> Drop for Busy<O> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        if let Some(n) = state.in_flight.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.in_flight.remove(&self.namespace);
            }
        }
        drop(state);
        self.shared.changed.notify_one();
    }
}

fn lock<O>(state: &Mutex<State<O>>) -> MutexGuard<'_, State<O>> {
    // Every change leaves the state consistent before it can panic.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl<O: Send + 'static> Announcer<O> {
    /// Starts the queue; `publish` sends one Event about object `O`. The task
    /// ends once [`Announcer::stop`] was called and the queue is empty.
    pub fn start<P, F>(mut publish: P) -> (Self, tokio::task::JoinHandle<()>)
    where
        P: FnMut(Event, O) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queues: HashMap::new(),
                turns: VecDeque::new(),
                in_flight: HashMap::new(),
                queued: 0,
                stopping: false,
            }),
            changed: Notify::new(),
            room: Notify::new(),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                // Registered before the state is read, so no wake-up is missed.
                let changed = serving.changed.notified();
                let next = {
                    let mut state = lock(&serving.state);
                    match state.next(Instant::now()) {
                        Ok(next) => Ok(next),
                        Err(_) if state.stopping && state.queued == 0 => return,
                        Err(soonest) => Err(soonest),
                    }
                };
                match next {
                    Ok((_, queued)) => {
                        serving.room.notify_waiters();
                        publish(queued.event, queued.object).await;
                    }
                    Err(Some(due)) => {
                        tokio::select! {
                            () = changed => {}
                            () = tokio::time::sleep_until(due) => {}
                        }
                    }
                    Err(None) => changed.await,
                }
            }
        });
        (Announcer { shared }, task)
    }

    /// Marks a reconcile in `namespace` in flight until the guard is dropped.
    pub fn busy(&self, namespace: &str) -> Busy<O> {
        *lock(&self.shared.state).in_flight.entry(namespace.to_owned()).or_default() += 1;
        Busy { shared: self.shared.clone(), namespace: namespace.to_owned() }
    }

    /// Queues `event` about `object` of `namespace` (waits while the namespace
    /// has [`PER_NAMESPACE`] Events queued, or all have [`CAPACITY`]).
    pub async fn announce(&self, namespace: &str, event: Event, object: O) {
        let mut queued = Some(Queued { event, object, at: Instant::now() });
        loop {
            let room = self.shared.room.notified();
            {
                let mut state = lock(&self.shared.state);
                if state.stopping {
                    return; // not published once stopped
                }
                let waiting = state.queues.get(namespace).map_or(0, VecDeque::len);
                if waiting < PER_NAMESPACE && state.queued < CAPACITY {
                    if waiting == 0 {
                        state.turns.push_back(namespace.to_owned());
                    }
                    if let Some(mut item) = queued.take() {
                        // Its longest wait counts from when it is queued.
                        item.at = Instant::now();
                        state.queues.entry(namespace.to_owned()).or_default().push_back(item);
                        state.queued += 1;
                    }
                    drop(state);
                    self.shared.changed.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// Publishes what is queued without waiting, then ends the task.
    pub fn stop(&self) {
        lock(&self.shared.state).stopping = true;
        self.shared.changed.notify_one();
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::events::EventType;

    use super::*;

    fn event(reason: &str) -> Event {
        Event { type_: EventType::Normal, reason: reason.into(), note: None, action: "Test".into(), secondary: None }
    }

    /// What was published: `object:reason`, and when (whole seconds since the start).
    type Published = Arc<Mutex<Vec<(String, u64)>>>;

    /// An announcer whose published Events land in the returned list.
    fn recording(t0: Instant) -> (Announcer<&'static str>, tokio::task::JoinHandle<()>, Published) {
        let published = Arc::new(Mutex::new(Vec::new()));
        let sink = published.clone();
        let (announcer, task) = Announcer::start(move |e: Event, object: &'static str| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((format!("{object}:{}", e.reason), t0.elapsed().as_secs()));
            }
        });
        (announcer, task, published)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_goes_out_at_once_when_no_reconcile_is_in_flight() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        announcer.announce("ns", event("Granted"), "a").await;
        settle().await;
        assert_eq!(*published.lock().unwrap(), [("a:Granted".to_owned(), 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_their_namespaces_reconciles_and_keep_their_order() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        let first = announcer.busy("ns");
        let second = announcer.busy("ns");
        announcer.announce("ns", event("AppRevoked"), "a").await;
        announcer.announce("ns", event("AppRevoked"), "b").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        settle().await;
        assert!(published.lock().unwrap().is_empty(), "one reconcile is still in flight");
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(second);
        settle().await;
        assert_eq!(*published.lock().unwrap(), [("a:AppRevoked".to_owned(), 2), ("b:AppRevoked".to_owned(), 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_that_never_rests_still_announces_after_the_longest_wait() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        let _forever = announcer.busy("ns");
        announcer.announce("ns", event("Granted"), "a").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        announcer.announce("ns", event("Granted"), "b").await;
        tokio::time::sleep(MAX_DELAY * 2).await;
        assert_eq!(*published.lock().unwrap(), [("a:Granted".to_owned(), 5), ("b:Granted".to_owned(), 7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_namespaces_churn_never_holds_another_namespaces_events() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        // Tenant A's consents never rest; its queue is one short of full.
        let _churn = announcer.busy("team-a");
        for _ in 1..PER_NAMESPACE {
            announcer.announce("team-a", event("Granted"), "a").await;
        }
        // B's Event goes out at once: its own namespace is idle.
        announcer.announce("team-b", event("Granted"), "b").await;
        settle().await;
        assert_eq!(*published.lock().unwrap(), [("b:Granted".to_owned(), 0)]);
        // A full, its Events go out one by one, in turn with B's.
        announcer.announce("team-a", event("Granted"), "a").await;
        announcer.announce("team-b", event("Revoked"), "b").await;
        settle().await;
        let order: Vec<String> = published.lock().unwrap().iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(order, ["b:Granted", "a:Granted", "b:Revoked"]);
    }

    #[tokio::test(start_paused = true)]
    async fn namespaces_with_events_due_are_served_in_turn() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        let (_a, _b) = (announcer.busy("team-a"), announcer.busy("team-b"));
        for _ in 0..10 {
            announcer.announce("team-a", event("Granted"), "a").await;
        }
        announcer.announce("team-b", event("Granted"), "b").await;
        announcer.announce("team-b", event("Revoked"), "b").await;
        tokio::time::sleep(MAX_DELAY).await;
        settle().await;
        let order: Vec<String> = published.lock().unwrap().iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(order.len(), 12);
        assert_eq!(order[..4], ["a:Granted", "b:Granted", "a:Granted", "b:Revoked"], "one of each in turn: {order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_namespace_is_published_at_once_and_beyond_it_a_reconcile_waits() {
        let t0 = Instant::now();
        let published = Arc::new(Mutex::new(Vec::new()));
        // The apiserver takes Events only when the gate lets them through.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (announcer, task) = Announcer::start({
            let (published, gate) = (published.clone(), gate.clone());
            move |e: Event, object: &'static str| {
                let (published, gate) = (published.clone(), gate.clone());
                async move {
                    gate.acquire().await.unwrap().forget();
                    published.lock().unwrap().push((format!("{object}:{}", e.reason), t0.elapsed().as_secs()));
                }
            }
        });
        let busy = announcer.busy("ns");
        for _ in 0..PER_NAMESPACE {
            announcer.announce("ns", event("Granted"), "a").await;
        }
        settle().await;
        // Full: the first is on its way, though the namespace never rested.
        announcer.announce("ns", event("Granted"), "a").await;
        let announcer = Arc::new(announcer);
        let waiting = tokio::spawn({
            let a = announcer.clone();
            async move { a.announce("ns", event("Last"), "b").await }
        });
        settle().await;
        assert!(!waiting.is_finished(), "room for {PER_NAMESPACE} Events of a namespace only");
        gate.add_permits(PER_NAMESPACE + 2);
        waiting.await.unwrap();
        settle().await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "no Event waited for the namespace to rest");
        drop(busy);
        announcer.stop();
        task.await.unwrap();
        let published = published.lock().unwrap();
        assert_eq!(published.len(), PER_NAMESPACE + 2);
        assert_eq!(published.last().map(|(e, _)| e.as_str()), Some("b:Last"), "in order, nothing lost");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_publishes_what_is_queued_without_waiting() {
        let t0 = Instant::now();
        let (announcer, task, published) = recording(t0);
        let _forever = announcer.busy("ns");
        announcer.announce("ns", event("Granted"), "a").await;
        announcer.announce("ns", event("Granted"), "b").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        announcer.stop();
        task.await.unwrap();
        assert_eq!(*published.lock().unwrap(), [("a:Granted".to_owned(), 1), ("b:Granted".to_owned(), 1)]);
        announcer.announce("ns", event("Granted"), "c").await;
        assert_eq!(published.lock().unwrap().len(), 2, "nothing is queued once stopped");
    }
}
