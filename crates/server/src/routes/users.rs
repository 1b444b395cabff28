//! Administration of users and API keys over HTTP (admin only). The same operations exist as
//! `espwatch users ...` / `espwatch apikeys ...` commands.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use espwatch_core::WellId;
use espwatch_core::access::{BadWellEntry, Role, WellScope, check_password, valid_user_name};
use espwatch_store::{ApiKey, NewUser, User, UserChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::now;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, RequestContext};
use crate::state::AppState;
use espwatch_app::keys::{KeyRequest, KeyRequestError, issue_api_key};

#[derive(Serialize, ToSchema)]
pub struct UserView {
    name: String,
    role: String,
    /// The wells the user is limited to; absent: every well.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    wells: Option<Vec<WellId>>,
    disabled: bool,
    /// RFC 3339; present while the account is locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_until: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        let at = now();
        UserView {
            name: u.name,
            role: u.role.name().to_owned(),
            wells: u.wells.as_list().map(<[WellId]>::to_vec),
            disabled: u.disabled,
            locked_until: u.locked_until.filter(|t| *t > at).map(|t| t.to_rfc3339()),
            created_at: u.created_at.to_rfc3339(),
            updated_at: u.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse::<Role>()
        .map_err(|e| ApiError::unprocessable("invalid_role", e.to_string()))
}

/// 422 `invalid_wells`, naming the entry and why it is no well id.
fn invalid_wells(e: &BadWellEntry) -> ApiError {
    ApiError::unprocessable("invalid_wells", e.to_string())
        .with_details(serde_json::json!({ "entry": e.entry, "reason": e.problem.to_string() }))
}

fn parse_wells(wells: Option<Vec<String>>) -> Result<WellScope, ApiError> {
    WellScope::parse_list(wells).map_err(|e| invalid_wells(&e))
}

/// Every user (no password hashes).
#[utoipa::path(get, path = "/api/v1/users", tag = "admin",
    responses((status = 200, description = "Users", body = UserList)))]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<UserList>, ApiError> {
    let users = state.security.store.list_users().await?;
    Ok(Json(UserList {
        users: users.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    name: String,
    role: String,
    password: String,
    /// Limit the user to these wells; absent: all wells.
    wells: Option<Vec<String>>,
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "admin",
    request_body = NewUserBody,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 409, description = "Name taken", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid name, role, wells or password", body = crate::error::ErrorEnvelope)
    ))]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !valid_user_name(&body.name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "user names are 1–64 characters of letters, digits, . _ - @",
        ));
    }
    let role = parse_role(&body.role)?;
    let wells = parse_wells(body.wells)?;
    check_password(&body.name, &body.password)
        .map_err(|p| ApiError::unprocessable("weak_password", p.to_string()))?;
    let security = &state.security;
    if let Some(existing) = security.store.get_user_any_case(&body.name).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "user {:?} already exists (user names are compared ignoring case)",
                existing.name
            ),
        ));
    }
    let hash = security.hashing.hash(body.password).await?;
    let user = security
        .store
        .create_user(
            NewUser {
                name: body.name,
                role,
                password_hash: hash,
                wells,
            },
            now(),
        )
        .await?;
    state
        .security
        .audit
        .record_action(
            "user_create",
            &context,
            &principal,
            serde_json::json!({ "user": user.name, "role": user.role.name(), "wells": user.wells }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    role: Option<String>,
    disabled: Option<bool>,
    /// New password (policy applies).
    password: Option<String>,
    /// `null` lifts the limit; a list limits the user to those wells.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    wells: Option<Option<Vec<String>>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Vec<String>>>, D::Error> {
        Option::<Vec<String>>::deserialize(d).map(Some)
    }
}

async fn enabled_admins(state: &AppState) -> Result<Vec<String>, ApiError> {
    Ok(state
        .security
        .store
        .list_users()
        .await?
        .into_iter()
        .filter(|u| u.role == Role::Admin && !u.disabled)
        .map(|u| u.name)
        .collect())
}

fn last_admin() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "last_admin",
        "this is the last enabled admin; create another admin first",
    )
}

