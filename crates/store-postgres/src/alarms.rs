//! [`AlarmStore`] on PostgreSQL: the same lifecycle as the embedded store, with the
//! one-open-alarm-per-well-and-condition rule enforced by a partial unique index.

use async_trait::async_trait;
use espwatch_core::diagnostics::Diagnosis;
use espwatch_core::{Timestamp, WellId};
use espwatch_store::{
    AckOutcome, Alarm, AlarmFilter, AlarmKey, AlarmState, AlarmStore, NewAlarm, StoreError,
    StoreResult,
};
use tokio_postgres::Row;

use crate::PostgresStore;
use crate::types::{db_err, get};

const COLUMNS: &str = "id, well_id, condition, severity, state, confidence, started_at, ended_at, \
                       acknowledged_by, acknowledged_at, comment, detail";

/// Text column `i` parsed by `parse`; a value it refuses is an internal error naming it.
fn parsed<T, E: std::fmt::Display>(
    r: &Row,
    i: usize,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let text: String = get(r, i)?;
    parse(&text).map_err(|e| StoreError::Internal(format!("alarm column {i} ({text:?}): {e}")))
}

fn alarm_from_row(r: &Row) -> StoreResult<Alarm> {
    let detail: String = get(r, 11)?;
    Ok(Alarm {
        id: get(r, 0)?,
        well_id: parsed(r, 1, WellId::parse)?,
        condition: parsed(r, 2, str::parse)?,
        severity: parsed(r, 3, str::parse)?,
        state: parsed(r, 4, |s| AlarmState::parse(s).ok_or("unknown alarm state"))?,
        confidence: get(r, 5)?,
        started_at: Timestamp(get(r, 6)?),
        ended_at: get::<Option<i64>>(r, 7)?.map(Timestamp),
        acknowledged_by: get(r, 8)?,
        acknowledged_at: get::<Option<i64>>(r, 9)?.map(Timestamp),
        comment: get(r, 10)?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Internal(format!("alarm detail: {e}")))?,
    })
}

#[async_trait]
impl AlarmStore for PostgresStore {
    async fn raise_alarm(&self, alarm: NewAlarm) -> StoreResult<(Alarm, bool)> {
        let client = self.client("raising an alarm").await?;
        let detail = alarm.detail.to_string();
        let (well, condition) = (alarm.well_id.as_str(), alarm.condition.name());
        // Insert unless an open alarm exists; the partial unique index makes the race safe.
        let inserted = client
            .query_opt(
                &format!(
                    "INSERT INTO alarms (well_id, condition, severity, state, confidence, started_at, detail)
                     VALUES ($1, $2, $3, 'raised', $4, $5, $6)
                     ON CONFLICT (well_id, condition) WHERE state <> 'cleared' DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                &[&well, &condition, &alarm.severity.name(), &alarm.confidence, &alarm.started_at.0, &detail],
            )
            .await
            .map_err(|e| db_err("raising an alarm", e))?;
        if let Some(row) = inserted {
            return Ok((alarm_from_row(&row)?, true));
        }
        let row = client
            .query_one(
                &format!(
                    "UPDATE alarms SET confidence = GREATEST(confidence, $3)
                     WHERE well_id = $1 AND condition = $2 AND state <> 'cleared'
                     RETURNING {COLUMNS}"
                ),
                &[&well, &condition, &alarm.confidence],
            )
            .await
            .map_err(|e| db_err("updating an open alarm", e))?;
        Ok((alarm_from_row(&row)?, false))
    }

    async fn clear_alarm(
        &self,
        well_id: &WellId,
        condition: Diagnosis,
        ended_at: Timestamp,
    ) -> StoreResult<Option<Alarm>> {
        let client = self.client("clearing an alarm").await?;
        let (well_id, condition) = (well_id.as_str(), condition.name());
        let row = client
            .query_opt(
                &format!(
                    "UPDATE alarms SET state = 'cleared', ended_at = $3
                     WHERE well_id = $1 AND condition = $2 AND state <> 'cleared'
                     RETURNING {COLUMNS}"
                ),
                &[&well_id, &condition, &ended_at.0],
            )
            .await
            .map_err(|e| db_err("clearing an alarm", e))?;
        row.as_ref().map(alarm_from_row).transpose()
    }

    async fn acknowledge_alarm(
        &self,
        id: i64,
        by: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<AckOutcome> {
        let client = self.client("acknowledging an alarm").await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE alarms SET state = 'acknowledged', acknowledged_by = $2,
                            acknowledged_at = $3, comment = $4
                     WHERE id = $1 AND state = 'raised'
                     RETURNING {COLUMNS}"
                ),
                &[&id, &by, &at.0, &comment],
            )
            .await
            .map_err(|e| db_err("acknowledging an alarm", e))?;
        if let Some(row) = row {
            return Ok(AckOutcome::Acknowledged(alarm_from_row(&row)?));
        }
        let existing = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM alarms WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| db_err("reading an alarm", e))?;
        Ok(match existing {
            Some(row) => {
                let alarm = alarm_from_row(&row)?;
                if alarm.state == espwatch_store::AlarmState::Acknowledged {
                    AckOutcome::AlreadyAcknowledged(alarm)
                } else {
                    AckOutcome::AlreadyCleared(alarm)
                }
            }
            None => AckOutcome::NotFound,
        })
    }

    async fn get_alarm(&self, id: i64) -> StoreResult<Option<Alarm>> {
        let client = self.client("reading an alarm").await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM alarms WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| db_err("reading an alarm", e))?;
        row.as_ref().map(alarm_from_row).transpose()
    }

    async fn list_alarms_page(
        &self,
        filter: &AlarmFilter,
        after: Option<AlarmKey>,
        limit: usize,
    ) -> StoreResult<Vec<Alarm>> {
        let client = self.client("listing alarms").await?;
        let state = filter.state.map(|s| s.name().to_owned());
        let well_id = filter.well_id.as_ref().map(WellId::as_str);
        let after_started = after.map(|k| k.started_at.0);
        let after_id = after.map(|k| k.id);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let from = filter.from.map(|t| t.0);
        let to = filter.to.map(|t| t.0);
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM alarms
                     WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR well_id = $2)
                       AND (NOT $3 OR state <> 'cleared')
                       AND ($4::bigint IS NULL OR (started_at, id) < ($4, $5::bigint))
                       AND ($7::bigint IS NULL OR ended_at IS NULL OR ended_at >= $7)
                       AND ($8::bigint IS NULL OR started_at <= $8)
                     ORDER BY started_at DESC, id DESC LIMIT $6"
                ),
                &[
                    &state,
                    &well_id,
                    &filter.open,
                    &after_started,
                    &after_id,
                    &limit,
                    &from,
                    &to,
                ],
            )
            .await
            .map_err(|e| db_err("listing alarms", e))?;
        rows.iter().map(alarm_from_row).collect()
    }

    fn notify_store(
        self: std::sync::Arc<Self>,
    ) -> Option<std::sync::Arc<dyn espwatch_store::NotifyStore>> {
        Some(self)
    }
}
