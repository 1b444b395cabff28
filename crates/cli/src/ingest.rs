//! `espwatch ingest FILE...`: bulk-load CSV/NDJSON history.
//!
//! Files are cut into batches of lines; each batch goes through the same pipeline as
//! `POST /api/v1/telemetry` (locally, or to a server with `--url`) and is committed before the
//! next of its file, so an interrupted load keeps a prefix of every file it started and a
//! re-run skips that as duplicates. The next batch of a file is read and decoded while the
//! previous one commits. Rejected rows go to a rejects file with their file and line
//! number. `--parallel N` loads up to N files at once (each in order); into PostgreSQL the
//! default is one per writer connection, which commit them side by side (the store is opened
//! for a bulk load: an append per transaction, rollups brought up to date once at the end).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use espwatch_app::ingest::{DecodeSlots, DecodedPayload, append_decoded, decode_payload};
use espwatch_app::{Config, IngestReport};
use espwatch_core::Timestamp;
use espwatch_core::access::WellScope;
use espwatch_core::ingest::{CsvDialect, DecodeOptions, PayloadFormat};
use espwatch_core::localtime::UtcOffset;
use espwatch_store::{AppendOptions, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Target;

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// CSV (.csv, header row of canonical names) or NDJSON (.ndjson, .jsonl) files.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    pub target: Target,
    /// Where rejected rows are written (CSV: file,line,well_id,field,reason). Created only
    /// when something is rejected.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "espwatch-ingest.rejects.csv"
    )]
    rejects: PathBuf,
    /// Files loaded at once, each in order, batch after batch (PostgreSQL commits them on
    /// several connections side by side). Which copy of a reading sent twice wins is file
    /// order within a file, commit order across files loaded at once. Default: as many as
    /// the PostgreSQL store has writer connections (`database_writers`, 4) with
    /// --database-url, else 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: Option<u32>,
    /// Readings per batch; each batch is committed before the next one is read.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_size: u32,
    /// Input format for files whose extension does not tell: csv or ndjson.
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    /// The zone of timestamps written without one (historian exports: `2026-11-22 08:01:00`),
    /// as a UTC offset: `+03:00`, `-05:30`, `UTC`; it wins over the wells' registry zones.
    /// Without it such timestamps are read in their well's registry `timezone`, and rejected
    /// for a well without one. Named zones with daylight saving are refused (convert to an offset first).
    #[arg(long, value_name = "OFFSET", value_parser = parse_zone)]
    timezone: Option<UtcOffset>,
    /// CSV cell separator: `,` (default), `;` (`semicolon`), `tab` or `|` (`pipe`), as
    /// European spreadsheets and historians export.
    #[arg(long, value_name = "SEP", default_value = ",", value_parser = CsvDialect::parse_separator)]
    csv_separator: u8,
    /// CSV numbers use a decimal comma (`42,5`).
    #[arg(long)]
    decimal_comma: bool,
}

fn parse_zone(text: &str) -> Result<UtcOffset, String> {
    UtcOffset::parse(text)
}

/// Where batches go.
enum Sink {
    Local {
        store: Arc<dyn Store>,
        append: AppendOptions,
        max_future: std::time::Duration,
        zone: Option<UtcOffset>,
        csv: CsvDialect,
    },
    Remote {
        client: reqwest::Client,
        endpoint: String,
    },
}

/// A batch made ready to commit: decoded here (local store) or the body as is (a server
/// decodes it).
enum Prepared {
    Decoded(DecodedPayload),
    Body(Vec<u8>),
}

impl Sink {
    /// The part of a batch's work that may run ahead of the previous batch's commit.
    async fn prepare(&self, format: PayloadFormat, body: Vec<u8>) -> anyhow::Result<Prepared> {
        match self {
            Sink::Local {
                store,
                max_future,
                zone,
                csv,
                ..
            } => {
                let decode = DecodeOptions {
                    now: Timestamp::from_datetime(chrono::Utc::now()),
                    max_future: *max_future,
                    max_readings: usize::MAX,
                    well: None,
                    zone: *zone,
                    csv: *csv,
                };
                let decoded = decode_payload(
                    store.as_ref(),
                    format,
                    Bytes::from(body),
                    decode,
                    DecodeSlots::shared(),
                )
                .await?;
                Ok(Prepared::Decoded(decoded))
            }
            Sink::Remote { .. } => Ok(Prepared::Body(body)),
        }
    }

