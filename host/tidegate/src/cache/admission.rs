//! Which statement shapes the cache takes. Every fingerprint starts admitted. One whose recent
//! lookups almost never hit — a point read over a large table with a fresh key each time —
//! pays a Redis round trip per statement for nothing, so after a window of such lookups it is
//! demoted: its reads skip the cache (no lookup, no store, free to use a replica) except one in
//! [`SAMPLE_EVERY`], whose results decide whether it is promoted again. Skipping the cache is
//! always safe; admission only decides where the cache is worth its cost.

use std::collections::HashMap;
use std::sync::Mutex;

/// Lookups of an admitted shape judged at once.
const WINDOW: u32 = 256;
/// A demoted shape is looked up once per this many reads …
const SAMPLE_EVERY: u32 = 32;
/// … and judged again after this many sampled lookups.
const SAMPLES: u32 = 16;
/// A shape is worth caching when at least one lookup in this many hits.
const MIN_HIT_ONE_IN: u32 = 10;
/// Shapes remembered at most (then forgotten all at once: they start admitted again).
const MAX_SHAPES: usize = 10_000;

#[derive(Default)]
struct Shape {
    lookups: u32,
    hits: u32,
    demoted: bool,
    skipped: u32,
}

/// Per-fingerprint lookup outcomes.
#[derive(Default)]
pub struct Admission {
    shapes: Mutex<HashMap<u128, Shape>>,
}

impl Admission {
    /// Whether a read of shape `fp` should use the cache now; `adaptive` false
    /// (`cache.admission = "always"`) admits everything.
    pub fn admit(&self, fp: u128, adaptive: bool) -> bool {
        if !adaptive {
            return true;
        }
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        if shapes.len() >= MAX_SHAPES && !shapes.contains_key(&fp) {
            shapes.clear();
        }
        let s = shapes.entry(fp).or_default();
        if !s.demoted {
            return true;
        }
        s.skipped = s.skipped.wrapping_add(1);
        s.skipped % SAMPLE_EVERY == 0
    }

    /// The outcome of a lookup of shape `fp` (ignored for a shape never admitted adaptively).
    pub fn record(&self, fp: u128, hit: bool) {
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = shapes.get_mut(&fp) else {
            return;
        };
        s.lookups += 1;
        s.hits += u32::from(hit);
        if s.lookups >= if s.demoted { SAMPLES } else { WINDOW } {
            s.demoted = s.hits * MIN_HIT_ONE_IN < s.lookups;
            s.lookups = 0;
            s.hits = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` reads of shape 1 whose lookups hit when `hits(i)`; returns how many were
    /// looked up.
    fn run(a: &Admission, n: u32, hits: impl Fn(u32) -> bool) -> u32 {
        run_with(a, true, n, hits)
    }

    fn run_with(a: &Admission, adaptive: bool, n: u32, hits: impl Fn(u32) -> bool) -> u32 {
        let mut looked = 0;
        for i in 0..n {
            if a.admit(1, adaptive) {
                looked += 1;
                a.record(1, hits(i));
            }
        }
        looked
    }

    #[test]
    fn unique_keys_are_demoted_to_sampling_and_hits_promote_again() {
        let a = Admission::default();
        // A fresh key every time: the first window is looked up, then one read in 32.
        assert_eq!(run(&a, WINDOW, |_| false), WINDOW);
        let looked = run(&a, 32_000, |_| false);
        assert_eq!(looked, 32_000 / SAMPLE_EVERY);
        // The workload turns repetitive: the sampled lookups hit, and the shape is admitted
        // again at the latest after one full judgement of its samples.
        run(&a, SAMPLES * SAMPLE_EVERY, |_| true);
        assert_eq!(run(&a, 100, |_| true), 100, "admitted again");
    }

    #[test]
    fn a_shape_that_hits_often_enough_stays_admitted() {
        let a = Admission::default();
        // One hit in five: worth it.
        assert_eq!(run(&a, 10 * WINDOW, |i| i % 5 == 0), 10 * WINDOW);
    }

    #[test]
    fn always_admits_everything() {
        let a = Admission::default();
        assert_eq!(run_with(&a, false, 10 * WINDOW, |_| false), 10 * WINDOW);
    }
}
