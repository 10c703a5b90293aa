//! Test support: private `redis-server` processes.
//!
//! Every test starts its own server on a free loopback port, with its data
//! in a temporary directory, and the server is killed when the handle drops.
//! Tests therefore run in parallel, may restart, pause or kill their server,
//! and never touch a Redis they did not start. A missing `redis-server`
//! fails the test with a message that says what to install.
//!
//! The server is jobqueue's public [`jobqueue::testing::RedisServer`], the
//! one users get for their own tests; what only these tests need on top of
//! it (raw replies, `redis-cli`) is in [`ServerExt`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use jobqueue::testing::{PortReservation, RedisServer, RedisServerBuilder};

mod cluster;
pub mod floor;
pub use cluster::{RawConn, RedisCluster, TestRedis, Topology};

/// What these tests do with a [`RedisServer`] beyond its public API: read
/// replies as the wire and `redis-cli` show them, without a client library
/// (and from code that is not async). Not public API because users have
/// [`RedisServer::conn`] for raw commands.
pub trait ServerExt {
    /// Runs `redis-cli -p PORT args…` and returns its whole output, for
    /// replies of many lines (`CLUSTER NODES`, `INFO`).
    fn cli(&self, args: &[&str]) -> String;

    /// Sends one command over a fresh connection, without authenticating,
    /// and returns the first line of the raw reply (`+OK`, `:3`, `-ERR …`),
    /// or `-connect: …` if the server cannot be reached.
    fn command(&self, args: &[&str]) -> String;
}

impl ServerExt for RedisServer {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(cluster::redis_cli_path())
            .arg("-p")
            .arg(self.port().to_string())
            .args(args)
            .output()
            .expect("run redis-cli (package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, args: &[&str]) -> String {
        let mut stream = match TcpStream::connect(("127.0.0.1", self.port())) {
            Ok(s) => s,
            Err(e) => return format!("-connect: {e}"),
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if stream.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        line.trim_end().to_owned()
    }
}

/// [`ServerExt`]'s counterpart for the builder.
pub trait ServerBuilderExt {
    /// Starts a server that requires `password` (see
    /// [`RedisServerBuilder::password`]).
    fn start_with_auth(self, password: &str) -> RedisServer;
}

impl ServerBuilderExt for RedisServerBuilder {
    fn start_with_auth(self, password: &str) -> RedisServer {
        self.password(password).start()
    }
}

/// Polls `check` every 10 ms until it returns true or `timeout` passes;
/// returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `q`'s stats every 10 ms until `done` holds or `timeout` passes;
/// returns whether it held. A failed read (Redis restarting, a cluster
/// failing over) counts as not yet.
pub async fn stats_reach(
    q: &jobqueue::queue::Queue,
    timeout: Duration,
    done: impl Fn(&jobqueue::queue::Stats) -> bool,
) -> bool {
    eventually(timeout, || async {
        q.stats().await.is_ok_and(|s| done(&s))
    })
    .await
}

/// A queue named `name` on `server`, with `options`.
pub async fn queue(
    server: &RedisServer,
    name: &str,
    options: jobqueue::queue::QueueOptions,
) -> jobqueue::queue::Queue {
    let conn = jobqueue::connection::Connection::connect(server.url().as_str())
        .await
        .expect("connect to the private redis-server");
    jobqueue::queue::Queue::new_with(&conn, name, options).expect("valid queue options")
}

/// Writes a job exactly as the reference enqueue does: a hash with the
/// reference's six fields, then `LPUSH` of the id onto pending.
pub async fn reference_enqueue(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
    payload: &str,
) {
    let keys = jobqueue::queue::Keys::new(queue, jobqueue::queue::KeyLayout::Reference)
        .expect("queue name");
    reference_enqueue_at(conn, &keys, id, payload).await;
}

/// [`reference_enqueue`] to the keys of `keys` (any layout).
pub async fn reference_enqueue_at(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &jobqueue::queue::Keys,
    id: &str,
    payload: &str,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
        .to_string();
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(keys.job(id))
        .arg(&[
            ("id", id),
            ("payload", payload),
            ("status", "pending"),
            ("attempts", "0"),
            ("enqueued_at_ms", now.as_str()),
            ("claim_token", ""),
        ])
        .cmd("LPUSH")
        .arg(keys.pending())
        .arg(id)
        .query_async(conn)
        .await
        .expect("reference enqueue");
}

/// The fields of a job hash.
pub async fn hash(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
) -> std::collections::HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("HGETALL")
}

/// `ZSCORE key member`: the member's score, if it is in the sorted set.
pub async fn zscore(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    member: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async(conn)
        .await
        .expect("ZSCORE")
}

/// `INFO commandstats` of the server behind `conn`: a line per command run
/// since the server started or since `CONFIG RESETSTAT`.
pub async fn commandstats(conn: &mut impl redis::aio::ConnectionLike) -> String {
    redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats")
}

