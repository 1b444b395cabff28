//! Ingest metrics every path records the same way (HTTP, MQTT, AMQP, ...), through the
//! `metrics` facade: a no-op until the server installs its Prometheus recorder
//! (`espwatch_server::metrics`), so the CLI's own ingest counts nothing.
//!
//! Labels are bounded: `path` is one of [`IngestPath`], `reason` one of the fixed strings of
//! [`RejectReason`]; nothing a client sends becomes a label value.

use crate::ingest::IngestReport;

/// Readings stored (`espwatch_readings_accepted_total{path}`).
pub const READINGS_ACCEPTED: &str = "espwatch_readings_accepted_total";
/// Readings already stored (`espwatch_readings_duplicate_total{path}`).
pub const READINGS_DUPLICATE: &str = "espwatch_readings_duplicate_total";
/// Readings refused (`espwatch_readings_rejected_total{path,reason}`).
pub const READINGS_REJECTED: &str = "espwatch_readings_rejected_total";
/// Payloads (requests, messages) that could not be parsed at all
/// (`espwatch_ingest_payloads_malformed_total{path}`).
pub const PAYLOADS_MALFORMED: &str = "espwatch_ingest_payloads_malformed_total";

/// How readings arrived: the `path` label of the ingest metrics.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IngestPath {
    /// `POST /api/v1/telemetry` and the old `POST /telemetry/ingest`.
    Http,
    /// MQTT (plain JSON/NDJSON/CSV payloads and Sparkplug B).
    Mqtt,
    /// AMQP 0-9-1 (RabbitMQ).
    Amqp,
}

impl IngestPath {
    pub const ALL: [IngestPath; 3] = [IngestPath::Http, IngestPath::Mqtt, IngestPath::Amqp];

    pub fn label(self) -> &'static str {
        match self {
            IngestPath::Http => "http",
            IngestPath::Mqtt => "mqtt",
            IngestPath::Amqp => "amqp",
        }
    }
}

/// Why a reading was refused: the `reason` label.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// A field failed validation (missing, out of range, unparseable, unknown key, ...).
    Invalid,
    /// The well is not registered and automatic registration is off.
    UnknownWell,
    /// The identity may not write to this well.
    NotPermitted,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [
        RejectReason::Invalid,
        RejectReason::UnknownWell,
        RejectReason::NotPermitted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::UnknownWell => "unknown_well",
            RejectReason::NotPermitted => "not_permitted",
        }
    }

    /// The reason of one rejected reading of a report (its `well_id` problems name the two
    /// refusals that are not validation).
    pub fn of(rejected: &crate::ingest::RejectedReading) -> RejectReason {
        for e in &rejected.errors {
            if e.field == "well_id" {
                if e.reason.starts_with("unknown well") {
                    return RejectReason::UnknownWell;
                }
                if e.reason.contains("not permitted") {
                    return RejectReason::NotPermitted;
                }
            }
        }
        RejectReason::Invalid
    }
}

/// Counts one ingested payload's report: accepted, duplicates, rejections by reason.
pub fn record_report(path: IngestPath, report: &IngestReport) {
    let path = path.label();
    if report.accepted > 0 {
        metrics::counter!(READINGS_ACCEPTED, "path" => path).increment(report.accepted as u64);
    }
    if report.duplicates > 0 {
        metrics::counter!(READINGS_DUPLICATE, "path" => path).increment(report.duplicates as u64);
    }
    if report.rejected.is_empty() {
        return;
    }
    let mut by_reason = [0u64; RejectReason::ALL.len()];
    for r in &report.rejected {
        by_reason[RejectReason::of(r) as usize] += 1;
    }
    for (reason, n) in RejectReason::ALL.iter().zip(by_reason) {
        if n > 0 {
            metrics::counter!(READINGS_REJECTED, "path" => path, "reason" => reason.label())
                .increment(n);
        }
    }
}

/// Counts a payload that could not be parsed at all (its readings are not counted).
pub fn record_malformed(path: IngestPath) {
    metrics::counter!(PAYLOADS_MALFORMED, "path" => path.label()).increment(1);
}

/// Registers every series of the ingest metrics at zero, so a rate over them exists before
/// the first reading (a stalled-ingest alert needs the series to exist).
pub fn register_ingest_series() {
    for path in IngestPath::ALL {
        let p = path.label();
        metrics::counter!(READINGS_ACCEPTED, "path" => p).increment(0);
        metrics::counter!(READINGS_DUPLICATE, "path" => p).increment(0);
        metrics::counter!(PAYLOADS_MALFORMED, "path" => p).increment(0);
        for reason in RejectReason::ALL {
            metrics::counter!(READINGS_REJECTED, "path" => p, "reason" => reason.label())
                .increment(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{FieldProblem, RejectedReading};

    fn rejected(field: &str, reason: &str) -> RejectedReading {
        RejectedReading {
            index: 0,
            well_id: None,
            errors: vec![FieldProblem {
                field: field.into(),
                reason: reason.into(),
            }],
        }
    }

    #[test]
    fn rejections_are_classified_into_fixed_reasons() {
        assert_eq!(
            RejectReason::of(&rejected("well_id", "unknown well: register it first")),
            RejectReason::UnknownWell
        );
        assert_eq!(
            RejectReason::of(&rejected(
                "well_id",
                "this identity is not permitted to write to this well"
            )),
            RejectReason::NotPermitted
        );
        assert_eq!(
            RejectReason::of(&rejected("motor_current_a", "out of range")),
            RejectReason::Invalid
        );
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
