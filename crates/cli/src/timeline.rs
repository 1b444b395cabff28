//! Reading many CSV files as one time-ordered stream per well.
//!
//! Historians export one file per well per day (or one file per day for the whole field), and a
//! backtest lists them in any order. The engine needs each well's readings in time order, so
//! files are first scanned for the wells and time span they hold, then files that share a well
//! are merged by timestamp (ties: command-line order, then row order). Each well lives in
//! exactly one group of files and each group is read by one thread, so a well's readings reach
//! its engine in the same order on every run, whatever the thread timing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use espwatch_core::ingest::{CsvDecoder, DecodeOptions, Item};
use espwatch_core::{Reading, Timestamp, WellId};

const CHUNK: usize = 1 << 20;

/// What one file holds: each well's first and last timestamp.
#[derive(Debug, Clone, Default)]
pub struct FileSpan {
    pub wells: BTreeMap<WellId, (i64, i64)>,
    pub first_ts: Option<i64>,
}

fn decode_options() -> DecodeOptions {
    DecodeOptions {
        now: Timestamp(i64::MAX / 4),
        max_future: std::time::Duration::ZERO,
        max_readings: usize::MAX,
        well: None,
        zone: None,
        csv: espwatch_core::ingest::CsvDialect::default(),
    }
}

/// A file being read chunk by chunk: decoded readings wait in `queue`.
struct Cursor {
    reader: BufReader<fs::File>,
    decoder: CsvDecoder,
    chunk: Vec<u8>,
    items: Vec<Item>,
    queue: VecDeque<Reading>,
    rejected: u64,
    done: bool,
    bytes: u64,
}

impl Cursor {
    fn open(path: &Path) -> anyhow::Result<Cursor> {
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = BufReader::with_capacity(CHUNK, file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let decoder = CsvDecoder::new(&header, decode_options())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Cursor {
            reader,
            decoder,
            chunk: Vec::with_capacity(CHUNK),
            items: Vec::new(),
            queue: VecDeque::new(),
            rejected: 0,
            done: false,
            bytes: header.len() as u64,
        })
    }

    /// Decodes the next chunk of lines; false at the end of the file.
    fn refill(&mut self) -> anyhow::Result<bool> {
        while self.queue.is_empty() && !self.done {
            self.chunk.clear();
            while self.chunk.len() < CHUNK {
                if self.reader.read_until(b'\n', &mut self.chunk)? == 0 {
                    self.done = true;
                    break;
                }
            }
            self.bytes += self.chunk.len() as u64;
            self.items.clear();
            self.decoder.decode_chunk(&self.chunk, &mut self.items);
            for item in self.items.drain(..) {
                match item {
                    Item::Valid(r) => self.queue.push_back(r),
                    Item::Rejected(_) => self.rejected += 1,
                }
            }
        }
        Ok(!self.queue.is_empty())
    }

    fn peek_ts(&mut self) -> anyhow::Result<Option<i64>> {
        Ok(if self.refill()? {
            self.queue.front().map(|r| r.ts.0)
        } else {
            None
        })
    }
}

/// Scans each file (in parallel) for the wells and spans it holds.
pub fn scan(paths: &[PathBuf], threads: usize) -> anyhow::Result<Vec<FileSpan>> {
    let next = AtomicUsize::new(0);
    let mut spans: Vec<Option<FileSpan>> = vec![None; paths.len()];
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads.min(paths.len()).max(1))
            .map(|_| {
                let next = &next;
                scope.spawn(move || -> anyhow::Result<Vec<(usize, FileSpan)>> {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else {
                            return Ok(out);
                        };
                        out.push((i, scan_file(path)?));
                    }
                })
            })
            .collect();
        for h in handles {
            let part = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a scanning thread panicked")))?;
            for (i, span) in part {
                spans[i] = Some(span);
            }
        }
        Ok(())
    })?;
    Ok(spans.into_iter().map(Option::unwrap_or_default).collect())
}

