//! Connections to Redis: one multiplexed, auto-reconnecting connection for
//! every non-blocking command, and dedicated connections for blocking claims;
//! to a single server or, slot-routed, to a Redis Cluster.
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

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, FromRedisValue, IntoConnectionInfo, RedisFuture,
    Value,
};

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

/// A handle on one Redis server or one Redis Cluster, cheap to clone and
/// shared by every queue.
///
/// [`Connection::open`] finds out which it is talking to: a server started
/// with `cluster-enabled yes` reports `redis_mode:cluster`, and the
/// connection then routes every command by its keys' slot, follows `MOVED`
/// and `ASK` redirects and refreshes the slot map after a failover. Queues
/// opened on a cluster connection use the hash-tagged key layout.
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
}

/// One of the connections commands run on: the shared single-server
/// connection, a dedicated single-server connection, or a cluster connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Shared(ConnectionManager),
    Dedicated(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Shared(c) => c.req_packed_command(cmd),
            Self::Dedicated(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Shared(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
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
    pub async fn open(url: impl IntoConnectionInfo) -> Result<Self> {
        Self::open_with(url, ConnectionOptions::default()).await
    }

    /// Connects with the given options: checks the server answers, reads its
    /// version (to choose the claim command) and mode (single server or
    /// cluster) and loads every script, so a broken setup fails here rather
    /// than at the first job.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connection.
    pub async fn open_with(
        url: impl IntoConnectionInfo,
        options: ConnectionOptions,
    ) -> Result<Self> {
        let seed = url.into_connection_info()?;
        Self::open_retrying(vec![seed], false, options).await
    }

    /// Connects to a Redis Cluster through any of `nodes` (one reachable
    /// node is enough; the rest of the cluster is learned from it).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open connections.
    pub async fn open_cluster<I>(nodes: I, options: ConnectionOptions) -> Result<Self>
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
        Self::open_retrying(seeds, true, options).await
    }

    async fn open_retrying(
        seeds: Vec<ConnectionInfo>,
        cluster: bool,
        options: ConnectionOptions,
    ) -> Result<Self> {
        let deadline = std::time::Instant::now() + options.startup_wait;
        let mut pause = Duration::from_millis(100);
        loop {
            let attempt = if cluster {
                Self::connect_cluster(seeds.clone(), options.clone()).await
            } else {
                Self::connect(seeds[0].clone(), options.clone()).await
            };
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
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                done => return done,
            }
        }
    }

    async fn connect(seed: ConnectionInfo, options: ConnectionOptions) -> Result<Self> {
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
        if info.lines().any(|l| l.trim() == "redis_mode:cluster") {
            drop(manager);
            return Self::connect_cluster(vec![seed], options).await;
        }
        let version = parse_version(&info)
            .ok_or_else(|| Error::malformed("INFO server", "no redis_version line in the reply"))?;
        let backend = Backend::Single {
            client: Box::new(client),
            manager,
        };
        Self::finish(backend, options, version, addresses(&[seed])).await
    }

    async fn connect_cluster(
        seeds: Vec<ConnectionInfo>,
        options: ConnectionOptions,
    ) -> Result<Self> {
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
        let legacy_claim = options.force_legacy_claim || version < (6, 2, 0);
        let conn = Self {
            inner: Arc::new(Inner {
                backend,
                blocking: Mutex::new(Vec::new()),
                options,
                version,
                legacy_claim,
                address,
            }),
        };
        // SCRIPT LOAD goes to every primary of a cluster.
        let mut shared = conn.shared();
        for script in SCRIPTS.all() {
            script.prepare_invoke().load_async(&mut shared).await?;
        }
        Ok(conn)
    }

    /// The server's version, as read when connecting.
    pub fn server_version(&self) -> (u32, u32, u32) {
        self.inner.version
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster { .. })
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

    fn shared(&self) -> Conn {
        match &self.inner.backend {
            Backend::Single { manager, .. } => Conn::Shared(manager.clone()),
            Backend::Cluster { shared, .. } => Conn::Cluster(shared.clone()),
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

    /// Every key matching `pattern`; see [`keys`](Self::keys).
    pub(crate) async fn scan(
        &self,
        pattern: &str,
        slot_of: Option<&str>,
        max_steps: usize,
    ) -> Result<Vec<String>> {
        let mut scan = self.keys(pattern, slot_of, max_steps).await?;
        let mut found = Vec::new();
        while let Some(keys) = scan.next_batch().await? {
            found.extend(keys);
        }
        Ok(found)
    }

    /// A walk over the keys matching `pattern` with `SCAN` (`COUNT 1000` per
    /// step, at most `max_steps` steps per node). On a cluster, keys sharing
    /// `slot_of`'s hash tag are scanned on the primary serving that slot, and
    /// without `slot_of` on every primary; each primary is addressed through
    /// a slot it serves, the way the client's own slot map knows it.
    pub(crate) async fn keys(
        &self,
        pattern: &str,
        slot_of: Option<&str>,
        max_steps: usize,
    ) -> Result<KeyScan<'_>> {
        let by_slot = |route: Route| {
            Some(RoutingInfo::SingleNode(
                SingleNodeRoutingInfo::SpecificNode(route),
            ))
        };
        let mut targets = match (&self.inner.backend, slot_of) {
            (Backend::Single { .. }, _) => vec![None],
            (Backend::Cluster { .. }, Some(key)) => {
                vec![by_slot(Route::with_key(key, SlotAddr::Master))]
            }
            (Backend::Cluster { .. }, None) => self
                .primaries()
                .await?
                .into_iter()
                .map(|p| by_slot(Route::new(p.slot, SlotAddr::Master)))
                .collect(),
        };
        targets.reverse();
        Ok(KeyScan {
            conn: self,
            pattern: pattern.to_owned(),
            targets,
            cursor: 0,
            steps: 0,
            max_steps,
        })
    }

    /// Sends `cmd` to the cluster node `routing` names, retrying connection
    /// errors.
    async fn route(&self, cmd: &redis::Cmd, routing: &RoutingInfo) -> Result<Value> {
        self.run(|c| async move {
            match c {
                Conn::Cluster(mut c) => c.route_command(cmd.clone(), routing.clone()).await,
                mut other => cmd.query_async(&mut other).await,
            }
        })
        .await
    }

    /// Every primary that serves slots, from `CLUSTER NODES`.
    async fn primaries(&self) -> Result<Vec<Primary>> {
        let cmd = redis::cmd("CLUSTER").arg("NODES").clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let nodes = String::from_redis_value(self.route(&cmd, &routing).await?)
            .map_err(redis::RedisError::from)?;
        Ok(parse_primaries(&nodes))
    }

    /// A new pub/sub connection (pub/sub needs a connection of its own).
    ///
    /// On a cluster, `PUBLISH` reaches every node, so subscribing on any one
    /// node hears every queue's events. Subscribers start at a random primary
    /// (so a fleet's waiters spread over the nodes) and try the others, then
    /// the seed nodes; each address keeps the seed's TLS settings.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        match &self.inner.backend {
            Backend::Single { client, .. } => Ok(client.get_async_pubsub().await?),
            Backend::Cluster { seeds, .. } => {
                let mut primaries = self.primaries().await.unwrap_or_default();
                if !primaries.is_empty() {
                    let start = rand::random::<u32>() as usize % primaries.len();
                    primaries.rotate_left(start);
                }
                let mut candidates: Vec<ConnectionInfo> = primaries
                    .into_iter()
                    .map(|p| at_address(&seeds[0], p.host, p.port))
                    .collect();
                candidates.extend(seeds.iter().cloned());
                let mut last = None;
                for info in candidates {
                    match Client::open(info)?.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("at least one seed").into())
            }
        }
    }

    /// Borrows a dedicated connection for a blocking command.
    pub(crate) async fn blocking(&self) -> Result<BlockingConnection> {
        let pooled = self.inner.blocking.lock().expect("pool lock").pop();
        let conn = match (pooled, &self.inner.backend) {
            (Some(conn), _) => conn,
            (None, Backend::Single { client, .. }) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.inner.options.connect_timeout))
                    .set_response_timeout(None);
                Conn::Dedicated(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            (
                None,
                Backend::Cluster {
                    blocking_client, ..
                },
            ) => Conn::Cluster(blocking_client.get_async_connection().await?),
        };
        Ok(BlockingConnection {
            conn,
            home: Arc::clone(&self.inner),
        })
    }
}

