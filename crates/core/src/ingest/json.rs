//! JSON and NDJSON decoding.
//!
//! Bodies and lines of the common flat shape are decoded by the fast path in `json_plain.rs`;
//! everything it leaves (escapes, nesting, errors) is decoded here, with serde_json, which
//! also words every syntax error. Both feed the same `Draft`.
//!
//! Here, readings are deserialized straight from the input with a hand-written serde visitor: no
//! `serde_json::Value` tree per reading, keys dispatched by one `match`, strings borrowed from
//! the input when they have no escapes. Each value is taken as a borrowed
//! [`RawValue`] and typed here, not by serde_json, for one reason: serde_json refuses a number
//! that overflows f64 (`1e999`) with a *syntax* error, which would fail the whole batch; taking
//! the raw text lets it reach validation and be rejected as "not a finite number" like any
//! other bad value.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::draft::{self, Ctx, Draft, Notes, Val};
use super::keys::{self, Key, Target};
use super::{DecodeError, DecodeOptions, Decoded, Item, Warning, json_plain};

/// Field name of the error for an NDJSON line that is not JSON.
const LINE: &str = "line";

/// Decodes a JSON body: one object, or an array of objects.
pub(crate) fn decode_json(body: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    // Validating UTF-8 once up front (fast) lets serde_json borrow strings without
    // re-checking each, and gives a precise position for the error.
    let text = std::str::from_utf8(body).map_err(|e| utf8_error(body, e.valid_up_to()))?;
    let found = match text.trim_start().as_bytes().first() {
        Some(b'{') | Some(b'[') => None,
        Some(b'"') => Some("a string"),
        Some(b't') | Some(b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        Some(b'-') | Some(b'0'..=b'9') => Some("a number"),
        _ => Some("something else"),
    };
    if let Some(found) = found {
        // Distinguish "valid JSON of the wrong shape" from "not JSON at all".
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => DecodeError::TopLevel { found },
            Err(e) => syntax_error(&e),
        });
    }
    match json_plain::decode(text, opts) {
        Some(decoded) => Ok(decoded),
        None => decode_json_full(text, opts),
    }
}

/// Decodes any JSON body with serde_json: the path for everything the fast path
/// ([`json_plain`]) leaves, errors included.
pub(super) fn decode_json_full(text: &str, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let mut ctx = Ctx::new(opts.clone());
    let mut too_many = false;
    let mut de = serde_json::Deserializer::from_str(text);
    let visitor = TopLevelVisitor {
        ctx: &mut ctx,
        too_many: &mut too_many,
    };
    let items = de
        .deserialize_any(visitor)
        .and_then(|items| de.end().map(|()| items))
        .map_err(|e| {
            if too_many {
                DecodeError::TooManyReadings {
                    limit: opts.max_readings,
                }
            } else {
                syntax_error(&e)
            }
        })?;
    Ok(Decoded {
        items,
        warnings: ctx.tally.to_warnings(),
    })
}

/// Decodes an NDJSON body held in memory.
pub(crate) fn decode_ndjson(body: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let mut decoder = NdjsonDecoder::new(opts.clone());
    let mut items = Vec::new();
    for line in lines(body) {
        if let Some(item) = decoder.decode_line(line) {
            if items.len() == opts.max_readings {
                return Err(DecodeError::TooManyReadings {
                    limit: opts.max_readings,
                });
            }
            items.push(item);
        }
    }
    Ok(Decoded {
        items,
        warnings: decoder.finish(),
    })
}

/// The lines of a chunk of whole lines; a final `\n` ends the last line rather than starting
/// an empty one, and an empty chunk has no lines.
fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let chunk = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    let non_empty = (!chunk.is_empty()).then_some(chunk);
    non_empty
        .into_iter()
        .flat_map(|chunk| chunk.split(|&b| b == b'\n'))
}

/// Incremental NDJSON decoder: feed lines (or chunks of whole lines) in order; it numbers
/// readings and lines across calls and aggregates warnings.
///
/// A line that is not valid JSON rejects that reading only (field `line`); the others are
/// kept. Blank lines are skipped but counted for line numbers.
#[derive(Debug)]
pub struct NdjsonDecoder {
    ctx: Ctx,
    keys: json_plain::KeyOrder,
    next_index: usize,
    next_line: u64,
}

