//! The store's operational metrics, recorded through the `metrics` facade (a no-op until the
//! server installs its Prometheus recorder). Both backends record the same names with their
//! `backend` label (`embedded`, `postgres`).

use std::time::Duration;

/// Appends handed to the store and not answered yet, in readings (queued + committing).
pub const PENDING_READINGS: &str = "espwatch_store_pending_readings";
/// Duration of one group commit (one transaction for every append of the group).
pub const COMMIT_DURATION: &str = "espwatch_store_commit_duration_seconds";
/// Readings per group commit.
pub const COMMIT_GROUP_READINGS: &str = "espwatch_store_commit_group_readings";
/// Appends (callers) per group commit: concurrent writers sharing one fsync.
pub const COMMIT_GROUP_APPENDS: &str = "espwatch_store_commit_group_appends";
/// Group commits that failed.
pub const COMMIT_FAILURES: &str = "espwatch_store_commit_failures_total";
/// Duration of a checkpoint (embedded: seal + encode + install) or a rollup refresh pass
/// (PostgreSQL).
pub const CHECKPOINT_DURATION: &str = "espwatch_store_checkpoint_duration_seconds";
/// Checkpoints (refresh passes) that failed.
pub const CHECKPOINT_FAILURES: &str = "espwatch_store_checkpoint_failures_total";

/// Counts readings as pending while it lives (dropped when the append is answered or its
/// caller gave up).
pub struct Pending {
    backend: &'static str,
    readings: f64,
}

impl Pending {
    pub fn new(backend: &'static str, readings: usize) -> Pending {
        let readings = readings as f64;
        metrics::gauge!(PENDING_READINGS, "backend" => backend).increment(readings);
        Pending { backend, readings }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        metrics::gauge!(PENDING_READINGS, "backend" => self.backend).decrement(self.readings);
    }
}

/// One group commit: how many appends and readings, how long, whether it committed.
pub fn record_commit(
    backend: &'static str,
    appends: usize,
    readings: usize,
    took: Duration,
    ok: bool,
) {
    if !ok {
        metrics::counter!(COMMIT_FAILURES, "backend" => backend).increment(1);
        return;
    }
    metrics::histogram!(COMMIT_DURATION, "backend" => backend).record(took.as_secs_f64());
    metrics::histogram!(COMMIT_GROUP_READINGS, "backend" => backend).record(readings as f64);
    metrics::histogram!(COMMIT_GROUP_APPENDS, "backend" => backend).record(appends as f64);
}

/// One checkpoint (or rollup refresh pass).
pub fn record_checkpoint(backend: &'static str, took: Duration, ok: bool) {
    if ok {
        metrics::histogram!(CHECKPOINT_DURATION, "backend" => backend).record(took.as_secs_f64());
    } else {
        metrics::counter!(CHECKPOINT_FAILURES, "backend" => backend).increment(1);
    }
}
