//! Runners in real child processes: a worker killed with SIGKILL loses its
//! jobs for no longer than its lease plus a sweep; SIGTERM drains; a worker
//! started before Redis waits for it; and a chaos run of four workers under
//! repeated SIGKILLs loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobqueue::client::EnqueueOptions;
use jobqueue::queue::{JobStatus, NewJob, QueueOptions};
use jobqueue_tests::*;
use serde_json::json;

/// Starts the worker binary against `url` with 10 slots, once it is ready.
fn worker(url: &str) -> Child {
    worker_with(url, 10, &[])
}

/// The worker binary with `concurrency` slots and extra environment, once
/// it is ready.
fn worker_with(url: &str, concurrency: usize, env: &[(&str, &str)]) -> Child {
    let mut child = spawn_worker(url, concurrency, env, Stdio::null());
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("worker output");
    assert_eq!(line.trim(), "ready");
    child
}

fn spawn_worker(url: &str, concurrency: usize, env: &[(&str, &str)], stderr: Stdio) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"));
    command
        .arg(url)
        .arg(concurrency.to_string())
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("the worker binary runs")
}

/// Redis's clock, in ms: the clock leases are judged by.
async fn redis_ms(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(c).await.unwrap();
    s * 1000 + us / 1000
}

/// The runs the worker processes recorded so far, in the order they began:
/// (pid, job id).
fn recorded_runs(path: &std::path::Path) -> Vec<(u32, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (pid, id) = line.split_once(' ').unwrap();
            (pid.parse().unwrap(), id.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_sigkilled_workers_job_is_back_in_pending_within_its_lease_and_a_sweep() {
    // Long enough that a worker starved of CPU for a while still renews it
    // in time: that the worker renews it is part of what is shown here.
    const LEASE: Duration = Duration::from_secs(2);
    let lease_ms = LEASE.as_millis() as u64;
    let (server, q, mut c) = setup("proc", QueueOptions::new()).await;
    let mut child = worker(&server.url());
    let id = q
        .submit(
            NewJob::new(&json!("k"))
                .unwrap()
                .name("hang")
                .options(EnqueueOptions::new().visibility(LEASE)),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.get_job(&id).await.unwrap().unwrap().status() == Some(JobStatus::Processing)
        })
        .await,
        "the worker claimed the job"
    );
    let claim = q.get_job(&id).await.unwrap().unwrap();
    let claimed_at = claim.timestamp_ms("claimed_at_ms").unwrap().unwrap();
    let token = claim.field("claim_token").unwrap().to_owned();
    // The worker renews the lease: the job stays claimed past its visibility
    // (each renewal moves claimed_at_ms).
    let renewed = eventually(Duration::from_secs(30), || async {
        q.get_job(&id)
            .await
            .unwrap()
            .unwrap()
            .timestamp_ms("claimed_at_ms")
            .unwrap()
            .unwrap()
            > claimed_at + lease_ms
    })
    .await;
    assert!(renewed, "the worker kept renewing the lease");
    assert!(q.reclaim_stuck().await.unwrap().reclaimed.is_empty());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = redis_ms(&mut c).await;
    let deadline = redis::cmd("ZSCORE")
        .arg(q.keys().leases())
        .arg(format!("{id}:{token}"))
        .query_async::<Option<f64>>(&mut c)
        .await
        .unwrap()
        .expect("the dead worker's lease") as u64;
    assert!(
        deadline <= killed_at + lease_ms,
        "the lease outlives its worker by at most its visibility: ends {deadline}, killed {killed_at}"
    );
    // A sweeper elsewhere (here: every 100 ms) takes the job back once the
    // lease runs out: no sweep before that takes it, the first after does.
    let sweeping = Instant::now();
    loop {
        let before = redis_ms(&mut c).await;
        if q.reclaim_expired().await.unwrap().reclaimed == [id.clone()] {
            break;
        }
        assert!(
            before <= deadline,
            "a sweep at {before} ms left the job, whose lease ran out at {deadline} ms"
        );
        assert!(
            sweeping.elapsed() < Duration::from_secs(60),
            "the job never came back"
        );
        tokio::time::sleep(Duration::from_millis(90)).await;
    }
    let record = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(
        record.status(),
        Some(JobStatus::Pending),
        "the job came back"
    );
    assert_eq!(record.attempts().unwrap(), 1);
    assert!(record.field("reclaimed_at_ms").is_some());
    let reclaimed_at = record.timestamp_ms("reclaimed_at_ms").unwrap().unwrap();
    assert!(
        reclaimed_at > deadline,
        "taken back at {reclaimed_at}, before its lease ran out at {deadline}"
    );
}

