//! Correctness when Redis holds what no well-behaved client would write, or
//! when calls are repeated: numbers Lua's `tonumber` accepts but no job may
//! hold (`nan`, `inf`, `0x10`, `1e3`), keys of the wrong type where a job
//! hash belongs, a claim retried after a pause, settles repeated after the
//! job's hash is gone, dead letters a reference client trimmed off, and a
//! lease renewed after its claim ended. Every job ends in a named state with
//! a reason; no script stops half way; nothing is handed out twice.
//!
//! Each test runs on a single server and on a three-primary cluster.

use std::time::Duration;

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{Ack, ClaimedJob, JobStatus, NewJob, Queue, QueueOptions};
use jobqueue_tests::*;
use serde_json::json;

/// The ids and tokens of claimed jobs, to compare two claims.
fn summary(jobs: &[ClaimedJob]) -> Vec<(String, String, u32)> {
    jobs.iter()
        .map(|j| (j.id().to_owned(), j.token().to_owned(), j.attempt()))
        .collect()
}

/// `EXISTS key` as a bool.
async fn exists(c: &mut RawConn, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(c)
        .await
        .expect("EXISTS")
        == 1
}

/// A job written as a reference client writes it, in `q`'s layout.
async fn reference_job(c: &mut RawConn, q: &Queue, id: &str) {
    reference_enqueue_at(c, q.keys(), id, "{}").await;
}

/// A claim repeated after its reply was lost gets the jobs its first run
/// took even when the queue was paused in between: a paused queue hands out
/// nothing new, but what was already taken belongs to this request. Before,
/// the repeat answered "paused" and the jobs stayed leased to nobody, an
/// attempt charged (a job on its last attempt then failed without running).
async fn a_claim_retried_after_a_pause_gets_back_what_its_first_run_took(redis: TestRedis) {
    let (_, q, _) = setup_on(&redis, "paused_retry", QueueOptions::default()).await;
    let last_chance = q
        .submit(
            NewJob::new(&json!("last"))
                .unwrap()
                .options(EnqueueOptions::new().max_attempts(1)),
        )
        .await
        .unwrap();
    let other = q.enqueue(&json!("other")).await.unwrap();
    let tokens = vec!["bbbbbbbbbbbbbbb1".to_owned(), "bbbbbbbbbbbbbbb2".to_owned()];
    let first = q
        .__claim_request("00000000000000a2", &tokens)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    q.pause().await.unwrap();
    let again = q
        .__claim_request("00000000000000a2", &tokens)
        .await
        .unwrap();
    assert_eq!(
        summary(&again),
        summary(&first),
        "the repeat gets the same jobs while paused"
    );
    // A new request on the paused queue still gets nothing.
    assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
    for job in &again {
        assert_eq!(
            q.complete(job, &json!("ran")).await.unwrap(),
            Ack::Completed
        );
    }
    for id in [last_chance, other] {
        let record = q.get_job(&id).await.unwrap().unwrap();
        assert_eq!(record.status(), Some(JobStatus::Completed), "{id}");
    }
}

