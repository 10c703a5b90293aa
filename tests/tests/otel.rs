//! Traces across enqueue and run (feature `otel`), against a single server
//! and a three-primary cluster: a job enqueued inside a span stores the
//! trace context of a `send {queue}` producer span under it, and each run is
//! a consumer span whose parent is that send span, retries included; a job
//! enqueued outside any span stores nothing and runs in a trace of its own.
//! Spans go to an in-memory exporter through `tracing-opentelemetry`, with
//! the W3C propagator installed as an application would.

use std::time::Duration;

use jobqueue::{Client, JobContext, JobError, Runner, job};
use jobqueue_tests::*;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Returns its input.
#[job(queue = "otel-traced")]
async fn traced(n: u32) -> Result<u32, JobError> {
    Ok(n)
}

/// Fails its first attempt (to be retried 10 ms later), then returns the
/// attempt that succeeded.
#[job(queue = "otel-retried", max_attempts = 3)]
async fn flaky(_n: u32, ctx: JobContext) -> Result<u32, JobError> {
    if ctx.attempt() == 1 {
        return Err(JobError::retry_after(
            "the first attempt fails",
            Duration::from_millis(10),
        ));
    }
    Ok(ctx.attempt())
}

/// The spans this test's thread records, while it lives.
struct Traces {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _default: tracing::subscriber::DefaultGuard,
}

impl Traces {
    /// Installs the W3C propagator (as an application must) and, for this
    /// thread, a subscriber that exports every span to memory. The tests
    /// run on a current-thread runtime, so the runner's spans are this
    /// thread's too.
    fn record() -> Self {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("jobqueue-tests"));
        let default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        Self {
            exporter,
            provider,
            _default: default,
        }
    }

    /// The spans ended so far.
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }

    /// The consumer spans of job `id` ended so far, in attempt order.
    fn runs_of(&self, id: &str) -> Vec<SpanData> {
        let mut runs: Vec<SpanData> = self
            .spans()
            .into_iter()
            .filter(|s| {
                s.span_kind == SpanKind::Consumer && attr(s, "messaging.message.id") == Some(id)
            })
            .collect();
        runs.sort_by_key(|s| s.start_time);
        runs
    }

    /// Waits until job `id` has `n` ended consumer spans, and returns them.
    async fn wait_for_runs(&self, id: &str, n: usize) -> Vec<SpanData> {
        let ended = eventually(Duration::from_secs(10), || async {
            self.runs_of(id).len() >= n
        })
        .await;
        let runs = self.runs_of(id);
        assert!(ended, "{n} run spans of {id}, got {runs:#?}");
        assert_eq!(runs.len(), n, "{runs:#?}");
        runs
    }

    /// The one span named `name`.
    fn named(&self, name: &str) -> SpanData {
        let mut found: Vec<SpanData> = self
            .spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one span named {name}: {found:#?}");
        found.remove(0)
    }
}

/// A string attribute of `span`.
fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .and_then(|kv| match &kv.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}

fn runner(client: Client, queue: &str) -> Runner {
    Runner::builder(client)
        .queues([queue])
        .sweep_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// The `traceparent` the job hash holds, read with a raw command.
async fn stored_traceparent(
    redis: &TestRedis,
    handle: &jobqueue::client::JobHandle<impl jobqueue::definition::Job>,
) -> Option<String> {
    let mut conn = redis.conn().await;
    let key = handle.queue().keys().job(handle.id());
    hash(&mut conn, &key).await.remove("traceparent")
}

/// The send span is a producer child of the root span, with the messaging
/// attributes; the job hash holds its context.
fn check_send_span(traces: &Traces, root: &SpanData, queue: &str) -> SpanData {
    let send = traces.named(&format!("send {queue}"));
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        send.span_context.trace_id(),
        root.span_context.trace_id(),
        "the send span is in the enqueuing trace"
    );
    assert_eq!(send.parent_span_id, root.span_context.span_id());
    assert_eq!(attr(&send, "messaging.system"), Some("jobqueue"));
    assert_eq!(attr(&send, "messaging.operation.name"), Some("send"));
    assert_eq!(attr(&send, "messaging.destination.name"), Some(queue));
    send
}

async fn enqueue_and_run_are_one_trace(redis: TestRedis) {
    let traces = Traces::record();
    let client = redis.client().await;
    let root = tracing::info_span!("enqueue");
    let handle = client
        .enqueue::<traced>(7)
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);
    let root = traces.named("enqueue");
    assert_eq!(root.parent_span_id, SpanId::INVALID, "the test's root span");
    let send = check_send_span(&traces, &root, "otel-traced");
    assert_eq!(
        stored_traceparent(&redis, &handle).await,
        Some(format!(
            "00-{}-{}-01",
            send.span_context.trace_id(),
            send.span_context.span_id()
        )),
        "the job hash holds the send span's context"
    );

    let (token, task) = start_runner(runner(client.clone(), "otel-traced"));
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 7);
    let run = traces.wait_for_runs(handle.id(), 1).await.remove(0);
    stop_runner(token, task).await;
    assert_eq!(
        run.span_context.trace_id(),
        root.span_context.trace_id(),
        "the run continues the enqueuing trace"
    );
    assert_eq!(
        run.parent_span_id,
        send.span_context.span_id(),
        "the run's parent is the send span"
    );
    assert!(run.parent_span_is_remote, "a parent from the job hash");
    assert_eq!(attr(&run, "messaging.system"), Some("jobqueue"));
    assert_eq!(attr(&run, "messaging.operation.name"), Some("process"));
    assert_eq!(attr(&run, "messaging.operation.type"), Some("process"));
    assert_eq!(attr(&run, "queue"), Some("otel-traced"));
    assert_eq!(run.name, "process otel-traced");
    assert_eq!(
        attr(&run, "messaging.destination.name"),
        Some("otel-traced")
    );
}

