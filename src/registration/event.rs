//! The Events a reconcile of an app plans, before they are published.

/// An Event to publish about the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// Names the Secret just written as the related object.
    pub about_secret: bool,
    /// May recur (a persisting problem): published through the recorder that
    /// folds repeats into a series. A mint or a revocation happens once.
    pub may_repeat: bool,
}

impl PlannedEvent {
    pub(super) fn once(warning: bool, reason: &'static str, note: String) -> Self {
        PlannedEvent { warning, reason, note, about_secret: true, may_repeat: false }
    }

    pub(super) fn warning(reason: &'static str, note: String) -> Self {
        PlannedEvent { warning: true, reason, note, about_secret: false, may_repeat: true }
    }
}
