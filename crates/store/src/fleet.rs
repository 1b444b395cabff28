//! Fleet-wide queries: the same query for many wells (or all) in one call, so a backend can
//! answer them in one pass instead of one round trip per well.

use espwatch_core::{Agg, Field, Series, TelemetryQuery, TimeRange, WellId};

/// One bucketed query for many wells.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetQuery {
    /// The wells; empty: every well with telemetry.
    pub wells: Vec<WellId>,
    pub range: TimeRange,
    /// Channels to return, in this order. Never empty.
    pub fields: Vec<Field>,
    /// Bucket width in microseconds (positive).
    pub step_micros: i64,
    pub agg: Agg,
}

impl FleetQuery {
    /// The per-well query this fleet query stands for.
    pub fn for_well(&self, well_id: WellId) -> TelemetryQuery {
        TelemetryQuery {
            well_id,
            range: self.range,
            fields: self.fields.clone(),
            step_micros: Some(self.step_micros),
            agg: self.agg,
            max_points: usize::MAX,
        }
    }
}

/// One well's answer to a [`FleetQuery`].
#[derive(Clone, Debug, PartialEq)]
pub struct WellSeries {
    pub well_id: WellId,
    pub series: Series,
}
