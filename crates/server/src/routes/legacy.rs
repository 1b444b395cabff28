//! The old platform's read routes, kept as documented aliases for its clients:
//! `GET /api/v1/telemetry?device_id=&start=&end=` (rows as its `telemetry` table held them)
//! and `GET /api/v1/diagnostics/{device_id}` (a diagnosis as its decision tree answered).
//! Same permissions as the canonical routes (`telemetry:read`, `diagnostics:read`), checked
//! against the well by `guard` from the policy table; audited under these routes.
//! (`POST /telemetry/ingest` is next to the canonical ingest handler in `telemetry.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use espwatch_app::quality::{QualityError, assess_well};
use espwatch_core::quality::QualityReport;
use espwatch_core::{Field, TimeRange, Timestamp, WellId};
use espwatch_store::AlarmFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{ApiQuery, WellIdPath, parse_time_param, parse_well_id};
use crate::state::AppState;

/// Query parameters of the old telemetry query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LegacyTelemetryParams {
    /// The well (the old platform's device id).
    device_id: String,
    /// Start, RFC 3339, inclusive. Default: 24 h before `end`.
    start: Option<String>,
    /// End, RFC 3339, exclusive (or `now`). Default: now.
    end: Option<String>,
    /// Most rows returned, oldest first (default 10 000, at most 100 000); `truncated` says
    /// whether more exist.
    limit: Option<usize>,
}

/// One row as the old `telemetry` table held it. Columns the old table had are under its
/// names (`temperature` is the motor temperature, `pressure` and `rpm` were never measured
/// separately and stay null); channels it lacked are under espwatch's canonical names.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyRow {
    timestamp: String,
    device_id: String,
    temperature: Option<f64>,
    vibration: Option<f64>,
    pressure: Option<f64>,
    flow_rate: Option<f64>,
    motor_current: Option<f64>,
    rpm: Option<f64>,
    intake_pressure: Option<f64>,
    discharge_pressure: Option<f64>,
    vsd_frequency: Option<f64>,
    gor: Option<f64>,
    /// The other channels, canonical names; missing values are left out.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    other: BTreeMap<&'static str, f64>,
    /// Score (0–1) of the hour window holding this row (`GET /api/v1/wells/{id}/quality`).
    data_quality_score: f64,
    /// The row falls inside an episode the diagnostics raised for this well.
    is_anomaly: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyTelemetryResponse {
    device_id: String,
    start: String,
    end: String,
    count: usize,
    /// More rows exist after the last one returned.
    truncated: bool,
    data: Vec<LegacyRow>,
}

const DEFAULT_ROWS: usize = 10_000;
const MAX_ROWS: usize = 100_000;
const MAX_RANGE: Duration = Duration::from_secs(400 * 86_400);
/// The range of a query that names no `start`: the day before `end`.
const DEFAULT_RANGE: Duration = Duration::from_secs(86_400);
const QUALITY_WINDOW_MICROS: i64 = 3_600_000_000;

/// The old platform's telemetry query, an alias of `GET /api/v1/wells/{id}/telemetry`:
/// raw rows of one well in the old column names, each with the data-quality score of its hour
/// and whether it lies in a diagnosed episode.
#[utoipa::path(get, path = "/api/v1/telemetry", tag = "legacy",
    params(LegacyTelemetryParams),
    responses(
        (status = 200, description = "Rows, oldest first", body = LegacyTelemetryResponse),
        (status = 400, description = "Invalid parameter", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown well", body = crate::error::ErrorEnvelope)
    ))]
