//! Alarms raised by the online diagnostics: list and acknowledge.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use espwatch_core::Timestamp;
use espwatch_store::{ALARM_LIST_CAP, AckOutcome, AlarmFilter, AlarmKey, AlarmState};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, RequestContext, parse_time_param, parse_well_id};
use crate::state::AppState;
use crate::views::{AlarmList, AlarmView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlarmParams {
    /// `raised`, `acknowledged`, `cleared`, or `open` (raised or acknowledged); default: all.
    state: Option<String>,
    /// Only this well's alarms.
    well_id: Option<String>,
    /// Most alarms in this page, 1 to 10000; default 10000.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page (same filters): this page continues after it.
    cursor: Option<String>,
    /// Only alarms active at or after this time (RFC 3339 or `now`): open, or cleared at or
    /// after it. With `to`: the alarms whose episodes overlap a chart's range.
    from: Option<String>,
    /// Only alarms started at or before this time (RFC 3339 or `now`).
    to: Option<String>,
}

/// A cursor names the last alarm of a page by its place in the order (`started_at` in
/// microseconds and `id`), so the next page starts strictly after it whatever was raised or
/// cleared meanwhile.
fn cursor_of(key: AlarmKey) -> String {
    format!("{}_{}", key.started_at.0, key.id)
}

fn parse_cursor(cursor: &str) -> Result<AlarmKey, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_cursor",
            format!("cursor {cursor:?} is not a next_cursor this server gave"),
        )
    };
    let (started_at, id) = cursor.split_once('_').ok_or_else(bad)?;
    Ok(AlarmKey {
        started_at: Timestamp(started_at.parse().map_err(|_| bad())?),
        id: id.parse().map_err(|_| bad())?,
    })
}

/// Alarms, newest first (by start, then id), filtered by state, well and the time they were
/// active (`from`/`to`), in pages: at most
/// `limit` (default and most: 10000), and a `next_cursor` to pass as `cursor` for the older
/// ones (`null` on the last page).
#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", params(AlarmParams),
    responses(
        (status = 200, description = "A page of alarms", body = AlarmList),
        (status = 400, description = "Bad filter, limit or cursor", body = crate::error::ErrorEnvelope)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<AlarmParams>,
) -> Result<Json<AlarmList>, ApiError> {
    let (alarm_state, open) = match params.state.as_deref() {
        None => (None, false),
        Some("open") => (None, true),
        Some(s) => (
            Some(AlarmState::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("state {s:?} is not one of raised, acknowledged, cleared, open"),
                )
            })?),
            false,
        ),
    };
    let from = params
        .from
        .as_deref()
        .map(|t| parse_time_param("from", t))
        .transpose()?;
    let to = params
        .to
        .as_deref()
        .map(|t| parse_time_param("to", t))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(
            ApiError::bad_request("invalid_query", "`from` is after `to`")
                .with_details(serde_json::json!({ "parameter": "from" })),
        );
    }
    let filter = AlarmFilter {
        state: alarm_state,
        open,
        well_id: match params.well_id.as_deref() {
            None => None,
            Some(w) => Some(parse_well_id(w)?),
        },
        from,
        to,
    };
    let limit = params.limit.unwrap_or(ALARM_LIST_CAP);
    if !(1..=ALARM_LIST_CAP).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {ALARM_LIST_CAP}"),
        ));
    }
    let mut after = params.cursor.as_deref().map(parse_cursor).transpose()?;
    let store = state.alarm_store()?;
    // Alarms of wells outside the identity's scope are skipped, so a page may take more than
    // one read; one alarm past the limit tells whether there is a next page.
    let mut alarms = Vec::new();
    let mut more = false;
    'pages: loop {
        let want = limit - alarms.len() + 1;
        let page = store.list_alarms_page(&filter, after, want).await?;
        let last_page = page.len() < want;
        after = page.last().map(AlarmKey::of);
        for a in page {
            if !principal.may_see_well(a.well_id.as_str()) {
                continue;
            }
            if alarms.len() == limit {
                more = true;
                break 'pages;
            }
            alarms.push(a);
        }
        if last_page {
            break;
        }
    }
    Ok(Json(AlarmList {
        next_cursor: more
            .then(|| alarms.last().map(|a| cursor_of(AlarmKey::of(a))))
            .flatten(),
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
        (status = 409, description = "Already cleared, or already acknowledged (the first acknowledgement stands)", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid body", body = crate::error::ErrorEnvelope)
    ))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AckBody>,
) -> Result<Json<AlarmView>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::bad_request("invalid_alarm_id", format!("{id:?} is not an alarm id"))
    })?;
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
    let alarms = state.alarm_store()?;
    // Object-level check before acting: an alarm of a well outside the identity's scope is
    // answered as if it did not exist.
    let visible = alarms
        .get_alarm(id)
        .await?
        .is_some_and(|a| principal.may_see_well(a.well_id.as_str()));
    if !visible {
        return Err(ApiError::not_found(format!("no alarm {id}")));
    }
    match alarms
        .acknowledge_alarm(id, &by, body.comment.as_deref(), now)
        .await?
    {
        AckOutcome::Acknowledged(a) => {
            if let Some(notifier) = &state.notifier {
                notifier
                    .alarm_changed(crate::live::AlarmChange::Acknowledged, &a)
                    .await;
            }
            state
                .live
                .publish_alarm(crate::live::AlarmChange::Acknowledged, a.clone());
            state
                .security
                .audit
                .record_action(
                    "alarm_ack",
                    &context,
                    &principal,
                    serde_json::json!({ "alarm": id, "well_id": a.well_id, "condition": a.condition, "comment": a.comment }),
                )
                .await;
            Ok(Json(a.into()))
        }
        AckOutcome::NotFound => Err(ApiError::not_found(format!("no alarm {id}"))),
        AckOutcome::AlreadyCleared(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "alarm_cleared",
            format!("alarm {id} has already cleared"),
        )),
        // The first acknowledgement stands (issue 18 item 12): overwriting it would erase who
        // took responsibility, and when.
        AckOutcome::AlreadyAcknowledged(a) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "alarm_already_acknowledged",
            format!(
                "alarm {id} was already acknowledged by {} at {}",
                a.acknowledged_by.as_deref().unwrap_or("?"),
                a.acknowledged_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
        )),
    }
}
