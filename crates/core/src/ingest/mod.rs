//! Decoding telemetry payloads (JSON, NDJSON, CSV) into validated [`Reading`]s.
//!
//! This is the edge where untrusted input becomes the canonical model. The contract:
//!
//! - **Per-reading rejection.** A bad reading never sinks its batch: each input reading becomes
//!   an [`Item`], either [`Item::Valid`] or [`Item::Rejected`] with *every* problem found
//!   ([`FieldError`]s), in input order. Only a body that cannot be split into readings at all
//!   (broken JSON, unusable CSV header) is a [`DecodeError`].
//! - **One vocabulary for all formats.** Canonical keys (`well_id`, `ts`, the 13
//!   [`Field`](crate::Field) names) plus the legacy SCADA aliases (`device_id`, `pip`, ...; see
//!   `keys.rs`). Legacy keys that carry nothing we store (`torque`, `rpm`, ...) are dropped with
//!   a batch [`Warning`]; any other unknown key rejects its reading.
//! - **Errors are reported under canonical names** (`intake_pressure_psi` even when the client
//!   sent `pip`; the reason then says "sent as 'pip'"), except unknown keys, reported as sent.
//! - **No clock.** [`DecodeOptions::now`] is the receive time: the default for readings without
//!   a timestamp and the reference for the "too far in the future" check.
//! - **Never panics**, whatever the bytes (property-tested).
//!
//! Entry points: [`decode`] for a whole body in memory (the HTTP API), and the incremental
//! [`NdjsonDecoder`] and [`CsvDecoder`] for files too big to hold (the bulk loader), which give
//! the same results reading by reading.

mod csv;
mod draft;
mod json;
mod json_plain;
mod keys;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::csv::CsvDecoder;
pub use self::json::NdjsonDecoder;
use crate::telemetry::{Reading, Timestamp, WellId};

/// Wire format of a telemetry body.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// One JSON object (one reading) or a JSON array of objects.
    Json,
    /// Newline-delimited JSON: one object per line; blank lines are skipped.
    Ndjson,
    /// Comma-separated values with a header row of field names.
    Csv,
}

impl PayloadFormat {
    /// Format for an HTTP `Content-Type` (parameters such as `charset` are ignored).
    /// `None` for types we do not decode.
    pub fn from_content_type(content_type: &str) -> Option<PayloadFormat> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let eq = |s: &str| essence.eq_ignore_ascii_case(s);
        if eq("application/json") || eq("text/json") {
            Some(PayloadFormat::Json)
        } else if eq("application/x-ndjson")
            || eq("application/ndjson")
            || eq("application/jsonl")
            || eq("application/x-jsonlines")
            || eq("application/jsonlines")
        {
            Some(PayloadFormat::Ndjson)
        } else if eq("text/csv") || eq("application/csv") {
            Some(PayloadFormat::Csv)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Ndjson => "ndjson",
            PayloadFormat::Csv => "csv",
        }
    }
}

/// Context a decode needs from the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Receive time: used as `ts` for readings without one, and the reference of the
    /// future check.
    pub now: Timestamp,
    /// Readings stamped later than `now` + this are rejected (clock-skewed or garbage devices
    /// would otherwise poison "latest value" views for a long time).
    pub max_future: Duration,
    /// [`decode`] fails with [`DecodeError::TooManyReadings`] past this many readings. A guard
    /// on memory: a decoded item costs ~150–350 bytes however small its input (`[{},{},...]`
    /// is 3 bytes per rejected reading), so the body size limit alone does not bound it.
    /// The incremental decoders, which the caller drives chunk by chunk, have no limit.
    pub max_readings: usize,
    /// The well the transport names, when it names one (an MQTT topic level, a Sparkplug
    /// device): readings without `well_id` belong to it (a CSV needs no `well_id` column), and
    /// a reading naming another well is rejected. `None` for HTTP and files.
    pub well: Option<WellId>,
    /// The zone of naive local timestamps (`2026-11-22 08:01:00`), declared by the sender;
    /// without it such a timestamp is refused (never guessed). See [`crate::localtime`].
    pub zone: Option<crate::localtime::UtcOffset>,
    /// The CSV dialect (separator, decimal mark); RFC 4180 with `.` decimals by default.
    pub csv: CsvDialect,
}

