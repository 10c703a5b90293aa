//! Job progress against a real Redis, a single server and a three-primary
//! cluster: a running job's reports are seen while it runs and the last one
//! after it ended; they ride on the lease renewals (the script calls are
//! counted: no round trip per report); `flush_progress` writes at once; the
//! progress channel publishes each change once and the events channel
//! carries none; a stale claim writes nothing; values that cannot be stored
//! are refused with a clear error (by the context, the queue and the script
//! itself, before it writes); the dashboard shows progress as text.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use jobqueue::client::EventKind;
use jobqueue::queue::{
    Ack, ClaimedJob, Events, JobStatus, MAX_PROGRESS_BYTES, ProgressEvent, QueueOptions,
};
use jobqueue::{Client, Error, JobContext, JobError, Runner, job};
use jobqueue_tests::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Gates between a test and its job's handler, by name (each test run's
/// names are its own: both topologies run at once in this process).
static GATES: Mutex<BTreeMap<String, Arc<Semaphore>>> = Mutex::new(BTreeMap::new());

fn gate(name: &str) -> Arc<Semaphore> {
    Arc::clone(
        GATES
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0))),
    )
}

/// Opens gate `name` once.
fn open(name: &str) {
    gate(name).add_permits(1);
}

/// Waits (at most 20 s) until gate `name` is opened, and closes it again.
async fn pass(name: &str) {
    tokio::time::timeout(Duration::from_secs(20), gate(name).acquire())
        .await
        .unwrap_or_else(|_| panic!("gate {name} was not opened"))
        .unwrap()
        .forget();
}

