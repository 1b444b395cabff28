//! Field ingest against the real brokers: the real binary (`espwatch serve`, port 0, a fresh
//! data directory) configured with `mqtt_url`, a real MQTT client publishing to Mosquitto,
//! and the result read back over HTTP.
//!
//! The broker comes from `ESPWATCH_TEST_MQTT_URL` (default `mqtt://127.0.0.1:1883`); when it
//! is unreachable the tests print why and pass, unless `ESPWATCH_REQUIRE_SERVICES=1`. Every
//! test uses its own topic prefix and client ids, so tests run in parallel on one broker.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::support::*;

fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The test broker's URL, or `None` (after saying why) when it cannot be reached.
fn mqtt_broker() -> Option<(String, String, u16)> {
    let url = std::env::var("ESPWATCH_TEST_MQTT_URL")
        .unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned());
    let authority = url
        .strip_prefix("mqtt://")
        .expect("ESPWATCH_TEST_MQTT_URL must be mqtt://host:port")
        .trim_end_matches('/');
    let (host, port) = authority
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse().expect("port")))
        .unwrap_or((authority.to_owned(), 1883));
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some((url, host, port));
    }
    let reason = format!("MQTT broker {url} unreachable (set ESPWATCH_TEST_MQTT_URL)");
    if require_services() {
        panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
    }
    eprintln!("skipped: {reason}");
    None
}

/// A random topic prefix for one test.
fn unique_prefix() -> String {
    format!(
        "espwatch-test-{}",
        espwatch_app::keys::random_token(9)
            .expect("randomness")
            .to_lowercase()
    )
    .replace(['+', '/', '#', '_'], "x")
}

/// The real binary serving with MQTT ingest on `prefix/+/telemetry`.
fn start_server(data_dir: &std::path::Path, url: &str, prefix: &str) -> ChildServer {
    start_server_with(data_dir, url, prefix, &[])
}

/// [`start_server`] with more settings.
fn start_server_with(
    data_dir: &std::path::Path,
    url: &str,
    prefix: &str,
    more: &[(&str, &str)],
) -> ChildServer {
    let dir = data_dir.to_str().expect("utf-8 path");
    let key = cli_api_key(&["--data-dir", dir], "admin");
    let topic = format!("{prefix}/+/telemetry");
    let errors = format!("{prefix}/{{well}}/errors");
    let client_id = format!("{prefix}-server");
    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir],
        &[
            ("ESPWATCH_MQTT_URL", url),
            ("ESPWATCH_MQTT_TOPIC", topic.as_str()),
            ("ESPWATCH_MQTT_ERROR_TOPIC", errors.as_str()),
            ("ESPWATCH_MQTT_CLIENT_ID", client_id.as_str()),
        ]
        .into_iter()
        .chain(more.iter().copied())
        .collect::<Vec<_>>(),
    );
    server.api_key = Some(key);
    server
}

