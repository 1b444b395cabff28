//! Online diagnostics: every accepted reading advances its well's engine (the same pure engine
//! as `espwatch diagnose`) on a background task, off the request path. Episodes opening and
//! closing raise and clear alarms in the [`AlarmStore`]. A well's state is rebuilt from stored
//! telemetry (the last `REPLAY` of data) the first time it is needed after a start, so a
//! restart loses nothing but the time to replay: with the well's directives as stored (a
//! retrain window, a transient mark: recorded before the API answers, on whichever node it was
//! given), and with the replay's transitions reconciled with the stored alarms, so an episode
//! already alarmed is not raised again (see `apply_replayed`).
//!
//! Nothing here stalls the server:
//! - State is per well: a sharded map of per-well locks, each held only while that well's
//!   readings are applied, so a slow well (say, one being rebuilt) holds up no other well and
//!   no `GET /diagnosis` of another well. The wells of a batch that need it are rebuilt
//!   [`REBUILDS_IN_FLIGHT`] at a time (a rebuild is mostly waiting for the store), each under
//!   its own lock only, before the batch's wells are locked together for the pushes; a
//!   well's readings are still applied in time order, batch after batch.
//! - Several nodes (see [`DiagnosticsHub::set_ownership`]): only the wells this node owns
//!   keep state here. When the owners change, the engines of wells still owned are kept and
//!   only wells that moved here are rebuilt (not every well, which once cost a node minutes
//!   of rebuilds at every membership change); a well owned elsewhere is diagnosed for a
//!   `GET /diagnosis` from stored data, kept nowhere (this node never sees its readings).
//! - Store reads and CPU-heavy replays (a rebuild from 48 h of data, a retrain) and the engine
//!   pushes of each batch run on the blocking pool, never on the async runtime's workers;
//!   only a chunk of at most 16 readings (a few microseconds of pushes: single-reading
//!   requests) is pushed in place, where the hop to the pool would cost more than the work.
//! - The queue from ingestion is bounded (in readings). When it is full the batch is not
//!   queued: its wells are marked stale at that point of the sequence and rebuilt from stored
//!   data (where the readings are already durable) when the worker passes that point or the
//!   diagnosis is asked for, so overload costs replay time, not memory or alarms.
//!   Depth, lag and skipped readings are reported by [`DiagnosticsHub::status`] (in
//!   `/health/ready`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use espwatch_core::diagnostics::{Episode, Finding, Thresholds, TrainingWindow, WellEngine};
use espwatch_core::{Reading, TimeRange, Timestamp, WellId};
use espwatch_store::{
    Alarm, AlarmFilter, AlarmStore, NewAlarm, Store, StoreError, TransientMark, WellDirectives,
};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};

use crate::live::{AlarmChange, LiveEvent, LiveHub};

/// An episode that opened, with the findings of the reading that opened it.
type Opened = (WellId, Episode, Vec<Finding>);
type Closed = (WellId, Episode);
/// The transitions of one well's replay of stored history (see `apply_replayed`).
type Replay = (WellId, Vec<Opened>, Vec<Closed>);

/// Chunks of at most this many readings are pushed on the async worker itself (see `advance`).
const INLINE_PUSH_READINGS: usize = 16;

/// Stored history replayed into a well's engine when it is first needed.
const REPLAY: Duration = Duration::from_secs(48 * 3600);

/// Readings that may wait for diagnostics; beyond this a batch is skipped (see the module
/// documentation). About 100 s of a 1 000-well field at 1 Hz × 5 or so.
pub const DEFAULT_QUEUE_READINGS: u64 = 500_000;

const SHARDS: usize = 16;

/// Wells of a batch rebuilt from stored data at once. A rebuild is a store read (an I/O wait:
/// 48 h of a well's readings) and a replay on the blocking pool; one after another, a batch
/// of wells without state (after a start or an ownership change) waited for the sum of them.
/// Half the PostgreSQL store's default pool, so ingestion keeps connections meanwhile.
pub const REBUILDS_IN_FLIGHT: usize = 4;

/// A well's engine; `None` until built (from stored data) or after it went stale.
type Slot = Arc<Mutex<Option<WellEngine>>>;

/// Queue depth, lag and throughput of the online diagnostics.
#[derive(Clone, Debug, Serialize)]
pub struct DiagnosticsStatus {
    /// `healthy`, or `degraded` while batches are being skipped or the lag exceeds 10 s.
    pub status: &'static str,
    /// Readings accepted but not yet diagnosed.
    pub queued_readings: u64,
    /// The most that may wait before batches are skipped.
    pub queue_capacity_readings: u64,
    /// How long the batch being processed (or last processed) waited in the queue, ms.
    pub lag_ms: u64,
    /// Readings diagnosed since start (pushed into their well's engine here; a reading of a
    /// well that moved to another node before its turn is not).
    pub diagnosed_readings: u64,
    /// Queued readings dropped, not diagnosed, because this node lost its wells (its hold on
    /// them lapsed: see [`DiagnosticsHub::lose_ownership`]).
    pub dropped_readings: u64,
    /// Readings not queued because the queue was full (their wells are rebuilt from storage).
    pub skipped_readings: u64,
    /// Wells with live engine state.
    pub wells: usize,
    /// Rebuilds from stored data since start.
    pub rebuilds: u64,
}

