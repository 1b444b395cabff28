//! Time-series query shapes and the pure functions that aggregate and downsample raw points.
//!
//! Storage backends return raw points for a well and time range; these functions turn them
//! into what the API answers. A backend that can aggregate natively (TimescaleDB continuous
//! aggregates) may do so instead, as long as its results equal these.

use crate::telemetry::{Field, Measurements, Timestamp, WellId};

/// Aggregate applied per time bucket when a query has a `step`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Agg {
    #[default]
    Avg,
    Min,
    Max,
    Last,
}

impl Agg {
    pub fn parse(s: &str) -> Option<Agg> {
        match s {
            "avg" | "mean" => Some(Agg::Avg),
            "min" => Some(Agg::Min),
            "max" => Some(Agg::Max),
            "last" => Some(Agg::Last),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Last => "last",
        }
    }
}

/// Half-open time range `[from, to)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl TimeRange {
    pub fn contains(&self, ts: Timestamp) -> bool {
        ts >= self.from && ts < self.to
    }
}

/// A query for one well's telemetry.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryQuery {
    pub well_id: WellId,
    pub range: TimeRange,
    /// Channels to return, in this order. Never empty.
    pub fields: Vec<Field>,
    /// Bucket width in microseconds; `None` returns raw points.
    pub step_micros: Option<i64>,
    pub agg: Agg,
    /// Raw queries with more points than this are downsampled server-side.
    pub max_points: usize,
}

/// Columnar result: `ts[i]` pairs with `columns[k].1[i]`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    pub ts: Vec<Timestamp>,
    pub columns: Vec<(Field, Vec<Option<f64>>)>,
    /// True when raw points were reduced to honour `max_points`.
    pub downsampled: bool,
}

/// A raw stored point: a timestamp and all its channels.
pub type Point = (Timestamp, Measurements);
