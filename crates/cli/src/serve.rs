//! `espwatch serve`: open the store, bind, serve until SIGINT/SIGTERM, close cleanly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use espwatch_server::{AppState, Config, LogFormat, TimescaleSetting};
use espwatch_store::{
    AlarmStore, EmbeddedOptions, EmbeddedSecurityStore, EmbeddedStore, SecurityStore, Store,
};
use espwatch_store_postgres::{PostgresOptions, PostgresStore, TimescaleMode, redact_url};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Client commands log warnings only, so progress bars stay readable.
pub fn init_cli_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn open_embedded(data_dir: &Path, config: &Config) -> anyhow::Result<EmbeddedStore> {
    let options = EmbeddedOptions {
        checkpoint_interval: Duration::from_secs(config.checkpoint_interval_secs),
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
        statement_timeout: Duration::from_secs(config.database_statement_timeout_secs),
        timescale: match config.timescaledb {
            TimescaleSetting::Off => TimescaleMode::Off,
            TimescaleSetting::Require => TimescaleMode::Require,
            TimescaleSetting::Auto => TimescaleMode::Auto,
        },
        chunk_interval: duration(&config.timescaledb_chunk_interval, defaults.chunk_interval),
        compress_after: duration(&config.timescaledb_compress_after, defaults.compress_after),
        ..defaults
    }
}

/// An open store and, where the backend keeps them, its alarms.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub alarms: Option<Arc<dyn AlarmStore>>,
    pub security: Arc<dyn SecurityStore>,
}

/// Only the identities and audit part of the configured store (for `users`, `apikeys`,
/// `audit`): on the embedded store this does not take the data directory's lock, so it works
/// next to a running server.
pub async fn open_security_store(config: &Config) -> anyhow::Result<Arc<dyn SecurityStore>> {
    match &config.database_url {
        Some(_) => Ok(open_store(config).await?.security),
        None => open_embedded_security(&config.data_dir),
    }
}

fn open_embedded_security(data_dir: &Path) -> anyhow::Result<Arc<dyn SecurityStore>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    Ok(Arc::new(
        EmbeddedSecurityStore::open(data_dir)
            .with_context(|| format!("opening the security database in {}", data_dir.display()))?,
    ))
}

/// The configured store: PostgreSQL when `database_url` is set, else the embedded one.
pub async fn open_store(config: &Config) -> anyhow::Result<OpenedStore> {
    match &config.database_url {
        Some(url) => {
            let store = PostgresStore::open(url, postgres_options(config))
                .await
                .with_context(|| format!("opening the PostgreSQL store at {}", redact_url(url)))?;
            tracing::info!(flavor = store.flavor().name(), "PostgreSQL store open");
            let store = Arc::new(store);
            Ok(OpenedStore {
                alarms: Some(store.clone() as Arc<dyn AlarmStore>),
                security: store.clone() as Arc<dyn SecurityStore>,
                store,
            })
        }
        None => {
            let store = Arc::new(open_embedded(&config.data_dir, config)?);
            Ok(OpenedStore {
                alarms: Some(store.clone() as Arc<dyn AlarmStore>),
                security: open_embedded_security(&config.data_dir)?,
                store,
            })
        }
    }
}

/// `espwatch migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let Some(url) = &config.database_url else {
        anyhow::bail!(
            "no database_url configured (--database-url, ESPWATCH_DATABASE_URL or espwatch.toml); \
             the embedded store upgrades itself when opened"
        );
    };
    let report = espwatch_store_postgres::migrate(url, &postgres_options(config))
        .await
        .with_context(|| format!("migrating {}", redact_url(url)))?;
    if report.applied.is_empty() {
        println!("schema is current ({})", report.flavor.name());
    }
    for (version, name) in &report.applied {
        println!("applied migration {version}: {name}");
    }
    match &report.timescale_note {
        Some(note) if report.timescale_fallback => {
            println!("warning: TimescaleDB not used, plain PostgreSQL partitions instead: {note}");
        }
        Some(note) => println!("TimescaleDB not used: {note}"),
        None => {}
    }
    println!("layout: {}", report.flavor.name());
    Ok(())
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    match &config.database_url {
        Some(url) => tracing::info!(database = %redact_url(url), %address, "espwatch serving"),
        None => tracing::info!(data_dir = %config.data_dir.display(), %address, "espwatch serving"),
    }
    // A machine-readable line on stdout: scripts and tests read the chosen port from it.
    println!("espwatch listening on http://{address}");
    let state =
        AppState::new(store.store, config, store.security)?.with_optional_alarms(store.alarms);
    espwatch_server::serve(listener, state, shutdown_signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
