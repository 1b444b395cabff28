//! Alarm notifications: channels (a webhook URL with its signing secret, or e-mail
//! recipients), routing rules, and the **durable outbox** of deliveries.
//!
//! A delivery is written to the outbox before anything is sent, under an idempotency key
//! (one per alarm change and channel: enqueuing the same key twice keeps the first), and leaves
//! `pending` only when the receiver accepted it (`delivered`) or its attempts are used up
//! (`dead`). A sender *claims* due deliveries by pushing their next attempt past a lease, so a
//! sender killed mid-delivery leaves them due again once the lease ends: at least once, never
//! lost. Rules keep their filter as JSON the server interprets; the store only keeps it.

use async_trait::async_trait;
use espwatch_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::StoreResult;

/// How a channel delivers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// HTTP POST of the JSON event, signed with the channel's secret.
    Webhook,
    /// An e-mail over the configured SMTP server.
    Email,
    /// A message on a RabbitMQ topic exchange (the channel's target), routing key
    /// `<event>.<well>`, published with confirms over the server's `amqp_url` connection.
    Amqp,
}

impl ChannelKind {
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
            ChannelKind::Amqp => "amqp",
        }
    }
    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "webhook" => Some(ChannelKind::Webhook),
            "email" => Some(ChannelKind::Email),
            "amqp" => Some(ChannelKind::Amqp),
            _ => None,
        }
    }
}

/// A stored channel. `secret` is the webhook signing key: kept for signing, never shown.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyChannel {
    pub id: i64,
    pub name: String,
    pub kind: ChannelKind,
    /// The webhook URL, the e-mail recipients separated by commas, or the AMQP exchange.
    pub target: String,
    pub secret: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewChannel {
    pub name: String,
    pub kind: ChannelKind,
    pub target: String,
    pub secret: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// A routing rule: alarm changes matching `filter` go to `channel_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyRule {
    pub id: i64,
    pub name: String,
    pub channel_id: i64,
    /// What to match (events, conditions, severities, wells, fields), as the server wrote it.
    pub filter: serde_json::Value,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewRule {
    pub name: String,
    pub channel_id: i64,
    pub filter: serde_json::Value,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet accepted by the receiver; sent when `next_attempt_at` comes.
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Given up after the last attempt (or its channel was deleted).
    Dead,
}

impl DeliveryState {
    pub fn name(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// What to put in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    /// Unique: enqueuing a key that exists is a no-op. Receivers see it to drop duplicates.
    pub key: String,
    pub channel_id: i64,
    pub rule_id: i64,
    /// `alarm.raised`, `alarm.acknowledged`, `alarm.cleared`, `test`.
    pub event: String,
    /// The JSON body, exactly as it will be sent (and signed).
    pub payload: String,
    pub created_at: Timestamp,
}

/// One outbox entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub key: String,
    pub channel_id: i64,
    pub rule_id: i64,
    pub event: String,
    pub payload: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The result of one attempt, written by [`NotifyStore::finish_attempt`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptResult {
    pub state: DeliveryState,
    /// Attempts made, this one included.
    pub attempts: i32,
    /// When to try again (`Pending` only).
    pub next_attempt_at: Timestamp,
    pub error: Option<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryFilter {
    pub channel_id: Option<i64>,
    /// Only deliveries whose key starts with this (`alarm-<id>-`: one alarm's).
    pub key_prefix: Option<String>,
    pub state: Option<DeliveryState>,
    /// Most rows returned (newest first); 0 means 1 000.
    pub limit: usize,
}

#[async_trait]
pub trait NotifyStore: Send + Sync + 'static {
    /// `Conflict` when a channel of that name exists.
    async fn create_channel(&self, channel: NewChannel) -> StoreResult<NotifyChannel>;
    async fn list_channels(&self) -> StoreResult<Vec<NotifyChannel>>;
    async fn get_channel(&self, id: i64) -> StoreResult<Option<NotifyChannel>>;
    /// Deletes a channel and its rules; its pending deliveries become `dead`. False when absent.
    async fn delete_channel(&self, id: i64, at: Timestamp) -> StoreResult<bool>;

    /// `Conflict` when a rule of that name exists; the channel must exist (`Internal` if not).
    async fn create_rule(&self, rule: NewRule) -> StoreResult<NotifyRule>;
    async fn list_rules(&self) -> StoreResult<Vec<NotifyRule>>;
    async fn delete_rule(&self, id: i64) -> StoreResult<bool>;

    /// Adds deliveries, due at once; keys already present are skipped. Returns how many were
    /// added. Committed (durable) when this returns.
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> StoreResult<usize>;
    /// Pending deliveries due at `now` (oldest first, at most `limit`), each leased until
    /// `lease_until`: nobody else claims them before then, and they come back if the claimer
    /// dies before [`finish_attempt`](NotifyStore::finish_attempt).
    async fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records an attempt's result.
    async fn finish_attempt(&self, id: i64, result: AttemptResult) -> StoreResult<()>;
    /// Deliveries, newest first.
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    /// The earliest `next_attempt_at` among pending deliveries (for the sender's sleep).
    async fn next_due(&self) -> StoreResult<Option<Timestamp>>;
}
