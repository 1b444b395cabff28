//! [`NotifyStore`] for the embedded engine: channels, rules and the outbox live in
//! `alarms.sqlite` (WAL, `synchronous=FULL`), next to the alarms they are about, so they are
//! backed up with them and an enqueued delivery is on disk before `enqueue` returns.

use async_trait::async_trait;
use espwatch_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::EmbeddedStore;
use super::alarms::with_conn;
use super::schema::{sql_err, sql_fail};
use crate::notify::{
    AttemptResult, ChannelKind, Delivery, DeliveryFilter, DeliveryState, NewChannel, NewDelivery,
    NewRule, NotifyChannel, NotifyRule, NotifyStore,
};
use crate::{StoreError, StoreResult};

pub(super) fn create_schema(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS notify_channels (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             name TEXT NOT NULL UNIQUE,
             kind TEXT NOT NULL,
             target TEXT NOT NULL,
             secret TEXT,
             created_by TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS notify_rules (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             name TEXT NOT NULL UNIQUE,
             channel_id INTEGER NOT NULL,
             filter TEXT NOT NULL,
             created_by TEXT NOT NULL,
             created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS notify_outbox (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             key TEXT NOT NULL UNIQUE,
             channel_id INTEGER NOT NULL,
             rule_id INTEGER NOT NULL,
             event TEXT NOT NULL,
             payload TEXT NOT NULL,
             state TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0,
             next_attempt_at INTEGER NOT NULL,
             last_error TEXT,
             created_at INTEGER NOT NULL,
             updated_at INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox (state, next_attempt_at);
         CREATE INDEX IF NOT EXISTS notify_outbox_by_channel ON notify_outbox (channel_id, id);",
    )
    .map_err(|e| sql_err("creating notification schema", e))
}

const CHANNEL_COLUMNS: &str = "id, name, kind, target, secret, created_by, created_at";
const RULE_COLUMNS: &str = "id, name, channel_id, filter, created_by, created_at";
const DELIVERY_COLUMNS: &str = "id, key, channel_id, rule_id, event, payload, state, attempts, \
                                next_attempt_at, last_error, created_at, updated_at";

fn row_to_channel(row: &rusqlite::Row<'_>) -> rusqlite::Result<NotifyChannel> {
    let kind: String = row.get(2)?;
    Ok(NotifyChannel {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: ChannelKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown channel kind {kind:?}").into(),
            )
        })?,
        target: row.get(3)?,
        secret: row.get(4)?,
        created_by: row.get(5)?,
        created_at: Timestamp(row.get(6)?),
    })
}

fn row_to_rule(row: &rusqlite::Row<'_>) -> rusqlite::Result<NotifyRule> {
    let filter: String = row.get(3)?;
    Ok(NotifyRule {
        id: row.get(0)?,
        name: row.get(1)?,
        channel_id: row.get(2)?,
        filter: serde_json::from_str(&filter).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?,
        created_by: row.get(4)?,
        created_at: Timestamp(row.get(5)?),
    })
}

fn row_to_delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let state: String = row.get(6)?;
    Ok(Delivery {
        id: row.get(0)?,
        key: row.get(1)?,
        channel_id: row.get(2)?,
        rule_id: row.get(3)?,
        event: row.get(4)?,
        payload: row.get(5)?,
        state: DeliveryState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("unknown delivery state {state:?}").into(),
            )
        })?,
        attempts: row.get(7)?,
        next_attempt_at: Timestamp(row.get(8)?),
        last_error: row.get(9)?,
        created_at: Timestamp(row.get(10)?),
        updated_at: Timestamp(row.get(11)?),
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

fn get_channel(conn: &Connection, id: i64) -> StoreResult<Option<NotifyChannel>> {
    conn.query_row(
        &format!("SELECT {CHANNEL_COLUMNS} FROM notify_channels WHERE id = ?1"),
        params![id],
        row_to_channel,
    )
    .optional()
    .map_err(|e| sql_fail("reading a notification channel", e))
}

