//! **The one table of who may call what.** Every route the router serves is listed here with
//! the access it needs; the authorization middleware looks requests up in it (by method and
//! route template) and denies anything not listed. Tests enumerate the router's routes and
//! generate the role × route matrix from this same table and `Role::permissions`.

use axum::http::Method;
use espwatch_core::access::{Permission, Role};

/// What a route requires.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no credentials (health probes, login, refresh, the API description).
    Public,
    /// Any valid identity, user or API key.
    Authenticated,
    /// An identity whose role has this permission.
    Permission(Permission),
}

/// How the route names a well, for object-level checks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WellParam {
    /// No well in the path (lists filter by scope in the handler).
    None,
    /// The `{id}` path parameter is a well id: checked against the identity's wells before
    /// the handler runs.
    PathId,
    /// The `device_id` query parameter (the old platform's telemetry query) is a well id,
    /// checked the same way.
    QueryDeviceId,
}

#[derive(Clone, Debug)]
pub struct RouteRule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub well: WellParam,
}

const fn rule(method: Method, path: &'static str, access: Access, well: WellParam) -> RouteRule {
    RouteRule {
        method,
        path,
        access,
        well,
    }
}

use Access::{Authenticated, Public};
use Permission::*;
use WellParam::{None as NoWell, PathId, QueryDeviceId};

const fn p(permission: Permission) -> Access {
    Access::Permission(permission)
}

