//! The audit retention job a server runs when `audit_retention` is set: each round (the first
//! at start, then every `retention_interval_secs`) removes the audit trail's request records
//! (`request`, `rejected_requests`) older than the cut, a UTC midnight at least
//! `audit_retention` ago, through `SecurityStore::prune_audit` with
//! [`AuditPruneScope::Requests`]: the security events of the removed prefix are carried
//! forward as `audit_carried` records (their originals still verify) and a keyed
//! `audit_pruned` record by `system:audit_retention` names what went. The outcome is kept for
//! `/health/ready` (`checks.audit_retention`); a failure is reported by category only (its
//! text goes to the log under an error id) and retried after [`RETRY_AFTER`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use espwatch_core::Timestamp;
use espwatch_store::{AuditEvent, AuditPrune, AuditPruneScope, SecurityStore, StoreError};
use serde::Serialize;

use crate::periodic::Periodic;
use crate::retention::{RETRY_AFTER, error_id};

/// The actor of the `audit_pruned` records the job appends.
pub const ACTOR: &str = "system:audit_retention";

const DAY_MICROS: i64 = 86_400_000_000;

/// Records removed per transaction at most: a round over a long trail is cut into batches
/// (each with its own `audit_pruned` record), so the audit log's write lock is never held
/// long and the server's own audit records keep being written.
pub const BATCH: i64 = 20_000;

/// The cut of a round at `now`: `now - keep`, floored to a UTC midnight.
pub fn audit_cut(now: Timestamp, keep: Duration) -> Timestamp {
    let t = now.saturating_sub(keep).0;
    Timestamp(t - t.rem_euclid(DAY_MICROS))
}

/// The current time, as the job sees it (tests pass their own).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::from_datetime(chrono::Utc::now()))
}

/// What one round did (of a failed round: what it did before failing).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditRound {
    /// Records older than this (RFC 3339, a UTC midnight) were candidates.
    pub cut: String,
    /// Request records removed.
    pub removed: u64,
    /// Security events of the removed prefix carried forward as `audit_carried` records.
    pub carried: u64,
    /// Transactions (batches of at most [`BATCH`] records), each with its `audit_pruned`
    /// record.
    pub batches: u64,
    /// The ids the removed prefix spanned and the last `audit_pruned` record appended
    /// (none: nothing to remove).
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub record_id: Option<i64>,
}

impl AuditRound {
    fn add(&mut self, p: &AuditPrune) {
        self.removed += (p.count - p.carried).max(0) as u64;
        self.carried += p.carried.max(0) as u64;
        self.batches += 1;
        self.first_id.get_or_insert(p.first_id);
        self.last_id = Some(p.last_id);
        self.record_id = Some(p.record_id);
    }
}

/// What `/health/ready` reports under `checks.audit_retention`. No internal error text.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRetentionStatus {
    /// `healthy`, or `degraded` while rounds fail (never a reason to leave rotation).
    pub status: &'static str,
    /// `audit_retention` as configured.
    pub keep: String,
    /// What may be removed; every other kind is kept.
    pub removes: [&'static str; 2],
    pub interval_secs: u64,
    /// When the last round started, and the last successful one (RFC 3339).
    pub last_run: Option<String>,
    pub last_success: Option<String>,
    pub next_run: Option<String>,
    pub rounds: u64,
    pub failed_rounds: u64,
    pub consecutive_failures: u64,
    /// The category of the last failure, while failing: `store_unavailable` (the store, or
    /// the audit key, was not available), `conflict` or `store_error`; details in the log
    /// under `last_error_id`.
    pub last_error: Option<&'static str>,
    pub last_error_id: Option<String>,
    pub last_round: Option<AuditRound>,
    /// Sums over every round since the server started.
    pub removed_total: u64,
    pub carried_total: u64,
}

/// The background job; [`AuditRetentionJob::stop`] ends it before the store closes.
pub struct AuditRetentionJob {
    status: Mutex<AuditRetentionStatus>,
    runner: Periodic,
}

fn rfc3339(ts: Timestamp) -> String {
    ts.to_rfc3339()
}

fn category(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "store_unavailable",
        StoreError::Conflict(_) => "conflict",
        StoreError::Internal(_) => "store_error",
    }
}

