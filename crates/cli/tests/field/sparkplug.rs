//! Sparkplug B through Mosquitto: births, data by alias, a sequence gap, a rebirth request.
//! The payloads are encoded here by hand from the published `sparkplug_b.proto` (field
//! numbers and wire types), independently of the server's decoder.

use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::json;

use super::*;

/// Minimal protobuf writer: just what Sparkplug payloads need.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.varint(v);
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

/// A metric value and its Sparkplug data type.
enum V {
    Float(f32),
    Double(f64),
    Int32(i32),
    Str(&'static str),
    Bool(bool),
}

/// `Payload.Metric`: name = 1, alias = 2, timestamp = 3, datatype = 4, int_value = 10,
/// long_value = 11, float_value = 12, double_value = 13, boolean_value = 14, string_value = 15.
fn metric(name: Option<&str>, alias: Option<u64>, ts: Option<u64>, value: V) -> Vec<u8> {
    let mut m = Pb::default();
    if let Some(name) = name {
        m.bytes(1, name.as_bytes());
    }
    if let Some(alias) = alias {
        m.uint(2, alias);
    }
    if let Some(ts) = ts {
        m.uint(3, ts);
    }
    match value {
        V::Float(v) => m.uint(4, 9).float(12, v),
        V::Double(v) => m.uint(4, 10).double(13, v),
        V::Int32(v) => m.uint(4, 3).uint(10, v as u32 as u64),
        V::Str(s) => m.uint(4, 12).bytes(15, s.as_bytes()),
        V::Bool(b) => m.uint(4, 11).uint(14, b as u64),
    };
    m.0
}

/// `Payload`: timestamp = 1, metrics = 2, seq = 3.
fn payload(ts: u64, seq: Option<u64>, metrics: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Pb::default();
    p.uint(1, ts);
    for m in metrics {
        p.bytes(2, m);
    }
    if let Some(seq) = seq {
        p.uint(3, seq);
    }
    p.0
}

/// Reads the (name, boolean value) of each metric of a payload: enough to recognise a
/// rebirth request.
fn read_bool_metrics(mut b: &[u8]) -> Vec<(String, bool)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    fn skip(b: &mut &[u8], wire: u64) -> Option<Vec<u8>> {
        match wire {
            0 => {
                varint(b);
                None
            }
            1 => {
                *b = &b[8..];
                None
            }
            2 => {
                let n = varint(b) as usize;
                let v = b[..n].to_vec();
                *b = &b[n..];
                Some(v)
            }
            5 => {
                *b = &b[4..];
                None
            }
            w => panic!("wire type {w}"),
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (field, wire) = (key >> 3, key & 7);
        if field == 2 && wire == 2 {
            let n = varint(&mut b) as usize;
            let mut m = &b[..n];
            b = &b[n..];
            let (mut name, mut value) = (String::new(), false);
            while !m.is_empty() {
                let key = varint(&mut m);
                let (field, wire) = (key >> 3, key & 7);
                match (field, wire) {
                    (14, 0) => value = varint(&mut m) != 0,
                    (1, 2) => name = String::from_utf8(skip(&mut m, 2).unwrap()).unwrap(),
                    _ => {
                        skip(&mut m, wire);
                    }
                }
            }
            out.push((name, value));
        } else {
            skip(&mut b, wire);
        }
    }
    out
}

/// Milliseconds since the epoch of `ts(secs)`.
fn ms(secs: i64) -> u64 {
    ((1_767_225_600 + secs) * 1000) as u64
}

#[tokio::test]
async fn sparkplug_births_map_aliases_to_channels_gaps_are_counted_and_unknown_devices_get_a_rebirth_request()
 {
    init();
    let Some((url, host, port)) = mqtt_broker() else {
        return;
    };
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server_with(
        dir.path(),
        &url,
        &prefix,
        &[("ESPWATCH_MQTT_SPARKPLUG_GROUP", prefix.as_str())],
    );
    wait_subscribed(&server).await;
    let group = prefix.as_str();
    let (client, mut commands) = test_client(
        &host,
        port,
        &format!("{prefix}-edge"),
        Some(&format!("spBv1.0/{group}/NCMD/+")),
    )
    .await;
    let send = |kind: &str, device: Option<&str>, body: Vec<u8>| {
        let topic = match device {
            Some(d) => format!("spBv1.0/{group}/{kind}/GW-1/{d}"),
            None => format!("spBv1.0/{group}/{kind}/GW-1"),
        };
        let client = client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .expect("publish")
        }
    };

