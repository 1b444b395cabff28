//! The console's admin write actions in real Chromium: users (create, change role, disable),
//! API keys (create, shown once; revoke), notification channels and rules (the secret shown
//! once, a test message delivered to a real receiver), and an alarm's history; each change
//! checked through the API. Screenshots of the pages go next to the others.

use std::path::PathBuf;
use std::time::Duration;

use espwatch_core::access::Role;
use serde_json::json;

use super::{PASSWORD, browser, console_url, raise, sign_in};
use crate::notify::Receiver;
use crate::support::*;

fn screenshots() -> PathBuf {
    std::env::var_os("ESPWATCH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_keys_and_notifications_from_the_console() {
    let Some(b) = browser().await else { return };
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| c.notify_retry_base_ms = 100).await;
    create_user(app.security.as_ref(), "ada", PASSWORD, Role::Admin, None).await;
    create_user(
        app.security.as_ref(),
        "otto",
        PASSWORD,
        Role::Operator,
        None,
    )
    .await;
    let (status, _) = app.ingest_json(&reading("W-1", &ts(0), 40.0)).await;
    assert_eq!(status, 200);
    let alarm = raise(&app, "W-1", "closed_valve", "critical").await;

    b.goto(&console_url(&app)).await;
    sign_in(&b, "ada", PASSWORD).await;
    b.wait("the admin link", "return !document.getElementById('nav-admin').hidden && !document.getElementById('nav-notifications').hidden;", Duration::from_secs(10)).await;

    // Users: create one, change its role, disable it.
    b.click("#nav-admin").await;
    b.wait(
        "the users table",
        "return document.querySelector('#users-table tr[data-user=\"otto\"]');",
        Duration::from_secs(10),
    )
    .await;
    b.type_into("#new-user-name", "nina").await;
    b.type_into("#new-user-password", "short").await;
    b.click("#new-user-form button[type=submit]").await;
    let error = b.wait("the weak password refused", "const e = document.getElementById('new-user-error'); return !e.hidden && e.textContent;", Duration::from_secs(10)).await;
    assert!(error.as_str().unwrap().contains("12"), "{error}");
    b.type_into("#new-user-password", "night shift on the south pad")
        .await;
    b.type_into("#new-user-wells", "W-1, W-2").await;
    b.click("#new-user-form button[type=submit]").await;
    b.wait(
        "nina listed",
        "return document.querySelector('#users-table tr[data-user=\"nina\"]');",
        Duration::from_secs(10),
    )
    .await;
    let (_, users) = app.get("/api/v1/users").await;
    let nina = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "nina")
        .unwrap()
        .clone();
    assert_eq!(
        (nina["role"].clone(), nina["wells"].clone()),
        (json!("viewer"), json!(["W-1", "W-2"])),
        "{nina}"
    );
    b.js("const s = document.getElementById('role-nina'); s.value = 'operator'; s.dispatchEvent(new Event('change')); return true;", json!([])).await;
    b.wait(
        "the role changed",
        "const s = document.getElementById('role-nina'); return s && s.value === 'operator';",
        Duration::from_secs(10),
    )
    .await;
    // The change reloads the table: wait for the server to have it, then click in the new one.
    for _ in 0..100 {
        let (_, users) = app.get("/api/v1/users").await;
        if users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "nina" && u["role"] == "operator")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait("otto's toggle", "const t = document.querySelector('tr[data-user=\"otto\"] .user-toggle'); if (!t) return false; t.click(); return true;", Duration::from_secs(10)).await;
    b.wait("otto disabled", "const r = document.querySelector('tr[data-user=\"otto\"]'); return r && r.dataset.state === 'disabled';", Duration::from_secs(10)).await;
    let (_, users) = app.get("/api/v1/users").await;
    let by_name = |n: &str| {
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("nina")["role"], "operator");
    assert_eq!(by_name("otto")["disabled"], true);
    let (status, _) = app.login("otto", PASSWORD).await;
    assert_eq!(status, 401, "a disabled user cannot sign in");

    // API keys: created and shown once, then revoked (two clicks).
    b.type_into("#new-key-name", "scada-gw").await;
    b.click("#new-key-form button[type=submit]").await;
    let key = b
        .wait(
            "the new key shown once",
            "const e = document.getElementById('new-key-value'); return e && e.textContent;",
            Duration::from_secs(10),
        )
        .await;
    let key = key.as_str().unwrap().to_owned();
    let (status, _) = app
        .send(bearer_client(&key).get(app.url("/api/v1/wells")))
        .await;
    assert_eq!(
        status, 403,
        "an api_client key works but may not read wells"
    );
    let (status, _) = app
        .send(
            bearer_client(&key)
                .post(app.url("/api/v1/telemetry"))
                .json(&reading("W-1", &ts(10), 41.0)),
        )
        .await;
    assert_eq!(status, 200, "the new key sends telemetry");
    b.wait(
        "the key listed",
        "return document.querySelector('#keys-table tr[data-status=\"active\"] .key-revoke');",
        Duration::from_secs(10),
    )
    .await;
    b.js("const r = [...document.querySelectorAll('#keys-table tr')].find((r) => r.textContent.includes('scada-gw')); r.querySelector('.key-revoke').click(); r.querySelector('.key-revoke').click(); return true;", json!([])).await;
    b.wait("the key revoked", "return [...document.querySelectorAll('#keys-table tr')].some((r) => r.textContent.includes('scada-gw') && r.dataset.status === 'revoked');", Duration::from_secs(10)).await;
    let (status, _) = app
        .send(
            bearer_client(&key)
                .post(app.url("/api/v1/telemetry"))
                .json(&reading("W-1", &ts(20), 41.0)),
        )
        .await;
    assert_eq!(status, 401, "a revoked key is refused");
    let (_, audit) = app.get("/api/v1/audit?kind=apikey_revoke").await;
    assert_eq!(audit["records"][0]["actor"], "user:ada", "{audit}");
    b.screenshot(&screenshots().join("admin.png")).await;

    // Notifications: a webhook channel (secret shown once), a rule, a test message delivered.
    b.click("#nav-notifications").await;
    b.wait(
        "the notifications page",
        "return document.getElementById('channel-form');",
        Duration::from_secs(10),
    )
    .await;
    b.type_into("#channel-name", "scada").await;
    b.type_into("#channel-target", &receiver.url("/scada"))
        .await;
    b.click("#channel-form button[type=submit]").await;
    let secret = b
        .wait(
            "the secret shown once",
            "const e = document.getElementById('channel-secret-value'); return e && e.textContent;",
            Duration::from_secs(10),
        )
        .await;
    receiver.expect_secret("/scada", secret.as_str().unwrap());
    b.wait(
        "the channel listed",
        "return document.querySelector('#channel-table tr[data-channel]');",
        Duration::from_secs(10),
    )
    .await;
    let page = b
        .js(
            "return document.getElementById('channels').textContent;",
            json!([]),
        )
        .await;
    assert!(
        !page.as_str().unwrap().contains(secret.as_str().unwrap()),
        "the list never shows the secret"
    );
    b.type_into("#rule-name", "critical valves").await;
    b.type_into("#rule-conditions", "closed_valve").await;
    b.js(
        "const s = document.getElementById('rule-severity'); s.value = 'critical'; return true;",
        json!([]),
    )
    .await;
    b.type_into("#rule-wells", "W-*").await;
    b.js(
        "document.querySelector('.rule-event[value=\"alarm.acknowledged\"]').click(); return true;",
        json!([]),
    )
    .await;
    b.click("#rule-form button[type=submit]").await;
    b.wait(
        "the rule listed",
        "return document.querySelector('#rule-table tr[data-rule]');",
        Duration::from_secs(10),
    )
    .await;
    let (_, rules) = app.get("/api/v1/notifications/rules").await;
    assert_eq!(
        rules["rules"][0]["conditions"],
        json!(["closed_valve"]),
        "{rules}"
    );
    assert_eq!(rules["rules"][0]["min_severity"], "critical");
    assert_eq!(rules["rules"][0]["wells"], json!(["W-*"]));
    b.wait("the test button", "const t = document.querySelector('#channel-table .channel-test'); if (!t) return false; t.click(); return true;", Duration::from_secs(10)).await;
    let got = receiver
        .wait_for("/scada", 1, Duration::from_secs(10))
        .await;
    assert_eq!(got[0].event, "test");
    assert_eq!(got[0].body["requested_by"], "user:ada");
    b.js(
        "document.getElementById('delivery-refresh').click(); return true;",
        json!([]),
    )
    .await;
    b.wait(
        "the delivery logged",
        "return document.querySelector('#delivery-rows tr[data-state=\"delivered\"]');",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot(&screenshots().join("notifications.png")).await;

    // An alarm's history: raised, acknowledged (who, comment), with its notifications.
    let (status, _) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/alarms/{alarm}/ack")))
                .json(&json!({"comment": "valve crew sent"})),
        )
        .await;
    assert_eq!(status, 200);
    let got = receiver
        .wait_for("/scada", 2, Duration::from_secs(10))
        .await;
    assert_eq!(got[1].event, "alarm.acknowledged");
    b.click("#nav-alarms").await;
    b.wait(
        "the alarm row",
        &format!("return document.querySelector('tr[data-alarm=\"{alarm}\"]');"),
        Duration::from_secs(10),
    )
    .await;
    b.js("const s = document.getElementById('alarm-state'); s.value = 'all'; s.dispatchEvent(new Event('change')); return true;", json!([])).await;
    b.js(&format!("const d = document.querySelector('tr[data-alarm=\"{alarm}\"] details.alarm-history'); d.open = true; return true;"), json!([])).await;
    let history = b.wait("the alarm history", &format!("const l = document.querySelector('ol[data-history=\"{alarm}\"]'); return l && l.children.length >= 2 && l.textContent;"), Duration::from_secs(10)).await;
    let history = history.as_str().unwrap();
    assert!(
        history.contains("Raised") && history.contains("by the diagnostics"),
        "{history}"
    );
    assert!(
        history.contains("Acknowledged")
            && history.contains("test-admin")
            && history.contains("valve crew sent"),
        "{history}"
    );
    b.wait("the notification in the history", &format!("const l = document.querySelector('ol[data-history=\"{alarm}\"]'); return l && l.textContent.includes('Notified (acknowledged)') && l.textContent.includes('delivered');"), Duration::from_secs(10)).await;
    b.screenshot(&screenshots().join("alarm-history.png")).await;
    b.quit().await;
}
