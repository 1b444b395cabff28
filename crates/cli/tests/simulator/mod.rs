//! `espwatch simulate` (files and streaming) and `espwatch demo`, through the real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// GET a JSON document with a bearer token (these tests drive child processes, so they run
/// without a runtime).
fn http_get(url: &str, token: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match bearer_client(token).get(url).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    })
}

/// POST JSON without credentials.
fn http_post(url: &str, body: &Value) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match reqwest::Client::new().post(url).json(body).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn data_lines(path: &Path) -> usize {
    read(path).lines().count() - 1
}

#[test]
fn simulate_writes_reproducible_files_that_ingest_cleanly() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let args = |out: &str| {
        vec![
            "simulate",
            "--wells",
            "3",
            "--duration",
            "30h",
            "--interval",
            "60s",
            "--seed",
            "3",
            "--min-healthy",
            "2h",
            "--conditions",
            "gas_lock,broken_shaft",
            "--out",
            out,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    for dir in [&a, &b] {
        let args = args(dir.to_str().unwrap());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stdout, stderr) = run_cli(&args, &[], work.path());
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("simulated 3 wells"), "{stdout}");
    }
    let labels = read(&a.join("labels.csv"));
    let mut lines = labels.lines();
    assert_eq!(lines.next(), Some("well_id,file,start,end,condition"));
    let conditions: Vec<&str> = lines.map(|l| l.rsplit(',').next().unwrap()).collect();
    assert!(
        conditions.contains(&"gas_lock") && conditions.contains(&"broken_shaft"),
        "{labels}"
    );
    for id in ["ESP-001", "ESP-002", "ESP-003"] {
        let csv = format!("{id}.csv");
        assert_eq!(
            read(&a.join(&csv)),
            read(&b.join(&csv)),
            "same seed, same bytes"
        );
        let meta: Value =
            serde_json::from_str(&read(&a.join("wells").join(format!("{id}.json")))).unwrap();
        assert_eq!(meta["well_id"], id);
        assert!(
            meta["pump"]["stage_curve"]
                .as_array()
                .is_some_and(|c| c.len() > 5)
        );
        // 30 h at 60 s, less the rare reading lost in transmission.
        assert!(data_lines(&a.join(&csv)) > 1790, "{csv}");
    }

    // The files are what the registry import and the bulk loader take, without a rejection.
    let data = work.path().join("store");
    let dir = data.to_str().unwrap();
    let (ok, stdout, stderr) = run_cli(
        &[
            "wells",
            "import",
            a.join("wells").to_str().unwrap(),
            "--data-dir",
            dir,
        ],
        &[],
        work.path(),
    );
    assert!(
        ok && stdout.contains("3 well(s) imported"),
        "{stdout}{stderr}"
    );
    let files: Vec<String> = ["ESP-001", "ESP-002", "ESP-003"]
        .iter()
        .map(|id| a.join(format!("{id}.csv")).display().to_string())
        .collect();
    let mut args = vec!["ingest", "--data-dir", dir];
    args.extend(files.iter().map(String::as_str));
    let (ok, stdout, stderr) = run_cli(&args, &[], work.path());
    assert!(ok, "{stdout}{stderr}");
    let total: usize = ["ESP-001", "ESP-002", "ESP-003"]
        .iter()
        .map(|id| data_lines(&a.join(format!("{id}.csv"))))
        .sum();
    assert!(stdout.contains(&format!("accepted {total}")), "{stdout}");
    assert!(
        !stdout.contains("rejected") || stdout.contains("rejected 0"),
        "{stdout}"
    );
}

#[test]
fn simulate_explains_what_it_cannot_do() {
    let work = tempfile::tempdir().expect("temp dir");
    let out = work.path().join("x");
    let out = out.to_str().unwrap();
    let (ok, _, stderr) = run_cli(
        &[
            "simulate",
            "--wells",
            "12",
            "--duration",
            "20h",
            "--out",
            out,
        ],
        &[],
        work.path(),
    );
    assert!(!ok && stderr.contains("cannot fit"), "{stderr}");
    let (ok, _, stderr) = run_cli(
        &["simulate", "--conditions", "gas-lock", "--out", out],
        &[],
        work.path(),
    );
    assert!(
        !ok && stderr.contains("unknown condition `gas-lock`"),
        "{stderr}"
    );
    let scenario = work.path().join("s.toml");
    std::fs::write(&scenario, "[[wells]]\npump = \"NOPE\"\n").unwrap();
    let (ok, _, stderr) = run_cli(
        &[
            "simulate",
            "--scenario",
            scenario.to_str().unwrap(),
            "--out",
            out,
        ],
        &[],
        work.path(),
    );
    assert!(!ok && stderr.contains("unknown model"), "{stderr}");
}

