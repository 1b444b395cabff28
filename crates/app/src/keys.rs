//! API keys and random tokens: issuing a key is the same service for
//! `POST /api/v1/apikeys` and `espwatch apikeys create`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use espwatch_core::Timestamp;
use espwatch_core::access::{BadWellEntry, Role, WellScope};
use espwatch_store::security::secret_digest;
use espwatch_store::{ApiKey, SecurityStore};

/// API keys start with this, then the key id, `_`, and the secret.
pub const API_KEY_PREFIX: &str = "espw_";

/// Admin API keys must expire within this many days (issue 18 item 11): a leaked machine
/// credential that can create admins must not live for ever.
pub const ADMIN_KEY_MAX_DAYS: i64 = 90;

/// When `key` stops being accepted: its own expiry, and for an admin key at most
/// [`ADMIN_KEY_MAX_DAYS`] after its creation, so admin keys stored without an expiry (before
/// the rule, or behind the service's back) do not live for ever either.
pub fn effective_expiry(key: &ApiKey) -> Option<Timestamp> {
    if key.role != Role::Admin {
        return key.expires_at;
    }
    let limit = Timestamp(
        key.created_at
            .0
            .saturating_add(ADMIN_KEY_MAX_DAYS * 86_400_000_000),
    );
    Some(key.expires_at.map_or(limit, |e| e.min(limit)))
}

/// What a new API key is for; shared by `POST /api/v1/apikeys` and `espwatch apikeys create`.
#[derive(Clone, Debug)]
pub struct KeyRequest {
    pub name: String,
    pub role: Role,
    /// The wells as asked for (`None`: every well); each entry must be a well id.
    pub wells: Option<Vec<String>>,
    /// Lifetime such as `90d`; `None`: no expiry.
    pub expires: Option<String>,
    /// `user:<name>` or `cli:<login>`.
    pub created_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRequestError {
    #[error("key names are 1–100 characters")]
    Name,
    #[error(transparent)]
    Wells(#[from] BadWellEntry),
    #[error("expires {0:?} is not a positive duration such as 90d")]
    Expires(String),
    #[error("admin keys must expire within {ADMIN_KEY_MAX_DAYS} days: give expires, e.g. 30d")]
    AdminExpiry,
    #[error(transparent)]
    Store(#[from] espwatch_store::StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Validates the request, generates the key, stores only its hash; returns the stored key
/// and the key itself (to show once).
pub async fn issue_api_key(
    store: &dyn SecurityStore,
    request: KeyRequest,
) -> Result<(ApiKey, String), KeyRequestError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyRequestError::Name);
    }
    let wells = WellScope::parse_list(request.wells)?;
    let now = Timestamp::from_datetime(chrono::Utc::now());
    let expires_at = match request.expires.as_deref() {
        None => None,
        Some(text) => match espwatch_core::duration::parse_duration_micros(text) {
            Ok(micros) if micros > 0 => Some(Timestamp(now.0 + micros)),
            _ => return Err(KeyRequestError::Expires(text.to_owned())),
        },
    };
    if request.role == Role::Admin
        && expires_at.is_none_or(|e| e.0 - now.0 > ADMIN_KEY_MAX_DAYS * 86_400_000_000)
    {
        return Err(KeyRequestError::AdminExpiry);
    }
    let (id, key) = generate_api_key().map_err(|e| KeyRequestError::Internal(e.to_string()))?;
    let stored = store
        .create_api_key(
            espwatch_store::NewApiKey {
                id,
                name,
                role: request.role,
                wells,
                key_hash: secret_digest(&key),
                created_by: request.created_by,
                expires_at,
            },
            now,
        )
        .await?;
    Ok((stored, key))
}

/// Generates a new API key: `(id, full key)`. 12 hex characters of id (public), 256 bits of
/// secret.
pub fn generate_api_key() -> anyhow::Result<(String, String)> {
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = random_token(32)?;
    Ok((id.clone(), format!("{API_KEY_PREFIX}{id}_{secret}")))
}

/// `bytes` random bytes, base64url without padding.
pub fn random_token(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The id part of `espw_<id>_<secret>`.
pub fn parse_api_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let valid_id = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (valid_id && secret.len() >= 32).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_format() {
        let (id, key) = generate_api_key().unwrap();
        assert_eq!(parse_api_key(&key), Some(id.as_str()));
        assert!(key.len() > 50);
        assert_eq!(parse_api_key("espw_zz_short"), None);
        assert_eq!(parse_api_key("eyJhbGciOi.x.y"), None);
    }
}
