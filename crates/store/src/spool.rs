//! The outage spool: a [`Store`] wrapper that keeps taking telemetry while the store behind it
//! (PostgreSQL) cannot commit, into a bounded, durable spool on local disk, and replays the
//! spool into that store, in order, when it is back.
//!
//! - **Ack after fsync.** An append that the inner store answers `Unavailable` (the database is
//!   down; the PostgreSQL writer has already retried a lost connection for its retry window) is
//!   written to the spool instead, and answered only after the spool file is `fsync`ed; its
//!   readings are reported `Accepted` and counted in [`AppendOutcome::spooled`]. From then on
//!   every append goes to the spool (no reading overtakes an older spooled one) until the spool
//!   has drained.
//! - **Group commit.** One writer thread takes every queued append, writes one record each and
//!   syncs once for all of them.
//! - **Bounded.** Beyond `max_bytes` of undrained records an append is refused with
//!   `Unavailable` (HTTP 503 + `Retry-After`): nothing is acknowledged that was not written.
//! - **Draining.** A task replays the records from the oldest, through the inner store's
//!   `append` (a round of at most [`DRAIN_READINGS`] readings), and moves a cursor past them only
//!   after that append returned. The cursor file is replaced without `fsync`: after a crash a
//!   drained record may be replayed once more, which `(well_id, ts)` makes harmless.
//! - **Crash safety.** At open the spool files are scanned; every record whose checksum holds is
//!   kept (a torn record at the end of the newest file was never acknowledged and is cut off),
//!   and the drain resumes.
//!
//! Files: `DIR/<seq>.spool` (records appended, a new file past `segment_bytes`, drained files
//! deleted) and `DIR/cursor` (`<seq> <offset>` of the next record to drain). A record is a
//! 32-byte header (`ESP1`, payload length, readings, flags, spool time in µs, 8 bytes of the
//! SHA-256 of header and payload) and the readings in the embedded store's log batch encoding.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use espwatch_core::{Measurements, Point, Reading, TelemetryQuery, TimeRange, WellId, WellMeta};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::embedded::{decode_log_batch, encode_log_batch};
use crate::{
    AppendOptions, AppendOutcome, FleetQuery, LatestReading, ReadingOutcome, Series, Store,
    StoreError, StoreHealth, StoreResult, StoreStats, WellRecord, WellSeries,
};

/// Readings replayed into the inner store per append while draining.
pub const DRAIN_READINGS: usize = 20_000;
const MAGIC: &[u8; 4] = b"ESP1";
const HEADER: usize = 32;
const FLAG_AUTO_REGISTER: u32 = 1;
const CURSOR_FILE: &str = "cursor";
/// How the `Unavailable` error of an append refused by a full spool begins.
pub const SPOOL_FULL: &str = "the outage spool is full";

/// Where the spool lives and how large it may grow.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    /// Undrained record bytes allowed; an append beyond it is refused (`Unavailable`).
    pub max_bytes: u64,
    /// A new spool file is started past this size (drained files are deleted whole).
    pub segment_bytes: u64,
}

