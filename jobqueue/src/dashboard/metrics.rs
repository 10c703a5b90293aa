//! Fleet-wide figures for Prometheus, read from Redis at scrape time
//! ([`metrics_router`], and the dashboard's own `/metrics`). The page is
//! written by hand: the library installs no recorder, so the application
//! keeps its own choice of exporter for the in-process metrics (feature
//! `metrics`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::{join_all, try_join_all};

use super::discovery::Discovery;
use crate::client::Client;
use crate::error::Result;
use crate::queue::{Queue, Stats};

/// The `Content-Type` of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A router serving `GET /metrics`: the fleet-wide figures of every queue,
/// read from Redis at each scrape, in the Prometheus text exposition format
/// (version 0.0.4), for a scraper that does not run inside a worker. Mount
/// it in your service's router, or serve it alone:
///
/// ```no_run
/// # async fn run() -> jobqueue::Result<()> {
/// let client = jobqueue::Client::connect("redis://127.0.0.1:6379/").await?;
/// let app = axum::Router::new().merge(jobqueue::dashboard::metrics_router(client));
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:9187").await.unwrap();
/// axum::serve(listener, app).await.unwrap();
/// # Ok(()) }
/// ```
///
/// | name | type | labels |
/// |---|---|---|
/// | `jobqueue_queue_jobs` | gauge | queue, state (`pending`, `processing`, `scheduled`, `completed`, `failed`, `cancelled`) |
/// | `jobqueue_queue_enqueued_total` | counter | queue |
/// | `jobqueue_queue_processed_total` | counter | queue |
/// | `jobqueue_queue_failed_total` | counter | queue |
/// | `jobqueue_queue_retried_total` | counter | queue |
/// | `jobqueue_queue_reclaimed_total` | counter | queue |
/// | `jobqueue_queue_cancelled_total` | counter | queue |
/// | `jobqueue_queue_expired_total` | counter | queue |
/// | `jobqueue_queue_oldest_pending_age_seconds` | gauge | queue |
/// | `jobqueue_queue_paused` | gauge | queue |
/// | `jobqueue_scrape_duration_seconds` | gauge | |
/// | `jobqueue_scrape_errors_total` | counter | |
/// | `jobqueue_build_info` | gauge | version |
///
/// The depths of `completed`, `failed` and `cancelled` are capped histories,
/// not totals; `processed` counts jobs that completed, `failed` those that
/// failed for good; the oldest pending age is
/// [`Queue::oldest_pending_age`](crate::queue::Queue::oldest_pending_age).
/// The counters come from the stats hash every process updates inside its
/// scripts, so one scrape sees the whole fleet; with several replicas
/// serving this page, query `max by (queue)`. These names differ from the
/// in-process ones (`jobqueue_jobs_*`, `jobqueue_job_*`,
/// `jobqueue_running_jobs`, `jobqueue_pending_jobs`,
/// `jobqueue_oldest_pending_age_seconds`), so a sum over both sources never
/// counts a job twice.
///
/// `queue` is the logical queue: the shards of a sharded queue (`email`,
/// `email~1`, `email~2.3`, …) are summed into one series, so the label has
/// as many values as there are queues. Queues are found as the dashboard
/// finds them: registered `#[job]`s, the client's sharded queues, and a
/// bounded `SCAN` of Redis, reused for 10 s (the dashboard's `/metrics`
/// adds its [`queues`](super::DashboardOptions::queues)).
///
/// A queue whose read fails is left out of that scrape (all of it, never
/// some of its shards: a counter that drops reads as a reset) and counted
/// in `jobqueue_scrape_errors_total`, so one bad queue never blanks the
/// page.
///
/// The router has no access rule of its own, since a scraper usually runs
/// on another host: the page changes nothing and shows no job's data, only
/// queue names and counts. To require the dashboard's token, wrap it with
/// [`protect`](super::protect); the dashboard's own `/metrics` already
/// follows the dashboard's rules.
pub fn metrics_router(client: Client) -> Router {
    routes(client, Vec::new())
}

/// [`metrics_router`] listing `queues` too, even before they have keys.
pub(super) fn routes(client: Client, queues: Vec<String>) -> Router {
    let fleet = Fleet {
        client,
        configured: queues,
        registered: super::api::jobs_by_queue().into_keys().collect(),
        discovery: Discovery::default(),
        errors: AtomicU64::new(0),
    };
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(fleet))
}

