//! Continuous archiving of the embedded store's durable log, the way Litestream ships
//! SQLite's WAL: `serve` with `backup_ship_to` runs a [`Shipper`] that, every
//! `backup_ship_interval_ms`, reads the log batches committed since its last round
//! ([`EmbeddedStore::log_since`]) and uploads them as one immutable object under `wal/` of
//! the destination (a directory or `s3://bucket/prefix`: the same place as the backup chain
//! made with `store backup --incremental`). Each object is written, read back and compared
//! byte for byte before the shipper moves on and tells the store
//! ([`EmbeddedStore::set_ship_floor`]) that a checkpoint may now forget those batches; until
//! then a checkpoint keeps them in `ship_log`, so nothing acknowledged is lost to the shipper
//! while the destination is away. A failed round is retried (backoff up to 5 s), never in
//! the way of ingest; status for `/health/ready` (`checks.log_shipping`: `behind` once the
//! oldest unshipped batch waited longer than [`behind_after`], with how many batches and how
//! long) and the `espwatch_log_shipping_*` metrics ([`Shipper::record_metrics`]).
//!
//! While the destination is away, acknowledged batches pile up in the data directory
//! (`ship_log`, the log) and nowhere else; when it is back, the next round ships them from the
//! shipper's cursor in objects of at most 8 MB, oldest first, so the shipped log has no gap.
//! An upload whose answer was lost can leave an object the shipper does not know of; the next
//! round ships the same batches again in a larger object. Objects may therefore overlap
//! (same first batch): [`list`] orders them so the larger comes first, [`replay`] skips what
//! an earlier object already covered, and a shipper starting again continues after the
//! highest batch any object holds.
//!
//! An object is named `wal/<first id>-<last id>-<first commit>-<last commit>.log` (ids and
//! UTC micros, zero-padded) and holds `ESPWLOG1`, the batch count, then per batch its id,
//! commit time and encoded readings, then the SHA-256 of all that.
//!
//! A gap (batches given up past `backup_ship_max_pending_mb`) is kept in the data directory
//! ([`GAP_FILE`]) so that it survives a restart, until the destination's backup chain holds a
//! backup started after it (then a restore to any second after that backup works again).
//!
//! [`replay`] is the other half: after `store restore` has restored the newest chain backup
//! started at or before `--until`, the shipped batches committed between that backup and
//! `--until` are appended again (idempotent: `(well, ts)` already stored is a duplicate), each
//! object's checksum checked, every reading accounted for.

use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use espwatch_store::embedded::incremental::{CHAIN, Chain, SHIPPED_LOG};
use espwatch_store::{
    AppendOptions, EmbeddedOptions, EmbeddedStore, LogRecord, ReadingOutcome, ShipGap, Store,
    decode_log_readings,
};
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use crate::Archive;
use crate::target::now_micros;

const MAGIC: &[u8; 8] = b"ESPWLOG1";
/// Log bytes shipped in one object at most (a round ships more objects when more is waiting).
const OBJECT_BYTES: usize = 8 << 20;
/// The longest wait between two attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Shipped batches committed this long before a base backup started are replayed too (they
/// are in the backup, so they come back as duplicates): margin for the backup's snapshot
/// being taken a little after its recorded start.
const REPLAY_MARGIN_MICROS: i64 = 60_000_000;

/// The name of the object holding `records` (oldest first, not empty).
pub fn object_name(records: &[LogRecord]) -> String {
    let (first, last) = (&records[0], &records[records.len() - 1]);
    format!(
        "{SHIPPED_LOG}/{:020}-{:020}-{:020}-{:020}.log",
        first.id,
        last.id,
        first.committed_at.max(0),
        last.committed_at.max(0)
    )
}

/// What an object's name says: (first id, last id, first commit, last commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectSpan {
    pub first_id: i64,
    pub last_id: i64,
    pub first_at: i64,
    pub last_at: i64,
}

