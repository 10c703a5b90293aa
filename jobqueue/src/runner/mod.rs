//! [`Runner`]: claims jobs, runs their handlers, renews their leases,
//! sweeps stuck and due jobs, retries failures, and shuts down cleanly.
//!
//! One task per queue claims jobs only when a slot is free to run them
//! (`claim`); each job runs in its own task (`execute`); one task renews
//! every running job's lease, one round trip per queue per tick, carrying
//! the progress the jobs reported (`leases`, `progress`);
//! one task sweeps (`sweeper`). Cancelling the token passed to
//! [`Runner::run`] stops claiming at once, gives running jobs
//! `shutdown_timeout` to finish, then cancels them and hands their jobs back
//! to pending without charging the attempt.

mod acks;
mod claim;
mod execute;
mod leases;
mod log_hint;
mod meter;
mod progress;
mod relayer;
mod slot;
mod sweeper;
mod ticker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::middleware::{BoxJobService, JobOutcome, JobRequest, Stack};
use crate::queue::Queue;
use crate::registry::Registry;

use leases::InFlight;
pub(crate) use progress::ProgressBuffer;
use slot::{Arbiter, Sharing};

/// Builds a [`Runner`]; see [`Runner::builder`].
#[derive(Debug)]
#[must_use = "call .build() to get a Runner"]
pub struct RunnerBuilder {
    client: Client,
    queues: Option<Vec<String>>,
    concurrency: usize,
    queue_limits: BTreeMap<String, usize>,
    shutdown_timeout: Duration,
    sweep_interval: Duration,
    claim_block: Duration,
    registry: Option<Registry>,
    auto_sweep: bool,
    weights: BTreeMap<String, u32>,
    strict: bool,
    stack: Stack,
}

impl RunnerBuilder {
    /// Wraps every job's run in `layer`, a tower [`Layer`](tower::Layer)
    /// (see [`middleware`](crate::middleware)): the layer's service gets a
    /// [`JobRequest`] and returns the run's [`JobOutcome`], whether the
    /// handler completed, failed, panicked, timed out or was stopped. The
    /// layer added last is the outermost, as with axum's `Router::layer`.
    /// A layer's own error fails the run (retried like any error), and a
    /// panic in a layer counts as the run's panic.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<BoxJobService>,
        L::Service:
            tower::Service<JobRequest, Response = JobOutcome> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<JobRequest>>::Error: Into<tower::BoxError>,
        <L::Service as tower::Service<JobRequest>>::Future: Send + 'static,
    {
        self.stack.push(layer);
        self
    }

    /// Shares the runner's slots between its queues by weight when more
    /// than one has jobs waiting (Sidekiq's weighted queues): with weights
    /// 3 and 1, a busy `critical` queue gets three slots for each one of a
    /// busy `default` queue. A queue with nothing waiting holds nothing
    /// back, and no weighted queue starves. A queue not named has weight 1.
    /// Without weights (the default), queues take slots as they free, first
    /// come first served.
    ///
    /// ```no_run
    /// # fn build(client: jobqueue::Client) -> jobqueue::Result<jobqueue::Runner> {
    /// jobqueue::Runner::builder(client)
    ///     .queues(["critical", "default", "low"])
    ///     .weights([("critical", 6), ("default", 3), ("low", 1)])
    ///     .build()
    /// # }
    /// ```
    pub fn weights<I, S>(mut self, weights: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        self.weights = weights.into_iter().map(|(q, w)| (q.into(), w)).collect();
        self
    }

