//! Alarms raised by the online diagnostics: list and acknowledge.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use chrono::Utc;
use espwatch_core::Timestamp;
use espwatch_store::{AckOutcome, Alarm, AlarmFilter, AlarmState, AlarmStore};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::{Principal, SourceAddr};
use crate::error::ApiError;
use crate::routes::auth::audit_action;
use crate::routes::json_body;
use crate::routes::telemetry::parse_well_id;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlarmParams {
    /// `raised`, `acknowledged` or `cleared`; default: all.
    state: Option<String>,
    /// Only this well's alarms.
    well_id: Option<String>,
}

/// An alarm as the API shows it (times RFC 3339).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmView {
    id: i64,
    well_id: String,
    condition: String,
    /// `critical`, `major` or `minor`.
    severity: String,
    /// `raised`, `acknowledged` or `cleared`.
    state: String,
    confidence: f64,
    started_at: String,
    ended_at: Option<String>,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    comment: Option<String>,
    /// Evidence and the recommended action at raise time.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

impl From<Alarm> for AlarmView {
    fn from(a: Alarm) -> Self {
        AlarmView {
            id: a.id,
            well_id: a.well_id,
            condition: a.condition,
            severity: a.severity,
            state: a.state.name().to_owned(),
            confidence: a.confidence,
            started_at: a.started_at.to_rfc3339(),
            ended_at: a.ended_at.map(Timestamp::to_rfc3339),
            acknowledged_by: a.acknowledged_by,
            acknowledged_at: a.acknowledged_at.map(Timestamp::to_rfc3339),
            comment: a.comment,
            detail: a.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmList {
    alarms: Vec<AlarmView>,
}

pub(crate) fn alarm_store(state: &AppState) -> Result<Arc<dyn AlarmStore>, ApiError> {
    state.alarms.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "alarms_unavailable",
            "this server's store keeps no alarms",
        )
    })
}

/// Alarms, newest first, filtered by state and well.
#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", params(AlarmParams),
    responses(
        (status = 200, description = "Alarms", body = AlarmList),
        (status = 400, description = "Bad filter", body = crate::error::ErrorEnvelope)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<AlarmParams>, QueryRejection>,
) -> Result<Json<AlarmList>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let filter = AlarmFilter {
        state: match params.state.as_deref() {
            None => None,
            Some(s) => Some(AlarmState::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("state {s:?} is not one of raised, acknowledged, cleared"),
                )
            })?),
        },
        well_id: match params.well_id.as_deref() {
            None => None,
            Some(w) => Some(parse_well_id(w)?.to_string()),
        },
    };
    let mut alarms = alarm_store(&state)?.list_alarms(&filter).await?;
    alarms.retain(|a| principal.may_see_well(&a.well_id));
    Ok(Json(AlarmList {
        alarms: alarms.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// Ignored, kept for older clients: the acknowledging identity is the authenticated one.
    #[allow(dead_code)]
    by: Option<String>,
    /// Up to 2000 characters.
    comment: Option<String>,
}

/// Acknowledges an alarm: someone has seen it and owns it. It stays open until the condition
/// clears.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/ack", tag = "alarms",
    params(("id" = i64, Path, description = "Alarm id")),
    request_body = AckBody,
    responses(
        (status = 200, description = "Acknowledged", body = AlarmView),
        (status = 404, description = "No such alarm", body = crate::error::ErrorEnvelope),
        (status = 409, description = "Already cleared", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid body", body = crate::error::ErrorEnvelope)
    ))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    source: Option<Extension<SourceAddr>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AlarmView>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::bad_request("invalid_alarm_id", format!("{id:?} is not an alarm id"))
    })?;
    let body: AckBody = json_body(&headers, body, 64 * 1024).await?;
    let by = principal.name.clone();
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > 2000)
    {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`comment` must be at most 2000 characters",
        ));
    }
    let now = Timestamp::from_datetime(Utc::now());
    let alarms = alarm_store(&state)?;
    // Object-level check before acting: an alarm of a well outside the identity's scope is
    // answered as if it did not exist.
    let visible = alarms
        .get_alarm(id)
        .await?
        .is_some_and(|a| principal.may_see_well(&a.well_id));
    if !visible {
        return Err(ApiError::not_found(format!("no alarm {id}")));
    }
    match alarms
        .acknowledge_alarm(id, &by, body.comment.as_deref(), now)
        .await?
    {
        AckOutcome::Acknowledged(a) => {
            audit_action(&state, "alarm_ack", &headers, source, &principal, serde_json::json!({ "alarm": id, "well_id": a.well_id, "condition": a.condition, "comment": a.comment })).await;
            Ok(Json(a.into()))
        }
        AckOutcome::NotFound => Err(ApiError::not_found(format!("no alarm {id}"))),
        AckOutcome::AlreadyCleared(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "alarm_cleared",
            format!("alarm {id} has already cleared"),
        )),
    }
}
