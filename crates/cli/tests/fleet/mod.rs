//! `GET /api/v1/wells/telemetry`: one bucketed query for many wells (the console's fleet
//! sparklines). Each well's buckets equal what `/wells/{id}/telemetry` answers for the same
//! range and step; the answer is narrowed to the wells the caller may see; the role needs
//! `telemetry:read`; the size is bounded.

use espwatch_core::access::Role;
use serde_json::{Value, json};

use crate::support::*;

const MINUTE: i64 = 60;

/// An hour of readings, one a minute, for W-1..W-3 (the current differs per well and minute).
async fn an_hour_of_three_wells(app: &TestApp) -> (String, String) {
    let now = chrono::Utc::now();
    let minute = now.timestamp() - now.timestamp().rem_euclid(MINUTE);
    let mut batch = Vec::new();
    for w in 1..=3 {
        for k in 0..60 {
            let ts = chrono::DateTime::from_timestamp(minute - (59 - k) * MINUTE, 0)
                .unwrap()
                .to_rfc3339();
            batch.push(reading(
                &format!("W-{w}"),
                &ts,
                20.0 * w as f64 + (k % 7) as f64 * 0.5,
            ));
        }
    }
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    let from = chrono::DateTime::from_timestamp(minute - 60 * MINUTE, 0)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp(minute + MINUTE, 0)
        .unwrap()
        .to_rfc3339();
    (from, to)
}

fn ids(body: &Value) -> Vec<&str> {
    body["wells"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|w| w["well_id"].as_str().unwrap())
        .collect()
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_query_answers_each_well_as_its_own_query_and_only_for_visible_wells() {
    let app = spawn_app().await;
    let (from, to) = an_hour_of_three_wells(&app).await;
    let q = |extra: &str| {
        format!(
            "/api/v1/wells/telemetry?fields=motor_current_a&from={}&to={}&step=5m{extra}",
            urlencoding(&from),
            urlencoding(&to)
        )
    };
    let (status, fleet) = app.get(&q("")).await;
    assert_eq!(status, 200, "{fleet}");
    assert_eq!(ids(&fleet), ["W-1", "W-2", "W-3"], "{fleet}");
    assert_eq!(fleet["step"], "5m");
    assert_eq!(fleet["agg"], "avg");
    for w in fleet["wells"].as_array().unwrap() {
        let id = w["well_id"].as_str().unwrap();
        let (status, one) = app
            .get(&format!(
                "/api/v1/wells/{id}/telemetry?fields=motor_current_a&from={}&to={}&step=5m",
                urlencoding(&from),
                urlencoding(&to)
            ))
            .await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(w["ts"], one["ts"], "{id}");
        assert_eq!(w["fields"], one["fields"], "{id}");
        assert!(w["ts"].as_array().unwrap().len() >= 12, "{w}");
    }

    // Named wells only; an unknown one is simply absent.
    let (status, some) = app.get(&q("&wells=W-3,W-1,NOPE-9")).await;
    assert_eq!(status, 200, "{some}");
    assert_eq!(ids(&some), ["W-1", "W-3"]);

    // A key limited to W-2 sees W-2 only, named or not.
    let key = create_key(app.security.as_ref(), "w2", Role::Analyst, Some(vec!["W-2".into()])).await;
    let limited = bearer_client(&key);
    for extra in ["", "&wells=W-1,W-2", "&wells=W-1"] {
        let (status, body) = app.send(limited.get(app.url(&q(extra)))).await;
        assert_eq!(status, 200, "{body}");
        let want: Vec<&str> = if extra == "&wells=W-1" { vec![] } else { vec!["W-2"] };
        assert_eq!(ids(&body), want, "{extra}: {body}");
    }

    // History needs telemetry:read, as for one well.
    let key = create_key(app.security.as_ref(), "viewer", Role::Viewer, None).await;
    assert!(!Role::Viewer.allows(espwatch_core::access::Permission::TelemetryRead));
    let (status, body) = app.send(bearer_client(&key).get(app.url(&q("")))).await;
    assert_eq!(status, 403, "{body}");

    // Always bucketed, and bounded in buckets × wells.
    let (status, body) = app
        .get("/api/v1/wells/telemetry?fields=motor_current_a")
        .await;
    assert_eq!(status, 400, "{body}");
    let eight_days_ago = (chrono::Utc::now() - chrono::Duration::days(8)).to_rfc3339();
    let (status, body) = app
        .get(&format!(
            "/api/v1/wells/telemetry?from={}&step=1s",
            urlencoding(&eight_days_ago)
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["parameter"], "step", "{body}");
    // A step longer than any range is one bucket, not an overflow.
    let (status, body) = app
        .get("/api/v1/wells/telemetry?fields=motor_current_a&step=106751991d")
        .await;
    assert!(status == 200 || status == 400, "{status} {body}");
}
}

fn urlencoding(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
