//! The web dashboard, an axum [`Router`] to mount in your own service (as
//! Sidekiq's Web UI, bull-board and asynqmon are used), or to serve with
//! `jobqueue dashboard`.
//!
//! ```no_run
//! # async fn run() -> jobqueue::Result<()> {
//! let client = jobqueue::Client::connect("redis://127.0.0.1:6379/").await?;
//! let app = axum::Router::new().nest_service("/jobs", jobqueue::dashboard::router(client));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # Ok(()) }
//! ```
//!
//! Mount it with `nest_service`, which serves the page at both `/jobs` and
//! `/jobs/`: axum 0.8's `Router::nest` serves it at `/jobs` only, and a link
//! to `/jobs/` would answer 404. The page finds its API from either URL, and
//! from `/jobs/index.html`.
//!
//! Every queue with a registered job or keys in Redis is listed with its
//! depths, fleet counters, a throughput chart, its lists (paged, read in one
//! pipelined round trip per page), its fleet-wide limits and each job's
//! details. Changes (retry, cancel, delete, retry all failed, purge, pause,
//! resume, setting the queue's limits) are POST requests that must carry the
//! page's CSRF token; everything shown is set as text, never
//! parsed as HTML. With a bearer token set, every request must present it;
//! without one, only a loopback `Host` is served. Routes of your own served
//! beside the dashboard get the same rules with [`protect`].
//!
//! The dashboard also serves `/metrics`, linked from its page: the
//! fleet-wide figures of every queue (depths, totals, the oldest pending
//! job's age, paused) read from Redis at each scrape, in the Prometheus text
//! format, under the same rules (a scraper presents the token as
//! `Authorization: Bearer …`, Prometheus's `authorization` setting). For a
//! scraper that should reach only the figures, serve [`metrics_router`]
//! instead; its docs list the names.

mod api;
mod discovery;
mod guard;
mod metrics;
mod summary;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::client::Client;
use crate::error::{Error, Result};

pub use self::metrics::metrics_router;
pub use guard::protect;
pub use summary::JobSummary;

/// Options of the dashboard.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DashboardOptions {
    /// A bearer token every request must present (header
    /// `Authorization: Bearer …`, or once as `?token=…`, which sets a cookie).
    pub token: Option<String>,
    /// Shows the reference demo's controls: the demo server's hook, not a
    /// stable API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub demo: bool,
    /// Queues to list even before they have keys or registered jobs.
    pub queues: Vec<String>,
}

impl DashboardOptions {
    /// The defaults: no token, no demo controls.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `token` on every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Shows the demo's controls: the demo server's hook, not a stable API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn demo(mut self, demo: bool) -> Self {
        self.demo = demo;
        self
    }

    /// Lists these queues too.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses to serve on a non-loopback address without a token (anyone
    /// who can reach the dashboard could delete jobs), and refuses tokens
    /// under 8 characters. Call it before binding.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<()> {
        if self.token.as_ref().is_some_and(|t| t.len() < 8) {
            return Err(Error::invalid_option(
                "dashboard token",
                "must be at least 8 characters",
            ));
        }
        if !addr.ip().is_loopback() && self.token.is_none() {
            return Err(Error::invalid_option(
                "dashboard address",
                format!(
                    "{addr} is not a loopback address: set a bearer token to serve the dashboard there"
                ),
            ));
        }
        Ok(())
    }

    fn shows_demo(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        let demo = self.demo;
        #[cfg(not(feature = "test-hooks"))]
        let demo = false;
        demo
    }
}

/// The dashboard with default options, to mount with
/// `Router::nest_service` (see the [module docs](self) for why not `nest`).
pub fn router(client: Client) -> Router {
    router_with(client, DashboardOptions::default())
}

/// The dashboard with `options`, mounted as [`router`] is.
pub fn router_with(client: Client, options: DashboardOptions) -> Router {
    let state = Arc::new(Dashboard {
        client,
        csrf: format!("{}{}", crate::id::random_hex(), crate::id::random_hex()),
        options,
        registered: api::jobs_by_queue(),
        discovery: discovery::Discovery::default(),
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route("/api/overview", get(api::overview))
        .route("/api/queues/{queue}/jobs", get(api::list_jobs))
        .route("/api/queues/{queue}/jobs/{id}", get(api::job_detail))
        .route("/api/queues/{queue}/jobs/{id}/retry", post(api::retry_job))
        .route(
            "/api/queues/{queue}/jobs/{id}/cancel",
            post(api::cancel_job),
        )
        .route("/api/queues/{queue}/schedules", get(api::schedules))
        .route("/api/queues/{queue}/batches", get(api::batches))
        .route(
            "/api/queues/{queue}/limits",
            get(api::limits).post(api::set_limits),
        )
        .route(
            "/api/queues/{queue}/jobs/{id}/delete",
            post(api::delete_job),
        )
        .route(
            "/api/queues/{queue}/retry-failed",
            post(api::retry_all_failed),
        )
        .route("/api/queues/{queue}/purge", post(api::purge))
        .route("/api/queues/{queue}/pause", post(api::pause))
        .route("/api/queues/{queue}/resume", post(api::resume))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::csrf,
        ))
        .with_state(Arc::clone(&state))
        .merge(metrics::routes(
            state.client.clone(),
            state.options.queues.clone(),
        ));
    protect(router, &state.options)
}

/// Serves `app` on `listener` until `shutdown` is cancelled.
///
/// # Cancellation safety
/// Cancel `shutdown` to stop: in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[derive(Debug)]
pub(crate) struct Dashboard {
    client: Client,
    csrf: String,
    options: DashboardOptions,
    /// Registered jobs by queue.
    registered: std::collections::BTreeMap<String, Vec<&'static str>>,
    /// Queue names found by scanning Redis, and when (scans are rationed).
    discovery: discovery::Discovery,
}

const PAGE: &str = include_str!("page.html");

async fn page(State(state): State<Arc<Dashboard>>) -> Response {
    let html = PAGE
        .replace("{{csrf}}", &guard::escape_html(&state.csrf))
        .replace(
            "{{demo}}",
            if state.options.shows_demo() {
                "true"
            } else {
                "false"
            },
        );
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, "no-store".parse().expect("header"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
            .parse()
            .expect("header"),
    );
    headers.insert(header::X_FRAME_OPTIONS, "DENY".parse().expect("header"));
    response
}
