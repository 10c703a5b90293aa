//! jobqueue on a Redis Cluster: layout detection, the whole job lifecycle
//! across primaries, failover with replicas, the dashboard and the CLI.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use jobqueue::client::{EnqueueOptions, JobHandle};
use jobqueue::queue::{Ack, ClaimedJob, JobStatus, KeyLayout, Queue, QueueOptions};
use jobqueue::{Client, Error, JobContext, JobError, Runner, job};
use jobqueue_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_cluster_is_detected_and_each_queue_lives_in_one_slot() {
    let cluster = RedisCluster::start(3, 0);
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    assert!(conn.is_cluster());
    let mut owners = std::collections::BTreeSet::new();
    for name in ["email", "billing", "reports", "images", "search", "audit"] {
        let q = jobqueue::queue::Queue::new_with(&conn, name, QueueOptions::new()).unwrap();
        assert_eq!(q.keys().pending(), format!("queue:{{{name}}}:pending"));
        let id = q.enqueue(&serde_json::json!({ "n": 1 })).await.unwrap();
        let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
        assert_eq!(job.id(), id);
        assert_eq!(
            q.complete(&job, &serde_json::json!("ok")).await.unwrap(),
            Ack::Completed
        );
        owners.insert(cluster.primary_for(&q.keys().pending()));
        assert!(
            q.purge().await.unwrap() >= 2,
            "purge finds the queue's keys on its node"
        );
    }
    assert!(owners.len() > 1, "queues spread over primaries: {owners:?}");
    let err = jobqueue::queue::Queue::new_with(
        &conn,
        "x",
        QueueOptions::new().layout(KeyLayout::Reference),
    )
    .unwrap_err();
    assert!(err.to_string().contains("CROSSSLOT"), "{err}");
}

/// Runs per job id of the failover and resharding tests (ids are random:
/// each test reads the counts of its own ids only, see `runs_of`).
static RUNS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count_run(ctx: &JobContext) {
    *RUNS.lock().unwrap().entry(ctx.id().to_owned()).or_default() += 1;
}

/// How many times each of `ids` ran, in order.
fn runs_of(ids: &[impl AsRef<str>]) -> Vec<usize> {
    let runs = RUNS.lock().unwrap();
    ids.iter()
        .map(|id| runs.get(id.as_ref()).copied().unwrap_or(0))
        .collect()
}

/// A client on `cluster` with `options`, and the handles of `jobs` jobs `T`
/// (payloads 0 to `jobs - 1`) it enqueued, in batches of 500.
async fn client_with_jobs<T: jobqueue::definition::Job<Payload = u64>>(
    cluster: &RedisCluster,
    jobs: u64,
    options: QueueOptions,
) -> (Client, Vec<JobHandle<T>>) {
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    let client = Client::builder(&conn)
        .queue_options(options)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for chunk in 0..jobs / 500 {
        handles.extend(
            client
                .enqueue_many::<T>((0..500).map(|i| chunk * 500 + i))
                .await
                .unwrap(),
        );
    }
    (client, handles)
}

/// The ids of `handles`.
fn ids_of<T: jobqueue::definition::Job>(handles: &[JobHandle<T>]) -> Vec<String> {
    handles.iter().map(|h| h.id().to_owned()).collect()
}

/// How many `MOVED`, `ASK` and `TRYAGAIN` replies the live nodes of
/// `cluster` have sent (`INFO errorstats`): proof that clients met a slot
/// on the move, not just a cluster that happened to stand still.
fn redirects(cluster: &RedisCluster) -> u64 {
    cluster
        .nodes()
        .iter()
        .filter(|n| n.is_running())
        .map(|n| {
            let info = n.cli(&["INFO", "errorstats"]);
            ["MOVED", "ASK", "TRYAGAIN"]
                .iter()
                .filter_map(|kind| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix(&format!("errorstat_{kind}:count=")))
                        .and_then(|n| n.split(',').next()?.parse::<u64>().ok())
                })
                .sum::<u64>()
        })
        .sum()
}

