//! Telemetry ingestion and queries.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use espwatch_core::access::WellScope;
use espwatch_core::duration::{format_duration_micros, parse_duration_micros};
use espwatch_core::ingest::{CsvDialect, DecodeOptions, PayloadFormat};
use espwatch_core::localtime::UtcOffset;
use espwatch_core::{Agg, Field, Series, TelemetryQuery, TimeRange, Timestamp, WellId};
use espwatch_store::AppendOptions;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiQuery, WellIdPath, media_type, parse_time_param, read_body};
use crate::state::AppState;
use espwatch_app::ingest::{IngestError, IngestReport, ingest_payload_collect};
use espwatch_app::metrics::IngestPath;
use espwatch_app::quality::QualityError;

/// Ingests telemetry: one reading (JSON object), a JSON array, NDJSON or CSV.
///
/// Valid readings are stored even when others in the same payload are rejected. The response
/// is sent only after the accepted readings are durably committed. Re-sending a reading is
/// harmless: it is counted in `duplicates`.
#[utoipa::path(post, path = "/api/v1/telemetry", tag = "telemetry",
    params(IngestParams),
    request_body(
        description = "Canonical reading(s). JSON: an object or an array of objects with `well_id`, `ts` (RFC 3339) and any of the measurement fields (e.g. `motor_current_a`). NDJSON: one object per line. CSV: a header row of canonical names, empty cell = missing.",
        content(
            (serde_json::Value = "application/json", example = json!({"well_id": "WELL-001", "ts": "2026-11-22T08:00:00Z", "frequency_hz": 55.0, "motor_current_a": 42.1, "intake_pressure_psi": 850.0})),
            (String = "application/x-ndjson"),
            (String = "text/csv", example = "well_id,ts,frequency_hz,motor_current_a\nWELL-001,2026-11-22T08:00:00Z,55,42.1\n")
        )
    ),
    responses(
        (status = 200, description = "Something was accepted, or everything was a duplicate", body = IngestReport),
        (status = 400, description = "The body cannot be parsed; details give line and column", body = crate::error::ErrorEnvelope),
        (status = 413, description = "Body over the configured limit", body = crate::error::ErrorEnvelope),
        (status = 415, description = "Content-Type not one of the supported ones", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Every reading was rejected; the report and an error envelope", body = IngestReport),
        (status = 503, description = "Overloaded (type `overloaded`, retry after `Retry-After` seconds) or store unavailable; nothing was stored", body = crate::error::ErrorEnvelope)
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<IngestParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let report = ingest_body(&state, &principal, &params, &headers, body).await?;
    let total = report.total();
    if report.rejected.len() == total {
        // Every reading was refused: 422 with the full report plus the error envelope.
        let (status, envelope) = ApiError::unprocessable(
            "all_readings_rejected",
            format!("all {total} readings were rejected; see `rejected` for the reasons"),
        )
        .into_envelope();
        let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
        body["error"] = serde_json::to_value(envelope.error).map_err(ApiError::internal)?;
        return Ok((status, Json(body)).into_response());
    }
    Ok((StatusCode::OK, Json(report)).into_response())
}

/// Query parameters of telemetry ingestion.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IngestParams {
    /// The zone of timestamps sent without one (historian exports write
    /// `2026-11-22 08:01:00`), as a UTC offset: `%2B03:00` (`+` escaped), `-05:30`, `UTC`;
    /// it wins over the wells' registry zones. Without it such timestamps are read in their
    /// well's registry `timezone`, and rejected for a well without one (never guessed).
    /// Timestamps with an offset or `Z` keep theirs. Named zones with daylight saving are
    /// refused (their skipped and repeated hours make local times ambiguous): convert to an
    /// offset first.
    timezone: Option<String>,
    /// CSV cell separator: `comma` (default), `semicolon`, `tab` or `pipe` (`,` `;` `|` as
    /// such work too, escaped as a query needs).
    csv_separator: Option<String>,
    /// Decimal mark of CSV numbers: `point` (default) or `comma` (`42,5`; with the comma
    /// separator such cells must be quoted).
    decimal: Option<String>,
}

/// The old platform's ingest answer: `status` first, then espwatch's report.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyIngestResponse {
    /// `success` when something was stored or everything was a duplicate.
    status: &'static str,
    /// The well of the readings when they all name one well, else null.
    well_id: Option<String>,
    #[serde(flatten)]
    report: IngestReport,
}

