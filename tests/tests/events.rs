//! `Client::events`, against a single server and a three-primary cluster:
//! the stream yields each job's events in order as a Runner works through
//! them, hears every shard of a sharded queue on one connection, reports a
//! lost connection as one error item and goes on after Redis comes back,
//! turns a message that is not an event into an error item without ending,
//! and unsubscribes when dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use jobqueue::client::{EnqueueOptions, EventKind, EventStream};
use jobqueue::queue::{Event, JobStatus};
use jobqueue::{Client, Error, JobContext, JobError, Runner, job};
use jobqueue_tests::*;
use serde_json::json;

/// How often each job has run, by job id.
static RUNS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

/// What a `stepper` job does, by its payload: complete at once (0); snooze,
/// then fail with a retry, then complete (1); fail for good (2).
#[job(queue = "events", max_attempts = 5)]
async fn stepper(plan: u32, ctx: JobContext) -> Result<(), JobError> {
    let run = {
        let mut runs = RUNS.lock().unwrap();
        let run = runs.entry(ctx.id().to_owned()).or_default();
        *run += 1;
        *run
    };
    match (plan, run) {
        (1, 1) => Err(JobError::snooze(Duration::ZERO)),
        (1, 2) => Err(JobError::retry_after("not yet", Duration::ZERO)),
        (2, _) => Err(JobError::permanent("doomed")),
        _ => Ok(()),
    }
}

/// A job of the sharded queue.
#[job(queue = "events-sharded")]
async fn sharded_work(n: u32) -> Result<u32, JobError> {
    Ok(n)
}

/// The next item of `events`, which must come within `within`.
async fn next_within(events: &mut EventStream, within: Duration) -> jobqueue::Result<Event> {
    tokio::time::timeout(within, events.next())
        .await
        .expect("an item within the time")
        .expect("the stream does not end")
}

/// Reads `events` until every id in `ids` had a final event; returns each
/// job's kinds in arrival order. Events of other ids fail the test.
async fn kinds_until_final(
    events: &mut EventStream,
    ids: &BTreeSet<String>,
) -> BTreeMap<String, Vec<EventKind>> {
    let mut kinds: BTreeMap<String, Vec<EventKind>> = BTreeMap::new();
    let mut finished = BTreeSet::new();
    while finished != *ids {
        let event = next_within(events, Duration::from_secs(30)).await.unwrap();
        assert!(
            ids.contains(&event.id),
            "an event of another job: {event:?}"
        );
        assert_eq!(event.status, event.kind.status(), "{event:?}");
        if event.is_final() {
            finished.insert(event.id.clone());
        }
        kinds.entry(event.id).or_default().push(event.kind);
    }
    kinds
}

