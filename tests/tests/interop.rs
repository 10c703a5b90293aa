//! Interop at the Redis level, both ways: jobs written by a reference client
//! (raw commands, reference fields only) are processed by ours, and jobs
//! enqueued by ours are claimed, completed and failed by raw commands that
//! follow the reference's steps (seed-reference sections 2.1 to 2.5).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobqueue::queue::{Ack, CancelOutcome, JobStatus, QueueOptions};
use jobqueue_tests::*;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

/// The reference's complete step, as its section 2.3 describes it (written
/// here from that description): token check, LREM, HSET, EXPIRE, LPUSH +
/// LTRIM. KEYS: meta prefix, processing, completed.
const REFERENCE_COMPLETE: &str = r#"
local key = KEYS[1] .. ARGV[1]
if redis.call('HGET', key, 'claim_token') ~= ARGV[2] then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('HSET', key, 'status', ARGV[3], 'completed_at_ms', ARGV[4], 'result', ARGV[5])
redis.call('EXPIRE', key, tonumber(ARGV[6]))
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
return 1
"#;

/// The reference's fail step (section 2.4), retry decided by the caller.
/// KEYS: meta prefix, processing, pending, failed.
const REFERENCE_FAIL: &str = r#"
local key = KEYS[1] .. ARGV[1]
if redis.call('HGET', key, 'claim_token') ~= ARGV[2] then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[1])
if ARGV[7] == '1' then
  redis.call('HSET', key, 'status', 'pending', 'last_error', ARGV[3], 'last_error_at_ms', ARGV[4],
    'claim_token', '', 'claimed_at_ms', '0')
  redis.call('LPUSH', KEYS[3], ARGV[1])
  return 1
end
redis.call('HSET', key, 'status', 'failed', 'last_error', ARGV[3], 'last_error_at_ms', ARGV[4],
  'claim_token', '')
redis.call('LPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', key, tonumber(ARGV[5]))
return 2
"#;

/// The reference's reclaim sweep (section 2.5). KEYS: pending, processing,
/// meta prefix. ARGV: now ms, visibility ms.
const REFERENCE_RECLAIM: &str = r#"
local now, vis = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local key = KEYS[3] .. id
  local claimed = tonumber(redis.call('HGET', key, 'claimed_at_ms') or '0') or 0
  local enq = tonumber(redis.call('HGET', key, 'enqueued_at_ms') or '0') or 0
  if (claimed > 0 and now - claimed > vis) or (claimed == 0 and enq > 0 and now - enq > 2 * vis) then
    redis.call('LREM', KEYS[2], 1, id)
    redis.call('LPUSH', KEYS[1], id)
    redis.call('HSET', key, 'status', 'pending', 'reclaimed_at_ms', ARGV[1], 'claim_token', '', 'claimed_at_ms', '0')
    out[#out + 1] = id
  end
end
return out
"#;

fn now_ms() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string()
}

/// The reference's claim: BLMOVE, then the stamp pipeline and HGETALL.
async fn reference_claim(
    c: &mut MultiplexedConnection,
    token: &str,
) -> Option<(String, Value, u32)> {
    let id: Option<String> = redis::cmd("BLMOVE")
        .arg("queue:jobs:pending")
        .arg("queue:jobs:processing")
        .arg("RIGHT")
        .arg("LEFT")
        .arg(0.1)
        .query_async(c)
        .await
        .unwrap();
    let id = id?;
    let key = format!("queue:jobs:job:{id}");
    let (_, _, fields): ((), i64, std::collections::HashMap<String, String>) = redis::pipe()
        .cmd("HSET")
        .arg(&key)
        .arg(&[
            ("status", "processing"),
            ("claimed_at_ms", now_ms().as_str()),
            ("claim_token", token),
        ])
        .cmd("HINCRBY")
        .arg(&key)
        .arg("attempts")
        .arg(1)
        .cmd("HGETALL")
        .arg(&key)
        .query_async(c)
        .await
        .unwrap();
    let payload = serde_json::from_str(&fields["payload"]).unwrap();
    Some((id, payload, fields["attempts"].parse().unwrap()))
}