    // NBIRTH (seq 0), then a DDATA by alias from a device with no DBIRTH: the server cannot
    // know what alias 1 is and asks the node for its births again.
    send(
        "NBIRTH",
        None,
        payload(
            ms(0),
            Some(0),
            &[
                metric(Some("bdSeq"), None, None, V::Int32(0)),
                metric(Some("Node Control/Rebirth"), None, None, V::Bool(false)),
            ],
        ),
    )
    .await;
    send(
        "DDATA",
        Some("ESP-S1"),
        payload(
            ms(5),
            Some(1),
            &[metric(None, Some(1), None, V::Float(49.0))],
        ),
    )
    .await;
    let command = tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .expect("a rebirth request within 10 s")
        .expect("command");
    assert_eq!(command.topic, format!("spBv1.0/{group}/NCMD/GW-1"));
    assert_eq!(
        read_bool_metrics(&command.payload),
        vec![("Node Control/Rebirth".to_owned(), true)]
    );

    // The births, with aliases and current values, then data by alias only.
    send(
        "DBIRTH",
        Some("ESP-S1"),
        payload(
            ms(10),
            Some(2),
            &[
                metric(
                    Some("Drive/Output Frequency"),
                    Some(1),
                    None,
                    V::Float(50.0),
                ),
                metric(Some("Motor Current"), Some(2), None, V::Double(40.25)),
                metric(Some("Gauge/PIP"), Some(3), None, V::Int32(850)),
                metric(Some("Drive/Fault Code"), Some(4), None, V::Str("none")),
            ],
        ),
    )
    .await;
    send(
        "DDATA",
        Some("ESP-S1"),
        payload(
            ms(20),
            Some(3),
            &[
                metric(None, Some(1), None, V::Float(51.0)),
                metric(None, Some(2), None, V::Double(41.5)),
            ],
        ),
    )
    .await;
    // seq 5 after 3: a gap (4 was lost). Per-metric timestamps make two readings; the
    // second one's current is out of range and answered on the error topic.
    send(
        "DDATA",
        Some("ESP-S1"),
        payload(
            ms(40),
            Some(5),
            &[
                metric(None, Some(3), Some(ms(30)), V::Int32(-3)),
                metric(None, Some(2), Some(ms(30)), V::Double(42.0)),
                metric(None, Some(2), Some(ms(40)), V::Double(5000.0)),
            ],
        ),
    )
    .await;

    let points = wait_points(&server, "ESP-S1", 3).await;
    assert_eq!(points["ts"], json!([ts(10), ts(20), ts(30)]));
    assert_eq!(points["fields"]["frequency_hz"], json!([50.0, 51.0, null]));
    assert_eq!(
        points["fields"]["motor_current_a"],
        json!([40.25, 41.5, 42.0])
    );
    assert_eq!(
        points["fields"]["intake_pressure_psi"],
        json!([850.0, null, -3.0])
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = mqtt_status(&server).await;
        // Five sent, plus the server's own NCMD coming back on `spBv1.0/<group>/#`.
        if status["messages"] == json!(6) {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["sparkplug"]["seq_gaps"], 1, "{status}");
    assert_eq!(status["sparkplug"]["rebirth_requests"], 1, "{status}");
    assert_eq!(status["sparkplug"]["unmapped_metrics"], 1, "{status}");
    assert_eq!(status["readings_rejected"], 1, "{status}");
    assert_eq!(status["readings_accepted"], 3, "{status}");
}

/// A stream on `server` (its admin key) subscribed to `events`.
async fn open_stream(
    server: &ChildServer,
    events: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/api/v1/stream?events={events}", server.address)
        .into_client_request()
        .expect("request");
    let key = server.api_key.as_deref().expect("admin key");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("espwatch.v1, bearer.{key}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("stream upgrade");
    assert!(next_message(&mut ws, "subscribed").await.is_some());
    ws
}

/// The next stream message of `kind` within 10 s (others skipped).
async fn next_message(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
) -> Option<Value> {
    next_message_within(ws, kind, Duration::from_secs(10)).await
}

async fn next_message_within(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    kind: &str,
    within: Duration,
) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let m: Value = serde_json::from_str(&text).expect("JSON message");
                if m["type"] == kind {
                    return Some(m);
                }
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("stream failed: {e}"),
            Ok(None) => panic!("stream closed"),
            Err(_) => return None,
        }
    }
}

/// `GET /wells/latest`'s entry of `well`.
async fn latest_entry(server: &ChildServer, well: &str) -> Value {
    let response = server
        .client()
        .get(server.url("/api/v1/wells/latest"))
        .send()
        .await
        .expect("latest");
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    body["wells"]
        .as_array()
        .expect("wells")
        .iter()
        .find(|w| w["well_id"] == well)
        .cloned()
        .unwrap_or_else(|| panic!("{well} not in {body}"))
}

