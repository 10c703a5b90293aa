//! Events: every state change a script makes is published on the queue's
//! `queue:{name}:events` channel as `{"id": "...", "status": "..."}`, the
//! reference design's format. [`Queue::subscribe`] reads them typed;
//! [`Client::events`](crate::Client::events) adds sharded queues and
//! resubscribing after a lost connection. The progress channel
//! (`queue:{name}:progress`, [`ProgressEvent`]) is read the same way.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};

use super::{JobStatus, ProgressEvent, Queue};
use crate::connection::Connection;
use crate::error::{Error, Result};

/// One state change of one job, as published by the scripts (and by
/// reference clients: the format is the reference design's).
///
/// On the channel an event is `{"id": "...", "status": "..."}`, where
/// `status` names the change ([`EventKind`]); it serializes the same way,
/// with a `queue` field added when the queue is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
#[non_exhaustive]
pub struct Event {
    /// The job's id.
    pub id: String,
    /// The state the change left the job in: `Completed`, `Failed` or
    /// `Cancelled` when it ended; `Pending` when it was sent back to wait for
    /// another run ([`EventKind::Retry`], `Snoozed`, `Reclaimed`,
    /// `Released`), also when a delay holds it in `Scheduled` first.
    /// [`kind`](Self::kind) says which change it was.
    pub status: JobStatus,
    /// The change, as published.
    pub kind: EventKind,
    /// The queue the event came from: the logical queue's name for
    /// [`Client::events`](crate::Client::events) (also for an event of one
    /// of its shards), the queue's own for [`Queue::subscribe`]; empty from
    /// [`Event::parse`], as the message does not name it.
    pub queue: String,
}

/// An event as it travels: the channel's two fields, and the queue when
/// known.
#[derive(Serialize, Deserialize)]
struct Wire {
    id: String,
    status: EventKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    queue: String,
}

impl From<Wire> for Event {
    fn from(wire: Wire) -> Self {
        Self {
            id: wire.id,
            status: wire.status.status(),
            kind: wire.status,
            queue: wire.queue,
        }
    }
}

impl From<Event> for Wire {
    fn from(event: Event) -> Self {
        Self {
            id: event.id,
            status: event.kind,
            queue: event.queue,
        }
    }
}

impl Event {
    /// Decodes one message of the events channel. The message does not name
    /// its queue, so [`queue`](Self::queue) is empty.
    pub fn parse(message: &[u8]) -> Result<Self> {
        Self::decode("events channel", "", message)
    }

    /// Decodes one message of `channel`, an events channel of `queue`.
    pub(crate) fn decode(channel: &str, queue: &str, message: &[u8]) -> Result<Self> {
        let wire: Wire = serde_json::from_slice(message).map_err(|e| {
            Error::malformed(
                channel,
                format!(
                    "{:?} is not an event: {e}",
                    String::from_utf8_lossy(message)
                ),
            )
        })?;
        let mut event = Self::from(wire);
        queue.clone_into(&mut event.queue);
        Ok(event)
    }