async fn reference_complete(
    c: &mut MultiplexedConnection,
    id: &str,
    token: &str,
    result: &str,
) -> i64 {
    redis::Script::new(REFERENCE_COMPLETE)
        .key("queue:jobs:job:")
        .key("queue:jobs:processing")
        .key("queue:jobs:completed")
        .arg(id)
        .arg(token)
        .arg("completed")
        .arg(now_ms())
        .arg(result)
        .arg(300)
        .arg(50)
        .invoke_async(c)
        .await
        .unwrap()
}

async fn reference_fail(c: &mut MultiplexedConnection, id: &str, token: &str, retry: bool) -> i64 {
    redis::Script::new(REFERENCE_FAIL)
        .key("queue:jobs:job:")
        .key("queue:jobs:processing")
        .key("queue:jobs:pending")
        .key("queue:jobs:failed")
        .arg(id)
        .arg(token)
        .arg("reference worker failed")
        .arg(now_ms())
        .arg(300)
        .arg(50)
        .arg(if retry { "1" } else { "0" })
        .invoke_async(c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_written_by_a_reference_client_is_processed_by_ours() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    // Python spacing, insertion order: JSON must be parsed, never compared.
    reference_enqueue(
        &mut c,
        "jobs",
        "0123456789abcdef",
        r#"{"kind": "email", "recipient": "a@example.com", "n": 1}"#,
    )
    .await;
    reference_enqueue(
        &mut c,
        "jobs",
        "fedcba9876543210",
        r#"{"kind":"webhook","n":2}"#,
    )
    .await;

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), "0123456789abcdef");
    assert_eq!(job.attempt(), 1);
    assert_eq!(
        job.payload::<Value>().unwrap(),
        json!({"kind": "email", "recipient": "a@example.com", "n": 1})
    );
    assert_eq!(
        q.complete(&job, &json!({"sent": true})).await.unwrap(),
        Ack::Completed
    );
    let h = hash(&mut c, "queue:jobs:job:0123456789abcdef").await;
    assert_eq!(h["status"], "completed");
    assert_eq!(
        serde_json::from_str::<Value>(&h["result"]).unwrap(),
        json!({"sent": true})
    );

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        q.fail(&job, "try later").await.unwrap(),
        Ack::Retrying,
        "default max attempts 3"
    );
    let h = hash(&mut c, "queue:jobs:job:fedcba9876543210").await;
    assert_eq!(
        (h["status"].as_str(), h["last_error"].as_str()),
        ("pending", "try later")
    );
    assert_eq!(
        list(&mut c, "queue:jobs:pending").await,
        vec!["fedcba9876543210"]
    );
    assert_eq!(
        list(&mut c, "queue:jobs:completed").await,
        vec!["0123456789abcdef"]
    );
}

#[tokio::test]
async fn a_job_enqueued_by_ours_is_claimed_completed_and_failed_by_reference_steps() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    let a = q.enqueue(&json!({"kind": "email", "n": 1})).await.unwrap();
    let b = q.enqueue(&json!({"kind": "email", "n": 2})).await.unwrap();

    let (id, payload, attempts) = reference_claim(&mut c, "aaaaaaaaaaaaaaaa").await.unwrap();
    assert_eq!((id.as_str(), attempts), (a.as_str(), 1));
    assert_eq!(payload, json!({"kind": "email", "n": 1}));
    assert_eq!(
        reference_complete(&mut c, &a, "aaaaaaaaaaaaaaaa", r#"{"ok":true}"#).await,
        1
    );
    let record = q.get_job(&a).await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Completed));
    assert_eq!(record.result::<Value>().unwrap(), Some(json!({"ok": true})));

    let (id, _, _) = reference_claim(&mut c, "bbbbbbbbbbbbbbbb").await.unwrap();
    assert_eq!(id, b);
    assert_eq!(
        reference_fail(&mut c, &b, "bbbbbbbbbbbbbbbb", true).await,
        1
    );
    let (_, _, attempts) = reference_claim(&mut c, "cccccccccccccccc").await.unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(
        reference_fail(&mut c, &b, "cccccccccccccccc", false).await,
        2
    );
    let record = q.get_job(&b).await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Failed));
    assert_eq!(record.last_error(), Some("reference worker failed"));
    assert_eq!(q.list_failed(0..10).await.unwrap(), vec![b]);
    assert!(q.list_processing(0..10).await.unwrap().is_empty());
}

