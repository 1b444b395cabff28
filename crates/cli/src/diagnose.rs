//! `espwatch diagnose` (offline backtesting: the same engine as the server, over CSV files) and
//! `espwatch eval` (scores diagnosed episodes against labels).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use espwatch_core::diagnostics::eval::{EvalDetail, EvalReport, Interval, detail, evaluate};
use espwatch_core::diagnostics::{Episode, ThresholdSet, TrainingWindow, WellEngine};
use espwatch_core::duration::parse_duration_micros;
use espwatch_core::sim::Family;
use espwatch_core::sim::csv::{write_fixed, write_timestamp};
use espwatch_core::{Reading, Timestamp, WellDocument, WellId, WellMeta};
use indicatif::{ProgressBar, ProgressStyle};

use crate::timeline;

#[derive(Args, Debug, Clone)]
#[command(
    about = "Diagnose wells offline from CSV telemetry: episodes to EVENTS.csv, anomaly scores to SCORES.csv",
    long_about = "Runs the diagnostics engine (the same code as the server) over canonical CSV files \
(one or many wells per file, each well's rows in time order). Each well learns its healthy baseline \
from its first hours of data (--train-readings / --train-until to choose), then every reading is \
diagnosed. EVENTS.csv: well_id,start,end,condition,confidence, one row per diagnosed episode. \
SCORES.csv: well_id,ts,anomaly_score,anomaly for every input reading (anomaly is 0 during training)."
)]
pub struct DiagnoseArgs {
    /// Canonical CSV telemetry files.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub input: Vec<PathBuf>,
    /// Directory of wells-registry JSON files (one well per file): pump curve, motor, fluid.
    #[arg(long, value_name = "DIR")]
    pub wells: Option<PathBuf>,
    /// Each well's first N readings are its healthy baseline.
    #[arg(long, value_name = "N", conflicts_with = "train_until")]
    pub train_readings: Option<u64>,
    /// Readings before this time (RFC 3339) are the healthy baseline.
    #[arg(long, value_name = "TS")]
    pub train_until: Option<String>,
    /// Output: one row per diagnosed episode.
    #[arg(long, value_name = "EVENTS.csv")]
    pub events_out: PathBuf,
    /// Output: the anomaly score of every reading.
    #[arg(long, value_name = "SCORES.csv")]
    pub scores_out: Option<PathBuf>,
    /// Thresholds as JSON: {"global": {...}, "wells": {"WELL-1": {...}}}.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write every reading's features and findings for this well to --trace-out (tuning aid).
    #[arg(long, hide = true, requires = "trace_out")]
    pub trace_well: Option<String>,
    #[arg(long, hide = true)]
    pub trace_out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
#[command(
    about = "Score diagnosed episodes (EVENTS.csv) against ground-truth labels (labels.csv), or \
generate, diagnose and score several model families in one go (--families)",
    long_about = "Scores diagnosed episodes against labels: recall, precision, misclassification and \
delay per condition, precision by confidence band, the confusion table (true condition × reported \
diagnosis), false alarms per well-day split by the normal operation they happened during \
(operations.csv next to the labels, as `espwatch simulate` writes).\n\nWith --families, simulates \
a fleet per model family (--wells, --duration, --seed; each family's own sampling rates), runs \
the diagnostics engine on it in process and prints each family's scores and the cross-family \
table. The blind family is the one the engine is never tuned on (holdout was, until it was spent)."
)]
pub struct EvalArgs {
    /// Labels: well_id,file,start,end,condition (as `espwatch simulate` writes).
    #[arg(long, value_name = "labels.csv", required_unless_present = "families")]
    pub labels: Option<PathBuf>,
    /// Events: well_id,start,end,condition,confidence (as `espwatch diagnose` writes).
    #[arg(long, value_name = "EVENTS.csv", required_unless_present_any = ["families", "scores"])]
    pub events: Option<PathBuf>,
    /// Score the per-reading anomaly flag of SCORES.csv (as `espwatch diagnose` writes)
    /// pointwise against the labels: readings inside a label window are faulty, the others
    /// normal; training readings (score 0) are left out.
    #[arg(long, value_name = "SCORES.csv", conflicts_with = "families")]
    pub scores: Option<PathBuf>,
    /// Normal operations: well_id,start,end,operation. Default: operations.csv next to the labels
    /// when present.
    #[arg(long, value_name = "operations.csv")]
    pub operations: Option<PathBuf>,
    /// How long after a label ends an event still counts as detecting it.
    #[arg(long, default_value = "60m")]
    pub max_delay: String,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Score only events at or above this confidence (what an alarm policy with that floor
    /// would show an operator).
    #[arg(long, default_value_t = 0.0)]
    pub min_confidence: f64,
    /// Simulate, diagnose and score these model families, e.g. classic,field,pipctl,holdout.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["labels", "events"])]
    pub families: Option<String>,
    /// Wells per family (with --families).
    #[arg(long, default_value_t = 12)]
    pub wells: usize,
    /// Simulated span per family (with --families).
    #[arg(long, default_value = "8d")]
    pub duration: String,
    /// Seed of the families' fleets (with --families); several (1,2,3) pool one fleet per seed
    /// into each family's score.
    #[arg(long, default_value = "1")]
    pub seed: String,
    /// Times each condition is placed in each family's fleet (with --families; more labels
    /// per condition, steadier figures).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Worker threads (with --families; default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Thresholds JSON as for `espwatch diagnose` (with --families).
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
}

type Batch = Vec<Reading>;

/// A worker's anomaly scores: each well's lines go to the worker's part file in segments, so
/// that SCORES.csv can be assembled well by well in a fixed order however the threads ran.
#[derive(Default)]
struct WellScores {
    buf: Vec<u8>,
    segments: Vec<(u64, u64)>,
}

struct ScoresPart {
    path: PathBuf,
    file: BufWriter<fs::File>,
    written: u64,
    wells: HashMap<WellId, WellScores>,
}

impl ScoresPart {
    const SEGMENT: usize = 1 << 16;

