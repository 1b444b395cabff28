//! The SQLite schema of the embedded engine and how its connections are opened.
//!
//! Tables:
//! - `meta`: key/value settings fixed at creation (schema version, window width) and the
//!   health probe's scratch row.
//! - `wells`: the registry, metadata as JSON.
//! - `log_batches`: one blob per commit holding the readings not yet sealed into segments,
//!   with its commit time (`committed_at`, UTC micros; 0 for rows of older releases); ids
//!   only grow (`meta.log_seq` keeps the highest across checkpoints that empty the table).
//!   A checkpoint's install transaction writes the segments and `meta.log_sealed`, the
//!   highest batch id they hold: batches at or below it are sealed, never replayed, and
//!   deleted by the writer in bounded steps afterwards (see `writer`).
//! - `ship_log`: sealed log batches the log shipper had not shipped yet (moved there by the
//!   steps that delete the sealed log, deleted once shipped); never replayed.
//! - `segments`: one columnar blob per (well, time window), clustered by that key so a
//!   one-well time range is one short b-tree range scan; `checksum` is
//!   `codec::segment_checksum` of the blob and the row's count and bounds, recorded when the
//!   segment is written, so backups and restores verify a segment by hashing it instead of
//!   decoding it. NULL for segments of older releases (the column is added on open; they are
//!   verified by decoding until the next seal of their window or `store compact` rewrites
//!   them).
//! - `rollups`: the hourly aggregates of each segment (same key), written with it; absent
//!   for segments of older releases until they are rewritten (queries then use raw points).
//! - `fleet_rollups`: per window, the hourly aggregates of every well together (see
//!   `fleet_rollup`), built from `rollups` after the window closes; derived data, deleted
//!   whenever the window's data changes, rebuilt by later checkpoints (created empty on the
//!   first open by this release).
//! - `quarantine`: damaged segments and log batches moved aside (bytes kept) so the store
//!   opens; reported by the health probe and `espwatch store check`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{StoreError, StoreResult};

