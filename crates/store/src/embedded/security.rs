//! [`SecurityStore`] for the embedded engine: `security.sqlite` in the data directory.
//!
//! Unlike the telemetry database this file is **not** covered by the data directory's
//! exclusive lock: the CLI (`espwatch users add`, `apikeys create`, `audit verify`) opens it
//! while a server runs on the same directory. SQLite's WAL mode handles several processes;
//! every write is a `BEGIN IMMEDIATE` transaction (the write lock is taken up front, waiting
//! up to the busy timeout), so concurrent writers serialize instead of failing on a lock
//! upgrade, and an audit append reads the last record and inserts after it under that lock.
//! Audit ids are assigned explicitly (last id + 1), so they are gapless.
//!
//! Sessions expired or revoked more than [`SESSION_RETENTION`] ago are deleted (with
//! their used refresh tokens) when a new session is created, so the tables do not grow
//! forever; a refresh token of such a session is then simply unknown (`Invalid`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use espwatch_core::Timestamp;
use espwatch_core::access::{Role, WellScope};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
    params_from_iter,
};

use super::lock;
use crate::security::{
    AUDIT_CARRIED_KIND, AUDIT_PRUNED_KIND, AUDIT_REQUEST_KINDS, ApiKey, AuditChainChecker,
    AuditEvent, AuditFilter, AuditKey, AuditPrune, AuditPruneScope, AuditRecord, AuditVerification,
    CaseDuplicate, DuplicateRename, LockoutPolicy, NewApiKey, NewSession, NewUser, RefreshOutcome,
    SecurityStore, Session, User, UserChange, audit_carried_event, audit_chain_hash, scope_column,
    scope_from_column,
};
use crate::{StoreError, StoreResult};

/// File name of the security database inside the data directory.
pub const SECURITY_FILE: &str = "security.sqlite";
/// 1: the first schema; 2: user names unique ignoring (ASCII) case, see [`user_name_index`].
const SCHEMA_VERSION: i64 = 2;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Dead sessions (expired or revoked) are kept this long for reuse detection, then pruned.
pub const SESSION_RETENTION: Duration = Duration::from_secs(30 * 86_400);
const VERIFY_PAGE: i64 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    wells         TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    failed_since  INTEGER,
    locked_until  INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    source     TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_name);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_session ON refresh_tokens (session_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    wells      TEXT,
    key_hash   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    request_id  TEXT,
    method      TEXT,
    route       TEXT,
    status      INTEGER,
    actor       TEXT,
    role        TEXT,
    source      TEXT,
    duration_ms REAL,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, id);
CREATE INDEX IF NOT EXISTS audit_by_kind ON audit (kind, id);
CREATE INDEX IF NOT EXISTS audit_by_ts ON audit (ts);
-- Append-only inside the database too; the hash chain catches anyone who drops these.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

const USER_COLUMNS: &str = "name, role, password_hash, wells, disabled, created_at, updated_at, \
                            failed_logins, failed_since, locked_until";
const SESSION_COLUMNS: &str = "id, user_name, created_at, expires_at, revoked_at, source";
const KEY_COLUMNS: &str =
    "id, name, role, wells, key_hash, created_at, created_by, expires_at, revoked_at";
const AUDIT_COLUMNS: &str = "id, ts, kind, request_id, method, route, status, actor, role, \
                             source, duration_ms, detail, prev_hash, hash";

/// User names are unique ignoring ASCII case (issue 18 item 14), enforced by a unique index on
/// `name COLLATE NOCASE`, so two concurrent creations of `Alice` and `alice` cannot both
/// succeed whatever the callers checked before. A file written before the index (schema 1)
/// that holds such names is refused, naming them: which account to keep is the operator's
/// decision, not the store's.
fn user_name_index(tx: &Transaction<'_>) -> StoreResult<()> {
    let mut stmt = tx
        .prepare(
            "SELECT name FROM users WHERE name COLLATE NOCASE IN
                 (SELECT name FROM users GROUP BY name COLLATE NOCASE HAVING count(*) > 1)
             ORDER BY name COLLATE NOCASE, name",
        )
        .map_err(|e| db_err("looking for user names that differ only in case", e))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| db_err("looking for user names that differ only in case", e))?;
    if !names.is_empty() {
        let groups = crate::security::case_duplicate_groups(names);
        let data_dir = tx
            .path()
            .and_then(|file| Path::new(file).parent())
            .map_or_else(|| "DIR".to_owned(), |dir| dir.display().to_string());
        let hint = crate::security::case_duplicates_hint(&format!("--data-dir {data_dir}"));
        return Err(StoreError::Internal(format!(
            "{SECURITY_FILE} holds user names that differ only in case: {groups}. {hint}"
        )));
    }
    tx.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS users_name_any_case ON users (name COLLATE NOCASE)",
    )
    .map_err(|e| db_err("indexing user names ignoring case", e))
}

