//! Configuration: one struct, every field documented, sane defaults so that a bare
//! `espwatch serve` works. Layering (file < `ESPWATCH_*` environment < flags) is done by the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `Debug` shows every setting but secrets: `jwt_secret` as `<redacted>`, the password of
/// `database_url` as `***` (see the impl below).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on. Port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// A second address serving only `GET /metrics` (Prometheus text format) **without
    /// credentials**, for a private monitoring network; unset: metrics only on `listen`, for
    /// identities with `metrics:read`.
    pub metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) for TLS on `listen`; with `tls_key_file`, the API
    /// speaks HTTPS only (TLS 1.3 and 1.2). Reloaded when the files change or on SIGHUP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// Vault/OpenBao address (`https://vault.example:8200`) for secret settings given as
    /// references `vault:<path>#<key>` (KV version 2, e.g. `vault:secret/data/espwatch#jwt_secret`).
    pub vault_addr: Option<String>,
    /// Vault token (e.g. from `ESPWATCH_VAULT_TOKEN`); redacted everywhere.
    pub vault_token: Option<SecretString>,
    /// File holding the Vault token (preferred over `vault_token`; else `VAULT_TOKEN`).
    pub vault_token_file: Option<PathBuf>,
    /// Directory of the embedded store (created if missing).
    pub data_dir: PathBuf,
    /// Largest accepted request body, bytes. Larger bodies get 413.
    pub body_limit_bytes: usize,
    /// Readings stamped further than this into the future are rejected, seconds.
    pub max_future_secs: u64,
    /// Register unknown wells from their first reading (true) or reject their readings (false).
    pub auto_register_wells: bool,
    /// Raw telemetry queries with more points than this are downsampled server-side.
    pub default_max_points: usize,
    /// Requests taking longer than this are answered 503, seconds.
    pub request_timeout_secs: u64,
    /// The embedded store seals its log into per-well segments at least this often, seconds.
    pub checkpoint_interval_secs: u64,
    /// The embedded store's SQLite page cache for its writer, MiB (filled as pages are used).
    pub store_cache_mib: u32,
    /// The embedded store's SQLite page cache per read connection (up to 4 kept, plus the
    /// checkpoint's), MiB.
    pub store_read_cache_mib: u32,
    /// Log format: "human" or "json".
    pub log_format: LogFormat,
    /// PostgreSQL URL (`postgres://user@host/db`, `?sslmode=require` for TLS). Set: the
    /// PostgreSQL/TimescaleDB store is used instead of the embedded one in `data_dir`.
    pub database_url: Option<String>,
    /// PostgreSQL connections pooled for reads and registry changes (the writer has its own).
    pub database_pool_size: usize,
    /// PostgreSQL writer connections, each group-committing queued telemetry; also how many
    /// files `espwatch ingest --database-url` loads at once unless `--parallel` says.
    pub database_writers: usize,
    /// PostgreSQL statement timeout, seconds.
    pub database_statement_timeout_secs: u64,
    /// Use TimescaleDB when first setting up a database: "auto" (when the server can, else
    /// plain PostgreSQL with a warning), "require" (fail without it) or "off".
    pub timescaledb: TimescaleSetting,
    /// TimescaleDB chunk width, e.g. "1d".
    pub timescaledb_chunk_interval: String,
    /// TimescaleDB: compress chunks older than this, e.g. "7d".
    pub timescaledb_compress_after: String,
    /// File holding the HS256 secret that signs access tokens (at least 32 random bytes).
    /// Preferred over `jwt_secret`. The server refuses to start without a strong secret.
    pub jwt_secret_file: Option<PathBuf>,
    /// The secret itself (e.g. from `ESPWATCH_JWT_SECRET`); redacted by `config show`.
    pub jwt_secret: Option<SecretString>,
    /// Rotating the JWT secret without signing everyone out: the file holding the secret
    /// used before the current one. Access tokens (and console CSRF tokens) it signed are
    /// still accepted until `jwt_previous_valid_until`; new ones are signed with the current
    /// secret only. Preferred over `jwt_secret_previous`. README "Rotating the JWT secret".
    pub jwt_secret_previous_file: Option<PathBuf>,
    /// The previous secret itself (e.g. from `ESPWATCH_JWT_SECRET_PREVIOUS`, or a `vault:`
    /// reference like `jwt_secret`); redacted everywhere.
    pub jwt_secret_previous: Option<SecretString>,
    /// Until when tokens signed with the previous secret are accepted: an RFC 3339 time in
    /// quotes, e.g. "2026-12-06T18:00:00Z"; required with a previous secret. After it they
    /// are refused (401). At least `access_token_ttl_secs` after the restart with the new
    /// secret lets every token issued before it run out on its own.
    pub jwt_previous_valid_until: Option<String>,
    /// `iss` of issued access tokens, checked on every request.
    pub jwt_issuer: String,
    /// `aud` of issued access tokens, checked on every request.
    pub jwt_audience: String,
    /// Lifetime of access tokens, seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session's refresh token, seconds (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// Failed logins within `lockout_window_secs` that lock an account.
    pub lockout_max_failures: u32,
    /// The window failed logins are counted in (`lockout_max_failures`), seconds.
    pub lockout_window_secs: u64,
    /// How long a locked account stays locked, seconds.
    pub lockout_secs: u64,
    /// Requests per second per identity (burst twice that); 0 turns the limit off.
    pub rate_limit_per_identity: f64,
    /// Telemetry readings per second per identity (burst twice that); 0 turns the limit off.
    /// `POST /api/v1/telemetry` is counted in readings, not requests (and not against the
    /// per-source request limit once authenticated): the default leaves a gateway sending a
    /// 1 000-well field at 1 Hz, one request per reading or batched, ten times the room.
    pub telemetry_readings_per_identity: f64,
    /// Requests per second per source address, before authentication (health probes are
    /// exempt); 0 turns the limit off.
    pub rate_limit_per_source: f64,
    /// Login and refresh attempts per minute per source address.
    pub login_rate_per_minute: f64,
    /// Argon2 hashes computed at once; further logins wait (up to 5 s, then 503).
    pub password_hash_concurrency: usize,
    /// Verified credentials are remembered this long, milliseconds: a revocation made by
    /// another process (the CLI) takes effect within it; one made through this server's API
    /// takes effect at once. 0 disables the cache.
    pub auth_cache_ms: u64,
    /// Origins allowed to call the API from a browser (CORS). Empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted reverse proxy).
    pub trust_forwarded_for: bool,
    /// Accepted readings that may wait for the online diagnostics. Beyond it, batches skip the
    /// queue and their wells are rebuilt from stored data when next needed (`/health/ready`
    /// reports the queue, its lag and skipped readings).
    pub diagnostics_queue_readings: u64,
    /// Telemetry body bytes being read, decoded and committed at once. A request beyond it is
    /// answered 503 with `Retry-After` before its body is read (overload sheds load instead of
    /// growing memory). One request is always admitted when none is in flight. Sized to about
    /// a second of ingestion: what is admitted waits for a decoder (one per core), so a larger
    /// budget only makes acknowledgements later (64 MiB: 6 s median under 10× overload).
    pub ingest_max_inflight_bytes: u64,
    /// Longest wait of an admitted telemetry body for a decoder, in ms. Beyond it the request
    /// is answered 503 `overloaded` with `Retry-After` (nothing written), and while the oldest
    /// waiting body is past it, new requests are refused at once, before their body is read.
    pub ingest_decode_wait_ms: u64,
    /// Telemetry bodies decoded at once; 0 (default): one per core.
    pub ingest_decoders: usize,
    /// Live streams (`GET /api/v1/stream`) one identity may hold open at once (429 beyond).
    pub stream_max_connections_per_identity: usize,
    /// Events the live stream's ring holds (16 to 65536): a subscriber that falls further
    /// behind loses the oldest and is sent a `lagged` notice with how many it missed.
    /// Publishers never wait for subscribers, so this only bounds memory and how far behind
    /// a slow subscriber may fall without losing events.
    pub stream_buffer_events: usize,
    /// Mark the console's session cookies `Secure` (sent over HTTPS only). Browsers accept
    /// them on `http://localhost` too; set false only to use the console over plain HTTP on
    /// another host (a private network, never the internet).
    pub cookie_secure: bool,
    /// A request head must arrive complete within this, seconds; it is also how long an idle
    /// keep-alive connection (or one that never sends anything) stays open.
    pub http_header_timeout_secs: u64,
    /// Open connections allowed per client address; one more is answered 503 and closed.
    /// 0: no cap. Behind a reverse proxy every client shares the proxy's address: raise it.
    pub max_connections_per_source: usize,
    /// File the audit chain head is anchored to (signed): keep it outside the data directory,
    /// where whoever can write the data cannot rewrite it. Default: `<jwt_secret_file>.anchors`
    /// when the secret comes from a file; otherwise anchors go to the log only.
    pub audit_anchor_file: Option<PathBuf>,
    /// How often the server anchors the audit chain head (when it moved), seconds; also at
    /// shutdown.
    pub audit_anchor_secs: u64,
    /// A syslog datagram socket (e.g. `/dev/log`) every audit anchor is also sent to, as a
    /// second sink outside the data directory (`espwatch audit verify --syslog-anchors`).
    pub audit_anchor_syslog: Option<PathBuf>,
    /// Alarm notifications: delay before the second attempt of a delivery, milliseconds;
    /// doubled after every failed attempt up to `notify_retry_max_secs`.
    pub notify_retry_base_ms: u64,
    /// Longest delay between two attempts of a delivery, seconds.
    pub notify_retry_max_secs: u64,
    /// Attempts before a delivery is given up (`dead`, audited). The defaults (10 s doubling
    /// to 1 h, 33 attempts) keep trying for 24.4 hours (87 910 s of waits).
    pub notify_max_attempts: u32,
    /// How long one webhook or SMTP attempt may take, seconds.
    pub notify_timeout_secs: u64,
    /// SMTP server for e-mail channels (`host:port`); unset: e-mail deliveries fail (and are
    /// retried) until it is set.
    pub smtp_server: Option<String>,
    /// `starttls` (upgrade before authenticating; refused when the server does not offer it)
    /// or `none` (plain SMTP: only for a relay on the same host or a private network).
    pub smtp_tls: String,
    /// Sender address of notification e-mails.
    pub smtp_from: String,
    /// SMTP user (AUTH PLAIN, only over TLS); unset: no authentication.
    pub smtp_username: Option<String>,
    /// SMTP password; never printed.
    pub smtp_password: Option<SecretString>,
    /// MQTT broker to take telemetry from: `mqtt://host[:1883]` or `mqtts://host[:8883]` (TLS).
    /// Set: the server subscribes to `mqtt_topic` (QoS 1, persistent session) at start.
    pub mqtt_url: Option<String>,
    /// Topic filter of plain telemetry messages; its one `+` level is the well id. Payloads:
    /// JSON (one reading or an array), NDJSON or CSV, as `POST /api/v1/telemetry` takes them;
    /// a reading's own `well_id` may be left out.
    pub mqtt_topic: String,
    /// Where a message's rejections are published (QoS 1, JSON); `{well}` is the topic's well.
    pub mqtt_error_topic: String,
    /// MQTT client id, the key of the broker's persistent session (unacknowledged messages
    /// are re-delivered to the same id): keep it stable, and different on every node.
    pub mqtt_client_id: String,
    /// MQTT keep-alive, seconds: a ping when nothing else was sent, and a connection whose
    /// broker answers nothing for two of them (a stalled link: no reset, no close) is dropped
    /// and made again. espwatch pauses reading from the broker for half of it at most.
    pub mqtt_keep_alive_secs: u64,
    /// MQTT user name (optional).
    pub mqtt_username: Option<String>,
    /// File holding the MQTT password (preferred over `mqtt_password`).
    pub mqtt_password_file: Option<PathBuf>,
    /// The MQTT password itself (e.g. from `ESPWATCH_MQTT_PASSWORD`); redacted everywhere.
    pub mqtt_password: Option<SecretString>,
    /// PEM file of the certificate authorities trusted for `mqtts://` (default: the system's).
    pub mqtt_ca_file: Option<PathBuf>,
    /// Sparkplug B group to consume from the same broker (`spBv1.0/<group>/#`; `+` = every
    /// group). Unset: no Sparkplug. Each device is a well.
    pub mqtt_sparkplug_group: Option<String>,
    /// Sparkplug metric name → canonical channel (e.g. `"Drive/Hz" = "frequency_hz"`), tried
    /// before the default table of common drive and gauge tags.
    pub mqtt_sparkplug_metrics: std::collections::BTreeMap<String, String>,
    /// RabbitMQ (AMQP 0-9-1) broker to take telemetry from:
    /// `amqp://user:password@host[:5672]/vhost` (`%2f` is the vhost `/`). Set: the server
    /// consumes `amqp_queue` at start. The password is redacted wherever the URL is shown.
    pub amqp_url: Option<String>,
    /// Durable queue consumed (declared at start, with `amqp_dead_letter_exchange` as its
    /// dead-letter exchange). Payloads: JSON/NDJSON/CSV by `content_type` (sniffed when absent).
    pub amqp_queue: String,
    /// Durable topic exchange the queue is bound to with `amqp_binding_key` (declared at
    /// start); empty: none, publishers use the default exchange with the queue's name.
    pub amqp_exchange: String,
    /// Binding key of the queue on `amqp_exchange`.
    pub amqp_binding_key: String,
    /// Durable fanout exchange for messages espwatch refuses (wholly or in part), bound to
    /// `amqp_dead_letter_queue`; each carries the reasons in its `x-espwatch-*` headers.
    pub amqp_dead_letter_exchange: String,
    /// Durable queue holding the dead-lettered messages.
    pub amqp_dead_letter_queue: String,
    /// Unacknowledged messages the broker sends each consumer at most (basic.qos).
    pub amqp_prefetch: u16,
    /// Consumers (channels) on the queue; each commits its own batches.
    pub amqp_consumers: u16,
    /// Longest wait between two attempts to reach a lost MQTT or AMQP broker or Redis, milliseconds
    /// (100–300000). Waits start at 250 ms and double up to this, each drawn from the upper
    /// half of its step (jitter, so nodes do not retry in lockstep): ingestion resumes within
    /// about this long of the broker's return, at the cost of a refused connection per wait.
    pub broker_reconnect_max_ms: u64,
    /// Redis server joining this node to the others serving the same PostgreSQL database:
    /// `redis://[user:password@]host[:6379][/db]`. Set: live events (readings, alarms, well
    /// state) published on any node reach the streams of every node, and a revocation (logout,
    /// revoked key, user change) made on any node drops the cached credentials of every node.
    /// The password is redacted wherever the URL is shown.
    pub redis_url: Option<String>,
    /// Prefix of the Redis pub/sub channels (`<prefix>:live`, `<prefix>:revoke`): nodes of one
    /// site share it; two sites on one Redis need different ones.
    pub redis_channel_prefix: String,
    /// How often a node renews its membership among the nodes sharing the wells (Redis set
    /// `<prefix>:nodes`), milliseconds (100–60000).
    pub cluster_heartbeat_ms: u64,
    /// A node not heard of for this long has left and its wells go to the others,
    /// milliseconds; at least 3 × `cluster_heartbeat_ms`, at most 600000. A node starved of
    /// CPU longer than this (a loaded machine) drops out and comes back, moving its wells
    /// twice; a node that died keeps its wells undiagnosed this long. Same on every node.
    pub cluster_node_timeout_ms: u64,
    /// File holding the audit chain key: a random secret of its own, so rotating the JWT
    /// secret does not change the chain key and whoever holds only the JWT secret cannot
    /// rewrite the trail. `espwatch serve` creates it (mode 0600) when it is missing.
    /// Default: `<jwt_secret_file>.audit-key` when the JWT secret comes from a file; without
    /// either, the key is derived from the JWT secret as before. Records written before the
    /// file existed keep verifying with the key derived from the JWT secret.
    pub audit_key_file: Option<PathBuf>,
    /// PostgreSQL store only: where telemetry is spooled while the database cannot commit
    /// (default `<data_dir>/spool`). Acknowledged after `fsync`, replayed in order when the
    /// database is back, and at the next start after a crash.
    pub spool_dir: Option<PathBuf>,
    /// Undrained spool bytes allowed; beyond it telemetry is answered 503 + `Retry-After`.
    /// 0 turns the spool off (appends fail with 503 while the database is down). The default
    /// holds about an hour at 10 000 readings/s of gauge data (README "Reliability").
    pub spool_max_bytes: u64,
    /// While the identity store cannot be read, a credential this server verified against it
    /// within this many seconds is still accepted, for `POST /api/v1/telemetry` only (so the
    /// spool can take a gateway's data during a database outage). Revocations cannot be made
    /// while the database is down, and one made in the last `auth_cache_ms` before the outage
    /// may be missed. 0: every credential is refused with 503 while the store is down.
    pub auth_outage_grace_secs: u64,
    /// Raw readings are kept this long (a duration of at least 1d, e.g. "90d"), then archived
    /// to `archive_url` as Parquet, read back and verified, and only then deleted. Unset or
    /// "forever": kept forever.
    pub retention_raw: Option<String>,
    /// 1-minute rollups (PostgreSQL) are kept this long; unset or "forever": forever.
    pub retention_1m: Option<String>,
    /// 1-hour rollups (both stores) are kept this long; unset or "forever": forever.
    pub retention_1h: Option<String>,
    /// 1-day rollups (PostgreSQL) are kept this long; unset or "forever": forever.
    pub retention_1d: Option<String>,
    /// Where expired raw readings are archived: a directory, `file:///dir` or
    /// `s3://bucket/prefix`. Default: `<data_dir>-archive`, next to the data directory.
    pub archive_url: Option<String>,
    /// S3 settings of the archive (`aws_endpoint`, `aws_region`, `aws_allow_http`, ...: keys
    /// of `object_store`'s S3 configuration), over the `AWS_*` environment variables.
    /// Credentials are not accepted here: they come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), never from a file that may be
    /// committed.
    pub archive_options: std::collections::BTreeMap<String, String>,
    /// S3 settings of `espwatch store backup|restore` to or from `s3://bucket/prefix`
    /// (`aws_endpoint`, `aws_region`, `aws_allow_http`, ...: the keys `archive_options`
    /// takes), over the `AWS_*` environment variables. Credentials are not accepted here
    /// either: they come from the environment.
    pub backup_options: std::collections::BTreeMap<String, String>,
    /// Continuous archiving of the embedded store's durable log: a directory or
    /// `s3://bucket/prefix` (S3 settings from `backup_options`), normally the backup chain
    /// that `espwatch store backup --incremental --to` the same place keeps. The server
    /// uploads every committed log batch there (under `wal/`, verified) within
    /// `backup_ship_interval_ms`, so `espwatch store restore --until TS` restores to any
    /// second after the chain's first backup. Unset: no shipping. Embedded store only.
    pub backup_ship_to: Option<String>,
    /// How often the server ships the log batches committed since its last round,
    /// milliseconds (50 to 1000): the recovery point trails the last acknowledgement by
    /// about this plus an upload.
    pub backup_ship_interval_ms: u64,
    /// The longest one operation of the log shipper on `backup_ship_to` (listing, uploading
    /// an object, reading it back) may take, milliseconds (100 to 600000): a destination
    /// that accepts the connection and never answers fails the round (reported in
    /// `/health/ready` and the metrics, retried) instead of holding the shipper forever.
    pub backup_ship_timeout_ms: u64,
    /// The most log, MiB (at least 1), the data directory keeps for a `backup_ship_to` that
    /// stays unreachable. Past it the oldest sealed batches are given up (their readings
    /// stay stored; ingestion is never refused for the shipper), the shipped log has a gap
    /// there, reported in `/health/ready` (`checks.log_shipping.gap`, `degraded`), in
    /// `espwatch_log_shipping_dropped_batches_total` and in an error log line: take a base
    /// backup once the destination is back.
    pub backup_ship_max_pending_mb: u64,
    /// How often the server applies the retention policy, seconds (the first round runs at
    /// start; a failed round is retried after a minute, or this, if shorter).
    pub retention_interval_secs: u64,
    /// Request records of the audit trail (`request`, `rejected_requests`) are kept this long
    /// (a duration of at least 1d, e.g. "90d"), then removed by the server every
    /// `retention_interval_secs`, cut at a UTC midnight; security events are kept (carried
    /// forward as `audit_carried` records, still verifiable). Unset or "forever": kept forever.
    pub audit_retention: Option<String>,
}

