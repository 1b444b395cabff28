//! [`Retention`] on the embedded engine: raw readings go a (well, day) at a time as whole
//! segments, on the writer thread; the hourly rollups stay until their own tier expires
//! (they are separate rows, kept by window).

use std::collections::BTreeSet;

use async_trait::async_trait;
use espwatch_core::{Point, TimeRange, Timestamp, WellId};
use rusqlite::{Connection, OptionalExtension, params};

use super::EmbeddedStore;
use super::codec;
use super::index::{Index, window_start};
use super::rollup;
use super::schema::sql_err;
use super::writer::{Command, Shared};
use crate::retention::{DAY_MICROS, RawDay, Retention, RollupTier, count_changed, day_of};
use crate::{StoreError, StoreResult};

fn check_window(window: i64) -> StoreResult<()> {
    if DAY_MICROS % window != 0 {
        return Err(StoreError::Internal(format!(
            "retention needs a segment window that divides a day (this store's is {window} µs)"
        )));
    }
    Ok(())
}

/// Deletes the sealed segments of `well` in `[from, to)` (window-aligned) when they hold
/// exactly `expected` readings; the caller has sealed the well's head in that range first.
/// Returns the window starts removed and the readings they held.
pub(super) fn delete_sealed(
    conn: &mut Connection,
    shared: &Shared,
    well: &WellId,
    (from, to): (i64, i64),
    expected: u64,
) -> StoreResult<(Vec<i64>, u64)> {
    let window = shared.window;
    check_window(window)?;
    let range = TimeRange {
        from: Timestamp(from),
        to: Timestamp(to),
    };
    if from.rem_euclid(window) != 0 || to.rem_euclid(window) != 0 {
        return Err(StoreError::Internal(format!(
            "retention range [{from}, {to}) is not aligned to the {window} µs segment window"
        )));
    }
    let (windows, stored, head_left) = {
        let index = shared.read();
        match index.wells.get(well) {
            None => (Vec::new(), 0, false),
            Some(st) => {
                let segs: Vec<(i64, i64)> = st
                    .segs
                    .range(from..to)
                    .map(|(ws, m)| (*ws, m.count))
                    .collect();
                (
                    segs.iter().map(|s| s.0).collect::<Vec<i64>>(),
                    segs.iter().map(|s| s.1 as u64).sum::<u64>(),
                    !st.unsealed_range(from, to).is_empty(),
                )
            }
        }
    };
    if head_left {
        return Err(StoreError::Internal(
            "unsealed readings left in a range being deleted".into(),
        ));
    }
    if stored != expected {
        return Err(count_changed(well, range, stored, expected));
    }
    if windows.is_empty() {
        return Ok((windows, 0));
    }
    let tx = conn
        .transaction()
        .map_err(|e| sql_err("starting raw delete", e))?;
    // Windows whose hourly rollup stays behind (rollups of older releases may be missing).
    let with_rollup: BTreeSet<i64> = {
        let mut stmt = tx
            .prepare(
                "SELECT window_start FROM rollups
                 WHERE well_id = ?1 AND window_start >= ?2 AND window_start < ?3",
            )
            .map_err(|e| sql_err("reading rollups", e))?;
        let rows = stmt
            .query_map(params![well.as_str(), from, to], |r| r.get::<_, i64>(0))
            .map_err(|e| sql_err("reading rollups", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| sql_err("reading rollups", e))?
    };
    let deleted = tx
        .execute(
            "DELETE FROM segments WHERE well_id = ?1 AND window_start >= ?2 AND window_start < ?3",
            params![well.as_str(), from, to],
        )
        .map_err(|e| sql_err("deleting segments", e))?;
    if deleted != windows.len() {
        // The index and the table disagree: a bug, never act on it.
        return Err(StoreError::Internal(format!(
            "segments of {well} in [{from}, {to}): {deleted} rows, {} indexed",
            windows.len()
        )));
    }
    tx.commit()
        .map_err(|e| sql_err("committing raw delete", e))?;

    // The newest reading may have gone with them: take it from what is left.
    let mut index = shared.write();
    index.segments = index.segments.saturating_sub(windows.len() as u64);
    let Some(st) = index.wells.get_mut(well) else {
        return Ok((windows, stored));
    };
    for ws in &windows {
        if let Some(meta) = st.segs.remove(ws)
            && with_rollup.contains(ws)
        {
            st.rolled.insert(*ws, meta.count);
        }
    }
    if st.latest_ts().is_some_and(|t| t >= from && t < to) {
        let newest_sealed = match st.segs.last_key_value() {
            Some((&ws, _)) => newest_point(conn, well, ws)?,
            None => None,
        };
        let newest_head = st.head.last_key_value().map(|(t, m)| (Timestamp(*t), *m));
        st.latest = match (newest_sealed, newest_head) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
    }
    Ok((windows, stored))
}

fn newest_point(conn: &Connection, well: &WellId, ws: i64) -> StoreResult<Option<Point>> {
    let data: Option<Vec<u8>> = conn
        .query_row(
            "SELECT data FROM segments WHERE well_id = ?1 AND window_start = ?2",
            params![well.as_str(), ws],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql_err("loading segment", e))?;
    let Some(data) = data else {
        return Ok(None);
    };
    let points = codec::decode_segment(&data)
        .map_err(|e| StoreError::Internal(format!("segment ({well}, {ws}) is corrupt: {e}")))?;
    Ok(points.last().copied())
}

/// Deletes the hourly rollups of windows that end at or before `before`.
pub(super) fn delete_rollups(conn: &Connection, shared: &Shared, before: i64) -> StoreResult<u64> {
    let last = before.saturating_sub(shared.window);
    let n = conn
        .execute(
            "DELETE FROM rollups WHERE window_start <= ?1",
            params![last],
        )
        .map_err(|e| sql_err("deleting rollups", e))?;
    conn.execute(
        "DELETE FROM fleet_rollups WHERE window_start <= ?1",
        params![last],
    )
    .map_err(|e| sql_err("deleting fleet rollups", e))?;
    let mut index = shared.write();
    for st in index.wells.values_mut() {
        st.rolled = st.rolled.split_off(&last.saturating_add(1));
    }
    Ok(n as u64)
}

/// At open: the windows whose segment retention deleted while their rollup stays.
pub(super) fn load_rolled(conn: &Connection, index: &mut Index) -> StoreResult<()> {
    let err = |e| sql_err("loading rolled-up windows", e);
    let mut stmt = conn
        .prepare(
            "SELECT r.well_id, r.window_start, substr(r.data, 1, 12) FROM rollups r
             WHERE NOT EXISTS (SELECT 1 FROM segments s
                               WHERE s.well_id = r.well_id AND s.window_start = r.window_start)",
        )
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let id: String = row.get(0).map_err(err)?;
        let ws: i64 = row.get(1).map_err(err)?;
        let head: Vec<u8> = row.get(2).map_err(err)?;
        let Ok(well) = WellId::parse(&id) else {
            continue;
        };
        // A damaged rollup is skipped: only its hours go unanswered.
        if let (Some(st), Ok(count)) = (index.wells.get_mut(&well), rollup::count(&head)) {
            st.rolled.insert(ws, count as i64);
        }
    }
    Ok(())
}

