//! [`AlarmStore`] for the embedded engine: a small SQLite database of its own (`alarms.sqlite`
//! in the data directory), so alarm writes never queue behind telemetry group commits.

use async_trait::async_trait;
use espwatch_core::diagnostics::Diagnosis;
use espwatch_core::{Timestamp, WellId};
use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{sql_err, sql_fail};
use super::{EmbeddedStore, Inner, lock};
use crate::StoreResult;
use crate::alarms::{
    AckOutcome, Alarm, AlarmFilter, AlarmKey, AlarmState, AlarmStore, NewAlarm, TransientMark,
    WellDirectives,
};

pub(super) const FILE: &str = "alarms.sqlite";
const COLUMNS: &str = "id, well_id, condition, severity, state, confidence, started_at, ended_at, \
                       acknowledged_by, acknowledged_at, comment, detail";

fn open(inner: &Inner) -> StoreResult<Connection> {
    let path = inner.dir.join(FILE);
    super::files::private_file(&path)?;
    let conn = Connection::open(path).map_err(|e| sql_err("opening alarms", e))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS alarms (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             well_id TEXT NOT NULL,
             condition TEXT NOT NULL,
             severity TEXT NOT NULL,
             state TEXT NOT NULL,
             confidence REAL NOT NULL,
             started_at INTEGER NOT NULL,
             ended_at INTEGER,
             acknowledged_by TEXT,
             acknowledged_at INTEGER,
             comment TEXT,
             detail TEXT NOT NULL
         );
         CREATE UNIQUE INDEX IF NOT EXISTS alarms_one_open
             ON alarms (well_id, condition) WHERE state != 'cleared';
         CREATE INDEX IF NOT EXISTS alarms_by_well ON alarms (well_id, started_at);
         CREATE TABLE IF NOT EXISTS well_directives (
             well_id TEXT PRIMARY KEY,
             revision INTEGER NOT NULL,
             retrain_from INTEGER,
             retrain_until INTEGER,
             transient_marked_at INTEGER,
             transient_until INTEGER
         );
         CREATE INDEX IF NOT EXISTS well_directives_by_revision ON well_directives (revision);
         CREATE INDEX IF NOT EXISTS alarms_by_start ON alarms (started_at, id);",
    )
    .map_err(|e| sql_err("creating alarms schema", e))?;
    super::notify::create_schema(&conn)?;
    Ok(conn)
}

pub(super) fn with_conn<T>(
    inner: &Inner,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut guard = lock(&inner.alarms);
    if guard.is_none() {
        *guard = Some(open(inner)?);
    }
    f(guard.as_ref().expect("opened"))
}

/// Column `idx` of `row` parsed by `parse`; a value it refuses is a conversion error that names
/// the column, never a default (a row the code cannot represent is not an alarm to act on).
fn parsed<T, E: std::fmt::Display>(
    row: &rusqlite::Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("alarm column {idx} ({text:?}): {e}").into(),
        )
    })
}

fn row_to_alarm(row: &rusqlite::Row<'_>) -> rusqlite::Result<Alarm> {
    let detail: String = row.get(11)?;
    Ok(Alarm {
        id: row.get(0)?,
        well_id: parsed(row, 1, WellId::parse)?,
        condition: parsed(row, 2, str::parse)?,
        severity: parsed(row, 3, str::parse)?,
        state: parsed(row, 4, |s| {
            AlarmState::parse(s).ok_or("unknown alarm state")
        })?,
        confidence: row.get(5)?,
        started_at: Timestamp(row.get(6)?),
        ended_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
        acknowledged_by: row.get(8)?,
        acknowledged_at: row.get::<_, Option<i64>>(9)?.map(Timestamp),
        comment: row.get(10)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

fn get(conn: &Connection, id: i64) -> StoreResult<Option<Alarm>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM alarms WHERE id = ?1"),
        params![id],
        row_to_alarm,
    )
    .optional()
    .map_err(|e| sql_fail("reading alarm", e))
}

fn open_alarm(
    conn: &Connection,
    well: &WellId,
    condition: Diagnosis,
) -> StoreResult<Option<Alarm>> {
    conn.query_row(
        &format!(
            "SELECT {COLUMNS} FROM alarms WHERE well_id = ?1 AND condition = ?2 AND state != 'cleared'"
        ),
        params![well.as_str(), condition.name()],
        row_to_alarm,
    )
    .optional()
    .map_err(|e| sql_fail("reading open alarm", e))
}

const DIRECTIVE_COLUMNS: &str =
    "well_id, revision, retrain_from, retrain_until, transient_marked_at, transient_until";

fn row_to_directives(row: &rusqlite::Row<'_>) -> rusqlite::Result<WellDirectives> {
    let pair = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| (Timestamp(a), Timestamp(b)));
    Ok(WellDirectives {
        well_id: parsed(row, 0, WellId::parse)?,
        revision: row.get(1)?,
        retrain: pair(row.get(2)?, row.get(3)?),
        transient: pair(row.get(4)?, row.get(5)?)
            .map(|(marked_at, until)| TransientMark { marked_at, until }),
    })
}

