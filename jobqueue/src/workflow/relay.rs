//! The relay: takes the outbox entries of a queue (jobs of batches and
//! chains that ended) to their batch, or writes the chain's next step, then
//! deletes them. Every runner relays the queues it serves every
//! [`RELAY_INTERVAL`]; relaying an entry twice (two runners at once, a
//! crash between the relay and the delete) changes nothing, because a
//! batch records each child once and a step's id is derived from its
//! chain's.

use std::collections::BTreeMap;
use std::time::Duration;

use super::chain::{ChainSpec, step_fields, step_id};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::queue::{ChildEnd, NewJob, OutboxEntry, Queue, Recorded};

/// How often a runner relays the outboxes of the queues it serves.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(200);

/// Most outbox entries one relay pass takes from a queue.
const PASS: usize = 500;

/// What one pass over a queue's outbox did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relayed {
    /// Entries relayed and deleted.
    pub(crate) entries: u64,
    /// Batches this pass completed.
    pub(crate) batches_done: u64,
    /// Chain steps written.
    pub(crate) steps: u64,
}

/// Relays up to [`PASS`] entries of `queue`'s outbox. An entry that cannot
/// be relayed because it is malformed (written by hand: an entry, a batch
/// reference or a chain that does not parse) is logged as an error and
/// deleted; one whose batch is gone is logged and deleted; one that fails
/// on a Redis error stays, moved behind the others, for a later pass.
pub(crate) async fn relay(client: &Client, queue: &Queue) -> Result<Relayed> {
    let entries = queue.outbox(PASS).await?;
    let mut done = Relayed::default();
    if entries.is_empty() {
        return Ok(done);
    }
    let mut relayed: Vec<&OutboxEntry> = Vec::with_capacity(entries.len());
    let mut kept: Vec<&OutboxEntry> = Vec::new();
    // Batch entries, grouped by batch: one call per batch per pass.
    let mut batches: BTreeMap<(&str, &str), Vec<&OutboxEntry>> = BTreeMap::new();
    let mut first_error = None;
    for entry in &entries {
        if entry.outcome.is_empty() {
            // Did not decode (logged by `outbox`): nothing to relay.
            relayed.push(entry);
            continue;
        }
        if !entry.chain.is_empty() && entry.outcome == "ok" {
            match next_step(client, entry).await {
                Ok(()) => done.steps += 1,
                Err(e) if matches!(e, Error::Redis(_)) => {
                    kept.push(entry);
                    first_error.get_or_insert(e);
                    continue;
                }
                Err(e) => {
                    tracing::error!(
                        queue = queue.name(),
                        job = %entry.id,
                        error = %e,
                        "the next step of a chain could not be written; the chain stops here"
                    );
                    let reason = format!("the next step could not be written: {e}");
                    if let Err(e) = queue.mark_chain_stopped(&entry.id, &reason).await {
                        kept.push(entry);
                        first_error.get_or_insert(e);
                        continue;
                    }
                }
            }
        }
        if entry.batch.is_empty() {
            relayed.push(entry);
            continue;
        }
        match entry.batch.rsplit_once('/') {
            Some((home, id)) if !home.is_empty() && !id.is_empty() => {
                batches.entry((home, id)).or_default().push(entry);
            }
            _ => {
                tracing::error!(queue = queue.name(), job = %entry.id, batch = %entry.batch, "a job names a batch that cannot be parsed; its end is not recorded");
                relayed.push(entry);
            }
        }
    }
    for ((home, id), children) in batches {
        let home_queue = match client.queue(home) {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(queue = queue.name(), batch = %format!("{home}/{id}"), error = %e, "a job names a batch on a queue that cannot exist; its end is not recorded");
                relayed.extend(children);
                continue;
            }
        };
        let ends: Vec<ChildEnd> = children
            .iter()
            .map(|e| ChildEnd {
                id: e.id.clone(),
                queue: queue.name().to_owned(),
                outcome: e.outcome.clone(),
                reason: e.detail.clone(),
            })
            .collect();
        match home_queue.batch_record(id, &ends).await {
            Ok(Recorded::Batch {
                completed,
                unreleased,
                ..
            }) => {
                if completed {
                    done.batches_done += 1;
                    tracing::info!(queue = home, batch = id, "batch done: callbacks released");
                }
                if !unreleased.is_empty() {
                    tracing::error!(queue = home, batch = id, callbacks = ?unreleased, "batch done, but these callbacks were no longer waiting (cancelled or deleted): not released");
                }
                relayed.extend(children);
            }
            Ok(Recorded::NoBatch) => {
                tracing::warn!(queue = queue.name(), batch = %format!("{home}/{id}"), jobs = children.len(), "children ended after their batch expired (or it was never written); not recorded");
                relayed.extend(children);
            }
            Err(e) => {
                tracing::warn!(queue = queue.name(), batch = %format!("{home}/{id}"), error = %e, "recording children in their batch failed; kept for a later pass");
                kept.extend(children);
                first_error.get_or_insert(e);
            }
        }
    }
    done.entries = queue.outbox_done(&relayed).await?;
    queue.outbox_defer(&kept).await?;
    match first_error {
        Some(e) if done.entries == 0 => Err(e),
        _ => Ok(done),
    }
}

/// Writes the step after the one that completed in `entry`,
/// with its result as the payload, to the physical queue the chain chose
/// for it when it was built. The step's id is derived from the chain's, so
/// when it exists already (a repeated relay) nothing is written.
async fn next_step(client: &Client, entry: &OutboxEntry) -> Result<()> {
    let spec: ChainSpec = serde_json::from_str(&entry.chain)
        .map_err(|e| Error::malformed(format!("chain of job {}", entry.id), e.to_string()))?;
    let Some((next, rest)) = spec.next.split_first() else {
        return Ok(());
    };
    let step = spec.step + 1;
    let id = step_id(&spec.id, step);
    let fields = step_fields(&spec.id, step, spec.of, rest)?;
    let job = NewJob::from_json(entry.detail.clone())
        .name(next.job.clone())
        .options(next.options(id.clone()))
        .context_fields(&fields);
    let target = client.queue(&next.queue)?;
    target.submit_all(vec![job]).await?;
    Ok(())
}
