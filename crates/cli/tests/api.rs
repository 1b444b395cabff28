//! End-to-end behaviour of espwatch through its public surface: HTTP against the real server
//! on port 0 with a fresh store, and the real binary for process-level guarantees.

mod ask;
mod browser;
mod diagnostics;
mod field;
mod fleet;
mod legacy;
mod lifecycle;
mod notify;
mod ops;
mod outage;
mod security;
mod ship;
mod simulator;
mod stream;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

// ---------------------------------------------------------------- ingestion: content types

both_backends! {
#[tokio::test]
async fn single_json_reading_is_stored_and_queryable() {
    let app = spawn_app().await;
    let (status, body) = app.ingest_json(&reading("W-1", &ts(0), 42.25)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["rejected"], json!([]));

    let points = app.all_points("W-1").await;
    assert_eq!(points["ts"], json!([ts(0)]));
    assert_eq!(points["fields"]["motor_current_a"], json!([42.25]));
    assert_eq!(points["fields"]["intake_pressure_psi"], json!([850.5]));
    assert_eq!(points["fields"]["motor_temp_c"], json!([null]));
}
}

both_backends! {
#[tokio::test]
async fn json_array_ndjson_and_csv_are_accepted() {
    let app = spawn_app().await;
    let array = json!([reading("W-A", &ts(0), 40.0), reading("W-A", &ts(10), 41.0)]);
    let (status, body) = app.ingest_json(&array).await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );

    let ndjson = format!(
        "{}\n\n{}\n",
        reading("W-N", &ts(0), 40.0),
        reading("W-N", &ts(10), 41.0)
    );
    let (status, body) = app
        .post("/api/v1/telemetry", "application/x-ndjson", ndjson)
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );

    let csv = format!(
        "well_id,ts,frequency_hz,motor_current_a,motor_temp_c\nW-C,{},55,40.5,\nW-C,{},55,41.5,120\n",
        ts(0),
        ts(10)
    );
    let (status, body) = app
        .post("/api/v1/telemetry", "text/csv; charset=utf-8", csv)
        .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );
    let points = app.all_points("W-C").await;
    assert_eq!(points["fields"]["motor_temp_c"], json!([null, 120.0]));
    assert_eq!(points["fields"]["motor_current_a"], json!([40.5, 41.5]));
}
}

both_backends! {
#[tokio::test]
async fn any_offset_is_stored_as_utc() {
    let app = spawn_app().await;
    let (status, _) = app
        .ingest_json(&reading("W-TZ", "2026-01-01T02:00:00+02:00", 40.0))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.all_points("W-TZ").await["ts"],
        json!(["2026-01-01T00:00:00Z"])
    );
}
}

both_backends! {
#[tokio::test]
async fn legacy_scada_payload_keeps_working() {
    let app = spawn_app().await;
    // The old platform's sample payload: legacy names, ignored extras, no timestamp.
    let legacy = json!({
        "well_id": "TEST-001", "flow_rate": 1500.0, "pip": 850.0, "motor_current": 45.0,
        "motor_temp": 85.0, "vibration": 0.8, "vsd_frequency": 55.0, "flow_variance": 18.5,
        "torque": 120.0, "gor": 600.0
    });
    let (status, body) = app.ingest_json(&legacy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("torque") && warnings.contains("flow_variance"),
        "{warnings}"
    );

    let with_device_id = json!({"device_id": "TEST-002", "timestamp": ts(0), "discharge_pressure": 2900.0, "temperature": 90.0, "rpm": 3400});
    let (status, body) = app.ingest_json(&with_device_id).await;
    assert_eq!(status, 200, "{body}");
    let points = app.all_points("TEST-002").await;
    assert_eq!(points["fields"]["discharge_pressure_psi"], json!([2900.0]));
    assert_eq!(points["fields"]["motor_temp_c"], json!([90.0]));
    let points = app.all_points("TEST-001").await;
    assert_eq!(points["fields"]["intake_pressure_psi"], json!([850.0]));
    assert_eq!(points["fields"]["frequency_hz"], json!([55.0]));
    assert_eq!(points["fields"]["gor_scf_bbl"], json!([600.0]));
}
}

// ---------------------------------------------------------------- ingestion: rejections

fn errors_of(body: &Value, index: usize) -> Vec<(String, String)> {
    body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .find(|r| r["index"] == index)
        .unwrap_or_else(|| panic!("no rejection for index {index}: {body}"))["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

both_backends! {
#[tokio::test]
async fn invalid_readings_are_rejected_per_field_and_valid_ones_kept() {
    let app = spawn_app().await;
    let far_future = "2999-01-01T00:00:00Z";
    let batch = json!([
        reading("W-V", &ts(0), 40.0),                                               // 0 valid
        {"well_id": "W-V", "ts": ts(10), "motor_current_a": 40.0, "colour": "red"},  // 1 unknown field
        {"well_id": "W-V", "ts": ts(20), "motor_current_a": "NaN"},                  // 2 not a number
        {"well_id": "W-V", "ts": ts(30), "frequency_hz": 500.0, "intake_temp_c": -80}, // 3 two out of range
        {"well_id": "W-V", "ts": far_future, "motor_current_a": 40.0},               // 4 future
        {"well_id": "W-V", "ts": ts(40)},                                            // 5 no measurement
        {"well_id": "bad id!", "ts": ts(50), "motor_current_a": 40.0},               // 6 bad well id
        {"well_id": "W-V", "ts": "yesterday", "motor_current_a": 40.0},              // 7 bad ts
        {"well_id": "W-V", "ts": ts(60), "motor_current_a": null, "flow_rate_bpd": 1200}, // 8 valid (null allowed)
        42                                                                             // 9 not an object
    ]);
    let (status, body) = app.ingest_json(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["rejected"].as_array().map(Vec::len), Some(8), "{body}");
    assert!(errors_of(&body, 1).iter().any(|(f, _)| f == "colour"));
    assert!(
        errors_of(&body, 2)
            .iter()
            .any(|(f, _)| f == "motor_current_a")
    );
    let e3 = errors_of(&body, 3);
    assert!(
        e3.iter().any(|(f, _)| f == "frequency_hz") && e3.iter().any(|(f, _)| f == "intake_temp_c"),
        "{e3:?}"
    );
    assert!(
        errors_of(&body, 4)
            .iter()
            .any(|(f, r)| f == "ts" && r.contains("future"))
    );
    assert!(!errors_of(&body, 5).is_empty());
    assert!(errors_of(&body, 6).iter().any(|(f, _)| f == "well_id"));
    assert!(errors_of(&body, 7).iter().any(|(f, _)| f == "ts"));
    assert!(!errors_of(&body, 9).is_empty());
    assert_eq!(body["rejected"][5]["well_id"], "bad id!");

    let points = app.all_points("W-V").await;
    assert_eq!(points["ts"], json!([ts(0), ts(60)]));
}
}

both_backends! {
#[tokio::test]
async fn all_rejected_is_422_with_report_and_envelope() {
    let app = spawn_app().await;
    let (status, body) = app
        .ingest_json(&json!([{"well_id": "W-X", "ts": ts(0), "frequency_hz": -1}]))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["error"]["type"], "all_readings_rejected");
    assert!(body["error"]["id"].as_str().is_some_and(|s| !s.is_empty()));
}
}

both_backends! {
#[tokio::test]
async fn unparseable_bodies_are_400_with_position() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/telemetry",
            "application/json",
            "[{\"well_id\": \"W\",\n \"ts\": }]",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "malformed_payload");
    assert_eq!(body["error"]["details"]["line"], 2, "{body}");
    assert!(
        body["error"]["details"]["column"].as_u64().is_some(),
        "{body}"
    );

    let (status, body) = app
        .post(
            "/api/v1/telemetry",
            "text/csv",
            "well_id,ts,colour\nW,2026-01-01T00:00:00Z,red\n",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{body}"
    );

    let (status, body) = app
        .post("/api/v1/telemetry", "application/json", "[]")
        .await;
    assert_eq!(status, 400, "{body}");
}
}

both_backends! {
#[tokio::test]
async fn ndjson_keeps_valid_lines_around_a_broken_one() {
    let app = spawn_app().await;
    let body = format!(
        "{}\n{{\"well_id\": \"W-NL\", \"ts\": \n{}\n",
        reading("W-NL", &ts(0), 40.0),
        reading("W-NL", &ts(10), 41.0)
    );
    let (status, report) = app
        .post("/api/v1/telemetry", "application/x-ndjson", body)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["rejected"][0]["index"], 1);
}
}

