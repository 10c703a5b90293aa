//! Background jobs on Redis.
//!
//! Define a job by annotating an `async fn` with [`#[job]`](job), enqueue it
//! with a typed call that checks the payload at compile time, follow it with
//! the [`JobHandle`] you get back, and run it with a [`Runner`] embedded in
//! your service.
//!
//! ```no_run
//! use jobqueue::{job, Client, JobContext};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome {
//!     to: String,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Receipt {
//!     message_id: String,
//! }
//!
//! #[job(queue = "email", max_attempts = 3, visibility = "2m")]
//! async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<Receipt, std::io::Error> {
//!     Ok(Receipt { message_id: format!("{}-{}", ctx.id(), args.to) })
//! }
//!
//! # async fn run() -> jobqueue::Result<()> {
//! let client = Client::connect("redis://127.0.0.1:6379/").await?;
//! let handle = client.enqueue::<send_welcome>(Welcome { to: "alice@example.com".into() }).await?;
//! println!("enqueued {}", handle.id());
//!
//! // In the worker process:
//! let shutdown = jobqueue::CancellationToken::new();
//! jobqueue::Runner::builder(client).concurrency(20).build()?.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Under the typed layer sits [`Queue`], one queue of the Redis job-queue
//! reference design's key layout (`queue:{name}:pending`, `processing`,
//! `completed`, `failed`, a hash per job, events on `queue:{name}:events`), so
//! jobs enqueued by any of the reference's nine implementations are processed
//! here, and the reverse. It fixes the reference's races: claims are stamped
//! atomically, every state change is fenced by the claim token and
//! idempotent, leases can be renewed, poison jobs end in `failed`, and
//! counters are fleet-wide.
//!
//! ```no_run
//! use std::time::Duration;
//! use jobqueue::{Queue, QueueOptions};
//!
//! # async fn demo() -> jobqueue::Result<()> {
//! let queue = Queue::connect("redis://127.0.0.1:6379/", QueueOptions::new("email")).await?;
//! let id = queue.enqueue(&serde_json::json!({"to": "alice@example.com"})).await?;
//!
//! // In a worker:
//! if let Some(job) = queue.claim(Duration::from_secs(1)).await? {
//!     let to: serde_json::Value = job.payload()?;
//!     // ... send the mail, renewing the lease with queue.extend(&job) if it takes long ...
//!     queue.complete(&job, &serde_json::json!({"sent_to": to["to"]})).await?;
//! }
//!
//! // In a periodic sweeper:
//! let report = queue.reclaim_stuck().await?;
//! # let _ = (id, report);
//! # Ok(())
//! # }
//! ```
//!
//! The same URL may name a Redis Cluster node: [`Connection::open`] detects
//! the cluster, routes every command by slot (following `MOVED` and `ASK`),
//! and queues take the hash-tagged layout (`queue:{email}:pending`) so each
//! queue lives in one slot. A queue too busy for one primary can be split
//! over several with [`Client::with_shards`].
//!
//! The data model is documented key by key in [`docs::data_model`]; the
//! delivery guarantee, and the test behind each promise, in
//! [`docs::reliability`].

mod backoff;
mod client;
mod connection;
mod context;
#[cfg(feature = "dashboard")]
pub mod dashboard;
mod definition;
mod error;
mod id;
mod job;
mod keys;
mod outcome;
mod queue;
mod registry;
mod runner;
mod scripts;
mod shards;

pub mod docs {
    //! Guides.

    #[doc = include_str!("docs/data-model.md")]
    pub mod data_model {}

    #[doc = include_str!("docs/reliability.md")]
    pub mod reliability {}
}

pub use backoff::Backoff;
pub use client::{Client, JobBuilder, JobHandle};
pub use connection::{Connection, ConnectionOptions};
pub use context::JobContext;
pub use definition::{HandlerFn, HandlerFuture, Job, JobDefinition};
pub use error::{Error, Result};
pub use job::{Ack, ClaimedJob, JobRecord, JobStatus, NewJob};
pub use keys::{KeyLayout, Keys};
pub use outcome::{ErrorKind, IntoJobResult, JobError};
pub use queue::{Queue, QueueOptions, Stats, SweepReport};
pub use registry::Registry;
pub use runner::{Runner, RunnerBuilder};
/// The token that tells a [`Runner`] to shut down (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;

#[doc = include_str!("docs/job.md")]
pub use jobqueue_macros::job;

/// What the code `#[job]` generates names. Not a public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    use serde::de::DeserializeOwned;

    pub use crate::definition::{HandlerFuture, JobDefinition};
    pub use crate::outcome::IntoJobResult;
    pub use inventory;
    pub use serde_json;

    use crate::outcome::JobError;

    /// Decodes a payload; a payload that does not fit fails the job for good.
    pub fn decode_payload<T: DeserializeOwned>(json: &str) -> Result<T, JobError> {
        serde_json::from_str(json).map_err(|e| {
            JobError::permanent(format!(
                "payload does not decode as `{}`: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// A handler future that fails at once.
    pub fn fail_now(error: JobError) -> HandlerFuture {
        Box::pin(async move { Err(error) })
    }

    /// Boxes a handler's future; fails to compile unless it is `Send`.
    pub fn box_handler<F>(future: F) -> HandlerFuture
    where
        F: Future<Output = Result<String, JobError>> + Send + 'static,
    {
        Box::pin(future)
    }

    /// Turns a handler's return value into the stored result JSON.
    pub fn finish<R: IntoJobResult>(returned: R) -> Result<String, JobError> {
        let output = returned.into_job_result()?;
        serde_json::to_string(&output)
            .map_err(|e| JobError::permanent(format!("the result does not serialize: {e}")))
    }
}

/// The README's Rust examples, compiled as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
