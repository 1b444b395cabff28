//! Repeated refusals are logged once, then counted (issue 17, error policy). A 503 is the
//! server telling clients about a condition (the database is down and the spool is full, the
//! ingest budget is used up, the identity store is unreachable), and under load that condition
//! answers hundreds of requests a second: one ERROR line each would bury everything else.
//!
//! So per error kind (`spool_full`, `overloaded`, ...) the first 503 of a burst is logged at
//! ERROR in its request line as before; the following ones keep their request line, at INFO;
//! while the burst lasts one ERROR line every [`SUMMARY_EVERY`] gives the count and the latest
//! cause; and when no such 503 has been answered for [`QUIET`], one line closes the burst with
//! what was not summarised yet. 500s (bugs) are always logged one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use espwatch_app::periodic::{Every, FirstTick, Next, Periodic};
use tokio::time::MissedTickBehavior;

/// How often a burst is summarised while it lasts.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// A burst ends after this long without one of its refusals.
pub const QUIET: Duration = Duration::from_secs(60);

/// When quiet bursts are looked for: every 5 s from the start, late ticks caught up at once.
const SWEEP_EVERY: Every = Every {
    period: Duration::from_secs(5),
    missed: MissedTickBehavior::Burst,
    first: FirstTick::Now,
};

struct Burst {
    started: Instant,
    last_seen: Instant,
    last_summary: Instant,
    /// Refusals since the last summary (or since the first, logged one).
    unreported: u64,
    total: u64,
    last_cause: String,
}

/// The bursts going on, per error kind.
#[derive(Default)]
pub struct RepeatedErrors {
    bursts: Mutex<HashMap<&'static str, Burst>>,
}

impl RepeatedErrors {
    /// With a task that closes quiet bursts (needs a Tokio runtime); the task ends with the
    /// last reference.
    pub fn start() -> Arc<RepeatedErrors> {
        let repeats = Arc::new(RepeatedErrors::default());
        let weak: Weak<RepeatedErrors> = Arc::downgrade(&repeats);
        Periodic::new("repeated_errors.sweep").start_every(SWEEP_EVERY, move || {
            let next = match weak.upgrade() {
                Some(repeats) => {
                    repeats.sweep(Instant::now());
                    Next::Continue
                }
                None => Next::Stop,
            };
            std::future::ready(next)
        });
        repeats
    }

    /// Notes a 503 of `kind`; true when its request line should be logged at ERROR (the first
    /// of a burst).
    pub fn note(&self, kind: &'static str, cause: &str) -> bool {
        self.note_at(kind, cause, Instant::now())
    }

    fn note_at(&self, kind: &'static str, cause: &str, now: Instant) -> bool {
        let mut bursts = self.bursts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(burst) = bursts.get_mut(kind) {
            if now.saturating_duration_since(burst.last_seen) < QUIET {
                burst.last_seen = now;
                burst.unreported += 1;
                burst.total += 1;
                if now.saturating_duration_since(burst.last_summary) >= SUMMARY_EVERY {
                    burst.last_cause = cause.to_owned();
                    summarise(kind, burst, now, false);
                    burst.last_summary = now;
                    burst.unreported = 0;
                } else if burst.unreported == 1 || burst.unreported.is_power_of_two() {
                    // Kept fresh cheaply enough for the summary.
                    burst.last_cause = cause.to_owned();
                }
                return false;
            }
            let ended = bursts.remove(kind).expect("present");
            summarise(kind, &ended, now, true);
        }
        bursts.insert(
            kind,
            Burst {
                started: now,
                last_seen: now,
                last_summary: now,
                unreported: 0,
                total: 1,
                last_cause: cause.to_owned(),
            },
        );
        true
    }

    /// Closes the bursts quiet for [`QUIET`], logging what they had not reported.
    pub fn sweep(&self, now: Instant) {
        let mut bursts = self.bursts.lock().unwrap_or_else(|p| p.into_inner());
        bursts.retain(|kind, burst| {
            if now.saturating_duration_since(burst.last_seen) < QUIET {
                return true;
            }
            summarise(kind, burst, now, true);
            false
        });
    }

    /// Bursts going on: (kind, refusals so far).
    pub fn active(&self) -> Vec<(&'static str, u64)> {
        let bursts = self.bursts.lock().unwrap_or_else(|p| p.into_inner());
        let mut active: Vec<_> = bursts.iter().map(|(k, b)| (*k, b.total)).collect();
        active.sort();
        active
    }
}

fn summarise(kind: &str, burst: &Burst, now: Instant, ended: bool) {
    let secs = now.saturating_duration_since(burst.started).as_secs_f64();
    if ended {
        if burst.total > 1 {
            tracing::warn!(
                target: "espwatch::request",
                error_kind = kind,
                unreported = burst.unreported,
                total = burst.total,
                last_cause = %burst.last_cause,
                "503 {kind}: {} requests refused in {:.0} s, the last {:.0} s ago; over",
                burst.total,
                burst.last_seen.saturating_duration_since(burst.started).as_secs_f64(),
                now.saturating_duration_since(burst.last_seen).as_secs_f64()
            );
        }
    } else {
        tracing::error!(
            target: "espwatch::request",
            error_kind = kind,
            count = burst.unreported,
            total = burst.total,
            last_cause = %burst.last_cause,
            "503 {kind}: {} more requests refused in the last {:.0} s ({} in {secs:.0} s)",
            burst.unreported,
            now.saturating_duration_since(burst.last_summary).as_secs_f64(),
            burst.total
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_once_then_counted_and_closed_when_quiet() {
        let repeats = RepeatedErrors::default();
        let t0 = Instant::now();
        assert!(repeats.note_at("spool_full", "full", t0));
        for i in 1..1_000u64 {
            assert!(!repeats.note_at("spool_full", "full", t0 + Duration::from_millis(i * 50)));
        }
        // Another kind has its own burst.
        assert!(repeats.note_at("overloaded", "budget", t0));
        assert_eq!(
            repeats.active(),
            vec![("overloaded", 1), ("spool_full", 1_000)]
        );
        // A summary a minute in resets the unreported count but keeps the burst.
        let t1 = t0 + Duration::from_secs(61);
        assert!(!repeats.note_at("spool_full", "full", t1));
        {
            let bursts = repeats.bursts.lock().unwrap();
            assert_eq!(bursts["spool_full"].unreported, 0);
            assert_eq!(bursts["spool_full"].total, 1_001);
        }
        // Quiet for a minute: swept; the next refusal starts a new burst, logged again.
        repeats.sweep(t1 + QUIET);
        assert!(repeats.active().is_empty());
        assert!(repeats.note_at("spool_full", "full", t1 + QUIET * 2));
    }
}
