//! The console in real headless Chromium over WebDriver: sign-in (and a wrong password), the
//! fleet page, a reading ingested through the API showing within a second, acknowledging an
//! alarm from the page, a viewer without the button, sign-out; 1 000 wells; screenshots.
//!
//! Skipped with a printed reason when chromium/chromedriver are missing, unless
//! ESPWATCH_REQUIRE_SERVICES=1. `ESPWATCH_SCREENSHOTS=DIR` writes the README's pictures there.

mod admin;
mod alarms;
mod ask;
mod fleet;
mod harness;
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use espwatch_core::access::Role;
use espwatch_store::NewAlarm;
use serde_json::{Value, json};

use crate::support::*;
use webdriver::Browser;

const PASSWORD: &str = "correct horse battery staple";

async fn browser() -> Option<Browser> {
    init();
    match webdriver::locate() {
        Ok((chromium, driver)) => Some(Browser::start(&chromium, &driver).await),
        Err(reason) => {
            if std::env::var("ESPWATCH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{reason}, and ESPWATCH_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping browser test: {reason}");
            None
        }
    }
}

/// The console's address. `localhost`, not 127.0.0.1: browsers treat it as a secure context,
/// so the `Secure` session cookie is kept over plain HTTP in tests.
fn console_url(app: &TestApp) -> String {
    format!("http://localhost:{}/", app.address.port())
}

async fn sign_in(b: &Browser, user: &str, password: &str) {
    b.wait(
        "the sign-in form",
        "return !document.getElementById('signin').hidden;",
        Duration::from_secs(10),
    )
    .await;
    b.type_into("#username", user).await;
    b.type_into("#password", password).await;
    b.click("#signin-submit").await;
}

fn now_minus(secs: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339()
}

