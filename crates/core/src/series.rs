//! Time-series query shapes and the pure functions that aggregate and downsample raw points.
//!
//! Storage backends return raw points for a well and time range; these functions turn them
//! into what the API answers. A backend that can aggregate natively (TimescaleDB continuous
//! aggregates) may do so instead, as long as its results equal these.

use crate::telemetry::{Field, Measurements, Timestamp, WellId};

/// Aggregate applied per time bucket when a query has a `step`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Agg {
    #[default]
    Avg,
    Min,
    Max,
    Last,
}

impl Agg {
    pub fn parse(s: &str) -> Option<Agg> {
        match s {
            "avg" | "mean" => Some(Agg::Avg),
            "min" => Some(Agg::Min),
            "max" => Some(Agg::Max),
            "last" => Some(Agg::Last),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Last => "last",
        }
    }
}

/// Half-open time range `[from, to)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl TimeRange {
    pub fn contains(&self, ts: Timestamp) -> bool {
        ts >= self.from && ts < self.to
    }
}

/// A query for one well's telemetry.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryQuery {
    pub well_id: WellId,
    pub range: TimeRange,
    /// Channels to return, in this order. Never empty.
    pub fields: Vec<Field>,
    /// Bucket width in microseconds; `None` returns raw points.
    pub step_micros: Option<i64>,
    pub agg: Agg,
    /// Raw queries with more points than this are downsampled server-side.
    pub max_points: usize,
}

/// Columnar result: `ts[i]` pairs with `columns[k].1[i]`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    pub ts: Vec<Timestamp>,
    pub columns: Vec<(Field, Vec<Option<f64>>)>,
    /// True when raw points were reduced to honour `max_points`.
    pub downsampled: bool,
}

/// A raw stored point: a timestamp and all its channels.
pub type Point = (Timestamp, Measurements);

/// Start of the `step_micros`-wide bucket holding `ts`.
///
/// Buckets are aligned to multiples of the step since the Unix epoch, not to the query start:
/// the same instant always lands in the same bucket, so charts do not shimmer as a range
/// slides, and results match rollups computed ahead of time. The first bucket of a query may
/// therefore start before `range.from`. A non-positive step returns `ts` unchanged rather than
/// dividing by zero.
pub fn bucket_start(ts: Timestamp, step_micros: i64) -> Timestamp {
    if step_micros <= 0 {
        return ts;
    }
    // `rem_euclid` is in 0..step, so this floors toward minus infinity for negative
    // timestamps too; saturating only matters within one step of i64::MIN.
    Timestamp(ts.0.saturating_sub(ts.0.rem_euclid(step_micros)))
}

/// Answers a query from the raw points of its well.
///
/// `points` should be ascending by time and within `query.range`, as the store's
/// `read_range` returns them; anything outside the range is dropped and unsorted input is sorted, so a
/// careless caller gets a correct answer, only slower.
///
/// - **Raw** (`step_micros` is `None`): one row per point, with the requested fields; a point
///   that has none of them is kept as a row of nulls (the reading still happened). Above
///   `query.max_points` rows, see [`downsample`](#downsampling).
/// - **Bucketed** (`step_micros` is `Some`): one row per [`bucket_start`]-aligned bucket that
///   holds at least one point, with `query.agg` applied per field over the points that have
///   it (`last` is the value of the latest such point); `None` when no point of the bucket has
///   the field. `max_points` does not apply: the caller bounds the bucket count by choosing
///   the step. A non-positive step is treated as no step.
///
/// # Downsampling
///
/// Raw results longer than `max_points` are reduced with per-bucket min/max: the points are
/// split into `max_points / 2` consecutive groups of (nearly) equal count, and from each group
/// the points holding the minimum and the maximum of the *shape field* are kept, in time order.
/// The shape field is the first requested field that has any value in the range. Min/max was
/// chosen over LTTB because it is guaranteed to keep every spike, including the global minimum
/// and maximum, which is what an operator looks for on a trip or overload chart; LTTB favours
/// visual smoothness and can drop an extreme. Other fields are shown at the kept points. A
/// group without any value of the shape field keeps its first point, so gaps in one channel do
/// not hide the others entirely. Grouping by count rather than time spends no budget on gaps.
pub fn evaluate(query: &TelemetryQuery, points: &[Point]) -> Series {
    let points = restrict_to_range(query.range, points);
    match query.step_micros {
        Some(step) if step > 0 => aggregate(&points, &query.fields, step, query.agg),
        _ => raw(&points, &query.fields, query.max_points),
    }
}

