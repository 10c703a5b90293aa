//! The reference design's bugs (section 8 of the reference, explained in
//! `jobqueue/src/docs/reference-bugs.md`), each driven through its bad
//! interleaving explicitly, showing ours is safe.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobqueue::client::EnqueueOptions;
use jobqueue::connection::Connection;
use jobqueue::queue::{Ack, ClaimedJob, JobStatus, NewJob, Queue, QueueOptions};
use jobqueue_tests::*;
use serde_json::json;

fn opts(visibility_ms: u64) -> QueueOptions {
    QueueOptions::default().visibility(Duration::from_millis(visibility_ms))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// 8.1: a job that kills its worker on every attempt (its lease always runs
/// out) must end in `failed` once its attempts are used up.
#[tokio::test]
async fn poison_job_whose_lease_always_expires_ends_in_failed() {
    let server = RedisServer::start();
    let q = queue(&server, "jobs", opts(100).max_attempts(3)).await;
    let id = q.enqueue(&json!({"poison": true})).await.unwrap();
    for attempt in 1..=3 {
        let job = q
            .claim(Duration::ZERO)
            .await
            .unwrap()
            .expect("claimable while attempts remain");
        assert_eq!(job.attempt(), attempt);
        tokio::time::sleep(Duration::from_millis(150)).await; // the worker "died"
        let report = q.reclaim_stuck().await.unwrap();
        if attempt < 3 {
            assert_eq!(report.reclaimed, vec![id.clone()]);
        } else {
            assert_eq!(report.failed, vec![id.clone()], "{report:?}");
        }
    }
    let record = q.get_job(&id).await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Failed));
    let reason = record.last_error().unwrap();
    assert!(
        reason.contains("lease expired") && reason.contains("attempt 3 of 3"),
        "{reason}"
    );
    assert!(
        q.claim(Duration::ZERO).await.unwrap().is_none(),
        "it never loops"
    );
    assert_eq!(q.list_failed(0..10).await.unwrap(), vec![id]);
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.reclaimed_total, stats.failed_total), (2, 1));
}

/// 8.1 with a reference sweeper in the fleet: it requeues without counting
/// attempts, so our claim is where the poison loop stops.
#[tokio::test]
async fn a_job_requeued_with_no_attempts_left_is_failed_at_claim() {
    let (_server, q, mut c) = setup("jobs", opts(1000).max_attempts(3)).await;
    reference_enqueue(&mut c, "jobs", "00000000000000a1", "{}").await;
    hset(
        &mut c,
        "queue:jobs:job:00000000000000a1",
        &[("attempts", "3")],
    )
    .await;
    assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
    let record = q.get_job("00000000000000a1").await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Failed));
    assert!(record.last_error().unwrap().contains("no attempts left"));
    assert_eq!(
        list(&mut c, "queue:jobs:failed").await,
        vec!["00000000000000a1"]
    );
    assert!(list(&mut c, "queue:jobs:processing").await.is_empty());
}

/// 8.2: a retried job (claimed_at_ms=0, enqueued long ago) is taken with its
/// stamp in one step, so a sweep right after the claim leaves it alone.
#[tokio::test]
async fn a_sweep_never_takes_back_a_fresh_claim() {
    let (_server, q, mut c) = setup("jobs", opts(100)).await;
    let id = q.enqueue(&json!({})).await.unwrap();
    let old = (wall_ms() - 3_600_000).to_string();
    hset(
        &mut c,
        &format!("queue:jobs:job:{id}"),
        &[("enqueued_at_ms", &old), ("claimed_at_ms", "0")],
    )
    .await;
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let report = q.reclaim_stuck().await.unwrap();
    assert!(report.reclaimed.is_empty(), "{report:?}");
    assert_eq!(
        q.complete(&job, &json!("ok")).await.unwrap(),
        Ack::Completed
    );
    assert!(list(&mut c, "queue:jobs:pending").await.is_empty());
}

/// The first step of a reference claim: the id moves to processing, and the
/// stamp comes in a later round trip.
async fn reference_move_to_processing(c: &mut redis::aio::MultiplexedConnection) {
    exec(
        c,
        &[
            "LMOVE",
            "queue:jobs:pending",
            "queue:jobs:processing",
            "RIGHT",
            "LEFT",
        ],
    )
    .await;
}

