//! `espwatch-bench broker-load`: sustained overload of a running `espwatch serve` through its
//! MQTT or AMQP ingest (issue 17), from a separate process, so the server's memory is its own
//! (read from `/proc/PID/status`).
//!
//! First the sustainable rate through the broker is measured with a closed loop (publish while
//! fewer than `--window` messages are published and not yet committed, as the server's
//! `/health/ready` counts them), then `--times` that rate is offered open loop for
//! `--duration`: messages on a fixed schedule whatever the server does, as field gateways
//! publish. The broker takes what espwatch cannot commit yet; espwatch holds a bounded
//! backlog. After the offered load the run waits until every message the broker acknowledged
//! to the publisher (MQTT PUBACK, AMQP publisher confirm) is committed (the recovery time),
//! then reads every well back: each acknowledged reading must be stored.
//!
//! Message `m` carries `--batch` readings of well `m % wells`, one second apart, so every
//! reading has its own `(well, ts)`. A reading stored twice (a re-delivery) is a duplicate and
//! harmless; one missing is a loss.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use espwatch_core::{Field, Timestamp};
use serde_json::Value;

use super::offered::{LoadDurations, OfferedLoad, now_secs, secs_arg};
use super::{median, synthetic};

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Mqtt,
    Amqp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Amqp => "amqp",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BrokerLoadArgs {
    /// Which ingest to load.
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// The running server, e.g. `http://127.0.0.1:8080` (its `/health/ready` is read for
    /// progress; telemetry is read back with `--read-key`).
    #[arg(long)]
    pub url: String,
    /// The broker the server consumes from (`mqtt://host:port`, `amqp://user:pass@host/vhost`).
    #[arg(long)]
    pub broker: String,
    /// MQTT: the server's topic filter is `<topic-prefix>/+/telemetry`.
    #[arg(long, default_value = "espwatch")]
    pub topic_prefix: String,
    /// AMQP: the server's queue (messages go through the default exchange straight to it).
    #[arg(long, default_value = "espwatch.telemetry")]
    pub queue: String,
    /// A key that may read telemetry, for the check afterwards.
    #[arg(long, env = "ESPWATCH_BENCH_READ_KEY", hide_env_values = true)]
    pub read_key: String,
    #[command(flatten)]
    pub load: OfferedLoad,
    /// The broker's process id (optional): its RSS is sampled too.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Readings per message (one well's JSON array).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Closed loop: most messages published and not yet committed.
    #[arg(long, default_value_t = 2_048)]
    pub window: u64,
    /// Longest wait, after the offered load, for every acknowledged message to be committed.
    #[arg(long, default_value = "30m")]
    pub recovery_timeout: String,
}

/// Value sets per well, used in turn (rendered once: the publisher's CPU is the server's too).
const VARIANTS: usize = 16;

/// What the publisher knows.
struct Plan {
    wells: usize,
    batch: usize,
    well_ids: Vec<String>,
    /// `,"channel":value,...` per well and variant.
    values: Vec<String>,
    base_secs: i64,
    /// Steps (seconds) a well may take before its readings would reach the present.
    max_steps: u64,
}

impl Plan {
    /// Message `m`: its well and JSON body.
    fn message(&self, m: u64) -> anyhow::Result<(usize, Vec<u8>)> {
        let well = (m % self.wells as u64) as usize;
        let step0 = (m / self.wells as u64) * self.batch as u64;
        if step0 + self.batch as u64 > self.max_steps {
            bail!(
                "message {m} would carry readings after now: raise --start-ago or --wells, or lower --batch"
            );
        }
        let mut out = String::with_capacity(self.batch * 300 + 2);
        out.push('[');
        for step in step0..step0 + self.batch as u64 {
            if step > step0 {
                out.push(',');
            }
            let ts = Timestamp::from_secs(self.base_secs + step as i64);
            let _ = write!(out, "{{\"ts\":\"{}\"", ts.to_rfc3339());
            out.push_str(&self.values[well * VARIANTS + (step as usize % VARIANTS)]);
            out.push('}');
        }
        out.push(']');
        Ok((well, out.into_bytes()))
    }
}

