//! `POST /api/v1/ask`: a question in plain words, answered from the data and the diagnoses
//! (issue 24). Thin: the reading and the answering are `espwatch_app::ask`.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::Utc;
use espwatch_app::ask::{AskError, Asker, not_understood_json};
use espwatch_core::Timestamp;
use espwatch_core::localtime::UtcOffset;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// Longest question accepted, in characters.
const MAX_QUESTION_CHARS: usize = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// The question, e.g. "average motor current of ESP-003 yesterday" (at most 500 characters).
    question: String,
    /// The zone "today", "yesterday", "since Monday" are read in, as a UTC offset (`+03:00`).
    /// Default: UTC. Answers give instants in UTC.
    #[serde(default)]
    timezone: Option<String>,
}

/// Ask the fleet: a question in plain words (wells by id, name, field or `PREFIX*`; channels and
/// conditions by their field names and synonyms; time words; thresholds with units) answered
/// from the same queries and diagnoses as the other routes, limited to the wells the caller may
/// see. Returns `{"interpretation": {"intent", "wells", "condition", "channels", "from", "to",
/// "step", "agg", "filter", ...}, "answer": {"text", "wells", "values", "series"},
/// "suggestions": [...]}`. A question it does not understand is 422 `not_understood` with
/// `details.recognised` (the parts it did understand) and `details.suggestions` (2–3 questions
/// it would understand); it never guesses.
#[utoipa::path(post, path = "/api/v1/ask", tag = "diagnostics",
    request_body = AskBody,
    responses(
        (status = 200, description = "The interpretation and the answer", body = Object),
        (status = 422, description = "Not understood (`not_understood`, with what was recognised and rephrasings), or an invalid body", body = crate::error::ErrorEnvelope),
        (status = 503, description = "The question needs alarms and this store keeps none", body = crate::error::ErrorEnvelope)
    ))]
pub async fn ask(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.question.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_body",
            format!("`question` is longer than {MAX_QUESTION_CHARS} characters"),
        ));
    }
    let zone = match body.timezone.as_deref() {
        None => UtcOffset::UTC,
        Some(z) => UtcOffset::parse(z)
            .map_err(|e| ApiError::unprocessable("invalid_body", format!("`timezone`: {e}")))?,
    };
    let alarms = state.alarms.clone();
    let asker = Asker {
        store: state.store.as_ref(),
        alarms: alarms.as_deref(),
        diagnoses: Some(state.diagnostics.as_ref()),
        scope: &principal.scope,
        role: principal.role,
        now: Timestamp::from_datetime(Utc::now()),
        zone,
    };
    match espwatch_app::ask::ask(&asker, &body.question).await {
        Ok(answered) => Ok(Json(answered.to_json())),
        Err(AskError::NotUnderstood(e)) => {
            Err(ApiError::unprocessable("not_understood", e.message.clone())
                .with_details(not_understood_json(&e)))
        }
        Err(e @ AskError::Forbidden(_)) => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            e.to_string(),
        )),
        Err(AskError::AlarmsUnavailable) => Err(state
            .alarm_store()
            .err()
            .unwrap_or_else(|| ApiError::internal("alarms unavailable"))),
        Err(AskError::Store(e)) => Err(e.into()),
        Err(e @ AskError::Join(_)) => Err(ApiError::internal(e)),
    }
}
