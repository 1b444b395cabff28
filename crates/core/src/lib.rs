//! espwatch-core: the pure heart of espwatch.
//!
//! **Invariant: this crate does no I/O.** No files, sockets, clocks or threads: callers pass
//! the current time in where it matters. That keeps every rule here testable with plain values
//! and lets the same code run in the server, the offline tools and the tests.

pub mod access;
pub mod ask;
pub mod condition;
pub mod diagnostics;
pub mod duration;
pub mod hydraulics;
pub mod ingest;
pub mod localtime;
pub mod quality;
pub mod rng;
pub mod series;
pub mod sim;
pub mod telemetry;
pub mod well;

pub use condition::Condition;
pub use series::{Agg, Point, Series, TelemetryQuery, TimeRange};
pub use telemetry::{FIELD_COUNT, Field, Measurements, Reading, Timestamp, WellId};
pub use well::{WellDocument, WellMeta};
