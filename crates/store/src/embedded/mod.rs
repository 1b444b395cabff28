//! The embedded engine: SQLite underneath, no server needed.
//!
//! Layout of the work:
//! - [`writer`]: one thread owns the write connection; appends are group-committed into a
//!   durable log of binary batches, and checkpoints seal them into columnar per-window
//!   segments.
//! - [`index`]: in-memory state (registry, unsealed "heads", segment bounds, newest reading
//!   per well) so duplicate checks, `latest` and the registry never wait on disk.
//! - [`codec`]: the log-batch and segment encodings.
//! - [`schema`]: tables and connection setup.
//! - [`security`]: [`EmbeddedSecurityStore`] on `security.sqlite`, outside the directory lock.
//!
//! Reads go through a small pool of read-only connections on blocking threads; the async
//! runtime never waits on SQLite.

mod alarms;
pub mod backup;
pub mod check;
mod codec;
/// The log batch encoding, shared with the outage spool (`crate::spool`).
pub(crate) use codec::{decode_log_batch, encode_log_batch};
mod files;
mod fleet;
mod fleet_rollup;
pub mod incremental;
mod index;
mod notify;
#[cfg(test)]
mod query_tests;
mod retention;
mod rollup;
mod schema;
mod security;
#[cfg(test)]
mod upgrade_tests;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use espwatch_core::{
    Point, Reading, Series, TelemetryQuery, TimeRange, Timestamp, WellId, WellMeta,
};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use self::index::{merge_dedup, window_start};
use self::schema::sql_fail;
pub use self::security::{
    EmbeddedSecurityStore, SECURITY_FILE, read_user_accounts, rename_user_accounts,
};
pub use self::writer::CompactReport;
use self::writer::{Command, Reply, Shared, Writer, WriterOptions};
use crate::{
    AppendOptions, AppendOutcome, LatestReading, ProbeResult, Store, StoreError, StoreHealth,
    StoreResult, StoreStats, WellRecord,
};

/// How the fleet tier answered (`EmbeddedStore::fleet_tier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetTierStats {
    /// Whole windows of fleet aggregates of every well read from their fleet rollup row.
    pub windows_from_rows: u64,
    /// Whole windows of such aggregates read well by well (no valid row).
    pub windows_well_by_well: u64,
    /// Windows whose row is missing or out of date now (built in the background).
    pub stale_windows: u64,
}

/// Tuning of the embedded engine. The defaults suit production; tests shrink them to force
/// checkpoints.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Seal the heads into segments once this many readings are unsealed.
    pub checkpoint_readings: usize,
    /// Seal at the latest this long after the oldest unsealed reading was committed.
    pub checkpoint_interval: Duration,
    /// Width of a segment's time window, microseconds. Fixed when the database is created;
    /// an existing database keeps its own.
    pub window_micros: i64,
    /// Upper bound of readings group-committed in one transaction.
    pub max_readings_per_commit: usize,
    /// Idle read connections kept open.
    pub read_connections: usize,
    /// SQLite page cache of the writer's connection, MiB (at most; filled as pages are used).
    pub cache_mib: u32,
    /// SQLite page cache of each read connection (the pool's and the checkpoint thread's), MiB.
    pub read_cache_mib: u32,
    /// Write closed windows compact (pcodec columns, ~3x smaller; ~1 ms per segment once).
    /// Off: every segment stays varint-packed, the size of the previous format (benchmarks
    /// compare the two).
    pub compact_segments: bool,
    /// Called on the checkpoint thread after the heads are frozen and before their segments
    /// are encoded. For tests that hold a checkpoint half-way; `None` in production.
    pub checkpoint_hook: Option<CheckpointHook>,
    /// How much lower than the writer's the CPU priority of the checkpoint thread (and of
    /// the thread freeing its frozen heads) is: added to their nice value (Linux; capped at
    /// 19). Encoding a checkpoint takes a core for a while; at equal priority on a busy
    /// machine it slowed the writer, and every append behind it. Default 5 (about a quarter
    /// of a core's share against one busy normal thread, so a checkpoint still finishes under
    /// sustained load), or `ESPWATCH_CHECKPOINT_NICE`; 0 keeps the writer's priority.
    pub checkpoint_nice: i32,
    /// A log shipper will run (`serve` with `backup_ship_to`): until it reports its progress
    /// ([`EmbeddedStore::set_ship_floor`]) a checkpoint keeps every log batch it seals in
    /// `ship_log`. Off: checkpoints empty the log (and `ship_log`) as before.
    pub keep_log_for_shipping: bool,
    /// Called on the writer thread after each step that deletes part of the sealed log (see
    /// [`LogTrimStep`]), once the step is committed. For tests; `None` in production.
    pub log_trim_hook: Option<LogTrimHook>,
    /// Called on the writer thread after each committed step writing a checkpoint's segments
    /// (see [`InstallStep`]). For tests; `None` in production.
    pub install_hook: Option<InstallHook>,
}

/// See [`EmbeddedOptions::install_hook`].
#[derive(Clone)]
pub struct InstallHook(pub Arc<dyn Fn(InstallStep) + Send + Sync>);

