//! Access tokens: JWTs signed with HS256, and nothing else.
//!
//! Why not a general JWT library: we accept exactly one algorithm and one header, so the
//! verifier compares the header to the one we issue byte for byte (after base64url decoding)
//! before anything else. `alg: none`, `alg: HS512`, RS/HS confusion, `kid`/`jku` tricks are all
//! simply "not our header". The MAC check is constant-time (`hmac::Mac::verify_slice`).
//! Every claim is required and checked: `iss`, `aud`, `typ`, `exp`, `nbf`, `iat`, `jti`,
//! plus our `sub`, `role` and `sid` (the session, checked against the store by the caller).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The only header we issue or accept.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// `typ` claim of access tokens (refresh tokens are opaque and never JWTs).
pub const ACCESS_TYPE: &str = "access";
pub use espwatch_app::config::{MIN_SECRET_BYTES, SecretError, check_secret};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: String,
    pub sid: String,
    pub jti: String,
    pub typ: String,
    /// Seconds since the Unix epoch.
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// Why a token was refused. Never shown to the client in detail (all map to 401).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("header is not the one this server issues")]
    Header,
    #[error("signature does not verify")]
    Signature,
    #[error("claims are missing or malformed")]
    Claims,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("not an access token")]
    Type,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("lifetime longer than this server issues")]
    Lifetime,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    secret: Vec<u8>,
    /// The secret before a rotation and until when (seconds since the epoch, exclusive) what
    /// it signed is still accepted; it never signs anything new.
    previous: Option<(Vec<u8>, i64)>,
    pub issuer: String,
    pub audience: String,
    /// Accepted clock difference for `exp`, `nbf` and `iat`, seconds.
    pub leeway_secs: i64,
    /// Longest `exp − iat` this server issues (the configured access-token lifetime): a token
    /// claiming more was not made here, whatever its signature says.
    pub max_lifetime_secs: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "previous_valid_until",
                &self.previous.as_ref().map(|(_, until)| until),
            )
            .finish()
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Result<TokenKeys, SecretError> {
        check_secret(secret)?;
        Ok(TokenKeys {
            secret: secret.to_vec(),
            previous: None,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs: 5,
            max_lifetime_secs: 86_400,
        })
    }

    /// Also accepts what `secret` (the secret before a rotation) signed, until `valid_until`
    /// (seconds since the epoch); refused when weak.
    pub fn with_previous(
        mut self,
        secret: &[u8],
        valid_until: i64,
    ) -> Result<TokenKeys, SecretError> {
        check_secret(secret)?;
        self.previous = Some((secret.to_vec(), valid_until));
        Ok(self)
    }

    /// Until when the previous secret's tokens are accepted, if one is configured.
    pub fn previous_valid_until(&self) -> Option<i64> {
        self.previous.as_ref().map(|(_, until)| *until)
    }

    fn mac(&self) -> HmacSha256 {
        mac_with(&self.secret)
    }

    /// The keys a MAC presented at `now` may have been made with: the current secret, and the
    /// previous one while its grace period lasts.
    fn accepted_macs(&self, now: i64) -> impl Iterator<Item = HmacSha256> + '_ {
        std::iter::once(self.mac()).chain(
            self.previous
                .iter()
                .filter(move |(_, until)| now < *until)
                .map(|(secret, _)| mac_with(secret)),
        )
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The console's CSRF token of a session: HMAC-SHA256 of the session id under the token
    /// secret, so it needs no storage, survives restarts and dies with the session.
    pub fn csrf_token(&self, session_id: &str) -> String {
        let mut mac = self.mac();
        mac.update(b"espwatch-csrf\0");
        mac.update(session_id.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `presented` is the CSRF token of `session_id` (constant-time), made with the
    /// current secret or, during its grace period, the previous one.
    pub fn check_csrf(&self, session_id: &str, presented: &str) -> bool {
        let Ok(presented) = URL_SAFE_NO_PAD.decode(presented.trim()) else {
            return false;
        };
        let now = chrono::Utc::now().timestamp();
        self.accepted_macs(now).any(|mut mac| {
            mac.update(b"espwatch-csrf\0");
            mac.update(session_id.as_bytes());
            mac.verify_slice(&presented).is_ok()
        })
    }

    /// Verifies an access token at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        self.verify_until(token, now).map(|(claims, _)| claims)
    }

    /// [`TokenKeys::verify`], with the time (seconds since the epoch) until which the token
    /// is accepted: its `exp`, or the end of the previous secret's grace period when that
    /// signed it and ends first.
    pub fn verify_until(&self, token: &str, now: i64) -> Result<(Claims, i64), TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        if header_bytes != HEADER_JSON.as_bytes() {
            return Err(TokenError::Header);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let Some(signer) = self.accepted_macs(now).position(|mut mac| {
            mac.update(header.as_bytes());
            mac.update(b".");
            mac.update(payload.as_bytes());
            mac.verify_slice(&signature).is_ok()
        }) else {
            return Err(TokenError::Signature);
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Claims)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience);
        }
        if claims.typ != ACCESS_TYPE {
            return Err(TokenError::Type);
        }
        if now >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(TokenError::Expired);
        }
        if now.saturating_add(self.leeway_secs) < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if now.saturating_add(self.leeway_secs) < claims.iat {
            return Err(TokenError::IssuedInFuture);
        }
        // Saturating: the claims are the signer's numbers, extreme ones included.
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_secs {
            return Err(TokenError::Lifetime);
        }
        let until = match (signer, self.previous_valid_until()) {
            (0, _) | (_, None) => claims.exp,
            (_, Some(end)) => claims.exp.min(end),
        };
        Ok((claims, until))
    }
}

