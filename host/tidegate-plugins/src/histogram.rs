//! A latency histogram of relaxed atomics with fixed buckets, for `/metrics`: plugin calls
//! here; pool waits and statement latency in the host, which re-exports it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets; a last one is unbounded.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`BUCKETS`] in nanoseconds.
const BUCKETS_NS: [u128; 16] = {
    let mut ns = [0u128; 16];
    let mut i = 0;
    while i < BUCKETS.len() {
        ns[i] = (BUCKETS[i] * 1e9) as u128;
        i += 1;
    }
    ns
};

/// A latency histogram of relaxed atomics.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// (upper bound, observations in this bucket alone); the last bound is `f64::MAX`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        // Most observations fall in the first buckets: a short scan over integers.
        let ns = d.as_nanos();
        let i = BUCKETS_NS.iter().take_while(|&&b| b < ns).count();
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The values now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: self.sum_us.load(Relaxed) as f64 / 1e6,
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::default();
        for us in [0, 100, 101, 250, 9_999_999, 10_000_001] {
            h.observe(Duration::from_micros(us));
        }
        let counts: Vec<u64> = h.snapshot().buckets.iter().map(|&(_, n)| n).collect();
        assert_eq!(&counts[..3], &[2, 2, 0]);
        assert_eq!(counts[15], 1, "up to 10 s");
        assert_eq!(counts[16], 1, "unbounded");
        assert_eq!(h.snapshot().count, 6);
    }
}