/// The old platform's ingest route, an alias of `POST /api/v1/telemetry` kept for its SCADA
/// clients: same body formats, limits, permission (`telemetry:write`) and rate limit, audited
/// under this route. Answers in the old shape: `{"status":"success","well_id":...}` plus the
/// report; when every reading is refused, 422 with the report and `error`.
#[utoipa::path(post, path = "/telemetry/ingest", tag = "legacy",
    params(IngestParams),
    request_body(
        description = "As `POST /api/v1/telemetry`; the old payload (`device_id`/`well_id`, `timestamp`, `pip`, `motor_current`, `motor_temp`, `vsd_frequency`, `flow_rate`, `gor`, ...) is accepted as is. Without a timestamp a reading is stamped with the receive time.",
        content(
            (serde_json::Value = "application/json", example = json!({"well_id": "TEST-001", "flow_rate": 1500.0, "pip": 850.0, "motor_current": 45.0, "motor_temp": 85.0, "vibration": 0.8, "vsd_frequency": 55.0})),
            (String = "application/x-ndjson"),
            (String = "text/csv")
        )
    ),
    responses(
        (status = 200, description = "Something was accepted, or everything was a duplicate", body = LegacyIngestResponse),
        (status = 400, description = "The body cannot be parsed", body = crate::error::ErrorEnvelope),
        (status = 413, description = "Body over the configured limit", body = crate::error::ErrorEnvelope),
        (status = 415, description = "Content-Type not one of the supported ones", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Every reading was rejected: the report with `status: \"error\"` and `error`", body = LegacyIngestResponse),
        (status = 503, description = "Overloaded or store unavailable; nothing was stored", body = crate::error::ErrorEnvelope)
    ))]
pub async fn legacy_ingest(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<IngestParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let report = ingest_body(&state, &principal, &params, &headers, body).await?;
    let well_id = report_wells(&report);
    let total = report.total();
    if report.rejected.len() == total {
        let (status, envelope) = ApiError::unprocessable(
            "all_readings_rejected",
            format!("all {total} readings were rejected; see `rejected` for the reasons"),
        )
        .into_envelope();
        let mut body = serde_json::to_value(LegacyIngestResponse {
            status: "error",
            well_id,
            report,
        })
        .map_err(ApiError::internal)?;
        body["error"] = serde_json::to_value(envelope.error).map_err(ApiError::internal)?;
        return Ok((status, Json(body)).into_response());
    }
    Ok((
        StatusCode::OK,
        Json(LegacyIngestResponse {
            status: "success",
            well_id,
            report,
        }),
    )
        .into_response())
}

/// The one well a report's readings name, if they name exactly one.
fn report_wells(report: &IngestReport) -> Option<String> {
    let mut wells = report
        .wells
        .iter()
        .map(WellId::as_str)
        .chain(report.rejected.iter().filter_map(|r| r.well_id.as_deref()));
    let first = wells.next()?;
    wells.all(|w| w == first).then(|| first.to_owned())
}

