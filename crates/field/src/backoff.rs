//! The reconnection backoff both brokers' drivers use (`broker_reconnect_max_ms`).
//!
//! 250 ms doubling up to the cap, each wait drawn uniformly from the upper half of the current
//! step (`[step / 2, step]`, "equal jitter"): several nodes that lost the same broker do not
//! knock on it in lockstep, and no wait is ever longer than the cap, so ingestion resumes
//! within about the cap of the broker's return however long it was away.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use espwatch_core::rng::SimRng;

/// First step of the backoff (less when the cap is smaller).
pub const FIRST_STEP: Duration = Duration::from_millis(250);

/// Waits between connection attempts: see the module documentation.
pub struct Backoff {
    step: Duration,
    max: Duration,
    rng: SimRng,
}

impl Backoff {
    /// A backoff capped at `max` (at least 1 ms), seeded from the process's hash keys (random
    /// per process, so nodes started together draw different waits).
    pub fn new(max: Duration) -> Backoff {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        Backoff::with_seed(max, hasher.finish())
    }

    /// [`Backoff::new`] with a chosen seed (tests).
    pub fn with_seed(max: Duration, seed: u64) -> Backoff {
        let max = max.max(Duration::from_millis(1));
        Backoff {
            step: FIRST_STEP.min(max),
            max,
            rng: SimRng::new(seed),
        }
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Back to the first step (after a connection succeeded).
    pub fn reset(&mut self) {
        self.step = FIRST_STEP.min(self.max);
    }

    /// The next wait, in `[step / 2, step]`; the step then doubles, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + (step - half).mul_f64(self.rng.unit())
    }
}

/// The longest wait a driver has slept between two attempts, in milliseconds, for the status
/// (`reconnect_longest_wait_ms`): with the cap beside it, monitoring and tests see that the
/// cap holds without timing anything.
#[derive(Default)]
pub struct LongestWait(AtomicU64);

impl LongestWait {
    pub fn record(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_250_ms_with_jitter_and_never_exceed_the_cap() {
        let max = Duration::from_secs(2);
        for seed in 0..200 {
            let mut backoff = Backoff::with_seed(max, seed);
            let steps = [250, 500, 1000, 2000, 2000, 2000, 2000];
            for step in steps {
                let step = Duration::from_millis(step);
                let wait = backoff.next_wait();
                assert!(
                    wait >= step / 2 && wait <= step,
                    "seed {seed}: {wait:?} outside [{:?}, {step:?}]",
                    step / 2
                );
            }
            backoff.reset();
            assert!(backoff.next_wait() <= FIRST_STEP);
        }
    }

    #[test]
    fn waits_are_spread_not_in_lockstep() {
        let max = Duration::from_secs(2);
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|seed| {
                let mut backoff = Backoff::with_seed(max, seed);
                for _ in 0..5 {
                    backoff.next_wait();
                }
                backoff.next_wait()
            })
            .collect();
        assert!(waits.len() > 40, "{waits:?}");
        assert!(waits.iter().all(|w| *w >= max / 2 && *w <= max));
    }

    #[test]
    fn a_cap_below_the_first_step_is_the_step() {
        let mut backoff = Backoff::with_seed(Duration::from_millis(100), 7);
        for _ in 0..10 {
            assert!(backoff.next_wait() <= Duration::from_millis(100));
        }
        let mut zero = Backoff::with_seed(Duration::ZERO, 7);
        assert!(zero.next_wait() <= Duration::from_millis(1));
    }

    #[test]
    fn the_longest_wait_is_kept() {
        let longest = LongestWait::default();
        for ms in [250, 1900, 700] {
            longest.record(Duration::from_millis(ms));
        }
        assert_eq!(longest.ms(), 1900);
    }
}