async fn a_job_enqueued_outside_a_span_runs_in_a_trace_of_its_own(redis: TestRedis) {
    let traces = Traces::record();
    let client = redis.client().await;
    let root = tracing::info_span!("enqueue");
    let inside = client
        .enqueue::<traced>(1)
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);
    let outside = client.enqueue::<traced>(2).await.unwrap();
    assert_eq!(
        stored_traceparent(&redis, &outside).await,
        None,
        "no context outside a span"
    );
    assert_eq!(
        traces
            .spans()
            .iter()
            .filter(|s| s.span_kind == SpanKind::Producer)
            .count(),
        1,
        "a send span only for the job enqueued inside a span"
    );

    let (token, task) = start_runner(runner(client.clone(), "otel-traced"));
    inside.wait(Duration::from_secs(10)).await.unwrap();
    outside.wait(Duration::from_secs(10)).await.unwrap();
    let inside_run = traces.wait_for_runs(inside.id(), 1).await.remove(0);
    let outside_run = traces.wait_for_runs(outside.id(), 1).await.remove(0);
    stop_runner(token, task).await;
    let root = traces.named("enqueue");
    assert_eq!(
        inside_run.span_context.trace_id(),
        root.span_context.trace_id()
    );
    assert_eq!(
        outside_run.parent_span_id,
        SpanId::INVALID,
        "the run of a job enqueued outside a span is a root span"
    );
    assert_ne!(
        outside_run.span_context.trace_id(),
        root.span_context.trace_id(),
        "in a trace of its own"
    );
    assert_ne!(
        outside_run.span_context.trace_id(),
        inside_run.span_context.trace_id()
    );
}

async fn each_attempt_of_a_retried_job_is_a_run_under_the_same_send(redis: TestRedis) {
    let traces = Traces::record();
    let client = redis.client().await;
    let root = tracing::info_span!("enqueue");
    let handle = client
        .enqueue::<flaky>(0)
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);
    let root = traces.named("enqueue");
    let send = check_send_span(&traces, &root, "otel-retried");

    let (token, task) = start_runner(runner(client.clone(), "otel-retried"));
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 2);
    let runs = traces.wait_for_runs(handle.id(), 2).await;
    stop_runner(token, task).await;
    let attempts: Vec<Option<&str>> = runs.iter().map(|r| attr(r, "attempt")).collect();
    assert_eq!(
        attempts,
        vec![Some("1"), Some("2")],
        "one run span per attempt"
    );
    for run in &runs {
        assert_eq!(run.span_context.trace_id(), root.span_context.trace_id());
        assert_eq!(
            run.parent_span_id,
            send.span_context.span_id(),
            "every attempt's parent is the send span"
        );
    }
    assert_ne!(
        runs[0].span_context.span_id(),
        runs[1].span_context.span_id()
    );
    assert!(
        stored_traceparent(&redis, &handle).await.is_some(),
        "the retry kept the stored context"
    );
}

/// Redis < 6.2: an idle runner takes the job with `BRPOPLPUSH` and the
/// claim script adopts it (forced here, as the server is newer); the adopted
/// job's record carries the context too.
#[tokio::test]
async fn a_job_adopted_after_brpoplpush_continues_the_trace() {
    let traces = Traces::record();
    let server = RedisServer::start();
    let conn = jobqueue::connection::Connection::connect_with(
        server.url().as_str(),
        jobqueue::connection::ConnectionOptions::new().force_legacy_claim(true),
    )
    .await
    .unwrap();
    assert!(conn.legacy_claim());
    let client = Client::new(&conn);
    let runner = Runner::builder(client.clone())
        .queues(["otel-traced"])
        .claim_block(Duration::from_secs(20))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    // Idle, so the runner waits in BRPOPLPUSH when the job arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let root = tracing::info_span!("enqueue");
    let handle = client
        .enqueue::<traced>(3)
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 3);
    let run = traces.wait_for_runs(handle.id(), 1).await.remove(0);
    stop_runner(token, task).await;
    let root = traces.named("enqueue");
    let send = check_send_span(&traces, &root, "otel-traced");
    assert_eq!(run.span_context.trace_id(), root.span_context.trace_id());
    assert_eq!(run.parent_span_id, send.span_context.span_id());
}

on_each_topology! {
    #[tokio::test] enqueue_and_run_are_one_trace,
    #[tokio::test] a_job_enqueued_outside_a_span_runs_in_a_trace_of_its_own,
    #[tokio::test] each_attempt_of_a_retried_job_is_a_run_under_the_same_send,
}
