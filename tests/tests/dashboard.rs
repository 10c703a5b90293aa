//! The dashboard router, driven in-process: listing, detail, actions, the
//! CSRF check, the bearer token, and escaping. Listing (which finds queues
//! by `SCAN` on every primary of a cluster) and the actions run on a single
//! server and on a cluster.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use jobqueue::dashboard::{DashboardOptions, router, router_with};
use jobqueue::queue::QueueOptions;
use jobqueue::{Client, Limits, Rate};
use jobqueue_tests::*;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, csrf: Option<&str>) -> Request<Body> {
    let mut r = Request::post(path);
    if let Some(token) = csrf {
        r = r.header("x-csrf-token", token);
    }
    r.body(Body::empty()).unwrap()
}

fn post_json(path: &str, csrf: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("x-csrf-token", csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The CSRF token the page carries.
async fn csrf(app: &Router) -> String {
    let (_, _, html) = call(app, get("/")).await;
    let start = html.find(r#"name="csrf-token" content=""#).unwrap()
        + r#"name="csrf-token" content=""#.len();
    html[start..start + 32].to_owned()
}

async fn the_page_and_api_list_queues_jobs_and_details(redis: TestRedis) {
    let (_, q, _c) = setup_on(&redis, "dash", QueueOptions::new()).await;
    let client = redis.client().await;
    let ids = q
        .enqueue_many(&(0..30).map(|n| json!({"n": n})).collect::<Vec<_>>())
        .await
        .unwrap();
    let app = router(client);
    let (status, headers, html) = call(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.contains("<title>jobqueue</title>"));

    let (status, _, body) = call(&app, get("/api/overview")).await;
    assert_eq!(status, StatusCode::OK);
    let overview: Value = serde_json::from_str(&body).unwrap();
    let dash = overview["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "dash")
        .expect("found in Redis");
    assert_eq!(dash["stats"]["pending_depth"], 30);

    let (_, _, body) = call(
        &app,
        get("/api/queues/dash/jobs?state=pending&offset=20&limit=20"),
    )
    .await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 30);
    let listed: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ids[20..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(page["jobs"][0]["payload"], json!({"n": 20}));

    let (status, _, body) = call(&app, get(&format!("/api/queues/dash/jobs/{}", ids[0]))).await;
    assert_eq!(status, StatusCode::OK);
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["fields"]["status"], "pending");
    assert!(detail["fields"]["enqueued_at_ms"].is_string());
    let (status, _, _) = call(&app, get("/api/queues/dash/jobs/ffffffffffffffff")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&app, get("/api/queues/dash/jobs?state=lost")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let options = jobqueue::queue::ScheduleOptions::new().tz("Europe/Berlin");
    q.put_schedule("digest", "0 0 7 * * *", "send_digest", "null", &options)
        .await
        .unwrap();
    let (status, _, body) = call(&app, get("/api/queues/dash/schedules")).await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed = &body["schedules"][0];
    assert_eq!(
        (listed["name"].as_str(), listed["tz"].as_str()),
        (Some("digest"), Some("Europe/Berlin"))
    );
    assert!(
        listed["next_run"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{listed}"
    );
    assert!(
        html.contains("id=\"schedules\""),
        "the page shows schedules"
    );
}

async fn changes_need_post_with_the_pages_csrf_token(redis: TestRedis) {
    let (_, q, _c) = setup_on(&redis, "dash", QueueOptions::new().max_attempts(1)).await;
    let client = redis.client().await;
    let app = router(client);
    let token = csrf(&app).await;
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&job, "boom").await.unwrap();

    let retry = format!("/api/queues/dash/jobs/{id}/retry");
    assert_eq!(
        call(&app, post(&retry, None)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, post(&retry, Some("0000"))).await.0,
        StatusCode::FORBIDDEN
    );
    let cross = Request::post(&retry)
        .header("x-csrf-token", &token)
        .header(header::HOST, "127.0.0.1:8793")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, cross).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&app, get(&retry)).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(q.stats().await.unwrap().failed_depth, 1, "nothing changed");

    let (status, _, body) = call(&app, post(&retry, Some(&token))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"retried":true}"#)
    );
    assert_eq!(q.stats().await.unwrap().pending_depth, 1);

    assert_eq!(
        call(&app, post("/api/queues/dash/pause", Some(&token)))
            .await
            .0,
        StatusCode::OK
    );
    assert!(q.stats().await.unwrap().paused);
    assert_eq!(
        call(&app, post("/api/queues/dash/resume", Some(&token)))
            .await
            .0,
        StatusCode::OK
    );
    assert!(!q.stats().await.unwrap().paused);

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&job, "boom again").await.unwrap();
    let (_, _, body) = call(&app, post("/api/queues/dash/retry-failed", Some(&token))).await;
    assert_eq!(body, format!(r#"{{"retried":["{id}"]}}"#));
    let (_, _, body) = call(
        &app,
        post(&format!("/api/queues/dash/jobs/{id}/delete"), Some(&token)),
    )
    .await;
    assert_eq!(body, r#"{"deleted":true}"#);

    let waiting = q.enqueue(&json!({})).await.unwrap();
    let cancel = format!("/api/queues/dash/jobs/{waiting}/cancel");
    assert_eq!(
        call(&app, post(&cancel, None)).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _, body) = call(&app, post(&cancel, Some(&token))).await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["outcome"].as_str(), body["status"].as_str()),
        (Some("cancelled"), Some("pending"))
    );
    let (_, _, body) = call(&app, post(&cancel, Some(&token))).await;
    assert!(body.contains("already_finished"), "{body}");
    let (_, _, listed) = call(&app, get("/api/queues/dash/jobs?state=cancelled")).await;
    assert!(
        listed.contains(&waiting) && listed.contains("cancelled from the dashboard"),
        "{listed}"
    );

    q.enqueue(&json!({})).await.unwrap();
    let (status, _, _) = call(&app, post("/api/queues/dash/purge", Some(&token))).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "purge needs the queue's name as confirmation"
    );
    let (status, _, _) = call(
        &app,
        post("/api/queues/dash/purge?confirm=dash", Some(&token)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q.stats().await.unwrap().enqueued_total, 0);
}

#[tokio::test]
async fn a_bearer_token_guards_every_route() {
    let (server, _q, _c) = setup("dash", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let app = router_with(client, DashboardOptions::new().token("s3cret"));
    assert_eq!(call(&app, get("/")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, get("/api/overview")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let authed = Request::get("/api/overview")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, authed).await.0, StatusCode::OK);
    let wrong = Request::get("/")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = call(&app, get("/?token=s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("jobqueue_token=s3cret") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let with_cookie = Request::get("/api/overview")
        .header(header::COOKIE, "jobqueue_token=s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, with_cookie).await.0, StatusCode::OK);
}

#[tokio::test]
async fn what_the_dashboard_renders_is_never_markup() {
    let (server, q, _c) = setup("dash", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let evil = "<script>alert('x')</script>";
    let id = q.enqueue(&json!({ "html": evil })).await.unwrap();
    let app = router(client);
    // The page carries no job data: it fetches JSON and sets it as text.
    let (_, headers, html) = call(&app, get("/")).await;
    assert!(!html.contains("alert('x')"));
    assert!(html.contains("textContent") && !html.contains("innerHTML"));
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let (_, headers, body) = call(&app, get(&format!("/api/queues/dash/jobs/{id}"))).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["payload"]["html"], evil);
}

#[tokio::test]
async fn a_rate_key_is_shown_as_text_never_markup() {
    let (server, q, _c) = setup("dash", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let evil = "<script>alert(1)</script>";
    q.set_limits_of_key(evil, Some(&Limits::new().max_running(1)))
        .await
        .unwrap();
    let app = router(client);
    // The page carries no limits: it fetches them as JSON and sets them as
    // text.
    let (_, _, html) = call(&app, get("/")).await;
    assert!(!html.contains("alert(1)"));
    assert!(html.contains("id=\"limits\"") && html.contains("renderLimits"));
    assert!(html.contains("textContent") && !html.contains("innerHTML"));
    let (status, headers, body) = call(&app, get("/api/queues/dash/limits")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["keys"][evil]["max_running"], 1);
    // Nor does a rejected rate come back as markup.
    let token = csrf(&app).await;
    let (status, headers, body) = call(
        &app,
        post_json("/api/queues/dash/limits", &token, &json!({ "rate": evil })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
}

#[tokio::test]
async fn the_overview_shows_the_new_depths() {
    use jobqueue::queue::{EnqueueOptions, NewJob};
    let (server, q, _c) = setup("dash", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let job = |options: EnqueueOptions| NewJob::new(&json!({})).unwrap().options(options);
    q.enqueue(&json!({})).await.unwrap();
    q.submit(job(EnqueueOptions::new().priority(2)))
        .await
        .unwrap();
    for key in ["tenant:1", "tenant:1", "tenant:2"] {
        q.submit(job(EnqueueOptions::new().rate_key(key)))
            .await
            .unwrap();
    }
    let app = router(client);
    let (_, _, body) = call(&app, get("/api/overview")).await;
    let overview: Value = serde_json::from_str(&body).unwrap();
    let dash = overview["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "dash")
        .unwrap();
    let stats = &dash["stats"];
    assert_eq!(
        [
            &stats["pending_depth"],
            &stats["prioritized_depth"],
            &stats["keyed_depth"],
            &stats["rate_keys"]
        ],
        [&json!(5), &json!(1), &json!(3), &json!(2)],
        "{stats}"
    );
    let (_, _, html) = call(&app, get("/")).await;
    assert!(
        html.contains("s.prioritized_depth")
            && html.contains("s.keyed_depth")
            && html.contains("s.rate_keys"),
        "the queues table lists the new depths"
    );
}

/// Where the page sends its API calls when the browser shows `pathname`:
/// page.html's `BASE`, which the test below checks the page still computes.
fn api_base(pathname: &str) -> String {
    let mount = pathname.strip_suffix("index.html").unwrap_or(pathname);
    if mount.ends_with('/') {
        mount.to_owned()
    } else {
        format!("{mount}/")
    }
}

/// Mounted as the README shows, the page answers at `/admin/jobs`, at
/// `/admin/jobs/` (axum's `nest` answered 404 there) and at
/// `/admin/jobs/index.html`, and from each its API and metrics links reach
/// the dashboard (from index.html they used to go to `index.html/api/…`).
#[tokio::test]
async fn the_dashboard_mounts_under_a_path_with_or_without_a_trailing_slash() {
    let (server, q, _c) = setup("dash", QueueOptions::new()).await;
    q.enqueue(&json!({})).await.unwrap();
    let client = Client::connect(&server.url()).await.unwrap();
    let app = Router::new()
        .route("/", axum::routing::get(|| async { "the service" }))
        .nest_service("/admin/jobs", router(client));
    for page in ["/admin/jobs", "/admin/jobs/", "/admin/jobs/index.html"] {
        let (status, _, html) = call(&app, get(page)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            html.contains(r#"const MOUNT = location.pathname.replace(/index\.html$/, "");"#)
                && html.contains(r#"const BASE = MOUNT.endsWith("/") ? MOUNT : MOUNT + "/";"#),
            "the page resolves its API under its own path as api_base does"
        );
        let base = api_base(page);
        let (status, _, body) = call(
            &app,
            get(&format!("{base}api/queues/dash/jobs?state=pending")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "the API from {page}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["total"], 1);
        let (status, _, metrics) = call(&app, get(&format!("{base}metrics"))).await;
        assert_eq!(status, StatusCode::OK, "the metrics link from {page}");
        assert!(metrics.contains("jobqueue_"), "{metrics}");
    }
    let (_, _, html) = call(&app, get("/admin/jobs/")).await;
    let start = html.find(r#"name="csrf-token" content=""#).unwrap()
        + r#"name="csrf-token" content=""#.len();
    let csrf = &html[start..start + 32];
    let (status, _, _) = call(&app, post("/admin/jobs/api/queues/dash/pause", Some(csrf))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an action posted from the mounted page"
    );
    assert!(q.stats().await.unwrap().paused);
    assert_eq!(call(&app, get("/")).await.2, "the service");
}

#[tokio::test]
async fn without_a_token_only_a_loopback_host_is_served() {
    let (server, _q, _c) = setup("dash", QueueOptions::new()).await;
    let client = Client::connect(&server.url()).await.unwrap();
    let app = router(client);
    let with_host = |host: &str| {
        Request::get("/")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    // A page whose domain was rebound to 127.0.0.1 still sends its own name.
    assert_eq!(
        call(&app, with_host("evil.example:8793")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, with_host("127.0.0.1:8793")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, with_host("localhost:8793")).await.0,
        StatusCode::OK
    );
}

async fn the_limits_are_shown_and_set(redis: TestRedis) {
    let (_, q, _c) = setup_on(&redis, "dash", QueueOptions::new()).await;
    let client = redis.client().await;
    let app = router(client);
    let token = csrf(&app).await;
    q.set_limits(&Limits::new().rate("5/m".parse().unwrap()).max_running(3))
        .await
        .unwrap();
    q.set_key_limits(&Limits::new().max_running(2))
        .await
        .unwrap();
    q.set_limits_of_key(
        "tenant:7",
        Some(&Limits::new().rate("10/250ms".parse().unwrap()).burst(4)),
    )
    .await
    .unwrap();

    let (status, headers, body) = call(&app, get("/api/queues/dash/limits")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        shown,
        json!({
            "queue": {"rate": {"count": 5, "period_ms": 60000}, "burst": 5, "max_running": 3},
            "per_key": {"rate": null, "burst": null, "max_running": 2},
            "keys": {"tenant:7": {"rate": {"count": 10, "period_ms": 250}, "burst": 4, "max_running": null}},
        })
    );

    let (status, _, body) = call(
        &app,
        post_json(
            "/api/queues/dash/limits",
            &token,
            &json!({"rate": "100/s", "burst": 10, "max_running": null}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answered: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answered["queue"],
        json!({"rate": {"count": 100, "period_ms": 1000}, "burst": 10, "max_running": null})
    );
    let stored = q.limits().await.unwrap();
    assert_eq!(
        stored.queue,
        Limits::new()
            .rate(Rate::new(100, Duration::from_secs(1)))
            .burst(10)
    );
    assert_eq!(
        stored.per_key,
        Limits::new().max_running(2),
        "only the queue's own limits change"
    );
    assert_eq!(stored.keys.len(), 1);

    // Fields left out are removed, as with `Queue::set_limits`.
    let (status, _, body) = call(
        &app,
        post_json(
            "/api/queues/dash/limits",
            &token,
            &json!({"max_running": 7}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        q.limits().await.unwrap().queue,
        Limits::new().max_running(7)
    );
}

async fn bad_limits_answer_400_and_change_nothing(redis: TestRedis) {
    let (_, q, _c) = setup_on(&redis, "dash", QueueOptions::new()).await;
    let client = redis.client().await;
    let app = router(client);
    let token = csrf(&app).await;
    q.set_limits(&Limits::new().rate("5/s".parse().unwrap()).max_running(3))
        .await
        .unwrap();
    let before = q.limits().await.unwrap().queue;
    assert_eq!(before.max_running, Some(3));

    for bad in [
        json!({"rate": "fast", "burst": 10}),
        json!({"rate": "0/s"}),
        json!({"rate": "100/fortnight"}),
        json!({"rate": 100}),
        json!({"burst": 5}),
        json!({"rate": "1/s", "burst": 0}),
        json!({"max_running": 0}),
        json!({"max_running": -1}),
        json!({"max_running": "lots"}),
        json!({"max_running": 1.5}),
        json!({"rate": "1/s", "ceiling": 4}),
        json!([]),
        json!(["1/s", 2, 3]),
        json!(null),
        json!("100/s"),
    ] {
        let (status, headers, body) =
            call(&app, post_json("/api/queues/dash/limits", &token, &bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let not_json = Request::post("/api/queues/dash/limits")
        .header("x-csrf-token", &token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("rate=100/s"))
        .unwrap();
    let (status, _, body) = call(&app, not_json).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (status, _, body) = call(&app, post("/api/queues/dash/limits", Some(&token))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty body: {body}");

    let (_, _, body) = call(
        &app,
        post_json("/api/queues/dash/limits", &token, &json!({"rate": "fast"})),
    )
    .await;
    assert!(
        body.contains("invalid rate"),
        "the parser's message: {body}"
    );
    assert_eq!(q.limits().await.unwrap().queue, before, "nothing changed");
}

async fn setting_limits_is_guarded_like_every_change(redis: TestRedis) {
    let (_, q, _c) = setup_on(&redis, "dash", QueueOptions::new()).await;
    let client = redis.client().await;
    let app = router(client);
    let token = csrf(&app).await;
    let path = "/api/queues/dash/limits";
    let wanted = json!({"rate": "100/s"});
    let request = |csrf: Option<&str>| {
        let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            r = r.header("x-csrf-token", csrf);
        }
        r.body(Body::from(wanted.to_string())).unwrap()
    };
    assert_eq!(call(&app, request(None)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&app, request(Some("0000"))).await.0,
        StatusCode::FORBIDDEN
    );
    let cross = Request::post(path)
        .header("x-csrf-token", &token)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "127.0.0.1:8793")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from(wanted.to_string()))
        .unwrap();
    assert_eq!(call(&app, cross).await.0, StatusCode::FORBIDDEN);
    let cross_site = Request::post(path)
        .header("x-csrf-token", &token)
        .header(header::CONTENT_TYPE, "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(wanted.to_string()))
        .unwrap();
    assert_eq!(call(&app, cross_site).await.0, StatusCode::FORBIDDEN);
    let rebound = Request::post(path)
        .header("x-csrf-token", &token)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "evil.example:8793")
        .body(Body::from(wanted.to_string()))
        .unwrap();
    assert_eq!(call(&app, rebound).await.0, StatusCode::FORBIDDEN);
    for method in ["PUT", "PATCH", "DELETE"] {
        let other = Request::builder()
            .method(method)
            .uri(path)
            .header("x-csrf-token", &token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(wanted.to_string()))
            .unwrap();
        assert_eq!(
            call(&app, other).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}: only a guarded POST changes limits"
        );
    }
    assert!(
        q.limits().await.unwrap().queue.is_empty(),
        "nothing changed"
    );

    let (status, _, _) = call(&app, post_json(path, &token, &wanted)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(q.limits().await.unwrap().queue.rate.is_some());
}

#[jobqueue::job(queue = "dash-kids")]
async fn dash_kid(n: u64) -> u64 {
    n
}

#[jobqueue::job(queue = "dash-done")]
async fn dash_done(summary: jobqueue::workflow::BatchSummary<String>) {
    let _ = summary;
}

/// The batches of a queue, with their progress ("n of m"), as the page
/// shows them.
async fn batches_are_listed_with_their_progress(redis: TestRedis) {
    let client = redis.client().await;
    let open = client
        .batch()
        .add::<dash_kid>(1)
        .add::<dash_kid>(2)
        .on_complete::<dash_done, _>("<b>not markup</b>".to_owned())
        .enqueue()
        .await
        .unwrap();
    let app = router_with(
        client.clone(),
        DashboardOptions::new().queues(["dash-done", "dash-kids"]),
    );
    let (status, _, body) = call(&app, get("/api/queues/dash-done/batches")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let batches = listed["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{body}");
    assert_eq!(batches[0]["id"], open.id());
    assert_eq!(batches[0]["state"], "open");
    assert_eq!(
        (
            batches[0]["total"].as_u64(),
            batches[0]["succeeded"].as_u64()
        ),
        (Some(2), Some(0))
    );

    let runner = jobqueue::Runner::builder(client.clone())
        .queues(["dash-kids", "dash-done"])
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    open.wait(Duration::from_secs(20)).await.unwrap();
    stop_runner(token, task).await;
    let (_, _, body) = call(&app, get("/api/queues/dash-done/batches")).await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["batches"][0]["state"], "done");
    assert_eq!(listed["batches"][0]["succeeded"], 2);
    // The page renders them, as text.
    let (_, _, html) = call(&app, get("/")).await;
    assert!(html.contains("refreshBatches") && html.contains(r#"<table id="batches">"#));
    // A queue with no batch lists none; an invalid queue name is refused.
    let (_, _, body) = call(&app, get("/api/queues/dash-kids/batches")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["batches"],
        json!([])
    );
    let (status, _, _) = call(&app, get("/api/queues/a%20b/batches")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

on_each_topology! {
    #[tokio::test] the_page_and_api_list_queues_jobs_and_details,
    #[tokio::test] changes_need_post_with_the_pages_csrf_token,
    #[tokio::test] the_limits_are_shown_and_set,
    #[tokio::test] bad_limits_answer_400_and_change_nothing,
    #[tokio::test] setting_limits_is_guarded_like_every_change,
    #[tokio::test] batches_are_listed_with_their_progress,
}
