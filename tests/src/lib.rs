//! Test support: private `redis-server` processes.
//!
//! Every test starts its own server on a free loopback port, with its data
//! in a temporary directory, and the server is killed when the handle drops.
//! Tests therefore run in parallel, may restart, pause or kill their server,
//! and never touch a Redis they did not start. A missing `redis-server`
//! fails the test with a message that says what to install.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod cluster;
pub mod floor;
pub use cluster::{RawConn, RedisCluster, TestRedis, Topology};

/// How to start a server: extra `redis-server` arguments and an optional
/// command to wrap it in (for example `faketime`).
#[derive(Debug, Default, Clone)]
pub struct ServerBuilder {
    args: Vec<String>,
    wrapper: Vec<String>,
    binary: Option<String>,
    password: Option<String>,
}

impl ServerBuilder {
    /// Adds `redis-server` arguments, such as `["--appendonly", "yes"]`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs `redis-server` through `wrapper` (program and its arguments).
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// Runs this binary instead of the `redis-server` found on PATH.
    pub fn binary(mut self, path: impl Into<String>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts a server started with `--requirepass password`: the harness
    /// authenticates its own checks with it.
    pub fn start_with_auth(mut self, password: &str) -> RedisServer {
        self.password = Some(password.to_owned());
        self.start()
    }

    /// Starts the server and waits until it answers PING.
    pub fn start(self) -> RedisServer {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut last_error = String::new();
        let mut dir = dir;
        for _ in 0..5 {
            let reserved = PortReservation::new();
            let mut server = RedisServer {
                port: reserved.port(),
                dir,
                child: None,
                reserved: Some(reserved),
                builder: self.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    dir = server.into_dir();
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }
}

/// A private `redis-server`, killed on drop.
///
/// While no server listens on its port (before the first start, between a
/// kill and a restart) the port is held by a [`PortReservation`], so a test
/// starting a server beside this one can never be handed the port, and a
/// restart never finds it taken or, worse, finds another test's server on it.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    reserved: Option<PortReservation>,
    builder: ServerBuilder,
}

/// A loopback port held for a server that does not listen on it right now.
///
/// The socket is bound with `SO_REUSEADDR` but never listens. So the kernel
/// hands the port to no other `bind` to port 0 (every test picks its ports
/// that way), a client connecting to it is refused exactly as at a closed
/// port, and `redis-server`, which binds with `SO_REUSEADDR` as well, can
/// still bind and listen on it: Linux lets sockets with `SO_REUSEADDR` share
/// a port as long as at most one of them listens. Dropping it frees the port.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    _socket: tokio::net::TcpSocket,
}

impl PortReservation {
    /// Holds a free loopback port the kernel picks.
    pub fn new() -> Self {
        let reservation = Self::bind(0).expect("a free loopback port");
        assert_ne!(reservation.port, 0);
        reservation
    }

    /// Holds `port`, or `None` if something else is bound to it.
    pub fn of(port: u16) -> Option<Self> {
        Self::bind(port).ok()
    }

    fn bind(port: u16) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            port,
            _socket: socket,
        })
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for PortReservation {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisServer {
    /// Starts a server with no persistence.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for servers with extra arguments.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// `redis://127.0.0.1:{port}/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An async connection for raw commands in assertions.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis-server")
    }

    /// Stops the server, saving its data to disk, and starts it again on the
    /// same port and directory: clients see their connections drop and the
    /// data come back.
    pub fn restart(&mut self) {
        self.command(&["SHUTDOWN", "SAVE"]);
        self.wait_for_exit();
        self.reserve();
        self.spawn().expect("redis-server restarts");
    }

    /// Pauses every client of the server for `duration` (`CLIENT PAUSE … ALL`):
    /// commands sent meanwhile wait for the pause to end.
    pub fn pause(&self, duration: Duration) {
        let ms = duration.as_millis().to_string();
        assert_eq!(self.command(&["CLIENT", "PAUSE", &ms, "ALL"]), "+OK");
    }

    /// Kills the server at once (SIGKILL), without saving. Its port stays
    /// reserved for a [`restart`](Self::restart): connecting to it is
    /// refused meanwhile, as at any dead server.
    pub fn kill(&mut self) {
        if self.kill_child() {
            self.reserve();
        }
    }

    /// SIGKILLs the server and reaps it; false if none was running.
    fn kill_child(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Holds the port while no server listens on it (see [`PortReservation`]).
    fn reserve(&mut self) {
        if self.reserved.is_none() {
            self.reserved = PortReservation::of(self.port);
        }
    }

    /// True until the server is killed (or stopped by a restart).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs `redis-cli -p PORT args…` and returns its whole output, for
    /// replies of many lines (`CLUSTER NODES`, `INFO`).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(cluster::redis_cli_path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli (package redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`command`](Self::command), authenticating first.
    pub fn command_with_auth(&self, password: &str, args: &[&str]) -> String {
        self.raw(Some(password), args)
    }

    /// Sends one command over a fresh connection and returns the raw reply
    /// line (for commands that do not need a client library).
    pub fn command(&self, args: &[&str]) -> String {
        self.raw(self.builder.password.as_deref(), args)
    }

    fn raw(&self, password: Option<&str>, args: &[&str]) -> String {
        let mut stream = match TcpStream::connect(("127.0.0.1", self.port)) {
            Ok(s) => s,
            Err(e) => return format!("-connect: {e}"),
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let encode = |args: &[&str]| {
            let mut req = format!("*{}\r\n", args.len());
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            req
        };
        let mut req = String::new();
        if let Some(password) = password {
            req.push_str(&encode(&["AUTH", password]));
        }
        req.push_str(&encode(args));
        if stream.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if password.is_some() {
            let _ = reader.read_line(&mut line);
            line.clear();
        }
        let _ = reader.read_line(&mut line);
        line.trim_end().to_owned()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut argv: Vec<String> = self.builder.wrapper.clone();
        argv.push(match &self.builder.binary {
            Some(path) => path.clone(),
            None => redis_server_path(),
        });
        argv.extend(
            [
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                self.dir.path().to_str().expect("utf-8 temp dir"),
                "--logfile",
                "redis.log",
            ]
            .map(String::from),
        );
        argv.extend(self.builder.args.iter().cloned());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}. {INSTALL_HINT}", argv[0]))?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.command(&["PING"]) == "+PONG" {
                // The server listens on the port now: it holds it itself.
                self.reserved = None;
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.take().and_then(|mut c| c.stderr.take()) {
                    let _ = e.read_to_string(&mut stderr);
                }
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(format!("redis-server exited with {status}: {stderr} {log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err("redis-server did not answer PING within 10 s".into())
    }

    /// Waits for a server told to shut down to exit, polling often: from its
    /// exit until [`restart`](Self::restart) reserves the port, it is free.
    fn wait_for_exit(&mut self) {
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn into_dir(mut self) -> TempDir {
        self.kill_child();
        let dir = tempfile::tempdir().expect("temporary directory");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_child();
    }
}

const INSTALL_HINT: &str = "The tests need a real Redis: install redis-server \
    (`apt-get install redis-server`, or run scripts/test, which does) or set REDIS_SERVER";

/// The `redis-server` binary: `REDIS_SERVER` if set, else the one on PATH.
pub(crate) fn redis_server_path() -> String {
    if let Ok(path) = std::env::var("REDIS_SERVER") {
        return path;
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file()))
        .unwrap_or(false);
    assert!(found, "redis-server is not on PATH. {INSTALL_HINT}");
    "redis-server".into()
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
