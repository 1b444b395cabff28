//! The accept loop: HTTP/1.1 connections served by hyper with the limits `axum::serve` does
//! not offer (issue 18 item 2).
//!
//! - **Header-read timeout** (`http_header_timeout_secs`, 10 s): a request head must arrive
//!   complete within it. hyper starts that clock whenever the connection waits for a head, so
//!   it is also the **idle keep-alive timeout**: a connection that sends nothing (at first, or
//!   after a response) is closed when it runs out; one header line every few seconds does not
//!   keep it open.
//! - **Connections per source address** (`max_connections_per_source`, 64; 0 = no cap): one
//!   more is answered `503` in the error envelope with `Retry-After` and closed before hyper
//!   sees it, so one address cannot hold the server's sockets.
//! - Graceful shutdown: stop accepting, ask every connection to finish its request in flight,
//!   wait for them.
//!
//! Slow bodies are bounded by the request timeout (`request_timeout_secs`) in the router.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// The connection limits, from the configuration.
#[derive(Copy, Clone, Debug)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    /// 0: no cap.
    pub per_source: usize,
}

/// Open connections per source address; a slot is given back when its guard drops.
#[derive(Clone, Default)]
struct PerSource(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot {
    table: PerSource,
    ip: IpAddr,
}

impl PerSource {
    fn acquire(&self, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = table.entry(ip).or_insert(0);
        if cap > 0 && *open >= cap {
            return None;
        }
        *open += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = table.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections to
/// finish their requests.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let per_source = PerSource::default();
    // Every connection task holds a receiver; `closed()` on the sender resolves when all are
    // gone. Dropping `stop_tx` tells them to shut down gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, _) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = per_source.acquire(peer.ip(), limits.per_source) else {
            tracing::debug!(source = %peer.ip(), "connection refused: too many from this address");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let done = done_tx.subscribe();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(request)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(source = %peer.ip(), error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        let _ = changed;
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(slot);
            drop(done);
        });
    }
    drop(listener);
    drop(stop_rx);
    drop(stop_tx);
    done_tx.closed().await;
}

/// Answers a connection over the per-address cap with a 503 in the error envelope and closes
/// it. Bounded in time: a peer that does not read gets dropped.
async fn refuse(mut stream: TcpStream) {
    let body = serde_json::json!({
        "error": {
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "too_many_connections",
            "message": "too many open connections from this address; close some and retry",
            "details": {},
        }
    })
    .to_string();
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in crate::router::SECURITY_HEADERS {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("cache-control: no-store\r\n\r\n");
    response.push_str(&body);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