/// Messages acknowledged by the broker to the publisher (one bit each).
#[derive(Default)]
struct Acked {
    bits: Mutex<Vec<u64>>,
    count: AtomicU64,
}

impl Acked {
    fn mark(&self, m: u64) {
        let mut bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        let word = (m / 64) as usize;
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << (m % 64)) == 0 {
            bits[word] |= 1 << (m % 64);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_set(bits: &[u64], m: u64) -> bool {
        bits.get((m / 64) as usize)
            .is_some_and(|w| w & (1 << (m % 64)) != 0)
    }
}

/// A publisher to the broker: `send` returns once the message is handed over (waiting while
/// the client's own window is full); acknowledgements are marked in `acked` as they come.
enum Publisher {
    Mqtt {
        client: rumqttc::AsyncClient,
        /// Message numbers handed to the client and not yet given a packet id (FIFO: the
        /// client sends its requests in order).
        pending: Arc<Mutex<VecDeque<u64>>>,
        driver: tokio::task::JoinHandle<anyhow::Result<()>>,
        failed: Arc<AtomicBool>,
    },
    Amqp {
        // Boxed: the connection is most of the enum's size.
        connection: Box<lapin::Connection>,
        channel: lapin::Channel,
        confirms: tokio::sync::mpsc::Sender<(u64, lapin::PublisherConfirm)>,
        confirmer: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Publisher {
    async fn connect(
        args: &BrokerLoadArgs,
        prefix: &str,
        acked: Arc<Acked>,
    ) -> anyhow::Result<Publisher> {
        match args.transport {
            Transport::Mqtt => {
                use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
                let broker = espwatch_app::config::BrokerUrl::parse(&args.broker)
                    .map_err(anyhow::Error::msg)?;
                let mut options =
                    MqttOptions::new(format!("{prefix}-gateway"), broker.host, broker.port);
                options
                    .set_keep_alive(Duration::from_secs(30))
                    .set_inflight(1_000)
                    .set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
                let (client, mut eventloop) = AsyncClient::new(options, 1_000);
                let pending: Arc<Mutex<VecDeque<u64>>> = Arc::default();
                let failed = Arc::new(AtomicBool::new(false));
                let driver = {
                    let (pending, failed) = (pending.clone(), failed.clone());
                    tokio::spawn(async move {
                        let mut in_flight: HashMap<u16, u64> = HashMap::new();
                        loop {
                            match eventloop.poll().await {
                                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                                    let m = pending
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .pop_front();
                                    if let Some(m) = m {
                                        in_flight.insert(pkid, m);
                                    }
                                }
                                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                                    if let Some(m) = in_flight.remove(&ack.pkid) {
                                        acked.mark(m);
                                    }
                                }
                                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                                Ok(_) => {}
                                Err(e) => {
                                    // A reconnection would re-send with new bookkeeping: the
                                    // run is void rather than miscounted.
                                    failed.store(true, Ordering::Relaxed);
                                    return Err(anyhow::anyhow!("MQTT publisher: {e}"));
                                }
                            }
                        }
                    })
                };
                Ok(Publisher::Mqtt {
                    client,
                    pending,
                    driver,
                    failed,
                })
            }
            Transport::Amqp => {
                use lapin::options::ConfirmSelectOptions;
                let connection = lapin::Connection::connect(
                    &args.broker,
                    lapin::ConnectionProperties::default(),
                )
                .await
                .context("AMQP publisher")?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                // A bounded window of unconfirmed messages, as a gateway would keep.
                let (confirms, mut rx) =
                    tokio::sync::mpsc::channel::<(u64, lapin::PublisherConfirm)>(1_000);
                let confirmer = tokio::spawn(async move {
                    while let Some((m, confirm)) = rx.recv().await {
                        let confirm = confirm.await?;
                        if confirm.is_ack() {
                            acked.mark(m);
                        }
                    }
                    anyhow::Ok(())
                });
                Ok(Publisher::Amqp {
                    connection: Box::new(connection),
                    channel,
                    confirms,
                    confirmer,
                })
            }
        }
    }

