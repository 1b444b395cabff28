//! Admission control for ingestion: the bytes of telemetry bodies being read, decoded and
//! committed at once are bounded. A request that would exceed the bound is answered at once
//! with 503 + `Retry-After` (before its body is read), so under overload memory stays bounded
//! and clients back off, instead of requests piling up in front of the store's writer.
//!
//! A request reserves its `Content-Length` (or, for a body of unknown length, the body limit)
//! until its readings are committed. One request is always admitted when nothing else is in
//! flight, however large, so a budget smaller than the body limit cannot starve anyone.
//!
//! The wait of an admitted body for a decoder is bounded in time too (`ingest_decode_wait_ms`,
//! [`DecodeSlots`]): past it the request is 503 + `Retry-After` with nothing written, and while
//! the oldest waiting body is past it, new requests are refused here at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use espwatch_app::ingest::DecodeSlots;
use serde::Serialize;

/// The in-flight ingest budget and its counters.
pub struct IngestGate {
    capacity: u64,
    inflight: AtomicU64,
    rejected: AtomicU64,
    slots: DecodeSlots,
}

/// Held while a request is admitted; gives its bytes back when dropped.
pub struct Admission {
    gate: Arc<IngestGate>,
    bytes: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate.inflight.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// For `/health/ready`.
#[derive(Clone, Debug, Serialize)]
pub struct IngestStatus {
    /// `healthy`, or `saturated` while the budget is exhausted.
    pub status: &'static str,
    /// Body bytes of ingest requests in flight (reserved).
    pub inflight_bytes: u64,
    pub capacity_bytes: u64,
    /// Bodies admitted and waiting for a decoder now.
    pub decode_waiting: usize,
    /// Requests answered 503 because the budget was exhausted or no decoder was free in
    /// time, since start.
    pub rejected_overload_total: u64,
}

impl IngestGate {
    pub fn new(capacity: u64, slots: DecodeSlots) -> Arc<IngestGate> {
        Arc::new(IngestGate {
            capacity: capacity.max(1),
            inflight: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            slots,
        })
    }

    /// The decoders admitted bodies wait for (with the deadline).
    pub fn slots(&self) -> &DecodeSlots {
        &self.slots
    }

    /// Counts a request refused after admission because no decoder was free in time.
    pub fn note_refused(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves `bytes` when they fit (or nothing else is in flight) and the decoders' queue is
    /// not past its deadline; `None` means overloaded.
    pub fn try_admit(self: &Arc<Self>, bytes: u64) -> Option<Admission> {
        let bytes = bytes.max(1);
        let admitted = !self.slots.saturated()
            && self
                .inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                    (now == 0 || now.saturating_add(bytes) <= self.capacity).then_some(now + bytes)
                })
                .is_ok();
        if admitted {
            Some(Admission {
                gate: self.clone(),
                bytes,
            })
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub fn status(&self) -> IngestStatus {
        let inflight = self.inflight.load(Ordering::Acquire);
        IngestStatus {
            status: if inflight >= self.capacity || self.slots.saturated() {
                "saturated"
            } else {
                "healthy"
            },
            inflight_bytes: inflight,
            capacity_bytes: self.capacity,
            decode_waiting: self.slots.waiting(),
            rejected_overload_total: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_reserved_and_given_back() {
        let gate = IngestGate::new(100, DecodeSlots::new(1, None));
        let big = gate.try_admit(1_000).expect("alone, anything is admitted");
        assert!(gate.try_admit(1).is_none());
        drop(big);
        let a = gate.try_admit(60).unwrap();
        let b = gate.try_admit(40).unwrap();
        assert!(gate.try_admit(1).is_none());
        assert_eq!(gate.status().status, "saturated");
        drop((a, b));
        assert_eq!(gate.status().inflight_bytes, 0);
        assert_eq!(gate.status().rejected_overload_total, 2);
    }
}