/// 8.2 for reference workers: they move the id first and stamp it after. A
/// sweep inside that window must not requeue the job (the reference's sweep
/// would, at once, because enqueued_at_ms is old).
#[tokio::test]
async fn a_sweep_waits_a_visibility_timeout_before_taking_an_unstamped_claim() {
    let (_server, q, mut c) = setup("jobs", opts(300)).await;
    reference_enqueue(&mut c, "jobs", "00000000000000b1", "{}").await;
    let old = (wall_ms() - 3_600_000).to_string();
    hset(
        &mut c,
        "queue:jobs:job:00000000000000b1",
        &[("enqueued_at_ms", &old)],
    )
    .await;
    // The reference worker's BLMOVE; its stamp has not landed yet.
    reference_move_to_processing(&mut c).await;
    let report = q.reclaim_stuck().await.unwrap();
    assert!(
        report.reclaimed.is_empty(),
        "the window is not a timeout: {report:?}"
    );
    // Its stamp lands; it is now a live claim.
    let now = wall_ms().to_string();
    hset(
        &mut c,
        "queue:jobs:job:00000000000000b1",
        &[
            ("status", "processing"),
            ("claimed_at_ms", &now),
            ("claim_token", "1234567890abcdef"),
        ],
    )
    .await;
    assert!(q.reclaim_stuck().await.unwrap().reclaimed.is_empty());
    assert_eq!(
        list(&mut c, "queue:jobs:processing").await,
        vec!["00000000000000b1"]
    );

    // A worker that died inside the window is recovered after the timeout.
    reference_enqueue(&mut c, "jobs", "00000000000000b2", "{}").await;
    reference_move_to_processing(&mut c).await;
    assert!(q.reclaim_stuck().await.unwrap().reclaimed.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = q.reclaim_stuck().await.unwrap();
    // b1's stamp is older than the timeout now too: both come back.
    let mut reclaimed = report.reclaimed.clone();
    reclaimed.sort();
    assert_eq!(
        reclaimed,
        vec!["00000000000000b1", "00000000000000b2"],
        "{report:?}"
    );
}

/// 8.2 (b): the reference's worst case ends with a job both in pending and
/// completed. Drive it: a sweep moved the job back to pending, then the
/// worker's stamp landed on it, then the worker completes.
#[tokio::test]
async fn no_job_ends_both_in_pending_and_completed() {
    let (_server, q, mut c) = setup("jobs", opts(5000)).await;
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    // The job is back in pending while its hash still names this claim.
    let _: () = redis::pipe()
        .cmd("LREM")
        .arg("queue:jobs:processing")
        .arg(1)
        .arg(&id)
        .cmd("LPUSH")
        .arg("queue:jobs:pending")
        .arg(&id)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        q.complete(&job, &json!("done")).await.unwrap(),
        Ack::LeaseLost
    );
    assert_eq!(q.fail(&job, "x").await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.release(&job).await.unwrap(), Ack::LeaseLost);
    // Not `extend`: extend.lua checks the token and status but not that the
    // id is still in processing, so it renews this claim (reported, issue 13).
    assert_eq!(list(&mut c, "queue:jobs:pending").await, vec![id]);
    assert!(list(&mut c, "queue:jobs:completed").await.is_empty());
    assert!(list(&mut c, "queue:jobs:pending").await.len() == 1);
}

