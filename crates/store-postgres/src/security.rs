//! [`SecurityStore`] on PostgreSQL (tables of migration 4), with the embedded store's
//! semantics.
//!
//! Concurrency: row locks are always taken in the order user → session → refresh token, so
//! refreshes, user changes and removals cannot deadlock one another. A refresh locks its
//! session and then its token (`FOR UPDATE`), so of two refreshes with the same token the
//! second sees it used. Audit appends take a transaction-scoped advisory lock, then read the
//! last record and insert after it: ids are gapless and the chain is linear however many
//! servers append.
//!
//! Sessions expired or revoked more than 30 days ago are pruned (with their refresh tokens)
//! when a session is created, as in the embedded store.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use espwatch_core::Timestamp;
use espwatch_core::access::{Role, WellScope};
use espwatch_store::security::{
    AUDIT_CARRIED_KIND, AUDIT_GENESIS, AUDIT_PRUNED_KIND, AUDIT_REQUEST_KINDS, AuditChainChecker,
    AuditPrune, AuditPruneScope, audit_carried_event, audit_chain_hash, audit_pruned_event,
    check_can_append, check_can_prune, scope_column, scope_from_column,
};
use espwatch_store::{
    ApiKey, AuditEvent, AuditFilter, AuditRecord, AuditVerification, LockoutPolicy, NewApiKey,
    NewSession, NewUser, RefreshOutcome, SecurityStore, Session, StoreError, StoreResult, User,
    UserChange,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use crate::PostgresStore;
use crate::schema::LOCK_AUDIT;
use crate::types::{db_err, get};

const USER_COLUMNS: &str = "name, role, password_hash, wells, disabled, created_at, updated_at, \
                            failed_logins, failed_since, locked_until";
const SESSION_COLUMNS: &str = "id, user_name, created_at, expires_at, revoked_at, source";
const KEY_COLUMNS: &str =
    "id, name, role, wells, key_hash, created_at, created_by, expires_at, revoked_at";
const AUDIT_COLUMNS: &str = "id, ts, kind, request_id, method, route, status, actor, role, \
                             source, duration_ms, detail, prev_hash, hash";
/// Dead sessions are kept this long (for reuse detection), then pruned.
const SESSION_RETENTION: Duration = Duration::from_secs(30 * 86_400);
const VERIFY_PAGE: i64 = 10_000;

fn parse_role(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Internal(format!("unknown stored role {text:?}")))
}

fn parse_wells(text: Option<String>) -> StoreResult<WellScope> {
    scope_from_column(text).map_err(|e| StoreError::Internal(format!("stored wells: {e}")))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

fn user_from_row(r: &Row) -> StoreResult<User> {
    let role: String = get(r, 1)?;
    let failed: i32 = get(r, 7)?;
    Ok(User {
        name: get(r, 0)?,
        role: parse_role(&role)?,
        password_hash: get(r, 2)?,
        wells: parse_wells(get(r, 3)?)?,
        disabled: get(r, 4)?,
        created_at: Timestamp(get(r, 5)?),
        updated_at: Timestamp(get(r, 6)?),
        failed_logins: u32::try_from(failed).unwrap_or(0),
        failed_since: ts(get(r, 8)?),
        locked_until: ts(get(r, 9)?),
    })
}

fn session_from_row(r: &Row) -> StoreResult<Session> {
    Ok(Session {
        id: get(r, 0)?,
        user_name: get(r, 1)?,
        created_at: Timestamp(get(r, 2)?),
        expires_at: Timestamp(get(r, 3)?),
        revoked_at: ts(get(r, 4)?),
        source: get(r, 5)?,
    })
}

fn key_from_row(r: &Row) -> StoreResult<ApiKey> {
    let role: String = get(r, 2)?;
    Ok(ApiKey {
        id: get(r, 0)?,
        name: get(r, 1)?,
        role: parse_role(&role)?,
        wells: parse_wells(get(r, 3)?)?,
        key_hash: get(r, 4)?,
        created_at: Timestamp(get(r, 5)?),
        created_by: get(r, 6)?,
        expires_at: ts(get(r, 7)?),
        revoked_at: ts(get(r, 8)?),
    })
}

fn audit_from_row(r: &Row) -> StoreResult<AuditRecord> {
    let status: Option<i32> = get(r, 6)?;
    let detail: String = get(r, 11)?;
    Ok(AuditRecord {
        id: get(r, 0)?,
        event: AuditEvent {
            ts: Timestamp(get(r, 1)?),
            kind: get(r, 2)?,
            request_id: get(r, 3)?,
            method: get(r, 4)?,
            route: get(r, 5)?,
            status: status
                .map(|s| {
                    u16::try_from(s).map_err(|_| StoreError::Internal(format!("stored status {s}")))
                })
                .transpose()?,
            actor: get(r, 7)?,
            role: get(r, 8)?,
            source: get(r, 9)?,
            duration_ms: get(r, 10)?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| StoreError::Internal(format!("stored audit detail: {e}")))?,
        },
        prev_hash: get(r, 12)?,
        hash: get(r, 13)?,
    })
}

