//! Turning the key/value pairs of one input reading into a [`Reading`] or a [`Rejection`].
//!
//! Format decoders (JSON, CSV) only split their input into keys and loosely typed values
//! ([`Val`]); every rule about what a reading may contain lives here, once, so the formats
//! cannot drift apart. A [`Draft`] never stops at the first problem: it records every error
//! and decides at [`Draft::finish`].

use crate::localtime::parse_timestamp;
use std::borrow::Cow;
use std::collections::HashSet;

use super::keys::{self, IgnoredKey, Key, Target};
use super::{DecodeOptions, FieldError, Item, Rejection, Warning, WarningKind};
use crate::telemetry::{FIELD_COUNT, Field, Measurements, Reading, Timestamp, WellId};

/// Field name used for errors about a reading as a whole (not an object, wrong cell count).
pub(crate) const WHOLE_READING: &str = "*";
/// Field name of the "no measurement at all" error.
pub(crate) const MEASUREMENTS: &str = "measurements";

/// More errors than this in one reading are summarised: a hostile object with 100 000 unknown
/// keys must not turn into a 100 000-entry response.
const MAX_ERRORS_PER_READING: usize = 32;
/// Keys decoded per reading; a reading has about twenty legitimate ones. Past it the reading
/// is refused and the rest of its keys are skipped without being looked at, so a 15 MB object
/// of unknown keys costs a scan, not a million error messages (issue 18 item 9).
pub(crate) const MAX_KEYS_PER_READING: usize = 256;
/// Longest excerpt of client text quoted back in a reason or in `Rejection::well_id`.
const MAX_ECHO_CHARS: usize = 64;

/// Most well ids a [`Ctx`] remembers: more than any fleet sends in one batch.
const MAX_INTERNED_WELLS: usize = 4096;

/// Latest Unix second we accept: 9999-12-31T23:59:59Z, the end of RFC 3339's range.
const MAX_EPOCH_SECONDS: i64 = 253_402_300_799;

/// A loosely typed input value, as the format decoder saw it.
#[derive(Debug)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    /// Text of a JSON number, already checked against JSON's number grammar. Kept as text so
    /// epoch timestamps convert exactly and out-of-range numbers (`1e999`) reach validation.
    Number(&'a str),
    Str(Cow<'a, str>),
    Object,
    Array,
    /// A CSV cell, trimmed: untyped text whose meaning depends on the column. Empty = missing.
    Cell(&'a str),
}

impl Val<'_> {
    /// Short description for "expected X, got Y" reasons.
    fn describe(&self) -> String {
        match self {
            Val::Null => "null".to_owned(),
            Val::Bool(b) => format!("the boolean {b}"),
            Val::Number(n) => format!("the number {}", echo(n)),
            Val::Str(s) => format!("the string {:?}", echo(s)),
            Val::Object => "an object".to_owned(),
            Val::Array => "an array".to_owned(),
            Val::Cell(s) => format!("{:?}", echo(s)),
        }
    }
}

/// What a reading contributed to the batch warnings. Returned next to the item rather than
/// recorded directly, so a decoder can drop it if the item is later voided (NDJSON trailing
/// garbage after a complete object).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Bit set of [`IgnoredKey::bit`].
    pub ignored: u8,
    pub ts_defaulted: bool,
}

/// State shared by all readings of one payload or stream.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub opts: DecodeOptions,
    /// Well ids seen in this payload. A batch carries a few hundred wells at most, so
    /// sharing one `Arc` per well spares a validation, an allocation and a free per reading.
    wells: HashSet<WellId, foldhash::fast::RandomState>,
    pub tally: WarningTally,
}

impl Ctx {
    pub fn new(opts: DecodeOptions) -> Self {
        Ctx {
            opts,
            wells: HashSet::default(),
            tally: WarningTally::default(),
        }
    }

    /// Adds one finished item's notes to the batch warnings.
    pub fn record(&mut self, index: usize, notes: Notes) {
        self.tally.record(index, notes);
    }