pub const SCHEMA_VERSION: i64 = 1;
pub const DB_FILE: &str = "espwatch.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS wells (
    well_id         TEXT PRIMARY KEY,
    meta            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    auto_registered INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log_batches (
    id           INTEGER PRIMARY KEY,
    data         BLOB NOT NULL,
    committed_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ship_log (
    id           INTEGER PRIMARY KEY,
    data         BLOB NOT NULL,
    committed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS segments (
    well_id      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    min_ts       INTEGER NOT NULL,
    max_ts       INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    data         BLOB NOT NULL,
    checksum     INTEGER,
    PRIMARY KEY (well_id, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups (
    well_id      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (well_id, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fleet_rollups (
    window_start INTEGER PRIMARY KEY,
    readings     INTEGER NOT NULL,
    fingerprint  INTEGER NOT NULL,
    data         BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    well_id        TEXT,
    window_start   INTEGER,
    log_id         INTEGER,
    reason         TEXT NOT NULL,
    quarantined_at INTEGER NOT NULL,
    data           BLOB NOT NULL
);
";

pub fn sql_err(context: &str, e: rusqlite::Error) -> StoreError {
    tracing::error!(error = %e, "embedded store: {context}");
    sql_fail(context, e)
}

/// [`sql_err`] without the log line: for an error handed back to a caller that reports it
/// once itself (an append's requests, each in its own request log line; the field ingest's
/// retry warning; the read paths of queries, alarms, notifications and the readiness probes,
/// whose requests log the error in their own line and whose background callers, the
/// diagnostics' rebuilds and the notifier, log it in their warning), so that it is not logged
/// once more here (the error policy of issue 17).
pub fn sql_fail(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("{context}: {e}"))
}

/// Opens the single write connection: WAL so readers never block the writer and a commit is
/// one sequential append, `synchronous=FULL` so a returned commit survives power loss.
/// The WAL is copied into the database file by a thread of its own (`writer`,
/// [`open_checkpointer`]); SQLite's automatic checkpoint, which would run inside a commit,
/// only steps in past ~256 MiB of WAL (that thread stopped or far behind); the WAL file is
/// truncated back to 64 MiB after a large one.
///
/// A new database is created with incremental auto-vacuum, so the pages the log frees can be
/// given back to the file system (at close and by `store compact`); older databases get it
/// from `store compact`'s `VACUUM`.
pub fn open_writer(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(|e| sql_err("opening the database", e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| sql_err("setting busy timeout", e))?;
    // Only takes effect before the first table exists, hence before anything else.
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")
        .map_err(|e| sql_err("setting auto_vacuum", e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| sql_err("enabling WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Internal(format!(
            "database refused WAL journal mode (got {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=OFF;
         PRAGMA wal_autocheckpoint=65536;
         PRAGMA journal_size_limit=67108864;",
    )
    .map_err(|e| sql_err("setting pragmas", e))?;
    set_cache_mib(&conn, DEFAULT_CACHE_MIB)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Opens the connection that copies the WAL into the database file (`PRAGMA
/// wal_checkpoint(PASSIVE)`) next to the writer; it writes nothing else.
pub fn open_checkpointer(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err("opening the WAL checkpoint connection", e))?;
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;")
        .map_err(|e| sql_err("setting pragmas", e))?;
    set_cache_mib(&conn, 1)?;
    Ok(conn)
}

/// Opens a read-only connection for queries; safe alongside the writer thanks to WAL.
pub fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err("opening a read connection", e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| sql_err("setting busy timeout", e))?;
    // The same plan whatever the bound values: without it this SQLite re-prepares the segment
    // read on every new well id bound (`SQLITE_STMTSTATUS_REPREPARE` = runs), which was ~5 % of
    // the CPU of `espwatch-bench ask` (a fleet query binds 1 000 well ids). The store runs no
    // ANALYZE, so no plan here depends on a bound value.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(|e| sql_err("setting the query planner stability guarantee", e))?;
    set_cache_mib(&conn, DEFAULT_READ_CACHE_MIB)?;
    // Database pages read through a memory map of the file (the first `READ_MMAP_BYTES`), not
    // copied by `pread` into each connection's page cache: a fleet read touches more pages
    // (1 000 wells' rollups and edge segments) than that cache holds, and ~17 % of the CPU of
    // the fleet-wide questions of `espwatch-bench ask` was SQLite reading pages it had just
    // evicted. The map shares the operating system's cache of the file, so it costs no memory
    // of its own; pages still in the WAL are read from the WAL as before.
    conn.execute_batch(&format!("PRAGMA mmap_size={READ_MMAP_BYTES};"))
        .map_err(|e| sql_err("setting the read map size", e))?;
    Ok(conn)
}

/// How much of the database file a read connection maps (`PRAGMA mmap_size`); the rest is
/// read with `pread` through the page cache.
pub const READ_MMAP_BYTES: u64 = 1 << 30;

/// SQLite page cache of the writer's connection, MiB (`EmbeddedOptions::cache_mib`).
pub const DEFAULT_CACHE_MIB: u32 = 16;
/// SQLite page cache of each read connection, MiB (`EmbeddedOptions::read_cache_mib`).
pub const DEFAULT_READ_CACHE_MIB: u32 = 8;

/// Bounds the connection's page cache (`PRAGMA cache_size`, in KiB when negative). Pages are
/// allocated as they are read, so this is the most the cache may grow to.
pub fn set_cache_mib(conn: &Connection, mib: u32) -> StoreResult<()> {
    let kib = i64::from(mib.max(1)) * 1024;
    conn.execute_batch(&format!("PRAGMA cache_size=-{kib};"))
        .map_err(|e| sql_err("setting the page cache size", e))
}

/// Creates the schema when missing and returns the window width in force.
///
/// The window width is fixed when the database is created: segments are keyed by window
/// start, so changing it later would break lookups. A different `requested_window` for an
/// existing database is ignored with a warning.
pub fn init(conn: &mut Connection, requested_window: i64) -> StoreResult<i64> {
    let tx = conn
        .transaction()
        .map_err(|e| sql_err("starting schema transaction", e))?;
    tx.execute_batch(SCHEMA)
        .map_err(|e| sql_err("creating schema", e))?;
    // Data directories of older releases: the log's commit time, appended as the last column.
    let has_committed_at: bool = tx
        .query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('log_batches') WHERE name = 'committed_at'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_err("inspecting log_batches", e))?;
    if !has_committed_at {
        tx.execute_batch(
            "ALTER TABLE log_batches ADD COLUMN committed_at INTEGER NOT NULL DEFAULT 0",
        )
        .map_err(|e| sql_err("adding log_batches.committed_at", e))?;
    }
    // Data directories of older releases: segment checksums, NULL for their segments.
    if !has_segment_checksums(&tx)? {
        tx.execute_batch("ALTER TABLE segments ADD COLUMN checksum INTEGER")
            .map_err(|e| sql_err("adding segments.checksum", e))?;
    }
    let version = get_meta(&tx, "schema_version")?;
    match version {
        None => {
            set_meta(&tx, "schema_version", &SCHEMA_VERSION.to_string())?;
            set_meta(&tx, "window_micros", &requested_window.to_string())?;
        }
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Err(StoreError::Internal(format!(
                "database schema version {v} is not supported (expected {SCHEMA_VERSION})"
            )));
        }
    }
    let window =
        match get_meta(&tx, "window_micros")? {
            Some(w) => w.parse::<i64>().ok().filter(|w| *w > 0).ok_or_else(|| {
                StoreError::Internal(format!("corrupt window_micros {w:?} in meta"))
            })?,
            None => {
                set_meta(&tx, "window_micros", &requested_window.to_string())?;
                requested_window
            }
        };
    if window != requested_window {
        tracing::warn!(
            stored = window,
            requested = requested_window,
            "embedded store: segment window is fixed at creation; keeping the stored one"
        );
    }
    tx.commit().map_err(|e| sql_err("committing schema", e))?;
    Ok(window)
}

/// Whether the `segments` table of `conn`'s main database has the `checksum` column (a copy
/// of a data directory last opened by an older release has not; its segments are all
/// verified by decoding).
pub fn has_segment_checksums(conn: &Connection) -> StoreResult<bool> {
    has_column(conn, "main", "segments", "checksum")
}

/// Whether table `table` of the attached database `db` has column `column`.
pub fn has_column(conn: &Connection, db: &str, table: &str, column: &str) -> StoreResult<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1, ?2) WHERE name = ?3",
        [table, db, column],
        |r| r.get(0),
    )
    .map_err(|e| sql_err("inspecting the schema", e))
}

/// `meta.log_sealed`: log batches with ids at or below it are sealed into segments (0: none
/// recorded). Readers that count or replay the log skip them.
pub fn log_sealed(conn: &Connection) -> StoreResult<i64> {
    Ok(get_meta(conn, LOG_SEALED)?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0))
}

/// The `meta` key of [`log_sealed`].
pub const LOG_SEALED: &str = "log_sealed";

pub fn get_meta(conn: &Connection, key: &str) -> StoreResult<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(|e| sql_err("reading meta", e))
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> StoreResult<()> {
    set_meta_unlogged(conn, key, value).inspect_err(|e| {
        tracing::error!(error = %e, "embedded store: writing meta");
    })
}

/// [`set_meta`] without the log line (see [`sql_fail`]).
pub fn set_meta_unlogged(conn: &Connection, key: &str, value: &str) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map_err(|e| sql_fail("writing meta", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{StatementStatus, params};

    /// A read connection runs the segment read for one well after another without
    /// re-preparing it (it did on every new well id: a fleet query binds 1 000).
    #[test]
    fn reads_are_not_reprepared_for_each_well() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut writer = open_writer(&path).unwrap();
        init(&mut writer, 4 * 3_600_000_000).unwrap();
        for w in 0..20 {
            writer
                .execute(
                    "INSERT INTO segments (well_id, window_start, min_ts, max_ts, count, data)
                     VALUES (?1, 0, 0, 0, 1, x'00')",
                    params![format!("W{w:02}")],
                )
                .unwrap();
        }
        let reader = open_reader(&path).unwrap();
        let sql = "SELECT window_start, data FROM segments
                   WHERE well_id = ?1 AND window_start >= ?2 AND window_start < ?3
                   ORDER BY window_start";
        for w in 0..20 {
            let mut stmt = reader.prepare_cached(sql).unwrap();
            let n = stmt
                .query_map(params![format!("W{w:02}"), 0, 1], |_| Ok(()))
                .unwrap()
                .count();
            assert_eq!(n, 1);
        }
        let stmt = reader.prepare_cached(sql).unwrap();
        assert_eq!(stmt.get_status(StatementStatus::Run), 20);
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
    }
}