/// The next message of a progress subscription, which must come soon.
async fn next_progress(progress: &mut Events<ProgressEvent>) -> ProgressEvent {
    tokio::time::timeout(Duration::from_secs(5), progress.next())
        .await
        .expect("a progress message")
        .expect("the subscription goes on")
        .unwrap()
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

/// The servers of `redis`: the one, or every node of the cluster.
fn nodes(redis: &TestRedis) -> Vec<&RedisServer> {
    match redis {
        TestRedis::Single(server) => vec![server],
        TestRedis::Cluster(cluster) => cluster.nodes().iter().collect(),
    }
}

/// How many scripts (`EVALSHA`) every server of `redis` ran since the last
/// `CONFIG RESETSTAT`.
fn script_calls(redis: &TestRedis) -> u64 {
    nodes(redis)
        .iter()
        .map(|n| command_calls(&n.cli(&["INFO", "commandstats"]), "evalsha"))
        .sum()
}

fn reset_stats(redis: &TestRedis) {
    for node in nodes(redis) {
        assert_eq!(node.cli(&["CONFIG", "RESETSTAT"]).trim(), "OK");
    }
}

/// Reports 0.1, 0.2, ... 1.0, a step every 120 ms: about six renewals of
/// its 600 ms lease (one every 200 ms) while it runs.
#[job(queue = "pg-steps", visibility = "600ms")]
async fn pg_steps(steps: u32, ctx: JobContext) -> Result<u32, JobError> {
    for step in 1..=steps {
        ctx.progress(f64::from(step) / f64::from(steps))?;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    Ok(steps)
}

async fn a_running_job_is_seen_making_progress_and_its_last_report_stays(redis: TestRedis) {
    let client = redis.client().await;
    let mut progress = client.progress_events("pg-steps").await.unwrap();
    let mut events = client.events("pg-steps").await.unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["pg-steps"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let handle = client.enqueue::<pg_steps>(10).await.unwrap();
    // While it runs: a value below 1.0, with the job still processing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while seen.is_none() && std::time::Instant::now() < deadline {
        let record = handle.record().await.unwrap().unwrap();
        if record.status() == Some(JobStatus::Processing) {
            seen = record
                .progress()
                .unwrap()
                .filter(|p| p.fraction().is_some_and(|f| f < 1.0));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen.is_some(), "no progress seen while the job ran");
    let seen = seen.unwrap();
    assert!(
        seen.at
            .is_some_and(|at| at <= SystemTime::now() + Duration::from_secs(5))
    );
    assert_eq!(handle.wait(Duration::from_secs(20)).await.unwrap(), 10);

    // After: the last report, written before the outcome.
    let last = handle.progress().await.unwrap().unwrap();
    assert_eq!(last.fraction(), Some(1.0));
    let record = handle.record().await.unwrap().unwrap();
    assert_eq!(record.progress().unwrap(), Some(last.clone()));
    let stored_at = record.timestamp_ms("progress_at_ms").unwrap().unwrap();
    let completed_at = record.timestamp_ms("completed_at_ms").unwrap().unwrap();
    assert!(stored_at <= completed_at, "{stored_at} > {completed_at}");
    assert!(last.at > seen.at);

    // Each change was published once, in order, and only changes: the
    // reports only grow, so every message must be above the one before.
    let mut published = Vec::new();
    while published.last() != Some(&1.0) {
        let event = tokio::time::timeout(Duration::from_secs(5), progress.next())
            .await
            .expect("the last progress is published")
            .unwrap()
            .unwrap();
        assert_eq!(
            (event.id.as_str(), event.queue.as_str()),
            (handle.id(), "pg-steps")
        );
        published.push(event.fraction().unwrap());
    }
    assert!(
        published.windows(2).all(|w| w[0] < w[1]),
        "published more than the changes: {published:?}"
    );
    assert!(
        (2..=10).contains(&published.len()),
        "{published:?}: a renewal carries only the latest of the reports since the last one"
    );
    // The events channel kept to the reference's messages: the first item
    // is the completion (a progress message there would be an Err item).
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.id.as_str(), event.kind),
        (handle.id(), EventKind::Completed)
    );
    stop_runner(token, task).await;
}

const REPORTS: u64 = 300;

/// Reports `REPORTS` times, about every 3 ms (about a second in all), on a
/// lease of 1.5 s: renewed every 500 ms.
#[job(queue = "pg-count", visibility = "1500ms")]
async fn pg_busy(_: (), ctx: JobContext) -> Result<(), JobError> {
    for step in 0..REPORTS {
        ctx.progress_json(&json!({ "done": step + 1, "of": REPORTS }))?;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    Ok(())
}

async fn progress_rides_on_lease_renewals_with_no_round_trip_of_its_own(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["pg-count"])
        .concurrency(1)
        .auto_sweep(false)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    // The runner is up and waiting; count from here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_stats(&redis);
    let started = std::time::Instant::now();
    let handle = client.enqueue::<pg_busy>(()).await.unwrap();
    handle.wait(Duration::from_secs(30)).await.unwrap();
    let took = started.elapsed();
    let calls = script_calls(&redis);
    stop_runner(token, task).await;
    // The enqueue, one or two claims, a renewal per 500 ms, the last
    // progress, the settle and the wait's reads: a handful, whatever the
    // number of reports.
    let renewals = u64::try_from(took.as_millis()).unwrap() / 500 + 1;
    println!("{calls} script calls for {REPORTS} reports in {took:?}");
    assert!(
        calls <= renewals + 10,
        "{calls} script calls in {took:?} for {REPORTS} progress reports"
    );
    assert!(calls * 10 <= REPORTS, "{calls} script calls");
    let last = handle.progress().await.unwrap().unwrap();
    assert_eq!(last.value, json!({ "done": REPORTS, "of": REPORTS }));
}

/// Reports 0.25 and waits; flushes and waits; reports 0.5 and returns. Its
/// lease of 30 s is renewed every 10 s: no renewal comes while it runs.
#[job(queue = "pg-flush", visibility = "30s")]
async fn pg_flush(key: String, ctx: JobContext) -> Result<(), JobError> {
    ctx.progress(0.25)?;
    open(&format!("{key}/reported"));
    pass(&format!("{key}/go")).await;
    ctx.flush_progress().await?;
    open(&format!("{key}/flushed"));
    pass(&format!("{key}/go")).await;
    ctx.progress(0.5)?;
    Ok(())
}

async fn flush_progress_writes_at_once_and_the_last_report_is_written_before_the_outcome(
    redis: TestRedis,
) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["pg-flush"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let key = unique_key("flush");
    let handle = client.enqueue::<pg_flush>(key.clone()).await.unwrap();
    pass(&format!("{key}/reported")).await;
    // Reported, but only kept: no renewal has come yet.
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Processing));
    assert_eq!(handle.progress().await.unwrap(), None);
    open(&format!("{key}/go"));
    pass(&format!("{key}/flushed")).await;
    let flushed = handle.progress().await.unwrap().unwrap();
    assert_eq!(flushed.fraction(), Some(0.25));
    assert!(flushed.at.is_some());
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Processing));
    open(&format!("{key}/go"));
    handle.wait(Duration::from_secs(10)).await.unwrap();
    // Reported just before the handler returned, and written before the
    // job completed (long before any renewal).
    assert_eq!(
        handle.progress().await.unwrap().unwrap().fraction(),
        Some(0.5)
    );
    stop_runner(token, task).await;
}