impl NdjsonDecoder {
    pub fn new(opts: DecodeOptions) -> Self {
        NdjsonDecoder {
            ctx: Ctx::new(opts),
            keys: json_plain::KeyOrder::default(),
            next_index: 0,
            next_line: 1,
        }
    }

    /// Decodes the next line of the input (with or without its `\n` / `\r\n`).
    /// `None` for a blank line.
    pub fn decode_line(&mut self, line: &[u8]) -> Option<Item> {
        let line_no = self.next_line;
        self.next_line += 1;
        let line = if line_no == 1 {
            super::strip_bom(line)
        } else {
            line
        };
        // Keep leading whitespace so serde_json's columns match the client's file.
        let line = line.trim_ascii_end();
        if line.trim_ascii_start().is_empty() {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let text = match std::str::from_utf8(line) {
            Ok(text) => text,
            Err(e) => {
                let reason = format!("not valid UTF-8 (at column {})", e.valid_up_to() + 1);
                return Some(draft::reject(index, Some(line_no), LINE, reason));
            }
        };
        let (item, notes) =
            json_plain::decode_line(text, &mut self.ctx, &mut self.keys, index, line_no)
                .unwrap_or_else(|| decode_line_full(text, &mut self.ctx, index, line_no));
        self.ctx.record(index, notes);
        Some(item)
    }

    /// Decodes a chunk of whole lines (the last one may lack its `\n`), appending the items.
    /// Chunks must split the input at line boundaries.
    pub fn decode_chunk(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        out.extend(lines(chunk).filter_map(|l| self.decode_line(l)));
    }

    /// Readings seen so far (blank lines excluded): the index the next reading will get.
    pub fn readings_seen(&self) -> usize {
        self.next_index
    }

    /// Lines seen so far, blank ones included.
    pub fn lines_seen(&self) -> u64 {
        self.next_line - 1
    }

    /// Warnings aggregated so far.
    pub fn warnings(&self) -> Vec<Warning> {
        self.ctx.tally.to_warnings()
    }

    pub fn finish(self) -> Vec<Warning> {
        self.warnings()
    }
}

/// Decodes one NDJSON line of any shape with serde_json. A line that is not JSON becomes a
/// rejected item (field `line`), with no notes.
pub(super) fn decode_line_full(
    text: &str,
    ctx: &mut Ctx,
    index: usize,
    line_no: u64,
) -> (Item, Notes) {
    let mut de = serde_json::Deserializer::from_str(text);
    let visitor = ReadingVisitor {
        ctx,
        index,
        line: Some(line_no),
    };
    let decoded = de
        .deserialize_any(visitor)
        .and_then(|decoded| de.end().map(|()| decoded));
    decoded.unwrap_or_else(|e| {
        let reason = format!(
            "invalid JSON at column {}: {}",
            e.column(),
            json_error_message(&e)
        );
        let item = draft::reject(index, Some(line_no), LINE, reason);
        (item, Notes::default())
    })
}

fn syntax_error(e: &serde_json::Error) -> DecodeError {
    // The parser's own recursion limit is the nesting limit of telemetry bodies: it costs
    // nothing on valid payloads (a pre-scan of every body cost a fifth of the throughput).
    if e.to_string().starts_with("recursion limit exceeded") {
        return DecodeError::TooDeep {
            limit: super::MAX_TELEMETRY_JSON_DEPTH,
        };
    }
    DecodeError::Syntax {
        line: e.line(),
        column: e.column(),
        message: json_error_message(e),
    }
}

/// serde_json's message without its " at line L column C" suffix (we report those apart).
fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => full,
    }
}

fn utf8_error(body: &[u8], valid_up_to: usize) -> DecodeError {
    let before = &body[..valid_up_to.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    DecodeError::Syntax {
        line,
        column: before.len() - line_start + 1,
        message: "invalid UTF-8".to_owned(),
    }
}

/// Top level of a JSON body: an object (one reading) or an array of them.
struct TopLevelVisitor<'c> {
    ctx: &'c mut Ctx,
    /// Set when the array has more than `max_readings` elements: the custom error raised to
    /// stop serde_json must not be reported as a syntax error.
    too_many: &'c mut bool,
}

