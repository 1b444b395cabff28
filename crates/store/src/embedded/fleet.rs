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
//! [`Store::fleet_query`]: crate::Store::fleet_query
//! [`Store::fleet_totals`]: crate::Store::fleet_totals

use std::collections::HashSet;

use espwatch_core::series::evaluate;
use espwatch_core::{Point, TimeRange, WellId};

use super::index::{merge_dedup, window_start};
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
    pub(super) async fn fleet(&self, query: &FleetQuery) -> StoreResult<Vec<WellSeries>> {
        self.check_open()?;
        if query.step_micros <= 0 {
            return Err(StoreError::Internal(
                "a fleet query needs a positive step".into(),
            ));
        }
        let (wells, range) = (query.wells.clone(), query.range);
        let query = query.clone();
        self.each_well(&wells, range, move |inner, snap| {
            let series = inner.answer(&query, snap)?;
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
        self.each_well(&wells, range, move |inner, snap| {
            let totals = inner.totals(&query, snap)?;
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
        F: Fn(&Inner, &WellSnapshot) -> StoreResult<Option<T>> + Send + Sync + 'static,
    {
        let (from, to) = (range.from.0, range.to.0);
        if from >= to {
            return Ok(Vec::new());
        }
        let window = self.inner.shared.window;
        let mut snapshots: Vec<WellSnapshot> = {
            let index = self.inner.shared.read();
            let mut take = |well: &WellId| {
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
            if wells.is_empty() {
                index.wells.keys().filter_map(&mut take).collect()
            } else {
                wells.iter().filter_map(&mut take).collect()
            }
        };
        snapshots.sort_by(|a, b| a.well.cmp(&b.well));
        snapshots.dedup_by(|a, b| a.well == b.well);
        snapshots.retain(|s| !s.head.is_empty() || !s.windows.is_empty() || !s.rolled.is_empty());
        self.blocking(move |inner| {
            let chunk = snapshots.len().div_ceil(WORKERS).max(1);
            let results: Vec<StoreResult<Vec<T>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = snapshots
                    .chunks(chunk)
                    .map(|part| {
                        let answer = &answer;
                        scope.spawn(move || {
                            let mut out = Vec::with_capacity(part.len());
                            for snap in part {
                                if let Some(a) = answer(inner, snap)? {
                                    out.push(a);
                                }
                            }
                            Ok(out)
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
        })
        .await
    }
}

/// What one well's readings in a range come as.
enum Gathered {
    /// Raw points (the range holds too few whole buckets for rollups to pay).
    Raw(Vec<Point>),
    /// Hourly rollups for the whole buckets inside, single raw points elsewhere; disjoint in
    /// time, unordered.
    Pieces(Vec<rollup::Piece>),
}

impl Inner {
    /// One well's answer, as `EmbeddedStore::query` gives it, from the snapshot.
    fn answer(
        &self,
        query: &FleetQuery,
        snap: &WellSnapshot,
    ) -> StoreResult<espwatch_core::Series> {
        let mask = codec::channel_mask(&query.fields);
        match self.gather(snap, query.range, query.step_micros, mask)? {
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
    fn totals(&self, query: &FleetTotalsQuery, snap: &WellSnapshot) -> StoreResult<WellTotals> {
        let mask = codec::channel_mask(&query.fields);
        Ok(match self.gather(snap, query.range, rollup::HOUR, mask)? {
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
        })
    }

    /// A well's readings of `range` for `step` buckets: rollups where they are valid (the
    /// snapshot's reading count matches, no unsealed reading in the window), raw points for
    /// the edges, unsealed readings and the rest.
    fn gather(
        &self,
        snap: &WellSnapshot,
        range: TimeRange,
        step: i64,
        mask: codec::ChannelMask,
    ) -> StoreResult<Gathered> {
        let (from, to) = (range.from.0, range.to.0);
        let window = self.shared.window;
        let sealed = |a: i64, b: i64| -> StoreResult<Vec<Point>> {
            let any = snap
                .windows
                .iter()
                .any(|(ws, _)| *ws < b && ws.saturating_add(window) > a);
            if any {
                self.read_sealed(&snap.well, (a, b), mask)
            } else {
                Ok(Vec::new())
            }
        };
        let head_in = |a: i64, b: i64| -> Vec<Point> {
            snap.head
                .iter()
                .filter(|p| p.0.0 >= a && p.0.0 < b)
                .copied()
                .collect()
        };
        let Some((inner_from, inner_to)) = rollup::inner_range(from, to, step, window) else {
            return Ok(Gathered::Raw(merge_dedup(
                sealed(from, to)?,
                snap.head.clone(),
            )));
        };
        let mut pieces: Vec<rollup::Piece> = Vec::new();
        for (a, b) in [(from, inner_from), (inner_to, to)] {
            if a < b {
                let points = merge_dedup(sealed(a, b)?, head_in(a, b));
                pieces.extend(points.iter().map(rollup::Piece::of_point));
            }
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
        let read = self.read_rollups(
            &snap.well,
            (inner_from, inner_to),
            &windows,
            &raw_windows,
            mask,
        )?;
        pieces.extend(read.pieces);
        pieces.extend(
            merge_dedup(read.raw, head)
                .iter()
                .map(rollup::Piece::of_point),
        );
        Ok(Gathered::Pieces(pieces))
    }
}
