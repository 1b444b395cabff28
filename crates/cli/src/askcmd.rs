//! `espwatch ask "question"`: a question in plain words, answered by a server (`--url`, as
//! `POST /api/v1/ask`) or straight from a store (`--data-dir` / `--database-url`, the same
//! `espwatch_app::ask` service, without a live diagnosis: alarms and data only).

use anyhow::{Context, bail};
use clap::Args;
use espwatch_app::Config;
use espwatch_app::ask::{AskError, Asker, not_understood_json};
use espwatch_core::Timestamp;
use espwatch_core::access::{Role, WellScope};
use espwatch_core::localtime::UtcOffset;
use serde_json::{Value, json};

use crate::Target;

#[derive(Args, Debug)]
pub struct AskArgs {
    /// The question, e.g. "average motor current of ESP-003 yesterday".
    #[arg(value_name = "QUESTION")]
    question: String,
    #[command(flatten)]
    pub target: Target,
    /// The zone "today" and "yesterday" are read in, as a UTC offset (`+03:00`). Default: UTC.
    #[arg(long, value_name = "OFFSET")]
    timezone: Option<String>,
    /// Print the whole JSON answer (`{"interpretation", "answer", "suggestions"}`).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: &AskArgs, config: Config) -> anyhow::Result<()> {
    let zone = match &args.timezone {
        None => UtcOffset::UTC,
        Some(z) => UtcOffset::parse(z).map_err(anyhow::Error::msg)?,
    };
    let outcome = match &args.target.url {
        Some(url) => remote(args, url).await?,
        None => local(args, &config, zone).await?,
    };
    match outcome {
        Ok(body) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", render(&body));
            }
            Ok(())
        }
        Err((message, details)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({ "message": message, "details": details })
                    )?
                );
            } else {
                eprint!("{}", render_refusal(&message, &details));
            }
            bail!("the question was not understood")
        }
    }
}

type Outcome = Result<Value, (String, Value)>;

async fn remote(args: &AskArgs, url: &str) -> anyhow::Result<Outcome> {
    let client = args
        .target
        .http_client(std::time::Duration::from_secs(60))?;
    let mut body = json!({ "question": args.question });
    if let Some(z) = &args.timezone {
        body["timezone"] = json!(z);
    }
    let endpoint = format!("{}/api/v1/ask", url.trim_end_matches('/'));
    let response = client
        .post(&endpoint)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    let status = response.status();
    let text = response.text().await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(Ok(value));
    }
    if status.as_u16() == 422 && value["error"]["type"] == "not_understood" {
        return Ok(Err((
            value["error"]["message"].as_str().unwrap_or("").to_owned(),
            value["error"]["details"].clone(),
        )));
    }
    bail!(
        "the server answered {status}: {}",
        value["error"]["message"]
            .as_str()
            .unwrap_or(&value.to_string())
    )
}

async fn local(args: &AskArgs, config: &Config, zone: UtcOffset) -> anyhow::Result<Outcome> {
    if config.database_url.is_none() && !config.data_dir.exists() {
        bail!(
            "no store at {}: name it with --data-dir DIR or --database-url URL, or ask a \
             server with --url",
            config.data_dir.display()
        );
    }
    let opened = args.target.open_local(config).await?;
    // Whoever can open the store reads all of it, as the other store commands do.
    let asker = Asker {
        store: opened.store.as_ref(),
        alarms: opened.alarms.as_deref(),
        diagnoses: None,
        scope: &WellScope::All,
        role: Role::Admin,
        now: Timestamp::from_datetime(chrono::Utc::now()),
        zone,
    };
    let result = espwatch_app::ask::ask(&asker, &args.question).await;
    opened.store.close().await?;
    match result {
        Ok(answered) => Ok(Ok(answered.to_json())),
        Err(AskError::NotUnderstood(e)) => Ok(Err((e.message.clone(), not_understood_json(&e)))),
        Err(e) => Err(e.into()),
    }
}

/// The answer as a person reads it: the sentence, what was understood, the numbers.
fn render(body: &Value) -> String {
    let mut out = String::new();
    out.push_str(body["answer"]["text"].as_str().unwrap_or(""));
    out.push_str("\n\n");
    let it = &body["interpretation"];
    let mut understood = vec![format!("intent={}", it["intent"].as_str().unwrap_or("?"))];
    for key in ["wells", "groups", "channels", "units"] {
        if let Some(list) = it[key].as_array().filter(|l| !l.is_empty()) {
            let items: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            understood.push(format!("{key}={}", items.join(",")));
        }
    }
    for key in [
        "condition",
        "agg",
        "step",
        "limit",
        "order",
        "alarm_state",
        "run_state",
        "stale_for",
    ] {
        match &it[key] {
            Value::Null => {}
            Value::String(s) => understood.push(format!("{key}={s}")),
            v => understood.push(format!("{key}={v}")),
        }
    }
    if let Some(f) = it["filter"].as_object() {
        understood.push(format!(
            "filter={} {} {} ({})",
            f["channels"][0].as_str().unwrap_or("?"),
            f["op"].as_str().unwrap_or("?"),
            f["value"],
            f["written"].as_str().unwrap_or("")
        ));
    }
    if let Some(t) = it["time"].as_str() {
        match (it["from"].as_str(), it["to"].as_str()) {
            (Some(from), Some(to)) => understood.push(format!("time={t} ({from} → {to})")),
            _ => understood.push(format!("time={t}")),
        }
    }
    out.push_str(&format!("understood: {}\n", understood.join(" ")));
    let values = body["answer"]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for v in values.iter().take(50) {
        if let (Some(w), Some(c), Some(x)) = (
            v["well_id"].as_str(),
            v["channel"].as_str(),
            v["value"].as_f64(),
        ) {
            out.push_str(&format!(
                "  {w:<16} {c:<24} {:>12} {}\n",
                espwatch_core::ask::fmt_number(x),
                v["unit"].as_str().unwrap_or("")
            ));
        }
    }
    if values.len() > 50 {
        out.push_str(&format!(
            "  ... {} more values (--json)\n",
            values.len() - 50
        ));
    }
    let series = body["answer"]["series"].as_array().map_or(0, Vec::len);
    if series > 0 {
        out.push_str(&format!("{series} series (--json for the points)\n"));
    }
    if let Some(s) = body["suggestions"].as_array().filter(|s| !s.is_empty()) {
        let s: Vec<&str> = s.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("try also: {}\n", s.join(" | ")));
    }
    out
}

fn render_refusal(message: &str, details: &Value) -> String {
    let mut out = format!("not understood: {message}\n");
    if let Some(r) = details["recognised"].as_object().filter(|r| !r.is_empty()) {
        let parts: Vec<String> = r.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("recognised: {}\n", parts.join(" ")));
    }
    if let Some(u) = details["unknown"].as_array().filter(|u| !u.is_empty()) {
        let u: Vec<&str> = u.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("unknown words: {}\n", u.join(", ")));
    }
    out.push_str("questions it would understand:\n");
    for s in details["suggestions"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", s.as_str().unwrap_or("")));
    }
    out
}
