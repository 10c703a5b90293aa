//! Private Redis Clusters, and a handle that is either a single server or a
//! cluster so one test body can run against both.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::{PortReservation, RedisServer, ServerExt};

/// A private Redis Cluster: `masters` primaries, each with `replicas`
/// replicas, every node a [`RedisServer`] with `cluster-enabled yes`, joined
/// with `redis-cli --cluster create`. Killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Each node's cluster-bus port, held for the cluster's life: a port
    /// picked free and let go could be handed to a server another test
    /// starts before this node binds it (or, after a kill, before it
    /// restarts), and the node would then exit with "Failed listening on
    /// port ... (cluster)". redis-server binds with `SO_REUSEADDR`, so it
    /// can listen on a port this side holds.
    _bus_ports: Vec<PortReservation>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// sees every slot served and every replica is in sync.
    ///
    /// Creation is bounded and tried again on fresh ports: two clusters
    /// created at once by parallel test processes can be handed the same
    /// free port between its check and its use, and `redis-cli --cluster
    /// create` then waits for a join that never comes.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            let (nodes, bus_ports) = Self::start_nodes(masters * (1 + replicas));
            match Self::create(&nodes, replicas, Duration::from_secs(60)) {
                Ok(()) => {
                    let cluster = Self {
                        nodes,
                        _bus_ports: bus_ports,
                    };
                    cluster.wait_until_settled(Duration::from_secs(30));
                    return cluster;
                }
                Err(e) => last = e,
            }
        }
        panic!("no cluster could be created in three tries: {last}");
    }

    fn start_nodes(count: usize) -> (Vec<RedisServer>, Vec<PortReservation>) {
        (0..count)
            .map(|_| {
                let bus_port = PortReservation::new();
                let node = RedisServer::builder()
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        // A replica fails over however long ago it last heard
                        // from its primary: the failover test pauses the
                        // primary's writes (which stops its pings to the
                        // replica) before it kills it, and on a loaded
                        // machine that can outlast the default validity
                        // window, after which the replica refuses to take
                        // over and the slot stays down.
                        "--cluster-replica-validity-factor",
                        "0",
                        "--cluster-port",
                        &bus_port.port().to_string(),
                    ])
                    .start();
                (node, bus_port)
            })
            .unzip()
    }

    /// `redis-cli --cluster create` over `nodes`, killed after `limit`.
    fn create(nodes: &[RedisServer], replicas: usize, limit: Duration) -> Result<(), String> {
        let mut create = Command::new(redis_cli_path());
        create.arg("--cluster").arg("create");
        for node in nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = create
            .spawn()
            .expect("run redis-cli --cluster create (package redis-tools)");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for redis-cli") {
                let out = child.wait_with_output().expect("redis-cli output");
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "redis-cli --cluster create failed: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ))
                };
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().expect("redis-cli output");
                return Err(format!(
                    "redis-cli --cluster create did not finish within {limit:?}: {}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every live node reports `cluster_state:ok`, knows every
    /// live node, and every replica's link to its primary is up.
    pub fn wait_until_settled(&self, timeout: Duration) {
        let started = Instant::now();
        let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        loop {
            let settled = live.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let repl = n.cli(&["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if settled {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "the cluster did not settle within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every replica has received everything its primary had
    /// written when this was called (replication offsets from `INFO`).
    pub fn wait_for_replicas(&self, timeout: Duration) {
        let started = Instant::now();
        let field = |info: &str, name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        let targets: Vec<(u16, u64)> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .filter_map(|n| {
                let info = n.cli(&["INFO", "replication"]);
                info.contains("role:master")
                    .then(|| (n.port(), field(&info, "master_repl_offset").unwrap_or(0)))
            })
            .collect();
        for replica in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let info = replica.cli(&["INFO", "replication"]);
                let Some(master) = field(&info, "master_port") else {
                    break;
                };
                let want = targets
                    .iter()
                    .find(|(port, _)| u64::from(*port) == master)
                    .map_or(0, |(_, offset)| *offset);
                if field(&info, "slave_repl_offset").unwrap_or(0) >= want {
                    break;
                }
                assert!(
                    started.elapsed() < timeout,
                    "replica {} did not catch up within {timeout:?}",
                    replica.port()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `redis://127.0.0.1:{port}/` of the first live node: enough to reach
    /// the whole cluster.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node")
            .url()
    }

    /// Every node, primaries and replicas.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, to kill or inspect.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The index of the node that is primary for `key`'s slot now.
    pub fn primary_for(&self, key: &str) -> usize {
        let live = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node");
        let slot: u16 = live
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        for line in live.cli(&["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("host:port in CLUSTER NODES");
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .expect("the primary is one of ours");
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// Moves the slot of `key` from its primary to node `to` the way
    /// `redis-cli --cluster reshard` does, `batch` keys per `MIGRATE`:
    /// clients meanwhile meet `ASK` redirects and `TRYAGAIN`, then `MOVED`.
    pub fn move_slot(&self, key: &str, to: usize, batch: usize) {
        let from = &self.nodes[self.primary_for(key)];
        let to = &self.nodes[to];
        let slot = from.cli(&["CLUSTER", "KEYSLOT", key]).trim().to_owned();
        let id_of = |n: &RedisServer| n.cli(&["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id_of(from), id_of(to));
        let ok = |reply: String| assert!(reply.trim() == "OK", "{reply}");
        ok(to.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]));
        ok(from.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]));
        let port = to.port().to_string();
        loop {
            let keys = from.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, &batch.to_string()]);
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(from.cli(&args));
        }
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let reply = node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            assert!(reply.trim() == "OK", "{reply}");
        }
    }

    /// A slot-routing connection for raw commands in assertions.
    pub async fn conn(&self) -> ClusterConnection {
        redis::cluster::ClusterClient::new(
            self.nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.url())
                .collect::<Vec<_>>(),
        )
        .expect("cluster urls")
        .get_async_connection()
        .await
        .expect("connect to the private cluster")
    }
}

/// Which deployment a topology-generic test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One private `redis-server`.
    Single,
    /// A private cluster of three primaries without replicas.
    Cluster,
}

/// A private single server or cluster; see [`on_each_topology!`](crate::on_each_topology).
#[derive(Debug)]
pub enum TestRedis {
    /// One server.
    Single(RedisServer),
    /// Three primaries.
    Cluster(RedisCluster),
}

impl TestRedis {
    /// Starts a private deployment of `topology`.
    pub fn start(topology: Topology) -> Self {
        match topology {
            Topology::Single => Self::Single(RedisServer::start()),
            Topology::Cluster => Self::Cluster(RedisCluster::start(3, 0)),
        }
    }

    /// A URL that reaches it (jobqueue detects the cluster from it).
    pub fn url(&self) -> String {
        match self {
            Self::Single(s) => s.url(),
            Self::Cluster(c) => c.url(),
        }
    }

    /// True for a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A raw connection for assertions (slot-routed on a cluster).
    pub async fn conn(&self) -> RawConn {
        match self {
            Self::Single(s) => RawConn::Single(s.conn().await),
            Self::Cluster(c) => RawConn::Cluster(c.conn().await),
        }
    }

    /// A jobqueue connection.
    pub async fn connection(&self) -> jobqueue::connection::Connection {
        let conn = jobqueue::connection::Connection::connect(self.url().as_str())
            .await
            .expect("connect to the private Redis");
        assert_eq!(conn.is_cluster(), self.is_cluster(), "topology detected");
        conn
    }

    /// A queue `name` with `options` on a fresh connection.
    pub async fn queue(
        &self,
        name: &str,
        options: jobqueue::queue::QueueOptions,
    ) -> jobqueue::queue::Queue {
        jobqueue::queue::Queue::new_with(&self.connection().await, name, options)
            .expect("valid queue options")
    }

    /// A client on a fresh connection.
    pub async fn client(&self) -> jobqueue::Client {
        jobqueue::Client::new(&self.connection().await)
    }
}

/// A raw connection to a single server or a cluster.
#[derive(Clone)]
pub enum RawConn {
    /// To one server.
    Single(MultiplexedConnection),
    /// Slot-routed.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RawConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RawConn::Single",
            Self::Cluster(_) => "RawConn::Cluster",
        })
    }
}

