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

/// The configuration and the ingest pipeline are application services (`espwatch-app`);
/// these paths stay for code written against the server crate.
pub use espwatch_app::{config, ingest};
pub use router::{OPENAPI_PATH, router, serve};
pub use state::AppState;