    /// Serves the queues strictly in the order given to
    /// [`queues`](Self::queues): a slot goes to a later queue only while no
    /// earlier one waits for it. A busy first queue starves the others;
    /// prefer [`weights`](Self::weights) unless that is what you want.
    pub fn strict_order(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Whether this runner sweeps (reclaims expired leases, promotes due
    /// jobs). Default true; turn it off where another process sweeps, or to
    /// show a manual sweep at work, as the demo does.
    pub fn auto_sweep(mut self, enabled: bool) -> Self {
        self.auto_sweep = enabled;
        self
    }

    /// The queues to serve. Default: every queue that has a registered job.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// How many jobs run at once, over all queues. Default 10.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How many jobs of `queue` run at once (within the global limit).
    pub fn queue_concurrency(mut self, queue: impl Into<String>, n: usize) -> Self {
        self.queue_limits.insert(queue.into(), n);
        self
    }

    /// How long running jobs get to finish after shutdown begins before they
    /// are cancelled and handed back. Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How often expired leases are reclaimed and due jobs promoted. Default
    /// 1 s: a delayed job starts within about this long after its time, and a
    /// dead worker's job is back after its visibility plus this.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// How long an idle queue's claim blocks per round trip. Default 2 s.
    pub fn claim_block(mut self, block: Duration) -> Self {
        self.claim_block = block;
        self
    }

    /// Uses `registry` instead of every `#[job]` linked into the program.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Checks the configuration and builds the registry: fails on duplicate
    /// job names, a concurrency of zero, or a queue name Redis keys cannot hold.
    pub fn build(self) -> Result<Runner> {
        let invalid =
            |option: &'static str, reason: &str| Err(Error::invalid_option(option, reason));
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1");
        }
        if self.sweep_interval.is_zero() {
            return invalid("sweep_interval", "must be above zero");
        }
        let registry = match self.registry {
            Some(registry) => registry,
            None => Registry::from_inventory()?,
        };
        let names: Vec<String> = match self.queues {
            Some(names) => names,
            None => registry.queues().into_iter().map(str::to_owned).collect(),
        };
        if names.is_empty() {
            return invalid(
                "queues",
                "no queue to serve: no #[job] is registered and none was named",
            );
        }
        if self.weights.values().any(|w| *w == 0) {
            return invalid("weights", "a weight must be at least 1");
        }
        if let Some(unknown) = self.weights.keys().find(|q| !names.contains(q)) {
            return Err(Error::invalid_option(
                "weights",
                format!("queue {unknown:?} is not one this runner serves"),
            ));
        }
        let mut queues = Vec::with_capacity(names.len());
        let mut lanes = Vec::new();
        for name in names {
            if !registry.jobs().any(|d| d.queue() == name) {
                tracing::warn!(
                    queue = name,
                    "serving a queue with no registered job: only payload routing can run its jobs"
                );
            }
            let limit = self
                .queue_limits
                .get(&name)
                .copied()
                .unwrap_or(self.concurrency);
            if limit == 0 {
                return invalid("queue_concurrency", "must be at least 1");
            }
            // The shards of a sharded queue share its slots.
            let slots = Arc::new(Semaphore::new(limit));
            let shards = self.client.shard_queues(&name)?;
            let weight = f64::from(self.weights.get(&name).copied().unwrap_or(1));
            let per_shard = weight / shards.len() as f64;
            for queue in shards {
                let lane = lanes.len();
                lanes.push((per_shard, Arc::clone(&slots)));
                queues.push(Arc::new(QueueRt {
                    queue,
                    lane,
                    logical: name.clone(),
                    slots: Arc::clone(&slots),
                    in_flight: InFlight::default(),
                    acks: acks::Acks::default(),
                }));
            }
        }
        let arbiter = if self.strict {
            Some(Sharing::Strict)
        } else if !self.weights.is_empty() {
            Some(Sharing::Weighted)
        } else {
            None
        }
        .map(|sharing| Arc::new(Arbiter::new(sharing, lanes, self.concurrency)));
        #[cfg(feature = "metrics")]
        let metrics = {
            let logical: std::collections::BTreeSet<&str> =
                queues.iter().map(|q| q.logical.as_str()).collect();
            crate::metrics::RunnerMetrics::new(
                logical.iter().copied(),
                registry
                    .jobs()
                    .filter(|d| logical.contains(d.queue()))
                    .map(|d| (d.queue(), d.name())),
            )
        };
        Ok(Runner {
            shared: Arc::new(Shared {
                registry,
                queues,
                arbiter,
                slots: Arc::new(Semaphore::new(self.concurrency)),
                concurrency: self.concurrency,
                shutdown_timeout: self.shutdown_timeout,
                sweep_interval: self.sweep_interval,
                claim_block: self.claim_block,
                auto_sweep: self.auto_sweep,
                job_started: tokio::sync::Notify::new(),
                renew_basis: AtomicU64::new(u64::MAX),
                stack: self.stack,
                client: Arc::new(self.client),
                #[cfg(feature = "metrics")]
                metrics,
            }),
        })
    }
}

/// Runs `#[job]`s: embed one in your service's `main`.
///
/// ```no_run
/// use jobqueue::{Client, Runner};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn run() -> jobqueue::Result<()> {
/// let client = Client::connect("redis://127.0.0.1:6379/").await?;
/// let runner = Runner::builder(client).concurrency(50).build()?;
/// let shutdown = CancellationToken::new();
/// tokio::spawn({
///     let shutdown = shutdown.clone();
///     async move {
///         let _ = tokio::signal::ctrl_c().await;
///         shutdown.cancel();
///     }
/// });
/// runner.run(shutdown).await;
/// # Ok(()) }
/// ```
///
/// `run` takes the runner by value: one runner is one set of concurrency
/// limits, so it runs once. Build another for a second run.
#[derive(Debug)]
pub struct Runner {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    queues: Vec<Arc<QueueRt>>,
    /// Shares the global slots by weight or order, when configured.
    arbiter: Option<Arc<Arbiter>>,
    slots: Arc<Semaphore>,
    concurrency: usize,
    shutdown_timeout: Duration,
    sweep_interval: Duration,
    claim_block: Duration,
    auto_sweep: bool,
    /// Wakes the lease renewer when a job starts with a lease shorter than
    /// `renew_basis`.
    job_started: tokio::sync::Notify,
    /// The shortest lease (ms) the renewer's tick is based on; `u64::MAX`
    /// when no job runs.
    renew_basis: AtomicU64,
    /// The layers every run goes through.
    stack: Stack,
    /// The client handlers get in their context.
    client: Arc<Client>,
    /// The handles the runner reports to (feature `metrics`).
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::RunnerMetrics,
}

impl Shared {
    /// The metric handles of a run of `job` (`None`: no handler) from
    /// `queue` (logical).
    fn meter(&self, job: Option<&'static str>, queue: &str) -> meter::Meter {
        #[cfg(feature = "metrics")]
        return meter::Meter::new(self.metrics.job(queue, job));
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (job, queue);
            meter::Meter::default()
        }
    }

