//! The fleet-wide Prometheus page (`dashboard::metrics_router`, and the
//! dashboard's own `/metrics`), scraped in-process and parsed as the text
//! exposition format: its numbers equal what was done (jobs enqueued, run,
//! left waiting, how long the oldest waited), a sharded queue is one
//! series, a queue that cannot be read is left out and counted, and the
//! dashboard's token guards it. On a single server and on a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use jobqueue::client::EnqueueOptions;
use jobqueue::dashboard::{DashboardOptions, metrics_router, router, router_with};
use jobqueue::queue::{NewJob, QueueOptions};
use jobqueue::{Client, Runner, job};
use jobqueue_tests::*;
use serde_json::json;
use tower::ServiceExt;

#[job(queue = "metered")]
async fn metered(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[job(queue = "metered-sharded")]
async fn metered_sharded(n: u64) -> Result<u64, String> {
    Ok(n)
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition page: each family's HELP and TYPE, and the samples.
#[derive(Debug, Default)]
struct Page {
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Page {
    /// The value of the one sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == labels)
            .collect();
        assert_eq!(found.len(), 1, "one sample {name} {labels:?}: {found:?}");
        found[0].value
    }

    /// The `queue` labels the samples of `name` carry.
    fn queues_of(&self, name: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get("queue").cloned())
            .collect()
    }
}

/// Parses the text exposition format (0.0.4) strictly: every line is a
/// `# HELP`, a `# TYPE`, another comment or a sample; a family's HELP and
/// TYPE come once each, before its first sample; label values are quoted,
/// with `\\`, `\"` and `\n` escapes; values are numbers.
fn parse(text: &str) -> Page {
    let mut page = Page::default();
    assert!(text.ends_with('\n'), "the page ends with a line feed");
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{line}");
            assert!(
                !page.samples.iter().any(|s| s.name == name),
                "HELP after samples: {line}"
            );
            let old = page.help.insert(name.to_owned(), unescape(help, false));
            assert!(old.is_none(), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                !page.samples.iter().any(|s| s.name == name),
                "TYPE after samples: {line}"
            );
            let old = page.kind.insert(name.to_owned(), kind.to_owned());
            assert!(old.is_none(), "TYPE twice: {line}");
        } else if line.starts_with('#') {
            continue;
        } else {
            let sample = parse_sample(line);
            assert!(
                page.help.contains_key(&sample.name) && page.kind.contains_key(&sample.name),
                "a sample before its family's HELP and TYPE: {line}"
            );
            page.samples.push(sample);
        }
    }
    page
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Sample {
    let end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{line}"));
    let name = &line[..end];
    assert!(valid_name(name), "{line}");
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
            assert!(valid_name(label) && !label.contains(':'), "{line}");
            // The value runs to the first quote no backslash escapes.
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next() {
                    Some((_, '\\')) => value.push(match chars.next() {
                        Some((_, 'n')) => '\n',
                        Some((_, c @ ('\\' | '"'))) => c,
                        other => panic!("bad escape {other:?} in {line}"),
                    }),
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line}"),
                }
            };
            let old = labels.insert(label.to_owned(), value);
            assert!(old.is_none(), "label twice: {line}");
            rest = &after[close + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// HELP text escapes `\\` and `\n`; label values also `\"`.
fn unescape(text: &str, quotes: bool) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
            other => panic!("bad escape {other:?} in {text:?}"),
        }
    }
    out
}