/// Every account of `security.sqlite` in `data_dir` (name, role, state, creation), read
/// without opening the store, which refuses a file holding names that differ only in case
/// (`espwatch users resolve-duplicates`); nothing is changed. Empty without the file.
pub fn read_user_accounts(data_dir: &Path) -> StoreResult<Vec<CaseDuplicate>> {
    let path = data_dir.join(SECURITY_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| db_err("opening", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_err("setting busy timeout", e))?;
    let mut stmt = conn
        .prepare("SELECT name, role, disabled, created_at FROM users ORDER BY name")
        .map_err(|e| db_err("reading users", e))?;
    stmt.query_map([], |r| {
        Ok(CaseDuplicate {
            name: r.get(0)?,
            role: r.get(1)?,
            disabled: r.get(2)?,
            created_at: Timestamp(r.get(3)?),
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(|e| db_err("reading users", e))
}

/// Applies `espwatch users resolve-duplicates`' plan to `security.sqlite` in `data_dir`, in
/// one transaction, without opening the store: each account is renamed (and disabled when
/// the plan says so) and its sessions end (their tokens carry the old name). Refuses a plan
/// whose account is gone or whose new name is taken (ignoring case); the audit records are
/// the caller's, once the store opens.
pub fn rename_user_accounts(
    data_dir: &Path,
    plan: &[DuplicateRename],
    now: Timestamp,
) -> StoreResult<()> {
    let path = data_dir.join(SECURITY_FILE);
    let mut conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| db_err("opening", e))?;
    configure(&conn)?;
    write_tx(&mut conn, "renaming users", |tx| {
        for rename in plan {
            let taken: i64 = tx
                .query_row(
                    "SELECT count(*) FROM users WHERE name = ?1 COLLATE NOCASE",
                    [&rename.to],
                    |r| r.get(0),
                )
                .map_err(|e| db_err("renaming users", e))?;
            if taken > 0 {
                return Err(StoreError::Conflict(format!("user {:?}", rename.to)));
            }
            tx.execute("DELETE FROM sessions WHERE user_name = ?1", [&rename.from])
                .map_err(|e| db_err("ending the sessions of a renamed user", e))?;
            let changed = tx
                .execute(
                    "UPDATE users SET name = ?2, updated_at = ?3,
                         disabled = CASE WHEN ?4 THEN 1 ELSE disabled END
                     WHERE name = ?1",
                    params![rename.from, rename.to, now.0, rename.disable],
                )
                .map_err(|e| db_err("renaming users", e))?;
            if changed != 1 {
                return Err(StoreError::Internal(format!(
                    "user {:?} is gone: run the command again",
                    rename.from
                )));
            }
        }
        Ok(())
    })
}

/// The embedded security store. Cheap to clone; clones share one connection. Several
/// instances (in this or other processes) may be open on the same directory.
#[derive(Clone)]
pub struct EmbeddedSecurityStore {
    inner: Arc<Inner>,
    /// Keys the audit chain (see [`crate::security::AuditKey`]); `None`: plain SHA-256.
    audit_key: Option<AuditKey>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// SQLite errors: "busy/locked" after the busy timeout means another process holds the
/// database; callers may retry (`Unavailable`). Everything else is `Internal`.
/// Not logged here: every caller reports the error once (a request in its own log line, the
/// readiness probe likewise, the audit writer in its own lines, the CLI on exit), so a log
/// line here would say it twice (issue 17's error policy).
fn db_err(context: &str, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    {
        tracing::debug!(error = %e, "security store: {context}: database busy");
        return StoreError::Unavailable(format!("{context}: security database busy"));
    }
    tracing::debug!(error = %e, "security store: {context}");
    StoreError::Internal(format!("{context}: {e}"))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_err("setting busy timeout", e))?;
    conn.execute_batch("PRAGMA foreign_keys=ON;")
        .map_err(|e| db_err("enabling foreign keys", e))?;
    Ok(())
}

impl EmbeddedSecurityStore {
    /// Opens (creating if needed) `security.sqlite` in `data_dir`. Does not take the data
    /// directory's lock.
    pub fn open(data_dir: &Path) -> StoreResult<EmbeddedSecurityStore> {
        super::files::private_dir(data_dir)?;
        let path = data_dir.join(SECURITY_FILE);
        super::files::private_file(&path)?;
        let mut conn = Connection::open(&path).map_err(|e| db_err("opening", e))?;
        configure(&conn)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| db_err("enabling WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(format!(
                "security database refused WAL journal mode (got {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(|e| db_err("setting pragmas", e))?;
        write_tx(&mut conn, "creating the security schema", |tx| {
            let version: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| db_err("reading the schema version", e))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::Internal(format!(
                    "{} has schema version {version}, newer than this espwatch understands",
                    SECURITY_FILE
                )));
            }
            tx.execute_batch(SCHEMA)
                .map_err(|e| db_err("creating the security schema", e))?;
            user_name_index(tx)?;
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .map_err(|e| db_err("recording the schema version", e))?;
            Ok(())
        })?;
        Ok(EmbeddedSecurityStore {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
            }),
            audit_key: None,
        })
    }

    /// Keys the audit chain from now on (records are appended with HMAC hashes, and
    /// verification checks them with this key).
    pub fn with_audit_key(mut self, key: Option<AuditKey>) -> Self {
        self.audit_key = key;
        self
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the shared connection, off the async runtime.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.conn)))
            .await
            .map_err(|e| StoreError::Internal(format!("blocking task failed: {e}")))?
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committed when `f` succeeds.
    async fn write<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.with_conn(move |conn| write_tx(conn, context, f)).await
    }
}

