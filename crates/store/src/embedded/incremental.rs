//! Incremental backups of the embedded store: a backup *chain* in one directory, a full copy
//! first, then deltas holding only the segments and rollups that changed since the previous
//! backup; restore replays the chain, up to a chosen backup (point in time at backup
//! granularity).
//!
//! Layout of the chain directory:
//! - `CHAIN.json`: the backups in order (kind, start time, readings, files with SHA-256);
//! - `0000/`: the full backup, as `store backup` makes it (`VACUUM INTO` copies, verified);
//! - `0001/`, ...: `delta.sqlite` (changed segments and rollups with every column, the keys
//!   removed since, and the small tables whole: meta, wells, log batches, quarantine), plus
//!   whole copies of the alarms and identity databases (small);
//! - `STATE.sqlite`: the signature of every segment and rollup as of the last backup;
//! - `LOCK.json` while a backup runs: its owner and until when it holds the chain (see
//!   [`ChainLock`]): two backups into one chain at once would both number their delta after
//!   the same last backup, and the second `CHAIN.json` would drop the first's entry.
//!
//! A delta is read in one read transaction of the live database, so it is a consistent
//! instant like a full backup, taken next to a running server. A segment or rollup counts as
//! changed when its signature (reading count, bounds, byte length and leading bytes, and for a
//! segment whether a checksum is recorded) differs: the engine only ever rewrites a window
//! with more readings (a late reading), in another format (compaction), to record its
//! checksum (a window written before checksums), or removes it (retention, `delete_well`,
//! quarantine), and each of those changes the signature, so the signature is read without
//! reading the blobs.

use std::cmp::Ordering;
use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

use super::backup::{self, BackupFile};
use super::schema::{self, sql_err};
use super::{SECURITY_FILE, alarms, check, codec, files};
use crate::{StoreError, StoreResult};

pub const CHAIN: &str = "CHAIN.json";
pub const STATE: &str = "STATE.sqlite";
pub const LOCK: &str = "LOCK.json";

/// How long a backup's lock holds the chain: past it, the lock is taken as left behind by a
/// backup that died (a crash, a `kill -9`) and another backup may take it over. A backup
/// lasts minutes (a 10 GB store: under 2 min), so this is far beyond a live one.
pub const LOCK_TTL_MICROS: i64 = 2 * 3_600_000_000;

/// What `LOCK.json` says: who holds the chain, since and until when (UTC microseconds).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockOwner {
    /// `host pid N`, and a random token telling this holder from a later one.
    pub owner: String,
    pub token: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

impl LockOwner {
    /// This process, holding from now for `ttl_micros`, with a fresh token.
    pub fn new(ttl_micros: i64) -> LockOwner {
        let now = now_micros();
        LockOwner {
            owner: format!("{} pid {}", host_name(), std::process::id()),
            token: format!(
                "{:016x}{:016x}",
                now as u64,
                u64::from(std::process::id()) ^ lock_nonce()
            ),
            acquired_at: now,
            expires_at: now.saturating_add(ttl_micros),
        }
    }

    /// Whether the lock no longer holds (its backup died): `expires_at` has passed.
    pub fn expired(&self) -> bool {
        self.expires_at <= now_micros()
    }

    /// Why a backup is refused while this lock holds its chain `what`.
    pub fn refusal(&self, what: &str, lock: &str) -> String {
        format!(
            "{what} is being backed up by {} since {} (its lock holds until {}): wait for it \
             to finish, or remove {lock} if that backup is gone",
            self.owner,
            espwatch_core::Timestamp(self.acquired_at),
            espwatch_core::Timestamp(self.expires_at),
        )
    }
}

/// The guard of one backup into a chain directory: `LOCK.json`, created exclusively
/// (`O_EXCL`), removed when dropped (only while it still holds this guard's token). A lock
/// whose `expires_at` has passed is taken over; a live one refuses with `Conflict`, naming
/// its owner.
#[derive(Debug)]
pub struct ChainLock {
    path: std::path::PathBuf,
    token: String,
}

