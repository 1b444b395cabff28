//! The writer thread: the only code that writes to SQLite or mutates the in-memory index.
//!
//! **Group commit.** Requests arrive over a channel. The loop blocks for the first one, takes
//! everything already queued behind it, and commits all queued appends as one transaction
//! holding one log blob, so concurrent appends share one fsync. Replies go out only after the
//! commit returned, and the index is updated only after it succeeded, so a failed commit
//! leaves nothing half-applied.
//!
//! **Checkpoint.** Unsealed readings live in `log_batches` (durable) and in the heads
//! (memory). A checkpoint freezes the heads, encodes them into the per-window segments on a
//! thread of its own, and this thread installs the result in bounded steps riding along with
//! the append commits (or on their own while the writer is idle), the last of which records
//! how far the log is sealed (`meta.log_sealed`), so appends keep being committed while
//! segments are encoded and installed, and after a crash the log above that mark holds every
//! unsealed reading. The sealed log batches are deleted afterwards in bounded steps the same
//! way: deleting a checkpoint's whole log in the install transaction held every append for
//! hundreds of ms, and writing all its segments in one transaction for tens.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use espwatch_core::{Measurements, Point, Reading, Timestamp, WellId, WellMeta};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::codec::{self, Packing};
use super::fleet_rollup::{self, FleetRow};
use super::index::{Head, Index, SegMeta, WellState, merge_dedup, window_start};
use super::rollup;
use super::schema::{self, sql_err, sql_fail};
use crate::{AppendOptions, AppendOutcome, ReadingOutcome, StoreError, StoreResult, WellRecord};

/// What `espwatch store compact` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CompactReport {
    pub segments_rewritten: u64,
    /// Database file and WAL before and after (the WAL is checkpointed by the vacuum).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

pub type Reply<T> = oneshot::Sender<StoreResult<T>>;

pub enum Command {
    Append {
        readings: Vec<Reading>,
        opts: AppendOptions,
        reply: Reply<AppendOutcome>,
    },
    CreateWell {
        id: WellId,
        meta: WellMeta,
        reply: Reply<WellRecord>,
    },
    UpdateWell {
        id: WellId,
        meta: WellMeta,
        reply: Reply<Option<WellRecord>>,
    },
    DeleteWell {
        id: WellId,
        reply: Reply<bool>,
    },
    Checkpoint {
        reply: Reply<()>,
    },
    /// Seal, rewrite every segment compact, vacuum.
    Compact {
        reply: Reply<CompactReport>,
    },
    /// Retention: delete the sealed raw readings of a well in a window-aligned range when
    /// exactly `expected` are stored there (`embedded::retention`).
    DeleteRaw {
        well: WellId,
        range: (i64, i64),
        expected: u64,
        reply: Reply<u64>,
    },
    /// Retention: delete the hourly rollups of windows ending at or before `before`.
    DeleteRollups {
        before: i64,
        reply: Reply<u64>,
    },
    /// Health probe: a real write and commit.
    Probe {
        reply: Reply<()>,
    },
    /// Finish what is queued ahead, checkpoint, release the database and the lock, reply.
    Close {
        reply: Reply<()>,
    },
    /// Nothing to do but look again at what is due: the shipper raised its floor, so an idle
    /// writer deletes the `ship_log` rows now at or below it (see `trim_from`).
    Wake,
}

/// State shared between the writer thread and the store handles.
pub struct Shared {
    pub index: RwLock<Index>,
    /// Segment window width in microseconds (fixed at database creation).
    pub window: i64,
    pub commits: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Sealed segments read back and decoded to check re-sent or late readings for
    /// duplicates (each at most once per commit group; regular ones never after sealing).
    pub duplicate_check_loads: AtomicU64,
    /// The log shipper's progress: a checkpoint keeps the log batches above it (in
    /// `ship_log`) until they are shipped. `i64::MAX` when nothing ships.
    pub ship_floor: AtomicI64,
    /// Id and commit time (UTC micros) of the newest committed log batch.
    pub last_log_id: AtomicI64,
    pub last_commit_at: AtomicI64,
    /// Whole windows of fleet aggregates answered from a fleet rollup row, and answered well
    /// by well for want of a valid one (`fleet::aggregate_fleet`), since the store opened.
    pub fleet_windows_from_rows: AtomicU64,
    pub fleet_windows_by_well: AtomicU64,
    /// Windows whose fleet rollup is missing or out of date, as the writer last saw them.
    pub fleet_windows_stale: AtomicU64,
}

impl Shared {
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock would be a bug elsewhere; the index itself is only
        // mutated after commits, so its content is still consistent with the database.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub checkpoint_readings: usize,
    pub checkpoint_interval: Duration,
    pub max_readings_per_commit: usize,
    pub compact_segments: bool,
    pub checkpoint_hook: Option<super::CheckpointHook>,
    /// Added to the nice value of the checkpoint thread and of the one freeing its heads.
    pub checkpoint_nice: i32,
    /// Page cache of the checkpoint thread's read connection, MiB.
    pub read_cache_mib: u32,
    pub log_trim_hook: Option<super::LogTrimHook>,
    pub install_hook: Option<super::InstallHook>,
}

pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn internal(msg: String) -> StoreError {
    tracing::error!("embedded store: {msg}");
    StoreError::Internal(msg)
}

/// Copies an error for every request of a failed group (StoreError is not Clone on purpose).
fn copy_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// Rebuilds the index from the database: registry, segment bounds (not blobs), and the log
/// above the sealed mark replayed into the heads. Returns the index, the highest log batch id
/// and the sealed mark (log batches at or below it may still wait for deletion).
pub fn recover(conn: &Connection, window: i64) -> StoreResult<(Index, i64, i64)> {
    let mut index = Index::default();

    let mut stmt = conn
        .prepare("SELECT well_id, meta, created_at, updated_at, auto_registered FROM wells")
        .map_err(|e| sql_err("loading wells", e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(|e| sql_err("loading wells", e))?;
    for row in rows {
        let (id, meta, created, updated, auto) = row.map_err(|e| sql_err("loading wells", e))?;
        let well = WellId::parse(&id)
            .map_err(|e| internal(format!("wells row {id:?}: invalid well id: {e}")))?;
        let meta: WellMeta = serde_json::from_str(&meta)
            .map_err(|e| internal(format!("wells row {id:?}: corrupt metadata JSON: {e}")))?;
        let record = WellRecord {
            meta,
            created_at: Timestamp(created),
            updated_at: Timestamp(updated),
            auto_registered: auto != 0,
        };
        index.wells.insert(well, WellState::new(record));
    }
    drop(stmt);

    let mut stmt = conn
        .prepare(
            "SELECT well_id, window_start, min_ts, max_ts, count, substr(data, 1, 2) FROM segments",
        )
        .map_err(|e| sql_err("loading segment index", e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                SegMeta {
                    min_ts: r.get(2)?,
                    max_ts: r.get(3)?,
                    count: r.get(4)?,
                    compact: codec::is_compact(&r.get::<_, Vec<u8>>(5)?),
                },
            ))
        })
        .map_err(|e| sql_err("loading segment index", e))?;
    let mut orphans = 0u64;
    for row in rows {
        let (id, ws, meta) = row.map_err(|e| sql_err("loading segment index", e))?;
        let well = WellId::parse(&id).ok();
        match well.and_then(|w| index.wells.get_mut(&w)) {
            Some(st) => {
                if meta.min_ts > meta.max_ts
                    || window_start(meta.min_ts, window) != ws
                    || window_start(meta.max_ts, window) != ws
                {
                    return Err(internal(format!(
                        "segment ({id}, {ws}): bounds {}..={} do not fit its window",
                        meta.min_ts, meta.max_ts
                    )));
                }
                st.segs.insert(ws, meta);
                index.segments += 1;
            }
            None => orphans += 1,
        }
    }
    drop(stmt);
    if orphans > 0 {
        // Cannot happen through this engine (delete_well removes both in one transaction).
        tracing::warn!(
            orphans,
            "embedded store: ignoring segments of unregistered wells"
        );
    }

    // Newest reading of every well from its newest segment; the log replay may raise it. A
    // damaged newest segment is quarantined (the store still opens) and the next one is used.
    let mut quarantined = Vec::new();
    for (id, st) in index.wells.iter_mut() {
        while let Some((&ws, _)) = st.segs.last_key_value() {
            let data = load_segment_blob(conn, id, ws)?;
            match codec::decode_segment(&data) {
                Ok(points) => {
                    if let Some((ts, m)) = points.last() {
                        st.offer_latest(ts.0, m);
                    }
                    break;
                }
                Err(e) => {
                    quarantine_segment(conn, id, ws, &e.to_string())?;
                    st.segs.remove(&ws);
                    index.segments -= 1;
                    quarantined.push(format!("segment ({id}, {ws}): {e}"));
                }
            }
        }
    }

    // Batches up to the sealed mark are in segments already (a checkpoint installed them and
    // their deletion had not finished): never replayed, deleted by the writer.
    let sealed = schema::log_sealed(conn)?;
    let mut last_log_id = 0i64;
    let mut stmt = conn
        .prepare("SELECT id, data FROM log_batches WHERE id > ?1 ORDER BY id")
        .map_err(|e| sql_err("replaying log", e))?;
    let mut rows = stmt
        .query([sealed])
        .map_err(|e| sql_err("replaying log", e))?;
    let mut skipped = 0u64;
    let mut damaged_batches = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sql_err("replaying log", e))? {
        let id: i64 = row.get(0).map_err(|e| sql_err("replaying log", e))?;
        let data = row
            .get_ref(1)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(|e| sql_err("replaying log", e))?;
        let wells = match codec::decode_log_batch(data) {
            Ok(wells) => wells,
            Err(e) => {
                damaged_batches.push((id, e.to_string()));
                last_log_id = id;
                continue;
            }
        };
        for (well, points) in wells {
            let Some(st) = index.wells.get_mut(&well) else {
                skipped += points.len() as u64;
                continue;
            };
            for (ts, m) in points {
                // Batches never repeat a reading; first copy wins should one ever appear.
                if st.head.insert_if_vacant(ts.0, m) {
                    st.offer_latest(ts.0, &m);
                    index.head_total += 1;
                }
            }
        }
        last_log_id = id;
    }
    drop(rows);
    drop(stmt);
    for (id, reason) in damaged_batches {
        quarantine_log_batch(conn, id, &reason)?;
        quarantined.push(format!("log batch {id}: {reason}"));
    }
    index.quarantined = quarantined;
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "embedded store: log readings of unregistered wells ignored"
        );
    }
    if index.head_total > 0 {
        index.oldest_head_at = Some(Instant::now());
    }
    tracing::info!(
        wells = index.wells.len(),
        segments = index.segments,
        replayed = index.head_total,
        "embedded store: recovered"
    );
    // Ids only grow, also across checkpoints that emptied the log (the shipper's cursor).
    let shipped_max: Option<i64> = conn
        .query_row("SELECT max(id) FROM ship_log", [], |r| r.get(0))
        .map_err(|e| sql_err("reading ship_log", e))?;
    let seq = schema::get_meta(conn, "log_seq")?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let last_log_id = last_log_id
        .max(shipped_max.unwrap_or(0))
        .max(seq)
        .max(sealed);
    Ok((index, last_log_id, sealed))
}

/// Up to `most` of `candidates` whose fleet rollup can be
/// built (no head readings there), newest first (the windows a checkpoint seals into are
/// usually the newest), with the wells that will have data there.
fn fleet_windows(
    index: &super::index::Index,
    window: i64,
    candidates: &BTreeSet<i64>,
    most: usize,
) -> Vec<(i64, Vec<WellId>)> {
    if window % rollup::HOUR != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &ws in candidates.iter().rev() {
        if out.len() == most {
            break;
        }
        if let Some(wells) = fleet_wells(index, ws, ws.saturating_add(window)) {
            out.push((ws, wells));
        }
    }
    out
}

