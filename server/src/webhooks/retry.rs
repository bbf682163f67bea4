//! When a failed delivery is tried again: exponential backoff with jitter,
//! and a dead letter once attempts run out.

use super::Settle;
use std::time::Duration;

/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The wait after the `attempts`-th failed attempt: `first` doubled per
/// earlier failure, capped at [`MAX_DELAY`], then scaled by `jitter` in
/// [0, 1) into its upper half, so that endpoints that failed together do
/// not all come back at once.
pub fn delay(first: Duration, attempts: u32, jitter: f64) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = doubled.min(MAX_DELAY);
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// What an attempt that failed with `error` leads to, `attempts` counting it.
pub fn after_failure(
    attempts: u32,
    max_attempts: u32,
    first: Duration,
    now_ms: i64,
    jitter: f64,
    error: String,
) -> Settle {
    if attempts >= max_attempts {
        return Settle::Dead { error };
    }
    let wait = delay(first, attempts, jitter);
    Settle::Retry {
        next_ms: now_ms.saturating_add(wait.as_millis() as i64),
        error,
    }
}

/// A jitter in [0, 1), from the operating system's randomness (no seedable
/// generator is needed for spreading retries).
pub fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn waits_double_from_the_first_retry_up_to_the_cap() {
        let cases = [
            (1, 1.0, Duration::from_millis(1000)),
            (2, 1.0, Duration::from_millis(2000)),
            (3, 1.0, Duration::from_millis(4000)),
            (9, 1.0, Duration::from_secs(256)),
            (10, 1.0, MAX_DELAY),
            (40, 1.0, MAX_DELAY),
        ];
        for (attempts, jitter, expected) in cases {
            // jitter 1.0 is clamped to the full wait.
            assert_eq!(delay(SEC, attempts, jitter), expected, "attempt {attempts}");
        }
    }

    #[test]
    fn jitter_spreads_a_wait_over_its_upper_half() {
        assert_eq!(delay(SEC, 2, 0.0), Duration::from_millis(1000));
        assert_eq!(delay(SEC, 2, 0.5), Duration::from_millis(1500));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn the_last_allowed_attempt_parks_the_entry_as_a_dead_letter() {
        let retry = after_failure(2, 3, SEC, 10_000, 0.0, "HTTP 500".into());
        assert_eq!(
            retry,
            Settle::Retry {
                next_ms: 11_000,
                error: "HTTP 500".into()
            }
        );
        let dead = after_failure(3, 3, SEC, 10_000, 0.0, "HTTP 500".into());
        assert_eq!(
            dead,
            Settle::Dead {
                error: "HTTP 500".into()
            }
        );
    }
}
