//! Per-well diagnosis and episode history, and the old platform's symptom decision tree.

use axum::Json;
use axum::extract::State;
use espwatch_core::Timestamp;
use espwatch_core::diagnostics::legacy::{self, LegacyDiagnosis, SymptomRequest};
use espwatch_store::AlarmFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::diagnostics::{Delivery, RetrainError};
use crate::error::ApiError;
use crate::extract::{ApiJson, WellIdPath};
use crate::state::AppState;
use crate::views::AlarmView;

async fn require_well(
    state: &AppState,
    well_id: espwatch_core::WellId,
) -> Result<espwatch_core::WellId, ApiError> {
    match state.store.get_well(&well_id).await? {
        Some(_) => Ok(well_id),
        None => Err(ApiError::not_found(format!(
            "well {well_id} is not registered"
        ))),
    }
}

/// The current diagnosis of a well: findings of its latest reading with their evidence and
/// recommended actions, open episodes, features relative to its healthy baseline.
#[utoipa::path(get, path = "/api/v1/wells/{id}/diagnosis", tag = "diagnostics",
    params(("id" = String, Path, description = "Well id")),
    responses(
        (status = 200, description = "Diagnosis", body = Object),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope)
    ))]
pub async fn diagnosis(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    let well_id = require_well(&state, well_id).await?;
    Ok(Json(state.diagnostics.diagnosis(&well_id).await))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainBody {
    /// Start of the healthy baseline window, RFC 3339. Default: 8 h before `until`.
    from: Option<String>,
    /// End of the baseline window, RFC 3339. Default: now.
    until: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransientBody {
    /// End of the transient, RFC 3339: at most 24 h from now.
    until: String,
    /// What the operator is doing (e.g. `well_test`, `choke_change`); kept in the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// Marks a known transient of the well (a well test, a planned rate change) until `until`: the
/// rules that need steady running give it a grace period instead of alarms; the protective
/// rules (loss of lift, nameplate overload, winding at its limit) still judge. The mark is
/// recorded in the database before the answer, so the node that diagnoses the well (this one,
/// or another one it is announced to) keeps it across restarts and ownership moves. Returns
/// the diagnosis with `delivery`: what became of the mark.
#[utoipa::path(post, path = "/api/v1/wells/{id}/diagnosis/transient", tag = "diagnostics",
    params(("id" = String, Path, description = "Well id")),
    request_body = TransientBody,
    responses(
        (status = 200, description = "Diagnosis with the grace period set", body = Object),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid `until`", body = crate::error::ErrorEnvelope)
    ))]
pub async fn transient(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
    ApiJson(body): ApiJson<TransientBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let well_id = require_well(&state, well_id).await?;
    let until = Timestamp::parse_rfc3339(&body.until)
        .map_err(|e| ApiError::unprocessable("invalid_body", format!("`until`: {e}")))?;
    let now = Timestamp::from_datetime(chrono::Utc::now());
    if until.0 > now.0 + 24 * 3_600_000_000 {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`until` is more than 24 h away: a transient is short; retrain for a new normal",
        ));
    }
    if body.reason.as_ref().is_some_and(|r| r.len() > 200) {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`reason` is longer than 200 characters",
        ));
    }
    let delivery = state.diagnostics.mark_transient(&well_id, until).await?;
    Ok(Json(with_delivery(
        state.diagnostics.diagnosis(&well_id).await,
        &delivery,
    )))
}

/// The diagnosis with what became of the directive that was just given.
fn with_delivery(mut diagnosis: serde_json::Value, delivery: &Delivery) -> serde_json::Value {
    if let Some(object) = diagnosis.as_object_mut() {
        object.insert("delivery".into(), serde_json::json!(delivery));
    }
    diagnosis
}