#[tokio::test]
async fn sigterm_with_50_jobs_in_flight_finishes_or_hands_back_every_one() {
    let (server, q, _c) = setup("proc", QueueOptions::new()).await;
    let record = server.dir().join("runs.log");
    let record_path = record.to_str().unwrap().to_owned();
    let mut child = worker_with(
        &server.url(),
        50,
        &[("JOBQUEUE_TEST_RECORD", record_path.as_str())],
    );
    let naps: Vec<NewJob> = (0..25)
        .map(|_| NewJob::new(&400_u64).unwrap().name("nap"))
        .collect();
    let hangs: Vec<NewJob> = (0..25)
        .map(|_| {
            NewJob::new(&"k")
                .unwrap()
                .name("hang")
                .options(EnqueueOptions::new().visibility(Duration::from_secs(30)))
        })
        .collect();
    q.submit_many(naps).await.unwrap();
    q.submit_many(hangs).await.unwrap();
    assert!(stats_reach(&q, Duration::from_secs(10), |s| s.processing_depth == 50).await);
    // Every handler has started: jobs claimed but not yet started when the
    // signal comes are handed straight back instead, which is right but not
    // what this test shows.
    assert!(
        eventually(Duration::from_secs(10), || async {
            recorded_runs(&record).len() == 50
        })
        .await,
        "all 50 handlers started: {:?}",
        recorded_runs(&record).len()
    );
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let stopped = Instant::now();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the 1 s shutdown timeout was not kept: {:?}",
        stopped.elapsed()
    );
    let s = q.stats().await.unwrap();
    // The naps finished inside the shutdown timeout; the hangs went back.
    assert_eq!(
        (
            s.completed_total,
            s.pending_depth,
            s.processing_depth,
            s.failed_total
        ),
        (25, 25, 0, 0)
    );
    for id in q.list_pending(0..25).await.unwrap() {
        assert_eq!(
            q.get_job(&id).await.unwrap().unwrap().attempts().unwrap(),
            0,
            "no attempt charged"
        );
    }
}

#[tokio::test]
async fn a_worker_started_before_redis_waits_with_backoff_then_works() {
    let mut server = RedisServer::start();
    server.kill();
    let mut child = spawn_worker(&server.url(), 10, &[("RUST_LOG", "warn")], Stdio::piped());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let cpu = cpu_time_of(child.id());
    assert!(
        cpu < Duration::from_millis(300),
        "the waiting worker used {cpu:?} of CPU in 2 s"
    );
    server.restart();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let q = queue(&server, "proc", QueueOptions::new()).await;
    let id = q
        .submit(NewJob::new(&10_u64).unwrap().name("nap"))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            q.get_job(&id).await.unwrap().unwrap().status() == Some(JobStatus::Completed)
        })
        .await
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("Redis is unreachable; retrying"),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("refused"),
        "the error says why: {stderr}"
    );
}