impl ChainLock {
    /// Takes the chain `repo` (created when absent) for a backup, for [`LOCK_TTL_MICROS`].
    pub fn acquire(repo: &Path) -> StoreResult<ChainLock> {
        Self::acquire_for(repo, LOCK_TTL_MICROS)
    }

    /// As [`ChainLock::acquire`], held for `ttl_micros`.
    pub fn acquire_for(repo: &Path, ttl_micros: i64) -> StoreResult<ChainLock> {
        files::private_dir(repo)?;
        let path = repo.join(LOCK);
        let owner = LockOwner::new(ttl_micros);
        let token = owner.token.clone();
        let text = serde_json::to_vec_pretty(&owner)
            .map_err(|e| StoreError::Internal(format!("encoding the lock: {e}")))?;
        // Two tries: the second after removing an expired lock.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    f.write_all(&text)
                        .and_then(|()| f.sync_all())
                        .map_err(io_err("writing", &path))?;
                    return Ok(ChainLock { path, token });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LockOwner>(&b).ok());
                    match held {
                        Some(h) if h.expired() => {
                            tracing::warn!(
                                lock = %path.display(),
                                owner = %h.owner,
                                "taking over an expired backup lock (its backup died?)"
                            );
                            let _ = std::fs::remove_file(&path);
                        }
                        Some(h) => {
                            return Err(StoreError::Conflict(h.refusal(
                                &repo.display().to_string(),
                                &path.display().to_string(),
                            )));
                        }
                        None => {
                            return Err(StoreError::Conflict(format!(
                                "{} holds a lock that cannot be read: another backup may be \
                                 running; remove it if none is",
                                path.display()
                            )));
                        }
                    }
                }
                Err(e) => return Err(io_err("creating", &path)(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "{}: another backup took the lock first",
            path.display()
        )))
    }
}

impl Drop for ChainLock {
    fn drop(&mut self) {
        // Only our own lock: one taken over after expiry belongs to another backup now.
        let ours = std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockOwner>(&b).ok())
            .is_some_and(|h| h.token == self.token);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A per-process counter mixed into lock tokens (two locks of one process differ).
fn lock_nonce() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}
const DELTA: &str = "delta.sqlite";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Full,
    Incremental,
}

/// One backup of the chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainEntry {
    pub seq: u32,
    pub kind: Kind,
    /// Its directory in the chain.
    pub dir: String,
    /// UTC microseconds when the copy started.
    pub started_at: i64,
    /// Readings in the store at that instant (sealed and in the log).
    pub readings: u64,
    pub files: Vec<BackupFile>,
    /// Segments and rollups copied (all of them for the full backup).
    pub segments_copied: u64,
    pub rollups_copied: u64,
    /// Segments and rollups removed since the previous backup.
    pub removed: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Chain {
    pub source: String,
    pub backups: Vec<ChainEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    pub entry: ChainEntry,
    /// Segments and rollups left out because they had not changed.
    pub unchanged: u64,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainRestoreReport {
    /// The last backup applied.
    pub until: ChainEntry,
    pub backups_applied: usize,
    pub readings: u64,
    pub seconds: f64,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = format!("{what} {}", path.display());
    move |e| StoreError::Internal(format!("{what}: {e}"))
}

fn read_chain(repo: &Path) -> StoreResult<Option<Chain>> {
    let path = repo.join(CHAIN);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(io_err("reading", &path))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))
}

fn write_chain(repo: &Path, chain: &Chain) -> StoreResult<()> {
    let path = repo.join(CHAIN);
    let tmp = repo.join(format!("{CHAIN}.tmp"));
    let text = serde_json::to_string_pretty(chain)
        .map_err(|e| StoreError::Internal(format!("encoding the chain: {e}")))?;
    files::private_file(&tmp)?;
    std::fs::write(&tmp, text).map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("writing", &path))
}

fn sha256_file(path: &Path) -> StoreResult<(u64, String)> {
    backup::sha256_of(path)
}

