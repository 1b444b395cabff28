//! [`Store::fleet_query`] on the embedded engine: one snapshot of the index for every well,
//! then one blocking task that answers each well the way `query` does (hourly rollups where
//! they are valid, raw points for edges, unsealed readings and the rest), on two threads
//! sharing the read connections. Same answers as asking well by well, without a task,
//! a pool round trip and an index lock per well.
//!
//! [`Store::fleet_totals`] walks the same path with one-hour buckets and merges every piece
//! into one count/sum/min/max per channel: a day of 1 000 wells is 24 rollup hours each
//! instead of ~8 600 decoded readings each.
//!
//! [`Store::fleet_aggregate`] of every well reads the fleet tier (`fleet_rollup`): one row
//! per window for all wells; windows without a valid row, and the range's partial buckets,
//! are read well by well as above and merged hour by hour.
//!
//! [`Store::fleet_query`]: crate::Store::fleet_query
//! [`Store::fleet_totals`]: crate::Store::fleet_totals
//! [`Store::fleet_aggregate`]: crate::Store::fleet_aggregate

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use espwatch_core::series::evaluate;
use espwatch_core::{Agg, Point, Series, TimeRange, WellId};
use rusqlite::Connection;

use super::fleet_rollup::{self, WindowSum};
use super::index::{merge_dedup, window_start};
use super::schema::sql_fail;
use super::{EmbeddedStore, Inner, codec, rollup};
use crate::fleet::{FleetQuery, FleetTotalsQuery, Totals, WellSeries, WellTotals};
use crate::{StoreError, StoreResult};

/// What the index says about one well, taken under one read lock for all wells.
struct WellSnapshot {
    well: WellId,
    /// Unsealed readings in the query's range.
    head: Vec<Point>,
    /// Sealed windows (start, reading count) overlapping the range.
    windows: Vec<(i64, i64)>,
    /// Windows retention expired whose hourly rollup stays (start, reading count).
    rolled: Vec<(i64, i64)>,
}

/// Threads answering a fleet query.
const WORKERS: usize = 2;

impl EmbeddedStore {
    /// What the index says about `wells` (every well when empty) over `[from, to)`, by id,
    /// wells without anything there left out; under the same read lock, the fleet tier's
    /// view of the windows starting in `sums` (see `fleet_rollup::window_sums`).
    fn snapshot_wells(
        &self,
        wells: &[WellId],
        (from, to): (i64, i64),
        sums: Option<(i64, i64)>,
    ) -> (Vec<WellSnapshot>, BTreeMap<i64, WindowSum>) {
        let window = self.inner.shared.window;
        let index = self.inner.shared.read();
        let take = |well: &WellId| {
            index.wells.get(well).map(|st| WellSnapshot {
                well: well.clone(),
                head: st.unsealed_range(from, to),
                windows: st
                    .segs
                    .range(window_start(from, window)..to)
                    .filter(|(_, m)| m.max_ts >= from && m.min_ts < to)
                    .map(|(ws, m)| (*ws, m.count))
                    .collect(),
                rolled: super::rollup_windows(st, window_start(from, window), to)
                    .into_iter()
                    .filter(|(ws, _)| !st.segs.contains_key(ws))
                    .collect(),
            })
        };
        let mut snapshots: Vec<WellSnapshot> = if wells.is_empty() {
            index.wells.keys().filter_map(take).collect()
        } else {
            wells.iter().filter_map(take).collect()
        };
        let sums = sums
            .map(|(a, b)| fleet_rollup::window_sums(&index, a, b))
            .unwrap_or_default();
        drop(index);
        snapshots.sort_by(|a, b| a.well.cmp(&b.well));
        snapshots.dedup_by(|a, b| a.well == b.well);
        snapshots.retain(|s| !s.head.is_empty() || !s.windows.is_empty() || !s.rolled.is_empty());
        (snapshots, sums)
    }

    pub(super) async fn fleet(&self, query: &FleetQuery) -> StoreResult<Vec<WellSeries>> {
        self.check_open()?;
        if query.step_micros <= 0 {
            return Err(StoreError::Internal(
                "a fleet query needs a positive step".into(),
            ));
        }
        let (wells, range) = (query.wells.clone(), query.range);
        let query = query.clone();
        self.each_well(&wells, range, move |inner, conn, snap| {
            let series = inner.answer(conn, &query, snap)?;
            Ok((!series.ts.is_empty()).then(|| WellSeries {
                well_id: snap.well.clone(),
                series,
            }))
        })
        .await
    }

