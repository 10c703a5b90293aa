//! `#[job]` end to end: registration from a linked library crate, typed
//! enqueue with every stored field, per-call options, handles that wait on
//! events, and routing of jobs written by reference clients. Jobs run on a
//! real `Runner`, as in production.

use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::definition::Job;
use jobqueue::queue::{JobStatus, NewJob, QueueOptions};
use jobqueue::registry::Registry;
use jobqueue::{Client, Error, Runner};
use jobqueue_fixture_jobs::{Invoice, Resize, Resized, refund, resize_image, send_invoice};
use jobqueue_tests::*;
use serde_json::{Value, json};

async fn client(server: &RedisServer) -> Client {
    Client::connect(&server.url()).await.unwrap()
}

/// A runner with every linked `#[job]`, serving `queues`; `sweep` false
/// leaves retries waiting out their backoff in the scheduled set.
fn run(
    client: &Client,
    queues: &[&str],
    sweep: bool,
) -> (jobqueue::CancellationToken, tokio::task::JoinHandle<()>) {
    start_runner(
        Runner::builder(client.clone())
            .queues(queues.iter().copied())
            .auto_sweep(sweep)
            .build()
            .unwrap(),
    )
}

fn resize(width: u32) -> Resize {
    Resize {
        url: "https://img.example/cat.png".into(),
        width,
    }
}

#[test]
fn jobs_in_a_linked_library_crate_register() {
    let registry = Registry::from_inventory().unwrap();
    let names: Vec<&str> = registry.jobs().map(|d| d.name()).collect();
    assert_eq!(names, vec!["invoice", "refund", "resize_image"]);
    let def = registry.get("resize_image").unwrap();
    assert_eq!(
        (
            def.queue(),
            def.module_path(),
            def.max_attempts(),
            def.visibility(),
            def.timeout()
        ),
        (
            "images",
            "jobqueue_fixture_jobs",
            4,
            Duration::from_secs(30),
            None
        )
    );
    assert_eq!(registry.get("invoice").unwrap().queue(), "billing");
    assert_eq!(
        registry.queues().into_iter().collect::<Vec<_>>(),
        vec!["billing", "images"]
    );
}

#[tokio::test]
async fn typed_enqueue_stores_the_reference_fields_and_the_jobs_own() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let handle = client.enqueue::<resize_image>(resize(640)).await.unwrap();
    let mut c = server.conn().await;
    let h = hash(&mut c, &format!("queue:images:job:{}", handle.id())).await;
    assert_eq!(h["id"], handle.id());
    assert_eq!(
        serde_json::from_str::<Resize>(&h["payload"]).unwrap(),
        resize(640)
    );
    assert_eq!(h["status"], "pending");
    assert_eq!(h["attempts"], "0");
    assert_eq!(h["claim_token"], "");
    assert!(h["enqueued_at_ms"].parse::<u64>().is_ok());
    assert_eq!(h["job"], "resize_image");
    assert_eq!(h["max_attempts"], "4");
    assert_eq!(h["visibility_ms"], "30000");
    assert_eq!(
        list(&mut c, "queue:images:pending").await,
        vec![handle.id().to_owned()]
    );
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Pending));
}

#[tokio::test]
async fn per_call_options_override_the_attribute() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let handle = client
        .enqueue_with::<resize_image>(
            resize(1),
            EnqueueOptions::new()
                .max_attempts(9)
                .visibility(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.max_attempts().unwrap(), Some(9));
    assert_eq!(record.field("visibility_ms"), Some("1000"));
}

#[tokio::test]
async fn enqueue_many_sends_a_typed_batch_in_one_round_trip() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let mut c = server.conn().await;
    exec(&mut c, &["CONFIG", "RESETSTAT"]).await;
    let handles = client
        .enqueue_many::<resize_image>((1..=50).map(resize))
        .await
        .unwrap();
    let info = commandstats(&mut c).await;
    assert_eq!(command_calls(&info, "evalsha"), 1, "{info}");
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
    let q = client.queue("images").unwrap();
    assert_eq!(q.list_pending(0..50).await.unwrap(), ids);
}

