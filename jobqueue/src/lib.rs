//! Background jobs on Redis.
//!
//! Define a job by annotating an `async fn` with [`#[job]`](job), enqueue it
//! with a typed call that checks the payload at compile time, follow it with
//! the [`JobHandle`](client::JobHandle) you get back, and run it with a
//! [`Runner`] embedded in your service.
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
//! jobqueue::Runner::builder(client).concurrency(20).build()?.run(shutdown).await;
//! # Ok(())
//! # }
//! ```
//!
//! The crate root holds what a job author needs: [`job`], [`Client`],
//! [`Runner`], [`JobContext`], [`JobError`], [`Error`], [`Result`] and
//! [`CancellationToken`]. The rest lives in modules named for what they
//! are:
//!
//! | module | what it holds |
//! |---|---|
//! | [`client`] | [`Client`], its builder, [`EnqueueOptions`](client::EnqueueOptions), [`JobHandle`](client::JobHandle) |
//! | [`client`] (also) | [`Client::events`]: a `Stream` of a queue's [`Event`](queue::Event)s |
//! | [`runner`] | [`Runner`] and its builder |
//! | [`workflow`] | batches with callbacks ([`BatchBuilder`](workflow::BatchBuilder), [`BatchHandle`](workflow::BatchHandle), [`BatchSummary`](workflow::BatchSummary)) and typed chains ([`ChainBuilder`](workflow::ChainBuilder), [`ChainHandle`](workflow::ChainHandle)) |
//! | [`middleware`] | tower layers around every run: [`JobRequest`](middleware::JobRequest), [`JobOutcome`](middleware::JobOutcome), [`on_outcome`](middleware::on_outcome) |
//! | [`outcome`] | [`JobError`], its [`Disposition`](outcome::Disposition), the [`JobResultExt`](outcome::JobResultExt) shorthands |
//! | [`definition`] | the [`Job`](definition::Job) trait `#[job]` implements, [`Backoff`](definition::Backoff), what it registers |
//! | [`registry`] | the [`Registry`](registry::Registry) of linked jobs |
//! | [`queue`] | the raw queue layer: [`Queue`](queue::Queue), claimed jobs, records, stats, [`Event`](queue::Event)s |
//! | [`connection`] | [`Connection`](connection::Connection) to a server or a cluster |
//! | `dashboard` | the web dashboard as an axum router, and `metrics_router`, the fleet's Prometheus figures read from Redis (feature `dashboard`) |
//! | `testing` | helpers for your tests: `run`, `Client::recording`, `assert_enqueued`, `drain`, `RedisServer` (feature `testing`) |
//! | [`docs`] | guides: the data model, the delivery guarantee, the reference's bugs |
//!
//! Under the typed layer sits [`queue::Queue`], one queue of the Redis
//! job-queue reference design's key layout (`queue:{name}:pending`,
//! `processing`, `completed`, `failed`, a hash per job, events on
//! `queue:{name}:events`), so jobs enqueued by any of the reference's nine
//! implementations are processed here, and the reverse. It fixes the
//! reference's races ([`docs::reference_bugs`]): claims are stamped
//! atomically, every state change is fenced by the claim token and
//! idempotent, leases can be renewed, poison jobs end in `failed`, and
//! counters are fleet-wide.
//!
//! The same URL may name a Redis Cluster node:
//! [`Connection::connect`](connection::Connection::connect) detects the
//! cluster, routes every command by slot (following `MOVED` and `ASK`), and
//! queues take the hash-tagged layout (`queue:{email}:pending`) so each
//! queue lives in one slot. A queue too busy for one primary can be split
//! over several with [`ClientBuilder::shards`](client::ClientBuilder::shards).
//!
//! The data model is documented key by key in [`docs::data_model`]; the
//! delivery guarantee, and the test behind each promise, in
//! [`docs::reliability`].
//!
//! # Features
//!
//! - `dashboard` (default): the web dashboard, `jobqueue::dashboard`.
//! - `tls`: `rediss://` URLs, through rustls.
//! - `anyhow`: a handler returning `anyhow::Result` keeps the
//!   [`Disposition`](outcome::Disposition) of a [`JobError`] it carries.
//! - `otel`: traces across enqueue and run. `enqueue` opens a `send {queue}`
//!   producer span under the current span and stores its W3C trace context
//!   in the job hash (`traceparent`, `tracestate`); each run's `job` span
//!   (a consumer `process` span) takes it as its parent, retries and
//!   reclaims included. Built on `tracing-opentelemetry` 0.34 with
//!   `opentelemetry` 0.33 (the two move as a pair: use the same versions).
//!   The application installs the propagator, as the global default is a
//!   noop that stores nothing:
//!   `opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())`
//!   (`opentelemetry_sdk::propagation`).
//! - `metrics`: in-process counters, histograms and gauges through the
//!   `metrics` facade (the application installs the exporter before it
//!   builds its [`Runner`]); the names are listed in the README's "In
//!   production". Nothing is compiled in without it.
//! - `testing`: `jobqueue::testing`, for the tests of an application's own
//!   jobs (enable it under `[dev-dependencies]`).
//! - `test-hooks`: fault-injection knobs for this workspace's tests and
//!   demo. Not a stable API.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
pub mod client;
pub mod connection;
mod context;
#[cfg(feature = "dashboard")]
#[cfg_attr(docsrs, doc(cfg(feature = "dashboard")))]
pub mod dashboard;
pub mod definition;
mod error;
mod id;
mod keys;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod middleware;
mod otel;
pub mod outcome;
pub mod queue;
pub mod registry;
mod retry;
pub mod runner;
mod scripts;
mod shards;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod workflow;

