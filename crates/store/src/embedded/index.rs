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
use std::ops::{Bound, RangeBounds};
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
    pub head: Head,
    /// Committed readings a running checkpoint is sealing (frozen; disjoint from `head`).
    pub sealing: Arc<Head>,
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
            head: Head::default(),
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

/// A well's unsealed readings: `(timestamp, values)` in a `Vec` sorted by timestamp, without
/// repeats. Issue 17 (soak memory): readings arrive in time order, so nearly every insert is a
/// push, and a `Vec` holds a reading in 112 bytes where a `BTreeMap` (nodes half full when
/// filled in order) took ~210: at 1 000 wells × 1 Hz the heads hold ~300 000 readings between
/// checkpoints, twice that while one runs. A late reading is inserted in place (a head holds
/// one checkpoint interval of one well: a few hundred readings to move at most).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Head(Vec<(i64, Measurements)>);

impl Head {
    /// An empty head with room for `n` readings (a well's next interval is usually the size
    /// of its last; untouched capacity costs address space, not memory).
    pub fn with_capacity(n: usize) -> Self {
        Head(Vec::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where `ts` is or would go.
    fn search(&self, ts: i64) -> Result<usize, usize> {
        match self.0.last() {
            None => Err(0),
            Some(&(last, _)) if ts > last => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&ts, |(t, _)| *t),
        }
    }

    pub fn contains_key(&self, ts: &i64) -> bool {
        self.search(*ts).is_ok()
    }

    /// Inserts `(ts, m)` unless `ts` is already there (the first copy wins); whether it was
    /// inserted.
    pub fn insert_if_vacant(&mut self, ts: i64, m: Measurements) -> bool {
        match self.search(ts) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, (ts, m));
                true
            }
        }
    }

    /// Adds readings not already there (for each timestamp the first copy wins). Readings
    /// after the newest are pushed; older ones (a backfill, a historian import) are merged in
    /// one pass, so a batch costs the head's length once, not once per reading.
    pub fn extend<I: IntoIterator<Item = (i64, Measurements)>>(&mut self, points: I) {
        let mut new: Vec<_> = points.into_iter().collect();
        if !new.is_sorted_by_key(|(t, _)| *t) {
            // Stable, so the first copy of a timestamp stays first and `dedup` keeps it.
            new.sort_by_key(|(t, _)| *t);
        }
        new.dedup_by_key(|(t, _)| *t);
        match (self.0.last(), new.first()) {
            (Some(&(last, _)), Some(&(first, _))) if first <= last => self.merge(new),
            _ => self.0.extend(new),
        }
    }

    /// Merges sorted, repeat-free readings into the head (the head's copy wins). Only the
    /// head's readings from the first new timestamp on are moved: batches that arrive a little
    /// out of order (concurrent clients, each committed as it comes) touch the head's last few
    /// readings, not all of it. Rebuilding the whole head for each such batch was a quarter of
    /// the server's CPU on 1 000-reading batches from 8 connections (issue 23).
    fn merge(&mut self, new: Vec<(i64, Measurements)>) {
        let Some(&(first, _)) = new.first() else {
            return;
        };
        let keep = self.0.partition_point(|(t, _)| *t < first);
        let old = self.0.split_off(keep);
        self.0.reserve(old.len() + new.len());
        let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
        while let (Some(a), Some(b)) = (old.peek(), new.peek()) {
            let order = a.0.cmp(&b.0);
            if order.is_ge() {
                let b = new.next().expect("peeked");
                if order.is_gt() {
                    self.0.push(b);
                    continue;
                }
            }
            self.0.push(old.next().expect("peeked"));
        }
        self.0.extend(old);
        self.0.extend(new);
    }

    /// Moves every reading of `other` into `self` (those of `self` win on a shared
    /// timestamp), leaving `other` empty.
    pub fn append(&mut self, other: &mut Head) {
        let other = std::mem::take(&mut other.0);
        if self.0.is_empty() {
            self.0 = other;
        } else {
            self.extend(other);
        }
    }

    /// Readings with a timestamp in `range`, ascending, as `BTreeMap::range` gives them.
    pub fn range<R: RangeBounds<i64>>(&self, range: R) -> HeadIter<'_> {
        let start = match range.start_bound() {
            Bound::Unbounded => 0,
            Bound::Included(&t) => self.0.partition_point(|(x, _)| *x < t),
            Bound::Excluded(&t) => self.0.partition_point(|(x, _)| *x <= t),
        };
        let end = match range.end_bound() {
            Bound::Unbounded => self.0.len(),
            Bound::Included(&t) => self.0.partition_point(|(x, _)| *x <= t),
            Bound::Excluded(&t) => self.0.partition_point(|(x, _)| *x < t),
        };
        self.0[start..end.max(start)].iter().map(as_pair)
    }

    #[cfg(test)]
    pub fn iter(&self) -> HeadIter<'_> {
        self.0.iter().map(as_pair)
    }

    pub fn last_key_value(&self) -> Option<(&i64, &Measurements)> {
        self.0.last().map(|(t, m)| (t, m))
    }
}

