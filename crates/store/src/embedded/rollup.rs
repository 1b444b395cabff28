//! Hourly partial aggregates of every sealed segment, so long ranges at coarse steps (a year
//! of one well at 1-day steps) answer from a few kilobytes instead of every reading.
//!
//! One row per segment (`rollups`, same key), written by the same statement sequence and
//! transaction as the segment, so a rollup is never out of date with its segment. A row holds,
//! per hour of the window that has readings: the number of readings, and per channel the
//! count, sum, min, max and last value. Values stay exact where the channel's decimal
//! precision is detected (integers `v * 10^k`, the sum too), else `f64`s; ~0.5 B per reading
//! at 10 s sampling. The PostgreSQL store keeps 1-minute rollups as well; here a 1-minute step
//! is answered from the segments themselves (a day of one well decodes in ~2 ms), so only the
//! hour level is stored and days are folded from hours.
//!
//! A query uses a window's rollup only when its row's reading count equals the count the
//! query's snapshot of the index saw and the window has no unsealed readings in the range;
//! every other window, and the partial step buckets at the range's edges, come from raw
//! points. Results equal `series::evaluate` on the raw points, `avg` to rounding (sums of
//! partial sums), which the conformance suite checks.

use espwatch_core::series::bucket_start;
use espwatch_core::{Agg, FIELD_COUNT, Field, Point, Series, Timestamp};

use super::codec::{ChannelMask, CodecError, Reader, decimal_scale, put_ivarint, put_varint};

pub const HOUR: i64 = 3_600_000_000;
const VERSION: u8 = 1;
const RAW: u8 = 0xFF;

/// Partial aggregate of one channel over some readings.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Partial {
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
}

impl Partial {
    pub const EMPTY: Partial = Partial {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        last: f64::NAN,
    };

    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = v;
    }

    /// Folds a later partial into this one.
    fn merge(&mut self, o: &Partial) {
        if o.n == 0 {
            return;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.last = o.last;
    }

    fn result(&self, agg: Agg) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match agg {
            Agg::Avg => self.sum / self.n as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Last => self.last,
        })
    }
}

/// Aggregates of the readings of one hour (or of a single raw reading).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// Start of the hour, or the reading's timestamp.
    pub at: i64,
    /// Readings, whatever channels they have (a reading of no channel still makes a bucket).
    pub readings: u64,
    pub channels: [Partial; FIELD_COUNT],
}

impl Piece {
    pub fn of_point(p: &Point) -> Piece {
        let mut channels = [Partial::EMPTY; FIELD_COUNT];
        for (c, v) in channels.iter_mut().zip(p.1.raw()) {
            if !v.is_nan() {
                c.add(*v);
            }
        }
        Piece {
            at: p.0.0,
            readings: 1,
            channels,
        }
    }

    /// Folds another piece of the same hour (another well's) into this one.
    pub fn merge(&mut self, o: &Piece) {
        self.readings += o.readings;
        for (c, oc) in self.channels.iter_mut().zip(&o.channels) {
            c.merge(oc);
        }
    }
}

/// Pieces of raw points (ascending), one per `slot`-wide bucket that has any (its points
/// merged in time order, so `last` holds): what `fold` makes of them with a step that is a
/// multiple of `slot` is what it makes of one piece per point, with far fewer pieces.
pub fn pieces_of(points: &[Point], slot: i64) -> impl Iterator<Item = Piece> + '_ {
    points
        .chunk_by(move |a, b| bucket_start(a.0, slot) == bucket_start(b.0, slot))
        .map(move |run| {
            let mut piece = Piece::of_point(&run[0]);
            for p in &run[1..] {
                piece.merge(&Piece::of_point(p));
            }
            piece.at = bucket_start(run[0].0, slot).0;
            piece
        })
}