/// The points within `range`, ascending by time (stable for equal timestamps). Borrows in the
/// normal case of sorted input.
fn restrict_to_range(range: TimeRange, points: &[Point]) -> std::borrow::Cow<'_, [Point]> {
    let sorted = points.windows(2).all(|w| w[0].0 <= w[1].0);
    if sorted {
        let start = points.partition_point(|p| p.0 < range.from);
        let end = points.partition_point(|p| p.0 < range.to).max(start);
        std::borrow::Cow::Borrowed(&points[start..end])
    } else {
        let mut kept: Vec<Point> = points
            .iter()
            .filter(|p| range.contains(p.0))
            .copied()
            .collect();
        kept.sort_by_key(|p| p.0);
        std::borrow::Cow::Owned(kept)
    }
}

fn raw(points: &[Point], fields: &[Field], max_points: usize) -> Series {
    if points.len() <= max_points {
        return columns_of(points.iter(), fields, false);
    }
    let shape_field = fields
        .iter()
        .copied()
        .find(|&f| points.iter().any(|p| p.1.get(f).is_some()));
    let kept = min_max_indices(points, shape_field, max_points);
    columns_of(kept.iter().map(|&i| &points[i]), fields, true)
}

fn columns_of<'a>(
    rows: impl Iterator<Item = &'a Point> + Clone,
    fields: &[Field],
    downsampled: bool,
) -> Series {
    Series {
        ts: rows.clone().map(|p| p.0).collect(),
        columns: fields
            .iter()
            .map(|&f| (f, rows.clone().map(|p| p.1.get(f)).collect()))
            .collect(),
        downsampled,
    }
}

/// Indices (ascending) of the points kept by min/max downsampling; at most `max_points`.
fn min_max_indices(points: &[Point], field: Option<Field>, max_points: usize) -> Vec<usize> {
    let n = points.len();
    if max_points == 0 || n == 0 {
        return Vec::new();
    }
    // With a budget of 1 there is room for one point per group, and one group: keep the max.
    let groups = (max_points / 2).max(1);
    let per_group = max_points.min(2);
    let mut kept = Vec::with_capacity(groups * per_group);
    // u128 so `g * n` cannot overflow whatever the sizes.
    let bound = |g: usize| (g as u128 * n as u128 / groups as u128) as usize;
    for g in 0..groups {
        let (start, end) = (bound(g), bound(g + 1));
        if start >= end {
            continue;
        }
        let extremes = field.and_then(|f| {
            let mut found: Option<((usize, f64), (usize, f64))> = None;
            for (i, p) in points[start..end].iter().enumerate() {
                if let Some(v) = p.1.get(f) {
                    let i = start + i;
                    found = Some(match found {
                        None => ((i, v), (i, v)),
                        Some((min, max)) => (
                            if v < min.1 { (i, v) } else { min },
                            if v > max.1 { (i, v) } else { max },
                        ),
                    });
                }
            }
            found.map(|((imin, _), (imax, _))| (imin, imax))
        });
        match extremes {
            None => kept.push(start),
            Some((_, imax)) if per_group == 1 => kept.push(imax),
            Some((imin, imax)) => {
                kept.push(imin.min(imax));
                if imin != imax {
                    kept.push(imin.max(imax));
                }
            }
        }
    }
    kept
}

/// Running aggregate of one field within one bucket.
#[derive(Copy, Clone)]
struct Acc {
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
    last: f64,
}

impl Acc {
    const EMPTY: Acc = Acc {
        sum: 0.0,
        count: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        last: f64::NAN,
    };

    fn add(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        // Points arrive in time order, so the latest value wins.
        self.last = v;
    }

    fn result(&self, agg: Agg) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        Some(match agg {
            Agg::Avg => self.sum / self.count as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Last => self.last,
        })
    }
}

