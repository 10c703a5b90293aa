//! `scripts/demo` as a user runs it. The demo's "Reset queue" button purges
//! its queue, `jobs` by default, which is also `#[job]`'s default queue: so
//! with no Redis named, the script runs the demo on a private redis-server
//! and leaves the Redis on the default address alone, and a Redis named with
//! `REDIS_URL` or `--redis-host`/`--redis-port` is the one the demo uses.
//!
//! The machine's own Redis is never involved: a private server of the test
//! stands in for "the Redis on the default address"
//! (`JOBQUEUE_DEMO_DEFAULT_REDIS`), and the script runs the demo binary
//! Cargo built for these tests (`JOBQUEUE_DEMO_BIN`) instead of building one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobqueue_tests::{PortReservation, RedisServer, ServerExt};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(20);

/// `scripts/demo` running in a process group of its own (as in a terminal,
/// where Ctrl-C signals the whole group); the group is SIGKILLed on drop if
/// the test did not stop it.
struct Script {
    child: Child,
    /// The script's stdout, a line at a time.
    lines: Receiver<String>,
    /// Everything it and its children wrote to stdout and stderr so far.
    output: Arc<Mutex<String>>,
}

impl Script {
    /// Starts `scripts/demo args` with the Redis on "the default address"
    /// being `default_redis` and no `REDIS_URL` unless `redis_url` is given.
    fn start(args: &[&str], default_redis: u16, redis_url: Option<&str>) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo");
        let mut command = Command::new(script);
        command
            .args(args)
            .env("JOBQUEUE_DEMO_BIN", env!("CARGO_BIN_EXE_jobqueue-demo"))
            .env(
                "JOBQUEUE_DEMO_DEFAULT_REDIS",
                format!("127.0.0.1:{default_redis}"),
            )
            .env_remove("REDIS_URL")
            .env_remove("JOBQUEUE_DASHBOARD_TOKEN")
            // The demo's default filter (its runner logs at info), and
            // colour left to the demo: its output is a pipe here.
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        let mut child = command.spawn().expect("scripts/demo runs");
        let output = Arc::new(Mutex::new(String::new()));
        let (send, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        let kept = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = send.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let kept = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                kept.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            lines,
            output,
        }
    }

    /// The next stdout line starting with `prefix` (earlier lines skipped).
    fn line_starting(&self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "no line starting with {prefix:?} ({e}); output so far:\n{}",
                    self.output()
                ),
            }
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends `signal` (`INT`, `TERM`) to the script alone, or with `group`
    /// to its whole process group, as Ctrl-C in a terminal does; then waits
    /// for the script to exit.
    fn stop(&mut self, signal: &str, group: bool) {
        let pid = self.child.id();
        let target = if group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {target}");
        let deadline = Instant::now() + TIMEOUT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "scripts/demo did not exit on SIG{signal}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request to the demo; the JSON it answers.
fn demo_api(port: u16, method: &str, path: &str, body: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The first line of a server's reply to one command, over a fresh
/// connection: for a server known only by its port.
fn command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Connections `server` has accepted since it started, the one asking
/// included.
fn connections_received(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap_or_else(|| panic!("no connection count in {info}"))
        .trim()
        .parse()
        .unwrap()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_closed(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn with_no_redis_named_the_demo_runs_on_a_private_server_and_never_touches_the_default() {
    let default_redis = RedisServer::start();
    let connections_before = connections_received(&default_redis);
    let http = PortReservation::new();
    let port = http.port();
    let mut script = Script::start(&["--port", &port.to_string()], default_redis.port(), None);

    let banner = script.line_starting("scripts/demo: using ");
    let private: u16 = banner
        .strip_prefix("scripts/demo: using a private redis-server on 127.0.0.1:")
        .and_then(|rest| rest.strip_suffix(" (data discarded at exit)"))
        .unwrap_or_else(|| panic!("the banner names a private server: {banner}"))
        .parse()
        .unwrap();
    assert_ne!(private, default_redis.port());
    script.line_starting(&format!(
        "Redis job-queue demo server listening on http://127.0.0.1:{port}"
    ));
    drop(http);
    assert_eq!(
        script.line_starting("Using Redis at "),
        format!("Using Redis at 127.0.0.1:{private}")
    );

    // The demo at work: a batch enqueued, two workers, every job completed.
    demo_api(port, "POST", "/enqueue", "count=5");
    demo_api(port, "POST", "/workers/start", "size=2&work_latency_ms=0");
    wait_until("five completions", || {
        demo_api(port, "GET", "/stats", "")["completed_total"] == 5
    });
    let keys = command(private, &["DBSIZE"]);
    assert!(
        keys.strip_prefix(':').unwrap().parse::<u64>().unwrap() > 0,
        "the demo's keys are on the private server: DBSIZE {keys}"
    );

    // Ctrl-C: the demo, its private server and the script all end.
    script.stop("INT", true);
    wait_until("the demo to close its port", || is_closed(port));
    wait_until("the private redis-server to exit", || is_closed(private));

    let output = script.output();
    assert!(
        output.contains("runner started"),
        "the demo's logs are in the output:\n{output}"
    );
    assert!(
        !output.contains('\x1b'),
        "logs written to a pipe carry no colour codes:\n{output:?}"
    );

    // Not one connection reached the Redis on the default address (but the
    // two of this test asking), so not one command, and it holds no key.
    assert_eq!(
        connections_received(&default_redis),
        connections_before + 1,
        "the demo connected to the Redis on the default address"
    );
    assert_eq!(default_redis.command(&["DBSIZE"]), ":0");
}

#[test]
fn a_redis_named_with_redis_url_or_host_and_port_is_the_one_the_demo_uses() {
    let named = RedisServer::start();
    // "The default address" is a closed port here: the demo must use the
    // Redis it was named, and there is nothing else it could reach.
    let closed = PortReservation::new();
    let url = format!("redis://127.0.0.1:{}/", named.port());

    // REDIS_URL; the script alone is stopped (SIGTERM), and takes the demo
    // down with it.
    let http = PortReservation::new();
    let port = http.port();
    let mut script = Script::start(&["--port", &port.to_string()], closed.port(), Some(&url));
    assert_eq!(
        script.line_starting("scripts/demo: using "),
        format!("scripts/demo: using the Redis you named: {url}")
    );
    assert_eq!(
        script.line_starting("scripts/demo: the page's"),
        "scripts/demo: the page's \"Reset queue\" button purges queue 'jobs' there"
    );
    script.line_starting("Redis job-queue demo server listening");
    drop(http);
    assert_eq!(
        script.line_starting("Using Redis at "),
        format!("Using Redis at {url}")
    );
    let enqueued = demo_api(port, "POST", "/enqueue", "count=3");
    assert_eq!(enqueued["stats"]["enqueued_total"], 3);
    assert_ne!(named.command(&["DBSIZE"]), ":0", "the jobs are on {url}");
    script.stop("TERM", false);
    wait_until("the demo to close its port", || is_closed(port));

    // --redis-port alone: the host is the default address's.
    let http = PortReservation::new();
    let port = http.port();
    let mut script = Script::start(
        &[
            "--port",
            &port.to_string(),
            "--redis-port",
            &named.port().to_string(),
        ],
        closed.port(),
        None,
    );
    assert_eq!(
        script.line_starting("scripts/demo: using "),
        format!("scripts/demo: using the Redis you named: {url}")
    );
    script.line_starting("Redis job-queue demo server listening");
    drop(http);
    let enqueued = demo_api(port, "POST", "/enqueue", "count=2");
    assert_eq!(
        enqueued["stats"]["enqueued_total"], 5,
        "the same Redis as before: its three jobs and these two"
    );
    script.stop("INT", true);
    wait_until("the demo to close its port", || is_closed(port));
}
