//! Hostile sizes and values: huge batches, huge claims, many dead letters, a
//! purge racing writers, and times that overflow. Every script call must stay
//! short (the servers here log any command over 10 ms in SLOWLOG), and every
//! malformed call must be refused before it writes anything.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{Ack, JobStatus, KeyLayout, Keys, NewJob, QueueOptions};
use jobqueue::{Client, Runner, job};
use jobqueue_tests::*;
use redis::Value;
use serde_json::json;

/// Any command slower than this is logged by the servers of this file.
const SLOW_US: &str = "10000";

/// A server that logs every command slower than 10 ms. SLOWLOG measures wall
/// time, so on a busy two-core machine a command that costs microseconds is
/// logged when the scheduler leaves Redis without a CPU in the middle of it
/// (seen: a single EXISTS at 10 ms, an LREM at 53 ms, with compilers and
/// other suites running). The server therefore runs in the real-time class
/// (`chrt -f 1`, which root may use), or failing that at a raised priority
/// (`nice`, which without the right only warns), and on a CPU of its own
/// (see [`Isolated`]), so that SLOWLOG measures what a command costs rather
/// than how long it waited for a CPU.
fn server_with_slowlog() -> RedisServer {
    RedisServer::builder()
        .wrapper([
            "sh",
            "-c",
            r#"cpu=$(($(nproc --all) - 1))
               if [ "$cpu" -gt 0 ]; then set -- taskset -c "$cpu" "$0" "$@"; else set -- "$0" "$@"; fi
               if chrt -f 1 true 2>/dev/null; then exec chrt -f 1 "$@"; else exec nice -n -10 "$@"; fi"#,
        ])
        .args([
            "--slowlog-log-slower-than",
            SLOW_US,
            "--slowlog-max-len",
            "1024",
        ])
        .start()
}

/// Keeps this test process off the CPU the SLOWLOG servers run on (the last
/// one) while it lives, and gives the process every CPU back on drop.
///
/// A real-time Redis does not stop the kernel from running ordinary tasks on
/// its CPU: when they wait there long enough, the kernel's fair-server lends
/// them that CPU for up to 50 ms of each second, pausing Redis in the middle
/// of whatever command it runs. The runner of a test that loads Redis has
/// more busy threads than one CPU holds, so some landed beside Redis, and
/// single HMGETs were logged at 34 ms. With the test's threads elsewhere, the
/// server's CPU is its own.
///
/// The CPU count is read once, before pinning: read again while pinned it is
/// the pinned count, and the process would stay pinned.
struct Isolated {
    cpus: usize,
}

impl Isolated {
    fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if cpus > 1 {
            set_affinity(&format!("0-{}", cpus - 2));
        }
        Isolated { cpus }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        if self.cpus > 1 {
            set_affinity(&format!("0-{}", self.cpus - 1));
        }
    }
}

/// Sets the CPU list of every thread of this process (threads started later
/// inherit it from the thread that starts them).
fn set_affinity(cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset (util-linux) runs");
    assert!(status.success(), "taskset -a -p -c {cpus}: {status}");
}

/// Held by each test here that loads the machine or asserts a SLOWLOG bound:
/// under plain `cargo test` the tests of this file share one process and
/// would otherwise run at once on a two-core machine, each server's scripts
/// waiting for the CPU while the others' run (SLOWLOG measures wall time).
/// Under nextest each test is its own process; the `one-at-a-time` test
/// group in `.config/nextest.toml` does the same there.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every SLOWLOG entry as "duration µs: command and its first arguments".
async fn slow_commands(conn: &mut impl redis::aio::ConnectionLike) -> Vec<String> {
    let entries: Vec<Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1024)
        .query_async(conn)
        .await
        .expect("SLOWLOG GET");
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                return format!("{entry:?}");
            };
            let micros = match fields.get(2) {
                Some(Value::Int(us)) => *us,
                _ => -1,
            };
            let command: Vec<String> = match fields.get(3) {
                Some(Value::Array(args)) => args
                    .iter()
                    .take(4)
                    .map(|a| match a {
                        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            format!("{micros} µs: {}", command.join(" "))
        })
        .collect()
}

