//! The audit writer: one background task appends audit events to the store in batches, so
//! auditing every request costs one transaction per batch, not per request.
//!
//! Behaviour (documented in README): request records are queued and written within
//! 50 ms, batched; security events (logins, lockouts, user and key changes, acknowledgements)
//! are awaited, so they are committed before the response that reports them. If a write
//! fails, the failure is logged at ERROR with the number of records lost, counted
//! (`audit_write_failures` in `/health/ready`, which then reports `degraded`), and the request
//! is still answered: availability of the plant's surveillance wins over a complete trail,
//! and the gap is visible. A full queue (the store cannot keep up) drops and counts likewise.
//!
//! Flood damping (issue 18 item 4): unauthenticated requests refused with 401 or 429 are
//! recorded once per source address and minute; the rest of that minute's refusals from the
//! source become one `rejected_requests` record with their count (per status), written when
//! the minute is over (or at shutdown). Authenticated requests are always recorded one by one.
//!
//! Anchoring (issue 18 item 3): with an [`AnchorLog`], a task anchors the chain head every
//! `audit_anchor_secs` when it moved, and [`AuditSink::anchor_now`] does at shutdown, so
//! `espwatch audit verify` detects a rewritten or truncated trail against the newest anchor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use espwatch_app::anchors::AnchorLog;
use espwatch_core::Timestamp;
use espwatch_store::{AuditEvent, SecurityStore};
use tokio::sync::{mpsc, oneshot};

use crate::extract::RequestContext;
use crate::identity::Principal;

const QUEUE: usize = 100_000;
const MAX_BATCH: usize = 2_000;
/// Longest a request record waits for others to share its transaction.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

struct Item {
    event: AuditEvent,
    done: Option<oneshot::Sender<bool>>,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Item>,
    failures: Arc<AtomicU64>,
    store: Arc<dyn SecurityStore>,
    anchors: Option<Arc<AnchorLog>>,
    rejections: Arc<std::sync::Mutex<Rejections>>,
}

/// Anonymous refusals of the current minute, per source address.
#[derive(Default)]
struct Rejections {
    minute: i64,
    by_source: std::collections::HashMap<String, std::collections::BTreeMap<u16, u64>>,
}

/// Sources tracked per minute at most; beyond, refusals are counted under `*`.
const MAX_REJECTION_SOURCES: usize = 10_000;

impl AuditSink {
    /// Starts the writer task (needs a Tokio runtime), and with `anchors` the task anchoring
    /// the chain head every `anchor_every`.
    pub fn start(
        store: Arc<dyn SecurityStore>,
        anchors: Option<AnchorLog>,
        anchor_every: std::time::Duration,
    ) -> AuditSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failures = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(store.clone(), rx, failures.clone()));
        let sink = AuditSink {
            tx,
            failures,
            store,
            anchors: anchors.map(Arc::new),
            rejections: Arc::default(),
        };
        {
            // Writes the summaries of finished minutes; ends with the sink's last clone.
            let weak = sink.tx.downgrade();
            let rejections = sink.rejections.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    ticks.tick().await;
                    let Some(tx) = weak.upgrade() else { break };
                    let minute = now().0.div_euclid(60_000_000);
                    for event in take_rejections(&rejections, Some(minute)) {
                        let _ = tx.try_send(Item { event, done: None });
                    }
                }
            });
        }
        if sink.anchors.is_some() {
            // Holds only a weak sender: the task ends when the sink's last clone is dropped.
            let weak = sink.tx.downgrade();
            let (store, anchors) = (sink.store.clone(), sink.anchors.clone());
            tokio::spawn(async move {
                let mut last = None;
                let mut ticks = tokio::time::interval(anchor_every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    if weak.upgrade().is_none() {
                        break;
                    }
                    if let Some(anchors) = &anchors {
                        last = anchor(anchors, store.as_ref(), last).await;
                    }
                }
            });
        }
        sink
    }

    /// Counts an unauthenticated refusal (401/429) from `source`; true when it should still
    /// be recorded on its own (the first of its source this minute).
    pub fn note_rejection(&self, source: &str, status: u16) -> bool {
        let minute = now().0.div_euclid(60_000_000);
        let finished = {
            let mut r = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
            let finished = if r.minute != minute {
                let old = std::mem::take(&mut r.by_source);
                let old_minute = r.minute;
                r.minute = minute;
                Some((old_minute, old))
            } else {
                None
            };
            let key = if r.by_source.len() >= MAX_REJECTION_SOURCES
                && !r.by_source.contains_key(source)
            {
                "*"
            } else {
                source
            };
            let first = !r.by_source.contains_key(key);
            let counts = r.by_source.entry(key.to_owned()).or_default();
            if !first {
                *counts.entry(status).or_default() += 1;
            }
            (first, finished)
        };
        let (first, finished) = finished;
        if let Some((minute, by_source)) = finished {
            for event in summaries(minute, by_source) {
                self.record(event);
            }
        }
        first
    }

    /// Writes the refusal summaries not written yet (at shutdown).
    pub fn flush_rejections(&self) {
        for event in take_rejections(&self.rejections, None) {
            self.record(event);
        }
    }

    /// Anchors the chain head now (at shutdown, after the last record is committed).
    pub async fn anchor_now(&self) {
        if let Some(anchors) = &self.anchors {
            anchor(anchors, self.store.as_ref(), None).await;
        }
    }

    /// Queues a request record; never waits.
    pub fn record(&self, event: AuditEvent) {
        if self.tx.try_send(Item { event, done: None }).is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("AUDIT RECORD DROPPED: the audit queue is full or closed");
        }
    }

    /// Writes a security event and waits until it is committed; false when it could not be.
    pub async fn record_committed(&self, event: AuditEvent) -> bool {
        let (done, wait) = oneshot::channel();
        let kind = event.kind.clone();
        // Security events only (kinds are constants of the code): bounded labels.
        crate::metrics::record_security_event(&kind);
        if kind == "lockout" {
            let via = if event.detail.get("via").is_some() {
                "password_change"
            } else {
                "login"
            };
            metrics::counter!(crate::metrics::AUTH_LOCKOUTS, "via" => via).increment(1);
        }
        if self
            .tx
            .send(Item {
                event,
                done: Some(done),
            })
            .await
            .is_err()
        {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(kind, "AUDIT EVENT LOST: the audit writer has stopped");
            return false;
        }
        wait.await.unwrap_or(false)
    }

    /// Records, and waits for the commit of, a security event done by `principal` in the
    /// request `context` (user and key changes, acknowledgements, logout, password change).
    pub async fn record_action(
        &self,
        kind: &str,
        context: &RequestContext,
        principal: &Principal,
        detail: serde_json::Value,
    ) -> bool {
        let event = security_event(
            kind,
            context,
            Some(principal.actor()),
            Some(principal.role.name()),
            detail,
        );
        self.record_committed(event).await
    }

    /// Records lost since start (write failures and drops).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// A security event with the request's id and source filled in.
