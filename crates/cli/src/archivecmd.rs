//! `espwatch archive run|list|restore`: the retention policy applied now (expired days
//! archived as Parquet, verified, deleted; expired rollups dropped), the archive's manifest,
//! and archived readings brought back into the store.

use anyhow::Context;
use clap::Subcommand;
use espwatch_core::{TimeRange, Timestamp, WellId};

use crate::DataArgs;

#[derive(Subcommand, Debug, Clone)]
pub enum ArchiveCommand {
    /// Apply the retention policy (`retention_*` keys) now: archive every expired well-day to
    /// `archive_url`, read it back and verify it, then delete it from the store; drop expired
    /// rollups. On the embedded store the server must be stopped (it runs this itself).
    Run {
        #[command(flatten)]
        target: DataArgs,
        /// Archive location; default: the configured `archive_url`.
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the archived files (the manifest), of one well or all.
    List {
        #[command(flatten)]
        target: DataArgs,
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        #[arg(long, value_name = "WELL")]
        well: Option<String>,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Bring a well's archived readings in [--from, --to) back into the store (each file
    /// checked against the manifest; readings already stored are counted as duplicates).
    Restore {
        #[command(flatten)]
        target: DataArgs,
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        #[arg(long, value_name = "WELL")]
        well: String,
        /// RFC 3339, e.g. 2026-01-01T00:00:00Z.
        #[arg(long, value_name = "TS")]
        from: String,
        #[arg(long, value_name = "TS")]
        to: String,
    },
}

impl ArchiveCommand {
    pub fn target(&self) -> &DataArgs {
        match self {
            ArchiveCommand::Run { target, .. }
            | ArchiveCommand::List { target, .. }
            | ArchiveCommand::Restore { target, .. } => target,
        }
    }

    fn archive_url(&self) -> Option<&String> {
        match self {
            ArchiveCommand::Run { archive, .. }
            | ArchiveCommand::List { archive, .. }
            | ArchiveCommand::Restore { archive, .. } => archive.as_ref(),
        }
    }
}

fn timestamp(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_rfc3339(text).map_err(|e| anyhow::anyhow!("--{flag} {text:?}: {e}"))
}

pub async fn run(cmd: &ArchiveCommand, mut config: espwatch_app::Config) -> anyhow::Result<()> {
    if let Some(url) = cmd.archive_url() {
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
                    "no retention policy configured: set retention_raw (and retention_1m/1h/1d)"
                );
            }
            let opened = espwatch_app::open_store(&config).await?;
            let now = Timestamp(espwatch_archive::target::now_micros());
            let result = espwatch_archive::run_retention(
                opened.store.as_ref(),
                opened.retention.as_ref(),
                &archive,
                &policy,
                now,
            )
            .await;
            opened.store.close().await.context("closing the store")?;
            let report = result?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "archived {} well-days ({} readings, {} bytes) to {} and deleted them; {} deferred (changed meanwhile); {} partitions/chunks dropped",
                    report.days_archived,
                    report.readings_archived,
                    report.bytes_written,
                    archive.url(),
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
