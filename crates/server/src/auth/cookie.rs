//! Where a request's credential comes from, and the console's session cookies.
//!
//! API clients send `Authorization: Bearer` or `X-API-Key`. A WebSocket client that cannot
//! set headers may offer its token as a subprotocol (`bearer.<token>`, on the stream route
//! only). The console, a page served by this server, holds its session in cookies the page's
//! scripts cannot read:
//! - `espwatch_access`: the session's access JWT (`Path=/`, lifetime of an access token);
//! - `espwatch_refresh`: its single-use refresh token, sent only to
//!   `/api/v1/auth/console/refresh`;
//!
//! both `HttpOnly`, `SameSite=Strict` and (unless `cookie_secure = false`) `Secure`. A request
//! authenticated by cookie that changes anything (any method but GET/HEAD/OPTIONS) must also
//! carry `X-CSRF-Token`: an HMAC of the session id (see [`super::token::TokenKeys::csrf_token`]),
//! which the page learns from the sign-in answer or `GET /api/v1/auth/me`. Another site can
//! neither read it nor (SameSite=Strict) make the browser send the cookie.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::token::TokenKeys;
use super::{Principal, PrincipalKind, presented_credential};
use crate::error::ApiError;

pub const ACCESS_COOKIE: &str = "espwatch_access";
pub const REFRESH_COOKIE: &str = "espwatch_refresh";
/// The refresh cookie is sent to this path only.
pub const REFRESH_COOKIE_PATH: &str = "/api/v1/auth/console";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The one route that takes a credential in `Sec-WebSocket-Protocol`.
pub const STREAM_ROUTE: &str = "/api/v1/stream";

/// How the credential travelled.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Carrier {
    Header,
    Subprotocol,
    Cookie,
}

/// The credential of a request to `route`: a header first, then (stream only) a
/// `bearer.` subprotocol, then the console's access cookie. `Err` when the headers are
/// ambiguous (see [`presented_credential`]).
#[allow(clippy::result_unit_err)]
pub fn credential(headers: &HeaderMap, route: &str) -> Result<Option<(String, Carrier)>, ()> {
    if let Some(token) = presented_credential(headers)? {
        return Ok(Some((token.to_owned(), Carrier::Header)));
    }
    if route == STREAM_ROUTE
        && let Some(token) = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix("bearer."))
            .filter(|t| !t.is_empty())
    {
        return Ok(Some((token.to_owned(), Carrier::Subprotocol)));
    }
    Ok(read_cookie(headers, ACCESS_COOKIE).map(|c| (c.to_owned(), Carrier::Cookie)))
}

/// The value of cookie `name`, if sent.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a cookie-authenticated request may proceed: reads always, changes only with the
/// session's CSRF token.
pub fn csrf_passes(
    keys: &TokenKeys,
    method: &Method,
    headers: &HeaderMap,
    principal: &Principal,
) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let PrincipalKind::User { session_id } = &principal.kind else {
        return false;
    };
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| keys.check_csrf(session_id, t))
}

pub fn csrf_refused() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "a request signed in by the console's cookie must carry the session's X-CSRF-Token header",
    )
    .into_response()
}

fn cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    ))
    .expect("tokens are header-safe")
}

/// `Set-Cookie` values that open a console session.
pub fn session_cookies(
    access: &str,
    access_ttl: Duration,
    refresh: &str,
    refresh_ttl: Duration,
    secure: bool,
) -> [HeaderValue; 2] {
    [
        cookie(ACCESS_COOKIE, access, "/", access_ttl, secure),
        cookie(
            REFRESH_COOKIE,
            refresh,
            REFRESH_COOKIE_PATH,
            refresh_ttl,
            secure,
        ),
    ]
}

/// `Set-Cookie` values that make the browser forget the session.
pub fn cleared_cookies(secure: bool) -> [HeaderValue; 2] {
    [
        cookie(ACCESS_COOKIE, "", "/", Duration::ZERO, secure),
        cookie(
            REFRESH_COOKIE,
            "",
            REFRESH_COOKIE_PATH,
            Duration::ZERO,
            secure,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_in_order_and_subprotocols_only_on_the_stream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; espwatch_access=JWT1"),
        );
        assert_eq!(
            credential(&h, "/api/v1/wells"),
            Ok(Some(("JWT1".into(), Carrier::Cookie)))
        );
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("espwatch.v1, bearer.TOK"),
        );
        assert_eq!(
            credential(&h, STREAM_ROUTE),
            Ok(Some(("TOK".into(), Carrier::Subprotocol)))
        );
        assert_eq!(
            credential(&h, "/api/v1/wells"),
            Ok(Some(("JWT1".into(), Carrier::Cookie)))
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer HDR"),
        );
        assert_eq!(
            credential(&h, STREAM_ROUTE),
            Ok(Some(("HDR".into(), Carrier::Header)))
        );
        assert_eq!(credential(&HeaderMap::new(), STREAM_ROUTE), Ok(None));
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let keys = TokenKeys::new(b"kq3P9vZx1LmT7wQe4RbN8sYc2HdJ6uFa", "i", "a").unwrap();
        let t = keys.csrf_token("session-1");
        assert!(keys.check_csrf("session-1", &t));
        assert!(!keys.check_csrf("session-2", &t));
        assert!(!keys.check_csrf("session-1", "nonsense"));
        let other = TokenKeys::new(b"Zr5Tq8Wm2Xc7Vb4Np9Ls3Kd6Hf1Gj0Ae", "i", "a").unwrap();
        assert!(!other.check_csrf("session-1", &t));
    }
}