impl<'de> Visitor<'de> for TopLevelVisitor<'_> {
    type Value = Vec<super::Item>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let visitor = ReadingVisitor {
            ctx: &mut *self.ctx,
            index: 0,
            line: None,
        };
        let (item, notes) = visitor.visit_map(map)?;
        self.ctx.record(0, notes);
        Ok(vec![item])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let index = items.len();
            if index == self.ctx.opts.max_readings {
                // Exactly `max_readings` elements is fine; one more is not.
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(items);
                }
                *self.too_many = true;
                return Err(de::Error::custom("too many readings"));
            }
            let seed = ReadingVisitor {
                ctx: &mut *self.ctx,
                index,
                line: None,
            };
            match seq.next_element_seed(seed)? {
                Some((item, notes)) => {
                    self.ctx.record(index, notes);
                    items.push(item);
                }
                None => return Ok(items),
            }
        }
    }
}

/// Decodes one JSON value as one reading. Anything but an object becomes a rejected item
/// rather than an error, so one bad array element does not sink the batch.
struct ReadingVisitor<'c> {
    ctx: &'c mut Ctx,
    index: usize,
    line: Option<u64>,
}

impl ReadingVisitor<'_> {
    fn not_an_object(self, got: &str) -> (Item, Notes) {
        let reason = format!("expected a JSON object (one reading), got {got}");
        let item = draft::reject(self.index, self.line, draft::WHOLE_READING, reason);
        (item, Notes::default())
    }
}

impl<'de> DeserializeSeed<'de> for ReadingVisitor<'_> {
    type Value = (Item, Notes);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReadingVisitor<'_> {
    type Value = (Item, Notes);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a telemetry reading object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut draft = Draft::new(self.ctx);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !draft.count_key() {
                // Too many keys: refuse the reading and skip the rest without classifying
                // (or allocating) a single further key.
                map.next_value::<IgnoredAny>()?;
                while map.next_key::<IgnoredAny>()?.is_some() {
                    map.next_value::<IgnoredAny>()?;
                }
                break;
            }
            match key {
                InKey::Known(Key {
                    target: Target::Ignored(ignored),
                    ..
                }) => {
                    map.next_value::<IgnoredAny>()?;
                    draft.ignore(ignored);
                }
                InKey::Known(key) => {
                    let raw: &'de RawValue = map.next_value()?;
                    draft.set(key, classify(raw.get()));
                }
                InKey::Unknown(name) => {
                    map.next_value::<IgnoredAny>()?;
                    draft.unknown(&name);
                }
            }
        }
        Ok(draft.finish(self.index, self.line))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.not_an_object("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.not_an_object("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.not_an_object("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.not_an_object("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.not_an_object("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.not_an_object("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.not_an_object("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.not_an_object("null"))
    }
}

/// A map key, classified without allocating unless it is unknown.
enum InKey {
    Known(Key),
    Unknown(String),
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = InKey;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<InKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = InKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    // serde_json calls visit_borrowed_str or visit_str (when the key has escapes); both
    // arrive here.
    fn visit_str<E: de::Error>(self, key: &str) -> Result<InKey, E> {
        Ok(match keys::lookup(key) {
            Some(key) => InKey::Known(key),
            None => InKey::Unknown(key.to_owned()),
        })
    }
}

/// Types the raw text of one JSON value. The text is known to be well-formed JSON.
fn classify(raw: &str) -> Val<'_> {
    match raw.as_bytes().first() {
        Some(b'n') => Val::Null,
        Some(b't') => Val::Bool(true),
        Some(b'f') => Val::Bool(false),
        Some(b'{') => Val::Object,
        Some(b'[') => Val::Array,
        Some(b'"') => {
            let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
            if inner.contains('\\') {
                // Rare (ids and timestamps do not need escapes): let serde_json unescape.
                Val::Str(Cow::Owned(
                    serde_json::from_str::<String>(raw).unwrap_or_default(),
                ))
            } else {
                Val::Str(Cow::Borrowed(inner))
            }
        }
        _ => Val::Number(raw),
    }
}
