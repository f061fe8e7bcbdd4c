//! Surviving a socket that keeps failing (an accept or a receive): the
//! error is logged once, the next try waits, and the wait grows while the
//! failure lasts. Without it a loop that retries at once spins a core for
//! as long as, say, the process is out of file descriptors (EMFILE), and a
//! loop that gives up loses the socket for good.
use std::time::Duration;

use log::{info, warn};

/// The first wait after a failure.
const FIRST: Duration = Duration::from_millis(10);
/// The longest wait between two tries.
const LONGEST: Duration = Duration::from_secs(1);

/// The state of one retrying loop; see the module documentation.
#[derive(Debug)]
pub struct Backoff {
    what: &'static str,
    next_wait: Duration,
    /// The error last logged, so a run of the same error is logged once.
    logged: Option<String>,
}

impl Backoff {
    /// For the loop serving `what` (named in the log).
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            next_wait: FIRST,
            logged: None,
        }
    }

    /// After a failed try: logs `error` unless it is the one already
    /// logged, and waits before the caller tries again.
    pub async fn failed(&mut self, error: &(dyn std::fmt::Display + Sync)) {
        // Decided before the await: the future holds no reference then.
        let wait = self.record_failure(error);
        tokio::time::sleep(wait).await;
    }

    /// The logging and the wait's length, apart from the waiting.
    fn record_failure(&mut self, error: &dyn std::fmt::Display) -> Duration {
        let text = error.to_string();
        if self.logged.as_ref() != Some(&text) {
            warn!("{}: {text}; retrying with a growing pause", self.what);
            self.logged = Some(text);
        }
        let wait = self.next_wait;
        self.next_wait = (self.next_wait * 2).min(LONGEST);
        wait
    }

    /// After a successful try: the next failure starts over.
    pub fn succeeded(&mut self) {
        if self.logged.take().is_some() {
            info!("{}: working again", self.what);
        }
        self.next_wait = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_a_ceiling_and_start_over_after_a_success() {
        let mut b = Backoff::new("test");
        let waits: Vec<Duration> = (0..10).map(|_| b.record_failure(&"EMFILE")).collect();
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), LONGEST);
        b.succeeded();
        assert_eq!(b.record_failure(&"EMFILE"), FIRST);
    }

    #[test]
    fn a_run_of_one_error_is_logged_once() {
        let mut b = Backoff::new("test");
        b.record_failure(&"EMFILE");
        assert_eq!(b.logged.as_deref(), Some("EMFILE"));
        b.record_failure(&"EMFILE");
        b.record_failure(&"ENOBUFS");
        assert_eq!(
            b.logged.as_deref(),
            Some("ENOBUFS"),
            "a new error is logged"
        );
        b.succeeded();
        assert_eq!(b.logged, None);
    }
}
