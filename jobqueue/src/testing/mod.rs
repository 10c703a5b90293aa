//! Helpers for testing your own jobs and the code that enqueues them
//! (feature `testing`).

mod server;

pub use server::RedisServer;