/// Decodes, checks and stores a telemetry body; publishes what was committed. Shared by the
/// canonical route and its legacy alias. An empty payload is 400 here.
async fn ingest_body(
    state: &AppState,
    principal: &Principal,
    params: &IngestParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestReport, ApiError> {
    let invalid = |name: &'static str, e: String| {
        ApiError::bad_request("invalid_query", format!("`{name}`: {e}"))
            .with_details(serde_json::json!({ "parameter": name }))
    };
    let csv = CsvDialect {
        separator: match params.csv_separator.as_deref() {
            None => b',',
            Some(s) => CsvDialect::parse_separator(s).map_err(|e| invalid("csv_separator", e))?,
        },
        decimal_comma: match params.decimal.as_deref() {
            None => false,
            Some(d) => CsvDialect::parse_decimal(d).map_err(|e| invalid("decimal", e))?,
        },
    };
    let zone = match params.timezone.as_deref() {
        None => None,
        Some(text) => Some(UtcOffset::parse(text).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("`timezone`: {e}"))
                .with_details(serde_json::json!({ "parameter": "timezone" }))
        })?),
    };
    let format = match media_type(headers)?.as_deref() {
        Some("application/json") => PayloadFormat::Json,
        Some(
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/json-seq",
        ) => PayloadFormat::Ndjson,
        Some("text/csv") => PayloadFormat::Csv,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {} is not supported; send application/json, application/x-ndjson or text/csv",
                    other.unwrap_or("(none)")
                ),
            )
            .with_details(serde_json::json!({
                "supported": ["application/json", "application/x-ndjson", "text/csv"]
            })));
        }
    };
    // Admission before the body is read: its declared length, or the limit when unknown.
    let limit = state.config.body_limit_bytes as u64;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let overloaded = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is ingesting as much as it can; retry after the Retry-After delay",
        )
        .with_details(serde_json::json!({ "retry_after_secs": 1 }))
    };
    let _admission = state
        .ingest_gate
        .try_admit(declared.unwrap_or(limit).min(limit))
        .ok_or_else(overloaded)?;
    let bytes = read_body(headers, body, state.config.body_limit_bytes).await?;
    let decode = DecodeOptions {
        now: Timestamp::from_datetime(Utc::now()),
        max_future: state.config.max_future(),
        max_readings: MAX_READINGS_PER_REQUEST,
        well: None,
        zone,
        csv,
    };
    let append = AppendOptions {
        auto_register_wells: state.config.auto_register_wells,
    };
    let report = match ingest_payload_collect(
        state.store.as_ref(),
        format,
        bytes,
        decode,
        append,
        &principal.scope,
        state.ingest_gate.slots(),
    )
    .await
    {
        Ok((report, accepted)) => {
            // Committed: publish them live, and hand them to the diagnostics task (both
            // off this request's path: neither waits for a consumer).
            state.live.publish_readings(&accepted);
            state.diagnostics.submit(accepted);
            state.security.charge_readings(principal, report.total());
            espwatch_app::metrics::record_report(IngestPath::Http, &report);
            report
        }
        Err(IngestError::Decode(e)) => {
            espwatch_app::metrics::record_malformed(IngestPath::Http);
            return Err(ApiError::bad_request(
                "malformed_payload",
                format!("the payload cannot be parsed: {e}"),
            )
            .with_details(&e));
        }
        Err(IngestError::Store(espwatch_store::StoreError::Unavailable(why)))
            if why.starts_with(espwatch_store::spool::SPOOL_FULL) =>
        {
            return Err(ApiError::unavailable(
                "spool_full",
                "the database is unavailable and the local spool is full; retry after the Retry-After delay",
                why,
            ));
        }
        Err(IngestError::Busy) => {
            // No decoder free within `ingest_decode_wait_ms`: nothing was written.
            state.ingest_gate.note_refused();
            return Err(overloaded());
        }
        Err(IngestError::Store(e)) => return Err(e.into()),
        Err(e @ IngestError::Join(_)) => return Err(ApiError::internal(e)),
    };
    if report.total() == 0 {
        return Err(ApiError::bad_request(
            "empty_payload",
            "the payload contains no readings",
        ));
    }
    Ok(report)
}

/// Query parameters of the telemetry range query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TelemetryParams {
    /// Start of the range, RFC 3339, inclusive. Default: 24 h before `to`.
    from: Option<String>,
    /// End of the range, RFC 3339, exclusive. Default: now.
    to: Option<String>,
    /// Comma-separated channel names. Default: all channels.
    fields: Option<String>,
    /// Bucket width (`10s`, `1m`, `1h`, `1d`); without it raw points are returned.
    step: Option<String>,
    /// Aggregate per bucket: `avg` (default), `min`, `max`, `last`.
    agg: Option<String>,
    /// Raw queries above this many points are downsampled (default from configuration).
    max_points: Option<usize>,
}

/// Columnar telemetry of one well.
#[derive(Debug, Serialize, ToSchema)]
pub struct TelemetryResponse {
    well_id: String,
    from: String,
    to: String,
    /// Bucket width when aggregated, e.g. `1m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agg: Option<&'static str>,
    /// True when raw points were reduced to `max_points` (min/max preserving).
    downsampled: bool,
    /// Timestamps (bucket starts when aggregated), RFC 3339 UTC.
    ts: Vec<String>,
    /// One array per requested channel, aligned with `ts`; null = no value.
    #[schema(value_type = Object)]
    fields: BTreeMap<&'static str, Vec<Option<f64>>>,
}

/// Most readings one request may carry: bounds decoded memory, which grows ~100× faster than
/// the body for tiny readings.
const MAX_READINGS_PER_REQUEST: usize = 200_000;

/// Largest range a single query may span.
const MAX_QUERY_RANGE: Duration = Duration::from_secs(400 * 86_400);
/// The range of a query that names no `from`: the day before `to`.
const DEFAULT_QUERY_RANGE: Duration = Duration::from_secs(86_400);

/// 400 when a range is longer than [`MAX_QUERY_RANGE`].
fn check_query_span(from: Timestamp, to: Timestamp) -> Result<(), String> {
    if to.0 - from.0 > Timestamp::duration_micros(MAX_QUERY_RANGE) {
        return Err(format!(
            "a query may span at most {} days",
            MAX_QUERY_RANGE.as_secs() / 86_400
        ));
    }
    Ok(())
}
/// Most buckets an aggregated query may produce.
const MAX_BUCKETS: i64 = 1_000_000;

