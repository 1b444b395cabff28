//! `espwatch-bench ingest|query|storage|ask`: throughput and latency of the real server on a
//! temporary store, and bytes on disk per reading. Client and server share this machine, so figures are for the pair; compare ratios
//! and medians between runs rather than single numbers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use espwatch_app::Config;
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::{Agg, Field, Measurements, Reading, TimeRange, Timestamp, WellId};
use espwatch_server::AppState;
use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, FleetQuery, Store};
use espwatch_store_postgres::{Connector, CopyEncoder, PostgresOptions, PostgresStore, redact_url};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;

mod ask;
mod broker_load;
mod brokers;
mod cluster;
mod cpu;
mod http;
mod load;
mod offered;
mod storage;
mod stream;
use cpu::{CpuSample, CpuUse};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Ingestion: (a) batches over HTTP from concurrent clients, (b) single-reading requests
    /// from concurrent clients, (c) store appends without HTTP. Every request is durable.
    Ingest {
        /// Concurrent clients sending batches (and, with --database-url, connections of the
        /// raw COPY baseline). Eight keep the server busy: each client waits for its commit,
        /// so fewer leave the CPU idle between requests, while raw COPY is already at its
        /// best with four.
        #[arg(long, default_value_t = 8)]
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
        /// Benchmark the PostgreSQL store in this database (in scratch schemas dropped
        /// afterwards) and compare with a raw binary COPY of the same rows.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// With --database-url: rounds of (a) and raw COPY (d), alternating which goes first,
        /// each phase after a CHECKPOINT; medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Time between one well's readings: it sets how many readings each 1-minute rollup
        /// row summarises (six at 10 s), and with it the rollup upkeep per reading.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Which phases to run: a (HTTP batches), b (single readings), c (store appends).
        #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
        phases: Vec<String>,
        /// Write every request of (a), (b) and (c) to this CSV (`phase,start_unix_us,
        /// latency_us`), to line latencies up with the store's log (`RUST_LOG=espwatch_store=
        /// debug` prints each checkpoint with its duration and its install's).
        #[arg(long, value_name = "FILE")]
        timeline: Option<std::path::PathBuf>,
    },
    /// Queries: load WELLS × DAYS of readings at INTERVAL and one more well over YEAR_DAYS,
    /// then time one-well 24 h 1-minute-step queries, the fleet `latest` query and the year
    /// at 1-day steps over HTTP, and the fleet's hourly average over the DAYS in the store
    /// (`fleet_aggregate`: one series for every well; `fleet_query`: one per well).
    Query {
        #[arg(long, default_value_t = 1_000)]
        wells: usize,
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Days of the one long-range well (`BENCH-YEAR`; its readings end where the
        /// fleet's do); 0: none.
        #[arg(long, default_value_t = 365)]
        year_days: u32,
        /// Sampling interval of the loaded data.
        #[arg(long, default_value = "10s")]
        interval: String,
        /// Queries to time of each kind.
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// Load a running server from outside (overload at a multiple of its sustainable rate, or a
    /// soak at a set rate): sheds, latency, the server's RSS, health probes, every acknowledged
    /// reading read back.
    Load(load::LoadArgs),
    /// Ingest speed as clients see it: a running server driven over HTTP with bodies made
    /// before the clock starts (gauge-precision batches, the same batches re-sent as
    /// duplicates, float32-noisy values, single readings); readings/s, p50/p99, the server's
    /// CPU per 1 000 readings, medians of --runs.
    Http(http::HttpArgs),
    /// AMQP ingest throughput: messages of --batch readings published to a real RabbitMQ,
    /// consumed by the field ingest on a fresh embedded store; readings/s until every reading
    /// is committed (median of --runs).
    Amqp(brokers::BrokerArgs),
    /// MQTT ingest throughput, as `amqp` through a real MQTT broker (QoS 1).
    Mqtt(brokers::BrokerArgs),
    /// Several `espwatch serve` nodes on one fresh PostgreSQL database joined through Redis
    /// under a simulated fleet (10 000 wells at one reading per 10 s, diagnostics on, some
    /// faults): per-node CPU and RSS, readings kept up, alarm latency and cross-node live
    /// latency, then every acknowledged reading and one alarm per fault checked in the database.
    Cluster(cluster::ClusterArgs),
    /// Sustained overload of a running server through a broker (MQTT or AMQP): the
    /// sustainable rate (closed loop), then --times it offered open loop for --duration;
    /// backlog and memory high-water, recovery time, every acknowledged reading read back.
    BrokerLoad(broker_load::BrokerLoadArgs),
    /// Ask the fleet: registered wells with HOURS of readings up to now, a server on them,
    /// a mix of questions of every intent through `POST /api/v1/ask`; p50/p95 per question
    /// and overall (issue 24's goal: p95 < 50 ms on 1 000 wells).
    Ask(ask::AskArgs),
    /// Live stream fan-out: batch ingestion (RATE readings/s) with and without SUBSCRIBERS
    /// WebSocket clients, p99 of each and their ratio (issue 19's goal: within 10 %).
    Stream(stream::StreamArgs),
    /// The subscribers of `stream --subscribers-process`, in a process of their own.
    #[command(hide = true)]
    StreamSubscribers(stream::SubscriberArgs),
    /// Storage: simulate a fleet at gauge precision into a temporary embedded store, print
    /// bytes on disk per reading (every file of the data directory) and the ratio to
    /// uncompressed readings, and time one-well 24 h 1-minute-step queries on it.
    Storage {
        #[arg(long, default_value_t = 40)]
        wells: usize,
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Simulator model family (classic, field, pipctl, holdout, mixed).
        #[arg(long, default_value = "classic")]
        family: String,
        /// Sampling interval (e.g. 10s, or 5s..60s); default: 10 s for classic, the family's
        /// gauge rates otherwise.
        #[arg(long)]
        interval: Option<String>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Queries to time.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Keep every segment varint-packed (the size of the format before compaction), to
        /// compare.
        #[arg(long)]
        fast_only: bool,
        /// Load into this (new or empty) directory and keep it, instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        keep: Option<std::path::PathBuf>,
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
            database_url,
            rounds,
            interval,
            phases,
            timeline,
        } => {
            let interval = parse_duration_micros(interval).map_err(anyhow::Error::msg)?;
            if interval <= 0 {
                bail!("--interval must be positive");
            }
            if let Some(p) = phases
                .iter()
                .find(|p| !["a", "b", "c"].contains(&p.as_str()))
            {
                bail!("unknown phase {p:?} (a, b, c)");
            }
            if timeline.is_some() {
                *TIMELINE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
            }
            let backend = match database_url {
                Some(url) => Backend::Postgres(url.clone()),
                None => Backend::Embedded,
            };
            bench_ingest(
                &backend,
                &IngestPlan {
                    batch_clients: *batch_clients,
                    batch_size: *batch_size,
                    readings: *readings,
                    single_clients: *single_clients,
                    single_requests: *single_requests,
                    rounds: *rounds,
                    interval_micros: interval,
                    phases: phases.clone(),
                },
            )
            .await?;
            if let Some(path) = timeline {
                write_timeline(path)?;
            }
            Ok(())
        }
        BenchCommand::Query {
            wells,
            days,
            year_days,
            interval,
            queries,
        } => {
            let interval = parse_duration_micros(interval).map_err(anyhow::Error::msg)?;
            bench_query(*wells, *days, *year_days, interval, *queries).await
        }
        BenchCommand::Load(args) => load::run(args).await,
        BenchCommand::Ask(args) => ask::run(args).await,
        BenchCommand::Stream(args) => stream::run(args).await,
        BenchCommand::StreamSubscribers(args) => stream::run_subscribers(args).await,
        BenchCommand::Http(args) => http::run(args).await,
        BenchCommand::Amqp(args) => brokers::run(brokers::Protocol::Amqp, args).await,
        BenchCommand::Mqtt(args) => brokers::run(brokers::Protocol::Mqtt, args).await,
        BenchCommand::BrokerLoad(args) => broker_load::run(args).await,
        BenchCommand::Cluster(args) => cluster::run(args).await,
        BenchCommand::Storage {
            wells,
            days,
            family,
            interval,
            seed,
            queries,
            fast_only,
            keep,
        } => {
            storage::bench_storage(&storage::StoragePlan {
                wells: *wells,
                days: *days,
                family: family.clone(),
                interval: interval.clone(),
                seed: *seed,
                queries: *queries,
                fast_only: *fast_only,
                keep: keep.clone(),
            })
            .await
        }
    }
}

