//! Jobs as they are written: [`NewJob`] and its [`EnqueueOptions`].

use std::time::{Duration, SystemTime};

use redis::{RedisWrite, ToRedisArgs};
use serde::Serialize;

use super::unique::{DEFAULT_UNIQUE_WINDOW, Unique};
use crate::error::{Error, Result};

/// Per-job choices made at enqueue: an id, attempts, lease, when it may
/// first run, and how long its result is kept. Every one defaults to the
/// job type's (for `#[job]`s) or the queue's setting.
///
/// ```
/// use std::time::Duration;
/// use jobqueue::client::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .id("welcome-42")
///     .max_attempts(5)
///     .delay(Duration::from_secs(30))
///     .completed_ttl(Duration::from_secs(3600));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// The job's id. Default: 64 random bits in hex. If a job with this id
    /// already exists in the queue, nothing is written and the existing job
    /// stands (as BullMQ's `jobId`): enqueuing twice with one id runs the
    /// job once, while its hash lives.
    pub id: Option<String>,
    /// Claims the job gets before it fails for good.
    pub max_attempts: Option<u32>,
    /// How long a claim lasts without renewal.
    pub visibility: Option<Duration>,
    /// When the job may first run. Default: at once.
    pub when: When,
    /// How long the completed job's hash (and so its result) is kept.
    /// Whole seconds; zero keeps it until it is trimmed off the history.
    pub completed_ttl: Option<Duration>,
    /// How long after it is due (now, or its delay or time) the job may
    /// still start; one not started by then is never run and ends as
    /// expired (status `cancelled`, with the reason). At most a year.
    pub expires_in: Option<Duration>,
    /// Makes the job unique (see [`Unique`]): an enqueue of the same job
    /// while another holds its lock writes nothing and returns the existing
    /// job's id.
    pub unique: Option<Unique>,
    /// Unique by this key instead of the payload: with [`unique`](Self::unique)
    /// unset, for the default window (a day) while pending.
    pub unique_key: Option<String>,
    /// The job's priority level, from [`MIN_PRIORITY`](crate::queue::MIN_PRIORITY)
    /// (-3) to [`MAX_PRIORITY`](crate::queue::MAX_PRIORITY) (3): a claim takes
    /// from the highest level with jobs first, FIFO within a level. 0 (the
    /// default) waits in the reference `pending` list. Strict: a steady
    /// stream of higher jobs starves the lower ones.
    pub priority: Option<i8>,
    /// The job's rate key (a tenant, a customer, an API host): it waits in
    /// its key's own lane and runs within the key's limits
    /// ([`Queue::set_key_limits`](super::Queue::set_key_limits)), so a
    /// throttled key holds back only its own jobs. Keyed jobs are claimed
    /// after the priority lanes; their priority is not used.
    pub rate_key: Option<String>,
}

/// When a new job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum When {
    /// At once.
    #[default]
    Now,
    /// This long after Redis receives it (Redis's clock decides).
    After(Duration),
    /// At this time (this process's clock).
    At(SystemTime),
}

impl EnqueueOptions {
    /// No choice made: every setting is the job type's or the queue's.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`id`](Self::id).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets [`visibility`](Self::visibility).
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Holds the job back for `delay` after Redis receives it: it waits in
    /// `queue:{name}:scheduled` and moves to pending once due. It never
    /// starts earlier, and starts within about a runner's sweep interval
    /// after.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = if delay.is_zero() {
            When::Now
        } else {
            When::After(delay)
        };
        self
    }

    /// Holds the job back until `time` (this process's clock). A time more
    /// than a year ahead is refused at enqueue, as a delay that long is; a
    /// time in the past runs the job at once.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.when = When::At(time);
        self
    }

    /// Sets [`completed_ttl`](Self::completed_ttl).
    pub fn completed_ttl(mut self, ttl: Duration) -> Self {
        self.completed_ttl = Some(ttl);
        self
    }

    /// Sets [`unique`](Self::unique).
    pub fn unique(mut self, unique: Unique) -> Self {
        self.unique = Some(unique);
        self
    }

    /// Sets [`unique_key`](Self::unique_key): this job is unique by `key`
    /// (`"user:42"`) instead of its payload.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// The uniqueness in effect: [`unique`](Self::unique) (or the default
    /// when only a key is given), keyed by [`unique_key`](Self::unique_key)
    /// when set.
    pub fn effective_unique(&self) -> Option<Unique> {
        let unique = match (&self.unique, &self.unique_key) {
            (Some(unique), _) => unique.clone(),
            (None, Some(_)) => Unique::for_window(DEFAULT_UNIQUE_WINDOW),
            (None, None) => return None,
        };
        Some(match &self.unique_key {
            Some(key) => unique.key(key.clone()),
            None => unique,
        })
    }

    /// Sets [`expires_in`](Self::expires_in): the job must start within
    /// `within` of its due time, or it never runs.
    pub fn expires_in(mut self, within: Duration) -> Self {
        self.expires_in = Some(within);
        self
    }

    /// Sets [`priority`](Self::priority).
    pub fn priority(mut self, level: i8) -> Self {
        self.priority = Some(level);
        self
    }

    /// Sets [`rate_key`](Self::rate_key).
    pub fn rate_key(mut self, key: impl Into<String>) -> Self {
        self.rate_key = Some(key.into());
        self
    }

    /// Fills the settings left unset from `defaults`.
    pub(crate) fn or(self, defaults: &Self) -> Self {
        Self {
            id: self.id.or_else(|| defaults.id.clone()),
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            visibility: self.visibility.or(defaults.visibility),
            when: match self.when {
                When::Now => defaults.when,
                when => when,
            },
            completed_ttl: self.completed_ttl.or(defaults.completed_ttl),
            expires_in: self.expires_in.or(defaults.expires_in),
            unique: self.unique.or_else(|| defaults.unique.clone()),
            unique_key: self.unique_key.or_else(|| defaults.unique_key.clone()),
            priority: self.priority.or(defaults.priority),
            rate_key: self.rate_key.or_else(|| defaults.rate_key.clone()),
        }
    }
}

