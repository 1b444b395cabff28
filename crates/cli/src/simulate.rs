//! `espwatch simulate` and `espwatch demo`: the physics-based fleet simulator (in
//! `espwatch_core::sim`) written to files or streamed to a running server.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::sim::fleet::{PinnedCondition, PinnedWell};
use espwatch_core::sim::{
    ConditionChoice, FleetConfig, FleetPlan, IntervalChoice, Scenario, WellSimulator, csv,
    plan_fleet,
};
use espwatch_core::{Condition, Timestamp};
use indicatif::{ProgressBar, ProgressStyle};

/// Default start of file output, so the same seed always gives byte-identical files.
const DEFAULT_FILE_START: &str = "2026-01-01T00:00:00Z";

#[derive(Args, Debug, Clone)]
#[command(
    about = "Simulate an ESP fleet with labelled failures, to files or streamed to a server",
    long_about = "Simulate an ESP fleet from physics: each well gets a catalog pump sized for its \
inflow, a motor, a protection relay and a normal life (operator frequency changes, planned stops, \
drifts, sensor noise and gaps). Conditions are injected with random magnitudes and onsets and \
recorded in labels.csv (well_id,file,start,end,condition; start is when the condition physically \
begins).\n\nFiles: DIR/<well_id>.csv (canonical CSV, as accepted by `espwatch ingest` and POST \
/api/v1/telemetry), DIR/wells/<well_id>.json (wells registry), DIR/labels.csv.\n\nStreaming \
(--url): registers the wells, then sends the fleet's readings in data-time order, --speed times \
faster than real time until the data catches up with the clock, then in real time."
)]
pub struct SimulateArgs {
    /// Number of randomly drawn wells (in addition to wells pinned by --scenario).
    #[arg(long, default_value_t = 10)]
    pub wells: usize,
    /// Simulated time span, e.g. 7d, 36h.
    #[arg(long, default_value = "7d")]
    pub duration: String,
    /// Sampling interval, e.g. 10s; or a range like 1s..60s to give each well one of the
    /// standard gauge rates within it. Default: 10s for the classic family, the family's own
    /// gauge rates (5 s to 5 min) for the others.
    #[arg(long)]
    pub interval: Option<String>,
    /// Model family: classic (the original physics), field, pipctl, holdout (never tune the
    /// diagnostics on it), or mixed (each well one of classic/field/pipctl). See ARCHITECTURE.md.
    #[arg(long, default_value = "classic")]
    pub family: String,
    /// Place each requested condition this many times across the fleet (more labels per
    /// condition; placements beyond the first that fit nowhere are skipped).
    #[arg(long, default_value_t = 1)]
    pub condition_rounds: usize,
    /// Random seed: the same seed and options give identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory (file mode).
    #[arg(long, value_name = "DIR", required_unless_present = "url")]
    pub out: Option<PathBuf>,
    /// Conditions to inject: `all` (each at least once), `none`, or a comma-separated list such as
    /// gas_lock,broken_shaft.
    #[arg(long, default_value = "all")]
    pub conditions: String,
    /// TOML scenario file pinning wells, pumps, conditions and their times (see README).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Start of the simulated time (RFC 3339). Default: 2026-01-01T00:00:00Z for files; for
    /// --url, so that the run ends now.
    #[arg(long)]
    pub start: Option<String>,
    /// Normal running required before an abrupt condition may start.
    #[arg(long, default_value = "24h")]
    pub min_healthy: String,
    /// Delay before the protection relay restarts a tripped pump.
    #[arg(long, default_value = "30m")]
    pub restart_delay: String,
    /// Disable normal-life events (operator frequency changes, planned stops, drifts).
    #[arg(long)]
    pub no_normal_life: bool,
    /// Probability that any single value of a reading is missing.
    #[arg(long, default_value_t = 0.002)]
    pub missing_rate: f64,
    /// Stream to a running server instead of writing files.
    #[arg(long, value_name = "URL", conflicts_with = "out")]
    pub url: Option<String>,
    /// Time acceleration while streaming (data seconds per real second).
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// API key for a server with authentication on (or env ESPWATCH_API_KEY).
    #[arg(long, env = "ESPWATCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Worker threads for file output (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl SimulateArgs {
    fn fleet_config(&self) -> anyhow::Result<FleetConfig> {
        let duration = parse_duration_micros(&self.duration).map_err(anyhow::Error::msg)?;
        let start = match (&self.start, &self.url) {
            (Some(s), _) => Timestamp::parse_rfc3339(s).context("--start")?,
            (None, Some(_)) => {
                let now = Timestamp::from_datetime(chrono::Utc::now()).0;
                Timestamp(now - duration - now.rem_euclid(60_000_000))
            }
            (None, None) => Timestamp::parse_rfc3339(DEFAULT_FILE_START).expect("constant"),
        };
        let mut config = FleetConfig::new(self.seed, self.wells, start, duration);
        config.family = self.family.parse().map_err(anyhow::Error::msg)?;
        config.interval_from_family = self.interval.is_none();
        config.condition_rounds = self.condition_rounds.max(1);
        config.interval = self
            .interval
            .as_deref()
            .unwrap_or("10s")
            .parse::<IntervalChoice>()
            .map_err(anyhow::Error::msg)?;
        config.conditions = self
            .conditions
            .parse::<ConditionChoice>()
            .map_err(anyhow::Error::msg)?;
        config.min_healthy_micros =
            parse_duration_micros(&self.min_healthy).map_err(anyhow::Error::msg)?;
        config.restart_delay_s =
            parse_duration_micros(&self.restart_delay).map_err(anyhow::Error::msg)? as f64 / 1e6;
        config.normal_life = !self.no_normal_life;
        if !(0.0..=0.5).contains(&self.missing_rate) {
            bail!("--missing-rate must be between 0 and 0.5");
        }
        config.missing_value_rate = self.missing_rate;
        if let Some(path) = &self.scenario {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let scenario: Scenario = toml::from_str(&text)
                .with_context(|| format!("parsing scenario {}", path.display()))?;
            scenario
                .apply(&mut config)
                .map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))?;
        }
        Ok(config)
    }
}

