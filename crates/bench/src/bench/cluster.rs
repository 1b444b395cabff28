//! `espwatch-bench cluster`: several real `espwatch serve` nodes on one fresh PostgreSQL
//! database, joined through Redis, under a simulated fleet (issue 21: 10 000 wells at one
//! reading per 10 s with diagnostics on). Reports per-node CPU and memory, whether the nodes
//! kept up with the readings, the alarm latency of simulated faults, and the cross-node live
//! latency.
//!
//! How a run goes:
//! 1. A fresh database is created from `--database-url` (the admin connection; dropped at the
//!    end unless `--keep-database`), an admin API key is made in it with `espwatch apikeys
//!    create`, and `--nodes` nodes are started on it (port 0, a data directory each, one Redis
//!    channel prefix of the run's own, rate limits off), then awaited until every node sees all
//!    the others in Redis, so that the wells' diagnostics ownership is settled.
//! 2. The wells that will develop a fault are registered with a motor whose winding limit is
//!    known (`max_winding_temp_c`), so that a winding running near its limit is a critical
//!    `motor_overheat` (raised once its evidence persisted `thermal_persist_secs`, 15 min of
//!    data time: at real time the live phase must be longer than that).
//! 3. History: `--history` of readings of every well at `--history-interval`, sent as a
//!    backfill through all nodes, so that every well's diagnostics have learned their baseline
//!    (8 h by default) and the live phase runs the full rules and the anomaly model, not the
//!    training window's. The nodes' diagnostic queues are then waited for.
//! 4. Live: `--gateways` simulated gateways, each owning every `gateways`-th well and posting
//!    one batch of its wells' readings per `--interval` of data time to node `gateway % nodes`,
//!    open loop on a fixed schedule staggered over the interval (a gateway that is still waiting
//!    for an answer when its next batch is due sends late, and that lateness is reported). At
//!    `--speed` above 1 data time runs that many times faster than the clock (so do the rates);
//!    the readings' timestamps never pass the clock. Faulty wells' windings jump near the limit
//!    at staggered steps of the live phase.
//! 5. Meanwhile each node has two stream clients: one on `events=alarms` and one on the
//!    readings of a sample of wells (`--follow` per gateway) ingested on *another* node.
//!    Alarm latency = an alarm's arrival on the stream of a node other than the one its well's
//!    readings are sent to, minus the acknowledgement of the fault's first reading (the alarm's
//!    `started_at`); reported also from the acknowledgement of the reading that completed the
//!    raise persistence (what is left once the policy's deliberate wait is taken out).
//!    Live latency = a followed reading's arrival on another node's stream minus the moment its
//!    batch was sent.
//! 6. Afterwards the database is counted: every acknowledged reading stored, every fault one
//!    alarm, no alarm on a healthy well.
//!
//! Every process (nodes, PostgreSQL, Redis, this load generator) shares the machine's cores:
//! per-node CPU is in % of one core over the live phase, from `/proc/PID/stat`; RSS from
//! `/proc/PID/status`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::{Field, Measurements, Timestamp};
use espwatch_store_postgres::Connector;
use espwatch_store_postgres::testing::url_for;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::cpu::{CpuSample, process_seconds};
use super::synthetic;

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The `espwatch` binary (default: the one beside this benchmark).
    #[arg(long)]
    pub espwatch: Option<PathBuf>,
    /// Nodes (`espwatch serve` processes).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    pub wells: usize,
    /// Data time between one well's readings in the live phase.
    #[arg(long, default_value = "10s")]
    pub interval: String,
    /// Simulated gateways: each posts one batch of its wells' readings per interval, to node
    /// `gateway % nodes`.
    #[arg(long, default_value_t = 100)]
    pub gateways: usize,
    /// Length of the live phase (real time).
    #[arg(long, default_value = "5m")]
    pub duration: String,
    /// Data seconds per real second in the live phase (1 = real time).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Wells that develop a fault (the motor winding near its limit) during the live phase.
    #[arg(long, default_value_t = 30)]
    pub faults: usize,
    /// Data time of history sent before the live phase (0s: none; the wells' diagnostics are
    /// then still learning their baseline, which needs 8 h, during the live phase).
    #[arg(long, default_value = "510m")]
    pub history: String,
    /// Data time between one well's readings in the history.
    #[arg(long, default_value = "5m")]
    pub history_interval: String,
    /// Wells per gateway whose readings are followed on another node's stream.
    #[arg(long, default_value_t = 1)]
    pub follow: usize,
    /// How long to wait after the live phase for alarms still on their way (real time).
    #[arg(long, default_value = "20s")]
    pub grace: String,
    /// Admin connection to PostgreSQL: a fresh database is created through it for the run.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Keep the run's database (its name is printed) instead of dropping it.
    #[arg(long)]
    pub keep_database: bool,
    /// Stall the last node this long during the live phase (SIGSTOP, then SIGCONT; 0s: never),
    /// as a loaded machine can. Shorter than the nodes' node timeout (`--node-timeout`, 10 s by
    /// default) it must keep its wells; longer, the others stop hearing its heartbeat, take its
    /// wells (the run prints after how long: the failover time) and give them back when it
    /// returns.
    #[arg(long, default_value = "0s")]
    pub stall: String,
    /// When the stall (or the kill) starts, from the start of the live phase (real time).
    #[arg(long, default_value = "30s")]
    pub stall_at: String,
    /// Kill the last node with SIGKILL at `--stall-at` instead (no resume): its gateways then
    /// send to the next node; the others take its wells after the node timeout (the failover
    /// time printed).
    #[arg(long)]
    pub kill: bool,
    /// The nodes' `cluster_node_timeout_ms` (a node not heard of this long has left); default:
    /// the server's default.
    #[arg(long)]
    pub node_timeout: Option<String>,
}

/// A motor overheat is raised once its evidence persisted this long (the default
/// `Thresholds::thermal_persist_secs`: thermal conditions wait longer than other critical
/// ones) over at least `RAISE_READINGS` readings.
const RAISE_SECS: i64 = 900;
/// Live steps the faulty winding's smoothed temperature takes to pass the threshold after the
/// jump (about ten at 10 s), with a margin.
const EVIDENCE_STEPS: u64 = 15;
const RAISE_READINGS: i64 = 2;
/// The faulty wells' registered winding limit, and the temperature their winding jumps to: past
/// the limit less its 10 °C margin (`overheat_margin_c`), with the load unchanged.
const WINDING_LIMIT_C: f64 = 180.0;
const FAULT_WINDING_C: f64 = 176.0;

