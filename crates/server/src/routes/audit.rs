//! The audit trail over HTTP: admins read everything, analysts their own records.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use espwatch_core::Timestamp;
use espwatch_core::access::Permission;
use espwatch_store::{AuditFilter, AuditRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// `user:<name>` or `key:<id>`. Analysts may only ask for themselves (the default).
    actor: Option<String>,
    /// Event kind, e.g. `request`, `login_failure`, `user_change`. Security events from a
    /// part of the trail that retention pruned (`audit_retention`, `espwatch audit prune`) are
    /// kept as `audit_carried` records: asking for the original kind finds them too, shown
    /// with kind `audit_carried`, the original kind in `detail.kind` and the original record
    /// (its id, hashes and canonical text) in `detail`. `kind=audit_carried` lists them all;
    /// `kind=audit_pruned` lists the records naming what each prune removed.
    kind: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    /// Records older than this id (paging).
    before_id: Option<i64>,
    /// At most this many (1 to 10000, default 100), newest first.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    id: i64,
    ts: String,
    /// The event kind; `audit_carried` for a security event kept through a prune (its
    /// original kind in `detail.kind`), `audit_pruned` for the record naming a prune.
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    hash: String,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        AuditView {
            id: r.id,
            ts: e.ts.to_rfc3339(),
            kind: e.kind,
            request_id: e.request_id,
            method: e.method,
            route: e.route,
            status: e.status,
            actor: e.actor,
            role: e.role,
            source: e.source,
            duration_ms: e.duration_ms,
            detail: e.detail,
            hash: r.hash,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    records: Vec<AuditView>,
}

fn parse_ts(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t)
            .map_err(|e| ApiError::bad_request("invalid_query", format!("{name}: {e}")))
    })
    .transpose()
}

/// Audit records, newest first. Admins see all; analysts only their own. Security events of
/// a pruned part of the trail appear as `audit_carried` records (see `kind`).
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin",
    params(AuditParams),
    responses(
        (status = 200, description = "Records, newest first; a security event kept through a prune has kind `audit_carried` and its original kind in `detail.kind`", body = AuditList),
        (status = 400, description = "Invalid query (limit outside 1..=10000, bad time)", body = crate::error::ErrorEnvelope),
        (status = 403, description = "Asking for another identity's records without audit:read", body = crate::error::ErrorEnvelope)
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = params.limit.unwrap_or(AuditFilter::DEFAULT_LIMIT);
    if !(1..=AuditFilter::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {}", AuditFilter::MAX_LIMIT),
        ));
    }
    let own = principal.actor();
    let actor = if principal.can(Permission::AuditReadAll) {
        params.actor
    } else {
        match params.actor {
            Some(a) if a != own => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "you may only read your own audit records",
                ));
            }
            _ => Some(own),
        }
    };
    let filter = AuditFilter {
        actor,
        kind: params.kind,
        since: parse_ts("since", params.since.as_deref())?,
        until: parse_ts("until", params.until.as_deref())?,
        before_id: params.before_id,
        limit,
    };
    let records = state.security.store.list_audit(&filter).await?;
    Ok(Json(AuditList {
        records: records.into_iter().map(Into::into).collect(),
    }))
}
