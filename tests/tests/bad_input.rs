//! Nothing read from Redis is trusted: malformed hashes land in `failed`
//! with the reason, ids without a job are dropped, and nothing panics.

use std::time::Duration;

use jobqueue::queue::{JobStatus, QueueOptions};
use jobqueue_tests::*;
use serde_json::json;

#[tokio::test]
async fn malformed_jobs_fail_with_the_reason_and_the_claim_moves_on() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    let cases = [
        (
            "00000000000000f1",
            "attempts",
            "abc",
            "attempts is \"abc\", not a number",
        ),
        (
            "00000000000000f2",
            "payload",
            "{not json",
            "payload is not valid JSON",
        ),
        (
            "00000000000000f3",
            "max_attempts",
            "many",
            "max_attempts is \"many\", not a number",
        ),
        (
            "00000000000000f4",
            "visibility_ms",
            "soon",
            "visibility_ms is \"soon\", not a number",
        ),
    ];
    for (id, field, value, _) in cases {
        reference_enqueue(&mut c, "jobs", id, "{}").await;
        hset(&mut c, &format!("queue:jobs:job:{id}"), &[(field, value)]).await;
    }
    reference_enqueue(&mut c, "jobs", "00000000000000f5", "{}").await;
    exec(
        &mut c,
        &["HDEL", "queue:jobs:job:00000000000000f5", "payload"],
    )
    .await;
    let good = q.enqueue(&json!({"fine": true})).await.unwrap();

    let job = q
        .claim(Duration::ZERO)
        .await
        .unwrap()
        .expect("the good job, past the bad ones");
    assert_eq!(job.id(), good);
    for (id, _, _, reason) in cases {
        let record = q.get_job(id).await.unwrap().unwrap();
        assert_eq!(record.status(), Some(JobStatus::Failed), "{id}");
        assert!(
            record.last_error().unwrap().contains(reason),
            "{id}: {:?}",
            record.last_error()
        );
    }
    let missing = q.get_job("00000000000000f5").await.unwrap().unwrap();
    assert_eq!(missing.status(), Some(JobStatus::Failed));
    assert!(
        missing
            .last_error()
            .unwrap()
            .contains("payload field is missing")
    );
    assert_eq!(list(&mut c, "queue:jobs:failed").await.len(), 5);
    assert_eq!(list(&mut c, "queue:jobs:processing").await, vec![good]);
    assert_eq!(q.stats().await.unwrap().failed_total, 5);
}

#[tokio::test]
async fn ids_without_a_job_and_duplicate_entries_are_dropped_not_run() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    exec(&mut c, &["LPUSH", "queue:jobs:pending", "0000000000000a01"]).await;
    let id = q.enqueue(&json!({})).await.unwrap();
    exec(&mut c, &["LPUSH", "queue:jobs:pending", &id]).await;

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
    assert!(
        q.claim(Duration::ZERO).await.unwrap().is_none(),
        "the duplicate entry is not a second job"
    );
    assert_eq!(
        list(&mut c, "queue:jobs:processing").await,
        vec![id.clone()]
    );
    assert!(list(&mut c, "queue:jobs:pending").await.is_empty());
    let _ = q.complete(&job, &json!(1)).await.unwrap();

    // A completed job's id listed again in pending is a stale entry.
    exec(&mut c, &["LPUSH", "queue:jobs:pending", &id]).await;
    assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
    assert_eq!(
        q.get_job(&id).await.unwrap().unwrap().status(),
        Some(JobStatus::Completed)
    );
    assert_eq!(q.stats().await.unwrap().completed_total, 1);
}

#[tokio::test]
async fn a_malformed_stats_hash_is_a_clear_error() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    hset(&mut c, "queue:jobs:stats", &[("completed_total", "lots")]).await;
    let err = q.stats().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("completed_total is \"lots\", not a number"),
        "{err}"
    );
}