    fn well_id(&mut self, s: &str) -> Result<WellId, String> {
        if let Some(known) = self.wells.get(s) {
            return Ok(known.clone());
        }
        let id = WellId::parse_new(s).map_err(|e| e.to_string())?;
        if self.wells.len() == MAX_INTERNED_WELLS {
            // A stream of ever new ids (a long NDJSON file) must not grow this forever.
            self.wells.clear();
        }
        self.wells.insert(id.clone());
        Ok(id)
    }
}

struct WellSlot {
    source: &'static str,
    /// `Err` holds the (shortened) raw string, echoed in the rejection; `None` when the value
    /// was not a string.
    value: Result<WellId, Option<String>>,
}

struct TsSlot {
    source: &'static str,
    /// `None` when the value was invalid (the error is already recorded).
    value: Option<Timestamp>,
}

/// One reading being assembled.
pub(crate) struct Draft<'c> {
    ctx: &'c mut Ctx,
    well_id: Option<WellSlot>,
    ts: Option<TsSlot>,
    /// NaN = not given, as in [`Measurements`].
    values: [f64; FIELD_COUNT],
    /// Which key set each slot, to report "given twice".
    sources: [&'static str; FIELD_COUNT],
    /// A measurement key was present but its value was refused.
    measurement_error: bool,
    errors: Vec<FieldError>,
    errors_omitted: usize,
    ignored: u8,
    /// Keys counted by [`Draft::count_key`].
    keys: usize,
    /// Past [`MAX_KEYS_PER_READING`]: nothing more is decoded.
    stopped: bool,
}

impl<'c> Draft<'c> {
    pub fn new(ctx: &'c mut Ctx) -> Self {
        Draft {
            ctx,
            well_id: None,
            ts: None,
            values: [f64::NAN; FIELD_COUNT],
            sources: [""; FIELD_COUNT],
            measurement_error: false,
            errors: Vec::new(),
            errors_omitted: 0,
            ignored: 0,
            keys: 0,
            stopped: false,
        }
    }

    /// Counts one more key of this reading; false when the key must be skipped because the
    /// reading has too many (it is then refused).
    pub fn count_key(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        self.keys += 1;
        if self.keys > MAX_KEYS_PER_READING {
            self.stopped = true;
            return false;
        }
        true
    }

