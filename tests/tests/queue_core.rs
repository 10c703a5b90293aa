//! Every queue operation's happy path and edges, against a private Redis:
//! each test runs on a single server and on a three-primary cluster, except
//! the one that counts commands in `INFO commandstats` of a single server
//! and the check that the server started is the one `REDIS_SERVER` names.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jobqueue::Error;
use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{Ack, JobStatus, NewJob, Queue, QueueOptions};
use jobqueue_tests::*;
use serde_json::{Value, json};

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn enqueue_writes_the_reference_hash_and_pending_entry(redis: TestRedis) {
    let (server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let id = q.enqueue(&json!({"kind": "email", "n": 1})).await.unwrap();
    assert!(is_hex16(&id), "{id}");
    let mut c = server.conn().await;
    let h = hash(&mut c, &q.keys().job(&id)).await;
    assert_eq!(h["id"], id);
    assert_eq!(
        serde_json::from_str::<Value>(&h["payload"]).unwrap(),
        json!({"kind": "email", "n": 1})
    );
    assert_eq!(h["status"], "pending");
    assert_eq!(h["attempts"], "0");
    assert_eq!(h["claim_token"], "");
    assert!(h["enqueued_at_ms"].parse::<u64>().unwrap() > 1_700_000_000_000);
    assert_eq!(list(&mut c, &q.keys().pending()).await, vec![id]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(q.keys().job(&h["id"]))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "pending jobs never expire");
}

#[tokio::test]
async fn enqueue_many_writes_the_batch_in_one_round_trip_in_order() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    exec(&mut c, &["CONFIG", "RESETSTAT"]).await;
    let payloads: Vec<Value> = (0..200).map(|n| json!({"n": n})).collect();
    let ids = q.enqueue_many(&payloads).await.unwrap();
    let info = commandstats(&mut c).await;
    assert_eq!(command_calls(&info, "evalsha"), 1, "{info}");
    assert_eq!(command_calls(&info, "hset"), 200);
    assert_eq!(ids.len(), 200);
    assert_eq!(
        q.list_pending(0..200).await.unwrap(),
        ids,
        "oldest first, in batch order"
    );
    assert_eq!(q.stats().await.unwrap().enqueued_total, 200);
    assert!(q.enqueue_many::<Value>(&[]).await.unwrap().is_empty());
}

