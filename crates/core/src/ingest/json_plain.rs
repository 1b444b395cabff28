//! The fast path of JSON decoding, for the shape nearly every client sends: an array (or one
//! object) of flat objects whose values are numbers, strings without escapes, booleans or
//! null.
//!
//! It scans the bytes once and hands each key/value pair to the same [`Draft`] as the full
//! decoder in `json.rs`, so every rule about readings stays in one place. Anything outside
//! that shape — an escape, a nested value, an array element that is not an object, a syntax
//! error, too many readings — makes it give up (`None`), and the caller decodes the body
//! again with the full decoder, which handles everything and words the errors. Giving up is
//! always safe; accepting is only allowed when the full decoder would return the very same
//! result, which the property tests below check on random bodies.
//!
//! Why: decoding was the largest share of the server's CPU per reading (serde_json's
//! tokenizer, then the raw value typed a second time here), and the server shares its cores
//! with the database.

use std::borrow::Cow;

use super::draft::{Ctx, Draft, Notes, Val};
use super::keys::{self, Key};
use super::{DecodeOptions, Decoded, Item};

/// Decodes a JSON body of the plain shape; `None` when the body is anything else.
pub(super) fn decode(text: &str, opts: &DecodeOptions) -> Option<Decoded> {
    let mut ctx = Ctx::new(opts.clone());
    let mut keys = KeyOrder::default();
    let mut scan = Scanner::new(text);
    scan.skip_ws();
    let items = match scan.peek()? {
        b'[' => {
            scan.pos += 1;
            scan.skip_ws();
            let mut items = Vec::new();
            if scan.peek()? == b']' {
                scan.pos += 1;
            } else {
                loop {
                    let index = items.len();
                    if index == opts.max_readings {
                        // The full decoder reports the limit.
                        return None;
                    }
                    let (item, notes) = scan.reading(&mut ctx, &mut keys, index, None)?;
                    ctx.record(index, notes);
                    items.push(item);
                    scan.skip_ws();
                    match scan.next()? {
                        b',' => scan.skip_ws(),
                        b']' => break,
                        _ => return None,
                    }
                }
            }
            items
        }
        b'{' => {
            let (item, notes) = scan.reading(&mut ctx, &mut keys, 0, None)?;
            ctx.record(0, notes);
            vec![item]
        }
        _ => return None,
    };
    scan.skip_ws();
    scan.at_end().then(|| Decoded {
        items,
        warnings: ctx.tally.to_warnings(),
    })
}

/// Decodes one NDJSON line holding one plain object; `None` when it is anything else.
///
/// `ctx` is the stream's: giving up part-way leaves it as it was, except for its set of
/// interned well ids, which holds only valid ids and so cannot change a later result.
pub(super) fn decode_line(
    text: &str,
    ctx: &mut Ctx,
    keys: &mut KeyOrder,
    index: usize,
    line: u64,
) -> Option<(Item, Notes)> {
    let mut scan = Scanner::new(text);
    scan.skip_ws();
    let decoded = scan.reading(ctx, keys, index, Some(line))?;
    scan.skip_ws();
    scan.at_end().then_some(decoded)
}

/// The keys of the previous reading, in order. Clients send every reading of a batch with
/// the same keys in the same order, so comparing a key with the one at its position is
/// nearly always enough, and cheaper than looking it up among all the names we know.
#[derive(Debug, Default)]
pub(super) struct KeyOrder(Vec<Key>);

impl KeyOrder {
    /// The key `name`, sent as the `position`th key of its object.
    fn lookup(&mut self, position: usize, name: &str) -> Option<Key> {
        if let Some(key) = self.0.get(position)
            && key.name == name
        {
            return Some(*key);
        }
        let key = keys::lookup(name)?;
        if position < self.0.len() {
            self.0[position] = key;
        } else if position == self.0.len() {
            self.0.push(key);
        }
        Some(key)
    }
}

