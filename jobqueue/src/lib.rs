//! Background jobs on Redis.
//!
//! `jobqueue` stores jobs in the key layout of the Redis job-queue reference
//! design (`queue:{name}:pending`, `processing`, `completed`, `failed`, a hash
//! per job, events on `queue:{name}:events`), so jobs enqueued by any of the
//! reference's nine implementations are processed here, and the reverse. It
//! fixes the reference's races: claims are stamped atomically, every state
//! change is fenced by the claim token and idempotent, leases can be renewed,
//! poison jobs end in `failed`, and counters are fleet-wide.
//!
//! # Quick start
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
//! The data model is documented key by key in [`docs::data_model`].

mod connection;
mod error;
mod id;
mod job;
mod keys;
mod queue;
mod scripts;

pub mod docs {
    //! Guides.

    #[doc = include_str!("docs/data-model.md")]
    pub mod data_model {}
}

pub use connection::{Connection, ConnectionOptions};
pub use error::{Error, Result};
pub use job::{Ack, ClaimedJob, JobRecord, JobStatus, NewJob};
pub use keys::{KeyLayout, Keys};
pub use queue::{Queue, QueueOptions, Stats, SweepReport};

/// The README's Rust examples, compiled as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