impl std::fmt::Debug for InstallHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallHook")
    }
}

/// One committed step writing the segments a checkpoint encoded, as
/// [`EmbeddedOptions::install_hook`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallStep {
    /// Segments this step wrote.
    pub segments: usize,
    /// Segments written so far, this step's included, of `total`.
    pub written: usize,
    pub total: usize,
    /// This step also marked the log sealed (the checkpoint's last step).
    pub sealed_mark: bool,
    /// The step was committed in an append's transaction (else in one of its own, while no
    /// append was waiting).
    pub with_appends: bool,
}

/// See [`EmbeddedOptions::log_trim_hook`].
#[derive(Clone)]
pub struct LogTrimHook(pub Arc<dyn Fn(LogTrimStep) + Send + Sync>);

impl std::fmt::Debug for LogTrimHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogTrimHook")
    }
}

/// One committed step of deleting the sealed log (the log batches a checkpoint installed into
/// segments), as [`EmbeddedOptions::log_trim_hook`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTrimStep {
    /// Every log batch with an id at or below this one is sealed (`meta.log_sealed`).
    pub sealed: i64,
    /// Every sealed log batch at or below this id is deleted, after this step.
    pub deleted_through: i64,
    /// The newest committed log batch when the step was committed.
    pub newest: i64,
    /// Log batches this step deleted.
    pub batches: u64,
    /// The step was committed in an append's transaction (else in one of its own, while no
    /// append was waiting).
    pub with_appends: bool,
}

/// See [`EmbeddedOptions::checkpoint_hook`].
#[derive(Clone)]
pub struct CheckpointHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for CheckpointHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointHook")
    }
}

/// What a data directory holds, from [`check::storage`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct StorageReport {
    /// Readings stored (sealed and unsealed).
    pub readings: u64,
    pub segments: u64,
    /// Segments in the compact format; the others are the windows still open, or older ones
    /// converted at the next checkpoints (or by `espwatch store compact`).
    pub compact_segments: u64,
    /// Encoded segments alone (the rest of the database is SQLite's pages and the log).
    pub segment_bytes: u64,
    /// Free pages inside the database file (the log's, between checkpoints).
    pub free_bytes: u64,
    /// Every file under the data directory (relative path, bytes).
    pub files: Vec<(String, u64)>,
    pub total_bytes: u64,
}

impl StorageReport {
    /// Bytes on disk per stored reading, all files included.
    pub fn bytes_per_reading(&self) -> f64 {
        self.total_bytes as f64 / self.readings.max(1) as f64
    }
}

/// Size of a reading as the plain record it is: a 64-bit timestamp and 13 `f64` channels.
pub const UNCOMPRESSED_READING_BYTES: u64 = 8 + 8 * espwatch_core::FIELD_COUNT as u64;

/// Four hours: a day of 10 s data is six segments of 1 440 points, small enough to rewrite
/// at each checkpoint, large enough to compress well.
pub const DEFAULT_WINDOW_MICROS: i64 = 4 * 3600 * 1_000_000;

/// See [`EmbeddedOptions::checkpoint_nice`].
pub const DEFAULT_CHECKPOINT_NICE: i32 = 5;

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            checkpoint_readings: 500_000,
            checkpoint_interval: Duration::from_secs(300),
            window_micros: DEFAULT_WINDOW_MICROS,
            max_readings_per_commit: 200_000,
            read_connections: 4,
            cache_mib: schema::DEFAULT_CACHE_MIB,
            read_cache_mib: schema::DEFAULT_READ_CACHE_MIB,
            compact_segments: true,
            checkpoint_hook: None,
            checkpoint_nice: std::env::var("ESPWATCH_CHECKPOINT_NICE")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_CHECKPOINT_NICE),
            keep_log_for_shipping: false,
            log_trim_hook: None,
            install_hook: None,
        }
    }
}

/// One committed log batch as the shipper reads it: the encoded readings of one commit.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub id: i64,
    /// UTC microseconds, taken just before the commit (0: written by an older release).
    pub committed_at: i64,
    pub data: Vec<u8>,
}

/// The unshipped log ([`EmbeddedStore::ship_backlog`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShipBacklog {
    pub bytes: u64,
    pub batches: u64,
    /// The oldest sealed batches to give up to get back within the cap, if over it.
    pub give_up: Option<ShipGap>,
}

/// A run of log batches (ids and commit times, UTC micros) never shipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShipGap {
    pub first_id: i64,
    pub last_id: i64,
    pub first_at: i64,
    pub last_at: i64,
    pub batches: u64,
    pub bytes: u64,
}

/// The readings of a log batch's encoding ([`LogRecord::data`]), in the batch's order.
pub fn decode_log_readings(data: &[u8]) -> StoreResult<Vec<Reading>> {
    let wells = codec::decode_log_batch(data)
        .map_err(|e| StoreError::Internal(format!("damaged log batch: {e}")))?;
    let mut out = Vec::new();
    for (well, points) in wells {
        for (ts, values) in points {
            out.push(Reading {
                well_id: well.clone(),
                ts,
                values,
            });
        }
    }
    Ok(out)
}

