//! jobqueue on a Redis Cluster: layout detection, the whole job lifecycle
//! across primaries, failover with replicas, the dashboard and the CLI.

use std::time::Duration;

use jobqueue::{Ack, KeyLayout, QueueOptions};
use jobqueue_tests::*;

#[tokio::test]
async fn a_cluster_is_detected_and_each_queue_lives_in_one_slot() {
    let cluster = RedisCluster::start(3, 0);
    let conn = jobqueue::Connection::open(cluster.url().as_str())
        .await
        .unwrap();
    assert!(conn.is_cluster());
    let mut owners = std::collections::BTreeSet::new();
    for name in ["email", "billing", "reports", "images", "search", "audit"] {
        let q = jobqueue::Queue::new(&conn, QueueOptions::new(name)).unwrap();
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
    let err = jobqueue::Queue::new(&conn, QueueOptions::new("x").layout(KeyLayout::Reference))
        .unwrap_err();
    assert!(err.to_string().contains("CROSSSLOT"), "{err}");
}