fn write_tx<T>(
    conn: &mut Connection,
    context: &str,
    f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
) -> StoreResult<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_err(context, e))?;
    // On error the transaction is dropped, which rolls it back.
    let out = f(&tx)?;
    tx.commit().map_err(|e| db_err(context, e))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Row decoding. Stored data never panics: anything unexpected is an `Internal` error.

fn corrupt(what: &str, detail: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{what}: {detail}").into(),
    )
}

fn parse_role(text: &str) -> rusqlite::Result<Role> {
    Role::parse(text).ok_or_else(|| corrupt("unknown role", format!("{text:?}")))
}

fn parse_wells(text: Option<String>) -> rusqlite::Result<WellScope> {
    scope_from_column(text).map_err(|e| corrupt("wells", e))
}

fn row_to_user(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(1)?;
    let failed: i64 = row.get(7)?;
    Ok(User {
        name: row.get(0)?,
        role: parse_role(&role)?,
        password_hash: row.get(2)?,
        wells: parse_wells(row.get(3)?)?,
        disabled: row.get(4)?,
        created_at: Timestamp(row.get(5)?),
        updated_at: Timestamp(row.get(6)?),
        failed_logins: u32::try_from(failed).unwrap_or(u32::MAX),
        failed_since: row.get::<_, Option<i64>>(8)?.map(Timestamp),
        locked_until: row.get::<_, Option<i64>>(9)?.map(Timestamp),
    })
}

fn row_to_session(row: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        user_name: row.get(1)?,
        created_at: Timestamp(row.get(2)?),
        expires_at: Timestamp(row.get(3)?),
        revoked_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
        source: row.get(5)?,
    })
}

fn row_to_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let role: String = row.get(2)?;
    Ok(ApiKey {
        id: row.get(0)?,
        name: row.get(1)?,
        role: parse_role(&role)?,
        wells: parse_wells(row.get(3)?)?,
        key_hash: row.get(4)?,
        created_at: Timestamp(row.get(5)?),
        created_by: row.get(6)?,
        expires_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
        revoked_at: row.get::<_, Option<i64>>(8)?.map(Timestamp),
    })
}