#[test]
fn the_parser_reads_escapes_and_refuses_what_the_format_forbids() {
    let page = parse(
        "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{queue=\"q\\\"1\\\\\\n\",state=\"x\"} 2\nm 0.5\n",
    );
    assert_eq!(page.help["m"], "a \\ b\nc");
    assert_eq!(
        page.value("m", &[("queue", "q\"1\\\n"), ("state", "x")]),
        2.0
    );
    assert_eq!(page.value("m", &[]), 0.5);
    for bad in [
        "m 1\n",                                    // no HELP/TYPE
        "# HELP m x\n# TYPE m gauge\nm{q=\"a} 1\n", // unterminated
        "# HELP m x\n# TYPE m gauge\nm x\n",        // not a number
        "# HELP m x\n# TYPE m gauge\nm 1\n# TYPE m gauge\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

/// Scrapes `/metrics` of `app` and parses the page, after checking the
/// status and the content type. With `auth`, as a scraper on another host
/// would: the token as a bearer header, and a `Host` that is not loopback.
async fn scrape(app: &Router, auth: Option<&str>) -> Page {
    let mut request = Request::get("/metrics");
    if let Some(token) = auth {
        request = request
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::HOST, "jobs.internal.example:8793");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response.headers()[header::CONTENT_TYPE].to_owned();
    let body = to_bytes(response.into_body(), 1 << 22).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    parse(&text)
}

/// Every family the page promises, with its type.
fn assert_families(page: &Page) {
    for (name, kind) in [
        ("jobqueue_queue_jobs", "gauge"),
        ("jobqueue_queue_enqueued_total", "counter"),
        ("jobqueue_queue_processed_total", "counter"),
        ("jobqueue_queue_failed_total", "counter"),
        ("jobqueue_queue_retried_total", "counter"),
        ("jobqueue_queue_reclaimed_total", "counter"),
        ("jobqueue_queue_oldest_pending_age_seconds", "gauge"),
        ("jobqueue_queue_paused", "gauge"),
        ("jobqueue_scrape_duration_seconds", "gauge"),
        ("jobqueue_scrape_errors_total", "counter"),
        ("jobqueue_build_info", "gauge"),
    ] {
        assert_eq!(
            page.kind.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
        assert!(!page.help[name].is_empty(), "{name} has HELP text");
    }
    assert!(
        page.help["jobqueue_queue_jobs"].contains("capped"),
        "HELP says the histories are capped"
    );
    assert_eq!(
        page.value(
            "jobqueue_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let took = page.value("jobqueue_scrape_duration_seconds", &[]);
    assert!(took > 0.0 && took < 10.0, "scrape took {took} s");
}

async fn the_numbers_are_what_was_done(redis: TestRedis) {
    const RUN: u64 = 4;
    const WAITING: u64 = 6;
    const WAIT: Duration = Duration::from_millis(400);
    let client = redis.client().await;

    let handles = client.enqueue_many::<metered>(0..RUN).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["metered"])
        .concurrency(4)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    for (n, handle) in (0..RUN).zip(&handles) {
        assert_eq!(handle.wait(Duration::from_secs(30)).await.unwrap(), n);
    }
    stop_runner(token, task).await;

    let before_waiting = Instant::now();
    client.enqueue_many::<metered>(0..WAITING).await.unwrap();
    client
        .enqueue_with::<metered>(99, EnqueueOptions::new().delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    tokio::time::sleep(WAIT).await;

    let standalone = metrics_router(client.clone());
    let dashboard = router(client.clone());
    for app in [&standalone, &dashboard] {
        let page = scrape(app, None).await;
        assert_families(&page);
        let jobs = |state: &str| {
            page.value(
                "jobqueue_queue_jobs",
                &[("queue", "metered"), ("state", state)],
            )
        };
        assert_eq!(jobs("pending"), WAITING as f64);
        assert_eq!(jobs("processing"), 0.0);
        assert_eq!(jobs("scheduled"), 1.0);
        assert_eq!(jobs("completed"), RUN as f64);
        assert_eq!(jobs("failed"), 0.0);
        let of = |name: &str| page.value(name, &[("queue", "metered")]);
        assert_eq!(of("jobqueue_queue_processed_total"), RUN as f64);
        assert_eq!(of("jobqueue_queue_failed_total"), 0.0);
        assert_eq!(
            of("jobqueue_queue_enqueued_total"),
            (RUN + WAITING + 1) as f64
        );
        assert_eq!(of("jobqueue_queue_paused"), 0.0);
        let age = of("jobqueue_queue_oldest_pending_age_seconds");
        let elapsed = before_waiting.elapsed().as_secs_f64();
        assert!(
            age >= WAIT.as_secs_f64() - 0.005 && age <= elapsed + 0.5,
            "the oldest waited {age} s; enqueued {elapsed} s ago"
        );
        assert_eq!(page.value("jobqueue_scrape_errors_total", &[]), 0.0);
        // The registered queue with nothing in it is listed, at zero.
        assert_eq!(
            page.value(
                "jobqueue_queue_processed_total",
                &[("queue", "metered-sharded")]
            ),
            0.0
        );
    }

    let q = client.queue("metered").unwrap();
    q.pause().await.unwrap();
    let page = scrape(&standalone, None).await;
    assert_eq!(
        page.value("jobqueue_queue_paused", &[("queue", "metered")]),
        1.0
    );
    let stats = q.stats().await.unwrap();
    assert_eq!(
        page.value(
            "jobqueue_queue_jobs",
            &[("queue", "metered"), ("state", "pending")]
        ),
        stats.pending_depth as f64,
        "the page agrees with Queue::stats"
    );
}

async fn a_sharded_queue_is_one_series(redis: TestRedis) {
    const RUN: u64 = 6;
    const WAITING: u64 = 9;
    let sharded = Client::builder(&redis.connection().await)
        .shards("metered-sharded", 3)
        .build()
        .unwrap();
    let handles = sharded
        .enqueue_many::<metered_sharded>(0..RUN)
        .await
        .unwrap();
    let runner = Runner::builder(sharded.clone())
        .queues(["metered-sharded"])
        .concurrency(4)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    for handle in &handles {
        handle.wait(Duration::from_secs(30)).await.unwrap();
    }
    stop_runner(token, task).await;
    sharded
        .enqueue_many::<metered_sharded>(0..WAITING)
        .await
        .unwrap();
    let mut shards_with_jobs = 0;
    for shard in sharded.shard_queues("metered-sharded").unwrap() {
        let stats = shard.stats().await.unwrap();
        shards_with_jobs += usize::from(stats.pending_depth + stats.completed_total > 0);
    }
    assert!(shards_with_jobs >= 2, "the jobs spread over the shards");
    tokio::time::sleep(Duration::from_millis(50)).await;

    // A client that knows nothing of the shards: they are found in Redis
    // and summed into their queue all the same.
    let page = scrape(&metrics_router(redis.client().await), None).await;
    assert_families(&page);
    let queues = page.queues_of("jobqueue_queue_jobs");
    assert!(
        queues.iter().all(|q| !q.contains('~')),
        "no shard has its own series: {queues:?}"
    );
    assert!(queues.contains("metered-sharded"), "{queues:?}");
    let of = |name: &str| page.value(name, &[("queue", "metered-sharded")]);
    assert_eq!(
        page.value(
            "jobqueue_queue_jobs",
            &[("queue", "metered-sharded"), ("state", "pending")]
        ),
        WAITING as f64
    );
    assert_eq!(of("jobqueue_queue_processed_total"), RUN as f64);
    assert_eq!(of("jobqueue_queue_enqueued_total"), (RUN + WAITING) as f64);
    let age = of("jobqueue_queue_oldest_pending_age_seconds");
    assert!((0.04..30.0).contains(&age), "the oldest waited {age} s");
    assert_eq!(page.value("jobqueue_scrape_errors_total", &[]), 0.0);
}

async fn a_queue_that_cannot_be_read_is_left_out_and_counted(redis: TestRedis) {
    let client = redis.client().await;
    let q = client.queue("metered").unwrap();
    q.enqueue_many(&[json!(1), json!(2)]).await.unwrap();
    // A stats key of another type: every read of queue "broken" fails.
    let broken = client.queue("broken").unwrap();
    let mut conn = redis.conn().await;
    exec(&mut conn, &["SET", &broken.keys().stats(), "not a hash"]).await;
    assert!(broken.stats().await.is_err());

    let app = metrics_router(client);
    for scrape_number in 1..=2 {
        let page = scrape(&app, None).await;
        assert_families(&page);
        assert!(
            !page.queues_of("jobqueue_queue_jobs").contains("broken"),
            "the broken queue is left out"
        );
        assert_eq!(
            page.value(
                "jobqueue_queue_jobs",
                &[("queue", "metered"), ("state", "pending")]
            ),
            2.0,
            "the other queues are read"
        );
        assert_eq!(
            page.value("jobqueue_scrape_errors_total", &[]),
            f64::from(scrape_number),
            "a counter of failed reads"
        );
    }
}

/// The oldest wait is the oldest of `pending` and the priority lanes;
/// rate keys' lanes are left out (their jobs wait by design).
async fn the_oldest_wait_spans_the_priority_lanes(redis: TestRedis) {
    let q = redis.queue("metered", QueueOptions::new()).await;
    assert_eq!(q.oldest_pending_age().await.unwrap(), None, "nothing waits");
    q.submit(
        NewJob::new(&json!("keyed"))
            .unwrap()
            .options(EnqueueOptions::new().rate_key("tenant-1")),
    )
    .await
    .unwrap();
    assert_eq!(
        q.oldest_pending_age().await.unwrap(),
        None,
        "a rate key's lane is not counted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let low = Instant::now();
    q.submit(
        NewJob::new(&json!("low"))
            .unwrap()
            .options(EnqueueOptions::new().priority(-2)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.enqueue(&json!("plain")).await.unwrap();
    q.submit(
        NewJob::new(&json!("high"))
            .unwrap()
            .options(EnqueueOptions::new().priority(3)),
    )
    .await
    .unwrap();
    let age = q.oldest_pending_age().await.unwrap().unwrap();
    assert!(
        age >= Duration::from_millis(295) && age <= low.elapsed() + Duration::from_millis(50),
        "the low lane's job is the oldest: {age:?}, enqueued {:?} ago",
        low.elapsed()
    );
    assert!(
        age < Duration::from_millis(550),
        "the keyed job (600 ms) is not: {age:?}"
    );
}

#[tokio::test]
async fn with_a_token_the_endpoint_refuses_an_unauthenticated_scrape() {
    let redis = TestRedis::start(Topology::Single);
    let client = redis.client().await;
    client.enqueue::<metered>(1).await.unwrap();
    let app = router_with(
        client.clone(),
        DashboardOptions::new().token("metrics-secret"),
    );
    let status = |request: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(request).await.unwrap().status() }
    };
    assert_eq!(
        status(Request::get("/metrics").body(Body::empty()).unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            Request::get("/metrics")
                .header(header::AUTHORIZATION, "Bearer wrong-secret")
                .body(Body::empty())
                .unwrap()
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    // A scraper with the token, from another host.
    let page = scrape(&app, Some("metrics-secret")).await;
    assert_eq!(
        page.value(
            "jobqueue_queue_jobs",
            &[("queue", "metered"), ("state", "pending")]
        ),
        1.0
    );
    // The dashboard's page links to it.
    let page = app
        .clone()
        .oneshot(
            Request::get("/")
                .header(header::AUTHORIZATION, "Bearer metrics-secret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let html = to_bytes(page.into_body(), 1 << 20).await.unwrap();
    let html = String::from_utf8_lossy(&html);
    assert!(
        html.contains(r#"id="metrics-link" href="metrics""#),
        "the page links to /metrics"
    );
    // Without a token, the dashboard answers only to a loopback Host.
    let open = router(client);
    let remote = Request::get("/metrics")
        .header(header::HOST, "metrics.example:8793")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        open.oneshot(remote).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] the_numbers_are_what_was_done,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_sharded_queue_is_one_series,
    #[tokio::test] a_queue_that_cannot_be_read_is_left_out_and_counted,
    #[tokio::test] the_oldest_wait_spans_the_priority_lanes,
}