async fn claim_takes_the_oldest_job_and_stamps_it_with_a_lease(redis: TestRedis) {
    let (server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let first = q.enqueue(&json!({"n": 1})).await.unwrap();
    let _second = q.enqueue(&json!({"n": 2})).await.unwrap();
    let job = q
        .claim(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(job.id(), first);
    assert_eq!(job.attempt(), 1);
    assert!(is_hex16(job.token()));
    assert_eq!(job.payload::<Value>().unwrap(), json!({"n": 1}));
    assert_eq!(job.lease_deadline_ms(), job.claimed_at_ms() + 5000);

    let mut c = server.conn().await;
    let h = hash(&mut c, &q.keys().job(&first)).await;
    assert_eq!(h["status"], "processing");
    assert_eq!(h["attempts"], "1");
    assert_eq!(h["claim_token"], job.token());
    assert_eq!(h["claimed_at_ms"], job.claimed_at_ms().to_string());
    assert_eq!(
        list(&mut c, &q.keys().processing()).await,
        vec![first.clone()]
    );
    let score: f64 = redis::cmd("ZSCORE")
        .arg(q.keys().leases())
        .arg(format!("{first}:{}", job.token()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(score as u64, job.lease_deadline_ms());
}

async fn claim_many_takes_up_to_n_jobs_in_one_call(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let ids = q
        .enqueue_many(&[json!(1), json!(2), json!(3)])
        .await
        .unwrap();
    let jobs = q.claim_many(5, Duration::ZERO).await.unwrap();
    let claimed: Vec<&str> = jobs.iter().map(|j| j.id()).collect();
    assert_eq!(claimed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let tokens: std::collections::HashSet<&str> = jobs.iter().map(|j| j.token()).collect();
    assert_eq!(tokens.len(), 3, "one token per claim");
}

async fn claim_returns_none_once_the_timeout_passes(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let started = Instant::now();
    assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
    assert!(q.claim(Duration::from_millis(300)).await.unwrap().is_none());
    assert!(started.elapsed() >= Duration::from_millis(300));
}

async fn a_claim_blocking_longer_than_the_default_response_timeout_is_not_cut_off(
    redis: TestRedis,
) {
    // redis-rs 1.x times out responses after 500 ms by default; a blocking
    // claim on such a connection would fail instead of returning None.
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let started = Instant::now();
    assert!(
        q.claim(Duration::from_millis(1500))
            .await
            .unwrap()
            .is_none()
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

async fn a_blocked_claim_wakes_when_a_job_arrives_from_any_client(redis: TestRedis) {
    let (server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let waiting = tokio::spawn({
        let q = q.clone();
        async move {
            let started = Instant::now();
            let job = q.claim(Duration::from_secs(10)).await.unwrap();
            (job, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = server.conn().await;
    reference_enqueue_at(&mut c, q.keys(), "00000000000000aa", r#"{"kind":"email"}"#).await;
    let (job, waited) = waiting.await.unwrap();
    assert_eq!(job.expect("woken with the job").id(), "00000000000000aa");
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");

    // Many waiters, one job each: every waiter gets a distinct job.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.claim(Duration::from_secs(10)).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids = q
        .enqueue_many(&[json!(1), json!(2), json!(3), json!(4)])
        .await
        .unwrap();
    let mut got = Vec::new();
    for w in waiters {
        got.push(
            w.await
                .unwrap()
                .expect("each waiter gets a job")
                .id()
                .to_owned(),
        );
    }
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got, want);
}

async fn complete_stores_the_result_and_keeps_a_capped_history(redis: TestRedis) {
    let (_server, q, mut c) =
        setup_on(&redis, "jobs", QueueOptions::default().completed_history(3)).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = q.enqueue(&json!({"n": n})).await.unwrap();
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(
            q.complete(&job, &json!({"ok": n})).await.unwrap(),
            Ack::Completed
        );
        ids.push(id);
    }
    let last = &ids[4];
    let h = hash(&mut c, &q.keys().job(last)).await;
    assert_eq!(h["status"], "completed");
    assert_eq!(
        serde_json::from_str::<Value>(&h["result"]).unwrap(),
        json!({"ok": 4})
    );
    assert!(
        h["completed_at_ms"].parse::<u64>().unwrap() >= h["claimed_at_ms"].parse::<u64>().unwrap()
    );
    assert_eq!(h["claim_token"], "", "a settled job holds no token");
    let ttl: i64 = redis::cmd("TTL")
        .arg(q.keys().job(last))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((290..=300).contains(&ttl), "ttl {ttl}");

    let newest_first: Vec<String> = ids.iter().rev().take(3).cloned().collect();
    assert_eq!(list(&mut c, &q.keys().completed()).await, newest_first);
    assert_eq!(q.list_completed(0..10).await.unwrap(), newest_first);
    for trimmed in &ids[..2] {
        assert!(
            q.get_job(trimmed).await.unwrap().is_none(),
            "trimmed hashes are deleted"
        );
    }
    assert!(list(&mut c, &q.keys().processing()).await.is_empty());
    let leases: u64 = redis::cmd("ZCARD")
        .arg(q.keys().leases())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(leases, 0);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.completed_total, stats.completed_depth), (5, 3));
}

async fn fail_retries_while_attempts_remain_then_dead_letters_without_ttl(redis: TestRedis) {
    let (_server, q, mut c) =
        setup_on(&redis, "jobs", QueueOptions::default().max_attempts(2)).await;
    let id = q.enqueue(&json!({"n": 1})).await.unwrap();

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.fail(&job, "smtp timeout").await.unwrap(), Ack::Retrying);
    let h = hash(&mut c, &q.keys().job(&id)).await;
    assert_eq!(h["status"], "pending");
    assert_eq!(h["last_error"], "smtp timeout");
    assert_eq!(h["claim_token"], "");
    assert_eq!(h["claimed_at_ms"], "0");
    assert_eq!(list(&mut c, &q.keys().pending()).await, vec![id.clone()]);

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.attempt(), 2);
    assert_eq!(
        q.fail(&job, "smtp timeout again").await.unwrap(),
        Ack::Failed
    );
    let record = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Failed));
    assert_eq!(record.last_error(), Some("smtp timeout again"));
    assert_eq!(q.list_failed(0..10).await.unwrap(), vec![id.clone()]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(q.keys().job(&id))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "dead letters stay inspectable");
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.retried_total, stats.failed_total, stats.pending_depth),
        (1, 1, 0)
    );
}

async fn fail_permanently_skips_the_remaining_attempts(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        q.fail_permanently(&job, "bad address").await.unwrap(),
        Ack::Failed
    );
    assert_eq!(q.list_failed(0..10).await.unwrap(), vec![id]);
    assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
}

async fn release_puts_the_job_first_in_line_without_charging_the_attempt(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let ids = q.enqueue_many(&[json!(1), json!(2)]).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), ids[0]);
    assert_eq!(q.release(&job).await.unwrap(), Ack::Released);
    assert_eq!(
        q.get_job(&ids[0])
            .await
            .unwrap()
            .unwrap()
            .attempts()
            .unwrap(),
        0
    );
    let again = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(again.id(), ids[0], "released job runs next");
    assert_eq!(again.attempt(), 1);
    assert_eq!(
        q.complete(&job, &json!(null)).await.unwrap(),
        Ack::Duplicate
    );
}

