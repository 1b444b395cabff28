//! AMQP ingest against the real RabbitMQ: the real binary (`espwatch serve`, port 0, a fresh
//! data directory) configured with `amqp_url`, a real AMQP client publishing, the readings
//! read back over HTTP and the dead-letter queue inspected with `basic.get`.
//!
//! The broker comes from `ESPWATCH_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`); when it is unreachable the tests print why and
//! pass, unless `ESPWATCH_REQUIRE_SERVICES=1`. Every test declares its own queues and
//! exchanges (a random prefix) and deletes them at the end.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::support::*;

fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The test broker's URL, or `None` (after saying why) when it cannot be reached.
fn amqp_broker() -> Option<String> {
    let url = std::env::var("ESPWATCH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let uri: lapin::uri::AMQPUri = url.parse().expect("ESPWATCH_TEST_AMQP_URL");
    let host = uri.authority.host.clone();
    let port = uri.authority.port;
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(url);
    }
    let reason = format!("RabbitMQ {host}:{port} unreachable (set ESPWATCH_TEST_AMQP_URL)");
    if require_services() {
        panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
    }
    eprintln!("skipped: {reason}");
    None
}

/// The queue and exchange names of one test.
struct Names {
    queue: String,
    exchange: String,
    dlx: String,
    dlq: String,
}

impl Names {
    fn unique() -> Names {
        let prefix = format!(
            "espwatch-test-{}",
            espwatch_app::keys::random_token(9)
                .expect("randomness")
                .to_lowercase()
        );
        Names {
            queue: format!("{prefix}.telemetry"),
            exchange: format!("{prefix}.x"),
            dlx: format!("{prefix}.dlx"),
            dlq: format!("{prefix}.dead"),
        }
    }
}

/// The real binary consuming `names.queue`.
fn start_server(
    data_dir: &std::path::Path,
    url: &str,
    names: &Names,
    more: &[(&str, &str)],
) -> ChildServer {
    let dir = data_dir.to_str().expect("utf-8 path");
    let key = cli_api_key(&["--data-dir", dir], "admin");
    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir],
        &[
            ("ESPWATCH_AMQP_URL", url),
            ("ESPWATCH_AMQP_QUEUE", names.queue.as_str()),
            ("ESPWATCH_AMQP_EXCHANGE", names.exchange.as_str()),
            ("ESPWATCH_AMQP_BINDING_KEY", "telemetry.#"),
            ("ESPWATCH_AMQP_DEAD_LETTER_EXCHANGE", names.dlx.as_str()),
            ("ESPWATCH_AMQP_DEAD_LETTER_QUEUE", names.dlq.as_str()),
        ]
        .into_iter()
        .chain(more.iter().copied())
        .collect::<Vec<_>>(),
    );
    server.api_key = Some(key);
    server
}

/// `/health/ready`'s `checks.amqp`.
async fn amqp_status(server: &ChildServer) -> Value {
    super::broker_status(server, "amqp").await
}

