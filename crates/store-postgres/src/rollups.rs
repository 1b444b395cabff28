//! Rollups: keeping the 1m/1h/1d aggregates up to date, and answering bucketed queries from
//! them with exactly the buckets `espwatch_core::series::evaluate` computes from raw points.
//!
//! Freshness protocol. The writer appends `(well, minute, last_minute)` runs covering the
//! minutes it wrote to `rollup_dirty` in the same transaction as the readings (one row per well
//! and run of minutes at most an hour apart). The refresher, in one REPEATABLE READ
//! transaction, reads the queued runs visible to its snapshot, recomputes every minute of
//! them (then their hours and days)
//! from data visible to the same snapshot, and deletes exactly the queue rows it read. Rows
//! queued by transactions that commit later stay queued. So in any snapshot, a minute whose
//! rollup lags the raw data still has a queue row, and queries (also one snapshot) compute such
//! minutes' buckets from raw data. No locks are shared with the writer.
//!
//! On TimescaleDB the continuous aggregates are real-time views; the queue drives
//! `refresh_continuous_aggregate` for late data that lands in already materialised buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use espwatch_core::series::bucket_start;
use espwatch_core::{Agg, Field, Series, TelemetryQuery, Timestamp, WellId};
use espwatch_store::{FleetQuery, FleetTotalsQuery, StoreError, StoreResult, Totals, WellTotals};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use crate::Shared;
use crate::schema::{
    COLUMNS, Flavor, LOCK_ROLLUPS, MINUTE_MICROS, ROLLUPS, column_list, rollup_relation,
};
use crate::types::{CopyEncoder, PgTs, db_err, get, pool_err};

/// Applies the queued rollup work (at most `limit` queue rows); returns how many it consumed.
pub async fn refresh(shared: &Shared, limit: i64) -> StoreResult<usize> {
    let started = std::time::Instant::now();
    let result = match shared.flavor {
        Flavor::Partitioned => refresh_tables(shared, limit).await,
        Flavor::Timescale => refresh_timescale(shared, limit).await,
    };
    // Passes that found nothing to do are not checkpoints.
    if !matches!(result, Ok(0)) {
        espwatch_store::metrics::record_checkpoint("postgres", started.elapsed(), result.is_ok());
    }
    result
}

fn floor(t: i64, width: i64) -> i64 {
    t - t.rem_euclid(width)
}

fn insert_columns() -> String {
    let mut s = String::from("well_id, bucket, n");
    for c in COLUMNS {
        let _ = write!(s, ", {c}_n, {c}_sum, {c}_min, {c}_max, {c}_last");
    }
    s
}

async fn refresh_tables(shared: &Shared, limit: i64) -> StoreResult<usize> {
    let err = |what: &'static str| move |e| db_err(what, e);
    let mut client = shared
        .pool
        .get()
        .await
        .map_err(|e| pool_err("rollup refresh", e))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(err("starting rollup refresh"))?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_ROLLUPS])
        .await
        .map_err(err("rollup lock"))?
        .get(0);
    if !locked {
        return Ok(0); // another refresher (or a well deletion) is at work
    }
    // Rollups are derived data and their queue rows are consumed in this same transaction: a
    // crash that loses this commit loses both, and the work is simply done again. So the
    // refresher need not wait for its WAL flush, nor make the writers' commits wait behind it.
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(err("rollup refresh settings"))?;
    let rows = tx
        .query(
            "SELECT id, well_id, minute, coalesce(last_minute, minute) FROM rollup_dirty
             ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(err("reading the rollup queue"))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut runs = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(get::<i64>(r, 0)?);
        runs.push((
            get::<String>(r, 1)?,
            get::<PgTs>(r, 2)?.0,
            get::<PgTs>(r, 3)?.0,
        ));
    }
    // Queued runs of one well may overlap; merged, each raw row is aggregated once.
    let runs = merge_runs(runs, MINUTE_MICROS);

    // Minutes from raw rows, then hours from minutes and days from hours: at each level every
    // bucket that holds a queued minute is recomputed whole.
    let mut source = Source::Raw;
    // The minutes just rebuilt, folded into their hours as they are written, so the hour
    // level reads back only the minutes of those hours that this pass did not rebuild.
    let mut finer: Option<(Vec<WellRange>, Coarser)> = None;
    for &(width, suffix) in ROLLUPS.iter().rev() {
        let ranges = merge_runs(
            runs.iter()
                .map(|(w, first, last)| {
                    (
                        w.as_str(),
                        floor(*first, width),
                        floor(*last, width) + width,
                    )
                })
                .collect(),
            0,
        );
        let fresh = finer.take().and_then(|(covered, coarser)| {
            coarser.map.map(|map| Fresh {
                covered,
                buckets: map,
            })
        });
        let mut coarser = (width == MINUTE_MICROS).then(|| Coarser::new(60 * MINUTE_MICROS));
        rebuild(
            &tx,
            Level {
                suffix,
                width,
                source,
            },
            &ranges,
            fresh,
            coarser.as_mut(),
        )
        .await?;
        finer = coarser.map(|c| (ranges, c));
        source = Source::Rollup(suffix);
    }

    let mut newest: Vec<(&str, i64)> = Vec::new();
    for (well, _, last) in &runs {
        match newest.last_mut() {
            Some((w, t)) if w == well => *t = (*t).max(*last),
            _ => newest.push((well, *last)),
        }
    }
    consume_queue(tx, &newest, &ids).await?;
    Ok(ids.len())
}