/// The embedded store. Cheap to clone; all clones share one engine, which shuts down
/// cleanly when the last clone is dropped (or explicitly with [`Store::close`]).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    shared: Arc<Shared>,
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: ReadPool,
    closed: AtomicBool,
    /// Connection of the alarms database, opened on first use.
    alarms: Mutex<Option<Connection>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender lets the writer finish what is queued and stop; joining makes
        // sure the database and the directory lock are released when the handle is gone.
        drop(lock(&self.sender).take());
        if let Some(handle) = lock(&self.writer).take()
            && handle.join().is_err()
        {
            tracing::error!("embedded store: writer thread panicked");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("embedded store is closed".into())
}

/// Read-only connections reused across queries (opening one costs more than a short query).
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    /// Page cache of each connection, MiB.
    cache_mib: u32,
    /// Set by close: connections in use are then dropped instead of returned.
    closed: AtomicBool,
}

impl ReadPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = lock(&self.idle).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let conn = schema::open_reader(&self.path)?;
                schema::set_cache_mib(&conn, self.cache_mib)?;
                conn
            }
        };
        let result = f(&conn);
        if result.is_ok() && !self.closed.load(Ordering::Acquire) {
            let mut idle = lock(&self.idle);
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        result
    }

    fn clear(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.idle).clear();
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, recovering unsealed data from the log.
    ///
    /// Takes an exclusive lock on the directory: a second process (or a second open in this
    /// one) fails with `Unavailable` until the first is closed.
    pub fn open(dir: &Path, opts: EmbeddedOptions) -> StoreResult<EmbeddedStore> {
        if opts.window_micros <= 0 {
            return Err(StoreError::Internal(
                "window_micros must be positive".into(),
            ));
        }
        files::private_dir(dir)?;
        let lock_file = lock_dir(dir)?;
        let path = dir.join(schema::DB_FILE);
        files::private_file(&path)?;
        let mut conn = schema::open_writer(&path)?;
        schema::set_cache_mib(&conn, opts.cache_mib)?;
        let window = schema::init(&mut conn, opts.window_micros)?;
        let (mut index, last_log_id, log_sealed) = writer::recover(&conn, window)?;
        retention::load_rolled(&conn, &mut index)?;
        let fleet_dirty = fleet_rollup::stale_windows(&conn, &index, window)?;
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            window,
            commits: Default::default(),
            checkpoints: Default::default(),
            duplicate_check_loads: Default::default(),
            ship_floor: std::sync::atomic::AtomicI64::new(if opts.keep_log_for_shipping {
                0
            } else {
                i64::MAX
            }),
            last_log_id: std::sync::atomic::AtomicI64::new(last_log_id),
            last_commit_at: Default::default(),
            fleet_windows_from_rows: Default::default(),
            fleet_windows_by_well: Default::default(),
            fleet_windows_stale: AtomicU64::new(fleet_dirty.len() as u64),
        });
        let (tx, rx) = mpsc::channel();
        let w = Writer::new(
            conn,
            shared.clone(),
            WriterOptions {
                checkpoint_readings: opts.checkpoint_readings.max(1),
                checkpoint_interval: opts.checkpoint_interval,
                max_readings_per_commit: opts.max_readings_per_commit.max(1),
                compact_segments: opts.compact_segments,
                checkpoint_hook: opts.checkpoint_hook.clone(),
                checkpoint_nice: opts.checkpoint_nice.clamp(0, 39),
                read_cache_mib: opts.read_cache_mib,
                log_trim_hook: opts.log_trim_hook.clone(),
                install_hook: opts.install_hook.clone(),
            },
            (last_log_id, log_sealed),
            lock_file,
            fleet_dirty,
        );
        let handle = std::thread::Builder::new()
            .name("espwatch-store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Internal(format!("starting writer thread: {e}")))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                shared,
                sender: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                readers: ReadPool {
                    path,
                    idle: Mutex::new(Vec::new()),
                    max_idle: opts.read_connections,
                    cache_mib: opts.read_cache_mib,
                    closed: AtomicBool::new(false),
                },
                closed: AtomicBool::new(false),
                alarms: Mutex::new(None),
            }),
        })
    }

    /// Sealed segments read back from the database to check re-sent or late readings for
    /// duplicates since the store was opened: each at most once per commit group, and never
    /// one of regular timestamps sealed since (its grid is kept in memory).
    pub fn duplicate_check_loads(&self) -> u64 {
        self.inner
            .shared
            .duplicate_check_loads
            .load(Ordering::Relaxed)
    }

    /// How the fleet tier (`fleet_rollups`) has answered fleet aggregates of every well since
    /// the store opened, and how many windows it is missing now.
    pub fn fleet_tier(&self) -> FleetTierStats {
        let shared = &self.inner.shared;
        FleetTierStats {
            windows_from_rows: shared.fleet_windows_from_rows.load(Ordering::Relaxed),
            windows_well_by_well: shared.fleet_windows_by_well.load(Ordering::Relaxed),
            stale_windows: shared.fleet_windows_stale.load(Ordering::Relaxed),
        }
    }

    /// The data directory this store was opened on.
    /// The log shipper shipped (or gave up) every log batch up to `id`: the writer may delete
    /// them. A raised floor wakes the writer, so an idle store deletes them now rather than at
    /// its next append or checkpoint.
    pub fn set_ship_floor(&self, id: i64) {
        let before = self.inner.shared.ship_floor.swap(id, Ordering::AcqRel);
        if id > before
            && let Some(sender) = lock(&self.inner.sender).as_ref()
        {
            // A stopped writer has nothing left to delete.
            let _ = sender.send(Command::Wake);
        }
    }

    /// Id and commit time (UTC micros) of the newest committed log batch (id 0: none yet;
    /// time 0: none since the store was opened).
    pub fn last_log_batch(&self) -> (i64, i64) {
        let s = &self.inner.shared;
        let id = s.last_log_id.load(Ordering::Acquire);
        (id, s.last_commit_at.load(Ordering::Relaxed))
    }

    /// Committed log batches with ids above `after`, oldest first, at most about `max_bytes`
    /// of them (at least one): the sealed ones kept in `ship_log` and the unsealed log, read
    /// in one snapshot. Blocking: call it on the blocking pool.
    pub fn log_since(&self, after: i64, max_bytes: usize) -> StoreResult<Vec<LogRecord>> {
        self.inner.readers.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, committed_at, data FROM ship_log WHERE id > ?1
                     UNION ALL
                     SELECT id, committed_at, data FROM log_batches WHERE id > ?1
                     ORDER BY id",
                )
                .map_err(|e| schema::sql_err("reading the log", e))?;
            let mut rows = stmt
                .query([after])
                .map_err(|e| schema::sql_err("reading the log", e))?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows
                .next()
                .map_err(|e| schema::sql_err("reading the log", e))?
            {
                let id: i64 = row
                    .get(0)
                    .map_err(|e| schema::sql_err("reading the log", e))?;
                let data: Vec<u8> = row
                    .get(2)
                    .map_err(|e| schema::sql_err("reading the log", e))?;
                bytes += data.len();
                out.push(LogRecord {
                    id,
                    committed_at: row
                        .get(1)
                        .map_err(|e| schema::sql_err("reading the log", e))?,
                    data,
                });
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// What waits to be shipped above `after` (the shipper's cursor), read in one snapshot
    /// from the log sizes alone (no blob is read): its bytes and batches, and, when that is
    /// more than `keep_bytes`, the newest sealed batch to give up so that at most `keep_bytes`
    /// stay (oldest first; only sealed batches — in `ship_log`, or sealed and not deleted
    /// yet — since the unsealed log is the store's own recovery). Blocking.
    pub fn ship_backlog(&self, after: i64, keep_bytes: u64) -> StoreResult<ShipBacklog> {
        self.inner.readers.with(|conn| {
            let err = |e| schema::sql_err("reading the unshipped log", e);
            conn.execute_batch("BEGIN").map_err(err)?;
            let result = (|| {
                let sealed = schema::log_sealed(conn)?;
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id, committed_at, length(data) FROM ship_log WHERE id > ?1
                         UNION ALL
                         SELECT id, committed_at, length(data) FROM log_batches WHERE id > ?1
                         ORDER BY id",
                    )
                    .map_err(err)?;
                let rows: Vec<(i64, i64, i64)> = stmt
                    .query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                let bytes: u64 = rows.iter().map(|r| r.2.max(0) as u64).sum();
                let mut out = ShipBacklog {
                    bytes,
                    batches: rows.len() as u64,
                    give_up: None,
                };
                let mut left = bytes;
                for (id, at, len) in &rows {
                    if left <= keep_bytes || *id > sealed {
                        break;
                    }
                    left -= (*len).max(0) as u64;
                    let gap = out.give_up.get_or_insert(ShipGap {
                        first_id: *id,
                        first_at: *at,
                        last_id: *id,
                        last_at: *at,
                        batches: 0,
                        bytes: 0,
                    });
                    gap.last_id = *id;
                    gap.last_at = *at;
                    gap.batches += 1;
                    gap.bytes += (*len).max(0) as u64;
                }
                Ok(out)
            })();
            conn.execute_batch("COMMIT").map_err(err)?;
            result
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Seals all readings committed so far into segments and returns when they are installed
    /// (normally automatic). Appends go on meanwhile: segments are encoded on a thread of
    /// their own.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        self.call(|reply| Command::Checkpoint { reply }).await
    }

    /// Seals everything, rewrites every segment not yet compact (older format, or the window
    /// still open) compact and vacuums the database (`espwatch store compact`). Runs on the
    /// writer thread: appends wait meanwhile.
    pub async fn compact(&self) -> StoreResult<CompactReport> {
        self.call(|reply| Command::Compact { reply }).await
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(unavailable());
        }
        Ok(())
    }

    /// Sends a command to the writer and waits for its reply.
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> StoreResult<T> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        {
            let sender = lock(&self.inner.sender);
            let sender = sender.as_ref().ok_or_else(unavailable)?;
            sender.send(make(tx)).map_err(|_| unavailable())?;
        }
        // A dropped reply means the writer stopped before handling the command.
        rx.await.map_err(|_| unavailable())?
    }

    /// Runs blocking SQLite work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Internal(format!("blocking task failed: {e}")))?
    }
}