/// Runs per job of `big-batch`, indexed by the job's number.
static BIG_RUNS: std::sync::LazyLock<Vec<AtomicU8>> =
    std::sync::LazyLock::new(|| (0..BIG + WARM).map(|_| AtomicU8::new(0)).collect());

const BIG: usize = 200_000;
const WARM: usize = 2_000;

#[job(queue = "big-batch", visibility = "2s")]
async fn big_tick(n: u32) {
    BIG_RUNS[n as usize].fetch_add(1, Ordering::SeqCst);
}

/// 200,000 jobs enqueued in one call, on a queue split in two shards, while a
/// runner works through the same queue: no command ever holds Redis for 10
/// ms, no lease runs out (nothing is reclaimed), and every job runs once.
///
/// SLOWLOG measures wall time. Even in the real-time class and on a CPU of
/// its own, Redis can be paused mid-command: the kernel's fair server lends
/// its CPU for up to 50 ms a second to ordinary tasks that wait there
/// (daemons of the machine), and a single HMGET was then logged at 23 ms and
/// an HGET at 53 ms. The workload is the same every time, so a script that
/// really takes 10 ms does so in every run: a run with slow entries is run
/// again, with a new server, up to three runs in all, and each discarded run
/// is printed. Every run must lose no lease and run each job once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_jobs_in_one_call_never_hold_redis_and_lose_no_lease() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let isolated = Isolated::new();
    let mut slow = Vec::new();
    for run in 1..=3 {
        slow = two_hundred_thousand_jobs_once().await;
        if slow.is_empty() {
            break;
        }
        eprintln!("run {run}: commands over 10 ms, run again: {slow:?}");
    }
    assert!(
        slow.is_empty(),
        "commands over 10 ms in 3 runs of 3: {slow:?}"
    );
    let cpus = isolated.cpus;
    drop(isolated);
    assert_eq!(
        std::thread::available_parallelism().map_or(1, usize::from),
        cpus,
        "the test process has every CPU back"
    );
}

/// One run of the test above, on a new server: asserts that no lease ran
/// out and every job ran once, and returns the commands SLOWLOG logged.
async fn two_hundred_thousand_jobs_once() -> Vec<String> {
    for runs in BIG_RUNS.iter() {
        runs.store(0, Ordering::SeqCst);
    }
    let server = server_with_slowlog();
    let conn = jobqueue::connection::Connection::connect(server.url().as_str())
        .await
        .unwrap();
    let client = Client::builder(&conn)
        .shards("big-batch", 2)
        .build()
        .unwrap();
    // Jobs are running (and holding 2 s leases) when the big batch arrives.
    client
        .enqueue_many::<big_tick>((BIG as u32)..((BIG + WARM) as u32))
        .await
        .unwrap();
    let runner = Runner::builder(client.clone())
        .queues(["big-batch"])
        .concurrency(64)
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let mut raw = server.conn().await;
    exec(&mut raw, &["SLOWLOG", "RESET"]).await;

    let handles = client
        .enqueue_many::<big_tick>(0..BIG as u32)
        .await
        .unwrap();
    assert_eq!(handles.len(), BIG);

    let shards = client.shard_queues("big-batch").unwrap();
    let total = |f: fn(&jobqueue::queue::Stats) -> u64| {
        let shards = shards.clone();
        async move {
            let mut sum = 0;
            for q in &shards {
                sum += f(&q.stats().await.unwrap());
            }
            sum
        }
    };
    let all = (BIG + WARM) as u64;
    assert!(
        eventually(Duration::from_secs(300), || async {
            total(|s| s.completed_total + s.failed_total).await >= all
        })
        .await,
        "every job settled"
    );
    stop_runner(token, task).await;
    let slow = slow_commands(&mut raw).await;
    let reclaimed = total(|s| s.reclaimed_total).await;
    let completed = total(|s| s.completed_total).await;
    let enqueued = total(|s| s.enqueued_total).await;
    let runs: Vec<(usize, u8)> = BIG_RUNS
        .iter()
        .enumerate()
        .map(|(n, r)| (n, r.load(Ordering::SeqCst)))
        .filter(|&(_, r)| r != 1)
        .take(5)
        .collect();
    assert_eq!(reclaimed, 0, "no lease ran out (slow commands: {slow:?})");
    assert_eq!((enqueued, completed), (all, all));
    assert!(runs.is_empty(), "jobs that ran other than once: {runs:?}");
    slow
}

