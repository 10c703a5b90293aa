//! The one place that builds Redis key names.
//!
//! Every key a script touches is built here and handed to the script through
//! `KEYS`; the layout is documented in `docs/data-model.md`.

use crate::error::{Error, Result};

/// The highest priority level: claimed first.
pub const MAX_PRIORITY: i8 = 3;
/// The lowest priority level: claimed last.
pub const MIN_PRIORITY: i8 = -3;
/// Most bytes in a rate key.
pub const MAX_RATE_KEY: usize = 128;

/// How a queue's keys are spelled.
///
/// The reference layout (`queue:jobs:pending`) is what the Redis job-queue guide
/// and its nine ports use, so it is the default on a single server. The
/// hash-tagged layout (`queue:{jobs}:pending`) puts every key of a queue in one
/// Redis Cluster slot, and is the default on a cluster; reference clients
/// cannot see queues spelled that way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyLayout {
    /// `queue:{name}:…` with the bare name, as the reference design spells it.
    #[default]
    Reference,
    /// `queue:{{name}}:…`: the name wrapped in braces as a cluster hash tag.
    HashTagged,
}

/// The key names of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    name: String,
    base: String,
}

impl Keys {
    /// A `SCAN` pattern matching the keys of every queue, in either layout.
    pub const EVERY_QUEUE_PATTERN: &'static str = "queue:*";

    /// The name of the queue a key belongs to (`queue:NAME:…` or
    /// `queue:{NAME}:…`), or `None` for a key outside the layout.
    pub fn queue_name_of(key: &str) -> Option<&str> {
        let rest = key.strip_prefix("queue:")?;
        let name = match rest.strip_prefix('{') {
            Some(tagged) => tagged.split_once('}')?.0,
            None => rest.split_once(':')?.0,
        };
        (!name.is_empty()).then_some(name)
    }

    /// Builds the key names of queue `name`, after checking the name.
    pub fn new(name: &str, layout: KeyLayout) -> Result<Self> {
        validate_name(name)?;
        let base = match layout {
            KeyLayout::Reference => format!("queue:{name}"),
            KeyLayout::HashTagged => format!("queue:{{{name}}}"),
        };
        Ok(Self {
            name: name.to_owned(),
            base,
        })
    }

    /// The queue's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `queue:{name}:pending`: ids waiting, pushed left, claimed from the right.
    pub fn pending(&self) -> String {
        self.key("pending")
    }

    /// `queue:{name}:processing`: ids claimed and not yet settled.
    pub fn processing(&self) -> String {
        self.key("processing")
    }

    /// `queue:{name}:completed`: recent successes, newest first.
    pub fn completed(&self) -> String {
        self.key("completed")
    }

    /// `queue:{name}:cancelled`: jobs cancelled or expired, newest first.
    pub fn cancelled(&self) -> String {
        self.key("cancelled")
    }

    /// `queue:{name}:schedules`: each periodic schedule's name, scored by
    /// its next tick (ms since the epoch).
    pub fn schedules(&self) -> String {
        self.key("schedules")
    }

    /// `queue:{name}:schedule:{schedule}`: one periodic schedule (its
    /// expression, zone, job, payload, next and last tick).
    pub fn schedule(&self, schedule: &str) -> String {
        self.key(&format!("schedule:{schedule}"))
    }

    /// `queue:{name}:failed`: dead letters, newest first.
    pub fn failed(&self) -> String {
        self.key("failed")
    }

    /// `queue:{name}:leases`: sorted set of claimed ids scored by lease deadline (ms).
    pub fn leases(&self) -> String {
        self.key("leases")
    }

    /// `queue:{name}:scheduled`: sorted set of ids waiting for a time (delayed
    /// jobs, retries in backoff) scored by due time (ms).
    pub fn scheduled(&self) -> String {
        self.key("scheduled")
    }

