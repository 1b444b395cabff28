//! The question set: `questions.txt` (the rules were written and tuned against it),
//! `heldout.txt` (written before the rules, never tuned on), `heldout2.txt` (never tuned on
//! until its misses were studied as classes of phrasing), `heldout3.txt` (likewise, a round
//! later), `heldout4.txt` (never tuned on) and `heldout5.txt` (never tuned on, written before
//! the round that studied the fourth set's misses),
//! each line a question and its expected interpretation, checked exactly. `cargo test -p espwatch-core ask -- --nocapture`
//! prints both accuracies and every miss.

use super::*;

const TUNED: &str = include_str!("questions.txt");
const HELD_OUT: &str = include_str!("heldout.txt");
const HELD_OUT_2: &str = include_str!("heldout2.txt");
const HELD_OUT_3: &str = include_str!("heldout3.txt");
const HELD_OUT_4: &str = include_str!("heldout4.txt");
const HELD_OUT_5: &str = include_str!("heldout5.txt");
const HELD_OUT_6: &str = include_str!("heldout6.txt");

/// 2026-11-25T15:30:00Z, a Wednesday.
fn clock() -> Clock {
    Clock {
        now: Timestamp::parse_rfc3339("2026-11-25T15:30:00Z").unwrap(),
        zone: crate::localtime::UtcOffset::UTC,
    }
}

pub(crate) fn directory() -> Directory {
    let mut wells = Vec::new();
    for n in 1..=12 {
        let id = format!("ESP-{n:03}");
        let name = match n {
            3 => Some("Kestrel 3".to_owned()),
            7 => Some("Falcon 7".to_owned()),
            _ => None,
        };
        let field = Some(if n <= 6 { "North Pad" } else { "South Pad" }.to_owned());
        wells.push(WellEntry {
            id: WellId::parse(&id).unwrap(),
            name,
            field,
        });
    }
    wells.push(WellEntry {
        id: WellId::parse("W-17").unwrap(),
        name: Some("Eagle 17".into()),
        field: Some("Eagle Field".into()),
    });
    wells.push(WellEntry {
        id: WellId::parse("KAL-3").unwrap(),
        name: None,
        field: None,
    });
    Directory::new(wells)
}

fn group(name: &str) -> Vec<WellId> {
    let range = match name {
        "@north" => 1..=6,
        "@south" => 7..=12,
        _ => panic!("unknown group {name}"),
    };
    range
        .map(|n| WellId::parse(&format!("ESP-{n:03}")).unwrap())
        .collect()
}

