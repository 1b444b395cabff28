//! Quick performance measurements of the embedded engine. Ignored by default; run with
//! `cargo test -p espwatch-store --release --test bench -- --ignored --nocapture --test-threads 1`.
//! Set `ESPWATCH_BENCH_DIR` to measure on a particular disk (default: the system temp dir),
//! `ESPWATCH_BENCH_WELLS` to change the read benchmark's data set (default 100 wells x 7 days).

use std::sync::Arc;
use std::time::{Duration, Instant};

use espwatch_core::{FIELD_COUNT, Measurements, Reading, TimeRange, Timestamp, WellId};
use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};

const T0: i64 = 1_767_225_600_000_000;
const STEP: i64 = 10_000_000; // 10 s

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("ESPWATCH_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// Plausible SCADA values: decimals with one or two digits drifting slowly.
fn values(well: usize, i: i64) -> Measurements {
    let raw: [f64; FIELD_COUNT] = std::array::from_fn(|c| {
        let base = 50.0 + (well * 13 + c * 97) as f64;
        let wiggle = ((i * 31 + c as i64 * 7 + well as i64) % 40) as f64 * 0.1;
        ((base + wiggle) * 100.0).round() / 100.0
    });
    Measurements::from_raw(raw)
}

fn ids(n: usize) -> Vec<WellId> {
    (0..n)
        .map(|w| WellId::parse(&format!("WELL-{w:04}")).unwrap())
        .collect()
}

fn opts() -> AppendOptions {
    AppendOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_batch_appends() {
    let dir = tempdir();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells = Arc::new(ids(800));
    let tasks = 8;
    let batches_per_task = 400; // 8 * 400 * 1000 = 3.2M readings
    // Batches are built before the clock starts: this measures the store, not the generator.
    let mut per_task: Vec<Vec<Vec<Reading>>> = Vec::new();
    for t in 0..tasks {
        // Each task owns 100 wells; a batch is 10 consecutive readings of each.
        let mut batches = Vec::with_capacity(batches_per_task);
        for b in 0..batches_per_task {
            let mut batch = Vec::with_capacity(1000);
            for w in 0..100 {
                let well = t * 100 + w;
                for k in 0..10 {
                    let i = (b * 10 + k) as i64;
                    batch.push(Reading {
                        well_id: wells[well].clone(),
                        ts: Timestamp(T0 + i * STEP),
                        values: values(well, i),
                    });
                }
            }
            batches.push(batch);
        }
        per_task.push(batches);
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for batches in per_task {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut accepted = 0;
            for batch in batches {
                accepted += store.append(batch, opts()).await.unwrap().outcomes.len();
            }
            accepted
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats().await.unwrap();
    println!(
        "batch appends: {total} readings in {secs:.2} s = {:.0} readings/s ({} commits, {} checkpoints)",
        total as f64 / secs,
        stats.commits,
        stats.checkpoints
    );
    // Recovery of a large log: drop without close, reopen.
    let in_log = stats.readings_in_log;
    drop(store);
    let started = Instant::now();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    println!(
        "reopen replaying {in_log} readings from the log: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    store.close().await.unwrap();
    println!(
        "close (final checkpoint): {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_single_appends() {
    let dir = tempdir();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells = Arc::new(ids(1000));
    let tasks = 256;
    let deadline = Instant::now() + Duration::from_secs(3);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let wells = wells.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0i64;
            while Instant::now() < deadline {
                let r = Reading {
                    well_id: wells[t % 1000].clone(),
                    ts: Timestamp(T0 + (n * tasks as i64 + t as i64) * STEP),
                    values: values(t, n),
                };
                store.append(vec![r], opts()).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats().await.unwrap();
    println!(
        "single-reading appends from {tasks} tasks: {:.0} appends/s ({} commits, {:.0} appends/commit)",
        total as f64 / secs,
        stats.commits,
        total as f64 / stats.commits as f64
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_read_range() {
    let dir = tempdir();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    // ESPWATCH_BENCH_WELLS=1000 gives the 60M-reading target data set (about 100 s to load).
    let nwells: usize = std::env::var("ESPWATCH_BENCH_WELLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let days = 7;
    let wells = ids(nwells);
    let per_well = days * 86_400 / 10;
    let started = Instant::now();
    // Load chronologically (all wells advance together), as live ingestion would.
    let chunk = 10;
    let mut i = 0;
    while i < per_well {
        let mut batch = Vec::with_capacity(nwells * chunk as usize);
        for (w, id) in wells.iter().enumerate() {
            for k in i..(i + chunk).min(per_well) {
                batch.push(Reading {
                    well_id: id.clone(),
                    ts: Timestamp(T0 + k * STEP),
                    values: values(w, k),
                });
            }
        }
        store.append(batch, opts()).await.unwrap();
        i += chunk;
    }
    store.checkpoint().await.unwrap();
    let load = started.elapsed().as_secs_f64();
    let stats = store.stats().await.unwrap();
    let db_size = std::fs::metadata(dir.path().join("espwatch.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "loaded {} readings in {load:.1} s ({:.0}/s); {} segments; db {:.1} MiB ({:.1} B/reading)",
        nwells as i64 * per_well,
        (nwells as i64 * per_well) as f64 / load,
        stats.segments,
        db_size as f64 / 1048576.0,
        db_size as f64 / (nwells as i64 * per_well) as f64
    );
    // Some unsealed data on top, as in a live system.
    let mut batch = Vec::new();
    for (w, id) in wells.iter().enumerate() {
        for k in per_well..per_well + 30 {
            batch.push(Reading {
                well_id: id.clone(),
                ts: Timestamp(T0 + k * STEP),
                values: values(w, k),
            });
        }
    }
    store.append(batch, opts()).await.unwrap();

    let day = 86_400 * 1_000_000i64;
    let mut lat = Vec::new();
    let mut rng = 12345u64;
    for q in 0..300 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = &wells[(rng >> 33) as usize % nwells];
        // Mostly "the last 24 h", otherwise a random day of the week.
        let to = if q % 2 == 0 {
            T0 + (per_well + 30) * STEP
        } else {
            T0 + day + ((rng >> 20) as i64 % (6 * day))
        };
        let range = TimeRange {
            from: Timestamp(to - day),
            to: Timestamp(to),
        };
        let t = Instant::now();
        let points = store.read_range(w, range).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(points.len() >= 8600, "{}", points.len());
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "read_range 24 h (8 640 points), {nwells} wells x {days} days: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.95),
        lat[lat.len() - 1]
    );
    // The same while ingestion runs flat out (1000-reading batches, continuous checkpoints).
    let writer = {
        let store = store.clone();
        let wells = wells.clone();
        tokio::spawn(async move {
            let mut written = 0usize;
            let started = Instant::now();
            let mut k = per_well + 30;
            while started.elapsed() < Duration::from_secs(4) {
                let mut batch = Vec::with_capacity(1000);
                for (w, id) in wells.iter().enumerate() {
                    for j in 0..10 {
                        batch.push(Reading {
                            well_id: id.clone(),
                            ts: Timestamp(T0 + (k + j) * STEP),
                            values: values(w, k + j),
                        });
                    }
                }
                k += 10;
                written += store.append(batch, opts()).await.unwrap().outcomes.len();
            }
            written as f64 / started.elapsed().as_secs_f64()
        })
    };
    let mut lat = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = &wells[(rng >> 33) as usize % nwells];
        let to = T0 + day + ((rng >> 20) as i64 % (6 * day));
        let range = TimeRange {
            from: Timestamp(to - day),
            to: Timestamp(to),
        };
        let t = Instant::now();
        store.read_range(w, range).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ingest_rate = writer.await.unwrap();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "read_range 24 h during ingestion at {ingest_rate:.0} readings/s: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} queries)",
        pct(0.5),
        pct(0.95),
        pct(0.99),
        lat[lat.len() - 1],
        lat.len()
    );
    // Concurrent readers.
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let w = wells[t * 7 % nwells].clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..50 {
                let range = TimeRange {
                    from: Timestamp(T0 + 2 * day),
                    to: Timestamp(T0 + 3 * day),
                };
                store.read_range(&w, range).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    println!(
        "concurrent read_range 24 h: {:.0} queries/s",
        400.0 / started.elapsed().as_secs_f64()
    );

    // Recovery: drop without close (no final checkpoint), then time the reopen.
    let in_log = store.stats().await.unwrap().readings_in_log;
    drop(store);
    let started = Instant::now();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    println!(
        "reopen with {in_log} readings to replay from the log: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    store.close().await.unwrap();
    println!(
        "close (final checkpoint): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    println!(
        "reopen after a clean close: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    store.close().await.unwrap();
}
