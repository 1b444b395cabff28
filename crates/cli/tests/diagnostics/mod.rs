//! Online diagnostics and alarms through HTTP: a simulated well with a closed valve streamed
//! in, the alarm raised, acknowledged and cleared; the legacy decision tree.

use std::time::Duration;

use espwatch_core::sim::fleet::{PinnedCondition, PinnedWell};
use espwatch_core::sim::{FleetConfig, WellSimulator, csv, plan_fleet};
use espwatch_core::{Condition, Timestamp};
use serde_json::{Value, json};

use crate::support::*;

const HOUR: i64 = 3_600_000_000;

/// CSV bodies of one simulated well: readings before `split` hours, and the rest.
pub(crate) fn closed_valve_well(id: &str) -> (Value, Vec<u8>, Vec<u8>) {
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = Timestamp(now - 13 * HOUR - now.rem_euclid(60_000_000));
    let mut config = FleetConfig::new(3, 0, start, 13 * HOUR);
    config.normal_life = false;
    config.pinned = vec![PinnedWell {
        id: Some(id.to_owned()),
        pump: Some("RX-538-2600".into()),
        interval: Some("60s".into()),
        conditions: vec![PinnedCondition {
            condition: Condition::ClosedValve,
            start: "9h".into(),
            end: Some("10h".into()),
            severity: Some(0.5),
        }],
        ..PinnedWell::default()
    }];
    let plan = plan_fleet(&config).unwrap();
    let well = &plan.wells[0];
    let mut sim = WellSimulator::new(well, config.start, config.duration_micros);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    csv::write_header(&mut before);
    csv::write_header(&mut after);
    let split = start.0 + 9 * HOUR + 20 * 60_000_000;
    while let Some(s) = sim.next_sample() {
        if let Some(m) = &s.measured {
            let out = if s.ts.0 < split {
                &mut before
            } else {
                &mut after
            };
            csv::write_row(out, id, s.ts, m);
        }
    }
    (serde_json::to_value(&well.meta).unwrap(), before, after)
}