fn mac_with(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            b"q3J0bW9Yc2t0ZmRuR3pUcWx4b0pWbXZ0cUlKQnhQ",
            "espwatch",
            "api",
        )
        .unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "espwatch".into(),
            aud: "api".into(),
            sub: "ana".into(),
            role: "viewer".into(),
            sid: "s1".into(),
            jti: "j1".into(),
            typ: ACCESS_TYPE.into(),
            iat: now,
            nbf: now,
            exp: now + 900,
        }
    }

    /// Extreme claim values in a correctly signed token are refused, never an overflow.
    #[test]
    fn extreme_times_in_signed_claims_are_refused_without_overflow() {
        let k = keys();
        let now = 1_800_000_000;
        let mut wide = claims(now);
        wide.iat = i64::MIN;
        wide.nbf = i64::MIN;
        wide.exp = i64::MAX;
        assert_eq!(k.verify(&k.sign(&wide), now), Err(TokenError::Lifetime));
        let mut late = claims(now);
        late.exp = i64::MAX;
        late.iat = i64::MAX;
        late.nbf = i64::MAX;
        assert_eq!(k.verify(&k.sign(&late), now), Err(TokenError::NotYetValid));
        // A clock at the end of time: expired, not an overflow of `now + leeway`.
        assert_eq!(
            k.verify(&k.sign(&claims(now)), i64::MAX),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let k = keys();
        let now = 1_800_000_000;
        let token = k.sign(&claims(now));
        assert_eq!(k.verify(&token, now).unwrap(), claims(now));
        assert_eq!(k.verify(&token, now + 906), Err(TokenError::Expired));
        let mut future = claims(now);
        future.nbf = now + 60;
        assert_eq!(
            k.verify(&k.sign(&future), now),
            Err(TokenError::NotYetValid)
        );
        let mut early = claims(now);
        early.iat = now + 600;
        assert_eq!(
            k.verify(&k.sign(&early), now),
            Err(TokenError::IssuedInFuture)
        );
        let mut short = keys();
        short.max_lifetime_secs = 600;
        assert_eq!(
            short.verify(&k.sign(&claims(now)), now),
            Err(TokenError::Lifetime)
        );
        let mut long = claims(now);
        long.exp = now + 90_000;
        assert_eq!(k.verify(&k.sign(&long), now), Err(TokenError::Lifetime));
        let mut other = claims(now);
        other.iss = "evil".into();
        assert_eq!(k.verify(&k.sign(&other), now), Err(TokenError::Issuer));
        let mut other = claims(now);
        other.aud = "other".into();
        assert_eq!(k.verify(&k.sign(&other), now), Err(TokenError::Audience));
        let mut other = claims(now);
        other.typ = "refresh".into();
        assert_eq!(k.verify(&k.sign(&other), now), Err(TokenError::Type));

        // alg none and other algorithms: header differs.
        let (_, rest) = token.split_once('.').unwrap();
        let none = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            rest
        );
        assert_eq!(k.verify(&none, now), Err(TokenError::Header));
        let payload = rest.split('.').next().unwrap();
        assert_eq!(
            k.verify(
                &format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
                now
            ),
            Err(TokenError::Header)
        );
        // A different key.
        let other_keys = TokenKeys::new(
            b"Wm9Yc0t4dGZkbkd6VHFseG9KVm12dHFJSkJ4UGd4",
            "espwatch",
            "api",
        )
        .unwrap();
        assert_eq!(other_keys.verify(&token, now), Err(TokenError::Signature));
        // Tampered payload.
        let mut tampered = claims(now);
        tampered.role = "admin".into();
        let forged = k.sign(&tampered);
        let mixed = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            forged.split('.').nth(1).unwrap(),
            token.split('.').nth(2).unwrap()
        );
        assert_eq!(k.verify(&mixed, now), Err(TokenError::Signature));
        assert_eq!(k.verify("garbage", now), Err(TokenError::Malformed));
    }

    /// Issue 22: after a rotation, tokens of the previous secret verify until its end, and
    /// nothing is signed with it.
    #[test]
    fn the_previous_secret_verifies_until_its_end() {
        let now = 1_800_000_000;
        let old = keys();
        let old_token = old.sign(&claims(now));
        let new = TokenKeys::new(
            b"Wm9Yc0t4dGZkbkd6VHFseG9KVm12dHFJSkJ4UGd4",
            "espwatch",
            "api",
        )
        .unwrap();
        assert_eq!(new.verify(&old_token, now), Err(TokenError::Signature));
        let rotated = new
            .clone()
            .with_previous(b"q3J0bW9Yc2t0ZmRuR3pUcWx4b0pWbXZ0cUlKQnhQ", now + 60)
            .unwrap();
        assert_eq!(rotated.verify(&old_token, now), Ok(claims(now)));
        assert_eq!(rotated.verify(&old_token, now + 59), Ok(claims(now)));
        assert_eq!(
            rotated.verify_until(&old_token, now),
            Ok((claims(now), now + 60))
        );
        assert_eq!(
            rotated.verify_until(&rotated.sign(&claims(now)), now),
            Ok((claims(now), now + 900))
        );
        assert_eq!(
            rotated.verify(&old_token, now + 60),
            Err(TokenError::Signature)
        );
        // New tokens are the current secret's only.
        let fresh = rotated.sign(&claims(now));
        assert_eq!(new.verify(&fresh, now), Ok(claims(now)));
        assert_eq!(old.verify(&fresh, now), Err(TokenError::Signature));
        // CSRF tokens of the old secret, while it lasts (the clock is the real one here).
        let csrf = old.csrf_token("s1");
        let real_now = chrono::Utc::now().timestamp();
        let lasting = new
            .clone()
            .with_previous(b"q3J0bW9Yc2t0ZmRuR3pUcWx4b0pWbXZ0cUlKQnhQ", real_now + 600)
            .unwrap();
        assert!(lasting.check_csrf("s1", &csrf));
        let ended = new
            .clone()
            .with_previous(b"q3J0bW9Yc2t0ZmRuR3pUcWx4b0pWbXZ0cUlKQnhQ", real_now - 1)
            .unwrap();
        assert!(!ended.check_csrf("s1", &csrf));
        assert!(ended.check_csrf("s1", &new.csrf_token("s1")));
        assert!(new.clone().with_previous(b"short", now).is_err());
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert_eq!(check_secret(b""), Err(SecretError::Missing));
        assert_eq!(check_secret(b"short"), Err(SecretError::TooShort(5)));
        assert!(matches!(
            check_secret(&[b'a'; 40]),
            Err(SecretError::LowEntropy(1))
        ));
    }
}