    fn flush_well(&mut self, well: &WellId) -> std::io::Result<()> {
        if let Some(s) = self.wells.get_mut(well)
            && !s.buf.is_empty()
        {
            self.file.write_all(&s.buf)?;
            s.segments.push((self.written, s.buf.len() as u64));
            self.written += s.buf.len() as u64;
            s.buf.clear();
        }
        Ok(())
    }
}

struct WorkerResult {
    events: Vec<(WellId, Episode)>,
    readings: u64,
    out_of_order: u64,
    scores: Option<ScoresFile>,
}

/// A worker's part file of scores and, per well, its segments (offset, length) in order.
type ScoresFile = (PathBuf, HashMap<WellId, Vec<(u64, u64)>>);

fn load_thresholds(path: Option<&Path>) -> anyhow::Result<ThresholdSet> {
    Ok(match path {
        Some(path) => {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let set: ThresholdSet = serde_json::from_str(&text)
                .with_context(|| format!("parsing thresholds {}", path.display()))?;
            set.validate().map_err(anyhow::Error::msg)?;
            set
        }
        None => ThresholdSet::default(),
    })
}

pub fn run_diagnose(args: &DiagnoseArgs) -> anyhow::Result<()> {
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let window = match (&args.train_readings, &args.train_until) {
        (Some(n), _) => TrainingWindow::Readings(*n),
        (None, Some(ts)) => {
            TrainingWindow::Until(Timestamp::parse_rfc3339(ts).context("--train-until")?)
        }
        (None, None) => TrainingWindow::Default,
    };
    let metas = match &args.wells {
        Some(dir) => load_wells(dir)?,
        None => HashMap::new(),
    };
    for p in &args.input {
        if !p.is_file() {
            bail!("input {} is not a file", p.display());
        }
    }
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let started = Instant::now();
    // Which wells and spans each file holds, so that a well's files are read in time order.
    let spans = timeline::scan(&args.input, threads)?;
    let groups = timeline::groups(&spans);
    let rejected = AtomicU64::new(0);
    let total_bytes: u64 = args
        .input
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "diagnosing [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    let next_group = AtomicUsize::new(0);
    let scores_dir = args
        .scores_out
        .as_ref()
        .map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default());

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::sync_channel::<Batch>(16))
        .unzip();
    let results: anyhow::Result<Vec<WorkerResult>> = std::thread::scope(|scope| {
        let workers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(k, rx)| {
                let metas = &metas;
                let thresholds = &thresholds;
                let scores_dir = scores_dir.clone();
                let scores_out = args.scores_out.clone();
                scope.spawn(move || -> anyhow::Result<WorkerResult> {
                    let mut scores = match (&scores_out, &scores_dir) {
                        (Some(out), Some(dir)) => {
                            let path = dir.join(format!(
                                ".{}.part{k}",
                                out.file_name().and_then(|n| n.to_str()).unwrap_or("scores")
                            ));
                            let f = fs::File::create(&path)
                                .with_context(|| format!("creating {}", path.display()))?;
                            Some(ScoresPart {
                                path,
                                file: BufWriter::with_capacity(1 << 20, f),
                                written: 0,
                                wells: HashMap::new(),
                            })
                        }
                        _ => None,
                    };
                    let mut engines: HashMap<WellId, WellEngine> = HashMap::new();
                    let mut trace = match (&args.trace_well, &args.trace_out) {
                        (Some(w), Some(p)) => {
                            let mut f = BufWriter::new(fs::File::create(p.with_extension(format!("{k}.csv")))?);
                            writeln!(f, "ts,running,freq,cur,pip,pd,thp,flow,head,vib,rise,vhz,gor,score,findings")?;
                            Some((w.clone(), f))
                        }
                        _ => None,
                    };
                    let mut res = WorkerResult {
                        events: Vec::new(),
                        readings: 0,
                        out_of_order: 0,
                        scores: None,
                    };
                    for batch in rx {
                        for r in batch {
                            let engine = match engines.get_mut(&r.well_id) {
                                Some(e) => e,
                                None => {
                                    let th = thresholds
                                        .for_well(r.well_id.as_str())
                                        .map_err(anyhow::Error::msg)?;
                                    engines.entry(r.well_id.clone()).or_insert_with(|| {
                                        WellEngine::new(metas.get(&r.well_id), th, window)
                                    })
                                }
                            };
                            if engine.last_ts().is_some_and(|t| r.ts <= t) {
                                res.out_of_order += 1;
                                continue;
                            }
                            let out = engine.push(r.ts, &r.values);
                            if let Some((_, t)) = trace
                                .as_mut()
                                .filter(|(w, _)| w.as_str() == r.well_id.as_str())
                            {
                                write_trace(t, r.ts.0, engine, &out)?;
                            }
                            res.readings += 1;
                            for e in out.transitions.closed {
                                res.events.push((r.well_id.clone(), e));
                            }
                            if let Some(part) = &mut scores {
                                let well = part.wells.entry(r.well_id.clone()).or_default();
                                let buf = &mut well.buf;
                                buf.extend_from_slice(r.well_id.as_str().as_bytes());
                                buf.push(b',');
                                write_timestamp(buf, r.ts);
                                buf.push(b',');
                                write_fixed(buf, out.anomaly_score, 4);
                                buf.extend_from_slice(if out.anomaly { b",1\n" } else { b",0\n" });
                                if buf.len() >= ScoresPart::SEGMENT {
                                    part.flush_well(&r.well_id)?;
                                }
                            }
                        }
                    }
                    for (id, engine) in engines.iter_mut() {
                        for e in engine.finish() {
                            res.events.push((id.clone(), e));
                        }
                    }
                    if let Some((_, t)) = trace.as_mut() {
                        t.flush()?;
                    }
                    if let Some(mut part) = scores {
                        let wells: Vec<WellId> = part.wells.keys().cloned().collect();
                        for w in &wells {
                            part.flush_well(w)?;
                        }
                        part.file.flush()?;
                        let segments = part
                            .wells
                            .into_iter()
                            .map(|(w, s)| (w, s.segments))
                            .collect();
                        res.scores = Some((part.path, segments));
                    }
                    Ok(res)
                })
            })
            .collect();

        // One reader per group of files at a time: a well's readings come from one thread, in
        // time order.
        let readers: Vec<_> = (0..threads.min(groups.len()))
            .map(|_| {
                let senders = senders.clone();
                let (bar, next_group, groups, spans, rejected) =
                    (&bar, &next_group, &groups, &spans, &rejected);
                scope.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next_group.fetch_add(1, Ordering::Relaxed);
                        let Some(group) = groups.get(i) else {
                            return Ok(());
                        };
                        let bad = read_group(&args.input, spans, group, &senders, bar)?;
                        rejected.fetch_add(bad, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        drop(senders);
        let mut first_error = None;
        for r in readers {
            if let Err(e) = r
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reader panicked")))
            {
                first_error.get_or_insert(e);
            }
        }
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect();
        if let Some(e) = first_error {
            return Err(e);
        }
        results.into_iter().collect()
    });
    let results = results?;
    bar.finish_and_clear();

    let mut events: Vec<(WellId, Episode)> = Vec::new();
    let (mut readings, mut out_of_order) = (0, 0);
    let mut parts = Vec::new();
    for r in results {
        events.extend(r.events);
        readings += r.readings;
        out_of_order += r.out_of_order;
        parts.extend(r.scores);
    }
    events.sort_by(|a, b| {
        (a.0.as_str(), a.1.start, a.1.diagnosis.name(), a.1.end).cmp(&(
            b.0.as_str(),
            b.1.start,
            b.1.diagnosis.name(),
            b.1.end,
        ))
    });
    let mut out = Vec::new();
    out.extend_from_slice(b"well_id,start,end,condition,confidence\n");
    for (id, e) in &events {
        out.extend_from_slice(id.as_str().as_bytes());
        out.push(b',');
        write_timestamp(&mut out, e.start);
        out.push(b',');
        write_timestamp(&mut out, e.end.unwrap_or(e.start));
        out.push(b',');
        out.extend_from_slice(e.diagnosis.name().as_bytes());
        out.push(b',');
        write_fixed(&mut out, e.confidence, 2);
        out.push(b'\n');
    }
    fs::write(&args.events_out, out)
        .with_context(|| format!("writing {}", args.events_out.display()))?;
    if let Some(path) = &args.scores_out {
        assemble_scores(path, &parts)?;
    }
    for (part, _) in &parts {
        fs::remove_file(part).ok();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "diagnosed {readings} readings in {secs:.1}s ({:.0} readings/s); {} episodes written to {}{}{}",
        readings as f64 / secs.max(1e-9),
        events.len(),
        args.events_out.display(),
        match rejected.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!("; {n} invalid rows skipped"),
        },
        match out_of_order {
            0 => String::new(),
            n => format!("; {n} out-of-order or repeated readings skipped"),
        },
    );
    Ok(())
}

