//! Application state, the router (every route registered once, here, with its OpenAPI entry),
//! the cross-cutting middleware, and `serve`, which runs until a shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use espwatch_store::{AlarmStore, Store};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::diagnostics::DiagnosticsHub;
use crate::error::ApiError;
use crate::routes::{alarms, diagnostics, health, telemetry, wells};

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Set when shutdown starts, so readiness turns 503 while in-flight requests finish.
    pub shutting_down: Arc<AtomicBool>,
    pub started_at: Instant,
    /// Online diagnostics: every accepted reading advances its well's engine.
    pub diagnostics: Arc<DiagnosticsHub>,
    /// Alarm persistence; `None` when the backend has none (alarm routes answer 503).
    pub alarms: Option<Arc<dyn AlarmStore>>,
}

impl AppState {
    /// Needs a Tokio runtime (the diagnostics task is spawned here).
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        AppState {
            diagnostics: DiagnosticsHub::start(store.clone(), None),
            store,
            config: Arc::new(config),
            shutting_down: Arc::new(AtomicBool::new(false)),
            started_at: Instant::now(),
            alarms: None,
        }
    }

    /// Persists alarms raised by the online diagnostics in `alarms`.
    pub fn with_alarms(mut self, alarms: Arc<dyn AlarmStore>) -> Self {
        self.diagnostics = DiagnosticsHub::start(self.store.clone(), Some(alarms.clone()));
        self.alarms = Some(alarms);
        self
    }

    /// [`AppState::with_alarms`] when the backend keeps alarms.
    pub fn with_optional_alarms(self, alarms: Option<Arc<dyn AlarmStore>>) -> Self {
        match alarms {
            Some(a) => self.with_alarms(a),
            None => self,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "espwatch API",
        description = "Telemetry ingestion, storage and queries for electrical submersible pumps (ESPs).\n\nAll timestamps are RFC 3339; responses are UTC. Units are part of every field name. Errors share one envelope: `{\"error\":{\"id\",\"type\",\"message\",\"details\"}}`.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "telemetry", description = "Ingest and query pump telemetry"),
        (name = "wells", description = "Wells registry: pump, motor and fluid metadata"),
        (name = "diagnostics", description = "Per-well diagnosis, episodes and the legacy decision tree"),
        (name = "alarms", description = "Alarms raised by the online diagnostics: list, acknowledge"),
        (name = "health", description = "Liveness, startup and readiness probes")
    )
)]
struct ApiDoc;

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Builds the router with its OpenAPI document. The document is generated from the handlers'
/// annotations, so a route cannot exist without being documented.
pub fn router(state: AppState) -> Router {
    let (api_routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(telemetry::ingest))
        .routes(routes!(telemetry::query))
        .routes(routes!(telemetry::latest))
        .routes(routes!(wells::list, wells::create))
        .routes(routes!(wells::get, wells::replace, wells::delete))
        .routes(routes!(alarms::list))
        .routes(routes!(alarms::acknowledge))
        .routes(routes!(diagnostics::diagnosis))
        .routes(routes!(diagnostics::retrain))
        .routes(routes!(diagnostics::events))
        .routes(routes!(diagnostics::decision_tree))
        .routes(routes!(health::legacy))
        .routes(routes!(health::live))
        .routes(routes!(health::startup))
        .routes(routes!(health::ready))
        .with_state(state.clone())
        .split_for_parts();

    let request_id = HeaderName::from_static("x-request-id");
    api_routes
        .merge(SwaggerUi::new("/docs").url(OPENAPI_PATH, openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state, log_and_time_out))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Runs the API on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// and closes the store (committing whatever was accepted).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let flag = state.shutting_down.clone();
    let store = state.store.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            flag.store(true, Ordering::SeqCst);
            tracing::info!("shutdown requested: finishing in-flight requests");
        })
        .await?;
    store.close().await?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// One log line per request (with its request id), and the request timeout, answered with the
/// error envelope rather than an empty body.
async fn log_and_time_out(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {}s", timeout.as_secs()),
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        target: "espwatch::request",
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        duration_ms = format_args!("{duration_ms:.2}"),
        "request"
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is described at /docs")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not support that method; see /docs",
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    let mut response = ApiError::internal(format!("handler panicked: {text}")).into_response();
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}