pub async fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let config = args.fleet_config()?;
    let plan = plan_fleet(&config).map_err(anyhow::Error::msg)?;
    match (&args.url, &args.out) {
        (Some(url), _) => {
            let client = Uplink::new(url, args.api_key.clone())?;
            client.register(&plan).await?;
            stream(&plan, &client, args.speed, None, None).await
        }
        (None, Some(dir)) => {
            let threads = args.threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || write_files(&plan, &dir, threads)).await?
        }
        (None, None) => bail!("give --out DIR or --url URL"),
    }
}

/// Writes wells, labels and one CSV per well; wells are simulated in parallel.
pub fn write_files(plan: &FleetPlan, dir: &Path, threads: usize) -> anyhow::Result<()> {
    let wells_dir = dir.join("wells");
    fs::create_dir_all(&wells_dir).with_context(|| format!("creating {}", wells_dir.display()))?;
    for w in &plan.wells {
        let path = wells_dir.join(format!("{}.json", w.id));
        let json = serde_json::to_vec_pretty(&w.meta)?;
        fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    write_labels(plan, &dir.join("labels.csv"))?;
    write_operations(plan, &dir.join("operations.csv"))?;

    let config = &plan.config;
    let expected: u64 = plan
        .wells
        .iter()
        .map(|w| (config.duration_micros + w.interval_micros - 1) as u64 / w.interval_micros as u64)
        .sum();
    let bar = progress(expected, "simulating");
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(well) = plan.wells.get(i) else {
                            return Ok(());
                        };
                        let path = dir.join(format!("{}.csv", well.id));
                        let file = fs::File::create(&path)
                            .with_context(|| format!("creating {}", path.display()))?;
                        let mut out = BufWriter::with_capacity(1 << 20, file);
                        let mut buf = Vec::with_capacity(1 << 16);
                        csv::write_header(&mut buf);
                        let mut sim =
                            WellSimulator::new(well, config.start, config.duration_micros);
                        let mut pending = 0u64;
                        while let Some(sample) = sim.next_sample() {
                            pending += 1;
                            if let Some(values) = &sample.measured {
                                csv::write_row(&mut buf, well.id.as_str(), sample.ts, values);
                            }
                            if buf.len() > 60_000 {
                                out.write_all(&buf)?;
                                buf.clear();
                                done.fetch_add(pending, Ordering::Relaxed);
                                bar.inc(pending);
                                pending = 0;
                            }
                        }
                        out.write_all(&buf)?;
                        out.flush()
                            .with_context(|| format!("writing {}", path.display()))?;
                        done.fetch_add(pending, Ordering::Relaxed);
                        bar.inc(pending);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a simulation worker panicked")))
            })
            .collect()
    });
    bar.finish_and_clear();
    for r in results {
        r?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = done.load(Ordering::Relaxed);
    let labels = plan.labels();
    println!(
        "simulated {} wells, {} readings in {:.1}s ({:.0} readings/s); {} labelled episodes; output in {}",
        plan.wells.len(),
        samples,
        elapsed,
        samples as f64 / elapsed.max(1e-9),
        labels.len(),
        dir.display()
    );
    Ok(())
}

