//! Benchmark: how long a committed reading takes to reach 200 WebSocket subscribers while
//! 1 000 readings/s are ingested (issue 19). Ignored; run with
//! `cargo test --release -p espwatch --test api -- --ignored stream_delivery_latency --nocapture`.
//!
//! Each batch's readings share one timestamp, which tells a subscriber which batch a message
//! carries. Per (subscriber, batch) it records the arrival; the figures are
//! - *send → delivery*: from just before the POST (so ingest + commit + fan-out): an upper
//!   bound of commit → delivery;
//! - *ack → delivery*: from the POST's answer (after the commit) to the arrival; negative when
//!   the subscriber had it before the ingesting client had its answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{open, subscribed};
use crate::support::*;

const SECONDS: usize = 15;
const BATCH: usize = 100;
const SUBSCRIBERS: usize = 200;
const STEP_MS: i64 = 100;

/// When a batch was sent, and when its POST was answered.
type Sent = (Instant, Option<Instant>);

fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn stream_delivery_latency_benchmark() {
    let app = spawn_app_with(|c| {
        c.stream_max_connections_per_identity = 1000;
        c.max_connections_per_source = 0;
    })
    .await;
    let base = chrono::Utc::now() - chrono::Duration::hours(2);
    let batches = SECONDS * 1000 / STEP_MS as usize;
    // Per batch: when it was sent and when its POST was answered.
    let sent: Arc<Mutex<Vec<Option<Sent>>>> = Arc::new(Mutex::new(vec![None; batches]));
    let mut tasks = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut ws = open(&app, "?events=readings", Some(&app.admin_key), &[])
            .await
            .expect("subscriber");
        subscribed(&mut ws).await;
        tasks.push(tokio::spawn(async move {
            // Arrival per batch (first message carrying it).
            let mut arrivals: Vec<Option<Instant>> = vec![None; batches];
            let mut lagged = 0usize;
            while let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_secs(3), ws.next()).await
            {
                let now = Instant::now();
                lagged += usize::from(text.contains("\"lagged\""));
                // Distinct timestamps in the message, without parsing all of it.
                let mut rest = text.as_str();
                let mut last = "";
                while let Some(i) = rest.find("\"ts\":\"") {
                    rest = &rest[i + 6..];
                    let end = rest.find('"').unwrap_or(rest.len());
                    let ts = &rest[..end];
                    if ts != last {
                        last = ts;
                        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
                            let index =
                                (t.with_timezone(&chrono::Utc) - base).num_milliseconds() / STEP_MS;
                            if let Some(slot) = arrivals.get_mut(index as usize)
                                && slot.is_none()
                            {
                                *slot = Some(now);
                            }
                        }
                    }
                }
            }
            (arrivals, lagged)
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(STEP_MS as u64));
    let mut ingest = Vec::new();
    for index in 0..batches {
        tick.tick().await;
        let ts = (base + chrono::Duration::milliseconds(index as i64 * STEP_MS)).to_rfc3339();
        let batch: Vec<Value> = (0..BATCH)
            .map(|w| reading(&format!("B-{w:03}"), &ts, 40.0))
            .collect();
        let body = serde_json::to_string(&batch).unwrap();
        let started = Instant::now();
        sent.lock().unwrap()[index] = Some((started, None));
        let (status, _) = app
            .post("/api/v1/telemetry", "application/json", body)
            .await;
        let answered = Instant::now();
        assert_eq!(status, 200);
        sent.lock().unwrap()[index] = Some((started, Some(answered)));
        ingest.push((answered - started).as_secs_f64() * 1e3);
    }
    let sent = sent.lock().unwrap().clone();
    let (mut e2e, mut after_ack) = (Vec::new(), Vec::new());
    let (mut missing, mut lagged) = (0usize, 0usize);
    for t in tasks {
        let (arrivals, l) = t.await.unwrap();
        lagged += l;
        for (index, arrival) in arrivals.into_iter().enumerate() {
            let (started, answered) = sent[index].expect("sent");
            match arrival {
                Some(at) => {
                    e2e.push((at - started).as_secs_f64() * 1e3);
                    let answered = answered.expect("answered");
                    after_ack.push(if at >= answered {
                        (at - answered).as_secs_f64() * 1e3
                    } else {
                        -(answered - at).as_secs_f64() * 1e3
                    });
                }
                None => missing += 1,
            }
        }
    }
    for v in [&mut e2e, &mut after_ack, &mut ingest] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    println!(
        "fan-out to {SUBSCRIBERS} subscribers, {} readings/s in batches of {BATCH}, {SECONDS} s: \
         {} (subscriber, batch) deliveries, {missing} missing, {lagged} lagged notices\n\
         send → delivery ms: p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}\n\
         ack → delivery ms:  p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} (negative: before the ingesting client's answer)\n\
         batch ingest ms:    p50 {:.1} p99 {:.1}",
        BATCH * 1000 / STEP_MS as usize,
        e2e.len(),
        quantile(&e2e, 0.5),
        quantile(&e2e, 0.9),
        quantile(&e2e, 0.99),
        e2e[e2e.len() - 1],
        quantile(&after_ack, 0.5),
        quantile(&after_ack, 0.9),
        quantile(&after_ack, 0.99),
        after_ack[after_ack.len() - 1],
        quantile(&ingest, 0.5),
        quantile(&ingest, 0.99),
    );
}