/// A claim asked for far more jobs than any call should take gets a bounded
/// part, in a call that stays short; claiming on takes every job once.
#[tokio::test]
async fn a_claim_for_a_million_jobs_takes_a_bounded_part() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = server_with_slowlog();
    let q = queue(&server, "big-claim", QueueOptions::new()).await;
    let payloads: Vec<u32> = (0..5_000).collect();
    q.enqueue_many(&payloads).await.unwrap();
    let mut raw = server.conn().await;
    exec(&mut raw, &["SLOWLOG", "RESET"]).await;
    let first = q.claim_many(1_000_000, Duration::ZERO).await.unwrap();
    let slow = slow_commands(&mut raw).await;
    assert!(slow.is_empty(), "commands over 10 ms: {slow:?}");
    assert!(
        !first.is_empty() && first.len() < 5_000,
        "one claim took {} of 5000 jobs",
        first.len()
    );
    let mut seen: HashSet<String> = first.iter().map(|j| j.id().to_owned()).collect();
    loop {
        let more = q.claim_many(1_000_000, Duration::ZERO).await.unwrap();
        if more.is_empty() {
            break;
        }
        for job in more {
            assert!(seen.insert(job.id().to_owned()), "claimed twice");
        }
    }
    assert_eq!(seen.len(), 5_000);
}

/// Writes `n` dead letters straight into Redis, as reference workers leave
/// them (status failed, listed in `failed`), in one setup script.
async fn bury_directly(conn: &mut impl redis::aio::ConnectionLike, keys: &Keys, n: usize) {
    let _: () = redis::cmd("EVAL")
        .arg(
            "for i = 1, tonumber(ARGV[2]) do
               local id = string.format('dead%06d', i)
               redis.call('HSET', ARGV[1] .. id, 'id', id, 'payload', '{}', 'status', 'failed',
                 'attempts', '1', 'enqueued_at_ms', '1', 'claim_token', '', 'last_error', 'boom')
               redis.call('LPUSH', KEYS[1], id)
             end",
        )
        .arg(1)
        .arg(keys.failed())
        .arg(keys.job_prefix())
        .arg(n)
        .query_async(conn)
        .await
        .expect("setup script");
}

/// Reviving a full dead-letter list (10,000, the default cap) takes bounded
/// steps; each is under 10 ms.
#[tokio::test]
async fn retry_all_failed_on_ten_thousand_dead_letters_stays_in_short_steps() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = server_with_slowlog();
    let q = queue(&server, "big-retry", QueueOptions::new()).await;
    let mut raw = server.conn().await;
    bury_directly(&mut raw, q.keys(), 10_000).await;
    exec(&mut raw, &["SLOWLOG", "RESET"]).await;
    let revived = q.retry_all_failed().await.unwrap();
    let slow = slow_commands(&mut raw).await;
    assert!(slow.is_empty(), "commands over 10 ms: {slow:?}");
    assert_eq!(revived.len(), 10_000);
    let s = q.stats().await.unwrap();
    assert_eq!((s.failed_depth, s.pending_depth), (0, 10_000));
}

