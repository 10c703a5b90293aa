//! The `jobqueue` command against a private Redis (and a private cluster).

use std::process::{Command, Output};

use jobqueue_tests::{RedisCluster, RedisServer};
use serde_json::Value;

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
        (shown["job"].as_str(), shown["max_attempts"].as_str()),
        (Some("send"), Some("1"))
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
    assert_eq!(json(url, &["-q", "mail", "stats"])["enqueued_total"], 0);
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