/// Numbers are decimal digits, in range: anything else Lua's `tonumber`
/// would take (`nan`, `inf`, hex, exponents, signs, fractions) makes the
/// job malformed, failed at claim with the field named in the reason, and
/// the rest of the batch is claimed as usual. Before, `visibility_ms = nan`
/// made the claim fail at `ZADD` after the job was marked claimed,
/// `max_attempts = nan` let a job be claimed (and requeued) for ever, and
/// `visibility_ms = inf` gave a lease that never expires.
async fn numbers_that_are_not_decimal_integers_fail_the_job_at_claim(redis: TestRedis) {
    let (_, q, mut c) = setup_on(&redis, "numbers", QueueOptions::default()).await;
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "visibility_ms",
            &[
                "nan", "inf", "-inf", "0x10", "1e3", "5000.5", "-5000", " 5000", "50", "",
            ],
            "visibility_ms is",
        ),
        (
            "max_attempts",
            &[
                "nan",
                "inf",
                "0x10",
                "1e1",
                "2.5",
                "-3",
                "0",
                "99999999999999999999",
            ],
            "max_attempts is",
        ),
        (
            "attempts",
            &["nan", "inf", "0x1", "1e0", "-1", "0.5"],
            "attempts is",
        ),
    ];
    let mut bad = Vec::new();
    let mut good = Vec::new();
    let mut n = 0;
    for (field, values, reason) in cases {
        for &value in values {
            n += 1;
            let id = format!("00000000000b{n:04x}");
            reference_job(&mut c, &q, &id).await;
            hset(&mut c, &q.keys().job(&id), &[(field, value)]).await;
            bad.push((id, field, value, reason));
            // A good job behind every bad one: the batch goes on past each.
            good.push(q.enqueue(&json!({ "after": n })).await.unwrap());
        }
    }
    let mut claimed = Vec::new();
    while claimed.len() < good.len() {
        let jobs = q.claim_many(7, Duration::ZERO).await.unwrap();
        assert!(!jobs.is_empty(), "claimed {claimed:?} of {good:?}");
        claimed.extend(jobs);
    }
    let mut ids: Vec<String> = claimed.iter().map(|j| j.id().to_owned()).collect();
    ids.sort();
    let mut want = good.clone();
    want.sort();
    assert_eq!(ids, want, "every good job, and only those");
    for job in &claimed {
        assert!(job.lease_deadline_ms() > job.claimed_at_ms());
        assert!(job.lease_deadline_ms() - job.claimed_at_ms() == 5_000);
    }
    for (id, field, value, reason) in &bad {
        let record = q.get_job(id).await.unwrap().unwrap();
        assert_eq!(
            record.status(),
            Some(JobStatus::Failed),
            "{field} = {value:?} ({id})"
        );
        let error = record.last_error().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{field} = {value:?}: the reason names the field: {error:?}"
        );
    }
    assert_eq!(
        q.stats().await.unwrap().failed_total,
        bad.len() as u64,
        "each bad job failed once"
    );
    let leases: u64 = redis::cmd("ZCARD")
        .arg(q.keys().leases())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(leases, good.len() as u64, "a lease for each good job only");
}

/// The sweep judges processing entries whose numbers are malformed instead
/// of passing over them for ever: a stamp of `inf` counts as no stamp (taken
/// back a visibility timeout after the sweep first sees it), an
/// `unstamped_seen` mark of `nan` is made again, and a job whose own
/// `visibility_ms` is `nan` is judged by the queue's and then failed with
/// the reason. Before, `now - claimed_at > nan` was false for ever.
async fn a_sweep_takes_back_processing_entries_with_malformed_numbers(redis: TestRedis) {
    let (_, q, mut c) = setup_on(
        &redis,
        "sweep_numbers",
        QueueOptions::default().visibility(Duration::from_millis(100)),
    )
    .await;
    let keys = q.keys().clone();
    let long_ago = "1000000000000";
    let cases = [
        ("00000000000c0001", vec![("claimed_at_ms", "inf")]),
        (
            "00000000000c0002",
            vec![("claimed_at_ms", long_ago), ("visibility_ms", "nan")],
        ),
        (
            "00000000000c0003",
            vec![("claimed_at_ms", "0"), ("unstamped_seen", "1:nan")],
        ),
        ("00000000000c0004", vec![("claimed_at_ms", "1e400")]),
    ];
    for (id, fields) in &cases {
        reference_job(&mut c, &q, id).await;
        // Claimed the reference's way: moved to processing and stamped.
        exec(&mut c, &["LREM", &keys.pending(), "0", id]).await;
        exec(&mut c, &["LPUSH", &keys.processing(), id]).await;
        hset(
            &mut c,
            &keys.job(id),
            &[
                ("status", "processing"),
                ("attempts", "1"),
                ("claim_token", "aaaaaaaaaaaaaaaa"),
            ],
        )
        .await;
        hset(&mut c, &keys.job(id), fields).await;
    }
    let emptied = eventually(Duration::from_secs(20), || async {
        let _ = q.reclaim_stuck().await.unwrap();
        list(&mut c.clone(), &keys.processing()).await.is_empty()
    })
    .await;
    assert!(
        emptied,
        "every entry left processing: {:?}",
        list(&mut c, &keys.processing()).await
    );
    let status = |id: &'static str| {
        let q = q.clone();
        async move { q.get_job(id).await.unwrap().unwrap() }
    };
    for id in ["00000000000c0001", "00000000000c0003", "00000000000c0004"] {
        assert_eq!(status(id).await.status(), Some(JobStatus::Pending), "{id}");
    }
    let failed = status("00000000000c0002").await;
    assert_eq!(failed.status(), Some(JobStatus::Failed));
    assert!(
        failed
            .last_error()
            .unwrap()
            .contains("visibility_ms is \"nan\""),
        "{:?}",
        failed.last_error()
    );
    let mut pending = list(&mut c, &keys.pending()).await;
    pending.sort();
    assert_eq!(
        pending,
        vec!["00000000000c0001", "00000000000c0003", "00000000000c0004"]
    );
}

