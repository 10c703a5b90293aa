//! Run with: `scripts/demo` (or `cargo run -p jobqueue-examples --bin jobqueue-demo -- --help`).
//!
//! The Redis job-queue reference guide's demo, in Rust: enqueue batches, a
//! worker pool with latency, failure and hang rates, a reclaim button, live
//! lists. The page is jobqueue's dashboard with the demo's controls; the
//! workers are a `#[job]` run by the real `Runner` (whose automatic sweep is
//! off by default, so the reclaim button can be seen at work).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use clap::Parser;
use jobqueue::connection::Connection;
use jobqueue::dashboard::{DashboardOptions, JobSummary, protect};
use jobqueue::queue::{NewJob, Queue, QueueOptions};
use jobqueue::{CancellationToken, Client, JobContext, JobError, Runner, job};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The reference demo's flags.
#[derive(Debug, Parser)]
#[command(about = "Redis job-queue demo server (jobqueue)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8792)]
    port: u16,
    /// Redis host (ignored when --redis-url or REDIS_URL is set).
    #[arg(long, default_value = "localhost")]
    redis_host: String,
    /// Redis port (ignored when --redis-url or REDIS_URL is set).
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
    /// Redis URL, overriding --redis-host and --redis-port.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// How long a claim lasts without renewal, in ms.
    #[arg(long, default_value_t = 5000)]
    visibility_ms: u64,
    /// The queue's name.
    #[arg(long, default_value = "jobs")]
    queue_name: String,
    /// Workers to start with (0 to 8).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// A bearer token the dashboard requires; needed to listen on anything
    /// but a loopback address.
    #[arg(long, env = "JOBQUEUE_DASHBOARD_TOKEN")]
    token: Option<String>,
}

/// The pool's knobs, read by every run of the demo job.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    latency_ms: u64,
    fail_rate: f64,
    hang_rate: f64,
}

static KNOBS: Mutex<Knobs> = Mutex::new(Knobs {
    latency_ms: 400,
    fail_rate: 0.0,
    hang_rate: 0.0,
});
static PROCESSED: AtomicU64 = AtomicU64::new(0);
static POOL_SIZE: AtomicU64 = AtomicU64::new(2);

/// The demo's work: wait the configured latency, then hang (walk away as a
/// crashed worker would), fail, or complete, with the configured odds. The
/// outcome is drawn before the wait, as the reference's workers do.
#[job(name = "demo_task", backoff = "none")]
async fn demo_task(payload: Value, ctx: JobContext) -> Result<Value, JobError> {
    let knobs = *KNOBS.lock().expect("knobs");
    let roll: f64 = rand::random();
    let size = POOL_SIZE.load(Ordering::Relaxed).max(1);
    let worker = format!(
        "worker-{}",
        u64::from_str_radix(&ctx.id()[..4.min(ctx.id().len())], 16).unwrap_or(0) % size + 1
    );
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(knobs.latency_ms)) => {}
        () = ctx.cancelled() => return Err(JobError::retry("stopped")),
    }
    if roll < knobs.hang_rate {
        return Err(JobError::abandon(format!("{worker} hung")));
    }
    if roll < knobs.hang_rate + knobs.fail_rate {
        return Err(JobError::retry(format!("{worker} simulated failure")));
    }
    PROCESSED.fetch_add(1, Ordering::Relaxed);
    Ok(json!({ "worker": worker, "echo": payload, "attempts": ctx.attempt() }))
}

/// The running pool: a Runner and its shutdown token.
#[derive(Debug, Default)]
struct Pool {
    running: Option<(CancellationToken, JoinHandle<()>)>,
    auto_sweep: bool,
}

struct Demo {
    client: Client,
    queue: Queue,
    pool: tokio::sync::Mutex<Pool>,
}