/// Encodes the hourly rollup of a segment's points (ascending).
pub fn encode(points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + points.len() / 2);
    out.push(VERSION);
    put_varint(&mut out, points.len() as u64);
    let hours: Vec<&[Point]> = points
        .chunk_by(|a, b| bucket_start(a.0, HOUR) == bucket_start(b.0, HOUR))
        .collect();
    put_varint(&mut out, hours.len() as u64);
    let mut prev_hour = 0i64;
    let mut values: Vec<f64> = Vec::new();
    let mut ints: Vec<i64> = Vec::new();
    for hour in hours {
        let h = bucket_start(hour[0].0, HOUR).0.div_euclid(HOUR);
        put_ivarint(&mut out, h.wrapping_sub(prev_hour));
        prev_hour = h;
        put_varint(&mut out, hour.len() as u64);
        for ch in 0..FIELD_COUNT {
            values.clear();
            values.extend(hour.iter().map(|p| p.1.raw()[ch]).filter(|v| !v.is_nan()));
            put_varint(&mut out, values.len() as u64);
            let Some(&last) = values.last() else {
                continue;
            };
            let exact = decimal_scale(&values, &mut ints).and_then(|k| {
                let sum = ints.iter().try_fold(0i64, |s, i| s.checked_add(*i))?;
                Some((k, sum))
            });
            match exact {
                Some((k, sum)) => {
                    out.push(k as u8);
                    put_ivarint(&mut out, sum);
                    let (min, max) = ints
                        .iter()
                        .fold((i64::MAX, i64::MIN), |(lo, hi), i| (lo.min(*i), hi.max(*i)));
                    put_ivarint(&mut out, min);
                    put_ivarint(&mut out, max.wrapping_sub(min));
                    put_ivarint(&mut out, ints[ints.len() - 1].wrapping_sub(min));
                }
                None => {
                    out.push(RAW);
                    let mut p = Partial::EMPTY;
                    for v in &values {
                        p.add(*v);
                    }
                    for v in [p.sum, p.min, p.max, last] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
    }
    out
}

/// Only the reading count of the segment the rollup was made from (its first bytes).
pub fn count(data: &[u8]) -> Result<u64, CodecError> {
    let mut r = Reader::new(data);
    if r.u8()? != VERSION {
        return Err(CodecError("rollup: unknown version".into()));
    }
    r.varint()
}

/// The reading count of the segment the rollup was made from, and its hours.
pub fn decode(data: &[u8]) -> Result<(u64, Vec<Piece>), CodecError> {
    let err = |m: &str| Err(CodecError(format!("rollup: {m}")));
    let mut r = Reader::new(data);
    if r.u8()? != VERSION {
        return err("unknown version");
    }
    let count = r.varint()?;
    let nhours = r.count(1 + FIELD_COUNT)?;
    let mut pieces = Vec::with_capacity(nhours);
    let mut hour = 0i64;
    for _ in 0..nhours {
        hour = hour.wrapping_add(r.ivarint()?);
        let readings = r.varint()?;
        let mut channels = [Partial::EMPTY; FIELD_COUNT];
        for c in channels.iter_mut() {
            let n = r.varint()?;
            if n != 0 {
                *c = read_partial(&mut r, n)?;
            }
        }
        pieces.push(Piece {
            at: hour.wrapping_mul(HOUR),
            readings,
            channels,
        });
    }
    r.finish()?;
    Ok((count, pieces))
}

/// One channel's partial of `n` readings: a scale byte, then four raw floats or four
/// scaled integers (sum, min, max − min, last − min).
fn read_partial(r: &mut Reader<'_>, n: u64) -> Result<Partial, CodecError> {
    let scale = r.u8()?;
    if scale == RAW {
        let bytes = r.bytes(32)?;
        let f = |k: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[k * 8..k * 8 + 8]);
            f64::from_le_bytes(b)
        };
        return Ok(Partial {
            n,
            sum: f(0),
            min: f(1),
            max: f(2),
            last: f(3),
        });
    }
    let Some(&p) = super::codec::POW10.get(scale as usize) else {
        return Err(CodecError("rollup: unknown scale".into()));
    };
    let sum = r.ivarint()?;
    let min = r.ivarint()?;
    let max = min.wrapping_add(r.ivarint()?);
    let last = min.wrapping_add(r.ivarint()?);
    Ok(Partial {
        n,
        sum: sum as f64 / p,
        min: min as f64 / p,
        max: max as f64 / p,
        last: last as f64 / p,
    })
}