/// Waits until `check` holds for `checks.amqp` (15 s at most).
async fn wait_status(server: &ChildServer, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = amqp_status(server).await;
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_consuming(server: &ChildServer) -> Value {
    wait_status(server, "the server did not start consuming", |s| {
        s["connected"] == json!(true) && s["consumers"].as_u64().unwrap_or(0) >= 1
    })
    .await
}

/// Raw points of a well, polled until `n` are stored (or 60 s pass: generous, so a slow
/// machine waits rather than fails).
async fn wait_points(server: &ChildServer, well: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
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

/// A gateway: its own connection and a confirm-mode channel.
struct Gateway {
    connection: Connection,
    channel: Channel,
}

impl Gateway {
    async fn connect(url: &str) -> Gateway {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("test connection");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        Gateway {
            connection,
            channel,
        }
    }

    /// Publishes (persistent) and waits for the broker's confirm.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert(
                ShortString::from(*k),
                AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table);
        if let Some(ct) = content_type {
            properties = properties.with_content_type(ShortString::from(ct));
        }
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "not confirmed: {confirm:?}");
    }

    /// Takes `n` messages from `queue` (20 s at most), acknowledging them.
    async fn take(&self, queue: &str, n: usize) -> Vec<lapin::message::BasicGetMessage> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut taken = Vec::new();
        while taken.len() < n {
            match self
                .channel
                .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            {
                Some(message) => taken.push(message),
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "{queue}: {} of {n} messages",
                        taken.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        taken
    }

    /// Messages ready in `queue` (not counting those delivered and unacknowledged).
    async fn ready(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue.declare passive")
            .message_count()
    }

    /// Deletes the test's queues and exchanges.
    async fn clean_up(&self, names: &Names) {
        for queue in [&names.queue, &names.dlq] {
            let _ = self
                .channel
                .queue_delete(
                    ShortString::from(queue.as_str()),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
        for exchange in [&names.exchange, &names.dlx] {
            let _ = self
                .channel
                .exchange_delete(
                    ShortString::from(exchange.as_str()),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, ShortString::from("done")).await;
    }
}

/// A header of a dead letter, as text.
fn header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn amqp_payloads_are_committed_like_http_and_refusals_are_dead_lettered_with_reasons() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &names, &[]);
    let status = wait_consuming(&server).await;
    assert_eq!(status["status"], "healthy", "{status}");
    assert_eq!(status["queue"], json!(names.queue));
    let gw = Gateway::connect(&url).await;
    let x = names.exchange.as_str();

    // JSON (content type declared), readings naming their well.
    gw.publish(
        x,
        "telemetry.ESP-1",
        Some("application/json"),
        &[],
        json!([
            {"well_id": "ESP-1", "ts": ts(0), "motor_current_a": 40.5, "pip": 850.0},
            {"well_id": "ESP-1", "ts": ts(10), "motor_current_a": 41.0}
        ])
        .to_string()
        .as_bytes(),
    )
    .await;
    // NDJSON with the well in the `well_id` header.
    gw.publish(
        x,
        "telemetry.ESP-1",
        Some("application/x-ndjson"),
        &[("well_id", "ESP-1")],
        format!(
            "{}\n{}\n",
            json!({"ts": ts(20), "motor_current_a": 42.0}),
            json!({"ts": ts(30), "motor_current_a": 43.0})
        )
        .as_bytes(),
    )
    .await;
    // CSV, and a European CSV declared by headers.
    gw.publish(
        x,
        "telemetry.ESP-1",
        Some("text/csv"),
        &[("well_id", "ESP-1")],
        format!("ts,motor_current_a\n{},44\n", ts(40)).as_bytes(),
    )
    .await;
    gw.publish(
        x,
        "telemetry.ESP-1",
        Some("text/csv; charset=utf-8"),
        &[
            ("well_id", "ESP-1"),
            ("csv_separator", ";"),
            ("decimal", ","),
        ],
        format!("ts;motor_current_a\n{};45,5\n", ts(50)).as_bytes(),
    )
    .await;
    // No content type: sniffed, as on MQTT. Through the default exchange, straight to the queue.
    gw.publish(
        "",
        &names.queue,
        None,
        &[],
        json!({"well_id": "ESP-1", "ts": ts(60), "motor_current_a": 46.0})
            .to_string()
            .as_bytes(),
    )
    .await;
    // A re-sent reading: a duplicate, not an error.
    gw.publish(
        x,
        "telemetry.ESP-1",
        Some("application/json"),
        &[],
        json!({"well_id": "ESP-1", "ts": ts(0), "motor_current_a": 99.0})
            .to_string()
            .as_bytes(),
    )
    .await;
    // Partly valid: the good reading is stored, the message dead-lettered with the reasons.
    let mixed = json!([
        {"ts": ts(0), "motor_current_a": 30.0},
        {"ts": ts(10), "motor_current_a": -5.0},
        {"well_id": "ESP-9", "ts": ts(20), "motor_current_a": 31.0}
    ])
    .to_string();
    gw.publish(
        x,
        "telemetry.ESP-2",
        Some("application/json"),
        &[("well_id", "ESP-2")],
        mixed.as_bytes(),
    )
    .await;
    // Refused as a whole: unparseable, unsupported content type, every reading invalid.
    let broken = br#"{"well_id": "ESP-3", "ts": "2026-01-01T00:00:00Z", "motor_current_a": "#;
    gw.publish(x, "telemetry.ESP-3", Some("application/json"), &[], broken)
        .await;
    gw.publish(x, "telemetry.ESP-3", Some("application/xml"), &[], b"<r/>")
        .await;
    gw.publish(
        x,
        "telemetry.ESP-3",
        Some("application/json"),
        &[("well_id", "ESP-3")],
        json!([{"ts": ts(0), "motor_current_a": -1.0}])
            .to_string()
            .as_bytes(),
    )
    .await;

    let points = wait_points(&server, "ESP-1", 7).await;
    assert_eq!(
        points["ts"],
        json!([ts(0), ts(10), ts(20), ts(30), ts(40), ts(50), ts(60)])
    );
    assert_eq!(
        points["fields"]["motor_current_a"],
        json!([40.5, 41.0, 42.0, 43.0, 44.0, 45.5, 46.0]),
        "the first value wins over the re-sent one"
    );
    assert_eq!(points["fields"]["intake_pressure_psi"][0], json!(850.0));
    let points = wait_points(&server, "ESP-2", 1).await;
    assert_eq!(points["fields"]["motor_current_a"], json!([30.0]));

    // Four dead letters, in order, each the message as sent plus the reasons.
    let dead = gw.take(&names.dlq, 4).await;
    let mixed_dl = &dead[0];
    assert_eq!(mixed_dl.delivery.data, mixed.as_bytes());
    assert_eq!(
        header(mixed_dl, "x-espwatch-error-code").as_deref(),
        Some("readings_rejected")
    );
    assert_eq!(
        header(mixed_dl, "x-espwatch-accepted").as_deref(),
        Some("1")
    );
    assert_eq!(
        header(mixed_dl, "x-espwatch-rejected").as_deref(),
        Some("2")
    );
    assert_eq!(
        header(mixed_dl, "well_id").as_deref(),
        Some("ESP-2"),
        "original headers kept"
    );
    assert_eq!(
        header(mixed_dl, "x-espwatch-original-routing-key").as_deref(),
        Some("telemetry.ESP-2")
    );
    assert_eq!(
        header(mixed_dl, "x-espwatch-queue").as_deref(),
        Some(names.queue.as_str())
    );
    assert_eq!(
        mixed_dl
            .delivery
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.as_str()),
        Some("application/json")
    );
    let report: Value =
        serde_json::from_str(&header(mixed_dl, "x-espwatch-report").expect("report"))
            .expect("JSON report");
    let rejected = report["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 2, "{report}");
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["errors"][0]["field"], "motor_current_a");
    assert_eq!(rejected[1]["index"], 2);
    assert_eq!(rejected[1]["well_id"], "ESP-9");

    assert_eq!(dead[1].delivery.data, broken);
    assert_eq!(
        header(&dead[1], "x-espwatch-error-code").as_deref(),
        Some("malformed_payload")
    );
    assert!(
        header(&dead[1], "x-espwatch-error")
            .unwrap()
            .contains("cannot be parsed")
    );
    assert_eq!(
        header(&dead[2], "x-espwatch-error-code").as_deref(),
        Some("unsupported_media_type")
    );
    assert_eq!(
        header(&dead[3], "x-espwatch-error-code").as_deref(),
        Some("all_readings_rejected")
    );
    assert_eq!(
        header(&dead[3], "x-espwatch-accepted").as_deref(),
        Some("0")
    );

    let status = wait_status(&server, "every message settled", |s| {
        s["messages"] == json!(10)
    })
    .await;
    assert_eq!(status["readings_accepted"], 8, "{status}");
    assert_eq!(status["readings_duplicate"], 1, "{status}");
    assert_eq!(status["readings_rejected"], 3, "{status}");
    assert_eq!(status["messages_malformed"], 2, "{status}");
    assert_eq!(status["messages_with_errors"], 4, "{status}");
    assert_eq!(status["dead_lettered"], 4, "{status}");
    assert_eq!(status["dead_letter_fallbacks"], 0, "{status}");
    // Nothing left in the queue.
    assert_eq!(gw.ready(&names.queue).await, 0);
    let response = server
        .client()
        .get(server.url("/api/v1/wells/ESP-3"))
        .send()
        .await
        .expect("well");
    assert_eq!(response.status().as_u16(), 404);
    gw.clean_up(&names).await;
}

