//! The router (every route registered once, here, with its OpenAPI entry), the cross-cutting
//! middleware, and `serve`, which runs until a shutdown future resolves.

use crate::headers::{API_CSP, HSTS, SECURITY_HEADERS};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use espwatch_store::AuditEvent;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{self, AuditIdentity, SourceAddr};
use crate::error::{ApiError, ErrorLog};
use crate::routes::{
    alarms, ask, audit, auth as auth_routes, diagnostics, health, legacy, metrics, notifications,
    stream, telemetry, users, wells,
};
use crate::state::AppState;
use espwatch_app::config::Config;

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    info(
        title = "espwatch API",
        description = "Telemetry ingestion, storage and queries for electrical submersible pumps (ESPs).\n\nAll timestamps are RFC 3339; responses are UTC. Units are part of every field name. Errors share one envelope: `{\"error\":{\"id\",\"type\",\"message\",\"details\"}}`.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "telemetry", description = "Ingest and query pump telemetry"),
        (name = "wells", description = "Wells registry: pump, motor and fluid metadata"),
        (name = "diagnostics", description = "Per-well diagnosis, episodes, questions in plain words (`/ask`) and the legacy decision tree"),
        (name = "alarms", description = "Alarms raised by the online diagnostics: list, acknowledge"),
        (name = "live", description = "Live events over WebSocket: readings, alarm changes, well state"),
        (name = "auth", description = "Sign in, refresh, sign out, who am I, password change"),
        (name = "admin", description = "Users, API keys and the audit trail"),
        (name = "notifications", description = "Alarm notifications (admin): signed webhooks and e-mail, routing rules, the delivery log"),
        (name = "health", description = "Liveness, startup and readiness probes; operational metrics for Prometheus"),
        (name = "legacy", description = "The old platform's routes, kept as aliases of the canonical ones for its clients: `POST /telemetry/ingest`, `GET /api/v1/telemetry?device_id=`, `GET /api/v1/diagnostics/{device_id}`; same permissions, answers in the old shapes")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from /api/v1/auth/login, or an API key",
                    ))
                    .build(),
            ),
        );
    }
}

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Builds the router with its OpenAPI document. The document is generated from the handlers'
/// annotations, so a route cannot exist without being documented.
pub fn router(state: AppState) -> Router {
    let (api_routes, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(telemetry::ingest))
        .routes(routes!(telemetry::query))
        .routes(routes!(telemetry::quality))
        .routes(routes!(telemetry::legacy_ingest))
        .routes(routes!(legacy::telemetry))
        .routes(routes!(legacy::diagnostics))
        .routes(routes!(telemetry::latest))
        .routes(routes!(telemetry::fleet_query))
        .routes(routes!(telemetry::fleet_aggregate))
        .routes(routes!(wells::list, wells::create))
        .routes(routes!(wells::get, wells::replace, wells::delete))
        .routes(routes!(alarms::list))
        .routes(routes!(alarms::acknowledge))
        .routes(routes!(stream::stream))
        .routes(routes!(diagnostics::diagnosis))
        .routes(routes!(diagnostics::retrain))
        .routes(routes!(diagnostics::transient))
        .routes(routes!(diagnostics::events))
        .routes(routes!(diagnostics::decision_tree))
        .routes(routes!(ask::ask))
        .routes(routes!(audit::list))
        .routes(routes!(auth_routes::login))
        .routes(routes!(auth_routes::refresh))
        .routes(routes!(auth_routes::console_login))
        .routes(routes!(auth_routes::console_refresh))
        .routes(routes!(auth_routes::logout))
        .routes(routes!(auth_routes::me))
        .routes(routes!(auth_routes::change_password))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::update_user, users::remove_user))
        .routes(routes!(users::list_keys, users::create_key))
        .routes(routes!(users::revoke_key))
        .routes(routes!(
            notifications::list_channels,
            notifications::create_channel
        ))
        .routes(routes!(notifications::delete_channel))
        .routes(routes!(notifications::test_channel))
        .routes(routes!(
            notifications::list_rules,
            notifications::create_rule
        ))
        .routes(routes!(notifications::delete_rule))
        .routes(routes!(notifications::list_deliveries))
        .routes(routes!(health::legacy))
        .routes(routes!(health::live))
        .routes(routes!(health::startup))
        .routes(routes!(health::ready))
        .routes(routes!(metrics::metrics))
        .with_state(state.clone())
        .split_for_parts();
    let openapi = crate::openapi_doc::finish(&openapi);

    let request_id = HeaderName::from_static("x-request-id");
    let cors = cors_layer(&state.config);
    // `serve` speaks TLS, and TLS only, exactly when both files are configured.
    let tls =
        ServesTls(state.config.tls_cert_file.is_some() && state.config.tls_key_file.is_some());
    let router = api_routes
        .merge(SwaggerUi::new("/docs").external_url_unchecked(OPENAPI_PATH, openapi))
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn_with_state(state, log_and_time_out))
        .layer(middleware::from_fn_with_state(tls, security_headers));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
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
    let live = state.live.clone();
    let notifier = state.notifier.clone();
    let store = state.store.clone();
    let audit = state.security.audit.clone();
    // The effective configuration (secrets left out) is recorded at every start, so a
    // configuration change shows in the audit trail as the difference between two starts.
    let mut start = lifecycle_event("server_start");
    start.detail["config"] = state.config.audit_view();
    audit.record(start);
    match state.security.store.list_users().await {
        Ok(users)
            if !users
                .iter()
                .any(|u| u.role == espwatch_core::access::Role::Admin && !u.disabled) =>
        {
            tracing::warn!(
                "no enabled admin exists: create one with `ESPWATCH_PASSWORD=... espwatch users add NAME --role admin` (or read the password from stdin)"
            );
        }
        Ok(_) => {}
        // The store does not log its errors (its callers do, once).
        Err(e) => tracing::error!(error = %e, "the identity store cannot list users"),
    }
    let limits = crate::connections::ConnectionLimits {
        header_timeout: Duration::from_secs(state.config.http_header_timeout_secs),
        per_source: state.config.max_connections_per_source,
    };
    let mut listener =
        crate::connections::LimitedListener::new(listener, limits, Some(audit.clone()));
    if let (Some(cert), Some(key)) = (&state.config.tls_cert_file, &state.config.tls_key_file) {
        listener = listener.with_tls(crate::tls::acceptor(cert, key)?);
    }
    let listener = listener.tap_io(|_| {});
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            flag.store(true, Ordering::SeqCst);
            // Streams are upgraded connections the graceful shutdown does not wait for.
            live.shut_down();
            tracing::info!("shutdown requested: finishing in-flight requests");
        })
        .await?;
    // Everything queued before this record is committed once it is.
    audit.flush_rejections();
    audit.record_committed(lifecycle_event("server_stop")).await;
    audit.anchor_now().await;
    // Deliveries being sent finish (or go back to the outbox when their lease ends).
    if let Some(notifier) = notifier {
        notifier.shut_down().await;
    }
    store.close().await?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// One log line per request (with its request id), and the request timeout, answered with the