/// How a CSV body is written: European spreadsheet and historian exports use `;` between
/// cells and `,` as the decimal mark (`42,5`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CsvDialect {
    /// The cell separator: `,` (default), `;`, tab or `|`.
    pub separator: u8,
    /// Numbers are written with a decimal comma (`42,5`); with `,` as separator such cells
    /// must be quoted.
    pub decimal_comma: bool,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            separator: b',',
            decimal_comma: false,
        }
    }
}

impl CsvDialect {
    /// A separator as given on a command line or in a query: `,`, `;`, `tab` (or a tab), `|`.
    pub fn parse_separator(text: &str) -> Result<u8, String> {
        match text {
            "," | "comma" => Ok(b','),
            ";" | "semicolon" => Ok(b';'),
            "\t" | "tab" => Ok(b'\t'),
            "|" | "pipe" => Ok(b'|'),
            other => Err(format!(
                "{other:?} is not a supported CSV separator: use ',', ';', 'tab' or '|'"
            )),
        }
    }

    /// A decimal mark: `.` (`point`) or `,` (`comma`).
    pub fn parse_decimal(text: &str) -> Result<bool, String> {
        match text {
            "." | "point" | "dot" => Ok(false),
            "," | "comma" => Ok(true),
            other => Err(format!(
                "{other:?} is not a decimal mark: use 'point' or 'comma'"
            )),
        }
    }
}

impl DecodeOptions {
    /// 5 minutes: generous for unsynchronised field clocks, small enough to catch wrong zones.
    pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(5 * 60);

    /// 100 000 readings: 10 000 s of data from 10 wells at 1 Hz in one request, at most a few
    /// tens of MB decoded.
    pub const DEFAULT_MAX_READINGS: usize = 100_000;

    /// Options with the default limits.
    pub fn new(now: Timestamp) -> Self {
        DecodeOptions {
            now,
            max_future: Self::DEFAULT_MAX_FUTURE,
            max_readings: Self::DEFAULT_MAX_READINGS,
            well: None,
            zone: None,
            csv: CsvDialect::default(),
        }
    }
}

/// The result of decoding a body: one item per input reading, in input order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decoded {
    pub items: Vec<Item>,
    /// Batch-level notices about accepted input (aggregated, see [`Warning`]).
    pub warnings: Vec<Warning>,
}

impl Decoded {
    pub fn valid_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Valid(_)))
            .count()
    }

    pub fn rejected_count(&self) -> usize {
        self.items.len() - self.valid_count()
    }

    /// Splits into the valid readings and the rejections (each rejection keeps its index).
    pub fn into_parts(self) -> (Vec<Reading>, Vec<Rejection>, Vec<Warning>) {
        let mut readings = Vec::with_capacity(self.items.len());
        let mut rejections = Vec::new();
        for item in self.items {
            match item {
                Item::Valid(r) => readings.push(r),
                Item::Rejected(r) => rejections.push(r),
            }
        }
        (readings, rejections, self.warnings)
    }
}

/// One input reading, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Valid(Reading),
    Rejected(Rejection),
}

impl Item {
    pub fn valid(&self) -> Option<&Reading> {
        match self {
            Item::Valid(r) => Some(r),
            Item::Rejected(_) => None,
        }
    }

    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Item::Valid(_) => None,
            Item::Rejected(r) => Some(r),
        }
    }
}

/// Why one input reading was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejection {
    /// 0-based position of the reading in the payload: array element, non-blank NDJSON line,
    /// or CSV data row.
    pub index: usize,
    /// 1-based line of the input where the reading starts, when the format has lines
    /// (NDJSON, CSV); `None` for JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The well id as sent, when it was a string (even an invalid one, shortened if very
    /// long), so clients can tell which device is misbehaving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub well_id: Option<String>,
    /// Every problem found, never empty.
    pub errors: Vec<FieldError>,
}

impl Rejection {
    /// True when the reading was refused (also) for a naive local timestamp without a declared
    /// zone: decoding it with its well's registry zone may accept it
    /// ([`apply_well_zones`]).
    pub fn lacks_zone(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.reason.contains(crate::localtime::NO_ZONE))
    }
}