fn parse_name(name: &str) -> Option<ObjectSpan> {
    let stem = name
        .strip_prefix(SHIPPED_LOG)?
        .strip_prefix('/')?
        .strip_suffix(".log")?;
    let mut parts = stem.split('-').map(|p| p.parse::<i64>().ok());
    let span = ObjectSpan {
        first_id: parts.next()??,
        last_id: parts.next()??,
        first_at: parts.next()??,
        last_at: parts.next()??,
    };
    (parts.next().is_none() && span.first_id <= span.last_id).then_some(span)
}

pub fn encode(records: &[LogRecord]) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.data.len() + 20).sum();
    let mut out = Vec::with_capacity(size + 44);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.id.to_le_bytes());
        out.extend_from_slice(&r.committed_at.to_le_bytes());
        out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.data);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

pub fn decode(bytes: &[u8]) -> anyhow::Result<Vec<LogRecord>> {
    if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..MAGIC.len()] != MAGIC {
        bail!("not a shipped log object");
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        bail!("checksum mismatch");
    }
    let mut at = MAGIC.len();
    let count = u32::from_le_bytes(take(body, &mut at, 4)?.try_into()?) as usize;
    let mut out = Vec::with_capacity(count.min(body.len() / 20));
    for _ in 0..count {
        let id = i64::from_le_bytes(take(body, &mut at, 8)?.try_into()?);
        let committed_at = i64::from_le_bytes(take(body, &mut at, 8)?.try_into()?);
        let len = u32::from_le_bytes(take(body, &mut at, 4)?.try_into()?) as usize;
        let data = take(body, &mut at, len)?.to_vec();
        out.push(LogRecord {
            id,
            committed_at,
            data,
        });
    }
    if at != body.len() {
        bail!("trailing bytes");
    }
    Ok(out)
}

fn take<'a>(body: &'a [u8], at: &mut usize, n: usize) -> anyhow::Result<&'a [u8]> {
    let s = body.get(*at..at.saturating_add(n)).context("truncated")?;
    *at += n;
    Ok(s)
}

/// The shipped objects at the destination, oldest first.
pub async fn list(dest: &Archive) -> anyhow::Result<Vec<(Path, ObjectSpan)>> {
    let prefix = Path::from(SHIPPED_LOG);
    let metas: Vec<object_store::ObjectMeta> =
        dest.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .with_context(|| format!("listing the shipped log in {}", dest.url()))?;
    let mut out: Vec<(Path, ObjectSpan)> = metas
        .into_iter()
        .filter_map(|m| parse_name(m.location.as_ref()).map(|s| (m.location, s)))
        .collect();
    // Overlapping objects (a batch range shipped again after a lost answer): the one that
    // reaches further first, so the other is skipped as covered.
    out.sort_by_key(|(_, s)| (s.first_id, std::cmp::Reverse(s.last_id)));
    Ok(out)
}

async fn fetch(dest: &Archive, location: &Path) -> anyhow::Result<Vec<u8>> {
    let got = dest
        .store
        .get(location)
        .await
        .with_context(|| format!("reading {location} from {}", dest.url()))?;
    Ok(got
        .bytes()
        .await
        .with_context(|| format!("reading {location} from {}", dest.url()))?
        .to_vec())
}

/// `op` given at most `limit`: a destination that takes the connection and never answers
/// fails the operation (and so the round, which is retried) instead of holding it forever.
async fn bounded<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    op: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => bail!(
            "{}: no answer within {} ms (backup_ship_timeout_ms)",
            what(),
            limit.as_millis()
        ),
    }
}

/// Writes `records` as one object, reads it back and compares, each step within `limit`;
/// the object's name.
async fn ship_verified(
    dest: &Archive,
    records: &[LogRecord],
    limit: Duration,
) -> anyhow::Result<String> {
    let name = object_name(records);
    let bytes = encode(records);
    let location = Path::from(name.as_str());
    bounded(
        limit,
        || format!("uploading {name} to {}", dest.url()),
        async {
            dest.store
                .put(&location, PutPayload::from(bytes.clone()))
                .await
                .with_context(|| format!("uploading {name} to {}", dest.url()))
        },
    )
    .await?;
    let back = bounded(
        limit,
        || format!("reading {name} back from {}", dest.url()),
        fetch(dest, &location),
    )
    .await?;
    if back != bytes {
        bail!(
            "{name} read back from {} differs from what was uploaded",
            dest.url()
        );
    }
    Ok(name)
}

