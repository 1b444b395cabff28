//! `espwatch store check` / `store repair`: every segment and log batch of a data directory
//! decoded, the damaged ones named; repair moves them (bytes kept) to the `quarantine` table
//! so the store opens and reads cleanly. Check only reads and works next to a running server;
//! repair takes the directory lock (the server must be stopped).

use std::path::Path;

use espwatch_core::WellId;
use rusqlite::Connection;
use serde::Serialize;

use super::schema::{self, sql_err};
use super::{StorageReport, codec, files, lock_dir, writer};
use crate::{StoreError, StoreResult};

/// What a check (or a repair) found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub segments: u64,
    /// Of `segments`, those verified against the checksum recorded in their row
    /// (`codec::segment_checksum`); the others (written before checksums) were decoded.
    /// `store check` decodes every segment and checks the recorded checksum too.
    pub checksummed: u64,
    pub log_batches: u64,
    /// Damaged items found by this run: `segment (WELL, WINDOW_START): reason` or
    /// `log batch ID: reason`.
    pub damaged: Vec<String>,
    /// Moved to the quarantine table by this run (repair only).
    pub repaired: u64,
    /// Items already in the quarantine table (from earlier opens or repairs), described.
    pub quarantined: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }
}

/// Decodes everything in `dir` and reports; changes nothing.
pub fn check(dir: &Path) -> StoreResult<CheckReport> {
    let path = dir.join(schema::DB_FILE);
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no embedded store in {}",
            dir.display()
        )));
    }
    let conn = schema::open_reader(&path)?;
    scan(&conn).map(|(report, _)| report)
}

/// As [`check`], then quarantines every damaged item. Takes the directory lock.
pub fn repair(dir: &Path) -> StoreResult<CheckReport> {
    let path = dir.join(schema::DB_FILE);
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no embedded store in {}",
            dir.display()
        )));
    }
    let _lock = lock_dir(dir)?;
    let conn = schema::open_writer(&path)?;
    let (mut report, damaged) = scan(&conn)?;
    for item in damaged {
        match item {
            Damaged::Segment(well, ws, reason) => {
                writer::quarantine_segment(&conn, &well, ws, &reason)?;
            }
            Damaged::LogBatch(id, reason) => writer::quarantine_log_batch(&conn, id, &reason)?,
        }
        report.repaired += 1;
    }
    report.quarantined = quarantined(&conn)?;
    Ok(report)
}

/// Readings stored in `dir` and the bytes every file of it takes (`espwatch store stats`).
/// Only reads; works next to a running server (whose unsealed readings are counted from the
/// log, and whose WAL is counted as a file like any other).
pub fn storage(dir: &Path) -> StoreResult<StorageReport> {
    let path = dir.join(schema::DB_FILE);
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no embedded store in {}",
            dir.display()
        )));
    }
    let conn = schema::open_reader(&path)?;
    // One read transaction, so the log and the segments are counted at one instant.
    conn.execute_batch("BEGIN")
        .map_err(|e| sql_err("reading storage", e))?;
    let (segments, sealed, compact, segment_bytes): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(count), 0),
                    coalesce(sum(substr(data, 1, 2) = x'0201'), 0), -- version 2, compact: codec::is_compact
                    coalesce(sum(length(data)), 0)
             FROM segments",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(|e| sql_err("reading storage", e))?;
    let pragma = |name: &str| -> StoreResult<i64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(|e| sql_err("reading storage", e))
    };
    let free_bytes = pragma("freelist_count")? * pragma("page_size")?;
    let mut logged = 0u64;
    // Batches at or below the sealed mark are in the segments already (their deletion had
    // not finished).
    let sealed_mark = schema::log_sealed(&conn)?;
    for_each_log_batch(&conn, sealed_mark, |_, decoded| {
        // A damaged batch counts nothing here; `store check` names it.
        if let Ok(wells) = decoded {
            logged += log_readings(&wells);
        }
    })?;
    conn.execute_batch("COMMIT")
        .map_err(|e| sql_err("reading storage", e))?;
    drop(conn);
    let files = files::sizes(dir)?;
    Ok(StorageReport {
        readings: sealed as u64 + logged,
        segments: segments as u64,
        compact_segments: compact as u64,
        segment_bytes: segment_bytes as u64,
        free_bytes: free_bytes as u64,
        total_bytes: files.iter().map(|f| f.1).sum(),
        files,
    })
}