/// Ends a refresh: moves `well_latest` forward to the consumed runs' newest readings, deletes
/// the consumed queue rows and commits, all at once, so every snapshot sees each run either
/// queued or applied.
async fn consume_queue(
    tx: deadpool_postgres::Transaction<'_>,
    newest: &[(&str, i64)],
    ids: &[i64],
) -> StoreResult<()> {
    advance_latest(&tx, newest).await?;
    tx.execute("DELETE FROM rollup_dirty WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(|e| db_err("consuming the rollup queue", e))?;
    tx.commit()
        .await
        .map_err(|e| db_err("committing rollups", e))
}

/// What a rollup level is computed from.
#[derive(Copy, Clone)]
enum Source {
    Raw,
    /// The next finer rollup table, by suffix.
    Rollup(&'static str),
}

/// Buckets of one fetch: bounded so a long run (a backfill of months) streams through in
/// pieces instead of being held in memory at once.
const BUCKETS_PER_FETCH: i64 = 360;
/// Fetches in flight on the connection at once (pipelined).
const FETCHES_IN_FLIGHT: usize = 4;
/// Encoded rollup rows are sent to the database once this many bytes have gathered.
const COPY_FLUSH_BYTES: usize = 1 << 20;

/// A well and a bucket-aligned time range `[from, to)` in micros.
type WellRange<'w> = (&'w str, i64, i64);

/// One rollup level being rebuilt.
#[derive(Copy, Clone)]
struct Level {
    suffix: &'static str,
    width: i64,
    source: Source,
}

/// Buckets of the next coarser level folded from the buckets a rebuild writes, so the next
/// level need not read them back. Bounded: past `MAX_FRESH_BUCKETS` (a long backfill) the map
/// is dropped and the next level reads its source as before.
struct Coarser {
    width: i64,
    map: Option<BTreeMap<(String, i64), BucketAcc>>,
}

/// Coarser buckets kept in memory at most; each is about half a kilobyte.
const MAX_FRESH_BUCKETS: usize = 50_000;

impl Coarser {
    fn new(width: i64) -> Coarser {
        Coarser {
            width,
            map: Some(BTreeMap::new()),
        }
    }

    fn absorb(&mut self, well: &str, bucket: &BucketAcc) {
        let Some(map) = &mut self.map else { return };
        let key = (well.to_owned(), floor(bucket.start, self.width));
        if !map.contains_key(&key) && map.len() >= MAX_FRESH_BUCKETS {
            self.map = None;
            return;
        }
        map.entry(key)
            .or_insert_with_key(|k| BucketAcc::new(k.1))
            .absorb(bucket);
    }
}

/// A level's buckets already folded from the finer buckets rebuilt just before (`covered`:
/// that level's ranges); only the rest of each bucket is read from the source.
struct Fresh<'r> {
    covered: Vec<WellRange<'r>>,
    buckets: BTreeMap<(String, i64), BucketAcc>,
}