    fn errors_full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS_PER_READING
    }

    pub fn error(&mut self, field: &str, reason: String) {
        if self.errors.len() < MAX_ERRORS_PER_READING {
            self.errors.push(FieldError {
                field: field.to_owned(),
                reason,
            });
        } else {
            self.errors_omitted += 1;
        }
    }

    /// Error on a known key: reported under the canonical name, with the alias mentioned so a
    /// legacy client can find what it sent.
    fn key_error(&mut self, key: Key, reason: String) {
        if key.is_alias() {
            self.error(
                key.canonical(),
                format!("{reason} (sent as '{}')", key.name),
            );
        } else {
            self.error(key.canonical(), reason);
        }
    }

    pub fn unknown(&mut self, name: &str) {
        if self.errors_full() {
            // Not shown anyway: do not spend a suggestion search on it.
            self.errors_omitted += 1;
            return;
        }
        self.error(&echo(name), keys::unknown_key_reason(name));
    }

    /// Applies one key/value pair.
    #[inline]
    pub fn set(&mut self, key: Key, val: Val<'_>) {
        match key.target {
            Target::Measurement(field) => self.set_measurement(key, field, val),
            Target::WellId => self.set_well_id(key, val),
            Target::Ts => self.set_ts(key, val),
            Target::Ignored(ignored) => self.ignore(ignored),
        }
    }

    pub fn ignore(&mut self, key: IgnoredKey) {
        self.ignored |= key.bit();
    }

    #[inline]
    fn set_measurement(&mut self, key: Key, field: Field, val: Val<'_>) {
        let parsed = match &val {
            Val::Null => return,
            Val::Cell("") => return,
            Val::Cell(s) if self.ctx.opts.csv.decimal_comma && s.contains(',') => {
                match parse_f64(&s.replacen(',', ".", 1)) {
                    Ok(v) => v,
                    Err(_) => {
                        self.measurement_error = true;
                        return self.key_error(key, format!("not a number: {:?}", echo(s)));
                    }
                }
            }
            Val::Number(s) | Val::Cell(s) => match parse_f64(s) {
                Ok(v) => v,
                Err(_) => {
                    self.measurement_error = true;
                    return self.key_error(key, format!("not a number: {:?}", echo(s)));
                }
            },
            other => {
                self.measurement_error = true;
                let reason = format!("expected a number, got {}", other.describe());
                return self.key_error(key, reason);
            }
        };
        let value = match field.check(parsed) {
            // `+ 0.0` turns -0.0 (a legal JSON number) into 0.0, so it never shows as "-0".
            Ok(v) => v + 0.0,
            Err(e) => {
                self.measurement_error = true;
                return self.key_error(key, e.to_string());
            }
        };
        let slot = field.index();
        let previous = self.values[slot];
        if previous.is_nan() {
            self.values[slot] = value;
            self.sources[slot] = key.name;
        } else if previous != value {
            // Same value under two names (a client in transition sending both) is harmless;
            // different values mean we cannot know which one is right.
            self.measurement_error = true;
            let reason = format!(
                "given twice, as {} ({previous}) and {} ({value})",
                self.sources[slot], key.name
            );
            self.error(field.name(), reason);
        }
    }

    fn set_well_id(&mut self, key: Key, val: Val<'_>) {
        let s: &str = match &val {
            Val::Null => return,
            Val::Cell("") => return,
            Val::Str(s) => s,
            Val::Cell(s) => s,
            other => {
                let reason = format!("expected a string, got {}", other.describe());
                self.key_error(key, reason);
                // Remember that an id was given, so `finish` does not add "missing" on top.
                self.well_id = Some(WellSlot {
                    source: key.name,
                    value: Err(None),
                });
                return;
            }
        };
        if let Some(existing) = &self.well_id {
            if let Ok(id) = &existing.value
                && id.as_str() != s
            {
                let reason = format!(
                    "given twice, as {} ({:?}) and {} ({:?})",
                    existing.source,
                    echo(id.as_str()),
                    key.name,
                    echo(s)
                );
                self.error("well_id", reason);
            }
            return;
        }
        let value = self.ctx.well_id(s);
        if let Err(reason) = &value {
            let reason = reason.clone();
            self.key_error(key, reason);
        }
        self.well_id = Some(WellSlot {
            source: key.name,
            value: value.map_err(|_| Some(echo(s).into_owned())),
        });
    }

    fn set_ts(&mut self, key: Key, val: Val<'_>) {
        let parsed = match &val {
            // Null is "not given": the receive time applies, as for an absent key.
            Val::Null => return,
            Val::Cell("") => return,
            Val::Str(s) => parse_timestamp(s, self.ctx.opts.zone)
                .map_err(|e| format!("{e} (got {:?})", echo(s))),
            Val::Number(s) => parse_epoch_seconds(s),
            // A CSV cell is RFC 3339 when it has a time separator, epoch seconds otherwise.
            Val::Cell(s) if s.contains(':') => parse_timestamp(s, self.ctx.opts.zone)
                .map_err(|e| format!("{e} (got {:?})", echo(s))),
            Val::Cell(s) => parse_epoch_seconds(s),
            other => Err(format!(
                "expected an RFC 3339 string or Unix epoch seconds, got {}",
                other.describe()
            )),
        };
        let value = match parsed {
            Ok(ts) => Some(ts),
            Err(reason) => {
                self.key_error(key, reason);
                None
            }
        };
        if let Some(existing) = &self.ts {
            if let (Some(a), Some(b)) = (existing.value, value)
                && a != b
            {
                let reason = format!(
                    "given twice, as {} ({a}) and {} ({b})",
                    existing.source, key.name
                );
                self.error("ts", reason);
            }
            return;
        }
        self.ts = Some(TsSlot {
            source: key.name,
            value,
        });
    }

    /// Completes the reading: adds the whole-reading checks and decides valid or rejected.
    pub fn finish(mut self, index: usize, line: Option<u64>) -> (Item, Notes) {
        let mut notes = Notes {
            ignored: self.ignored,
            ts_defaulted: false,
        };
        // The transport's well (an MQTT topic's), when it names one: an `Arc` clone, and
        // nothing at all for HTTP and files.
        let named = self.ctx.opts.well.clone();
        match (&self.well_id, &named) {
            (None, Some(well)) => {
                self.well_id = Some(WellSlot {
                    source: "the message's well",
                    value: Ok(well.clone()),
                });
            }
            (None, None) => self.error("well_id", "missing".to_owned()),
            (
                Some(WellSlot {
                    value: Ok(given), ..
                }),
                Some(well),
            ) if given != well => {
                let reason = format!(
                    "{:?} is not the well this message was sent for ({:?})",
                    echo(given.as_str()),
                    echo(well.as_str())
                );
                self.error("well_id", reason);
            }
            _ => {}
        }
        let ts = match &self.ts {
            Some(slot) => slot.value,
            None => {
                // The old platform's clients send no timestamp; the receive time is the best
                // we have, and the batch warning tells the client it happened.
                notes.ts_defaulted = true;
                Some(self.ctx.opts.now)
            }
        };
        if let Some(ts) = ts {
            let now = self.ctx.opts.now;
            let limit = now.saturating_add(self.ctx.opts.max_future);
            if ts > limit {
                let reason = format!(
                    "{ts} is in the future: more than {} s after the receive time {now}",
                    self.ctx.opts.max_future.as_secs()
                );
                self.error("ts", reason);
            }
        }
        let values = Measurements::from_raw(self.values);
        if values.is_empty() && !self.measurement_error {
            self.error(MEASUREMENTS, "no measurement".to_owned());
        }
        if self.stopped {
            let reason = format!(
                "more than {MAX_KEYS_PER_READING} keys: the rest of the reading was not decoded"
            );
            if self.errors_full() {
                self.errors_omitted += 1;
            } else {
                self.errors.push(FieldError {
                    field: WHOLE_READING.to_owned(),
                    reason,
                });
            }
        }
        if self.errors_omitted > 0 {
            let reason = if self.stopped {
                format!(
                    "{} more errors not shown; more than {MAX_KEYS_PER_READING} keys: the rest of the reading was not decoded",
                    self.errors_omitted
                )
            } else {
                format!("{} more errors not shown", self.errors_omitted)
            };
            self.errors.push(FieldError {
                field: WHOLE_READING.to_owned(),
                reason,
            });
        }

        let item = match (self.errors.is_empty(), self.well_id, ts) {
            (
                true,
                Some(WellSlot {
                    value: Ok(well_id), ..
                }),
                Some(ts),
            ) => Item::Valid(Reading {
                well_id,
                ts,
                values,
            }),
            (_, well_id, _) => Item::Rejected(Rejection {
                index,
                line,
                well_id: well_id.and_then(|slot| match slot.value {
                    Ok(id) => Some(id.as_str().to_owned()),
                    Err(raw) => raw,
                }),
                errors: self.errors,
            }),
        };
        (item, notes)
    }
}