/// Four workers run 20,000 jobs while a driver SIGKILLs a random one every
/// 300 ms, or as soon as another 1,000 jobs completed since the last kill
/// (so however fast the machine, the run sees at least 19 kills), and starts
/// a replacement. Every run is recorded outside the queue as it begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_four_workers_under_repeated_sigkill_lose_no_job() {
    const JOBS: usize = 20_000;
    // Not the point here, so long: a worker starved of CPU keeps its jobs,
    // and only a kill can make a job run twice.
    const LEASE: Duration = Duration::from_secs(2);
    let (server, q, _c) = setup("proc", QueueOptions::new().completed_history(100_000)).await;
    let record = server.dir().join("runs.log");
    let record_path = record.to_str().unwrap().to_owned();
    let env = [("JOBQUEUE_TEST_RECORD", record_path.as_str())];
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS / 1000 {
        let batch: Vec<NewJob> = (0..1000)
            .map(|_| {
                NewJob::new(&1_u64)
                    .unwrap()
                    .name("record")
                    .options(EnqueueOptions::new().max_attempts(50).visibility(LEASE))
            })
            .collect();
        ids.extend(q.submit_many(batch).await.unwrap());
    }
    let mut workers: Vec<Child> = (0..4)
        .map(|_| worker_with(&server.url(), 20, &env))
        .collect();
    let mut killed = BTreeSet::new();
    let started = Instant::now();
    let mut last_kill = (Instant::now(), 0_u64);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        let s = q.stats().await.unwrap();
        if s.completed_total as usize == JOBS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "chaos run did not finish: {s:?}"
        );
        if last_kill.0.elapsed() < Duration::from_millis(300)
            && s.completed_total < last_kill.1 + 1000
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % 4) as usize;
        killed.insert(workers[victim].id());
        workers[victim].kill().unwrap(); // SIGKILL
        workers[victim].wait().unwrap();
        last_kill = (Instant::now(), s.completed_total);
        workers[victim] = worker_with(&server.url(), 20, &env);
    }
    for mut w in workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    let s = q.stats().await.unwrap();
    assert_eq!(
        (
            s.completed_total,
            s.failed_total,
            s.pending_depth,
            s.processing_depth,
            s.scheduled_depth
        ),
        (JOBS as u64, 0, 0, 0, 0),
        "{s:?}"
    );
    assert!(killed.len() >= 5, "only {} kills", killed.len());
    assert!(
        s.reclaimed_total > 0,
        "no kill caught a job in flight: nothing was reclaimed"
    );
    for chunk in ids.chunks(1000) {
        for (id, r) in chunk.iter().zip(q.get_jobs(chunk).await.unwrap()) {
            assert_eq!(
                r.and_then(|r| r.status()),
                Some(JobStatus::Completed),
                "job {id}"
            );
        }
    }
    // Exactly once in Redis: the completed history (long enough for all)
    // lists every enqueued job once, and nothing else.
    let completed = q.list_completed(0..JOBS + 1).await.unwrap();
    assert_eq!(completed.len(), JOBS, "completed history");
    let enqueued: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(completed.iter().collect::<BTreeSet<_>>(), enqueued);
    let mut runs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (pid, id) in recorded_runs(&record) {
        runs.entry(id).or_default().push(pid);
    }
    assert_eq!(runs.len(), JOBS, "every job ran at least once");
    assert_eq!(runs.keys().collect::<BTreeSet<_>>(), enqueued);
    let duplicates: Vec<(&String, &Vec<u32>)> =
        runs.iter().filter(|(_, pids)| pids.len() > 1).collect();
    for (id, pids) in &duplicates {
        assert!(
            pids.iter().any(|p| killed.contains(p)),
            "job {id} ran twice, on {pids:?}, though none of those workers was killed"
        );
        // A job runs again only because the worker of its earlier run died:
        // every run but the last was on a killed worker.
        let (_, earlier) = pids.split_last().unwrap();
        assert!(
            earlier.iter().all(|p| killed.contains(p)),
            "job {id} ran on {pids:?}: an earlier run was on a worker never killed"
        );
    }
    assert!(
        !duplicates.is_empty(),
        "no kill landed while a handler ran: no job ran twice"
    );
    println!(
        "chaos: {} jobs, {} SIGKILLs, {} reclaimed, {} jobs ran more than once (all after a kill), {:?}",
        JOBS,
        killed.len(),
        s.reclaimed_total,
        duplicates.len(),
        started.elapsed()
    );
}

