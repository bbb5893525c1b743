use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Backoff for retried calls: exponential, jittered, bounded by an overall deadline.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Budget for one call including all its retries. For a streamed read it is the
    /// longest stretch allowed without receiving a row.
    pub total_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            total_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Never retry; the call still gets `total_timeout` as its deadline.
    pub fn no_retries(total_timeout: Duration) -> Self {
        RetryPolicy {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            multiplier: 1.0,
            total_timeout,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    next: Duration,
    deadline: Instant,
    pub(crate) attempts: u32,
}

impl Backoff {
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        Backoff {
            policy: policy.clone(),
            next: policy.initial_backoff,
            deadline: Instant::now() + policy.total_timeout,
            attempts: 1,
        }
    }

    /// Starts the delay sequence over, keeping the deadline.
    pub(crate) fn restart_delays(&mut self) {
        self.next = self.policy.initial_backoff;
    }

    /// Time left before the deadline, or `None` once it has passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The next jittered delay; grows the base delay for the time after.
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        let grown = base.as_secs_f64() * self.policy.multiplier.max(1.0);
        self.next = Duration::from_secs_f64(grown.min(self.policy.max_backoff.as_secs_f64()));
        // Half fixed, half random: spreads synchronized clients without ever
        // collapsing to a zero wait.
        let half = base / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=half)
        };
        half + jitter
    }

    /// Sleeps before the next attempt. Returns false, without sleeping, when no
    /// retry is allowed or the wait would run past the deadline.
    pub(crate) async fn wait(&mut self) -> bool {
        if self.policy.max_backoff.is_zero() && self.policy.initial_backoff.is_zero() {
            return false;
        }
        let delay = self.next_delay();
        match self.remaining() {
            Some(left) if left > delay => {
                tokio::time::sleep(delay).await;
                self.attempts += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            multiplier: 2.0,
            total_timeout: Duration::from_secs(10),
        };
        let mut b = Backoff::new(&policy);
        let bases = [100u64, 200, 400, 400, 400];
        for base in bases {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} not within [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_stops_at_deadline() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            total_timeout: Duration::from_secs(3),
        };
        let mut b = Backoff::new(&policy);
        let start = Instant::now();
        let mut waits = 0;
        while b.wait().await {
            waits += 1;
            assert!(waits < 100);
        }
        assert!(waits >= 3, "only {waits} retries");
        assert!(start.elapsed() <= Duration::from_secs(3));
        assert_eq!(b.attempts, waits + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retries_policy() {
        let mut b = Backoff::new(&RetryPolicy::no_retries(Duration::from_secs(1)));
        assert!(!b.wait().await);
        assert!(b.remaining().is_some());
    }
}