async fn raise(app: &TestApp, well: &str, condition: &str, severity: &str) -> i64 {
    let (alarm, _) = app
        .alarms
        .as_ref()
        .expect("alarm store")
        .raise_alarm(NewAlarm {
            well_id: well.parse().unwrap(),
            condition: condition.parse().unwrap(),
            severity: severity.parse().unwrap(),
            confidence: 0.87,
            started_at: espwatch_core::Timestamp::from_datetime(
                chrono::Utc::now() - chrono::Duration::minutes(20),
            ),
            detail: json!({
                "evidence": [{"feature": "intake_pressure_ratio", "value": 0.41, "threshold": 0.6, "relation": "<="}],
                "action": "Check the wing valve and the choke.",
            }),
        })
        .await
        .unwrap();
    alarm.id
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_live_acknowledges_and_signs_out_and_a_viewer_cannot_ack() {
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
    create_user(app.security.as_ref(), "vic", PASSWORD, Role::Viewer, None).await;
    let batch: Vec<Value> = (1..=3)
        .map(|i| reading(&format!("W-{i}"), &now_minus(30), 40.0 + i as f64))
        .collect();
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    let alarm = raise(&app, "W-2", "closed_valve", "critical").await;

    b.goto(&console_url(&app)).await;
    // A wrong password says so and stays on the sign-in page.
    sign_in(&b, "otto", "not the password at all").await;
    let error = b
        .wait(
            "the sign-in error",
            "const e = document.getElementById('signin-error'); return !e.hidden && e.textContent;",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("Wrong user name or password"),
        "{error}"
    );

    sign_in(&b, "otto", PASSWORD).await;
    b.wait(
        "three rows in the fleet table",
        "return document.querySelectorAll('#fleet-rows tr').length === 3;",
        Duration::from_secs(10),
    )
    .await;
    let state = b
        .js(
            "return document.querySelector('tr[data-well=\"W-2\"]').dataset.state;",
            json!([]),
        )
        .await;
    assert_eq!(
        state, "critical",
        "the well with an open critical alarm is red"
    );
    let admin_link = b
        .js(
            "return document.getElementById('nav-admin').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(admin_link, true, "no administration for an operator");
    b.wait(
        "the live connection",
        "return document.getElementById('live-status').dataset.state === 'on';",
        Duration::from_secs(10),
    )
    .await;

    // A reading sent through the API shows in the open page within a second.
    let sent = Instant::now();
    let (status, body) = app.ingest_json(&reading("W-3", &now_minus(1), 77.25)).await;
    assert_eq!(status, 200, "{body}");
    b.wait(
        "the new motor current of W-3",
        "const c = document.querySelector('tr[data-well=\"W-3\"] td[data-channel=\"motor_current_a\"]'); return c && c.textContent === '77.25';",
        Duration::from_secs(1),
    )
    .await;
    println!("API ingest → value on screen: {:?}", sent.elapsed());

    // Acknowledge from the alarm list, with a comment.
    b.click("#nav-alarms").await;
    b.wait(
        "the acknowledge button",
        &format!("return document.querySelector('button[data-ack=\"{alarm}\"]');"),
        Duration::from_secs(10),
    )
    .await;
    b.click(&format!("button[data-ack=\"{alarm}\"]")).await;
    b.type_into(".ack-comment", "valve crew dispatched").await;
    b.click(".ack-confirm").await;
    b.wait(
        "the alarm shown acknowledged",
        &format!("const r = document.querySelector('tr[data-alarm=\"{alarm}\"]'); return r && r.dataset.state === 'acknowledged';"),
        Duration::from_secs(10),
    )
    .await;
    let (_, alarms) = app.get("/api/v1/alarms?state=acknowledged").await;
    assert_eq!(alarms["alarms"][0]["id"], alarm, "{alarms}");
    assert_eq!(alarms["alarms"][0]["acknowledged_by"], "otto");
    assert_eq!(alarms["alarms"][0]["comment"], "valve crew dispatched");

    // Units switch to SI in the page only.
    b.click("#nav-fleet").await;
    b.wait(
        "the fleet again",
        "return document.querySelectorAll('#fleet-rows tr').length === 3;",
        Duration::from_secs(10),
    )
    .await;
    b.js(
        "const s = document.getElementById('units'); s.value = 'si'; s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .await;
    let kpa = b
        .js("return document.querySelector('tr[data-well=\"W-1\"] td[data-channel=\"intake_pressure_psi\"]').textContent;", json!([]))
        .await;
    assert_eq!(kpa, "5,864", "850.5 psi in kPa");

    // Sign out: back to the sign-in form, and the cookie no longer works.
    b.click("#logout").await;
    b.wait(
        "the sign-in form after sign-out",
        "return !document.getElementById('signin').hidden && document.getElementById('topbar').hidden;",
        Duration::from_secs(10),
    )
    .await;
    b.goto(&console_url(&app)).await;
    b.wait(
        "the sign-in form after a reload",
        "return !document.getElementById('signin').hidden;",
        Duration::from_secs(10),
    )
    .await;

    // A viewer sees alarms but no acknowledge button.
    let other = raise(&app, "W-1", "gas_lock", "critical").await;
    sign_in(&b, "vic", PASSWORD).await;
    b.wait(
        "the viewer's fleet",
        "return document.querySelectorAll('#fleet-rows tr').length === 3;",
        Duration::from_secs(10),
    )
    .await;
    b.click("#nav-alarms").await;
    b.wait(
        "the raised alarm in the viewer's list",
        &format!("return document.querySelector('tr[data-alarm=\"{other}\"]');"),
        Duration::from_secs(10),
    )
    .await;
    let buttons = b
        .js(
            "return document.querySelectorAll('button.ack').length;",
            json!([]),
        )
        .await;
    assert_eq!(buttons, 0, "no acknowledge button for a viewer");
    b.quit().await;
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_a_thousand_wells_renders_within_a_second() {
    let Some(b) = browser().await else { return };
    let app = spawn_app().await;
    create_user(app.security.as_ref(), "ada", PASSWORD, Role::Admin, None).await;
    let batch: Vec<Value> = (0..1000)
        .map(|i| reading(&format!("F-{i:04}"), &now_minus(60), 30.0 + (i % 50) as f64))
        .collect();
    let (status, body) = app.ingest_json(&json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    for i in 0..20 {
        raise(&app, &format!("F-{:04}", i * 37), "gas_lock", "major").await;
    }
    b.goto(&console_url(&app)).await;
    sign_in(&b, "ada", PASSWORD).await;
    b.wait(
        "1 000 rows",
        "return document.querySelectorAll('#fleet-rows tr').length === 1000;",
        Duration::from_secs(10),
    )
    .await;
    // Time a fresh load of the page, signed in: navigation start → 1 000 rows on screen.
    b.goto(&format!("{}?fresh#/fleet", console_url(&app))).await;
    let ms = b
        .wait(
            "1 000 rows after a reload",
            "return document.querySelectorAll('#fleet-rows tr').length === 1000 && performance.now();",
            Duration::from_secs(10),
        )
        .await
        .as_f64()
        .unwrap();
    let phases = b
        .js(
            "return performance.getEntriesByType('mark').map(e => `${e.name} ${Math.round(e.startTime)}`).concat(performance.getEntriesByType('resource').filter(e => e.name.includes('/api/')).map(e => `${new URL(e.name).pathname} ${Math.round(e.startTime)}→${Math.round(e.responseEnd)}`)).join('; ');",
            json!([]),
        )
        .await;
    println!("fleet of 1000 wells: first render {ms:.0} ms after navigation ({phases})");
    assert!(ms < 3000.0, "first render took {ms:.0} ms");
    // Search narrows at once; a live reading updates one row.
    b.type_into("#fleet-search", "F-099").await;
    let shown = b
        .js(
            "return document.querySelectorAll('#fleet-rows tr').length;",
            json!([]),
        )
        .await;
    assert_eq!(shown, 10, "F-0990..F-0999");
    let chips = b
        .js(
            "return document.querySelector('#fleet-conditions .chip b').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(chips, "20", "20 wells with gas lock");

    // An admin also sees users, API keys and the audit trail.
    b.click("#nav-admin").await;
    b.wait(
        "the administration page",
        "return document.querySelector('#users-table tr[data-user=\"ada\"]') && document.querySelector('#keys-table tbody tr') && document.querySelector('#audit-rows tr[data-kind=\"login_success\"]');",
        Duration::from_secs(10),
    )
    .await;
    b.quit().await;
}

/// A simulated well with a gas lock, registered with its pump curve, plus healthy neighbours.
async fn gas_lock_fleet(app: &TestApp) {
    use espwatch_core::sim::fleet::{ConditionChoice, IntervalChoice, PinnedCondition, PinnedWell};
    use espwatch_core::sim::{FleetConfig, WellSimulator, csv, plan_fleet};
    use espwatch_core::{Condition, Timestamp};
    const HOUR: i64 = 3_600_000_000;
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = Timestamp(now - 14 * HOUR - now.rem_euclid(60_000_000));
    let mut config = FleetConfig::new(11, 8, start, 14 * HOUR);
    config.conditions = ConditionChoice::List(vec![Condition::Overload, Condition::BrokenShaft]);
    config.min_healthy_micros = 6 * HOUR;
    config.interval = IntervalChoice::Fixed(60_000_000);
    config.pinned = vec![
        PinnedWell {
            id: Some("PAD-A-07".to_owned()),
            pump: Some("RX-538-2600".into()),
            interval: Some("60s".into()),
            conditions: vec![PinnedCondition {
                condition: Condition::GasLock,
                start: "11h".into(),
                end: Some("13h".into()),
                severity: Some(0.8),
            }],
            ..PinnedWell::default()
        },
        // Gas locked until now: tripped between restarts, its episode still open.
        PinnedWell {
            id: Some("PAD-B-03".to_owned()),
            pump: Some("RX-538-2600".into()),
            interval: Some("60s".into()),
            conditions: vec![PinnedCondition {
                condition: Condition::GasLock,
                start: "12h".into(),
                end: None,
                severity: Some(0.8),
            }],
            ..PinnedWell::default()
        },
    ];
    let plan = plan_fleet(&config).unwrap();
    for well in &plan.wells {
        let (status, body) = app
            .send(app.client.post(app.url("/api/v1/wells")).json(&well.meta))
            .await;
        assert_eq!(status, 201, "{body}");
        let mut sim = WellSimulator::new(well, config.start, config.duration_micros);
        let mut out = Vec::new();
        csv::write_header(&mut out);
        while let Some(s) = sim.next_sample() {
            if let Some(m) = &s.measured {
                csv::write_row(&mut out, well.meta.well_id.as_str(), s.ts, m);
            }
        }
        let (status, body) = app.post("/api/v1/telemetry", "text/csv", out).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_a_simulated_fleet_with_a_gas_lock() {
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
    gas_lock_fleet(&app).await;
    crate::diagnostics::wait_for_alarm(&app, "well_id=PAD-A-07").await;
    crate::diagnostics::wait_for_alarm(&app, "well_id=PAD-B-03").await;
    let dir = std::env::var_os("ESPWATCH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));

    b.goto(&console_url(&app)).await;
    sign_in(&b, "otto", PASSWORD).await;
    b.wait(
        "the fleet",
        "return document.querySelectorAll('#fleet-rows tr').length === 10;",
        Duration::from_secs(20),
    )
    .await;
    b.wait(
        "the sparklines (the last hour of motor current)",
        "return document.querySelectorAll('#fleet-rows canvas.spark').length === 10;",
        Duration::from_secs(10),
    )
    .await;
    // One line per well, however long its name: a screen shows many wells.
    // The table fits the window (no sideways scrolling to reach the trend).
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert_eq!(overflow, 0, "the fleet table is wider than the window");
    // Each row against the height of one line of its text (the well's link): under two.
    let heights = b
        .js(
            "return [...document.querySelectorAll('#fleet-rows tr')].map(r => r.getBoundingClientRect().height / r.querySelector('a').getBoundingClientRect().height);",
            json!([]),
        )
        .await;
    assert!(
        heights
            .as_array()
            .unwrap()
            .iter()
            .all(|lines| lines.as_f64().unwrap() < 2.0),
        "a fleet row wraps (row height in lines of text): {heights}"
    );
    b.screenshot(&dir.join("fleet.png")).await;

    b.goto(&format!("{}#/well/PAD-A-07", console_url(&app)))
        .await;
    b.wait(
        "the well page with charts, diagnosis and pump curve",
        "return document.querySelectorAll('#well-charts .uplot').length >= 3 && !document.getElementById('pump-curve').hidden && document.querySelector('#well-diagnosis h3, #diagnosis-normal');",
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.screenshot(&dir.join("well.png")).await;
    // The stacked charts share one time axis: their plots are equally wide and aligned, so
    // one instant is at the same x on every chart (the motor chart has a second unit, Hz).
    let plots = b
        .js(
            "return [...document.querySelectorAll('#well-charts .u-over')].map(o => { const r = o.getBoundingClientRect(); return [Math.round(r.left), Math.round(r.width)]; });",
            json!([]),
        )
        .await;
    let plots = plots.as_array().unwrap();
    assert!(
        plots.len() >= 3 && plots.iter().all(|p| p == &plots[0]),
        "chart plots not aligned: {plots:?}"
    );
    // The pump curve's axes are labelled at round values (steps of 1, 2, 2.5 or 5 × 10^k).
    let ticks = b
        .js(
            "const c = document.getElementById('pump-curve'); return [c.dataset.flowTicks, c.dataset.headTicks];",
            json!([]),
        )
        .await;
    for axis in ticks.as_array().unwrap() {
        let values: Vec<f64> = axis
            .as_str()
            .unwrap_or_else(|| panic!("no ticks: {ticks}"))
            .split(',')
            .map(|t| t.parse().unwrap())
            .collect();
        let step = values[1] - values[0];
        let mantissa = step / 10f64.powf(step.log10().floor());
        assert!(
            [1.0, 2.0, 2.5, 5.0]
                .iter()
                .any(|m| (mantissa - m).abs() < 1e-6)
                && values
                    .iter()
                    .enumerate()
                    .all(|(i, v)| (v - i as f64 * step).abs() < 1e-6 * step),
            "pump curve ticks not round: {values:?}"
        );
    }
    // The well's alarm history, cleared episodes included: the gas lock raised and cleared
    // by the diagnostics and never acknowledged is two steps.
    let history = b
        .wait(
            "the cleared gas lock in the well's alarms",
            "const r = document.querySelector('#well-alarms tr[data-state=\"cleared\"]'); return r && r.querySelector('.alarm-history summary').textContent;",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(history, "2 steps", "raised and cleared");
    // A live reading of this well extends the open charts and the current values.
    let (status, body) = app
        .ingest_json(&reading("PAD-A-07", &now_minus(0), 55.5))
        .await;
    assert_eq!(status, 200, "{body}");
    b.wait(
        "the live reading on the well page",
        "const c = document.querySelector('#well-latest [data-channel=\"motor_current_a\"]'); return c && c.textContent.startsWith('55.5') && document.querySelectorAll('#well-charts .uplot').length >= 3;",
        Duration::from_secs(2),
    )
    .await;

    // A well still gas locked but tripped between restarts: its latest readings show a
    // stopped pump (no finding), its episode is open, and the diagnosis says what it has and
    // what to do.
    let (status, diagnosis) = app.get("/api/v1/wells/PAD-B-03/diagnosis").await;
    assert_eq!(status, 200, "{diagnosis}");
    assert_eq!(diagnosis["findings"], json!([]), "{diagnosis}");
    assert_eq!(
        diagnosis["open_episodes"][0]["condition"], "gas_lock",
        "{diagnosis}"
    );
    b.goto(&format!("{}#/well/PAD-B-03", console_url(&app)))
        .await;
    let ongoing = b
        .wait(
            "the ongoing gas lock in the diagnosis",
            "const f = document.querySelector('#well-diagnosis .finding[data-condition=\"gas_lock\"]'); return f && f.textContent;",
            Duration::from_secs(20),
        )
        .await;
    let ongoing = ongoing.as_str().unwrap();
    assert!(
        ongoing.contains("Gas lock") && ongoing.contains("What to do"),
        "{ongoing}"
    );
    let normal = b
        .js(
            "return !!document.getElementById('diagnosis-normal');",
            json!([]),
        )
        .await;
    assert_eq!(
        normal, false,
        "no 'no abnormal condition' beside an open gas lock"
    );

    b.goto(&format!("{}#/alarms", console_url(&app))).await;
    b.wait(
        "the alarm list",
        "return document.querySelector('#alarm-rows tr[data-alarm]');",
        Duration::from_secs(10),
    )
    .await;
    b.js(
        "const s = document.getElementById('alarm-state'); s.value = 'all'; s.dispatchEvent(new Event('change')); return true;",
        json!([]),
    )
    .await;
    b.screenshot(&dir.join("alarms.png")).await;
    println!("screenshots in {}", dir.display());
    b.quit().await;
}