/// A key of another type where a job hash belongs is not a job: the claim
/// drops its pending entry with the reason and claims the jobs behind it,
/// the sweep drops its processing entry and lease and goes on to the
/// entries behind it, promote drops its schedule, settles answer
/// `LeaseLost`, reads see no job, and history trimming steps over it.
/// Before, each of these failed with WRONGTYPE, the claim after moving the
/// id to processing, and every later sweep failed on the same entry.
async fn keys_of_another_type_at_a_job_key_are_not_jobs(redis: TestRedis) {
    let (_, q, mut c) = setup_on(
        &redis,
        "wrong_types",
        QueueOptions::default()
            .visibility(Duration::from_millis(100))
            .completed_history(1),
    )
    .await;
    let keys = q.keys().clone();

    // Claim: a string and a list where job hashes belong, a good job behind.
    let (string_id, list_id) = ("00000000000d0001", "00000000000d0002");
    exec(&mut c, &["SET", &keys.job(string_id), "not a job"]).await;
    exec(&mut c, &["RPUSH", &keys.job(list_id), "x"]).await;
    exec(&mut c, &["LPUSH", &keys.pending(), string_id, list_id]).await;
    let good = q.enqueue(&json!("good")).await.unwrap();
    // Pending, oldest (next) last: the bad ones come out first.
    assert_eq!(
        list(&mut c, &keys.pending()).await,
        vec![good.clone(), list_id.to_owned(), string_id.to_owned()]
    );
    let jobs = q.claim_many(5, Duration::ZERO).await.unwrap();
    assert_eq!(
        jobs.iter().map(ClaimedJob::id).collect::<Vec<_>>(),
        vec![good.as_str()]
    );
    assert!(list(&mut c, &keys.pending()).await.is_empty());
    assert_eq!(list(&mut c, &keys.processing()).await, vec![good.clone()]);
    assert!(exists(&mut c, &keys.job(string_id)).await, "left as it was");

    // Settling a job whose hash was replaced by a string: lease lost, no error.
    let job = &jobs[0];
    exec(&mut c, &["DEL", &keys.job(&good)]).await;
    exec(&mut c, &["SET", &keys.job(&good), "replaced"]).await;
    assert_eq!(q.extend(job).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.complete(job, &json!(1)).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.fail(job, "x").await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.release(job).await.unwrap(), Ack::LeaseLost);
    assert_eq!(
        q.get_jobs(&[&good, string_id]).await.unwrap(),
        vec![None, None]
    );

    // Sweep: the replaced job's processing entry and its (expired) lease are
    // dropped; a stale reference claim behind it is still taken back.
    let stale = "00000000000d0003";
    reference_job(&mut c, &q, stale).await;
    exec(&mut c, &["LREM", &keys.pending(), "0", stale]).await;
    exec(&mut c, &["RPUSH", &keys.processing(), stale]).await;
    hset(
        &mut c,
        &keys.job(stale),
        &[
            ("status", "processing"),
            ("attempts", "1"),
            ("claim_token", "cccccccccccccccc"),
            ("claimed_at_ms", "1000000000000"),
        ],
    )
    .await;
    exec(
        &mut c,
        &[
            "ZADD",
            &keys.leases(),
            "0",
            &format!("{good}:{}", job.token()),
        ],
    )
    .await;
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.dropped, vec![good.clone()], "{report:?}");
    assert_eq!(report.reclaimed, vec![stale.to_owned()], "{report:?}");
    assert!(list(&mut c, &keys.processing()).await.is_empty());
    let leases: u64 = redis::cmd("ZCARD")
        .arg(keys.leases())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(leases, 0);

    // Promote: a due schedule whose key is a string goes; a due job moves.
    let later = enqueue_due_in_an_hour(&q, "later").await;
    exec(
        &mut c,
        &["ZADD", &keys.scheduled(), "0", string_id, "1", &later],
    )
    .await;
    assert_eq!(q.promote_due().await.unwrap(), 1);
    assert!(zscore(&mut c, &keys.scheduled(), string_id).await.is_none());

    // History: the id trimmed off is a string's; the trim steps over it.
    exec(&mut c, &["LPUSH", &keys.completed(), string_id]).await;
    let stale_job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let later_job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        q.complete(&stale_job, &json!(1)).await.unwrap(),
        Ack::Completed
    );
    assert_eq!(
        q.complete(&later_job, &json!(2)).await.unwrap(),
        Ack::Completed
    );
    assert_eq!(list(&mut c, &keys.completed()).await, vec![later.clone()]);
    assert!(
        exists(&mut c, &keys.job(string_id)).await,
        "not ours to delete"
    );
    assert_eq!(q.stats().await.unwrap().completed_total, 2);

    // Enqueue: an id whose key holds a string cannot be a job, and the batch
    // it is part of is refused before anything is written.
    let refused = q
        .submit_many(vec![
            NewJob::new(&json!("first")).unwrap(),
            NewJob::new(&json!("taken"))
                .unwrap()
                .options(EnqueueOptions::new().id(string_id)),
        ])
        .await;
    assert!(
        list(&mut c, &keys.pending()).await.is_empty(),
        "nothing written ({refused:?})"
    );
    let err = refused.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert_eq!(q.stats().await.unwrap().enqueued_total, 2);
}