async fn user(client: &impl GenericClient, name: &str, lock: bool) -> StoreResult<Option<User>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE name = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    client
        .query_opt(&sql, &[&name])
        .await
        .map_err(|e| db_err("reading a user", e))?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

/// The user named `name` ignoring ASCII case, through the `lower(name)` unique index.
async fn user_any_case(client: &impl GenericClient, name: &str) -> StoreResult<Option<User>> {
    client
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS} FROM users WHERE lower(name) = lower($1::text COLLATE \"C\")"
            ),
            &[&name],
        )
        .await
        .map_err(|e| db_err("reading a user", e))?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

async fn session(
    client: &impl GenericClient,
    id: &str,
    lock: bool,
) -> StoreResult<Option<Session>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    client
        .query_opt(&sql, &[&id])
        .await
        .map_err(|e| db_err("reading a session", e))?
        .as_ref()
        .map(session_from_row)
        .transpose()
}

async fn api_key(client: &impl GenericClient, id: &str) -> StoreResult<Option<ApiKey>> {
    client
        .query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(|e| db_err("reading an API key", e))?
        .as_ref()
        .map(key_from_row)
        .transpose()
}

/// Record `id` is a carried record or a prune record: part of a unit a prune keeps whole.
async fn in_carried_unit(client: &impl GenericClient, id: i64) -> StoreResult<bool> {
    let row = client
        .query_opt("SELECT kind FROM audit WHERE id = $1", &[&id])
        .await
        .map_err(|e| db_err("pruning the audit log", e))?;
    Ok(match row {
        Some(row) => matches!(
            get::<String>(&row, 0)?.as_str(),
            AUDIT_CARRIED_KIND | AUDIT_PRUNED_KIND
        ),
        None => false,
    })
}