/// Telemetry of one well over a time range: raw or aggregated per step. JSON by default,
/// CSV with `Accept: text/csv`.
#[utoipa::path(get, path = "/api/v1/wells/{id}/telemetry", tag = "telemetry",
    params(("id" = String, Path, description = "Well id"), TelemetryParams),
    responses(
        (status = 200, description = "Columnar series", body = TelemetryResponse, content_type = "application/json"),
        (status = 400, description = "Invalid parameter", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown well", body = crate::error::ErrorEnvelope)
    ))]
pub async fn query(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<TelemetryParams>,
    WellIdPath(well_id): WellIdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = build_query(state.config.default_max_points, well_id, params)?;
    if state.store.get_well(&query.well_id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "well {} is not registered",
            query.well_id
        )));
    }
    let series = state.store.query(&query).await?;
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            series_to_csv(&series),
        )
            .into_response());
    }
    let fields = series
        .columns
        .into_iter()
        .map(|(f, values)| (f.name(), values))
        .collect();
    Ok(Json(TelemetryResponse {
        well_id: query.well_id.to_string(),
        from: query.range.from.to_rfc3339(),
        to: query.range.to.to_rfc3339(),
        step: query.step_micros.map(format_duration_micros),
        agg: query.step_micros.map(|_| query.agg.name()),
        downsampled: series.downsampled,
        ts: series.ts.iter().map(|t| t.to_rfc3339()).collect(),
        fields,
    })
    .into_response())
}

/// Query parameters of the fleet telemetry query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FleetTelemetryParams {
    /// Comma-separated well ids (at most 1000). Default: every well the caller may see.
    /// Wells the caller may not see, and wells without data in the range, are left out.
    wells: Option<String>,
    /// Start of the range, RFC 3339, inclusive. Default: 24 h before `to`.
    from: Option<String>,
    /// End of the range, RFC 3339, exclusive. Default: now.
    to: Option<String>,
    /// Comma-separated channel names. Default: all channels.
    fields: Option<String>,
    /// Bucket width (`1m`, `5m`, `1h`, ...), required: this query is always bucketed.
    step: String,
    /// Aggregate per bucket: `avg` (default), `min`, `max`, `last`.
    agg: Option<String>,
}

/// One well's buckets in the fleet query.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetWellSeries {
    well_id: String,
    /// Bucket starts, RFC 3339 UTC (buckets without readings are left out).
    ts: Vec<String>,
    /// One array per requested channel, aligned with `ts`; null = no value.
    #[schema(value_type = Object)]
    fields: BTreeMap<&'static str, Vec<Option<f64>>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FleetTelemetryResponse {
    from: String,
    to: String,
    step: String,
    agg: &'static str,
    /// Wells with data in the range, by id.
    wells: Vec<FleetWellSeries>,
}

/// Most wells one fleet query may name.
const MAX_FLEET_WELLS: usize = 1000;
/// Most buckets × wells one fleet query may produce.
const MAX_FLEET_BUCKETS: i64 = 2_000_000;

/// The same bucketed query for many wells in one request (the console's fleet sparklines):
/// every well the caller may see, or the ones named, over one range and step.
#[utoipa::path(get, path = "/api/v1/wells/telemetry", tag = "telemetry",
    params(FleetTelemetryParams),
    responses(
        (status = 200, description = "Bucketed series per well", body = FleetTelemetryResponse),
        (status = 400, description = "Invalid parameter", body = crate::error::ErrorEnvelope)
    ))]