struct Queued {
    readings: Vec<Reading>,
    at: Instant,
    /// Submission order, compared with the stale marks.
    seq: u64,
}

pub struct DiagnosticsHub {
    store: Arc<dyn Store>,
    alarms: Option<Arc<dyn AlarmStore>>,
    /// Where alarm changes and run/stop changes are published (after the alarm store answered).
    live: Option<Arc<LiveHub>>,
    /// Where alarm changes are routed to notification channels (after the alarm store
    /// answered).
    notifier: std::sync::OnceLock<Arc<crate::notify::Notifier>>,
    thresholds: Thresholds,
    shards: Vec<SyncMutex<HashMap<WellId, Slot>>>,
    hasher: foldhash::fast::RandomState,
    tx: mpsc::UnboundedSender<Queued>,
    capacity: u64,
    /// Submissions so far (the sequence of [`Queued::seq`] and of skips).
    seq: AtomicU64,
    /// Wells whose readings were skipped: the first and last skip not yet handled (bounded
    /// by the number of wells, however long an overload lasts).
    stale: SyncMutex<HashMap<WellId, (u64, u64)>>,
    queued: AtomicU64,
    lag_ms: AtomicU64,
    diagnosed: AtomicU64,
    skipped: AtomicU64,
    rebuilds: AtomicU64,
    /// Batches submitted before this sequence number are dropped, not diagnosed (see
    /// [`DiagnosticsHub::lose_ownership`]).
    drop_before: AtomicU64,
    dropped: AtomicU64,
    /// Which wells this node diagnoses when several nodes share the database (`None`: every
    /// well whose readings it is given); see [`DiagnosticsHub::set_ownership`].
    owner: std::sync::RwLock<Option<Ownership>>,
    /// Tells the other nodes that a well's directives changed (installed by the cluster link);
    /// `false`: not sent now.
    announcer: std::sync::OnceLock<Announcer>,
    /// The highest directives revision this node has taken into account.
    directives_seen: AtomicI64,
}

/// Announces to the other nodes that a well's directives changed (revision); `false` when it
/// cannot be sent now.
pub type Announcer = Box<dyn Fn(&WellId, i64) -> bool + Send + Sync>;

/// What became of a retrain or a transient mark (in the API's answer as `delivery`).
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// Recorded in the database: whichever node diagnoses the well rebuilds it with it, after
    /// a restart or an ownership move too.
    pub stored: bool,
    /// The well's directives revision it was recorded as.
    pub revision: Option<i64>,
    /// Whether this node diagnoses the well (then it is applied here at once).
    pub diagnosed_here: bool,
    /// How the node diagnosing the well takes it: `applied` (here), `announced` (told through
    /// Redis: it rebuilds the well with it before its next reading), `pending` (Redis cannot
    /// be reached now: it is taken when that node's link to Redis comes back, or when it next
    /// rebuilds the well).
    pub owner: &'static str,
}

/// Whether this node diagnoses a well (several nodes: each well on exactly one).
pub type Ownership = Arc<dyn Fn(&WellId) -> bool + Send + Sync>;