/// A segment (kind 0) or rollup (kind 1) key and its signature.
type Key = (u8, String, i64);

/// The segment signatures of `conn`'s database in key order: reading count, bounds, byte
/// length and leading bytes, plus `:unchecked` for a segment with no recorded checksum. That
/// mark makes a segment that gains its checksum count as changed, so the next delta carries
/// the checksum: `store compact` (or a checkpoint) records it by rewriting a window written
/// before checksums, and a window already compact is rewritten to the same bytes. Without the
/// mark a chain begun before checksums would decode that segment at every restore.
fn seg_sigs(conn: &Connection) -> StoreResult<String> {
    // A data directory last opened by a release before checksums has no such column.
    let checksum = if schema::has_segment_checksums(conn)? {
        "checksum"
    } else {
        "NULL"
    };
    Ok(format!(
        "SELECT well_id, window_start,
            count || ':' || min_ts || ':' || max_ts || ':' || length(data) || ':'
            || hex(substr(data, 1, 24)) || iif({checksum} IS NULL, ':unchecked', '')
         FROM segments ORDER BY well_id, window_start"
    ))
}

const ROLLUP_SIGS: &str = "SELECT well_id, window_start,
        length(data) || ':' || hex(substr(data, 1, 24))
    FROM rollups ORDER BY well_id, window_start";

fn open_state(repo: &Path) -> StoreResult<Connection> {
    let path = repo.join(STATE);
    files::private_file(&path)?;
    let conn = Connection::open(&path).map_err(|e| sql_err("opening the chain state", e))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS sig (
            kind INTEGER NOT NULL, well_id TEXT NOT NULL, window_start INTEGER NOT NULL,
            sig TEXT NOT NULL, PRIMARY KEY (kind, well_id, window_start)) WITHOUT ROWID;",
    )
    .map_err(|e| sql_err("creating the chain state", e))?;
    Ok(conn)
}

/// Replaces the chain state with the signatures of `conn`'s database (a full backup).
fn reset_state(repo: &Path, conn: &Connection) -> StoreResult<u64> {
    let mut state = open_state(repo)?;
    let tx = state
        .transaction()
        .map_err(|e| sql_err("writing the chain state", e))?;
    tx.execute("DELETE FROM sig", [])
        .map_err(|e| sql_err("writing the chain state", e))?;
    let mut n = 0;
    for (kind, sql) in [(0u8, seg_sigs(conn)?), (1u8, ROLLUP_SIGS.to_owned())] {
        let mut stmt = conn
            .prepare(&sql)
            .map_err(|e| sql_err("reading signatures", e))?;
        let mut rows = stmt
            .query([])
            .map_err(|e| sql_err("reading signatures", e))?;
        let mut insert = tx
            .prepare("INSERT INTO sig VALUES (?1, ?2, ?3, ?4)")
            .map_err(|e| sql_err("writing the chain state", e))?;
        while let Some(r) = rows.next().map_err(|e| sql_err("reading signatures", e))? {
            let (well, ws, sig): (String, i64, String) = (
                r.get(0).map_err(|e| sql_err("reading signatures", e))?,
                r.get(1).map_err(|e| sql_err("reading signatures", e))?,
                r.get(2).map_err(|e| sql_err("reading signatures", e))?,
            );
            insert
                .execute(params![kind, well, ws, sig])
                .map_err(|e| sql_err("writing the chain state", e))?;
            n += 1;
        }
    }
    tx.commit()
        .map_err(|e| sql_err("writing the chain state", e))?;
    Ok(n)
}

/// Backs `dir` up into the chain `repo`: a full backup when `repo` is new or empty, else a
/// delta against the chain's last backup. A server may be running on `dir`.
///
/// One backup at a time per chain: [`ChainLock`] refuses a second one (`Conflict`, naming
/// the first) while the first holds `LOCK.json`.
pub fn backup_chain(dir: &Path, repo: &Path) -> StoreResult<ChainReport> {
    let started = Instant::now();
    let _lock = ChainLock::acquire(repo)?;
    match read_chain(repo)? {
        None => full(dir, repo, started),
        Some(chain) => delta(dir, repo, chain, started),
    }
}

