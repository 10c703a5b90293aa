//! Connections: blocking claims on their own connections, and recovery
//! after a Redis restart without any action from the user.

use std::time::{Duration, Instant};

use jobqueue::queue::{Ack, QueueOptions};
use jobqueue_tests::*;
use serde_json::json;

#[tokio::test]
async fn operations_succeed_again_after_redis_restarts() {
    let mut server = RedisServer::start();
    let q = queue(&server, "jobs", QueueOptions::default()).await;
    let first = q.enqueue(&json!({"n": 1})).await.unwrap();
    server.restart();
    // The connection dropped; the next operations reconnect on their own.
    let second = q.enqueue(&json!({"n": 2})).await.unwrap();
    let a = q
        .claim(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("data survived the restart");
    assert_eq!(a.id(), first);
    assert_eq!(q.complete(&a, &json!("ok")).await.unwrap(), Ack::Completed);
    let b = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(b.id(), second);
    server.restart();
    // Scripts are gone from the restarted server's cache: NOSCRIPT reloads them.
    assert_eq!(q.complete(&b, &json!("ok")).await.unwrap(), Ack::Completed);
    assert_eq!(q.stats().await.unwrap().completed_total, 2);
}

#[tokio::test]
async fn a_blocked_claim_survives_a_restart_and_gets_the_next_job() {
    let mut server = RedisServer::start();
    let q = queue(&server, "jobs", QueueOptions::default()).await;
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.claim(Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = q.enqueue(&json!({"after": "restart"})).await.unwrap();
    let started = Instant::now();
    let job = waiting
        .await
        .unwrap()
        .expect("no error reaches the caller")
        .expect("a job");
    assert_eq!(job.id(), id);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn blocking_claims_do_not_stall_other_commands() {
    // Eight idle claimers block for 3 s each. On a shared connection every
    // other command would queue behind them; here the reads and writes all
    // finish while every claimer is still blocked.
    let server = RedisServer::start();
    let q = queue(&server, "jobs", QueueOptions::default()).await;
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.claim(Duration::from_secs(3)).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = queue(&server, "other", QueueOptions::new()).await;
    for n in 0..20 {
        q.stats().await.unwrap();
        q.list_pending(0..10).await.unwrap();
        other.enqueue(&json!({"n": n})).await.unwrap();
    }
    assert!(
        claimers.iter().all(|c| !c.is_finished()),
        "a command waited for a blocked claim"
    );
    let id = q.enqueue(&json!({})).await.unwrap();
    let mut got = Vec::new();
    for c in claimers {
        got.extend(c.await.unwrap().map(|j| j.id().to_owned()));
    }
    assert_eq!(got, vec![id], "exactly one claimer got the one job");
}

#[tokio::test]
async fn an_unreachable_redis_gives_a_clear_error() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let err = jobqueue::connection::Connection::connect(url.as_str())
        .await
        .unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
}

#[tokio::test]
async fn a_pause_longer_than_half_a_second_only_delays_commands() {
    // redis-rs's default 500 ms response timeout would fail these commands;
    // ours waits out a pause shorter than its own (5 s) response timeout.
    let server = RedisServer::start();
    let q = queue(&server, "jobs", QueueOptions::default()).await;
    q.enqueue(&json!({"n": 0})).await.unwrap();
    server.pause(Duration::from_millis(1500));
    let started = Instant::now();
    let id = q.enqueue(&json!({"n": 1})).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the pause held the command"
    );
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.complete(&job, &json!(1)).await.unwrap(), Ack::Completed);
    assert_eq!(q.list_pending(0..5).await.unwrap(), vec![id]);
}

#[test]
#[should_panic(expected = "install redis-server")]
fn a_missing_redis_server_fails_with_what_to_install() {
    RedisServer::builder()
        .binary("/nonexistent/redis-server")
        .start();
}

/// A claim whose reply is lost is retried with the same request: the retry
/// gets the jobs the first run took, instead of claiming others and leaving
/// the first ones leased to nobody, an attempt charged.
#[tokio::test]
async fn a_repeated_claim_request_returns_the_same_jobs() {
    let server = RedisServer::start();
    let q = queue(&server, "jobs", QueueOptions::default()).await;
    let ids = q
        .enqueue_many(&[json!(1), json!(2), json!(3)])
        .await
        .unwrap();
    let tokens = vec!["aaaaaaaaaaaaaaa1".to_owned(), "aaaaaaaaaaaaaaa2".to_owned()];
    let first = q
        .__claim_request("0123456789abcdef", &tokens)
        .await
        .unwrap();
    let again = q
        .__claim_request("0123456789abcdef", &tokens)
        .await
        .unwrap();
    let summary = |jobs: &[jobqueue::queue::ClaimedJob]| {
        jobs.iter()
            .map(|j| (j.id().to_owned(), j.token().to_owned(), j.attempt()))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&first), summary(&again));
    assert_eq!(summary(&first).len(), 2);
    assert_eq!(
        q.list_pending(0..10).await.unwrap(),
        vec![ids[2].clone()],
        "the retry took no more"
    );
    for job in &again {
        assert_eq!(q.complete(job, &json!("ok")).await.unwrap(), Ack::Completed);
    }
    // Once answered, the request key goes away with the next claim.
    let _ = q.claim(Duration::ZERO).await.unwrap();
    let mut c = server.conn().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("queue:jobs:request:0123456789abcdef")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// Connects to `server` with the logs captured; returns the policy the
/// connection read and what it logged.
fn connect_and_capture(server: &RedisServer) -> (Option<String>, String) {
    with_captured_logs(async {
        let conn = jobqueue::connection::Connection::connect(server.url().as_str())
            .await
            .unwrap();
        conn.maxmemory_policy().map(str::to_owned)
    })
}

#[test]
fn a_server_that_may_evict_job_keys_is_named_in_a_warning_at_connect() {
    let evicting = RedisServer::builder()
        .args(["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"])
        .start();
    let (policy, logs) = connect_and_capture(&evicting);
    assert_eq!(policy.as_deref(), Some("allkeys-lru"));
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("maxmemory-policy is not noeviction"),
        "{logs}"
    );
    assert!(logs.contains("allkeys-lru"), "{logs}");

    let safe = RedisServer::builder()
        .args(["--maxmemory-policy", "noeviction"])
        .start();
    let (policy, logs) = connect_and_capture(&safe);
    assert_eq!(policy.as_deref(), Some("noeviction"));
    assert!(
        !logs.contains("maxmemory-policy is not noeviction"),
        "{logs}"
    );
}