/// Bytes of the regular files directly in `dir` (the databases, their WALs, the lock).
fn directory_bytes(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
    )
}

fn lock_dir(dir: &Path) -> StoreResult<File> {
    let path = dir.join("LOCK");
    // Private like the databases beside it (an existing one is tightened).
    files::private_file(&path)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Internal(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "data directory {} is already in use by another espwatch store",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Internal(format!(
            "locking {}: {e}",
            path.display()
        ))),
    }
}

/// A segment a read cannot decode. Not logged here: the read paths of this store hand their
/// errors back unlogged (`sql_fail`), and whoever asked logs them once: a request in its own
/// log line, the diagnostics' rebuild in its warning (the error policy of issue 17).
fn corrupt_segment(well: &WellId, ws: i64, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("segment ({well}, {ws}) is corrupt: {e}"))
}

impl Inner {
    /// Sealed points of `well` in `[from, to)`, read from the segments of the windows that
    /// overlap the range, ascending.
    fn read_sealed(
        &self,
        well: &WellId,
        range: (i64, i64),
        mask: codec::ChannelMask,
    ) -> StoreResult<Vec<Point>> {
        self.readers
            .with(|conn| self.read_sealed_on(conn, well, range, mask))
    }

    /// [`Inner::read_sealed`] on a read connection the caller holds (a fleet read's).
    fn read_sealed_on(
        &self,
        conn: &Connection,
        well: &WellId,
        (from, to): (i64, i64),
        mask: codec::ChannelMask,
    ) -> StoreResult<Vec<Point>> {
        let first_window = window_start(from, self.shared.window);
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT window_start, data FROM segments
                     WHERE well_id = ?1 AND window_start >= ?2 AND window_start < ?3
                     ORDER BY window_start",
                )
                .map_err(|e| sql_fail("reading segments", e))?;
            let mut rows = stmt
                .query(params![well.as_str(), first_window, to])
                .map_err(|e| sql_fail("reading segments", e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sql_fail("reading segments", e))? {
                let ws: i64 = row.get(0).map_err(|e| sql_fail("reading segments", e))?;
                let data = row
                    .get_ref(1)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(|e| sql_fail("reading segments", e))?;
                codec::decode_segment_channels(data, (from, to), mask, &mut out)
                    .map_err(|e| corrupt_segment(well, ws, e))?;
            }
            Ok(out)
        }
    }
}

