//! Online diagnostics: every accepted reading advances its well's engine (the same pure engine
//! as `espwatch diagnose`) on a background task, off the request path. Episodes opening and
//! closing raise and clear alarms in the [`AlarmStore`]. A well's state is rebuilt from stored
//! telemetry (the last `REPLAY` of data) the first time it is needed after a start, so a
//! restart loses nothing but the time to replay.

use std::collections::HashMap;
use std::sync::Arc;

use espwatch_core::diagnostics::{Episode, Finding, Thresholds, TrainingWindow, WellEngine};
use espwatch_core::{Reading, TimeRange, Timestamp, WellId};
use espwatch_store::{AlarmStore, NewAlarm, Store};
use tokio::sync::{Mutex, mpsc};

/// An episode that opened, with the findings of the reading that opened it.
type Opened = (WellId, Episode, Vec<Finding>);

/// Stored history replayed into a well's engine when it is first needed.
const REPLAY_MICROS: i64 = 48 * 3_600_000_000;

pub struct DiagnosticsHub {
    store: Arc<dyn Store>,
    alarms: Option<Arc<dyn AlarmStore>>,
    thresholds: Thresholds,
    engines: Mutex<HashMap<WellId, WellEngine>>,
    tx: mpsc::UnboundedSender<Vec<Reading>>,
}

