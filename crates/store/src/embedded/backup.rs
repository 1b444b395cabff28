//! `espwatch store backup|restore`: an online, consistent copy of a data directory.
//!
//! Each database of the directory (telemetry, alarms, identities) is copied with SQLite's
//! `VACUUM INTO` on a read-only connection: one read transaction, so the copy is the database
//! at one instant (acknowledged readings are either in a segment or in the log then, and both
//! are copied), taken next to a running server without stopping its writes, and compacted on
//! the way. The three databases are copied one after the other, each consistent in itself.
//! A manifest (`BACKUP.json`) records each file's size and SHA-256, the readings held and how
//! the copy was verified: before the backup is reported done, every segment is checked
//! against the checksum recorded in its row when it was written (segments written before
//! checksums are decoded instead), every log batch decoded and the readings counted. A restore
//! copies each file checking its SHA-256 on the way; a backup whose manifest records that
//! verification is then trusted (the bytes restored are the bytes verified) and only its
//! readings are counted, while a backup of an older release (no such record) is verified again.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::schema::{self, sql_err};
use super::{SECURITY_FILE, alarms, check, files};
use crate::{StoreError, StoreResult};

pub const MANIFEST: &str = "BACKUP.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What `BACKUP.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// UTC microseconds when the copy started.
    pub started_at: i64,
    pub source: String,
    /// Readings in the telemetry database of the copy (sealed and in the log).
    pub readings: u64,
    pub files: Vec<BackupFile>,
    /// How the copy was verified before this manifest was written; absent in backups of
    /// releases before segment checksums (their restore verifies the copy again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

/// The verification of a backup, recorded in its manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verified {
    /// Segments checked against the checksum recorded in their row.
    pub segments_by_checksum: u64,
    /// Segments decoded (written before checksums).
    pub segments_decoded: u64,
    pub log_batches: u64,
}

/// A finished backup or restore.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub seconds: f64,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = format!("{what} {}", path.display());
    move |e| StoreError::Internal(format!("{what}: {e}"))
}

/// A directory that does not exist yet, or is empty; created private.
fn fresh_dir(dir: &Path) -> StoreResult<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io_err("reading", dir))?;
        if entries.next().is_some() {
            return Err(StoreError::Conflict(format!(
                "{} (not empty: choose a new directory)",
                dir.display()
            )));
        }
    }
    files::private_dir(dir)
}