fn directives_of(conn: &Connection, well: &WellId) -> StoreResult<Option<WellDirectives>> {
    conn.query_row(
        &format!("SELECT {DIRECTIVE_COLUMNS} FROM well_directives WHERE well_id = ?1"),
        params![well.as_str()],
        row_to_directives,
    )
    .optional()
    .map_err(|e| sql_fail("reading well directives", e))
}

/// Writes `change` over the well's directives (one writer: the connection is behind a lock)
/// with the next revision.
fn write_directives(
    conn: &Connection,
    well: &WellId,
    change: impl FnOnce(&mut WellDirectives),
) -> StoreResult<WellDirectives> {
    let revision: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(revision), 0) + 1 FROM well_directives",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_err("numbering well directives", e))?;
    let mut d = directives_of(conn, well)?.unwrap_or(WellDirectives {
        well_id: well.clone(),
        revision,
        retrain: None,
        transient: None,
    });
    d.revision = revision;
    change(&mut d);
    conn.execute(
        "INSERT OR REPLACE INTO well_directives
             (well_id, revision, retrain_from, retrain_until, transient_marked_at, transient_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            well.as_str(),
            d.revision,
            d.retrain.map(|r| r.0.0),
            d.retrain.map(|r| r.1.0),
            d.transient.map(|t| t.marked_at.0),
            d.transient.map(|t| t.until.0),
        ],
    )
    .map_err(|e| sql_err("writing well directives", e))?;
    Ok(d)
}