/// How many times `command` (lowercase, as `INFO commandstats` names it)
/// ran, read from the text of [`commandstats`]; 0 when it never ran.
pub fn command_calls(commandstats: &str, command: &str) -> u64 {
    commandstats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// A whole list, head first.
pub async fn list(conn: &mut impl redis::aio::ConnectionLike, key: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("LRANGE")
}

/// A private server, a queue `name` on it with `options`, and a raw connection.
pub async fn setup(
    name: &str,
    options: jobqueue::queue::QueueOptions,
) -> (
    RedisServer,
    jobqueue::queue::Queue,
    redis::aio::MultiplexedConnection,
) {
    let server = RedisServer::start();
    let q = queue(&server, name, options).await;
    let conn = server.conn().await;
    (server, q, conn)
}

/// [`setup`] on `redis`: a queue `name` with `options` and a raw connection.
pub async fn setup_on<'a>(
    redis: &'a TestRedis,
    name: &str,
    options: jobqueue::queue::QueueOptions,
) -> (&'a TestRedis, jobqueue::queue::Queue, RawConn) {
    let q = redis.queue(name, options).await;
    let conn = redis.conn().await;
    (redis, q, conn)
}

/// `HSET key field value …`
pub async fn hset(conn: &mut impl redis::aio::ConnectionLike, key: &str, fields: &[(&str, &str)]) {
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg(fields)
        .query_async(conn)
        .await
        .expect("HSET");
}

/// Runs one raw command whose reply is ignored.
pub async fn exec(conn: &mut impl redis::aio::ConnectionLike, args: &[&str]) {
    let _: redis::Value = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(conn)
        .await
        .expect("raw command");
}

/// The number of leases held (`ZCARD queue:jobs:leases`).
pub async fn lease_count(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("ZCARD")
        .arg("queue:jobs:leases")
        .query_async(conn)
        .await
        .expect("ZCARD")
}

/// Runs `runner` in the background; returns its shutdown token and task.
pub fn start_runner(
    runner: jobqueue::Runner,
) -> (jobqueue::CancellationToken, tokio::task::JoinHandle<()>) {
    let token = jobqueue::CancellationToken::new();
    let task = tokio::spawn({
        let token = token.clone();
        async move { runner.run(token).await }
    });
    (token, task)
}

/// Cancels a runner started with [`start_runner`] and waits for it to end.
pub async fn stop_runner(token: jobqueue::CancellationToken, task: tokio::task::JoinHandle<()>) {
    token.cancel();
    task.await.expect("the runner task ends cleanly");
}

/// `base` followed by a number no other call in this process returns: a key
/// a test carries in its payloads so that what its handlers record is its
/// own, even beside other tests on threads of the same process (`cargo test`).
pub fn unique_key(base: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{base}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// CPU time (user + system) process `pid` has used, from /proc (Linux).
pub fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    cpu_time_in(&stat)
}

/// The CPU time used by the threads of this process named `name` (a
/// runtime's threads, see `tokio::runtime::Builder::thread_name`) from
/// [`start`](Self::start) on, not counting what other tests' threads use.
#[derive(Debug)]
pub struct CpuOfThreads {
    name: String,
    start: BTreeMap<String, Duration>,
}

impl CpuOfThreads {
    /// Starts measuring (Linux keeps 15 bytes of a thread's name, so `name`
    /// must fit in them).
    pub fn start(name: &str) -> Self {
        assert!(name.len() <= 15, "Linux keeps 15 bytes of {name:?}");
        Self {
            name: name.to_owned(),
            start: Self::threads(name),
        }
    }

    /// CPU time the threads used since [`start`](Self::start): each live
    /// thread's time less what it had used then (threads started since count
    /// in full). Fails if no thread is named so: nothing would be measured.
    pub fn used(&self) -> Duration {
        let now = Self::threads(&self.name);
        assert!(!now.is_empty(), "no thread is named {:?}", self.name);
        now.into_iter()
            .map(|(tid, now)| now.saturating_sub(self.start.get(&tid).copied().unwrap_or_default()))
            .sum()
    }

    /// CPU time used by each thread named `name`, by thread id, from /proc.
    fn threads(name: &str) -> BTreeMap<String, Duration> {
        let mut times = BTreeMap::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            // A thread may end while it is listed.
            let Ok(task) = task else { continue };
            let path = task.path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            if comm.trim_end() == name {
                let tid = task.file_name().to_string_lossy().into_owned();
                times.insert(tid, cpu_time_in(&stat));
            }
        }
        times
    }
}

/// The user + system CPU time in the text of a /proc `stat` file.
fn cpu_time_in(stat: &str) -> Duration {
    Duration::from_millis(cpu_ticks_in(stat) * 10) // USER_HZ is 100 on Linux
}

/// The user + system CPU time, in clock ticks, in the text of a /proc
/// `stat` file (of a process or a thread).
pub fn cpu_ticks_in(stat: &str) -> u64 {
    // The fields after the command name, which may hold spaces: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    ticks(11) + ticks(12)
}

/// A `Write` that keeps what tracing writes, for assertions on logs.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` on a fresh single-threaded runtime with a subscriber that
/// keeps every log line; returns what `body` returned and the logs.
pub fn with_captured_logs<T>(body: impl std::future::Future<Output = T>) -> (T, String) {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(body)
    });
    let logs =
        String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("UTF-8 logs");
    (value, logs)
}

/// Enqueues a job carrying `payload` that is due in an hour, so it waits in
/// the scheduled set until a test makes it due (`ZADD … XX 0 id`); its id.
pub async fn enqueue_due_in_an_hour(q: &jobqueue::queue::Queue, payload: &str) -> String {
    let job = jobqueue::queue::NewJob::new(payload)
        .expect("a JSON payload")
        .options(jobqueue::client::EnqueueOptions::new().delay(Duration::from_secs(3600)));
    q.submit(job).await.expect("enqueue a scheduled job")
}