/// SCORES.csv: wells in name order, each well's readings in time order.
fn assemble_scores(path: &Path, parts: &[ScoresFile]) -> anyhow::Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(b"well_id,ts,anomaly_score,anomaly\n")?;
    let mut files = Vec::new();
    let mut wells: Vec<(&WellId, usize)> = Vec::new();
    for (k, (part, segs)) in parts.iter().enumerate() {
        files.push(fs::File::open(part).with_context(|| format!("opening {}", part.display()))?);
        wells.extend(segs.keys().map(|well| (well, k)));
    }
    wells.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut buf = Vec::new();
    for (well, k) in wells {
        for &(offset, len) in &parts[k].1[well] {
            buf.resize(len as usize, 0);
            files[k].seek(SeekFrom::Start(offset))?;
            files[k].read_exact(&mut buf)?;
            w.write_all(&buf)?;
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_trace(
    t: &mut impl Write,
    ts: i64,
    engine: &WellEngine,
    out: &espwatch_core::diagnostics::StepOutput,
) -> std::io::Result<()> {
    let f = engine.features();
    let names: Vec<String> = out
        .findings
        .iter()
        .map(|x| {
            let ev: Vec<String> = x
                .evidence
                .iter()
                .map(|e| format!("{}={:?}", e.feature, e.value))
                .collect();
            format!("{}[{}]", x.diagnosis.name(), ev.join(" "))
        })
        .collect();
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    writeln!(
        t,
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{}",
        ts,
        f.running as u8,
        o(f.frequency_hz),
        o(f.current_ratio),
        o(f.intake_pressure_ratio),
        o(f.discharge_pressure_ratio),
        o(f.tubing_pressure_ratio),
        o(f.flow_ratio),
        o(f.head_ratio),
        o(f.vibration_ratio),
        o(f.winding_rise_ratio),
        o(f.volts_per_hz_ratio),
        o(f.gor_ratio),
        out.anomaly_score,
        names.join("|")
    )
}

/// Merges one group of files in time order and sends each reading to the worker that owns its
/// well. Returns the number of invalid rows skipped.
fn read_group(
    paths: &[PathBuf],
    spans: &[timeline::FileSpan],
    group: &[usize],
    senders: &[mpsc::SyncSender<Batch>],
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut merge = timeline::Merge::new(paths, spans, group);
    let mut batches: Vec<Batch> = vec![Vec::new(); senders.len()];
    let mut owner: HashMap<WellId, usize> = HashMap::new();
    let mut reported = 0;
    while let Some(r) = merge.next_reading()? {
        let n = senders.len();
        let k = *owner.entry(r.well_id.clone()).or_insert_with(|| {
            let mut h = DefaultHasher::new();
            r.well_id.hash(&mut h);
            (h.finish() % n as u64) as usize
        });
        batches[k].push(r);
        if batches[k].len() >= 4096 {
            senders[k]
                .send(std::mem::take(&mut batches[k]))
                .map_err(|_| anyhow::anyhow!("a worker stopped"))?;
            bar.inc(merge.bytes - reported);
            reported = merge.bytes;
        }
    }
    for (k, b) in batches.into_iter().enumerate() {
        if !b.is_empty() {
            senders[k]
                .send(b)
                .map_err(|_| anyhow::anyhow!("a worker stopped"))?;
        }
    }
    bar.inc(merge.bytes - reported);
    Ok(merge.rejected)
}

fn load_wells(dir: &Path) -> anyhow::Result<HashMap<WellId, WellMeta>> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        let document: WellDocument =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let meta = document.validate().map_err(|problems| {
            anyhow::anyhow!(
                "{}: invalid well: {}",
                path.display(),
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        out.insert(meta.well_id.clone(), meta);
    }
    Ok(out)
}

fn read_intervals(path: &Path, well_col: &str, name_col: &str) -> anyhow::Result<Vec<Interval>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no `{name}` column", path.display()))
    };
    let (w, s, e, n) = (col(well_col)?, col("start")?, col("end")?, col(name_col)?);
    let mut out = Vec::new();
    for (line, row) in reader.records().enumerate() {
        let row = row?;
        let ts = |i: usize| {
            Timestamp::parse_rfc3339(row.get(i).unwrap_or(""))
                .map(|t| t.0)
                .with_context(|| format!("{} row {}", path.display(), line + 2))
        };
        out.push(Interval {
            well_id: row.get(w).unwrap_or("").to_owned(),
            start: ts(s)?,
            end: ts(e)?,
            name: row.get(n).unwrap_or("").to_owned(),
        });
    }
    Ok(out)
}

/// Observed span of each well across every telemetry CSV next to the labels file (a well
/// exported as one file per day spans all its days). A file of one well is read at its first
/// and last row; a file of several wells is scanned.
fn coverage_near(labels: &Path) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    // `labels.csv` (a bare name) has the empty path as parent, which read_dir refuses.
    let dir = labels
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("csv") && p != labels)
        .collect();
    paths.sort();
    let mut widen = |well: String, first: i64, last: i64| {
        let e = out.entry(well).or_insert((first, last));
        e.0 = e.0.min(first);
        e.1 = e.1.max(last);
    };
    for path in paths {
        match first_and_last_row(&path) {
            Some(Span::OneWell(well, first, last)) => widen(well, first, last),
            Some(Span::SeveralWells) => {
                let spans = timeline::scan(std::slice::from_ref(&path), 1)?;
                for (well, (first, last)) in &spans[0].wells {
                    widen(well.as_str().to_owned(), *first, *last);
                }
            }
            None => {}
        }
    }
    Ok(out)
}

