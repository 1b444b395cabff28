//! `espwatch serve`: open the store, bind, serve until SIGINT/SIGTERM, close cleanly.

use std::io::IsTerminal;

use anyhow::Context;
use espwatch_app::stores::{open_store_for_serving, postgres_options};
use espwatch_app::{Config, LogFormat};
use espwatch_server::AppState;
use espwatch_store_postgres::redact_url;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
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
    // Everything that can refuse the configuration is checked before the store is opened and
    // the port bound, so `listening on` is never followed by an exit.
    config.jwt_secret_bytes()?;
    config.jwt_previous_secret()?;
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        espwatch_server::tls::load(cert, key)?;
    }
    espwatch_field::check_config(&config)?;
    // Before the store opens: it keys the audit chain with this file's key.
    config.ensure_audit_key_file()?;
    // A retention policy needs its archive: opened (a directory created, S3 settings checked)
    // before anything else, so a bad archive setting never starts a server that cannot apply it.
    let policy = config.retention_policy();
    let archive = if policy.is_empty() {
        None
    } else {
        Some(config.open_archive()?)
    };
    // The log shipper's destination, opened (a directory created, S3 settings checked) first.
    let ship_to = match &config.backup_ship_to {
        Some(url) => Some(config.open_backup_bucket(url)?),
        None => None,
    };
    let store = open_store_for_serving(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    match &config.database_url {
        Some(url) => tracing::info!(database = %redact_url(url), %address, "espwatch serving"),
        None => tracing::info!(data_dir = %config.data_dir.display(), %address, "espwatch serving"),
    }
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics_listen {addr}"))?,
        ),
        None => None,
    };
    // Issue 19: alarms must survive a receiver that is down overnight.
    if let Some(warning) =
        espwatch_server::notify::RetryPolicy::from_config(&config).short_retry_warning()
    {
        tracing::warn!("{warning}");
    }
    // A machine-readable line on stdout: scripts and tests read the chosen port from it.
    let scheme = if config.tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    println!("espwatch listening on {scheme}://{address}");
    if let Some(listener) = &metrics_listener {
        println!(
            "espwatch metrics (no credentials) on http://{}/metrics",
            listener.local_addr()?
        );
    }
    let retention = archive.map(|archive| {
        espwatch_app::retention::RetentionJob::start(
            store.store.clone(),
            store.retention.clone(),
            archive,
            policy,
            espwatch_app::retention::policy_text(&config),
            std::time::Duration::from_secs(config.retention_interval_secs),
        )
    });
    let audit_retention = config.audit_retention_period().map(|keep| {
        espwatch_app::audit_retention::AuditRetentionJob::start(
            store.security.clone(),
            keep,
            config.audit_retention.clone().unwrap_or_default(),
            std::time::Duration::from_secs(config.retention_interval_secs),
            espwatch_app::audit_retention::system_clock(),
        )
    });
    let shipper = match (ship_to, &store.embedded) {
        (Some(dest), Some(embedded)) => Some(espwatch_archive::ship::Shipper::start(
            embedded.clone(),
            dest,
            espwatch_archive::ship::ShipOptions {
                interval: std::time::Duration::from_millis(config.backup_ship_interval_ms),
                timeout: std::time::Duration::from_millis(config.backup_ship_timeout_ms),
                max_pending_bytes: config.backup_ship_max_pending_mb.saturating_mul(1 << 20),
            },
        )),
        _ => None,
    };
    drop(store.embedded);
    let state =
        AppState::new(store.store, config, store.security)?.with_optional_alarms(store.alarms);
    if let Some(shipper) = &shipper {
        let reporter = shipper.clone();
        state.components.register(
            "log_shipping",
            std::sync::Arc::new(move || serde_json::json!(reporter.status())),
        );
        let sampler = shipper.clone();
        state.components.register_sampler(
            "log_shipping",
            std::sync::Arc::new(move || sampler.record_metrics()),
        );
    }
    if let Some(job) = &retention {
        let job = job.clone();
        state.components.register(
            "retention",
            std::sync::Arc::new(move || serde_json::json!(job.status())),
        );
    }
    if let Some(job) = &audit_retention {
        let job = job.clone();
        state.components.register(
            "audit_retention",
            std::sync::Arc::new(move || serde_json::json!(job.status())),
        );
    }
    // MQTT ingest (when configured) runs beside the HTTP API and stops first at shutdown:
    // its last batch is committed and acknowledged before the store closes. The retention
    // job stops then too.
    let field = espwatch_field::FieldIngest::start(&state)?;
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(espwatch_server::metrics::serve_unauthenticated(
            listener,
            state.clone(),
            async move {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let signalled = shutdown_signal();
    let served = espwatch_server::serve(listener, state, async move {
        signalled.await;
        let _ = metrics_stop.send(());
        field.stop().await;
        if let Some(job) = retention {
            job.stop().await;
        }
        if let Some(job) = audit_retention {
            job.stop().await;
        }
        // After the ingest stopped: its last acknowledged batches are shipped too.
        if let Some(shipper) = shipper {
            shipper.stop().await;
        }
    })
    .await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    served
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: the server may answer requests before its shutdown
/// future runs, and a SIGTERM sent in between must still shut it down gracefully.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (mut interrupt, mut terminate) = match (interrupt, terminate) {
                (Ok(i), Ok(t)) => (i, t),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGINT/SIGTERM");
                    return std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