/// Which store the ingestion benchmark measures.
enum Backend {
    Embedded,
    /// PostgreSQL at this URL; each run works in a scratch schema of its own.
    Postgres(String),
}

/// A fresh store of the benchmarked backend.
struct BenchStore {
    store: Arc<dyn Store>,
    /// Users, keys and audit: in PostgreSQL too when the data is, as `serve` does.
    security: Option<Arc<dyn espwatch_store::SecurityStore>>,
    /// The PostgreSQL scratch schema, dropped by `finish`.
    schema: Option<String>,
    dir: tempfile::TempDir,
}

impl Backend {
    async fn open(&self, label: &str) -> anyhow::Result<BenchStore> {
        let dir = tempfile::tempdir()?;
        match self {
            Backend::Embedded => Ok(BenchStore {
                store: Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?),
                security: None,
                schema: None,
                dir,
            }),
            Backend::Postgres(url) => {
                let schema = format!("espwatch_bench_{}_{label}", std::process::id());
                let store = PostgresStore::open(url, pg_options(&schema))
                    .await
                    .with_context(|| format!("opening PostgreSQL at {}", redact_url(url)))?;
                let store = Arc::new(store);
                Ok(BenchStore {
                    store: store.clone(),
                    security: Some(store),
                    schema: Some(schema),
                    dir,
                })
            }
        }
    }

    /// Whether PostgreSQL runs on this machine, so its processes' CPU time can be read: the
    /// backend serving a connection is a local `postgres` process.
    async fn postgres_is_local(&self) -> bool {
        let Backend::Postgres(url) = self else {
            return false;
        };
        let pid = async {
            let connector = Connector::new(url, Duration::from_secs(60), None, "espwatch-bench")?;
            let pid: i32 = connector
                .connect()
                .await?
                .query_one("SELECT pg_backend_pid()", &[])
                .await?
                .get(0);
            anyhow::Ok(pid)
        }
        .await;
        pid.ok()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
            .is_some_and(|comm| comm.trim_end() == "postgres")
    }

    /// Drops a scratch schema.
    async fn drop_schema(&self, schema: &str) -> anyhow::Result<()> {
        if let Backend::Postgres(url) = self {
            let connector = Connector::new(url, Duration::from_secs(600), None, "espwatch-bench")?;
            let client = connector.connect().await?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await?;
        }
        Ok(())
    }
}

