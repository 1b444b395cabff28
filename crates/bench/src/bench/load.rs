//! `espwatch-bench load`: an external load generator for a running `espwatch serve` (a separate
//! process, so its memory is the server's own, read from `/proc/PID/status`).
//!
//! Two uses: **overload** (measure the sustainable ingest rate with a closed loop, then offer
//! `--times` that rate open-loop for `--duration`: arrivals on a fixed schedule whatever the
//! server answers, clients that ignore `Retry-After`) and **soak** (`--rate` below capacity for a
//! long time, e.g. 1 000 wells at 1 Hz). Both sample the server's RSS, the ingest latency and
//! the health endpoints' latency every second, and afterwards read back every well to check that
//! each acknowledged reading is stored.
//!
//! Every reading has its own `(well, ts)`: reading number `seq` goes to well `seq % wells` at
//! `start + seq / wells` seconds. A body the server refused (503/429/transport error) is not
//! stored, so it is offered again at a later arrival instead of a new one: generating bodies
//! costs the client about what the server accepts, not what is offered, which keeps a client on
//! the same machine from starving the server of CPU.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use espwatch_core::{Field, Timestamp};

use super::offered::{LoadDurations, OfferedLoad, now_secs, secs_arg};
use super::{Latencies, median, synthetic};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The running server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    pub url: String,
    /// API keys (comma-separated), used in turn, one per simulated gateway; they need
    /// telemetry write and read access to the wells written (for the check afterwards).
    #[arg(long, env = "ESPWATCH_BENCH_API_KEYS", hide_env_values = true)]
    pub api_keys: String,
    /// A key that may read telemetry, for the check afterwards (default: the first of
    /// `--api-keys`; the `api_client` role may only write).
    #[arg(long, env = "ESPWATCH_BENCH_READ_KEY", hide_env_values = true)]
    pub read_key: Option<String>,
    #[command(flatten)]
    pub load: OfferedLoad,
    /// Readings per request (JSON array).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent clients of the closed-loop measurement.
    #[arg(long, default_value_t = 16)]
    pub calibrate_clients: usize,
    /// Most requests in flight at once (each on its own connection when needed); an arrival
    /// beyond it is counted as "not sent".
    #[arg(long, default_value_t = 1_024)]
    pub max_outstanding: usize,
    /// Skip reading every well back afterwards.
    #[arg(long)]
    pub no_verify: bool,
    /// Length of the windows whose ingest latency (p50, p99) and RSS are listed at the end, to
    /// see drift over a long run.
    #[arg(long, default_value = "5m")]
    pub drift_window: String,
}

/// A request body: readings `seq0 .. seq0 + batch`.
struct Body {
    seq0: u64,
    bytes: Bytes,
}

/// Counters of one interval (and of the whole run).
#[derive(Default, Clone)]
struct Counts {
    sent: u64,
    ok: u64,
    acked_readings: u64,
    overloaded: u64,
    other_503: u64,
    too_many: u64,
    refused_with_retry_after: u64,
    other_status: u64,
    transport_errors: u64,
    not_sent: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.acked_readings += o.acked_readings;
        self.overloaded += o.overloaded;
        self.other_503 += o.other_503;
        self.too_many += o.too_many;
        self.refused_with_retry_after += o.refused_with_retry_after;
        self.other_status += o.other_status;
        self.transport_errors += o.transport_errors;
        self.not_sent += o.not_sent;
    }
}

#[derive(Default)]
struct Recorded {
    window: Counts,
    ok_latency: Latencies,
    refused_latency: Latencies,
    /// A few distinct unexpected answers, to print.
    oddities: Vec<String>,
}

struct Shared {
    url: String,
    keys: Vec<String>,
    read_key: String,
    wells: usize,
    batch: usize,
    well_ids: Vec<String>,
    values: Vec<String>,
    base_secs: i64,
    next_seq: AtomicU64,
    next_key: AtomicUsize,
    retry: Mutex<VecDeque<Arc<Body>>>,
    /// One bit per reading number: acknowledged.
    acked: Mutex<Vec<u64>>,
    recorded: Mutex<Recorded>,
    http: reqwest::Client,
}

