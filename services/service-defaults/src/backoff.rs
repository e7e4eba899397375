//! Exponential backoff with jitter, for reconnects and retries.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `min` up to `max`, each drawn from the upper half
/// of its range so that many clients retrying at once spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Delays handed out since the last [`Backoff::reset`].
    pub attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.min.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt += 1;
        let low = ceiling / 2;
        low + ceiling.saturating_sub(low).mul_f64(rand::rng().random::<f64>())
    }

    /// Whether this attempt deserves a log line: the first, then every tenth.
    pub fn worth_logging(&self) -> bool {
        self.attempt <= 1 || self.attempt.is_multiple_of(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_within_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(50));
        for _ in 0..30 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
