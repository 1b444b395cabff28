//! Alarm notifications: routing alarm changes to channels by rule, the durable outbox, and the
//! sender that delivers it (signed webhooks, e-mail over SMTP, RabbitMQ topic exchanges).
//!
//! An alarm change (raised by the diagnostics, acknowledged by someone, cleared) is matched
//! against every rule; each matching channel gets one delivery in the outbox (committed before
//! [`Notifier::alarm_changed`] returns), keyed `alarm-<id>-<change>-c<channel>` so a change
//! routed twice to one channel is sent once. A background task claims due deliveries (a lease,
//! so a killed server's claims come back), sends them, and records the result: `delivered` on a
//! 2xx (or SMTP 250), else another attempt after an exponentially growing delay, and `dead`
//! after `notify_max_attempts` (audited as `notification_dead`, listed by the API).
//!
//! A channel whose latest finished delivery is dead (with the default retries, about a day of
//! failures) is **disabled**: alarm changes are no longer queued to it (`notification_channel_disabled`
//! audited once, logged at ERROR, shown by the channel list) until a delivery to it succeeds
//! again — a test message (`POST /notifications/channels/{id}/test`, `espwatch webhooks test`),
//! which re-enables it (`notification_channel_enabled`). No schema of its own: the state is read
//! from the outbox.
//!
//! Webhook requests carry `X-Espwatch-Timestamp` (Unix seconds) and `X-Espwatch-Signature:
//! v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, and the idempotency key in
//! `X-Espwatch-Delivery` and `Idempotency-Key`.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use espwatch_app::config::Config;
use espwatch_core::diagnostics::{Diagnosis, Severity};
use espwatch_core::{Timestamp, WellId};
use espwatch_store::{
    Alarm, AttemptResult, AuditEvent, ChannelKind, Delivery, DeliveryFilter, DeliveryState,
    NewDelivery, NotifyChannel, NotifyStore, Store, StoreResult,
};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::audit::{AuditSink, now};
use crate::live::AlarmChange;
use crate::views::AlarmView;

pub mod smtp;

/// Publishes notification events to a message broker: the door through which `amqp`
/// channels are delivered (`espwatch-field` installs its RabbitMQ publisher with
/// [`Notifier::set_event_bus`] when `amqp_url` is set). `Ok` only once the broker confirmed
/// the message; an `Err` is retried like a failed webhook.
pub trait EventBus: Send + Sync + 'static {
    fn publish<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        message_id: &'a str,
        payload: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The routing key of an event on an `amqp` channel: `<event>.<well>` (`alarm.raised.ESP-1`),
/// the event alone when it names no well (`test`).
pub fn routing_key(event: &str, payload: &str) -> String {
    let well = serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["alarm"]["well_id"].as_str().map(str::to_owned));
    match well {
        Some(well) => format!("{event}.{well}"),
        None => event.to_owned(),
    }
}

/// Deliveries sent at once by one sender round.
const BATCH: usize = 16;
/// Longest sleep of an idle sender (it is also woken on every enqueue).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The alarm change a notification names: its `event` (`alarm.raised`, ...), what a rule's
/// `events` list and the AMQP routing key hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum AlarmEvent {
    #[serde(rename = "alarm.raised")]
    Raised,
    #[serde(rename = "alarm.acknowledged")]
    Acknowledged,
    #[serde(rename = "alarm.cleared")]
    Cleared,
}

impl AlarmEvent {
    pub const ALL: [AlarmEvent; 3] = [
        AlarmEvent::Raised,
        AlarmEvent::Acknowledged,
        AlarmEvent::Cleared,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AlarmEvent::Raised => "alarm.raised",
            AlarmEvent::Acknowledged => "alarm.acknowledged",
            AlarmEvent::Cleared => "alarm.cleared",
        }
    }

    pub fn from_name(name: &str) -> Option<AlarmEvent> {
        AlarmEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl From<AlarmChange> for AlarmEvent {
    fn from(change: AlarmChange) -> AlarmEvent {
        match change {
            AlarmChange::Raised => AlarmEvent::Raised,
            AlarmChange::Acknowledged => AlarmEvent::Acknowledged,
            AlarmChange::Cleared => AlarmEvent::Cleared,
        }
    }
}

/// One entry of a rule's `wells`: a well id, or `PREFIX*` for every well whose id starts with
/// `PREFIX`. Kept as written (`serde` as the string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WellPattern {
    Exact(String),
    Prefix(String),
}

impl From<String> for WellPattern {
    fn from(text: String) -> WellPattern {
        match text.strip_suffix('*') {
            Some(prefix) => WellPattern::Prefix(prefix.to_owned()),
            None => WellPattern::Exact(text),
        }
    }
}

