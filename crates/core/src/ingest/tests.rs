//! Behaviour of the decoders, format by format, plus property tests: no input panics, and
//! valid readings survive a round trip through every format.

use proptest::prelude::*;

use super::*;
use crate::telemetry::{Field, Measurements, Reading, Timestamp, WellId};

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-22T08:00:00Z").unwrap()
}

fn opts() -> DecodeOptions {
    DecodeOptions::new(now())
}

fn decode_ok(format: PayloadFormat, body: &str) -> Decoded {
    decode(format, body.as_bytes(), &opts())
        .unwrap_or_else(|e| panic!("{format:?} body failed as a whole: {e}\n{body}"))
}

fn json(body: &str) -> Decoded {
    decode_ok(PayloadFormat::Json, body)
}

/// The only item of a one-reading JSON body.
fn one(body: &str) -> Item {
    let mut decoded = json(body);
    assert_eq!(decoded.items.len(), 1);
    decoded.items.remove(0)
}

fn valid(item: &Item) -> &Reading {
    item.valid()
        .unwrap_or_else(|| panic!("expected a valid reading, got {item:?}"))
}

fn rejected(item: &Item) -> &Rejection {
    item.rejection()
        .unwrap_or_else(|| panic!("expected a rejection, got {item:?}"))
}

/// (field, reason) pairs of a rejected one-reading JSON body.
fn errors(body: &str) -> Vec<(String, String)> {
    rejected(&one(body))
        .errors
        .iter()
        .map(|e| (e.field.clone(), e.reason.clone()))
        .collect()
}

fn error_fields(body: &str) -> Vec<String> {
    errors(body).into_iter().map(|(f, _)| f).collect()
}

fn reason_for(body: &str, field: &str) -> String {
    errors(body)
        .into_iter()
        .find(|(f, _)| f == field)
        .unwrap_or_else(|| panic!("no error on {field} for {body}"))
        .1
}

// ---------------------------------------------------------------- JSON: the canonical model

#[test]
fn canonical_reading_with_every_field() {
    let body = r#"{"well_id":"WELL-001","ts":"2026-11-22T09:30:00+02:00",
        "frequency_hz":55.0,"motor_current_a":45.5,"motor_voltage_v":2300,
        "intake_pressure_psi":850,"discharge_pressure_psi":2900,"tubing_pressure_psi":150,
        "intake_temp_c":75,"motor_temp_c":95,"vibration_x_g":0.8,"vibration_y_g":0.7,
        "flow_rate_bpd":1500,"gor_scf_bbl":600,"water_cut_pct":35.5}"#;
    let item = one(body);
    let r = valid(&item);
    assert_eq!(r.well_id.as_str(), "WELL-001");
    assert_eq!(
        r.ts,
        Timestamp::parse_rfc3339("2026-11-22T07:30:00Z").unwrap()
    );
    assert_eq!(r.values.count(), 13);
    assert_eq!(r.values.get(Field::MotorVoltageV), Some(2300.0));
    assert_eq!(r.values.get(Field::WaterCutPct), Some(35.5));
    assert!(json(body).warnings.is_empty());
}

#[test]
fn missing_and_null_fields_are_allowed() {
    let item = one(
        r#"{"well_id":"W","ts":"2026-11-22T07:00:00Z","motor_current_a":40,"motor_temp_c":null}"#,
    );
    let r = valid(&item);
    assert_eq!(r.values.count(), 1);
    assert_eq!(r.values.get(Field::MotorTempC), None);
}

#[test]
fn a_reading_without_any_measurement_is_rejected() {
    let body = r#"{"well_id":"W","ts":"2026-11-22T07:00:00Z","motor_temp_c":null}"#;
    assert_eq!(
        errors(body),
        vec![("measurements".to_owned(), "no measurement".to_owned())]
    );
    // When the only measurement was bad, that error says it all: no "no measurement" on top.
    let body = r#"{"well_id":"W","ts":"2026-11-22T07:00:00Z","motor_temp_c":"hot"}"#;
    assert_eq!(error_fields(body), vec!["motor_temp_c"]);
}

#[test]
fn every_error_of_a_reading_is_reported_together() {
    let body = r#"{"well_id":"bad id!","ts":"yesterday","frequency_hz":"NaN",
        "motor_current_a":-3,"motor_temp_c":true,"vibration_x_g":{"rms":1},
        "flow_rate_bpd":[1,2],"water_cut_pct":1e999,"colour":"red"}"#;
    let rejection = rejected(&one(body)).clone();
    assert_eq!(rejection.well_id.as_deref(), Some("bad id!"));
    let fields: Vec<&str> = rejection.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "well_id",
            "ts",
            "frequency_hz",
            "motor_current_a",
            "motor_temp_c",
            "vibration_x_g",
            "flow_rate_bpd",
            "water_cut_pct",
            "colour"
        ]
    );
    let reason = |f: &str| {
        rejection
            .errors
            .iter()
            .find(|e| e.field == f)
            .map(|e| e.reason.clone())
            .unwrap()
    };
    assert_eq!(
        reason("frequency_hz"),
        r#"expected a number, got the string "NaN""#
    );
    assert!(reason("motor_current_a").contains("outside the physically possible range"));
    assert_eq!(
        reason("motor_temp_c"),
        "expected a number, got the boolean true"
    );
    assert_eq!(reason("vibration_x_g"), "expected a number, got an object");
    assert_eq!(reason("flow_rate_bpd"), "expected a number, got an array");
    assert_eq!(reason("water_cut_pct"), "not a finite number");
    assert!(reason("ts").starts_with("not an RFC 3339 timestamp"));
}

#[test]
fn out_of_range_values_are_rejected_with_the_range() {
    let body = r#"{"well_id":"W","ts":"2026-11-22T07:00:00Z","frequency_hz":121}"#;
    assert_eq!(
        reason_for(body, "frequency_hz"),
        "121 is outside the physically possible range 0..=120 Hz"
    );
    // Bounds are inclusive.
    let item = one(
        r#"{"well_id":"W","ts":"2026-11-22T07:00:00Z","frequency_hz":120,"intake_pressure_psi":-15}"#,
    );
    valid(&item);
}

#[test]
fn huge_numbers_are_a_field_error_not_a_broken_body() {
    // serde_json alone would refuse 1e999 as a syntax error and fail the whole array.
    let body = r#"[{"well_id":"A","ts":"2026-11-22T07:00:00Z","motor_current_a":1e999},
                  {"well_id":"B","ts":"2026-11-22T07:00:00Z","motor_current_a":-1e999},
                  {"well_id":"C","ts":"2026-11-22T07:00:00Z","motor_current_a":40}]"#;
    let d = json(body);
    assert_eq!(
        rejected(&d.items[0]).errors[0].reason,
        "not a finite number"
    );
    assert_eq!(
        rejected(&d.items[1]).errors[0].reason,
        "not a finite number"
    );
    valid(&d.items[2]);
}

