//! The dashboard's JSON API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Dashboard, JobSummary};
use crate::error::Error;
use crate::queue::{JobStatus, Limits, Queue, Rate};
use crate::registry::Registry;

/// The registered jobs' names by queue: registration is static, so this is
/// built once, with the router.
pub(super) fn jobs_by_queue() -> BTreeMap<String, Vec<&'static str>> {
    let mut by_queue: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    if let Ok(registry) = Registry::from_inventory() {
        for def in registry.jobs() {
            by_queue
                .entry(def.queue().to_owned())
                .or_default()
                .push(def.name());
        }
    }
    by_queue
}

/// Most jobs one page lists.
const MAX_PAGE: usize = 200;

type ApiResult = Result<Response, ApiError>;

/// An error answered as `{"error": "..."}` with a status.
#[derive(Debug)]
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    ApiError(status, message.to_string())
}

fn internal(e: Error) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

fn queue(state: &Dashboard, name: &str) -> Result<Queue, ApiError> {
    state
        .client
        .queue(name)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

pub(super) async fn overview(State(state): State<Arc<Dashboard>>) -> ApiResult {
    let registered = &state.registered;
    let mut names: BTreeSet<String> = registered.keys().cloned().collect();
    names.extend(state.options.queues.iter().cloned());
    names.extend(discover(&state).await.map_err(internal)?);
    // Every queue's stats at once: one round trip per refresh, not one per queue.
    let queues: Vec<_> = names
        .into_iter()
        .filter_map(|name| Some((state.client.queue(&name).ok()?, name)))
        .collect();
    let stats = futures_util::future::try_join_all(queues.iter().map(|(q, _)| q.stats()))
        .await
        .map_err(internal)?;
    let queues: Vec<Value> = queues
        .into_iter()
        .zip(stats)
        .map(|((_, name), stats)| {
            json!({
                "jobs": registered.get(&name).cloned().unwrap_or_default(),
                "name": name,
                "stats": stats,
            })
        })
        .collect();
    Ok(Json(json!({ "queues": queues })).into_response())
}

/// Queue names with keys in Redis.
async fn discover(state: &Dashboard) -> crate::error::Result<Vec<String>> {
    state.discovery.names(&state.client).await
}

#[derive(Debug, Deserialize)]
pub(super) struct Page {
    state: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

pub(super) async fn list_jobs(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult {
    let q = queue(&state, &name)?;
    let limit = page.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    let range = page.offset..page.offset.saturating_add(limit);
    let status: JobStatus = page
        .state
        .parse()
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let (ids, stats) = tokio::try_join!(q.list(status, range), q.stats()).map_err(internal)?;
    let total = stats.depth(status);
    let records = q.get_jobs(&ids).await.map_err(internal)?;
    let jobs: Vec<JobSummary> = ids
        .iter()
        .zip(&records)
        .map(|(id, record)| {
            JobSummary::new(id, record.as_ref()).with_fields(
                record.as_ref(),
                &[
                    "job",
                    "enqueued_at_ms",
                    "claimed_at_ms",
                    "completed_at_ms",
                    "scheduled_for_ms",
                    "cancel_reason",
                    "progress_at_ms",
                ],
            )
        })
        .collect();
    Ok(Json(json!({
        "queue": name,
        "state": page.state,
        "offset": page.offset,
        "limit": limit,
        "total": total,
        "jobs": jobs,
    }))
    .into_response())
}

pub(super) async fn job_detail(
    State(state): State<Arc<Dashboard>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let q = queue(&state, &name)?;
    let record = q
        .get_job(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("job {id} does not exist")))?;
    let mut detail = json!(JobSummary::new(&id, Some(&record)));
    detail["fields"] = json!(record.fields());
    Ok(Json(detail).into_response())
}

pub(super) async fn retry_job(
    State(state): State<Arc<Dashboard>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let retried = queue(&state, &name)?
        .retry_failed(&id)
        .await
        .map_err(|e| match e {
            // Says why not: the same work is queued or running already.
            Error::UniqueLockHeld { .. } => error(StatusCode::CONFLICT, e),
            e => internal(e),
        })?;
    Ok(Json(json!({ "retried": retried })).into_response())
}

pub(super) async fn schedules(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
) -> ApiResult {
    let schedules = queue(&state, &name)?.schedules().await.map_err(internal)?;
    Ok(Json(json!({ "queue": name, "schedules": schedules })).into_response())
}

/// The batches living on the queue, newest first (at most 50 per shard),
/// each with its progress.
pub(super) async fn batches(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
) -> ApiResult {
    queue(&state, &name)?;
    let batches = state.client.batches(&name, 50).await.map_err(internal)?;
    Ok(Json(json!({ "queue": name, "batches": batches })).into_response())
}

pub(super) async fn limits(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
) -> ApiResult {
    let limits = queue(&state, &name)?.limits().await.map_err(internal)?;
    Ok(Json(limits).into_response())
}

/// The queue-level limits a `POST /api/queues/{queue}/limits` sets: every
/// field left out or `null` is removed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLimits {
    /// As `"100/s"`, `"5/m"` or `"10/250ms"`.
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    max_running: Option<u32>,
}

impl NewLimits {
    /// The limits asked for, checked: any mistake is the caller's (400).
    fn parse(body: &[u8]) -> Result<Limits, ApiError> {
        let bad = |e: &dyn std::fmt::Display| error(StatusCode::BAD_REQUEST, e);
        let value: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
        if !value.is_object() {
            // Serde would read `[]` as a struct of defaults: no limits at all.
            return Err(bad(&"the limits must be a JSON object"));
        }
        let new: Self = serde_json::from_value(value).map_err(|e| bad(&e))?;
        let mut limits = Limits::new();
        if let Some(rate) = &new.rate {
            limits = limits.rate(rate.parse::<Rate>().map_err(|e| bad(&e))?);
        }
        limits.burst = new.burst;
        limits.max_running = new.max_running;
        limits.check().map_err(|e| bad(&e))?;
        Ok(limits)
    }
}

/// Replaces the queue's own limits (split over its shards, for a sharded
/// queue) and answers them as stored, as `GET` does.
pub(super) async fn set_limits(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let q = queue(&state, &name)?;
    let limits = NewLimits::parse(&body)?;
    state
        .client
        .set_limits(&name, limits)
        .await
        .map_err(|e| match e {
            Error::InvalidOption { .. } | Error::InvalidName { .. } => {
                error(StatusCode::BAD_REQUEST, e)
            }
            e => internal(e),
        })?;
    let stored = q.limits().await.map_err(internal)?;
    Ok(Json(stored).into_response())
}

pub(super) async fn cancel_job(
    State(state): State<Arc<Dashboard>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let outcome = queue(&state, &name)?
        .cancel(&id, "cancelled from the dashboard")
        .await
        .map_err(internal)?;
    Ok(Json(json!({
        "outcome": outcome.as_str(),
        "status": outcome.status(),
        "message": outcome.to_string(),
    }))
    .into_response())
}

pub(super) async fn delete_job(
    State(state): State<Arc<Dashboard>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let deleted = queue(&state, &name)?
        .delete_job(&id)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

pub(super) async fn retry_all_failed(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
) -> ApiResult {
    let retried = queue(&state, &name)?
        .retry_all_failed()
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "retried": retried })).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct Confirm {
    confirm: Option<String>,
}

pub(super) async fn purge(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    Query(confirm): Query<Confirm>,
) -> ApiResult {
    if confirm.confirm.as_deref() != Some(name.as_str()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "purging needs ?confirm=<the queue's name>",
        ));
    }
    let deleted = queue(&state, &name)?.purge().await.map_err(internal)?;
    Ok(Json(json!({ "deleted_keys": deleted })).into_response())
}

pub(super) async fn pause(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
) -> ApiResult {
    queue(&state, &name)?.pause().await.map_err(internal)?;
    Ok(Json(json!({ "paused": true })).into_response())
}

pub(super) async fn resume(
    State(state): State<Arc<Dashboard>>,
    Path(name): Path<String>,
) -> ApiResult {
    queue(&state, &name)?.resume().await.map_err(internal)?;
    Ok(Json(json!({ "paused": false })).into_response())
}
