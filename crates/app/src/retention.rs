//! The retention job a server runs: applies the configured retention policy in the background
//! (the first round at start, then every `retention_interval_secs`) through
//! `espwatch_archive::run_round`, and keeps the outcome for `/health/ready`
//! (`checks.retention`). A round that cannot write or verify the archive deletes nothing
//! (each well-day is deleted only after its file was read back and checked), is logged once
//! with an error id, and is retried after [`RETRY_AFTER`] (or the interval, if shorter).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use espwatch_archive::{Archive, FailedStage, Policy, RetentionReport};
use espwatch_core::Timestamp;
use espwatch_store::{Retention, RollupTier, Store};
use serde::Serialize;

use crate::periodic::Periodic;

/// After a failed round, the next attempt comes this soon (or at the interval if shorter).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Sums over every round since the server started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RetentionTotals {
    pub days_archived: u64,
    pub readings_archived: u64,
    pub readings_deleted: u64,
    pub bytes_written: u64,
    pub days_deferred: u64,
    pub units_dropped: u64,
    pub rollups_deleted: u64,
}

impl RetentionTotals {
    fn add(&mut self, r: &RetentionReport) {
        self.days_archived += r.days_archived;
        self.readings_archived += r.readings_archived;
        self.readings_deleted += r.readings_deleted;
        self.bytes_written += r.bytes_written;
        self.days_deferred += r.days_deferred;
        self.units_dropped += r.units_dropped;
        self.rollups_deleted += r.rollups_deleted.iter().map(|(_, n)| n).sum::<u64>();
    }
}

/// What `/health/ready` reports under `checks.retention`. No internal error text: the last
/// error is summarised, and its full chain is in the server log under `last_error_id`.
#[derive(Clone, Debug, Serialize)]
pub struct RetentionStatus {
    /// `healthy`, or `degraded` while rounds fail (never a reason to leave rotation).
    pub status: &'static str,
    /// `directory` or `s3`.
    pub archive: &'static str,
    /// How long each tier is kept (`forever` or a duration as configured).
    pub policy: serde_json::Value,
    pub interval_secs: u64,
    /// When the last round started, and when the last successful one did (RFC 3339).
    pub last_run: Option<String>,
    pub last_success: Option<String>,
    /// When the next round starts.
    pub next_run: Option<String>,
    pub rounds: u64,
    pub failed_rounds: u64,
    /// Failed rounds in a row (0: the last one succeeded).
    pub consecutive_failures: u64,
    /// What failed last (`archive` or `store`) and what that means, while failing.
    pub last_error: Option<String>,
    pub last_error_stage: Option<FailedStage>,
    pub last_error_id: Option<String>,
    /// The last round's counts (of a failed round: what it did before failing).
    pub last_round: Option<RetentionReport>,
    pub totals: RetentionTotals,
}

/// The background job; [`RetentionJob::stop`] ends it before the store closes.
pub struct RetentionJob {
    status: Mutex<RetentionStatus>,
    runner: Periodic,
}

fn rfc3339(ts: Timestamp) -> String {
    ts.to_rfc3339()
}

fn now() -> Timestamp {
    Timestamp(espwatch_archive::target::now_micros())
}

