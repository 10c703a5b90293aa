//! Connections to Redis: one multiplexed, auto-reconnecting connection for
//! every non-blocking command, and dedicated connections for blocking claims.
//!
//! A blocking command (`BLMOVE`, `BRPOPLPUSH`) on the shared connection would
//! stall every command queued behind it (reference section 9), and redis-rs's
//! default 500 ms response timeout would cut it off. Blocking claims therefore
//! borrow a connection of their own from a small pool, with no response
//! timeout of the client's; the claim bounds the wait itself.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};

use crate::error::{Error, Result};
use crate::scripts::SCRIPTS;

/// Options of a [`Connection`].
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
    /// Claim with `BRPOPLPUSH` as on Redis older than 6.2, even when the
    /// server has `BLMOVE`. Default false: the server's version decides.
    pub force_legacy_claim: bool,
    /// How long [`Connection::open_with`] keeps trying while Redis is
    /// unreachable, logging each failure and backing off from 100 ms to 5 s.
    /// Default zero: fail at once (a command-line tool wants that; a worker
    /// started beside Redis wants a minute or more).
    pub startup_wait: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retries: 6,
            force_legacy_claim: false,
            startup_wait: Duration::ZERO,
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

    /// Sets [`force_legacy_claim`](Self::force_legacy_claim).
    pub fn force_legacy_claim(mut self, yes: bool) -> Self {
        self.force_legacy_claim = yes;
        self
    }
}

/// A handle on one Redis server, cheap to clone and shared by every queue.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    manager: ConnectionManager,
    blocking: Mutex<Vec<MultiplexedConnection>>,
    options: ConnectionOptions,
    version: (u32, u32, u32),
    legacy_claim: bool,
    address: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.inner.address)
            .field("server_version", &self.inner.version)
            .field("legacy_claim", &self.inner.legacy_claim)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port/db`)
    /// with default options.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connection.
    pub async fn open(url: impl IntoConnectionInfo) -> Result<Self> {
        Self::open_with(url, ConnectionOptions::default()).await
    }

    /// Connects with the given options: checks the server answers, reads its
    /// version (to choose the claim command) and loads every script, so a
    /// broken setup fails here rather than at the first job.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connection.
    pub async fn open_with(
        url: impl IntoConnectionInfo,
        options: ConnectionOptions,
    ) -> Result<Self> {
        let client = Client::open(url)?;
        let deadline = std::time::Instant::now() + options.startup_wait;
        let mut pause = Duration::from_millis(100);
        loop {
            match Self::connect(client.clone(), options.clone()).await {
                Err(e)
                    if e.is_connection_error() && std::time::Instant::now() + pause < deadline =>
                {
                    tracing::warn!(
                        address = %client.get_connection_info().addr(),
                        error = %e,
                        retry_in = ?pause,
                        "Redis is unreachable; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                done => return done,
            }
        }
    }

    async fn connect(client: Client, options: ConnectionOptions) -> Result<Self> {
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(2);
        let mut manager = ConnectionManager::new_with_config(client.clone(), config).await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut manager)
            .await?;
        let version = parse_version(&info)
            .ok_or_else(|| Error::malformed("INFO server", "no redis_version line in the reply"))?;
        for script in SCRIPTS.all() {
            script.prepare_invoke().load_async(&mut manager).await?;
        }
        let legacy_claim = options.force_legacy_claim || version < (6, 2, 0);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager,
                blocking: Mutex::new(Vec::new()),
                options,
                version,
                legacy_claim,
                address,
            }),
        })
    }

    /// The server's version, as read when connecting.
    pub fn server_version(&self) -> (u32, u32, u32) {
        self.inner.version
    }

    /// True when claims use `BRPOPLPUSH` (Redis < 6.2, or forced) instead of
    /// `BLMOVE`.
    pub fn legacy_claim(&self) -> bool {
        self.inner.legacy_claim
    }

    /// The options this connection was opened with.
    pub fn options(&self) -> &ConnectionOptions {
        &self.inner.options
    }

    /// Runs `op` on the shared connection, retrying it with backoff after a
    /// connection error. Only operations that are safe to repeat go through
    /// here: every script is fenced or detects its own repeat.
    pub(crate) async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut attempt = 0;
        loop {
            match op(self.inner.manager.clone()).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let err = Error::from(err);
                    if !err.is_connection_error() || attempt >= self.inner.options.retries {
                        return Err(err);
                    }
                    tracing::debug!(attempt, error = %err, "redis connection error, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Runs one command on the shared connection, retrying connection errors.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs a pipeline on the shared connection, retrying connection errors.
    pub(crate) async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        self.run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// A new pub/sub connection (pub/sub needs a connection of its own).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        Ok(self.inner.client.get_async_pubsub().await?)
    }

    /// Borrows a dedicated connection for a blocking command.
    pub(crate) async fn blocking(&self) -> Result<BlockingConnection> {
        let pooled = self.inner.blocking.lock().expect("pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.inner.options.connect_timeout))
                    .set_response_timeout(None);
                self.inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        Ok(BlockingConnection {
            conn,
            home: Arc::clone(&self.inner),
        })
    }
}

/// A connection borrowed for one blocking command. It goes back to the pool
/// only through [`BlockingConnection::give_back`], after a command completed
/// cleanly; dropped anywhere else (an error, a cancelled future), it is closed,
/// so no reply of an abandoned command can ever reach another caller.
pub(crate) struct BlockingConnection {
    pub(crate) conn: MultiplexedConnection,
    home: Arc<Inner>,
}

impl BlockingConnection {
    pub(crate) fn give_back(self) {
        self.home
            .blocking
            .lock()
            .expect("pool lock")
            .push(self.conn);
    }
}

/// 25 ms, 50 ms, 100 ms, … capped at 1 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25u64.saturating_mul(1 << attempt.min(6)).min(1000))
}

fn parse_version(info: &str) -> Option<(u32, u32, u32)> {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?;
    let mut parts = line.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(parse_version(info), Some((7, 0, 15)));
        assert_eq!(parse_version("redis_version:6.0\r\n"), Some((6, 0, 0)));
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(25));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_secs(1));
    }
}
