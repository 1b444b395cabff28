//! HTTP handlers. Each reads as: parse input, call the store, shape the answer.

pub mod alarms;
pub mod audit;
pub mod auth;
pub mod diagnostics;
pub mod health;
pub mod telemetry;
pub mod users;
pub mod wells;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
pub(crate) async fn json_body<T: DeserializeOwned>(
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
