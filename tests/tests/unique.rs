//! Unique jobs against a single server and a three-primary cluster: one job
//! per key however many enqueue it at once, the lock held for as long as its
//! mode says and released on every path that ends the job, a lock whose job
//! is gone taken over, and a dead letter retried taking its key back or
//! saying why not.

use std::process::Stdio;
use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{Enqueued, JobStatus, NewJob, Queue, QueueOptions, Unique, UniqueMode};
use jobqueue::{Error, job};
use jobqueue_tests::*;
use serde_json::{Value, json};

/// Unique by payload while pending, for at most a minute.
#[job(queue = "uniq-typed", unique_for = "1m")]
async fn refresh_user(_args: Value) {}

const WINDOW: Duration = Duration::from_secs(60);

async fn put(q: &Queue, payload: Value, unique: Unique) -> Enqueued {
    let job = NewJob::new(&payload)
        .unwrap()
        .name("sync")
        .options(EnqueueOptions::new().unique(unique));
    q.submit_all(vec![job]).await.unwrap().remove(0)
}

async fn a_hundred_enqueues_of_one_key_from_four_processes_give_one_job(redis: TestRedis) {
    let key = unique_key("tenant");
    let processes: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"))
                .args([redis.url().as_str(), "enqueue-unique", key.as_str(), "25"])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("the test worker starts")
        })
        .collect();
    let mut lines = Vec::new();
    for process in processes {
        let out = process.wait_with_output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
        lines.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    assert_eq!(lines.len(), 100);
    let new: Vec<_> = lines.iter().filter(|l| l.starts_with("new ")).collect();
    assert_eq!(new.len(), 1, "one enqueue wrote the job: {lines:?}");
    let id = new[0].trim_start_matches("new ");
    assert!(
        lines.iter().all(|l| l.ends_with(id)),
        "every other enqueue got the same job back"
    );
    let q = redis.queue("proc", QueueOptions::new()).await;
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.enqueued_total, stats.pending_depth), (1, 1));
}

async fn while_pending_a_duplicate_gets_the_waiting_job_and_a_claim_frees_the_key(
    redis: TestRedis,
) {
    let client = redis.client().await;
    let first = client
        .enqueue::<refresh_user>(json!({"user": 42, "fields": ["a", "b"]}))
        .await
        .unwrap();
    assert!(!first.is_existing());
    // The same payload in another key order is the same job.
    let again = client
        .enqueue::<refresh_user>(json!({"fields": ["a", "b"], "user": 42}))
        .await
        .unwrap();
    assert!(again.is_existing());
    assert_eq!(again.id(), first.id());
    let other = client
        .enqueue::<refresh_user>(json!({"user": 43, "fields": ["a", "b"]}))
        .await
        .unwrap();
    assert!(!other.is_existing(), "another payload is another job");
    // A batch with the same job twice writes it once.
    let batch = client
        .enqueue_many::<refresh_user>([json!({"user": 44}), json!({"user": 44})])
        .await
        .unwrap();
    assert!(!batch[0].is_existing() && batch[1].is_existing());
    assert_eq!(batch[0].id(), batch[1].id());

    // Once a worker has it, the key is free again.
    let q = first.queue().clone();
    let mut taken = Vec::new();
    while taken.len() < 3 {
        taken.extend(q.claim_many(3, Duration::from_secs(1)).await.unwrap());
    }
    let next = client
        .enqueue::<refresh_user>(json!({"user": 42, "fields": ["a", "b"]}))
        .await
        .unwrap();
    assert!(!next.is_existing());
    assert_ne!(next.id(), first.id());
    assert_eq!(q.stats().await.unwrap().enqueued_total, 4);
}