pub(crate) fn error_id() -> String {
    let mut bytes = [0u8; 6];
    // An id only ties the health answer to the log line; a clock fallback is fine.
    if getrandom::fill(&mut bytes).is_err() {
        bytes.copy_from_slice(&now().0.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RetentionJob {
    /// Starts the job (needs a Tokio runtime): the first round now, then every `interval`.
    /// `policy_text` is what the configuration says per tier, for the status.
    pub fn start(
        store: Arc<dyn Store>,
        retention: Arc<dyn Retention>,
        archive: Archive,
        policy: Policy,
        policy_text: serde_json::Value,
        interval: Duration,
    ) -> Arc<RetentionJob> {
        let job = Arc::new(RetentionJob {
            status: Mutex::new(RetentionStatus {
                status: "healthy",
                archive: if archive.url().starts_with("s3://") {
                    "s3"
                } else {
                    "directory"
                },
                policy: policy_text,
                interval_secs: interval.as_secs(),
                last_run: None,
                last_success: None,
                next_run: Some(rfc3339(now())),
                rounds: 0,
                failed_rounds: 0,
                consecutive_failures: 0,
                last_error: None,
                last_error_stage: None,
                last_error_id: None,
                last_round: None,
                totals: RetentionTotals::default(),
            }),
            runner: Periodic::new("retention"),
        });
        let me = job.clone();
        let work = Arc::new((store, retention, archive, policy));
        job.runner.start(move || {
            let (me, work) = (me.clone(), work.clone());
            async move {
                let (store, retention, archive, policy) = &*work;
                let started = now();
                me.with_status(|s| s.last_run = Some(rfc3339(started)));
                // Stopping drops the round at an await point: a well-day archived but not yet
                // deleted is archived again (same file) and deleted by the next round.
                let result = espwatch_archive::run_round(
                    store.as_ref(),
                    retention.as_ref(),
                    archive,
                    policy,
                    started,
                )
                .await;
                let wait = me.record(started, result, interval);
                me.with_status(|s| s.next_run = Some(rfc3339(now().saturating_add(wait))));
                wait
            }
        });
        job
    }

    fn with_status(&self, f: impl FnOnce(&mut RetentionStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Records a round's outcome (logging it once) and says how long to wait for the next.
    fn record(
        &self,
        started: Timestamp,
        result: Result<RetentionReport, espwatch_archive::RoundError>,
        interval: Duration,
    ) -> Duration {
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(report) => {
                if report.days_archived > 0 || report.days_deferred > 0 || report.units_dropped > 0
                {
                    tracing::info!(
                        days = report.days_archived,
                        readings = report.readings_archived,
                        deleted = report.readings_deleted,
                        bytes = report.bytes_written,
                        deferred = report.days_deferred,
                        dropped = report.units_dropped,
                        seconds = report.seconds,
                        "retention: expired readings archived, verified and deleted"
                    );
                }
                s.rounds += 1;
                s.consecutive_failures = 0;
                s.status = "healthy";
                s.last_success = Some(rfc3339(started));
                s.last_error = None;
                s.last_error_stage = None;
                s.last_error_id = None;
                s.totals.add(&report);
                s.last_round = Some(report);
                interval
            }
            Err(e) => {
                let id = error_id();
                tracing::error!(
                    error_id = %id,
                    stage = ?e.stage,
                    done_days = e.done.days_archived,
                    error = %format!("{:#}", e.error),
                    "retention round failed; nothing unverified was deleted; retrying"
                );
                s.rounds += 1;
                s.failed_rounds += 1;
                s.consecutive_failures += 1;
                s.status = "degraded";
                s.last_error = Some(
                    match e.stage {
                        FailedStage::Archive => {
                            "the archive could not be written, read back or verified; \
                             the well-day was not deleted"
                        }
                        FailedStage::Store => "the store failed during the retention round",
                    }
                    .to_owned(),
                );
                s.last_error_stage = Some(e.stage);
                s.last_error_id = Some(id);
                s.totals.add(&e.done);
                s.last_round = Some(e.done);
                interval.min(RETRY_AFTER)
            }
        }
    }

    pub fn status(&self) -> RetentionStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Ends the job (a running round is dropped at its next await point) and waits for it.
    pub async fn stop(&self) {
        self.runner.stop().await;
    }
}

/// The policy as configured, per tier, for the status (`forever` when unset).
pub fn policy_text(config: &crate::Config) -> serde_json::Value {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "forever".to_owned());
    serde_json::json!({
        "raw": text(&config.retention_raw),
        RollupTier::Minute.name(): text(&config.retention_1m),
        RollupTier::Hour.name(): text(&config.retention_1h),
        RollupTier::Day.name(): text(&config.retention_1d),
    })
}
