//! The demo server as a process: its endpoints, their parameters, clamps and
//! JSON shapes as the reference gives them; then its page, driven in headless
//! Chromium.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobqueue_tests::{PortReservation, RedisServer};
use serde_json::{Value, json};

/// The demo server, killed on drop.
struct Demo {
    child: Child,
    port: u16,
    /// The HTTP port, held while the demo lives so that no server another
    /// test starts is handed it first (the demo binds with `SO_REUSEADDR`,
    /// so it listens on a port this side holds).
    _reserved: PortReservation,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free now, for a process that may not bind with `SO_REUSEADDR`
/// (chromedriver) or for a name; servers of ours get a [`PortReservation`].
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn demo(redis: &RedisServer, visibility_ms: u64) -> Demo {
    let reserved = PortReservation::new();
    let port = reserved.port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobqueue-demo"))
        .args([
            "--port",
            &port.to_string(),
            "--redis-host",
            "127.0.0.1",
            "--redis-port",
        ])
        .arg(redis.port().to_string())
        .args(["--visibility-ms", &visibility_ms.to_string()])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo binary runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    assert_eq!(
        banner[0],
        format!("Redis job-queue demo server listening on http://127.0.0.1:{port}")
    );
    assert_eq!(
        banner[1],
        format!("Using Redis at 127.0.0.1:{}", redis.port())
    );
    assert_eq!(banner[2], format!("Visibility timeout: {visibility_ms} ms"));
    Demo {
        child,
        port,
        _reserved: reserved,
    }
}

/// One HTTP/1.1 request; returns the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_of(port: u16, method: &str, path: &str, body: &str) -> Value {
    let (status, text) = http(port, method, path, body, &[]);
    assert_eq!(status, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// The reference's stats object T: every key, as a number.
fn assert_stats_shape(t: &Value) {
    for key in [
        "enqueued_total",
        "completed_total",
        "failed_total",
        "reclaimed_total",
        "pending_depth",
        "processing_depth",
        "completed_depth",
        "failed_depth",
        "visibility_ms",
        "workers_running",
        "worker_processed_total",
        "work_latency_ms",
    ] {
        assert!(t[key].is_u64(), "{key} is {:?} in {t}", t[key]);
    }
    assert!(t["fail_rate"].is_f64() && t["hang_rate"].is_f64(), "{t}");
}

fn wait_for(mut check: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_endpoint_answers_with_the_references_parameters_and_shapes() {
    let redis = RedisServer::start();
    let d = demo(&redis, 1000);
    let p = d.port;

    let t = json_of(p, "GET", "/stats", "");
    assert_stats_shape(&t);
    assert_eq!(
        (
            t["visibility_ms"].as_u64(),
            t["workers_running"].as_u64(),
            t["work_latency_ms"].as_u64()
        ),
        (Some(1000), Some(0), Some(400))
    );

    let r = json_of(
        p,
        "POST",
        "/enqueue",
        "kind=webhook&recipient=ops%40example.com&count=3",
    );
    assert_eq!(r["enqueued"].as_array().unwrap().len(), 3);
    assert_stats_shape(&r["stats"]);
    let jobs = json_of(p, "GET", "/jobs", "");
    let pending = jobs["pending"].as_array().unwrap();
    assert_eq!(
        pending[0]["payload"],
        json!({"kind": "webhook", "recipient": "ops@example.com", "n": 1})
    );
    assert_eq!(pending[2]["payload"]["n"], 3, "oldest first");
    assert_eq!(
        (
            pending[0]["status"].as_str(),
            pending[0]["attempts"].as_u64()
        ),
        (Some("pending"), Some(0))
    );
    assert!(pending[0].get("result").is_none() && pending[0].get("last_error").is_none());
    for list in ["processing", "completed", "failed"] {
        assert!(jobs[list].is_array(), "{list}");
    }
    // Defaults and clamps: empty kind and recipient, count out of range or not a number.
    let r = json_of(p, "POST", "/enqueue", "kind=&recipient=&count=999");
    assert_eq!(r["enqueued"].as_array().unwrap().len(), 50);
    let r = json_of(p, "POST", "/enqueue?count=abc", "");
    assert_eq!(r["enqueued"].as_array().unwrap().len(), 1);
    let newest = json_of(p, "GET", "/jobs", "")["pending"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        newest["payload"],
        json!({"kind": "email", "recipient": "user@example.com", "n": 1})
    );

    let t = json_of(
        p,
        "POST",
        "/workers/start",
        "size=20&work_latency_ms=0&fail_rate=0&hang_rate=0",
    );
    assert_eq!(t["workers_running"], 8, "pool size clamped to 8");
    wait_for(
        || json_of(p, "GET", "/stats", "")["completed_total"] == 54,
        "54 completions",
    );
    let t = json_of(
        p,
        "POST",
        "/workers/configure",
        "fail_rate=2&hang_rate=-1&work_latency_ms=oops",
    );
    assert_eq!(
        (
            t["fail_rate"].as_f64(),
            t["hang_rate"].as_f64(),
            t["work_latency_ms"].as_u64()
        ),
        (Some(1.0), Some(0.0), Some(0))
    );
    let t = json_of(p, "POST", "/workers/stop", "");
    assert_eq!(t["workers_running"], 0);
    assert_eq!(t["worker_processed_total"], 54);
    let completed = json_of(p, "GET", "/jobs", "")["completed"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(completed.len(), 10, "the ten most recent");
    assert_eq!(completed[0]["result"]["attempts"], 1);
    assert!(
        completed[0]["result"]["worker"]
            .as_str()
            .unwrap()
            .starts_with("worker-")
    );

    let r = json_of(p, "POST", "/reclaim", "");
    assert_eq!(r["reclaimed"], json!([]));
    assert_stats_shape(&r["stats"]);
    let r = json_of(p, "POST", "/reset", "");
    assert_eq!(
        (
            r["stats"]["completed_total"].as_u64(),
            r["stats"]["worker_processed_total"].as_u64()
        ),
        (Some(0), Some(0))
    );

    assert_eq!(
        http(p, "GET", "/enqueue", "", &[]),
        (405, "method not allowed\n".to_owned())
    );
    assert_eq!(
        http(p, "GET", "/nope", "", &[]),
        (404, "404 page not found\n".to_owned())
    );
    let (status, page) = http(p, "GET", "/", "", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Redis Job Queue Demo") && page.contains("const DEMO = true"));
    assert_eq!(http(p, "GET", "/index.html", "", &[]).0, 200);
    let (status, _) = http(
        p,
        "POST",
        "/enqueue",
        "count=1",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(status, 403, "a cross-site form post is refused");
}

#[test]
fn the_demo_refuses_to_start_without_redis() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    redis.kill();
    let out = Command::new(env!("CARGO_BIN_EXE_jobqueue-demo"))
        .args([
            "--port",
            &free_port().to_string(),
            "--redis-host",
            "127.0.0.1",
            "--redis-port",
            &port.to_string(),
        ])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("could not reach Redis at 127.0.0.1:{port}:")),
        "{err}"
    );
}

/// ChromeDriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser program: the path in `var` if set, else where Debian's
/// packages put it (`default`). Fedora and macOS install them elsewhere;
/// scripts/test says where.
fn browser_program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn chromium() -> String {
    browser_program("CHROMIUM", "/usr/bin/chromium")
}

fn chromedriver() -> Driver {
    let driver = browser_program("CHROMEDRIVER", "/usr/bin/chromedriver");
    for (path, var) in [(&driver, "CHROMEDRIVER"), (&chromium(), "CHROMIUM")] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: the browser test needs chromium and chromedriver \
             (Debian's chromium and chromium-driver, which scripts/test installs), \
             or {var} set to where it is"
        );
    }
    let port = free_port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

mod browser {
    use fantoccini::{Client, ClientBuilder, Locator};

    use super::*;

    pub(super) async fn open(driver: &Driver, profile: &std::path::Path) -> Client {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1600",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({ "goog:chromeOptions": { "binary": chromium(), "args": args } });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object literal")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a Chromium session")
    }

    pub(super) async fn set(c: &Client, id: &str, value: &str) {
        let input = c.find(Locator::Id(id)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }

    pub(super) async fn click(c: &Client, id: &str) {
        c.find(Locator::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// An element's text, read in one script: the page re-renders its lists
    /// and stats on every refresh, so element handles go stale.
    pub(super) async fn text(c: &Client, id: &str) -> String {
        let value = c
            .execute(
                "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
                vec![json!(id)],
            )
            .await
            .unwrap();
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Polls the page until `id`'s text satisfies `check`.
    pub(super) async fn until(
        c: &Client,
        id: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let t = text(c, id).await;
            if check(&t) {
                return t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "#{id} never showed {what}; last {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_in_a_real_browser() {
    let redis = RedisServer::start();
    let d = demo(&redis, 1000);
    let driver = chromedriver();
    let profile = tempfile_dir();
    let c = browser::open(&driver, &profile).await;
    c.goto(&format!("http://127.0.0.1:{}/", d.port))
        .await
        .unwrap();
    assert_eq!(c.title().await.unwrap(), "jobqueue");
    browser::until(&c, "stat-visibility_ms", "the stats", |t| t == "1000").await;

    // Enqueue a batch; start two fast workers; watch completed rise.
    browser::set(&c, "count", "6").await;
    browser::click(&c, "enqueue-btn").await;
    browser::until(&c, "status", "the enqueue", |t| t == "Enqueued 6 job(s).").await;
    browser::until(&c, "count-pending", "six pending", |t| t == "6").await;
    browser::set(&c, "workers", "2").await;
    browser::set(&c, "latency", "50").await;
    browser::click(&c, "start-btn").await;
    browser::until(&c, "stat-completed_total", "six completed", |t| t == "6").await;
    browser::until(&c, "count-completed", "the completed list", |t| t == "6").await;

    // Every worker hangs: the jobs stay in processing.
    browser::set(&c, "hang-rate", "1").await;
    browser::click(&c, "start-btn").await;
    browser::set(&c, "count", "3").await;
    browser::click(&c, "enqueue-btn").await;
    browser::until(&c, "count-processing", "three stuck jobs", |t| t == "3").await;
    browser::click(&c, "stop-btn").await;
    browser::until(&c, "stat-workers_running", "the stop", |t| t == "0").await;
    tokio::time::sleep(Duration::from_millis(1300)).await; // past the 1000 ms visibility
    assert_eq!(
        browser::text(&c, "count-processing").await,
        "3",
        "no automatic sweep in the demo by default"
    );
    browser::click(&c, "reclaim-btn").await;
    browser::until(&c, "status", "the reclaim", |t| t == "Reclaimed 3 job(s).").await;
    browser::until(&c, "count-pending", "the reclaimed jobs", |t| t == "3").await;
    browser::until(&c, "count-processing", "an empty processing list", |t| {
        t == "0"
    })
    .await;

    // A payload holding markup shows as text and runs nothing.
    browser::set(
        &c,
        "recipient",
        "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=1</script>",
    )
    .await;
    browser::set(&c, "count", "1").await;
    browser::click(&c, "enqueue-btn").await;
    let list = browser::until(&c, "list-pending", "the markup payload", |t| {
        t.contains("<script>")
    })
    .await;
    assert!(list.contains("<img src=x"), "{list}");
    let pwned = c.execute("return window.pwned === undefined && document.querySelectorAll('#list-pending img, #list-pending script').length === 0", vec![]).await.unwrap();
    assert_eq!(pwned, json!(true), "markup from a payload was interpreted");

    let png = c.screenshot().await.unwrap();
    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/demo-screenshot.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    c.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}

/// A fresh directory for the browser profile.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jobqueue-chromium-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn off_loopback_the_demo_needs_a_token_and_then_requires_it() {
    let redis = RedisServer::start();
    let reserved = PortReservation::new();
    let port = reserved.port();
    let base = ["--redis-host", "127.0.0.1", "--redis-port"];
    let refused = Command::new(env!("CARGO_BIN_EXE_jobqueue-demo"))
        .args(base)
        .arg(redis.port().to_string())
        .args(["--host", "0.0.0.0", "--port", &port.to_string()])
        .env_remove("REDIS_URL")
        .env_remove("JOBQUEUE_DASHBOARD_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("token"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_jobqueue-demo"))
        .args(base)
        .arg(redis.port().to_string())
        .args(["--port", &port.to_string(), "--token", "letmein-please"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines
            .next()
            .unwrap()
            .unwrap()
            .starts_with("Redis job-queue demo server listening")
    );
    let d = Demo {
        child,
        port,
        _reserved: reserved,
    };
    assert_eq!(http(d.port, "GET", "/stats", "", &[]).0, 401);
    assert_eq!(http(d.port, "GET", "/", "", &[]).0, 401);
    assert_eq!(
        http(
            d.port,
            "GET",
            "/stats",
            "",
            &[("Authorization", "Bearer letmein-please")]
        )
        .0,
        200
    );
    assert_eq!(
        http(d.port, "GET", "/?token=letmein-please", "", &[]).0,
        200
    );
}
