//! `jobqueue`: inspect and operate queues from a shell.
//!
//! Tables by default, `--json` for scripts. Exit codes: 0 done, 1 an error
//! (Redis unreachable, bad data), 2 a usage error (invalid input included),
//! 3 no such job or queue, or nothing to do.
//!
//! `jobqueue -q email limit --rate 100/s --burst 10 --max-running 5` sets
//! the fleet-wide limits every runner of queue `email` obeys; `limit` alone
//! shows them.

use std::process::ExitCode;
use std::time::Duration;

mod dashboard;
mod limit;
mod output;

use clap::{Parser, Subcommand};
use dashboard::dashboard;
use jobqueue::client::EnqueueOptions;
use jobqueue::dashboard::JobSummary;
use jobqueue::queue::{JobStatus, NewJob, Queue};
use jobqueue::{Client, Rate};
use limit::{Change, Scope, limit};
use output::Output;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "jobqueue",
    version,
    about = "Inspect and operate jobqueue queues in Redis"
)]
struct Cli {
    /// The Redis server.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        global = true
    )]
    redis_url: String,
    /// The queue to act on.
    #[arg(short, long, default_value = "jobs", global = true)]
    queue: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every queue with keys in Redis (found with SCAN, on every primary of
    /// a cluster), by name, with its depths.
    Queues,
    /// Depths (pending counts every lane: prioritized and keyed jobs too)
    /// and fleet-wide counters; an error (exit 3) for a queue with no key
    /// in Redis.
    Stats,
    /// Jobs in one state, oldest to run first for pending, newest first otherwise.
    List {
        /// Which list: pending, scheduled, processing, completed, failed or cancelled.
        state: JobStatus,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// How many to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// One job's every field: numbers as numbers, the payload, result and
    /// progress as JSON, and each `*_at_ms` timestamp also as RFC 3339 UTC
    /// text (`enqueued_at`).
    Show {
        /// The job's id.
        id: String,
    },
    /// Enqueues a job with a JSON payload.
    Enqueue {
        /// The payload, as JSON.
        payload: String,
        /// The job name a runner dispatches on.
        #[arg(long)]
        name: Option<String>,
        /// Claims before the job fails for good.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Hold the job back this many milliseconds.
        #[arg(long)]
        delay_ms: Option<u64>,
    },
    /// Sends a dead letter (or all of them) back to pending.
    Retry {
        /// The job's id.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<String>,
        /// Retry every failed job of the queue.
        #[arg(long)]
        all_failed: bool,
    },
    /// Cancels a job: a waiting one never runs; a running one is stopped at
    /// its next lease renewal and ends as cancelled.
    Cancel {
        /// The job's id.
        id: String,
        /// Stored as the job's cancel_reason.
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Batches living on the queue (the queue of their callbacks), newest
    /// first, with their progress: how many children settled of how many.
    Batches {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One batch: its state, progress and callbacks.
    Batch {
        /// The batch's id.
        id: String,
    },
    /// Periodic schedules of the queue, with their last and next run (UTC).
    Schedules,
    /// Removes a periodic schedule; the jobs it enqueued stay.
    Unschedule {
        /// The schedule's name (a #[job(cron)] job's schedule is named after the job).
        name: String,
    },
    /// Runs one sweep: expired claims back to pending, leftovers dropped.
    Reclaim,
    /// Stops runners from claiming from the queue.
    Pause,
    /// Lets runners claim from the queue again.
    Resume,
    /// Shows or changes the queue's fleet-wide limits.
    ///
    /// A rate, a burst and a cap on jobs running at once across every
    /// runner: for the queue, as defaults for each rate key (--per-key), or
    /// for one rate key (--key).
    ///
    /// Without --rate, --burst, --max-running or --clear it shows the
    /// limits. With them it changes only the limits given and keeps the
    /// others (`limit --burst 20` keeps the rate); a burst that was the old
    /// rate's default (its count) follows a new --rate. A key without
    /// limits of its own starts from the per-key defaults. Every runner
    /// applies a change at its next claim. After a change it shows what is
    /// now stored.
    #[command(
        visible_alias = "limits",
        after_help = "Examples:\n  \
            jobqueue -q email limit --rate 100/s --burst 10 --max-running 5\n  \
            jobqueue -q email limit --per-key --rate 5/s\n  \
            jobqueue -q email limit --key tenant:42 --max-running 2\n  \
            jobqueue -q email limit --key tenant:42 --clear\n  \
            jobqueue -q email limit --clear"
    )]
    Limit {
        /// Jobs started per period, fleet-wide: 100/s, 5/m, 1000/h, 20/d,
        /// 10/250ms.
        #[arg(long)]
        rate: Option<Rate>,
        /// Jobs that may start at once after a quiet spell (needs a rate;
        /// default: the rate's count).
        #[arg(long)]
        burst: Option<u32>,
        /// Most jobs running at once across every runner.
        #[arg(long)]
        max_running: Option<u32>,
        /// Removes every limit (of the queue, of the per-key defaults with
        /// --per-key, or a key's own limits with --key: it gets the
        /// defaults again).
        #[arg(long, conflicts_with_all = ["rate", "burst", "max_running"])]
        clear: bool,
        /// Acts on the defaults each rate key gets instead of the queue's
        /// own limits.
        #[arg(long, conflicts_with = "key")]
        per_key: bool,
        /// Acts on the limits of this one rate key.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Deletes every key of the queue.
    Purge {
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Serves the web dashboard.
    Dashboard {
        /// The address to bind; anything but loopback needs --token.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The port.
        #[arg(long, default_value_t = 8793)]
        port: u16,
        /// A bearer token every request must present.
        #[arg(long, env = "JOBQUEUE_DASHBOARD_TOKEN")]
        token: Option<String>,
    },
}

/// A failure with its exit code.
struct Failure(u8, String);

impl From<jobqueue::Error> for Failure {
    fn from(e: jobqueue::Error) -> Self {
        Self(1, e.to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = Client::connect(&cli.redis_url)
        .await
        .map_err(|e| Failure(1, format!("could not reach Redis: {e}")))?;
    let queue = client
        .queue(&cli.queue)
        .map_err(|e| Failure(2, e.to_string()))?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Queues => {
            let names = client.queue_names().await?;
            let queues = names
                .iter()
                .map(|name| client.queue(name))
                .collect::<Result<Vec<Queue>, _>>()?;
            // Every queue's stats at once: one round trip, not one per queue.
            let stats = futures_util::future::try_join_all(queues.iter().map(Queue::stats)).await?;
            let rows: Vec<Value> = names
                .iter()
                .zip(&stats)
                .map(|(name, s)| {
                    json!({
                        "queue": name,
                        "pending": s.pending_depth,
                        "scheduled": s.scheduled_depth,
                        "processing": s.processing_depth,
                        "completed": s.completed_depth,
                        "failed": s.failed_depth,
                        "cancelled": s.cancelled_depth,
                        "paused": s.paused,
                    })
                })
                .collect();
            out.table(
                &rows,
                &[
                    "queue",
                    "pending",
                    "scheduled",
                    "processing",
                    "completed",
                    "failed",
                    "cancelled",
                    "paused",
                ],
            );
        }
        Command::Stats => {
            // Zeros for a name nothing ever used (a typo) would read as an
            // idle queue.
            if !queue.exists().await? {
                return Err(Failure(
                    3,
                    format!(
                        "no queue {} in Redis (none of its keys exists); `jobqueue queues` lists the queues there",
                        cli.queue
                    ),
                ));
            }
            let stats = queue.stats().await?;
            let mut record = serde_json::to_value(stats).expect("stats serialize");
            // Anything but noeviction lets Redis drop job keys under memory
            // pressure: an operator looking at the queue should see it.
            record["maxmemory_policy"] =
                json!(queue.connection().maxmemory_policy().unwrap_or("unknown"));
            out.record(&record);
        }
        Command::List {
            state,
            limit,
            offset,
        } => {
            let range = offset..offset + limit;
            let ids = queue.list(state, range).await?;
            let records = queue.get_jobs(&ids).await?;
            let jobs: Vec<Value> = ids
                .iter()
                .zip(&records)
                .map(|(id, r)| json!(JobSummary::new(id, r.as_ref())))
                .collect();
            out.table(
                &jobs,
                &[
                    "id",
                    "status",
                    "attempts",
                    "progress",
                    "payload",
                    "last_error",
                    "result",
                ],
            );
        }
        Command::Show { id } => {
            let record = queue
                .get_job(&id)
                .await?
                .ok_or_else(|| Failure(3, format!("no job {id} in queue {}", cli.queue)))?;
            out.record(&record.to_json());
        }
        Command::Enqueue {
            payload,
            name,
            max_attempts,
            delay_ms,
        } => {
            let mut options = EnqueueOptions::new();
            if let Some(max) = max_attempts {
                options = options.max_attempts(max);
            }
            if let Some(ms) = delay_ms {
                options = options.delay(Duration::from_millis(ms));
            }
            let mut job = NewJob::from_json(payload).options(options);
            if let Some(name) = name {
                job = job.name(name);
            }
            let id = queue.submit(job).await.map_err(|e| match e {
                jobqueue::Error::Json(_)
                | jobqueue::Error::InvalidName { .. }
                | jobqueue::Error::InvalidOption { .. } => Failure(2, e.to_string()),
                e => e.into(),
            })?;
            out.record(&json!({ "id": id }));
        }
        Command::Retry { id, all_failed } => {
            let retried = if all_failed {
                queue.retry_all_failed().await?
            } else {
                let id = id.unwrap_or_default();
                let retried = queue.retry_failed(&id).await.map_err(|e| match e {
                    jobqueue::Error::UniqueLockHeld { .. } => Failure(3, e.to_string()),
                    e => e.into(),
                })?;
                if !retried {
                    return Err(Failure(
                        3,
                        format!("job {id} is not a failed job of queue {}", cli.queue),
                    ));
                }
                vec![id]
            };
            out.record(&json!({ "retried": retried }));
        }
        Command::Cancel { id, reason } => {
            let outcome = queue.cancel(&id, &reason).await?;
            if !outcome.is_applied() {
                return Err(Failure(
                    3,
                    format!("job {id} of queue {}: {outcome}", cli.queue),
                ));
            }
            out.record(
                &json!({ "id": id, "outcome": outcome.as_str(), "status": outcome.status() }),
            );
        }
        Command::Batches { limit } => {
            let batches = client.batches(&cli.queue, limit).await?;
            let rows: Vec<Value> = batches.iter().map(batch_row).collect();
            out.table(
                &rows,
                &[
                    "id",
                    "state",
                    "progress",
                    "succeeded",
                    "failed",
                    "created_at_ms",
                ],
            );
        }
        Command::Batch { id } => {
            let status = client
                .batch_handle(&cli.queue, &id)?
                .status()
                .await?
                .ok_or_else(|| {
                    Failure(
                        3,
                        format!("no batch {id} on queue {} (it may have expired)", cli.queue),
                    )
                })?;
            out.record(&batch_row(&status));
        }
        Command::Schedules => {
            let schedules = queue.schedules().await?;
            let rows: Vec<Value> = schedules.iter().map(|s| json!(s)).collect();
            out.table(
                &rows,
                &[
                    "name",
                    "cron",
                    "tz",
                    "job",
                    "next_run",
                    "last_run",
                    "last_job_id",
                ],
            );
        }
        Command::Unschedule { name } => {
            if !queue.remove_schedule(&name).await? {
                return Err(Failure(
                    3,
                    format!("queue {} has no schedule {name}", cli.queue),
                ));
            }
            out.record(&json!({ "removed": name }));
        }
        Command::Reclaim => {
            let report = queue.reclaim_stuck().await?;
            out.record(&serde_json::to_value(report).expect("report serializes"));
        }
        Command::Pause => {
            queue.pause().await?;
            out.record(&json!({ "queue": cli.queue, "paused": true }));
        }
        Command::Resume => {
            queue.resume().await?;
            out.record(&json!({ "queue": cli.queue, "paused": false }));
        }
        Command::Limit {
            rate,
            burst,
            max_running,
            clear,
            per_key,
            key,
        } => {
            let change = Change {
                rate,
                burst,
                max_running,
                clear,
            };
            let scope = match (per_key, key) {
                (true, _) => Scope::PerKey,
                (false, Some(key)) => Scope::Key(key),
                (false, None) => Scope::Queue,
            };
            let limits = limit(&queue, &scope, &change).await?;
            out.limits(&limits);
        }
        Command::Purge { yes } => {
            if !yes {
                return Err(Failure(
                    2,
                    format!("purge deletes every job of queue {}: add --yes", cli.queue),
                ));
            }
            let deleted = queue.purge().await?;
            out.record(&json!({ "queue": cli.queue, "deleted_keys": deleted }));
        }
        Command::Dashboard { host, port, token } => {
            dashboard(&client, &queue, &host, port, token).await?
        }
    }
    Ok(())
}

/// A batch as the CLI prints it: its fields and `progress` ("n/m").
fn batch_row(status: &jobqueue::workflow::BatchStatus) -> Value {
    let mut row = serde_json::to_value(status).expect("a batch status serializes");
    row["progress"] = json!(format!("{}/{}", status.settled(), status.total));
    row
}