#[async_trait]
impl AlarmStore for EmbeddedStore {
    async fn record_retrain(
        &self,
        well_id: &WellId,
        from: Timestamp,
        until: Timestamp,
    ) -> StoreResult<WellDirectives> {
        let well = well_id.clone();
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                write_directives(conn, &well, |d| d.retrain = Some((from, until)))
            })
        })
        .await
    }

    async fn record_transient(
        &self,
        well_id: &WellId,
        mark: TransientMark,
    ) -> StoreResult<WellDirectives> {
        let well = well_id.clone();
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                write_directives(conn, &well, |d| {
                    d.transient = Some(d.transient.map_or(mark, |t| t.merged(mark)));
                })
            })
        })
        .await
    }

    async fn well_directives(&self, well_id: &WellId) -> StoreResult<Option<WellDirectives>> {
        let well = well_id.clone();
        self.blocking(move |inner| with_conn(inner, |conn| directives_of(conn, &well)))
            .await
    }

    async fn directives_after(
        &self,
        revision: i64,
        limit: usize,
    ) -> StoreResult<Vec<WellDirectives>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {DIRECTIVE_COLUMNS} FROM well_directives WHERE revision > ?1
                         ORDER BY revision LIMIT ?2"
                    ))
                    .map_err(|e| sql_fail("listing well directives", e))?;
                let rows = stmt
                    .query_map(params![revision, limit], row_to_directives)
                    .map_err(|e| sql_fail("listing well directives", e))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| sql_fail("listing well directives", e))
            })
        })
        .await
    }

    async fn raise_alarm(&self, a: NewAlarm) -> StoreResult<(Alarm, bool)> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                if let Some(open) = open_alarm(conn, &a.well_id, a.condition)? {
                    conn.execute(
                        "UPDATE alarms SET confidence = MAX(confidence, ?1) WHERE id = ?2",
                        params![a.confidence, open.id],
                    )
                    .map_err(|e| sql_err("updating alarm", e))?;
                    return Ok((get(conn, open.id)?.unwrap_or(open), false));
                }
                conn.execute(
                    "INSERT INTO alarms (well_id, condition, severity, state, confidence, started_at, detail)
                     VALUES (?1, ?2, ?3, 'raised', ?4, ?5, ?6)",
                    params![
                        a.well_id.as_str(),
                        a.condition.name(),
                        a.severity.name(),
                        a.confidence,
                        a.started_at.0,
                        a.detail.to_string()
                    ],
                )
                .map_err(|e| sql_err("inserting alarm", e))?;
                let id = conn.last_insert_rowid();
                Ok((get(conn, id)?.expect("just inserted"), true))
            })
        })
        .await
    }

    async fn clear_alarm(
        &self,
        well_id: &WellId,
        condition: Diagnosis,
        ended_at: Timestamp,
    ) -> StoreResult<Option<Alarm>> {
        let well = well_id.clone();
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let Some(open) = open_alarm(conn, &well, condition)? else {
                    return Ok(None);
                };
                conn.execute(
                    "UPDATE alarms SET state = 'cleared', ended_at = ?1 WHERE id = ?2",
                    params![ended_at.0, open.id],
                )
                .map_err(|e| sql_err("clearing alarm", e))?;
                get(conn, open.id)
            })
        })
        .await
    }

    async fn acknowledge_alarm(
        &self,
        id: i64,
        by: &str,
        comment: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<AckOutcome> {
        let (by, comment) = (by.to_owned(), comment.map(str::to_owned));
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let Some(alarm) = get(conn, id)? else {
                    return Ok(AckOutcome::NotFound);
                };
                match alarm.state {
                    AlarmState::Cleared => return Ok(AckOutcome::AlreadyCleared(alarm)),
                    AlarmState::Acknowledged => return Ok(AckOutcome::AlreadyAcknowledged(alarm)),
                    AlarmState::Raised => {}
                }
                conn.execute(
                    "UPDATE alarms SET state = 'acknowledged', acknowledged_by = ?1,
                     acknowledged_at = ?2, comment = ?3 WHERE id = ?4",
                    params![by, at.0, comment, id],
                )
                .map_err(|e| sql_err("acknowledging alarm", e))?;
                Ok(AckOutcome::Acknowledged(get(conn, id)?.expect("exists")))
            })
        })
        .await
    }

    async fn get_alarm(&self, id: i64) -> StoreResult<Option<Alarm>> {
        self.blocking(move |inner| with_conn(inner, |conn| get(conn, id)))
            .await
    }

    async fn list_alarms_page(
        &self,
        filter: &AlarmFilter,
        after: Option<AlarmKey>,
        limit: usize,
    ) -> StoreResult<Vec<Alarm>> {
        let filter = filter.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM alarms
                         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR well_id = ?2)
                           AND (?3 = 0 OR state != 'cleared')
                           AND (?4 IS NULL OR started_at < ?4 OR (started_at = ?4 AND id < ?5))
                           AND (?7 IS NULL OR ended_at IS NULL OR ended_at >= ?7)
                           AND (?8 IS NULL OR started_at <= ?8)
                         ORDER BY started_at DESC, id DESC LIMIT ?6"
                    ))
                    .map_err(|e| sql_fail("listing alarms", e))?;
                let rows = stmt
                    .query_map(
                        params![
                            filter.state.map(AlarmState::name),
                            filter.well_id.as_ref().map(WellId::as_str),
                            filter.open,
                            after.map(|k| k.started_at.0),
                            after.map(|k| k.id),
                            limit,
                            filter.from.map(|t| t.0),
                            filter.to.map(|t| t.0),
                        ],
                        row_to_alarm,
                    )
                    .map_err(|e| sql_fail("listing alarms", e))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| sql_fail("listing alarms", e))
            })
        })
        .await
    }

    fn notify_store(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn crate::NotifyStore>> {
        Some(self)
    }
}
