//! `GET /metrics`: the service's operational metrics in the Prometheus text format, for
//! identities with `metrics:read` (admins, and API keys of the `monitoring` role). What is
//! measured and how is `crate::metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

/// Operational metrics (Prometheus text exposition format 0.0.4): ingest outcomes by path
/// and reason, request latency by route template and status, commit groups, checkpoints,
/// queue depths, store size, diagnostics lag, open alarms, authentication failures,
/// rate limiting, database pool use, process figures.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Every metric, Prometheus text format",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = crate::metrics::render(&state).await;
    (
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}
