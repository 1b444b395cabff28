//! Binary encodings of the embedded engine: log batches and sealed segments.
//!
//! Both are versioned by a leading byte so the format can evolve. Decoders never trust their
//! input: every length is bounds-checked and every inconsistency is a [`CodecError`], because
//! the bytes come from disk and may be corrupt.
//!
//! **Log batch** (one per commit, written for durability, read only at recovery): a table of
//! wells, each with its readings of the commit in the segment encoding below. Measured: raw
//! `f64`s (~110 B/reading) made disk writes the bottleneck of bulk ingestion; this is about a
//! quarter of that for a little CPU.
//!
//! **Segment** (one per well and time window, written at checkpoints, read by every query):
//! columnar. Timestamps are zigzag-varint delta-of-delta (regular sampling costs one byte per
//! point); each channel is a presence bitmap plus values in "decimal scaling": SCADA values
//! are decimals with few digits, so `v * 10^k` is an integer for a small `k`, and the deltas
//! of those integers are small varints. Lossless by construction (checked bit for bit),
//! falling back to raw `f64` for channels that are not decimal.

use std::collections::BTreeMap;

use espwatch_core::{FIELD_COUNT, Field, Measurements, Point, Timestamp, WellId};

const LOG_VERSION: u8 = 1;
const SEGMENT_VERSION: u8 = 1;