/// `MM-DDTHH:MM` in 2026, UTC.
fn instant(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(&format!("2026-{text}:00Z")).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Compares one parse with its expectation; `Err` says what differs.
fn check(question: &str, expected: &str) -> Result<(), String> {
    let result = parse(question, &directory(), &clock());
    let mut parts = expected.split_whitespace();
    let intent = parts.next().ok_or("empty expectation")?;
    if intent == "refuse" {
        // A command: refused, saying that ask answers questions and controls nothing.
        return match result {
            Err(e) if e.suggestions.len() >= 2 && e.message.contains("does not control") => Ok(()),
            Err(e) => Err(format!("not refused as a command: {e:?}")),
            Ok(it) => Err(format!("expected a refusal, got {}", it.to_json())),
        };
    }
    if intent == "error" {
        return match result {
            Err(e) if e.suggestions.len() >= 2 => Ok(()),
            Err(e) => Err(format!("error without 2 suggestions: {e:?}")),
            Ok(it) => Err(format!("expected an error, got {}", it.to_json())),
        };
    }
    let it = result.map_err(|e| format!("not understood: {} ({:?})", e.message, e.recognised))?;
    let mut want =
        Interpretation::new(Intent::from_name(intent).ok_or(format!("intent {intent}"))?);
    let mut filter: Option<(Cmp, Vec<Field>, f64)> = None;
    for kv in parts {
        let (k, v) = kv.split_once('=').ok_or(format!("bad key {kv}"))?;
        match k {
            "w" => {
                want.wells = v
                    .split(',')
                    .flat_map(|w| {
                        if w.starts_with('@') {
                            group(w)
                        } else {
                            vec![WellId::parse(w).expect(w)]
                        }
                    })
                    .collect()
            }
            "ch" => {
                want.channels = v
                    .split(',')
                    .map(|c| Field::from_name(c).expect(c))
                    .collect()
            }
            "c" => want.condition = Some(Condition::from_name(v).expect(v)),
            "agg" => want.agg = Some(Agg::parse(v).expect(v)),
            "t" => {
                let (a, b) = v.split_once("..").expect(v);
                want.time = Some(TimeSpec::Range {
                    from: instant(a),
                    to: instant(b),
                    label: String::new(),
                });
            }
            "f" => {
                let mut f = v.split(':');
                let cmp = Cmp::from_name(f.next().unwrap()).expect(v);
                let channels = f
                    .next()
                    .unwrap()
                    .split('+')
                    .map(|c| Field::from_name(c).expect(c))
                    .collect();
                let value: f64 = f.next().unwrap().parse().expect(v);
                filter = Some((cmp, channels, value));
            }
            "n" => want.limit = Some(v.parse().expect(v)),
            "order" => want.order = Some(if v == "asc" { Order::Asc } else { Order::Desc }),
            "st" => {
                want.alarm_state = Some(match v {
                    "open" => AlarmStateQuery::Open,
                    "raised" => AlarmStateQuery::Raised,
                    "acknowledged" => AlarmStateQuery::Acknowledged,
                    "cleared" => AlarmStateQuery::Cleared,
                    _ => panic!("{v}"),
                })
            }
            "rs" => {
                want.run_state = Some(if v == "running" {
                    RunState::Running
                } else {
                    RunState::Stopped
                })
            }
            "stale" => want.stale_for = Some(crate::duration::parse_duration_micros(v).expect(v)),
            "units" => want.units = v.split(',').map(|u| Unit::from_name(u).expect(u)).collect(),
            "time" if v == "before_trip" => want.time = Some(TimeSpec::BeforeTrip),
            "step" => want.step = Some(crate::duration::parse_duration_micros(v).expect(v)),
            "without" => want.without = v == "1",
            _ => return Err(format!("unknown key {k}")),
        }
    }
    if want.channels.is_empty()
        && let Some((_, channels, _)) = &filter
    {
        want.channels = channels.clone();
    }
    let mut diffs = Vec::new();
    if it.intent != want.intent {
        diffs.push(format!(
            "intent {} ≠ {}",
            it.intent.name(),
            want.intent.name()
        ));
    }
    if it.wells != want.wells {
        diffs.push(format!("wells {:?} ≠ {:?}", it.wells, want.wells));
    }
    if it.channels != want.channels {
        diffs.push(format!("channels {:?} ≠ {:?}", it.channels, want.channels));
    }
    if it.condition != want.condition {
        diffs.push(format!(
            "condition {:?} ≠ {:?}",
            it.condition, want.condition
        ));
    }
    if it.agg != want.agg {
        diffs.push(format!("agg {:?} ≠ {:?}", it.agg, want.agg));
    }
    let same_time = match (&it.time, &want.time) {
        (None, None) => true,
        (
            Some(TimeSpec::Range { from, to, .. }),
            Some(TimeSpec::Range {
                from: f2, to: t2, ..
            }),
        ) => from == f2 && to == t2,
        (a, b) => a == b,
    };
    if !same_time {
        diffs.push(format!("time {:?} ≠ {:?}", it.time, want.time));
    }
    match (&it.filter, &filter) {
        (None, None) => {}
        (Some(f), Some((cmp, channels, value))) => {
            if f.cmp != *cmp || f.channels != *channels || (f.value - value).abs() > 0.01 {
                diffs.push(format!("filter {f:?} ≠ {filter:?}"));
            }
        }
        (a, b) => diffs.push(format!("filter {a:?} ≠ {b:?}")),
    }
    if it.limit != want.limit {
        diffs.push(format!("limit {:?} ≠ {:?}", it.limit, want.limit));
    }
    if it.order != want.order {
        diffs.push(format!("order {:?} ≠ {:?}", it.order, want.order));
    }
    if it.alarm_state != want.alarm_state {
        diffs.push(format!(
            "alarm_state {:?} ≠ {:?}",
            it.alarm_state, want.alarm_state
        ));
    }
    if it.run_state != want.run_state {
        diffs.push(format!(
            "run_state {:?} ≠ {:?}",
            it.run_state, want.run_state
        ));
    }
    if it.stale_for != want.stale_for {
        diffs.push(format!(
            "stale_for {:?} ≠ {:?}",
            it.stale_for, want.stale_for
        ));
    }
    if it.step != want.step {
        diffs.push(format!("step {:?} ≠ {:?}", it.step, want.step));
    }
    if it.without != want.without {
        diffs.push(format!("without {} ≠ {}", it.without, want.without));
    }
    if !want.units.is_empty() && it.units != want.units {
        diffs.push(format!("units {:?} ≠ {:?}", it.units, want.units));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

/// (passed, total, misses) of a question file.
fn run(set: &str) -> (usize, usize, Vec<String>) {
    let mut passed = 0;
    let mut total = 0;
    let mut misses = Vec::new();
    for line in set.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (q, e) = line
            .split_once("=>")
            .unwrap_or_else(|| panic!("no => in {line}"));
        total += 1;
        match check(q.trim(), e.trim()) {
            Ok(()) => passed += 1,
            Err(why) => misses.push(format!("{:?}: {why}", q.trim())),
        }
    }
    (passed, total, misses)
}

#[test]
fn tuned_question_set_is_understood() {
    let (passed, total, misses) = run(TUNED);
    println!("tuned questions: {passed}/{total} exact");
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(total >= 200, "the tuned set has {total} questions");
    assert!(
        misses.is_empty(),
        "{} misses:\n{}",
        misses.len(),
        misses.join("\n")
    );
}

#[test]
fn held_out_question_set_accuracy() {
    let (passed, total, misses) = run(HELD_OUT);
    let pct = 100.0 * passed as f64 / total as f64;
    println!("held-out questions (never tuned on): {passed}/{total} exact = {pct:.1} %");
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(total >= 100);
    // The floor measured when the set was first run; a change that lowers it is a regression.
    assert!(
        pct >= HELD_OUT_FLOOR,
        "held-out accuracy fell to {pct:.1} %"
    );
}

#[test]
fn second_held_out_set_accuracy() {
    let (passed, total, misses) = run(HELD_OUT_2);
    let pct = 100.0 * passed as f64 / total as f64;
    println!("second held-out set (never tuned on): {passed}/{total} exact = {pct:.1} %");
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(
        pct >= HELD_OUT_2_FLOOR,
        "second held-out accuracy fell to {pct:.1} %"
    );
}

/// 84.6 % when first run; 100 % after the round that studied its misses (issue 24: the
/// classes of phrasing were fixed, never its questions), so it is no longer a never-tuned
/// figure; the third set is.
const HELD_OUT_2_FLOOR: f64 = 95.0;

/// The third set (issue 24): written from the field's vocabulary before the second set's
/// misses were studied, never tuned on; its accuracy is reported, its floor only catches a
/// regression.
#[test]
fn third_held_out_set_accuracy() {
    let (passed, total, misses) = run(HELD_OUT_3);
    let pct = 100.0 * passed as f64 / total as f64;
    println!("third held-out set (never tuned on): {passed}/{total} exact = {pct:.1} %");
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(total >= 60, "the third set has {total} questions");
    assert!(
        pct >= HELD_OUT_3_FLOOR,
        "third held-out accuracy fell to {pct:.1} %"
    );
}

/// 91.0 % when first run (before this round's rules), 93.3 % after them; 100 % after the
/// round that studied its six misses as classes of phrasing (so it is no longer a never-tuned
/// figure; the fourth set is).
const HELD_OUT_3_FLOOR: f64 = 99.0;

/// The fourth set (issue 24): written before this round's rules and before its first run,
/// never tuned on (the third set's misses were studied, so it no longer is); its accuracy is
/// reported, its floor only catches a regression.
#[test]
fn fourth_held_out_set_accuracy() {
    let (passed, total, misses) = run(HELD_OUT_4);
    let pct = 100.0 * passed as f64 / total as f64;
    println!("fourth held-out set (never tuned on): {passed}/{total} exact = {pct:.1} %");
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(total >= 60, "the fourth set has {total} questions");
    assert!(
        pct >= HELD_OUT_4_FLOOR,
        "fourth held-out accuracy fell to {pct:.1} %"
    );
}

/// 94.4 % (85/90) when first run, on the parser before the round that studied the third
/// set's misses and after it alike; 100 % after the round that studied its five misses as
/// classes of phrasing (issue 24: "how hot/warm", negated states, "how is X running", commands
/// refused), so it is no longer a never-tuned figure; the fifth set is.
const HELD_OUT_4_FLOOR: f64 = 99.0;

/// The fifth set (issue 24): written and committed before the round that studied the fourth
/// set's misses and before its first run, never tuned on (its misses are reported, not fixed);
/// its floor only catches a regression.
#[test]
fn fifth_held_out_set_accuracy() {
    let (passed, total, misses) = run(HELD_OUT_5);
    let pct = 100.0 * passed as f64 / total as f64;
    println!("fifth held-out set (never tuned on): {passed}/{total} exact = {pct:.1} %");
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(total >= 80, "the fifth set has {total} questions");
    assert!(
        pct >= HELD_OUT_5_FLOOR,
        "fifth held-out accuracy fell to {pct:.1} %"
    );
}

/// The sixth set (issue 24, ask3): paraphrases of the classes `tools/ask-heldout` found,
/// written by the hand that fixed them before the set's first run and never tuned on after it
/// (its misses are reported, not fixed); its floor only catches a regression.
#[test]
fn sixth_held_out_set_accuracy() {
    let (passed, total, misses) = run(HELD_OUT_6);
    let pct = 100.0 * passed as f64 / total as f64;
    println!(
        "sixth held-out set (paraphrases, never tuned on): {passed}/{total} exact = {pct:.1} %"
    );
    for m in &misses {
        println!("  miss {m}");
    }
    assert!(total >= 30, "the sixth set has {total} questions");
    assert!(
        pct >= HELD_OUT_6_FLOOR,
        "sixth held-out accuracy fell to {pct:.1} %"
    );
}

/// 94.4 % (34/36) when first run: "I'd like" (the contraction "id" is no known word) and
/// "don't have any open alarms" ("any" between the negation and the alarm) refused.
const HELD_OUT_6_FLOOR: f64 = 94.0;

/// 90.3 % (93/103) when first run, before the round that studied the fourth set's misses;
/// 98.1 % (101/103) after it (see README, issue 24). Its writer also wrote that round's rules,
/// so the second figure is an optimistic one.
const HELD_OUT_5_FLOOR: f64 = 98.0;

/// Held-out accuracy at the first run of the finished parser (see the notes of issue 24).
const HELD_OUT_FLOOR: f64 = 95.0;

#[test]
fn not_understood_carries_what_was_recognised_and_rephrasings() {
    let e = parse("wells with pressure above 100", &directory(), &clock()).unwrap_err();
    assert!(e.message.contains("which pressure"), "{}", e.message);
    assert!(
        (2..=3).contains(&e.suggestions.len()),
        "{:?}",
        e.suggestions
    );
    for s in &e.suggestions {
        assert!(
            parse(s, &directory(), &clock()).is_ok(),
            "suggestion {s:?} is not understood"
        );
    }
    let e = parse("what's the weather in Houston", &directory(), &clock()).unwrap_err();
    assert!(e.unknown.contains(&"weather".to_owned()), "{:?}", e.unknown);
    for s in &e.suggestions {
        assert!(
            parse(s, &directory(), &clock()).is_ok(),
            "suggestion {s:?} is not understood"
        );
    }
    let e = parse("motor current of ESP-099 yesterday", &directory(), &clock()).unwrap_err();
    assert!(e.message.contains("ESP-099"), "{}", e.message);
    assert_eq!(e.recognised["channels"], json!(["motor_current_a"]));
    assert_eq!(e.recognised["time"], json!("yesterday"));
}

#[test]
fn every_suggestion_of_every_refusal_is_understood() {
    for line in TUNED.lines().chain(HELD_OUT.lines()) {
        let Some((q, _)) = line.split_once("=>") else {
            continue;
        };
        if line.starts_with('#') {
            continue;
        }
        if let Err(e) = parse(q.trim(), &directory(), &clock()) {
            assert!(e.suggestions.len() >= 2, "{q}: {:?}", e.suggestions);
            for s in &e.suggestions {
                assert!(
                    parse(s, &directory(), &clock()).is_ok(),
                    "{q}: suggestion {s:?} is not understood"
                );
            }
        }
    }
}

#[test]
fn interpretation_json_uses_canonical_names() {
    let it = parse(
        "wells with motor temp over 250 F yesterday",
        &directory(),
        &clock(),
    )
    .unwrap();
    let j = it.to_json();
    assert_eq!(j["intent"], "filter");
    assert_eq!(j["filter"]["op"], "gt");
    assert_eq!(j["filter"]["unit"], "degc");
    assert_eq!(j["filter"]["written"], "250 °F");
    assert_eq!(j["from"], "2026-11-24T00:00:00Z");
    assert_eq!(j["to"], "2026-11-25T00:00:00Z");
    assert_eq!(j["units"], json!(["degf"]));
    assert_eq!(it.display_unit(Field::MotorTempC), Unit::DegF);
}

#[test]
fn a_display_zone_moves_calendar_words() {
    let mut c = clock();
    c.zone = crate::localtime::UtcOffset::parse("+03:00").unwrap();
    let it = parse("average PIP of ESP-001 yesterday", &directory(), &c).unwrap();
    let (from, to) = it.range().unwrap();
    assert_eq!(from.to_rfc3339(), "2026-11-23T21:00:00Z");
    assert_eq!(to.to_rfc3339(), "2026-11-24T21:00:00Z");
}

#[test]
fn a_well_is_found_among_a_thousand() {
    let wells = (0..1000).map(|n| WellEntry {
        id: WellId::parse(&format!("WELL-{n:04}")).unwrap(),
        name: Some(format!("Site {n}")),
        field: Some(format!("Pad {}", n / 50)),
    });
    let dir = Directory::new(wells);
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let it = parse(
            "average motor current of WELL-0420 over the last 6 hours",
            &dir,
            &clock(),
        )
        .unwrap();
        assert_eq!(it.wells, [WellId::parse("WELL-0420").unwrap()]);
    }
    // Speed is the benchmark's to measure (`espwatch-bench ask`): a wall-clock bound here
    // failed on a loaded 2-core machine (a debug build among four sessions' compilers).
    let per = started.elapsed() / 20;
    println!("parse with 1000 wells: {per:?} per question");
}

/// A short word next to a phrase is not a typo of it: "by vibration" was read as the
/// Y axis only ("y vibration" with one edit), a wrong answer for "top 5 wells by vibration".
#[test]
fn a_short_word_is_not_a_typo_of_a_phrase_word() {
    for q in [
        "top 5 wells by vibration",
        "5 wells with the most vibration",
    ] {
        let it = parse(q, &directory(), &clock()).unwrap();
        assert_eq!(
            it.channels,
            [Field::VibrationXG, Field::VibrationYG],
            "{q}: {}",
            it.to_json()
        );
    }
    // A real typo inside a long phrase still reads.
    let it = parse("which wells have gas lok", &directory(), &clock()).unwrap();
    assert_eq!(it.condition, Some(Condition::GasLock));
}

/// Two wells named with a trend word ask for both trends, not for a comparison of numbers
/// (which has no series): "trend of motor current of ESP-001 and ESP-002".
#[test]
fn a_trend_of_two_wells_is_a_trend() {
    for q in [
        "trend of motor current of ESP-001 and ESP-002 over the last 6 hours",
        "plot the PIP of ESP-003 and ESP-004 yesterday",
    ] {
        let it = parse(q, &directory(), &clock()).unwrap();
        assert_eq!(it.intent, Intent::Trend, "{q}: {}", it.to_json());
        assert_eq!(it.wells.len(), 2, "{q}");
    }
    // Without a trend word, two wells on a channel are still compared.
    let it = parse("ESP-003 vs ESP-004 current today", &directory(), &clock()).unwrap();
    assert_eq!(it.intent, Intent::Compare);
}

#[test]
fn a_well_outside_the_directory_is_not_guessed() {
    let dir = Directory::new(["ESP-001", "ESP-002"].map(|id| WellEntry {
        id: WellId::parse(id).unwrap(),
        name: None,
        field: None,
    }));
    let e = parse("motor current of ESP-004", &dir, &clock()).unwrap_err();
    assert!(e.message.contains("ESP-004"), "{}", e.message);
    let e = parse("south pad motor current", &dir, &clock()).unwrap_err();
    assert!(e.message.contains("south pad"), "{}", e.message);
}

/// A verb of production names the flow only in a question about wells: "how much is ESP-004
/// making" is its flow; "how much money did we make" is nothing this parser knows.
#[test]
fn a_production_verb_alone_is_not_a_channel() {
    let it = parse("how much is ESP-004 making", &directory(), &clock()).unwrap();
    assert_eq!(it.channels, [Field::FlowRateBpd]);
    for q in ["how much money did we make", "how much did we make today"] {
        assert!(
            parse(q, &directory(), &clock()).is_err(),
            "{q}: understood as something"
        );
    }
}

/// Well ids are `WellId`s inside (issue 16) and their strings in JSON, as everywhere in the
/// API: the interpretation's shape is unchanged.
#[test]
fn wells_are_typed_ids_and_strings_in_json() {
    let it = parse("ESP-003 vs Falcon 7 current today", &directory(), &clock()).unwrap();
    assert_eq!(
        it.wells,
        [
            WellId::parse("ESP-003").unwrap(),
            WellId::parse("ESP-007").unwrap()
        ]
    );
    assert_eq!(it.to_json()["wells"], json!(["ESP-003", "ESP-007"]));
    let e = parse("pressure of ESP-003", &directory(), &clock()).unwrap_err();
    assert_eq!(e.recognised["wells"], json!(["ESP-003"]));
    assert!(
        e.suggestions.iter().any(|s| s.contains("ESP-003")),
        "{:?}",
        e.suggestions
    );
}

/// A command is refused, never answered: "shut down ESP-003" was read as a diagnosis of why
/// ESP-003 shut down. The refusal says what `ask` is for, names the verb, keeps the wells it
/// recognised and offers questions about them that are understood.
#[test]
fn a_command_is_refused_with_questions_instead() {
    for (q, verb) in [
        ("shut down ESP-003", "shut down"),
        ("can you please stop Falcon 7", "stop"),
        ("set the frequency of ESP-004 to 52 Hz", "set"),
        ("ack the alarms on ESP-009", "ack"),
    ] {
        let e = parse(q, &directory(), &clock()).unwrap_err();
        assert_eq!(e.command.as_deref(), Some(verb), "{q}");
        assert!(e.message.contains("does not control"), "{q}: {}", e.message);
        assert!(e.recognised["wells"].is_array(), "{q}: {}", e.recognised);
        assert!(e.suggestions.len() >= 2, "{q}");
        for s in &e.suggestions {
            assert!(parse(s, &directory(), &clock()).is_ok(), "{q}: {s:?}");
        }
    }
    // The same verbs as nouns, and questions about stopped wells, are questions.
    for q in [
        "why did ESP-003 shut down",
        "change in PIP on ESP-003 today",
        "shut in wells",
        "speed of ESP-003",
        "is ESP-003 set to 50 Hz",
    ] {
        match parse(q, &directory(), &clock()) {
            Ok(_) => {}
            Err(e) => assert!(e.command.is_none(), "{q}: refused as a command"),
        }
    }
}

/// A negation before a state word asks for the opposite state, in every form the field writes
/// it: "haven't been acknowledged", "aren't running", "not cleared", "uncleared".
#[test]
fn a_negated_state_is_the_opposite_state() {
    let alarm = |q: &str| parse(q, &directory(), &clock()).unwrap().alarm_state;
    assert_eq!(
        alarm("alarms that were never cleared"),
        Some(AlarmStateQuery::Open)
    );
    assert_eq!(
        alarm("alarms that haven't been acked"),
        Some(AlarmStateQuery::Raised)
    );
    assert_eq!(
        alarm("alarms no one has acknowledged"),
        Some(AlarmStateQuery::Raised)
    );
    assert_eq!(
        alarm("acknowledged alarms"),
        Some(AlarmStateQuery::Acknowledged)
    );
    let run = |q: &str| parse(q, &directory(), &clock()).unwrap().run_state;
    assert_eq!(
        run("which wells weren't running yesterday"),
        Some(RunState::Stopped)
    );
    assert_eq!(run("which wells are running"), Some(RunState::Running));
}

/// A directory whose fields are written with a dash, as the demo fleet's are ("Field-A").
fn dashed_fields() -> Directory {
    Directory::new((1..=6).map(|n| WellEntry {
        id: WellId::parse(&format!("DEMO-{n:03}")).unwrap(),
        name: None,
        field: Some(if n <= 3 { "Field-A" } else { "Field-B" }.into()),
    }))
}

/// Every pressure, flow and temperature unit a threshold can carry is converted to the
/// channel's stored unit (and said in the interpretation): "5 MPa" is 725 psi, never 5 psi.
#[test]
fn thresholds_in_every_unit_are_converted_to_the_stored_unit() {
    for (q, channel, value, unit) in [
        (
            "wells with PIP below 5 MPa",
            "intake_pressure_psi",
            725.19,
            "mpa",
        ),
        (
            "wells with PIP below 5MPa",
            "intake_pressure_psi",
            725.19,
            "mpa",
        ),
        (
            "which wells have PIP under 3500 kPa",
            "intake_pressure_psi",
            507.63,
            "kpa",
        ),
        (
            "wells with PIP < 40 bar",
            "intake_pressure_psi",
            580.15,
            "bar",
        ),
        (
            "wells with intake pressure below 500 psi",
            "intake_pressure_psi",
            500.0,
            "psi",
        ),
        (
            "discharge pressure above 2.5 megapascals",
            "discharge_pressure_psi",
            362.59,
            "mpa",
        ),
        (
            "wells producing under 150 m3/d",
            "flow_rate_bpd",
            943.47,
            "m3d",
        ),
        (
            "wells producing under 150 m³/d",
            "flow_rate_bpd",
            943.47,
            "m3d",
        ),
        ("wells under 500 bbl/d", "flow_rate_bpd", 500.0, "bpd"),
        (
            "wells making less than 1000 bpd",
            "flow_rate_bpd",
            1000.0,
            "bpd",
        ),
        (
            "wells with motor temperature above 250°F",
            "motor_temp_c",
            121.11,
            "degf",
        ),
        (
            "wells with motor temp above 250 degF",
            "motor_temp_c",
            121.11,
            "degf",
        ),
        (
            "wells with motor temp over 120 °C",
            "motor_temp_c",
            120.0,
            "degc",
        ),
        (
            "wells with motor temp over 120 degC",
            "motor_temp_c",
            120.0,
            "degc",
        ),
    ] {
        let it = parse(q, &directory(), &clock()).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        let j = it.to_json();
        let f = &j["filter"];
        assert_eq!(f["channels"][0], channel, "{q}: {j}");
        let got = f["value"].as_f64().unwrap();
        assert!((got - value).abs() < 0.01, "{q}: {got} ≠ {value}");
        assert_eq!(
            f["unit"],
            Unit::canonical_of(it.filter.as_ref().unwrap().channels[0]).name()
        );
        assert_eq!(it.filter.as_ref().unwrap().unit.name(), unit, "{q}");
    }
    // Asked to answer in MPa.
    let it = parse(
        "discharge pressure of ESP-004 in MPa",
        &directory(),
        &clock(),
    )
    .unwrap();
    assert_eq!(it.units, vec![Unit::MPa]);
    // A pressure unit on a temperature is refused, not converted.
    assert!(parse("wells with motor temp above 5 MPa", &directory(), &clock()).is_err());
}

/// A word that changes what is asked and that the parser cannot place is a refusal with what
/// was recognised and rephrasings — never dropped with the rest answered by defaults.
#[test]
fn an_unplaced_word_that_changes_the_question_is_refused() {
    for q in [
        "what is the motor current of ESP-003 tomorrow",
        "average PIP of ESP-003 next week",
        "how much oil will North Pad make next year",
        "amps for ESP-003 on 2026-02-30",
        "amps for ESP-003 at 25:00",
        "wells with intake pressure below",
        "wells with motor current more than",
        "wells with amps above 40 and below 50",
        "wells not above 500 psi",
        "motor current of ESP-003 except yesterday",
        "PIP on all wells but ESP-003",
        "motor current of ESP-003 at 55",
        "who is on call tonight",
        "average amps of ESP-003 last quarter",
    ] {
        match parse(q, &directory(), &clock()) {
            Ok(it) => panic!("{q}: answered as {}", it.to_json()),
            Err(e) => {
                assert!(e.suggestions.len() >= 2, "{q}: {e:?}");
                for s in &e.suggestions {
                    assert!(parse(s, &directory(), &clock()).is_ok(), "{q}: {s:?}");
                }
            }
        }
    }
    // Destructive verbs are commands.
    for q in [
        "delete all alarms",
        "please remove ESP-003",
        "purge the alarms on ESP-004",
    ] {
        let e = parse(q, &directory(), &clock()).unwrap_err();
        assert!(e.command.is_some(), "{q}: {e:?}");
    }
    // What the refusal says: the word it could not place.
    let e = parse("which wells have no idea", &directory(), &clock()).unwrap_err();
    assert!(e.message.contains("no"), "{}", e.message);
    let e = parse("amps for ESP-003 on 2026-02-30", &directory(), &clock()).unwrap_err();
    assert!(e.message.contains("2026-02-30"), "{}", e.message);
    assert_eq!(e.recognised["wells"], json!(["ESP-003"]));
    // Harmless filler stays harmless.
    for q in [
        "please show me the motor current of ESP-003",
        "could you tell me the average amps of ESP-003 yesterday please",
        "I would like to see which wells are stopped",
        "can you list the open alarms on the north pad",
    ] {
        assert!(parse(q, &directory(), &clock()).is_ok(), "{q}");
    }
}

/// "no open alarms", "never had a gas lock", "not gas locked": the wells without them.
#[test]
fn a_negated_alarm_or_condition_asks_for_the_wells_without_it() {
    let it = parse("which wells have no open alarms", &directory(), &clock()).unwrap();
    assert_eq!(it.intent, Intent::Alarms);
    assert!(it.without);
    assert_eq!(it.alarm_state, Some(AlarmStateQuery::Open));
    assert_eq!(it.to_json()["without"], true);
    let it = parse(
        "wells without alarms on the south pad",
        &directory(),
        &clock(),
    )
    .unwrap();
    assert!(
        it.without && it.wells == group("@south"),
        "{}",
        it.to_json()
    );
    assert_eq!(it.alarm_state, Some(AlarmStateQuery::Open));
    let it = parse(
        "which wells never had a gas lock last week",
        &directory(),
        &clock(),
    )
    .unwrap();
    assert_eq!((it.intent, it.without), (Intent::Condition, true));
    assert_eq!(it.condition, Some(Condition::GasLock));
    assert_eq!(it.range().unwrap().0, instant("11-16T00:00"));
    let it = parse("which wells are not gas locked", &directory(), &clock()).unwrap();
    assert_eq!((it.intent, it.without), (Intent::Condition, true));
    // The states keep their opposites; "open alarms" stays the open alarms.
    let it = parse("which wells have an open alarm", &directory(), &clock()).unwrap();
    assert!(!it.without);
    let it = parse(
        "alarms that haven't been acknowledged",
        &directory(),
        &clock(),
    )
    .unwrap();
    assert_eq!(
        (it.alarm_state, it.without),
        (Some(AlarmStateQuery::Raised), false)
    );
}

/// A field written with a space or without its dash ("field a" for "Field-A").
#[test]
fn a_field_is_found_whatever_its_separators() {
    let dir = dashed_fields();
    for q in [
        "avg water cut on field a yesterday",
        "PIP on Field-A wells now",
        "field a wells with PIP below 800 psi",
        "motor current fielda",
        "voltage dips on FIELD A",
    ] {
        let it = parse(q, &dir, &clock()).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        assert_eq!(it.groups, vec!["Field-A".to_owned()], "{q}");
        assert_eq!(it.wells.len(), 3, "{q}");
    }
    let it = parse("pump intake pressure field b", &dir, &clock()).unwrap();
    assert_eq!(it.groups, vec!["Field-B".to_owned()]);
    // An unknown field is refused, never the whole fleet.
    assert!(parse("motor current of field z wells", &dir, &clock()).is_err());
}

/// Clock times inside dates, the weekend, "yday".
#[test]
fn clock_times_inside_dates_and_the_weekend() {
    let range = |q: &str| {
        let it = parse(q, &directory(), &clock()).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        let (f, t) = it
            .range()
            .unwrap_or_else(|| panic!("{q}: no range {}", it.to_json()));
        (f, t)
    };
    assert_eq!(
        range("avg PIP ESP-002 between 2026-11-24 06:00 and 2026-11-24 12:00"),
        (instant("11-24T06:00"), instant("11-24T12:00"))
    );
    assert_eq!(
        range("ESP-007 amps from 2026-11-24 22:00 to 2026-11-25 02:30"),
        (instant("11-24T22:00"), instant("11-25T02:30"))
    );
    assert_eq!(
        range("average amps of ESP-003 yesterday from 06:00 to 12:00"),
        (instant("11-24T06:00"), instant("11-24T12:00"))
    );
    assert_eq!(
        range("average amps of ESP-003 between 6am and noon yesterday"),
        (instant("11-24T06:00"), instant("11-24T12:00"))
    );
    assert_eq!(
        range("max PIP of ESP-003 since yesterday 14:00"),
        (instant("11-24T14:00"), instant("11-25T15:30"))
    );
    assert_eq!(
        range("max PIP of ESP-003 since 06:00"),
        (instant("11-25T06:00"), instant("11-25T15:30"))
    );
    // A moment: the hour from it, said so.
    let it = parse("amps of ESP-003 yesterday at 14:00", &directory(), &clock()).unwrap();
    assert_eq!(
        it.range().unwrap(),
        (instant("11-24T14:00"), instant("11-24T15:00"))
    );
    assert!(it.to_json()["time"].as_str().unwrap().contains("14:00"));
    assert_eq!(
        range("amps of ESP-003 at 14:00 yesterday"),
        (instant("11-24T14:00"), instant("11-24T15:00"))
    );
    // The weekend before this Wednesday: Saturday and Sunday.
    for q in [
        "average Hz of ESP-005 over the weekend",
        "average Hz of ESP-005 last weekend",
        "average Hz of ESP-005 on the weekend",
    ] {
        assert_eq!(
            range(q),
            (instant("11-21T00:00"), instant("11-23T00:00")),
            "{q}"
        );
    }
    // "this weekend" on a Wednesday is the coming one: the future, refused.
    assert!(parse("average Hz of ESP-005 this weekend", &directory(), &clock()).is_err());
    for q in ["Motor current ESP-003 yday", "max amps ESP-003 yesterdy"] {
        assert_eq!(
            range(q),
            (instant("11-24T00:00"), instant("11-25T00:00")),
            "{q}"
        );
    }
}

/// A bucket asked for makes a trend with that step (and the aggregate asked for).
#[test]
fn a_step_asked_for_makes_a_trend_with_it() {
    const MIN: i64 = 60_000_000;
    for (q, step, agg) in [
        (
            "hourly average amps ESP-003 yesterday",
            60 * MIN,
            Some(Agg::Avg),
        ),
        (
            "motor temp ESP-003 every 15 min over the last 6 hours",
            15 * MIN,
            None,
        ),
        (
            "daily max flow for ESP-001 this week",
            24 * 60 * MIN,
            Some(Agg::Max),
        ),
        ("PIP of ESP-002 per hour yesterday", 60 * MIN, None),
        ("ESP-002 PIP in 30 minute buckets today", 30 * MIN, None),
        (
            "15-minute average current of ESP-004 today",
            15 * MIN,
            Some(Agg::Avg),
        ),
    ] {
        let it = parse(q, &directory(), &clock()).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        assert_eq!(it.intent, Intent::Trend, "{q}");
        assert_eq!(it.step, Some(step), "{q}");
        assert_eq!(it.agg, agg, "{q}");
    }
    // Too many buckets, or a step on a question that has no series: refused.
    assert!(
        parse(
            "amps of ESP-003 every minute over the last 30 days",
            &directory(),
            &clock()
        )
        .is_err()
    );
    assert!(parse("hourly which wells are stopped", &directory(), &clock()).is_err());
    // "500 bbl per day" stays a unit.
    let it = parse("wells under 500 bbl per day", &directory(), &clock()).unwrap();
    assert_eq!((it.intent, it.step), (Intent::Filter, None));
}

/// A common word next to a domain word is itself, not one edit from a phrase: "had sensor
/// fault" is a sensor fault, not "bad sensor" with "fault" left over.
#[test]
fn a_common_word_is_not_a_typo_inside_a_phrase() {
    let it = parse("which wells had sensor fault", &directory(), &clock()).unwrap();
    assert_eq!(it.condition, Some(Condition::SensorFault));
    let it = parse("which wells had gas lok", &directory(), &clock()).unwrap();
    assert_eq!(it.condition, Some(Condition::GasLock));
}