    async fn send(
        &self,
        m: u64,
        well: &str,
        body: Vec<u8>,
        args: &BrokerLoadArgs,
    ) -> anyhow::Result<()> {
        match self {
            Publisher::Mqtt {
                client,
                pending,
                failed,
                ..
            } => {
                if failed.load(Ordering::Relaxed) {
                    bail!("the MQTT publisher's connection failed");
                }
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(m);
                client
                    .publish(
                        format!("{}/{well}/telemetry", args.topic_prefix),
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        body,
                    )
                    .await?;
            }
            Publisher::Amqp {
                channel, confirms, ..
            } => {
                use lapin::options::BasicPublishOptions;
                use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
                let mut headers = FieldTable::default();
                headers.insert(
                    ShortString::from("well_id"),
                    AMQPValue::LongString(LongString::from(well.as_bytes().to_vec())),
                );
                let properties = lapin::BasicProperties::default()
                    .with_content_type(ShortString::from("application/json"))
                    .with_delivery_mode(2)
                    .with_headers(headers);
                let confirm = channel
                    .basic_publish(
                        ShortString::from(""),
                        ShortString::from(args.queue.as_str()),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await?;
                confirms
                    .send((m, confirm))
                    .await
                    .map_err(|_| anyhow::anyhow!("the AMQP confirmer stopped"))?;
            }
        }
        Ok(())
    }

    /// Waits for the outstanding acknowledgements (at most `wait`), then disconnects.
    async fn finish(self, acked: &Acked, published: u64, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        while acked.count.load(Ordering::Relaxed) < published && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match self {
            Publisher::Mqtt { client, driver, .. } => {
                let _ = client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
            }
            Publisher::Amqp {
                connection,
                confirms,
                confirmer,
                ..
            } => {
                drop(confirms);
                let _ = tokio::time::timeout(Duration::from_secs(5), confirmer).await;
                let _ = connection
                    .close(200, lapin::types::ShortString::from("done"))
                    .await;
            }
        }
        Ok(())
    }
}

/// The server's `checks.<transport>`.
async fn ingest_status(http: &reqwest::Client, url: &str, transport: Transport) -> Value {
    match http.get(format!("{url}/health/ready")).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .map(|v| v["checks"][transport.name()].clone())
            .unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

/// Readings stored by the server's broker ingest. Every reading published is new, so this
/// counts each once; re-delivered ones are duplicates, not counted here.
fn accepted(status: &Value) -> u64 {
    status["readings_accepted"].as_u64().unwrap_or(0)
}

/// Resident and peak resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Highs seen while sampling.
#[derive(Default)]
struct Highs {
    /// Messages acknowledged by the broker and not yet committed by espwatch (in the broker
    /// or in espwatch's backlog).
    outstanding_messages: u64,
    /// espwatch's in-memory backlog (messages).
    backlog_messages: u64,
    backlog_bytes: u64,
    /// AMQP: messages ready in the queue, as espwatch samples it.
    queue_ready: u64,
    server_rss_mib: f64,
    broker_rss_mib: f64,
}

/// One quarter second of the run.
struct Sample {
    status: Value,
    acked_messages: u64,
    /// Messages whose readings are stored (since the start of the bench).
    stored_messages: u64,
    server_rss_mib: Option<f64>,
    broker_rss_mib: Option<f64>,
}

impl Highs {
    fn sample(&mut self, sample: &Sample) {
        let status = &sample.status;
        self.outstanding_messages = self
            .outstanding_messages
            .max(sample.acked_messages.saturating_sub(sample.stored_messages));
        let backlog = &status["backlog"];
        self.backlog_messages = self
            .backlog_messages
            .max(backlog["messages"].as_u64().unwrap_or(0));
        self.backlog_bytes = self
            .backlog_bytes
            .max(backlog["bytes"].as_u64().unwrap_or(0));
        self.queue_ready = self
            .queue_ready
            .max(backlog["queue_ready"].as_u64().unwrap_or(0));
        if let Some(rss) = sample.server_rss_mib {
            self.server_rss_mib = self.server_rss_mib.max(rss);
        }
        if let Some(rss) = sample.broker_rss_mib {
            self.broker_rss_mib = self.broker_rss_mib.max(rss);
        }
    }
}

pub async fn run(args: &BrokerLoadArgs) -> anyhow::Result<()> {
    if args.load.wells == 0 || args.batch == 0 || args.window == 0 {
        bail!("--wells, --batch and --window must be positive");
    }
    let LoadDurations {
        duration,
        calibrate,
        report_every,
        start_ago,
    } = args.load.durations()?;
    let recovery_timeout = secs_arg("recovery-timeout", &args.recovery_timeout)?;
    let now_secs = now_secs();
    let url = args.url.trim_end_matches('/').to_owned();
    let prefix = args.load.prefix_or("BRK", now_secs);
    let plan = Arc::new(Plan {
        wells: args.load.wells,
        batch: args.batch,
        well_ids: (0..args.load.wells)
            .map(|w| format!("{prefix}-{w:04}"))
            .collect(),
        values: (0..args.load.wells)
            .flat_map(|well| {
                (0..VARIANTS).map(move |step| {
                    let mut text = String::new();
                    for (f, v) in synthetic(well, step as u64).iter() {
                        let _ = write!(text, ",\"{}\":{v}", f.name());
                    }
                    text
                })
            })
            .collect(),
        base_secs: now_secs - start_ago.as_secs() as i64,
        max_steps: start_ago.as_secs().saturating_sub(60),
    });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    // Consuming: subscribed (MQTT) or consumers registered (AMQP).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = ingest_status(&http, &url, args.transport).await;
        let ready = match args.transport {
            Transport::Mqtt => status["subscribed"] == true,
            Transport::Amqp => status["consumers"].as_u64().unwrap_or(0) > 0,
        };
        if ready {
            break status;
        }
        if Instant::now() > deadline {
            bail!(
                "the server at {url} does not consume from its {} broker: {status}",
                args.transport.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let accepted_before = accepted(&status);
    let rss_at_start = args.load.pid.and_then(rss_mib);
    println!(
        "{} overload on {url}: {} wells {prefix}, {} readings per message, server pid {}, RSS at start {}",
        args.transport.name(),
        args.load.wells,
        args.batch,
        args.load.pid.map_or("-".into(), |p| p.to_string()),
        rss_at_start.map_or("-".into(), |(r, _)| format!("{r:.0} MiB"))
    );
    let acked = Arc::new(Acked::default());
    let publisher = Publisher::connect(args, &prefix, acked.clone()).await?;
    let mut next: u64 = 0;

    // Closed loop: the sustainable rate through the broker.
    let rate = match args.load.rate {
        Some(rate) if rate > 0.0 => rate,
        Some(_) => bail!("--rate must be positive"),
        None => {
            let started = Instant::now();
            let warm = started + calibrate / 4;
            let end = started + calibrate;
            let mut counted_from: Option<(Instant, u64)> = None;
            let mut status = ingest_status(&http, &url, args.transport).await;
            let mut polled = Instant::now();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if counted_from.is_none() && now >= warm {
                    status = ingest_status(&http, &url, args.transport).await;
                    counted_from = Some((Instant::now(), accepted(&status)));
                }
                // Messages whose readings are all stored.
                let stored = accepted(&status).saturating_sub(accepted_before) / args.batch as u64;
                if next.saturating_sub(stored) < args.window {
                    let (well, body) = plan.message(next)?;
                    publisher
                        .send(next, &plan.well_ids[well], body, args)
                        .await?;
                    next += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if polled.elapsed() >= Duration::from_millis(50) {
                    status = ingest_status(&http, &url, args.transport).await;
                    polled = Instant::now();
                }
            }
            let status = ingest_status(&http, &url, args.transport).await;
            let (from, base) = counted_from.context("calibration too short")?;
            let sustainable =
                accepted(&status).saturating_sub(base) as f64 / from.elapsed().as_secs_f64();
            if sustainable <= 0.0 {
                bail!("nothing was committed while measuring the sustainable rate: {status}");
            }
            println!(
                "sustainable (closed loop, at most {} messages outstanding, {:.0} s, first quarter not counted): {sustainable:.0} readings/s",
                args.window,
                calibrate.as_secs_f64()
            );
            println!("RESULT sustainable_readings_per_s={sustainable:.0}");
            sustainable * args.load.times
        }
    };
    let planned = next + (rate * duration.as_secs_f64() / args.batch as f64).ceil() as u64;
    let steps = planned.div_ceil(args.load.wells as u64) * args.batch as u64;
    if steps > plan.max_steps {
        bail!(
            "{planned} messages need {steps} s of readings per well, more than --start-ago allows; raise it or --wells"
        );
    }
    // Let calibration's messages drain first, so the run starts from an empty backlog.
    let deadline = Instant::now() + recovery_timeout;
    loop {
        let status = ingest_status(&http, &url, args.transport).await;
        let stored = accepted(&status).saturating_sub(accepted_before);
        let acked_now = acked.count.load(Ordering::Relaxed);
        if acked_now >= next && stored >= acked_now * args.batch as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("calibration's messages were not all committed: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Open loop: `rate` for `duration`.
    let per_second = rate / args.batch as f64;
    println!(
        "offering {rate:.0} readings/s ({per_second:.0} messages/s) open loop for {:.0} s",
        duration.as_secs_f64()
    );
    let first = next;
    let mut highs = Highs::default();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (http, url, stop, acked) = (
            http.clone(),
            url.clone(),
            sampler_stop.clone(),
            acked.clone(),
        );
        let transport = args.transport;
        let (pid, broker_pid) = (args.load.pid, args.broker_pid);
        let batch = args.batch as u64;
        tokio::spawn(async move {
            let mut samples: Vec<Sample> = Vec::new();
            let started = Instant::now();
            let mut last_report = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let status = ingest_status(&http, &url, transport).await;
                let rss = pid.and_then(rss_mib).map(|(r, _)| r);
                let broker_rss = broker_pid.and_then(rss_mib).map(|(r, _)| r);
                let acked_now = acked.count.load(Ordering::Relaxed);
                if last_report.elapsed() >= report_every {
                    last_report = Instant::now();
                    println!(
                        "{:>6.0} s: broker acknowledged {acked_now} messages, espwatch stored {} (settled {}), backlog in memory {} messages / {} bytes{}, server RSS {}{}",
                        started.elapsed().as_secs_f64(),
                        accepted(&status).saturating_sub(accepted_before) / batch,
                        status["messages"],
                        status["backlog"]["messages"],
                        status["backlog"]["bytes"],
                        match transport {
                            Transport::Amqp =>
                                format!(", queue ready {}", status["backlog"]["queue_ready"]),
                            Transport::Mqtt =>
                                format!(", deferred {}", status["backlog"]["deferred"]),
                        },
                        rss.map_or("-".into(), |r| format!("{r:.0} MiB")),
                        broker_rss.map_or(String::new(), |r| format!(", broker RSS {r:.0} MiB")),
                    );
                }
                samples.push(Sample {
                    stored_messages: accepted(&status).saturating_sub(accepted_before) / batch,
                    status,
                    acked_messages: acked_now,
                    server_rss_mib: rss,
                    broker_rss_mib: broker_rss,
                });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        })
    };
    let started = Instant::now();
    let end = started + duration;
    let mut behind_max = Duration::ZERO;
    while Instant::now() < end {
        let due = first + (started.elapsed().as_secs_f64() * per_second) as u64;
        while next < due && Instant::now() < end {
            let (well, body) = plan.message(next)?;
            publisher
                .send(next, &plan.well_ids[well], body, args)
                .await?;
            next += 1;
        }
        let on_time = started + Duration::from_secs_f64((next - first) as f64 / per_second);
        behind_max = behind_max.max(Instant::now().saturating_duration_since(on_time));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let published = next - first;
    let publishing = started.elapsed();
    // Every message handed over is acknowledged by the broker, or the run says how many were not.
    let total_messages = next;
    publisher
        .finish(&acked, total_messages, Duration::from_secs(120))
        .await?;
    let acked_in_run = acked.count.load(Ordering::Relaxed);
    let load_ended = started.elapsed();
    println!(
        "published {published} messages in {:.1} s ({:.0} readings/s achieved, {:.0} offered; most behind schedule {:.2} s); broker acknowledged {} of {total_messages} (calibration included) {:.1} s after the start",
        publishing.as_secs_f64(),
        published as f64 * args.batch as f64 / publishing.as_secs_f64(),
        rate,
        behind_max.as_secs_f64(),
        acked_in_run,
        load_ended.as_secs_f64()
    );

    // Recovery: until every acknowledged reading is committed and the backlog is empty.
    let acked_readings = acked_in_run * args.batch as u64;
    let recovery_deadline = Instant::now() + recovery_timeout;
    let recovered = loop {
        let status = ingest_status(&http, &url, args.transport).await;
        // Every acknowledged reading stored (accepted counts each reading once).
        let done = accepted(&status).saturating_sub(accepted_before) >= acked_readings
            && status["backlog"]["messages"] == 0
            && (args.transport == Transport::Mqtt || status["backlog"]["queue_ready"] == 0);
        if done {
            break Some(started.elapsed());
        }
        if Instant::now() > recovery_deadline {
            println!("not recovered within --recovery-timeout: {status}");
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sampler_stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    for sample in &samples {
        highs.sample(sample);
    }
    let final_status = ingest_status(&http, &url, args.transport).await;
    let mut rss_values: Vec<f64> = samples.iter().filter_map(|s| s.server_rss_mib).collect();
    let peak = args.load.pid.and_then(rss_mib).map(|(_, hwm)| hwm);
    let broker_peak = args.broker_pid.and_then(rss_mib).map(|(_, hwm)| hwm);
    let recovery = recovered.map(|at| at.saturating_sub(duration));
    println!("--- summary ---");
    println!(
        "offered {rate:.0} readings/s for {:.0} s through {}; {} readings per message, {} wells",
        duration.as_secs_f64(),
        args.transport.name(),
        args.batch,
        args.load.wells
    );
    println!(
        "espwatch: in-memory backlog high-water {} messages / {} bytes (its own peak: {} messages), {}; messages acknowledged by the broker and not yet committed, high-water {}",
        highs.backlog_messages,
        highs.backlog_bytes,
        final_status["backlog"]["peak_messages"],
        match args.transport {
            Transport::Amqp => format!("queue ready high-water {}", highs.queue_ready),
            Transport::Mqtt => format!(
                "deferred {} (re-sent after {} reconnections), received {} of which {} marked DUP",
                final_status["backlog"]["deferred"],
                final_status["backlog"]["redelivery_reconnects"],
                final_status["received"],
                final_status["redelivered"]
            ),
        },
        highs.outstanding_messages
    );
    println!(
        "recovery: {} after the offered load ended",
        recovery.map_or("not reached".into(), |r| format!(
            "every acknowledged reading committed {:.1} s",
            r.as_secs_f64()
        ))
    );
    if args.load.pid.is_some() {
        println!(
            "server RSS: start {}, median {:.0} MiB, max sampled {:.0} MiB, peak (VmHWM) {}",
            rss_at_start.map_or("-".into(), |(r, _)| format!("{r:.0} MiB")),
            median(&mut rss_values),
            highs.server_rss_mib,
            peak.map_or("-".into(), |r| format!("{r:.0} MiB"))
        );
    }
    if args.broker_pid.is_some() {
        println!(
            "broker RSS: max sampled {:.0} MiB, peak (VmHWM) {}",
            highs.broker_rss_mib,
            broker_peak.map_or("-".into(), |r| format!("{r:.0} MiB"))
        );
    }

    // Every acknowledged reading stored?
    let (acked_checked, missing, stored) = verify(&http, &url, args, &plan, &acked, next).await?;
    println!(
        "RESULT transport={} offered_readings_per_s={rate:.0} achieved_readings_per_s={:.0} acked_readings={} verified_acked={acked_checked} missing={missing} stored={stored} backlog_hw_messages={} backlog_hw_bytes={} outstanding_hw_messages={} queue_ready_hw={} rss_start_mib={} rss_peak_mib={} broker_rss_peak_mib={} recovery_s={}",
        args.transport.name(),
        published as f64 * args.batch as f64 / publishing.as_secs_f64(),
        acked_readings,
        highs.backlog_messages,
        highs.backlog_bytes,
        highs.outstanding_messages,
        highs.queue_ready,
        rss_at_start.map_or("-".into(), |(r, _)| format!("{r:.0}")),
        peak.map_or("-".into(), |p| format!("{p:.0}")),
        broker_peak.map_or("-".into(), |p| format!("{p:.0}")),
        recovery.map_or("-".into(), |r| format!("{:.1}", r.as_secs_f64())),
    );
    if missing > 0 {
        bail!("{missing} acknowledged readings are not stored");
    }
    if recovery.is_none() {
        bail!("the backlog was not drained within --recovery-timeout");
    }
    Ok(())
}

/// Reads every well back: (acknowledged readings checked, missing, stored).
async fn verify(
    http: &reqwest::Client,
    url: &str,
    args: &BrokerLoadArgs,
    plan: &Plan,
    acked: &Acked,
    messages: u64,
) -> anyhow::Result<(u64, u64, u64)> {
    let started = Instant::now();
    let bits = acked.bits.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let steps = messages.div_ceil(plan.wells as u64) * plan.batch as u64;
    let from = Timestamp::from_secs(plan.base_secs).to_rfc3339();
    let to = Timestamp::from_secs(plan.base_secs + steps as i64 + 1).to_rfc3339();
    let (mut checked, mut missing, mut stored) = (0u64, 0u64, 0u64);
    let mut examples = Vec::new();
    for well in 0..plan.wells {
        let response = http
            .get(format!(
                "{url}/api/v1/wells/{}/telemetry?from={from}&to={to}&fields={}&max_points=1000000",
                plan.well_ids[well],
                Field::MotorCurrentA.name()
            ))
            .header("authorization", format!("Bearer {}", args.read_key))
            .send()
            .await?;
        let status = response.status();
        let present: std::collections::HashSet<u64> = if status == 404 {
            Default::default()
        } else {
            let body: Value = response.json().await?;
            if !status.is_success() || body["downsampled"] != false {
                bail!("reading well {well} back: {status} {body}");
            }
            let mut present = std::collections::HashSet::new();
            for ts in body["ts"].as_array().context("ts")? {
                let t = Timestamp::parse_rfc3339(ts.as_str().context("ts")?)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                present.insert((t.micros() / 1_000_000 - plan.base_secs) as u64);
            }
            present
        };
        stored += present.len() as u64;
        let mut m = well as u64;
        while m < messages {
            if Acked::is_set(&bits, m) {
                let step0 = (m / plan.wells as u64) * plan.batch as u64;
                for step in step0..step0 + plan.batch as u64 {
                    checked += 1;
                    if !present.contains(&step) {
                        missing += 1;
                        if examples.len() < 5 {
                            examples.push(format!("{} step {step}", plan.well_ids[well]));
                        }
                    }
                }
            }
            m += plan.wells as u64;
        }
    }
    println!(
        "verify: {checked} acknowledged readings, {missing} missing{}; {stored} stored; {:.1} s",
        if examples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {examples:?})")
        },
        started.elapsed().as_secs_f64()
    );
    Ok((checked, missing, stored))
}
