//! The monotonic clock as a count of nanoseconds, for what every request times: its start and
//! end, and when its server connection was lent and returned.
//!
//! [`std::time::Instant`] reads the same clock (`CLOCK_MONOTONIC`) but keeps seconds and
//! nanoseconds apart, so each difference normalizes a `timespec` with overflow checks; a
//! [`Mono`] is one integer, and a difference is one subtraction. Readings are comparable with
//! each other only, never with an `Instant` or across machines.

use std::time::Duration;

/// A reading of the monotonic clock: nanoseconds since an unspecified start (the boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mono(u64);

impl Mono {
    /// Reads the clock.
    #[inline]
    pub fn now() -> Mono {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        // Both fields are non-negative for this clock; u64 nanoseconds last 584 years.
        Mono(
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec).unwrap_or(0),
        )
    }

    /// Nanoseconds from `earlier` to this reading; 0 if `earlier` is later.
    #[inline]
    pub fn nanos_since(self, earlier: Mono) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The time from `earlier` to this reading; zero if `earlier` is later.
    #[inline]
    pub fn since(self, earlier: Mono) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// The time since this reading.
    pub fn elapsed(self) -> Duration {
        Mono::now().since(self)
    }
}

#[cfg(test)]
mod tests {
    use super::Mono;
    use std::time::{Duration, Instant};

    #[test]
    fn readings_are_the_standard_monotonic_clock_in_nanoseconds() {
        // Read in the order i0, m0, j0, (sleep), j1, m1, i1 from one clock: the Mono interval
        // contains [j0, j1] and lies within [i0, i1], whatever the machine's load.
        let i0 = Instant::now();
        let m0 = Mono::now();
        let j0 = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let j1 = Instant::now();
        let m1 = Mono::now();
        let i1 = Instant::now();
        let mono = m1.since(m0);
        assert!(j1.duration_since(j0) <= mono, "{mono:?}");
        assert!(mono <= i1.duration_since(i0), "{mono:?}");
        assert!(mono >= Duration::from_millis(20), "{mono:?}");
        // Backwards saturates at zero.
        assert_eq!(m0.since(m1), Duration::ZERO);
        assert_eq!(m0.nanos_since(m0), 0);
        assert!(m0.elapsed() >= mono);
    }
}
