//! [`NotifyStore`] on PostgreSQL (migration 7): channels, rules and the outbox. Claims use
//! `FOR UPDATE SKIP LOCKED`, so several servers on one database share the outbox without
//! sending a delivery twice within a lease.

use async_trait::async_trait;
use espwatch_core::Timestamp;
use espwatch_store::{
    AttemptResult, ChannelKind, Delivery, DeliveryFilter, DeliveryState, NewChannel, NewDelivery,
    NewRule, NotifyChannel, NotifyRule, NotifyStore, StoreError, StoreResult,
};
use tokio_postgres::Row;

use crate::PostgresStore;
use crate::types::{db_err, get};

const CHANNEL_COLUMNS: &str = "id, name, kind, target, secret, created_by, created_at";
const RULE_COLUMNS: &str = "id, name, channel_id, filter, created_by, created_at";
const DELIVERY_COLUMNS: &str = "id, key, channel_id, rule_id, event, payload, state, attempts, \
                                next_attempt_at, last_error, created_at, updated_at";

fn channel_from_row(r: &Row) -> StoreResult<NotifyChannel> {
    let kind: String = get(r, 2)?;
    Ok(NotifyChannel {
        id: get(r, 0)?,
        name: get(r, 1)?,
        kind: ChannelKind::parse(&kind)
            .ok_or_else(|| StoreError::Internal(format!("unknown channel kind {kind:?}")))?,
        target: get(r, 3)?,
        secret: get(r, 4)?,
        created_by: get(r, 5)?,
        created_at: Timestamp(get(r, 6)?),
    })
}

fn rule_from_row(r: &Row) -> StoreResult<NotifyRule> {
    let filter: String = get(r, 3)?;
    Ok(NotifyRule {
        id: get(r, 0)?,
        name: get(r, 1)?,
        channel_id: get(r, 2)?,
        filter: serde_json::from_str(&filter)
            .map_err(|e| StoreError::Internal(format!("rule filter: {e}")))?,
        created_by: get(r, 4)?,
        created_at: Timestamp(get(r, 5)?),
    })
}

fn delivery_from_row(r: &Row) -> StoreResult<Delivery> {
    let state: String = get(r, 6)?;
    Ok(Delivery {
        id: get(r, 0)?,
        key: get(r, 1)?,
        channel_id: get(r, 2)?,
        rule_id: get(r, 3)?,
        event: get(r, 4)?,
        payload: get(r, 5)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Internal(format!("unknown delivery state {state:?}")))?,
        attempts: get(r, 7)?,
        next_attempt_at: Timestamp(get(r, 8)?),
        last_error: get(r, 9)?,
        created_at: Timestamp(get(r, 10)?),
        updated_at: Timestamp(get(r, 11)?),
    })
}

