//! Fleet-wide queries: the same query for many wells (or all) in one call, so a backend can
//! answer them in one pass instead of one round trip per well.

use espwatch_core::{Agg, Field, Point, Series, TelemetryQuery, TimeRange, WellId};

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

/// The wells a fleet read is about: those asked, by id and each once, or every well with
/// telemetry when none is named.
pub async fn asked_wells<S: Store + ?Sized>(
    store: &S,
    wells: &[WellId],
) -> StoreResult<Vec<WellId>> {
    let mut wells: Vec<WellId> = if wells.is_empty() {
        store
            .latest()
            .await?
            .into_iter()
            .map(|l| l.well_id)
            .collect()
    } else {
        wells.to_vec()
    };
    wells.sort();
    wells.dedup();
    Ok(wells)
}

/// [`Store::fleet_aggregate`] from raw points: every well's readings in the range (by well
/// id, then stably by time) evaluated as one series. The reference the conformance suite
/// compares backends with, and the default.
pub async fn fleet_aggregate_raw<S: Store + ?Sized>(
    store: &S,
    query: &FleetQuery,
) -> StoreResult<Series> {
    let wells = asked_wells(store, &query.wells).await?;
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

/// Per-well totals of some channels over one range, without buckets: what "the average
/// intake pressure of every well yesterday" or "wells whose average X over Y is above Z"
/// needs, with the counts that pool wells into a fleet figure.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetTotalsQuery {
    /// The wells; empty: every well with telemetry.
    pub wells: Vec<WellId>,
    pub range: TimeRange,
    /// Channels to total, in this order. Never empty.
    pub fields: Vec<Field>,
}

/// Count, sum, minimum and maximum of one channel's values. `n == 0`: no value (the
/// minimum is then `+inf` and the maximum `-inf`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Totals {
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Totals {
    pub const EMPTY: Totals = Totals {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    pub fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Folds other values' totals into these.
    pub fn merge(&mut self, o: &Totals) {
        if o.n == 0 {
            return;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// The aggregate `agg` of the values (`Last` has no meaning here: `None`).
    pub fn result(&self, agg: Agg) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        match agg {
            Agg::Avg => Some(self.sum / self.n as f64),
            Agg::Min => Some(self.min),
            Agg::Max => Some(self.max),
            Agg::Last => None,
        }
    }

    /// The totals of one channel of raw points.
    pub fn of_points(points: &[Point], field: Field) -> Totals {
        let mut t = Totals::EMPTY;
        for v in points.iter().filter_map(|(_, m)| m.get(field)) {
            t.add(v);
        }
        t
    }
}

/// One well's answer to a [`FleetTotalsQuery`].
#[derive(Clone, Debug, PartialEq)]
pub struct WellTotals {
    pub well_id: WellId,
    /// Readings of the well in the range, whatever channels they have.
    pub readings: u64,
    /// One per asked field, in the query's order.
    pub channels: Vec<Totals>,
}

impl WellTotals {
    /// The totals of raw points (ascending, deduplicated), as every backend must answer.
    pub fn of_points(well_id: WellId, points: &[Point], fields: &[Field]) -> WellTotals {
        WellTotals {
            well_id,
            readings: points.len() as u64,
            channels: fields
                .iter()
                .map(|&f| Totals::of_points(points, f))
                .collect(),
        }
    }
}

/// The fleet's totals of the `k`-th asked field: every well's pooled.
pub fn fleet_total(wells: &[WellTotals], k: usize) -> Totals {
    let mut t = Totals::EMPTY;
    for w in wells {
        if let Some(c) = w.channels.get(k) {
            t.merge(c);
        }
    }
    t
}