pub(crate) fn sha256_of(path: &Path) -> StoreResult<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let digest = hasher.finalize();
    Ok((total, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

/// The databases of a data directory, telemetry first.
fn databases() -> [&'static str; 3] {
    [schema::DB_FILE, alarms::FILE, SECURITY_FILE]
}

/// Copies the data directory `dir` (a server may be running on it) into `dest`, which must
/// be new or empty, then verifies the copy.
pub fn backup(dir: &Path, dest: &Path) -> StoreResult<BackupReport> {
    let started = Instant::now();
    if !dir.join(schema::DB_FILE).exists() {
        return Err(StoreError::Unavailable(format!(
            "no embedded store in {}",
            dir.display()
        )));
    }
    fresh_dir(dest)?;
    let started_at = super::writer::now_micros();
    let mut manifest = Manifest {
        started_at,
        source: dir.display().to_string(),
        readings: 0,
        files: Vec::new(),
        verified: None,
    };
    let mut copied = Vec::new();
    for name in databases() {
        let from = dir.join(name);
        if !from.exists() {
            continue;
        }
        let to = dest.join(name);
        files::private_file(&to)?;
        // VACUUM INTO wants a missing or empty file; private_file created it empty, 0600.
        let conn = Connection::open_with_flags(
            &from,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err("opening a database to back up", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| sql_err("setting busy timeout", e))?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
            .map_err(|e| sql_err("copying a database", e))?;
        drop(conn);
        copied.push(name);
    }
    // The checksums on a thread of their own while the copy is decoded on the others.
    let (files, readings) = std::thread::scope(|scope| {
        let sums = scope.spawn(|| {
            copied
                .iter()
                .map(|name| {
                    let (bytes, sha256) = sha256_of(&dest.join(name))?;
                    Ok(BackupFile {
                        name: (*name).to_owned(),
                        bytes,
                        sha256,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()
        });
        let readings = verify(dest);
        let files = sums
            .join()
            .unwrap_or_else(|_| Err(StoreError::Internal("checksum thread panicked".into())));
        (files, readings)
    });
    manifest.files = files?;
    let (readings, verified) = readings?;
    manifest.readings = readings;
    manifest.verified = Some(verified);
    write_manifest(dest, &manifest)?;
    Ok(BackupReport {
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restores the backup in `from` into `dir` (new or empty): the files copied with their
/// checksums checked on the way (a mismatch removes what was copied and fails); then, for a
/// backup whose manifest records its verification, the readings counted (the restored bytes
/// are the verified ones); for an older backup, the result verified like a backup.
pub fn restore(from: &Path, dir: &Path) -> StoreResult<BackupReport> {
    let started = Instant::now();
    let path = from.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(io_err("reading", &path))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?;
    for file in &manifest.files {
        if !databases().contains(&file.name.as_str()) {
            return Err(StoreError::Internal(format!(
                "{}: unexpected file {:?}",
                path.display(),
                file.name
            )));
        }
    }
    fresh_dir(dir)?;
    // Copied and checksummed in one pass: the bytes restored are the bytes checked.
    for file in &manifest.files {
        let to: PathBuf = dir.join(&file.name);
        let (bytes, sha256) = copy_hashing(&from.join(&file.name), &to)?;
        if bytes != file.bytes || sha256 != file.sha256 {
            for f in &manifest.files {
                let _ = std::fs::remove_file(dir.join(&f.name));
            }
            return Err(StoreError::Internal(format!(
                "backup file {} does not match its checksum: damaged or altered",
                from.join(&file.name).display()
            )));
        }
    }
    let readings = match manifest.verified {
        Some(_) => check::count_readings(dir)?,
        None => verify(dir)?.0,
    };
    if readings != manifest.readings {
        return Err(StoreError::Internal(format!(
            "restored store holds {readings} readings, the backup recorded {}",
            manifest.readings
        )));
    }
    Ok(BackupReport {
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Verifies every segment (by its checksum, or decoded) and log batch of the copy (on every
/// core, [`check::verify_copy`]); returns the readings it holds and how it was verified.
pub(crate) fn verify(dir: &Path) -> StoreResult<(u64, Verified)> {
    let (report, readings) = check::verify_copy(dir)?;
    if !report.is_clean() {
        return Err(StoreError::Internal(format!(
            "the copy in {} has damaged data: {}",
            dir.display(),
            report.damaged.join("; ")
        )));
    }
    Ok((
        readings,
        Verified {
            segments_by_checksum: report.checksummed,
            segments_decoded: report.segments - report.checksummed,
            log_batches: report.log_batches,
        },
    ))
}

/// Copies `from` to `to` (created private), hashing the bytes on the way: (size, SHA-256).
pub(crate) fn copy_hashing(from: &Path, to: &Path) -> StoreResult<(u64, String)> {
    use std::io::Write as _;
    let mut src = std::fs::File::open(from).map_err(io_err("opening", from))?;
    files::private_file(to)?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(to)
        .map_err(io_err("creating", to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io_err("reading", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_err("writing", to))?;
        total += n as u64;
    }
    dst.sync_all().map_err(io_err("writing", to))?;
    let digest = hasher.finalize();
    Ok((total, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> StoreResult<()> {
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| StoreError::Internal(format!("encoding the manifest: {e}")))?;
    files::private_file(&path)?;
    std::fs::write(&path, text).map_err(io_err("writing", &path))
}
