//! espwatch-server: the HTTP layer. Handlers are thin: they parse, call the
//! [`espwatch_store::Store`], and shape answers; rules live in `espwatch-core`.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod connections;
pub mod console;
pub mod diagnostics;
pub mod error;
pub mod extract;
pub mod headers;
pub mod identity;
pub mod live;
pub mod metrics;
pub mod notify;
mod openapi_doc;
pub mod repeats;
pub mod router;
mod routes;
pub mod state;
pub mod tls;
mod views;

/// Entry points for the fuzzers in `fuzz/` (issue 17): parsing the routes do before any
/// store access, callable without a server. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use espwatch_core::series::TelemetryQuery;
    use espwatch_core::telemetry::WellId;

    use crate::error::ApiError;

    /// `GET /api/v1/wells/{well_id}/telemetry?{query}` as the route parses its query string
    /// (with `default_max_points` 10 000): the store query, or the 400. `None` when `query`
    /// cannot be part of a URI (the HTTP server refuses such a request line first).
    pub fn telemetry_query(
        well_id: WellId,
        query: &str,
    ) -> Option<Result<TelemetryQuery, ApiError>> {
        let uri: axum::http::Uri = format!("/q?{query}").parse().ok()?;
        Some(crate::routes::telemetry::telemetry_query_of(
            &uri, well_id, 10_000,
        ))
    }
}

/// The configuration and the ingest pipeline are application services (`espwatch-app`);
/// these paths stay for code written against the server crate.
pub use espwatch_app::{config, ingest};
pub use router::{OPENAPI_PATH, router, serve};
pub use state::{AppState, AppStateInner};