async fn the_stream_yields_each_jobs_events_in_order(redis: TestRedis) {
    let client = redis.client().await;
    // Subscribed before anything happens: pub/sub keeps nothing for later.
    let mut events = client.events("events").await.unwrap();
    assert_eq!(events.queue(), "events");
    let mut expected = BTreeMap::new();
    for plan in [0, 1, 2, 0, 1, 2, 0, 1, 2] {
        let handle = client.enqueue::<stepper>(plan).await.unwrap();
        let kinds = match plan {
            0 => vec![EventKind::Completed],
            1 => vec![EventKind::Snoozed, EventKind::Retry, EventKind::Completed],
            _ => vec![EventKind::Failed],
        };
        expected.insert(handle.id().to_owned(), kinds);
    }
    let later = client
        .enqueue_with::<stepper>(0, EnqueueOptions::new().delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    client.cancel::<stepper>(later.id()).await.unwrap();
    expected.insert(later.id().to_owned(), vec![EventKind::Cancelled]);

    let runner = Runner::builder(client.clone())
        .queues(["events"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let ids: BTreeSet<String> = expected.keys().cloned().collect();
    let kinds = kinds_until_final(&mut events, &ids).await;
    stop_runner(token, task).await;
    assert_eq!(kinds, expected);

    // Each event names its queue and the state it left the job in.
    let again = client.enqueue::<stepper>(2).await.unwrap();
    let (token, task) = start_runner(
        Runner::builder(client.clone())
            .queues(["events"])
            .build()
            .unwrap(),
    );
    let event = next_within(&mut events, Duration::from_secs(30))
        .await
        .unwrap();
    stop_runner(token, task).await;
    assert_eq!(
        (
            event.id.as_str(),
            event.queue.as_str(),
            event.kind,
            event.status
        ),
        (again.id(), "events", EventKind::Failed, JobStatus::Failed)
    );
}

async fn one_stream_hears_every_shard_of_a_sharded_queue(redis: TestRedis) {
    const JOBS: u32 = 100;
    const SHARDS: usize = 4;
    let client = Client::builder(&redis.connection().await)
        .shards("events-sharded", SHARDS)
        .build()
        .unwrap();
    let mut events = client.events("events-sharded").await.unwrap();
    let handles = client.enqueue_many::<sharded_work>(0..JOBS).await.unwrap();
    let ids: BTreeSet<String> = handles.iter().map(|h| h.id().to_owned()).collect();
    assert_eq!(ids.len(), JOBS as usize);

    let (token, task) = start_runner(
        Runner::builder(client.clone())
            .queues(["events-sharded"])
            .concurrency(20)
            .build()
            .unwrap(),
    );
    let kinds = kinds_until_final(&mut events, &ids).await;
    stop_runner(token, task).await;
    assert!(
        kinds.values().all(|k| *k == [EventKind::Completed]),
        "{kinds:?}"
    );

    // The jobs really were spread: every shard (on a cluster, more than one
    // primary) published some of these events.
    let shards = client.shard_queues("events-sharded").unwrap();
    assert_eq!(shards.len(), SHARDS);
    for shard in &shards {
        let completed = shard.stats().await.unwrap().completed_total;
        assert!(completed > 0, "{} completed none", shard.name());
    }
    if let TestRedis::Cluster(cluster) = &redis {
        let primaries: BTreeSet<usize> = shards
            .iter()
            .map(|q| cluster.primary_for(&q.keys().pending()))
            .collect();
        assert!(primaries.len() > 1, "the shards share one primary");
    }
}

async fn a_message_that_is_not_an_event_is_an_error_item_and_the_stream_goes_on(redis: TestRedis) {
    let client = redis.client().await;
    let mut events = client.events("events-raw").await.unwrap();
    let channel = client.queue("events-raw").unwrap().keys().events();
    let mut raw = redis.conn().await;
    let messages = [
        "not json",
        r#"{"id":"x"}"#,
        r#"{"id":"x","status":"exploded"}"#,
        // The reference format as another client may space it.
        r#"{ "status": "retry", "id": "by-hand" }"#,
    ];
    for message in messages {
        exec(&mut raw, &["PUBLISH", &channel, message]).await;
    }
    for message in &messages[..3] {
        match next_within(&mut events, Duration::from_secs(10)).await {
            Err(Error::Malformed { key, reason }) => {
                assert_eq!(key, channel);
                assert!(reason.contains(&format!("{message:?}")), "{reason}");
            }
            other => panic!("{message:?} gave {other:?}"),
        }
    }
    let event = next_within(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (
            event.id.as_str(),
            event.kind,
            event.status,
            event.queue.as_str()
        ),
        (
            "by-hand",
            EventKind::Retry,
            JobStatus::Pending,
            "events-raw"
        )
    );
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] the_stream_yields_each_jobs_events_in_order,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] one_stream_hears_every_shard_of_a_sharded_queue,
    #[tokio::test] a_message_that_is_not_an_event_is_an_error_item_and_the_stream_goes_on,
}

/// Enqueues a job on `queue`'s low-level queue, claims and completes it;
/// returns its id.
async fn complete_one(client: &Client, queue: &str) -> String {
    let q = client.queue(queue).unwrap();
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
    let _ = q.complete(&job, &json!(1)).await.unwrap();
    id
}

#[tokio::test]
async fn after_a_lost_connection_the_stream_reports_the_gap_then_goes_on() {
    let mut server = RedisServer::start();
    let client = Client::connect(&server.url()).await.unwrap();
    let mut events = client.events("events-gap").await.unwrap();
    let before = complete_one(&client, "events-gap").await;
    let event = next_within(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((event.id, event.kind), (before, EventKind::Completed));

    // Down for a while: the stream keeps trying, yields nothing, and does
    // not end (a wait cut short loses nothing: the stream holds its state).
    server.kill();
    let quiet = tokio::time::timeout(Duration::from_millis(1500), events.next()).await;
    assert!(quiet.is_err(), "an item while Redis was down: {quiet:?}");
    server.restart();

    let gap = next_within(&mut events, Duration::from_secs(15))
        .await
        .unwrap_err();
    assert!(gap.is_connection_error(), "{gap}");
    assert!(
        gap.to_string().contains("may have been missed"),
        "the error says what it means: {gap}"
    );
    // Subscribed again before the error was yielded: what happens next
    // arrives.
    let after = complete_one(&client, "events-gap").await;
    let event = next_within(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((event.id, event.kind), (after, EventKind::Completed));

    // A restart that saves and comes back at once is a gap too.
    server.restart();
    let gap = next_within(&mut events, Duration::from_secs(15))
        .await
        .unwrap_err();
    assert!(gap.is_connection_error(), "{gap}");
    let last = complete_one(&client, "events-gap").await;
    let event = next_within(&mut events, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((event.id, event.kind), (last, EventKind::Completed));
}

/// The number of pub/sub connections (`CLIENT LIST TYPE pubsub`).
fn pubsub_clients(server: &RedisServer) -> usize {
    server
        .cli(&["CLIENT", "LIST", "TYPE", "pubsub"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::test]
async fn one_connection_subscribes_every_shard_and_dropping_the_stream_unsubscribes() {
    let server = RedisServer::start();
    let client = Client::builder(
        &jobqueue::connection::Connection::connect(server.url().as_str())
            .await
            .unwrap(),
    )
    .shards("events-drop", 3)
    .build()
    .unwrap();
    let events = client.events("events-drop").await.unwrap();
    let channels: Vec<String> = client
        .shard_queues("events-drop")
        .unwrap()
        .iter()
        .map(|q| q.keys().events())
        .collect();
    let numsub = |channels: &[String]| {
        let mut args = vec!["PUBSUB", "NUMSUB"];
        args.extend(channels.iter().map(String::as_str));
        server.cli(&args)
    };
    assert_eq!(pubsub_clients(&server), 1, "one connection for every shard");
    let listed = numsub(&channels);
    for channel in &channels {
        assert!(listed.contains(&format!("{channel}\n1")), "{listed}");
    }

    drop(events);
    let gone = eventually(Duration::from_secs(5), || async {
        pubsub_clients(&server) == 0
    })
    .await;
    assert!(gone, "the subscription outlived its stream");
    let listed = numsub(&channels);
    for channel in &channels {
        assert!(listed.contains(&format!("{channel}\n0")), "{listed}");
    }
}