/// The hours of a rollup that start in `[from, to)`, appended to `out` with only the
/// channels of `mask` (the others empty: a query never reads them). What [`decode`] gives,
/// without building the pieces of other hours or the partials of other channels. On an
/// error nothing is appended.
pub fn decode_hours(
    data: &[u8],
    mask: ChannelMask,
    (from, to): (i64, i64),
    out: &mut Vec<Piece>,
) -> Result<(), CodecError> {
    let base = out.len();
    let result = decode_hours_into(data, mask, (from, to), out);
    if result.is_err() {
        out.truncate(base);
    }
    result
}

fn decode_hours_into(
    data: &[u8],
    mask: ChannelMask,
    (from, to): (i64, i64),
    out: &mut Vec<Piece>,
) -> Result<(), CodecError> {
    let err = |m: &str| Err(CodecError(format!("rollup: {m}")));
    let mut r = Reader::new(data);
    if r.u8()? != VERSION {
        return err("unknown version");
    }
    r.varint()?;
    let nhours = r.count(1 + FIELD_COUNT)?;
    let mut hour = 0i64;
    for _ in 0..nhours {
        hour = hour.wrapping_add(r.ivarint()?);
        let at = hour.wrapping_mul(HOUR);
        let readings = r.varint()?;
        let wanted = at >= from && at < to;
        let mut channels = [Partial::EMPTY; FIELD_COUNT];
        for (ch, c) in channels.iter_mut().enumerate() {
            let n = r.varint()?;
            if n == 0 {
                continue;
            }
            let partial = read_partial(&mut r, n)?;
            if wanted && mask & (1 << ch) != 0 {
                *c = partial;
            }
        }
        if wanted {
            out.push(Piece {
                at,
                readings,
                channels,
            });
        }
    }
    r.finish()
}

/// The part of a bucketed query rollups can answer: whole step buckets, hour-aligned, at
/// least four hours of them (fewer are cheaper from raw points). `None`: answer from raw.
pub fn inner_range(from: i64, to: i64, step: i64, window: i64) -> Option<(i64, i64)> {
    if step <= 0 || step % HOUR != 0 || window % HOUR != 0 {
        return None;
    }
    let first = bucket_start(Timestamp(from), step).0;
    let inner_from = if first == from {
        from
    } else {
        first.checked_add(step)?
    };
    let inner_to = bucket_start(Timestamp(to), step).0;
    (i128::from(inner_to) - i128::from(inner_from) >= i128::from(4 * HOUR))
        .then_some((inner_from, inner_to))
}

/// Folds pieces (ascending by `at`, disjoint in time) into `step` buckets, as
/// `series::evaluate` does with raw points.
pub fn fold(pieces: &[Piece], fields: &[Field], step: i64, agg: Agg) -> Series {
    let mut series = Series {
        ts: Vec::new(),
        columns: fields.iter().map(|&f| (f, Vec::new())).collect(),
        downsampled: false,
    };
    let mut accs = vec![Partial::EMPTY; fields.len()];
    let mut current: Option<(Timestamp, u64)> = None;
    let flush = |series: &mut Series, accs: &mut [Partial], bucket: Timestamp| {
        series.ts.push(bucket);
        for ((_, column), acc) in series.columns.iter_mut().zip(accs.iter_mut()) {
            column.push(acc.result(agg));
            *acc = Partial::EMPTY;
        }
    };
    for piece in pieces {
        let bucket = bucket_start(Timestamp(piece.at), step);
        match current {
            Some((b, _)) if b == bucket => {}
            Some((done, readings)) => {
                if readings > 0 {
                    flush(&mut series, &mut accs, done);
                }
                current = Some((bucket, 0));
            }
            None => current = Some((bucket, 0)),
        }
        if let Some((_, readings)) = current.as_mut() {
            *readings += piece.readings;
        }
        for (&f, acc) in fields.iter().zip(accs.iter_mut()) {
            acc.merge(&piece.channels[f.index()]);
        }
    }
    if let Some((done, readings)) = current
        && readings > 0
    {
        flush(&mut series, &mut accs, done);
    }
    series
}

