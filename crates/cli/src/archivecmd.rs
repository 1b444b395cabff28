//! `espwatch archive run|list|restore`: the retention policy applied now (expired well-days
//! archived as Parquet, read back and verified, then deleted; expired rollups dropped), the
//! archive's manifest, and archived readings brought back into the store. Works on the
//! embedded store (`--data-dir`, server stopped) and on PostgreSQL (`--database-url`).

use anyhow::Context;
use clap::{Args, Subcommand};
use espwatch_core::{TimeRange, Timestamp, WellId};

use crate::DataArgs;

#[derive(Args, Debug, Clone)]
pub struct ArchiveTarget {
    #[command(flatten)]
    pub store: DataArgs,
    /// Archive location (a directory, file:///dir or s3://bucket/prefix); default: the
    /// configured `archive_url`, else `<data_dir>-archive`.
    #[arg(long, value_name = "URL")]
    pub archive: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ArchiveCommand {
    /// Apply the retention policy (`retention_*` keys) now: archive every expired well-day,
    /// read it back and verify it, then delete it from the store; drop expired rollups. On
    /// the embedded store the server must be stopped (a running server does this itself).
    Run {
        #[command(flatten)]
        target: ArchiveTarget,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the archived files (the manifest), of one well or all.
    List {
        #[command(flatten)]
        target: ArchiveTarget,
        #[arg(long, value_name = "WELL")]
        well: Option<String>,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bring a well's archived readings in [--from, --to) back into the store (each file is
    /// checked against its manifest entry; readings already stored count as duplicates).
    Restore {
        #[command(flatten)]
        target: ArchiveTarget,
        #[arg(long, value_name = "WELL")]
        well: String,
        /// RFC 3339, e.g. 2026-01-01T00:00:00Z.
        #[arg(long, value_name = "TS")]
        from: String,
        /// RFC 3339, exclusive.
        #[arg(long, value_name = "TS")]
        to: String,
    },
}

impl ArchiveCommand {
    pub fn target(&self) -> &ArchiveTarget {
        match self {
            ArchiveCommand::Run { target, .. }
            | ArchiveCommand::List { target, .. }
            | ArchiveCommand::Restore { target, .. } => target,
        }
    }
}

fn timestamp(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_rfc3339(text).map_err(|e| anyhow::anyhow!("--{flag} {text:?}: {e}"))
}

/// `run` works on an existing store only (a mistyped directory must not become an empty
/// store); `restore` may fill a new data directory, when it is named with `--data-dir`.
fn check_store(
    target: &ArchiveTarget,
    config: &espwatch_app::Config,
    may_create: bool,
) -> anyhow::Result<()> {
    if config.database_url.is_some() || config.data_dir.exists() {
        return Ok(());
    }
    if may_create && target.store.data_dir.is_some() {
        return Ok(());
    }
    anyhow::bail!(
        "no store at {}: name it with --data-dir DIR or --database-url URL",
        config.data_dir.display()
    )
}

pub async fn run(cmd: &ArchiveCommand, mut config: espwatch_app::Config) -> anyhow::Result<()> {
    let target = cmd.target();
    if let Some(url) = &target.archive {
        espwatch_archive::target::check_url(url).map_err(|e| anyhow::anyhow!("--archive: {e}"))?;
        config.archive_url = Some(url.clone());
    }
    let archive = config.open_archive()?;
    match cmd {
        ArchiveCommand::List { well, json, .. } => {
            let well = well
                .as_deref()
                .map(WellId::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--well: {e}"))?;
            let entries = archive.list(well.as_ref()).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            for e in &entries {
                println!(
                    "{}  {}  {:>7} readings  {:>9} bytes  {}",
                    e.well_id,
                    espwatch_archive::target::day_name(e.from),
                    e.rows,
                    e.bytes,
                    e.path
                );
            }
            let rows: u64 = entries.iter().map(|e| e.rows).sum();
            let bytes: u64 = entries.iter().map(|e| e.bytes).sum();
            println!(
                "{} files, {rows} readings, {bytes} bytes in {}",
                entries.len(),
                archive.url()
            );
            Ok(())
        }
        ArchiveCommand::Run { json, .. } => {
            let policy = config.retention_policy();
            if policy.is_empty() {
                anyhow::bail!(
                    "no retention policy configured: set retention_raw (and retention_1m, \
                     retention_1h, retention_1d) in espwatch.toml or ESPWATCH_RETENTION_RAW"
                );
            }
            check_store(target, &config, false)?;
            let opened = espwatch_app::open_store(&config).await?;
            let now = Timestamp(espwatch_archive::target::now_micros());
            let result = espwatch_archive::run_round(
                opened.store.as_ref(),
                opened.retention.as_ref(),
                &archive,
                &policy,
                now,
            )
            .await;
            opened.store.close().await.context("closing the store")?;
            let report = match result {
                Ok(report) => report,
                Err(e) => {
                    if e.done.days_archived > 0 {
                        eprintln!(
                            "before the failure {} well-days ({} readings) were archived, \
                             verified and deleted",
                            e.done.days_archived, e.done.readings_archived
                        );
                    }
                    return Err(e.error);
                }
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "archived {} well-days ({} readings, {} bytes) to {} and deleted {} readings; \
                     {} deferred (changed meanwhile); {} partitions/chunks dropped",
                    report.days_archived,
                    report.readings_archived,
                    report.bytes_written,
                    archive.url(),
                    report.readings_deleted,
                    report.days_deferred,
                    report.units_dropped
                );
                for (tier, n) in &report.rollups_deleted {
                    println!("dropped {n} expired {} rollups", tier.name());
                }
            }
            Ok(())
        }
        ArchiveCommand::Restore { well, from, to, .. } => {
            let well = WellId::parse(well).map_err(|e| anyhow::anyhow!("--well: {e}"))?;
            let range = TimeRange {
                from: timestamp("from", from)?,
                to: timestamp("to", to)?,
            };
            anyhow::ensure!(range.from < range.to, "--from must be before --to");
            check_store(target, &config, true)?;
            let opened = espwatch_app::open_store(&config).await?;
            let result =
                espwatch_archive::restore(opened.store.as_ref(), &archive, &well, range).await;
            opened.store.close().await.context("closing the store")?;
            let report = result?;
            println!(
                "restored {} readings of {well} from {} files ({} new, {} already stored)",
                report.readings, report.files, report.accepted, report.duplicates
            );
            Ok(())
        }
    }
}