fn row_to_audit(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    let status: Option<i64> = row.get(6)?;
    let detail: String = row.get(11)?;
    Ok(AuditRecord {
        id: row.get(0)?,
        event: AuditEvent {
            ts: Timestamp(row.get(1)?),
            kind: row.get(2)?,
            request_id: row.get(3)?,
            method: row.get(4)?,
            route: row.get(5)?,
            status: status
                .map(|s| u16::try_from(s).map_err(|_| corrupt("status", s)))
                .transpose()?,
            actor: row.get(7)?,
            role: row.get(8)?,
            source: row.get(9)?,
            duration_ms: row.get(10)?,
            detail: serde_json::from_str(&detail).map_err(|e| corrupt("detail", e))?,
        },
        prev_hash: row.get(12)?,
        hash: row.get(13)?,
    })
}

fn get_user(conn: &Connection, name: &str) -> StoreResult<Option<User>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
        params![name],
        row_to_user,
    )
    .optional()
    .map_err(|e| db_err("reading a user", e))
}

/// The user named `name` ignoring ASCII case (at most one: the index is unique).
fn get_user_any_case(conn: &Connection, name: &str) -> StoreResult<Option<User>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1 COLLATE NOCASE"),
        params![name],
        row_to_user,
    )
    .optional()
    .map_err(|e| db_err("reading a user", e))
}

fn get_session(conn: &Connection, id: &str) -> StoreResult<Option<Session>> {
    conn.query_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        params![id],
        row_to_session,
    )
    .optional()
    .map_err(|e| db_err("reading a session", e))
}

fn revoke_sessions_of(tx: &Transaction<'_>, user: &str, now: Timestamp) -> StoreResult<()> {
    tx.execute(
        "UPDATE sessions SET revoked_at = ?2 WHERE user_name = ?1 AND revoked_at IS NULL",
        params![user, now.0],
    )
    .map_err(|e| db_err("revoking a user's sessions", e))?;
    Ok(())
}

/// What the audit log stores for an event: exactly what reading it back yields, so the hash
/// computed at append time is the one verification recomputes. (`NaN`/infinite durations
/// would come back as NULL; `detail` is stored as its JSON text.)
fn normalized(mut event: AuditEvent) -> AuditEvent {
    if event.duration_ms.is_some_and(|d| !d.is_finite()) {
        event.duration_ms = None;
    }
    event
}