/// Verifies every segment and log batch of `dir`, a copy nobody writes to (a backup just
/// made, a restore), spread over the cores: each worker has its own read connection and takes
/// the next run of wells from a shared queue. A segment with a recorded checksum is verified
/// by hashing its bytes and row against it (a mismatch: damaged); one without (written before
/// checksums) is decoded into one reused buffer, and counts as damaged when it does not decode
/// or decodes to another number of readings than its row says. Returns what was found and the
/// readings held (the sealed counts plus the readings of the log above the sealed mark, as
/// [`storage`] counts them).
///
/// Not for a directory a server is writing: the workers' snapshots are not one instant.
pub fn verify_copy(dir: &Path) -> StoreResult<(CheckReport, u64)> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let path = dir.join(schema::DB_FILE);
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no embedded store in {}",
            dir.display()
        )));
    }
    let conn = schema::open_reader(&path)?;
    // A copy of a data directory last opened by an older release has no checksum column.
    let checksum_column = if schema::has_segment_checksums(&conn)? {
        "checksum"
    } else {
        "NULL"
    };
    // Runs of wells of about equal segment counts, several per worker so that the work
    // balances when wells differ.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per_well: Vec<(String, u64)> = {
        let mut stmt = conn
            .prepare("SELECT well_id, count(*) FROM segments GROUP BY well_id ORDER BY well_id")
            .map_err(|e| sql_err("checking segments", e))?;
        stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(|e| sql_err("checking segments", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| sql_err("checking segments", e))?
    };
    let total: u64 = per_well.iter().map(|w| w.1).sum();
    let target = total.div_ceil((workers * 8) as u64).max(1);
    let mut runs: Vec<(String, String)> = Vec::new();
    let mut acc = 0u64;
    let mut first: Option<&str> = None;
    for (well, n) in &per_well {
        let lo = *first.get_or_insert(well.as_str());
        acc += n;
        if acc >= target {
            runs.push((lo.to_owned(), well.clone()));
            first = None;
            acc = 0;
        }
    }
    if let (Some(lo), Some((last, _))) = (first, per_well.last()) {
        runs.push((lo.to_owned(), last.clone()));
    }
    let next = AtomicUsize::new(0);
    // Damaged segments (well, window start, reason), segments, checksummed, sealed readings.
    type Found = (Vec<(String, i64, String)>, u64, u64, u64);
    let found: Mutex<Found> = Mutex::new((Vec::new(), 0, 0, 0));
    let worker = || -> StoreResult<()> {
        let conn = schema::open_reader(&path)?;
        let err = |e| sql_err("checking segments", e);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT well_id, window_start, count, min_ts, max_ts, {checksum_column}, data
                 FROM segments WHERE well_id >= ?1 AND well_id <= ?2"
            ))
            .map_err(err)?;
        let mut out: Vec<espwatch_core::Point> = Vec::new();
        let (mut segments, mut checksummed, mut sealed) = (0u64, 0u64, 0u64);
        let mut damaged = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((lo, hi)) = runs.get(i) else { break };
            let mut rows = stmt.query([lo, hi]).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                segments += 1;
                let id: String = row.get(0).map_err(err)?;
                let ws: i64 = row.get(1).map_err(err)?;
                let count: i64 = row.get(2).map_err(err)?;
                let bounds: (i64, i64) = (row.get(3).map_err(err)?, row.get(4).map_err(err)?);
                let recorded: Option<i64> = row.get(5).map_err(err)?;
                let data = row
                    .get_ref(6)
                    .and_then(|v| v.as_blob().map_err(Into::into))
                    .map_err(err)?;
                sealed += count.max(0) as u64;
                let problem = if let Err(e) = WellId::parse(&id) {
                    Some(format!("invalid well id: {e}"))
                } else if let Some(recorded) = recorded {
                    checksummed += 1;
                    checksum_problem(data, count, bounds, recorded)
                } else {
                    out.clear();
                    match codec::decode_segment_channels(
                        data,
                        (i64::MIN, i64::MAX),
                        codec::ALL_CHANNELS,
                        &mut out,
                    ) {
                        Err(e) => Some(e.to_string()),
                        Ok(_) if out.len() as i64 != count => Some(format!(
                            "holds {} readings, its row says {count}",
                            out.len()
                        )),
                        Ok(_) => None,
                    }
                };
                if let Some(reason) = problem {
                    damaged.push((id, ws, reason));
                }
            }
        }
        let mut f = found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.0.extend(damaged);
        f.1 += segments;
        f.2 += checksummed;
        f.3 += sealed;
        Ok(())
    };
    let mut report = CheckReport::default();
    let mut logged = 0u64;
    std::thread::scope(|scope| -> StoreResult<()> {
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
        // The log (small: what was not sealed yet) on this thread meanwhile.
        let sealed_mark = schema::log_sealed(&conn)?;
        report.log_batches = for_each_log_batch(&conn, i64::MIN, |id, decoded| match decoded {
            Ok(wells) if id > sealed_mark => logged += log_readings(&wells),
            Ok(_) => {}
            Err(e) => report.damaged.push(format!("log batch {id}: {e}")),
        })?;
        for h in handles {
            h.join()
                .map_err(|_| StoreError::Internal("a verification thread panicked".into()))??;
        }
        Ok(())
    })?;
    let (mut damaged, segments, checksummed, sealed) = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    damaged.sort();
    report.segments = segments;
    report.checksummed = checksummed;
    let mut described: Vec<String> = damaged
        .into_iter()
        .map(|(id, ws, reason)| format!("segment ({id}, {ws}): {reason}"))
        .collect();
    described.append(&mut report.damaged);
    report.damaged = described;
    report.quarantined = quarantined(&conn)?;
    Ok((report, sealed + logged))
}