/// `/health/ready`'s `checks.<broker>` (`mqtt`, `amqp`).
async fn broker_status(server: &ChildServer, broker: &str) -> Value {
    let response = server
        .client()
        .get(server.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    let (_, body) = status_json(response).await;
    body["checks"][broker].clone()
}

/// `/health/ready`'s `checks.mqtt`.
async fn mqtt_status(server: &ChildServer) -> Value {
    broker_status(server, "mqtt").await
}

/// Polls `checks.<broker>` until the ingest is connected, holds nothing unacknowledged
/// (`backlog.messages` 0) and its `counter` reads `n` (60 s at most); returns that status.
async fn wait_for_status(server: &ChildServer, broker: &str, counter: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = broker_status(server, broker).await;
        if status["connected"] == json!(true)
            && status["backlog"]["messages"] == json!(0)
            && status[counter] == json!(n)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{broker}: not connected with an empty backlog and {counter} = {n}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server has connected and its subscription is confirmed.
async fn wait_subscribed(server: &ChildServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = mqtt_status(server).await;
        if status["subscribed"] == json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not subscribe: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A test-side MQTT client (clean session), its event loop polled in the background;
/// messages on its subscriptions arrive on the returned channel.
async fn test_client(
    host: &str,
    port: u16,
    id: &str,
    subscribe: Option<&str>,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    if let Some(filter) = subscribe {
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    } else if let Some(s) = subscribed_tx.take() {
        let _ = s.send(());
    }
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("test client subscribed in time")
        .expect("subscription");
    (client, rx)
}

/// Raw points of a well, polled until `n` are stored (or 15 s pass).
async fn wait_points(server: &ChildServer, well: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = server
            .client()
            .get(server.url(&format!(
                "/api/v1/wells/{well}/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z&max_points=1000000"
            )))
            .send()
            .await
            .expect("query");
        let (status, body) = status_json(response).await;
        let count = body["ts"].as_array().map_or(0, Vec::len);
        if status == 200 && count >= n {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{well}: {count} points stored, {n} expected ({status} {body})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn mqtt_payloads_are_committed_like_http_and_bad_messages_are_answered_on_the_error_topic() {
    init();
    let Some((url, host, port)) = mqtt_broker() else {
        return;
    };
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &prefix);
    wait_subscribed(&server).await;
    let (client, mut errors) = test_client(
        &host,
        port,
        &format!("{prefix}-gateway"),
        Some(&format!("{prefix}/+/errors")),
    )
    .await;
    let topic = |well: &str| format!("{prefix}/{well}/telemetry");
    let publish = |topic: String, body: String| {
        let client = client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, body.into_bytes())
                .await
                .expect("publish")
        }
    };
    // One JSON reading without well_id (the topic names the well), a JSON array, NDJSON and
    // CSV: the same decoder as HTTP, legacy names included.
    publish(
        topic("ESP-1"),
        json!({"ts": ts(0), "motor_current_a": 40.5, "pip": 850.0}).to_string(),
    )
    .await;
    publish(
        topic("ESP-1"),
        json!([
            {"ts": ts(10), "motor_current_a": 41.0},
            {"well_id": "ESP-1", "ts": ts(20), "motor_current_a": 42.0}
        ])
        .to_string(),
    )
    .await;
    publish(
        topic("ESP-1"),
        format!(
            "{}\n{}\n",
            json!({"ts": ts(30), "motor_current_a": 43.0}),
            json!({"ts": ts(40), "motor_current_a": 44.0})
        ),
    )
    .await;
    publish(
        topic("ESP-1"),
        format!(
            "ts,motor_current_a,motor_temp_c\n{},45,\n{},46,121.5\n",
            ts(50),
            ts(60)
        ),
    )
    .await;
    // Partly valid: the good reading is kept, the bad ones answered on the error topic.
    publish(
        topic("ESP-2"),
        json!([
            {"ts": ts(0), "motor_current_a": 30.0},
            {"ts": ts(10), "motor_current_a": -5.0},
            {"well_id": "ESP-9", "ts": ts(20), "motor_current_a": 31.0}
        ])
        .to_string(),
    )
    .await;
    // Not parseable at all, and a re-sent reading (a duplicate, not an error).
    publish(
        topic("ESP-3"),
        r#"{"ts": "2026-01-01T00:00:00Z", "motor_current_a": "#.to_owned(),
    )
    .await;
    publish(
        topic("ESP-1"),
        json!({"ts": ts(0), "motor_current_a": 99.0}).to_string(),
    )
    .await;

    let points = wait_points(&server, "ESP-1", 7).await;
    assert_eq!(
        points["ts"],
        json!([ts(0), ts(10), ts(20), ts(30), ts(40), ts(50), ts(60)])
    );
    // The first value wins over the re-sent one.
    assert_eq!(
        points["fields"]["motor_current_a"],
        json!([40.5, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0])
    );
    assert_eq!(
        points["fields"]["intake_pressure_psi"][0],
        json!(850.0),
        "legacy name `pip`"
    );
    assert_eq!(
        points["fields"]["motor_temp_c"],
        json!([null, null, null, null, null, null, 121.5])
    );
    let points = wait_points(&server, "ESP-2", 1).await;
    assert_eq!(points["fields"]["motor_current_a"], json!([30.0]));

    // Two error reports, each naming the message and every reason.
    let mut reports = Vec::new();
    while reports.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), errors.recv())
            .await
            .expect("an error report within 10 s")
            .expect("error channel");
        let body: Value = serde_json::from_slice(&message.payload).expect("JSON report");
        reports.push((message.topic, body));
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    let (t, partial) = &reports[0];
    assert_eq!(t, &format!("{prefix}/ESP-2/errors"));
    assert_eq!(partial["topic"], json!(topic("ESP-2")));
    assert_eq!(partial["well_id"], "ESP-2");
    assert_eq!(partial["error"]["code"], "readings_rejected", "{partial}");
    assert_eq!(partial["accepted"], 1);
    let rejected = partial["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 2, "{partial}");
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["errors"][0]["field"], "motor_current_a");
    assert_eq!(rejected[1]["index"], 2);
    assert_eq!(rejected[1]["well_id"], "ESP-9");
    assert!(
        rejected[1]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not the well this message was sent for"),
        "{partial}"
    );
    let (t, malformed) = &reports[1];
    assert_eq!(t, &format!("{prefix}/ESP-3/errors"));
    assert_eq!(
        malformed["error"]["code"], "malformed_payload",
        "{malformed}"
    );
    assert!(
        malformed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be parsed"),
        "{malformed}"
    );
    assert_eq!(malformed["accepted"], 0);

    // Counted, and visible to monitoring.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = mqtt_status(&server).await;
        if status["messages"] == json!(7) {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["status"], "healthy", "{status}");
    assert_eq!(status["readings_accepted"], 8, "{status}");
    assert_eq!(status["readings_duplicate"], 1, "{status}");
    assert_eq!(status["readings_rejected"], 2, "{status}");
    assert_eq!(status["messages_malformed"], 1, "{status}");
    assert_eq!(status["messages_with_errors"], 2, "{status}");
    assert_eq!(status["errors_published"], 2, "{status}");
    // ESP-3 never got a reading.
    let response = server
        .client()
        .get(server.url("/api/v1/wells/ESP-3"))
        .send()
        .await
        .expect("well");
    assert_eq!(response.status().as_u16(), 404);
}