    /// Stores a prepared batch; returns once it is committed.
    async fn commit(&self, format: PayloadFormat, batch: Prepared) -> anyhow::Result<IngestReport> {
        match (self, batch) {
            (Sink::Local { store, append, .. }, Prepared::Decoded(decoded)) => {
                Ok(
                    append_decoded(store.as_ref(), decoded, *append, &WellScope::All, false)
                        .await?
                        .0,
                )
            }
            (Sink::Remote { client, endpoint }, Prepared::Body(body)) => {
                let content_type = match format {
                    PayloadFormat::Csv => "text/csv",
                    _ => "application/x-ndjson",
                };
                let body = Bytes::from(body);
                // Resending is safe (duplicates are skipped), so transient failures are retried.
                let mut delay = Duration::from_millis(200);
                for attempt in 1.. {
                    let result = client
                        .post(endpoint.as_str())
                        .header("content-type", content_type)
                        .body(body.clone())
                        .send()
                        .await;
                    match result {
                        Ok(r) if r.status().is_success() || r.status().as_u16() == 422 => {
                            return r
                                .json::<IngestReport>()
                                .await
                                .context("reading the server's report");
                        }
                        Ok(r) if r.status().is_server_error() && attempt < 6 => {
                            tracing::warn!(status = %r.status(), attempt, "server error; retrying");
                        }
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            bail!("the server refused the batch ({status}): {text}");
                        }
                        Err(e) if attempt < 6 => {
                            tracing::warn!(error = %e, attempt, "request failed; retrying")
                        }
                        Err(e) => return Err(e).context("sending a batch"),
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                unreachable!("the retry loop returns")
            }
            _ => unreachable!("a batch is prepared by the sink that commits it"),
        }
    }
}

fn format_of(path: &Path, forced: Option<&str>) -> anyhow::Result<PayloadFormat> {
    let name = forced.map(str::to_owned).or_else(|| {
        path.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
    });
    match name.as_deref() {
        Some("csv") => Ok(PayloadFormat::Csv),
        Some("ndjson" | "jsonl") => Ok(PayloadFormat::Ndjson),
        other => bail!(
            "{}: cannot tell the format from {:?}; use .csv or .ndjson files, or --format csv|ndjson",
            path.display(),
            other.unwrap_or("(no extension)")
        ),
    }
}

#[derive(Default)]
struct Totals {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    batches: u64,
}

/// Why a CSV file is not telemetry, judged by its header: telemetry names a timestamp
/// (`ts`/`timestamp`) or at least one channel. The simulator's `labels.csv` and
/// `operations.csv` (well_id,start,end,...) sit next to the well files, so `ingest sim/*.csv`
/// meets them.
fn not_telemetry(path: &Path, separator: u8) -> anyhow::Result<Option<String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut header = String::new();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if !line.trim().is_empty() {
            header = line;
            break;
        }
    }
    let names: Vec<String> = header
        .trim_start_matches('\u{feff}')
        .split(char::from(separator))
        .map(|n| n.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let telemetry = names
        .iter()
        .any(|n| n == "ts" || n == "timestamp" || espwatch_core::Field::from_name(n).is_some());
    Ok((!telemetry).then(|| {
        format!(
            "its header ({}) names neither a timestamp (ts) nor a channel",
            names.join(",")
        )
    }))
}

