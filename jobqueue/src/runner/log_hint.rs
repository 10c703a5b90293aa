//! The one line a runner prints when its logs would go nowhere.
//!
//! The runner logs through `tracing`, which drops every event until the
//! application installs a subscriber. A newcomer's first runner then looks
//! dead: it claims and runs jobs and says nothing, not even its errors. So
//! the first runner of a process that starts without a subscriber says so
//! once on stderr, with the line that fixes it.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::subscriber::NoSubscriber;

/// What [`hint_once`] prints.
pub(crate) const HINT: &str = "jobqueue: no tracing subscriber is installed, so the runner's logs \
     (errors included) go nowhere; add `tracing_subscriber::fmt().init();` at the start of main \
     (crate tracing-subscriber)";

/// Whether events sent from this thread now would reach no subscriber.
pub(crate) fn logs_go_nowhere() -> bool {
    tracing::dispatcher::get_default(|dispatch| dispatch.is::<NoSubscriber>())
}

/// Prints [`HINT`] on stderr if logs go nowhere, at most once per process.
pub(crate) fn hint_once() {
    static SHOWN: AtomicBool = AtomicBool::new(false);
    if logs_go_nowhere() && !SHOWN.swap(true, Ordering::Relaxed) {
        eprintln!("{HINT}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_without_a_subscriber_is_told_apart_from_one_with() {
        // Unit tests of this crate install no global subscriber.
        assert!(logs_go_nowhere());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || assert!(!logs_go_nowhere()));
    }
}
