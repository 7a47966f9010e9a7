//! Events that wait for the status writes.
//!
//! A consent's answer is its status; the Event that tells of a change is for
//! the people reading `kubectl describe`. One change upstream (an app deleted,
//! an allowlist edited) changes thousands of consents at once, and an Event
//! costs the apiserver about half of what the status write does. So the
//! consent controller queues each change's Event here, and the queue publishes
//! it once no reconcile is in flight, or at the latest [`MAX_DELAY`] after it
//! was queued: the statuses settle first, the Events follow, in order, one at a
//! time. (client-go's recorder is asynchronous too.) When the controller is
//! idle, an Event goes out at once.
//!
//! At most [`CAPACITY`] Events wait; beyond that a reconcile waits for room,
//! so none is dropped. When the controller stops, what is queued is published
//! without waiting (the caller bounds how long).

use std::sync::Arc;

use kube::runtime::events::Event;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Duration, Instant},
};

/// How long an Event waits at most for the controller to become idle.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// How many Events may wait (each a few hundred bytes).
pub const CAPACITY: usize = 1024;

/// The queue's handle, shared by the reconciles.
pub struct Announcer<O> {
    queue: mpsc::Sender<(Event, O, Instant)>,
    busy: Arc<watch::Sender<usize>>,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

/// A reconcile in flight; Events wait while one is held.
#[must_use = "the reconcile counts as in flight only while this is held"]
pub struct Busy(Arc<watch::Sender<usize>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<O: Send + 'static> Announcer<O> {
    /// Starts the queue; `publish` sends one Event about object `O`. The task
    /// ends once [`Announcer::stop`] was called and the queue is empty.
    pub fn start<P, F>(mut publish: P) -> (Self, tokio::task::JoinHandle<()>)
    where
        P: FnMut(Event, O) -> F + Send + 'static,
        F: Future<Output = ()> + Send,
    {
        let (queue, mut queued) = mpsc::channel::<(Event, O, Instant)>(CAPACITY);
        let (busy, mut in_flight) = watch::channel(0usize);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut stopping = false;
            loop {
                let next = tokio::select! {
                    next = queued.recv() => next,
                    _ = &mut stopped, if !stopping => {
                        stopping = true;
                        // What is queued still goes out; nothing new comes in.
                        queued.close();
                        continue;
                    }
                };
                let Some((event, object, at)) = next else { break };
                if !stopping {
                    tokio::select! {
                        // An error: the handle is gone, nothing is in flight.
                        _ = in_flight.wait_for(|n| *n == 0) => {}
                        _ = tokio::time::sleep_until(at + MAX_DELAY) => {}
                        _ = &mut stopped => {
                            stopping = true;
                            queued.close();
                        }
                    }
                }
                publish(event, object).await;
            }
        });
        (Announcer { queue, busy: Arc::new(busy), stop: std::sync::Mutex::new(Some(stop)) }, task)
    }

    /// Marks a reconcile in flight until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        self.busy.send_modify(|n| *n += 1);
        Busy(self.busy.clone())
    }

    /// Queues `event` about `object` (waits while [`CAPACITY`] Events do).
    pub async fn announce(&self, event: Event, object: O) {
        // Fails only once stopped: the Event is not published then.
        let _ = self.queue.send((event, object, Instant::now())).await;
    }

    /// Publishes what is queued without waiting, then ends the task.
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_goes_out_at_once_when_no_reconcile_is_in_flight() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        announcer.announce(event("Granted"), "a").await;
        settle().await;
        assert_eq!(*published.lock().unwrap(), [("a:Granted".to_owned(), 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_the_reconciles_in_flight_and_keep_their_order() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        let first = announcer.busy();
        let second = announcer.busy();
        announcer.announce(event("AppRevoked"), "a").await;
        announcer.announce(event("AppRevoked"), "b").await;
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
    async fn a_controller_that_never_rests_still_announces_after_the_longest_wait() {
        let t0 = Instant::now();
        let (announcer, _task, published) = recording(t0);
        let _forever = announcer.busy();
        announcer.announce(event("Granted"), "a").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        announcer.announce(event("Granted"), "b").await;
        tokio::time::sleep(MAX_DELAY * 2).await;
        assert_eq!(*published.lock().unwrap(), [("a:Granted".to_owned(), 5), ("b:Granted".to_owned(), 7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_the_reconcile_wait_and_loses_nothing() {
        let t0 = Instant::now();
        let (announcer, task, published) = recording(t0);
        let busy = announcer.busy();
        for _ in 0..CAPACITY + 1 {
            announcer.announce(event("Granted"), "a").await;
        }
        let waiting = tokio::spawn({
            let announcer = Arc::new(announcer);
            let a = announcer.clone();
            async move {
                a.announce(event("Last"), "b").await;
                announcer
            }
        });
        settle().await;
        assert!(!waiting.is_finished(), "room for {CAPACITY} Events only");
        drop(busy);
        let announcer = waiting.await.unwrap();
        announcer.stop();
        task.await.unwrap();
        let published = published.lock().unwrap();
        assert_eq!(published.len(), CAPACITY + 2);
        assert_eq!(published.last().unwrap().0, "b:Last");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_publishes_what_is_queued_without_waiting() {
        let t0 = Instant::now();
        let (announcer, task, published) = recording(t0);
        let _forever = announcer.busy();
        announcer.announce(event("Granted"), "a").await;
        announcer.announce(event("Granted"), "b").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        announcer.stop();
        task.await.unwrap();
        assert_eq!(*published.lock().unwrap(), [("a:Granted".to_owned(), 1), ("b:Granted".to_owned(), 1)]);
        announcer.announce(event("Granted"), "c").await;
        assert_eq!(published.lock().unwrap().len(), 2, "nothing is queued once stopped");
    }
}