/// Retrains a well's anomaly model and baseline on a window of its stored telemetry the
/// engineer knows to be healthy, then replays what followed. The window is recorded in the
/// database before the answer, so the node that diagnoses the well (this one, or another one
/// it is announced to) uses it, across restarts and ownership moves too. Returns the new
/// diagnosis with `delivery`: what became of the retrain.
#[utoipa::path(post, path = "/api/v1/wells/{id}/diagnosis/retrain", tag = "diagnostics",
    params(("id" = String, Path, description = "Well id")),
    request_body = RetrainBody,
    responses(
        (status = 200, description = "Diagnosis after retraining", body = Object),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid window, or no settled running in it to learn from (the well keeps its state)", body = crate::error::ErrorEnvelope)
    ))]
pub async fn retrain(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
    ApiJson(body): ApiJson<RetrainBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let well_id = require_well(&state, well_id).await?;
    let parse = |name: &str, v: &str| {
        Timestamp::parse_rfc3339(v)
            .map_err(|e| ApiError::unprocessable("invalid_body", format!("`{name}`: {e}")))
    };
    let until = match &body.until {
        Some(v) => parse("until", v)?,
        None => Timestamp::from_datetime(chrono::Utc::now()),
    };
    let from = match &body.from {
        Some(v) => parse("from", v)?,
        None => Timestamp(until.0 - 8 * 3_600_000_000),
    };
    if from >= until {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "`from` must be before `until`",
        ));
    }
    match state.diagnostics.retrain(&well_id, from, until).await {
        Ok(delivery) => Ok(Json(with_delivery(
            state.diagnostics.diagnosis(&well_id).await,
            &delivery,
        ))),
        Err(RetrainError::NoBaseline { readings }) => Err(ApiError::unprocessable(
            "no_baseline",
            "the window holds no settled running of this well to learn a baseline from: \
             give `from`/`until` around a stretch where the pump ran steadily (the default is \
             the last 8 h)",
        )
        .with_details(serde_json::json!({
            "from": from.to_rfc3339(),
            "until": until.to_rfc3339(),
            "readings_in_window": readings,
        }))),
        Err(e @ RetrainError::History(_)) => Err(ApiError::internal(e)),
        Err(RetrainError::Store(e)) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    well_id: String,
    /// Diagnosed episodes (as alarms: open and closed), newest first.
    events: Vec<AlarmView>,
}

/// The well's diagnosed episodes, newest first.
#[utoipa::path(get, path = "/api/v1/wells/{id}/events", tag = "diagnostics",
    params(("id" = String, Path, description = "Well id")),
    responses(
        (status = 200, description = "Episode history", body = EventList),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope)
    ))]
pub async fn events(
    State(state): State<AppState>,
    WellIdPath(well_id): WellIdPath,
) -> Result<Json<EventList>, ApiError> {
    let well_id = require_well(&state, well_id).await?;
    let alarms = state
        .alarm_store()?
        .list_alarms(&AlarmFilter {
            state: None,
            open: false,
            well_id: Some(well_id.clone()),
            ..AlarmFilter::default()
        })
        .await?;
    Ok(Json(EventList {
        well_id: well_id.to_string(),
        events: alarms.into_iter().map(Into::into).collect(),
    }))
}

const DECISION_TREE_BODY_LIMIT: usize = 256 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionTreeResponse {
    well_id: Option<String>,
    diagnosis: LegacyDiagnosis,
}

/// The old platform's symptom decision tree, kept for its clients: operator-reported symptoms
/// in, a named diagnosis with a confidence out.
#[utoipa::path(post, path = "/api/v1/diagnostics/decision_tree", tag = "diagnostics",
    request_body = SymptomRequest,
    responses(
        (status = 200, description = "Diagnosis", body = DecisionTreeResponse),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid body", body = crate::error::ErrorEnvelope)
    ))]
pub async fn decision_tree(
    ApiJson(request): ApiJson<SymptomRequest, DECISION_TREE_BODY_LIMIT>,
) -> Result<Json<DecisionTreeResponse>, ApiError> {
    Ok(Json(DecisionTreeResponse {
        well_id: request.well_id.clone(),
        diagnosis: legacy::decide(&request),
    }))
}