/// The wells with data in window `[ws, end)` (a sealed segment, a rollup retention left, or
/// readings a running checkpoint seals), or `None` when one has head readings there (a
/// later checkpoint seals them) or none has anything.
fn fleet_wells(index: &super::index::Index, ws: i64, end: i64) -> Option<Vec<WellId>> {
    let mut wells = Vec::new();
    for (id, st) in &index.wells {
        if st.head.range(ws..end).next().is_some() {
            return None;
        }
        if st.segs.contains_key(&ws)
            || st.rolled.contains_key(&ws)
            || st.sealing.range(ws..end).next().is_some()
        {
            wells.push(id.clone());
        }
    }
    (!wells.is_empty()).then_some(wells)
}

/// Moves a damaged segment to the `quarantine` table (bytes kept), in one transaction.
pub fn quarantine_segment(
    conn: &Connection,
    well: &WellId,
    ws: i64,
    reason: &str,
) -> StoreResult<()> {
    tracing::error!(%well, window_start = ws, reason, "embedded store: quarantining a damaged segment");
    let now = now_micros();
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| sql_err("quarantining a segment", e))?;
    tx.execute(
        "INSERT INTO quarantine (kind, well_id, window_start, reason, quarantined_at, data)
         SELECT 'segment', well_id, window_start, ?3, ?4, data FROM segments
         WHERE well_id = ?1 AND window_start = ?2",
        params![well.as_str(), ws, reason, now],
    )
    .map_err(|e| sql_err("quarantining a segment", e))?;
    for sql in [
        "DELETE FROM segments WHERE well_id = ?1 AND window_start = ?2",
        "DELETE FROM rollups WHERE well_id = ?1 AND window_start = ?2",
    ] {
        tx.execute(sql, params![well.as_str(), ws])
            .map_err(|e| sql_err("quarantining a segment", e))?;
    }
    fleet_rollup::invalidate(&tx, ws)?;
    tx.commit()
        .map_err(|e| sql_err("quarantining a segment", e))
}

/// Moves a damaged log batch to the `quarantine` table (bytes kept), in one transaction.
pub fn quarantine_log_batch(conn: &Connection, id: i64, reason: &str) -> StoreResult<()> {
    tracing::error!(
        log_id = id,
        reason,
        "embedded store: quarantining a damaged log batch"
    );
    let now = now_micros();
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| sql_err("quarantining a log batch", e))?;
    tx.execute(
        "INSERT INTO quarantine (kind, log_id, reason, quarantined_at, data)
         SELECT 'log_batch', id, ?2, ?3, data FROM log_batches WHERE id = ?1",
        params![id, reason, now],
    )
    .map_err(|e| sql_err("quarantining a log batch", e))?;
    tx.execute("DELETE FROM log_batches WHERE id = ?1", params![id])
        .map_err(|e| sql_err("quarantining a log batch", e))?;
    tx.commit()
        .map_err(|e| sql_err("quarantining a log batch", e))
}

fn load_segment_blob(conn: &Connection, well: &WellId, ws: i64) -> StoreResult<Vec<u8>> {
    let mut stmt = conn
        .prepare_cached("SELECT data FROM segments WHERE well_id = ?1 AND window_start = ?2")
        .map_err(|e| sql_err("loading segment", e))?;
    stmt.query_row(params![well.as_str(), ws], |r| r.get::<_, Vec<u8>>(0))
        .optional()
        .map_err(|e| sql_err("loading segment", e))?
        .ok_or_else(|| internal(format!("segment ({well}, {ws}) is indexed but missing")))
}

// ---------------------------------------------------------------------------------------------
// Segment timestamp cache (duplicate checks of late data against sealed windows)

type SegKey = (WellId, i64);

/// A sealed segment's timestamps, as a duplicate check needs them.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SegTimes {
    /// Exactly `first, first + stride, …, last`: regular sampling, the usual case, held
    /// without a list (membership is arithmetic).
    Grid { first: i64, stride: i64, last: i64 },
    /// Anything else, ascending.
    Listed(Arc<Vec<i64>>),
}

impl SegTimes {
    /// The timestamps of `ts` (ascending, distinct).
    pub(super) fn of(ts: impl Iterator<Item = i64> + Clone) -> SegTimes {
        let mut it = ts.clone();
        let (Some(first), second) = (it.next(), it.next()) else {
            return SegTimes::Listed(Arc::default());
        };
        let Some(second) = second else {
            return SegTimes::Grid {
                first,
                stride: 1,
                last: first,
            };
        };
        let stride = second - first;
        let mut last = second;
        let mut regular = stride > 0;
        if regular {
            for t in it {
                if t - last != stride {
                    regular = false;
                    break;
                }
                last = t;
            }
        }
        if regular {
            SegTimes::Grid {
                first,
                stride,
                last,
            }
        } else {
            SegTimes::Listed(Arc::new(ts.collect()))
        }
    }

    pub(super) fn contains(&self, ts: i64) -> bool {
        match self {
            SegTimes::Grid {
                first,
                stride,
                last,
            } => ts >= *first && ts <= *last && (ts - first) % stride == 0,
            SegTimes::Listed(list) => list.binary_search(&ts).is_ok(),
        }
    }

    /// What it costs the cache, in timestamps held (a grid counts as one).
    fn weight(&self) -> usize {
        match self {
            SegTimes::Grid { .. } => 1,
            SegTimes::Listed(list) => list.len().max(1),
        }
    }
}

/// Sealed segments' timestamps for duplicate checks of readings at or before a well's newest
/// one (re-sent or late data; in-order data is decided by the newest timestamp alone). Seeded
/// with the grid of every regular segment a checkpoint installs, so re-sent regular data never
/// reads a segment back; others are decoded once when first needed. Bounded by entries and by
/// timestamps held; least recently used entries go first.
struct TsCache {
    /// (well, window start) -> (last use tick, timestamps).
    entries: HashMap<SegKey, (u64, SegTimes)>,
    tick: u64,
    weight: usize,
    max_weight: usize,
    max_entries: usize,
}

/// At most this many segments' timestamps are cached (a grid costs ~80 bytes)…
const TS_CACHE_ENTRIES: usize = 200_000;
/// …and at most this many listed timestamps (8 bytes each).
const TS_CACHE_TIMESTAMPS: usize = 2_000_000;

impl TsCache {
    fn new(max_entries: usize, max_weight: usize) -> Self {
        TsCache {
            entries: HashMap::new(),
            tick: 0,
            weight: 0,
            max_weight,
            max_entries,
        }
    }

    /// The timestamps of segment `(well, ws)`, decoded from the database when not cached
    /// (counted in `loads`).
    fn get(
        &mut self,
        conn: &Connection,
        well: &WellId,
        ws: i64,
        loads: &AtomicU64,
    ) -> StoreResult<SegTimes> {
        self.tick += 1;
        let key = (well.clone(), ws);
        if let Some((t, times)) = self.entries.get_mut(&key) {
            *t = self.tick;
            return Ok(times.clone());
        }
        let data = load_segment_blob(conn, well, ws)?;
        loads.fetch_add(1, Ordering::Relaxed);
        let ts = codec::decode_segment_timestamps(&data)
            .map_err(|e| internal(format!("segment ({well}, {ws}) is corrupt: {e}")))?;
        let times = SegTimes::of(ts.iter().copied());
        self.insert(well, ws, times.clone());
        Ok(times)
    }

    fn insert(&mut self, well: &WellId, ws: i64, times: SegTimes) {
        self.tick += 1;
        self.weight += times.weight();
        if let Some((_, old)) = self.entries.insert((well.clone(), ws), (self.tick, times)) {
            self.weight -= old.weight();
        }
        if self.entries.len() > self.max_entries || self.weight > self.max_weight {
            self.evict();
        }
    }

    /// Drops the least recently used entries until at most three quarters of both bounds are
    /// used (in one pass, so a stream of misses costs O(1) each, amortised).
    fn evict(&mut self) {
        let mut ticks: Vec<(u64, usize)> = self
            .entries
            .values()
            .map(|(t, times)| (*t, times.weight()))
            .collect();
        ticks.sort_unstable();
        let (entries_goal, weight_goal) = (self.max_entries * 3 / 4, self.max_weight * 3 / 4);
        let (mut entries, mut weight) = (self.entries.len(), self.weight);
        let mut cutoff = 0;
        for (t, w) in ticks {
            if entries <= entries_goal && weight <= weight_goal {
                break;
            }
            entries -= 1;
            weight -= w;
            cutoff = t + 1;
        }
        self.entries.retain(|_, (t, _)| *t >= cutoff);
        self.weight = self.entries.values().map(|(_, times)| times.weight()).sum();
    }

    fn invalidate(&mut self, well: &WellId, ws: i64) {
        if let Some((_, old)) = self.entries.remove(&(well.clone(), ws)) {
            self.weight -= old.weight();
        }
    }

    fn invalidate_well(&mut self, well: &WellId) {
        self.entries.retain(|(w, _), _| w != well);
        self.weight = self.entries.values().map(|(_, times)| times.weight()).sum();
    }
}

// ---------------------------------------------------------------------------------------------
// The writer

struct AppendReq {
    readings: Vec<Reading>,
    opts: AppendOptions,
    reply: Reply<AppendOutcome>,
}

/// What a committed group changes in memory.
struct Staged {
    new_wells: Vec<(WellId, WellRecord)>,
    points: HashMap<WellId, BTreeMap<i64, Measurements>>,
    count: usize,
    /// A step of the checkpoint being installed rode along with the commit: what it did, or
    /// why it failed (handled once the group is applied, see `flush`).
    install: Option<StoreResult<Installed>>,
}

/// A frozen head, handed to the checkpoint thread.
struct SealJob {
    window: i64,
    wells: Vec<WellJob>,
    /// Closed windows whose fleet rollup to (re)build, with the wells the index has there.
    fleet: Vec<(i64, Vec<WellId>)>,
    /// Nothing frozen: only fleet rollups built (`rebuild_fleet_if_due`); not counted as a
    /// checkpoint, no hooks.
    fleet_only: bool,
    hook: Option<super::CheckpointHook>,
}

struct WellJob {
    id: WellId,
    /// The frozen head (the same map readers see as the well's `sealing`).
    points: Arc<Head>,
    /// The well's newest timestamp when compacting (decides which windows are closed).
    latest: Option<i64>,
    /// Windows of `points` that already have a segment to merge with.
    merge: Vec<i64>,
    /// Closed windows not yet compact, to rewrite compact.
    stale: Vec<i64>,
}

/// One segment row (and its rollup row), encoded, ready to be written.
struct EncodedSegment {
    well: WellId,
    ws: i64,
    meta: SegMeta,
    data: Vec<u8>,
    /// `codec::segment_checksum` of `data` and `meta`, recorded in the row.
    checksum: i64,
    rollup: Option<Vec<u8>>,
    /// Its timestamps, for the duplicate-check cache.
    times: SegTimes,
}

/// What a checkpoint thread produced.
struct Sealed {
    segments: Vec<EncodedSegment>,
    /// Fleet rollups built (written by the install's last step, after the segments).
    fleet_rows: Vec<FleetRow>,
    /// The windows whose fleet rollup was attempted (built, or not buildable yet).
    fleet_tried: Vec<i64>,
    /// Made by a `SealJob` with `fleet_only`.
    fleet_only: bool,
    sealed: usize,
    recompacted: usize,
    /// How long the checkpoint thread took (wall clock), and its CPU time.
    encoded_in: Duration,
    encode_cpu: Option<Duration>,
}