#[async_trait]
impl NotifyStore for EmbeddedStore {
    async fn create_channel(&self, c: NewChannel) -> StoreResult<NotifyChannel> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                match conn.execute(
                    "INSERT INTO notify_channels (name, kind, target, secret, created_by, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![c.name, c.kind.name(), c.target, c.secret, c.created_by, c.created_at.0],
                ) {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict(format!("channel {:?}", c.name)));
                    }
                    Err(e) => return Err(sql_err("creating a notification channel", e)),
                }
                let id = conn.last_insert_rowid();
                Ok(get_channel(conn, id)?.expect("just inserted"))
            })
        })
        .await
    }

    async fn list_channels(&self) -> StoreResult<Vec<NotifyChannel>> {
        self.blocking(|inner| {
            with_conn(inner, |conn| {
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT {CHANNEL_COLUMNS} FROM notify_channels ORDER BY id"
                    ))
                    .map_err(|e| sql_fail("listing notification channels", e))?;
                stmt.query_map([], row_to_channel)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| sql_fail("listing notification channels", e))
            })
        })
        .await
    }

    async fn get_channel(&self, id: i64) -> StoreResult<Option<NotifyChannel>> {
        self.blocking(move |inner| with_conn(inner, |conn| get_channel(conn, id)))
            .await
    }

    async fn delete_channel(&self, id: i64, at: Timestamp) -> StoreResult<bool> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let tx = conn
                    .unchecked_transaction()
                    .map_err(|e| sql_err("deleting a notification channel", e))?;
                let gone = tx
                    .execute("DELETE FROM notify_channels WHERE id = ?1", params![id])
                    .map_err(|e| sql_err("deleting a notification channel", e))?;
                tx.execute(
                    "DELETE FROM notify_rules WHERE channel_id = ?1",
                    params![id],
                )
                .map_err(|e| sql_err("deleting a channel's rules", e))?;
                tx.execute(
                    "UPDATE notify_outbox SET state = 'dead', last_error = 'channel deleted',
                     updated_at = ?2 WHERE channel_id = ?1 AND state = 'pending'",
                    params![id, at.0],
                )
                .map_err(|e| sql_err("ending a channel's deliveries", e))?;
                tx.commit()
                    .map_err(|e| sql_err("deleting a notification channel", e))?;
                Ok(gone > 0)
            })
        })
        .await
    }

    async fn create_rule(&self, r: NewRule) -> StoreResult<NotifyRule> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                if get_channel(conn, r.channel_id)?.is_none() {
                    return Err(StoreError::Internal(format!(
                        "no notification channel {}",
                        r.channel_id
                    )));
                }
                match conn.execute(
                    "INSERT INTO notify_rules (name, channel_id, filter, created_by, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        r.name,
                        r.channel_id,
                        r.filter.to_string(),
                        r.created_by,
                        r.created_at.0
                    ],
                ) {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict(format!("rule {:?}", r.name)));
                    }
                    Err(e) => return Err(sql_err("creating a notification rule", e)),
                }
                let id = conn.last_insert_rowid();
                conn.query_row(
                    &format!("SELECT {RULE_COLUMNS} FROM notify_rules WHERE id = ?1"),
                    params![id],
                    row_to_rule,
                )
                .map_err(|e| sql_fail("reading a notification rule", e))
            })
        })
        .await
    }

    async fn list_rules(&self) -> StoreResult<Vec<NotifyRule>> {
        self.blocking(|inner| {
            with_conn(inner, |conn| {
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT {RULE_COLUMNS} FROM notify_rules ORDER BY id"
                    ))
                    .map_err(|e| sql_fail("listing notification rules", e))?;
                stmt.query_map([], row_to_rule)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| sql_fail("listing notification rules", e))
            })
        })
        .await
    }

    async fn delete_rule(&self, id: i64) -> StoreResult<bool> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                conn.execute("DELETE FROM notify_rules WHERE id = ?1", params![id])
                    .map(|n| n > 0)
                    .map_err(|e| sql_err("deleting a notification rule", e))
            })
        })
        .await
    }

    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> StoreResult<usize> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let tx = conn
                    .unchecked_transaction()
                    .map_err(|e| sql_err("enqueuing notifications", e))?;
                let mut added = 0;
                {
                    let mut stmt = tx
                        .prepare(
                            "INSERT INTO notify_outbox (key, channel_id, rule_id, event, payload,
                                 state, attempts, next_attempt_at, created_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)
                             ON CONFLICT (key) DO NOTHING",
                        )
                        .map_err(|e| sql_err("enqueuing notifications", e))?;
                    for d in &deliveries {
                        added += stmt
                            .execute(params![
                                d.key,
                                d.channel_id,
                                d.rule_id,
                                d.event,
                                d.payload,
                                d.created_at.0
                            ])
                            .map_err(|e| sql_err("enqueuing notifications", e))?;
                    }
                }
                tx.commit()
                    .map_err(|e| sql_err("enqueuing notifications", e))?;
                Ok(added)
            })
        })
        .await
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let tx = conn
                    .unchecked_transaction()
                    .map_err(|e| sql_err("claiming notifications", e))?;
                let due = {
                    let mut stmt = tx
                        .prepare(&format!(
                            "SELECT {DELIVERY_COLUMNS} FROM notify_outbox
                             WHERE state = 'pending' AND next_attempt_at <= ?1
                             ORDER BY next_attempt_at, id LIMIT ?2"
                        ))
                        .map_err(|e| sql_err("claiming notifications", e))?;
                    stmt.query_map(params![now.0, limit as i64], row_to_delivery)
                        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| sql_err("claiming notifications", e))?
                };
                for d in &due {
                    tx.execute(
                        "UPDATE notify_outbox SET next_attempt_at = ?2 WHERE id = ?1",
                        params![d.id, lease_until.0],
                    )
                    .map_err(|e| sql_err("claiming notifications", e))?;
                }
                tx.commit()
                    .map_err(|e| sql_err("claiming notifications", e))?;
                Ok(due)
            })
        })
        .await
    }

    async fn finish_attempt(&self, id: i64, r: AttemptResult) -> StoreResult<()> {
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                conn.execute(
                    "UPDATE notify_outbox SET state = ?2, attempts = ?3, next_attempt_at = ?4,
                     last_error = ?5, updated_at = ?6 WHERE id = ?1",
                    params![
                        id,
                        r.state.name(),
                        r.attempts,
                        r.next_attempt_at.0,
                        r.error,
                        r.at.0
                    ],
                )
                .map_err(|e| sql_err("recording a notification attempt", e))?;
                Ok(())
            })
        })
        .await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let filter = filter.clone();
        self.blocking(move |inner| {
            with_conn(inner, |conn| {
                let limit = if filter.limit == 0 {
                    1000
                } else {
                    filter.limit
                };
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT {DELIVERY_COLUMNS} FROM notify_outbox
                         WHERE (?1 IS NULL OR channel_id = ?1) AND (?2 IS NULL OR state = ?2)
                           AND (?4 IS NULL OR substr(key, 1, length(?4)) = ?4)
                         ORDER BY id DESC LIMIT ?3"
                    ))
                    .map_err(|e| sql_fail("listing notifications", e))?;
                stmt.query_map(
                    params![
                        filter.channel_id,
                        filter.state.map(DeliveryState::name),
                        limit as i64,
                        filter.key_prefix
                    ],
                    row_to_delivery,
                )
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql_fail("listing notifications", e))
            })
        })
        .await
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.blocking(|inner| {
            with_conn(inner, |conn| {
                conn.query_row(
                    "SELECT MIN(next_attempt_at) FROM notify_outbox WHERE state = 'pending'",
                    [],
                    |row| row.get::<_, Option<i64>>(0),
                )
                .map(|t| t.map(Timestamp))
                .map_err(|e| sql_err("reading the next notification due", e))
            })
        })
        .await
    }
}
