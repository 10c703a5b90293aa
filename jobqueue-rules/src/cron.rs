//! Cron schedules: parsing an expression and a time zone, and the ticks they
//! give, with croner (cron expressions, seconds optional) and chrono-tz (the
//! IANA zone database). Ticks are instants (ms since the epoch), so the two
//! 01:30s of a night the clocks go back are two different times, and a
//! daylight-saving change follows croner's rules: a fixed time of day that
//! the clocks skip runs once, at the first instant after the gap, and a
//! fixed time they repeat runs once; a pattern with `*` or a step in its
//! minute or hour fields follows elapsed time.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed schedule: an expression and the zone its times are read in.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: Tz,
}

impl CronSpec {
    /// Parses `expr` (five fields, or six with seconds first) in zone `tz`
    /// (an IANA name such as `"Europe/Berlin"`, or `"UTC"`).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, String> {
        let cron =
            Cron::from_str(expr).map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
        let tz = Tz::from_str(tz).map_err(|_| {
            format!("unknown time zone {tz:?}: expected an IANA name such as \"Europe/Berlin\" or \"UTC\"")
        })?;
        Ok(Self { cron, tz })
    }

    /// The first tick strictly after `after_ms` (ms since the epoch), if the
    /// expression has one.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = self.at(after_ms)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The last tick at or before `at_ms`, if any.
    pub fn last_at_or_before(&self, at_ms: i64) -> Option<i64> {
        let start = self.at(at_ms)?;
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    fn at(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }
}

/// `ms` since the epoch as an RFC 3339 UTC time, to the second
/// (`2026-11-30T14:00:00Z`), for people reading a schedule.
pub fn utc_text(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// `ms` since the epoch as an RFC 3339 UTC time to the millisecond
/// (`2026-11-30T14:00:00.123Z`), for tools that print a job's timestamps;
/// `None` outside the years chrono can represent.
pub fn utc_millis_text(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Checks an expression and a zone; the reason when either is unusable.
pub fn check_cron(expr: &str, tz: &str) -> Result<(), String> {
    CronSpec::parse(expr, tz).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn timestamps_read_as_utc_text_to_the_millisecond() {
        let t = ms("2026-12-01T05:51:58.123Z");
        assert_eq!(
            utc_millis_text(t).as_deref(),
            Some("2026-12-01T05:51:58.123Z")
        );
        assert_eq!(
            utc_millis_text(0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(utc_millis_text(i64::MAX), None);
        assert_eq!(utc_text(t), "2026-12-01T05:51:58Z");
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        assert!(check_cron("0 */5 * * * *", "Europe/Berlin").is_ok());
        assert!(check_cron("*/5 * * * *", "UTC").is_ok());
        let e = check_cron("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("invalid cron expression"), "{e}");
        let e = check_cron("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
    }

    #[test]
    fn seconds_are_optional_and_ticks_are_strictly_after() {
        let every_second = CronSpec::parse("* * * * * *", "UTC").unwrap();
        let t = ms("2026-11-30T10:00:00Z");
        assert_eq!(every_second.next_after(t), Some(t + 1000));
        assert_eq!(every_second.next_after(t + 1), Some(t + 1000));
        assert_eq!(every_second.last_at_or_before(t + 1500), Some(t + 1000));
    }

    #[test]
    fn a_fixed_time_the_clocks_skip_runs_once_after_the_gap() {
        // 2026-03-08: New York clocks go from 02:00 to 03:00 (EST to EDT).
        let spec = CronSpec::parse("0 30 2 * * *", "America/New_York").unwrap();
        let next = spec.next_after(ms("2026-03-08T00:00:00-05:00")).unwrap();
        assert_eq!(next, ms("2026-03-08T03:00:00-04:00"));
        let after = spec.next_after(next).unwrap();
        assert_eq!(after, ms("2026-03-09T02:30:00-04:00"));
    }

    #[test]
    fn a_fixed_time_the_clocks_repeat_runs_once() {
        // 2026-11-01: New York clocks go from 02:00 EDT back to 01:00 EST, so
        // 01:30 happens twice.
        let spec = CronSpec::parse("0 30 1 * * *", "America/New_York").unwrap();
        let first = spec.next_after(ms("2026-11-01T00:00:00-04:00")).unwrap();
        assert_eq!(first, ms("2026-11-01T01:30:00-04:00"));
        let next = spec.next_after(first).unwrap();
        assert_eq!(
            next,
            ms("2026-11-02T01:30:00-05:00"),
            "not again at 01:30 EST"
        );
    }

    #[test]
    fn an_interval_follows_elapsed_time_through_a_change() {
        // Every 30 minutes through the fall-back hour: both 01:30s run.
        let spec = CronSpec::parse("0 */30 * * * *", "America/New_York").unwrap();
        let mut t = ms("2026-11-01T01:00:00-04:00");
        let mut ticks = Vec::new();
        for _ in 0..4 {
            t = spec.next_after(t).unwrap();
            ticks.push(t);
        }
        let half_hour = 30 * 60 * 1000;
        assert!(
            ticks.windows(2).all(|w| w[1] - w[0] == half_hour),
            "{ticks:?}"
        );
    }
}
