//! Issue 21: what an operator tells a well's diagnostics (a retrain window, a transient mark)
//! is recorded in the database and outlives the engine it was applied to: after a restart the
//! well is rebuilt with it. And a rebuild's replay of stored history raises no alarm again for
//! an episode that was already raised and cleared.

use super::*;

const CONDITION: Condition = Condition::TubingLeak;

/// Readings in a CSV body (one header line).
fn rows(csv: &[u8]) -> u64 {
    csv.iter().filter(|&&b| b == b'\n').count() as u64 - 1
}

/// Waits until the diagnostics have taken at least `readings` since the server started and
/// nothing waits in their queue.
async fn diagnosed(app: &TestApp, readings: u64) {
    for _ in 0..1200 {
        let (_, health) = app.get("/health/ready").await;
        let d = &health["checks"]["diagnostics"];
        if d["queued_readings"] == 0 && d["diagnosed_readings"].as_u64() >= Some(readings) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the diagnostics never took {readings} readings");
}

/// The alarms of `well` (all states), as (id, condition, state).
async fn alarms_of(app: &TestApp, well: &str) -> Vec<(i64, String, String)> {
    let (status, body) = app.get(&format!("/api/v1/alarms?well_id={well}")).await;
    assert_eq!(status, 200, "{body}");
    body["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_i64().unwrap(),
                a["condition"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

both_backends! {
#[tokio::test]
async fn a_retrain_and_a_transient_mark_outlive_a_restart_and_a_replay_raises_no_alarm_twice() {
    let app = spawn_app().await;
    // Both wells shut their valve 9 h into their 13 h; the first 8 h 55 min go in now.
    let (marked, control) = ("DIR-MARKED", "DIR-CONTROL");
    let mut rest = Vec::new();
    let mut sent = 0;
    for id in [marked, control] {
        let (meta, before, after) = condition_well(id, CONDITION, 8 * 60 + 55);
        let (status, body) = app
            .post("/api/v1/wells", "application/json", meta.to_string())
            .await;
        assert_eq!(status, 201, "{body}");
        sent += rows(&before);
        let (status, body) = app.post("/api/v1/telemetry", "text/csv", before).await;
        assert_eq!(status, 200, "{body}");
        rest.push(after);
    }
    diagnosed(&app, sent).await;
    let (_, learned) = app.get(&format!("/api/v1/wells/{marked}/diagnosis")).await;
    assert_eq!(learned["trained"], true, "{learned}");

    // A retrain on a window of its own (hours 1 to 6 of the data instead of the first 8).
    let now = chrono::Utc::now();
    let window = json!({
        "from": (now - chrono::Duration::hours(12)).to_rfc3339(),
        "until": (now - chrono::Duration::hours(7)).to_rfc3339(),
    });
    let (status, retrained) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/wells/{marked}/diagnosis/retrain")))
                .json(&window),
        )
        .await;
    assert_eq!(status, 200, "{retrained}");
    let delivery = &retrained["delivery"];
    assert_eq!(
        (
            delivery["stored"].clone(),
            delivery["diagnosed_here"].clone(),
            delivery["owner"].clone()
        ),
        (json!(true), json!(true), json!("applied")),
        "{retrained}"
    );
    assert!(delivery["revision"].as_i64().is_some(), "{retrained}");
    let baseline = retrained["baseline"].clone();
    assert!(!baseline.is_null(), "{retrained}");
    assert_ne!(baseline, learned["baseline"], "the window taught the same baseline");

    // A well test marked for the next 3 h: every reading still to come is in it.
    let until = (now + chrono::Duration::hours(3)).to_rfc3339();
    let (status, marked_body) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/wells/{marked}/diagnosis/transient")))
                .json(&json!({"until": until, "reason": "well_test"})),
        )
        .await;
    assert_eq!(status, 200, "{marked_body}");
    assert_eq!(marked_body["delivery"]["stored"], true, "{marked_body}");
    assert_eq!(marked_body["delivery"]["owner"], "applied", "{marked_body}");
    assert!(
        marked_body["delivery"]["revision"].as_i64() > delivery["revision"].as_i64(),
        "{marked_body}"
    );

    // Restarted: the well is rebuilt with the retrain window (not its first 8 h) ...
    let dir = app.stop().await;
    let data_dir = dir.as_ref().unwrap().path().to_path_buf();
    let app = start_in(data_dir, dir, |_| {}).await;
    let (status, rebuilt) = app.get(&format!("/api/v1/wells/{marked}/diagnosis")).await;
    assert_eq!(status, 200, "{rebuilt}");
    assert_eq!(rebuilt["baseline"], baseline, "the retrain was lost at the restart");

    // ... and the mark: its valve closing during the well test raises no alarm, the
    // control's does (raised, then cleared when its valve opens again).
    let mut sent = 0;
    for after in rest {
        sent += rows(&after);
        let (status, body) = app.post("/api/v1/telemetry", "text/csv", after).await;
        assert_eq!(status, 200, "{body}");
    }
    diagnosed(&app, sent).await;
    let cleared = wait_for_alarm(&app, &format!("well_id={control}&state=cleared")).await;
    assert_eq!(cleared["condition"], CONDITION.name(), "{cleared}");
    let during_test = alarms_of(&app, marked).await;
    assert!(
        !during_test.iter().any(|(_, c, _)| c == CONDITION.name()),
        "the marked well test was forgotten at the restart: {during_test:?}"
    );

    // Restarted again: the control well's engine is rebuilt from its stored history, whose
    // replay opens and closes the same episode again. Its alarm is already there (cleared):
    // nothing is raised or cleared anew.
    let alarms_before = alarms_of(&app, control).await;
    let dir = app.stop().await;
    let data_dir = dir.as_ref().unwrap().path().to_path_buf();
    let app = start_in(data_dir, dir, |_| {}).await;
    let (status, diagnosis) = app.get(&format!("/api/v1/wells/{control}/diagnosis")).await;
    assert_eq!(status, 200, "{diagnosis}");
    assert_eq!(
        alarms_of(&app, control).await,
        alarms_before,
        "the replay raised an episode that was already alarmed"
    );
    app.stop().await;
}
}