#[tokio::test]
async fn wait_returns_the_typed_output_from_events_without_polling() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let handle = client.enqueue::<resize_image>(resize(320)).await.unwrap();
    let mut c = server.conn().await;
    exec(&mut c, &["CONFIG", "RESETSTAT"]).await;
    // The runner starts 300 ms into the wait.
    let worker = tokio::spawn({
        let client = client.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            run(&client, &["images"], true)
        }
    });
    let out: Resized = handle.wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.url, "https://img.example/cat.png?w=320&attempt=1");
    let (token, task) = worker.await.unwrap();
    // One read after subscribing, one after the completion event, and the
    // one the claim script makes: 300 ms of waiting cost no polling.
    let info = commandstats(&mut c).await;
    stop_runner(token, task).await;
    let hgetall = command_calls(&info, "hgetall");
    assert!(hgetall <= 3, "wait polled: {hgetall} HGETALLs\n{info}");
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Completed));
}

#[tokio::test]
async fn wait_sees_a_job_that_finished_before_the_wait_began() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let handle = client
        .enqueue::<send_invoice>(Invoice {
            kind: String::new(),
            recipient: "bob".into(),
        })
        .await
        .unwrap();
    let (token, task) = run(&client, &["billing"], true);
    let finished = eventually(Duration::from_secs(10), || async {
        handle.status().await.unwrap() == Some(JobStatus::Completed)
    })
    .await;
    stop_runner(token, task).await;
    assert!(finished, "{:?}", handle.record().await.unwrap());
    let out: String = handle.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(out, "sent to bob");
}

#[tokio::test]
async fn wait_reports_a_failed_job_and_a_timeout() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let handle = client
        .enqueue::<resize_image>(resize(20_000))
        .await
        .unwrap();
    let (token, task) = run(&client, &["images"], true);
    match handle.wait(Duration::from_secs(10)).await {
        Err(Error::JobFailed { id, error }) => {
            assert_eq!(id, handle.id());
            assert_eq!(error, "width 20000 is too large");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    stop_runner(token, task).await;
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        (record.status(), record.attempts().unwrap()),
        (Some(JobStatus::Failed), 1),
        "a permanent error skips the retries"
    );

    // No runner now: the job stays pending.
    let pending = client.enqueue::<resize_image>(resize(1)).await.unwrap();
    match pending.wait(Duration::from_millis(300)).await {
        Err(Error::WaitTimeout { id, .. }) => assert_eq!(id, pending.id()),
        other => panic!("expected WaitTimeout, got {other:?}"),
    }
    let missing = client.handle::<resize_image>("0000000000000000").unwrap();
    assert!(matches!(
        missing.wait(Duration::from_secs(1)).await,
        Err(Error::JobNotFound { .. })
    ));
}

#[tokio::test]
async fn a_retryable_error_goes_back_to_pending_with_its_message() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let handle = client
        .enqueue::<send_invoice>(Invoice {
            kind: String::new(),
            recipient: "flaky".into(),
        })
        .await
        .unwrap();
    let q = client.queue("billing").unwrap();
    // No sweep: after the failure the job waits out its backoff, scheduled.
    let (token, task) = run(&client, &["billing"], false);
    let failed_once = eventually(Duration::from_secs(10), || async {
        handle
            .record()
            .await
            .unwrap()
            .unwrap()
            .last_error()
            .is_some()
    })
    .await;
    stop_runner(token, task).await;
    assert!(failed_once, "{:?}", handle.record().await.unwrap());
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(
        (record.status(), record.attempts().unwrap()),
        (Some(JobStatus::Scheduled), 1)
    );
    assert_eq!(record.last_error(), Some("mail server unavailable"));
    // Its backoff over, a sweep puts it back in pending, message kept.
    assert!(
        eventually(Duration::from_secs(30), || async {
            q.promote_due().await.unwrap() == 1
        })
        .await
    );
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Pending));
    assert_eq!(record.last_error(), Some("mail server unavailable"));
    assert_eq!(q.list_pending(0..10).await.unwrap(), [handle.id()]);
}

