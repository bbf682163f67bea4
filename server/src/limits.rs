//! Per-connection rate limits: token buckets for messages and bytes.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u64, capacity: u64) -> Self {
        TokenBucket {
            capacity: capacity as f64,
            rate: rate_per_sec as f64,
            tokens: capacity as f64,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if the bucket holds them.
    pub fn try_take(&mut self, n: u64) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// Message and byte buckets of one connection. A burst of `burst_secs`
/// seconds of the sustained rate is tolerated; beyond it the client is
/// abusing the server and is closed (1008).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    messages: TokenBucket,
    bytes: TokenBucket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateExceeded {
    Messages,
    Bytes,
}

impl ConnectionLimits {
    pub fn new(
        messages_per_sec: u64,
        bytes_per_sec: u64,
        burst: Duration,
        max_message: usize,
    ) -> Self {
        let burst = burst.as_secs_f64().max(1.0);
        let message_capacity = (messages_per_sec as f64 * burst) as u64;
        // One maximal message must always fit, or it could never be sent.
        let byte_capacity = ((bytes_per_sec as f64 * burst) as u64).max(max_message as u64);
        ConnectionLimits {
            messages: TokenBucket::new(messages_per_sec, message_capacity.max(1)),
            bytes: TokenBucket::new(bytes_per_sec, byte_capacity),
        }
    }

    pub fn admit(&mut self, len: usize) -> Result<(), RateExceeded> {
        if !self.messages.try_take(1) {
            return Err(RateExceeded::Messages);
        }
        if !self.bytes.try_take(len as u64) {
            return Err(RateExceeded::Bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_pass_and_sustained_excess_is_refused() {
        let mut limits = ConnectionLimits::new(10, 1000, Duration::from_secs(2), 100);
        for _ in 0..20 {
            assert_eq!(limits.admit(1), Ok(()));
        }
        assert_eq!(limits.admit(1), Err(RateExceeded::Messages));
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..5 {
            assert_eq!(limits.admit(1), Ok(()));
        }
        assert_eq!(limits.admit(1), Err(RateExceeded::Messages));
    }

    #[tokio::test(start_paused = true)]
    async fn byte_budget_refills_over_time() {
        let mut limits = ConnectionLimits::new(1000, 100, Duration::from_secs(1), 100);
        assert_eq!(limits.admit(100), Ok(()));
        assert_eq!(limits.admit(1), Err(RateExceeded::Bytes));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limits.admit(100), Ok(()));
    }
}