/// The running checkpoint.
struct InFlight {
    result: Receiver<StoreResult<Sealed>>,
    thread: Option<JoinHandle<()>>,
    /// Highest log batch id at the freeze: the log batches the install deletes.
    up_to_log_id: i64,
    /// The heads' `oldest_head_at` before the freeze (restored if the checkpoint fails).
    oldest_head_at: Option<Instant>,
    started: Instant,
    /// `Command::Checkpoint` requests answered when it is installed.
    replies: Vec<Reply<()>>,
    /// Encoded, and being written in steps (`install_step`).
    installing: Option<Installing>,
    /// Only fleet rollups (`rebuild_fleet_if_due`): no checkpoint metrics.
    fleet_only: bool,
}

/// A checkpoint's encoded segments being written, a bounded step at a time.
struct Installing {
    sealed: Sealed,
    /// Segments written (committed) so far.
    written: usize,
    steps: u32,
    began: Instant,
}

impl Installing {
    fn new(sealed: Sealed) -> Installing {
        Installing {
            sealed,
            written: 0,
            steps: 0,
            began: Instant::now(),
        }
    }
}

/// What a committed install step did: the segments written through, and whether the
/// checkpoint is complete (its last step also wrote the sealed mark).
#[derive(Clone, Copy)]
struct Installed {
    written: usize,
    segments: usize,
    complete: bool,
}

/// An append commit taking this long is logged at debug level, with where the time went.
const SLOW_COMMIT: Duration = Duration::from_millis(20);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// How often an idle writer looks whether the checkpoint thread is done.
const CHECKPOINT_POLL: Duration = Duration::from_millis(5);
/// One step deleting the sealed log deletes at most this many log batches…
const TRIM_BATCHES: usize = 64;
/// …and stops after the batch that reaches this many bytes (a step frees about this much of
/// the database's pages; ~1 ms of work, where a whole checkpoint's log took hundreds).
const TRIM_BYTES: i64 = 1 << 20;
/// Shipped `ship_log` rows one step deletes at most.
const TRIM_SHIPPED: usize = 64;
/// One step writing a checkpoint's segments writes at most this many…
const INSTALL_SEGMENTS: usize = 32;
/// …and stops after the segment that reaches this many bytes (segments and rollups). A whole
/// checkpoint's segments (400–500 of them, a few MB, for 500 k readings) in one transaction
/// held every append for tens of ms, sometimes hundreds; steps of 1 MiB still made the
/// commits carrying them about twice as long.
const INSTALL_BYTES: usize = 256 << 10;
/// A background step (install, log deletion) runs in a transaction of its own only after the
/// writer has waited this long for a command to ride along with.
const STEP_ALONE_AFTER: Duration = Duration::from_millis(5);
/// After a failed step, the next one waits this long (the log is still sealed: only space).
const TRIM_RETRY: Duration = Duration::from_secs(5);
/// After a failed checkpoint, the next automatic one waits this long.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);

pub struct Writer {
    conn: Connection,
    /// The database file (the checkpoint thread opens its own read connection on it).
    db_path: PathBuf,
    shared: Arc<Shared>,
    opts: WriterOptions,
    cache: TsCache,
    /// Highest `log_batches.id` written or replayed; a checkpoint deletes up to it.
    last_log_id: i64,
    /// Whether `log_batches` may hold rows (a checkpoint with nothing to do is skipped).
    log_has_rows: bool,
    /// The data directory lock; released when the writer stops.
    lock: Option<File>,
    /// After a failed checkpoint, do not retry automatically before this instant.
    checkpoint_retry_at: Option<Instant>,
    /// Reused encoding buffer of log batches.
    log_buf: Vec<u8>,
    /// The checkpoint whose segments are being encoded, if any.
    in_flight: Option<InFlight>,
    /// Checkpoint requests that arrived while one was running: a new one follows it.
    waiting: Vec<Reply<()>>,
    /// Log batches at or below this id are sealed into segments (`meta.log_sealed`).
    log_sealed: i64,
    /// Every sealed log batch at or below this id is deleted.
    log_deleted: i64,
    /// `ship_log` holds no row at or below this id (the shipper's floor when last trimmed).
    ship_trimmed: i64,
    /// After a failed step deleting the sealed log, none before this instant.
    trim_retry_at: Option<Instant>,
    /// `Command::Checkpoint` requests whose checkpoint is installed, answered once the log
    /// it sealed (and the `ship_log` rows shipped by then) is deleted: the log id and the
    /// shipper's floor to reach.
    trim_waiters: Vec<(i64, i64, Reply<()>)>,
    /// Windows whose fleet rollup is missing or out of date (`fleet_rollup`).
    fleet_dirty: BTreeSet<i64>,
    /// Whether a window of `fleet_dirty` may be buildable now (set whenever segments or the
    /// set change; cleared when none is): an idle writer then builds them
    /// (`rebuild_fleet_if_due`).
    fleet_recheck: bool,
}

/// What a step deleting the sealed log starts from (a copy: the step runs inside a
/// transaction that borrows the connection).
#[derive(Clone, Copy)]
struct TrimFrom {
    sealed: i64,
    deleted: i64,
    floor: i64,
    ship_trimmed: i64,
}

/// What a committed step changed.
struct Trimmed {
    deleted: i64,
    ship_trimmed: i64,
    batches: u64,
}

enum Flow {
    Continue,
    Stop(Option<Reply<()>>),
}

impl Writer {
    pub fn new(
        conn: Connection,
        shared: Arc<Shared>,
        opts: WriterOptions,
        (last_log_id, log_sealed): (i64, i64),
        lock: File,
        fleet_dirty: BTreeSet<i64>,
    ) -> Self {
        let db_path = conn.path().map(PathBuf::from).unwrap_or_default();
        Writer {
            conn,
            db_path,
            shared,
            opts,
            cache: TsCache::new(TS_CACHE_ENTRIES, TS_CACHE_TIMESTAMPS),
            last_log_id,
            log_has_rows: last_log_id > log_sealed,
            lock: Some(lock),
            checkpoint_retry_at: None,
            log_buf: Vec::new(),
            in_flight: None,
            waiting: Vec::new(),
            log_sealed,
            // Unknown after a restart: the first step finds out (and deletes what is left).
            log_deleted: 0,
            ship_trimmed: i64::MIN,
            trim_retry_at: None,
            trim_waiters: Vec::new(),
            fleet_recheck: !fleet_dirty.is_empty(),
            fleet_dirty,
        }
    }