/// Outcomes are written in batches, after the handlers return: a worker
/// killed after some handlers returned but before their batch was written
/// loses those outcomes, not the jobs. Those jobs, and only jobs whose
/// outcome never reached Redis, run again; every job completes once.
#[tokio::test]
async fn a_worker_killed_with_a_batch_of_outcomes_unwritten_runs_those_jobs_again() {
    const JOBS: usize = 60;
    let (server, q, mut c) = setup("proc", QueueOptions::new().completed_history(100_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let ends = dir.path().join("ends");
    let env = [
        ("JOBQUEUE_TEST_RECORD", starts.to_str().unwrap()),
        ("JOBQUEUE_TEST_ENDS", ends.to_str().unwrap()),
    ];
    let jobs = (0..JOBS)
        .map(|_| NewJob::new(&300u64).unwrap().name("finish_line"))
        .collect();
    let ids: BTreeSet<String> = q.submit_many(jobs).await.unwrap().into_iter().collect();
    let mut first = worker_with(&server.url(), 20, &env);
    let first_pid = first.id();
    assert!(
        eventually(Duration::from_secs(10), || async {
            recorded_runs(&starts).len() >= 20
        })
        .await,
        "the first worker started 20 jobs"
    );
    // From here Redis runs no script: the handlers now running return, and
    // their outcomes wait in the worker, unwritten.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("WRITE")
        .query_async(&mut c)
        .await
        .unwrap();
    let running: BTreeSet<String> = recorded_runs(&starts)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let all_ended = eventually(Duration::from_secs(10), || async {
        recorded_runs(&ends).len() >= running.len()
    })
    .await;
    assert!(all_ended, "the handlers of the running jobs returned");
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.kill().unwrap(); // SIGKILL, with a batch of outcomes unwritten
    first.wait().unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut c)
        .await
        .unwrap();
    let ended_unwritten: BTreeSet<String> = recorded_runs(&ends)
        .into_iter()
        .filter(|(pid, _)| *pid == first_pid)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        ended_unwritten, running,
        "every running job's handler returned"
    );
    for id in &ended_unwritten {
        let job = q.get_job(id).await.unwrap().unwrap();
        assert_eq!(
            job.status(),
            Some(JobStatus::Processing),
            "job {id} ended in the killed worker, and its outcome never reached Redis"
        );
    }
    let stats = q.stats().await.unwrap();
    assert_eq!(
        stats.completed_total, 0,
        "no outcome of the killed worker was written"
    );

    let mut second = worker_with(&server.url(), 20, &env);
    let second_pid = second.id();
    let done = stats_reach(&q, Duration::from_secs(60), |s| {
        s.completed_total == JOBS as u64 && s.processing_depth == 0
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(done, "every job completed: {:?}", q.stats().await.unwrap());
    let runs = recorded_runs(&starts);
    for id in &ended_unwritten {
        assert!(
            runs.iter()
                .any(|(pid, run)| *pid == second_pid && run == id),
            "job {id}, whose outcome was lost with the killed worker, ran again"
        );
    }
    // Only those ran twice; every job ran and completed exactly once more.
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in &runs {
        *count.entry(id.as_str()).or_default() += 1;
    }
    for id in &ids {
        let expected = if ended_unwritten.contains(id) { 2 } else { 1 };
        assert_eq!(count.get(id.as_str()), Some(&expected), "runs of job {id}");
        let job = q.get_job(id).await.unwrap().unwrap();
        assert_eq!(job.status(), Some(JobStatus::Completed), "job {id}");
    }
    let history: BTreeSet<String> = list(&mut c, &q.keys().completed())
        .await
        .into_iter()
        .collect();
    assert_eq!(history, ids, "the completed history lists every job once");
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.completed_total, JOBS as u64);
    assert_eq!(stats.pending_depth + stats.processing_depth, 0);
}
