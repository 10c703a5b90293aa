//! Redis with a password, and over TLS: both work, and the password never
//! shows in an error, a `Debug` print or a log line.

use std::time::Duration;

use jobqueue::connection::{Connection, ConnectionOptions};
use jobqueue::queue::{Ack, Queue};
use jobqueue_tests::*;
use serde_json::json;

const PASSWORD: &str = "hunter2-correct-horse";

async fn round_trip(url: &str) {
    let q = Queue::connect(url, "sec").await.unwrap();
    let id = q.enqueue(&json!({"n": 1})).await.unwrap();
    let job = q.claim(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(job.id(), id);
    assert_eq!(
        q.complete(&job, &json!("ok")).await.unwrap(),
        Ack::Completed
    );
}

#[tokio::test]
async fn a_password_protected_redis_works_and_the_password_never_leaks() {
    let server = RedisServer::builder()
        .args(["--requirepass", PASSWORD])
        .start_with_auth(PASSWORD);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port());
    round_trip(&url).await;
    let conn = Connection::connect(url.as_str()).await.unwrap();
    assert!(!format!("{conn:?}").contains(PASSWORD), "{conn:?}");

    let wrong = format!("redis://:not-{PASSWORD}@127.0.0.1:{}/", server.port());
    let err = Connection::connect(wrong.as_str()).await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
    let none = format!("redis://127.0.0.1:{}/", server.port());
    let err = Queue::connect(&none, "jobs").await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("auth"),
        "says what is wrong: {err}"
    );
}

#[test]
fn retry_logs_while_redis_is_down_name_the_address_not_the_password() {
    let ((), logs) = with_captured_logs(async {
        let mut server = RedisServer::start();
        let port = server.port();
        server.kill();
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}/");
        let options = ConnectionOptions::new().startup_wait(Duration::from_millis(700));
        let err = Connection::connect_with(url.as_str(), options)
            .await
            .unwrap_err();
        assert!(!err.to_string().contains(PASSWORD));
    });
    assert!(logs.contains("Redis is unreachable; retrying"), "{logs}");
    assert!(logs.contains("127.0.0.1"), "the address is named: {logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn rediss_urls_connect_over_tls_with_a_password() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    // Held until the server listens on it: no other test can take it meanwhile.
    let tls_reservation = PortReservation::new();
    let tls_port = tls_reservation.port();
    let server = RedisServer::builder()
        .args([
            "--requirepass",
            PASSWORD,
            "--tls-port",
            &tls_port.to_string(),
        ])
        .args([
            "--tls-cert-file",
            cert_path.to_str().unwrap(),
            "--tls-key-file",
            key_path.to_str().unwrap(),
        ])
        .args([
            "--tls-ca-cert-file",
            cert_path.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ])
        .start_with_auth(PASSWORD);
    drop(tls_reservation);
    let mut plain =
        redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
    let tls_config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("tls-port")
        .query_async(&mut plain)
        .await
        .unwrap();
    assert_eq!(tls_config, ["tls-port".to_owned(), tls_port.to_string()]);
    // `#insecure`: the test's certificate is self-signed.
    round_trip(&format!(
        "rediss://:{PASSWORD}@127.0.0.1:{tls_port}/#insecure"
    ))
    .await;
    // The plain port refuses TLS, and TLS is what the rediss URL spoke.
    let plain = format!("rediss://:{PASSWORD}@127.0.0.1:{}/#insecure", server.port());
    assert!(
        Connection::connect(plain.as_str()).await.is_err(),
        "TLS to a plain port must fail"
    );
}