    /// The thread body. Returns when told to close or when every handle is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        let wal = WalCheckpointer::start(&self.db_path);
        let mut batch: Vec<Command> = Vec::new();
        let stop_reply = loop {
            self.poll_checkpoint();
            self.checkpoint_if_due();
            self.rebuild_fleet_if_due();
            // While a checkpoint is being installed or the sealed log deleted, appends'
            // commits take a step each (`commit_group`); a step runs on its own (with an
            // fsync of its own, which appends arriving then wait for) only when no command
            // comes within `STEP_ALONE_AFTER`: under load the next append is usually a
            // moment away, and the step then rides along with it.
            let first = if self.installing() || self.trim_from().is_some() {
                match rx.recv_timeout(STEP_ALONE_AFTER) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.installing() {
                            self.install_alone();
                        } else {
                            self.trim_alone();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break None,
                }
            } else {
                match self.next_deadline() {
                    Some(deadline) => {
                        let wait = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(wait) {
                            Ok(c) => c,
                            Err(RecvTimeoutError::Timeout) => continue,
                            Err(RecvTimeoutError::Disconnected) => break None,
                        }
                    }
                    None => match rx.recv() {
                        Ok(c) => c,
                        Err(_) => break None,
                    },
                }
            };
            let mut queued = command_readings(&first);
            batch.push(first);
            // Take what is already waiting, up to the per-commit cap, without blocking.
            while queued < self.opts.max_readings_per_commit {
                match rx.try_recv() {
                    Ok(c) => {
                        queued += command_readings(&c);
                        batch.push(c);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if let Flow::Stop(reply) = self.process(&mut batch) {
                break reply;
            }
        };
        // Commands queued behind Close are dropped with their reply senders: their callers
        // see the store as unavailable.
        drop(rx);
        // Before the last connection closes (which checkpoints the WAL and removes it).
        drop(wal);
        let result = match &stop_reply {
            Some(_) => self
                .checkpoint()
                .and_then(|()| self.finish_trim())
                .and_then(|()| self.release_free_pages()),
            None => {
                self.abandon_checkpoint();
                Ok(())
            }
        };
        let Writer { conn, lock, .. } = self;
        let result = result.and(
            conn.close()
                .map_err(|(_, e)| sql_err("closing the database", e)),
        );
        drop(lock);
        tracing::info!("embedded store: writer stopped");
        if let Some(reply) = stop_reply {
            let _ = reply.send(result);
        }
    }

    fn process(&mut self, batch: &mut Vec<Command>) -> Flow {
        let mut group: Vec<AppendReq> = Vec::new();
        let mut commands = batch.drain(..);
        for cmd in commands.by_ref() {
            match cmd {
                Command::Append {
                    readings,
                    opts,
                    reply,
                } => group.push(AppendReq {
                    readings,
                    opts,
                    reply,
                }),
                other => {
                    // Registry changes and the rest are ordered after the appends ahead.
                    self.flush(&mut group);
                    if let Flow::Stop(r) = self.handle(other) {
                        return Flow::Stop(r);
                    }
                }
            }
        }
        self.flush(&mut group);
        Flow::Continue
    }

    fn handle(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Append { reply, .. } => {
                // process() groups every append; answer rather than panic the writer.
                let _ = reply.send(Err(internal("append reached the wrong handler".into())));
            }
            Command::CreateWell { id, meta, reply } => {
                let _ = reply.send(self.create_well(id, meta));
            }
            Command::UpdateWell { id, meta, reply } => {
                let _ = reply.send(self.update_well(id, meta));
            }
            Command::DeleteWell { id, reply } => {
                let _ = reply.send(self.delete_well(&id));
            }
            Command::Checkpoint { reply } => self.request_checkpoint(reply),
            Command::Compact { reply } => {
                let _ = reply.send(self.compact());
            }
            Command::DeleteRaw {
                well,
                range,
                expected,
                reply,
            } => {
                let _ = reply.send(self.delete_raw(&well, range, expected));
            }
            Command::DeleteRollups { before, reply } => {
                // A running checkpoint may be about to write rollups of those windows.
                self.settle_checkpoints();
                let r = super::retention::delete_rollups(&self.conn, &self.shared, before);
                let _ = reply.send(r);
            }
            Command::Probe { reply } => {
                // Unlogged: the readiness probe reports it in its own request line.
                let r =
                    schema::set_meta_unlogged(&self.conn, "last_probe", &now_micros().to_string());
                let _ = reply.send(r);
            }
            Command::Close { reply } => return Flow::Stop(Some(reply)),
            Command::Wake => {}
        }
        Flow::Continue
    }

    // -----------------------------------------------------------------------------------------
    // Group commit

    fn flush(&mut self, group: &mut Vec<AppendReq>) {
        if group.is_empty() {
            return;
        }
        let started = Instant::now();
        let readings = group.iter().map(|r| r.readings.len()).sum();
        let result = self.commit_group(group);
        crate::metrics::record_commit(
            "embedded",
            group.len(),
            readings,
            started.elapsed(),
            result.is_ok(),
        );
        match result {
            Ok((outcomes, mut staged)) => {
                let install = staged.install.take();
                self.apply(staged);
                for (req, out) in group.drain(..).zip(outcomes) {
                    let _ = req.reply.send(Ok(out));
                }
                // After `apply`: completing the install may start the next checkpoint, which
                // must find this group's readings in the heads it freezes.
                match install {
                    Some(Ok(step)) => self.install_stepped(step, true),
                    Some(Err(e)) => self.install_failed(e),
                    None => {}
                }
            }
            Err(e) => {
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(copy_err(&e)));
                }
            }
        }
    }

    /// Decides every reading's outcome in arrival order, then writes and commits the group.
    fn commit_group(&mut self, group: &[AppendReq]) -> StoreResult<(Vec<AppendOutcome>, Staged)> {
        let started = Instant::now();
        let shared = self.shared.clone();
        let window = shared.window;
        let now = now_micros();
        let mut staged = Staged {
            new_wells: Vec::new(),
            points: HashMap::new(),
            count: 0,
            install: None,
        };
        let mut new_ids: HashSet<WellId> = HashSet::new();
        let mut outcomes = Vec::with_capacity(group.len());
        {
            let index = shared.read();
            // Each reading's well, looked up once; and which readings are in a sealed segment,
            // decided segment by segment first (a batch interleaves wells, so deciding in
            // arrival order would fetch each segment again and again). Sealed segments do not
            // change while a group is decided, so the answer is the same in any order.
            let states: Vec<Option<&WellState>> = group
                .iter()
                .flat_map(|req| req.readings.iter())
                .map(|r| index.wells.get(&r.well_id))
                .collect();
            let sealed = self.sealed_readings(group, &states, window)?;
            let mut flat = 0usize;
            for req in group {
                let mut out = AppendOutcome {
                    outcomes: Vec::with_capacity(req.readings.len()),
                    registered_wells: Vec::new(),
                    spooled: 0,
                };
                for r in &req.readings {
                    let i = flat;
                    flat += 1;
                    let state = states[i];
                    if state.is_none() && !new_ids.contains(&r.well_id) {
                        if !req.opts.auto_register_wells {
                            out.outcomes.push(ReadingOutcome::UnknownWell);
                            continue;
                        }
                        new_ids.insert(r.well_id.clone());
                        staged.new_wells.push((
                            r.well_id.clone(),
                            WellRecord {
                                meta: WellMeta::minimal(&r.well_id),
                                created_at: Timestamp(now),
                                updated_at: Timestamp(now),
                                auto_registered: true,
                            },
                        ));
                        out.registered_wells.push(r.well_id.clone());
                    }
                    let ts = r.ts.0;
                    let pending = match staged.points.get_mut(&r.well_id) {
                        Some(p) => p,
                        None => staged.points.entry(r.well_id.clone()).or_default(),
                    };
                    // Fast path: newer than anything stored or staged for the well.
                    let newest = pending
                        .last_key_value()
                        .map(|(t, _)| *t)
                        .max(state.and_then(WellState::latest_ts));
                    let duplicate = if newest.is_none_or(|n| ts > n) {
                        false
                    } else if pending.contains_key(&ts) {
                        true
                    } else if let Some(st) = state {
                        st.unsealed_contains(ts) || sealed.get(i).copied().unwrap_or(false)
                    } else {
                        false
                    };
                    if duplicate {
                        out.outcomes.push(ReadingOutcome::Duplicate);
                    } else {
                        pending.insert(ts, r.values);
                        staged.count += 1;
                        out.outcomes.push(ReadingOutcome::Accepted);
                    }
                }
                outcomes.push(out);
            }
        }
        staged.points.retain(|_, p| !p.is_empty());
        if staged.count == 0 && staged.new_wells.is_empty() {
            return Ok((outcomes, staged));
        }
        let decided = Instant::now();

        let trim_from = self.trim_from();
        let mut tx = self
            .conn
            .transaction()
            .map_err(|e| sql_fail("starting append transaction", e))?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO wells(well_id, meta, created_at, updated_at, auto_registered)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| sql_fail("registering wells", e))?;
            for (id, rec) in &staged.new_wells {
                let json = serde_json::to_string(&rec.meta)
                    .map_err(|e| StoreError::Internal(format!("encoding well metadata: {e}")))?;
                ins.execute(params![id.as_str(), json, now, now, 1])
                    .map_err(|e| sql_fail("registering wells", e))?;
            }
        }
        let mut log_id = None;
        if staged.count > 0 {
            codec::encode_log_batch(staged.points.iter(), &mut self.log_buf);
            let id = self.last_log_id + 1;
            // The commit time: taken as late as possible, just before the commit's fsync.
            let committed_at = now_micros();
            tx.prepare_cached(
                "INSERT INTO log_batches(id, data, committed_at) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![id, &self.log_buf[..], committed_at]))
            .map_err(|e| sql_fail("writing log batch", e))?;
            log_id = Some((id, committed_at));
        }
        // A step of the checkpoint being installed rides along (no fsync of its own), in a
        // savepoint: should it fail, the appends are committed without it (and the checkpoint
        // is given up, its readings thawed).
        if let Some(flight) = &self.in_flight
            && let Some(inst) = &flight.installing
        {
            let seq = log_id.map_or(self.last_log_id, |(id, _)| id);
            let sp = tx
                .savepoint()
                .map_err(|e| sql_fail("starting a checkpoint install step", e))?;
            match install_step(&sp, inst, flight.up_to_log_id, seq) {
                Ok(step) => {
                    sp.commit()
                        .map_err(|e| sql_fail("ending a checkpoint install step", e))?;
                    staged.install = Some(Ok(step));
                }
                // Dropping the savepoint rolls the step back.
                Err(e) => staged.install = Some(Err(e)),
            }
        }
        // A step of deleting the sealed log rides along (no fsync of its own), in a savepoint:
        // should it fail, the appends are committed without it.
        let mut trimmed = None;
        let mut failed_trim = false;
        if let Some(from) = trim_from {
            let sp = tx
                .savepoint()
                .map_err(|e| sql_fail("starting a log deletion step", e))?;
            match trim_step(&sp, from) {
                Ok(t) => {
                    sp.commit()
                        .map_err(|e| sql_fail("ending a log deletion step", e))?;
                    trimmed = Some(t);
                }
                // Logged by `sql_err`; dropping the savepoint rolls the step back.
                Err(_) => failed_trim = true,
            }
        }
        let written = Instant::now();
        tx.commit().map_err(|e| sql_fail("committing appends", e))?;
        let done = Instant::now();
        if done.duration_since(started) >= SLOW_COMMIT {
            tracing::debug!(
                readings = staged.count,
                decide_ms = ms(decided.duration_since(started)),
                write_ms = ms(written.duration_since(decided)),
                commit_ms = ms(done.duration_since(written)),
                trim_batches = trimmed.as_ref().map_or(0, |t| t.batches),
                install_segments = match &staged.install {
                    Some(Ok(step)) => step.segments,
                    _ => 0,
                },
                "embedded store: slow append commit"
            );
        }
        if let Some((id, committed_at)) = log_id {
            self.last_log_id = id;
            self.log_has_rows = true;
            shared.last_commit_at.store(committed_at, Ordering::Relaxed);
            shared.last_log_id.store(id, Ordering::Release);
        }
        if let Some(t) = trimmed {
            self.trimmed(t, true);
        }
        if failed_trim {
            self.trim_failed();
        }
        shared.commits.fetch_add(1, Ordering::Relaxed);
        Ok((outcomes, staged))
    }

    /// For every reading of `group` (flattened), whether a sealed segment of its well holds
    /// its timestamp; empty when no reading falls inside a sealed segment's bounds (new data).
    /// Each segment is looked up once, in (well, window) order.
    fn sealed_readings(
        &mut self,
        group: &[AppendReq],
        states: &[Option<&WellState>],
        window: i64,
    ) -> StoreResult<Vec<bool>> {
        let mut candidates: Vec<(&WellId, i64, i64, usize)> = Vec::new();
        let readings = group.iter().flat_map(|req| req.readings.iter());
        for (i, (r, state)) in readings.zip(states).enumerate() {
            let Some(st) = state else { continue };
            let ts = r.ts.0;
            // Anything newer than the well's newest reading is in no segment.
            if st.latest_ts().is_none_or(|l| ts > l) {
                continue;
            }
            let ws = window_start(ts, window);
            if st
                .segs
                .get(&ws)
                .is_some_and(|m| ts >= m.min_ts && ts <= m.max_ts)
            {
                candidates.push((&r.well_id, ws, ts, i));
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        candidates.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut sealed = vec![false; states.len()];
        let mut current: Option<(&WellId, i64, SegTimes)> = None;
        for (well, ws, ts, i) in candidates {
            let times = match &current {
                Some((w, s, times)) if *w == well && *s == ws => times,
                _ => {
                    let times =
                        self.cache
                            .get(&self.conn, well, ws, &self.shared.duplicate_check_loads)?;
                    &current.insert((well, ws, times)).2
                }
            };
            sealed[i] = times.contains(ts);
        }
        Ok(sealed)
    }

    fn apply(&mut self, staged: Staged) {
        let mut index = self.shared.write();
        for (id, rec) in staged.new_wells {
            index.wells.insert(id, WellState::new(rec));
        }
        for (id, points) in staged.points {
            let Some(st) = index.wells.get_mut(&id) else {
                // Unreachable: a reading is staged only for a known or just-registered well,
                // and registry changes are never interleaved within a group.
                tracing::error!(well = %id, "embedded store: staged readings of an unknown well");
                continue;
            };
            if let Some((t, m)) = points.last_key_value() {
                st.offer_latest(*t, m);
            }
            st.head.extend(points);
        }
        if staged.count > 0 {
            index.head_total += staged.count;
            index.oldest_head_at.get_or_insert_with(Instant::now);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Checkpoint
    //
    // A checkpoint has three steps, and only the first and the last run here, on the thread
    // that commits appends:
    // 1. *freeze* (write lock, no I/O): every well's head moves to `sealing`, shared with a
    //    checkpoint thread, and the highest log batch id so far is noted. New appends go to
    //    fresh heads; reads and duplicate checks see `sealing` and `head` together.
    // 2. *encode* (checkpoint thread, its own read-only connection): merge with the existing
    //    segments, encode (pco for closed windows), rollups, plus a bounded number of stale
    //    segments rewritten compact. The writer keeps committing appends meanwhile; it does
    //    not touch the segments table while a checkpoint is in flight.
    // 3. *install* (bounded steps, `install_step`, inside append commits or on their own):
    //    write the encoded rows, the last step also the sealed mark (the frozen id:
    //    `meta.log_sealed`); then, under the write lock, the segment metadata and empty
    //    `sealing`. After a crash at any point the log above the mark holds every unsealed
    //    reading, and recovery replays only that (segments written by earlier steps hold some
    //    of them again: merged away by reads and the next checkpoint).
    // 4. *delete the sealed log*, in bounded steps between and inside append commits (below).
    //    It used to be part of the install transaction: freeing a checkpoint's whole log
    //    (500 k readings) held every append for a few hundred ms.

    fn next_deadline(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            // Nothing wakes this thread when the checkpoint thread is done: look again soon.
            return Some(Instant::now() + CHECKPOINT_POLL);
        }
        let oldest = self.shared.read().oldest_head_at?;
        let due = oldest + self.opts.checkpoint_interval;
        Some(match self.checkpoint_retry_at {
            Some(retry) => due.max(retry),
            None => due,
        })
    }

    fn checkpoint_if_due(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let due = {
            let index = self.shared.read();
            index.head_total >= self.opts.checkpoint_readings
                || index
                    .oldest_head_at
                    .is_some_and(|t| t.elapsed() >= self.opts.checkpoint_interval)
        };
        if !due || self.checkpoint_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if self.start_checkpoint(Vec::new()).is_err() {
            // Logged already; data stays safe in the log. Back off instead of spinning.
            self.checkpoint_retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
        }
    }

    /// `fleet_dirty` changed: publish its size, and look again whether one can be built.
    fn fleet_dirty_changed(&mut self) {
        self.fleet_recheck = !self.fleet_dirty.is_empty();
        self.shared
            .fleet_windows_stale
            .store(self.fleet_dirty.len() as u64, Ordering::Relaxed);
    }

    /// While no checkpoint runs, builds the fleet rollups of out-of-date windows that can be
    /// built (no unsealed reading there) on the checkpoint thread, up to
    /// [`fleet_rollup::FLEET_PER_REBUILD`] at a time, without freezing anything: a bulk load
    /// (or the late readings of many windows) leaves more windows out of date than the
    /// checkpoints sealing it rebuild, and without this they stayed so until later
    /// checkpoints got to them, so fleet aggregates read those windows well by well. The rows
    /// are written by the install's last step like a checkpoint's; the sealed mark stays.
    fn rebuild_fleet_if_due(&mut self) {
        if self.in_flight.is_some()
            || !self.fleet_recheck
            || self.checkpoint_retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let window = self.shared.window;
        let fleet = {
            let index = self.shared.read();
            fleet_windows(
                &index,
                window,
                &self.fleet_dirty,
                fleet_rollup::FLEET_PER_REBUILD,
            )
        };
        // Nothing buildable: the checkpoint sealing those windows' readings looks again.
        self.fleet_recheck = false;
        if fleet.is_empty() {
            return;
        }
        let job = SealJob {
            window,
            wells: Vec::new(),
            fleet,
            fleet_only: true,
            hook: None,
        };
        if self
            .spawn_job(job, self.log_sealed, None, Vec::new())
            .is_err()
        {
            self.checkpoint_retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
        }
    }

    /// `Command::Checkpoint`: answered once everything committed before it is sealed.
    fn request_checkpoint(&mut self, reply: Reply<()>) {
        if self.in_flight.is_some() {
            // The running one froze before this request: another follows it.
            self.waiting.push(reply);
        } else {
            let _ = self.start_checkpoint(vec![reply]);
        }
    }

    /// Whether a checkpoint's segments are being written (steps still to come).
    fn installing(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.installing.is_some())
    }

    /// Takes the running checkpoint's encoded segments once its thread is done (never
    /// waits); they are then written in steps (`install_step`), inside append commits and
    /// between them.
    fn poll_checkpoint(&mut self) {
        let Some(flight) = &mut self.in_flight else {
            return;
        };
        if flight.installing.is_some() {
            return;
        }
        let result = match flight.result.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err(internal(
                "the checkpoint thread stopped without a result".into(),
            )),
        };
        match result {
            Ok(sealed) => {
                if let Some(thread) = flight.thread.take()
                    && thread.join().is_err()
                {
                    tracing::error!("embedded store: checkpoint thread panicked");
                }
                flight.installing = Some(Installing::new(sealed));
            }
            Err(e) => {
                if let Some(flight) = self.in_flight.take() {
                    let _ = self.finish_checkpoint(flight, Err(e));
                }
            }
        }
    }

    /// The running checkpoint's encoded segments (waiting for its thread when needed).
    fn encoded(flight: &mut InFlight) -> StoreResult<Installing> {
        match flight.installing.take() {
            Some(inst) => Ok(inst),
            None => flight
                .result
                .recv()
                .unwrap_or_else(|_| {
                    Err(internal(
                        "the checkpoint thread stopped without a result".into(),
                    ))
                })
                .map(Installing::new),
        }
    }

    /// Waits for the running checkpoint (and those queued behind it) and installs them.
    fn settle_checkpoints(&mut self) {
        while let Some(mut flight) = self.in_flight.take() {
            let result = Self::encoded(&mut flight);
            let _ = self.finish_checkpoint(flight, result);
        }
    }

    /// Seals everything committed so far and waits for it (close, delete, compact).
    fn checkpoint(&mut self) -> StoreResult<()> {
        self.settle_checkpoints();
        self.start_checkpoint(Vec::new())?;
        match self.in_flight.take() {
            None => Ok(()),
            Some(mut flight) => {
                let result = Self::encoded(&mut flight);
                let r = self.finish_checkpoint(flight, result);
                // Nothing can have been queued meanwhile (no command was handled).
                self.settle_checkpoints();
                r
            }
        }
    }

    /// Freezes the heads and starts the checkpoint thread on them; `replies` are answered
    /// when it is installed (or at once when there is nothing to seal, or on failure).
    ///
    /// A window the well's data has moved past is written compact (pco); the window still
    /// receiving data is written fast, since the next checkpoint rewrites it anyway. Closed
    /// windows still fast (the boundary fell between checkpoints) or in the version 1 format
    /// of an older release are rewritten compact too, at most [`COMPACT_PER_CHECKPOINT`]
    /// per checkpoint so an upgraded data directory is converted gradually
    /// (`espwatch store compact` converts everything at once).
    fn start_checkpoint(&mut self, replies: Vec<Reply<()>>) -> StoreResult<()> {
        debug_assert!(self.in_flight.is_none());
        let shared = self.shared.clone();
        let window = shared.window;
        let compacting = self.opts.compact_segments;
        // What to merge and what to recompact, decided under the read lock (queries go on);
        // only this thread mutates the index, so it still holds when the write lock is taken.
        let mut plans: HashMap<WellId, (Vec<i64>, Vec<i64>)> = HashMap::new();
        // Windows whose fleet rollup may be (re)built: out of date, or sealed into now.
        let mut fleet_candidates = self.fleet_dirty.clone();
        {
            let index = shared.read();
            if index.head_total == 0
                && !self.log_has_rows
                && fleet_windows(&index, window, &self.fleet_dirty, 1).is_empty()
            {
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
                return Ok(());
            }
            let mut budget = if compacting {
                COMPACT_PER_CHECKPOINT
            } else {
                0
            };
            for (id, st) in index.wells.iter().filter(|(_, s)| !s.head.is_empty()) {
                let latest = st.latest_ts().filter(|_| compacting);
                let mut merge = Vec::new();
                let mut cursor = i64::MIN;
                let mut sealing_windows = HashSet::new();
                while let Some((&first, _)) = st.head.range(cursor..).next() {
                    let ws = window_start(first, window);
                    sealing_windows.insert(ws);
                    fleet_candidates.insert(ws);
                    if st.segs.contains_key(&ws) {
                        merge.push(ws);
                    }
                    match ws.checked_add(window) {
                        Some(end) => cursor = end,
                        None => break,
                    }
                }
                let stale: Vec<i64> = if budget == 0 {
                    Vec::new()
                } else {
                    st.segs
                        .iter()
                        .filter(|(ws, m)| {
                            !m.compact
                                && !sealing_windows.contains(ws)
                                && packing(ws.checked_add(window), latest) == Packing::Compact
                        })
                        .map(|(ws, _)| *ws)
                        .take(budget)
                        .collect()
                };
                budget -= stale.len();
                plans.insert(id.clone(), (merge, stale));
            }
        }
        let mut wells = Vec::with_capacity(plans.len());
        let oldest_head_at;
        let fleet;
        {
            let mut index = shared.write();
            for (id, st) in index.wells.iter_mut() {
                let Some((merge, stale)) = plans.remove(id) else {
                    continue;
                };
                // The next head is sized like this one: a steady well then fills it without
                // reallocating.
                let next = Head::with_capacity(st.head.len());
                let frozen = Arc::new(std::mem::replace(&mut st.head, next));
                st.sealing = frozen.clone();
                wells.push(WellJob {
                    id: id.clone(),
                    points: frozen,
                    latest: st.latest_ts().filter(|_| compacting),
                    merge,
                    stale,
                });
            }
            index.sealing_total = index.head_total;
            index.head_total = 0;
            oldest_head_at = index.oldest_head_at.take();
            // Heads are empty now: what is unsealed, this checkpoint seals.
            fleet = fleet_windows(
                &index,
                window,
                &fleet_candidates,
                fleet_rollup::FLEET_PER_CHECKPOINT,
            );
        }
        let job = SealJob {
            window,
            wells,
            fleet,
            fleet_only: false,
            hook: self.opts.checkpoint_hook.clone(),
        };
        self.spawn_job(job, self.last_log_id, oldest_head_at, replies)
    }

    /// Starts the checkpoint thread on `job`; the install marks the log sealed up to
    /// `up_to_log_id`.
    fn spawn_job(
        &mut self,
        job: SealJob,
        up_to_log_id: i64,
        oldest_head_at: Option<Instant>,
        replies: Vec<Reply<()>>,
    ) -> StoreResult<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        let path = self.db_path.clone();
        let read_cache_mib = self.opts.read_cache_mib;
        let nice = self.opts.checkpoint_nice;
        let fleet_only = job.fleet_only;
        let spawned = std::thread::Builder::new()
            .name("espwatch-store-checkpoint".into())
            .spawn(move || {
                lower_thread_priority(nice);
                let result = schema::open_reader(&path).and_then(|conn| {
                    schema::set_cache_mib(&conn, read_cache_mib)?;
                    if let Some(hook) = &job.hook {
                        (hook.0)();
                    }
                    encode_checkpoint(&conn, &job)
                });
                let _ = tx.send(result);
            });
        let flight = InFlight {
            result: rx,
            thread: None,
            up_to_log_id,
            oldest_head_at,
            started: Instant::now(),
            replies,
            installing: None,
            fleet_only,
        };
        match spawned {
            Ok(handle) => {
                self.in_flight = Some(InFlight {
                    thread: Some(handle),
                    ..flight
                });
                Ok(())
            }
            Err(e) => {
                let err = internal(format!("starting the checkpoint thread: {e}"));
                let _ = self.finish_checkpoint(flight, Err(copy_err(&err)));
                Err(err)
            }
        }
    }

    /// Installs a finished checkpoint, what is left of it in steps of their own (or thaws
    /// its readings when it failed), answers its requests, and starts the one requested
    /// meanwhile.
    fn finish_checkpoint(
        &mut self,
        mut flight: InFlight,
        result: StoreResult<Installing>,
    ) -> StoreResult<()> {
        if let Some(thread) = flight.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("embedded store: checkpoint thread panicked");
        }
        let outcome = result.and_then(|inst| self.install_rest(inst, &flight));
        self.conclude(flight, outcome)
    }

    /// A checkpoint is installed (`Ok`) or given up: metrics, thaw on failure, its requests,
    /// and the checkpoint requested meanwhile.
    fn conclude(&mut self, mut flight: InFlight, outcome: StoreResult<()>) -> StoreResult<()> {
        if !flight.fleet_only {
            crate::metrics::record_checkpoint(
                "embedded",
                flight.started.elapsed(),
                outcome.is_ok(),
            );
        }
        match &outcome {
            Ok(()) => self.checkpoint_retry_at = None,
            Err(_) => {
                self.thaw(flight.oldest_head_at);
                self.checkpoint_retry_at = Some(Instant::now() + CHECKPOINT_RETRY);
            }
        }
        if outcome.is_ok() {
            // Answered once the log it sealed is deleted too (appends go on meanwhile).
            let floor = self.shared.ship_floor.load(Ordering::Acquire);
            for reply in flight.replies.drain(..) {
                self.trim_waiters.push((flight.up_to_log_id, floor, reply));
            }
            self.answer_trim_waiters(false);
        }
        for reply in flight.replies.drain(..) {
            let _ = reply.send(outcome.as_ref().map(|_| ()).map_err(copy_err));
        }
        if !self.waiting.is_empty() {
            let waiting = std::mem::take(&mut self.waiting);
            let _ = self.start_checkpoint(waiting);
        }
        outcome
    }

    /// Writes what is left of `inst` in steps of their own transactions, then publishes it.
    fn install_rest(&mut self, mut inst: Installing, flight: &InFlight) -> StoreResult<()> {
        loop {
            let tx = self
                .conn
                .transaction()
                .map_err(|e| sql_err("starting checkpoint", e))?;
            let step = install_step(&tx, &inst, flight.up_to_log_id, self.last_log_id)?;
            tx.commit()
                .map_err(|e| sql_err("committing checkpoint", e))?;
            if self.stepped(&mut inst, step, false) {
                break;
            }
        }
        self.publish(inst, flight);
        Ok(())
    }

    /// One install step in a transaction of its own (nothing was waiting).
    fn install_alone(&mut self) {
        let Some(flight) = &self.in_flight else {
            return;
        };
        let Some(inst) = &flight.installing else {
            return;
        };
        let (up_to, seq) = (flight.up_to_log_id, self.last_log_id);
        let step = self
            .conn
            .transaction()
            .map_err(|e| sql_err("starting checkpoint", e))
            .and_then(|tx| {
                let step = install_step(&tx, inst, up_to, seq)?;
                tx.commit()
                    .map_err(|e| sql_err("committing checkpoint", e))?;
                Ok(step)
            });
        match step {
            Ok(step) => self.install_stepped(step, false),
            Err(e) => self.install_failed(e),
        }
    }

    /// A committed install step (in an append's transaction or its own): the checkpoint is
    /// published and concluded after its last one.
    fn install_stepped(&mut self, step: Installed, with_appends: bool) {
        let Some(mut flight) = self.in_flight.take() else {
            return;
        };
        let Some(mut inst) = flight.installing.take() else {
            self.in_flight = Some(flight);
            return;
        };
        if self.stepped(&mut inst, step, with_appends) {
            self.publish(inst, &flight);
            let _ = self.conclude(flight, Ok(()));
        } else {
            flight.installing = Some(inst);
            self.in_flight = Some(flight);
        }
    }

    /// An install step failed (logged by `sql_err`): the checkpoint is given up and its
    /// readings thawed; the segments written by earlier steps hold only readings that are
    /// still in the log and in the heads, so they are harmless (reads and the next
    /// checkpoint merge them away), as after a crash between steps.
    fn install_failed(&mut self, e: StoreError) {
        if let Some(flight) = self.in_flight.take() {
            let _ = self.conclude(flight, Err(e));
        }
    }

    /// Notes a committed step; whether the checkpoint is now complete.
    fn stepped(&self, inst: &mut Installing, step: Installed, with_appends: bool) -> bool {
        inst.written = step.written;
        inst.steps += 1;
        if let Some(hook) = self
            .opts
            .install_hook
            .as_ref()
            .filter(|_| !inst.sealed.fleet_only)
        {
            (hook.0)(super::InstallStep {
                segments: step.segments,
                written: step.written,
                total: inst.sealed.segments.len(),
                sealed_mark: step.complete,
                with_appends,
            });
        }
        step.complete
    }

    /// After the last install step: publishes the segments and empties `sealing`. The sealed
    /// batches are deleted afterwards, a bounded step at a time (`trim_step`).
    fn publish(&mut self, inst: Installing, flight: &InFlight) {
        let shared = self.shared.clone();
        let sealed = inst.sealed;
        self.log_sealed = self.log_sealed.max(flight.up_to_log_id);
        for ws in &sealed.fleet_tried {
            self.fleet_dirty.remove(ws);
        }
        // A window rebuilt by this checkpoint was only recompacted (same readings).
        for seg in &sealed.segments {
            if !sealed.fleet_tried.contains(&seg.ws) {
                self.fleet_dirty.insert(seg.ws);
            }
        }
        self.fleet_dirty_changed();
        let mut index = shared.write();
        for seg in &sealed.segments {
            // A regular segment's grid costs the cache next to nothing: re-sent data is then
            // checked without reading the segment back. A listed one is decoded when needed.
            match &seg.times {
                SegTimes::Grid { .. } => self.cache.insert(&seg.well, seg.ws, seg.times.clone()),
                SegTimes::Listed(_) => self.cache.invalidate(&seg.well, seg.ws),
            }
            if let Some(st) = index.wells.get_mut(&seg.well)
                && st.segs.insert(seg.ws, seg.meta).is_none()
            {
                index.segments += 1;
            }
        }
        let mut sealed_maps = Vec::new();
        for st in index.wells.values_mut() {
            if !st.sealing.is_empty() {
                sealed_maps.push(std::mem::take(&mut st.sealing));
            }
        }
        index.sealing_total = 0;
        drop(index);
        // Freeing the frozen heads is not the writer's business either.
        if !sealed_maps.is_empty() {
            let nice = self.opts.checkpoint_nice;
            let _ = std::thread::Builder::new()
                .name("espwatch-store-free".into())
                .spawn(move || {
                    lower_thread_priority(nice);
                    let started = Instant::now();
                    drop(sealed_maps);
                    let dropped = Instant::now();
                    release_freed_memory();
                    tracing::debug!(
                        drop_ms = ms(dropped.duration_since(started)),
                        trim_ms = ms(dropped.elapsed()),
                        "embedded store: frozen heads freed"
                    );
                });
        }
        self.log_has_rows = self.last_log_id > flight.up_to_log_id;
        if sealed.fleet_only {
            tracing::debug!(
                built = sealed.fleet_rows.len(),
                tried = sealed.fleet_tried.len(),
                stale = self.fleet_dirty.len(),
                ms = flight.started.elapsed().as_secs_f64() * 1e3,
                "embedded store: fleet rollups rebuilt"
            );
            return;
        }
        shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            sealed = sealed.sealed,
            recompacted = sealed.recompacted,
            segments = sealed.segments.len(),
            ms = flight.started.elapsed().as_secs_f64() * 1e3,
            encode_ms = ms(sealed.encoded_in),
            encode_cpu_ms = sealed.encode_cpu.map(ms),
            install_steps = inst.steps,
            install_ms = ms(inst.began.elapsed()),
            "embedded store: checkpoint"
        );
    }

    /// A failed checkpoint: its frozen readings become head readings again (they are still
    /// in the log), to be sealed by a later one.
    fn thaw(&mut self, oldest_head_at: Option<Instant>) {
        let mut index = self.shared.write();
        let mut thawed = 0;
        for st in index.wells.values_mut() {
            if st.sealing.is_empty() {
                continue;
            }
            let frozen = std::mem::take(&mut st.sealing);
            let mut frozen = Arc::try_unwrap(frozen).unwrap_or_else(|shared| (*shared).clone());
            thawed += frozen.len();
            frozen.append(&mut st.head);
            st.head = frozen;
        }
        index.head_total += thawed;
        index.sealing_total = 0;
        index.oldest_head_at = match (oldest_head_at, index.oldest_head_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    // -----------------------------------------------------------------------------------------
    // Deleting the sealed log
    //
    // After an install, the log batches up to `log_sealed` are in segments and never replayed,
    // but still in `log_batches`. They are deleted in steps of at most `TRIM_BATCHES` batches
    // or `TRIM_BYTES`: one step inside every append commit (no fsync of its own) and, while no
    // command waits, steps in transactions of their own. Each step also moves what the
    // shipper has not shipped to `ship_log` and drops shipped `ship_log` rows (bounded too).

    /// Where the next step starts, when one is due.
    fn trim_from(&self) -> Option<TrimFrom> {
        if self.trim_retry_at.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let floor = self.shared.ship_floor.load(Ordering::Acquire);
        (self.log_deleted < self.log_sealed || floor > self.ship_trimmed).then_some(TrimFrom {
            sealed: self.log_sealed,
            deleted: self.log_deleted,
            floor,
            ship_trimmed: self.ship_trimmed,
        })
    }

    /// One step in a transaction of its own (nothing was waiting).
    fn trim_alone(&mut self) {
        if let Err(_logged) = self.trim_in_own_transaction() {
            self.trim_failed();
        }
    }

    /// A step failed (logged): retried later. The readings are sealed all the same, so the
    /// checkpoints waiting for the deletion are answered.
    fn trim_failed(&mut self) {
        self.trim_retry_at = Some(Instant::now() + TRIM_RETRY);
        self.answer_trim_waiters(true);
    }

    /// Answers the checkpoint requests whose sealed log is deleted (all of them: `all`).
    fn answer_trim_waiters(&mut self, all: bool) {
        if self.trim_waiters.is_empty() {
            return;
        }
        let (deleted, shipped) = (self.log_deleted, self.ship_trimmed);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.trim_waiters)
            .into_iter()
            .partition(|(log, floor, _)| all || (deleted >= *log && shipped >= *floor));
        self.trim_waiters = waiting;
        for (_, _, reply) in done {
            let _ = reply.send(Ok(()));
        }
    }

    fn trim_in_own_transaction(&mut self) -> StoreResult<bool> {
        let Some(from) = self.trim_from() else {
            return Ok(false);
        };
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sql_err("starting a log deletion step", e))?;
        let t = trim_step(&tx, from)?;
        tx.commit()
            .map_err(|e| sql_err("committing a log deletion step", e))?;
        self.trimmed(t, false);
        Ok(true)
    }

    /// Deletes the rest of the sealed log (closing, compacting), step by step.
    fn finish_trim(&mut self) -> StoreResult<()> {
        self.trim_retry_at = None;
        while self.trim_in_own_transaction()? {}
        self.answer_trim_waiters(true);
        Ok(())
    }

    fn trimmed(&mut self, t: Trimmed, with_appends: bool) {
        self.log_deleted = t.deleted;
        self.ship_trimmed = t.ship_trimmed;
        self.trim_retry_at = None;
        if let Some(hook) = &self.opts.log_trim_hook {
            (hook.0)(super::LogTrimStep {
                sealed: self.log_sealed,
                deleted_through: t.deleted,
                newest: self.last_log_id,
                batches: t.batches,
                with_appends,
            });
        }
        self.answer_trim_waiters(false);
    }

    /// The writer stops without a checkpoint (every handle dropped): a running one is
    /// waited for and discarded; the log still holds its readings.
    fn abandon_checkpoint(&mut self) {
        if let Some(mut flight) = self.in_flight.take()
            && let Some(thread) = flight.thread.take()
        {
            let _ = thread.join();
        }
    }

    /// Builds every fleet rollup that is missing or out of date (`store compact`), a day of
    /// windows per transaction.
    fn rebuild_fleet(&mut self) -> StoreResult<()> {
        let window = self.shared.window;
        let shared = self.shared.clone();
        let stale: Vec<i64> = {
            let index = shared.read();
            fleet_rollup::stale_windows(&self.conn, &index, window)?
                .into_iter()
                .collect()
        };
        for chunk in stale.chunks(fleet_rollup::FLEET_PER_CHECKPOINT) {
            let jobs: Vec<(i64, Vec<WellId>)> = {
                let index = shared.read();
                chunk
                    .iter()
                    .filter_map(|&ws| {
                        let end = ws.saturating_add(window);
                        fleet_wells(&index, ws, end).map(|w| (ws, w))
                    })
                    .collect()
            };
            let tx = self
                .conn
                .transaction()
                .map_err(|e| sql_err("starting a fleet rollup rebuild", e))?;
            for (ws, wells) in &jobs {
                if let Some(row) = fleet_rollup::build(&tx, *ws, wells, |_| None)? {
                    fleet_rollup::write(&tx, &row)?;
                }
            }
            tx.commit()
                .map_err(|e| sql_err("committing a fleet rollup rebuild", e))?;
        }
        self.fleet_dirty.clear();
        self.fleet_dirty_changed();
        Ok(())
    }

    /// Seals everything, then rewrites every segment not yet compact (old format, or a
    /// window still open) compact, a few hundred per transaction so readers and the WAL stay
    /// small; finally `VACUUM` returns the freed pages to the file system.
    fn compact(&mut self) -> StoreResult<CompactReport> {
        self.checkpoint()?;
        self.finish_trim()?;
        let shared = self.shared.clone();
        let pending: Vec<(WellId, i64)> = {
            let index = shared.read();
            let mut v: Vec<(WellId, i64)> = index
                .wells
                .iter()
                .flat_map(|(id, st)| {
                    st.segs
                        .iter()
                        .filter(|(_, m)| !m.compact)
                        .map(move |(ws, _)| (id.clone(), *ws))
                })
                .collect();
            v.sort();
            v
        };
        // Compact segments written before rollups existed get theirs too, and segments
        // written before checksums (`segments.checksum` NULL) theirs: rewritten, i.e. decoded
        // (a damaged one fails the compaction, as before) and encoded again.
        let mut pending = pending;
        list_windows(
            &self.conn,
            "SELECT well_id, window_start FROM segments WHERE checksum IS NULL",
            "listing segments without checksums",
            &mut pending,
        )?;
        if shared.window % rollup::HOUR == 0 {
            list_windows(
                &self.conn,
                "SELECT s.well_id, s.window_start FROM segments s
                 WHERE NOT EXISTS (SELECT 1 FROM rollups r
                                   WHERE r.well_id = s.well_id
                                     AND r.window_start = s.window_start)",
                "listing segments without rollups",
                &mut pending,
            )?;
        }
        let mut report = CompactReport {
            bytes_before: self.database_bytes()?,
            ..CompactReport::default()
        };
        for chunk in pending.chunks(256) {
            let mut written = Vec::with_capacity(chunk.len());
            let tx = self
                .conn
                .transaction()
                .map_err(|e| sql_err("starting compaction", e))?;
            for (id, ws) in chunk {
                let points = load_segment(&tx, id, *ws)?;
                if let Some(meta) =
                    write_segment(&tx, id, (*ws, shared.window), &points, Packing::Compact)?
                {
                    written.push((id.clone(), *ws, meta));
                }
            }
            tx.commit()
                .map_err(|e| sql_err("committing compaction", e))?;
            let mut index = shared.write();
            for (id, ws, meta) in written {
                self.cache.invalidate(&id, ws);
                if let Some(st) = index.wells.get_mut(&id) {
                    st.segs.insert(ws, meta);
                }
                report.segments_rewritten += 1;
            }
        }
        self.rebuild_fleet()?;
        // In WAL mode the vacuumed database is written to the WAL first: checkpoint it into
        // the file and truncate the WAL, or the disk holds both copies.
        self.conn
            .execute_batch(
                "PRAGMA auto_vacuum=INCREMENTAL; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .map_err(|e| sql_err("vacuuming the database", e))?;
        report.bytes_after = self.database_bytes()?;
        Ok(report)
    }

    /// Gives the database's free pages (mostly the log's, emptied by the last checkpoint)
    /// back to the file system. A no-op on databases created without incremental
    /// auto-vacuum (before this release, until `store compact`).
    fn release_free_pages(&self) -> StoreResult<()> {
        let err = |e| sql_err("releasing free pages", e);
        let mut stmt = self
            .conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(err)?;
        // The pragma frees one page per step (each a result row): step to the end.
        let mut rows = stmt.query([]).map_err(err)?;
        while rows.next().map_err(err)?.is_some() {}
        Ok(())
    }

    /// Size of the database file and its WAL.
    fn database_bytes(&self) -> StoreResult<u64> {
        let path = self
            .conn
            .path()
            .map(std::path::PathBuf::from)
            .ok_or_else(|| internal("the database has no file".into()))?;
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }

    // -----------------------------------------------------------------------------------------
    // Registry

    fn write_well(&self, id: &WellId, rec: &WellRecord) -> StoreResult<()> {
        let json = serde_json::to_string(&rec.meta)
            .map_err(|e| internal(format!("encoding well metadata: {e}")))?;
        // One statement outside an explicit transaction is its own durable commit.
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO wells(well_id, meta, created_at, updated_at, auto_registered)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.as_str(),
                    json,
                    rec.created_at.0,
                    rec.updated_at.0,
                    i64::from(rec.auto_registered)
                ])
            })
            .map_err(|e| sql_err("writing well", e))?;
        Ok(())
    }

    fn set_record(&self, id: WellId, rec: WellRecord) {
        let mut index = self.shared.write();
        match index.wells.get_mut(&id) {
            Some(st) => st.record = rec,
            None => {
                index.wells.insert(id, WellState::new(rec));
            }
        }
    }

    fn create_well(&mut self, id: WellId, meta: WellMeta) -> StoreResult<WellRecord> {
        let now = Timestamp(now_micros());
        let existing = self.shared.read().wells.get(&id).map(|s| s.record.clone());
        let rec = match existing {
            Some(r) if !r.auto_registered => {
                return Err(StoreError::Conflict(format!("well {id}")));
            }
            // Auto-registration only held a placeholder: the real metadata replaces it.
            Some(r) => WellRecord {
                meta,
                created_at: r.created_at,
                updated_at: now,
                auto_registered: false,
            },
            None => WellRecord {
                meta,
                created_at: now,
                updated_at: now,
                auto_registered: false,
            },
        };
        self.write_well(&id, &rec)?;
        self.set_record(id, rec.clone());
        Ok(rec)
    }

    fn update_well(&mut self, id: WellId, meta: WellMeta) -> StoreResult<Option<WellRecord>> {
        let existing = self.shared.read().wells.get(&id).map(|s| s.record.clone());
        let Some(old) = existing else {
            return Ok(None);
        };
        let rec = WellRecord {
            meta,
            created_at: old.created_at,
            updated_at: Timestamp(now_micros().max(old.created_at.0)),
            auto_registered: false,
        };
        self.write_well(&id, &rec)?;
        self.set_record(id, rec.clone());
        Ok(Some(rec))
    }

    /// Retention's delete: seals the well's unsealed readings of the range first (late data
    /// counts like any other), then `retention::delete_sealed`.
    fn delete_raw(&mut self, id: &WellId, range: (i64, i64), expected: u64) -> StoreResult<u64> {
        // A running checkpoint may be about to write this well's segments.
        self.settle_checkpoints();
        let head_in_range = self
            .shared
            .read()
            .wells
            .get(id)
            .is_some_and(|st| st.head.range(range.0..range.1).next().is_some());
        if head_in_range {
            self.checkpoint()?;
        }
        let (windows, deleted) =
            super::retention::delete_sealed(&mut self.conn, &self.shared, id, range, expected)?;
        for ws in windows {
            self.cache.invalidate(id, ws);
        }
        Ok(deleted)
    }

    fn delete_well(&mut self, id: &WellId) -> StoreResult<bool> {
        // A running checkpoint may be about to write this well's segments.
        self.settle_checkpoints();
        let has_head = match self.shared.read().wells.get(id) {
            None => return Ok(false),
            Some(st) => !st.head.is_empty(),
        };
        // Log batches mix wells, so the well's unsealed readings cannot be cut out of them;
        // sealing first empties the log, after which its segments are all there is.
        if has_head {
            self.checkpoint()?;
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sql_err("starting delete", e))?;
        tx.execute("DELETE FROM segments WHERE well_id = ?1", [id.as_str()])
            .map_err(|e| sql_err("deleting segments", e))?;
        // Its windows' fleet rollups sum its readings too.
        tx.execute(
            "DELETE FROM fleet_rollups WHERE window_start IN
                 (SELECT window_start FROM rollups WHERE well_id = ?1
                  UNION SELECT window_start FROM segments WHERE well_id = ?1)",
            [id.as_str()],
        )
        .map_err(|e| sql_err("deleting fleet rollups", e))?;
        tx.execute("DELETE FROM rollups WHERE well_id = ?1", [id.as_str()])
            .map_err(|e| sql_err("deleting rollups", e))?;
        tx.execute("DELETE FROM wells WHERE well_id = ?1", [id.as_str()])
            .map_err(|e| sql_err("deleting well", e))?;
        tx.commit().map_err(|e| sql_err("committing delete", e))?;
        self.cache.invalidate_well(id);
        let mut index = self.shared.write();
        if let Some(st) = index.wells.remove(id) {
            self.fleet_dirty
                .extend(st.segs.keys().chain(st.rolled.keys()).copied());
            index.segments = index.segments.saturating_sub(st.segs.len() as u64);
            index.head_total = index.head_total.saturating_sub(st.head.len());
        }
        drop(index);
        self.fleet_dirty_changed();
        Ok(true)
    }
}

