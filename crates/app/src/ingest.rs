//! The ingestion pipeline shared by `POST /api/v1/telemetry` and `espwatch ingest`:
//! decode a payload, append what is valid, and report per reading.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use espwatch_core::WellId;
use espwatch_core::access::WellScope;
use espwatch_core::ingest::{self, DecodeError, DecodeOptions, Item, PayloadFormat};
use espwatch_core::localtime::UtcOffset;
use espwatch_store::{AppendOptions, ReadingOutcome, Store, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Bodies above this size are decoded on the blocking pool instead of the async workers.
const INLINE_DECODE_LIMIT: usize = 256 * 1024;

/// The decoders a pipeline shares, and how long a payload may wait for one.
///
/// Payloads decoded at once: as many as the machine has cores by default. Under overload, more
/// would only share the CPU among themselves (hundreds of decodes on the blocking pool made
/// every request, the 503s and the health probes wait seconds for a core), and hold more
/// decoded readings in memory at once. With a deadline, a payload that waits longer for a
/// decoder is refused ([`IngestError::Busy`], nothing written), and while the oldest waiter is
/// already past it, new payloads are refused at once ([`DecodeSlots::saturated`]).
pub struct DecodeSlots {
    permits: tokio::sync::Semaphore,
    deadline: Option<Duration>,
    /// Payloads waiting for a decoder: sequence number (so the first is the oldest) → since.
    waiters: Mutex<BTreeMap<u64, Instant>>,
    next: AtomicU64,
}

impl DecodeSlots {
    /// `decoders` at once (0: one per core); `deadline`: longest wait for one (None: no limit).
    pub fn new(decoders: usize, deadline: Option<Duration>) -> DecodeSlots {
        let decoders = match decoders {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        DecodeSlots {
            permits: tokio::sync::Semaphore::new(decoders),
            deadline,
            waiters: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// One per core, no deadline: for callers without a server's configuration (`espwatch ingest`).
    pub fn shared() -> &'static DecodeSlots {
        static SLOTS: std::sync::OnceLock<DecodeSlots> = std::sync::OnceLock::new();
        SLOTS.get_or_init(|| DecodeSlots::new(0, None))
    }

    /// Payloads waiting for a decoder now.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True while the oldest payload waiting for a decoder has waited past the deadline: a new
    /// one would wait longer still, so it is refused at once.
    pub fn saturated(&self) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters
            .first_key_value()
            .is_some_and(|(_, since)| since.elapsed() >= deadline)
    }

    /// A decoder, waiting at most the deadline (FIFO among waiters).
    async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>, IngestError> {
        let closed = |e: tokio::sync::AcquireError| IngestError::Join(e.to_string());
        let Some(deadline) = self.deadline else {
            return self.permits.acquire().await.map_err(closed);
        };
        if self.saturated() {
            return Err(IngestError::Busy);
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, Instant::now());
        // Leaves the queue however the wait ends (slot, deadline, or the request dropped).
        struct Waiting<'a>(&'a DecodeSlots, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let mut waiters = self.0.waiters.lock().unwrap_or_else(|e| e.into_inner());
                waiters.remove(&self.1);
            }
        }
        let _waiting = Waiting(self, seq);
        match tokio::time::timeout(deadline, self.permits.acquire()).await {
            Ok(permit) => permit.map_err(closed),
            Err(_) => Err(IngestError::Busy),
        }
    }
}