fn scan_file(path: &Path) -> anyhow::Result<FileSpan> {
    if let Some(span) = scan_canonical(path)? {
        return Ok(span);
    }
    let mut cursor = Cursor::open(path)?;
    let mut span = FileSpan::default();
    while cursor.refill()? {
        for r in cursor.queue.drain(..) {
            let t = r.ts.0;
            span.first_ts = Some(span.first_ts.map_or(t, |f| f.min(t)));
            let e = span.wells.entry(r.well_id).or_insert((t, t));
            e.0 = e.0.min(t);
            e.1 = e.1.max(t);
        }
    }
    Ok(span)
}

/// The fast path for canonical CSV (`well_id,ts,...` with RFC 3339 timestamps, no quoting):
/// only the first two cells of each line are read. `None` when the file is anything else (a
/// header in another order, quoted cells, another timestamp form): the full decoder scans it.
/// Rows the decoder will reject can only widen a span here, which is harmless.
fn scan_canonical(path: &Path) -> anyhow::Result<Option<FileSpan>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.starts_with(b"well_id,ts,") && line.trim_ascii_end() != b"well_id,ts" {
        return Ok(None);
    }
    let mut span = FileSpan::default();
    let mut last: Option<(Vec<u8>, WellId)> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let row = line.trim_ascii();
        if row.is_empty() {
            continue;
        }
        if row.contains(&b'"') {
            return Ok(None);
        }
        let mut cells = row.splitn(3, |b| *b == b',');
        let (Some(well), Some(ts)) = (cells.next(), cells.next()) else {
            return Ok(None);
        };
        let Some(t) = std::str::from_utf8(ts)
            .ok()
            .and_then(|ts| Timestamp::parse_rfc3339(ts).ok())
        else {
            return Ok(None);
        };
        let id = match &last {
            Some((bytes, id)) if bytes.as_slice() == well => id.clone(),
            _ => {
                let Some(id) = std::str::from_utf8(well)
                    .ok()
                    .and_then(|w| WellId::parse(w).ok())
                else {
                    return Ok(None);
                };
                last = Some((well.to_vec(), id.clone()));
                id
            }
        };
        let t = t.0;
        span.first_ts = Some(span.first_ts.map_or(t, |f| f.min(t)));
        let e = span.wells.entry(id).or_insert((t, t));
        e.0 = e.0.min(t);
        e.1 = e.1.max(t);
    }
    Ok(Some(span))
}