/// A secret from the configuration: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A `retention_*` value: `Ok(None)` for unset or "forever", else the duration (at least a day).
fn retention_micros(key: &str, value: &Option<String>) -> Result<Option<i64>, String> {
    let Some(text) = value.as_deref().map(str::trim) else {
        return Ok(None);
    };
    if text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    match espwatch_core::duration::parse_duration_micros(text) {
        Ok(micros) if micros >= 86_400_000_000 => Ok(Some(micros)),
        _ => Err(format!(
            "{key} must be \"forever\" or a duration of at least 1d, e.g. \"90d\" (got {text:?})"
        )),
    }
}

/// The `timescaledb` setting; any other value is a configuration error.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleSetting {
    /// TimescaleDB when the server can load it, else plain PostgreSQL (with a warning when it
    /// is installed but not preloaded).
    #[default]
    Auto,
    /// Fail to start unless TimescaleDB can be used.
    Require,
    /// Plain PostgreSQL even where TimescaleDB is available.
    Off,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut value = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        if let Some(map) = value.as_object_mut() {
            if self.jwt_secret.is_some() {
                map.insert("jwt_secret".into(), "<redacted>".into());
            }
            if self.jwt_secret_previous.is_some() {
                map.insert("jwt_secret_previous".into(), "<redacted>".into());
            }
            if self.smtp_password.is_some() {
                map.insert("smtp_password".into(), "<redacted>".into());
            }
            if self.mqtt_password.is_some() {
                map.insert("mqtt_password".into(), "<redacted>".into());
            }
            if self.vault_token.is_some() {
                map.insert("vault_token".into(), "<redacted>".into());
            }
            if let Some(url) = &self.database_url {
                map.insert(
                    "database_url".into(),
                    espwatch_store_postgres::redact_url(url).into(),
                );
            }
            if let Some(url) = &self.amqp_url {
                map.insert(
                    "amqp_url".into(),
                    espwatch_store_postgres::redact_url(url).into(),
                );
            }
            if let Some(url) = &self.redis_url {
                map.insert(
                    "redis_url".into(),
                    espwatch_store_postgres::redact_url(url).into(),
                );
            }
        }
        write!(f, "Config {value:#}")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            vault_addr: None,
            vault_token: None,
            vault_token_file: None,
            data_dir: PathBuf::from("./espwatch-data"),
            body_limit_bytes: 16 * 1024 * 1024,
            max_future_secs: 300,
            auto_register_wells: true,
            default_max_points: 2_000,
            request_timeout_secs: 30,
            checkpoint_interval_secs: 300,
            store_cache_mib: 16,
            store_read_cache_mib: 8,
            log_format: LogFormat::Human,
            database_url: None,
            database_pool_size: 8,
            database_writers: 4,
            database_statement_timeout_secs: 30,
            timescaledb: TimescaleSetting::Auto,
            timescaledb_chunk_interval: "1d".into(),
            timescaledb_compress_after: "7d".into(),
            jwt_secret_file: None,
            jwt_secret: None,
            jwt_secret_previous_file: None,
            jwt_secret_previous: None,
            jwt_previous_valid_until: None,
            jwt_issuer: "espwatch".into(),
            jwt_audience: "espwatch-api".into(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 12 * 3600,
            lockout_max_failures: 5,
            lockout_window_secs: 900,
            lockout_secs: 900,
            rate_limit_per_identity: 200.0,
            rate_limit_per_source: 500.0,
            telemetry_readings_per_identity: 10_000.0,
            login_rate_per_minute: 30.0,
            password_hash_concurrency: 2,
            auth_cache_ms: 2000,
            cors_origins: Vec::new(),
            trust_forwarded_for: false,
            diagnostics_queue_readings: 500_000,
            ingest_max_inflight_bytes: 16 * 1024 * 1024,
            ingest_decode_wait_ms: 500,
            ingest_decoders: 0,
            stream_max_connections_per_identity: 8,
            stream_buffer_events: 4096,
            cookie_secure: true,
            http_header_timeout_secs: 10,
            max_connections_per_source: 64,
            audit_anchor_file: None,
            audit_anchor_secs: 60,
            audit_anchor_syslog: None,
            notify_retry_base_ms: 10_000,
            notify_retry_max_secs: 3600,
            notify_max_attempts: 33,
            notify_timeout_secs: 10,
            smtp_server: None,
            smtp_tls: "starttls".into(),
            smtp_from: "espwatch@localhost".into(),
            smtp_username: None,
            smtp_password: None,
            mqtt_url: None,
            mqtt_topic: "espwatch/+/telemetry".into(),
            mqtt_error_topic: "espwatch/{well}/errors".into(),
            mqtt_client_id: "espwatch".into(),
            mqtt_keep_alive_secs: 20,
            mqtt_username: None,
            mqtt_password_file: None,
            mqtt_password: None,
            mqtt_ca_file: None,
            mqtt_sparkplug_group: None,
            mqtt_sparkplug_metrics: Default::default(),
            amqp_url: None,
            amqp_queue: "espwatch.telemetry".into(),
            amqp_exchange: "espwatch.telemetry".into(),
            amqp_binding_key: "#".into(),
            amqp_dead_letter_exchange: "espwatch.telemetry.dlx".into(),
            amqp_dead_letter_queue: "espwatch.telemetry.dead".into(),
            amqp_prefetch: 512,
            amqp_consumers: 1,
            broker_reconnect_max_ms: 2000,
            redis_url: None,
            redis_channel_prefix: "espwatch".into(),
            cluster_heartbeat_ms: 1000,
            cluster_node_timeout_ms: 10_000,
            audit_key_file: None,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            auth_outage_grace_secs: 3600,
            retention_raw: None,
            retention_1m: None,
            retention_1h: None,
            retention_1d: None,
            archive_url: None,
            archive_options: Default::default(),
            backup_options: Default::default(),
            backup_ship_to: None,
            backup_ship_interval_ms: 250,
            backup_ship_timeout_ms: 10_000,
            backup_ship_max_pending_mb: 2048,
            retention_interval_secs: 3600,
            audit_retention: None,
        }
    }
}

