//! Operational metrics in the Prometheus text format (`GET /metrics`, and the optional
//! unauthenticated `metrics_listen` address).
//!
//! Events are recorded where they happen through the `metrics` facade (ingest outcomes in
//! `espwatch_app::metrics`, commits and checkpoints in `espwatch_store::metrics`, requests,
//! authentication and rate limits here); the process-wide recorder is
//! `metrics-exporter-prometheus`, installed once by [`install`]. Levels (queue depths, store
//! size, open alarms, pool use, the broker ingests' backlogs, process figures) are sampled at
//! scrape time by [`render`], off the async workers where they touch files.
//!
//! **Every label value is bounded**: routes are the router's templates (never raw paths),
//! methods a fixed list, statuses numbers, reasons and kinds constants of the code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

pub const HTTP_REQUEST_DURATION: &str = "espwatch_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "espwatch_http_requests_in_flight";
pub const RATE_LIMITED: &str = "espwatch_http_rate_limited_total";
pub const AUTH_FAILURES: &str = "espwatch_auth_failures_total";
pub const AUTH_LOCKOUTS: &str = "espwatch_auth_lockouts_total";
pub const SECURITY_EVENTS: &str = "espwatch_security_events_total";

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const READINGS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0,
];
const APPENDS_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0];

const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
/// `None` when another recorder was installed first (then nothing is exported).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_readings".into()),
                        READINGS_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_appends".into()), APPENDS_BUCKETS)
                });
            let handle = builder.and_then(|b| b.install_recorder());
            match handle {
                Ok(handle) => {
                    // Histogram samples wait in memory until an upkeep folds them into their
                    // buckets: done at every scrape, and every few seconds so a server nobody
                    // scrapes does not grow.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("espwatch-metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_INTERVAL);
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "metrics upkeep thread not started");
                    }
                    describe();
                    espwatch_app::metrics::register_ingest_series();
                    metrics::gauge!("espwatch_build_info", "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed: /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use espwatch_app::metrics as ingest;
    use espwatch_store::metrics as store;
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(ingest::READINGS_ACCEPTED, "Readings stored, by ingest path");
    describe_counter!(
        ingest::READINGS_DUPLICATE,
        "Readings whose (well_id, ts) was already stored, by ingest path"
    );
    describe_counter!(
        ingest::READINGS_REJECTED,
        "Readings refused, by ingest path and reason (invalid, unknown_well, not_permitted)"
    );
    describe_counter!(
        ingest::PAYLOADS_MALFORMED,
        "Payloads (requests, messages) that could not be parsed at all, by ingest path"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request duration by method, route template and status"
    );
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being served");
    describe_counter!(
        RATE_LIMITED,
        "Requests answered 429, by the limit that refused them"
    );
    describe_counter!(AUTH_FAILURES, "Refused credentials and sign-ins, by kind");
    describe_counter!(
        AUTH_LOCKOUTS,
        "Accounts locked after failed passwords, by where"
    );
    describe_counter!(
        SECURITY_EVENTS,
        "Security events recorded in the audit trail, by kind"
    );
    describe_gauge!(
        store::PENDING_READINGS,
        "Readings handed to the store and not yet answered (queued or committing)"
    );
    describe_histogram!(
        store::COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one group commit"
    );
    describe_histogram!(store::COMMIT_GROUP_READINGS, "Readings per group commit");
    describe_histogram!(
        store::COMMIT_GROUP_APPENDS,
        "Appends (concurrent callers) sharing one group commit"
    );
    describe_counter!(store::COMMIT_FAILURES, "Group commits that failed");
    describe_histogram!(
        store::CHECKPOINT_DURATION,
        Unit::Seconds,
        "Duration of a checkpoint (embedded) or a rollup refresh pass that did work (PostgreSQL)"
    );
    describe_counter!(
        store::CHECKPOINT_FAILURES,
        "Checkpoints or refresh passes that failed"
    );
    describe_gauge!(
        "espwatch_store_size_bytes",
        Unit::Bytes,
        "Bytes the store occupies"
    );
    describe_gauge!("espwatch_store_wells", "Wells in the registry");
    describe_gauge!(
        "espwatch_store_segments",
        "Sealed segments (embedded) or telemetry partitions/chunks (PostgreSQL)"
    );
    describe_gauge!(
        "espwatch_store_unsealed_readings",
        "Readings in the embedded store's log, not yet sealed by a checkpoint"
    );
    describe_gauge!(
        "espwatch_store_rollup_backlog",
        "Runs of minutes queued for rollup maintenance (PostgreSQL)"
    );
    describe_gauge!(
        "espwatch_db_pool_connections",
        "Pooled database connections, by state"
    );
    describe_gauge!(
        "espwatch_db_pool_max_connections",
        "Most connections the pool opens"
    );
    describe_gauge!(
        "espwatch_db_pool_waiting",
        "Callers waiting for a pooled connection"
    );
    describe_gauge!(
        "espwatch_diagnostics_queue_readings",
        "Readings accepted but not yet diagnosed"
    );
    describe_gauge!(
        "espwatch_diagnostics_queue_capacity_readings",
        "Readings that may wait for the diagnostics before batches are skipped"
    );
    describe_gauge!(
        "espwatch_diagnostics_lag_seconds",
        Unit::Seconds,
        "How long the batch being diagnosed waited after ingestion"
    );
    describe_counter!("espwatch_diagnostics_readings_total", "Readings diagnosed");
    describe_counter!(
        "espwatch_diagnostics_skipped_readings_total",
        "Readings not queued for diagnosis because the queue was full"
    );
    describe_counter!(
        "espwatch_diagnostics_rebuilds_total",
        "Well engines rebuilt from stored data"
    );
    describe_gauge!(
        "espwatch_alarms_open",
        "Open alarms (raised or acknowledged), by condition, severity and state"
    );
    describe_gauge!(
        "espwatch_ingest_inflight_bytes",
        Unit::Bytes,
        "Body bytes of ingest requests being processed"
    );
    describe_gauge!(
        "espwatch_ingest_capacity_bytes",
        Unit::Bytes,
        "The in-flight ingest budget"
    );
    describe_counter!(
        "espwatch_ingest_overload_rejections_total",
        "Ingest requests answered 503 because the in-flight budget was exhausted"
    );
    describe_gauge!(
        "espwatch_broker_connected",
        "1 while the broker ingest is connected, by ingest path (mqtt, amqp)"
    );
    describe_gauge!(
        "espwatch_broker_backlog_messages",
        "Broker messages received and not yet acknowledged (in memory, awaiting commit), by ingest path"
    );
    describe_gauge!(
        "espwatch_broker_backlog_bytes",
        Unit::Bytes,
        "Payload bytes of the broker messages received and not yet acknowledged, by ingest path"
    );
    describe_gauge!(
        "espwatch_broker_backlog_capacity_messages",
        "Most broker messages held unacknowledged in memory (MQTT: beyond it they are deferred; AMQP: prefetch x consumers)"
    );
    describe_gauge!(
        "espwatch_broker_backlog_capacity_bytes",
        Unit::Bytes,
        "Most payload bytes of broker messages held unacknowledged in memory (MQTT)"
    );
    describe_gauge!(
        "espwatch_broker_queue_messages",
        "Messages ready in the broker's queue, not yet delivered: the consumer lag (AMQP; NaN while unknown)"
    );
    describe_counter!(
        "espwatch_broker_received_messages_total",
        "Broker messages received, re-deliveries included, by ingest path"
    );
    describe_counter!(
        "espwatch_broker_redelivered_messages_total",
        "Broker messages received that the broker had sent before (AMQP redelivered, MQTT DUP)"
    );
    describe_counter!(
        "espwatch_broker_settled_messages_total",
        "Broker messages committed, then acknowledged (or dead-lettered), by ingest path"
    );
    describe_counter!(
        "espwatch_broker_deferred_messages_total",
        "MQTT messages left unacknowledged past the backlog bound, received again after a reconnection"
    );
    describe_counter!(
        "espwatch_broker_redelivery_reconnects_total",
        "MQTT reconnections made to receive deferred messages again"
    );
    describe_counter!(
        "espwatch_audit_write_failures_total",
        "Audit records lost (write failures and drops)"
    );
    describe_gauge!(
        "espwatch_spool_bytes",
        Unit::Bytes,
        "Bytes in the outage spool (PostgreSQL down)"
    );
    describe_gauge!("espwatch_spool_readings", "Readings in the outage spool");
    describe_gauge!(
        "espwatch_spool_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest record in the outage spool"
    );
    describe_gauge!(
        "espwatch_data_dir_available_bytes",
        Unit::Bytes,
        "Bytes available on the file system of the data directory (the spool's with PostgreSQL)"
    );
    describe_gauge!(
        "espwatch_data_dir_capacity_bytes",
        Unit::Bytes,
        "Size of the file system of the data directory (the spool's with PostgreSQL)"
    );
    describe_gauge!("espwatch_build_info", "Always 1; the version as a label");
    describe_gauge!(
        "espwatch_start_time_seconds",
        Unit::Seconds,
        "Server start, seconds since the Unix epoch"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident set size"
    );
    describe_gauge!(
        "process_virtual_memory_bytes",
        Unit::Bytes,
        "Virtual memory size"
    );
    describe_gauge!(
        "process_cpu_seconds_total",
        Unit::Seconds,
        "User and system CPU time of the process"
    );
    describe_gauge!("process_open_fds", "Open file descriptors");
    describe_gauge!("process_max_fds", "Limit on open file descriptors");
    describe_gauge!("process_threads", "Threads of the process");
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Process start, seconds since the Unix epoch"
    );
}

