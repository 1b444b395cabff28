//! `espwatch bench ingest|query`: throughput and latency of the real server on a temporary
//! store. Client and server share this machine, so figures are for the pair; compare ratios
//! and medians between runs rather than single numbers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::{Field, Measurements, Reading, Timestamp, WellId};
use espwatch_server::{AppState, Config};
use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Ingestion: (a) batches over HTTP from concurrent clients, (b) single-reading requests
    /// from concurrent clients, (c) store appends without HTTP. Every request is durable.
    Ingest {
        /// Concurrent clients sending batches.
        #[arg(long, default_value_t = 4)]
        batch_clients: usize,
        /// Readings per batch.
        #[arg(long, default_value_t = 1_000)]
        batch_size: usize,
        /// Readings sent in total in (a) and (c).
        #[arg(long, default_value_t = 2_000_000)]
        readings: usize,
        /// Concurrent clients sending single readings.
        #[arg(long, default_value_t = 64)]
        single_clients: usize,
        /// Single-reading requests sent in total in (b).
        #[arg(long, default_value_t = 60_000)]
        single_requests: usize,
    },
    /// Queries: load WELLS × DAYS of readings at INTERVAL, then time one-well 24 h 1-minute-step
    /// queries and the fleet `latest` query over HTTP.
    Query {
        #[arg(long, default_value_t = 1_000)]
        wells: usize,
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Sampling interval of the loaded data.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Queries to time of each kind.
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
}

pub async fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest {
            batch_clients,
            batch_size,
            readings,
            single_clients,
            single_requests,
        } => {
            bench_ingest(
                *batch_clients,
                *batch_size,
                *readings,
                *single_clients,
                *single_requests,
            )
            .await
        }
        BenchCommand::Query {
            wells,
            days,
            interval,
            queries,
        } => {
            let interval = parse_duration_micros(interval).map_err(anyhow::Error::msg)?;
            bench_query(*wells, *days, interval, *queries).await
        }
    }
}

