//! Connections to Redis: one multiplexed, auto-reconnecting connection for
//! every non-blocking command, and dedicated connections for blocking claims;
//! to a single server or, slot-routed, to a Redis Cluster.
//!
//! This is the bottom layer: it knows Redis, not queues. `options` holds the
//! knobs, `cluster` what only a cluster needs, `scan` the keyspace walk and
//! `blocking` the pool of dedicated connections for blocking claims.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, ConnectionInfo, FromRedisValue, IntoConnectionInfo, RedisFuture, Value};

use crate::error::{Error, Result};
use crate::retry::Backoff;
use crate::scripts::SCRIPTS;

mod blocking;
mod cluster;
mod options;
mod scan;

pub use options::ConnectionOptions;

/// A handle on one Redis server or one Redis Cluster, cheap to clone and
/// shared by every queue.
///
/// [`Connection::connect`] finds out which it is talking to: a server started
/// with `cluster-enabled yes` reports `redis_mode:cluster` (Valkey:
/// `server_mode:cluster`), and the connection then routes every command by
/// its keys' slot, follows `MOVED` and `ASK` redirects and refreshes the
/// slot map after a failover. Queues opened on a cluster connection use the
/// hash-tagged key layout.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    blocking: Mutex<Vec<Conn>>,
    options: ConnectionOptions,
    version: (u32, u32, u32),
    legacy_claim: bool,
    address: String,
    /// The server's `maxmemory-policy`, read once at connect (a cluster's
    /// first primary that does not evict safely, else `noeviction`).
    maxmemory_policy: OnceLock<String>,
}

enum Backend {
    Single {
        client: Box<Client>,
        manager: ConnectionManager,
    },
    Cluster {
        /// Connections for blocking claims: no response timeout.
        blocking_client: Box<ClusterClient>,
        shared: ClusterConnection,
        /// The nodes the connection was opened with; pub/sub falls back to
        /// them when the cluster's own node list cannot be read.
        seeds: Vec<ConnectionInfo>,
    },
    /// No server: a recording client's (`jobqueue::testing`). Every
    /// command fails with [`DETACHED`].
    #[cfg(feature = "testing")]
    Detached,
}

/// What every command of a detached connection answers.
#[cfg(feature = "testing")]
pub(crate) const DETACHED: &str =
    "this is a recording client (jobqueue::testing): it has no Redis to send commands to";

/// One of the connections commands run on: the shared single-server
/// connection, a dedicated single-server connection, or a cluster connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Shared(ConnectionManager),
    Dedicated(MultiplexedConnection),
    Cluster(ClusterConnection),
    #[cfg(feature = "testing")]
    Detached,
}

