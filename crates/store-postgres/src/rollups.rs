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

use std::collections::BTreeSet;
use std::fmt::Write as _;

use espwatch_core::series::bucket_start;
use espwatch_core::{Agg, Field, Series, TelemetryQuery, Timestamp};
use espwatch_store::{StoreError, StoreResult};
use tokio_postgres::IsolationLevel;

use crate::Shared;
use crate::schema::{
    COLUMNS, Flavor, LOCK_ROLLUPS, MINUTE_MICROS, ROLLUPS, raw_aggregates, rollup_aggregates,
    rollup_relation,
};
use crate::types::{PgTs, db_err, get, pool_err};

/// Applies the queued rollup work (at most `limit` queue rows); returns how many it consumed.
pub async fn refresh(shared: &Shared, limit: i64) -> StoreResult<usize> {
    match shared.flavor {
        Flavor::Partitioned => refresh_tables(shared, limit).await,
        Flavor::Timescale => refresh_timescale(shared, limit).await,
    }
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
    let cols = insert_columns();

    // Minutes: every minute of every run, recomputed from raw rows.
    let wells: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    let firsts: Vec<PgTs> = runs.iter().map(|r| PgTs(r.1)).collect();
    let lasts: Vec<PgTs> = runs.iter().map(|r| PgTs(r.2)).collect();
    tx.execute(
        "DELETE FROM rollup_1m r
         USING unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(w, f, l)
         WHERE r.well_id = k.w AND r.bucket >= k.f AND r.bucket <= k.l",
        &[&wells, &firsts, &lasts],
    )
    .await
    .map_err(err("clearing rollups"))?;
    tx.execute(
        &format!(
            "INSERT INTO rollup_1m ({cols})
             SELECT s.well_id, date_bin('1 minute', s.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                 {aggs}
             FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS k(w, f, l)
             JOIN telemetry s ON s.well_id = k.w AND s.ts >= k.f
                 AND s.ts < k.l + INTERVAL '1 minute'
             GROUP BY 1, 2",
            aggs = raw_aggregates("s")
        ),
        &[&wells, &firsts, &lasts],
    )
    .await
    .map_err(err("computing rollups"))?;

    // Hours, then days: the buckets holding changed minutes, from the finer rollup.
    let mut keys: BTreeSet<(&str, i64)> = BTreeSet::new();
    for (well, first, last) in &runs {
        let hour = ROLLUPS[1].0;
        let mut t = floor(*first, hour);
        while t <= *last {
            keys.insert((well.as_str(), t));
            t += hour;
        }
    }
    for (level, &(width, suffix)) in ROLLUPS[..2].iter().enumerate().rev() {
        let finer = ROLLUPS[level + 1].1;
        keys = keys
            .into_iter()
            .map(|(w, t)| (w, floor(t, width)))
            .collect();
        let (wells, buckets): (Vec<&str>, Vec<PgTs>) =
            keys.iter().map(|(w, t)| (*w, PgTs(*t))).unzip();
        let table = format!("rollup_{suffix}");
        tx.execute(
            &format!(
                "DELETE FROM {table} r USING unnest($1::text[], $2::timestamptz[]) AS k(w, b)
                 WHERE r.well_id = k.w AND r.bucket = k.b"
            ),
            &[&wells, &buckets],
        )
        .await
        .map_err(err("clearing rollups"))?;
        tx.execute(
            &format!(
                "INSERT INTO {table} ({cols})
                 SELECT k.w, k.b, {aggs}
                 FROM unnest($1::text[], $2::timestamptz[]) AS k(w, b)
                 JOIN rollup_{finer} s ON s.well_id = k.w AND s.bucket >= k.b
                     AND s.bucket < k.b + make_interval(secs => {secs})
                 GROUP BY k.w, k.b",
                aggs = rollup_aggregates("s"),
                secs = width / 1_000_000
            ),
            &[&wells, &buckets],
        )
        .await
        .map_err(err("computing rollups"))?;
    }
    tx.execute("DELETE FROM rollup_dirty WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(err("consuming the rollup queue"))?;
    tx.commit().await.map_err(err("committing rollups"))?;
    Ok(ids.len())
}

async fn refresh_timescale(shared: &Shared, limit: i64) -> StoreResult<usize> {
    let err = |what: &'static str| move |e| db_err(what, e);
    let client = shared
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
                "SELECT id, minute, coalesce(last_minute, minute) FROM rollup_dirty
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
        for r in &rows {
            ids.push(get::<i64>(r, 0)?);
            lo = lo.min(get::<PgTs>(r, 1)?.0);
            hi = hi.max(get::<PgTs>(r, 2)?.0);
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
        client
            .execute("DELETE FROM rollup_dirty WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(err("consuming the rollup queue"))?;
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

/// Whether the error is worth one retry on another connection.
pub fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}
