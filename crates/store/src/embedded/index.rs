//! The in-memory index: what the engine knows without touching SQLite.
//!
//! Per well: its registry record, the "head" (readings committed to the log but not yet
//! sealed into segments), metadata of its sealed segments, and its newest reading. Only the
//! writer thread mutates it (under the write lock, after a successful commit); readers take
//! short read locks to snapshot what they need.
//!
//! While a checkpoint runs, the head it seals is frozen into `sealing` (shared with the
//! checkpoint thread) and new readings go to a fresh `head`; both are unsealed readings, and
//! every reader and duplicate check sees their union until the checkpoint's segments are
//! installed, in the same write-lock section that empties `sealing`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use espwatch_core::{Measurements, Point, Timestamp, WellId};

use crate::WellRecord;

/// Bounds of one sealed segment, enough to decide whether a reading might collide with it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegMeta {
    pub min_ts: i64,
    pub max_ts: i64,
    pub count: i64,
    /// Written compact (pco columns); otherwise fast or version 1, to be rewritten compact
    /// once its window is closed.
    pub compact: bool,
}

#[derive(Debug)]
pub struct WellState {
    pub record: WellRecord,
    /// Committed, unsealed readings, by timestamp.
    pub head: BTreeMap<i64, Measurements>,
    /// Committed readings a running checkpoint is sealing (frozen; disjoint from `head`).
    pub sealing: Arc<BTreeMap<i64, Measurements>>,
    /// Sealed segments by window start.
    pub segs: BTreeMap<i64, SegMeta>,
    /// Newest stored reading (head or sealed). Also the fast path of duplicate checks:
    /// anything newer cannot be stored yet.
    pub latest: Option<Point>,
    /// Windows whose raw segment retention deleted while their hourly rollup stays, with the
    /// reading count the rollup was made from: step queries still answer from them.
    pub rolled: BTreeMap<i64, i64>,
}

impl WellState {
    pub fn new(record: WellRecord) -> Self {
        WellState {
            record,
            head: BTreeMap::new(),
            sealing: Arc::default(),
            segs: BTreeMap::new(),
            latest: None,
            rolled: BTreeMap::new(),
        }
    }

    pub fn latest_ts(&self) -> Option<i64> {
        self.latest.as_ref().map(|p| p.0.0)
    }

    /// Whether `ts` is an unsealed reading (live head or being sealed).
    pub fn unsealed_contains(&self, ts: i64) -> bool {
        self.head.contains_key(&ts) || self.sealing.contains_key(&ts)
    }

    /// Unsealed points with `from <= ts < to`, ascending (the head and the frozen readings
    /// of a running checkpoint never share a timestamp).
    pub fn unsealed_range(&self, from: i64, to: i64) -> Vec<Point> {
        let head = self.head.range(from..to).map(|(t, m)| (Timestamp(*t), *m));
        if self.sealing.is_empty() {
            return head.collect();
        }
        let sealing: Vec<Point> = self
            .sealing
            .range(from..to)
            .map(|(t, m)| (Timestamp(*t), *m))
            .collect();
        merge_dedup(sealing, head.collect())
    }

    /// Records `(ts, m)` as the newest point when it is.
    pub fn offer_latest(&mut self, ts: i64, m: &Measurements) {
        if self.latest_ts().is_none_or(|l| ts > l) {
            self.latest = Some((Timestamp(ts), *m));
        }
    }
}

#[derive(Debug, Default)]
pub struct Index {
    pub wells: HashMap<WellId, WellState>,
    /// Readings in all heads (with `sealing_total`: the readings in the log).
    pub head_total: usize,
    /// Readings frozen for the running checkpoint.
    pub sealing_total: usize,
    /// When the oldest unsealed reading was committed; drives the checkpoint interval.
    pub oldest_head_at: Option<Instant>,
    /// Number of sealed segments.
    pub segments: u64,
    /// Damaged segments and log batches moved to the `quarantine` table when the store was
    /// opened (one description each), for the health probe.
    pub quarantined: Vec<String>,
}

impl Index {
    /// Points of `well` in the head with `from <= ts < to`, plus the window starts of its
    /// sealed segments that may hold points of that range.
    pub fn snapshot(
        &self,
        well: &WellId,
        from: i64,
        to: i64,
        window: i64,
    ) -> Option<(Vec<Point>, Vec<i64>)> {
        let st = self.wells.get(well)?;
        if from >= to {
            return Some((Vec::new(), Vec::new()));
        }
        let head = st.unsealed_range(from, to);
        let windows = st
            .segs
            .range(window_start(from, window)..to)
            .filter(|(_, m)| m.max_ts >= from && m.min_ts < to)
            .map(|(w, _)| *w)
            .collect();
        Some((head, windows))
    }
}

/// Start of the window holding `ts` (floor, so negative timestamps work too).
pub fn window_start(ts: i64, window: i64) -> i64 {
    ts.div_euclid(window).saturating_mul(window)
}

/// Merges two ascending point lists, dropping the second copy of a timestamp present in
/// both (sealed and head copies of a reading are identical, see the read path).
pub fn merge_dedup(a: Vec<Point>, b: Vec<Point>) -> Vec<Point> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    if a.last().map(|p| p.0) < b.first().map(|p| p.0) {
        let mut a = a;
        a.extend(b);
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut ia = a.into_iter().peekable();
    let mut ib = b.into_iter().peekable();
    loop {
        match (ia.peek(), ib.peek()) {
            (Some(x), Some(y)) => {
                if x.0 < y.0 {
                    out.extend(ia.next());
                } else if y.0 < x.0 {
                    out.extend(ib.next());
                } else {
                    out.extend(ia.next());
                    ib.next();
                }
            }
            (Some(_), None) => {
                out.extend(ia);
                break;
            }
            (None, _) => {
                out.extend(ib);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: i64, v: f64) -> Point {
        let mut raw = [f64::NAN; espwatch_core::FIELD_COUNT];
        raw[0] = v;
        (Timestamp(t), Measurements::from_raw(raw))
    }

    #[test]
    fn window_start_floors() {
        assert_eq!(window_start(0, 10), 0);
        assert_eq!(window_start(9, 10), 0);
        assert_eq!(window_start(10, 10), 10);
        assert_eq!(window_start(-1, 10), -10);
        assert_eq!(window_start(-10, 10), -10);
    }

    #[test]
    fn merge_keeps_order_and_first_copy() {
        let a = vec![p(1, 1.0), p(3, 3.0), p(5, 5.0)];
        let b = vec![p(2, 2.0), p(3, 99.0), p(6, 6.0)];
        let m = merge_dedup(a, b);
        let ts: Vec<i64> = m.iter().map(|p| p.0.0).collect();
        assert_eq!(ts, vec![1, 2, 3, 5, 6]);
        assert_eq!(m[2].1.raw()[0], 3.0);
        assert_eq!(merge_dedup(vec![p(1, 1.0)], vec![p(2, 2.0)]).len(), 2);
        assert_eq!(merge_dedup(vec![], vec![p(2, 2.0)]).len(), 1);
    }
}