/// Builds the `WHERE` clause and its parameters for an audit filter.
fn audit_where(filter: &AuditFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(actor) = &filter.actor {
        values.push(Value::Text(actor.clone()));
        clauses.push(format!("actor = ?{}", values.len()));
    }
    if let Some(kind) = &filter.kind {
        // Security events carried forward by retention are found by their original kind.
        values.push(Value::Text(kind.clone()));
        let n = values.len();
        clauses.push(format!(
            "(kind = ?{n} OR (kind = '{AUDIT_CARRIED_KIND}' AND json_extract(detail, '$.kind') = ?{n}))"
        ));
    }
    if let Some(since) = filter.since {
        values.push(Value::Integer(since.0));
        clauses.push(format!("ts >= ?{}", values.len()));
    }
    if let Some(until) = filter.until {
        values.push(Value::Integer(until.0));
        clauses.push(format!("ts < ?{}", values.len()));
    }
    if let Some(before) = filter.before_id {
        values.push(Value::Integer(before));
        clauses.push(format!("id < ?{}", values.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

#[async_trait]
impl SecurityStore for EmbeddedSecurityStore {
    async fn create_user(&self, user: NewUser, now: Timestamp) -> StoreResult<User> {
        self.write("creating a user", move |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO users (name, role, password_hash, wells, disabled, created_at,
                                        updated_at, failed_logins)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, 0)
                     ON CONFLICT DO NOTHING",
                    params![
                        user.name,
                        user.role.name(),
                        user.password_hash,
                        scope_column(&user.wells),
                        now.0
                    ],
                )
                .map_err(|e| db_err("creating a user", e))?;
            if inserted == 0 {
                // The name, or another spelling of it (the index ignores case), is taken.
                let taken = get_user_any_case(tx, &user.name)?.map_or(user.name, |u| u.name);
                return Err(StoreError::Conflict(format!("user {taken:?}")));
            }
            get_user(tx, &user.name)?
                .ok_or_else(|| StoreError::Internal("created user vanished".into()))
        })
        .await
    }

    async fn get_user(&self, name: &str) -> StoreResult<Option<User>> {
        let name = name.to_owned();
        self.with_conn(move |conn| get_user(conn, &name)).await
    }

    async fn get_user_any_case(&self, name: &str) -> StoreResult<Option<User>> {
        let name = name.to_owned();
        self.with_conn(move |conn| get_user_any_case(conn, &name))
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
                .map_err(|e| db_err("listing users", e))?;
            let rows = stmt
                .query_map([], row_to_user)
                .map_err(|e| db_err("listing users", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db_err("listing users", e))
        })
        .await
    }

    async fn update_user(
        &self,
        name: &str,
        change: UserChange,
        now: Timestamp,
    ) -> StoreResult<Option<User>> {
        let name = name.to_owned();
        self.write("updating a user", move |tx| {
            let (sql, revoke): (&str, bool) = match &change {
                UserChange::Disable => ("UPDATE users SET disabled = 1, updated_at = ?2", true),
                UserChange::Enable => (
                    "UPDATE users SET disabled = 0, failed_logins = 0, failed_since = NULL,
                            locked_until = NULL, updated_at = ?2",
                    false,
                ),
                UserChange::SetRole(_) => ("UPDATE users SET role = ?3, updated_at = ?2", true),
                UserChange::SetPassword(_) => {
                    ("UPDATE users SET password_hash = ?3, updated_at = ?2", true)
                }
                UserChange::SetWells(_) => ("UPDATE users SET wells = ?3, updated_at = ?2", true),
            };
            let sql = format!("{sql} WHERE name = ?1");
            let changed = match &change {
                UserChange::Disable | UserChange::Enable => tx.execute(&sql, params![name, now.0]),
                UserChange::SetRole(role) => tx.execute(&sql, params![name, now.0, role.name()]),
                UserChange::SetPassword(hash) => tx.execute(&sql, params![name, now.0, hash]),
                UserChange::SetWells(wells) => {
                    tx.execute(&sql, params![name, now.0, scope_column(wells)])
                }
            }
            .map_err(|e| db_err("updating a user", e))?;
            if changed == 0 {
                return Ok(None);
            }
            if revoke {
                revoke_sessions_of(tx, &name, now)?;
            }
            get_user(tx, &name)
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.write("removing a user", move |tx| {
            // Sessions and their refresh tokens go with it (ON DELETE CASCADE).
            let n = tx
                .execute("DELETE FROM users WHERE name = ?1", params![name])
                .map_err(|e| db_err("removing a user", e))?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_login_failure(
        &self,
        name: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> StoreResult<Option<User>> {
        let name = name.to_owned();
        self.write("recording a failed login", move |tx| {
            let Some(mut user) = get_user(tx, &name)? else {
                return Ok(None);
            };
            policy.count_failure(&mut user, now);
            tx.execute(
                "UPDATE users SET failed_logins = ?2, failed_since = ?3, locked_until = ?4
                 WHERE name = ?1",
                params![
                    name,
                    user.failed_logins,
                    user.failed_since.map(|t| t.0),
                    user.locked_until.map(|t| t.0)
                ],
            )
            .map_err(|e| db_err("recording a failed login", e))?;
            Ok(Some(user))
        })
        .await
    }

    async fn record_login_success(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.write("recording a login", move |tx| {
            tx.execute(
                "UPDATE users SET failed_logins = 0, failed_since = NULL, locked_until = NULL
                 WHERE name = ?1 AND (failed_logins <> 0 OR failed_since IS NOT NULL
                                      OR locked_until IS NOT NULL)",
                params![name],
            )
            .map_err(|e| db_err("recording a login", e))?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, session: NewSession, now: Timestamp) -> StoreResult<Session> {
        self.write("creating a session", move |tx| {
            let horizon = now.saturating_sub(SESSION_RETENTION).0;
            tx.execute(
                "DELETE FROM sessions WHERE expires_at < ?1 OR revoked_at < ?1",
                params![horizon],
            )
            .map_err(|e| db_err("pruning old sessions", e))?;
            let inserted = tx.execute(
                "INSERT INTO sessions (id, user_name, created_at, expires_at, source)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    session.id,
                    session.user_name,
                    now.0,
                    session.expires_at.0,
                    session.source
                ],
            );
            match inserted {
                Err(e) if is_constraint(&e) => {
                    // Duplicate id, or no such user (foreign key).
                    return Err(if get_session(tx, &session.id)?.is_some() {
                        StoreError::Conflict(format!("session {}", session.id))
                    } else {
                        StoreError::Internal(format!(
                            "session for unknown user {:?}",
                            session.user_name
                        ))
                    });
                }
                other => other.map_err(|e| db_err("creating a session", e))?,
            };
            tx.execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
                params![session.refresh_hash, session.id, now.0],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict("refresh token".into())
                } else {
                    db_err("storing a refresh token", e)
                }
            })?;
            get_session(tx, &session.id)?
                .ok_or_else(|| StoreError::Internal("created session vanished".into()))
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        refresh_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome> {
        let (old, new) = (refresh_hash.to_owned(), new_hash.to_owned());
        self.write("refreshing a session", move |tx| {
            let token: Option<(String, Option<i64>)> = tx
                .query_row(
                    "SELECT session_id, used_at FROM refresh_tokens WHERE hash = ?1",
                    params![old],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| db_err("reading a refresh token", e))?;
            let Some((session_id, used_at)) = token else {
                return Ok(RefreshOutcome::Invalid);
            };
            if used_at.is_some() {
                tx.execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![session_id, now.0],
                )
                .map_err(|e| db_err("revoking a replayed session", e))?;
                return Ok(RefreshOutcome::Reused { session_id });
            }
            let Some(session) = get_session(tx, &session_id)? else {
                return Ok(RefreshOutcome::Invalid);
            };
            if session.revoked_at.is_some() || session.expires_at <= now {
                return Ok(RefreshOutcome::Invalid);
            }
            let Some(user) = get_user(tx, &session.user_name)? else {
                return Ok(RefreshOutcome::Invalid);
            };
            if user.disabled {
                return Ok(RefreshOutcome::Invalid);
            }
            tx.execute(
                "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1",
                params![old, now.0],
            )
            .map_err(|e| db_err("using a refresh token", e))?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
                params![new, session_id, now.0],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Conflict("refresh token".into())
                } else {
                    db_err("storing a refresh token", e)
                }
            })?;
            tx.execute(
                "UPDATE sessions SET expires_at = ?2 WHERE id = ?1",
                params![session_id, new_expires_at.0],
            )
            .map_err(|e| db_err("extending a session", e))?;
            let session = Session {
                expires_at: new_expires_at,
                ..session
            };
            Ok(RefreshOutcome::Rotated { session, user })
        })
        .await
    }

    async fn active_session(&self, id: &str, now: Timestamp) -> StoreResult<Option<Session>> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            Ok(get_session(conn, &id)?.filter(|s| s.revoked_at.is_none() && s.expires_at > now))
        })
        .await
    }

    async fn revoke_session(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write("revoking a session", move |tx| {
            let n = tx
                .execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, now.0],
                )
                .map_err(|e| db_err("revoking a session", e))?;
            Ok(n > 0)
        })
        .await
    }

    async fn create_api_key(&self, key: NewApiKey, now: Timestamp) -> StoreResult<ApiKey> {
        self.write("creating an API key", move |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO api_keys (id, name, role, wells, key_hash, created_at,
                                           created_by, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (id) DO NOTHING",
                    params![
                        key.id,
                        key.name,
                        key.role.name(),
                        scope_column(&key.wells),
                        key.key_hash,
                        now.0,
                        key.created_by,
                        key.expires_at.map(|t| t.0)
                    ],
                )
                .map_err(|e| db_err("creating an API key", e))?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("API key {}", key.id)));
            }
            get_api_key(tx, &key.id)?
                .ok_or_else(|| StoreError::Internal("created API key vanished".into()))
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let id = id.to_owned();
        self.with_conn(move |conn| get_api_key(conn, &id)).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
                ))
                .map_err(|e| db_err("listing API keys", e))?;
            let rows = stmt
                .query_map([], row_to_key)
                .map_err(|e| db_err("listing API keys", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db_err("listing API keys", e))
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write("revoking an API key", move |tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, now.0],
                )
                .map_err(|e| db_err("revoking an API key", e))?;
            Ok(n > 0)
        })
        .await
    }

    async fn append_audit(&self, events: Vec<AuditEvent>) -> StoreResult<Vec<i64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.audit_key.clone();
        self.write("appending to the audit log", move |tx| {
            append_in(tx, key.as_ref(), events)
        })
        .await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let filter = filter.clone();
        self.with_conn(move |conn| {
            let (clause, mut values) = audit_where(&filter);
            values.push(rusqlite::types::Value::Integer(
                filter.effective_limit() as i64
            ));
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit {clause} ORDER BY id DESC LIMIT ?{}",
                values.len()
            );
            let mut stmt = conn
                .prepare(&sql)
                .map_err(|e| db_err("listing audit records", e))?;
            let rows = stmt
                .query_map(params_from_iter(values), row_to_audit)
                .map_err(|e| db_err("listing audit records", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db_err("listing audit records", e))
        })
        .await
    }

    async fn verify_audit(&self) -> StoreResult<AuditVerification> {
        // A connection of its own, so a long walk never holds up appends of this process;
        // one read transaction, so the walk sees a single snapshot.
        let path = self.inner.path.clone();
        let key = self.audit_key.clone();
        tokio::task::spawn_blocking(move || verify(&path, key))
            .await
            .map_err(|e| StoreError::Internal(format!("blocking task failed: {e}")))?
    }

    async fn prune_audit(
        &self,
        before: Timestamp,
        by: AuditEvent,
        scope: AuditPruneScope,
        max_records: Option<i64>,
    ) -> StoreResult<Option<AuditPrune>> {
        let key = self.audit_key.clone();
        crate::security::check_can_prune(key.as_ref())?;
        self.write("pruning the audit log", move |tx| {
            prune_in(tx, key.as_ref(), before, by, scope, max_records)
        })
        .await
    }
}

