//! [`Retention`] on PostgreSQL. A well-day of raw readings is deleted in one transaction that
//! checks the count archived (plain `DELETE`, one well-day per batch; rolled back on any other
//! count). Day partitions (plain PostgreSQL) or chunks (TimescaleDB, `drop_chunks`) wholly
//! before the horizon are dropped once they hold nothing, which gives their space back.
//! Rollup tables (or continuous aggregates) are trimmed by age.

use async_trait::async_trait;
use espwatch_core::{TimeRange, Timestamp, WellId};
use espwatch_store::retention::{DAY_MICROS, RawDay, Retention, RollupTier, count_changed};
use espwatch_store::{StoreError, StoreResult};

use crate::schema::{Flavor, column_list};
use crate::types::{PgTs, db_err};
use crate::{PostgresStore, partitions};

fn suffix(tier: RollupTier) -> &'static str {
    tier.name()
}

impl PostgresStore {
    /// Drops the day partitions (plain) or chunks (TimescaleDB) that end at or before
    /// `cutoff` (a day boundary) and hold no rows any more, after a retention round deleted
    /// their readings. Returns how many were dropped.
    pub async fn drop_emptied_partitions(&self, cutoff: Timestamp) -> StoreResult<u64> {
        let mut client = self.client("dropping expired partitions").await?;
        let cutoff = PgTs(cutoff.0.div_euclid(DAY_MICROS) * DAY_MICROS);
        match self.flavor() {
            Flavor::Timescale => {
                // drop_chunks takes whole chunks before the horizon: only when nothing is
                // left there (a late reading not archived yet keeps them all). Dropping them
                // must not invalidate the continuous aggregates either (see `delete_raw`).
                let client = client
                    .transaction()
                    .await
                    .map_err(|e| db_err("dropping chunks", e))?;
                client
                    .batch_execute("SET LOCAL timescaledb.skip_cagg_invalidation = on")
                    .await
                    .map_err(|e| db_err("dropping chunks", e))?;
                let left = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM telemetry WHERE ts < $1)",
                        &[&cutoff],
                    )
                    .await
                    .map_err(|e| db_err("checking expired chunks", e))?;
                if left.get::<_, bool>(0) {
                    return Ok(0);
                }
                let rows = client
                    .query(
                        "SELECT drop_chunks('telemetry', older_than => $1::timestamptz)",
                        &[&cutoff],
                    )
                    .await
                    .map_err(|e| db_err("dropping chunks", e))?;
                client
                    .commit()
                    .await
                    .map_err(|e| db_err("dropping chunks", e))?;
                Ok(rows.len() as u64)
            }
            Flavor::Partitioned => {
                let rows = client
                    .query(
                        "SELECT c.relname FROM pg_inherits i
                         JOIN pg_class c ON c.oid = i.inhrelid
                         JOIN pg_class p ON p.oid = i.inhparent
                         WHERE p.relname = 'telemetry'
                           AND p.relnamespace = current_schema()::regnamespace
                         ORDER BY c.relname",
                        &[],
                    )
                    .await
                    .map_err(|e| db_err("listing partitions", e))?;
                let last_day = cutoff.0.div_euclid(DAY_MICROS);
                let mut dropped = 0;
                for row in rows {
                    let name: String = row.get(0);
                    let Some(day) = partitions::day_of_name(&name) else {
                        continue;
                    };
                    if day + 1 > last_day {
                        continue;
                    }
                    let empty = client
                        .query_one(
                            &format!("SELECT NOT EXISTS (SELECT 1 FROM \"{name}\")"),
                            &[],
                        )
                        .await
                        .map_err(|e| db_err("checking a partition", e))?;
                    if !empty.get::<_, bool>(0) {
                        continue;
                    }
                    // DETACH takes a short lock on the parent; the emptied table then goes.
                    client
                        .batch_execute(&format!(
                            "ALTER TABLE telemetry DETACH PARTITION \"{name}\"; DROP TABLE \"{name}\";"
                        ))
                        .await
                        .map_err(|e| db_err("dropping a partition", e))?;
                    tracing::info!(partition = %name, "retention: dropped emptied partition");
                    dropped += 1;
                }
                Ok(dropped)
            }
        }
    }
}

#[async_trait]
impl Retention for PostgresStore {
    async fn raw_days_before(&self, cutoff: Timestamp) -> StoreResult<Vec<RawDay>> {
        let client = self.client("listing expired days").await?;
        let cutoff = PgTs(cutoff.0.div_euclid(DAY_MICROS) * DAY_MICROS);
        let rows = client
            .query(
                "SELECT well_id, floor(extract(epoch FROM ts) / 86400)::bigint AS day
                 FROM telemetry WHERE ts < $1 GROUP BY 1, 2 ORDER BY 1, 2",
                &[&cutoff],
            )
            .await
            .map_err(|e| db_err("listing expired days", e))?;
        rows.iter()
            .map(|r| {
                let id: String = r.get(0);
                let day: i64 = r.get(1);
                let well_id = WellId::parse(&id)
                    .map_err(|e| StoreError::Internal(format!("stored well id {id:?}: {e}")))?;
                Ok(RawDay {
                    well_id,
                    range: TimeRange {
                        from: Timestamp(day * DAY_MICROS),
                        to: Timestamp((day + 1) * DAY_MICROS),
                    },
                })
            })
            .collect()
    }