/// The readings `dir` holds, as [`verify_copy`] counts them (the sealed counts of the segment
/// rows plus the readings of the log above the sealed mark), without verifying the segments:
/// for a restore whose files match the SHA-256 of a backup verified when it was made. A log
/// batch that does not decode fails it.
pub fn count_readings(dir: &Path) -> StoreResult<u64> {
    let conn = schema::open_reader(&dir.join(schema::DB_FILE))?;
    conn.execute_batch("BEGIN")
        .map_err(|e| sql_err("counting readings", e))?;
    let sealed: i64 = conn
        .query_row("SELECT coalesce(sum(count), 0) FROM segments", [], |r| {
            r.get(0)
        })
        .map_err(|e| sql_err("counting readings", e))?;
    let sealed_mark = schema::log_sealed(&conn)?;
    let mut logged = 0u64;
    let mut damaged = None;
    for_each_log_batch(&conn, sealed_mark, |id, decoded| match decoded {
        Ok(wells) => logged += log_readings(&wells),
        Err(e) => {
            damaged.get_or_insert(format!("log batch {id}: {e}"));
        }
    })?;
    if let Some(damaged) = damaged {
        return Err(StoreError::Internal(format!(
            "the copy in {} has damaged data: {damaged}",
            dir.display()
        )));
    }
    Ok(sealed.max(0) as u64 + logged)
}

/// Why a segment does not match the checksum recorded in its row, if it does not.
fn checksum_problem(
    data: &[u8],
    count: i64,
    (min_ts, max_ts): (i64, i64),
    recorded: i64,
) -> Option<String> {
    (codec::segment_checksum(data, count, min_ts, max_ts) != recorded).then(|| {
        "does not match its checksum (its bytes or its row changed after it was written)".to_owned()
    })
}

/// Readings in a decoded log batch.
fn log_readings(wells: &[codec::LogWell]) -> u64 {
    wells.iter().map(|w| w.1.len() as u64).sum()
}

