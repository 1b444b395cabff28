//! Binary encodings of the embedded engine: log batches and sealed segments.
//!
//! Both are versioned by a leading byte so the format can evolve. Decoders never trust their
//! input: every length is bounds-checked and every inconsistency is a [`CodecError`], because
//! the bytes come from disk and may be corrupt.
//!
//! **Log batch** (one per commit, written for durability, read only at recovery): a table of
//! wells, each with its readings of the commit in the version 1 segment encoding below (log
//! version 2, since issue 23: float32 columns as decimals too, as in segments version 2; a
//! 10-reading well of float32 gauge values 1 094 → 210 B).
//! Measured: raw `f64`s (~110 B/reading) made disk writes the bottleneck of bulk ingestion;
//! this is about a quarter of that for a little CPU.
//!
//! **Segment version 1** (written by earlier releases, still read): columnar. Timestamps are
//! zigzag-varint delta-of-delta (regular sampling costs one byte per point); each channel is a
//! presence bitmap plus values in "decimal scaling": SCADA values are decimals with few
//! digits, so `v * 10^k` is an integer for a small `k`, and the deltas of those integers are
//! small varints. Lossless by construction (checked bit for bit), falling back to raw `f64`
//! for channels that are not decimal. At least a byte per value: ~20 B/reading on gauge data.
//!
//! **Segment version 2** (written now): the same columns, each packed one of two ways.
//! *Compact* segments (windows the well's data has moved past) pack every column of 32 or
//! more numbers with pcodec (`pco`), which picks the delta order and fits the distribution
//! of what is left with tANS: timestamps, the decimal-scaled integers (decimal precision is
//! detected per channel and segment, as in version 1), and channels that are not decimal
//! (float32 noise, computed values) as raw `f64`s, bit for bit. Missing values are a presence
//! bitmap, or run lengths when those are shorter (a gauge that drops out for an hour).
//! Values a gateway kept as float32 (`40.53` arriving as `40.529998779296875`) are not decimals,
//! but their `f32` is: such a column is stored as the decimal-scaled integers whose `f32` is
//! the value (encoding byte `0x80 | k`, checked bit for bit when encoding), so it costs what
//! gauge decimals cost (5.4 B/reading compact on the 4 h test window, instead of 7.3 as raw
//! `f64`s; in fast segments 14 instead of ~105). Written since issue 23: a binary older than
//! that cannot read such segments.
//! *Fast* segments (the window still receiving data, rewritten at every checkpoint) pack the
//! columns as version 1 does, because pco costs ~50 µs per column to write. Measured on a
//! simulated fleet, see the README: ~7 B/reading all-in instead of ~22.

use std::collections::BTreeMap;

use espwatch_core::{FIELD_COUNT, Field, Measurements, Point, Timestamp, WellId};

/// Log batches of earlier releases: version 1 segments inside (still read).
const LOG_V1: u8 = 1;
/// Log batches now: version 1 segments inside whose columns may be float32 decimals.
const LOG_VERSION: u8 = 2;
const SEGMENT_V1: u8 = 1;
const SEGMENT_V2: u8 = 2;

/// Version 2 header flag: every column of 32 numbers or more is pco-packed.
const FLAG_COMPACT: u8 = 1;
/// Column packings of version 2.
const PACK_VARINT: u8 = 0;
const PACK_PCO: u8 = 1;
/// Below this many numbers a column is varint-packed even in a compact segment: pco's header
/// and chunk metadata (~25 bytes) outweigh what it saves.
const PCO_MIN: usize = 32;

/// Highest decimal scale tried; beyond it values are stored raw.
const MAX_SCALE: usize = 6;
pub(super) const POW10: [f64; MAX_SCALE + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
/// Integers must stay exactly representable as f64.
const MAX_SCALED: f64 = 9_007_199_254_740_992.0; // 2^53

const PRESENCE_NONE: u8 = 0;
const PRESENCE_ALL: u8 = 1;
const PRESENCE_BITMAP: u8 = 2;
/// Version 2 only: alternating run lengths, present first (the first run may be empty).
const PRESENCE_RUNS: u8 = 3;
const ENCODING_RAW: u8 = 0xFF;
/// Segments version 2 and log batches version 2 only (both written since issue 23):
/// `ENCODING_F32 | k` is "decimal scale `k` through float32": the value is the
/// `f32` nearest to `i / 10^k`, widened (gauge values a gateway kept as float32).
const ENCODING_F32: u8 = 0x80;

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
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(super) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// A bounds-checked cursor over untrusted bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => err("unexpected end of data"),
        }
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.remaining() {
            return err("unexpected end of data");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, CodecError> {
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
    pub(super) fn ivarint(&mut self) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint()?))
    }

    /// A count that is only plausible if each item takes at least `min_bytes` of what is
    /// left; refuses absurd counts before anything is allocated for them.
    pub(super) fn count(&mut self, min_bytes: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|n| n.saturating_mul(min_bytes.max(1)) <= self.remaining());
        match fits {
            Some(n) => Ok(n),
            None => err(format!("implausible count {n}")),
        }
    }

    pub(super) fn finish(&self) -> Result<(), CodecError> {
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
        encode_segment_v1_into(points.iter().map(|(t, m)| (*t, m)), true, out);
    }
}

