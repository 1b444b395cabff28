//! `espwatch-bench http`: ingest speed as clients see it. A separate process drives a running
//! `espwatch serve` over HTTP with request bodies generated before the clock starts, so the
//! client costs little more than its sockets, and reports readings/s, latency and the server's
//! CPU per 1 000 readings (from `/proc/PID/stat`).
//!
//! Variants (each run on new wells, so "new" data is new):
//! - `gauge`: 1 000-reading batches (100 wells × 10 s), values with two decimals;
//! - `resend`: the `gauge` bodies sent a second time, every reading a duplicate (a gateway
//!   re-sending its backlog after a timeout); every answer must count them all as duplicates;
//! - `full`: as `gauge` with the values as a float32-converting gateway sends them
//!   (`40.529998779296875`: the gauge value through `f32`, printed in full);
//! - `single`: one reading per request from `--single-connections` connections.
//!
//! Every answer is checked: 200, nothing rejected, and exactly the accepted / duplicate counts
//! the variant implies. `--runs` rounds; medians are printed, with each run's figure.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::{Measurements, Timestamp};

use super::{Latencies, median, synthetic};

#[derive(clap::Args, Debug)]
pub struct HttpArgs {
    /// The running server, e.g. `http://127.0.0.1:8080` (rate limits off, see
    /// `scripts/http-bench.sh`). Needed unless --write-bodies.
    #[arg(long, default_value = "")]
    pub url: String,
    /// API keys (comma-separated; used in turn) with telemetry write access.
    #[arg(
        long,
        env = "ESPWATCH_BENCH_API_KEYS",
        hide_env_values = true,
        default_value = ""
    )]
    pub api_keys: String,
    /// The server's process id: its CPU time is read from `/proc/PID/stat`.
    #[arg(long)]
    pub pid: Option<u32>,
    /// What to measure, in this order per run: gauge, resend (needs gauge before it), full,
    /// single.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gauge,resend,full,single"
    )]
    pub variants: Vec<String>,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Readings per batch variant and run.
    #[arg(long, default_value_t = 500_000)]
    pub readings: usize,
    /// Readings per request of the batch variants (wells × steps).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Wells of a batch (each batch holds `batch / wells` consecutive readings of each).
    #[arg(long, default_value_t = 100)]
    pub wells: usize,
    /// Time between one well's readings.
    #[arg(long, default_value = "10s")]
    pub interval: String,
    /// Connections sending batches (each waits for its answer, then sends the next).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Requests of the `single` variant per run.
    #[arg(long, default_value_t = 60_000)]
    pub single_requests: usize,
    /// Connections of the `single` variant.
    #[arg(long, default_value_t = 64)]
    pub single_connections: usize,
    /// Well id prefix (default: `H<unix time>`; each run and variant adds its own suffix).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only write the bodies of one pass of the first batch variant (gauge or full) to DIR
    /// (`DIR/body-00000.json`, ...) and exit, for an external load generator such as wrk
    /// (`scripts/wrk-ingest.sh`); nothing is sent.
    #[arg(long, value_name = "DIR")]
    pub write_bodies: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Gauge,
    Resend,
    Full,
    Single,
}

impl Variant {
    fn parse(s: &str) -> anyhow::Result<Variant> {
        Ok(match s.trim() {
            "gauge" => Variant::Gauge,
            "resend" => Variant::Resend,
            "full" => Variant::Full,
            "single" => Variant::Single,
            other => bail!("unknown variant {other:?} (gauge, resend, full, single)"),
        })
    }

    fn describe(self, args: &HttpArgs) -> String {
        let steps = args.batch / args.wells.max(1);
        match self {
            Variant::Gauge => format!(
                "{}-reading batches ({} wells × {steps}), gauge precision, {} connections",
                args.batch, args.wells, args.connections
            ),
            Variant::Resend => "the same batches again (all duplicates)".into(),
            Variant::Full => "the same shape, float32-noisy full-precision values".into(),
            Variant::Single => format!("single readings, {} connections", args.single_connections),
        }
    }
}

/// One pass's figures.
struct Pass {
    readings_per_s: f64,
    requests_per_s: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU ms per 1 000 readings.
    server_cpu_ms: Option<f64>,
}

