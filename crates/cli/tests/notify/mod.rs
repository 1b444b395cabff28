//! Alarm notifications through the public surface: channels and rules over the admin API, a
//! real alarm raised, acknowledged and cleared by the diagnostics, delivered to a real HTTP
//! receiver (an axum server on port 0 that checks the signature and can refuse the first
//! deliveries), retried, given up and audited; the outbox surviving a kill -9; e-mail to a
//! real SMTP server (aiosmtpd).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::diagnostics::{closed_valve_well, wait_for_alarm};
use crate::support::*;

/// What the receiver got, one entry per accepted delivery.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub key: String,
    pub event: String,
    pub body: Value,
}

#[derive(Default)]
struct ReceiverState {
    /// Signing secret per path (set once the channel exists).
    secrets: HashMap<String, String>,
    /// Deliveries still to refuse with 500, per path (`usize::MAX`: always).
    refuse: HashMap<String, usize>,
    /// Every request per path, accepted or not.
    attempts: HashMap<String, usize>,
    bad_signatures: usize,
    accepted: Vec<Received>,
}

/// A webhook receiver on 127.0.0.1:0 that verifies `X-Espwatch-Signature` like a real
/// integration would (HMAC-SHA256 over `<timestamp>.<body>`, timestamp within 5 minutes).
#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let path = uri.path().to_owned();
    let mut s = state.lock().unwrap();
    *s.attempts.entry(path.clone()).or_default() += 1;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp: i64 = header("x-espwatch-timestamp").parse().unwrap_or(0);
    let fresh = (chrono::Utc::now().timestamp() - timestamp).abs() < 300;
    let secret = s.secrets.get(&path).cloned().unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let valid = header("x-espwatch-signature")
        .strip_prefix("v1=")
        .and_then(|hex| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .is_some_and(|sig| mac.verify_slice(&sig).is_ok());
    if !valid || !fresh || secret.is_empty() {
        s.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(left) = s.refuse.get_mut(&path)
        && *left > 0
    {
        if *left != usize::MAX {
            *left -= 1;
        }
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    assert_eq!(header("idempotency-key"), header("x-espwatch-delivery"));
    s.accepted.push(Received {
        path,
        key: header("x-espwatch-delivery"),
        event: header("x-espwatch-event"),
        body: serde_json::from_str(&body).expect("JSON body"),
    });
    StatusCode::NO_CONTENT
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { address, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn expect_secret(&self, path: &str, secret: &str) {
        let mut s = self.state.lock().unwrap();
        s.secrets.insert(path.into(), secret.into());
    }

    /// Refuse the next `n` deliveries to `path` with 500 (`usize::MAX`: all of them).
    pub fn refuse(&self, path: &str, n: usize) {
        self.state.lock().unwrap().refuse.insert(path.into(), n);
    }

    pub fn attempts(&self, path: &str) -> usize {
        *self.state.lock().unwrap().attempts.get(path).unwrap_or(&0)
    }

    pub fn bad_signatures(&self) -> usize {
        self.state.lock().unwrap().bad_signatures
    }

    pub fn accepted(&self, path: &str) -> Vec<Received> {
        let s = self.state.lock().unwrap();
        s.accepted
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has accepted `n` deliveries.
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.accepted(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {} of {n} deliveries within {within:?} ({} attempts)",
                got.len(),
                self.attempts(path)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/api/v1/notifications/deliveries?{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

async fn wait_for_deliveries(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let got = deliveries(app, query).await;
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} deliveries matching {query}");
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_changes_reach_signed_webhooks_by_rule_with_retries_and_dead_letters() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| {
        c.notify_retry_base_ms = 100;
        c.notify_retry_max_secs = 1;
        c.notify_max_attempts = 3;
    })
    .await;

    // Admin only: an operator may neither read nor create channels or rules.
    create_user(app.security.as_ref(), "op-1", "a long operator passphrase", espwatch_core::access::Role::Operator, None).await;
    let (operator, _) = app.user_client("op-1", "a long operator passphrase").await;
    for path in ["/api/v1/notifications/channels", "/api/v1/notifications/rules", "/api/v1/notifications/deliveries"] {
        let (status, _) = app.send(operator.get(app.url(path))).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _) = app
        .send(operator.post(app.url("/api/v1/notifications/channels")).json(&json!({"name": "x", "kind": "webhook", "url": receiver.url("/x")})))
        .await;
    assert_eq!(status, 403);

    // Channels: a generated secret is shown once; never listed again.
    let create = |body: Value| app.client.post(app.url("/api/v1/notifications/channels")).json(&body);
    let (status, ops) = app.send(create(json!({"name": "ops", "kind": "webhook", "url": receiver.url("/ops")}))).await;
    assert_eq!(status, 201, "{ops}");
    let secret = ops["secret"].as_str().expect("generated secret").to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{secret}");
    receiver.expect_secret("/ops", &secret);
    let chosen = "a chosen secret of enough length";
    let (status, pager) = app
        .send(create(json!({"name": "pager", "kind": "webhook", "url": receiver.url("/pager"), "secret": chosen})))
        .await;
    assert_eq!(status, 201, "{pager}");
    assert!(pager.get("secret").is_none(), "a chosen secret is not echoed: {pager}");
    receiver.expect_secret("/pager", chosen);
    receiver.refuse("/pager", usize::MAX);
    for bad in [
        json!({"name": "b", "kind": "webhook", "url": "ftp://x/y"}),
        json!({"name": "b", "kind": "webhook", "url": "http://u:p@host/"}),
        json!({"name": "b", "kind": "webhook", "url": receiver.url("/b"), "secret": "short"}),
        json!({"name": "b", "kind": "email", "to": ["not-an-address"]}),
        json!({"name": "b", "kind": "sms", "url": receiver.url("/b")}),
    ] {
        let (status, body) = app.send(create(bad.clone())).await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }
    let (status, _) = app.send(create(json!({"name": "ops", "kind": "webhook", "url": receiver.url("/other")}))).await;
    assert_eq!(status, 409);
    let response = app.client.get(app.url("/api/v1/notifications/channels")).send().await.unwrap();
    let listed = response.text().await.unwrap();
    assert!(!listed.contains(&secret) && !listed.contains(chosen), "secrets listed: {listed}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["channels"].as_array().unwrap().len(), 2);
    assert_eq!(listed["channels"][0]["has_secret"], true);

    // Rules: by event, condition, severity and well group.
    let rule = |body: Value| app.client.post(app.url("/api/v1/notifications/rules")).json(&body);
    let (ops_id, pager_id) = (ops["id"].as_i64().unwrap(), pager["id"].as_i64().unwrap());
    let (status, body) = app
        .send(rule(json!({"name": "valves to ops", "channel_id": ops_id,
            "events": ["alarm.raised", "alarm.acknowledged", "alarm.cleared"],
            "conditions": ["closed_valve"], "wells": ["DIAG-*"]})))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["wells"], json!(["DIAG-*"]));
    // The same change routed twice to one channel is sent once.
    let (status, _) = app.send(rule(json!({"name": "critical to ops", "channel_id": ops_id, "events": ["alarm.raised"], "min_severity": "critical"}))).await;
    assert_eq!(status, 201);
    // Rules that must not match this alarm.
    let (status, _) = app.send(rule(json!({"name": "gas to ops", "channel_id": ops_id, "events": ["alarm.raised"], "conditions": ["gas_lock"]}))).await;
    assert_eq!(status, 201);
    let (status, _) = app.send(rule(json!({"name": "other pad", "channel_id": ops_id, "events": ["alarm.raised"], "wells": ["PAD-B-*"], "fields": ["South"]}))).await;
    assert_eq!(status, 201);
    let (status, _) = app.send(rule(json!({"name": "raised to pager", "channel_id": pager_id, "events": ["alarm.raised"], "min_severity": "major"}))).await;
    assert_eq!(status, 201);
    for bad in [
        json!({"name": "r", "channel_id": ops_id, "events": []}),
        json!({"name": "r", "channel_id": ops_id, "events": ["alarm.exploded"]}),
        json!({"name": "r", "channel_id": ops_id, "events": ["alarm.raised"], "conditions": ["gaslock"]}),
        json!({"name": "r", "channel_id": ops_id, "events": ["alarm.raised"], "min_severity": "high"}),
        json!({"name": "r", "channel_id": 999_999, "events": ["alarm.raised"]}),
        json!({"name": "r", "channel_id": ops_id, "events": ["alarm.raised"], "colour": "red"}),
    ] {
        let (status, body) = app.send(rule(bad.clone())).await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }

    // A real alarm: raised by the diagnostics, acknowledged over the API, cleared.
    let (meta, before, after) = closed_valve_well("DIAG-9");
    let (status, _) = app.post("/api/v1/wells", "application/json", meta.to_string()).await;
    assert_eq!(status, 201);
    receiver.refuse("/ops", 2);
    let (status, _) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200);
    let alarm = wait_for_alarm(&app, "well_id=DIAG-9&state=raised").await;
    let id = alarm["id"].as_i64().unwrap();
    let raised = receiver.wait_for("/ops", 1, Duration::from_secs(15)).await;
    assert_eq!(raised[0].event, "alarm.raised");
    assert_eq!(raised[0].body["alarm"]["id"], id);
    assert_eq!(raised[0].body["alarm"]["condition"], "closed_valve");
    assert_eq!(raised[0].body["id"], raised[0].key.as_str());
    assert_eq!(receiver.attempts("/ops"), 3, "two refusals, then accepted");
    let (status, _) = app.send(app.client.post(app.url(&format!("/api/v1/alarms/{id}/ack"))).json(&json!({"comment": "crew sent"}))).await;
    assert_eq!(status, 200);
    let (status, _) = app.post("/api/v1/telemetry", "text/csv", after).await;
    assert_eq!(status, 200);
    wait_for_alarm(&app, "well_id=DIAG-9&state=cleared").await;
    let got = receiver.wait_for("/ops", 3, Duration::from_secs(15)).await;
    let mut events: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    events.sort();
    assert_eq!(events, ["alarm.acknowledged", "alarm.cleared", "alarm.raised"]);
    let acked = got.iter().find(|r| r.event == "alarm.acknowledged").unwrap();
    assert_eq!(acked.body["alarm"]["acknowledged_by"], "test-admin");
    assert_eq!(acked.body["alarm"]["comment"], "crew sent");
    let keys: std::collections::HashSet<_> = got.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), 3, "one idempotency key per change");
    assert_eq!(receiver.bad_signatures(), 0);

    // The delivery log: the first one needed three attempts and kept the last error.
    let ops_log = wait_for_deliveries(&app, &format!("channel_id={ops_id}&state=delivered"), 3).await;
    let first = ops_log.iter().find(|d| d["event"] == "alarm.raised").unwrap();
    assert_eq!(first["attempts"], 3, "{first}");
    assert_eq!(first["last_error"], Value::Null, "{first}");
    // The pager refuses everything: dead after 3 attempts, visible, audited.
    let dead = wait_for_deliveries(&app, &format!("channel_id={pager_id}&state=dead"), 1).await;
    assert_eq!(dead[0]["attempts"], 3, "{dead:?}");
    assert_eq!(dead[0]["last_error"], "HTTP 500", "{dead:?}");
    assert_eq!(receiver.attempts("/pager"), 3);
    assert!(receiver.accepted("/pager").is_empty());
    let mut audited = Value::Null;
    for _ in 0..100 {
        let (_, audit) = app.get("/api/v1/audit?kind=notification_dead").await;
        if !audit["records"].as_array().unwrap().is_empty() {
            audited = audit;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audited["records"][0]["detail"]["channel"], pager_id, "{audited}");
    let (_, ready) = app.get("/health/ready").await;
    let notify = &ready["checks"]["notifications"];
    assert_eq!((notify["status"].clone(), notify["dead"].clone()), (json!("degraded"), json!(1)), "{ready}");
    assert!(notify["delivered"].as_u64().unwrap() >= 3 && notify["failed_attempts"].as_u64().unwrap() >= 5, "{ready}");

    // A test message goes through the outbox like any other.
    let (status, body) = app.send(app.client.post(app.url(&format!("/api/v1/notifications/channels/{ops_id}/test")))).await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for("/ops", 4, Duration::from_secs(10)).await;
    assert_eq!(got[3].event, "test");
    assert_eq!(got[3].key, body["key"].as_str().unwrap());

    // Changes are audited; deleting a channel takes its rules.
    let (_, audit) = app.get("/api/v1/audit?kind=notification_channel_create").await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 2, "{audit}");
    assert!(!audit.to_string().contains(&secret), "secret in the audit trail");
    let (_, audit) = app.get("/api/v1/audit?kind=notification_rule_create").await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 5, "{audit}");
    let (status, _) = app.send(app.client.delete(app.url(&format!("/api/v1/notifications/channels/{pager_id}")))).await;
    assert_eq!(status, 204);
    let (status, _) = app.send(app.client.delete(app.url(&format!("/api/v1/notifications/channels/{pager_id}")))).await;
    assert_eq!(status, 404);
    let (_, rules) = app.get("/api/v1/notifications/rules").await;
    assert_eq!(rules["rules"].as_array().unwrap().len(), 4, "{rules}");
    let rule_id = rules["rules"][0]["id"].as_i64().unwrap();
    let (status, _) = app.send(app.client.delete(app.url(&format!("/api/v1/notifications/rules/{rule_id}")))).await;
    assert_eq!(status, 204);
    let (_, audit) = app.get("/api/v1/audit?kind=notification_rule_delete").await;
    assert_eq!(audit["records"][0]["detail"]["rule"], rule_id);
    app.stop().await;
}
}