/// A settle repeated with the same token answers `Duplicate` however the
/// job moved on since: its hash trimmed off the completed history and
/// deleted, or the job retried (or released), claimed again and settled by
/// the later claim. Before, both answered `LeaseLost`, which a caller of
/// `Queue` reads as "run it again".
async fn a_repeated_settle_answers_duplicate_after_the_job_moved_on(redis: TestRedis) {
    let (_, q, mut c) = setup_on(
        &redis,
        "repeats",
        QueueOptions::default().completed_history(1),
    )
    .await;
    let keys = q.keys().clone();
    let first = q.enqueue(&json!(1)).await.unwrap();
    let second = q.enqueue(&json!(2)).await.unwrap();
    let a = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(a.id(), first);
    assert_eq!(q.complete(&a, &json!("a")).await.unwrap(), Ack::Completed);
    let b = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(b.id(), second);
    assert_eq!(q.complete(&b, &json!("b")).await.unwrap(), Ack::Completed);
    assert!(
        !exists(&mut c, &keys.job(&first)).await,
        "trimmed off the history, hash deleted"
    );
    assert_eq!(q.complete(&a, &json!("a")).await.unwrap(), Ack::Duplicate);
    assert_eq!(q.fail(&a, "late").await.unwrap(), Ack::Duplicate);

    // Retried, claimed again and completed by the second claim.
    let third = q.enqueue(&json!(3)).await.unwrap();
    let try1 = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(try1.id(), third);
    assert_eq!(q.fail(&try1, "flaky").await.unwrap(), Ack::Retrying);
    let try2 = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(try2.id(), third);
    assert_eq!(q.release(&try2).await.unwrap(), Ack::Released);
    let try3 = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.complete(&try3, &json!(3)).await.unwrap(), Ack::Completed);
    assert_eq!(q.fail(&try1, "flaky").await.unwrap(), Ack::Duplicate);
    assert_eq!(q.release(&try2).await.unwrap(), Ack::Duplicate);
    assert_eq!(q.complete(&try3, &json!(3)).await.unwrap(), Ack::Duplicate);

    // A token that never settled this job is still refused.
    let forged = ClaimedJob::from_claim(&third, "0123456789abcdef");
    assert_eq!(
        q.complete(&forged, &json!(0)).await.unwrap(),
        Ack::LeaseLost
    );
    let s = q.stats().await.unwrap();
    assert_eq!((s.completed_total, s.retried_total), (3, 1));
}