impl From<WellPattern> for String {
    fn from(pattern: WellPattern) -> String {
        match pattern {
            WellPattern::Exact(id) => id,
            WellPattern::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

impl WellPattern {
    pub fn matches(&self, well: &WellId) -> bool {
        match self {
            WellPattern::Exact(id) => id == well.as_str(),
            WellPattern::Prefix(prefix) => well.as_str().starts_with(prefix.as_str()),
        }
    }

    /// Its length as written (with the `*`).
    fn written_len(&self) -> usize {
        match self {
            WellPattern::Exact(id) => id.len(),
            WellPattern::Prefix(prefix) => prefix.len() + 1,
        }
    }
}

/// Why a rule's filter was refused (422 `invalid_body` with this text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleFilterError {
    #[error("`events` must name at least one of alarm.raised, alarm.acknowledged, alarm.cleared")]
    NoEvents,
    #[error("event {0:?} is not one of alarm.raised, alarm.acknowledged, alarm.cleared")]
    UnknownEvent(String),
    #[error("{0:?} is not a condition name")]
    UnknownCondition(String),
    #[error("min_severity {0:?} is not one of minor, major, critical")]
    UnknownSeverity(String),
    #[error("`wells` and `fields` hold 1 to 1000 entries when given")]
    ListSize,
    #[error("well ids, patterns and fields are 1 to 128 characters")]
    EntrySize,
}

/// A rule's filter as a client sends it (`POST /api/v1/notifications/rules`), every value
/// still text; [`RuleFilter::parse`] checks it.
#[derive(Clone, Debug, Default)]
pub struct RuleFilterRequest {
    pub events: Vec<String>,
    pub conditions: Option<Vec<String>>,
    pub min_severity: Option<String>,
    pub wells: Option<Vec<String>>,
    pub fields: Option<Vec<String>>,
}

/// What a rule matches, parsed once: from the request ([`RuleFilter::parse`]) or from
/// [`espwatch_store::NotifyRule::filter`] ([`RuleFilter::from_stored`]; the JSON is this type's,
/// as the server has always written it). Absent lists match everything; `wells` and `fields`
/// together match a well named by either (a well group is a registry `field`, or a `PREFIX*`
/// pattern of well ids).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFilter {
    /// `alarm.raised`, `alarm.acknowledged`, `alarm.cleared` (at least one).
    pub events: Vec<AlarmEvent>,
    /// Condition names (`gas_lock`, `broken_shaft`, ..., `anomaly`); absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub conditions: Option<Vec<Diagnosis>>,
    /// `minor`, `major` or `critical`: alarms at least this severe; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub min_severity: Option<Severity>,
    /// Well ids, or `PREFIX*` patterns; absent (and no `fields`): every well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub wells: Option<Vec<WellPattern>>,
    /// Oil fields of the wells registry (`field`); absent (and no `wells`): every well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

impl RuleFilter {
    /// Checks a filter as sent; the first problem is the error.
    pub fn parse(request: RuleFilterRequest) -> Result<RuleFilter, RuleFilterError> {
        if request.events.is_empty() {
            return Err(RuleFilterError::NoEvents);
        }
        let events = request
            .events
            .into_iter()
            .map(|e| AlarmEvent::from_name(&e).ok_or(RuleFilterError::UnknownEvent(e)))
            .collect::<Result<Vec<_>, _>>()?;
        let conditions = request
            .conditions
            .map(|list| {
                list.into_iter()
                    .map(|c| Diagnosis::from_name(&c).ok_or(RuleFilterError::UnknownCondition(c)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let min_severity = request
            .min_severity
            .map(|s| Severity::from_name(&s).ok_or(RuleFilterError::UnknownSeverity(s)))
            .transpose()?;
        let filter = RuleFilter {
            events,
            conditions,
            min_severity,
            wells: request
                .wells
                .map(|list| list.into_iter().map(WellPattern::from).collect()),
            fields: request.fields,
        };
        let sizes = [
            filter
                .wells
                .as_ref()
                .map(|l| l.iter().map(WellPattern::written_len).collect()),
            filter
                .fields
                .as_ref()
                .map(|l| l.iter().map(String::len).collect()),
        ];
        for lengths in sizes.into_iter().flatten() {
            let lengths: Vec<usize> = lengths;
            if lengths.is_empty() || lengths.len() > 1000 {
                return Err(RuleFilterError::ListSize);
            }
            if lengths.iter().any(|&n| n == 0 || n > 128) {
                return Err(RuleFilterError::EntrySize);
            }
        }
        Ok(filter)
    }

    /// A rule's stored filter ([`espwatch_store::NotifyRule::filter`]), as the server wrote it.
    pub fn from_stored(filter: &serde_json::Value) -> Result<RuleFilter, serde_json::Error> {
        RuleFilter::deserialize(filter)
    }

    /// Whether the change of `alarm` (`event`) on a well of oil field `field` matches.
    pub fn matches(&self, event: AlarmEvent, alarm: &Alarm, field: Option<&str>) -> bool {
        if !self.events.contains(&event) {
            return false;
        }
        if let Some(c) = &self.conditions
            && !c.contains(&alarm.condition)
        {
            return false;
        }
        if let Some(min) = self.min_severity
            && alarm.severity < min
        {
            return false;
        }
        if self.wells.is_none() && self.fields.is_none() {
            return true;
        }
        let by_well = self
            .wells
            .iter()
            .flatten()
            .any(|pattern| pattern.matches(&alarm.well_id));
        let by_field = field.is_some_and(|f| self.fields.iter().flatten().any(|x| x == f));
        by_well || by_field
    }
}

/// Retry timing of failed deliveries.
#[derive(Copy, Clone, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl RetryPolicy {
    /// The policy of `notify_retry_base_ms`, `notify_retry_max_secs` and `notify_max_attempts`.
    pub fn from_config(config: &Config) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(config.notify_retry_base_ms),
            max: Duration::from_secs(config.notify_retry_max_secs),
            attempts: config.notify_max_attempts,
        }
    }

    /// The delay after failed attempt number `attempt` (1 = the first): base·2^(attempt−1),
    /// at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// How long a delivery that keeps failing is retried: from the first attempt to the last
    /// (the waits between them; the attempts' own time comes on top).
    pub fn window(&self) -> Duration {
        (1..self.attempts).map(|a| self.delay(a)).sum()
    }

    /// The warning `serve` logs at start when a delivery that keeps failing is given up before
    /// [`RETRY_AT_LEAST`] (issue 19: a receiver down for a night must not lose alarms): the
    /// span these settings retry for, and the `notify_max_attempts` that would reach a day
    /// with the same delays. `None` when they retry long enough.
    pub fn short_retry_warning(&self) -> Option<String> {
        let window = self.window();
        if window >= RETRY_AT_LEAST {
            return None;
        }
        let mut reached = window;
        let enough = (self.attempts..MAX_ATTEMPTS).find_map(|attempts| {
            reached += self.delay(attempts);
            (reached >= RETRY_AT_LEAST).then_some((attempts + 1, reached))
        });
        let advice = match enough {
            Some((attempts, span)) => format!(
                "notify_max_attempts = {attempts} would retry for {} with the same delays",
                span_text(span)
            ),
            None => "raise notify_retry_max_secs and notify_max_attempts".to_owned(),
        };
        Some(format!(
            "alarm notifications (webhooks, e-mail) that keep failing are given up after {} \
             attempts spanning {}, less than 24 h: a receiver that is down overnight loses \
             alarms (notify_retry_base_ms = {}, notify_retry_max_secs = {}, \
             notify_max_attempts = {}); {advice}",
            self.attempts,
            span_text(window),
            self.base.as_millis(),
            self.max.as_secs(),
            self.attempts,
        ))
    }
}

/// Retrying deliveries for less than this draws a warning at start (see
/// [`RetryPolicy::short_retry_warning`]).
pub const RETRY_AT_LEAST: Duration = Duration::from_secs(24 * 3600);

/// The largest `notify_max_attempts` the configuration accepts.
const MAX_ATTEMPTS: u32 = 1000;

/// `1.3 h (4 630 s)`-style text of a retry span.
fn span_text(span: Duration) -> String {
    format!(
        "{:.1} h ({:.1} s)",
        span.as_secs_f64() / 3600.0,
        span.as_secs_f64()
    )
}

/// The SMTP settings of e-mail channels.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub server: Option<String>,
    pub starttls: bool,
    pub from: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Counters for `/health/ready`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NotifyStatus {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead: u64,
    /// Alarm changes not queued to a channel because it was disabled.
    pub skipped_disabled: u64,
}

/// The hex HMAC-SHA256 signature of a webhook body sent at `timestamp` (Unix seconds).
/// Whether `channel` is disabled: its latest finished delivery is dead (that delivery is
/// returned). Read from the outbox: the newest dead and delivered deliveries of the channel,
/// compared by when they finished.
pub async fn channel_disabled(
    store: &dyn NotifyStore,
    channel: i64,
) -> StoreResult<Option<Delivery>> {
    let filter = |state| DeliveryFilter {
        channel_id: Some(channel),
        key_prefix: None,
        state: Some(state),
        limit: 50,
    };
    let dead = store
        .list_deliveries(&filter(DeliveryState::Dead))
        .await?
        .into_iter()
        .max_by_key(|d| (d.updated_at, d.id));
    let Some(dead) = dead else {
        return Ok(None);
    };
    let delivered = store
        .list_deliveries(&filter(DeliveryState::Delivered))
        .await?
        .into_iter()
        .map(|d| (d.updated_at, d.id))
        .max();
    Ok(match delivered {
        Some(at) if at > (dead.updated_at, dead.id) => None,
        _ => Some(dead),
    })
}

pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub struct Notifier {
    store: Arc<dyn NotifyStore>,
    wells: Arc<dyn Store>,
    audit: AuditSink,
    retry: RetryPolicy,
    timeout: Duration,
    smtp: SmtpSettings,
    http: OnceLock<reqwest::Client>,
    /// The broker publisher of `amqp` channels (set once, when `amqp_url` is).
    bus: OnceLock<Arc<dyn EventBus>>,
    wake: tokio::sync::Notify,
    /// Set at shutdown: the sender stops after its current round.
    stopping: std::sync::atomic::AtomicBool,
    /// Held by the sender during a round (shutdown waits for it).
    round_lock: tokio::sync::Mutex<()>,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead: AtomicU64,
    skipped_disabled: AtomicU64,
    /// While the outbox cannot be read (a database outage): since when, when last logged,
    /// failed rounds. Logged once at the start, then once a minute, and at the end.
    outbox_failing: std::sync::Mutex<Option<(std::time::Instant, std::time::Instant, u64)>>,
}

impl Notifier {
    /// Starts the sender task (needs a Tokio runtime).
    pub fn start(
        store: Arc<dyn NotifyStore>,
        wells: Arc<dyn Store>,
        audit: AuditSink,
        config: &Config,
    ) -> Arc<Notifier> {
        let notifier = Arc::new(Notifier {
            store,
            wells,
            audit,
            retry: RetryPolicy::from_config(config),
            timeout: Duration::from_secs(config.notify_timeout_secs),
            smtp: SmtpSettings {
                server: config.smtp_server.clone(),
                starttls: config.smtp_tls != "none",
                from: config.smtp_from.clone(),
                username: config.smtp_username.clone(),
                password: config.smtp_password.as_ref().map(|s| s.0.clone()),
            },
            http: OnceLock::new(),
            bus: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            round_lock: tokio::sync::Mutex::new(()),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            skipped_disabled: AtomicU64::new(0),
            outbox_failing: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&notifier);
        tokio::spawn(async move {
            loop {
                // Only a weak handle between rounds: the sender ends (within `IDLE_POLL`)
                // once the server's state is dropped.
                let Some(notifier) = weak.upgrade() else {
                    return;
                };
                let sleep = {
                    let _round = notifier.round_lock.lock().await;
                    if notifier.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    notifier.round().await
                };
                tokio::select! {
                    _ = notifier.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
        });
        notifier
    }

    /// Stops the sender: waits for the round in progress, then no more attempts.
    pub async fn shut_down(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let _round = self.round_lock.lock().await;
    }

    /// Installs the publisher of `amqp` channels (the first call wins). Until then their
    /// deliveries fail and are retried.
    pub fn set_event_bus(&self, bus: Arc<dyn EventBus>) {
        let _ = self.bus.set(bus);
        self.wake.notify_one();
    }

    pub fn store(&self) -> &Arc<dyn NotifyStore> {
        &self.store
    }

    pub fn status(&self) -> NotifyStatus {
        NotifyStatus {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            skipped_disabled: self.skipped_disabled.load(Ordering::Relaxed),
        }
    }

    /// Routes an alarm change: one outbox entry per matching channel, committed before this
    /// returns. Errors are logged (the alarm itself is already stored).
    pub async fn alarm_changed(&self, change: AlarmChange, alarm: &Alarm) {
        if let Err(err) = self.route(change, alarm).await {
            tracing::error!(alarm = alarm.id, error = %err, "NOTIFICATION NOT ENQUEUED");
        }
    }

    async fn route(&self, change: AlarmChange, alarm: &Alarm) -> anyhow::Result<usize> {
        let rules = self.store.list_rules().await?;
        if rules.is_empty() {
            return Ok(0);
        }
        let event = AlarmEvent::from(change);
        let field = self
            .wells
            .get_well(&alarm.well_id)
            .await
            .ok()
            .flatten()
            .and_then(|w| w.meta.field);
        let at = now();
        let mut channels: Vec<(i64, i64)> = Vec::new();
        for rule in &rules {
            let Ok(filter) = RuleFilter::from_stored(&rule.filter) else {
                tracing::warn!(
                    rule = rule.id,
                    "notification rule with an unreadable filter"
                );
                continue;
            };
            if filter.matches(event, alarm, field.as_deref())
                && !channels.iter().any(|(c, _)| *c == rule.channel_id)
            {
                channels.push((rule.channel_id, rule.id));
            }
        }
        let mut open = Vec::with_capacity(channels.len());
        for (channel, rule) in channels {
            match channel_disabled(self.store.as_ref(), channel).await {
                Ok(Some(dead)) => {
                    self.skipped_disabled.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        channel,
                        alarm = alarm.id,
                        event = event.name(),
                        dead_delivery = dead.id,
                        "notification not queued: the channel is disabled after a dead delivery (a test message that gets through enables it)"
                    );
                }
                Ok(None) => open.push((channel, rule)),
                // Unknown: queue it (at least once).
                Err(err) => {
                    tracing::warn!(channel, error = %err, "reading whether a channel is disabled failed; queuing");
                    open.push((channel, rule));
                }
            }
        }
        let deliveries: Vec<NewDelivery> = open
            .into_iter()
            .map(|(channel, rule)| {
                let key = format!("alarm-{}-{}-c{channel}", alarm.id, change_name(change));
                NewDelivery {
                    payload: payload(&key, event.name(), at, alarm),
                    key,
                    channel_id: channel,
                    rule_id: rule,
                    event: event.name().to_owned(),
                    created_at: at,
                }
            })
            .collect();
        let added = self.store.enqueue(deliveries).await?;
        if added > 0 {
            self.wake.notify_one();
        }
        Ok(added)
    }

    /// Puts a test message for `channel` in the outbox (delivered like any other).
    pub async fn enqueue_test(&self, channel: &NotifyChannel, by: &str) -> anyhow::Result<String> {
        let at = now();
        let key = format!("test-c{}-{}", channel.id, uuid::Uuid::new_v4());
        let body = serde_json::json!({
            "id": key,
            "event": "test",
            "occurred_at": at.to_rfc3339(),
            "channel": channel.name,
            "requested_by": by,
        })
        .to_string();
        self.store
            .enqueue(vec![NewDelivery {
                key: key.clone(),
                channel_id: channel.id,
                rule_id: 0,
                event: "test".into(),
                payload: body,
                created_at: at,
            }])
            .await?;
        self.wake.notify_one();
        Ok(key)
    }

    /// One sender round: claims what is due and sends it. Returns how long to sleep.
    async fn round(self: &Arc<Self>) -> Duration {
        let at = now();
        // Longer than an attempt can take (its timeout, then recording the result).
        let lease = self.timeout * 2 + Duration::from_secs(5);
        let claimed = match self.store.claim_due(at, plus(at, lease), BATCH).await {
            Ok(c) => {
                let failing = self
                    .outbox_failing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some((since, _, rounds)) = failing {
                    tracing::info!(
                        rounds,
                        "notification outbox readable again after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                }
                c
            }
            Err(err) => {
                let mut failing = self
                    .outbox_failing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let now = std::time::Instant::now();
                match failing.as_mut() {
                    None => {
                        tracing::warn!(error = %err, "notification outbox unreadable; retrying every second (logged again once a minute while it lasts)");
                        *failing = Some((now, now, 1));
                    }
                    Some((since, logged, rounds)) => {
                        *rounds += 1;
                        if logged.elapsed() >= Duration::from_secs(60) {
                            *logged = now;
                            tracing::warn!(error = %err, rounds = *rounds, "notification outbox still unreadable after {:.0} s", since.elapsed().as_secs_f64());
                        }
                    }
                }
                return Duration::from_secs(1);
            }
        };
        if !claimed.is_empty() {
            let mut tasks = tokio::task::JoinSet::new();
            for delivery in claimed {
                let me = self.clone();
                tasks.spawn(async move { me.attempt(delivery).await });
            }
            while tasks.join_next().await.is_some() {}
            return Duration::ZERO;
        }
        match self.store.next_due().await {
            Ok(Some(due)) => {
                let wait = (due.0 - now().0).max(0) as u64;
                Duration::from_micros(wait).min(IDLE_POLL)
            }
            _ => IDLE_POLL,
        }
    }

    async fn attempt(&self, delivery: Delivery) {
        let outcome = match self.store.get_channel(delivery.channel_id).await {
            Ok(Some(channel)) => self.send(&channel, &delivery).await,
            Ok(None) => Err(Failure::Permanent("channel deleted".into())),
            Err(err) => Err(Failure::Retry(format!("reading the channel: {err}"))),
        };
        let attempts = delivery.attempts + 1;
        let at = now();
        let result = match outcome {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                AttemptResult {
                    state: DeliveryState::Delivered,
                    attempts,
                    next_attempt_at: at,
                    error: None,
                    at,
                }
            }
            Err(failure) => {
                self.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let (permanent, error) = match failure {
                    Failure::Permanent(e) => (true, e),
                    Failure::Retry(e) => (false, e),
                };
                if permanent || attempts as u32 >= self.retry.attempts {
                    self.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(delivery = delivery.id, key = %delivery.key, attempts,
                        error = %error, "NOTIFICATION DEAD: given up");
                    self.audit.record(AuditEvent {
                        ts: at,
                        kind: "notification_dead".into(),
                        request_id: None,
                        method: None,
                        route: None,
                        status: None,
                        actor: None,
                        role: None,
                        source: None,
                        duration_ms: None,
                        detail: serde_json::json!({
                            "delivery": delivery.id,
                            "key": delivery.key,
                            "channel": delivery.channel_id,
                            "event": delivery.event,
                            "attempts": attempts,
                            "error": error,
                        }),
                    });
                    AttemptResult {
                        state: DeliveryState::Dead,
                        attempts,
                        next_attempt_at: at,
                        error: Some(error),
                        at,
                    }
                } else {
                    let delay = self.retry.delay(attempts as u32);
                    tracing::warn!(delivery = delivery.id, attempts, error = %error,
                        retry_in_ms = delay.as_millis() as u64, "notification attempt failed");
                    AttemptResult {
                        state: DeliveryState::Pending,
                        attempts,
                        next_attempt_at: plus(at, delay),
                        error: Some(error),
                        at,
                    }
                }
            }
        };
        let finished = result.state;
        let was_disabled = if finished == DeliveryState::Pending {
            None
        } else {
            channel_disabled(self.store.as_ref(), delivery.channel_id)
                .await
                .inspect_err(|err| {
                    // The store hands read errors back unlogged: logged here, once.
                    tracing::warn!(delivery = delivery.id, error = %err, "reading whether the channel is disabled failed");
                })
                .ok()
                .map(|d| d.is_some())
        };
        if let Err(err) = self.store.finish_attempt(delivery.id, result).await {
            // The lease runs out and the delivery is sent again: at least once.
            tracing::error!(delivery = delivery.id, error = %err, "recording a notification attempt failed");
            return;
        }
        let kind = match (was_disabled, finished) {
            (Some(false), DeliveryState::Dead) => {
                tracing::error!(
                    channel = delivery.channel_id,
                    delivery = delivery.id,
                    "NOTIFICATION CHANNEL DISABLED: a delivery died; alarm changes are not queued to it until a test message gets through"
                );
                "notification_channel_disabled"
            }
            (Some(true), DeliveryState::Delivered) => {
                tracing::warn!(
                    channel = delivery.channel_id,
                    delivery = delivery.id,
                    "notification channel enabled again: a delivery got through"
                );
                "notification_channel_enabled"
            }
            _ => return,
        };
        self.audit.record(AuditEvent {
            ts: at,
            kind: kind.into(),
            request_id: None,
            method: None,
            route: None,
            status: None,
            actor: None,
            role: None,
            source: None,
            duration_ms: None,
            detail: serde_json::json!({
                "channel": delivery.channel_id,
                "delivery": delivery.id,
                "key": delivery.key,
                "event": delivery.event,
            }),
        });
    }

    async fn send(&self, channel: &NotifyChannel, delivery: &Delivery) -> Result<(), Failure> {
        match channel.kind {
            ChannelKind::Webhook => self.send_webhook(channel, delivery).await,
            ChannelKind::Amqp => {
                let bus = self.bus.get().ok_or_else(|| {
                    Failure::Retry("no AMQP broker: amqp channels need amqp_url".into())
                })?;
                let key = routing_key(&delivery.event, &delivery.payload);
                tokio::time::timeout(
                    self.timeout,
                    bus.publish(&channel.target, &key, &delivery.key, &delivery.payload),
                )
                .await
                .map_err(|_| Failure::Retry("AMQP publish not confirmed in time".into()))?
                .map_err(Failure::Retry)
            }
            ChannelKind::Email => {
                let recipients: Vec<String> = channel
                    .target
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                let message = smtp::Message {
                    from: self.smtp.from.clone(),
                    to: recipients,
                    subject: email_subject(&delivery.payload),
                    body: email_body(&delivery.payload),
                    message_id: format!("<{}@espwatch>", delivery.key),
                };
                tokio::time::timeout(self.timeout, smtp::send(&self.smtp, &message))
                    .await
                    .map_err(|_| Failure::Retry("SMTP timed out".into()))?
                    .map_err(|e| Failure::Retry(format!("{e:#}")))
            }
        }
    }

    async fn send_webhook(&self, channel: &NotifyChannel, d: &Delivery) -> Result<(), Failure> {
        let client = match self.http.get() {
            Some(c) => c.clone(),
            None => {
                let built = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(self.timeout)
                    .user_agent(concat!("espwatch/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| Failure::Retry(format!("HTTP client: {e}")))?;
                self.http.get_or_init(|| built).clone()
            }
        };
        let timestamp = chrono::Utc::now().timestamp();
        let secret = channel.secret.as_deref().unwrap_or_default();
        let response = client
            .post(&channel.target)
            .header("content-type", "application/json")
            .header("x-espwatch-event", &d.event)
            .header("x-espwatch-delivery", &d.key)
            .header("idempotency-key", &d.key)
            .header("x-espwatch-timestamp", timestamp.to_string())
            .header(
                "x-espwatch-signature",
                format!("v1={}", signature(secret, timestamp, &d.payload)),
            )
            .body(d.payload.clone())
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("{e}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Retry(format!("HTTP {}", status.as_u16())))
        }
    }
}

enum Failure {
    /// Try again later.
    Retry(String),
    /// Never deliverable (channel gone).
    Permanent(String),
}

fn change_name(change: AlarmChange) -> &'static str {
    match change {
        AlarmChange::Raised => "raised",
        AlarmChange::Acknowledged => "acknowledged",
        AlarmChange::Cleared => "cleared",
    }
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(d.as_micros().min(i64::MAX as u128) as i64))
}

/// The JSON body of an alarm notification.
fn payload(key: &str, event: &str, at: Timestamp, alarm: &Alarm) -> String {
    serde_json::json!({
        "id": key,
        "event": event,
        "occurred_at": at.to_rfc3339(),
        "alarm": AlarmView::from(alarm.clone()),
    })
    .to_string()
}

fn email_subject(payload: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    match v["event"].as_str() {
        Some("test") => "espwatch: test notification".to_owned(),
        Some(event) => format!(
            "espwatch: {} {} on {} ({})",
            v["alarm"]["condition"].as_str().unwrap_or("?"),
            event.trim_start_matches("alarm."),
            v["alarm"]["well_id"].as_str().unwrap_or("?"),
            v["alarm"]["severity"].as_str().unwrap_or("?"),
        ),
        None => "espwatch notification".to_owned(),
    }
}

fn email_body(payload: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let mut text = String::new();
    if v["event"] == "test" {
        text.push_str("This is a test notification from espwatch.\n");
    } else {
        let a = &v["alarm"];
        let line = |k: &str| {
            a[k].as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| a[k].to_string())
        };
        text.push_str(&format!(
            "Event: {}\nWell: {}\nCondition: {}\nSeverity: {}\nState: {}\nStarted: {}\nConfidence: {}\n",
            v["event"].as_str().unwrap_or("?"),
            line("well_id"),
            line("condition"),
            line("severity"),
            line("state"),
            line("started_at"),
            line("confidence"),
        ));
        if let Some(by) = a["acknowledged_by"].as_str() {
            text.push_str(&format!("Acknowledged by: {by}\n"));
        }
        if let Some(action) = a["detail"]["action"].as_str() {
            text.push_str(&format!("\nRecommended action: {action}\n"));
        }
    }
    text.push_str(&format!(
        "\nDelivery: {}\n\n{}\n",
        v["id"].as_str().unwrap_or("?"),
        payload
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use espwatch_core::WellId;

    fn alarm(well: &str, condition: &str, severity: &str) -> Alarm {
        Alarm {
            id: 1,
            well_id: WellId::parse(well).unwrap(),
            condition: condition.parse().unwrap(),
            severity: severity.parse().unwrap(),
            state: espwatch_store::AlarmState::Raised,
            confidence: 0.9,
            started_at: Timestamp(0),
            ended_at: None,
            acknowledged_by: None,
            acknowledged_at: None,
            comment: None,
            detail: serde_json::Value::Null,
        }
    }

    fn request(events: &[&str]) -> RuleFilterRequest {
        RuleFilterRequest {
            events: events.iter().map(|e| e.to_string()).collect(),
            ..RuleFilterRequest::default()
        }
    }

    #[test]
    fn filters_route_by_event_condition_severity_well_and_field() {
        use AlarmEvent::{Cleared, Raised};
        let f = RuleFilter::parse(RuleFilterRequest {
            conditions: Some(vec!["gas_lock".into(), "broken_shaft".into()]),
            min_severity: Some("major".into()),
            wells: Some(vec!["PAD-A-*".into(), "ESP-7".into()]),
            fields: Some(vec!["North".into()]),
            ..request(&["alarm.raised"])
        })
        .unwrap();
        let a = alarm("PAD-A-3", "gas_lock", "critical");
        assert!(f.matches(Raised, &a, None));
        assert!(!f.matches(Cleared, &a, None));
        assert!(!f.matches(Raised, &alarm("PAD-A-3", "pump_off", "critical"), None));
        assert!(!f.matches(Raised, &alarm("PAD-A-3", "gas_lock", "minor"), None));
        assert!(f.matches(Raised, &alarm("ESP-7", "gas_lock", "major"), None));
        assert!(!f.matches(Raised, &alarm("ESP-70", "gas_lock", "major"), None));
        assert!(f.matches(Raised, &alarm("X-1", "gas_lock", "major"), Some("North")));
        assert!(!f.matches(Raised, &alarm("X-1", "gas_lock", "major"), Some("South")));
        let all = RuleFilter::parse(request(&["alarm.cleared"])).unwrap();
        assert!(all.matches(Cleared, &alarm("any", "anomaly", "minor"), None));
    }

    /// Every refusal names what is wrong, as the API has always said it.
    #[test]
    fn filters_as_sent_are_checked_once() {
        let refused = |r: RuleFilterRequest| RuleFilter::parse(r).unwrap_err().to_string();
        assert_eq!(
            refused(request(&[])),
            "`events` must name at least one of alarm.raised, alarm.acknowledged, alarm.cleared"
        );
        assert_eq!(
            refused(request(&["alarm.raised", "alarm.raise"])),
            r#"event "alarm.raise" is not one of alarm.raised, alarm.acknowledged, alarm.cleared"#
        );
        assert_eq!(
            refused(RuleFilterRequest {
                conditions: Some(vec!["anomaly".into(), "gaslock".into()]),
                ..request(&["alarm.raised"])
            }),
            r#""gaslock" is not a condition name"#
        );
        assert_eq!(
            refused(RuleFilterRequest {
                min_severity: Some("severe".into()),
                ..request(&["alarm.raised"])
            }),
            r#"min_severity "severe" is not one of minor, major, critical"#
        );
        assert_eq!(
            refused(RuleFilterRequest {
                fields: Some(Vec::new()),
                ..request(&["alarm.raised"])
            }),
            "`wells` and `fields` hold 1 to 1000 entries when given"
        );
        for wells in [vec!["".to_owned()], vec!["W".repeat(128) + "*"]] {
            assert_eq!(
                refused(RuleFilterRequest {
                    wells: Some(wells),
                    ..request(&["alarm.raised"])
                }),
                "well ids, patterns and fields are 1 to 128 characters"
            );
        }
        assert!(
            RuleFilter::parse(RuleFilterRequest {
                wells: Some(vec!["W".repeat(127) + "*"]),
                ..request(&["alarm.raised"])
            })
            .is_ok()
        );
    }

    /// A filter as stored (the JSON the server has always written) reads into the typed
    /// filter and is written back the same.
    #[test]
    fn stored_filters_read_back_unchanged() {
        let stored = serde_json::json!({
            "events": ["alarm.raised", "alarm.cleared"],
            "conditions": ["gas_lock", "anomaly"],
            "min_severity": "major",
            "wells": ["PAD-A-*", "ESP-7"],
            "fields": ["North"]
        });
        let filter = RuleFilter::from_stored(&stored).unwrap();
        assert_eq!(filter.events, vec![AlarmEvent::Raised, AlarmEvent::Cleared]);
        assert_eq!(filter.min_severity, Some(Severity::Major));
        assert_eq!(
            filter.wells,
            Some(vec![
                WellPattern::Prefix("PAD-A-".into()),
                WellPattern::Exact("ESP-7".into())
            ])
        );
        assert_eq!(serde_json::to_value(&filter).unwrap(), stored);
        let minimal = serde_json::json!({"events": ["alarm.acknowledged"]});
        let filter = RuleFilter::from_stored(&minimal).unwrap();
        assert_eq!(serde_json::to_value(&filter).unwrap(), minimal);
        assert!(RuleFilter::from_stored(&serde_json::json!({"events": ["alarm.raise"]})).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            attempts: 32,
        };
        assert_eq!(p.delay(1), Duration::from_secs(10));
        assert_eq!(p.delay(2), Duration::from_secs(20));
        assert_eq!(p.delay(5), Duration::from_secs(160));
        assert_eq!(p.delay(9), Duration::from_secs(2560));
        assert_eq!(p.delay(10), Duration::from_secs(3600));
        assert_eq!(p.delay(1000), Duration::from_secs(3600));
        // 10 s doubling to 2 560 s, then 22 waits of an hour: 84 310 s.
        assert_eq!(p.window(), Duration::from_secs(84_310));
    }

    /// Issue 19: settings that give up before a day are warned about at start, with the span
    /// they retry for and the attempts that would reach a day; the defaults are not.
    #[test]
    fn retries_shorter_than_a_day_are_warned_about() {
        assert_eq!(
            RetryPolicy::from_config(&Config::default()).short_retry_warning(),
            None
        );
        let p = RetryPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            attempts: 10,
        };
        // 10 s doubling: 10 + 20 + ... + 2 560 = 5 110 s over the 9 waits of 10 attempts.
        let warning = p.short_retry_warning().unwrap();
        assert!(
            warning.contains("given up after 10 attempts spanning 1.4 h (5110.0 s)"),
            "{warning}"
        );
        // 5 110 s, then hours: 5 110 + 23 · 3 600 = 87 910 s ≥ 86 400 at 33 attempts.
        assert!(
            warning.contains("notify_max_attempts = 33 would retry for 24.4 h (87910.0 s)"),
            "{warning}"
        );
        let capped = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 1000,
        };
        let warning = capped.short_retry_warning().unwrap();
        assert!(warning.contains("raise notify_retry_max_secs"), "{warning}");
        assert_eq!(
            RetryPolicy {
                attempts: 32,
                ..RetryPolicy::from_config(&Config::default())
            }
            .short_retry_warning()
            .map(|w| w.contains("33 would retry")),
            Some(true)
        );
    }

    /// Issue 19: a failing delivery is retried for at least 24 h with the default settings.
    #[test]
    fn the_defaults_retry_for_at_least_a_day() {
        let p = RetryPolicy::from_config(&Config::default());
        let day = Duration::from_secs(24 * 3600);
        assert!(p.window() >= day, "{:?} < 24 h", p.window());
        // And not much longer: one attempt fewer would fall short.
        let shorter = RetryPolicy {
            attempts: p.attempts - 1,
            ..p
        };
        assert!(shorter.window() < day, "{:?}", shorter.window());
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature("Jefe", 0, "");
        assert_eq!(sig.len(), 64);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(signature("k", 1, "body"), signature("k", 2, "body"));
        assert_ne!(signature("k", 1, "body"), signature("k2", 1, "body"));
    }
}