pub const ROUTES: &[RouteRule] = &[
    rule(Method::POST, "/api/v1/telemetry", p(TelemetryWrite), NoWell),
    rule(
        Method::GET,
        "/api/v1/wells/{id}/telemetry",
        p(TelemetryRead),
        PathId,
    ),
    rule(
        Method::GET,
        "/api/v1/wells/{id}/quality",
        p(TelemetryRead),
        PathId,
    ),
    // The old platform's routes, aliases of the canonical ones with the same access.
    rule(Method::POST, "/telemetry/ingest", p(TelemetryWrite), NoWell),
    rule(
        Method::GET,
        "/api/v1/telemetry",
        p(TelemetryRead),
        QueryDeviceId,
    ),
    rule(
        Method::GET,
        "/api/v1/diagnostics/{id}",
        p(DiagnosticsRead),
        PathId,
    ),
    rule(Method::GET, "/api/v1/wells/latest", p(LatestRead), NoWell),
    // Narrowed to the caller's wells by the handler.
    rule(
        Method::GET,
        "/api/v1/wells/telemetry",
        p(TelemetryRead),
        NoWell,
    ),
    rule(
        Method::GET,
        "/api/v1/fleet/aggregate",
        p(TelemetryRead),
        NoWell,
    ),
    rule(Method::GET, "/api/v1/wells", p(WellsRead), NoWell),
    rule(Method::POST, "/api/v1/wells", p(WellsRegister), NoWell),
    rule(Method::GET, "/api/v1/wells/{id}", p(WellsRead), PathId),
    rule(Method::PUT, "/api/v1/wells/{id}", p(WellsWrite), PathId),
    rule(Method::DELETE, "/api/v1/wells/{id}", p(WellsDelete), PathId),
    rule(Method::GET, "/api/v1/alarms", p(AlarmsRead), NoWell),
    // Wells and event kinds are checked against the subscription in the handler.
    rule(Method::GET, "/api/v1/stream", p(LatestRead), NoWell),
    rule(
        Method::POST,
        "/api/v1/alarms/{id}/ack",
        p(AlarmsAcknowledge),
        NoWell,
    ),
    rule(
        Method::GET,
        "/api/v1/wells/{id}/diagnosis",
        p(DiagnosticsRead),
        PathId,
    ),
    rule(
        Method::POST,
        "/api/v1/wells/{id}/diagnosis/retrain",
        p(DiagnosticsRetrain),
        PathId,
    ),
    rule(
        Method::POST,
        "/api/v1/wells/{id}/diagnosis/transient",
        p(DiagnosticsRetrain),
        PathId,
    ),
    rule(
        Method::GET,
        "/api/v1/wells/{id}/events",
        p(DiagnosticsRead),
        PathId,
    ),
    rule(
        Method::POST,
        "/api/v1/diagnostics/decision_tree",
        p(DiagnosticsRead),
        NoWell,
    ),
    // The answer is limited to the identity's wells in the handler.
    rule(Method::POST, "/api/v1/ask", p(DiagnosticsRead), NoWell),
    rule(Method::GET, "/api/v1/audit", p(AuditReadOwn), NoWell),
    rule(Method::POST, "/api/v1/auth/login", Public, NoWell),
    rule(Method::POST, "/api/v1/auth/refresh", Public, NoWell),
    rule(Method::POST, "/api/v1/auth/console/login", Public, NoWell),
    rule(Method::POST, "/api/v1/auth/console/refresh", Public, NoWell),
    rule(Method::POST, "/api/v1/auth/logout", Authenticated, NoWell),
    rule(Method::GET, "/api/v1/auth/me", Authenticated, NoWell),
    rule(Method::POST, "/api/v1/auth/password", p(OwnAccount), NoWell),
    rule(Method::GET, "/api/v1/users", p(UsersManage), NoWell),
    rule(Method::POST, "/api/v1/users", p(UsersManage), NoWell),
    rule(
        Method::PATCH,
        "/api/v1/users/{name}",
        p(UsersManage),
        NoWell,
    ),
    rule(
        Method::DELETE,
        "/api/v1/users/{name}",
        p(UsersManage),
        NoWell,
    ),
    rule(Method::GET, "/api/v1/apikeys", p(UsersManage), NoWell),
    rule(Method::POST, "/api/v1/apikeys", p(UsersManage), NoWell),
    rule(
        Method::DELETE,
        "/api/v1/apikeys/{id}",
        p(UsersManage),
        NoWell,
    ),
    rule(
        Method::GET,
        "/api/v1/notifications/channels",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::POST,
        "/api/v1/notifications/channels",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::DELETE,
        "/api/v1/notifications/channels/{id}",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::POST,
        "/api/v1/notifications/channels/{id}/test",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::GET,
        "/api/v1/notifications/rules",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::POST,
        "/api/v1/notifications/rules",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::DELETE,
        "/api/v1/notifications/rules/{id}",
        p(NotificationsManage),
        NoWell,
    ),
    rule(
        Method::GET,
        "/api/v1/notifications/deliveries",
        p(NotificationsManage),
        NoWell,
    ),
    rule(Method::GET, "/health", Public, NoWell),
    rule(Method::GET, "/health/live", Public, NoWell),
    rule(Method::GET, "/health/startup", Public, NoWell),
    rule(Method::GET, "/health/ready", Public, NoWell),
    rule(Method::GET, "/metrics", p(MetricsRead), NoWell),
];

/// Paths outside the table that are public: the API description and its UI, and the
/// console's static files (which hold no data).
pub fn is_public_path(path: &str) -> bool {
    path == crate::OPENAPI_PATH
        || path == "/docs"
        || path.starts_with("/docs/")
        || crate::console::is_console_path(path)
}

/// The rule for a matched route; `None` (deny) when the route is not in the table.
pub fn lookup(method: &Method, route: &str) -> Option<&'static RouteRule> {
    // HEAD is served by GET handlers.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|r| r.path == route && r.method == method)
}

/// The routes that ingest telemetry: limited per identity in readings, not per source.
pub fn is_telemetry_ingest(rule: &RouteRule) -> bool {
    rule.method == Method::POST
        && (rule.path == "/api/v1/telemetry" || rule.path == "/telemetry/ingest")
}

/// Whether `role` passes `access` (identity already established).
pub fn role_passes(role: Role, access: Access) -> bool {
    match access {
        Access::Public | Access::Authenticated => true,
        Access::Permission(permission) => role.allows(permission),
    }
}