pub async fn fleet_query(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<FleetTelemetryParams>,
) -> Result<Json<FleetTelemetryResponse>, ApiError> {
    let invalid = |param: &str, message: String| {
        ApiError::bad_request("invalid_query", message)
            .with_details(serde_json::json!({ "parameter": param }))
    };
    let requested = requested_wells(params.wells.as_deref())?;
    // The per-well query's checks (range, fields, step, agg), with a stand-in well.
    let one = build_query(
        state.config.default_max_points,
        WellId::parse("fleet").expect("a valid id"),
        TelemetryParams {
            from: params.from,
            to: params.to,
            fields: params.fields,
            step: Some(params.step),
            agg: params.agg,
            max_points: None,
        },
    )?;
    let step = one.step_micros.expect("step is required");
    // Only wells the caller may see: the named ones narrowed, or every visible registered
    // well; `everyone` (an empty list to the store) when nothing was named and the caller
    // sees every well.
    let (wells, everyone) = visible_wells(&state, &principal, requested, None).await?;
    let count = if everyone {
        state.store.list_wells().await?.len()
    } else {
        wells.len()
    };
    // Buckets of the range, rounded up (a step longer than the range is one bucket).
    let span = one.range.to.0 - one.range.from.0;
    let buckets = span / step + i64::from(span % step != 0);
    if buckets.saturating_mul(count as i64) > MAX_FLEET_BUCKETS {
        return Err(invalid(
            "step",
            format!(
                "{buckets} buckets × {count} wells is more than {MAX_FLEET_BUCKETS}: use a larger `step`, a shorter range or fewer wells"
            ),
        ));
    }
    let mut response = FleetTelemetryResponse {
        from: one.range.from.to_rfc3339(),
        to: one.range.to.to_rfc3339(),
        step: format_duration_micros(step),
        agg: one.agg.name(),
        wells: Vec::new(),
    };
    if wells.is_empty() && !everyone {
        return Ok(Json(response));
    }
    let query = espwatch_store::FleetQuery {
        wells,
        range: one.range,
        fields: one.fields.clone(),
        step_micros: step,
        agg: one.agg,
    };
    let answer = state.store.fleet_query(&query).await?;
    response.wells = answer
        .into_iter()
        .filter(|w| principal.may_see_well(w.well_id.as_str()))
        .map(|w| FleetWellSeries {
            well_id: w.well_id.to_string(),
            ts: w.series.ts.iter().map(|t| t.to_rfc3339()).collect(),
            fields: w
                .series
                .columns
                .into_iter()
                .map(|(f, values)| (f.name(), values))
                .collect(),
        })
        .collect();
    Ok(Json(response))
}

/// The `wells` parameter: comma-separated ids, each once, at most [`MAX_FLEET_WELLS`];
/// `None` when absent or empty.
fn requested_wells(list: Option<&str>) -> Result<Option<Vec<WellId>>, ApiError> {
    let invalid = |message: String| {
        ApiError::bad_request("invalid_query", message)
            .with_details(serde_json::json!({ "parameter": "wells" }))
    };
    let list = match list.map(str::trim) {
        None | Some("") => return Ok(None),
        Some(list) => list,
    };
    let mut ids = Vec::new();
    for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = WellId::parse(id).map_err(|e| invalid(format!("{id:?}: {e}")))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_FLEET_WELLS {
        return Err(invalid(format!(
            "at most {MAX_FLEET_WELLS} wells per query"
        )));
    }
    Ok(Some(ids))
}

/// The wells a fleet read covers: the named ones (or every registered well) narrowed to the
/// caller's scope and, with `field`, to that oil field's wells. `everyone` (an empty list to
/// the store) when nothing narrows it: no names, no field, and the caller sees every well.
async fn visible_wells(
    state: &AppState,
    principal: &Principal,
    requested: Option<Vec<WellId>>,
    field: Option<&str>,
) -> Result<(Vec<WellId>, bool), ApiError> {
    let everyone =
        requested.is_none() && field.is_none() && matches!(principal.scope, WellScope::All);
    if everyone {
        return Ok((Vec::new(), true));
    }
    let in_field: Option<std::collections::HashSet<WellId>> = match field {
        None => None,
        Some(field) => Some(
            state
                .store
                .list_wells()
                .await?
                .into_iter()
                .filter(|w| w.meta.field.as_deref() == Some(field))
                .map(|w| w.meta.well_id)
                .collect(),
        ),
    };
    let candidates: Vec<WellId> = match (requested, &in_field) {
        (Some(ids), _) => ids,
        (None, Some(set)) => {
            let mut ids: Vec<WellId> = set.iter().cloned().collect();
            ids.sort();
            ids
        }
        (None, None) => state
            .store
            .list_wells()
            .await?
            .into_iter()
            .map(|w| w.meta.well_id)
            .collect(),
    };
    let wells = candidates
        .into_iter()
        .filter(|id| principal.may_see_well(id.as_str()))
        .filter(|id| in_field.as_ref().is_none_or(|set| set.contains(id)))
        .collect();
    Ok((wells, false))
}

