//! Sessions: login, refresh, logout, who-am-I, password change.
//!
//! Login answers the same 401 body for an unknown user, a wrong password, a disabled or a
//! locked account, and takes the same time (an unknown user is verified against a dummy hash).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use espwatch_core::Timestamp;
use espwatch_core::access::{Permission, check_password};
use espwatch_store::security::secret_digest;
use espwatch_store::{NewSession, RefreshOutcome, User, UserChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{now, security_event};
use crate::auth::password::HashError;
use crate::auth::{Principal, PrincipalKind, REFRESH_PREFIX, SourceAddr, cookie};
use crate::error::ApiError;
use crate::extract::{ApiJson, RequestContext};
use crate::state::AppState;
use espwatch_app::keys::random_token;

const AUTH_BODY_LIMIT: usize = 8 * 1024;

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many sign-ins at once; retry in a moment",
            ),
            HashError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Short-lived JWT for `Authorization: Bearer`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Single-use token for `POST /api/v1/auth/refresh`; each refresh returns a new one.
    refresh_token: String,
    /// Seconds until the refresh token expires.
    refresh_expires_in: u64,
    user: UserSummary,
    #[serde(skip)]
    session_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserSummary {
    name: String,
    role: String,
}

fn login_failed() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "invalid user name or password, or the account is locked or disabled",
    )
    .into_response()
}

async fn open_session(
    state: &AppState,
    user: &User,
    source: Option<&SourceAddr>,
) -> Result<TokenResponse, ApiError> {
    let security = &state.security;
    let refresh = format!(
        "{REFRESH_PREFIX}{}",
        random_token(32).map_err(ApiError::internal)?
    );
    let session_id = uuid::Uuid::new_v4().to_string();
    let expires_at = Timestamp(now().0 + security.refresh_ttl.as_micros() as i64);
    security
        .store
        .create_session(
            NewSession {
                id: session_id.clone(),
                user_name: user.name.clone(),
                refresh_hash: secret_digest(&refresh),
                expires_at,
                source: source.map(|s| s.0.clone()),
            },
            now(),
        )
        .await?;
    Ok(token_response(state, user, &session_id, refresh))
}

fn token_response(
    state: &AppState,
    user: &User,
    session_id: &str,
    refresh: String,
) -> TokenResponse {
    let security = &state.security;
    TokenResponse {
        access_token: security.issue_access_token(user, session_id),
        token_type: "Bearer",
        expires_in: security.access_ttl.as_secs(),
        refresh_token: refresh,
        refresh_expires_in: security.refresh_ttl.as_secs(),
        user: UserSummary {
            name: user.name.clone(),
            role: user.role.name().to_owned(),
        },
        session_id: session_id.to_owned(),
    }
}

/// Signs in with user name and password; returns an access token and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Invalid credentials, or account locked or disabled", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many attempts from this address", body = crate::error::ErrorEnvelope)
    ))]
pub async fn login(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<LoginBody, AUTH_BODY_LIMIT>,
) -> Result<Response, ApiError> {
    Ok(match sign_in(&state, &context, body).await? {
        Some((_, tokens)) => Json(tokens).into_response(),
        None => login_failed(),
    })
}

/// The console's session: what the sign-in page learns (the tokens themselves are cookies).
#[derive(Serialize, ToSchema)]
pub struct ConsoleSession {
    user: UserSummary,
    /// Send as `X-CSRF-Token` with every request that changes something.
    csrf_token: String,
    /// Seconds until the access cookie expires (refresh before).
    expires_in: u64,
}

