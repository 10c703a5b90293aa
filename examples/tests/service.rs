//! The service example as a process, against a private Redis: once its
//! jobs have ended, both of its metrics pages tell the same story. The
//! fleet-wide page (read from Redis) and this process's page (the runner's
//! in-process counters, through metrics-exporter-prometheus) count the same
//! completed jobs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobqueue_tests::{PortReservation, RedisServer};

mod common;

/// The example's process, killed on drop.
struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the example on `redis` and waits for it to print its metrics
/// URLs (it prints them once it listens).
fn service(redis: &RedisServer) -> Service {
    // A free loopback port (the reservation is released at once, for the
    // example to bind).
    let port = PortReservation::new().port();
    let mut child = Command::new(common::example_executable("service"))
        .env("REDIS_URL", redis.url())
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|line| line.starts_with("metrics on "))
        .expect("the example prints its metrics URLs");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}/metrics "))
            && banner.contains(&format!("http://127.0.0.1:{port}/metrics/process")),
        "{banner}"
    );
    // Whatever it prints later must not fill the pipe and stall it.
    std::thread::spawn(move || lines.for_each(drop));
    Service { child, port }
}

/// `GET path` over HTTP/1.1; returns the status, the content type and the
/// body.
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The samples of an exposition page: (name, labels, value) for every line
/// that is not a comment. Label values are unescaped (`\\`, `\"`, `\n`).
fn samples(page: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let (name, mut rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut labels = BTreeMap::new();
            while !rest.starts_with('}') {
                let (label, after) = rest.split_once("=\"").unwrap();
                let mut text = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().unwrap() {
                        (_, '\\') => text.push(match chars.next().unwrap().1 {
                            'n' => '\n',
                            c => c,
                        }),
                        (i, '"') => break i,
                        (_, c) => text.push(c),
                    }
                };
                labels.insert(label.to_owned(), text);
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
            (name.to_owned(), labels, value)
        })
        .collect()
}

/// The sum of the samples `name` whose `queue` label is `queue`.
fn total(page: &str, name: &str, queue: &str) -> f64 {
    samples(page)
        .iter()
        .filter(|(n, labels, _)| {
            n == name && labels.get("queue").map(String::as_str) == Some(queue)
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn both_metrics_pages_count_the_jobs_the_service_completed() {
    let redis = RedisServer::start();
    let service = service(&redis);

    // The example enqueues three mails, one to an address that can never
    // be sent: wait until all three have ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    let fleet = loop {
        let (status, content_type, page) = get(service.port, "/metrics");
        assert_eq!(status, 200, "{page}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let enqueued = total(&page, "jobqueue_queue_enqueued_total", "email");
        let ended = total(&page, "jobqueue_queue_processed_total", "email")
            + total(&page, "jobqueue_queue_failed_total", "email");
        if enqueued == 3.0 && ended == enqueued {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the mails never all ended:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let completed = total(&fleet, "jobqueue_queue_processed_total", "email");
    assert_eq!(completed, 2.0, "two of the three addresses can be sent");
    assert_eq!(total(&fleet, "jobqueue_queue_failed_total", "email"), 1.0);
    assert_eq!(
        total(&fleet, "jobqueue_queue_jobs", "email"),
        // completed and failed histories: 2 + 1; nothing waits or runs
        3.0
    );

    let (status, _, process) = get(service.port, "/metrics/process");
    assert_eq!(status, 200, "{process}");
    assert_eq!(
        total(&process, "jobqueue_jobs_completed_total", "email"),
        completed,
        "the runner's own counter agrees with the fleet's:\n{process}"
    );
    assert!(
        process.contains("service_welcome_mails_sent_total 2"),
        "the application's own metric is on the same page:\n{process}"
    );
}
