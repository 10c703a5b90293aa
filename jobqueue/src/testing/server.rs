//! [`RedisServer`]: a private `redis-server` per test, killed on drop.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::port::PortReservation;

/// A private `redis-server` for one test, killed when dropped.
///
/// Code that enqueues or runs jobs is best tested against a real Redis: the
/// Lua scripts, the blocking claims and the key layout are part of what is
/// tested. A shared Redis makes such tests flaky (tests run in parallel and
/// see each other's keys) and dangerous (a test that flushes or kills Redis
/// hits whatever else uses it). So each test starts its own server:
///
/// - it listens on `127.0.0.1` only, on a free port the kernel picks, so
///   tests run in parallel and never reach a Redis they did not start (your
///   development server on 6379 included);
/// - its working directory, [`dir`](Self::dir), is a fresh temporary
///   directory holding its log (`redis.log`), removed on drop;
/// - it persists nothing: no RDB snapshots (`--save ""`), no AOF. Only
///   [`restart`](Self::restart) writes a dump, to bring the data back;
/// - dropping it kills the process (SIGKILL) and waits for it, so no server
///   outlives its test, even one that panicked.
///
/// This is the server jobqueue's own integration tests run against,
/// including its fault injection: [`restart`](Self::restart),
/// [`kill`](Self::kill) and [`pause`](Self::pause).
///
/// # Requirements
///
/// A `redis-server` binary, looked up in this order: the builder's
/// [`binary`](RedisServerBuilder::binary), the `REDIS_SERVER` environment
/// variable, `redis-server` on `PATH` (Debian and Ubuntu: `apt-get install
/// redis-server`; macOS: `brew install redis`). It runs on Unix.
///
/// # Example
///
/// An integration test of a job: enqueue it, run it with a real
/// [`Runner`](crate::Runner), check its result.
///
// Standalone: merged into one binary with the crate's other doctests, the
// runner would also find their `#[job]`s, some of them with equal names.
/// ```standalone_crate
/// use std::time::Duration;
///
/// use jobqueue::queue::JobStatus;
/// use jobqueue::testing::RedisServer;
/// use jobqueue::{job, CancellationToken, Client, Runner};
///
/// #[job]
/// async fn double(n: u64) -> u64 {
///     n * 2
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> jobqueue::Result<()> {
/// let server = RedisServer::start();
/// let client = Client::connect(&server.url()).await?;
///
/// let handle = client.enqueue::<double>(21).await?;
/// assert_eq!(handle.status().await?, Some(JobStatus::Pending));
///
/// let shutdown = CancellationToken::new();
/// let runner = Runner::builder(client).build()?;
/// let running = tokio::spawn(runner.run(shutdown.clone()));
/// assert_eq!(handle.wait(Duration::from_secs(10)).await?, 42);
///
/// shutdown.cancel();
/// running.await.unwrap();
/// // `server` drops at the end of the test: the process is killed and
/// // waited for, its directory removed.
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// Starting panics, failing the test, when no `redis-server` can be run
/// (the message says how to install one) or when the server does not answer
/// within 10 seconds. A missing Redis fails the test rather than skipping
/// it: a suite that passes without running is worse than one that fails.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Holds the port while no server listens on it: before the first
    /// start, and between a kill and a restart.
    reserved: Option<PortReservation>,
    builder: RedisServerBuilder,
}

