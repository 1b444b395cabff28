//! `espwatch webhooks add|list|remove|test|deliveries`: alarm webhooks managed through a
//! running server's notification API (`--url`, an admin `--api-key`). A webhook is a signed
//! webhook channel plus the routing rule that says which alarm changes go to it; `add` makes
//! both (and takes the channel back if the rule is refused), `remove` deletes the channel with
//! its rules. Everything is checked and audited by the server, as from the console.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Send alarm changes to a URL: a signed webhook (HMAC-SHA256 over `<timestamp>.<body>`,
    /// header `X-Espwatch-Signature: v1=<hex>`) and the rule choosing what it gets.
    Add(AddArgs),
    /// Notification channels with their rules.
    List(ServerArgs),
    /// Delete a webhook (channel id or name) and its rules; its pending deliveries end `dead`.
    Remove(ChannelArgs),
    /// Queue a test message to a webhook (delivered and retried like any other).
    Test(ChannelArgs),
    /// The delivery log, newest first: state, attempts, last error.
    Deliveries(DeliveriesArgs),
}

/// The server the command talks to.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Base URL of the running espwatch server, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "ESPWATCH_URL", value_name = "URL")]
    url: String,
    /// An admin API key (or env ESPWATCH_API_KEY); see `espwatch apikeys create`.
    #[arg(long, env = "ESPWATCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the server's JSON answers.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Where to POST: an http:// or https:// URL without credentials.
    #[arg(value_name = "WEBHOOK_URL")]
    target: String,
    /// Alarm changes to send, comma-separated: alarm.raised, alarm.acknowledged, alarm.cleared.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "alarm.raised,alarm.cleared"
    )]
    events: Vec<String>,
    /// Only these wells: ids or `PREFIX*` patterns, comma-separated. Default: every well.
    #[arg(long, value_delimiter = ',')]
    wells: Vec<String>,
    /// Only wells of these oil fields of the registry, comma-separated.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Only these conditions (`gas_lock`, `closed_valve`, ..., `anomaly`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    conditions: Vec<String>,
    /// Only alarms at least this severe: minor, major or critical.
    #[arg(long, value_name = "SEVERITY")]
    min_severity: Option<String>,
    /// The webhook's name (unique). Default: the URL's host and path.
    #[arg(long)]
    name: Option<String>,
    /// Signing secret, 24–256 characters (or env ESPWATCH_WEBHOOK_SECRET). Default: the
    /// server generates one and it is printed once.
    #[arg(long, env = "ESPWATCH_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args, Debug)]
pub struct ChannelArgs {
    /// The webhook's channel id or name (see `webhooks list`).
    #[arg(value_name = "ID_OR_NAME")]
    channel: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args, Debug)]
pub struct DeliveriesArgs {
    /// Only this channel (id or name).
    #[arg(long, value_name = "ID_OR_NAME")]
    channel: Option<String>,
    /// Only pending, delivered or dead deliveries.
    #[arg(long)]
    state: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// The notification API of one server, with the key.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(server: &ServerArgs) -> anyhow::Result<Api> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &server.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("the API key contains invalid characters"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Api {
            base: format!("{}/api/v1/notifications", server.url.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .default_headers(headers)
                .build()?,
        })
    }

    /// One call; the body of a 2xx, else the server's error message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        match status.as_u16() {
            401 => bail!(
                "the server refused the credentials (401): give an admin key with --api-key or ESPWATCH_API_KEY"
            ),
            403 => bail!("managing notifications needs an admin key (403): {message}"),
            _ => bail!("the server answered {status}: {message}"),
        }
    }

    /// A channel by id, or by name through the list.
    async fn channel_id(&self, channel: &str) -> anyhow::Result<i64> {
        if let Ok(id) = channel.parse::<i64>() {
            return Ok(id);
        }
        let list = self.call(reqwest::Method::GET, "/channels", None).await?;
        list["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == channel)
            .and_then(|c| c["id"].as_i64())
            .with_context(|| {
                format!("no notification channel named {channel:?} (see `espwatch webhooks list`)")
            })
    }
}

