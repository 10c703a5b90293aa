//! An RAII `redis-server` for integration tests.

/// A private `redis-server` (placeholder; being written).
#[derive(Debug)]
pub struct RedisServer {}