/// Changes a user's role, wells, password, or disables/enables it. Any change but enabling
/// ends the user's sessions at once.
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "admin",
    params(("name" = String, Path, description = "User name")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "Changed", body = UserView),
        (status = 404, description = "No such user", body = crate::error::ErrorEnvelope),
        (status = 409, description = "Would leave no enabled admin", body = crate::error::ErrorEnvelope)
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(name): Path<String>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    let mut changes = Vec::new();
    if let Some(role) = &patch.role {
        changes.push(UserChange::SetRole(parse_role(role)?));
    }
    if let Some(wells) = patch.wells {
        changes.push(UserChange::SetWells(parse_wells(wells)?));
    }
    if let Some(password) = patch.password {
        check_password(&name, &password)
            .map_err(|p| ApiError::unprocessable("weak_password", p.to_string()))?;
        changes.push(UserChange::SetPassword(
            state.security.hashing.hash(password).await?,
        ));
    }
    match patch.disabled {
        Some(true) => changes.push(UserChange::Disable),
        Some(false) => changes.push(UserChange::Enable),
        None => {}
    }
    let demotes = matches!(&patch.role, Some(r) if r != "admin") || patch.disabled == Some(true);
    if demotes && enabled_admins(&state).await? == [name.clone()] {
        return Err(last_admin());
    }
    let security = &state.security;
    let mut user = None;
    let mut audited = Vec::new();
    for change in changes {
        audited.push(match &change {
            UserChange::Disable => "disable".to_owned(),
            UserChange::Enable => "enable".to_owned(),
            UserChange::SetRole(r) => format!("role={r}"),
            UserChange::SetPassword(_) => "password".to_owned(),
            // As the audit has always shown it: `Some(["W-1"])`, `None` for every well.
            UserChange::SetWells(w) => format!(
                "wells={:?}",
                w.as_list()
                    .map(|l| l.iter().map(WellId::as_str).collect::<Vec<_>>())
            ),
        });
        user = Some(
            security
                .store
                .update_user(&name, change, now())
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no user {name:?}")))?,
        );
    }
    let user = match user {
        Some(u) => u,
        None => security
            .store
            .get_user(&name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no user {name:?}")))?,
    };
    if !audited.is_empty() {
        security.forget_cached_credentials();
        state
            .security
            .audit
            .record_action(
                "user_change",
                &context,
                &principal,
                serde_json::json!({ "user": name, "changes": audited }),
            )
            .await;
    }
    Ok(Json(user.into()))
}

/// Removes a user and its sessions (its audit records stay).
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "admin",
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such user", body = crate::error::ErrorEnvelope),
        (status = 409, description = "Last enabled admin", body = crate::error::ErrorEnvelope)
    ))]
pub async fn remove_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if enabled_admins(&state).await? == [name.clone()] {
        return Err(last_admin());
    }
    let security = &state.security;
    if !security.store.remove_user(&name).await? {
        return Err(ApiError::not_found(format!("no user {name:?}")));
    }
    security.forget_cached_credentials();
    state
        .security
        .audit
        .record_action(
            "user_remove",
            &context,
            &principal,
            serde_json::json!({ "user": name }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    id: String,
    name: String,
    role: String,
    /// The wells the key is limited to; absent: every well.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    wells: Option<Vec<WellId>>,
    created_at: String,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    status: &'static str,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|e| e <= now()) {
            "expired"
        } else {
            "active"
        };
        ApiKeyView {
            id: k.id,
            name: k.name,
            role: k.role.name().to_owned(),
            wells: k.wells.as_list().map(<[WellId]>::to_vec),
            created_at: k.created_at.to_rfc3339(),
            created_by: k.created_by,
            expires_at: k.expires_at.map(|t| t.to_rfc3339()),
            revoked_at: k.revoked_at.map(|t| t.to_rfc3339()),
            status,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    keys: Vec<ApiKeyView>,
}

/// Every API key, newest first (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/apikeys", tag = "admin",
    responses((status = 200, description = "Keys", body = ApiKeyList)))]
pub async fn list_keys(State(state): State<AppState>) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = state.security.store.list_api_keys().await?;
    Ok(Json(ApiKeyList {
        keys: keys.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    name: String,
    /// Default `api_client`.
    role: Option<String>,
    wells: Option<Vec<String>>,
    /// Lifetime such as `90d`; absent: no expiry.
    expires: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NewKeyResponse {
    /// The key. Shown once: only its hash is stored.
    key: String,
    #[serde(flatten)]
    info: ApiKeyView,
}

/// Creates an API key for a machine client; the key is in the answer, once.
#[utoipa::path(post, path = "/api/v1/apikeys", tag = "admin",
    request_body = NewKeyBody,
    responses(
        (status = 201, description = "Created", body = NewKeyResponse),
        (status = 422, description = "Invalid name, role, wells or expiry", body = crate::error::ErrorEnvelope)
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> Result<(StatusCode, Json<NewKeyResponse>), ApiError> {
    let role = parse_role(body.role.as_deref().unwrap_or("api_client"))?;
    let request = KeyRequest {
        name: body.name,
        role,
        wells: body.wells,
        expires: body.expires,
        created_by: principal.actor(),
    };
    let (stored, key) = issue_api_key(state.security.store.as_ref(), request)
        .await
        .map_err(|e| match e {
            KeyRequestError::Name => ApiError::unprocessable("invalid_name", e.to_string()),
            KeyRequestError::Wells(bad) => invalid_wells(&bad),
            KeyRequestError::Expires(_) | KeyRequestError::AdminExpiry => {
                ApiError::unprocessable("invalid_expires", e.to_string())
            }
            KeyRequestError::Store(e) => e.into(),
            KeyRequestError::Internal(cause) => ApiError::internal(cause),
        })?;
    state
        .security
        .audit
        .record_action(
        "apikey_create",
        &context,
        &principal,
        serde_json::json!({ "key": stored.id, "name": stored.name, "role": stored.role.name() }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(NewKeyResponse {
            key,
            info: stored.into(),
        }),
    ))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/api/v1/apikeys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such active key", body = crate::error::ErrorEnvelope)
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let security = &state.security;
    if !security.store.revoke_api_key(&id, now()).await? {
        return Err(ApiError::not_found(format!("no active API key {id:?}")));
    }
    security.forget_cached_credentials();
    state
        .security
        .audit
        .record_action(
            "apikey_revoke",
            &context,
            &principal,
            serde_json::json!({ "key": id }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}