/// One bounded step of deleting the sealed log, inside the caller's transaction: the oldest
/// sealed batches still there (at most [`TRIM_BATCHES`], up to about [`TRIM_BYTES`]), those
/// the shipper has not shipped moved to `ship_log` first; and at most [`TRIM_SHIPPED`]
/// `ship_log` rows the shipper has shipped. A batch leaves `log_batches` in the same
/// transaction that puts it in `ship_log`, so the shipper (`log_since`, one snapshot of both)
/// sees it exactly once.
/// Writes the next segments of `inst` (at most [`INSTALL_SEGMENTS`], stopping after the one
/// that reaches [`INSTALL_BYTES`]); the step that writes the last one also marks the log
/// sealed up to `up_to` (`meta.log_sealed`: from its commit on, those batches are never
/// replayed) and notes `seq`, the newest log batch id. Segments written before that step
/// only hold readings that are also in the heads and in the log above the mark: readers
/// merge them with the heads (`merge_dedup`), a crash replays that log into heads the same
/// way, and a rollup written early does not match the reading count the index still has.
fn install_step(
    conn: &Connection,
    inst: &Installing,
    up_to: i64,
    seq: i64,
) -> StoreResult<Installed> {
    let segments = &inst.sealed.segments;
    let mut end = inst.written;
    let mut bytes = 0usize;
    while end < segments.len() && end - inst.written < INSTALL_SEGMENTS && bytes < INSTALL_BYTES {
        let seg = &segments[end];
        insert_segment(conn, seg)?;
        bytes += seg.data.len() + seg.rollup.as_ref().map_or(0, Vec::len);
        end += 1;
    }
    let complete = end == segments.len();
    if complete {
        for row in &inst.sealed.fleet_rows {
            fleet_rollup::write(conn, row)?;
        }
        schema::set_meta(conn, schema::LOG_SEALED, &up_to.to_string())?;
        schema::set_meta(conn, "log_seq", &seq.to_string())?;
    }
    Ok(Installed {
        written: end,
        segments: end - inst.written,
        complete,
    })
}