/// 8.3: settling twice, or failing after completing, changes nothing.
#[tokio::test]
async fn every_settle_is_idempotent_and_fenced_by_the_token() {
    let (_server, q, mut c) = setup("jobs", opts(5000)).await;
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.complete(&job, &json!(1)).await.unwrap(), Ack::Completed);
    assert_eq!(q.complete(&job, &json!(2)).await.unwrap(), Ack::Duplicate);
    assert_eq!(q.fail(&job, "late").await.unwrap(), Ack::Duplicate);
    assert_eq!(
        q.fail_permanently(&job, "late").await.unwrap(),
        Ack::Duplicate
    );
    assert_eq!(q.release(&job).await.unwrap(), Ack::Duplicate);
    assert_eq!(q.extend(&job).await.unwrap(), Ack::LeaseLost);
    assert_eq!(list(&mut c, "queue:jobs:completed").await, vec![id.clone()]);
    assert!(list(&mut c, "queue:jobs:pending").await.is_empty());
    let h = hash(&mut c, &format!("queue:jobs:job:{id}")).await;
    assert_eq!(
        (h["status"].as_str(), h["result"].as_str()),
        ("completed", "1")
    );
    assert_eq!(q.stats().await.unwrap().completed_total, 1);

    // A token from another claim never matches.
    let other = q.enqueue(&json!({})).await.unwrap();
    let held = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let forged = ClaimedJob::from_claim(&other, "0123456789abcdef");
    assert_eq!(
        q.complete(&forged, &json!(1)).await.unwrap(),
        Ack::LeaseLost
    );
    assert_eq!(q.fail(&forged, "x").await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.release(&forged).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.extend(&forged).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.complete(&held, &json!(1)).await.unwrap(), Ack::Completed);
}

/// 8.4: pending and failed jobs store an empty token; an empty token must
/// never complete or fail them.
#[tokio::test]
async fn an_empty_token_never_matches() {
    let (_server, q, mut c) = setup("jobs", opts(5000).max_attempts(1)).await;
    let pending = q.enqueue(&json!({})).await.unwrap();
    let unclaimed = ClaimedJob::from_claim(&pending, "");
    assert_eq!(
        q.complete(&unclaimed, &json!(1)).await.unwrap(),
        Ack::LeaseLost
    );
    assert_eq!(q.fail(&unclaimed, "x").await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.release(&unclaimed).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.extend(&unclaimed).await.unwrap(), Ack::LeaseLost);
    assert_eq!(
        list(&mut c, "queue:jobs:pending").await,
        vec![pending.clone()]
    );

    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(q.fail(&job, "x").await.unwrap(), Ack::Failed);
    let dead = ClaimedJob::from_claim(&pending, "");
    assert_eq!(q.complete(&dead, &json!(1)).await.unwrap(), Ack::LeaseLost);
    let record = q.get_job(&pending).await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Failed));

    // Only a job in processing can be settled: a job in pending whose hash
    // somehow still holds a token is refused.
    let id = q.enqueue(&json!({})).await.unwrap();
    hset(
        &mut c,
        &format!("queue:jobs:job:{id}"),
        &[("claim_token", "00000000000000cc")],
    )
    .await;
    let stray = ClaimedJob::from_claim(&id, "00000000000000cc");
    assert_eq!(q.complete(&stray, &json!(1)).await.unwrap(), Ack::LeaseLost);
}

/// Reads `MONITOR` lines from a raw connection until `stop` is seen.
fn monitor(
    port: u16,
) -> (
    std::thread::JoinHandle<Vec<String>>,
    std::sync::mpsc::Receiver<()>,
) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap(); // +OK
        ready_tx.send(()).unwrap();
        let mut lines = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if line.contains("\"monitor-stop\"") {
                break;
            }
            lines.push(line.trim_end().to_owned());
        }
        lines
    });
    (handle, ready_rx)
}

/// One line of MONITOR output: who ran the command (`lua` for a command a
/// script ran, else the client's address) and its arguments, unescaped.
fn monitor_line(line: &str) -> (String, Vec<String>) {
    let open = line.find('[').expect(line);
    let close = open + line[open..].find(']').expect(line);
    let source = line[open + 1..close]
        .split_once(' ')
        .expect(line)
        .1
        .to_owned();
    let mut args = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next().expect(line) {
                    'n' => arg.push(b'\n'),
                    'r' => arg.push(b'\r'),
                    't' => arg.push(b'\t'),
                    'a' => arg.push(7),
                    'b' => arg.push(8),
                    'x' => {
                        let hex: String = chars.by_ref().take(2).collect();
                        arg.push(u8::from_str_radix(&hex, 16).expect(line));
                    }
                    other => arg.extend(other.to_string().bytes()),
                },
                other => arg.extend(other.to_string().bytes()),
            }
        }
        args.push(String::from_utf8(arg).expect(line));
    }
    (source, args)
}