/// `operations.csv`: every normal operation (set-point changes, planned stops, and the family's
/// well tests, choke changes, surges, ramps, recalibrations, water-cut steps, sand slugs), so
/// `espwatch eval` can count false alarms by operation.
fn write_operations(plan: &FleetPlan, path: &Path) -> anyhow::Result<()> {
    fs::write(path, operations_csv(plan)).with_context(|| format!("writing {}", path.display()))
}

pub fn operations_csv(plan: &FleetPlan) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"well_id,start,end,operation\n");
    let start = plan.config.start.0;
    for w in &plan.wells {
        let sim = WellSimulator::new(w, plan.config.start, plan.config.duration_micros);
        for op in sim.operations() {
            out.extend_from_slice(w.id.as_str().as_bytes());
            out.push(b',');
            csv::write_timestamp(&mut out, Timestamp(start + (op.start_s * 1e6) as i64));
            out.push(b',');
            csv::write_timestamp(&mut out, Timestamp(start + (op.end_s * 1e6) as i64));
            out.push(b',');
            out.extend_from_slice(op.kind.name().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn write_labels(plan: &FleetPlan, path: &Path) -> anyhow::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(b"well_id,file,start,end,condition\n");
    for l in plan.labels() {
        out.extend_from_slice(l.well_id.as_str().as_bytes());
        out.push(b',');
        out.extend_from_slice(l.file.as_bytes());
        out.push(b',');
        csv::write_timestamp(&mut out, l.start);
        out.push(b',');
        csv::write_timestamp(&mut out, l.end);
        out.push(b',');
        out.extend_from_slice(l.condition.name().as_bytes());
        out.push(b'\n');
    }
    fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} readings ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

/// HTTP client for a running server.
pub struct Uplink {
    base: String,
    client: reqwest::Client,
    api_key: Option<String>,
}

impl Uplink {
    pub fn new(url: &str, api_key: Option<String>) -> anyhow::Result<Uplink> {
        Ok(Uplink {
            base: url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            api_key,
        })
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Creates or replaces every well of the plan in the registry.
    pub async fn register(&self, plan: &FleetPlan) -> anyhow::Result<()> {
        for w in &plan.wells {
            let created = self
                .auth(self.client.post(format!("{}/api/v1/wells", self.base)))
                .json(&w.meta)
                .send()
                .await
                .with_context(|| format!("connecting to {}", self.base))?;
            let status = created.status();
            if status.is_success() {
                continue;
            }
            if status.as_u16() == 409 {
                let replaced = self
                    .auth(
                        self.client
                            .put(format!("{}/api/v1/wells/{}", self.base, w.id)),
                    )
                    .json(&w.meta)
                    .send()
                    .await?;
                if replaced.status().is_success() {
                    continue;
                }
                if replaced.status().as_u16() == 403 {
                    // An api_client key may register wells but not replace them: the well
                    // keeps its registered metadata.
                    eprintln!(
                        "note: {} is already registered and this key may not replace it; keeping its metadata",
                        w.id
                    );
                    continue;
                }
                bail!(
                    "registering {}: {}: {}",
                    w.id,
                    replaced.status(),
                    replaced.text().await.unwrap_or_default()
                );
            }
            bail!(
                "registering {}: {}: {}",
                w.id,
                status,
                created.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Sends one CSV batch, retrying transient failures until it is acknowledged.
    async fn send(&self, body: Vec<u8>) -> anyhow::Result<()> {
        let body = bytes::Bytes::from(body);
        let mut delay = Duration::from_millis(200);
        loop {
            let result = self
                .auth(self.client.post(format!("{}/api/v1/telemetry", self.base)))
                .header("content-type", "text/csv")
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 422 => {
                    // 422 means some readings were rejected (reported) and the rest committed;
                    // simulated values are always in range, so this only happens on a
                    // misconfigured server; say so but keep going.
                    if r.status().as_u16() == 422 {
                        eprintln!(
                            "warning: the server rejected part of a batch: {}",
                            r.text().await.unwrap_or_default()
                        );
                    }
                    return Ok(());
                }
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    eprintln!("server answered {}; retrying in {:?}", r.status(), delay);
                }
                Ok(r) => {
                    let status = r.status();
                    bail!(
                        "server refused telemetry: {status}: {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                Err(e) => eprintln!("cannot reach {} ({e}); retrying in {delay:?}", self.base),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// Streams the fleet: every tick, all readings up to the current data time go out in one batch.
/// Data time runs `speed` times faster than the clock until it reaches the present, then in real
/// time; it ends at the end of the plan.
pub async fn stream(
    plan: &FleetPlan,
    uplink: &Uplink,
    speed: f64,
    history_until: Option<Timestamp>,
    mut status: Option<&mut (dyn FnMut(Timestamp, u64) + Send)>,
) -> anyhow::Result<()> {
    let config = &plan.config;
    // Data before `history_until` is history: sent at once (in bounded requests), then the
    // accelerated clock runs from there.
    let paced_from = history_until.map_or(config.start, |h| h.max(config.start));
    let end = Timestamp(config.start.0 + config.duration_micros);
    let mut sims: Vec<_> = plan
        .wells
        .iter()
        .map(|w| {
            (
                w,
                WellSimulator::new(w, config.start, config.duration_micros),
            )
        })
        .collect();
    let mut pending: Vec<Option<espwatch_core::sim::Sample>> =
        sims.iter_mut().map(|(_, s)| s.next_sample()).collect();
    let wall_start = Instant::now();
    let mut sent: u64 = 0;
    let tick = Duration::from_millis(1000);
    loop {
        let now = Timestamp::from_datetime(chrono::Utc::now()).0;
        let accelerated = paced_from.0 + (wall_start.elapsed().as_secs_f64() * speed * 1e6) as i64;
        let data_now = Timestamp(accelerated.min(now).min(end.0));
        let mut body = Vec::with_capacity(1 << 16);
        csv::write_header(&mut body);
        let header_len = body.len();
        let mut batch = 0u64;
        for (k, (well, sim)) in sims.iter_mut().enumerate() {
            while let Some(sample) = pending[k].as_ref().filter(|s| s.ts <= data_now) {
                if let Some(values) = &sample.measured {
                    csv::write_row(&mut body, well.id.as_str(), sample.ts, values);
                    batch += 1;
                }
                pending[k] = sim.next_sample();
                if batch >= MAX_ROWS_PER_REQUEST {
                    uplink.send(std::mem::take(&mut body)).await?;
                    sent += batch;
                    batch = 0;
                    csv::write_header(&mut body);
                }
            }
        }
        if body.len() > header_len {
            uplink.send(body).await?;
            sent += batch;
        }
        if let Some(report) = status.as_deref_mut() {
            report(data_now, sent);
        }
        if pending.iter().all(Option::is_none) || data_now >= end {
            break;
        }
        tokio::time::sleep(tick).await;
    }
    Ok(())
}

/// Rows per request when a stream sends history at once (well under the server's limits).
const MAX_ROWS_PER_REQUEST: u64 = 20_000;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address for the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Data directory (default: ./espwatch-demo-data).
    #[arg(long, value_name = "DIR", default_value = "espwatch-demo-data")]
    pub data_dir: PathBuf,
    /// Number of wells.
    #[arg(long, default_value_t = 20)]
    pub wells: usize,
    /// Time acceleration until the simulated history catches up with the clock.
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// Random seed of the simulated fleet: the same seed gives the same wells, conditions
    /// and schedule.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

/// The failures the demo schedules: (well index, condition, hours after the start).
const DEMO_FAILURES: [(usize, Condition, f64); 7] = [
    (2, Condition::GasLock, 11.0),
    (6, Condition::BrokenShaft, 13.0),
    (10, Condition::PumpOff, 16.0),
    (13, Condition::TubingLeak, 19.0),
    (16, Condition::Overload, 22.0),
    (4, Condition::PowerFluctuation, 25.0),
    (8, Condition::SensorFault, 27.0),
];

/// Hours of history the demo fleet has: every well learns its baseline on the first 8 h.
const DEMO_HISTORY_HOURS: i64 = 32;
/// Hours of that history sent at once at start: the baselines and the first two failures, so
/// their alarms are there within the first minute. The rest is replayed at `--speed`.
const DEMO_LOADED_HOURS: i64 = 15;
const HOUR: i64 = 3_600_000_000;

/// The demo fleet: `wells` wells starting 32 hours ago, with a handful of failures in that
/// history, and then running on for a week in real time.
pub fn demo_plan(args: &DemoArgs) -> anyhow::Result<FleetPlan> {
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = Timestamp(now - DEMO_HISTORY_HOURS * HOUR - now.rem_euclid(60_000_000));
    let mut config = FleetConfig::new(args.seed, 0, start, 8 * 86_400_000_000);
    config.conditions = ConditionChoice::None;
    config.id_prefix = "DEMO-".to_owned();
    let mut pinned = vec![PinnedWell::default(); args.wells.max(1)];
    for (i, condition, hours) in DEMO_FAILURES {
        if let Some(w) = pinned.get_mut(i) {
            w.conditions.push(PinnedCondition {
                condition,
                start: format!("{}m", (hours * 60.0) as i64),
                end: None,
                severity: Some(0.6),
            });
        }
    }
    config.pinned = pinned;
    plan_fleet(&config).map_err(anyhow::Error::msg)
}

/// The end of the history the demo sends at once.
pub fn demo_loaded_until(plan: &FleetPlan) -> Timestamp {
    Timestamp(plan.config.start.0 + DEMO_LOADED_HOURS * HOUR)
}

/// The scheduled failures with when they show: at once (in the loaded history) or after how
/// many minutes of the replay at `speed`.
pub fn describe_demo(plan: &FleetPlan, speed: f64) -> String {
    let loaded = demo_loaded_until(plan);
    let mut s = String::new();
    for l in plan.labels() {
        let when = if l.start < loaded {
            "in the loaded history: its alarm is there within the first minute".to_owned()
        } else {
            let minutes = (l.start.0 - loaded.0) as f64 / 60e6 / speed.max(1e-9);
            format!(
                "starts about {minutes:.0} min into the replay; its alarm follows within minutes"
            )
        };
        s.push_str(&format!(
            "    {:<10} {:<18} from {} — {when}\n",
            l.well_id.as_str(),
            l.condition.name(),
            l.start
        ));
    }
    s
}

/// Keeps a terminal status line for a stream.
pub fn status_printer(total_end: Timestamp) -> impl FnMut(Timestamp, u64) + Send {
    let mut last = Instant::now() - Duration::from_secs(60);
    move |data_now, sent| {
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            let behind = (Timestamp::from_datetime(chrono::Utc::now()).0 - data_now.0) / 60_000_000;
            let lag = if behind > 1 {
                format!(" ({behind} min behind the clock, catching up)")
            } else {
                " (live)".to_owned()
            };
            eprintln!("fleet at {data_now}{lag}: {sent} readings sent; runs until {total_end}");
        }
    }
}

/// `espwatch demo`: the server on the embedded store plus a streaming demo fleet.
pub async fn run_demo(args: &DemoArgs, mut config: espwatch_app::Config) -> anyhow::Result<()> {
    use espwatch_server::AppState;

    // The demo needs no setup: without a configured secret it signs tokens with a random one
    // (sessions then end with the demo), and it makes its own key and sign-in.
    if config.jwt_secret.is_none() && config.jwt_secret_file.is_none() {
        config.jwt_secret = Some(espwatch_app::SecretString(
            espwatch_app::keys::random_token(48)?,
        ));
    }
    // The demo's own simulator key sends hours of history at once: its readings are not
    // rate-limited (the limit protects a server from a runaway gateway, not from itself).
    config.telemetry_readings_per_identity = 0.0;
    let store = espwatch_app::open_store(&config).await?;
    let (demo_user, demo_password) = demo_login(store.security.as_ref()).await?;
    let (_, demo_key) = crate::admin::create_api_key(
        store.security.as_ref(),
        "demo simulator",
        espwatch_core::access::Role::ApiClient,
        None,
        Some("7d"),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "binding {} (use --listen to pick another address)",
                config.listen
            )
        })?;
    let address = listener.local_addr()?;
    let data_dir = config.data_dir.clone();
    let state =
        AppState::new(store.store, config, store.security)?.with_optional_alarms(store.alarms);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(espwatch_server::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));

    let plan = demo_plan(args)?;
    let base = format!("http://{address}");
    let example = plan
        .labels()
        .first()
        .map(|l| l.well_id.to_string())
        .unwrap_or_else(|| plan.wells[0].id.to_string());
    println!("espwatch listening on {base}");
    println!(
        "\nespwatch demo: {} simulated wells with {DEMO_HISTORY_HOURS} h of history.\n\
         Now:       the first {DEMO_LOADED_HOURS} h are loaded at once (each well learns its baseline on its\n\
         \x20          first 8 h; the first failures are in there, so alarms show within a minute).\n\
         Then:      the remaining {} h are replayed at {}x (about {:.0} min), then the fleet runs live.\n\
         Data directory: {}\n\n\
         Sign in (generated for this demo): user {demo_user}, password {demo_password}\n\
         \x20 TOKEN=$(curl -s -X POST {base}/api/v1/auth/login -H 'content-type: application/json' \\\n\
         \x20         -d '{{\"username\":\"{demo_user}\",\"password\":\"{demo_password}\"}}' | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\n\n\
         Where to look (the token lasts 15 minutes; sign in again after):\n\
         \x20 API explorer:    {base}/docs  (Authorize with the token)\n\
         \x20 Latest values:   curl -s -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/wells/latest\n\
         \x20 One well:        curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/api/v1/wells/{example}/telemetry?step=5m&fields=motor_current_a,intake_pressure_psi'\n\
         \x20 Alarms:          curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/api/v1/alarms?state=raised'\n\
         \x20 Diagnosis:       curl -s -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/wells/{example}/diagnosis\n\
         \x20 Health:          curl -s {base}/health/ready\n\n\
         Failures scheduled (and when they show):\n{}\n\
         Ctrl-C stops the demo; the data stays in the data directory.",
        plan.wells.len(),
        DEMO_HISTORY_HOURS - DEMO_LOADED_HOURS,
        args.speed,
        (DEMO_HISTORY_HOURS - DEMO_LOADED_HOURS) as f64 * 60.0 / args.speed.max(1e-9),
        data_dir.display(),
        describe_demo(&plan, args.speed),
    );
    let uplink = Uplink::new(&base, Some(demo_key))?;
    uplink.register(&plan).await?;
    let end = Timestamp(plan.config.start.0 + plan.config.duration_micros);
    let mut printer = status_printer(end);
    let outcome = tokio::select! {
        r = stream(&plan, &uplink, args.speed, Some(demo_loaded_until(&plan)), Some(&mut printer)) => r,
        _ = crate::serve::shutdown_signal() => {
            eprintln!("stopping the demo");
            Ok(())
        }
    };
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    outcome
}

/// The demo's admin sign-in: user `demo` with a new random password at every start.
async fn demo_login(
    security: &dyn espwatch_store::SecurityStore,
) -> anyhow::Result<(String, String)> {
    use espwatch_store::{NewUser, UserChange};
    let name = "demo".to_owned();
    let password = espwatch_app::keys::random_token(12)?;
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || espwatch_app::password::hash_blocking(&password))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let now = Timestamp::from_datetime(chrono::Utc::now());
    if security.get_user(&name).await?.is_some() {
        security
            .update_user(&name, UserChange::SetPassword(hash), now)
            .await?;
        security.update_user(&name, UserChange::Enable, now).await?;
    } else {
        security
            .create_user(
                NewUser {
                    name: name.clone(),
                    role: espwatch_core::access::Role::Admin,
                    password_hash: hash,
                    wells: espwatch_core::access::WellScope::All,
                },
                now,
            )
            .await?;
    }
    Ok((name, password))
}