#[cfg(feature = "testing")]
fn detached<'a, T: Send + 'a>() -> RedisFuture<'a, T> {
    Box::pin(std::future::ready(Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "no server",
        DETACHED.to_owned(),
    )))))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Shared(c) => c.req_packed_command(cmd),
            Self::Dedicated(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            #[cfg(feature = "testing")]
            Self::Detached => detached(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Shared(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "testing")]
            Self::Detached => detached(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Shared(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            #[cfg(feature = "testing")]
            Self::Detached => 0,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.inner.address)
            .field("cluster", &self.is_cluster())
            .field("server_version", &self.inner.version)
            .field("legacy_claim", &self.inner.legacy_claim)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port/db`)
    /// with default options. When the server is a Redis Cluster node, the
    /// connection becomes a cluster connection seeded with it.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connection.
    pub async fn connect(url: impl IntoConnectionInfo) -> Result<Self> {
        Self::connect_with(url, ConnectionOptions::default()).await
    }

    /// Connects with the given options: checks the server answers, reads its
    /// version (to choose the claim command) and mode (single server or
    /// cluster) and loads every script, so a broken setup fails here rather
    /// than at the first job.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connection.
    pub async fn connect_with(
        url: impl IntoConnectionInfo,
        options: ConnectionOptions,
    ) -> Result<Self> {
        let seed = url.into_connection_info()?;
        Self::connect_retrying(vec![seed], false, options).await
    }

    /// Connects to a Redis Cluster through any of `nodes` (one reachable
    /// node is enough; the rest of the cluster is learned from it).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connections.
    pub async fn connect_cluster<I>(nodes: I, options: ConnectionOptions) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: IntoConnectionInfo,
    {
        let seeds = nodes
            .into_iter()
            .map(IntoConnectionInfo::into_connection_info)
            .collect::<redis::RedisResult<Vec<_>>>()?;
        if seeds.is_empty() {
            return Err(Error::InvalidOption {
                option: "nodes",
                reason: "a cluster connection needs at least one node".into(),
            });
        }
        Self::connect_retrying(seeds, true, options).await
    }

    async fn connect_retrying(
        seeds: Vec<ConnectionInfo>,
        cluster: bool,
        options: ConnectionOptions,
    ) -> Result<Self> {
        let deadline = std::time::Instant::now() + options.startup_wait;
        let mut failures = 0;
        loop {
            let attempt = if cluster {
                Self::open_cluster(seeds.clone(), options.clone()).await
            } else {
                Self::open(seeds[0].clone(), options.clone()).await
            };
            let pause = Backoff::LOOP.delay(failures);
            match attempt {
                Err(e)
                    if e.is_connection_error() && std::time::Instant::now() + pause < deadline =>
                {
                    tracing::warn!(
                        address = %addresses(&seeds),
                        error = %e,
                        retry_in = ?pause,
                        "Redis is unreachable; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    failures += 1;
                }
                done => return done,
            }
        }
    }

    async fn open(seed: ConnectionInfo, options: ConnectionOptions) -> Result<Self> {
        let client = Client::open(seed.clone())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(2);
        let mut manager = ConnectionManager::new_with_config(client.clone(), config).await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut manager)
            .await?;
        if is_cluster_mode(&info) {
            drop(manager);
            return Self::open_cluster(vec![seed], options).await;
        }
        let version = parse_version(&info)
            .ok_or_else(|| Error::malformed("INFO server", "no redis_version line in the reply"))?;
        let backend = Backend::Single {
            client: Box::new(client),
            manager,
        };
        Self::finish(backend, options, version, addresses(&[seed])).await
    }

    async fn open_cluster(seeds: Vec<ConnectionInfo>, options: ConnectionOptions) -> Result<Self> {
        let builder =
            || ClusterClientBuilder::new(seeds.clone()).connection_timeout(options.connect_timeout);
        let client = builder()
            .response_timeout(options.response_timeout)
            .build()?;
        let blocking_client = builder().build()?;
        let mut shared = client.get_async_connection().await?;
        let info = shared
            .route_command(
                redis::cmd("INFO").arg("server").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        let info = String::from_redis_value(info).map_err(redis::RedisError::from)?;
        let version = parse_version(&info)
            .ok_or_else(|| Error::malformed("INFO server", "no redis_version line in the reply"))?;
        let address = addresses(&seeds);
        let backend = Backend::Cluster {
            blocking_client: Box::new(blocking_client),
            shared,
            seeds,
        };
        Self::finish(backend, options, version, address).await
    }

    async fn finish(
        backend: Backend,
        options: ConnectionOptions,
        version: (u32, u32, u32),
        address: String,
    ) -> Result<Self> {
        let legacy_claim = options.forces_legacy_claim() || version < (6, 2, 0);
        let conn = Self {
            inner: Arc::new(Inner {
                backend,
                blocking: Mutex::new(Vec::new()),
                options,
                version,
                legacy_claim,
                address,
                maxmemory_policy: OnceLock::new(),
            }),
        };
        // SCRIPT LOAD goes to every primary of a cluster.
        let mut shared = conn.shared();
        for script in SCRIPTS.all() {
            script.prepare_invoke().load_async(&mut shared).await?;
        }
        conn.check_eviction_policy().await;
        Ok(conn)
    }

    /// A connection to no server, for a recording client: every command
    /// fails with [`DETACHED`].
    #[cfg(feature = "testing")]
    pub(crate) fn detached() -> Self {
        Self {
            inner: Arc::new(Inner {
                backend: Backend::Detached,
                blocking: Mutex::new(Vec::new()),
                options: ConnectionOptions::default(),
                version: (7, 0, 0),
                legacy_claim: false,
                address: "(recording client: no server)".to_owned(),
                maxmemory_policy: OnceLock::new(),
            }),
        }
    }

    /// Reads `maxmemory-policy` (from `INFO memory`, which managed Redis
    /// services answer even where `CONFIG` is disabled) and warns when it is
    /// not `noeviction`: under memory pressure Redis would then delete keys
    /// of its choosing, job hashes and lists included, and jobs would vanish
    /// without a trace. BullMQ and Sidekiq warn the same way. A server that
    /// does not answer is not an error: the policy stays unknown.
    async fn check_eviction_policy(&self) {
        let cmd = redis::cmd("INFO").arg("memory").clone();
        let replies: Vec<String> = match &self.inner.backend {
            Backend::Single { .. } => self.query::<String>(&cmd).await.into_iter().collect(),
            #[cfg(feature = "testing")]
            Backend::Detached => Vec::new(),
            Backend::Cluster { .. } => {
                let mut replies = Vec::new();
                for primary in self.primaries().await.unwrap_or_default() {
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        redis::cluster_routing::Route::new(
                            primary.slot,
                            redis::cluster_routing::SlotAddr::Master,
                        ),
                    ));
                    if let Ok(value) = self.route(&cmd, &route).await
                        && let Ok(text) = String::from_redis_value(value)
                    {
                        replies.push(text);
                    }
                }
                replies
            }
        };
        let policies: Vec<&str> = replies
            .iter()
            .filter_map(|info| info_field(info, "maxmemory_policy"))
            .collect();
        let Some(policy) = policies
            .iter()
            .find(|p| **p != "noeviction")
            .or(policies.first())
        else {
            tracing::debug!(address = %self.inner.address, "maxmemory-policy unknown: INFO memory did not say");
            return;
        };
        if *policy != "noeviction" {
            tracing::warn!(
                address = %self.inner.address,
                maxmemory_policy = policy,
                "Redis may evict keys under memory pressure (maxmemory-policy is not noeviction): \
                 job hashes and lists can vanish without a trace; set maxmemory-policy noeviction"
            );
        }
        let _ = self.inner.maxmemory_policy.set((*policy).to_owned());
    }

    /// The server's version, as read when connecting.
    pub fn server_version(&self) -> (u32, u32, u32) {
        self.inner.version
    }

    /// The server's `maxmemory-policy` as read at connect, if it could be
    /// read. Anything but `noeviction` lets Redis delete job keys under
    /// memory pressure (a warning is logged at connect).
    pub fn maxmemory_policy(&self) -> Option<&str> {
        self.inner.maxmemory_policy.get().map(String::as_str)
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster { .. })
    }

    /// True when claims use `BRPOPLPUSH` (Redis < 6.2) instead of
    /// `BLMOVE`.
    pub fn legacy_claim(&self) -> bool {
        self.inner.legacy_claim
    }

    /// The options this connection was opened with.
    pub fn options(&self) -> &ConnectionOptions {
        &self.inner.options
    }

    pub(super) fn shared(&self) -> Conn {
        match &self.inner.backend {
            Backend::Single { manager, .. } => Conn::Shared(manager.clone()),
            Backend::Cluster { shared, .. } => Conn::Cluster(shared.clone()),
            #[cfg(feature = "testing")]
            Backend::Detached => Conn::Detached,
        }
    }

    /// Runs `op` on the shared connection, retrying it with backoff after a
    /// connection error. Only operations that are safe to repeat go through
    /// here: every script is fenced or detects its own repeat.
    pub(crate) async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut attempt = 0;
        loop {
            match op(self.shared()).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let err = Error::from(err);
                    if !err.is_connection_error() || attempt >= self.inner.options.retries {
                        return Err(err);
                    }
                    tracing::debug!(attempt, error = %err, "redis connection error, retrying");
                    tokio::time::sleep(Backoff::COMMAND.delay(attempt)).await;
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
}

/// The seed addresses, for logs and `Debug` (never a password).
fn addresses(seeds: &[ConnectionInfo]) -> String {
    seeds
        .iter()
        .map(|s| s.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One `field:value` line of an `INFO` reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether `INFO server` comes from a node with `cluster-enabled yes`: Redis
/// says `redis_mode:cluster`, Valkey 8 (which renamed the field) says
/// `server_mode:cluster`. Missing the Valkey spelling would treat a cluster
/// node as a single server and meet `MOVED` on most keys.
fn is_cluster_mode(info: &str) -> bool {
    ["redis_mode", "server_mode"]
        .iter()
        .any(|field| info_field(info, field) == Some("cluster"))
}

fn parse_version(info: &str) -> Option<(u32, u32, u32)> {
    let line = info_field(info, "redis_version")?;
    let mut parts = line.split('.').map(|p| p.parse::<u32>().ok());
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
        let memory = "# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(info_field(memory, "maxmemory_policy"), Some("allkeys-lru"));
        assert_eq!(info_field(memory, "maxmemory"), Some("0"));
    }

    #[test]
    fn a_cluster_node_is_recognised_by_redis_and_valkey_info() {
        let redis = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\nos:Linux\r\n";
        let valkey = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\n\
                      valkey_version:8.1.8\r\nserver_mode:cluster\r\n";
        assert!(is_cluster_mode(redis));
        assert!(is_cluster_mode(valkey));
        assert!(!is_cluster_mode(
            "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n"
        ));
        assert!(!is_cluster_mode(
            "# Server\r\nserver_name:valkey\r\nserver_mode:standalone\r\n"
        ));
    }
}
