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

/// Per bucket of `step` seconds: (count, sum, min, max) of `motor_current_a` over the raw
/// points of the wells named, read one well at a time through `/wells/{id}/telemetry`.
async fn raw_buckets(
    app: &TestApp,
    wells: &[&str],
    from: &str,
    to: &str,
    step: i64,
) -> std::collections::BTreeMap<i64, (u64, f64, f64, f64)> {
    let mut out = std::collections::BTreeMap::new();
    for id in wells {
        let (status, raw) = app
            .get(&format!(
                "/api/v1/wells/{id}/telemetry?fields=motor_current_a&from={}&to={}&max_points=1000000",
                urlencoding(from),
                urlencoding(to)
            ))
            .await;
        assert_eq!(status, 200, "{raw}");
        let values = raw["fields"]["motor_current_a"].as_array().unwrap();
        for (t, v) in raw["ts"].as_array().unwrap().iter().zip(values) {
            let Some(v) = v.as_f64() else { continue };
            let at = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
                .unwrap()
                .timestamp();
            let e = out.entry(at - at.rem_euclid(step)).or_insert((
                0u64,
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ));
            e.0 += 1;
            e.1 += v;
            e.2 = e.2.min(v);
            e.3 = e.3.max(v);
        }
    }
    out
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_aggregate_equals_the_raw_points_of_the_wells_the_caller_may_see() {
    let app = spawn_app().await;
    // W-1 and W-2 in field North, W-3 in South; six hours of readings every 5 minutes.
    for (w, field) in [("W-1", "North"), ("W-2", "North"), ("W-3", "South")] {
        let (status, body) = app
            .post(
                "/api/v1/wells",
                "application/json",
                json!({ "well_id": w, "field": field }).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let now = chrono::Utc::now().timestamp();
    let hour = now - now.rem_euclid(3_600);
    let start = hour - 6 * 3_600;
    let mut batch = Vec::new();
    for w in 1..=3 {
        for k in 0..72 {
            let ts = chrono::DateTime::from_timestamp(start + k * 300, 0).unwrap().to_rfc3339();
            batch.push(reading(&format!("W-{w}"), &ts, 10.0 * w as f64 + (k * w % 11) as f64 * 0.25));
        }
    }
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
    // A partial first hour, whole hours after it.
    let (from, to) = (at(start + 7 * 60), at(hour));
    let q = |extra: &str| {
        format!(
            "/api/v1/fleet/aggregate?fields=motor_current_a&from={}&to={}{extra}",
            urlencoding(&from),
            urlencoding(&to)
        )
    };
    let check = |body: Value, want: std::collections::BTreeMap<i64, (u64, f64, f64, f64)>, agg: &str| {
        let ts: Vec<i64> = body["ts"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap().timestamp())
            .collect();
        assert_eq!(ts, want.keys().copied().collect::<Vec<_>>(), "{agg}: {body}");
        for (got, (n, sum, min, max)) in body["fields"]["motor_current_a"].as_array().unwrap().iter().zip(want.values()) {
            let want = match agg {
                "avg" => sum / *n as f64,
                "min" => *min,
                _ => *max,
            };
            let got = got.as_f64().unwrap_or_else(|| panic!("{agg}: {body}"));
            assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{agg}: {got} vs {want}");
        }
    };
    for (step, secs) in [("1h", 3_600), ("30m", 1_800)] {
        let want = raw_buckets(&app, &["W-1", "W-2", "W-3"], &from, &to, secs).await;
        assert!(want.len() >= 6, "{want:?}");
        for agg in ["avg", "min", "max"] {
            let (status, body) = app.get(&q(&format!("&step={step}&agg={agg}"))).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["wells"], 3, "{body}");
            assert_eq!(body["agg"], agg);
            check(body, want.clone(), agg);
        }
    }
    let hourly = |wells: &'static [&'static str]| {
        let (app, from, to) = (&app, from.clone(), to.clone());
        async move { raw_buckets(app, wells, &from, &to, 3_600).await }
    };
    // Named wells (an unknown one adds nothing), and one oil field.
    let (status, body) = app.get(&q("&step=1h&wells=W-3,W-1,NOPE-9")).await;
    assert_eq!(status, 200, "{body}");
    check(body, hourly(&["W-1", "W-3"]).await, "avg");
    let (status, body) = app.get(&q("&step=1h&field=North")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["wells"], 2, "{body}");
    check(body, hourly(&["W-1", "W-2"]).await, "avg");

    // A key limited to W-2 gets W-2's readings only, named or not; none for W-1 alone.
    let key = create_key(app.security.as_ref(), "w2", Role::Analyst, Some(vec!["W-2".into()])).await;
    let limited = bearer_client(&key);
    for extra in ["", "&wells=W-1,W-2", "&field=North"] {
        let (status, body) = app.send(limited.get(app.url(&q(&format!("&step=1h{extra}"))))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["wells"], 1, "{extra}: {body}");
        check(body, hourly(&["W-2"]).await, "avg");
    }
    let (status, body) = app.send(limited.get(app.url(&q("&step=1h&wells=W-1")))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ts"], json!([]), "{body}");
    // It needs telemetry:read.
    let key = create_key(app.security.as_ref(), "viewer", Role::Viewer, None).await;
    let (status, body) = app.send(bearer_client(&key).get(app.url(&q("&step=1h")))).await;
    assert_eq!(status, 403, "{body}");

    // Bad parameters: 400 in the error envelope, naming the parameter.
    for (extra, parameter) in [
        ("&step=1h&agg=median", Some("agg")),
        ("&step=fortnight", Some("step")),
        ("&step=1h&wells=bad%20id", Some("wells")),
        ("", None),
        ("&step=1h&colour=red", None),
    ] {
        let (status, body) = app.get(&q(extra)).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert!(body["error"]["message"].is_string(), "{extra}: {body}");
        if let Some(p) = parameter {
            assert_eq!(body["error"]["details"]["parameter"], p, "{extra}: {body}");
        }
    }
    let (status, body) = app.get("/api/v1/fleet/aggregate?step=1h&from=yesterday").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["parameter"], "from", "{body}");
}
}
