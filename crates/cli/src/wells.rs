//! `espwatch wells ...`: load well metadata files into the registry, list wells.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use espwatch_app::Config;
use espwatch_core::{WellDocument, WellMeta};
use espwatch_store::{Store, StoreError};

use crate::Target;

#[derive(Subcommand, Debug)]
pub enum WellsCommand {
    /// Create or replace wells from JSON files (one well per file; directories: every *.json in them).
    Import {
        #[arg(required = true, value_name = "FILE_OR_DIR")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List registered wells.
    List {
        #[command(flatten)]
        target: Target,
    },
}

impl WellsCommand {
    pub fn target(&self) -> &Target {
        match self {
            WellsCommand::Import { target, .. } | WellsCommand::List { target } => target,
        }
    }
}

/// Expands directories into their `*.json` files, sorted for a stable order.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn read_meta(path: &Path) -> anyhow::Result<WellMeta> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let document: WellDocument = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid well file", path.display()))?;
    document.validate().map_err(|problems| {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect();
        anyhow::anyhow!(
            "{}: invalid well metadata: {}",
            path.display(),
            list.join("; ")
        )
    })
}

pub async fn run(cmd: &WellsCommand, config: Config) -> anyhow::Result<()> {
    match cmd {
        WellsCommand::Import { paths, target } => import(paths, target, &config).await,
        WellsCommand::List { target } => list(target, &config).await,
    }
}

async fn import(paths: &[PathBuf], target: &Target, config: &Config) -> anyhow::Result<()> {
    let files = collect_files(paths)?;
    if files.is_empty() {
        bail!("no well files found");
    }
    let mut failures = 0;
    let mut imported = 0;
    let local = match &target.url {
        Some(_) => None,
        None => Some(target.open_local(config).await?.store),
    };
    let client = target.http_client(std::time::Duration::from_secs(60))?;
    for file in &files {
        let result = match read_meta(file) {
            Err(e) => Err(e),
            Ok(meta) => match (&local, &target.url) {
                (Some(store), _) => upsert_local(store.as_ref(), meta).await,
                (None, Some(url)) => upsert_remote(&client, url, meta).await,
                (None, None) => unreachable!("either a local store or a URL"),
            },
        };
        match result {
            Ok(action) => {
                imported += 1;
                println!("{action}: {}", file.display());
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if let Some(store) = &local {
        store.close().await?;
    }
    println!("{imported} well(s) imported, {failures} failed");
    if failures > 0 {
        bail!("{failures} file(s) could not be imported");
    }
    Ok(())
}

async fn upsert_local(store: &dyn Store, meta: WellMeta) -> anyhow::Result<&'static str> {
    match store.create_well(meta.clone()).await {
        Ok(_) => Ok("created"),
        Err(StoreError::Conflict(_)) => {
            store.update_well(meta).await?;
            Ok("replaced")
        }
        Err(e) => Err(e.into()),
    }
}

async fn upsert_remote(
    client: &reqwest::Client,
    url: &str,
    meta: WellMeta,
) -> anyhow::Result<&'static str> {
    let base = url.trim_end_matches('/');
    let response = client
        .post(format!("{base}/api/v1/wells"))
        .json(&meta)
        .send()
        .await?;
    if response.status().is_success() {
        return Ok("created");
    }
    if response.status().as_u16() == 409 {
        let response = client
            .put(format!("{base}/api/v1/wells/{}", meta.well_id))
            .json(&meta)
            .send()
            .await?;
        if response.status().is_success() {
            return Ok("replaced");
        }
        bail!(
            "{}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    bail!(
        "{}: {}",
        response.status(),
        response.text().await.unwrap_or_default()
    )
}

async fn list(target: &Target, config: &Config) -> anyhow::Result<()> {
    let ids: Vec<String> = match &target.url {
        Some(url) => {
            let body: serde_json::Value = target
                .http_client(std::time::Duration::from_secs(60))?
                .get(format!("{}/api/v1/wells", url.trim_end_matches('/')))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            body["wells"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|w| w["well_id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        }
        None => {
            let store = target.open_local(config).await?.store;
            let wells = store.list_wells().await?;
            store.close().await?;
            wells
                .into_iter()
                .map(|w| w.meta.well_id.as_str().to_owned())
                .collect()
        }
    };
    let mut ids = ids;
    ids.sort();
    for id in ids {
        println!("{id}");
    }
    Ok(())
}