enum Span {
    OneWell(String, i64, i64),
    SeveralWells,
}

fn first_and_last_row(path: &Path) -> Option<Span> {
    let mut f = fs::File::open(path).ok()?;
    let mut head = vec![0u8; 4096];
    let n = f.read(&mut head).ok()?;
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    let mut lines = head.lines();
    let header = lines.next()?;
    if !header.starts_with("well_id,ts") {
        return None;
    }
    let parse = |line: &str| -> Option<(String, i64)> {
        let mut cells = line.split(',');
        let well = cells.next()?.to_owned();
        let ts = Timestamp::parse_rfc3339(cells.next()?).ok()?;
        Some((well, ts.0))
    };
    let (well, first) = parse(lines.next()?)?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail).into_owned();
    let (last_well, last) = parse(tail.lines().rev().find(|l| !l.trim().is_empty())?)?;
    Some(if last_well == well {
        Span::OneWell(well, first, last)
    } else {
        Span::SeveralWells
    })
}

/// Confidence column of an events file (0 where absent), in row order.
fn read_confidences(path: &Path) -> anyhow::Result<Vec<f64>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let col = reader.headers()?.iter().position(|h| h == "confidence");
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row?;
        out.push(
            col.and_then(|c| row.get(c))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        );
    }
    Ok(out)
}