fn trim_step(conn: &Connection, from: TrimFrom) -> StoreResult<Trimmed> {
    let err = |e| sql_err("deleting the sealed log", e);
    let mut out = Trimmed {
        deleted: from.deleted,
        ship_trimmed: from.ship_trimmed,
        batches: 0,
    };
    if from.deleted < from.sealed {
        let mut through = None;
        let mut rows = 0usize;
        let mut bytes = 0i64;
        {
            // `length` of a blob reads its size from the record header, not its pages.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, length(data) FROM log_batches WHERE id > ?1 AND id <= ?2
                     ORDER BY id LIMIT ?3",
                )
                .map_err(err)?;
            let mut q = stmt
                .query(params![from.deleted, from.sealed, TRIM_BATCHES as i64])
                .map_err(err)?;
            while let Some(row) = q.next().map_err(err)? {
                through = Some(row.get::<_, i64>(0).map_err(err)?);
                bytes += row.get::<_, i64>(1).map_err(err)?;
                rows += 1;
                if bytes >= TRIM_BYTES {
                    break;
                }
            }
        }
        // Fewer rows than asked for and within the bytes: nothing sealed is left beyond them.
        let last = match through {
            Some(id) if rows == TRIM_BATCHES || bytes >= TRIM_BYTES => id,
            _ => from.sealed,
        };
        if from.floor < last {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO ship_log(id, data, committed_at)
                 SELECT id, data, committed_at FROM log_batches WHERE id > ?1 AND id <= ?2",
            )
            .and_then(|mut s| s.execute([from.floor.max(from.deleted), last]))
            .map_err(|e| sql_err("keeping the unshipped log", e))?;
        }
        out.batches = conn
            .prepare_cached("DELETE FROM log_batches WHERE id > ?1 AND id <= ?2")
            .and_then(|mut s| s.execute([from.deleted, last]))
            .map_err(err)? as u64;
        out.deleted = last;
    }
    if from.floor > from.ship_trimmed {
        let n = conn
            .prepare_cached(
                "DELETE FROM ship_log WHERE id IN
                     (SELECT id FROM ship_log WHERE id <= ?1 ORDER BY id LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![from.floor, TRIM_SHIPPED as i64]))
            .map_err(|e| sql_err("trimming ship_log", e))?;
        if n < TRIM_SHIPPED {
            out.ship_trimmed = from.floor;
        }
    }
    Ok(out)
}