/// A log batch as earlier releases wrote it (version 1 segments inside), for the tests.
#[cfg(test)]
pub fn encode_log_batch_v1<'a, I>(wells: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = (&'a WellId, &'a BTreeMap<i64, Measurements>)>,
    I::IntoIter: ExactSizeIterator,
{
    let wells = wells.into_iter();
    out.clear();
    out.push(LOG_V1);
    put_varint(out, wells.len() as u64);
    for (id, points) in wells {
        put_varint(out, id.as_str().len() as u64);
        out.extend_from_slice(id.as_str().as_bytes());
        encode_segment_v1_into(points.iter().map(|(t, m)| (*t, m)), false, out);
    }
}

/// Readings of one well in a decoded log batch.
pub type LogWell = (WellId, Vec<Point>);

pub fn decode_log_batch(data: &[u8]) -> Result<Vec<LogWell>, CodecError> {
    let mut r = Reader::new(data);
    let version = r.u8()?;
    if version != LOG_VERSION && version != LOG_V1 {
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
        decode_rows(&mut r, &mut points, ALL_CHANNELS, |ts| (0, ts.len()))?;
        wells.push((id, points));
    }
    r.finish()?;
    Ok(wells)
}

// ---------------------------------------------------------------------------------------------
// Segments

/// How a version 2 segment packs its columns (see the module documentation).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Varint deltas: cheap to write; for windows still receiving data.
    Fast,
    /// pcodec per column: several times smaller, ~1 ms per segment to write.
    Compact,
}

/// Encodes points that are strictly ascending by time (callers guarantee it; checked in debug)
/// as a version 2 segment.
pub fn encode_segment(points: &[Point], packing: Packing) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + points.len() * 4 * FIELD_COUNT);
    encode_segment_into(points, packing, &mut out);
    out
}