/// Issue 16: MQTT declares no zone, so a naive local time takes its well's registry zone; a
/// well without one still has it refused (answered on the error topic), its other readings kept.
#[tokio::test]
async fn mqtt_naive_times_take_the_wells_registry_zone() {
    init();
    let Some((url, host, port)) = mqtt_broker() else {
        return;
    };
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &prefix);
    wait_subscribed(&server).await;
    for well in [
        json!({"well_id": "TZ-M1", "timezone": "+03:00"}),
        json!({"well_id": "TZ-M2"}),
    ] {
        let response = server
            .client()
            .post(server.url("/api/v1/wells"))
            .json(&well)
            .send()
            .await
            .expect("create");
        assert_eq!(response.status().as_u16(), 201);
    }
    let (client, mut errors) = test_client(
        &host,
        port,
        &format!("{prefix}-gateway"),
        Some(&format!("{prefix}/+/errors")),
    )
    .await;
    let naive = "ts,motor_current_a\n2026-01-01 03:00:00,40\n2026-01-01 03:00:10,41\n";
    client
        .publish(
            format!("{prefix}/TZ-M1/telemetry"),
            QoS::AtLeastOnce,
            false,
            naive.as_bytes().to_vec(),
        )
        .await
        .expect("publish");
    let mixed = format!("{naive}{},42\n", ts(20));
    client
        .publish(
            format!("{prefix}/TZ-M2/telemetry"),
            QoS::AtLeastOnce,
            false,
            mixed.into_bytes(),
        )
        .await
        .expect("publish");
    let points = wait_points(&server, "TZ-M1", 2).await;
    assert_eq!(
        points["ts"],
        json!([ts(0), ts(10)]),
        "03:00 at +03:00 is 00:00Z"
    );
    let points = wait_points(&server, "TZ-M2", 1).await;
    assert_eq!(points["ts"], json!([ts(20)]));
    let message = tokio::time::timeout(Duration::from_secs(10), errors.recv())
        .await
        .expect("an error report within 10 s")
        .expect("error channel");
    assert_eq!(message.topic, format!("{prefix}/TZ-M2/errors"));
    let report: Value = serde_json::from_slice(&message.payload).expect("JSON report");
    assert_eq!(report["accepted"], 1, "{report}");
    let rejected = report["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 2, "{report}");
    assert!(
        rejected[0]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("without a zone"),
        "{report}"
    );
}