#[test]
fn unknown_fields_are_named_with_a_suggestion_when_close() {
    let body = r#"{"well_id":"W","ts":"2026-11-22T07:00:00Z","motor_current_a":40,
        "Motor_Temp_C":90,"speed":3}"#;
    let errs = errors(body);
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].0, "Motor_Temp_C");
    assert_eq!(errs[0].1, "unknown field; did you mean 'motor_temp_c'?");
    assert_eq!(errs[1].0, "speed");
    assert!(errs[1].1.starts_with("unknown field; expected well_id, ts"));
}

#[test]
fn future_readings_are_rejected_past_the_tolerance() {
    let at = |offset_s: i64| {
        let ts = Timestamp(now().0 + offset_s * Timestamp::MICROS_PER_SECOND);
        format!(r#"{{"well_id":"W","ts":"{ts}","motor_current_a":40}}"#)
    };
    valid(&one(&at(300)));
    let reason = reason_for(&at(301), "ts");
    assert!(reason.contains("in the future"), "{reason}");
    // Tolerance is configurable.
    let strict = DecodeOptions {
        max_future: std::time::Duration::ZERO,
        ..opts()
    };
    let d = decode(PayloadFormat::Json, at(1).as_bytes(), &strict).unwrap();
    rejected(&d.items[0]);
    // The past is fine, however far (backfills).
    valid(&one(
        r#"{"well_id":"W","ts":"2001-01-01T00:00:00Z","motor_current_a":40}"#,
    ));
}

#[test]
fn well_id_missing_invalid_or_not_a_string() {
    let base = r#""ts":"2026-11-22T07:00:00Z","motor_current_a":40"#;
    let r = rejected(&one(&format!("{{{base}}}"))).clone();
    assert_eq!(r.well_id, None);
    assert_eq!(r.errors[0].field, "well_id");
    assert_eq!(r.errors[0].reason, "missing");

    let r = rejected(&one(&format!(r#"{{"well_id":"",{base}}}"#))).clone();
    assert_eq!(r.well_id.as_deref(), Some(""));
    assert_eq!(r.errors[0].reason, "must not be empty");

    let long = "x".repeat(65);
    let r = rejected(&one(&format!(r#"{{"well_id":"{long}",{base}}}"#))).clone();
    assert!(r.errors[0].reason.contains("at most 64"));
    assert!(r.well_id.unwrap().starts_with("xxxx"));

    let r = rejected(&one(&format!(r#"{{"well_id":42,{base}}}"#))).clone();
    assert_eq!(r.well_id, None);
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(r.errors[0].reason, "expected a string, got the number 42");

    let r = rejected(&one(&format!(r#"{{"well_id":null,{base}}}"#))).clone();
    assert_eq!(r.errors[0].reason, "missing");

    // A rejection for another reason still names the well, for the client's logs.
    let r = rejected(&one(r#"{"well_id":"W-9","motor_current_a":-1}"#)).clone();
    assert_eq!(r.well_id.as_deref(), Some("W-9"));
}

#[test]
fn timestamps_as_rfc3339_or_epoch_seconds() {
    let ts_of = |ts: &str| {
        let item = one(&format!(
            r#"{{"well_id":"W","ts":{ts},"motor_current_a":40}}"#
        ));
        valid(&item).ts
    };
    let expected = Timestamp::parse_rfc3339("2024-11-22T08:00:00Z").unwrap();
    assert_eq!(ts_of(r#""2024-11-22T08:00:00Z""#), expected);
    assert_eq!(ts_of(r#""2024-11-22T03:00:00-05:00""#), expected);
    assert_eq!(ts_of("1732262400"), expected);
    assert_eq!(ts_of("1732262400.5"), Timestamp(expected.0 + 500_000));
    assert_eq!(ts_of("1.7322624e9"), expected);

    let bad = |ts: &str| {
        reason_for(
            &format!(r#"{{"well_id":"W","ts":{ts},"motor_current_a":40}}"#),
            "ts",
        )
    };
    assert!(bad(r#""1732262400""#).starts_with("not an RFC 3339"));
    assert!(bad(r#""2024-11-22 08:00""#).starts_with("not an RFC 3339"));
    assert!(bad("1732262400000").contains("milliseconds are not accepted"));
    assert!(bad("-5").contains("outside the supported range"));
    assert!(bad("true").starts_with("expected an RFC 3339 string or Unix epoch seconds"));
}

#[test]
fn absent_or_null_timestamp_defaults_to_now_with_one_warning() {
    let body = r#"[{"well_id":"A","motor_current_a":40},
                  {"well_id":"B","ts":null,"motor_current_a":41},
                  {"well_id":"C","ts":"2026-11-22T07:00:00Z","motor_current_a":42}]"#;
    let d = json(body);
    assert_eq!(valid(&d.items[0]).ts, now());
    assert_eq!(valid(&d.items[1]).ts, now());
    assert_eq!(d.warnings.len(), 1);
    let w = &d.warnings[0];
    assert_eq!(w.kind, WarningKind::TsDefaulted);
    assert_eq!((w.count, w.first_index), (2, 0));
    assert_eq!(w.message, "no ts in 2 readings: the receive time was used");
}

#[test]
fn escaped_keys_and_strings_are_understood() {
    let item =
        one(r#"{"well\u005fid":"W\u002D1","ts":"2026-11-22T07:00:00\u005A","motor_current_a":40}"#);
    let r = valid(&item);
    assert_eq!(r.well_id.as_str(), "W-1");
    assert_eq!(
        r.ts,
        Timestamp::parse_rfc3339("2026-11-22T07:00:00Z").unwrap()
    );
}

// ---------------------------------------------------------------- JSON: legacy payloads

const LEGACY_SAMPLE: &str = r#"{"well_id":"TEST-001","flow_rate":1500.0,"pip":850.0,"motor_current":45.0,"motor_temp":85.0,"vibration":0.8,"vsd_frequency":55.0,"flow_variance":18.5,"torque":120.0,"gor":600.0}"#;

#[test]
fn the_old_platforms_sample_payload_still_works() {
    let d = json(LEGACY_SAMPLE);
    let r = valid(&d.items[0]);
    assert_eq!(r.well_id.as_str(), "TEST-001");
    assert_eq!(r.ts, now());
    let expect = [
        (Field::FlowRateBpd, 1500.0),
        (Field::IntakePressurePsi, 850.0),
        (Field::MotorCurrentA, 45.0),
        (Field::MotorTempC, 85.0),
        (Field::VibrationXG, 0.8),
        (Field::FrequencyHz, 55.0),
        (Field::GorScfBbl, 600.0),
    ];
    assert_eq!(r.values.iter().collect::<Vec<_>>().len(), expect.len());
    for (f, v) in expect {
        assert_eq!(r.values.get(f), Some(v), "{f}");
    }
    let kinds: Vec<(WarningKind, Option<&str>)> = d
        .warnings
        .iter()
        .map(|w| (w.kind, w.field.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            (WarningKind::IgnoredLegacyField, Some("flow_variance")),
            (WarningKind::IgnoredLegacyField, Some("torque")),
            (WarningKind::TsDefaulted, Some("ts")),
        ]
    );
}

#[test]
fn every_legacy_alias_maps_to_its_canonical_field() {
    let body = r#"{"device_id":"OLD-7","timestamp":1732262400,"intake_pressure":800,
        "discharge_pressure":2800,"motor_current":40,"temperature":90,"vibration":0.5,
        "vsd_frequency":50,"flow_rate":1200,"gor":500,"rpm":3500,"pressure":12}"#;
    let item = one(body);
    let r = valid(&item);
    assert_eq!(r.well_id.as_str(), "OLD-7");
    assert_eq!(r.ts, Timestamp::from_secs(1_732_262_400));
    assert_eq!(r.values.get(Field::IntakePressurePsi), Some(800.0));
    assert_eq!(r.values.get(Field::DischargePressurePsi), Some(2800.0));
    assert_eq!(r.values.get(Field::MotorTempC), Some(90.0));
    assert_eq!(r.values.count(), 8);
}

#[test]
fn legacy_errors_are_reported_under_canonical_names_naming_the_alias() {
    let body = r#"{"device_id":"W","pip":"high","motor_current_a":40}"#;
    assert_eq!(
        errors(body),
        vec![(
            "intake_pressure_psi".to_owned(),
            r#"expected a number, got the string "high" (sent as 'pip')"#.to_owned()
        )]
    );
    let body = r#"{"device_id":"no spaces","motor_current_a":40}"#;
    let r = rejected(&one(body)).clone();
    assert_eq!(r.errors[0].field, "well_id");
    assert!(r.errors[0].reason.ends_with("(sent as 'device_id')"));
    assert_eq!(r.well_id.as_deref(), Some("no spaces"));
}

#[test]
fn a_field_given_twice_must_agree() {
    // Same value under both names: a client in transition; fine.
    let item = one(r#"{"well_id":"W","pip":850,"intake_pressure_psi":850.0}"#);
    assert_eq!(
        valid(&item).values.get(Field::IntakePressurePsi),
        Some(850.0)
    );
    // Different values: which one is right is unknowable.
    let body = r#"{"well_id":"W","intake_pressure_psi":850,"pip":851}"#;
    assert_eq!(
        errors(body),
        vec![(
            "intake_pressure_psi".to_owned(),
            "given twice, as intake_pressure_psi (850) and pip (851)".to_owned()
        )]
    );
    // Same for the id and the timestamp, and for a plain repeated key.
    let body = r#"{"well_id":"A","device_id":"B","motor_current_a":1}"#;
    assert_eq!(
        reason_for(body, "well_id"),
        r#"given twice, as well_id ("A") and device_id ("B")"#
    );
    let body = r#"{"well_id":"A","ts":"2026-11-22T07:00:00Z","timestamp":1,"motor_current_a":1}"#;
    assert!(reason_for(body, "ts").starts_with("given twice, as ts"));
    let same_instant =
        r#"{"well_id":"A","ts":"2024-11-22T08:00:00Z","timestamp":1732262400,"motor_current_a":1}"#;
    valid(&one(same_instant));
    let body = r#"{"well_id":"A","motor_current_a":1,"motor_current_a":2}"#;
    assert_eq!(error_fields(body), vec!["motor_current_a"]);
    // null under one name and a value under the other: null is "not given".
    valid(&one(
        r#"{"well_id":"A","motor_temp_c":null,"motor_temp":80}"#,
    ));
}

#[test]
fn ignored_legacy_warnings_are_aggregated_over_the_batch() {
    let mut body = String::from("[");
    for i in 0..1000 {
        if i > 0 {
            body.push(',');
        }
        if i < 10 {
            body.push_str(r#"{"well_id":"W","motor_current_a":40,"ts":1732262400}"#);
        } else {
            body.push_str(
                r#"{"well_id":"W","motor_current":40,"torque":1,"rpm":2,"ts":1732262400}"#,
            );
        }
    }
    body.push(']');
    let d = json(&body);
    assert_eq!(d.valid_count(), 1000);
    assert_eq!(d.warnings.len(), 2);
    assert_eq!(d.warnings[0].field.as_deref(), Some("torque"));
    assert_eq!((d.warnings[0].count, d.warnings[0].first_index), (990, 10));
    assert_eq!(
        d.warnings[0].message,
        "ignored legacy field 'torque' in 990 readings: espwatch does not store it"
    );
    assert_eq!(d.warnings[1].field.as_deref(), Some("rpm"));
}

// ---------------------------------------------------------------- JSON: body structure

#[test]
fn array_elements_that_are_not_objects_are_rejected_alone() {
    let body = r#"[1, "x", null, [{"well_id":"W"}], true,
                  {"well_id":"W","motor_current_a":40}]"#;
    let d = json(body);
    assert_eq!(d.items.len(), 6);
    let reasons: Vec<String> = d.items[..5]
        .iter()
        .map(|i| {
            let r = rejected(i);
            assert_eq!(r.errors[0].field, "*");
            r.errors[0].reason.clone()
        })
        .collect();
    assert_eq!(
        reasons[0],
        "expected a JSON object (one reading), got a number"
    );
    assert!(reasons[3].ends_with("got an array"));
    assert_eq!(rejected(&d.items[2]).index, 2);
    valid(&d.items[5]);
}

#[test]
fn broken_json_fails_the_body_with_a_position() {
    let body =
        "[{\"well_id\":\"A\",\"motor_current_a\":40},\n {\"well_id\":\"B\" \"motor_current_a\":1}]";
    match decode(PayloadFormat::Json, body.as_bytes(), &opts()) {
        Err(DecodeError::Syntax {
            line,
            column,
            message,
        }) => {
            assert_eq!((line, column), (2, 17));
            assert_eq!(message, "expected `,` or `}`");
        }
        other => panic!("{other:?}"),
    }
    for bad in ["[", "{", r#"{"well_id":"A"}}"#, "[1,]", "nope", "{'a':1}"] {
        assert!(
            matches!(
                decode(PayloadFormat::Json, bad.as_bytes(), &opts()),
                Err(DecodeError::Syntax { .. })
            ),
            "{bad}"
        );
    }
    let not_utf8 = b"[{\"well_id\":\"\xff\"}]";
    assert_eq!(
        decode(PayloadFormat::Json, not_utf8, &opts()),
        Err(DecodeError::Syntax {
            line: 1,
            column: 14,
            message: "invalid UTF-8".to_owned()
        })
    );
}

#[test]
fn top_level_must_be_an_object_or_array() {
    for (body, found) in [
        ("42", "a number"),
        ("\"x\"", "a string"),
        ("null", "null"),
        (" true ", "a boolean"),
    ] {
        assert_eq!(
            decode(PayloadFormat::Json, body.as_bytes(), &opts()),
            Err(DecodeError::TopLevel { found }),
            "{body}"
        );
    }
}

#[test]
fn empty_bodies() {
    for format in [
        PayloadFormat::Json,
        PayloadFormat::Ndjson,
        PayloadFormat::Csv,
    ] {
        for body in ["", "  \n\r\n ", "\u{feff}"] {
            assert_eq!(
                decode(format, body.as_bytes(), &opts()),
                Err(DecodeError::Empty),
                "{format:?} {body:?}"
            );
        }
    }
    assert_eq!(json("[]"), Decoded::default());
    assert_eq!(
        decode_ok(PayloadFormat::Ndjson, "\n\n [] \n").items.len(),
        1
    );
    assert_eq!(json(" [ ] "), Decoded::default());
}

#[test]
fn json_tolerates_a_bom() {
    let d = decode(
        PayloadFormat::Json,
        "\u{feff}{\"well_id\":\"W\",\"motor_current_a\":1}".as_bytes(),
        &opts(),
    )
    .unwrap();
    valid(&d.items[0]);
}

#[test]
fn too_many_errors_in_one_reading_are_summarised() {
    let mut body = String::from(r#"{"well_id":"W","motor_current_a":1"#);
    for i in 0..1000 {
        body.push_str(&format!(r#","junk{i}":1"#));
    }
    body.push('}');
    let r = rejected(&one(&body)).clone();
    assert_eq!(r.errors.len(), 33);
    assert_eq!(r.errors[32].field, "*");
    // 256 keys decoded (2 good, 254 unknown: 32 shown, 222 not), then the cap: one more.
    assert_eq!(
        r.errors[32].reason,
        "223 more errors not shown; more than 256 keys: the rest of the reading was not decoded"
    );
}

/// Issue 18 item 9: a reading with a million unknown keys costs a scan, not a million
/// suggestion searches; it is refused for its key count, and the readings around it are kept.
#[test]
fn a_reading_with_a_million_keys_is_refused_quickly() {
    let mut body =
        String::from(r#"[{"well_id":"W","motor_current_a":1},{"well_id":"W","motor_current_a":1"#);
    for i in 0..1_000_000 {
        body.push_str(&format!(r#","motor_curent_{i}":1"#));
    }
    body.push_str(r#"},{"well_id":"W","ts":"2026-01-01T00:00:01Z","motor_current_a":2}]"#);
    let started = std::time::Instant::now();
    let d = decode(PayloadFormat::Json, body.as_bytes(), &opts()).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(d.items.len(), 3);
    let r = rejected(&d.items[1]);
    assert!(
        r.errors
            .iter()
            .any(|e| e.reason.contains("more than 256 keys")),
        "{r:?}"
    );
    valid(&d.items[2]);
    // Speed is a benchmark's to measure, not a wall-clock assertion's (shared, noisy machines:
    // this failed under load at 3 s); the time is printed for whoever runs it alone.
    println!("a million keys refused in {elapsed:?}");
}

// ---------------------------------------------------------------- NDJSON

#[test]
fn ndjson_keeps_good_lines_around_bad_ones() {
    let body = "{\"well_id\":\"A\",\"motor_current_a\":1}\r\n\
                \n\
                {\"well_id\":\"B\",\"motor_current_a\": }\n\
                [1]\n\
                {\"well_id\":\"C\",\"motor_current_a\":3} trailing\n\
                   {\"well_id\":\"D\",\"motor_current_a\":4}";
    let d = decode_ok(PayloadFormat::Ndjson, body);
    assert_eq!(d.items.len(), 5);
    valid(&d.items[0]);
    let b = rejected(&d.items[1]);
    assert_eq!((b.index, b.line), (1, Some(3)));
    assert_eq!(b.errors[0].field, "line");
    assert_eq!(
        b.errors[0].reason,
        "invalid JSON at column 35: expected value"
    );
    let array = rejected(&d.items[2]);
    assert_eq!((array.index, array.line), (2, Some(4)));
    assert_eq!(array.errors[0].field, "*");
    let trailing = rejected(&d.items[3]);
    assert_eq!(trailing.errors[0].field, "line");
    assert!(trailing.errors[0].reason.contains("trailing characters"));
    assert_eq!(valid(&d.items[4]).well_id.as_str(), "D");
}

#[test]
fn ndjson_decoder_numbers_lines_across_chunks() {
    let lines = [
        r#"{"well_id":"A","motor_current":1,"torque":5}"#,
        "",
        r#"{"well_id":"B","motor_current_a":-1}"#,
        r#"{"well_id":"C","motor_current_a":1}"#,
        r#"not json"#,
    ];
    let whole = lines.join("\n") + "\n";
    let expected = decode_ok(PayloadFormat::Ndjson, &whole);

    let mut decoder = NdjsonDecoder::new(opts());
    let mut items = Vec::new();
    decoder.decode_chunk(
        format!("{}\n{}\n", lines[0], lines[1]).as_bytes(),
        &mut items,
    );
    decoder.decode_chunk(format!("{}\n{}", lines[2], lines[3]).as_bytes(), &mut items);
    decoder.decode_chunk(lines[4].as_bytes(), &mut items);
    assert_eq!(decoder.readings_seen(), 4);
    assert_eq!(decoder.lines_seen(), 5);
    assert_eq!(items, expected.items);
    assert_eq!(decoder.finish(), expected.warnings);
    assert_eq!(rejected(&items[3]).line, Some(5));
    assert_eq!(rejected(&items[1]).line, Some(3));
}

// ---------------------------------------------------------------- CSV

fn csv(body: &str) -> Decoded {
    decode_ok(PayloadFormat::Csv, body)
}

fn csv_err(body: &str) -> DecodeError {
    decode(PayloadFormat::Csv, body.as_bytes(), &opts()).unwrap_err()
}

#[test]
fn csv_basic_rows_with_empty_cells() {
    let d = csv("well_id,ts,motor_current_a,motor_temp_c\n\
                 W-1,2026-11-22T07:00:00Z,40,90\n\
                 W-1,2026-11-22T07:00:10Z,,91\n");
    assert_eq!(d.items.len(), 2);
    let r = valid(&d.items[1]);
    assert_eq!(r.values.get(Field::MotorCurrentA), None);
    assert_eq!(r.values.get(Field::MotorTempC), Some(91.0));
    assert!(d.warnings.is_empty());
}

#[test]
fn csv_tolerates_bom_crlf_whitespace_and_quotes() {
    let d = csv("\u{feff}well_id , ts ,motor_current_a\r\n \
                 W-1 , 2026-11-22T07:00:00+01:00 , 40.5 \r\n\
                 \"W-2\",1732262400,\" 41 \"\r\n");
    assert_eq!(d.items.len(), 2);
    let r = valid(&d.items[0]);
    assert_eq!(r.well_id.as_str(), "W-1");
    assert_eq!(
        r.ts,
        Timestamp::parse_rfc3339("2026-11-22T06:00:00Z").unwrap()
    );
    assert_eq!(r.values.get(Field::MotorCurrentA), Some(40.5));
    let r = valid(&d.items[1]);
    assert_eq!(r.ts, Timestamp::from_secs(1_732_262_400));
    assert_eq!(r.values.get(Field::MotorCurrentA), Some(41.0));
}

#[test]
fn csv_bad_cells_are_rejected_per_row_with_lines() {
    let d = csv("well_id,ts,motor_current_a,motor_temp_c\n\
                 W,2026-11-22T07:00:00Z,NaN,inf\n\
                 W,2026-11-22T07:00:00Z,abc,90\n\
                 W,2026-11-22T07:00:00Z,40\n\
                 W,2026-11-22T07:00:00Z,40,90,1\n\
                 W,yesterday,40,90\n\
                 W,2026-11-22T07:00:00Z,40,90\n");
    assert_eq!(d.items.len(), 6);
    let r = rejected(&d.items[0]);
    assert_eq!((r.index, r.line), (0, Some(2)));
    assert_eq!(r.errors.len(), 2);
    assert_eq!(r.errors[0].reason, "not a finite number");
    assert_eq!(r.errors[1].field, "motor_temp_c");
    assert_eq!(
        rejected(&d.items[1]).errors[0].reason,
        r#"not a number: "abc""#
    );
    let short = rejected(&d.items[2]);
    assert_eq!(short.line, Some(4));
    assert_eq!(short.well_id.as_deref(), Some("W"));
    assert_eq!(
        short.errors[0],
        FieldError {
            field: "*".into(),
            reason: "expected 4 cells as in the header, found 3".into()
        }
    );
    assert!(rejected(&d.items[3]).errors[0].reason.contains("found 5"));
    let bad_ts = rejected(&d.items[4]);
    assert_eq!(bad_ts.errors[0].field, "ts");
    assert!(
        bad_ts.errors[0]
            .reason
            .starts_with("expected Unix epoch seconds"),
        "{:?}",
        bad_ts.errors[0]
    );
    valid(&d.items[5]);
}

#[test]
fn csv_header_problems_fail_the_body() {
    assert_eq!(
        csv_err("well_id,ts,motor_current_a,colour\nW,1,2,red\n"),
        DecodeError::CsvUnknownColumn {
            name: "colour".into(),
            position: 4
        }
    );
    assert_eq!(
        csv_err("well_id,motor_current_a,motor_current_a\n"),
        DecodeError::CsvDuplicateColumn {
            name: "motor_current_a".into()
        }
    );
    assert_eq!(
        csv_err("ts,motor_current_a\n"),
        DecodeError::CsvMissingColumn { name: "well_id" }
    );
    assert_eq!(
        csv_err("well_id,ts,torque\n"),
        DecodeError::CsvNoMeasurementColumn
    );
    assert!(matches!(
        csv_err("well_id,,motor_current_a\n"),
        DecodeError::CsvUnknownColumn { position: 2, .. }
    ));
}

#[test]
fn csv_header_only_and_blank_lines() {
    assert_eq!(csv("well_id,ts,motor_current_a\n"), Decoded::default());
    assert_eq!(csv("well_id,ts,motor_current_a"), Decoded::default());
    let d = csv("well_id,motor_current_a\n\nW,1\n  ,  \nW,2\n");
    assert_eq!(d.items.len(), 2);
    assert!(d.items.iter().all(|i| i.valid().is_some()));
}

#[test]
fn csv_legacy_header_with_ignored_columns_and_no_ts() {
    let d = csv("device_id,pip,motor_current,torque,flow_variance\n\
                 OLD-1,850,45,120,18.5\n\
                 OLD-1,851,46,121,18.6\n");
    assert_eq!(d.valid_count(), 2);
    let r = valid(&d.items[0]);
    assert_eq!(r.ts, now());
    assert_eq!(r.values.get(Field::IntakePressurePsi), Some(850.0));
    let summary: Vec<(Option<&str>, usize)> = d
        .warnings
        .iter()
        .map(|w| (w.field.as_deref(), w.count))
        .collect();
    assert_eq!(
        summary,
        [
            (Some("flow_variance"), 2),
            (Some("torque"), 2),
            (Some("ts"), 2)
        ]
    );
}

#[test]
fn csv_decoder_numbers_lines_across_chunks() {
    let body = "\r\nwell_id,ts,motor_current_a\r\nW,1732262400,40\r\n\r\nW,1732262410,-1\r\n\r\n\r\nW,1732262420\r\n";
    let expected = csv(body);
    let lines: Vec<u64> = expected
        .items
        .iter()
        .filter_map(|i| i.rejection().and_then(|r| r.line))
        .collect();
    assert_eq!(
        lines,
        [5, 8],
        "physical lines, blank and CRLF lines counted"
    );

    // The same file, header and then arbitrary whole-line chunks.
    let mut decoder = CsvDecoder::new(b"well_id,ts,motor_current_a\r\n", opts()).unwrap();
    let mut items = Vec::new();
    decoder.decode_chunk(b"W,1732262400,40\r\n\r\n", &mut items);
    decoder.decode_chunk(b"W,1732262410,-1\r\n\r\n", &mut items);
    decoder.decode_chunk(b"\r\nW,1732262420", &mut items);
    assert_eq!(decoder.readings_seen(), 3);
    assert_eq!(decoder.lines_seen(), 7);
    let lines: Vec<Option<u64>> = items
        .iter()
        .filter_map(|i| i.rejection().map(|r| r.line))
        .collect();
    assert_eq!(lines, [Some(4), Some(7)], "the header is line 1 here");
}

#[test]
fn csv_lines_count_quoted_line_breaks() {
    let d = csv("well_id,motor_current_a\n\"W\nX\",1\nW,-1\n");
    let lines: Vec<Option<u64>> = d
        .items
        .iter()
        .map(|i| i.rejection().unwrap().line)
        .collect();
    assert_eq!(lines, [Some(2), Some(4)]);
}

#[test]
fn csv_cells_that_are_not_utf8_are_field_errors() {
    let body = b"well_id,motor_current_a\nW,4\xff\nW,1\n";
    let d = decode(PayloadFormat::Csv, body, &opts()).unwrap();
    assert_eq!(
        rejected(&d.items[0]).errors[0],
        FieldError {
            field: "motor_current_a".into(),
            reason: "not valid UTF-8".into()
        }
    );
    valid(&d.items[1]);
}

#[test]
fn the_reading_limit_fails_the_body_in_every_format() {
    let limited = DecodeOptions {
        max_readings: 2,
        ..opts()
    };
    let row = r#"{"well_id":"W","motor_current_a":1}"#;
    let bodies = [
        (
            PayloadFormat::Json,
            format!("[{row},{row}]"),
            format!("[{row},{row},{row}]"),
        ),
        (
            PayloadFormat::Json,
            "[1,2]".to_owned(),
            "[{},{},{}]".to_owned(),
        ),
        (
            PayloadFormat::Ndjson,
            format!("{row}\n\n{row}\n\n"),
            format!("{row}\n{row}\nx"),
        ),
        (
            PayloadFormat::Csv,
            "well_id,motor_current_a\nW,1\n\nW,2\n".to_owned(),
            "well_id,motor_current_a\nW,1\nW,2\nW,3".to_owned(),
        ),
    ];
    for (format, at_limit, over) in bodies {
        let d = decode(format, at_limit.as_bytes(), &limited).unwrap();
        assert_eq!(d.items.len(), 2, "{format:?}");
        assert_eq!(
            decode(format, over.as_bytes(), &limited),
            Err(DecodeError::TooManyReadings { limit: 2 }),
            "{format:?}"
        );
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let deep = "[".repeat(100_000);
    assert!(matches!(
        decode(PayloadFormat::Json, deep.as_bytes(), &opts()),
        Err(DecodeError::Syntax { .. })
    ));
    // Balanced but deep: each element is refused on its own, nothing overflows.
    let balanced = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    let d = decode(PayloadFormat::Json, balanced.as_bytes(), &opts()).unwrap();
    rejected(&d.items[0]);
    let open = "[".repeat(100_000);
    let close = "]".repeat(100_000);
    let line = format!(r#"{{"well_id":"W","motor_current_a":{open}1{close}}}"#);
    let _ = decode(PayloadFormat::Json, format!("[{line}]").as_bytes(), &opts());
    let d = decode(PayloadFormat::Ndjson, line.as_bytes(), &opts()).unwrap();
    rejected(&d.items[0]);
}

// ---------------------------------------------------------------- API types

#[test]
fn content_types_map_to_formats() {
    use PayloadFormat::*;
    assert_eq!(
        PayloadFormat::from_content_type("application/json"),
        Some(Json)
    );
    assert_eq!(
        PayloadFormat::from_content_type("Application/JSON; charset=utf-8"),
        Some(Json)
    );
    assert_eq!(
        PayloadFormat::from_content_type("application/x-ndjson"),
        Some(Ndjson)
    );
    assert_eq!(PayloadFormat::from_content_type("text/csv"), Some(Csv));
    assert_eq!(PayloadFormat::from_content_type("text/plain"), None);
}

#[test]
fn rejections_and_warnings_serialize_for_the_api() {
    let d = json(r#"[{"well_id":"W","pip":-100,"torque":1}]"#);
    let value = serde_json::to_value(d.items[0].rejection().unwrap()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "index": 0,
            "well_id": "W",
            "errors": [{
                "field": "intake_pressure_psi",
                "reason": "-100 is outside the physically possible range -15..=20000 psi (sent as 'pip')"
            }]
        })
    );
    let value = serde_json::to_value(&d.warnings[0]).unwrap();
    assert_eq!(value["kind"], "ignored_legacy_field");
    assert_eq!(value["field"], "torque");
    let value = serde_json::to_value(DecodeError::Syntax {
        line: 1,
        column: 2,
        message: "x".into(),
    })
    .unwrap();
    assert_eq!(value["kind"], "syntax");
    assert_eq!(value["line"], 1);
}

// ---------------------------------------------------------------- properties

const FORMATS: [PayloadFormat; 3] = [
    PayloadFormat::Json,
    PayloadFormat::Ndjson,
    PayloadFormat::Csv,
];

/// Bytes that look enough like our payloads to reach deep into the decoders.
fn payloadish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b",".to_vec()),
        Just(b":".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\"well_id\"".to_vec()),
        Just(b"well_id".to_vec()),
        Just(b"\"ts\"".to_vec()),
        Just(b"ts".to_vec()),
        Just(b"\"timestamp\"".to_vec()),
        Just(b"\"pip\"".to_vec()),
        Just(b"motor_current_a".to_vec()),
        Just(b"\"motor_current_a\"".to_vec()),
        Just(b"\"torque\"".to_vec()),
        Just(b"\"W-1\"".to_vec()),
        Just(b"\"2026-11-22T07:00:00Z\"".to_vec()),
        Just(b"2026-11-22T07:00:00Z".to_vec()),
        Just(b"1e999".to_vec()),
        Just(b"-0".to_vec()),
        Just(b"1732262400.5".to_vec()),
        Just(b"null".to_vec()),
        Just(b"true".to_vec()),
        Just(b"NaN".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xff".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
        "[0-9.eE+-]{1,12}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|parts| parts.concat())
}

fn field_values() -> impl Strategy<Value = Measurements> {
    let slots: Vec<BoxedStrategy<Option<f64>>> = Field::ALL
        .into_iter()
        .map(|f| {
            let r = f.sane_range();
            proptest::option::of(r.min..=r.max).boxed()
        })
        .collect();
    slots.prop_filter_map("at least one measurement", |values| {
        let mut m = Measurements::empty();
        for (f, v) in Field::ALL.into_iter().zip(values) {
            m.set(f, v);
        }
        (!m.is_empty()).then_some(m)
    })
}

fn readings() -> impl Strategy<Value = Vec<Reading>> {
    let reading = (
        "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
        // From 1970 to the future tolerance.
        0i64..=now().saturating_add(DecodeOptions::DEFAULT_MAX_FUTURE).0,
        field_values(),
    )
        .prop_map(|(id, ts, values)| Reading {
            well_id: WellId::parse(&id).unwrap(),
            ts: Timestamp(ts),
            values,
        });
    proptest::collection::vec(reading, 0..20)
}

fn to_json_object(r: &Reading) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("well_id".into(), r.well_id.as_str().into());
    map.insert("ts".into(), r.ts.to_rfc3339().into());
    for (f, v) in r.values.iter() {
        map.insert(f.name().into(), v.into());
    }
    serde_json::Value::Object(map)
}

fn to_csv(readings: &[Reading]) -> String {
    let mut out = String::from("well_id,ts");
    for f in Field::ALL {
        out.push(',');
        out.push_str(f.name());
    }
    out.push('\n');
    for r in readings {
        out.push_str(&format!("{},{}", r.well_id, r.ts));
        for f in Field::ALL {
            out.push(',');
            if let Some(v) = r.values.get(f) {
                // Display of f64 is shortest-round-trip in Rust.
                out.push_str(&v.to_string());
            }
        }
        out.push('\n');
    }
    out
}

fn valid_readings(d: &Decoded) -> Vec<Reading> {
    d.items.iter().map(|i| valid(i).clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        for format in FORMATS {
            let _ = decode(format, &body, &opts());
        }
    }

    #[test]
    fn payload_like_bytes_never_panic(body in payloadish_bytes()) {
        for format in FORMATS {
            if let Ok(d) = decode(format, &body, &opts()) {
                // Whatever came out is consistent.
                for (i, item) in d.items.iter().enumerate() {
                    if let Item::Rejected(r) = item {
                        prop_assert!(!r.errors.is_empty());
                        if format == PayloadFormat::Json {
                            prop_assert_eq!(r.index, i);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn csv_like_bodies_never_panic(
        columns in proptest::sample::subsequence(
            vec!["ts", "pip", "motor_current_a", "torque", "timestamp", "water_cut_pct"], 1..4),
        rows in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    Just(""), Just("1"), Just("-0"), Just("NaN"), Just("inf"), Just("1e999"),
                    Just("W-1"), Just("\"q,\""), Just("\""), Just("1732262400.5"),
                    Just("2026-11-22T07:00:00Z"), Just(" \r"), Just("\u{feff}"), Just("é"),
                ],
                0..6,
            ),
            0..8,
        ),
    ) {
        let mut body = format!("well_id,{}\n", columns.join(","));
        for row in &rows {
            body.push_str(&row.join(","));
            body.push_str("\r\n");
        }
        if let Ok(d) = decode(PayloadFormat::Csv, body.as_bytes(), &opts()) {
            for item in &d.items {
                if let Item::Rejected(r) = item {
                    prop_assert!(!r.errors.is_empty());
                    prop_assert!(r.line.is_some_and(|l| l >= 2));
                }
            }
        }
    }

    /// Rows split without the `csv` crate read exactly as the crate reads them: the same
    /// items (valid readings, every rejection with its index, line and reasons) and warnings
    /// as the reference that sends every row through the crate, whatever the quoting, line
    /// endings, blank lines, separators, stray bytes; and the same again chunk by chunk.
    #[test]
    fn csv_rows_split_here_read_as_the_csv_crate_reads_them(
        columns in proptest::sample::subsequence(
            vec!["ts", "pip", "motor_current_a", "torque", "water_cut_pct"], 1..5),
        separator in prop_oneof![Just(b','), Just(b';'), Just(b'\t')],
        decimal_comma in any::<bool>(),
        lines in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    4 => Just(&b""[..]), 4 => Just(&b"1"[..]), 4 => Just(&b"W-1"[..]),
                    4 => Just(&b"40.5"[..]), 2 => Just(&b"40,5"[..]), 2 => Just(&b" 7 "[..]),
                    2 => Just(&b"2026-11-22T07:00:00Z"[..]), 2 => Just(&b"1732262400.5"[..]),
                    1 => Just(&b"\"q,\""[..]), 1 => Just(&b"\""[..]), 1 => Just(&b"\"a\nb\""[..]),
                    1 => Just(&b"x\"y"[..]), 1 => Just(&b"\r"[..]), 1 => Just(&b" \r "[..]),
                    1 => Just(&b"\n"[..]), 1 => Just(&b"\t"[..]), 1 => Just(&b"\xff"[..]),
                    1 => Just("\u{feff}".as_bytes()), 1 => Just("\u{a0}é".as_bytes()),
                    1 => Just(&b"NaN"[..]), 1 => Just(&b"-1e999"[..]), 1 => Just(&b"W-\x0b"[..]),
                ],
                0..7,
            ),
            0..10,
        ),
        endings in proptest::collection::vec(
            prop_oneof![4 => Just(&b"\n"[..]), 2 => Just(&b"\r\n"[..]), 1 => Just(&b"\r"[..]),
                        1 => Just(&b"\n\n"[..]), 1 => Just(&b"\r\r\n"[..]), 1 => Just(&b""[..])],
            10,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let sep = char::from(separator).to_string();
        let mut body = format!("well_id{sep}{}\n", columns.join(&sep)).into_bytes();
        for (row, ending) in lines.iter().zip(&endings) {
            body.extend_from_slice(&row.join(&separator));
            body.extend_from_slice(ending);
        }
        let opts = DecodeOptions {
            csv: CsvDialect { separator, decimal_comma },
            ..opts()
        };
        let fast = decode(PayloadFormat::Csv, &body, &opts);
        let reference = csv::decode_csv_reference(&body, &opts);
        prop_assert_eq!(&fast, &reference, "{:?}", String::from_utf8_lossy(&body));

        // Chunk by chunk, cut at a line boundary outside quotes (none in the first part).
        let header_end = body.iter().position(|&b| b == b'\n').unwrap() + 1;
        let data = &body[header_end..];
        let breaks: Vec<usize> = data
            .iter()
            .enumerate()
            .take_while(|&(_, &b)| b != b'"')
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            // A chunk starting with a byte order mark has it skipped, as a body does.
            .filter(|&at| !data[at..].starts_with("\u{feff}".as_bytes()))
            .collect();
        if let (Ok(whole), false) = (&fast, breaks.is_empty()) {
            let at = breaks[cut.index(breaks.len())];
            let mut decoder = CsvDecoder::new(&body[..header_end], opts.clone()).unwrap();
            let mut items = Vec::new();
            decoder.decode_chunk(&data[..at], &mut items);
            decoder.decode_chunk(&data[at..], &mut items);
            prop_assert_eq!(&items, &whole.items);
            prop_assert_eq!(decoder.finish(), whole.warnings.clone());
        }
    }

    #[test]
    fn valid_readings_round_trip_through_every_format(readings in readings()) {
        let array = serde_json::Value::Array(readings.iter().map(to_json_object).collect());
        let body = serde_json::to_string_pretty(&array).unwrap();
        let d = decode(PayloadFormat::Json, body.as_bytes(), &opts()).unwrap();
        prop_assert_eq!(&valid_readings(&d), &readings);
        prop_assert!(d.warnings.is_empty());

        if !readings.is_empty() {
            let ndjson: String = readings
                .iter()
                .map(|r| to_json_object(r).to_string() + "\n")
                .collect();
            let d = decode(PayloadFormat::Ndjson, ndjson.as_bytes(), &opts()).unwrap();
            prop_assert_eq!(&valid_readings(&d), &readings);
        }

        let d = decode(PayloadFormat::Csv, to_csv(&readings).as_bytes(), &opts()).unwrap();
        prop_assert_eq!(&valid_readings(&d), &readings);
    }

    #[test]
    fn out_of_range_values_are_always_rejected(
        field in proptest::sample::select(Field::ALL.to_vec()),
        above in any::<bool>(),
        excess in 1e-6f64..1e6,
    ) {
        let r = field.sane_range();
        let v = if above { r.max + excess.max(r.max.abs() * 1e-12) } else { r.min - excess.max(r.min.abs() * 1e-12) };
        let body = format!(r#"{{"well_id":"W","{}":{}}}"#, field.name(), serde_json::to_string(&v).unwrap());
        let d = decode(PayloadFormat::Json, body.as_bytes(), &opts()).unwrap();
        let rejection = d.items[0].rejection().cloned();
        prop_assert!(rejection.is_some());
        prop_assert_eq!(&rejection.unwrap().errors[0].field, field.name());
    }
}

// ---------------------------------------------------------------- a well named by the transport

#[test]
fn a_well_named_by_the_transport_fills_in_and_guards_well_id() {
    let well = WellId::parse_new("ESP-7").unwrap();
    let topic = DecodeOptions {
        well: Some(well.clone()),
        ..opts()
    };
    // JSON (plain fast path and serde path), NDJSON and a CSV without a well_id column.
    let bodies = [
        (
            PayloadFormat::Json,
            r#"{"ts":"2026-11-22T07:00:00Z","pip":850}"#.to_owned(),
        ),
        (
            PayloadFormat::Json,
            r#"[{"ts":"2026-11-22T07:00:00\u005A","pip":850}]"#.to_owned(),
        ),
        (
            PayloadFormat::Ndjson,
            "{\"ts\":\"2026-11-22T07:00:00Z\",\"pip\":850}\n".to_owned(),
        ),
        (
            PayloadFormat::Csv,
            "ts,intake_pressure_psi\n2026-11-22T07:00:00Z,850\n".to_owned(),
        ),
    ];
    for (format, body) in &bodies {
        let d = decode(*format, body.as_bytes(), &topic).unwrap();
        let r = valid(&d.items[0]);
        assert_eq!(r.well_id, well, "{format:?} {body}");
        assert_eq!(r.values.get(Field::IntakePressurePsi), Some(850.0));
        // Without the transport's well the same body has no well.
        match decode(*format, body.as_bytes(), &opts()) {
            Ok(d) => assert!(
                rejected(&d.items[0])
                    .errors
                    .iter()
                    .any(|e| e.field == "well_id"),
                "{format:?}"
            ),
            Err(e) => assert_eq!(e, DecodeError::CsvMissingColumn { name: "well_id" }),
        }
    }
    // The same well named in the reading is fine; another well is refused, the rest kept.
    let body = r#"[{"well_id":"ESP-7","pip":1},{"well_id":"ESP-8","pip":2},{"pip":3}]"#;
    let d = decode(PayloadFormat::Json, body.as_bytes(), &topic).unwrap();
    assert_eq!(valid(&d.items[0]).well_id, well);
    let refused = rejected(&d.items[1]);
    assert_eq!(refused.well_id.as_deref(), Some("ESP-8"));
    assert!(
        refused.errors[0]
            .reason
            .contains("not the well this message was sent for"),
        "{refused:?}"
    );
    assert_eq!(
        valid(&d.items[2]).values.get(Field::IntakePressurePsi),
        Some(3.0)
    );
}

#[test]
fn naive_times_take_their_wells_registry_zone_in_a_second_pass() {
    use crate::localtime::UtcOffset;
    let csv = "well_id,ts,motor_current_a\n\
               A,2026-11-22 06:00:00,40\n\
               B,2026-11-22 06:00:00,41\n\
               C,2026-11-22 06:00:00,42\n\
               A,2026-11-22T06:00:00Z,43\n\
               B,2026-11-22 06:00:10,9999\n";
    let mut decoded = decode_ok(PayloadFormat::Csv, csv);
    assert_eq!(decoded.valid_count(), 1);
    let ids = |v: Vec<WellId>| v.iter().map(|w| w.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(decoded.wells_lacking_zone()), ["A", "B", "C"]);
    let zones = [
        (
            WellId::parse("A").unwrap(),
            UtcOffset::parse("+03:00").unwrap(),
        ),
        (
            WellId::parse("B").unwrap(),
            UtcOffset::parse("-01:00").unwrap(),
        ),
    ];
    let n = apply_well_zones(
        PayloadFormat::Csv,
        csv.as_bytes(),
        &opts(),
        &mut decoded,
        &zones,
    )
    .unwrap();
    assert_eq!(n, 3);
    let at = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
    assert_eq!(valid(&decoded.items[0]).ts, at("2026-11-22T03:00:00Z"));
    assert_eq!(valid(&decoded.items[1]).ts, at("2026-11-22T07:00:00Z"));
    // No registry zone: still refused, with the same reason.
    assert!(rejected(&decoded.items[2]).lacks_zone());
    assert_eq!(valid(&decoded.items[3]).ts, at("2026-11-22T06:00:00Z"));
    // Its time now decodes; its other problem remains.
    let r = rejected(&decoded.items[4]);
    assert!(!r.lacks_zone(), "{r:?}");
    assert_eq!(r.errors[0].field, "motor_current_a");
    assert_eq!(decoded.wells_lacking_zone().len(), 1);

    // A declared zone wins: nothing is decoded again.
    let declared = DecodeOptions {
        zone: Some(UtcOffset::UTC),
        ..opts()
    };
    let mut decoded = decode(PayloadFormat::Csv, csv.as_bytes(), &declared).unwrap();
    let n = apply_well_zones(
        PayloadFormat::Csv,
        csv.as_bytes(),
        &declared,
        &mut decoded,
        &zones,
    )
    .unwrap();
    assert_eq!(n, 0);
    assert_eq!(valid(&decoded.items[0]).ts, at("2026-11-22T06:00:00Z"));
}