    /// Called when `job` starts: wakes the lease renewer only when the job's
    /// lease is shorter than the one its tick is based on (most jobs share
    /// their queue's lease, so most starts wake nothing).
    fn started(&self, job: &crate::queue::ClaimedJob) {
        let lease = job.lease_deadline_ms().saturating_sub(job.claimed_at_ms());
        if lease < self.renew_basis.load(Ordering::Relaxed) {
            self.renew_basis.store(lease, Ordering::Relaxed);
            self.job_started.notify_one();
        }
    }
}

/// Cancels its tokens when dropped.
struct CancelOnDrop(Vec<CancellationToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        for token in &self.0 {
            token.cancel();
        }
    }
}

/// One served queue (or one shard of it): its handle, its slot limit, and
/// its running jobs.
#[derive(Debug)]
struct QueueRt {
    queue: Queue,
    /// This queue's (shard's) place in the arbiter's lanes.
    lane: usize,
    /// The queue's name as jobs know it: the queue itself, or the sharded
    /// queue this is a shard of.
    logical: String,
    slots: Arc<Semaphore>,
    in_flight: InFlight,
    /// Outcomes of finished jobs, waiting for the claim loop to write them.
    acks: acks::Acks,
}

impl Runner {
    /// A builder with the defaults: every registered queue, concurrency 10,
    /// shutdown timeout 30 s, sweep interval 1 s.
    pub fn builder(client: Client) -> RunnerBuilder {
        RunnerBuilder {
            client,
            queues: None,
            concurrency: 10,
            queue_limits: BTreeMap::new(),
            shutdown_timeout: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(1),
            claim_block: Duration::from_secs(2),
            registry: None,
            auto_sweep: true,
            weights: BTreeMap::new(),
            strict: false,
            stack: Stack::default(),
        }
    }

