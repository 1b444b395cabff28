//! The loop the server's interval jobs share ([`crate::retention::RetentionJob`],
//! [`crate::audit_retention::AuditRetentionJob`]): a round at once, then the next after the
//! wait the round chose, until [`Periodic::stop`]. Stopping drops a running round at its next
//! await point, so a round must leave nothing half done that the next round cannot finish.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A job's background task; made idle by [`Periodic::new`], started by [`Periodic::start`].
#[derive(Default)]
pub struct Periodic {
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Periodic {
    pub fn new() -> Periodic {
        Periodic::default()
    }

    /// Runs `round` now (needs a Tokio runtime) and again after each wait it returns. A
    /// second start replaces nothing: only the first task is kept to be stopped.
    pub fn start<R, F>(&self, mut round: R)
    where
        R: FnMut() -> F + Send + 'static,
        F: Future<Output = Duration> + Send + 'static,
    {
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let wait = tokio::select! {
                    wait = round() => wait,
                    _ = stop.notified() => return,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.notified() => return,
                }
            }
        });
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
        let job = Periodic::new();
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
        let job = Periodic::new();
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
}
