//! In-process metrics through the `metrics` facade (feature `metrics`): the
//! application installs one recorder (metrics-exporter-prometheus, statsd,
//! OpenTelemetry...) and jobqueue reports into it. Names follow the
//! Prometheus conventions: a `jobqueue_` prefix, base units, `_total` on
//! counters.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `jobqueue_jobs_enqueued_total` | counter | queue, job |
//! | `jobqueue_jobs_started_total` | counter | queue, job |
//! | `jobqueue_jobs_completed_total` | counter | queue, job |
//! | `jobqueue_jobs_retried_total` | counter | queue, job |
//! | `jobqueue_jobs_failed_total` | counter | queue, job |
//! | `jobqueue_jobs_cancelled_total` | counter | queue, job |
//! | `jobqueue_jobs_reclaimed_total` | counter | queue |
//! | `jobqueue_job_duration_seconds` | histogram | queue, job |
//! | `jobqueue_job_wait_seconds` | histogram | queue, job |
//! | `jobqueue_running_jobs` | gauge | queue |
//! | `jobqueue_pending_jobs` | gauge | queue |
//! | `jobqueue_oldest_pending_age_seconds` | gauge | queue |
//!
//! Labels are bounded: `queue` is the logical queue (a sharded queue's
//! shards count as one), `job` a registered name (`unknown` for a job no
//! handler is registered for). Never a job id, payload or error text.
//!
//! The runner takes its handles when it is built, so the recorder must be
//! installed before [`RunnerBuilder::build`](crate::runner::RunnerBuilder::build):
//! a handle taken before that reports to no recorder, for good.
//!
//! Give the exporter buckets for the two histograms ([`BUCKETS`]): a
//! Prometheus exporter left to its default renders summaries, which cannot
//! be added up across the workers of a fleet, and fold every sample into a
//! sketch at each scrape, which costs more CPU per job than a bucket count.
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let builder = PrometheusBuilder::new()
//!     .set_buckets_for_metric(Matcher::Prefix("jobqueue_".into()), jobqueue::metrics::BUCKETS)
//!     .expect("buckets are not empty");
//! // builder.install_recorder(), then build the Runner.
//! # let _ = builder;
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Histogram buckets for `jobqueue_job_duration_seconds` and
/// `jobqueue_job_wait_seconds`, in seconds: 5 ms to 10 minutes, about
/// 2.5x apart (Sidekiq's metrics span 20 ms to 335 s).
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 150.0, 300.0, 600.0,
];

/// The label of a job no handler is registered for.
pub(crate) const UNKNOWN_JOB: &str = "unknown";

/// Counts `n` jobs `job` enqueued on `queue`.
pub(crate) fn enqueued(queue: &'static str, job: &'static str, n: u64) {
    counter!("jobqueue_jobs_enqueued_total", "queue" => queue, "job" => job).increment(n);
}

/// The handles of one (queue, job) pair.
#[derive(Debug)]
pub(crate) struct JobMetrics {
    pub(crate) started: Counter,
    pub(crate) completed: Counter,
    pub(crate) retried: Counter,
    pub(crate) failed: Counter,
    pub(crate) cancelled: Counter,
    pub(crate) duration: Histogram,
    pub(crate) wait: Histogram,
    pub(crate) running: Gauge,
}

impl JobMetrics {
    fn new(queue: &str, job: &'static str) -> Self {
        let labels = [("queue", queue.to_owned()), ("job", job.to_owned())];
        Self {
            started: counter!("jobqueue_jobs_started_total", &labels),
            completed: counter!("jobqueue_jobs_completed_total", &labels),
            retried: counter!("jobqueue_jobs_retried_total", &labels),
            failed: counter!("jobqueue_jobs_failed_total", &labels),
            cancelled: counter!("jobqueue_jobs_cancelled_total", &labels),
            duration: histogram!("jobqueue_job_duration_seconds", &labels),
            wait: histogram!("jobqueue_job_wait_seconds", &labels),
            running: gauge!("jobqueue_running_jobs", "queue" => queue.to_owned()),
        }
    }
}

/// The gauges of one logical queue that the runner samples from Redis.
#[derive(Debug)]
pub(crate) struct QueueGauges {
    pub(crate) pending: Gauge,
    pub(crate) oldest_age: Gauge,
    pub(crate) reclaimed: Counter,
}

impl QueueGauges {
    pub(crate) fn new(queue: &str) -> Self {
        Self {
            pending: gauge!("jobqueue_pending_jobs", "queue" => queue.to_owned()),
            oldest_age: gauge!("jobqueue_oldest_pending_age_seconds", "queue" => queue.to_owned()),
            reclaimed: counter!("jobqueue_jobs_reclaimed_total", "queue" => queue.to_owned()),
        }
    }
}

/// A runner's handles, taken when it is built (so every series exists from
/// the start, at zero) and looked up per job without building a key.
#[derive(Debug, Default)]
pub(crate) struct RunnerMetrics {
    /// By job name, then queue: looked up without allocating.
    jobs: RwLock<HashMap<&'static str, HashMap<String, Arc<JobMetrics>>>>,
    queues: HashMap<String, QueueGauges>,
}

impl RunnerMetrics {
    /// Handles for every (queue, job) pair of `jobs` and every queue.
    pub(crate) fn new<'a>(
        queues: impl IntoIterator<Item = &'a str>,
        jobs: impl IntoIterator<Item = (&'a str, &'static str)>,
    ) -> Self {
        let mut by_job: HashMap<&'static str, HashMap<String, Arc<JobMetrics>>> = HashMap::new();
        for (queue, job) in jobs {
            by_job
                .entry(job)
                .or_default()
                .insert(queue.to_owned(), Arc::new(JobMetrics::new(queue, job)));
        }
        let queues = queues
            .into_iter()
            .map(|queue| (queue.to_owned(), QueueGauges::new(queue)))
            .collect();
        Self {
            jobs: RwLock::new(by_job),
            queues,
        }
    }

    /// The handles of `job` on `queue` (a job routed to a queue it was not
    /// declared on gets its handles the first time).
    pub(crate) fn job(&self, queue: &str, job: Option<&'static str>) -> Arc<JobMetrics> {
        let job = job.unwrap_or(UNKNOWN_JOB);
        if let Some(found) = self
            .jobs
            .read()
            .expect("metrics lock")
            .get(job)
            .and_then(|queues| queues.get(queue))
        {
            return Arc::clone(found);
        }
        let mut jobs = self.jobs.write().expect("metrics lock");
        Arc::clone(
            jobs.entry(job)
                .or_default()
                .entry(queue.to_owned())
                .or_insert_with(|| Arc::new(JobMetrics::new(queue, job))),
        )
    }

    /// The sampled gauges of `queue`.
    pub(crate) fn queue(&self, queue: &str) -> Option<&QueueGauges> {
        self.queues.get(queue)
    }
}