async fn until_completed_holds_while_running_and_every_end_frees_the_key(redis: TestRedis) {
    let q = redis
        .queue("uniq-ends", QueueOptions::new().max_attempts(2))
        .await;
    let unique = |key: &str| {
        Unique::for_window(WINDOW)
            .key(key)
            .mode(UniqueMode::UntilCompleted)
    };
    // Each way a job can end, with a job that holds a key until then.
    for end in [
        "complete",
        "fail",
        "cancel",
        "cancel-running",
        "delete",
        "expire",
    ] {
        let key = format!("end-{end}");
        let owner = put(&q, json!(end), unique(&key)).await;
        assert!(!owner.existing, "{end}");
        let dup = put(&q, json!("another payload"), unique(&key)).await;
        assert!(
            dup.existing && dup.id == owner.id,
            "{end}: held while pending"
        );
        match end {
            "complete" | "fail" | "cancel-running" => {
                let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
                assert_eq!(job.id(), owner.id);
                let running = put(&q, json!(1), unique(&key)).await;
                assert!(running.existing, "{end}: held while running");
                if end == "fail" {
                    // A failure with attempts left keeps the key.
                    let _ = q.fail(&job, "once").await.unwrap();
                    assert!(
                        put(&q, json!(1), unique(&key)).await.existing,
                        "held while retrying"
                    );
                    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
                    let _ = q.fail(&job, "twice").await.unwrap();
                } else if end == "cancel-running" {
                    let _ = q.cancel(&owner.id, "stop").await.unwrap();
                    let _ = q.complete(&job, &1).await.unwrap();
                } else {
                    let _ = q.complete(&job, &1).await.unwrap();
                }
            }
            "cancel" => {
                let _ = q.cancel(&owner.id, "not needed").await.unwrap();
            }
            "delete" => assert!(q.delete_job(&owner.id).await.unwrap()),
            _ => {
                // Expired: a job that could not start in time.
                let job = NewJob::new(&json!("late")).unwrap().name("sync").options(
                    EnqueueOptions::new()
                        .unique(unique("end-expire-late"))
                        .expires_in(Duration::from_millis(50)),
                );
                let late = q.submit_all(vec![job]).await.unwrap().remove(0);
                let _ = q.cancel(&owner.id, "out of the way").await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
                let status = q.get_job(&late.id).await.unwrap().unwrap().status();
                assert_eq!(status, Some(JobStatus::Cancelled));
                assert!(!put(&q, json!(2), unique("end-expire-late")).await.existing);
            }
        }
        let after = put(&q, json!("after"), unique(&key)).await;
        assert!(!after.existing, "{end}: the key is free once the job ended");
        assert_ne!(after.id, owner.id);
        // Out of the way of the next round.
        assert!(q.delete_job(&after.id).await.unwrap());
    }
}

async fn a_window_lock_holds_after_the_job_is_done_until_it_runs_out(redis: TestRedis) {
    let q = redis.queue("uniq-window", QueueOptions::new()).await;
    let unique = Unique::for_window(Duration::from_millis(400)).mode(UniqueMode::Window);
    let first = put(&q, json!({"report": 1}), unique.clone()).await;
    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    let _ = q.complete(&job, &1).await.unwrap();
    let throttled = put(&q, json!({"report": 1}), unique.clone()).await;
    assert!(
        throttled.existing && throttled.id == first.id,
        "held for the window"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!put(&q, json!({"report": 1}), unique).await.existing);
}

async fn a_lock_whose_job_is_gone_is_taken_over(redis: TestRedis) {
    let (_, q, mut c) = setup_on(&redis, "uniq-heal", QueueOptions::new()).await;
    let unique = Unique::for_window(WINDOW).key("k");
    let first = put(&q, json!(1), unique.clone()).await;
    // The hash disappears behind the lock's back (an operator's DEL, an
    // eviction): the lock names a job that is no more.
    exec(&mut c, &["DEL", &q.keys().job(&first.id)]).await;
    let next = put(&q, json!(2), unique).await;
    assert!(!next.existing);
    assert_ne!(next.id, first.id);
}

async fn a_dead_letter_retried_takes_its_key_back_or_says_why_not(redis: TestRedis) {
    let q = redis
        .queue("uniq-retry", QueueOptions::new().max_attempts(1))
        .await;
    let unique = Unique::for_window(WINDOW)
        .key("invoice-7")
        .mode(UniqueMode::UntilCompleted);
    let dead = put(&q, json!("a"), unique.clone()).await;
    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    let _ = q.fail(&job, "boom").await.unwrap();
    let holder = put(&q, json!("b"), unique.clone()).await;
    assert!(!holder.existing, "the dead letter gave its key up");
    match q.retry_failed(&dead.id).await {
        Err(Error::UniqueLockHeld { id, holder: h }) => {
            assert_eq!((id, h), (dead.id.clone(), holder.id.clone()));
        }
        other => panic!("expected a refusal naming the holder, got {other:?}"),
    }
    assert_eq!(q.retry_all_failed().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        q.get_job(&dead.id).await.unwrap().unwrap().status(),
        Some(JobStatus::Failed),
        "still a dead letter"
    );
    assert_eq!(q.list_failed(0..10).await.unwrap(), vec![dead.id.clone()]);
    // Once the holder is done, the dead letter takes the key back.
    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    let _ = q.complete(&job, &1).await.unwrap();
    assert!(q.retry_failed(&dead.id).await.unwrap());
    let dup = put(&q, json!("c"), unique).await;
    assert!(
        dup.existing && dup.id == dead.id,
        "the revived job holds it"
    );
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread")] a_hundred_enqueues_of_one_key_from_four_processes_give_one_job,
    #[tokio::test] while_pending_a_duplicate_gets_the_waiting_job_and_a_claim_frees_the_key,
    #[tokio::test] until_completed_holds_while_running_and_every_end_frees_the_key,
    #[tokio::test] a_window_lock_holds_after_the_job_is_done_until_it_runs_out,
    #[tokio::test] a_lock_whose_job_is_gone_is_taken_over,
    #[tokio::test] a_dead_letter_retried_takes_its_key_back_or_says_why_not,
}