/// Rejects a whole input item that is not a reading at all.
pub(crate) fn reject(index: usize, line: Option<u64>, field: &str, reason: String) -> Item {
    Item::Rejected(Rejection {
        index,
        line,
        well_id: None,
        errors: vec![FieldError {
            field: field.to_owned(),
            reason,
        }],
    })
}

/// Unix epoch seconds, integer or fractional, to a timestamp. Plain decimals are converted
/// exactly (`1732262400.123456` keeps its microseconds, which an f64 would not guarantee);
/// exponent forms go through f64.
pub(crate) fn parse_epoch_seconds(text: &str) -> Result<Timestamp, String> {
    let out_of_range = || {
        format!(
            "Unix epoch seconds {} are outside the supported range (years 1970..=9999; \
             milliseconds are not accepted)",
            echo(text)
        )
    };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !int.is_empty() && is_digits(int) && is_digits(frac) {
        // More than 12 integer digits is past year 9999 anyway; checking length first keeps
        // the parse from overflowing on absurd input.
        let secs: i64 = if int.len() > 12 {
            return Err(out_of_range());
        } else {
            int.parse().map_err(|_| out_of_range())?
        };
        if secs > MAX_EPOCH_SECONDS {
            return Err(out_of_range());
        }
        // Truncate to microseconds, as Timestamp documents.
        let mut micros = 0i64;
        for i in 0..6 {
            let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
            micros = micros * 10 + digit;
        }
        return Ok(Timestamp(secs * Timestamp::MICROS_PER_SECOND + micros));
    }
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("expected Unix epoch seconds, got {:?}", echo(text)))?;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_EPOCH_SECONDS as f64 {
        return Err(out_of_range());
    }
    // In range by the check above, so the cast cannot saturate.
    Ok(Timestamp((secs * 1e6).floor() as i64))
}