fn console_session(
    state: &AppState,
    user: &User,
    session_id: &str,
    tokens: &TokenResponse,
) -> Response {
    let security = &state.security;
    let body = ConsoleSession {
        user: UserSummary {
            name: user.name.clone(),
            role: user.role.name().to_owned(),
        },
        csrf_token: security.keys.csrf_token(session_id),
        expires_in: tokens.expires_in,
    };
    let mut response = Json(body).into_response();
    for value in cookie::session_cookies(
        &tokens.access_token,
        security.access_ttl,
        &tokens.refresh_token,
        security.refresh_ttl,
        state.config.cookie_secure,
    ) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Signs the console in: the session's tokens are set as `HttpOnly`, `SameSite=Strict`
/// cookies (never visible to scripts) and the answer carries the CSRF token the console sends
/// as `X-CSRF-Token` with changes. API clients use `POST /api/v1/auth/login` instead.
#[utoipa::path(post, path = "/api/v1/auth/console/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in; cookies `espwatch_access` and `espwatch_refresh` set", body = ConsoleSession),
        (status = 401, description = "Invalid credentials, or account locked or disabled", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many attempts from this address", body = crate::error::ErrorEnvelope)
    ))]
pub async fn console_login(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<LoginBody, AUTH_BODY_LIMIT>,
) -> Result<Response, ApiError> {
    Ok(match sign_in(&state, &context, body).await? {
        Some((user, tokens)) => {
            let session_id = tokens.session_id.clone();
            console_session(&state, &user, &session_id, &tokens)
        }
        None => login_failed(),
    })
}

/// Renews the console's cookies with the refresh cookie (single use, as
/// `POST /api/v1/auth/refresh`).
#[utoipa::path(post, path = "/api/v1/auth/console/refresh", tag = "auth",
    responses(
        (status = 200, description = "New cookies set", body = ConsoleSession),
        (status = 401, description = "No, used, expired or revoked refresh cookie", body = crate::error::ErrorEnvelope)
    ))]
pub async fn console_refresh(
    State(state): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let presented = cookie::read_cookie(&headers, cookie::REFRESH_COOKIE).unwrap_or_default();
    let (user, tokens) = rotate(&state, &context, presented).await?;
    let session_id = tokens.session_id.clone();
    Ok(console_session(&state, &user, &session_id, &tokens))
}

/// Checks a login; `None` when refused (recorded in the audit trail either way).
async fn sign_in(
    state: &AppState,
    context: &RequestContext,
    body: LoginBody,
) -> Result<Option<(User, TokenResponse)>, ApiError> {
    let security = &state.security;
    let name = body.username.trim().to_owned();
    let user = if name.is_empty() || name.len() > 128 {
        None
    } else {
        security.store.get_user_any_case(&name).await?
    };
    let at = now();
    let (verifiable, reason) = match &user {
        None => (None, "unknown_user"),
        Some(u) if u.disabled => (None, "disabled"),
        Some(u) if u.locked_until.is_some_and(|t| t > at) => (None, "locked"),
        Some(u) => (Some(u.password_hash.clone()), "bad_password"),
    };
    let password_ok = body.password.chars().count() <= espwatch_core::access::PASSWORD_MAX_CHARS;
    let password = if password_ok {
        body.password
    } else {
        String::new()
    };
    let matched = security
        .hashing
        .verify(password, verifiable.clone())
        .await?
        && password_ok;
    let audit_name =
        || serde_json::json!({ "username": name.chars().take(128).collect::<String>() });
    // Names match ignoring case: failures count on the stored account.
    let account = user
        .as_ref()
        .map_or_else(|| name.clone(), |u| u.name.clone());

    if matched && let Some(user) = user {
        security.store.record_login_success(&user.name).await?;
        let tokens = open_session(state, &user, context.source.as_ref()).await?;
        security
            .audit
            .record_committed(security_event(
                "login_success",
                context,
                Some(format!("user:{}", user.name)),
                Some(user.role.name()),
                serde_json::json!({}),
            ))
            .await;
        return Ok(Some((user, tokens)));
    }

    let reason = if verifiable.is_some() {
        "bad_password"
    } else {
        reason
    };
    crate::metrics::record_auth_failure(match reason {
        "unknown_user" => "login_unknown_user",
        "disabled" => "login_disabled",
        "locked" => "login_locked",
        _ => "login_bad_password",
    });
    let mut detail = audit_name();
    detail["reason"] = reason.into();
    if reason == "bad_password"
        && let Some(updated) = security
            .store
            .record_login_failure(&account, at, security.lockout)
            .await?
        && updated.locked_until.is_some_and(|t| t > at)
    {
        security
            .audit
            .record_committed(security_event(
                "lockout",
                context,
                Some(format!("user:{account}")),
                Some(updated.role.name()),
                serde_json::json!({ "locked_until": updated.locked_until.map(|t| t.to_rfc3339()) }),
            ))
            .await;
    }
    security
        .audit
        .record_committed(security_event("login_failure", context, None, None, detail))
        .await;
    Ok(None)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

/// Exchanges a refresh token (single use) for a new access token and a new refresh token.
/// Presenting a refresh token a second time revokes its whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, used, expired or revoked refresh token", body = crate::error::ErrorEnvelope)
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    context: RequestContext,
    ApiJson(body): ApiJson<RefreshBody, AUTH_BODY_LIMIT>,
) -> Result<Response, ApiError> {
    let (_, tokens) = rotate(&state, &context, &body.refresh_token).await?;
    Ok(Json(tokens).into_response())
}