/// The lag beyond which the shipper reports itself behind (`checks.log_shipping.behind`,
/// `status: degraded`, the `espwatch_log_shipping_behind` gauge): four rounds, and at least
/// the one second of recovery point the log shipping is for.
pub fn behind_after(interval: Duration) -> Duration {
    interval.saturating_mul(4).max(Duration::from_secs(1))
}

/// Metric names (gauges sampled at each scrape, counters since start).
pub const METRIC_LAG: &str = "espwatch_log_shipping_lag_seconds";
pub const METRIC_PENDING: &str = "espwatch_log_shipping_pending_batches";
pub const METRIC_BEHIND: &str = "espwatch_log_shipping_behind";
pub const METRIC_OBJECTS: &str = "espwatch_log_shipping_objects_total";
pub const METRIC_FAILURES: &str = "espwatch_log_shipping_failures_total";
pub const METRIC_PENDING_BYTES: &str = "espwatch_log_shipping_pending_bytes";
pub const METRIC_DROPPED: &str = "espwatch_log_shipping_dropped_batches_total";
pub const METRIC_GAP: &str = "espwatch_log_shipping_gap";

/// How the shipper works (`backup_ship_*` of the configuration).
#[derive(Clone, Copy, Debug)]
pub struct ShipOptions {
    /// Between rounds (`backup_ship_interval_ms`).
    pub interval: Duration,
    /// The longest one operation on the destination (list, upload, read back) may take
    /// (`backup_ship_timeout_ms`); past it the round fails and is retried.
    pub timeout: Duration,
    /// The most unshipped log the data directory keeps for the shipper
    /// (`backup_ship_max_pending_mb`); past it the oldest sealed batches are given up (a gap
    /// in the shipped log, reported) rather than the disk filled.
    pub max_pending_bytes: u64,
}

impl ShipOptions {
    pub fn new(interval: Duration) -> ShipOptions {
        ShipOptions {
            interval,
            timeout: Duration::from_secs(10),
            max_pending_bytes: 2048 << 20,
        }
    }
}

/// What `/health/ready` shows of the shipper (`checks.log_shipping`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ShipStatus {
    /// `healthy`; `degraded` while rounds fail or the shipper is behind.
    pub status: &'static str,
    pub destination: String,
    /// The last log batch shipped and verified (0: none yet, or the destination not listed
    /// yet) and its commit time (RFC 3339).
    pub shipped_log_id: i64,
    pub shipped_committed_at: Option<String>,
    /// Log batches committed but not shipped yet (until the destination was first listed:
    /// every batch the store has numbered).
    pub pending_batches: i64,
    /// How long the oldest unshipped batch has waited, milliseconds (0 when caught up; until
    /// the destination was first listed, the time since the shipper started).
    pub lag_ms: i64,
    /// The commit time of the oldest unshipped batch, when known (RFC 3339).
    pub oldest_unshipped_at: Option<String>,
    /// `lag_ms` is past `behind_after_ms`: the recovery point is that far behind.
    pub behind: bool,
    pub behind_after_ms: u64,
    pub objects_shipped: u64,
    /// Rounds that failed since the last success, and in all.
    pub consecutive_failures: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Bytes of log waiting to be shipped, as of the last failed round (0 once caught up).
    pub pending_bytes: u64,
    /// `backup_ship_max_pending_mb` in bytes: past it the oldest sealed batches are given up.
    pub max_pending_bytes: u64,
    /// Log batches given up since start (never shipped: a gap in the shipped log).
    pub dropped_batches: u64,
    /// The latest run of batches given up (ids and commit times, RFC 3339): a restore
    /// `--until` a time inside it, or past it from a base backup older than it, stops at the
    /// gap; take a base backup (`store backup --incremental`) to restore past it again.
    pub gap: Option<GapStatus>,
}

/// The latest gap in the shipped log (see [`ShipStatus::gap`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GapStatus {
    pub first_log_id: i64,
    pub last_log_id: i64,
    pub first_committed_at: String,
    pub last_committed_at: String,
    pub batches: u64,
    pub bytes: u64,
    pub advice: &'static str,
}