/// What a scrape reads from, and what it remembers between scrapes.
#[derive(Debug)]
struct Fleet {
    client: Client,
    /// Queues named in the options.
    configured: Vec<String>,
    /// Queues of the registered jobs (registration is static).
    registered: Vec<String>,
    /// Queue names found by scanning Redis, and when.
    discovery: Discovery,
    /// Reads that failed since the router was built: the
    /// `jobqueue_scrape_errors_total` counter.
    errors: AtomicU64,
}

/// One logical queue as one scrape read it.
#[derive(Debug)]
struct Reading {
    name: String,
    /// Each shard's stats (one for an unsharded queue).
    shards: Vec<Stats>,
    /// The longest wait of any shard.
    oldest: Option<Duration>,
}

impl Reading {
    /// `figure` summed over the shards.
    fn sum(&self, figure: Figure) -> u64 {
        self.shards.iter().map(figure).sum()
    }
}

async fn scrape(State(fleet): State<Arc<Fleet>>) -> Response {
    let started = Instant::now();
    let queues = fleet.queues().await;
    let reads = join_all(queues.iter().map(|(name, shards)| fleet.read(name, shards))).await;
    let mut readings = Vec::with_capacity(reads.len());
    for ((name, _), read) in queues.iter().zip(reads) {
        match read {
            Ok(reading) => readings.push(reading),
            Err(error) => {
                fleet.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(queue = %name, %error, "metrics: queue left out of this scrape");
            }
        }
    }
    let page = render(
        &readings,
        started.elapsed(),
        fleet.errors.load(Ordering::Relaxed),
    );
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

impl Fleet {
    /// Every logical queue with the physical queues (shards) behind it.
    async fn queues(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut names: BTreeSet<String> = self.registered.iter().cloned().collect();
        names.extend(self.configured.iter().cloned());
        match self.discover().await {
            Ok(found) => names.extend(found),
            Err(error) => {
                // The known queues are still read.
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "metrics: scanning Redis for queues failed");
            }
        }
        let mut by_queue: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in names {
            // A foreign key's "name" that no queue could have is not a queue.
            if crate::keys::validate_name(&name).is_err() {
                continue;
            }
            by_queue
                .entry(crate::shards::logical_name(&name).to_owned())
                .or_default()
                .insert(name);
        }
        for (name, shards) in &mut by_queue {
            // The client's shards, found before they hold keys.
            if let Ok(queues) = self.client.shard_queues(name) {
                shards.extend(queues.iter().map(|q| q.name().to_owned()));
            }
        }
        by_queue
    }

    /// Queue names with keys in Redis (the dashboard's discovery).
    async fn discover(&self) -> Result<Vec<String>> {
        self.discovery.names(&self.client).await
    }

    /// Reads one logical queue: every shard's stats and oldest wait, all at
    /// once; any failure fails the whole queue.
    async fn read(&self, name: &str, shards: &BTreeSet<String>) -> Result<Reading> {
        let queues: Vec<Queue> = shards
            .iter()
            .map(|shard| self.client.queue(shard))
            .collect::<Result<_>>()?;
        let (stats, ages) = tokio::try_join!(
            try_join_all(queues.iter().map(Queue::stats)),
            try_join_all(queues.iter().map(Queue::oldest_pending_age)),
        )?;
        Ok(Reading {
            name: name.to_owned(),
            shards: stats,
            oldest: ages.into_iter().flatten().max(),
        })
    }
}

/// One figure of a shard's stats, summed over the shards of a queue.
type Figure = fn(&Stats) -> u64;

/// The states `jobqueue_queue_jobs` reports, each with its depth.
const STATES: [(&str, Figure); 6] = [
    ("pending", |s| s.pending_depth),
    ("processing", |s| s.processing_depth),
    ("scheduled", |s| s.scheduled_depth),
    ("completed", |s| s.completed_depth),
    ("failed", |s| s.failed_depth),
    ("cancelled", |s| s.cancelled_depth),
];

/// The per-queue counters: name, HELP, and the stats hash's field.
const COUNTERS: [(&str, &str, Figure); 7] = [
    (
        "jobqueue_queue_enqueued_total",
        "Jobs ever enqueued on the queue, fleet-wide (enqueued_total of its stats hash in Redis).",
        |s| s.enqueued_total,
    ),
    (
        "jobqueue_queue_processed_total",
        "Jobs that ran to completion, fleet-wide (completed_total of the queue's stats hash in Redis). \
         Jobs that failed for good are counted in jobqueue_queue_failed_total instead.",
        |s| s.completed_total,
    ),
    (
        "jobqueue_queue_failed_total",
        "Jobs that failed for good (dead letters), fleet-wide (failed_total of the queue's stats hash in Redis).",
        |s| s.failed_total,
    ),
    (
        "jobqueue_queue_retried_total",
        "Failed attempts sent back for another attempt, fleet-wide (retried_total of the queue's stats hash).",
        |s| s.retried_total,
    ),
    (
        "jobqueue_queue_reclaimed_total",
        "Claims taken back by a sweep after their lease ran out (a worker died or hung), fleet-wide.",
        |s| s.reclaimed_total,
    ),
    (
        "jobqueue_queue_cancelled_total",
        "Jobs cancelled by a caller, fleet-wide (cancelled_total of the queue's stats hash).",
        |s| s.cancelled_total,
    ),
    (
        "jobqueue_queue_expired_total",
        "Jobs ended because they could not start by their deadline, fleet-wide (expired_total).",
        |s| s.expired_total,
    ),
];

