//! [`AlarmStore`] on PostgreSQL: the same lifecycle as the embedded store, with the
//! one-open-alarm-per-well-and-condition rule enforced by a partial unique index.

use async_trait::async_trait;
use espwatch_core::diagnostics::Diagnosis;
use espwatch_core::{Timestamp, WellId};
use espwatch_store::{
    AckOutcome, Alarm, AlarmFilter, AlarmKey, AlarmState, AlarmStore, NewAlarm, StoreError,
    StoreResult, TransientMark, WellDirectives,
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

const DIRECTIVE_COLUMNS: &str =
    "well_id, revision, retrain_from, retrain_until, transient_marked_at, transient_until";

fn directives_from_row(r: &Row) -> StoreResult<WellDirectives> {
    let pair = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| (Timestamp(a), Timestamp(b)));
    Ok(WellDirectives {
        well_id: {
            let text: String = get(r, 0)?;
            WellId::parse(&text)
                .map_err(|e| StoreError::Internal(format!("well directives of {text:?}: {e}")))?
        },
        revision: get(r, 1)?,
        retrain: pair(get(r, 2)?, get(r, 3)?),
        transient: pair(get(r, 4)?, get(r, 5)?)
            .map(|(marked_at, until)| TransientMark { marked_at, until }),
    })
}

#[async_trait]
impl AlarmStore for PostgresStore {
    async fn record_retrain(
        &self,
        well_id: &WellId,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<WellDirectives> {
        let client = self.client("recording a retrain").await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO well_directives (well_id, revision, retrain_from, retrain_until)
                     VALUES ($1, nextval('well_directives_revision'), $2, $3)
                     ON CONFLICT (well_id) DO UPDATE SET revision = EXCLUDED.revision,
                         retrain_from = EXCLUDED.retrain_from,
                         retrain_until = EXCLUDED.retrain_until
                     RETURNING {DIRECTIVE_COLUMNS}"
                ),
                &[&well_id.as_str(), &from.0, &until.0],
            )
            .await
            .map_err(|e| db_err("recording a retrain", e))?;
        directives_from_row(&row)
    }

    async fn record_transient(
        &self,
        well_id: &WellId,
        mark: TransientMark,
    ) -> StoreResult<WellDirectives> {
        let client = self.client("recording a transient").await?;
        // Merged as `TransientMark::merged`: a mark still in force when the next is made
        // keeps its start and extends to the later end.
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO well_directives AS d
                         (well_id, revision, transient_marked_at, transient_until)
                     VALUES ($1, nextval('well_directives_revision'), $2, $3)
                     ON CONFLICT (well_id) DO UPDATE SET revision = EXCLUDED.revision,
                         transient_marked_at = CASE WHEN d.transient_until > EXCLUDED.transient_marked_at
                             THEN LEAST(d.transient_marked_at, EXCLUDED.transient_marked_at)
                             ELSE EXCLUDED.transient_marked_at END,
                         transient_until = CASE WHEN d.transient_until > EXCLUDED.transient_marked_at
                             THEN GREATEST(d.transient_until, EXCLUDED.transient_until)
                             ELSE EXCLUDED.transient_until END
                     RETURNING {DIRECTIVE_COLUMNS}"
                ),
                &[&well_id.as_str(), &mark.marked_at.0, &mark.until.0],
            )
            .await
            .map_err(|e| db_err("recording a transient", e))?;
        directives_from_row(&row)
    }

    async fn well_directives(&self, well_id: &WellId) -> StoreResult<Option<WellDirectives>> {
        let client = self.client("reading well directives").await?;
        let row = client
            .query_opt(
                &format!("SELECT {DIRECTIVE_COLUMNS} FROM well_directives WHERE well_id = $1"),
                &[&well_id.as_str()],
            )
            .await
            .map_err(|e| db_err("reading well directives", e))?;
        row.as_ref().map(directives_from_row).transpose()
    }

    async fn directives_after(
        &self,
        revision: i64,
        limit: usize,
    ) -> StoreResult<Vec<WellDirectives>> {
        let client = self.client("listing well directives").await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT {DIRECTIVE_COLUMNS} FROM well_directives WHERE revision > $1
                     ORDER BY revision LIMIT $2"
                ),
                &[&revision, &limit],
            )
            .await
            .map_err(|e| db_err("listing well directives", e))?;
        rows.iter().map(directives_from_row).collect()
    }

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
