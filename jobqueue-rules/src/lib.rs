//! The rules that `jobqueue` and its `#[job]` macro both enforce.
//!
//! The runtime checks queue options, enqueue options and names with these
//! functions when a program runs; `#[job]` calls the same functions while it
//! expands, and turns a refusal into a compile error on the offending
//! argument. Keeping them here, in a crate both depend on, is what makes the
//! two agree: there is no second copy to drift.
//!
//! Each check returns the reason as text (`Err("it contains ':'")`); the
//! caller wraps it in its own error type. Depend on `jobqueue`, not on this
//! crate: its API follows `jobqueue`'s needs.

mod cron;
pub use cron::{CronSpec, check_cron, utc_millis_text, utc_text};

use std::time::Duration;

/// The queue a job goes to when `#[job]` names none.
pub const DEFAULT_QUEUE: &str = "jobs";

/// Claims a job gets before it fails for good, when neither the job nor the
/// queue says otherwise (the reference design's default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How long a claim lasts without renewal, by default (the reference
/// design's 5000 ms).
pub const DEFAULT_VISIBILITY: Duration = Duration::from_millis(5_000);

/// The shortest lease accepted: a shorter one can expire between two
/// renewals of a busy runner.
pub const MIN_VISIBILITY: Duration = Duration::from_millis(100);

/// The longest duration accepted where Redis stores milliseconds: a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longest queue or job name accepted: long names only waste memory in
/// every key.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a queue or job name: non-empty, at most [`MAX_NAME_LEN`] bytes, and
/// free of characters that would break the key layout (`:`, braces), glob
/// patterns used by `SCAN` (`*`, `?`, `[`, `]`, `\`), whitespace and control
/// characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} bytes"));
    }
    match name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || ":{}*?[]\\".contains(*c))
    {
        Some(c) => Err(format!("it contains {c:?}")),
        None => Ok(()),
    }
}

/// Checks a `max_attempts`: at least 1 (a job with no attempt never runs).
pub fn check_max_attempts(max_attempts: u32) -> Result<(), String> {
    if max_attempts == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(())
}

/// Checks a lease length: at least [`MIN_VISIBILITY`], at most
/// [`MAX_DURATION`], in whole milliseconds' worth.
pub fn check_visibility(visibility: Duration) -> Result<(), String> {
    if visibility < MIN_VISIBILITY {
        return Err(format!(
            "{visibility:?} is under the {} ms minimum: a shorter lease expires between renewals",
            MIN_VISIBILITY.as_millis()
        ));
    }
    check_millis(visibility).map(|_| ())
}

/// A duration in whole milliseconds, refusing zero and anything over
/// [`MAX_DURATION`] (Redis stores these as integers of milliseconds).
pub fn check_millis(duration: Duration) -> Result<u64, String> {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || duration > MAX_DURATION {
        return Err(format!("{duration:?} is not between 1 ms and a year"));
    }
    Ok(ms)
}

/// Most jobs a rate may allow per period, and most a burst may hold.
pub const MAX_RATE_COUNT: u32 = 1_000_000;

/// Parses a rate limit, `"<count>/<period>"`: `"100/s"`, `"5/m"`,
/// `"1000/h"`, `"20/d"`, or a period with its own number, `"10/250ms"`,
/// `"3/2s"`. Returns the count and the period in milliseconds, refusing a
/// count of zero or over [`MAX_RATE_COUNT`] and a period over
/// [`MAX_DURATION`].
pub fn parse_rate(text: &str) -> Result<(u32, u64), String> {
    let invalid = |why: &str| {
        format!(
            "invalid rate {text:?}: {why}; expected jobs per period, as \"100/s\", \"5/m\", \"1000/h\", \"20/d\" or \"10/250ms\""
        )
    };
    let (count, period) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| invalid("no '/'"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| invalid("the count is not a whole number"))?;
    if count == 0 || count > MAX_RATE_COUNT {
        return Err(invalid(&format!("the count must be 1 to {MAX_RATE_COUNT}")));
    }
    let period = period.trim();
    let split = period
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(period.len());
    let (digits, unit) = period.split_at(split);
    let n: u64 = if digits.is_empty() {
        1
    } else {
        digits
            .parse()
            .map_err(|_| invalid("the period's number is too large"))?
    };
    let scale: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid("the period's unit is not ms, s, m, h or d")),
    };
    let ms = n
        .checked_mul(scale)
        .filter(|ms| *ms > 0 && *ms <= MAX_DURATION.as_millis() as u64)
        .ok_or_else(|| invalid("the period must be 1 ms to a year"))?;
    Ok((count, ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_jobs_per_period() {
        assert_eq!(parse_rate("100/s"), Ok((100, 1_000)));
        assert_eq!(parse_rate("5/m"), Ok((5, 60_000)));
        assert_eq!(parse_rate("1000/h"), Ok((1000, 3_600_000)));
        assert_eq!(parse_rate("20/d"), Ok((20, 86_400_000)));
        assert_eq!(parse_rate("10/250ms"), Ok((10, 250)));
        assert_eq!(parse_rate(" 3 / 2s "), Ok((3, 2_000)));
        for bad in [
            "",
            "100",
            "0/s",
            "x/s",
            "10/",
            "10/0s",
            "10/w",
            "10/400d",
            "2000000/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_that_break_the_keyspace_are_refused() {
        for bad in ["", "a b", "a:b", "{a}", "a*", "a?", "a[1]", "a\nb", "a\\b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(129)).is_err());
        assert_eq!(check_name("a:b").unwrap_err(), "it contains ':'");
        assert!(check_name("email.high-priority_2").is_ok());
    }

    #[test]
    fn leases_and_attempts_have_floors() {
        assert!(check_max_attempts(0).is_err());
        assert!(check_max_attempts(1).is_ok());
        assert!(check_visibility(Duration::from_millis(99)).is_err());
        assert!(check_visibility(MIN_VISIBILITY).is_ok());
        assert!(check_visibility(MAX_DURATION + Duration::from_secs(1)).is_err());
        assert_eq!(check_millis(Duration::from_secs(2)), Ok(2000));
        assert!(check_millis(Duration::ZERO).is_err());
    }
}