/// Query parameters of the fleet aggregate.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FleetAggregateParams {
    /// Comma-separated well ids (at most 1000). Default: every well the caller may see.
    /// Wells the caller may not see are left out.
    wells: Option<String>,
    /// Only the wells of this oil field (the wells' `field`), among those named or visible.
    field: Option<String>,
    /// Start of the range, RFC 3339, inclusive. Default: 24 h before `to`.
    from: Option<String>,
    /// End of the range, RFC 3339, exclusive. Default: now.
    to: Option<String>,
    /// Comma-separated channel names. Default: all channels.
    fields: Option<String>,
    /// Bucket width (`1m`, `5m`, `1h`, ...), required. Whole hours are answered from the
    /// rollups.
    step: String,
    /// Aggregate per bucket over every reading of every well: `avg` (default; each reading
    /// weighs alike), `min`, `max`, `last` (the latest reading).
    agg: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FleetAggregateResponse {
    from: String,
    to: String,
    step: String,
    agg: &'static str,
    /// Wells the aggregate covers (those asked for and visible; without data they add nothing).
    wells: usize,
    /// Bucket starts, RFC 3339 UTC (buckets without readings are left out).
    ts: Vec<String>,
    /// One array per requested channel, aligned with `ts`; null = no value.
    #[schema(value_type = Object)]
    fields: BTreeMap<&'static str, Vec<Option<f64>>>,
}

/// One series for the whole fleet ("the average intake pressure of every well per hour"):
/// per bucket, the aggregate of every reading of the wells the caller may see (or those named,
/// or one oil field's), as if they were one well's readings.
#[utoipa::path(get, path = "/api/v1/fleet/aggregate", tag = "telemetry",
    params(FleetAggregateParams),
    responses(
        (status = 200, description = "One bucketed series for the fleet", body = FleetAggregateResponse),
        (status = 400, description = "Invalid parameter", body = crate::error::ErrorEnvelope)
    ))]
pub async fn fleet_aggregate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<FleetAggregateParams>,
) -> Result<Json<FleetAggregateResponse>, ApiError> {
    let requested = requested_wells(params.wells.as_deref())?;
    let field = params
        .field
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    // The per-well query's checks (range, fields, step, agg), with a stand-in well.
    let one = build_query(
        state.config.default_max_points,
        WellId::parse("fleet").expect("a valid id"),
        TelemetryParams {
            from: params.from,
            to: params.to,
            fields: params.fields,
            step: Some(params.step),
            agg: params.agg,
            max_points: None,
        },
    )?;
    let step = one.step_micros.expect("step is required");
    let (wells, everyone) = visible_wells(&state, &principal, requested, field).await?;
    let mut response = FleetAggregateResponse {
        from: one.range.from.to_rfc3339(),
        to: one.range.to.to_rfc3339(),
        step: format_duration_micros(step),
        agg: one.agg.name(),
        wells: wells.len(),
        ts: Vec::new(),
        fields: one.fields.iter().map(|f| (f.name(), Vec::new())).collect(),
    };
    if wells.is_empty() && !everyone {
        return Ok(Json(response));
    }
    if everyone {
        response.wells = state.store.list_wells().await?.len();
    }
    let series = state
        .store
        .fleet_aggregate(&espwatch_store::FleetQuery {
            wells,
            range: one.range,
            fields: one.fields.clone(),
            step_micros: step,
            agg: one.agg,
        })
        .await?;
    response.ts = series.ts.iter().map(|t| t.to_rfc3339()).collect();
    response.fields = series
        .columns
        .into_iter()
        .map(|(f, values)| (f.name(), values))
        .collect();
    Ok(Json(response))
}

/// The query of `GET /api/v1/wells/{well_id}/telemetry?{uri's query}`, parsed as the route
/// parses it (its `ApiQuery`, then [`build_query`]), or its 400. For the fuzzers.
pub(crate) fn telemetry_query_of(
    uri: &axum::http::Uri,
    well_id: WellId,
    default_max_points: usize,
) -> Result<TelemetryQuery, ApiError> {
    let axum::extract::Query(params) =
        axum::extract::Query::<TelemetryParams>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    build_query(default_max_points, well_id, params)
}