/// What the rollups of a query's inner range gave: hour pieces, and the raw sealed points of
/// the windows they could not answer for (ascending).
struct RollupRead {
    pieces: Vec<rollup::Piece>,
    raw: Vec<Point>,
}

impl Inner {
    /// Reads the rollups of `windows` (window start, reading count in the query's snapshot)
    /// within `[from, to)` (hour-aligned); windows in `raw_windows`, or whose rollup is
    /// missing or was made from a different count of readings (sealed since the snapshot),
    /// are read from their segments instead.
    fn read_rollups(
        &self,
        well: &WellId,
        range: (i64, i64),
        windows: &[(i64, i64)],
        raw_windows: &std::collections::HashSet<i64>,
        mask: codec::ChannelMask,
    ) -> StoreResult<RollupRead> {
        if windows.is_empty() {
            return Ok(RollupRead {
                pieces: Vec::new(),
                raw: Vec::new(),
            });
        }
        self.readers
            .with(|conn| self.read_rollups_on(conn, well, range, windows, raw_windows, mask))
    }

    /// [`Inner::read_rollups`] on a read connection the caller holds (a fleet read's);
    /// `windows` ascending.
    fn read_rollups_on(
        &self,
        conn: &Connection,
        well: &WellId,
        (from, to): (i64, i64),
        windows: &[(i64, i64)],
        raw_windows: &std::collections::HashSet<i64>,
        mask: codec::ChannelMask,
    ) -> StoreResult<RollupRead> {
        let Some(&(first, _)) = windows.first() else {
            return Ok(RollupRead {
                pieces: Vec::new(),
                raw: Vec::new(),
            });
        };
        let err = |e| sql_fail("reading rollups", e);
        let window = self.shared.window;
        let mut out = RollupRead {
            pieces: Vec::new(),
            raw: Vec::new(),
        };
        // Windows whose rollup answered; the others are read from their segments below.
        let mut answered = vec![false; windows.len()];
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT window_start, data FROM rollups
                     WHERE well_id = ?1 AND window_start >= ?2 AND window_start < ?3",
                )
                .map_err(err)?;
            let mut rows = stmt.query(params![well.as_str(), first, to]).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                let ws: i64 = row.get(0).map_err(err)?;
                let Ok(k) = windows.binary_search_by_key(&ws, |w| w.0) else {
                    continue;
                };
                if raw_windows.contains(&ws) {
                    continue;
                }
                let data = row
                    .get_ref(1)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(err)?;
                // Only a rollup made from the snapshot's readings answers, decoded straight
                // into the answer, only the asked channels; a damaged one is only a slower
                // answer: the segment is read instead.
                if rollup::count(data).is_ok_and(|c| c == windows[k].1 as u64)
                    && rollup::decode_hours(data, mask, (from, to), &mut out.pieces).is_ok()
                {
                    answered[k] = true;
                }
            }
        }
        for (&(ws, _), _) in windows.iter().zip(&answered).filter(|(_, a)| !**a) {
            let lo = ws.max(from);
            let hi = ws.saturating_add(window).min(to);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT data FROM segments WHERE well_id = ?1 AND window_start = ?2",
                )
                .map_err(|e| sql_fail("reading segments", e))?;
            let mut rows = stmt
                .query(params![well.as_str(), ws])
                .map_err(|e| sql_fail("reading segments", e))?;
            if let Some(row) = rows.next().map_err(|e| sql_fail("reading segments", e))? {
                let data = row
                    .get_ref(0)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(|e| sql_fail("reading segments", e))?;
                codec::decode_segment_channels(data, (lo, hi), mask, &mut out.raw)
                    .map_err(|e| corrupt_segment(well, ws, e))?;
            }
        }
        Ok(out)
    }
}

