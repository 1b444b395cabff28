//! Online diagnostics: every accepted reading advances its well's engine (the same pure engine
//! as `espwatch diagnose`) on a background task, off the request path. Episodes opening and
//! closing raise and clear alarms in the [`AlarmStore`]. A well's state is rebuilt from stored
//! telemetry (the last `REPLAY` of data) the first time it is needed after a start, so a
//! restart loses nothing but the time to replay.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use espwatch_core::diagnostics::{Episode, Finding, Thresholds, TrainingWindow, WellEngine};
use espwatch_core::{Reading, TimeRange, Timestamp, WellId};
use espwatch_store::{AlarmStore, NewAlarm, Store};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};

use crate::live::{AlarmChange, LiveEvent, LiveHub};

/// An episode that opened, with the findings of the reading that opened it.
type Opened = (WellId, Episode, Vec<Finding>);
type Closed = (WellId, Episode);

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
    /// Readings diagnosed since start.
    pub diagnosed_readings: u64,
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
    /// Which wells this node diagnoses when several nodes share the database (`None`: every
    /// well whose readings it is given); see [`DiagnosticsHub::set_ownership`].
    owner: std::sync::RwLock<Option<Ownership>>,
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
            owner: std::sync::RwLock::new(None),
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let Some(hub) = weak.upgrade() else { break };
                let n = batch.readings.len() as u64;
                hub.lag_ms
                    .store(batch.at.elapsed().as_millis() as u64, Ordering::Relaxed);
                hub.advance(batch.readings, batch.seq).await;
                hub.queued.fetch_sub(n, Ordering::Relaxed);
                hub.diagnosed.fetch_add(n, Ordering::Relaxed);
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
    async fn build_owned(
        &self,
        well: &WellId,
        before: Timestamp,
        seq: u64,
    ) -> (Vec<Opened>, Vec<Closed>) {
        let (mut opened, mut closed) = (Vec::new(), Vec::new());
        if let Some(slot) = self.owned_slot(well) {
            let mut guard = slot.lock_owned().await;
            if self.take_stale(well, seq) {
                *guard = None;
            }
            self.build(&mut guard, well, before, &mut opened, &mut closed)
                .await;
        }
        (opened, closed)
    }

    async fn advance(&self, batch: Vec<Reading>, seq: u64) {
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
            let built: Vec<(Vec<Opened>, Vec<Closed>)> = futures_util::stream::iter(builds)
                .buffer_unordered(REBUILDS_IN_FLIGHT)
                .collect()
                .await;
            for (o, c) in built {
                opened.extend(o);
                closed.extend(c);
            }
            let mut locked = Vec::with_capacity(chunk.len());
            let mut guards = Vec::with_capacity(chunk.len());
            for (well, positions) in chunk {
                // A well that moved to another node meanwhile is that node's now.
                let Some(slot) = self.owned_slot(&well) else {
                    continue;
                };
                let mut guard = slot.lock_owned().await;
                // Only when the state was dropped in between (ownership changed).
                self.build(
                    &mut guard,
                    &well,
                    batch[positions[0]].ts,
                    &mut opened,
                    &mut closed,
                )
                .await;
                guards.push(guard);
                locked.push((well, positions));
            }
            let chunk = locked;
            // A few readings (single-reading requests, one at a time) are pushed right here:
            // a push costs microseconds, a hop to the blocking pool (wake a thread, switch to
            // it and back) cost more than the push itself and was the largest single part of
            // a single-reading request's CPU. Larger chunks go to the blocking pool as before.
            let readings: usize = chunk.iter().map(|(_, p)| p.len()).sum();
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
        self.apply(opened, closed).await;
    }

    /// Builds a well's engine from the stored history before `before` unless it has one.
    async fn build(
        &self,
        guard: &mut OwnedMutexGuard<Option<WellEngine>>,
        well: &WellId,
        before: Timestamp,
        opened: &mut Vec<Opened>,
        closed: &mut Vec<Closed>,
    ) {
        if guard.is_none() {
            let (engine, o, c) = self.rebuild(well, before).await;
            **guard = Some(engine);
            opened.extend(o);
            closed.extend(c);
        }
    }

    /// A fresh engine fed with the stored history in `range`, read and replayed on the
    /// blocking pool. `training` as for [`WellEngine::new`]; `end_training` ends it after.
    async fn replay(
        &self,
        well: &WellId,
        range: TimeRange,
        training: TrainingWindow,
        end_training: bool,
    ) -> Replayed {
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
            let until = match training {
                TrainingWindow::Until(until) => Some(until),
                _ => None,
            };
            let mut engine = WellEngine::new(meta.as_ref(), thresholds.clone(), training);
            let mut done = Replayed {
                engine: None,
                opened: Vec::new(),
                closed: Vec::new(),
                in_window: 0,
                history_error: None,
            };
            match runtime.block_on(store.read_range(&well, range)) {
                Ok(points) => {
                    for (ts, values) in points {
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
                Err(e) => done.history_error = Some(e.to_string()),
            }
            if end_training {
                engine.end_training();
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

    /// A fresh engine fed with the stored history before `before`.
    async fn rebuild(
        &self,
        well: &WellId,
        before: Timestamp,
    ) -> (WellEngine, Vec<Opened>, Vec<Closed>) {
        let range = TimeRange {
            from: before.saturating_sub(REPLAY),
            to: before,
        };
        let done = self
            .replay(well, range, TrainingWindow::Default, false)
            .await;
        if let Some(e) = &done.history_error {
            tracing::warn!(%well, error = %e, "diagnostics: cannot replay history");
        }
        let engine = done.engine.unwrap_or_else(|| {
            WellEngine::new(None, self.thresholds.clone(), TrainingWindow::Default)
        });
        (engine, done.opened, done.closed)
    }

    async fn apply(&self, opened: Vec<Opened>, closed: Vec<Closed>) {
        let Some(alarms) = &self.alarms else { return };
        for (well, e, findings) in opened {
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
        for (well, e) in closed {
            let end = e.end.unwrap_or(e.start);
            match alarms.clear_alarm(&well, e.diagnosis, end).await {
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
    }

    /// Routes the alarm changes of this hub to `notifier` from now on.
    pub fn set_notifier(&self, notifier: Arc<crate::notify::Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// Retrains a well: its baseline becomes the stored readings in `[from, until)`, then
    /// everything stored after `until` is replayed through the new model.
    ///
    /// A window with no settled running readings (e.g. the default last 8 h of a well whose
    /// data was backfilled) would leave the well without a baseline: that is refused, and the
    /// well keeps its current state.
    pub async fn retrain(
        &self,
        well: &WellId,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<(), RetrainError> {
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let range = TimeRange {
            from,
            to: Timestamp(now.0.max(until.0) + 3_600_000_000),
        };
        // Holding the well's lock keeps live readings from interleaving with the replay. (A
        // well another node diagnoses: retrained here for this answer only.)
        let mut guard = self.owned_slot(well).unwrap_or_default().lock_owned().await;
        let done = self
            .replay(well, range, TrainingWindow::Until(until), true)
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
        *guard = Some(engine);
        drop(guard);
        self.apply(done.opened, done.closed).await;
        Ok(())
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
                self.apply(o, c).await;
                guard = slot.lock_owned().await;
            }
        }
        guard
    }

    /// Marks a known transient of a well (a well test, a planned rate change) until `until`:
    /// its engine gives it a grace period in which only the protective rules raise alarms.
    pub async fn mark_transient(&self, well: &WellId, until: Timestamp) {
        let mut guard = self.built(well).await;
        if let Some(engine) = guard.as_mut() {
            engine.mark_transient(until);
        }
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
