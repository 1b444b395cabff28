//! Probes for orchestrators and load balancers.
//!
//! - `/health/live`: the process answers (never touches the store).
//! - `/health/startup`: recovery is done (the listener only opens after the store is open, so
//!   answering at all means started).
//! - `/health/ready`: the store can be read and written and the identity store read right now;
//!   503 with per-dependency detail otherwise, and during shutdown. While the PostgreSQL store
//!   is down and the outage spool takes telemetry: 200 `degraded`, `checks.spool` says how much
//!   is spooled, how old the oldest is, and whether it is draining.
//! - `/health`: the old platform's endpoint, kept for its monitors.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use espwatch_store::StoreHealth;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorLog;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct SimpleStatus {
    /// `alive`, `live` or `started`.
    status: &'static str,
    /// Server time, RFC 3339 UTC.
    timestamp: String,
    version: &'static str,
    uptime_s: f64,
}

fn simple(state: &AppState, status: &'static str) -> Json<SimpleStatus> {
    Json(SimpleStatus {
        status,
        timestamp: Utc::now().to_rfc3339(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started_at.elapsed().as_secs_f64(),
    })
}

/// Legacy liveness check of the old platform.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The process is alive", body = SimpleStatus)))]
pub async fn legacy(State(state): State<AppState>) -> Json<SimpleStatus> {
    simple(&state, "alive")
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Live", body = SimpleStatus)))]
pub async fn live(State(state): State<AppState>) -> Json<SimpleStatus> {
    simple(&state, "live")
}

/// Startup: the store is open and recovered.
#[utoipa::path(get, path = "/health/startup", tag = "health",
    responses((status = 200, description = "Started", body = SimpleStatus)))]
pub async fn startup(State(state): State<AppState>) -> Json<SimpleStatus> {
    simple(&state, "started")
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (200: the database is down and the outage spool takes telemetry)
    /// or `not_ready`.
    status: &'static str,
    timestamp: String,
    /// Per dependency: status (`healthy`/`unhealthy`), latency and detail.
    #[schema(value_type = Object)]
    checks: serde_json::Value,
}

/// Readiness: the store answers a read and commits a write.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready to take traffic", body = Readiness),
        (status = 503, description = "Not ready; `checks` says which dependency failed", body = Readiness)
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let shutting_down = state.shutting_down.load(Ordering::SeqCst);
    let health: StoreHealth = state.store.health().await;
    let store_ok = health.read.ok && health.write.ok;
    // Every authenticated request reads the identity store: probe it with a lookup of a key
    // id that cannot exist (ids are hex).
    let started = std::time::Instant::now();
    let identity = state.security.store.get_api_key("readiness-probe").await;
    let identity_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let identity_ok = identity.is_ok();
    // Why the identity store failed goes into this request's own log line (the store does
    // not log it): at ERROR when the probe answers 503, once per burst (`repeats.rs`).
    let identity_error = identity.err().map(|e| ErrorLog {
        id: uuid::Uuid::now_v7().to_string(),
        kind: "identity_store_unavailable",
        cause: Some(format!("identity store probe failed: {e}")),
    });
    // The outage spool (PostgreSQL): while it takes the telemetry the database cannot, the
    // server stays in rotation (`degraded`): taking it out would lose what the spool is for.
    let spool = state.store.spool_status();
    let spool_takes = spool.as_ref().is_some_and(|s| s.spooling && !s.full);
    let ok = ((store_ok && identity_ok) || spool_takes) && !shutting_down;
    let degraded = ok && !(store_ok && identity_ok);
    let mut checks = serde_json::json!({
        "store": {
            "status": if store_ok { "healthy" } else { "unhealthy" },
            "backend": health.backend,
            "latency_ms": health.read.latency_ms.max(health.write.latency_ms),
            "read": health.read,
            "write": health.write,
        }
    });
    checks["identity_store"] = serde_json::json!({
        "status": if identity_ok { "healthy" } else { "unhealthy" },
        "latency_ms": identity_latency_ms,
        // Details stay in the server log (logged at ERROR with the error id of each request).
        "detail": if identity_ok { None } else { Some("the identity store cannot be read; see the server log") },
        // Requests answered 503 since start because credentials could not be checked.
        "auth_unavailable_total": state.security.store_failures(),
        // Telemetry requests let in on a credential verified before the store went down.
        "auth_outage_grants_total": state.security.outage_grants(),
    });
    if let Some(spool) = spool {
        let mut check = serde_json::json!(spool);
        check["status"] = if !spool.spooling && spool.readings == 0 {
            "healthy"
        } else if spool.full {
            "full"
        } else {
            "degraded"
        }
        .into();
        checks["spool"] = check;
    }
    // Diagnostics falling behind never takes the server out of rotation (ingestion goes on
    // and skipped wells are rebuilt from storage); its queue and lag are reported here.
    checks["diagnostics"] = serde_json::json!(state.diagnostics.status());
    // Shedding ingest load is the server working as intended, not a reason to leave rotation.
    checks["ingest"] = serde_json::json!(state.ingest_gate.status());
    // Live streams: open connections and what slow subscribers lost (never a readiness issue).
    let mut stream = serde_json::json!(state.live.status());
    stream["status"] = "healthy".into();
    checks["stream"] = stream;
    // Notifications: delivered, failed attempts and dead letters since start; dead ones make it
    // `degraded` (someone was not told), never not ready.
    if let Some(notifier) = &state.notifier {
        let status = notifier.status();
        let mut notify = serde_json::json!(status);
        notify["status"] = if status.dead > 0 {
            "degraded"
        } else {
            "healthy"
        }
        .into();
        checks["notifications"] = notify;
    }
    // Lost audit records do not take the server out of rotation (surveillance must go on),
    // but they are reported here for monitoring to alert on.
    let audit_failures = state.security.audit.failures();
    let audit_held = state.security.audit.held();
    checks["audit"] = serde_json::json!({
        "status": if audit_failures == 0 && audit_held == 0 { "healthy" } else { "degraded" },
        "write_failures": audit_failures,
        "held": audit_held,
    });
    // Field ingest (MQTT, ...): reported, never a reason to leave rotation.
    for (name, status) in state.components.statuses() {
        checks[name] = status;
    }
    if shutting_down {
        checks["server"] = serde_json::json!({"status": "unhealthy", "detail": "shutting down"});
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (
        status,
        Json(Readiness {
            status: if degraded {
                "degraded"
            } else if ok {
                "ready"
            } else {
                "not_ready"
            },
            timestamp: Utc::now().to_rfc3339(),
            checks,
        }),
    )
        .into_response();
    // A store that fails its probes while the server leaves rotation: why goes into this
    // request's own line too (the store's probes hand their errors back unlogged).
    let store_error = (!store_ok && !ok).then(|| {
        let why = [("read", &health.read), ("write", &health.write)]
            .iter()
            .filter(|(_, p)| !p.ok)
            .map(|(what, p)| format!("{what}: {}", p.detail.as_deref().unwrap_or("failed")))
            .collect::<Vec<_>>()
            .join("; ");
        ErrorLog {
            id: uuid::Uuid::now_v7().to_string(),
            kind: "store_unavailable",
            cause: Some(format!("store probe failed: {why}")),
        }
    });
    let error = match (store_error, identity_error) {
        (Some(mut store), Some(identity)) => {
            store.cause = Some(format!(
                "{}; {}",
                store.cause.unwrap_or_default(),
                identity.cause.unwrap_or_default()
            ));
            Some(store)
        }
        (store, identity) => store.or(identity),
    };
    if let Some(error) = error {
        response.extensions_mut().insert(error);
    }
    response
}