/// Decodes each log batch with an id above `above`, in id order, handing `f` its id and the
/// decoded batch (or why it does not decode). Returns the batches seen.
fn for_each_log_batch(
    conn: &Connection,
    above: i64,
    mut f: impl FnMut(i64, Result<Vec<codec::LogWell>, codec::CodecError>),
) -> StoreResult<u64> {
    let err = |e| sql_err("checking the log", e);
    let mut stmt = conn
        .prepare("SELECT id, data FROM log_batches WHERE id > ?1 ORDER BY id")
        .map_err(err)?;
    let mut rows = stmt.query([above]).map_err(err)?;
    let mut seen = 0u64;
    while let Some(row) = rows.next().map_err(err)? {
        seen += 1;
        let id: i64 = row.get(0).map_err(err)?;
        let data = row
            .get_ref(1)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(err)?;
        f(id, codec::decode_log_batch(data));
    }
    Ok(seen)
}

enum Damaged {
    Segment(WellId, i64, String),
    LogBatch(i64, String),
}

/// Decodes every segment (and checks the checksum recorded in its row, if any) and every log
/// batch.
fn scan(conn: &Connection) -> StoreResult<(CheckReport, Vec<Damaged>)> {
    let mut report = CheckReport::default();
    let mut damaged = Vec::new();
    let checksum_column = if schema::has_segment_checksums(conn)? {
        "checksum"
    } else {
        "NULL"
    };
    let err = |e| sql_err("checking segments", e);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT well_id, window_start, count, min_ts, max_ts, {checksum_column}, data
             FROM segments ORDER BY well_id, window_start"
        ))
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        report.segments += 1;
        let id: String = row.get(0).map_err(err)?;
        let ws: i64 = row.get(1).map_err(err)?;
        let count: i64 = row.get(2).map_err(err)?;
        let bounds: (i64, i64) = (row.get(3).map_err(err)?, row.get(4).map_err(err)?);
        let recorded: Option<i64> = row.get(5).map_err(err)?;
        let data = row
            .get_ref(6)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(err)?;
        if recorded.is_some() {
            report.checksummed += 1;
        }
        let problem = match (WellId::parse(&id), codec::decode_segment(data)) {
            (Err(e), _) => Some(format!("invalid well id: {e}")),
            (_, Err(e)) => Some(e.to_string()),
            _ => recorded.and_then(|sum| checksum_problem(data, count, bounds, sum)),
        };
        if let Some(reason) = problem {
            report
                .damaged
                .push(format!("segment ({id}, {ws}): {reason}"));
            if let Ok(well) = WellId::parse(&id) {
                damaged.push(Damaged::Segment(well, ws, reason));
            }
        }
    }
    drop(rows);
    drop(stmt);
    report.log_batches = for_each_log_batch(conn, i64::MIN, |id, decoded| {
        if let Err(e) = decoded {
            report.damaged.push(format!("log batch {id}: {e}"));
            damaged.push(Damaged::LogBatch(id, e.to_string()));
        }
    })?;
    report.quarantined = quarantined(conn)?;
    Ok((report, damaged))
}

fn quarantined(conn: &Connection) -> StoreResult<Vec<String>> {
    // A database last opened by an older espwatch has no quarantine table yet.
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'quarantine'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_err("listing the quarantine", e))?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare("SELECT kind, well_id, window_start, log_id, reason FROM quarantine ORDER BY id")
        .map_err(|e| sql_err("listing the quarantine", e))?;
    let rows = stmt
        .query_map([], |r| {
            let kind: String = r.get(0)?;
            let well: Option<String> = r.get(1)?;
            let ws: Option<i64> = r.get(2)?;
            let log_id: Option<i64> = r.get(3)?;
            let reason: String = r.get(4)?;
            Ok(match (well, ws, log_id) {
                (Some(w), Some(ws), _) => format!("{kind} ({w}, {ws}): {reason}"),
                (_, _, Some(id)) => format!("{kind} {id}: {reason}"),
                _ => format!("{kind}: {reason}"),
            })
        })
        .map_err(|e| sql_err("listing the quarantine", e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| sql_err("listing the quarantine", e))
}
