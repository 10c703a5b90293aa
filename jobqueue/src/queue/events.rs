//! Events: every state change a script makes is published on the queue's
//! `queue:{name}:events` channel as `{"id": "...", "status": "..."}`, the
//! reference design's format. [`Queue::subscribe`] reads them typed.

use std::fmt;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{JobStatus, Queue};
use crate::error::{Error, Result};

/// One state change of one job, as published by the scripts (and by
/// reference clients: the format is the reference design's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The job's id.
    pub id: String,
    /// The state it entered.
    pub status: JobStatus,
}

impl Event {
    /// Decodes one message of the events channel.
    pub fn parse(message: &[u8]) -> Result<Self> {
        serde_json::from_slice(message).map_err(|e| {
            Error::malformed(
                "events channel",
                format!(
                    "{:?} is not an event: {e}",
                    String::from_utf8_lossy(message)
                ),
            )
        })
    }

    /// True when the job settled for good: completed, or failed for good.
    pub fn is_final(&self) -> bool {
        matches!(
            self.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A subscription to one queue's events; see [`Queue::subscribe`].
pub struct Events {
    channel: String,
    messages: redis::aio::PubSubStream,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The next event. `Some(Err(..))` for a message that is not an event
    /// (the subscription goes on); `None` once the subscription closed (the
    /// connection dropped: subscribe again).
    ///
    /// # Cancellation safety
    /// Safe: a message is taken only when the future completes.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        let message = self.messages.next().await?;
        Some(Event::parse(message.get_payload_bytes()))
    }
}

impl Queue {
    /// Subscribes to the queue's events on a connection of its own. Pub/sub
    /// is at most once: events published while no subscriber listens are
    /// gone, so read the job after subscribing when its current state
    /// matters (as [`JobHandle::wait`](crate::client::JobHandle::wait) does).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open subscription.
    pub async fn subscribe(&self) -> Result<Events> {
        let channel = self.keys.events();
        let mut pubsub = self.conn.pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok(Events {
            channel,
            messages: pubsub.into_on_message(),
        })
    }
}
