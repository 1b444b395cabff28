//! `espwatch eval --families ...`: generates a fleet per model family, diagnoses every well in
//! process with the same engine as `espwatch diagnose` (readings handed over directly, no CSV
//! round trip) and scores it, so tuned families and the never-tuned `holdout` are compared in
//! one command.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use espwatch_core::Timestamp;
use espwatch_core::diagnostics::eval::{EvalDetail, EvalReport, Interval, detail, evaluate};
use espwatch_core::diagnostics::{ThresholdSet, TrainingWindow, WellEngine};
use espwatch_core::sim::{Family, FleetConfig, WellSimulator, plan_fleet};
use serde_json::{Value, json};

/// Start of every harness fleet (as `espwatch simulate` files).
const START: &str = "2026-01-01T00:00:00Z";

/// One family's result.
pub struct FamilyResult {
    pub family: Family,
    pub wells: usize,
    pub readings: u64,
    pub secs: f64,
    pub report: EvalReport,
    pub detail: EvalDetail,
}

pub struct HarnessConfig<'a> {
    pub families: &'a [Family],
    pub wells: usize,
    pub duration_micros: i64,
    /// One fleet per seed and family, pooled into one score per family (well ids prefixed
    /// `<seed>/` when there are several).
    pub seeds: &'a [u64],
    /// [`FleetConfig::condition_rounds`].
    pub rounds: usize,
    pub threads: usize,
    pub max_delay_micros: i64,
    /// Events below this confidence are left out of the scores.
    pub min_confidence: f64,
    pub thresholds: &'a ThresholdSet,
}

pub fn run(cfg: &HarnessConfig) -> anyhow::Result<Vec<FamilyResult>> {
    cfg.families.iter().map(|f| run_family(cfg, *f)).collect()
}

struct WellOutcome {
    events: Vec<(Interval, f64)>,
    operations: Vec<Interval>,
    coverage: Option<(i64, i64)>,
    readings: u64,
}

/// Labels, events (with confidences), operations and observed spans of one or more fleets.
#[derive(Default)]
struct Pool {
    labels: Vec<Interval>,
    events: Vec<Interval>,
    confidences: Vec<f64>,
    operations: Vec<Interval>,
    coverage: std::collections::BTreeMap<String, (i64, i64)>,
    readings: u64,
    wells: usize,
}

fn run_family(cfg: &HarnessConfig, family: Family) -> anyhow::Result<FamilyResult> {
    let started = Instant::now();
    let mut pool = Pool::default();
    for &seed in cfg.seeds {
        let prefix = if cfg.seeds.len() > 1 {
            format!("{seed}/")
        } else {
            String::new()
        };
        simulate_and_diagnose(cfg, family, seed, &prefix, &mut pool)?;
    }
    let report = evaluate(
        &pool.labels,
        &pool.events,
        cfg.max_delay_micros,
        &pool.coverage,
    );
    let detail = detail(
        &pool.labels,
        &pool.events,
        &pool.confidences,
        &pool.operations,
        cfg.max_delay_micros,
    );
    Ok(FamilyResult {
        family,
        wells: pool.wells,
        readings: pool.readings,
        secs: started.elapsed().as_secs_f64(),
        report,
        detail,
    })
}

fn simulate_and_diagnose(
    cfg: &HarnessConfig,
    family: Family,
    seed: u64,
    prefix: &str,
    pool: &mut Pool,
) -> anyhow::Result<()> {
    let start = Timestamp::parse_rfc3339(START).expect("constant");
    let mut config = FleetConfig::new(seed, cfg.wells, start, cfg.duration_micros);
    config.family = family;
    config.interval_from_family = true;
    config.condition_rounds = cfg.rounds;
    let plan = plan_fleet(&config)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("planning the {family} fleet"))?;
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(usize, WellOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..cfg.threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(well) = plan.wells.get(i) else {
                            return Ok(());
                        };
                        let th = cfg
                            .thresholds
                            .for_well(well.id.as_str())
                            .map_err(anyhow::Error::msg)?;
                        let mut engine =
                            WellEngine::new(Some(&well.meta), th, TrainingWindow::Default);
                        let mut sim = WellSimulator::new(well, start, cfg.duration_micros);
                        let id = format!("{prefix}{}", well.id);
                        let at = |s: f64| start.0 + (s * 1e6) as i64;
                        let operations = sim
                            .operations()
                            .into_iter()
                            .map(|o| Interval {
                                well_id: id.clone(),
                                start: at(o.start_s),
                                end: at(o.end_s),
                                name: o.kind.name().to_owned(),
                            })
                            .collect();
                        let mut out = WellOutcome {
                            events: Vec::new(),
                            operations,
                            coverage: None,
                            readings: 0,
                        };
                        let mut episodes = Vec::new();
                        while let Some(sample) = sim.next_sample() {
                            let Some(values) = sample.measured else {
                                continue;
                            };
                            if engine.last_ts().is_some_and(|t| sample.ts <= t) {
                                continue;
                            }
                            let step = engine.push(sample.ts, &values);
                            episodes.extend(step.transitions.closed);
                            out.readings += 1;
                            let c = out.coverage.get_or_insert((sample.ts.0, sample.ts.0));
                            c.1 = sample.ts.0;
                        }
                        episodes.extend(engine.finish());
                        out.events = episodes
                            .into_iter()
                            .map(|e| {
                                (
                                    Interval {
                                        well_id: id.clone(),
                                        start: e.start.0,
                                        end: e.end.unwrap_or(e.start).0,
                                        name: e.diagnosis.name().to_owned(),
                                    },
                                    e.confidence,
                                )
                            })
                            .collect();
                        outcomes.lock().expect("not poisoned").push((i, out));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a harness worker panicked")))?;
        }
        Ok(())
    })?;
    let mut outcomes = outcomes.into_inner().expect("not poisoned");
    outcomes.sort_by_key(|(i, _)| *i);
    pool.labels
        .extend(plan.labels().into_iter().map(|l| Interval {
            well_id: format!("{prefix}{}", l.well_id),
            start: l.start.0,
            end: l.end.0,
            name: l.condition.name().to_owned(),
        }));
    for (i, o) in outcomes {
        for (e, c) in o
            .events
            .into_iter()
            .filter(|(_, c)| *c >= cfg.min_confidence)
        {
            pool.events.push(e);
            pool.confidences.push(c);
        }
        pool.operations.extend(o.operations);
        if let Some(span) = o.coverage {
            pool.coverage
                .insert(format!("{prefix}{}", plan.wells[i].id), span);
        }
        pool.readings += o.readings;
    }
    pool.wells += plan.wells.len();
    Ok(())
}