/// retry_all_failed revives at most the dead letters listed when it started:
/// a job that fails again at once (here a hostile worker buries everything
/// that reaches pending, as fast as it can) is not revived a second time, and
/// the call ends although the dead letters never run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_failed_revives_each_dead_letter_once_though_they_fail_again_at_once() {
    let server = RedisServer::start();
    let q = queue(&server, "big-refail", QueueOptions::new()).await;
    let mut raw = server.conn().await;
    bury_directly(&mut raw, q.keys(), 1_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let burier = tokio::spawn({
        let stop = stop.clone();
        let mut conn = server.conn().await;
        let keys = q.keys().clone();
        async move {
            while !stop.load(Ordering::SeqCst) {
                let _: () = redis::cmd("EVAL")
                    .arg(
                        "local id = redis.call('RPOP', KEYS[1])
                         while id do
                           redis.call('HSET', ARGV[1] .. id, 'status', 'failed')
                           redis.call('LPUSH', KEYS[2], id)
                           id = redis.call('RPOP', KEYS[1])
                         end",
                    )
                    .arg(2)
                    .arg(keys.pending())
                    .arg(keys.failed())
                    .arg(keys.job_prefix())
                    .query_async(&mut conn)
                    .await
                    .expect("burier");
            }
        }
    });
    let revived = tokio::time::timeout(Duration::from_secs(60), q.retry_all_failed())
        .await
        .expect("retry_all_failed ends though its jobs fail again at once")
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    burier.await.unwrap();
    let distinct: HashSet<&String> = revived.iter().collect();
    assert_eq!(
        distinct.len(),
        revived.len(),
        "a dead letter was revived twice in one call"
    );
    assert_eq!(revived.len(), 1_000, "each of the 1000 revived once");
    let counters: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(q.keys().stats())
        .arg("revived_total")
        .arg("retried_total")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(counters, vec![Some(1_000), None]);
}

/// retried_total counts failures sent back for another attempt;
/// revived_total counts dead letters sent back by an operator.
#[tokio::test]
async fn failure_retries_and_dead_letter_revivals_are_counted_apart() {
    let (_server, q, mut raw) = setup("counters", QueueOptions::new().max_attempts(2)).await;
    let id = q.enqueue(&json!(1)).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.fail(&job, "first").await.unwrap(), Ack::Retrying);
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.fail(&job, "second").await.unwrap(), Ack::Failed);
    assert!(q.retry_failed(&id).await.unwrap());
    let counters: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(q.keys().stats())
        .arg("retried_total")
        .arg("revived_total")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(counters, vec![Some(1), Some(1)]);
    let s = q.stats().await.unwrap();
    assert_eq!((s.retried_total, s.revived_total), (1, 1));
    // What `jobqueue stats` prints and the dashboard's API serves.
    let shown = serde_json::to_value(s).unwrap();
    assert_eq!(
        (&shown["retried_total"], &shown["revived_total"]),
        (&json!(1), &json!(1))
    );
}

/// A due time more than a year ahead (one so far that its milliseconds
/// overflow, or just two years) is refused like a delay of that length, and
/// nothing of the batch is written, not even its good jobs.
#[tokio::test]
async fn a_due_time_past_a_year_is_refused_and_nothing_is_written() {
    let (_server, q, mut raw) = setup("overflow", QueueOptions::new()).await;
    let far = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::MAX);
    let two_years = SystemTime::now() + Duration::from_secs(2 * 365 * 24 * 3600);
    for at in [far, two_years] {
        let good = NewJob::new(&json!(1))
            .unwrap()
            .options(EnqueueOptions::new().id("good"));
        let bad = NewJob::new(&json!(2))
            .unwrap()
            .options(EnqueueOptions::new().id("bad").at(at));
        let err = q.submit_many(vec![good, bad]).await;
        assert!(err.is_err(), "{at:?} was accepted: {err:?}");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(keys.is_empty(), "written: {keys:?}");
    }
    // Within a year is fine.
    let id = q
        .submit(NewJob::new(&json!(3)).unwrap().options(
            EnqueueOptions::new().at(SystemTime::now() + Duration::from_secs(300 * 24 * 3600)),
        ))
        .await
        .unwrap();
    assert_eq!(
        q.get_job(&id).await.unwrap().unwrap().status(),
        Some(JobStatus::Scheduled)
    );
}