#[async_trait]
impl Retention for EmbeddedStore {
    async fn raw_days_before(&self, cutoff: Timestamp) -> StoreResult<Vec<RawDay>> {
        self.check_open()?;
        let window = self.inner.shared.window;
        check_window(window)?;
        let cutoff = day_of(cutoff.0).from.0;
        let index = self.inner.shared.read();
        let mut out = Vec::new();
        for (well, st) in &index.wells {
            let mut days = BTreeSet::new();
            for ws in st.segs.range(..cutoff).map(|(ws, _)| *ws) {
                days.insert(day_of(ws).from.0);
            }
            for (ts, _) in st.unsealed_range(i64::MIN, cutoff) {
                days.insert(day_of(ts.0).from.0);
            }
            out.extend(days.into_iter().map(|d| RawDay {
                well_id: well.clone(),
                range: TimeRange {
                    from: Timestamp(d),
                    to: Timestamp(d + DAY_MICROS),
                },
            }));
        }
        drop(index);
        debug_assert!(
            out.iter()
                .all(|d| window_start(d.range.from.0, window) == d.range.from.0)
        );
        out.sort_by(|a, b| {
            (a.well_id.as_str(), a.range.from).cmp(&(b.well_id.as_str(), b.range.from))
        });
        Ok(out)
    }

    async fn delete_raw(
        &self,
        well_id: &WellId,
        range: TimeRange,
        expected: u64,
    ) -> StoreResult<u64> {
        let well = well_id.clone();
        self.call(|reply| Command::DeleteRaw {
            well,
            range: (range.from.0, range.to.0),
            expected,
            reply,
        })
        .await
    }

    fn rollup_tiers(&self) -> &'static [RollupTier] {
        &[RollupTier::Hour]
    }

    async fn delete_rollups_before(&self, tier: RollupTier, cutoff: Timestamp) -> StoreResult<u64> {
        if tier != RollupTier::Hour {
            return Ok(0);
        }
        self.call(|reply| Command::DeleteRollups {
            before: cutoff.0,
            reply,
        })
        .await
    }
}