    async fn delete_raw(
        &self,
        well_id: &WellId,
        range: TimeRange,
        expected: u64,
    ) -> StoreResult<u64> {
        let mut client = self.client("deleting archived readings").await?;
        let (from, to) = (PgTs::clamped(range.from), PgTs::clamped(range.to));
        let timescale = self.flavor() == Flavor::Timescale;
        if timescale {
            // A delete marks its range as changed for the continuous aggregates, and their next
            // refresh rebuilds those buckets from raw data that is gone: the rollups of every
            // archived day came back empty (they are meant to outlive the raw readings). So the
            // aggregates are brought up to date for the day first (a CALL cannot run in a
            // transaction), and the delete itself does not invalidate them.
            let (start, end) = (range.from.to_rfc3339(), range.to.to_rfc3339());
            for tier in RollupTier::ALL {
                client
                    .batch_execute(&format!(
                        "CALL refresh_continuous_aggregate('telemetry_{}', '{start}'::timestamptz, '{end}'::timestamptz)",
                        suffix(tier)
                    ))
                    .await
                    .map_err(|e| db_err("bringing rollups up to date before a delete", e))?;
            }
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_err("deleting archived readings", e))?;
        if timescale {
            // A reading arriving between the refresh and the delete changes the count, and the
            // count check below rolls the delete back. (TimescaleDB 2.28 honours the setting
            // for rows, not for the direct delete of whole compressed batches: that is off.)
            tx.batch_execute(
                "SET LOCAL timescaledb.skip_cagg_invalidation = on;
                 SET LOCAL timescaledb.enable_compressed_direct_batch_delete = off;",
            )
            .await
            .map_err(|e| db_err("deleting archived readings", e))?;
        }
        let deleted = tx
            .execute(
                "DELETE FROM telemetry WHERE well_id = $1 AND ts >= $2 AND ts < $3",
                &[&well_id.as_str(), &from, &to],
            )
            .await
            .map_err(|e| db_err("deleting archived readings", e))?;
        if deleted != expected {
            // Dropping the transaction rolls it back.
            return Err(count_changed(well_id, range, deleted, expected));
        }
        // The newest reading went with them: take the newest one left, if any.
        let moved = tx
            .execute(
                "DELETE FROM well_latest WHERE well_id = $1 AND ts >= $2 AND ts < $3",
                &[&well_id.as_str(), &from, &to],
            )
            .await
            .map_err(|e| db_err("updating the newest reading", e))?;
        if moved > 0 {
            let cols = column_list();
            tx.execute(
                &format!(
                    "INSERT INTO well_latest (well_id, ts, {cols})
                     SELECT well_id, ts, {cols} FROM telemetry WHERE well_id = $1
                     ORDER BY ts DESC LIMIT 1"
                ),
                &[&well_id.as_str()],
            )
            .await
            .map_err(|e| db_err("updating the newest reading", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_err("deleting archived readings", e))?;
        Ok(deleted)
    }

    fn rollup_tiers(&self) -> &'static [RollupTier] {
        &RollupTier::ALL
    }

    async fn delete_rollups_before(&self, tier: RollupTier, cutoff: Timestamp) -> StoreResult<u64> {
        let client = self.client("dropping rollups").await?;
        let width = match tier {
            RollupTier::Minute => 60_000_000,
            RollupTier::Hour => 3_600_000_000,
            RollupTier::Day => DAY_MICROS,
        };
        // Buckets that end at or before the cutoff.
        let before = PgTs::clamped(Timestamp(cutoff.0.saturating_sub(width) + 1));
        match self.flavor() {
            Flavor::Partitioned => {
                let n = client
                    .execute(
                        &format!("DELETE FROM rollup_{} WHERE bucket < $1", suffix(tier)),
                        &[&before],
                    )
                    .await
                    .map_err(|e| db_err("dropping rollups", e))?;
                Ok(n)
            }
            Flavor::Timescale => {
                let rows = client
                    .query(
                        &format!(
                            "SELECT drop_chunks('telemetry_{}', older_than => $1::timestamptz)",
                            suffix(tier)
                        ),
                        &[&before],
                    )
                    .await
                    .map_err(|e| db_err("dropping rollup chunks", e))?;
                Ok(rows.len() as u64)
            }
        }
    }

    async fn drop_emptied(&self, cutoff: Timestamp) -> StoreResult<u64> {
        self.drop_emptied_partitions(cutoff).await
    }
}