/// A `SCAN` walk over one node after another; see [`Connection::keys`].
pub(crate) struct KeyScan<'a> {
    conn: &'a Connection,
    pattern: String,
    /// Nodes still to walk, the current one last (`None`: the only server).
    targets: Vec<Option<RoutingInfo>>,
    cursor: u64,
    steps: usize,
    max_steps: usize,
}

impl KeyScan<'_> {
    /// The next step's keys (possibly none), or `None` once every node is
    /// walked.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<String>>> {
        let Some(target) = self.targets.last() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<String>) = match target {
            None => self.conn.query(&cmd).await?,
            Some(route) => {
                let value = self.conn.route(&cmd, route).await?;
                FromRedisValue::from_redis_value(value).map_err(redis::RedisError::from)?
            }
        };
        self.steps += 1;
        if next == 0 || self.steps >= self.max_steps {
            self.targets.pop();
            self.cursor = 0;
            self.steps = 0;
        } else {
            self.cursor = next;
        }
        Ok(Some(keys))
    }
}

/// A connection borrowed for one blocking command. It goes back to the pool
/// only through [`BlockingConnection::give_back`], after a command completed
/// cleanly; dropped anywhere else (an error, a cancelled future), it is closed,
/// so no reply of an abandoned command can ever reach another caller.
pub(crate) struct BlockingConnection {
    pub(crate) conn: Conn,
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

/// The seed addresses, for logs and `Debug` (never a password).
fn addresses(seeds: &[ConnectionInfo]) -> String {
    seeds
        .iter()
        .map(|s| s.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A primary of a cluster, and one slot it serves (to route commands to it
/// through the client's slot map).
#[derive(Debug, PartialEq, Eq)]
struct Primary {
    host: String,
    port: u16,
    slot: u16,
}

/// Primaries serving slots, from a `CLUSTER NODES` reply: lines of
/// `id host:port@cport[,hostname] flags master-id ping pong epoch link slot…`.
/// A primary flagged `fail` (agreed dead) is left out; one only suspected
/// (`fail?`) is kept.
fn parse_primaries(nodes: &str) -> Vec<Primary> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            if !flags.contains(&"master") || flags.contains(&"fail") {
                return None;
            }
            // Slot fields are `N` or `N-M`; `[N->-id]` marks a migration.
            let slot = fields
                .get(8..)?
                .iter()
                .find(|f| !f.starts_with('['))
                .and_then(|f| f.split('-').next()?.parse().ok())?;
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Primary {
                host: host.to_owned(),
                port: port.parse().ok()?,
                slot,
            })
        })
        .collect()
}

/// `seed` with its address moved to `host:port`, keeping TLS and its settings.
fn at_address(seed: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match seed.addr() {
        redis::ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => redis::ConnectionAddr::Tcp(host, port),
    };
    seed.clone().set_addr(addr)
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
    fn primaries_are_the_slot_serving_masters_of_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,host-b master,fail? - 0 1 2 connected [5461->-a1] 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 1 3 disconnected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 1 1 connected
e5 127.0.0.1:7005@17005 master - 0 1 5 connected
";
        let primary = |port, slot| Primary {
            host: "127.0.0.1".to_owned(),
            port,
            slot,
        };
        assert_eq!(
            parse_primaries(nodes),
            vec![primary(7001, 0), primary(7002, 5461)]
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(25));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_secs(1));
    }
}
