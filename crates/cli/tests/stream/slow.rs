//! A subscriber that reads, but slowly: it falls behind, is told what it missed (`lagged`),
//! and ingestion never waits for it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::*;

/// How many bytes the subscriber may still read (`None`: as fast as it likes), and the
/// reader waiting for more.
#[derive(Default)]
struct Allowance {
    state: Mutex<(Option<u64>, Option<Waker>)>,
}

impl Allowance {
    fn limited() -> Arc<Allowance> {
        Arc::new(Allowance {
            state: Mutex::new((Some(0), None)),
        })
    }

    fn grant(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap();
        if let Some(left) = &mut s.0 {
            *left += bytes;
        }
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }

    fn unlimited(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = None;
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }
}

/// The subscriber's TCP connection, read no faster than its [`Allowance`].
struct Paced {
    tcp: TcpStream,
    allowance: Arc<Allowance>,
}

impl AsyncRead for Paced {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let most = {
            let mut s = self.allowance.state.lock().unwrap();
            match s.0 {
                None => buf.remaining(),
                Some(0) => {
                    s.1 = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Some(left) => buf.remaining().min(left as usize),
            }
        };
        let mut chunk = vec![0u8; most];
        let mut part = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.tcp).poll_read(cx, &mut part) {
            Poll::Ready(Ok(())) => {
                let n = part.filled().len();
                buf.put_slice(part.filled());
                if let Some(left) = &mut self.allowance.state.lock().unwrap().0 {
                    *left = left.saturating_sub(n as u64);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Paced {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// What the subscriber has received so far.
#[derive(Default, Debug)]
struct Received {
    readings: u64,
    coalesced: u64,
    missed_events: u64,
    lagged_notices: u64,
    /// Newest reading time seen.
    newest: Option<chrono::DateTime<chrono::Utc>>,
    closed: Option<String>,
}

/// The most bytes a loopback connection can hold in flight: the server's send buffer at its
/// largest (Linux autotuning stops at `tcp_wmem`'s maximum) and the subscriber's receive
/// buffer, set small here.
fn most_in_flight(receive_buffer: u64) -> u64 {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 * 1024 * 1024u64);
    let core = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0u64);
    // The kernel doubles what is asked of SO_RCVBUF / SO_SNDBUF for its bookkeeping.
    wmem.max(2 * core) + 2 * receive_buffer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_told_what_it_missed_and_ingestion_does_not_wait_for_it() {
    const RING: usize = 16;
    // Up to RING events merge into one message; at 300 readings each that is under the
    // 5 000 past which readings are coalesced, so every reading is either delivered or
    // counted missed.
    const PER_BATCH: u64 = 300;
    let app = spawn_app_with(|c| c.stream_buffer_events = RING).await;

    let allowance = Allowance::limited();
    let socket = TcpSocket::new_v4().unwrap();
    let receive_buffer = 8 * 1024;
    socket.set_recv_buffer_size(receive_buffer as u32).unwrap();
    let tcp = socket.connect(app.address).await.expect("connect");
    let mut request = format!("ws://{}/api/v1/stream?events=readings", app.address)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("espwatch.v1, bearer.{}", app.admin_key)).unwrap(),
    );
    // The handshake and the `subscribed` message are read at full speed.
    allowance.unlimited();
    let (mut ws, _) = tokio_tungstenite::client_async(
        request,
        Paced {
            tcp,
            allowance: allowance.clone(),
        },
    )
    .await
    .expect("upgrade");
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert!(t.contains("\"subscribed\""), "{t}"),
        other => panic!("no subscribed message: {other:?}"),
    }
    // From now on it reads only what it is granted.
    allowance.state.lock().unwrap().0 = Some(0);

    let received = Arc::new(Mutex::new(Received::default()));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(message) = ws.next().await {
                let text = match message {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(frame)) => {
                        received.lock().unwrap().closed = Some(format!("{frame:?}"));
                        return;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        received.lock().unwrap().closed = Some(e.to_string());
                        return;
                    }
                };
                let Ok(m) = serde_json::from_str::<Value>(&text) else {
                    received.lock().unwrap().closed = Some(format!("not JSON: {text}"));
                    return;
                };
                let mut r = received.lock().unwrap();
                match m["type"].as_str() {
                    Some("readings") => {
                        let list = m["readings"].as_array().unwrap();
                        r.readings += list.len() as u64;
                        r.coalesced += m["coalesced"].as_u64().unwrap_or(0);
                        for reading in list {
                            let ts = chrono::DateTime::parse_from_rfc3339(
                                reading["ts"].as_str().unwrap(),
                            )
                            .unwrap()
                            .to_utc();
                            r.newest = r.newest.max(Some(ts));
                        }
                    }
                    Some("lagged") => {
                        r.lagged_notices += 1;
                        r.missed_events += m["missed_events"].as_u64().expect("missed_events");
                    }
                    other => panic!("unexpected message {other:?}: {m}"),
                }
            }
            received.lock().unwrap().closed = Some("ended".into());
        })
    };

    // Batches of one event each; the subscriber is granted a quarter of each batch's bytes
    // as it is acknowledged, so it reads all along, four times slower than ingestion.
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let body = |b: i64| {
        let ts = (start + chrono::Duration::seconds(b))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let batch: Vec<Value> = (0..PER_BATCH)
            .map(|w| reading(&format!("SL-{w:03}"), &ts, 40.0 + (w % 7) as f64))
            .collect();
        json!(batch).to_string()
    };
    let event_bytes = body(0).len() as u64;
    let needed = most_in_flight(receive_buffer) + (RING as u64 + 1) * 2 * event_bytes;
    let batches = (2 * needed / event_bytes) as i64;
    for b in 0..batches {
        let sent = body(b);
        let (status, answer) = app
            .post("/api/v1/telemetry", "application/json", sent.clone())
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], PER_BATCH, "{answer}");
        allowance.grant(sent.len() as u64 / 4);
    }
    let total = batches as u64 * PER_BATCH;
    let behind = received.lock().unwrap().readings;
    // Every batch was acknowledged while the subscriber had read only part of them.
    assert!(behind < total, "{behind} of {total}");

    // Now it reads at full speed: it is current again (the last batch arrives) on the same
    // connection, and every reading it did not get is covered by what it was told it missed
    // (the ring also carries other events, e.g. the wells' start seen by the diagnostics, so
    // a missed event is at most one batch).
    allowance.unlimited();
    let last = chrono::DateTime::parse_from_rfc3339(
        &(start + chrono::Duration::seconds(batches - 1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
    .unwrap()
    .to_utc();
    let mut waited = 0;
    loop {
        {
            let r = received.lock().unwrap();
            assert!(r.closed.is_none(), "the slow subscriber was closed: {r:?}");
            assert!(
                r.readings + r.coalesced <= total,
                "more than was sent: {r:?}"
            );
            if r.newest == Some(last) {
                let lost = total - r.readings - r.coalesced;
                assert!(
                    r.lagged_notices >= 1 && lost > 0 && lost <= r.missed_events * PER_BATCH,
                    "{lost} readings lost: {r:?}"
                );
                println!(
                    "{batches} batches of {PER_BATCH}: when the last was acknowledged the subscriber had {behind} readings; in the end {r:?}, {lost} readings lost"
                );
                break;
            }
        }
        waited += 1;
        assert!(
            waited < 600,
            "the last batch never reached the subscriber: {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, health) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{health}");
    let missed = received.lock().unwrap().missed_events;
    assert!(
        health["checks"]["stream"]["lagged_events"].as_u64() >= Some(missed),
        "{health}"
    );
    reader.abort();
    app.stop().await;
}
