//! Wells registry: create, read, replace, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use espwatch_core::well::MetaProblem;
use espwatch_core::{WellDocument, WellMeta};
use espwatch_store::WellRecord;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, WellIdPath, parse_json};
use crate::state::AppState;

/// Registry bodies are small; this keeps a bad client from sending megabytes of curve points.
const WELL_BODY_LIMIT: usize = 1024 * 1024;

/// A registered well: its metadata plus bookkeeping.
#[derive(Debug, Serialize, ToSchema)]
pub struct WellResponse {
    #[serde(flatten)]
    meta: WellMeta,
    /// RFC 3339 UTC.
    created_at: String,
    updated_at: String,
    /// True while the well holds only what automatic registration from telemetry put there.
    auto_registered: bool,
}

impl From<WellRecord> for WellResponse {
    fn from(r: WellRecord) -> Self {
        WellResponse {
            meta: r.meta,
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
            auto_registered: r.auto_registered,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WellList {
    wells: Vec<WellResponse>,
}

fn invalid_meta(problems: Vec<MetaProblem>) -> ApiError {
    ApiError::unprocessable(
        "invalid_well",
        "the well metadata is invalid; see details.problems",
    )
    .with_details(serde_json::json!({ "problems": problems }))
}

/// All registered wells, sorted by id.
#[utoipa::path(get, path = "/api/v1/wells", tag = "wells",
    responses((status = 200, description = "Registered wells", body = WellList)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<WellList>, ApiError> {
    let mut wells = state.store.list_wells().await?;
    wells.retain(|w| principal.may_see_well(w.meta.well_id.as_str()));
    wells.sort_by(|a, b| a.meta.well_id.cmp(&b.meta.well_id));
    Ok(Json(WellList {
        wells: wells.into_iter().map(Into::into).collect(),
    }))
}

/// Registers a well. A well registered automatically from telemetry may be registered again
/// with full metadata; any other existing well gives 409.
#[utoipa::path(post, path = "/api/v1/wells", tag = "wells",
    request_body = WellDocument,
    responses(
        (status = 201, description = "Created", body = WellResponse),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorEnvelope),
        (status = 409, description = "Already registered", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid metadata, every problem listed", body = crate::error::ErrorEnvelope)
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(document): ApiJson<WellDocument, WELL_BODY_LIMIT>,
) -> Result<(StatusCode, Json<WellResponse>), ApiError> {
    if !principal.may_see_well(&document.well_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("not permitted for well {:?}", document.well_id),
        ));
    }
    let meta = document.validate().map_err(invalid_meta)?;
    let record = state.store.create_well(meta).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// One well's metadata.
#[utoipa::path(get, path = "/api/v1/wells/{id}", tag = "wells",
    params(("id" = String, Path, description = "Well id")),
    responses(
        (status = 200, description = "The well", body = WellResponse),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope)
    ))]
pub async fn get(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
) -> Result<Json<WellResponse>, ApiError> {
    match state.store.get_well(&well_id).await? {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::not_found(format!(
            "well {well_id} is not registered"
        ))),
    }
}

/// Replaces a well's metadata. `well_id` in the body may be omitted; if given it must match
/// the path.
#[utoipa::path(put, path = "/api/v1/wells/{id}", tag = "wells",
    params(("id" = String, Path, description = "Well id")),
    request_body = WellDocument,
    responses(
        (status = 200, description = "Replaced", body = WellResponse),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid metadata or id mismatch", body = crate::error::ErrorEnvelope)
    ))]
pub async fn replace(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
    ApiJson(mut value): ApiJson<serde_json::Value, WELL_BODY_LIMIT>,
) -> Result<Json<WellResponse>, ApiError> {
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    match object.get("well_id") {
        None => {
            object.insert("well_id".into(), well_id.as_str().into());
        }
        Some(v) if v.as_str() == Some(well_id.as_str()) => {}
        Some(_) => {
            return Err(invalid_meta(vec![MetaProblem {
                field: "well_id".into(),
                reason: format!("must match the path ({well_id}); a well cannot be renamed"),
            }]));
        }
    }
    let document: WellDocument = parse_json(value.to_string().as_bytes())?;
    let meta = document.validate().map_err(invalid_meta)?;
    match state.store.update_well(meta).await? {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::not_found(format!(
            "well {well_id} is not registered"
        ))),
    }
}

/// Removes a well and all its telemetry.
#[utoipa::path(delete, path = "/api/v1/wells/{id}", tag = "wells",
    params(("id" = String, Path, description = "Well id")),
    responses(
        (status = 204, description = "Deleted with its telemetry"),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope)
    ))]
pub async fn delete(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_well(&well_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "well {well_id} is not registered"
        )))
    }
}
