//! MQTT ingest: one client per server (MQTT 3.1.1, QoS 1, persistent session, manual
//! acknowledgements).
//!
//! Two tasks: the *driver* polls the connection (reconnecting with backoff; the persistent
//! session keeps the subscription and the unacknowledged messages across reconnects) and
//! forwards each PUBLISH; the *consumer* takes what has arrived as one batch, decodes every
//! message with the HTTP decoders, commits all valid readings in one append, then answers
//! each message's rejections on the error topic and hands the PUBACKs, in arrival order, to
//! the driver, which writes them straight to the connection between two reads.
//! A message is thus acknowledged only after its readings are committed; a crash before
//! that makes the broker deliver it again, and re-delivered readings are duplicates.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use espwatch_app::config::{BrokerUrl, Config, mqtt_topic_well_level};
use espwatch_app::ingest::{FieldProblem, IngestReport, RejectedReading};
use espwatch_app::metrics::IngestPath;
use espwatch_core::ingest::{self, DecodeError, DecodeOptions, Item, PayloadFormat};
use espwatch_core::localtime::UtcOffset;
use espwatch_core::{Reading, Timestamp, WellId};
use espwatch_server::AppState;
use espwatch_server::state::{BrokerBacklog, BrokerQueue};
use espwatch_store::ReadingOutcome;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck, PubRec,
    Publish, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backoff::{Backoff, LongestWait};
use crate::sink::Sink;
use crate::sparkplug;

/// Messages committed together at most (the broker's in-flight window is usually smaller:
/// Mosquitto sends 20 unacknowledged QoS 1 messages at most).
const MAX_BATCH_MESSAGES: usize = 512;
/// Batches with more payload bytes than this are decoded on the blocking pool.
pub(crate) const INLINE_DECODE_BYTES: usize = 256 * 1024;
/// Largest MQTT packet (the protocol's own limit). Anything smaller would make the client
/// drop the connection on a big message, which the broker would then deliver again forever;
/// payloads over `body_limit_bytes` are refused (and acknowledged) instead.
const MAX_PACKET_BYTES: usize = 268_435_455;
/// Messages received and not yet acknowledged that are held in memory at most (the in-memory
/// backlog between the broker and the commit; two full batches). MQTT 3.1.1 has no way to
/// tell the broker a receive window, and brokers do not keep theirs: Mosquitto 2.0.11, once
/// a client acknowledges anything, puts its whole queue in flight whatever its
/// `max_inflight_messages` (or an MQTT 5 Receive Maximum) says. At the bound the driver stops
/// reading from the broker until the consumer has made room (see [`Backlog`]).
pub const MAX_PENDING_MESSAGES: u64 = 1024;
/// Longest time the driver stops reading from the broker for room in the backlog: half the
/// keep-alive (`mqtt_keep_alive_secs`, 20 s by default: 10 s), so the broker never takes the
/// pause for a dead client (it disconnects after 1.5 keep-alive periods without a packet).
/// Past it, messages are deferred (see [`Backlog`]).
fn max_read_pause(keep_alive: Duration) -> Duration {
    keep_alive / 2
}
/// Requests queued for rumqttc's event loop at most: error reports, Sparkplug rebirth
/// requests, SUBSCRIBE and DISCONNECT (an error report or a rebirth request that finds it full
/// is dropped with a warning). Acknowledgements do not go through it: rumqttc sends one queued
/// request per poll that does not return an already read packet, and a network read yields up
/// to 10 packets, so while a broker floods, PUBACKs queued there went out about ten times
/// slower than messages came in; once the queue was full the consumer waited for room, the
/// driver (at the backlog bound) waited for the consumer, and nothing was acknowledged until
/// the pause ran out (then messages were deferred and re-sent). The consumer hands them to the
/// driver instead ([`Acks`]), which writes them to the connection itself.
const REQUEST_QUEUE: usize = 64 * 1024;

/// The acknowledgements of one committed batch, in arrival order: the connection each message
/// came on (see `MqttStats::generation`) and its PUBACK (a PUBREC for a QoS 2 delivery).
type Acks = Vec<(u64, Packet)>;

/// Counters and connection state, for `/health/ready` (`checks.mqtt`).
#[derive(Default)]
pub struct MqttStats {
    connected: AtomicBool,
    /// The broker confirmed the subscription on the current connection.
    subscribed: AtomicBool,
    connections: AtomicU64,
    connection_failures: AtomicU64,
    /// `broker_reconnect_max_ms`, and the longest wait the driver slept between attempts.
    reconnect_max_ms: AtomicU64,
    reconnect_longest_wait: LongestWait,
    /// Advanced on every loss of a connection. A message is acknowledged only on
    /// the connection it came on: a packet id of a lost connection may name another message
    /// on the next one, which a late PUBACK would then drop at the broker before it is stored
    /// (a persistent session re-sends the old message instead: stored once, a duplicate).
    generation: AtomicU64,
    /// Acknowledgements not sent because their connection was gone.
    stale_acks_skipped: AtomicU64,
    /// PUBLISHes received from the broker (re-deliveries included).
    received: AtomicU64,
    /// PUBLISHes with the DUP flag: sent before (deferred, or in flight at a disconnection).
    redelivered: AtomicU64,
    /// Messages committed and acknowledged.
    messages: AtomicU64,
    readings_accepted: AtomicU64,
    readings_duplicate: AtomicU64,
    readings_rejected: AtomicU64,
    /// Messages refused as a whole: unparseable payload, invalid well in the topic, too large.
    messages_malformed: AtomicU64,
    /// Messages with at least one rejected reading (malformed ones included).
    messages_with_errors: AtomicU64,
    errors_published: AtomicU64,
    sparkplug_seq_gaps: AtomicU64,
    sparkplug_rebirth_requests: AtomicU64,
    sparkplug_unmapped_metrics: AtomicU64,
    backlog: Backlog,
    last_error: Mutex<Option<String>>,
}