/// Value sets per well, used in turn (rendered once: the client's CPU is the server's too).
const VARIANTS: usize = 16;

/// `,"channel":value,...` of each well's variants.
fn render_values(wells: usize) -> Vec<String> {
    let mut values = Vec::with_capacity(wells * VARIANTS);
    for well in 0..wells {
        for step in 0..VARIANTS {
            let mut text = String::new();
            for (f, v) in synthetic(well, step as u64).iter() {
                let _ = write!(text, ",\"{}\":{v}", f.name());
            }
            values.push(text);
        }
    }
    values
}

impl Shared {
    fn well_id(&self, well: usize) -> String {
        self.well_ids[well].clone()
    }

    /// A refused body if one waits, else the next new one.
    fn take_body(&self) -> Arc<Body> {
        if let Some(body) = self.retry.lock().unwrap().pop_front() {
            return body;
        }
        let seq0 = self
            .next_seq
            .fetch_add(self.batch as u64, Ordering::Relaxed);
        let mut out = String::with_capacity(self.batch * 330 + 2);
        out.push('[');
        for seq in seq0..seq0 + self.batch as u64 {
            if seq > seq0 {
                out.push(',');
            }
            let well = (seq % self.wells as u64) as usize;
            let step = seq / self.wells as u64;
            let ts = Timestamp::from_secs(self.base_secs + step as i64);
            out.push_str("{\"well_id\":\"");
            out.push_str(&self.well_ids[well]);
            out.push_str("\",\"ts\":\"");
            out.push_str(&ts.to_rfc3339());
            out.push('"');
            out.push_str(&self.values[well * VARIANTS + (step as usize % VARIANTS)]);
            out.push('}');
        }
        out.push(']');
        Arc::new(Body {
            seq0,
            bytes: Bytes::from(out),
        })
    }

    fn key(&self) -> &str {
        &self.keys[self.next_key.fetch_add(1, Ordering::Relaxed) % self.keys.len()]
    }

