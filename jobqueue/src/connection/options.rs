//! [`ConnectionOptions`]: timeouts, retries and start-up patience.

use std::time::Duration;

/// Options of a [`Connection`](super::Connection).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// How long a non-blocking command may take before it fails. Default 5 s.
    pub response_timeout: Duration,
    /// How long opening a TCP connection may take. Default 2 s.
    pub connect_timeout: Duration,
    /// How many times an operation is retried after a connection error
    /// (refused, dropped, timed out) before the error is returned. Default 6,
    /// with exponential backoff from 25 ms (about 1.6 s in all): long enough
    /// to ride out a Redis restart.
    pub retries: u32,
    /// How long [`Connection::connect_with`](super::Connection::connect_with)
    /// keeps trying while Redis is unreachable, logging each failure and
    /// backing off from 100 ms to 5 s. Default zero: fail at once (a
    /// command-line tool wants that; a worker started beside Redis wants a
    /// minute or more).
    pub startup_wait: Duration,
    /// Claim with `BRPOPLPUSH` as on Redis older than 6.2, even when the
    /// server has `BLMOVE`. For tests of the legacy path.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub force_legacy_claim: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retries: 6,
            startup_wait: Duration::ZERO,
            #[cfg(feature = "test-hooks")]
            force_legacy_claim: false,
        }
    }
}

impl ConnectionOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`retries`](Self::retries).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`startup_wait`](Self::startup_wait).
    pub fn startup_wait(mut self, wait: Duration) -> Self {
        self.startup_wait = wait;
        self
    }

    /// Sets `force_legacy_claim`: claims use `BRPOPLPUSH` whatever the
    /// server's version. A test hook, not a stable API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn force_legacy_claim(mut self, yes: bool) -> Self {
        self.force_legacy_claim = yes;
        self
    }

    /// True when the legacy claim is forced.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn forces_legacy_claim(&self) -> bool {
        self.force_legacy_claim
    }

    /// True when the legacy claim is forced: never without the test hooks.
    #[cfg(not(feature = "test-hooks"))]
    pub(crate) fn forces_legacy_claim(&self) -> bool {
        false
    }
}