/// A method as a label: the standard ones by name, anything else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// One served request. `route` is the matched template (or `unmatched`).
pub fn record_request(method: &axum::http::Method, route: &str, status: u16, took: Duration) {
    metrics::histogram!(
        HTTP_REQUEST_DURATION,
        "method" => method_label(method),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .record(took.as_secs_f64());
}

/// Counts requests in flight while it lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        metrics::gauge!(HTTP_IN_FLIGHT).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_IN_FLIGHT).decrement(1.0);
    }
}

/// A request refused by a rate limit (`per_source`, `login_per_source`, `per_identity`,
/// `telemetry_readings`).
pub fn record_rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// Refused credentials or a failed sign-in (`kind` is a constant of the code).
pub fn record_auth_failure(kind: &'static str) {
    metrics::counter!(AUTH_FAILURES, "kind" => kind).increment(1);
}

/// A security event written to the audit trail (kinds are constants of the code).
pub fn record_security_event(kind: &str) {
    metrics::counter!(SECURITY_EVENTS, "kind" => kind.to_owned()).increment(1);
}

/// Takes the levels of the moment (store, diagnostics, alarms, process) and renders every
/// metric in the text format.
pub async fn render(state: &AppState) -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    sample(state).await;
    let handle = handle.clone();
    // Histograms are drained into their buckets by the upkeep; both touch only memory, but
    // rendering a large registry is CPU work: off the async workers.
    tokio::task::spawn_blocking(move || {
        handle.run_upkeep();
        handle.render()
    })
    .await
    .unwrap_or_default()
}

