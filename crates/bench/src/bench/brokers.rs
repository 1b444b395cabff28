//! `espwatch-bench amqp` / `espwatch-bench mqtt`: durable ingest throughput through a real
//! broker. Each run starts the field ingest in-process on a fresh embedded store (as `serve`
//! does: decode, one append per batch, acknowledge after commit), publishes `--readings`
//! readings in messages of `--batch` readings (JSON arrays, one well per message, spread over
//! `--wells`), and times from the first publish until the ingest reports every reading
//! committed. Reports readings/s per run and the median.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use espwatch_app::Config;
use espwatch_core::Timestamp;
use espwatch_server::AppState;
use espwatch_store::{EmbeddedOptions, EmbeddedStore};
use serde_json::{Value, json};

use super::median;

#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// The broker (default: the local RabbitMQ for `amqp`, Mosquitto for `mqtt`).
    #[arg(long)]
    pub url: Option<String>,
    /// Readings per run.
    #[arg(long, default_value_t = 200_000)]
    pub readings: usize,
    /// Readings per message.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Wells the messages are spread over.
    #[arg(long, default_value_t = 100)]
    pub wells: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Amqp,
    Mqtt,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Amqp => "amqp",
            Protocol::Mqtt => "mqtt",
        }
    }
}

pub async fn run(protocol: Protocol, args: &BrokerArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.readings < args.batch || args.wells == 0 || args.runs == 0 {
        bail!("--batch, --wells and --runs must be at least 1, --readings at least --batch");
    }
    let url = args.url.clone().unwrap_or_else(|| match protocol {
        Protocol::Amqp => "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        Protocol::Mqtt => "mqtt://127.0.0.1:1883".into(),
    });
    let messages = messages(args);
    let total: usize = args.readings / args.batch * args.batch;
    println!(
        "{}: {total} readings in {} messages of {} readings ({} wells), {} run(s), broker {}",
        protocol.name(),
        messages.len(),
        args.batch,
        args.wells,
        args.runs,
        redact(&url)
    );
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let (elapsed, published) = once(protocol, &url, &messages, total).await?;
        let rate = total as f64 / elapsed.as_secs_f64();
        println!(
            "  run {run}: {rate:>9.0} readings/s ({:.2} s; all published after {:.2} s)",
            elapsed.as_secs_f64(),
            published.as_secs_f64()
        );
        rates.push(rate);
    }
    println!(
        "{} median: {:.0} readings/s durable",
        protocol.name(),
        median(&mut rates)
    );
    Ok(())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<credentials>{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// (well, JSON body) of every message; each well's readings 10 s apart.
fn messages(args: &BrokerArgs) -> Vec<(String, Vec<u8>)> {
    let start = Timestamp::from_secs(1_767_225_600).0;
    let count = args.readings / args.batch;
    (0..count)
        .map(|m| {
            let well = m % args.wells;
            let round = (m / args.wells) * args.batch;
            let readings: Vec<Value> = (0..args.batch)
                .map(|i| {
                    let step = (round + i) as i64;
                    let wobble = ((step * 7919 + well as i64 * 31) % 100) as f64 / 100.0;
                    json!({
                        "ts": Timestamp(start + step * 10_000_000).to_rfc3339(),
                        "motor_current_a": 40.0 + wobble,
                        "frequency_hz": 55.0,
                        "intake_pressure_psi": 850.0 - wobble,
                        "discharge_pressure_psi": 2400.0 + wobble,
                        "motor_temp_c": 120.0 + wobble,
                    })
                })
                .collect();
            (
                format!("BENCH-{well:05}"),
                Value::Array(readings).to_string().into_bytes(),
            )
        })
        .collect()
}

/// One run: (time until all committed, time until all published).
async fn once(
    protocol: Protocol,
    url: &str,
    messages: &[(String, Vec<u8>)],
    total: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn espwatch_store::Store> =
        Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?);
    let security: Arc<dyn espwatch_store::SecurityStore> =
        Arc::new(espwatch_store::EmbeddedSecurityStore::open(dir.path())?);
    let prefix = format!(
        "espwatch-bench-{}",
        espwatch_app::keys::random_token(8)?.to_lowercase()
    )
    .replace(['+', '/', '#', '_'], "x");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        jwt_secret: Some(espwatch_app::SecretString(
            espwatch_app::keys::random_token(48)?,
        )),
        ..Config::default()
    };
    match protocol {
        Protocol::Amqp => {
            config.amqp_url = Some(url.to_owned());
            config.amqp_queue = format!("{prefix}.telemetry");
            config.amqp_exchange = String::new();
            config.amqp_dead_letter_exchange = format!("{prefix}.dlx");
            config.amqp_dead_letter_queue = format!("{prefix}.dead");
        }
        Protocol::Mqtt => {
            config.mqtt_url = Some(url.to_owned());
            config.mqtt_topic = format!("{prefix}/+/telemetry");
            config.mqtt_error_topic = format!("{prefix}/{{well}}/errors");
            config.mqtt_client_id = format!("{prefix}-server");
        }
    }
    let state = AppState::new(store, config.clone(), security)?;
    let field = espwatch_field::FieldIngest::start(&state)?;
    let status = |state: &AppState| -> Value {
        state
            .components
            .statuses()
            .into_iter()
            .find(|(n, _)| n == protocol.name())
            .map(|(_, v)| v)
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&state);
        let ready = match protocol {
            Protocol::Amqp => s["consumers"].as_u64().unwrap_or(0) > 0,
            Protocol::Mqtt => s["subscribed"] == json!(true),
        };
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the {} ingest did not start: {s}", protocol.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let publisher = {
        let messages = messages.to_vec();
        let url = url.to_owned();
        let prefix = prefix.clone();
        let queue = config.amqp_queue.clone();
        tokio::spawn(async move {
            match protocol {
                Protocol::Amqp => publish_amqp(&url, &queue, &messages).await,
                Protocol::Mqtt => publish_mqtt(&url, &prefix, &messages).await,
            }
            .map(|()| started.elapsed())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let elapsed = loop {
        let s = status(&state);
        let done = s["readings_accepted"].as_u64().unwrap_or(0)
            + s["readings_duplicate"].as_u64().unwrap_or(0);
        if done >= total as u64 {
            break started.elapsed();
        }
        if Instant::now() > deadline || publisher.is_finished() && s["connected"] == json!(false) {
            bail!("{} ingest stalled: {s}", protocol.name());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let published = publisher.await.context("publisher")??;
    field.stop().await;
    if protocol == Protocol::Amqp {
        delete_queues(url, &config).await;
    }
    Ok((elapsed, published))
}

async fn publish_amqp(
    url: &str,
    queue: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .context("bench publisher")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut confirms = std::collections::VecDeque::new();
    for (well, body) in messages {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("well_id"),
            AMQPValue::LongString(LongString::from(well.as_bytes().to_vec())),
        );
        let properties = lapin::BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_headers(headers);
        confirms.push_back(
            channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?,
        );
        // A bounded window of unconfirmed messages, as a gateway would keep.
        while confirms.len() > 256 {
            let confirm = confirms.pop_front().expect("non-empty").await?;
            if !confirm.is_ack() {
                bail!("the broker did not confirm a message: {confirm:?}");
            }
        }
    }
    for confirm in confirms {
        let confirm = confirm.await?;
        if !confirm.is_ack() {
            bail!("the broker did not confirm a message: {confirm:?}");
        }
    }
    let _ = connection.close(200, ShortString::from("done")).await;
    Ok(())
}

async fn publish_mqtt(
    url: &str,
    prefix: &str,
    messages: &[(String, Vec<u8>)],
) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let broker = espwatch_app::config::BrokerUrl::parse(url).map_err(anyhow::Error::msg)?;
    let mut options = MqttOptions::new(format!("{prefix}-gateway"), broker.host, broker.port);
    options
        .set_keep_alive(Duration::from_secs(20))
        .set_max_packet_size(64 * 1024 * 1024, 64 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let total = messages.len();
    let driver = tokio::spawn(async move {
        let mut acked = 0usize;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == total {
                        return Ok(());
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("bench MQTT publisher: {e}")),
            }
        }
    });
    for (well, body) in messages {
        client
            .publish(
                format!("{prefix}/{well}/telemetry"),
                QoS::AtLeastOnce,
                false,
                body.clone(),
            )
            .await?;
    }
    driver.await.context("MQTT driver")??;
    let _ = client.try_disconnect();
    Ok(())
}

async fn delete_queues(url: &str, config: &Config) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    use lapin::types::ShortString;
    let Ok(connection) =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in [&config.amqp_queue, &config.amqp_dead_letter_queue] {
            let _ = channel
                .queue_delete(
                    ShortString::from(queue.as_str()),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
        let _ = channel
            .exchange_delete(
                ShortString::from(config.amqp_dead_letter_exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = connection.close(200, ShortString::from("done")).await;
}
