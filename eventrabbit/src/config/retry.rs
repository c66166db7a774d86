//! [`RetryConfig`]: how failed handlers are retried.

use std::time::Duration;

/// How failed handlers are retried. Delays grow as
/// `delay * multiplier^(attempt - 1)`, capped at `max_delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt; `None` retries forever.
    pub max_retries: Option<u32>,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Factor applied to the delay for each further retry.
    pub multiplier: f64,
    /// Upper bound of the delay.
    pub max_delay: Duration,
    /// Spread retries out: each delay is 50 %, 75 % or 100 % of the computed one, picked
    /// at random, so that messages failing together do not all come back together. Three
    /// steps rather than any value, because each distinct delay is a wait queue.
    pub jitter: bool,
}

/// A handler's own retry policy (`#[consumer(retry(..))]`): each `Some` replaces the
/// queue's value, each `None` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryOverride {
    /// Replaces [`RetryConfig::max_retries`].
    pub max_retries: Option<u32>,
    /// Replaces [`RetryConfig::delay`].
    pub delay: Option<Duration>,
    /// Replaces [`RetryConfig::multiplier`].
    pub multiplier: Option<f64>,
    /// Replaces [`RetryConfig::max_delay`].
    pub max_delay: Option<Duration>,
    /// Replaces [`RetryConfig::jitter`].
    pub jitter: Option<bool>,
}

impl RetryOverride {
    /// `base` with this override's values in place of its own.
    #[must_use]
    pub fn apply(&self, base: &RetryConfig) -> RetryConfig {
        RetryConfig {
            max_retries: self.max_retries.or(base.max_retries),
            delay: self.delay.unwrap_or(base.delay),
            multiplier: self.multiplier.unwrap_or(base.multiplier),
            max_delay: self.max_delay.unwrap_or(base.max_delay),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }
}

impl RetryConfig {
    /// Default delay before the first retry (as in Python eventrabbit).
    pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);
    /// Default growth factor.
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    /// Default cap on the delay.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);

    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Sets the delay before the first retry.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the growth factor of the delay (values below 1 are treated as 1).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Spreads retries over 50 %, 75 % and 100 % of the computed delay (see
    /// [`RetryConfig::jitter`]).
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay to wait before retry number `retry`: [`delay_for`](Self::delay_for),
    /// jittered if [`jitter`](Self::jitter) is set.
    #[must_use]
    pub fn pick_delay(&self, retry: u32) -> Duration {
        let full = self.delay_for(retry);
        if !self.jitter {
            return full;
        }
        let quarters = fastrand::u32(2..=4);
        Duration::from_millis((full.as_millis() as u64 * u64::from(quarters) / 4).max(1))
    }

    /// Sets the cap of the delay.
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The delay before retry number `retry` (1-based), rounded to whole milliseconds
    /// (the broker's TTL unit) and at least 1 ms.
    #[must_use]
    pub fn delay_for(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(retry.saturating_sub(1).min(64) as i32);
        let ms = (self.delay.as_millis() as f64 * factor).min(self.max_delay.as_millis() as f64);
        Duration::from_millis((ms.round() as u64).max(1))
    }

    /// Whether a message that has been retried `retries` times may be retried again.
    #[must_use]
    pub fn allows(&self, retries: u32) -> bool {
        self.max_retries.is_none_or(|max| retries < max)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: None,
            delay: Self::DEFAULT_DELAY,
            multiplier: Self::DEFAULT_MULTIPLIER,
            max_delay: Self::DEFAULT_MAX_DELAY,
            jitter: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let r = RetryConfig::default()
            .with_delay(Duration::from_millis(100))
            .with_multiplier(3.0)
            .with_max_delay(Duration::from_millis(1000));
        assert_eq!(r.delay_for(1), Duration::from_millis(100));
        assert_eq!(r.delay_for(2), Duration::from_millis(300));
        assert_eq!(r.delay_for(3), Duration::from_millis(900));
        assert_eq!(r.delay_for(4), Duration::from_millis(1000));
        assert_eq!(r.delay_for(400), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_stays_on_three_steps_and_overrides_keep_the_rest() {
        let r = RetryConfig::default()
            .with_delay(Duration::from_millis(400))
            .with_jitter(true);
        let seen: std::collections::BTreeSet<_> = (0..200).map(|_| r.pick_delay(1)).collect();
        let steps: std::collections::BTreeSet<_> = [200, 300, 400]
            .into_iter()
            .map(Duration::from_millis)
            .collect();
        assert_eq!(seen, steps);
        let o = RetryOverride {
            max_retries: Some(1),
            ..RetryOverride::default()
        };
        let applied = o.apply(&r);
        assert_eq!(applied.max_retries, Some(1));
        assert_eq!(applied.delay, r.delay);
        assert!(applied.jitter);
    }

    #[test]
    fn max_retries_bounds_attempts() {
        let r = RetryConfig::default().with_max_retries(2);
        assert!(r.allows(0) && r.allows(1) && !r.allows(2));
        assert!(RetryConfig::default().allows(u32::MAX - 1));
    }
}
