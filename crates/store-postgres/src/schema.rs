//! The schema, as versioned migrations embedded in the binary.
//!
//! Rules: a migration is never edited once released (its checksum is recorded and checked at
//! every start), never drops or rewrites data, and runs in one transaction under an advisory
//! lock so that several servers starting together apply it once. Migration 2 exists in two
//! flavours: native partitioning plus rollup tables on plain PostgreSQL, or a hypertable with
//! compression and continuous aggregates when TimescaleDB is available; the choice is made once,
//! when the database is first migrated, and recorded in `espwatch_settings`.

use std::fmt::Write as _;

use espwatch_store::StoreError;
use tokio_postgres::Client;

use crate::types::db_err;

/// Telemetry columns in `Measurements` slot order, frozen as of migration 2. A new channel
/// needs a new migration (`ALTER TABLE ... ADD COLUMN`), not an edit here.
pub const COLUMNS: [&str; 13] = [
    "frequency_hz",
    "motor_current_a",
    "motor_voltage_v",
    "intake_pressure_psi",
    "discharge_pressure_psi",
    "tubing_pressure_psi",
    "intake_temp_c",
    "motor_temp_c",
    "vibration_x_g",
    "vibration_y_g",
    "flow_rate_bpd",
    "gor_scf_bbl",
    "water_cut_pct",
];

/// How telemetry is laid out in this database.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Plain PostgreSQL: daily range partitions and rollup tables maintained by espwatch.
    Partitioned,
    /// TimescaleDB: hypertable, native compression, continuous aggregates.
    Timescale,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Partitioned => "partitioned",
            Flavor::Timescale => "timescaledb",
        }
    }
}

/// Whether to use TimescaleDB when the database is first migrated.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum TimescaleMode {
    /// Use it when the extension is installed or installable; otherwise plain PostgreSQL.
    #[default]
    Auto,
    /// Plain PostgreSQL even when TimescaleDB is available.
    Off,
    /// Fail unless TimescaleDB can be used.
    Require,
}

/// The rollup widths, widest first, in microseconds, with their relation suffix.
pub const ROLLUPS: [(i64, &str); 3] = [
    (86_400_000_000, "1d"),
    (3_600_000_000, "1h"),
    (60_000_000, "1m"),
];

pub const MINUTE_MICROS: i64 = 60_000_000;
pub const DAY_MICROS: i64 = 86_400_000_000;

/// Name of the relation holding rollups of the given suffix for a flavour.
pub fn rollup_relation(flavor: Flavor, suffix: &str) -> String {
    match flavor {
        Flavor::Partitioned => format!("rollup_{suffix}"),
        Flavor::Timescale => format!("telemetry_{suffix}"),
    }
}

pub fn column_list() -> String {
    COLUMNS.join(", ")
}

fn channel_defs() -> String {
    COLUMNS
        .iter()
        .map(|c| format!(",\n    {c} float8"))
        .collect()
}

/// Per channel: sample count, sum, min, max and the last value (of the latest sample that has
/// the channel), which is what avg/min/max/last per bucket need to be exact when combined.
fn rollup_defs() -> String {
    let mut s = String::new();
    for c in COLUMNS {
        let _ = write!(
            s,
            ",\n    {c}_n bigint NOT NULL, {c}_sum float8, {c}_min float8, {c}_max float8, {c}_last float8"
        );
    }
    s
}

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: String,
}

fn common() -> Migration {
    Migration {
        version: 1,
        name: "registry, latest readings, heartbeat, rollup work queue",
        sql: format!(
            r#"
CREATE TABLE espwatch_settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE wells (
    well_id text COLLATE "C" PRIMARY KEY,
    meta jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    auto_registered boolean NOT NULL
);
-- Newest reading per well, maintained by the writer in the same transaction as the readings.
CREATE TABLE well_latest (
    well_id text COLLATE "C" PRIMARY KEY,
    ts timestamptz NOT NULL{channels}
);
-- Written by the readiness probe, so a probe proves a commit works.
CREATE TABLE store_heartbeat (
    id smallint PRIMARY KEY,
    beat_at timestamptz NOT NULL
);
-- Minutes whose rollups lag the raw data: appended by the writer in the ingest transaction,
-- consumed by the rollup maintenance. Queries compute these minutes from raw data.
CREATE TABLE rollup_dirty (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    well_id text COLLATE "C" NOT NULL,
    minute timestamptz NOT NULL
);
CREATE INDEX rollup_dirty_well_minute ON rollup_dirty (well_id, minute);
"#,
            channels = channel_defs()
        ),
    }
}

