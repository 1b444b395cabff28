//! espwatch-store-postgres: the [`Store`] trait on PostgreSQL, with TimescaleDB when available.
//!
//! - [`schema`]: embedded versioned migrations (plain: daily partitions + rollup tables;
//!   TimescaleDB: hypertable, compression, continuous aggregates).
//! - [`writer`]: the group-commit writer (binary COPY into staging, `INSERT ... ON CONFLICT DO
//!   NOTHING`), answering appends only after COMMIT.
//! - [`rollups`]: rollup maintenance and bucketed queries from the fitting rollup, equal to
//!   `espwatch_core::series::evaluate` over raw points.
//! - [`partitions`]: daily partitions ahead of time and on demand.
//! - [`connect`]: URL, TLS (rustls/ring), statement timeout, pool.
//! - `security`: the `SecurityStore` (users, sessions, API keys, chained audit log).
//!
//! Reads go through a pool (deadpool); a connection that died (database restart, terminated
//! backend) is replaced on next checkout, and idempotent reads are retried once.

mod alarms;
mod connect;
mod notify;
mod partitions;
mod retention;
mod rollups;
pub mod schema;
mod security;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use espwatch_core::{
    Point, Reading, Series, TelemetryQuery, TimeRange, Timestamp, WellId, WellMeta,
};
use espwatch_store::{
    AppendOptions, AppendOutcome, LatestReading, ProbeResult, Store, StoreError, StoreHealth,
    StoreResult, StoreStats, WellRecord,
};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

#[cfg(feature = "testing")]
pub use connect::Connector;
#[cfg(not(feature = "testing"))]
use connect::Connector;
pub use connect::redact_url;
pub use schema::{Flavor, MigrationReport, PRELOAD_HINT, TimescaleMode};
#[cfg(feature = "testing")]
pub use types::CopyEncoder;

use crate::schema::column_list;
use crate::types::{
    MAX_SUPPORTED, MIN_SUPPORTED, PgTs, db_err, get, measurements_from_row, pool_err,
};

/// Settings of the PostgreSQL backend.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Pooled connections for reads and registry changes (the writer has its own).
    pub pool_size: usize,
    /// Server-side limit per statement.
    pub statement_timeout: Duration,
    pub timescale: TimescaleMode,
    /// TimescaleDB chunk width (`set_chunk_time_interval`), applied at every start.
    pub chunk_interval: Duration,
    /// TimescaleDB: compress chunks created longer ago than this. By creation, not by the age
    /// of their data: a backfill of old readings is not compressed while it is still being
    /// loaded (which leaves the chunk's emptied indexes at full size, ~58 B/reading, until a
    /// `REINDEX`); live chunks are compressed this long after they were started.
    pub compress_after: Duration,
    /// Plain PostgreSQL: daily partitions kept ready this many days ahead.
    pub partitions_ahead_days: u32,
    /// Upper bound of readings group-committed in one transaction.
    pub max_readings_per_commit: usize,
    /// Writer connections, each group-committing whatever is queued when it is free. Four keep
    /// the database busy while others wait on a commit or on the network (the ingest benchmark's
    /// server path gained about a quarter over two); writers share no rows, so they never wait
    /// on each other.
    pub writers: usize,
    /// A round whose connection broke before COMMIT is retried on new connections this long.
    pub retry_window: Duration,
    /// How often queued rollup work is applied.
    pub rollup_interval: Duration,
    /// While ingestion keeps the writers busy more than half the time, the refresher leaves
    /// rollup work queued until it is this old, so bursts are written at full speed. Queries
    /// stay exact meanwhile (queued minutes are computed from raw rows); zero never defers.
    pub rollup_max_lag: Duration,
    /// A bulk load (`espwatch ingest`), whose appends are large and few at a time:
    /// - each append is a round of its own: merged (group commit), the appends of files
    ///   loaded side by side were COPied one after the other on one connection while the
    ///   other writers waited, so the database worked on one core;
    /// - no rollup refresh while the store is open, one at [`Store::close`], after the last
    ///   commit: the load's database time goes to the load (queries stay exact meanwhile,
    ///   queued minutes come from raw rows). On TimescaleDB not even at close: the queued
    ///   work waits for a server's refresher (and the continuous aggregates' own policies
    ///   materialise their recent windows), queries and latest values exact meanwhile.
    pub bulk_load: bool,
    /// Schema to work in (`search_path`); `None` uses the role's default (normally `public`).
    pub schema: Option<String>,
    /// Apply pending migrations at open (otherwise refuse to open an outdated schema).
    pub migrate: bool,
    /// Keys the audit chain (HMAC); `None`: plain SHA-256 (see `espwatch_store::AuditKey`).
    pub audit_key: Option<espwatch_store::AuditKey>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            timescale: TimescaleMode::Auto,
            chunk_interval: Duration::from_secs(86_400),
            compress_after: Duration::from_secs(7 * 86_400),
            partitions_ahead_days: 3,
            max_readings_per_commit: 50_000,
            writers: 4,
            retry_window: Duration::from_secs(10),
            rollup_interval: Duration::from_secs(5),
            rollup_max_lag: Duration::from_secs(60),
            bulk_load: false,
            schema: None,
            migrate: true,
            audit_key: None,
        }
    }
}