/// Pieces summed per bucket as they come, in any order, for the asked fields only: what a
/// fleet aggregate folds the pieces of every well into. Sorting a fleet's pieces by time
/// first (a week of 1 000 wells is 168 000 pieces of every channel, ~90 MB) cost more than
/// reading them. Not for `last`, whose result depends on the order (its caller answers
/// `last` from raw points).
#[derive(Debug, Default)]
pub struct Buckets {
    sums: std::collections::BTreeMap<i64, (u64, Vec<Partial>)>,
}

impl Buckets {
    pub fn add(&mut self, pieces: &[Piece], fields: &[Field], step: i64) {
        for piece in pieces {
            let bucket = bucket_start(Timestamp(piece.at), step).0;
            let (readings, accs) = self
                .sums
                .entry(bucket)
                .or_insert_with(|| (0, vec![Partial::EMPTY; fields.len()]));
            *readings += piece.readings;
            for (&f, acc) in fields.iter().zip(accs.iter_mut()) {
                acc.merge(&piece.channels[f.index()]);
            }
        }
    }

    /// Adds another well's (or thread's) buckets of the same fields.
    pub fn absorb(&mut self, other: Buckets) {
        for (bucket, (readings, accs)) in other.sums {
            match self.sums.entry(bucket) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert((readings, accs));
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let (r, mine) = o.get_mut();
                    *r += readings;
                    for (acc, other) in mine.iter_mut().zip(&accs) {
                        acc.merge(other);
                    }
                }
            }
        }
    }

    /// The series, one point per bucket with readings, as [`fold`] gives it.
    pub fn into_series(self, fields: &[Field], agg: Agg) -> Series {
        let mut series = Series {
            ts: Vec::new(),
            columns: fields.iter().map(|&f| (f, Vec::new())).collect(),
            downsampled: false,
        };
        for (bucket, (readings, accs)) in self.sums {
            if readings == 0 {
                continue;
            }
            series.ts.push(Timestamp(bucket));
            for ((_, column), acc) in series.columns.iter_mut().zip(&accs) {
                column.push(acc.result(agg));
            }
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use espwatch_core::series::evaluate;
    use espwatch_core::{Measurements, TelemetryQuery, TimeRange, WellId};
    use proptest::prelude::*;

    use super::*;

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => Just(f64::NAN),
            4 => (-100_000i64..100_000, 0u32..3).prop_map(|(i, k)| i as f64 / 10f64.powi(k as i32)),
            1 => -1e6f64..1e6,
        ]
    }

    /// Irregular readings over about two days, some channels often missing.
    fn arb_points() -> impl Strategy<Value = Vec<Point>> {
        prop::collection::vec(
            (1i64..2_000_000_000, prop::array::uniform13(arb_value())),
            1..300,
        )
        .prop_map(|rows| {
            let mut t = 1_767_225_600_000_000i64;
            rows.into_iter()
                .map(|(gap, v)| {
                    t += gap;
                    (Timestamp(t), Measurements::from_raw(v))
                })
                .collect()
        })
    }

    fn close(a: &Series, b: &Series) -> bool {
        a.ts == b.ts
            && a.columns.iter().zip(&b.columns).all(|((f, x), (g, y))| {
                f == g
                    && x.iter().zip(y).all(|(u, v)| match (u, v) {
                        (Some(u), Some(v)) => (u - v).abs() <= 1e-9 * v.abs().max(1.0),
                        _ => u == v,
                    })
            })
    }

    proptest! {
        /// Folding the hourly rollup gives what evaluating the raw points gives.
        #[test]
        fn rollup_fold_equals_raw_evaluation(
            points in arb_points(),
            step_hours in prop::sample::select(vec![1i64, 2, 3, 6, 24, 48]),
            agg in prop::sample::select(vec![Agg::Avg, Agg::Min, Agg::Max, Agg::Last]),
        ) {
            let data = encode(&points);
            let (count, pieces) = decode(&data).unwrap();
            prop_assert_eq!(count, points.len() as u64);
            let step = step_hours * HOUR;
            let query = TelemetryQuery {
                well_id: WellId::parse("W").unwrap(),
                range: TimeRange { from: Timestamp(i64::MIN), to: Timestamp(i64::MAX) },
                fields: Field::ALL.to_vec(),
                step_micros: Some(step),
                agg,
                max_points: 1000,
            };
            let want = evaluate(&query, &points);
            let got = fold(&pieces, &query.fields, step, agg);
            prop_assert!(close(&got, &want), "{:?}\n{:?}", got, want);
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
            let mut out = Vec::new();
            if decode_hours(&data, crate::embedded::codec::ALL_CHANNELS, (i64::MIN, i64::MAX), &mut out).is_err() {
                prop_assert!(out.is_empty());
            }
        }

        /// Decoding only some hours and channels gives those hours of the full decoding,
        /// with those channels and the others empty; a damaged rollup appends nothing.
        #[test]
        fn hours_decode_as_the_full_rollup_does(
            points in arb_points(),
            mask in 0u16..(1 << FIELD_COUNT),
            cut in 0i64..48,
            len in 0i64..60,
        ) {
            let data = encode(&points);
            let (_, all) = decode(&data).unwrap();
            let from = bucket_start(points[0].0, HOUR).0 + cut * HOUR;
            let to = from + len * HOUR;
            let want: Vec<Piece> = all
                .into_iter()
                .filter(|p| p.at >= from && p.at < to)
                .map(|mut p| {
                    for (ch, c) in p.channels.iter_mut().enumerate() {
                        if mask & (1 << ch) == 0 {
                            *c = Partial::EMPTY;
                        }
                    }
                    p
                })
                .collect();
            let mut got = vec![Piece::of_point(&points[0])];
            decode_hours(&data, mask, (from, to), &mut got).unwrap();
            prop_assert_eq!(got.len(), want.len() + 1);
            for (g, w) in got[1..].iter().zip(&want) {
                prop_assert_eq!(g.at, w.at);
                prop_assert_eq!(g.readings, w.readings);
                for (a, b) in g.channels.iter().zip(&w.channels) {
                    prop_assert_eq!((a.n, a.sum, a.min, a.max), (b.n, b.sum, b.min, b.max));
                    prop_assert!(a.last == b.last || (a.last.is_nan() && b.last.is_nan()));
                }
            }
            let mut got = vec![Piece::of_point(&points[0])];
            prop_assert!(decode_hours(&data[..data.len() - 1], mask, (from, to), &mut got).is_err());
            prop_assert_eq!(got.len(), 1);
        }
    }

    #[test]
    fn inner_range_keeps_whole_aligned_buckets() {
        let day = 24 * HOUR;
        assert_eq!(inner_range(0, 10 * day, day, 4 * HOUR), Some((0, 10 * day)));
        assert_eq!(
            inner_range(5, 10 * day + 5, day, 4 * HOUR),
            Some((day, 10 * day))
        );
        assert_eq!(inner_range(0, 3 * HOUR, HOUR, 4 * HOUR), None);
        assert_eq!(inner_range(0, 10 * day, 60_000_000, 4 * HOUR), None);
        assert_eq!(inner_range(0, 10 * day, HOUR, 30 * 60_000_000), None);
        assert!(inner_range(i64::MIN, i64::MAX, day, 4 * HOUR).is_some());
    }
}