/// Bodies of one batch variant: readings of `wells` wells, `steps` steps each per body,
/// step-major (every well's reading at one time, then the next time), as gateways forward.
fn batch_bodies(
    prefix: &str,
    bodies: usize,
    wells: usize,
    steps: usize,
    interval_micros: i64,
    full: bool,
) -> Vec<Bytes> {
    (0..bodies)
        .map(|b| {
            let mut s = String::with_capacity(wells * steps * 360 + 2);
            s.push('[');
            for step in 0..steps {
                let step = (b * steps + step) as u64;
                for well in 0..wells {
                    if s.len() > 1 {
                        s.push(',');
                    }
                    reading(&mut s, prefix, well, step, interval_micros, full);
                }
            }
            s.push(']');
            Bytes::from(s)
        })
        .collect()
}

const START_SECS: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn reading(out: &mut String, prefix: &str, well: usize, step: u64, interval: i64, full: bool) {
    let ts = Timestamp(START_SECS * Timestamp::MICROS_PER_SECOND + step as i64 * interval);
    let _ = write!(out, "{{\"well_id\":\"{prefix}-{well:04}\",\"ts\":\"{ts}\"");
    let values: Measurements = synthetic(well, step);
    for (f, v) in values.iter() {
        if full {
            // What a gateway that keeps values as float32 sends: the f64 nearest to the f32.
            let _ = write!(out, ",\"{}\":{}", f.name(), v as f32 as f64);
        } else {
            let _ = write!(out, ",\"{}\":{v}", f.name());
        }
    }
    out.push('}');
}

/// Server CPU seconds (utime + stime) from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Option<f64> {
    super::cpu::process_seconds(pid)
}

/// Sends every body once from `connections` concurrent connections and checks each answer.
async fn send(
    http: &reqwest::Client,
    args: &HttpArgs,
    keys: &Arc<Vec<String>>,
    bodies: &Arc<Vec<Bytes>>,
    per_body: usize,
    connections: usize,
    expect_duplicates: bool,
) -> anyhow::Result<Pass> {
    let url = format!("{}/api/v1/telemetry", args.url.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = args.pid.and_then(process_cpu);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, url, bodies, next, keys) = (
            http.clone(),
            url.clone(),
            bodies.clone(),
            next.clone(),
            keys.clone(),
        );
        let auth = format!("Bearer {}", keys[c % keys.len()]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", &auth)
                    .body(body.clone())
                    .send()
                    .await
                    .with_context(|| format!("request {i}"))?;
                let status = response.status();
                let text = response.bytes().await?;
                latencies.push(sent.elapsed());
                let report: serde_json::Value =
                    serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null);
                let (accepted, duplicates) = (
                    report["accepted"].as_u64().unwrap_or(u64::MAX),
                    report["duplicates"].as_u64().unwrap_or(u64::MAX),
                );
                let want = if expect_duplicates {
                    (0, per_body as u64)
                } else {
                    (per_body as u64, 0)
                };
                let rejected = report["rejected"].as_array().map_or(1, Vec::len);
                if status != 200 || rejected != 0 || (accepted, duplicates) != want {
                    bail!(
                        "request {i}: {status}, expected accepted {} duplicates {}: {}",
                        want.0,
                        want.1,
                        String::from_utf8_lossy(&text)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    );
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Latencies::default();
    for t in tasks {
        all.0.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = args.pid.and_then(process_cpu);
    let readings = bodies.len() * per_body;
    Ok(Pass {
        readings_per_s: readings as f64 / elapsed,
        requests_per_s: bodies.len() as f64 / elapsed,
        p50: all.percentile(50.0),
        p99: all.percentile(99.0),
        server_cpu_ms: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) * 1e3 * 1000.0 / readings.max(1) as f64),
    })
}