/// Issue 16: a message without a `timezone` header takes its well's registry zone for naive
/// local times; with the header, the header wins; a well without a registry zone still has
/// them refused (dead-lettered with the reason), its other readings kept.
#[tokio::test]
async fn amqp_naive_times_take_the_wells_registry_zone_unless_the_header_declares_one() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &names, &[]);
    wait_consuming(&server).await;
    for well in [
        json!({"well_id": "TZ-A1", "timezone": "+03:00"}),
        json!({"well_id": "TZ-A2"}),
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
    let gw = Gateway::connect(&url).await;
    let x = names.exchange.as_str();
    let csv = |well: &str, time: &str| {
        format!("well_id,ts,motor_current_a\n{well},2026-01-01 {time},40\n")
    };
    gw.publish(
        x,
        "telemetry.TZ-A1",
        Some("text/csv"),
        &[],
        csv("TZ-A1", "03:00:00").as_bytes(),
    )
    .await;
    // The header's zone wins: 00:00:10 UTC.
    gw.publish(
        x,
        "telemetry.TZ-A1",
        Some("text/csv"),
        &[("timezone", "UTC")],
        csv("TZ-A1", "00:00:10").as_bytes(),
    )
    .await;
    let mixed = format!("{}TZ-A2,{},41\n", csv("TZ-A2", "03:00:00"), ts(20));
    gw.publish(
        x,
        "telemetry.TZ-A2",
        Some("text/csv"),
        &[],
        mixed.as_bytes(),
    )
    .await;

    let points = wait_points(&server, "TZ-A1", 2).await;
    assert_eq!(points["ts"], json!([ts(0), ts(10)]));
    let points = wait_points(&server, "TZ-A2", 1).await;
    assert_eq!(points["ts"], json!([ts(20)]));
    let dead = gw.take(&names.dlq, 1).await;
    assert_eq!(dead[0].delivery.data, mixed.as_bytes());
    assert_eq!(
        header(&dead[0], "x-espwatch-accepted").as_deref(),
        Some("1")
    );
    let report: Value =
        serde_json::from_str(&header(&dead[0], "x-espwatch-report").expect("report"))
            .expect("JSON report");
    assert!(
        report["rejected"][0]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("without a zone"),
        "{report}"
    );
    gw.clean_up(&names).await;
}