/// The in-memory backlog: messages handed to the consumer and not yet acknowledged, bounded
/// by [`MAX_PENDING_MESSAGES`] and by a byte budget (`ingest_max_inflight_bytes`).
///
/// A message that arrives at the bound is held by the driver, which stops polling the
/// connection until the consumer releases what it has acknowledged (TCP back-pressure: the
/// broker keeps the rest, unacknowledged, and nothing is sent twice). The pause lasts
/// [`max_read_pause`] at most, because the client sends its pings only while polled. Past it (the store cannot commit for that long) the message is *deferred*:
/// dropped from memory, left unacknowledged (the broker keeps it in the persistent session),
/// and every later one too (order kept). Once the consumer has committed and acknowledged
/// everything it was given, it disconnects (after its PUBACKs, which go out first) and the
/// driver connects again: the broker then re-sends every unacknowledged message, as MQTT
/// requires for a persistent session. Deferral used to be the only answer to a full backlog:
/// with a broker that puts its whole queue in flight (Mosquitto 2.0.11 after any PUBACK),
/// every reconnection re-sent the whole queue to take 1 024 of it, about 25 re-sends a
/// message under sustained overload (README "Reliability").
#[derive(Default)]
pub struct Backlog {
    /// What `admit` and `release` decide on, changed together: a std mutex held for a few
    /// instructions, never across an await. Separate atomics let a deferral land between the
    /// consumer's last release and its check for deferred messages, so nobody reconnected
    /// and the deferred messages stayed with the broker until some other reconnection (a
    /// stall seen under sustained overload: `espwatch-bench broker-load`).
    state: Mutex<BacklogState>,
    peak_messages: AtomicU64,
    peak_bytes: AtomicU64,
    max_bytes: AtomicU64,
    /// Messages deferred in total.
    deferred: AtomicU64,
    /// Reconnections made to have deferred messages re-sent.
    redelivery_reconnects: AtomicU64,
    /// Times the driver stopped reading for room in the backlog, and for how long in all.
    read_pauses: AtomicU64,
    read_paused_ms: AtomicU64,
    /// Signalled by every release: the driver waits on it while the backlog is full.
    room: tokio::sync::Notify,
}

/// What [`Backlog::admit`] decided for a received message.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    /// Taken into the backlog: hand it to the consumer.
    Admitted,
    /// The backlog is full: wait for room ([`Backlog::admit_or_wait`]).
    Full,
    /// Messages are being deferred on this connection: leave it unacknowledged.
    Deferred,
}

#[derive(Default, Clone, Copy)]
struct BacklogState {
    /// Messages held (admitted, not yet acknowledged) and their payload bytes.
    messages: u64,
    bytes: u64,
    /// Some message was deferred on the current connection: defer all, reconnect when empty.
    /// Only ever set while `messages > 0`, so the release that empties the backlog sees it.
    deferring: bool,
}

impl Backlog {
    fn state(&self) -> std::sync::MutexGuard<'_, BacklogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a received message into the backlog if there is room.
    fn admit(&self, bytes: u64) -> Admission {
        let mut s = self.state();
        if s.deferring {
            self.deferred.fetch_add(1, Ordering::Relaxed);
            return Admission::Deferred;
        }
        let full = s.messages > 0
            && (s.messages >= MAX_PENDING_MESSAGES
                || s.bytes + bytes > self.max_bytes.load(Ordering::Relaxed));
        if full {
            return Admission::Full;
        }
        s.messages += 1;
        s.bytes += bytes;
        self.peak_messages.fetch_max(s.messages, Ordering::Relaxed);
        self.peak_bytes.fetch_max(s.bytes, Ordering::Relaxed);
        Admission::Admitted
    }