pub async fn run(args: &IngestArgs, config: Config) -> anyhow::Result<()> {
    let mut files = Vec::with_capacity(args.files.len());
    let mut skipped = 0;
    for file in &args.files {
        let format = format_of(file, args.format.as_deref())?;
        if format == PayloadFormat::Csv
            && let Some(why) = not_telemetry(file, args.csv_separator)?
        {
            eprintln!("skipping {}: not telemetry: {why}", file.display());
            skipped += 1;
            continue;
        }
        files.push((file.clone(), format));
    }
    if files.is_empty() {
        bail!("none of the files is telemetry; nothing to load");
    }
    let total_bytes: u64 = files
        .iter()
        .map(|(f, _)| f)
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| m.len())
                .with_context(|| format!("reading {}", f.display()))
        })
        .sum::<anyhow::Result<u64>>()?;

    let dialect = CsvDialect {
        separator: args.csv_separator,
        decimal_comma: args.decimal_comma,
    };
    // TimescaleDB: the rollups are left queued at close (see `PostgresOptions::bulk_load`).
    let mut timescale = false;
    let sink = match &args.target.url {
        Some(url) => Sink::Remote {
            client: args.target.http_client(Duration::from_secs(120))?,
            endpoint: {
                let mut query = Vec::new();
                if let Some(zone) = args.timezone {
                    query.push(format!("timezone={}", zone.to_string().replace('+', "%2B")));
                }
                if dialect.separator != b',' {
                    let name = match dialect.separator {
                        b';' => "semicolon",
                        b'\t' => "tab",
                        _ => "pipe",
                    };
                    query.push(format!("csv_separator={name}"));
                }
                if dialect.decimal_comma {
                    query.push("decimal=comma".to_owned());
                }
                let base = format!("{}/api/v1/telemetry", url.trim_end_matches('/'));
                if query.is_empty() {
                    base
                } else {
                    format!("{base}?{}", query.join("&"))
                }
            },
        },
        None => {
            let opened = args.target.open_local_for_loading(&config).await?;
            timescale = opened
                .postgres
                .as_ref()
                .is_some_and(|pg| pg.flavor() == espwatch_store_postgres::Flavor::Timescale);
            Sink::Local {
                store: opened.store,
                append: AppendOptions {
                    auto_register_wells: config.auto_register_wells,
                },
                max_future: config.max_future(),
                zone: args.timezone,
                csv: dialect,
            }
        }
    };

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }

    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    // PostgreSQL commits files loaded at once on its writer connections side by side.
    let parallel = args.parallel.unwrap_or(
        if matches!(sink, Sink::Local { .. }) && config.database_url.is_some() {
            espwatch_app::stores::postgres_options(&config).writers as u32
        } else {
            1
        },
    );
    let sink = Arc::new(sink);
    let state = Arc::new(Mutex::new(LoadState {
        totals: Totals::default(),
        rejects: RejectsFile::new(args.rejects.clone()),
    }));
    let files = Arc::new(files);
    let next_file = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let at_once = (parallel as usize).min(files.len());
    for _ in 0..at_once {
        let (sink, state, files, next_file) = (
            sink.clone(),
            state.clone(),
            files.clone(),
            next_file.clone(),
        );
        let (interrupted, failed, progress) =
            (interrupted.clone(), failed.clone(), progress.clone());
        let batch_size = args.batch_size as usize;
        workers.push(tokio::spawn(async move {
            loop {
                if interrupted.load(Ordering::SeqCst) || failed.load(Ordering::SeqCst) {
                    return anyhow::Ok(());
                }
                let Some((path, format)) = files.get(next_file.fetch_add(1, Ordering::SeqCst))
                else {
                    return Ok(());
                };
                let loaded = load_file(
                    &sink,
                    &state,
                    (path.as_path(), *format),
                    batch_size,
                    &progress,
                    (&interrupted, &failed),
                )
                .await;
                if loaded.is_err() {
                    failed.store(true, Ordering::SeqCst);
                    return loaded;
                }
            }
        }));
    }
    let mut first_error = None;
    for worker in workers {
        let result = worker.await.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    progress.finish_and_clear();
    // The load's rate is over the load; bringing the rollups up to date at close (PostgreSQL)
    // is printed on its own line.
    let loaded_in = started.elapsed().as_secs_f64();
    let closing = Instant::now();
    let closed = match sink.as_ref() {
        Sink::Local { store, .. } => store.close().await.context("closing the store"),
        Sink::Remote { .. } => Ok(()),
    };
    let closed_in = closing.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(e);
    }
    closed?;
    let (totals, mut rejects) = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        (
            std::mem::take(&mut state.totals),
            std::mem::replace(&mut state.rejects, RejectsFile::new(PathBuf::new())),
        )
    };
    rejects.finish()?;

    let elapsed = loaded_in;
    let read = totals.accepted + totals.duplicates + totals.rejected;
    println!(
        "{}: {read} readings in {} batches from {} file(s) in {elapsed:.1}s ({:.0} readings/s)",
        if interrupted.load(Ordering::SeqCst) {
            "interrupted"
        } else {
            "done"
        },
        totals.batches,
        files.len(),
        read as f64 / elapsed.max(1e-9),
    );
    println!(
        "  accepted {}, duplicates {}, rejected {}",
        totals.accepted, totals.duplicates, totals.rejected
    );
    if at_once > 1 {
        println!("  {at_once} files loaded at once");
    }
    if totals.rejected > 0 {
        println!("  rejected rows: {}", args.rejects.display());
    }
    if config.database_url.is_some() && matches!(sink.as_ref(), Sink::Local { .. }) {
        if timescale {
            println!(
                "  then {closed_in:.1}s closing the store (TimescaleDB: rollups left queued; \
                 queries are exact now, the continuous aggregates catch up when a server runs \
                 on this database and through their refresh policies)"
            );
        } else {
            println!("  then {closed_in:.1}s closing the store (rollups brought up to date)");
        }
    }
    if skipped > 0 {
        println!("  skipped {skipped} file(s) that are not telemetry");
    }
    if interrupted.load(Ordering::SeqCst) {
        println!(
            "  every committed batch is kept; run the same command again to load the rest (stored readings are skipped as duplicates)"
        );
    }
    Ok(())
}

