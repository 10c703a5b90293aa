//! Slots: what one running job holds, a permit of the runner's global limit
//! and one of its queue's, so neither limit is ever exceeded.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{QueueRt, Shared};

/// A global slot and a queue slot: what one running job holds.
pub(super) struct Slot {
    _global: OwnedSemaphorePermit,
    _queue: OwnedSemaphorePermit,
}

/// Waits for a free slot, global and for the queue; `None` on shutdown.
pub(super) async fn slot(
    shared: &Shared,
    q: &QueueRt,
    shutdown: &CancellationToken,
) -> Option<Slot> {
    let queue = tokio::select! {
        permit = Arc::clone(&q.slots).acquire_owned() => permit.ok()?,
        () = shutdown.cancelled() => return None,
    };
    let global = tokio::select! {
        permit = Arc::clone(&shared.slots).acquire_owned() => permit.ok()?,
        () = shutdown.cancelled() => return None,
    };
    Some(Slot {
        _global: global,
        _queue: queue,
    })
}

/// A free slot if there is one right now.
pub(super) fn try_slot(shared: &Shared, q: &QueueRt) -> Option<Slot> {
    let queue = Arc::clone(&q.slots).try_acquire_owned().ok()?;
    let global = Arc::clone(&shared.slots).try_acquire_owned().ok()?;
    Some(Slot {
        _global: global,
        _queue: queue,
    })
}
