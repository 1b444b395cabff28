//! HTTP handlers. Each reads as: extract typed input (`crate::extract`), call the store or a
//! service, shape the answer. Route files do not import from each other: what several share
//! lives in `extract.rs` (input), `views.rs` (output) or `audit.rs`.

pub mod alarms;
pub mod ask;
pub mod audit;
pub mod auth;
pub mod diagnostics;
pub mod health;
pub mod legacy;
pub mod metrics;
pub mod notifications;
pub mod stream;
pub mod telemetry;
pub mod users;
pub mod wells;