impl Decoded {
    /// The wells of the readings refused for a naive timestamp without a declared zone
    /// ([`Rejection::lacks_zone`]), sorted, once each. Readings whose well id is missing or
    /// invalid are not among them: no registry entry can apply to them.
    pub fn wells_lacking_zone(&self) -> Vec<WellId> {
        let mut wells: Vec<WellId> = self
            .items
            .iter()
            .filter_map(Item::rejection)
            .filter(|r| r.lacks_zone())
            .filter_map(|r| WellId::parse(r.well_id.as_deref()?).ok())
            .collect();
        wells.sort();
        wells.dedup();
        wells
    }
}

/// The second pass for naive local timestamps when the sender declared no zone
/// (`opts.zone` is `None`): each reading refused for lacking a zone whose well has a registry
/// zone in `zones` is decoded again, from the same `body`, with that zone, and its item is
/// replaced by the new one (valid, or refused for its other problems). Other items and the
/// batch's warnings stay as they are. Returns how many items were decoded again.
///
/// The first decode is unchanged, so a batch without naive timestamps costs nothing here;
/// one extra decode of the body per distinct zone among the wells concerned. A declared
/// zone wins over the wells': with one, nothing is refused for lacking a zone.
pub fn apply_well_zones(
    format: PayloadFormat,
    body: &[u8],
    opts: &DecodeOptions,
    decoded: &mut Decoded,
    zones: &[(WellId, crate::localtime::UtcOffset)],
) -> Result<usize, DecodeError> {
    apply_well_zones_with(opts, decoded, zones, |o| decode(format, body, o))
}

/// [`apply_well_zones`] with the caller's own decode of the same input (`redecode`, given the
/// options with a zone), for transports that choose the format by trial.
pub fn apply_well_zones_with(
    opts: &DecodeOptions,
    decoded: &mut Decoded,
    zones: &[(WellId, crate::localtime::UtcOffset)],
    mut redecode: impl FnMut(&DecodeOptions) -> Result<Decoded, DecodeError>,
) -> Result<usize, DecodeError> {
    if opts.zone.is_some() || zones.is_empty() {
        return Ok(0);
    }
    let zone_of = |item: &Item| {
        let r = item.rejection().filter(|r| r.lacks_zone())?;
        let id = r.well_id.as_deref()?;
        zones
            .iter()
            .find(|(well, _)| well.as_str() == id)
            .map(|(_, z)| *z)
    };
    let mut distinct: Vec<crate::localtime::UtcOffset> =
        decoded.items.iter().filter_map(zone_of).collect();
    distinct.sort_by_key(|z| z.seconds());
    distinct.dedup();
    let mut replaced = 0;
    for zone in distinct {
        let again = redecode(&DecodeOptions {
            zone: Some(zone),
            ..opts.clone()
        })?;
        if again.items.len() != decoded.items.len() {
            // Cannot happen (the same input, only the zone differs); keep the first answer.
            continue;
        }
        for (item, new) in decoded.items.iter_mut().zip(again.items) {
            if zone_of(item) == Some(zone) {
                *item = new;
                replaced += 1;
            }
        }
    }
    Ok(replaced)
}

/// One problem with one field of a reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Canonical field name (`intake_pressure_psi`, `well_id`, `ts`), the key as sent for
    /// unknown keys, `measurements` for "no measurement", `line` for an NDJSON line that is
    /// not JSON, and `*` for the reading as a whole (not an object, wrong CSV cell count).
    pub field: String,
    pub reason: String,
}

/// What a [`Warning`] is about, for clients that branch on it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// A legacy key that espwatch does not store (`flow_variance`, `torque`, `rpm`, `pressure`).
    IgnoredLegacyField,
    /// No timestamp was given; the receive time was used.
    TsDefaulted,
}

/// A notice about accepted input, aggregated over the batch (one per kind and key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Warning {
    pub kind: WarningKind,
    /// The key concerned (`torque`, `ts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Number of readings concerned (valid or not).
    pub count: usize,
    /// Index of the first reading concerned.
    pub first_index: usize,
    /// Human-readable summary.
    pub message: String,
}