/// How long a scrape waits for the store's and the alarm store's answers.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

async fn sample(state: &AppState) {
    let backend = if state.config.database_url.is_some() {
        "postgres"
    } else {
        "embedded"
    };
    if let Ok(Ok(stats)) = tokio::time::timeout(SAMPLE_TIMEOUT, state.store.stats()).await {
        let b = backend;
        metrics::gauge!("espwatch_store_wells", "backend" => b).set(stats.wells as f64);
        metrics::gauge!("espwatch_store_segments", "backend" => b).set(stats.segments as f64);
        if backend == "embedded" {
            metrics::gauge!("espwatch_store_unsealed_readings", "backend" => b)
                .set(stats.readings_in_log as f64);
        } else {
            metrics::gauge!("espwatch_store_rollup_backlog", "backend" => b)
                .set(stats.readings_in_log as f64);
        }
        if let Some(bytes) = stats.size_bytes {
            metrics::gauge!("espwatch_store_size_bytes", "backend" => b).set(bytes as f64);
        }
        if let Some(pool) = stats.pool {
            let busy = pool.size.saturating_sub(pool.idle);
            metrics::gauge!("espwatch_db_pool_connections", "state" => "idle")
                .set(pool.idle as f64);
            metrics::gauge!("espwatch_db_pool_connections", "state" => "busy").set(busy as f64);
            metrics::gauge!("espwatch_db_pool_max_connections").set(pool.max as f64);
            metrics::gauge!("espwatch_db_pool_waiting").set(pool.waiting as f64);
        }
    }
    if let Some(spool) = state.store.spool_status() {
        metrics::gauge!("espwatch_spool_bytes").set(spool.bytes as f64);
        metrics::gauge!("espwatch_spool_readings").set(spool.readings as f64);
        metrics::gauge!("espwatch_spool_oldest_age_seconds").set(spool.oldest_age_secs);
    }

    let d = state.diagnostics.status();
    metrics::gauge!("espwatch_diagnostics_queue_readings").set(d.queued_readings as f64);
    metrics::gauge!("espwatch_diagnostics_queue_capacity_readings")
        .set(d.queue_capacity_readings as f64);
    metrics::gauge!("espwatch_diagnostics_lag_seconds").set(d.lag_ms as f64 / 1e3);
    metrics::counter!("espwatch_diagnostics_readings_total").absolute(d.diagnosed_readings);
    metrics::counter!("espwatch_diagnostics_skipped_readings_total").absolute(d.skipped_readings);
    metrics::counter!("espwatch_diagnostics_rebuilds_total").absolute(d.rebuilds);

    let gate = state.ingest_gate.status();
    metrics::gauge!("espwatch_ingest_inflight_bytes").set(gate.inflight_bytes as f64);
    metrics::gauge!("espwatch_ingest_capacity_bytes").set(gate.capacity_bytes as f64);
    metrics::counter!("espwatch_ingest_overload_rejections_total")
        .absolute(gate.rejected_overload_total);
    metrics::counter!("espwatch_audit_write_failures_total")
        .absolute(state.security.audit.failures());
    for (path, backlog) in state.components.broker_backlogs() {
        record_broker(path, &backlog);
    }
    state.components.sample_metrics();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
        - state.started_at.elapsed().as_secs_f64();
    metrics::gauge!("espwatch_start_time_seconds").set(started.floor());

    sample_alarms(state).await;
    // The directory that fills: the embedded store's, or the outage spool's (PostgreSQL).
    let dir = if state.config.database_url.is_some() {
        state.config.spool_dir()
    } else {
        state.config.data_dir.clone()
    };
    if let Ok((process, disk)) =
        tokio::task::spawn_blocking(move || (process::read(), process::disk(&dir))).await
    {
        process.record();
        if let Some((available, capacity)) = disk {
            metrics::gauge!("espwatch_data_dir_available_bytes").set(available as f64);
            metrics::gauge!("espwatch_data_dir_capacity_bytes").set(capacity as f64);
        }
    }
}