/// A reference client's terminal fail trims `failed` to 50 with a plain
/// `LTRIM`: the dead letters of ours it cuts off keep hashes without a TTL
/// that nothing lists. The sweep's full walk finds and deletes them, and
/// leaves the listed ones alone. Before, they leaked for ever.
async fn dead_letters_a_reference_client_trimmed_off_are_deleted_by_the_sweep(redis: TestRedis) {
    let (_, q, mut c) = setup_on(&redis, "trimmed", QueueOptions::default()).await;
    let keys = q.keys().clone();
    let payloads: Vec<_> = (0..60).map(|n| json!(n)).collect();
    let ids = q.enqueue_many(&payloads).await.unwrap();
    for _ in 0..60 {
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(q.fail_permanently(&job, "bad").await.unwrap(), Ack::Failed);
    }
    // The reference's terminal fail: LPUSH, LTRIM 0 49 (no DEL).
    let reference = "00000000000e0001";
    reference_job(&mut c, &q, reference).await;
    exec(&mut c, &["LREM", &keys.pending(), "0", reference]).await;
    hset(&mut c, &keys.job(reference), &[("status", "failed")]).await;
    exec(&mut c, &["LPUSH", &keys.failed(), reference]).await;
    exec(&mut c, &["LTRIM", &keys.failed(), "0", "49"]).await;
    exec(&mut c, &["EXPIRE", &keys.job(reference), "300"]).await;
    // Claims take the oldest first: the first 11 failed first and were cut.
    let (cut, listed) = ids.split_at(11);
    for id in cut {
        assert!(exists(&mut c, &keys.job(id)).await, "{id} leaked so far");
    }

    let report = q.reclaim_stuck().await.unwrap();
    for id in cut {
        assert!(!exists(&mut c, &keys.job(id)).await, "{id} deleted");
    }
    let mut unlisted = report.unlisted.clone();
    unlisted.sort();
    let mut want = cut.to_vec();
    want.sort();
    assert_eq!(unlisted, want, "{report:?}");
    for id in listed {
        let record = q.get_job(id).await.unwrap().unwrap();
        assert_eq!(record.status(), Some(JobStatus::Failed), "{id} kept");
    }
    assert_eq!(q.list_failed(0..100).await.unwrap().len(), 50);
    assert!(q.reclaim_stuck().await.unwrap().unlisted.is_empty());

    // A dead letter sent back for another try is not one any more.
    assert!(q.retry_failed(&listed[0]).await.unwrap());
    assert!(q.reclaim_stuck().await.unwrap().unlisted.is_empty());
    assert!(exists(&mut c, &keys.job(&listed[0])).await);
}