impl DiagnosticsHub {
    /// Starts the hub and its background task (needs a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, alarms: Option<Arc<dyn AlarmStore>>) -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Reading>>();
        let hub = Arc::new(DiagnosticsHub {
            store,
            alarms,
            thresholds: Thresholds::default(),
            engines: Mutex::new(HashMap::new()),
            tx,
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let Some(hub) = weak.upgrade() else { break };
                hub.advance(batch).await;
            }
        });
        hub
    }

    /// Queues accepted readings; returns at once.
    pub fn submit(&self, readings: Vec<Reading>) {
        if !readings.is_empty() && self.tx.send(readings).is_err() {
            tracing::warn!("diagnostics task stopped; readings not diagnosed");
        }
    }

    async fn advance(&self, batch: Vec<Reading>) {
        // Each engine needs its well's readings in time order. Grouping positions by well
        // (hashing each id once) and sorting only a group that arrived out of order is far
        // cheaper than sorting the whole batch by (well id, ts), which compared and moved
        // every reading about ten times.
        let mut by_well: HashMap<&WellId, Vec<usize>, foldhash::fast::RandomState> =
            HashMap::default();
        for (i, reading) in batch.iter().enumerate() {
            by_well.entry(&reading.well_id).or_default().push(i);
        }
        let mut groups: Vec<(&WellId, Vec<usize>)> = by_well.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        let mut engines = self.engines.lock().await;
        for (well, mut positions) in groups {
            if !positions.is_sorted_by_key(|&i| batch[i].ts) {
                // Stable: readings with equal timestamps keep their arrival order.
                positions.sort_by_key(|&i| batch[i].ts);
            }
            let first_ts = batch[positions[0]].ts;
            if !engines.contains_key(well) {
                let (engine, o, c) = self.rebuild(well, first_ts).await;
                engines.insert(well.clone(), engine);
                opened.extend(o);
                closed.extend(c);
            }
            let engine = engines.get_mut(well).expect("inserted");
            for i in positions {
                let out = engine.push(batch[i].ts, &batch[i].values);
                for e in out.transitions.opened {
                    opened.push((well.clone(), e, engine.findings().to_vec()));
                }
                for e in out.transitions.closed {
                    closed.push((well.clone(), e));
                }
            }
        }
        drop(engines);
        self.apply(opened, closed).await;
    }

    /// A fresh engine fed with the stored history before `before`.
    async fn rebuild(
        &self,
        well: &WellId,
        before: Timestamp,
    ) -> (WellEngine, Vec<Opened>, Vec<(WellId, Episode)>) {
        let meta = match self.store.get_well(well).await {
            Ok(r) => r.map(|r| r.meta),
            Err(e) => {
                tracing::warn!(%well, error = %e, "diagnostics: cannot read well metadata");
                None
            }
        };
        let mut engine = WellEngine::new(
            meta.as_ref(),
            self.thresholds.clone(),
            TrainingWindow::Default,
        );
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        let range = TimeRange {
            from: Timestamp(before.0 - REPLAY_MICROS),
            to: before,
        };
        match self.store.read_range(well, range).await {
            Ok(points) => {
                for (ts, values) in points {
                    let out = engine.push(ts, &values);
                    for e in out.transitions.opened {
                        opened.push((well.clone(), e, engine.findings().to_vec()));
                    }
                    for e in out.transitions.closed {
                        closed.push((well.clone(), e));
                    }
                }
            }
            Err(e) => tracing::warn!(%well, error = %e, "diagnostics: cannot replay history"),
        }
        (engine, opened, closed)
    }

    async fn apply(&self, opened: Vec<Opened>, closed: Vec<(WellId, Episode)>) {
        let Some(alarms) = &self.alarms else { return };
        for (well, e, findings) in opened {
            let finding = findings.iter().find(|f| f.diagnosis == e.diagnosis);
            let detail = serde_json::json!({
                "evidence": finding.map(|f| &f.evidence),
                "action": espwatch_core::diagnostics::action_for(e.diagnosis),
            });
            let new = NewAlarm {
                well_id: well.to_string(),
                condition: e.diagnosis.name().to_owned(),
                severity: e.diagnosis.severity().to_owned(),
                confidence: e.confidence,
                started_at: e.start,
                detail,
            };
            if let Err(err) = alarms.raise_alarm(new).await {
                tracing::error!(%well, error = %err, "raising alarm failed");
            }
        }
        for (well, e) in closed {
            let end = e.end.unwrap_or(e.start);
            if let Err(err) = alarms
                .clear_alarm(well.as_str(), e.diagnosis.name(), end)
                .await
            {
                tracing::error!(%well, error = %err, "clearing alarm failed");
            }
        }
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
        let meta = self
            .store
            .get_well(well)
            .await
            .ok()
            .flatten()
            .map(|r| r.meta);
        let mut engine = WellEngine::new(
            meta.as_ref(),
            self.thresholds.clone(),
            TrainingWindow::Until(until),
        );
        let mut engines = self.engines.lock().await;
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let range = TimeRange {
            from,
            to: Timestamp(now.0.max(until.0) + 3_600_000_000),
        };
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        let mut in_window = 0u64;
        match self.store.read_range(well, range).await {
            Ok(points) => {
                for (ts, values) in points {
                    in_window += u64::from(ts < until);
                    let out = engine.push(ts, &values);
                    for e in out.transitions.opened {
                        opened.push((well.clone(), e, engine.findings().to_vec()));
                    }
                    closed.extend(
                        out.transitions
                            .closed
                            .into_iter()
                            .map(|e| (well.clone(), e)),
                    );
                }
            }
            Err(e) => return Err(RetrainError::History(e.to_string())),
        }
        engine.end_training();
        if engine.baseline().is_none() {
            return Err(RetrainError::NoBaseline {
                readings: in_window,
            });
        }
        engines.insert(well.clone(), engine);
        drop(engines);
        self.apply(opened, closed).await;
        Ok(())
    }

    /// The current diagnosis of a well, rebuilding its state from stored data if needed.
    pub async fn diagnosis(&self, well: &WellId) -> serde_json::Value {
        let mut engines = self.engines.lock().await;
        if !engines.contains_key(well) {
            let now = Timestamp::from_datetime(chrono::Utc::now());
            let (engine, o, c) = self.rebuild(well, Timestamp(now.0 + 1)).await;
            engines.insert(well.clone(), engine);
            drop(engines);
            self.apply(o, c).await;
            engines = self.engines.lock().await;
        }
        let Some(engine) = engines.get(well) else {
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
