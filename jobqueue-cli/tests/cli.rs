//! The `jobqueue` command against a private Redis (and a private cluster).

use std::process::{Command, Output};

use std::time::Duration;

use jobqueue::queue::{EnqueueOptions, NewJob, QueueOptions};
use jobqueue_tests::{RedisCluster, RedisServer, TestRedis, Topology};
use serde_json::{Value, json};

fn jobqueue(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jobqueue"))
        .args(args)
        .env("REDIS_URL", url)
        .output()
        .expect("the jobqueue binary runs")
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = jobqueue(url, &all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn operators_can_inspect_and_act_on_a_queue_on_a_single_server() {
    operators_can_inspect_and_act_on_a_queue(&RedisServer::start().url());
}

#[test]
fn operators_can_inspect_and_act_on_a_queue_on_a_cluster() {
    operators_can_inspect_and_act_on_a_queue(&RedisCluster::start(3, 0).url());
}

fn operators_can_inspect_and_act_on_a_queue(url: &str) {
    let a = json(
        url,
        &[
            "-q",
            "mail",
            "enqueue",
            r#"{"to":"a"}"#,
            "--name",
            "send",
            "--max-attempts",
            "1",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(url, &["-q", "mail", "enqueue", r#"{"to":"b"}"#]);
    let stats = json(url, &["-q", "mail", "stats"]);
    assert_eq!(
        (
            stats["pending_depth"].as_u64(),
            stats["enqueued_total"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // The private server runs with the default policy; stats names it.
    assert_eq!(stats["maxmemory_policy"], "noeviction");

    let pending = json(url, &["-q", "mail", "list", "pending"]);
    assert_eq!(pending[0]["id"], a.as_str());
    assert_eq!(pending[0]["payload"]["to"], "a");
    let shown = json(url, &["-q", "mail", "show", &a]);
    assert_eq!(
        (shown["job"].as_str(), shown["max_attempts"].as_u64()),
        (Some("send"), Some(1))
    );

    // Tables by default.
    let table = jobqueue(url, &["-q", "mail", "list", "pending"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("ID") && text.contains(&a), "{text}");
    let text = String::from_utf8(jobqueue(url, &["-q", "mail", "stats"]).stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("pending_depth") && l.ends_with(" 2")),
        "{text}"
    );

    assert_eq!(json(url, &["-q", "mail", "pause"])["paused"], true);
    assert_eq!(json(url, &["-q", "mail", "stats"])["paused"], true);
    assert_eq!(json(url, &["-q", "mail", "resume"])["paused"], false);
    let report = json(url, &["-q", "mail", "reclaim"]);
    assert_eq!(report["reclaimed"], Value::Array(vec![]));

    assert_eq!(
        jobqueue(url, &["-q", "mail", "retry", &a]).status.code(),
        Some(3),
        "not a failed job"
    );

    let schedules = jobqueue(url, &["-q", "mail", "schedules"]);
    assert!(String::from_utf8_lossy(&schedules.stdout).contains("(none)"));
    assert_eq!(
        jobqueue(url, &["-q", "mail", "unschedule", "nightly"])
            .status
            .code(),
        Some(3),
        "no such schedule"
    );

    let cancelled = json(url, &["-q", "mail", "cancel", &a, "--reason", "typo"]);
    assert_eq!(
        (cancelled["outcome"].as_str(), cancelled["status"].as_str()),
        (Some("cancelled"), Some("pending"))
    );
    let listed = json(url, &["-q", "mail", "list", "cancelled"]);
    assert_eq!(listed[0]["id"], a.as_str());
    assert_eq!(
        json(url, &["-q", "mail", "show", &a])["cancel_reason"],
        "typo"
    );
    let again = jobqueue(url, &["-q", "mail", "cancel", &a]);
    assert_eq!(
        again.status.code(),
        Some(3),
        "a finished job is not cancelled"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already cancelled"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        jobqueue(url, &["-q", "mail", "cancel", "no-such-job"])
            .status
            .code(),
        Some(3)
    );
    let purge = jobqueue(url, &["-q", "mail", "purge"]);
    assert_eq!(purge.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&purge.stderr).contains("--yes"));
    assert!(
        json(url, &["-q", "mail", "purge", "--yes"])["deleted_keys"]
            .as_u64()
            .unwrap()
            >= 4
    );
    // A purge leaves no key of the queue: stats says there is none.
    assert_eq!(
        jobqueue(url, &["-q", "mail", "stats"]).status.code(),
        Some(3)
    );
}

#[test]
fn retry_sends_dead_letters_back() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async {
        let q = jobqueue_tests::queue(
            &server,
            "jobs",
            jobqueue::queue::QueueOptions::default().max_attempts(1),
        )
        .await;
        let id = q.enqueue(&serde_json::json!({})).await.unwrap();
        let job = q.claim(std::time::Duration::ZERO).await.unwrap().unwrap();
        let _ = q.fail(&job, "boom").await.unwrap();
        id
    });
    assert_eq!(
        json(&server.url(), &["list", "failed"])[0]["last_error"],
        "boom"
    );
    assert_eq!(
        json(&server.url(), &["retry", &id])["retried"][0],
        id.as_str()
    );
    assert_eq!(json(&server.url(), &["stats"])["pending_depth"], 1);
    assert_eq!(json(&server.url(), &["stats"])["revived_total"], 1);
    assert_eq!(
        json(&server.url(), &["retry", "--all-failed"])["retried"],
        Value::Array(vec![])
    );
}

#[test]
fn errors_are_clear_and_have_exit_codes() {
    let server = RedisServer::start();
    let missing = jobqueue(&server.url(), &["show", "ffffffffffffffff"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no job ffffffffffffffff"));
    let bad_json = jobqueue(&server.url(), &["enqueue", "{not json"]);
    assert_eq!(bad_json.status.code(), Some(2));
    let bad_queue = jobqueue(&server.url(), &["-q", "a b", "stats"]);
    assert_eq!(bad_queue.status.code(), Some(2));
    let usage = jobqueue(&server.url(), &["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let mut down = RedisServer::start();
    down.kill();
    let unreachable = jobqueue(&down.url(), &["stats"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("could not reach Redis"));
    let open = jobqueue(
        &server.url(),
        &["dashboard", "--host", "0.0.0.0", "--port", "0"],
    );
    assert_eq!(
        open.status.code(),
        Some(2),
        "a non-loopback dashboard needs a token"
    );
    assert!(String::from_utf8_lossy(&open.stderr).contains("token"));
}

#[test]
fn schedules_are_listed_with_their_next_run_and_can_be_removed() {
    let server = RedisServer::start();
    let url = server.url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let q = jobqueue::queue::Queue::connect(&url, "mail").await.unwrap();
        let options = jobqueue::queue::ScheduleOptions::new().tz("Europe/Berlin");
        assert!(
            q.put_schedule("digest", "0 0 7 * * *", "send_digest", "null", &options)
                .await
                .unwrap()
        );
    });
    let listed = json(&url, &["-q", "mail", "schedules"]);
    let row = &listed[0];
    assert_eq!(
        (
            row["name"].as_str(),
            row["cron"].as_str(),
            row["tz"].as_str(),
            row["job"].as_str()
        ),
        (
            Some("digest"),
            Some("0 0 7 * * *"),
            Some("Europe/Berlin"),
            Some("send_digest")
        )
    );
    assert!(row["next_run"].as_str().unwrap().ends_with('Z'), "{row}");
    let table = String::from_utf8(jobqueue(&url, &["-q", "mail", "schedules"]).stdout).unwrap();
    assert!(
        table.starts_with("NAME") && table.contains("digest"),
        "{table}"
    );
    assert_eq!(
        json(&url, &["-q", "mail", "unschedule", "digest"])["removed"],
        "digest"
    );
    assert_eq!(
        json(&url, &["-q", "mail", "schedules"]),
        Value::Array(vec![])
    );
}

/// The limits of queue `queue` as the library reads them.
fn stored_limits(url: &str, queue: &str) -> jobqueue::QueueLimits {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        jobqueue::queue::Queue::connect(url, queue)
            .await
            .unwrap()
            .limits()
            .await
            .unwrap()
    })
}

fn limits(rate: Option<&str>, burst: Option<u32>, max_running: Option<u32>) -> jobqueue::Limits {
    let mut limits = jobqueue::Limits::new();
    if let Some(rate) = rate {
        limits = limits.rate(rate.parse().unwrap());
    }
    if let Some(burst) = burst {
        limits = limits.burst(burst);
    }
    if let Some(n) = max_running {
        limits = limits.max_running(n);
    }
    limits
}

#[test]
fn limits_are_set_merged_and_cleared_on_a_single_server() {
    limits_are_set_merged_and_cleared(&RedisServer::start().url());
}

#[test]
fn limits_are_set_merged_and_cleared_on_a_cluster() {
    limits_are_set_merged_and_cleared(&RedisCluster::start(3, 0).url());
}

fn limits_are_set_merged_and_cleared(url: &str) {
    let none = jobqueue::Limits::new();
    let shown = json(url, &["-q", "email", "limit"]);
    assert_eq!(
        (
            &shown["queue"]["rate"],
            &shown["per_key"]["rate"],
            &shown["keys"]
        ),
        (&Value::Null, &Value::Null, &serde_json::json!({})),
        "{shown}"
    );

    let set = json(
        url,
        &[
            "-q",
            "email",
            "limit",
            "--rate",
            "100/s",
            "--burst",
            "10",
            "--max-running",
            "5",
        ],
    );
    // What is now stored is printed, rates as count and period_ms.
    assert_eq!(
        set["queue"],
        serde_json::json!({
            "rate": { "count": 100, "period_ms": 1000 },
            "burst": 10,
            "max_running": 5,
        })
    );
    let stored = stored_limits(url, "email");
    assert_eq!(stored.queue, limits(Some("100/s"), Some(10), Some(5)));
    assert_eq!((stored.per_key, stored.keys.len()), (none, 0));

    // One option changes that one limit and keeps the others.
    json(url, &["-q", "email", "limit", "--burst", "20"]);
    assert_eq!(
        stored_limits(url, "email").queue,
        limits(Some("100/s"), Some(20), Some(5)),
        "--burst alone keeps the rate and the cap"
    );
    json(url, &["-q", "email", "limit", "--max-running", "7"]);
    json(url, &["-q", "email", "limit", "--rate", "5/m"]);
    assert_eq!(
        stored_limits(url, "email").queue,
        limits(Some("5/m"), Some(20), Some(7)),
        "a burst given explicitly stays with a new rate"
    );

    // The table names each set of limits, rates as --rate takes them.
    let table = jobqueue(url, &["-q", "email", "limit"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    let queue_row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("queue "))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(queue_row, ["queue", "5/m", "20", "7"], "{text}");
    assert!(text.starts_with("LIMITS"), "{text}");

    // --clear removes every queue-level limit.
    let cleared = json(url, &["-q", "email", "limit", "--clear"]);
    assert_eq!(cleared["queue"]["max_running"], Value::Null, "{cleared}");
    assert_eq!(stored_limits(url, "email").queue, none);
    // A burst left at its default (the rate's count) follows a new rate.
    json(url, &["-q", "email", "limit", "--rate", "10/s"]);
    json(url, &["-q", "email", "limit", "--rate", "40/s"]);
    assert_eq!(
        stored_limits(url, "email").queue,
        limits(Some("40/s"), Some(40), None)
    );

    // --per-key sets the defaults of every rate key, not the queue's.
    json(url, &["-q", "email", "limit", "--per-key", "--rate", "2/s"]);
    let stored = stored_limits(url, "email");
    assert_eq!(stored.per_key, limits(Some("2/s"), Some(2), None));
    assert_eq!(stored.queue, limits(Some("40/s"), Some(40), None));

    // --key gives one key limits of its own, starting from the defaults.
    let own = json(
        url,
        &[
            "-q",
            "email",
            "limit",
            "--key",
            "tenant:42",
            "--max-running",
            "2",
        ],
    );
    assert_eq!(own["keys"]["tenant:42"]["max_running"], 2, "{own}");
    assert_eq!(
        stored_limits(url, "email").keys["tenant:42"],
        limits(Some("2/s"), Some(2), Some(2))
    );
    json(
        url,
        &[
            "-q",
            "email",
            "limit",
            "--key",
            "tenant:42",
            "--rate",
            "1/250ms",
        ],
    );
    let stored = stored_limits(url, "email");
    assert_eq!(
        stored.keys["tenant:42"],
        limits(Some("1/250ms"), Some(1), Some(2)),
        "a key's own limits merge too"
    );
    assert_eq!(
        stored.per_key,
        limits(Some("2/s"), Some(2), None),
        "the defaults stay"
    );
    let text = String::from_utf8(jobqueue(url, &["-q", "email", "limit"]).stdout).unwrap();
    let key_row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("key tenant:42"))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(key_row, ["key", "tenant:42", "1/250ms", "1", "2"], "{text}");

    // --key --clear gives the key the defaults again; other queues are apart.
    let back = json(
        url,
        &["-q", "email", "limit", "--key", "tenant:42", "--clear"],
    );
    assert_eq!(back["keys"], serde_json::json!({}), "{back}");
    let stored = stored_limits(url, "email");
    assert_eq!(stored.keys.len(), 0);
    assert_eq!(stored.per_key, limits(Some("2/s"), Some(2), None));
    json(url, &["-q", "email", "limit", "--per-key", "--clear"]);
    assert_eq!(stored_limits(url, "email").per_key, none);
    assert_eq!(
        stored_limits(url, "email").queue,
        limits(Some("40/s"), Some(40), None)
    );
    assert_eq!(stored_limits(url, "other").queue, none);
}

#[test]
fn bad_limits_exit_non_zero_with_the_library_message() {
    let server = RedisServer::start();
    let url = server.url();
    let refused = |args: &[&str], message: &str| {
        let mut all = vec!["-q", "email", "limit"];
        all.extend_from_slice(args);
        let out = jobqueue(&url, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    };
    refused(&["--rate", "fast"], "invalid rate \"fast\": no '/'");
    refused(
        &["--rate", "10/fortnight"],
        "the period's unit is not ms, s, m, h or d",
    );
    refused(&["--rate", "0/s"], "the count must be 1 to");
    refused(
        &["--max-running", "0"],
        "invalid option max_running: must be at least 1",
    );
    refused(
        &["--rate", "5/s", "--burst", "0"],
        "invalid option burst: 0 is not 1 to",
    );
    refused(
        &["--burst", "3"],
        "--burst needs a rate and queue email has none",
    );
    refused(
        &["--key", "tenant 1", "--max-running", "1"],
        "invalid option rate_key",
    );
    refused(&["--clear", "--rate", "1/s"], "cannot be used with");
    refused(
        &["--per-key", "--key", "a", "--clear"],
        "cannot be used with",
    );
    // None of them wrote anything.
    assert_eq!(
        stored_limits(&url, "email"),
        jobqueue::QueueLimits::default()
    );

    // With a rate stored, --burst alone is fine; with none for the key, not.
    json(&url, &["-q", "email", "limit", "--rate", "5/s"]);
    json(&url, &["-q", "email", "limit", "--burst", "3"]);
    refused(
        &["--per-key", "--burst", "3"],
        "--burst needs a rate and the per-key defaults of queue email have none",
    );
    assert_eq!(
        stored_limits(&url, "email").queue,
        limits(Some("5/s"), Some(3), None)
    );
}

#[test]
fn stats_count_the_jobs_of_every_lane() {
    let server = RedisServer::start();
    let url = server.url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use jobqueue::queue::{EnqueueOptions, NewJob};
        let q = jobqueue::queue::Queue::connect(&url, "lanes")
            .await
            .unwrap();
        let job = |options: EnqueueOptions| {
            NewJob::new(&serde_json::json!({}))
                .unwrap()
                .options(options)
        };
        q.enqueue(&serde_json::json!({})).await.unwrap();
        q.submit(job(EnqueueOptions::new().priority(2)))
            .await
            .unwrap();
        for key in ["tenant:1", "tenant:1", "tenant:2"] {
            q.submit(job(EnqueueOptions::new().rate_key(key)))
                .await
                .unwrap();
        }
    });
    let stats = json(&url, &["-q", "lanes", "stats"]);
    assert_eq!(
        [
            &stats["pending_depth"],
            &stats["prioritized_depth"],
            &stats["keyed_depth"],
            &stats["rate_keys"]
        ],
        [
            &serde_json::json!(5),
            &serde_json::json!(1),
            &serde_json::json!(3),
            &serde_json::json!(2)
        ],
        "{stats}"
    );
    let text = String::from_utf8(jobqueue(&url, &["-q", "lanes", "stats"]).stdout).unwrap();
    for (name, value) in [
        ("pending_depth", "5"),
        ("prioritized_depth", "1"),
        ("keyed_depth", "3"),
        ("rate_keys", "2"),
    ] {
        assert!(
            text.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words == [name, value]
            }),
            "{name} {value}: {text}"
        );
    }
}

#[jobqueue::job(queue = "cli-kids")]
async fn cli_kid(n: u64) -> u64 {
    n
}

#[jobqueue::job(queue = "cli-done")]
async fn cli_done(summary: jobqueue::workflow::BatchSummary<()>) {
    let _ = summary;
}

#[test]
fn batches_show_their_progress() {
    let server = RedisServer::start();
    let url = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, id) = rt.block_on(async {
        let client = jobqueue::Client::connect(&url).await.unwrap();
        let batch = client
            .batch()
            .add::<cli_kid>(1)
            .add::<cli_kid>(2)
            .add::<cli_kid>(3)
            .on_complete::<cli_done, _>(())
            .enqueue()
            .await
            .unwrap();
        (client, batch.id().to_owned())
    });
    // Nothing ran yet: open, 0 of 3.
    let listed = json(&url, &["-q", "cli-done", "batches"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "open");
    assert_eq!(listed[0]["progress"], "0/3");
    // A runner runs the children and relays their ends: done, 3 of 3.
    rt.block_on(async {
        let runner = jobqueue::Runner::builder(client.clone())
            .queues(["cli-kids", "cli-done"])
            .build()
            .unwrap();
        let (token, task) = jobqueue_tests::start_runner(runner);
        client
            .batch_handle("cli-done", &id)
            .unwrap()
            .wait(std::time::Duration::from_secs(20))
            .await
            .unwrap();
        jobqueue_tests::stop_runner(token, task).await;
    });
    let one = json(&url, &["-q", "cli-done", "batch", &id]);
    assert_eq!(one["state"], "done");
    assert_eq!(one["progress"], "3/3");
    assert_eq!(one["succeeded"], 3);
    assert_eq!(one["failed"], 0);
    // The plain table says it too.
    let table = jobqueue(&url, &["-q", "cli-done", "batches"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains(&id) && text.contains("3/3"), "{text}");
    // An unknown batch is an error with its exit code.
    let missing = jobqueue(&url, &["-q", "cli-done", "batch", "nope"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no batch nope"));
}

/// Sends one raw command, as another client could (slot-routed on a
/// cluster).
async fn raw(redis: &TestRedis, args: &[&str]) {
    let mut conn = redis.conn().await;
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap();
}

/// A key of queue `queue` in the layout jobqueue uses on `redis`.
fn key_of(redis: &TestRedis, queue: &str, suffix: &str) -> String {
    if redis.is_cluster() {
        format!("queue:{{{queue}}}:{suffix}")
    } else {
        format!("queue:{queue}:{suffix}")
    }
}

#[test]
fn queues_are_listed_with_their_depths_on_a_single_server() {
    queues_are_listed_with_their_depths(&TestRedis::start(Topology::Single));
}

#[test]
fn queues_are_listed_with_their_depths_on_a_cluster() {
    let redis = TestRedis::start(Topology::Cluster);
    let TestRedis::Cluster(cluster) = &redis else {
        unreachable!()
    };
    // One queue on each primary: the walk must visit all three.
    let primaries: std::collections::BTreeSet<usize> = ["mail", "sms", "idle"]
        .iter()
        .map(|q| cluster.primary_for(&format!("queue:{{{q}}}:pending")))
        .collect();
    assert_eq!(primaries.len(), 3, "the test's queues share a primary");
    queues_are_listed_with_their_depths(&redis);
}

fn queues_are_listed_with_their_depths(redis: &TestRedis) {
    let url = redis.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // mail: one job completed, one dead, one running, one waiting.
        let mail = redis
            .queue("mail", QueueOptions::default().max_attempts(1))
            .await;
        mail.enqueue_many(&[json!(1), json!(2), json!(3), json!(4)])
            .await
            .unwrap();
        let done = mail.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = mail.complete(&done, &json!("sent")).await.unwrap();
        let dead = mail.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = mail.fail(&dead, "boom").await.unwrap();
        let _running = mail.claim(Duration::ZERO).await.unwrap().unwrap();
        // sms, paused: one waiting, one delayed, one cancelled.
        let sms = redis.queue("sms", QueueOptions::default()).await;
        sms.enqueue(&json!({})).await.unwrap();
        let later = EnqueueOptions::new().delay(Duration::from_secs(3600));
        sms.submit(NewJob::new(&json!({})).unwrap().options(later))
            .await
            .unwrap();
        let typo = sms.enqueue(&json!({})).await.unwrap();
        assert!(sms.cancel(&typo, "typo").await.unwrap().is_applied());
        sms.pause().await.unwrap();
        // idle: only limits, no job ever.
        redis
            .client()
            .await
            .set_limits("idle", jobqueue::Limits::new().max_running(2))
            .await
            .unwrap();
        // Keys outside the layout are no queues.
        raw(redis, &["SET", "queue:stray", "1"]).await;
        raw(redis, &["SET", "other:mail:pending", "1"]).await;
    });

    let listed = json(&url, &["queues"]);
    let row = |queue: &str, depths: [u64; 6], paused: bool| {
        json!({
            "queue": queue,
            "pending": depths[0],
            "scheduled": depths[1],
            "processing": depths[2],
            "completed": depths[3],
            "failed": depths[4],
            "cancelled": depths[5],
            "paused": paused,
        })
    };
    assert_eq!(
        listed,
        json!([
            row("idle", [0, 0, 0, 0, 0, 0], false),
            row("mail", [1, 0, 1, 1, 1, 0], false),
            row("sms", [1, 1, 0, 0, 0, 1], true),
        ]),
        "every queue with keys, by name"
    );

    let table = jobqueue(&url, &["queues"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "QUEUE",
                "PENDING",
                "SCHEDULED",
                "PROCESSING",
                "COMPLETED",
                "FAILED",
                "CANCELLED",
                "PAUSED"
            ],
            vec!["idle", "0", "0", "0", "0", "0", "0", "false"],
            vec!["mail", "1", "0", "1", "1", "1", "0", "false"],
            vec!["sms", "1", "1", "0", "0", "0", "1", "true"],
        ],
        "{text}"
    );
}

#[test]
fn queues_on_an_empty_redis_is_an_empty_list() {
    let server = RedisServer::start();
    assert_eq!(json(&server.url(), &["queues"]), json!([]));
    let text = String::from_utf8(jobqueue(&server.url(), &["queues"]).stdout).unwrap();
    assert!(text.contains("(none)"), "{text}");
}

#[test]
fn stats_of_a_queue_without_keys_is_an_error_on_a_single_server() {
    stats_of_a_queue_without_keys_is_an_error(&TestRedis::start(Topology::Single));
}

#[test]
fn stats_of_a_queue_without_keys_is_an_error_on_a_cluster() {
    stats_of_a_queue_without_keys_is_an_error(&TestRedis::start(Topology::Cluster));
}

fn stats_of_a_queue_without_keys_is_an_error(redis: &TestRedis) {
    let url = redis.url();
    for args in [
        &["-q", "nope", "stats"][..],
        &["--json", "-q", "nope", "stats"],
    ] {
        let out = jobqueue(&url, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no queue nope in Redis") && stderr.contains("jobqueue queues"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "no zeros printed");
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // emptied: its one job deleted; its counters stay.
        let emptied = redis.queue("emptied", QueueOptions::default()).await;
        let id = emptied.enqueue(&json!({})).await.unwrap();
        assert!(emptied.delete_job(&id).await.unwrap());
        // ghost: only a job hash another client left, found by the scan.
        let ghost = key_of(redis, "ghost", "job:0123456789abcdef");
        raw(redis, &["HSET", &ghost, "payload", "{}"]).await;
    });
    // idle: only limits; held: only the pause flag.
    json(&url, &["-q", "idle", "limit", "--max-running", "2"]);
    json(&url, &["-q", "held", "pause"]);

    for (queue, enqueued, paused) in [
        ("emptied", 1, false),
        ("ghost", 0, false),
        ("idle", 0, false),
        ("held", 0, true),
    ] {
        let stats = json(&url, &["-q", queue, "stats"]);
        assert_eq!(
            (
                &stats["pending_depth"],
                &stats["enqueued_total"],
                &stats["paused"]
            ),
            (&json!(0), &json!(enqueued), &json!(paused)),
            "{queue} exists: {stats}"
        );
    }
    let text = String::from_utf8(jobqueue(&url, &["-q", "idle", "stats"]).stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["pending_depth", "0"])),
        "{text}"
    );
}

#[test]
fn show_gives_numbers_json_values_and_utc_times() {
    let server = RedisServer::start();
    let redis = TestRedis::Single(server);
    let url = redis.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async {
        let q = redis.queue("mail", QueueOptions::default()).await;
        let job = NewJob::new(&json!({"to": "a@example.com"}))
            .unwrap()
            .name("send")
            .options(EnqueueOptions::new().max_attempts(2));
        let id = q.submit(job).await.unwrap();
        let claimed = q.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = q.complete(&claimed, &json!({"sent": true})).await.unwrap();
        // A reference client's job whose payload is not JSON.
        raw(
            &redis,
            &[
                "HSET",
                "queue:mail:job:ffff0000ffff0000",
                "id",
                "ffff0000ffff0000",
                "payload",
                "{not json",
                "status",
                "pending",
                "attempts",
                "0",
                "enqueued_at_ms",
                "1764568318123",
            ],
        )
        .await;
        id
    });

    let shown = json(&url, &["-q", "mail", "show", &id]);
    assert_eq!(
        (
            &shown["id"],
            &shown["job"],
            &shown["status"],
            &shown["attempts"],
            &shown["max_attempts"],
            &shown["payload"],
            &shown["result"],
        ),
        (
            &json!(id),
            &json!("send"),
            &json!("completed"),
            &json!(1),
            &json!(2),
            &json!({"to": "a@example.com"}),
            &json!({"sent": true}),
        ),
        "{shown}"
    );
    for field in ["enqueued_at", "completed_at"] {
        let ms = shown[format!("{field}_ms")]
            .as_i64()
            .unwrap_or_else(|| panic!("{field}_ms is a number: {shown}"));
        let text = shown[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is text: {shown}"));
        let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        assert_eq!(parsed.timestamp_millis(), ms, "{field}: {text}");
        assert!(
            text.ends_with('Z') && text.len() == "2025-12-01T05:51:58.123Z".len(),
            "UTC to the millisecond: {text}"
        );
    }

    let foreign = json(&url, &["-q", "mail", "show", "ffff0000ffff0000"]);
    assert_eq!(
        (
            &foreign["payload"],
            &foreign["attempts"],
            &foreign["enqueued_at"]
        ),
        (
            &json!("{not json"),
            &json!(0),
            &json!("2025-12-01T05:51:58.123Z")
        ),
        "a payload that is not JSON stays its text: {foreign}"
    );

    let table = jobqueue(&url, &["-q", "mail", "show", "ffff0000ffff0000"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq(["enqueued_at", "2025-12-01T05:51:58.123Z"])),
        "{text}"
    );
}

/// Splits a shell line as `sh` would for the simple lines README shows:
/// words apart on spaces, single-quoted words kept whole, a `#` after a
/// space starting a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            ' ' if !quoted => words.extend(word.take()),
            '#' if !quoted && word.is_none() => break,
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "an unclosed quote in {line:?}");
    words.extend(word);
    words
}

/// Every `jobqueue` line of README's shell blocks is a command this binary
/// takes: each is run with `--help` after its words, which clap answers
/// only once every word before it parsed (an unknown subcommand, flag or
/// bad value fails with exit 2 first).
#[test]
fn every_command_line_in_the_readme_parses() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut in_sh = false;
    let mut lines = Vec::new();
    for line in readme.lines() {
        let fence = line.trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            in_sh = !in_sh && info.trim() == "sh";
        } else if in_sh && let Some(rest) = line.trim_start().strip_prefix("jobqueue ") {
            lines.push(rest.to_owned());
        }
    }
    assert!(lines.len() >= 8, "README's jobqueue lines: {lines:?}");
    assert_eq!(
        shell_words(r#"-q e enqueue '{"to":"a b"}' --name x   # note"#),
        ["-q", "e", "enqueue", r#"{"to":"a b"}"#, "--name", "x"]
    );
    for line in lines {
        let mut words = shell_words(&line);
        words.push("--help".into());
        let out = Command::new(env!("CARGO_BIN_EXE_jobqueue"))
            .args(&words)
            .env("REDIS_URL", "redis://127.0.0.1:1/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README's `jobqueue {line}` does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
