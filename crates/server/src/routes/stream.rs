//! `GET /api/v1/stream`: the live feed over WebSocket. Authentication and the route's
//! permission are checked by the guard before this handler runs (so an anonymous upgrade is
//! a plain 401); here the subscription is checked against the identity's wells and role, the
//! per-identity connection limit applied, and the connection handed to [`crate::live`].

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::auth::{CredentialEnd, Principal};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::live::{SubscriptionError, SubscriptionRequest};
use crate::state::AppState;

/// The WebSocket subprotocol of the stream; a client offering a `bearer.` credential in
/// `Sec-WebSocket-Protocol` must offer this one too (it is the one the server selects, so the
/// credential is never echoed back).
pub const STREAM_PROTOCOL: &str = "espwatch.v1";

/// Largest message a client may send (subscriptions are small).
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;

/// Live events over WebSocket: readings as they are committed, alarms raised, acknowledged
/// and cleared, wells starting or stopping, and wells' devices going online or offline.
///
/// **Authentication** happens before the upgrade (401 without credentials): the console's
/// session cookie, `Authorization: Bearer`, or — for browsers and other clients that cannot
/// set headers on a WebSocket — the token as a subprotocol: `Sec-WebSocket-Protocol:
/// espwatch.v1, bearer.<access token or API key>` (the server selects `espwatch.v1`). Never
/// put a credential in the URL. A cross-origin `Origin` is refused (403).
///
/// **Subscription**: the query parameters `wells`, `channels`, `events` (comma-separated;
/// absent = everything permitted). A well outside the identity's wells, or an event kind the
/// role may not read, is 403 before the upgrade. Later the client may send
/// `{"type":"subscribe","wells":["W-1"],"channels":["motor_current_a"],"events":["readings","alarms","well_state"]}`
/// to replace the subscription (answered `subscribed`, or `error` and the old one kept).
///
/// **Server messages** (JSON text): `{"type":"subscribed","subscription":{...}}`;
/// `{"type":"readings","readings":[{"well_id","ts",<channel>:value,...}],"coalesced"?:N}`;
/// `{"type":"alarm","change":"raised|acknowledged|cleared","alarm":{...as in /alarms}}`;
/// `{"type":"well_state","well_id","running","ts"}`;
/// `{"type":"connectivity","well_id","online","ts"}` (a Sparkplug B birth or death; needs
/// `latest:read`); `{"type":"lagged","missed_events":N}`
/// when the connection fell behind (re-read `/wells/latest` and `/alarms`);
/// `{"type":"error","error":{"type","message"}}`.
///
/// **Slow consumers** never slow ingestion: what waits is merged into one message (beyond
/// 5 000 readings only each well's newest is kept, `coalesced` says how many were left out),
/// a connection more than `stream_buffer_events` events (default 4 096) behind loses the
/// oldest with a `lagged` notice, and a
/// socket that takes no message for 10 s is closed. Connections per identity are limited
/// (`stream_max_connections_per_identity`, 429 beyond). The server closes streams with code
/// 1001 when it shuts down, and with 1008 when the identity no longer stands (logged out,
/// revoked, user changed) or the credential that opened the stream ends: an access token at
/// its `exp` (or at the end of the previous JWT secret's grace period, when that signed it),
/// an API key at its expiry. Reconnect with a fresh credential.
#[utoipa::path(get, path = "/api/v1/stream", tag = "live",
    params(
        ("wells" = Option<String>, Query, description = "Comma-separated well ids; default: all permitted wells"),
        ("channels" = Option<String>, Query, description = "Comma-separated channels of readings; default: all"),
        ("events" = Option<String>, Query, description = "Comma-separated kinds: readings, alarms, well_state, connectivity; default: all the role may read")
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol `espwatch.v1`"),
        (status = 400, description = "Not a WebSocket upgrade, or a malformed subscription", body = crate::error::ErrorEnvelope),
        (status = 401, description = "No or invalid credentials", body = crate::error::ErrorEnvelope),
        (status = 403, description = "A well or event kind not permitted, or a cross-origin request", body = crate::error::ErrorEnvelope),
        (status = 429, description = "Too many streams open for this identity", body = crate::error::ErrorEnvelope)
    ))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(CredentialEnd(credential_end)): Extension<CredentialEnd>,
    headers: HeaderMap,
    ApiQuery(request): ApiQuery<SubscriptionRequest>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(
            "not_a_websocket",
            format!(
                "GET /api/v1/stream is a WebSocket endpoint: {}",
                e.body_text()
            ),
        )
    })?;
    check_origin(&headers, &state.config.cors_origins)?;
    let offered = offered_protocols(&headers);
    if offered.iter().any(|p| p.starts_with("bearer.")) && !offered.contains(&STREAM_PROTOCOL) {
        return Err(ApiError::bad_request(
            "missing_subprotocol",
            format!(
                "a client sending its credential as a subprotocol must also offer {STREAM_PROTOCOL:?}"
            ),
        ));
    }
    let subscription = request.check(&principal).map_err(|e| match e {
        SubscriptionError::Invalid(m) => ApiError::bad_request("invalid_subscription", m),
        SubscriptionError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
    })?;
    let live = state.live.clone();
    let permit = live.try_connect(&principal.actor()).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this identity already has {} streams open; close one first",
                live.max_per_identity()
            ),
        )
    })?;
    // Subscribed before the 101 goes out: nothing committed after it is missed.
    let rx = state.live.subscribe_stream();
    let security = state.security.clone();
    Ok(upgrade
        .protocols([STREAM_PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            let identity = crate::live::StreamIdentity {
                principal,
                credential_end,
                security,
            };
            live.serve(socket, identity, subscription, rx, permit)
        }))
}

/// The subprotocols a client offered, trimmed.
fn offered_protocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

/// Browsers send `Origin` with every WebSocket handshake and do not apply CORS to it: a page
/// of another origin could otherwise open a stream with the user's cookie (cross-site
/// WebSocket hijacking). Same origin, or one listed in `cors_origins`, passes; clients that
/// send no `Origin` (not browsers) pass.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let same = host.is_some() && authority == host;
    if same || allowed.iter().any(|a| a == origin) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!("streams are not open to pages of origin {origin:?}"),
        ))
    }
}