    /// `queue:{name}:settled`: sorted set of claims that ended (`id:token`,
    /// kept a while so a repeated settle answers "duplicate") and of the
    /// queue's dead letters (`id:`, so the sweep finds one whose listing
    /// another client trimmed off).
    pub fn settled(&self) -> String {
        self.key("settled")
    }

    /// `queue:{name}:stats`: fleet-wide counters.
    pub fn stats(&self) -> String {
        self.key("stats")
    }

    /// `queue:{name}:request:{id}`: what one claim request took, kept briefly
    /// so a retry after a lost reply gets the same jobs back.
    pub fn request(&self, id: &str) -> String {
        format!("{}:request:{id}", self.base)
    }

    /// `queue:{name}:pending:{level}`: the jobs waiting at a priority level
    /// other than 0 (level 0 is `pending` itself, the reference list).
    /// Levels run from [`MIN_PRIORITY`] to [`MAX_PRIORITY`].
    pub fn priority_lane(&self, level: i8) -> String {
        if level == 0 {
            self.pending()
        } else {
            format!("{}:pending:{level}", self.base)
        }
    }

    /// `queue:{name}:keyed:{key}`: the jobs of one rate key waiting, so a
    /// throttled key holds back only its own jobs.
    pub fn keyed_lane(&self, rate_key: &str) -> String {
        format!("{}:keyed:{rate_key}", self.base)
    }

    /// `queue:{name}:keys`: sorted set of the rate keys with jobs waiting,
    /// scored by when each may be served again (ms).
    pub fn rate_keys(&self) -> String {
        self.key("keys")
    }

    /// `queue:{name}:key-leases:{key}`: the claims of one rate key's jobs
    /// now held (`id:token` -> lease deadline), counted by its
    /// `max_running`.
    pub fn key_leases(&self, rate_key: &str) -> String {
        format!("{}:key-leases:{rate_key}", self.base)
    }

    /// `queue:{name}:levels`: set of the priority levels (other than 0)
    /// whose lanes may hold jobs, so a claim reads only those.
    pub fn levels(&self) -> String {
        self.key("levels")
    }

    /// `queue:{name}:limits`: the queue's fleet-wide limits (rate, burst,
    /// max_running, and the defaults for each rate key).
    pub fn limits(&self) -> String {
        self.key("limits")
    }

    /// `queue:{name}:key-limits`: limits of single rate keys that differ
    /// from the defaults (key -> "rate period_ms burst max_running").
    pub fn key_limits(&self) -> String {
        self.key("key-limits")
    }

    /// `queue:{name}:throttle`: rate-limit state (each rate's theoretical
    /// arrival time, holds reported by handlers, the capped flag).
    pub fn throttle(&self) -> String {
        self.key("throttle")
    }

    /// `queue:{name}:wake`: at most one token, pushed when work appears that
    /// a blocking wait on `pending` cannot see; idle runners block on it.
    pub fn wake(&self) -> String {
        self.key("wake")
    }

    /// `queue:{name}:paused`: exists while the queue is paused; runners claim
    /// nothing from a paused queue.
    pub fn paused(&self) -> String {
        self.key("paused")
    }

    /// `queue:{name}:events`: the pub/sub channel (not a key).
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// `queue:{name}:outbox`: sorted set of the jobs of this queue that
    /// ended as a batch's child or a chain's step and whose end is not yet
    /// relayed (id -> when it ended, ms); each has its entry in
    /// [`outbox_entries`](Self::outbox_entries).
    pub fn outbox(&self) -> String {
        self.key("outbox")
    }

    /// `queue:{name}:outbox:entries`: hash of how each job in the outbox
    /// ended (id -> JSON: outcome, detail, its batch, the rest of its
    /// chain), kept until it is relayed.
    pub fn outbox_entries(&self) -> String {
        self.key("outbox:entries")
    }

    /// `queue:{name}:batch:{id}`: one batch whose callbacks are on this
    /// queue (totals, state, callback ids).
    pub fn batch(&self, id: &str) -> String {
        format!("{}:batch:{id}", self.base)
    }