#[test]
fn simulate_scenario_pins_wells_and_conditions() {
    let work = tempfile::tempdir().expect("temp dir");
    let scenario = work.path().join("s.toml");
    std::fs::write(
        &scenario,
        r#"
seed = 5
duration = "40h"
interval = "30s"
[[wells]]
id = "PAD-A-01"
pump = "EU-538-3500"
[[wells.conditions]]
condition = "closed_valve"
start = "30h"
end = "32h"
"#,
    )
    .unwrap();
    let out = work.path().join("out");
    let (ok, stdout, stderr) = run_cli(
        &[
            "simulate",
            "--scenario",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        read(&out.join("labels.csv")),
        "well_id,file,start,end,condition\nPAD-A-01,PAD-A-01.csv,2026-01-02T06:00:00Z,2026-01-02T08:00:00Z,closed_valve\n"
    );
    let meta: Value = serde_json::from_str(&read(&out.join("wells/PAD-A-01.json"))).unwrap();
    assert_eq!(meta["pump"]["model"], "EU-538-3500");
    assert_eq!(meta["pump"]["base_frequency_hz"], 50.0);
}

#[test]
fn simulate_streams_a_fleet_to_a_running_server() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let server = ChildServer::start(&data);
    let admin = server.api_key.clone().expect("key");
    // A machine key made while the server runs: api_client may register wells and write.
    let key = cli_api_key(&["--data-dir", data.to_str().unwrap()], "api_client");
    let base = format!("http://{}", server.address);
    let (ok, stdout, stderr) = run_cli(
        &[
            "simulate",
            "--api-key",
            &key,
            "--wells",
            "2",
            "--duration",
            "2h",
            "--interval",
            "60s",
            "--conditions",
            "none",
            "--url",
            &base,
            "--speed",
            "100000",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    let client = http_get(&server.url("/api/v1/wells/latest"), &admin);
    let wells = client["wells"].as_array().expect("wells");
    assert_eq!(wells.len(), 2, "{client}");
    for w in wells {
        let id = w["well_id"].as_str().unwrap();
        let meta = http_get(&server.url(&format!("/api/v1/wells/{id}")), &admin);
        assert!(
            meta["pump"]["stages"].as_u64().is_some(),
            "registered with its pump: {meta}"
        );
        let series = http_get(
            &server.url(&format!(
                "/api/v1/wells/{id}/telemetry?fields=motor_current_a&max_points=100000"
            )),
            &admin,
        );
        let points = series["ts"].as_array().map(Vec::len).unwrap_or(0);
        assert!((115..=120).contains(&points), "{id}: {points} points");
    }
}

#[test]
fn demo_serves_and_streams_a_fleet() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("demo");
    let demo = ChildServer::start_with(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--wells",
        "3",
        "--speed",
        "100000",
    ]);
    // The demo prints a sign-in it generated; use it like a newcomer would.
    let deadline = Instant::now() + Duration::from_secs(30);
    let password = loop {
        let printed = demo.stdout.lock().unwrap().join("\n");
        if let Some(rest) = printed.split("user demo, password ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        assert!(Instant::now() < deadline, "no sign-in printed: {printed}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let tokens = http_post(
        &demo.url("/api/v1/auth/login"),
        &serde_json::json!({ "username": "demo", "password": password }),
    );
    let token = tokens["access_token"]
        .as_str()
        .expect("signed in")
        .to_owned();
    assert_eq!(tokens["user"]["role"], "admin", "{tokens}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let latest = http_get(&demo.url("/api/v1/wells/latest"), &token);
        let with_data = latest["wells"]
            .as_array()
            .map(|w| w.iter().filter(|w| !w["ts"].is_null()).count())
            .unwrap_or(0);
        if with_data == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "demo fleet never arrived: {latest}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn eval_scores_bands_confusion_and_false_alarms_by_operation_from_files() {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    std::fs::write(
        dir.join("labels.csv"),
        "well_id,file,start,end,condition\n\
         W1,W1.csv,2026-01-02T00:00:00Z,2026-01-02T06:00:00Z,gas_lock\n\
         W2,W2.csv,2026-01-02T00:00:00Z,2026-01-03T00:00:00Z,pump_wear\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("operations.csv"),
        "well_id,start,end,operation\n\
         W1,2026-01-03T10:00:00Z,2026-01-03T14:00:00Z,well_test\n",
    )
    .unwrap();
    let events = dir.join("events.csv");
    std::fs::write(
        &events,
        "well_id,start,end,condition,confidence\n\
         W1,2026-01-02T00:10:00Z,2026-01-02T05:00:00Z,gas_lock,0.93\n\
         W2,2026-01-02T03:00:00Z,2026-01-02T20:00:00Z,scale_plugging,0.85\n\
         W1,2026-01-03T11:00:00Z,2026-01-03T11:30:00Z,gas_interference,0.62\n",
    )
    .unwrap();
    let labels = dir.join("labels.csv");
    let (ok, stdout, stderr) = run_cli(
        &[
            "eval",
            "--labels",
            labels.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--json",
        ],
        &[],
        dir,
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["high_confidence"]["events"], 2);
    assert_eq!(v["high_confidence"]["correct"], 1);
    assert_eq!(v["confusion"]["pump_wear"]["scale_plugging"], 1);
    assert_eq!(v["confusion"]["(none)"]["gas_interference"], 1);
    assert_eq!(v["false_alarms_by_operation"]["well_test"], 1);
    assert_eq!(v["false_alarms"], 1);
    // The text form prints the same tables.
    let (ok, stdout, _) = run_cli(
        &[
            "eval",
            "--labels",
            labels.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &[],
        dir,
    );
    assert!(ok);
    assert!(stdout.contains("precision by confidence band"), "{stdout}");
    assert!(stdout.contains("well_test"), "{stdout}");
    // A confidence floor scores only what an operator would be shown.
    let (ok, stdout, _) = run_cli(
        &[
            "eval",
            "--labels",
            labels.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--min-confidence",
            "0.9",
            "--json",
        ],
        &[],
        dir,
    );
    assert!(ok);
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["false_alarms"], 0);
    assert_eq!(v["high_confidence"]["events"], 1);
    assert_eq!(v["confusion"]["pump_wear"]["(missed)"], 1);
}

/// The observed span of each well comes from the telemetry files next to the labels, whether
/// the labels are named by an absolute path or, run from that folder, by a bare file name; and
/// `eval | head` ends quietly when the reader goes away.
#[test]
fn eval_reads_observed_spans_with_a_bare_labels_name_and_survives_a_closed_pipe() {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    std::fs::write(
        dir.join("labels.csv"),
        "well_id,file,start,end,condition\n\
         W1,W1.csv,2026-01-02T00:00:00Z,2026-01-02T06:00:00Z,gas_lock\n",
    )
    .unwrap();
    // Ten observed days, of which the label covers a quarter of one (plus the max delay).
    std::fs::write(
        dir.join("W1.csv"),
        "well_id,ts,motor_current_a\n\
         W1,2026-01-01T00:00:00Z,30\n\
         W1,2026-01-11T00:00:00Z,30\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("events.csv"),
        "well_id,start,end,condition,confidence\n\
         W1,2026-01-02T00:10:00Z,2026-01-02T05:00:00Z,gas_lock,0.93\n",
    )
    .unwrap();
    let unlabelled = |labels: &str, events: &str| {
        let (ok, stdout, stderr) = run_cli(
            &["eval", "--labels", labels, "--events", events, "--json"],
            &[],
            dir,
        );
        assert!(ok, "{stderr}");
        let v: Value = serde_json::from_str(&stdout).expect("JSON");
        v["unlabelled_well_days"].as_f64().unwrap()
    };
    let absolute = unlabelled(
        dir.join("labels.csv").to_str().unwrap(),
        dir.join("events.csv").to_str().unwrap(),
    );
    let bare = unlabelled("labels.csv", "events.csv");
    assert!((absolute - (10.0 - 7.0 / 24.0)).abs() < 1e-6, "{absolute}");
    assert_eq!(bare, absolute);

    // A reader that stops after the first line (`| head -1`).
    let mut child = std::process::Command::new(BIN)
        .args(["eval", "--labels", "labels.csv", "--events", "events.csv"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn espwatch");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn eval_families_simulates_diagnoses_and_scores_each_family() {
    let work = tempfile::tempdir().expect("temp dir");
    let (ok, stdout, stderr) = run_cli(
        &[
            "eval",
            "--families",
            "pipctl,blind",
            "--wells",
            "12",
            "--duration",
            "3d",
            "--seed",
            "4",
            "--threads",
            "2",
            "--json",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    let rows = v.as_array().expect("one row per family");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["family"], "pipctl");
    assert_eq!(rows[1]["held_out"], true);
    for r in rows {
        assert_eq!(r["wells"], 12);
        assert!(r["readings"].as_u64().unwrap() > 10_000);
        let recall = r["macro_recall"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&recall));
        // Every label lands in the confusion table: detected, misdiagnosed or missed.
        let labelled: u64 = r["per_condition"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["labels"].as_u64().unwrap())
            .sum();
        assert!(labelled >= 12, "every condition at least once");
        let placed: u64 = r["confusion"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(truth, _)| truth.as_str() != "(none)")
            .flat_map(|(_, row)| row.as_object().unwrap().values())
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert!(placed >= labelled, "{placed} < {labelled}");
        assert!(!r["operations"].as_object().unwrap().is_empty());
    }
    // Several seeds pool into one score per family.
    let (ok, stdout, stderr) = run_cli(
        &[
            "eval",
            "--families",
            "pipctl",
            "--wells",
            "12",
            "--duration",
            "3d",
            "--seed",
            "4,5",
            "--rounds",
            "1",
            "--json",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let pooled: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(pooled[0]["wells"], 24);
    assert!(pooled[0]["readings"].as_u64() > rows[0]["readings"].as_u64());
    let (ok, _, stderr) = run_cli(&["eval", "--families", "classic,bogus"], &[], work.path());
    assert!(!ok && stderr.contains("unknown model family"), "{stderr}");
}

/// Historians export one file per well per day, listed in any order: `diagnose` merges each
/// well's files in time order, gives byte-identical output run after run, and `eval` spans
/// each well over all its files.
#[test]
fn diagnose_reads_a_wells_daily_files_in_time_order_and_repeats_exactly() {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    let (ok, _, stderr) = run_cli(
        &[
            "simulate",
            "--wells",
            "3",
            "--duration",
            "3d",
            "--seed",
            "5",
            "--conditions",
            "gas_interference,tubing_leak",
            "--out",
            "sim",
        ],
        &[],
        dir,
    );
    assert!(ok, "{stderr}");
    let sim = dir.join("sim");
    let days = dir.join("days");
    std::fs::create_dir(&days).unwrap();
    let mut whole = Vec::new();
    for entry in std::fs::read_dir(&sim).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.starts_with("ESP-") {
            continue;
        }
        whole.push(path.to_str().unwrap().to_owned());
        let text = read(&path);
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let mut by_day: std::collections::BTreeMap<String, String> = Default::default();
        for line in lines {
            let day = line.split(',').nth(1).unwrap()[..10].to_owned();
            let file = by_day.entry(day).or_insert_with(|| format!("{header}\n"));
            file.push_str(line);
            file.push('\n');
        }
        for (day, body) in by_day {
            std::fs::write(
                days.join(format!("{}_{day}.csv", &name[..name.len() - 4])),
                body,
            )
            .unwrap();
        }
    }
    std::fs::copy(sim.join("labels.csv"), days.join("labels.csv")).unwrap();
    let mut day_files: Vec<String> = std::fs::read_dir(&days)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .filter(|p| p.contains("ESP-"))
        .collect();
    // Latest day first: the order a careless glob or a reverse sort gives.
    day_files.sort();
    day_files.reverse();
    let diagnose = |inputs: &[String], tag: &str| -> (String, String, String) {
        let events = dir.join(format!("events-{tag}.csv"));
        let scores = dir.join(format!("scores-{tag}.csv"));
        let mut args = vec![
            "diagnose",
            "--wells",
            "sim/wells",
            "--threads",
            "3",
            "--input",
        ];
        args.extend(inputs.iter().map(String::as_str));
        args.extend(["--events-out", events.to_str().unwrap()]);
        args.extend(["--scores-out", scores.to_str().unwrap()]);
        let (ok, stdout, stderr) = run_cli(&args, &[], dir);
        assert!(ok, "{stderr}");
        (read(&events), read(&scores), stdout)
    };
    let (ref_events, ref_scores, _) = diagnose(&whole, "whole");
    for run in 0..3 {
        let (events, scores, stdout) = diagnose(&day_files, &format!("days{run}"));
        assert!(!stdout.contains("out-of-order"), "{stdout}");
        assert_eq!(
            events, ref_events,
            "run {run}: events differ from the single-file run"
        );
        assert_eq!(
            scores, ref_scores,
            "run {run}: scores differ from the single-file run"
        );
    }
    assert!(ref_events.lines().count() > 1, "{ref_events}");
    // eval sees each well over all its daily files: the same well-days as the whole files.
    let well_days = |labels: &Path| -> String {
        let (ok, stdout, stderr) = run_cli(
            &[
                "eval",
                "--labels",
                labels.to_str().unwrap(),
                "--events",
                dir.join("events-whole.csv").to_str().unwrap(),
                "--json",
            ],
            &[],
            dir,
        );
        assert!(ok, "{stderr}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        v["unlabelled_well_days"].to_string()
    };
    assert_eq!(
        well_days(&days.join("labels.csv")),
        well_days(&sim.join("labels.csv"))
    );
}

/// `eval --scores` scores the per-reading anomaly flag pointwise against the labels.
#[test]
fn eval_scores_the_anomaly_flag_pointwise() {
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path();
    std::fs::write(
        dir.join("labels.csv"),
        "well_id,file,start,end,condition\n\
         W1,W1.csv,2026-01-01T00:10:00Z,2026-01-01T00:20:00Z,tubing_leak\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("scores.csv"),
        "well_id,ts,anomaly_score,anomaly\n\
         W1,2026-01-01T00:00:00Z,0.0000,0\n\
         W1,2026-01-01T00:05:00Z,0.4000,0\n\
         W1,2026-01-01T00:06:00Z,1.2000,1\n\
         W1,2026-01-01T00:12:00Z,3.0000,1\n\
         W1,2026-01-01T00:15:00Z,0.9000,0\n\
         W1,2026-01-01T00:30:00Z,0.5000,0\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = run_cli(
        &[
            "eval",
            "--labels",
            "labels.csv",
            "--scores",
            "scores.csv",
            "--json",
        ],
        &[],
        dir,
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    // The training reading (score 0) is left out.
    assert_eq!(v["normal_readings"], 3, "{v}");
    assert_eq!(v["normal_flagged"], 1, "{v}");
    assert_eq!(v["faulty_readings"], 2, "{v}");
    assert_eq!(v["faulty_flagged"], 1, "{v}");
    assert_eq!(v["recall"], 0.5, "{v}");
    assert_eq!(v["precision"], 0.5, "{v}");
}

/// Issue 16: a newcomer sees alarms within the first minute of `espwatch demo` (at the default
/// speed), and the demo says what happens when.
#[test]
fn demo_shows_alarms_within_the_first_minute() {
    init();
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("demo");
    let demo = ChildServer::start_with(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--wells",
        "3",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (printed, password) = loop {
        let printed = demo.stdout.lock().unwrap().join("\n");
        if let Some(rest) = printed.split("user demo, password ").nth(1) {
            let password = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if printed.contains("Ctrl-C") {
                break (printed, password);
            }
        }
        assert!(Instant::now() < deadline, "no sign-in printed: {printed}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // What happens when: the loaded history, the replay, and each failure's moment.
    assert!(printed.contains("loaded at once"), "{printed}");
    assert!(printed.contains("gas_lock"), "{printed}");
    assert!(printed.contains("within the first minute"), "{printed}");
    let tokens = http_post(
        &demo.url("/api/v1/auth/login"),
        &serde_json::json!({ "username": "demo", "password": password }),
    );
    let token = tokens["access_token"]
        .as_str()
        .expect("signed in")
        .to_owned();
    let gas_locked = printed
        .lines()
        .find(|l| l.contains("gas_lock"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the gas-locked well is named")
        .to_owned();
    loop {
        let alarms = http_get(&demo.url("/api/v1/alarms"), &token);
        let raised: Vec<&serde_json::Value> = alarms["alarms"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if raised.iter().any(|a| a["well_id"] == gas_locked.as_str()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no alarm of the gas-locked well within a minute: {alarms}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
