//! How long a failed task waits before its next attempt.

use std::time::Duration;

/// Exponential backoff with jitter: attempt `n` waits `base · 2^(n-1)`,
/// capped at `max`, then scaled by a random factor in [0.75, 1.25) so that
/// tasks that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(1), max: Duration::from_secs(3600) }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: i32) -> Duration {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system provides randomness");
        self.delay_with(attempt, u64::from_le_bytes(random) as f64 / u64::MAX as f64)
    }

    /// The wait after `attempt` for a random draw `unit` in [0, 1].
    fn delay_with(&self, attempt: i32, unit: f64) -> Duration {
        let doublings = attempt.clamp(1, 63) - 1;
        let exact = self.base.as_secs_f64() * 2f64.powi(doublings);
        let capped = exact.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (0.75 + 0.5 * unit.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_with_jitter() {
        let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) };
        assert_eq!(b.delay_with(1, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay_with(3, 0.5), Duration::from_secs(4));
        assert_eq!(b.delay_with(30, 0.5), Duration::from_secs(60));
        assert_eq!(b.delay_with(1, 0.0), Duration::from_millis(750));
        assert_eq!(b.delay_with(1, 1.0), Duration::from_millis(1250));
        for attempt in 1..10 {
            let d = b.delay(attempt);
            let middle = b.delay_with(attempt, 0.5).as_secs_f64();
            assert!(d.as_secs_f64() >= middle * 0.74 && d.as_secs_f64() <= middle * 1.26, "{d:?}");
        }
    }
}
