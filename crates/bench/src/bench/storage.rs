//! `espwatch-bench storage`: a simulated fleet at gauge precision loaded into a temporary
//! embedded store, then the bytes on disk per reading (every file of the data directory) and
//! the latency of one-well queries on it.

use std::time::Instant;

use anyhow::{Context, bail};
use espwatch_core::sim::{self, FleetConfig, IntervalChoice, WellSimulator};
use espwatch_core::{Agg, Field, Measurements, Reading, TelemetryQuery, TimeRange, Timestamp};
use espwatch_store::embedded::{UNCOMPRESSED_READING_BYTES, check};
use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};
use indicatif::{ProgressBar, ProgressStyle};

use super::{Latencies, ms};

pub struct StoragePlan {
    pub wells: usize,
    pub days: u32,
    pub family: String,
    pub interval: Option<String>,
    pub seed: u64,
    pub queries: usize,
    pub fast_only: bool,
    pub keep: Option<std::path::PathBuf>,
}

/// The value a gauge reports as text (the simulator's CSV writes each channel with its
/// resolution's decimals) parsed back, as `espwatch ingest` and the HTTP decoders would.
fn at_gauge_precision(m: &Measurements) -> Measurements {
    let mut out = Measurements::empty();
    for f in Field::ALL {
        if let Some(v) = m.get(f) {
            let scale = 10f64.powi(sim::csv::decimals(f) as i32);
            // `n / 10^d` with both exact is the correctly rounded decimal, as parsing it is.
            out.set(f, Some((v * scale).round() / scale));
        }
    }
    out
}