/// A command a client sent, and the commands Redis ran inside it: MONITOR
/// shows a script call, then, marked `lua`, each command its script runs.
#[derive(Debug)]
struct Call {
    command: Vec<String>,
    inside: Vec<Vec<String>>,
}

impl Call {
    fn name(&self) -> &str {
        &self.command[0]
    }

    /// The commands run inside this call named `name`.
    fn ran<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Vec<String>> + 'a {
        self.inside
            .iter()
            .filter(move |c| c[0].eq_ignore_ascii_case(name))
    }

    /// Whether an HSET inside this call set `field` of `key` to `value`.
    fn set(&self, key: &str, field: &str, value: &str) -> bool {
        self.ran("HSET").any(|c| {
            c[1] == key
                && c[2..]
                    .chunks(2)
                    .any(|pair| pair[0] == field && pair.get(1).is_some_and(|v| v == value))
        })
    }
}

/// MONITOR lines grouped by the client command that issued them.
fn calls(lines: &[String]) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    for line in lines {
        let (source, args) = monitor_line(line);
        if source == "lua" {
            let call = calls.last_mut().expect("a script command before any call");
            call.inside.push(args);
        } else {
            calls.push(Call {
                command: args,
                inside: Vec::new(),
            });
        }
    }
    calls
}

/// The MONITOR reading above: arguments unescaped, and commands grouped by
/// the call that ran them, so an event published by a second script call is
/// never counted as the first one's.
#[test]
fn monitor_lines_group_by_the_call_that_ran_them() {
    let lines: Vec<String> = [
        r#"1.1 [0 127.0.0.1:5000] "EVALSHA" "abc" "5" "queue:jobs:job:x""#,
        r#"1.2 [0 lua] "TIME""#,
        r#"1.3 [0 lua] "HSET" "queue:jobs:job:x" "status" "completed""#,
        r#"1.4 [0 127.0.0.1:5000] "EVALSHA" "def" "0""#,
        r#"1.5 [0 lua] "PUBLISH" "queue:jobs:events" "{\"id\":\"x\",\"status\":\"completed\"}""#,
        r#"1.6 [0 127.0.0.1:5001] "PING""#,
        r#"1.7 [0 127.0.0.1:5001] "SET" "k" "a\x00b\n""#,
    ]
    .map(String::from)
    .to_vec();
    let calls = calls(&lines);
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!(calls[0].name(), "EVALSHA");
    assert!(calls[0].set("queue:jobs:job:x", "status", "completed"));
    assert_eq!(
        calls[0].ran("PUBLISH").count(),
        0,
        "published by the next call"
    );
    let event: serde_json::Value =
        serde_json::from_str(&calls[1].ran("PUBLISH").next().unwrap()[2]).unwrap();
    assert_eq!(event, json!({"id": "x", "status": "completed"}));
    assert!(calls[2].inside.is_empty());
    assert_eq!(calls[3].command, ["SET", "k", "a\u{0}b\n"]);
}