/// The parts of `ranges` not inside `covered` (both sorted by well, then start).
fn uncovered<'r>(ranges: &[WellRange<'r>], covered: &[WellRange<'_>]) -> Vec<WellRange<'r>> {
    let mut gaps = Vec::new();
    let mut c = 0;
    for &(well, from, to) in ranges {
        while c < covered.len() && (covered[c].0, covered[c].2) <= (well, from) {
            c += 1;
        }
        let mut cursor = from;
        let mut k = c;
        while k < covered.len() && covered[k].0 == well && covered[k].1 < to {
            if covered[k].1 > cursor {
                gaps.push((well, cursor, covered[k].1));
            }
            cursor = cursor.max(covered[k].2);
            k += 1;
        }
        if cursor < to {
            gaps.push((well, cursor, to));
        }
    }
    gaps
}

/// Recomputes every bucket of one rollup level inside `ranges` (well, from, to exclusive;
/// bucket-aligned) from its source: deletes them, folds the source rows in time order in Rust
/// and COPYs the results in. Aggregating here rather than in SQL avoids one ordered aggregate
/// (a sort) per channel and bucket for `last`, which made the database's share of a refresh
/// several times the cost of the rows' COPY at ingestion.
///
/// With `fresh`, the buckets' parts rebuilt at the finer level are already folded and only the
/// remaining parts are read. With `coarser`, every bucket written is also folded into it.
async fn rebuild(
    tx: &tokio_postgres::Transaction<'_>,
    level: Level,
    ranges: &[WellRange<'_>],
    fresh: Option<Fresh<'_>>,
    mut coarser: Option<&mut Coarser>,
) -> StoreResult<()> {
    use futures_util::StreamExt as _;

    let Level {
        suffix,
        width,
        source,
    } = level;
    let err = |what: &'static str| move |e| db_err(what, e);
    let table = format!("rollup_{suffix}");
    let wells: Vec<&str> = ranges.iter().map(|r| r.0).collect();
    let froms: Vec<PgTs> = ranges.iter().map(|r| PgTs(r.1)).collect();
    let tos: Vec<PgTs> = ranges.iter().map(|r| PgTs(r.2)).collect();
    tx.execute(
        &format!(
            "DELETE FROM {table} r
             USING unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(w, f, t)
             WHERE r.well_id = k.w AND r.bucket >= k.f AND r.bucket < k.t"
        ),
        &[&wells, &froms, &tos],
    )
    .await
    .map_err(err("clearing rollups"))?;

    let fetch_sql = match source {
        Source::Raw => format!(
            "SELECT ts, {} FROM telemetry WHERE well_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
            column_list()
        ),
        Source::Rollup(finer) => format!(
            "SELECT bucket, n{} FROM rollup_{finer}
             WHERE well_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
            COLUMNS
                .iter()
                .map(|c| format!(", {c}_n, {c}_sum, {c}_min, {c}_max, {c}_last"))
                .collect::<String>()
        ),
    };
    let fetch = tx
        .prepare(&fetch_sql)
        .await
        .map_err(err("preparing rollup reads"))?;
    let copy = format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        insert_columns()
    );

    let (to_read, mut folded) = match fresh {
        Some(Fresh { covered, buckets }) => (uncovered(ranges, &covered), Some(buckets)),
        None => (ranges.to_vec(), None),
    };
    let pieces: Vec<WellRange> = to_read
        .iter()
        .flat_map(|&(well, from, to)| {
            (from..to)
                .step_by((width * BUCKETS_PER_FETCH) as usize)
                .map(move |a| (well, a, (a + width * BUCKETS_PER_FETCH).min(to)))
        })
        .collect();
    // A finished bucket is written (and folded into the coarser level) or, when this level
    // has fresh parts, completed with them before everything is written at the end.
    let mut finish = |done: BucketAcc, well: &str, enc: &mut CopyEncoder| match &mut folded {
        Some(buckets) => buckets
            .entry((well.to_owned(), done.start))
            .or_insert_with(|| BucketAcc::new(done.start))
            .absorb(&done),
        None => {
            done.encode(enc, well);
            if let Some(c) = coarser.as_deref_mut() {
                c.absorb(well, &done);
            }
        }
    };
    // Pipelined: the next fetches are on the wire while one is folded.
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut queued = pieces.iter();
    let mut enc = CopyEncoder::new(0);
    loop {
        // COPY only with nothing in flight: a fetch's unread rows would hold up the
        // connection, and with it the COPY's response.
        if enc.encoded_len() >= COPY_FLUSH_BYTES && in_flight.is_empty() {
            flush(tx, &copy, &mut enc).await?;
        }
        while enc.encoded_len() < COPY_FLUSH_BYTES && in_flight.len() < FETCHES_IN_FLIGHT {
            let Some(&(well, a, b)) = queued.next() else {
                break;
            };
            in_flight.push_back(fetch_piece(tx, &fetch, well, a, b));
        }
        let Some(piece) = in_flight.next().await else {
            break;
        };
        let (well, rows) = piece.map_err(err("reading rows to roll up"))?;
        let mut bucket: Option<BucketAcc> = None;
        for row in &rows {
            let at = get::<PgTs>(row, 0)?.0;
            let start = floor(at, width);
            if let Some(done) = bucket.take_if(|b| b.start != start) {
                finish(done, well, &mut enc);
            }
            let b = bucket.get_or_insert_with(|| BucketAcc::new(start));
            match source {
                Source::Raw => {
                    b.n += 1;
                    for (k, acc) in b.channels.iter_mut().enumerate() {
                        if let Some(v) = get::<Option<f64>>(row, 1 + k)? {
                            acc.merge(1, v, v, v, v);
                            b.last_at[k] = at;
                        }
                    }
                }
                Source::Rollup(_) => {
                    b.n += get::<i64>(row, 1)?;
                    for (k, acc) in b.channels.iter_mut().enumerate() {
                        let base = 2 + 5 * k;
                        let n: i64 = get(row, base)?;
                        if n > 0 {
                            let v = |i: usize| -> StoreResult<f64> {
                                Ok(get::<Option<f64>>(row, base + i)?.unwrap_or(f64::NAN))
                            };
                            acc.merge(n, v(1)?, v(2)?, v(3)?, v(4)?);
                            b.last_at[k] = at;
                        }
                    }
                }
            }
        }
        if let Some(done) = bucket {
            finish(done, well, &mut enc);
        }
    }
    if let Some(buckets) = folded {
        // In (well, bucket) order, like the rows written above.
        for ((well, _), bucket) in &buckets {
            bucket.encode(&mut enc, well);
            if let Some(c) = coarser.as_deref_mut() {
                c.absorb(well, bucket);
            }
            if enc.encoded_len() >= COPY_FLUSH_BYTES {
                flush(tx, &copy, &mut enc).await?;
            }
        }
    }
    flush(tx, &copy, &mut enc).await
}

/// COPYs the rollup rows encoded so far and starts `enc` afresh.
async fn flush(
    tx: &tokio_postgres::Transaction<'_>,
    copy: &str,
    enc: &mut CopyEncoder,
) -> StoreResult<()> {
    std::mem::replace(enc, CopyEncoder::new(0))
        .copy_into(tx, copy)
        .await
        .map_err(|e| db_err("writing rollups", e))?;
    Ok(())
}

async fn fetch_piece<'w>(
    tx: &tokio_postgres::Transaction<'_>,
    fetch: &tokio_postgres::Statement,
    well: &'w str,
    from: i64,
    to: i64,
) -> Result<(&'w str, Vec<tokio_postgres::Row>), tokio_postgres::Error> {
    let rows = tx.query(fetch, &[&well, &PgTs(from), &PgTs(to)]).await?;
    Ok((well, rows))
}

/// One rollup bucket being folded: its sample count and per channel aggregate.
struct BucketAcc {
    start: i64,
    n: i64,
    channels: [Acc; COLUMNS.len()],
    /// Per channel, when its `last` was taken (a raw timestamp or a finer bucket's start):
    /// partials of one bucket folded out of time order still keep the latest value.
    last_at: [i64; COLUMNS.len()],
}

impl BucketAcc {
    fn new(start: i64) -> BucketAcc {
        BucketAcc {
            start,
            n: 0,
            channels: [Acc::EMPTY; COLUMNS.len()],
            last_at: [i64::MIN; COLUMNS.len()],
        }
    }

    /// Folds in another partial of this bucket or of a finer bucket inside it, in any order.
    fn absorb(&mut self, other: &BucketAcc) {
        self.n += other.n;
        for (k, (acc, o)) in self.channels.iter_mut().zip(&other.channels).enumerate() {
            if o.n == 0 {
                continue;
            }
            let newer = acc.n == 0 || other.last_at[k] > self.last_at[k];
            let last = if newer { o.last } else { acc.last };
            acc.merge(o.n, o.sum, o.min, o.max, last);
            if newer {
                self.last_at[k] = other.last_at[k];
            }
        }
    }

    /// One rollup row in `insert_columns` order; a channel without samples has NULL aggregates
    /// like SQL's `sum`/`min`/`max` over no rows.
    fn encode(&self, enc: &mut CopyEncoder, well: &str) {
        enc.row(3 + 5 * COLUMNS.len() as i16);
        enc.text(well);
        enc.timestamptz(Timestamp(self.start));
        enc.int8(self.n);
        for acc in &self.channels {
            enc.int8(acc.n);
            if acc.n > 0 {
                for v in [acc.sum, acc.min, acc.max, acc.last] {
                    enc.float8(v);
                }
            } else {
                for _ in 0..4 {
                    enc.null();
                }
            }
        }
    }
}

