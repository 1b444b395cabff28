//! The writer task: one dedicated connection, group commit.
//!
//! Appends queue up while a commit is in flight; the next round takes everything queued (up to
//! a bound) into one transaction: registry lookups and auto-registration, a binary COPY of the
//! candidates straight into `telemetry` (or, when some were already stored, into a temporary
//! staging table and on with `INSERT ... ON CONFLICT DO NOTHING RETURNING`: first value wins),
//! and the rollup work queue, then COMMIT. Every append of the round is answered after that
//! commit. Writers share no rows of their own (`well_latest` is the refresher's), so they wait
//! on each other only when they write the same readings.
//!
//! A lost connection before COMMIT is retried on a fresh one within `retry_window` (the
//! transaction was rolled back, so nothing is applied twice); a failure during COMMIT is
//! reported as `Unavailable`, because whether it committed is unknown (re-sending is safe).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use espwatch_core::{Reading, WellId, WellMeta};
use espwatch_store::{AppendOptions, AppendOutcome, ReadingOutcome, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Statement};

use crate::Shared;
use crate::partitions;
use crate::schema::{COLUMNS, Flavor, MINUTE_MICROS, column_list};
use crate::types::{CopyEncoder, PgTs, db_err, get};

pub struct Job {
    pub readings: Vec<Reading>,
    pub opts: AppendOptions,
    pub reply: oneshot::Sender<StoreResult<AppendOutcome>>,
}

/// Statements prepared once per connection.
struct Prepared {
    known_wells: Statement,
    register: Statement,
    copy: Statement,
    copy_direct: Statement,
    insert: Statement,
    dirty: Statement,
}

struct Conn {
    client: Client,
    prepared: Prepared,
}

/// The queue all writers take rounds from; a writer holds the lock only while gathering one.
pub type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>;

pub struct Writer {
    pub shared: Arc<Shared>,
    pub rx: Queue,
    pub max_readings_per_commit: usize,
    pub retry_window: Duration,
    conn: Option<Conn>,
    /// Days known to have a partition (plain PostgreSQL only).
    known_days: HashSet<i64>,
}

/// Why a round failed, and whether trying again on a new connection is safe.
struct Failure {
    error: StoreError,
    retry: bool,
}

fn transient(context: &str) -> impl FnOnce(tokio_postgres::Error) -> Failure + '_ {
    move |e| {
        // Concurrent writers can deadlock on shared rows (re-sent readings, new wells);
        // PostgreSQL aborts one transaction, which is then simply replayed.
        let conflict = e
            .code()
            .is_some_and(|c| c.code() == "40P01" || c.code() == "40001");
        let error = db_err(context, e);
        let retry = conflict || matches!(error, StoreError::Unavailable(_));
        Failure { error, retry }
    }
}

