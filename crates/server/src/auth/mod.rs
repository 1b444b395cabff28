//! Authentication and authorization, enforced in one place: [`guard`], a middleware around
//! every route. It finds the route's rule in [`policy::ROUTES`], establishes the identity
//! (access JWT or API key), checks the role's permission and, for routes naming a well, the
//! identity's wells; then rate-limits per identity. Handlers receive the [`Principal`] as a
//! request extension and only filter lists by its well scope.
//!
//! Credentials are read from `Authorization: Bearer <token>` or `X-API-Key: <key>`. API keys
//! look like `espw_<id>_<secret>`; anything else presented as a bearer token is treated as an
//! access JWT. Every refused credential answers the same 401 (the reason is logged at debug
//! level only). When the identity store itself cannot be read the answer is 503 instead (the
//! credentials may well be fine), logged once at ERROR with the error id, counted, and
//! reported by `/health/ready`.

pub mod cookie;
pub mod limits;
pub use espwatch_app::password;
pub mod policy;
pub mod token;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use espwatch_core::Timestamp;
use espwatch_core::access::Role;
use espwatch_store::security::secret_digest;
use espwatch_store::{ApiKey, LockoutPolicy, SecurityStore, User};

use self::limits::{Rate, RateLimiter};
use self::password::PasswordHashing;
use self::policy::{Access, WellParam};
use self::token::{Claims, TokenKeys};
use crate::AppState;
use crate::audit::AuditSink;
use crate::error::ApiError;
pub use crate::identity::{CredentialEnd, Principal, PrincipalKind, SourceAddr};
use espwatch_app::config::Config;
use espwatch_app::keys::{API_KEY_PREFIX, parse_api_key};

/// Refresh tokens start with this (they are opaque, never JWTs).
pub const REFRESH_PREFIX: &str = "espr_";

/// Identity facts the request log and audit record need, left on the response by [`guard`].
#[derive(Clone, Debug)]
pub struct AuditIdentity {
    pub actor: String,
    pub role: Role,
}

