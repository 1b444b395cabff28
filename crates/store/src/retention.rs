//! Retention: what a backend must offer so old data can be archived, then removed.
//!
//! The archive job (`espwatch-archive`) drives it: it lists the days of raw readings older
//! than the raw tier's horizon ([`Retention::raw_days_before`]), reads each one through
//! [`crate::Store::read_range`], writes and verifies its Parquet file, and only then calls
//! [`Retention::delete_raw`] with the number of readings it archived. A backend deletes
//! nothing unless exactly that many readings are still stored in the range (a late reading
//! that arrived in between makes it refuse with [`StoreError::Conflict`]; the job archives
//! the day again on its next round), so a delete never takes a reading the archive lacks.
//!
//! Rollups are derived from raw readings (which are archived before they go), so their tiers
//! are dropped by age alone ([`Retention::delete_rollups_before`]).

use async_trait::async_trait;
use espwatch_core::{TimeRange, Timestamp, WellId};
use serde::{Deserialize, Serialize};

use crate::{StoreError, StoreResult};

/// One microsecond day, the unit of archiving.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// A well's raw readings of one UTC day, still stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDay {
    pub well_id: WellId,
    /// `[day, day + 1 d)`.
    pub range: TimeRange,
}

/// A rollup tier a backend may keep.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollupTier {
    Minute,
    Hour,
    Day,
}

impl RollupTier {
    pub const ALL: [RollupTier; 3] = [RollupTier::Minute, RollupTier::Hour, RollupTier::Day];

    pub fn name(self) -> &'static str {
        match self {
            RollupTier::Minute => "1m",
            RollupTier::Hour => "1h",
            RollupTier::Day => "1d",
        }
    }
}

#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Every (well, UTC day) with raw readings stored whose day ends at or before `cutoff`,
    /// by well then day.
    async fn raw_days_before(&self, cutoff: Timestamp) -> StoreResult<Vec<RawDay>>;

    /// Deletes the raw readings of `well_id` in `range` when exactly `expected` are stored
    /// there, and returns how many went. Any other count: nothing is deleted and the answer
    /// is [`StoreError::Conflict`].
    async fn delete_raw(
        &self,
        well_id: &WellId,
        range: TimeRange,
        expected: u64,
    ) -> StoreResult<u64>;

    /// After a round deleted every expired day: gives back the space of storage units wholly
    /// before `cutoff` that hold nothing any more (PostgreSQL day partitions or TimescaleDB
    /// chunks); returns how many went. Embedded segments go with their readings: `Ok(0)`.
    async fn drop_emptied(&self, _cutoff: Timestamp) -> StoreResult<u64> {
        Ok(0)
    }

    /// Rollup tiers this backend keeps.
    fn rollup_tiers(&self) -> &'static [RollupTier];

    /// Deletes the rollups of `tier` for time before `cutoff` (whole buckets/windows only);
    /// returns how many rows or windows went. A tier the backend does not keep: `Ok(0)`.
    async fn delete_rollups_before(&self, tier: RollupTier, cutoff: Timestamp) -> StoreResult<u64>;
}

/// The UTC day `[start, start + 1 d)` holding `ts`.
pub fn day_of(ts: i64) -> TimeRange {
    let start = ts.div_euclid(DAY_MICROS) * DAY_MICROS;
    TimeRange {
        from: Timestamp(start),
        to: Timestamp(start + DAY_MICROS),
    }
}

/// The refusal of [`Retention::delete_raw`] when the stored count differs.
pub fn count_changed(well_id: &WellId, range: TimeRange, stored: u64, expected: u64) -> StoreError {
    StoreError::Conflict(format!(
        "raw readings of {well_id} in [{}, {}) changed since they were archived \
         ({stored} stored, {expected} archived)",
        range.from.0, range.to.0
    ))
}
