//! The audit writer: one background task appends audit events to the store in batches, so
//! auditing every request costs one transaction per batch, not per request.
//!
//! Behaviour (documented in README): request records are queued and written within
//! 50 ms, batched; security events (logins, lockouts, user and key changes, acknowledgements)
//! are awaited, so they are committed before the response that reports them. If a write
//! fails (the audit store is down: a PostgreSQL outage), the records are **held** in memory, in
//! order (at most 200 000), and written before any newer one when a retry succeeds (after
//! 0.5 s, backing off to 5 s); meanwhile new records join them without asking the store, and
//! a security event's request is answered at once (its record is held, not committed). The
//! outage is logged once at ERROR when it starts, summarised every minute while it lasts, and
//! once when the held records are written. Held records are reported by `/health/ready`
//! (`checks.audit.held`, `degraded`); records dropped because the held buffer or the queue is
//! full, or because the store still fails at shutdown, are counted (`write_failures`) and
//! logged at most once a minute. Availability of the plant's surveillance wins over a complete
//! trail, and any gap is visible. A record whose write failed during its commit may be written
//! twice (a duplicate in the chain, never a break).
//!
//! Flood damping (issue 18 item 4): unauthenticated requests refused with 401 or 429 are
//! recorded once per source address and minute; the rest of that minute's refusals from the
//! source become one `rejected_requests` record with their count (per status, and per error
//! type under `refused`), written when the minute is over (or at shutdown). A refused request's
//! own record names its error type in `detail.refused` (e.g. `ambiguous_credentials`). Authenticated requests are always recorded one by one.
//!
//! Anchoring (issue 18 item 3): with an [`AnchorLog`], a task anchors the chain head every
//! `audit_anchor_secs` when it moved, and [`AuditSink::anchor_now`] does at shutdown, so
//! `espwatch audit verify` detects a rewritten or truncated trail against the newest anchor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use espwatch_app::anchors::AnchorLog;
use espwatch_app::periodic::{Every, FirstTick, Next, Periodic};
use espwatch_core::Timestamp;
use espwatch_store::{AuditEvent, SecurityStore};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::extract::RequestContext;
use crate::identity::Principal;

const QUEUE: usize = 100_000;

/// When finished minutes' refusal summaries are looked for: every 5 s from the start, late
/// ticks caught up at once.
const SUMMARIES_EVERY: Every = Every {
    period: std::time::Duration::from_secs(5),
    missed: MissedTickBehavior::Burst,
    first: FirstTick::Now,
};
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
    counters: Arc<AuditCounters>,
    store: Arc<dyn SecurityStore>,
    anchors: Option<Arc<AnchorLog>>,
    rejections: Arc<std::sync::Mutex<Rejections>>,
}

/// Anonymous refusals of the current minute, per source address.
#[derive(Default)]
struct Rejections {
    minute: i64,
    by_source: std::collections::HashMap<String, Refusals>,
}