    /// `queue:{name}:batch:{id}:settled`: each settled child of batch `id`
    /// (child id -> outcome, queue and reason), written once per child.
    pub fn batch_settled(&self, id: &str) -> String {
        format!("{}:batch:{id}:settled", self.base)
    }

    /// `queue:{name}:batches`: the batches homed on this queue, scored by
    /// when each was created (ms).
    pub fn batches(&self) -> String {
        self.key("batches")
    }

    /// `queue:{name}:progress`: the pub/sub channel (not a key) on which a
    /// lease renewal announces a running job's new progress, as
    /// `{"id": "...", "progress": <JSON>}`. A channel of its own, so that
    /// subscribers of `events` (reference clients among them) keep getting
    /// only the reference's `{"id", "status"}` messages.
    pub fn progress(&self) -> String {
        self.key("progress")
    }

    /// `queue:{name}:job:`: the prefix of every job hash.
    pub fn job_prefix(&self) -> String {
        self.key("job:")
    }

    /// `queue:{name}:job:{id}`: one job's hash.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.base)
    }

    /// `queue:{name}:*`: a `SCAN` pattern matching every key of this queue
    /// and no other (names cannot contain `:` or glob characters).
    pub fn pattern(&self) -> String {
        self.key("*")
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.base)
    }
}

/// Checks a queue or job name with the rule `#[job]` also applies at
/// compile time ([`jobqueue_rules::check_name`]).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    jobqueue_rules::check_name(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_layout_matches_the_guide() {
        let keys = Keys::new("jobs", KeyLayout::Reference).unwrap();
        assert_eq!(keys.pending(), "queue:jobs:pending");
        assert_eq!(keys.processing(), "queue:jobs:processing");
        assert_eq!(keys.completed(), "queue:jobs:completed");
        assert_eq!(keys.failed(), "queue:jobs:failed");
        assert_eq!(keys.events(), "queue:jobs:events");
        assert_eq!(keys.progress(), "queue:jobs:progress");
        assert_eq!(keys.stats(), "queue:jobs:stats");
        assert_eq!(keys.scheduled(), "queue:jobs:scheduled");
        assert_eq!(keys.settled(), "queue:jobs:settled");
        assert_eq!(keys.job("9a4f"), "queue:jobs:job:9a4f");
        assert_eq!(keys.job_prefix(), "queue:jobs:job:");
    }

    #[test]
    fn hash_tagged_layout_keeps_a_queue_in_one_slot() {
        let keys = Keys::new("email", KeyLayout::HashTagged).unwrap();
        assert_eq!(keys.pending(), "queue:{email}:pending");
        assert_eq!(keys.job("ab"), "queue:{email}:job:ab");
        assert_eq!(keys.job_prefix(), "queue:{email}:job:");
        assert_eq!(keys.progress(), "queue:{email}:progress");
    }

    #[test]
    fn queue_names_come_back_from_either_layout() {
        assert_eq!(Keys::queue_name_of("queue:email:pending"), Some("email"));
        assert_eq!(Keys::queue_name_of("queue:jobs:job:abc"), Some("jobs"));
        assert_eq!(Keys::queue_name_of("queue:{email}:stats"), Some("email"));
        assert_eq!(Keys::queue_name_of("other:key"), None);
    }

    #[test]
    fn names_that_break_the_keyspace_are_refused() {
        for bad in ["", "a b", "a:b", "{a}", "a*", "a?", "a[1]", "a\nb", "a\\b"] {
            let err = Keys::new(bad, KeyLayout::Reference).unwrap_err();
            assert!(
                matches!(err, Error::InvalidName { .. }),
                "{bad:?} gave {err}"
            );
        }
        assert!(Keys::new(&"x".repeat(129), KeyLayout::Reference).is_err());
        assert!(Keys::new("email.high-priority_2", KeyLayout::Reference).is_ok());
    }
}