/// Appends `events` after the last record, in `tx` (which holds the write lock).
fn append_in(
    tx: &Transaction<'_>,
    key: Option<&AuditKey>,
    events: Vec<AuditEvent>,
) -> StoreResult<Vec<i64>> {
    // Under the IMMEDIATE lock no other connection can append between this read and our
    // inserts.
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| db_err("reading the last audit record", e))?;
    let (mut id, mut prev) = last.unwrap_or_else(|| (0, crate::security::AUDIT_GENESIS.to_owned()));
    crate::security::check_can_append(key, &prev)?;
    let mut stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO audit ({AUDIT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))
        .map_err(|e| db_err("appending to the audit log", e))?;
    let mut ids = Vec::with_capacity(events.len());
    for event in events {
        let event = normalized(event);
        id += 1;
        let hash = audit_chain_hash(key, &prev, id, &event);
        stmt.execute(params![
            id,
            event.ts.0,
            event.kind,
            event.request_id,
            event.method,
            event.route,
            event.status,
            event.actor,
            event.role,
            event.source,
            event.duration_ms,
            event.detail.to_string(),
            prev,
            hash
        ])
        .map_err(|e| db_err("appending to the audit log", e))?;
        ids.push(id);
        prev = hash;
    }
    Ok(ids)
}

