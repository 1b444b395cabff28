//! The fleet page's sparklines in headless Chromium: the last hour of motor current of the
//! rows in view, fetched with one fleet query, drawn at once (not only after live readings),
//! and extended by live readings.

use std::time::Duration;

use espwatch_core::access::Role;
use serde_json::{Value, json};

use super::{PASSWORD, browser, console_url, now_minus, sign_in};
use crate::support::*;

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_shows_an_hour_of_motor_current_per_well_on_first_load() {
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
    // W-1..W-3: a reading a minute for the last hour; W-4: one reading only.
    let mut batch: Vec<Value> = Vec::new();
    for w in 1..=3 {
        for k in 0..60 {
            batch.push(reading(
                &format!("W-{w}"),
                &now_minus(60 * (60 - k) - 30),
                30.0 + w as f64 * 5.0 + ((k * 7) % 11) as f64 * 0.3,
            ));
        }
    }
    batch.push(reading("W-4", &now_minus(200), 44.0));
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");

    b.goto(&console_url(&app)).await;
    sign_in(&b, "otto", PASSWORD).await;
    let points = b
        .wait(
            "the sparklines of W-1..W-3",
            "const n = ['W-1','W-2','W-3'].map(w => { const c = document.querySelector(`tr[data-well=\"${w}\"] canvas.spark`); return c ? Number(c.dataset.points) : 0; }); return n.every(x => x >= 25) && n;",
            Duration::from_secs(10),
        )
        .await;
    println!("sparkline buckets on first load: {points}");
    // One reading is no line.
    let w4 = b
        .js(
            "return document.querySelector('tr[data-well=\"W-4\"] canvas.spark') === null;",
            json!([]),
        )
        .await;
    assert_eq!(w4, true, "no sparkline from a single reading");
    let requests = b
        .js(
            "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/wells/telemetry')).length;",
            json!([]),
        )
        .await;
    assert_eq!(requests, 1, "one request for the rows in view");

    // A live reading of W-4 starts its line.
    b.wait(
        "the live connection",
        "return document.getElementById('live-status').dataset.state === 'on';",
        Duration::from_secs(10),
    )
    .await;
    let (status, body) = app.ingest_json(&reading("W-4", &now_minus(1), 46.0)).await;
    assert_eq!(status, 200, "{body}");
    b.wait(
        "W-4's sparkline after a live reading",
        "const c = document.querySelector('tr[data-well=\"W-4\"] canvas.spark'); return c && Number(c.dataset.points) === 2;",
        Duration::from_secs(2),
    )
    .await;
    b.quit().await;
}
}
