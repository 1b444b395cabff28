//! The live stream (`GET /api/v1/stream`, WebSocket) and the console's cookie session, spoken
//! to the real server on port 0: authentication before the upgrade, scopes, fan-out within a
//! second, alarm changes, the per-identity limit, shutdown; sign-in cookies, CSRF, refresh,
//! logout; the console's files and their Content-Security-Policy.

use std::time::{Duration, Instant};

use espwatch_core::access::Role;
use espwatch_store::NewAlarm;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::*;

mod latency;
mod slow;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PASSWORD: &str = "correct horse battery staple";

/// Opens a stream with `query`, the credential offered as a subprotocol (`None`: none) and
/// extra headers. `Err(status)` when the upgrade is refused.
async fn open(
    app: &TestApp,
    query: &str,
    credential: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, u16> {
    let mut request = format!("ws://{}/api/v1/stream{query}", app.address)
        .into_client_request()
        .expect("request");
    let protocols = match credential {
        Some(c) => format!("espwatch.v1, bearer.{c}"),
        None => "espwatch.v1".to_owned(),
    };
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&protocols).unwrap(),
    );
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, response)) => {
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                "espwatch.v1",
                "the credential is never echoed back"
            );
            Ok(ws)
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
}

/// The next JSON text message within `within`, or `None`.
async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return Some(serde_json::from_str(&text).expect("JSON message"));
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(json!({
                    "type": "closed",
                    "code": frame.as_ref().map(|f| u16::from(f.code)),
                    "reason": frame.as_ref().map(|f| f.reason.to_string()),
                }));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Some(json!({"type": "closed", "code": null})),
            Err(_) => return None,
        }
    }
}

/// The next message of `kind` (others skipped) within `within`.
async fn next_of(ws: &mut Ws, kind: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let m = next_json(ws, left).await?;
        if m["type"] == kind {
            return Some(m);
        }
    }
}

async fn subscribed(ws: &mut Ws) -> Value {
    next_of(ws, "subscribed", Duration::from_secs(5))
        .await
        .expect("subscribed message")
}