async fn extend_keeps_a_job_running_past_its_visibility_from_being_reclaimed(redis: TestRedis) {
    let (_server, q, _) = setup_on(
        &redis,
        "jobs",
        QueueOptions::default().visibility(Duration::from_millis(300)),
    )
    .await;
    q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(q.extend(&job).await.unwrap(), Ack::Extended);
        let report = q.reclaim_stuck().await.unwrap();
        assert!(
            report.reclaimed.is_empty() && report.failed.is_empty(),
            "{report:?}"
        );
    }
    // 960 ms: more than three visibility timeouts.
    assert_eq!(
        q.complete(&job, &json!("done")).await.unwrap(),
        Ack::Completed
    );
    assert_eq!(q.stats().await.unwrap().reclaimed_total, 0);
}

async fn reclaim_stuck_returns_expired_claims_and_fences_the_old_worker(redis: TestRedis) {
    let (server, q, _) = setup_on(
        &redis,
        "jobs",
        QueueOptions::default().visibility(Duration::from_millis(200)),
    )
    .await;
    let id = q.enqueue(&json!({})).await.unwrap();
    let stale = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert!(
        q.reclaim_stuck().await.unwrap().reclaimed.is_empty(),
        "lease still fresh"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.reclaimed, vec![id.clone()]);

    let mut c = server.conn().await;
    let h = hash(&mut c, &q.keys().job(&id)).await;
    assert_eq!(h["status"], "pending");
    assert_eq!(h["claim_token"], "");
    assert_eq!(h["claimed_at_ms"], "0");
    assert!(h.contains_key("reclaimed_at_ms"));
    assert_eq!(q.stats().await.unwrap().reclaimed_total, 1);

    assert_eq!(
        q.complete(&stale, &json!("late")).await.unwrap(),
        Ack::LeaseLost
    );
    assert_eq!(q.extend(&stale).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.fail(&stale, "late").await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.release(&stale).await.unwrap(), Ack::LeaseLost);
    assert_eq!(list(&mut c, &q.keys().pending()).await, vec![id.clone()]);
    assert!(list(&mut c, &q.keys().completed()).await.is_empty());

    let fresh = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(fresh.attempt(), 2);
    assert_eq!(
        q.complete(&fresh, &json!("ok")).await.unwrap(),
        Ack::Completed
    );
}

