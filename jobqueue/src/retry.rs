//! The one retry policy: how long to wait before trying again after Redis
//! failed to answer.
//!
//! Every loop that meets an unreachable Redis (a command's own retries,
//! opening a connection, a runner's claim loop, its sweeper, the write of a
//! job's outcome) waits by one of the schedules below, so the whole crate
//! backs off the same way and a change of policy is made here once.

use std::time::Duration;

/// An exponential schedule: `first`, doubling per failure, capped at `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
}

impl Backoff {
    /// A command retried after a connection error: 25 ms, 50 ms, … 1 s.
    /// Six retries (the default of `ConnectionOptions::retries`) ride out
    /// about 1.6 s, a Redis restart.
    pub(crate) const COMMAND: Self = Self::new(Duration::from_millis(25), Duration::from_secs(1));

    /// Opening a connection while Redis is unreachable, and a long-running
    /// loop (claiming, sweeping, writing an outcome) that keeps failing:
    /// 100 ms, 200 ms, … 5 s.
    pub(crate) const LOOP: Self = Self::new(Duration::from_millis(100), Duration::from_secs(5));

    const fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap }
    }

    /// The wait after the `failures`th failure in a row (0 for the first).
    pub(crate) fn delay(self, failures: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << failures.min(16))
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        assert_eq!(Backoff::COMMAND.delay(0), Duration::from_millis(25));
        assert_eq!(Backoff::COMMAND.delay(2), Duration::from_millis(100));
        assert_eq!(Backoff::COMMAND.delay(30), Duration::from_secs(1));
        assert_eq!(Backoff::LOOP.delay(0), Duration::from_millis(100));
        assert_eq!(Backoff::LOOP.delay(3), Duration::from_millis(800));
        assert_eq!(Backoff::LOOP.delay(99), Duration::from_secs(5));
    }
}