fn build_query(
    default_max_points: usize,
    well_id: WellId,
    p: TelemetryParams,
) -> Result<TelemetryQuery, ApiError> {
    let invalid = |param: &str, message: String| {
        ApiError::bad_request("invalid_query", message)
            .with_details(serde_json::json!({ "parameter": param }))
    };
    let to = match &p.to {
        Some(t) => parse_time_param("to", t)?,
        None => Timestamp::from_datetime(Utc::now()),
    };
    let from = match &p.from {
        Some(t) => parse_time_param("from", t)?,
        None => to.saturating_sub(DEFAULT_QUERY_RANGE),
    };
    if from >= to {
        return Err(invalid("from", "`from` must be before `to`".into()));
    }
    check_query_span(from, to).map_err(|e| invalid("from", e))?;
    let fields = match p.fields.as_deref().map(str::trim) {
        None | Some("") => Field::ALL.to_vec(),
        Some(list) => {
            let mut fields = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let f = Field::from_name(name).ok_or_else(|| {
                    invalid(
                        "fields",
                        format!(
                            "unknown field {name:?}; known fields: {}",
                            Field::ALL.map(Field::name).join(", ")
                        ),
                    )
                })?;
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
            // A list naming nothing (`fields=,`) means every field, as `fields=` does; the
            // store is never asked for no field at all (found by the `telemetry_query` fuzz
            // target, reproducer in `fuzz/artifacts/telemetry_query/`).
            if fields.is_empty() {
                Field::ALL.to_vec()
            } else {
                fields
            }
        }
    };
    let step_micros = match p.step.as_deref() {
        None => None,
        Some(s) => {
            let step = parse_duration_micros(s).map_err(|e| invalid("step", e))?;
            if step < 1_000_000 {
                return Err(invalid("step", "`step` must be at least 1s".into()));
            }
            if (to.0 - from.0) / step > MAX_BUCKETS {
                return Err(invalid(
                    "step",
                    format!("`step` is too small for this range (more than {MAX_BUCKETS} buckets)"),
                ));
            }
            Some(step)
        }
    };
    let agg = match p.agg.as_deref() {
        None => Agg::Avg,
        Some(a) => Agg::parse(a).ok_or_else(|| {
            invalid(
                "agg",
                format!("unknown agg {a:?}; use avg, min, max or last"),
            )
        })?,
    };
    let max_points = p.max_points.unwrap_or(default_max_points);
    if !(2..=1_000_000).contains(&max_points) {
        return Err(invalid(
            "max_points",
            "`max_points` must be between 2 and 1000000".into(),
        ));
    }
    Ok(TelemetryQuery {
        well_id,
        range: TimeRange { from, to },
        fields,
        step_micros,
        agg,
        max_points,
    })
}

fn series_to_csv(series: &Series) -> String {
    let mut out = String::with_capacity(64 + series.ts.len() * (24 + series.columns.len() * 10));
    out.push_str("ts");
    for (f, _) in &series.columns {
        out.push(',');
        out.push_str(f.name());
    }
    out.push('\n');
    for (i, ts) in series.ts.iter().enumerate() {
        out.push_str(&ts.to_rfc3339());
        for (_, values) in &series.columns {
            out.push(',');
            if let Some(v) = values[i] {
                out.push_str(&v.to_string());
            }
        }
        out.push('\n');
    }
    out
}

/// One well in the fleet overview.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestEntry {
    well_id: String,
    /// Time of the newest reading; null for a registered well that never reported.
    ts: Option<String>,
    /// Seconds since that reading (negative if it is stamped in the future).
    age_s: Option<f64>,
    /// The newest reading's channels (missing channels are omitted).
    #[schema(value_type = Object)]
    values: BTreeMap<&'static str, f64>,
    /// Whether the well's device is connected, as its field protocol last said (Sparkplug B:
    /// online from its DBIRTH, offline from its DDEATH or its edge node's NDEATH). Absent when
    /// nothing has said so since the server started (wells fed over HTTP or plain MQTT).
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
    /// When `online` last changed (received by the server); absent with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    online_changed_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatestResponse {
    /// Server time the ages are measured from.
    as_of: String,
    wells: Vec<LatestEntry>,
}

/// Fleet overview: the newest reading of every well with its age, and whether its device is
/// online where a field protocol says so (Sparkplug B births and deaths; kept in memory, so
/// unknown after a restart until the next birth or death).
#[utoipa::path(get, path = "/api/v1/wells/latest", tag = "telemetry",
    responses((status = 200, description = "Newest reading per well, sorted by well id", body = LatestResponse)))]
pub async fn latest(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<LatestResponse>, ApiError> {
    let now = Timestamp::from_datetime(Utc::now());
    let (latest, wells) = tokio::try_join!(state.store.latest(), state.store.list_wells())?;
    let presence = state.live.presences();
    let mut entries: BTreeMap<String, LatestEntry> = wells
        .into_iter()
        .map(|w| {
            let id = w.meta.well_id.as_str().to_owned();
            (
                id.clone(),
                LatestEntry {
                    well_id: id,
                    ts: None,
                    age_s: None,
                    values: BTreeMap::new(),
                    online: None,
                    online_changed_at: None,
                },
            )
        })
        .collect();
    entries.retain(|id, _| principal.may_see_well(id));
    for l in latest {
        if !principal.may_see_well(l.well_id.as_str()) {
            continue;
        }
        let (ts, values) = l.point;
        entries.insert(
            l.well_id.to_string(),
            LatestEntry {
                well_id: l.well_id.to_string(),
                ts: Some(ts.to_rfc3339()),
                age_s: Some((now.0 - ts.0) as f64 / 1e6),
                values: values.iter().map(|(f, v)| (f.name(), v)).collect(),
                online: None,
                online_changed_at: None,
            },
        );
    }
    for (well, p) in presence {
        if let Some(entry) = entries.get_mut(well.as_str()) {
            entry.online = Some(p.online);
            entry.online_changed_at = Some(p.since.to_rfc3339());
        }
    }
    Ok(Json(LatestResponse {
        as_of: now.to_rfc3339(),
        wells: entries.into_values().collect(),
    }))
}

/// Query parameters of the data-quality report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QualityParams {
    /// Start of the range, RFC 3339, inclusive. Default: 24 h before `to`.
    from: Option<String>,
    /// End of the range, RFC 3339, exclusive (or `now`). Default: now.
    to: Option<String>,
    /// Window width (`10m`, `1h`, `1d`). Default: `1h`. At most 10 000 windows.
    window: Option<String>,
}

