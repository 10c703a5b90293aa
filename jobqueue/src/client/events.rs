//! [`Client::events`]: a typed stream of a queue's events, over every shard
//! of the queue, that resubscribes when its connection is lost; and
//! [`Client::progress_events`], the same over the progress channels.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use futures_util::stream::{self, BoxStream};

use super::Client;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::queue::{Decode, Event, Events, ProgressEvent};
use crate::retry::Backoff;

/// How long a subscription may hear nothing before it is asked whether its
/// connection still answers (a connection can die without closing).
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// How long opening a subscription, or a `PING` on it, may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

impl Client {
    /// Subscribes to the events of queue `queue`: a [`Stream`] of every
    /// state change its jobs go through ([`Event`]: a job's id, what
    /// happened, and `queue`), in the format the scripts (and reference
    /// clients) publish on `queue:{name}:events`. Enqueues and claims publish
    /// nothing; completions, retries, dead letters, cancellations, snoozes,
    /// releases and reclaims do ([`EventKind`](crate::queue::EventKind)).
    ///
    /// - **Sharded queues**: one subscription hears every shard of `queue`
    ///   (see [`ClientBuilder::shards`](super::ClientBuilder::shards)); each
    ///   event names the logical queue.
    /// - **Order**: one job's events arrive in the order its changes were
    ///   made. Events of jobs in different shards may interleave in any
    ///   order.
    /// - **At most once**: this is Redis pub/sub. An event published while
    ///   no subscription listens is gone for good: events from before this
    ///   call returned, and events from while a lost connection was being
    ///   replaced. Read the state you depend on after subscribing (as
    ///   [`JobHandle::wait`](super::JobHandle::wait) does), and again after
    ///   a gap.
    /// - **A lost connection is a gap, not an end**: the stream resubscribes,
    ///   backing off from 100 ms to 5 s while Redis is unreachable, then
    ///   yields one `Err` for which
    ///   [`Error::is_connection_error`](crate::Error::is_connection_error) is
    ///   true, saying that events may have been missed, and goes on. A
    ///   connection silent for 30 s is checked with a `PING`.
    /// - **A message that is not an event** (published by hand, or by a
    ///   client that does not know the format) is an `Err`
    ///   ([`Error::Malformed`]), and the stream goes on.
    ///
    /// The stream never ends by itself: dropping it unsubscribes and closes
    /// its connection. It uses a connection of its own (pub/sub needs one);
    /// on a cluster, one primary's (`PUBLISH` reaches every node).
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// use jobqueue::client::EventKind;
    ///
    /// # async fn run(client: jobqueue::Client) -> jobqueue::Result<()> {
    /// let mut events = client.events("email").await?;
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(event) if event.kind == EventKind::Failed => {
    ///             eprintln!("job {} of {} is a dead letter", event.id, event.queue);
    ///         }
    ///         Ok(_) => {}
    ///         // The subscription was lost and is back: events may be missing.
    ///         Err(e) if e.is_connection_error() => { /* re-read the jobs you follow */ }
    ///         // A message that is not an event; the stream goes on.
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// An invalid queue name, or Redis not answering the first subscription
    /// within 10 s (later losses are items, not errors).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open subscription.
    pub async fn events(&self, queue: &str) -> Result<EventStream> {
        let channels = self
            .shard_queues(queue)?
            .iter()
            .map(|shard| shard.keys().events())
            .collect();
        self.subscribe(queue, channels, Event::decode).await
    }

    /// Subscribes to the progress of queue `queue`'s running jobs: a
    /// [`Stream`] with one [`ProgressEvent`] each time a job's stored
    /// progress changes ([`JobContext::progress`](crate::JobContext::progress)
    /// reports it, the job's next lease renewal stores it and publishes it
    /// on `queue:{name}:progress`). A value reported again unchanged is not
    /// published again.
    ///
    /// Everything [`events`](Self::events) says holds here too: every shard
    /// of a sharded queue, one job's changes in order, at most once (read
    /// [`JobHandle::progress`](super::JobHandle::progress) after
    /// subscribing, and after a gap), a lost connection as one `Err` and a
    /// new subscription, a malformed message as an `Err`, a connection of
    /// its own.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    ///
    /// # async fn run(client: jobqueue::Client) -> jobqueue::Result<()> {
    /// let mut progress = client.progress_events("video").await?;
    /// while let Some(Ok(event)) = progress.next().await {
    ///     match event.fraction() {
    ///         Some(done) => println!("{}: {:.0}%", event.id, done * 100.0),
    ///         None => println!("{}: {}", event.id, event.progress),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`events`](Self::events).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future drops the half-open subscription.
    pub async fn progress_events(&self, queue: &str) -> Result<EventStream<ProgressEvent>> {
        let channels = self
            .shard_queues(queue)?
            .iter()
            .map(|shard| shard.keys().progress())
            .collect();
        self.subscribe(queue, channels, ProgressEvent::decode).await
    }

    /// A stream of `channels`, the channels of logical queue `queue`, each
    /// message decoded by `decode`.
    async fn subscribe<M: Send + 'static>(
        &self,
        queue: &str,
        channels: Vec<String>,
        decode: Decode<M>,
    ) -> Result<EventStream<M>> {
        let subscription = Subscription {
            conn: self.conn.clone(),
            queue: queue.to_owned(),
            channels,
            decode,
        };
        let events = subscription.open().await?;
        Ok(EventStream {
            queue: subscription.queue.clone(),
            channels: subscription.channels.clone(),
            inner: Box::pin(stream::unfold(
                Listening {
                    subscription,
                    events,
                },
                Listening::step,
            )),
        })
    }
}