fn aggregate(points: &[Point], fields: &[Field], step: i64, agg: Agg) -> Series {
    let mut series = Series {
        ts: Vec::new(),
        columns: fields.iter().map(|&f| (f, Vec::new())).collect(),
        downsampled: false,
    };
    let mut accs = vec![Acc::EMPTY; fields.len()];
    let mut current: Option<Timestamp> = None;
    let flush = |series: &mut Series, accs: &mut [Acc], bucket: Timestamp| {
        series.ts.push(bucket);
        for ((_, column), acc) in series.columns.iter_mut().zip(accs.iter_mut()) {
            column.push(acc.result(agg));
            *acc = Acc::EMPTY;
        }
    };
    for (ts, values) in points {
        let bucket = bucket_start(*ts, step);
        if current != Some(bucket) {
            if let Some(done) = current {
                flush(&mut series, &mut accs, done);
            }
            current = Some(bucket);
        }
        for (&field, acc) in fields.iter().zip(accs.iter_mut()) {
            if let Some(v) = values.get(field) {
                acc.add(v);
            }
        }
    }
    if let Some(done) = current {
        flush(&mut series, &mut accs, done);
    }
    series
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: i64 = Timestamp::MICROS_PER_SECOND;

    fn point(secs: i64, values: &[(Field, f64)]) -> Point {
        let mut m = Measurements::empty();
        for &(f, v) in values {
            m.set(f, Some(v));
        }
        (Timestamp(secs * S), m)
    }

    fn query(
        fields: &[Field],
        step_secs: Option<i64>,
        agg: Agg,
        max_points: usize,
    ) -> TelemetryQuery {
        TelemetryQuery {
            well_id: WellId::parse("W-1").unwrap(),
            range: TimeRange {
                from: Timestamp(0),
                to: Timestamp(1_000_000 * S),
            },
            fields: fields.to_vec(),
            step_micros: step_secs.map(|s| s * S),
            agg,
            max_points,
        }
    }

    use Field::{MotorCurrentA as A, MotorTempC as T};

    #[test]
    fn bucket_start_floors_to_multiples_of_the_step() {
        assert_eq!(bucket_start(Timestamp(0), 10), Timestamp(0));
        assert_eq!(bucket_start(Timestamp(9), 10), Timestamp(0));
        assert_eq!(bucket_start(Timestamp(10), 10), Timestamp(10));
        assert_eq!(bucket_start(Timestamp(25), 10), Timestamp(20));
        assert_eq!(bucket_start(Timestamp(-1), 10), Timestamp(-10));
        assert_eq!(bucket_start(Timestamp(7), 0), Timestamp(7));
        assert_eq!(bucket_start(Timestamp(7), -5), Timestamp(7));
        assert_eq!(bucket_start(Timestamp(i64::MIN), 7), Timestamp(i64::MIN));
        assert_eq!(
            bucket_start(Timestamp(i64::MAX), 1_000_000),
            Timestamp(i64::MAX - i64::MAX % 1_000_000)
        );
        // A real one: 2026-11-22T08:07:30Z in 5-minute buckets starts at 08:05.
        let ts = Timestamp::parse_rfc3339("2026-11-22T08:07:30Z").unwrap();
        let start = Timestamp::parse_rfc3339("2026-11-22T08:05:00Z").unwrap();
        assert_eq!(bucket_start(ts, 300 * S), start);
    }

    /// Points at 0..=35 s, current 1..; two buckets of 20 s: [0, 20) and [20, 40).
    fn two_buckets() -> Vec<Point> {
        vec![
            point(0, &[(A, 10.0), (T, 80.0)]),
            point(5, &[(A, 30.0)]),
            point(15, &[(A, 20.0), (T, 90.0)]),
            point(20, &[(T, 70.0)]),
            point(35, &[(A, 5.0)]),
        ]
    }

    #[test]
    fn each_aggregate_over_aligned_buckets() {
        let points = two_buckets();
        let expect = |agg, a: [Option<f64>; 2], t: [Option<f64>; 2]| {
            let s = evaluate(&query(&[A, T], Some(20), agg, 10), &points);
            assert_eq!(s.ts, vec![Timestamp(0), Timestamp(20 * S)], "{agg:?}");
            assert_eq!(s.columns, vec![(A, a.to_vec()), (T, t.to_vec())], "{agg:?}");
            assert!(!s.downsampled);
        };
        expect(Agg::Avg, [Some(20.0), Some(5.0)], [Some(85.0), Some(70.0)]);
        expect(Agg::Min, [Some(10.0), Some(5.0)], [Some(80.0), Some(70.0)]);
        expect(Agg::Max, [Some(30.0), Some(5.0)], [Some(90.0), Some(70.0)]);
        // Last: the latest point *having the field* (t=35 s has no temperature).
        expect(Agg::Last, [Some(20.0), Some(5.0)], [Some(90.0), Some(70.0)]);
    }

    #[test]
    fn buckets_without_a_field_give_none_and_empty_buckets_give_no_row() {
        let points = vec![
            point(0, &[(A, 1.0)]),
            point(100, &[(T, 50.0)]), // bucket [100, 110): no current
        ];
        let s = evaluate(&query(&[A], Some(10), Agg::Avg, 10), &points);
        // No row for the 9 empty buckets in between; a row of None for the point without A.
        assert_eq!(s.ts, vec![Timestamp(0), Timestamp(100 * S)]);
        assert_eq!(s.columns, vec![(A, vec![Some(1.0), None])]);
    }

    #[test]
    fn buckets_align_to_the_epoch_not_to_the_range() {
        let mut q = query(&[A], Some(60), Agg::Avg, 10);
        q.range.from = Timestamp(90 * S);
        let points = vec![
            point(80, &[(A, 100.0)]), // outside the range: dropped
            point(95, &[(A, 1.0)]),
            point(119, &[(A, 3.0)]),
            point(120, &[(A, 7.0)]),
        ];
        let s = evaluate(&q, &points);
        assert_eq!(s.ts, vec![Timestamp(60 * S), Timestamp(120 * S)]);
        assert_eq!(s.columns, vec![(A, vec![Some(2.0), Some(7.0)])]);
    }

    #[test]
    fn raw_keeps_rows_without_requested_fields_and_respects_the_range() {
        let mut q = query(&[T], None, Agg::Avg, 100);
        q.range = TimeRange {
            from: Timestamp(5 * S),
            to: Timestamp(20 * S),
        };
        let s = evaluate(&q, &two_buckets());
        // 5 and 15 are in; 0 is before, 20 is the excluded end.
        assert_eq!(s.ts, vec![Timestamp(5 * S), Timestamp(15 * S)]);
        assert_eq!(s.columns, vec![(T, vec![None, Some(90.0)])]);
        assert!(!s.downsampled);
    }

    #[test]
    fn unsorted_input_is_sorted_and_filtered() {
        let mut points = two_buckets();
        points.reverse();
        points.push(point(2_000_000, &[(A, 1.0)])); // past range.to
        let s = evaluate(&query(&[A], Some(20), Agg::Last, 10), &points);
        assert_eq!(s.ts, vec![Timestamp(0), Timestamp(20 * S)]);
        assert_eq!(s.columns, vec![(A, vec![Some(20.0), Some(5.0)])]);
    }

    fn day_of_10s_points() -> Vec<Point> {
        (0..8_640)
            .map(|i| {
                // A smooth wave with one trip (zero current) and one spike.
                let mut a = 40.0 + 5.0 * (i as f64 / 300.0).sin();
                if i == 1234 {
                    a = 0.0;
                }
                if i == 6000 {
                    a = 95.0;
                }
                point(i * 10, &[(A, a), (T, 90.0 + (i % 7) as f64)])
            })
            .collect()
    }

    #[test]
    fn downsampling_honours_max_points_and_keeps_extremes() {
        let points = day_of_10s_points();
        for max_points in [1, 2, 3, 10, 101, 500, 8_639] {
            let s = evaluate(&query(&[A, T], None, Agg::Avg, max_points), &points);
            assert!(s.downsampled);
            assert!(s.ts.len() <= max_points, "{max_points}: {}", s.ts.len());
            assert!(s.ts.windows(2).all(|w| w[0] < w[1]), "time order");
            let a: Vec<f64> = s.columns[0].1.iter().map(|v| v.unwrap()).collect();
            assert!(a.contains(&95.0), "max kept with {max_points}");
            if max_points >= 2 {
                assert!(a.contains(&0.0), "min kept with {max_points}");
                assert!(s.ts.len() + 1 >= max_points, "budget used: {}", s.ts.len());
            }
            // Rows are real points: the other column is taken from the same instant.
            for (ts, t) in s.ts.iter().zip(&s.columns[1].1) {
                let i = (ts.0 / (10 * S)) as usize;
                assert_eq!(*t, points[i].1.get(T));
            }
        }
        let s = evaluate(&query(&[A], None, Agg::Avg, 8_640), &points);
        assert!(!s.downsampled);
        assert_eq!(s.ts.len(), 8_640);
        let s = evaluate(&query(&[A], None, Agg::Avg, 0), &points);
        assert!(s.downsampled && s.ts.is_empty());
    }

    #[test]
    fn downsampling_shapes_on_the_first_field_that_has_data() {
        // The first requested field (frequency) is absent everywhere: shape on current.
        let points = day_of_10s_points();
        let s = evaluate(
            &query(&[Field::FrequencyHz, A], None, Agg::Avg, 100),
            &points,
        );
        assert!(s.columns[0].1.iter().all(Option::is_none));
        let a: Vec<f64> = s.columns[1].1.iter().map(|v| v.unwrap()).collect();
        assert!(a.contains(&0.0) && a.contains(&95.0));
    }

    #[test]
    fn a_day_of_10s_points_evaluates_fast() {
        // The real bound (well under 1 ms in release) is measured by the decode_bench example;
        // this catches accidental quadratic behaviour even in debug builds.
        let points = day_of_10s_points();
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let _ = evaluate(&query(&[A, T], Some(60), Agg::Avg, 1_000), &points);
            let _ = evaluate(&query(&[A, T], None, Agg::Avg, 1_000), &points);
        }
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    proptest! {
        #[test]
        fn downsampled_output_is_a_bounded_ordered_subset_with_extremes(
            values in proptest::collection::vec(proptest::option::of(0.0f64..1000.0), 0..400),
            max_points in 0usize..50,
        ) {
            let points: Vec<Point> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut m = Measurements::empty();
                    m.set(A, *v);
                    (Timestamp(i as i64 * S), m)
                })
                .collect();
            let s = evaluate(&query(&[A], None, Agg::Avg, max_points), &points);
            prop_assert!(s.ts.len() <= max_points);
            prop_assert_eq!(s.downsampled, points.len() > max_points);
            prop_assert!(s.ts.windows(2).all(|w| w[0] < w[1]));
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            if max_points >= 2 && !present.is_empty() {
                let kept: Vec<f64> = s.columns[0].1.iter().flatten().copied().collect();
                let min = present.iter().copied().fold(f64::INFINITY, f64::min);
                let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                prop_assert!(kept.contains(&min) && kept.contains(&max));
            }
        }

        #[test]
        fn bucketed_avg_equals_a_naive_computation(
            samples in proptest::collection::vec((0i64..600, proptest::option::of(0.0f64..100.0)), 0..200),
            step in 1i64..120,
        ) {
            let mut points: Vec<Point> = samples
                .iter()
                .map(|&(t, v)| {
                    let mut m = Measurements::empty();
                    m.set(A, v);
                    (Timestamp(t * S), m)
                })
                .collect();
            points.sort_by_key(|p| p.0);
            let s = evaluate(&query(&[A], Some(step), Agg::Avg, 10), &points);
            let mut buckets: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
            for p in &points {
                let entry = buckets.entry(p.0.0.div_euclid(step * S) * step * S).or_default();
                entry.extend(p.1.get(A));
            }
            prop_assert_eq!(s.ts.len(), buckets.len());
            for ((ts, got), (start, vals)) in s.ts.iter().zip(&s.columns[0].1).zip(&buckets) {
                prop_assert_eq!(ts.0, *start);
                let want = (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64);
                match (got, want) {
                    (Some(g), Some(w)) => prop_assert!((g - w).abs() < 1e-9),
                    (g, w) => prop_assert_eq!(*g, w),
                }
            }
        }
    }
}