pub fn security_event(
    kind: &str,
    context: &RequestContext,
    actor: Option<String>,
    role: Option<&str>,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        ts: now(),
        kind: kind.to_owned(),
        request_id: context.request_id.clone(),
        method: None,
        route: None,
        status: None,
        actor,
        role: role.map(str::to_owned),
        source: context.source.as_ref().map(|s| s.0.clone()),
        duration_ms: None,
        detail,
    }
}

/// Takes the refusals counted before `current_minute` (all of them with `None`).
fn take_rejections(
    rejections: &std::sync::Mutex<Rejections>,
    current_minute: Option<i64>,
) -> Vec<AuditEvent> {
    let mut r = rejections.lock().unwrap_or_else(|p| p.into_inner());
    if current_minute == Some(r.minute) {
        return Vec::new();
    }
    let by_source = std::mem::take(&mut r.by_source);
    summaries(r.minute, by_source)
}

/// One `rejected_requests` record per source with refusals beyond the first.
fn summaries(
    minute: i64,
    by_source: std::collections::HashMap<String, std::collections::BTreeMap<u16, u64>>,
) -> Vec<AuditEvent> {
    let start = Timestamp(minute * 60_000_000);
    by_source
        .into_iter()
        .filter(|(_, counts)| !counts.is_empty())
        .map(|(source, counts)| {
            let total: u64 = counts.values().sum();
            let statuses: serde_json::Map<String, serde_json::Value> = counts
                .into_iter()
                .map(|(status, n)| (status.to_string(), n.into()))
                .collect();
            AuditEvent {
                ts: now(),
                kind: "rejected_requests".into(),
                request_id: None,
                method: None,
                route: None,
                status: None,
                actor: None,
                role: None,
                source: Some(source),
                duration_ms: None,
                detail: serde_json::json!({
                    "count": total,
                    "statuses": statuses,
                    "minute": start.to_rfc3339(),
                    "note": "unauthenticated requests refused after the first of this source and minute",
                }),
            }
        })
        .collect()
}

/// Anchors the head when it is not `last`; returns the head anchored (or `last` on failure,
/// logged at ERROR: an anchor that cannot be written weakens truncation detection).
async fn anchor(anchors: &AnchorLog, store: &dyn SecurityStore, last: Option<i64>) -> Option<i64> {
    let head = match store
        .list_audit(&espwatch_store::AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
    {
        Ok(records) => records.into_iter().next().map(|r| r.id),
        Err(e) => {
            tracing::error!(error = %e, "AUDIT ANCHOR FAILED: cannot read the chain head");
            return last;
        }
    };
    if head.is_none() || head == last {
        return last;
    }
    match anchors.anchor_head(store).await {
        Ok(id) => id.or(last),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "AUDIT ANCHOR FAILED");
            last
        }
    }
}

async fn write_loop(
    store: Arc<dyn SecurityStore>,
    mut rx: mpsc::Receiver<Item>,
    failures: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Request records wait a little for company: under load that turns one audit
        // transaction per request into one per LINGER. A security event ends the wait, since
        // its request is waiting for the commit.
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH && batch.iter().all(|item| item.done.is_none()) {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(received) if received > 0 => {}
                // Closed (shutting down) or waited long enough: write what we have.
                _ => break,
            }
        }
        let (events, waiters): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|item| (item.event, item.done)).unzip();
        let count = events.len();
        let ok = match store.append_audit(events).await {
            Ok(_) => true,
            Err(e) => {
                failures.fetch_add(count as u64, Ordering::Relaxed);
                tracing::error!(records = count, error = %e, "AUDIT WRITE FAILED: records lost");
                false
            }
        };
        for done in waiters.into_iter().flatten() {
            let _ = done.send(ok);
        }
    }
}