impl SpoolOptions {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.into(),
            max_bytes,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What `/health/ready` shows of the spool.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpoolStatus {
    /// New telemetry goes to the spool (the store was unavailable, or the spool not yet drained).
    pub spooling: bool,
    /// The last append was refused for want of room, and nothing has been written or drained
    /// since: telemetry is answered 503 `spool_full`.
    pub full: bool,
    /// Readings in the spool not yet replayed into the store.
    pub readings: u64,
    /// Bytes of those records, and the bound.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Age of the oldest undrained record, seconds (0 when empty).
    pub oldest_age_secs: f64,
    /// The last replay into the store succeeded and records remain.
    pub draining: bool,
    /// Since start: readings spooled, replayed, and appends refused because the spool was full.
    pub spooled_total: u64,
    pub drained_total: u64,
    pub full_rejections: u64,
    /// Readings the store refused while draining (unknown wells with registration off).
    pub dropped_unknown_well: u64,
    /// Bytes of damaged records skipped at open (kept in their files, never replayed).
    pub damaged_bytes: u64,
    /// Why the last replay failed, while it keeps failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug)]
struct SegmentMeta {
    seq: u64,
    /// Bytes of whole, checked records (the writer only appends past it).
    bytes: u64,
    readings: u64,
}

struct State {
    segments: VecDeque<SegmentMeta>,
    /// Next record to drain: (segment seq, offset).
    cursor: (u64, u64),
    /// Readings of the head segment already drained (before the cursor).
    head_drained_readings: u64,
    /// Spool time of the record at the cursor, when known.
    head_spooled_at: Option<i64>,
    status: SpoolStatus,
    closed: bool,
}

impl State {
    fn pending_bytes(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        total.saturating_sub(self.cursor.1)
    }
    fn pending_readings(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.readings).sum();
        total.saturating_sub(self.head_drained_readings)
    }
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    spooling: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct WriteJob {
    readings: Vec<Reading>,
    opts: AppendOptions,
    reply: tokio::sync::oneshot::Sender<StoreResult<()>>,
}

/// The wrapper; see the module documentation.
pub struct SpoolingStore {
    inner: Arc<dyn Store>,
    shared: Arc<Shared>,
    writer: Mutex<Option<(mpsc::Sender<WriteJob>, std::thread::JoinHandle<()>)>>,
    drainer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.spool"))
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(&header[4..24]);
    h.update(payload);
    let digest = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Appends one record (header + encoded readings) to `out`; returns the readings it holds.
fn encode_record(readings: &[Reading], opts: AppendOptions, spooled_at: i64, out: &mut Vec<u8>) {
    // First value wins within a record, as in the store.
    let mut wells: BTreeMap<&WellId, BTreeMap<i64, Measurements>> = BTreeMap::new();
    for r in readings {
        wells
            .entry(&r.well_id)
            .or_default()
            .entry(r.ts.0)
            .or_insert(r.values);
    }
    let count: usize = wells.values().map(BTreeMap::len).sum();
    let mut payload = Vec::new();
    encode_log_batch(wells.iter().map(|(w, p)| (*w, p)), &mut payload);
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(count as u32).to_le_bytes());
    let flags = if opts.auto_register_wells {
        FLAG_AUTO_REGISTER
    } else {
        0
    };
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header[16..24].copy_from_slice(&spooled_at.to_le_bytes());
    let sum = checksum(&header, &payload);
    header[24..32].copy_from_slice(&sum);
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
}

/// One record read back.
struct Record {
    end: u64,
    readings: u64,
    opts: AppendOptions,
    spooled_at: i64,
    payload: Vec<u8>,
}

/// Reads the record at the reader's position; `None` at a clean end or a damaged/torn record.
fn read_record(file: &mut impl Read, at: u64, limit: u64) -> Option<Record> {
    if at + HEADER as u64 > limit {
        return None;
    }
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header).ok()?;
    if &header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as u64;
    let readings = u32::from_le_bytes(header[8..12].try_into().ok()?) as u64;
    let flags = u32::from_le_bytes(header[12..16].try_into().ok()?);
    let spooled_at = i64::from_le_bytes(header[16..24].try_into().ok()?);
    let end = at + HEADER as u64 + len;
    if end > limit {
        return None;
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload).ok()?;
    if checksum(&header, &payload) != header[24..32] {
        return None;
    }
    Some(Record {
        end,
        readings,
        opts: AppendOptions {
            auto_register_wells: flags & FLAG_AUTO_REGISTER != 0,
        },
        spooled_at,
        payload,
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join(CURSOR_FILE)).ok()?;
    let mut parts = text.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn write_cursor(dir: &Path, cursor: (u64, u64)) -> std::io::Result<()> {
    // No fsync: an older cursor after a crash only replays drained records again (harmless).
    let tmp = dir.join("cursor.tmp");
    fs::write(&tmp, format!("{} {}\n", cursor.0, cursor.1))?;
    fs::rename(tmp, dir.join(CURSOR_FILE))
}

/// Scans the spool directory: segment metadata, the cursor, damaged bytes.
fn recover(dir: &Path) -> std::io::Result<State> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".spool")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    let mut cursor = read_cursor(dir).unwrap_or((seqs.first().copied().unwrap_or(1), 0));
    // Files wholly before the cursor were drained (deleting them was interrupted).
    for seq in seqs.iter().filter(|s| **s < cursor.0) {
        let _ = fs::remove_file(segment_path(dir, *seq));
    }
    seqs.retain(|s| *s >= cursor.0);
    if seqs.first() != Some(&cursor.0) {
        cursor = (seqs.first().copied().unwrap_or(cursor.0 + 1), 0);
    }
    let mut segments = VecDeque::new();
    let mut damaged = 0u64;
    let mut head_drained_readings = 0u64;
    let mut head_spooled_at = None;
    let last = seqs.last().copied();
    for seq in seqs {
        let path = segment_path(dir, seq);
        let mut file = File::open(&path)?;
        let len = file.metadata()?.len();
        let mut reader = std::io::BufReader::new(&mut file);
        let (mut at, mut readings) = (0u64, 0u64);
        while let Some(record) = read_record(&mut reader, at, len) {
            if seq == cursor.0 && at < cursor.1 {
                head_drained_readings += record.readings;
            }
            if seq == cursor.0 && at == cursor.1 {
                head_spooled_at = Some(record.spooled_at);
            }
            readings += record.readings;
            at = record.end;
        }
        drop(reader);
        if at < len {
            if Some(seq) == last {
                // A torn write at the end: never acknowledged. Cut it off so appends continue
                // after the last whole record.
                tracing::warn!(file = %path.display(), bytes = len - at, "spool: cutting off an incomplete record");
                OpenOptions::new().write(true).open(&path)?.set_len(at)?;
                File::open(&path)?.sync_all()?;
            } else {
                tracing::error!(file = %path.display(), bytes = len - at, "spool: damaged records skipped (kept in the file)");
                damaged += len - at;
            }
        }
        if seq == cursor.0 && cursor.1 > at {
            cursor.1 = at;
        }
        segments.push_back(SegmentMeta {
            seq,
            bytes: at,
            readings,
        });
    }
    Ok(State {
        segments,
        cursor,
        head_drained_readings,
        head_spooled_at,
        status: SpoolStatus {
            damaged_bytes: damaged,
            ..SpoolStatus::default()
        },
        closed: false,
    })
}

impl SpoolingStore {
    /// Opens (or creates) the spool in `options.dir` in front of `inner`, and starts replaying
    /// whatever an earlier run left in it. Needs a Tokio runtime.
    pub fn open(inner: Arc<dyn Store>, options: SpoolOptions) -> StoreResult<SpoolingStore> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Internal(format!("spool {}: {what}: {e}", options.dir.display()))
        };
        fs::create_dir_all(&options.dir).map_err(|e| io("creating", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&options.dir, fs::Permissions::from_mode(0o700));
        }
        let mut state = recover(&options.dir).map_err(|e| io("recovering", e))?;
        let pending = state.pending_readings();
        state.status.max_bytes = options.max_bytes;
        if pending > 0 {
            tracing::warn!(
                readings = pending,
                bytes = state.pending_bytes(),
                "spool: readings left by an earlier run; replaying them into the store"
            );
        }
        let shared = Arc::new(Shared {
            dir: options.dir.clone(),
            max_bytes: options.max_bytes,
            segment_bytes: options.segment_bytes.max(1024),
            spooling: AtomicBool::new(pending > 0),
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
        });
        let (tx, rx) = mpsc::channel::<WriteJob>();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("espwatch-spool".into())
            .spawn(move || write_loop(writer_shared, rx))
            .map_err(|e| io("starting the writer", e))?;
        let drainer = tokio::spawn(drain_loop(shared.clone(), inner.clone()));
        Ok(SpoolingStore {
            inner,
            shared,
            writer: Mutex::new(Some((tx, writer))),
            drainer: Mutex::new(Some(drainer)),
        })
    }

    /// The spool's state (also through [`Store::spool_status`]).
    pub fn status(&self) -> SpoolStatus {
        let state = self.shared.lock();
        let mut status = state.status.clone();
        status.spooling = self.shared.spooling.load(Ordering::SeqCst);
        status.readings = state.pending_readings();
        status.bytes = state.pending_bytes();
        status.oldest_age_secs = match (status.readings, state.head_spooled_at) {
            (0, _) | (_, None) => 0.0,
            (_, Some(at)) => ((now_micros() - at).max(0) as f64) / 1e6,
        };
        status.draining = status.draining && status.readings > 0;
        status
    }

    async fn spool(&self, readings: Vec<Reading>, opts: AppendOptions) -> StoreResult<usize> {
        let n = readings.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(tx, _)| tx.clone())
            .ok_or_else(|| StoreError::Unavailable("the spool is closed".into()))?;
        sender
            .send(WriteJob {
                readings,
                opts,
                reply,
            })
            .map_err(|_| StoreError::Unavailable("the spool writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the spool writer has stopped".into()))??;
        Ok(n)
    }
}