/// Reports a good value, then tries values that cannot be stored; returns the
/// errors it got.
#[job(queue = "pg-refused")]
async fn pg_refused(_: (), ctx: JobContext) -> Result<Vec<String>, JobError> {
    ctx.progress(0.5)?;
    let errors = [
        ctx.progress_json(&"x".repeat(MAX_PROGRESS_BYTES))
            .unwrap_err(),
        ctx.progress(f64::NAN).unwrap_err(),
        ctx.progress(1.5).unwrap_err(),
    ];
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, Error::InvalidProgress { .. }))
    );
    // A context built by hand holds no claim: its flush writes nothing.
    JobContext::new("not-this-one").flush_progress().await?;
    Ok(errors.iter().map(ToString::to_string).collect())
}

async fn values_that_cannot_be_stored_are_refused_with_a_clear_error(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["pg-refused"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let handle = client.enqueue::<pg_refused>(()).await.unwrap();
    let errors = handle.wait(Duration::from_secs(10)).await.unwrap();
    stop_runner(token, task).await;
    assert_eq!(
        errors,
        [
            format!(
                "invalid progress: {} bytes of JSON exceed the limit of {MAX_PROGRESS_BYTES} bytes; \
                 report a summary (a count, a fraction), not the data",
                MAX_PROGRESS_BYTES + 2
            ),
            "invalid progress: the fraction NaN is not within 0.0..=1.0 \
             (report other measures with progress_json)"
                .to_owned(),
            "invalid progress: the fraction 1.5 is not within 0.0..=1.0 \
             (report other measures with progress_json)"
                .to_owned(),
        ]
    );
    // The refused values replaced nothing.
    assert_eq!(
        handle.progress().await.unwrap().unwrap().fraction(),
        Some(0.5)
    );
}

/// The queue level: the renewal writes a value only while its claim holds
/// the job and only when it changed, publishing exactly the changes on the
/// progress channel and nothing on the events channel.
async fn only_the_claim_holding_the_job_writes_progress_and_only_changes_are_published(
    redis: TestRedis,
) {
    let (_, q, mut conn) = setup_on(&redis, "pg-queue", QueueOptions::new()).await;
    let mut progress = q.subscribe_progress().await.unwrap();
    let mut events = q.subscribe().await.unwrap();
    let id = q.enqueue(&json!({"n": 1})).await.unwrap();
    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
    let key = q.keys().job(&id);

    // A stale claim (another token) changes nothing.
    let stale = ClaimedJob::from_claim(&id, "0123456789abcdef");
    let half = raw("0.5");
    let acks = q
        .extend_with_progress(&[(&stale, Some(&*half))])
        .await
        .unwrap();
    assert_eq!(acks, [Ack::LeaseLost]);
    let fields = hash(&mut conn, &key).await;
    assert!(!fields.contains_key("progress") && !fields.contains_key("progress_at_ms"));
    assert_eq!(q.progress(&id).await.unwrap(), None);

    // The claim itself writes it, with Redis's time.
    let acks = q
        .extend_with_progress(&[(&job, Some(&*half))])
        .await
        .unwrap();
    assert_eq!(acks, [Ack::Extended]);
    let fields = hash(&mut conn, &key).await;
    assert_eq!(fields["progress"], "0.5");
    let first_at = fields["progress_at_ms"].clone();
    assert_eq!(fields["claimed_at_ms"], first_at, "one clock, one write");
    let stored = q.progress(&id).await.unwrap().unwrap();
    assert_eq!(stored.value, json!(0.5));
    let at_ms: u64 = first_at.parse().unwrap();
    assert_eq!(
        stored.at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms))
    );

    // The same value again: renewed, not rewritten, not published.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let acks = q
        .extend_with_progress(&[(&job, Some(&*half))])
        .await
        .unwrap();
    assert_eq!(acks, [Ack::Extended]);
    let fields = hash(&mut conn, &key).await;
    assert_eq!(fields["progress_at_ms"], first_at);
    assert_ne!(fields["claimed_at_ms"], first_at, "the lease was renewed");
    // A renewal without progress leaves it too.
    assert_eq!(q.extend_many(&[&job]).await.unwrap(), [Ack::Extended]);
    assert_eq!(hash(&mut conn, &key).await["progress"], "0.5");

    let step = raw(r#"{"done":3,"of":4,"note":"<b>\"x\"</b>"}"#);
    let acks = q
        .extend_with_progress(&[(&job, Some(&*step))])
        .await
        .unwrap();
    assert_eq!(acks, [Ack::Extended]);

    // Published: the two changes, nothing for the stale claim or the repeat.
    let first = next_progress(&mut progress).await;
    assert_eq!(
        (first.id.as_str(), &first.progress, first.queue.as_str()),
        (id.as_str(), &json!(0.5), "pg-queue")
    );
    let second = next_progress(&mut progress).await;
    assert_eq!(
        second.progress,
        json!({"done": 3, "of": 4, "note": "<b>\"x\"</b>"})
    );

    // Over the limit: refused before anything is sent.
    let big = raw(&format!("\"{}\"", "x".repeat(MAX_PROGRESS_BYTES)));
    match q.extend_with_progress(&[(&job, Some(&*big))]).await {
        Err(Error::InvalidProgress { reason }) => {
            assert!(
                reason.contains("exceed the limit of 4096 bytes"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }

    // Once the job completed, its claim writes nothing more; the last
    // value stays, and the events channel carried the completion only.
    assert_eq!(
        q.complete(&job, &json!("done")).await.unwrap(),
        Ack::Completed
    );
    let late = raw("1.0");
    let acks = q
        .extend_with_progress(&[(&job, Some(&*late))])
        .await
        .unwrap();
    assert_eq!(acks, [Ack::LeaseLost]);
    assert_eq!(
        q.progress(&id).await.unwrap().unwrap().value["done"],
        json!(3)
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.id.as_str(), event.kind),
        (id.as_str(), EventKind::Completed)
    );
    // Nothing more was published on the progress channel.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), progress.next())
            .await
            .is_err()
    );

    // No job, or a key that is no job hash: no progress, no error.
    assert_eq!(q.progress("ffffffffffffffff").await.unwrap(), None);
    exec(&mut conn, &["SET", q.keys().job("notahash").as_str(), "x"]).await;
    assert_eq!(q.progress("notahash").await.unwrap(), None);
}

/// The extend script, called directly as another client might, checks its
/// arguments' shape and every progress value before it writes anything: a
/// batch with one value over the limit renews no lease and stores no
/// progress, not even the good job's.
#[tokio::test]
async fn the_extend_script_refuses_a_bad_batch_before_writing_anything() {
    let (_server, q, mut raw) = setup("pg-raw", QueueOptions::new()).await;
    let script = concat!(
        include_str!("../../jobqueue/src/lua/common.lua"),
        include_str!("../../jobqueue/src/lua/extend.lua")
    );
    q.enqueue_many(&[json!(1), json!(2)]).await.unwrap();
    let jobs = q.claim_many(2, Duration::from_secs(1)).await.unwrap();
    let (a, b) = (&jobs[0], &jobs[1]);
    let keys = q.keys();
    let lease_of = |job: &ClaimedJob| format!("{}:{}", job.id(), job.token());
    let before = (
        hash(&mut raw, &keys.job(a.id())).await,
        zscore(&mut raw, &keys.leases(), &lease_of(a)).await,
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let extend = |argv: Vec<&str>| {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(4)
            .arg(keys.leases())
            .arg(keys.processing())
            .arg(keys.job(a.id()))
            .arg(keys.job(b.id()))
            .arg(5000)
            .arg(keys.progress())
            .arg(argv);
        cmd
    };
    let big = format!("\"{}\"", "x".repeat(MAX_PROGRESS_BYTES));
    let refused: redis::RedisResult<redis::Value> =
        extend(vec![a.id(), a.token(), "0.5", b.id(), b.token(), &big])
            .query_async(&mut raw)
            .await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("over the limit of 4096"), "{message}");
    // Without a progress value per job, the arguments are misaligned.
    let refused: redis::RedisResult<redis::Value> =
        extend(vec![a.id(), a.token(), b.id(), b.token()])
            .query_async(&mut raw)
            .await;
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("an id, a token and a progress value per job"),
        "{message}"
    );
    let after = (
        hash(&mut raw, &keys.job(a.id())).await,
        zscore(&mut raw, &keys.leases(), &lease_of(a)).await,
    );
    assert_eq!(after, before, "nothing of a refused call was written");
    assert!(!after.0.contains_key("progress"));
    // The same call with a value that fits goes through.
    let renewed: Vec<redis::Value> = extend(vec![a.id(), a.token(), "0.5", b.id(), b.token(), ""])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(renewed.len(), 2);
    assert_eq!(hash(&mut raw, &keys.job(a.id())).await["progress"], "0.5");
    assert!(
        !hash(&mut raw, &keys.job(b.id()))
            .await
            .contains_key("progress")
    );
}