/// Default bound of the outage spool: 4 GiB, an hour at 10 000 readings/s even when every
/// request carries a single 13-channel reading (~111 bytes each in the spool; batches of ten
/// readings per well take ~22).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Every key of [`Config`] with its documentation (the `///` comment of its field in this
/// file), in field order: the source of `espwatch config example` and of the repository's
/// `espwatch.example.toml`, so the documentation is written once, here.
pub fn documented_keys() -> Vec<(&'static str, String)> {
    const SOURCE: &str = include_str!("config.rs");
    // The struct is the first item of the file; its fields end at the first closing brace
    // alone on a line.
    let body = SOURCE
        .split_once("pub struct Config {")
        .map_or("", |(_, body)| body);
    let mut keys = Vec::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in body.lines().map(str::trim) {
        if line == "}" {
            break;
        }
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text));
        } else if let Some((name, _)) = line
            .strip_prefix("pub ")
            .and_then(|field| field.split_once(':'))
        {
            keys.push((name, doc.join("\n")));
            doc.clear();
        }
    }
    keys
}

impl Config {
    /// `cluster_heartbeat_ms` as a duration.
    pub fn cluster_heartbeat(&self) -> Duration {
        Duration::from_millis(self.cluster_heartbeat_ms)
    }

    /// `broker_reconnect_max_ms` as a duration.
    pub fn broker_reconnect_max(&self) -> Duration {
        Duration::from_millis(self.broker_reconnect_max_ms)
    }