pub fn run_eval(args: &EvalArgs) -> anyhow::Result<()> {
    let max_delay = parse_duration_micros(&args.max_delay).map_err(anyhow::Error::msg)?;
    if let Some(list) = &args.families {
        return run_families(args, list, max_delay);
    }
    if let (Some(labels_path), Some(scores_path)) = (&args.labels, &args.scores) {
        let labels = read_intervals(labels_path, "well_id", "condition")?;
        return run_pointwise(&labels, scores_path, args.json);
    }
    let (Some(labels_path), Some(events_path)) = (&args.labels, &args.events) else {
        bail!("give --labels and --events, or --families");
    };
    let labels = read_intervals(labels_path, "well_id", "condition")?;
    let events = read_intervals(events_path, "well_id", "condition")?;
    let confidences = read_confidences(events_path)?;
    let (events, confidences): (Vec<Interval>, Vec<f64>) = events
        .into_iter()
        .zip(confidences)
        .filter(|(_, c)| *c >= args.min_confidence)
        .unzip();
    let ops_path = match &args.operations {
        Some(p) => Some(p.clone()),
        None => Some(labels_path.with_file_name("operations.csv")).filter(|p| p.is_file()),
    };
    let operations = match &ops_path {
        Some(p) => read_intervals(p, "well_id", "operation")?,
        None => Vec::new(),
    };
    let coverage = coverage_near(labels_path)?;
    let report = evaluate(&labels, &events, max_delay, &coverage);
    let detail = detail(&labels, &events, &confidences, &operations, max_delay);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::families::report_json(&report, &detail))?
        );
    } else {
        print_report(&report, &detail);
    }
    Ok(())
}