impl DiagnosticsHub {
    /// Starts the hub and its background task (needs a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, alarms: Option<Arc<dyn AlarmStore>>) -> Arc<Self> {
        Self::start_with_capacity(store, alarms, DEFAULT_QUEUE_READINGS)
    }

    /// As [`DiagnosticsHub::start`], with at most `capacity` readings waiting.
    pub fn start_with_capacity(
        store: Arc<dyn Store>,
        alarms: Option<Arc<dyn AlarmStore>>,
        capacity: u64,
    ) -> Arc<Self> {
        Self::start_with_events(store, alarms, capacity, None)
    }

    /// As [`DiagnosticsHub::start_with_capacity`], publishing alarm and well-state changes
    /// to `live`.
    pub fn start_with_events(
        store: Arc<dyn Store>,
        alarms: Option<Arc<dyn AlarmStore>>,
        capacity: u64,
        live: Option<Arc<LiveHub>>,
    ) -> Arc<Self> {
        // The channel itself is unbounded; `queued` bounds what it holds, in readings (what
        // memory and work scale with), and `submit` refuses beyond it.
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        let hub = Arc::new(DiagnosticsHub {
            store,
            alarms,
            live,
            notifier: std::sync::OnceLock::new(),
            thresholds: Thresholds::default(),
            shards: (0..SHARDS)
                .map(|_| SyncMutex::new(HashMap::new()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            tx,
            capacity: capacity.max(1),
            seq: AtomicU64::new(0),
            stale: SyncMutex::new(HashMap::new()),
            queued: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            diagnosed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
            drop_before: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            owner: std::sync::RwLock::new(None),
            announcer: std::sync::OnceLock::new(),
            directives_seen: AtomicI64::new(0),
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let Some(hub) = weak.upgrade() else { break };
                let n = batch.readings.len() as u64;
                hub.lag_ms
                    .store(batch.at.elapsed().as_millis() as u64, Ordering::Relaxed);
                if batch.seq < hub.drop_before.load(Ordering::SeqCst) {
                    hub.dropped.fetch_add(n, Ordering::Relaxed);
                } else {
                    let pushed = hub.advance(batch.readings, batch.seq).await;
                    hub.diagnosed.fetch_add(pushed, Ordering::Relaxed);
                }
                hub.queued.fetch_sub(n, Ordering::Relaxed);
            }
        });
        hub
    }

    /// Queues accepted readings; returns at once. When the queue is full the readings are
    /// not queued and their wells are marked stale, to be rebuilt from the store.
    pub fn submit(&self, mut readings: Vec<Reading>) {
        if let Some(owns) = self.ownership() {
            readings.retain(|r| owns(&r.well_id));
        }
        if readings.is_empty() {
            return;
        }
        let n = readings.len() as u64;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let reserved = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                (q + n <= self.capacity || q == 0).then_some(q + n)
            })
            .is_ok();
        if !reserved {
            self.skipped.fetch_add(n, Ordering::Relaxed);
            let mut wells: Vec<&WellId> = readings.iter().map(|r| &r.well_id).collect();
            wells.sort_unstable();
            wells.dedup();
            let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
            for well in wells {
                stale
                    .entry(well.clone())
                    .and_modify(|(_, last)| *last = seq)
                    .or_insert((seq, seq));
            }
            return;
        }
        let queued = Queued {
            readings,
            at: Instant::now(),
            seq,
        };
        if self.tx.send(queued).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            tracing::warn!("diagnostics task stopped; readings not diagnosed");
        }
    }

    /// Diagnoses only the wells `owns` says (`None`: all it is given), as when the nodes
    /// sharing the database change. A well that stays this node's keeps its engine (its
    /// readings kept coming, from whichever node ingested them); every other well's state is
    /// dropped, and a well that moved here is rebuilt from stored telemetry at its next
    /// reading (it starts from the database, not from what another node knew). Going to or
    /// from `None` (Redis lost or back) drops every well's state.
    pub fn set_ownership(&self, owns: Option<Ownership>) {
        let mut owner = self.owner.write().unwrap_or_else(|p| p.into_inner());
        let keep = owner.is_some() && owns.is_some();
        *owner = owns;
        // Under the ownership lock: `owned_slot` cannot make a slot for a well that moves
        // away in between.
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            match owner.as_ref() {
                Some(owns) if keep => shard.retain(|well, _| owns(well)),
                _ => shard.clear(),
            }
        }
    }

    /// This node no longer diagnoses any well until [`DiagnosticsHub::set_ownership`] says
    /// otherwise: every well's state is dropped, and so are the readings queued so far (not
    /// diagnosed here: their wells' owners have them, live or from the database when they
    /// rebuild). For a node whose hold on its wells lapsed (stopped, starved or cut off from
    /// the other nodes for longer than they wait): the others took its wells meanwhile.
    pub fn lose_ownership(&self) {
        self.set_ownership(Some(Arc::new(|_: &WellId| false)));
        self.drop_before
            .store(self.seq.load(Ordering::SeqCst), Ordering::SeqCst);
        self.stale.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The current ownership rule, if several nodes share the wells.
    pub fn ownership(&self) -> Option<Ownership> {
        self.owner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queue depth, lag and counters, for `/health/ready`.
    pub fn status(&self) -> DiagnosticsStatus {
        let queued = self.queued.load(Ordering::Relaxed);
        let lag_ms = if queued == 0 {
            0
        } else {
            self.lag_ms.load(Ordering::Relaxed)
        };
        let skipped = self.skipped.load(Ordering::Relaxed);
        let full = queued >= self.capacity;
        DiagnosticsStatus {
            status: if full || lag_ms > 10_000 {
                "degraded"
            } else {
                "healthy"
            },
            queued_readings: queued,
            queue_capacity_readings: self.capacity,
            lag_ms,
            diagnosed_readings: self.diagnosed.load(Ordering::Relaxed),
            dropped_readings: self.dropped.load(Ordering::Relaxed),
            skipped_readings: skipped,
            wells: self
                .shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
                .sum(),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Whether the well's engine missed readings skipped before submission `seq`; the mark is
    /// consumed (kept, narrowed to the last skip, when that came after `seq`).
    fn take_stale(&self, well: &WellId, seq: u64) -> bool {
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        let Some((first, last)) = stale.get_mut(well) else {
            return false;
        };
        if *first >= seq {
            return false;
        }
        if *last < seq {
            stale.remove(well);
        } else {
            *first = *last;
        }
        true
    }

    fn shard(&self, well: &WellId) -> &SyncMutex<HashMap<WellId, Slot>> {
        &self.shards[(self.hasher.hash_one(well) as usize) % SHARDS]
    }

    /// The well's slot (created empty when missing). The shard lock is held only for this.
    fn slot(&self, well: &WellId) -> Slot {
        self.shard(well)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(well.clone())
            .or_default()
            .clone()
    }

    /// The well's slot if this node diagnoses it (created empty when missing), `None` when
    /// another node does. Checked and created under the ownership lock, so that a slot is
    /// either made before an ownership change (which drops it if the well moved away) or
    /// after it, never for a well already gone: an engine kept here saw every reading.
    fn owned_slot(&self, well: &WellId) -> Option<Slot> {
        let owner = self.owner.read().unwrap_or_else(|p| p.into_inner());
        if let Some(owns) = owner.as_ref()
            && !owns(well)
        {
            return None;
        }
        Some(self.slot(well))
    }

    /// Builds an owned well's engine from the stored history before `before` unless it has
    /// one (or rebuilds it if readings before submission `seq` were skipped), under the
    /// well's own lock only: the transitions of the replay.
    async fn build_owned(&self, well: &WellId, before: Timestamp, seq: u64) -> Option<Replay> {
        let slot = self.owned_slot(well)?;
        let mut guard = slot.lock_owned().await;
        if self.take_stale(well, seq) {
            *guard = None;
        }
        self.build(&mut guard, well, before).await
    }

    /// Diagnoses a batch: the readings pushed into engines here.
    async fn advance(&self, batch: Vec<Reading>, seq: u64) -> u64 {
        // Each engine needs its well's readings in time order. Grouping positions by well
        // (hashing each id once) and sorting only a group that arrived out of order is far
        // cheaper than sorting the whole batch by (well id, ts).
        let mut by_well: HashMap<&WellId, Vec<usize>, foldhash::fast::RandomState> =
            HashMap::default();
        for (i, reading) in batch.iter().enumerate() {
            by_well.entry(&reading.well_id).or_default().push(i);
        }
        let mut groups: Vec<(WellId, Vec<usize>)> =
            by_well.into_iter().map(|(w, p)| (w.clone(), p)).collect();
        groups.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (_, positions) in &mut groups {
            if !positions.is_sorted_by_key(|&i| batch[i].ts) {
                // Stable: readings with equal timestamps keep their arrival order.
                positions.sort_by_key(|&i| batch[i].ts);
            }
        }
        let batch = Arc::new(batch);
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        let mut replays = Vec::new();
        let mut pushed_readings = 0;
        // A chunk of wells at a time: build those that need it from stored data, up to
        // REBUILDS_IN_FLIGHT at once, each holding its own lock only (a slow rebuild keeps
        // none of the chunk's other wells locked), then lock them all and push their readings
        // on the blocking pool. Other wells stay free.
        while !groups.is_empty() {
            let chunk: Vec<(WellId, Vec<usize>)> = groups.drain(..groups.len().min(64)).collect();
            // Collected first: a stream mapping borrowed wells through a closure is not
            // provably `Send` for the spawned task.
            let builds: Vec<_> = chunk
                .iter()
                .map(|(well, positions)| self.build_owned(well, batch[positions[0]].ts, seq))
                .collect();
            let built: Vec<Option<Replay>> = futures_util::stream::iter(builds)
                .buffer_unordered(REBUILDS_IN_FLIGHT)
                .collect()
                .await;
            replays.extend(built.into_iter().flatten());
            let mut locked = Vec::with_capacity(chunk.len());
            let mut guards = Vec::with_capacity(chunk.len());
            for (well, positions) in chunk {
                // A well that moved to another node meanwhile is that node's now.
                let Some(slot) = self.owned_slot(&well) else {
                    continue;
                };
                let mut guard = slot.lock_owned().await;
                // Only when the state was dropped in between (ownership changed).
                replays.extend(self.build(&mut guard, &well, batch[positions[0]].ts).await);
                guards.push(guard);
                locked.push((well, positions));
            }
            let chunk = locked;
            // A few readings (single-reading requests, one at a time) are pushed right here:
            // a push costs microseconds, a hop to the blocking pool (wake a thread, switch to
            // it and back) cost more than the push itself and was the largest single part of
            // a single-reading request's CPU. Larger chunks go to the blocking pool as before.
            let readings: usize = chunk.iter().map(|(_, p)| p.len()).sum();
            pushed_readings += readings as u64;
            let pushed = if readings <= INLINE_PUSH_READINGS {
                Ok(push_chunk(&chunk, &mut guards, &batch))
            } else {
                let batch = batch.clone();
                tokio::task::spawn_blocking(move || push_chunk(&chunk, &mut guards, &batch)).await
            };
            match pushed {
                Ok((o, c, states)) => {
                    opened.extend(o);
                    closed.extend(c);
                    if let Some(live) = &self.live {
                        states.into_iter().for_each(|s| live.publish(s));
                    }
                }
                Err(e) => tracing::error!(error = %e, "diagnostics: applying a batch failed"),
            }
        }
        // The replays came first in data time: their transitions first.
        for (well, o, c) in replays {
            self.apply_replayed(&well, o, c).await;
        }
        self.apply(opened, closed).await;
        pushed_readings
    }

    /// Builds a well's engine from the stored history before `before` unless it has one: the
    /// replay's transitions, when it was built.
    async fn build(
        &self,
        guard: &mut OwnedMutexGuard<Option<WellEngine>>,
        well: &WellId,
        before: Timestamp,
    ) -> Option<Replay> {
        if guard.is_some() {
            return None;
        }
        let (engine, o, c) = self.rebuild(well, before).await;
        **guard = Some(engine);
        Some((well.clone(), o, c))
    }

    /// A fresh engine fed with the stored history of `plan`, read and replayed on the
    /// blocking pool.
    async fn replay(&self, well: &WellId, plan: ReplayPlan) -> Replayed {
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        let (store, thresholds, well) = (self.store.clone(), self.thresholds.clone(), well.clone());
        let runtime = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let meta = match runtime.block_on(store.get_well(&well)) {
                Ok(r) => r.map(|r| r.meta),
                Err(e) => {
                    tracing::warn!(%well, error = %e, "diagnostics: cannot read well metadata");
                    None
                }
            };
            let until = match plan.training {
                TrainingWindow::Until(until) => Some(until),
                _ => None,
            };
            let mut engine = WellEngine::new(meta.as_ref(), thresholds.clone(), plan.training);
            let mut done = Replayed {
                engine: None,
                opened: Vec::new(),
                closed: Vec::new(),
                in_window: 0,
                history_error: None,
            };
            // A transient mark takes effect where it was made: the readings before it were
            // judged without it.
            let mut transient = plan.transient;
            for range in plan.ranges {
                let points = match runtime.block_on(store.read_range(&well, range)) {
                    Ok(points) => points,
                    Err(e) => {
                        done.history_error = Some(e.to_string());
                        break;
                    }
                };
                for (ts, values) in points {
                    if let Some(mark) = transient.filter(|m| ts >= m.marked_at) {
                        engine.mark_transient(mark.until);
                        transient = None;
                    }
                    done.in_window += u64::from(until.is_some_and(|u| ts < u));
                    let out = engine.push(ts, &values);
                    collect(
                        &well,
                        &engine,
                        out.transitions,
                        &mut done.opened,
                        &mut done.closed,
                    );
                }
            }
            if plan.end_training {
                engine.end_training();
            }
            if let Some(mark) = transient {
                engine.mark_transient(mark.until);
            }
            done.engine = Some(engine);
            done
        });
        match job.await {
            Ok(done) => done,
            Err(e) => Replayed {
                engine: None,
                opened: Vec::new(),
                closed: Vec::new(),
                in_window: 0,
                history_error: Some(format!("the replay failed: {e}")),
            },
        }
    }

    /// The well's directives as stored (`None` without an alarm store or when none were
    /// recorded; a store error is logged and counts as none).
    async fn directives(&self, well: &WellId) -> Option<WellDirectives> {
        let alarms = self.alarms.as_ref()?;
        match alarms.well_directives(well).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%well, error = %e, "diagnostics: cannot read the well's directives; rebuilt without them");
                None
            }
        }
    }

    /// A fresh engine fed with the stored history before `before`, with the well's stored
    /// directives (retrain window, transient mark).
    async fn rebuild(
        &self,
        well: &WellId,
        before: Timestamp,
    ) -> (WellEngine, Vec<Opened>, Vec<Closed>) {
        let directives = self.directives(well).await;
        let done = self
            .replay(well, ReplayPlan::new(before, directives.as_ref()))
            .await;
        if let Some(e) = &done.history_error {
            tracing::warn!(%well, error = %e, "diagnostics: cannot replay history");
        }
        let engine = done.engine.unwrap_or_else(|| {
            WellEngine::new(None, self.thresholds.clone(), TrainingWindow::Default)
        });
        (engine, done.opened, done.closed)
    }

    /// Applies the transitions of a replay of `well`'s stored history, reconciled with the
    /// alarms already stored: an episode an alarm of the same condition already covers
    /// (overlapping in time, in any state) was alarmed when it happened and raises nothing
    /// again; it clears only an alarm still open that it covers. Episodes no alarm covers
    /// (readings no engine saw live, e.g. skipped under overload) are raised, and cleared if
    /// they ended, as they happened. In time order, so a past episode never clears a later one.
    async fn apply_replayed(&self, well: &WellId, opened: Vec<Opened>, closed: Vec<Closed>) {
        let Some(alarms) = &self.alarms else { return };
        if opened.is_empty() && closed.is_empty() {
            return;
        }
        let filter = AlarmFilter {
            well_id: Some(well.clone()),
            ..AlarmFilter::default()
        };
        let stored = match alarms.list_alarms(&filter).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(%well, error = %e, "diagnostics: cannot read the well's alarms; the replay's episodes are not alarmed");
                return;
            }
        };
        let covering = |e: &Episode, end: Option<Timestamp>| -> Option<&Alarm> {
            let end = end.unwrap_or(Timestamp(i64::MAX));
            stored.iter().find(|a| {
                a.condition == e.diagnosis
                    && a.started_at <= end
                    && a.ended_at.unwrap_or(Timestamp(i64::MAX)) >= e.start
            })
        };
        let mut closed: Vec<Option<Closed>> = closed.into_iter().map(Some).collect();
        let mut episodes: Vec<(Episode, Option<Vec<Finding>>, Option<Episode>)> = Vec::new();
        for (_, e, findings) in opened {
            let close = closed
                .iter_mut()
                .find(|c| {
                    c.as_ref()
                        .is_some_and(|(_, c)| c.diagnosis == e.diagnosis && c.start == e.start)
                })
                .and_then(Option::take)
                .map(|(_, c)| c);
            episodes.push((e, Some(findings), close));
        }
        // Closed without having opened in this replay: only the clearing is left to judge.
        for (_, c) in closed.into_iter().flatten() {
            episodes.push((c.clone(), None, Some(c)));
        }
        episodes.sort_by_key(|(e, _, _)| e.start);
        for (e, findings, close) in episodes {
            let end = close.as_ref().map(|c| c.end.unwrap_or(c.start));
            let known = covering(&e, end);
            let raised_now = match (known, findings) {
                (None, Some(findings)) => {
                    self.raise(alarms.as_ref(), well, &e, &findings).await;
                    true
                }
                _ => false,
            };
            let still_open = known.is_some_and(|a| a.ended_at.is_none());
            if let Some(c) = close
                && (raised_now || still_open)
            {
                self.clear(alarms.as_ref(), well, &c).await;
            }
        }
    }

    async fn raise(
        &self,
        alarms: &dyn AlarmStore,
        well: &WellId,
        e: &Episode,
        findings: &[Finding],
    ) {
        let finding = findings.iter().find(|f| f.diagnosis == e.diagnosis);
        let detail = serde_json::json!({
            "evidence": finding.map(|f| &f.evidence),
            "action": espwatch_core::diagnostics::action_for(e.diagnosis),
        });
        let new = NewAlarm {
            well_id: well.clone(),
            condition: e.diagnosis,
            severity: e.diagnosis.severity(),
            confidence: e.confidence,
            started_at: e.start,
            detail,
        };
        match alarms.raise_alarm(new).await {
            Ok((alarm, true)) => {
                if let Some(notifier) = self.notifier.get() {
                    notifier.alarm_changed(AlarmChange::Raised, &alarm).await;
                }
                if let Some(live) = &self.live {
                    live.publish_alarm(AlarmChange::Raised, alarm);
                }
            }
            Ok((_, false)) => {}
            Err(err) => tracing::error!(%well, error = %err, "raising alarm failed"),
        }
    }

    async fn clear(&self, alarms: &dyn AlarmStore, well: &WellId, e: &Episode) {
        let end = e.end.unwrap_or(e.start);
        match alarms.clear_alarm(well, e.diagnosis, end).await {
            Ok(Some(alarm)) => {
                if let Some(notifier) = self.notifier.get() {
                    notifier.alarm_changed(AlarmChange::Cleared, &alarm).await;
                }
                if let Some(live) = &self.live {
                    live.publish_alarm(AlarmChange::Cleared, alarm);
                }
            }
            Ok(None) => {}
            Err(err) => tracing::error!(%well, error = %err, "clearing alarm failed"),
        }
    }

    async fn apply(&self, opened: Vec<Opened>, closed: Vec<Closed>) {
        let Some(alarms) = &self.alarms else { return };
        for (well, e, findings) in opened {
            self.raise(alarms.as_ref(), &well, &e, &findings).await;
        }
        for (well, e) in closed {
            self.clear(alarms.as_ref(), &well, &e).await;
        }
    }

    /// Routes the alarm changes of this hub to `notifier` from now on.
    pub fn set_notifier(&self, notifier: Arc<crate::notify::Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// Installs the link that tells the other nodes about changed directives (once).
    pub fn set_announcer(&self, announce: Announcer) {
        let _ = self.announcer.set(announce);
    }

    /// Another node changed `well`'s directives (revision `revision`): if this node holds the
    /// well's engine, it is rebuilt with them (from stored data, before the well's next
    /// reading or diagnosis).
    pub fn directives_changed(&self, well: &WellId, revision: i64) {
        self.directives_seen.fetch_max(revision, Ordering::Relaxed);
        let held = self
            .shard(well)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(well);
        if !held {
            return; // built with the stored directives when first needed
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(well.clone())
            .and_modify(|(_, last)| *last = seq)
            .or_insert((seq, seq));
    }

    /// Takes every directive changed since the last one this node saw (after its link to the
    /// other nodes was down, so announcements may have been missed).
    pub async fn catch_up_directives(&self) -> Result<usize, StoreError> {
        let Some(alarms) = &self.alarms else {
            return Ok(0);
        };
        let mut after = self.directives_seen.load(Ordering::Relaxed);
        let mut changed = 0;
        loop {
            let page = alarms.directives_after(after, 1000).await?;
            for d in &page {
                self.directives_changed(&d.well_id, d.revision);
                after = after.max(d.revision);
            }
            changed += page.len();
            if page.len() < 1000 {
                return Ok(changed);
            }
        }
    }

    /// Whether this node diagnoses `well` (every well while no ownership rule is set).
    fn owns(&self, well: &WellId) -> bool {
        self.ownership().is_none_or(|owns| owns(well))
    }

    /// What became of directives recorded as `stored` (`None`: no alarm store to keep them),
    /// applied here when `here`, else announced to the other nodes.
    fn delivered(&self, well: &WellId, stored: Option<&WellDirectives>, here: bool) -> Delivery {
        let revision = stored.map(|d| d.revision);
        if let Some(r) = revision {
            self.directives_seen.fetch_max(r, Ordering::Relaxed);
        }
        let owner = match revision {
            _ if here => "applied",
            Some(r)
                if self
                    .announcer
                    .get()
                    .is_some_and(|announce| announce(well, r)) =>
            {
                "announced"
            }
            _ => "pending",
        };
        Delivery {
            stored: stored.is_some(),
            revision,
            diagnosed_here: here,
            owner,
        }
    }

    /// Retrains a well: its baseline becomes the stored readings in `[from, until)`, then
    /// everything stored after `until` is replayed through the new model.
    ///
    /// The window is recorded in the database (before the answer) so that the node that
    /// diagnoses the well uses it: this one at once, another one told through the cluster
    /// link, and any node that rebuilds the well later (restart, ownership move).
    ///
    /// A window with no settled running readings (e.g. the default last 8 h of a well whose
    /// data was backfilled) would leave the well without a baseline: that is refused, nothing
    /// is recorded, and the well keeps its current state.
    pub async fn retrain(
        &self,
        well: &WellId,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<Delivery, RetrainError> {
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let before = Timestamp(now.0.max(until.0) + 3_600_000_000);
        let mut directives = self.directives(well).await.unwrap_or(WellDirectives {
            well_id: well.clone(),
            revision: 0,
            retrain: None,
            transient: None,
        });
        directives.retrain = Some((from, until));
        // Holding the well's lock keeps live readings from interleaving with the replay. (A
        // well another node diagnoses: replayed here to check the window, kept nowhere.)
        let here = self.owned_slot(well);
        let mut guard = here.clone().unwrap_or_default().lock_owned().await;
        let done = self
            .replay(well, ReplayPlan::new(before, Some(&directives)))
            .await;
        if let Some(e) = done.history_error {
            return Err(RetrainError::History(e));
        }
        let engine = done
            .engine
            .ok_or_else(|| RetrainError::History("the replay produced no engine".into()))?;
        if engine.baseline().is_none() {
            return Err(RetrainError::NoBaseline {
                readings: done.in_window,
            });
        }
        let stored = match &self.alarms {
            Some(alarms) => Some(
                alarms
                    .record_retrain(well, from, until)
                    .await
                    .map_err(RetrainError::Store)?,
            ),
            None => None,
        };
        if here.is_some() {
            *guard = Some(engine);
        }
        drop(guard);
        if here.is_some() {
            self.apply_replayed(well, done.opened, done.closed).await;
        }
        Ok(self.delivered(well, stored.as_ref(), here.is_some()))
    }

    /// The well's engine, locked, rebuilt from stored data if needed. A well another node
    /// diagnoses gets an engine rebuilt from stored data up to now and kept nowhere: this
    /// node never sees its readings, so a kept one would go stale (and its owner raises its
    /// alarms, so the replay's are not applied here).
    async fn built(&self, well: &WellId) -> OwnedMutexGuard<Option<WellEngine>> {
        let (slot, owned) = match self.owned_slot(well) {
            Some(slot) => (slot, true),
            None => (Slot::default(), false),
        };
        let mut guard = slot.clone().lock_owned().await;
        if self.take_stale(well, u64::MAX) {
            *guard = None;
        }
        if guard.is_none() {
            let now = Timestamp::from_datetime(chrono::Utc::now());
            let (engine, o, c) = self.rebuild(well, Timestamp(now.0 + 1)).await;
            *guard = Some(engine);
            if owned {
                drop(guard);
                self.apply_replayed(well, o, c).await;
                guard = slot.lock_owned().await;
            }
        }
        guard
    }

    /// Marks a known transient of a well (a well test, a planned rate change) until `until`:
    /// its engine gives it a grace period in which only the protective rules raise alarms.
    /// Recorded in the database first (the answer waits for it), then applied here if this
    /// node diagnoses the well, else announced to the node that does.
    pub async fn mark_transient(
        &self,
        well: &WellId,
        until: Timestamp,
    ) -> Result<Delivery, StoreError> {
        let mark = TransientMark {
            marked_at: Timestamp::from_datetime(chrono::Utc::now()),
            until,
        };
        let stored = match &self.alarms {
            Some(alarms) => Some(alarms.record_transient(well, mark).await?),
            None => None,
        };
        let here = self.owns(well);
        if here {
            let mut guard = self.built(well).await;
            if let Some(engine) = guard.as_mut() {
                engine.mark_transient(until);
            }
        }
        Ok(self.delivered(well, stored.as_ref(), here))
    }

    /// The current diagnosis of a well, rebuilding its state from stored data if needed.
    pub async fn diagnosis(&self, well: &WellId) -> serde_json::Value {
        let guard = self.built(well).await;
        let Some(engine) = guard.as_ref() else {
            return serde_json::Value::Null;
        };
        let episodes: Vec<serde_json::Value> = engine
            .open_episodes()
            .iter()
            .map(|e| {
                serde_json::json!({
                    "condition": e.diagnosis.name(),
                    "severity": e.diagnosis.severity(),
                    "since": e.start.to_rfc3339(),
                    "confidence": e.confidence,
                })
            })
            .collect();
        serde_json::json!({
            "well_id": well.as_str(),
            "as_of": engine.last_ts().map(|t| t.to_rfc3339()),
            "trained": engine.is_trained(),
            "running": engine.features().running,
            "starts_last_24h": engine.starts_last_day(),
            "findings": engine.findings(),
            "open_episodes": episodes,
            "features": engine.features(),
            "baseline": engine.baseline(),
        })
    }
}

/// Pushes each well's readings of `chunk` (positions into `batch`, in time order) into its
/// engine: the episodes opened and closed, and the run/stop changes to publish.
fn push_chunk(
    chunk: &[(WellId, Vec<usize>)],
    guards: &mut [OwnedMutexGuard<Option<WellEngine>>],
    batch: &[Reading],
) -> (Vec<Opened>, Vec<Closed>, Vec<LiveEvent>) {
    let mut opened = Vec::new();
    let mut closed = Vec::new();
    let mut states = Vec::new();
    for ((well, positions), guard) in chunk.iter().zip(guards.iter_mut()) {
        let engine = guard.as_mut().expect("built above");
        for &i in positions {
            let was_running = engine.features().running;
            let out = engine.push(batch[i].ts, &batch[i].values);
            collect(well, engine, out.transitions, &mut opened, &mut closed);
            let running = engine.features().running;
            if running != was_running {
                states.push(LiveEvent::WellState {
                    well_id: well.clone(),
                    running,
                    at: batch[i].ts,
                });
            }
        }
    }
    (opened, closed, states)
}

/// Records an engine's transitions as alarms to raise and clear.
fn collect(
    well: &WellId,
    engine: &WellEngine,
    transitions: espwatch_core::diagnostics::episodes::Transitions,
    opened: &mut Vec<Opened>,
    closed: &mut Vec<Closed>,
) {
    for e in transitions.opened {
        opened.push((well.clone(), e, engine.findings().to_vec()));
    }
    for e in transitions.closed {
        closed.push((well.clone(), e));
    }
}

/// What a replay produced: the engine (`None` only when the replay task itself failed), the
/// transitions on the way, readings before the training cut-off, and a history read error.
struct Replayed {
    engine: Option<WellEngine>,
    opened: Vec<Opened>,
    closed: Vec<Closed>,
    in_window: u64,
    history_error: Option<String>,
}

/// Why a retrain was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// The window holds too few settled running readings to learn a baseline from.
    #[error(
        "the window holds {readings} readings of this well, too few of them settled running to learn a baseline"
    )]
    NoBaseline { readings: u64 },
    /// The stored history could not be read.
    #[error("reading the well's history: {0}")]
    History(String),
    /// The new window could not be recorded.
    #[error("recording the retrain: {0}")]
    Store(StoreError),
}

