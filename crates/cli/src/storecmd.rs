//! `espwatch store check|repair`: the embedded store's segments and log batches decoded, the
//! damaged ones named (check) or quarantined with their bytes kept (repair).

use std::path::PathBuf;

use clap::Subcommand;
use espwatch_store::embedded::check::{self, CheckReport};

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
}

impl StoreCommand {
    pub fn data_dir(&self) -> Option<PathBuf> {
        match self {
            StoreCommand::Check { data_dir } | StoreCommand::Repair { data_dir } => {
                data_dir.clone()
            }
        }
    }
}

fn print(report: &CheckReport) {
    println!(
        "checked {} segments and {} log batches",
        report.segments, report.log_batches
    );
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

/// Returns whether the store is (now) clean.
pub fn run(cmd: StoreCommand, data_dir: PathBuf) -> anyhow::Result<bool> {
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
    }
}
