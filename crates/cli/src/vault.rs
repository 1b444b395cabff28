//! Secrets from a Vault-compatible server (HashiCorp Vault, OpenBao), KV version 2.
//!
//! A secret setting (`jwt_secret`, `jwt_secret_previous`, `smtp_password`, `mqtt_password`, `database_url`,
//! `amqp_url`) may be a reference `vault:<path>#<key>`, e.g.
//! `vault:secret/data/espwatch#jwt_secret`: `serve` reads `GET <vault_addr>/v1/<path>` with
//! the token (`vault_token`, else `vault_token_file`, else `VAULT_TOKEN`) and uses
//! `data.data.<key>`. Settings that are not references keep working as before (files, the
//! environment), so a site without Vault changes nothing. Read once at start; not renewed.

use std::time::Duration;

use anyhow::{Context, bail};
use espwatch_app::{Config, SecretString};

const PREFIX: &str = "vault:";

/// A parsed `vault:<path>#<key>`.
fn parse(reference: &str) -> Option<(&str, &str)> {
    let rest = reference.strip_prefix(PREFIX)?;
    let (path, key) = rest.rsplit_once('#')?;
    let path = path.trim_matches('/');
    (!path.is_empty() && !key.is_empty()).then_some((path, key))
}

fn is_reference(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Replaces every `vault:` reference among the secret settings by the secret it names.
/// Nothing to do (and no request) when there is none.
pub async fn resolve(config: &mut Config) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    let secret = |s: &Option<SecretString>| s.as_ref().map(|s| s.0.clone());
    for (name, value) in [
        ("jwt_secret", secret(&config.jwt_secret)),
        ("jwt_secret_previous", secret(&config.jwt_secret_previous)),
        ("smtp_password", secret(&config.smtp_password)),
        ("mqtt_password", secret(&config.mqtt_password)),
        ("database_url", config.database_url.clone()),
        ("amqp_url", config.amqp_url.clone()),
    ] {
        if let Some(value) = value
            && is_reference(&value)
        {
            wanted.push((name, value));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(addr) = config.vault_addr.clone() else {
        bail!(
            "{} is a vault: reference but vault_addr is not set",
            wanted[0].0
        );
    };
    let token = match (&config.vault_token, &config.vault_token_file) {
        (Some(token), _) => token.0.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading vault_token_file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => std::env::var("VAULT_TOKEN").context(
            "vault: references need a token: vault_token, vault_token_file or VAULT_TOKEN",
        )?,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client for Vault")?;
    for (name, reference) in wanted {
        let (path, key) = parse(&reference).with_context(|| {
            format!("{name}: a vault reference is `vault:<path>#<key>`, e.g. vault:secret/data/espwatch#{name}")
        })?;
        let url = format!("{}/v1/{path}", addr.trim_end_matches('/'));
        let response = client
            .get(&url)
            .header("X-Vault-Token", &token)
            .send()
            .await
            .with_context(|| format!("{name}: reading {path} from Vault at {addr}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("{name}: Vault answered {status} for {path} (token, policy or path wrong?)");
        }
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{name}: Vault's answer for {path} is not JSON"))?;
        let value = body
            .pointer("/data/data")
            .and_then(|d| d.get(key))
            .and_then(serde_json::Value::as_str)
            .with_context(|| {
                format!("{name}: {path} has no string `{key}` (a KV version 2 path reads secret/data/...)")
            })?
            .to_owned();
        match name {
            "jwt_secret" => config.jwt_secret = Some(SecretString(value)),
            "jwt_secret_previous" => config.jwt_secret_previous = Some(SecretString(value)),
            "smtp_password" => config.smtp_password = Some(SecretString(value)),
            "mqtt_password" => config.mqtt_password = Some(SecretString(value)),
            "database_url" => config.database_url = Some(value),
            _ => config.amqp_url = Some(value),
        }
        tracing::info!(setting = name, path, "secret read from Vault");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            parse("vault:secret/data/espwatch#jwt_secret"),
            Some(("secret/data/espwatch", "jwt_secret"))
        );
        assert_eq!(
            parse("vault:/secret/data/x/#k"),
            Some(("secret/data/x", "k"))
        );
        assert_eq!(parse("vault:secret/data/x"), None);
        assert_eq!(parse("vault:#k"), None);
        assert_eq!(parse("postgres://u:p@h/db"), None);
    }
}
