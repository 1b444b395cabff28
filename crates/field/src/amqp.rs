//! AMQP 0-9-1 (RabbitMQ) ingest: telemetry consumed from a durable queue, acknowledged only
//! after its readings are committed.
//!
//! One *driver* task owns the connection: it connects, declares the topology (the durable
//! queue with its dead-letter exchange, the dead-letter queue, the optional topic exchange and
//! binding), starts `amqp_consumers` consumers (each on its own channel with `basic.qos
//! prefetch = amqp_prefetch`, plus a confirm-mode channel for its dead letters) and waits.
//! When the connection or a channel fails it closes everything and connects again with
//! backoff (250 ms doubling, jittered, capped at `broker_reconnect_max_ms` as MQTT's is);
//! whatever was delivered and not acknowledged is delivered again by the broker.
//!
//! Each consumer takes what has arrived as one batch, decodes every message with the HTTP
//! decoders (format from `content_type`, sniffed when absent; the well from the `well_id`
//! header when the body does not name it), commits the valid readings of the whole batch in
//! one append, then:
//! - messages refused as a whole (unparseable, unsupported content type, too large, every
//!   reading invalid) and messages with some rejected readings are published to the
//!   dead-letter exchange **as they were received** (body, content type and headers) plus
//!   `x-espwatch-*` headers naming the reasons, and the broker's publisher confirm is awaited.
//!   A partly valid message thus keeps its valid readings (committed) and the whole message
//!   sits in the dead-letter queue with the rejected readings' indexes and reasons:
//!   re-publishing it after a fix is harmless, since the readings already stored are
//!   duplicates (`(well_id, ts)` idempotency) and only the fixed ones are added.
//! - a dead letter the broker did not confirm (unroutable, nacked) falls back to
//!   `basic.reject(requeue = false)`: the broker dead-letters the original through the
//!   queue's `x-dead-letter-exchange` (reason in its `x-death` header), so nothing is dropped.
//! - every other message of the batch is acknowledged with one `basic.ack(multiple)`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use espwatch_app::config::Config;
use espwatch_app::metrics::IngestPath;
use espwatch_core::ingest::{self, CsvDialect, DecodeOptions, Item, PayloadFormat};
use espwatch_core::localtime::UtcOffset;
use espwatch_core::{Reading, Timestamp, WellId};
use espwatch_server::AppState;
use espwatch_server::state::{BrokerBacklog, BrokerQueue};
use espwatch_store::ReadingOutcome;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::backoff::{Backoff, LongestWait};
use crate::mqtt::{INLINE_DECODE_BYTES, LogLimiter, decode_as, message_report, sniff};
use crate::sink::Sink;

/// How long connecting (TCP + AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rejected readings listed in a dead letter's `x-espwatch-report` header at most (headers
/// must fit in one frame: 128 KiB by default); `x-espwatch-rejected` has the full count.
const MAX_REPORTED_REJECTIONS: usize = 100;
/// Header names of dead letters.
pub const HEADER_ERROR_CODE: &str = "x-espwatch-error-code";
pub const HEADER_ERROR: &str = "x-espwatch-error";
pub const HEADER_REPORT: &str = "x-espwatch-report";