    /// Sends one body and records the answer; a body not acknowledged goes back for retry.
    async fn send_one(&self, body: Arc<Body>) {
        let started = Instant::now();
        let response = self
            .http
            .post(format!("{}/api/v1/telemetry", self.url))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.key()))
            .body(body.bytes.clone())
            .send()
            .await;
        let mut counts = Counts {
            sent: 1,
            ..Counts::default()
        };
        let mut acked = false;
        let mut oddity = None;
        let mut refused = false;
        match response {
            Err(e) => {
                counts.transport_errors = 1;
                let mut text = format!("transport: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                oddity = Some(text);
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let text = response.bytes().await.unwrap_or_default();
                let json: serde_json::Value =
                    serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null);
                match status {
                    200 => {
                        let accepted = json["accepted"].as_u64().unwrap_or(0);
                        let duplicates = json["duplicates"].as_u64().unwrap_or(0);
                        let rejected = json["rejected"].as_array().map_or(0, Vec::len);
                        if rejected == 0 && accepted + duplicates == self.batch as u64 {
                            counts.ok = 1;
                            counts.acked_readings = self.batch as u64;
                            acked = true;
                        } else {
                            counts.other_status = 1;
                            oddity = Some(format!("200 but {}", truncate(&text)));
                        }
                    }
                    429 | 503 => {
                        refused = true;
                        if retry_after {
                            counts.refused_with_retry_after = 1;
                        }
                        if status == 429 {
                            counts.too_many = 1;
                        } else if json["error"]["type"] == "overloaded" {
                            counts.overloaded = 1;
                        } else {
                            counts.other_503 = 1;
                            oddity = Some(format!("503 {}", truncate(&text)));
                        }
                    }
                    _ => {
                        counts.other_status = 1;
                        oddity = Some(format!("{status} {}", truncate(&text)));
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        if acked {
            let mut bits = self.acked.lock().unwrap();
            for seq in body.seq0..body.seq0 + self.batch as u64 {
                let (word, bit) = ((seq / 64) as usize, seq % 64);
                if bits.len() <= word {
                    bits.resize(word + 1, 0);
                }
                bits[word] |= 1 << bit;
            }
        } else {
            self.retry.lock().unwrap().push_back(body);
        }
        let mut recorded = self.recorded.lock().unwrap();
        recorded.window.add(&counts);
        if acked {
            recorded.ok_latency.0.push(elapsed);
        } else if refused {
            recorded.refused_latency.0.push(elapsed);
        }
        if let Some(o) = oddity
            && recorded.oddities.len() < 5
            && !recorded.oddities.iter().any(|x| same_start(x, &o))
        {
            recorded.oddities.push(o);
        }
    }

    fn take_recorded(&self) -> Recorded {
        std::mem::take(&mut *self.recorded.lock().unwrap())
    }
}

fn same_start(a: &str, b: &str) -> bool {
    a.chars().take(40).eq(b.chars().take(40))
}

fn truncate(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(200).collect()
}

/// Resident and peak resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    Some((status_mib(pid, "VmRSS:")?, status_mib(pid, "VmHWM:")?))
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `RssAnon:`, ...), in MiB.
fn status_mib(pid: u32, name: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    field(name)
}

/// One drift window: ingest latency and the server's RSS at its end.
struct Window {
    from: f64,
    to: f64,
    ok: usize,
    p50: Duration,
    p99: Duration,
    rss_mib: Option<f64>,
}

/// One second of the run.
struct Sample {
    at: f64,
    counts: Counts,
    rss_mib: Option<f64>,
}

/// The health probe's findings.
#[derive(Default)]
struct Health {
    live: Latencies,
    ready: Latencies,
    live_bad: u64,
    ready_bad: u64,
    ready_statuses: std::collections::BTreeMap<String, u64>,
}

async fn probe_health(url: String, stop: Arc<AtomicBool>) -> Health {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut health = Health::default();
    while !stop.load(Ordering::Relaxed) {
        for (path, live) in [("/health/live", true), ("/health/ready", false)] {
            let started = Instant::now();
            let answer = http.get(format!("{url}{path}")).send().await;
            let (ok, status) = match answer {
                Ok(r) => {
                    let code = r.status();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let status = body["status"].as_str().unwrap_or("?").to_owned();
                    (code.is_success(), format!("{} {status}", code.as_u16()))
                }
                Err(e) => (false, format!("error {e}")),
            };
            let elapsed = started.elapsed();
            if live {
                health.live.0.push(elapsed);
                health.live_bad += u64::from(!ok);
            } else {
                health.ready.0.push(elapsed);
                health.ready_bad += u64::from(!ok);
                *health.ready_statuses.entry(status).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    health
}

pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let keys: Vec<String> = args
        .api_keys
        .split(',')
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        bail!("no API key (--api-keys or ESPWATCH_BENCH_API_KEYS)");
    }
    if args.load.wells == 0 || args.batch == 0 || args.max_outstanding == 0 {
        bail!("--wells, --batch and --max-outstanding must be positive");
    }
    let LoadDurations {
        duration,
        calibrate,
        report_every,
        start_ago,
    } = args.load.durations()?;
    let drift_window = secs_arg("drift-window", &args.drift_window)?.as_secs_f64();
    let now_secs = now_secs();
    let url = args.url.trim_end_matches('/').to_owned();
    let prefix = args.load.prefix_or("LOAD", now_secs);
    let shared = Arc::new(Shared {
        url: url.clone(),
        read_key: args.read_key.clone().unwrap_or_else(|| keys[0].clone()),
        keys,
        wells: args.load.wells,
        batch: args.batch,
        well_ids: (0..args.load.wells)
            .map(|w| format!("{prefix}-{w:04}"))
            .collect(),
        values: render_values(args.load.wells),
        base_secs: now_secs - start_ago.as_secs() as i64,
        next_seq: AtomicU64::new(0),
        next_key: AtomicUsize::new(0),
        retry: Mutex::new(VecDeque::new()),
        acked: Mutex::new(Vec::new()),
        recorded: Mutex::new(Recorded::default()),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.max_outstanding)
            .timeout(Duration::from_secs(60))
            .build()?,
    });
    let pid = args.load.pid;
    let rss_at_start = pid.and_then(rss_mib);
    println!(
        "load on {url}: {} wells {}, {} readings per request, server pid {}, RSS at start {}",
        args.load.wells,
        prefix,
        args.batch,
        pid.map_or("-".into(), |p| p.to_string()),
        rss_at_start.map_or("-".into(), |(r, _)| format!("{r:.0} MiB"))
    );

    let rate = match args.load.rate {
        Some(rate) if rate > 0.0 => rate,
        Some(_) => bail!("--rate must be positive"),
        None => {
            let sustainable = closed_loop(&shared, args.calibrate_clients, calibrate).await?;
            println!(
                "sustainable (closed loop, {} clients, {:.0} s, first quarter not counted): {sustainable:.0} readings/s",
                args.calibrate_clients,
                calibrate.as_secs_f64()
            );
            println!("RESULT sustainable_readings_per_s={sustainable:.0}");
            sustainable * args.load.times
        }
    };
    // What calibration left over is not part of the run's figures (its acknowledged readings
    // are still checked afterwards).
    let _ = shared.take_recorded();
    let mut total = Counts::default();
    let mut ok_latency = Latencies::default();
    let mut refused_latency = Latencies::default();
    let mut oddities = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();

    println!(
        "offering {rate:.0} readings/s ({:.1} requests/s) open loop for {:.0} s, at most {} in flight",
        rate / args.batch as f64,
        duration.as_secs_f64(),
        args.max_outstanding
    );
    let stop_health = Arc::new(AtomicBool::new(false));
    let health_task = tokio::spawn(probe_health(url.clone(), stop_health.clone()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let not_sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + duration;
    let scheduler = {
        let (shared, outstanding, not_sent) =
            (shared.clone(), outstanding.clone(), not_sent.clone());
        let per_request = args.batch as f64 / rate;
        let max = args.max_outstanding;
        tokio::spawn(async move {
            let mut n: u64 = 0;
            loop {
                let due = started + Duration::from_secs_f64(n as f64 * per_request);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                n += 1;
                if outstanding.load(Ordering::Acquire) >= max {
                    not_sent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                outstanding.fetch_add(1, Ordering::AcqRel);
                let (shared, outstanding) = (shared.clone(), outstanding.clone());
                tokio::spawn(async move {
                    let body = shared.take_body();
                    shared.send_one(body).await;
                    outstanding.fetch_sub(1, Ordering::AcqRel);
                });
            }
        })
    };
    let mut last_report = Instant::now();
    let mut since_report = Counts::default();
    let mut report_latency = Latencies::default();
    let mut window_latency = Latencies::default();
    let mut window_from = 0.0;
    let mut windows: Vec<Window> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut recorded = shared.take_recorded();
        recorded.window.not_sent = not_sent.swap(0, Ordering::Relaxed);
        let rss = pid.and_then(rss_mib).map(|(r, _)| r);
        report_latency
            .0
            .extend(recorded.ok_latency.0.iter().copied());
        window_latency
            .0
            .extend(recorded.ok_latency.0.iter().copied());
        ok_latency.0.extend(recorded.ok_latency.0);
        refused_latency.0.extend(recorded.refused_latency.0);
        for o in recorded.oddities {
            if oddities.len() < 8 {
                oddities.push(o);
            }
        }
        total.add(&recorded.window);
        since_report.add(&recorded.window);
        let done = scheduler.is_finished() && outstanding.load(Ordering::Acquire) == 0;
        samples.push(Sample {
            at: started.elapsed().as_secs_f64(),
            counts: recorded.window,
            rss_mib: rss,
        });
        let at = started.elapsed().as_secs_f64();
        if at - window_from >= drift_window || done {
            windows.push(Window {
                from: window_from,
                to: at,
                ok: window_latency.0.len(),
                p50: window_latency.percentile(50.0),
                p99: window_latency.percentile(99.0),
                rss_mib: rss,
            });
            window_latency = Latencies::default();
            window_from = at;
        }
        if last_report.elapsed() >= report_every || done {
            let secs = last_report.elapsed().as_secs_f64();
            let part = |name| pid.and_then(|p| status_mib(p, name));
            println!(
                "{:>6.0} s: acked {:>8.0} readings/s (200 in {} median, {} p99), 200 {:>5}, 503 {:>6}, 429 {:>5}, errors {:>4}, not sent {:>6}, in flight {:>5}, server RSS {} (anon {}, file {})",
                started.elapsed().as_secs_f64(),
                since_report.acked_readings as f64 / secs,
                super::ms(report_latency.percentile(50.0)),
                super::ms(report_latency.percentile(99.0)),
                since_report.ok,
                since_report.overloaded + since_report.other_503,
                since_report.too_many,
                since_report.transport_errors + since_report.other_status,
                since_report.not_sent,
                outstanding.load(Ordering::Acquire),
                rss.map_or("-".into(), |r| format!("{r:.0} MiB")),
                part("RssAnon:").map_or("-".into(), |r| format!("{r:.0} MiB")),
                part("RssFile:").map_or("-".into(), |r| format!("{r:.0} MiB"))
            );
            since_report = Counts::default();
            report_latency = Latencies::default();
            last_report = Instant::now();
        }
        if done {
            break;
        }
        if Instant::now() > end + Duration::from_secs(120) {
            println!(
                "{} requests still in flight 120 s after the end; not waiting for them",
                outstanding.load(Ordering::Acquire)
            );
            break;
        }
    }
    let drained_after = started.elapsed().as_secs_f64() - duration.as_secs_f64();
    stop_health.store(true, Ordering::Relaxed);
    let mut health = health_task.await?;

    // Figures.
    let in_run: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at <= duration.as_secs_f64() + 0.5)
        .collect();
    let mut per_second: Vec<f64> = in_run
        .iter()
        .map(|s| s.counts.acked_readings as f64)
        .collect();
    let mut rss_values: Vec<f64> = samples.iter().filter_map(|s| s.rss_mib).collect();
    let rss_max = rss_values.iter().copied().fold(f64::NAN, f64::max);
    let rss_end = rss_values.last().copied();
    let peak = pid.and_then(rss_mib).map(|(_, hwm)| hwm);
    let refused = total.overloaded + total.other_503 + total.too_many;
    println!("--- summary ---");
    println!(
        "offered {rate:.0} readings/s for {:.0} s; every request: {} readings, {} wells",
        duration.as_secs_f64(),
        args.batch,
        args.load.wells
    );
    println!(
        "requests sent {}: 200 {}, 503 overloaded {}, 503 other {}, 429 {}, Retry-After on {} of {} refusals, other status {}, transport errors {}; not sent (client at --max-outstanding) {}",
        total.sent,
        total.ok,
        total.overloaded,
        total.other_503,
        total.too_many,
        total.refused_with_retry_after,
        refused,
        total.other_status,
        total.transport_errors,
        total.not_sent
    );
    println!(
        "acknowledged {} readings; per second: median {:.0}; last answers {:.1} s after the end",
        total.acked_readings,
        median(&mut per_second),
        drained_after
    );
    println!(
        "latency 200: median {}, p99 {}, max {}; 503/429: median {}, p99 {}, max {}",
        super::ms(ok_latency.percentile(50.0)),
        super::ms(ok_latency.percentile(99.0)),
        super::ms(ok_latency.percentile(100.0)),
        super::ms(refused_latency.percentile(50.0)),
        super::ms(refused_latency.percentile(99.0)),
        super::ms(refused_latency.percentile(100.0)),
    );
    if pid.is_some() {
        println!(
            "server RSS: start {}, median {:.0} MiB, max sampled {:.0} MiB, end {}, peak (VmHWM) {}",
            rss_at_start.map_or("-".into(), |(r, _)| format!("{r:.0} MiB")),
            median(&mut rss_values),
            rss_max,
            rss_end.map_or("-".into(), |r| format!("{r:.0} MiB")),
            peak.map_or("-".into(), |r| format!("{r:.0} MiB"))
        );
    }
    println!(
        "/health/live: {} probes, median {}, p99 {}, max {}, failed {}; /health/ready: median {}, p99 {}, max {}, failed {}; ready answers {:?}",
        health.live.0.len(),
        super::ms(health.live.percentile(50.0)),
        super::ms(health.live.percentile(99.0)),
        super::ms(health.live.percentile(100.0)),
        health.live_bad,
        super::ms(health.ready.percentile(50.0)),
        super::ms(health.ready.percentile(99.0)),
        super::ms(health.ready.percentile(100.0)),
        health.ready_bad,
        health.ready_statuses
    );
    println!(
        "drift ({:.0} s windows): ingest 200 latency and server RSS at each window's end",
        drift_window
    );
    for w in &windows {
        println!(
            "  {:>6.0}-{:<6.0} s: {:>6} answers 200, p50 {}, p99 {}, RSS {}",
            w.from,
            w.to,
            w.ok,
            super::ms(w.p50),
            super::ms(w.p99),
            w.rss_mib.map_or("-".into(), |r| format!("{r:.0} MiB"))
        );
    }
    println!(
        "RESULT drift_p50_ms={} drift_p99_ms={} drift_rss_mib={}",
        windows
            .iter()
            .map(|w| format!("{:.1}", w.p50.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(","),
        windows
            .iter()
            .map(|w| format!("{:.1}", w.p99.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(","),
        windows
            .iter()
            .map(|w| w.rss_mib.map_or("-".into(), |r| format!("{r:.0}")))
            .collect::<Vec<_>>()
            .join(",")
    );
    for o in &oddities {
        println!("  unexpected: {o}");
    }
    println!(
        "RESULT offered_readings_per_s={rate:.0} acked_readings={} acked_median_per_s={:.0} ok={} overloaded_503={} other_503={} too_many_429={} retry_after={} refused={} transport_errors={} other_status={} not_sent={}",
        total.acked_readings,
        median(&mut per_second),
        total.ok,
        total.overloaded,
        total.other_503,
        total.too_many,
        total.refused_with_retry_after,
        refused,
        total.transport_errors,
        total.other_status,
        total.not_sent
    );
    println!(
        "RESULT ok_p50_ms={:.1} ok_p99_ms={:.1} refused_p50_ms={:.2} refused_p99_ms={:.1} live_p50_ms={:.2} live_max_ms={:.1} ready_p50_ms={:.2} ready_max_ms={:.1} rss_median_mib={:.0} rss_max_mib={rss_max:.0} rss_peak_mib={}",
        ok_latency.percentile(50.0).as_secs_f64() * 1e3,
        ok_latency.percentile(99.0).as_secs_f64() * 1e3,
        refused_latency.percentile(50.0).as_secs_f64() * 1e3,
        refused_latency.percentile(99.0).as_secs_f64() * 1e3,
        health.live.percentile(50.0).as_secs_f64() * 1e3,
        health.live.percentile(100.0).as_secs_f64() * 1e3,
        health.ready.percentile(50.0).as_secs_f64() * 1e3,
        health.ready.percentile(100.0).as_secs_f64() * 1e3,
        median(&mut rss_values),
        peak.map_or("-".into(), |p| format!("{p:.0}"))
    );

    if !args.no_verify {
        verify(&shared).await?;
    }
    Ok(())
}

/// Closed loop: `clients` tasks each send, wait for the answer, send again. Returns the
/// acknowledged readings/s after the first quarter.
async fn closed_loop(shared: &Arc<Shared>, clients: usize, span: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let end = started + span;
    let warm = started + span / 4;
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let body = shared.take_body();
                shared.send_one(body).await;
            }
        }));
    }
    tokio::time::sleep_until(warm.into()).await;
    let _ = shared.take_recorded();
    let counted_from = Instant::now();
    tokio::time::sleep_until(end.into()).await;
    let recorded = shared.take_recorded();
    let counted = counted_from.elapsed().as_secs_f64();
    for t in tasks {
        t.await?;
    }
    if recorded.window.acked_readings == 0 {
        bail!(
            "nothing was acknowledged while measuring the sustainable rate: {:?}",
            recorded.oddities
        );
    }
    Ok(recorded.window.acked_readings as f64 / counted)
}

/// Reads every well back and checks each acknowledged reading is stored.
async fn verify(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let started = Instant::now();
    let acked = shared.acked.lock().unwrap().clone();
    let is_acked = |seq: u64| {
        acked
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    };
    let last_seq = shared.next_seq.load(Ordering::Relaxed);
    let steps = last_seq / shared.wells as u64 + 1;
    let from = Timestamp::from_secs(shared.base_secs).to_rfc3339();
    let to = Timestamp::from_secs(shared.base_secs + steps as i64 + 1).to_rfc3339();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (shared, next, from, to) = (shared.clone(), next.clone(), from.clone(), to.clone());
        tasks.push(tokio::spawn(async move {
            let mut found: Vec<(usize, Vec<u64>)> = Vec::new();
            loop {
                let well = next.fetch_add(1, Ordering::Relaxed);
                if well >= shared.wells {
                    break;
                }
                let response = shared
                    .http
                    .get(format!(
                        "{}/api/v1/wells/{}/telemetry?from={from}&to={to}&fields={}&max_points=1000000",
                        shared.url,
                        shared.well_id(well),
                        Field::MotorCurrentA.name()
                    ))
                    .header("authorization", format!("Bearer {}", shared.read_key))
                    .send()
                    .await?;
                let status = response.status();
                if status == 404 {
                    found.push((well, Vec::new()));
                    continue;
                }
                let body: serde_json::Value = response.json().await?;
                if !status.is_success() || body["downsampled"] != false {
                    bail!("reading well {well} back: {status} {body}");
                }
                let mut steps = Vec::new();
                for ts in body["ts"].as_array().context("ts")? {
                    let t = Timestamp::parse_rfc3339(ts.as_str().context("ts")?)
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    steps.push((t.micros() / 1_000_000 - shared.base_secs) as u64);
                }
                found.push((well, steps));
            }
            anyhow::Ok(found)
        }));
    }
    let (mut stored, mut missing, mut acked_total) = (0u64, 0u64, 0u64);
    let mut examples = Vec::new();
    for t in tasks {
        for (well, steps) in t.await?? {
            stored += steps.len() as u64;
            let present: std::collections::HashSet<u64> = steps.into_iter().collect();
            let mut seq = well as u64;
            while seq < last_seq {
                if is_acked(seq) {
                    acked_total += 1;
                    if !present.contains(&(seq / shared.wells as u64)) {
                        missing += 1;
                        if examples.len() < 5 {
                            examples.push(format!(
                                "{} step {}",
                                shared.well_id(well),
                                seq / shared.wells as u64
                            ));
                        }
                    }
                }
                seq += shared.wells as u64;
            }
        }
    }
    println!(
        "verify: {acked_total} acknowledged readings, {} missing; {stored} stored (unacknowledged requests may have been stored too); {:.1} s",
        missing,
        started.elapsed().as_secs_f64()
    );
    println!("RESULT verified_acked={acked_total} missing={missing} stored={stored}");
    if missing > 0 {
        bail!("{missing} acknowledged readings are not stored, e.g. {examples:?}");
    }
    Ok(())
}
