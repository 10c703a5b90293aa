//! README's complete program, as a process against a private Redis: it
//! defines, enqueues, runs and awaits a job, prints the result and exits.

use std::process::Command;
use std::time::Duration;

use jobqueue_tests::{RedisServer, ServerExt};

mod common;

#[test]
fn the_quickstart_program_runs_its_job_and_exits() {
    let redis = RedisServer::start();
    let exe = common::example_executable("quickstart");
    let mut child = Command::new(exe)
        .env("REDIS_URL", redis.url())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the example runs");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the quickstart program did not exit within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);

    // The result line, with the job's id and the payload's address.
    let sent = stdout
        .lines()
        .find_map(|line| line.strip_prefix("sent "))
        .unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    let (id, to) = sent.split_once(':').expect("id:address");
    assert_eq!(to, "alice@example.com");
    // Its logs: the runner's start and the handler's line, without colour
    // codes (the output is a pipe, not a terminal).
    assert!(stdout.contains("runner started"), "{stdout}");
    assert!(stdout.contains("sending a welcome"), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}'),
        "colour codes in a pipe:\n{stdout}"
    );
    // No hint about missing logs: it installed a subscriber.
    assert!(!stderr.contains("no tracing subscriber"), "{stderr}");

    // In Redis: the job completed, with the receipt as its result.
    let completed = redis.cli(&["LRANGE", "queue:email:completed", "0", "-1"]);
    assert_eq!(completed.trim(), id);
    let key = format!("queue:email:job:{id}");
    assert_eq!(redis.cli(&["HGET", &key, "status"]).trim(), "completed");
    let result = redis.cli(&["HGET", &key, "result"]);
    assert!(result.contains(sent), "{result}");
}
