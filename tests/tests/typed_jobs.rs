//! `#[job]` end to end: registration from a linked library crate, typed
//! enqueue with every stored field, per-call options, handles that wait on
//! events, and routing of jobs written by reference clients.

use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::definition::Job;
use jobqueue::queue::{Ack, JobStatus, NewJob, QueueOptions};
use jobqueue::registry::Registry;
use jobqueue::{Client, Error};
use jobqueue_fixture_jobs::{Invoice, Resize, Resized, refund, resize_image, send_invoice};
use jobqueue_tests::*;
use serde_json::{Value, json};

async fn client(server: &RedisServer) -> Client {
    Client::connect(&server.url()).await.unwrap()
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
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(info.contains("cmdstat_evalsha:calls=1,"), "{info}");
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_owned()).collect();
    let q = client.queue("images").unwrap();
    assert_eq!(q.list_pending(0..50).await.unwrap(), ids);
}

#[tokio::test]
async fn wait_returns_the_typed_output_from_events_without_polling() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let registry = Registry::from_inventory().unwrap();
    let handle = client.enqueue::<resize_image>(resize(320)).await.unwrap();
    let mut c = server.conn().await;
    exec(&mut c, &["CONFIG", "RESETSTAT"]).await;
    let worker = tokio::spawn({
        let q = client.queue("images").unwrap();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
            run_one(&registry, &q, &job).await
        }
    });
    let out: Resized = handle.wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.url, "https://img.example/cat.png?w=320&attempt=1");
    assert_eq!(worker.await.unwrap(), Ack::Completed);
    // One read after subscribing, one after the completion event: 300 ms of
    // waiting cost no polling.
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let hgetall = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hgetall:calls="))
        .and_then(|r| r.split(',').next())
        .map_or(0, |n| n.parse::<u32>().unwrap());
    assert!(hgetall <= 3, "wait polled: {hgetall} HGETALLs\n{info}");
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Completed));
}

#[tokio::test]
async fn wait_sees_a_job_that_finished_before_the_wait_began() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let registry = Registry::from_inventory().unwrap();
    let handle = client
        .enqueue::<send_invoice>(Invoice {
            kind: String::new(),
            recipient: "bob".into(),
        })
        .await
        .unwrap();
    let q = client.queue("billing").unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(run_one(&registry, &q, &job).await, Ack::Completed);
    let out: String = handle.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(out, "sent to bob");
}

#[tokio::test]
async fn wait_reports_a_failed_job_and_a_timeout() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let registry = Registry::from_inventory().unwrap();
    let handle = client
        .enqueue::<resize_image>(resize(20_000))
        .await
        .unwrap();
    let q = client.queue("images").unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        run_one(&registry, &q, &job).await,
        Ack::Failed,
        "a permanent error skips the retries"
    );
    match handle.wait(Duration::from_secs(5)).await {
        Err(Error::JobFailed { id, error }) => {
            assert_eq!(id, handle.id());
            assert_eq!(error, "width 20000 is too large");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }

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
    let registry = Registry::from_inventory().unwrap();
    let handle = client
        .enqueue::<send_invoice>(Invoice {
            kind: String::new(),
            recipient: "flaky".into(),
        })
        .await
        .unwrap();
    let q = client.queue("billing").unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(run_one(&registry, &q, &job).await, Ack::Retrying);
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Pending));
    assert_eq!(record.last_error(), Some("mail server unavailable"));
}

/// Jobs from reference clients carry no `job` field: the payload's `kind`
/// routes them, and a queue with one job sends everything there.
#[tokio::test]
async fn reference_jobs_are_routed_by_kind_or_by_the_queues_only_job() {
    let (server, _, mut c) = setup("jobs", QueueOptions::default()).await;
    let client = client(&server).await;
    let registry = Registry::from_inventory().unwrap();
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

    let job = billing.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(run_one(&registry, &billing, &job).await, Ack::Completed);
    let done = billing.get_job("00000000000000b1").await.unwrap().unwrap();
    assert_eq!(
        done.result::<String>().unwrap().as_deref(),
        Some("refunded ann")
    );

    let job = billing.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(run_one(&registry, &billing, &job).await, Ack::Failed);
    let failed = billing.get_job("00000000000000b2").await.unwrap().unwrap();
    let reason = failed.last_error().unwrap();
    assert!(
        reason.contains("payload kind \"email\" names no job") && reason.contains("2 jobs"),
        "{reason}"
    );

    let job = images.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(run_one(&registry, &images, &job).await, Ack::Completed);
    let done = images.get_job("00000000000000c1").await.unwrap().unwrap();
    assert_eq!(
        done.result::<Value>().unwrap(),
        Some(json!({"url": "u?w=8&attempt=1"}))
    );
}

#[tokio::test]
async fn unknown_names_and_undecodable_payloads_fail_with_the_reason() {
    let server = RedisServer::start();
    let client = client(&server).await;
    let registry = Registry::from_inventory().unwrap();
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
    for _ in 0..2 {
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(run_one(&registry, &q, &job).await, Ack::Failed);
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
    let _ = refund::NAME;
}
