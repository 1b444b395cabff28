//! The one error envelope every failed request gets:
//! `{"error": {"id", "type", "message", "details"}}`.
//!
//! Policy (after crates.io's `util/errors.rs`):
//! - Client mistakes carry a precise message and structured `details`; they are not logged as
//!   errors (the request log line already has the status).
//! - Anything internal is logged once, in the request's own log line (request id, route,
//!   status, error id, cause: see [`ErrorLog`]), and the client gets only the id and a generic
//!   message: no SQL, paths or panic text ever leaves.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use espwatch_store::StoreError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Unique id of this error occurrence; quote it when reporting a problem (it is in the server log).
    pub id: String,
    /// Stable machine-readable kind, e.g. `not_found`, `invalid_query`, `payload_too_large`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Structured specifics (offending fields, positions, limits); `{}` when none.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Left on an error response (as an extension) for the request log line, which logs it once:
/// at ERROR with the cause for a 5xx, with the error id and kind otherwise.
#[derive(Clone, Debug)]
pub struct ErrorLog {
    pub id: String,
    pub kind: &'static str,
    /// Internal cause (never sent), or for a 5xx without one, its message.
    pub cause: Option<String>,
}

/// An error a handler returns. Converts itself into the envelope.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    details: Value,
    /// Internal cause, logged but never sent.
    cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            details: Value::Object(Default::default()),
            cause: None,
        }
    }

    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).unwrap_or(Value::Null);
        self
    }

    pub fn bad_request(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unprocessable(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, message)
    }

    /// A failure that is our fault. `cause` is logged with the error id, never returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error; quote the error id when reporting it",
            )
        }
    }

    /// 503: a dependency is down. `cause` is logged at ERROR with the id, never returned.
    pub fn unavailable(
        kind: &'static str,
        message: impl Into<String>,
        cause: impl std::fmt::Display,
    ) -> Self {
        ApiError {
            cause: Some(cause.to_string()),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, message)
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Builds the envelope. Nothing is logged here: the request log line does that, once,
    /// from the [`ErrorLog`] that [`IntoResponse`] leaves on the response.
    pub fn into_envelope(self) -> (StatusCode, ErrorEnvelope) {
        self.into_logged().0
    }

    /// The envelope and what the request log line needs.
    fn into_logged(self) -> ((StatusCode, ErrorEnvelope), ErrorLog) {
        let id = uuid::Uuid::now_v7().to_string();
        let log = ErrorLog {
            id: id.clone(),
            kind: self.kind,
            cause: self
                .cause
                .or_else(|| self.status.is_server_error().then(|| self.message.clone())),
        };
        let envelope = (
            self.status,
            ErrorEnvelope {
                error: ErrorBody {
                    id,
                    kind: self.kind,
                    message: self.message,
                    details: self.details,
                },
            },
        );
        (envelope, log)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let ((status, body), log) = self.into_logged();
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(log);
        if retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::Unavailable(why) => ApiError {
                cause: Some(why),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is not accepting requests right now; retry shortly",
                )
            },
            StoreError::Internal(cause) => ApiError::internal(cause),
        }
    }
}
