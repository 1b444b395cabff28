//! Opening the configured store: PostgreSQL when `database_url` is set, else the embedded one
//! in `data_dir`. The server, the commands and the tests open stores only through here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use espwatch_store::spool::{SpoolOptions, SpoolingStore};
use espwatch_store::{
    AlarmStore, EmbeddedOptions, EmbeddedSecurityStore, EmbeddedStore, Retention, SecurityStore,
    Store,
};
use espwatch_store_postgres::{PostgresOptions, PostgresStore, TimescaleMode, redact_url};

use crate::config::{Config, TimescaleSetting};

pub fn open_embedded(data_dir: &Path, config: &Config) -> anyhow::Result<EmbeddedStore> {
    let options = EmbeddedOptions {
        checkpoint_interval: Duration::from_secs(config.checkpoint_interval_secs),
        cache_mib: config.store_cache_mib,
        read_cache_mib: config.store_read_cache_mib,
        keep_log_for_shipping: config.backup_ship_to.is_some(),
        ..EmbeddedOptions::default()
    };
    EmbeddedStore::open(data_dir, options)
        .with_context(|| format!("opening the store in {}", data_dir.display()))
}

/// PostgreSQL settings from the configuration (already validated).
pub fn postgres_options(config: &Config) -> PostgresOptions {
    let duration = |text: &str, default: Duration| {
        espwatch_core::duration::parse_duration_micros(text)
            .map(|m| Duration::from_micros(m.max(0) as u64))
            .unwrap_or(default)
    };
    let defaults = PostgresOptions::default();
    PostgresOptions {
        pool_size: config.database_pool_size,
        writers: config.database_writers,
        statement_timeout: Duration::from_secs(config.database_statement_timeout_secs),
        timescale: match config.timescaledb {
            TimescaleSetting::Off => TimescaleMode::Off,
            TimescaleSetting::Require => TimescaleMode::Require,
            TimescaleSetting::Auto => TimescaleMode::Auto,
        },
        chunk_interval: duration(&config.timescaledb_chunk_interval, defaults.chunk_interval),
        audit_key: config.audit_key(),
        compress_after: duration(&config.timescaledb_compress_after, defaults.compress_after),
        ..defaults
    }
}

/// An open store and, where the backend keeps them, its alarms.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub alarms: Option<Arc<dyn AlarmStore>>,
    pub security: Arc<dyn SecurityStore>,
    /// The same store's retention side (the server's retention job, `espwatch archive`).
    pub retention: Arc<dyn Retention>,
    /// The embedded store itself (its log shipper needs it), when that is the backend.
    pub embedded: Option<EmbeddedStore>,
    /// The PostgreSQL store itself, when that is the backend.
    pub postgres: Option<PostgresStore>,
}

/// Only the identities and audit part of the configured store (for `users`, `apikeys`,
/// `audit`): on the embedded store this does not take the data directory's lock, so it works
/// next to a running server.
pub async fn open_security_store(config: &Config) -> anyhow::Result<Arc<dyn SecurityStore>> {
    match &config.database_url {
        Some(_) => Ok(open_store(config).await?.security),
        None => open_embedded_security(config),
    }
}

fn open_embedded_security(config: &Config) -> anyhow::Result<Arc<dyn SecurityStore>> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    Ok(Arc::new(
        EmbeddedSecurityStore::open(data_dir)
            .with_context(|| format!("opening the security database in {}", data_dir.display()))?
            .with_audit_key(config.audit_key()),
    ))
}

/// The configured store: PostgreSQL when `database_url` is set, else the embedded one.
pub async fn open_store(config: &Config) -> anyhow::Result<OpenedStore> {
    open(config, postgres_options(config)).await
}

/// The store as a bulk load (`espwatch ingest`) uses it: [`open_store`], except that on
/// PostgreSQL each append is committed on its own (the loader's appends are large, and files
/// loaded at once go to the writer connections side by side) and the rollups are brought up
/// to date once, when the store is closed, rather than while the load runs
/// (`PostgresOptions::bulk_load`).
pub async fn open_store_for_loading(config: &Config) -> anyhow::Result<OpenedStore> {
    let options = PostgresOptions {
        bulk_load: true,
        ..postgres_options(config)
    };
    open(config, options).await
}

async fn open(config: &Config, options: PostgresOptions) -> anyhow::Result<OpenedStore> {
    match &config.database_url {
        Some(url) => {
            let store = PostgresStore::open(url, options)
                .await
                .with_context(|| format!("opening the PostgreSQL store at {}", redact_url(url)))?;
            tracing::info!(flavor = store.flavor().name(), "PostgreSQL store open");
            let postgres = store.clone();
            let store = Arc::new(store);
            Ok(OpenedStore {
                postgres: Some(postgres),
                alarms: Some(store.clone() as Arc<dyn AlarmStore>),
                security: store.clone() as Arc<dyn SecurityStore>,
                retention: store.clone() as Arc<dyn Retention>,
                store,
                embedded: None,
            })
        }
        None => {
            let embedded = open_embedded(&config.data_dir, config)?;
            let store = Arc::new(embedded.clone());
            Ok(OpenedStore {
                postgres: None,
                embedded: Some(embedded),
                alarms: Some(store.clone() as Arc<dyn AlarmStore>),
                security: open_embedded_security(config)?,
                retention: store.clone() as Arc<dyn Retention>,
                store,
            })
        }
    }
}

/// The store as `serve` uses it: [`open_store`], and on PostgreSQL (unless `spool_max_bytes`
/// is 0) the outage spool in front of it, which also replays what an earlier run left there.
/// The commands (`ingest`, `wells`) do not spool: they report a database outage instead.
pub async fn open_store_for_serving(config: &Config) -> anyhow::Result<OpenedStore> {
    let mut opened = open_store(config).await?;
    if config.database_url.is_some() && config.spool_max_bytes > 0 {
        let dir = config.spool_dir();
        let spool = SpoolingStore::open(
            opened.store.clone(),
            SpoolOptions::new(&dir, config.spool_max_bytes),
        )
        .with_context(|| format!("opening the outage spool in {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), max_bytes = config.spool_max_bytes, "outage spool ready");
        opened.store = Arc::new(spool);
    }
    Ok(opened)
}
