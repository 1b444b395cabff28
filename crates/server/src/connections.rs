//! Connection limits `axum::serve` does not offer (issue 18 item 2), as an
//! [`axum::serve::Listener`] around the TCP listener, so axum keeps serving HTTP/1.1 (and
//! upgrades to WebSocket) as before:
//!
//! - **Header-read timeout** (`http_header_timeout_secs`, 10 s): from the moment a connection
//!   opens, and again from the moment the server starts answering a request, the next request
//!   head (up to its blank line) must arrive complete within it. So it is also the **idle
//!   keep-alive timeout**: a connection that sends nothing, or one header line every few
//!   seconds, is closed when it runs out. While a request is being read (body) and answered,
//!   no clock runs (the request timeout bounds that); a connection upgraded to WebSocket
//!   (`101`) is never timed.
//! - **Connections per source address** (`max_connections_per_source`, 64; 0 = no cap): one
//!   more is answered `503` in the error envelope with `Retry-After` and closed before the
//!   HTTP server sees it, so one address cannot hold the server's sockets.
//!
//! Known limit: with HTTP pipelining (a client sending its next request before the previous
//! answer, which browsers and common clients do not do) the next head is not seen and the
//! connection is closed after the timeout; the client reconnects.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

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

/// The TCP listener with the limits; give it to `axum::serve` (through
/// `ListenerExt::tap_io` for `ConnectInfo<SocketAddr>`).
pub struct LimitedListener {
    inner: TcpListener,
    limits: ConnectionLimits,
    per_source: PerSource,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limits: ConnectionLimits) -> Self {
        LimitedListener {
            inner,
            limits,
            per_source: PerSource::default(),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = TimedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.per_source.acquire(peer.ip(), self.limits.per_source) else {
                tracing::debug!(source = %peer.ip(), "connection refused: too many from this address");
                tokio::spawn(refuse(stream));
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (
                TimedStream::new(stream, slot, self.limits.header_timeout),
                peer,
            );
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Where a connection is in its request cycle, as seen from its bytes.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Phase {
    /// Waiting for a request head; `newlines` line ends seen in a row (a `\r` before a `\n`
    /// does not count, so both `\r\n\r\n` and a bare `\n\n` end the head).
    AwaitingHead { newlines: u8 },
    /// A head arrived; the request is being read and answered. No clock runs.
    InRequest,
    /// Switched protocols (WebSocket): no HTTP rules any more.
    Upgraded,
}

/// A TCP stream that fails its reads once a request head is overdue (which makes the HTTP
/// server close it), and gives its per-source slot back when dropped.
pub struct TimedStream {
    inner: TcpStream,
    _slot: Slot,
    timeout: Duration,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
}

impl TimedStream {
    fn new(inner: TcpStream, slot: Slot, timeout: Duration) -> Self {
        TimedStream {
            inner,
            _slot: slot,
            timeout,
            phase: Phase::AwaitingHead { newlines: 0 },
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn restart_clock(&mut self) {
        let at = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(at);
    }

    /// Follows the head's terminating blank line through the bytes read.
    fn saw(&mut self, bytes: &[u8]) {
        let Phase::AwaitingHead { mut newlines } = self.phase else {
            return;
        };
        for &b in bytes {
            newlines = match b {
                b'\n' => newlines + 1,
                b'\r' => newlines,
                _ => 0,
            };
            if newlines == 2 {
                self.phase = Phase::InRequest;
                return;
            }
        }
        self.phase = Phase::AwaitingHead { newlines };
    }

    /// Follows the answer through the bytes written: its first write starts the clock for
    /// the next head (an interim `100 Continue` does not, `101` ends HTTP).
    fn wrote(&mut self, bytes: &[u8]) {
        match self.phase {
            Phase::InRequest => {
                if bytes.starts_with(b"HTTP/1.1 101") || bytes.starts_with(b"HTTP/1.0 101") {
                    self.phase = Phase::Upgraded;
                } else if bytes.starts_with(b"HTTP/1.1 100") {
                    // The client sends the body next.
                } else {
                    self.phase = Phase::AwaitingHead { newlines: 0 };
                    self.restart_clock();
                }
            }
            // A long answer still being written keeps the connection's clock fresh.
            Phase::AwaitingHead { newlines: 0 } => self.restart_clock(),
            _ => {}
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled()[before..].to_vec();
                this.saw(&filled);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(this.phase, Phase::AwaitingHead { .. })
                    && this.deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request head within the header timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            this.wrote(&buf[..*n]);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_follow_heads_answers_and_upgrades() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let slot = PerSource::default()
            .acquire(client.local_addr().unwrap().ip(), 0)
            .unwrap();
        let mut s = TimedStream::new(client, slot, Duration::from_secs(1));
        s.saw(b"GET / HTTP/1.1\r\nhost: x\r");
        assert_eq!(s.phase, Phase::AwaitingHead { newlines: 0 });
        s.saw(b"\n\r\n");
        assert_eq!(s.phase, Phase::InRequest);
        s.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(s.phase, Phase::InRequest);
        s.wrote(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(s.phase, Phase::AwaitingHead { newlines: 0 });
        s.saw(b"GET / HTTP/1.1\r\n\r\n");
        s.wrote(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(s.phase, Phase::Upgraded);
        // Line ends split by anything else, or bare \r, do not end a head.
        let mut t = TimedStream::new(
            TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap(),
            PerSource::default()
                .acquire(IpAddr::from([127, 0, 0, 1]), 0)
                .unwrap(),
            Duration::from_secs(1),
        );
        t.saw(b"GET / HTTP/1.1\r\nhost: x\r\r\r\nx-a: 1\r\n");
        assert!(matches!(t.phase, Phase::AwaitingHead { .. }));
    }

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let table = PerSource::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let a = table.acquire(ip, 2).unwrap();
        let _b = table.acquire(ip, 2).unwrap();
        assert!(table.acquire(ip, 2).is_none());
        assert!(table.acquire(IpAddr::from([10, 0, 0, 2]), 2).is_some());
        drop(a);
        assert!(table.acquire(ip, 2).is_some());
    }
}