fn entry_dir(seq: u32) -> String {
    format!("{seq:04}")
}

fn full(dir: &Path, repo: &Path, started: Instant) -> StoreResult<ChainReport> {
    // Empty but for this backup's own lock and the shipped log (`serve`'s `backup_ship_to`).
    if repo.exists()
        && std::fs::read_dir(repo)
            .map_err(io_err("reading", repo))?
            .filter_map(Result::ok)
            .any(|e| e.file_name() != LOCK && e.file_name() != SHIPPED_LOG)
    {
        return Err(StoreError::Conflict(format!(
            "{} (not empty and not a backup chain: choose a new directory)",
            repo.display()
        )));
    }
    files::private_dir(repo)?;
    let name = entry_dir(0);
    let report = backup::backup(dir, &repo.join(&name))?;
    let copy = Connection::open_with_flags(
        repo.join(&name).join(schema::DB_FILE),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(|e| sql_err("opening the copy", e))?;
    let (segments, rollups): (i64, i64) = copy
        .query_row(
            "SELECT (SELECT count(*) FROM segments), (SELECT count(*) FROM rollups)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| sql_err("counting the copy", e))?;
    let (segments, rollups) = (segments as u64, rollups as u64);
    reset_state(repo, &copy)?;
    let entry = ChainEntry {
        seq: 0,
        kind: Kind::Full,
        dir: name,
        started_at: report.manifest.started_at,
        readings: report.manifest.readings,
        files: report.manifest.files.clone(),
        segments_copied: segments,
        rollups_copied: rollups,
        removed: 0,
    };
    let bytes = entry.files.iter().map(|f| f.bytes).sum();
    write_chain(
        repo,
        &Chain {
            source: dir.display().to_string(),
            backups: vec![entry.clone()],
        },
    )?;
    Ok(ChainReport {
        entry,
        unchanged: 0,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads `(well, window, sig)` rows in key order.
fn sig_rows(
    stmt: &mut rusqlite::Statement<'_>,
    p: impl rusqlite::Params,
) -> StoreResult<Vec<(String, i64, String)>> {
    let rows = stmt
        .query_map(p, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(|e| sql_err("reading signatures", e))?;
    rows.collect::<Result<_, _>>()
        .map_err(|e| sql_err("reading signatures", e))
}

/// Keys whose signature is new or different, and keys gone, between two key-ordered lists.
fn diff(
    kind: u8,
    now: &[(String, i64, String)],
    before: &[(String, i64, String)],
) -> (Vec<Key>, Vec<Key>, u64) {
    let (mut changed, mut removed, mut same) = (Vec::new(), Vec::new(), 0u64);
    let (mut i, mut j) = (0, 0);
    while i < now.len() || j < before.len() {
        let order = match (now.get(i), before.get(j)) {
            (Some(a), Some(b)) => (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1)),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                changed.push((kind, now[i].0.clone(), now[i].1));
                i += 1;
            }
            Ordering::Greater => {
                removed.push((kind, before[j].0.clone(), before[j].1));
                j += 1;
            }
            Ordering::Equal => {
                if now[i].2 == before[j].2 {
                    same += 1;
                } else {
                    changed.push((kind, now[i].0.clone(), now[i].1));
                }
                i += 1;
                j += 1;
            }
        }
    }
    (changed, removed, same)
}

/// The folder of a backup destination holding the shipped log (`espwatch_archive::ship`),
/// beside the chain.
pub const SHIPPED_LOG: &str = "wal";

/// Tables copied whole into every delta (small: the log is emptied after each checkpoint).
const WHOLE_TABLES: [&str; 4] = ["meta", "wells", "log_batches", "quarantine"];

fn delta(dir: &Path, repo: &Path, mut chain: Chain, started: Instant) -> StoreResult<ChainReport> {
    let src_path = dir.join(schema::DB_FILE);
    if !src_path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no embedded store in {}",
            dir.display()
        )));
    }
    let seq = chain.backups.last().map_or(0, |b| b.seq + 1);
    let name = entry_dir(seq);
    let out = repo.join(&name);
    // A directory left by an attempt that did not finish is not part of the chain.
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(io_err("clearing", &out))?;
    }
    files::private_dir(&out)?;
    let started_at = super::writer::now_micros();

    let src = Connection::open_with_flags(
        &src_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err("opening the database to back up", e))?;
    src.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| sql_err("setting busy timeout", e))?;
    // One read transaction: everything below sees the same instant.
    src.execute_batch("BEGIN")
        .map_err(|e| sql_err("starting the backup transaction", e))?;
    let window: i64 = src
        .query_row(
            "SELECT value FROM meta WHERE key = 'window_micros'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map_err(|e| sql_err("reading meta", e))?
        .parse()
        .map_err(|_| StoreError::Internal("corrupt window_micros".into()))?;
    let sealed = schema::log_sealed(&src)?;

    let mut state = open_state(repo)?;
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    let mut unchanged = 0;
    for (kind, sql) in [(0u8, seg_sigs(&src)?), (1u8, ROLLUP_SIGS.to_owned())] {
        let now = sig_rows(
            &mut src
                .prepare(&sql)
                .map_err(|e| sql_err("reading signatures", e))?,
            [],
        )?;
        let before = sig_rows(
            &mut state
                .prepare(
                    "SELECT well_id, window_start, sig FROM sig WHERE kind = ?1
                     ORDER BY well_id, window_start",
                )
                .map_err(|e| sql_err("reading the chain state", e))?,
            [kind],
        )?;
        let (c, r, s) = diff(kind, &now, &before);
        changed.extend(c);
        removed.extend(r);
        unchanged += s;
    }

    let delta_path = out.join(DELTA);
    files::private_file(&delta_path)?;
    let mut d = Connection::open(&delta_path).map_err(|e| sql_err("creating the delta", e))?;
    schema::init(&mut d, window)?;
    d.execute_batch(
        "DELETE FROM meta;
         CREATE TABLE removed (kind INTEGER NOT NULL, well_id TEXT NOT NULL,
                               window_start INTEGER NOT NULL);",
    )
    .map_err(|e| sql_err("creating the delta", e))?;
    let (mut segments_copied, mut rollups_copied, mut readings) = (0u64, 0u64, 0u64);
    {
        let tx = d
            .transaction()
            .map_err(|e| sql_err("writing the delta", e))?;
        // A data directory last opened by an older release has no segment checksums.
        let checksum_column = if schema::has_segment_checksums(&src)? {
            "checksum"
        } else {
            "NULL"
        };
        let mut get_seg = src
            .prepare(&format!(
                "SELECT min_ts, max_ts, count, data, {checksum_column} FROM segments
                 WHERE well_id = ?1 AND window_start = ?2"
            ))
            .map_err(|e| sql_err("reading segments", e))?;
        let mut get_rollup = src
            .prepare("SELECT data FROM rollups WHERE well_id = ?1 AND window_start = ?2")
            .map_err(|e| sql_err("reading rollups", e))?;
        for (kind, well, ws) in &changed {
            if *kind == 0 {
                let (min, max, count, data, checksum): (i64, i64, i64, Vec<u8>, Option<i64>) =
                    get_seg
                        .query_row(params![well, ws], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                        })
                        .map_err(|e| sql_err("reading a segment", e))?;
                // Verified as it is copied: a damaged segment is not backed up silently. By
                // its checksum when it has one, else decoded.
                if let Some(sum) = checksum {
                    if codec::segment_checksum(&data, count, min, max) != sum {
                        return Err(StoreError::Internal(format!(
                            "segment ({well}, {ws}) is damaged: it does not match its checksum"
                        )));
                    }
                } else {
                    let points = codec::decode_segment(&data).map_err(|e| {
                        StoreError::Internal(format!("segment ({well}, {ws}) is damaged: {e}"))
                    })?;
                    if points.len() as i64 != count {
                        return Err(StoreError::Internal(format!(
                            "segment ({well}, {ws}) holds {} readings, indexed {count}",
                            points.len()
                        )));
                    }
                }
                tx.execute(
                    "INSERT INTO segments(well_id, window_start, min_ts, max_ts, count, data,
                                          checksum)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![well, ws, min, max, count, data, checksum],
                )
                .map_err(|e| sql_err("writing the delta", e))?;
                segments_copied += 1;
            } else {
                let data: Vec<u8> = get_rollup
                    .query_row(params![well, ws], |r| r.get(0))
                    .map_err(|e| sql_err("reading a rollup", e))?;
                tx.execute(
                    "INSERT INTO rollups VALUES (?1, ?2, ?3)",
                    params![well, ws, data],
                )
                .map_err(|e| sql_err("writing the delta", e))?;
                rollups_copied += 1;
            }
        }
        for (kind, well, ws) in &removed {
            tx.execute(
                "INSERT INTO removed VALUES (?1, ?2, ?3)",
                params![kind, well, ws],
            )
            .map_err(|e| sql_err("writing the delta", e))?;
        }
        for table in WHOLE_TABLES {
            let mut stmt = src
                .prepare(&format!("SELECT * FROM {table}"))
                .map_err(|e| sql_err("reading a table", e))?;
            let columns = stmt.column_count();
            let marks = (1..=columns)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut insert = tx
                .prepare(&format!("INSERT INTO {table} VALUES ({marks})"))
                .map_err(|e| sql_err("writing the delta", e))?;
            let mut rows = stmt.query([]).map_err(|e| sql_err("reading a table", e))?;
            while let Some(row) = rows.next().map_err(|e| sql_err("reading a table", e))? {
                let values: Vec<rusqlite::types::Value> = (0..columns)
                    .map(|i| row.get(i))
                    .collect::<Result<_, _>>()
                    .map_err(|e| sql_err("reading a table", e))?;
                // Sealed batches (at or below the mark, in the same snapshot's `meta`) are
                // counted in their segments.
                if table == "log_batches"
                    && let Some(rusqlite::types::Value::Integer(id)) = values.first()
                    && *id > sealed
                    && let Some(rusqlite::types::Value::Blob(data)) = values.get(1)
                {
                    let wells = codec::decode_log_batch(data).map_err(|e| {
                        StoreError::Internal(format!("a log batch is damaged: {e}"))
                    })?;
                    readings += wells.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
                }
                insert
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| sql_err("writing the delta", e))?;
            }
        }
        drop(get_seg);
        drop(get_rollup);
        tx.commit().map_err(|e| sql_err("writing the delta", e))?;
    }
    let sealed: i64 = src
        .query_row("SELECT coalesce(sum(count), 0) FROM segments", [], |r| {
            r.get(0)
        })
        .map_err(|e| sql_err("counting readings", e))?;
    readings += sealed as u64;
    src.execute_batch("COMMIT")
        .map_err(|e| sql_err("ending the backup transaction", e))?;
    drop(src);
    d.close()
        .map_err(|(_, e)| sql_err("closing the delta", e))?;

    let mut entry_files = Vec::new();
    let (bytes, sha256) = sha256_file(&delta_path)?;
    entry_files.push(BackupFile {
        name: DELTA.to_owned(),
        bytes,
        sha256,
    });
    // The alarms and identity databases are small: copied whole, each consistent.
    for name in [alarms::FILE, SECURITY_FILE] {
        let from = dir.join(name);
        if !from.exists() {
            continue;
        }
        let to = out.join(name);
        files::private_file(&to)?;
        let conn = Connection::open_with_flags(
            &from,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err("opening a database to back up", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| sql_err("setting busy timeout", e))?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
            .map_err(|e| sql_err("copying a database", e))?;
        let (bytes, sha256) = sha256_file(&to)?;
        entry_files.push(BackupFile {
            name: name.to_owned(),
            bytes,
            sha256,
        });
    }
    let entry = ChainEntry {
        seq,
        kind: Kind::Incremental,
        dir: name,
        started_at,
        readings,
        files: entry_files,
        segments_copied,
        rollups_copied,
        removed: removed.len() as u64,
    };
    let bytes = entry.files.iter().map(|f| f.bytes).sum();
    // The chain first, then the state: a state left behind by a crash in between only makes
    // the next delta copy more than it needs.
    chain.backups.push(entry.clone());
    write_chain(repo, &chain)?;
    {
        let tx = state
            .transaction()
            .map_err(|e| sql_err("writing the chain state", e))?;
        let d = Connection::open_with_flags(&delta_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_err("opening the delta", e))?;
        for (kind, sql) in [(0u8, seg_sigs(&d)?), (1u8, ROLLUP_SIGS.to_owned())] {
            let rows = sig_rows(
                &mut d
                    .prepare(&sql)
                    .map_err(|e| sql_err("reading the delta", e))?,
                [],
            )?;
            for (well, ws, sig) in rows {
                tx.execute(
                    "INSERT OR REPLACE INTO sig VALUES (?1, ?2, ?3, ?4)",
                    params![kind, well, ws, sig],
                )
                .map_err(|e| sql_err("writing the chain state", e))?;
            }
        }
        for (kind, well, ws) in &removed {
            tx.execute(
                "DELETE FROM sig WHERE kind = ?1 AND well_id = ?2 AND window_start = ?3",
                params![kind, well, ws],
            )
            .map_err(|e| sql_err("writing the chain state", e))?;
        }
        tx.commit()
            .map_err(|e| sql_err("writing the chain state", e))?;
    }
    Ok(ChainReport {
        entry,
        unchanged,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restores the chain in `repo` into `dest` (new or empty): the full backup, then every
/// delta in order up to the last backup started at or before `until` (all of them without
/// `until`). Every file is checked against its checksum first; the result is verified
/// (every segment and log batch decoded, readings counted against the backup's).
pub fn restore_chain(
    repo: &Path,
    dest: &Path,
    until: Option<i64>,
) -> StoreResult<ChainRestoreReport> {
    let started = Instant::now();
    let chain = read_chain(repo)?.ok_or_else(|| {
        StoreError::Unavailable(format!("{} is not a backup chain", repo.display()))
    })?;
    let chosen: Vec<&ChainEntry> = chain
        .backups
        .iter()
        .take_while(|b| until.is_none_or(|t| b.started_at <= t))
        .collect();
    let Some(last) = chosen.last() else {
        return Err(StoreError::Conflict(format!(
            "no backup of the chain in {} started at or before the time asked",
            repo.display()
        )));
    };
    if chosen[0].kind != Kind::Full {
        return Err(StoreError::Internal(
            "the chain does not start with a full backup".into(),
        ));
    }
    // The full backup's telemetry database (the bulk) is checked as it is copied, below.
    let base = chosen[0]
        .files
        .iter()
        .find(|f| f.name == schema::DB_FILE)
        .ok_or_else(|| {
            StoreError::Internal(format!(
                "{}: the full backup lists no {}",
                repo.join(CHAIN).display(),
                schema::DB_FILE
            ))
        })?;
    for (i, b) in chosen.iter().enumerate() {
        for f in &b.files {
            if i == 0 && f.name == schema::DB_FILE {
                continue;
            }
            let path = repo.join(&b.dir).join(&f.name);
            let (bytes, sha256) = sha256_file(&path)?;
            if bytes != f.bytes || sha256 != f.sha256 {
                return Err(StoreError::Internal(format!(
                    "backup file {} does not match its checksum: damaged or altered",
                    path.display()
                )));
            }
        }
    }
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(io_err("reading", dest))?
            .next()
            .is_some()
    {
        return Err(StoreError::Conflict(format!(
            "{} (not empty: choose a new directory)",
            dest.display()
        )));
    }
    files::private_dir(dest)?;
    let db = dest.join(schema::DB_FILE);
    let base_path = repo.join(&chosen[0].dir).join(schema::DB_FILE);
    let (bytes, sha256) = backup::copy_hashing(&base_path, &db)?;
    if bytes != base.bytes || sha256 != base.sha256 {
        let _ = std::fs::remove_file(&db);
        return Err(StoreError::Internal(format!(
            "backup file {} does not match its checksum: damaged or altered",
            base_path.display()
        )));
    }
    // The alarms and identities of the last backup applied (each backup has them whole).
    for name in [alarms::FILE, SECURITY_FILE] {
        let from = repo.join(&last.dir).join(name);
        if from.exists() {
            let to = dest.join(name);
            files::private_file(&to)?;
            std::fs::copy(&from, &to).map_err(io_err("restoring", &to))?;
        }
    }
    let conn = Connection::open(&db).map_err(|e| sql_err("opening the restored database", e))?;
    // A chain started before segment checksums: its base gets the column (NULL: decoded by
    // the verification) so that later deltas' checksums can be applied.
    if chosen.len() > 1 && !schema::has_segment_checksums(&conn)? {
        conn.execute_batch("ALTER TABLE segments ADD COLUMN checksum INTEGER")
            .map_err(|e| sql_err("adding segments.checksum", e))?;
    }
    for b in chosen.iter().skip(1) {
        let delta = repo.join(&b.dir).join(DELTA);
        conn.execute(
            "ATTACH DATABASE ?1 AS d",
            [delta.to_string_lossy().as_ref()],
        )
        .map_err(|e| sql_err("opening a delta", e))?;
        // Deltas made before segment checksums have no checksum column.
        let checksum = if schema::has_column(&conn, "d", "segments", "checksum")? {
            "checksum"
        } else {
            "NULL"
        };
        conn.execute_batch(&format!(
            "BEGIN;
             INSERT OR REPLACE INTO segments
                 (well_id, window_start, min_ts, max_ts, count, data, checksum)
                 SELECT well_id, window_start, min_ts, max_ts, count, data, {checksum}
                 FROM d.segments;
             INSERT OR REPLACE INTO rollups SELECT * FROM d.rollups;
             DELETE FROM segments WHERE (well_id, window_start) IN
                 (SELECT well_id, window_start FROM d.removed WHERE kind = 0);
             DELETE FROM rollups WHERE (well_id, window_start) IN
                 (SELECT well_id, window_start FROM d.removed WHERE kind = 1);
             DELETE FROM meta; INSERT INTO meta SELECT * FROM d.meta;
             DELETE FROM wells; INSERT INTO wells SELECT * FROM d.wells;
             DELETE FROM log_batches; INSERT INTO log_batches(id, data) SELECT id, data FROM d.log_batches;
             DELETE FROM quarantine; INSERT INTO quarantine SELECT * FROM d.quarantine;
             DROP TABLE IF EXISTS main.fleet_rollups;
             COMMIT;"
        ))
        .map_err(|e| sql_err("applying a delta", e))?;
        conn.execute("DETACH DATABASE d", [])
            .map_err(|e| sql_err("closing a delta", e))?;
    }
    conn.close()
        .map_err(|(_, e)| sql_err("closing the restored database", e))?;
    let (report, readings) = check::verify_copy(dest)?;
    if !report.is_clean() {
        return Err(StoreError::Internal(format!(
            "the restored store has damaged data: {}",
            report.damaged.join("; ")
        )));
    }
    if readings != last.readings {
        return Err(StoreError::Internal(format!(
            "restored store holds {readings} readings, the backup recorded {}",
            last.readings
        )));
    }
    Ok(ChainRestoreReport {
        until: (*last).clone(),
        backups_applied: chosen.len(),
        readings,
        seconds: started.elapsed().as_secs_f64(),
    })
}