impl EmbeddedStore {
    /// `read_range` decoding only the sealed channels in `mask` (others come back missing
    /// from sealed windows; unsealed readings keep all theirs). Queries ask only for their
    /// fields.
    async fn read_channels(
        &self,
        well_id: &WellId,
        range: TimeRange,
        mask: codec::ChannelMask,
    ) -> StoreResult<Vec<Point>> {
        self.check_open()?;
        let (from, to) = (range.from.0, range.to.0);
        // Head first, segments second: a checkpoint in between then only makes the sealed
        // read return copies of head points, which the merge drops. The other order could
        // miss readings sealed and cleared from the head in between.
        let snapshot =
            self.inner
                .shared
                .read()
                .snapshot(well_id, from, to, self.inner.shared.window);
        let Some((head, windows)) = snapshot else {
            return Ok(Vec::new());
        };
        if windows.is_empty() {
            return Ok(head);
        }
        let well = well_id.clone();
        let sealed = self
            .blocking(move |inner| inner.read_sealed(&well, (from, to), mask))
            .await?;
        Ok(merge_dedup(sealed, head))
    }

    /// A bucketed query whose inner range `[inner_from, inner_to)` (whole step buckets) is
    /// answered from the hourly rollups where they are valid; edges and the rest from raw
    /// points. Same answer as `series::evaluate` on the raw points (`avg` to rounding).
    async fn query_with_rollups(
        &self,
        query: &TelemetryQuery,
        step: i64,
        (inner_from, inner_to): (i64, i64),
    ) -> StoreResult<Series> {
        let (from, to) = (query.range.from.0, query.range.to.0);
        let mask = codec::channel_mask(&query.fields);
        let mut pieces: Vec<rollup::Piece> = Vec::new();
        for (a, b) in [(from, inner_from), (inner_to, to)] {
            if a < b {
                let range = TimeRange {
                    from: Timestamp(a),
                    to: Timestamp(b),
                };
                let points = self.read_channels(&query.well_id, range, mask).await?;
                pieces.extend(points.iter().map(rollup::Piece::of_point));
            }
        }
        let window = self.inner.shared.window;
        // Head first, as in `read_range`: a checkpoint after the snapshot changes the counts
        // of the windows it seals, whose rollups are then not used.
        let (head, windows) = {
            let index = self.inner.shared.read();
            match index.wells.get(&query.well_id) {
                None => (Vec::new(), Vec::new()),
                Some(st) => (
                    st.unsealed_range(inner_from, inner_to),
                    rollup_windows(st, window_start(inner_from, window), inner_to),
                ),
            }
        };
        let raw_windows: std::collections::HashSet<i64> =
            head.iter().map(|p| window_start(p.0.0, window)).collect();
        let well = query.well_id.clone();
        let read = self
            .blocking(move |inner| {
                inner.read_rollups(&well, (inner_from, inner_to), &windows, &raw_windows, mask)
            })
            .await?;
        pieces.extend(read.pieces);
        pieces.extend(
            merge_dedup(read.raw, head)
                .iter()
                .map(rollup::Piece::of_point),
        );
        // Hours, raw points of other windows and the edges never overlap in time.
        pieces.sort_by_key(|p| p.at);
        Ok(rollup::fold(&pieces, &query.fields, step, query.agg))
    }
}