async fn lists_page_through_each_state_and_get_jobs_reads_many(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let ids = q
        .enqueue_many(&(0..6).map(|n| json!({"n": n})).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(q.list_pending(0..2).await.unwrap(), ids[..2]);
    assert_eq!(q.list_pending(2..6).await.unwrap(), ids[2..]);
    assert!(q.list_pending(6..10).await.unwrap().is_empty());
    let a = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let b = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        q.list_processing(0..10).await.unwrap(),
        vec![b.id(), a.id()],
        "newest claim first"
    );
    assert_eq!(q.list_processing(1..2).await.unwrap(), vec![a.id()]);

    let records = q
        .get_jobs(&[ids[0].as_str(), "ffffffffffffffff", ids[5].as_str()])
        .await
        .unwrap();
    assert_eq!(
        records[0].as_ref().unwrap().status(),
        Some(JobStatus::Processing)
    );
    assert!(records[1].is_none());
    let last = records[2].as_ref().unwrap();
    assert_eq!(last.status(), Some(JobStatus::Pending));
    assert_eq!(last.payload::<Value>().unwrap(), json!({"n": 5}));
    assert!(last.timestamp_ms("enqueued_at_ms").unwrap().is_some());
    assert!(q.get_job("ffffffffffffffff").await.unwrap().is_none());
}

async fn stats_report_depths_and_totals(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default().max_attempts(1)).await;
    q.enqueue_many(&[json!(1), json!(2), json!(3), json!(4)])
        .await
        .unwrap();
    let done = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.complete(&done, &json!(1)).await.unwrap();
    let dead = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&dead, "boom").await.unwrap();
    let _running = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let s = q.stats().await.unwrap();
    assert_eq!(
        (
            s.enqueued_total,
            s.completed_total,
            s.failed_total,
            s.reclaimed_total,
            s.retried_total
        ),
        (4, 1, 1, 0, 0)
    );
    assert_eq!(
        (
            s.pending_depth,
            s.processing_depth,
            s.completed_depth,
            s.failed_depth
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(s.visibility, Duration::from_millis(5000));
}

async fn purge_deletes_every_key_of_its_queue_and_no_other(redis: TestRedis) {
    let a = redis.queue("a", QueueOptions::new()).await;
    let b = redis.queue("b", QueueOptions::new()).await;
    for q in [&a, &b] {
        q.enqueue_many(&[json!(1), json!(2), json!(3)])
            .await
            .unwrap();
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = q.complete(&job, &json!(1)).await.unwrap();
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = q.fail_permanently(&job, "x").await.unwrap();
        let _ = q.claim(Duration::ZERO).await.unwrap().unwrap();
    }
    let mut c = redis.conn().await;
    let before: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    let deleted = a.purge().await.unwrap();
    let after: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(before - after, deleted);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(a.keys().pattern())
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let s = b.stats().await.unwrap();
    assert_eq!(
        (s.enqueued_total, s.processing_depth, s.failed_depth),
        (3, 1, 1)
    );
    assert_eq!(a.stats().await.unwrap().enqueued_total, 0);
}

async fn oversized_payloads_bad_names_and_bad_json_are_refused_before_writing(redis: TestRedis) {
    let (server, q, _) = setup_on(
        &redis,
        "jobs",
        QueueOptions::default().max_payload_bytes(100),
    )
    .await;
    let err = q
        .enqueue(&json!({"blob": "x".repeat(200)}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 100, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("exceeds the limit of 100 bytes"));
    let err = q.submit(NewJob::from_json("{not json")).await.unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err}");
    let err = q
        .submit(NewJob::new(&json!({})).unwrap().name("send mail"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = q
        .submit(
            NewJob::new(&json!({}))
                .unwrap()
                .options(EnqueueOptions::new().max_attempts(0)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                option: "max_attempts",
                ..
            }
        ),
        "{err}"
    );
    let mut c = server.conn().await;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(keys, 0, "nothing was written");

    let conn = q.connection();
    for bad in ["", "a b", "x{y}", "q*", "l\n"] {
        let err = Queue::new_with(conn, bad, QueueOptions::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
    }
    let err = Queue::new_with(conn, "jobs", QueueOptions::default().max_attempts(0)).unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }));
    let err = Queue::new_with(
        conn,
        "jobs",
        QueueOptions::default().visibility(Duration::from_millis(50)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("100 ms"), "{err}");
}

async fn submit_stores_the_job_name_and_its_own_limits(redis: TestRedis) {
    let (_server, q, _) = setup_on(&redis, "jobs", QueueOptions::default()).await;
    let id = q
        .submit(
            NewJob::new(&json!({"to": "a"}))
                .unwrap()
                .name("send_welcome")
                .options(
                    EnqueueOptions::new()
                        .max_attempts(7)
                        .visibility(Duration::from_secs(120)),
                ),
        )
        .await
        .unwrap();
    let record = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(record.name(), Some("send_welcome"));
    assert_eq!(record.max_attempts().unwrap(), Some(7));
    assert_eq!(record.field("visibility_ms"), Some("120000"));
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.name(), Some("send_welcome"));
    assert_eq!(
        job.lease_deadline_ms() - job.claimed_at_ms(),
        120_000,
        "the job's own visibility"
    );
}