/// Record `id` is a carried record or a prune record: part of a unit a prune keeps whole.
fn in_carried_unit(tx: &Transaction<'_>, id: i64) -> StoreResult<bool> {
    let kind: Option<String> = tx
        .query_row("SELECT kind FROM audit WHERE id = ?1", params![id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| db_err("pruning the audit log", e))?;
    Ok(matches!(
        kind.as_deref(),
        Some(AUDIT_CARRIED_KIND | AUDIT_PRUNED_KIND)
    ))
}

fn prune_in(
    tx: &Transaction<'_>,
    key: Option<&AuditKey>,
    before: Timestamp,
    by: AuditEvent,
    scope: AuditPruneScope,
    max_records: Option<i64>,
) -> StoreResult<Option<AuditPrune>> {
    let err = |e| db_err("pruning the audit log", e);
    let first: Option<i64> = tx
        .query_row("SELECT MIN(id) FROM audit", [], |r| r.get(0))
        .map_err(err)?;
    let Some(first) = first else {
        return Ok(None);
    };
    // The prefix ends before the first record that is not old enough.
    let young: Option<i64> = tx
        .query_row(
            "SELECT MIN(id) FROM audit WHERE ts >= ?1",
            params![before.0],
            |r| r.get(0),
        )
        .map_err(err)?;
    // The newest record always stays: the prune record is chained after it.
    let newest: i64 = tx
        .query_row("SELECT MAX(id) FROM audit", [], |r| r.get(0))
        .map_err(err)?;
    let mut last = young.map_or(newest - 1, |young| young - 1).min(newest - 1);
    // Never inside a run of carried records nor between it and its audit_pruned record:
    // they stay together, so the prune record still finds the carried records it names.
    if in_carried_unit(tx, last + 1)? {
        let before_run: Option<i64> = tx
            .query_row(
                "SELECT MAX(id) FROM audit WHERE id <= ?1 AND kind <> ?2",
                params![last, AUDIT_CARRIED_KIND],
                |r| r.get(0),
            )
            .map_err(err)?;
        last = before_run.unwrap_or(0);
    }
    if last < first {
        return Ok(None);
    }
    let [request, rejected] = AUDIT_REQUEST_KINDS;
    if scope == AuditPruneScope::Requests {
        let requests: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE id <= ?1 AND kind IN (?2, ?3)",
                params![last, request, rejected],
                |r| r.get(0),
            )
            .map_err(err)?;
        if requests == 0 {
            return Ok(None);
        }
    }
    // At most `max_records` (more when the batch would end inside carried records and their
    // prune record: then up to that prune record); the rest is left for the next call.
    let whole = last;
    if let Some(max) = max_records
        && first.saturating_add(max.max(1) - 1) < last
    {
        last = first + max.max(1) - 1;
        if in_carried_unit(tx, last + 1)? {
            let unit_end: Option<i64> = tx
                .query_row(
                    "SELECT MIN(id) FROM audit WHERE id > ?1 AND kind = ?2",
                    params![last, AUDIT_PRUNED_KIND],
                    |r| r.get(0),
                )
                .map_err(err)?;
            last = unit_end.map_or(whole, |end| end.min(whole));
        }
    }
    let mut carried = Vec::new();
    if scope == AuditPruneScope::Requests {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit
                 WHERE id <= ?1 AND kind NOT IN (?2, ?3) ORDER BY id"
            ))
            .map_err(err)?;
        let rows = stmt
            .query_map(params![last, request, rejected], row_to_audit)
            .map_err(err)?;
        for row in rows {
            carried.push(audit_carried_event(&row.map_err(err)?));
        }
    }
    let last_hash: String = tx
        .query_row("SELECT hash FROM audit WHERE id = ?1", params![last], |r| {
            r.get(0)
        })
        .map_err(err)?;
    // The append-only trigger is lifted for this transaction only (DDL is transactional).
    tx.execute_batch("DROP TRIGGER IF EXISTS audit_no_delete")
        .map_err(err)?;
    let count = tx
        .execute("DELETE FROM audit WHERE id <= ?1", params![last])
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    )
    .map_err(err)?;
    let n = carried.len() as i64;
    let mut events = carried;
    events.push(crate::security::audit_pruned_event(
        by, first, last, &last_hash, before, n,
    ));
    let ids = append_in(tx, key, events)?;
    Ok(Some(AuditPrune {
        first_id: first,
        last_id: last,
        count: count as i64,
        carried: n,
        last_hash,
        record_id: *ids.last().expect("the prune record was appended"),
        more: last < whole,
    }))
}