/// The PUBACK waits for the commit: with the store unable to commit (its database locked by
/// the test) the server receives the messages but stores nothing; killed with `kill -9` in
/// that state and started again on the same client id, it gets them again from the broker
/// and stores every reading. Had it acknowledged on receipt, the broker would have
/// forgotten them and they would be lost.
#[tokio::test]
async fn mqtt_messages_are_acknowledged_only_after_commit_and_survive_kill_9() {
    init();
    let Some((url, host, port)) = mqtt_broker() else {
        return;
    };
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_server(dir.path(), &url, &prefix);
    wait_subscribed(&server).await;

    // Hold the database's write lock, as a stuck disk would.
    let lock = rusqlite::Connection::open(dir.path().join("espwatch.db")).expect("open db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    let (client, _) = test_client(&host, port, &format!("{prefix}-gateway"), None).await;
    for i in 0..3 {
        let body = json!([
            {"ts": ts(i * 20), "motor_current_a": 40.0 + i as f64},
            {"ts": ts(i * 20 + 10), "motor_current_a": 50.0 + i as f64}
        ]);
        client
            .publish(
                format!("{prefix}/ESP-K/telemetry"),
                QoS::AtLeastOnce,
                false,
                body.to_string().into_bytes(),
            )
            .await
            .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = mqtt_status(&server).await;
        if status["received"] == json!(3) {
            assert_eq!(status["messages"], 0, "nothing can be committed: {status}");
            assert_eq!(status["readings_accepted"], 0, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "messages not received: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill_9();
    drop(lock);

    let server = start_server(dir.path(), &url, &prefix);
    let points = wait_points(&server, "ESP-K", 6).await;
    assert_eq!(
        points["fields"]["motor_current_a"],
        json!([40.0, 50.0, 41.0, 51.0, 42.0, 52.0])
    );
    let status = mqtt_status(&server).await;
    assert_eq!(status["readings_accepted"], 6, "{status}");
}

/// A throwaway Mosquitto on a free port (its own config), killed when dropped.
struct OwnMosquitto {
    child: std::process::Child,
    port: u16,
    binary: &'static str,
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnMosquitto {
    /// `None` (after saying why) when no `mosquitto` binary is installed.
    fn start(settings: &str) -> Option<OwnMosquitto> {
        OwnMosquitto::start_with(false, settings)
    }

    /// [`OwnMosquitto::start`] keeping its sessions and messages on disk across
    /// [`OwnMosquitto::restart`] (`persistence true`, written at shutdown).
    fn start_persistent(settings: &str) -> Option<OwnMosquitto> {
        OwnMosquitto::start_with(true, settings)
    }

    fn start_with(persistent: bool, settings: &str) -> Option<OwnMosquitto> {
        let binary = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
        let Some(binary) = binary else {
            let reason = "no mosquitto binary to start a broker of our own";
            if require_services() {
                panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
            }
            eprintln!("skipped: {reason}");
            return None;
        };
        // Restarted on this port: one no concurrent test can take meanwhile.
        let port = restartable_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        let persistence = if persistent {
            // Started as root, Mosquitto drops to its own user: its directory must be
            // writable by it, or it keeps nothing (and says so only in its log).
            use std::os::unix::fs::PermissionsExt;
            let data = dir.path().join("data");
            std::fs::create_dir(&data).expect("data dir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777))
                .expect("chmod data dir");
            format!(
                "persistence true\npersistence_location {}/\n",
                data.display()
            )
        } else {
            "persistence false\n".to_owned()
        };
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}{settings}\n"),
        )
        .expect("config");
        let child = OwnMosquitto::spawn(binary, &conf, port);
        Some(OwnMosquitto {
            child,
            port,
            binary,
            conf,
            _dir: dir,
        })
    }

    fn spawn(binary: &str, conf: &std::path::Path, port: u16) -> std::process::Child {
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "own mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Stops the broker as a service manager does (SIGTERM: it saves its sessions and
    /// messages when persistent), leaves it down for `down`, and starts it again on the same
    /// port and files.
    fn restart(&mut self, down: Duration) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "mosquitto did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(down);
        self.child = OwnMosquitto::spawn(self.binary, &self.conf, self.port);
    }
}

impl Drop for OwnMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of the server's `/metrics` (read with its admin key), e.g.
/// `espwatch_broker_backlog_messages{path="mqtt"}`; `None` when absent.
async fn metric(server: &ChildServer, series: &str) -> Option<f64> {
    let response = server
        .client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// Peak resident memory of a process (kB), from `/proc`.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Issue 17, overload: a broker that sends everything at once (Mosquitto with
/// `max_inflight_messages 0`, no in-flight window) while the store cannot commit (its
/// database locked by the test). espwatch holds at most `MAX_PENDING_MESSAGES` in memory,
/// stops reading for room (10 s at most), then leaves the rest unacknowledged with the
/// broker, shows the backlog in `/health/ready`, and once the store commits again receives
/// the deferred messages again (reconnecting) and stores every reading. Before the bound,
/// all of them were queued in memory.
#[tokio::test]
async fn mqtt_burst_beyond_the_backlog_bound_stays_in_the_broker_and_is_all_stored() {
    init();
    let Some(broker) = OwnMosquitto::start("max_inflight_messages 0\nmax_queued_messages 0") else {
        return;
    };
    const BURST: i64 = 3_000;
    let bound = espwatch_field::mqtt::MAX_PENDING_MESSAGES;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &prefix);
    wait_subscribed(&server).await;

    let lock = rusqlite::Connection::open(dir.path().join("espwatch.db")).expect("open db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let (client, _) =
        test_client("127.0.0.1", broker.port, &format!("{prefix}-gateway"), None).await;
    for i in 0..BURST {
        client
            .publish(
                format!("{prefix}/ESP-OV/telemetry"),
                QoS::AtLeastOnce,
                false,
                json!({"ts": ts(i), "motor_current_a": 40.0 + (i % 10) as f64})
                    .to_string()
                    .into_bytes(),
            )
            .await
            .expect("publish");
    }
    // Everything reaches espwatch; beyond the bound it is deferred, not held.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = mqtt_status(&server).await;
        if status["received"].as_u64().unwrap_or(0) >= BURST as u64 {
            break status;
        }
        assert!(Instant::now() < deadline, "burst not received: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let backlog = &status["backlog"];
    assert_eq!(backlog["max_messages"], bound, "{status}");
    assert_eq!(
        backlog["messages"], bound,
        "held while the store is stuck: {status}"
    );
    assert!(
        backlog["peak_messages"].as_u64().expect("peak") <= bound,
        "{status}"
    );
    assert_eq!(
        backlog["deferred"],
        BURST as u64 - bound,
        "the rest left with the broker: {status}"
    );
    assert_eq!(status["messages"], 0, "nothing committed yet: {status}");
    // The same backlog in `/metrics`.
    let m = |name: &str| format!("{name}{{path=\"mqtt\"}}");
    assert_eq!(
        metric(&server, &m("espwatch_broker_backlog_messages")).await,
        Some(bound as f64)
    );
    assert_eq!(
        metric(&server, &m("espwatch_broker_backlog_capacity_messages")).await,
        Some(bound as f64)
    );
    assert!(metric(&server, &m("espwatch_broker_backlog_bytes")).await > Some(0.0));
    assert_eq!(
        metric(&server, &m("espwatch_broker_deferred_messages_total")).await,
        Some((BURST as u64 - bound) as f64)
    );
    assert_eq!(
        metric(&server, &m("espwatch_broker_settled_messages_total")).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&server, &m("espwatch_broker_connected")).await,
        Some(1.0)
    );
    drop(lock);

    let points = wait_points(&server, "ESP-OV", BURST as usize).await;
    assert_eq!(points["ts"].as_array().map(Vec::len), Some(BURST as usize));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = mqtt_status(&server).await;
        if status["backlog"]["messages"] == json!(0) && status["readings_accepted"] == BURST {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let backlog = &status["backlog"];
    assert!(
        backlog["peak_messages"].as_u64().expect("peak") <= bound,
        "{status}"
    );
    assert!(
        backlog["redelivery_reconnects"]
            .as_u64()
            .expect("reconnects")
            >= 1,
        "{status}"
    );
    // Drained: `/metrics` follows.
    assert_eq!(
        metric(&server, &m("espwatch_broker_backlog_messages")).await,
        Some(0.0)
    );
    assert_eq!(
        metric(&server, &m("espwatch_broker_settled_messages_total")).await,
        status["messages"].as_f64()
    );
    let reconnects = metric(&server, &m("espwatch_broker_redelivery_reconnects_total")).await;
    assert!(reconnects >= Some(1.0), "{reconnects:?}");
    let received = metric(&server, &m("espwatch_broker_received_messages_total")).await;
    assert!(received >= Some(BURST as f64), "{received:?}");
    let status = mqtt_status(&server).await;
    assert_eq!(
        metric(&server, &m("espwatch_broker_redelivered_messages_total")).await,
        status["redelivered"].as_f64(),
        "{status}"
    );
    eprintln!(
        "mqtt overload: burst {BURST}, received {} (re-deliveries included, {} marked DUP), peak backlog {} messages / {} bytes, deferred {}, reconnects {}, accepted {}, duplicates {}, server VmHWM {:?} kB",
        status["received"],
        status["redelivered"],
        backlog["peak_messages"],
        backlog["peak_bytes"],
        backlog["deferred"],
        backlog["redelivery_reconnects"],
        status["readings_accepted"],
        status["readings_duplicate"],
        vm_hwm_kb(server.child.id()),
    );
}

/// Publishes `messages` (topic, payload) at QoS 1 from a client of its own and returns once
/// the broker has acknowledged every one (they are then the broker's to deliver).
async fn publish_acknowledged(port: u16, id: &str, messages: Vec<(String, Vec<u8>)>) {
    publish_acknowledged_to("127.0.0.1", port, id, messages).await
}

/// [`publish_acknowledged`] to a broker on `host`.
async fn publish_acknowledged_to(
    host: &str,
    port: u16,
    id: &str,
    messages: Vec<(String, Vec<u8>)>,
) {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let total = messages.len();
    let publisher = tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < total {
        assert!(Instant::now() < deadline, "{acked} of {total} acknowledged");
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher connection: {e}"),
            Err(_) => panic!("publisher stalled at {acked} of {total} acknowledged"),
        }
    }
    let client = publisher.await.expect("publisher task");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

/// Issue 17, re-send amplification under overload. Mosquitto 2.0.11 (a broker of the test's
/// own, `max_queued_messages 0` as README "Reliability" used to advise, its default
/// `max_inflight_messages 20`) holds a slow client to 20 messages in flight only until the
/// client acknowledges one: then it puts the client's whole queue in flight at once (an
/// MQTT 5 Receive Maximum is overrun the same way). espwatch used to defer what exceeded its
/// backlog bound and reconnect for it once the backlog drained, and every reconnection made
/// the broker re-send everything still in flight: the 5 000 messages queued here while the
/// store was stuck were received 13 856 times (4 reconnections). At the bound the driver now stops
/// reading (TCP back-pressure) until the consumer has committed: each message is received
/// once, with no reconnection.
#[tokio::test]
async fn mqtt_a_broker_flooding_its_queue_is_read_at_the_commit_pace_without_re_sends() {
    init();
    let Some(broker) = OwnMosquitto::start("max_queued_messages 0") else {
        return;
    };
    const BURST: i64 = 5_000;
    let bound = espwatch_field::mqtt::MAX_PENDING_MESSAGES;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &prefix);
    wait_subscribed(&server).await;

    // The store is stuck while the burst is published: the broker queues all but its
    // in-flight window.
    let lock = rusqlite::Connection::open(dir.path().join("espwatch.db")).expect("open db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let messages = (0..BURST)
        .map(|i| {
            (
                format!("{prefix}/ESP-RS/telemetry"),
                json!({"ts": ts(i), "motor_current_a": 40.0 + (i % 10) as f64})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    publish_acknowledged(broker.port, &format!("{prefix}-gateway"), messages).await;
    let status = mqtt_status(&server).await;
    assert_eq!(status["messages"], 0, "nothing committed yet: {status}");
    assert!(
        status["received"].as_u64().expect("received") < bound,
        "the broker's window holds back the rest while nothing is acknowledged: {status}"
    );
    drop(lock);

    let points = wait_points(&server, "ESP-RS", BURST as usize).await;
    assert_eq!(points["ts"].as_array().map(Vec::len), Some(BURST as usize));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = mqtt_status(&server).await;
        if status["backlog"]["messages"] == json!(0) && status["messages"] == BURST {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "mqtt flood: {BURST} published, received {} ({} marked DUP), peak backlog {}, read pauses {} ({} ms), deferred {}, reconnections {}",
        status["received"],
        status["redelivered"],
        status["backlog"]["peak_messages"],
        status["backlog"]["read_pauses"],
        status["backlog"]["read_paused_ms"],
        status["backlog"]["deferred"],
        status["backlog"]["redelivery_reconnects"],
    );
    assert_eq!(status["readings_accepted"], BURST, "{status}");
    assert_eq!(
        status["received"], BURST,
        "every message received once: {status}"
    );
    assert_eq!(status["redelivered"], 0, "{status}");
    let backlog = &status["backlog"];
    assert_eq!(backlog["deferred"], 0, "{status}");
    assert_eq!(backlog["redelivery_reconnects"], 0, "{status}");
    assert!(
        backlog["peak_messages"].as_u64().expect("peak") <= bound,
        "{status}"
    );
    assert_eq!(status["connections"], 1, "never reconnected: {status}");
}

/// Issue 17, the drain under a flood (a real Mosquitto, every message kept): a gateway
/// publishes far more QoS 1 messages than espwatch holds unacknowledged
/// (`MAX_PENDING_MESSAGES`) while the server consumes them. Every reading must be stored, and
/// every message acknowledged: once the server has stopped, its persistent session holds
/// nothing for the broker to re-send. Before the acknowledgements were written by the driver
/// itself, they went through rumqttc's request queue, which sends one request per poll that
/// has no packet already read pending (a read yields up to 10): while the broker flooded, the
/// queue filled, the consumer waited for room in it, the driver waited at the backlog bound
/// for the consumer and stopped polling, and nothing was acknowledged until the 10 s pause
/// ran out (then deferrals and reconnections, each re-sending everything in flight).
#[tokio::test]
async fn mqtt_a_flood_far_past_the_backlog_bound_is_all_stored_and_acknowledged() {
    init();
    // A broker of the test's own: Mosquitto's default `max_queued_messages 1000` (the shared
    // broker's) drops what a flood queues beyond it for a client that cannot keep up ("Outgoing
    // messages are being dropped" in its log; README "Reliability"), which no consumer can fix.
    let Some(broker) = OwnMosquitto::start("max_queued_messages 0") else {
        return;
    };
    let (host, port) = ("127.0.0.1".to_owned(), broker.port);
    let url = format!("mqtt://{host}:{port}");
    let flood: i64 = std::env::var("ESPWATCH_TEST_MQTT_FLOOD")
        .ok()
        .map_or(300_000, |n| {
            n.parse().expect("ESPWATCH_TEST_MQTT_FLOOD: a number")
        });
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_server(dir.path(), &url, &prefix);
    wait_subscribed(&server).await;

    let messages = (0..flood)
        .map(|i| {
            (
                format!("{prefix}/ESP-FL/telemetry"),
                json!({"ts": ts(i), "motor_current_a": 40.0 + (i % 10) as f64})
                    .to_string()
                    .into_bytes(),
            )
        })
        .collect();
    let started = Instant::now();
    publish_acknowledged_to(&host, port, &format!("{prefix}-gateway"), messages).await;
    let published = started.elapsed();
    // Generous (about 20 s here in a debug build; before the fix 300 000 were not drained in
    // 4 minutes): a stall shows as minutes without progress, not as a slow machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let status = mqtt_status(&server).await;
        if status["backlog"]["messages"] == json!(0) && status["messages"] == json!(flood) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the flood was not drained: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained = started.elapsed();
    eprintln!(
        "mqtt flood: {flood} published in {:.1} s, all committed after {:.1} s ({:.0} messages/s), received {} ({} marked DUP), peak backlog {}, read pauses {} ({} ms), deferred {}, reconnections {}",
        published.as_secs_f64(),
        drained.as_secs_f64(),
        flood as f64 / drained.as_secs_f64(),
        status["received"],
        status["redelivered"],
        status["backlog"]["peak_messages"],
        status["backlog"]["read_pauses"],
        status["backlog"]["read_paused_ms"],
        status["backlog"]["deferred"],
        status["backlog"]["redelivery_reconnects"],
    );
    assert_eq!(status["readings_accepted"], json!(flood), "{status}");
    // Read at the commit pace: never a 10 s pause without a PUBACK (which defers, and each
    // reconnection makes the broker re-send everything in flight).
    assert_eq!(status["backlog"]["deferred"], json!(0), "{status}");
    assert_eq!(
        status["backlog"]["redelivery_reconnects"],
        json!(0),
        "{status}"
    );
    let stored = stored_timestamps(&server, &["ESP-FL".to_owned()]).await;
    assert_eq!(
        stored.get("ESP-FL").map(std::collections::BTreeSet::len),
        Some(flood as usize),
        "every reading stored once"
    );

    // Every message acknowledged: the server's session, taken over once it has stopped,
    // gets nothing re-sent.
    assert!(server.terminate().success());
    let mut options = MqttOptions::new(format!("{prefix}-server"), host.as_str(), port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_session(false)
        .set_manual_acks(true);
    let (session, mut eventloop) = AsyncClient::new(options, 16);
    let mut resent = 0;
    let mut connected = false;
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while let Ok(event) = tokio::time::timeout_at(quiet_until.into(), eventloop.poll()).await {
        match event.expect("session connection") {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert!(ack.session_present, "the server's session is kept");
                connected = true;
            }
            Event::Incoming(Packet::Publish(_)) => resent += 1,
            _ => {}
        }
    }
    assert!(connected, "the server's session was taken over");
    assert_eq!(resent, 0, "messages left unacknowledged by the server");
    let _ = session.disconnect().await;
    // Leave no session behind on the shared broker.
    let mut options = MqttOptions::new(format!("{prefix}-server"), host.as_str(), port);
    options.set_clean_session(true);
    let (session, mut eventloop) = AsyncClient::new(options, 16);
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
    let _ = session.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

mod amqp;
mod broker_restart;
mod cluster;
mod sparkplug;
