//! Reconnect delays: exponential, capped, with jitter so that many app instances do not reconnect to a
//! restarted Asterisk in lock-step. Pure: the caller supplies the randomness.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delay before the next attempt. `jitter` in `[0, 1)` picks a point in the upper half of the
    /// exponential step ("equal jitter"), so a delay never collapses to zero.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        step.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// Called after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6)
            .map(|_| backoff.next_delay(0.999_999).as_millis())
            .collect();
        assert_eq!(delays, vec![99, 199, 399, 799, 999, 999]);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(50));
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for i in 0..10 {
            let jitter = f64::from(i) / 10.0;
            let delay = backoff.next_delay(jitter);
            let step = Duration::from_millis(100) * (1 << i);
            let step = step.min(Duration::from_secs(10));
            assert!(delay >= step / 2 && delay <= step, "{delay:?} vs {step:?}");
        }
    }
}
