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
    let started = Instant::now();
    let mut report = RetentionReport::default();
    if let Some(keep) = policy.raw {
        let cutoff = Timestamp(now.0.saturating_sub(keep));
        let days = retention
            .raw_days_before(cutoff)
            .await
            .context("listing expired raw days")?;
        for day in days {
            let points = store
                .read_range(&day.well_id, day.range)
                .await
                .with_context(|| format!("reading {} for archiving", day.well_id))?;
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
                })?;
            match retention
                .delete_raw(&day.well_id, day.range, points.len() as u64)
                .await
            {
                Ok(_) => {
                    report.days_archived += 1;
                    report.readings_archived += points.len() as u64;
                    report.bytes_written += entry.bytes;
                }
                Err(StoreError::Conflict(msg)) => {
                    tracing::info!(well = %day.well_id, "retention: {msg}; archived again next round");
                    if let Err(e) = archive.remove(&entry).await {
                        tracing::warn!(error = %e, path = %entry.path, "retention: could not remove a superseded archive file");
                    }
                    report.days_deferred += 1;
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("deleting archived readings of {}", day.well_id));
                }
            }
        }
        report.units_dropped = retention
            .drop_emptied(cutoff)
            .await
            .context("dropping emptied partitions")?;
    }
    for (tier, keep) in &policy.rollups {
        if !retention.rollup_tiers().contains(tier) {
            continue;
        }
        let cutoff = Timestamp(now.0.saturating_sub(*keep));
        let n = retention
            .delete_rollups_before(*tier, cutoff)
            .await
            .with_context(|| format!("dropping {} rollups", tier.name()))?;
        report.rollups_deleted.push((*tier, n));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
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