    /// Where the outage spool lives: `spool_dir`, else `<data_dir>/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }

    /// Names of all keys, for mapping `ESPWATCH_<KEY>` environment variables.
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "metrics_listen",
        "tls_cert_file",
        "tls_key_file",
        "vault_addr",
        "vault_token",
        "vault_token_file",
        "data_dir",
        "body_limit_bytes",
        "max_future_secs",
        "auto_register_wells",
        "default_max_points",
        "request_timeout_secs",
        "checkpoint_interval_secs",
        "store_cache_mib",
        "store_read_cache_mib",
        "log_format",
        "database_url",
        "database_pool_size",
        "database_writers",
        "database_statement_timeout_secs",
        "timescaledb",
        "timescaledb_chunk_interval",
        "timescaledb_compress_after",
        "jwt_secret_file",
        "jwt_secret",
        "jwt_secret_previous_file",
        "jwt_secret_previous",
        "jwt_previous_valid_until",
        "jwt_issuer",
        "jwt_audience",
        "access_token_ttl_secs",
        "refresh_token_ttl_secs",
        "lockout_max_failures",
        "lockout_window_secs",
        "lockout_secs",
        "rate_limit_per_identity",
        "rate_limit_per_source",
        "telemetry_readings_per_identity",
        "login_rate_per_minute",
        "password_hash_concurrency",
        "auth_cache_ms",
        "cors_origins",
        "trust_forwarded_for",
        "diagnostics_queue_readings",
        "ingest_max_inflight_bytes",
        "ingest_decode_wait_ms",
        "ingest_decoders",
        "stream_max_connections_per_identity",
        "stream_buffer_events",
        "cookie_secure",
        "http_header_timeout_secs",
        "max_connections_per_source",
        "audit_anchor_file",
        "audit_anchor_secs",
        "audit_anchor_syslog",
        "notify_retry_base_ms",
        "notify_retry_max_secs",
        "notify_max_attempts",
        "notify_timeout_secs",
        "smtp_server",
        "smtp_tls",
        "smtp_from",
        "smtp_username",
        "smtp_password",
        "mqtt_url",
        "mqtt_topic",
        "mqtt_error_topic",
        "mqtt_client_id",
        "mqtt_keep_alive_secs",
        "mqtt_username",
        "mqtt_password_file",
        "mqtt_password",
        "mqtt_ca_file",
        "mqtt_sparkplug_group",
        "mqtt_sparkplug_metrics",
        "amqp_url",
        "amqp_queue",
        "amqp_exchange",
        "amqp_binding_key",
        "amqp_dead_letter_exchange",
        "amqp_dead_letter_queue",
        "amqp_prefetch",
        "amqp_consumers",
        "broker_reconnect_max_ms",
        "redis_url",
        "redis_channel_prefix",
        "cluster_heartbeat_ms",
        "cluster_node_timeout_ms",
        "audit_key_file",
        "spool_dir",
        "spool_max_bytes",
        "auth_outage_grace_secs",
        "retention_raw",
        "retention_1m",
        "retention_1h",
        "retention_1d",
        "archive_url",
        "archive_options",
        "backup_options",
        "backup_ship_to",
        "backup_ship_interval_ms",
        "backup_ship_timeout_ms",
        "backup_ship_max_pending_mb",
        "retention_interval_secs",
        "audit_retention",
    ];

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("tls_cert_file and tls_key_file go together: set both or neither".into());
        }
        if self.ingest_max_inflight_bytes < 1024 {
            return Err("ingest_max_inflight_bytes must be at least 1024".into());
        }
        if !(1..=60_000).contains(&self.ingest_decode_wait_ms) {
            return Err("ingest_decode_wait_ms must be between 1 and 60000".into());
        }
        if self.ingest_decoders > 1024 {
            return Err("ingest_decoders must be at most 1024 (0: one per core)".into());
        }
        if !(1..=1000).contains(&self.stream_max_connections_per_identity) {
            return Err("stream_max_connections_per_identity must be between 1 and 1000".into());
        }
        if !(16..=65_536).contains(&self.stream_buffer_events) {
            return Err(format!(
                "stream_buffer_events must be between 16 and 65536 (events the live stream's \
                 ring holds for a slow subscriber), not {}",
                self.stream_buffer_events
            ));
        }
        if self.diagnostics_queue_readings == 0 {
            return Err("diagnostics_queue_readings must be at least 1".into());
        }
        if self.body_limit_bytes < 1024 {
            return Err("body_limit_bytes must be at least 1024".into());
        }
        if !(1..=1_000_000).contains(&self.default_max_points) {
            return Err("default_max_points must be between 1 and 1000000".into());
        }
        if !(1..=3600).contains(&self.http_header_timeout_secs) {
            return Err("http_header_timeout_secs must be between 1 and 3600".into());
        }
        if self.notify_retry_base_ms == 0 || self.notify_retry_max_secs == 0 {
            return Err("notify_retry_base_ms and notify_retry_max_secs must be at least 1".into());
        }
        if !(1..=1000).contains(&self.notify_max_attempts) {
            return Err("notify_max_attempts must be between 1 and 1000".into());
        }
        if !(1..=600).contains(&self.notify_timeout_secs) {
            return Err("notify_timeout_secs must be between 1 and 600".into());
        }
        if !matches!(self.smtp_tls.as_str(), "starttls" | "none") {
            return Err("smtp_tls must be `starttls` or `none`".into());
        }
        if self.audit_anchor_secs == 0 {
            return Err("audit_anchor_secs must be at least 1".into());
        }
        if self.retention_interval_secs == 0 {
            return Err("retention_interval_secs must be at least 1".into());
        }
        if !(50..=1000).contains(&self.backup_ship_interval_ms) {
            return Err("backup_ship_interval_ms must be between 50 and 1000".into());
        }
        if !(100..=600_000).contains(&self.backup_ship_timeout_ms) {
            return Err("backup_ship_timeout_ms must be between 100 and 600000".into());
        }
        if self.backup_ship_max_pending_mb == 0 {
            return Err("backup_ship_max_pending_mb must be at least 1".into());
        }
        if let Some(url) = &self.backup_ship_to {
            if self.database_url.is_some() {
                return Err(
                    "backup_ship_to ships the embedded store's log; on PostgreSQL use WAL archiving (see the README)"
                        .into(),
                );
            }
            espwatch_archive::target::check_url(url).map_err(|e| format!("backup_ship_to: {e}"))?;
        }
        for (key, value) in self.retention_keys() {
            retention_micros(key, value)?;
        }
        retention_micros("audit_retention", &self.audit_retention)?;
        if let Some(url) = &self.archive_url {
            espwatch_archive::target::check_url(url).map_err(|e| format!("archive_url: {e}"))?;
        }
        for key in self.archive_options.keys() {
            espwatch_archive::target::check_s3_option(key)
                .map_err(|e| format!("archive_options: {e}"))?;
        }
        for key in self.backup_options.keys() {
            espwatch_archive::target::check_s3_option(key)
                .map_err(|e| format!("backup_options: {e}"))?;
        }
        if self.request_timeout_secs == 0 {
            return Err("request_timeout_secs must be at least 1".into());
        }
        if self.checkpoint_interval_secs == 0 {
            return Err("checkpoint_interval_secs must be at least 1".into());
        }
        if !(2..=3600).contains(&self.mqtt_keep_alive_secs) {
            return Err("mqtt_keep_alive_secs must be between 2 and 3600".into());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("database_url must start with postgres:// or postgresql://".into());
        }
        if let Some(url) = &self.mqtt_url {
            BrokerUrl::parse(url).map_err(|e| format!("mqtt_url: {e}"))?;
        }
        mqtt_topic_well_level(&self.mqtt_topic).map_err(|e| format!("mqtt_topic: {e}"))?;
        if self.mqtt_error_topic.is_empty() || self.mqtt_error_topic.contains(['+', '#']) {
            return Err("mqtt_error_topic must be a topic name without wildcards".into());
        }
        if let Some(group) = &self.mqtt_sparkplug_group
            && (group.is_empty()
                || group.contains(['/', '#'])
                || (group.contains('+') && group != "+"))
        {
            return Err(
                "mqtt_sparkplug_group must be one topic level (or `+` for every group)".into(),
            );
        }
        for (metric, channel) in &self.mqtt_sparkplug_metrics {
            if espwatch_core::Field::from_name(channel).is_none() {
                return Err(format!(
                    "mqtt_sparkplug_metrics: {metric:?} = {channel:?} is not a canonical channel name"
                ));
            }
        }
        if self.mqtt_client_id.is_empty() || self.mqtt_client_id.len() > 65_535 {
            return Err("mqtt_client_id must not be empty".into());
        }
        if !(100..=300_000).contains(&self.broker_reconnect_max_ms) {
            return Err("broker_reconnect_max_ms must be between 100 and 300000".into());
        }
        if let Some(url) = &self.amqp_url {
            check_amqp_url(url).map_err(|e| format!("amqp_url: {e}"))?;
        }
        for (key, name) in [
            ("amqp_queue", &self.amqp_queue),
            ("amqp_dead_letter_exchange", &self.amqp_dead_letter_exchange),
            ("amqp_dead_letter_queue", &self.amqp_dead_letter_queue),
        ] {
            if name.is_empty() || name.len() > 255 {
                return Err(format!("{key} must be 1 to 255 bytes"));
            }
        }
        if self.amqp_exchange.len() > 255 || self.amqp_binding_key.len() > 255 {
            return Err("amqp_exchange and amqp_binding_key must be at most 255 bytes".into());
        }
        if self.amqp_dead_letter_queue == self.amqp_queue {
            return Err("amqp_dead_letter_queue must differ from amqp_queue".into());
        }
        if self.amqp_prefetch == 0 {
            return Err("amqp_prefetch must be at least 1".into());
        }
        if !(1..=64).contains(&self.amqp_consumers) {
            return Err("amqp_consumers must be between 1 and 64".into());
        }
        if let Some(url) = &self.redis_url {
            check_redis_url(url).map_err(|e| format!("redis_url: {e}"))?;
        }
        if self.redis_channel_prefix.is_empty()
            || self.redis_channel_prefix.len() > 200
            || self
                .redis_channel_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("redis_channel_prefix must be 1 to 200 characters without spaces".into());
        }
        if !(100..=60_000).contains(&self.cluster_heartbeat_ms) {
            return Err(format!(
                "cluster_heartbeat_ms must be between 100 and 60000, not {}",
                self.cluster_heartbeat_ms
            ));
        }
        if self.cluster_node_timeout_ms < 3 * self.cluster_heartbeat_ms
            || self.cluster_node_timeout_ms > 600_000
        {
            return Err(format!(
                "cluster_node_timeout_ms must be at least 3 x cluster_heartbeat_ms ({}) and at \
                 most 600000, not {}: a node missing one or two heartbeats must not leave",
                3 * self.cluster_heartbeat_ms,
                self.cluster_node_timeout_ms
            ));
        }
        if !(1..=1000).contains(&self.database_pool_size) {
            return Err("database_pool_size must be between 1 and 1000".into());
        }
        if !(1..=64).contains(&self.database_writers) {
            return Err("database_writers must be between 1 and 64".into());
        }
        if self.database_statement_timeout_secs == 0 {
            return Err("database_statement_timeout_secs must be at least 1".into());
        }
        for (key, value) in [
            (
                "timescaledb_chunk_interval",
                &self.timescaledb_chunk_interval,
            ),
            (
                "timescaledb_compress_after",
                &self.timescaledb_compress_after,
            ),
        ] {
            match espwatch_core::duration::parse_duration_micros(value) {
                Ok(micros) if micros >= 60_000_000 => {}
                _ => return Err(format!("{key} must be a duration of at least 1m, e.g. 1d")),
            }
        }
        if !(60..=86_400).contains(&self.access_token_ttl_secs) {
            return Err("access_token_ttl_secs must be between 60 and 86400".into());
        }
        if !(300..=90 * 86_400).contains(&self.refresh_token_ttl_secs) {
            return Err("refresh_token_ttl_secs must be between 300 and 7776000".into());
        }
        if self.lockout_max_failures == 0 || self.lockout_window_secs == 0 || self.lockout_secs == 0
        {
            return Err(
                "lockout_max_failures, lockout_window_secs and lockout_secs must be at least 1"
                    .into(),
            );
        }
        for (key, value) in [
            ("rate_limit_per_identity", self.rate_limit_per_identity),
            ("rate_limit_per_source", self.rate_limit_per_source),
            (
                "telemetry_readings_per_identity",
                self.telemetry_readings_per_identity,
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{key} must be 0 (off) or a positive number"));
            }
        }
        if !(self.login_rate_per_minute.is_finite() && self.login_rate_per_minute >= 1.0) {
            return Err("login_rate_per_minute must be at least 1".into());
        }
        if !(1..=64).contains(&self.password_hash_concurrency) {
            return Err("password_hash_concurrency must be between 1 and 64".into());
        }
        if self.jwt_issuer.is_empty() || self.jwt_audience.is_empty() {
            return Err("jwt_issuer and jwt_audience must not be empty".into());
        }
        let previous_secret =
            self.jwt_secret_previous_file.is_some() || self.jwt_secret_previous.is_some();
        match &self.jwt_previous_valid_until {
            Some(text) => {
                parse_valid_until(text)?;
            }
            None if previous_secret => {
                return Err("jwt_secret_previous(_file) needs jwt_previous_valid_until: until when tokens signed with the previous secret are accepted, e.g. \"2026-12-06T18:00:00Z\"".into());
            }
            None => {}
        }
        for origin in &self.cors_origins {
            if origin == "*" || !(origin.starts_with("https://") || origin.starts_with("http://")) {
                return Err(format!(
                    "cors_origins: {origin:?} must be an origin like https://host[:port] (no wildcard)"
                ));
            }
        }
        Ok(())
    }

    fn retention_keys(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("retention_raw", &self.retention_raw),
            ("retention_1m", &self.retention_1m),
            ("retention_1h", &self.retention_1h),
            ("retention_1d", &self.retention_1d),
        ]
    }

    /// How long audit request records are kept (`audit_retention`, validated by
    /// [`Config::validate`]); `None`: forever.
    pub fn audit_retention_period(&self) -> Option<Duration> {
        retention_micros("audit_retention", &self.audit_retention)
            .ok()
            .flatten()
            .map(|micros| Duration::from_micros(micros.unsigned_abs()))
    }

    /// How long each tier is kept, from the `retention_*` keys (validated by
    /// [`Config::validate`]; a value that does not parse counts as forever here).
    pub fn retention_policy(&self) -> espwatch_archive::Policy {
        let [raw, minute, hour, day] = self
            .retention_keys()
            .map(|(key, value)| retention_micros(key, value).ok().flatten());
        let rollups = [
            (espwatch_store::RollupTier::Minute, minute),
            (espwatch_store::RollupTier::Hour, hour),
            (espwatch_store::RollupTier::Day, day),
        ]
        .into_iter()
        .filter_map(|(tier, keep)| keep.map(|k| (tier, k)))
        .collect();
        espwatch_archive::Policy { raw, rollups }
    }

    /// The archive location: `archive_url`, or `<data_dir>-archive`.
    pub fn archive_location(&self) -> String {
        match &self.archive_url {
            Some(url) => url.clone(),
            None => {
                let mut dir = self.data_dir.clone().into_os_string();
                dir.push("-archive");
                PathBuf::from(dir).display().to_string()
            }
        }
    }

    /// Opens the archive this configuration names (a local directory is created).
    /// The S3 bucket of a backup made or restored with `store backup|restore` (`url` is
    /// `s3://bucket[/prefix]`), with `backup_options`.
    pub fn open_backup_bucket(&self, url: &str) -> anyhow::Result<espwatch_archive::Archive> {
        let options: Vec<(String, String)> = self
            .backup_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        espwatch_archive::Archive::open_with_options(url, &options)
    }

    pub fn open_archive(&self) -> anyhow::Result<espwatch_archive::Archive> {
        let options: Vec<(String, String)> = self
            .archive_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        espwatch_archive::Archive::open_with_options(&self.archive_location(), &options)
    }

    /// The JWT signing secret: the file's content (trailing whitespace trimmed) or
    /// `jwt_secret`; refused when missing or weak.
    pub fn jwt_secret_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let secret = read_secret(
            "jwt_secret_file",
            self.jwt_secret_file.as_deref(),
            self.jwt_secret.as_ref(),
        )?;
        check_secret(&secret)?;
        Ok(secret)
    }

    /// The previous JWT secret of a rotation (`jwt_secret_previous_file`, else
    /// `jwt_secret_previous`) and until when tokens it signed are accepted
    /// (`jwt_previous_valid_until`, seconds since the epoch); `None` without one. Refused
    /// when weak, or without its end.
    pub fn jwt_previous_secret(&self) -> anyhow::Result<Option<(Vec<u8>, i64)>> {
        use anyhow::Context;
        if self.jwt_secret_previous_file.is_none() && self.jwt_secret_previous.is_none() {
            return Ok(None);
        }
        let secret = read_secret(
            "jwt_secret_previous_file",
            self.jwt_secret_previous_file.as_deref(),
            self.jwt_secret_previous.as_ref(),
        )?;
        check_secret(&secret).context("jwt_secret_previous")?;
        let until = self
            .jwt_previous_valid_until
            .as_deref()
            .context("jwt_secret_previous needs jwt_previous_valid_until")
            .and_then(|text| parse_valid_until(text).map_err(anyhow::Error::msg))?;
        Ok(Some((secret, until)))
    }

    /// The audit chain key: the audit key file's (with the key derived from the JWT secret
    /// to check older records), else derived from the JWT secret; `None` when neither is
    /// usable (the chain is then appended and verified unkeyed, and a keyed chain refuses
    /// appends).
    pub fn audit_key(&self) -> Option<espwatch_store::AuditKey> {
        let derived = match (&self.jwt_secret_file, &self.jwt_secret) {
            (None, None) => None,
            _ => self
                .jwt_secret_bytes()
                .ok()
                .map(|s| espwatch_store::AuditKey::derive(&s)),
        };
        let Some(path) = self.audit_key_path() else {
            return derived;
        };
        match read_audit_key_file(&path) {
            Ok(Some(content)) => Some(espwatch_store::AuditKey::from_key_file(
                &content,
                derived.as_ref(),
            )),
            // Not created yet (the server creates it at its first start): nothing was keyed
            // with it.
            Ok(None) => derived,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the audit key file cannot be used");
                None
            }
        }
    }

    /// Where the audit key is kept: `audit_key_file`, else next to the JWT secret file.
    pub fn audit_key_path(&self) -> Option<PathBuf> {
        self.audit_key_file.clone().or_else(|| {
            self.jwt_secret_file.as_ref().map(|p| {
                let mut name = p.as_os_str().to_owned();
                name.push(".audit-key");
                PathBuf::from(name)
            })
        })
    }

    /// At server start: creates the audit key file (random, mode 0600) when it is missing,
    /// and refuses one that cannot be read or is too short. Returns whether it was created.
    pub fn ensure_audit_key_file(&self) -> anyhow::Result<bool> {
        use anyhow::Context;
        use std::io::Write;
        let Some(path) = self.audit_key_path() else {
            return Ok(false);
        };
        let created = match read_audit_key_file(&path)? {
            Some(_) => false,
            None => {
                let key = crate::keys::random_token(48)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        writeln!(file, "{key}")
                            .and_then(|()| file.sync_all())
                            .with_context(|| format!("writing {}", path.display()))?;
                        tracing::info!(file = %path.display(), "created the audit key file");
                        true
                    }
                    // Another process created it meanwhile: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("creating the audit key file {}", path.display())
                        });
                    }
                }
            }
        };
        read_audit_key_file(&path)?
            .with_context(|| format!("the audit key file {} vanished", path.display()))?;
        Ok(created)
    }

    /// Where audit anchors are written and read: `audit_anchor_file`, else next to the JWT
    /// secret file.
    pub fn audit_anchor_path(&self) -> Option<PathBuf> {
        self.audit_anchor_file.clone().or_else(|| {
            self.jwt_secret_file.as_ref().map(|p| {
                let mut name = p.as_os_str().to_owned();
                name.push(".anchors");
                PathBuf::from(name)
            })
        })
    }

    /// The configuration as JSON without secrets: `jwt_secret` is left out and the database
    /// URL reduced to whether one is set.
    pub fn audit_view(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("jwt_secret");
            map.remove("jwt_secret_previous");
            map.remove("mqtt_password");
            map.remove("vault_token");
            map.insert(
                "database_url".into(),
                serde_json::Value::Bool(self.database_url.is_some()),
            );
            if let Some(url) = &self.amqp_url {
                map.insert(
                    "amqp_url".into(),
                    espwatch_store_postgres::redact_url(url).into(),
                );
            }
            if let Some(url) = &self.redis_url {
                map.insert(
                    "redis_url".into(),
                    espwatch_store_postgres::redact_url(url).into(),
                );
            }
        }
        value
    }

    pub fn max_future(&self) -> Duration {
        Duration::from_secs(self.max_future_secs)
    }

    /// The MQTT password: the file's content (trailing whitespace trimmed) or `mqtt_password`.
    pub fn mqtt_password_value(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context;
        match (&self.mqtt_password_file, &self.mqtt_password) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading mqtt_password_file {}", path.display()))?;
                Ok(Some(text.trim_end().to_owned()))
            }
            (None, Some(secret)) => Ok(Some(secret.0.clone())),
            (None, None) => Ok(None),
        }
    }
}