    pub(super) async fn fleet_totals(
        &self,
        query: &FleetTotalsQuery,
    ) -> StoreResult<Vec<WellTotals>> {
        self.check_open()?;
        let (wells, range) = (query.wells.clone(), query.range);
        let query = query.clone();
        self.each_well(&wells, range, move |inner, conn, snap| {
            let totals = inner.totals(conn, &query, snap)?;
            Ok((totals.readings > 0).then_some(totals))
        })
        .await
    }

    /// Snapshots the index for `wells` (every well when empty) under one read lock, then
    /// answers each well that may have readings in `range` with `answer`, on [`WORKERS`]
    /// threads sharing the read connections; answers come by well id.
    async fn each_well<T, F>(
        &self,
        wells: &[WellId],
        range: TimeRange,
        answer: F,
    ) -> StoreResult<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(&Inner, &Connection, &WellSnapshot) -> StoreResult<Option<T>> + Send + Sync + 'static,
    {
        let (from, to) = (range.from.0, range.to.0);
        if from >= to {
            return Ok(Vec::new());
        }
        let (snapshots, _) = self.snapshot_wells(wells, (from, to), None);
        self.blocking(move |inner| {
            inner.across_wells(&snapshots, |conn, snap| answer(inner, conn, snap))
        })
        .await
    }

    pub(super) async fn aggregate_fleet(&self, query: &FleetQuery) -> StoreResult<Series> {
        self.check_open()?;
        let step = query.step_micros;
        if step <= 0 {
            return Err(StoreError::Internal(
                "a fleet query needs a positive step".into(),
            ));
        }
        if query.agg == Agg::Last {
            // Which well's reading is last needs timestamps no rollup keeps.
            return crate::fleet::fleet_aggregate_raw(self, query).await;
        }
        let (from, to) = (query.range.from.0, query.range.to.0);
        if from >= to {
            return Ok(rollup::fold(&[], &query.fields, step, query.agg));
        }
        let window = self.inner.shared.window;
        let inner_range = rollup::inner_range(from, to, step, window);
        // The fleet tier sums every well: only for a query of every well.
        let sums_range = inner_range
            .filter(|_| query.wells.is_empty())
            .map(|(a, b)| (window_start(a, window), b));
        let (snapshots, sums) = self.snapshot_wells(&query.wells, (from, to), sums_range);
        let query = query.clone();
        self.blocking(move |inner| {
            let rows = if sums.is_empty() {
                HashMap::new()
            } else {
                inner
                    .readers
                    .with(|conn| fleet_rollup::read_valid(conn, &sums))?
            };
            let mut pieces: Vec<rollup::Piece> = Vec::new();
            // Parts read well by well: (from, to, whether hourly rollups may answer).
            let mut rest: Vec<(i64, i64, bool)> = Vec::new();
            // Parts a fleet row answers for the sealed data: the wells' unsealed readings.
            let mut unsealed: Vec<(i64, i64)> = Vec::new();
            let extend = |parts: &mut Vec<(i64, i64)>, (a, b): (i64, i64)| match parts.last_mut() {
                Some((_, last_to)) if *last_to == a => *last_to = b,
                _ => parts.push((a, b)),
            };
            let mut hourly: Vec<(i64, i64)> = Vec::new();
            let (mut from_rows, mut by_well) = (0u64, 0u64);
            match inner_range {
                None => rest.push((from, to, false)),
                Some((inner_from, inner_to)) => {
                    for (a, b) in [(from, inner_from), (inner_to, to)] {
                        if a < b {
                            rest.push((a, b, false));
                        }
                    }
                    let mut ws = window_start(inner_from, window);
                    while ws < inner_to {
                        let end = ws.saturating_add(window);
                        let (a, b) = (ws.max(inner_from), end.min(inner_to));
                        match rows.get(&ws) {
                            Some(row) => {
                                pieces
                                    .extend(row.iter().filter(|p| p.at >= a && p.at < b).cloned());
                                extend(&mut unsealed, (a, b));
                                from_rows += 1;
                            }
                            None => {
                                extend(&mut hourly, (a, b));
                                by_well += 1;
                            }
                        }
                        if end == i64::MAX {
                            break;
                        }
                        ws = end;
                    }
                }
            }
            // Only fleet aggregates of every well can use the tier.
            if query.wells.is_empty() {
                let shared = &inner.shared;
                shared
                    .fleet_windows_from_rows
                    .fetch_add(from_rows, Ordering::Relaxed);
                shared
                    .fleet_windows_by_well
                    .fetch_add(by_well, Ordering::Relaxed);
            }
            rest.extend(hourly.into_iter().map(|(a, b)| (a, b, true)));
            let slot = if step % rollup::HOUR == 0 {
                rollup::HOUR
            } else {
                step
            };
            let mask = codec::channel_mask(&query.fields);
            // Each well's pieces summed into buckets where they are read; the buckets of the
            // wells (and of the fleet rows) then added together.
            let per_well = inner.across_wells(&snapshots, |conn, snap| {
                let mut out = Vec::new();
                for &(a, b, hourly) in &rest {
                    let hours = if hourly { (a, b) } else { (b, b) };
                    out.extend(inner.pieces(conn, snap, mask, slot, (a, b), hours)?);
                }
                for &(a, b) in &unsealed {
                    let from = snap.head.partition_point(|p| p.0.0 < a);
                    let to = snap.head.partition_point(|p| p.0.0 < b);
                    out.extend(rollup::pieces_of(&snap.head[from..to], slot));
                }
                let mut buckets = rollup::Buckets::default();
                buckets.add(&out, &query.fields, step);
                Ok(Some(buckets))
            })?;
            let mut buckets = rollup::Buckets::default();
            buckets.add(&pieces, &query.fields, step);
            for well in per_well {
                buckets.absorb(well);
            }
            Ok(buckets.into_series(&query.fields, query.agg))
        })
        .await
    }
}