/// Counters and connection state, for `/health/ready` (`checks.amqp`).
#[derive(Default)]
pub struct AmqpStats {
    connected: AtomicBool,
    /// Consumers registered with the broker on the current connection.
    consumers: AtomicU64,
    connections: AtomicU64,
    connection_failures: AtomicU64,
    /// `broker_reconnect_max_ms`, and the longest wait the driver slept between attempts.
    reconnect_max_ms: AtomicU64,
    reconnect_longest_wait: LongestWait,
    /// Deliveries received (re-deliveries included).
    received: AtomicU64,
    /// Deliveries flagged `redelivered` by the broker.
    redelivered: AtomicU64,
    /// Messages committed and settled (acknowledged or dead-lettered).
    messages: AtomicU64,
    readings_accepted: AtomicU64,
    readings_duplicate: AtomicU64,
    readings_rejected: AtomicU64,
    /// Messages refused as a whole (unparseable, unsupported content type, too large, bad
    /// headers).
    messages_malformed: AtomicU64,
    /// Messages with at least one rejected reading (malformed ones included).
    messages_with_errors: AtomicU64,
    /// Dead letters published with their reasons and confirmed by the broker.
    dead_lettered: AtomicU64,
    /// Dead letters the broker did not confirm, rejected to the queue's dead-letter exchange
    /// instead (without the `x-espwatch-*` reasons).
    dead_letter_fallbacks: AtomicU64,
    /// Deliveries taken into a batch and not yet settled (in memory, awaiting commit): at
    /// most `amqp_consumers` × `amqp_prefetch`, since the broker sends no more unacknowledged
    /// ones (`basic.qos`); everything beyond waits in the queue.
    backlog: AtomicU64,
    backlog_bytes: AtomicU64,
    backlog_peak: AtomicU64,
    /// `amqp_consumers` × `amqp_prefetch`.
    backlog_max: AtomicU64,
    /// Messages ready in the queue (not yet delivered to a consumer), sampled every 0.5 s
    /// with a passive `queue.declare`: the consumer lag.
    queue_ready: AtomicU64,
    queue_ready_known: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// Counts a batch in the backlog until dropped (settled, or abandoned with its connection).
struct InBacklog<'a> {
    stats: &'a AmqpStats,
    messages: u64,
    bytes: u64,
}