/// One source's refusals of a minute beyond its first: counts per status and per error type
/// (`unauthorized`, `ambiguous_credentials`, `rate_limited`, ...).
#[derive(Default)]
struct Refusals {
    statuses: std::collections::BTreeMap<u16, u64>,
    kinds: std::collections::BTreeMap<&'static str, u64>,
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
        let counters = Arc::new(AuditCounters::default());
        tokio::spawn(write_loop(store.clone(), rx, counters.clone()));
        let sink = AuditSink {
            tx,
            counters,
            store,
            anchors: anchors.map(Arc::new),
            rejections: Arc::default(),
        };
        {
            // Writes the summaries of finished minutes; ends with the sink's last clone.
            let weak = sink.tx.downgrade();
            let rejections = sink.rejections.clone();
            Periodic::new("audit.rejection_summaries").start_every(SUMMARIES_EVERY, move || {
                let next = match weak.upgrade() {
                    Some(tx) => {
                        let minute = now().0.div_euclid(60_000_000);
                        for event in take_rejections(&rejections, Some(minute)) {
                            let _ = tx.try_send(Item { event, done: None });
                        }
                        Next::Continue
                    }
                    None => Next::Stop,
                };
                std::future::ready(next)
            });
        }
        if let Some(anchors) = sink.anchors.clone() {
            // Holds only a weak sender: the task ends when the sink's last clone is dropped.
            // The first anchor is one period after the start; a late one pushes the next.
            let weak = sink.tx.downgrade();
            let store = sink.store.clone();
            let last = Arc::new(std::sync::Mutex::new(None));
            let every = Every {
                period: anchor_every,
                missed: MissedTickBehavior::Delay,
                first: FirstTick::AfterPeriod,
            };
            Periodic::new("audit.anchor").start_every(every, move || {
                let alive = weak.upgrade().is_some();
                let (anchors, store, last) = (anchors.clone(), store.clone(), last.clone());
                async move {
                    if !alive {
                        return Next::Stop;
                    }
                    let previous = *last.lock().unwrap_or_else(|p| p.into_inner());
                    let anchored = anchor(&anchors, store.as_ref(), previous).await;
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = anchored;
                    Next::Continue
                }
            });
        }
        sink
    }

    /// Counts an unauthenticated refusal (401/429) from `source`, of error type `kind`; true
    /// when it should still be recorded on its own (the first of its source this minute).
    pub fn note_rejection(&self, source: &str, status: u16, kind: Option<&'static str>) -> bool {
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
                *counts.statuses.entry(status).or_default() += 1;
                if let Some(kind) = kind {
                    *counts.kinds.entry(kind).or_default() += 1;
                }
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
            let lost = self.counters.failures.fetch_add(1, Ordering::Relaxed) + 1;
            // Once, then at most once a minute with the count (a full queue drops many).
            let minute = now().0.div_euclid(60_000_000);
            if self.counters.drop_logged.swap(minute, Ordering::Relaxed) != minute {
                tracing::error!(
                    lost_total = lost,
                    "AUDIT RECORDS DROPPED: the audit queue is full or closed (logged at most once a minute; `checks.audit.write_failures` counts them)"
                );
            }
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
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
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

    /// Records lost since start (dropped: the queue or the held records were full, or the
    /// store still failed at shutdown).
    pub fn failures(&self) -> u64 {
        self.counters.failures.load(Ordering::Relaxed)
    }

    /// Records held because the audit store failed, waiting to be written.
    pub fn held(&self) -> u64 {
        self.counters.held.load(Ordering::Relaxed)
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
    by_source: std::collections::HashMap<String, Refusals>,
) -> Vec<AuditEvent> {
    let start = Timestamp(minute * 60_000_000);
    by_source
        .into_iter()
        .filter(|(_, counts)| !counts.statuses.is_empty())
        .map(|(source, counts)| {
            let total: u64 = counts.statuses.values().sum();
            let statuses: serde_json::Map<String, serde_json::Value> = counts
                .statuses
                .into_iter()
                .map(|(status, n)| (status.to_string(), n.into()))
                .collect();
            let refused: serde_json::Map<String, serde_json::Value> = counts
                .kinds
                .into_iter()
                .map(|(kind, n)| (kind.to_owned(), n.into()))
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
                    "refused": refused,
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

/// Records held while the store cannot take them, at most; beyond, new records are dropped
/// and counted. About 100 MB at the size of a request record.
const MAX_HELD: usize = 200_000;
/// First retry after a failed write; doubled up to [`MAX_RETRY`] while the store keeps failing.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// While writes fail, how often one ERROR line sums the outage up.
const OUTAGE_REPORT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the write loop knows about a failing audit store.
struct Outage {
    since: tokio::time::Instant,
    next_try: tokio::time::Instant,
    backoff: std::time::Duration,
    last_report: tokio::time::Instant,
    failed_writes: u64,
    dropped: u64,
    dropped_reported: bool,
    error: String,
}

/// The records waiting for the store, oldest first, and the outage they wait out.
#[derive(Default)]
struct Backlog {
    held: std::collections::VecDeque<AuditEvent>,
    outage: Option<Outage>,
}

impl Backlog {
    /// Keeps `events` for a later write, dropping (and counting) what does not fit.
    fn hold(&mut self, events: Vec<AuditEvent>, counters: &AuditCounters) {
        for event in events {
            if self.held.len() < MAX_HELD {
                self.held.push_back(event);
            } else {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(outage) = &mut self.outage {
                    outage.dropped += 1;
                    if !outage.dropped_reported {
                        outage.dropped_reported = true;
                        tracing::error!(
                            held = MAX_HELD,
                            "AUDIT RECORDS DROPPED: the audit store has been failing for {:.0} s and {MAX_HELD} records are held; newer records are dropped and counted until it is back",
                            outage.since.elapsed().as_secs_f64()
                        );
                    }
                }
            }
        }
        counters
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Writes the held records (oldest first, in batches), then `events`; on failure every
    /// unwritten record is held again and the error returned.
    async fn write(
        &mut self,
        store: &dyn SecurityStore,
        events: Vec<AuditEvent>,
        counters: &AuditCounters,
    ) -> Result<usize, espwatch_store::StoreError> {
        let mut written = 0;
        while !self.held.is_empty() {
            let n = self.held.len().min(MAX_BATCH);
            let chunk: Vec<AuditEvent> = self.held.range(..n).cloned().collect();
            if let Err(e) = store.append_audit(chunk).await {
                self.hold(events, counters);
                return Err(e);
            }
            self.held.drain(..n);
            written += n;
            counters
                .held
                .store(self.held.len() as u64, Ordering::Relaxed);
        }
        if !events.is_empty() {
            let n = events.len();
            if let Err(e) = store.append_audit(events.clone()).await {
                self.hold(events, counters);
                return Err(e);
            }
            written += n;
        }
        Ok(written)
    }

    /// A write failed: the first failure of an outage is logged at ERROR, later ones only in
    /// the periodic summary; the next attempt waits (backing off).
    fn failed(&mut self, error: &espwatch_store::StoreError) {
        let now = tokio::time::Instant::now();
        match &mut self.outage {
            None => {
                tracing::error!(
                    error = %error,
                    held = self.held.len(),
                    "AUDIT WRITES FAILING: records are held in memory (at most {MAX_HELD}) and written in order when the audit store answers again; retrying every {} s at most, summarised every {} s",
                    MAX_RETRY.as_secs(),
                    OUTAGE_REPORT.as_secs()
                );
                self.outage = Some(Outage {
                    since: now,
                    next_try: now + FIRST_RETRY,
                    backoff: FIRST_RETRY,
                    last_report: now,
                    failed_writes: 1,
                    dropped: 0,
                    dropped_reported: false,
                    error: error.to_string(),
                });
            }
            Some(outage) => {
                outage.failed_writes += 1;
                outage.backoff = (outage.backoff * 2).min(MAX_RETRY);
                outage.next_try = now + outage.backoff;
                outage.error = error.to_string();
                if outage.last_report.elapsed() >= OUTAGE_REPORT {
                    outage.last_report = now;
                    tracing::error!(
                        error = %outage.error,
                        held = self.held.len(),
                        dropped = outage.dropped,
                        failed_writes = outage.failed_writes,
                        "AUDIT WRITES STILL FAILING for {:.0} s",
                        outage.since.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// A write succeeded: the end of an outage is logged once.
    fn recovered(&mut self, written: usize) {
        if let Some(outage) = self.outage.take() {
            tracing::warn!(
                written,
                dropped = outage.dropped,
                failed_writes = outage.failed_writes,
                "audit writes recovered after {:.1} s: the held records are written",
                outage.since.elapsed().as_secs_f64()
            );
        }
    }

    /// Whether a write should be tried now (no outage, or its retry time has come).
    fn may_try(&self) -> bool {
        self.outage
            .as_ref()
            .is_none_or(|o| tokio::time::Instant::now() >= o.next_try)
    }
}

/// Shared with the sink: records lost, records held.
#[derive(Default)]
struct AuditCounters {
    failures: AtomicU64,
    held: AtomicU64,
    /// The minute a dropped record was last logged.
    drop_logged: std::sync::atomic::AtomicI64,
}

async fn write_loop(
    store: Arc<dyn SecurityStore>,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<AuditCounters>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut backlog = Backlog::default();
    loop {
        let received = match backlog.outage.as_ref().map(|o| o.next_try) {
            // Waiting out an outage: wake at the next retry even if nothing arrives.
            Some(retry) => tokio::time::timeout_at(retry, rx.recv_many(&mut batch, MAX_BATCH))
                .await
                .ok(),
            None => Some(rx.recv_many(&mut batch, MAX_BATCH).await),
        };
        let closed = received == Some(0);
        if closed && backlog.held.is_empty() {
            break;
        }
        // Request records wait a little for company: under load that turns one audit
        // transaction per request into one per LINGER. A security event ends the wait, since
        // its request is waiting for the commit.
        if !closed && backlog.outage.is_none() {
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH && batch.iter().all(|item| item.done.is_none()) {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                    Ok(received) if received > 0 => {}
                    // Closed (shutting down) or waited long enough: write what we have.
                    _ => break,
                }
            }
        }
        let (events, waiters): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|item| (item.event, item.done)).unzip();
        let ok = if backlog.may_try() || closed {
            match backlog.write(store.as_ref(), events, &counters).await {
                Ok(written) => {
                    backlog.recovered(written);
                    true
                }
                Err(e) => {
                    backlog.failed(&e);
                    false
                }
            }
        } else {
            // The store failed moments ago: keep these for the next attempt without asking it.
            backlog.hold(events, &counters);
            false
        };
        // Security events are never kept waiting for a failing store: "not committed (yet)".
        for done in waiters.into_iter().flatten() {
            let _ = done.send(ok);
        }
        if closed {
            let lost = backlog.held.len();
            if lost > 0 {
                counters.failures.fetch_add(lost as u64, Ordering::Relaxed);
                tracing::error!(
                    records = lost,
                    "AUDIT RECORDS LOST: the audit store still fails at shutdown"
                );
            }
            break;
        }
    }
}
