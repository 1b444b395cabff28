//! `AppState`: what every handler shares (store, configuration, security, diagnostics,
//! alarms). The router and the middleware live in `router.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::http::StatusCode;
use espwatch_store::{AlarmStore, SecurityStore, Store};

use crate::admission::IngestGate;
use crate::audit::AuditSink;
use crate::auth::Security;
use crate::diagnostics::DiagnosticsHub;
use crate::error::ApiError;
use crate::live::LiveHub;
use crate::notify::Notifier;
use espwatch_app::config::Config;

/// Shared by every handler: one `Arc`, so a clone is one reference count. The router's
/// middleware and handlers clone the state for every request (each `State` extractor and the
/// `from_fn` layers); a struct of a dozen `Arc`s cost a dozen atomic increments and
/// decrements per clone, ~5 % of the server's CPU per single-reading request (issue 23).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

/// What [`AppState`] shares (read through `Deref`).
#[derive(Clone)]
pub struct AppStateInner {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    /// Set when shutdown starts, so readiness turns 503 while in-flight requests finish.
    pub shutting_down: Arc<AtomicBool>,
    pub started_at: Instant,
    /// Online diagnostics: every accepted reading advances its well's engine.
    pub diagnostics: Arc<DiagnosticsHub>,
    /// Alarm persistence; `None` when the backend has none (alarm routes answer 503).
    pub alarms: Option<Arc<dyn AlarmStore>>,
    /// Identities, sessions, keys, the audit trail and the limits.
    pub security: Arc<Security>,
    /// Bounds the telemetry being ingested at once (503 + Retry-After beyond it).
    pub ingest_gate: Arc<IngestGate>,
    /// Live events for `GET /api/v1/stream`, published after commit.
    pub live: Arc<LiveHub>,
    /// Alarm notifications (rules, channels, the outbox and its sender); `None` when the
    /// backend keeps no alarms (notification routes answer 503).
    pub notifier: Option<Arc<Notifier>>,
    /// Components started beside the HTTP server (the field ingest: MQTT, ...), reported by
    /// `/health/ready` under their names.
    pub components: Arc<Components>,
    /// Repeated 503s of one kind: logged once at ERROR, then counted (`repeats.rs`).
    pub repeats: Arc<crate::repeats::RepeatedErrors>,
}

/// A component's status for `/health/ready` (a JSON object with at least `status`).
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A broker ingest's backlog and delivery counts at one moment, for `/metrics` (the figures
/// its `/health/ready` entry shows, typed, so the exporter reads no JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerBacklog {
    pub connected: bool,
    /// Messages received and not yet acknowledged (in memory, awaiting commit).
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// The bound on `messages`.
    pub capacity_messages: u64,
    /// The bound on `bytes`, where there is one (MQTT: `ingest_max_inflight_bytes`).
    pub capacity_bytes: Option<u64>,
    /// What waits in the broker, not yet delivered.
    pub queued: BrokerQueue,
    /// Messages received since start, re-deliveries included.
    pub received_total: u64,
    /// Received messages the broker marked as sent before (AMQP `redelivered`, MQTT `DUP`).
    pub redelivered_total: u64,
    /// Messages committed and settled (acknowledged, or dead-lettered).
    pub settled_total: u64,
    /// Messages left unacknowledged past the backlog's bound, to be sent again (MQTT).
    pub deferred_total: Option<u64>,
    /// Reconnections made to have deferred messages sent again (MQTT).
    pub redelivery_reconnects_total: Option<u64>,
}

/// The messages a broker holds beyond what it delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BrokerQueue {
    /// The protocol does not tell (MQTT 3.1.1).
    #[default]
    Hidden,
    /// Not known at the moment (not connected, or the last sample failed).
    Unknown,
    /// Messages ready in the queue (AMQP, sampled).
    Messages(u64),
}

/// A broker ingest's [`BrokerBacklog`] reporter.
pub type BacklogFn = Arc<dyn Fn() -> BrokerBacklog + Send + Sync>;

/// The status reporters of components outside the HTTP server. A component never takes the
/// server out of rotation: a broker outage leaves HTTP ingest and queries working.
#[derive(Default)]
pub struct Components {
    reporters: std::sync::RwLock<Vec<(String, StatusFn)>>,
    brokers: std::sync::RwLock<Vec<(espwatch_app::metrics::IngestPath, BacklogFn)>>,
    samplers: std::sync::RwLock<Vec<(String, SamplerFn)>>,
}

/// Records a component's gauges through the `metrics` facade; run at each scrape of
/// `/metrics` (memory only: it must not block).
pub type SamplerFn = Arc<dyn Fn() + Send + Sync>;

impl Components {
    /// Adds (or replaces) the reporter of `name`.
    pub fn register(&self, name: &str, status: StatusFn) {
        let mut reporters = self.reporters.write().unwrap_or_else(|e| e.into_inner());
        reporters.retain(|(n, _)| n != name);
        reporters.push((name.to_owned(), status));
    }