/// Jobs from reference clients carry no `job` field: the payload's `kind`
/// routes them, and a queue with one job sends everything there.
#[tokio::test]
async fn reference_jobs_are_routed_by_kind_or_by_the_queues_only_job() {
    let (server, _, mut c) = setup("jobs", QueueOptions::default()).await;
    let client = client(&server).await;
    let billing = client.queue("billing").unwrap();
    let images = client.queue("images").unwrap();
    reference_enqueue(
        &mut c,
        "billing",
        "00000000000000b1",
        r#"{"kind": "refund", "recipient": "ann"}"#,
    )
    .await;
    reference_enqueue(
        &mut c,
        "billing",
        "00000000000000b2",
        r#"{"kind": "email", "recipient": "ann"}"#,
    )
    .await;
    reference_enqueue(
        &mut c,
        "images",
        "00000000000000c1",
        r#"{"url": "u", "width": 8}"#,
    )
    .await;

    let (token, task) = run(&client, &["billing", "images"], true);
    let billed = stats_reach(&billing, Duration::from_secs(10), |s| {
        s.completed_total == 1 && s.failed_total == 1
    })
    .await;
    let imaged = stats_reach(&images, Duration::from_secs(10), |s| s.completed_total == 1).await;
    stop_runner(token, task).await;
    assert!(billed && imaged);

    let done = billing.get_job("00000000000000b1").await.unwrap().unwrap();
    assert_eq!(done.status(), Some(JobStatus::Completed));
    assert_eq!(
        done.result::<String>().unwrap().as_deref(),
        Some("refunded ann")
    );

    let failed = billing.get_job("00000000000000b2").await.unwrap().unwrap();
    assert_eq!(
        (failed.status(), failed.attempts().unwrap()),
        (Some(JobStatus::Failed), 1)
    );
    let reason = failed.last_error().unwrap();
    assert!(
        reason.contains("payload kind \"email\" names no job") && reason.contains("2 jobs"),
        "{reason}"
    );

    let done = images.get_job("00000000000000c1").await.unwrap().unwrap();
    assert_eq!(done.status(), Some(JobStatus::Completed));
    assert_eq!(
        done.result::<Value>().unwrap(),
        Some(json!({"url": "u?w=8&attempt=1"}))
    );
}

/// A job no handler is registered for, and one whose payload does not
/// decode as its handler's type, fail at once with the reason: no retry can
/// help either, though `resize_image` allows four attempts.
#[tokio::test]
async fn unknown_names_and_undecodable_payloads_fail_with_the_reason() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let q = client.queue("images").unwrap();
    let gone = q
        .submit(NewJob::new(&json!({})).unwrap().name("retired_job"))
        .await
        .unwrap();
    let bad = q
        .submit(
            NewJob::new(&json!({"width": "wide"}))
                .unwrap()
                .name("resize_image"),
        )
        .await
        .unwrap();
    let (token, task) = run(&client, &["images"], true);
    let failed = stats_reach(&q, Duration::from_secs(10), |s| {
        s.failed_total == 2 && s.processing_depth == 0
    })
    .await;
    stop_runner(token, task).await;
    assert!(failed, "{:?}", q.stats().await.unwrap());
    for id in [&gone, &bad] {
        let record = q.get_job(id).await.unwrap().unwrap();
        assert_eq!(
            (record.status(), record.attempts().unwrap()),
            (Some(JobStatus::Failed), 1),
            "{id}"
        );
    }
    let reason = q
        .get_job(&gone)
        .await
        .unwrap()
        .unwrap()
        .last_error()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("no job named \"retired_job\" is registered"),
        "{reason}"
    );
    let reason = q
        .get_job(&bad)
        .await
        .unwrap()
        .unwrap()
        .last_error()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("payload does not decode as `jobqueue_fixture_jobs::Resize`"),
        "{reason}"
    );
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.completed_total, s.retried_total, s.pending_depth),
        (0, 0, 0)
    );
    let _ = refund::NAME;
}