fn db_count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[async_trait]
impl SecurityStore for PostgresStore {
    async fn create_user(&self, new: NewUser, now: Timestamp) -> StoreResult<User> {
        let client = self.client("creating a user").await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO users (name, role, password_hash, wells, disabled, created_at,
                                        updated_at, failed_logins)
                     VALUES ($1, $2, $3, $4, false, $5, $5, 0)
                     ON CONFLICT DO NOTHING
                     RETURNING {USER_COLUMNS}"
                ),
                &[
                    &new.name,
                    &new.role.name(),
                    &new.password_hash,
                    &scope_column(&new.wells),
                    &now.0,
                ],
            )
            .await
            .map_err(|e| db_err("creating a user", e))?;
        match row {
            Some(row) => user_from_row(&row),
            // The name, or another spelling of it (the index ignores case), is taken.
            None => {
                let taken = user_any_case(&client, &new.name)
                    .await?
                    .map_or(new.name, |u| u.name);
                Err(StoreError::Conflict(format!("user {taken:?}")))
            }
        }
    }

    async fn get_user_any_case(&self, name: &str) -> StoreResult<Option<User>> {
        self.read("reading a user", |client| async move {
            user_any_case(&client, name).await
        })
        .await
    }

    async fn get_user(&self, name: &str) -> StoreResult<Option<User>> {
        self.read("reading a user", |client| async move {
            user(&client, name, false).await
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.read("listing users", |client| async move {
            client
                .query(
                    &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
                    &[],
                )
                .await
                .map_err(|e| db_err("listing users", e))?
                .iter()
                .map(user_from_row)
                .collect()
        })
        .await
    }

    async fn update_user(
        &self,
        name: &str,
        change: UserChange,
        now: Timestamp,
    ) -> StoreResult<Option<User>> {
        let mut client = self.client("updating a user").await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_err("updating a user", e))?;
        let returning = format!("WHERE name = $1 RETURNING {USER_COLUMNS}");
        let (row, revoke) = match &change {
            UserChange::Disable => (
                tx.query_opt(
                    &format!("UPDATE users SET disabled = true, updated_at = $2 {returning}"),
                    &[&name, &now.0],
                )
                .await,
                true,
            ),
            UserChange::Enable => (
                tx.query_opt(
                    &format!(
                        "UPDATE users SET disabled = false, failed_logins = 0,
                                failed_since = NULL, locked_until = NULL, updated_at = $2
                         {returning}"
                    ),
                    &[&name, &now.0],
                )
                .await,
                false,
            ),
            UserChange::SetRole(role) => (
                tx.query_opt(
                    &format!("UPDATE users SET role = $3, updated_at = $2 {returning}"),
                    &[&name, &now.0, &role.name()],
                )
                .await,
                true,
            ),
            UserChange::SetPassword(hash) => (
                tx.query_opt(
                    &format!("UPDATE users SET password_hash = $3, updated_at = $2 {returning}"),
                    &[&name, &now.0, hash],
                )
                .await,
                true,
            ),
            UserChange::SetWells(wells) => (
                tx.query_opt(
                    &format!("UPDATE users SET wells = $3, updated_at = $2 {returning}"),
                    &[&name, &now.0, &scope_column(wells)],
                )
                .await,
                true,
            ),
        };
        let Some(row) = row.map_err(|e| db_err("updating a user", e))? else {
            return Ok(None);
        };
        let updated = user_from_row(&row)?;
        if revoke {
            tx.execute(
                "UPDATE sessions SET revoked_at = $2 WHERE user_name = $1 AND revoked_at IS NULL",
                &[&name, &now.0],
            )
            .await
            .map_err(|e| db_err("revoking a user's sessions", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_err("updating a user", e))?;
        Ok(Some(updated))
    }

    async fn remove_user(&self, name: &str) -> StoreResult<bool> {
        let client = self.client("removing a user").await?;
        // Sessions and refresh tokens go with it (ON DELETE CASCADE).
        let n = client
            .execute("DELETE FROM users WHERE name = $1", &[&name])
            .await
            .map_err(|e| db_err("removing a user", e))?;
        Ok(n > 0)
    }

    async fn record_login_failure(
        &self,
        name: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> StoreResult<Option<User>> {
        let mut client = self.client("recording a failed login").await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_err("recording a failed login", e))?;
        let Some(mut u) = user(&tx, name, true).await? else {
            return Ok(None);
        };
        policy.count_failure(&mut u, now);
        tx.execute(
            "UPDATE users SET failed_logins = $2, failed_since = $3, locked_until = $4
             WHERE name = $1",
            &[
                &name,
                &db_count(u.failed_logins),
                &u.failed_since.map(|t| t.0),
                &u.locked_until.map(|t| t.0),
            ],
        )
        .await
        .map_err(|e| db_err("recording a failed login", e))?;
        tx.commit()
            .await
            .map_err(|e| db_err("recording a failed login", e))?;
        Ok(Some(u))
    }

    async fn record_login_success(&self, name: &str) -> StoreResult<()> {
        let client = self.client("recording a login").await?;
        client
            .execute(
                "UPDATE users SET failed_logins = 0, failed_since = NULL, locked_until = NULL
                 WHERE name = $1 AND (failed_logins <> 0 OR failed_since IS NOT NULL
                                      OR locked_until IS NOT NULL)",
                &[&name],
            )
            .await
            .map_err(|e| db_err("recording a login", e))?;
        Ok(())
    }

    async fn create_session(&self, new: NewSession, now: Timestamp) -> StoreResult<Session> {
        let mut client = self.client("creating a session").await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_err("creating a session", e))?;
        let horizon = now.saturating_sub(SESSION_RETENTION).0;
        tx.execute(
            "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1",
            &[&horizon],
        )
        .await
        .map_err(|e| db_err("pruning old sessions", e))?;
        let row = tx
            .query_opt(
                &format!(
                    "INSERT INTO sessions (id, user_name, created_at, expires_at, source)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (id) DO NOTHING
                     RETURNING {SESSION_COLUMNS}"
                ),
                &[
                    &new.id,
                    &new.user_name,
                    &now.0,
                    &new.expires_at.0,
                    &new.source,
                ],
            )
            .await
            .map_err(|e| db_err("creating a session", e))?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!("session {}", new.id)));
        };
        let created = session_from_row(&row)?;
        let stored = tx
            .execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO NOTHING",
                &[&new.refresh_hash, &new.id, &now.0],
            )
            .await
            .map_err(|e| db_err("storing a refresh token", e))?;
        if stored == 0 {
            return Err(StoreError::Conflict("refresh token".into()));
        }
        tx.commit()
            .await
            .map_err(|e| db_err("creating a session", e))?;
        Ok(created)
    }

    async fn rotate_refresh(
        &self,
        refresh_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome> {
        let err = |e| db_err("refreshing a session", e);
        let mut client = self.client("refreshing a session").await?;
        let tx = client.transaction().await.map_err(err)?;
        // Find the session without locking, lock it, then lock and re-read the token: the
        // user → session → token order every other write follows.
        let Some(row) = tx
            .query_opt(
                "SELECT session_id FROM refresh_tokens WHERE hash = $1",
                &[&refresh_hash],
            )
            .await
            .map_err(err)?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let session_id: String = get(&row, 0)?;
        let Some(current) = session(&tx, &session_id, true).await? else {
            return Ok(RefreshOutcome::Invalid);
        };
        let Some(row) = tx
            .query_opt(
                "SELECT used_at FROM refresh_tokens WHERE hash = $1 FOR UPDATE",
                &[&refresh_hash],
            )
            .await
            .map_err(err)?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        let used_at: Option<i64> = get(&row, 0)?;
        if used_at.is_some() {
            tx.execute(
                "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&session_id, &now.0],
            )
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            return Ok(RefreshOutcome::Reused { session_id });
        }
        if current.revoked_at.is_some() || current.expires_at <= now {
            return Ok(RefreshOutcome::Invalid);
        }
        let Some(owner) = user(&tx, &current.user_name, false).await? else {
            return Ok(RefreshOutcome::Invalid);
        };
        if owner.disabled {
            return Ok(RefreshOutcome::Invalid);
        }
        tx.execute(
            "UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1",
            &[&refresh_hash, &now.0],
        )
        .await
        .map_err(err)?;
        let stored = tx
            .execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO NOTHING",
                &[&new_hash, &session_id, &now.0],
            )
            .await
            .map_err(err)?;
        if stored == 0 {
            return Err(StoreError::Conflict("refresh token".into()));
        }
        tx.execute(
            "UPDATE sessions SET expires_at = $2 WHERE id = $1",
            &[&session_id, &new_expires_at.0],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(RefreshOutcome::Rotated {
            session: Session {
                expires_at: new_expires_at,
                ..current
            },
            user: owner,
        })
    }

    async fn active_session(&self, id: &str, now: Timestamp) -> StoreResult<Option<Session>> {
        self.read("reading a session", |client| async move {
            Ok(session(&client, id, false)
                .await?
                .filter(|s| s.revoked_at.is_none() && s.expires_at > now))
        })
        .await
    }

    async fn revoke_session(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let client = self.client("revoking a session").await?;
        let n = client
            .execute(
                "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now.0],
            )
            .await
            .map_err(|e| db_err("revoking a session", e))?;
        Ok(n > 0)
    }

    async fn create_api_key(&self, key: NewApiKey, now: Timestamp) -> StoreResult<ApiKey> {
        let client = self.client("creating an API key").await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO api_keys (id, name, role, wells, key_hash, created_at,
                                           created_by, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO NOTHING
                     RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.id,
                    &key.name,
                    &key.role.name(),
                    &scope_column(&key.wells),
                    &key.key_hash,
                    &now.0,
                    &key.created_by,
                    &key.expires_at.map(|t| t.0),
                ],
            )
            .await
            .map_err(|e| db_err("creating an API key", e))?;
        match row {
            Some(row) => key_from_row(&row),
            None => Err(StoreError::Conflict(format!("API key {}", key.id))),
        }
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        self.read("reading an API key", |client| async move {
            api_key(&client, id).await
        })
        .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.read("listing API keys", |client| async move {
            client
                .query(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
                    ),
                    &[],
                )
                .await
                .map_err(|e| db_err("listing API keys", e))?
                .iter()
                .map(key_from_row)
                .collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let client = self.client("revoking an API key").await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now.0],
            )
            .await
            .map_err(|e| db_err("revoking an API key", e))?;
        Ok(n > 0)
    }

    async fn append_audit(&self, events: Vec<AuditEvent>) -> StoreResult<Vec<i64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e| db_err("appending to the audit log", e);
        let mut client = self.client("appending to the audit log").await?;
        let tx = client.transaction().await.map_err(err)?;
        // Every request is audited, so the statements are prepared once per connection:
        // parsing and planning them on each append cost the database more than the append.
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await
            .map_err(err)?;
        let newest = tx
            .prepare_cached("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            .await
            .map_err(err)?;
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO audit ({AUDIT_COLUMNS})
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                     $5::text[], $6::text[], $7::int4[], $8::text[], $9::text[], $10::text[],
                     $11::float8[], $12::text[], $13::text[], $14::text[])"
            ))
            .await
            .map_err(err)?;
        tx.execute(&lock, &[&LOCK_AUDIT]).await.map_err(err)?;
        // Read after taking the lock: this statement's snapshot includes every append that
        // committed before us.
        let last = tx.query_opt(&newest, &[]).await.map_err(err)?;
        let (mut id, mut prev): (i64, String) = match last {
            Some(row) => (get(&row, 0)?, get(&row, 1)?),
            None => (0, AUDIT_GENESIS.to_owned()),
        };
        let key = self.inner.shared.audit_key.as_ref();
        check_can_append(key, &prev)?;
        let n = events.len();
        let mut cols = AuditColumns::with_capacity(n);
        for event in events {
            let mut event = event;
            // Stored exactly as it will be read back, so the hash verifies later.
            if event.duration_ms.is_some_and(|d| !d.is_finite()) {
                event.duration_ms = None;
            }
            id += 1;
            let hash = audit_chain_hash(key, &prev, id, &event);
            cols.push(id, event, std::mem::replace(&mut prev, hash.clone()), hash);
        }
        tx.execute(
            &insert,
            &[
                &cols.id,
                &cols.ts,
                &cols.kind,
                &cols.request_id,
                &cols.method,
                &cols.route,
                &cols.status,
                &cols.actor,
                &cols.role,
                &cols.source,
                &cols.duration_ms,
                &cols.detail,
                &cols.prev_hash,
                &cols.hash,
            ],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(cols.id)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let mut clauses = Vec::new();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut add = |clause: &dyn Fn(usize) -> String, value: Box<dyn ToSql + Sync + Send>| {
            params.push(value);
            clauses.push(clause(params.len()));
        };
        if let Some(actor) = &filter.actor {
            add(&|n| format!("actor = ${n}"), Box::new(actor.clone()));
        }
        if let Some(kind) = &filter.kind {
            // Security events carried forward by retention are found by their original kind
            // (CASE: only their `detail` is read as JSON).
            add(
                &|n| {
                    format!(
                        "(kind = ${n} OR CASE WHEN kind = '{AUDIT_CARRIED_KIND}' \
                         THEN (detail::jsonb) ->> 'kind' = ${n} ELSE false END)"
                    )
                },
                Box::new(kind.clone()),
            );
        }
        if let Some(since) = filter.since {
            add(&|n| format!("ts >= ${n}"), Box::new(since.0));
        }
        if let Some(until) = filter.until {
            add(&|n| format!("ts < ${n}"), Box::new(until.0));
        }
        if let Some(before) = filter.before_id {
            add(&|n| format!("id < ${n}"), Box::new(before));
        }
        let clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit {clause} ORDER BY id DESC LIMIT {}",
            filter.effective_limit()
        );
        let (sql, params) = (&sql, &params);
        self.read("listing audit records", |client| async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            client
                .query(sql.as_str(), &refs)
                .await
                .map_err(|e| db_err("listing audit records", e))?
                .iter()
                .map(audit_from_row)
                .collect()
        })
        .await
    }

    async fn verify_audit(&self) -> StoreResult<AuditVerification> {
        let err = |e| db_err("verifying the audit log", e);
        let mut client = self.client("verifying the audit log").await?;
        // One snapshot for the whole walk.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(err)?;
        let stmt = tx
            .prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .await
            .map_err(err)?;
        let mut checker = AuditChainChecker::new(self.inner.shared.audit_key.clone());
        let mut after = 0i64;
        loop {
            let rows = tx
                .query(&stmt, &[&after, &VERIFY_PAGE])
                .await
                .map_err(err)?;
            for row in &rows {
                let id: i64 = get(row, 0)?;
                after = id;
                let outcome = match audit_from_row(row) {
                    Ok(record) => checker.check(&record),
                    Err(e) => Err(format!("the record cannot be read ({e})")),
                };
                if let Err(reason) = outcome {
                    return Ok(checker.verdict(Some((id, reason))));
                }
            }
            if (rows.len() as i64) < VERIFY_PAGE {
                break;
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(checker.verdict(None))
    }

    async fn prune_audit(
        &self,
        before: Timestamp,
        by: AuditEvent,
        scope: AuditPruneScope,
        max_records: Option<i64>,
    ) -> StoreResult<Option<AuditPrune>> {
        let key = self.inner.shared.audit_key.clone();
        check_can_prune(key.as_ref())?;
        let err = |e| db_err("pruning the audit log", e);
        let mut client = self.client("pruning the audit log").await?;
        let tx = client.transaction().await.map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_AUDIT])
            .await
            .map_err(err)?;
        let row = tx
            .query_one(
                "SELECT MIN(id), MAX(id), (SELECT MIN(id) FROM audit WHERE ts >= $1) FROM audit",
                &[&before.0],
            )
            .await
            .map_err(err)?;
        let (first, newest, young): (Option<i64>, Option<i64>, Option<i64>) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        let (Some(first), Some(newest)) = (first, newest) else {
            return Ok(None);
        };
        // The newest record always stays: the prune record is chained after it.
        let mut last = young.map_or(newest - 1, |young| young - 1).min(newest - 1);
        // Never inside a run of carried records nor between it and its audit_pruned record:
        // they stay together, so the prune record still finds the carried records it names.
        if in_carried_unit(&tx, last + 1).await? {
            let row = tx
                .query_one(
                    "SELECT MAX(id) FROM audit WHERE id <= $1 AND kind <> $2",
                    &[&last, &AUDIT_CARRIED_KIND],
                )
                .await
                .map_err(err)?;
            last = get::<Option<i64>>(&row, 0)?.unwrap_or(0);
        }
        if last < first {
            return Ok(None);
        }
        let kinds: Vec<&str> = AUDIT_REQUEST_KINDS.to_vec();
        if scope == AuditPruneScope::Requests {
            let row = tx
                .query_one(
                    "SELECT COUNT(*) FROM audit WHERE id <= $1 AND kind = ANY($2)",
                    &[&last, &kinds],
                )
                .await
                .map_err(err)?;
            if get::<i64>(&row, 0)? == 0 {
                return Ok(None);
            }
        }
        // At most `max_records` (more when the batch would end inside carried records and
        // their prune record: then up to that prune record); the rest is for the next call.
        let whole = last;
        if let Some(max) = max_records
            && first.saturating_add(max.max(1) - 1) < last
        {
            last = first + max.max(1) - 1;
            if in_carried_unit(&tx, last + 1).await? {
                let row = tx
                    .query_one(
                        "SELECT MIN(id) FROM audit WHERE id > $1 AND kind = $2",
                        &[&last, &AUDIT_PRUNED_KIND],
                    )
                    .await
                    .map_err(err)?;
                last = get::<Option<i64>>(&row, 0)?.map_or(whole, |end| end.min(whole));
            }
        }
        let mut events = Vec::new();
        if scope == AuditPruneScope::Requests {
            let rows = tx
                .query(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit
                         WHERE id <= $1 AND kind <> ALL($2) ORDER BY id"
                    ),
                    &[&last, &kinds],
                )
                .await
                .map_err(err)?;
            for row in &rows {
                events.push(audit_carried_event(&audit_from_row(row)?));
            }
        }
        let carried = events.len() as i64;
        let last_hash: String = get(
            &tx.query_one("SELECT hash FROM audit WHERE id = $1", &[&last])
                .await
                .map_err(err)?,
            0,
        )?;
        // The append-only trigger is lifted for this transaction only.
        tx.batch_execute("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
            .await
            .map_err(err)?;
        let count = tx
            .execute("DELETE FROM audit WHERE id <= $1", &[&last])
            .await
            .map_err(err)?;
        tx.batch_execute("ALTER TABLE audit ENABLE TRIGGER audit_no_change")
            .await
            .map_err(err)?;
        let mut prev: String = get(
            &tx.query_one("SELECT hash FROM audit WHERE id = $1", &[&newest])
                .await
                .map_err(err)?,
            0,
        )?;
        check_can_append(key.as_ref(), &prev)?;
        events.push(audit_pruned_event(
            by, first, last, &last_hash, before, carried,
        ));
        let mut cols = AuditColumns::with_capacity(events.len());
        let mut id = newest;
        for mut event in events {
            if event.duration_ms.is_some_and(|d| !d.is_finite()) {
                event.duration_ms = None;
            }
            id += 1;
            let hash = audit_chain_hash(key.as_ref(), &prev, id, &event);
            cols.push(id, event, std::mem::replace(&mut prev, hash.clone()), hash);
        }
        tx.execute(
            &format!(
                "INSERT INTO audit ({AUDIT_COLUMNS})
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                     $5::text[], $6::text[], $7::int4[], $8::text[], $9::text[], $10::text[],
                     $11::float8[], $12::text[], $13::text[], $14::text[])"
            ),
            &[
                &cols.id,
                &cols.ts,
                &cols.kind,
                &cols.request_id,
                &cols.method,
                &cols.route,
                &cols.status,
                &cols.actor,
                &cols.role,
                &cols.source,
                &cols.duration_ms,
                &cols.detail,
                &cols.prev_hash,
                &cols.hash,
            ],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(Some(AuditPrune {
            first_id: first,
            last_id: last,
            count: count as i64,
            carried,
            last_hash,
            record_id: id,
            more: last < whole,
        }))
    }
}