fn pg_options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: Some(schema.to_owned()),
        ..PostgresOptions::default()
    }
}

/// A server on a fresh temporary store, stopped when dropped.
struct TestServer {
    address: SocketAddr,
    store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start_bench(opened: BenchStore) -> anyhow::Result<TestServer> {
        Self::start_on(opened.dir, opened.store, opened.security).await
    }

    async fn start_on(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        security: Option<Arc<dyn espwatch_store::SecurityStore>>,
    ) -> anyhow::Result<TestServer> {
        Self::start_with_alarms(dir, store, security, None).await
    }

    /// As [`TestServer::start_on`], keeping the online diagnostics' alarms in `alarms`.
    async fn start_with_alarms(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        security: Option<Arc<dyn espwatch_store::SecurityStore>>,
        alarms: Option<Arc<dyn espwatch_store::AlarmStore>>,
    ) -> anyhow::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        // Authentication stays on (every request verifies an API key and is audited), but
        // the rate limits are off: the benchmark is one identity from one address.
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            jwt_secret: Some(espwatch_app::SecretString(
                espwatch_app::keys::random_token(48)?,
            )),
            rate_limit_per_identity: 0.0,
            rate_limit_per_source: 0.0,
            telemetry_readings_per_identity: 0.0,
            // The stream benchmark opens hundreds of subscribers as one identity, from one
            // address.
            stream_max_connections_per_identity: 1000,
            max_connections_per_source: 0,
            ..Config::default()
        };
        let security: Arc<dyn espwatch_store::SecurityStore> = match security {
            Some(security) => security,
            None => Arc::new(espwatch_store::EmbeddedSecurityStore::open(dir.path())?),
        };
        let (_, key) = espwatch_app::keys::issue_api_key(
            security.as_ref(),
            espwatch_app::keys::KeyRequest {
                name: "bench".into(),
                role: espwatch_core::access::Role::Admin,
                wells: None,
                expires: Some("1d".into()),
                created_by: "bench".into(),
            },
        )
        .await?;
        *BENCH_API_KEY.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        let state = AppState::new(store.clone(), config, security)?.with_optional_alarms(alarms);
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

/// The 1/5/15-minute load averages (Linux), as printed with the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
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

/// When a well's `step`th reading was taken.
fn bench_ts(step: u64, interval_micros: i64) -> Timestamp {
    Timestamp(BENCH_START_SECS * Timestamp::MICROS_PER_SECOND + step as i64 * interval_micros)
}

fn reading_json(out: &mut String, well: usize, step: u64, interval_micros: i64) {
    let ts = bench_ts(step, interval_micros);
    let _ = write!(out, "{{\"well_id\":\"BENCH-{well:04}\",\"ts\":\"{ts}\"");
    for (f, v) in synthetic(well, step).iter() {
        let _ = write!(out, ",\"{}\":{v}", f.name());
    }
    out.push('}');
}

#[derive(Default)]
struct Latencies(Vec<Duration>);

/// `bench ingest --timeline`: every request as (phase, start in µs since the Unix epoch,
/// latency in µs), when asked for.
static TIMELINE: std::sync::Mutex<Option<Vec<TimelineRow>>> = std::sync::Mutex::new(None);