/// The broker closes espwatch's connection mid-stream (`rabbitmqctl close_connection`):
/// espwatch connects again with backoff and goes on; every published reading is stored.
#[tokio::test]
async fn amqp_ingest_reconnects_after_the_broker_drops_the_connection_and_loses_nothing() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let rabbitmqctl_works = std::process::Command::new("rabbitmqctl")
        .args(["-q", "status"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !rabbitmqctl_works {
        let reason = "rabbitmqctl cannot reach the broker (it must run on the broker's host, as root or rabbitmq)";
        if require_services() {
            panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
        }
        eprintln!("skipped: {reason}");
        return;
    }
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path(), &url, &names, &[]);
    wait_consuming(&server).await;
    let gw = Gateway::connect(&url).await;
    let publish = |i: i64| {
        let gw = &gw;
        let exchange = names.exchange.clone();
        async move {
            gw.publish(
                &exchange,
                "telemetry.ESP-R",
                Some("application/json"),
                &[("well_id", "ESP-R")],
                json!([
                    {"ts": ts(i * 20), "motor_current_a": i as f64},
                    {"ts": ts(i * 20 + 10), "motor_current_a": i as f64 + 0.5}
                ])
                .to_string()
                .as_bytes(),
            )
            .await
        }
    };
    for i in 0..20 {
        publish(i).await;
    }
    wait_points(&server, "ESP-R", 40).await;

    // Close espwatch's connection (named after its queue), while publishing goes on.
    let connection_name = format!("espwatch {}", names.queue);
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    // Lines of `<pid>\t<client properties>`; the pid in the form close_connection takes.
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(&connection_name))
        .filter_map(|line| line.split('\t').next())
        .collect();
    assert_eq!(pids.len(), 1, "espwatch's connection: {listed}");
    let closed = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "close_connection",
            pids[0],
            "test: broker drops the connection",
        ])
        .status()
        .expect("rabbitmqctl close_connection");
    assert!(closed.success());
    for i in 20..40 {
        publish(i).await;
    }
    let status = wait_status(&server, "reconnected", |s| {
        s["connections"].as_u64().unwrap_or(0) >= 2 && s["connected"] == json!(true)
    })
    .await;
    assert!(
        status["connection_failures"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
    let points = wait_points(&server, "ESP-R", 80).await;
    let expected: Vec<f64> = (0..40).flat_map(|i| [i as f64, i as f64 + 0.5]).collect();
    assert_eq!(points["fields"]["motor_current_a"], json!(expected));
    gw.clean_up(&names).await;
}

/// The ack waits for the commit: with the store unable to commit (its database locked by the
/// test) the server receives the messages but acknowledges none; killed with `kill -9` in
/// that state and started again, it gets them again from the broker and stores every reading.
#[tokio::test]
async fn amqp_messages_are_acknowledged_only_after_commit_and_survive_kill_9() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_server(dir.path(), &url, &names, &[]);
    wait_consuming(&server).await;

    // Hold the database's write lock, as a stuck disk would.
    let lock = rusqlite::Connection::open(dir.path().join("espwatch.db")).expect("open db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    let gw = Gateway::connect(&url).await;
    for i in 0..3 {
        let body = json!([
            {"ts": ts(i * 20), "motor_current_a": 40.0 + i as f64},
            {"ts": ts(i * 20 + 10), "motor_current_a": 50.0 + i as f64}
        ]);
        gw.publish(
            &names.exchange,
            "telemetry.ESP-K",
            Some("application/json"),
            &[("well_id", "ESP-K")],
            body.to_string().as_bytes(),
        )
        .await;
    }
    // All three delivered to espwatch (none ready in the queue), the first batch taken, and
    // nothing settled.
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.ready(&names.queue).await > 0 {
        assert!(Instant::now() < deadline, "messages not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = wait_status(&server, "messages not received", |s| {
        s["received"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(status["messages"], 0, "nothing can be committed: {status}");
    server.kill_9();
    drop(lock);

    let server = start_server(dir.path(), &url, &names, &[]);
    let points = wait_points(&server, "ESP-K", 6).await;
    assert_eq!(
        points["fields"]["motor_current_a"],
        json!([40.0, 50.0, 41.0, 51.0, 42.0, 52.0])
    );
    let status = wait_status(&server, "settled", |s| s["messages"] == json!(3)).await;
    assert_eq!(status["redelivered"], 3, "{status}");
    assert_eq!(status["readings_accepted"], 6, "{status}");
    assert_eq!(gw.ready(&names.queue).await, 0);
    gw.clean_up(&names).await;
}

/// Issue 17, overload: a burst far beyond `amqp_prefetch` while the store cannot commit (its
/// database locked by the test): espwatch holds exactly the prefetch in memory (shown in
/// `/health/ready` → `checks.amqp.backlog`), the rest stays ready in the queue, and once the
/// store commits again every reading is stored and nothing is left.
#[tokio::test]
async fn amqp_burst_beyond_the_prefetch_stays_in_the_queue_and_is_all_stored() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    const BURST: i64 = 2_000;
    const PREFETCH: u64 = 50;
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        &url,
        &names,
        &[("ESPWATCH_AMQP_PREFETCH", "50")],
    );
    wait_consuming(&server).await;
    let lock = rusqlite::Connection::open(dir.path().join("espwatch.db")).expect("open db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    let gw = Gateway::connect(&url).await;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"));
    let mut confirms = Vec::new();
    for i in 0..BURST {
        let body = json!({"well_id": "ESP-OV", "ts": ts(i), "motor_current_a": 40.0});
        confirms.push(
            gw.channel
                .basic_publish(
                    ShortString::from(names.exchange.as_str()),
                    ShortString::from("telemetry.ESP-OV"),
                    BasicPublishOptions::default(),
                    body.to_string().as_bytes(),
                    properties.clone(),
                )
                .await
                .expect("publish"),
        );
    }
    for confirm in confirms {
        assert!(confirm.await.expect("confirm").is_ack());
    }
    // The broker sends the prefetch and no more: the rest waits in the queue, and the
    // queue's depth is shown (sampled every 0.5 s).
    let status = wait_status(&server, "queue depth not shown", |s| {
        s["backlog"]["queue_ready"] == json!(BURST as u64 - PREFETCH)
    })
    .await;
    assert_eq!(status["backlog"]["max_messages"], PREFETCH, "{status}");
    assert!(
        status["backlog"]["peak_messages"].as_u64().expect("peak") <= PREFETCH,
        "{status}"
    );
    assert!(
        status["received"].as_u64().expect("received") <= PREFETCH,
        "{status}"
    );
    assert_eq!(status["messages"], 0, "{status}");
    assert_eq!(
        gw.ready(&names.queue).await as u64,
        BURST as u64 - PREFETCH,
        "the rest waits in the queue"
    );
    // The same backlog in `/metrics`.
    let m = |name: &str| format!("{name}{{path=\"amqp\"}}");
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_backlog_messages")).await,
        status["backlog"]["messages"].as_f64()
    );
    assert!(
        super::metric(&server, &m("espwatch_broker_backlog_messages")).await >= Some(1.0),
        "{status}"
    );
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_backlog_capacity_messages")).await,
        Some(PREFETCH as f64)
    );
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_queue_messages")).await,
        Some((BURST as u64 - PREFETCH) as f64)
    );
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_settled_messages_total")).await,
        Some(0.0)
    );
    drop(lock);

    let points = wait_points(&server, "ESP-OV", BURST as usize).await;
    assert_eq!(points["ts"].as_array().map(Vec::len), Some(BURST as usize));
    let status = wait_status(&server, "settled", |s| {
        s["messages"] == json!(BURST)
            && s["backlog"]["messages"] == json!(0)
            && s["backlog"]["queue_ready"] == json!(0)
    })
    .await;
    assert_eq!(status["readings_accepted"], BURST, "{status}");
    assert!(
        status["backlog"]["peak_messages"].as_u64().expect("peak") <= PREFETCH,
        "{status}"
    );
    assert_eq!(gw.ready(&names.queue).await, 0);
    // Drained: `/metrics` follows.
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_backlog_messages")).await,
        Some(0.0)
    );
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_queue_messages")).await,
        Some(0.0)
    );
    assert_eq!(
        super::metric(&server, &m("espwatch_broker_settled_messages_total")).await,
        Some(BURST as f64)
    );
    let received = super::metric(&server, &m("espwatch_broker_received_messages_total")).await;
    assert!(received >= Some(BURST as f64), "{received:?}");
    eprintln!(
        "amqp overload: burst {BURST}, prefetch {PREFETCH}, peak backlog {} messages, received {}, accepted {}",
        status["backlog"]["peak_messages"], status["received"], status["readings_accepted"]
    );
    gw.clean_up(&names).await;
}

