//! Issue 16: the old platform's clients (seed routes and shapes) and the data-quality score.

use serde_json::{Value, json};

use crate::support::*;
use espwatch_core::access::Role;

/// A running well every 10 s from `ts(start)`: current and pressure move a little, as real
/// gauges do; `stuck` readings (by index) hold the intake pressure at one value.
fn readings(well: &str, start: i64, n: usize, stuck: std::ops::Range<usize>) -> Value {
    let rows: Vec<Value> = (0..n)
        .map(|i| {
            let wiggle = ((i * 7919) % 13) as f64 / 10.0;
            let pip = if stuck.contains(&i) {
                851.5
            } else {
                850.0 + 3.0 * wiggle
            };
            json!({
                "well_id": well,
                "ts": ts(start + 10 * i as i64),
                "frequency_hz": 55.0,
                "motor_current_a": 40.0 + wiggle,
                "intake_pressure_psi": pip,
                "motor_temp_c": 95.0 + wiggle,
            })
        })
        .collect();
    Value::Array(rows)
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_per_window_names_the_gauge_not_to_trust() {
    let app = spawn_app().await;
    // Hour 1 complete and clean; hour 2: the intake gauge sticks for 20 minutes and the last
    // 10 minutes never arrive.
    let (status, body) = app.ingest_json(&readings("Q-1", 0, 360, 0..0)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.ingest_json(&readings("Q-1", 3600, 300, 60..180)).await;
    assert_eq!(status, 200, "{body}");

    let (status, q) = app
        .get(&format!("/api/v1/wells/Q-1/quality?from={}&to={}&window=1h", ts(0), ts(7200)))
        .await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["interval_s"], 10.0, "{q}");
    assert_eq!(q["interval_source"], "inferred");
    assert_eq!(q["target"], 95.0);
    let windows = q["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0]["score"], 100.0, "{}", windows[0]);
    assert_eq!(windows[0]["meets_target"], true);
    assert!(windows[0]["channels"].as_array().unwrap().iter().all(|c| c["trusted"] == true));

    let second = &windows[1];
    assert_eq!(second["readings"], 300);
    assert_eq!(second["expected"], 360);
    assert!(second["score"].as_f64().unwrap() < 95.0, "{second}");
    assert_eq!(second["meets_target"], false);
    let channel = |name: &str| {
        second["channels"].as_array().unwrap().iter().find(|c| c["field"] == name).cloned().unwrap()
    };
    let pip = channel("intake_pressure_psi");
    assert_eq!(pip["trusted"], false, "{pip}");
    assert_eq!(pip["issues"], json!(["stuck"]));
    assert!(pip["stuck"].as_u64().unwrap() >= 120, "{pip}");
    assert_eq!(channel("motor_current_a")["trusted"], true);
    assert_eq!(channel("motor_temp_c")["trusted"], true);

    // A declared interval is the reference once the registry has it.
    let (status, _) = app
        .send(app.client.put(app.url("/api/v1/wells/Q-1")).json(&json!({"well_id": "Q-1", "sample_interval_s": 5})))
        .await;
    assert_eq!(status, 200);
    let (_, q) = app
        .get(&format!("/api/v1/wells/Q-1/quality?from={}&to={}&window=1h", ts(0), ts(3600)))
        .await;
    assert_eq!(q["interval_source"], "registry", "{q}");
    assert_eq!(q["overall"]["completeness"], 0.5);

    let (status, body) = app.get("/api/v1/wells/NOPE-1/quality").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.get("/api/v1/wells/Q-1/quality?window=1s&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z").await;
    assert_eq!((status, body["error"]["details"]["parameter"].clone()), (400, json!("window")), "{body}");
}
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_platforms_clients_get_their_routes_and_shapes() {
    let app = spawn_app().await;
    // The seed's test payload, as its SCADA clients send it (no timestamp: stamped on receipt).
    let sample = json!({
        "well_id": "TEST-001", "flow_rate": 1500.0, "pip": 850.0, "motor_current": 45.0,
        "motor_temp": 85.0, "vibration": 0.8, "vsd_frequency": 55.0, "flow_variance": 18.5,
        "torque": 120.0, "gor": 600.0
    });
    let (status, body) = app.post("/telemetry/ingest", "application/json", sample.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["well_id"], "TEST-001");
    assert_eq!(body["accepted"], 1);
    // Missing measurements: 422 with `error`, as the seed's test expects.
    let (status, body) = app
        .post("/telemetry/ingest", "application/json", json!({"well_id": "TEST-001"}).to_string())
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.get("error").is_some(), "{body}");
    assert_eq!(body["status"], "error");

    // The old telemetry query: rows in the old column names with quality and anomaly flags.
    let (status, body) = app.ingest_json(&readings("OLD-1", 0, 360, 100..220)).await;
    assert_eq!(status, 200, "{body}");
    let (status, rows) = app
        .get(&format!("/api/v1/telemetry?device_id=OLD-1&start={}&end={}&limit=5", ts(0), ts(3600)))
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["device_id"], "OLD-1");
    assert_eq!(rows["count"], 5);
    assert_eq!(rows["truncated"], true);
    let row = &rows["data"][0];
    assert_eq!(row["timestamp"], ts(0));
    assert_eq!(row["device_id"], "OLD-1");
    assert_eq!(row["motor_current"], 40.0);
    assert_eq!(row["intake_pressure"], 850.0);
    assert_eq!(row["temperature"], 95.0);
    assert_eq!(row["vsd_frequency"], 55.0);
    assert_eq!(row["rpm"], Value::Null);
    assert_eq!(row["is_anomaly"], false);
    // The stuck intake gauge costs this hour its score (120 of 1 440 values).
    let score = row["data_quality_score"].as_f64().unwrap();
    assert!(score > 0.8 && score < 0.95, "{row}");
    let (status, body) = app.get("/api/v1/telemetry?device_id=NOPE-1").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.get("/api/v1/telemetry").await;
    assert_eq!(status, 400, "{body}");

    // The old per-device diagnosis.
    let (status, d) = app.get("/api/v1/diagnostics/OLD-1").await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["device_id"], "OLD-1");
    assert!(d["diagnosis"]["type"].is_string(), "{d}");
    assert!(d["diagnosis"]["confidence"].is_number(), "{d}");
    assert!(["learning", "normal", "alert"].contains(&d["status"].as_str().unwrap()), "{d}");
    let (status, _) = app.get("/api/v1/diagnostics/NOPE-1").await;
    assert_eq!(status, 404);

    // Same permissions as the canonical routes, well scope included.
    let key = create_key(app.security.as_ref(), "scoped", Role::Operator, Some(vec!["OLD-1".into()])).await;
    let operator = bearer_client(&key);
    let get = |path: String| {
        let operator = operator.clone();
        let url = app.url(&path);
        async move { operator.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/api/v1/telemetry?device_id=OLD-1".into()).await, 200);
    assert_eq!(get("/api/v1/telemetry?device_id=TEST-001".into()).await, 403);
    assert_eq!(get("/api/v1/diagnostics/TEST-001".into()).await, 403);
    assert_eq!(get("/api/v1/wells/TEST-001/quality".into()).await, 403);
    let status = operator
        .post(app.url("/telemetry/ingest"))
        .json(&json!({"well_id": "OLD-1", "pip": 800}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403, "an operator may not write");

    // Documented, and audited under their own routes.
    let (_, doc) = app.send(app.anonymous.get(app.url("/api/v1/openapi.json"))).await;
    for (path, method) in [
        ("/telemetry/ingest", "post"),
        ("/api/v1/telemetry", "get"),
        ("/api/v1/diagnostics/{id}", "get"),
        ("/api/v1/wells/{id}/quality", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} not documented");
    }
    assert_eq!(app.login("nobody", "wrong-password-123").await.0, 401);
    let (_, audit) = app.get("/api/v1/audit?limit=1000").await;
    let routes: Vec<(&str, &str)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["method"].as_str()?, r["route"].as_str()?)))
        .collect();
    for route in [
        ("POST", "/telemetry/ingest"),
        ("GET", "/api/v1/telemetry"),
        ("GET", "/api/v1/diagnostics/{id}"),
    ] {
        assert!(routes.contains(&route), "{route:?} not audited: {routes:?}");
    }
}
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historian_timestamps_need_their_zone_declared_over_http_and_on_the_command_line() {
    let app = spawn_app().await;
    // A historian export: space-separated local times (Riyadh, UTC+3), no offset.
    let csv = "well_id,ts,frequency_hz,motor_current_a\nH-1,2026-01-01 03:00:00,55,40\nH-1,2026-01-01 03:00:10,55,41\n";
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", csv).await;
    assert_eq!(status, 422, "a naive time is never guessed: {body}");
    let reason = body["rejected"][0]["errors"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("without a zone"), "{body}");

    let (status, body) = app.post("/api/v1/telemetry?timezone=%2B03:00", "text/csv", csv).await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(2)), "{body}");
    let points = app.all_points("H-1").await;
    assert_eq!(points["ts"], json!([ts(0), ts(10)]), "03:00 at +03:00 is 00:00Z");
    // A space-separated time with its own offset needs no declared zone.
    let (status, body) = app
        .post("/api/v1/telemetry", "text/csv", "well_id,ts,motor_current_a\nH-2,2026-01-01 00:00:00Z,40\n")
        .await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(1)), "{body}");
    // Zones with daylight saving and an unescaped `+` are refused with the reason.
    let (status, body) = app.post("/api/v1/telemetry?timezone=Europe/Berlin", "text/csv", csv).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("daylight saving"), "{body}");
    let (status, body) = app.post("/api/v1/telemetry?timezone=+03:00", "text/csv", csv).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("%2B"), "{body}");

    // The command line: --timezone, sent to the server as the query parameter.
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("export.csv");
    std::fs::write(&file, csv.replace("H-1", "H-3")).expect("write");
    let base = app.url("");
    let (ok, stdout, stderr) = run_cli(
        &["ingest", file.to_str().unwrap(), "--url", &base, "--api-key", &app.admin_key],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 0"), "without a zone nothing is stored: {stdout}");
    let (ok, stdout, stderr) = run_cli(
        &["ingest", file.to_str().unwrap(), "--url", &base, "--api-key", &app.admin_key, "--timezone", "+03:00"],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 2"), "{stdout}");
    assert_eq!(app.all_points("H-3").await["ts"], json!([ts(0), ts(10)]));
}
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn european_csv_with_semicolons_and_decimal_commas_is_read_when_declared() {
    let app = spawn_app().await;
    let csv = "well_id;ts;frequency_hz;motor_current_a\nE-1;2026-01-01T00:00:00Z;55;42,5\nE-1;2026-01-01T00:00:10Z;55,5;41\n";
    // Undeclared, the header is one unknown column: refused as a whole.
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", csv).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .post("/api/v1/telemetry?csv_separator=semicolon&decimal=comma", "text/csv", csv)
        .await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(2)), "{body}");
    let points = app.all_points("E-1").await;
    assert_eq!(points["fields"]["motor_current_a"], json!([42.5, 41.0]));
    assert_eq!(points["fields"]["frequency_hz"], json!([55.0, 55.5]));
    // `;` separated but decimal points: a decimal comma is then not a number.
    let (status, body) = app
        .post("/api/v1/telemetry?csv_separator=%3B", "text/csv", csv.replace("E-1", "E-2"))
        .await;
    // Each row has a decimal comma somewhere: both refused, naming the cell.
    assert_eq!((status, body["accepted"].clone()), (422, json!(0)), "{body}");
    assert!(body.to_string().contains("not a number"), "{body}");
    let (status, body) = app.post("/api/v1/telemetry?decimal=bogus", "text/csv", csv).await;
    assert_eq!((status, body["error"]["details"]["parameter"].clone()), (400, json!("decimal")), "{body}");

    // The command line takes the same dialect.
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("export.csv");
    std::fs::write(&file, csv.replace("E-1", "E-3")).expect("write");
    let (ok, stdout, stderr) = run_cli(
        &[
            "ingest", file.to_str().unwrap(), "--url", &app.url(""), "--api-key", &app.admin_key,
            "--csv-separator", ";", "--decimal-comma",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 2"), "{stdout}");
    assert_eq!(app.all_points("E-3").await["fields"]["motor_current_a"], json!([42.5, 41.0]));
}
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wells_registry_zone_reads_its_naive_times_when_the_sender_declares_none() {
    let app = spawn_app().await;
    // The registry takes a fixed offset, and refuses a named zone precisely.
    let (status, body) = app
        .send(app.client.post(app.url("/api/v1/wells")).json(&json!({"well_id": "TZ-1", "timezone": "+03:00"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .send(app.client.post(app.url("/api/v1/wells")).json(&json!({"well_id": "TZ-2", "timezone": "Europe/Berlin"})))
        .await;
    assert_eq!(status, 422, "{body}");
    let problem = &body["error"]["details"]["problems"][0];
    assert_eq!(problem["field"], "timezone", "{body}");
    let reason = problem["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fixed UTC offsets") && reason.contains("daylight saving"), "{body}");
    let (status, body) = app
        .send(app.client.post(app.url("/api/v1/wells")).json(&json!({"well_id": "TZ-2"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.get("/api/v1/wells/TZ-1").await;
    assert_eq!((status, body["timezone"].clone()), (200, json!("+03:00")), "{body}");

    // CSV, no declared zone: TZ-1's naive times are read at +03:00; TZ-2 has no zone, so its
    // naive time is refused as before while its reading with an offset is kept.
    let csv = "well_id,ts,motor_current_a\n\
               TZ-1,2026-01-01 03:00:00,40\n\
               TZ-2,2026-01-01 03:00:00,41\n\
               TZ-1,2026-01-01 03:00:10,42\n\
               TZ-2,2026-01-01T00:00:00Z,43\n";
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", csv).await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(3)), "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!((rejected[0]["index"].clone(), rejected[0]["well_id"].clone()), (json!(1), json!("TZ-2")), "{body}");
    assert!(rejected[0]["errors"][0]["reason"].as_str().unwrap().contains("without a zone"), "{body}");
    assert_eq!(app.all_points("TZ-1").await["ts"], json!([ts(0), ts(10)]), "03:00 at +03:00 is 00:00Z");
    assert_eq!(app.all_points("TZ-2").await["ts"], json!([ts(0)]));

    // JSON, and the old platform's route.
    let (status, body) = app
        .ingest_json(&json!([{"well_id": "TZ-1", "ts": "2026-01-01 03:00:20", "motor_current_a": 40}]))
        .await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(1)), "{body}");
    let (status, body) = app
        .post("/telemetry/ingest", "application/json", json!({"device_id": "TZ-1", "timestamp": "2026-01-01 03:00:30", "motor_current": 40}).to_string())
        .await;
    assert_eq!((status, body["status"].clone(), body["accepted"].clone()), (200, json!("success"), json!(1)), "{body}");
    // A zone the sender declares wins over the well's: 03:00:40 UTC, not 00:00:40Z.
    let (status, body) = app
        .post("/api/v1/telemetry?timezone=UTC", "text/csv", "well_id,ts,motor_current_a\nTZ-1,2026-01-01 00:00:40,40\n")
        .await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(1)), "{body}");
    assert_eq!(app.all_points("TZ-1").await["ts"], json!([ts(0), ts(10), ts(20), ts(30), ts(40)]));

    // The command line against the server: no --timezone, the registry's zone applies;
    // --timezone wins.
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("export.csv");
    std::fs::write(&file, "well_id,ts,motor_current_a\nTZ-1,2026-01-01 03:00:50,40\nTZ-2,2026-01-01 03:00:50,40\n").expect("write");
    let base = app.url("");
    let (ok, stdout, stderr) = run_cli(
        &["ingest", file.to_str().unwrap(), "--url", &base, "--api-key", &app.admin_key],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 1, duplicates 0, rejected 1"), "{stdout}");
    let (ok, stdout, stderr) = run_cli(
        &["ingest", file.to_str().unwrap(), "--url", &base, "--api-key", &app.admin_key, "--timezone", "+00:00"],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 2, duplicates 0, rejected 0"), "{stdout}");
    assert_eq!(app.all_points("TZ-1").await["ts"], json!([ts(0), ts(10), ts(20), ts(30), ts(40), ts(50), ts(3 * 3600 + 50)]));
}
}

/// `espwatch wells import` and `espwatch ingest --data-dir` (the embedded store, no server).
#[test]
fn wells_import_and_local_ingest_use_the_registry_zone() {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let data = data.to_str().unwrap();
    let wells = work.path().join("wells");
    std::fs::create_dir(&wells).expect("mkdir");
    std::fs::write(
        wells.join("tz-9.json"),
        r#"{"well_id": "TZ-9", "timezone": "-05:30"}"#,
    )
    .expect("write");
    let (ok, stdout, stderr) = run_cli(
        &[
            "wells",
            "import",
            wells.to_str().unwrap(),
            "--data-dir",
            data,
        ],
        &[],
        work.path(),
    );
    assert!(
        ok && stdout.contains("1 well(s) imported"),
        "{stdout}{stderr}"
    );
    let named = work.path().join("named.json");
    std::fs::write(
        &named,
        r#"{"well_id": "TZ-10", "timezone": "America/New_York"}"#,
    )
    .expect("write");
    let (ok, stdout, stderr) = run_cli(
        &[
            "wells",
            "import",
            named.to_str().unwrap(),
            "--data-dir",
            data,
        ],
        &[],
        work.path(),
    );
    assert!(
        !ok && stderr.contains("timezone") && stderr.contains("fixed UTC offsets"),
        "{stdout}{stderr}"
    );

    let file = work.path().join("export.csv");
    std::fs::write(
        &file,
        "well_id,ts,motor_current_a\nTZ-9,2025-12-31 19:00:00,40\nTZ-9,2025-12-31 19:00:10,41\n",
    )
    .expect("write");
    let (ok, stdout, stderr) = run_cli(
        &["ingest", file.to_str().unwrap(), "--data-dir", data],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("accepted 2, duplicates 0, rejected 0"),
        "{stdout}"
    );
    // The same local times declared at -05:30 are the same instants: duplicates now.
    let (ok, stdout, stderr) = run_cli(
        &[
            "ingest",
            file.to_str().unwrap(),
            "--data-dir",
            data,
            "--timezone=-05:30",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("accepted 0, duplicates 2, rejected 0"),
        "{stdout}"
    );
    // Declared as UTC they are other instants: the sender's zone wins.
    let (ok, stdout, stderr) = run_cli(
        &[
            "ingest",
            file.to_str().unwrap(),
            "--data-dir",
            data,
            "--timezone",
            "UTC",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("accepted 2, duplicates 0, rejected 0"),
        "{stdout}"
    );
}