/// `SELECT` of the newest raw reading at or after `k.since` of each well `k.w` in the FROM item
/// `pairs`, as (well_id, ts, channels...). The lower bound lets the partitions before it be
/// skipped at run time.
fn newest_since(pairs: &str) -> String {
    let cols = column_list();
    format!(
        "SELECT k.w, t.ts, {cols} FROM {pairs}
         CROSS JOIN LATERAL (SELECT ts, {cols} FROM telemetry s
             WHERE s.well_id = k.w AND s.ts >= k.since ORDER BY ts DESC LIMIT 1) t"
    )
}

/// The newest readings of all wells: `well_latest`, which the refresher keeps, merged with the
/// newest raw reading of every well that still has queued runs (its latest minutes were written
/// after the last refresh). One statement, so one snapshot: what the refresher has consumed is
/// in `well_latest`, what it has not is still queued.
pub fn latest_sql() -> String {
    let cols = column_list();
    format!(
        "SELECT DISTINCT ON (well_id) well_id, ts, {cols} FROM (
             SELECT well_id, ts, {cols} FROM well_latest
             UNION ALL
             {queued}
         ) x ORDER BY well_id, ts DESC",
        queued = newest_since(
            "(SELECT well_id AS w, max(coalesce(last_minute, minute)) AS since
              FROM rollup_dirty GROUP BY well_id) k"
        )
    )
}

/// Moves `well_latest` forward to the newest reading of each well at or after the given
/// minute (the last queued minute being consumed, so such a reading exists); older rows there
/// stay. Runs in the transaction that deletes the consumed queue rows.
async fn advance_latest(
    client: &impl deadpool_postgres::GenericClient,
    newest: &[(&str, i64)],
) -> StoreResult<()> {
    if newest.is_empty() {
        return Ok(());
    }
    let wells: Vec<&str> = newest.iter().map(|n| n.0).collect();
    let since: Vec<PgTs> = newest.iter().map(|n| PgTs(n.1)).collect();
    let updates: String = COLUMNS
        .iter()
        .map(|c| format!(", {c} = EXCLUDED.{c}"))
        .collect();
    client
        .execute(
            &format!(
                "INSERT INTO well_latest (well_id, ts, {cols})
                 {select}
                 ON CONFLICT (well_id) DO UPDATE SET ts = EXCLUDED.ts{updates}
                 WHERE well_latest.ts < EXCLUDED.ts",
                cols = column_list(),
                select = newest_since("unnest($1::text[], $2::timestamptz[]) AS k(w, since)")
            ),
            &[&wells, &since],
        )
        .await
        .map_err(|e| db_err("updating latest readings", e))?;
    Ok(())
}

async fn refresh_timescale(shared: &Shared, limit: i64) -> StoreResult<usize> {
    let err = |what: &'static str| move |e| db_err(what, e);
    let mut client = shared
        .pool
        .get()
        .await
        .map_err(|e| pool_err("rollup refresh", e))?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_ROLLUPS])
        .await
        .map_err(err("rollup lock"))?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let result = async {
        let rows = client
            .query(
                "SELECT id, well_id, minute, coalesce(last_minute, minute) FROM rollup_dirty
                 ORDER BY id LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(err("reading the rollup queue"))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        for r in &rows {
            ids.push(get::<i64>(r, 0)?);
            let last = get::<PgTs>(r, 3)?.0;
            lo = lo.min(get::<PgTs>(r, 2)?.0);
            hi = hi.max(last);
            let at = newest.entry(get::<String>(r, 1)?).or_insert(last);
            *at = (*at).max(last);
        }
        for (width, suffix) in ROLLUPS.iter().rev() {
            let from = Timestamp(floor(lo, *width)).to_rfc3339();
            let to = Timestamp(floor(hi, *width) + width).to_rfc3339();
            client
                .batch_execute(&format!(
                    "CALL refresh_continuous_aggregate('telemetry_{suffix}', '{from}', '{to}')"
                ))
                .await
                .map_err(err("refreshing a continuous aggregate"))?;
        }
        let newest: Vec<(&str, i64)> = newest.iter().map(|(w, t)| (w.as_str(), *t)).collect();
        let tx = client
            .transaction()
            .await
            .map_err(err("starting rollup refresh"))?;
        consume_queue(tx, &newest, &ids).await?;
        Ok(ids.len())
    }
    .await;
    let _ = client
        .query("SELECT pg_advisory_unlock($1)", &[&LOCK_ROLLUPS])
        .await;
    result
}

/// Sorts (well, first minute, last minute) runs and merges those of one well that overlap or
/// lie at most `max_gap` apart.
pub(crate) fn merge_runs<W: Ord>(mut runs: Vec<(W, i64, i64)>, max_gap: i64) -> Vec<(W, i64, i64)> {
    runs.sort_unstable();
    let mut merged: Vec<(W, i64, i64)> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(m) if m.0 == run.0 && run.1 <= m.2 + max_gap => m.2 = m.2.max(run.2),
            _ => merged.push(run),
        }
    }
    merged
}

/// Running aggregate of one channel in one step bucket.
#[derive(Copy, Clone)]
struct Acc {
    n: i64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
}

impl Acc {
    const EMPTY: Acc = Acc {
        n: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        last: f64::NAN,
    };

    /// Folds in a partial (a rollup row or one raw value); partials arrive in time order.
    fn merge(&mut self, n: i64, sum: f64, min: f64, max: f64, last: f64) {
        if n == 0 {
            return;
        }
        self.n += n;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        self.last = last;
    }

    fn result(&self, agg: Agg) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(match agg {
            Agg::Avg => self.sum / self.n as f64,
            Agg::Min => self.min,
            Agg::Max => self.max,
            Agg::Last => self.last,
        })
    }
}

/// One partial of a step bucket: its start and per requested field (n, sum, min, max, last).
struct Piece {
    at: i64,
    fields: Vec<(i64, f64, f64, f64, f64)>,
}

