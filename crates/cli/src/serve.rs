//! `espwatch serve`: open the store, bind, serve until SIGINT/SIGTERM, close cleanly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use espwatch_server::{AppState, Config, LogFormat};
use espwatch_store::{EmbeddedOptions, EmbeddedStore, Store};
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

pub fn open_store(data_dir: &Path, config: &Config) -> anyhow::Result<EmbeddedStore> {
    let options = EmbeddedOptions {
        checkpoint_interval: Duration::from_secs(config.checkpoint_interval_secs),
        ..EmbeddedOptions::default()
    };
    EmbeddedStore::open(data_dir, options)
        .with_context(|| format!("opening the store in {}", data_dir.display()))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config.data_dir, &config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(data_dir = %config.data_dir.display(), %address, "espwatch serving");
    // A machine-readable line on stdout: scripts and tests read the chosen port from it.
    println!("espwatch listening on http://{address}");
    let alarms = Arc::new(store.clone());
    let state = AppState::new(Arc::new(store) as Arc<dyn Store>, config).with_alarms(alarms);
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
