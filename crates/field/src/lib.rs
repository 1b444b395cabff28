//! espwatch-field: telemetry from the field's brokers, into the same pipeline as
//! `POST /api/v1/telemetry`: decoded by `espwatch_core::ingest`, committed through the
//! [`espwatch_store::Store`], then published live and to the diagnostics, and only then
//! acknowledged to the broker (so a crash re-delivers instead of losing).
//!
//! - [`mqtt`]: MQTT 3.1.1, QoS 1 with a persistent session and manual acknowledgements; plain
//!   JSON/NDJSON/CSV payloads on a topic filter whose `+` level is the well.
//! - [`amqp`]: AMQP 0-9-1 (RabbitMQ), a durable queue with a dead-letter exchange; messages
//!   acknowledged after commit, refused ones dead-lettered with the reasons in headers.
//! - [`events`]: the RabbitMQ publisher of `amqp` notification channels (publisher confirms;
//!   the notifier's durable outbox retries through broker outages).
//! - [`sink`]: the commit step shared by every protocol.
//! - [`backoff`]: the reconnection backoff of both brokers (`broker_reconnect_max_ms`).
//! - [`cluster`]: several nodes on one database, joined through Redis pub/sub (live events
//!   and revocations cross nodes).

pub mod amqp;
pub mod backoff;
pub mod cluster;
pub mod events;
pub mod mqtt;
pub mod sink;
pub mod sparkplug;

use espwatch_app::metrics::IngestPath;
use espwatch_server::AppState;

/// Refuses what would make [`FieldIngest::start`] fail (an invalid topic filter, an unreadable
/// password or CA file), so `serve` can check before it binds its port.
pub fn check_config(config: &espwatch_app::Config) -> anyhow::Result<()> {
    if config.mqtt_url.is_some() {
        mqtt::check_config(config)?;
    }
    if config.amqp_url.is_some() {
        amqp::check_config(config)?;
    }
    cluster::check_config(config)?;
    Ok(())
}

/// The field ingest a server runs beside its HTTP API (whatever the configuration enables).
pub struct FieldIngest {
    mqtt: Option<mqtt::MqttIngest>,
    amqp: Option<amqp::AmqpIngest>,
    cluster: Option<cluster::Cluster>,
}

impl FieldIngest {
    /// Starts every consumer the configuration enables (none: nothing runs) and registers
    /// their status for `/health/ready`. Fails only on configuration errors (unreadable
    /// password or CA file); an unreachable broker is retried in the background.
    pub fn start(state: &AppState) -> anyhow::Result<FieldIngest> {
        let mqtt = match &state.config.mqtt_url {
            Some(_) => {
                let ingest = mqtt::MqttIngest::start(state.clone())?;
                let stats = ingest.stats();
                let backlog = stats.clone();
                state
                    .components
                    .register("mqtt", std::sync::Arc::new(move || stats.status()));
                state.components.register_broker(
                    IngestPath::Mqtt,
                    std::sync::Arc::new(move || backlog.backlog()),
                );
                Some(ingest)
            }
            None => None,
        };
        let amqp = match &state.config.amqp_url {
            Some(_) => {
                let ingest = amqp::AmqpIngest::start(state.clone())?;
                // Notification channels of kind `amqp` publish over the same broker.
                if let (Some(notifier), Some(url)) = (&state.notifier, &state.config.amqp_url) {
                    notifier.set_event_bus(std::sync::Arc::new(events::AmqpEventBus::new(
                        url.clone(),
                        format!("espwatch events {}", state.config.amqp_queue),
                    )));
                }
                state
                    .components
                    .register("amqp", std::sync::Arc::new(ingest.status_fn()));
                state
                    .components
                    .register_broker(IngestPath::Amqp, std::sync::Arc::new(ingest.backlog_fn()));
                Some(ingest)
            }
            None => None,
        };
        let cluster = match &state.config.redis_url {
            Some(_) => {
                let cluster = cluster::Cluster::start(state)?;
                state
                    .components
                    .register("redis", std::sync::Arc::new(cluster.status_fn()));
                Some(cluster)
            }
            None => None,
        };
        Ok(FieldIngest {
            mqtt,
            amqp,
            cluster,
        })
    }

    /// Stops taking messages, lets the batch being committed finish and be acknowledged,
    /// and disconnects. Messages received but not committed are re-delivered by the broker.
    pub async fn stop(self) {
        // Both finish their batch in progress (committed, then acknowledged) at once.
        let mqtt = async {
            if let Some(mqtt) = self.mqtt {
                mqtt.stop().await;
            }
        };
        let amqp = async {
            if let Some(amqp) = self.amqp {
                amqp.stop().await;
            }
        };
        tokio::join!(mqtt, amqp);
        // Last: the batches committed while stopping still reach the other nodes' streams.
        if let Some(cluster) = self.cluster {
            cluster.stop().await;
        }
    }
}