fn write_loop(shared: Arc<Shared>, rx: mpsc::Receiver<WriteJob>) {
    let mut file: Option<(u64, File)> = None;
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 4096 {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let spooled_at = now_micros();
        // Encode each job; refuse those that would pass the bound.
        buf.clear();
        let (mut pending, head_empty) = {
            let state = shared.lock();
            (state.pending_bytes(), state.pending_readings() == 0)
        };
        let mut accepted: Vec<(WriteJob, u64)> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let before = buf.len();
            encode_record(&job.readings, job.opts, spooled_at, &mut buf);
            let size = (buf.len() - before) as u64;
            if pending + size > shared.max_bytes {
                buf.truncate(before);
                {
                    let mut state = shared.lock();
                    state.status.full_rejections += 1;
                    state.status.full = true;
                }
                let _ = job.reply.send(Err(StoreError::Unavailable(format!(
                    "{SPOOL_FULL} ({pending} of {} bytes)",
                    shared.max_bytes
                ))));
                continue;
            }
            pending += size;
            let readings =
                u32::from_le_bytes(buf[before + 8..before + 12].try_into().unwrap_or([0; 4]))
                    as u64;
            accepted.push((job, readings));
        }
        if accepted.is_empty() {
            continue;
        }
        match write_records(&shared, &mut file, &buf) {
            Ok(seq) => {
                let readings: u64 = accepted.iter().map(|(_, r)| *r).sum();
                let total: u64 = accepted.iter().map(|(j, _)| j.readings.len() as u64).sum();
                {
                    let mut state = shared.lock();
                    match state.segments.back_mut() {
                        Some(last) if last.seq == seq => {
                            last.bytes += buf.len() as u64;
                            last.readings += readings;
                        }
                        _ => state.segments.push_back(SegmentMeta {
                            seq,
                            bytes: buf.len() as u64,
                            readings,
                        }),
                    }
                    if head_empty {
                        state.head_spooled_at = Some(spooled_at);
                    } else {
                        state.head_spooled_at.get_or_insert(spooled_at);
                    }
                    state.status.spooled_total += total;
                    state.status.full = false;
                }
                for (job, _) in accepted {
                    let _ = job.reply.send(Ok(()));
                }
                shared.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: write failed; the appends are refused");
                for (job, _) in accepted {
                    let _ = job.reply.send(Err(StoreError::Internal(format!(
                        "writing the outage spool: {e}"
                    ))));
                }
            }
        }
    }
    if let Some((_, f)) = file {
        let _ = f.sync_all();
    }
}