/// The data-quality report of one well.
#[derive(Debug, Serialize, ToSchema)]
pub struct QualityResponse {
    well_id: String,
    /// Window width, e.g. `1h`.
    window: String,
    /// The score a window should reach (the old platform's target, 95).
    target: f64,
    #[serde(flatten)]
    report: espwatch_core::quality::QualityReport,
}

/// Data quality of a well per window: completeness against its expected interval (the
/// registry's `sample_interval_s`, else the median spacing of its readings), values beyond
/// what its equipment can produce, stuck gauges and spikes; a score out of 100 per window and
/// over the range, and per channel whether the gauge can be trusted.
#[utoipa::path(get, path = "/api/v1/wells/{id}/quality", tag = "telemetry",
    params(("id" = String, Path, description = "Well id"), QualityParams),
    responses(
        (status = 200, description = "Quality per window and over the range", body = QualityResponse),
        (status = 400, description = "Invalid parameter", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown well", body = crate::error::ErrorEnvelope)
    ))]
pub async fn quality(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<QualityParams>,
    WellIdPath(well_id): WellIdPath,
) -> Result<Json<QualityResponse>, ApiError> {
    let invalid = |param: &str, message: String| {
        ApiError::bad_request("invalid_query", message)
            .with_details(serde_json::json!({ "parameter": param }))
    };
    let to = match &params.to {
        Some(t) => parse_time_param("to", t)?,
        None => Timestamp::from_datetime(Utc::now()),
    };
    let from = match &params.from {
        Some(t) => parse_time_param("from", t)?,
        None => to.saturating_sub(DEFAULT_QUERY_RANGE),
    };
    if from >= to {
        return Err(invalid("from", "`from` must be before `to`".into()));
    }
    check_query_span(from, to).map_err(|e| invalid("from", e))?;
    let window = match params.window.as_deref() {
        None => 3_600_000_000,
        Some(w) => parse_duration_micros(w).map_err(|e| invalid("window", e))?,
    };
    if window < 1_000_000 {
        return Err(invalid("window", "`window` must be at least 1s".into()));
    }
    let range = TimeRange { from, to };
    match espwatch_app::quality::assess_well(state.store.as_ref(), &well_id, range, window).await {
        Ok(report) => Ok(Json(QualityResponse {
            well_id: well_id.to_string(),
            window: format_duration_micros(window),
            target: espwatch_core::quality::QUALITY_TARGET,
            report,
        })),
        Err(QualityError::UnknownWell(w)) => {
            Err(ApiError::not_found(format!("well {w} is not registered")))
        }
        Err(e @ QualityError::TooManyWindows) => Err(invalid("window", e.to_string())),
        Err(QualityError::Store(e)) => Err(e.into()),
        Err(e @ QualityError::Join(_)) => Err(ApiError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17, found by the `telemetry_query` fuzz target: `fields=,` named no field and
    /// the route handed the store a query for no field at all; a list naming nothing means
    /// every field, as an empty one always did.
    #[test]
    fn a_fields_list_naming_nothing_means_every_field() {
        for query in [
            "fields=",
            "fields=,",
            "fields=,,",
            "fields=%20,%20",
            "fields=,##,",
        ] {
            let uri: axum::http::Uri = format!("/q?{query}").parse().unwrap();
            let parsed = telemetry_query_of(&uri, WellId::parse("W-1").unwrap(), 10_000).unwrap();
            assert_eq!(parsed.fields, Field::ALL.to_vec(), "{query}");
        }
        let uri: axum::http::Uri = "/q?fields=,motor_current_a,".parse().unwrap();
        let parsed = telemetry_query_of(&uri, WellId::parse("W-1").unwrap(), 10_000).unwrap();
        assert_eq!(parsed.fields, vec![Field::MotorCurrentA]);
    }
}