/// The body as a whole cannot be decoded; no reading of it was looked at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecodeError {
    #[error("the body is empty")]
    Empty,
    /// Not well-formed JSON (or not UTF-8). For a JSON array there is no way to find where the
    /// next element starts after a syntax error, so the whole body fails.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("expected a JSON object or an array of objects, found {found}")]
    TopLevel { found: &'static str },
    /// Arrays and objects nested deeper than [`MAX_TELEMETRY_JSON_DEPTH`]: no valid payload
    /// does that, and deep nesting is a classic way to exhaust a parser's stack.
    #[error("JSON nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// More readings than [`DecodeOptions::max_readings`]; split the batch.
    #[error("more than {limit} readings in one body; send smaller batches")]
    TooManyReadings { limit: usize },
    /// A CSV header column that no reading could use; every row would fail, so fail once.
    #[error(
        "unknown CSV column {name:?} (column {position}); expected well_id, ts or canonical \
         measurement names"
    )]
    CsvUnknownColumn { name: String, position: usize },
    #[error("CSV column {name:?} appears twice in the header")]
    CsvDuplicateColumn { name: String },
    #[error("CSV header has no {name} column")]
    CsvMissingColumn { name: &'static str },
    #[error("CSV header has no measurement column")]
    CsvNoMeasurementColumn,
    #[error("malformed CSV at line {line}: {message}")]
    Csv { line: u64, message: String },
}

/// Panics when a decoded batch breaks what every decoder promises: each accepted reading
/// has a well id that is valid for new readings, a time no later than the future tolerance,
/// and only values within their channel's sane range. For the fuzz targets (`fuzz/`) and
/// their replay in the tests; cheap enough to call on any batch.
pub fn check_decoded_invariants(decoded: &Decoded, opts: &DecodeOptions) {
    for item in &decoded.items {
        if let Item::Valid(reading) = item {
            assert!(
                crate::telemetry::WellId::parse_new(reading.well_id.as_str()).is_ok(),
                "accepted well id {:?}",
                reading.well_id
            );
            assert!(
                reading.ts <= opts.now.saturating_add(opts.max_future),
                "accepted a reading from the future: {:?}",
                reading.ts
            );
            for (field, value) in reading.values.iter() {
                let range = field.sane_range();
                assert!(
                    value.is_finite() && value >= range.min && value <= range.max,
                    "accepted {field:?} = {value} outside {range:?}"
                );
            }
        }
    }
}

/// Decodes a whole body held in memory.
///
/// `Ok` even when every reading is rejected: the items say why. An empty JSON array or a
/// header-only CSV gives no items; a body with no content at all is [`DecodeError::Empty`].
pub fn decode(
    format: PayloadFormat,
    body: &[u8],
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let body = strip_bom(body);
    if body.trim_ascii().is_empty() {
        return Err(DecodeError::Empty);
    }
    match format {
        PayloadFormat::Json => json::decode_json(body, opts),
        PayloadFormat::Ndjson => json::decode_ndjson(body, opts),
        PayloadFormat::Csv => self::csv::decode_csv(body, opts),
    }
}

/// Deepest nesting of arrays and objects the small JSON bodies of the API may have (checked by
/// [`json_nesting_exceeds`] before parsing).
pub const MAX_JSON_DEPTH: usize = 32;

/// Telemetry bodies (up to the body limit) are not pre-scanned (a scan of every body cost a
/// fifth of the ingest throughput): their decoder skips unexpected nesting iteratively, and
/// where it builds values serde_json's recursion limit (128 levels) applies, reported as
/// [`DecodeError::TooDeep`] (a JSON body) or as that line's rejection (NDJSON).
pub const MAX_TELEMETRY_JSON_DEPTH: usize = 128;

/// True when `body` nests arrays/objects deeper than `limit`. A linear scan that skips
/// strings (with escapes); it does not validate, the parser does that afterwards.
pub fn json_nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Drops a UTF-8 byte order mark: Windows tools (Excel, PowerShell) like to add one.
fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(!json_nesting_exceeds(br#"[{"a":[1,{"b":2}]}]"#, 4));
        assert!(json_nesting_exceeds(br#"[{"a":[1,{"b":2}]}]"#, 3));
        assert!(!json_nesting_exceeds(br#"{"s":"[[[[[[\"[[["}"#, 1));
        let deep = "[".repeat(100_000);
        assert!(json_nesting_exceeds(deep.as_bytes(), MAX_JSON_DEPTH));
    }
}