type Shared = std::sync::Arc<Demo>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // Colour only on a terminal: logs sent to a file or a pipe stay
        // plain text. NO_COLOR turns it off too.
        .with_ansi(
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,jobqueue=info".into()),
        )
        .init();
    let args = Args::parse();
    let (url, shown) = match &args.redis_url {
        Some(url) => (url.clone(), without_password(url)),
        None => (
            format!("redis://{}:{}/", args.redis_host, args.redis_port),
            format!("{}:{}", args.redis_host, args.redis_port),
        ),
    };
    let conn = match Connection::connect(url.as_str()).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("could not reach Redis at {shown}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let options = QueueOptions::new().visibility(Duration::from_millis(args.visibility_ms));
    let client = match Client::builder(&conn).queue_options(options).build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let queue = match client.queue(&args.queue_name) {
        Ok(queue) => queue,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let demo: Shared = std::sync::Arc::new(Demo {
        client: client.clone(),
        queue,
        pool: tokio::sync::Mutex::new(Pool::default()),
    });
    if args.workers > 0 {
        POOL_SIZE.store(args.workers.min(8) as u64, Ordering::Relaxed);
        start_pool(&demo).await;
    }
    let mut dashboard = DashboardOptions::new()
        .demo(true)
        .queues([args.queue_name.clone()]);
    if let Some(token) = &args.token {
        dashboard = dashboard.token(token.clone());
    }
    // The demo's own endpoints live under the dashboard's access rules (its
    // token, loopback only without one, no cross-site POSTs); scripts call
    // them without the page's CSRF token, as the reference demo allows.
    let controls = Router::new()
        .route("/jobs", only(get(jobs)))
        .route("/stats", only(get(stats)))
        .route("/enqueue", only(post(enqueue)))
        .route("/workers/start", only(post(workers_start)))
        .route("/workers/stop", only(post(workers_stop)))
        .route("/workers/configure", only(post(workers_configure)))
        .route("/workers/sweep", only(post(workers_sweep)))
        .route("/reclaim", only(post(reclaim)))
        .route("/reset", only(post(reset)))
        .with_state(std::sync::Arc::clone(&demo));
    let app = protect(controls, &dashboard)
        .merge(jobqueue::dashboard::router_with(client, dashboard.clone()))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") });
    let addr: SocketAddr = match format!("{}:{}", args.host, args.port).parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bad address {}:{}: {e}", args.host, args.port);
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = dashboard.check_bind(addr) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("could not listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("Redis job-queue demo server listening on http://{addr}");
    println!("Using Redis at {shown}");
    println!("Visibility timeout: {} ms", args.visibility_ms);
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
            shutdown.cancel();
        }
    });
    let served = jobqueue::dashboard::serve(listener, app, shutdown).await;
    stop_pool(&demo).await;
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A method router that answers other methods with the reference's 405 text.
fn only(route: MethodRouter<Shared>) -> MethodRouter<Shared> {
    route.fallback(|| async { (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n") })
}

fn fail(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({ "error": e.to_string() })),
    )
        .into_response()
}

/// Form values from the body and the query string, as Go's FormValue reads them.
fn form(query: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    values.extend(serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default());
    values
}

fn value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn stats_object(demo: &Demo) -> jobqueue::Result<Value> {
    let stats = demo.queue.stats().await?;
    let knobs = *KNOBS.lock().expect("knobs");
    let pool = demo.pool.lock().await;
    let mut t = serde_json::to_value(stats).expect("stats serialize");
    t["workers_running"] = json!(if pool.running.is_some() {
        POOL_SIZE.load(Ordering::Relaxed)
    } else {
        0
    });
    t["worker_processed_total"] = json!(PROCESSED.load(Ordering::Relaxed));
    t["work_latency_ms"] = json!(knobs.latency_ms);
    t["fail_rate"] = json!(knobs.fail_rate);
    t["hang_rate"] = json!(knobs.hang_rate);
    t["auto_sweep"] = json!(pool.auto_sweep);
    Ok(t)
}

async fn stats(State(demo): State<Shared>) -> Response {
    match stats_object(&demo).await {
        Ok(t) => axum::Json(t).into_response(),
        Err(e) => fail(e),
    }
}

async fn jobs(State(demo): State<Shared>) -> Response {
    let q = &demo.queue;
    let lists = tokio::try_join!(
        q.list_pending(0..100),
        q.list_processing(0..100),
        q.list_completed(0..10),
        q.list_failed(0..10),
    );
    let lists = match lists {
        Ok((pending, processing, completed, failed)) => [pending, processing, completed, failed],
        Err(e) => return fail(e),
    };
    let all: Vec<&String> = lists.iter().flatten().collect();
    let records = match q.get_jobs(&all).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut records = records.into_iter();
    let mut out = serde_json::Map::new();
    for (name, ids) in ["pending", "processing", "completed", "failed"]
        .into_iter()
        .zip(&lists)
    {
        let summaries: Vec<Value> = ids
            .iter()
            .map(|id| json!(JobSummary::new(id, records.next().flatten().as_ref())))
            .collect();
        out.insert(name.to_owned(), Value::Array(summaries));
    }
    axum::Json(Value::Object(out)).into_response()
}

async fn enqueue(
    State(demo): State<Shared>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let form = form(query.as_deref().unwrap_or_default(), &body);
    let kind = value(&form, "kind")
        .filter(|k| !k.is_empty())
        .unwrap_or("email")
        .to_owned();
    let recipient = value(&form, "recipient")
        .filter(|r| !r.is_empty())
        .unwrap_or("user@example.com")
        .to_owned();
    let count = value(&form, "count")
        .and_then(|c| c.trim().parse::<i64>().ok())
        .unwrap_or(1)
        .clamp(1, 50);
    let mut jobs = Vec::with_capacity(count as usize);
    for n in 1..=count {
        let payload = json!({ "kind": kind, "recipient": recipient, "n": n });
        match NewJob::new(&payload) {
            Ok(job) => jobs.push(job.name("demo_task")),
            Err(e) => return fail(e),
        }
    }
    match demo.queue.submit_many(jobs).await {
        Ok(ids) => match stats_object(&demo).await {
            Ok(t) => axum::Json(json!({ "enqueued": ids, "stats": t })).into_response(),
            Err(e) => fail(e),
        },
        Err(e) => fail(e),
    }
}

/// Applies the knobs present in `form`, clamped as the reference clamps them.
fn configure(form: &[(String, String)]) {
    let mut knobs = KNOBS.lock().expect("knobs");
    if let Some(ms) = value(form, "work_latency_ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        knobs.latency_ms = ms.max(0.0) as u64;
    }
    if let Some(rate) = value(form, "fail_rate").and_then(|v| v.trim().parse::<f64>().ok()) {
        knobs.fail_rate = rate.clamp(0.0, 1.0);
    }
    if let Some(rate) = value(form, "hang_rate").and_then(|v| v.trim().parse::<f64>().ok()) {
        knobs.hang_rate = rate.clamp(0.0, 1.0);
    }
}

/// (Re)starts the pool with the current size and sweep setting. The pool
/// lock is held throughout, so concurrent starts and stops never leave a
/// Runner that nothing can stop.
async fn start_pool(demo: &Demo) {
    let mut pool = demo.pool.lock().await;
    stop_locked(&mut pool).await;
    let size = POOL_SIZE.load(Ordering::Relaxed) as usize;
    if size == 0 {
        return;
    }
    let runner = Runner::builder(demo.client.clone())
        .queues([demo.queue.name()])
        .concurrency(size)
        .auto_sweep(pool.auto_sweep)
        .shutdown_timeout(Duration::from_millis(500))
        .build();
    match runner {
        Ok(runner) => {
            let token = CancellationToken::new();
            let task = tokio::spawn({
                let token = token.clone();
                async move { runner.run(token).await }
            });
            pool.running = Some((token, task));
        }
        Err(e) => eprintln!("could not start the workers: {e}"),
    }
}

async fn stop_pool(demo: &Demo) {
    stop_locked(&mut *demo.pool.lock().await).await;
}

async fn stop_locked(pool: &mut Pool) {
    if let Some((token, task)) = pool.running.take() {
        token.cancel();
        let _ = task.await;
    }
}

async fn respond_stats(demo: &Demo) -> Response {
    match stats_object(demo).await {
        Ok(t) => axum::Json(t).into_response(),
        Err(_) => axum::Json(Value::Null).into_response(),
    }
}

async fn workers_start(
    State(demo): State<Shared>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let form = form(query.as_deref().unwrap_or_default(), &body);
    configure(&form);
    let size = value(&form, "size")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(2)
        .clamp(0, 8);
    POOL_SIZE.store(size as u64, Ordering::Relaxed);
    start_pool(&demo).await;
    respond_stats(&demo).await
}

async fn workers_stop(State(demo): State<Shared>) -> Response {
    stop_pool(&demo).await;
    respond_stats(&demo).await
}

async fn workers_configure(
    State(demo): State<Shared>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let form = form(query.as_deref().unwrap_or_default(), &body);
    configure(&form);
    respond_stats(&demo).await
}

/// Turns the Runner's automatic sweep on or off (restarting running workers).
async fn workers_sweep(
    State(demo): State<Shared>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let form = form(query.as_deref().unwrap_or_default(), &body);
    let enabled = matches!(value(&form, "enabled"), Some("1" | "true" | "on"));
    let was_running = {
        let mut pool = demo.pool.lock().await;
        pool.auto_sweep = enabled;
        pool.running.is_some()
    };
    if was_running {
        start_pool(&demo).await;
    }
    respond_stats(&demo).await
}

async fn reclaim(State(demo): State<Shared>) -> Response {
    match demo.queue.reclaim_stuck().await {
        Ok(report) => match stats_object(&demo).await {
            Ok(t) => {
                axum::Json(json!({ "reclaimed": report.reclaimed, "stats": t })).into_response()
            }
            Err(e) => fail(e),
        },
        Err(e) => fail(e),
    }
}

async fn reset(State(demo): State<Shared>) -> Response {
    stop_pool(&demo).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Err(e) = demo.queue.purge().await {
        return fail(e);
    }
    PROCESSED.store(0, Ordering::Relaxed);
    match stats_object(&demo).await {
        Ok(t) => axum::Json(json!({ "stats": t })).into_response(),
        Err(e) => fail(e),
    }
}

/// `url` with its password, if any, shown as `***`: the demo prints the
/// Redis it uses, and its output goes to terminals and log files.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn the_printed_redis_url_hides_its_password() {
        assert_eq!(
            without_password("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            without_password("rediss://app:p@ss@host/"),
            "rediss://app:***@host/"
        );
        assert_eq!(without_password("redis://app@host/"), "redis://app@host/");
        assert_eq!(
            without_password("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
