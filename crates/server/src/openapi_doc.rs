//! The OpenAPI document as served. The handlers' annotations describe what each handler
//! answers; what the layers around every handler add is written here once, from the same
//! table the server enforces, so the document and the server cannot drift apart:
//!
//! - routes the policy table makes public need no credentials (`security: []`);
//! - every operation lists the refusals the layers give in the error envelope: 400
//!   (malformed parameters or body), 401/403 (routes that need an identity), 413/415/422
//!   (routes that read a body), 429 (rate limits), 503 (overload, a dependency down,
//!   shutdown), 500;
//! - an `allOf` made by `#[serde(flatten)]` of a closed schema (`WellMeta`, which refuses
//!   unknown fields, inside `WellResponse`) is merged into one object, since a closed member
//!   of an `allOf` would forbid the fields next to it.

use serde_json::{Map, Value, json};
use utoipa::openapi::OpenApi;

use crate::auth::policy::{self, Access};

/// The generated document, completed (see the module comment), as the JSON served.
pub fn finish(doc: &OpenApi) -> Value {
    let mut value = serde_json::to_value(doc).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        Value::Null
    });
    complete(&mut value);
    value
}

fn complete(doc: &mut Value) {
    let schemas = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or(Value::Null);
    merge_closed_all_of(doc, &schemas);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Ok(method) = method.to_uppercase().parse::<axum::http::Method>() else {
                continue;
            };
            let public = policy::ROUTES
                .iter()
                .any(|r| r.path == path && r.method == method && r.access == Access::Public);
            if let Some(op) = op.as_object_mut() {
                complete_operation(op, public);
            }
        }
    }
}

fn complete_operation(op: &mut Map<String, Value>, public: bool) {
    if public {
        op.insert("security".into(), json!([]));
    }
    let has_body = op.contains_key("requestBody");
    let mut refusals = vec![(
        "400",
        "Malformed request: a path or query parameter, or a body that cannot be parsed",
    )];
    if !public {
        refusals.push(("401", "No valid credentials (or more than one)"));
        refusals.push((
            "403",
            "The identity's role may not call this route, or may not see this well",
        ));
    }
    if has_body {
        refusals.push(("413", "The body is larger than this route accepts"));
        refusals.push(("415", "Unsupported Content-Type"));
        refusals.push((
            "422",
            "Well-formed, but not what this route takes (wrong shape or invalid values)",
        ));
    }
    refusals.push(("429", "Rate limited; `Retry-After` says when to retry"));
    refusals.push((
        "503",
        "Overloaded, shutting down, or the store unavailable; `Retry-After` when known",
    ));
    refusals.push((
        "500",
        "Internal error; the envelope's id is the one logged with the cause",
    ));
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    for (status, description) in refusals {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
            })
        });
    }
}

/// The schema a `$ref` points to (components only).
fn resolve<'a>(schema: &'a Value, schemas: &'a Value) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => schemas.get(name).unwrap_or(schema),
        None => schema,
    }
}

/// Replaces, anywhere in the document, an `allOf` of object schemas one of which is closed
/// (`additionalProperties: false`) by the one object they describe together.
fn merge_closed_all_of(value: &mut Value, schemas: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(merged) = map
                .get("allOf")
                .and_then(|parts| merged_object(parts, schemas))
            {
                map.remove("allOf");
                for (k, v) in merged {
                    map.entry(k).or_insert(v);
                }
            }
            for v in map.values_mut() {
                merge_closed_all_of(v, schemas);
            }
        }
        Value::Array(items) => {
            for v in items {
                merge_closed_all_of(v, schemas);
            }
        }
        _ => {}
    }
}

fn merged_object(parts: &Value, schemas: &Value) -> Option<Map<String, Value>> {
    let parts: Vec<&Value> = parts
        .as_array()?
        .iter()
        .map(|p| resolve(p, schemas))
        .collect();
    let closed = |p: &Value| p.get("additionalProperties") == Some(&Value::Bool(false));
    if parts.len() < 2 || !parts.iter().any(|p| closed(p)) {
        return None;
    }
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for part in &parts {
        if part.get("type").and_then(Value::as_str) != Some("object") {
            return None;
        }
        if let Some(props) = part.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                properties.insert(k.clone(), v.clone());
            }
        }
        for r in part
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !required.contains(r) {
                required.push(r.clone());
            }
        }
    }
    let mut out = Map::new();
    out.insert("type".into(), json!("object"));
    out.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    if parts.iter().all(|p| closed(p)) {
        out.insert("additionalProperties".into(), json!(false));
    }
    Some(out)
}
