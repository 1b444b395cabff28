//! `espwatch store check|repair|stats|compact`: the embedded store's segments and log batches
//! decoded, the damaged ones named (check) or quarantined with their bytes kept (repair); the
//! bytes per reading (stats); every segment rewritten in the compact format (compact); an
//! online consistent copy of the data directory (backup) and its restore (restore), either
//! whole or as a chain of incremental backups restored up to a point in time (`--until`);
//! either in a directory or in an S3 bucket (`s3://bucket/prefix`, through
//! `espwatch_archive::backup`).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use espwatch_app::Config;
use espwatch_core::Timestamp;
use espwatch_store::embedded::backup::{self, BackupReport};
use espwatch_store::embedded::check::{self, CheckReport};
use espwatch_store::embedded::incremental::{self, ChainEntry, Kind};
use espwatch_store::embedded::{StorageReport, UNCOMPRESSED_READING_BYTES};
use espwatch_store::{EmbeddedOptions, EmbeddedStore, Store};

#[derive(Subcommand, Debug, Clone)]
pub enum StoreCommand {
    /// Decode every segment and log batch and name the damaged ones (changes nothing; works
    /// next to a running server). Exit code 1 when something is damaged.
    Check {
        /// Directory of the embedded store; default: the configured `data_dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Move every damaged segment and log batch to the quarantine table (bytes kept) so the
    /// store opens and reads cleanly. The server must be stopped.
    Repair {
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Readings stored, bytes on disk (every file of the data directory) per reading, and the
    /// ratio to uncompressed readings. Works next to a running server.
    Stats {
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite every segment in the compact format (older data directories, windows still
    /// open) and give the freed space back to the file system. The server must be stopped.
    Compact {
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Copy the data directory (telemetry, alarms, identities) into DEST, a new or empty
    /// directory, consistently and while a server runs on it; the copy is verified and
    /// described in DEST/BACKUP.json (sizes, SHA-256, readings). DEST may be
    /// s3://bucket/prefix (an empty prefix): the copy is made in a staging directory next to
    /// the data directory, each file uploaded and read back against its SHA-256, BACKUP.json
    /// last; S3 settings from `backup_options`, credentials from the AWS_* environment.
    Backup {
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, value_name = "DEST")]
        to: PathBuf,
        /// DEST is a backup chain: a full backup the first time (DEST new or empty), then at
        /// each run a delta of only the segments and rollups that changed since the last one
        /// (listed in DEST/CHAIN.json).
        #[arg(long)]
        incremental: bool,
    },
    /// Restore a backup, or a backup chain (made with `backup --incremental`), into a new or
    /// empty data directory: checksums checked, files copied (a chain's deltas applied in
    /// order), every segment and log batch decoded, readings counted against the backup's.
    /// BACKUP may be s3://bucket/prefix (the files needed are downloaded first).
    Restore {
        #[arg(long, value_name = "BACKUP")]
        from: PathBuf,
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Chains only: restore the store as of the last backup of the chain that started at
        /// or before TS (RFC 3339, e.g. 2026-01-01T00:00:00Z); the granularity is one backup,
        /// or one commit when the server shipped its log there (`backup_ship_to`): then the
        /// shipped log batches committed up to TS are replayed on top (without --until: all
        /// of them, up to the last one shipped).
        #[arg(long, value_name = "TS")]
        until: Option<String>,
    },
}

impl StoreCommand {
    pub fn data_dir(&self) -> Option<PathBuf> {
        match self {
            StoreCommand::Check { data_dir }
            | StoreCommand::Repair { data_dir }
            | StoreCommand::Stats { data_dir, .. }
            | StoreCommand::Compact { data_dir }
            | StoreCommand::Backup { data_dir, .. }
            | StoreCommand::Restore { data_dir, .. } => data_dir.clone(),
        }
    }
}

fn print(report: &CheckReport) {
    println!(
        "checked {} segments and {} log batches",
        report.segments, report.log_batches
    );
    // Every segment is decoded; those with a checksum recorded when they were written are
    // checked against it too (what a backup's verification relies on).
    let unchecked = report.segments - report.checksummed;
    println!(
        "segments decoded: {}; also checked against their recorded checksum: {}; without one: {unchecked}",
        report.segments, report.checksummed
    );
    if unchecked > 0 {
        println!(
            "  ({unchecked} written before segment checksums: backups verify them by decoding, \
             slower; `espwatch store compact` (server stopped) records their checksums)"
        );
    }
    for item in &report.damaged {
        println!("DAMAGED {item}");
    }
    if report.repaired > 0 {
        println!("quarantined {} damaged item(s)", report.repaired);
    }
    for item in &report.quarantined {
        println!("in quarantine: {item}");
    }
}

fn print_storage(report: &StorageReport) {
    println!(
        "{} readings in {} segments ({} compact)",
        report.readings, report.segments, report.compact_segments
    );
    for (name, bytes) in &report.files {
        println!("  {name:<24} {bytes:>14} bytes");
    }
    println!(
        "  (segments {} bytes, {:.2} per reading; free pages {} bytes)",
        report.segment_bytes,
        report.segment_bytes as f64 / report.readings.max(1) as f64,
        report.free_bytes
    );
    let per_reading = report.bytes_per_reading();
    println!(
        "{} bytes in all: {per_reading:.2} bytes/reading, {:.1}x smaller than uncompressed ({UNCOMPRESSED_READING_BYTES} bytes/reading)",
        report.total_bytes,
        UNCOMPRESSED_READING_BYTES as f64 / per_reading.max(f64::MIN_POSITIVE),
    );
}

fn print_backup(what: &str, report: &BackupReport) {
    let bytes: u64 = report.manifest.files.iter().map(|f| f.bytes).sum();
    println!(
        "{what} {} readings, {} files, {bytes} bytes in {:.1}s (verified)",
        report.manifest.readings,
        report.manifest.files.len(),
        report.seconds
    );
}

fn describe(entry: &ChainEntry) -> String {
    let kind = match entry.kind {
        Kind::Full => "full",
        Kind::Incremental => "incremental",
    };
    let bytes: u64 = entry.files.iter().map(|f| f.bytes).sum();
    format!(
        "#{} {kind} started {}: {} readings; {} segments and {} rollups copied, {} removed; {bytes} bytes",
        entry.seq,
        Timestamp(entry.started_at).to_rfc3339(),
        entry.readings,
        entry.segments_copied,
        entry.rollups_copied,
        entry.removed
    )
}

/// What the replay of the shipped log did; the recovery point on a line of its own (scripts
/// and the restore drill read it).
fn print_replay(report: Option<&espwatch_archive::ship::ReplayReport>) {
    let Some(r) = report else { return };
    println!(
        "replayed {} shipped log batches from {} objects (verified): {} readings, {} not in the backup",
        r.batches, r.objects, r.readings, r.added
    );
    if r.overlapping > 0 {
        println!(
            "  {} of the objects overlapped the ones before (batches shipped again after an upload whose answer was lost): each batch replayed once",
            r.overlapping
        );
    }
    match r.recovery_point {
        Some(at) => println!(
            "recovery point: {} (log batch {})",
            espwatch_archive::ship::rfc3339(at),
            r.last_id
        ),
        None => println!("recovery point: the backup (no shipped batch in range)"),
    }
}

/// `s3://bucket[/prefix]` when `path` names one.
fn s3_url(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| s.starts_with("s3://"))
}

/// A private staging directory next to `data_dir` (on its file system, which has room for
/// the store), removed when dropped.
fn staging(data_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    Ok(tempfile::Builder::new()
        .prefix(".espwatch-backup-staging-")
        .tempdir_in(&parent)?)
}

fn print_upload(url: &str, uploaded: espwatch_archive::backup::Uploaded, seconds: f64) {
    println!(
        "uploaded {} files ({} bytes) to {url}, each read back and checked against its SHA-256; {seconds:.1}s in all",
        uploaded.files, uploaded.bytes
    );
}

fn parse_until(until: Option<String>) -> anyhow::Result<Option<i64>> {
    Ok(until
        .map(|text| {
            Timestamp::parse_rfc3339(&text).map_err(|e| anyhow::anyhow!("--until {text:?}: {e}"))
        })
        .transpose()?
        .map(|t| t.0))
}

/// `store backup|restore` with an S3 bucket.
fn run_s3(cmd: StoreCommand, data_dir: &Path, config: &Config) -> anyhow::Result<bool> {
    use espwatch_archive::backup::{self as s3, S3Restore};
    let runtime = tokio::runtime::Handle::current();
    match cmd {
        StoreCommand::Backup {
            to, incremental, ..
        } => {
            let url = s3_url(&to).unwrap_or_default();
            let bucket = config.open_backup_bucket(url)?;
            let staging = staging(data_dir)?;
            if incremental {
                let done = runtime.block_on(s3::backup_chain(data_dir, &bucket, staging.path()))?;
                println!(
                    "backed up to {url} (verified): {}",
                    describe(&done.report.entry)
                );
                print_upload(url, done.uploaded, done.seconds);
            } else {
                let done = runtime.block_on(s3::backup(data_dir, &bucket, staging.path()))?;
                print_backup(&format!("backed up to {url}:"), &done.report);
                print_upload(url, done.uploaded, done.seconds);
            }
        }
        StoreCommand::Restore { from, until, .. } => {
            let url = s3_url(&from).unwrap_or_default();
            let bucket = config.open_backup_bucket(url)?;
            let staging = staging(data_dir)?;
            let until = parse_until(until)?;
            match runtime.block_on(s3::restore(&bucket, data_dir, until, staging.path()))? {
                S3Restore::Full {
                    report,
                    downloaded,
                    seconds,
                } => {
                    print_backup(&format!("restored into {}:", data_dir.display()), &report);
                    println!("downloaded {downloaded} bytes from {url}; {seconds:.1}s in all");
                }
                S3Restore::Chain {
                    report,
                    downloaded,
                    seconds,
                } => {
                    println!(
                        "restored into {}: {} readings from {} backup(s) in {:.1}s (verified), as of {}",
                        data_dir.display(),
                        report.readings,
                        report.backups_applied,
                        report.seconds,
                        describe(&report.until)
                    );
                    println!("downloaded {downloaded} bytes from {url}; {seconds:.1}s in all");
                    let replayed = runtime.block_on(espwatch_archive::ship::replay(
                        &bucket,
                        data_dir,
                        report.until.started_at,
                        until,
                    ))?;
                    print_replay(replayed.as_ref());
                }
            }
        }
        _ => unreachable!("only backup and restore name a bucket"),
    }
    Ok(true)
}

/// Returns whether the store is (now) clean. Runs on a blocking thread of the runtime.
pub fn run(cmd: StoreCommand, config: &Config) -> anyhow::Result<bool> {
    let data_dir = config.data_dir.clone();
    let remote = match &cmd {
        StoreCommand::Backup { to, .. } => s3_url(to).is_some(),
        StoreCommand::Restore { from, .. } => s3_url(from).is_some(),
        _ => false,
    };
    if remote {
        return run_s3(cmd, &data_dir, config);
    }
    match cmd {
        StoreCommand::Check { .. } => {
            let report = check::check(&data_dir)?;
            print(&report);
            if report.is_clean() {
                println!("ok");
            } else {
                println!("run `espwatch store repair` (server stopped) to quarantine them");
            }
            Ok(report.is_clean())
        }
        StoreCommand::Repair { .. } => {
            let report = check::repair(&data_dir)?;
            print(&report);
            println!("ok");
            Ok(true)
        }
        StoreCommand::Stats { json, .. } => {
            let report = check::storage(&data_dir)?;
            if json {
                let mut value = serde_json::to_value(&report)?;
                value["bytes_per_reading"] = report.bytes_per_reading().into();
                value["uncompressed_bytes_per_reading"] = UNCOMPRESSED_READING_BYTES.into();
                println!("{value}");
            } else {
                print_storage(&report);
            }
            Ok(true)
        }
        StoreCommand::Backup {
            to,
            incremental: true,
            ..
        } => {
            let report = incremental::backup_chain(&data_dir, &to)?;
            println!(
                "backed up to {} in {:.1}s (verified): {}",
                to.display(),
                report.seconds,
                describe(&report.entry)
            );
            if report.entry.kind == Kind::Incremental {
                println!(
                    "  {} segments and rollups unchanged since the previous backup",
                    report.unchanged
                );
            }
            Ok(true)
        }
        StoreCommand::Backup { to, .. } => {
            let report = backup::backup(&data_dir, &to)?;
            print_backup(&format!("backed up to {}:", to.display()), &report);
            Ok(true)
        }
        StoreCommand::Restore { from, until, .. } => {
            if !from.join(incremental::CHAIN).exists() {
                if until.is_some() {
                    anyhow::bail!(
                        "--until needs a backup chain (made with `store backup --incremental`); {} is not one",
                        from.display()
                    );
                }
                let report = backup::restore(&from, &data_dir)?;
                print_backup(&format!("restored into {}:", data_dir.display()), &report);
                return Ok(true);
            }
            let until = parse_until(until)?;
            let report = incremental::restore_chain(&from, &data_dir, until)?;
            println!(
                "restored into {}: {} readings from {} backup(s) in {:.1}s (verified), as of {}",
                data_dir.display(),
                report.readings,
                report.backups_applied,
                report.seconds,
                describe(&report.until)
            );
            if from.join(incremental::SHIPPED_LOG).is_dir() {
                let shipped = espwatch_archive::Archive::open(&from.to_string_lossy())?;
                let replayed =
                    tokio::runtime::Handle::current().block_on(espwatch_archive::ship::replay(
                        &shipped,
                        &data_dir,
                        report.until.started_at,
                        until,
                    ))?;
                print_replay(replayed.as_ref());
            }
            Ok(true)
        }
        StoreCommand::Compact { .. } => {
            let runtime = tokio::runtime::Handle::current();
            let store = EmbeddedStore::open(&data_dir, EmbeddedOptions::default())?;
            let compacted = runtime.block_on(store.compact());
            runtime.block_on(store.close())?;
            let report = compacted?;
            println!(
                "rewrote {} segments; database {} -> {} bytes",
                report.segments_rewritten, report.bytes_before, report.bytes_after
            );
            print_storage(&check::storage(&data_dir)?);
            Ok(true)
        }
    }
}
