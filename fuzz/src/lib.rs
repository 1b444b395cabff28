//! Fuzz targets (issue 17): each takes any bytes and hands them to one parser of untrusted
//! input, checking what that parser promises. A target never panics on its own; a panic is a
//! finding. The same functions run under AFL++ (`src/main.rs`, `scripts/fuzz.sh`) and in the
//! replay of the corpora (`tests/replay.rs`).

#[cfg(feature = "server")]
use base64::Engine;
#[cfg(feature = "server")]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use espwatch_core::ingest::{DecodeOptions, PayloadFormat, check_decoded_invariants, decode};
use espwatch_core::telemetry::{Timestamp, WellId};
#[cfg(feature = "field")]
use espwatch_field::sparkplug::{Kind, MetricMap, State, Topic};
#[cfg(feature = "server")]
use espwatch_server::auth::token::{TokenError, TokenKeys};
#[cfg(feature = "server")]
use hmac::{Hmac, KeyInit, Mac};

/// A fuzz target: any bytes in, a panic when the parser breaks a promise.
pub type Target = fn(&[u8]);

/// Every target built by name (the name is also its corpus directory under `fuzz/corpus/`);
/// without the default features, the core ones only.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode_json", decode_json),
    ("decode_ndjson", decode_ndjson),
    ("decode_csv", decode_csv),
    ("parse_text", parse_text),
    #[cfg(feature = "server")]
    ("telemetry_query", telemetry_query),
    #[cfg(feature = "server")]
    ("jwt", jwt),
    #[cfg(feature = "field")]
    ("sparkplug", sparkplug),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Work a target does the same way for every input (the `jwt` target's keys, whose secret
/// is judged for strength when they are made), done before AFL++'s fork server starts (it is
/// deferred to after this call in `main.rs`), so that each execution pays for its input only.
pub fn prepare(name: &str) {
    #[cfg(feature = "server")]
    if name == "jwt" {
        let _ = jwt_keys();
    }
    let _ = name;
}

/// The receive time of every decode: fixed, so that a finding replays the same way.
const NOW: Timestamp = Timestamp(1_790_000_000_000_000);

fn decode_as(format: PayloadFormat, data: &[u8]) {
    let opts = DecodeOptions::new(NOW);
    if let Ok(decoded) = decode(format, data, &opts) {
        check_decoded_invariants(&decoded, &opts);
    }
}

/// A `POST /api/v1/telemetry` body as `application/json`: every reading it accepts is
/// within the sane ranges, with a valid id, not in the future.
pub fn decode_json(data: &[u8]) {
    decode_as(PayloadFormat::Json, data);
}

/// The same as NDJSON.
pub fn decode_ndjson(data: &[u8]) {
    decode_as(PayloadFormat::Ndjson, data);
}

/// The same as CSV.
pub fn decode_csv(data: &[u8]) {
    decode_as(PayloadFormat::Csv, data);
}

/// The small parsers behind query strings and flags: RFC 3339 timestamps (what parses prints
/// and parses back to the same instant), durations, well ids (kept as given).
pub fn parse_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ts) = Timestamp::parse_rfc3339(text) {
        assert_eq!(
            Timestamp::parse_rfc3339(&ts.to_rfc3339()),
            Ok(ts),
            "{text:?}"
        );
    }
    let _ = espwatch_core::duration::parse_duration_micros(text);
    if let Ok(id) = WellId::parse(text) {
        assert_eq!(id.as_str(), text);
    }
}

/// The query string of `GET /api/v1/wells/{id}/telemetry` as the route parses it: a query
/// the store is handed has a non-empty range of at most 400 days, channels, a step of at
/// least a second and 2..=1 000 000 points; a refusal is a 400.
#[cfg(feature = "server")]
pub fn telemetry_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let well = WellId::parse("W-1").expect("a valid id");
    match espwatch_server::fuzzing::telemetry_query(well, text) {
        None => {}
        Some(Ok(q)) => {
            assert!(q.range.from < q.range.to, "{text:?}: {q:?}");
            assert!(
                q.range.to.0 - q.range.from.0 <= 400 * 86_400 * 1_000_000,
                "{text:?}"
            );
            assert!(!q.fields.is_empty(), "{text:?}");
            assert!(q.step_micros.is_none_or(|s| s >= 1_000_000), "{text:?}");
            assert!((2..=1_000_000).contains(&q.max_points), "{text:?}");
        }
        Some(Err(e)) => assert_eq!(e.status().as_u16(), 400, "{text:?}"),
    }
}