/// `kill -9` of espwatch while a gateway keeps publishing: started again on the same data
/// directory and queue, it stores every reading the broker confirmed to the gateway, once.
#[tokio::test]
async fn amqp_ingest_killed_mid_stream_loses_nothing() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start_server(dir.path(), &url, &names, &[]);
    wait_consuming(&server).await;
    const MESSAGES: i64 = 300;
    let publisher = {
        let url = url.clone();
        let exchange = names.exchange.clone();
        tokio::spawn(async move {
            let gw = Gateway::connect(&url).await;
            for i in 0..MESSAGES {
                gw.publish(
                    &exchange,
                    "telemetry.ESP-M",
                    Some("application/json"),
                    &[("well_id", "ESP-M")],
                    json!([
                        {"ts": ts(i * 20), "motor_current_a": i as f64},
                        {"ts": ts(i * 20 + 10), "motor_current_a": i as f64 + 0.5}
                    ])
                    .to_string()
                    .as_bytes(),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = gw.connection.close(200, ShortString::from("done")).await;
        })
    };
    wait_status(&server, "some messages settled", |s| {
        s["messages"].as_u64().unwrap_or(0) >= 40
    })
    .await;
    server.kill_9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start_server(dir.path(), &url, &names, &[]);
    publisher.await.expect("publisher");
    let points = wait_points(&server, "ESP-M", 2 * MESSAGES as usize).await;
    let expected: Vec<f64> = (0..MESSAGES)
        .flat_map(|i| [i as f64, i as f64 + 0.5])
        .collect();
    assert_eq!(points["fields"]["motor_current_a"], json!(expected));
    let gw = Gateway::connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.ready(&names.queue).await > 0 {
        assert!(Instant::now() < deadline, "messages left in the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.clean_up(&names).await;
}

/// A TCP relay to a broker (RabbitMQ, Redis, Mosquitto) that the test can cut: while cut, the
/// relayed connections are dropped and new ones closed at once (a broker outage as espwatch
/// sees it). [`Relay::start_resetting`] makes the cut a hard failure: both sides get a TCP RST
/// (zero linger), no close handshake, as when a broker host dies or a firewall drops state.
/// [`Relay::stall`] is the silent failure: the open connections stay open and move no more
/// bytes either way (no RST, no FIN: a dead NAT entry, a peer frozen), new ones are relayed.
pub(super) struct Relay {
    pub(super) port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped by `stall`: a connection opened under an earlier value freezes.
    stalls: tokio::sync::watch::Sender<u64>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub(super) async fn start(upstream: (String, u16)) -> Relay {
        Relay::start_with(upstream, false).await
    }

    /// A relay whose cut resets the connections (RST both ways) instead of closing them.
    pub(super) async fn start_resetting(upstream: (String, u16)) -> Relay {
        Relay::start_with(upstream, true).await
    }

    async fn start_with(upstream: (String, u16), reset: bool) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let port = listener.local_addr().expect("address").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalls = tokio::sync::watch::Sender::new(0u64);
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (cut, open, stalls) = (cut.clone(), open.clone(), stalls.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if reset {
                        // Dropped (cut, aborted): RST, not FIN.
                        let _ = client.set_zero_linger();
                    }
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let upstream = upstream.clone();
                    let mut stalled = stalls.subscribe();
                    let born = *stalled.borrow_and_update();
                    open.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut server) =
                            tokio::net::TcpStream::connect((upstream.0.as_str(), upstream.1)).await
                        {
                            if reset {
                                let _ = server.set_zero_linger();
                            }
                            let frozen = tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                                _ = stalled.wait_for(|n| *n != born) => true,
                            };
                            if frozen {
                                // Both sockets kept open, nothing read or written.
                                std::future::pending::<()>().await;
                            }
                        }
                    }));
                }
            })
        };
        Relay {
            port,
            cut,
            stalls,
            open,
            task,
        }
    }

    pub(super) fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.open.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub(super) fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Freezes the connections open now (see [`Relay`]); later ones are relayed as usual.
    pub(super) fn stall(&self) {
        self.stalls.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Notification deliveries of the server in `state`.
async fn deliveries(server: &ChildServer, state: &str) -> Vec<Value> {
    let response = server
        .client()
        .get(server.url(&format!("/api/v1/notifications/deliveries?state={state}")))
        .send()
        .await
        .expect("deliveries");
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

/// Notification events on a RabbitMQ topic exchange (`kind: amqp` channels), from the durable
/// outbox under publisher confirms: while the broker is unreachable the delivery stays pending
/// (retried), and it is published once the broker is back.
#[tokio::test]
async fn notification_events_reach_a_topic_exchange_through_a_broker_outage() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let uri: lapin::uri::AMQPUri = url.parse().expect("URL");
    let relay = Relay::start((uri.authority.host.clone(), uri.authority.port)).await;
    let relayed = format!(
        "amqp://{}:{}@127.0.0.1:{}/%2f",
        uri.authority.userinfo.username, uri.authority.userinfo.password, relay.port
    );
    let names = Names::unique();
    let events = format!("{}.events", names.queue);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        &relayed,
        &names,
        &[
            ("ESPWATCH_NOTIFY_RETRY_BASE_MS", "200"),
            ("ESPWATCH_NOTIFY_RETRY_MAX_SECS", "1"),
            ("ESPWATCH_NOTIFY_TIMEOUT_SECS", "2"),
        ],
    );
    wait_consuming(&server).await;

    // An operator's queue on the events exchange (declared as espwatch declares it).
    let gw = Gateway::connect(&url).await;
    gw.channel
        .exchange_declare(
            ShortString::from(events.as_str()),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare events exchange");
    let listener = format!("{events}.listener");
    gw.channel
        .queue_declare(
            ShortString::from(listener.as_str()),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare listener");
    for key in ["alarm.#", "test"] {
        gw.channel
            .queue_bind(
                ShortString::from(listener.as_str()),
                ShortString::from(events.as_str()),
                ShortString::from(key),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind listener");
    }

    let create = |body: Value| {
        server
            .client()
            .post(server.url("/api/v1/notifications/channels"))
            .json(&body)
            .send()
    };
    for bad in [
        json!({"name": "b", "kind": "amqp", "url": "http://x/"}),
        json!({"name": "b", "kind": "amqp", "exchange": "amq.topic"}),
        json!({"name": "b", "kind": "amqp", "exchange": "has space"}),
        json!({"name": "b", "kind": "webhook", "url": "http://x/", "exchange": "e"}),
    ] {
        let (status, body) = status_json(create(bad.clone()).await.expect("create")).await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }
    let (status, channel) = status_json(
        create(json!({"name": "bus", "kind": "amqp", "exchange": events}))
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["kind"], "amqp");
    assert_eq!(channel["exchange"], json!(events));
    let id = channel["id"].as_i64().expect("id");
    let test_event = || async {
        let response = server
            .client()
            .post(server.url(&format!("/api/v1/notifications/channels/{id}/test")))
            .send()
            .await
            .expect("test");
        let (status, body) = status_json(response).await;
        assert_eq!(status, 202, "{body}");
        body["key"].as_str().expect("key").to_owned()
    };

    let first = test_event().await;
    let got = gw.take(&listener, 1).await;
    assert_eq!(got[0].delivery.routing_key.as_str(), "test");
    assert_eq!(
        got[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some(first.as_str())
    );
    let body: Value = serde_json::from_slice(&got[0].delivery.data).expect("JSON event");
    assert_eq!(body["event"], "test");
    assert_eq!(body["id"], json!(first));

    // The broker goes away: the event stays in the outbox, retried.
    relay.cut();
    let second = test_event().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = deliveries(&server, "pending").await;
        if pending
            .iter()
            .any(|d| d["key"] == json!(second) && d["attempts"].as_i64().unwrap_or(0) >= 2)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not retried while the broker is away: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = amqp_status(&server).await;
    assert_eq!(status["status"], "degraded", "{status}");
    // Back: published, once.
    relay.restore();
    let got = gw.take(&listener, 1).await;
    assert_eq!(
        got[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some(second.as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !deliveries(&server, "delivered")
        .await
        .iter()
        .any(|d| d["key"] == json!(second))
    {
        assert!(Instant::now() < deadline, "not recorded as delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ingest came back too.
    wait_consuming(&server).await;
    let _ = gw
        .channel
        .exchange_delete(
            ShortString::from(events.as_str()),
            ExchangeDeleteOptions::default(),
        )
        .await;
    gw.clean_up(&names).await;
}

/// Issue 21, the hard failure of the broker connection: espwatch reaches RabbitMQ through a
/// relay that the test resets (RST both ways: no `connection.close`, no FIN) while espwatch
/// holds deliveries it has not acknowledged (the store cannot commit: its database locked by
/// the test), and keeps down while the gateway goes on publishing. RabbitMQ puts the
/// unacknowledged deliveries back in the queue; espwatch abandons the batch it can no longer
/// settle (a commit that made it anyway would only make the re-delivery a duplicate by
/// `(well_id, ts)`), and on the new connection the same messages come again (`redelivered`)
/// and are stored once. Every message the broker confirmed to the gateway is stored exactly once,
/// and ingestion resumes after the relay comes back, the waits between attempts within
/// `broker_reconnect_max_ms` (they used to grow to 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_connection_reset_mid_stream_redelivers_what_was_unacknowledged_and_stores_it_once() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let uri: lapin::uri::AMQPUri = url.parse().expect("URL");
    let relay = Relay::start_resetting((uri.authority.host.clone(), uri.authority.port)).await;
    let relayed = format!(
        "amqp://{}:{}@127.0.0.1:{}/%2f",
        uri.authority.userinfo.username, uri.authority.userinfo.password, relay.port
    );
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        &relayed,
        &names,
        &[("ESPWATCH_BROKER_RECONNECT_MAX_MS", "1000")],
    );
    wait_consuming(&server).await;
    let gw = Gateway::connect(&url).await;
    // Message `i` carries two readings, `ts(2i)` and `ts(2i + 1)`.
    let publish = |range: std::ops::Range<i64>| {
        let gw = &gw;
        let exchange = names.exchange.clone();
        async move {
            for i in range {
                gw.publish(
                    &exchange,
                    "telemetry.ESP-RST",
                    Some("application/json"),
                    &[("well_id", "ESP-RST")],
                    json!([
                        {"ts": ts(2 * i), "motor_current_a": i as f64},
                        {"ts": ts(2 * i + 1), "motor_current_a": i as f64 + 0.5}
                    ])
                    .to_string()
                    .as_bytes(),
                )
                .await;
            }
        }
    };

    // Before: 50 messages, stored.
    publish(0..50).await;
    wait_points(&server, "ESP-RST", 100).await;

    // The store cannot commit: the next 50 are delivered to espwatch and stay unacknowledged.
    let lock = rusqlite::Connection::open(dir.path().join("espwatch.db")).expect("open db");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    publish(50..100).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.ready(&names.queue).await > 0 {
        assert!(Instant::now() < deadline, "messages not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = wait_status(&server, "nothing held", |s| {
        s["backlog"]["messages"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(
        held["messages"].as_u64().unwrap_or(0) <= 50,
        "nothing settled since: {held}"
    );

    // The connection dies without a close handshake; the broker requeues what was in hand.
    relay.cut();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = amqp_status(&server).await;
        if status["connected"] == json!(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reset went unnoticed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The store commits again.
    drop(lock);
    // The gateway goes on meanwhile: the queue keeps it.
    publish(100..150).await;
    // Down long enough for the backoff to reach its cap (250 ms, 500 ms, 1 s, ...).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = amqp_status(&server).await;
        if status["connection_failures"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reconnection attempts: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.restore();

    let points = wait_points(&server, "ESP-RST", 300).await;
    let expected: Vec<String> = (0..300).map(ts).collect();
    assert_eq!(
        points["ts"],
        json!(expected),
        "every confirmed message stored once"
    );
    let values: Vec<f64> = (0..150).flat_map(|i| [i as f64, i as f64 + 0.5]).collect();
    assert_eq!(points["fields"]["motor_current_a"], json!(values));
    let status = super::wait_for_status(&server, "amqp", "messages", 150).await;
    eprintln!(
        "amqp connection reset: 150 messages (300 readings) published, held at the cut {}, received {} ({} redelivered), accepted {}, duplicates {}, connections {}, failures {}, longest wait {} ms (cap {} ms)",
        held["backlog"]["messages"],
        status["received"],
        status["redelivered"],
        status["readings_accepted"],
        status["readings_duplicate"],
        status["connections"],
        status["connection_failures"],
        status["reconnect_longest_wait_ms"],
        status["reconnect_max_ms"],
    );
    assert!(status["redelivered"].as_u64().unwrap_or(0) >= 1, "{status}");
    // Stored once (the points above); counted once too, but for readings of the abandoned
    // batch whose commit went through after all: the re-delivery counts them as duplicates.
    let accepted = status["readings_accepted"].as_u64().unwrap_or(0);
    let duplicates = status["readings_duplicate"].as_u64().unwrap_or(0);
    assert!(accepted <= 300 && accepted + duplicates >= 300, "{status}");
    assert!(status["connections"].as_u64().unwrap_or(0) >= 2, "{status}");
    assert_eq!(status["reconnect_max_ms"], 1000, "{status}");
    let longest = status["reconnect_longest_wait_ms"].as_u64().unwrap_or(0);
    assert!(
        (500..=1000).contains(&longest),
        "the backoff reached its cap's half and never passed the cap: {status}"
    );
    assert_eq!(status["readings_rejected"], 0, "{status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.ready(&names.queue).await > 0 {
        assert!(Instant::now() < deadline, "messages left in the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.clean_up(&names).await;
}

/// Issue 21, the silent failure of the broker connection: the link stalls (no bytes either
/// way, no RST, no FIN). The AMQP heartbeat notices it (here `?heartbeat=2` in `amqp_url`,
/// which RabbitMQ accepts as the lower of its own and the client's: nothing heard for two
/// heartbeats and lapin closes the connection); espwatch connects again, the broker requeues
/// what it had delivered into the dead link, and every confirmed message is stored once.
/// Noticed within 10 heartbeats (20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_a_stalled_connection_is_noticed_by_the_heartbeat_and_nothing_is_lost() {
    init();
    let Some(url) = amqp_broker() else {
        return;
    };
    let uri: lapin::uri::AMQPUri = url.parse().expect("URL");
    let relay = Relay::start((uri.authority.host.clone(), uri.authority.port)).await;
    let relayed = format!(
        "amqp://{}:{}@127.0.0.1:{}/%2f?heartbeat=2",
        uri.authority.userinfo.username, uri.authority.userinfo.password, relay.port
    );
    let names = Names::unique();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(
        dir.path(),
        &relayed,
        &names,
        &[("ESPWATCH_BROKER_RECONNECT_MAX_MS", "1000")],
    );
    wait_consuming(&server).await;
    let gw = Gateway::connect(&url).await;
    // Message `i` carries two readings, `ts(2i)` and `ts(2i + 1)`.
    let publish = |range: std::ops::Range<i64>| {
        let gw = &gw;
        let exchange = names.exchange.clone();
        async move {
            for i in range {
                gw.publish(
                    &exchange,
                    "telemetry.ESP-STL",
                    Some("application/json"),
                    &[("well_id", "ESP-STL")],
                    json!([
                        {"ts": ts(2 * i), "motor_current_a": i as f64},
                        {"ts": ts(2 * i + 1), "motor_current_a": i as f64 + 0.5}
                    ])
                    .to_string()
                    .as_bytes(),
                )
                .await;
            }
        }
    };
    publish(0..50).await;
    wait_points(&server, "ESP-STL", 100).await;
    let before = amqp_status(&server).await;

    // The link goes silent; the gateway goes on publishing to the queue.
    relay.stall();
    publish(50..100).await;
    let stalled = Instant::now();
    let deadline = stalled + Duration::from_secs(20);
    loop {
        let status = amqp_status(&server).await;
        if status["connections"].as_u64().unwrap_or(0) > before["connections"].as_u64().unwrap_or(0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled connection went unnoticed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let noticed = stalled.elapsed();

    let points = wait_points(&server, "ESP-STL", 200).await;
    let expected: Vec<String> = (0..200).map(ts).collect();
    assert_eq!(
        points["ts"],
        json!(expected),
        "every confirmed message stored once"
    );
    let status = super::wait_for_status(&server, "amqp", "readings_accepted", 200).await;
    eprintln!(
        "amqp stalled link: reconnected {:.1} s after the stall (heartbeat 2 s); received {} ({} redelivered), accepted {}, duplicates {}, connections {}",
        noticed.as_secs_f64(),
        status["received"],
        status["redelivered"],
        status["readings_accepted"],
        status["readings_duplicate"],
        status["connections"],
    );
    assert_eq!(status["readings_rejected"], 0, "{status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.ready(&names.queue).await > 0 {
        assert!(Instant::now() < deadline, "messages left in the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.clean_up(&names).await;
}