/// A broker ingest's backlog and counts, labelled `path` like the other ingest series
/// (`mqtt`, `amqp`: a constant of the field ingest, the same names as `IngestPath`).
fn record_broker(path: espwatch_app::metrics::IngestPath, b: &crate::state::BrokerBacklog) {
    use crate::state::BrokerQueue;
    let p = path.label();
    metrics::gauge!("espwatch_broker_connected", "path" => p).set(f64::from(u8::from(b.connected)));
    metrics::gauge!("espwatch_broker_backlog_messages", "path" => p).set(b.messages as f64);
    metrics::gauge!("espwatch_broker_backlog_bytes", "path" => p).set(b.bytes as f64);
    metrics::gauge!("espwatch_broker_backlog_capacity_messages", "path" => p)
        .set(b.capacity_messages as f64);
    if let Some(bytes) = b.capacity_bytes {
        metrics::gauge!("espwatch_broker_backlog_capacity_bytes", "path" => p).set(bytes as f64);
    }
    match b.queued {
        BrokerQueue::Hidden => {}
        // Not a stale figure: an unknown depth is NaN (comparisons with it are false).
        BrokerQueue::Unknown => {
            metrics::gauge!("espwatch_broker_queue_messages", "path" => p).set(f64::NAN)
        }
        BrokerQueue::Messages(n) => {
            metrics::gauge!("espwatch_broker_queue_messages", "path" => p).set(n as f64)
        }
    }
    metrics::counter!("espwatch_broker_received_messages_total", "path" => p)
        .absolute(b.received_total);
    metrics::counter!("espwatch_broker_redelivered_messages_total", "path" => p)
        .absolute(b.redelivered_total);
    metrics::counter!("espwatch_broker_settled_messages_total", "path" => p)
        .absolute(b.settled_total);
    if let Some(n) = b.deferred_total {
        metrics::counter!("espwatch_broker_deferred_messages_total", "path" => p).absolute(n);
    }
    if let Some(n) = b.redelivery_reconnects_total {
        metrics::counter!("espwatch_broker_redelivery_reconnects_total", "path" => p).absolute(n);
    }
}