/// Spends a refresh token for a new pair; a second use revokes the session.
async fn rotate(
    state: &AppState,
    context: &RequestContext,
    presented: &str,
) -> Result<(User, TokenResponse), ApiError> {
    let security = &state.security;
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            "the refresh token is invalid, used, expired or revoked; sign in again",
        )
    };
    if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 256 {
        return Err(invalid());
    }
    let next = format!(
        "{REFRESH_PREFIX}{}",
        random_token(32).map_err(ApiError::internal)?
    );
    let expires_at = Timestamp(now().0 + security.refresh_ttl.as_micros() as i64);
    match security
        .store
        .rotate_refresh(
            &secret_digest(presented),
            &secret_digest(&next),
            expires_at,
            now(),
        )
        .await?
    {
        RefreshOutcome::Rotated { session, user } => {
            security.audit.record(security_event(
                "refresh",
                context,
                Some(format!("user:{}", user.name)),
                Some(user.role.name()),
                serde_json::json!({ "session": session.id }),
            ));
            let tokens = token_response(state, &user, &session.id, next);
            Ok((user, tokens))
        }
        RefreshOutcome::Reused { session_id } => {
            security.forget_cached_credentials();
            security
                .audit
                .record_committed(security_event(
                    "refresh_reuse",
                    context,
                    None,
                    None,
                    serde_json::json!({ "session": session_id, "action": "session revoked" }),
                ))
                .await;
            Err(invalid())
        }
        RefreshOutcome::Invalid => Err(invalid()),
    }
}

/// Ends the caller's session at once: its access and refresh tokens stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = crate::error::ErrorEnvelope),
        (status = 400, description = "API keys cannot log out (revoke them instead)", body = crate::error::ErrorEnvelope)
    ))]
pub async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
) -> Result<Response, ApiError> {
    let PrincipalKind::User { session_id } = &principal.kind else {
        return Err(ApiError::bad_request(
            "not_a_session",
            "API keys have no session to end; revoke the key instead",
        ));
    };
    let security = &state.security;
    security.store.revoke_session(session_id, now()).await?;
    security.forget_cached_credentials();
    security
        .audit
        .record_action(
            "logout",
            &context,
            &principal,
            serde_json::json!({ "session": session_id }),
        )
        .await;
    // The console's cookies go too (harmless for clients that never had them).
    let mut response = StatusCode::NO_CONTENT.into_response();
    for value in cookie::cleared_cookies(state.config.cookie_secure) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    /// `user` or `api_key`.
    kind: &'static str,
    name: String,
    role: String,
    /// The wells this identity is limited to; absent: all wells.
    #[serde(skip_serializing_if = "Option::is_none")]
    wells: Option<Vec<String>>,
    permissions: Vec<&'static str>,
    /// A user session's CSRF token (the console sends it as `X-CSRF-Token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
}

/// Who the caller is: identity, role, permissions and wells.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, description = "The caller", body = Me),
              (status = 401, description = "Not authenticated", body = crate::error::ErrorEnvelope)))]