/// Pointwise F1 and false-alarm rate of the per-reading anomaly flag.
fn run_pointwise(labels: &[Interval], scores: &Path, json: bool) -> anyhow::Result<()> {
    let index = espwatch_core::diagnostics::eval::LabelIndex::new(labels);
    let mut report = espwatch_core::diagnostics::eval::PointwiseReport::default();
    let mut reader =
        csv::Reader::from_path(scores).with_context(|| format!("opening {}", scores.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no `{name}` column", scores.display()))
    };
    let (w, t, sc, fl) = (
        col("well_id")?,
        col("ts")?,
        col("anomaly_score")?,
        col("anomaly")?,
    );
    let mut record = csv::StringRecord::new();
    let mut line = 1;
    while reader.read_record(&mut record)? {
        line += 1;
        let score: f64 = record
            .get(sc)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{} line {line}: anomaly_score", scores.display()))?;
        if score == 0.0 {
            continue;
        }
        let ts = Timestamp::parse_rfc3339(record.get(t).unwrap_or(""))
            .with_context(|| format!("{} line {line}: ts", scores.display()))?;
        let flagged = record.get(fl) == Some("1");
        index.score(&mut report, record.get(w).unwrap_or(""), ts.0, flagged);
    }
    if json {
        let v = serde_json::json!({
            "normal_readings": report.normal,
            "normal_flagged": report.normal_flagged,
            "false_alarm_rate": report.false_alarm_rate(),
            "faulty_readings": report.faulty,
            "faulty_flagged": report.faulty_flagged,
            "recall": report.recall(),
            "precision": report.precision(),
            "f1": report.f1(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "pointwise anomaly flag: {} normal readings, {:.2} % flagged; {} faulty readings, recall {:.3}, precision {:.3}, F1 {:.3}",
            report.normal,
            100.0 * report.false_alarm_rate(),
            report.faulty,
            report.recall(),
            report.precision(),
            report.f1()
        );
    }
    Ok(())
}

fn run_families(args: &EvalArgs, list: &str, max_delay: i64) -> anyhow::Result<()> {
    let families = list
        .split(',')
        .map(|f| f.parse::<Family>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let duration = parse_duration_micros(&args.duration).map_err(anyhow::Error::msg)?;
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let seeds = args
        .seed
        .split(',')
        .map(|s| s.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--seed {:?}: a number or a comma-separated list", args.seed))?;
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let results = crate::families::run(&crate::families::HarnessConfig {
        families: &families,
        wells: args.wells,
        duration_micros: duration,
        seeds: &seeds,
        rounds: args.rounds.max(1),
        threads,
        max_delay_micros: max_delay,
        min_confidence: args.min_confidence,
        thresholds: &thresholds,
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&crate::families::to_json(&results))?
        );
        return Ok(());
    }
    for r in &results {
        println!(
            "== family {}{}: {} wells, {} readings, {:.1}s",
            r.family,
            if r.family.is_held_out() {
                " (never tuned on)"
            } else {
                ""
            },
            r.wells,
            r.readings,
            r.secs
        );
        print_report(&r.report, &r.detail);
        println!();
    }
    println!(
        "cross-family (seed {}, {} wells x {} per family, {} condition rounds, max delay {}):",
        args.seed, args.wells, args.duration, args.rounds, args.max_delay
    );
    crate::families::print_table(&results);
    println!();
    crate::families::print_condition_table(&results);
    Ok(())
}

fn print_report(report: &EvalReport, detail: &EvalDetail) {
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}", v));
    println!(
        "{:<18} {:>6} {:>8} {:>6} {:>6} {:>9} {:>13} {:>10}",
        "condition",
        "labels",
        "detected",
        "recall",
        "events",
        "precision",
        "misclassified",
        "delay_min"
    );
    for c in &report.per_condition {
        let confused = if c.confused_with.is_empty() {
            String::new()
        } else {
            format!(
                "  (as {})",
                c.confused_with
                    .iter()
                    .map(|(k, v)| format!("{k}×{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        println!(
            "{:<18} {:>6} {:>8} {:>6} {:>6} {:>9} {:>13} {:>10}{}",
            c.condition,
            c.labels,
            c.detected,
            pct(c.recall()),
            c.events,
            pct(c.precision()),
            c.misclassified,
            c.mean_delay_s
                .map_or("-".to_owned(), |d| format!("{:.1}", d / 60.0)),
            confused
        );
    }
    println!(
        "false alarms: {} events on {:.1} unlabelled well-days = {:.3} per well-day ({} anomaly events in all)",
        report.false_alarms,
        report.unlabelled_well_days,
        report.false_alarms_per_well_day(),
        report.anomaly_events
    );
    println!(
        "macro: recall {:.3} precision {:.3} false_alarms_per_well_day {:.3} abrupt_mean_delay_min {}",
        report.macro_recall(),
        report.macro_precision(),
        report.false_alarms_per_well_day(),
        report
            .abrupt_mean_delay_s()
            .map_or("-".to_owned(), |d| format!("{:.1}", d / 60.0))
    );
    println!("precision by confidence band:");
    for b in &detail.bands {
        println!(
            "  [{:.1}, {:.1}{} {:>5} events, precision {}",
            b.lo,
            b.hi,
            if b.hi >= 1.0 { "]" } else { ")" },
            b.events,
            pct(b.precision())
        );
    }
    println!(
        "  confidence >= 0.8: {} events, precision {}",
        detail.high_confidence.events,
        pct(detail.high_confidence.precision())
    );
    let mut columns: Vec<&str> = detail
        .confusion
        .values()
        .flat_map(|row| row.keys().map(String::as_str))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    println!("confusion (rows: true condition; columns: reported diagnosis):");
    let short = |s: &str| s.chars().take(10).collect::<String>();
    print!("  {:<18}", "");
    for c in &columns {
        print!(" {:>10}", short(c));
    }
    println!();
    for (truth, row) in &detail.confusion {
        print!("  {truth:<18}");
        for c in &columns {
            match row.get(*c) {
                Some(n) => print!(" {n:>10}"),
                None => print!(" {:>10}", "."),
            }
        }
        println!();
    }
    if !detail.false_alarms_by_operation.is_empty() || !detail.operations.is_empty() {
        println!(
            "false alarms by normal operation (per well-day over {:.1} unlabelled well-days):",
            report.unlabelled_well_days
        );
        let mut kinds: Vec<&String> = detail
            .operations
            .keys()
            .chain(detail.false_alarms_by_operation.keys())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            let n = detail
                .false_alarms_by_operation
                .get(k)
                .copied()
                .unwrap_or(0);
            println!(
                "  {:<20} {:>5} false alarms {:>7.3}/well-day  ({} operations)",
                k,
                n,
                n as f64 / report.unlabelled_well_days.max(1e-9),
                detail.operations.get(k).copied().unwrap_or(0)
            );
        }
    }
}