#[tokio::test]
async fn claims_of_reference_workers_and_ours_are_swept_by_the_other_side() {
    let server = RedisServer::start();
    let q = queue(
        &server,
        "jobs",
        QueueOptions::default().visibility(Duration::from_millis(200)),
    )
    .await;
    let mut c = server.conn().await;
    let reclaim = |c: &mut MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            let ids: Vec<String> = redis::Script::new(REFERENCE_RECLAIM)
                .key("queue:jobs:pending")
                .key("queue:jobs:processing")
                .key("queue:jobs:job:")
                .arg(now_ms())
                .arg(200)
                .invoke_async(&mut c)
                .await
                .unwrap();
            ids
        }
    };

    // A reference worker dies holding a job: our sweep takes it back.
    reference_enqueue(&mut c, "jobs", "1111111111111111", "{}").await;
    reference_claim(&mut c, "dddddddddddddddd").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        q.reclaim_stuck().await.unwrap().reclaimed,
        vec!["1111111111111111"]
    );

    // Our worker renews its lease: the reference sweep leaves it alone,
    // because extend moves claimed_at_ms forward.
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(q.extend(&job).await.unwrap(), Ack::Extended);
        assert!(reclaim(&mut c).await.is_empty());
    }
    // Once it stops renewing, the reference sweep reclaims it, and our
    // worker's late completion is fenced.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reclaim(&mut c).await, vec![job.id().to_owned()]);
    assert_eq!(q.complete(&job, &json!(1)).await.unwrap(), Ack::LeaseLost);
    // Our sweep cleans the lease the reference sweep could not know about.
    let report = q.reclaim_stuck().await.unwrap();
    assert!(report.reclaimed.is_empty(), "{report:?}");
    assert_eq!(lease_count(&mut c).await, 0);
    assert_eq!(
        list(&mut c, "queue:jobs:pending").await,
        vec![job.id().to_owned()]
    );
}

/// Reference workers know nothing of the cancelled state. A cancelled
/// waiting job leaves pending, so their BLMOVE never takes it; a job a
/// reference worker already runs only gets the cancel request, which that
/// worker never reads: it completes the job as usual.
#[tokio::test]
async fn reference_workers_never_take_a_cancelled_job_and_finish_one_they_hold() {
    let (_server, q, mut c) = setup("jobs", QueueOptions::default()).await;
    let cancelled = q.enqueue(&json!({"n": 1})).await.unwrap();
    let kept = q.enqueue(&json!({"n": 2})).await.unwrap();
    assert_eq!(
        q.cancel(&cancelled, "not wanted").await.unwrap(),
        CancelOutcome::Cancelled(JobStatus::Pending)
    );
    let (id, _, _) = reference_claim(&mut c, "aaaaaaaaaaaaaaaa").await.unwrap();
    assert_eq!(id, kept, "the cancelled job is not listed any more");
    assert!(
        reference_claim(&mut c, "bbbbbbbbbbbbbbbb").await.is_none(),
        "nothing else to take"
    );
    assert_eq!(
        q.get_job(&cancelled).await.unwrap().unwrap().status(),
        Some(JobStatus::Cancelled)
    );

    // Held by the reference worker: the cancel is only a request.
    assert_eq!(
        q.cancel(&kept, "too late").await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        reference_complete(&mut c, &kept, "aaaaaaaaaaaaaaaa", r#"{"ok":true}"#).await,
        1
    );
    let record = q.get_job(&kept).await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Completed));
    assert_eq!(
        record.cancel_reason(),
        Some("too late"),
        "the request stays on record"
    );
}