/// A secret from its file (trailing whitespace trimmed), else its value; empty when neither.
fn read_secret(
    file_key: &str,
    file: Option<&std::path::Path>,
    value: Option<&SecretString>,
) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    Ok(match (file, value) {
        (Some(path), _) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading {file_key} {}", path.display()))?;
            warn_if_readable_by_others(path);
            let end = text
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            text[..end].to_vec()
        }
        (None, Some(secret)) => secret.0.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    })
}

/// `jwt_previous_valid_until`: an RFC 3339 time, as seconds since the epoch.
fn parse_valid_until(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp())
        .map_err(|_| {
            format!(
                "jwt_previous_valid_until must be an RFC 3339 time like \"2026-12-06T18:00:00Z\" (got {text:?})"
            )
        })
}

/// Checks the form of `redis_url`: `redis://[user[:password]@]host[:port][/db]`. TLS
/// (`rediss://`) is not built in: reach a remote Redis through a TLS tunnel or a private
/// network.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        return Err("rediss:// (TLS) is not supported by this build; use redis:// through a TLS tunnel (e.g. stunnel) or a private network".into());
    }
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err("must start with redis://".into());
    };
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("unclosed [")?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err("bad port".into());
    }
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err("the path must be a database number".into());
    }
    Ok(())
}

