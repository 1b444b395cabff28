//! Several nodes on one database (issue 21): two real `espwatch serve` processes on port 0,
//! one fresh PostgreSQL database, joined through the real Redis (`redis_url`, a channel
//! prefix of the test's own). Readings ingested on one node are stored for both and reach
//! the other's stream; an API key revoked on one is refused by the other at once (its
//! credential cache is kept for a minute, so only Redis can tell it); an alarm acknowledged on
//! one reaches the other's stream and alarm list.
//!
//! Redis comes from `ESPWATCH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); it and
//! PostgreSQL unreachable: the test prints why and passes, unless `ESPWATCH_REQUIRE_SERVICES=1`.

use std::time::{Duration, Instant};

use espwatch_store::NewAlarm;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::*;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The test Redis's URL, or `None` (after saying why) when it cannot be reached.
fn redis_server() -> Option<String> {
    let url = std::env::var("ESPWATCH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let authority = url
        .strip_prefix("redis://")
        .expect("ESPWATCH_TEST_REDIS_URL must be redis://host:port")
        .split('/')
        .next()
        .unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .or_else(|_| std::net::ToSocketAddrs::to_socket_addrs(&(authority, 6379)))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(url);
    }
    let reason = format!("Redis {authority} unreachable (set ESPWATCH_TEST_REDIS_URL)");
    if require_services() {
        panic!("{reason}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
    }
    eprintln!("skipped: {reason}");
    None
}

/// A stream on `server` with `credential`, subscribed to `events`.
async fn open_stream(server: &ChildServer, credential: &str, events: &str) -> Ws {
    let mut request = format!("ws://{}/api/v1/stream?events={events}", server.address)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("espwatch.v1, bearer.{credential}")).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("stream upgrade");
    let m = next_of(&mut ws, "subscribed", Duration::from_secs(5)).await;
    assert!(m.is_some(), "no subscribed message");
    ws
}

