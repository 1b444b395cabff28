//! Alarm notifications over HTTP (admin only): channels (signed webhooks, e-mail), routing
//! rules, test messages and the delivery log. Webhook secrets are write-only: shown once when
//! the server generates one, never listed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use espwatch_store::{
    ChannelKind, Delivery, DeliveryFilter, DeliveryState, NewChannel, NewRule, NotifyChannel,
    NotifyRule,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::now;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, RequestContext};
use crate::notify::{RuleFilter, RuleFilterRequest};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct ChannelView {
    id: i64,
    name: String,
    /// `webhook`, `email` or `amqp`.
    kind: &'static str,
    /// Webhook URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// E-mail recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Vec<String>>,
    /// AMQP topic exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<String>,
    /// Whether the channel signs with a secret (the secret itself is never shown).
    has_secret: bool,
    created_by: String,
    created_at: String,
    /// True while the channel's latest finished delivery is dead (after `notify_max_attempts`
    /// failed attempts): alarm changes are not queued to it until a delivery gets through
    /// again — send a test message to enable it.
    disabled: bool,
    /// When the delivery that disabled it died.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_since: Option<String>,
    /// Why it died (the last error).
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    /// The generated signing secret: in the answer to its creation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<NotifyChannel> for ChannelView {
    fn from(c: NotifyChannel) -> Self {
        let (url, to, exchange) = match c.kind {
            ChannelKind::Webhook => (Some(c.target), None, None),
            ChannelKind::Email => (
                None,
                Some(c.target.split(',').map(str::to_owned).collect()),
                None,
            ),
            ChannelKind::Amqp => (None, None, Some(c.target)),
        };
        ChannelView {
            id: c.id,
            name: c.name,
            kind: c.kind.name(),
            url,
            to,
            exchange,
            has_secret: c.secret.is_some(),
            created_by: c.created_by,
            created_at: c.created_at.to_rfc3339(),
            disabled: false,
            disabled_since: None,
            disabled_reason: None,
            secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    channels: Vec<ChannelView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannelBody {
    /// 1–64 characters.
    name: String,
    /// `webhook`, `email` or `amqp`.
    kind: String,
    /// Webhook: `http://` or `https://` URL.
    url: Option<String>,
    /// E-mail: 1–50 recipient addresses.
    to: Option<Vec<String>>,
    /// AMQP: the topic exchange events are published to (routing key `<event>.<well>`),
    /// over the server's `amqp_url`; default `espwatch.events`.
    exchange: Option<String>,
    /// Webhook signing secret (at least 24 characters); absent: one is generated and shown
    /// once in the answer.
    secret: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_body", message)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(invalid(
            "`name` must be 1–64 characters without control characters",
        ));
    }
    Ok(())
}

fn check_email(a: &str) -> bool {
    let parts: Vec<&str> = a.split('@').collect();
    a.len() <= 254
        && parts.len() == 2
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && !a
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\".contains(c))
}

fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request("invalid_id", format!("{text:?} is not a {what} id")))
}

/// Every notification channel (secrets never shown).
#[utoipa::path(get, path = "/api/v1/notifications/channels", tag = "notifications",
    responses((status = 200, description = "Channels", body = ChannelList)))]
pub async fn list_channels(State(state): State<AppState>) -> Result<Json<ChannelList>, ApiError> {
    let store = state.notifier()?.store().clone();
    let channels = store.list_channels().await?;
    let mut views = Vec::with_capacity(channels.len());
    for c in channels {
        let id = c.id;
        let mut view = ChannelView::from(c);
        if let Some(dead) = crate::notify::channel_disabled(store.as_ref(), id).await? {
            view.disabled = true;
            view.disabled_since = Some(dead.updated_at.to_rfc3339());
            view.disabled_reason = dead.last_error;
        }
        views.push(view);
    }
    Ok(Json(ChannelList { channels: views }))
}

/// Creates a channel: a webhook (JSON POST signed with HMAC-SHA256 over
/// `<X-Espwatch-Timestamp>.<body>`, header `X-Espwatch-Signature: v1=<hex>`) or e-mail
/// recipients (sent through the configured SMTP server).
#[utoipa::path(post, path = "/api/v1/notifications/channels", tag = "notifications",
    request_body = NewChannelBody,
    responses(
        (status = 201, description = "Created; `secret` present when it was generated", body = ChannelView),
        (status = 409, description = "Name taken", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid channel", body = crate::error::ErrorEnvelope)
    ))]