pub async fn telemetry(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<LegacyTelemetryParams>,
) -> Result<Json<LegacyTelemetryResponse>, ApiError> {
    let invalid = |param: &str, message: String| {
        ApiError::bad_request("invalid_query", message)
            .with_details(serde_json::json!({ "parameter": param }))
    };
    let well = parse_well_id(&params.device_id)?;
    let end = match &params.end {
        Some(t) => parse_time_param("end", t)?,
        None => Timestamp::from_datetime(Utc::now()),
    };
    let start = match &params.start {
        Some(t) => parse_time_param("start", t)?,
        None => end.saturating_sub(DEFAULT_RANGE),
    };
    if start >= end {
        return Err(invalid("start", "`start` must be before `end`".into()));
    }
    if end.0 - start.0 > Timestamp::duration_micros(MAX_RANGE) {
        return Err(invalid(
            "start",
            format!(
                "a query may span at most {} days",
                MAX_RANGE.as_secs() / 86_400
            ),
        ));
    }
    let limit = params.limit.unwrap_or(DEFAULT_ROWS);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(invalid(
            "limit",
            format!("`limit` must be between 1 and {MAX_ROWS}"),
        ));
    }
    let range = TimeRange {
        from: start,
        to: end,
    };
    // Quality windows are whole hours, so a row's score does not depend on `start`.
    let hours = TimeRange {
        from: Timestamp(start.0.div_euclid(QUALITY_WINDOW_MICROS) * QUALITY_WINDOW_MICROS),
        to: Timestamp(
            (end.0 + QUALITY_WINDOW_MICROS - 1).div_euclid(QUALITY_WINDOW_MICROS)
                * QUALITY_WINDOW_MICROS,
        ),
    };
    let quality = quality_of(&state, &well, hours).await?;
    let points = state.store.read_range(&well, range).await?;
    let episodes = episodes_of(&state, &well).await?;
    let truncated = points.len() > limit;
    let data: Vec<LegacyRow> = points
        .into_iter()
        .take(limit)
        .map(|(ts, m)| {
            let window = ((ts.0 - hours.from.0) / QUALITY_WINDOW_MICROS) as usize;
            let score = quality
                .windows
                .get(window)
                .map_or(0.0, |w| (w.score / 100.0 * 1e4).round() / 1e4);
            let mut other = BTreeMap::new();
            for f in [
                Field::MotorVoltageV,
                Field::TubingPressurePsi,
                Field::IntakeTempC,
                Field::VibrationYG,
                Field::WaterCutPct,
            ] {
                if let Some(v) = m.get(f) {
                    other.insert(f.name(), v);
                }
            }
            LegacyRow {
                timestamp: ts.to_rfc3339(),
                device_id: well.to_string(),
                temperature: m.get(Field::MotorTempC),
                vibration: m.get(Field::VibrationXG),
                pressure: None,
                flow_rate: m.get(Field::FlowRateBpd),
                motor_current: m.get(Field::MotorCurrentA),
                rpm: None,
                intake_pressure: m.get(Field::IntakePressurePsi),
                discharge_pressure: m.get(Field::DischargePressurePsi),
                vsd_frequency: m.get(Field::FrequencyHz),
                gor: m.get(Field::GorScfBbl),
                other,
                data_quality_score: score,
                is_anomaly: episodes
                    .iter()
                    .any(|(from, to)| ts >= *from && to.is_none_or(|to| ts < to)),
            }
        })
        .collect();
    Ok(Json(LegacyTelemetryResponse {
        device_id: well.to_string(),
        start: start.to_rfc3339(),
        end: end.to_rfc3339(),
        count: data.len(),
        truncated,
        data,
    }))
}

async fn quality_of(
    state: &AppState,
    well: &WellId,
    range: TimeRange,
) -> Result<QualityReport, ApiError> {
    match assess_well(state.store.as_ref(), well, range, QUALITY_WINDOW_MICROS).await {
        Ok(report) => Ok(report),
        Err(QualityError::UnknownWell(w)) => {
            Err(ApiError::not_found(format!("well {w} is not registered")))
        }
        Err(e @ QualityError::TooManyWindows) => {
            Err(ApiError::bad_request("invalid_query", e.to_string()))
        }
        Err(QualityError::Store(e)) => Err(e.into()),
        Err(e @ QualityError::Join(_)) => Err(ApiError::internal(e)),
    }
}

/// Data-time spans of the well's diagnosed episodes (open ones have no end).
async fn episodes_of(
    state: &AppState,
    well: &WellId,
) -> Result<Vec<(Timestamp, Option<Timestamp>)>, ApiError> {
    let Some(alarms) = state.alarms.clone() else {
        return Ok(Vec::new());
    };
    Ok(alarms
        .list_alarms(&AlarmFilter {
            state: None,
            open: false,
            well_id: Some(well.clone()),
            ..AlarmFilter::default()
        })
        .await?
        .into_iter()
        .map(|a| (a.started_at, a.ended_at))
        .collect())
}