fn copy_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(s) => StoreError::Conflict(s.clone()),
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Internal(s) => StoreError::Internal(s.clone()),
    }
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: Queue,
        max_readings_per_commit: usize,
        retry_window: Duration,
    ) -> Writer {
        Writer {
            shared,
            rx,
            max_readings_per_commit,
            retry_window,
            conn: None,
            known_days: HashSet::new(),
        }
    }

    /// Runs rounds until every sender is gone and the queue is drained.
    pub async fn run(mut self) {
        loop {
            let jobs = {
                let mut rx = self.rx.lock().await;
                let Some(first) = rx.recv().await else { return };
                let mut total = first.readings.len();
                let mut jobs = vec![first];
                while total < self.max_readings_per_commit {
                    match rx.try_recv() {
                        Ok(job) => {
                            total += job.readings.len();
                            jobs.push(job);
                        }
                        Err(_) => break,
                    }
                }
                jobs
            };
            let started = Instant::now();
            self.commit_round(jobs).await;
            self.shared
                .writer_busy_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }

    async fn commit_round(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut path = CopyPath::Direct;
        loop {
            match self.try_round(&jobs, path).await {
                Ok(Round::Clash) => {
                    // Something in the round was already stored: the same round again, with
                    // duplicates sorted out row by row.
                    path = CopyPath::Staging;
                    continue;
                }
                Ok(Round::Committed(outcomes)) => {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    espwatch_store::metrics::record_commit(
                        "postgres",
                        jobs.len(),
                        jobs.iter().map(|j| j.readings.len()).sum(),
                        started.elapsed(),
                        true,
                    );
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                    return;
                }
                Err(failure) => {
                    if failure.retry && self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
                        // The connection is unusable; a fresh one is opened next attempt.
                        self.conn = None;
                    }
                    if failure.retry && started.elapsed() < self.retry_window {
                        attempt += 1;
                        let backoff = Duration::from_millis((50u64 << attempt.min(5)).min(1000));
                        // The first retry of a round is worth a warning; the rest (every
                        // 50 ms to 1 s for `retry_window`) only repeat it.
                        if attempt == 1 {
                            tracing::warn!(error = %failure.error, "PostgreSQL write failed; retrying (for {:.0} s)", self.retry_window.as_secs_f64());
                        } else {
                            tracing::debug!(error = %failure.error, attempt, "PostgreSQL write failed; retrying");
                        }
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    tracing::error!(error = %failure.error, "PostgreSQL write failed");
                    espwatch_store::metrics::record_commit(
                        "postgres",
                        jobs.len(),
                        0,
                        started.elapsed(),
                        false,
                    );
                    for job in jobs {
                        let _ = job.reply.send(Err(copy_err(&failure.error)));
                    }
                    return;
                }
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut Conn, Failure> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = self
                .shared
                .connector
                .connect()
                .await
                .map_err(|error| Failure {
                    retry: matches!(error, StoreError::Unavailable(_)),
                    error,
                })?;
            let prepared = prepare(&client, self.shared.flavor)
                .await
                .map_err(transient("preparing the writer connection"))?;
            self.conn = Some(Conn { client, prepared });
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    async fn try_round(&mut self, jobs: &[Job], path: CopyPath) -> Result<Round, Failure> {
        // Partitions for every day touched (plain PostgreSQL; TimescaleDB makes chunks itself).
        if self.shared.flavor == Flavor::Partitioned {
            let mut missing: Vec<i64> = Vec::new();
            let mut last_day = None;
            let days = jobs
                .iter()
                .flat_map(|j| &j.readings)
                .map(|r| partitions::day_of(r.ts));
            for day in days {
                // Consecutive readings nearly always share a day: look each day up once.
                if last_day != Some(day) {
                    last_day = Some(day);
                    if !self.known_days.contains(&day) && !missing.contains(&day) {
                        missing.push(day);
                    }
                }
            }
            missing.sort_unstable();
            if !missing.is_empty() {
                let conn = self.connection().await?;
                partitions::ensure(&conn.client, &missing)
                    .await
                    .map_err(transient("creating partitions"))?;
                self.known_days.extend(missing);
            }
        }

        let conn = self.connection().await?;
        let p = &conn.prepared;
        let client = &mut conn.client;
        let tx = client
            .transaction()
            .await
            .map_err(transient("starting the write transaction"))?;

        // The round's wells, numbered in name order: every per-reading step below (registry,
        // duplicates, COPY order, rollup runs) works on that number, so a round hashes each
        // reading's well id once and sorts integers, not strings.
        let wells = RoundWells::of(jobs);

        // Registry: which wells exist (locked against a concurrent delete until commit).
        let mut known = vec![false; wells.names.len()];
        for row in tx
            .query(&p.known_wells, &[&wells.names])
            .await
            .map_err(transient("looking up wells"))?
        {
            let name: &str = get(&row, 0).map_err(|error| Failure {
                error,
                retry: false,
            })?;
            if let Some(number) = wells.number(name) {
                known[number as usize] = true;
            }
        }

        // Decide per reading, in submission order: unknown well, or a candidate.
        let mut outcomes: Vec<AppendOutcome> = jobs
            .iter()
            .map(|job| AppendOutcome {
                // Provisional: the duplicate checks below change some.
                outcomes: vec![ReadingOutcome::Accepted; job.readings.len()],
                registered_wells: Vec::new(),
                spooled: 0,
            })
            .collect();
        let mut to_register: Vec<(usize, WellId)> = Vec::new();
        // (well number, ts, job, reading): sorted, this is the COPY order, and a reading
        // sent twice in the round sits right after its first (submission order breaks ties).
        let mut candidates: Vec<(u32, i64, usize, usize)> = Vec::new();
        let mut numbers = wells.per_reading.iter();
        for (j, job) in jobs.iter().enumerate() {
            for (i, r) in job.readings.iter().enumerate() {
                let number = *numbers.next().expect("one number per reading");
                if !known[number as usize] {
                    if job.opts.auto_register_wells {
                        known[number as usize] = true;
                        to_register.push((j, r.well_id.clone()));
                    } else {
                        outcomes[j].outcomes[i] = ReadingOutcome::UnknownWell;
                        continue;
                    }
                }
                candidates.push((number, r.ts.0, j, i));
            }
        }
        candidates.sort_unstable();
        candidates.dedup_by(|later, first| {
            let same = (later.0, later.1) == (first.0, first.1);
            if same {
                outcomes[later.2].outcomes[later.3] = ReadingOutcome::Duplicate;
            }
            same
        });

        if !to_register.is_empty() {
            let ids: Vec<&str> = to_register.iter().map(|(_, w)| w.as_str()).collect();
            let metas: Vec<String> = to_register
                .iter()
                .map(|(_, w)| {
                    serde_json::to_string(&WellMeta::minimal(w)).unwrap_or_else(|_| "{}".into())
                })
                .collect();
            let now = PgTs(crate::now().0);
            let inserted: HashSet<String> = tx
                .query(&p.register, &[&ids, &metas, &now])
                .await
                .map_err(transient("registering wells"))?
                .iter()
                .map(|r| get::<String>(r, 0))
                .collect::<Result<_, _>>()
                .map_err(|error| Failure {
                    error,
                    retry: false,
                })?;
            for (j, w) in to_register {
                if inserted.contains(w.as_str()) {
                    outcomes[j].registered_wells.push(w);
                }
            }
        }

        if !candidates.is_empty() {
            // Rows in (well, time) order: consecutive index insertions land on the same leaf
            // page and a well's rows share heap pages, which the refresher's and the
            // queries' per-well range scans read back.
            let mut enc = CopyEncoder::new(candidates.len());
            for &(_, _, j, i) in &candidates {
                let r = &jobs[j].readings[i];
                enc.reading(r.well_id.as_str(), r.ts, &r.values);
            }

            let mut accepted = vec![true; candidates.len()];
            match path {
                CopyPath::Direct => {
                    match enc.copy_into(&tx, &p.copy_direct).await {
                        Ok(_) => {}
                        Err(e)
                            if e.code()
                                == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                        {
                            // Dropping the transaction rolls it back.
                            return Ok(Round::Clash);
                        }
                        Err(e) => return Err(transient("COPY into telemetry")(e)),
                    }
                }
                CopyPath::Staging => {
                    enc.copy_into(&tx, &p.copy)
                        .await
                        .map_err(transient("COPY into staging"))?;
                    let inserted = tx
                        .query(&p.insert, &[])
                        .await
                        .map_err(transient("inserting telemetry"))?;
                    accepted = vec![false; candidates.len()];
                    for row in &inserted {
                        let well: &str = get(row, 0).map_err(|error| Failure {
                            error,
                            retry: false,
                        })?;
                        let ts: PgTs = get(row, 1).map_err(|error| Failure {
                            error,
                            retry: false,
                        })?;
                        let Some(number) = wells.number(well) else {
                            continue;
                        };
                        if let Ok(c) =
                            candidates.binary_search_by(|c| (c.0, c.1).cmp(&(number, ts.0)))
                        {
                            accepted[c] = true;
                        }
                    }
                    for (c, &(_, _, j, i)) in candidates.iter().enumerate() {
                        if !accepted[c] {
                            outcomes[j].outcomes[i] = ReadingOutcome::Duplicate;
                        }
                    }
                }
            }

            // Rollup work queue: per well, runs of minutes that received readings.
            let minutes: Vec<(u32, i64, i64)> = candidates
                .iter()
                .zip(&accepted)
                .filter(|(_, ok)| **ok)
                .map(|(&(number, ts, _, _), _)| {
                    let minute = ts - ts.rem_euclid(MINUTE_MICROS);
                    (number, minute, minute)
                })
                .collect();
            let runs = crate::rollups::merge_runs(minutes, RUN_GAP_MICROS);
            if !runs.is_empty() {
                let names: Vec<&str> = runs.iter().map(|r| wells.names[r.0 as usize]).collect();
                let firsts: Vec<PgTs> = runs.iter().map(|r| PgTs(r.1)).collect();
                let lasts: Vec<PgTs> = runs.iter().map(|r| PgTs(r.2)).collect();
                tx.execute(&p.dirty, &[&names, &firsts, &lasts])
                    .await
                    .map_err(transient("queueing rollup work"))?;
            }
        }

        // From here on a lost connection leaves the outcome unknown: no silent retry.
        tx.commit().await.map_err(|e| {
            let error = match db_err("committing", e) {
                StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                    "{why}; the commit may or may not have happened, re-sending is safe"
                )),
                other => other,
            };
            Failure {
                error,
                retry: false,
            }
        })?;
        Ok(Round::Committed(outcomes))
    }
}

/// How a round's candidates reach `telemetry`.
#[derive(Copy, Clone)]
enum CopyPath {
    /// COPY straight into telemetry: the cost of a raw COPY, for the normal case of new
    /// readings. A primary-key clash aborts the transaction, and the round is redone by
    /// staging (no savepoint: that would cost every round two round trips and a
    /// subtransaction to spare the rare clash one retry).
    Direct,
    /// COPY into the temp staging table, then `INSERT ... ON CONFLICT DO NOTHING RETURNING`.
    Staging,
}

enum Round {
    Committed(Vec<AppendOutcome>),
    /// The direct COPY hit a reading that is already stored; nothing was applied.
    Clash,
}

/// Minutes further apart than this start a new queued run: a run's empty minutes cost the
/// refresher and lagging queries a little, a row per run costs the writer.
const RUN_GAP_MICROS: i64 = 60 * MINUTE_MICROS;

/// The distinct wells of a round, numbered in name order.
struct RoundWells<'a> {
    /// By number.
    names: Vec<&'a str>,
    /// Each reading's well number, in submission order.
    per_reading: Vec<u32>,
    /// Name to number.
    numbers: HashMap<&'a str, u32, foldhash::fast::RandomState>,
}