/// The outbox is durable: a delivery enqueued (and failing) when the server is killed with
/// SIGKILL is delivered, with its idempotency key, by the restarted server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_survives_kill_9_of_the_server() {
    init();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    // A 1 s timeout: a delivery claimed when the server died comes back within its 7 s lease.
    let envs = [
        ("ESPWATCH_NOTIFY_RETRY_BASE_MS", "200"),
        ("ESPWATCH_NOTIFY_RETRY_MAX_SECS", "1"),
        ("ESPWATCH_NOTIFY_TIMEOUT_SECS", "1"),
    ];
    let key = cli_api_key(&["--data-dir", &data], "admin");
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.as_str(),
    ];
    let mut server = ChildServer::start_with_env(&serve, &envs);
    let client = bearer_client(&key);
    let (status, channel) = status_json(
        client
            .post(server.url("/api/v1/notifications/channels"))
            .json(&json!({"name": "ops", "kind": "webhook", "url": receiver.url("/ops")}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    receiver.expect_secret("/ops", channel["secret"].as_str().unwrap());
    receiver.refuse("/ops", usize::MAX);
    let id = channel["id"].as_i64().unwrap();
    let (status, queued) = status_json(
        client
            .post(server.url(&format!("/api/v1/notifications/channels/{id}/test")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    // A third attempt is made only once the second's failure is recorded: killed after it, the
    // server has at least two refused attempts on record (the one in flight may not be).
    for _ in 0..200 {
        if receiver.attempts("/ops") >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        receiver.attempts("/ops") >= 3,
        "the receiver was tried and refused"
    );
    server.kill_9();
    receiver.refuse("/ops", 0);
    assert!(receiver.accepted("/ops").is_empty());

    let server = ChildServer::start_with_env(&serve, &envs);
    let got = receiver.wait_for("/ops", 1, Duration::from_secs(20)).await;
    assert_eq!(got[0].key, queued["key"].as_str().unwrap());
    assert_eq!(got[0].event, "test");
    let (status, log) = status_json(
        client
            .get(server.url("/api/v1/notifications/deliveries?state=delivered"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["deliveries"][0]["key"], queued["key"]);
    assert!(
        log["deliveries"][0]["attempts"].as_i64().unwrap() >= 3,
        "{log}"
    );
}

/// A real SMTP server: Python's aiosmtpd writing each message into a Maildir. `None` (test
/// skipped, with the reason printed) when aiosmtpd is missing, unless
/// ESPWATCH_REQUIRE_SERVICES=1 (`.ci/run` installs it).
struct SmtpServer {
    child: std::process::Child,
    address: SocketAddr,
    maildir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Whether python3 can import aiosmtpd; without it the e-mail tests skip, with the reason
/// printed, unless ESPWATCH_REQUIRE_SERVICES=1 (then they fail).
fn have_aiosmtpd() -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let reason = "python3 with aiosmtpd is not installed (pip install aiosmtpd)";
    if std::env::var("ESPWATCH_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{reason}, and ESPWATCH_REQUIRE_SERVICES=1");
    }
    eprintln!("skipping: {reason}");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpServer {
    async fn start() -> Option<SmtpServer> {
        if !have_aiosmtpd() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let port = free_port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &address.to_string()])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Some(SmtpServer {
                    child,
                    address,
                    maildir,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not listen on {address}");
    }

    /// The messages received so far (raw RFC 5322 text).
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiosmtpd that insists on STARTTLS and on AUTH (over TLS only) with one user and password;
/// each message lands in a Maildir with headers saying how it came (`X-Tls`,
/// `X-Authenticated`, `X-RcptTo`). Arguments: cert, key, port, maildir, user, password.
const STARTTLS_SMTP: &str = r#"
import mailbox, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, port, maildir, user, password = sys.argv[1:]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
box = mailbox.Maildir(maildir, create=True)

def authenticator(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok, auth_data=data)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if session.authenticated else "no"
        head = "X-Tls: %s\r\nX-Authenticated: %s\r\nX-RcptTo: %s\r\n" % (
            session.ssl is not None, login, ", ".join(envelope.rcpt_tos))
        box.add(head.encode() + envelope.content)
        return "250 OK"

controller = Controller(Handler(), hostname="127.0.0.1", port=int(port), tls_context=context,
    require_starttls=True, auth_required=True, auth_require_tls=True, authenticator=authenticator)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// Issue 19: e-mail over SMTP with TLS and credentials, against a real aiosmtpd that refuses
/// anything before STARTTLS. The real binary runs as a server with the test CA as its only
/// trust anchor (`SSL_CERT_FILE`); a test message of an e-mail channel arrives over TLS,
/// authenticated. A server that does not trust the SMTP server's CA gives the delivery up
/// with the TLS error and sends nothing.
#[test]
fn email_goes_out_over_starttls_with_credentials_to_a_real_smtp_server() {
    init();
    if !have_aiosmtpd() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    crate::ops::make_certificates(dir, "smtp", "1");
    let maildir = dir.join("mail");
    let port = free_port();
    let script = dir.join("smtp.py");
    std::fs::write(&script, STARTTLS_SMTP).unwrap();
    let mut smtp = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.join("smtp.pem"))
        .arg(dir.join("smtp.key"))
        .arg(port.to_string())
        .arg(&maildir)
        .args(["mailer", "a mailer passphrase"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(smtp.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _smtp = Kill(smtp);
    assert_eq!(ready.trim(), "ready", "aiosmtpd did not start");
    let messages = || -> Vec<String> {
        std::fs::read_dir(maildir.join("new"))
            .map(|entries| {
                entries
                    .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server_address = format!("localhost:{port}");
    let ca = dir.join("smtp-ca.pem");
    // Returns the delivery of a channel test once it is finished (delivered or dead).
    let send_test = |data: &std::path::Path, trust: &std::path::Path| -> Value {
        let data_dir = data.to_str().unwrap();
        let key = cli_api_key(&["--data-dir", data_dir], "admin");
        let mut env = vec![
            ("ESPWATCH_SMTP_SERVER", server_address.as_str()),
            ("ESPWATCH_SMTP_TLS", "starttls"),
            ("ESPWATCH_SMTP_FROM", "espwatch@field.example"),
            ("ESPWATCH_SMTP_USERNAME", "mailer"),
            ("ESPWATCH_SMTP_PASSWORD", "a mailer passphrase"),
            ("ESPWATCH_NOTIFY_RETRY_BASE_MS", "100"),
            ("ESPWATCH_NOTIFY_RETRY_MAX_SECS", "1"),
            ("ESPWATCH_NOTIFY_MAX_ATTEMPTS", "2"),
        ];
        let trust = trust.to_str().unwrap().to_owned();
        env.push(("SSL_CERT_FILE", trust.as_str()));
        let server = ChildServer::start_with_env(
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            &env,
        );
        let http = bearer_client(&key);
        runtime.block_on(async {
            let (status, channel) = status_json(
                http.post(server.url("/api/v1/notifications/channels"))
                    .json(&json!({"name": "night shift", "kind": "email", "to": ["ops@field.example"]}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 201, "{channel}");
            let test = server.url(&format!(
                "/api/v1/notifications/channels/{}/test",
                channel["id"]
            ));
            let (status, body) = status_json(http.post(test).send().await.unwrap()).await;
            assert_eq!(status, 202, "{body}");
            for _ in 0..200 {
                let (status, body) = status_json(
                    http.get(server.url("/api/v1/notifications/deliveries"))
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                if let Some(d) = body["deliveries"].as_array().and_then(|d| d.first())
                    && (d["state"] == "delivered" || d["state"] == "dead")
                {
                    return d.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the test delivery did not finish");
        })
    };

    let delivery = send_test(&dir.join("trusting"), &ca);
    assert_eq!(delivery["state"], "delivered", "{delivery}");
    let got = messages();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert!(m.contains("X-Tls: True"), "sent over TLS: {m}");
    assert!(
        m.contains("X-Authenticated: mailer"),
        "with the credentials: {m}"
    );
    assert!(m.contains("X-RcptTo: ops@field.example"), "{m}");
    assert!(m.contains("From: espwatch@field.example"), "{m}");

    // Trusting another CA only: the certificate is refused, the delivery given up, nothing
    // sent (credentials included).
    crate::ops::make_certificates(dir, "other", "1");
    let delivery = send_test(&dir.join("distrusting"), &dir.join("other-ca.pem"));
    assert_eq!(delivery["state"], "dead", "{delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(
        error.contains("TLS handshake") && error.contains("certificate"),
        "{delivery}"
    );
    assert_eq!(messages().len(), 1, "nothing sent to an untrusted server");
}

/// The base64 body of a message we sent, decoded.
fn decoded_body(message: &str) -> String {
    use base64::Engine;
    let message = message.replace("\r\n", "\n");
    let body = message.split("\n\n").nth(1).unwrap_or_default();
    let text: String = body.split_whitespace().collect();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_changes_reach_email_recipients_through_a_real_smtp_server() {
    let Some(smtp) = SmtpServer::start().await else { return };
    let address = smtp.address.to_string();
    let app = spawn_app_with(|c| {
        c.notify_retry_base_ms = 100;
        c.notify_retry_max_secs = 1;
        c.notify_max_attempts = 3;
        c.smtp_server = Some(address);
        c.smtp_tls = "none".into();
        c.smtp_from = "espwatch@field.example".into();
    })
    .await;
    let (status, channel) = app
        .send(app.client.post(app.url("/api/v1/notifications/channels")).json(&json!({
            "name": "night shift", "kind": "email", "to": ["ops@field.example", "lead@field.example"]})))
        .await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["to"], json!(["ops@field.example", "lead@field.example"]));
    let (status, body) = app
        .send(app.client.post(app.url("/api/v1/notifications/rules")).json(&json!({
            "name": "critical by mail", "channel_id": channel["id"], "events": ["alarm.raised"],
            "min_severity": "critical", "fields": ["North Pad"]})))
        .await;
    assert_eq!(status, 201, "{body}");

    // The well belongs to the routed field (a well group of the registry).
    let (mut meta, before, _) = closed_valve_well("MAIL-1");
    meta["field"] = json!("North Pad");
    let (status, body) = app.post("/api/v1/wells", "application/json", meta.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200);
    let alarm = wait_for_alarm(&app, "well_id=MAIL-1&state=raised").await;
    let mut messages = Vec::new();
    for _ in 0..200 {
        messages = smtp.messages();
        if !messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages.len(), 1, "one message for both recipients");
    let m = &messages[0];
    assert!(m.contains("X-RcptTo: ops@field.example, lead@field.example"), "{m}");
    assert!(m.contains("X-MailFrom: espwatch@field.example"), "{m}");
    assert!(m.contains("Subject: espwatch: closed_valve raised on MAIL-1 (critical)"), "{m}");
    let text = decoded_body(m);
    assert!(text.contains("Well: MAIL-1") && text.contains("Recommended action:"), "{text}");
    assert!(text.contains(&format!("\"id\":{}", alarm["id"])), "{text}");
    let log = wait_for_deliveries(&app, "state=delivered", 1).await;
    assert_eq!(log[0]["event"], "alarm.raised");
    app.stop().await;

    // Credentials never go out in clear: a server without STARTTLS is refused when TLS is on.
    let address = smtp.address.to_string();
    let app = spawn_app_with(|c| {
        c.notify_retry_base_ms = 50;
        c.notify_retry_max_secs = 1;
        c.notify_max_attempts = 2;
        c.smtp_server = Some(address);
        c.smtp_tls = "starttls".into();
    })
    .await;
    let (_, channel) = app
        .send(app.client.post(app.url("/api/v1/notifications/channels")).json(&json!({
            "name": "tls only", "kind": "email", "to": ["ops@field.example"]})))
        .await;
    let (status, _) = app
        .send(app.client.post(app.url(&format!("/api/v1/notifications/channels/{}/test", channel["id"]))))
        .await;
    assert_eq!(status, 202);
    let dead = wait_for_deliveries(&app, "state=dead", 1).await;
    assert!(dead[0]["last_error"].as_str().unwrap().contains("STARTTLS"), "{dead:?}");
    assert_eq!(smtp.messages().len(), 1, "nothing sent without TLS");
    app.stop().await;
}
}

/// Runs the real binary off the runtime (the in-process server must keep answering).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(
            &args,
            &[("ESPWATCH_API_KEY", "")],
            std::env::temp_dir().as_path(),
        )
    })
    .await
    .unwrap()
}

/// `espwatch webhooks add URL --events ... --wells ...` against a running server: the signed
/// webhook and its rule exist, a real alarm reaches the receiver with a valid signature, `test`
/// and `deliveries` work, a refused rule leaves no webhook behind, `remove` deletes it; without
/// an admin key nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_command_manages_signed_webhooks_of_a_running_server() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| {
        c.notify_retry_base_ms = 100;
        c.notify_retry_max_secs = 1;
    })
    .await;
    let admin = create_key(
        app.security.as_ref(),
        "cli-admin",
        espwatch_core::access::Role::Admin,
        None,
    )
    .await;
    let operator = create_key(
        app.security.as_ref(),
        "cli-op",
        espwatch_core::access::Role::Operator,
        None,
    )
    .await;
    let server = format!("http://{}", app.address);
    let with = |key: &str, args: &[&str]| {
        let mut v: Vec<String> = vec!["webhooks".into()];
        v.extend(args.iter().map(|s| s.to_string()));
        v.extend([
            "--url".into(),
            server.clone(),
            "--api-key".into(),
            key.to_owned(),
        ]);
        v
    };
    let hook = receiver.url("/cli");

    // An operator may not; nothing is created.
    let (ok, _, stderr) = cli(with(&operator, &["add", &hook])).await;
    assert!(!ok && stderr.contains("admin"), "{stderr}");

    let (ok, stdout, stderr) = cli(with(
        &admin,
        &[
            "add",
            &hook,
            "--events",
            "alarm.raised,alarm.cleared",
            "--wells",
            "DIAG-*",
            "--name",
            "valves",
        ],
    ))
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("alarm.raised, alarm.cleared · wells DIAG-*"),
        "{stdout}"
    );
    let secret = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("whsec_"))
        .unwrap_or_else(|| panic!("no secret printed: {stdout}"))
        .to_owned();
    receiver.expect_secret("/cli", &secret);

    // A rule the server refuses: the command fails and leaves no webhook behind.
    let (ok, _, stderr) = cli(with(
        &admin,
        &[
            "add",
            &receiver.url("/bad"),
            "--min-severity",
            "apocalyptic",
        ],
    ))
    .await;
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("was not kept"), "{stderr}");
    let (ok, stdout, stderr) = cli(with(&admin, &["list"])).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("valves [webhook]") && stdout.contains(&hook),
        "{stdout}"
    );
    assert!(stdout.contains("wells DIAG-*"), "{stdout}");
    assert!(!stdout.contains("/bad"), "{stdout}");
    assert!(
        !stdout.contains(&secret),
        "the secret is never listed: {stdout}"
    );

    // A real alarm, raised by the diagnostics, reaches the receiver signed.
    let (meta, before, _) = closed_valve_well("DIAG-7");
    let (status, _) = app
        .post("/api/v1/wells", "application/json", meta.to_string())
        .await;
    assert_eq!(status, 201);
    let (status, _) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200);
    wait_for_alarm(&app, "well_id=DIAG-7&state=raised").await;
    let got = receiver.wait_for("/cli", 1, Duration::from_secs(15)).await;
    assert_eq!(got[0].event, "alarm.raised");
    assert_eq!(got[0].body["alarm"]["well_id"], "DIAG-7");
    assert_eq!(receiver.bad_signatures(), 0);

    // A test message by name, then the delivery log.
    let (ok, stdout, stderr) = cli(with(&admin, &["test", "valves"])).await;
    assert!(ok, "{stdout}\n{stderr}");
    receiver.wait_for("/cli", 2, Duration::from_secs(15)).await;
    let (ok, stdout, stderr) = cli(with(&admin, &["deliveries", "--channel", "valves"])).await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches(" delivered ").count(), 2, "{stdout}");
    assert!(stdout.contains("alarm.raised"), "{stdout}");

    // Removed by name: no channel left.
    let (ok, stdout, stderr) = cli(with(&admin, &["remove", "valves"])).await;
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, stdout, _) = cli(with(&admin, &["list"])).await;
    assert!(ok);
    assert!(stdout.contains("no notification channels"), "{stdout}");
    let (status, body) = app.get("/api/v1/notifications/rules").await;
    assert_eq!(status, 200);
    assert_eq!(body["rules"], json!([]), "its rules went with it");
}

async fn channel_view(app: &TestApp, id: i64) -> Value {
    let (status, body) = app.get("/api/v1/notifications/channels").await;
    assert_eq!(status, 200, "{body}");
    body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no channel {id}: {body}"))
}

async fn audited(app: &TestApp, kind: &str) -> Vec<Value> {
    for _ in 0..100 {
        let (_, audit) = app.get(&format!("/api/v1/audit?kind={kind}")).await;
        let records = audit["records"].as_array().cloned().unwrap_or_default();
        if !records.is_empty() {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {kind} audit record");
}

// A webhook failing persistently is disabled automatically (audited once, shown by the
// channel list): later alarm changes are not queued to it; a test message that gets through
// enables it again (audited), and the next change is delivered.
both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistently_failing_webhook_is_disabled_until_a_test_gets_through() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| {
        c.notify_retry_base_ms = 50;
        c.notify_retry_max_secs = 1;
        c.notify_max_attempts = 2;
    })
    .await;
    let (status, ch) = app
        .send(app.client.post(app.url("/api/v1/notifications/channels")).json(
            &json!({"name": "flaky", "kind": "webhook", "url": receiver.url("/flaky"), "secret": "a chosen secret of enough length"}),
        ))
        .await;
    assert_eq!(status, 201, "{ch}");
    receiver.expect_secret("/flaky", "a chosen secret of enough length");
    receiver.refuse("/flaky", usize::MAX);
    let id = ch["id"].as_i64().unwrap();
    let (status, body) = app
        .send(app.client.post(app.url("/api/v1/notifications/rules")).json(
            &json!({"name": "all", "channel_id": id, "events": ["alarm.raised", "alarm.acknowledged", "alarm.cleared"]}),
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(channel_view(&app, id).await["disabled"], false);

    // The raise dies after two attempts: the channel is disabled, once, visibly.
    let (meta, before, after) = closed_valve_well("DIAG-5");
    let (status, _) = app
        .post("/api/v1/wells", "application/json", meta.to_string())
        .await;
    assert_eq!(status, 201);
    let (status, _) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200);
    let alarm = wait_for_alarm(&app, "well_id=DIAG-5&state=raised").await;
    let dead = wait_for_deliveries(&app, &format!("channel_id={id}&state=dead"), 1).await;
    assert_eq!(dead[0]["event"], "alarm.raised");
    let records = audited(&app, "notification_channel_disabled").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["detail"]["channel"], id);
    let view = channel_view(&app, id).await;
    assert_eq!(view["disabled"], true, "{view}");
    assert_eq!(view["disabled_reason"], "HTTP 500", "{view}");

    // Acknowledged meanwhile: not queued to the disabled channel.
    let (status, _) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/alarms/{}/ack", alarm["id"])))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let all = deliveries(&app, &format!("channel_id={id}")).await;
    assert_eq!(
        all.len(),
        1,
        "nothing queued to a disabled channel: {all:?}"
    );
    let (_, ready) = app.get("/health/ready").await;
    assert_eq!(
        ready["checks"]["notifications"]["skipped_disabled"], 1,
        "{ready}"
    );

    // The receiver is back; a test message gets through and enables the channel.
    receiver.refuse("/flaky", 0);
    let (status, _) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/notifications/channels/{id}/test"))),
        )
        .await;
    assert_eq!(status, 202);
    receiver
        .wait_for("/flaky", 1, Duration::from_secs(15))
        .await;
    let records = audited(&app, "notification_channel_enabled").await;
    assert_eq!(records[0]["detail"]["channel"], id);
    assert_eq!(channel_view(&app, id).await["disabled"], false);

    // The next change is delivered again.
    let (status, _) = app.post("/api/v1/telemetry", "text/csv", after).await;
    assert_eq!(status, 200);
    wait_for_alarm(&app, "well_id=DIAG-5&state=cleared").await;
    let got = receiver
        .wait_for("/flaky", 2, Duration::from_secs(15))
        .await;
    assert_eq!(got[1].event, "alarm.cleared");
    assert_eq!(receiver.bad_signatures(), 0);
}
}

/// The lines a child server logged so far that contain `needle`, waiting up to `wait` for one.
fn logged(server: &ChildServer, needle: &str, wait: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let lines: Vec<String> = server
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect();
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 19: `serve` warns at start when notifications that keep failing would be given up
/// before 24 h, saying the span its settings retry for; the defaults (33 attempts, 24.4 h)
/// draw no warning.
#[test]
fn serve_warns_when_notification_retries_give_up_before_a_day() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dir_s];
    let server = ChildServer::start_logged(&args, &[("ESPWATCH_NOTIFY_MAX_ATTEMPTS", "10")]);
    let lines = logged(&server, "given up after", Duration::from_secs(10));
    assert_eq!(lines.len(), 1, "{:?}", server.stderr.lock().unwrap());
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains("given up after 10 attempts spanning 1.4 h (5110.0 s)")
            && lines[0].contains("notify_max_attempts = 33"),
        "{}",
        lines[0]
    );
    drop(server);
    // The defaults: the warning would have been logged before the "listening" line.
    let server = ChildServer::start_logged(&args, &[]);
    assert_eq!(
        logged(&server, "given up after", Duration::from_millis(1500)),
        Vec::<String>::new()
    );
}