/// What a run counted, for the report and for the test.
#[derive(Debug, Default)]
pub struct ClusterReport {
    /// Readings acknowledged by the nodes (history and live).
    pub acked: u64,
    /// Readings in the database afterwards.
    pub stored: u64,
    pub live_acked: u64,
    /// Faulty wells, and the alarms the database holds for each (raised, any state).
    pub faults: usize,
    pub fault_alarms: Vec<(String, u64)>,
    /// Alarms on wells without a fault.
    pub unexpected_alarms: Vec<(String, String)>,
    /// Faults whose alarm reached another node's stream, with the latencies.
    pub alarm_latency: Vec<Duration>,
    pub alarm_after_raise: Vec<Duration>,
    /// Followed readings that reached another node's stream, and those expected.
    pub live_latency: Vec<Duration>,
    pub live_expected: u64,
    /// With `--stall`: per node other than the stalled one, how long after SIGSTOP it stopped
    /// counting the stalled node among the nodes (`None`: never, its wells stayed).
    pub stall_left_after: Vec<Option<Duration>>,
}

/// The wells' data time, shared by every task.
#[derive(Clone, Copy)]
struct Plan {
    wells: usize,
    gateways: usize,
    nodes: usize,
    interval: i64,
    live_steps: u64,
    /// Data time of live step 0.
    t0: i64,
    speed: f64,
}

impl Plan {
    fn well_id(w: usize) -> String {
        format!("CL-{w:05}")
    }

    fn well_of(id: &str) -> Option<usize> {
        id.strip_prefix("CL-")?.parse().ok()
    }

    fn gateway_of(&self, w: usize) -> usize {
        w % self.gateways
    }

    fn node_of_gateway(&self, g: usize) -> usize {
        g % self.nodes
    }

    /// Another node than `n` (itself with one node).
    fn other(&self, n: usize) -> usize {
        (n + 1) % self.nodes
    }

    fn wells_of(&self, g: usize) -> impl Iterator<Item = usize> + '_ {
        (g..self.wells).step_by(self.gateways)
    }

    fn live_ts(&self, step: u64) -> i64 {
        self.t0 + step as i64 * self.interval
    }

    /// The live step of a data time, if it is one.
    fn live_step(&self, ts: i64) -> Option<u64> {
        let d = ts - self.t0;
        (d >= 0 && d % self.interval == 0).then_some((d / self.interval) as u64)
    }

    /// When (after the live phase's start) gateway `g` sends live step `step`.
    fn due(&self, g: usize, step: u64) -> Duration {
        let data_secs = (step as f64 + g as f64 / self.gateways as f64) * self.interval as f64
            / Timestamp::MICROS_PER_SECOND as f64;
        Duration::from_secs_f64(data_secs / self.speed)
    }
}

/// Faulty wells and the live step at which each one's winding jumps.
fn fault_plan(plan: &Plan, faults: usize) -> anyhow::Result<HashMap<usize, u64>> {
    if faults == 0 {
        return Ok(HashMap::new());
    }
    let raise_steps =
        (RAISE_SECS * Timestamp::MICROS_PER_SECOND + plan.interval - 1) / plan.interval;
    let raise_steps = raise_steps as u64;
    // Faults start from the second step, and the last one leaves room for its evidence to
    // build up, its raise and two readings more.
    let room = plan
        .live_steps
        .saturating_sub(raise_steps + EVIDENCE_STEPS + 3);
    if room < 1 {
        bail!(
            "the live phase has {} steps; faults need at least {} (raise after {RAISE_SECS} s of data time): lengthen --duration or raise --speed",
            plan.live_steps,
            raise_steps + EVIDENCE_STEPS + 4
        );
    }
    let spacing = plan.wells / faults;
    Ok((0..faults)
        .map(|f| {
            let well = (f * spacing + f % plan.gateways.max(1)) % plan.wells;
            (well, 1 + (f as u64 * room) / faults as u64)
        })
        .collect())
}

/// The readings of well `w` at live `step` (or history step, `faulty` false).
fn measurements(w: usize, step: u64, faulty: bool) -> Measurements {
    let mut m = synthetic(w, step);
    if faulty {
        let wobble = ((step * 37 + w as u64) % 100) as f64 / 100.0;
        m.set(Field::MotorTempC, Some(FAULT_WINDING_C + wobble));
    }
    m
}

fn push_reading(out: &mut String, well: usize, ts: i64, m: &Measurements) {
    if out.len() > 1 {
        out.push(',');
    }
    let _ = write!(
        out,
        "{{\"well_id\":\"{}\",\"ts\":\"{}\"",
        Plan::well_id(well),
        Timestamp(ts)
    );
    for (f, v) in m.iter() {
        let _ = write!(out, ",\"{}\":{v}", f.name());
    }
    out.push('}');
}

/// One `espwatch serve` child.
struct Node {
    child: tokio::process::Child,
    pid: u32,
    address: SocketAddr,
    log: PathBuf,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGTERM, then up to 15 s for a clean exit (SIGKILL after, by `kill_on_drop`).
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}

async fn start_node(
    espwatch: &std::path::Path,
    dir: &std::path::Path,
    index: usize,
    envs: &[(&str, &str)],
) -> anyhow::Result<Node> {
    let data = dir.join(format!("node-{index}"));
    std::fs::create_dir_all(&data)?;
    let log = dir.join(format!("node-{index}.log"));
    let mut child = tokio::process::Command::new(espwatch)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .env("ESPWATCH_RATE_LIMIT_PER_IDENTITY", "0")
        .env("ESPWATCH_RATE_LIMIT_PER_SOURCE", "0")
        .env("ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY", "0")
        .env("ESPWATCH_MAX_CONNECTIONS_PER_SOURCE", "0")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", espwatch.display()))?;
    let pid = child.id().context("the node's pid")?;
    let stdout = child.stdout.take().context("the node's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("espwatch listening on http://") {
                return Ok(rest.trim().parse::<SocketAddr>()?);
            }
        }
        bail!(
            "node {index} exited before listening (log: {})",
            log.display()
        )
    })
    .await
    .context("a node did not start listening within 60 s")??;
    // Keep draining stdout so the node never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Node {
        child,
        pid,
        address,
        log,
    })
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The pid of the first process named `name` (e.g. `redis-server`).
fn pid_named(name: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == name) {
            return Some(pid);
        }
    }
    None
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Send and acknowledgement instants of every live batch, by (gateway, step).
type Sends = Arc<Mutex<HashMap<(usize, u64), (Instant, Option<Instant>)>>>;

