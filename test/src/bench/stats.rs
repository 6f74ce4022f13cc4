//! Summaries of timing samples: min, median, p95.

use serde::Serialize;

/// Summary of a set of samples, in the samples' unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median (mean of the two middle samples when `n` is even).
    pub median: f64,
    /// 95th percentile, nearest-rank.
    pub p95: f64,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        // Nearest rank: the smallest sample with at least 95% of samples at or below it.
        let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
        Some(Summary {
            n,
            min: sorted[0],
            median,
            p95: sorted[rank - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_medians() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.n, s.min, s.median, s.p95), (3, 1.0, 3.0, 5.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn p95_is_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p95, 95.0);
        let samples: Vec<f64> = (1..=30).map(f64::from).collect();
        // ceil(0.95 * 30) = 29
        assert_eq!(Summary::of(&samples).unwrap().p95, 29.0);
    }

    #[test]
    fn empty_has_no_summary() {
        assert!(Summary::of(&[]).is_none());
    }
}
