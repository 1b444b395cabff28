//! `espwatch-bench ask`: latency of `POST /api/v1/ask` on a fleet of registered wells (issue
//! 24: p95 < 50 ms on 1 000 wells). A temporary embedded store gets WELLS registered wells
//! (names and pads, as a registry has them) and HOURS of readings up to now; a server on it
//! answers a fixed mix of questions (every intent, one well and fleet-wide) ROUNDS times,
//! each question's round trip timed from the client. The parse, the store reads, the live
//! diagnosis (where a question needs one) and HTTP with authentication are all inside the
//! figure; client and server share this machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use espwatch_core::diagnostics::{Diagnosis, Severity};
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::well::WellMeta;
use espwatch_core::{Condition, Reading, Timestamp, WellId};
use espwatch_store::{AlarmStore, AppendOptions, EmbeddedOptions, EmbeddedStore, NewAlarm, Store};

use super::{Latencies, TestServer, client, ms, synthetic};

#[derive(Args, Debug)]
pub struct AskArgs {
    /// Registered wells (`ASK-0001`…, named "Site N", 50 per pad).
    #[arg(long, default_value_t = 1_000)]
    pub wells: usize,
    /// Hours of readings per well, ending now.
    #[arg(long, default_value_t = 24)]
    pub hours: u32,
    /// Time between one well's readings.
    #[arg(long, default_value = "5m")]
    pub interval: String,
    /// Times the whole question mix is asked (after one untimed warm-up round).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
}

/// The question mix: every intent, one well, a pad and the fleet. `{w}`, `{v}` are wells,
/// `{pad}` a pad of the fleet.
const QUESTIONS: &[&str] = &[
    "what is the motor current of {w} now",
    "PIP on {pad} wells now",
    "average flow of {w} yesterday",
    "max motor temperature of {w} over the last 6 hours",
    "trend of intake pressure of {w} over the last 12 hours",
    "{w} vs {v} motor current today",
    "wells with intake pressure below 1000 psi",
    "wells with average current over 40 A in the last 6 hours",
    "average intake pressure of all wells over the last 12 hours",
    "wells with average intake pressure below 1000 psi today",
    "top 5 wells by motor current",
    "which wells have the highest motor temperature",
    "which wells had a gas lock this week",
    "which wells have an open alarm",
    "what is wrong with {w}",
    "status of {w}",
    "which pumps are stopped",
    "wells with no data for an hour",
];

pub async fn run(args: &AskArgs) -> anyhow::Result<()> {
    let interval = parse_duration_micros(&args.interval).map_err(anyhow::Error::msg)?;
    if args.wells < 2 || args.hours == 0 || interval <= 0 || args.rounds == 0 {
        bail!("--wells must be at least 2; --hours, --interval and --rounds positive");
    }
    let wells = args.wells;
    let steps = (args.hours as i64 * 3_600_000_000 / interval) as u64;
    println!(
        "espwatch-bench ask — {wells} wells × {} h at {}s = {} readings, {} questions × {} rounds",
        args.hours,
        interval as f64 / 1e6,
        steps * wells as u64,
        QUESTIONS.len(),
        args.rounds
    );
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let ids: Vec<WellId> = (1..=wells)
        .map(|w| WellId::parse(&format!("ASK-{w:04}")))
        .collect::<Result<_, _>>()?;
    for (n, id) in ids.iter().enumerate() {
        let mut meta = WellMeta::minimal(id);
        meta.name = Some(format!("Site {}", n + 1));
        meta.field = Some(format!("Pad {}", n / 50 + 1));
        store.create_well(meta).await?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let start = now - steps as i64 * interval;
    let loaded = Instant::now();
    let steps_per_chunk = (20_000 / wells).max(1) as u64;
    let mut step = 0;
    while step < steps {
        let end = (step + steps_per_chunk).min(steps);
        let mut batch = Vec::with_capacity((end - step) as usize * wells);
        for s in step..end {
            for (w, id) in ids.iter().enumerate() {
                batch.push(Reading {
                    well_id: id.clone(),
                    ts: Timestamp(start + (s as i64 + 1) * interval),
                    values: synthetic(w, s),
                });
            }
        }
        store.append(batch, AppendOptions::default()).await?;
        step = end;
    }
    store.checkpoint().await?;
    // One well in twenty has an open alarm (gas lock, raised in the last day), so the alarm
    // and condition questions list something.
    for (n, id) in ids.iter().enumerate().step_by(20) {
        store
            .raise_alarm(NewAlarm {
                well_id: id.clone(),
                condition: Diagnosis::Condition(Condition::GasLock),
                severity: Severity::Critical,
                confidence: 0.9,
                started_at: Timestamp(now - (n as i64 % 20 + 1) * 3_600_000_000),
                detail: serde_json::json!({}),
            })
            .await?;
    }
    println!("loaded in {:.1}s", loaded.elapsed().as_secs_f64());

    let store = Arc::new(store);
    let alarms: Arc<dyn AlarmStore> = store.clone();
    let server = TestServer::start_with_alarms(dir, store, None, Some(alarms)).await?;
    let http = client()?;
    let url = server.url("/api/v1/ask");
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut per_question: Vec<Latencies> = QUESTIONS.iter().map(|_| Latencies::default()).collect();
    let mut all = Latencies::default();
    for round in 0..=args.rounds {
        for (k, template) in QUESTIONS.iter().enumerate() {
            let w = next(wells);
            let v = (w + 1 + next(wells - 1)) % wells;
            let question = template
                .replace("{w}", ids[w].as_str())
                .replace("{v}", ids[v].as_str())
                .replace("{pad}", &format!("pad {}", w / 50 + 1));
            let t = Instant::now();
            let response = http
                .post(&url)
                .json(&serde_json::json!({ "question": question }))
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            let took = t.elapsed();
            if !status.is_success() {
                bail!("{question:?} failed ({status}): {body}");
            }
            if round > 0 {
                per_question[k].0.push(took);
                all.0.push(took);
            }
        }
    }
    server.stop().await.context("stopping the server")?;
    println!("{:<62} {:>10} {:>10}", "question", "p50", "p95");
    for (template, lat) in QUESTIONS.iter().zip(per_question.iter_mut()) {
        println!(
            "{template:<62} {:>10} {:>10}",
            ms(lat.percentile(50.0)),
            ms(lat.percentile(95.0))
        );
    }
    let p95 = all.percentile(95.0);
    println!(
        "all {} questions: p50 {}  p95 {}  max {}  (goal: p95 < 50 ms)",
        all.0.len(),
        ms(all.percentile(50.0)),
        ms(p95),
        ms(all.percentile(100.0))
    );
    if p95 > Duration::from_millis(50) {
        println!("p95 is above the 50 ms goal");
    }
    Ok(())
}