/// What every part of the store shares.
pub(crate) struct Shared {
    pub connector: Connector,
    pub pool: Pool,
    pub flavor: Flavor,
    pub commits: AtomicU64,
    pub refreshes: AtomicU64,
    /// Time the writers have spent in rounds, all writers summed (micros).
    pub writer_busy_micros: AtomicU64,
    pub closed: AtomicBool,
    pub audit_key: Option<espwatch_store::AuditKey>,
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    sender: std::sync::Mutex<Option<mpsc::UnboundedSender<writer::Job>>>,
    /// Dropping it stops the maintenance task.
    stop: watch::Sender<bool>,
    writer_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    maintenance_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// [`PostgresOptions::bulk_load`]: rollups are brought up to date at close.
    bulk_load: bool,
}

pub(crate) fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    Timestamp(micros)
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("PostgreSQL store is closed".into())
}

fn connector(url: &str, opts: &PostgresOptions) -> StoreResult<Connector> {
    Connector::new(
        url,
        opts.statement_timeout,
        opts.schema.as_deref(),
        "espwatch",
    )
}

/// Applies pending migrations (what `espwatch migrate` runs).
pub async fn migrate(url: &str, opts: &PostgresOptions) -> StoreResult<MigrationReport> {
    let connector = connector(url, opts)?;
    let mut client = connector.connect().await?;
    if let Some(schema) = &opts.schema {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            ))
            .await
            .map_err(|e| db_err("creating the schema", e))?;
    }
    schema::migrate(&mut client, opts.timescale).await
}