/// The enqueue script's notation: "" now, "+ms" after a delay, "@ms" at a
/// time since the Unix epoch.
impl ToRedisArgs for When {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let arg = match *self {
            Self::Now => String::new(),
            Self::After(d) => format!("+{}", d.as_millis()),
            Self::At(time) => {
                let ms = time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                format!("@{ms}")
            }
        };
        out.write_arg(arg.as_bytes());
    }
}

/// A job to enqueue: its JSON payload, the handler name stored with it, and
/// its [`EnqueueOptions`].
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) payload: String,
    pub(crate) name: Option<String>,
    pub(crate) options: EnqueueOptions,
    /// Hash fields carrying the enqueuing code's trace context.
    pub(crate) context: Vec<(&'static str, String)>,
}

impl NewJob {
    /// A job carrying `payload`, serialized as JSON.
    pub fn new<P: Serialize + ?Sized>(payload: &P) -> Result<Self> {
        Ok(Self::from_json(serde_json::to_string(payload)?))
    }

    /// A job carrying an already serialized JSON payload (checked at enqueue).
    pub fn from_json(payload: impl Into<String>) -> Self {
        Self {
            payload: payload.into(),
            name: None,
            options: EnqueueOptions::default(),
            context: Vec::new(),
        }
    }

    /// The handler name stored in the `job` field, used by runners to pick
    /// the code that runs it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the job's [`EnqueueOptions`].
    pub fn options(mut self, options: EnqueueOptions) -> Self {
        self.options = options;
        self
    }

    /// The same job, storing `fields` (the enqueuing code's trace context)
    /// in its hash.
    pub(crate) fn context_fields(mut self, fields: &[(&'static str, String)]) -> Self {
        self.context.extend_from_slice(fields);
        self
    }

    /// The options it is enqueued with.
    pub fn enqueue_options(&self) -> &EnqueueOptions {
        &self.options
    }

    /// The digest of this job's unique lock, when it is unique: over its
    /// name (empty without one) and its key or payload.
    pub fn unique_digest(&self) -> Result<Option<String>> {
        let Some(unique) = self.options.effective_unique() else {
            return Ok(None);
        };
        unique.check()?;
        unique
            .digest(self.name.as_deref().unwrap_or(""), &self.payload)
            .map(Some)
    }

    /// The extra hash fields this job stores besides the reference's.
    pub(crate) fn extra_fields(&self) -> Result<Vec<(&'static str, String)>> {
        let mut fields = self.context.clone();
        if let Some(name) = &self.name {
            crate::keys::validate_name(name)?;
            fields.push(("job", name.clone()));
        }
        let options = &self.options;
        super::options::check_job_limits(options.max_attempts, options.visibility)?;
        if let Some(max) = options.max_attempts {
            fields.push(("max_attempts", max.to_string()));
        }
        if let Some(visibility) = options.visibility {
            fields.push(("visibility_ms", visibility.as_millis().to_string()));
        }
        if let Some(ttl) = options.completed_ttl {
            super::options::check_ttl(ttl)?;
            fields.push(("completed_ttl_s", ttl.as_secs().to_string()));
        }
        if let Some(within) = options.expires_in {
            if within > jobqueue_rules::MAX_DURATION {
                return Err(Error::invalid_option(
                    "expires_in",
                    format!("{within:?} is more than a year"),
                ));
            }
            fields.push(("expires_in_ms", within.as_millis().to_string()));
        }
        if let Some(digest) = self.unique_digest()? {
            let unique = options
                .effective_unique()
                .expect("a digest means uniqueness");
            fields.push(("unique_digest", digest));
            fields.push(("unique_mode", unique.mode.as_str().to_owned()));
            fields.push(("unique_for_ms", unique.window.as_millis().to_string()));
        }
        if let Some(level) = options.priority {
            if !(crate::keys::MIN_PRIORITY..=crate::queue::MAX_PRIORITY).contains(&level) {
                return Err(Error::invalid_option(
                    "priority",
                    format!(
                        "{level} is not from {} to {}",
                        crate::keys::MIN_PRIORITY,
                        crate::keys::MAX_PRIORITY
                    ),
                ));
            }
            if level != 0 {
                fields.push(("priority", level.to_string()));
            }
        }
        if let Some(key) = &options.rate_key {
            super::check_rate_key(key)?;
            fields.push(("rate_key", key.clone()));
        }
        match options.when {
            When::Now => {}
            When::After(delay) => {
                jobqueue_rules::check_millis(delay)
                    .map_err(|reason| Error::invalid_option("delay", reason))?;
            }
            // The same limit as a delay, from this process's clock: a time
            // far enough ahead would overflow the integer milliseconds the
            // job hash stores (and the scheduled set's score would be
            // meaningless). Past times run at once.
            When::At(time) => {
                if let Ok(ahead) = time.duration_since(SystemTime::now())
                    && ahead > jobqueue_rules::MAX_DURATION
                {
                    return Err(Error::invalid_option(
                        "at",
                        format!("{time:?} is more than a year ahead"),
                    ));
                }
            }
        }
        Ok(fields)
    }
}