pub async fn run(cmd: &WebhooksCommand) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::Add(args) => add(args).await,
        WebhooksCommand::List(server) => list(server).await,
        WebhooksCommand::Remove(args) => {
            let api = Api::new(&args.server)?;
            let id = api.channel_id(&args.channel).await?;
            api.call(reqwest::Method::DELETE, &format!("/channels/{id}"), None)
                .await?;
            println!("removed webhook {id} and its rules");
            Ok(())
        }
        WebhooksCommand::Test(args) => {
            let api = Api::new(&args.server)?;
            let id = api.channel_id(&args.channel).await?;
            let queued = api
                .call(
                    reqwest::Method::POST,
                    &format!("/channels/{id}/test"),
                    Some(json!({})),
                )
                .await?;
            if args.server.json {
                println!("{}", serde_json::to_string_pretty(&queued)?);
            } else {
                println!(
                    "test message queued for webhook {id}: key {} (see `espwatch webhooks deliveries --channel {id}`)",
                    queued["key"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        WebhooksCommand::Deliveries(args) => deliveries(args).await,
    }
}

/// The default name: host and path of the URL, at most 64 characters.
fn default_name(target: &str) -> String {
    let url = reqwest::Url::parse(target).ok();
    let name = match &url {
        Some(u) => format!(
            "{}{}",
            u.host_str().unwrap_or(""),
            u.path().trim_end_matches('/')
        ),
        None => target.to_owned(),
    };
    name.chars().take(64).collect()
}

async fn add(args: &AddArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.target));
    let mut channel = json!({ "name": name, "kind": "webhook", "url": args.target });
    if let Some(secret) = &args.secret {
        channel["secret"] = json!(secret);
    }
    let created = api
        .call(reqwest::Method::POST, "/channels", Some(channel))
        .await
        .context("creating the webhook")?;
    let id = created["id"]
        .as_i64()
        .context("the server gave no channel id")?;
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| json!(v));
    let mut rule = json!({ "name": name, "channel_id": id, "events": args.events });
    for (key, value) in [
        ("wells", list(&args.wells)),
        ("fields", list(&args.fields)),
        ("conditions", list(&args.conditions)),
        ("min_severity", args.min_severity.as_ref().map(|s| json!(s))),
    ] {
        if let Some(value) = value {
            rule[key] = value;
        }
    }
    let rule = match api.call(reqwest::Method::POST, "/rules", Some(rule)).await {
        Ok(rule) => rule,
        Err(e) => {
            // No webhook without its rule: take the channel back.
            let _ = api
                .call(reqwest::Method::DELETE, &format!("/channels/{id}"), None)
                .await;
            return Err(e.context("creating the webhook's rule (the webhook was not kept)"));
        }
    };
    if args.server.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "channel": created, "rule": rule }))?
        );
        return Ok(());
    }
    println!("webhook {id} {name:?} → {}", args.target);
    println!("  {}", describe_rule(&rule));
    match created["secret"].as_str() {
        Some(secret) => println!(
            "  signing secret (shown once, keep it where the receiver checks signatures):\n  {secret}"
        ),
        None => println!("  signed with the secret you gave"),
    }
    Ok(())
}

/// "alarm.raised, alarm.cleared · wells ESP-* · conditions gas_lock · at least major".
fn describe_rule(rule: &Value) -> String {
    let join = |key: &str| {
        rule[key].as_array().filter(|a| !a.is_empty()).map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("?").to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let mut parts = vec![join("events").unwrap_or_else(|| "no events".into())];
    match (join("wells"), join("fields")) {
        (None, None) => parts.push("every well".into()),
        (w, f) => {
            if let Some(w) = w {
                parts.push(format!("wells {w}"));
            }
            if let Some(f) = f {
                parts.push(format!("fields {f}"));
            }
        }
    }
    if let Some(c) = join("conditions") {
        parts.push(format!("conditions {c}"));
    }
    if let Some(s) = rule["min_severity"].as_str() {
        parts.push(format!("at least {s}"));
    }
    parts.join(" · ")
}

async fn list(server: &ServerArgs) -> anyhow::Result<()> {
    let api = Api::new(server)?;
    let channels = api.call(reqwest::Method::GET, "/channels", None).await?;
    let rules = api.call(reqwest::Method::GET, "/rules", None).await?;
    if server.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "channels": channels["channels"], "rules": rules["rules"] })
            )?
        );
        return Ok(());
    }
    let channels = channels["channels"].as_array().cloned().unwrap_or_default();
    if channels.is_empty() {
        println!("no notification channels (add one with `espwatch webhooks add URL`)");
        return Ok(());
    }
    let rules = rules["rules"].as_array().cloned().unwrap_or_default();
    for c in &channels {
        let target = match c["kind"].as_str() {
            Some("webhook") => c["url"].as_str().unwrap_or("").to_owned(),
            Some("email") => c["to"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            _ => c["exchange"].as_str().unwrap_or("").to_owned(),
        };
        println!(
            "{} {} [{}] {}",
            c["id"],
            c["name"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            target
        );
        if c["disabled"] == true {
            println!(
                "    DISABLED since {} ({}): alarm changes are not sent; `espwatch webhooks test {}` enables it once it gets through",
                c["disabled_since"].as_str().unwrap_or("?"),
                c["disabled_reason"].as_str().unwrap_or("dead delivery"),
                c["id"]
            );
        }
        let mine: Vec<&Value> = rules
            .iter()
            .filter(|r| r["channel_id"] == c["id"])
            .collect();
        if mine.is_empty() {
            println!("    (no rule: gets nothing)");
        }
        for r in mine {
            println!(
                "    rule {} {:?}: {}",
                r["id"],
                r["name"].as_str().unwrap_or(""),
                describe_rule(r)
            );
        }
    }
    Ok(())
}

async fn deliveries(args: &DeliveriesArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(channel) = &args.channel {
        query.push(format!("channel_id={}", api.channel_id(channel).await?));
    }
    if let Some(state) = &args.state {
        query.push(format!("state={state}"));
    }
    let list = api
        .call(
            reqwest::Method::GET,
            &format!("/deliveries?{}", query.join("&")),
            None,
        )
        .await?;
    if args.server.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows = list["deliveries"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no deliveries");
    }
    for d in rows {
        println!(
            "{} {} channel {} {} {} attempt{} {}{}",
            d["created_at"].as_str().unwrap_or(""),
            d["event"].as_str().unwrap_or(""),
            d["channel_id"],
            d["state"].as_str().unwrap_or(""),
            d["attempts"],
            if d["attempts"] == 1 { "" } else { "s" },
            d["key"].as_str().unwrap_or(""),
            d["last_error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
