//! Latency percentiles.

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds (nearest rank).
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Summarises latencies given in microseconds.
pub(crate) fn percentiles(mut micros: Vec<u64>) -> Percentiles {
    if micros.is_empty() {
        return Percentiles::default();
    }
    micros.sort_unstable();
    let n = micros.len();
    let at = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        ms(micros[rank - 1])
    };
    let sum: u128 = micros.iter().map(|&m| u128::from(m)).sum();
    Percentiles {
        count: n,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: ms(micros[n - 1]),
        mean_ms: ((sum as f64 / n as f64) / 1000.0 * 1000.0).round() / 1000.0,
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let p = percentiles((1..=1000).map(|i| i * 1000).collect());
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p90_ms, 900.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        assert_eq!(p.mean_ms, 500.5);
        assert_eq!(percentiles(vec![]).count, 0);
        assert_eq!(percentiles(vec![7]).p99_ms, 0.007);
    }
}
