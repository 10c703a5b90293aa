//! Periodic schedules against a single server and a three-primary cluster:
//! one job per tick across a fleet of runner processes while one is killed
//! and restarted, ten racing callers fire a tick once, the misfire policies,
//! a restart that never moves a schedule, and the client's schedule API.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use jobqueue::queue::{Misfire, Queue, QueueOptions, ScheduleOptions};
use jobqueue::{Error, job};
use jobqueue_tests::*;
use serde_json::json;

/// A job the schedule API test schedules by hand.
#[job(queue = "cron-api")]
async fn report(_day: String) {}

/// Every job of `q` a schedule enqueued, by tick: (tick ms, job id).
async fn ticks_of(q: &Queue) -> BTreeMap<u64, Vec<String>> {
    let mut ids = q.list_pending(0..100_000).await.unwrap();
    ids.extend(q.list_completed(0..100_000).await.unwrap());
    ids.extend(q.list_processing(0..100_000).await.unwrap());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut ticks: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (id, record) in ids.iter().zip(q.get_jobs(&refs).await.unwrap()) {
        let record = record.unwrap_or_else(|| panic!("job {id} has a hash"));
        let tick: u64 = record
            .field("scheduled_for_ms")
            .expect("a tick's job says its tick")
            .parse()
            .unwrap();
        ticks.entry(tick).or_default().push(id.clone());
    }
    ticks
}

fn spawn_runner(url: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_jobqueue-test-worker"))
        .args([url, "cron"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the test worker starts")
}

async fn five_runner_processes_enqueue_one_job_per_tick_while_one_is_killed(redis: TestRedis) {
    let url = redis.url();
    let mut runners: Vec<_> = (0..5).map(|_| spawn_runner(&url)).collect();
    tokio::time::sleep(Duration::from_secs(8)).await;
    // One dies mid-run, without a chance to clean up, and comes back.
    runners[0].start_kill().unwrap();
    runners[0].wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    runners[0] = spawn_runner(&url);
    tokio::time::sleep(Duration::from_secs(12)).await;
    for runner in &mut runners {
        runner.start_kill().unwrap();
        runner.wait().await.unwrap();
    }
    let q = redis
        .queue("proc-cron", QueueOptions::new().completed_history(100_000))
        .await;
    let ticks = ticks_of(&q).await;
    let doubled: Vec<_> = ticks.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "ticks with more than one job: {doubled:?}"
    );
    let times: Vec<u64> = ticks.keys().copied().collect();
    assert!(times.len() >= 20, "at least 20 ticks: {}", times.len());
    let gaps: Vec<_> = times.windows(2).filter(|w| w[1] - w[0] != 1000).collect();
    assert!(gaps.is_empty(), "every second has its job: gaps {gaps:?}");
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.enqueued_total, times.len() as u64);
    eprintln!(
        "cron: {} one-second ticks, one job each, no gap; a runner killed at 8 s and back at 12 s",
        times.len()
    );
    let schedules = q.schedules().await.unwrap();
    assert_eq!(
        schedules.len(),
        1,
        "one schedule, however many runners wrote it"
    );
    assert_eq!(schedules[0].name, "every_second");
    assert_eq!(schedules[0].last_tick_ms, times.last().copied());
}

async fn ten_callers_racing_for_one_tick_enqueue_one_job(redis: TestRedis) {
    let q = redis.queue("cron-race", QueueOptions::new()).await;
    assert!(
        q.put_schedule(
            "race",
            "* * * * * *",
            "work",
            "null",
            &ScheduleOptions::new()
        )
        .await
        .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.tick_schedules().await.unwrap() })
        })
        .collect();
    let mut fired = Vec::new();
    for racer in racers {
        fired.extend(racer.await.unwrap());
    }
    let ticks = ticks_of(&q).await;
    assert!(!ticks.is_empty());
    assert!(ticks.values().all(|ids| ids.len() == 1), "{ticks:?}");
    assert_eq!(fired.len(), ticks.len(), "each tick fired by one caller");
}