/// Every account of the database (name, role, state, creation), read without migrating: the
/// store refuses to open (migration 10) while names differ only in case, and
/// `espwatch users resolve-duplicates` reads them here. Nothing is changed; empty before the
/// users table exists.
pub async fn read_user_accounts(
    url: &str,
    opts: &PostgresOptions,
) -> StoreResult<Vec<espwatch_store::CaseDuplicate>> {
    let client = connector(url, opts)?.connect().await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('users') IS NOT NULL", &[])
        .await
        .map_err(|e| db_err("looking for the users table", e))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    client
        .query(
            "SELECT name, role, disabled, created_at FROM users ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| db_err("reading users", e))?
        .iter()
        .map(|r| {
            Ok(espwatch_store::CaseDuplicate {
                name: r.try_get(0).map_err(|e| db_err("reading users", e))?,
                role: r.try_get(1).map_err(|e| db_err("reading users", e))?,
                disabled: r.try_get(2).map_err(|e| db_err("reading users", e))?,
                created_at: Timestamp(r.try_get(3).map_err(|e| db_err("reading users", e))?),
            })
        })
        .collect()
}

/// Applies `espwatch users resolve-duplicates`' plan in one transaction, without migrating:
/// each account is renamed (and disabled when the plan says so) and its sessions end (their
/// tokens carry the old name). Refuses a plan whose account is gone or whose new name is
/// taken (ignoring case); the audit records are the caller's, once the store opens.
pub async fn rename_user_accounts(
    url: &str,
    opts: &PostgresOptions,
    plan: &[espwatch_store::DuplicateRename],
    now: Timestamp,
) -> StoreResult<()> {
    let mut client = connector(url, opts)?.connect().await?;
    let err = |what: &'static str| move |e| db_err(what, e);
    let tx = client.transaction().await.map_err(err("renaming users"))?;
    tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        .await
        .map_err(err("locking the users table"))?;
    for rename in plan {
        let taken: i64 = tx
            .query_one(
                "SELECT count(*) FROM users WHERE lower(name) = lower($1::text COLLATE \"C\")",
                &[&rename.to],
            )
            .await
            .map_err(err("renaming users"))?
            .get(0);
        if taken > 0 {
            return Err(StoreError::Conflict(format!("user {:?}", rename.to)));
        }
        tx.execute("DELETE FROM sessions WHERE user_name = $1", &[&rename.from])
            .await
            .map_err(err("ending the sessions of a renamed user"))?;
        let changed = tx
            .execute(
                "UPDATE users SET name = $2, updated_at = $3, disabled = disabled OR $4
                 WHERE name = $1",
                &[&rename.from, &rename.to, &now.0, &rename.disable],
            )
            .await
            .map_err(err("renaming users"))?;
        if changed != 1 {
            return Err(StoreError::Internal(format!(
                "user {:?} is gone: run the command again",
                rename.from
            )));
        }
    }
    tx.commit().await.map_err(err("renaming users"))
}

impl PostgresStore {
    /// Connects, migrates (unless `opts.migrate` is false), prepares partitions and TimescaleDB
    /// settings, and starts the writer and maintenance tasks.
    pub async fn open(url: &str, opts: PostgresOptions) -> StoreResult<PostgresStore> {
        let connector = connector(url, &opts)?;
        let report = if opts.migrate {
            migrate(url, &opts).await?
        } else {
            let mut client = connector.connect().await?;
            let report = schema::migrate(&mut client, TimescaleMode::Off).await;
            match report {
                Ok(r) if r.applied.is_empty() => r,
                _ => {
                    return Err(StoreError::Unavailable(
                        "the database schema is not current; run `espwatch migrate`".into(),
                    ));
                }
            }
        };
        let pool = connector.pool(opts.pool_size)?;
        let client = pool.get().await.map_err(|e| pool_err("connecting", e))?;
        match report.flavor {
            Flavor::Partitioned => {
                partitions::ensure_ahead(&client, opts.partitions_ahead_days)
                    .await
                    .map_err(|e| db_err("creating partitions", e))?;
                match &report.timescale_note {
                    Some(note) if report.timescale_fallback => {
                        tracing::warn!(
                            "TimescaleDB not used, plain PostgreSQL partitions instead: {note}"
                        );
                    }
                    Some(note) => {
                        tracing::info!(reason = %note, "TimescaleDB not used; plain PostgreSQL partitions");
                    }
                    None => {}
                }
            }
            Flavor::Timescale => apply_timescale_settings(&client, &opts).await?,
        }
        drop(client);
        let shared = Arc::new(Shared {
            connector,
            pool,
            flavor: report.flavor,
            commits: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            writer_busy_micros: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            audit_key: opts.audit_key.clone(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let queue: writer::Queue = Arc::new(Mutex::new(rx));
        let writer_tasks = (0..opts.writers.max(1))
            .map(|_| {
                let writer = writer::Writer::new(
                    shared.clone(),
                    queue.clone(),
                    // Bulk load: an append alone fills a round.
                    if opts.bulk_load {
                        1
                    } else {
                        opts.max_readings_per_commit.max(1)
                    },
                    opts.retry_window,
                );
                tokio::spawn(writer.run())
            })
            .collect();
        let (stop, stopped) = watch::channel(false);
        let maintenance_task = tokio::spawn(maintenance(shared.clone(), opts.clone(), stopped));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                shared,
                sender: std::sync::Mutex::new(Some(tx)),
                stop,
                writer_tasks: Mutex::new(writer_tasks),
                maintenance_task: Mutex::new(Some(maintenance_task)),
                bulk_load: opts.bulk_load,
            }),
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.inner.shared.flavor
    }

    /// Applies all queued rollup work now (maintenance does this every `rollup_interval`).
    pub async fn refresh_rollups(&self) -> StoreResult<usize> {
        self.check_open()?;
        let mut total = 0;
        loop {
            let n = rollups::refresh(&self.inner.shared, 10_000).await?;
            total += n;
            if n == 0 {
                break;
            }
            self.inner.shared.refreshes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(total)
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            Err(unavailable())
        } else {
            Ok(())
        }
    }

    async fn client(&self, context: &str) -> StoreResult<deadpool_postgres::Object> {
        self.check_open()?;
        self.inner
            .shared
            .pool
            .get()
            .await
            .map_err(|e| pool_err(context, e))
    }

    /// Runs an idempotent read, once more on a fresh connection if the first one had died.
    async fn read<T, F, Fut>(&self, context: &'static str, f: F) -> StoreResult<T>
    where
        F: Fn(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        let client = self.client(context).await?;
        match f(client).await {
            Err(e) if rollups::retryable(&e) => {
                tracing::debug!(error = %e, "read failed; retrying on a fresh connection");
                f(self.client(context).await?).await
            }
            other => other,
        }
    }

    async fn well_record(
        client: &impl deadpool_postgres::GenericClient,
        id: &str,
    ) -> StoreResult<Option<WellRecord>> {
        let row = client
            .query_opt(
                "SELECT meta::text, created_at, updated_at, auto_registered FROM wells WHERE well_id = $1",
                &[&id],
            )
            .await
            .map_err(|e| db_err("reading a well", e))?;
        row.map(|r| record_from_row(&r, 0)).transpose()
    }
}

fn record_from_row(r: &tokio_postgres::Row, first: usize) -> StoreResult<WellRecord> {
    let meta: String = get(r, first)?;
    let meta: WellMeta = serde_json::from_str(&meta)
        .map_err(|e| StoreError::Internal(format!("stored well metadata unreadable: {e}")))?;
    Ok(WellRecord {
        meta,
        created_at: Timestamp(get::<PgTs>(r, first + 1)?.0),
        updated_at: Timestamp(get::<PgTs>(r, first + 2)?.0),
        auto_registered: get(r, first + 3)?,
    })
}

async fn apply_timescale_settings(
    client: &tokio_postgres::Client,
    opts: &PostgresOptions,
) -> StoreResult<()> {
    let chunk = opts.chunk_interval.as_secs().max(60);
    let compress = opts.compress_after.as_secs().max(60);
    client
        .batch_execute(&format!(
            "SELECT set_chunk_time_interval('telemetry', INTERVAL '{chunk} seconds');
             SELECT remove_compression_policy('telemetry', if_exists => true);
             SELECT add_compression_policy('telemetry', compress_created_before => INTERVAL '{compress} seconds');"
        ))
        .await
        .map_err(|e| db_err("applying TimescaleDB settings", e))
}

/// Queue rows one refresher pass (one transaction) consumes at most.
const REFRESH_PASS_ROWS: i64 = 20_000;

/// Writers busy at least this share of the time count as a burst the refresher yields to.
const BUSY_WRITERS: f64 = 0.5;
/// How long the refresher watches the writers before deciding whether to yield.
const BUSY_PROBE: Duration = Duration::from_millis(200);

/// Whether the refresher leaves queued work for a later tick: only during a burst (writers
/// busy `busy_share` of the last tick), and only while the oldest work is younger than
/// `max_lag`. Rollups are derived data and queries compute queued minutes from raw rows, so
/// during a burst the database's time goes to acknowledging readings, as TimescaleDB's
/// scheduled aggregate refreshes would also have it.
fn refresher_yields(busy_share: f64, pending_for: Option<Duration>, max_lag: Duration) -> bool {
    busy_share >= BUSY_WRITERS && pending_for.is_some_and(|age| age < max_lag)
}

/// A reading of the writers' summed busy time, to measure their load since.
#[derive(Clone, Copy)]
struct BusyMark {
    busy_micros: u64,
    at: Instant,
}

impl BusyMark {
    fn now(shared: &Shared) -> BusyMark {
        BusyMark {
            busy_micros: shared.writer_busy_micros.load(Ordering::Relaxed),
            at: Instant::now(),
        }
    }

    /// Share of the writers' time spent in rounds since this mark (1.0: all always busy).
    fn share_since(&self, shared: &Shared, writers: usize) -> f64 {
        let busy = shared.writer_busy_micros.load(Ordering::Relaxed) - self.busy_micros;
        busy as f64 / (self.at.elapsed().as_micros().max(1) as f64 * writers.max(1) as f64)
    }
}

/// Background upkeep: rollups every `rollup_interval`, partitions ahead every ten minutes.
async fn maintenance(shared: Arc<Shared>, opts: PostgresOptions, mut stop: watch::Receiver<bool>) {
    let mut last_partitions = Instant::now();
    let mut last_warning: Option<Instant> = None;
    // Since when rollup work may have been waiting (`None`: the queue was drained since the
    // last commit seen).
    let mut pending_since: Option<Instant> = None;
    let mut commits_seen = shared.commits.load(Ordering::Relaxed);
    let mut tick_mark = BusyMark::now(&shared);
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            _ = tokio::time::sleep(opts.rollup_interval) => {}
        }
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits != commits_seen && pending_since.is_none() {
            pending_since = Some(tick_mark.at);
        }
        commits_seen = commits;
        // The writers' load over the whole tick, and over a short look now: a burst that
        // began late in the tick shows in the second.
        let tick_share = tick_mark.share_since(&shared, opts.writers);
        let probe = BusyMark::now(&shared);
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            _ = tokio::time::sleep(BUSY_PROBE) => {}
        }
        let share = tick_share.max(probe.share_since(&shared, opts.writers));
        tick_mark = BusyMark::now(&shared);

        let mut result = Ok(());
        let max_lag = opts.rollup_max_lag;
        if !opts.bulk_load && !refresher_yields(share, pending_since.map(|t| t.elapsed()), max_lag)
        {
            // Passes while the queue stays full, for at most one interval: under a sustained
            // bulk load the refresher keeps pace working about half the time, instead of
            // falling further behind with every tick; a pass is one bounded transaction. A
            // burst starting meanwhile ends the run of passes, as it would have deferred it.
            let started = Instant::now();
            result = loop {
                let before = BusyMark::now(&shared);
                match rollups::refresh(&shared, REFRESH_PASS_ROWS).await {
                    Ok(n) => {
                        if n > 0 {
                            shared.refreshes.fetch_add(1, Ordering::Relaxed);
                        }
                        if n < REFRESH_PASS_ROWS as usize {
                            // Drained (work committed since is seen at the next tick).
                            pending_since = None;
                            break Ok(());
                        }
                        let share = before.share_since(&shared, opts.writers);
                        if started.elapsed() >= opts.rollup_interval
                            || shared.closed.load(Ordering::Acquire)
                            || refresher_yields(share, pending_since.map(|t| t.elapsed()), max_lag)
                        {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
        }
        if result.is_ok()
            && shared.flavor == Flavor::Partitioned
            && last_partitions.elapsed() > Duration::from_secs(600)
        {
            result = match shared.pool.get().await {
                Ok(client) => partitions::ensure_ahead(&client, opts.partitions_ahead_days)
                    .await
                    .map_err(|e| db_err("creating partitions", e)),
                Err(e) => Err(pool_err("creating partitions", e)),
            };
            if result.is_ok() {
                last_partitions = Instant::now();
            }
        }
        if let Err(e) = result
            && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30))
        {
            tracing::warn!(error = %e, "PostgreSQL maintenance failed; will retry");
            last_warning = Some(Instant::now());
        }
    }
}

fn in_supported_range(ts: Timestamp) -> bool {
    ts >= MIN_SUPPORTED && ts < MAX_SUPPORTED
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(
        &self,
        readings: Vec<Reading>,
        opts: AppendOptions,
    ) -> StoreResult<AppendOutcome> {
        self.check_open()?;
        if readings.is_empty() {
            return Ok(AppendOutcome::default());
        }
        if let Some(r) = readings.iter().find(|r| !in_supported_range(r.ts)) {
            return Err(StoreError::Internal(format!(
                "timestamp {} is outside years 0000..=9999",
                r.ts.0
            )));
        }
        let _pending = espwatch_store::metrics::Pending::new("postgres", readings.len());
        let (reply, answer) = oneshot::channel();
        let job = writer::Job {
            readings,
            opts,
            reply,
        };
        {
            let sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
            let sender = sender.as_ref().ok_or_else(unavailable)?;
            sender.send(job).map_err(|_| unavailable())?;
        }
        answer.await.map_err(|_| unavailable())?
    }

    async fn read_range(&self, well_id: &WellId, range: TimeRange) -> StoreResult<Vec<Point>> {
        if range.from >= range.to {
            self.check_open()?;
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT ts, {} FROM telemetry WHERE well_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
            column_list()
        );
        let (from, to) = (PgTs::clamped(range.from), PgTs::clamped(range.to));
        self.read("read_range", |client| {
            let sql = &sql;
            async move {
                let statement = client
                    .prepare_cached(sql)
                    .await
                    .map_err(|e| db_err("read_range", e))?;
                let rows = client
                    .query(&statement, &[&well_id.as_str(), &from, &to])
                    .await
                    .map_err(|e| db_err("read_range", e))?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            Timestamp(get::<PgTs>(r, 0)?.0),
                            measurements_from_row(r, 1)?,
                        ))
                    })
                    .collect()
            }
        })
        .await
    }

    async fn query(&self, query: &TelemetryQuery) -> StoreResult<Series> {
        self.check_open()?;
        match rollups::plan(query) {
            Some(plan) => match rollups::query(&self.inner.shared, query, plan).await {
                Err(e) if rollups::retryable(&e) => {
                    rollups::query(&self.inner.shared, query, plan).await
                }
                other => other,
            },
            None => {
                let points = self.read_range(&query.well_id, query.range).await?;
                Ok(espwatch_core::series::evaluate(query, &points))
            }
        }
    }

    async fn fleet_aggregate(&self, query: &espwatch_store::FleetQuery) -> StoreResult<Series> {
        self.check_open()?;
        let answer = match rollups::fleet_aggregate(&self.inner.shared, query).await {
            Err(e) if rollups::retryable(&e) => {
                rollups::fleet_aggregate(&self.inner.shared, query).await
            }
            other => other,
        }?;
        match answer {
            Some(series) => Ok(series),
            None => espwatch_store::fleet::fleet_aggregate_raw(self, query).await,
        }
    }

    async fn fleet_totals(
        &self,
        query: &espwatch_store::FleetTotalsQuery,
    ) -> StoreResult<Vec<espwatch_store::WellTotals>> {
        self.check_open()?;
        match rollups::totals(&self.inner.shared, query).await {
            Err(e) if rollups::retryable(&e) => rollups::totals(&self.inner.shared, query).await,
            other => other,
        }
    }

    async fn latest(&self) -> StoreResult<Vec<LatestReading>> {
        let sql = rollups::latest_sql();
        self.read("latest", |client| {
            let sql = &sql;
            async move {
                // Cached per connection: planning the lateral read over every partition costs
                // far more than running it, and a statement without parameters keeps its plan.
                let statement = client
                    .prepare_cached(sql)
                    .await
                    .map_err(|e| db_err("latest", e))?;
                let rows = client
                    .query(&statement, &[])
                    .await
                    .map_err(|e| db_err("latest", e))?;
                rows.iter()
                    .map(|r| {
                        let id: String = get(r, 0)?;
                        Ok(LatestReading {
                            well_id: WellId::parse(&id).map_err(|e| {
                                StoreError::Internal(format!("stored well id {id:?}: {e}"))
                            })?,
                            point: (
                                Timestamp(get::<PgTs>(r, 1)?.0),
                                measurements_from_row(r, 2)?,
                            ),
                        })
                    })
                    .collect()
            }
        })
        .await
    }

    async fn list_wells(&self) -> StoreResult<Vec<WellRecord>> {
        self.read("list_wells", |client| async move {
            let rows = client
                .query(
                    "SELECT meta::text, created_at, updated_at, auto_registered FROM wells ORDER BY well_id",
                    &[],
                )
                .await
                .map_err(|e| db_err("list_wells", e))?;
            rows.iter().map(|r| record_from_row(r, 0)).collect()
        })
        .await
    }

    async fn get_well(&self, well_id: &WellId) -> StoreResult<Option<WellRecord>> {
        self.read("get_well", |client| async move {
            Self::well_record(&client, well_id.as_str()).await
        })
        .await
    }

    async fn create_well(&self, meta: WellMeta) -> StoreResult<WellRecord> {
        let mut client = self.client("create_well").await?;
        let err = |e| db_err("create_well", e);
        let id = meta.well_id.as_str();
        let json = serde_json::to_string(&meta)
            .map_err(|e| StoreError::Internal(format!("encoding well metadata: {e}")))?;
        let now = PgTs(now().0);
        let tx = client.transaction().await.map_err(err)?;
        let existing = tx
            .query_opt(
                "SELECT auto_registered FROM wells WHERE well_id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(err)?;
        match existing {
            Some(r) if !get::<bool>(&r, 0)? => {
                return Err(StoreError::Conflict(format!("well {id}")));
            }
            Some(_) => {
                // A placeholder from auto-registration: completed, keeping its creation time.
                tx.execute(
                    "UPDATE wells SET meta = $2::text::jsonb, updated_at = $3, auto_registered = false
                     WHERE well_id = $1",
                    &[&id, &json, &now],
                )
                .await
                .map_err(err)?;
            }
            None => {
                let n = tx
                    .execute(
                        "INSERT INTO wells (well_id, meta, created_at, updated_at, auto_registered)
                         VALUES ($1, $2::text::jsonb, $3, $3, false) ON CONFLICT (well_id) DO NOTHING",
                        &[&id, &json, &now],
                    )
                    .await
                    .map_err(err)?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("well {id}")));
                }
            }
        }
        let record = Self::well_record(&tx, id)
            .await?
            .ok_or_else(|| StoreError::Internal("created well vanished".into()))?;
        tx.commit().await.map_err(err)?;
        Ok(record)
    }

    async fn update_well(&self, meta: WellMeta) -> StoreResult<Option<WellRecord>> {
        let id = &meta.well_id;
        let client = self.client("update_well").await?;
        let json = serde_json::to_string(&meta)
            .map_err(|e| StoreError::Internal(format!("encoding well metadata: {e}")))?;
        let row = client
            .query_opt(
                "UPDATE wells SET meta = $2::text::jsonb, updated_at = $3, auto_registered = false
                 WHERE well_id = $1
                 RETURNING meta::text, created_at, updated_at, auto_registered",
                &[&id.as_str(), &json, &PgTs(now().0)],
            )
            .await
            .map_err(|e| db_err("update_well", e))?;
        row.map(|r| record_from_row(&r, 0)).transpose()
    }

    async fn delete_well(&self, well_id: &WellId) -> StoreResult<bool> {
        let mut client = self.client("delete_well").await?;
        let err = |e| db_err("delete_well", e);
        let id = well_id.as_str();
        let flavor = self.inner.shared.flavor;
        let tx = client.transaction().await.map_err(err)?;
        // Excludes the rollup refresher, so it cannot write back rollups of this well.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::LOCK_ROLLUPS])
            .await
            .map_err(err)?;
        // The registry row first: its lock orders this against an append to the well.
        let existed = tx
            .execute("DELETE FROM wells WHERE well_id = $1", &[&id])
            .await
            .map_err(err)?
            > 0;
        let span = tx
            .query_one(
                "SELECT min(ts), max(ts) FROM telemetry WHERE well_id = $1",
                &[&id],
            )
            .await
            .map_err(err)?;
        let span: (Option<PgTs>, Option<PgTs>) = (get(&span, 0)?, get(&span, 1)?);
        tx.execute("DELETE FROM telemetry WHERE well_id = $1", &[&id])
            .await
            .map_err(err)?;
        tx.execute("DELETE FROM well_latest WHERE well_id = $1", &[&id])
            .await
            .map_err(err)?;
        tx.execute("DELETE FROM rollup_dirty WHERE well_id = $1", &[&id])
            .await
            .map_err(err)?;
        if flavor == Flavor::Partitioned {
            for (_, suffix) in schema::ROLLUPS {
                tx.execute(
                    &format!("DELETE FROM rollup_{suffix} WHERE well_id = $1"),
                    &[&id],
                )
                .await
                .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)?;
        // Continuous aggregates do not see deletions until refreshed over the span.
        if let (Flavor::Timescale, (Some(lo), Some(hi))) = (flavor, span) {
            for (width, suffix) in schema::ROLLUPS {
                let from = Timestamp(lo.0 - lo.0.rem_euclid(width)).to_rfc3339();
                let to = Timestamp(hi.0 - hi.0.rem_euclid(width) + width).to_rfc3339();
                client
                    .batch_execute(&format!(
                        "CALL refresh_continuous_aggregate('telemetry_{suffix}', '{from}', '{to}')"
                    ))
                    .await
                    .map_err(err)?;
            }
        }
        Ok(existed)
    }

    async fn health(&self) -> StoreHealth {
        const TIMEOUT: Duration = Duration::from_secs(2);
        let down = |why: &str| ProbeResult {
            ok: false,
            latency_ms: 0.0,
            detail: Some(why.to_owned()),
        };
        if self.check_open().is_err() {
            return StoreHealth {
                backend: "postgres",
                read: down("store closed"),
                write: down("store closed"),
            };
        }
        let shared = &self.inner.shared;
        let started = Instant::now();
        let read = tokio::time::timeout(TIMEOUT, async {
            let client = self.client("health").await?;
            let sql = match shared.flavor {
                Flavor::Partitioned => {
                    "SELECT format('PostgreSQL %s, daily partitions: %s, rollup backlog: %s queued runs of minutes',
                        current_setting('server_version'),
                        (SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass),
                        (SELECT count(*) FROM rollup_dirty))"
                }
                Flavor::Timescale => {
                    "SELECT format('PostgreSQL %s, TimescaleDB %s, hypertable telemetry: %s chunks, %s compressed',
                        current_setting('server_version'),
                        (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                        count(*), count(*) FILTER (WHERE is_compressed))
                     FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry'"
                }
            };
            let row = client
                .query_one(sql, &[])
                .await
                .map_err(|e| db_err("health read", e))?;
            get::<String>(&row, 0)
        })
        .await;
        let read = probe(started, read);
        let started = Instant::now();
        let write = tokio::time::timeout(TIMEOUT, async {
            let client = self.client("health").await?;
            client
                .execute(
                    "INSERT INTO store_heartbeat (id, beat_at) VALUES (1, now())
                     ON CONFLICT (id) DO UPDATE SET beat_at = now()",
                    &[],
                )
                .await
                .map_err(|e| db_err("health write", e))?;
            Ok(String::new())
        })
        .await;
        let mut write = probe(started, write);
        if write.ok {
            write.detail = None;
        }
        StoreHealth {
            backend: "postgres",
            read,
            write,
        }
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        let shared = &self.inner.shared;
        let (wells, backlog, partitions, size) = self
            .read("stats", |client| async move {
                let partitions_sql = match shared.flavor {
                    Flavor::Partitioned => {
                        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass"
                    }
                    Flavor::Timescale => {
                        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry'"
                    }
                };
                let row = client
                    .query_one(
                        &format!(
                            "SELECT (SELECT count(*) FROM wells), (SELECT count(*) FROM rollup_dirty), ({partitions_sql}), pg_database_size(current_database())"
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| db_err("stats", e))?;
                Ok((
                    get::<i64>(&row, 0)?,
                    get::<i64>(&row, 1)?,
                    get::<i64>(&row, 2)?,
                    get::<i64>(&row, 3)?,
                ))
            })
            .await?;
        let status = shared.pool.status();
        Ok(StoreStats {
            wells: wells as usize,
            // Here: runs of minutes queued for rollup maintenance.
            readings_in_log: backlog as u64,
            // Here: partitions (or TimescaleDB chunks) of the telemetry table.
            segments: partitions as u64,
            commits: shared.commits.load(Ordering::Relaxed),
            // Here: rollup refresh rounds that did work.
            checkpoints: shared.refreshes.load(Ordering::Relaxed),
            size_bytes: u64::try_from(size).ok(),
            pool: Some(espwatch_store::PoolStats {
                size: status.size as u64,
                idle: status.available as u64,
                max: status.max_size as u64,
                waiting: status.waiting as u64,
            }),
        })
    }

    async fn close(&self) -> StoreResult<()> {
        if self.inner.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // Without a sender the writers drain the queue, commit it and stop.
        drop(sender);
        let tasks = std::mem::take(&mut *self.inner.writer_tasks.lock().await);
        for task in tasks {
            let _ = task.await;
        }
        let _ = self.inner.stop.send(true);
        if let Some(task) = self.inner.maintenance_task.lock().await.take() {
            let _ = task.await;
        }
        // Everything is committed: the rollups deferred during a bulk load, in one go. Not on
        // TimescaleDB: refreshing its continuous aggregates over a whole load took longer
        // than the load (16.7 s after 4.5 s for 1 M readings); the work stays queued for a
        // server's refresher, and the aggregates' own policies materialise the recent
        // windows. Queries and latest values are exact meanwhile (queued minutes are read
        // from raw rows).
        let mut result = Ok(());
        if self.inner.bulk_load && self.inner.shared.flavor == Flavor::Partitioned {
            let shared = &self.inner.shared;
            result = loop {
                match rollups::refresh(shared, REFRESH_PASS_ROWS).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => {
                        shared.refreshes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => break Err(e),
                }
            };
        }
        self.inner.shared.pool.close();
        result
    }
}

