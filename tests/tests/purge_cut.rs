//! A purge's sweep and the hashes stamped in its cut's own millisecond.
//!
//! The cut deletes a queue's lists at Redis time T; the sweep then deletes
//! the job hashes enqueued before T. A hash stamped T may belong to a job
//! enqueued just before the cut (its entry went with the cut: the hash must
//! go) or just after it (its entry is listed again: the hash must stay).
//! The cut used to wait inside its script for the clock to pass T; Redis
//! 7.2+ and Valkey stop the clock for a whole script, so that wait held the
//! server until `busy-reply-threshold` (5 s) and the purge timed out. These
//! tests call the sweep with a chosen T, on hashes written by hand, so each
//! side of the cut is set up exactly.

use std::collections::BTreeSet;

use jobqueue::queue::QueueOptions;
use jobqueue::queue::{Keys, MAX_PRIORITY, MIN_PRIORITY};
use jobqueue_tests::*;

const SCRIPT: &str = concat!(
    include_str!("../../jobqueue/src/lua/common.lua"),
    include_str!("../../jobqueue/src/lua/purge.lua")
);

/// The keys a purge leaves alone, in the order the sweep reads them.
fn kept(keys: &Keys) -> Vec<String> {
    let mut kept = vec![
        keys.pending(),
        keys.processing(),
        keys.completed(),
        keys.failed(),
        keys.cancelled(),
        keys.leases(),
        keys.scheduled(),
        keys.stats(),
        keys.paused(),
        keys.levels(),
        keys.rate_keys(),
        keys.wake(),
        keys.throttle(),
    ];
    kept.extend(
        (MIN_PRIORITY..=MAX_PRIORITY)
            .filter(|p| *p != 0)
            .map(|p| keys.priority_lane(p)),
    );
    kept.push(keys.limits());
    kept.push(keys.key_limits());
    kept
}

/// A job hash written by hand: id, enqueued_at_ms, status, extra fields,
/// the list (or `scheduled`) holding it after the cut, and whether the
/// sweep must keep its hash.
type HandWritten<'a> = (
    &'a str,
    i64,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<String>,
    bool,
);