fn telemetry_table() -> String {
    format!(
        r#"CREATE TABLE telemetry (
    well_id text COLLATE "C" NOT NULL,
    ts timestamptz NOT NULL{channels},
    PRIMARY KEY (well_id, ts)
)"#,
        channels = channel_defs()
    )
}

/// Alarms of the online diagnostics; times are Unix microseconds like the embedded store's.
fn alarms() -> Migration {
    Migration {
        version: 3,
        name: "alarms",
        sql: "CREATE TABLE alarms (
    id BIGSERIAL PRIMARY KEY,
    well_id TEXT NOT NULL,
    condition TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared')),
    confidence DOUBLE PRECISION NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    acknowledged_by TEXT,
    acknowledged_at BIGINT,
    comment TEXT,
    detail TEXT NOT NULL
);
CREATE UNIQUE INDEX alarms_one_open ON alarms (well_id, condition) WHERE state <> 'cleared';
CREATE INDEX alarms_by_well ON alarms (well_id, started_at);
"
        .to_owned(),
    }
}

/// Users, sessions with single-use refresh tokens, API keys and the chained audit log (see
/// `espwatch_store::security`). Times are Unix microseconds like the embedded store's; text
/// keys use the "C" collation so listings sort by bytes on both backends. `audit.detail` is
/// text, not jsonb: the chain hash covers its exact JSON text. Audit ids are assigned by the
/// appender (last + 1 under an advisory lock), so there is no sequence and no gap. The audit
/// table stays a plain table under TimescaleDB as well (a hypertable would need `ts` in the
/// primary key).
fn security() -> Migration {
    Migration {
        version: 4,
        name: "security: users, sessions, refresh tokens, API keys, audit log",
        sql: r#"CREATE TABLE users (
    name text COLLATE "C" PRIMARY KEY,
    role text NOT NULL,
    password_hash text NOT NULL,
    wells text,
    disabled boolean NOT NULL DEFAULT false,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    failed_logins integer NOT NULL DEFAULT 0,
    failed_since bigint,
    locked_until bigint
);
CREATE TABLE sessions (
    id text COLLATE "C" PRIMARY KEY,
    user_name text COLLATE "C" NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint,
    source text
);
CREATE INDEX sessions_by_user ON sessions (user_name);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE TABLE refresh_tokens (
    hash text COLLATE "C" PRIMARY KEY,
    session_id text COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at bigint NOT NULL,
    used_at bigint
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
CREATE TABLE api_keys (
    id text COLLATE "C" PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL,
    wells text,
    key_hash text NOT NULL,
    created_at bigint NOT NULL,
    created_by text NOT NULL,
    expires_at bigint,
    revoked_at bigint
);
CREATE TABLE audit (
    id bigint PRIMARY KEY,
    ts bigint NOT NULL,
    kind text NOT NULL,
    request_id text,
    method text,
    route text,
    status integer,
    actor text,
    role text,
    source text,
    duration_ms double precision,
    detail text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX audit_by_actor ON audit (actor, id);
CREATE INDEX audit_by_kind ON audit (kind, id);
CREATE INDEX audit_by_ts ON audit (ts);
"#
        .to_owned(),
    }
}

fn partitioned() -> Migration {
    let mut sql = format!(
        "{table} PARTITION BY RANGE (ts);\n",
        table = telemetry_table()
    );
    for (_, suffix) in ROLLUPS {
        let _ = writeln!(
            sql,
            r#"CREATE TABLE rollup_{suffix} (
    well_id text COLLATE "C" NOT NULL,
    bucket timestamptz NOT NULL,
    n bigint NOT NULL{rollups},
    PRIMARY KEY (well_id, bucket)
);"#,
            rollups = rollup_defs()
        );
    }
    sql.push_str("INSERT INTO espwatch_settings VALUES ('flavor', 'partitioned');\n");
    Migration {
        version: 2,
        name: "telemetry: daily partitions and 1m/1h/1d rollup tables",
        sql,
    }
}

