//! espwatch-app: the application services. What the HTTP handlers (`espwatch-server`) and the
//! commands (`espwatch`) both do lives here once: the configuration, opening the configured
//! store, the decode → append → report ingest pipeline, issuing API keys and hashing
//! passwords, the background retention job. It knows nothing of HTTP or of the command line.

pub mod anchors;
pub mod ask;
pub mod audit_retention;
pub mod config;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod password;
pub mod periodic;
pub mod quality;
pub mod retention;
mod secret_structure;
pub mod stores;

pub use config::{Config, LogFormat, SecretString, TimescaleSetting};
pub use ingest::{IngestError, IngestReport, ingest_payload, ingest_payload_collect};
pub use keys::{KeyRequest, KeyRequestError, issue_api_key};
pub use stores::{OpenedStore, open_security_store, open_store, open_store_for_loading};
