//! Typed request input: extractors that turn path, query and body into checked values or an
//! error envelope, and the body helpers they share with the ingest handler.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use espwatch_core::{Timestamp, WellId};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::identity::SourceAddr;

/// Default body limit of [`ApiJson`]: small request documents.
pub const JSON_LIMIT: usize = 64 * 1024;

/// A JSON request body of at most `LIMIT` bytes. Refusals use the error envelope: 415 for a
/// Content-Type other than `application/json`, 413 past the limit, 400 for malformed JSON
/// (with line and column), 422 for a well-formed body of the wrong shape.
#[derive(Debug)]
pub struct ApiJson<T, const LIMIT: usize = JSON_LIMIT>(pub T);

impl<T, S, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        json_body(&parts.headers, body, LIMIT).await.map(ApiJson)
    }
}

/// The `{id}` path segment of `/api/v1/wells/{id}/...`, validated as a [`WellId`]
/// (400 `invalid_well_id` otherwise).
#[derive(Debug)]
pub struct WellIdPath(pub WellId);

impl<S: Send + Sync> FromRequestParts<S> for WellIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_well_id", e.body_text()))?;
        parse_well_id(&id).map(WellIdPath)
    }
}

/// Query parameters; 400 `invalid_query` with serde's explanation when they do not fit `T`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Who is asking from where, for audit records: the request id and the client address the
/// logging middleware determined. Never fails.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub source: Option<SourceAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestContext {
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            source: parts.extensions.get::<SourceAddr>().cloned(),
        })
    }
}

/// A well id from a path or query parameter; 400 `invalid_well_id` when it is not one.
pub fn parse_well_id(id: &str) -> Result<WellId, ApiError> {
    WellId::parse(id).map_err(|e| {
        ApiError::bad_request("invalid_well_id", format!("well id {id:?} is invalid: {e}"))
    })
}

/// A time query parameter: RFC 3339 or `now`; 400 `invalid_query` naming the parameter.
pub fn parse_time_param(name: &'static str, text: &str) -> Result<Timestamp, ApiError> {
    if text == "now" {
        return Ok(Timestamp::from_datetime(chrono::Utc::now()));
    }
    Timestamp::parse_rfc3339(text).map_err(|e| {
        ApiError::bad_request("invalid_query", format!("`{name}`: {e}"))
            .with_details(serde_json::json!({ "parameter": name }))
    })
}

/// Reads a request body up to `limit` bytes; 413 beyond it (checked against
/// `Content-Length` first so an honest client is refused before it uploads).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "request body exceeds the limit of {limit} bytes; split it into smaller batches"
            ),
        )
        .with_details(serde_json::json!({ "limit_bytes": limit }))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "body_read_failed",
            "the request body could not be read completely",
        )
        .with_details(serde_json::json!({ "reason": e.to_string() }))),
    }
}

/// The media type of a request without parameters, lower-cased; `None` when absent.
/// A `charset` other than UTF-8 is refused: every payload is UTF-8.
pub(crate) fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type is not valid text",
        )
    })?;
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    for param in parts {
        if let Some((k, v)) = param.split_once('=')
            && k.trim().eq_ignore_ascii_case("charset")
        {
            let v = v.trim().trim_matches('"');
            if !v.eq_ignore_ascii_case("utf-8") && !v.eq_ignore_ascii_case("utf8") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("charset {v:?} is not supported; send UTF-8"),
                ));
            }
        }
    }
    Ok(Some(essence))
}

/// Reads and deserializes a JSON body with the position of any syntax or shape error.
async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    match media_type(headers)?.as_deref() {
        Some("application/json") => {}
        None => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type is missing; send application/json",
            ));
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type {other} is not supported here; send application/json"),
            ));
        }
    }
    let bytes = read_body(headers, body, limit).await?;
    parse_json(&bytes)
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use espwatch_core::ingest::{MAX_JSON_DEPTH, json_nesting_exceeds};
    if json_nesting_exceeds(bytes, MAX_JSON_DEPTH) {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!("request body: JSON nested deeper than {MAX_JSON_DEPTH} levels"),
        )
        .with_details(serde_json::json!({ "limit": MAX_JSON_DEPTH })));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let kind = if e.is_syntax() || e.is_eof() {
            "malformed_json"
        } else {
            "invalid_body"
        };
        let status = if kind == "malformed_json" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, kind, format!("request body: {e}"))
            .with_details(serde_json::json!({ "line": e.line(), "column": e.column() }))
    })
}
