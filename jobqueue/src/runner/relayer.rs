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
    let mut failures: u32 = 0;
    loop {
        let pause = if failures == 0 {
            RELAY_INTERVAL
        } else {
            RELAY_INTERVAL.max(Backoff::LOOP.delay(failures))
        };
        let last = tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = stop.cancelled() => true,
        };
        let mut failed = false;
        for q in &shared.queues {
            match relay(&shared.client, &q.queue).await {
                Ok(r) if r.entries > 0 => tracing::debug!(
                    queue = q.queue.name(),
                    relayed = r.entries,
                    batches_done = r.batches_done,
                    chain_steps = r.steps,
                    "outbox relayed"
                ),
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(queue = q.queue.name(), error = %e, "relaying the outbox failed; retrying");
                }
            }
        }
        if last {
            return;
        }
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
    }
}