/// `--write-bodies DIR`: one pass of the first batch variant's bodies, one file each.
fn write_bodies(args: &HttpArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let full = match args
        .variants
        .iter()
        .map(|v| Variant::parse(v))
        .find(|v| matches!(v, Ok(Variant::Gauge | Variant::Full) | Err(_)))
    {
        Some(v) => v? == Variant::Full,
        None => bail!("--write-bodies needs gauge or full in --variants"),
    };
    if args.wells == 0 || args.batch < args.wells || !args.batch.is_multiple_of(args.wells) {
        bail!("--batch must be a positive multiple of --wells");
    }
    let interval = parse_duration_micros(&args.interval).map_err(anyhow::Error::msg)?;
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("W{}", chrono_now_secs()));
    let bodies = batch_bodies(
        &prefix,
        (args.readings / args.batch).max(1),
        args.wells,
        args.batch / args.wells,
        interval,
        full,
    );
    std::fs::create_dir_all(dir)?;
    for (i, body) in bodies.iter().enumerate() {
        let path = dir.join(format!("body-{i:05}.json"));
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{} bodies of {} readings (wells {prefix}-0000..) in {}",
        bodies.len(),
        args.batch,
        dir.display()
    );
    Ok(())
}

pub async fn run(args: &HttpArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.write_bodies {
        return write_bodies(args, dir);
    }
    if args.url.is_empty() {
        bail!("--url is needed (the running server)");
    }
    let keys: Vec<String> = args
        .api_keys
        .split(',')
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        bail!("no API key (--api-keys or ESPWATCH_BENCH_API_KEYS)");
    }
    let keys = Arc::new(keys);
    let variants: Vec<Variant> = args
        .variants
        .iter()
        .map(|v| Variant::parse(v))
        .collect::<anyhow::Result<_>>()?;
    if variants.contains(&Variant::Resend)
        && variants.iter().position(|v| *v == Variant::Gauge)
            > variants.iter().position(|v| *v == Variant::Resend)
    {
        bail!("`resend` re-sends the `gauge` bodies: list gauge before it");
    }
    if args.wells == 0 || args.batch < args.wells || !args.batch.is_multiple_of(args.wells) {
        bail!("--batch must be a positive multiple of --wells");
    }
    let interval = parse_duration_micros(&args.interval).map_err(anyhow::Error::msg)?;
    if interval <= 0 {
        bail!("--interval must be positive");
    }
    let steps = args.batch / args.wells;
    let bodies_per_pass = (args.readings / args.batch).max(1);
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("H{}", chrono_now_secs()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(120))
        .build()?;
    println!(
        "espwatch-bench http — {} against {}; {} readings per batch pass, {} runs",
        variants
            .iter()
            .map(|v| format!("{v:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        args.url,
        bodies_per_pass * args.batch,
        args.runs
    );
    let mut results: Vec<(Variant, Vec<Pass>)> = variants.iter().map(|v| (*v, vec![])).collect();
    for run in 0..args.runs.max(1) {
        let mut gauge_bodies: Option<Arc<Vec<Bytes>>> = None;
        for (vi, variant) in variants.iter().enumerate() {
            let tag = format!("{prefix}R{run}{}", &format!("{variant:?}")[..1]);
            let pass = match variant {
                Variant::Gauge | Variant::Full => {
                    let full = *variant == Variant::Full;
                    let bodies = Arc::new(batch_bodies(
                        &tag,
                        bodies_per_pass,
                        args.wells,
                        steps,
                        interval,
                        full,
                    ));
                    let pass = send(
                        &http,
                        args,
                        &keys,
                        &bodies,
                        args.batch,
                        args.connections,
                        false,
                    )
                    .await?;
                    if !full {
                        gauge_bodies = Some(bodies);
                    }
                    pass
                }
                Variant::Resend => {
                    let bodies = gauge_bodies.clone().context("resend without gauge")?;
                    send(
                        &http,
                        args,
                        &keys,
                        &bodies,
                        args.batch,
                        args.connections,
                        true,
                    )
                    .await?
                }
                Variant::Single => {
                    let wells = 500;
                    let bodies: Vec<Bytes> = (0..args.single_requests)
                        .map(|i| {
                            let mut s = String::with_capacity(400);
                            reading(&mut s, &tag, i % wells, (i / wells) as u64, interval, false);
                            Bytes::from(s)
                        })
                        .collect();
                    send(
                        &http,
                        args,
                        &keys,
                        &Arc::new(bodies),
                        1,
                        args.single_connections,
                        false,
                    )
                    .await?
                }
            };
            println!(
                "run {}: {:<8} {:>9.0} readings/s {:>8.0} requests/s  p50 {:>7.1} ms  p99 {:>7.1} ms  server CPU {}",
                run + 1,
                format!("{variant:?}").to_lowercase(),
                pass.readings_per_s,
                pass.requests_per_s,
                pass.p50.as_secs_f64() * 1e3,
                pass.p99.as_secs_f64() * 1e3,
                pass.server_cpu_ms
                    .map_or("-".into(), |c| format!("{c:.1} ms per 1000 readings")),
            );
            results[vi].1.push(pass);
        }
        drop(gauge_bodies);
    }
    println!("--- medians of {} runs ---", args.runs.max(1));
    let mut gauge_rate = None;
    for (variant, passes) in &results {
        let mut rates: Vec<f64> = passes.iter().map(|p| p.readings_per_s).collect();
        let mut reqs: Vec<f64> = passes.iter().map(|p| p.requests_per_s).collect();
        let mut p50: Vec<f64> = passes.iter().map(|p| p.p50.as_secs_f64() * 1e3).collect();
        let mut p99: Vec<f64> = passes.iter().map(|p| p.p99.as_secs_f64() * 1e3).collect();
        let mut cpu: Vec<f64> = passes.iter().filter_map(|p| p.server_cpu_ms).collect();
        let rate = median(&mut rates);
        if *variant == Variant::Gauge {
            gauge_rate = Some(passes.iter().map(|p| p.readings_per_s).collect::<Vec<_>>());
        }
        let vs_gauge = match (&gauge_rate, variant) {
            (Some(g), Variant::Resend | Variant::Full) if g.len() == passes.len() => {
                let mut ratios: Vec<f64> = passes
                    .iter()
                    .zip(g)
                    .map(|(p, g)| p.readings_per_s / g)
                    .collect();
                format!(
                    ", {:.2}× gauge (median of the runs' ratios)",
                    median(&mut ratios)
                )
            }
            _ => String::new(),
        };
        println!(
            "{:<8} {:>9.0} readings/s {:>8.0} requests/s  p50 {:>7.1} ms  p99 {:>7.1} ms  server CPU {}{vs_gauge}  — {}",
            format!("{variant:?}").to_lowercase(),
            rate,
            median(&mut reqs),
            median(&mut p50),
            median(&mut p99),
            if cpu.is_empty() {
                "-".into()
            } else {
                format!("{:.1} ms/1000 readings", median(&mut cpu))
            },
            variant.describe(args),
        );
        println!(
            "RESULT variant={} readings_per_s={rate:.0} p50_ms={:.1} p99_ms={:.1} server_cpu_ms_per_1000={}",
            format!("{variant:?}").to_lowercase(),
            median(&mut p50),
            median(&mut p99),
            if cpu.is_empty() {
                "-".into()
            } else {
                format!("{:.2}", median(&mut cpu))
            }
        );
    }
    Ok(())
}

fn chrono_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_hold_every_well_and_step_once_in_both_precisions() {
        for full in [false, true] {
            let bodies = batch_bodies("T", 3, 4, 2, 10_000_000, full);
            assert_eq!(bodies.len(), 3);
            let mut seen = std::collections::HashSet::new();
            let mut two_decimals = 0;
            for body in &bodies {
                let readings: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
                assert_eq!(readings.len(), 8);
                for r in readings {
                    assert!(seen.insert((r["well_id"].to_string(), r["ts"].to_string())));
                    let v = r["motor_current_a"].as_f64().unwrap();
                    // Gauge values have two decimals; full ones are exactly an f32.
                    if full {
                        assert_eq!(v, v as f32 as f64);
                    }
                    if (v * 100.0).round() / 100.0 == v {
                        two_decimals += 1;
                    }
                }
            }
            assert_eq!(seen.len(), 24);
            // Gauge values all have two decimals; float32 ones only when exact in binary.
            if full {
                assert!(two_decimals < 12, "{two_decimals}");
            } else {
                assert_eq!(two_decimals, 24);
            }
        }
    }
}
