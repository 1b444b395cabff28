//! The console's alarm reads and its charts' time zone: the fleet page reads the alarms once
//! (`state=open`), the well page once, the alarm list in pages ("Older alarms" follows
//! `next_cursor`); charts in UTC like the tables, whatever the browser's zone.

use std::time::Duration;

use espwatch_core::access::Role;
use espwatch_store::NewAlarm;
use serde_json::{Value, json};

use super::{PASSWORD, browser, console_url, now_minus, raise, sign_in};
use crate::support::*;

/// The console's `/api/v1/alarms` requests so far (query strings), from the page's own
/// resource timing.
const ALARM_REQUESTS: &str = "return performance.getEntriesByType('resource').map(e => new URL(e.name)).filter(u => u.pathname === '/api/v1/alarms').map(u => u.search);";

async fn alarm_requests(b: &super::webdriver::Browser) -> Vec<String> {
    let v = b.js(ALARM_REQUESTS, json!([])).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_alarms_once_pages_older_ones_and_charts_in_utc() {
    let Some(b) = browser().await else { return };
    let app = spawn_app().await;
    create_user(
        app.security.as_ref(),
        "otto",
        PASSWORD,
        Role::Operator,
        None,
    )
    .await;
    // Three wells; W-1 with a day of readings for its charts.
    let mut batch: Vec<Value> = (1..=3)
        .map(|i| reading(&format!("W-{i}"), &now_minus(30), 40.0 + i as f64))
        .collect();
    batch.extend((1..288).map(|i| reading("W-1", &now_minus(i * 300), 40.0 + (i % 5) as f64)));
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    // 203 old alarms, raised and cleared, of a well without telemetry, then two open ones:
    // more than one page (200) of the console's alarm list.
    let store = app.alarms.clone().expect("alarm store");
    for day in 0..203i64 {
        let started_at = espwatch_core::Timestamp::from_datetime(
            chrono::Utc::now() - chrono::Duration::days(2 + day),
        );
        store
            .raise_alarm(NewAlarm {
                well_id: "W-9".parse().unwrap(),
                condition: "pump_off".parse().unwrap(),
                severity: "minor".parse().unwrap(),
                confidence: 0.7,
                started_at,
                detail: json!({}),
            })
            .await
            .unwrap();
        store
            .clear_alarm(
                &"W-9".parse().unwrap(),
                "pump_off".parse().unwrap(),
                espwatch_core::Timestamp(started_at.0 + 3_600_000_000),
            )
            .await
            .unwrap()
            .expect("cleared");
    }
    let open_w2 = raise(&app, "W-2", "closed_valve", "critical").await;
    raise(&app, "W-1", "gas_lock", "major").await;

    // A browser far from UTC (+05:45): what it shows must not depend on it.
    b.set_time_zone("Asia/Kathmandu").await;
    b.goto(&console_url(&app)).await;
    let offset = b
        .js("return new Date().getTimezoneOffset();", json!([]))
        .await;
    assert_eq!(offset, -345, "the page runs at UTC+05:45");
    sign_in(&b, "otto", PASSWORD).await;
    b.wait(
        "the fleet with W-2 red and the alarm count",
        "return document.querySelectorAll('#fleet-rows tr').length === 3 && document.querySelector('tr[data-well=\"W-2\"]').dataset.state === 'critical' && document.getElementById('alarm-count').textContent === '2';",
        Duration::from_secs(10),
    )
    .await;
    // The top bar's count and the fleet share one read of the open alarms.
    assert_eq!(alarm_requests(&b).await, vec!["?state=open"]);

    // The alarm list: the newest page, then the older ones through next_cursor.
    b.click("#nav-alarms").await;
    b.wait(
        "the open alarms in the list",
        &format!("return document.querySelectorAll('#alarm-rows tr[data-alarm]').length === 2 && document.querySelector('tr[data-alarm=\"{open_w2}\"]');"),
        Duration::from_secs(10),
    )
    .await;
    b.js(
        "const s = document.getElementById('alarm-state'); s.value = 'all'; s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .await;
    let shown = b
        .js(
            "return [document.querySelectorAll('#alarm-rows tr[data-alarm]').length, document.getElementById('alarms-older').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(
        shown,
        json!([200, false]),
        "the first page, and more to read"
    );
    b.click("#alarms-older").await;
    b.wait(
        "all 205 alarms after 'Older alarms'",
        "return document.querySelectorAll('#alarm-rows tr[data-alarm]').length === 205 && document.getElementById('alarms-older').hidden;",
        Duration::from_secs(10),
    )
    .await;
    let requests = alarm_requests(&b).await;
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[1], "?limit=200");
    assert!(
        requests[2].starts_with("?limit=200&cursor="),
        "{requests:?}"
    );

    // The well page reads its alarms once (bands, diagnosis and its list).
    b.js(
        "performance.clearResourceTimings(); return true;",
        json!([]),
    )
    .await;
    b.goto(&format!("{}#/well/W-1", console_url(&app))).await;
    b.wait(
        "W-1's charts and its alarm",
        "return document.querySelectorAll('#well-charts .uplot').length >= 1 && document.querySelector('#well-alarms tr[data-alarm]');",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(alarm_requests(&b).await, vec!["?limit=200&well_id=W-1"]);

    // The charts' time axes are in UTC (labelled so), as the tables are.
    let charts = b
        .js(
            "return [...document.querySelectorAll('#well-charts .chart')].map(c => [c.dataset.xTicks || null, c.querySelector('.u-legend .u-series:first-child .u-label')?.textContent || null]);",
            json!([]),
        )
        .await;
    let charts = charts.as_array().unwrap();
    assert!(!charts.is_empty());
    for chart in charts {
        assert_eq!(chart[1], "Time (UTC)", "{chart}");
        let ticks: Vec<(i64, String)> = serde_json::from_str(
            chart[0]
                .as_str()
                .unwrap_or_else(|| panic!("no ticks: {chart}")),
        )
        .unwrap();
        assert!(ticks.len() >= 2, "{ticks:?}");
        let spacing = ticks[1].0 - ticks[0].0;
        for (secs, label) in &ticks {
            let at = chrono::DateTime::from_timestamp(*secs, 0).unwrap();
            let first_line = label.lines().next().unwrap();
            assert_eq!(first_line, at.format("%H:%M").to_string(), "{ticks:?}");
            // Hourly or sparser ticks fall on whole UTC hours, not the browser's (which are
            // a quarter past in UTC).
            if spacing >= 3600 {
                assert_eq!(secs % 3600, 0, "{ticks:?}");
            }
        }
    }
    b.quit().await;
    app.stop().await;
}

/// The well page's alarm bands cover the range shown, not only the well's newest page of
/// alarms: a well with 250 newer alarms still shows the band of an old gas-lock episode once
/// the chart's range reaches back to it (read with `from`/`to`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_well_page_bands_every_alarm_of_the_range_shown_however_many_are_newer() {
    let Some(b) = browser().await else { return };
    let app = spawn_app().await;
    create_user(
        app.security.as_ref(),
        "otto",
        PASSWORD,
        Role::Operator,
        None,
    )
    .await;
    // A week of readings of W-1, one every two hours.
    let batch: Vec<Value> = (0..84)
        .map(|i| reading("W-1", &now_minus(60 + i * 7200), 40.0 + (i % 5) as f64))
        .collect();
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    let store = app.alarms.clone().expect("alarm store");
    let at = |minutes_ago: i64| {
        espwatch_core::Timestamp::from_datetime(
            chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
        )
    };
    let w1: espwatch_core::WellId = "W-1".parse().unwrap();
    // A gas-lock episode five days ago, six hours long...
    let (old, _) = store
        .raise_alarm(NewAlarm {
            well_id: w1.clone(),
            condition: "gas_lock".parse().unwrap(),
            severity: "critical".parse().unwrap(),
            confidence: 0.9,
            started_at: at(5 * 1440),
            detail: json!({}),
        })
        .await
        .unwrap();
    store
        .clear_alarm(&w1, "gas_lock".parse().unwrap(), at(5 * 1440 - 360))
        .await
        .unwrap()
        .expect("cleared");
    // ... then 250 newer alarms, ten minutes each, one every 20 minutes up to an hour ago:
    // more than the well page's first page of alarms (200).
    let mut newer = Vec::new();
    for k in 0..250i64 {
        let (alarm, _) = store
            .raise_alarm(NewAlarm {
                well_id: w1.clone(),
                condition: "pump_off".parse().unwrap(),
                severity: "minor".parse().unwrap(),
                confidence: 0.7,
                started_at: at(60 + 20 * k),
                detail: json!({}),
            })
            .await
            .unwrap();
        store
            .clear_alarm(&w1, "pump_off".parse().unwrap(), at(50 + 20 * k))
            .await
            .unwrap()
            .expect("cleared");
        newer.push(alarm.id);
    }

    b.goto(&console_url(&app)).await;
    sign_in(&b, "otto", PASSWORD).await;
    b.wait(
        "the fleet",
        "return document.querySelectorAll('#fleet-rows tr').length === 1;",
        Duration::from_secs(10),
    )
    .await;
    b.goto(&format!("{}#/well/W-1", console_url(&app))).await;
    const BANDS: &str = "const c = document.querySelector('#well-charts .chart'); return c && c.dataset.bands !== undefined ? c.dataset.bands.split(' ').filter(Boolean).map(Number) : null;";
    // The last 24 hours (the default range): bands of newer alarms only.
    let day = b
        .wait(
            "the bands of the last 24 hours",
            &format!("const ids = (() => {{ {BANDS} }})(); return ids && ids.length > 60 && ids;"),
            Duration::from_secs(20),
        )
        .await;
    let day: Vec<i64> = serde_json::from_value(day).unwrap();
    assert!(!day.contains(&old.id), "{day:?}");
    assert!(day.iter().all(|id| newer.contains(id)), "{day:?}");
    assert!(!newer[..60].iter().any(|id| !day.contains(id)), "{day:?}");

    // A week: the old episode's band too, and every newer alarm's.
    b.click("button[data-range=\"7d\"]").await;
    let week = b
        .wait(
            "the old gas-lock episode's band over the week",
            &format!(
                "const ids = (() => {{ {BANDS} }})(); return ids && ids.includes({}) && ids;",
                old.id
            ),
            Duration::from_secs(20),
        )
        .await;
    let week: Vec<i64> = serde_json::from_value(week).unwrap();
    let missing: Vec<&i64> = newer.iter().filter(|id| !week.contains(id)).collect();
    assert!(missing.is_empty(), "no band for {missing:?}");
    b.quit().await;
    app.stop().await;
}