/// A cursor over JSON text. Every method that returns `Option` returns `None` on anything the
/// fast path does not take, leaving the error (if it is one) to the full decoder.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// JSON's four whitespace characters, and no others.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// One object, turned into a reading by a [`Draft`].
    fn reading(
        &mut self,
        ctx: &mut Ctx,
        keys: &mut KeyOrder,
        index: usize,
        line: Option<u64>,
    ) -> Option<(Item, Notes)> {
        if self.next()? != b'{' {
            return None;
        }
        let mut draft = Draft::new(ctx);
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(draft.finish(index, line));
        }
        for position in 0.. {
            let name = self.string()?;
            self.skip_ws();
            if self.next()? != b':' {
                return None;
            }
            self.skip_ws();
            let value = self.value()?;
            if draft.count_key() {
                match keys.lookup(position, name) {
                    Some(key) => draft.set(key, value),
                    None => draft.unknown(name),
                }
            }
            self.skip_ws();
            match self.next()? {
                b',' => self.skip_ws(),
                b'}' => return Some(draft.finish(index, line)),
                _ => return None,
            }
        }
        None
    }

    /// A scalar value. Objects and arrays are left to the full decoder.
    fn value(&mut self) -> Option<Val<'a>> {
        match self.peek()? {
            b'"' => self.string().map(|s| Val::Str(Cow::Borrowed(s))),
            b'-' | b'0'..=b'9' => self.number().map(Val::Number),
            b't' => self.literal("true").map(|()| Val::Bool(true)),
            b'f' => self.literal("false").map(|()| Val::Bool(false)),
            b'n' => self.literal("null").map(|()| Val::Null),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word.as_bytes()).then(|| self.pos = end)
    }

    /// The contents of a string without escapes or control characters (which JSON forbids
    /// unescaped); the text is valid UTF-8 already, so multi-byte characters pass as they are.
    fn string(&mut self) -> Option<&'a str> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.pos;
        // One tight loop over the slice; the cursor moves once, at the end.
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        self.pos = start + len + 1;
        (self.bytes[start + len] == b'"').then(|| &self.text[start..start + len])
    }

    /// The text of a number, checked against JSON's grammar:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        Some(&self.text[start..self.pos])
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::telemetry::Timestamp;

    fn opts() -> DecodeOptions {
        let now = Timestamp::parse_rfc3339("2026-11-22T08:00:00Z").expect("valid");
        DecodeOptions {
            max_readings: 40,
            ..DecodeOptions::new(now)
        }
    }

    fn full(text: &str) -> Result<Decoded, super::super::DecodeError> {
        super::super::json::decode_json_full(text, &opts())
    }

    fn full_line(text: &str) -> (Item, Notes) {
        let mut ctx = Ctx::new(opts());
        super::super::json::decode_line_full(text, &mut ctx, 3, 7)
    }

    /// Keys a client may send: canonical, legacy aliases, ignored legacy keys, unknown ones.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => proptest::sample::select(vec![
                "well_id", "ts", "frequency_hz", "motor_current_a", "motor_voltage_v",
                "intake_pressure_psi", "discharge_pressure_psi", "tubing_pressure_psi",
                "intake_temp_c", "motor_temp_c", "vibration_x_g", "vibration_y_g",
                "flow_rate_bpd", "gor_scf_bbl", "water_cut_pct", "device_id", "timestamp",
                "pip", "motor_current", "vibration", "torque", "rpm", "flow_variance",
            ])
            .prop_map(str::to_owned),
            1 => "[a-zA-Z_é]{0,8}",
        ]
    }

    /// Values in every form the plain shape allows, valid for some keys and not for others.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (-1e4f64..1e4).prop_map(|v| format!("{:.2}", v)),
            2 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            1 => proptest::sample::select(vec![
                "0", "-0", "1e999", "-1e-999", "1732262400", "1732262400.123456", "true",
                "false", "null", "\"\"", "\"W-1\"", "\"well 7\"", "\"2026-11-22T07:59:00Z\"",
                "\"2026-11-22T07:59:00.5+01:00\"", "\"2030-01-01T00:00:00Z\"", "\"12.5\"",
                "\"x\u{e9}\u{1F600}\"",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\n\t "), 1 => Just("\r\n")]
    }

    fn object() -> impl Strategy<Value = String> {
        proptest::collection::vec((key(), value(), ws(), ws()), 0..16).prop_map(|pairs| {
            let pairs: Vec<String> = pairs
                .into_iter()
                .map(|(k, v, a, b)| format!("{a}\"{k}\"{b}:{a}{v}{b}"))
                .collect();
            format!("{{{}}}", pairs.join(","))
        })
    }

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (proptest::collection::vec((object(), ws()), 0..45), ws()).prop_map(
                |(objects, end)| {
                    let objects: Vec<String> =
                        objects.into_iter().map(|(o, w)| format!("{w}{o}{w}")).collect();
                    format!("{end}[{}]{end}", objects.join(","))
                }
            ),
            1 => (object(), ws()).prop_map(|(o, w)| format!("{w}{o}{w}")),
        ]
    }

    /// Small edits that break the plain shape or the syntax in every way a byte can.
    fn mutated() -> impl Strategy<Value = String> {
        (
            body(),
            any::<prop::sample::Index>(),
            0..4u8,
            prop::sample::select(vec![
                "", "\\", "\"", ",", ":", "{", "}", "[", "]", "-", ".", "e", "0", " ", "\u{1}",
                "nul", "[1]", "{}", "\\u0041", "ï",
            ]),
        )
            .prop_map(|(body, at, how, with)| {
                let mut cut = at.index(body.len() + 1);
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                let (head, tail) = body.split_at(cut);
                let tail_from = tail.char_indices().nth(1).map_or(tail.len(), |(i, _)| i);
                match how {
                    0 => format!("{head}{with}{tail}"),
                    1 => format!("{head}{with}{}", &tail[tail_from..]),
                    2 => format!("{head}{}", &tail[tail_from..]),
                    _ => head.to_owned(),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Every plain body is taken by the fast path, with the full decoder's result.
        #[test]
        fn plain_bodies_decode_as_the_full_decoder_does(body in body()) {
            let fast = decode(&body, &opts());
            let full = full(&body);
            if full.as_ref().is_err() {
                // Only the reading limit makes a plain body an error.
                prop_assert!(fast.is_none());
                let limit = matches!(full, Err(super::super::DecodeError::TooManyReadings { .. }));
                prop_assert!(limit, "{:?}", full);
            } else {
                prop_assert!(fast.is_some(), "fast path gave up on a plain body: {}", body);
                prop_assert_eq!(fast.as_ref(), full.as_ref().ok());
            }
        }

        /// Whatever the fast path takes, the full decoder decodes the same way; whatever is an
        /// error for the full decoder, the fast path gives up on.
        #[test]
        fn edited_bodies_are_taken_only_when_equal(body in mutated()) {
            if let Some(fast) = decode(&body, &opts()) {
                prop_assert_eq!(Ok(fast), full(&body), "{}", body);
            }
        }

        #[test]
        fn lines_decode_as_the_full_decoder_does(line in prop_oneof![object(), mutated()]) {
            let line = line.trim_ascii_end();
            let mut ctx = Ctx::new(opts());
            if let Some(fast) = decode_line(line, &mut ctx, &mut KeyOrder::default(), 3, 7) {
                prop_assert_eq!(fast, full_line(line), "{}", line);
            }
        }
    }

    #[test]
    fn plain_lines_take_the_fast_path() {
        let mut ctx = Ctx::new(opts());
        let mut keys = KeyOrder::default();
        for line in [
            r#"{"well_id":"W-1","ts":"2026-11-22T07:59:00Z","pip":850.5,"torque":3}"#,
            r#"  { "well_id" : "W-1" , "motor_temp_c" : 1e2 }"#,
            r#"{}"#,
        ] {
            assert_eq!(
                decode_line(line, &mut ctx, &mut keys, 3, 7),
                Some(full_line(line)),
                "{line}"
            );
        }
    }

    #[test]
    fn anything_else_is_left_to_the_full_decoder() {
        for body in [
            r#"[{"well_id":"W\u002d1","pip":1}]"#,
            r#"[{"well_id":"W-1","pip":{"v":1}}]"#,
            r#"[{"well_id":"W-1","pip":[1]}]"#,
            r#"[{"well_id":"W-1","pip":1},]"#,
            r#"[{"well_id":"W-1","pip":01}]"#,
            r#"[{"well_id":"W-1","pip":1.}]"#,
            r#"[{"well_id":"W-1","pip":+1}]"#,
            r#"[{"well_id":"W-1","pip":1}] x"#,
            r#"[{"well_id":"W-1","pip":1}"#,
            r#"[1, {"well_id":"W-1","pip":1}]"#,
            "[{\"well_id\":\"W\u{1}1\",\"pip\":1}]",
            "\u{a0}[]",
        ] {
            assert_eq!(decode(body, &opts()), None, "{body}");
        }
    }
}
