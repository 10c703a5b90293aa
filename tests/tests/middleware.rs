//! Tower layers around every run (`RunnerBuilder::layer`): a layer sees
//! every outcome (completed, error, panic, timeout, cancel), can change it,
//! can refuse a job without running it, and a panic in a layer is the
//! run's panic. Single server and cluster.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use jobqueue::middleware::{JobOutcome, JobRequest, on_outcome};
use jobqueue::queue::JobStatus;
use jobqueue::{JobContext, JobError, Runner, job};
use jobqueue_tests::*;
use tower::{Service, ServiceExt};

/// Outcomes the layers saw, by job id.
static SEEN: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());
/// Handler runs, by payload key.
static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn saw(id: &str, what: impl Into<String>) {
    SEEN.lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(what.into());
}

fn seen(id: &str) -> Vec<String> {
    SEEN.lock().unwrap().get(id).cloned().unwrap_or_default()
}

#[job(queue = "mw-outcomes", max_attempts = 1)]
async fn mw_ok(key: String) -> Result<String, String> {
    RAN.lock().unwrap().push(key);
    Ok("fine".into())
}

#[job(queue = "mw-outcomes", max_attempts = 1)]
async fn mw_error(key: String) -> Result<(), JobError> {
    RAN.lock().unwrap().push(key);
    Err(JobError::permanent("the handler said no"))
}

#[job(queue = "mw-outcomes", max_attempts = 1)]
async fn mw_panic(key: String) {
    RAN.lock().unwrap().push(key);
    panic!("boom in the handler");
}

#[job(queue = "mw-outcomes", max_attempts = 1, timeout = "200ms")]
async fn mw_timeout(key: String, ctx: JobContext) {
    RAN.lock().unwrap().push(key);
    ctx.cancelled().await;
}

#[job(queue = "mw-outcomes", max_attempts = 1, visibility = "1s")]
async fn mw_cancel(key: String, ctx: JobContext) {
    RAN.lock().unwrap().push(key);
    tokio::time::timeout(Duration::from_secs(30), ctx.cancelled())
        .await
        .ok();
}

#[job(queue = "mw-guard", max_attempts = 1)]
async fn mw_tenant(tenant: String) -> Result<String, String> {
    RAN.lock().unwrap().push(tenant.clone());
    Ok(format!("ran for {tenant}"))
}

async fn every_outcome_reaches_the_layer_and_the_job_ends_in_its_state(redis: TestRedis) {
    let client = redis.client().await;
    let key = unique_key("outcome");
    let runner = Runner::builder(client.clone())
        .queues(["mw-outcomes"])
        .concurrency(8)
        .layer(on_outcome(|info, outcome| {
            saw(info.ctx().id(), outcome.kind());
            outcome
        }))
        .build()
        .unwrap();
    let ok = client.enqueue::<mw_ok>(key.clone()).await.unwrap();
    let error = client.enqueue::<mw_error>(key.clone()).await.unwrap();
    let panic = client.enqueue::<mw_panic>(key.clone()).await.unwrap();
    let timeout = client.enqueue::<mw_timeout>(key.clone()).await.unwrap();
    let cancel = client.enqueue::<mw_cancel>(key.clone()).await.unwrap();
    let (token, task) = start_runner(runner);
    // Cancel the last one once it runs.
    assert!(
        eventually(Duration::from_secs(10), || async {
            cancel.status().await.unwrap() == Some(JobStatus::Processing)
        })
        .await
    );
    client.cancel::<mw_cancel>(cancel.id()).await.unwrap();
    let ended = |id: String, status: JobStatus| {
        let queue = client.queue("mw-outcomes").unwrap();
        async move {
            eventually(Duration::from_secs(15), || async {
                queue.get_job(&id).await.unwrap().and_then(|r| r.status()) == Some(status)
            })
            .await
        }
    };
    assert!(ended(ok.id().to_owned(), JobStatus::Completed).await);
    assert!(ended(error.id().to_owned(), JobStatus::Failed).await);
    assert!(ended(panic.id().to_owned(), JobStatus::Failed).await);
    assert!(ended(timeout.id().to_owned(), JobStatus::Failed).await);
    assert!(ended(cancel.id().to_owned(), JobStatus::Cancelled).await);
    stop_runner(token, task).await;
    assert_eq!(seen(ok.id()), ["completed"]);
    assert_eq!(seen(error.id()), ["error"]);
    assert_eq!(seen(panic.id()), ["panic"]);
    assert_eq!(seen(timeout.id()), ["timeout"]);
    assert_eq!(seen(cancel.id()), ["cancelled"]);
    let queue = client.queue("mw-outcomes").unwrap();
    let reason = |id: String| {
        let queue = queue.clone();
        async move {
            queue
                .get_job(&id)
                .await
                .unwrap()
                .unwrap()
                .last_error()
                .map(str::to_owned)
        }
    };
    assert_eq!(
        reason(panic.id().to_owned()).await.as_deref(),
        Some("the handler panicked: boom in the handler")
    );
    assert_eq!(
        reason(timeout.id().to_owned()).await.as_deref(),
        Some("timed out after 200 ms")
    );
}