/// Appends `bytes` to the current spool file (a new one past the segment size) and syncs it;
/// returns the file's sequence number. On failure the file is cut back to where it was.
fn write_records(
    shared: &Shared,
    file: &mut Option<(u64, File)>,
    bytes: &[u8],
) -> std::io::Result<u64> {
    let (last_seq, last_len) = {
        let state = shared.lock();
        match state.segments.back() {
            Some(s) => (s.seq, s.bytes),
            None => (state.cursor.0, 0),
        }
    };
    let rotate = last_len > 0 && last_len + bytes.len() as u64 > shared.segment_bytes;
    let (seq, start) = if rotate {
        (last_seq + 1, 0)
    } else {
        (last_seq, last_len)
    };
    if file.as_ref().map(|(s, _)| *s) != Some(seq) {
        let path = segment_path(&shared.dir, seq);
        let created = !path.exists();
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = f.set_permissions(fs::Permissions::from_mode(0o600));
        }
        if created {
            sync_dir(&shared.dir)?;
        }
        *file = Some((seq, f));
    }
    let (_, f) = file.as_mut().expect("opened above");
    let result = (|| {
        f.seek(SeekFrom::Start(start))?;
        f.write_all(bytes)?;
        f.sync_data()
    })();
    if let Err(e) = result {
        let _ = f.set_len(start);
        *file = None;
        return Err(e);
    }
    Ok(seq)
}

