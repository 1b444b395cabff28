//! espwatch-store: everything that persists data.
//!
//! **Invariant: the [`Store`] trait is the only way the rest of espwatch reaches data.**
//! Two backends are planned behind it: the embedded engine in [`embedded`] (SQLite underneath,
//! the default, no server needed) and PostgreSQL/TimescaleDB. Anything a backend cannot do
//! natively (aggregation, downsampling) it does with the pure functions of `espwatch_core::series`,
//! so every backend answers the same.
//!
//! **Invariant: acknowledged means durable.** `append` returns only after the readings it
//! reports as accepted are committed to stable storage.

use async_trait::async_trait;
use espwatch_core::{
    Point, Reading, Series, TelemetryQuery, TimeRange, Timestamp, WellId, WellMeta,
};
use serde::Serialize;

pub mod alarms;
pub mod embedded;
pub mod fleet;
pub mod metrics;
pub mod notify;
pub mod retention;
pub mod security;
pub mod spool;

pub use alarms::{
    ALARM_LIST_CAP, AckOutcome, Alarm, AlarmFilter, AlarmKey, AlarmState, AlarmStore, NewAlarm,
    TransientMark, WellDirectives,
};
pub use embedded::{
    CheckpointHook, CompactReport, EmbeddedOptions, EmbeddedSecurityStore, EmbeddedStore,
    FleetTierStats, InstallHook, InstallStep, LogRecord, LogTrimHook, LogTrimStep, ShipBacklog,
    ShipGap, StorageReport, decode_log_readings,
};
pub use fleet::{FleetQuery, FleetTotalsQuery, Totals, WellSeries, WellTotals, fleet_total};
pub use notify::{
    AttemptResult, ChannelKind, Delivery, DeliveryFilter, DeliveryState, NewChannel, NewDelivery,
    NewRule, NotifyChannel, NotifyRule, NotifyStore,
};
pub use retention::{RawDay, Retention, RollupTier};
pub use security::{
    ApiKey, AuditEvent, AuditFilter, AuditKey, AuditPrune, AuditPruneScope, AuditRecord,
    AuditVerification, CaseDuplicate, DuplicateAction, DuplicateRename, LockoutPolicy, NewApiKey,
    NewSession, NewUser, RefreshOutcome, SecurityStore, Session, User, UserChange,
};

/// Errors callers branch on. Internal causes are kept for the log, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing to create exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The store is shutting down or its writer has stopped; retry elsewhere or later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: disk full, corruption, a bug. Logged with its cause where handled.
    #[error("internal store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How `append` treats readings of wells it does not know.
#[derive(Copy, Clone, Debug)]
pub struct AppendOptions {
    /// Register unknown wells with minimal metadata (true) or refuse their readings (false).
    pub auto_register_wells: bool,
}

impl Default for AppendOptions {
    fn default() -> Self {
        AppendOptions {
            auto_register_wells: true,
        }
    }
}

/// What happened to one reading of an append, in input order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingOutcome {
    /// Stored (and durable, since `append` returned).
    Accepted,
    /// `(well_id, ts)` was already stored, or appeared earlier in the same append; first value wins.
    Duplicate,
    /// The well is not registered and auto-registration is off.
    UnknownWell,
}

#[derive(Clone, Debug, Default)]
pub struct AppendOutcome {
    pub outcomes: Vec<ReadingOutcome>,
    /// Wells registered automatically by this append.
    pub registered_wells: Vec<WellId>,
    /// Readings written to the outage spool instead of the store (see [`spool`]): durable,
    /// reported `Accepted`, stored when the spool drains (duplicates among them are dropped then).
    pub spooled: usize,
}

impl AppendOutcome {
    pub fn count(&self, which: ReadingOutcome) -> usize {
        self.outcomes.iter().filter(|o| **o == which).count()
    }
}

/// A wells-registry entry as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WellRecord {
    #[serde(flatten)]
    pub meta: WellMeta,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// True while the entry still holds only what auto-registration put there.
    pub auto_registered: bool,
}

/// Newest stored reading of a well.
#[derive(Clone, Debug, PartialEq)]
pub struct LatestReading {
    pub well_id: WellId,
    pub point: Point,
}

/// Result of probing the store for readiness.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StoreHealth {
    /// Backend name, e.g. "embedded".
    pub backend: &'static str,
    pub read: ProbeResult,
    pub write: ProbeResult,
}