/// An iterator over head readings, as a `BTreeMap`'s yields them.
pub type HeadIter<'a> = std::iter::Map<
    std::slice::Iter<'a, (i64, Measurements)>,
    fn(&'a (i64, Measurements)) -> (&'a i64, &'a Measurements),
>;

fn as_pair((t, m): &(i64, Measurements)) -> (&i64, &Measurements) {
    (t, m)
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

    /// The sorted `Vec` behind a head answers as the `BTreeMap` it replaced: late and repeated
    /// readings, every kind of range bound.
    #[test]
    fn a_head_answers_like_an_ordered_map() {
        let m = |v: f64| p(0, v).1;
        let mut head = Head::default();
        let mut model = BTreeMap::new();
        let arrivals = [5, 6, 9, 2, 7, 7, 12, 1, 9, 3, 20, 15, 0, -4];
        for (i, ts) in arrivals.into_iter().enumerate() {
            let fresh = !model.contains_key(&ts);
            if fresh {
                model.insert(ts, m(i as f64));
            }
            assert_eq!(head.insert_if_vacant(ts, m(i as f64)), fresh, "{ts}");
        }
        let mut late = Head::default();
        late.extend([(8, m(100.0)), (9, m(101.0)), (30, m(102.0))]);
        model.entry(8).or_insert(m(100.0));
        model.entry(30).or_insert(m(102.0));
        head.append(&mut late);
        assert!(late.is_empty());
        assert_eq!(head.len(), model.len());
        let pairs = |it: &mut dyn Iterator<Item = (&i64, &Measurements)>| {
            it.map(|(t, v)| (*t, *v)).collect::<Vec<_>>()
        };
        assert_eq!(pairs(&mut head.iter()), pairs(&mut model.iter()));
        for from in -6..33 {
            for to in from..33 {
                assert_eq!(
                    pairs(&mut head.range(from..to)),
                    pairs(&mut model.range(from..to))
                );
                assert_eq!(
                    pairs(&mut head.range(from..=to)),
                    pairs(&mut model.range(from..=to))
                );
            }
            assert_eq!(
                pairs(&mut head.range(from..)),
                pairs(&mut model.range(from..))
            );
            assert_eq!(
                pairs(&mut head.range(..from)),
                pairs(&mut model.range(..from))
            );
            assert_eq!(head.contains_key(&from), model.contains_key(&from));
        }
        assert_eq!(head.last_key_value(), model.last_key_value());
        assert_eq!(head.range(9..).next(), model.range(9..).next());
    }

    /// A batch a little older than the head's newest reading is merged into the head's tail
    /// only: the readings before its first timestamp stay where they are (same allocation, when
    /// it has room), rather than the whole head being copied into a new one for every such
    /// batch (issue 23: a quarter of the server's CPU with concurrent batch clients).
    #[test]
    fn a_late_batch_is_merged_into_the_heads_tail_only() {
        let m = |v: f64| p(0, v).1;
        let mut head = Head(Vec::with_capacity(4_096));
        head.extend((0..1_000).map(|i| (i * 10, m(i as f64))));
        let at = head.0.as_ptr();
        // Late: 9 950..10 040 overlaps the last readings (9 950 .. 9 990 are there already).
        head.extend((0..10).map(|i| (9_950 + i * 10 - 5 * (i % 2), m(-1.0))));
        assert_eq!(head.0.as_ptr(), at, "the head was rebuilt for a late batch");
        let mut model: BTreeMap<i64, Measurements> =
            (0..1_000).map(|i| (i * 10, m(i as f64))).collect();
        for i in 0..10 {
            model.entry(9_950 + i * 10 - 5 * (i % 2)).or_insert(m(-1.0));
        }
        let got: Vec<(i64, f64)> = head.iter().map(|(t, v)| (*t, v.raw()[0])).collect();
        let want: Vec<(i64, f64)> = model.iter().map(|(t, v)| (*t, v.raw()[0])).collect();
        assert_eq!(got, want);
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