both_backends! {
#[tokio::test]
async fn unsupported_content_type_is_415_and_oversized_body_413() {
    let app = spawn_app_with(|c| c.body_limit_bytes = 4096).await;
    let (status, body) = app.post("/api/v1/telemetry", "text/plain", "hello").await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["type"], "unsupported_media_type");

    let big: Vec<Value> = (0..200).map(|i| reading("W-BIG", &ts(i), 40.0)).collect();
    let (status, body) = app.ingest_json(&Value::Array(big)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["type"], "payload_too_large");
    // Nothing of a refused body is stored.
    let (status, _) = app.get("/api/v1/wells/W-BIG").await;
    assert_eq!(status, 404);
}
}

both_backends! {
#[tokio::test]
async fn chunked_oversized_body_is_413() {
    let app = spawn_app_with(|c| c.body_limit_bytes = 4096).await;
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..100).map(|_| Ok("x".repeat(100))).collect();
    let stream = futures_stream(chunks);
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/telemetry"))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    assert_eq!(status, 413, "{body}");
}
}

fn futures_stream(
    items: Vec<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    struct Iter(std::vec::IntoIter<Result<String, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

// ---------------------------------------------------------------- idempotency, registration

both_backends! {
#[tokio::test]
async fn resent_readings_are_duplicates_and_first_value_wins() {
    let app = spawn_app().await;
    let (_, body) = app
        .ingest_json(&json!([reading("W-D", &ts(0), 40.0)]))
        .await;
    assert_eq!(body["accepted"], 1);
    let (status, body) = app
        .ingest_json(&json!([
            reading("W-D", &ts(0), 99.0),
            reading("W-D", &ts(10), 41.0),
            reading("W-D", &ts(10), 77.0)
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["duplicates"].clone()),
        (json!(1), json!(2))
    );
    let (status, body) = app.ingest_json(&json!([reading("W-D", &ts(0), 1.0)])).await;
    assert_eq!(status, 200, "all duplicates is still a success: {body}");
    assert_eq!(body["duplicates"], 1);
    let points = app.all_points("W-D").await;
    assert_eq!(points["fields"]["motor_current_a"], json!([40.0, 41.0]));
}
}

both_backends! {
#[tokio::test]
async fn unknown_wells_are_registered_automatically_by_default() {
    let app = spawn_app().await;
    app.ingest_json(&reading("W-AUTO", &ts(0), 40.0)).await;
    let (status, body) = app.get("/api/v1/wells/W-AUTO").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auto_registered"], true);
}
}

both_backends! {
#[tokio::test]
async fn unknown_wells_are_rejected_when_auto_registration_is_off() {
    let app = spawn_app_with(|c| c.auto_register_wells = false).await;
    let (status, body) = app.ingest_json(&reading("W-NEW", &ts(0), 40.0)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        errors_of(&body, 0)
            .iter()
            .any(|(f, r)| f == "well_id" && r.contains("unknown well"))
    );
    let (status, _) = app
        .send(
            app.client
                .post(app.url("/api/v1/wells"))
                .json(&json!({"well_id": "W-NEW"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = app.ingest_json(&reading("W-NEW", &ts(0), 40.0)).await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(1)));
}
}

// ---------------------------------------------------------------- durability

both_backends! {
#[tokio::test]
async fn data_survives_a_graceful_restart() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..500)
        .map(|i| reading("W-R", &ts(i * 10), 40.0 + i as f64 / 100.0))
        .collect();
    let (_, body) = app.ingest_json(&Value::Array(batch)).await;
    assert_eq!(body["accepted"], 500);
    let data_dir = app.data_dir.clone();
    let dir = app.stop().await;
    let app = start_in(data_dir, dir, |_| {}).await;
    let points = app.all_points("W-R").await;
    assert_eq!(points["ts"].as_array().map(Vec::len), Some(500));
    assert_eq!(points["fields"]["motor_current_a"][499], json!(44.99));
    let (_, body) = app.ingest_json(&reading("W-R", &ts(0), 1.0)).await;
    assert_eq!(
        body["duplicates"], 1,
        "dedup state survives the restart too"
    );
}
}

#[test]
fn kill_9_during_ingestion_loses_nothing_acknowledged() {
    init();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ChildServer::start(dir.path());
    let url = server.url("/api/v1/telemetry");
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // Eight clients send batches as fast as they can; every 200 is recorded.
    let writers: Vec<_> = (0..8)
        .map(|client| {
            let (url, acknowledged) = (url.clone(), acknowledged.clone());
            let http = server.client();
            runtime.spawn(async move {
                for batch in 0..10_000i64 {
                    let readings: Vec<Value> = (0..50)
                        .map(|i| reading(&format!("K-{client}"), &ts(batch * 50 + i), 40.0))
                        .collect();
                    let Ok(response) = http.post(&url).json(&readings).send().await else {
                        return;
                    };
                    if response.status() != 200 {
                        return;
                    }
                    let mut acked = acknowledged.lock().expect("lock");
                    for r in &readings {
                        acked.push((
                            r["well_id"].as_str().unwrap_or_default().to_owned(),
                            r["ts"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                }
            })
        })
        .collect();

    // Kill once a good amount of data has been acknowledged, in the middle of the stream.
    for _ in 0..600 {
        if acknowledged.lock().expect("lock").len() >= 20_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill_9();
    runtime.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(
        acked.len() >= 1_000,
        "too little was acknowledged before the kill: {}",
        acked.len()
    );

    let server = ChildServer::start(dir.path());
    let wells: Vec<String> = (0..8).map(|client| format!("K-{client}")).collect();
    let stored = runtime.block_on(stored_timestamps(&server, &wells));
    let missing: Vec<_> = acked
        .iter()
        .filter(|(well, t)| !stored.get(well).is_some_and(|s| s.contains(t)))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged readings lost, e.g. {missing:?}",
        acked.len()
    );
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_data() {
    init();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ChildServer::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let response = server
            .client()
            .post(server.url("/api/v1/telemetry"))
            .json(&reading("W-TERM", &ts(0), 40.0))
            .send()
            .await
            .expect("ingest");
        assert_eq!(response.status(), 200);
    });
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    let server = ChildServer::start(dir.path());
    runtime.block_on(async {
        let body: Value = server
            .client()
            .get(server.url(
                "/api/v1/wells/W-TERM/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z",
            ))
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(body["ts"], json!([ts(0)]));
    });
}

// ---------------------------------------------------------------- volume and concurrency

both_backends! {
#[tokio::test]
async fn a_large_batch_is_accepted_whole() {
    let app = spawn_app().await;
    let mut csv = String::from("well_id,ts,frequency_hz,motor_current_a,intake_pressure_psi\n");
    for i in 0..100_000 {
        csv.push_str(&format!(
            "L-{},{},55,{}.5,850\n",
            i % 10,
            ts(i / 10 * 10),
            40 + i % 7
        ));
    }
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", csv).await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 100_000);
    let points = app.all_points("L-3").await;
    assert_eq!(points["ts"].as_array().map(Vec::len), Some(10_000));
}
}

both_backends! {
#[tokio::test]
async fn concurrent_writers_all_land() {
    let app = Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for request in 0..25 {
                let readings: Vec<Value> = (0..20)
                    .map(|i| {
                        reading(
                            &format!("C-{}", writer % 4),
                            &ts((writer * 1000 + request * 20 + i) as i64),
                            40.0,
                        )
                    })
                    .collect();
                let (status, body) = app.ingest_json(&Value::Array(readings)).await;
                assert_eq!(
                    (status, body["accepted"].clone()),
                    (200, json!(20)),
                    "{body}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let mut total = 0;
    for w in 0..4 {
        total += app.all_points(&format!("C-{w}")).await["ts"]
            .as_array()
            .map_or(0, Vec::len);
    }
    assert_eq!(total, 16 * 25 * 20);
}
}

// ---------------------------------------------------------------- queries

async fn app_with_minutes_of_data() -> TestApp {
    let app = spawn_app().await;
    // 10 minutes at 10 s: current = 40 + minute, so per-minute aggregates are easy to predict.
    let readings: Vec<Value> = (0..60)
        .map(|i| {
            let minute = i / 6;
            let mut r = reading(
                "Q-1",
                &ts(i * 10),
                40.0 + minute as f64 + (i % 6) as f64 / 10.0,
            );
            if i % 6 == 5 {
                r.as_object_mut().map(|o| o.remove("intake_pressure_psi"));
            }
            r
        })
        .collect();
    let (_, body) = app.ingest_json(&Value::Array(readings)).await;
    assert_eq!(body["accepted"], 60);
    app
}

both_backends! {
#[tokio::test]
async fn step_queries_aggregate_per_bucket() {
    let app = app_with_minutes_of_data().await;
    let base = format!(
        "/api/v1/wells/Q-1/telemetry?from={}&to={}&fields=motor_current_a,intake_pressure_psi&step=1m",
        ts(0),
        ts(600)
    );
    let (status, body) = app.get(&format!("{base}&agg=avg")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ts"].as_array().map(Vec::len), Some(10));
    assert_eq!(body["ts"][1], ts(60));
    assert_eq!(body["step"], "1m");
    let avg = body["fields"]["motor_current_a"][2].as_f64().expect("avg");
    assert!((avg - 42.25).abs() < 1e-9, "{avg}");
    assert!(
        body["fields"].get("motor_temp_c").is_none(),
        "only requested fields"
    );

    let (_, body) = app.get(&format!("{base}&agg=max")).await;
    assert_eq!(body["fields"]["motor_current_a"][0], json!(40.5));
    let (_, body) = app.get(&format!("{base}&agg=min")).await;
    assert_eq!(body["fields"]["motor_current_a"][9], json!(49.0));
    let (_, body) = app.get(&format!("{base}&agg=last")).await;
    assert_eq!(body["fields"]["motor_current_a"][0], json!(40.5));
    // The last reading of each minute has no intake pressure: `last` takes the latest present value.
    assert_eq!(body["fields"]["intake_pressure_psi"][0], json!(850.5));
}
}

both_backends! {
#[tokio::test]
async fn raw_queries_respect_range_fields_and_max_points() {
    let app = app_with_minutes_of_data().await;
    let (_, body) = app
        .get(&format!(
            "/api/v1/wells/Q-1/telemetry?from={}&to={}&fields=motor_current_a",
            ts(60),
            ts(120)
        ))
        .await;
    assert_eq!(
        body["ts"].as_array().map(Vec::len),
        Some(6),
        "half-open range: {body}"
    );
    assert_eq!(body["downsampled"], false);

    let (_, body) = app
        .get(&format!(
            "/api/v1/wells/Q-1/telemetry?from={}&to={}&fields=motor_current_a&max_points=10",
            ts(0),
            ts(600)
        ))
        .await;
    let values = body["fields"]["motor_current_a"]
        .as_array()
        .expect("values");
    assert!(values.len() <= 10, "{body}");
    assert_eq!(body["downsampled"], true);
    let max = values
        .iter()
        .filter_map(Value::as_f64)
        .fold(f64::MIN, f64::max);
    let min = values
        .iter()
        .filter_map(Value::as_f64)
        .fold(f64::MAX, f64::min);
    assert_eq!((min, max), (40.0, 49.5), "downsampling keeps the extremes");
}
}

both_backends! {
#[tokio::test]
async fn queries_can_answer_csv() {
    let app = app_with_minutes_of_data().await;
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/wells/Q-1/telemetry?from={}&to={}&fields=motor_current_a",
            ts(0),
            ts(20)
        )))
        .header("accept", "text/csv")
        .send()
        .await
        .expect("query");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    let text = response.text().await.expect("text");
    assert_eq!(
        text,
        format!("ts,motor_current_a\n{},40\n{},40.1\n", ts(0), ts(10))
    );
}
}

both_backends! {
#[tokio::test]
async fn bad_queries_are_400_and_unknown_wells_404() {
    let app = app_with_minutes_of_data().await;
    for (query, param) in [
        ("fields=motor_current_a,colour", "fields"),
        ("step=fortnight", "step"),
        ("agg=median&step=1m", "agg"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("from=yesterday", "from"),
    ] {
        let (status, body) = app
            .get(&format!("/api/v1/wells/Q-1/telemetry?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["error"]["details"]["parameter"], param,
            "{query}: {body}"
        );
    }
    let (status, body) = app.get("/api/v1/wells/Q-1/telemetry?colour=red").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app.get("/api/v1/wells/NOPE/telemetry").await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (404, json!("not_found"))
    );
}
}

both_backends! {
#[tokio::test]
async fn latest_gives_the_fleet_overview() {
    let app = spawn_app().await;
    app.ingest_json(&json!([
        reading("F-1", &ts(0), 40.0),
        reading("F-1", &ts(10), 41.0),
        reading("F-2", &ts(5), 50.0)
    ]))
    .await;
    app.send(
        app.client
            .post(app.url("/api/v1/wells"))
            .json(&json!({"well_id": "F-3", "name": "Silent"})),
    )
    .await;
    let (status, body) = app.get("/api/v1/wells/latest").await;
    assert_eq!(status, 200, "{body}");
    let wells = body["wells"].as_array().expect("wells");
    assert_eq!(wells.len(), 3);
    assert_eq!(wells[0]["well_id"], "F-1");
    assert_eq!(wells[0]["ts"], ts(10));
    assert_eq!(wells[0]["values"]["motor_current_a"], json!(41.0));
    assert!(wells[0]["age_s"].as_f64().is_some_and(|a| a > 0.0));
    assert_eq!(wells[2]["ts"], Value::Null);
}
}

// ---------------------------------------------------------------- wells registry

fn full_well(id: &str) -> Value {
    json!({
        "well_id": id, "name": "North 7", "field": "Alpha",
        "location": {"lat": 29.7, "lon": -95.3},
        "pump": {"model": "D1050N", "stages": 120, "base_frequency_hz": 60,
                 "stage_curve": [{"flow_bpd": 0, "head_ft": 32, "bhp": 0.18}, {"flow_bpd": 1050, "head_ft": 25, "bhp": 0.30}, {"flow_bpd": 1500, "head_ft": 15, "bhp": 0.33}],
                 "min_flow_bpd": 750, "max_flow_bpd": 1350},
        "motor": {"rated_hp": 150, "rated_voltage_v": 2300, "rated_current_a": 40, "max_winding_temp_c": 200},
        "setting_depth_ft": 6500,
        "fluid": {"specific_gravity": 0.95, "bubble_point_psi": 1200, "gor_scf_bbl": 400, "water_cut_pct": 60}
    })
}

both_backends! {
#[tokio::test]
async fn wells_crud() {
    let app = spawn_app().await;
    let post = |body: Value| app.client.post(app.url("/api/v1/wells")).json(&body);
    let (status, body) = app.send(post(full_well("N-7"))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["pump"]["stages"], 120);
    assert_eq!(body["auto_registered"], false);
    let (status, body) = app.send(post(full_well("N-7"))).await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (409, json!("conflict"))
    );

    let mut bad = full_well("N-8");
    bad["location"]["lat"] = json!(123);
    bad["pump"]["base_frequency_hz"] = json!(55);
    let (status, body) = app.send(post(bad)).await;
    assert_eq!(status, 422, "{body}");
    let problems = body["error"]["details"]["problems"].to_string();
    assert!(
        problems.contains("location.lat") && problems.contains("pump.base_frequency_hz"),
        "{problems}"
    );
    // A bad id is one problem among the others, naming the rule it breaks; nothing is filed.
    let mut bad = full_well(".N-8");
    bad["location"]["lat"] = json!(123);
    let (status, body) = app.send(post(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["details"]["problems"],
        json!([
            {"field": "well_id", "reason": "must start with a letter or a digit (found '.')"},
            {"field": "location.lat", "reason": "123 is outside -90..=90"}
        ]),
        "{body}"
    );
    let (status, _) = app
        .send(post(json!({"well_id": "N-9", "colour": "red"})))
        .await;
    assert_eq!(status, 422);
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/wells"))
                .header("content-type", "application/json")
                .body("{oops"),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = app.get("/api/v1/wells/N-7").await;
    assert_eq!((status, body["name"].clone()), (200, json!("North 7")));
    let (_, list) = app.get("/api/v1/wells").await;
    assert_eq!(list["wells"].as_array().map(Vec::len), Some(1));

    let mut changed = full_well("N-7");
    changed["name"] = json!("North 7 (re-completed)");
    changed.as_object_mut().map(|o| o.remove("well_id"));
    let (status, body) = app
        .send(app.client.put(app.url("/api/v1/wells/N-7")).json(&changed))
        .await;
    assert_eq!(
        (status, body["name"].clone()),
        (200, json!("North 7 (re-completed)")),
        "{body}"
    );
    let (status, _) = app
        .send(
            app.client
                .put(app.url("/api/v1/wells/N-7"))
                .json(&full_well("OTHER")),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .send(
            app.client
                .put(app.url("/api/v1/wells/NONE"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 404);

    app.ingest_json(&reading("N-7", &ts(0), 40.0)).await;
    let (status, _) = app
        .send(app.client.delete(app.url("/api/v1/wells/N-7")))
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.get("/api/v1/wells/N-7").await;
    assert_eq!(status, 404);
    let (status, _) = app
        .send(app.client.delete(app.url("/api/v1/wells/N-7")))
        .await;
    assert_eq!(status, 404);
    // Its telemetry went with it: a new well of the same id starts empty.
    app.ingest_json(&reading("N-7", &ts(10), 41.0)).await;
    assert_eq!(app.all_points("N-7").await["ts"], json!([ts(10)]));
}
}

both_backends! {
#[tokio::test]
async fn an_auto_registered_well_can_be_given_full_metadata() {
    let app = spawn_app().await;
    app.ingest_json(&reading("N-1", &ts(0), 40.0)).await;
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/wells"))
                .json(&full_well("N-1")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["auto_registered"], false);
    assert_eq!(
        app.all_points("N-1").await["ts"],
        json!([ts(0)]),
        "telemetry kept"
    );
}
}

// ---------------------------------------------------------------- operations

both_backends! {
#[tokio::test]
async fn health_endpoints() {
    let app = spawn_app().await;
    let (status, body) = app.get("/health").await;
    assert_eq!((status, body["status"].clone()), (200, json!("alive")));
    let (status, body) = app.get("/health/live").await;
    assert_eq!((status, body["status"].clone()), (200, json!("live")));
    let (status, body) = app.get("/health/startup").await;
    assert_eq!((status, body["status"].clone()), (200, json!("started")));
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("ready")),
        "{body}"
    );
    assert_eq!(body["checks"]["store"]["status"], "healthy");
    assert!(body["checks"]["store"]["latency_ms"].as_f64().is_some());
}
}

both_backends! {
#[tokio::test]
async fn errors_share_one_envelope_and_requests_carry_an_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/no/such/route"))
        .send()
        .await
        .expect("request");
    assert!(response.headers().contains_key("x-request-id"));
    let (status, body) = status_json(response).await;
    assert_eq!(status, 404);
    for key in ["id", "type", "message", "details"] {
        assert!(body["error"].get(key).is_some(), "missing {key}: {body}");
    }
    let (status, body) = app
        .send(app.client.delete(app.url("/api/v1/telemetry")))
        .await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (405, json!("method_not_allowed"))
    );
}
}

both_backends! {
#[tokio::test]
async fn openapi_document_and_offline_docs_page() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/api/v1/telemetry",
        "/api/v1/wells/{id}/telemetry",
        "/api/v1/wells/latest",
        "/api/v1/wells",
        "/api/v1/wells/{id}",
        "/health/ready",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    // What the layers around the handlers answer is documented too, from the policy table
    // (Schemathesis, `scripts/schemathesis.sh`, holds every response against this document).
    use espwatch_server::auth::policy::{Access, ROUTES};
    for rule in ROUTES {
        let op = &doc["paths"][rule.path][rule.method.as_str().to_lowercase()];
        let public = rule.access == Access::Public;
        assert_eq!(op["security"] == json!([]), public, "{} {}: {op}", rule.method, rule.path);
        let mut statuses = vec!["400", "429", "500", "503"];
        if !public {
            statuses.extend(["401", "403"]);
        }
        if op.get("requestBody").is_some() {
            statuses.extend(["413", "415", "422"]);
        }
        for status in statuses {
            assert!(
                op["responses"][status]["content"]["application/json"].is_object(),
                "{} {} does not document {status}",
                rule.method,
                rule.path
            );
        }
    }
    // A registered well is its metadata plus bookkeeping, in one object the answers match.
    let well = &doc["components"]["schemas"]["WellResponse"];
    for field in ["well_id", "pump", "created_at", "updated_at", "auto_registered"] {
        assert!(well["properties"].get(field).is_some(), "{field}: {well}");
    }
    assert!(well.get("allOf").is_none(), "{well}");
    let response = app
        .client
        .get(app.url("/docs/"))
        .send()
        .await
        .expect("docs");
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("html");
    assert!(
        html.contains("swagger") || html.contains("Swagger"),
        "docs page"
    );
    assert!(
        !html.contains("cdn") && !html.contains("unpkg"),
        "docs must work offline"
    );
}
}

// ---------------------------------------------------------------- command line

#[test]
fn ingest_command_loads_files_and_writes_rejects_with_line_numbers() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let csv = work.path().join("history.csv");
    let mut text = String::from("well_id,ts,frequency_hz,motor_current_a\n");
    for i in 0..2_500 {
        if i == 1_000 {
            text.push_str(&format!("H-1,{},999,40\n", ts(i * 10)));
        } else {
            text.push_str(&format!("H-1,{},55,40.{}\n", ts(i * 10), i % 10));
        }
    }
    std::fs::write(&csv, text).expect("write csv");
    let ndjson = work.path().join("more.ndjson");
    std::fs::write(
        &ndjson,
        format!("{}\n{{broken\n", reading("H-2", &ts(0), 40.0)),
    )
    .expect("write ndjson");
    let data = work.path().join("data");
    let rejects = work.path().join("rejects.csv");
    let (ok, stdout, stderr) = run_cli(
        &[
            "ingest",
            csv.to_str().unwrap_or_default(),
            ndjson.to_str().unwrap_or_default(),
            "--data-dir",
            data.to_str().unwrap_or_default(),
            "--rejects",
            rejects.to_str().unwrap_or_default(),
            "--batch-size",
            "700",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("accepted 2500"), "{stdout}");
    assert!(stdout.contains("rejected 2"), "{stdout}");
    let rejects = std::fs::read_to_string(&rejects).expect("rejects file");
    assert!(
        rejects.contains("history.csv,1002,H-1,frequency_hz"),
        "{rejects}"
    );
    assert!(rejects.contains("more.ndjson,2,"), "{rejects}");

    // A second run stores nothing twice.
    let (ok, stdout, _) = run_cli(
        &[
            "ingest",
            csv.to_str().unwrap_or_default(),
            "--data-dir",
            data.to_str().unwrap_or_default(),
            "--rejects",
            work.path().join("r2.csv").to_str().unwrap_or_default(),
        ],
        &[],
        work.path(),
    );
    assert!(ok);
    assert!(stdout.contains("accepted 0, duplicates 2499"), "{stdout}");
}

#[test]
fn ingest_skips_label_files_and_never_creates_a_default_data_dir() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let well = work.path().join("W-1.csv");
    let mut text = String::from("well_id,ts,frequency_hz,motor_current_a\n");
    for i in 0..30 {
        text.push_str(&format!("W-1,{},55,40\n", ts(i * 10)));
    }
    std::fs::write(&well, text).expect("write");
    // What `espwatch simulate --out` writes next to the well files.
    let labels = work.path().join("labels.csv");
    std::fs::write(&labels, "well_id,file,start,end,condition\nW-1,W-1.csv,2026-11-22T08:00:00Z,2026-11-22T09:00:00Z,gas_lock\n").expect("write");
    let operations = work.path().join("operations.csv");
    std::fs::write(
        &operations,
        "well_id,start,end,operation\nW-1,2026-11-22T08:00:00Z,2026-11-22T08:10:00Z,planned_stop\n",
    )
    .expect("write");
    let files = [&labels, &operations, &well].map(|p| p.to_str().unwrap_or_default().to_owned());

    // Without --data-dir, --database-url or --url: refused, and nothing is created here.
    let mut args = vec!["ingest"];
    args.extend(files.iter().map(String::as_str));
    let (ok, stdout, stderr) = run_cli(&args, &[], work.path());
    assert!(!ok && stderr.contains("--data-dir"), "{stdout}{stderr}");
    assert!(!work.path().join("espwatch-data").exists());
    let (ok, _, stderr) = run_cli(&["wells", "list"], &[], work.path());
    assert!(!ok && stderr.contains("--data-dir"), "{stderr}");
    assert!(!work.path().join("espwatch-data").exists());

    // `ingest sim/*.csv`: the label files are skipped with a note, the run succeeds.
    let data = work.path().join("data");
    args.extend(["--data-dir", data.to_str().unwrap_or_default()]);
    let (ok, stdout, stderr) = run_cli(&args, &[], work.path());
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("accepted 30, duplicates 0, rejected 0"),
        "{stdout}"
    );
    assert!(stdout.contains("skipped 2 file(s)"), "{stdout}");
    assert!(
        stderr.contains("skipping") && stderr.contains("labels.csv"),
        "{stderr}"
    );
}

#[test]
fn ingest_and_wells_import_to_a_running_server() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let server = ChildServer::start(&work.path().join("data"));
    let wells = work.path().join("wells");
    std::fs::create_dir(&wells).expect("mkdir");
    std::fs::write(wells.join("n7.json"), full_well("N-7").to_string()).expect("write");
    std::fs::write(wells.join("n8.json"), full_well("N-8").to_string()).expect("write");
    let base = format!("http://{}", server.address);
    let key = server.api_key.clone().expect("key");
    let with_key = [("ESPWATCH_API_KEY", key.as_str())];
    // Without a key the server refuses, and the command says so.
    let (ok, stdout, stderr) = run_cli(
        &[
            "wells",
            "import",
            wells.to_str().unwrap_or_default(),
            "--url",
            &base,
        ],
        &[],
        work.path(),
    );
    assert!(
        !ok && format!("{stdout}{stderr}").contains("401"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, stderr) = run_cli(
        &[
            "wells",
            "import",
            wells.to_str().unwrap_or_default(),
            "--url",
            &base,
        ],
        &with_key,
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("2 well(s) imported"), "{stdout}");
    let (ok, stdout, _) = run_cli(
        &[
            "wells",
            "import",
            wells.to_str().unwrap_or_default(),
            "--url",
            &base,
        ],
        &with_key,
        work.path(),
    );
    assert!(ok && stdout.contains("replaced"), "{stdout}");

    let file = work.path().join("n7.ndjson");
    let lines: Vec<String> = (0..300)
        .map(|i| reading("N-7", &ts(i * 10), 40.0).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    let (ok, stdout, stderr) = run_cli(
        &[
            "ingest",
            file.to_str().unwrap_or_default(),
            "--url",
            &base,
            "--batch-size",
            "64",
            "--api-key",
            &key,
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 300"), "{stdout}");
}

#[test]
fn config_show_layers_file_environment_and_flags() {
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        work.path().join("espwatch.toml"),
        "listen = \"127.0.0.1:9000\"\nmax_future_secs = 60\nbody_limit_bytes = 100000\n",
    )
    .expect("write config");
    let (ok, stdout, stderr) = run_cli(
        &["config", "show", "--data-dir", "/tmp/x"],
        &[
            ("ESPWATCH_MAX_FUTURE_SECS", "120"),
            ("ESPWATCH_AUTO_REGISTER_WELLS", "false"),
            (
                "ESPWATCH_JWT_SECRET",
                "a-secret-that-must-never-be-printed-0123456789",
            ),
        ],
        work.path(),
    );
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("must-never-be-printed"), "{stdout}");
    assert!(stdout.contains("jwt_secret = \"<redacted>\""), "{stdout}");
    assert!(
        stdout.contains("listen = \"127.0.0.1:9000\""),
        "file: {stdout}"
    );
    assert!(
        stdout.contains("max_future_secs = 120"),
        "env over file: {stdout}"
    );
    assert!(stdout.contains("auto_register_wells = false"), "{stdout}");
    assert!(stdout.contains("data_dir = \"/tmp/x\""), "flag: {stdout}");
    assert!(stdout.contains("body_limit_bytes = 100000"), "{stdout}");

    std::fs::write(
        work.path().join("espwatch.toml"),
        "listen = \"127.0.0.1:9000\"\ncolour = \"red\"\n",
    )
    .expect("write");
    let (ok, _, stderr) = run_cli(&["config", "show"], &[], work.path());
    assert!(!ok);
    assert!(
        stderr.contains("colour"),
        "unknown keys are named: {stderr}"
    );

    // `timescaledb` is auto|require|off; anything else is refused, naming key and choices.
    let clean = tempfile::tempdir().expect("temp dir");
    let (ok, stdout, stderr) = run_cli(
        &["config", "show"],
        &[("ESPWATCH_TIMESCALEDB", "require")],
        clean.path(),
    );
    assert!(
        ok && stdout.contains("timescaledb = \"require\""),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = run_cli(
        &["config", "show"],
        &[("ESPWATCH_TIMESCALEDB", "yes")],
        clean.path(),
    );
    assert!(!ok);
    assert!(
        stderr.to_lowercase().contains("timescaledb")
            && stderr.contains("auto")
            && stderr.contains("require"),
        "invalid timescaledb value: {stderr}"
    );
}

#[tokio::test]
async fn postgres_from_the_command_line_migrate_ingest_wells_and_config() {
    init();
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let url = db.url.clone();
    let (ok, stdout, stderr) = run_cli(&["migrate", "--database-url", &url], &[], work.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("schema is current"), "{stdout}");

    let file = work.path().join("pg.ndjson");
    let lines: Vec<String> = (0..120)
        .map(|i| reading("PG-1", &ts(i * 10), 40.0).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write");
    // Local mode through the environment variable, as a deployment would configure it.
    let (ok, stdout, stderr) = run_cli(
        &["ingest", file.to_str().unwrap_or_default()],
        &[("ESPWATCH_DATABASE_URL", &url)],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) =
        run_cli(&["wells", "list", "--database-url", &url], &[], work.path());
    assert!(ok && stdout.trim() == "PG-1", "{stdout}{stderr}");

    let secret = url.replacen("postgres@", "postgres:hunter2@", 1);
    let (ok, stdout, _) = run_cli(
        &["config", "show"],
        &[("ESPWATCH_DATABASE_URL", &secret)],
        work.path(),
    );
    assert!(ok, "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("postgres:<redacted>@"), "{stdout}");
}

/// Issue 23: `ingest --parallel N` loads files side by side (PostgreSQL commits them on
/// several connections) with the same counts and per-row rejects as one at a time.
fn ingest_in_parallel(work: &std::path::Path, target: &[&str], env: &[(&str, &str)]) {
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for f in 0..6 {
        let path = work.join(format!("par-{f}.csv"));
        let mut text = String::from("well_id,ts,frequency_hz,motor_current_a\n");
        for i in 0..500 {
            let frequency = if i == 100 + f { 999 } else { 55 };
            text.push_str(&format!("P-{f},{},{frequency},40\n", ts(i * 10)));
        }
        std::fs::write(&path, text).expect("write");
        expected.push(format!("{},{},P-{f},frequency_hz", path.display(), 102 + f));
        files.push(path.to_str().unwrap_or_default().to_owned());
    }
    let rejects = work.join("par-rejects.csv");
    let mut args: Vec<&str> = vec!["ingest"];
    args.extend(files.iter().map(String::as_str));
    args.extend(target);
    args.extend([
        "--parallel",
        "4",
        "--batch-size",
        "64",
        "--rejects",
        rejects.to_str().unwrap_or_default(),
    ]);
    let (ok, stdout, stderr) = run_cli(&args, env, work);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("accepted 2994, duplicates 0, rejected 6"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&rejects).expect("rejects file");
    let mut rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.splitn(5, ',').take(4).collect::<Vec<_>>().join(","))
        .collect();
    rows.sort();
    expected.sort();
    assert_eq!(rows, expected);
    // Again: everything is a duplicate, nothing is stored twice.
    let (ok, stdout, stderr) = run_cli(&args, env, work);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("accepted 0, duplicates 2994, rejected 6"),
        "{stdout}"
    );
}

#[test]
fn ingest_in_parallel_keeps_counts_and_rejects_embedded() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest_in_parallel(
        work.path(),
        &["--data-dir", data.to_str().unwrap_or_default()],
        &[],
    );
}

#[tokio::test]
async fn ingest_in_parallel_keeps_counts_and_rejects_postgres() {
    init();
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    ingest_in_parallel(work.path(), &["--database-url", &db.url], &[]);
}

/// Issue 23: without `--parallel`, a bulk load into PostgreSQL loads as many files at once as
/// the store has writer connections: `database_writers` as configured, not the built-in 4.
#[tokio::test]
async fn ingest_into_postgres_loads_as_many_files_at_once_as_configured_writers() {
    init();
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = vec!["ingest".into()];
    for f in 0..3 {
        let path = work.path().join(format!("writers-{f}.csv"));
        let mut text = String::from("well_id,ts,motor_current_a\n");
        for i in 0..20 {
            text.push_str(&format!("WR-{f},{},40\n", ts(i * 10)));
        }
        std::fs::write(&path, text).expect("write");
        args.push(path.to_str().unwrap_or_default().to_owned());
    }
    args.extend(["--database-url".to_owned(), db.url.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = run_cli(&args, &[("ESPWATCH_DATABASE_WRITERS", "2")], work.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("accepted 60,"), "{stdout}");
    assert!(stdout.contains("  2 files loaded at once"), "{stdout}");
    // The default, 4 writers: all three files at once.
    let (ok, stdout, stderr) = run_cli(&args, &[], work.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("duplicates 60,"), "{stdout}");
    assert!(stdout.contains("  3 files loaded at once"), "{stdout}");
}

/// Issue 23, bulk load into PostgreSQL: `espwatch ingest --database-url` (files side by side by
/// default) stores each reading once however often it is run, keeps a file's good rows around
/// its bad ones (rejects with their line numbers), and leaves the rollups up to date: the
/// load defers them and brings them up to date once, when it closes the store.
#[tokio::test]
async fn ingest_into_postgres_stores_each_reading_once_and_leaves_rollups_current() {
    init();
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = vec!["ingest".into()];
    let mut expected_rejects = Vec::new();
    for f in 0..5 {
        let path = work.path().join(format!("bulk-{f}.csv"));
        let mut text = String::from("well_id,ts,frequency_hz,motor_current_a\n");
        for i in 0..400 {
            // Row 2 + i of the file; row 50 + f has an impossible frequency.
            let frequency = if i == 48 + f { 999 } else { 55 };
            text.push_str(&format!("B-{f},{},{frequency},4{}\n", ts(i * 10), i % 10));
        }
        std::fs::write(&path, text).expect("write");
        expected_rejects.push(format!("{},{},B-{f},frequency_hz", path.display(), 50 + f));
        args.push(path.to_str().unwrap_or_default().to_owned());
    }
    let rejects = work.path().join("bulk-rejects.csv");
    args.extend(
        [
            "--database-url",
            &db.url,
            "--batch-size",
            "50",
            "--rejects",
            rejects.to_str().unwrap_or_default(),
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for run in ["first", "second"] {
        let (ok, stdout, stderr) = run_cli(&args, &[], work.path());
        assert!(ok, "{stdout}{stderr}");
        let counts = if run == "first" {
            "accepted 1995, duplicates 0, rejected 5"
        } else {
            "accepted 0, duplicates 1995, rejected 5"
        };
        assert!(stdout.contains(counts), "{run} run: {stdout}");
        let text = std::fs::read_to_string(&rejects).expect("rejects file");
        let mut rows: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.splitn(5, ',').take(4).collect::<Vec<_>>().join(","))
            .collect();
        rows.sort();
        assert_eq!(rows, expected_rejects, "{run} run");

        let store = espwatch_store_postgres::PostgresStore::open(
            &db.url,
            espwatch_store_postgres::PostgresOptions::default(),
        )
        .await
        .expect("open");
        use espwatch_store::Store as _;
        let era = espwatch_core::TimeRange {
            from: espwatch_core::Timestamp::from_secs(1_767_225_600 - 86_400),
            to: espwatch_core::Timestamp::from_secs(1_767_225_600 + 86_400),
        };
        for f in 0..5 {
            let well = espwatch_core::WellId::parse(&format!("B-{f}")).expect("well id");
            let stored = store.read_range(&well, era).await.expect("read");
            assert_eq!(
                stored.len(),
                399,
                "{run} run, well B-{f}: each reading once"
            );
        }
        // Queued runs of minutes whose rollups lag the raw rows: none once the load is done.
        let stats = store.stats().await.expect("stats");
        assert_eq!(
            stats.readings_in_log, 0,
            "{run} run: rollup work left queued"
        );
        store.close().await.expect("close");
    }
}

// ---------------------------------------------------------------- overload (issue 17, bug 4)

/// A body that sends `first`, then waits for `release` before sending `rest`.
fn held_body(
    first: String,
    release: tokio::sync::oneshot::Receiver<()>,
    rest: String,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    struct Held {
        first: Option<String>,
        release: Option<tokio::sync::oneshot::Receiver<()>>,
        rest: Option<String>,
    }
    impl futures_core::Stream for Held {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            use std::future::Future;
            if let Some(first) = self.first.take() {
                return std::task::Poll::Ready(Some(Ok(first)));
            }
            if let Some(release) = self.release.as_mut() {
                match std::pin::Pin::new(release).poll(cx) {
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                    std::task::Poll::Ready(_) => self.release = None,
                }
            }
            std::task::Poll::Ready(self.rest.take().map(Ok))
        }
    }
    Held {
        first: Some(first),
        release: Some(release),
        rest: Some(rest),
    }
}

/// The wait for a decoder has a deadline: with one decoder, a short deadline and a byte budget
/// that never refuses, many concurrent large batches get some 503 `overloaded` + Retry-After
/// instead of all queueing; every acknowledged batch is fully stored, no refused one at all.
#[tokio::test]
async fn ingest_decode_wait_past_deadline_is_503_and_writes_nothing() {
    let app = spawn_app_with(|c| {
        c.ingest_max_inflight_bytes = 1 << 30;
        c.ingest_decoders = 1;
        c.ingest_decode_wait_ms = 20;
    })
    .await;
    const BATCHES: usize = 32;
    const READINGS: i64 = 4_000;
    let mut tasks = Vec::new();
    for b in 0..BATCHES {
        let well = format!("DLN-{b}");
        let batch: Vec<Value> = (0..READINGS)
            .map(|i| reading(&well, &ts(i), 40.0))
            .collect();
        let request = app
            .client
            .post(app.url("/api/v1/telemetry"))
            .json(&Value::Array(batch));
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let (status, body) = status_json(response).await;
            (well, status, retry_after, body)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for (well, status, retry_after, body) in results {
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["accepted"].as_i64(), Some(READINGS), "{body}");
                assert_eq!(
                    app.all_points(&well).await["ts"].as_array().map(Vec::len),
                    Some(READINGS as usize),
                    "{well}"
                );
            }
            503 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                assert_eq!(body["error"]["type"], "overloaded", "{body}");
                assert_eq!(app.get(&format!("/api/v1/wells/{well}")).await.0, 404);
            }
            other => panic!("{well}: {other} {body}"),
        }
    }
    eprintln!("{ok} acknowledged, {refused} refused (503)");
    assert!(ok >= 1, "one decoder always makes progress");
    assert!(refused >= 1, "queueing past the deadline is refused");
    let (_, ready) = app.get("/health/ready").await;
    assert!(
        ready["checks"]["ingest"]["rejected_overload_total"].as_u64() >= Some(refused),
        "{ready}"
    );
}

/// Ingestion in flight is bounded: while the budget is taken, a further batch is answered at
/// once with 503 + Retry-After (before its body is read) instead of queueing; it succeeds when
/// retried, and everything acknowledged is stored.
#[tokio::test]
async fn ingest_over_capacity_is_503_with_retry_after_at_once() {
    let app = spawn_app_with(|c| c.ingest_max_inflight_bytes = 4096).await;
    // A: a body of unknown length reserves the body limit (here: the whole budget), and is
    // held half-sent.
    let held: Vec<Value> = (0..20).map(|i| reading("OVL-A", &ts(i), 40.0)).collect();
    let text = Value::Array(held).to_string();
    let (first, rest) = text.split_at(text.len() / 2);
    let (release, released) = tokio::sync::oneshot::channel();
    let request = app
        .client
        .post(app.url("/api/v1/telemetry"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(held_body(
            first.to_owned(),
            released,
            rest.to_owned(),
        )));
    let a = tokio::spawn(async move { status_json(request.send().await.unwrap()).await });
    let mut saturated = false;
    for _ in 0..200 {
        let (_, ready) = app.get("/health/ready").await;
        if ready["checks"]["ingest"]["inflight_bytes"].as_u64() > Some(0) {
            assert_eq!(ready["checks"]["ingest"]["status"], "saturated", "{ready}");
            saturated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saturated, "the held request was admitted");

    // B, C, ...: refused at once, with Retry-After, nothing stored.
    let batch = json!([
        reading("OVL-B", &ts(0), 41.0),
        reading("OVL-B", &ts(10), 42.0)
    ]);
    let mut waits = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        let response = app
            .client
            .post(app.url("/api/v1/telemetry"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        waits.push(started.elapsed());
        assert_eq!(response.status(), 503);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "overloaded", "{body}");
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    eprintln!(
        "time to 503 under overload: median {median:?}, max {:?}",
        waits[waits.len() - 1]
    );
    assert!(median < Duration::from_millis(500), "{median:?}");
    assert_eq!(app.get("/api/v1/wells/OVL-B").await.0, 404);

    // A completes; B retried is accepted; both are stored; the budget is free again.
    release.send(()).unwrap();
    let (status, body) = a.await.unwrap();
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(20)),
        "{body}"
    );
    let (status, body) = app.ingest_json(&batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    assert_eq!(
        app.all_points("OVL-A").await["ts"].as_array().map(Vec::len),
        Some(20)
    );
    assert_eq!(
        app.all_points("OVL-B").await["ts"].as_array().map(Vec::len),
        Some(2)
    );
    let (_, ready) = app.get("/health/ready").await;
    let ingest = &ready["checks"]["ingest"];
    assert_eq!(ingest["inflight_bytes"], 0, "{ready}");
    assert_eq!(ingest["rejected_overload_total"], 21, "{ready}");
    app.stop().await;
}

// ---------------------------------------------------------------- store check / repair

/// Issue 17, bug 6: `espwatch store check` names a damaged segment the open does not look at
/// (an older one) and fails; `store repair` quarantines it (bytes kept); afterwards check is
/// clean and every read works again.
#[tokio::test]
async fn store_check_names_damage_and_repair_quarantines_it() {
    use espwatch_core::{TimeRange, Timestamp, WellId};
    use espwatch_store::{EmbeddedOptions, EmbeddedStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let well = WellId::parse("S-1").unwrap();
    let t0 = DAMAGED_WINDOW_START;
    store_with_a_damaged_older_segment(&data, "S-1").await;
    let work = tempfile::tempdir().unwrap();
    let dir_s = data.to_str().unwrap();
    let (ok, stdout, stderr) = run_cli(&["store", "check", "--data-dir", dir_s], &[], work.path());
    assert!(!ok, "damage must fail the check: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("DAMAGED segment (S-1, {t0})")),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run_cli(&["store", "repair", "--data-dir", dir_s], &[], work.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("quarantined 1 damaged item"), "{stdout}");
    let (ok, stdout, stderr) = run_cli(&["store", "check", "--data-dir", dir_s], &[], work.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("in quarantine: segment (S-1"), "{stdout}");
    // The check says how many segments it also checked by their recorded checksum (issue 20):
    // the one left has its checksum; without it (as a release before checksums wrote it) the
    // check says so and how to record it.
    assert!(
        stdout.contains("also checked against their recorded checksum: 1; without one: 0"),
        "{stdout}"
    );
    {
        let db = rusqlite::Connection::open(data.join("espwatch.db")).unwrap();
        db.execute("UPDATE segments SET checksum = NULL", [])
            .unwrap();
    }
    let (ok, stdout, stderr) = run_cli(&["store", "check", "--data-dir", dir_s], &[], work.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("also checked against their recorded checksum: 0; without one: 1"),
        "{stdout}"
    );
    assert!(stdout.contains("`espwatch store compact`"), "{stdout}");

    let store = EmbeddedStore::open(&data, EmbeddedOptions::default()).unwrap();
    let all = TimeRange {
        from: Timestamp(0),
        to: Timestamp(i64::MAX),
    };
    let points = store.read_range(&well, all).await.unwrap();
    assert_eq!(points.len(), 1, "the undamaged window is still there");
    store.close().await.unwrap();
}

// ---------------------------------------------------------------- store stats / compact / backup / restore

/// Issue 20: an operator reads the bytes per reading, backs the data directory up, restores it
/// elsewhere and compacts the restored copy; every reading survives each step.
#[tokio::test]
async fn store_stats_backup_restore_and_compact_keep_every_reading() {
    use espwatch_core::{Field, Measurements, Reading, TimeRange, Timestamp, WellId};
    use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let well = WellId::parse("S-2").unwrap();
    let t0 = 1_767_225_600_000_000i64;
    // Two days at one minute: 12 windows, the last one still open (written fast).
    let readings: Vec<Reading> = (0..2 * 1440i64)
        .map(|m| {
            let mut values = Measurements::empty();
            values.set(Field::FrequencyHz, Some(((5000 + m % 9) as f64) / 100.0));
            values.set(
                Field::IntakePressurePsi,
                Some(((8500 + m % 17) as f64) / 10.0),
            );
            Reading {
                well_id: well.clone(),
                ts: Timestamp(t0 + m * 60_000_000),
                values,
            }
        })
        .collect();
    let store = EmbeddedStore::open(&data, EmbeddedOptions::default()).unwrap();
    store
        .append(readings, AppendOptions::default())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    let all = TimeRange {
        from: Timestamp(0),
        to: Timestamp(i64::MAX),
    };
    let original = store.read_range(&well, all).await.unwrap();
    store.close().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let stats = |dir: &std::path::Path| -> Value {
        let (ok, stdout, stderr) = run_cli(
            &[
                "store",
                "stats",
                "--json",
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            &[],
            work.path(),
        );
        assert!(ok, "{stdout}{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let before = stats(&data);
    assert_eq!(before["readings"], 2880);
    assert_eq!(before["segments"], 12);
    assert_eq!(before["compact_segments"], 11);
    assert!(before["bytes_per_reading"].as_f64().unwrap() > 0.0);

    let backup = dir.path().join("backup");
    let restored = dir.path().join("restored");
    let (ok, stdout, stderr) = run_cli(
        &[
            "store",
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            backup.to_str().unwrap(),
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("2880 readings"), "{stdout}");
    let (ok, stdout, stderr) = run_cli(
        &[
            "store",
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stats(&restored)["readings"], 2880);
    // Restoring over existing data is refused.
    let (ok, _, _) = run_cli(
        &[
            "store",
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
        work.path(),
    );
    assert!(!ok, "restore into a non-empty directory must fail");

    let (ok, stdout, stderr) = run_cli(
        &["store", "compact", "--data-dir", restored.to_str().unwrap()],
        &[],
        work.path(),
    );
    assert!(ok, "{stdout}{stderr}");
    let after = stats(&restored);
    assert_eq!(after["compact_segments"], 12, "{after}");
    assert_eq!(after["readings"], 2880);

    let store = EmbeddedStore::open(&restored, EmbeddedOptions::default()).unwrap();
    let back = store.read_range(&well, all).await.unwrap();
    assert_eq!(back.len(), original.len());
    assert!(back.iter().zip(&original).all(|(a, b)| a.0 == b.0
        && a.1.get(Field::FrequencyHz) == b.1.get(Field::FrequencyHz)
        && a.1.get(Field::IntakePressurePsi) == b.1.get(Field::IntakePressurePsi)));
    store.close().await.unwrap();
}

/// Issue 20: incremental backups from the command line. A server runs and ingests; the
/// operator takes a full backup into a chain, more readings arrive (a new well, a further day,
/// late readings into an old window), an incremental backup copies only what changed; the
/// chain restores into fresh directories whole and as of the first backup (`--until`), and a
/// server on each restored directory answers exactly the readings of that instant.
#[test]
fn store_backup_incremental_chain_restores_whole_and_to_a_point_in_time() {
    init();
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let chain = work.path().join("chain");
    let dir = data.to_str().expect("utf-8");
    let key = cli_api_key(&["--data-dir", dir], "admin");
    // Checkpoints every second, so the first backup holds sealed segments a delta can skip.
    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir],
        &[("ESPWATCH_CHECKPOINT_INTERVAL_SECS", "1")],
    );
    server.api_key = Some(key);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let http = server.client();
    let url = server.url("/api/v1/telemetry");
    // One reading a minute from `from` (seconds after 2026-01-01), `n` of them, offset by
    // `offset` seconds; the current encodes the phase so values can be told apart.
    let send = |well: &str, from: i64, n: i64, offset: i64, current: f64| {
        let batch: Vec<Value> = (0..n)
            .map(|m| reading(well, &ts(from + m * 60 + offset), current))
            .collect();
        let (status, body) = runtime.block_on(async {
            status_json(http.post(&url).json(&batch).send().await.expect("post")).await
        });
        assert_eq!(
            (status, body["accepted"].as_i64()),
            (200, Some(n)),
            "{body}"
        );
    };
    let stats = |dir: &std::path::Path| -> Value {
        let (ok, stdout, stderr) = run_cli(
            &[
                "store",
                "stats",
                "--json",
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            &[],
            work.path(),
        );
        assert!(ok, "{stdout}{stderr}");
        serde_json::from_str(&stdout).expect("stats json")
    };
    let backup = || {
        let (ok, stdout, stderr) = run_cli(
            &[
                "store",
                "backup",
                "--incremental",
                "--data-dir",
                dir,
                "--to",
                chain.to_str().unwrap(),
            ],
            &[],
            work.path(),
        );
        assert!(ok, "{stdout}{stderr}");
        stdout
    };

    // Phase 1: two wells, two days each (12 four-hour windows a well), sealed.
    send("C-1", 0, 2880, 0, 41.0);
    send("C-2", 0, 2880, 0, 42.0);
    let mut sealed = false;
    for _ in 0..100 {
        let s = stats(&data);
        if s["segments"] == 24 && s["readings"] == 5760 {
            sealed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sealed, "the server did not checkpoint: {}", stats(&data));
    let first = backup();
    assert!(
        first.contains("#0 full") && first.contains("5760 readings"),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(20));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let between = espwatch_core::Timestamp(between).to_rfc3339();
    std::thread::sleep(Duration::from_millis(20));

    // Phase 2: a new well, a third day of C-1, and late readings into C-1's first window.
    send("C-3", 0, 1440, 0, 43.0);
    send("C-1", 2 * 86_400, 1440, 0, 44.0);
    send("C-1", 0, 10, 30, 45.0);
    let second = backup();
    assert!(
        second.contains("#1 incremental") && second.contains("8650 readings"),
        "{second}"
    );
    let listed: Value = serde_json::from_str(
        &std::fs::read_to_string(chain.join("CHAIN.json")).expect("CHAIN.json"),
    )
    .expect("chain json");
    let entries = listed["backups"].as_array().expect("backups");
    assert_eq!(entries.len(), 2, "{listed}");
    assert_eq!(entries[0]["segments_copied"], 24, "{listed}");
    // When the server sealed phase 2 already, the delta holds C-3's 6 windows, C-1's 6 new
    // ones, its window with the late readings and its last window of day 2 (rewritten compact
    // once closed), perhaps C-2's last window; never C-2's and C-1's other windows. Whatever
    // was not sealed yet travels in the log batches.
    let delta_segments = entries[1]["segments_copied"].as_u64().expect("count");
    assert!(delta_segments <= 15, "{listed}");
    assert!(
        !chain.join("0001").join("espwatch.db").exists(),
        "a delta holds no full copy of the telemetry database"
    );
    server.terminate();

    let restore = |target: &std::path::Path, until: Option<&str>| {
        let mut args = vec![
            "store",
            "restore",
            "--from",
            chain.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ];
        if let Some(until) = until {
            args.extend(["--until", until]);
        }
        run_cli(&args, &[], work.path())
    };
    // Whole chain.
    let whole = work.path().join("whole");
    let (ok, stdout, stderr) = restore(&whole, None);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("8650 readings from 2 backup(s)"),
        "{stdout}"
    );
    // As of the first backup.
    let past = work.path().join("past");
    let (ok, stdout, stderr) = restore(&past, Some(&between));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("5760 readings from 1 backup(s)"),
        "{stdout}"
    );
    assert_eq!(stats(&past)["readings"], 5760);
    // Before the first backup there is nothing to restore; --until needs a chain.
    let (ok, stdout, stderr) = restore(&work.path().join("none"), Some("2026-01-01T00:00:00Z"));
    assert!(
        !ok && stderr.contains("no backup of the chain"),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = run_cli(
        &[
            "store",
            "restore",
            "--from",
            chain.join("0000").to_str().unwrap(),
            "--data-dir",
            work.path().join("plain").to_str().unwrap(),
            "--until",
            &between,
        ],
        &[],
        work.path(),
    );
    assert!(!ok && stderr.contains("needs a backup chain"), "{stderr}");
    // The full backup of the chain is a plain backup too.
    let (ok, stdout, stderr) = run_cli(
        &[
            "store",
            "restore",
            "--from",
            chain.join("0000").to_str().unwrap(),
            "--data-dir",
            work.path().join("plain").to_str().unwrap(),
        ],
        &[],
        work.path(),
    );
    assert!(ok && stdout.contains("5760 readings"), "{stdout}{stderr}");

    // A server on each restored directory answers the readings of its instant.
    let points = |server: &ChildServer, well: &str| -> Value {
        let url = server.url(&format!(
            "/api/v1/wells/{well}/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z&max_points=1000000"
        ));
        let (status, body) = runtime.block_on(async {
            status_json(server.client().get(&url).send().await.expect("get")).await
        });
        assert!(status == 200 || status == 404, "{status} {body}");
        body
    };
    let currents = |body: &Value| -> Vec<f64> {
        body["fields"]["motor_current_a"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let on_whole = ChildServer::start(&whole);
    let now_c1 = points(&on_whole, "C-1");
    let c1 = currents(&now_c1);
    assert_eq!(c1.len(), 2880 + 1440 + 10);
    assert_eq!(c1.iter().filter(|&&c| c == 45.0).count(), 10);
    assert_eq!(c1.iter().filter(|&&c| c == 44.0).count(), 1440);
    assert_eq!(c1[1], 45.0, "late readings in their place");
    assert_eq!(currents(&points(&on_whole, "C-3")), vec![43.0; 1440]);
    assert_eq!(currents(&points(&on_whole, "C-2")), vec![42.0; 2880]);
    drop(on_whole);

    let on_past = ChildServer::start(&past);
    let past_c1 = currents(&points(&on_past, "C-1"));
    assert_eq!(past_c1, vec![41.0; 2880], "C-1 as of the first backup");
    assert_eq!(currents(&points(&on_past, "C-2")), vec![42.0; 2880]);
    assert!(
        currents(&points(&on_past, "C-3")).is_empty(),
        "C-3 arrived after the first backup"
    );
}

/// Issue 22: `espwatch.example.toml` is generated from the configuration struct's
/// documentation (`espwatch config example`) and stays in step with it: this fails when a
/// setting, its documentation or its default changes without the file being regenerated.
#[test]
fn the_example_configuration_is_the_generated_one_and_holds_the_defaults() {
    let work = tempfile::tempdir().expect("temp dir");
    let committed_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../espwatch.example.toml");
    let committed = std::fs::read_to_string(&committed_path).expect("espwatch.example.toml");
    let (ok, generated, stderr) = run_cli(&["config", "example"], &[], work.path());
    assert!(ok, "{stderr}");
    assert!(
        generated == committed,
        "espwatch.example.toml is stale: regenerate it with \
         `cargo run -p espwatch -- config example > espwatch.example.toml`"
    );
    // Every setting is in it, with its documentation just above.
    for (key, doc) in espwatch_app::config::documented_keys() {
        let line = committed
            .lines()
            .position(|l| l == format!("# {key} =") || l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing"));
        let first_doc_line = doc.lines().next().unwrap_or_default();
        let above = committed.lines().nth(line - doc.lines().count()).unwrap();
        assert_eq!(
            above.trim_end(),
            format!("# {first_doc_line}").trim_end(),
            "{key}"
        );
    }
    // Read as a configuration file it gives exactly the defaults.
    let (ok, from_file, stderr) = run_cli(
        &[
            "config",
            "show",
            "--config",
            committed_path.to_str().unwrap(),
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let (ok, defaults, stderr) = run_cli(&["config", "show"], &[], work.path());
    assert!(ok, "{stderr}");
    assert_eq!(from_file, defaults);
}
