//! Server configuration: one struct, every field documented, sane defaults so that a bare
//! `espwatch serve` works. Layering (file < `ESPWATCH_*` environment < flags) is done by the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on. Port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Directory of the embedded store (created if missing).
    pub data_dir: PathBuf,
    /// Largest accepted request body, bytes. Larger bodies get 413.
    pub body_limit_bytes: usize,
    /// Readings stamped further than this into the future are rejected, seconds.
    pub max_future_secs: u64,
    /// Register unknown wells from their first reading (true) or reject their readings (false).
    pub auto_register_wells: bool,
    /// Raw telemetry queries with more points than this are downsampled server-side.
    pub default_max_points: usize,
    /// Requests taking longer than this are answered 503, seconds.
    pub request_timeout_secs: u64,
    /// The embedded store seals its log into per-well segments at least this often, seconds.
    pub checkpoint_interval_secs: u64,
    /// Log format: "human" or "json".
    pub log_format: LogFormat,
    /// PostgreSQL URL (`postgres://user@host/db`, `?sslmode=require` for TLS). Set: the
    /// PostgreSQL/TimescaleDB store is used instead of the embedded one in `data_dir`.
    pub database_url: Option<String>,
    /// PostgreSQL connections pooled for reads and registry changes (the writer has its own).
    pub database_pool_size: usize,
    /// PostgreSQL statement timeout, seconds.
    pub database_statement_timeout_secs: u64,
    /// Use TimescaleDB when first setting up a database: "auto", "off" or "require".
    pub timescaledb: String,
    /// TimescaleDB chunk width, e.g. "1d".
    pub timescaledb_chunk_interval: String,
    /// TimescaleDB: compress chunks older than this, e.g. "7d".
    pub timescaledb_compress_after: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./espwatch-data"),
            body_limit_bytes: 16 * 1024 * 1024,
            max_future_secs: 300,
            auto_register_wells: true,
            default_max_points: 2_000,
            request_timeout_secs: 30,
            checkpoint_interval_secs: 300,
            log_format: LogFormat::Human,
            database_url: None,
            database_pool_size: 8,
            database_statement_timeout_secs: 30,
            timescaledb: "auto".into(),
            timescaledb_chunk_interval: "1d".into(),
            timescaledb_compress_after: "7d".into(),
        }
    }
}

impl Config {
    /// Names of all keys, for mapping `ESPWATCH_<KEY>` environment variables.
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "data_dir",
        "body_limit_bytes",
        "max_future_secs",
        "auto_register_wells",
        "default_max_points",
        "request_timeout_secs",
        "checkpoint_interval_secs",
        "log_format",
        "database_url",
        "database_pool_size",
        "database_statement_timeout_secs",
        "timescaledb",
        "timescaledb_chunk_interval",
        "timescaledb_compress_after",
    ];

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.body_limit_bytes < 1024 {
            return Err("body_limit_bytes must be at least 1024".into());
        }
        if !(1..=1_000_000).contains(&self.default_max_points) {
            return Err("default_max_points must be between 1 and 1000000".into());
        }
        if self.request_timeout_secs == 0 {
            return Err("request_timeout_secs must be at least 1".into());
        }
        if self.checkpoint_interval_secs == 0 {
            return Err("checkpoint_interval_secs must be at least 1".into());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("database_url must start with postgres:// or postgresql://".into());
        }
        if !(1..=1000).contains(&self.database_pool_size) {
            return Err("database_pool_size must be between 1 and 1000".into());
        }
        if self.database_statement_timeout_secs == 0 {
            return Err("database_statement_timeout_secs must be at least 1".into());
        }
        if !["auto", "off", "require"].contains(&self.timescaledb.as_str()) {
            return Err("timescaledb must be auto, off or require".into());
        }
        for (key, value) in [
            (
                "timescaledb_chunk_interval",
                &self.timescaledb_chunk_interval,
            ),
            (
                "timescaledb_compress_after",
                &self.timescaledb_compress_after,
            ),
        ] {
            match espwatch_core::duration::parse_duration_micros(value) {
                Ok(micros) if micros >= 60_000_000 => {}
                _ => return Err(format!("{key} must be a duration of at least 1m, e.g. 1d")),
            }
        }
        Ok(())
    }

    pub fn max_future(&self) -> Duration {
        Duration::from_secs(self.max_future_secs)
    }
}