#[job(queue = "failover", visibility = "1s")]
async fn hop(_n: u64, ctx: JobContext) {
    count_run(&ctx);
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failing_over_mid_run_loses_no_job() {
    const JOBS: u64 = 2_000;
    let mut cluster = RedisCluster::start(3, 1);
    let (client, handles) = client_with_jobs::<hop>(
        &cluster,
        JOBS,
        QueueOptions::default().completed_history(10_000),
    )
    .await;
    let ids = ids_of(&handles);
    let q = client.queue("failover").unwrap();
    let old_primary = cluster.primary_for(&q.keys().pending());
    // Replication is asynchronous: a write acknowledged by a primary that
    // dies before sending it on is gone. The enqueues are made safe first;
    // what the run writes later is what the failover puts at risk.
    cluster.wait_for_replicas(Duration::from_secs(10));

    let runner = Runner::builder(client.clone())
        .queues(["failover"])
        .concurrency(20)
        .sweep_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    let quarter = stats_reach(&q, Duration::from_secs(30), |s| {
        s.completed_total >= JOBS / 4
    })
    .await;
    assert!(quarter, "a quarter of the jobs ran before the failover");
    // The jobs in flight at the kill, exactly: writes to the primary stop
    // (reads go on), its replica receives everything it wrote, and its
    // processing list is read. Then it dies with claims in flight, whose
    // outcomes the workers send meanwhile wait and are retried elsewhere.
    let primary = &cluster.nodes()[old_primary];
    assert_eq!(
        primary.command(&["CLIENT", "PAUSE", "30000", "WRITE"]),
        "+OK"
    );
    cluster.wait_for_replicas(Duration::from_secs(10));
    let primary = &cluster.nodes()[old_primary];
    let in_flight: Vec<String> = primary
        .cli(&["LRANGE", &q.keys().processing(), "0", "-1"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let completed_at_kill: u64 = primary
        .cli(&["HGET", &q.keys().stats(), "completed_total"])
        .trim()
        .parse()
        .unwrap();
    cluster.node_mut(old_primary).kill();
    let killed_at = std::time::Instant::now();
    assert!(
        !in_flight.is_empty(),
        "jobs were in processing when the primary died"
    );
    assert!(
        completed_at_kill < JOBS / 2,
        "the primary died mid-run: {completed_at_kill} completed"
    );

    let finished = stats_reach(&q, Duration::from_secs(90), |s| {
        s.completed_total == JOBS
            && s.pending_depth == 0
            && s.processing_depth == 0
            && s.scheduled_depth == 0
    })
    .await;
    let stats = q.stats().await.unwrap();
    assert!(
        finished,
        "every job completed after the failover: {stats:?}"
    );
    stop_runner(token, task).await;

    let new_primary = cluster.primary_for(&q.keys().pending());
    assert_ne!(new_primary, old_primary, "the replica took over");
    assert_eq!((stats.failed_total, stats.failed_depth), (0, 0));
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (id, record) in ids.iter().zip(q.get_jobs(&ids).await.unwrap()) {
        let record = record.unwrap_or_else(|| panic!("job {id} has a hash"));
        assert_eq!(record.status(), Some(JobStatus::Completed), "job {id}");
    }
    let hops = runs_of(&ids);
    assert!(hops.iter().all(|&n| n >= 1), "every job ran");
    let again: Vec<&str> = ids
        .iter()
        .zip(&hops)
        .filter(|&(_, &n)| n > 1)
        .map(|(id, _)| *id)
        .collect();
    let strays: Vec<&&str> = again
        .iter()
        .filter(|id| !in_flight.iter().any(|f| f == **id))
        .collect();
    assert!(
        strays.is_empty(),
        "only jobs in processing at the kill ran again: {strays:?} were not"
    );
    eprintln!(
        "failover: killed at {completed_at_kill} completed with {} in flight, all {JOBS} \
         completed {:?} later; {} jobs ran more than once, all of them in flight",
        in_flight.len(),
        killed_at.elapsed(),
        again.len()
    );
}

#[tokio::test]
async fn the_dashboard_finds_queues_on_every_primary() {
    use tower::ServiceExt;
    let cluster = RedisCluster::start(3, 0);
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    let names = ["email", "billing", "reports", "images", "search", "audit"];
    let mut owners = std::collections::BTreeSet::new();
    for name in names {
        let q = jobqueue::queue::Queue::new_with(&conn, name, QueueOptions::new()).unwrap();
        q.enqueue(&serde_json::json!({})).await.unwrap();
        owners.insert(cluster.primary_for(&q.keys().pending()));
    }
    assert_eq!(owners.len(), 3, "the queues live on all three primaries");
    let app = jobqueue::dashboard::router(Client::new(&conn));
    let request = axum::http::Request::get("/api/overview")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let overview: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for name in names {
        let queue = overview["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {overview}"));
        assert_eq!(queue["stats"]["pending_depth"], 1, "{name}");
    }
}

/// Payloads whose job fails for good in the resharding test.
fn dead_by_design(n: u64) -> bool {
    n % 40 == 7
}

#[job(queue = "resharded", visibility = "2s")]
async fn stay(n: u64, ctx: JobContext) -> Result<(), JobError> {
    count_run(&ctx);
    tokio::time::sleep(Duration::from_millis(2)).await;
    if dead_by_design(n) {
        return Err(JobError::permanent("a dead letter by design"));
    }
    Ok(())
}

/// A queue whose slot moves while it runs, with every kind of state on the
/// move: leases in flight, scheduled jobs coming due, dead letters and a
/// completed history both trimmed as jobs settle. Every job ends in a named
/// state, exactly once; the counters add up; every `wait` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_slot_moves_mid_run_follows_it() {
    const JOBS: u64 = 3_000;
    const LATER: u64 = 200;
    let cluster = RedisCluster::start(3, 0);
    let options = QueueOptions::default()
        .completed_history(300)
        .failed_history(20);
    let (client, mut handles) = client_with_jobs::<stay>(&cluster, JOBS, options).await;
    let q = client.queue("resharded").unwrap();
    let key = q.keys().pending();
    let old_owner = cluster.primary_for(&key);
    let new_owner = (old_owner + 1) % 3;
    let runner = Runner::builder(client.clone())
        .queues(["resharded"])
        .concurrency(20)
        .sweep_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let (token, task) = start_runner(runner);
    assert!(
        stats_reach(&q, Duration::from_secs(60), |s| s.completed_total
            >= JOBS / 5)
        .await
    );
    // Jobs due while the slot moves and after it.
    for i in 0..LATER {
        let delay = Duration::from_millis(200 + 15 * i);
        handles.push(
            client
                .enqueue_with::<stay>(JOBS + i, EnqueueOptions::new().delay(delay))
                .await
                .unwrap(),
        );
    }
    // Waits in progress across the move: the jobs next in line, the
    // scheduled ones and dead letters among them.
    let next = usize::try_from(JOBS / 5).unwrap();
    let waiting: Vec<_> = handles[next..next + 60]
        .iter()
        .chain(&handles[usize::try_from(JOBS).unwrap()..][..40])
        .cloned()
        .map(|h| {
            tokio::spawn(async move { (h.id().to_owned(), h.wait(Duration::from_secs(120)).await) })
        })
        .collect();
    let at_move = q.stats().await.unwrap();
    let redirects_before = redirects(&cluster);
    // Small batches keep the slot half-moved for a while.
    let mover = tokio::task::spawn_blocking(move || {
        cluster.move_slot(&key, new_owner, 20);
        cluster
    });
    let moving = std::time::Instant::now();
    let cluster = mover.await.unwrap();
    let after_move = q.stats().await.unwrap();
    let settled = |s: &jobqueue::queue::Stats| s.completed_total + s.failed_total;
    eprintln!(
        "resharding: the slot took {:?} to move; {} jobs settled meanwhile, {} redirects",
        moving.elapsed(),
        settled(&after_move) - settled(&at_move),
        redirects(&cluster) - redirects_before
    );
    assert_eq!(cluster.primary_for(&q.keys().pending()), new_owner);
    assert!(
        at_move.processing_depth > 0
            && at_move.scheduled_depth > 0
            && at_move.failed_depth > 0
            && at_move.completed_depth == 300,
        "leases in flight, jobs scheduled, dead letters and a full history on the move: {at_move:?}"
    );
    assert!(
        settled(&after_move) > settled(&at_move),
        "work was done while the slot moved: {at_move:?} {after_move:?}"
    );
    assert!(
        settled(&after_move) < JOBS + LATER,
        "work was left after the move: {after_move:?}"
    );
    assert!(
        redirects(&cluster) > redirects_before,
        "clients met MOVED, ASK or TRYAGAIN"
    );

    let all = JOBS + LATER;
    let dead = (0..all).filter(|&n| dead_by_design(n)).count() as u64;
    // A trim that met a hash not yet moved was left to a later settle or
    // sweep: the histories are back at their caps once all is settled.
    let finished = stats_reach(&q, Duration::from_secs(90), |s| {
        s.completed_total + s.failed_total == all
            && s.pending_depth + s.processing_depth + s.scheduled_depth == 0
            && (s.completed_depth, s.failed_depth) == (300, 20)
    })
    .await;
    let stats = q.stats().await.unwrap();
    assert!(finished, "every job settled after the move: {stats:?}");
    stop_runner(token, task).await;
    assert_eq!(
        (
            stats.enqueued_total,
            stats.completed_total,
            stats.failed_total
        ),
        (all, all - dead, dead),
        "the counters add up: {stats:?}"
    );

    for waited in waiting {
        let (id, outcome) = waited.await.unwrap();
        assert!(
            matches!(
                outcome,
                Ok(()) | Err(Error::JobFailed { .. } | Error::JobExpired { .. })
            ),
            "the wait for {id} returned with the outcome: {outcome:?}"
        );
    }
    let ids = ids_of(&handles);
    let runs = runs_of(&ids);
    assert!(runs.iter().all(|&n| n == 1), "each job ran once");
    let listed: std::collections::BTreeSet<String> = q
        .list_completed(0..1_000)
        .await
        .unwrap()
        .into_iter()
        .chain(q.list_failed(0..1_000).await.unwrap())
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (n, (id, record)) in refs
        .iter()
        .zip(q.get_jobs(&refs).await.unwrap())
        .enumerate()
    {
        let want = if dead_by_design(n as u64) {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        };
        match record {
            Some(record) => assert_eq!(record.status(), Some(want), "job {n} ({id})"),
            // Trimmed off its history: listed nowhere, its hash deleted.
            None => assert!(
                !listed.contains(*id),
                "job {n} ({id}) is listed without a hash"
            ),
        }
    }
    for id in &listed {
        assert!(
            q.get_job(id).await.unwrap().is_some(),
            "{id} listed with its hash"
        );
    }
}

/// Starts moving the slot of `key` to the next primary the way `redis-cli
/// --cluster reshard` does, and stops before any key moves; returns the
/// slot and the node indexes it moves from and to.
fn begin_move(cluster: &RedisCluster, key: &str) -> (String, usize, usize) {
    let from = cluster.primary_for(key);
    // The next of the three primaries.
    let to = (from + 1) % 3;
    let nodes = cluster.nodes();
    let slot = nodes[from]
        .cli(&["CLUSTER", "KEYSLOT", key])
        .trim()
        .to_owned();
    let id_of = |i: usize| nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let ok = |reply: String| assert_eq!(reply.trim(), "OK");
    ok(nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id_of(from)]));
    ok(nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id_of(to)]));
    (slot, from, to)
}