/// `text.parse::<f64>()`, taking a shortcut for the plain decimals gauges send (`-12.34`).
#[inline]
fn parse_f64(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match exact_decimal(text) {
        Some(v) => Ok(v),
        None => text.parse(),
    }
}

/// The value of `-?[0-9]+(\.[0-9]+)?` with at most 15 digits, or `None` for anything else.
///
/// Its digits as an integer (below 10^15, so exact in an f64) divided by a power of ten no
/// larger than 10^14 (also exact) is one correctly rounded IEEE division: the f64 nearest to
/// the decimal, which is what `str::parse` returns (Clinger's fast path). Parsing was a tenth
/// of the server's decoding time; this is several times faster for such numbers.
#[inline]
fn exact_decimal(text: &str) -> Option<f64> {
    const POWERS_OF_TEN: [f64; 15] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
    ];
    let bytes = text.as_bytes();
    let (negative, unsigned) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    // At most 15 digits and a point; checked first so the digits cannot overflow below.
    if unsigned.is_empty() || unsigned.len() > 16 {
        return None;
    }
    // One pass: the digits as an integer, and where the point is.
    let mut digits: u64 = 0;
    let mut point = None;
    for (i, &b) in unsigned.iter().enumerate() {
        if b.is_ascii_digit() {
            digits = digits * 10 + u64::from(b - b'0');
        } else if b == b'.' && point.is_none() && i > 0 {
            point = Some(i);
        } else {
            return None;
        }
    }
    let frac_len = match point {
        Some(p) if p + 1 == unsigned.len() => return None,
        Some(p) => unsigned.len() - p - 1,
        None => 0,
    };
    if unsigned.len() - usize::from(point.is_some()) > 15 {
        return None;
    }
    let magnitude = digits as f64 / POWERS_OF_TEN[frac_len];
    Some(if negative { -magnitude } else { magnitude })
}

/// Client text shortened for quoting back (on a char boundary).
pub(crate) fn echo(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
    }
}

/// Batch warnings, aggregated per kind and key: a 10 000-reading legacy batch gets one
/// "ignored 'torque' in 10 000 readings" instead of 10 000 entries.
#[derive(Clone, Debug, Default)]
pub(crate) struct WarningTally {
    /// (count, first index) per [`IgnoredKey`], in `IgnoredKey::ALL` order.
    ignored: [(usize, usize); 4],
    ts_defaulted: (usize, usize),
}

impl WarningTally {
    fn record(&mut self, index: usize, notes: Notes) {
        fn bump(slot: &mut (usize, usize), index: usize) {
            if slot.0 == 0 {
                slot.1 = index;
            }
            slot.0 += 1;
        }
        if notes.ignored != 0 {
            for (i, key) in IgnoredKey::ALL.into_iter().enumerate() {
                if notes.ignored & key.bit() != 0 {
                    bump(&mut self.ignored[i], index);
                }
            }
        }
        if notes.ts_defaulted {
            bump(&mut self.ts_defaulted, index);
        }
    }

