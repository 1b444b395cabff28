//! Connection limits `axum::serve` does not offer (issue 18 item 2), as an
//! [`axum::serve::Listener`] around the TCP listener, so axum keeps serving HTTP/1.1 (and
//! upgrades to WebSocket) as before:
//!
//! - **Header-read timeout** (`http_header_timeout_secs`, 10 s): from the moment a connection
//!   opens, and again from the moment the server starts answering a request, the next request
//!   head (up to its blank line) must arrive complete within it. So it is also the **idle
//!   keep-alive timeout**: a connection that sends nothing, or one header line every few
//!   seconds, is closed when it runs out; one that had begun a head is first answered `408`
//!   in the error envelope (and audited like the refusals below). While a request is being read (body) and answered,
//!   no clock runs (the request timeout bounds that); a connection upgraded to WebSocket
//!   (`101`) is never timed.
//! - **Connections per source address** (`max_connections_per_source`, 64; 0 = no cap): one
//!   more is answered `503` in the error envelope with `Retry-After` and closed before the
//!   HTTP server sees it, so one address cannot hold the server's sockets.
//!
//! - **Malformed or oversized heads** are answered here, in the error envelope with the
//!   security headers (and audited like other anonymous refusals), before the HTTP server
//!   would answer them with an empty body: a request line over 8 KiB → `414`, a head over
//!   64 KiB or with more than 100 header lines → `431`, a request line or header line that is
//!   not HTTP/1.x syntax → `400`. A head the HTTP server refuses itself (its semantics: two
//!   different `Content-Length`s, a transfer coding not ending in `chunked`, a target that is
//!   no URI; or syntax in the first 24 bytes, which it reads before these checks see a whole
//!   line) would get its bare empty answer: that answer is replaced on the way out by the
//!   envelope, and audited the same way.
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

use crate::audit::AuditSink;

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
    audit: Option<AuditSink>,
    /// TLS (`tls_cert_file`): handshakes run in tasks of their own (a slow client never holds
    /// up `accept`), within the header timeout; finished ones arrive on `handshaken`.
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshaken_tx: tokio::sync::mpsc::Sender<(TimedStream, SocketAddr)>,
    handshaken: tokio::sync::mpsc::Receiver<(TimedStream, SocketAddr)>,
}

impl LimitedListener {
    /// `audit` records the heads refused here.
    pub fn new(inner: TcpListener, limits: ConnectionLimits, audit: Option<AuditSink>) -> Self {
        let (handshaken_tx, handshaken) = tokio::sync::mpsc::channel(64);
        LimitedListener {
            inner,
            limits,
            per_source: PerSource::default(),
            audit,
            tls: None,
            handshaken_tx,
            handshaken,
        }
    }

    /// Serves TLS only (every connection starts with a handshake).
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }
}

/// The transport under a connection: TCP, or TLS over TCP.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// Writes what the socket takes now, without waiting (plain TCP only: a TLS record needs
    /// the session, so a refusal there just closes the connection).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.try_write(buf),
            Conn::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Longest request line (method, target, version).
const REQUEST_LINE_LIMIT: usize = 8 * 1024;
/// Longest request head.
const HEAD_LIMIT: usize = 64 * 1024;
/// Most header lines in a head.
const MAX_HEADER_LINES: usize = 100;

/// A head refused before the HTTP server sees it.
#[derive(Copy, Clone, Debug, PartialEq)]
struct Refusal {
    status: u16,
    reason: &'static str,
    kind: &'static str,
    message: &'static str,
}

impl Refusal {
    /// The refusal as a complete response in the error envelope.
    fn response(&self) -> String {
        envelope_response(self.status, self.reason, self.kind, self.message, &[])
    }
}