/// Phase, start (µs since the Unix epoch), latency (µs).
type TimelineRow = (&'static str, i64, u32);

/// Notes a request that started `latency` ago in the timeline (when one is kept).
fn timeline_note(phase: &'static str, latency: Duration) {
    let mut timeline = TIMELINE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = timeline.as_mut() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let start = now.saturating_sub(latency).as_micros() as i64;
        v.push((
            phase,
            start,
            latency.as_micros().min(u32::MAX as u128) as u32,
        ));
    }
}

fn write_timeline(path: &std::path::Path) -> anyhow::Result<()> {
    let rows = TIMELINE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    let mut out = String::from("phase,start_unix_us,latency_us\n");
    for (phase, start, latency) in rows {
        let _ = writeln!(out, "{phase},{start},{latency}");
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("timeline written to {}", path.display());
    Ok(())
}

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

/// The API key of the benchmark's server (one per process).
static BENCH_API_KEY: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = BENCH_API_KEY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
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
    phase: &'static str,
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
                let latency = sent.elapsed();
                timeline_note(phase, latency);
                latencies.push(latency);
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

/// What `bench ingest` sends.
struct IngestPlan {
    batch_clients: usize,
    batch_size: usize,
    readings: usize,
    single_clients: usize,
    single_requests: usize,
    rounds: usize,
    interval_micros: i64,
    phases: Vec<String>,
}

async fn bench_ingest(backend: &Backend, plan: &IngestPlan) -> anyhow::Result<()> {
    let &IngestPlan {
        batch_clients,
        batch_size,
        readings,
        rounds,
        interval_micros,
        ref phases,
        ..
    } = plan;
    let phase = |p: &str| phases.iter().any(|q| q == p);
    if batch_size == 0 || readings < batch_size {
        bail!("--readings must be at least --batch-size");
    }
    let wells_per_batch = 100.min(batch_size);
    let steps_per_batch = batch_size / wells_per_batch;
    let batches = readings / (wells_per_batch * steps_per_batch);
    println!(
        "espwatch-bench ingest — {}, durable (acknowledged after commit), server and clients on this machine; {wells_per_batch} wells, a reading every {} s each",
        match backend {
            Backend::Embedded => "embedded store".to_owned(),
            Backend::Postgres(url) => format!("PostgreSQL {}", redact_url(url)),
        },
        interval_micros as f64 / 1e6
    );

    // (a) batches over HTTP.
    if phase("a") {
        eprintln!(
            "preparing {batches} JSON batches of {} readings…",
            wells_per_batch * steps_per_batch
        );
    }
    let bodies: Vec<Bytes> = (0..if phase("a") { batches } else { 0 })
        .map(|b| {
            let mut s = String::with_capacity(batch_size * 330);
            s.push('[');
            for step in 0..steps_per_batch {
                for well in 0..wells_per_batch {
                    if s.len() > 1 {
                        s.push(',');
                    }
                    reading_json(
                        &mut s,
                        well,
                        (b * steps_per_batch + step) as u64,
                        interval_micros,
                    );
                }
            }
            s.push(']');
            Bytes::from(s)
        })
        .collect();
    let bodies = Arc::new(bodies);
    let sent = batches * wells_per_batch * steps_per_batch;
    let count_postgres = backend.postgres_is_local().await;
    let per_body = wells_per_batch * steps_per_batch;
    match backend {
        _ if !phase("a") => {}
        Backend::Embedded => {
            let mut a = http_batches(backend, &bodies, sent, batch_clients, false).await?;
            a.print(per_body, batch_clients, sent);
        }
        Backend::Postgres(url) => {
            // Both phases write hundreds of MB of WAL: a checkpoint falling into one phase and
            // not the other moved single-run ratios by ±30 %. Each phase starts right after a
            // CHECKPOINT, rounds alternate the order, and the medians are what to quote.
            let rows = reading_batches(batches, steps_per_batch, wells_per_batch, interval_micros)?;
            let rounds = rounds.max(1);
            let (mut http_rates, mut copy_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            // PostgreSQL CPU seconds per reading: (a) including the rollup catch-up, (d), and
            // their ratio per round (paired, as the machine's speed drifts between rounds).
            let (mut http_pg, mut copy_pg, mut pg_ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                let mut http = None;
                let mut copy = None;
                let (mut round_http_pg, mut round_copy_pg) = (None, None);
                for phase in 0..2 {
                    checkpoint(url).await;
                    if (phase + round) % 2 == 0 {
                        let mut a =
                            http_batches(backend, &bodies, sent, batch_clients, count_postgres)
                                .await?;
                        print!("round {}: ", round + 1);
                        http = Some(a.rate);
                        a.print(per_body, batch_clients, sent);
                        round_http_pg = a.cpu_with_catch_up.postgres.map(|s| s / sent as f64);
                    } else {
                        let (rate, cpu) =
                            raw_copy(backend, url, rows.clone(), batch_clients, count_postgres)
                                .await?;
                        println!(
                            "round {}: (d) raw binary COPY of the same rows, batches of {per_body}, {batch_clients} connections, commit per batch: {rate:>10.0} readings/s",
                            round + 1
                        );
                        println!("    {}", cpu.describe(sent, "encoding COPY rows"));
                        copy = Some(rate);
                        round_copy_pg = cpu.postgres.map(|s| s / sent as f64);
                    }
                }
                let (a, d) = (http.unwrap_or_default(), copy.unwrap_or(f64::NAN));
                http_rates.push(a);
                copy_rates.push(d);
                ratios.push(a / d);
                if let (Some(a), Some(d)) = (round_http_pg, round_copy_pg) {
                    http_pg.push(a);
                    copy_pg.push(d);
                    pg_ratios.push(d / a);
                }
            }
            println!(
                "(a) server path, median of {rounds}: {:>10.0} readings/s\n(d) raw COPY, median of {rounds}: {:>10.0} readings/s\n    server path (a) / raw COPY (d), median of the rounds' ratios: {}",
                median(&mut http_rates),
                median(&mut copy_rates),
                ratio_summary(&ratios),
            );
            if !pg_ratios.is_empty() {
                println!(
                    "    PostgreSQL CPU per reading, medians: (a) {:.2} µs with its rollup upkeep, (d) {:.2} µs; (d)/(a), median of the rounds: {}, the ratio to expect when the database has cores of its own and is the bottleneck",
                    median(&mut http_pg) * 1e6,
                    median(&mut copy_pg) * 1e6,
                    ratio_summary(&pg_ratios),
                );
            }
        }
    }

    if phase("b") {
        single_readings(backend, plan).await?;
    }
    if phase("c") {
        store_appends(
            backend,
            plan,
            batches,
            steps_per_batch,
            wells_per_batch,
            count_postgres,
        )
        .await?;
    }
    Ok(())
}

/// (b) single readings over HTTP.
async fn single_readings(backend: &Backend, plan: &IngestPlan) -> anyhow::Result<()> {
    let &IngestPlan {
        single_clients,
        single_requests,
        interval_micros,
        ..
    } = plan;
    let bodies: Vec<Bytes> = (0..single_requests)
        .map(|i| {
            let mut s = String::with_capacity(400);
            reading_json(&mut s, i % 500, (i / 500) as u64, interval_micros);
            Bytes::from(s)
        })
        .collect();
    let opened = backend.open("single").await?;
    let single_schema = opened.schema.clone();
    let server = TestServer::start_bench(opened).await?;
    let (elapsed, mut lat) = send_all(
        server.url("/api/v1/telemetry"),
        "application/json",
        Arc::new(bodies),
        single_clients,
        "b",
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
    if let Some(schema) = &single_schema {
        backend.drop_schema(schema).await?;
    }
    Ok(())
}

/// (c) store appends, no HTTP.
async fn store_appends(
    backend: &Backend,
    plan: &IngestPlan,
    batches: usize,
    steps_per_batch: usize,
    wells_per_batch: usize,
    count_postgres: bool,
) -> anyhow::Result<()> {
    let &IngestPlan {
        batch_clients,
        batch_size,
        interval_micros,
        ..
    } = plan;
    let sent = batches * wells_per_batch * steps_per_batch;
    let opened = backend.open("append").await?;
    let store = opened.store.clone();
    let batch_list = reading_batches(batches, steps_per_batch, wells_per_batch, interval_micros)?;
    let queue = Arc::new(std::sync::Mutex::new(batch_list));
    let before = CpuSample::now(count_postgres);
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
                let latency = t.elapsed();
                timeline_note("c", latency);
                latencies.push(latency);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut lat = Latencies::default();
    for t in tasks {
        lat.0.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let acknowledged = Instant::now();
    let at_ack = CpuSample::now(count_postgres);
    println!(
        "(c) store appends of {batch_size}, {batch_clients} tasks, no HTTP: {:>10.0} readings/s  p50 {}  p99 {}",
        sent as f64 / elapsed.as_secs_f64(),
        ms(lat.percentile(50.0)),
        ms(lat.percentile(99.0)),
    );
    println!(
        "    {}; max {}, {} of {} appends over 50 ms; {} checkpoints",
        before.until(&at_ack).describe(sent, "store and tasks"),
        ms(lat.percentile(100.0)),
        lat.0.iter().filter(|l| l.as_millis() > 50).count(),
        lat.0.len(),
        store.stats().await?.checkpoints,
    );
    if let (Backend::Postgres(url), Some(schema)) = (backend, &opened.schema) {
        let t = rollup_catch_up(url, schema, acknowledged).await?;
        println!(
            "    rollups caught up {:.1} s after the last append; until then, {}",
            t.as_secs_f64(),
            before
                .until(&CpuSample::now(count_postgres))
                .describe(sent, "store and tasks")
        );
    }
    store.close().await?;
    if let Some(schema) = &opened.schema {
        backend.drop_schema(schema).await?;
    }
    Ok(())
}

/// What one run of (a) measured.
struct HttpRun {
    rate: f64,
    mb_per_s: f64,
    latencies: Latencies,
    commits: u64,
    /// PostgreSQL: from the last acknowledgement until the rollup queue was empty.
    rollups_caught_up: Option<Duration>,
    /// From the first request to the last acknowledgement.
    cpu: CpuUse,
    /// From the first request until the rollups had caught up (the same as `cpu` without
    /// rollups to wait for).
    cpu_with_catch_up: CpuUse,
}

impl HttpRun {
    fn print(&mut self, per_body: usize, clients: usize, sent: usize) {
        println!(
            "(a) batches of {per_body} over HTTP, {clients} clients: {:>10.0} readings/s  ({:.1} MB/s JSON)  p50 {}  p99 {}",
            self.rate,
            self.mb_per_s,
            ms(self.latencies.percentile(50.0)),
            ms(self.latencies.percentile(99.0)),
        );
        println!(
            "    commits: {} for {} requests; max {}, {} over 50 ms",
            self.commits,
            sent / per_body.max(1),
            ms(self.latencies.percentile(100.0)),
            self.latencies
                .0
                .iter()
                .filter(|l| l.as_millis() > 50)
                .count(),
        );
        println!("    {}", self.cpu.describe(sent, "server and clients"));
        if let Some(t) = self.rollups_caught_up {
            println!(
                "    rollups caught up {:.1} s after the last acknowledgement (the refresher yields to bursts for up to {} s, then works in passes every {} s)",
                t.as_secs_f64(),
                PostgresOptions::default().rollup_max_lag.as_secs(),
                PostgresOptions::default().rollup_interval.as_secs(),
            );
            println!(
                "    until caught up, {}",
                self.cpu_with_catch_up.describe(sent, "server and clients")
            );
        }
    }
}

/// (a): the JSON batches over HTTP into a server on a fresh store.
async fn http_batches(
    backend: &Backend,
    bodies: &Arc<Vec<Bytes>>,
    readings: usize,
    clients: usize,
    count_postgres: bool,
) -> anyhow::Result<HttpRun> {
    let bytes: usize = bodies.iter().map(Bytes::len).sum();
    let opened = backend.open("http").await?;
    let schema = opened.schema.clone();
    let server = TestServer::start_bench(opened).await?;
    let before = CpuSample::now(count_postgres);
    let (elapsed, latencies) = send_all(
        server.url("/api/v1/telemetry"),
        "application/json",
        bodies.clone(),
        clients,
        "a",
    )
    .await?;
    let acknowledged = Instant::now();
    let at_ack = CpuSample::now(count_postgres);
    let commits = server.store.stats().await?.commits;
    let rollups_caught_up = match (backend, &schema) {
        (Backend::Postgres(url), Some(schema)) => {
            Some(rollup_catch_up(url, schema, acknowledged).await?)
        }
        _ => None,
    };
    let caught_up = CpuSample::now(count_postgres);
    server.stop().await?;
    if let Some(schema) = &schema {
        backend.drop_schema(schema).await?;
    }
    Ok(HttpRun {
        rate: readings as f64 / elapsed.as_secs_f64(),
        mb_per_s: bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        latencies,
        commits,
        rollups_caught_up,
        cpu: before.until(&at_ack),
        cpu_with_catch_up: before.until(&caught_up),
    })
}

/// Waits until the server's refresher has emptied the rollup queue of `schema`.
async fn rollup_catch_up(url: &str, schema: &str, since: Instant) -> anyhow::Result<Duration> {
    let connector = Connector::new(
        url,
        Duration::from_secs(600),
        Some(schema),
        "espwatch-bench",
    )?;
    let client = connector.connect().await?;
    loop {
        let queued: i64 = client
            .query_one("SELECT count(*) FROM rollup_dirty", &[])
            .await?
            .get(0);
        if queued == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(600) {
            bail!("rollups still {queued} queue rows behind after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Best effort: a CHECKPOINT needs superuser or pg_checkpoint; without it the phases simply
/// share whatever checkpoints the server takes.
async fn checkpoint(url: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let result = async {
        let connector = Connector::new(url, Duration::from_secs(600), None, "espwatch-bench")?;
        connector
            .connect()
            .await?
            .batch_execute("CHECKPOINT")
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        eprintln!("note: CHECKPOINT before each phase failed ({e:#}); figures will be noisier");
    }
}

/// "0.52 (rounds: 0.45, 0.53, 0.52)": the median and each round's ratio in order.
fn ratio_summary(ratios: &[f64]) -> String {
    let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!(
        "{:.2} (rounds: {})",
        median(&mut ratios.to_vec()),
        rounds.join(", ")
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The readings of (a) as `Reading` batches, in the same order and batch boundaries.
fn reading_batches(
    batches: usize,
    steps_per_batch: usize,
    wells_per_batch: usize,
    interval_micros: i64,
) -> anyhow::Result<Vec<Vec<Reading>>> {
    let well_ids: Vec<WellId> = (0..wells_per_batch)
        .map(|w| WellId::parse(&format!("BENCH-{w:04}")))
        .collect::<Result<_, _>>()?;
    Ok((0..batches)
        .map(|b| {
            let mut v = Vec::with_capacity(steps_per_batch * wells_per_batch);
            for step in 0..steps_per_batch {
                let step = (b * steps_per_batch + step) as u64;
                for (well, id) in well_ids.iter().enumerate() {
                    v.push(Reading {
                        well_id: id.clone(),
                        ts: bench_ts(step, interval_micros),
                        values: synthetic(well, step),
                    });
                }
            }
            v
        })
        .collect())
}

/// Raw COPY baseline: a freshly migrated scratch schema (the same partitioned `telemetry`
/// table the store writes), each batch one `COPY ... (FORMAT binary)` and COMMIT, from
/// `connections` concurrent connections.
async fn raw_copy(
    backend: &Backend,
    url: &str,
    batches: Vec<Vec<Reading>>,
    connections: usize,
    count_postgres: bool,
) -> anyhow::Result<(f64, CpuUse)> {
    // Opening a store migrates the schema and prepares today's partitions; the data's own
    // days are prepared by one untimed append, removed again before timing.
    let opened = backend.open("copy").await?;
    let schema = opened.schema.clone().unwrap_or_default();
    if let Some(first) = batches.first().and_then(|b| b.first()) {
        let last = batches
            .iter()
            .flatten()
            .map(|r| r.ts)
            .max()
            .unwrap_or(first.ts);
        let day = 86_400 * Timestamp::MICROS_PER_SECOND;
        let mut ts = first.ts.0;
        let mut probes = Vec::new();
        while ts < last.0 + day {
            let mut r = first.clone();
            r.ts = Timestamp(ts.min(last.0));
            probes.push(r);
            ts += day;
        }
        probes.dedup_by_key(|r| r.ts);
        opened
            .store
            .append(probes, AppendOptions::default())
            .await?;
    }
    opened.store.close().await?;
    let connector = Connector::new(
        url,
        Duration::from_secs(600),
        Some(&schema),
        "espwatch-bench",
    )?;
    let setup = connector.connect().await?;
    setup
        .batch_execute("TRUNCATE telemetry, well_latest, rollup_dirty")
        .await?;
    let columns = espwatch_store_postgres::TELEMETRY_COLUMNS.join(", ");
    let statement = format!("COPY telemetry (well_id, ts, {columns}) FROM STDIN (FORMAT binary)");
    let total: usize = batches.iter().map(Vec::len).sum();
    let queue = Arc::new(std::sync::Mutex::new(batches));
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(connector.connect().await?);
    }
    let before = CpuSample::now(count_postgres);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let (queue, statement) = (queue.clone(), statement.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let batch = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                let Some(batch) = batch else { break };
                let mut enc = CopyEncoder::new(batch.len());
                for r in &batch {
                    enc.reading(r.well_id.as_str(), r.ts, &r.values);
                }
                let tx = client.transaction().await?;
                enc.copy_into(&tx, statement.as_str()).await?;
                tx.commit().await?;
            }
            // Returned, not dropped: a backend exiting while CPU is sampled can drop out of
            // the count before the postmaster has collected its time.
            anyhow::Ok(client)
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await??);
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let cpu = before.until(&CpuSample::now(count_postgres));
    drop(open);
    drop(setup);
    backend.drop_schema(&schema).await?;
    Ok((rate, cpu))
}

async fn bench_query(
    wells: usize,
    days: u32,
    year_days: u32,
    interval_micros: i64,
    queries: usize,
) -> anyhow::Result<()> {
    if wells == 0 || days == 0 || interval_micros <= 0 {
        bail!("--wells, --days and --interval must be positive");
    }
    let steps = (days as i64 * 86_400_000_000 / interval_micros) as u64;
    let total = steps * wells as u64;
    println!(
        "espwatch-bench query — {wells} wells × {days} days at {}s = {total} readings",
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
    let end = start + steps as i64 * interval_micros;

    // One well over a long range, ending where the fleet's readings end.
    let year_steps = year_days as i64 * 86_400_000_000 / interval_micros;
    let year_start = end - year_steps * interval_micros;
    if year_steps > 0 {
        let loaded = Instant::now();
        let id = WellId::parse("BENCH-YEAR")?;
        let mut k = 0;
        while k < year_steps {
            let stop = (k + 20_000).min(year_steps);
            let batch: Vec<Reading> = (k..stop)
                .map(|k| Reading {
                    well_id: id.clone(),
                    ts: Timestamp(year_start + k * interval_micros),
                    values: synthetic(0, k as u64),
                })
                .collect();
            store.append(batch, AppendOptions::default()).await?;
            k = stop;
        }
        store.checkpoint().await?;
        println!(
            "loaded BENCH-YEAR ({year_days} days, {year_steps} readings) in {:.1}s",
            loaded.elapsed().as_secs_f64()
        );
    }
    // The fleet tier (one row per window for every well) is built by the store in the
    // background after the checkpoints: how long until every window has its row.
    let caught_up = Instant::now();
    let stale_after_load = store.fleet_tier().stale_windows;
    while store.fleet_tier().stale_windows > 0 && caught_up.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "fleet tier: {stale_after_load} windows out of date after the load, {} {:.2}s later",
        store.fleet_tier().stale_windows,
        caught_up.elapsed().as_secs_f64()
    );
    println!("machine load before the queries: {}", load_average());

    // The fleet's hourly average intake pressure over the whole range, in the store.
    let week = FleetQuery {
        wells: Vec::new(),
        range: TimeRange {
            from: Timestamp(start),
            to: Timestamp(end),
        },
        fields: vec![Field::IntakePressurePsi],
        step_micros: 3_600_000_000,
        agg: Agg::Avg,
    };
    let mut lat = Latencies::default();
    let mut buckets = 0;
    let tier = store.fleet_tier();
    for _ in 0..queries.clamp(1, 100) {
        let t = Instant::now();
        let series = store.fleet_aggregate(&week).await?;
        lat.0.push(t.elapsed());
        buckets = series.ts.len();
    }
    let after = store.fleet_tier();
    println!(
        "fleet hourly average intake pressure over {days} days, one series ({buckets} buckets, every well): p50 {}  p95 {}  (windows from fleet rows {}, well by well {})",
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0)),
        after.windows_from_rows - tier.windows_from_rows,
        after.windows_well_by_well - tier.windows_well_by_well,
    );
    // The same series with every well named: the tier is not used, each well's hourly
    // rollups are read (what a window without a valid fleet row costs).
    let named = FleetQuery {
        wells: store
            .list_wells()
            .await?
            .into_iter()
            .map(|w| w.meta.well_id)
            .collect(),
        ..week.clone()
    };
    let mut lat = Latencies::default();
    for _ in 0..queries.clamp(1, 20) {
        let t = Instant::now();
        store.fleet_aggregate(&named).await?;
        lat.0.push(t.elapsed());
    }
    println!(
        "the same, every well named (well by well, no fleet rows): p50 {}  p95 {}",
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0))
    );
    let mut lat = Latencies::default();
    let mut series = 0;
    for _ in 0..queries.clamp(1, 20) {
        let t = Instant::now();
        series = store.fleet_query(&week).await?.len();
        lat.0.push(t.elapsed());
    }
    println!(
        "fleet hourly average intake pressure over {days} days, one series per well ({series} wells): p50 {}  p95 {}",
        ms(lat.percentile(50.0)),
        ms(lat.percentile(95.0))
    );

    let server = TestServer::start_on(dir, Arc::new(store), None).await?;
    let http = client()?;
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
    if year_steps > 0 {
        let url = server.url(&format!(
            "/api/v1/wells/BENCH-YEAR/telemetry?from={}&to={}&step=1d&agg=avg",
            Timestamp(year_start),
            Timestamp(end)
        ));
        let mut lat = Latencies::default();
        let mut points = 0;
        for _ in 0..queries.clamp(1, 100) {
            let t = Instant::now();
            let body: serde_json::Value = http
                .get(&url)
                .send()
                .await?
                .error_for_status()
                .context("year query")?
                .json()
                .await?;
            lat.0.push(t.elapsed());
            points = body["ts"].as_array().map_or(0, Vec::len);
        }
        println!(
            "one well, {year_days} days at 1-day steps (avg, all channels, {points} buckets): p50 {}  p95 {}",
            ms(lat.percentile(50.0)),
            ms(lat.percentile(95.0))
        );
    }
    println!("machine load after the queries: {}", load_average());
    server.stop().await?;
    Ok(())
}
