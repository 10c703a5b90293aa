//! `jobqueue limit`: reads and changes a queue's fleet-wide limits, merging
//! the options given with what is stored, and renders them as table rows.

use jobqueue::queue::Queue;
use jobqueue::{Limits, QueueLimits, Rate};
use serde_json::{Value, json};

use crate::Failure;

/// The limits `limit` acts on.
pub(crate) enum Scope {
    /// The queue's own.
    Queue,
    /// The defaults of every rate key.
    PerKey,
    /// One rate key's own.
    Key(String),
}

/// What `limit` was asked to change.
pub(crate) struct Change {
    pub(crate) rate: Option<Rate>,
    pub(crate) burst: Option<u32>,
    pub(crate) max_running: Option<u32>,
    pub(crate) clear: bool,
}

impl Change {
    fn is_empty(&self) -> bool {
        !self.clear && self.rate.is_none() && self.burst.is_none() && self.max_running.is_none()
    }

    /// `base` with the limits given replaced. A burst equal to the old
    /// rate's count is what an unset burst is stored as: it follows a new
    /// rate unless a burst is given too.
    fn merge(&self, base: Limits) -> Limits {
        let mut limits = base;
        if let Some(rate) = self.rate {
            if limits.burst.is_some() && limits.burst == limits.rate.map(|r| r.count) {
                limits.burst = None;
            }
            limits.rate = Some(rate);
        }
        if let Some(burst) = self.burst {
            limits.burst = Some(burst);
        }
        if let Some(n) = self.max_running {
            limits.max_running = Some(n);
        }
        limits
    }
}

/// Applies `change` to the limits of `scope` (none: reads them) and returns
/// every limit of the queue as stored afterwards.
pub(crate) async fn limit(
    queue: &Queue,
    scope: &Scope,
    change: &Change,
) -> Result<QueueLimits, Failure> {
    let stored = queue.limits().await?;
    if change.is_empty() {
        return Ok(stored);
    }
    let (what, base) = match scope {
        Scope::Queue => (format!("queue {}", queue.name()), stored.queue),
        Scope::PerKey => (
            format!("the per-key defaults of queue {}", queue.name()),
            stored.per_key,
        ),
        Scope::Key(key) => (
            format!("rate key {key} of queue {}", queue.name()),
            stored.keys.get(key).copied().unwrap_or(stored.per_key),
        ),
    };
    let limits = if change.clear {
        Limits::new()
    } else {
        change.merge(base)
    };
    if change.burst.is_some() && limits.rate.is_none() {
        let has = if matches!(scope, Scope::PerKey) {
            "have"
        } else {
            "has"
        };
        return Err(Failure(
            2,
            format!("--burst needs a rate and {what} {has} none: give --rate too"),
        ));
    }
    // Numbers the library refuses (a zero, a count too large) are usage
    // errors, with its message.
    let invalid = |e: jobqueue::Error| match e {
        jobqueue::Error::InvalidOption { .. } => Failure(2, e.to_string()),
        e => e.into(),
    };
    match scope {
        Scope::Queue => queue.set_limits(&limits).await.map_err(invalid)?,
        Scope::PerKey => queue.set_key_limits(&limits).await.map_err(invalid)?,
        Scope::Key(key) => {
            let own = (!change.clear).then_some(&limits);
            queue.set_limits_of_key(key, own).await.map_err(invalid)?
        }
    }
    Ok(queue.limits().await?)
}

/// A rate as `limit --rate` takes it: `100/s`, `5/30s`, `10/250ms`.
fn rate_text(rate: &Rate) -> String {
    let ms = rate.per.as_millis();
    let units = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ];
    match units
        .iter()
        .find(|(_, scale)| ms > 0 && ms.is_multiple_of(*scale))
    {
        Some((unit, scale)) if ms == *scale => format!("{}/{unit}", rate.count),
        Some((unit, scale)) => format!("{}/{}{unit}", rate.count, ms / scale),
        None => format!("{}/{ms}ms", rate.count),
    }
}

/// A table row of one set of limits; `-` for a limit not set.
pub(crate) fn limits_row(name: &str, limits: &Limits) -> Value {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    json!({
        "limits": name,
        "rate": or_dash(limits.rate.as_ref().map(rate_text)),
        "burst": or_dash(limits.burst.map(|n| n.to_string())),
        "max_running": or_dash(limits.max_running.map(|n| n.to_string())),
    })
}