/// The events of one queue, from [`Client::events`]: a [`Stream`] of
/// `Result<Event>` that ends only when dropped; or its progress, from
/// [`Client::progress_events`]: `Result<ProgressEvent>` items.
///
/// Polling it is cancellation safe: the subscription lives in the stream, so
/// dropping a pending `next()` loses no event.
#[must_use = "streams do nothing unless polled"]
pub struct EventStream<M = Event> {
    queue: String,
    channels: Vec<String>,
    inner: BoxStream<'static, Result<M>>,
}

impl<M> fmt::Debug for EventStream<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("queue", &self.queue)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl<M> EventStream<M> {
    /// The queue whose events this is (the logical name, for a sharded
    /// queue).
    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl<M> Stream for EventStream<M> {
    type Item = Result<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What a subscription is to: the channels of one logical queue, and how
/// their messages decode.
struct Subscription<M> {
    conn: Connection,
    queue: String,
    channels: Vec<String>,
    decode: Decode<M>,
}

impl<M> Subscription<M> {
    /// One attempt at subscribing, bounded in time.
    async fn open(&self) -> Result<Events<M>> {
        tokio::time::timeout(
            ANSWER_WITHIN,
            Events::open(&self.conn, &self.queue, &self.channels, self.decode),
        )
        .await
        .unwrap_or_else(|_| {
            Err(io_error(
                std::io::ErrorKind::TimedOut,
                "subscribing timed out",
            ))
        })
    }

    /// Subscribes again, retrying with back-off until it works.
    async fn reopen(&self) -> Events<M> {
        let mut failures = 0;
        loop {
            match self.open().await {
                Ok(events) => return events,
                Err(e) => {
                    let wait = Backoff::LOOP.delay(failures);
                    tracing::debug!(
                        queue = %self.queue, error = %e, retry_in = ?wait,
                        "events: resubscribing failed"
                    );
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The stream's state: the subscription and its current connection.
struct Listening<M> {
    subscription: Subscription<M>,
    events: Events<M>,
}

impl<M> Listening<M> {
    /// The next item: an event, a malformed message's error, or, after the
    /// connection was lost and replaced, the error that says so.
    async fn step(mut self) -> Option<(Result<M>, Self)> {
        if let Some(item) = self.next_while_alive().await {
            return Some((item, self));
        }
        let lost = Instant::now();
        tracing::warn!(
            queue = %self.subscription.queue,
            "events: the subscription's connection was lost; resubscribing"
        );
        self.events = self.subscription.reopen().await;
        let gap = lost.elapsed();
        tracing::info!(queue = %self.subscription.queue, ?gap, "events: subscribed again");
        let missed = io_error(
            std::io::ErrorKind::ConnectionReset,
            format!(
                "the events subscription of queue {:?} was lost for {gap:?}: \
                 events published meanwhile may have been missed",
                self.subscription.queue
            ),
        );
        Some((Err(missed), self))
    }

    /// The next message, or `None` once the connection is gone: closed, or
    /// silent for [`IDLE_CHECK`] and then not answering a `PING`.
    async fn next_while_alive(&mut self) -> Option<Result<M>> {
        loop {
            if let Ok(item) = tokio::time::timeout(IDLE_CHECK, self.events.next()).await {
                return item;
            }
            match tokio::time::timeout(ANSWER_WITHIN, self.events.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "events: PING failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!("events: PING got no answer");
                    return None;
                }
            }
        }
    }
}

/// A connection error (one [`Error::is_connection_error`] recognizes).
fn io_error(kind: std::io::ErrorKind, message: impl Into<String>) -> Error {
    Error::Redis(redis::RedisError::from(std::io::Error::new(
        kind,
        message.into(),
    )))
}