/// The rollup fitting a bucketed query, if reading it beats reading raw points.
pub fn plan(query: &TelemetryQuery) -> Option<(i64, &'static str, i64, i64)> {
    let step = query.step_micros.filter(|s| *s > 0)?;
    let from = PgTs::clamped(query.range.from).0;
    let to = PgTs::clamped(query.range.to).0;
    ROLLUPS.iter().find_map(|&(width, suffix)| {
        if step % width != 0 {
            return None;
        }
        let inner_from = floor(from, width)
            + if from.rem_euclid(width) == 0 {
                0
            } else {
                width
            };
        let inner_to = floor(to, width);
        // Worth it from a few whole rollup buckets on.
        (inner_to - inner_from >= 4 * width).then_some((width, suffix, inner_from, inner_to))
    })
}

/// Answers a bucketed query from the rollup chosen by [`plan`], raw data filling the partial
/// buckets at the range edges and the buckets whose rollups lag (queued minutes).
pub async fn query(
    shared: &Shared,
    query: &TelemetryQuery,
    (width, suffix, inner_from, inner_to): (i64, &'static str, i64, i64),
) -> StoreResult<Series> {
    let step = query.step_micros.unwrap_or(width);
    let err = |what: &'static str| move |e| db_err(what, e);
    let from = PgTs::clamped(query.range.from).0;
    let to = PgTs::clamped(query.range.to).0;
    let well = query.well_id.as_str();
    let mut client = shared.pool.get().await.map_err(|e| pool_err("query", e))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err("starting a query"))?;

    // Step buckets containing lagging minutes are computed from raw data.
    let dirty_rows = tx
        .query(
            "SELECT minute, coalesce(last_minute, minute) FROM rollup_dirty
             WHERE well_id = $1 AND minute < $3 AND coalesce(last_minute, minute) >= $2",
            &[
                &well,
                &PgTs(floor(inner_from, MINUTE_MICROS)),
                &PgTs(inner_to),
            ],
        )
        .await
        .map_err(err("reading lagging minutes"))?;
    let mut raw_ranges: Vec<(i64, i64)> = vec![(from, inner_from), (inner_to, to)];
    for r in &dirty_rows {
        let first = bucket_start(Timestamp(get::<PgTs>(r, 0)?.0), step).0;
        let last = bucket_start(Timestamp(get::<PgTs>(r, 1)?.0), step).0;
        raw_ranges.push((first.max(inner_from), (last + step).min(inner_to)));
    }
    raw_ranges.retain(|(a, b)| a < b);
    raw_ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (a, b) in raw_ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let in_raw = |t: i64| merged.iter().any(|(a, b)| t >= *a && t < *b);

    let mut pieces: Vec<Piece> = Vec::new();
    let mut select = String::from("bucket, n");
    for f in &query.fields {
        let c = f.name();
        let _ = write!(select, ", {c}_n, {c}_sum, {c}_min, {c}_max, {c}_last");
    }
    let relation = rollup_relation(shared.flavor, suffix);
    let rows = tx
        .query(
            &format!(
                "SELECT {select} FROM {relation}
                 WHERE well_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket"
            ),
            &[&well, &PgTs(inner_from), &PgTs(inner_to)],
        )
        .await
        .map_err(err("reading rollups"))?;
    for r in &rows {
        let at = get::<PgTs>(r, 0)?.0;
        if in_raw(at) {
            continue;
        }
        let mut fields = Vec::with_capacity(query.fields.len());
        for k in 0..query.fields.len() {
            let base = 2 + k * 5;
            let n: i64 = get(r, base)?;
            let v = |i: usize| -> StoreResult<f64> {
                Ok(get::<Option<f64>>(r, base + i)?.unwrap_or(f64::NAN))
            };
            fields.push((n, v(1)?, v(2)?, v(3)?, v(4)?));
        }
        pieces.push(Piece { at, fields });
    }

    let cols: Vec<&str> = query.fields.iter().map(|f| f.name()).collect();
    let raw_sql = format!(
        "SELECT ts{} FROM telemetry WHERE well_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
        cols.iter().map(|c| format!(", {c}")).collect::<String>()
    );
    for (a, b) in &merged {
        let rows = tx
            .query(&raw_sql, &[&well, &PgTs(*a), &PgTs(*b)])
            .await
            .map_err(err("reading raw telemetry"))?;
        for r in &rows {
            let at = get::<PgTs>(r, 0)?.0;
            let mut fields = Vec::with_capacity(cols.len());
            for k in 0..cols.len() {
                match get::<Option<f64>>(r, 1 + k)? {
                    Some(v) => fields.push((1, v, v, v, v)),
                    None => fields.push((0, 0.0, 0.0, 0.0, f64::NAN)),
                }
            }
            pieces.push(Piece { at, fields });
        }
    }
    tx.commit().await.map_err(err("ending a query"))?;
    // Rollup buckets and raw ranges are disjoint, so ordering by start is time order.
    pieces.sort_by_key(|p| p.at);
    Ok(fold(pieces, &query.fields, step, query.agg))
}

fn fold(pieces: Vec<Piece>, fields: &[Field], step: i64, agg: Agg) -> Series {
    let mut series = Series {
        ts: Vec::new(),
        columns: fields.iter().map(|&f| (f, Vec::new())).collect(),
        downsampled: false,
    };
    let mut accs = vec![Acc::EMPTY; fields.len()];
    let mut current: Option<i64> = None;
    let flush = |series: &mut Series, accs: &mut [Acc], bucket: i64| {
        series.ts.push(Timestamp(bucket));
        for ((_, column), acc) in series.columns.iter_mut().zip(accs.iter_mut()) {
            column.push(acc.result(agg));
            *acc = Acc::EMPTY;
        }
    };
    for piece in pieces {
        let bucket = bucket_start(Timestamp(piece.at), step).0;
        if current != Some(bucket) {
            if let Some(done) = current {
                flush(&mut series, &mut accs, done);
            }
            current = Some(bucket);
        }
        for (acc, (n, sum, min, max, last)) in accs.iter_mut().zip(piece.fields) {
            acc.merge(n, sum, min, max, last);
        }
    }
    if let Some(done) = current {
        flush(&mut series, &mut accs, done);
    }
    series
}