    /// True when the job settled for good: completed, or failed for good.
    pub fn is_final(&self) -> bool {
        matches!(
            self.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Decodes one message of a channel (named first) of a queue (second).
pub(crate) type Decode<M> = fn(&str, &str, &[u8]) -> Result<M>;

/// A subscription to one queue's events (see [`Queue::subscribe`]): a
/// [`Stream`] of them, which ends when its connection drops. `M` is what
/// the channel carries: an [`Event`], or a [`ProgressEvent`] for
/// [`Queue::subscribe_progress`].
pub struct Events<M = Event> {
    /// The name stamped on every event.
    queue: String,
    channels: Vec<String>,
    /// Kept for [`ping`](Self::ping): the stream stops when it is dropped.
    sink: PubSubSink,
    messages: PubSubStream,
    decode: Decode<M>,
}

impl<M> fmt::Debug for Events<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("queue", &self.queue)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl<M> Events<M> {
    /// Subscribes to `channels` on a new pub/sub connection of `conn`; each
    /// message is decoded by `decode`, with `queue` as its queue.
    pub(crate) async fn open(
        conn: &Connection,
        queue: &str,
        channels: &[String],
        decode: Decode<M>,
    ) -> Result<Self> {
        let (mut sink, messages) = conn.pubsub().await?.split();
        sink.subscribe(channels).await?;
        Ok(Self {
            queue: queue.to_owned(),
            channels: channels.to_vec(),
            sink,
            messages,
            decode,
        })
    }

    /// The next event. `Some(Err(..))` for a message that is not an event
    /// (the subscription goes on); `None` once the subscription closed (the
    /// connection dropped: subscribe again).
    ///
    /// # Cancellation safety
    /// Safe: a message is taken only when the future completes.
    pub async fn next(&mut self) -> Option<Result<M>> {
        StreamExt::next(self).await
    }

    /// Checks that the connection still answers (a `PING` on it), to find a
    /// connection that died without closing.
    pub(crate) async fn ping(&mut self) -> Result<()> {
        let _: redis::Value = self.sink.ping().await?;
        Ok(())
    }
}

impl<M> Stream for Events<M> {
    type Item = Result<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.messages.poll_next_unpin(cx).map(|message| {
            message.map(|m| (this.decode)(m.get_channel_name(), &this.queue, m.get_payload_bytes()))
        })
    }
}

impl Queue {
    /// Subscribes to the queue's events on a connection of its own. Pub/sub
    /// is at most once: events published while no subscriber listens are
    /// gone, so read the job after subscribing when its current state
    /// matters (as [`JobHandle::wait`](crate::client::JobHandle::wait) does).
    /// The subscription ends when its connection drops; for one that
    /// resubscribes, and covers a sharded queue, see
    /// [`Client::events`](crate::Client::events).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open subscription.
    pub async fn subscribe(&self) -> Result<Events> {
        Events::open(
            &self.conn,
            self.name(),
            &[self.keys.events()],
            Event::decode,
        )
        .await
    }

    /// Subscribes to the queue's progress channel (`queue:{name}:progress`)
    /// on a connection of its own: one [`ProgressEvent`] each time a lease
    /// renewal stores a running job's new progress. At most once, as
    /// [`subscribe`](Self::subscribe); for a subscription that resubscribes
    /// and covers a sharded queue, see
    /// [`Client::progress_events`](crate::Client::progress_events).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open subscription.
    pub async fn subscribe_progress(&self) -> Result<Events<ProgressEvent>> {
        let channels = [self.keys.progress()];
        Events::open(&self.conn, self.name(), &channels, ProgressEvent::decode).await
    }
}

/// What happened to a job: the `status` word of an event. Enqueues and
/// claims publish nothing, so there is no kind for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventKind {
    /// `completed`: the job finished with a result.
    Completed,
    /// `retry`: a run failed with attempts left; the job waits for another
    /// run (after its backoff).
    Retry,
    /// `failed`: the job failed for good (out of attempts, a permanent
    /// error, or failed by a claim or a sweep) and is a dead letter.
    Failed,
    /// `cancelled`: the job was cancelled, or expired before it started.
    Cancelled,
    /// `reclaimed`: a sweep took the job back from a worker whose lease ran
    /// out; it is pending again.
    Reclaimed,
    /// `released`: a worker handed the job back unrun (at shutdown); it is
    /// pending again, first in line, the attempt given back.
    Released,
    /// `snoozed`: the handler asked to run the job again later; the attempt
    /// is given back.
    Snoozed,
}

impl EventKind {
    /// The word on the channel.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Reclaimed => "reclaimed",
            Self::Released => "released",
            Self::Snoozed => "snoozed",
        }
    }

    /// The state the change leaves the job in (see [`Event::status`]).
    pub fn status(self) -> JobStatus {
        match self {
            Self::Completed => JobStatus::Completed,
            Self::Failed => JobStatus::Failed,
            Self::Cancelled => JobStatus::Cancelled,
            Self::Retry | Self::Reclaimed | Self::Released | Self::Snoozed => JobStatus::Pending,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_word_parses_to_its_kind_and_status() {
        let kinds = [
            ("completed", EventKind::Completed, JobStatus::Completed),
            ("retry", EventKind::Retry, JobStatus::Pending),
            ("failed", EventKind::Failed, JobStatus::Failed),
            ("cancelled", EventKind::Cancelled, JobStatus::Cancelled),
            ("reclaimed", EventKind::Reclaimed, JobStatus::Pending),
            ("released", EventKind::Released, JobStatus::Pending),
            ("snoozed", EventKind::Snoozed, JobStatus::Pending),
        ];
        for (word, kind, status) in kinds {
            let message = format!(r#"{{"id":"9a4f","status":"{word}"}}"#);
            let event = Event::parse(message.as_bytes()).unwrap();
            assert_eq!(event.id, "9a4f");
            assert_eq!(event.kind, kind);
            assert_eq!(kind.as_str(), word);
            assert_eq!(event.status, status, "{word}");
            assert_eq!(event.is_final(), status != JobStatus::Pending, "{word}");
            assert_eq!(event.queue, "");
        }
    }

    #[test]
    fn the_reference_format_parses_whatever_its_spacing_and_order() {
        let event =
            Event::decode("ch", "email", br#" { "status" : "retry", "id" : "a b" } "#).unwrap();
        assert_eq!(
            (event.id.as_str(), event.kind, event.queue.as_str()),
            ("a b", EventKind::Retry, "email")
        );
    }

    #[test]
    fn what_is_not_an_event_is_malformed_and_names_the_channel() {
        for bad in [
            &b"not json"[..],
            br#"{"id":"x"}"#,
            br#"{"status":"completed"}"#,
            br#"{"id":1,"status":"completed"}"#,
            br#"{"id":"x","status":"pending"}"#,
            br#"{"id":"x","status":"exploded"}"#,
            b"\xff\xfe",
        ] {
            match Event::decode("queue:q:events", "q", bad) {
                Err(Error::Malformed { key, .. }) => assert_eq!(key, "queue:q:events"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn an_event_serializes_as_the_channel_does_plus_its_queue() {
        let event = Event::decode("ch", "email", br#"{"id":"x","status":"snoozed"}"#).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "x", "status": "snoozed", "queue": "email"})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        let bare = Event::parse(br#"{"id":"x","status":"failed"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"id":"x","status":"failed"}"#
        );
    }
}