/// error envelope rather than an empty body.
async fn log_and_time_out(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let _in_flight = crate::metrics::InFlight::start();
    let source = auth::source_address(&request, state.security.trust_forwarded_for);
    request.extensions_mut().insert(SourceAddr(source.clone()));
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
    let took = started.elapsed();
    crate::metrics::record_request(&method, &route, status, took);
    let duration_ms = took.as_secs_f64() * 1e3;
    let identity = response.extensions().get::<AuditIdentity>().cloned();
    let actor = identity.as_ref().map(|i| i.actor.as_str()).unwrap_or("-");
    // One line per request; an error is logged here and nowhere else (see `error.rs`).
    let error = response.extensions().get::<ErrorLog>();
    // Fields that are `None` are left out of the line.
    let error_id = error.map(|e| e.id.as_str());
    let error_kind = error.map(|e| e.kind);
    // A 503 repeating the one before it (spool full, overloaded, ...) is counted, not logged
    // at ERROR again: see `repeats.rs`.
    let repeated = status == 503
        && error.is_some_and(|e| {
            !state
                .repeats
                .note(e.kind, e.cause.as_deref().unwrap_or("-"))
        });
    if repeated && let Some(error) = error {
        tracing::info!(
            target: "espwatch::request",
            request_id = %request_id,
            method = %method,
            route = %route,
            status,
            actor,
            source = %source,
            duration_ms = format_args!("{duration_ms:.2}"),
            error_id,
            error_kind,
            cause = error.cause.as_deref().unwrap_or("-"),
            repeated = true,
            "request"
        );
    } else if status >= 500
        && let Some(error) = error
    {
        tracing::error!(
            target: "espwatch::request",
            request_id = %request_id,
            method = %method,
            route = %route,
            status,
            actor,
            source = %source,
            duration_ms = format_args!("{duration_ms:.2}"),
            error_id,
            error_kind,
            cause = error.cause.as_deref().unwrap_or("-"),
            "request"
        );
    } else {
        tracing::info!(
            target: "espwatch::request",
            request_id = %request_id,
            method = %method,
            route = %route,
            status,
            actor,
            source = %source,
            duration_ms = format_args!("{duration_ms:.2}"),
            error_id,
            error_kind,
            "request"
        );
    }
    // Why a request was refused (the error type; never the message or a cause) goes into its
    // record, so refusals such as `ambiguous_credentials` can be told apart in the trail.
    let refused = error
        .filter(|_| (400..500).contains(&status))
        .map(|e| e.kind);
    // Anonymous refusals are recorded once per source and minute, then counted.
    if identity.is_some()
        || !matches!(status, 401 | 429)
        || state
            .security
            .audit
            .note_rejection(&source, status, refused)
    {
        record_request(
            &state,
            request_id,
            &method,
            route,
            status,
            identity,
            source,
            duration_ms,
            refused,
        );
    }
    response
}