/// Outcome of ingesting one payload.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct IngestReport {
    /// Readings stored (committed before this report was produced).
    pub accepted: usize,
    /// Readings whose `(well_id, ts)` was already stored; the first value wins.
    pub duplicates: usize,
    /// Of `accepted`, readings written to the outage spool because the database is down:
    /// durable, stored when it is back (a duplicate among them is dropped then). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spooled: usize,
    /// Readings refused, with every reason per field, sorted by index.
    pub rejected: Vec<RejectedReading>,
    /// Non-fatal remarks (ignored legacy fields, defaulted timestamps).
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<serde_json::Value>,
    /// The wells the valid readings named (accepted or duplicates), sorted, once each: not
    /// part of the answer, for callers that report per well.
    #[serde(skip)]
    pub wells: Vec<WellId>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectedReading {
    /// 0-based position of the reading in the payload (data row for CSV, non-blank line for NDJSON).
    pub index: usize,
    /// The well id as sent, when there was one.
    pub well_id: Option<String>,
    pub errors: Vec<FieldProblem>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldProblem {
    /// Canonical field name (a legacy alias is named in `reason`), an unknown key as sent, or `*` for the reading as a whole.
    pub field: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the payload cannot be parsed: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("decoding failed unexpectedly: {0}")]
    Join(String),
    /// No decoder became free within the deadline: nothing was decoded or written.
    #[error("no decoder became free in time (overloaded)")]
    Busy,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl IngestReport {
    /// Readings the payload contained.
    pub fn total(&self) -> usize {
        self.accepted + self.duplicates + self.rejected.len()
    }
}

/// The registry zones (`WellMeta::timezone`) of `wells`, for those that have one: what
/// [`ingest::apply_well_zones`] decodes their naive local timestamps with when the sender
/// declared no zone. Shared with the field protocols.
pub async fn registry_zones(
    store: &dyn Store,
    wells: &[WellId],
) -> Result<Vec<(WellId, UtcOffset)>, StoreError> {
    let mut zones = Vec::new();
    for well in wells {
        if let Some(zone) = store.get_well(well).await?.and_then(|r| r.meta.zone()) {
            zones.push((well.clone(), zone));
        }
    }
    Ok(zones)
}

/// Decodes `body` and appends its valid readings; returns after they are committed.
pub async fn ingest_payload(
    store: &dyn Store,
    format: PayloadFormat,
    body: Bytes,
    decode: DecodeOptions,
    append: AppendOptions,
) -> Result<IngestReport, IngestError> {
    let decoded = decode_payload(store, format, body, decode, DecodeSlots::shared()).await?;
    Ok(
        append_decoded(store, decoded, append, &WellScope::All, false)
            .await?
            .0,
    )
}

/// As [`ingest_payload`], also returning the readings that were accepted (for diagnostics).
pub async fn ingest_payload_collect(
    store: &dyn Store,
    format: PayloadFormat,
    body: Bytes,
    decode: DecodeOptions,
    append: AppendOptions,
    scope: &WellScope,
    slots: &DecodeSlots,
) -> Result<(IngestReport, Vec<espwatch_core::Reading>), IngestError> {
    let decoded = decode_payload(store, format, body, decode, slots).await?;
    append_decoded(store, decoded, append, scope, true).await
}

/// A payload decoded (naive local times resolved), not yet appended: the first half of
/// [`ingest_payload`], so that a bulk load decodes its next batch while the previous one
/// commits.
pub struct DecodedPayload(ingest::Decoded);

/// Decodes `body` on one of `slots`' decoders, then applies the wells' registry zones to naive
/// local timestamps when `decode` declares none.
pub async fn decode_payload(
    store: &dyn Store,
    format: PayloadFormat,
    body: Bytes,
    decode: DecodeOptions,
    slots: &DecodeSlots,
) -> Result<DecodedPayload, IngestError> {
    // Waiting here is queueing: bounded in bytes by the server's admission of bodies in
    // flight, and in time by the slots' deadline (refused then, before anything is written).
    let permit = slots.acquire().await?;
    let mut decoded = if body.len() > INLINE_DECODE_LIMIT {
        let (body, decode) = (body.clone(), decode.clone());
        tokio::task::spawn_blocking(move || ingest::decode(format, &body, &decode))
            .await
            .map_err(|e| IngestError::Join(e.to_string()))??
    } else {
        ingest::decode(format, &body, &decode)?
    };
    drop(permit);
    // Naive local times and no declared zone: the wells' registry zones apply (a second pass,
    // so the common case costs nothing).
    if decode.zone.is_none() {
        let wells = decoded.wells_lacking_zone();
        if !wells.is_empty() {
            let zones = registry_zones(store, &wells).await?;
            if !zones.is_empty() {
                let permit = slots.acquire().await?;
                decoded = if body.len() > INLINE_DECODE_LIMIT {
                    tokio::task::spawn_blocking(move || {
                        ingest::apply_well_zones(format, &body, &decode, &mut decoded, &zones)
                            .map(|_| decoded)
                    })
                    .await
                    .map_err(|e| IngestError::Join(e.to_string()))??
                } else {
                    ingest::apply_well_zones(format, &body, &decode, &mut decoded, &zones)?;
                    decoded
                };
                drop(permit);
            }
        }
    }
    Ok(DecodedPayload(decoded))
}

/// Appends the valid readings of a decoded payload (those `scope` allows) and reports per
/// reading; returns after they are committed, with the accepted readings when `collect`.
pub async fn append_decoded(
    store: &dyn Store,
    decoded: DecodedPayload,
    append: AppendOptions,
    scope: &WellScope,
    collect: bool,
) -> Result<(IngestReport, Vec<espwatch_core::Reading>), IngestError> {
    let decoded = decoded.0;
    let mut accepted = Vec::new();
    let mut report = IngestReport {
        warnings: decoded
            .warnings
            .iter()
            .map(|w| serde_json::to_value(w).unwrap_or_default())
            .collect(),
        ..IngestReport::default()
    };
    let mut readings = Vec::with_capacity(decoded.items.len());
    let mut positions = Vec::with_capacity(decoded.items.len());
    for (position, item) in decoded.items.into_iter().enumerate() {
        match item {
            // Object-level check: an identity limited to some wells writes only those.
            Item::Valid(reading) if !scope.allows(reading.well_id.as_str()) => {
                report.rejected.push(RejectedReading {
                    index: position,
                    well_id: Some(reading.well_id.to_string()),
                    errors: vec![FieldProblem {
                        field: "well_id".into(),
                        reason: "this identity is not permitted to write to this well".into(),
                    }],
                })
            }
            Item::Valid(reading) => {
                positions.push(position);
                readings.push(reading);
            }
            Item::Rejected(r) => report.rejected.push(RejectedReading {
                index: r.index,
                well_id: r.well_id,
                errors: r
                    .errors
                    .into_iter()
                    .map(|e| FieldProblem {
                        field: e.field,
                        reason: e.reason,
                    })
                    .collect(),
            }),
        }
    }
    if !readings.is_empty() {
        let well_ids: Vec<WellId> = readings.iter().map(|r| r.well_id.clone()).collect();
        // A batch's readings run well by well: runs first, so the sort sees the few wells.
        let mut wells: Vec<WellId> = Vec::new();
        for w in &well_ids {
            if wells.last() != Some(w) {
                wells.push(w.clone());
            }
        }
        wells.sort();
        wells.dedup();
        report.wells = wells;
        // Only callers that want the accepted readings pay for keeping a copy.
        let kept = if collect {
            readings.clone()
        } else {
            Vec::new()
        };
        let outcome = store.append(readings, append).await?;
        report.spooled = outcome.spooled;
        let mut kept = kept.into_iter();
        for ((o, position), well_id) in outcome.outcomes.iter().zip(positions).zip(well_ids) {
            let reading = kept.next();
            match o {
                ReadingOutcome::Accepted => {
                    report.accepted += 1;
                    accepted.extend(reading);
                }
                ReadingOutcome::Duplicate => report.duplicates += 1,
                ReadingOutcome::UnknownWell => report.rejected.push(RejectedReading {
                    index: position,
                    well_id: Some(well_id.to_string()),
                    errors: vec![FieldProblem {
                        field: "well_id".into(),
                        reason: "unknown well: register it first (POST /api/v1/wells); automatic registration is off"
                            .into(),
                    }],
                }),
            }
        }
        report.rejected.sort_by_key(|r| r.index);
    }
    Ok((report, accepted))
}