fn timescale() -> Migration {
    let mut aggs = String::from("count(*) AS n");
    for c in COLUMNS {
        let _ = write!(
            aggs,
            ", count({c}) AS {c}_n, sum({c}) AS {c}_sum, min({c}) AS {c}_min, max({c}) AS {c}_max, \
             last({c}, ts) FILTER (WHERE {c} IS NOT NULL) AS {c}_last"
        );
    }
    let mut sql = format!(
        r#"CREATE EXTENSION IF NOT EXISTS timescaledb;
{table};
SELECT create_hypertable('telemetry', 'ts', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'well_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('telemetry', INTERVAL '7 days');
"#,
        table = telemetry_table()
    );
    // Real-time aggregates (materialized_only = false): the not yet materialized tail is
    // computed from raw data at query time, so the views always agree with the hypertable.
    for (width, suffix, start, schedule) in [
        ("1 minute", "1m", "3 days", "1 minute"),
        ("1 hour", "1h", "14 days", "15 minutes"),
        ("1 day", "1d", "90 days", "1 hour"),
    ] {
        let _ = write!(
            sql,
            r#"CREATE MATERIALIZED VIEW telemetry_{suffix}
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT well_id, time_bucket(INTERVAL '{width}', ts) AS bucket, {aggs}
    FROM telemetry GROUP BY well_id, time_bucket(INTERVAL '{width}', ts)
    WITH NO DATA;
SELECT add_continuous_aggregate_policy('telemetry_{suffix}',
    start_offset => INTERVAL '{start}', end_offset => INTERVAL '{width}',
    schedule_interval => INTERVAL '{schedule}');
"#
        );
    }
    sql.push_str("INSERT INTO espwatch_settings VALUES ('flavor', 'timescaledb');\n");
    Migration {
        version: 2,
        name: "telemetry: hypertable, compression, continuous aggregates 1m/1h/1d",
        sql,
    }
}

/// FNV-1a: a stable fingerprint of a migration's text (not security relevant).
fn checksum(sql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Makes the audit table append-only inside the database too: UPDATE, DELETE and TRUNCATE
/// raise. The hash chain detects changes made by anyone who can disable the trigger; this
/// stops everyone else (and any bug) from making them.
fn audit_append_only() -> Migration {
    Migration {
        version: 5,
        name: "audit log is append-only",
        sql: r#"CREATE FUNCTION espwatch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION espwatch_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION espwatch_audit_append_only();
"#
        .into(),
    }
}

/// The rollup work queue holds runs of minutes instead of single minutes: a row covers
/// `minute ..= last_minute` (`NULL`: the one minute, as rows queued before this migration), so a
/// writer round queues one row per well and run of nearby minutes instead of one per minute.
fn rollup_queue_ranges() -> Migration {
    Migration {
        version: 6,
        name: "rollup work queue holds runs of minutes",
        sql: "ALTER TABLE rollup_dirty ADD COLUMN last_minute timestamptz;\n".into(),
    }
}

/// Alarm notifications: channels, routing rules and the durable outbox (see
/// `espwatch_store::notify`). Times are Unix microseconds like the alarms'.
fn notifications() -> Migration {
    Migration {
        version: 7,
        name: "notification channels, rules and outbox",
        sql: "CREATE TABLE notify_channels (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('webhook', 'email')),
    target TEXT NOT NULL,
    secret TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE notify_rules (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    channel_id BIGINT NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    filter TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE notify_outbox (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    channel_id BIGINT NOT NULL,
    rule_id BIGINT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notify_outbox_by_channel ON notify_outbox (channel_id, id);
"
        .to_owned(),
    }
}

/// What operators told a well's diagnostics (retrain window, transient mark), kept so that the
/// node diagnosing the well, after a restart or an ownership move too, rebuilds with it (see
/// `espwatch_store::WellDirectives`). `revision` comes from one sequence: a node that missed a
/// change reads those above the last it saw.
fn well_directives() -> Migration {
    Migration {
        version: 12,
        name: "well directives of the diagnostics",
        sql: r#"CREATE SEQUENCE well_directives_revision;
CREATE TABLE well_directives (
    well_id TEXT COLLATE "C" PRIMARY KEY,
    revision BIGINT NOT NULL,
    retrain_from BIGINT,
    retrain_until BIGINT,
    transient_marked_at BIGINT,
    transient_until BIGINT
);
CREATE INDEX well_directives_by_revision ON well_directives (revision);
"#
        .into(),
    }
}

/// User names unique ignoring (ASCII) case (issue 18 item 14): a unique index on `lower(name)`
/// (the column's "C" collation folds ASCII letters only, as the embedded store's NOCASE does),
/// so two concurrent creations of `Alice` and `alice` cannot both succeed. A database that
/// already holds such names is refused, naming them: which account to keep is the operator's
/// decision (the migration applies at the next start once only one of each is left).
fn user_names_any_case() -> Migration {
    Migration {
        version: 10,
        name: "user names unique ignoring case",
        sql: r#"DO $$
DECLARE
    duplicates text;
BEGIN
    SELECT string_agg(spellings, '; ' ORDER BY spellings) INTO duplicates FROM (
        SELECT string_agg(format('%L', name), ', ' ORDER BY name) AS spellings
        FROM users GROUP BY lower(name) HAVING count(*) > 1
    ) AS same_name;
    IF duplicates IS NOT NULL THEN
        RAISE EXCEPTION 'the users table holds user names that differ only in case: %. User names are unique ignoring case from this version on: keep one account of each group and remove the others (DELETE FROM users WHERE name = ''NAME''), then start again', duplicates;
    END IF;
END
$$;
CREATE UNIQUE INDEX users_name_any_case ON users (lower(name));
"#
        .into(),
    }
}

/// Indexes in the order `GET /api/v1/alarms` pages by (issue 19): keyset on `(started_at DESC,
/// id DESC)`, for all wells, for the open ones (the console's `state=open` read), and per well
/// (the well page; it replaces `alarms_by_well (well_id, started_at)`, a prefix of it). The
/// list's `(started_at, id) < (cursor)` is then an index condition, so a page costs its own
/// rows however deep it is, instead of a sort of the whole table.
fn alarm_paging() -> Migration {
    Migration {
        version: 11,
        name: "alarm paging indexes",
        sql: "CREATE INDEX alarms_by_start ON alarms (started_at DESC, id DESC);
CREATE INDEX alarms_open_by_start ON alarms (started_at DESC, id DESC) WHERE state <> 'cleared';
CREATE INDEX alarms_by_well_start ON alarms (well_id, started_at DESC, id DESC);
DROP INDEX IF EXISTS alarms_by_well;
"
        .into(),
    }
}

/// Before migration 10: refuses a users table holding names that differ only in (ASCII)
/// case, naming each group (`'Alice', 'alice'; 'BOB', 'bob'`) and the command that repairs it.
async fn check_user_names_any_case(client: &Client) -> Result<(), StoreError> {
    let err = |what: &'static str| move |e| db_err(what, e);
    let exists: bool = client
        .query_one("SELECT to_regclass('users') IS NOT NULL", &[])
        .await
        .map_err(err("looking for the users table"))?
        .get(0);
    if !exists {
        return Ok(());
    }
    let names: Vec<String> = client
        .query(
            "SELECT name FROM users WHERE lower(name) IN
                 (SELECT lower(name) FROM users GROUP BY lower(name) HAVING count(*) > 1)
             ORDER BY lower(name), name",
            &[],
        )
        .await
        .map_err(err("looking for user names that differ only in case"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let mut groups: Vec<Vec<String>> = Vec::new();
    for name in names {
        match groups.last_mut() {
            Some(group) if group[0].eq_ignore_ascii_case(&name) => group.push(name),
            _ => groups.push(vec![name]),
        }
    }
    let groups = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|n| format!("'{}'", n.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let hint = espwatch_store::security::case_duplicates_hint("--database-url URL");
    Err(StoreError::Internal(format!(
        "the users table holds user names that differ only in case: {groups}. {hint}"
    )))
}

/// A fingerprint of all migrations of both flavours (for test templates).
pub fn fingerprint() -> u64 {
    checksum(&format!(
        "{}{}{}{}{}{}{}{}{}{}{}{}{}",
        common().sql,
        partitioned().sql,
        timescale().sql,
        alarms().sql,
        security().sql,
        audit_append_only().sql,
        rollup_queue_ranges().sql,
        notifications().sql,
        notify_channel_amqp().sql,
        rollup_compression(Flavor::Timescale).sql,
        user_names_any_case().sql,
        alarm_paging().sql,
        well_directives().sql
    )) as u64
}

/// Notification channels of kind `amqp` (events on a RabbitMQ topic exchange).
fn notify_channel_amqp() -> Migration {
    Migration {
        version: 8,
        name: "notification channels of kind amqp",
        sql: "ALTER TABLE notify_channels DROP CONSTRAINT IF EXISTS notify_channels_kind_check;
ALTER TABLE notify_channels ADD CONSTRAINT notify_channels_kind_check
    CHECK (kind IN ('webhook', 'email', 'amqp'));
"
        .into(),
    }
}

/// Native compression of the 1m/1h/1d continuous aggregates (TimescaleDB; a no-op on plain
/// PostgreSQL, whose rollup tables espwatch maintains itself). Segmented by well and ordered by
/// bucket, like the hypertable; each rollup is compressed once it is well past the window its
/// refresh policy still rewrites (start offsets 3 d / 14 d / 90 d), so a refresh never has to
/// decompress: 1m after 7 days, 1h after 30 days, 1d after 180 days. Compressed rollup chunks
/// answer the same queries (the real-time union is unchanged).
fn rollup_compression(flavor: Flavor) -> Migration {
    let mut sql = String::new();
    if flavor == Flavor::Timescale {
        for (suffix, after) in [("1m", "7 days"), ("1h", "30 days"), ("1d", "180 days")] {
            let _ = write!(
                sql,
                "ALTER MATERIALIZED VIEW telemetry_{suffix} SET (
    timescaledb.compress = true,
    timescaledb.compress_segmentby = 'well_id',
    timescaledb.compress_orderby = 'bucket DESC'
);
SELECT add_compression_policy('telemetry_{suffix}', compress_after => INTERVAL '{after}', if_not_exists => true);
"
            );
        }
    } else {
        sql.push_str("SELECT 1;\n");
    }
    Migration {
        version: 9,
        name: "compressed 1m/1h/1d continuous aggregates (TimescaleDB)",
        sql,
    }
}

/// Advisory lock keys (arbitrary constants, namespaced by the first word).
pub const LOCK_MIGRATE: i64 = 0x6573_7077_0001;
pub const LOCK_PARTITIONS: i64 = 0x6573_7077_0002;
pub const LOCK_ROLLUPS: i64 = 0x6573_7077_0003;
/// Serializes audit appends (transaction-scoped).
pub const LOCK_AUDIT: i64 = 0x6573_7077_0004;

/// What `migrate` did.
#[derive(Clone, Debug)]
pub struct MigrationReport {
    pub flavor: Flavor,
    /// Versions applied by this call (empty when the schema was current).
    pub applied: Vec<(i32, &'static str)>,
    /// Why TimescaleDB is not used, when it is not.
    pub timescale_note: Option<String>,
    /// True when `auto` fell back to plain PostgreSQL on a server where TimescaleDB is
    /// installed but not usable as configured: the note is then a warning for operators.
    pub timescale_fallback: bool,
}

/// Brings the schema up to date; idempotent, safe to run from several processes at once.
pub async fn migrate(
    client: &mut Client,
    mode: TimescaleMode,
) -> Result<MigrationReport, StoreError> {
    let err = |what: &'static str| move |e| db_err(what, e);
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await
        .map_err(err("preparing to migrate"))?;
    client
        .query("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATE])
        .await
        .map_err(err("taking the migration lock"))?;
    let result = migrate_locked(client, mode).await;
    let _ = client
        .query("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATE])
        .await;
    result
}

async fn migrate_locked(
    client: &mut Client,
    mode: TimescaleMode,
) -> Result<MigrationReport, StoreError> {
    let err = |what: &'static str| move |e| db_err(what, e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS espwatch_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum bigint NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(err("creating the migrations table"))?;
    let done: Vec<(i32, i64)> = client
        .query(
            "SELECT version, checksum FROM espwatch_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(err("reading applied migrations"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // The flavour: recorded, or decided now (before migration 2 runs).
    let recorded: Option<String> = if done.iter().any(|(v, _)| *v >= 1) {
        client
            .query_opt(
                "SELECT value FROM espwatch_settings WHERE key = 'flavor'",
                &[],
            )
            .await
            .map_err(err("reading the store flavour"))?
            .map(|r| r.get(0))
    } else {
        None
    };
    let mut timescale_note = None;
    let mut timescale_fallback = false;
    let flavor = match recorded.as_deref() {
        Some("timescaledb") => Flavor::Timescale,
        Some(_) => {
            if mode != TimescaleMode::Off {
                timescale_note =
                    Some("this database was set up for plain PostgreSQL (partitions)".into());
            }
            Flavor::Partitioned
        }
        None => match mode {
            TimescaleMode::Off => {
                timescale_note = Some("disabled by configuration".into());
                Flavor::Partitioned
            }
            TimescaleMode::Auto | TimescaleMode::Require => match timescale_usable(client).await {
                Ok(()) => Flavor::Timescale,
                Err(unusable) if mode == TimescaleMode::Require => {
                    return Err(StoreError::Unavailable(format!(
                        "TimescaleDB required but not usable: {}",
                        unusable.why
                    )));
                }
                Err(unusable) => {
                    timescale_fallback = unusable.fixable;
                    timescale_note = Some(unusable.why);
                    Flavor::Partitioned
                }
            },
        },
    };

    // Migration 10 refuses names that differ only in case with its own message (released,
    // never edited); this check comes first to name the repair command as well.
    if !done.iter().any(|(v, _)| *v == 10) {
        check_user_names_any_case(client).await?;
    }
    let all = [
        common(),
        match flavor {
            Flavor::Partitioned => partitioned(),
            Flavor::Timescale => timescale(),
        },
        alarms(),
        security(),
        audit_append_only(),
        rollup_queue_ranges(),
        notifications(),
        notify_channel_amqp(),
        rollup_compression(flavor),
        user_names_any_case(),
        alarm_paging(),
        well_directives(),
    ];
    let mut applied = Vec::new();
    for m in &all {
        let sum = checksum(&m.sql);
        match done.iter().find(|(v, _)| *v == m.version) {
            Some((_, recorded)) if *recorded == sum => continue,
            Some(_) => {
                return Err(StoreError::Internal(format!(
                    "migration {} ({}) differs from the one applied to this database; \
                     refusing to continue",
                    m.version, m.name
                )));
            }
            None => {}
        }
        let tx = client
            .transaction()
            .await
            .map_err(err("starting a migration"))?;
        tx.batch_execute(&m.sql)
            .await
            .map_err(|e| db_err(&format!("applying migration {} ({})", m.version, m.name), e))?;
        tx.execute(
            "INSERT INTO espwatch_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &sum],
        )
        .await
        .map_err(err("recording a migration"))?;
        tx.commit().await.map_err(err("committing a migration"))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push((m.version, m.name));
    }
    let known = all.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newer) = done.iter().map(|(v, _)| *v).max().filter(|v| *v > known) {
        return Err(StoreError::Internal(format!(
            "the database schema (version {newer}) is newer than this espwatch understands"
        )));
    }
    Ok(MigrationReport {
        flavor,
        applied,
        timescale_note,
        timescale_fallback,
    })
}

/// Why TimescaleDB cannot be used on this server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimescaleUnusable {
    /// The explanation, including how to enable it where that is known.
    pub why: String,
    /// True when the package is installed but something on the server must change (a setting
    /// or a privilege): worth a warning, unlike a server that simply does not have it.
    pub fixable: bool,
}

/// The hint given whenever TimescaleDB is installed but not loaded at server start.
pub const PRELOAD_HINT: &str = "TimescaleDB is installed on this PostgreSQL server but not preloaded: \
     add it to shared_preload_libraries in postgresql.conf \
     (shared_preload_libraries = 'timescaledb') and restart PostgreSQL";

/// Whether `timescaledb` is listed in a `shared_preload_libraries` value.
pub fn preloads_timescaledb(setting: &str) -> bool {
    setting
        .split(',')
        .map(|lib| lib.trim().trim_matches('"').trim())
        .any(|lib| lib == "timescaledb" || lib.ends_with("/timescaledb"))
}

/// Ok when TimescaleDB is installed here or can be installed now; otherwise why not.
///
/// `CREATE EXTENSION timescaledb` on a server that does not preload the library is answered
/// with FATAL and the connection is closed, so the catalog and the setting are read first and
/// the extension is only created (in a transaction that is rolled back) when it is preloaded.
async fn timescale_usable(client: &mut Client) -> Result<(), TimescaleUnusable> {
    let probe_failed = |e: tokio_postgres::Error| TimescaleUnusable {
        why: format!("cannot probe for TimescaleDB: {e}"),
        fixable: false,
    };
    let available = client
        .query_opt(
            "SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await
        .map_err(probe_failed)?;
    if available.is_none() {
        return Err(TimescaleUnusable {
            why: "the timescaledb extension is not installed on this PostgreSQL server".into(),
            fixable: false,
        });
    }
    let preload: String = client
        .query_one("SHOW shared_preload_libraries", &[])
        .await
        .map_err(probe_failed)?
        .get(0);
    if !preloads_timescaledb(&preload) {
        return Err(TimescaleUnusable {
            why: PRELOAD_HINT.into(),
            fixable: true,
        });
    }
    // Preloaded: creating it can still fail, e.g. for lack of privilege; try in a transaction
    // that is rolled back, so the probe leaves nothing behind.
    let tx = client.transaction().await.map_err(probe_failed)?;
    let created = tx
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await;
    let _ = tx.rollback().await;
    created.map_err(|e| TimescaleUnusable {
        why: format!(
            "CREATE EXTENSION timescaledb failed: {}",
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        ),
        fixable: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use espwatch_core::Field;

    #[test]
    fn preload_setting_is_parsed_as_a_list() {
        assert!(preloads_timescaledb("timescaledb"));
        assert!(preloads_timescaledb("pg_stat_statements, \"timescaledb\""));
        assert!(preloads_timescaledb("$libdir/timescaledb"));
        assert!(!preloads_timescaledb(""));
        assert!(!preloads_timescaledb("pg_stat_statements"));
        assert!(!preloads_timescaledb("timescaledb_toolkit"));
    }

    #[test]
    fn columns_follow_the_measurement_slots() {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, COLUMNS);
    }
}

#[cfg(test)]
mod pinned {
    /// Released migrations must never change (databases record their checksums). If this
    /// fails, add a new migration instead of editing an old one.
    #[test]
    fn released_migrations_are_unchanged() {
        let got = [
            super::checksum(&super::common().sql),
            super::checksum(&super::partitioned().sql),
            super::checksum(&super::timescale().sql),
            super::checksum(&super::alarms().sql),
            super::checksum(&super::security().sql),
            super::checksum(&super::audit_append_only().sql),
            super::checksum(&super::rollup_queue_ranges().sql),
            super::checksum(&super::notifications().sql),
            super::checksum(&super::rollup_compression(super::Flavor::Timescale).sql),
            super::checksum(&super::rollup_compression(super::Flavor::Partitioned).sql),
            super::checksum(&super::user_names_any_case().sql),
            super::checksum(&super::alarm_paging().sql),
            super::checksum(&super::well_directives().sql),
        ];
        assert_eq!(got, PINNED);
    }

    const PINNED: [i64; 13] = [
        4448778947527403899,
        -652217944561075580,
        -7868476583824631736,
        1888805261445544382,
        1302102392259433311,
        4249714050715942311,
        -4329375184339693379,
        -3371725504426712657,
        -5329364373235496148,
        -7422462322345546189,
        3141637351013811937,
        -3204515665207860395,
        1658562631125965638,
    ];
}