    /// Defers a message that found the backlog full (and every later one on this
    /// connection): only while the backlog holds messages, so the release that empties it
    /// reconnects; `false` when it has emptied meanwhile (admit again instead).
    fn defer(&self) -> bool {
        let mut s = self.state();
        if s.messages == 0 {
            return false;
        }
        s.deferring = true;
        self.deferred.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// [`admit`](Self::admit), waiting for room while the backlog is full: the caller (the
    /// driver) reads nothing from the broker meanwhile. Gives up after `max_pause`, or when
    /// `stopping`, and defers the message; `true`: admitted.
    async fn admit_or_wait(
        &self,
        bytes: u64,
        max_pause: Duration,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut paused: Option<Instant> = None;
        let mut closed = false;
        let admitted = loop {
            match self.admit(bytes) {
                Admission::Admitted => break true,
                Admission::Deferred => break false,
                Admission::Full => {}
            }
            let started = *paused.get_or_insert_with(|| {
                self.read_pauses.fetch_add(1, Ordering::Relaxed);
                Instant::now()
            });
            let give_up = closed || *stopping.borrow() || started.elapsed() >= max_pause;
            if give_up {
                if self.defer() {
                    break false;
                }
                continue;
            }
            // A release between `admit` and here leaves a permit: no wake-up is lost.
            tokio::select! {
                _ = self.room.notified() => {}
                _ = tokio::time::sleep_until((started + max_pause).into()) => {}
                changed = stopping.changed() => closed = changed.is_err(),
            }
        };
        if let Some(started) = paused {
            self.read_paused_ms
                .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        admitted
    }

    /// The consumer is done with (has acknowledged) these; `true` when the backlog is now
    /// empty and messages were deferred: time to reconnect for them.
    fn release(&self, messages: u64, bytes: u64) -> bool {
        let reconnect = {
            let mut s = self.state();
            s.messages = s.messages.saturating_sub(messages);
            s.bytes = s.bytes.saturating_sub(bytes);
            s.messages == 0 && std::mem::take(&mut s.deferring)
        };
        self.room.notify_one();
        reconnect
    }

    /// A new connection: whatever was deferred is re-sent by the broker on it.
    fn connected(&self) {
        self.state().deferring = false;
    }

    fn status(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = *self.state();
        json!({
            "messages": s.messages,
            "bytes": s.bytes,
            "peak_messages": n(&self.peak_messages),
            "peak_bytes": n(&self.peak_bytes),
            "max_messages": MAX_PENDING_MESSAGES,
            "max_bytes": n(&self.max_bytes),
            "deferred": n(&self.deferred),
            "redelivery_reconnects": n(&self.redelivery_reconnects),
            "read_pauses": n(&self.read_pauses),
            "read_paused_ms": n(&self.read_paused_ms),
        })
    }
}

impl MqttStats {
    pub fn status(&self) -> Value {
        let connected = self.connected.load(Ordering::Relaxed);
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            // A broker outage degrades, never unreadies: HTTP ingest and queries go on.
            "status": if connected { "healthy" } else { "degraded" },
            "connected": connected,
            "subscribed": self.subscribed.load(Ordering::Relaxed),
            "connections": n(&self.connections),
            "connection_failures": n(&self.connection_failures),
            "reconnect_max_ms": n(&self.reconnect_max_ms),
            "reconnect_longest_wait_ms": self.reconnect_longest_wait.ms(),
            "stale_acks_skipped": n(&self.stale_acks_skipped),
            "received": n(&self.received),
            "redelivered": n(&self.redelivered),
            "messages": n(&self.messages),
            "readings_accepted": n(&self.readings_accepted),
            "readings_duplicate": n(&self.readings_duplicate),
            "readings_rejected": n(&self.readings_rejected),
            "messages_malformed": n(&self.messages_malformed),
            "messages_with_errors": n(&self.messages_with_errors),
            "errors_published": n(&self.errors_published),
            "sparkplug": {
                "seq_gaps": n(&self.sparkplug_seq_gaps),
                "rebirth_requests": n(&self.sparkplug_rebirth_requests),
                "unmapped_metrics": n(&self.sparkplug_unmapped_metrics),
            },
            // Messages received and not yet acknowledged (in memory, awaiting commit).
            "backlog": self.backlog.status(),
            "last_error": self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }

    /// The backlog and delivery counts, for `/metrics`.
    pub fn backlog(&self) -> BrokerBacklog {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let b = &self.backlog;
        let held = *b.state();
        BrokerBacklog {
            connected: self.connected.load(Ordering::Relaxed),
            messages: held.messages,
            bytes: held.bytes,
            capacity_messages: MAX_PENDING_MESSAGES,
            capacity_bytes: Some(n(&b.max_bytes)),
            // MQTT 3.1.1 does not show what the broker keeps for the session.
            queued: BrokerQueue::Hidden,
            received_total: n(&self.received),
            redelivered_total: n(&self.redelivered),
            settled_total: n(&self.messages),
            deferred_total: Some(n(&b.deferred)),
            redelivery_reconnects_total: Some(n(&b.redelivery_reconnects)),
        }
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// The running MQTT consumer.
pub struct MqttIngest {
    client: AsyncClient,
    stats: Arc<MqttStats>,
    stopping: watch::Sender<bool>,
    driver: JoinHandle<()>,
    consumer: JoinHandle<()>,
}

impl MqttIngest {
    /// Starts the driver and the consumer; the broker is connected in the background.
    pub fn start(state: AppState) -> anyhow::Result<MqttIngest> {
        let config = state.config.clone();
        let options = mqtt_options(&config)?;
        let topics = Topics::from_config(&config)?;
        let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let stats = Arc::new(MqttStats::default());
        stats
            .reconnect_max_ms
            .store(config.broker_reconnect_max_ms, Ordering::Relaxed);
        stats
            .backlog
            .max_bytes
            .store(config.ingest_max_inflight_bytes.max(1), Ordering::Relaxed);
        let (stopping, stop_rx) = watch::channel(false);
        // Bounded by the driver (`Backlog::admit`) rather than by the channel: blocking the
        // driver would also hold back the acknowledgements the consumer waits to send.
        let (tx, rx) = mpsc::unbounded_channel();
        // Bounded by the backlog too: a batch's acknowledgements are handed over before it is
        // released, and the driver takes them before each poll of the connection.
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let sparkplug = match &config.mqtt_sparkplug_group {
            Some(_) => Some(SparkplugCtx {
                map: sparkplug::MetricMap::new(&config.mqtt_sparkplug_metrics).map_err(|e| {
                    anyhow::anyhow!("invalid configuration: mqtt_sparkplug_metrics: {e}")
                })?,
                state: sparkplug::State::default(),
                log_limit: LogLimiter::default(),
            }),
            None => None,
        };
        tracing::info!(
            broker = %config.mqtt_url.as_deref().unwrap_or_default(),
            topics = ?topics.filters(),
            client_id = %config.mqtt_client_id,
            "MQTT ingest starting"
        );
        let driver = tokio::spawn(drive(
            eventloop,
            client.clone(),
            topics.filters(),
            tx,
            acks_rx,
            stats.clone(),
            Backoff::new(config.broker_reconnect_max()),
            stop_rx.clone(),
        ));
        let consumer = Consumer {
            sink: Sink::new(state),
            client: client.clone(),
            acks: acks_tx,
            topics,
            stats: stats.clone(),
            log_limit: LogLimiter::default(),
            sparkplug,
        };
        let consumer = tokio::spawn(consumer.run(rx, stop_rx));
        Ok(MqttIngest {
            client,
            stats,
            stopping,
            driver,
            consumer,
        })
    }

    pub fn stats(&self) -> Arc<MqttStats> {
        self.stats.clone()
    }

    /// Finishes the batch in progress (committed and acknowledged), then disconnects.
    pub async fn stop(self) {
        let _ = self.stopping.send(true);
        let _ = self.consumer.await;
        // The acknowledgements handed over by the consumer go out before the DISCONNECT (the
        // driver writes them before it polls the connection again).
        let _ = self.client.try_disconnect();
        let mut driver = self.driver;
        if tokio::time::timeout(Duration::from_secs(5), &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        tracing::info!("MQTT ingest stopped");
    }
}

/// Builds what [`MqttIngest::start`] needs without starting it.
pub fn check_config(config: &Config) -> anyhow::Result<()> {
    mqtt_options(config)?;
    Topics::from_config(config)?;
    sparkplug::MetricMap::new(&config.mqtt_sparkplug_metrics)
        .map_err(|e| anyhow::anyhow!("invalid configuration: mqtt_sparkplug_metrics: {e}"))?;
    Ok(())
}

fn mqtt_options(config: &Config) -> anyhow::Result<MqttOptions> {
    let url = config.mqtt_url.as_deref().context("mqtt_url is not set")?;
    let broker = BrokerUrl::parse(url)
        .map_err(|e| anyhow::anyhow!("invalid configuration: mqtt_url: {e}"))?;
    let mut options = MqttOptions::new(config.mqtt_client_id.clone(), &broker.host, broker.port);
    options
        .set_keep_alive(Duration::from_secs(config.mqtt_keep_alive_secs))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(password) = config.mqtt_password_value()? {
        options.set_credentials(config.mqtt_username.clone().unwrap_or_default(), password);
    } else if let Some(user) = &config.mqtt_username {
        options.set_credentials(user.clone(), "");
    }
    if broker.tls {
        let tls = tls_config(config.mqtt_ca_file.as_deref())?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    Ok(options)
}

/// rustls with ring; the CA file's roots when given, else the platform's verifier.
fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("MQTT TLS setup")?;
    Ok(match ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading mqtt_ca_file {}", path.display()))?
            {
                let cert =
                    cert.with_context(|| format!("reading mqtt_ca_file {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("mqtt_ca_file {}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .context("MQTT TLS setup")?
                .with_no_client_auth()
        }
    })
}

/// The configured topics: the plain telemetry filter (its `+` level is the well) and the
/// error topic template.
struct Topics {
    filter: String,
    /// `spBv1.0/<group>/#` when Sparkplug B is on.
    sparkplug: Option<String>,
    levels: Vec<String>,
    well_level: usize,
    error_template: String,
}

impl Topics {
    fn from_config(config: &Config) -> anyhow::Result<Topics> {
        let well_level = mqtt_topic_well_level(&config.mqtt_topic)
            .map_err(|e| anyhow::anyhow!("invalid configuration: mqtt_topic: {e}"))?;
        Ok(Topics {
            filter: config.mqtt_topic.clone(),
            sparkplug: config
                .mqtt_sparkplug_group
                .as_ref()
                .map(|group| format!("spBv1.0/{group}/#")),
            levels: config.mqtt_topic.split('/').map(str::to_owned).collect(),
            well_level,
            error_template: config.mqtt_error_topic.clone(),
        })
    }

    /// The well level of a topic matching the filter; `None` for any other topic (left over
    /// in a persistent session from an earlier configuration).
    fn well_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let mut well = None;
        let mut count = 0;
        for (i, level) in topic.split('/').enumerate() {
            let expected = self.levels.get(i)?;
            if i == self.well_level {
                well = Some(level);
            } else if expected != level {
                return None;
            }
            count += 1;
        }
        (count == self.levels.len()).then_some(well).flatten()
    }

    fn filters(&self) -> Vec<String> {
        std::iter::once(self.filter.clone())
            .chain(self.sparkplug.clone())
            .collect()
    }

    fn error_topic(&self, well: &str) -> String {
        self.error_template.replace("{well}", well)
    }
}

/// Polls the connection: forwards messages, writes the consumer's acknowledgements,
/// subscribes on every (re)connection, backs off after failures. Ends after the DISCONNECT is
/// sent, or when stopping while disconnected.
///
/// Acknowledgements are written by the driver itself, straight to the connection, before the
/// next poll (a poll waiting for the broker is interrupted for them): they never wait behind
/// the messages still arriving, nor for a poll (rumqttc sends a queued request only when
/// nothing read is pending, see [`REQUEST_QUEUE`]). Interrupting a poll is safe while
/// connected: rumqttc reads through a buffer, and every write a poll makes finds the write
/// buffer empty (flushed here before polling again), so it never waits, and only a flush can
/// be interrupted (its bytes stay buffered, ahead of the acknowledgements). A poll that is
/// connecting is never interrupted.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    tx: mpsc::UnboundedSender<(u64, Publish)>,
    mut acks: mpsc::UnboundedReceiver<Acks>,
    stats: Arc<MqttStats>,
    mut backoff: Backoff,
    mut stopping: watch::Receiver<bool>,
) {
    let mut logged_failure = false;
    let max_pause = max_read_pause(eventloop.mqtt_options.keep_alive());
    // A DISCONNECT sent to have deferred messages re-sent (not stopping).
    let mut redelivery = false;
    loop {
        let next = if eventloop.network.is_none() {
            // Connecting (or about to): whatever is handed over now belongs to a lost
            // connection, and is dropped by `write_acks` once connected.
            eventloop.poll().await
        } else {
            // Biased: the consumer hands a batch's acknowledgements over before it asks for a
            // DISCONNECT (redelivery, stop), so they are written first.
            tokio::select! {
                biased;
                Some(first) = acks.recv() => {
                    match write_acks(&mut eventloop, first, &mut acks, &stats).await {
                        Ok(()) => continue,
                        Err(e) => {
                            // What poll does on a failed connection: the next one connects
                            // again, re-sending what is unacknowledged.
                            eventloop.clean();
                            Err(e)
                        }
                    }
                }
                event = eventloop.poll() => event,
            }
        };
        match next {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                stats.backlog.connected();
                redelivery = false;
                stats.connected.store(true, Ordering::Relaxed);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                backoff.reset();
                logged_failure = false;
                tracing::info!(
                    session_present = ack.session_present,
                    "MQTT broker connected"
                );
                // Subscribing again on a present session is harmless, and covers a
                // session the broker lost.
                let subscriptions = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subscriptions) {
                    tracing::error!(error = %e, "MQTT subscribe could not be queued");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    let msg = format!("the broker refused a subscription to {filters:?}");
                    tracing::error!("{msg}");
                    stats.set_error(msg);
                } else {
                    stats.subscribed.store(true, Ordering::Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                if publish.dup {
                    stats.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                let bytes = publish.payload.len() as u64;
                if !stats
                    .backlog
                    .admit_or_wait(bytes, max_pause, &mut stopping)
                    .await
                {
                    // Deferred: left unacknowledged, re-sent after a reconnection.
                    continue;
                }
                let generation = stats.generation.load(Ordering::Acquire);
                if tx.send((generation, publish)).is_err() {
                    // The consumer has stopped: leave the message unacknowledged.
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                if *stopping.borrow() {
                    return;
                }
                // The consumer asked for the deferred messages: the broker closes the
                // connection and the next poll connects again.
                redelivery = true;
                stats
                    .backlog
                    .redelivery_reconnects
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) if redelivery && !*stopping.borrow() => {
                // The connection closed after our DISCONNECT: connect again at once.
                stats.generation.fetch_add(1, Ordering::AcqRel);
                redelivery = false;
                stats.connected.store(false, Ordering::Relaxed);
                stats.subscribed.store(false, Ordering::Relaxed);
                tracing::debug!(error = %e, "MQTT reconnecting for deferred messages");
            }
            Err(e) => {
                stats.generation.fetch_add(1, Ordering::AcqRel);
                stats.connected.store(false, Ordering::Relaxed);
                stats.subscribed.store(false, Ordering::Relaxed);
                stats.connection_failures.fetch_add(1, Ordering::Relaxed);
                stats.set_error(format!("connection: {e}"));
                if *stopping.borrow() {
                    return;
                }
                if !logged_failure {
                    tracing::warn!(error = %e, "MQTT connection failed; retrying with backoff");
                    logged_failure = true;
                } else {
                    tracing::debug!(error = %e, "MQTT connection failed again");
                }
                let wait = backoff.next_wait();
                stats.reconnect_longest_wait.record(wait);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopping.changed() => return,
                }
            }
        }
    }
}

/// Writes handed-over acknowledgements (`first`, then whatever else is waiting) to the
/// connection, in order, and flushes them. One of a lost connection is skipped (its packet id
/// may name another message now; the broker re-sends the old one).
async fn write_acks(
    eventloop: &mut EventLoop,
    first: Acks,
    more: &mut mpsc::UnboundedReceiver<Acks>,
    stats: &MqttStats,
) -> Result<(), ConnectionError> {
    let current = stats.generation.load(Ordering::Acquire);
    let timeout = Duration::from_secs(eventloop.network_options.connection_timeout());
    let mut network = eventloop.network.as_mut();
    let mut next = Some(first);
    while let Some(batch) = next.take().or_else(|| more.try_recv().ok()) {
        for (generation, packet) in batch {
            match network.as_mut() {
                Some(network) if generation == current => network.write(packet).await?,
                _ => {
                    stats.stale_acks_skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Some(network) = network {
        tokio::time::timeout(timeout, network.flush())
            .await
            .map_err(|_| ConnectionError::FlushTimeout)??;
    }
    Ok(())
}

/// Logs a topic's problems once per minute at most.
#[derive(Default)]
pub(crate) struct LogLimiter {
    last: HashMap<String, Instant>,
}

impl LogLimiter {
    pub(crate) fn allow(&mut self, topic: &str) -> bool {
        let now = Instant::now();
        if self.last.len() > 10_000 {
            self.last
                .retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
        }
        match self.last.get(topic) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
            _ => {
                self.last.insert(topic.to_owned(), now);
                true
            }
        }
    }
}

/// What one message became before the commit.
enum Prepared {
    /// Decoded: its valid readings are `readings[first..first + count]` of the batch.
    Decoded {
        well: String,
        items: Vec<Item>,
        warnings: Vec<Value>,
        first: usize,
        count: usize,
    },
    /// Nothing to commit and nothing to answer (a Sparkplug birth without values, a death).
    Empty,
    /// Refused as a whole (nothing to commit).
    Refused {
        well: Option<String>,
        code: &'static str,
        message: String,
        details: Value,
    },
}

/// Everything a batch needs to decode its messages, off the async runtime if large.
#[derive(Clone)]
struct DecodeSettings {
    max_future: std::time::Duration,
    body_limit: usize,
}

struct Consumer {
    sink: Sink,
    client: AsyncClient,
    /// To the driver, which writes them (see [`drive`]).
    acks: mpsc::UnboundedSender<Acks>,
    topics: Topics,
    stats: Arc<MqttStats>,
    log_limit: LogLimiter,
    sparkplug: Option<SparkplugCtx>,
}

/// Sparkplug B decoding state, moved to the blocking pool with its batch when large.
struct SparkplugCtx {
    map: sparkplug::MetricMap,
    state: sparkplug::State,
    log_limit: LogLimiter,
}

impl Consumer {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<(u64, Publish)>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            if *stopping.borrow() {
                return;
            }
            let first = tokio::select! {
                biased;
                _ = stopping.changed() => return,
                message = rx.recv() => match message {
                    Some(message) => message,
                    None => return,
                },
            };
            let (generation, first) = first;
            let mut batch = vec![first];
            let mut generations = vec![generation];
            while batch.len() < MAX_BATCH_MESSAGES {
                match rx.try_recv() {
                    Ok((generation, message)) => {
                        batch.push(message);
                        generations.push(generation);
                    }
                    Err(_) => break,
                }
            }
            if self
                .handle(batch, &generations, &mut stopping)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Decodes, commits, reports and acknowledges one batch, in that order. `generations`:
    /// the connection each message came on (see `MqttStats::generation`).
    async fn handle(
        &mut self,
        batch: Vec<Publish>,
        generations: &[u64],
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<(), crate::sink::Stopped> {
        let settings = DecodeSettings {
            max_future: self.sink.state().config.max_future(),
            body_limit: self.sink.state().config.body_limit_bytes,
        };
        let now = Timestamp::from_datetime(Utc::now());
        let bytes: usize = batch.iter().map(|p| p.payload.len()).sum();
        let wells: Vec<Option<String>> = batch
            .iter()
            .map(|p| self.topics.well_of(&p.topic).map(str::to_owned))
            .collect();
        let mut sparkplug = self.sparkplug.take();
        let (prepared, sparkplug) = if bytes > INLINE_DECODE_BYTES {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || {
                let prepared = prepare_all(batch, wells, &settings, now, sparkplug.as_mut());
                (prepared, sparkplug)
            })
            .await
            .map_err(|_| crate::sink::Stopped)?
        } else {
            let prepared = prepare_all(batch, wells, &settings, now, sparkplug.as_mut());
            (prepared, sparkplug)
        };
        let PreparedBatch {
            batch,
            prepared,
            readings,
            commands,
            presence,
        } = prepared;
        // Naive local times (MQTT declares no zone): their wells' registry zones apply
        // (decoded again; only when some reading needs it). Sparkplug metrics carry epoch
        // times, never naive ones, and their state must not advance twice.
        let (batch, prepared, readings) = self
            .sink
            .apply_registry_zones(
                (batch, prepared, readings),
                bytes > INLINE_DECODE_BYTES,
                move |publish: &Publish, p: &mut Prepared, zones, scratch| {
                    if let Prepared::Decoded { well, .. } = p
                        && !publish.topic.starts_with("spBv1.0/")
                    {
                        let well = well.clone();
                        *p = prepare(publish, Some(well), &settings, now, scratch, zones);
                    }
                },
            )
            .await?;
        self.sparkplug = sparkplug;
        if let Some(sp) = &self.sparkplug {
            let tally = sp.state.tally;
            self.stats
                .sparkplug_seq_gaps
                .store(tally.seq_gaps, Ordering::Relaxed);
            self.stats
                .sparkplug_rebirth_requests
                .store(tally.rebirth_requests, Ordering::Relaxed);
            self.stats
                .sparkplug_unmapped_metrics
                .store(tally.unmapped_metrics, Ordering::Relaxed);
        }
        // Rebirth requests (NCMD, QoS 0 as the specification says).
        for (topic, payload) in commands {
            if let Err(e) = self
                .client
                .try_publish(topic, QoS::AtMostOnce, false, payload)
            {
                tracing::warn!(error = %e, "Sparkplug rebirth request could not be queued");
            }
        }
        let outcomes = self.sink.commit(readings, stopping).await?;
        // Births and deaths after the readings they came with (a DBIRTH's values, the last
        // data before a death) are committed: `latest` and the stream show them in that order.
        for (well, online) in presence {
            if self.sink.state().live.set_online(well.clone(), online, now) {
                tracing::debug!(
                    well = %well,
                    online,
                    "Sparkplug: well {}",
                    if online { "online" } else { "offline" }
                );
            }
        }
        let received_at = now.to_rfc3339();
        for (publish, prepared) in batch.iter().zip(prepared) {
            self.report(publish, prepared, &outcomes, &received_at);
        }
        // Handed to the driver in arrival order; it skips those of a lost connection.
        let acks: Acks = batch
            .iter()
            .zip(generations)
            .filter_map(|(publish, generation)| {
                let ack = match publish.qos {
                    QoS::AtMostOnce => return None,
                    QoS::AtLeastOnce => Packet::PubAck(PubAck::new(publish.pkid)),
                    QoS::ExactlyOnce => Packet::PubRec(PubRec::new(publish.pkid)),
                };
                Some((*generation, ack))
            })
            .collect();
        if !acks.is_empty() && self.acks.send(acks).is_err() {
            tracing::debug!("MQTT acknowledgements not sent (the driver has stopped)");
        }
        // Out of the backlog once its acknowledgements are handed over (the driver writes
        // them in order, before any DISCONNECT asked for below).
        if self.stats.backlog.release(batch.len() as u64, bytes as u64) {
            tracing::info!(
                "MQTT backlog drained after messages were deferred; reconnecting to receive them again"
            );
            // Awaited, never dropped for a full request queue: the deferred messages are
            // only re-sent on a new connection. The driver keeps polling, so this returns.
            if let Err(e) = self.client.disconnect().await {
                tracing::debug!(error = %e, "MQTT reconnection for deferred messages not sent (stopping)");
            }
        }
        Ok(())
    }

    /// Counts a committed message and publishes its rejections, if any, on the error topic.
    fn report(
        &mut self,
        publish: &Publish,
        prepared: Prepared,
        outcomes: &[ReadingOutcome],
        received_at: &str,
    ) {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let (well, report, error) = match prepared {
            Prepared::Decoded {
                well,
                items,
                warnings,
                first,
                count,
            } => {
                let report = message_report(items, warnings, &outcomes[first..first + count]);
                self.stats
                    .readings_accepted
                    .fetch_add(report.accepted as u64, Ordering::Relaxed);
                self.stats
                    .readings_duplicate
                    .fetch_add(report.duplicates as u64, Ordering::Relaxed);
                self.stats
                    .readings_rejected
                    .fetch_add(report.rejected.len() as u64, Ordering::Relaxed);
                espwatch_app::metrics::record_report(IngestPath::Mqtt, &report);
                if report.rejected.is_empty() {
                    return;
                }
                let total = report.total();
                let error = json!({
                    "code": if report.rejected.len() == total { "all_readings_rejected" } else { "readings_rejected" },
                    "message": format!(
                        "{} of {total} readings were rejected; see `rejected` for the reasons",
                        report.rejected.len()
                    ),
                });
                (Some(well), report, error)
            }
            Prepared::Empty => return,
            Prepared::Refused {
                well,
                code,
                message,
                details,
            } => {
                self.stats
                    .messages_malformed
                    .fetch_add(1, Ordering::Relaxed);
                espwatch_app::metrics::record_malformed(IngestPath::Mqtt);
                let error = json!({ "code": code, "message": message, "details": details });
                (well, IngestReport::default(), error)
            }
        };
        self.stats
            .messages_with_errors
            .fetch_add(1, Ordering::Relaxed);
        if self.log_limit.allow(&publish.topic) {
            tracing::warn!(
                topic = %publish.topic,
                error = %error["message"].as_str().unwrap_or_default(),
                "MQTT message with errors (logged once per topic per minute; every one is answered on the error topic)"
            );
        }
        let Some(well) = well else {
            // Not on the configured filter: there is no well to answer to.
            return;
        };
        let document = json!({
            "topic": publish.topic,
            "well_id": well,
            "received_at": received_at,
            "error": error,
            "accepted": report.accepted,
            "duplicates": report.duplicates,
            "rejected": report.rejected,
            "warnings": report.warnings,
        });
        let topic = self.topics.error_topic(&well);
        match self.client.try_publish(
            topic,
            QoS::AtLeastOnce,
            false,
            document.to_string().into_bytes(),
        ) {
            Ok(()) => {
                self.stats.errors_published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "MQTT error report could not be queued"),
        }
    }
}

/// A batch after decoding.
struct PreparedBatch {
    batch: Vec<Publish>,
    /// One per message of `batch`.
    prepared: Vec<Prepared>,
    /// The valid readings of all messages, in order.
    readings: Vec<Reading>,
    /// Sparkplug rebirth requests to publish: (topic, payload).
    commands: Vec<(String, Vec<u8>)>,
    /// Sparkplug connectivity changes, in order: (well, online).
    presence: Vec<(WellId, bool)>,
}

/// Decodes every message of a batch.
fn prepare_all(
    batch: Vec<Publish>,
    wells: Vec<Option<String>>,
    settings: &DecodeSettings,
    now: Timestamp,
    mut sparkplug: Option<&mut SparkplugCtx>,
) -> PreparedBatch {
    let mut readings = Vec::new();
    let mut commands = Vec::new();
    let mut presence = Vec::new();
    let prepared = batch
        .iter()
        .zip(wells)
        .map(|(publish, well)| match sparkplug.as_deref_mut() {
            Some(sp) if publish.topic.starts_with("spBv1.0/") => {
                let out = SparkplugOut {
                    readings: &mut readings,
                    commands: &mut commands,
                    presence: &mut presence,
                };
                prepare_sparkplug(publish, sp, settings, now, out)
            }
            _ => prepare(publish, well, settings, now, &mut readings, &[]),
        })
        .collect();
    PreparedBatch {
        batch,
        prepared,
        readings,
        commands,
        presence,
    }
}

impl crate::sink::PreparedMessage for Prepared {
    fn items(&self) -> Option<&[Item]> {
        match self {
            Prepared::Decoded { items, .. } => Some(items),
            Prepared::Empty | Prepared::Refused { .. } => None,
        }
    }

    fn slot(&mut self) -> Option<(&[Item], &mut usize, &mut usize)> {
        match self {
            Prepared::Decoded {
                items,
                first,
                count,
                ..
            } => Some((items, first, count)),
            Prepared::Empty | Prepared::Refused { .. } => None,
        }
    }
}

/// Where a Sparkplug message's results go, for the whole batch.
struct SparkplugOut<'a> {
    /// The batch's valid readings.
    readings: &'a mut Vec<Reading>,
    /// Rebirth requests.
    commands: &'a mut Vec<(String, Vec<u8>)>,
    /// Connectivity changes of wells.
    presence: &'a mut Vec<(WellId, bool)>,
}

/// A Sparkplug B message: births and aliases tracked, metrics turned into canonical readings
/// of the device's well, then decoded like any other payload; births and deaths become the
/// wells' connectivity changes.
fn prepare_sparkplug(
    publish: &Publish,
    sp: &mut SparkplugCtx,
    settings: &DecodeSettings,
    now: Timestamp,
    out: SparkplugOut<'_>,
) -> Prepared {
    let SparkplugOut {
        readings,
        commands,
        presence,
    } = out;
    let Some(topic) = sparkplug::Topic::parse(&publish.topic) else {
        return Prepared::Refused {
            well: None,
            code: "unexpected_topic",
            message: format!("{} is not a Sparkplug B topic", publish.topic),
            details: Value::Null,
        };
    };
    let now_ms = (now.0 / 1000).max(0) as u64;
    let device = topic.device.map(str::to_owned);
    let interpreted = match sp
        .state
        .interpret(&topic, &publish.payload, &sp.map, now_ms)
    {
        Ok(i) => i,
        Err(message) => {
            return Prepared::Refused {
                well: device,
                code: "malformed_payload",
                message,
                details: Value::Null,
            };
        }
    };
    let node = format!("spBv1.0/{}/{}", topic.group, topic.edge);
    if let Some((expected, got)) = interpreted.gap
        && sp.log_limit.allow(&node)
    {
        tracing::warn!(
            node = %node,
            expected,
            got,
            "Sparkplug sequence gap: messages from this edge node were lost (logged once per node per minute)"
        );
    }
    for name in &interpreted.unmapped {
        if sp.log_limit.allow(&format!("{node}#{name}")) {
            tracing::info!(
                node = %node,
                metric = %name,
                "Sparkplug metric maps to no channel (add it to mqtt_sparkplug_metrics); ignored"
            );
        }
    }
    if let Some(command) = interpreted.rebirth {
        tracing::info!(node = %node, "Sparkplug: data without a birth; rebirth requested");
        commands.push(command);
    }
    for (device, online) in interpreted.presence {
        // A device that is no well id has no readings either (refused below).
        if let Ok(well) = WellId::parse_new(&device) {
            presence.push((well, online));
        }
    }
    let (Some(device), false) = (device, interpreted.readings.is_empty()) else {
        return Prepared::Empty;
    };
    let body = Value::Array(interpreted.readings).to_string();
    decode_for_well(
        body.as_bytes(),
        PayloadFormat::Json,
        device,
        settings,
        now,
        readings,
        &[],
    )
}

fn prepare(
    publish: &Publish,
    well: Option<String>,
    settings: &DecodeSettings,
    now: Timestamp,
    readings: &mut Vec<Reading>,
    zones: &[(WellId, UtcOffset)],
) -> Prepared {
    let refused = |well: Option<String>, code, message: String, details| Prepared::Refused {
        well,
        code,
        message,
        details,
    };
    let Some(well) = well else {
        return refused(
            None,
            "unexpected_topic",
            format!(
                "{} does not match the configured topic filter",
                publish.topic
            ),
            Value::Null,
        );
    };
    if publish.payload.len() > settings.body_limit {
        return refused(
            Some(well),
            "payload_too_large",
            format!(
                "the payload has {} bytes; at most {} are accepted (body_limit_bytes)",
                publish.payload.len(),
                settings.body_limit
            ),
            Value::Null,
        );
    }
    decode_for_well(
        &publish.payload,
        sniff(&publish.payload),
        well,
        settings,
        now,
        readings,
        zones,
    )
}

/// Decodes one payload for the well its topic names; its valid readings are appended to
/// `readings`.
fn decode_for_well(
    payload: &[u8],
    format: Sniffed,
    well: String,
    settings: &DecodeSettings,
    now: Timestamp,
    readings: &mut Vec<Reading>,
    zones: &[(WellId, UtcOffset)],
) -> Prepared {
    let well_id = match WellId::parse_new(&well) {
        Ok(id) => id,
        Err(e) => {
            return Prepared::Refused {
                well: Some(well),
                code: "invalid_well",
                message: format!("the topic does not name a valid well id: {e}"),
                details: Value::Null,
            };
        }
    };
    let opts = DecodeOptions {
        now,
        max_future: settings.max_future,
        max_readings: DecodeOptions::DEFAULT_MAX_READINGS,
        well: Some(well_id),
        zone: None,
        csv: espwatch_core::ingest::CsvDialect::default(),
    };
    let decoded = decode_as(payload, format, &opts).and_then(|mut decoded| {
        ingest::apply_well_zones_with(&opts, &mut decoded, zones, |o| {
            decode_as(payload, format, o)
        })?;
        Ok(decoded)
    });
    match decoded {
        Ok(decoded) => {
            let first = readings.len();
            readings.extend(decoded.items.iter().filter_map(|i| i.valid().cloned()));
            Prepared::Decoded {
                well,
                count: readings.len() - first,
                first,
                items: decoded.items,
                warnings: decoded
                    .warnings
                    .iter()
                    .map(|w| serde_json::to_value(w).unwrap_or_default())
                    .collect(),
            }
        }
        Err(e) => Prepared::Refused {
            well: Some(well),
            code: "malformed_payload",
            message: format!("the payload cannot be parsed: {e}"),
            details: serde_json::to_value(&e).unwrap_or_default(),
        },
    }
}

/// A payload's format as told by its first byte.
pub(crate) type Sniffed = PayloadFormat;

/// MQTT 3.1.1 carries no content type: the payload says what it is. `[`: a JSON array; `{`:
/// one JSON object (or NDJSON, see [`decode_as`]); anything else: CSV with a header row.
pub(crate) fn sniff(payload: &[u8]) -> Sniffed {
    let body = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[' | b'{') => PayloadFormat::Json,
        _ => PayloadFormat::Csv,
    }
}

/// Decodes as `format`; a JSON object payload that fails as one object and has several lines
/// is decoded as NDJSON (the JSON error is kept if that fails too).
pub(crate) fn decode_as(
    payload: &[u8],
    format: Sniffed,
    opts: &DecodeOptions,
) -> Result<ingest::Decoded, DecodeError> {
    let body = payload.trim_ascii();
    match ingest::decode(format, payload, opts) {
        Err(e)
            if format == PayloadFormat::Json && body.starts_with(b"{") && body.contains(&b'\n') =>
        {
            ingest::decode(PayloadFormat::Ndjson, payload, opts).map_err(|_| e)
        }
        other => other,
    }
}

/// [`sniff`] then [`decode_as`].
pub fn decode(payload: &[u8], opts: &DecodeOptions) -> Result<ingest::Decoded, DecodeError> {
    decode_as(payload, sniff(payload), opts)
}

/// The report of one message, as `POST /api/v1/telemetry` would give it; `outcomes` are its
/// valid readings' outcomes, in order.
pub(crate) fn message_report(
    items: Vec<Item>,
    warnings: Vec<Value>,
    outcomes: &[ReadingOutcome],
) -> IngestReport {
    let mut report = IngestReport {
        warnings,
        ..IngestReport::default()
    };
    let mut outcomes = outcomes.iter();
    for (position, item) in items.into_iter().enumerate() {
        match item {
            Item::Valid(reading) => match outcomes.next() {
                Some(ReadingOutcome::Accepted) => report.accepted += 1,
                Some(ReadingOutcome::Duplicate) => report.duplicates += 1,
                Some(ReadingOutcome::UnknownWell) | None => {
                    report.rejected.push(RejectedReading {
                        index: position,
                        well_id: Some(reading.well_id.to_string()),
                        errors: vec![FieldProblem {
                            field: "well_id".into(),
                            reason: "unknown well: register it first (POST /api/v1/wells); automatic registration is off".into(),
                        }],
                    })
                }
            },
            Item::Rejected(r) => report.rejected.push(RejectedReading {
                index: r.index,
                well_id: r.well_id,
                errors: r
                    .errors
                    .into_iter()
                    .map(|e| FieldProblem {
                        field: e.field,
                        reason: e.reason,
                    })
                    .collect(),
            }),
        }
    }
    report.rejected.sort_by_key(|r| r.index);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver admits while the consumer releases, on two threads: whenever messages were
    /// deferred, the release that empties the backlog must say so (or the deferred messages
    /// are never fetched again). With the decision split over separate atomics a deferral
    /// could land between the last release and its check.
    #[test]
    fn a_deferral_is_never_lost_between_admit_and_release() {
        for _ in 0..20 {
            let backlog = Arc::new(Backlog::default());
            backlog.max_bytes.store(u64::MAX, Ordering::Relaxed);
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let reconnects = Arc::new(AtomicU64::new(0));
            let consumer = {
                let (backlog, reconnects) = (backlog.clone(), reconnects.clone());
                std::thread::spawn(move || {
                    while let Ok(()) = rx.recv() {
                        let mut n = 1;
                        while rx.try_recv().is_ok() {
                            n += 1;
                        }
                        if backlog.release(n, n) {
                            reconnects.fetch_add(1, Ordering::Relaxed);
                            // The new connection (the driver sees its CONNACK).
                            backlog.connected();
                        }
                    }
                })
            };
            let mut lost = 0;
            for _ in 0..200_000 {
                // The driver's choices with no pause at all: defer whenever full.
                loop {
                    match backlog.admit(1) {
                        Admission::Admitted => tx.send(()).unwrap(),
                        Admission::Deferred => lost += 1,
                        Admission::Full if backlog.defer() => lost += 1,
                        Admission::Full => continue,
                    }
                    break;
                }
            }
            drop(tx);
            consumer.join().unwrap();
            let s = *backlog.state();
            assert_eq!(s.messages, 0);
            assert!(
                !s.deferring,
                "{lost} deferred, {} reconnections, and the backlog is empty while still deferring: nobody will reconnect",
                reconnects.load(Ordering::Relaxed)
            );
        }
    }

    /// At the bound the driver waits for the consumer's release instead of deferring (which
    /// costs a reconnection and a re-send of everything in flight), and defers only when the
    /// consumer makes no room within the pause.
    #[tokio::test]
    async fn a_full_backlog_pauses_reading_until_the_consumer_makes_room() {
        let backlog = Arc::new(Backlog::default());
        backlog.max_bytes.store(u64::MAX, Ordering::Relaxed);
        let (_stop_tx, mut stopping) = watch::channel(false);
        for _ in 0..MAX_PENDING_MESSAGES {
            assert_eq!(backlog.admit(1), Admission::Admitted);
        }
        assert_eq!(backlog.admit(1), Admission::Full);
        let releaser = {
            let backlog = backlog.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                backlog.release(512, 512)
            })
        };
        let started = Instant::now();
        assert!(
            backlog
                .admit_or_wait(1, Duration::from_secs(30), &mut stopping)
                .await,
            "admitted once the consumer released"
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(
            !releaser.await.unwrap(),
            "nothing deferred: no reconnection"
        );
        let status = backlog.status();
        assert_eq!(status["deferred"], 0, "{status}");
        assert_eq!(status["read_pauses"], 1, "{status}");
        assert_eq!(
            status["messages"],
            MAX_PENDING_MESSAGES - 512 + 1,
            "{status}"
        );

        // Full again and nobody releases: deferred after the pause, and so is every later
        // message on this connection until the backlog drains.
        while backlog.admit(1) == Admission::Admitted {}
        assert!(
            !backlog
                .admit_or_wait(1, Duration::from_millis(100), &mut stopping)
                .await
        );
        assert_eq!(backlog.admit(1), Admission::Deferred);
        assert!(backlog.release(MAX_PENDING_MESSAGES, MAX_PENDING_MESSAGES));
        let status = backlog.status();
        assert_eq!(status["deferred"], 2, "{status}");
        assert_eq!(status["read_pauses"], 2, "{status}");
    }

    fn topics(filter: &str) -> Topics {
        let config = Config {
            mqtt_topic: filter.into(),
            ..Config::default()
        };
        Topics::from_config(&config).unwrap()
    }

    #[test]
    fn the_well_is_the_filters_plus_level() {
        let t = topics("espwatch/+/telemetry");
        assert_eq!(t.well_of("espwatch/ESP-1/telemetry"), Some("ESP-1"));
        assert_eq!(t.well_of("espwatch/ESP-1/errors"), None);
        assert_eq!(t.well_of("espwatch/ESP-1"), None);
        assert_eq!(t.well_of("espwatch/ESP-1/telemetry/x"), None);
        assert_eq!(t.well_of("other/ESP-1/telemetry"), None);
        assert_eq!(t.error_topic("ESP-1"), "espwatch/ESP-1/errors");
        let t = topics("+");
        assert_eq!(t.well_of("W"), Some("W"));
        assert_eq!(t.well_of("W/x"), None);
    }

    #[test]
    fn payload_formats_are_recognised_by_their_first_byte() {
        let opts = DecodeOptions {
            well: Some(WellId::parse_new("W").unwrap()),
            ..DecodeOptions::new(Timestamp::from_secs(1_800_000_000))
        };
        let valid = |body: &str| {
            decode(body.as_bytes(), &opts)
                .unwrap()
                .items
                .iter()
                .filter(|i| i.valid().is_some())
                .count()
        };
        assert_eq!(valid(r#"{"ts":1700000000,"pip":1}"#), 1);
        assert_eq!(valid("{\n  \"ts\": 1700000000,\n  \"pip\": 1\n}\n"), 1);
        assert_eq!(
            valid("[{\"ts\":1700000000,\"pip\":1},{\"ts\":1700000010,\"pip\":2}]"),
            2
        );
        assert_eq!(
            valid("{\"ts\":1700000000,\"pip\":1}\n{\"ts\":1700000010,\"pip\":2}\n"),
            2
        );
        assert_eq!(valid("ts,pip\n1700000000,1\n1700000010,2\n"), 2);
        assert!(decode(br#"{"ts":1700000000,"pip":"#, &opts).is_err());
    }
}