fn get_api_key(conn: &Connection, id: &str) -> StoreResult<Option<ApiKey>> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
        params![id],
        row_to_key,
    )
    .optional()
    .map_err(|e| db_err("reading an API key", e))
}

fn verify(path: &Path, key: Option<AuditKey>) -> StoreResult<AuditVerification> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err("opening the audit log", e))?;
    configure(&conn)?;
    let tx = conn
        .transaction()
        .map_err(|e| db_err("reading the audit log", e))?;
    let mut checker = AuditChainChecker::new(key);
    let mut after = 0i64;
    let mut stmt = tx
        .prepare(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .map_err(|e| db_err("reading the audit log", e))?;
    loop {
        let mut rows = stmt
            .query(params![after, VERIFY_PAGE])
            .map_err(|e| db_err("reading the audit log", e))?;
        let mut seen = 0;
        while let Some(row) = rows
            .next()
            .map_err(|e| db_err("reading the audit log", e))?
        {
            seen += 1;
            let id: i64 = row.get(0).map_err(|e| db_err("reading the audit log", e))?;
            after = id;
            let outcome = match row_to_audit(row) {
                Ok(record) => checker.check(&record),
                Err(e) => Err(format!("the record cannot be read ({e})")),
            };
            if let Err(reason) = outcome {
                return Ok(checker.verdict(Some((id, reason))));
            }
        }
        if seen < VERIFY_PAGE {
            break;
        }
    }
    Ok(checker.verdict(None))
}