/// The next message of `kind` within `within` (a close is returned as `closed`).
async fn next_of(ws: &mut Ws, kind: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let m = match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(&text).expect("JSON"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                json!({"type": "closed", "code": frame.map(|f| u16::from(f.code))})
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => json!({"type": "closed", "code": null}),
            Err(_) => return None,
        };
        if m["type"] == kind || m["type"] == "closed" {
            return Some(m);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_share_readings_streams_revocations_and_alarms() {
    init();
    let Some(redis) = redis_server() else { return };
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let (dirs, nodes, admin, http) = start_two_nodes(&db.url, &redis);
    let (a, b) = (&nodes[0], &nodes[1]);

    // Both nodes joined (the subscriber connects in the background).
    for node in [a, b] {
        wait_redis(&http, node, "healthy").await;
    }

    // Readings ingested on A: stored for B, and on B's stream.
    let mut stream_b = open_stream(b, &admin, "readings").await;
    let mut latencies = Vec::new();
    for i in 0..40 {
        let started = Instant::now();
        let response = http
            .post(a.url("/api/v1/telemetry"))
            .json(&reading("CL-1", &ts(i * 10), 40.0 + i as f64))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let m = next_of(&mut stream_b, "readings", Duration::from_secs(5))
            .await
            .expect("the reading reached node B's stream");
        latencies.push(started.elapsed());
        assert_eq!(m["readings"][0]["well_id"], "CL-1", "{m}");
        assert_eq!(m["readings"][0]["motor_current_a"], 40.0 + i as f64, "{m}");
    }
    let (status, points) = status_json(
        http.get(b.url(
            "/api/v1/wells/CL-1/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z&max_points=1000000",
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{points}");
    assert_eq!(points["ts"].as_array().map(Vec::len), Some(40), "{points}");
    let mut sorted = latencies.clone();
    sorted.sort();
    eprintln!(
        "ingest on A → stream on B: median {:?}, max {:?} (40 readings, one per request)",
        median(latencies),
        sorted.last().unwrap()
    );

    // An API key revoked on A is refused by B at once, and B's stream of it is closed.
    let mut revoked_in = Vec::new();
    for k in 0..5 {
        let (status, created) = status_json(
            http.post(a.url("/api/v1/apikeys"))
                .json(&json!({"name": format!("viewer-{k}"), "role": "viewer", "expires": "1d"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().unwrap().to_owned();
        let viewer = bearer_client(&key);
        // B now holds the key in its credential cache (for a minute).
        for _ in 0..2 {
            let r = viewer.get(b.url("/api/v1/wells")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let mut stream = open_stream(b, &key, "readings").await;
        let r = http
            .delete(a.url(&format!(
                "/api/v1/apikeys/{}",
                created["id"].as_str().unwrap()
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let revoked = Instant::now();
        loop {
            let r = viewer.get(b.url("/api/v1/wells")).send().await.unwrap();
            if r.status() == 401 {
                break;
            }
            assert_eq!(r.status(), 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "node B still accepts a key revoked on node A"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        revoked_in.push(revoked.elapsed());
        let closed = next_of(&mut stream, "closed", Duration::from_secs(2))
            .await
            .expect("node B closed the revoked key's stream");
        assert_eq!(closed["code"], 1008, "{closed}");
    }
    eprintln!(
        "revocation on A → refused on B: median {:?}, max {:?} (5 keys; credential cache 60 s)",
        median(revoked_in.clone()),
        revoked_in.iter().max().unwrap()
    );

    // An alarm acknowledged on B: on A's stream and in A's list.
    let config = espwatch_app::Config {
        data_dir: dirs[0].path().to_path_buf(),
        database_url: Some(db.url.clone()),
        database_pool_size: 2,
        ..espwatch_app::Config::default()
    };
    let store = espwatch_app::open_store(&config).await.expect("store");
    let (alarm, _) = store
        .alarms
        .clone()
        .expect("alarm store")
        .raise_alarm(NewAlarm {
            well_id: "CL-1".parse().unwrap(),
            condition: "gas_lock".parse().unwrap(),
            severity: "major".parse().unwrap(),
            confidence: 0.9,
            started_at: espwatch_core::Timestamp::from_secs(1_764_000_000),
            detail: json!({}),
        })
        .await
        .expect("raise");
    let mut stream_a = open_stream(a, &admin, "alarms").await;
    let (status, body) = status_json(
        http.post(b.url(&format!("/api/v1/alarms/{}/ack", alarm.id)))
            .json(&json!({"comment": "seen from node B"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let m = next_of(&mut stream_a, "alarm", Duration::from_secs(5))
        .await
        .expect("the acknowledgement reached node A's stream");
    assert_eq!(m["change"], "acknowledged", "{m}");
    assert_eq!(m["alarm"]["id"], alarm.id, "{m}");
    let (status, list) = status_json(
        http.get(a.url("/api/v1/alarms?well_id=CL-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert!(list.to_string().contains("seen from node B"), "{list}");

    for mut node in nodes {
        node.terminate();
    }
}

/// Two nodes on `db` joined through `redis` under a channel prefix of this test's own, an admin
/// API key and a client that presents it. The data directories come first so that, bound by the
/// caller, they outlive the nodes.
fn start_two_nodes(
    db: &str,
    redis: &str,
) -> (
    [tempfile::TempDir; 2],
    Vec<ChildServer>,
    String,
    reqwest::Client,
) {
    let prefix = format!(
        "espwatch-test-{}",
        espwatch_app::keys::random_token(9).unwrap().to_lowercase()
    );
    let admin = cli_api_key(&["--database-url", db], "admin");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes = dirs
        .iter()
        .map(|dir| start_node(dir.path(), db, redis, &prefix))
        .collect();
    let http = bearer_client(&admin);
    (dirs, nodes, admin, http)
}

/// Starts a node on `db` joined through `redis` with the test's channel `prefix`.
fn start_node(dir: &std::path::Path, db: &str, redis: &str, prefix: &str) -> ChildServer {
    ChildServer::start_with_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[
            ("ESPWATCH_DATABASE_URL", db),
            ("ESPWATCH_REDIS_URL", redis),
            ("ESPWATCH_REDIS_CHANNEL_PREFIX", prefix),
            // A minute: a revocation seen sooner came through Redis.
            ("ESPWATCH_AUTH_CACHE_MS", "60000"),
        ],
    )
}

/// `/health/ready` of `node`: (HTTP status, body).
async fn ready(http: &reqwest::Client, node: &ChildServer) -> (u16, Value) {
    status_json(http.get(node.url("/health/ready")).send().await.unwrap()).await
}

/// Waits until `checks.redis.status` of `node` is `status`.
async fn wait_redis(http: &reqwest::Client, node: &ChildServer, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, health) = ready(http, node).await;
        if health["checks"]["redis"]["status"] == status {
            return health;
        }
        assert!(Instant::now() < deadline, "redis never {status}: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis away and back (a TCP relay the test cuts): both nodes keep serving from the database,
/// `/health/ready` says `degraded` (still 200); when Redis returns they join again, streams
/// cross nodes again, and a key revoked while Redis was away (so no node was told) is refused
/// by the other node at once (each node forgets its cached credentials on reconnecting).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_keep_serving_without_redis_and_catch_up_when_it_returns() {
    init();
    let Some(redis) = redis_server() else { return };
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let authority = redis
        .strip_prefix("redis://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (host, port) = authority
        .rsplit_once('@')
        .map_or(authority, |(_, a)| a)
        .rsplit_once(':')
        .map_or((authority.to_owned(), 6379), |(h, p)| {
            (h.to_owned(), p.parse().unwrap())
        });
    let relay = super::amqp::Relay::start((host, port)).await;
    let relayed = format!("redis://127.0.0.1:{}", relay.port);
    let (_dirs, nodes, admin, http) = start_two_nodes(&db.url, &relayed);
    let (a, b) = (&nodes[0], &nodes[1]);
    for node in [a, b] {
        wait_redis(&http, node, "healthy").await;
    }

    relay.cut();
    for node in [a, b] {
        let health = wait_redis(&http, node, "degraded").await;
        let (status, _) = ready(&http, node).await;
        assert_eq!(status, 200, "Redis away never unreadies a node: {health}");
    }
    // Meanwhile: ingest on A is stored for B.
    let r = http
        .post(a.url("/api/v1/telemetry"))
        .json(&reading("CL-2", &ts(0), 41.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, points) = status_json(
        http.get(
            b.url("/api/v1/wells/CL-2/telemetry?from=2025-12-01T00:00:00Z&to=2026-12-31T00:00:00Z"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{points}");
    assert_eq!(points["ts"], json!([ts(0)]), "{points}");
    // A key cached on B, revoked on A while no node can tell the others.
    let (status, created) = status_json(
        http.post(a.url("/api/v1/apikeys"))
            .json(&json!({"name": "viewer-outage", "role": "viewer", "expires": "1d"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let viewer = bearer_client(created["key"].as_str().unwrap());
    let r = viewer.get(b.url("/api/v1/wells")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(a.url(&format!(
            "/api/v1/apikeys/{}",
            created["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = viewer.get(b.url("/api/v1/wells")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "without Redis, B trusts its cache (auth_cache_ms) until it is told"
    );

    relay.restore();
    let back = Instant::now();
    for node in [a, b] {
        wait_redis(&http, node, "healthy").await;
    }
    let r = viewer.get(b.url("/api/v1/wells")).send().await.unwrap();
    assert_eq!(r.status(), 401, "B forgot its cache on joining again");
    eprintln!("Redis back → both nodes joined in {:?}", back.elapsed());

    // Streams cross nodes again (the first publish may meet the publisher's dead connection).
    let mut stream_b = open_stream(b, &admin, "readings").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 1;
    loop {
        let r = http
            .post(a.url("/api/v1/telemetry"))
            .json(&reading("CL-2", &ts(i * 10), 42.0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if next_of(&mut stream_b, "readings", Duration::from_millis(500))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B's stream never got A's readings again"
        );
        i += 1;
    }
    let (_, health) = ready(&http, a).await;
    assert!(
        health["checks"]["redis"]["connection_failures"].as_u64() > Some(0),
        "{health}"
    );

    for mut node in nodes {
        node.terminate();
    }
}

/// Wells with diagnostics state on `node`, and the nodes it sees.
async fn diagnosed_wells(http: &reqwest::Client, node: &ChildServer) -> (u64, u64) {
    let (_, health) = ready(http, node).await;
    (
        health["checks"]["diagnostics"]["wells"].as_u64().unwrap(),
        health["checks"]["redis"]["nodes"].as_u64().unwrap(),
    )
}

/// Each well is diagnosed on exactly one node, whichever node its readings reach; when a node
/// dies (`kill -9`) its wells move to the survivor, rebuilt from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_well_is_diagnosed_on_one_node_and_moves_when_its_node_dies() {
    init();
    let Some(redis) = redis_server() else { return };
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let (_dirs, mut nodes, _admin, http) = start_two_nodes(&db.url, &redis);
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &nodes {
        while diagnosed_wells(&http, node).await.1 != 2 {
            assert!(Instant::now() < deadline, "the nodes never saw each other");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let wells: Vec<String> = (0..24).map(|i| format!("OWN-{i:02}")).collect();
    // Every well's readings through both nodes in turn (each node alone would diagnose all
    // 24 wells: 48 engines in all).
    let send = |round: i64| -> Vec<Value> {
        wells
            .iter()
            .map(|w| reading(w, &ts(round * 10), 40.0))
            .collect()
    };
    for round in 0..4 {
        let r = http
            .post(nodes[(round % 2) as usize].url("/api/v1/telemetry"))
            .json(&send(round))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let split = loop {
        let a = diagnosed_wells(&http, &nodes[0]).await.0;
        let b = diagnosed_wells(&http, &nodes[1]).await.0;
        if a + b == 24 && a > 0 && b > 0 {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "wells diagnosed: A {a}, B {b} (of 24)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "24 wells sent through both nodes: diagnosed on A {}, on B {}",
        split.0, split.1
    );

    nodes[1].kill_9();
    let died = Instant::now();
    while diagnosed_wells(&http, &nodes[0]).await.1 != 1 {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "node B never left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left_after = died.elapsed();
    let r = http
        .post(nodes[0].url("/api/v1/telemetry"))
        .json(&send(4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while diagnosed_wells(&http, &nodes[0]).await.0 != 24 {
        assert!(
            Instant::now() < deadline,
            "node A did not take node B's wells"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node B killed: A alone after {left_after:?}, diagnosing all 24 wells");
    nodes[0].terminate();
}