#[async_trait]
impl NotifyStore for PostgresStore {
    async fn create_channel(&self, c: NewChannel) -> StoreResult<NotifyChannel> {
        let client = self.client("creating a notification channel").await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO notify_channels (name, kind, target, secret, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING
                     RETURNING {CHANNEL_COLUMNS}"
                ),
                &[&c.name, &c.kind.name(), &c.target, &c.secret, &c.created_by, &c.created_at.0],
            )
            .await
            .map_err(|e| db_err("creating a notification channel", e))?;
        match row {
            Some(row) => channel_from_row(&row),
            None => Err(StoreError::Conflict(format!("channel {:?}", c.name))),
        }
    }

    async fn list_channels(&self) -> StoreResult<Vec<NotifyChannel>> {
        let client = self.client("listing notification channels").await?;
        let rows = client
            .query(
                &format!("SELECT {CHANNEL_COLUMNS} FROM notify_channels ORDER BY id"),
                &[],
            )
            .await
            .map_err(|e| db_err("listing notification channels", e))?;
        rows.iter().map(channel_from_row).collect()
    }

    async fn get_channel(&self, id: i64) -> StoreResult<Option<NotifyChannel>> {
        let client = self.client("reading a notification channel").await?;
        let row = client
            .query_opt(
                &format!("SELECT {CHANNEL_COLUMNS} FROM notify_channels WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| db_err("reading a notification channel", e))?;
        row.as_ref().map(channel_from_row).transpose()
    }

    async fn delete_channel(&self, id: i64, at: Timestamp) -> StoreResult<bool> {
        let mut client = self.client("deleting a notification channel").await?;
        let err = |e| db_err("deleting a notification channel", e);
        let tx = client.transaction().await.map_err(err)?;
        // Rules go with the channel (ON DELETE CASCADE).
        let gone = tx
            .execute("DELETE FROM notify_channels WHERE id = $1", &[&id])
            .await
            .map_err(err)?;
        tx.execute(
            "UPDATE notify_outbox SET state = 'dead', last_error = 'channel deleted',
             updated_at = $2 WHERE channel_id = $1 AND state = 'pending'",
            &[&id, &at.0],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(gone > 0)
    }

    async fn create_rule(&self, r: NewRule) -> StoreResult<NotifyRule> {
        let client = self.client("creating a notification rule").await?;
        let filter = r.filter.to_string();
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO notify_rules (name, channel_id, filter, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING
                     RETURNING {RULE_COLUMNS}"
                ),
                &[
                    &r.name,
                    &r.channel_id,
                    &filter,
                    &r.created_by,
                    &r.created_at.0,
                ],
            )
            .await
            .map_err(|e| db_err("creating a notification rule", e))?;
        match row {
            Some(row) => rule_from_row(&row),
            None => Err(StoreError::Conflict(format!("rule {:?}", r.name))),
        }
    }

    async fn list_rules(&self) -> StoreResult<Vec<NotifyRule>> {
        let client = self.client("listing notification rules").await?;
        let rows = client
            .query(
                &format!("SELECT {RULE_COLUMNS} FROM notify_rules ORDER BY id"),
                &[],
            )
            .await
            .map_err(|e| db_err("listing notification rules", e))?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn delete_rule(&self, id: i64) -> StoreResult<bool> {
        let client = self.client("deleting a notification rule").await?;
        let n = client
            .execute("DELETE FROM notify_rules WHERE id = $1", &[&id])
            .await
            .map_err(|e| db_err("deleting a notification rule", e))?;
        Ok(n > 0)
    }

    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> StoreResult<usize> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let mut client = self.client("enqueuing notifications").await?;
        let err = |e| db_err("enqueuing notifications", e);
        let tx = client.transaction().await.map_err(err)?;
        let stmt = tx
            .prepare(
                "INSERT INTO notify_outbox (key, channel_id, rule_id, event, payload, state,
                     attempts, next_attempt_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)
                 ON CONFLICT (key) DO NOTHING",
            )
            .await
            .map_err(err)?;
        let mut added = 0;
        for d in &deliveries {
            added += tx
                .execute(
                    &stmt,
                    &[
                        &d.key,
                        &d.channel_id,
                        &d.rule_id,
                        &d.event,
                        &d.payload,
                        &d.created_at.0,
                    ],
                )
                .await
                .map_err(err)? as usize;
        }
        tx.commit().await.map_err(err)?;
        Ok(added)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let client = self.client("claiming notifications").await?;
        let limit = limit as i64;
        let rows = client
            .query(
                "WITH due AS (
                         SELECT id FROM notify_outbox
                         WHERE state = 'pending' AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, id LIMIT $3
                         FOR UPDATE SKIP LOCKED)
                     UPDATE notify_outbox o SET next_attempt_at = $2 FROM due WHERE o.id = due.id
                     RETURNING o.id, o.key, o.channel_id, o.rule_id, o.event, o.payload, o.state,
                         o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.updated_at",
                &[&now.0, &lease_until.0, &limit],
            )
            .await
            .map_err(|e| db_err("claiming notifications", e))?;
        let mut due = rows
            .iter()
            .map(delivery_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        due.sort_by_key(|d| d.id);
        Ok(due)
    }

    async fn finish_attempt(&self, id: i64, r: AttemptResult) -> StoreResult<()> {
        let client = self.client("recording a notification attempt").await?;
        client
            .execute(
                "UPDATE notify_outbox SET state = $2, attempts = $3, next_attempt_at = $4,
                 last_error = $5, updated_at = $6 WHERE id = $1",
                &[
                    &id,
                    &r.state.name(),
                    &r.attempts,
                    &r.next_attempt_at.0,
                    &r.error,
                    &r.at.0,
                ],
            )
            .await
            .map_err(|e| db_err("recording a notification attempt", e))?;
        Ok(())
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let client = self.client("listing notifications").await?;
        let limit = if filter.limit == 0 {
            1000
        } else {
            filter.limit
        } as i64;
        let state = filter.state.map(|s| s.name().to_owned());
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notify_outbox
                     WHERE ($1::bigint IS NULL OR channel_id = $1) AND ($2::text IS NULL OR state = $2)
                       AND ($4::text IS NULL OR starts_with(key, $4))
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&filter.channel_id, &state, &limit, &filter.key_prefix],
            )
            .await
            .map_err(|e| db_err("listing notifications", e))?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        let client = self.client("reading the next notification due").await?;
        let row = client
            .query_one(
                "SELECT MIN(next_attempt_at) FROM notify_outbox WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(|e| db_err("reading the next notification due", e))?;
        Ok(get::<Option<i64>>(&row, 0)?.map(Timestamp))
    }
}