fn fmt_opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{:.*}", digits, v / scale))
}

/// The cross-family table: one row per family, the held-out family marked.
pub fn print_table(results: &[FamilyResult]) {
    println!(
        "{:<9} {:>8} {:>5} {:>9} {:>12} {:>15} {:>13} {:>15} {:>17} {:>13}",
        "family",
        "tuned",
        "wells",
        "readings",
        "macro_recall",
        "macro_precision",
        "fa_per_wellday",
        "abrupt_delay_min",
        "abrupt_median_min",
        "prec_conf≥0.8"
    );
    for r in results {
        println!(
            "{:<9} {:>8} {:>5} {:>9} {:>12.3} {:>15.3} {:>13.3} {:>15} {:>17} {:>13}",
            r.family.name(),
            if r.family.is_held_out() {
                "NEVER"
            } else {
                "yes"
            },
            r.wells,
            r.readings,
            r.report.macro_recall(),
            r.report.macro_precision(),
            r.report.false_alarms_per_well_day(),
            fmt_opt(r.report.abrupt_mean_delay_s(), 60.0, 1),
            fmt_opt(r.detail.abrupt_median_delay_s, 60.0, 1),
            match r.detail.high_confidence.precision() {
                Some(p) => format!("{p:.2} ({})", r.detail.high_confidence.events),
                None => "- (0)".to_owned(),
            },
        );
    }
}

/// Per-condition recall and precision across families (`recall/precision`, `-` where the
/// family had no label or no event of it).
pub fn print_condition_table(results: &[FamilyResult]) {
    let mut names: Vec<&str> = results
        .iter()
        .flat_map(|r| r.report.per_condition.iter().map(|c| c.condition.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    print!("{:<18}", "recall/precision");
    for r in results {
        print!(" {:>13}", r.family.name());
    }
    println!();
    for n in names {
        print!("{n:<18}");
        for r in results {
            let cell = r
                .report
                .per_condition
                .iter()
                .find(|c| c.condition == n)
                .map_or("-".to_owned(), |c| {
                    format!(
                        "{}/{}",
                        fmt_opt(c.recall(), 1.0, 2),
                        fmt_opt(c.precision(), 1.0, 2)
                    )
                });
            print!(" {cell:>13}");
        }
        println!();
    }
}

pub fn to_json(results: &[FamilyResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|r| {
                let mut v = report_json(&r.report, &r.detail);
                if let Value::Object(m) = &mut v {
                    m.insert("family".into(), json!(r.family.name()));
                    m.insert("held_out".into(), json!(r.family.is_held_out()));
                    m.insert("wells".into(), json!(r.wells));
                    m.insert("readings".into(), json!(r.readings));
                    m.insert("seconds".into(), json!(r.secs));
                }
                v
            })
            .collect(),
    )
}

/// The JSON form of one evaluation (per condition, macro figures, bands, confusion, false
/// alarms by operation).
pub fn report_json(report: &EvalReport, detail: &EvalDetail) -> serde_json::Value {
    let per_condition: Vec<serde_json::Value> = report
        .per_condition
        .iter()
        .map(|c| {
            serde_json::json!({
                "condition": c.condition,
                "labels": c.labels,
                "detected": c.detected,
                "recall": c.recall(),
                "events": c.events,
                "correct_events": c.correct_events,
                "precision": c.precision(),
                "misclassified": c.misclassified,
                "confused_with": c.confused_with,
                "mean_delay_s": c.mean_delay_s,
            })
        })
        .collect();
    let bands: Vec<serde_json::Value> = detail
        .bands
        .iter()
        .map(|b| {
            serde_json::json!({
                "lo": b.lo,
                "hi": b.hi,
                "events": b.events,
                "correct": b.correct,
                "precision": b.precision(),
            })
        })
        .collect();
    serde_json::json!({
        "per_condition": per_condition,
        "macro_recall": report.macro_recall(),
        "macro_precision": report.macro_precision(),
        "false_alarms": report.false_alarms,
        "unlabelled_well_days": report.unlabelled_well_days,
        "false_alarms_per_well_day": report.false_alarms_per_well_day(),
        "anomaly_events": report.anomaly_events,
        "abrupt_mean_delay_s": report.abrupt_mean_delay_s(),
        "abrupt_median_delay_s": detail.abrupt_median_delay_s,
        "confidence_bands": bands,
        "high_confidence": {
            "events": detail.high_confidence.events,
            "correct": detail.high_confidence.correct,
            "precision": detail.high_confidence.precision(),
        },
        "confusion": detail.confusion,
        "false_alarms_by_operation": detail.false_alarms_by_operation,
        "operations": detail.operations,
    })
}