/// The audit record of one request.
#[allow(clippy::too_many_arguments)]
fn record_request(
    state: &AppState,
    request_id: String,
    method: &axum::http::Method,
    route: String,
    status: u16,
    identity: Option<AuditIdentity>,
    source: String,
    duration_ms: f64,
    refused: Option<&'static str>,
) {
    let detail = match refused {
        Some(kind) => serde_json::json!({ "refused": kind }),
        None => serde_json::json!({}),
    };
    state.security.audit.record(AuditEvent {
        ts: espwatch_core::Timestamp::from_datetime(chrono::Utc::now()),
        kind: "request".into(),
        request_id: Some(request_id),
        method: Some(method.to_string()),
        route: Some(route),
        status: Some(status),
        actor: identity.as_ref().map(|i| i.actor.clone()),
        role: identity.map(|i| i.role.name().to_owned()),
        source: Some(source),
        duration_ms: Some((duration_ms * 1000.0).round() / 1000.0),
        detail,
    });
}

fn lifecycle_event(kind: &str) -> AuditEvent {
    AuditEvent {
        ts: espwatch_core::Timestamp::from_datetime(chrono::Utc::now()),
        kind: kind.into(),
        request_id: None,
        method: None,
        route: None,
        status: None,
        actor: None,
        role: None,
        source: None,
        duration_ms: None,
        detail: serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
    }
}

/// Whether the API listener serves TLS (the state of [`security_headers`]).
#[derive(Clone, Copy)]
struct ServesTls(bool);

/// Hardening headers on every response. The API answers JSON only, so its policy forbids
/// everything; the console (`/`, `/console/`) may load its own files (never inline code);
/// the bundled API docs (`/docs`) need their own scripts (files only: Swagger UI 5.32's page
/// has no inline script, so `script-src 'self'` without `'unsafe-inline'`) and styles.
/// HSTS only when the listener serves TLS.
async fn security_headers(
    State(ServesTls(tls)): State<ServesTls>,
    request: Request,
    next: Next,
) -> Response {
    let docs = request.uri().path().starts_with("/docs");
    let console = crate::console::is_console_path(request.uri().path());
    let mut response = next.run(request).await;
    let typed = typed_headers();
    let headers = response.headers_mut();
    headers.reserve(typed.security.len() + 3);
    let csp = if docs {
        &typed.docs_csp
    } else if console {
        &typed.console_csp
    } else {
        &typed.api_csp
    };
    headers.insert(CONTENT_SECURITY_POLICY, csp.clone());
    for (name, value) in &typed.security {
        headers.insert(name.clone(), value.clone());
    }
    if tls {
        headers.insert(typed.hsts.0.clone(), typed.hsts.1.clone());
    }
    // The docs too: their initializer carries this server's configuration.
    if docs || !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The hardening headers as typed names and values, made once: inserting them by `&str`
/// parsed and allocated every name on every answer (~4 % of the server's CPU on a
/// single-reading request, issue 23).
struct TypedHeaders {
    api_csp: HeaderValue,
    console_csp: HeaderValue,
    docs_csp: HeaderValue,
    security: Vec<(HeaderName, HeaderValue)>,
    hsts: (HeaderName, HeaderValue),
}

fn typed_headers() -> &'static TypedHeaders {
    static TYPED: std::sync::OnceLock<TypedHeaders> = std::sync::OnceLock::new();
    TYPED.get_or_init(|| TypedHeaders {
        api_csp: HeaderValue::from_static(API_CSP),
        console_csp: HeaderValue::from_static(crate::console::CONSOLE_CSP),
        docs_csp: HeaderValue::from_static(DOCS_CSP),
        security: SECURITY_HEADERS
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect(),
        hsts: (
            HeaderName::from_static(HSTS.0),
            HeaderValue::from_static(HSTS.1),
        ),
    })
}

/// The bundled API docs' policy (see [`security_headers`]).
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// CORS only for the configured origins; none configured, no CORS headers at all.
fn cors_layer(config: &Config) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{Method, header};
    if config.cors_origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
            ])
            .max_age(Duration::from_secs(600)),
    )
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
    // Outside the request-log middleware (the request never returned): logged here, once.
    if let Some(error) = response.extensions().get::<ErrorLog>() {
        tracing::error!(
            target: "espwatch::request",
            error_id = %error.id,
            error_kind = error.kind,
            cause = error.cause.as_deref().unwrap_or("-"),
            "request panicked"
        );
    }
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}