/// The access-token secret of the `jwt` target (passes the server's strength check).
#[cfg(feature = "server")]
const SECRET: &[u8] = b"fz7Qk2pLx9Wm4Rt8Vb3Nc6Hy1Jd5Gs0Ae";
/// The `jwt` target's keys, made once per process.
#[cfg(feature = "server")]
fn jwt_keys() -> &'static TokenKeys {
    static KEYS: std::sync::OnceLock<TokenKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        TokenKeys::new(SECRET, "espwatch", "espwatch-api").expect("a strong secret")
    })
}
/// The time tokens are verified at, seconds.
#[cfg(feature = "server")]
const JWT_NOW: i64 = 1_790_000_000;

/// The access-token verifier: arbitrary text as a bearer token, and (so that the claims'
/// checks are reached too) arbitrary bytes as the payload of a token correctly signed with
/// the server's secret. The first byte chooses. A token that verifies has a valid MAC and
/// an unexpired, well-formed lifetime; a mangled header never passes.
#[cfg(feature = "server")]
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = jwt_keys();
    let token = if mode & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        text.to_owned()
    } else {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(rest);
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("any key length");
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    };
    match keys.verify_until(&token, JWT_NOW) {
        Ok((claims, until)) => {
            assert!(
                JWT_NOW < claims.exp.saturating_add(keys.leeway_secs),
                "{token}"
            );
            assert!(
                claims.exp.saturating_sub(claims.iat) <= keys.max_lifetime_secs,
                "{token}"
            );
            assert!(until <= claims.exp, "{token}");
            // What verified re-signs to a token that verifies the same.
            assert_eq!(
                keys.verify(&keys.sign(&claims), JWT_NOW),
                Ok(claims),
                "{token}"
            );
        }
        Err(TokenError::Signature) => assert_eq!(mode & 1, 0, "signed: {token}"),
        Err(_) => {}
    }
}

/// Sparkplug B: a session of messages from one edge node through the interpreter the MQTT
/// subscriber runs, and the readings it makes through the core decoder, as `field::mqtt`
/// does. The input is framed: per message a kind byte (NBIRTH, NDATA, NDEATH, DBIRTH,
/// DDATA, DDEATH by its value mod 6), a length byte, then that many payload bytes (the rest
/// when fewer remain).
#[cfg(feature = "field")]
pub fn sparkplug(data: &[u8]) {
    const KINDS: [&str; 6] = ["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH"];
    let map = MetricMap::new(&Default::default()).expect("the default table");
    let mut state = State::default();
    let mut rest = data;
    let mut now_ms = 1_790_000_000_000u64;
    while let [kind, len, tail @ ..] = rest {
        let kind = KINDS[usize::from(*kind) % KINDS.len()];
        let (payload, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        now_ms += 1_000;
        let topic_text = if kind.starts_with('N') {
            format!("spBv1.0/field/{kind}/edge-1")
        } else {
            format!("spBv1.0/field/{kind}/edge-1/W-7")
        };
        let topic = Topic::parse(&topic_text).expect("a Sparkplug topic");
        assert_ne!(topic.kind, Kind::Other);
        let Ok(out) = state.interpret(&topic, payload, &map, now_ms) else {
            continue;
        };
        if out.readings.is_empty() {
            continue;
        }
        let body = serde_json::Value::Array(out.readings).to_string();
        let opts = DecodeOptions {
            well: Some(WellId::parse("W-7").expect("a valid id")),
            ..DecodeOptions::new(Timestamp(now_ms as i64 * 1_000))
        };
        if let Ok(decoded) = decode(PayloadFormat::Json, body.as_bytes(), &opts) {
            check_decoded_invariants(&decoded, &opts);
        }
    }
}
