//! The Redis CPU floor of the reference data model, for the benchmark.
//!
//! `scripts/bench --peers` compares jobqueue's Redis CPU per job with
//! bullmq-official's. This module runs, on the same server in the same run,
//! the cheapest thing that can still call itself the reference design: only
//! the commands the reference's own enqueue, claim and complete run per job
//! (`tests/lua/floor_*.lua`), batched as jobqueue batches them, with none of
//! the checks, fencing sets, counters or clean-up jobqueue adds. Nothing may
//! use these scripts for real work: a job they claim has no lease and a
//! repeated complete is not recognised. Their cost per job is the floor any
//! implementation of the reference layout pays, so jobqueue's figure divided
//! by it says how much its guarantees cost, and the floor divided by
//! bullmq's says how far below bullmq the layout itself allows.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::MultiplexedConnection;

const ENQUEUE: &str = include_str!("../lua/floor_enqueue.lua");
const CLAIM: &str = include_str!("../lua/floor_claim.lua");
const COMPLETE: &str = include_str!("../lua/floor_complete.lua");

/// The keys of the floor's queue (the reference layout, queue `floor`).
const PENDING: &str = "queue:floor:pending";
const PROCESSING: &str = "queue:floor:processing";
const COMPLETED: &str = "queue:floor:completed";
const PREFIX: &str = "queue:floor:job:";
const EVENTS: &str = "queue:floor:events";

/// Unique ids and tokens without a random source: a counter, in hex.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn fresh() -> String {
    format!("{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Enqueues `jobs` jobs of `payload`, `batch` per script call, one call at
/// a time.
pub async fn enqueue(conn: &mut MultiplexedConnection, jobs: usize, batch: usize, payload: &str) {
    let script = redis::Script::new(ENQUEUE);
    let mut left = jobs;
    while left > 0 {
        let n = left.min(batch.max(1));
        let mut call = script.prepare_invoke();
        call.key(PENDING).arg(PREFIX).arg(now_ms());
        for _ in 0..n {
            call.arg(fresh()).arg(payload);
        }
        let written: usize = call.invoke_async(conn).await.expect("floor enqueue");
        assert_eq!(written, n, "the floor enqueue wrote every job");
        left -= n;
    }
}

/// Claims and completes everything pending, `batch` jobs per claim and per
/// complete, with `in_flight` loops at once (as a runner keeps several
/// claims in flight); returns the number of jobs completed.
pub async fn process(conn: &MultiplexedConnection, batch: usize, in_flight: usize) -> usize {
    let loops: Vec<_> = (0..in_flight.max(1))
        .map(|_| {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                let claim = redis::Script::new(CLAIM);
                let complete = redis::Script::new(COMPLETE);
                let mut done = 0;
                loop {
                    let mut call = claim.prepare_invoke();
                    call.key(PENDING).key(PROCESSING).arg(PREFIX);
                    for _ in 0..batch.max(1) {
                        call.arg(fresh());
                    }
                    let claimed: Vec<(String, String, String)> =
                        call.invoke_async(&mut conn).await.expect("floor claim");
                    if claimed.is_empty() {
                        return done;
                    }
                    let mut call = complete.prepare_invoke();
                    call.key(PROCESSING).key(COMPLETED).arg(PREFIX).arg(EVENTS);
                    for (id, token, _payload) in &claimed {
                        call.arg(id).arg(token).arg("null");
                    }
                    let completed: usize =
                        call.invoke_async(&mut conn).await.expect("floor complete");
                    assert_eq!(completed, claimed.len(), "every floor claim completes");
                    done += completed;
                }
            })
        })
        .collect();
    let mut done = 0;
    for task in loops {
        done += task.await.expect("floor loop");
    }
    done
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
