//! `POST /api/v1/ask` on a simulated fleet: the numbers in an answer equal what the structured
//! routes (`/wells/{id}/telemetry`, `/wells/latest`, `/alarms`) return for the same
//! interpretation; per-well scopes hold; a question not understood is 422 with what was
//! recognised and rephrasings; `espwatch ask` prints the same.

use espwatch_core::Timestamp;
use espwatch_core::sim::fleet::ConditionChoice;
use espwatch_core::sim::{FleetConfig, WellSimulator, csv, plan_fleet};
use serde_json::{Value, json};

use crate::support::*;

const HOUR: i64 = 3_600_000_000;

/// Four simulated wells, 8 h at 60 s up to now: ESP-001/002 on "North Pad" (ESP-002 named
/// "Kestrel 2"), ESP-003/004 on "South Pad". Registers and ingests them.
pub(crate) async fn load_fleet(app: &TestApp) {
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = Timestamp(now - 8 * HOUR - now.rem_euclid(60_000_000));
    let mut config = FleetConfig::new(11, 4, start, 8 * HOUR);
    config.interval = espwatch_core::sim::fleet::IntervalChoice::Fixed(60_000_000);
    config.conditions = ConditionChoice::None;
    let plan = plan_fleet(&config).unwrap();
    for (i, well) in plan.wells.iter().enumerate() {
        let mut meta = well.meta.clone();
        meta.field = Some(if i < 2 { "North Pad" } else { "South Pad" }.into());
        if i == 1 {
            meta.name = Some("Kestrel 2".into());
        }
        let (status, body) = app
            .post(
                "/api/v1/wells",
                "application/json",
                serde_json::to_string(&meta).unwrap(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let mut sim = WellSimulator::new(well, config.start, config.duration_micros);
        let mut out = Vec::new();
        csv::write_header(&mut out);
        while let Some(s) = sim.next_sample() {
            if let Some(m) = &s.measured {
                csv::write_row(&mut out, well.id.as_str(), s.ts, m);
            }
        }
        let (status, body) = app.post("/api/v1/telemetry", "text/csv", out).await;
        assert_eq!(status, 200, "{body}");
    }
}

pub(crate) async fn ask_with(app: &TestApp, client: &reqwest::Client, q: &str) -> (u16, Value) {
    app.send(
        client
            .post(app.url("/api/v1/ask"))
            .json(&json!({ "question": q })),
    )
    .await
}

async fn ask(app: &TestApp, q: &str) -> Value {
    let (status, body) = ask_with(app, &app.client, q).await;
    assert_eq!(status, 200, "{q}: {body}");
    body
}

/// Raw points of one channel from the telemetry API.
async fn raw(app: &TestApp, well: &str, field: &str, from: &str, to: &str) -> Vec<f64> {
    let (status, body) = app
        .get(&format!(
            "/api/v1/wells/{well}/telemetry?from={from}&to={to}&fields={field}&max_points=1000000"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    body["fields"][field]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn latest(app: &TestApp) -> Value {
    let (status, body) = app.get("/api/v1/wells/latest").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn latest_value(latest: &Value, well: &str, field: &str) -> Option<f64> {
    latest["wells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["well_id"] == well)
        .and_then(|w| w["values"][field].as_f64())
}

both_backends! {
#[tokio::test]
async fn answers_equal_the_structured_api() {
    let app = spawn_app().await;
    load_fleet(&app).await;

    // An aggregate over a range: the mean of the raw points the telemetry API returns.
    let body = ask(&app, "average motor current of ESP-002 over the last 6 hours").await;
    let it = &body["interpretation"];
    assert_eq!(it["intent"], "aggregate");
    assert_eq!(it["wells"], json!(["ESP-002"]));
    assert_eq!(it["channels"], json!(["motor_current_a"]));
    assert_eq!(it["agg"], "avg");
    let (from, to) = (it["from"].as_str().unwrap(), it["to"].as_str().unwrap());
    let points = raw(&app, "ESP-002", "motor_current_a", from, to).await;
    assert!(points.len() > 300, "{}", points.len());
    let mean = points.iter().sum::<f64>() / points.len() as f64;
    let got = body["answer"]["values"][0]["value"].as_f64().unwrap();
    assert!(close(got, mean), "{got} vs {mean}");
    assert_eq!(body["answer"]["values"][0]["points"], json!(points.len()));
    assert_eq!(body["answer"]["wells"], json!(["ESP-002"]));
    assert!(body["answer"]["text"].as_str().unwrap().contains(" A"), "{body}");
    assert!((2..=3).contains(&body["suggestions"].as_array().unwrap().len()));

    // A trend of two wells: a series per well, and two whole sentences (not "A)., Motor").
    let body = ask(&app, "trend of motor current of ESP-001 and ESP-002 over the last 6 hours").await;
    assert_eq!(body["interpretation"]["intent"], "trend", "{body}");
    let series = body["answer"]["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{body}");
    assert_eq!((series[0]["well_id"].clone(), series[1]["well_id"].clone()), (json!("ESP-001"), json!("ESP-002")));
    let text = body["answer"]["text"].as_str().unwrap();
    assert!(!text.contains(".,") && text.matches("Motor current of ESP-00").count() == 2, "{text}");

    // Max by a well's name, in another spelling.
    let body = ask(&app, "maximum intake pressure of kestrel 2 in the last 3 hours").await;
    let it = &body["interpretation"];
    let points = raw(&app, "ESP-002", "intake_pressure_psi", it["from"].as_str().unwrap(), it["to"].as_str().unwrap()).await;
    let max = points.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(body["answer"]["values"][0]["value"].as_f64().unwrap(), max);

    // A unit asked for: the same number converted.
    let body = ask(&app, "average PIP of ESP-002 over the last 6 hours in kPa").await;
    let it = &body["interpretation"];
    let points = raw(&app, "ESP-002", "intake_pressure_psi", it["from"].as_str().unwrap(), it["to"].as_str().unwrap()).await;
    let mean = points.iter().sum::<f64>() / points.len() as f64;
    let v = &body["answer"]["values"][0];
    assert_eq!(v["unit"], "kPa");
    assert!((v["value"].as_f64().unwrap() - mean / 0.145_037_737_730_209_2).abs() < 1e-6, "{v}");

    // Current values: /wells/latest.
    let l = latest(&app).await;
    let body = ask(&app, "what is the motor current of ESP-003").await;
    assert_eq!(body["interpretation"]["intent"], "value");
    assert_eq!(
        body["answer"]["values"][0]["value"].as_f64(),
        latest_value(&l, "ESP-003", "motor_current_a")
    );
    let body = ask(&app, "PIP on north pad wells now").await;
    assert_eq!(body["interpretation"]["wells"], json!(["ESP-001", "ESP-002"]));
    for v in body["answer"]["values"].as_array().unwrap() {
        assert_eq!(
            v["value"].as_f64(),
            latest_value(&l, v["well_id"].as_str().unwrap(), "intake_pressure_psi")
        );
    }

    // A trend: the bucketed series of the telemetry API with the interpretation's step.
    let body = ask(&app, "trend of motor current of ESP-001 over the last 4 hours").await;
    let it = &body["interpretation"];
    assert_eq!(it["intent"], "trend");
    let step = it["step"].as_str().unwrap();
    let (status, api) = app
        .get(&format!(
            "/api/v1/wells/ESP-001/telemetry?from={}&to={}&fields=motor_current_a&step={step}&agg=avg",
            it["from"].as_str().unwrap(),
            it["to"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{api}");
    let series = &body["answer"]["series"][0];
    assert_eq!(series["ts"], api["ts"]);
    assert_eq!(series["values"], api["fields"]["motor_current_a"]);

    // Top N and thresholds: /wells/latest sorted and filtered.
    let mut currents: Vec<(String, f64)> = ["ESP-001", "ESP-002", "ESP-003", "ESP-004"]
        .iter()
        .filter_map(|w| latest_value(&l, w, "motor_current_a").map(|v| (w.to_string(), v)))
        .collect();
    currents.sort_by(|a, b| b.1.total_cmp(&a.1));
    let body = ask(&app, "top 2 wells by motor current").await;
    assert_eq!(body["interpretation"]["limit"], 2);
    let top: Vec<&str> = body["answer"]["wells"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(top, [currents[0].0.as_str(), currents[1].0.as_str()]);
    let threshold = (currents[1].1 + currents[2].1) / 2.0;
    let body = ask(&app, &format!("wells with motor current above {threshold:.3} A")).await;
    assert_eq!(body["interpretation"]["intent"], "filter");
    let mut above: Vec<&str> = body["answer"]["wells"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    above.sort();
    let mut want: Vec<&str> = currents.iter().filter(|c| c.1 > (threshold * 1000.0).round() / 1000.0).map(|c| c.0.as_str()).collect();
    want.sort();
    assert_eq!(above, want);

    // Comparisons: the two wells' means over the same range.
    let body = ask(&app, "compare average motor current of ESP-001 and ESP-004 over the last 2 hours").await;
    let it = &body["interpretation"];
    assert_eq!(it["intent"], "compare");
    for v in body["answer"]["values"].as_array().unwrap() {
        let w = v["well_id"].as_str().unwrap();
        let points = raw(&app, w, "motor_current_a", it["from"].as_str().unwrap(), it["to"].as_str().unwrap()).await;
        let mean = points.iter().sum::<f64>() / points.len() as f64;
        assert!(close(v["value"].as_f64().unwrap(), mean), "{v} vs {mean}");
    }

    // Run state and data age.
    let body = ask(&app, "which pumps are running").await;
    assert_eq!(body["interpretation"]["intent"], "run_state");
    for v in body["answer"]["values"].as_array().unwrap() {
        let f = latest_value(&l, v["well_id"].as_str().unwrap(), "frequency_hz").unwrap();
        assert!(f > 1.0);
    }
    let body = ask(&app, "wells with no data for an hour").await;
    assert_eq!(body["answer"]["wells"], json!([]), "{body}");
}
}

both_backends! {
#[tokio::test]
async fn fleet_aggregates_and_average_filters_equal_the_raw_points() {
    let app = spawn_app().await;
    load_fleet(&app).await;
    let wells = ["ESP-001", "ESP-002", "ESP-003", "ESP-004"];

    // No well named: every well's mean and count, and the fleet's mean of every reading.
    let body = ask(&app, "average intake pressure of all wells over the last 6 hours").await;
    let it = &body["interpretation"];
    assert_eq!(it["intent"], "aggregate", "{body}");
    assert_eq!(it["wells"], json!([]), "{body}");
    let (from, to) = (it["from"].as_str().unwrap(), it["to"].as_str().unwrap());
    let mut means = Vec::new();
    let (mut sum, mut n) = (0.0, 0usize);
    for (k, w) in wells.iter().enumerate() {
        let points = raw(&app, w, "intake_pressure_psi", from, to).await;
        assert!(points.len() > 300, "{w}: {}", points.len());
        let mean = points.iter().sum::<f64>() / points.len() as f64;
        let v = &body["answer"]["values"][k];
        assert_eq!(v["well_id"], *w, "{body}");
        assert!(close(v["value"].as_f64().unwrap(), mean), "{w}: {v} vs {mean}");
        assert_eq!(v["points"], json!(points.len()), "{w}");
        means.push((w.to_string(), mean));
        sum += points.iter().sum::<f64>();
        n += points.len();
    }
    let text = body["answer"]["text"].as_str().unwrap();
    let fleet = espwatch_core::ask::fmt_number(sum / n as f64);
    assert!(text.contains(&format!("over 4 wells: {fleet} psi ({n} readings)")), "{text} vs {fleet}");

    // Maximum over the fleet: the largest raw point, at its well.
    let body = ask(&app, "max intake pressure of all wells over the last 6 hours").await;
    let it = &body["interpretation"];
    let (from, to) = (it["from"].as_str().unwrap(), it["to"].as_str().unwrap());
    let mut best = (String::new(), f64::NEG_INFINITY);
    for w in wells {
        for p in raw(&app, w, "intake_pressure_psi", from, to).await {
            if p > best.1 {
                best = (w.to_string(), p);
            }
        }
    }
    let text = body["answer"]["text"].as_str().unwrap();
    let want = format!("{} psi at {}", espwatch_core::ask::fmt_number(best.1), best.0);
    assert!(text.contains(&want), "{text} vs {want}");

    // The fleet-wide average filter: the wells whose mean is above a threshold between two.
    means.sort_by(|a, b| b.1.total_cmp(&a.1));
    let threshold = ((means[1].1 + means[2].1) / 2.0).round();
    let body = ask(
        &app,
        &format!("wells with average intake pressure above {threshold} psi over the last 6 hours"),
    )
    .await;
    assert_eq!(body["interpretation"]["intent"], "filter", "{body}");
    assert_eq!(body["interpretation"]["agg"], "avg", "{body}");
    let mut above: Vec<&str> = body["answer"]["wells"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    above.sort();
    let mut want: Vec<&str> = means.iter().filter(|m| m.1 > threshold).map(|m| m.0.as_str()).collect();
    want.sort();
    assert_eq!(above, want, "{body}");
}
}

both_backends! {
#[tokio::test]
async fn alarm_and_condition_questions_match_the_alarms_route() {
    let app = spawn_app().await;
    load_fleet(&app).await;
    let alarms = app.alarms.clone().expect("alarm store");
    let now = Timestamp::from_datetime(chrono::Utc::now());
    for (well, condition) in [("ESP-001", "gas_lock"), ("ESP-003", "overload")] {
        alarms
            .raise_alarm(espwatch_store::NewAlarm {
                well_id: well.parse().unwrap(),
                condition: condition.parse().unwrap(),
                severity: "critical".parse().unwrap(),
                confidence: 0.9,
                started_at: Timestamp(now.0 - HOUR),
                detail: json!({ "action": "check it" }),
            })
            .await
            .unwrap();
    }
    let (status, listed) = app.get("/api/v1/alarms?state=raised").await;
    assert_eq!(status, 200);
    let mut from_api: Vec<&str> = listed["alarms"].as_array().unwrap().iter().map(|a| a["well_id"].as_str().unwrap()).collect();
    from_api.sort();

    let body = ask(&app, "which wells have an open alarm").await;
    assert_eq!(body["interpretation"]["intent"], "alarms");
    assert_eq!(body["interpretation"]["alarm_state"], "open");
    let mut wells: Vec<&str> = body["answer"]["wells"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    wells.sort();
    assert_eq!(wells, from_api);

    let body = ask(&app, "which wells are gas locked").await;
    assert_eq!(body["interpretation"]["condition"], "gas_lock");
    assert_eq!(body["answer"]["wells"], json!(["ESP-001"]));
    let body = ask(&app, "which wells had overload in the last 24 hours").await;
    assert_eq!(body["answer"]["wells"], json!(["ESP-003"]));
    let body = ask(&app, "which wells had a broken shaft this week").await;
    assert_eq!(body["answer"]["wells"], json!([]));

    // Why: the live diagnosis and the open alarm.
    let body = ask(&app, "why is ESP-001 alarming").await;
    assert_eq!(body["interpretation"]["intent"], "diagnosis");
    let text = body["answer"]["text"].as_str().unwrap();
    assert!(text.contains("gas_lock"), "{text}");
    assert!(body["answer"]["values"].as_array().unwrap().iter().any(|v| v["diagnosis"].is_object()), "{body}");
    let body = ask(&app, "status of ESP-003").await;
    assert!(body["answer"]["text"].as_str().unwrap().contains("overload"), "{body}");
}
}

#[tokio::test]
async fn scopes_permissions_and_refusals() {
    init();
    let app = spawn_app().await;
    load_fleet(&app).await;
    let alarms = app.alarms.clone().expect("alarm store");
    alarms
        .raise_alarm(espwatch_store::NewAlarm {
            well_id: "ESP-004".parse().unwrap(),
            condition: "gas_lock".parse().unwrap(),
            severity: "critical".parse().unwrap(),
            confidence: 0.9,
            started_at: Timestamp::from_datetime(chrono::Utc::now()),
            detail: json!({}),
        })
        .await
        .unwrap();
    // An analyst limited to two wells sees only them.
    let key = create_key(
        app.security.as_ref(),
        "north-analyst",
        espwatch_core::access::Role::Analyst,
        Some(vec!["ESP-001".into(), "ESP-002".into()]),
    )
    .await;
    let scoped = bearer_client(&key);
    let (status, body) = ask_with(&app, &scoped, "top 10 wells by motor current").await;
    assert_eq!(status, 200, "{body}");
    let mut wells: Vec<&str> = body["answer"]["wells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    wells.sort();
    assert_eq!(wells, ["ESP-001", "ESP-002"]);
    let (status, body) = ask_with(&app, &scoped, "which wells are gas locked").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["answer"]["wells"],
        json!([]),
        "ESP-004's alarm is outside the scope"
    );
    let (status, body) = ask_with(&app, &scoped, "motor current of ESP-004").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["type"], "not_understood");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ESP-004")
    );
    // A pad whose wells are all outside the scope is unknown, never widened to the fleet.
    let (status, body) = ask_with(&app, &scoped, "south pad motor current").await;
    assert_eq!(status, 422, "{body}");

    // A viewer may read the latest values and diagnoses, not the history.
    let key = create_key(
        app.security.as_ref(),
        "viewer",
        espwatch_core::access::Role::Viewer,
        None,
    )
    .await;
    let viewer = bearer_client(&key);
    let (status, body) = ask_with(&app, &viewer, "motor current of ESP-001").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        ask_with(&app, &viewer, "average motor current of ESP-001 yesterday").await;
    assert_eq!(status, 403, "{body}");
    // A machine client may not ask at all.
    let key = create_key(
        app.security.as_ref(),
        "gateway",
        espwatch_core::access::Role::ApiClient,
        None,
    )
    .await;
    let (status, _) = ask_with(&app, &bearer_client(&key), "motor current of ESP-001").await;
    assert_eq!(status, 403);

    // Not understood: 422 with what was recognised and rephrasings that are understood.
    let (status, body) =
        ask_with(&app, &app.client, "wells with pressure above 100 yesterday").await;
    assert_eq!(status, 422, "{body}");
    let details = &body["error"]["details"];
    assert_eq!(details["recognised"]["time"], "yesterday", "{body}");
    let suggestions = details["suggestions"].as_array().unwrap();
    assert!((2..=3).contains(&suggestions.len()), "{body}");
    for s in suggestions {
        let (status, body) = ask_with(&app, &app.client, s.as_str().unwrap()).await;
        assert_eq!(status, 200, "suggestion {s}: {body}");
    }
    // A command is refused, never carried out nor read as a question about the well: 422,
    // the verb in `details.command`, the message saying ask controls nothing.
    let (status, body) = ask_with(&app, &app.client, "shut down ESP-003").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["command"], "shut down", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not control"),
        "{body}"
    );
    for s in body["error"]["details"]["suggestions"].as_array().unwrap() {
        let (status, body) = ask_with(&app, &app.client, s.as_str().unwrap()).await;
        assert_eq!(status, 200, "suggestion {s}: {body}");
    }
    let (status, body) = ask_with(&app, &app.client, "what's the weather in Houston").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["details"]["unknown"]
            .as_array()
            .unwrap()
            .contains(&json!("weather"))
    );
    // Bad bodies.
    let (status, _) = app
        .send(
            app.client
                .post(app.url("/api/v1/ask"))
                .json(&json!({ "q": "x" })),
        )
        .await;
    assert_eq!(status, 422);
    let long = "a".repeat(501);
    let (status, _) = ask_with(&app, &app.client, &long).await;
    assert_eq!(status, 422);
    let (status, _) = app
        .send(
            app.anonymous
                .post(app.url("/api/v1/ask"))
                .json(&json!({ "question": "x" })),
        )
        .await;
    assert_eq!(status, 401);
}

async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &[], std::path::Path::new("/"))
    })
    .await
    .expect("cli")
}

#[tokio::test]
async fn espwatch_ask_prints_the_same_answer() {
    init();
    let app = spawn_app().await;
    load_fleet(&app).await;
    let q = "what is the motor current of ESP-003";
    let (_, body) = ask_with(&app, &app.client, q).await;
    let value = body["answer"]["values"][0]["value"].as_f64().unwrap();
    let url = app.url("");
    let (ok, out, err) = cli(vec![
        "ask".into(),
        q.into(),
        "--url".into(),
        url.clone(),
        "--api-key".into(),
        app.admin_key.clone(),
        "--json".into(),
    ])
    .await;
    assert!(ok, "{out}{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["interpretation"], body["interpretation"]);
    assert_eq!(
        printed["answer"]["values"][0]["value"].as_f64(),
        Some(value)
    );
    let (ok, out, err) = cli(vec![
        "ask".into(),
        q.into(),
        "--url".into(),
        url.clone(),
        "--api-key".into(),
        app.admin_key.clone(),
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("understood: intent=value wells=ESP-003 channels=motor_current_a"),
        "{out}"
    );
    let (ok, out, err) = cli(vec![
        "ask".into(),
        "wells with pressure above 100".into(),
        "--url".into(),
        url,
        "--api-key".into(),
        app.admin_key.clone(),
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("not understood: which pressure"), "{err}");
    assert!(err.contains("questions it would understand"), "{err}");

    // Straight from the data directory, once the server is gone: the same number.
    let data_dir = app.data_dir.clone();
    let _dir = app.stop().await;
    let (ok, out, err) = cli(vec![
        "ask".into(),
        q.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--json".into(),
    ])
    .await;
    assert!(ok, "{out}{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        printed["answer"]["values"][0]["value"].as_f64(),
        Some(value)
    );
}

both_backends! {
/// The classes the held-out set `tools/ask-heldout` found answered wrongly (issue 24): a
/// threshold in MPa, "no open alarms", a field written with another separator, steps, clock
/// times inside dates — answered as meant and equal to the structured routes; words that change
/// the question and cannot be placed ("tomorrow", an impossible date, "below" with no number,
/// "delete") refused with rephrasings that are understood.
#[tokio::test]
async fn held_out_classes_are_answered_as_meant_or_refused() {
    let app = spawn_app().await;
    load_fleet(&app).await;
    let l = latest(&app).await;

    // 5 MPa is 725.19 psi, never 5 psi: the filter says both, the wells are /wells/latest's.
    let body = ask(&app, "wells with intake pressure below 5 MPa").await;
    let f = &body["interpretation"]["filter"];
    assert_eq!(f["unit"], "psi", "{body}");
    assert_eq!(f["written"], "5 MPa", "{body}");
    assert!((f["value"].as_f64().unwrap() - 725.188_7).abs() < 1e-3, "{body}");
    let mut want: Vec<&str> = ["ESP-001", "ESP-002", "ESP-003", "ESP-004"]
        .into_iter()
        .filter(|w| latest_value(&l, w, "intake_pressure_psi").is_some_and(|v| v < 725.188_7))
        .collect();
    want.sort();
    let mut got: Vec<&str> = body["answer"]["wells"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    got.sort();
    assert_eq!(got, want, "{body}");
    // A value shown in MPa.
    let body = ask(&app, "intake pressure of ESP-001 in MPa").await;
    let v = &body["answer"]["values"][0];
    assert_eq!(v["unit"], "MPa", "{body}");
    let psi = latest_value(&l, "ESP-001", "intake_pressure_psi").unwrap();
    assert!((v["value"].as_f64().unwrap() - psi / 145.037_737_730_209_2).abs() < 1e-9, "{v}");

    // "no open alarms": every well but the one with an open alarm, never the alarm list.
    let alarms = app.alarms.clone().expect("alarm store");
    alarms
        .raise_alarm(espwatch_store::NewAlarm {
            well_id: "ESP-004".parse().unwrap(),
            condition: "gas_lock".parse().unwrap(),
            severity: "critical".parse().unwrap(),
            confidence: 0.9,
            started_at: Timestamp::from_datetime(chrono::Utc::now()),
            detail: json!({}),
        })
        .await
        .unwrap();
    let body = ask(&app, "which wells have no open alarms").await;
    assert_eq!(body["interpretation"]["without"], true, "{body}");
    assert_eq!(body["answer"]["wells"], json!(["ESP-001", "ESP-002", "ESP-003"]), "{body}");
    let body = ask(&app, "which wells are not gas locked").await;
    assert_eq!(body["answer"]["wells"], json!(["ESP-001", "ESP-002", "ESP-003"]), "{body}");

    // A field with another separator: its wells, never the fleet.
    let body = ask(&app, "motor current on north-pad").await;
    assert_eq!(body["interpretation"]["wells"], json!(["ESP-001", "ESP-002"]), "{body}");
    assert_eq!(body["interpretation"]["groups"], json!(["North Pad"]), "{body}");

    // A step asked for: the telemetry route's buckets with that step and aggregate.
    for (q, agg) in [
        ("hourly average motor current of ESP-001 over the last 6 hours", "avg"),
        ("hourly max motor current of ESP-001 over the last 6 hours", "max"),
    ] {
        let body = ask(&app, q).await;
        let it = &body["interpretation"];
        assert_eq!((it["intent"].as_str(), it["step"].as_str(), it["agg"].as_str()), (Some("trend"), Some("1h"), Some(agg)), "{body}");
        let (status, api) = app
            .get(&format!(
                "/api/v1/wells/ESP-001/telemetry?from={}&to={}&fields=motor_current_a&step=1h&agg={agg}",
                it["from"].as_str().unwrap(),
                it["to"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 200, "{api}");
        let series = &body["answer"]["series"][0];
        assert_eq!(series["agg"], agg, "{body}");
        assert_eq!(series["ts"], api["ts"], "{q}");
        assert_eq!(series["values"], api["fields"]["motor_current_a"], "{q}");
    }

    // Clock times inside dates: that range, and the mean of its raw points.
    let now = chrono::Utc::now();
    let at = |h: i64| {
        let t = now - chrono::Duration::hours(h);
        t.format("%Y-%m-%d %H:%M").to_string()
    };
    let body = ask(&app, &format!("average motor current of ESP-002 between {} and {}", at(4), at(2))).await;
    let it = &body["interpretation"];
    assert_eq!(it["intent"], "aggregate", "{body}");
    let (from, to) = (it["from"].as_str().unwrap(), it["to"].as_str().unwrap());
    let from_t = chrono::DateTime::parse_from_rfc3339(from).unwrap();
    let to_t = chrono::DateTime::parse_from_rfc3339(to).unwrap();
    assert_eq!(from_t.format("%Y-%m-%d %H:%M").to_string(), at(4), "{body}");
    assert_eq!(to_t.format("%Y-%m-%d %H:%M").to_string(), at(2), "{body}");
    let points = raw(&app, "ESP-002", "motor_current_a", from, to).await;
    assert!(points.len() > 100, "{}", points.len());
    let mean = points.iter().sum::<f64>() / points.len() as f64;
    assert!(close(body["answer"]["values"][0]["value"].as_f64().unwrap(), mean), "{body} vs {mean}");

    // Words that change the question and cannot be placed: 422, never an answer without them.
    for q in [
        "what is the motor current of ESP-003 tomorrow",
        "amps for ESP-003 on 2026-02-30",
        "wells with intake pressure below",
        "which wells have no idea",
        "delete all alarms",
    ] {
        let (status, body) = ask_with(&app, &app.client, q).await;
        assert_eq!(status, 422, "{q}: {body}");
        assert_eq!(body["error"]["type"], "not_understood", "{q}: {body}");
        let details = &body["error"]["details"];
        let suggestions = details["suggestions"].as_array().unwrap();
        assert!((2..=3).contains(&suggestions.len()), "{q}: {body}");
        for s in suggestions {
            let (status, b) = ask_with(&app, &app.client, s.as_str().unwrap()).await;
            assert_eq!(status, 200, "{q}: suggestion {s}: {b}");
        }
        if q.starts_with("delete") {
            assert_eq!(details["command"], "delete", "{body}");
        }
    }
    let (_, body) = ask_with(&app, &app.client, "amps for ESP-003 on 2026-02-30").await;
    assert_eq!(body["error"]["details"]["recognised"]["wells"], json!(["ESP-003"]), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("2026-02-30"), "{body}");
}
}
