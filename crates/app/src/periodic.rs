//! The loop every background job shares, with what differs between them made explicit:
//!
//! - [`Periodic::start`]: a round at once, then the next after the wait the round chose
//!   ([`crate::retention::RetentionJob`], [`crate::audit_retention::AuditRetentionJob`]);
//! - [`Periodic::start_every`]: a round on each tick of an [`Every`] schedule (period, what a
//!   late tick does, when the first falls), until a round answers [`Next::Stop`] (the server's
//!   audit summaries and chain anchoring, the sweep of repeated errors: they stop when the
//!   weak handle to what they serve no longer upgrades).
//!
//! Both end at [`Periodic::stop`], the shutdown signal: a running round is dropped at its next
//! await point, so a round must leave nothing half done that the next round cannot finish.
//! Dropping the handle does not stop the task (it then ends only by [`Next::Stop`]).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// What a round of [`Periodic::start_every`] tells the loop.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next tick.
    Continue,
    /// End the task.
    Stop,
}

/// When the first tick of an [`Every`] falls.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FirstTick {
    /// At once (as `tokio::time::interval`).
    Now,
    /// One period from when the interval is made.
    AfterPeriod,
}

/// An interval schedule with every choice spelled out.
#[derive(Copy, Clone, Debug)]
pub struct Every {
    /// Must not be zero.
    pub period: Duration,
    /// What happens to ticks missed while a round ran long (Tokio's default is `Burst`).
    pub missed: MissedTickBehavior,
    pub first: FirstTick,
}

impl Every {
    /// The Tokio interval of this schedule, from now (needs a Tokio runtime). For a loop that
    /// waits on other things in the same `select!` and so cannot be a [`Periodic`] of its own
    /// (a live connection's re-check).
    pub fn interval(&self) -> Interval {
        let start = match self.first {
            FirstTick::Now => Instant::now(),
            FirstTick::AfterPeriod => Instant::now() + self.period,
        };
        let mut ticks = tokio::time::interval_at(start, self.period);
        ticks.set_missed_tick_behavior(self.missed);
        ticks
    }
}

/// A job's background task, named for the logs; made idle by [`Periodic::new`], started by
/// [`Periodic::start`] or [`Periodic::start_every`].
pub struct Periodic {
    name: &'static str,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Periodic {
    pub fn new(name: &'static str) -> Periodic {
        Periodic {
            name,
            stop: Arc::default(),
            task: Mutex::new(None),
        }
    }

    /// Runs `round` now (needs a Tokio runtime) and again after each wait it returns. A
    /// second start replaces nothing: only the first task is kept to be stopped.
    pub fn start<R, F>(&self, mut round: R)
    where
        R: FnMut() -> F + Send + 'static,
        F: Future<Output = Duration> + Send + 'static,
    {
        let (stop, name) = (self.stop.clone(), self.name);
        self.keep(tokio::spawn(async move {
            loop {
                let wait = tokio::select! {
                    wait = round() => wait,
                    _ = stop.notified() => break,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.notified() => break,
                }
            }
            tracing::debug!(task = name, "periodic task stopped");
        }));
    }