/// Copies the WAL into the database file on a thread of its own (SQLite's checkpoint, not
/// ours). SQLite's automatic one runs inside the commit that crosses its threshold: that
/// commit's appends (and every append queued behind them) waited for a WAL's worth of pages
/// written to the database file and its fsync. This thread runs a `PASSIVE` checkpoint every
/// [`WAL_CHECKPOINT_EVERY`] on its own connection, which never blocks the writer (WAL
/// checkpoints and commits take different locks); the writer's automatic checkpoint stays as
/// a backstop at a far higher threshold (`schema::open_writer`). Durability is the WAL's
/// (each commit is fsync'd there): a crash at any point of a checkpoint loses nothing.
struct WalCheckpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How often the WAL is copied into the database file.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

impl WalCheckpointer {
    /// Starts the thread; without one (no connection or no thread) the writer's automatic
    /// checkpoint does the work, as before.
    fn start(path: &std::path::Path) -> WalCheckpointer {
        let conn = match schema::open_checkpointer(path) {
            Ok(c) => c,
            Err(_logged) => {
                return WalCheckpointer {
                    stop: None,
                    thread: None,
                };
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("espwatch-store-wal".into())
            .spawn(move || {
                let mut failing = false;
                while let Err(RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(WAL_CHECKPOINT_EVERY)
                {
                    let started = Instant::now();
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match r {
                        Ok((frames, copied)) => {
                            failing = false;
                            if copied > 0 {
                                tracing::trace!(
                                    frames,
                                    copied,
                                    ms = started.elapsed().as_secs_f64() * 1e3,
                                    "embedded store: WAL checkpoint"
                                );
                            }
                        }
                        // Once per failing stretch; the writer's automatic checkpoint remains.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "embedded store: WAL checkpoint failed");
                        }
                        Err(_) => {}
                    }
                }
            });
        match thread {
            Ok(handle) => WalCheckpointer {
                stop: Some(stop),
                thread: Some(handle),
            },
            Err(e) => {
                tracing::warn!(error = %e, "embedded store: no WAL checkpoint thread");
                WalCheckpointer {
                    stop: None,
                    thread: None,
                }
            }
        }
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn command_readings(c: &Command) -> usize {
    match c {
        Command::Append { readings, .. } => readings.len(),
        _ => 1,
    }
}

/// Segments of closed windows rewritten compact per checkpoint, beyond the ones it seals
/// (each costs ~1 ms): an upgraded data directory converts gradually.
const COMPACT_PER_CHECKPOINT: usize = 500;

/// Compact once the well's data has moved past the window's end; fast while it may still
/// receive in-order data (and be rewritten at the next checkpoint).
fn packing(window_end: Option<i64>, latest: Option<i64>) -> Packing {
    match (window_end, latest) {
        (Some(end), Some(latest)) if latest >= end => Packing::Compact,
        _ => Packing::Fast,
    }
}

/// Decoded points of a stored segment.
fn load_segment(conn: &Connection, well: &WellId, ws: i64) -> StoreResult<Vec<Point>> {
    let data = load_segment_blob(conn, well, ws)?;
    codec::decode_segment(&data)
        .map_err(|e| internal(format!("segment ({well}, {ws}) is corrupt: {e}")))
}

/// Encodes the segment (and rollup) row of `points` (ascending, deduplicated); `None` when
/// there are none.
fn encode_segment(
    well: &WellId,
    (ws, window): (i64, i64),
    points: &[Point],
    packing: Packing,
) -> Option<EncodedSegment> {
    let (Some(min), Some(max)) = (points.first(), points.last()) else {
        return None;
    };
    let meta = SegMeta {
        min_ts: min.0.0,
        max_ts: max.0.0,
        count: points.len() as i64,
        compact: packing == Packing::Compact,
    };
    let data = codec::encode_segment(points, packing);
    Some(EncodedSegment {
        well: well.clone(),
        ws,
        checksum: codec::segment_checksum(&data, meta.count, meta.min_ts, meta.max_ts),
        meta,
        data,
        times: SegTimes::of(points.iter().map(|p| p.0.0)),
        // Hourly rollups need windows of whole hours (the default 4 h); queries check for them.
        rollup: (window % rollup::HOUR == 0).then(|| rollup::encode(points)),
    })
}

/// Writes (or replaces) an encoded segment and its rollup.
fn insert_segment(conn: &Connection, seg: &EncodedSegment) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO segments(well_id, window_start, min_ts, max_ts, count, data,
                                         checksum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            seg.well.as_str(),
            seg.ws,
            seg.meta.min_ts,
            seg.meta.max_ts,
            seg.meta.count,
            seg.data,
            seg.checksum
        ])
    })
    .map_err(|e| sql_err("writing segment", e))?;
    if let Some(rollup) = &seg.rollup {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO rollups(well_id, window_start, data) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![seg.well.as_str(), seg.ws, rollup]))
        .map_err(|e| sql_err("writing rollup", e))?;
    }
    // The window's fleet rollup no longer sums what is stored.
    fleet_rollup::invalidate(conn, seg.ws)?;
    Ok(())
}