/// Checks the form of `amqp_url`: `amqp://[user[:password]@]host[:port][/vhost]`. TLS
/// (`amqps://`) is not built in (its client stack would add aws-lc to the build): reach a
/// remote broker through a local TLS tunnel, or over a private network.
pub fn check_amqp_url(url: &str) -> Result<(), String> {
    if url.starts_with("amqps://") {
        return Err(
            "amqps:// (TLS) is not supported by this build; use amqp:// through a TLS tunnel (e.g. stunnel) or a private network".into(),
        );
    }
    let Some(rest) = url.strip_prefix("amqp://") else {
        return Err("must start with amqp://".into());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err("the host is missing".into());
    }
    if let Some((h, port)) = host.rsplit_once(':')
        && !h.ends_with(']')
        && !h.contains(':')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("invalid port {port:?}"));
    }
    Ok(())
}

/// A broker address from `mqtt_url`: `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err("must start with mqtt:// or mqtts://".into());
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains(['/', '?', '#']) {
            return Err("only mqtt[s]://host[:port] is accepted (no path or query)".into());
        }
        if authority.contains('@') {
            return Err(
                "credentials go in mqtt_username and mqtt_password_file, not in the URL".into(),
            );
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:1883`, `host:1883`; a bare IPv6 address needs brackets.
            Some((host, port)) if !host.is_empty() && !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("invalid port {port:?}"))?,
            ),
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// The position of the one `+` level of a topic filter (the well id); refuses `#` and filters
/// with no or several `+` levels.
pub fn mqtt_topic_well_level(filter: &str) -> Result<usize, String> {
    if filter.contains('#') {
        return Err("`#` is not allowed: the filter's one `+` level names the well".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let wells: Vec<usize> = levels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains('+'))
        .map(|(i, _)| i)
        .collect();
    match wells.as_slice() {
        [i] if levels[*i] == "+" => Ok(*i),
        _ => Err(format!(
            "{filter:?} must have exactly one level that is `+` (the well id), e.g. espwatch/+/telemetry"
        )),
    }
}

/// The audit key file's content (trailing whitespace trimmed); `None` when it does not exist.
fn read_audit_key_file(path: &std::path::Path) -> anyhow::Result<Option<Vec<u8>>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "reading the audit key file {}: {e}",
                path.display()
            ));
        }
    };
    warn_if_readable_by_others(path);
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < MIN_SECRET_BYTES {
        anyhow::bail!(
            "the audit key file {} holds {end} bytes; at least {MIN_SECRET_BYTES} random bytes are required (delete it before the first start to have one generated)",
            path.display()
        );
    }
    Ok(Some(text[..end].to_vec()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "a secret file is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &std::path::Path) {}

/// Minimum JWT secret length: 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a secret was refused at start.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the JWT secret is missing: set ESPWATCH_JWT_SECRET_FILE (or jwt_secret_file in espwatch.toml, or ESPWATCH_JWT_SECRET) to at least {MIN_SECRET_BYTES} random bytes: `espwatch secret init` writes one to ./jwt.secret (mode 0600)"
    )]
    Missing,
    #[error(
        "the JWT secret is too short: {0} bytes, at least {MIN_SECRET_BYTES} are required (256 bits)"
    )]
    TooShort(usize),
    #[error("the JWT secret is too weak: it has only {0} distinct bytes; use random bytes")]
    LowEntropy(usize),
    #[error("the JWT secret is too weak: {0}; use random bytes (`espwatch secret init`)")]
    Patterned(&'static str),
}