    /// The registry the runner dispatches with.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The queues the runner serves (each shard of a sharded queue).
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        self.shared.queues.iter().map(|q| q.queue.name())
    }

    /// Runs until `shutdown` is cancelled, then drains: stops claiming at
    /// once, lets running jobs finish for up to `shutdown_timeout`, cancels
    /// the rest and hands their jobs back to pending without charging the
    /// attempt. Returns when every task has ended. Nothing else ends it:
    /// Redis outages are logged, backed off from and ridden out.
    ///
    /// A run is cancelled (at shutdown, past its `timeout`, or when its lease
    /// is lost) by cancelling its context first: `JobContext::cancelled`
    /// fires inside the handler, which then has a second to return before it
    /// is dropped. What it returns then is not used.
    ///
    /// # Cancellation safety
    /// Cancel `shutdown` rather than dropping this future: dropping it stops
    /// claiming, renewing and sweeping at once and interrupts running jobs
    /// without a grace period. They are handed back while the runtime keeps
    /// running; otherwise their leases expire and a sweep returns them.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = &self.shared;
        let jobs = TaskTracker::new();
        let interrupt = CancellationToken::new();
        let background = CancellationToken::new();
        log_hint::hint_once();
        tracing::info!(
            queues = ?self.queues().collect::<Vec<_>>(),
            concurrency = shared.concurrency,
            "runner started"
        );
        // Claim loops stop on the caller's token, or when this future is
        // dropped: the guard cancels everything run() started.
        let claiming = shutdown.child_token();
        let _guard = CancelOnDrop(vec![
            claiming.clone(),
            interrupt.clone(),
            background.clone(),
        ]);
        let renewer = tokio::spawn(leases::renew(Arc::clone(shared), background.clone()));
        let ticker = tokio::spawn(ticker::tick(Arc::clone(shared), background.clone()));
        let relayer = tokio::spawn(relayer::relay_loop(Arc::clone(shared), background.clone()));
        #[cfg(feature = "metrics")]
        let sampler = tokio::spawn(meter::sample(Arc::clone(shared), background.clone()));
        let sweeper = shared
            .auto_sweep
            .then(|| tokio::spawn(sweeper::sweep(Arc::clone(shared), background.clone())));
        let claimers: Vec<_> = shared
            .queues
            .iter()
            .map(|q| {
                tokio::spawn(claim::claim_loop(
                    Arc::clone(shared),
                    Arc::clone(q),
                    jobs.clone(),
                    claiming.clone(),
                    interrupt.clone(),
                ))
            })
            .collect();
        for claimer in claimers {
            let _ = claimer.await;
        }
        jobs.close();
        let running = jobs.len();
        if running > 0 {
            tracing::info!(running, timeout = ?shared.shutdown_timeout, "shutting down: waiting for running jobs");
        }
        if tokio::time::timeout(shared.shutdown_timeout, jobs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = jobs.len(),
                "shutdown timeout: cancelling running jobs and handing them back"
            );
            interrupt.cancel();
            jobs.wait().await;
        }
        background.cancel();
        let _ = renewer.await;
        let _ = ticker.await;
        let _ = relayer.await;
        #[cfg(feature = "metrics")]
        let _ = sampler.await;
        if let Some(sweeper) = sweeper {
            let _ = sweeper.await;
        }
        tracing::info!("runner stopped");
    }
}
