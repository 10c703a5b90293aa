//! The relayer: every [`RELAY_INTERVAL`], for each served queue, takes the
//! ends of batch children and chain steps from the queue's outbox to their
//! batch or next step ([`crate::workflow`]). Runners relaying at once stay
//! correct: a relay repeated changes nothing. A last pass runs at shutdown,
//! after the running jobs ended, so their ends leave with this runner.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::retry::Backoff;
use crate::workflow::RELAY_INTERVAL;
use crate::workflow::relay::relay;

pub(super) async fn relay_loop(shared: Arc<Shared>, stop: CancellationToken) {
    // Per queue: failures in a row, and when to try it next, so a queue
    // whose relay keeps failing does not slow the others down.
    let mut failures = vec![0_u32; shared.queues.len()];
    let mut next = vec![tokio::time::Instant::now(); shared.queues.len()];
    loop {
        let last = tokio::select! {
            () = tokio::time::sleep(RELAY_INTERVAL) => false,
            () = stop.cancelled() => true,
        };
        let now = tokio::time::Instant::now();
        for (i, q) in shared.queues.iter().enumerate() {
            if !last && now < next[i] {
                continue;
            }
            match relay(&shared.client, &q.queue).await {
                Ok(r) => {
                    failures[i] = 0;
                    if r.entries > 0 {
                        tracing::debug!(
                            queue = q.queue.name(),
                            relayed = r.entries,
                            batches_done = r.batches_done,
                            chain_steps = r.steps,
                            "outbox relayed"
                        );
                    }
                }
                Err(e) => {
                    failures[i] = failures[i].saturating_add(1);
                    next[i] = now + Backoff::LOOP.delay(failures[i]);
                    tracing::warn!(queue = q.queue.name(), error = %e, "relaying the outbox failed; retrying");
                }
            }
        }
        if last {
            return;
        }
    }
}
