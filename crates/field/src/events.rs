//! Notification events on RabbitMQ: the [`EventBus`] through which the notifier delivers
//! `amqp` channels (alarm changes routed by rule, channel tests). The notifier's durable
//! outbox does the rest: a delivery leaves `pending` only after the broker confirmed the
//! message, so a broker outage delays events and loses none (failed attempts are retried with
//! the notifier's backoff; a killed server's claims come back after their lease).
//!
//! One connection with one confirm-mode channel, opened on first use and again after any
//! failure; each exchange is declared (durable topic) before its first publish on a
//! connection. Messages are persistent JSON, `message_id` = the delivery's idempotency key
//! (consumers drop duplicates by it), routing key `<event>.<well>`.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use espwatch_server::notify::EventBus;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Link {
    connection: Connection,
    channel: Channel,
    declared: HashSet<String>,
}

/// Publishes notification events to `amqp_url`'s broker.
pub struct AmqpEventBus {
    url: String,
    name: String,
    link: Mutex<Option<Link>>,
}

impl AmqpEventBus {
    /// Connects on first use; `name` is the connection's name on the broker.
    pub fn new(url: String, name: String) -> AmqpEventBus {
        AmqpEventBus {
            url,
            name,
            link: Mutex::new(None),
        }
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
        payload: &str,
    ) -> anyhow::Result<()> {
        let mut guard = self.link.lock().await;
        let usable = guard
            .as_ref()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected());
        if !usable {
            if let Some(old) = guard.take() {
                let _ = old
                    .connection
                    .close(200, ShortString::from("reconnecting"))
                    .await;
            }
            let properties =
                ConnectionProperties::default().with_connection_name(self.name.clone().into());
            let connection =
                tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.url, properties))
                    .await
                    .map_err(|_| anyhow::anyhow!("connecting timed out"))?
                    .context("connecting")?;
            let channel = connection
                .create_channel()
                .await
                .context("opening a channel")?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .context("confirm.select")?;
            *guard = Some(Link {
                connection,
                channel,
                declared: HashSet::new(),
            });
        }
        let link = guard.as_mut().expect("connected above");
        let result = publish(link, exchange, routing_key, message_id, payload).await;
        if result.is_err() {
            // Start afresh next time (a failed channel is closed by the broker).
            *guard = None;
        }
        result
    }
}

async fn publish(
    link: &mut Link,
    exchange: &str,
    routing_key: &str,
    message_id: &str,
    payload: &str,
) -> anyhow::Result<()> {
    if !link.declared.contains(exchange) {
        link.channel
            .exchange_declare(
                ShortString::from(exchange),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {exchange}"))?;
        link.declared.insert(exchange.to_owned());
    }
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(message_id))
        .with_app_id(ShortString::from("espwatch"));
    let confirmation = link
        .channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            payload.as_bytes(),
            properties,
        )
        .await
        .context("publishing")?
        .await
        .context("waiting for the confirm")?;
    match confirmation {
        Confirmation::Ack(_) => Ok(()),
        other => anyhow::bail!("the broker did not confirm the event: {other:?}"),
    }
}

impl EventBus for AmqpEventBus {
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        message_id: &'a str,
        payload: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.send(exchange, routing_key, message_id, payload)
                .await
                .map_err(|e| format!("AMQP: {e:#}"))
        })
    }
}