/// Refuses jobs of tenants not on its list, without running them; marks
/// the outcome of the others.
#[derive(Clone)]
struct TenantGuard<S> {
    inner: S,
    allowed: &'static [&'static str],
}

impl<S> Service<JobRequest> for TenantGuard<S>
where
    S: Service<JobRequest, Response = JobOutcome, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = JobOutcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<JobOutcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: JobRequest) -> Self::Future {
        let tenant: String = request.payload().unwrap();
        let allowed = self.allowed.contains(&tenant.as_str());
        let inner = self.inner.clone();
        Box::pin(async move {
            if !allowed {
                return Ok(JobOutcome::Failed(JobError::permanent(format!(
                    "tenant {tenant} is suspended"
                ))));
            }
            inner.oneshot(request).await
        })
    }
}

async fn a_layer_can_refuse_a_job_without_running_it_and_layers_nest_in_order(redis: TestRedis) {
    let client = redis.client().await;
    let seen_by = |layer: &'static str| {
        on_outcome(
            move |info: &jobqueue::middleware::JobInfo, outcome: JobOutcome| {
                saw(info.ctx().id(), format!("{layer}:{}", outcome.kind()));
                outcome
            },
        )
    };
    let runner = Runner::builder(client.clone())
        .queues(["mw-guard"])
        .layer(seen_by("inner"))
        .layer(tower::layer::layer_fn(|inner| TenantGuard {
            inner,
            allowed: &["acme"],
        }))
        .layer(seen_by("outer"))
        .build()
        .unwrap();
    let acme = client.enqueue::<mw_tenant>("acme".into()).await.unwrap();
    let evil = client.enqueue::<mw_tenant>("evil".into()).await.unwrap();
    let (token, task) = start_runner(runner);
    assert_eq!(
        acme.wait(Duration::from_secs(10)).await.unwrap(),
        "ran for acme"
    );
    let refused = evil.wait(Duration::from_secs(10)).await.unwrap_err();
    assert!(
        refused.to_string().contains("tenant evil is suspended"),
        "{refused}"
    );
    stop_runner(token, task).await;
    assert!(!RAN.lock().unwrap().contains(&"evil".to_owned()));
    // The layer added last is the outermost: it sees what the guard made.
    assert_eq!(seen(acme.id()), ["inner:completed", "outer:completed"]);
    assert_eq!(seen(evil.id()), ["outer:error"]);
}

async fn a_panic_in_a_layer_fails_the_run_like_a_handler_panic(redis: TestRedis) {
    let client = redis.client().await;
    let runner = Runner::builder(client.clone())
        .queues(["mw-guard"])
        .layer(on_outcome(|_, _| panic!("boom in the layer")))
        .build()
        .unwrap();
    let handle = client
        .enqueue::<mw_tenant>(unique_key("layer-panic"))
        .await
        .unwrap();
    let (token, task) = start_runner(runner);
    let error = handle.wait(Duration::from_secs(10)).await.unwrap_err();
    stop_runner(token, task).await;
    assert!(
        error.to_string().contains("panicked: boom in the layer"),
        "{error}"
    );
}

on_each_topology! {
    #[tokio::test] every_outcome_reaches_the_layer_and_the_job_ends_in_its_state,
    #[tokio::test] a_layer_can_refuse_a_job_without_running_it_and_layers_nest_in_order,
    #[tokio::test] a_panic_in_a_layer_fails_the_run_like_a_handler_panic,
}
