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
use super::{Principal, PrincipalKind};
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

/// The credential of a request to `route`: `Authorization` (a `Bearer` token), `X-API-Key`,
/// on the stream route a `bearer.` subprotocol, or the console's access cookie.
///
/// A request carrying more than one of them, or one of them twice, is ambiguous (`Err`) and
/// refused as a whole (issue 18 item 10): which one would count is exactly what a confused
/// client, a smuggling proxy or a cookie planted from a sibling domain exploits, and the
/// identity that acts must never depend on an order of precedence the client cannot see.
/// Every `Authorization` header counts, whatever its scheme (a `Basic` one next to a cookie
/// is two credentials, and alone it is no valid one); so do empty values. The console never
/// sends a header next to its cookie; a browser holding a console session uses `/docs`
/// with that session (no "Authorize" needed) or from another browser profile.
#[allow(clippy::result_unit_err)]
pub fn credential(headers: &HeaderMap, route: &str) -> Result<Option<(String, Carrier)>, ()> {
    let mut found: Vec<(Option<&str>, Carrier)> = Vec::new();
    for value in headers.get_all(header::AUTHORIZATION) {
        let bearer = value
            .to_str()
            .ok()
            .and_then(|text| text.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        found.push((bearer, Carrier::Header));
    }
    for value in headers.get_all("x-api-key") {
        found.push((value.to_str().ok().map(str::trim), Carrier::Header));
    }
    if route == STREAM_ROUTE {
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().strip_prefix("bearer."));
        for token in offered {
            found.push((Some(token), Carrier::Subprotocol));
        }
    }
    for value in cookie_values(headers, ACCESS_COOKIE) {
        found.push((Some(value), Carrier::Cookie));
    }
    match found.as_slice() {
        [] => Ok(None),
        [(token, carrier)] => Ok(token
            .filter(|t| !t.is_empty())
            .map(|t| (t.to_owned(), *carrier))),
        _ => Err(()),
    }
}

/// Every non-empty value of cookie `name` (a browser sends two when another path or a parent
/// domain set one too).
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The value of cookie `name`, if sent (the first, when sent twice).
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    cookie_values(headers, name).next()
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

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn one_credential_is_found_wherever_it_travels_and_subprotocols_only_on_the_stream() {
        let cookie = (header::COOKIE, "a=b; espwatch_access=JWT1");
        let offered = (header::SEC_WEBSOCKET_PROTOCOL, "espwatch.v1, bearer.TOK");
        let bearer = (header::AUTHORIZATION, "Bearer HDR");
        let key = (header::HeaderName::from_static("x-api-key"), "KEY");
        let found = |token: &str, carrier| Ok(Some((token.to_owned(), carrier)));
        assert_eq!(
            credential(&headers(std::slice::from_ref(&cookie)), "/api/v1/wells"),
            found("JWT1", Carrier::Cookie)
        );
        assert_eq!(
            credential(&headers(std::slice::from_ref(&offered)), STREAM_ROUTE),
            found("TOK", Carrier::Subprotocol)
        );
        // Subprotocols are no credential elsewhere: the cookie is the only one.
        assert_eq!(
            credential(
                &headers(&[cookie.clone(), offered.clone()]),
                "/api/v1/wells"
            ),
            found("JWT1", Carrier::Cookie)
        );
        assert_eq!(
            credential(&headers(std::slice::from_ref(&bearer)), STREAM_ROUTE),
            found("HDR", Carrier::Header)
        );
        assert_eq!(
            credential(&headers(std::slice::from_ref(&key)), "/api/v1/wells"),
            found("KEY", Carrier::Header)
        );
        assert_eq!(credential(&HeaderMap::new(), STREAM_ROUTE), Ok(None));
        // Another scheme is no credential, and no empty value is one.
        let basic = (header::AUTHORIZATION, "Basic dXNlcjpwYXNz");
        assert_eq!(
            credential(&headers(std::slice::from_ref(&basic)), "/api/v1/wells"),
            Ok(None)
        );
        assert_eq!(
            credential(
                &headers(&[(header::AUTHORIZATION, "Bearer  ")]),
                "/api/v1/wells"
            ),
            Ok(None)
        );
    }

    #[test]
    fn two_credentials_are_ambiguous_wherever_they_travel() {
        let cookie = (header::COOKIE, "espwatch_access=JWT1");
        let offered = (header::SEC_WEBSOCKET_PROTOCOL, "espwatch.v1, bearer.TOK");
        let bearer = (header::AUTHORIZATION, "Bearer HDR");
        let basic = (header::AUTHORIZATION, "Basic dXNlcjpwYXNz");
        let key = (header::HeaderName::from_static("x-api-key"), "KEY");
        let empty_key = (header::HeaderName::from_static("x-api-key"), "");
        for (pairs, route) in [
            (vec![bearer.clone(), key.clone()], "/api/v1/wells"),
            (vec![bearer.clone(), bearer.clone()], "/api/v1/wells"),
            (vec![key.clone(), key.clone()], "/api/v1/wells"),
            (vec![bearer.clone(), cookie.clone()], "/api/v1/wells"),
            (vec![key.clone(), cookie.clone()], "/api/v1/wells"),
            (vec![basic.clone(), cookie.clone()], "/api/v1/wells"),
            (vec![empty_key.clone(), cookie.clone()], "/api/v1/wells"),
            (vec![offered.clone(), cookie.clone()], STREAM_ROUTE),
            (vec![offered.clone(), bearer.clone()], STREAM_ROUTE),
            (
                vec![(header::SEC_WEBSOCKET_PROTOCOL, "bearer.A, bearer.B")],
                STREAM_ROUTE,
            ),
            (
                vec![(header::COOKIE, "espwatch_access=JWT1; espwatch_access=JWT2")],
                "/api/v1/wells",
            ),
            (
                vec![
                    (header::COOKIE, "espwatch_access=JWT1"),
                    (header::COOKIE, "espwatch_access=JWT2"),
                ],
                "/api/v1/wells",
            ),
        ] {
            assert_eq!(
                credential(&headers(&pairs), route),
                Err(()),
                "{pairs:?} {route}"
            );
        }
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