/// Everything authentication needs, shared by the middleware and the auth routes.
pub struct Security {
    pub store: Arc<dyn SecurityStore>,
    pub keys: TokenKeys,
    pub hashing: PasswordHashing,
    pub audit: AuditSink,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub lockout: LockoutPolicy,
    pub trust_forwarded_for: bool,
    per_identity: RateLimiter,
    per_source: RateLimiter,
    telemetry_readings: RateLimiter,
    login_per_source: RateLimiter,
    cache_ttl: Duration,
    /// Verified credentials by SHA-256 of the presented token, for `cache_ttl` and never past
    /// the credential's own end (see [`Verified::expires`]).
    cache: Mutex<HashMap<String, Verified>>,
    /// Authentications that failed because the identity store could not be read.
    store_failures: std::sync::atomic::AtomicU64,
    /// `auth_outage_grace_secs`: how long a credential verified against the identity store
    /// may stand in for it on the telemetry route while the store cannot be read.
    outage_grace: Duration,
    /// Credentials last verified against the store, by SHA-256 of the presented token (see
    /// [`Security::authenticate`]); never consulted while the store answers.
    verified: Mutex<HashMap<String, Verified>>,
    /// Telemetry requests let in by `verified` while the identity store was down.
    outage_grants: std::sync::atomic::AtomicU64,
    /// Bumped whenever cached credentials are forgotten (logout, revocation, user change), so
    /// long-lived connections (streams) re-check theirs at once.
    revocations: tokio::sync::watch::Sender<u64>,
    /// Announces a revocation to the other nodes (see [`Security::set_on_revocation`]).
    on_revocation: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

/// A credential the identity store confirmed, and when.
struct Verified {
    at: Instant,
    principal: Principal,
    /// Until when the credential itself is accepted (exclusive): the key's expiry, or the
    /// token's `exp`, or the end of the previous secret's grace period when that signed the
    /// token and ends first. Enforced on every use of a remembered credential, cached or
    /// during an outage, so none outlives it.
    expires: Option<Timestamp>,
}

impl Verified {
    /// Whether this remembered credential may stand in for a check at `now`, remembered for
    /// at most `kept`.
    fn usable(&self, kept: Duration, now: Timestamp) -> bool {
        self.at.elapsed() < kept && self.expires.is_none_or(|e| e > now)
    }
}

/// Why presented credentials did not yield an identity.
#[derive(Debug)]
enum AuthFailure {
    /// The credentials are wrong, expired or revoked (the reason is logged, never sent).
    Refused(String),
    /// An access token past its `exp`: the only refusal told apart in the answer (RFC 6750
    /// `error_description="expired"`), so the client knows to refresh.
    Expired(String),
    /// The identity store could not be read: nothing is known about the credentials.
    Store(espwatch_store::StoreError),
}

impl From<&str> for AuthFailure {
    fn from(reason: &str) -> Self {
        AuthFailure::Refused(reason.to_owned())
    }
}

impl From<String> for AuthFailure {
    fn from(reason: String) -> Self {
        AuthFailure::Refused(reason)
    }
}

impl Security {
    /// Reads the JWT secret and limits from the configuration; refuses a missing or weak secret.
    pub fn from_config(
        config: &Config,
        store: Arc<dyn SecurityStore>,
        audit: AuditSink,
    ) -> anyhow::Result<Security> {
        let secret = config.jwt_secret_bytes()?;
        let mut keys = TokenKeys::new(&secret, &config.jwt_issuer, &config.jwt_audience)?;
        keys.max_lifetime_secs = config.access_token_ttl_secs as i64;
        if let Some((previous, until)) = config.jwt_previous_secret()? {
            keys = keys.with_previous(&previous, until)?;
            let until_text = chrono::DateTime::from_timestamp(until, 0)
                .map_or_else(|| until.to_string(), |t| t.to_rfc3339());
            if until <= chrono::Utc::now().timestamp() {
                tracing::warn!(
                    valid_until = %until_text,
                    "jwt_secret_previous is configured but its grace period is over: tokens it signed are refused; remove it and jwt_previous_valid_until"
                );
            } else {
                tracing::info!(
                    valid_until = %until_text,
                    "JWT secret rotation: tokens signed with the previous secret are accepted until then"
                );
            }
        }
        let hashing =
            PasswordHashing::new(config.password_hash_concurrency, Duration::from_secs(5))?;
        let rate = |per_second: f64| Rate {
            per_second,
            burst: (per_second * 2.0).max(1.0),
        };
        Ok(Security {
            store,
            keys,
            hashing,
            audit,
            access_ttl: Duration::from_secs(config.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
            lockout: LockoutPolicy {
                max_failures: config.lockout_max_failures,
                window: Duration::from_secs(config.lockout_window_secs),
                lock: Duration::from_secs(config.lockout_secs),
            },
            trust_forwarded_for: config.trust_forwarded_for,
            per_identity: RateLimiter::new(rate(config.rate_limit_per_identity)),
            per_source: RateLimiter::new(rate(config.rate_limit_per_source)),
            telemetry_readings: RateLimiter::new(rate(config.telemetry_readings_per_identity)),
            login_per_source: RateLimiter::new(Rate {
                per_second: config.login_rate_per_minute / 60.0,
                burst: config.login_rate_per_minute.max(1.0),
            }),
            cache_ttl: Duration::from_millis(config.auth_cache_ms),
            cache: Mutex::new(HashMap::new()),
            store_failures: std::sync::atomic::AtomicU64::new(0),
            outage_grace: Duration::from_secs(config.auth_outage_grace_secs),
            verified: Mutex::new(HashMap::new()),
            outage_grants: std::sync::atomic::AtomicU64::new(0),
            revocations: tokio::sync::watch::Sender::new(0),
            on_revocation: std::sync::OnceLock::new(),
        })
    }

    /// Forgets every cached credential (after a logout, revocation, or user change), so the
    /// change takes effect on the next request, here and (through `on_revocation`, Redis) on
    /// the other nodes.
    pub fn forget_cached_credentials(&self) {
        self.forget_cached_credentials_here();
        if let Some(notify) = self.on_revocation.get() {
            notify();
        }
    }

    /// Tells the other nodes when credentials may have been revoked here (set once by
    /// `espwatch-field` when `redis_url` is); must not wait.
    pub fn set_on_revocation(&self, notify: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_revocation.set(notify);
    }

    /// [`Security::forget_cached_credentials`] on this node only (a revocation announced by
    /// another node, or Redis back after an outage in which one may have been missed):
    /// cached credentials, those kept for identity-store outages, and streams re-check.
    pub fn forget_cached_credentials_here(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever credentials may have been revoked (see [`Security::still_valid`]).
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Whether an identity established earlier still stands: its session open (not logged
    /// out, not expired), its user enabled with the same role and wells; or its API key
    /// neither revoked nor expired. For connections that outlive a request (streams).
    pub async fn still_valid(
        &self,
        principal: &Principal,
    ) -> Result<bool, espwatch_store::StoreError> {
        let now = Timestamp::from_datetime(chrono::Utc::now());
        match &principal.kind {
            PrincipalKind::User { session_id } => {
                let Some(session) = self.store.active_session(session_id, now).await? else {
                    return Ok(false);
                };
                if session.user_name != principal.name {
                    return Ok(false);
                }
                let Some(user) = self.store.get_user(&principal.name).await? else {
                    return Ok(false);
                };
                Ok(!user.disabled && user.role == principal.role && user.wells == principal.scope)
            }
            PrincipalKind::ApiKey { id } => {
                let Some(key) = self.store.get_api_key(id).await? else {
                    return Ok(false);
                };
                Ok(key.revoked_at.is_none()
                    && espwatch_app::keys::effective_expiry(&key).is_none_or(|e| e > now))
            }
        }
    }

    /// Issues an access token for a user's session.
    pub fn issue_access_token(&self, user: &User, session_id: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        self.keys.sign(&Claims {
            iss: self.keys.issuer.clone(),
            aud: self.keys.audience.clone(),
            sub: user.name.clone(),
            role: user.role.name().to_owned(),
            sid: session_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            typ: token::ACCESS_TYPE.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl.as_secs() as i64,
        })
    }

    /// Takes one sign-in attempt from `source`'s budget (`login_rate_per_minute`): logins,
    /// refreshes and password changes share it.
    pub fn check_sign_in_rate(&self, source: Option<&SourceAddr>) -> Result<(), Duration> {
        let source = source.map_or("unknown", |s| s.0.as_str());
        self.login_per_source.check(source, Instant::now())
    }

    /// Charges the readings of a telemetry request to its identity (see
    /// `telemetry_readings_per_identity`).
    pub fn charge_readings(&self, principal: &Principal, readings: usize) {
        self.telemetry_readings
            .charge(&principal.actor(), readings as f64, Instant::now());
    }

    /// Authentications answered 503 because the identity store could not be read.
    pub fn store_failures(&self) -> u64 {
        self.store_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Telemetry requests accepted on a credential verified earlier while the identity store
    /// could not be read.
    pub fn outage_grants(&self) -> u64 {
        self.outage_grants
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The identity behind presented credentials, or why not (logged, never sent).
    ///
    /// `outage_ok` (the telemetry route): when the identity store cannot be read, a credential
    /// it confirmed within `auth_outage_grace_secs` is accepted as it was then (the key's or
    /// token's expiry still checked; a JWT's signature and `exp` are checked before any store
    /// access anyway). A credential the store refused is forgotten at once, and so is every
    /// one after a revocation through this server. The cost: a revocation made by another
    /// process (the CLI, another node) within `auth_cache_ms` before the outage is not seen
    /// until the store is back, and none can be made while it is down.
    ///
    /// Also says until when the credential is accepted ([`CredentialEnd`]).
    async fn authenticate(
        &self,
        presented: &str,
        outage_ok: bool,
    ) -> Result<(Principal, CredentialEnd), AuthFailure> {
        self.authenticate_until(presented, outage_ok, chrono::Utc::now())
            .await
    }

    /// [`Security::authenticate`] at `now` (the wall clock; a parameter so that tests can
    /// step past an expiry without waiting for it).
    #[cfg(test)]
    async fn authenticate_at(
        &self,
        presented: &str,
        outage_ok: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Principal, AuthFailure> {
        self.authenticate_until(presented, outage_ok, now)
            .await
            .map(|(principal, _)| principal)
    }

    async fn authenticate_until(
        &self,
        presented: &str,
        outage_ok: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Principal, CredentialEnd), AuthFailure> {
        let digest = secret_digest(presented);
        let now_ts = Timestamp::from_datetime(now);
        if self.cache_ttl > Duration::ZERO {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = cache.get(&digest)
                && cached.usable(self.cache_ttl, now_ts)
            {
                return Ok((cached.principal.clone(), CredentialEnd(cached.expires)));
            }
        }
        let checked = if presented.starts_with(API_KEY_PREFIX) {
            self.authenticate_key(presented, &digest, now_ts).await
        } else {
            self.authenticate_jwt(presented, now).await
        };
        let (principal, expires) = match checked {
            Ok(found) => found,
            Err(AuthFailure::Store(e)) => {
                if outage_ok && self.outage_grace > Duration::ZERO {
                    let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(v) = verified.get(&digest)
                        && v.usable(self.outage_grace, now_ts)
                    {
                        self.outage_grants
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok((v.principal.clone(), CredentialEnd(v.expires)));
                    }
                }
                return Err(AuthFailure::Store(e));
            }
            Err(refused) => {
                self.verified
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&digest);
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&digest);
                return Err(refused);
            }
        };
        if self.outage_grace > Duration::ZERO {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() > 10_000 {
                let grace = self.outage_grace;
                verified.retain(|_, v| v.at.elapsed() < grace);
                if verified.len() > 10_000 {
                    verified.clear();
                }
            }
            verified.insert(
                digest.clone(),
                Verified {
                    at: Instant::now(),
                    principal: principal.clone(),
                    expires,
                },
            );
        }
        if self.cache_ttl > Duration::ZERO {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(
                digest,
                Verified {
                    at: Instant::now(),
                    principal: principal.clone(),
                    expires,
                },
            );
        }
        Ok((principal, CredentialEnd(expires)))
    }

    async fn authenticate_key(
        &self,
        presented: &str,
        digest: &str,
        now: Timestamp,
    ) -> Result<(Principal, Option<Timestamp>), AuthFailure> {
        let id = parse_api_key(presented).ok_or("malformed API key")?;
        let key = self
            .store
            .get_api_key(id)
            .await
            .map_err(AuthFailure::Store)?
            .ok_or("unknown API key id")?;
        if !constant_time_eq(key.key_hash.as_bytes(), digest.as_bytes()) {
            return Err("API key secret does not match".into());
        }
        if key.revoked_at.is_some() {
            return Err("API key revoked".into());
        }
        let expires_at = espwatch_app::keys::effective_expiry(&key);
        if expires_at.is_some_and(|e| e <= now) {
            return Err("API key expired".into());
        }
        Ok((key_principal(&key), expires_at))
    }

    async fn authenticate_jwt(
        &self,
        presented: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Principal, Option<Timestamp>), AuthFailure> {
        let (claims, until) = self
            .keys
            .verify_until(presented, now.timestamp())
            .map_err(|e| {
                let reason = format!("access token refused: {e}");
                if e == token::TokenError::Expired {
                    AuthFailure::Expired(reason)
                } else {
                    AuthFailure::Refused(reason)
                }
            })?;
        let now = Timestamp::from_datetime(now);
        let session = self
            .store
            .active_session(&claims.sid, now)
            .await
            .map_err(AuthFailure::Store)?
            .ok_or("session revoked or expired")?;
        if session.user_name != claims.sub {
            return Err("session belongs to another user".into());
        }
        let user = self
            .store
            .get_user(&claims.sub)
            .await
            .map_err(AuthFailure::Store)?
            .ok_or("user removed")?;
        if user.disabled {
            return Err("user disabled".into());
        }
        if user.role.name() != claims.role {
            return Err("role changed since the token was issued".into());
        }
        Ok((
            Principal {
                kind: PrincipalKind::User {
                    session_id: session.id,
                },
                name: user.name,
                role: user.role,
                scope: user.wells,
            },
            Some(Timestamp(until.saturating_mul(1_000_000))),
        ))
    }
}

pub fn key_principal(key: &ApiKey) -> Principal {
    Principal {
        kind: PrincipalKind::ApiKey { id: key.id.clone() },
        name: key.name.clone(),
        role: key.role,
        scope: key.wells.clone(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client address: the socket peer, or (behind a trusted proxy) the first
/// `X-Forwarded-For` entry.
pub fn source_address(request: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(first) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return first.to_string();
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn unauthorized() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid credentials: send `Authorization: Bearer <access token or API key>`",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"espwatch\""),
    );
    response
}

/// 401 for an access token past its `exp`: says so, as RFC 6750 §3.1 `invalid_token`.
pub fn expired_token() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "token_expired",
        "the access token has expired: refresh it (POST /api/v1/auth/refresh) or sign in again",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"espwatch\", error=\"invalid_token\", error_description=\"expired\"",
        ),
    );
    response
}

/// 429 with `Retry-After`; `limit` names the limit for the metrics (`per_source`,
/// `login_per_source`, `per_identity`, `telemetry_readings`, `sign_in`).
pub fn too_many_requests(limit: &'static str, wait: Duration) -> Response {
    crate::metrics::record_rate_limited(limit);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry after {secs}s"),
    )
    .with_details(serde_json::json!({ "retry_after_secs": secs }))
    .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits"),
    );
    response
}

fn forbidden(message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

/// The authorization middleware (see the module documentation).
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let security = state.security.clone();
    // Resolved once by the request-log middleware around this one.
    let source = match request.extensions().get::<SourceAddr>() {
        Some(SourceAddr(source)) => source.clone(),
        None => {
            let source = source_address(&request, security.trust_forwarded_for);
            request.extensions_mut().insert(SourceAddr(source.clone()));
            source
        }
    };
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();

    let rule = match route.as_deref() {
        // No route matched: the fallback answers 404.
        None => return next.run(request).await,
        Some(route) if policy::is_public_path(route) || policy::is_public_path(&path) => {
            return next.run(request).await;
        }
        Some(route) => match policy::lookup(&method, route) {
            Some(rule) => rule,
            // A known path with another method: let the router answer 405.
            None if policy::ROUTES.iter().any(|r| r.path == route) => {
                return next.run(request).await;
            }
            None => {
                tracing::error!(route, %method, "route missing from the access policy: denied");
                return forbidden("this route is not open to anyone".into());
            }
        },
    };

    let probe = rule.path.starts_with("/health");
    // Telemetry is limited per identity in readings; its per-source request limit applies
    // only to requests whose credentials fail (a gateway's field at 1 Hz is not throttled).
    let telemetry = policy::is_telemetry_ingest(rule);
    let now = Instant::now();
    if !probe
        && !telemetry
        && let Err(wait) = security.per_source.check(&source, now)
    {
        return too_many_requests("per_source", wait);
    }
    if rule.access == Access::Public {
        if rule.path.starts_with("/api/v1/auth/")
            && let Err(wait) = security.login_per_source.check(&source, now)
        {
            return too_many_requests("login_per_source", wait);
        }
        return next.run(request).await;
    }

    let (credential, carrier) = match cookie::credential(request.headers(), rule.path) {
        Ok(Some(found)) => found,
        Ok(None) => {
            crate::metrics::record_auth_failure("missing_credentials");
            return unauthorized();
        }
        Err(()) => {
            crate::metrics::record_auth_failure("ambiguous_credentials");
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ambiguous_credentials",
                "send one credential, once: `Authorization: Bearer ...`, `X-API-Key`, the console's session cookie or (stream) a `bearer.` subprotocol",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"espwatch\""),
            );
            return response;
        }
    };
    let (principal, credential_end) = match security.authenticate(&credential, telemetry).await {
        Ok(found) => found,
        Err(AuthFailure::Expired(reason)) => {
            tracing::debug!(%reason, route = rule.path, "authentication failed");
            crate::metrics::record_auth_failure("expired_token");
            if telemetry && let Err(wait) = security.per_source.check(&source, now) {
                return too_many_requests("per_source", wait);
            }
            return expired_token();
        }
        Err(AuthFailure::Refused(reason)) => {
            tracing::debug!(%reason, route = rule.path, "authentication failed");
            crate::metrics::record_auth_failure("invalid_credentials");
            if telemetry && let Err(wait) = security.per_source.check(&source, now) {
                return too_many_requests("per_source", wait);
            }
            return unauthorized();
        }
        Err(AuthFailure::Store(e)) => {
            security
                .store_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Logged once (at ERROR, with the error id) when the envelope is built.
            return ApiError::unavailable(
                "identity_store_unavailable",
                "credentials cannot be checked right now (the identity store is unavailable); retry shortly",
                format!("identity store lookup failed: {e}"),
            )
            .into_response();
        }
    };
    let identity = AuditIdentity {
        actor: principal.actor(),
        role: principal.role,
    };
    let deny = |response: Response| {
        let mut response = response;
        response.extensions_mut().insert(identity.clone());
        response
    };
    if !policy::role_passes(principal.role, rule.access) {
        let needed = match rule.access {
            Access::Permission(p) => p.name(),
            _ => "authentication",
        };
        crate::metrics::record_auth_failure("forbidden");
        return deny(forbidden(format!(
            "role {} lacks the permission {needed}",
            principal.role
        )));
    }
    let well = match rule.well {
        WellParam::None => None,
        WellParam::PathId => {
            let params = {
                let (mut parts, body) = request.into_parts();
                let params =
                    <RawPathParams as axum::extract::FromRequestParts<()>>::from_request_parts(
                        &mut parts,
                        &(),
                    )
                    .await;
                request = Request::from_parts(parts, body);
                params
            };
            let params = match params {
                Ok(p) => p,
                Err(_) => return deny(forbidden("the well could not be determined".into())),
            };
            params
                .iter()
                .find(|(k, _)| *k == "id")
                .map(|(_, v)| v.to_owned())
        }
        // The old platform's `?device_id=`; a missing or repeated one is the handler's 400.
        WellParam::QueryDeviceId => {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri())
                .ok()
                .and_then(|axum::extract::Query(pairs)| {
                    let mut ids = pairs.into_iter().filter(|(k, _)| k == "device_id");
                    let first = ids.next().map(|(_, v)| v);
                    ids.next().is_none().then_some(first).flatten()
                })
        }
    };
    if let Some(well) = well
        && !principal.may_see_well(&well)
    {
        crate::metrics::record_auth_failure("forbidden_well");
        return deny(forbidden(format!("not permitted for well {well:?}")));
    }
    if carrier == cookie::Carrier::Cookie
        && !cookie::csrf_passes(&security.keys, &method, request.headers(), &principal)
    {
        return deny(cookie::csrf_refused());
    }
    let (limited, limit) = if telemetry {
        (
            security.telemetry_readings.admit(&identity.actor, now),
            "telemetry_readings",
        )
    } else {
        (
            security.per_identity.check(&identity.actor, now),
            "per_identity",
        )
    };
    if let Err(wait) = limited {
        return deny(too_many_requests(limit, wait));
    }
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(credential_end);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(identity);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use espwatch_app::config::SecretString;
    use espwatch_core::access::WellScope;
    use espwatch_store::{EmbeddedSecurityStore, NewSession, NewUser};

    const CURRENT: &str = "bm93LXRoZS1jdXJyZW50LWp3dC1zZWNyZXQtb2YtdGhlLXRlc3Q";
    const PREVIOUS: &str = "YmVmb3JlLXRoZS1yb3RhdGlvbi10aGUtcHJldmlvdXMtc2VjcmV0";

    /// A remembered credential stands in for a check only until its own end: a token of the
    /// previous secret, accepted and cached during the grace period, is refused from the
    /// grace end on although `auth_cache_ms` (an hour here) has not run out. The clock is
    /// passed in, so the test steps past the grace end instead of waiting for it.
    #[tokio::test]
    async fn a_cached_token_of_the_previous_secret_ends_with_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now();
        let grace_end = now.timestamp() + 60;
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            jwt_secret: Some(SecretString(CURRENT.into())),
            jwt_secret_previous: Some(SecretString(PREVIOUS.into())),
            jwt_previous_valid_until: Some(
                chrono::DateTime::from_timestamp(grace_end, 0)
                    .unwrap()
                    .to_rfc3339(),
            ),
            auth_cache_ms: 3_600_000,
            ..Config::default()
        };
        let store: Arc<dyn SecurityStore> =
            Arc::new(EmbeddedSecurityStore::open(dir.path()).unwrap());
        let audit = AuditSink::start(store.clone(), None, Duration::from_secs(3_600));
        let security = Security::from_config(&config, store.clone(), audit).unwrap();
        let at = Timestamp::from_datetime(now);
        store
            .create_user(
                NewUser {
                    name: "ana".into(),
                    role: Role::Viewer,
                    password_hash: "$argon2id$unused".into(),
                    wells: WellScope::All,
                },
                at,
            )
            .await
            .unwrap();
        let session = store
            .create_session(
                NewSession {
                    id: "s-rotation".into(),
                    user_name: "ana".into(),
                    refresh_hash: secret_digest("espr_unused"),
                    expires_at: Timestamp(at.0 + 86_400_000_000),
                    source: None,
                },
                at,
            )
            .await
            .unwrap();
        let claims = |keys: &TokenKeys| Claims {
            iss: keys.issuer.clone(),
            aud: keys.audience.clone(),
            sub: "ana".into(),
            role: Role::Viewer.name().into(),
            sid: session.id.clone(),
            jti: "j1".into(),
            typ: token::ACCESS_TYPE.into(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + 900,
        };
        let previous_keys = TokenKeys::new(
            PREVIOUS.as_bytes(),
            &config.jwt_issuer,
            &config.jwt_audience,
        )
        .unwrap();
        let old = previous_keys.sign(&claims(&previous_keys));
        let new = security.keys.sign(&claims(&security.keys));

        // Within the grace period both are accepted (and cached).
        for token in [&old, &new] {
            security.authenticate_at(token, true, now).await.unwrap();
        }
        let last_second = chrono::DateTime::from_timestamp(grace_end, 0).unwrap()
            - chrono::Duration::microseconds(1);
        security
            .authenticate_at(&old, true, last_second)
            .await
            .unwrap();

        // From the grace end on the previous secret's token is refused, cached or not; the
        // current secret's one is still served.
        let end = chrono::DateTime::from_timestamp(grace_end, 0).unwrap();
        for t in [end, end + chrono::Duration::seconds(1)] {
            assert!(
                matches!(
                    security.authenticate_at(&old, false, t).await,
                    Err(AuthFailure::Refused(_))
                ),
                "a token of the previous secret at {t}, after the grace period"
            );
            security.authenticate_at(&new, false, t).await.unwrap();
        }
    }
}
