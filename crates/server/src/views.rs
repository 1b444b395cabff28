//! API representations shared by several route files.

use espwatch_core::diagnostics::{Diagnosis, Severity};
use espwatch_core::{Timestamp, WellId};
use espwatch_store::Alarm;
use serde::Serialize;
use utoipa::ToSchema;

/// An alarm as the API shows it (times RFC 3339).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmView {
    id: i64,
    #[schema(value_type = String)]
    well_id: WellId,
    /// A condition name, or `anomaly`.
    #[schema(value_type = String)]
    condition: Diagnosis,
    /// `critical`, `major` or `minor`.
    #[schema(value_type = String)]
    severity: Severity,
    /// `raised`, `acknowledged` or `cleared`.
    state: String,
    confidence: f64,
    started_at: String,
    ended_at: Option<String>,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    comment: Option<String>,
    /// Evidence and the recommended action at raise time.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

impl From<Alarm> for AlarmView {
    fn from(a: Alarm) -> Self {
        AlarmView {
            id: a.id,
            well_id: a.well_id,
            condition: a.condition,
            severity: a.severity,
            state: a.state.name().to_owned(),
            confidence: a.confidence,
            started_at: a.started_at.to_rfc3339(),
            ended_at: a.ended_at.map(Timestamp::to_rfc3339),
            acknowledged_by: a.acknowledged_by,
            acknowledged_at: a.acknowledged_at.map(Timestamp::to_rfc3339),
            comment: a.comment,
            detail: a.detail,
        }
    }
}

/// A page of alarms, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmList {
    pub alarms: Vec<AlarmView>,
    /// Where the next (older) page starts: pass it as `cursor` with the same filters. `null`
    /// when this page is the last.
    pub next_cursor: Option<String>,
}