/// The enqueue script, called directly as a reference client or a hostile
/// one would, refuses a time that is not a decimal integer of milliseconds
/// within a year ("@1e30" would store -9223372036854775808) and writes
/// nothing of the call, not even its good job.
#[tokio::test]
async fn the_enqueue_script_refuses_malformed_times_before_writing_anything() {
    let (_server, _q, mut raw) = setup("overflow", QueueOptions::new()).await;
    let script = concat!(
        include_str!("../../jobqueue/src/lua/common.lua"),
        include_str!("../../jobqueue/src/lua/enqueue.lua")
    );
    let keys = Keys::new("raw", KeyLayout::Reference).unwrap();
    for when in [
        "@1e30",
        "+1e30",
        "@99999999999999999999",
        "+99999999999999",
        "+-5",
        "@",
        "soon",
    ] {
        let reply: redis::RedisResult<Value> = redis::cmd("EVAL")
            .arg(script)
            .arg(5)
            .arg(keys.pending())
            .arg(keys.stats())
            .arg(keys.scheduled())
            .arg(keys.job("fine"))
            .arg(keys.job("hostile"))
            .arg(0)
            .arg(&["fine", "{}", "", "0"])
            .arg(&["hostile", "{}", when, "0"])
            .query_async(&mut raw)
            .await;
        assert!(reply.is_err(), "when {when:?} was accepted: {reply:?}");
        let written: Vec<String> = redis::cmd("KEYS")
            .arg(keys.pattern())
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(written.is_empty(), "when {when:?} left {written:?}");
    }
}

async fn jobs_written_during_a_purge_survive_whole_or_go_whole(redis: TestRedis) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let name = "purged";
    let q = redis.queue(name, QueueOptions::new()).await;
    let mut raw = redis.conn().await;
    // Old jobs in every state, enough that the purge takes many steps.
    let old: Vec<u32> = (0..30_000).collect();
    let old_ids = q.enqueue_many(&old).await.unwrap();
    for _ in 0..3 {
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = q.complete(&job, &json!(1)).await.unwrap();
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = q.fail_permanently(&job, "x").await.unwrap();
        let _ = q.claim(Duration::ZERO).await.unwrap().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let q = q.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if w == 0 {
                        ids.push(q.enqueue(&json!("new")).await.unwrap());
                    } else {
                        ids.extend(q.enqueue_many(&["new"; 20]).await.unwrap());
                    }
                }
                ids
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.purge().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut new_ids = Vec::new();
    for w in writers {
        new_ids.extend(w.await.unwrap());
    }
    let pending: HashSet<String> = list(&mut raw, &q.keys().pending())
        .await
        .into_iter()
        .collect();
    let exists = |conn: &mut RawConn, id: &str| {
        let key = q.keys().job(id);
        let mut conn = conn.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<bool>(&mut conn)
                .await
                .unwrap()
        }
    };
    let mut half = Vec::new();
    let mut survived = 0;
    for id in &new_ids {
        let has_hash = exists(&mut raw, id).await;
        if has_hash != pending.contains(id) {
            half.push((id.clone(), has_hash));
        }
        survived += usize::from(has_hash);
    }
    assert!(
        half.is_empty(),
        "{} of {} jobs written during the purge were half deleted (id, hash left): {:?}",
        half.len(),
        new_ids.len(),
        &half[..half.len().min(5)]
    );
    for id in old_ids.iter().step_by(97) {
        assert!(!exists(&mut raw, id).await, "old job {id} survived");
    }
    for key in [
        q.keys().processing(),
        q.keys().completed(),
        q.keys().failed(),
    ] {
        assert!(list(&mut raw, &key).await.is_empty(), "{key} survived");
    }
    // What survived is a working queue: it all claims, none dropped.
    let mut claimed = 0;
    while let Some(job) = q.claim(Duration::ZERO).await.unwrap() {
        assert_eq!(job.payload::<String>().unwrap(), "new");
        claimed += 1;
    }
    assert_eq!(claimed, survived);
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] jobs_written_during_a_purge_survive_whole_or_go_whole,
}