/// Issue 21: births and deaths are the wells' online/offline state, in `GET /wells/latest`
/// and on the stream. A gateway (edge node `GW-W`) connects with its NDEATH as MQTT will,
/// births two devices and sends data: both online. One device's DDEATH puts it offline; then
/// the gateway's connection is cut without a DISCONNECT, Mosquitto publishes the will, and
/// the other device goes offline too. A well fed by plain MQTT has no `online` at all.
#[tokio::test]
async fn sparkplug_births_and_deaths_and_the_gateways_will_are_the_wells_online_state() {
    init();
    let Some((url, host, port)) = mqtt_broker() else {
        return;
    };
    let prefix = unique_prefix();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server_with(
        dir.path(),
        &url,
        &prefix,
        &[("ESPWATCH_MQTT_SPARKPLUG_GROUP", prefix.as_str())],
    );
    wait_subscribed(&server).await;
    let mut ws = open_stream(&server, "connectivity").await;
    let group = prefix.as_str();
    let bd_seq = |n: i32| metric(Some("bdSeq"), None, None, V::Int32(n));

    // The gateway: its NDEATH (bdSeq 3) is the will the broker publishes if it vanishes.
    let mut options = rumqttc::MqttOptions::new(format!("{prefix}-gw"), host.as_str(), port);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_last_will(rumqttc::LastWill::new(
        format!("spBv1.0/{group}/NDEATH/GW-W"),
        payload(ms(0), None, &[bd_seq(3)]),
        QoS::AtLeastOnce,
        false,
    ));
    let (gateway, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let connection = tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let send = |kind: &str, device: Option<&str>, body: Vec<u8>| {
        let topic = match device {
            Some(d) => format!("spBv1.0/{group}/{kind}/GW-W/{d}"),
            None => format!("spBv1.0/{group}/{kind}/GW-W"),
        };
        let gateway = gateway.clone();
        async move {
            gateway
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .expect("publish")
        }
    };
    send("NBIRTH", None, payload(ms(0), Some(0), &[bd_seq(3)])).await;
    for (seq, device) in [(1, "ESP-ON1"), (2, "ESP-ON2")] {
        send(
            "DBIRTH",
            Some(device),
            payload(
                ms(10),
                Some(seq),
                &[metric(
                    Some("Motor Current"),
                    Some(1),
                    None,
                    V::Double(40.0),
                )],
            ),
        )
        .await;
    }
    send(
        "DDATA",
        Some("ESP-ON1"),
        payload(
            ms(20),
            Some(3),
            &[metric(None, Some(1), None, V::Double(41.0))],
        ),
    )
    .await;
    // A well of the plain topic beside them.
    gateway
        .publish(
            format!("{prefix}/ESP-PLAIN/telemetry"),
            QoS::AtLeastOnce,
            false,
            json!({"ts": ts(10), "motor_current_a": 40.0})
                .to_string()
                .into_bytes(),
        )
        .await
        .expect("publish");

    let mut online = std::collections::BTreeMap::new();
    while online.len() < 2 {
        let m = next_message(&mut ws, "connectivity")
            .await
            .unwrap_or_else(|| panic!("no connectivity event; seen {online:?}"));
        assert_eq!(m["online"], true, "{m}");
        assert!(m["ts"].is_string(), "{m}");
        online.insert(m["well_id"].as_str().unwrap().to_owned(), m);
    }
    assert_eq!(
        online.keys().collect::<Vec<_>>(),
        ["ESP-ON1", "ESP-ON2"],
        "{online:?}"
    );
    let points = wait_points(&server, "ESP-ON1", 2).await;
    assert_eq!(points["fields"]["motor_current_a"], json!([40.0, 41.0]));
    wait_points(&server, "ESP-PLAIN", 1).await;
    for well in ["ESP-ON1", "ESP-ON2"] {
        let entry = latest_entry(&server, well).await;
        assert_eq!(entry["online"], true, "{entry}");
        assert_eq!(
            entry["online_changed_at"], online[well]["ts"],
            "the time of the change: {entry}"
        );
    }
    let plain = latest_entry(&server, "ESP-PLAIN").await;
    assert!(
        plain.get("online").is_none() && plain.get("online_changed_at").is_none(),
        "no protocol said anything about this well's connection: {plain}"
    );

    // A device's death.
    send("DDEATH", Some("ESP-ON2"), payload(ms(30), Some(4), &[])).await;
    let m = next_message(&mut ws, "connectivity")
        .await
        .expect("DDEATH event");
    assert_eq!(
        (&m["well_id"], &m["online"]),
        (&json!("ESP-ON2"), &json!(false))
    );
    assert_eq!(latest_entry(&server, "ESP-ON2").await["online"], false);
    assert_eq!(latest_entry(&server, "ESP-ON1").await["online"], true);

    // The gateway's connection is lost: the broker publishes its will.
    connection.abort();
    let _ = connection.await;
    drop(gateway);
    let m = next_message(&mut ws, "connectivity")
        .await
        .expect("the will's NDEATH puts the node's devices offline");
    assert_eq!(
        (&m["well_id"], &m["online"]),
        (&json!("ESP-ON1"), &json!(false)),
        "{m}"
    );
    let entry = latest_entry(&server, "ESP-ON1").await;
    assert_eq!(entry["online"], false, "{entry}");
    assert_eq!(entry["online_changed_at"], m["ts"], "{entry}");
    // ESP-ON2 was offline already: no second event.
    let more = next_message_within(&mut ws, "connectivity", Duration::from_secs(1)).await;
    assert!(more.is_none(), "one event per change: {more:?}");
}
