//! The dashboard's access rules, as a layer any router can wear: with a
//! token, every request must present it; without one, only a loopback
//! `Host` is served (a page that rebinds its own domain to 127.0.0.1 must
//! not reach it); a POST a browser marks as cross-site is refused. The
//! dashboard's own changes also need the page's CSRF token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::{Dashboard, DashboardOptions};

/// Serves `router` under the dashboard's access rules for `options`: the
/// same token (as a bearer header, the cookie the dashboard sets, or
/// `?token=`), the same loopback-only rule without a token, and POSTs from
/// other sites refused. For routes served beside the dashboard, such as the
/// demo's controls.
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use jobqueue::dashboard::{DashboardOptions, protect};
///
/// let options = DashboardOptions::new().token("a-long-secret");
/// let admin: Router = protect(Router::new().route("/reindex", post(|| async { "ok" })), &options);
/// # let _ = admin;
/// ```
pub fn protect<S>(router: Router<S>, options: &DashboardOptions) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let token = Arc::new(options.token.clone());
    router.layer(middleware::from_fn_with_state(token, access))
}

/// The access rules of [`protect`].
async fn access(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let mut set_cookie = None;
    match token.as_deref() {
        None if !loopback_host(request.headers()) => {
            return (
                StatusCode::FORBIDDEN,
                "without a token the dashboard answers only to a loopback Host\n",
            )
                .into_response();
        }
        None => {}
        Some(token) => {
            let query = request.uri().query();
            if !presents_token(request.headers(), query, token) {
                return (
                    StatusCode::UNAUTHORIZED,
                    "a valid dashboard token is required\n",
                )
                    .into_response();
            }
            if query_param(query, "token").is_some() {
                set_cookie = Some(format!(
                    "jobqueue_token={token}; HttpOnly; SameSite=Strict; Path=/"
                ));
            }
        }
    }
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The dashboard's changes (POSTs) must carry the page's CSRF token.
pub(super) async fn csrf(
    State(state): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::POST {
        let token_ok = request
            .headers()
            .get("x-csrf-token")
            .is_some_and(|v| constant_time_eq(v.as_bytes(), state.csrf.as_bytes()));
        if !token_ok {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
        }
    }
    next.run(request).await
}

/// True when a request presents `token`: as `Authorization: Bearer`, as the
/// `jobqueue_token` cookie the dashboard sets, or as `?token=`.
fn presents_token(headers: &HeaderMap, query: Option<&str>, token: &str) -> bool {
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
fn loopback_host(headers: &HeaderMap) -> bool {
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
fn same_origin(headers: &HeaderMap) -> bool {
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
pub(super) fn escape_html(text: &str) -> String {
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
        assert!(open.check_bind("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(open.check_bind("[::1]:1".parse().unwrap()).is_ok());
        assert!(open.check_bind("0.0.0.0:1".parse().unwrap()).is_err());
        assert!(
            DashboardOptions::new()
                .token("long-enough")
                .check_bind("0.0.0.0:1".parse().unwrap())
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
            DashboardOptions::new()
                .token("short")
                .check_bind("0.0.0.0:1".parse().unwrap())
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