/// Readings to replay, their options, the cursor after them, how many readings the records
/// held, and the spool time of the record that follows.
type DrainBatch = (Vec<Reading>, AppendOptions, (u64, u64), u64, Option<i64>);

/// Reads up to [`DRAIN_READINGS`] readings of records from the cursor on (records with the
/// same options only), from the checked part of the files.
fn read_batch(shared: &Shared) -> std::io::Result<Option<DrainBatch>> {
    let (cursor, limit, next_seq) = {
        let state = shared.lock();
        let Some(head) = state.segments.iter().find(|s| s.seq == state.cursor.0) else {
            return Ok(None);
        };
        let next = state
            .segments
            .iter()
            .find(|s| s.seq > head.seq)
            .map(|s| s.seq);
        (state.cursor, head.bytes, next)
    };
    if cursor.1 >= limit {
        // The head file is drained: move to the next one, if any.
        let Some(seq) = next_seq else {
            return Ok(None);
        };
        let first = File::open(segment_path(&shared.dir, seq))
            .ok()
            .and_then(|mut f| read_record(&mut f, 0, u64::MAX))
            .map(|r| r.spooled_at);
        return Ok(Some((
            Vec::new(),
            AppendOptions::default(),
            (seq, 0),
            0,
            first,
        )));
    }
    let mut file = File::open(segment_path(&shared.dir, cursor.0))?;
    file.seek(SeekFrom::Start(cursor.1))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut at = cursor.1;
    let mut readings = Vec::new();
    let mut opts = None;
    let mut count = 0u64;
    while readings.len() < DRAIN_READINGS && at < limit {
        let Some(record) = read_record(&mut reader, at, limit) else {
            return Err(std::io::Error::other(format!(
                "spool record at {} of file {} cannot be read",
                at, cursor.0
            )));
        };
        if opts.is_some_and(|o: AppendOptions| {
            o.auto_register_wells != record.opts.auto_register_wells
        }) {
            break;
        }
        opts = Some(record.opts);
        let wells = decode_log_batch(&record.payload)
            .map_err(|e| std::io::Error::other(format!("spool record at {at}: {}", e.0)))?;
        for (well_id, points) in wells {
            readings.extend(points.into_iter().map(|(ts, values): Point| Reading {
                well_id: well_id.clone(),
                ts,
                values,
            }));
        }
        count += record.readings;
        at = record.end;
    }
    // Spool time of the record after this batch, for the oldest-age figure.
    let next_at = if at < limit {
        read_record(&mut reader, at, limit).map(|r| r.spooled_at)
    } else {
        None
    };
    Ok(Some((
        readings,
        opts.unwrap_or_default(),
        (cursor.0, at),
        count,
        next_at,
    )))
}

async fn drain_loop(shared: Arc<Shared>, inner: Arc<dyn Store>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        if shared.lock().closed {
            return;
        }
        let pending = shared.lock().pending_readings();
        if pending == 0 {
            {
                // Empty: new appends go to the store again. (An append that chose the spool just
                // before is written after this and drained on the next turn.)
                let mut state = shared.lock();
                if state.pending_readings() == 0 && shared.spooling.swap(false, Ordering::SeqCst) {
                    tracing::info!(
                        drained = state.status.drained_total,
                        "spool drained; appends go to the store again"
                    );
                }
                state.status.draining = false;
                state.status.last_error = None;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), shared.wake.notified()).await;
            continue;
        }
        let batch = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || read_batch(&shared)).await
        };
        let (readings, opts, new_cursor, count, next_at) = match batch {
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), shared.wake.notified()).await;
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "spool: cannot read the next record; retrying");
                shared.lock().status.last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: reader task failed");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut dropped = 0u64;
        if !readings.is_empty() {
            match inner.append(readings, opts).await {
                Ok(outcome) => {
                    dropped = outcome.count(ReadingOutcome::UnknownWell) as u64;
                    if dropped > 0 {
                        tracing::warn!(
                            readings = dropped,
                            "spool: readings of unknown wells dropped while draining (registration is off)"
                        );
                    }
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    {
                        let mut state = shared.lock();
                        if state.status.last_error.is_none() {
                            tracing::warn!(error = %e, "spool: the store does not take the spooled readings yet; retrying");
                        }
                        state.status.draining = false;
                        state.status.last_error = Some(e.to_string());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = wait_closed(&shared) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        // Committed in the store: move the cursor past the records.
        let mut remove = Vec::new();
        let cursor = {
            let mut state = shared.lock();
            if new_cursor.0 != state.cursor.0 {
                // Moved to the next file: the head file is drained.
                if let Some(head) = state.segments.pop_front() {
                    remove.push(head.seq);
                }
                state.head_drained_readings = 0;
            } else {
                state.head_drained_readings += count;
            }
            state.cursor = new_cursor;
            state.head_spooled_at = next_at;
            state.status.drained_total += count;
            state.status.full = false;
            state.status.dropped_unknown_well += dropped;
            state.status.draining = true;
            state.status.last_error = None;
            state.cursor
        };
        let dir = shared.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = write_cursor(&dir, cursor) {
                tracing::warn!(error = %e, "spool: cannot write the cursor (drained records may be replayed again)");
            }
            for seq in remove {
                let _ = fs::remove_file(segment_path(&dir, seq));
            }
        })
        .await;
    }
}