/// First arrival of each raised alarm on each node's stream: (well, node) → (instant,
/// started_at in µs).
type AlarmsSeen = Arc<Mutex<HashMap<(String, usize), (Instant, i64)>>>;

fn ws_request(
    url: &str,
    key: &str,
) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}"))?,
    );
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("espwatch.v1"),
    );
    Ok(request)
}

/// A stream client on node `node`, past its `subscribed` message; `on` sees every message.
async fn open_stream(
    url: String,
    key: &str,
    mut on: impl FnMut(&Value) + Send + 'static,
    lagged: Arc<AtomicU64>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_request(&url, key)?)
        .await
        .with_context(|| format!("opening the stream {url}"))?;
    let first = socket
        .next()
        .await
        .context("the stream closed before `subscribed`")??;
    if !first.to_text().unwrap_or("").contains("subscribed") {
        bail!("unexpected first stream message: {first:?}");
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(m)) = socket.next().await {
            let Ok(text) = m.to_text() else { continue };
            if text.is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["type"] == "lagged" {
                lagged.fetch_add(v["missed_events"].as_u64().unwrap_or(1), Ordering::Relaxed);
            }
            on(&v);
        }
    }))
}

/// Posts `body` until a node acknowledges it (200), at most 5 minutes; the readings it
/// carried count as acknowledged. Returns the number of refusals before.
async fn post_until_acked(http: &reqwest::Client, url: &str, body: String) -> anyhow::Result<u64> {
    post_until_acked_at(http, &[url.to_owned()], body).await
}

