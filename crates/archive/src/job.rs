//! The retention round and the restore.

use std::time::Instant;

use anyhow::Context;
use espwatch_core::{TimeRange, Timestamp, WellId};
use espwatch_store::{AppendOptions, ReadingOutcome, Retention, RollupTier, Store, StoreError};
use serde::Serialize;

use crate::target::Archive;

/// How long each tier is kept, microseconds; `None`: forever.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub raw: Option<i64>,
    pub rollups: Vec<(RollupTier, i64)>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.raw.is_none() && self.rollups.is_empty()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RetentionReport {
    /// Well-days written to the archive, verified and deleted from the store.
    pub days_archived: u64,
    pub readings_archived: u64,
    /// Raw readings deleted from the store (each one archived and verified first).
    pub readings_deleted: u64,
    pub bytes_written: u64,
    /// Well-days whose readings changed between archiving and deleting (late data): left in
    /// the store, archived again next round.
    pub days_deferred: u64,
    /// PostgreSQL day partitions or TimescaleDB chunks dropped once emptied.
    pub units_dropped: u64,
    /// Rollup rows or windows dropped, per tier.
    pub rollups_deleted: Vec<(RollupTier, u64)>,
    pub seconds: f64,
}

/// Which side failed a round.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedStage {
    /// Writing, reading back or verifying the archive: the well-day was not deleted.
    Archive,
    /// Listing, reading or deleting in the store.
    Store,
}

/// A round that stopped early: what it did before (all of it archived and verified before
/// anything was deleted), where it failed, and why.
#[derive(Debug)]
pub struct RoundError {
    pub stage: FailedStage,
    pub done: RetentionReport,
    pub error: anyhow::Error,
}

impl std::fmt::Display for RoundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for RoundError {}

/// One retention round at `now`: every well-day of raw readings older than the raw tier is
/// archived and verified, then deleted from the store; then expired rollups are dropped.
///
/// Stops at the first archive or store failure with the error: what was verified and
/// deleted before it stays done, nothing unverified is ever deleted.
pub async fn run_retention(
    store: &dyn Store,
    retention: &dyn Retention,
    archive: &Archive,
    policy: &Policy,
    now: Timestamp,
) -> anyhow::Result<RetentionReport> {
    run_round(store, retention, archive, policy, now)
        .await
        .map_err(|e| e.error)
}

/// [`run_retention`], saying on failure which side failed and what was done before.
pub async fn run_round(
    store: &dyn Store,
    retention: &dyn Retention,
    archive: &Archive,
    policy: &Policy,
    now: Timestamp,
) -> Result<RetentionReport, RoundError> {
    let started = Instant::now();
    let mut report = RetentionReport::default();
    let result = round(store, retention, archive, policy, now, &mut report).await;
    report.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => Ok(report),
        Err((stage, error)) => Err(RoundError {
            stage,
            done: report,
            error,
        }),
    }
}

async fn round(
    store: &dyn Store,
    retention: &dyn Retention,
    archive: &Archive,
    policy: &Policy,
    now: Timestamp,
    report: &mut RetentionReport,
) -> Result<(), (FailedStage, anyhow::Error)> {
    let in_store = |e: anyhow::Error| (FailedStage::Store, e);
    if let Some(keep) = policy.raw {
        let cutoff = Timestamp(now.0.saturating_sub(keep));
        let days = retention
            .raw_days_before(cutoff)
            .await
            .context("listing expired raw days")
            .map_err(in_store)?;
        for day in days {
            let points = store
                .read_range(&day.well_id, day.range)
                .await
                .with_context(|| format!("reading {} for archiving", day.well_id))
                .map_err(in_store)?;
            if points.is_empty() {
                continue;
            }
            let entry = archive
                .put_verified(&day.well_id, day.range, &points)
                .await
                .with_context(|| {
                    format!(
                        "archiving {} {} to {} (nothing deleted)",
                        day.well_id,
                        crate::target::day_name(day.range.from),
                        archive.url()
                    )
                })
                .map_err(|e| (FailedStage::Archive, e))?;
            match retention
                .delete_raw(&day.well_id, day.range, points.len() as u64)
                .await
            {
                Ok(deleted) => {
                    report.days_archived += 1;
                    report.readings_archived += points.len() as u64;
                    report.readings_deleted += deleted;
                    report.bytes_written += entry.bytes;
                }
                Err(StoreError::Conflict(msg)) => {
                    // The verified file stays: it holds readings that were stored, and on a
                    // database shared by several servers the day may have just been deleted
                    // by another one's round that relies on this very file (same readings,
                    // same name). The day, if anything is left of it, is archived again, whole,
                    // next round; restoring both files is harmless (duplicates are skipped).
                    tracing::info!(well = %day.well_id, path = %entry.path, "retention: {msg}; archived again next round");
                    report.days_deferred += 1;
                }
                Err(e) => {
                    return Err(in_store(
                        anyhow::Error::new(e)
                            .context(format!("deleting archived readings of {}", day.well_id)),
                    ));
                }
            }
        }
        report.units_dropped = retention
            .drop_emptied(cutoff)
            .await
            .context("dropping emptied partitions")
            .map_err(in_store)?;
    }
    for (tier, keep) in &policy.rollups {
        if !retention.rollup_tiers().contains(tier) {
            continue;
        }
        let cutoff = Timestamp(now.0.saturating_sub(*keep));
        let n = retention
            .delete_rollups_before(*tier, cutoff)
            .await
            .with_context(|| format!("dropping {} rollups", tier.name()))
            .map_err(in_store)?;
        report.rollups_deleted.push((*tier, n));
    }
    Ok(())
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    /// Archived readings in the range.
    pub readings: u64,
    pub accepted: u64,
    /// Already in the store (a restore run twice, or never deleted): harmless.
    pub duplicates: u64,
}

/// Brings the archived readings of `well` in `range` back into the store. Idempotent: the
/// store keeps the first copy of a reading, so running it twice only counts duplicates.
pub async fn restore(
    store: &dyn Store,
    archive: &Archive,
    well: &WellId,
    range: TimeRange,
) -> anyhow::Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let entries = archive.list(Some(well)).await?;
    for entry in entries
        .iter()
        .filter(|e| e.min_ts < range.to && e.max_ts >= range.from)
    {
        let points = archive.read(entry).await?;
        report.files += 1;
        let chosen: Vec<_> = points
            .into_iter()
            .filter(|p| p.0 >= range.from && p.0 < range.to)
            .collect();
        report.readings += chosen.len() as u64;
        for chunk in chosen.chunks(50_000) {
            let readings = chunk
                .iter()
                .map(|(ts, m)| espwatch_core::Reading {
                    well_id: well.clone(),
                    ts: *ts,
                    values: *m,
                })
                .collect();
            let out = store
                .append(
                    readings,
                    AppendOptions {
                        auto_register_wells: true,
                    },
                )
                .await
                .with_context(|| format!("restoring {} into the store", entry.path))?;
            report.accepted += out.count(ReadingOutcome::Accepted) as u64;
            report.duplicates += out.count(ReadingOutcome::Duplicate) as u64;
        }
    }
    Ok(report)
}