async fn wait_closed(shared: &Shared) {
    loop {
        if shared.lock().closed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[async_trait]
impl Store for SpoolingStore {
    async fn append(
        &self,
        readings: Vec<Reading>,
        opts: AppendOptions,
    ) -> StoreResult<AppendOutcome> {
        if !self.shared.spooling.load(Ordering::SeqCst) {
            match self.inner.append(readings.clone(), opts).await {
                Err(StoreError::Unavailable(why)) if !self.shared.lock().closed => {
                    if !self.shared.spooling.swap(true, Ordering::SeqCst) {
                        tracing::error!(cause = %why, "the store cannot commit: telemetry goes to the outage spool until it is back");
                    }
                }
                other => return other,
            }
        }
        let n = self.spool(readings, opts).await?;
        Ok(AppendOutcome {
            outcomes: vec![ReadingOutcome::Accepted; n],
            registered_wells: Vec::new(),
            spooled: n,
        })
    }

    async fn read_range(&self, well_id: &WellId, range: TimeRange) -> StoreResult<Vec<Point>> {
        self.inner.read_range(well_id, range).await
    }
    async fn query(&self, query: &TelemetryQuery) -> StoreResult<Series> {
        self.inner.query(query).await
    }
    async fn fleet_query(&self, query: &FleetQuery) -> StoreResult<Vec<WellSeries>> {
        self.inner.fleet_query(query).await
    }
    async fn fleet_aggregate(&self, query: &FleetQuery) -> StoreResult<Series> {
        self.inner.fleet_aggregate(query).await
    }
    async fn fleet_totals(
        &self,
        query: &crate::FleetTotalsQuery,
    ) -> StoreResult<Vec<crate::WellTotals>> {
        self.inner.fleet_totals(query).await
    }
    async fn latest(&self) -> StoreResult<Vec<LatestReading>> {
        self.inner.latest().await
    }
    async fn list_wells(&self) -> StoreResult<Vec<WellRecord>> {
        self.inner.list_wells().await
    }
    async fn get_well(&self, well_id: &WellId) -> StoreResult<Option<WellRecord>> {
        self.inner.get_well(well_id).await
    }
    async fn create_well(&self, meta: WellMeta) -> StoreResult<WellRecord> {
        self.inner.create_well(meta).await
    }
    async fn update_well(&self, meta: WellMeta) -> StoreResult<Option<WellRecord>> {
        self.inner.update_well(meta).await
    }
    async fn delete_well(&self, well_id: &WellId) -> StoreResult<bool> {
        self.inner.delete_well(well_id).await
    }
    async fn health(&self) -> StoreHealth {
        self.inner.health().await
    }
    async fn stats(&self) -> StoreResult<StoreStats> {
        self.inner.stats().await
    }
    fn spool_status(&self) -> Option<SpoolStatus> {
        Some(self.status())
    }

    async fn close(&self) -> StoreResult<()> {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        let drainer = self
            .drainer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(drainer) = drainer {
            let _ = drainer.await;
        }
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, thread)) = writer {
            drop(tx);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let left = self.shared.lock().pending_readings();
        if left > 0 {
            tracing::warn!(
                readings = left,
                "closing with readings in the outage spool: they are replayed at the next start"
            );
        }
        self.inner.close().await
    }
}