pub async fn create_channel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    ApiJson(body): ApiJson<NewChannelBody>,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    let notifier = state.notifier()?;
    check_name(&body.name)?;
    let kind = ChannelKind::parse(&body.kind)
        .ok_or_else(|| invalid("`kind` must be `webhook`, `email` or `amqp`"))?;
    if kind != ChannelKind::Amqp && body.exchange.is_some() {
        return Err(invalid("only an amqp channel has an `exchange`"));
    }
    let mut generated = None;
    let (target, secret) = match kind {
        ChannelKind::Webhook => {
            if body.to.is_some() {
                return Err(invalid("a webhook has a `url`, not `to`"));
            }
            let url = body.url.ok_or_else(|| invalid("a webhook needs a `url`"))?;
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| invalid(format!("`url` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.host_str().is_none()
                || !parsed.username().is_empty()
                || parsed.password().is_some()
                || url.len() > 2048
            {
                return Err(invalid(
                    "`url` must be an http:// or https:// URL without credentials, at most 2048 characters",
                ));
            }
            let secret = match body.secret {
                Some(s) if s.chars().count() < 24 || s.len() > 256 => {
                    return Err(invalid("`secret` must be 24–256 characters"));
                }
                Some(s) => s,
                None => {
                    let s = format!(
                        "whsec_{}",
                        espwatch_app::keys::random_token(32)
                            .map_err(|e| ApiError::internal(format!("randomness: {e}")))?
                    );
                    generated = Some(s.clone());
                    s
                }
            };
            (url, Some(secret))
        }
        ChannelKind::Email => {
            if body.url.is_some() || body.secret.is_some() {
                return Err(invalid("an e-mail channel has `to`, not `url` or `secret`"));
            }
            let to = body
                .to
                .ok_or_else(|| invalid("an e-mail channel needs `to`"))?;
            if to.is_empty() || to.len() > 50 {
                return Err(invalid("`to` must list 1–50 addresses"));
            }
            if let Some(bad) = to.iter().find(|a| !check_email(a)) {
                return Err(invalid(format!("{bad:?} is not an e-mail address")));
            }
            (to.join(","), None)
        }
        ChannelKind::Amqp => {
            if body.url.is_some() || body.secret.is_some() || body.to.is_some() {
                return Err(invalid(
                    "an amqp channel has `exchange`, not `url`, `to` or `secret`",
                ));
            }
            let exchange = body.exchange.unwrap_or_else(|| "espwatch.events".into());
            if exchange.is_empty()
                || exchange.len() > 255
                || exchange.starts_with("amq.")
                || !exchange
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
            {
                return Err(invalid(
                    "`exchange` must be 1–255 characters of letters, digits, `.-_:`, not starting with `amq.`",
                ));
            }
            (exchange, None)
        }
    };
    let channel = notifier
        .store()
        .create_channel(NewChannel {
            name: body.name,
            kind,
            target,
            secret,
            created_by: principal.actor(),
            created_at: now(),
        })
        .await?;
    state
        .security
        .audit
        .record_action(
            "notification_channel_create",
            &context,
            &principal,
            serde_json::json!({ "channel": channel.id, "name": channel.name, "kind": kind.name(), "target": channel.target }),
        )
        .await;
    let mut view = ChannelView::from(channel);
    view.secret = generated;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Deletes a channel and its rules; its pending deliveries become `dead`.
#[utoipa::path(delete, path = "/api/v1/notifications/channels/{id}", tag = "notifications",
    params(("id" = i64, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such channel", body = crate::error::ErrorEnvelope)
    ))]
pub async fn delete_channel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "channel")?;
    if !state.notifier()?.store().delete_channel(id, now()).await? {
        return Err(ApiError::not_found(format!("no channel {id}")));
    }
    state
        .security
        .audit
        .record_action(
            "notification_channel_delete",
            &context,
            &principal,
            serde_json::json!({ "channel": id }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct TestQueued {
    /// The test delivery's idempotency key (see the delivery log).
    key: String,
}

/// Queues a test message to a channel; it is delivered (and retried) like any other.
#[utoipa::path(post, path = "/api/v1/notifications/channels/{id}/test", tag = "notifications",
    params(("id" = i64, Path, description = "Channel id")),
    responses(
        (status = 202, description = "Queued", body = TestQueued),
        (status = 404, description = "No such channel", body = crate::error::ErrorEnvelope)
    ))]
pub async fn test_channel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TestQueued>), ApiError> {
    let id = parse_id(&id, "channel")?;
    let notifier = state.notifier()?;
    let channel = notifier
        .store()
        .get_channel(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no channel {id}")))?;
    let key = notifier
        .enqueue_test(&channel, &principal.actor())
        .await
        .map_err(|e| ApiError::internal(format!("enqueuing a test: {e:#}")))?;
    state
        .security
        .audit
        .record_action(
            "notification_test",
            &context,
            &principal,
            serde_json::json!({ "channel": id, "key": key }),
        )
        .await;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { key })))
}

#[derive(Serialize, ToSchema)]
pub struct RuleView {
    id: i64,
    name: String,
    channel_id: i64,
    #[serde(flatten)]
    filter: RuleFilter,
    created_by: String,
    created_at: String,
}