/// The exposition page of one scrape.
fn render(readings: &[Reading], took: Duration, errors: u64) -> String {
    let mut page = Exposition::default();
    page.family(
        "jobqueue_queue_jobs",
        "gauge",
        "Jobs of the queue in each state, read from Redis at scrape time. pending counts every \
         lane (priority levels and rate keys). completed, failed and cancelled are the capped \
         histories (completed_history, failed_history), not totals: use the _total counters for rates.",
    );
    for reading in readings {
        for (state, depth) in STATES {
            page.sample(
                "jobqueue_queue_jobs",
                &[("queue", &reading.name), ("state", state)],
                reading.sum(depth),
            );
        }
    }
    for (name, help, figure) in COUNTERS {
        page.family(name, "counter", help);
        for reading in readings {
            page.sample(name, &[("queue", &reading.name)], reading.sum(figure));
        }
    }
    page.family(
        "jobqueue_queue_oldest_pending_age_seconds",
        "gauge",
        "How long the oldest job waiting in pending or a priority lane has been ready to run \
         (since enqueue, or since it came due), by the Redis clock; 0 when none waits. \
         Rate keys' lanes are left out: their jobs wait by design.",
    );
    for reading in readings {
        page.sample(
            "jobqueue_queue_oldest_pending_age_seconds",
            &[("queue", &reading.name)],
            reading.oldest.unwrap_or_default().as_secs_f64(),
        );
    }
    page.family(
        "jobqueue_queue_paused",
        "gauge",
        "1 while the queue (any of its shards) is paused: its jobs wait and nothing new is claimed.",
    );
    for reading in readings {
        let paused = reading.shards.iter().any(|s| s.paused);
        page.sample(
            "jobqueue_queue_paused",
            &[("queue", &reading.name)],
            u8::from(paused),
        );
    }
    page.family(
        "jobqueue_scrape_duration_seconds",
        "gauge",
        "How long this scrape took to read Redis.",
    );
    page.sample("jobqueue_scrape_duration_seconds", &[], took.as_secs_f64());
    page.family(
        "jobqueue_scrape_errors_total",
        "counter",
        "Reads that failed since this endpoint started: each left its queue out of that scrape \
         (or, for the scan of Redis, the queues only it finds).",
    );
    page.sample("jobqueue_scrape_errors_total", &[], errors);
    page.family(
        "jobqueue_build_info",
        "gauge",
        "The jobqueue version serving this page; always 1.",
    );
    page.sample(
        "jobqueue_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    page.out
}

/// A page in the text exposition format: a family's HELP and TYPE lines,
/// then its samples.
#[derive(Debug, Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(text, true));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes text as the format requires: a backslash and a line feed in HELP
/// text, and also a double quote in a label value.
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut page = Exposition::default();
        page.family("m", "gauge", "a \\ b\nc \"d\"");
        page.sample("m", &[("queue", "q\"1\\\n"), ("state", "x")], 2);
        page.sample("m", &[], 0.5);
        assert_eq!(
            page.out,
            "# HELP m a \\\\ b\\nc \"d\"\n# TYPE m gauge\n\
             m{queue=\"q\\\"1\\\\\\n\",state=\"x\"} 2\nm 0.5\n"
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let reading = Reading {
            name: "email".to_owned(),
            shards: vec![Stats::default(), Stats::default()],
            oldest: Some(Duration::from_millis(1500)),
        };
        let page = render(&[reading], Duration::from_millis(3), 1);
        let mut declared = BTreeSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{name} sampled before its TYPE");
            }
        }
        assert!(page.contains("jobqueue_queue_oldest_pending_age_seconds{queue=\"email\"} 1.5\n"));
        assert!(page.contains("jobqueue_scrape_errors_total 1\n"));
        assert!(page.contains("jobqueue_queue_jobs{queue=\"email\",state=\"pending\"} 0\n"));
    }
}