async fn a_hash_stamped_in_the_cuts_millisecond_stays_only_where_a_list_still_holds_it(
    redis: TestRedis,
) {
    let q = redis.queue("cut", QueueOptions::new()).await;
    let keys = q.keys().clone();
    let mut raw = redis.conn().await;
    let t: i64 = 1_800_000_000_000;
    let jobs: Vec<HandWritten<'_>> = vec![
        ("before", t - 1, "pending", vec![], None, false),
        ("after", t + 1, "pending", vec![], None, true),
        ("t-gone", t, "pending", vec![], None, false),
        (
            "t-pending",
            t,
            "pending",
            vec![],
            Some(keys.pending()),
            true,
        ),
        (
            "t-prio-gone",
            t,
            "pending",
            vec![("priority", "2")],
            None,
            false,
        ),
        (
            "t-prio",
            t,
            "pending",
            vec![("priority", "2")],
            Some(keys.priority_lane(2)),
            true,
        ),
        (
            "t-keyed",
            t,
            "pending",
            vec![("rate_key", "k1")],
            Some(keys.keyed_lane("k1")),
            true,
        ),
        ("t-sched-gone", t, "scheduled", vec![], None, false),
        (
            "t-sched",
            t,
            "scheduled",
            vec![],
            Some(keys.scheduled()),
            true,
        ),
        ("t-running-gone", t, "processing", vec![], None, false),
        (
            "t-running",
            t,
            "processing",
            vec![],
            Some(keys.processing()),
            true,
        ),
        ("t-dead-gone", t, "failed", vec![], None, false),
        ("t-dead", t, "failed", vec![], Some(keys.failed()), true),
        (
            "t-cancelled",
            t,
            "cancelled",
            vec![],
            Some(keys.cancelled()),
            true,
        ),
        // Its hash expires on its own; a batch callback is in no list.
        ("t-done", t, "completed", vec![], None, true),
        ("t-callback", t, "waiting", vec![], None, true),
    ];
    for (id, at, status, extra, listed, _) in &jobs {
        let mut hset = redis::cmd("HSET");
        hset.arg(keys.job(id))
            .arg("id")
            .arg(id)
            .arg("payload")
            .arg("1")
            .arg("status")
            .arg(status)
            .arg("enqueued_at_ms")
            .arg(at);
        for (field, value) in extra {
            hset.arg(field).arg(value);
        }
        let _: () = hset.query_async(&mut raw).await.unwrap();
        if let Some(list) = listed {
            let write = if *list == keys.scheduled() {
                redis::cmd("ZADD").arg(list).arg(t + 60_000).arg(id).clone()
            } else {
                redis::cmd("LPUSH").arg(list).arg(id).clone()
            };
            let _: i64 = write.query_async(&mut raw).await.unwrap();
        }
    }
    // Entries of other jobs around them, as a busy queue has.
    for n in 0..50 {
        let _: i64 = redis::cmd("LPUSH")
            .arg(keys.pending())
            .arg(format!("newer-{n}"))
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let kept = kept(&keys);
    let judged: Vec<String> = jobs.iter().map(|j| keys.job(j.0)).collect();
    let deleted: u64 = redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(kept.len() + judged.len())
        .arg(&kept)
        .arg(&judged)
        .arg("sweep")
        .arg(t)
        .arg(keys.job_prefix())
        .arg(kept.len())
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut left = BTreeSet::new();
    for (id, ..) in &jobs {
        let exists: bool = redis::cmd("EXISTS")
            .arg(keys.job(id))
            .query_async(&mut raw)
            .await
            .unwrap();
        if exists {
            left.insert(*id);
        }
    }
    let expected: BTreeSet<&str> = jobs.iter().filter(|j| j.5).map(|j| j.0).collect();
    assert_eq!(left, expected);
    assert_eq!(deleted as usize, jobs.len() - expected.len());
    // The lists themselves are left alone.
    let pending: i64 = redis::cmd("LLEN")
        .arg(keys.pending())
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(pending, 51);
}

async fn a_sweep_with_a_bad_count_of_kept_keys_is_refused_with_nothing_deleted(redis: TestRedis) {
    let q = redis.queue("cut-bad", QueueOptions::new()).await;
    let keys = q.keys().clone();
    let id = q.enqueue(&1).await.unwrap();
    let mut raw = redis.conn().await;
    let kept = kept(&keys);
    for count in ["3", "x", &(kept.len() + 2).to_string()] {
        let refused: redis::RedisResult<u64> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(kept.len() + 1)
            .arg(&kept)
            .arg(keys.job(&id))
            .arg("sweep")
            .arg(i64::MAX / 2)
            .arg(keys.job_prefix())
            .arg(count)
            .query_async(&mut raw)
            .await;
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("count of keys to leave alone"),
            "{message}"
        );
    }
    let exists: bool = redis::cmd("EXISTS")
        .arg(keys.job(&id))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(exists, "a refused sweep deleted the job's hash");
}

/// A real purge ends at once (the cut no longer waits for the clock) and
/// leaves no key of the queue.
async fn a_purge_ends_without_waiting_for_the_clock(redis: TestRedis) {
    let q = redis.queue("cut-real", QueueOptions::new()).await;
    q.enqueue_many(&(0..500).collect::<Vec<u32>>())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    q.purge().await.unwrap();
    let took = started.elapsed();
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.pending_depth, 0);
    assert!(
        !q.exists().await.unwrap(),
        "a key of the purged queue is left"
    );
    println!("purge of 500 jobs: {took:?}");
}

on_each_topology! {
    #[tokio::test] a_hash_stamped_in_the_cuts_millisecond_stays_only_where_a_list_still_holds_it,
    #[tokio::test] a_sweep_with_a_bad_count_of_kept_keys_is_refused_with_nothing_deleted,
    #[tokio::test] a_purge_ends_without_waiting_for_the_clock,
}