/// What one well's readings in a range come as.
enum Gathered {
    /// Raw points (the range holds too few whole buckets for rollups to pay).
    Raw(Vec<Point>),
    /// Hourly rollups for the whole buckets inside, raw points elsewhere merged hour by hour
    /// (`Inner::pieces`); disjoint in time, unordered.
    Pieces(Vec<rollup::Piece>),
}

impl Inner {
    /// `f` of every snapshot, on [`WORKERS`] threads, each with one read connection and
    /// all its reads in one read transaction (a statement outside a transaction opens and
    /// closes one of its own: the WAL read lock taken and released, the page cache checked,
    /// for each of a fleet's thousands of statements); the `Some` answers in snapshot order.
    fn across_wells<T: Send>(
        &self,
        snapshots: &[WellSnapshot],
        f: impl Fn(&Connection, &WellSnapshot) -> StoreResult<Option<T>> + Sync,
    ) -> StoreResult<Vec<T>> {
        let chunk = snapshots.len().div_ceil(WORKERS).max(1);
        let f = &f;
        let results: Vec<StoreResult<Vec<T>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = snapshots
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        self.readers.with(|conn| {
                            in_read_transaction(conn, || {
                                let mut out = Vec::with_capacity(part.len());
                                for snap in part {
                                    out.extend(f(conn, snap)?);
                                }
                                Ok(out)
                            })
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Internal("fleet query worker panicked".into()))
                    })
                })
                .collect()
        });
        let mut all = Vec::with_capacity(snapshots.len());
        for r in results {
            all.extend(r?);
        }
        Ok(all)
    }

    /// One well's answer, as `EmbeddedStore::query` gives it, from the snapshot.
    fn answer(
        &self,
        conn: &Connection,
        query: &FleetQuery,
        snap: &WellSnapshot,
    ) -> StoreResult<espwatch_core::Series> {
        let mask = codec::channel_mask(&query.fields);
        match self.gather(conn, snap, query.range, query.step_micros, mask)? {
            Gathered::Raw(points) => Ok(evaluate(&query.for_well(snap.well.clone()), &points)),
            Gathered::Pieces(mut pieces) => {
                pieces.sort_by_key(|p| p.at);
                Ok(rollup::fold(
                    &pieces,
                    &query.fields,
                    query.step_micros,
                    query.agg,
                ))
            }
        }
    }

    /// One well's totals over the whole range: its whole hours from rollups.
    fn totals(
        &self,
        conn: &Connection,
        query: &FleetTotalsQuery,
        snap: &WellSnapshot,
    ) -> StoreResult<WellTotals> {
        let mask = codec::channel_mask(&query.fields);
        Ok(
            match self.gather(conn, snap, query.range, rollup::HOUR, mask)? {
                Gathered::Raw(points) => {
                    WellTotals::of_points(snap.well.clone(), &points, &query.fields)
                }
                Gathered::Pieces(pieces) => {
                    let mut readings = 0;
                    let mut channels = vec![Totals::EMPTY; query.fields.len()];
                    for p in &pieces {
                        readings += p.readings;
                        for (t, f) in channels.iter_mut().zip(&query.fields) {
                            let c = &p.channels[f.index()];
                            t.merge(&Totals {
                                n: c.n,
                                sum: c.sum,
                                min: c.min,
                                max: c.max,
                            });
                        }
                    }
                    WellTotals {
                        well_id: snap.well.clone(),
                        readings,
                        channels,
                    }
                }
            },
        )
    }

    /// A well's readings of `range` for `step` buckets: rollups where they are valid (the
    /// snapshot's reading count matches, no unsealed reading in the window), raw points for
    /// the edges, unsealed readings and the rest.
    fn gather(
        &self,
        conn: &Connection,
        snap: &WellSnapshot,
        range: TimeRange,
        step: i64,
        mask: codec::ChannelMask,
    ) -> StoreResult<Gathered> {
        let (from, to) = (range.from.0, range.to.0);
        let Some(inner) = rollup::inner_range(from, to, step, self.shared.window) else {
            return Ok(Gathered::Raw(merge_dedup(
                self.snap_sealed(conn, snap, (from, to), mask)?,
                snap.head.clone(),
            )));
        };
        Ok(Gathered::Pieces(self.pieces(
            conn,
            snap,
            mask,
            rollup::HOUR,
            (from, to),
            inner,
        )?))
    }

    /// Sealed points of the snapshot's well in `[a, b)` (no read when it has no window there).
    fn snap_sealed(
        &self,
        conn: &Connection,
        snap: &WellSnapshot,
        (a, b): (i64, i64),
        mask: codec::ChannelMask,
    ) -> StoreResult<Vec<Point>> {
        let window = self.shared.window;
        let any = snap
            .windows
            .iter()
            .any(|(ws, _)| *ws < b && ws.saturating_add(window) > a);
        if any {
            self.read_sealed_on(conn, &snap.well, (a, b), mask)
        } else {
            Ok(Vec::new())
        }
    }

    /// One well's pieces of `[from, to)` (within the snapshot's range), unsorted: the hours of
    /// `[inner_from, inner_to)` (hour-aligned, inside, possibly empty) from its valid hourly
    /// rollups, raw points everywhere else merged by `slot` (a divisor of the step, and
    /// `rollup::HOUR` whenever there are hours).
    fn pieces(
        &self,
        conn: &Connection,
        snap: &WellSnapshot,
        mask: codec::ChannelMask,
        slot: i64,
        (from, to): (i64, i64),
        (inner_from, inner_to): (i64, i64),
    ) -> StoreResult<Vec<rollup::Piece>> {
        let window = self.shared.window;
        let head_in = |a: i64, b: i64| -> Vec<Point> {
            snap.head
                .iter()
                .filter(|p| p.0.0 >= a && p.0.0 < b)
                .copied()
                .collect()
        };
        let mut pieces: Vec<rollup::Piece> = Vec::new();
        for (a, b) in [(from, inner_from), (inner_to, to)] {
            if a < b {
                let points =
                    merge_dedup(self.snap_sealed(conn, snap, (a, b), mask)?, head_in(a, b));
                pieces.extend(rollup::pieces_of(&points, slot));
            }
        }
        if inner_from >= inner_to {
            return Ok(pieces);
        }
        let head = head_in(inner_from, inner_to);
        let mut windows: Vec<(i64, i64)> = snap
            .windows
            .iter()
            .chain(&snap.rolled)
            .filter(|(ws, _)| *ws >= window_start(inner_from, window) && *ws < inner_to)
            .copied()
            .collect();
        windows.sort_unstable();
        let raw_windows: HashSet<i64> = head.iter().map(|p| window_start(p.0.0, window)).collect();
        let read = self.read_rollups_on(
            conn,
            &snap.well,
            (inner_from, inner_to),
            &windows,
            &raw_windows,
            mask,
        )?;
        pieces.extend(read.pieces);
        pieces.extend(rollup::pieces_of(&merge_dedup(read.raw, head), slot));
        Ok(pieces)
    }
}

/// `f` inside one read transaction on `conn` (committed after it; rolled back when it
/// fails, so the connection never goes back to the pool inside a transaction).
fn in_read_transaction<T>(conn: &Connection, f: impl FnOnce() -> StoreResult<T>) -> StoreResult<T> {
    conn.execute_batch("BEGIN")
        .map_err(|e| sql_fail("starting a fleet read", e))?;
    match f() {
        Ok(v) => {
            conn.execute_batch("COMMIT")
                .map_err(|e| sql_fail("ending a fleet read", e))?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