fn probe(
    started: Instant,
    result: Result<StoreResult<String>, tokio::time::error::Elapsed>,
) -> ProbeResult {
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(Ok(detail)) => ProbeResult {
            ok: true,
            latency_ms,
            detail: Some(detail).filter(|d| !d.is_empty()),
        },
        Ok(Err(e)) => ProbeResult {
            ok: false,
            latency_ms,
            detail: Some(match e {
                StoreError::Unavailable(_) => "database unreachable".to_owned(),
                _ => "database error".to_owned(),
            }),
        },
        Err(_) => ProbeResult {
            ok: false,
            latency_ms,
            detail: Some("database did not answer within 2 s".to_owned()),
        },
    }
}

// Keeps the channel column list and the schema in one place for the bench's raw COPY.
#[cfg(feature = "testing")]
pub const TELEMETRY_COLUMNS: [&str; 13] = crate::schema::COLUMNS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresher_yields_only_to_a_burst_and_only_within_the_lag_budget() {
        let budget = Duration::from_secs(60);
        let young = Some(Duration::from_secs(10));
        let old = Some(Duration::from_secs(61));
        assert!(refresher_yields(0.9, young, budget));
        assert!(
            !refresher_yields(0.9, old, budget),
            "work past the budget is done"
        );
        assert!(
            !refresher_yields(0.2, young, budget),
            "light load: rollups stay fresh"
        );
        assert!(
            !refresher_yields(0.9, young, Duration::ZERO),
            "zero never defers"
        );
        assert!(!refresher_yields(0.9, None, budget));
    }
}