impl RedisServer {
    /// Starts a server with the defaults (see the [type docs](Self)) and
    /// waits until it answers `PING`.
    ///
    /// This blocks the calling thread while the server starts (a few
    /// milliseconds), which is fine at the top of a `#[tokio::test]`.
    ///
    /// # Panics
    ///
    /// If no `redis-server` can be run, or it does not answer within 10 s.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder, for a server with extra arguments, a password, another
    /// binary or a wrapper command.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The URL to connect to, `redis://127.0.0.1:{port}/`, with the
    /// [`password`](RedisServerBuilder::password) if one was set.
    pub fn url(&self) -> String {
        match &self.builder.password {
            Some(password) => format!(
                "redis://:{}@127.0.0.1:{}/",
                percent_encode(password),
                self.port
            ),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The port the server listens on, on `127.0.0.1`. It stays the same
    /// across [`restart`](Self::restart)s.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory: its log, `redis.log`, and the dump a
    /// [`restart`](Self::restart) writes. Removed when the server drops.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new connection for raw commands, to set up or check what your code
    /// wrote (`redis::cmd("LLEN").arg(key).query_async(&mut conn)`).
    ///
    /// # Cancellation safety
    ///
    /// Safe: a cancelled call drops the connection it was opening, and
    /// sends no command.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached (it was [`kill`](Self::kill)ed, say).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("the server's URL parses")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis-server")
    }

    /// Stops the server, saving its data (`SHUTDOWN SAVE`), and starts it
    /// again on the same port and directory, after a [`kill`](Self::kill)
    /// as well (without the data then). Clients see their connections drop
    /// and, once they reconnect, the data back: the way to test that your
    /// code survives a Redis restart.
    ///
    /// # Panics
    ///
    /// If the server does not come back within 10 s.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The connection drops as the server exits: no reply to read.
            let _ = self.query::<()>(&["SHUTDOWN", "SAVE"]);
            wait_for_exit(&mut child, Duration::from_secs(10));
            self.reserve();
        }
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart: {e}");
        }
    }

    /// Pauses every client of the server for `duration` (`CLIENT PAUSE
    /// <ms> ALL`, Redis 6.2 or newer): commands sent meanwhile wait until
    /// it ends, as with a Redis stalled by a slow command or a fork. The
    /// way to test timeouts and lease renewal.
    ///
    /// # Panics
    ///
    /// If the server refuses the pause.
    pub fn pause(&self, duration: Duration) {
        let ms = duration.as_millis().to_string();
        if let Err(e) = self.query::<()>(&["CLIENT", "PAUSE", &ms, "ALL"]) {
            panic!("CLIENT PAUSE failed: {e}");
        }
    }

    /// Kills the server at once (SIGKILL), without saving, as a crash or an
    /// OOM kill would. Connecting is refused until a
    /// [`restart`](Self::restart), which starts it empty on the same port:
    /// the port stays reserved meanwhile, so no other test's server can
    /// take it.
    pub fn kill(&mut self) {
        if self.kill_child() {
            self.reserve();
        }
    }

    /// True until [`kill`](Self::kill) (and again after a
    /// [`restart`](Self::restart)).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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

    /// Runs one command on a fresh connection, authenticated if a password
    /// was set.
    fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        redis::cmd(args[0]).arg(&args[1..]).query(&mut conn)
    }

    /// Starts `redis-server` on `self.port` and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), SpawnError> {
        let binary = match &self.builder.binary {
            Some(path) => path.clone(),
            None => redis_server_path()?,
        };
        let port = self.port.to_string();
        let dir = self
            .dir
            .path()
            .to_str()
            .ok_or_else(|| SpawnError::Fatal("the temporary directory is not UTF-8".into()))?
            .to_owned();
        let mut argv: Vec<String> = self.builder.wrapper.clone();
        argv.push(binary);
        argv.extend(
            [
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                &dir,
                "--logfile",
                "redis.log",
            ]
            .map(String::from),
        );
        if let Some(password) = &self.builder.password {
            argv.extend(["--requirepass".to_owned(), password.clone()]);
        }
        argv.extend(self.builder.args.iter().cloned());
        // Elsewhere than on Linux a held port cannot be bound by the server
        // (see `PortReservation`): free it, and retry on another port if
        // someone takes it meanwhile.
        #[cfg(not(target_os = "linux"))]
        {
            self.reserved = None;
        }
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                SpawnError::Fatal(format!("cannot run {:?}: {e}. {INSTALL_HINT}", argv[0]))
            })?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self
                .query::<String>(&["PING"])
                .is_ok_and(|pong| pong == "PONG")
            {
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
                return Err(SpawnError::Retry(format!(
                    "redis-server exited with {status}: {stderr} {log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err(SpawnError::Retry(
            "redis-server did not answer PING within 10 s".into(),
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill_child();
    }
}

/// Builds a [`RedisServer`]; see [`RedisServer::builder`].
///
/// ```
/// use jobqueue::testing::RedisServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = RedisServer::builder()
///     .args(["--maxmemory", "64mb", "--maxmemory-policy", "noeviction"])
///     .password("s3cret")
///     .start();
/// // The URL carries the password.
/// let client = jobqueue::Client::connect(&server.url()).await.unwrap();
/// # drop(client);
/// # }
/// ```
#[derive(Default, Clone)]
pub struct RedisServerBuilder {
    args: Vec<String>,
    wrapper: Vec<String>,
    binary: Option<String>,
    password: Option<String>,
}

impl RedisServerBuilder {
    /// Adds `redis-server` arguments, such as `["--maxmemory", "64mb"]` or
    /// a module to load. They come after the defaults (port, bind address,
    /// no persistence), so they can override them: `["--appendonly",
    /// "yes"]` to test with an AOF.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs `redis-server` through a command (a program and its
    /// arguments), which gets the `redis-server` command line after its
    /// own: `["faketime", "-f", "+1d"]` to shift the server's clock,
    /// `["taskset", "-c", "1"]` to pin it to a CPU.
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// Runs this `redis-server` binary instead of `REDIS_SERVER` or the
    /// one on `PATH`: to test against a particular Redis version (or a
    /// compatible server such as Valkey).
    pub fn binary(mut self, path: impl Into<String>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Requires clients to authenticate with `password` (`--requirepass`).
    /// [`RedisServer::url`] carries it, and the server's own commands
    /// (readiness checks, [`restart`](RedisServer::restart),
    /// [`pause`](RedisServer::pause)) send it. Set the password here
    /// rather than in [`args`](Self::args), which those commands know
    /// nothing of.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Starts the server and waits until it answers `PING`. A port taken
    /// by another process in the meantime is retried on a fresh one.
    ///
    /// # Panics
    ///
    /// If no `redis-server` can be run (the message says how to install
    /// one), or it does not start within five tries.
    pub fn start(self) -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = match tempfile::tempdir() {
                Ok(dir) => dir,
                Err(e) => panic!("no temporary directory for redis-server: {e}"),
            };
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
                Err(SpawnError::Fatal(e)) => panic!("{e}"),
                Err(SpawnError::Retry(e)) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }
}

impl fmt::Debug for RedisServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServerBuilder")
            .field("args", &self.args)
            .field("wrapper", &self.wrapper)
            .field("binary", &self.binary)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a start failed: for good, or for a reason another port may fix.
enum SpawnError {
    /// No binary to run: trying again cannot help.
    Fatal(String),
    /// The server exited (its port was taken, say) or did not answer.
    Retry(String),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fatal(e) | Self::Retry(e) => f.write_str(e),
        }
    }
}

const INSTALL_HINT: &str = "jobqueue::testing::RedisServer needs a real Redis: install \
    redis-server (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`), \
    or name the binary with the REDIS_SERVER environment variable or \
    RedisServer::builder().binary(path)";

/// The `redis-server` binary: `REDIS_SERVER` if set, else the one on PATH.
fn redis_server_path() -> Result<String, SpawnError> {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return Ok(path.to_string_lossy().into_owned());
    }
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| p.join("redis-server").is_file())
    });
    if found {
        Ok("redis-server".into())
    } else {
        Err(SpawnError::Fatal(format!(
            "redis-server is not on PATH. {INSTALL_HINT}"
        )))
    }
}

/// Waits up to `limit` for a server told to shut down to exit, polling
/// often (the port is free from its exit until it is reserved again), then
/// kills it.
fn wait_for_exit(child: &mut Child, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `s` with every byte but the URL-safe ones as `%XX`, for the userinfo of
/// a URL.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