/// Counters for operators and benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreStats {
    pub wells: usize,
    pub readings_in_log: u64,
    pub segments: u64,
    pub commits: u64,
    pub checkpoints: u64,
    /// Bytes the store occupies (embedded: database and WAL files; PostgreSQL: the
    /// database), when known.
    pub size_bytes: Option<u64>,
    /// Connection pool use (PostgreSQL), when there is a pool.
    pub pool: Option<PoolStats>,
}

/// A connection pool's use at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolStats {
    /// Connections open (idle + in use).
    pub size: u64,
    /// Open and idle.
    pub idle: u64,
    /// The most it opens.
    pub max: u64,
    /// Callers waiting for a connection.
    pub waiting: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends readings durably; returns one outcome per reading, in order, after the commit.
    /// Concurrent calls share commits (group commit).
    async fn append(
        &self,
        readings: Vec<Reading>,
        opts: AppendOptions,
    ) -> StoreResult<AppendOutcome>;

    /// Raw points of one well in `[range.from, range.to)`, ascending by time.
    async fn read_range(&self, well_id: &WellId, range: TimeRange) -> StoreResult<Vec<Point>>;

    /// Answers a telemetry query: raw (downsampled above `max_points`) or bucketed by `step`.
    async fn query(&self, query: &TelemetryQuery) -> StoreResult<Series> {
        let points = self.read_range(&query.well_id, query.range).await?;
        Ok(espwatch_core::series::evaluate(query, &points))
    }

    /// The same bucketed query for many wells (every well with telemetry when
    /// `query.wells` is empty), by well id; wells without data in the range are left out.
    /// Backends answer it in one pass where they can; this default asks well by well.
    async fn fleet_query(&self, query: &FleetQuery) -> StoreResult<Vec<WellSeries>> {
        let wells = fleet::asked_wells(self, &query.wells).await?;
        let mut out = Vec::with_capacity(wells.len());
        for well_id in wells {
            let series = self.query(&query.for_well(well_id.clone())).await?;
            if !series.ts.is_empty() {
                out.push(WellSeries { well_id, series });
            }
        }
        Ok(out)
    }

    /// One series for the whole fleet: per `query.step_micros` bucket, the aggregate of every
    /// reading of every well in `query.wells` (every well with telemetry when empty), as if
    /// they were one well's readings: `avg` weighs each reading alike (not an average of the
    /// wells' averages); `last` is the latest reading, the greater well id among equal
    /// timestamps. Buckets without readings are left out.
    /// This default reads each well's raw points ([`fleet::fleet_aggregate_raw`]).
    async fn fleet_aggregate(&self, query: &FleetQuery) -> StoreResult<Series> {
        fleet::fleet_aggregate_raw(self, query).await
    }

    /// Count, sum, minimum and maximum of each asked channel over the whole range, per well
    /// (every well with telemetry when `query.wells` is empty), by well id; wells without a
    /// reading in the range are left out. Equal to [`WellTotals::of_points`] on each well's raw
    /// points (sums to rounding). Backends answer it in one pass from their rollups where
    /// they can; this default reads well by well.
    async fn fleet_totals(&self, query: &FleetTotalsQuery) -> StoreResult<Vec<WellTotals>> {
        let wells = fleet::asked_wells(self, &query.wells).await?;
        let mut out = Vec::with_capacity(wells.len());
        for well_id in wells {
            let points = self.read_range(&well_id, query.range).await?;
            if !points.is_empty() {
                out.push(WellTotals::of_points(well_id, &points, &query.fields));
            }
        }
        Ok(out)
    }

    /// Newest reading of every well that has telemetry.
    async fn latest(&self) -> StoreResult<Vec<LatestReading>>;

    async fn list_wells(&self) -> StoreResult<Vec<WellRecord>>;
    async fn get_well(&self, well_id: &WellId) -> StoreResult<Option<WellRecord>>;
    /// Creates a well; `Conflict` when it exists (an auto-registered entry may be replaced).
    async fn create_well(&self, meta: WellMeta) -> StoreResult<WellRecord>;
    /// Replaces an existing well's metadata; `Ok(None)` when it does not exist.
    async fn update_well(&self, meta: WellMeta) -> StoreResult<Option<WellRecord>>;
    /// Removes a well and all its telemetry; false when it did not exist.
    async fn delete_well(&self, well_id: &WellId) -> StoreResult<bool>;

    /// Probes reading and writing, for `/health/ready`.
    async fn health(&self) -> StoreHealth;
    async fn stats(&self) -> StoreResult<StoreStats>;

    /// The outage spool in front of the store, when there is one (`/health/ready`).
    fn spool_status(&self) -> Option<spool::SpoolStatus> {
        None
    }

    /// Commits everything pending and closes. Later calls fail with `Unavailable`.
    async fn close(&self) -> StoreResult<()>;
}