/// Moves `keys` of a slot begun by [`begin_move`] with one `MIGRATE`.
fn migrate(cluster: &RedisCluster, (_, from, to): &(String, usize, usize), keys: &[String]) {
    let port = cluster.nodes()[*to].port().to_string();
    let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    args.extend(keys.iter().map(String::as_str));
    assert_eq!(cluster.nodes()[*from].cli(&args).trim(), "OK");
}

/// The keys of the slot still on the node it moves from.
fn keys_left(cluster: &RedisCluster, (slot, from, _): &(String, usize, usize)) -> Vec<String> {
    cluster.nodes()[*from]
        .cli(&["CLUSTER", "GETKEYSINSLOT", slot, "100000"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Moves the rest of the slot and gives it to its new node.
fn finish_move(cluster: &RedisCluster, moving: &(String, usize, usize)) {
    let rest = keys_left(cluster, moving);
    if !rest.is_empty() {
        migrate(cluster, moving, &rest);
    }
    let (slot, _, to) = moving;
    let to_id = cluster.nodes()[*to]
        .cli(&["CLUSTER", "MYID"])
        .trim()
        .to_owned();
    for node in cluster.nodes() {
        assert_eq!(
            node.cli(&["CLUSTER", "SETSLOT", slot, "NODE", &to_id])
                .trim(),
            "OK"
        );
    }
}

/// A queue on a fresh three-primary cluster, with histories of one entry so
/// every settle trims, and a raw connection.
async fn migrating_queue(name: &str) -> (RedisCluster, Queue, RawConn) {
    let cluster = RedisCluster::start(3, 0);
    let conn = jobqueue::connection::Connection::connect(cluster.url().as_str())
        .await
        .unwrap();
    let q = Queue::new_with(
        &conn,
        name,
        QueueOptions::default()
            .completed_history(1)
            .failed_history(1),
    )
    .unwrap();
    let raw = RawConn::Cluster(cluster.conn().await);
    (cluster, q, raw)
}

/// Claims the next job, which must be `id`.
async fn claim_of(q: &Queue, id: &str) -> ClaimedJob {
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
    job
}

/// One job settled of each kind, so that every list and set of the queue
/// exists (a script whose keys are all on the node it runs on is served
/// there, so these scripts run on the node the slot moves from). Returns a
/// job left pending.
async fn every_key_in_use(q: &Queue, c: &mut RawConn) -> String {
    let ids = q
        .enqueue_many(&[
            json!("done"),
            json!("dead"),
            json!("waits"),
            json!("unwanted"),
        ])
        .await
        .unwrap();
    assert_eq!(
        q.cancel(&ids[3], "unwanted").await.unwrap(),
        jobqueue::queue::CancelOutcome::Cancelled(JobStatus::Pending)
    );
    let done = claim_of(q, &ids[0]).await;
    assert_eq!(q.complete(&done, &json!(1)).await.unwrap(), Ack::Completed);
    let dead = claim_of(q, &ids[1]).await;
    assert_eq!(
        q.fail_permanently(&dead, "dead").await.unwrap(),
        Ack::Failed
    );
    // The outbox of batch children and chain steps (no runner relays it
    // here): an entry of a job that is not there.
    let keys = q.keys();
    let entry = r#"{"outcome":"ok","detail":"","batch":"","chain":""}"#;
    exec(c, &["HSET", &keys.outbox_entries(), "gone", entry]).await;
    exec(c, &["ZADD", &keys.outbox(), "0", "gone"]).await;
    ids[2].clone()
}

/// A due scheduled job whose hash moved before the scheduled set: promote
/// leaves it scheduled until the hash can be read, then moves it. Before,
/// promote removed it from the scheduled set and then failed on the hash
/// ("non local key"): the job was never run.
#[tokio::test]
async fn promote_meeting_a_job_hash_already_moved_leaves_the_job_scheduled() {
    let (cluster, q, mut c) = migrating_queue("moving_promote").await;
    let keys = q.keys().clone();
    let pending = every_key_in_use(&q, &mut c).await;
    let due = enqueue_due_in_an_hour(&q, "due").await;
    exec(&mut c, &["ZADD", &keys.scheduled(), "XX", "0", &due]).await;
    let moving = begin_move(&cluster, &keys.pending());
    migrate(&cluster, &moving, &[keys.job(&due)]);

    let promoted = q.promote_due().await;
    assert!(
        zscore(&mut c, &keys.scheduled(), &due).await.is_some(),
        "the job is still scheduled ({promoted:?})"
    );
    assert_eq!(promoted.unwrap(), 0);

    finish_move(&cluster, &moving);
    assert_eq!(q.promote_due().await.unwrap(), 1);
    assert_eq!(
        q.list_pending(0..10).await.unwrap(),
        vec![pending, due.clone()]
    );
    assert_eq!(
        q.get_job(&due).await.unwrap().unwrap().status(),
        Some(JobStatus::Pending)
    );
}

/// An expired lease whose job hash moved: the sweep leaves the lease until
/// the hash can be read, then takes the job back. Before, it removed the
/// lease and then failed on the hash: the claim was left to the full walk.
#[tokio::test]
async fn the_sweep_meeting_a_job_hash_already_moved_keeps_the_lease() {
    let (cluster, q, mut c) = migrating_queue("moving_sweep").await;
    let keys = q.keys().clone();
    every_key_in_use(&q, &mut c).await;
    let stuck = q.enqueue(&json!("stuck")).await.unwrap();
    // Oldest first: the job left pending by every_key_in_use comes first.
    let _first = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let job = claim_of(&q, &stuck).await;
    q.enqueue(&json!("keeps pending")).await.unwrap();
    let lease = format!("{stuck}:{}", job.token());
    exec(&mut c, &["ZADD", &keys.leases(), "XX", "0", &lease]).await;
    let moving = begin_move(&cluster, &keys.pending());
    migrate(&cluster, &moving, &[keys.job(&stuck)]);

    let swept = q.reclaim_expired().await;
    assert!(
        zscore(&mut c, &keys.leases(), &lease).await.is_some(),
        "the lease is kept ({swept:?})"
    );
    assert!(swept.unwrap().reclaimed.is_empty());

    finish_move(&cluster, &moving);
    assert_eq!(
        q.reclaim_expired().await.unwrap().reclaimed,
        vec![stuck.clone()]
    );
    assert_eq!(
        q.get_job(&stuck).await.unwrap().unwrap().status(),
        Some(JobStatus::Pending)
    );
    assert_eq!(q.extend(&job).await.unwrap(), Ack::LeaseLost);
}

/// Completing and burying trim their history; when the id trimmed off has
/// a hash that already moved, the trim waits (the list is over its cap for
/// a while) and the settle itself is whole: state, counter, event. Before,
/// the state changed and then the script failed: no counter, no event, an
/// error to the caller, and a `wait` that never returned.
#[tokio::test]
async fn settling_while_the_trimmed_job_hash_moved_is_whole() {
    let (cluster, q, mut c) = migrating_queue("moving_settle").await;
    let keys = q.keys().clone();
    let ids = q
        .enqueue_many(&[
            json!("old done"),
            json!("old dead"),
            json!("done"),
            json!("dead"),
        ])
        .await
        .unwrap();
    let old_done = claim_of(&q, &ids[0]).await;
    assert_eq!(
        q.complete(&old_done, &json!(0)).await.unwrap(),
        Ack::Completed
    );
    let old_dead = claim_of(&q, &ids[1]).await;
    assert_eq!(
        q.fail_permanently(&old_dead, "old").await.unwrap(),
        Ack::Failed
    );
    let done = claim_of(&q, &ids[2]).await;
    let dead = claim_of(&q, &ids[3]).await;
    // Pending, the scheduled set, the cancelled list and the outbox exist
    // too (settle declares them).
    q.enqueue(&json!("waits")).await.unwrap();
    enqueue_due_in_an_hour(&q, "later").await;
    let unwanted = q.enqueue(&json!("unwanted")).await.unwrap();
    assert_eq!(
        q.cancel(&unwanted, "unwanted").await.unwrap(),
        jobqueue::queue::CancelOutcome::Cancelled(JobStatus::Pending)
    );
    // And the outbox (an entry no runner relays here).
    let entry = r#"{"outcome":"ok","detail":"","batch":"","chain":""}"#;
    exec(&mut c, &["HSET", &keys.outbox_entries(), "gone", entry]).await;
    exec(&mut c, &["ZADD", &keys.outbox(), "0", "gone"]).await;
    let mut events = q.subscribe().await.unwrap();
    let moving = begin_move(&cluster, &keys.pending());
    migrate(&cluster, &moving, &[keys.job(&ids[0]), keys.job(&ids[1])]);

    // (Queue::stats is a script over keys that do not all exist, which a
    // slot on the move refuses until it has moved: read the counters alone.)
    let completed = q.complete(&done, &json!(1)).await;
    assert_eq!(
        counter(&mut c, &keys, "completed_total").await,
        2,
        "counted ({completed:?})"
    );
    assert_eq!(completed.unwrap(), Ack::Completed);
    let failed = q.fail_permanently(&dead, "dead").await;
    assert_eq!(
        counter(&mut c, &keys, "failed_total").await,
        2,
        "counted ({failed:?})"
    );
    assert_eq!(failed.unwrap(), Ack::Failed);
    // Events published before the subscription may still arrive (the
    // cluster bus forwards them to the subscriber's node): only these two
    // jobs' are looked at.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the events arrive")
            .unwrap()
            .unwrap();
        if event.id == ids[2] || event.id == ids[3] {
            seen.push((event.id, event.status));
        }
    }
    assert_eq!(
        seen,
        vec![
            (ids[2].clone(), JobStatus::Completed),
            (ids[3].clone(), JobStatus::Failed)
        ]
    );

    finish_move(&cluster, &moving);
    let _ = q.reclaim_stuck().await.unwrap();
    assert_eq!(q.list_completed(0..10).await.unwrap(), vec![ids[2].clone()]);
    assert_eq!(q.list_failed(0..10).await.unwrap(), vec![ids[3].clone()]);
    assert_eq!(
        q.get_jobs(&[&ids[0], &ids[1]]).await.unwrap(),
        vec![None, None],
        "the trimmed jobs' hashes are deleted once they can be"
    );
}

/// One counter of the queue's stats hash.
async fn counter(c: &mut RawConn, keys: &jobqueue::queue::Keys, field: &str) -> u64 {
    redis::cmd("HGET")
        .arg(keys.stats())
        .arg(field)
        .query_async::<Option<u64>>(c)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// While a slot is imported, a script the importing node serves (every key
/// it was given has arrived) sees only the job hashes moved so far: one
/// still on the other node reads as missing. Such a job is left alone, not
/// dropped. Before, promote dropped a due job whose hash had not arrived,
/// and the sweep dropped an expired claim's processing entry: both lost.
#[tokio::test]
async fn a_script_served_by_the_importing_node_leaves_hashes_not_yet_moved_alone() {
    let (cluster, q, mut c) = migrating_queue("importing").await;
    let keys = q.keys().clone();
    every_key_in_use(&q, &mut c).await;
    let stuck = q.enqueue(&json!("stuck")).await.unwrap();
    let _first = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let job = claim_of(&q, &stuck).await;
    q.enqueue(&json!("keeps pending")).await.unwrap();
    let lease = format!("{stuck}:{}", job.token());
    exec(&mut c, &["ZADD", &keys.leases(), "XX", "0", &lease]).await;
    let due = enqueue_due_in_an_hour(&q, "due").await;
    exec(&mut c, &["ZADD", &keys.scheduled(), "XX", "0", &due]).await;
    let moving = begin_move(&cluster, &keys.pending());
    let behind = [keys.job(&stuck), keys.job(&due)];
    let ahead: Vec<String> = keys_left(&cluster, &moving)
        .into_iter()
        .filter(|k| !behind.contains(k))
        .collect();
    migrate(&cluster, &moving, &ahead);

    let promoted = q.promote_due().await;
    assert!(
        zscore(&mut c, &keys.scheduled(), &due).await.is_some(),
        "the due job is still scheduled ({promoted:?})"
    );
    let swept = q.reclaim_stuck().await;
    assert!(
        list(&mut c, &keys.processing()).await.contains(&stuck),
        "the claim is still listed ({swept:?})"
    );
    assert!(zscore(&mut c, &keys.leases(), &lease).await.is_some());
    assert_eq!(promoted.unwrap(), 0);
    assert!(swept.unwrap().dropped.is_empty());

    finish_move(&cluster, &moving);
    assert_eq!(q.promote_due().await.unwrap(), 1);
    assert_eq!(
        q.reclaim_expired().await.unwrap().reclaimed,
        vec![stuck.clone()]
    );
    for id in [&stuck, &due] {
        assert_eq!(
            q.get_job(id).await.unwrap().unwrap().status(),
            Some(JobStatus::Pending),
            "{id}"
        );
    }
}

/// The last step of a slot move is not atomic across nodes: `SETSLOT NODE`
/// reaches the node the slot leaves before the node it goes to, and for that
/// moment each sends clients to the other. redis-rs follows those redirects
/// at once, so a few milliseconds of disagreement used up its retries and
/// the redirect reached the caller (`Err(Redis(Ask ...))` from
/// `JobHandle::wait` in a resharding run). A redirect is now retried with
/// the connection's back-off, like the cluster's other "not now" answers.
#[tokio::test]
async fn reads_and_writes_outlast_nodes_that_disagree_on_a_moving_slot() {
    let (cluster, q, mut raw) = migrating_queue("disagree").await;
    let id = every_key_in_use(&q, &mut raw).await;
    let keys = q.keys().clone();
    let moving = begin_move(&cluster, &keys.pending());
    let rest = keys_left(&cluster, &moving);
    migrate(&cluster, &moving, &rest);
    let (slot, from, to) = &moving;
    let to_id = cluster.nodes()[*to]
        .cli(&["CLUSTER", "MYID"])
        .trim()
        .to_owned();
    // The node the slot leaves gives it away; the node it goes to is still
    // only importing it and sends clients back.
    assert_eq!(
        cluster.nodes()[*from]
            .cli(&["CLUSTER", "SETSLOT", slot, "NODE", &to_id])
            .trim(),
        "OK"
    );
    let (reader, writer) = (q.clone(), q.clone());
    let read = tokio::spawn(async move { reader.get_job(&id).await });
    let write = tokio::spawn(async move { writer.enqueue(&json!("during")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    finish_move(&cluster, &moving);
    let read = read.await.unwrap();
    assert!(
        matches!(&read, Ok(Some(r)) if r.status() == Some(JobStatus::Pending)),
        "read across the move: {read:?}"
    );
    let written = write.await.unwrap();
    assert!(written.is_ok(), "enqueue across the move: {written:?}");
    assert_eq!(q.stats().await.unwrap().pending_depth, 2);
}