/// Estimated entropy a secret must carry, bits. The estimate (empirical Shannon entropy ×
/// length) is low for short random strings — 32 base64 characters of 24 random bytes measure
/// 126–150 bits, 64 random hex digits 220–250 — so the bar is set where generated secrets of
/// 32 random bytes pass. It does not see words: `thisismysupersecretjwtsigningkey` measures
/// about 120 bits, which is why [`check_secret`] also looks for structure.
pub const MIN_SECRET_ENTROPY_BITS: f64 = 100.0;

/// Refuses a missing, short or guessable token-signing secret: at least 256 bits long, not an
/// obviously non-random string (few distinct bytes, a repeated unit, a run of consecutive
/// characters or of one character), with an estimated entropy (empirical Shannon entropy per
/// byte × length) of at least [`MIN_SECRET_ENTROPY_BITS`], and not made up for half or more of
/// recognisable structure of 4 characters or more: common English words and common-password
/// stems (an embedded list of about 7 500), keyboard walks, ascending, descending or repeated
/// runs, repeated blocks and dates (`my-espwatch-jwt-secret-for-production`,
/// `qwertyuiopasdfghjklzxcvbnm123456`). Random hex or base64 passes.
pub fn check_secret(secret: &[u8]) -> Result<(), SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Missing);
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort(secret.len()));
    }
    let mut counts = [0usize; 256];
    for b in secret {
        counts[*b as usize] += 1;
    }
    let distinct = counts.iter().filter(|c| **c > 0).count();
    if distinct < 12 {
        return Err(SecretError::LowEntropy(distinct));
    }
    let n = secret.len();
    if (1..=n / 2)
        .any(|unit| n.is_multiple_of(unit) && secret.chunks(unit).all(|c| c == &secret[..unit]))
    {
        return Err(SecretError::Patterned("it is one short unit repeated"));
    }
    let steps = secret
        .windows(2)
        .filter(|w| w[0].abs_diff(w[1]) <= 1)
        .count();
    if steps * 2 >= n - 1 {
        return Err(SecretError::Patterned(
            "it is mostly runs of repeated or consecutive characters",
        ));
    }
    let bits: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum::<f64>()
        * n as f64;
    if bits < MIN_SECRET_ENTROPY_BITS {
        return Err(SecretError::Patterned(
            "its estimated entropy is below 100 bits",
        ));
    }
    let (structured, examined) = crate::secret_structure::structured(secret);
    if structured * 2 >= examined {
        return Err(SecretError::Patterned(
            "half of it or more is words, keyboard walks, runs or dates",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    /// Every field is documented, and `KEYS` (the environment variables) names exactly the
    /// fields: `espwatch config example` and `ESPWATCH_<KEY>` then cover every setting.
    #[test]
    fn every_key_is_documented_and_listed() {
        let documented = documented_keys();
        let value = serde_json::to_value(Config::default()).unwrap();
        let fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names: Vec<&str> = documented.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        let mut sorted_fields = fields.clone();
        sorted_fields.sort_unstable();
        assert_eq!(names, sorted_fields, "fields read from config.rs");
        let mut keys = Config::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(keys, sorted_fields, "Config::KEYS");
        for (key, doc) in &documented {
            assert!(doc.len() > 10, "{key} has no documentation: {doc:?}");
        }
        let (key, doc) = &documented[0];
        assert_eq!(*key, "listen");
        assert!(doc.starts_with("Address the HTTP API listens on."), "{doc}");
    }

    #[test]
    fn secrets_are_judged_by_their_randomness() {
        for weak in [
            "0123456789abcdef0123456789abcdef",
            "abcdefghijklmnopqrstuvwxyzABCDEF",
            "aaaabbbbccccddddeeeeffffgggghhhhiiiijjjjkkkkllll",
            "passwordpasswordpasswordpassword",
        ] {
            assert!(check_secret(weak.as_bytes()).is_err(), "{weak}");
        }
        // Typical generated secrets pass: 32 random bytes as hex, 48 as base64.
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let b64 = "q3J0bW9Yc2t0ZmRuR3pUcWx4b0pWbXZ0cUlKQnhQZ0x1c2dNd1ZwU3dYaWpYaEJr";
        assert_eq!(check_secret(hex.as_bytes()), Ok(()));
        assert_eq!(check_secret(b64.as_bytes()), Ok(()));
    }

    /// Issue 18 item 7: secrets a person made up of words, keyboard walks, runs and dates pass
    /// the byte statistics; they are refused for their structure.
    #[test]
    fn secrets_made_of_words_keyboard_walks_and_dates_are_refused() {
        for weak in [
            "my-espwatch-jwt-secret-for-production",
            "thisismysupersecretjwtsigningkey",
            "qwertyuiopasdfghjklzxcvbnm123456",
            "correct horse battery staple 123",
            "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,",
            "espwatch-production-jwt-secret-2026",
            "password1234password1234password1234x",
            "Welcome-To-The-Oilfield-2026-12-07!",
        ] {
            assert_eq!(
                check_secret(weak.as_bytes()),
                Err(SecretError::Patterned(
                    "half of it or more is words, keyboard walks, runs or dates"
                )),
                "{weak}"
            );
        }
    }

    /// Generated secrets always pass: `openssl rand -hex 32`, `openssl rand -base64 32` (and 48),
    /// URL-safe base64 and what `espwatch secret init` writes, from a seeded generator.
    #[test]
    fn random_hex_and_base64_secrets_always_pass() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let mut rng = espwatch_core::rng::SimRng::new(0x5EC2_0018_0007);
        let mut worst = 0.0f64;
        for round in 0..3000 {
            let len = [32, 48][round % 2];
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            for secret in [hex, STANDARD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
                assert_eq!(check_secret(secret.as_bytes()), Ok(()), "{secret}");
                let (hit, n) = crate::secret_structure::structured(secret.as_bytes());
                worst = worst.max(hit as f64 / n as f64);
            }
        }
        // Far from the bar of one half: the check has room (120 000 measured: at most 28 %).
        assert!(worst < 0.3, "the most structured random secret: {worst}");
        for _ in 0..100 {
            let secret = crate::keys::random_token(48).unwrap();
            assert_eq!(check_secret(secret.as_bytes()), Ok(()), "{secret}");
        }
    }

    /// Issue 22: a previous JWT secret needs the time its tokens stop being accepted.
    #[test]
    fn a_previous_jwt_secret_needs_its_end() {
        let previous = "q3J0bW9Yc2t0ZmRuR3pUcWx4b0pWbXZ0cUlKQnhQZ0x1c2dNd1ZwU3dYaWpYaEJr";
        let mut c = Config {
            jwt_secret_previous: Some(SecretString(previous.into())),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .contains("needs jwt_previous_valid_until")
        );
        c.jwt_previous_valid_until = Some("tomorrow".into());
        assert!(c.validate().unwrap_err().contains("RFC 3339"));
        c.jwt_previous_valid_until = Some("2026-12-06T18:00:00+01:00".into());
        assert_eq!(c.validate(), Ok(()));
        let (secret, until) = c.jwt_previous_secret().unwrap().unwrap();
        assert_eq!(secret, previous.as_bytes());
        assert_eq!(until, 1_796_576_400);
        c.jwt_secret_previous = Some(SecretString("0123456789abcdef0123456789abcdef".into()));
        assert!(c.jwt_previous_secret().is_err(), "a weak previous secret");
        assert_eq!(Config::default().jwt_previous_secret().unwrap(), None);
    }

    #[test]
    fn the_node_timeout_is_at_least_three_heartbeats() {
        let c = Config::default();
        assert_eq!(
            (c.cluster_heartbeat_ms, c.cluster_node_timeout_ms),
            (1000, 10_000)
        );
        assert_eq!(c.validate(), Ok(()));
        for (heartbeat, timeout) in [(100, 300), (1000, 3000), (60_000, 600_000)] {
            let c = Config {
                cluster_heartbeat_ms: heartbeat,
                cluster_node_timeout_ms: timeout,
                ..Config::default()
            };
            assert_eq!(c.validate(), Ok(()), "{heartbeat} / {timeout}");
        }
        for (heartbeat, timeout, start) in [
            (
                1000,
                2999,
                "cluster_node_timeout_ms must be at least 3 x cluster_heartbeat_ms (3000)",
            ),
            (1000, 600_001, "cluster_node_timeout_ms must be at least"),
            (
                99,
                10_000,
                "cluster_heartbeat_ms must be between 100 and 60000",
            ),
            (
                60_001,
                600_000,
                "cluster_heartbeat_ms must be between 100 and 60000",
            ),
        ] {
            let c = Config {
                cluster_heartbeat_ms: heartbeat,
                cluster_node_timeout_ms: timeout,
                ..Config::default()
            };
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(start), "{heartbeat} / {timeout}: {err}");
        }
    }

    #[test]
    fn the_stream_buffer_is_between_16_and_65536_events() {
        assert_eq!(Config::default().stream_buffer_events, 4096);
        for ok in [16, 4096, 65_536] {
            let c = Config {
                stream_buffer_events: ok,
                ..Config::default()
            };
            assert_eq!(c.validate(), Ok(()), "{ok}");
        }
        for bad in [0, 15, 65_537] {
            let c = Config {
                stream_buffer_events: bad,
                ..Config::default()
            };
            let err = c.validate().unwrap_err();
            assert!(
                err.starts_with("stream_buffer_events must be between 16 and 65536")
                    && err.ends_with(&format!("not {bad}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn audit_retention_is_off_by_default_and_at_least_a_day() {
        assert_eq!(Config::default().audit_retention_period(), None);
        let mut c = Config {
            audit_retention: Some("90d".into()),
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.audit_retention_period(),
            Some(Duration::from_secs(90 * 86_400))
        );
        c.audit_retention = Some("forever".into());
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.audit_retention_period(), None);
        for bad in ["12h", "soon", "0d", ""] {
            c.audit_retention = Some(bad.into());
            let err = c.validate().unwrap_err();
            assert!(err.starts_with("audit_retention must be"), "{bad}: {err}");
        }
    }

    #[test]
    fn retention_tiers_are_durations_of_a_day_or_more_or_forever() {
        let mut c = Config {
            retention_raw: Some("90d".into()),
            retention_1m: Some("forever".into()),
            retention_1h: Some("400d".into()),
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        let policy = c.retention_policy();
        assert_eq!(policy.raw, Some(90 * 86_400_000_000));
        assert_eq!(
            policy.rollups,
            vec![(espwatch_store::RollupTier::Hour, 400 * 86_400_000_000)]
        );
        assert!(Config::default().retention_policy().is_empty());
        for bad in ["2h", "soon", "0d", ""] {
            c.retention_raw = Some(bad.into());
            let err = c.validate().unwrap_err();
            assert!(err.starts_with("retention_raw must be"), "{bad}: {err}");
        }
        c.retention_raw = None;
        c.archive_url = Some("s3:///x".into());
        assert!(c.validate().unwrap_err().contains("names no bucket"));
        c.archive_url = Some("s3://bucket/prefix".into());
        c.archive_options
            .insert("aws_endpoint".into(), "http://127.0.0.1:9000".into());
        assert_eq!(c.validate(), Ok(()));
        for secret in ["aws_secret_access_key", "aws_session_token", "token"] {
            let mut c = c.clone();
            c.archive_options.insert(secret.into(), "x".into());
            assert!(
                c.validate().unwrap_err().contains("is a credential"),
                "{secret}"
            );
        }
        let mut b = c.clone();
        b.backup_options
            .insert("aws_secret_access_key".into(), "x".into());
        let err = b.validate().unwrap_err();
        assert!(
            err.starts_with("backup_options: ") && err.contains("is a credential"),
            "{err}"
        );
        c.archive_options.insert("aws_nonsense".into(), "x".into());
        assert!(c.validate().unwrap_err().contains("is not an S3 setting"));
        assert_eq!(
            Config::default().archive_location(),
            "./espwatch-data-archive"
        );
    }

    #[test]
    fn broker_urls_and_topic_filters_are_checked() {
        let url = |s: &str| BrokerUrl::parse(s);
        assert_eq!(
            url("mqtt://127.0.0.1"),
            Ok(BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            })
        );
        assert_eq!(
            url("mqtts://broker.example:9883/"),
            Ok(BrokerUrl {
                tls: true,
                host: "broker.example".into(),
                port: 9883
            })
        );
        assert_eq!(
            url("mqtt://[::1]:1884"),
            Ok(BrokerUrl {
                tls: false,
                host: "::1".into(),
                port: 1884
            })
        );
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://u:p@h",
            "mqtt://h:x",
            "mqtt://h/a",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
        assert_eq!(mqtt_topic_well_level("espwatch/+/telemetry"), Ok(1));
        assert_eq!(mqtt_topic_well_level("+"), Ok(0));
        for bad in ["espwatch/#", "a/b", "+/+/t", "a/w+/t"] {
            assert!(mqtt_topic_well_level(bad).is_err(), "{bad}");
        }
        let config = Config {
            mqtt_url: Some("mqtt://h".into()),
            mqtt_error_topic: "espwatch/+/errors".into(),
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().contains("mqtt_error_topic"));
    }

    #[test]
    fn redis_settings_are_checked() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://redis",
            "redis://:secret@[::1]:6380/2",
        ] {
            assert_eq!(check_redis_url(good), Ok(()), "{good}");
        }
        for bad in [
            "rediss://h",
            "http://h",
            "redis://",
            "redis://h:x",
            "redis://h/x",
        ] {
            assert!(check_redis_url(bad).is_err(), "{bad}");
        }
        let config = Config {
            redis_url: Some("redis://:redis-secret-pw@cache:6379".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("redis-secret-pw"));
        assert!(!config.audit_view().to_string().contains("redis-secret-pw"));
        let config = Config {
            redis_channel_prefix: "a b".into(),
            ..Config::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("redis_channel_prefix")
        );
    }

    #[test]
    fn amqp_settings_are_checked() {
        for good in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://broker",
            "amqp://u@[::1]:5673/vh",
        ] {
            assert_eq!(check_amqp_url(good), Ok(()), "{good}");
        }
        for bad in [
            "amqps://h",
            "http://h",
            "amqp://",
            "amqp://u:p@",
            "amqp://h:x/",
        ] {
            assert!(check_amqp_url(bad).is_err(), "{bad}");
        }
        let config = Config {
            amqp_url: Some("amqp://h".into()),
            amqp_dead_letter_queue: "espwatch.telemetry".into(),
            ..Config::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("amqp_dead_letter_queue")
        );
        let config = Config {
            amqp_prefetch: 0,
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().contains("amqp_prefetch"));
        let config = Config {
            amqp_url: Some("amqp://espwatch:rabbit-secret-pw@mq:5672/%2f".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("rabbit-secret-pw"));
        assert!(!config.audit_view().to_string().contains("rabbit-secret-pw"));
    }

    #[test]
    fn debug_never_prints_secrets() {
        let config = Config {
            database_url: Some(
                "postgres://espwatch:hunter2-secret@db.example:5432/espwatch".into(),
            ),
            jwt_secret: Some(SecretString("a-very-secret-signing-key-0123456789".into())),
            mqtt_password: Some(SecretString("mqtt-broker-password".into())),
            jwt_secret_previous: Some(SecretString("the-previous-signing-key-0123456789".into())),
            jwt_previous_valid_until: Some("2026-12-06T18:00:00Z".into()),
            ..Config::default()
        };
        assert!(
            !config
                .audit_view()
                .to_string()
                .contains("mqtt-broker-password")
        );
        assert!(
            !config
                .audit_view()
                .to_string()
                .contains("the-previous-signing-key")
        );
        assert!(!format!("{config:?}").contains("the-previous-signing-key"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(!shown.contains("a-very-secret-signing-key"), "{shown}");
        assert!(!shown.contains("mqtt-broker-password"), "{shown}");
        assert!(shown.contains("db.example:5432/espwatch"), "{shown}");
        assert!(shown.contains("request_timeout_secs"), "{shown}");
    }
}