impl<'a> RoundWells<'a> {
    fn of(jobs: &'a [Job]) -> Self {
        let mut numbers: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
        // Numbered in order of appearance first, renumbered by name below.
        let per_reading: Vec<u32> = jobs
            .iter()
            .flat_map(|j| j.readings.iter())
            .map(|r| {
                let next = numbers.len() as u32;
                *numbers.entry(r.well_id.as_str()).or_insert(next)
            })
            .collect();
        let mut names: Vec<&str> = numbers.keys().copied().collect();
        names.sort_unstable();
        let mut renumber = vec![0u32; names.len()];
        for (by_name, name) in names.iter().enumerate() {
            let seen = numbers.get_mut(name).expect("a key");
            renumber[*seen as usize] = by_name as u32;
            *seen = by_name as u32;
        }
        let per_reading = per_reading
            .into_iter()
            .map(|n| renumber[n as usize])
            .collect();
        RoundWells {
            names,
            per_reading,
            numbers,
        }
    }

    fn number(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }
}

async fn prepare(client: &Client, flavor: Flavor) -> Result<Prepared, tokio_postgres::Error> {
    let _ = flavor;
    let cols = column_list();
    let channel_defs: String = COLUMNS.iter().map(|c| format!(", {c} float8")).collect();
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS espwatch_stage (
                well_id text COLLATE \"C\" NOT NULL, ts timestamptz NOT NULL{channel_defs}
            ) ON COMMIT DELETE ROWS"
        ))
        .await?;
    Ok(Prepared {
        known_wells: client
            .prepare("SELECT well_id FROM wells WHERE well_id = ANY($1::text[]) FOR KEY SHARE")
            .await?,
        register: client
            .prepare(
                "INSERT INTO wells (well_id, meta, created_at, updated_at, auto_registered)
                 SELECT id, meta::jsonb, $3, $3, true FROM unnest($1::text[], $2::text[]) AS t(id, meta)
                 ORDER BY id ON CONFLICT (well_id) DO NOTHING RETURNING well_id",
            )
            .await?,
        copy: client
            .prepare("COPY espwatch_stage FROM STDIN (FORMAT binary)")
            .await?,
        copy_direct: client
            .prepare(&format!(
                "COPY telemetry (well_id, ts, {cols}) FROM STDIN (FORMAT binary)"
            ))
            .await?,
        insert: client
            .prepare(&format!(
                "INSERT INTO telemetry (well_id, ts, {cols})
                 SELECT well_id, ts, {cols} FROM espwatch_stage ORDER BY well_id, ts
                 ON CONFLICT DO NOTHING RETURNING well_id, ts"
            ))
            .await?,
        dirty: client
            .prepare(
                "INSERT INTO rollup_dirty (well_id, minute, last_minute)
                 SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])",
            )
            .await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_runs_split_per_well_and_at_long_gaps() {
        let m = MINUTE_MICROS;
        let minutes = [
            ("B", 0),
            ("A", 2 * m),
            ("A", 0),
            ("A", 2 * m),
            ("A", 62 * m),
            ("A", 123 * m),
        ];
        let single = minutes.iter().map(|&(w, m)| (w, m, m)).collect();
        assert_eq!(
            crate::rollups::merge_runs(single, RUN_GAP_MICROS),
            vec![("A", 0, 62 * m), ("A", 123 * m, 123 * m), ("B", 0, 0)]
        );
    }

    #[test]
    fn round_wells_are_numbered_in_name_order() {
        let job = |ids: &[&str]| {
            let (reply, _) = oneshot::channel();
            Job {
                readings: ids
                    .iter()
                    .map(|id| Reading {
                        well_id: WellId::parse(id).unwrap(),
                        ts: espwatch_core::Timestamp(0),
                        values: espwatch_core::Measurements::empty(),
                    })
                    .collect(),
                opts: AppendOptions::default(),
                reply,
            }
        };
        let jobs = [job(&["W-9", "W-1", "W-9"]), job(&["W-5", "W-1"])];
        let wells = RoundWells::of(&jobs);
        assert_eq!(wells.names, ["W-1", "W-5", "W-9"]);
        assert_eq!(wells.per_reading, [2, 0, 2, 1, 0]);
        assert_eq!(wells.number("W-5"), Some(1));
        assert_eq!(wells.number("W-2"), None);
    }
}
