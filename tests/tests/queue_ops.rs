//! Operator actions on a queue: pause and resume (honoured by runners),
//! retry dead letters, delete a job, and abandoning a run.

use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{Ack, JobStatus, NewJob, QueueOptions};
use jobqueue::{Client, JobError, Runner, job};
use jobqueue_tests::*;
use serde_json::json;

#[job(queue = "ops")]
async fn work(_n: u32) {}

#[job(queue = "ops-abandon", visibility = "200ms")]
async fn crash(_n: u32) -> Result<(), JobError> {
    Err(JobError::abandon("simulated crash"))
}

#[tokio::test]
async fn a_paused_queue_hands_out_nothing_until_resumed() {
    let (server, q, _c) = setup("ops", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    q.pause().await.unwrap();
    assert!(q.stats().await.unwrap().paused);
    client.enqueue_many::<work>(0..5).await.unwrap();
    assert!(
        q.claim(Duration::from_millis(300)).await.unwrap().is_none(),
        "paused"
    );
    // No sweep for a while: every script the runner runs is a claim.
    let runner = Runner::builder(client.clone())
        .queues(["ops"])
        .sweep_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut c = server.conn().await;
    exec(&mut c, &["CONFIG", "RESETSTAT"]).await;
    let (token, task) = start_runner(runner);
    // The runner asks the paused queue for work three times (INFO itself
    // runs no script).
    let asked = eventually(Duration::from_secs(10), || async {
        command_calls(&commandstats(&mut c.clone()).await, "evalsha") >= 3
    })
    .await;
    assert!(asked, "the runner never asked for work");
    assert_eq!(
        q.stats().await.unwrap().pending_depth,
        5,
        "the runner honours the pause"
    );
    assert_eq!(q.stats().await.unwrap().processing_depth, 0);
    q.resume().await.unwrap();
    assert!(stats_reach(&q, Duration::from_secs(10), |s| s.completed_total == 5).await);
    stop_runner(token, task).await;
    assert!(!q.stats().await.unwrap().paused);
}

#[tokio::test]
async fn dead_letters_can_be_retried_one_or_all() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default().max_attempts(1)).await;
    let ids = q
        .enqueue_many(&[json!(1), json!(2), json!(3)])
        .await
        .unwrap();
    for _ in 0..3 {
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(q.fail(&job, "boom").await.unwrap(), Ack::Failed);
    }
    assert!(q.retry_failed(&ids[1]).await.unwrap());
    assert!(!q.retry_failed(&ids[1]).await.unwrap(), "no longer failed");
    let record = q.get_job(&ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (record.status(), record.attempts().unwrap()),
        (Some(JobStatus::Pending), 0)
    );
    assert_eq!(record.last_error(), Some("boom"), "history kept");
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("queue:jobs:job:{}", ids[1]))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
    let mut rest = q.retry_all_failed().await.unwrap();
    rest.sort();
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(rest, want);
    let s = q.stats().await.unwrap();
    assert_eq!(
        (
            s.failed_depth,
            s.pending_depth,
            s.retried_total,
            s.revived_total
        ),
        (0, 3, 0, 3)
    );
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.attempt(), 1, "a fresh set of attempts");
}

#[tokio::test]
async fn delete_removes_a_job_from_every_list_and_fences_its_worker() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    let a = q.enqueue(&json!(1)).await.unwrap();
    let b = q
        .submit(
            NewJob::new(&json!(2))
                .unwrap()
                .options(EnqueueOptions::new().delay(Duration::from_secs(60))),
        )
        .await
        .unwrap();
    let running_id = q.enqueue(&json!(3)).await.unwrap();
    let running = loop {
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        if job.id() == running_id {
            break job;
        }
        let _ = q.release(&job).await.unwrap();
        assert!(q.delete_job(job.id()).await.unwrap());
    };
    assert!(q.get_job(&a).await.unwrap().is_none());
    assert!(q.delete_job(&b).await.unwrap());
    assert!(q.delete_job(&running_id).await.unwrap());
    assert!(!q.delete_job(&running_id).await.unwrap(), "already gone");
    assert_eq!(
        q.complete(&running, &json!(1)).await.unwrap(),
        Ack::LeaseLost
    );
    for list_name in ["pending", "processing", "completed", "failed"] {
        assert!(
            list(&mut c, &format!("queue:jobs:{list_name}"))
                .await
                .is_empty(),
            "{list_name}"
        );
    }
    assert_eq!(q.stats().await.unwrap().scheduled_depth, 0);
    assert_eq!(lease_count(&mut c).await, 0);
}

#[tokio::test]
async fn an_abandoned_run_is_left_for_the_sweep_like_a_crash() {
    let (server, q, _c) = setup("ops-abandon", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let handle = client.enqueue::<crash>(1).await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["ops-abandon"])
        .auto_sweep(false)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(
        eventually(Duration::from_secs(5), || async {
            handle.status().await.unwrap() == Some(JobStatus::Processing)
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Not renewed, not settled, and with auto_sweep off nobody took it back.
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Processing));
    stop_runner(token, task).await;
    assert_eq!(
        q.reclaim_stuck().await.unwrap().reclaimed,
        vec![handle.id().to_owned()]
    );
}