/// The wells a fleet statement walks: the registry, or the named ones (`$1`, an array).
fn fleet_source(named: bool) -> &'static str {
    if named {
        "SELECT unnest($1::text[]) AS id"
    } else {
        "SELECT well_id AS id FROM wells"
    }
}

/// The parameters of a fleet statement: the named wells' array first, when there are any.
fn fleet_params<'p>(
    named: Option<&'p (dyn ToSql + Sync)>,
    rest: &[&'p (dyn ToSql + Sync)],
) -> Vec<&'p (dyn ToSql + Sync)> {
    named.into_iter().chain(rest.iter().copied()).collect()
}

/// The select lists of a fleet statement over raw telemetry and over the 1-hour rollup: the
/// readings, then per channel count, sum, min and max (a row of any channel makes a reading).
fn fleet_selects(fields: &[Field]) -> (String, String) {
    let mut raw_select = String::from("count(*)::int8");
    let mut rollup_select = String::from("sum(n)::int8");
    for f in fields {
        let c = f.name();
        let _ = write!(
            raw_select,
            ", count({c})::int8, sum({c}), min({c}), max({c})"
        );
        let _ = write!(
            rollup_select,
            ", sum({c}_n)::int8, sum({c}_sum) FILTER (WHERE {c}_n > 0), \
             min({c}_min) FILTER (WHERE {c}_n > 0), max({c}_max) FILTER (WHERE {c}_n > 0)"
        );
    }
    (raw_select, rollup_select)
}

/// Adds one row of a fleet statement (its key, the readings, then per channel count, sum,
/// min and max from column 2 on) to the channels' totals.
fn merge_channel_totals(r: &tokio_postgres::Row, channels: &mut [Totals]) -> StoreResult<()> {
    for (k, t) in channels.iter_mut().enumerate() {
        let base = 2 + 4 * k;
        let n = get::<Option<i64>>(r, base)?.unwrap_or(0);
        if n <= 0 {
            continue;
        }
        let v = |i: usize| -> StoreResult<f64> {
            Ok(get::<Option<f64>>(r, base + i)?.unwrap_or(f64::NAN))
        };
        t.merge(&Totals {
            n: n as u64,
            sum: v(1)?,
            min: v(2)?,
            max: v(3)?,
        });
    }
    Ok(())
}

/// The walked wells' whole hours within `[inner_from, inner_to)` whose rollups lag (a minute
/// queued in `rollup_dirty`), as runs per well: those are read from raw rows, not the rollup.
async fn lagging_hours(
    tx: &tokio_postgres::Transaction<'_>,
    named: Option<&(dyn ToSql + Sync)>,
    (inner_from, inner_to): (i64, i64),
) -> StoreResult<Vec<(String, i64, i64)>> {
    const HOUR: i64 = 3_600_000_000;
    let (a, b) = if named.is_some() { (2, 3) } else { (1, 2) };
    let source = fleet_source(named.is_some());
    let dirty = tx
        .query(
            &format!(
                "SELECT d.well_id, d.minute, coalesce(d.last_minute, d.minute)
                 FROM ({source}) w JOIN rollup_dirty d ON d.well_id = w.id
                 WHERE d.minute < ${b} AND coalesce(d.last_minute, d.minute) >= ${a}"
            ),
            &fleet_params(
                named,
                &[&PgTs(floor(inner_from, MINUTE_MICROS)), &PgTs(inner_to)],
            ),
        )
        .await
        .map_err(|e| db_err("reading lagging minutes", e))?;
    let mut runs: Vec<(String, i64, i64)> = Vec::with_capacity(dirty.len());
    for r in &dirty {
        let first = floor(get::<PgTs>(r, 1)?.0, HOUR).max(inner_from);
        let last = (floor(get::<PgTs>(r, 2)?.0, HOUR) + HOUR).min(inner_to);
        if first < last {
            runs.push((get::<String>(r, 0)?, first, last));
        }
    }
    Ok(merge_runs(runs, 0))
}