/// Windows of `[from, to)` a step query may answer from rollups, with the reading count each
/// rollup must have been made from: the sealed segments, and the windows retention expired
/// whose rollup stays (a segment written since takes precedence).
fn rollup_windows(st: &index::WellState, from: i64, to: i64) -> Vec<(i64, i64)> {
    let mut windows: Vec<(i64, i64)> = st
        .segs
        .range(from..to)
        .map(|(ws, m)| (*ws, m.count))
        .collect();
    if !st.rolled.is_empty() {
        windows.extend(
            st.rolled
                .range(from..to)
                .filter(|(ws, _)| !st.segs.contains_key(ws))
                .map(|(ws, n)| (*ws, *n)),
        );
        windows.sort_unstable();
    }
    windows
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(
        &self,
        readings: Vec<Reading>,
        opts: AppendOptions,
    ) -> StoreResult<AppendOutcome> {
        self.check_open()?;
        if readings.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let _pending = crate::metrics::Pending::new("embedded", readings.len());
        self.call(|reply| Command::Append {
            readings,
            opts,
            reply,
        })
        .await
    }

    async fn read_range(&self, well_id: &WellId, range: TimeRange) -> StoreResult<Vec<Point>> {
        self.read_channels(well_id, range, codec::ALL_CHANNELS)
            .await
    }

    async fn query(&self, query: &TelemetryQuery) -> StoreResult<Series> {
        self.check_open()?;
        let (from, to) = (query.range.from.0, query.range.to.0);
        let step = query.step_micros.filter(|s| *s > 0);
        match step.and_then(|s| rollup::inner_range(from, to, s, self.inner.shared.window)) {
            Some(inner) => {
                self.query_with_rollups(query, step.unwrap_or(0), inner)
                    .await
            }
            None => {
                let mask = codec::channel_mask(&query.fields);
                let points = self
                    .read_channels(&query.well_id, query.range, mask)
                    .await?;
                Ok(espwatch_core::series::evaluate(query, &points))
            }
        }
    }

    async fn fleet_query(
        &self,
        query: &crate::fleet::FleetQuery,
    ) -> StoreResult<Vec<crate::fleet::WellSeries>> {
        self.fleet(query).await
    }

    async fn fleet_aggregate(&self, query: &crate::fleet::FleetQuery) -> StoreResult<Series> {
        self.aggregate_fleet(query).await
    }

    async fn fleet_totals(
        &self,
        query: &crate::fleet::FleetTotalsQuery,
    ) -> StoreResult<Vec<crate::fleet::WellTotals>> {
        EmbeddedStore::fleet_totals(self, query).await
    }

    async fn latest(&self) -> StoreResult<Vec<LatestReading>> {
        self.check_open()?;
        let index = self.inner.shared.read();
        let mut out: Vec<LatestReading> = index
            .wells
            .iter()
            .filter_map(|(id, st)| {
                st.latest.map(|point| LatestReading {
                    well_id: id.clone(),
                    point,
                })
            })
            .collect();
        drop(index);
        out.sort_by(|a, b| a.well_id.cmp(&b.well_id));
        Ok(out)
    }

    async fn list_wells(&self) -> StoreResult<Vec<WellRecord>> {
        self.check_open()?;
        let index = self.inner.shared.read();
        let mut out: Vec<(WellId, WellRecord)> = index
            .wells
            .iter()
            .map(|(id, st)| (id.clone(), st.record.clone()))
            .collect();
        drop(index);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    async fn get_well(&self, well_id: &WellId) -> StoreResult<Option<WellRecord>> {
        self.check_open()?;
        Ok(self
            .inner
            .shared
            .read()
            .wells
            .get(well_id)
            .map(|s| s.record.clone()))
    }

    async fn create_well(&self, meta: WellMeta) -> StoreResult<WellRecord> {
        let id = meta.well_id.clone();
        self.call(|reply| Command::CreateWell { id, meta, reply })
            .await
    }

    async fn update_well(&self, meta: WellMeta) -> StoreResult<Option<WellRecord>> {
        let id = meta.well_id.clone();
        self.call(|reply| Command::UpdateWell { id, meta, reply })
            .await
    }

    async fn delete_well(&self, well_id: &WellId) -> StoreResult<bool> {
        let id = well_id.clone();
        self.call(|reply| Command::DeleteWell { id, reply }).await
    }

    async fn health(&self) -> StoreHealth {
        // Both probes at once: a readiness answer takes the slower one, not their sum.
        let read_probe = async {
            let started = Instant::now();
            probe(
                started,
                tokio::time::timeout(PROBE_TIMEOUT, async {
                    self.check_open()?;
                    self.blocking(|inner| {
                        inner.readers.with(|conn| {
                            conn.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
                                .map_err(|e| sql_fail("read probe", e))
                        })
                    })
                    .await
                })
                .await,
            )
        };
        // The write probe waits its turn behind the appends queued before it. Under load on a
        // starved machine (a debug soak beside builds: appends acknowledged after 2.5 s) that
        // turn can come after the timeout while every append is committed: the writer is
        // busy, not stuck, and answering 503 then would take a working node out of rotation.
        // So a probe that timed out while the writer went on committing is healthy (said in
        // its detail); one that timed out with no commit meanwhile is not.
        let write_probe = async {
            let started = Instant::now();
            let commits = &self.inner.shared.commits;
            let before = commits.load(Ordering::Relaxed);
            let outcome =
                tokio::time::timeout(PROBE_TIMEOUT, self.call(|reply| Command::Probe { reply }))
                    .await;
            let during = commits.load(Ordering::Relaxed).saturating_sub(before);
            write_probe(started, outcome, during)
        };
        let (read, write) = tokio::join!(read_probe, write_probe);
        let mut read = read;
        let quarantined = self.inner.shared.read().quarantined.clone();
        if !quarantined.is_empty() {
            // The store works; what was moved aside at open is named for operators.
            let note = format!(
                "quarantined when opened (kept in the quarantine table; see `espwatch store check`): {}",
                quarantined.join("; ")
            );
            read.detail = Some(match read.detail.take() {
                Some(d) => format!("{d}; {note}"),
                None => note,
            });
        }
        StoreHealth {
            backend: "embedded",
            read,
            write,
        }
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.check_open()?;
        let dir = self.inner.dir.clone();
        let size_bytes = tokio::task::spawn_blocking(move || directory_bytes(&dir))
            .await
            .ok()
            .flatten();
        let shared = &self.inner.shared;
        let index = shared.read();
        Ok(StoreStats {
            wells: index.wells.len(),
            readings_in_log: (index.head_total + index.sealing_total) as u64,
            segments: index.segments,
            commits: shared.commits.load(Ordering::Relaxed),
            checkpoints: shared.checkpoints.load(Ordering::Relaxed),
            size_bytes,
            pool: None,
        })
    }

    async fn close(&self) -> StoreResult<()> {
        // Idempotent: closing twice (shutdown signal, then drop path) is not an error.
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Readers first: the writer, as the last connection, then checkpoints SQLite's WAL
        // into the database and removes it.
        self.inner.readers.clear();
        let (tx, rx) = oneshot::channel();
        let sent = lock(&self.inner.sender)
            .take()
            .map(|s| s.send(Command::Close { reply: tx }).is_ok())
            .unwrap_or(false);
        let result = if sent {
            rx.await.unwrap_or_else(|_| Err(unavailable()))
        } else {
            Err(unavailable())
        };
        let handle = lock(&self.inner.writer).take();
        if let Some(handle) = handle {
            // The writer has replied (or died); joining is quick but still off the runtime.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        result
    }
}

/// How long a readiness probe of the embedded store waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The write probe's result: as [`probe`], except that a probe that timed out while the writer
/// made `commits` commits (of appends queued before it) is healthy: busy, not stuck.
fn write_probe<T>(
    started: Instant,
    outcome: Result<StoreResult<T>, tokio::time::error::Elapsed>,
    commits: u64,
) -> ProbeResult {
    match outcome {
        Err(_) if commits > 0 => ProbeResult {
            ok: true,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            detail: Some(format!(
                "busy: still queued behind earlier appends after 2 s, {commits} commit(s) made meanwhile"
            )),
        },
        outcome => probe(started, outcome),
    }
}

fn probe<T>(
    started: Instant,
    outcome: Result<StoreResult<T>, tokio::time::error::Elapsed>,
) -> ProbeResult {
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let detail = match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out after 2 s".to_owned()),
    };
    ProbeResult {
        ok: detail.is_none(),
        latency_ms,
        detail,
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    async fn timed_out() -> Result<StoreResult<()>, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::ZERO, std::future::pending()).await
    }

    /// Issue 17 (a `/health/ready` answering 503 under load in a soak): a write probe that
    /// waited out its timeout behind appends the writer kept committing is healthy; one that
    /// timed out with no commit meanwhile, or failed, is not.
    #[tokio::test]
    async fn a_write_probe_timed_out_behind_commits_is_busy_not_unhealthy() {
        let started = Instant::now();
        let busy = write_probe(started, timed_out().await, 3);
        assert!(busy.ok, "{busy:?}");
        assert!(
            busy.detail.as_deref().is_some_and(|d| d.contains("busy")),
            "{busy:?}"
        );
        let stuck = write_probe(started, timed_out().await, 0);
        assert!(!stuck.ok, "{stuck:?}");
        assert_eq!(stuck.detail.as_deref(), Some("timed out after 2 s"));
        let failed = write_probe::<()>(
            started,
            Ok(Err(StoreError::Internal("disk I/O error".into()))),
            5,
        );
        assert!(!failed.ok, "{failed:?}");
        assert!(write_probe(started, Ok(Ok(())), 0).ok);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn cache_kib(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap()
    }

    /// Issue 17 (soak memory): the page caches are bounded by the options, smaller by
    /// default than the 64 MiB writer / 16 MiB reader caches they replaced.
    #[test]
    fn page_caches_follow_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(schema::DB_FILE);
        let store = EmbeddedStore::open(
            dir.path(),
            EmbeddedOptions {
                cache_mib: 3,
                read_cache_mib: 2,
                ..EmbeddedOptions::default()
            },
        )
        .unwrap();
        let pooled = store.inner.readers.with(|c| Ok(cache_kib(c))).unwrap();
        assert_eq!(pooled, -2048);
        drop(store);
        assert_eq!(cache_kib(&schema::open_writer(&path).unwrap()), -16 * 1024);
        assert_eq!(cache_kib(&schema::open_reader(&path).unwrap()), -8 * 1024);
    }
}