impl ConnectionLike for RawConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Declares each listed `async fn name(redis: TestRedis)` as two tests,
/// `single::name` against one server and `cluster::name` against a
/// three-primary cluster:
///
/// ```text
/// on_each_topology! {
///     #[tokio::test] claim_takes_the_oldest_job,
///     #[tokio::test(flavor = "multi_thread")] two_runners_share_the_work,
/// }
/// ```
#[macro_export]
macro_rules! on_each_topology {
    ($( #[$test:meta] $name:ident ),+ $(,)?) => {
        mod single {
            $(
                #[$test]
                async fn $name() {
                    super::$name($crate::TestRedis::start($crate::Topology::Single)).await
                }
            )+
        }
        mod cluster {
            $(
                #[$test]
                async fn $name() {
                    super::$name($crate::TestRedis::start($crate::Topology::Cluster)).await
                }
            )+
        }
    };
}

/// `redis-cli`: the client beside `REDIS_SERVER` if that is set (the
/// variable [`RedisServer`] honours), `redis-cli` or, beside a
/// `valkey-server`, `valkey-cli`; else `redis-cli` on PATH. The client of
/// the same build creates the cluster of that server.
pub(crate) fn redis_cli_path() -> String {
    let beside = std::env::var_os("REDIS_SERVER").and_then(|server| {
        let server = std::path::PathBuf::from(server);
        ["redis-cli", "valkey-cli"]
            .map(|cli| server.with_file_name(cli))
            .into_iter()
            .find(|path| path.is_file())
    });
    match beside {
        Some(path) => path.to_string_lossy().into_owned(),
        None => "redis-cli".into(),
    }
}