/// Audit events as column arrays, for one `INSERT ... SELECT FROM UNNEST(...)`.
struct AuditColumns {
    id: Vec<i64>,
    ts: Vec<i64>,
    kind: Vec<String>,
    request_id: Vec<Option<String>>,
    method: Vec<Option<String>>,
    route: Vec<Option<String>>,
    status: Vec<Option<i32>>,
    actor: Vec<Option<String>>,
    role: Vec<Option<String>>,
    source: Vec<Option<String>>,
    duration_ms: Vec<Option<f64>>,
    detail: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl AuditColumns {
    fn with_capacity(n: usize) -> Self {
        AuditColumns {
            id: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            method: Vec::with_capacity(n),
            route: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            role: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            duration_ms: Vec::with_capacity(n),
            detail: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, id: i64, e: AuditEvent, prev_hash: String, hash: String) {
        self.id.push(id);
        self.ts.push(e.ts.0);
        self.detail.push(e.detail.to_string());
        self.kind.push(e.kind);
        self.request_id.push(e.request_id);
        self.method.push(e.method);
        self.route.push(e.route);
        self.status.push(e.status.map(i32::from));
        self.actor.push(e.actor);
        self.role.push(e.role);
        self.source.push(e.source);
        self.duration_ms.push(e.duration_ms);
        self.prev_hash.push(prev_hash);
        self.hash.push(hash);
    }
}
