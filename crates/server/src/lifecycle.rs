//! The retention job: applies the configured retention policy in the background (once at
//! start, then every `retention_interval_secs`; a failed round is retried after a minute)
//! through `espwatch_archive::run_retention`, and keeps the outcome for `/health/ready`.
//! A round that cannot write or verify the archive deletes nothing and says so there.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use espwatch_archive::{Archive, Policy, RetentionReport};
use espwatch_core::Timestamp;
use espwatch_store::{Retention, Store};
use serde::Serialize;

/// What `/health/ready` reports under `checks.retention`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RetentionStatus {
    /// Where expired readings go.
    pub archive: String,
    pub rounds_ok: u64,
    /// Failed rounds in a row (0: the last one succeeded).
    pub consecutive_failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ok_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_report: Option<RetentionReport>,
}

pub struct RetentionJob {
    status: Mutex<RetentionStatus>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// After a failed round, the next attempt comes this soon (or at the interval if shorter).
const RETRY_AFTER: Duration = Duration::from_secs(60);

impl RetentionJob {
    /// Starts the job when a policy is configured; `None` otherwise. Needs a Tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        retention: Arc<dyn Retention>,
        archive: Archive,
        policy: Policy,
        interval: Duration,
    ) -> Option<Arc<RetentionJob>> {
        if policy.is_empty() {
            return None;
        }
        let job = Arc::new(RetentionJob {
            status: Mutex::new(RetentionStatus {
                archive: archive.url().to_owned(),
                ..RetentionStatus::default()
            }),
            task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&job);
        let task = tokio::spawn(async move {
            loop {
                let now = Timestamp(espwatch_archive::target::now_micros());
                let result = espwatch_archive::run_retention(
                    store.as_ref(),
                    retention.as_ref(),
                    &archive,
                    &policy,
                    now,
                )
                .await;
                let Some(job) = weak.upgrade() else { return };
                let wait = {
                    let mut status = job.status.lock().unwrap_or_else(PoisonError::into_inner);
                    match result {
                        Ok(report) => {
                            if report.days_archived > 0 || report.days_deferred > 0 {
                                tracing::info!(
                                    days = report.days_archived,
                                    readings = report.readings_archived,
                                    bytes = report.bytes_written,
                                    deferred = report.days_deferred,
                                    "retention: expired readings archived, verified and deleted"
                                );
                            }
                            status.rounds_ok += 1;
                            status.consecutive_failures = 0;
                            status.last_ok_at = Some(now);
                            status.last_error = None;
                            status.last_report = Some(report);
                            interval
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "retention round failed; nothing unverified was deleted; retrying");
                            status.consecutive_failures += 1;
                            status.last_error = Some(format!("{e:#}"));
                            interval.min(RETRY_AFTER)
                        }
                    }
                };
                drop(job);
                tokio::time::sleep(wait).await;
            }
        });
        *job.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Some(job)
    }

    pub fn status(&self) -> RetentionStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the background task (at shutdown, before the store closes).
    pub fn stop(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for RetentionJob {
    fn drop(&mut self) {
        self.stop();
    }
}