async fn missed_ticks_run_once_or_are_skipped(redis: TestRedis) {
    let q = redis.queue("cron-misfire", QueueOptions::new()).await;
    let grace = Duration::from_millis(300);
    for (name, misfire) in [("once", Misfire::RunOnce), ("skip", Misfire::Skip)] {
        let options = ScheduleOptions::new().misfire(misfire).grace(grace);
        q.put_schedule(
            name,
            "* * * * * *",
            "work",
            &json!(name).to_string(),
            &options,
        )
        .await
        .unwrap();
    }
    // No runner for three ticks and more; then one look, half way between
    // two ticks, so the latest tick due is past the grace too.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    loop {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        if (450..600).contains(&ms) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    q.tick_schedules().await.unwrap();
    let ticks = ticks_of(&q).await;
    let schedules = q.schedules().await.unwrap();
    let once = schedules.iter().find(|s| s.name == "once").unwrap();
    let skip = schedules.iter().find(|s| s.name == "skip").unwrap();
    // "once": one job, for the latest tick missed.
    let once_jobs: Vec<_> = ticks
        .iter()
        .filter(|(_, ids)| {
            ids.iter()
                .any(|id| Some(id.as_str()) == once.last_job_id.as_deref())
        })
        .collect();
    assert_eq!(once_jobs.len(), 1, "{ticks:?}");
    assert_eq!(Some(*once_jobs[0].0), once.last_tick_ms);
    assert_eq!(
        ticks.len(),
        1,
        "nothing for the skipped schedule: {ticks:?}"
    );
    // Both resume after now.
    for s in [once, skip] {
        assert!(s.next_tick_ms > s.last_tick_ms, "{s:?}");
    }
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.enqueued_total, 1);
}

async fn a_restart_never_moves_a_schedule_and_a_change_does(redis: TestRedis) {
    let q = redis.queue("cron-put", QueueOptions::new()).await;
    let options = ScheduleOptions::new().tz("Europe/Berlin");
    assert!(
        q.put_schedule("nightly", "0 0 3 * * *", "work", "null", &options)
            .await
            .unwrap()
    );
    let before = q.schedules().await.unwrap();
    assert!(
        !q.put_schedule("nightly", "0 0 3 * * *", "work", "null", &options)
            .await
            .unwrap(),
        "the same definition again writes nothing"
    );
    assert_eq!(q.schedules().await.unwrap(), before);
    assert!(
        q.put_schedule("nightly", "0 30 3 * * *", "work", "null", &options)
            .await
            .unwrap()
    );
    let after = q.schedules().await.unwrap();
    assert_eq!(after[0].cron, "0 30 3 * * *");
    assert_eq!(
        after[0].next_tick_ms.unwrap() - before[0].next_tick_ms.unwrap(),
        30 * 60 * 1000
    );
    assert!(q.remove_schedule("nightly").await.unwrap());
    assert!(q.schedules().await.unwrap().is_empty());
    assert!(!q.remove_schedule("nightly").await.unwrap());
}

async fn the_client_schedules_lists_and_unschedules_and_refuses_bad_input(redis: TestRedis) {
    let client = redis.client().await;
    assert!(
        client
            .schedule::<report>("daily", "0 0 6 * * *", "today".into())
            .await
            .unwrap()
    );
    let q = client.queue("cron-api").unwrap();
    let listed = q.schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].job.as_str(),
            listed[0].payload.as_str(),
            listed[0].tz.as_str()
        ),
        ("report", "\"today\"", "UTC")
    );
    match client
        .schedule::<report>("bad", "61 * * * *", "x".into())
        .await
    {
        Err(Error::InvalidOption { reason, .. }) => {
            assert!(reason.contains("invalid cron expression"), "{reason}");
        }
        other => panic!("expected a clear error, got {other:?}"),
    }
    match client
        .schedule_with::<report>(
            "bad",
            "* * * * *",
            "x".into(),
            ScheduleOptions::new().tz("Mars/Base"),
        )
        .await
    {
        Err(Error::InvalidOption { reason, .. }) => {
            assert!(reason.contains("unknown time zone"), "{reason}");
        }
        other => panic!("expected a clear error, got {other:?}"),
    }
    assert!(client.unschedule::<report>("daily").await.unwrap());
    assert!(q.schedules().await.unwrap().is_empty());
}

on_each_topology! {
    #[tokio::test(flavor = "multi_thread")] five_runner_processes_enqueue_one_job_per_tick_while_one_is_killed,
    #[tokio::test(flavor = "multi_thread")] ten_callers_racing_for_one_tick_enqueue_one_job,
    #[tokio::test] missed_ticks_run_once_or_are_skipped,
    #[tokio::test] a_restart_never_moves_a_schedule_and_a_change_does,
    #[tokio::test] the_client_schedules_lists_and_unschedules_and_refuses_bad_input,
}
