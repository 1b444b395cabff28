//! Effective configuration: defaults < `espwatch.toml` (or `--config FILE`) < `ESPWATCH_*`
//! environment variables < command-line flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use espwatch_app::Config;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

/// The config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "espwatch.toml";

/// Flag values that override everything else; `None` leaves the layer below in place.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let file = match config_file {
        Some(path) if !path.exists() => bail!("config file {} does not exist", path.display()),
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let config: Config = figment
        .merge(Env::prefixed("ESPWATCH_").only(Config::KEYS))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(config)
}

/// The effective configuration as TOML, secrets redacted (new secret keys must be added to
/// `SECRET_KEYS`; the database and AMQP URLs keep everything but their password).
pub fn render(config: &Config) -> anyhow::Result<String> {
    const SECRET_KEYS: &[&str] = &[
        "jwt_secret",
        "smtp_password",
        "mqtt_password",
        "vault_token",
    ];
    let mut value = toml::Value::try_from(config).context("rendering configuration")?;
    if let Some(table) = value.as_table_mut() {
        if let Some(url) = &config.database_url {
            table.insert(
                "database_url".into(),
                toml::Value::String(espwatch_store_postgres::redact_url(url)),
            );
        }
        if let Some(url) = &config.amqp_url {
            table.insert(
                "amqp_url".into(),
                toml::Value::String(espwatch_store_postgres::redact_url(url)),
            );
        }
        for key in SECRET_KEYS {
            if table.contains_key(*key) {
                table.insert((*key).into(), toml::Value::String("<redacted>".into()));
            }
        }
    }
    Ok(toml::to_string_pretty(&value)?)
}