/// Answers [`espwatch_store::Store::fleet_totals`] in one read-only snapshot: the whole hours
/// inside the range from the 1-hour rollup, summed per well by the server, and raw telemetry,
/// also summed by the server, for the partial hours at the edges and for the hours whose
/// rollups lag (minutes queued in `rollup_dirty`). A range with fewer than four whole hours is
/// summed from raw telemetry alone. Each statement walks the wells (the registry, or the named
/// ones) with a lateral aggregate over the `(well_id, bucket|ts)` keys, so a day of 1 000 wells
/// reads 24 000 rollup rows and the edges' raw rows, whatever else the tables hold.
pub async fn totals(shared: &Shared, query: &FleetTotalsQuery) -> StoreResult<Vec<WellTotals>> {
    const HOUR: i64 = 3_600_000_000;
    let err = |what: &'static str| move |e| db_err(what, e);
    let from = PgTs::clamped(query.range.from).0;
    let to = PgTs::clamped(query.range.to).0;
    if from >= to || query.fields.is_empty() {
        return Ok(Vec::new());
    }
    let mut wells: Vec<&str> = query.wells.iter().map(|w| w.as_str()).collect();
    wells.sort_unstable();
    wells.dedup();
    let inner_from = floor(from, HOUR) + if from.rem_euclid(HOUR) == 0 { 0 } else { HOUR };
    let inner_to = floor(to, HOUR);
    let use_rollups = inner_to - inner_from >= 4 * HOUR;
    // The wells walked: `$1` is the named wells' array, when there are any.
    let source = fleet_source(!wells.is_empty());
    let first = if wells.is_empty() { 1 } else { 2 };
    let named: Option<&(dyn ToSql + Sync)> = if wells.is_empty() { None } else { Some(&wells) };
    let (a, b) = (first, first + 1);

    // Per channel: count, sum, min, max (a row of any channel makes a reading).
    let (raw_select, rollup_select) = fleet_selects(&query.fields);
    let raw_sql = format!(
        "SELECT w.id, x.* FROM ({source}) w CROSS JOIN LATERAL (
           SELECT {raw_select} FROM telemetry t
           WHERE t.well_id = w.id AND t.ts >= ${a} AND t.ts < ${b}) x"
    );

    let mut client = shared
        .pool
        .get()
        .await
        .map_err(|e| pool_err("fleet totals", e))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err("starting fleet totals"))?;

    let mut by_well: BTreeMap<String, WellTotals> = BTreeMap::new();
    let mut absorb = |rows: &[tokio_postgres::Row]| -> StoreResult<()> {
        for r in rows {
            let readings = get::<Option<i64>>(r, 1)?.unwrap_or(0);
            if readings <= 0 {
                continue;
            }
            let entry = match by_well.entry(get::<String>(r, 0)?) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let well_id = WellId::parse(v.key()).map_err(|e| {
                        StoreError::Internal(format!("stored well id {:?}: {e}", v.key()))
                    })?;
                    v.insert(WellTotals {
                        well_id,
                        readings: 0,
                        channels: vec![Totals::EMPTY; query.fields.len()],
                    })
                }
            };
            entry.readings += readings as u64;
            merge_channel_totals(r, &mut entry.channels)?;
        }
        Ok(())
    };

    let mut raw_ranges: Vec<(i64, i64)> = Vec::new();
    if use_rollups {
        raw_ranges.extend([(from, inner_from), (inner_to, to)]);
        // Hours with a lagging minute come from raw rows, the others from the rollup.
        let runs = lagging_hours(&tx, named, (inner_from, inner_to)).await?;
        let relation = rollup_relation(shared.flavor, "1h");
        let rows = tx
            .query(
                &format!(
                    "SELECT w.id, x.* FROM ({source}) w CROSS JOIN LATERAL (
                       SELECT {rollup_select} FROM {relation} r
                       WHERE r.well_id = w.id AND r.bucket >= ${a} AND r.bucket < ${b}
                         AND NOT EXISTS (
                           SELECT 1 FROM rollup_dirty d
                           WHERE d.well_id = r.well_id AND d.minute < r.bucket + interval '1 hour'
                             AND coalesce(d.last_minute, d.minute) >= r.bucket)) x"
                ),
                &fleet_params(named, &[&PgTs(inner_from), &PgTs(inner_to)]),
            )
            .await
            .map_err(err("reading rollups"))?;
        absorb(&rows)?;
        if !runs.is_empty() {
            let lag_wells: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
            let lag_from: Vec<PgTs> = runs.iter().map(|r| PgTs(r.1)).collect();
            let lag_to: Vec<PgTs> = runs.iter().map(|r| PgTs(r.2)).collect();
            let rows = tx
                .query(
                    &format!(
                        "SELECT d.w, x.* FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
                           AS d(w, f, t)
                         CROSS JOIN LATERAL (
                           SELECT {raw_select} FROM telemetry t
                           WHERE t.well_id = d.w AND t.ts >= d.f AND t.ts < d.t) x"
                    ),
                    &[&lag_wells, &lag_from, &lag_to],
                )
                .await
                .map_err(err("reading lagging hours"))?;
            absorb(&rows)?;
        }
    } else {
        raw_ranges.push((from, to));
    }
    for (lo, hi) in raw_ranges {
        if lo < hi {
            let rows = tx
                .query(&raw_sql, &fleet_params(named, &[&PgTs(lo), &PgTs(hi)]))
                .await
                .map_err(err("reading raw telemetry"))?;
            absorb(&rows)?;
        }
    }
    tx.commit().await.map_err(err("ending fleet totals"))?;
    Ok(by_well.into_values().collect())
}