/// The old platform's diagnosis of one device.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyDiagnosticsResponse {
    device_id: String,
    well_id: String,
    /// Data time of the well's latest judged reading (RFC 3339); null before any.
    timestamp: Option<String>,
    /// `learning` (no baseline yet), `normal`, or `alert` (a finding stands).
    status: &'static str,
    diagnosis: LegacyDiagnosisView,
    /// Score (0–1) of the last hour's data (`GET /api/v1/wells/{id}/quality`); null without data.
    data_quality_score: Option<f64>,
    /// The canonical diagnosis (`GET /api/v1/wells/{id}/diagnosis`), for clients moving over.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// As the old decision tree answered (`POST /api/v1/diagnostics/decision_tree`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyDiagnosisView {
    /// The old platform's label, e.g. "Free Gas Lock", "Normal Operation".
    #[serde(rename = "type")]
    kind: String,
    confidence: f64,
    /// espwatch's condition name (`gas_lock`, `anomaly`), null when normal.
    condition: Option<String>,
    recommended_action: String,
    /// The evidence, one line per feature.
    rationale: Vec<String>,
}

/// The old platform's per-device diagnosis, an alias of `GET /api/v1/wells/{id}/diagnosis` in
/// the old shape: the leading finding as `diagnosis` (`type`, `confidence`, ...), plus the
/// data quality of the last hour. The path parameter is the old `device_id` (the well id).
#[utoipa::path(get, path = "/api/v1/diagnostics/{id}", tag = "legacy",
    params(("id" = String, Path, description = "The well (the old platform's device_id)")),
    responses(
        (status = 200, description = "Diagnosis", body = LegacyDiagnosticsResponse),
        (status = 404, description = "Not registered", body = crate::error::ErrorEnvelope)
    ))]
pub async fn diagnostics(
    State(state): State<AppState>,
    WellIdPath(well): WellIdPath,
) -> Result<Json<LegacyDiagnosticsResponse>, ApiError> {
    if state.store.get_well(&well).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "well {well} is not registered"
        )));
    }
    let detail = state.diagnostics.diagnosis(&well).await;
    let as_of = detail["as_of"].as_str().map(str::to_owned);
    let trained = detail["trained"].as_bool().unwrap_or(false);
    let lead = detail["findings"]
        .as_array()
        .and_then(|f| f.first())
        .cloned();
    let diagnosis = match &lead {
        Some(f) => {
            let condition = f["condition"].as_str().unwrap_or("anomaly").to_owned();
            LegacyDiagnosisView {
                kind: legacy_label(&condition),
                confidence: f["confidence"].as_f64().unwrap_or(0.0),
                recommended_action: f["action"].as_str().unwrap_or_default().to_owned(),
                rationale: f["evidence"]
                    .as_array()
                    .map(|e| e.iter().map(evidence_line).collect())
                    .unwrap_or_default(),
                condition: Some(condition),
            }
        }
        None => LegacyDiagnosisView {
            kind: "Normal Operation".into(),
            confidence: if trained { 1.0 } else { 0.0 },
            condition: None,
            recommended_action: if trained {
                "No action needed; keep watching.".into()
            } else {
                "The well is still learning its baseline; no diagnosis yet.".into()
            },
            rationale: Vec::new(),
        },
    };
    let status = match (&lead, trained) {
        (Some(_), _) => "alert",
        (None, true) => "normal",
        (None, false) => "learning",
    };
    // The last hour of data up to the latest judged reading (or now).
    let end = as_of
        .as_deref()
        .and_then(|t| Timestamp::parse_rfc3339(t).ok())
        .map_or_else(
            || Timestamp::from_datetime(Utc::now()),
            |t| Timestamp(t.0 + 1),
        );
    let range = TimeRange {
        from: Timestamp(end.0 - QUALITY_WINDOW_MICROS),
        to: end,
    };
    let quality = quality_of(&state, &well, range).await?;
    let data_quality_score =
        (quality.overall.readings > 0).then(|| (quality.overall.score / 100.0 * 1e4).round() / 1e4);
    Ok(Json(LegacyDiagnosticsResponse {
        device_id: well.to_string(),
        well_id: well.to_string(),
        timestamp: as_of,
        status,
        diagnosis,
        data_quality_score,
        detail,
    }))
}

/// The old platform's name for a condition: its own label where it had one, else the
/// condition name in words.
fn legacy_label(condition: &str) -> String {
    match condition {
        "gas_lock" => "Free Gas Lock".into(),
        "anomaly" => "Anomaly".into(),
        other => other
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn evidence_line(e: &serde_json::Value) -> String {
    let feature = e["feature"].as_str().unwrap_or("?");
    let relation = e["relation"].as_str().unwrap_or("vs");
    let threshold = &e["threshold"];
    match e["value"].as_f64() {
        Some(v) => format!("{feature} {v} {relation} {threshold}"),
        None => format!("{feature} unavailable ({relation} {threshold})"),
    }
}