    /// The warnings, ordered by the first reading they concern.
    pub fn to_warnings(&self) -> Vec<Warning> {
        let readings = |n: usize| {
            if n == 1 {
                "1 reading".to_owned()
            } else {
                format!("{n} readings")
            }
        };
        let mut out = Vec::new();
        for (key, &(count, first_index)) in IgnoredKey::ALL.iter().zip(&self.ignored) {
            if count > 0 {
                out.push(Warning {
                    kind: WarningKind::IgnoredLegacyField,
                    field: Some(key.name().to_owned()),
                    count,
                    first_index,
                    message: format!(
                        "ignored legacy field '{}' in {}: espwatch does not store it",
                        key.name(),
                        readings(count)
                    ),
                });
            }
        }
        let (count, first_index) = self.ts_defaulted;
        if count > 0 {
            out.push(Warning {
                kind: WarningKind::TsDefaulted,
                field: Some("ts".to_owned()),
                count,
                first_index,
                message: format!("no ts in {}: the receive time was used", readings(count)),
            });
        }
        out.sort_by_key(|w| w.first_index);
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// The shortcut returns exactly what `str::parse` returns, bit for bit, whenever it
        /// takes a number; and it takes every plain decimal of up to 15 digits.
        #[test]
        fn exact_decimals_parse_as_std_does(
            text in prop_oneof![
                "-?[0-9]{1,9}(\\.[0-9]{1,8})?",
                "-?[0-9]{1,17}(\\.[0-9]{0,17})?",
                "[-+.0-9eE]{0,12}",
                "-?(inf|NaN|\\.5|5\\.|0x1)",
            ],
        ) {
            let digits = text.bytes().filter(u8::is_ascii_digit).count();
            let plain = text.trim_start_matches('-').split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && text.matches('.').count() <= 1
                && text.matches('-').count() <= usize::from(text.starts_with('-'));
            let fast = exact_decimal(&text);
            prop_assert_eq!(fast.is_some(), plain && digits <= 15, "{}", text);
            if let Some(v) = fast {
                let std: f64 = text.parse().unwrap();
                prop_assert_eq!(v.to_bits(), std.to_bits(), "{}", text);
            }
            prop_assert_eq!(
                parse_f64(&text).map(f64::to_bits).ok(),
                text.parse::<f64>().map(f64::to_bits).ok()
            );
        }
    }

    #[test]
    fn epoch_seconds_integer_fraction_and_limits() {
        assert_eq!(
            parse_epoch_seconds("1732262400"),
            Ok(Timestamp(1_732_262_400_000_000))
        );
        assert_eq!(
            parse_epoch_seconds("1732262400.5"),
            Ok(Timestamp(1_732_262_400_500_000))
        );
        // Exact, and truncated past microseconds.
        assert_eq!(
            parse_epoch_seconds("1732262400.1234569"),
            Ok(Timestamp(1_732_262_400_123_456))
        );
        assert_eq!(parse_epoch_seconds("0"), Ok(Timestamp(0)));
        assert_eq!(
            parse_epoch_seconds("1.7322624e9"),
            Ok(Timestamp(1_732_262_400_000_000))
        );
        assert!(
            parse_epoch_seconds("1732262400000").is_err(),
            "milliseconds"
        );
        assert!(parse_epoch_seconds("-1").is_err());
        assert!(parse_epoch_seconds("1e999").is_err());
        assert!(parse_epoch_seconds("99999999999999999999999").is_err());
        assert!(parse_epoch_seconds("abc").is_err());
        assert!(parse_epoch_seconds("").is_err());
        assert!(parse_epoch_seconds(".").is_err());
        assert_eq!(
            parse_epoch_seconds("253402300799"),
            Ok(Timestamp(253_402_300_799_000_000))
        );
        assert!(parse_epoch_seconds("253402300800").is_err());
    }

    #[test]
    fn echo_shortens_on_char_boundaries() {
        assert_eq!(echo("abc"), "abc");
        let long = "é".repeat(100);
        let short = echo(&long);
        assert_eq!(short.chars().count(), MAX_ECHO_CHARS + 1);
        assert!(short.ends_with('…'));
    }
}