/// Completed listings do not outlive their hashes: ids whose hash expired
/// (or was deleted) leave the completed history at the sweep's full walk,
/// so the history lists only jobs that can be read. Before, they stayed
/// listed until pushed off (reference 8.14, fixed for dead letters only).
async fn completed_listings_whose_hash_is_gone_leave_the_history(redis: TestRedis) {
    let (_, q, mut c) = setup_on(&redis, "expired", QueueOptions::default()).await;
    let keys = q.keys().clone();
    let ids = q
        .enqueue_many(&[json!(1), json!(2), json!(3), json!(4)])
        .await
        .unwrap();
    for _ in 0..4 {
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(
            q.complete(&job, &json!("ok")).await.unwrap(),
            Ack::Completed
        );
    }
    // Two hashes go, as an expiring TTL would take them.
    exec(&mut c, &["DEL", &keys.job(&ids[0]), &keys.job(&ids[2])]).await;
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(
        q.list_completed(0..10).await.unwrap(),
        vec![ids[3].clone(), ids[1].clone()]
    );
    let mut expired = report.expired.clone();
    expired.sort();
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    assert_eq!(expired, want, "{report:?}");
    assert_eq!(q.stats().await.unwrap().completed_total, 4, "history only");
}

/// Renewing a lease requires the claim to still hold the job: its status,
/// its token, and its lease in the leases set (a lease is in the set
/// exactly while its claim is listed in processing). Before, a claim whose
/// lease and listing were gone was renewed, and the new lease pointed at a
/// job nobody listed.
async fn extend_refuses_a_claim_whose_lease_and_listing_are_gone(redis: TestRedis) {
    let (_, q, mut c) = setup_on(&redis, "extend", QueueOptions::default()).await;
    let keys = q.keys().clone();
    q.enqueue_many(&[json!(1), json!(2)]).await.unwrap();
    let kept = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let lost = q.claim(Duration::ZERO).await.unwrap().unwrap();
    exec(&mut c, &["LREM", &keys.processing(), "0", lost.id()]).await;
    exec(
        &mut c,
        &[
            "ZREM",
            &keys.leases(),
            &format!("{}:{}", lost.id(), lost.token()),
        ],
    )
    .await;
    assert_eq!(
        q.extend_many(&[&kept, &lost]).await.unwrap(),
        vec![Ack::Extended, Ack::LeaseLost]
    );
    assert!(
        zscore(
            &mut c,
            &keys.leases(),
            &format!("{}:{}", lost.id(), lost.token())
        )
        .await
        .is_none(),
        "no lease made for a job nobody lists"
    );
}

/// The raw bytes of a list.
async fn raw_list(c: &mut RawConn, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
        .expect("LRANGE")
}

/// Writes a job whose id is raw bytes, as another client could: a hash at
/// `key` with `id`, an empty JSON payload and `fields`, and `id` pushed on
/// `list`.
async fn raw_job(c: &mut RawConn, list: &str, key: &[u8], id: &[u8], fields: &[(&str, &[u8])]) {
    let mut hset = redis::cmd("HSET");
    hset.arg(key).arg("id").arg(id).arg("payload").arg("{}");
    for (name, value) in fields {
        hset.arg(*name).arg(*value);
    }
    let _: () = hset.query_async(c).await.unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg(list)
        .arg(id)
        .query_async(c)
        .await
        .unwrap();
}

