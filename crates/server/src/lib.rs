//! espwatch-server: the HTTP layer. Handlers are thin: they parse, call the
//! [`espwatch_store::Store`], and shape answers; rules live in `espwatch-core`.

pub mod audit;
pub mod auth;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod extract;
pub mod ingest;
pub mod router;
mod routes;
pub mod state;
mod views;

pub use router::{OPENAPI_PATH, router, serve};
pub use state::AppState;
pub use config::{Config, LogFormat, SecretString, TimescaleSetting};
pub use ingest::{IngestReport, ingest_payload};