impl<'a> InBacklog<'a> {
    fn new(stats: &'a AmqpStats, messages: u64, bytes: u64) -> InBacklog<'a> {
        let now = stats.backlog.fetch_add(messages, Ordering::AcqRel) + messages;
        stats.backlog_bytes.fetch_add(bytes, Ordering::AcqRel);
        stats.backlog_peak.fetch_max(now, Ordering::Relaxed);
        InBacklog {
            stats,
            messages,
            bytes,
        }
    }
}

impl Drop for InBacklog<'_> {
    fn drop(&mut self) {
        self.stats
            .backlog
            .fetch_sub(self.messages, Ordering::AcqRel);
        self.stats
            .backlog_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl AmqpStats {
    pub fn status(&self, queue: &str) -> Value {
        let connected = self.connected.load(Ordering::Relaxed);
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            // A broker outage degrades, never unreadies: HTTP ingest and queries go on.
            "status": if connected { "healthy" } else { "degraded" },
            "connected": connected,
            "queue": queue,
            "consumers": n(&self.consumers),
            "connections": n(&self.connections),
            "connection_failures": n(&self.connection_failures),
            "reconnect_max_ms": n(&self.reconnect_max_ms),
            "reconnect_longest_wait_ms": self.reconnect_longest_wait.ms(),
            "received": n(&self.received),
            "redelivered": n(&self.redelivered),
            "messages": n(&self.messages),
            "readings_accepted": n(&self.readings_accepted),
            "readings_duplicate": n(&self.readings_duplicate),
            "readings_rejected": n(&self.readings_rejected),
            "messages_malformed": n(&self.messages_malformed),
            "messages_with_errors": n(&self.messages_with_errors),
            "dead_lettered": n(&self.dead_lettered),
            "dead_letter_fallbacks": n(&self.dead_letter_fallbacks),
            // Deliveries in memory awaiting commit; the rest of the backlog is the queue's.
            "backlog": {
                "messages": n(&self.backlog),
                "bytes": n(&self.backlog_bytes),
                "peak_messages": n(&self.backlog_peak),
                "max_messages": n(&self.backlog_max),
                // Waiting in the broker's queue (null until sampled, or when not connected).
                "queue_ready": self
                    .queue_ready_known
                    .load(Ordering::Relaxed)
                    .then(|| n(&self.queue_ready)),
            },
            "last_error": self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }

    /// The backlog and delivery counts, for `/metrics`.
    pub fn backlog(&self) -> BrokerBacklog {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connected = self.connected.load(Ordering::Relaxed);
        BrokerBacklog {
            connected,
            messages: n(&self.backlog),
            bytes: n(&self.backlog_bytes),
            capacity_messages: n(&self.backlog_max),
            capacity_bytes: None,
            queued: if connected && self.queue_ready_known.load(Ordering::Relaxed) {
                BrokerQueue::Messages(n(&self.queue_ready))
            } else {
                BrokerQueue::Unknown
            },
            received_total: n(&self.received),
            redelivered_total: n(&self.redelivered),
            settled_total: n(&self.messages),
            deferred_total: None,
            redelivery_reconnects_total: None,
        }
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// What the driver needs from the configuration.
#[derive(Clone)]
struct Settings {
    url: String,
    queue: String,
    exchange: String,
    binding_key: String,
    dead_letter_exchange: String,
    dead_letter_queue: String,
    prefetch: u16,
    consumers: u16,
    reconnect_max: Duration,
}

impl Settings {
    fn from_config(config: &Config) -> anyhow::Result<Settings> {
        let url = config.amqp_url.clone().context("amqp_url is not set")?;
        espwatch_app::config::check_amqp_url(&url)
            .map_err(|e| anyhow::anyhow!("invalid configuration: amqp_url: {e}"))?;
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| anyhow::anyhow!("invalid configuration: amqp_url: {e}"))?;
        Ok(Settings {
            url,
            queue: config.amqp_queue.clone(),
            exchange: config.amqp_exchange.clone(),
            binding_key: config.amqp_binding_key.clone(),
            dead_letter_exchange: config.amqp_dead_letter_exchange.clone(),
            dead_letter_queue: config.amqp_dead_letter_queue.clone(),
            prefetch: config.amqp_prefetch,
            consumers: config.amqp_consumers,
            reconnect_max: config.broker_reconnect_max(),
        })
    }
}

/// Builds what [`AmqpIngest::start`] needs without starting it.
pub fn check_config(config: &Config) -> anyhow::Result<()> {
    Settings::from_config(config).map(|_| ())
}

/// The running AMQP consumer.
pub struct AmqpIngest {
    stats: Arc<AmqpStats>,
    queue: String,
    stopping: watch::Sender<bool>,
    driver: JoinHandle<()>,
}

impl AmqpIngest {
    /// Starts the driver; the broker is connected in the background.
    pub fn start(state: AppState) -> anyhow::Result<AmqpIngest> {
        let settings = Settings::from_config(&state.config)?;
        let stats = Arc::new(AmqpStats::default());
        stats.backlog_max.store(
            u64::from(settings.prefetch) * u64::from(settings.consumers),
            Ordering::Relaxed,
        );
        stats.reconnect_max_ms.store(
            u64::try_from(settings.reconnect_max.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let (stopping, stop_rx) = watch::channel(false);
        tracing::info!(
            broker = %redact_url(&settings.url),
            queue = %settings.queue,
            exchange = %settings.exchange,
            dead_letter_queue = %settings.dead_letter_queue,
            prefetch = settings.prefetch,
            consumers = settings.consumers,
            "AMQP ingest starting"
        );
        let queue = settings.queue.clone();
        let driver = tokio::spawn(drive(settings, Sink::new(state), stats.clone(), stop_rx));
        Ok(AmqpIngest {
            stats,
            queue,
            stopping,
            driver,
        })
    }

    /// The `/health/ready` reporter.
    pub fn status_fn(&self) -> impl Fn() -> Value + Send + Sync + 'static {
        let stats = self.stats.clone();
        let queue = self.queue.clone();
        move || stats.status(&queue)
    }

    /// The `/metrics` reporter.
    pub fn backlog_fn(&self) -> impl Fn() -> BrokerBacklog + Send + Sync + 'static {
        let stats = self.stats.clone();
        move || stats.backlog()
    }

    /// Finishes the batches in progress (committed and settled), then closes the connection;
    /// messages delivered but not yet in a batch go back to the queue.
    pub async fn stop(self) {
        let _ = self.stopping.send(true);
        let mut driver = self.driver;
        if tokio::time::timeout(Duration::from_secs(30), &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        tracing::info!("AMQP ingest stopped");
    }
}

/// The URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => {
                    let user = rest[..at].split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:<redacted>{}", &rest[at..])
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Connects, consumes until the connection fails, and connects again with backoff; returns
/// when stopping.
async fn drive(
    settings: Settings,
    sink: Sink,
    stats: Arc<AmqpStats>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(settings.reconnect_max);
    let mut logged_failure = false;
    loop {
        if *stopping.borrow() {
            return;
        }
        let connections = stats.connections.load(Ordering::Relaxed);
        let result = session(&settings, &sink, &stats, stopping.clone()).await;
        stats.connected.store(false, Ordering::Relaxed);
        stats.consumers.store(0, Ordering::Relaxed);
        if stats.connections.load(Ordering::Relaxed) > connections {
            // It was connected: start the backoff again.
            backoff.reset();
            logged_failure = false;
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                if *stopping.borrow() {
                    return;
                }
                stats.connection_failures.fetch_add(1, Ordering::Relaxed);
                let text = format!("{e:#}");
                stats.set_error(text.clone());
                if !logged_failure {
                    tracing::warn!(error = %text, "AMQP connection failed or lost; reconnecting with backoff (unacknowledged messages are delivered again)");
                    logged_failure = true;
                } else {
                    tracing::debug!(error = %text, "AMQP connection failed again");
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

/// Samples the number of messages ready in the consumed queue (passive `queue.declare`, which
/// creates nothing); a failure leaves the figure unknown.
async fn sample_queue_depth(channel: &Channel, settings: &Settings, stats: &AmqpStats) {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let sampled = tokio::time::timeout(
        Duration::from_secs(2),
        channel.queue_declare(short(&settings.queue), passive, FieldTable::default()),
    )
    .await;
    match sampled {
        Ok(Ok(queue)) => {
            stats
                .queue_ready
                .store(u64::from(queue.message_count()), Ordering::Relaxed);
            stats.queue_ready_known.store(true, Ordering::Relaxed);
        }
        _ => stats.queue_ready_known.store(false, Ordering::Relaxed),
    }
}

fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

fn long(s: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

/// Declares the queues and exchanges (idempotent; a queue declared before with other
/// arguments is refused by the broker, and the error says so).
async fn declare_topology(channel: &Channel, settings: &Settings) -> anyhow::Result<()> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            short(&settings.dead_letter_exchange),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {}", settings.dead_letter_exchange))?;
    channel
        .queue_declare(
            short(&settings.dead_letter_queue),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring queue {}", settings.dead_letter_queue))?;
    channel
        .queue_bind(
            short(&settings.dead_letter_queue),
            short(&settings.dead_letter_exchange),
            short(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("binding the dead-letter queue")?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        short("x-dead-letter-exchange"),
        long(settings.dead_letter_exchange.as_str()),
    );
    channel
        .queue_declare(
            short(&settings.queue),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .with_context(|| format!("declaring queue {}", settings.queue))?;
    if !settings.exchange.is_empty() {
        channel
            .exchange_declare(
                short(&settings.exchange),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {}", settings.exchange))?;
        channel
            .queue_bind(
                short(&settings.queue),
                short(&settings.exchange),
                short(&settings.binding_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the queue")?;
    }
    Ok(())
}

/// One connection's life: topology, consumers, and the wait for the first of them to end.
/// `Ok` only when stopping.
async fn session(
    settings: &Settings,
    sink: &Sink,
    stats: &Arc<AmqpStats>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("espwatch {}", settings.queue).into());
    let connection = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&settings.url, properties),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting timed out"))?
    .context("connecting")?;
    let result = consume(&connection, settings, sink, stats, stopping).await;
    // Closing returns what is delivered and unacknowledged to the queue.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        connection.close(200, short("espwatch stopping")),
    )
    .await;
    result
}

async fn consume(
    connection: &Connection,
    settings: &Settings,
    sink: &Sink,
    stats: &Arc<AmqpStats>,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let setup = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    declare_topology(&setup, settings).await?;
    // Kept open to sample the queue's depth (the backlog waiting in the broker).
    let mut tasks = JoinSet::new();
    for _ in 0..settings.consumers {
        let channel = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        channel
            .basic_qos(settings.prefetch, BasicQosOptions::default())
            .await
            .context("basic.qos")?;
        let publisher = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("confirm.select")?;
        let consumer = channel
            .basic_consume(
                short(&settings.queue),
                short(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming {}", settings.queue))?;
        let worker = Worker {
            sink: sink.clone(),
            publisher,
            settings: settings.clone(),
            stats: stats.clone(),
            log_limit: LogLimiter::default(),
        };
        tasks.spawn(worker.run(consumer, stopping.clone()));
    }
    stats.connected.store(true, Ordering::Relaxed);
    stats
        .consumers
        .store(settings.consumers as u64, Ordering::Relaxed);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    tracing::info!(queue = %settings.queue, consumers = settings.consumers, "AMQP broker connected; consuming");
    // Every worker ends on its own when stopping (after settling its batch), or with an
    // error when the connection fails; the first error ends the session (the others
    // follow as the connection closes).
    let first = tokio::select! {
        joined = tasks.join_next() => joined,
        _ = async {
            // The connection can die while every worker waits for a delivery.
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !connection.status().connected() {
                    return;
                }
                sample_queue_depth(&setup, settings, stats).await;
            }
        } => None,
    };
    let _ = setup.close(200, short("consumed")).await;
    stats.queue_ready_known.store(false, Ordering::Relaxed);
    let result = match first {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(anyhow::anyhow!("AMQP worker failed: {e}")),
        None => Err(anyhow::anyhow!("the connection was closed")),
    };
    if result.is_err() || !*stopping.borrow_and_update() {
        // Not stopping: the workers still running cannot settle anything on a failed
        // connection; they are ended and their messages delivered again.
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    match result {
        Ok(()) if *stopping.borrow() => Ok(()),
        Ok(()) => Err(anyhow::anyhow!("a consumer ended")),
        Err(e) => Err(e),
    }
}

/// What one message became before the commit.
enum Prepared {
    /// Decoded: its valid readings are `readings[first..first + count]` of the batch.
    Decoded {
        items: Vec<Item>,
        warnings: Vec<Value>,
        first: usize,
        count: usize,
    },
    /// Refused as a whole (nothing to commit).
    Refused {
        code: &'static str,
        message: String,
        details: Value,
    },
}

/// Everything decoding needs, moved to the blocking pool with a large batch.
#[derive(Clone, Copy)]
struct DecodeSettings {
    max_future: std::time::Duration,
    body_limit: usize,
}

/// A message's fate after the commit.
enum Settle {
    Ack,
    /// Published to the dead-letter exchange with these headers added.
    DeadLetter(FieldTable),
}

struct Worker {
    sink: Sink,
    publisher: Channel,
    settings: Settings,
    stats: Arc<AmqpStats>,
    log_limit: LogLimiter,
}

impl Worker {
    async fn run(
        mut self,
        mut consumer: lapin::Consumer,
        mut stopping: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let max = usize::from(self.settings.prefetch).max(1);
        loop {
            if *stopping.borrow() {
                return Ok(());
            }
            let first = tokio::select! {
                biased;
                _ = stopping.changed() => return Ok(()),
                delivery = consumer.next() => match delivery {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(anyhow::Error::new(e).context("consuming")),
                    None => anyhow::bail!("the broker cancelled the consumer"),
                },
            };
            let mut batch = vec![first];
            while batch.len() < max {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    Some(Some(Err(e))) => {
                        return Err(anyhow::Error::new(e).context("consuming"));
                    }
                    Some(None) => anyhow::bail!("the broker cancelled the consumer"),
                    None => break,
                }
            }
            match self.handle(batch, &mut stopping).await {
                Ok(()) => {}
                Err(HandleError::Stopped) => return Ok(()),
                Err(HandleError::Broker(e)) => return Err(e),
            }
        }
    }

    /// Decodes, commits, dead-letters and acknowledges one batch, in that order.
    async fn handle(
        &mut self,
        batch: Vec<Delivery>,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<(), HandleError> {
        self.stats
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats.redelivered.fetch_add(
            batch.iter().filter(|d| d.redelivered).count() as u64,
            Ordering::Relaxed,
        );
        let config = &self.sink.state().config;
        let settings = DecodeSettings {
            max_future: config.max_future(),
            body_limit: config.body_limit_bytes,
        };
        let now = Timestamp::from_datetime(Utc::now());
        let bytes: usize = batch.iter().map(|d| d.data.len()).sum();
        let stats = self.stats.clone();
        let _backlog = InBacklog::new(&stats, batch.len() as u64, bytes as u64);
        let (batch, prepared, readings) = if bytes > INLINE_DECODE_BYTES {
            tokio::task::spawn_blocking(move || {
                let (prepared, readings) = prepare_all(&batch, settings, now);
                (batch, prepared, readings)
            })
            .await
            .map_err(|_| HandleError::Stopped)?
        } else {
            let (prepared, readings) = prepare_all(&batch, settings, now);
            (batch, prepared, readings)
        };
        // Naive local times in messages without a `timezone` header: their wells' registry
        // zones apply (decoded again; only when some reading needs it).
        let (batch, prepared, readings) = self
            .sink
            .apply_registry_zones(
                (batch, prepared, readings),
                bytes > INLINE_DECODE_BYTES,
                move |delivery: &Delivery, p: &mut Prepared, zones, scratch| {
                    *p = prepare(delivery, settings, now, scratch, zones);
                },
            )
            .await
            .map_err(|_| HandleError::Stopped)?;
        let outcomes = self
            .sink
            .commit(readings, stopping)
            .await
            .map_err(|_| HandleError::Stopped)?;
        let received_at = now.to_rfc3339();
        let settles: Vec<Settle> = batch
            .iter()
            .zip(prepared)
            .map(|(delivery, prepared)| self.report(delivery, prepared, &outcomes, &received_at))
            .collect();
        self.settle(&batch, settles)
            .await
            .map_err(HandleError::Broker)
    }

    /// Counts a committed message; the headers of its dead letter when it has errors.
    fn report(
        &mut self,
        delivery: &Delivery,
        prepared: Prepared,
        outcomes: &[ReadingOutcome],
        received_at: &str,
    ) -> Settle {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let (code, message, report, details) = match prepared {
            Prepared::Decoded {
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
                espwatch_app::metrics::record_report(IngestPath::Amqp, &report);
                if report.rejected.is_empty() {
                    return Settle::Ack;
                }
                let total = report.total();
                let code = if report.rejected.len() == total {
                    "all_readings_rejected"
                } else {
                    "readings_rejected"
                };
                let message = format!(
                    "{} of {total} readings were rejected ({} stored, {} already stored); see {HEADER_REPORT} for the reasons",
                    report.rejected.len(),
                    report.accepted,
                    report.duplicates,
                );
                (code, message, report, Value::Null)
            }
            Prepared::Refused {
                code,
                message,
                details,
            } => {
                self.stats
                    .messages_malformed
                    .fetch_add(1, Ordering::Relaxed);
                espwatch_app::metrics::record_malformed(IngestPath::Amqp);
                (code, message, Default::default(), details)
            }
        };
        self.stats
            .messages_with_errors
            .fetch_add(1, Ordering::Relaxed);
        if self.log_limit.allow(delivery.routing_key.as_str()) {
            tracing::warn!(
                queue = %self.settings.queue,
                routing_key = %delivery.routing_key,
                code,
                error = %message,
                "AMQP message with errors, dead-lettered with the reasons (logged once per routing key per minute)"
            );
        }
        let rejected_count = report.rejected.len();
        let mut rejected = report.rejected;
        let truncated = rejected.len() > MAX_REPORTED_REJECTIONS;
        rejected.truncate(MAX_REPORTED_REJECTIONS);
        let mut warnings = report.warnings;
        warnings.truncate(MAX_REPORTED_REJECTIONS);
        let document = json!({
            "code": code,
            "message": message,
            "details": details,
            "accepted": report.accepted,
            "duplicates": report.duplicates,
            "rejected_count": rejected_count,
            "rejected": rejected,
            "truncated": truncated,
            "warnings": warnings,
        });
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(short(HEADER_ERROR_CODE), long(code));
        headers.insert(short(HEADER_ERROR), long(message));
        headers.insert(short(HEADER_REPORT), long(document.to_string()));
        headers.insert(
            short("x-espwatch-accepted"),
            AMQPValue::LongLongInt(report.accepted as i64),
        );
        headers.insert(
            short("x-espwatch-rejected"),
            AMQPValue::LongLongInt(rejected_count as i64),
        );
        headers.insert(short("x-espwatch-received-at"), long(received_at));
        headers.insert(
            short("x-espwatch-queue"),
            long(self.settings.queue.as_str()),
        );
        headers.insert(
            short("x-espwatch-original-exchange"),
            long(delivery.exchange.as_str()),
        );
        headers.insert(
            short("x-espwatch-original-routing-key"),
            long(delivery.routing_key.as_str()),
        );
        Settle::DeadLetter(headers)
    }

    /// Publishes the dead letters and waits for their confirms, rejects those not confirmed,
    /// then acknowledges everything else with one `basic.ack(multiple)`.
    async fn settle(&mut self, batch: &[Delivery], settles: Vec<Settle>) -> anyhow::Result<()> {
        let mut confirms = Vec::new();
        for (index, (delivery, settle)) in batch.iter().zip(settles).enumerate() {
            if let Settle::DeadLetter(headers) = settle {
                let properties = delivery
                    .properties
                    .clone()
                    .with_headers(headers)
                    .with_delivery_mode(2);
                let confirm = self
                    .publisher
                    .basic_publish(
                        short(&self.settings.dead_letter_exchange),
                        delivery.routing_key.clone(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &delivery.data,
                        properties,
                    )
                    .await
                    .context("publishing a dead letter")?;
                confirms.push((index, confirm));
            }
        }
        let mut rejected = vec![false; batch.len()];
        for (index, confirm) in confirms {
            let confirmed = match confirm.await {
                Ok(Confirmation::Ack(None)) => true,
                Ok(Confirmation::Ack(Some(returned))) => {
                    tracing::error!(
                        exchange = %self.settings.dead_letter_exchange,
                        reply = %returned.reply_text,
                        "AMQP dead letter unroutable; rejecting the message to the queue's dead-letter exchange instead"
                    );
                    false
                }
                Ok(other) => {
                    tracing::error!(confirmation = ?other, "AMQP dead letter not confirmed; rejecting the message instead");
                    false
                }
                Err(e) => return Err(anyhow::Error::new(e).context("dead letter confirm")),
            };
            if confirmed {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats
                    .dead_letter_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                batch[index]
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .context("basic.reject")?;
                rejected[index] = true;
            }
        }
        if let Some(last) = batch
            .iter()
            .zip(&rejected)
            .rev()
            .find(|(_, r)| !**r)
            .map(|(d, _)| d)
        {
            last.acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .context("basic.ack")?;
        }
        Ok(())
    }
}

enum HandleError {
    /// Stopping while the store could not commit: nothing was settled.
    Stopped,
    /// The channel or connection failed: the batch will be delivered again.
    Broker(anyhow::Error),
}

/// Decodes every message of a batch; the valid readings of all of them, in order.
fn prepare_all(
    batch: &[Delivery],
    settings: DecodeSettings,
    now: Timestamp,
) -> (Vec<Prepared>, Vec<Reading>) {
    let mut readings = Vec::new();
    let prepared = batch
        .iter()
        .map(|d| prepare(d, settings, now, &mut readings, &[]))
        .collect();
    (prepared, readings)
}

impl crate::sink::PreparedMessage for Prepared {
    fn items(&self) -> Option<&[Item]> {
        match self {
            Prepared::Decoded { items, .. } => Some(items),
            Prepared::Refused { .. } => None,
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
            Prepared::Refused { .. } => None,
        }
    }
}

/// A header's text (string headers only).
fn header_text(headers: Option<&FieldTable>, name: &str) -> Result<Option<String>, String> {
    let Some(value) = headers.and_then(|h| h.inner().get(name)) else {
        return Ok(None);
    };
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec())
            .map(Some)
            .map_err(|_| format!("the `{name}` header is not UTF-8")),
        AMQPValue::ShortString(s) => Ok(Some(s.as_str().to_owned())),
        _ => Err(format!("the `{name}` header must be a string")),
    }
}

fn prepare(
    delivery: &Delivery,
    settings: DecodeSettings,
    now: Timestamp,
    readings: &mut Vec<Reading>,
    zones: &[(WellId, UtcOffset)],
) -> Prepared {
    let refused = |code, message: String| Prepared::Refused {
        code,
        message,
        details: Value::Null,
    };
    let payload = &delivery.data;
    if payload.len() > settings.body_limit {
        return refused(
            "payload_too_large",
            format!(
                "the payload has {} bytes; at most {} are accepted (body_limit_bytes)",
                payload.len(),
                settings.body_limit
            ),
        );
    }
    let properties = &delivery.properties;
    if let Some(encoding) = properties.content_encoding()
        && !encoding.as_str().is_empty()
        && !encoding.as_str().eq_ignore_ascii_case("identity")
    {
        return refused(
            "unsupported_content_encoding",
            format!(
                "content_encoding {:?} is not supported; send the payload uncompressed",
                encoding.as_str()
            ),
        );
    }
    let (format, declared) = match properties.content_type() {
        Some(ct) if !ct.as_str().is_empty() => {
            match PayloadFormat::from_content_type(ct.as_str()) {
                Some(f) => (f, true),
                None => {
                    return refused(
                        "unsupported_media_type",
                        format!(
                            "content_type {:?} is not supported; send application/json, application/x-ndjson or text/csv",
                            ct.as_str()
                        ),
                    );
                }
            }
        }
        _ => (sniff(payload), false),
    };
    let headers = properties.headers().as_ref();
    let text = |name: &str| header_text(headers, name);
    let invalid = |e: String| refused("invalid_header", e);
    let well = match text("well_id") {
        Ok(None) => None,
        Ok(Some(w)) => match WellId::parse_new(&w) {
            Ok(id) => Some(id),
            Err(e) => return invalid(format!("the `well_id` header is not a valid well id: {e}")),
        },
        Err(e) => return invalid(e),
    };
    let zone = match text("timezone") {
        Ok(None) => None,
        Ok(Some(z)) => match UtcOffset::parse(&z) {
            Ok(z) => Some(z),
            Err(e) => return invalid(format!("the `timezone` header: {e}")),
        },
        Err(e) => return invalid(e),
    };
    let mut csv = CsvDialect::default();
    match text("csv_separator") {
        Ok(None) => {}
        Ok(Some(s)) => match CsvDialect::parse_separator(&s) {
            Ok(sep) => csv.separator = sep,
            Err(e) => return invalid(format!("the `csv_separator` header: {e}")),
        },
        Err(e) => return invalid(e),
    }
    match text("decimal") {
        Ok(None) => {}
        Ok(Some(d)) => match CsvDialect::parse_decimal(&d) {
            Ok(comma) => csv.decimal_comma = comma,
            Err(e) => return invalid(format!("the `decimal` header: {e}")),
        },
        Err(e) => return invalid(e),
    }
    let opts = DecodeOptions {
        now,
        max_future: settings.max_future,
        max_readings: DecodeOptions::DEFAULT_MAX_READINGS,
        well,
        zone,
        csv,
    };
    let decode = |opts: &DecodeOptions| {
        if declared {
            ingest::decode(format, payload, opts)
        } else {
            decode_as(payload, format, opts)
        }
    };
    let decoded = decode(&opts).and_then(|mut decoded| {
        ingest::apply_well_zones_with(&opts, &mut decoded, zones, decode)?;
        Ok(decoded)
    });
    match decoded {
        Ok(decoded) => {
            let first = readings.len();
            readings.extend(decoded.items.iter().filter_map(|i| i.valid().cloned()));
            Prepared::Decoded {
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
            code: "malformed_payload",
            message: format!("the payload cannot be parsed: {e}"),
            details: serde_json::to_value(&e).unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_hide_the_password() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:<redacted>@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    #[test]
    fn string_headers_only() {
        let mut h = FieldTable::default();
        h.insert(short("well_id"), long("ESP-1"));
        h.insert(short("n"), AMQPValue::LongLongInt(3));
        assert_eq!(header_text(Some(&h), "well_id"), Ok(Some("ESP-1".into())));
        assert_eq!(header_text(Some(&h), "other"), Ok(None));
        assert!(header_text(Some(&h), "n").is_err());
        assert_eq!(header_text(None, "well_id"), Ok(None));
    }
}