/// Ids, field names and values that are not UTF-8 (another client wrote
/// them) fail their own job with a reason and never a whole reply: before,
/// a claim failed such a job under a lossily decoded id that named no key,
/// so it stayed in processing with a lease and an attempt charged; a sweep
/// meeting one failed as a whole ("invalid utf-8"), and so did a read of a
/// page of jobs holding one.
async fn bytes_that_are_not_utf8_fail_their_own_job_only(redis: TestRedis) {
    let (_, q, mut c) = setup_on(&redis, "utf8", QueueOptions::default()).await;
    let keys = q.keys().clone();
    let good = q.enqueue(&json!({"n": 1})).await.unwrap();
    // A reference-style job whose id is not UTF-8, waiting behind it.
    let bad_id: &[u8] = b"bad\xff\xfeid";
    let bad_key = [keys.job_prefix().as_bytes(), bad_id].concat();
    let pending = [("status", b"pending".as_slice()), ("attempts", b"0")];
    raw_job(&mut c, &keys.pending(), &bad_key, bad_id, &pending).await;
    // A job whose payload is not UTF-8.
    let odd = q.enqueue(&json!({"n": 2})).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(keys.job(&odd))
        .arg("payload")
        .arg(b"\xff\xfe{}".as_slice())
        .query_async(&mut c)
        .await
        .unwrap();
    let read = q.get_jobs(&[good.as_str(), odd.as_str()]).await.unwrap();
    assert!(
        read.iter().all(Option::is_some),
        "a page with an odd payload reads whole"
    );

    let claimed = q.claim_many(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        summary(&claimed).len(),
        1,
        "only the good job is handed out"
    );
    assert_eq!(claimed[0].id(), good);
    assert!(
        raw_list(&mut c, &keys.processing()).await == vec![good.as_bytes().to_vec()],
        "nothing else is left in processing"
    );
    let failed = raw_list(&mut c, &keys.failed()).await;
    assert!(
        failed.contains(&bad_id.to_vec()),
        "the id is a dead letter: {failed:?}"
    );
    let reason: Option<String> = redis::cmd("HGET")
        .arg(&bad_key)
        .arg("last_error")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(reason.unwrap_or_default().contains("UTF-8"));
    let odd_job = q.get_job(&odd).await.unwrap().unwrap();
    assert_eq!(odd_job.status(), Some(JobStatus::Failed));
    assert!(
        odd_job.last_error().unwrap_or_default().contains("UTF-8"),
        "{odd_job:?}"
    );
    assert_eq!(
        q.list_failed(0..10).await.unwrap().len(),
        2,
        "the listing reads"
    );

    // A stale reference claim whose id is not UTF-8, in processing.
    let stale: &[u8] = b"stale\xc0id";
    let stale_key = [keys.job_prefix().as_bytes(), stale].concat();
    let claimed = [
        ("status", b"processing".as_slice()),
        ("attempts", b"0"),
        ("claimed_at_ms", b"1000000000000"),
        ("claim_token", b"ref"),
    ];
    raw_job(&mut c, &keys.processing(), &stale_key, stale, &claimed).await;
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.reclaimed.len(), 1, "{report:?}");
    assert!(q.claim_many(10, Duration::ZERO).await.unwrap().is_empty());
    assert!(
        raw_list(&mut c, &keys.failed())
            .await
            .contains(&stale.to_vec())
    );
    let _ = c;
}

on_each_topology! {
    #[tokio::test] a_claim_retried_after_a_pause_gets_back_what_its_first_run_took,
    #[tokio::test] numbers_that_are_not_decimal_integers_fail_the_job_at_claim,
    #[tokio::test] a_sweep_takes_back_processing_entries_with_malformed_numbers,
    #[tokio::test] keys_of_another_type_at_a_job_key_are_not_jobs,
    #[tokio::test] a_repeated_settle_answers_duplicate_after_the_job_moved_on,
    #[tokio::test] dead_letters_a_reference_client_trimmed_off_are_deleted_by_the_sweep,
    #[tokio::test] completed_listings_whose_hash_is_gone_leave_the_history,
    #[tokio::test] extend_refuses_a_claim_whose_lease_and_listing_are_gone,
    #[tokio::test] bytes_that_are_not_utf8_fail_their_own_job_only,
}
