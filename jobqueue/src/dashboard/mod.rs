//! The web dashboard, an axum [`Router`] to mount in your own service (as
//! Sidekiq's Web UI, bull-board and asynqmon are used), or to serve with
//! `jobqueue dashboard`.
//!
//! ```no_run
//! # async fn run() -> jobqueue::Result<()> {
//! let client = jobqueue::Client::connect("redis://127.0.0.1:6379/").await?;
//! let app = axum::Router::new().nest("/jobs", jobqueue::dashboard::router(client));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # Ok(()) }
//! ```
//!
//! Every queue with a registered job or keys in Redis is listed with its
//! depths, fleet counters, a throughput chart, its lists (paged, read in one
//! pipelined round trip per page) and each job's details. Changes (retry,
//! delete, retry all failed, purge, pause, resume) are POST requests that
//! must carry the page's CSRF token; everything shown is set as text, never
//! parsed as HTML. With a bearer token set, every request must present it.

mod api;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::client::Client;
use crate::error::{Error, Result};

pub use api::job_summary;

/// Options of the dashboard.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DashboardOptions {
    /// A bearer token every request must present (header
    /// `Authorization: Bearer …`, or once as `?token=…`, which sets a cookie).
    pub token: Option<String>,
    /// Shows the reference demo's controls (the demo server sets this).
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

    /// Shows the demo's controls.
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
}

/// Refuses to serve the dashboard on a non-loopback address without a token:
/// anyone who can reach it could delete jobs.
pub fn check_bind(addr: SocketAddr, options: &DashboardOptions) -> Result<()> {
    if options.token.as_ref().is_some_and(|t| t.len() < 8) {
        return Err(Error::InvalidOption {
            option: "dashboard token",
            reason: "must be at least 8 characters".into(),
        });
    }
    if !addr.ip().is_loopback() && options.token.is_none() {
        return Err(Error::InvalidOption {
            option: "dashboard address",
            reason: format!(
                "{addr} is not a loopback address: set a bearer token to serve the dashboard there"
            ),
        });
    }
    Ok(())
}

/// The dashboard with default options.
pub fn router(client: Client) -> Router {
    router_with(client, DashboardOptions::default())
}

/// The dashboard with `options`.
pub fn router_with(client: Client, options: DashboardOptions) -> Router {
    let state = Arc::new(Dashboard {
        client,
        csrf: format!("{}{}", crate::id::random_hex(), crate::id::random_hex()),
        options,
        registered: api::jobs_by_queue(),
        discovered: Mutex::new(None),
    });
    Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route("/api/overview", get(api::overview))
        .route("/api/queues/{queue}/jobs", get(api::list_jobs))
        .route("/api/queues/{queue}/jobs/{id}", get(api::job_detail))
        .route("/api/queues/{queue}/jobs/{id}/retry", post(api::retry_job))
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
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
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
    discovered: Mutex<Option<(Instant, Vec<String>)>>,
}

const PAGE: &str = include_str!("page.html");

async fn page(State(state): State<Arc<Dashboard>>) -> Response {
    let html = PAGE.replace("{{csrf}}", &escape_html(&state.csrf)).replace(
        "{{demo}}",
        if state.options.demo { "true" } else { "false" },
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

/// Authentication (when a token is set) and the CSRF check on changes.
async fn guard(State(state): State<Arc<Dashboard>>, request: Request, next: Next) -> Response {
    let mut set_cookie = None;
    if state.options.token.is_none() && !loopback_host(request.headers()) {
        // Without a token only a loopback Host is served: a page that
        // rebinds its own domain to 127.0.0.1 must not reach the dashboard.
        return (
            StatusCode::FORBIDDEN,
            "without a token the dashboard answers only to a loopback Host",
        )
            .into_response();
    }
    if let Some(token) = &state.options.token {
        let query = request.uri().query();
        if !presents_token(request.headers(), query, token) {
            return (
                StatusCode::UNAUTHORIZED,
                "a valid dashboard token is required",
            )
                .into_response();
        }
        if query_param(query, "token").is_some() {
            set_cookie = Some(format!(
                "jobqueue_token={token}; HttpOnly; SameSite=Strict; Path=/"
            ));
        }
    }
    if request.method() == Method::POST {
        let headers = request.headers();
        let token_ok = headers
            .get("x-csrf-token")
            .is_some_and(|v| constant_time_eq(v.as_bytes(), state.csrf.as_bytes()));
        if !token_ok || !same_origin(headers) {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
        }
    }
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// True when a request presents `token`: as `Authorization: Bearer`, as the
/// `jobqueue_token` cookie the dashboard sets, or as `?token=`. For routes
/// served beside the dashboard that must be guarded the same way.
pub fn presents_token(headers: &HeaderMap, query: Option<&str>, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let presented = bearer(headers)
        .or_else(|| cookie(headers, "jobqueue_token"))
        .or_else(|| query_param(query, "token"));
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the `Host` header names a loopback address (or is absent, as
/// in requests that no browser sent).
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// False when the browser says the request comes from another site (an
/// `Origin` that is not this host, or `Sec-Fetch-Site: cross-site`): the CSRF
/// check for endpoints that scripts also call without a token.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return false;
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or_default();
            let host = host.to_str().unwrap_or_default();
            origin.split_once("://").map(|(_, rest)| rest) == Some(host)
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(name)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        pair.strip_prefix(name)?
            .strip_prefix('=')
            .map(str::to_owned)
    })
}

/// Escapes text for an HTML context.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<script>"x"&'y'</script>"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let open = DashboardOptions::new();
        assert!(check_bind("127.0.0.1:1".parse().unwrap(), &open).is_ok());
        assert!(check_bind("[::1]:1".parse().unwrap(), &open).is_ok());
        assert!(check_bind("0.0.0.0:1".parse().unwrap(), &open).is_err());
        assert!(
            check_bind(
                "0.0.0.0:1".parse().unwrap(),
                &DashboardOptions::new().token("long-enough")
            )
            .is_ok()
        );
    }

    #[test]
    fn only_loopback_hosts_are_served_without_a_token() {
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            loopback_host(&m)
        };
        assert!(
            host("127.0.0.1:8792")
                && host("localhost:3000")
                && host("[::1]:8793")
                && host("localhost")
        );
        assert!(
            !host("evil.example:8792") && !host("10.0.0.5:8792") && !host("localhost.evil.example")
        );
        assert!(loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn empty_or_short_tokens_never_match() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(!presents_token(&h, Some("token="), ""));
        assert!(
            check_bind(
                "0.0.0.0:1".parse().unwrap(),
                &DashboardOptions::new().token("short")
            )
            .is_err()
        );
        assert!(presents_token(
            &HeaderMap::new(),
            Some("token=longenough"),
            "longenough"
        ));
        assert!(!presents_token(
            &HeaderMap::new(),
            Some("token=longenougH"),
            "longenough"
        ));
    }

    #[test]
    fn origin_must_match_the_host() {
        let mut h = HeaderMap::new();
        assert!(
            same_origin(&h),
            "no Origin: not a cross-site browser request"
        );
        h.insert(header::HOST, "127.0.0.1:8792".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8792".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