/// [`encode_segment`], appending to `out`.
fn encode_segment_into(points: &[Point], packing: Packing, out: &mut Vec<u8>) {
    debug_assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
    let n = points.len();
    out.push(SEGMENT_V2);
    out.push(match packing {
        Packing::Fast => 0,
        Packing::Compact => FLAG_COMPACT,
    });
    put_varint(out, n as u64);
    let pco = |count: usize| packing == Packing::Compact && count >= PCO_MIN;

    let ts: Vec<i64> = points.iter().map(|p| p.0.0).collect();
    if pco(n) && n <= MAX_PCO_ROWS {
        out.push(PACK_PCO);
        put_pco(out, &ts);
    } else {
        out.push(PACK_VARINT);
        put_timestamps_dod(out, &ts);
    }

    let mut present: Vec<f64> = Vec::with_capacity(n);
    let mut ints: Vec<i64> = Vec::with_capacity(n);
    for ch in 0..FIELD_COUNT {
        present.clear();
        present.extend(points.iter().map(|p| p.1.raw()[ch]).filter(|v| !v.is_nan()));
        if present.is_empty() {
            out.push(PRESENCE_NONE);
            continue;
        }
        if present.len() == n {
            out.push(PRESENCE_ALL);
        } else {
            put_presence(out, points.iter().map(|p| !p.1.raw()[ch].is_nan()), n);
        }
        let mut encoding = ENCODING_RAW;
        let scale = match decimal_scale(&present, &mut ints) {
            Some(k) => {
                encoding = k as u8;
                Some(k)
            }
            None => f32_decimal_scale(&present, &mut ints).inspect(|k| {
                encoding = ENCODING_F32 | *k as u8;
            }),
        };
        out.push(encoding);
        let packed_with_pco = pco(present.len());
        out.push(if packed_with_pco {
            PACK_PCO
        } else {
            PACK_VARINT
        });
        match (scale, packed_with_pco) {
            (Some(_), true) => put_pco(out, &ints),
            (None, true) => put_pco(out, &present),
            (Some(_), false) => put_int_deltas(out, &ints),
            (None, false) => {
                for v in &present {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

/// Whether a stored segment is a compact version 2 one (anything else is rewritten compact
/// once its window is closed, or by `espwatch store compact`).
pub fn is_compact(data: &[u8]) -> bool {
    data.first() == Some(&SEGMENT_V2) && data.get(1).is_some_and(|f| f & FLAG_COMPACT != 0)
}

/// The checksum recorded in a segment's row when it is written (`segments.checksum`), so a
/// copy is verified by hashing instead of decoding: XXH3-64 of the segment's bytes, then
/// XXH3-64 of that hash with the row's reading count and time bounds (little-endian), so a
/// changed byte or a changed count is caught. Stored as SQLite's signed 64-bit integer.
///
/// Why XXH3-64: the threat is accidental damage (bit rot, a torn or misdirected write, a bug),
/// not an adversary — whoever can rewrite a segment can rewrite its checksum in the same row,
/// so a cryptographic hash there would add nothing; the files of a backup carry SHA-256 in
/// its manifest for that. Against random damage 64 bits miss one in 2^64, and XXH3 (SMHasher
/// clean) hashes at memory speed (~10+ GB/s a core; SHA-256 with SHA-NI ~1.5–2 GB/s).
pub fn segment_checksum(data: &[u8], count: i64, min_ts: i64, max_ts: i64) -> i64 {
    use xxhash_rust::xxh3::xxh3_64;
    let mut row = [0u8; 32];
    row[..8].copy_from_slice(&xxh3_64(data).to_le_bytes());
    row[8..16].copy_from_slice(&count.to_le_bytes());
    row[16..24].copy_from_slice(&min_ts.to_le_bytes());
    row[24..].copy_from_slice(&max_ts.to_le_bytes());
    xxh3_64(&row) as i64
}

/// A version 1 segment, as earlier releases wrote them (for the upgrade tests).
#[cfg(test)]
pub fn encode_segment_v1(points: &[Point]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_segment_v1_into(points.iter().map(|(t, m)| (t.0, m)), false, &mut out);
    out
}

/// Version 1: appends the segment encoding of ascending `(ts, values)` pairs to `out`. Log
/// batches use it (cheap to write, read only at recovery), since log version 2 with `f32`
/// (float32 values as decimals, as version 2 segments); tests write old segments with it.
fn encode_segment_v1_into<'a>(
    points: impl Iterator<Item = (i64, &'a Measurements)>,
    f32: bool,
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
    out.push(SEGMENT_V1);
    put_varint(out, n as u64);
    put_timestamps_dod(out, &ts);

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
            put_bitmap(out, rows.iter().map(|r| !r[ch].is_nan()), n);
        }
        let scale = decimal_scale(&present, &mut ints)
            .map(|k| k as u8)
            .or_else(|| {
                f32.then(|| f32_decimal_scale(&present, &mut ints))
                    .flatten()
                    .map(|k| ENCODING_F32 | k as u8)
            });
        match scale {
            Some(encoding) => {
                out.push(encoding);
                put_int_deltas(out, &ints);
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

/// First value, first delta, then delta-of-delta, as zigzag varints. Wrapping arithmetic
/// keeps arbitrary i64 inputs lossless (the decoder wraps the same way).
fn put_timestamps_dod(out: &mut Vec<u8>, ts: &[i64]) {
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
}

fn put_int_deltas(out: &mut Vec<u8>, ints: &[i64]) {
    let mut prev = 0i64;
    for &i in ints {
        put_ivarint(out, i.wrapping_sub(prev));
        prev = i;
    }
}

fn put_bitmap(out: &mut Vec<u8>, present: impl Iterator<Item = bool>, n: usize) {
    out.push(PRESENCE_BITMAP);
    let start = out.len();
    out.resize(start + n.div_ceil(8), 0);
    for (i, p) in present.enumerate() {
        if p {
            out[start + i / 8] |= 1 << (i % 8);
        }
    }
}

/// A presence bitmap, or run lengths when they take fewer bytes (sparse gaps, dropouts).
fn put_presence(out: &mut Vec<u8>, present: impl Iterator<Item = bool> + Clone, n: usize) {
    let mut runs: Vec<u64> = Vec::new();
    let mut current = true;
    let mut len = 0u64;
    for p in present.clone() {
        if p == current {
            len += 1;
        } else {
            runs.push(len);
            current = p;
            len = 1;
        }
    }
    runs.push(len);
    let mut encoded = Vec::with_capacity(runs.len() + 2);
    put_varint(&mut encoded, runs.len() as u64);
    for r in &runs {
        put_varint(&mut encoded, *r);
    }
    if encoded.len() < n.div_ceil(8) {
        out.push(PRESENCE_RUNS);
        out.extend_from_slice(&encoded);
    } else {
        put_bitmap(out, present, n);
    }
}

/// A pco chunk, length first (pco's standalone format has its own header and footer, but the
/// reader must know where the next column starts).
fn put_pco<T: pco::data_types::Number>(out: &mut Vec<u8>, values: &[T]) {
    // Cannot fail: the default configuration is valid and the values are plain numbers.
    let bytes = pco::standalone::simple_compress(values, &pco::ChunkConfig::default())
        .unwrap_or_else(|e| unreachable!("pco refused the default configuration: {e}"));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
}

/// Exactly `count` numbers from a length-prefixed pco chunk.
fn read_pco<T: pco::data_types::Number>(
    r: &mut Reader<'_>,
    count: usize,
    what: &str,
) -> Result<Vec<T>, CodecError> {
    let len = r.count(1)?;
    let bytes = r.bytes(len)?;
    // A pco chunk of `count` numbers needs at least a few bits per number only when they
    // differ, so the count cannot be bounded by the bytes; it is bounded by the segment's
    // row count, itself bounded by the bytes of its timestamps or by its presence encoding.
    let mut values = vec![T::default(); count];
    match pco::standalone::simple_decompress_into(bytes, &mut values) {
        Ok(p) if p.finished && p.n_processed == count => Ok(values),
        Ok(p) => err(format!(
            "{what}: pco chunk holds {} numbers, expected {count}",
            if p.finished {
                p.n_processed.to_string()
            } else {
                "more".to_owned()
            }
        )),
        Err(e) => err(format!("{what}: {e}")),
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
pub(super) fn decimal_scale(values: &[f64], ints: &mut Vec<i64>) -> Option<usize> {
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

/// As [`scaled`] for a value that is an `f32` widened: `i` such that the `f32` nearest to
/// `i / 10^k`, widened, is `v` bit for bit.
#[inline]
fn scaled_f32(v: f64, k: usize) -> Option<i64> {
    let p = POW10[k];
    let x = v * p;
    if x.abs().partial_cmp(&MAX_SCALED) != Some(std::cmp::Ordering::Less) {
        return None;
    }
    let i = (x + 0.5f64.copysign(x)) as i64;
    (f64::from((i as f64 / p) as f32).to_bits() == v.to_bits()).then_some(i)
}

/// [`decimal_scale`] of values that went through float32 (`40.53` sent as
/// `40.529998779296875`): the smallest `k` at which every value is the `f32` of a decimal
/// with `k` digits after the point; fills `ints`. `None` as soon as a value is not an `f32`.
pub(super) fn f32_decimal_scale(values: &[f64], ints: &mut Vec<i64>) -> Option<usize> {
    if !values
        .iter()
        .all(|&v| f64::from(v as f32).to_bits() == v.to_bits())
    {
        return None;
    }
    let mut k = 0;
    'scales: loop {
        ints.clear();
        for &v in values {
            match scaled_f32(v, k) {
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

/// The segment header: its version and, for version 2, whether columns may be pco-packed.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Format {
    V1,
    V2,
}

fn read_header(r: &mut Reader<'_>) -> Result<Format, CodecError> {
    match r.u8()? {
        SEGMENT_V1 => Ok(Format::V1),
        SEGMENT_V2 => {
            let flags = r.u8()?;
            if flags & !FLAG_COMPACT != 0 {
                return err(format!("unknown segment flags {flags:#x}"));
            }
            Ok(Format::V2)
        }
        v => err(format!("unknown segment version {v}")),
    }
}

fn decode_timestamps(r: &mut Reader<'_>) -> Result<(Format, Vec<i64>), CodecError> {
    let format = read_header(r)?;
    let n = usize::try_from(r.varint()?).unwrap_or(usize::MAX);
    let packing = match format {
        Format::V1 => PACK_VARINT,
        Format::V2 => r.u8()?,
    };
    // A varint timestamp takes a byte at least; pco packs regular ones into almost nothing,
    // so their count is bounded by a constant instead (and checked again by pco's own).
    let plausible = match packing {
        PACK_PCO => n <= MAX_PCO_ROWS,
        _ => n <= r.remaining(),
    };
    if !plausible {
        return err(format!("implausible count {n}"));
    }
    let ts = match packing {
        PACK_VARINT => {
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
                ts.push(t);
                prev = t;
            }
            ts
        }
        PACK_PCO => read_pco::<i64>(r, n, "timestamps")?,
        other => return err(format!("unknown timestamp packing {other}")),
    };
    if ts.windows(2).any(|w| w[1] <= w[0]) {
        return err("timestamps not strictly ascending");
    }
    Ok((format, ts))
}

/// Most rows whose timestamps may be pco-packed: a 4 h window at 70 Hz, far beyond any
/// gauge, so a corrupt count cannot make the decoder allocate gigabytes. Larger segments keep
/// varint timestamps, whose count is bounded by their bytes.
const MAX_PCO_ROWS: usize = 1 << 20;

/// Only the timestamps of a segment (for duplicate checks); ascending.
pub fn decode_segment_timestamps(data: &[u8]) -> Result<Vec<i64>, CodecError> {
    decode_timestamps(&mut Reader::new(data)).map(|(_, ts)| ts)
}

/// Channels to decode, one bit per [`Field::index`]; the others come back missing.
pub type ChannelMask = u16;
pub const ALL_CHANNELS: ChannelMask = (1 << FIELD_COUNT) - 1;

/// The mask of `fields`.
pub fn channel_mask(fields: &[Field]) -> ChannelMask {
    fields.iter().fold(0, |m, f| m | (1 << f.index()))
}

/// Decodes the points of a segment with `from <= ts < to`, appending them to `out` in order.
#[cfg(test)]
pub fn decode_segment_range(
    data: &[u8],
    from: i64,
    to: i64,
    out: &mut Vec<Point>,
) -> Result<(), CodecError> {
    decode_segment_channels(data, (from, to), ALL_CHANNELS, out)
}

/// As [`decode_segment_range`], decoding only the channels in `mask` (the others are
/// skipped: a compact column by its length, a varint one value by value).
pub fn decode_segment_channels(
    data: &[u8],
    (from, to): (i64, i64),
    mask: ChannelMask,
    out: &mut Vec<Point>,
) -> Result<(), CodecError> {
    let mut r = Reader::new(data);
    decode_rows(&mut r, out, mask, |ts| {
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
    decode_rows(&mut r, &mut out, ALL_CHANNELS, |ts| (0, ts.len()))?;
    r.finish()?;
    Ok(out)
}

/// Row indices of a channel's present values, from its presence encoding.
fn read_presence(
    r: &mut Reader<'_>,
    presence: u8,
    format: Format,
    n: usize,
    rows: &mut Vec<usize>,
    ch: usize,
) -> Result<(), CodecError> {
    rows.clear();
    match presence {
        PRESENCE_ALL => rows.extend(0..n),
        PRESENCE_BITMAP => {
            let bitmap = r.bytes(n.div_ceil(8))?;
            rows.extend((0..n).filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0));
        }
        PRESENCE_RUNS if format == Format::V2 => {
            let nruns = r.count(1)?;
            let mut at = 0usize;
            for i in 0..nruns {
                let len = usize::try_from(r.varint()?)
                    .ok()
                    .filter(|len| *len <= n - at)
                    .ok_or_else(|| CodecError(format!("channel {ch}: runs exceed the rows")))?;
                if i % 2 == 0 {
                    rows.extend(at..at + len);
                }
                at += len;
            }
            if at != n {
                return err(format!("channel {ch}: runs cover {at} of {n} rows"));
            }
        }
        other => return err(format!("channel {ch}: unknown presence kind {other}")),
    }
    if rows.is_empty() {
        return err(format!("channel {ch}: empty presence"));
    }
    Ok(())
}

/// Decodes the rows `lo..hi` chosen by `select` from the timestamps. Every present value of a
/// channel is read (deltas and pco chunks are sequential), but only selected rows are
/// materialised.
fn decode_rows(
    r: &mut Reader<'_>,
    out: &mut Vec<Point>,
    mask: ChannelMask,
    select: impl FnOnce(&[i64]) -> (usize, usize),
) -> Result<(), CodecError> {
    let (format, ts) = decode_timestamps(r)?;
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
        if presence == PRESENCE_NONE {
            continue;
        }
        read_presence(r, presence, format, n, &mut rows, ch)?;
        let encoding = r.u8()?;
        let through_f32 = encoding & ENCODING_F32 != 0
            && encoding != ENCODING_RAW
            && (encoding & !ENCODING_F32) as usize <= MAX_SCALE;
        if encoding != ENCODING_RAW && encoding as usize > MAX_SCALE && !through_f32 {
            return err(format!("channel {ch}: unknown value encoding {encoding}"));
        }
        let encoding = encoding & !(if through_f32 { ENCODING_F32 } else { 0 });
        let widen = |v: f64| if through_f32 { f64::from(v as f32) } else { v };
        let packing = match format {
            Format::V1 => PACK_VARINT,
            Format::V2 => r.u8()?,
        };
        if mask & (1 << ch) == 0 {
            match (encoding, packing) {
                (ENCODING_RAW, PACK_VARINT) => {
                    r.bytes(rows.len() * 8)?;
                }
                (_, PACK_VARINT) => {
                    for _ in 0..rows.len() {
                        r.varint()?;
                    }
                }
                (_, PACK_PCO) => {
                    let len = r.count(1)?;
                    r.bytes(len)?;
                }
                (_, other) => return err(format!("channel {ch}: unknown packing {other}")),
            }
            continue;
        }
        let mut put = |j: usize, v: f64| -> Result<(), CodecError> {
            let row = rows[j];
            if row >= lo && row < hi {
                if v.is_nan() {
                    return err(format!("channel {ch}: NaN stored as a present value"));
                }
                wanted[row - lo].1.set(field, Some(v));
            }
            Ok(())
        };
        match (encoding, packing) {
            (ENCODING_RAW, PACK_VARINT) => {
                let raw = r.bytes(rows.len() * 8)?;
                for (j, b) in raw.chunks_exact(8).enumerate() {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    put(j, f64::from_le_bytes(a))?;
                }
            }
            (ENCODING_RAW, PACK_PCO) => {
                for (j, v) in read_pco::<f64>(r, rows.len(), "values")?
                    .into_iter()
                    .enumerate()
                {
                    put(j, v)?;
                }
            }
            (k, PACK_VARINT) => {
                let p = POW10[k as usize];
                let mut acc = 0i64;
                for j in 0..rows.len() {
                    acc = acc.wrapping_add(r.ivarint()?);
                    put(j, widen(acc as f64 / p))?;
                }
            }
            (k, PACK_PCO) => {
                let p = POW10[k as usize];
                for (j, i) in read_pco::<i64>(r, rows.len(), "values")?
                    .into_iter()
                    .enumerate()
                {
                    put(j, widen(i as f64 / p))?;
                }
            }
            (_, other) => return err(format!("channel {ch}: unknown packing {other}")),
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

    /// The three ways a segment is written: version 1 (old data directories), and version 2
    /// fast and compact.
    type Encoder = fn(&[Point]) -> Vec<u8>;

    fn encoders() -> [(&'static str, Encoder); 3] {
        [
            ("v1", |p| {
                let mut out = Vec::new();
                encode_segment_v1_into(p.iter().map(|(t, m)| (t.0, m)), false, &mut out);
                out
            }),
            ("fast", |p| encode_segment(p, Packing::Fast)),
            ("compact", |p| encode_segment(p, Packing::Compact)),
        ]
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
        for (name, encode) in encoders() {
            let data = encode(&points);
            assert!(same(&decode_segment(&data).unwrap(), &points), "{name}");
            // Regular sampling: about one byte per timestamp and a few per value.
            assert!(
                data.len() < points.len() * 20,
                "{name}: size {}",
                data.len()
            );

            let mut part = Vec::new();
            let from = points[10].0.0;
            let to = points[20].0.0;
            decode_segment_range(&data, from, to, &mut part).unwrap();
            assert!(same(&part, &points[10..20]), "{name}");
            assert_eq!(
                decode_segment_timestamps(&data).unwrap(),
                points.iter().map(|p| p.0.0).collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(is_compact(&data), name == "compact");
        }
    }

    /// 4 h of 10 s gauge data: noisy around a slow drift, at each channel's resolution.
    fn gauge_window(quantum: f64) -> Vec<Point> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 1000.0 - 0.5
        };
        (0..1440i64)
            .map(|i| {
                let raw: [f64; FIELD_COUNT] = std::array::from_fn(|c| {
                    let v = 100.0 + c as f64 * 37.0 + i as f64 * 0.01 + noise() * 4.0 * quantum;
                    (v / quantum).round() / (1.0 / quantum).round()
                });
                (
                    Timestamp(1_767_225_600_000_000 + i * 10_000_000),
                    Measurements::from_raw(raw),
                )
            })
            .collect()
    }

    #[test]
    fn gauge_precision_values_compress() {
        for quantum in [0.1, 0.01] {
            let points = gauge_window(quantum);
            let raw_size = points.len() * (8 + 8 * FIELD_COUNT);
            let v1 = encoders()[0].1(&points);
            let compact = encode_segment(&points, Packing::Compact);
            assert!(same(&decode_segment(&compact).unwrap(), &points));
            let per_reading = compact.len() as f64 / points.len() as f64;
            // About three bits per value of noise spanning ±2 quanta, and nothing for the
            // regular timestamps.
            assert!(per_reading < 7.0, "{quantum}: {per_reading} B/reading");
            assert!(
                compact.len() * 2 < v1.len(),
                "{} vs {}",
                compact.len(),
                v1.len()
            );
            assert!(
                compact.len() * 15 < raw_size,
                "{} vs {raw_size}",
                compact.len()
            );
        }
    }

    /// Gauge values a gateway kept as float32 (`40.529998779296875`): their decimal precision
    /// is found through f32, so they compress like gauge values, bit for bit.
    #[test]
    fn float32_gauge_values_compress_like_decimals() {
        for quantum in [0.1, 0.01] {
            let decimal = gauge_window(quantum);
            let noisy: Vec<Point> = decimal
                .iter()
                .map(|(t, m)| {
                    let raw = m.raw().map(|v| v as f32 as f64);
                    (*t, Measurements::from_raw(raw))
                })
                .collect();
            assert_ne!(noisy, decimal);
            for packing in [Packing::Compact, Packing::Fast] {
                let d = encode_segment(&decimal, packing);
                let f = encode_segment(&noisy, packing);
                assert!(same(&decode_segment(&f).unwrap(), &noisy));
                let per_reading = |b: &Vec<u8>| b.len() as f64 / decimal.len() as f64;
                eprintln!(
                    "{quantum} {packing:?}: decimal {:.2} B/reading, float32 {:.2} B/reading",
                    per_reading(&d),
                    per_reading(&f)
                );
                assert!(f.len() <= d.len() + 16, "{} vs {}", f.len(), d.len());
            }
        }
    }

    #[test]
    fn float32_noise_stays_lossless() {
        // Values that went through an f32 somewhere: no decimal scale fits, pco packs them as
        // floats, bit for bit.
        let points: Vec<Point> = (0..500i64)
            .map(|i| {
                let v = ((850.0 + (i as f64 * 0.37).sin() * 3.1) as f32) as f64;
                (Timestamp(i * 1_000_000), m(&[(3, v), (4, -v / 7.0)]))
            })
            .collect();
        for (name, encode) in encoders() {
            let data = encode(&points);
            assert!(same(&decode_segment(&data).unwrap(), &points), "{name}");
        }
        let compact = encode_segment(&points, Packing::Compact);
        let fast = encode_segment(&points, Packing::Fast);
        assert!(
            compact.len() < fast.len(),
            "{} vs {}",
            compact.len(),
            fast.len()
        );
    }

    #[test]
    fn extreme_values_and_timestamps_round_trip() {
        let specials = [
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            9_007_199_254_740_993.0,
            -1e-300,
        ];
        let mut ts: Vec<i64> = vec![i64::MIN, i64::MIN + 1, -1, 0, 1];
        ts.extend((0..60).map(|i| 1_000_000_000 * i + 7 * i * i));
        ts.extend([i64::MAX - 1, i64::MAX]);
        ts.sort_unstable();
        ts.dedup();
        let points: Vec<Point> = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let v = specials[i % specials.len()];
                // Channel 1 is missing in a long run (runs, not a bitmap), channel 2 always.
                let mut vals = vec![(0, v), (5, (i as f64) * 0.25)];
                if !(10..50).contains(&i) {
                    vals.push((1, -v));
                }
                (Timestamp(t), m(&vals))
            })
            .collect();
        for (name, encode) in encoders() {
            let data = encode(&points);
            assert!(same(&decode_segment(&data).unwrap(), &points), "{name}");
            let mut part = Vec::new();
            decode_segment_range(&data, -1, 2, &mut part).unwrap();
            assert!(same(&part, &points[2..5]), "{name}");
        }
    }

    #[test]
    fn dropouts_are_run_lengths() {
        // One channel present only in two stretches: run lengths take 5 bytes, a bitmap 180.
        let points: Vec<Point> = (0..1440i64)
            .map(|i| {
                let mut vals = vec![(0, 50.0)];
                if !(300..1000).contains(&i) {
                    vals.push((1, 40.0 + (i % 7) as f64));
                }
                (Timestamp(i * 10_000_000), m(&vals))
            })
            .collect();
        let data = encode_segment(&points, Packing::Compact);
        assert!(same(&decode_segment(&data).unwrap(), &points));
        let full: Vec<Point> = (0..1440i64)
            .map(|i| {
                (
                    Timestamp(i * 10_000_000),
                    m(&[(0, 50.0), (1, 40.0 + (i % 7) as f64)]),
                )
            })
            .collect();
        let full = encode_segment(&full, Packing::Compact);
        assert!(
            data.len() < full.len() + 20,
            "{} vs {}",
            data.len(),
            full.len()
        );
    }

    #[test]
    fn corrupt_segments_are_errors_not_panics() {
        // 40 rows: the compact encoding packs them with pco.
        let points: Vec<Point> = (0..40)
            .map(|i| {
                (
                    Timestamp(i * 1000 + i * i),
                    m(&[(0, i as f64 * 0.5), (7, 1.0 / 3.0 + i as f64)]),
                )
            })
            .collect();
        for (name, encode) in encoders() {
            let data = encode(&points);
            for cut in 0..data.len() {
                assert!(
                    decode_segment(&data[..cut]).is_err(),
                    "{name}: cut at {cut}"
                );
            }
            let mut extra = data.clone();
            extra.push(0);
            assert!(decode_segment(&extra).is_err(), "{name}");
            let mut bad_version = data.clone();
            bad_version[0] = 99;
            assert!(decode_segment(&bad_version).is_err(), "{name}");
            // Flipping bytes must never panic (it may or may not be detected).
            for i in 0..data.len() {
                for mask in [0x5A, 0x01, 0x80, 0xFF] {
                    let mut d = data.clone();
                    d[i] ^= mask;
                    let _ = decode_segment(&d);
                    let _ = decode_segment_timestamps(&d);
                }
            }
        }
        // An absurd count must not allocate.
        for header in [vec![SEGMENT_V1], vec![SEGMENT_V2, 0], vec![SEGMENT_V2, 1]] {
            let mut huge = header;
            put_varint(&mut huge, u64::MAX);
            huge.push(PACK_PCO);
            assert!(decode_segment(&huge).is_err());
        }
    }

    /// The log batch written at every commit: float32-noisy gauge values cost what decimals
    /// cost (they were raw `f64`s: bytes written, not CPU, bound bulk ingestion).
    #[test]
    fn log_batches_of_float32_values_are_as_small_as_decimal_ones() {
        let well = WellId::parse("F-1").unwrap();
        let decimal: BTreeMap<i64, Measurements> = gauge_window(0.01)
            .into_iter()
            .take(10)
            .map(|(t, m)| (t.0, m))
            .collect();
        let noisy: BTreeMap<i64, Measurements> = decimal
            .iter()
            .map(|(t, m)| {
                (
                    *t,
                    Measurements::from_raw(m.raw().map(|v| f64::from(v as f32))),
                )
            })
            .collect();
        let (mut d, mut f, mut f_v1, mut d_v1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        encode_log_batch([(&well, &decimal)], &mut d);
        encode_log_batch_v1([(&well, &decimal)], &mut d_v1);
        encode_log_batch([(&well, &noisy)], &mut f);
        encode_log_batch_v1([(&well, &noisy)], &mut f_v1);
        let back = decode_log_batch(&f).unwrap();
        let want: Vec<Point> = noisy.iter().map(|(t, m)| (Timestamp(*t), *m)).collect();
        assert!(same(&back[0].1, &want));
        eprintln!(
            "10 readings: decimal {} B, float32 {} B (version 1: {} B, {} B)",
            d.len(),
            f.len(),
            d_v1.len(),
            f_v1.len()
        );
        assert_eq!(d.len(), d_v1.len());
        assert!(f.len() <= d.len() + 8, "{} vs {}", f.len(), d.len());
        assert!(f.len() * 3 < f_v1.len(), "{} vs {}", f.len(), f_v1.len());
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
        let mut v1 = Vec::new();
        encode_log_batch_v1([(&a, &pa), (&b, &pb)], &mut v1);
        let mut data = Vec::new();
        encode_log_batch([(&a, &pa), (&b, &pb)], &mut data);
        assert_eq!((v1[0], data[0]), (LOG_V1, LOG_VERSION));
        // Earlier releases' batches (recovery after an upgrade) decode the same.
        let old = decode_log_batch(&v1).unwrap();
        for (x, y) in old.iter().zip(&decode_log_batch(&data).unwrap()) {
            assert_eq!(x.0, y.0);
            assert!(same(&x.1, &y.1));
        }
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
            // Through float32: decimals a gateway kept as f32, and any f32.
            3 => (-1_000_000i64..1_000_000, 0u32..4)
                .prop_map(|(i, k)| f64::from((i as f64 / 10f64.powi(k as i32)) as f32)),
            1 => any::<f32>().prop_filter("finite", |v| v.is_finite()).prop_map(f64::from),
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
        fn float32_columns_round_trip(
            scale in 0u32..7,
            ints in prop::collection::vec(prop::option::weighted(0.9, -100_000_000i64..100_000_000), 1..200),
        ) {
            // Whole columns of one decimal precision through f32 (with gaps), as a gateway sends.
            let points: Vec<Point> = ints
                .iter()
                .enumerate()
                .map(|(t, i)| {
                    let v = i.map_or(f64::NAN, |i| {
                        f64::from((i as f64 / 10f64.powi(scale as i32)) as f32)
                    });
                    (Timestamp(t as i64 * 10), m(&[(0, v), (5, -v)]))
                })
                .collect();
            for (name, encode) in encoders() {
                let data = encode(&points);
                prop_assert!(same(&decode_segment(&data).unwrap(), &points), "{}", name);
            }
        }

        #[test]
        fn segment_round_trips(points in arb_points()) {
            for (name, encode) in encoders() {
                let data = encode(&points);
                prop_assert!(same(&decode_segment(&data).unwrap(), &points), "{}", name);
            }
        }

        #[test]
        fn regular_segment_round_trips(points in arb_regular_points()) {
            for (name, encode) in encoders() {
                let data = encode(&points);
                prop_assert!(same(&decode_segment(&data).unwrap(), &points), "{}", name);
            }
        }

        #[test]
        fn segment_range_matches_filter(points in arb_points(), a in any::<i64>(), b in any::<i64>()) {
            let (from, to) = (a.min(b), a.max(b));
            let want: Vec<Point> = points.iter().filter(|p| p.0.0 >= from && p.0.0 < to).copied().collect();
            for (name, encode) in encoders() {
                let data = encode(&points);
                let mut got = Vec::new();
                decode_segment_range(&data, from, to, &mut got).unwrap();
                prop_assert!(same(&got, &want), "{}", name);
            }
        }

        #[test]
        fn masked_decode_keeps_exactly_the_chosen_channels(
            points in arb_regular_points(),
            mask in 0u16..(1 << FIELD_COUNT),
        ) {
            let want: Vec<Point> = points
                .iter()
                .map(|(t, m)| {
                    let raw = std::array::from_fn(|c| {
                        if mask & (1 << c) != 0 { m.raw()[c] } else { f64::NAN }
                    });
                    (*t, Measurements::from_raw(raw))
                })
                .collect();
            for (name, encode) in encoders() {
                let data = encode(&points);
                let mut got = Vec::new();
                decode_segment_channels(&data, (i64::MIN, i64::MAX), mask, &mut got).unwrap();
                prop_assert!(same(&got, &want), "{}", name);
            }
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

        /// Compact segments with a few bytes flipped: an error or some points, never a panic.
        #[test]
        fn damaged_compact_segments_never_panic(
            points in arb_regular_points(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let mut data = encode_segment(&points, Packing::Compact);
            for (at, mask) in flips {
                let i = at.index(data.len());
                data[i] ^= mask;
            }
            let _ = decode_segment(&data);
            let _ = decode_segment_timestamps(&data);
        }
    }
}