/// 8.5 and 8.9: the event is published, and the job written, inside the same
/// script as the state change: MONITOR shows every PUBLISH, HSET and LPUSH
/// coming from Lua, none from the client, and each PUBLISH inside the very
/// script call whose writes make the change it announces.
#[tokio::test]
async fn events_and_writes_happen_inside_the_scripts() {
    let server = RedisServer::start();
    let q = queue(&server, "jobs", opts(5000).max_attempts(2)).await;
    let (handle, ready) = monitor(server.port());
    ready.recv().unwrap();
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&job, "x").await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.complete(&job, &json!(1)).await.unwrap();
    server.command(&["ECHO", "monitor-stop"]);
    let lines = handle.join().unwrap();
    let writes: Vec<&String> = lines
        .iter()
        .filter(|l| {
            ["\"PUBLISH\"", "\"HSET\"", "\"LPUSH\"", "\"LREM\""]
                .iter()
                .any(|c| l.contains(c))
        })
        .collect();
    assert!(
        writes.iter().filter(|l| l.contains("\"PUBLISH\"")).count() == 2,
        "{lines:#?}"
    );
    for line in &writes {
        assert!(line.contains("lua]"), "not from a script: {line}");
    }

    let calls = calls(&lines);
    let key = format!("queue:jobs:job:{id}");
    let scripts: Vec<&Call> = calls.iter().filter(|c| !c.inside.is_empty()).collect();
    for call in &scripts {
        assert!(
            ["EVALSHA", "EVAL"].contains(&call.name()),
            "commands ran inside {:?}",
            call.command
        );
    }
    // The enqueue: the hash and the pending entry, in one call, announced
    // by nobody.
    let enqueue = scripts
        .iter()
        .find(|c| c.set(&key, "status", "pending") && c.ran("LPUSH").next().is_some())
        .unwrap_or_else(|| panic!("no call wrote the job: {calls:#?}"));
    assert!(
        enqueue
            .ran("LPUSH")
            .any(|c| c[1] == "queue:jobs:pending" && c[2] == id),
        "{enqueue:#?}"
    );
    assert_eq!(enqueue.ran("PUBLISH").count(), 0, "{enqueue:#?}");
    // Each event comes from the call that made the change it names: out of
    // processing (LREM) into the state it announces (HSET status), plus the
    // completed history for a completion.
    let mut announced = Vec::new();
    for call in &scripts {
        let published: Vec<&Vec<String>> = call.ran("PUBLISH").collect();
        if published.is_empty() {
            continue;
        }
        assert_eq!(published.len(), 1, "one event per call: {call:#?}");
        assert_eq!(published[0][1], "queue:jobs:events");
        let event: serde_json::Value = serde_json::from_str(&published[0][2]).unwrap();
        assert_eq!(event["id"], id.as_str(), "{call:#?}");
        let status = event["status"].as_str().unwrap().to_owned();
        assert!(
            call.ran("LREM")
                .any(|c| c[1] == "queue:jobs:processing" && c[3] == id),
            "{status} announced by a call that did not take the job out of processing: {call:#?}"
        );
        let new_status = match status.as_str() {
            "retry" => "pending",
            other => other,
        };
        assert!(
            call.set(&key, "status", new_status),
            "{status} announced by a call that did not set status {new_status}: {call:#?}"
        );
        if status == "completed" {
            assert!(
                call.ran("LPUSH")
                    .any(|c| c[1] == "queue:jobs:completed" && c[2] == id),
                "{call:#?}"
            );
        }
        announced.push(status);
    }
    assert_eq!(announced, ["retry", "completed"]);
    // Both claims took the job and stamped it in one call too: off the end
    // of pending (one LTRIM for the batch), onto processing, stamped.
    let claims = scripts
        .iter()
        .filter(|c| {
            c.ran("LTRIM").any(|m| m[1] == "queue:jobs:pending")
                && c.ran("LPUSH")
                    .any(|m| m[1] == "queue:jobs:processing" && m[2..].contains(&id))
                && c.set(&key, "status", "processing")
        })
        .count();
    assert_eq!(claims, 2, "{calls:#?}");
}