/// Writes (or replaces) the segment of `points` (ascending, deduplicated); `None` when there
/// are none.
fn write_segment(
    conn: &Connection,
    well: &WellId,
    (ws, window): (i64, i64),
    points: &[Point],
    packing: Packing,
) -> StoreResult<Option<SegMeta>> {
    let Some(seg) = encode_segment(well, (ws, window), points, packing) else {
        return Ok(None);
    };
    insert_segment(conn, &seg)?;
    Ok(Some(seg.meta))
}

/// Raises the calling thread's nice value by `by` (at most to 19): background work of the
/// store (encoding a checkpoint, freeing its heads) then yields the CPU to the writer and to
/// request handling when cores are scarce, and still runs on whatever they leave. Linux
/// threads have a nice value of their own (`setpriority` on the thread id); elsewhere this
/// does nothing. Failing is harmless (logged at debug).
fn lower_thread_priority(by: i32) {
    #[cfg(target_os = "linux")]
    if by > 0 {
        // SAFETY: gettid has no preconditions; getpriority/setpriority only read and change
        // the scheduling priority of this thread.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            let target = (now + by).min(19);
            if libc::setpriority(libc::PRIO_PROCESS, tid, target) != 0 {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "embedded store: could not lower a background thread's priority"
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = by;
}

/// Hands the pages freed since the last checkpoint back to the OS. Issue 17 (soak memory):
/// glibc keeps what a program frees in its arenas (one per thread that allocated, up to 8 per
/// core) and only gives back the top of each heap, so every checkpoint's freed heads and
/// encoded segments stayed in the RSS; `malloc_trim(0)` releases the free pages inside the
/// heaps too (figures in README "Reliability", long runs). Runs on the thread that freed the
/// heads, after the checkpoint, off the writer.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists (under its locks).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The checkpoint thread's work: every frozen head merged with the segments it falls into
/// and encoded, plus the stale segments rewritten compact. Reads only; the writer installs.
fn encode_checkpoint(conn: &Connection, job: &SealJob) -> StoreResult<Sealed> {
    let window = job.window;
    let started = Instant::now();
    let mut out = Sealed {
        segments: Vec::new(),
        fleet_rows: Vec::new(),
        fleet_tried: Vec::new(),
        fleet_only: job.fleet_only,
        sealed: 0,
        recompacted: 0,
        encoded_in: Duration::ZERO,
        encode_cpu: None,
    };
    for well in &job.wells {
        let mut cursor = i64::MIN;
        while let Some((&first, _)) = well.points.range(cursor..).next() {
            let ws = window_start(first, window);
            let end = ws.checked_add(window);
            let mut points: Vec<Point> = match end {
                Some(end) => well.points.range(ws..end),
                None => well.points.range(ws..),
            }
            .map(|(t, m)| (Timestamp(*t), *m))
            .collect();
            out.sealed += points.len();
            if well.merge.contains(&ws) {
                points = merge_dedup(load_segment(conn, &well.id, ws)?, points);
            }
            out.segments.extend(encode_segment(
                &well.id,
                (ws, window),
                &points,
                packing(end, well.latest),
            ));
            match end {
                Some(end) => cursor = end,
                None => break,
            }
        }
        for &ws in &well.stale {
            let points = load_segment(conn, &well.id, ws)?;
            if let Some(seg) = encode_segment(&well.id, (ws, window), &points, Packing::Compact) {
                out.segments.push(seg);
                out.recompacted += 1;
            }
        }
    }
    if !job.fleet.is_empty() {
        // This checkpoint's rollups, the database's for the other wells.
        let fresh: HashMap<(&WellId, i64), &[u8]> = out
            .segments
            .iter()
            .filter_map(|seg| Some(((&seg.well, seg.ws), seg.rollup.as_deref()?)))
            .collect();
        let mut rows = Vec::new();
        for (ws, wells) in &job.fleet {
            rows.extend(fleet_rollup::build(conn, *ws, wells, |w| {
                fresh.get(&(w, *ws)).copied()
            })?);
            out.fleet_tried.push(*ws);
        }
        out.fleet_rows = rows;
    }
    out.encoded_in = started.elapsed();
    out.encode_cpu = thread_cpu_time();
    Ok(out)
}

/// CPU time of the calling thread so far (Linux), for the checkpoint's debug line.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Adds the (well, window) pairs a query lists to `pending`, kept sorted without repeats (ids
/// that no longer parse are skipped).
fn list_windows(
    conn: &Connection,
    sql: &str,
    what: &str,
    pending: &mut Vec<(WellId, i64)>,
) -> Result<(), StoreError> {
    let err = |e| sql_err(what, e);
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(err)?;
    for row in rows {
        let (id, ws) = row.map_err(err)?;
        if let Ok(id) = WellId::parse(&id) {
            pending.push((id, ws));
        }
    }
    pending.sort();
    pending.dedup();
    Ok(())
}

#[cfg(test)]
mod seg_times_tests {
    use super::*;

    #[test]
    fn regular_timestamps_are_a_grid_and_others_a_list() {
        let grid = SegTimes::of([100, 110, 120, 130].into_iter());
        assert_eq!(
            grid,
            SegTimes::Grid {
                first: 100,
                stride: 10,
                last: 130
            }
        );
        for (ts, inside) in [
            (90, false),
            (100, true),
            (115, false),
            (120, true),
            (130, true),
        ] {
            assert_eq!(grid.contains(ts), inside, "{ts}");
        }
        assert!(!grid.contains(140));
        let one = SegTimes::of([5].into_iter());
        assert!(one.contains(5) && !one.contains(6) && !one.contains(4));
        let listed = SegTimes::of([100, 110, 130].into_iter());
        assert!(matches!(listed, SegTimes::Listed(_)));
        assert!(listed.contains(130) && !listed.contains(120));
        assert!(!SegTimes::of(std::iter::empty()).contains(0));
    }

    #[test]
    fn the_cache_stays_within_its_bounds_keeping_the_recent_entries() {
        let mut cache = TsCache::new(100, 1_000);
        let well = WellId::parse("C-1").unwrap();
        for ws in 0..1_000 {
            cache.insert(&well, ws, SegTimes::of([ws, ws + 1].into_iter()));
            assert!(cache.entries.len() <= 100);
        }
        assert!(cache.entries.contains_key(&(well.clone(), 999)));
        for ws in 0..100 {
            let list: Vec<i64> = (0..30).map(|k| ws * 1000 + k * k).collect();
            cache.insert(&well, 10_000 + ws, SegTimes::of(list.into_iter()));
            assert!(cache.weight <= 1_000);
            let held: usize = cache.entries.values().map(|(_, t)| t.weight()).sum();
            assert_eq!(held, cache.weight);
        }
        assert!(cache.entries.contains_key(&(well.clone(), 10_099)));
        cache.invalidate_well(&well);
        assert_eq!((cache.entries.len(), cache.weight), (0, 0));
    }
}
