//! [`Backoff`]: how long a failed job waits before its next attempt.

use std::time::Duration;

/// How long a failed job waits before its next attempt. Set per job with
/// `#[job(backoff = "...")]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backoff {
    /// After attempt `n`, wait `base × 2^(n−1)`, capped at `max`, with equal
    /// jitter: a random delay between half that and all of it, so jobs that
    /// failed together do not return together. `"exponential(1s, 10m)"`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Always the same delay, without jitter. `"fixed(30s)"`.
    Fixed {
        /// The delay.
        delay: Duration,
    },
    /// Retry at once, as the reference design does. `"none"`.
    None,
}

impl Backoff {
    /// The default: exponential from 1 s, capped at 10 minutes, with jitter
    /// (1 s, 2 s, 4 s, … give or take half).
    pub const DEFAULT: Self = Self::exponential(Duration::from_secs(1), Duration::from_secs(600));

    /// [`Backoff::Exponential`] from `base`, capped at `max`.
    pub const fn exponential(base: Duration, max: Duration) -> Self {
        Self::Exponential { base, max }
    }

    /// [`Backoff::Fixed`]: always `delay`.
    pub const fn fixed(delay: Duration) -> Self {
        Self::Fixed { delay }
    }

    /// The delay before the attempt after attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        match *self {
            Self::Exponential { base, max } => {
                let exp = attempt.saturating_sub(1).min(40);
                let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let full = ms(base).saturating_mul(1u64 << exp).min(ms(max));
                let half = full / 2;
                Duration::from_millis(half + rand::random_range(0..=full - half))
            }
            Self::Fixed { delay } => delay,
            Self::None => Duration::ZERO,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_with_jitter_and_is_capped() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..200 {
            let d1 = b.delay(1).as_millis();
            let d3 = b.delay(3).as_millis();
            let d9 = b.delay(9).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            assert!((200..=400).contains(&d3), "{d3}");
            assert!((500..=1000).contains(&d9), "{d9}");
        }
        assert!(Backoff::DEFAULT.delay(1_000) <= Duration::from_secs(600));
    }

    #[test]
    fn fixed_and_none_do_not_vary() {
        assert_eq!(
            Backoff::fixed(Duration::from_millis(30)).delay(7),
            Duration::from_millis(30)
        );
        assert_eq!(Backoff::None.delay(3), Duration::ZERO);
    }
}
