//! Many claimers on one queue: every job claimed exactly once, none lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobqueue::queue::{Ack, QueueOptions};
use jobqueue_tests::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_claimers_take_5000_jobs_each_exactly_once() {
    let server = RedisServer::start();
    let q = queue(&server, "jobs", QueueOptions::default()).await;
    let payloads: Vec<Value> = (0..5000).map(|n| json!({"n": n})).collect();
    let mut enqueued = Vec::new();
    for chunk in payloads.chunks(500) {
        enqueued.extend(q.enqueue_many(chunk).await.unwrap());
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (q, seen) = (q.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                // Half the workers claim one at a time, half in batches.
                let batch = if w % 2 == 0 { 1 } else { 7 };
                loop {
                    let jobs = q
                        .claim_many(batch, Duration::from_millis(200))
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        return;
                    }
                    for job in jobs {
                        seen.lock().unwrap().push(job.id().to_owned());
                        assert_eq!(q.complete(&job, &json!(w)).await.unwrap(), Ack::Completed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 5000, "no job claimed twice");
    assert_eq!(
        distinct,
        enqueued.iter().collect::<HashSet<_>>(),
        "no job lost"
    );
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (
            stats.completed_total,
            stats.pending_depth,
            stats.processing_depth
        ),
        (5000, 0, 0)
    );
}