pub async fn me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<Me> {
    let csrf_token = match &principal.kind {
        PrincipalKind::User { session_id } => Some(state.security.keys.csrf_token(session_id)),
        PrincipalKind::ApiKey { .. } => None,
    };
    Json(Me {
        csrf_token,
        kind: match principal.kind {
            PrincipalKind::User { .. } => "user",
            PrincipalKind::ApiKey { .. } => "api_key",
        },
        name: principal.name.clone(),
        role: principal.role.name().to_owned(),
        wells: principal
            .scope
            .as_list()
            .map(|list| list.iter().map(ToString::to_string).collect()),
        permissions: Permission::ALL
            .iter()
            .filter(|p| principal.can(**p))
            .map(|p| p.name())
            .collect(),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password. Every session of the user ends, this one included: sign in
/// again with the new password.
///
/// Proving the current password is a sign-in attempt, so a stolen access token does not buy
/// unlimited guesses: attempts share the per-address sign-in limit (429), a wrong password
/// counts towards the account's lockout like a failed sign-in and is audited
/// (`password_change_failure`), and when the account locks the session presenting the guesses
/// ends (its tokens stop working at once).
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Changed; all sessions ended"),
        (status = 400, description = "Called with an API key", body = crate::error::ErrorEnvelope),
        (status = 401, description = "Wrong current password, or the account is locked (the session then ends)", body = crate::error::ErrorEnvelope),
        (status = 422, description = "New password refused by the policy", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many sign-in attempts from this address", body = crate::error::ErrorEnvelope)
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    ApiJson(body): ApiJson<PasswordBody, AUTH_BODY_LIMIT>,
) -> Result<Response, ApiError> {
    let PrincipalKind::User { session_id } = &principal.kind else {
        return Err(ApiError::bad_request(
            "not_a_user",
            "API keys have no password; create a new key instead",
        ));
    };
    let security = &state.security;
    if let Err(wait) = security.check_sign_in_rate(context.source.as_ref()) {
        return Ok(crate::auth::too_many_requests("sign_in", wait));
    }
    let user = security
        .store
        .get_user(&principal.name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no such user"))?;
    let at = now();
    let locked = user.locked_until.is_some_and(|t| t > at);
    let matched = !locked
        && body.current_password.chars().count() <= espwatch_core::access::PASSWORD_MAX_CHARS
        && security
            .hashing
            .verify(body.current_password, Some(user.password_hash.clone()))
            .await?;
    if !matched {
        let updated = if locked {
            Some(user.clone())
        } else {
            security
                .store
                .record_login_failure(&user.name, at, security.lockout)
                .await?
        };
        let failures = updated.as_ref().map_or(0, |u| u.failed_logins);
        let now_locked = updated
            .as_ref()
            .and_then(|u| u.locked_until)
            .filter(|t| *t > at);
        security
            .audit
            .record_action(
                "password_change_failure",
                &context,
                &principal,
                serde_json::json!({
                    "reason": if locked { "locked" } else { "bad_password" },
                    "failures": failures,
                }),
            )
            .await;
        if let Some(until) = now_locked {
            if !locked {
                security
                    .audit
                    .record_action(
                        "lockout",
                        &context,
                        &principal,
                        serde_json::json!({ "locked_until": until.to_rfc3339(), "via": "password_change" }),
                    )
                    .await;
            }
            // The guesses came through this session: it ends with the lock.
            security.store.revoke_session(session_id, now()).await?;
            security.forget_cached_credentials();
            security
                .audit
                .record_action(
                    "session_ended",
                    &context,
                    &principal,
                    serde_json::json!({ "session": session_id, "reason": "account locked after failed password changes" }),
                )
                .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_ended",
                "too many wrong passwords: the account is locked and this session has ended",
            ));
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    check_password(&user.name, &body.new_password)
        .map_err(|p| ApiError::unprocessable("weak_password", p.to_string()))?;
    let hash = security.hashing.hash(body.new_password).await?;
    security.store.record_login_success(&user.name).await?;
    security
        .store
        .update_user(&user.name, UserChange::SetPassword(hash), now())
        .await?;
    security.forget_cached_credentials();
    security
        .audit
        .record_action(
            "password_change",
            &context,
            &principal,
            serde_json::json!({ "user": user.name }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