impl AuditRetentionJob {
    /// Starts the job (needs a Tokio runtime): the first round now, then every `interval`.
    pub fn start(
        security: Arc<dyn SecurityStore>,
        keep: Duration,
        keep_text: String,
        interval: Duration,
        clock: Clock,
    ) -> Arc<AuditRetentionJob> {
        let job = Arc::new(AuditRetentionJob {
            status: Mutex::new(AuditRetentionStatus {
                status: "healthy",
                keep: keep_text,
                removes: espwatch_store::security::AUDIT_REQUEST_KINDS,
                interval_secs: interval.as_secs(),
                last_run: None,
                last_success: None,
                next_run: Some(rfc3339(clock())),
                rounds: 0,
                failed_rounds: 0,
                consecutive_failures: 0,
                last_error: None,
                last_error_id: None,
                last_round: None,
                removed_total: 0,
                carried_total: 0,
            }),
            runner: Periodic::new("audit_retention"),
        });
        let me = job.clone();
        job.runner.start(move || {
            let (me, security, clock) = (me.clone(), security.clone(), clock.clone());
            async move {
                let started = clock();
                me.with_status(|s| s.last_run = Some(rfc3339(started)));
                let cut = audit_cut(started, keep);
                let mut round = AuditRound {
                    cut: rfc3339(cut),
                    ..AuditRound::default()
                };
                // Stopping drops the round between batches or inside one (whose transaction
                // then never commits).
                let result = loop {
                    let batch = security
                        .prune_audit(cut, by(clock()), AuditPruneScope::Requests, Some(BATCH))
                        .await;
                    match batch {
                        Ok(Some(p)) => {
                            round.add(&p);
                            if !p.more {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                let wait = me.record(round, result, interval);
                me.with_status(|s| s.next_run = Some(rfc3339(clock().saturating_add(wait))));
                wait
            }
        });
        job
    }

    fn with_status(&self, f: impl FnOnce(&mut AuditRetentionStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Records a round's outcome (logging it once) and says how long to wait for the next.
    fn record(
        &self,
        round: AuditRound,
        result: Result<(), StoreError>,
        interval: Duration,
    ) -> Duration {
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        s.rounds += 1;
        s.removed_total += round.removed;
        s.carried_total += round.carried;
        if round.batches > 0 {
            tracing::info!(
                first_id = round.first_id,
                last_id = round.last_id,
                removed = round.removed,
                carried = round.carried,
                batches = round.batches,
                cut = %round.cut,
                "audit retention: request records removed, security events carried forward"
            );
        }
        let wait = match result {
            Ok(()) => {
                s.consecutive_failures = 0;
                s.status = "healthy";
                s.last_success = s.last_run.clone();
                s.last_error = None;
                s.last_error_id = None;
                interval
            }
            Err(e) => {
                let id = error_id();
                tracing::error!(
                    error_id = %id,
                    error = %e,
                    "audit retention round failed (its last batch removed nothing); retrying"
                );
                s.failed_rounds += 1;
                s.consecutive_failures += 1;
                s.status = "degraded";
                s.last_error = Some(category(&e));
                s.last_error_id = Some(id);
                interval.min(RETRY_AFTER)
            }
        };
        s.last_round = Some(round);
        wait
    }

    pub fn status(&self) -> AuditRetentionStatus {
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

/// Who prunes: the job, at `now`.
fn by(now: Timestamp) -> AuditEvent {
    AuditEvent {
        ts: now,
        kind: String::new(),
        request_id: None,
        method: None,
        route: None,
        status: None,
        actor: Some(ACTOR.into()),
        role: None,
        source: None,
        duration_ms: None,
        detail: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_is_a_utc_midnight_at_least_the_retention_ago() {
        // 2026-03-10T15:42:07Z, keep 90 days → 2025-12-10T00:00:00Z.
        let now = Timestamp(1_773_157_327_000_000);
        let keep = Duration::from_secs(90 * 86_400);
        let cut = audit_cut(now, keep);
        assert_eq!(cut.to_rfc3339(), "2025-12-10T00:00:00Z");
        assert!(now.0 - cut.0 >= 90 * DAY_MICROS);
        assert!(now.0 - cut.0 < 91 * DAY_MICROS);
        // Exactly at midnight: that midnight.
        let midnight = Timestamp(cut.0 + 90 * DAY_MICROS);
        assert_eq!(audit_cut(midnight, keep), cut);
    }
}