/// Progress shows in the dashboard's list and detail, as data: the page
/// sets it as text, never as markup.
#[tokio::test]
async fn the_dashboard_shows_progress_as_text() {
    let (server, q, _c) = setup("pg-dash", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let id = q.enqueue(&json!({"n": 1})).await.unwrap();
    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    let evil = "<script>alert('progress')</script>";
    let value = serde_json::value::to_raw_value(&json!({"step": evil})).unwrap();
    q.extend_with_progress(&[(&job, Some(&*value))])
        .await
        .unwrap();
    let app = jobqueue::dashboard::router(client);
    let get = |path: String| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    let page: Value =
        serde_json::from_str(&get("/api/queues/pg-dash/jobs?state=processing".into()).await)
            .unwrap();
    let listed = &page["jobs"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["progress"], json!({"step": evil}));
    assert!(
        listed["progress_at_ms"]
            .as_str()
            .is_some_and(|t| t.parse::<u64>().is_ok())
    );
    let detail: Value =
        serde_json::from_str(&get(format!("/api/queues/pg-dash/jobs/{id}")).await).unwrap();
    assert_eq!(detail["progress"], json!({"step": evil}));
    assert_eq!(detail["fields"]["progress"], value.get());
    let html = get("/".into()).await;
    assert!(html.contains("progressCell") && html.contains(">Progress</th>"));
    assert!(html.contains("textContent") && !html.contains("innerHTML"));
    assert!(!html.contains("alert('progress')"));
}

on_each_topology! {
    #[tokio::test] a_running_job_is_seen_making_progress_and_its_last_report_stays,
    #[tokio::test] progress_rides_on_lease_renewals_with_no_round_trip_of_its_own,
    #[tokio::test] flush_progress_writes_at_once_and_the_last_report_is_written_before_the_outcome,
    #[tokio::test] values_that_cannot_be_stored_are_refused_with_a_clear_error,
    #[tokio::test] only_the_claim_holding_the_job_writes_progress_and_only_changes_are_published,
}
