//! Alarm persistence, behind its own trait so backends can add it independently of [`Store`]
//! (crate::Store).
//!
//! Lifecycle: `raised` → `acknowledged` (by whom, with a comment) → `cleared`; a raised alarm
//! may also clear without acknowledgement. At most one open (not cleared) alarm exists per well
//! and condition: raising again updates it instead of creating another (no storms).

use async_trait::async_trait;
use espwatch_core::diagnostics::{Diagnosis, Severity};
use espwatch_core::{Timestamp, WellId};
use serde::{Deserialize, Serialize};

use crate::StoreResult;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Raised,
    Acknowledged,
    Cleared,
}

impl AlarmState {
    pub fn name(self) -> &'static str {
        match self {
            AlarmState::Raised => "raised",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Cleared => "cleared",
        }
    }
    pub fn parse(s: &str) -> Option<AlarmState> {
        match s {
            "raised" => Some(AlarmState::Raised),
            "acknowledged" => Some(AlarmState::Acknowledged),
            "cleared" => Some(AlarmState::Cleared),
            _ => None,
        }
    }
}

/// A stored alarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: i64,
    pub well_id: WellId,
    /// One of the twelve conditions, or `anomaly`.
    pub condition: Diagnosis,
    pub severity: Severity,
    pub state: AlarmState,
    /// Highest confidence seen.
    pub confidence: f64,
    /// Data time the condition started.
    pub started_at: Timestamp,
    /// Data time the condition ended (set when cleared).
    pub ended_at: Option<Timestamp>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<Timestamp>,
    pub comment: Option<String>,
    /// Evidence and recommended action at raise time (JSON).
    pub detail: serde_json::Value,
}

/// What the diagnostics raise.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlarm {
    pub well_id: WellId,
    pub condition: Diagnosis,
    pub severity: Severity,
    pub confidence: f64,
    pub started_at: Timestamp,
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlarmFilter {
    pub state: Option<AlarmState>,
    /// Only alarms still open (raised or acknowledged, not cleared).
    pub open: bool,
    pub well_id: Option<WellId>,
    /// Only alarms still active at or after this time (open, or cleared at or after it).
    pub from: Option<Timestamp>,
    /// Only alarms started at or before this time.
    pub to: Option<Timestamp>,
}

/// Most alarms [`AlarmStore::list_alarms`] returns (the newest); a longer list is read in
/// pages ([`AlarmStore::list_alarms_page`]).
pub const ALARM_LIST_CAP: usize = 10_000;

/// An alarm's place in the list order, newest first: `started_at` descending, then `id`
/// descending (ids are unique, so the order is total and stable). A page continues strictly
/// after a key (keyset paging: alarms raised or cleared meanwhile neither shift nor repeat the
/// pages already read).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AlarmKey {
    pub started_at: Timestamp,
    pub id: i64,
}

impl AlarmKey {
    pub fn of(alarm: &Alarm) -> AlarmKey {
        AlarmKey {
            started_at: alarm.started_at,
            id: alarm.id,
        }
    }
}

/// Why an acknowledgement failed.
#[derive(Clone, Debug, PartialEq)]
pub enum AckOutcome {
    Acknowledged(Alarm),
    NotFound,
    /// Already cleared: nothing left to acknowledge.
    AlreadyCleared(Alarm),
    /// Acknowledged before: the first acknowledgement (who, when, comment) is kept.
    AlreadyAcknowledged(Alarm),
}

/// What operators told a well's diagnostics through the API, kept beside its alarms so that it
/// outlives the node that was told: whichever node diagnoses the well (after a restart or an
/// ownership move too) rebuilds its engine with it. One row per well, the latest of each kind.
#[derive(Clone, Debug, PartialEq)]
pub struct WellDirectives {
    pub well_id: WellId,
    /// Bumped by every change, increasing across the store (a node that missed a change
    /// reads those above the last it saw).
    pub revision: i64,
    /// The healthy baseline window `[from, until)` of the latest retrain.
    pub retrain: Option<(Timestamp, Timestamp)>,
    /// The marked transient in force: from when it was marked (wall clock) until `until`
    /// (data time; the engine's grace ends there). Marks that overlap are merged.
    pub transient: Option<TransientMark>,
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub struct TransientMark {
    pub marked_at: Timestamp,
    pub until: Timestamp,
}

impl TransientMark {
    /// `self` followed by `next`: one mark from the first's start when the first was still in
    /// force when the next was made, else the next alone.
    pub fn merged(self, next: TransientMark) -> TransientMark {
        if self.until > next.marked_at {
            TransientMark {
                marked_at: self.marked_at.min(next.marked_at),
                until: self.until.max(next.until),
            }
        } else {
            next
        }
    }
}

#[async_trait]
pub trait AlarmStore: Send + Sync + 'static {
    /// Raises an alarm, or updates the open one of the same well and condition (its
    /// confidence becomes the higher of the two). Returns the alarm and whether it is new.
    async fn raise_alarm(&self, alarm: NewAlarm) -> StoreResult<(Alarm, bool)>;
    /// Clears the open alarm of a well and condition, if any.
    async fn clear_alarm(
        &self,
        well_id: &WellId,
        condition: Diagnosis,
        ended_at: Timestamp,
    ) -> StoreResult<Option<Alarm>>;
    async fn acknowledge_alarm(
        &self,
        id: i64,
        by: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<AckOutcome>;
    async fn get_alarm(&self, id: i64) -> StoreResult<Option<Alarm>>;
    /// Alarms matching the filter, newest first (the order of [`AlarmKey`]), at most
    /// [`ALARM_LIST_CAP`].
    async fn list_alarms(&self, filter: &AlarmFilter) -> StoreResult<Vec<Alarm>> {
        self.list_alarms_page(filter, None, ALARM_LIST_CAP).await
    }
    /// Up to `limit` alarms matching the filter, newest first (the order of [`AlarmKey`]),
    /// starting strictly after `after` when given.
    async fn list_alarms_page(
        &self,
        filter: &AlarmFilter,
        after: Option<AlarmKey>,
        limit: usize,
    ) -> StoreResult<Vec<Alarm>>;

    /// Records the baseline window of a retrain of `well` (replacing the one before).
    async fn record_retrain(
        &self,
        well_id: &WellId,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<WellDirectives>;
    /// Records a transient mark of `well` (merged with the one in force, see
    /// [`TransientMark::merged`]).
    async fn record_transient(
        &self,
        well_id: &WellId,
        mark: TransientMark,
    ) -> StoreResult<WellDirectives>;
    /// The well's directives, if any were ever recorded.
    async fn well_directives(&self, well_id: &WellId) -> StoreResult<Option<WellDirectives>>;
    /// Directives changed after `revision` (revision order, at most `limit`).
    async fn directives_after(
        &self,
        revision: i64,
        limit: usize,
    ) -> StoreResult<Vec<WellDirectives>>;

    /// The notification rules, channels and outbox kept next to these alarms, when the backend
    /// has them (both backends do).
    fn notify_store(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn crate::NotifyStore>> {
        None
    }
}