pub async fn bench_storage(plan: &StoragePlan) -> anyhow::Result<()> {
    if plan.wells == 0 || plan.days == 0 {
        bail!("--wells and --days must be positive");
    }
    let duration = i64::from(plan.days) * 86_400_000_000;
    let start = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").context("start")?;
    let mut config = FleetConfig::new(plan.seed, plan.wells, start, duration);
    config.family = plan.family.parse().map_err(anyhow::Error::msg)?;
    config.interval_from_family = plan.interval.is_none();
    if let Some(interval) = &plan.interval {
        config.interval = interval
            .parse::<IntervalChoice>()
            .map_err(anyhow::Error::msg)?;
    }
    let fleet = sim::plan_fleet(&config).map_err(anyhow::Error::msg)?;
    let expected: u64 = fleet
        .wells
        .iter()
        .map(|w| (duration / w.interval_micros) as u64)
        .sum();
    println!(
        "espwatch-bench storage — {} wells × {} days, family {}, seed {} (~{expected} readings at gauge precision)",
        plan.wells, plan.days, plan.family, plan.seed
    );

    let temp = tempfile::tempdir()?;
    let dir = match &plan.keep {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!("{} is not empty", dir.display());
            }
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let store = EmbeddedStore::open(
        &dir,
        EmbeddedOptions {
            compact_segments: !plan.fast_only,
            ..EmbeddedOptions::default()
        },
    )?;
    let progress = ProgressBar::new(expected);
    progress.set_style(
        ProgressStyle::with_template(
            "simulating and loading {bar:40} {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let loaded = Instant::now();
    // The fleet reports in data-time order: every well's readings of a 10-minute slice, then
    // the next slice. The simulators run on a blocking thread and hand batches over.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Reading>>(4);
    let generator = tokio::task::spawn_blocking(move || {
        let mut sims: Vec<_> = fleet
            .wells
            .iter()
            .map(|w| (w, WellSimulator::new(w, start, duration), None))
            .collect();
        let slice = 600_000_000i64;
        let mut until = start.0 + slice;
        loop {
            let mut batch = Vec::new();
            let mut live = false;
            for (plan, simulator, pending) in sims.iter_mut() {
                loop {
                    let sample = match pending.take() {
                        Some(s) => s,
                        None => match simulator.next_sample() {
                            Some(s) => s,
                            None => break,
                        },
                    };
                    live = true;
                    if sample.ts.0 >= until {
                        *pending = Some(sample);
                        break;
                    }
                    if let Some(mut r) = sample.reading(plan) {
                        r.values = at_gauge_precision(&r.values);
                        batch.push(r);
                    }
                }
            }
            if !live {
                break;
            }
            if !batch.is_empty() && tx.blocking_send(batch).is_err() {
                break;
            }
            until += slice;
        }
    });
    let mut readings = 0u64;
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(batch) = rx.recv().await {
        let store = store.clone();
        in_flight.spawn(async move {
            let out = store.append(batch, AppendOptions::default()).await?;
            anyhow::Ok(out.count(espwatch_store::ReadingOutcome::Accepted) as u64)
        });
        while in_flight.len() >= 3 {
            if let Some(done) = in_flight.join_next().await {
                let n = done??;
                readings += n;
                progress.inc(n);
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        let n = done??;
        readings += n;
        progress.inc(n);
    }
    generator.await?;
    store.checkpoint().await?;
    progress.finish_and_clear();
    let load_secs = loaded.elapsed().as_secs_f64();
    println!(
        "simulated and loaded {readings} readings in {load_secs:.1}s ({:.0} readings/s, durable, sealed)",
        readings as f64 / load_secs
    );

    // One-well 24 h at 1-minute steps, in process (no HTTP): every channel, then the three a
    // chart usually shows.
    let wells = store.list_wells().await?;
    let day = 86_400_000_000i64;
    for (label, fields) in [
        ("all channels", Field::ALL.to_vec()),
        (
            "3 channels",
            vec![
                Field::MotorCurrentA,
                Field::IntakePressurePsi,
                Field::MotorTempC,
            ],
        ),
    ] {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut lat = Latencies::default();
        for _ in 0..plan.queries {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let well = &wells[(rng % wells.len() as u64) as usize];
            let from = start.0 + ((rng >> 20) as i64).rem_euclid((duration - day).max(1));
            let query = TelemetryQuery {
                well_id: well.meta.well_id.clone(),
                range: TimeRange {
                    from: Timestamp(from),
                    to: Timestamp(from + day),
                },
                fields: fields.clone(),
                step_micros: Some(60_000_000),
                agg: Agg::Avg,
                max_points: 2000,
            };
            let t = Instant::now();
            let series = store.query(&query).await?;
            lat.0.push(t.elapsed());
            if series.ts.is_empty() {
                bail!("query of {} returned nothing", query.well_id);
            }
        }
        println!(
            "one-well 24 h, 1-minute step (avg, {label}, in process): p50 {}  p95 {}",
            ms(lat.percentile(50.0)),
            ms(lat.percentile(95.0))
        );
    }

    // Long ranges: one well over the whole run at 1-day steps, and the fleet's hourly
    // average intake pressure over the last week (every well, one after the other).
    let mut lat = Latencies::default();
    for (i, well) in wells.iter().cycle().take(plan.queries.min(100)).enumerate() {
        let query = TelemetryQuery {
            well_id: well.meta.well_id.clone(),
            range: TimeRange {
                from: start,
                to: Timestamp(start.0 + duration),
            },
            fields: Field::ALL.to_vec(),
            step_micros: Some(day),
            agg: [Agg::Avg, Agg::Min, Agg::Max, Agg::Last][i % 4],
            max_points: 2000,
        };
        let t = Instant::now();
        store.query(&query).await?;
        lat.0.push(t.elapsed());
    }
    println!(
        "one-well {} days at 1-day steps (all channels): p50 {}  p95 {}",
        plan.days,
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0))
    );
    let week = (7 * day).min(duration);
    let mut lat = Latencies::default();
    for _ in 0..plan.queries.clamp(1, 20) {
        let t = Instant::now();
        for well in &wells {
            let query = TelemetryQuery {
                well_id: well.meta.well_id.clone(),
                range: TimeRange {
                    from: Timestamp(start.0 + duration - week),
                    to: Timestamp(start.0 + duration),
                },
                fields: vec![Field::IntakePressurePsi],
                step_micros: Some(3_600_000_000),
                agg: Agg::Avg,
                max_points: 2000,
            };
            store.query(&query).await?;
        }
        lat.0.push(t.elapsed());
    }
    println!(
        "fleet ({} wells) hourly average intake pressure over {} days: p50 {}  p95 {}",
        wells.len(),
        week / day,
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0))
    );

    // Closing checkpoints SQLite's WAL into the database and removes it: what stays on disk.
    store.close().await?;
    drop(store);
    let report = check::storage(&dir)?;
    for (name, bytes) in &report.files {
        println!("  {name:<24} {bytes:>14} bytes");
    }
    println!(
        "  (segments {} bytes, {:.2} per reading; free pages {} bytes)",
        report.segment_bytes,
        report.segment_bytes as f64 / report.readings.max(1) as f64,
        report.free_bytes
    );
    let per_reading = report.bytes_per_reading();
    println!(
        "{} readings, {} segments ({} compact): {} bytes, {per_reading:.2} bytes/reading all-in, \
         {:.1}x smaller than uncompressed ({UNCOMPRESSED_READING_BYTES} bytes/reading)",
        report.readings,
        report.segments,
        report.compact_segments,
        report.total_bytes,
        UNCOMPRESSED_READING_BYTES as f64 / per_reading
    );
    if report.readings != readings {
        bail!(
            "the store holds {} readings, {readings} were accepted",
            report.readings
        );
    }
    Ok(())
}