impl From<NotifyRule> for RuleView {
    fn from(r: NotifyRule) -> Self {
        RuleView {
            id: r.id,
            name: r.name,
            channel_id: r.channel_id,
            filter: RuleFilter::from_stored(&r.filter).unwrap_or_default(),
            created_by: r.created_by,
            created_at: r.created_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RuleList {
    rules: Vec<RuleView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuleBody {
    /// 1–64 characters.
    name: String,
    channel_id: i64,
    /// `alarm.raised`, `alarm.acknowledged`, `alarm.cleared` (at least one).
    events: Vec<String>,
    /// Condition names (`gas_lock`, ..., `anomaly`); absent: all.
    conditions: Option<Vec<String>>,
    /// `minor`, `major` or `critical`: alarms at least this severe; absent: all.
    min_severity: Option<String>,
    /// Well ids or `PREFIX*` patterns; absent (and no `fields`): every well.
    wells: Option<Vec<String>>,
    /// Oil fields of the wells registry; absent (and no `wells`): every well.
    fields: Option<Vec<String>>,
}

/// Every routing rule.
#[utoipa::path(get, path = "/api/v1/notifications/rules", tag = "notifications",
    responses((status = 200, description = "Rules", body = RuleList)))]
pub async fn list_rules(State(state): State<AppState>) -> Result<Json<RuleList>, ApiError> {
    let rules = state.notifier()?.store().list_rules().await?;
    Ok(Json(RuleList {
        rules: rules.into_iter().map(Into::into).collect(),
    }))
}

/// Creates a routing rule: alarm changes matching its events, conditions, minimum severity and
/// wells (ids, `PREFIX*` patterns, or registry `fields`) are sent to its channel.
#[utoipa::path(post, path = "/api/v1/notifications/rules", tag = "notifications",
    request_body = NewRuleBody,
    responses(
        (status = 201, description = "Created", body = RuleView),
        (status = 409, description = "Name taken", body = crate::error::ErrorEnvelope),
        (status = 422, description = "Invalid rule or unknown channel", body = crate::error::ErrorEnvelope)
    ))]
pub async fn create_rule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    ApiJson(body): ApiJson<NewRuleBody>,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    let notifier = state.notifier()?;
    check_name(&body.name)?;
    let rule_filter = RuleFilter::parse(RuleFilterRequest {
        events: body.events,
        conditions: body.conditions,
        min_severity: body.min_severity,
        wells: body.wells,
        fields: body.fields,
    })
    .map_err(|e| invalid(e.to_string()))?;
    if notifier
        .store()
        .get_channel(body.channel_id)
        .await?
        .is_none()
    {
        return Err(invalid(format!("no channel {}", body.channel_id)));
    }
    let filter = serde_json::to_value(&rule_filter)
        .map_err(|e| ApiError::internal(format!("rule filter: {e}")))?;
    let rule = notifier
        .store()
        .create_rule(NewRule {
            name: body.name,
            channel_id: body.channel_id,
            filter: filter.clone(),
            created_by: principal.actor(),
            created_at: now(),
        })
        .await?;
    state
        .security
        .audit
        .record_action(
            "notification_rule_create",
            &context,
            &principal,
            serde_json::json!({ "rule": rule.id, "name": rule.name, "channel": rule.channel_id, "filter": filter }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

/// Deletes a routing rule (deliveries already queued are still sent).
#[utoipa::path(delete, path = "/api/v1/notifications/rules/{id}", tag = "notifications",
    params(("id" = i64, Path, description = "Rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule", body = crate::error::ErrorEnvelope)
    ))]
pub async fn delete_rule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "rule")?;
    if !state.notifier()?.store().delete_rule(id).await? {
        return Err(ApiError::not_found(format!("no rule {id}")));
    }
    state
        .security
        .audit
        .record_action(
            "notification_rule_delete",
            &context,
            &principal,
            serde_json::json!({ "rule": id }),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    id: i64,
    /// Idempotency key (also sent to the receiver).
    key: String,
    channel_id: i64,
    /// 0 for test messages.
    rule_id: i64,
    event: String,
    /// `pending`, `delivered` or `dead`.
    state: &'static str,
    attempts: i32,
    /// When the next attempt is due (`pending`).
    next_attempt_at: String,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            key: d.key,
            channel_id: d.channel_id,
            rule_id: d.rule_id,
            event: d.event,
            state: d.state.name(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.to_rfc3339(),
            last_error: d.last_error,
            created_at: d.created_at.to_rfc3339(),
            updated_at: d.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    channel_id: Option<i64>,
    /// Only the notifications of this alarm.
    alarm_id: Option<i64>,
    /// `pending`, `delivered` or `dead`.
    state: Option<String>,
    /// 1–10 000 (default 1 000), newest first.
    limit: Option<usize>,
}

/// The delivery log (the outbox), newest first.
#[utoipa::path(get, path = "/api/v1/notifications/deliveries", tag = "notifications",
    params(DeliveryParams),
    responses(
        (status = 200, description = "Deliveries", body = DeliveryList),
        (status = 400, description = "Bad filter", body = crate::error::ErrorEnvelope)
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let filter = DeliveryFilter {
        channel_id: params.channel_id,
        key_prefix: params.alarm_id.map(|id| format!("alarm-{id}-")),
        state: match params.state.as_deref() {
            None => None,
            Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("state {s:?} is not one of pending, delivered, dead"),
                )
            })?),
        },
        limit: match params.limit {
            None => 1000,
            Some(n @ 1..=10_000) => n,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "limit must be between 1 and 10000",
                ));
            }
        },
    };
    let deliveries = state.notifier()?.store().list_deliveries(&filter).await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}
