//! Fleet-wide queries: the same query for many wells (or all) in one call, so a backend can
//! answer them in one pass instead of one round trip per well.

use espwatch_core::{Agg, Field, Series, TelemetryQuery, TimeRange, WellId};

use crate::{Store, StoreResult};

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

/// [`Store::fleet_aggregate`] from raw points: every well's readings in the range (by well
/// id, then stably by time) evaluated as one series. The reference the conformance suite
/// compares backends with, and the default.
pub async fn fleet_aggregate_raw<S: Store + ?Sized>(
    store: &S,
    query: &FleetQuery,
) -> StoreResult<Series> {
    let mut wells: Vec<WellId> = if query.wells.is_empty() {
        store
            .latest()
            .await?
            .into_iter()
            .map(|l| l.well_id)
            .collect()
    } else {
        query.wells.clone()
    };
    wells.sort();
    wells.dedup();
    let mut points = Vec::new();
    for well in &wells {
        points.extend(store.read_range(well, query.range).await?);
    }
    points.sort_by_key(|p| p.0);
    let stand_in = WellId::parse("fleet").expect("a valid id");
    Ok(espwatch_core::series::evaluate(
        &query.for_well(stand_in),
        &points,
    ))
}