async fn access_token(app: &TestApp, user: &str, role: Role, wells: Option<Vec<String>>) -> String {
    create_user(app.security.as_ref(), user, PASSWORD, role, wells).await;
    let (_, tokens) = app.user_client(user, PASSWORD).await;
    tokens["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_authenticated_and_scoped_before_the_upgrade() {
    let app = spawn_app().await;
    let scoped = create_key(
        app.security.as_ref(),
        "scada-a",
        Role::Operator,
        Some(vec!["W-A".into()]),
    )
    .await;
    let writer = create_key(app.security.as_ref(), "gateway", Role::ApiClient, None).await;

    assert_eq!(
        open(&app, "", None, &[]).await.err(),
        Some(401),
        "anonymous"
    );
    assert_eq!(
        open(&app, "", Some("not-a-token"), &[]).await.err(),
        Some(401),
        "bad token"
    );
    assert_eq!(
        open(&app, "?wells=W-B", Some(&scoped), &[]).await.err(),
        Some(403),
        "a well outside the key's scope"
    );
    assert_eq!(
        open(&app, "", Some(&writer), &[]).await.err(),
        Some(403),
        "a role that reads nothing"
    );
    assert_eq!(
        open(&app, "?channels=torque", Some(&scoped), &[])
            .await
            .err(),
        Some(400),
        "an unknown channel"
    );
    assert_eq!(
        open(
            &app,
            "",
            Some(&scoped),
            &[("origin", "https://evil.example")]
        )
        .await
        .err(),
        Some(403),
        "a page of another origin"
    );
    let same_origin = format!("http://{}", app.address);
    let mut ws = open(
        &app,
        "?wells=W-A",
        Some(&scoped),
        &[("origin", &same_origin)],
    )
    .await
    .expect("same origin, permitted well");
    let hello = subscribed(&mut ws).await;
    assert_eq!(hello["subscription"]["wells"], json!(["W-A"]), "{hello}");

    // Changing the subscription to a forbidden well is refused, the old one kept.
    ws.send(Message::text(
        json!({"type": "subscribe", "wells": ["W-B"]}).to_string(),
    ))
    .await
    .unwrap();
    let refused = next_of(&mut ws, "error", Duration::from_secs(5))
        .await
        .expect("error");
    assert_eq!(refused["error"]["type"], "forbidden", "{refused}");
    ws.send(Message::text("not json")).await.unwrap();
    let refused = next_of(&mut ws, "error", Duration::from_secs(5))
        .await
        .expect("error");
    assert_eq!(refused["error"]["type"], "invalid_subscription");

    // A plain GET is not a stream; a credential subprotocol needs espwatch.v1 beside it.
    let (status, body) = app.get("/api/v1/stream").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "not_a_websocket");
    let mut request = format!("ws://{}/api/v1/stream", app.address)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("bearer.{scoped}")).unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
    // The upgrade is documented in the API description.
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    let get = &doc["paths"]["/api/v1/stream"]["get"];
    assert!(get["responses"]["101"].is_object(), "{get}");
    assert!(
        get["description"]
            .as_str()
            .unwrap()
            .contains("Sec-WebSocket-Protocol")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_subscribers_within_a_second_filtered_by_scope_and_channel() {
    let app = spawn_app().await;
    let viewer = access_token(&app, "vera", Role::Viewer, Some(vec!["W-A".into()])).await;
    let mut scoped = open(&app, "", Some(&viewer), &[]).await.expect("viewer");
    let mut current_only = open(
        &app,
        "?channels=motor_current_a&events=readings",
        Some(&app.admin_key),
        &[],
    )
    .await
    .expect("admin");
    subscribed(&mut scoped).await;
    subscribed(&mut current_only).await;

    let now = chrono::Utc::now();
    let ts = |s: i64| (now - chrono::Duration::seconds(60 - s)).to_rfc3339();
    let batch = json!([reading("W-A", &ts(0), 40.0), reading("W-B", &ts(0), 41.0)]);
    let sent = Instant::now();
    let (status, body) = app.ingest_json(&batch).await;
    assert_eq!(status, 200, "{body}");

    let m = next_of(&mut scoped, "readings", Duration::from_secs(1))
        .await
        .expect("the viewer's reading within 1 s of the ingest");
    let latency = sent.elapsed();
    let readings = m["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 1, "only the viewer's well: {m}");
    assert_eq!(readings[0]["well_id"], "W-A");
    assert_eq!(readings[0]["motor_current_a"], 40.0);
    assert_eq!(readings[0]["intake_pressure_psi"], 850.5);
    let m = next_of(&mut current_only, "readings", Duration::from_secs(1))
        .await
        .expect("the admin's readings within 1 s");
    let readings = m["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 2, "{m}");
    for r in readings {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "well_id, ts and the one channel: {r}");
        assert!(r["motor_current_a"].is_number());
    }
    println!("ingest → stream latency: {latency:?}");

    // Resending is a duplicate: nothing new is committed, nothing is streamed.
    let (status, body) = app.ingest_json(&batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicates"], 2);
    assert!(
        next_of(&mut current_only, "readings", Duration::from_millis(300))
            .await
            .is_none(),
        "duplicates are not streamed"
    );

    // A new subscription takes effect at once.
    current_only
        .send(Message::text(
            json!({"type": "subscribe", "wells": ["W-B"], "events": ["readings"]}).to_string(),
        ))
        .await
        .unwrap();
    let s = subscribed(&mut current_only).await;
    assert_eq!(s["subscription"]["channels"], Value::Null, "{s}");
    let (status, _) = app
        .ingest_json(&json!([
            reading("W-A", &ts(1), 42.0),
            reading("W-B", &ts(1), 43.0)
        ]))
        .await;
    assert_eq!(status, 200);
    let m = next_of(&mut current_only, "readings", Duration::from_secs(1))
        .await
        .expect("readings");
    assert_eq!(m["readings"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["readings"][0]["well_id"], "W-B");
    assert_eq!(m["readings"][0]["frequency_hz"], 55.0);
}

/// This process's threads named `name`, with their nice values (Linux `/proc`).
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            found.extend(nice_of(&stat));
        }
    }
    found
}

/// The nice value (field 19) of a `/proc/.../stat` line.
#[cfg(target_os = "linux")]
fn nice_of(stat: &str) -> Option<i64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(16)?.parse().ok()
}

