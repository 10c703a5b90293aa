//! Helpers for testing your own jobs and the code that enqueues them
//! (feature `testing`).

mod drain;
mod port;
mod record;
mod run;
mod server;

pub use drain::{Drained, drain};
pub use port::PortReservation;
pub(crate) use record::Recorder;
pub use record::{
    Enqueued, EnqueuedJob, all_enqueued, assert_enqueued, assert_enqueued_with, clear, enqueued,
    refute_enqueued,
};
pub use run::{run, run_with};
pub use server::{RedisServer, RedisServerBuilder};