    /// Runs `round` on each tick of `every` (needs a Tokio runtime; the interval starts now)
    /// until it answers [`Next::Stop`] or [`Periodic::stop`] is called.
    pub fn start_every<R, F>(&self, every: Every, mut round: R)
    where
        R: FnMut() -> F + Send + 'static,
        F: Future<Output = Next> + Send + 'static,
    {
        let (stop, name) = (self.stop.clone(), self.name);
        self.keep(tokio::spawn(async move {
            let mut ticks = every.interval();
            let why = loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.notified() => break "stopped",
                }
                let next = tokio::select! {
                    next = round() => next,
                    _ = stop.notified() => break "stopped",
                };
                if next == Next::Stop {
                    break "its round said stop";
                }
            };
            tracing::debug!(task = name, why, "periodic task ended");
        }));
    }

    fn keep(&self, task: JoinHandle<()>) {
        let mut slot = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(task);
        }
    }

    /// Ends the task (a running round is dropped at its next await point) and waits for it.
    pub async fn stop(&self) {
        self.stop.notify_one();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    async fn until(what: impl Fn() -> bool) {
        let start = Instant::now();
        while !what() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn rounds_follow_their_own_waits_until_stopped() {
        let rounds = Arc::new(AtomicU32::new(0));
        let job = Periodic::new("test");
        let counted = rounds.clone();
        job.start(move || {
            let counted = counted.clone();
            async move {
                // Quick retries for three rounds, then an hour.
                match counted.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Duration::from_millis(5),
                    _ => Duration::from_secs(3600),
                }
            }
        });
        until(|| rounds.load(Ordering::SeqCst) == 4).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            rounds.load(Ordering::SeqCst),
            4,
            "the fourth round asked for an hour"
        );
        tokio::time::timeout(Duration::from_secs(5), job.stop())
            .await
            .expect("stopped while waiting");
    }

    #[tokio::test]
    async fn stop_ends_the_loop_and_drops_a_running_round() {
        let (started, finished) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let job = Periodic::new("test");
        let (s, f) = (started.clone(), finished.clone());
        job.start(move || {
            let (s, f) = (s.clone(), f.clone());
            async move {
                // Every other round is long: the stop comes during one.
                if s.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                f.fetch_add(1, Ordering::SeqCst);
                Duration::from_millis(1)
            }
        });
        until(|| started.load(Ordering::SeqCst) == 2).await;
        tokio::time::timeout(Duration::from_secs(5), job.stop())
            .await
            .expect("the running round was dropped");
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(started.load(Ordering::SeqCst), 2, "no round after stop");
    }

    /// A round's closure holds a token: when the task has ended, the closure is gone.
    fn new_token() -> (Arc<()>, std::sync::Weak<()>) {
        let token = Arc::new(());
        let weak = Arc::downgrade(&token);
        (token, weak)
    }

    const FAST: Every = Every {
        period: Duration::from_millis(1),
        missed: MissedTickBehavior::Delay,
        first: FirstTick::Now,
    };

    #[tokio::test]
    async fn every_ends_when_its_round_says_stop() {
        let rounds = Arc::new(AtomicU32::new(0));
        let (token, gone) = new_token();
        let job = Periodic::new("test");
        let counted = rounds.clone();
        job.start_every(FAST, move || {
            let (counted, _token) = (counted.clone(), token.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 2 {
                    Next::Stop
                } else {
                    Next::Continue
                }
            }
        });
        // Nobody calls stop: the task ends by itself, dropping its round.
        until(|| gone.upgrade().is_none()).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3, "no round after Stop");
        tokio::time::timeout(Duration::from_secs(5), job.stop())
            .await
            .expect("stop after the end returns");
    }

    #[tokio::test]
    async fn every_ends_on_stop_while_waiting_and_during_a_round() {
        // Waiting for a first tick an hour away: stop ends it, no round ever ran.
        let (token, gone) = new_token();
        let job = Periodic::new("test");
        let rounds = Arc::new(AtomicU32::new(0));
        let counted = rounds.clone();
        job.start_every(
            Every {
                period: Duration::from_secs(3600),
                missed: MissedTickBehavior::Burst,
                first: FirstTick::AfterPeriod,
            },
            move || {
                let (counted, _token) = (counted.clone(), token.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Next::Continue
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(5), job.stop())
            .await
            .expect("stopped while waiting for the first tick");
        assert!(gone.upgrade().is_none(), "the task is gone");
        assert_eq!(rounds.load(Ordering::SeqCst), 0);

        // Rounds that never finish on their own: stop drops the running one.
        let (token, gone) = new_token();
        let started = Arc::new(AtomicU32::new(0));
        let job = Periodic::new("test");
        let s = started.clone();
        job.start_every(FAST, move || {
            let (s, _token) = (s.clone(), token.clone());
            async move {
                if s.fetch_add(1, Ordering::SeqCst) == 1 {
                    std::future::pending::<()>().await;
                }
                Next::Continue
            }
        });
        until(|| started.load(Ordering::SeqCst) == 2).await;
        tokio::time::timeout(Duration::from_secs(5), job.stop())
            .await
            .expect("the running round was dropped");
        assert!(gone.upgrade().is_none(), "the task is gone");
        assert_eq!(started.load(Ordering::SeqCst), 2, "no round after stop");
    }

    #[tokio::test]
    async fn every_builds_the_interval_it_names() {
        let ticks = Every {
            period: Duration::from_secs(60),
            missed: MissedTickBehavior::Skip,
            first: FirstTick::AfterPeriod,
        }
        .interval();
        assert_eq!(ticks.missed_tick_behavior(), MissedTickBehavior::Skip);
        assert_eq!(ticks.period(), Duration::from_secs(60));
    }
}