/// Answers [`espwatch_store::Store::fleet_aggregate`] for `avg`, `min` and `max` in one
/// read-only snapshot, summed per bucket by the server over every asked well: when the step is
/// a whole number of hours, the whole hours inside the range come from the 1-hour rollup and
/// raw telemetry fills the partial hours at the edges and the hours whose rollups lag (minutes
/// queued in `rollup_dirty`), as [`totals`] does; other steps are summed from raw telemetry
/// alone. `None` for `last` (a latest value across wells needs each reading's time, which the
/// rollups do not keep): the caller answers it from raw points.
pub async fn fleet_aggregate(shared: &Shared, query: &FleetQuery) -> StoreResult<Option<Series>> {
    const HOUR: i64 = 3_600_000_000;
    let step = query.step_micros;
    if matches!(query.agg, Agg::Last) || step <= 0 {
        return Ok(None);
    }
    let err = |what: &'static str| move |e| db_err(what, e);
    let from = PgTs::clamped(query.range.from).0;
    let to = PgTs::clamped(query.range.to).0;
    let mut series = Series {
        ts: Vec::new(),
        columns: query.fields.iter().map(|&f| (f, Vec::new())).collect(),
        downsampled: false,
    };
    if from >= to || query.fields.is_empty() {
        return Ok(Some(series));
    }
    let mut wells: Vec<&str> = query.wells.iter().map(|w| w.as_str()).collect();
    wells.sort_unstable();
    wells.dedup();
    let inner_from = floor(from, HOUR) + if from.rem_euclid(HOUR) == 0 { 0 } else { HOUR };
    let inner_to = floor(to, HOUR);
    let use_rollups = step % HOUR == 0 && inner_to - inner_from >= HOUR;
    // The wells walked: `$1` is the named wells' array, when there are any.
    let source = fleet_source(!wells.is_empty());
    let first = if wells.is_empty() { 1 } else { 2 };
    let named: Option<&(dyn ToSql + Sync)> = if wells.is_empty() { None } else { Some(&wells) };
    // `$a`, `$b`: the time range; `$s`: the step in micros. The bucket (micros since the
    // epoch, floored to the step as `series::bucket_start` does) in exact numeric arithmetic.
    let (a, b, s) = (first, first + 1, first + 2);
    let bucket = |col: &str, s: usize| {
        format!("(floor(extract(epoch FROM {col}) * 1000000 / ${s}::int8) * ${s}::int8)::int8")
    };
    // Per bucket: readings, then per channel count, sum, min, max.
    let (raw_select, rollup_select) = fleet_selects(&query.fields);
    let raw_sql = format!(
        "SELECT {bk}, {raw_select} FROM ({source}) w
         JOIN telemetry t ON t.well_id = w.id AND t.ts >= ${a} AND t.ts < ${b}
         GROUP BY 1",
        bk = bucket("t.ts", s)
    );

    let mut client = shared
        .pool
        .get()
        .await
        .map_err(|e| pool_err("fleet aggregate", e))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err("starting fleet aggregate"))?;

    let mut buckets: BTreeMap<i64, (u64, Vec<Totals>)> = BTreeMap::new();
    let mut absorb = |rows: &[tokio_postgres::Row]| -> StoreResult<()> {
        for r in rows {
            let readings = get::<Option<i64>>(r, 1)?.unwrap_or(0);
            if readings <= 0 {
                continue;
            }
            let entry = buckets
                .entry(get::<i64>(r, 0)?)
                .or_insert_with(|| (0, vec![Totals::EMPTY; query.fields.len()]));
            entry.0 += readings as u64;
            merge_channel_totals(r, &mut entry.1)?;
        }
        Ok(())
    };

    let mut raw_ranges: Vec<(i64, i64)> = Vec::new();
    if use_rollups {
        raw_ranges.extend([(from, inner_from), (inner_to, to)]);
        // Hours with a lagging minute come from raw rows, the others from the rollup.
        let runs = lagging_hours(&tx, named, (inner_from, inner_to)).await?;
        let relation = rollup_relation(shared.flavor, "1h");
        let rows = tx
            .query(
                &format!(
                    "SELECT {bk}, {rollup_select}
                     FROM ({source}) w JOIN {relation} r
                       ON r.well_id = w.id AND r.bucket >= ${a} AND r.bucket < ${b}
                     WHERE NOT EXISTS (
                       SELECT 1 FROM rollup_dirty d
                       WHERE d.well_id = r.well_id AND d.minute < r.bucket + interval '1 hour'
                         AND coalesce(d.last_minute, d.minute) >= r.bucket)
                     GROUP BY 1",
                    bk = bucket("r.bucket", s)
                ),
                &fleet_params(named, &[&PgTs(inner_from), &PgTs(inner_to), &step]),
            )
            .await
            .map_err(err("reading rollups"))?;
        absorb(&rows)?;
        if !runs.is_empty() {
            let lag_wells: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
            let lag_from: Vec<PgTs> = runs.iter().map(|r| PgTs(r.1)).collect();
            let lag_to: Vec<PgTs> = runs.iter().map(|r| PgTs(r.2)).collect();
            let rows = tx
                .query(
                    &format!(
                        "SELECT {bk}, {raw_select}
                         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS d(w, f, t)
                         JOIN telemetry t ON t.well_id = d.w AND t.ts >= d.f AND t.ts < d.t
                         GROUP BY 1",
                        bk = bucket("t.ts", 4)
                    ),
                    &[&lag_wells, &lag_from, &lag_to, &step],
                )
                .await
                .map_err(err("reading lagging hours"))?;
            absorb(&rows)?;
        }
    } else {
        raw_ranges.push((from, to));
    }
    for (lo, hi) in raw_ranges {
        if lo < hi {
            let rows = tx
                .query(
                    &raw_sql,
                    &fleet_params(named, &[&PgTs(lo), &PgTs(hi), &step]),
                )
                .await
                .map_err(err("reading raw telemetry"))?;
            absorb(&rows)?;
        }
    }
    tx.commit().await.map_err(err("ending fleet aggregate"))?;
    for (at, (_, totals)) in buckets {
        series.ts.push(Timestamp(at));
        for ((_, column), t) in series.columns.iter_mut().zip(&totals) {
            column.push(t.result(query.agg));
        }
    }
    Ok(Some(series))
}

/// Whether the error is worth one retry on another connection.
pub fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_leaves_the_parts_outside_the_covered_ranges() {
        let ranges = [("a", 0, 100), ("b", 0, 100), ("c", 0, 100)];
        let covered = [
            ("a", 10, 20),
            ("a", 30, 40),
            ("a", 90, 100),
            ("b", 0, 100),
            ("bb", 0, 50),
        ];
        assert_eq!(
            uncovered(&ranges, &covered),
            vec![("a", 0, 10), ("a", 20, 30), ("a", 40, 90), ("c", 0, 100)]
        );
        assert_eq!(uncovered(&ranges[..1], &[]), vec![("a", 0, 100)]);
        // A covered range reaching past the range's start.
        assert_eq!(
            uncovered(&[("a", 50, 100)], &[("a", 0, 60)]),
            vec![("a", 60, 100)]
        );
    }

    fn partial(start: i64, values: &[(i64, f64)]) -> BucketAcc {
        let mut b = BucketAcc::new(start);
        for &(at, v) in values {
            b.n += 1;
            b.channels[0].merge(1, v, v, v, v);
            b.last_at[0] = at;
        }
        b
    }

    #[test]
    fn absorbing_partials_in_any_order_keeps_the_latest_last() {
        let early = partial(0, &[(1, 5.0), (2, 7.0)]);
        let late = partial(60, &[(61, 1.0), (62, 3.0)]);
        for order in [[&early, &late], [&late, &early]] {
            let mut hour = BucketAcc::new(0);
            for p in order {
                hour.absorb(p);
            }
            let c = &hour.channels[0];
            assert_eq!((hour.n, c.n, c.sum, c.min, c.max), (4, 4, 16.0, 1.0, 7.0));
            assert_eq!(c.last, 3.0);
            assert_eq!(hour.last_at[0], 62);
            // A channel without samples stays empty.
            assert_eq!(hour.channels[1].n, 0);
        }
    }
}
