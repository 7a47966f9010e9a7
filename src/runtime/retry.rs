//! Retrying failed reconciles: per-object exponential backoff with jitter, and
//! which failures are worth a Warning Event.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::Key;

/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The wait before attempt `failures + 1`: 1 s doubling to [`MAX_DELAY`], each
/// spread by ±20% so objects that failed together do not retry together.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.clamp(1, 10).saturating_sub(1)).min(MAX_DELAY);
    base.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

/// Whether the `failures`-th consecutive failure is published as an Event:
/// the 1st, 2nd, 4th, 8th, … so a failure that lasts is told ever more rarely
/// (about one Event per hour once the backoff is at its longest).
pub fn worth_an_event(failures: u32) -> bool {
    failures.is_power_of_two()
}

/// The note of a `ReconcileFailed` Event: what failed, and when it is tried again.
pub fn failure_note(error: &impl std::fmt::Display, delay: Duration, failures: u32) -> String {
    event_note(&format!("{error}; retrying in {}s (failure {failures} in a row)", delay.as_secs().max(1)))
}

/// The longest Event note the apiserver takes.
const MAX_NOTE_BYTES: usize = 1024;

/// `text` as an Event note: without the debug dump of the apiserver's Status
/// that a kube error's text ends with (its message and reason are kept before
/// it), and at most 1024 bytes.
pub fn event_note(text: &str) -> String {
    let brief = match text.find(" (Status {") {
        Some(at) => {
            let rest = &text[at..];
            // Whatever follows the dump (our own words) is kept.
            let after = rest.find("}); ").map_or("", |end| &rest[end + 2..]);
            format!("{}{after}", &text[..at])
        }
        None => text.to_owned(),
    };
    if brief.len() <= MAX_NOTE_BYTES {
        return brief;
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !brief.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &brief[..end])
}

/// Consecutive failures per object.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<Key, u32>>);

impl Failures {
    /// Counts one more failure of `object`; returns how many in a row.
    pub fn failed(&self, object: &Key) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(object.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// `object` succeeded (or is gone): it starts again from the shortest wait.
    pub fn succeeded(&self, object: &Key) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_to_five_minutes_with_jitter() {
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (50, 300)] {
            for _ in 0..50 {
                let wait = backoff(failures).as_secs_f64();
                let base = base as f64;
                assert!(wait >= base * 0.8 - 1e-9 && wait <= base * 1.2 + 1e-9, "{failures}: {wait}");
            }
        }
    }

    #[test]
    fn lasting_failures_are_told_ever_more_rarely() {
        let told: Vec<u32> = (1..=40).filter(|n| worth_an_event(*n)).collect();
        assert_eq!(told, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn event_notes_drop_the_status_dump_and_fit_the_apiserver() {
        let kube = "writing the status of AppConsent a/b failed: ApiError: appconsents \"b\" is forbidden: denied: \
                    Forbidden (Status { status: Some(Failure), code: 403, details: None }); retrying in 2s";
        assert_eq!(
            event_note(kube),
            "writing the status of AppConsent a/b failed: ApiError: appconsents \"b\" is forbidden: denied: Forbidden; \
             retrying in 2s"
        );
        let long = "é".repeat(2000);
        let note = event_note(&long);
        assert!(note.len() <= 1024 && note.ends_with('…'), "{}", note.len());
    }

    #[test]
    fn a_success_starts_over() {
        let failures = Failures::default();
        let (a, b) = (Key::new("ns", "a"), Key::new("ns", "b"));
        assert_eq!((failures.failed(&a), failures.failed(&a), failures.failed(&b)), (1, 2, 1));
        failures.succeeded(&a);
        assert_eq!(failures.failed(&a), 1);
    }
}