/// What the files loaded at once share.
struct LoadState {
    totals: Totals,
    rejects: RejectsFile,
}

/// Loads one file, batch after batch, each committed before the next is committed. The next
/// batch is read and decoded meanwhile (one ahead), so parsing overlaps the database's work;
/// an interrupted load still keeps a prefix of every file.
async fn load_file(
    sink: &Arc<Sink>,
    state: &Mutex<LoadState>,
    (path, format): (&Path, PayloadFormat),
    batch_size: usize,
    progress: &ProgressBar,
    (interrupted, failed): (&AtomicBool, &AtomicBool),
) -> anyhow::Result<()> {
    let batches = Batches::open(path, format, batch_size)?;
    let (ready, mut next) = tokio::sync::mpsc::channel::<anyhow::Result<Ready>>(1);
    let reader = {
        let (sink, path) = (sink.clone(), path.to_path_buf());
        tokio::spawn(async move {
            let mut batches = batches;
            loop {
                // File reads on the blocking pool, off the async workers.
                let read = tokio::task::spawn_blocking(move || {
                    let batch = batches.next_batch();
                    (batches, batch)
                })
                .await;
                let (back, batch) = match read {
                    Ok(read) => read,
                    Err(e) => {
                        let _ = ready.send(Err(e.into())).await;
                        break;
                    }
                };
                batches = back;
                let item = match batch {
                    Ok(None) => break,
                    Err(e) => Err(e),
                    Ok(Some(mut batch)) => {
                        let body = std::mem::take(&mut batch.body);
                        match sink.prepare(format, body).await {
                            Ok(prepared) => Ok(Ready { batch, prepared }),
                            Err(e) => Err(e.context(format!(
                                "{}: batch starting at line {}",
                                path.display(),
                                batch.first_line()
                            ))),
                        }
                    }
                };
                let failed = item.is_err();
                if ready.send(item).await.is_err() || failed {
                    break;
                }
            }
        })
    };
    let mut position = 0u64;
    let result: anyhow::Result<()> = async {
        while let Some(ready) = next.recv().await {
            let Ready { batch, prepared } = ready?;
            let report = sink.commit(format, prepared).await.with_context(|| {
                format!(
                    "{}: batch starting at line {}",
                    path.display(),
                    batch.first_line()
                )
            })?;
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            let LoadState { totals, rejects } = &mut *state;
            totals.batches += 1;
            totals.accepted += report.accepted as u64;
            totals.duplicates += report.duplicates as u64;
            totals.rejected += report.rejected.len() as u64;
            for r in &report.rejected {
                let line = batch.lines.get(r.index).copied().unwrap_or(0);
                for e in &r.errors {
                    rejects.write(
                        path,
                        line,
                        r.well_id.as_deref().unwrap_or(""),
                        &e.field,
                        &e.reason,
                    )?;
                }
            }
            progress.inc(batch.bytes_end - position);
            position = batch.bytes_end;
            progress.set_message(format!(
                "{} accepted, {} duplicates, {} rejected",
                totals.accepted, totals.duplicates, totals.rejected
            ));
            drop(state);
            if interrupted.load(Ordering::SeqCst) || failed.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
        Ok(())
    }
    .await;
    // Stops the reader (its next send fails) and waits for it, so nothing outlives the load.
    drop(next);
    let _ = reader.await;
    result
}

/// A batch read and prepared, waiting for its turn to commit.
struct Ready {
    batch: Batch,
    prepared: Prepared,
}

/// One batch: the payload to send and the 1-based file line of each reading in it.
struct Batch {
    body: Vec<u8>,
    lines: Vec<usize>,
    /// File offset just past this batch, relative to the file start.
    bytes_end: u64,
}

impl Batch {
    fn first_line(&self) -> usize {
        self.lines.first().copied().unwrap_or(0)
    }
}

/// Cuts a file into batches of whole lines. CSV batches repeat the header.
/// Blank lines are skipped here so payload indices map to file lines one to one.
struct Batches {
    reader: BufReader<File>,
    header: Option<String>,
    size: usize,
    line_no: usize,
    offset: u64,
    /// The line being read.
    raw: Vec<u8>,
    /// Largest body so far: the next one's capacity.
    body_hint: usize,
}

impl Batches {
    fn open(path: &Path, format: PayloadFormat, size: usize) -> anyhow::Result<Batches> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut batches = Batches {
            reader: BufReader::with_capacity(1 << 20, file),
            header: None,
            size,
            line_no: 0,
            offset: 0,
            raw: Vec::new(),
            body_hint: 0,
        };
        if format == PayloadFormat::Csv {
            let mut header = String::new();
            loop {
                header.clear();
                let n = batches.read_line(&mut header)?;
                if n == 0 {
                    bail!(
                        "{}: empty CSV file (a header row is required)",
                        path.display()
                    );
                }
                if !header.trim().is_empty() {
                    break;
                }
            }
            batches.header = Some(header.trim_start_matches('\u{feff}').trim_end().to_owned());
        }
        Ok(batches)
    }

    fn read_line(&mut self, buf: &mut String) -> anyhow::Result<usize> {
        let n = self.read_raw()?;
        buf.push_str(&String::from_utf8_lossy(&self.raw));
        Ok(n)
    }

    /// The next line's bytes into `self.raw`; 0 at the end of the file.
    fn read_raw(&mut self) -> anyhow::Result<usize> {
        self.raw.clear();
        let n = self.reader.read_until(b'\n', &mut self.raw)?;
        self.offset += n as u64;
        if n > 0 {
            self.line_no += 1;
        }
        Ok(n)
    }

    fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        let mut body = Vec::with_capacity(self.body_hint);
        if let Some(h) = &self.header {
            body.extend_from_slice(h.as_bytes());
            body.push(b'\n');
        }
        let mut lines = Vec::with_capacity(self.size);
        while lines.len() < self.size {
            if self.read_raw()? == 0 {
                break;
            }
            // Borrowed (no copy) unless the line is not UTF-8.
            let line = String::from_utf8_lossy(&self.raw);
            let trimmed = line.trim_end_matches(['\n', '\r']);
            if trimmed.trim().is_empty() {
                continue;
            }
            body.extend_from_slice(trimmed.as_bytes());
            body.push(b'\n');
            lines.push(self.line_no);
        }
        self.body_hint = self.body_hint.max(body.len());
        if lines.is_empty() {
            return Ok(None);
        }
        Ok(Some(Batch {
            body,
            lines,
            bytes_end: self.offset,
        }))
    }
}

/// The rejects file, created on first use.
struct RejectsFile {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
}

impl RejectsFile {
    fn new(path: PathBuf) -> Self {
        RejectsFile { path, writer: None }
    }

    fn write(
        &mut self,
        file: &Path,
        line: usize,
        well_id: &str,
        field: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(&self.path)
                .with_context(|| format!("creating {}", self.path.display()))?;
            w.write_record(["file", "line", "well_id", "field", "reason"])?;
            self.writer = Some(w);
        }
        if let Some(w) = &mut self.writer {
            w.write_record([
                &file.display().to_string(),
                &line.to_string(),
                well_id,
                field,
                reason,
            ])?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(w) = &mut self.writer {
            w.flush()
                .with_context(|| format!("writing {}", self.path.display()))?;
        }
        Ok(())
    }
}