/// 8.6: counters live in Redis and are updated by the scripts, so two
/// processes report the same fleet-wide totals.
#[tokio::test]
async fn two_processes_report_the_same_fleet_wide_totals() {
    let server = RedisServer::start();
    let a = queue(&server, "jobs", opts(100).max_attempts(2)).await;
    let b = queue(&server, "jobs", opts(100).max_attempts(2)).await;
    a.enqueue_many(&[json!(1), json!(2), json!(3), json!(4)])
        .await
        .unwrap();
    let j = b.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = b.complete(&j, &json!(1)).await.unwrap();
    let j = a.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = a.fail(&j, "x").await.unwrap(); // retried
    let j = b.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = b.fail_permanently(&j, "x").await.unwrap();
    let _stuck = a.claim(Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(b.reclaim_stuck().await.unwrap().reclaimed.len(), 1);
    let (sa, sb) = (a.stats().await.unwrap(), b.stats().await.unwrap());
    assert_eq!(sa, sb);
    assert_eq!(
        (
            sa.enqueued_total,
            sa.completed_total,
            sa.failed_total,
            sa.reclaimed_total,
            sa.retried_total
        ),
        (4, 1, 1, 1, 1)
    );
}

/// 8.8: every timestamp comes from the Redis server's clock. Stored times
/// fall between two reads of Redis `TIME`, and no command this client sends
/// carries a timestamp of its own clock (MONITOR shows every argument).
#[tokio::test]
async fn timestamps_come_from_the_redis_clock() {
    let (server, q, mut c) = setup("jobs", opts(100).max_attempts(2)).await;
    let redis_ms = |t: (u64, u64)| t.0 * 1000 + t.1 / 1000;
    let (handle, ready) = monitor(server.port());
    ready.recv().unwrap();
    let before = redis_ms(redis::cmd("TIME").query_async(&mut c).await.unwrap());
    let id = q.enqueue(&json!({})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.fail(&job, "x").await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    let _ = q.extend(&job).await.unwrap();
    let _ = q.complete(&job, &json!(1)).await.unwrap();
    let _ = q.reclaim_stuck().await.unwrap();
    let after = redis_ms(redis::cmd("TIME").query_async(&mut c).await.unwrap());
    server.command(&["ECHO", "monitor-stop"]);
    let lines = handle.join().unwrap();

    let record = q.get_job(&id).await.unwrap().unwrap();
    for field in [
        "enqueued_at_ms",
        "claimed_at_ms",
        "last_error_at_ms",
        "completed_at_ms",
    ] {
        let t = record.timestamp_ms(field).unwrap().unwrap();
        assert!(
            (before..=after).contains(&t),
            "{field} = {t} outside Redis TIME [{before}, {after}]"
        );
    }
    let now = wall_ms();
    let client_lines: Vec<&String> = lines.iter().filter(|l| !l.contains("lua]")).collect();
    assert!(
        client_lines.iter().any(|l| l.contains("\"EVALSHA\"")),
        "{lines:#?}"
    );
    for line in client_lines {
        for word in line.split(|ch: char| !ch.is_ascii_digit()) {
            if word.len() == 13 {
                let n: u64 = word.parse().unwrap();
                assert!(
                    n.abs_diff(now) > 86_400_000,
                    "client sent a timestamp: {line}"
                );
            }
        }
    }
}

/// 8.9: processing entries whose hash is gone, or partial, never stick.
#[tokio::test]
async fn processing_entries_without_a_usable_hash_are_swept_out_with_a_reason() {
    let (_server, q, mut c) = setup("jobs", opts(200)).await;
    // An id with no hash at all (expired or purged).
    exec(
        &mut c,
        &["LPUSH", "queue:jobs:processing", "00000000000000d1"],
    )
    .await;
    // A partial hash, as a reference claim stamp leaves after a purge.
    hset(
        &mut c,
        "queue:jobs:job:00000000000000d2",
        &[
            ("status", "processing"),
            ("claim_token", "abcdefabcdefabcd"),
        ],
    )
    .await;
    exec(
        &mut c,
        &["LPUSH", "queue:jobs:processing", "00000000000000d2"],
    )
    .await;

    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.dropped, vec!["00000000000000d1"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.reclaimed, vec!["00000000000000d2"]);
    // Claimed again, it cannot run (no payload): failed with the reason.
    assert!(q.claim(Duration::ZERO).await.unwrap().is_none());
    let record = q.get_job("00000000000000d2").await.unwrap().unwrap();
    assert_eq!(record.status(), Some(JobStatus::Failed));
    assert!(
        record
            .last_error()
            .unwrap()
            .contains("payload field is missing"),
        "{:?}",
        record.last_error()
    );
    assert!(list(&mut c, "queue:jobs:processing").await.is_empty());
    assert!(list(&mut c, "queue:jobs:pending").await.is_empty());
}

/// 8.13: the retry decision uses the job's stored max_attempts, so workers
/// configured differently agree.
#[tokio::test]
async fn the_retry_decision_uses_the_stored_max_attempts() {
    let server = RedisServer::start();
    let producer = queue(&server, "jobs", opts(5000).max_attempts(3)).await;
    let lenient = queue(&server, "jobs", opts(5000).max_attempts(10)).await;
    let id = producer
        .submit(
            NewJob::new(&json!({}))
                .unwrap()
                .options(EnqueueOptions::new().max_attempts(1)),
        )
        .await
        .unwrap();
    let job = lenient.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(
        lenient.fail(&job, "x").await.unwrap(),
        Ack::Failed,
        "stored limit 1 wins over 10"
    );
    assert_eq!(producer.list_failed(0..1).await.unwrap(), vec![id]);

    // A reference job (no stored limit) uses the queue default of the
    // worker that fails it.
    let mut c = server.conn().await;
    reference_enqueue(&mut c, "jobs", "00000000000000e1", "{}").await;
    let strict = queue(&server, "jobs", opts(5000).max_attempts(1)).await;
    let job = strict.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(strict.fail(&job, "x").await.unwrap(), Ack::Failed);
}

/// 8.14: a dead letter keeps its hash as long as its id is listed; the failed
/// history has its own cap, and trimming deletes the hashes trimmed off.
#[tokio::test]
async fn dead_letters_keep_their_hash_while_listed_and_have_their_own_cap() {
    let server = RedisServer::start();
    let q = queue(
        &server,
        "jobs",
        opts(5000)
            .completed_ttl(Duration::from_secs(1))
            .failed_history(2)
            .completed_history(50),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(q.enqueue(&json!({"n": n})).await.unwrap());
        let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
        let _ = q.fail_permanently(&job, "dead").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1300)).await; // past completed_ttl
    assert_eq!(
        q.list_failed(0..10).await.unwrap(),
        vec![ids[2].clone(), ids[1].clone()]
    );
    assert!(
        q.get_job(&ids[0]).await.unwrap().is_none(),
        "trimmed off, hash deleted"
    );
    for id in &ids[1..] {
        let record = q
            .get_job(id)
            .await
            .unwrap()
            .expect("listed dead letters keep their hash");
        assert_eq!(record.status(), Some(JobStatus::Failed));
    }
    assert_eq!(QueueOptions::default().failed_history, 10_000);
}

/// Redis < 6.2 has no BLMOVE: the BRPOPLPUSH fallback claims, wakes and
/// stamps jobs the same way (forced here, as the server is newer).
#[tokio::test]
async fn the_brpoplpush_fallback_claims_and_wakes_like_blmove() {
    let server = RedisServer::start();
    let conn = Connection::connect_with(
        server.url().as_str(),
        jobqueue::connection::ConnectionOptions::new().force_legacy_claim(true),
    )
    .await
    .unwrap();
    assert!(conn.legacy_claim());
    let q = Queue::new_with(&conn, "jobs", opts(5000)).unwrap();
    let mut c = server.conn().await;
    exec(&mut c, &["CONFIG", "RESETSTAT"]).await;

    let id = q.enqueue(&json!({"n": 1})).await.unwrap();
    let job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((job.id(), job.attempt()), (id.as_str(), 1));
    assert_eq!(q.complete(&job, &json!(1)).await.unwrap(), Ack::Completed);

    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.claim(Duration::from_secs(10)).await.unwrap() }
    });
    // The claim is blocked in BRPOPLPUSH before the job arrives.
    let blocked = eventually(Duration::from_secs(10), || async {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut c.clone())
            .await
            .unwrap();
        info.lines().any(|l| l.trim() == "blocked_clients:1")
    })
    .await;
    assert!(blocked, "the claim never blocked");
    let id = q.enqueue(&json!({"n": 2})).await.unwrap();
    let job = waiting.await.unwrap().expect("woken by the enqueue");
    assert_eq!(job.id(), id);
    let h = hash(&mut c, &format!("queue:jobs:job:{id}")).await;
    assert_eq!(
        (h["status"].as_str(), h["claim_token"].as_str()),
        ("processing", job.token())
    );
    assert_eq!(q.complete(&job, &json!(2)).await.unwrap(), Ack::Completed);

    let info = commandstats(&mut c).await;
    assert!(command_calls(&info, "brpoplpush") > 0, "{info}");
    assert_eq!(command_calls(&info, "blmove"), 0, "{info}");
    assert_eq!(command_calls(&info, "lmove"), 0, "{info}");
}