/// Highest decimal scale tried; beyond it values are stored raw.
const MAX_SCALE: usize = 6;
const POW10: [f64; MAX_SCALE + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
/// Integers must stay exactly representable as f64.
const MAX_SCALED: f64 = 9_007_199_254_740_992.0; // 2^53

const PRESENCE_NONE: u8 = 0;
const PRESENCE_ALL: u8 = 1;
const PRESENCE_BITMAP: u8 = 2;
const ENCODING_RAW: u8 = 0xFF;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// Primitives

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => err("unexpected end of data"),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return err("unexpected end of data");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return err("unexpected end of data in varint");
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return err("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return err("varint too long");
            }
        }
    }

    #[inline]
    fn ivarint(&mut self) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint()?))
    }

    /// A count that is only plausible if each item takes at least `min_bytes` of what is
    /// left; refuses absurd counts before anything is allocated for them.
    fn count(&mut self, min_bytes: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|n| n.saturating_mul(min_bytes.max(1)) <= self.remaining());
        match fits {
            Some(n) => Ok(n),
            None => err(format!("implausible count {n}")),
        }
    }

    fn finish(&self) -> Result<(), CodecError> {
        if self.remaining() != 0 {
            return err(format!("{} trailing bytes", self.remaining()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Log batches

/// Encodes one commit's accepted readings, grouped by well and ascending in time per well,
/// into `out` (cleared first; reusing one buffer spares the writer a large allocation and
/// its page faults per commit).
///
/// Each well's readings are stored in the segment encoding: about a quarter of the size of
/// raw `f64`s, and at high ingest rates the bytes written, not the CPU, bound the store.
pub fn encode_log_batch<'a, I>(wells: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = (&'a WellId, &'a BTreeMap<i64, Measurements>)>,
    I::IntoIter: ExactSizeIterator,
{
    let wells = wells.into_iter();
    out.clear();
    out.push(LOG_VERSION);
    put_varint(out, wells.len() as u64);
    for (id, points) in wells {
        put_varint(out, id.as_str().len() as u64);
        out.extend_from_slice(id.as_str().as_bytes());
        encode_segment_into(points.iter().map(|(t, m)| (*t, m)), out);
    }
}

/// Readings of one well in a decoded log batch.
pub type LogWell = (WellId, Vec<Point>);

pub fn decode_log_batch(data: &[u8]) -> Result<Vec<LogWell>, CodecError> {
    let mut r = Reader::new(data);
    let version = r.u8()?;
    if version != LOG_VERSION {
        return err(format!("unknown log batch version {version}"));
    }
    let nwells = r.count(2)?;
    let mut wells = Vec::with_capacity(nwells);
    for _ in 0..nwells {
        let len = r.count(1)?;
        let raw = r.bytes(len)?;
        let id = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| WellId::parse(s).ok())
            .ok_or_else(|| CodecError("invalid well id".into()))?;
        let mut points = Vec::new();
        decode_rows(&mut r, &mut points, |ts| (0, ts.len()))?;
        wells.push((id, points));
    }
    r.finish()?;
    Ok(wells)
}

// ---------------------------------------------------------------------------------------------
// Segments

/// Encodes points that are strictly ascending by time (callers guarantee it; checked in debug).
pub fn encode_segment(points: &[Point]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + points.len() * 2 * FIELD_COUNT);
    encode_segment_into(points.iter().map(|(t, m)| (t.0, m)), &mut out);
    out
}

/// Appends the segment encoding of ascending `(ts, values)` pairs to `out`.
fn encode_segment_into<'a>(
    points: impl Iterator<Item = (i64, &'a Measurements)>,
    out: &mut Vec<u8>,
) {
    let mut ts: Vec<i64> = Vec::new();
    let mut rows: Vec<&[f64; FIELD_COUNT]> = Vec::new();
    for (t, m) in points {
        ts.push(t);
        rows.push(m.raw());
    }
    debug_assert!(ts.windows(2).all(|w| w[0] < w[1]));
    let n = ts.len();
    out.push(SEGMENT_VERSION);
    put_varint(out, n as u64);

    // Timestamps: first value, first delta, then delta-of-delta. Wrapping arithmetic keeps
    // arbitrary i64 inputs lossless (the decoder wraps the same way).
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, &t) in ts.iter().enumerate() {
        match i {
            0 => put_ivarint(out, t),
            1 => {
                prev_delta = t.wrapping_sub(prev);
                put_ivarint(out, prev_delta);
            }
            _ => {
                let delta = t.wrapping_sub(prev);
                put_ivarint(out, delta.wrapping_sub(prev_delta));
                prev_delta = delta;
            }
        }
        prev = t;
    }

    let mut present: Vec<f64> = Vec::with_capacity(n);
    let mut ints: Vec<i64> = Vec::with_capacity(n);
    for ch in 0..FIELD_COUNT {
        present.clear();
        present.extend(rows.iter().map(|r| r[ch]).filter(|v| !v.is_nan()));
        if present.is_empty() {
            out.push(PRESENCE_NONE);
            continue;
        }
        if present.len() == n {
            out.push(PRESENCE_ALL);
        } else {
            out.push(PRESENCE_BITMAP);
            let start = out.len();
            out.resize(start + n.div_ceil(8), 0);
            for (i, r) in rows.iter().enumerate() {
                if !r[ch].is_nan() {
                    out[start + i / 8] |= 1 << (i % 8);
                }
            }
        }
        match decimal_scale(&present, &mut ints) {
            Some(k) => {
                out.push(k as u8);
                let mut prev = 0i64;
                for &i in &ints {
                    put_ivarint(out, i.wrapping_sub(prev));
                    prev = i;
                }
            }
            None => {
                out.push(ENCODING_RAW);
                for v in &present {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

/// `v * 10^k` as an integer when that is lossless bit for bit, else `None`.
///
/// Rounds half away from zero by hand: `f64::round` is a libm call on baseline x86-64 and
/// dominated checkpoints. The rounding rule does not affect correctness (the result is
/// verified and stored as is), only how often a value qualifies.
#[inline]
fn scaled(v: f64, k: usize) -> Option<i64> {
    let p = POW10[k];
    let x = v * p;
    // Too large, infinite or NaN (NaN fails every comparison, hence not `>=`).
    if x.abs().partial_cmp(&MAX_SCALED) != Some(std::cmp::Ordering::Less) {
        return None;
    }
    let i = (x + 0.5f64.copysign(x)) as i64;
    ((i as f64 / p).to_bits() == v.to_bits()).then_some(i)
}

/// Smallest `k` such that every value survives `v -> i = v*10^k -> i/10^k` bit for bit;
/// fills `ints` with the scaled values.
fn decimal_scale(values: &[f64], ints: &mut Vec<i64>) -> Option<usize> {
    // One pass per candidate k, restarting with a larger k at the first value that needs
    // more digits; real channels settle on their k within the first few values.
    let mut k = 0;
    'scales: loop {
        ints.clear();
        for &v in values {
            match scaled(v, k) {
                Some(i) => ints.push(i),
                None => {
                    k += 1;
                    if k > MAX_SCALE {
                        return None;
                    }
                    continue 'scales;
                }
            }
        }
        return Some(k);
    }
}

fn decode_timestamps(r: &mut Reader<'_>) -> Result<Vec<i64>, CodecError> {
    let version = r.u8()?;
    if version != SEGMENT_VERSION {
        return err(format!("unknown segment version {version}"));
    }
    let n = r.count(1)?;
    let mut ts = Vec::with_capacity(n);
    let mut prev = 0i64;
    let mut delta = 0i64;
    for i in 0..n {
        let v = r.ivarint()?;
        let t = match i {
            0 => v,
            1 => {
                delta = v;
                prev.wrapping_add(delta)
            }
            _ => {
                delta = delta.wrapping_add(v);
                prev.wrapping_add(delta)
            }
        };
        if i > 0 && t <= prev {
            return err("timestamps not strictly ascending");
        }
        ts.push(t);
        prev = t;
    }
    Ok(ts)
}

/// Only the timestamps of a segment (for duplicate checks); ascending.
pub fn decode_segment_timestamps(data: &[u8]) -> Result<Vec<i64>, CodecError> {
    decode_timestamps(&mut Reader::new(data))
}

/// Decodes the points of a segment with `from <= ts < to`, appending them to `out` in order.
pub fn decode_segment_range(
    data: &[u8],
    from: i64,
    to: i64,
    out: &mut Vec<Point>,
) -> Result<(), CodecError> {
    let mut r = Reader::new(data);
    decode_rows(&mut r, out, |ts| {
        let lo = ts.partition_point(|t| *t < from);
        let hi = ts.partition_point(|t| *t < to).max(lo);
        (lo, hi)
    })?;
    r.finish()
}

/// All points of a segment.
pub fn decode_segment(data: &[u8]) -> Result<Vec<Point>, CodecError> {
    let mut out = Vec::new();
    let mut r = Reader::new(data);
    decode_rows(&mut r, &mut out, |ts| (0, ts.len()))?;
    r.finish()?;
    Ok(out)
}

/// Decodes the rows `lo..hi` chosen by `select` from the timestamps. Values are delta coded,
/// so every present value of a channel is read, but only selected rows are materialised.
fn decode_rows(
    r: &mut Reader<'_>,
    out: &mut Vec<Point>,
    select: impl FnOnce(&[i64]) -> (usize, usize),
) -> Result<(), CodecError> {
    let ts = decode_timestamps(r)?;
    let n = ts.len();
    let (lo, hi) = select(&ts);
    let base = out.len();
    out.extend(
        ts[lo..hi]
            .iter()
            .map(|t| (Timestamp(*t), Measurements::empty())),
    );
    let wanted = &mut out[base..];
    // Row index of every present value, reused across channels.
    let mut rows: Vec<usize> = Vec::with_capacity(n);
    for (ch, field) in Field::ALL.into_iter().enumerate() {
        let presence = r.u8()?;
        rows.clear();
        match presence {
            PRESENCE_NONE => continue,
            PRESENCE_ALL => rows.extend(0..n),
            PRESENCE_BITMAP => {
                let bitmap = r.bytes(n.div_ceil(8))?;
                rows.extend((0..n).filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0));
                if rows.is_empty() {
                    return err(format!("channel {ch}: empty presence bitmap"));
                }
            }
            other => return err(format!("channel {ch}: unknown presence kind {other}")),
        }
        let encoding = r.u8()?;
        if encoding == ENCODING_RAW {
            let raw = r.bytes(rows.len() * 8)?;
            for (j, &row) in rows.iter().enumerate() {
                if row >= lo && row < hi {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&raw[j * 8..j * 8 + 8]);
                    let v = f64::from_le_bytes(b);
                    if v.is_nan() {
                        return err(format!("channel {ch}: NaN stored as a present value"));
                    }
                    wanted[row - lo].1.set(field, Some(v));
                }
            }
        } else if (encoding as usize) <= MAX_SCALE {
            let p = POW10[encoding as usize];
            let mut acc = 0i64;
            for &row in &rows {
                acc = acc.wrapping_add(r.ivarint()?);
                if row >= lo && row < hi {
                    wanted[row - lo].1.set(field, Some(acc as f64 / p));
                }
            }
        } else {
            return err(format!("channel {ch}: unknown value encoding {encoding}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(vals: &[(usize, f64)]) -> Measurements {
        let mut raw = [f64::NAN; FIELD_COUNT];
        for &(i, v) in vals {
            raw[i] = v;
        }
        Measurements::from_raw(raw)
    }

    /// Bit-exact equality with NaN meaning "missing" (any NaN payload).
    fn same(a: &[Point], b: &[Point]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.0 == y.0
                    && x.1
                        .raw()
                        .iter()
                        .zip(y.1.raw())
                        .all(|(u, v)| (u.is_nan() && v.is_nan()) || u.to_bits() == v.to_bits())
            })
    }

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40] {
            let mut buf = Vec::new();
            put_ivarint(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.ivarint().unwrap(), v);
            assert!(r.finish().is_ok());
        }
        // 11 continuation bytes: too long.
        let mut r = Reader::new(&[0xFF; 11]);
        assert!(r.varint().is_err());
    }

    #[test]
    fn decimal_scale_finds_smallest_k() {
        let scale = |v: &[f64]| decimal_scale(v, &mut Vec::new());
        assert_eq!(scale(&[1.0, 2.0, 300.0]), Some(0));
        assert_eq!(scale(&[1.5, 2.25]), Some(2));
        assert_eq!(scale(&[0.1, 59.97, 1450.3, -14.7]), Some(2));
        assert_eq!(scale(&[0.1234567]), None);
        assert_eq!(scale(&[1e300]), None);
        assert_eq!(scale(&[f64::INFINITY]), None);
        // -0.0 would come back as +0.0 through an integer: stored raw to stay bit exact.
        assert_eq!(scale(&[-0.0]), None);
        let mut ints = Vec::new();
        assert_eq!(decimal_scale(&[0.5, -2.25], &mut ints), Some(2));
        assert_eq!(ints, vec![50, -225]);
    }

    #[test]
    fn segment_round_trip_with_gaps() {
        let points: Vec<Point> = (0..100)
            .map(|i| {
                let mut vals = vec![(0, 59.9 + i as f64 * 0.01), (3, 1500.0 - i as f64)];
                if i % 3 == 0 {
                    vals.push((5, 0.1234567 * i as f64));
                }
                (Timestamp(1_700_000_000_000_000 + i * 10_000_000), m(&vals))
            })
            .collect();
        let data = encode_segment(&points);
        assert!(same(&decode_segment(&data).unwrap(), &points));
        // Regular sampling: about one byte per timestamp and a few per value.
        assert!(data.len() < points.len() * 20, "size {}", data.len());

        let mut part = Vec::new();
        let from = points[10].0.0;
        let to = points[20].0.0;
        decode_segment_range(&data, from, to, &mut part).unwrap();
        assert!(same(&part, &points[10..20]));
        assert_eq!(
            decode_segment_timestamps(&data).unwrap(),
            points.iter().map(|p| p.0.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn realistic_segment_compresses() {
        // 4 h of 10 s data, every channel present, decimal values with drift.
        let points: Vec<Point> = (0..1440i64)
            .map(|i| {
                let raw: [f64; FIELD_COUNT] = std::array::from_fn(|c| {
                    ((1000.0 + c as f64 * 37.0 + ((i * 7 + c as i64) % 50) as f64) * 10.0).round()
                        / 10.0
                });
                (Timestamp(i * 10_000_000), Measurements::from_raw(raw))
            })
            .collect();
        let data = encode_segment(&points);
        let raw_size = points.len() * (8 + 8 * FIELD_COUNT);
        assert!(data.len() * 3 < raw_size, "{} vs {}", data.len(), raw_size);
        assert!(same(&decode_segment(&data).unwrap(), &points));
    }

    #[test]
    fn corrupt_segments_are_errors_not_panics() {
        let points: Vec<Point> = (0..20)
            .map(|i| {
                (
                    Timestamp(i * 1000),
                    m(&[(0, i as f64 * 0.5), (7, 1.0 / 3.0)]),
                )
            })
            .collect();
        let data = encode_segment(&points);
        for cut in 0..data.len() {
            assert!(decode_segment(&data[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = data.clone();
        extra.push(0);
        assert!(decode_segment(&extra).is_err());
        let mut bad_version = data.clone();
        bad_version[0] = 99;
        assert!(decode_segment(&bad_version).is_err());
        // Flipping bytes must never panic (it may or may not be detected).
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x5A;
            let _ = decode_segment(&d);
            let _ = decode_segment_timestamps(&d);
        }
        // An absurd count must not allocate.
        let mut huge = vec![SEGMENT_VERSION];
        put_varint(&mut huge, u64::MAX);
        assert!(decode_segment(&huge).is_err());
    }

    #[test]
    fn log_batch_round_trip_and_corruption() {
        let a = WellId::parse("A-1").unwrap();
        let b = WellId::parse("B.2").unwrap();
        let mut pa = BTreeMap::new();
        pa.insert(5, m(&[(0, 1.5), (12, -0.0)]));
        pa.insert(7, m(&[]));
        let mut pb = BTreeMap::new();
        pb.insert(-3, m(&[(4, f64::INFINITY), (6, 1e-300)]));
        let mut data = Vec::new();
        encode_log_batch([(&a, &pa), (&b, &pb)], &mut data);
        let back = decode_log_batch(&data).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, a);
        let pa_points: Vec<Point> = pa.iter().map(|(t, m)| (Timestamp(*t), *m)).collect();
        assert!(same(&back[0].1, &pa_points));
        assert_eq!(back[1].1[0].1.raw()[4], f64::INFINITY);
        for cut in 0..data.len() {
            assert!(decode_log_batch(&data[..cut]).is_err());
        }
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0xA5;
            let _ = decode_log_batch(&d);
        }
    }

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            2 => Just(f64::NAN),
            3 => (-1_000_000i64..1_000_000, 0u32..4).prop_map(|(i, k)| i as f64 / 10f64.powi(k as i32)),
            2 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
            1 => Just(-0.0),
        ]
    }

    fn arb_points() -> impl Strategy<Value = Vec<Point>> {
        (
            prop::collection::btree_set(any::<i64>(), 1..60),
            prop::collection::vec(prop::array::uniform13(arb_value()), 60),
        )
            .prop_map(|(ts, vals)| {
                ts.into_iter()
                    .zip(vals)
                    .map(|(t, v)| (Timestamp(t), Measurements::from_raw(v)))
                    .collect()
            })
    }

    fn arb_regular_points() -> impl Strategy<Value = Vec<Point>> {
        (
            any::<i32>(),
            1i64..100_000,
            prop::collection::vec((0i64..3, prop::array::uniform13(arb_value())), 1..200),
        )
            .prop_map(|(start, step, rows)| {
                let mut t = start as i64;
                rows.into_iter()
                    .map(|(jitter, v)| {
                        t += step + jitter;
                        (Timestamp(t), Measurements::from_raw(v))
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn segment_round_trips(points in arb_points()) {
            let data = encode_segment(&points);
            prop_assert!(same(&decode_segment(&data).unwrap(), &points));
        }

        #[test]
        fn regular_segment_round_trips(points in arb_regular_points()) {
            let data = encode_segment(&points);
            prop_assert!(same(&decode_segment(&data).unwrap(), &points));
        }

        #[test]
        fn segment_range_matches_filter(points in arb_points(), a in any::<i64>(), b in any::<i64>()) {
            let (from, to) = (a.min(b), a.max(b));
            let data = encode_segment(&points);
            let mut got = Vec::new();
            decode_segment_range(&data, from, to, &mut got).unwrap();
            let want: Vec<Point> = points.iter().filter(|p| p.0.0 >= from && p.0.0 < to).copied().collect();
            prop_assert!(same(&got, &want));
        }

        #[test]
        fn log_batch_round_trips(points in arb_points()) {
            let id = WellId::parse("W").unwrap();
            let map: BTreeMap<i64, Measurements> = points.iter().map(|(t, m)| (t.0, *m)).collect();
            let mut data = vec![9, 9, 9];
            encode_log_batch([(&id, &map)], &mut data);
            let back = decode_log_batch(&data).unwrap();
            prop_assert_eq!(back.len(), 1);
            prop_assert!(same(&back[0].1, &points));
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_segment(&data);
            let _ = decode_log_batch(&data);
        }
    }
}
