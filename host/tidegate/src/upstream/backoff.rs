//! Pauses between attempts to reach a server that is not there yet: growing, capped, and
//! jittered so that the broker's many reconnecting parts do not knock in step.

use std::time::Duration;

/// The pause before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `first` and doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first,
            first,
            max,
        }
    }

    /// The next pause: between half and all of the current step, which then doubles.
    pub fn pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step / 2 + step.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Back to the first step (the server answered).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_jittered_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let steps: Vec<Duration> = (0..5).map(|_| b.pause()).collect();
        for (p, step) in steps.iter().zip([100u64, 200, 400, 400, 400]) {
            let step = Duration::from_millis(step);
            assert!(
                *p >= step / 2 && *p <= step,
                "{p:?} within [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.pause() <= Duration::from_millis(100));
    }
}