/// A lease names its claim: once a reference sweeper has taken our job back
/// and a reference worker holds it, our expired lease must not take it from
/// that worker.
#[tokio::test]
async fn an_expired_lease_of_an_ended_claim_leaves_the_new_holder_alone() {
    let (_server, q, mut c) = setup("jobs", opts(5000)).await;
    let id = q
        .submit(
            NewJob::new(&json!({}))
                .unwrap()
                .options(EnqueueOptions::new().visibility(Duration::from_millis(200))),
        )
        .await
        .unwrap();
    let ours = q.claim(Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    // A reference sweep takes it back (no attempt check, lease untouched)...
    let key = format!("queue:jobs:job:{id}");
    exec(&mut c, &["LREM", "queue:jobs:processing", "1", &id]).await;
    exec(&mut c, &["LPUSH", "queue:jobs:pending", &id]).await;
    hset(
        &mut c,
        &key,
        &[
            ("status", "pending"),
            ("claim_token", ""),
            ("claimed_at_ms", "0"),
        ],
    )
    .await;
    // ...and a reference worker claims it.
    reference_move_to_processing(&mut c).await;
    let now = wall_ms().to_string();
    hset(
        &mut c,
        &key,
        &[
            ("status", "processing"),
            ("claimed_at_ms", &now),
            ("claim_token", "feedfeedfeedfeed"),
        ],
    )
    .await;

    let report = q.reclaim_stuck().await.unwrap();
    assert!(
        report.reclaimed.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        list(&mut c, "queue:jobs:processing").await,
        vec![id.clone()]
    );
    assert_eq!(hash(&mut c, &key).await["claim_token"], "feedfeedfeedfeed");
    assert_eq!(lease_count(&mut c).await, 0, "the stale lease is gone");
    assert_eq!(q.complete(&ours, &json!(1)).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.fail(&ours, "x").await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.release(&ours).await.unwrap(), Ack::LeaseLost);
    assert_eq!(q.extend(&ours).await.unwrap(), Ack::LeaseLost);
    assert_eq!(hash(&mut c, &key).await["claim_token"], "feedfeedfeedfeed");
    assert_eq!(lease_count(&mut c).await, 0, "no lease for the stale claim");
}

/// The sweep's walk covers the whole processing list in one pass, even when
/// a whole window of entries is removed.
#[tokio::test]
async fn one_sweep_pass_clears_every_orphaned_processing_entry() {
    let (_server, q, mut c) = setup("jobs", opts(5000)).await;
    let orphans: Vec<String> = (0..1200).map(|n| format!("{n:016x}")).collect();
    for chunk in orphans.chunks(400) {
        let mut args = vec!["LPUSH", "queue:jobs:processing"];
        args.extend(chunk.iter().map(String::as_str));
        exec(&mut c, &args).await;
    }
    let report = q.reclaim_stuck().await.unwrap();
    assert_eq!(report.dropped.len(), 1200);
    assert!(list(&mut c, "queue:jobs:processing").await.is_empty());
}

/// The sweep's "first seen unstamped" mark belongs to one claim: a claim of
/// ours clears it, so no later window inherits an old sighting.
#[tokio::test]
async fn a_claim_clears_the_sweeps_unstamped_mark() {
    let (_server, q, mut c) = setup("jobs", opts(5000)).await;
    reference_enqueue(&mut c, "jobs", "00000000000000d9", "{}").await;
    reference_move_to_processing(&mut c).await;
    let _ = q.reclaim_stuck().await.unwrap();
    let key = "queue:jobs:job:00000000000000d9";
    assert!(hash(&mut c, key).await.contains_key("unstamped_seen"));
    // The reference worker gives it back; our worker claims it.
    exec(
        &mut c,
        &["LREM", "queue:jobs:processing", "1", "00000000000000d9"],
    )
    .await;
    exec(&mut c, &["LPUSH", "queue:jobs:pending", "00000000000000d9"]).await;
    let _job = q.claim(Duration::ZERO).await.unwrap().unwrap();
    assert!(!hash(&mut c, key).await.contains_key("unstamped_seen"));
}