pub(crate) async fn wait_for_alarm(app: &TestApp, query: &str) -> Value {
    for _ in 0..200 {
        let (status, body) = app.get(&format!("/api/v1/alarms?{query}")).await;
        assert_eq!(status, 200, "{body}");
        if let Some(a) = body["alarms"].as_array().and_then(|a| a.first()) {
            return a.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no alarm matching {query}");
}

both_backends! {
#[tokio::test]
async fn alarm_lifecycle_raised_acknowledged_cleared() {
    let app = spawn_app().await;
    let (meta, before, after) = closed_valve_well("DIAG-1");
    let (status, body) = app
        .post("/api/v1/wells", "application/json", meta.to_string())
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200, "{body}");

    let alarm = wait_for_alarm(&app, "well_id=DIAG-1&state=raised").await;
    assert_eq!(alarm["condition"], "closed_valve");
    assert_eq!(alarm["severity"], "critical");
    assert!(
        alarm["detail"]["action"]
            .as_str()
            .unwrap()
            .contains("valve")
    );
    let id = alarm["id"].as_i64().unwrap();

    // The current diagnosis carries the open episode with evidence.
    let (status, diag) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(status, 200, "{diag}");
    assert_eq!(diag["trained"], true);
    assert_eq!(diag["open_episodes"][0]["condition"], "closed_valve");

    // Acknowledge: who (the signed-in operator, whatever the body claims) and why; bad bodies
    // are refused precisely.
    create_user(
        app.security.as_ref(),
        "operator-7",
        "night shift on the north pad",
        espwatch_core::access::Role::Operator,
        None,
    )
    .await;
    let (operator, _) = app
        .user_client("operator-7", "night shift on the north pad")
        .await;
    let ack = |body: Value| {
        operator
            .post(app.url(&format!("/api/v1/alarms/{id}/ack")))
            .json(&body)
    };
    let (status, body) = app.send(ack(json!({"comment": "x".repeat(2001)}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.send(ack(json!({"note": "unknown field"}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app
        .send(ack(json!({"by": "someone-else", "comment": "crew called"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by"], "operator-7");
    assert_eq!(body["comment"], "crew called");
    let (_, audit) = app.get("/api/v1/audit?kind=alarm_ack").await;
    assert_eq!(audit["records"][0]["actor"], "user:operator-7", "{audit}");
    assert_eq!(audit["records"][0]["detail"]["alarm"], id, "{audit}");
    // Issue 18 item 12: a second acknowledgement is 409 and the first one stands.
    let (status, body) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/alarms/{id}/ack")))
                .json(&json!({"comment": "overwritten?"})),
        )
        .await;
    assert_eq!((status, body["error"]["type"].clone()), (409, json!("alarm_already_acknowledged")), "{body}");
    let (_, alarms) = app.get("/api/v1/alarms?state=acknowledged").await;
    let alarm = alarms["alarms"].as_array().unwrap().iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!((alarm["acknowledged_by"].clone(), alarm["comment"].clone()), (json!("operator-7"), json!("crew called")), "{alarm}");
    let (status, _) = app
        .send(
            app.client
                .post(app.url("/api/v1/alarms/999999/ack"))
                .json(&json!({"by": "x"})),
        )
        .await;
    assert_eq!(status, 404);

    // The valve opens; healthy running clears the alarm. One alarm, not a storm.
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", after).await;
    assert_eq!(status, 200, "{body}");
    let cleared = wait_for_alarm(&app, "well_id=DIAG-1&state=cleared").await;
    assert_eq!(cleared["id"].as_i64(), Some(id));
    assert!(cleared["ended_at"].is_string());
    let (_, all) = app.get("/api/v1/alarms?well_id=DIAG-1").await;
    let conditions: Vec<&str> = all["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["condition"].as_str().unwrap())
        .collect();
    assert_eq!(conditions, ["closed_valve"], "{all}");
    let (status, events) = app.get("/api/v1/wells/DIAG-1/events").await;
    assert_eq!(status, 200);
    assert_eq!(events["events"][0]["condition"], "closed_valve");
    // A cleared alarm cannot be acknowledged again.
    let (status, body) = app.send(ack(json!({"by": "late"}))).await;
    assert_eq!(status, 409, "{body}");

    // Retrain on a chosen healthy window (settable baseline).
    let (_, first) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(first["trained"], true);
    let retrain = |body: Value| {
        app.client
            .post(app.url("/api/v1/wells/DIAG-1/diagnosis/retrain"))
            .json(&body)
    };
    let (status, body) = app
        .send(retrain(
            json!({"from": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}),
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    // A window where the well has no data (a backfilled well's default "last 8 h", say)
    // cannot teach a baseline: refused, and the well keeps the one it has.
    let (status, body) = app
        .send(retrain(
            json!({"from": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"}),
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["type"], "no_baseline", "{body}");
    assert_eq!(body["error"]["details"]["readings_in_window"], 0, "{body}");
    let (_, kept) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(kept["trained"], true, "{kept}");
    assert!(!kept["baseline"].is_null(), "{kept}");
    // A well test marked by the operator: a grace period for the steady-state rules.
    let transient = |body: Value| {
        app.client
            .post(app.url("/api/v1/wells/DIAG-1/diagnosis/transient"))
            .json(&body)
    };
    let soon = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, body) = app
        .send(transient(json!({"until": soon, "reason": "well_test"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["well_id"], "DIAG-1", "{body}");
    let far = (chrono::Utc::now() + chrono::Duration::hours(48)).to_rfc3339();
    let (status, body) = app.send(transient(json!({"until": far}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.send(transient(json!({"until": "soon"}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.send(retrain(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trained"], true, "{body}");

    let (status, body) = app.get("/api/v1/alarms?state=bogus").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.get("/api/v1/wells/NOPE/diagnosis").await;
    assert_eq!(status, 404);

    // After a restart the state is rebuilt from stored telemetry.
    let dir = app.stop().await;
    let data_dir = dir.as_ref().unwrap().path().to_path_buf();
    let app = start_in(data_dir, dir, |_| {}).await;
    let (status, diag) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(status, 200, "{diag}");
    assert_eq!(diag["trained"], true, "{diag}");
    app.stop().await;
}
}

#[tokio::test]
async fn legacy_decision_tree_keeps_working() {
    let app = spawn_app().await;
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/diagnostics/decision_tree"))
                .json(&json!({
                    "well_id": "TEST-001",
                    "flow_stable": false,
                    "production_below_target": true,
                    "pip_low": false,
                    "flow_level": "medium",
                    "telemetry": {}
                })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["diagnosis"]["type"], "Free Gas Lock");
    assert!(body["diagnosis"]["confidence"].as_f64().unwrap() > 0.8);
    let (status, body) = app
        .post("/api/v1/diagnostics/decision_tree", "application/json", "{")
        .await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}

/// Issue 17, bug 3: the queue to the diagnostics is bounded (in readings). Batches beyond it
/// are not queued; their wells are rebuilt from the store (where the readings already are), so
/// the diagnosis still covers every reading. The queue, lag and skips are in /health/ready.
#[tokio::test]
async fn diagnostics_queue_is_bounded_and_skipped_wells_are_rebuilt_from_storage() {
    use std::sync::Arc;

    use espwatch_core::{Field, Measurements, Reading, WellId};
    use espwatch_server::diagnostics::DiagnosticsHub;
    use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let hub = DiagnosticsHub::start_with_capacity(store.clone(), None, 100);
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = now - 2 * HOUR - now.rem_euclid(60_000_000);
    let wells = [WellId::parse("Q-0").unwrap(), WellId::parse("Q-1").unwrap()];
    let batches: Vec<Vec<Reading>> = (0..10i64)
        .map(|b| {
            (0..60i64)
                .map(|i| {
                    let mut values = Measurements::empty();
                    values.set(Field::FrequencyHz, Some(55.0));
                    values.set(Field::MotorCurrentA, Some(40.0 + (i % 3) as f64));
                    Reading {
                        well_id: wells[(b % 2) as usize].clone(),
                        ts: Timestamp(start + (b * 60 + i) * 10_000_000),
                        values,
                    }
                })
                .collect()
        })
        .collect();
    let last_ts = |w: usize| Timestamp(start + ((8 + w as i64) * 60 + 59) * 10_000_000);
    // Stored first, as ingestion does; then handed over back to back (a current-thread
    // runtime: the diagnostics task cannot run in between).
    for batch in &batches {
        store
            .append(
                batch.clone(),
                AppendOptions {
                    auto_register_wells: true,
                },
            )
            .await
            .unwrap();
    }
    for batch in batches {
        hub.submit(batch);
    }
    let status = hub.status();
    assert_eq!(status.queued_readings, 60, "{status:?}");
    assert_eq!(status.skipped_readings, 540, "{status:?}");
    assert_eq!(status.queue_capacity_readings, 100);
    for _ in 0..400 {
        if hub.status().queued_readings == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hub.status().queued_readings, 0, "{:?}", hub.status());
    // Without the rebuild Q-0 would stop at its first batch and Q-1 would be unknown.
    for (w, well) in wells.iter().enumerate() {
        let diagnosis = hub.diagnosis(well).await;
        assert_eq!(
            diagnosis["as_of"].as_str(),
            Some(last_ts(w).to_rfc3339().as_str()),
            "{well}: {diagnosis}"
        );
    }
    assert!(hub.status().rebuilds >= 2, "{:?}", hub.status());

    // The figures are on the readiness probe.
    let app = spawn_app_with(|c| c.diagnostics_queue_readings = 1234).await;
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    let diagnostics = &ready["checks"]["diagnostics"];
    assert_eq!(diagnostics["queue_capacity_readings"], 1234, "{ready}");
    assert_eq!(diagnostics["status"], "healthy", "{ready}");
    for key in [
        "queued_readings",
        "lag_ms",
        "skipped_readings",
        "diagnosed_readings",
    ] {
        assert!(diagnostics[key].is_u64(), "{key}: {ready}");
    }
    app.stop().await;
}