/// Groups of files that must be merged together (they share a well, directly or through
/// another file), each sorted by first timestamp; groups in command-line order of their first
/// file.
pub fn groups(spans: &[FileSpan]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..spans.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let mut owner: BTreeMap<&WellId, usize> = BTreeMap::new();
    for (i, span) in spans.iter().enumerate() {
        for well in span.wells.keys() {
            if let Some(&j) = owner.get(well) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            } else {
                owner.insert(well, i);
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, span) in spans.iter().enumerate() {
        if span.wells.is_empty() {
            continue;
        }
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    by_root
        .into_values()
        .map(|mut g| {
            g.sort_by_key(|&i| (spans[i].first_ts.unwrap_or(i64::MAX), i));
            g
        })
        .collect()
}

/// The readings of a group of files merged by timestamp. Files are opened only when the merge
/// reaches their first timestamp, so a month of daily files keeps one or two open at a time.
pub struct Merge<'a> {
    paths: &'a [PathBuf],
    spans: &'a [FileSpan],
    pending: VecDeque<usize>,
    open: Vec<(usize, Cursor)>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    pub rejected: u64,
    pub bytes: u64,
}

impl<'a> Merge<'a> {
    pub fn new(paths: &'a [PathBuf], spans: &'a [FileSpan], group: &[usize]) -> Merge<'a> {
        Merge {
            paths,
            spans,
            pending: group.iter().copied().collect(),
            open: Vec::new(),
            heap: BinaryHeap::new(),
            rejected: 0,
            bytes: 0,
        }
    }

    fn open_due(&mut self) -> anyhow::Result<()> {
        while let Some(&next) = self.pending.front() {
            let due = self.spans[next].first_ts.unwrap_or(i64::MIN);
            if self.heap.peek().is_some_and(|Reverse((t, _))| *t < due) {
                break;
            }
            self.pending.pop_front();
            let mut cursor = Cursor::open(&self.paths[next])
                .with_context(|| format!("reading {}", self.paths[next].display()))?;
            let slot = self.open.len();
            if let Some(t) = cursor.peek_ts()? {
                self.heap.push(Reverse((t, slot_key(next, slot))));
            }
            self.open.push((next, cursor));
        }
        Ok(())
    }

    /// The next reading in time order (ties: earlier file on the command line first).
    pub fn next_reading(&mut self) -> anyhow::Result<Option<Reading>> {
        self.open_due()?;
        let Some(Reverse((_, key))) = self.heap.pop() else {
            return Ok(None);
        };
        let slot = key_slot(key);
        let (file, cursor) = &mut self.open[slot];
        let reading = cursor.queue.pop_front().expect("peeked reading");
        let before = cursor.bytes;
        match cursor.peek_ts() {
            Ok(Some(t)) => self.heap.push(Reverse((t, key))),
            Ok(None) => self.rejected += cursor.rejected,
            Err(e) => return Err(e.context(format!("reading {}", self.paths[*file].display()))),
        }
        self.bytes += cursor.bytes - before;
        Ok(Some(reading))
    }
}

// Heap keys order equal timestamps by command-line file index; the slot rides in the low bits.
const SLOT_BITS: u32 = 24;
fn slot_key(file: usize, slot: usize) -> usize {
    (file << SLOT_BITS) | slot
}
fn key_slot(key: usize) -> usize {
    key & ((1 << SLOT_BITS) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, rows: &[(&str, &str)]) -> PathBuf {
        let p = dir.join(name);
        let mut s = String::from("well_id,ts,frequency_hz\n");
        for (w, ts) in rows {
            s.push_str(&format!("{w},{ts},60\n"));
        }
        fs::write(&p, s).unwrap();
        p
    }

    #[test]
    fn files_of_one_well_merge_in_time_order_whatever_the_argument_order() {
        let dir = tempfile::tempdir().unwrap();
        let day2 = write(
            dir.path(),
            "w1_d2.csv",
            &[
                ("W1", "2026-01-02T00:00:00Z"),
                ("W1", "2026-01-02T00:01:00Z"),
            ],
        );
        let day1 = write(
            dir.path(),
            "w1_d1.csv",
            &[
                ("W1", "2026-01-01T00:00:00Z"),
                ("W1", "2026-01-01T00:01:00Z"),
            ],
        );
        let other = write(dir.path(), "w2.csv", &[("W2", "2026-01-01T12:00:00Z")]);
        let paths = vec![day2, other, day1];
        let spans = scan(&paths, 2).unwrap();
        let groups = groups(&spans);
        assert_eq!(groups, vec![vec![2, 0], vec![1]]);
        let mut merge = Merge::new(&paths, &spans, &groups[0]);
        let mut seen = Vec::new();
        while let Some(r) = merge.next_reading().unwrap() {
            seen.push(r.ts.0);
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }

    #[test]
    fn a_file_of_several_wells_joins_their_groups() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.csv", &[("W1", "2026-01-01T00:00:00Z")]);
        let b = write(dir.path(), "b.csv", &[("W2", "2026-01-01T00:00:00Z")]);
        let both = write(
            dir.path(),
            "both.csv",
            &[
                ("W1", "2025-12-31T00:00:00Z"),
                ("W2", "2025-12-31T00:00:00Z"),
            ],
        );
        let paths = vec![a, b, both];
        let spans = scan(&paths, 1).unwrap();
        assert_eq!(groups(&spans), vec![vec![2, 0, 1]]);
    }
}