pub mod docs {
    //! Guides.

    #[doc = include_str!("docs/data-model.md")]
    pub mod data_model {}

    #[doc = include_str!("docs/reliability.md")]
    pub mod reliability {}

    #[doc = include_str!("docs/reference-bugs.md")]
    pub mod reference_bugs {}
}

pub use client::Client;
pub use context::JobContext;
pub use error::{Error, Result};
pub use outcome::JobError;
pub use queue::{Limits, QueueLimits, Rate};
pub use runner::Runner;
/// The token that tells a [`Runner`] to shut down (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;

#[doc = include_str!("docs/job.md")]
pub use jobqueue_macros::job;

/// What the code `#[job]` generates names. Not a public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    use serde::de::DeserializeOwned;

    use serde::Serialize;
    use serde_json::value::RawValue;

    pub use crate::backoff::Backoff;
    pub use crate::context::JobContext;
    pub use crate::definition::{HandlerFuture, Job, JobDefinition};
    pub use crate::outcome::{IntoJobResult, JobError};
    pub use crate::queue::{Limits, Misfire, Rate, UniqueMode};
    pub use core::time::Duration;
    pub use inventory;
    pub use jobqueue_rules::{DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, DEFAULT_VISIBILITY};
    pub use serde_json;

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
        F: Future<Output = Result<Box<RawValue>, JobError>> + Send + 'static,
    {
        Box::pin(future)
    }

    /// Turns a `Result`-like return value into the stored result JSON.
    pub fn finish<R: IntoJobResult>(returned: R) -> Result<Box<RawValue>, JobError> {
        finish_value(returned.into_job_result()?)
    }

    /// Turns a plain return value (`()`, a number, a struct) into the stored
    /// result JSON.
    pub fn finish_value<T: Serialize>(value: T) -> Result<Box<RawValue>, JobError> {
        serde_json::value::to_raw_value(&value)
            .map_err(|e| JobError::permanent(format!("the result does not serialize: {e}")))
    }
}

/// The README's Rust examples, compiled as doctests (with the features
/// they show; `scripts/test` and `cargo test --workspace` turn them on).
#[doc = include_str!("../../README.md")]
#[cfg(all(
    doctest,
    feature = "dashboard",
    feature = "metrics",
    feature = "otel",
    feature = "testing"
))]
pub struct ReadmeDoctests;