/// A server on a fresh temporary store, stopped when dropped.
struct TestServer {
    address: SocketAddr,
    store: EmbeddedStore,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
        Self::start_on(dir, store).await
    }

    async fn start_on(dir: tempfile::TempDir, store: EmbeddedStore) -> anyhow::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let state = AppState::new(Arc::new(store.clone()) as Arc<dyn Store>, config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(espwatch_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(TestServer {
            address,
            store,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

/// Deterministic, plausible values with two decimals (as gauges report them).
fn synthetic(well: usize, step: u64) -> Measurements {
    let mut m = Measurements::empty();
    let wobble = |k: u64| {
        ((step
            .wrapping_mul(2654435761)
            .wrapping_add(k * 97 + well as u64)
            % 1000) as f64)
            / 1000.0
    };
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    let base = 50.0 + (well % 10) as f64;
    m.set(Field::FrequencyHz, Some(round2(base)));
    m.set(Field::MotorCurrentA, Some(round2(40.0 + 5.0 * wobble(1))));
    m.set(
        Field::MotorVoltageV,
        Some(round2(2300.0 + 10.0 * wobble(2))),
    );
    m.set(
        Field::IntakePressurePsi,
        Some(round2(850.0 + 20.0 * wobble(3))),
    );
    m.set(
        Field::DischargePressurePsi,
        Some(round2(2900.0 + 30.0 * wobble(4))),
    );
    m.set(
        Field::TubingPressurePsi,
        Some(round2(150.0 + 5.0 * wobble(5))),
    );
    m.set(Field::IntakeTempC, Some(round2(90.0 + wobble(6))));
    m.set(Field::MotorTempC, Some(round2(120.0 + 2.0 * wobble(7))));
    m.set(Field::VibrationXG, Some(round2(0.3 + 0.1 * wobble(8))));
    m.set(Field::VibrationYG, Some(round2(0.3 + 0.1 * wobble(9))));
    m.set(Field::FlowRateBpd, Some(round2(1500.0 + 50.0 * wobble(10))));
    m
}

const BENCH_START_SECS: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn reading_json(out: &mut String, well: usize, step: u64) {
    let ts = Timestamp::from_secs(BENCH_START_SECS + step as i64 * 10);
    let _ = write!(out, "{{\"well_id\":\"BENCH-{well:04}\",\"ts\":\"{ts}\"");
    for (f, v) in synthetic(well, step).iter() {
        let _ = write!(out, ",\"{}\":{v}", f.name());
    }
    out.push('}');
}

#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Sends `bodies` (each carrying `per_body` readings) from `clients` concurrent tasks.
async fn send_all(
    url: String,
    content_type: &'static str,
    bodies: Arc<Vec<Bytes>>,
    clients: usize,
) -> anyhow::Result<(Duration, Latencies)> {
    let http = client()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, bodies, next) = (http.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await?;
                let status = response.status();
                let report: serde_json::Value = response.json().await?;
                if !status.is_success()
                    || report["rejected"].as_array().is_some_and(|r| !r.is_empty())
                {
                    bail!("request {i} failed ({status}): {report}");
                }
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Latencies::default();
    for t in tasks {
        all.0.extend(t.await??);
    }
    Ok((started.elapsed(), all))
}

async fn bench_ingest(
    batch_clients: usize,
    batch_size: usize,
    readings: usize,
    single_clients: usize,
    single_requests: usize,
) -> anyhow::Result<()> {
    if batch_size == 0 || readings < batch_size {
        bail!("--readings must be at least --batch-size");
    }
    let wells_per_batch = 100.min(batch_size);
    let steps_per_batch = batch_size / wells_per_batch;
    let batches = readings / (wells_per_batch * steps_per_batch);
    println!(
        "espwatch bench ingest — durable (acknowledged after commit), server and clients on this machine"
    );

    // (a) batches over HTTP.
    eprintln!(
        "preparing {batches} JSON batches of {} readings…",
        wells_per_batch * steps_per_batch
    );
    let bodies: Vec<Bytes> = (0..batches)
        .map(|b| {
            let mut s = String::with_capacity(batch_size * 330);
            s.push('[');
            for step in 0..steps_per_batch {
                for well in 0..wells_per_batch {
                    if s.len() > 1 {
                        s.push(',');
                    }
                    reading_json(&mut s, well, (b * steps_per_batch + step) as u64);
                }
            }
            s.push(']');
            Bytes::from(s)
        })
        .collect();
    let bytes: usize = bodies.iter().map(Bytes::len).sum();
    let server = TestServer::start().await?;
    let (elapsed, mut lat) = send_all(
        server.url("/api/v1/telemetry"),
        "application/json",
        Arc::new(bodies),
        batch_clients,
    )
    .await?;
    let sent = batches * wells_per_batch * steps_per_batch;
    println!(
        "(a) batches of {} over HTTP, {batch_clients} clients: {:>10.0} readings/s  ({:.1} MB/s JSON)  p50 {}  p99 {}",
        wells_per_batch * steps_per_batch,
        sent as f64 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        ms(lat.percentile(50.0)),
        ms(lat.percentile(99.0)),
    );
    let stats = server.store.stats().await?;
    println!("    commits: {} for {batches} requests", stats.commits);
    server.stop().await?;

    // (b) single readings over HTTP.
    let bodies: Vec<Bytes> = (0..single_requests)
        .map(|i| {
            let mut s = String::with_capacity(400);
            reading_json(&mut s, i % 500, (i / 500) as u64);
            Bytes::from(s)
        })
        .collect();
    let server = TestServer::start().await?;
    let (elapsed, mut lat) = send_all(
        server.url("/api/v1/telemetry"),
        "application/json",
        Arc::new(bodies),
        single_clients,
    )
    .await?;
    println!(
        "(b) single readings over HTTP, {single_clients} clients: {:>10.0} requests/s  p50 {}  p99 {}",
        single_requests as f64 / elapsed.as_secs_f64(),
        ms(lat.percentile(50.0)),
        ms(lat.percentile(99.0)),
    );
    let stats = server.store.stats().await?;
    println!(
        "    commits: {} for {single_requests} requests",
        stats.commits
    );
    server.stop().await?;

    // (c) store appends, no HTTP.
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let well_ids: Vec<WellId> = (0..wells_per_batch)
        .map(|w| WellId::parse(&format!("BENCH-{w:04}")))
        .collect::<Result<_, _>>()?;
    let batch_list: Vec<Vec<Reading>> = (0..batches)
        .map(|b| {
            let mut v = Vec::with_capacity(batch_size);
            for step in 0..steps_per_batch {
                let step = (b * steps_per_batch + step) as u64;
                for (well, id) in well_ids.iter().enumerate() {
                    v.push(Reading {
                        well_id: id.clone(),
                        ts: Timestamp::from_secs(BENCH_START_SECS + step as i64 * 10),
                        values: synthetic(well, step),
                    });
                }
            }
            v
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(batch_list));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..batch_clients {
        let (store, queue) = (store.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let batch = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                let Some(batch) = batch else { break };
                let t = Instant::now();
                store.append(batch, AppendOptions::default()).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut lat = Latencies::default();
    for t in tasks {
        lat.0.extend(t.await??);
    }
    let elapsed = started.elapsed();
    println!(
        "(c) store appends of {batch_size}, {batch_clients} tasks, no HTTP: {:>10.0} readings/s  p50 {}  p99 {}",
        sent as f64 / elapsed.as_secs_f64(),
        ms(lat.percentile(50.0)),
        ms(lat.percentile(99.0)),
    );
    store.close().await?;
    Ok(())
}

async fn bench_query(
    wells: usize,
    days: u32,
    interval_micros: i64,
    queries: usize,
) -> anyhow::Result<()> {
    if wells == 0 || days == 0 || interval_micros <= 0 {
        bail!("--wells, --days and --interval must be positive");
    }
    let steps = (days as i64 * 86_400_000_000 / interval_micros) as u64;
    let total = steps * wells as u64;
    println!(
        "espwatch bench query — {wells} wells × {days} days at {}s = {total} readings",
        interval_micros as f64 / 1e6
    );
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let well_ids: Vec<WellId> = (0..wells)
        .map(|w| WellId::parse(&format!("BENCH-{w:04}")))
        .collect::<Result<_, _>>()?;
    let start = BENCH_START_SECS * 1_000_000;

    // Load in time order, as a fleet would report: chunks of steps across all wells.
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "loading {bar:40} {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let loaded = Instant::now();
    let steps_per_chunk = (20_000 / wells).max(1) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Reading>>(4);
    let generator = {
        let well_ids = well_ids.clone();
        tokio::task::spawn_blocking(move || {
            let mut step = 0;
            while step < steps {
                let end = (step + steps_per_chunk).min(steps);
                let mut batch = Vec::with_capacity(((end - step) as usize) * well_ids.len());
                for s in step..end {
                    for (w, id) in well_ids.iter().enumerate() {
                        batch.push(Reading {
                            well_id: id.clone(),
                            ts: Timestamp(start + s as i64 * interval_micros),
                            values: synthetic(w, s),
                        });
                    }
                }
                if tx.blocking_send(batch).is_err() {
                    break;
                }
                step = end;
            }
        })
    };
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(batch) = rx.recv().await {
        let n = batch.len() as u64;
        let store = store.clone();
        in_flight.spawn(async move {
            store
                .append(batch, AppendOptions::default())
                .await
                .map(|_| n)
        });
        while in_flight.len() >= 3 {
            if let Some(done) = in_flight.join_next().await {
                progress.inc(done??);
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        progress.inc(done??);
    }
    generator.await?;
    store.checkpoint().await?;
    progress.finish_and_clear();
    let load_secs = loaded.elapsed().as_secs_f64();
    println!(
        "loaded in {load_secs:.1}s ({:.0} readings/s, durable, sealed)",
        total as f64 / load_secs
    );

    let server = TestServer::start_on(dir, store).await?;
    let http = client()?;
    let end = start + steps as i64 * interval_micros;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut lat = Latencies::default();
    let mut points = 0usize;
    for _ in 0..queries {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let well = (rng % wells as u64) as usize;
        let span = 86_400_000_000i64.min(end - start);
        let from = start + ((rng >> 20) as i64).rem_euclid((end - start - span).max(1));
        let url = server.url(&format!(
            "/api/v1/wells/BENCH-{well:04}/telemetry?from={}&to={}&step=1m&agg=avg",
            Timestamp(from),
            Timestamp(from + span)
        ));
        let t = Instant::now();
        let response = http.get(&url).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        lat.0.push(t.elapsed());
        if !status.is_success() {
            bail!("query failed ({status}): {body}");
        }
        points = body["ts"].as_array().map_or(0, Vec::len);
    }
    println!(
        "one-well 24 h, 1-minute step (avg, all channels, {points} buckets): p50 {}  p95 {}",
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0))
    );
    let mut lat = Latencies::default();
    let mut count = 0;
    for _ in 0..queries.min(100) {
        let t = Instant::now();
        let body: serde_json::Value = http
            .get(server.url("/api/v1/wells/latest"))
            .send()
            .await?
            .error_for_status()
            .context("latest query")?
            .json()
            .await?;
        lat.0.push(t.elapsed());
        count = body["wells"].as_array().map_or(0, Vec::len);
    }
    println!(
        "fleet latest ({count} wells): p50 {}  p95 {}",
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0))
    );
    server.stop().await?;
    Ok(())
}