/// Fan-out stays off ingestion's way: the streams run on a thread of their own at a lower
/// scheduling priority than the server's, and a subscriber that reads nothing holds up neither
/// the ingesting client nor the other subscribers.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_run_apart_at_a_lower_priority_and_a_stuck_one_holds_up_nobody() {
    let app = spawn_app().await;
    let _stuck = open(&app, "?events=readings", Some(&app.admin_key), &[])
        .await
        .expect("stuck subscriber");
    let mut reader = open(&app, "?events=readings", Some(&app.admin_key), &[])
        .await
        .expect("subscriber");
    subscribed(&mut reader).await;

    let ours = std::fs::read_to_string("/proc/thread-self/stat").expect("own stat");
    let ours = nice_of(&ours).expect("own nice value");
    let fan_out = threads_named("espwatch-live");
    assert!(
        fan_out.iter().any(|&nice| nice > ours || nice == 19),
        "a fan-out thread below this thread's priority ({ours}): {fan_out:?}"
    );

    // The stuck subscriber never reads; ingestion and the other subscriber go on.
    let now = chrono::Utc::now();
    let wells = 50;
    let batches = 20;
    for b in 0..batches {
        let ts = (now - chrono::Duration::seconds(600 - b)).to_rfc3339();
        let batch: Vec<Value> = (0..wells)
            .map(|w| reading(&format!("S-{w:03}"), &ts, 40.0 + w as f64))
            .collect();
        let (status, body) = app.ingest_json(&json!(batch)).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut got = 0;
    while got < wells * batches as usize {
        let m = next_of(&mut reader, "readings", Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("readings stopped after {got}"));
        got += m["readings"].as_array().unwrap().len();
    }
    assert_eq!(got, wells * batches as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_raised_and_cleared_by_the_diagnostics_are_streamed() {
    let app = spawn_app().await;
    let (meta, before, after) = crate::diagnostics::closed_valve_well("LIVE-1");
    let (status, body) = app
        .send(app.client.post(app.url("/api/v1/wells")).json(&meta))
        .await;
    assert_eq!(status, 201, "{body}");
    // Subscribed before the first upload: the valve closes 20 min before the end of `before`,
    // so the diagnostics raise the alarm while working through it, in the background. A
    // stream opened after that upload raced them (under load it lost: it saw only the
    // clearing, since a stream gets what is published after it subscribed).
    let mut ws = open(
        &app,
        "?wells=LIVE-1&events=alarms",
        Some(&app.admin_key),
        &[],
    )
    .await
    .expect("stream");
    subscribed(&mut ws).await;
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = app.post("/api/v1/telemetry", "text/csv", after).await;
    assert_eq!(status, 200, "{body}");
    let raised = next_of(&mut ws, "alarm", Duration::from_secs(20))
        .await
        .expect("the alarm, as it is raised");
    assert_eq!(raised["change"], "raised", "{raised}");
    assert_eq!(raised["alarm"]["condition"], "closed_valve");
    assert_eq!(raised["alarm"]["well_id"], "LIVE-1");
    let id = raised["alarm"]["id"].as_i64().unwrap();

    // The same upload reopens the valve: the clearing follows on the stream. (Acknowledging
    // is streamed too: see the test below.)
    let mut cleared = None;
    while let Some(m) = next_of(&mut ws, "alarm", Duration::from_secs(20)).await {
        if m["change"] == "cleared" {
            cleared = Some(m);
            break;
        }
    }
    let cleared = cleared.expect("the clearing is streamed");
    assert_eq!(cleared["alarm"]["id"], id);
    assert_eq!(cleared["alarm"]["state"], "cleared");
    assert!(cleared["alarm"]["ended_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_limited_per_identity_and_closed_at_shutdown() {
    let app = spawn_app_with(|c| c.stream_max_connections_per_identity = 2).await;
    let key = create_key(app.security.as_ref(), "wall", Role::Viewer, None).await;
    let mut first = open(&app, "", Some(&key), &[]).await.expect("first");
    let mut second = open(&app, "", Some(&key), &[]).await.expect("second");
    subscribed(&mut first).await;
    subscribed(&mut second).await;
    assert_eq!(open(&app, "", Some(&key), &[]).await.err(), Some(429));
    // Another identity is not affected.
    let mut other = open(&app, "", Some(&app.admin_key), &[])
        .await
        .expect("other identity");
    subscribed(&mut other).await;
    // Closing one gives its slot back.
    first.close(None).await.unwrap();
    let mut third = None;
    for _ in 0..50 {
        match open(&app, "", Some(&key), &[]).await {
            Ok(ws) => {
                third = Some(ws);
                break;
            }
            Err(429) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(s) => panic!("unexpected {s}"),
        }
    }
    let mut third = third.expect("a slot after a close");
    subscribed(&mut third).await;
    let (_, ready) = app.get("/health/ready").await;
    assert_eq!(ready["checks"]["stream"]["connections"], 3, "{ready}");

    let stopping = tokio::spawn(app.stop());
    let closed = next_of(&mut second, "closed", Duration::from_secs(10))
        .await
        .expect("closed by the server");
    assert_eq!(closed["code"], 1001, "{closed}");
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops with streams open")
        .unwrap();
}

/// `Set-Cookie` values of a response.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `name=value` of the cookie `name` among `Set-Cookie` values.
fn cookie_pair(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_session_lives_in_http_only_cookies_with_csrf_protection() {
    let app = spawn_app().await;
    create_user(
        app.security.as_ref(),
        "olga",
        PASSWORD,
        Role::Operator,
        None,
    )
    .await;
    let login = |password: &str| {
        app.anonymous
            .post(app.url("/api/v1/auth/console/login"))
            .json(&json!({"username": "olga", "password": password}))
            .send()
    };
    let wrong = login("not the password at all").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(set_cookies(&wrong).is_empty());

    let response = login(PASSWORD).await.unwrap();
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for c in &cookies {
        assert!(c.contains("HttpOnly"), "{c}");
        assert!(c.contains("SameSite=Strict"), "{c}");
        assert!(c.contains("Secure"), "{c}");
    }
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("espwatch_refresh=") && c.contains("Path=/api/v1/auth/console;")),
        "the refresh cookie goes to the refresh route only: {cookies:?}"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("access_token").is_none(),
        "no token for scripts: {body}"
    );
    assert!(body.get("refresh_token").is_none());
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let access = cookie_pair(&cookies, "espwatch_access");
    let refresh = cookie_pair(&cookies, "espwatch_refresh");

    // Reads work with the cookie alone; /auth/me gives the same CSRF token back.
    let (status, me) = app
        .send(
            app.anonymous
                .get(app.url("/api/v1/auth/me"))
                .header("cookie", &access),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], "olga");
    assert_eq!(me["csrf_token"], csrf.as_str());

    // Changes need the CSRF token too.
    let ack = |token: Option<&str>| {
        let mut r = app
            .anonymous
            .post(app.url("/api/v1/alarms/424242/ack"))
            .header("cookie", &access)
            .json(&json!({}));
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        app.send(r)
    };
    let (status, body) = ack(None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "csrf");
    let (status, body) = ack(Some("bm90LXRoZS10b2tlbg")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = ack(Some(&csrf)).await;
    assert_eq!(status, 404, "past the CSRF check, no such alarm: {body}");
    // A bearer client needs no CSRF token (no ambient credential to abuse).
    let (status, _) = app
        .send(
            app.client
                .post(app.url("/api/v1/alarms/424242/ack"))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 404);

    // The stream takes the cookie, from this origin only.
    let origin = format!("http://{}", app.address);
    let mut ws = open(&app, "", None, &[("cookie", &access), ("origin", &origin)])
        .await
        .expect("stream with the cookie");
    subscribed(&mut ws).await;
    assert_eq!(
        open(
            &app,
            "",
            None,
            &[("cookie", &access), ("origin", "http://evil.example")]
        )
        .await
        .err(),
        Some(403)
    );

    // Refresh rotates both cookies; the spent refresh cookie is refused after.
    let refresh_with = |cookie: String| {
        app.anonymous
            .post(app.url("/api/v1/auth/console/refresh"))
            .header("cookie", cookie)
            .send()
    };
    let renewed = refresh_with(refresh.clone()).await.unwrap();
    assert_eq!(renewed.status(), 200);
    let new_cookies = set_cookies(&renewed);
    let new_access = cookie_pair(&new_cookies, "espwatch_access");
    assert_ne!(new_access, access);
    let renewed: Value = renewed.json().await.unwrap();
    assert_eq!(
        renewed["csrf_token"],
        csrf.as_str(),
        "same session, same token"
    );
    let (status, _) = app
        .send(
            app.anonymous
                .get(app.url("/api/v1/auth/me"))
                .header("cookie", &new_access),
        )
        .await;
    assert_eq!(status, 200);
    let reused = refresh_with(refresh).await.unwrap();
    assert_eq!(
        reused.status(),
        401,
        "a spent refresh cookie revokes the session"
    );
    let (status, _) = app
        .send(
            app.anonymous
                .get(app.url("/api/v1/auth/me"))
                .header("cookie", &new_access),
        )
        .await;
    assert_eq!(status, 401, "the session is gone");

    // Sign out ends the session and clears the cookies.
    let response = login(PASSWORD).await.unwrap();
    let cookies = set_cookies(&response);
    let body: Value = response.json().await.unwrap();
    let access = cookie_pair(&cookies, "espwatch_access");
    let out = app
        .anonymous
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", &access)
        .header("x-csrf-token", body["csrf_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let cleared = set_cookies(&out);
    assert_eq!(cleared.len(), 2);
    assert!(
        cleared.iter().all(|c| c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let (status, _) = app
        .send(
            app.anonymous
                .get(app.url("/api/v1/auth/me"))
                .header("cookie", &access),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_under_a_strict_policy() {
    let app = spawn_app().await;
    let page = app.anonymous.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "no inline code allowed: {csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/console/app.js"));
    for (path, kind) in [
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/vendor/uplot/uPlot.esm.js", "text/javascript"),
        ("/console/vendor/uplot/LICENSE", "text/plain"),
    ] {
        let r = app.anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }
    let (status, _) = app
        .send(app.anonymous.get(app.url("/console/nope.js")))
        .await;
    assert_eq!(status, 404);
    // The API keeps its deny-everything policy.
    let api = app
        .anonymous
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert!(
        api.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'; frame-ancestors")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_from_a_raised_alarm_store_entry_is_streamed_to_operators() {
    // Alarms arranged in the store directly: the stream carries what the API changes.
    let app = spawn_app().await;
    let alarms = app.alarms.clone().expect("alarm store");
    let (alarm, _) = alarms
        .raise_alarm(NewAlarm {
            well_id: "W-9".parse().unwrap(),
            condition: "gas_lock".parse().unwrap(),
            severity: "major".parse().unwrap(),
            confidence: 0.9,
            started_at: espwatch_core::Timestamp::from_datetime(chrono::Utc::now()),
            detail: json!({}),
        })
        .await
        .unwrap();
    let scoped = create_key(
        app.security.as_ref(),
        "elsewhere",
        Role::Operator,
        Some(vec!["W-1".into()]),
    )
    .await;
    let mut mine = open(&app, "?events=alarms", Some(&app.admin_key), &[])
        .await
        .unwrap();
    let mut other = open(&app, "?events=alarms", Some(&scoped), &[])
        .await
        .unwrap();
    subscribed(&mut mine).await;
    subscribed(&mut other).await;
    let (status, body) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/alarms/{}/ack", alarm.id)))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let m = next_of(&mut mine, "alarm", Duration::from_secs(1))
        .await
        .expect("ack event");
    assert_eq!(m["change"], "acknowledged");
    assert!(
        next_of(&mut other, "alarm", Duration::from_millis(300))
            .await
            .is_none(),
        "an identity limited to other wells hears nothing"
    );
}

/// Batch-ingest latency with and without 200 stream subscribers, at 1 000 readings/s (ten
/// batches of 100 a second). A benchmark, not a timed test:
/// `cargo test --release -p espwatch --test api -- --ignored stream_fan_out --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn stream_fan_out_benchmark() {
    const SECONDS: u64 = 15;
    const BATCH: usize = 100;
    let app = spawn_app_with(|c| {
        c.stream_max_connections_per_identity = 1000;
        c.max_connections_per_source = 0;
    })
    .await;
    let base = chrono::Utc::now() - chrono::Duration::hours(2);
    let mut next_ts = 0i64;
    let mut phase = async |subscribers: usize| {
        let mut tasks = Vec::new();
        for _ in 0..subscribers {
            let mut ws = open(&app, "?events=readings", Some(&app.admin_key), &[])
                .await
                .expect("subscriber");
            subscribed(&mut ws).await;
            // Subscribers count without parsing: on this machine they share the two cores
            // with the server they measure.
            tasks.push(tokio::spawn(async move {
                let (mut readings, mut lagged) = (0usize, 0usize);
                while let Ok(Some(Ok(Message::Text(text)))) =
                    tokio::time::timeout(Duration::from_secs(3), ws.next()).await
                {
                    readings += text.matches("\"well_id\"").count();
                    lagged += usize::from(text.contains("\"lagged\""));
                }
                (readings, lagged)
            }));
        }
        let mut latencies = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..SECONDS * 10 {
            tick.tick().await;
            let batch: Vec<Value> = (0..BATCH)
                .map(|w| {
                    let ts = (base + chrono::Duration::milliseconds(next_ts * 100)).to_rfc3339();
                    reading(&format!("B-{w:03}"), &ts, 40.0)
                })
                .collect();
            next_ts += 1;
            let body = serde_json::to_string(&batch).unwrap();
            let started = Instant::now();
            let (status, _) = app
                .post("/api/v1/telemetry", "application/json", body)
                .await;
            latencies.push(started.elapsed());
            assert_eq!(status, 200);
        }
        let mut delivered = Vec::new();
        for t in tasks {
            delivered.push(t.await.unwrap());
        }
        latencies.sort();
        let q = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        (q(0.5), q(0.99), delivered)
    };
    let (p50_0, p99_0, _) = phase(0).await;
    let (p50_n, p99_n, delivered) = phase(200).await;
    let expected = (SECONDS * 10) as usize * BATCH;
    let complete = delivered.iter().filter(|(r, _)| *r == expected).count();
    let lagged: usize = delivered.iter().map(|(_, l)| l).sum();
    println!(
        "batch ingest, 1000 readings/s in batches of {BATCH}: without subscribers p50 {:.2} ms p99 {:.2} ms; \
         with 200 subscribers p50 {:.2} ms p99 {:.2} ms (p99 ratio {:.2}); {complete}/200 subscribers got all {expected} readings, {lagged} lagged notices",
        p50_0.as_secs_f64() * 1e3,
        p99_0.as_secs_f64() * 1e3,
        p50_n.as_secs_f64() * 1e3,
        p99_n.as_secs_f64() * 1e3,
        p99_n.as_secs_f64() / p99_0.as_secs_f64(),
    );
}

/// The claims of `token` signed again with `secret`, its `exp` set to `exp` (seconds).
fn resigned(token: &str, secret: &str, exp: i64) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = token.split('.').nth(1).expect("a JWT");
    let mut claims: espwatch_server::auth::token::Claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims.exp = exp;
    espwatch_server::auth::token::TokenKeys::new(secret.as_bytes(), &claims.iss, &claims.aud)
        .unwrap()
        .sign(&claims)
}

/// Issue 22: a stream opened with an access token ends at the token's `exp` (the session is
/// still open; before, the stream re-checked only the session and outlived its token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_the_token_that_opened_it_expires() {
    let app = spawn_app().await;
    let token = access_token(&app, "ines", Role::Viewer, None).await;
    let exp = chrono::Utc::now().timestamp() + 2;
    let short = resigned(&token, test_jwt_secret(), exp);
    let mut by_short = open(&app, "", Some(&short), &[])
        .await
        .expect("stream of a token valid two more seconds");
    let mut by_full = open(&app, "", Some(&token), &[]).await.expect("stream");
    subscribed(&mut by_short).await;
    subscribed(&mut by_full).await;
    let closed = next_of(&mut by_short, "closed", Duration::from_secs(15))
        .await
        .expect("closed when the token expired");
    assert_eq!(closed["code"], 1008, "{closed}");
    assert_eq!(closed["reason"], "credential expired", "{closed}");
    assert!(chrono::Utc::now().timestamp() >= exp, "not before its exp");
    // The same session's stream with a token still valid goes on.
    let (status, _) = app
        .ingest_json(&reading("W-1", &chrono::Utc::now().to_rfc3339(), 40.0))
        .await;
    assert_eq!(status, 200);
    assert!(
        next_of(&mut by_full, "readings", Duration::from_secs(5))
            .await
            .is_some()
    );
}

/// Issue 22: after a JWT secret rotation, a stream opened with a token of the previous secret
/// ends when the previous secret's grace period does, even though the token's `exp` is later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_the_previous_secret_ends_with_its_grace_period() {
    let previous = espwatch_app::keys::random_token(48).unwrap();
    let until = chrono::Utc::now() + chrono::Duration::seconds(8);
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let secret = previous.clone();
    let app = spawn_app_with(move |c| {
        c.jwt_secret_previous = Some(espwatch_app::config::SecretString(secret));
        c.jwt_previous_valid_until = Some(until_text);
    })
    .await;
    let token = access_token(&app, "otto", Role::Viewer, None).await;
    let old = resigned(&token, &previous, chrono::Utc::now().timestamp() + 600);
    let mut ws = open(&app, "", Some(&old), &[])
        .await
        .expect("a token of the previous secret within its grace period");
    subscribed(&mut ws).await;
    let closed = next_of(&mut ws, "closed", Duration::from_secs(20))
        .await
        .expect("closed at the end of the grace period");
    assert_eq!(closed["code"], 1008, "{closed}");
    assert_eq!(closed["reason"], "credential expired", "{closed}");
    // (`until_text` is whole seconds.)
    assert!(
        chrono::Utc::now().timestamp() >= until.timestamp(),
        "not before the grace period ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_session_ends_or_its_key_is_revoked() {
    let app = spawn_app().await;
    let token = access_token(&app, "lena", Role::Operator, None).await;
    let key = create_key(app.security.as_ref(), "wallboard", Role::Viewer, None).await;
    let mut by_session = open(&app, "", Some(&token), &[])
        .await
        .expect("session stream");
    let mut by_key = open(&app, "", Some(&key), &[]).await.expect("key stream");
    let mut bystander = open(&app, "", Some(&app.admin_key), &[])
        .await
        .expect("admin");
    subscribed(&mut by_session).await;
    subscribed(&mut by_key).await;
    subscribed(&mut bystander).await;

    let (status, _) = app
        .send(bearer_client(&token).post(app.url("/api/v1/auth/logout")))
        .await;
    assert_eq!(status, 204);
    let closed = next_of(&mut by_session, "closed", Duration::from_secs(5))
        .await
        .expect("closed after logout");
    assert_eq!(closed["code"], 1008, "{closed}");

    let key_id = key.split('_').nth(1).unwrap();
    let (status, _) = app
        .send(
            app.client
                .delete(app.url(&format!("/api/v1/apikeys/{key_id}"))),
        )
        .await;
    assert_eq!(status, 204);
    let closed = next_of(&mut by_key, "closed", Duration::from_secs(5))
        .await
        .expect("closed after revocation");
    assert_eq!(closed["code"], 1008, "{closed}");

    // Others keep streaming.
    let (status, _) = app
        .ingest_json(&reading("W-1", &chrono::Utc::now().to_rfc3339(), 40.0))
        .await;
    assert_eq!(status, 200);
    assert!(
        next_of(&mut bystander, "readings", Duration::from_secs(2))
            .await
            .is_some()
    );
}