/// What a rebuild replays: which stored ranges, how the engine trains, and the transient mark
/// to apply where it was made.
struct ReplayPlan {
    ranges: Vec<TimeRange>,
    training: TrainingWindow,
    end_training: bool,
    transient: Option<TransientMark>,
}

impl ReplayPlan {
    /// The replay of the history before `before` with the well's `directives`: the last
    /// [`REPLAY`] of data; with a retrain window, that window as the training (ended after it,
    /// however few readings it holds), then the history after it, at most the last [`REPLAY`].
    fn new(before: Timestamp, directives: Option<&WellDirectives>) -> ReplayPlan {
        let recent = before.saturating_sub(REPLAY);
        let transient = directives.and_then(|d| d.transient);
        match directives.and_then(|d| d.retrain) {
            Some((from, until)) if from < before => {
                let trained_to = until.min(before);
                let mut ranges = vec![TimeRange {
                    from,
                    to: trained_to,
                }];
                let rest = trained_to.max(recent);
                if rest < before {
                    ranges.push(TimeRange {
                        from: rest,
                        to: before,
                    });
                }
                ReplayPlan {
                    ranges,
                    training: TrainingWindow::Until(until),
                    end_training: true,
                    transient,
                }
            }
            _ => ReplayPlan {
                ranges: vec![TimeRange {
                    from: recent,
                    to: before,
                }],
                training: TrainingWindow::Default,
                end_training: false,
                transient,
            },
        }
    }
}

/// `POST /api/v1/ask` answers "why is ESP-003 alarming" with the live diagnosis.
impl espwatch_app::ask::Diagnoses for DiagnosticsHub {
    fn diagnosis<'a>(
        &'a self,
        well: &'a WellId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<serde_json::Value>> + Send + 'a>>
    {
        Box::pin(async move {
            let d = DiagnosticsHub::diagnosis(self, well).await;
            (!d.is_null()).then_some(d)
        })
    }
}