/// The (condition, severity, state) label sets set before, so a count that fell to zero is
/// exported as 0 rather than kept at its last value. The labels are the code's own names, so
/// the set is bounded by the vocabulary.
type AlarmLabels = (&'static str, &'static str, &'static str);
static ALARM_LABELS: Mutex<BTreeSet<AlarmLabels>> = Mutex::new(BTreeSet::new());

async fn sample_alarms(state: &AppState) {
    use espwatch_store::{AlarmFilter, AlarmState};
    let Some(alarms) = state.alarms.clone() else {
        return;
    };
    let mut counts: BTreeMap<AlarmLabels, u64> = BTreeMap::new();
    for alarm_state in [AlarmState::Raised, AlarmState::Acknowledged] {
        let filter = AlarmFilter {
            state: Some(alarm_state),
            open: false,
            well_id: None,
            ..AlarmFilter::default()
        };
        let Ok(Ok(list)) = tokio::time::timeout(SAMPLE_TIMEOUT, alarms.list_alarms(&filter)).await
        else {
            // Unknown this time: the previous values stay.
            return;
        };
        for a in list {
            *counts
                .entry((a.condition.name(), a.severity.name(), alarm_state.name()))
                .or_default() += 1;
        }
    }
    let mut seen = ALARM_LABELS.lock().unwrap_or_else(|e| e.into_inner());
    for key in seen.iter() {
        if !counts.contains_key(key) {
            let (condition, severity, st) = *key;
            metrics::gauge!("espwatch_alarms_open", "condition" => condition, "severity" => severity, "state" => st)
                .set(0.0);
        }
    }
    for ((condition, severity, st), n) in counts {
        seen.insert((condition, severity, st));
        metrics::gauge!("espwatch_alarms_open", "condition" => condition, "severity" => severity, "state" => st)
            .set(n as f64);
    }
}

/// Process figures from `/proc/self` (Linux); nothing elsewhere.
mod process {
    #[derive(Default)]
    pub struct Process {
        rss_bytes: Option<u64>,
        virtual_bytes: Option<u64>,
        cpu_seconds: Option<f64>,
        threads: Option<u64>,
        start_time_seconds: Option<f64>,
        open_fds: Option<u64>,
        max_fds: Option<u64>,
    }

    /// Clock ticks per second of `/proc/self/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on
    /// every Linux architecture espwatch runs on).
    const TICKS_PER_SECOND: f64 = 100.0;
    const PAGE_SIZE: u64 = 4096;

    pub fn read() -> Process {
        let mut p = Process::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which is in parentheses and may hold spaces.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                // `rest` starts at field 3 (state): field n is f[n - 3].
                let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
                if let (Some(utime), Some(stime)) = (num(14), num(15)) {
                    p.cpu_seconds = Some((utime + stime) as f64 / TICKS_PER_SECOND);
                }
                p.threads = num(20);
                p.virtual_bytes = num(23);
                p.rss_bytes = num(24).map(|pages| pages * PAGE_SIZE);
                if let (Some(start), Some(boot)) = (num(22), boot_time()) {
                    p.start_time_seconds = Some(boot + start as f64 / TICKS_PER_SECOND);
                }
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        p.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|v| v.parse().ok())
            });
        p
    }

    /// Bytes available to this process and the size of the file system holding `dir`.
    #[cfg(unix)]
    pub fn disk(dir: &std::path::Path) -> Option<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a valid NUL-terminated string and `st` a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        let block = st.f_frsize as u64;
        Some((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
    }

    #[cfg(not(unix))]
    pub fn disk(_dir: &std::path::Path) -> Option<(u64, u64)> {
        None
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    impl Process {
        pub fn record(&self) {
            let set = |name: &'static str, v: Option<f64>| {
                if let Some(v) = v {
                    metrics::gauge!(name).set(v);
                }
            };
            set(
                "process_resident_memory_bytes",
                self.rss_bytes.map(|v| v as f64),
            );
            set(
                "process_virtual_memory_bytes",
                self.virtual_bytes.map(|v| v as f64),
            );
            set("process_cpu_seconds_total", self.cpu_seconds);
            set("process_threads", self.threads.map(|v| v as f64));
            set("process_start_time_seconds", self.start_time_seconds);
            set("process_open_fds", self.open_fds.map(|v| v as f64));
            set("process_max_fds", self.max_fds.map(|v| v as f64));
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        #[cfg(target_os = "linux")]
        fn reads_this_process() {
            let p = super::read();
            assert!(p.rss_bytes.unwrap() > 1024 * 1024);
            assert!(p.cpu_seconds.is_some());
            assert!(p.open_fds.unwrap() >= 3);
            assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
            assert!(p.threads.unwrap() >= 1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let start = p.start_time_seconds.unwrap();
            assert!(
                start <= now + 1.0 && start > now - 86_400.0 * 365.0,
                "{start}"
            );
        }
    }
}

/// Serves `GET /metrics` alone, without credentials, on `listener` (the `metrics_listen`
/// address) until `shutdown` resolves. Every other path is 404. The API listener's connection
/// limits apply here too (issue 18 item 2): request heads within `http_header_timeout_secs`
/// (also the idle keep-alive timeout), at most `max_connections_per_source` connections per
/// address, malformed or oversized heads answered in the error envelope.
pub async fn serve_unauthenticated(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    let body = render(&state).await;
                    (
                        [
                            (axum::http::header::CONTENT_TYPE, CONTENT_TYPE),
                            (axum::http::header::CACHE_CONTROL, "no-store"),
                        ],
                        body,
                    )
                },
            ),
        )
        .with_state(state.clone());
    let limits = crate::connections::ConnectionLimits {
        header_timeout: Duration::from_secs(state.config.http_header_timeout_secs),
        per_source: state.config.max_connections_per_source,
    };
    let listener = crate::connections::LimitedListener::new(listener, limits, None);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