/// [`post_until_acked`] to `urls[0]`, to the next one after a failed connection (a node
/// killed).
async fn post_until_acked_at(
    http: &reqwest::Client,
    urls: &[String],
    body: String,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut refused = 0;
    let mut at = 0;
    loop {
        let url = &urls[at % urls.len()];
        match http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => return Ok(refused),
            Ok(r) => {
                let status = r.status();
                if !(status == 503 || status == 429) {
                    let text = r.text().await.unwrap_or_default();
                    bail!(
                        "{url}: {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                }
            }
            Err(e) if started.elapsed() > Duration::from_secs(300) => {
                return Err(e).context("no node acknowledged a batch within 5 minutes");
            }
            Err(_) => at += 1,
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/health/ready` of a node.
async fn health(http: &reqwest::Client, node: &Node) -> Value {
    match http.get(node.url("/health/ready")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}

pub async fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    run_cluster(args).await.map(|_| ())
}

/// The whole run; prints as it goes and returns what it counted.
pub async fn run_cluster(args: &ClusterArgs) -> anyhow::Result<ClusterReport> {
    let micros = |name: &str, v: &str| -> anyhow::Result<i64> {
        parse_duration_micros(v).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    };
    let interval = micros("interval", &args.interval)?;
    let history = micros("history", &args.history)?;
    let history_interval = micros("history-interval", &args.history_interval)?;
    let duration = Duration::from_micros(micros("duration", &args.duration)?.max(0) as u64);
    let grace = Duration::from_micros(micros("grace", &args.grace)?.max(0) as u64);
    if args.nodes == 0
        || args.wells == 0
        || args.gateways == 0
        || args.gateways > args.wells
        || interval <= 0
        || history_interval <= 0
        || history < 0
        || args.speed.is_nan()
        || args.speed < 1.0
        || args.faults > args.wells
    {
        bail!(
            "--nodes, --wells, --gateways (at most --wells) and the intervals must be positive, --speed at least 1, --faults at most --wells"
        );
    }
    let espwatch = match &args.espwatch {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this benchmark's directory")?
            .join("espwatch"),
    };
    if !espwatch.exists() {
        bail!(
            "no espwatch binary at {} (build it: cargo build [--release] -p espwatch, or --espwatch PATH)",
            espwatch.display()
        );
    }
    let live_steps = ((duration.as_secs_f64() * args.speed * Timestamp::MICROS_PER_SECOND as f64)
        / interval as f64)
        .floor() as u64;
    // The last live reading is stamped no later than the clock when it is sent.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let t0 = now_us
        - 1_000_000
        - (live_steps as f64 * interval as f64 * (1.0 - 1.0 / args.speed)) as i64;
    let plan = Plan {
        wells: args.wells,
        gateways: args.gateways,
        nodes: args.nodes,
        interval,
        live_steps,
        t0,
        speed: args.speed,
    };
    let faults = fault_plan(&plan, args.faults)?;
    let offered =
        args.wells as f64 * args.speed * Timestamp::MICROS_PER_SECOND as f64 / interval as f64;
    println!(
        "espwatch-bench cluster — {} nodes, {} wells at one reading per {} of data time ({}), {} gateways, {} faults; live {:.0} s = {live_steps} steps, offered {offered:.0} readings/s",
        args.nodes,
        args.wells,
        args.interval,
        if args.speed == 1.0 {
            "real time".to_owned()
        } else {
            format!("accelerated {}x", args.speed)
        },
        args.gateways,
        faults.len(),
        duration.as_secs_f64()
    );

    // 1. A fresh database, a key, the nodes.
    let admin = Connector::new(
        &args.database_url,
        Duration::from_secs(600),
        None,
        "espwatch-bench",
    )?
    .connect()
    .await
    .context("connecting to PostgreSQL (--database-url)")?;
    let db_name = format!(
        "espwatch_cluster_{}_{}",
        std::process::id(),
        now_us.rem_euclid(1_000_000_000)
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .with_context(|| format!("CREATE DATABASE {db_name}"))?;
    let db_url = url_for(&args.database_url, &db_name);
    println!(
        "database {db_name}{}",
        if args.keep_database { " (kept)" } else { "" }
    );
    let result = with_database(args, &espwatch, &db_url, plan, &faults, grace).await;
    if !args.keep_database {
        // The nodes are stopped by now; FORCE ends connections still closing.
        if let Err(e) = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await
        {
            eprintln!("dropping {db_name}: {e}");
        }
    }
    result
}

async fn with_database(
    args: &ClusterArgs,
    espwatch: &std::path::Path,
    db_url: &str,
    plan: Plan,
    faults: &HashMap<usize, u64>,
    grace: Duration,
) -> anyhow::Result<ClusterReport> {
    let dir = tempfile::tempdir()?;
    let secret = espwatch_app::keys::random_token(32)?;
    let prefix = format!(
        "espwatch-bench-{}",
        espwatch_app::keys::random_token(6)?.to_lowercase()
    );
    // The key is made (and the database migrated) before any node starts.
    let out = tokio::process::Command::new(espwatch)
        .args([
            "apikeys",
            "create",
            "--name",
            "cluster-bench",
            "--role",
            "admin",
            "--expires",
            "1d",
            "--database-url",
            db_url,
        ])
        .env("ESPWATCH_JWT_SECRET", &secret)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "espwatch apikeys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = String::from_utf8(out.stdout)?.trim().to_owned();
    let node_timeout_ms = match &args.node_timeout {
        Some(t) => Some((micros_of(t)? / 1000).to_string()),
        None => None,
    };
    let mut envs = vec![
        ("ESPWATCH_DATABASE_URL", db_url),
        ("ESPWATCH_REDIS_URL", args.redis_url.as_str()),
        ("ESPWATCH_REDIS_CHANNEL_PREFIX", prefix.as_str()),
        ("ESPWATCH_JWT_SECRET", secret.as_str()),
    ];
    if let Some(ms) = &node_timeout_ms {
        envs.push(("ESPWATCH_CLUSTER_NODE_TIMEOUT_MS", ms.as_str()));
    }
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        nodes.push(start_node(espwatch, dir.path(), i, &envs).await?);
    }
    let result = drive(args, &nodes, &key, plan, faults, grace, db_url).await;
    if result.is_err() {
        for n in &nodes {
            eprintln!("node log: {}", n.log.display());
        }
    }
    for n in nodes {
        n.stop().await;
    }
    if result.is_err() {
        // Keep the logs to read.
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
    result
}

async fn drive(
    args: &ClusterArgs,
    nodes: &[Node],
    key: &str,
    plan: Plan,
    faults: &HashMap<usize, u64>,
    grace: Duration,
    db_url: &str,
) -> anyhow::Result<ClusterReport> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))?,
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()?;
    // Every node sees all the others before any reading is sent.
    let started = Instant::now();
    for node in nodes {
        loop {
            let h = health(&http, node).await;
            if h["checks"]["redis"]["nodes"].as_u64() == Some(nodes.len() as u64) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the nodes did not all see each other in Redis within 60 s: {h}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "{} nodes up and joined through Redis after {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );

    // 2. The faulty wells' motors.
    for (i, &w) in faults.keys().enumerate() {
        let r = http
            .post(nodes[i % nodes.len()].url("/api/v1/wells"))
            .json(&json!({
                "well_id": Plan::well_id(w),
                "motor": {"rated_current_a": 80.0, "max_winding_temp_c": WINDING_LIMIT_C},
            }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "registering {}: {} {}",
                Plan::well_id(w),
                r.status(),
                r.text().await?
            );
        }
    }

    // 3. History through every node, then the diagnostics' queues drained.
    let mut acked = 0u64;
    let history_micros = micros_of(&args.history)?;
    let history_interval = micros_of(&args.history_interval)?;
    let history_steps = (history_micros / history_interval) as u64;
    if history_steps > 0 {
        let per_gateway = plan.wells.div_ceil(plan.gateways);
        let steps_per_body = (1_000 / per_gateway).max(1) as u64;
        let mut bodies = Vec::new();
        for g in 0..plan.gateways {
            let mut s = 0;
            while s < history_steps {
                let mut body = String::from("[");
                let mut count = 0u64;
                for step in s..(s + steps_per_body).min(history_steps) {
                    let ts = plan.t0 - (history_steps - step) as i64 * history_interval;
                    for w in plan.wells_of(g) {
                        push_reading(&mut body, w, ts, &measurements(w, step, false));
                        count += 1;
                    }
                }
                body.push(']');
                bodies.push((plan.node_of_gateway(g), body, count));
                s += steps_per_body;
            }
        }
        let total: u64 = bodies.iter().map(|b| b.2).sum();
        let clients = 4 * nodes.len();
        let urls: Vec<String> = nodes.iter().map(|n| n.url("/api/v1/telemetry")).collect();
        let queue = Arc::new(Mutex::new(bodies));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (queue, http, urls) = (queue.clone(), http.clone(), urls.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((node, body, _)) = next else { break };
                    post_until_acked(&http, &urls[node], body).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        acked += total;
        let took = started.elapsed();
        println!(
            "history: {total} readings ({history_steps} per well, {} apart) in {:.1} s = {:.0} readings/s",
            args.history_interval,
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );
        let started = Instant::now();
        loop {
            let mut queued = 0;
            for node in nodes {
                queued += health(&http, node).await["checks"]["diagnostics"]["queued_readings"]
                    .as_u64()
                    .unwrap_or(0);
            }
            if queued == 0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!(
                    "the diagnostics still had {queued} readings queued 10 minutes after the history"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "  diagnostics caught up {:.1} s after the last acknowledgement",
            started.elapsed().as_secs_f64()
        );
    }

    // 5. Stream clients on every node.
    let sends: Sends = Arc::new(Mutex::new(HashMap::new()));
    let alarms_seen: AlarmsSeen = Arc::new(Mutex::new(HashMap::new()));
    // (the batch's send, the reading's arrival on another node's stream minus that)
    let live_latency: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
    let lagged = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    let mut live_expected_per_step = 0u64;
    for (n, node) in nodes.iter().enumerate() {
        let ws = |q: &str| format!("ws://{}/api/v1/stream?{q}", node.address);
        let seen = alarms_seen.clone();
        streams.push(
            open_stream(
                ws("events=alarms"),
                key,
                move |v| {
                    if v["type"] == "alarm" && v["change"] == "raised" {
                        let well = v["alarm"]["well_id"].as_str().unwrap_or("").to_owned();
                        let started = v["alarm"]["started_at"]
                            .as_str()
                            .and_then(|s| Timestamp::parse_rfc3339(s).ok())
                            .map_or(i64::MIN, |t| t.0);
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry((well, n))
                            .or_insert((Instant::now(), started));
                    }
                },
                lagged.clone(),
            )
            .await?,
        );
        // The followed wells ingested on another node (with one node: its own).
        let from = (n + plan.nodes - 1) % plan.nodes;
        let followed: Vec<String> = (0..plan.gateways)
            .filter(|&g| plan.node_of_gateway(g) == from)
            .flat_map(|g| plan.wells_of(g).take(args.follow))
            .map(Plan::well_id)
            .collect();
        if followed.is_empty() {
            continue;
        }
        live_expected_per_step += followed.len() as u64;
        let (sends, latency) = (sends.clone(), live_latency.clone());
        streams.push(
            open_stream(
                ws(&format!("events=readings&wells={}", followed.join(","))),
                key,
                move |v| {
                    if v["type"] != "readings" {
                        return;
                    }
                    let now = Instant::now();
                    let Some(readings) = v["readings"].as_array() else {
                        return;
                    };
                    let sends = sends.lock().unwrap_or_else(|p| p.into_inner());
                    let mut latency = latency.lock().unwrap_or_else(|p| p.into_inner());
                    for r in readings {
                        let (Some(w), Some(ts)) = (
                            r["well_id"].as_str().and_then(Plan::well_of),
                            r["ts"]
                                .as_str()
                                .and_then(|s| Timestamp::parse_rfc3339(s).ok()),
                        ) else {
                            continue;
                        };
                        if let Some(step) = plan.live_step(ts.0)
                            && let Some((sent, _)) = sends.get(&(plan.gateway_of(w), step))
                        {
                            latency.push((*sent, now - *sent));
                        }
                    }
                },
                lagged.clone(),
            )
            .await?,
        );
    }

    // 4. Live: the gateways on their schedule, a sampler once a second.
    let mut by_gateway: Vec<Vec<(usize, Option<u64>)>> = vec![Vec::new(); plan.gateways];
    for w in 0..plan.wells {
        by_gateway[plan.gateway_of(w)].push((w, faults.get(&w).copied()));
    }
    let live_acked = Arc::new(AtomicU64::new(0));
    let node_acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..nodes.len()).map(|_| AtomicU64::new(0)).collect());
    let refused = Arc::new(AtomicU64::new(0));
    let lateness: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let post_latency: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    // The diagnostics and Redis checks of every node (rebuilds, membership changes).
    let checks_before: Vec<Value> = {
        let mut v = Vec::new();
        for node in nodes {
            v.push(health(&http, node).await["checks"].clone());
        }
        v
    };
    let live_start = tokio::time::Instant::now() + Duration::from_millis(200);
    let cpu_before = CpuSample::now(true);
    let node_cpu_before: Vec<f64> = nodes
        .iter()
        .map(|n| process_seconds(n.pid).unwrap_or(0.0))
        .collect();
    let redis_pid = pid_named("redis-server");
    let redis_before = redis_pid.and_then(process_seconds);
    let own_started = Instant::now();
    let mut gateways = Vec::new();
    for (g, wells) in by_gateway.into_iter().enumerate() {
        let node = plan.node_of_gateway(g);
        let url = vec![
            nodes[node].url("/api/v1/telemetry"),
            nodes[(node + 1) % nodes.len()].url("/api/v1/telemetry"),
        ];
        let (http, sends, live_acked, node_acked, refused, lateness, post_latency) = (
            http.clone(),
            sends.clone(),
            live_acked.clone(),
            node_acked.clone(),
            refused.clone(),
            lateness.clone(),
            post_latency.clone(),
        );
        gateways.push(tokio::spawn(async move {
            for step in 0..plan.live_steps {
                let due = live_start + plan.due(g, step);
                tokio::time::sleep_until(due).await;
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                let ts = plan.live_ts(step);
                let mut body = String::from("[");
                for &(w, fault) in &wells {
                    push_reading(
                        &mut body,
                        w,
                        ts,
                        &measurements(w, step, fault.is_some_and(|s| step >= s)),
                    );
                }
                body.push(']');
                let sent = Instant::now();
                sends
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((g, step), (sent, None));
                let r = post_until_acked_at(&http, &url, body).await?;
                let acked_at = Instant::now();
                if let Some(e) = sends
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&(g, step))
                {
                    e.1 = Some(acked_at);
                }
                refused.fetch_add(r, Ordering::Relaxed);
                live_acked.fetch_add(wells.len() as u64, Ordering::Relaxed);
                node_acked[node].fetch_add(wells.len() as u64, Ordering::Relaxed);
                lateness
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(late);
                post_latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(acked_at - sent);
            }
            anyhow::Ok(())
        }));
    }
    let stall = Duration::from_micros(micros_of(&args.stall)?.max(0) as u64);
    // When the stalled node was stopped and resumed.
    let stall_times: Arc<Mutex<(Option<Instant>, Option<Instant>)>> =
        Arc::new(Mutex::new((None, None)));
    if !stall.is_zero() || args.kill {
        let kill = args.kill;
        let at = Duration::from_micros(micros_of(&args.stall_at)?.max(0) as u64);
        let (index, pid) = (nodes.len(), nodes[nodes.len() - 1].pid);
        let times = stall_times.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(live_start + at).await;
            let signal = |s: &'static str| {
                tokio::process::Command::new("kill")
                    .args([s, &pid.to_string()])
                    .status()
            };
            if kill {
                let _ = signal("-KILL").await;
                times.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
                println!("  node {index} killed (SIGKILL)");
                return;
            }
            let _ = signal("-STOP").await;
            times.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
            println!("  node {index} stalled (SIGSTOP) for {stall:?}");
            tokio::time::sleep(stall).await;
            let _ = signal("-CONT").await;
            times.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(Instant::now());
            println!("  node {index} resumed");
        });
    }
    // The sampler: every node's membership view four times a second (a stopped node's answer
    // is not waited for), RSS and the diagnostics' lag once a second.
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); nodes.len()];
    let mut diag_lag_max = vec![0u64; nodes.len()];
    let mut queued_max = vec![0u64; nodes.len()];
    let mut redis_rss = Vec::new();
    let mut last_print = Instant::now();
    // Per node: when it first saw fewer nodes than started after the stall began (the stalled
    // node left its view: its wells moved) and when it saw all of them again.
    let mut left_view: Vec<Option<Instant>> = vec![None; nodes.len()];
    let mut back_in_view: Vec<Option<Instant>> = vec![None; nodes.len()];
    let mut tick = 0u64;
    while !gateways.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick += 1;
        let checks = futures_util::future::join_all(nodes.iter().map(|node| {
            let http = http.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(900), health(&http, node))
                    .await
                    .ok()
            }
        }))
        .await;
        let stalled_at = stall_times.lock().unwrap_or_else(|p| p.into_inner()).0;
        for (i, h) in checks.iter().enumerate() {
            let Some(h) = h else { continue };
            if stalled_at.is_some()
                && let Some(n) = h["checks"]["redis"]["nodes"].as_u64()
            {
                if n < nodes.len() as u64 && left_view[i].is_none() {
                    left_view[i] = Some(Instant::now());
                } else if n == nodes.len() as u64
                    && left_view[i].is_some()
                    && back_in_view[i].is_none()
                {
                    back_in_view[i] = Some(Instant::now());
                }
            }
            let d = &h["checks"]["diagnostics"];
            diag_lag_max[i] = diag_lag_max[i].max(d["lag_ms"].as_u64().unwrap_or(0));
            queued_max[i] = queued_max[i].max(d["queued_readings"].as_u64().unwrap_or(0));
        }
        if !tick.is_multiple_of(4) {
            continue;
        }
        for (i, node) in nodes.iter().enumerate() {
            if let Some(r) = rss_mib(node.pid) {
                rss[i].push(r);
            }
        }
        if let Some(r) = redis_pid.and_then(rss_mib) {
            redis_rss.push(r);
        }
        if last_print.elapsed() >= Duration::from_secs(30) {
            last_print = Instant::now();
            println!(
                "  {:>4.0} s: {} readings acknowledged, {} alarms seen, load {}",
                own_started.elapsed().as_secs_f64(),
                live_acked.load(Ordering::Relaxed),
                alarms_seen.lock().unwrap_or_else(|p| p.into_inner()).len() / nodes.len().max(1),
                load_average()
            );
        }
    }
    for t in gateways {
        t.await??;
    }
    let wall = own_started.elapsed();
    let cpu = cpu_before.until(&CpuSample::now(true));
    let node_cpu: Vec<f64> = nodes
        .iter()
        .zip(&node_cpu_before)
        .map(|(n, before)| process_seconds(n.pid).unwrap_or(*before) - before)
        .collect();
    let redis_cpu = redis_pid
        .and_then(process_seconds)
        .zip(redis_before)
        .map(|(a, b)| a - b);
    let load = load_average();
    let mut checks_after = Vec::new();
    for node in nodes {
        checks_after.push(health(&http, node).await["checks"].clone());
    }
    // Alarms still on their way.
    let expected_alarms = faults.len() * nodes.len();
    let waited = Instant::now();
    while alarms_seen.lock().unwrap_or_else(|p| p.into_inner()).len() < expected_alarms
        && waited.elapsed() < grace
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in &streams {
        s.abort();
    }
    let live = live_acked.load(Ordering::Relaxed);
    acked += live;

    // 6. The database's account.
    let connector = Connector::new(db_url, Duration::from_secs(600), None, "espwatch-bench")?;
    let db = connector.connect().await?;
    let stored: i64 = db
        .query_one("SELECT count(*) FROM telemetry", &[])
        .await?
        .get(0);
    let rows = db
        .query("SELECT well_id, condition FROM alarms ORDER BY id", &[])
        .await?;
    let mut per_well: HashMap<String, u64> = HashMap::new();
    let mut unexpected = Vec::new();
    for row in rows {
        let (well, condition): (String, String) = (row.get(0), row.get(1));
        let faulty = Plan::well_of(&well).is_some_and(|w| faults.contains_key(&w));
        if faulty && condition == "motor_overheat" {
            *per_well.entry(well).or_default() += 1;
        } else {
            unexpected.push((well, condition));
        }
    }
    let mut fault_alarms: Vec<(String, u64)> = faults
        .keys()
        .map(|&w| {
            let id = Plan::well_id(w);
            let n = per_well.get(&id).copied().unwrap_or(0);
            (id, n)
        })
        .collect();
    fault_alarms.sort();

    // Latencies.
    let sends = sends.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let seen = alarms_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let raise_steps = ((RAISE_SECS * Timestamp::MICROS_PER_SECOND + plan.interval - 1)
        / plan.interval)
        .max(RAISE_READINGS - 1) as u64;
    let mut alarm_latency = Vec::new();
    let mut alarm_after_raise = Vec::new();
    let mut not_on_stream = 0;
    for &w in faults.keys() {
        let g = plan.gateway_of(w);
        let other = plan.other(plan.node_of_gateway(g));
        let Some(&(at, started)) = seen.get(&(Plan::well_id(w), other)) else {
            not_on_stream += 1;
            continue;
        };
        let Some(step) = plan.live_step(started) else {
            continue;
        };
        if let Some((_, Some(acked_at))) = sends.get(&(g, step)) {
            alarm_latency.push(at.saturating_duration_since(*acked_at));
        }
        if let Some((_, Some(acked_at))) = sends.get(&(g, step + raise_steps)) {
            alarm_after_raise.push(at.saturating_duration_since(*acked_at));
        }
    }
    let live_expected = live_expected_per_step * plan.live_steps;
    let mut report = ClusterReport {
        acked,
        stored: stored as u64,
        live_acked: live,
        faults: faults.len(),
        fault_alarms,
        unexpected_alarms: unexpected,
        alarm_latency,
        alarm_after_raise,
        live_latency: live_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|&(_, l)| l)
            .collect(),
        live_expected,
        stall_left_after: Vec::new(),
    };

    // The report.
    let secs = wall.as_secs_f64();
    println!(
        "live phase: {live} readings acknowledged in {secs:.1} s = {:.0} readings/s (offered {:.0}); {} refusals retried; machine load {load}, idle {}",
        live as f64 / secs,
        plan.wells as f64 * plan.speed * Timestamp::MICROS_PER_SECOND as f64 / plan.interval as f64,
        refused.load(Ordering::Relaxed),
        cpu.idle
            .map_or("?".into(), |i| format!("{:.0} %", i * 100.0)),
    );
    {
        let mut late = lateness.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut post = post_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        println!(
            "  batches: {} sent, answered p50 {} p99 {} max {}; sent behind schedule p50 {} p99 {} max {} (kept up, no batch a whole interval late: {})",
            post.len(),
            ms(percentile(&mut post, 50.0)),
            ms(percentile(&mut post, 99.0)),
            ms(percentile(&mut post, 100.0)),
            ms(percentile(&mut late, 50.0)),
            ms(percentile(&mut late, 99.0)),
            ms(percentile(&mut late, 100.0)),
            if percentile(&mut late, 100.0) < plan.due(0, 1) {
                "yes"
            } else {
                "NO"
            }
        );
    }
    let mut diagnosed_sum = 0;
    for (i, node) in nodes.iter().enumerate() {
        let r = &rss[i];
        let mean = r.iter().sum::<f64>() / r.len().max(1) as f64;
        let max = r.iter().cloned().fold(0.0, f64::max);
        let change = |check: &str, counter: &str| {
            checks_after[i][check][counter]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(checks_before[i][check][counter].as_u64().unwrap_or(0))
        };
        let diagnosed = change("diagnostics", "diagnosed_readings");
        let skipped = change("diagnostics", "skipped_readings");
        let rebuilds = change("diagnostics", "rebuilds");
        let membership = change("redis", "membership_changes");
        diagnosed_sum += diagnosed;
        let (lapses, backlog, dropped) = (
            change("redis", "lapses"),
            change("redis", "backlog_readings_not_diagnosed"),
            change("diagnostics", "dropped_readings"),
        );
        if lapses + backlog + dropped > 0 {
            println!(
                "  node {}: its hold on its wells lapsed {lapses} times (rejoined as a new member): {backlog} readings received meanwhile and {dropped} queued not diagnosed here",
                i + 1
            );
        }
        println!(
            "  node {} (pid {}): CPU {:.1} % of a core, RSS mean {mean:.0} MiB max {max:.0} MiB; ingested {} readings ({:.0}/s); diagnosed {diagnosed} ({} wells), skipped {skipped}, diagnostics lag max {} ms, queue max {}, {rebuilds} rebuilds from the database; membership changed {membership} times",
            i + 1,
            node.pid,
            node_cpu[i] / secs * 100.0,
            node_acked[i].load(Ordering::Relaxed),
            node_acked[i].load(Ordering::Relaxed) as f64 / secs,
            checks_after[i]["diagnostics"]["wells"]
                .as_u64()
                .unwrap_or(0),
            diag_lag_max[i],
            queued_max[i],
        );
    }
    println!(
        "  live readings diagnosed on the nodes: {diagnosed_sum} of {} acknowledged ({})",
        live_acked.load(Ordering::Relaxed),
        match diagnosed_sum.cmp(&live_acked.load(Ordering::Relaxed)) {
            std::cmp::Ordering::Equal => "each once".to_owned(),
            std::cmp::Ordering::Less => format!(
                "{} not pushed live: covered by a rebuild from the database, or lost",
                live_acked.load(Ordering::Relaxed) - diagnosed_sum
            ),
            std::cmp::Ordering::Greater => format!(
                "at least {} diagnosed twice",
                diagnosed_sum - live_acked.load(Ordering::Relaxed)
            ),
        }
    );
    let (stalled_at, resumed_at) = *stall_times.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(stopped) = stalled_at {
        let how = if args.kill { "SIGKILL" } else { "SIGSTOP" };
        let stalled = nodes.len();
        let timeout = checks_after[0]["redis"]["node_timeout_ms"]
            .as_u64()
            .map_or("?".to_owned(), |t| format!("{t} ms"));
        for i in 0..nodes.len() - 1 {
            let left = left_view[i].map(|l| l.saturating_duration_since(stopped));
            report.stall_left_after.push(left);
            match left {
                Some(after) => println!(
                    "  node {}: node {stalled} left its view {} after {how} (node timeout {timeout}: its wells moved here){}",
                    i + 1,
                    ms(after),
                    match (back_in_view[i], resumed_at) {
                        (Some(back), Some(resumed)) => format!(
                            ", back {} after SIGCONT",
                            ms(back.saturating_duration_since(resumed))
                        ),
                        _ => ", not back before the end".to_owned(),
                    }
                ),
                None => println!(
                    "  node {}: node {stalled} stayed among the nodes throughout (node timeout {timeout}: its wells did not move)",
                    i + 1
                ),
            }
        }
    }
    let pct = |s: Option<f64>| s.map_or("?".to_owned(), |s| format!("{:.1} %", s / secs * 100.0));
    println!(
        "  PostgreSQL CPU {} of a core, Redis {} (RSS max {:.0} MiB), this load generator {}; total node CPU {:.1} % = {:.2} ms per 1 000 readings",
        pct(cpu.postgres),
        pct(redis_cpu),
        redis_rss.iter().cloned().fold(0.0, f64::max),
        pct(Some(cpu.own)),
        node_cpu.iter().sum::<f64>() / secs * 100.0,
        node_cpu.iter().sum::<f64>() * 1e6 / live.max(1) as f64,
    );
    let one_alarm = report.fault_alarms.iter().filter(|(_, n)| *n == 1).count();
    println!(
        "stored {} of {} acknowledged readings ({} live){}; faults {}: {} with exactly one motor_overheat alarm, {} other alarms{}",
        report.stored,
        report.acked,
        report.live_acked,
        if report.stored == report.acked {
            " (all)"
        } else {
            " — MISMATCH"
        },
        report.faults,
        one_alarm,
        report.unexpected_alarms.len(),
        if report.unexpected_alarms.is_empty() {
            String::new()
        } else {
            format!(
                " (first: {:?})",
                &report.unexpected_alarms[..report.unexpected_alarms.len().min(5)]
            )
        }
    );
    let (mut a, mut b, mut l) = (
        report.alarm_latency.clone(),
        report.alarm_after_raise.clone(),
        report.live_latency.clone(),
    );
    println!(
        "alarm latency on another node's stream ({} of {} faults{}): from the acknowledgement of its first evidence reading (started_at) p50 {} p99 {} max {} (includes the {RAISE_SECS} s raise persistence = {:.1} s here); from the raising reading's p50 {} p99 {} max {}",
        a.len(),
        report.faults,
        if not_on_stream > 0 {
            format!(", {not_on_stream} never seen there")
        } else {
            String::new()
        },
        ms(percentile(&mut a, 50.0)),
        ms(percentile(&mut a, 99.0)),
        ms(percentile(&mut a, 100.0)),
        RAISE_SECS as f64 / plan.speed,
        ms(percentile(&mut b, 50.0)),
        ms(percentile(&mut b, 99.0)),
        ms(percentile(&mut b, 100.0)),
    );
    println!(
        "live readings on another node's stream: {} of {} followed readings, p50 {} p99 {} max {} (from the batch's send; goal p99 < 500 ms){}",
        l.len(),
        report.live_expected,
        ms(percentile(&mut l, 50.0)),
        ms(percentile(&mut l, 99.0)),
        ms(percentile(&mut l, 100.0)),
        match lagged.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!("; streams lagged by {n} events"),
        }
    );
    if let (Some(stopped), Some(resumed)) = (stalled_at, resumed_at) {
        // What the stall itself delayed (readings sent to or followed on the stopped node, and
        // its backlog afterwards) apart from the rest.
        let settled = resumed + Duration::from_secs(30);
        let mut away: Vec<Duration> = live_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|&&(sent, _)| sent < stopped || sent > settled)
            .map(|&(_, l)| l)
            .collect();
        println!(
            "  of them sent before the stall or more than 30 s after it ended: {}, p50 {} p99 {} max {}",
            away.len(),
            ms(percentile(&mut away, 50.0)),
            ms(percentile(&mut away, 99.0)),
            ms(percentile(&mut away, 100.0)),
        );
    }
    report.live_latency.sort_unstable();
    Ok(report)
}

fn micros_of(v: &str) -> anyhow::Result<i64> {
    parse_duration_micros(v).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            wells: 40,
            gateways: 4,
            nodes: 2,
            interval: 10_000_000,
            live_steps: 120,
            t0: 1_000_000_000_000_000,
            speed: 10.0,
        }
    }

    #[test]
    fn the_plan_maps_wells_gateways_nodes_and_steps() {
        let p = plan();
        assert_eq!(
            p.wells_of(1).collect::<Vec<_>>(),
            vec![1, 5, 9, 13, 17, 21, 25, 29, 33, 37]
        );
        assert_eq!(p.node_of_gateway(3), 1);
        assert_eq!(p.other(1), 0);
        assert_eq!(Plan::well_of(&Plan::well_id(37)), Some(37));
        assert_eq!(p.live_step(p.live_ts(7)), Some(7));
        assert_eq!(p.live_step(p.live_ts(7) + 1), None);
        assert_eq!(p.live_step(p.t0 - p.interval), None);
        // Gateway 2 of 4 sends half an interval (0.5 s at 10x) after gateway 0.
        assert_eq!(p.due(2, 3), Duration::from_secs_f64(3.5));
    }

    #[test]
    fn faults_are_spread_and_leave_room_to_be_raised() {
        let p = plan();
        let f = fault_plan(&p, 4).unwrap();
        assert_eq!(f.len(), 4);
        let raise = (RAISE_SECS * 1_000_000 / p.interval) as u64;
        assert!(
            f.values()
                .all(|&s| s >= 1 && s + EVIDENCE_STEPS + raise + 2 < p.live_steps),
            "{f:?}"
        );
        let short = Plan {
            live_steps: 100,
            ..p
        };
        assert!(fault_plan(&short, 1).is_err());
        assert!(fault_plan(&short, 0).unwrap().is_empty());
    }

    /// A small run of the whole benchmark against the real binary, PostgreSQL and Redis: it
    /// counts right (every acknowledged reading stored, one alarm per fault, none elsewhere,
    /// each fault's alarm and the followed readings seen on another node's stream). Needs the
    /// `espwatch` binary beside this test's (`cargo build -p espwatch`); without it, or without
    /// the services, it skips unless `ESPWATCH_REQUIRE_SERVICES=1`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_cluster_run_counts_every_reading_and_alarm() {
        // As main() does: reqwest is built without a bundled crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let required = std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("espwatch")))
            .filter(|p| p.exists());
        let Some(binary) = binary else {
            assert!(
                !required,
                "no espwatch binary beside the tests (cargo build -p espwatch)"
            );
            eprintln!("skipping: no espwatch binary beside the tests");
            return;
        };
        let redis = std::env::var("ESPWATCH_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let database_url = espwatch_store_postgres::testing::admin_url();
        let reachable = |url: &str, default_port: u16| {
            let rest = url.split("://").nth(1).unwrap_or("");
            let host_port = rest
                .rsplit('@')
                .next()
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("");
            let addr = if host_port.contains(':') {
                host_port.to_owned()
            } else {
                format!("{host_port}:{default_port}")
            };
            std::net::TcpStream::connect(addr).is_ok()
        };
        if !reachable(&redis, 6379) || !reachable(&database_url, 5432) {
            assert!(!required, "PostgreSQL or Redis unreachable");
            eprintln!("skipping: PostgreSQL or Redis unreachable");
            return;
        }
        let args = ClusterArgs {
            espwatch: Some(binary),
            nodes: 2,
            wells: 40,
            interval: "10s".into(),
            gateways: 4,
            duration: "20s".into(),
            speed: 60.0,
            faults: 3,
            history: "510m".into(),
            history_interval: "5m".into(),
            follow: 2,
            grace: "30s".into(),
            database_url,
            redis_url: redis,
            keep_database: false,
            stall: "0s".into(),
            stall_at: "0s".into(),
            kill: false,
            node_timeout: None,
        };
        let report = run_cluster(&args).await.expect("the run");
        // 40 wells × 102 history readings + 40 × 120 live steps.
        assert_eq!(report.live_acked, 40 * 120);
        assert_eq!(report.acked, 40 * 102 + 40 * 120);
        assert_eq!(report.stored, report.acked);
        assert_eq!(report.faults, 3);
        assert!(
            report.fault_alarms.iter().all(|(_, n)| *n == 1),
            "{:?}",
            report.fault_alarms
        );
        assert!(
            report.unexpected_alarms.is_empty(),
            "{:?}",
            report.unexpected_alarms
        );
        assert_eq!(report.alarm_latency.len(), 3);
        assert_eq!(report.alarm_after_raise.len(), 3);
        // Two followed wells per gateway, every live step, each on another node's stream.
        assert_eq!(report.live_expected, 4 * 2 * 120);
        assert_eq!(report.live_latency.len() as u64, report.live_expected);
    }
}