/// The file of the data directory keeping the latest gap in the shipped log (JSON, the
/// [`ShipGap`]) across restarts; removed once the destination's backup chain holds a backup
/// started after the gap.
pub const GAP_FILE: &str = "ship-gap.json";

/// The gap kept in `dir` ([`GAP_FILE`]), if any; an unreadable file is reported and ignored.
fn load_gap(dir: &FsPath) -> Option<ShipGap> {
    let path = dir.join(GAP_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "log shipping: reading the kept gap");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(gap) => Some(gap),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "log shipping: the kept gap does not parse; ignored");
            None
        }
    }
}

/// Keeps `gap` in `dir` ([`GAP_FILE`], written whole then renamed), or removes the file.
fn save_gap(dir: &FsPath, gap: Option<&ShipGap>) -> anyhow::Result<()> {
    let path = dir.join(GAP_FILE);
    let Some(gap) = gap else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        };
    };
    let tmp = dir.join(format!("{GAP_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(gap)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

#[derive(Default)]
struct State {
    /// The highest batch shipped; `None` until the destination was listed.
    cursor: Option<i64>,
    shipped_at: i64,
    /// The commit time of the oldest batch read and not shipped yet.
    oldest_pending_at: Option<i64>,
    objects: u64,
    consecutive_failures: u64,
    failures: u64,
    last_error: Option<String>,
    pending_bytes: u64,
    dropped_batches: u64,
    gap: Option<ShipGap>,
    /// Batches up to this id were given up: never shipped, the cursor continues past them.
    given_up_through: i64,
    /// Rounds until the destination's backup chain is read again to see whether a backup
    /// started after `gap` (0: at the next successful round).
    gap_check_in: u32,
}

/// While a gap is reported, the chain is read every this many successful rounds.
const GAP_CHECK_ROUNDS: u32 = 20;

/// The background log shipper of `serve`.
#[derive(Clone)]
pub struct Shipper {
    store: EmbeddedStore,
    dest: Archive,
    interval: Duration,
    opts: ShipOptions,
    /// When the shipper started (UTC micros).
    started_at: i64,
    state: Arc<Mutex<State>>,
    stop: Arc<tokio::sync::Notify>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Shipper {
    /// Starts shipping `store`'s log to `dest` every `opts.interval`.
    pub fn start(store: EmbeddedStore, dest: Archive, opts: ShipOptions) -> Shipper {
        let interval = opts.interval;
        // A gap reported before a restart still stands (until a base backup after it).
        let gap = load_gap(store.dir());
        if let Some(g) = &gap {
            tracing::warn!(
                first_log_id = g.first_id,
                last_log_id = g.last_id,
                from = %rfc3339(g.first_at),
                to = %rfc3339(g.last_at),
                "log shipping: the shipped log has a gap (kept from before the restart); take a \
                 base backup (store backup --incremental) to restore to any second after it"
            );
        }
        let state = State {
            given_up_through: gap.as_ref().map_or(0, |g| g.last_id),
            gap,
            ..State::default()
        };
        let shipper = Shipper {
            store,
            dest,
            interval,
            opts,
            started_at: now_micros(),
            state: Arc::new(Mutex::new(state)),
            stop: Arc::default(),
            task: Arc::default(),
        };
        let runner = shipper.clone();
        let handle = tokio::spawn(async move { runner.run(interval).await });
        *shipper.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        shipper
    }

    async fn run(&self, interval: Duration) {
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = self.stop.notified() => {
                    // A last round: what was acknowledged before the stop goes out too.
                    if let Err(e) = self.round().await {
                        tracing::warn!(error = %format!("{e:#}"), destination = self.dest.url(), "log shipping: the last round at shutdown failed; the unshipped batches stay in the data directory and ship at the next start");
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.round().await {
                Ok(()) => {
                    let check_gap = {
                        let mut st = self.lock();
                        if st.consecutive_failures > 0 {
                            tracing::info!(
                                failed_rounds = st.consecutive_failures,
                                destination = self.dest.url(),
                                "log shipping caught up"
                            );
                        }
                        st.consecutive_failures = 0;
                        st.last_error = None;
                        let due = st.gap.is_some() && st.gap_check_in == 0;
                        st.gap_check_in = st.gap_check_in.saturating_sub(1);
                        due
                    };
                    if check_gap {
                        self.close_gap_after_a_backup().await;
                    }
                    interval
                }
                Err(e) => {
                    let n = {
                        let mut st = self.lock();
                        st.failures += 1;
                        st.consecutive_failures += 1;
                        let text = format!("{e:#}");
                        // Logged once per outage; `/health/ready` and the metrics follow it.
                        if st.consecutive_failures == 1 {
                            tracing::warn!(error = %text, destination = self.dest.url(), "log shipping failed; retrying");
                        }
                        st.last_error = Some(text);
                        st.consecutive_failures.min(8) as u32
                    };
                    if let Err(e) = self.hold_to_cap().await {
                        tracing::warn!(error = %format!("{e:#}"), "log shipping: reading the unshipped log failed");
                    }
                    interval
                        .saturating_mul(1 << n)
                        .min(MAX_BACKOFF)
                        .max(interval)
                }
            };
        }
    }

    /// After a failed round: when more than `max_pending_bytes` of log waits for the
    /// destination, gives up the oldest sealed batches beyond it (the store may then delete
    /// them; their readings stay in the segments and in the next base backup) and reports
    /// the gap, loudly: a warning, `checks.log_shipping.gap`, the metrics.
    async fn hold_to_cap(&self) -> anyhow::Result<()> {
        let after = {
            let st = self.lock();
            st.cursor.unwrap_or(0).max(st.given_up_through)
        };
        let store = self.store.clone();
        let keep = self.opts.max_pending_bytes;
        let backlog = tokio::task::spawn_blocking(move || store.ship_backlog(after, keep))
            .await
            .context("log shipping task")??;
        let mut st = self.lock();
        st.pending_bytes = backlog.bytes;
        let Some(gap) = backlog.give_up else {
            return Ok(());
        };
        tracing::error!(
            first_log_id = gap.first_id,
            last_log_id = gap.last_id,
            from = %rfc3339(gap.first_at),
            to = %rfc3339(gap.last_at),
            batches = gap.batches,
            bytes = gap.bytes,
            pending_bytes = backlog.bytes,
            max_pending_bytes = keep,
            destination = self.dest.url(),
            "log shipping: the destination has been unreachable past backup_ship_max_pending_mb; \
             the oldest unshipped log batches are given up (their readings stay stored, but the \
             shipped log has a gap: a restore cannot replay through it). Take a base backup \
             (store backup --incremental) once the destination is back"
        );
        st.given_up_through = gap.last_id;
        st.dropped_batches += gap.batches;
        st.pending_bytes = backlog.bytes.saturating_sub(gap.bytes);
        st.gap = Some(gap.clone());
        st.gap_check_in = 0;
        drop(st);
        // Kept before the batches may go: a restart still reports the gap.
        if let Err(e) = save_gap(self.store.dir(), Some(&gap)) {
            tracing::warn!(error = %format!("{e:#}"), "log shipping: keeping the gap in the data directory failed; it is reported until a restart only");
        }
        self.store.set_ship_floor(gap.last_id);
        Ok(())
    }

    /// While a gap is reported: when the destination's backup chain holds a backup started
    /// after the gap's last batch, a restore to any second after that backup works again, so
    /// the gap is no longer reported (and no longer kept in the data directory).
    async fn close_gap_after_a_backup(&self) {
        let Some(gap_end) = self.lock().gap.as_ref().map(|g| g.last_at) else {
            return;
        };
        self.lock().gap_check_in = GAP_CHECK_ROUNDS;
        let location = Path::from(CHAIN);
        let read = bounded(
            self.opts.timeout,
            || format!("reading {CHAIN} in {}", self.dest.url()),
            fetch(&self.dest, &location),
        )
        .await;
        let after = match read {
            Ok(bytes) => match serde_json::from_slice::<Chain>(&bytes) {
                Ok(chain) => chain
                    .backups
                    .iter()
                    .map(|b| b.started_at)
                    .filter(|at| *at > gap_end)
                    .max(),
                Err(e) => {
                    tracing::warn!(error = %e, destination = self.dest.url(), "log shipping: the backup chain does not parse");
                    None
                }
            },
            // No chain yet (or unreadable this time): looked at again later.
            Err(_) => None,
        };
        let Some(backup_at) = after else {
            return;
        };
        if let Err(e) = save_gap(self.store.dir(), None) {
            tracing::warn!(error = %format!("{e:#}"), "log shipping: removing the kept gap failed");
            return;
        }
        let mut st = self.lock();
        if st.gap.as_ref().is_some_and(|g| g.last_at == gap_end) {
            st.gap = None;
            tracing::info!(
                backup_started = %rfc3339(backup_at),
                "log shipping: a base backup was taken after the gap in the shipped log; \
                 restores to any second after it work again"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ships everything committed so far.
    async fn round(&self) -> anyhow::Result<()> {
        let known = self.lock().cursor;
        let cursor = match known {
            Some(c) => c,
            None => {
                let shipped = bounded(
                    self.opts.timeout,
                    || format!("listing the shipped log in {}", self.dest.url()),
                    list(&self.dest),
                )
                .await?;
                // Objects may overlap: continue after the highest batch any of them holds.
                let head = shipped.iter().map(|(_, s)| *s).max_by_key(|s| s.last_id);
                let c = head.map_or(0, |s| s.last_id);
                let mut st = self.lock();
                st.cursor = Some(c);
                st.shipped_at = head.map_or(0, |s| s.last_at);
                c
            }
        };
        // Batches given up while the destination was away are never shipped.
        let cursor = cursor.max(self.lock().given_up_through);
        self.store.set_ship_floor(cursor);
        // Nothing committed since: no read of the log (this runs every interval).
        if self.store.last_log_batch().0 <= cursor {
            self.lock().oldest_pending_at = None;
            return Ok(());
        }
        let mut cursor = cursor;
        loop {
            let store = self.store.clone();
            let records =
                tokio::task::spawn_blocking(move || store.log_since(cursor, OBJECT_BYTES))
                    .await
                    .context("log shipping task")??;
            let Some(last) = records.last() else {
                self.lock().oldest_pending_at = None;
                return Ok(());
            };
            if cursor > 0 && records[0].id > cursor + 1 {
                tracing::warn!(
                    shipped = cursor,
                    next = records[0].id,
                    "log shipping: batches missing from the log (shipping was off meanwhile?); take a base backup"
                );
            }
            self.lock().oldest_pending_at = Some(records[0].committed_at);
            let (last_id, last_at) = (last.id, last.committed_at);
            let bytes: usize = records.iter().map(|r| r.data.len()).sum();
            ship_verified(&self.dest, &records, self.opts.timeout).await?;
            self.store.set_ship_floor(last_id);
            cursor = last_id;
            let mut st = self.lock();
            st.cursor = Some(last_id);
            st.shipped_at = last_at;
            st.objects += 1;
            st.oldest_pending_at = None;
            st.pending_bytes = 0;
            drop(st);
            if bytes < OBJECT_BYTES {
                return Ok(());
            }
        }
    }

    pub fn status(&self) -> ShipStatus {
        let (last_id, last_at) = self.store.last_log_batch();
        let st = self.lock();
        let shipped = st.cursor.unwrap_or(0);
        // Batches given up (past the cap) are not waiting any more.
        let pending = (last_id - shipped.max(st.given_up_through)).max(0);
        let now = now_micros();
        let oldest = match (st.cursor, st.oldest_pending_at) {
            _ if pending == 0 => None,
            (_, Some(at)) if at > 0 => Some(at),
            // Committed since the last round read the log: not older than the newest commit
            // (0: none since the store opened, so waiting since before the shipper started).
            (Some(_), _) if last_at > 0 => Some(last_at),
            _ => None,
        };
        let lag_ms = match oldest {
            _ if pending == 0 => 0,
            Some(at) => ((now - at) / 1000).max(0),
            None => ((now - self.started_at) / 1000).max(0),
        };
        let behind_after_ms = behind_after(self.interval).as_millis() as u64;
        let behind = pending > 0 && lag_ms as u64 >= behind_after_ms;
        ShipStatus {
            status: if st.consecutive_failures == 0 && !behind && st.gap.is_none() {
                "healthy"
            } else {
                "degraded"
            },
            destination: self.dest.url().to_owned(),
            shipped_log_id: shipped,
            shipped_committed_at: (st.shipped_at > 0).then(|| rfc3339(st.shipped_at)),
            pending_batches: pending,
            lag_ms,
            oldest_unshipped_at: oldest.map(rfc3339),
            behind,
            behind_after_ms,
            objects_shipped: st.objects,
            consecutive_failures: st.consecutive_failures,
            failures: st.failures,
            last_error: st.last_error.clone(),
            pending_bytes: st.pending_bytes,
            max_pending_bytes: self.opts.max_pending_bytes,
            dropped_batches: st.dropped_batches,
            gap: st.gap.as_ref().map(|g| GapStatus {
                first_log_id: g.first_id,
                last_log_id: g.last_id,
                first_committed_at: rfc3339(g.first_at),
                last_committed_at: rfc3339(g.last_at),
                batches: g.batches,
                bytes: g.bytes,
                advice: "the shipped log has a gap here (the destination was away past \
                         backup_ship_max_pending_mb): take a base backup (store backup \
                         --incremental) to restore to any second after it",
            }),
        }
    }

    /// Records the shipper's gauges and counters through the `metrics` facade (the server
    /// calls it at each scrape): lag, pending batches, behind (0/1), objects, failures.
    pub fn record_metrics(&self) {
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(|| {
            use metrics::{Unit, describe_counter, describe_gauge};
            describe_gauge!(
                METRIC_LAG,
                Unit::Seconds,
                "How long the oldest log batch not shipped to backup_ship_to has waited"
            );
            describe_gauge!(
                METRIC_PENDING,
                "Log batches committed and not shipped to backup_ship_to yet"
            );
            describe_gauge!(
                METRIC_BEHIND,
                "1 while log shipping is behind (lag past four rounds, at least 1 s)"
            );
            describe_counter!(METRIC_OBJECTS, "Log objects shipped and verified");
            describe_counter!(METRIC_FAILURES, "Log shipping rounds that failed");
            describe_gauge!(
                METRIC_PENDING_BYTES,
                Unit::Bytes,
                "Bytes of log waiting for backup_ship_to, as of the last failed round"
            );
            describe_counter!(
                METRIC_DROPPED,
                "Log batches given up unshipped (past backup_ship_max_pending_mb): a gap in the shipped log"
            );
            describe_gauge!(
                METRIC_GAP,
                "1 once the shipped log has a gap since start (take a base backup)"
            );
        });
        let s = self.status();
        metrics::gauge!(METRIC_LAG).set(s.lag_ms as f64 / 1e3);
        metrics::gauge!(METRIC_PENDING).set(s.pending_batches as f64);
        metrics::gauge!(METRIC_BEHIND).set(f64::from(u8::from(s.behind)));
        metrics::counter!(METRIC_OBJECTS).absolute(s.objects_shipped);
        metrics::counter!(METRIC_FAILURES).absolute(s.failures);
        metrics::gauge!(METRIC_PENDING_BYTES).set(s.pending_bytes as f64);
        metrics::counter!(METRIC_DROPPED).absolute(s.dropped_batches);
        metrics::gauge!(METRIC_GAP).set(f64::from(u8::from(s.gap.is_some())));
    }

    /// Ships what is left (one last attempt) and stops.
    pub async fn stop(self) {
        self.stop.notify_one();
        let handle = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

pub fn rfc3339(micros: i64) -> String {
    espwatch_core::Timestamp(micros).to_rfc3339()
}

/// What [`replay`] did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    pub objects: usize,
    pub batches: usize,
    pub readings: u64,
    /// Readings the restored backup did not hold yet.
    pub added: u64,
    /// The last batch replayed: its id and commit time (the recovery point).
    pub last_id: i64,
    pub recovery_point: Option<i64>,
    /// Objects holding batches an earlier object held too (shipped again after an upload
    /// whose answer was lost): their new batches replayed, the others skipped.
    pub overlapping: usize,
}

/// Appends the shipped log batches committed after `base_started_at` (the restored chain
/// backup's start, less a margin) and at or before `until` to the store restored in
/// `data_dir`. `None` when the destination holds no shipped log.
pub async fn replay(
    dest: &Archive,
    data_dir: &FsPath,
    base_started_at: i64,
    until: Option<i64>,
) -> anyhow::Result<Option<ReplayReport>> {
    let objects = list(dest).await?;
    if objects.is_empty() {
        return Ok(None);
    }
    let from = base_started_at.saturating_sub(REPLAY_MARGIN_MICROS);
    let dir = data_dir.to_owned();
    let store =
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir, EmbeddedOptions::default()))
            .await
            .context("opening the restored store")?
            .with_context(|| format!("opening the restored store in {}", data_dir.display()))?;
    let result = replay_into(dest, &store, &objects, from, until).await;
    let closed = store.close().await;
    let report = result?;
    closed.context("closing the restored store")?;
    Ok(Some(report))
}

async fn replay_into(
    dest: &Archive,
    store: &EmbeddedStore,
    objects: &[(Path, ObjectSpan)],
    from: i64,
    until: Option<i64>,
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut expected_next: Option<i64> = None;
    for (location, span) in objects {
        if span.last_at < from {
            continue;
        }
        if until.is_some_and(|t| span.first_at > t) {
            break;
        }
        if let Some(next) = expected_next {
            // Shipped again in a larger object (an upload whose answer was lost): covered.
            if span.last_id < next {
                report.overlapping += 1;
                continue;
            }
            if span.first_id > next {
                bail!(
                    "the shipped log in {} has a gap: batch {next} is missing (before {location}); {}",
                    dest.url(),
                    stop_before(span)
                );
            }
        }
        let bytes = fetch(dest, location).await?;
        let records = decode(&bytes).with_context(|| {
            format!(
                "the shipped log object {location} in {} is damaged (torn or altered: {} bytes); nothing is restored from it; {}",
                dest.url(),
                bytes.len(),
                stop_before(span)
            )
        })?;
        if records.first().map(|r| r.id) != Some(span.first_id)
            || records.last().map(|r| r.id) != Some(span.last_id)
        {
            bail!(
                "the shipped log object {location} in {} does not hold what its name says; {}",
                dest.url(),
                stop_before(span)
            );
        }
        let skip_below = expected_next.unwrap_or(i64::MIN);
        if span.first_id < skip_below {
            report.overlapping += 1;
        }
        expected_next = Some(span.last_id + 1);
        report.objects += 1;
        let mut readings = Vec::new();
        for r in records.iter().filter(|r| r.id >= skip_below) {
            if until.is_some_and(|t| r.committed_at > t) {
                break;
            }
            readings.extend(
                decode_log_readings(&r.data)
                    .with_context(|| format!("log batch {} in {location}", r.id))?,
            );
            report.batches += 1;
            report.last_id = r.id;
            report.recovery_point = Some(r.committed_at);
        }
        let n = readings.len();
        let outcome = store
            .append(readings, AppendOptions::default())
            .await
            .with_context(|| format!("replaying {location}"))?;
        let added = outcome.count(ReadingOutcome::Accepted);
        if added + outcome.count(ReadingOutcome::Duplicate) != n {
            bail!("replaying {location}: not every reading was stored");
        }
        report.readings += n as u64;
        report.added += added as u64;
        if until.is_some_and(|t| span.last_at > t) {
            break;
        }
    }
    Ok(report)
}

/// What to do about an object that cannot be replayed: restore again, stopping before it.
fn stop_before(span: &ObjectSpan) -> String {
    format!(
        "the restore stops here, incomplete: restore again into an empty directory with --until {} to stop before it (log batch {}, the last whole point in time)",
        rfc3339(span.first_at.saturating_sub(1)),
        span.first_id.saturating_sub(1)
    )
}