const URI_TOO_LONG: Refusal = Refusal {
    status: 414,
    reason: "URI Too Long",
    kind: "uri_too_long",
    message: "the request line is longer than 8 KiB",
};
const HEADERS_TOO_LARGE: Refusal = Refusal {
    status: 431,
    reason: "Request Header Fields Too Large",
    kind: "headers_too_large",
    message: "the request head is larger than 64 KiB or has more than 100 header lines",
};
const REQUEST_TIMEOUT: Refusal = Refusal {
    status: 408,
    reason: "Request Timeout",
    kind: "request_timeout",
    message: "the request head did not arrive complete within the header timeout",
};
const MALFORMED: Refusal = Refusal {
    status: 400,
    reason: "Bad Request",
    kind: "malformed_request",
    message: "the request is not well-formed HTTP/1.1",
};

/// `tchar` of RFC 9110 (methods and header names).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP target SP HTTP/1.x`.
fn request_line_ok(line: &[u8]) -> bool {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|b| is_token(*b))
        && !target.is_empty()
        && target.iter().all(|b| b.is_ascii_graphic())
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// `name: value`, the name a token, no folding.
fn header_line_ok(line: &[u8]) -> bool {
    match line.iter().position(|b| *b == b':') {
        Some(colon) if colon > 0 => {
            line[..colon].iter().all(|b| is_token(*b))
                && line[colon + 1..]
                    .iter()
                    .all(|b| *b == b'\t' || (*b >= b' ' && *b != 0x7f))
        }
        _ => false,
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = TimedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedStream, SocketAddr) {
        loop {
            let accepted = tokio::select! {
                Some(ready) = self.handshaken.recv() => return ready,
                accepted = self.inner.accept() => accepted,
            };
            let (stream, peer) = match accepted {
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
                if self.tls.is_none() {
                    tokio::spawn(refuse(stream));
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let audit = self.audit.clone().map(|a| (a, peer.ip().to_string()));
            let timeout = self.limits.header_timeout;
            let Some(acceptor) = self.tls.clone() else {
                let mut timed = TimedStream::new(Conn::Plain(stream), slot, timeout);
                timed.audit = audit;
                return (timed, peer);
            };
            let ready = self.handshaken_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let mut timed = TimedStream::new(Conn::Tls(Box::new(tls)), slot, timeout);
                        timed.audit = audit;
                        let _ = ready.send((timed, peer)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(source = %peer.ip(), error = %e, "TLS handshake failed");
                        metrics::counter!("espwatch_tls_handshake_failures_total", "reason" => "error")
                            .increment(1);
                    }
                    Err(_) => {
                        tracing::debug!(source = %peer.ip(), "TLS handshake timed out");
                        metrics::counter!("espwatch_tls_handshake_failures_total", "reason" => "timeout")
                            .increment(1);
                    }
                }
            });
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
    inner: Conn,
    _slot: Slot,
    timeout: Duration,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    /// The current head line (up to the limits), its number, and the head's size so far.
    line: Vec<u8>,
    lines: usize,
    head_bytes: usize,
    /// Where refused heads are audited, with the peer's address.
    audit: Option<(AuditSink, String)>,
    /// The head's `Content-Length` and whether it has a `Transfer-Encoding`.
    content_length: u64,
    chunked: bool,
    /// Body bytes of the request being answered not read yet (`None`: unknown, chunked).
    body_left: Option<u64>,
    /// Body bytes to skip before the next head.
    draining: u64,
    /// Heads are checked (false once a chunked body made the framing unknown).
    checking: bool,
    /// The envelope being written in place of the HTTP server's own bare answer to a head it
    /// refused (see [`bare_refusal`]), and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl TimedStream {
    fn new(inner: Conn, slot: Slot, timeout: Duration) -> Self {
        TimedStream {
            inner,
            _slot: slot,
            timeout,
            phase: Phase::AwaitingHead { newlines: 0 },
            deadline: Box::pin(tokio::time::sleep(timeout)),
            line: Vec::new(),
            lines: 0,
            head_bytes: 0,
            audit: None,
            content_length: 0,
            chunked: false,
            body_left: Some(0),
            draining: 0,
            checking: true,
            replacing: None,
        }
    }

    fn restart_clock(&mut self) {
        let at = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(at);
    }

    /// Follows the connection through the bytes read: a head's lines are checked as they
    /// complete and its blank line ends it; then its body (by `Content-Length`) is counted,
    /// so body bytes left unread when the answer went out (a 413) are not taken for the next
    /// head. With a chunked body the framing is not followed: the rest of the connection is
    /// only timed, not checked. `Err` when the head must be refused.
    fn saw(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let mut i = 0;
        while i < bytes.len() {
            match self.phase {
                Phase::Upgraded => return Ok(()),
                Phase::InRequest => {
                    let rest = (bytes.len() - i) as u64;
                    if let Some(left) = &mut self.body_left {
                        *left = left.saturating_sub(rest);
                    }
                    return Ok(());
                }
                Phase::AwaitingHead { .. } if self.draining > 0 => {
                    let take = self.draining.min((bytes.len() - i) as u64);
                    self.draining -= take;
                    i += take as usize;
                }
                Phase::AwaitingHead { newlines } => {
                    let b = bytes[i];
                    i += 1;
                    self.head_byte(newlines, b)?;
                }
            }
        }
        Ok(())
    }

    /// One byte of a head.
    fn head_byte(&mut self, newlines: u8, b: u8) -> Result<(), Refusal> {
        let newlines = match b {
            b'\n' => newlines + 1,
            b'\r' => newlines,
            _ => 0,
        };
        if newlines == 2 {
            self.phase = Phase::InRequest;
            self.body_left = if self.chunked {
                None
            } else {
                Some(self.content_length)
            };
            self.line.clear();
            self.lines = 0;
            self.head_bytes = 0;
            self.content_length = 0;
            self.chunked = false;
            return Ok(());
        }
        self.phase = Phase::AwaitingHead { newlines };
        if !self.checking {
            return Ok(());
        }
        self.head_bytes += 1;
        if b == b'\n' {
            let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
            // Blank lines before the request line are tolerated (RFC 9112 §2.2).
            if !(self.lines == 0 && line.is_empty()) {
                if self.lines == 0 {
                    if !request_line_ok(line) {
                        return Err(MALFORMED);
                    }
                } else {
                    if !header_line_ok(line) {
                        return Err(MALFORMED);
                    }
                    let (name, value) =
                        line.split_at(line.iter().position(|c| *c == b':').unwrap_or(0));
                    let value = String::from_utf8_lossy(&value[1..]);
                    if name.eq_ignore_ascii_case(b"content-length") {
                        self.content_length = value.trim().parse().map_err(|_| MALFORMED)?;
                    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                        self.chunked = true;
                    }
                }
                self.lines += 1;
                if self.lines > MAX_HEADER_LINES + 1 {
                    return Err(HEADERS_TOO_LARGE);
                }
            }
            self.line.clear();
        } else {
            self.line.push(b);
            if self.lines == 0 && self.line.len() > REQUEST_LINE_LIMIT {
                return Err(URI_TOO_LONG);
            }
        }
        if self.head_bytes > HEAD_LIMIT {
            return Err(HEADERS_TOO_LARGE);
        }
        Ok(())
    }

    /// Whether part of a request head has arrived (blank lines before it do not count).
    fn head_begun(&self) -> bool {
        self.checking && self.draining == 0 && (self.lines > 0 || !self.line.is_empty())
    }

    /// Answers a refused head in the envelope (best effort: nothing else is being written on
    /// a connection waiting for a head, so the socket buffer takes it) and audits it.
    fn refuse_head(&mut self, refusal: Refusal) -> io::Error {
        let response = refusal.response();
        let _ = self.inner.try_write(response.as_bytes());
        self.note_refusal(refusal);
        io::Error::new(io::ErrorKind::InvalidData, refusal.message)
    }

    /// Audits a refused head like other anonymous refusals, and logs it.
    fn note_refusal(&self, refusal: Refusal) {
        if let Some((audit, source)) = &self.audit
            && audit.note_rejection(source, refusal.status, Some(refusal.kind))
        {
            audit.record(espwatch_store::AuditEvent {
                ts: crate::audit::now(),
                kind: "request".into(),
                request_id: None,
                method: None,
                route: Some("unparsed".into()),
                status: Some(refusal.status),
                actor: None,
                role: None,
                source: Some(source.clone()),
                duration_ms: None,
                detail: serde_json::json!({ "refused": refusal.kind }),
            });
        }
        tracing::info!(target: "espwatch::request", status = refusal.status, error_kind = refusal.kind, "request head refused");
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
                    match self.body_left.take() {
                        // Body bytes the server did not read come before the next head.
                        Some(left) => self.draining = left,
                        // Framing not followed (chunked): only time the connection now.
                        None => self.checking = false,
                    }
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
            Poll::Ready(Ok(())) => match this.saw(&buf.filled()[before..]) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(refusal) => Poll::Ready(Err(this.refuse_head(refusal))),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(this.phase, Phase::AwaitingHead { .. })
                    && this.deadline.as_mut().poll(cx).is_ready()
                {
                    // A head begun and not finished (slowloris) is answered 408, as HTTP
                    // allows; an idle connection is just closed (a 408 there could be taken
                    // by the client for the answer to the request it sends next).
                    if this.head_begun() {
                        return Poll::Ready(Err(this.refuse_head(REQUEST_TIMEOUT)));
                    }
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
        if this.replacing.is_none()
            && let Some(refusal) = bare_refusal(buf)
        {
            // The HTTP server refused a head these checks let through (its semantics: two
            // different `Content-Length`s, a `Transfer-Encoding` not ending in `chunked`, a
            // target that is no URI; or syntax it saw first, in the bytes it peeks at to tell
            // HTTP/2 from HTTP/1) with an empty answer: the envelope goes out instead.
            this.note_refusal(refusal);
            let response = refusal.response();
            this.replacing = Some((response.into_bytes(), 0));
        }
        if let Some((response, written)) = &mut this.replacing {
            while *written < response.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &response[*written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => *written += n,
                    other => return other,
                }
            }
            // What the server meant to write counts as written: it closes the connection next.
            return Poll::Ready(Ok(buf.len()));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            this.wrote(&buf[..*n]);
            if matches!(this.phase, Phase::AwaitingHead { .. }) {
                // The HTTP server may already be parked on a read it started while the
                // request was answered (no clock then): arm the clock with this task's waker
                // too, so the connection is woken, and its read fails, when it runs out.
                let _ = this.deadline.as_mut().poll(cx);
            }
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

/// The refusal an answer stands for when it is the HTTP server's own bare answer to a head it
/// could not use (`400`, `414` or `431`, written before any route ran, so without the security
/// headers every routed answer carries); `None` for every other write.
fn bare_refusal(buf: &[u8]) -> Option<Refusal> {
    let refusal = [MALFORMED, URI_TOO_LONG, HEADERS_TOO_LARGE]
        .into_iter()
        .find(|r| {
            let status = format!(" {} ", r.status);
            (buf.starts_with(b"HTTP/1.1") || buf.starts_with(b"HTTP/1.0"))
                && buf[8..].starts_with(status.as_bytes())
        })?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = buf[..end].to_ascii_lowercase();
    let routed = head
        .windows(b"\r\nx-content-type-options:".len())
        .any(|w| w == b"\r\nx-content-type-options:");
    (!routed).then_some(refusal)
}

/// A complete `HTTP/1.1` error response in the envelope, with the security headers, closing
/// the connection.
fn envelope_response(
    status: u16,
    reason: &str,
    kind: &str,
    message: &str,
    extra_headers: &[(&str, &str)],
) -> String {
    let body = serde_json::json!({
        "error": {
            "id": uuid::Uuid::new_v4().to_string(),
            "type": kind,
            "message": message,
            "details": {},
        }
    })
    .to_string();
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers
        .iter()
        .chain(crate::headers::SECURITY_HEADERS.iter())
    {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "content-security-policy: {}\r\ncache-control: no-store\r\n\r\n",
        crate::headers::API_CSP
    ));
    response.push_str(&body);
    response
}

/// Answers a connection over the per-address cap with a 503 in the error envelope and closes
/// it. Bounded in time: a peer that does not read gets dropped.
async fn refuse(mut stream: TcpStream) {
    let response = envelope_response(
        503,
        "Service Unavailable",
        "too_many_connections",
        "too many open connections from this address; close some and retry",
        &[("retry-after", "1")],
    );
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
        let mut s = TimedStream::new(Conn::Plain(client), slot, Duration::from_secs(1));
        s.saw(b"GET / HTTP/1.1\r\nhost: x\r").unwrap();
        assert_eq!(s.phase, Phase::AwaitingHead { newlines: 0 });
        s.saw(b"\n\r\n").unwrap();
        assert_eq!(s.phase, Phase::InRequest);
        s.wrote(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(s.phase, Phase::InRequest);
        s.wrote(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(s.phase, Phase::AwaitingHead { newlines: 0 });
        s.saw(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        s.wrote(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(s.phase, Phase::Upgraded);
        // Refusals: a bad request line, a header without a name, folding, sizes.
        let fresh = || {
            let mut t = TimedStream::new(
                Conn::Plain(
                    std::net::TcpStream::connect(listener.local_addr().unwrap())
                        .and_then(|s| {
                            s.set_nonblocking(true)?;
                            TcpStream::from_std(s)
                        })
                        .unwrap(),
                ),
                PerSource::default()
                    .acquire(IpAddr::from([127, 0, 0, 1]), 0)
                    .unwrap(),
                Duration::from_secs(1),
            );
            move |bytes: &[u8]| t.saw(bytes)
        };
        // A body left unread by an early answer is skipped, not taken for the next head.
        let mut d = TimedStream::new(
            Conn::Plain(
                TcpStream::connect(listener.local_addr().unwrap())
                    .await
                    .unwrap(),
            ),
            PerSource::default()
                .acquire(IpAddr::from([127, 0, 0, 1]), 0)
                .unwrap(),
            Duration::from_secs(1),
        );
        d.saw(b"POST /x HTTP/1.1\r\ncontent-length: 10\r\n\r\n{\"a\"")
            .unwrap();
        d.wrote(b"HTTP/1.1 413 Payload Too Large\r\n");
        d.saw(b":1234}GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        assert_eq!(d.phase, Phase::InRequest);
        // Header lines so far, head not complete; a bare \r between line ends is no end.
        assert_eq!(fresh()(b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n"), Ok(()));
        assert_eq!(
            fresh()(b"GET / HTTP/1.1\r\nhost: x\r\n\rx-a: 1\r\n"),
            Err(MALFORMED)
        );
        assert_eq!(fresh()(b"GET /\r\n"), Err(MALFORMED));
        assert_eq!(fresh()(b"GET / HTTP/2.0\r\n"), Err(MALFORMED));
        assert_eq!(fresh()(b"GET / HTTP/1.1\r\n: x\r\n"), Err(MALFORMED));
        assert_eq!(
            fresh()(b"GET / HTTP/1.1\r\na: 1\r\n folded\r\n"),
            Err(MALFORMED)
        );
        assert_eq!(fresh()(b"\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n"), Ok(()));
        let long_uri = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(fresh()(long_uri.as_bytes()), Err(URI_TOO_LONG));
        let many = format!("GET / HTTP/1.1\r\n{}", "x-a: 1\r\n".repeat(101));
        assert_eq!(fresh()(many.as_bytes()), Err(HEADERS_TOO_LARGE));
        let big = format!("GET / HTTP/1.1\r\nx-a: {}\r\n", "b".repeat(70_000));
        assert_eq!(fresh()(big.as_bytes()), Err(HEADERS_TOO_LARGE));
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