    /// Adds (or replaces) the backlog reporter of a broker ingest; its metrics carry the
    /// same `path` label as the other ingest series.
    pub fn register_broker(&self, path: espwatch_app::metrics::IngestPath, backlog: BacklogFn) {
        let mut brokers = self.brokers.write().unwrap_or_else(|e| e.into_inner());
        brokers.retain(|(p, _)| *p != path);
        brokers.push((path, backlog));
    }

    /// Every broker ingest's backlog now, by ingest path.
    pub fn broker_backlogs(&self) -> Vec<(espwatch_app::metrics::IngestPath, BrokerBacklog)> {
        let brokers = self.brokers.read().unwrap_or_else(|e| e.into_inner());
        brokers.iter().map(|(t, f)| (*t, f())).collect()
    }

    /// Adds (or replaces) the metrics sampler of `name` (the log shipper's lag, ...).
    pub fn register_sampler(&self, name: &str, sample: SamplerFn) {
        let mut samplers = self.samplers.write().unwrap_or_else(|e| e.into_inner());
        samplers.retain(|(n, _)| n != name);
        samplers.push((name.to_owned(), sample));
    }

    /// Runs every registered metrics sampler.
    pub fn sample_metrics(&self) {
        let samplers = self.samplers.read().unwrap_or_else(|e| e.into_inner());
        for (_, sample) in samplers.iter() {
            sample();
        }
    }

    /// Every component's current status, by name.
    pub fn statuses(&self) -> Vec<(String, serde_json::Value)> {
        let reporters = self.reporters.read().unwrap_or_else(|e| e.into_inner());
        reporters.iter().map(|(n, f)| (n.clone(), f())).collect()
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    /// Needs a Tokio runtime (the diagnostics and audit tasks are spawned here). Fails when
    /// the JWT secret is missing or weak.
    pub fn new(
        store: Arc<dyn Store>,
        config: Config,
        security_store: Arc<dyn SecurityStore>,
    ) -> anyhow::Result<Self> {
        crate::metrics::install();
        let anchors = config.audit_key().map(|key| {
            espwatch_app::anchors::AnchorLog::new(config.audit_anchor_path(), key)
                .with_syslog(config.audit_anchor_syslog.clone())
        });
        let audit = AuditSink::start(
            security_store.clone(),
            anchors,
            std::time::Duration::from_secs(config.audit_anchor_secs),
        );
        let security = Security::from_config(&config, security_store, audit)?;
        let live = LiveHub::new(
            config.stream_max_connections_per_identity,
            config.stream_buffer_events,
        );
        Ok(AppState(Arc::new(AppStateInner {
            ingest_gate: IngestGate::new(
                config.ingest_max_inflight_bytes,
                espwatch_app::ingest::DecodeSlots::new(
                    config.ingest_decoders,
                    Some(std::time::Duration::from_millis(
                        config.ingest_decode_wait_ms,
                    )),
                ),
            ),
            diagnostics: DiagnosticsHub::start_with_events(
                store.clone(),
                None,
                config.diagnostics_queue_readings,
                Some(live.clone()),
            ),
            live,
            store,
            config: Arc::new(config),
            shutting_down: Arc::new(AtomicBool::new(false)),
            started_at: Instant::now(),
            alarms: None,
            notifier: None,
            security: Arc::new(security),
            components: Arc::new(Components::default()),
            repeats: crate::repeats::RepeatedErrors::start(),
        })))
    }

    /// Persists alarms raised by the online diagnostics in `alarms`.
    pub fn with_alarms(self, alarms: Arc<dyn AlarmStore>) -> Self {
        let mut this = Arc::unwrap_or_clone(self.0);
        this.attach_alarms(alarms);
        AppState(Arc::new(this))
    }

    /// [`AppState::with_alarms`] when the backend keeps alarms.
    pub fn with_optional_alarms(self, alarms: Option<Arc<dyn AlarmStore>>) -> Self {
        match alarms {
            Some(a) => self.with_alarms(a),
            None => self,
        }
    }
}

impl AppStateInner {
    fn attach_alarms(&mut self, alarms: Arc<dyn AlarmStore>) {
        self.diagnostics = DiagnosticsHub::start_with_events(
            self.store.clone(),
            Some(alarms.clone()),
            self.config.diagnostics_queue_readings,
            Some(self.live.clone()),
        );
        self.notifier = alarms.clone().notify_store().map(|store| {
            Notifier::start(
                store,
                self.store.clone(),
                self.security.audit.clone(),
                &self.config,
            )
        });
        if let Some(notifier) = &self.notifier {
            self.diagnostics.set_notifier(notifier.clone());
        }
        self.alarms = Some(alarms);
    }

    /// The notifier, or 503 when this server's store keeps no notification rules.
    pub fn notifier(&self) -> Result<Arc<Notifier>, ApiError> {
        self.notifier.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "notifications_unavailable",
                "this server's store keeps no notification rules",
            )
        })
    }

    /// The alarm store, or 503 when this server's backend keeps no alarms.
    pub fn alarm_store(&self) -> Result<Arc<dyn AlarmStore>, ApiError> {
        self.alarms.clone().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "alarms_unavailable",
                "this server's store keeps no alarms",
            )
        })
    }
}