async fn events_use_the_reference_channel_and_shape(redis: TestRedis) {
    let (server, q, _) = setup_on(&redis, "jobs", QueueOptions::default().max_attempts(2)).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(q.keys().events()).await.unwrap();
    let a = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.complete(&job, &json!(1)).await.unwrap();
    let b = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&job, "x").await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&job, "x").await.unwrap();
    let mut messages = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&msg.get_payload::<String>().unwrap()).unwrap());
    }
    assert_eq!(
        got,
        vec![
            json!({"id": a, "status": "completed"}),
            json!({"id": b, "status": "retry"}),
            json!({"id": b, "status": "failed"}),
        ]
    );
}

/// scripts/test runs this suite on Redis, then on Valkey with `REDIS_SERVER`
/// naming `valkey-server`: the server a test starts must be the binary
/// asked for, by the name and version its `--version` prints and its
/// `INFO server` reports, so a Valkey run that quietly started Redis from
/// PATH fails here instead of passing for the wrong server.
#[tokio::test]
async fn the_private_server_is_the_one_asked_for() {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let out = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{binary} --version: {e}"));
    // "Redis server v=7.0.15 sha=…" or "Valkey server v=8.1.8 sha=…".
    let banner = String::from_utf8(out.stdout).unwrap();
    let mut words = banner.split_whitespace();
    let name = words.next().unwrap_or_default().to_lowercase();
    let version = words
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or_else(|| panic!("no v=VERSION in {banner:?}"));

    let server = RedisServer::start();
    let mut c = server.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .unwrap();
    let field = |f: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(f)?.strip_prefix(':'))
            .map(str::trim)
    };
    // Valkey names itself in server_name; Redis has no such field.
    assert_eq!(field("server_name").unwrap_or("redis"), name, "{info}");
    assert_eq!(field(&format!("{name}_version")), Some(version), "{info}");
}

on_each_topology! {
    #[tokio::test] enqueue_writes_the_reference_hash_and_pending_entry,
    #[tokio::test] claim_takes_the_oldest_job_and_stamps_it_with_a_lease,
    #[tokio::test] claim_many_takes_up_to_n_jobs_in_one_call,
    #[tokio::test] claim_returns_none_once_the_timeout_passes,
    #[tokio::test] a_claim_blocking_longer_than_the_default_response_timeout_is_not_cut_off,
    #[tokio::test] a_blocked_claim_wakes_when_a_job_arrives_from_any_client,
    #[tokio::test] complete_stores_the_result_and_keeps_a_capped_history,
    #[tokio::test] fail_retries_while_attempts_remain_then_dead_letters_without_ttl,
    #[tokio::test] fail_permanently_skips_the_remaining_attempts,
    #[tokio::test] release_puts_the_job_first_in_line_without_charging_the_attempt,
    #[tokio::test] extend_keeps_a_job_running_past_its_visibility_from_being_reclaimed,
    #[tokio::test] reclaim_stuck_returns_expired_claims_and_fences_the_old_worker,
    #[tokio::test] lists_page_through_each_state_and_get_jobs_reads_many,
    #[tokio::test] stats_report_depths_and_totals,
    #[tokio::test] purge_deletes_every_key_of_its_queue_and_no_other,
    #[tokio::test] oversized_payloads_bad_names_and_bad_json_are_refused_before_writing,
    #[tokio::test] submit_stores_the_job_name_and_its_own_limits,
    #[tokio::test] events_use_the_reference_channel_and_shape,
}
