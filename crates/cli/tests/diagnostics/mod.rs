//! Online diagnostics and alarms through HTTP: a simulated well with a closed valve streamed
//! in, the alarm raised, acknowledged and cleared; the legacy decision tree.

use std::time::Duration;

use espwatch_core::sim::fleet::{PinnedCondition, PinnedWell};
use espwatch_core::sim::{FleetConfig, WellSimulator, csv, plan_fleet};
use espwatch_core::{Condition, Timestamp};
use serde_json::{Value, json};

use crate::support::*;

mod alarm_pages;
mod directives;

const HOUR: i64 = 3_600_000_000;

/// CSV bodies of one simulated well: readings before `split` hours, and the rest.
pub(crate) fn closed_valve_well(id: &str) -> (Value, Vec<u8>, Vec<u8>) {
    closed_valve_well_split(id, 9 * 60 + 20)
}

/// As [`closed_valve_well`] (13 h of data ending about now, the valve shut from 9 h to 10 h),
/// cut `split_minutes` after the start.
pub(crate) fn closed_valve_well_split(id: &str, split_minutes: i64) -> (Value, Vec<u8>, Vec<u8>) {
    condition_well(id, Condition::ClosedValve, split_minutes)
}

/// As [`closed_valve_well_split`] with `condition` from 9 h to 10 h instead.
pub(crate) fn condition_well(
    id: &str,
    condition: Condition,
    split_minutes: i64,
) -> (Value, Vec<u8>, Vec<u8>) {
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = Timestamp(now - 13 * HOUR - now.rem_euclid(60_000_000));
    let mut config = FleetConfig::new(3, 0, start, 13 * HOUR);
    config.normal_life = false;
    config.pinned = vec![PinnedWell {
        id: Some(id.to_owned()),
        pump: Some("RX-538-2600".into()),
        interval: Some("60s".into()),
        conditions: vec![PinnedCondition {
            condition,
            start: "9h".into(),
            end: Some("10h".into()),
            severity: Some(0.5),
        }],
        ..PinnedWell::default()
    }];
    let plan = plan_fleet(&config).unwrap();
    let well = &plan.wells[0];
    let mut sim = WellSimulator::new(well, config.start, config.duration_micros);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    csv::write_header(&mut before);
    csv::write_header(&mut after);
    let split = start.0 + split_minutes * 60_000_000;
    while let Some(s) = sim.next_sample() {
        if let Some(m) = &s.measured {
            let out = if s.ts.0 < split {
                &mut before
            } else {
                &mut after
            };
            csv::write_row(out, id, s.ts, m);
        }
    }
    (serde_json::to_value(&well.meta).unwrap(), before, after)
}

pub(crate) async fn wait_for_alarm(app: &TestApp, query: &str) -> Value {
    for _ in 0..200 {
        let (status, body) = app.get(&format!("/api/v1/alarms?{query}")).await;
        assert_eq!(status, 200, "{body}");
        if let Some(a) = body["alarms"].as_array().and_then(|a| a.first()) {
            return a.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no alarm matching {query}");
}

both_backends! {
#[tokio::test]
async fn alarm_lifecycle_raised_acknowledged_cleared() {
    let app = spawn_app().await;
    let (meta, before, after) = closed_valve_well("DIAG-1");
    let (status, body) = app
        .post("/api/v1/wells", "application/json", meta.to_string())
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", before).await;
    assert_eq!(status, 200, "{body}");

    let alarm = wait_for_alarm(&app, "well_id=DIAG-1&state=raised").await;
    assert_eq!(alarm["condition"], "closed_valve");
    assert_eq!(alarm["severity"], "critical");
    assert!(
        alarm["detail"]["action"]
            .as_str()
            .unwrap()
            .contains("valve")
    );
    let id = alarm["id"].as_i64().unwrap();

    // The current diagnosis carries the open episode with evidence.
    let (status, diag) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(status, 200, "{diag}");
    assert_eq!(diag["trained"], true);
    assert_eq!(diag["open_episodes"][0]["condition"], "closed_valve");

    // Acknowledge: who (the signed-in operator, whatever the body claims) and why; bad bodies
    // are refused precisely.
    create_user(
        app.security.as_ref(),
        "operator-7",
        "night shift on the north pad",
        espwatch_core::access::Role::Operator,
        None,
    )
    .await;
    let (operator, _) = app
        .user_client("operator-7", "night shift on the north pad")
        .await;
    let ack = |body: Value| {
        operator
            .post(app.url(&format!("/api/v1/alarms/{id}/ack")))
            .json(&body)
    };
    let (status, body) = app.send(ack(json!({"comment": "x".repeat(2001)}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.send(ack(json!({"note": "unknown field"}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app
        .send(ack(json!({"by": "someone-else", "comment": "crew called"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by"], "operator-7");
    assert_eq!(body["comment"], "crew called");
    let (_, audit) = app.get("/api/v1/audit?kind=alarm_ack").await;
    assert_eq!(audit["records"][0]["actor"], "user:operator-7", "{audit}");
    assert_eq!(audit["records"][0]["detail"]["alarm"], id, "{audit}");
    // Issue 18 item 12: a second acknowledgement is 409 and the first one stands.
    let (status, body) = app
        .send(
            app.client
                .post(app.url(&format!("/api/v1/alarms/{id}/ack")))
                .json(&json!({"comment": "overwritten?"})),
        )
        .await;
    assert_eq!((status, body["error"]["type"].clone()), (409, json!("alarm_already_acknowledged")), "{body}");
    let (_, alarms) = app.get("/api/v1/alarms?state=acknowledged").await;
    let alarm = alarms["alarms"].as_array().unwrap().iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!((alarm["acknowledged_by"].clone(), alarm["comment"].clone()), (json!("operator-7"), json!("crew called")), "{alarm}");
    let (status, _) = app
        .send(
            app.client
                .post(app.url("/api/v1/alarms/999999/ack"))
                .json(&json!({"by": "x"})),
        )
        .await;
    assert_eq!(status, 404);

    // The valve opens; healthy running clears the alarm. One alarm, not a storm.
    let (status, body) = app.post("/api/v1/telemetry", "text/csv", after).await;
    assert_eq!(status, 200, "{body}");
    let cleared = wait_for_alarm(&app, "well_id=DIAG-1&state=cleared").await;
    assert_eq!(cleared["id"].as_i64(), Some(id));
    assert!(cleared["ended_at"].is_string());
    let (_, all) = app.get("/api/v1/alarms?well_id=DIAG-1").await;
    let conditions: Vec<&str> = all["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["condition"].as_str().unwrap())
        .collect();
    assert_eq!(conditions, ["closed_valve"], "{all}");
    let (status, events) = app.get("/api/v1/wells/DIAG-1/events").await;
    assert_eq!(status, 200);
    assert_eq!(events["events"][0]["condition"], "closed_valve");
    // A cleared alarm cannot be acknowledged again.
    let (status, body) = app.send(ack(json!({"by": "late"}))).await;
    assert_eq!(status, 409, "{body}");

    // Retrain on a chosen healthy window (settable baseline).
    let (_, first) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(first["trained"], true);
    let retrain = |body: Value| {
        app.client
            .post(app.url("/api/v1/wells/DIAG-1/diagnosis/retrain"))
            .json(&body)
    };
    let (status, body) = app
        .send(retrain(
            json!({"from": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}),
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    // A window where the well has no data (a backfilled well's default "last 8 h", say)
    // cannot teach a baseline: refused, and the well keeps the one it has.
    let (status, body) = app
        .send(retrain(
            json!({"from": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"}),
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["type"], "no_baseline", "{body}");
    assert_eq!(body["error"]["details"]["readings_in_window"], 0, "{body}");
    let (_, kept) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(kept["trained"], true, "{kept}");
    assert!(!kept["baseline"].is_null(), "{kept}");
    // A well test marked by the operator: a grace period for the steady-state rules.
    let transient = |body: Value| {
        app.client
            .post(app.url("/api/v1/wells/DIAG-1/diagnosis/transient"))
            .json(&body)
    };
    let soon = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, body) = app
        .send(transient(json!({"until": soon, "reason": "well_test"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["well_id"], "DIAG-1", "{body}");
    let far = (chrono::Utc::now() + chrono::Duration::hours(48)).to_rfc3339();
    let (status, body) = app.send(transient(json!({"until": far}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.send(transient(json!({"until": "soon"}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.send(retrain(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trained"], true, "{body}");

    let (status, body) = app.get("/api/v1/alarms?state=bogus").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.get("/api/v1/wells/NOPE/diagnosis").await;
    assert_eq!(status, 404);

    // After a restart the state is rebuilt from stored telemetry.
    let dir = app.stop().await;
    let data_dir = dir.as_ref().unwrap().path().to_path_buf();
    let app = start_in(data_dir, dir, |_| {}).await;
    let (status, diag) = app.get("/api/v1/wells/DIAG-1/diagnosis").await;
    assert_eq!(status, 200, "{diag}");
    assert_eq!(diag["trained"], true, "{diag}");
    app.stop().await;
}
}

#[tokio::test]
async fn legacy_decision_tree_keeps_working() {
    let app = spawn_app().await;
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/api/v1/diagnostics/decision_tree"))
                .json(&json!({
                    "well_id": "TEST-001",
                    "flow_stable": false,
                    "production_below_target": true,
                    "pip_low": false,
                    "flow_level": "medium",
                    "telemetry": {}
                })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["diagnosis"]["type"], "Free Gas Lock");
    assert!(body["diagnosis"]["confidence"].as_f64().unwrap() > 0.8);
    let (status, body) = app
        .post("/api/v1/diagnostics/decision_tree", "application/json", "{")
        .await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}

/// Issue 17, bug 3: the queue to the diagnostics is bounded (in readings). Batches beyond it
/// are not queued; their wells are rebuilt from the store (where the readings already are), so
/// the diagnosis still covers every reading. The queue, lag and skips are in /health/ready.
#[tokio::test]
async fn diagnostics_queue_is_bounded_and_skipped_wells_are_rebuilt_from_storage() {
    use std::sync::Arc;

    use espwatch_core::{Field, Measurements, Reading, WellId};
    use espwatch_server::diagnostics::DiagnosticsHub;
    use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let hub = DiagnosticsHub::start_with_capacity(store.clone(), None, 100);
    let now = Timestamp::from_datetime(chrono::Utc::now()).0;
    let start = now - 2 * HOUR - now.rem_euclid(60_000_000);
    let wells = [WellId::parse("Q-0").unwrap(), WellId::parse("Q-1").unwrap()];
    let batches: Vec<Vec<Reading>> = (0..10i64)
        .map(|b| {
            (0..60i64)
                .map(|i| {
                    let mut values = Measurements::empty();
                    values.set(Field::FrequencyHz, Some(55.0));
                    values.set(Field::MotorCurrentA, Some(40.0 + (i % 3) as f64));
                    Reading {
                        well_id: wells[(b % 2) as usize].clone(),
                        ts: Timestamp(start + (b * 60 + i) * 10_000_000),
                        values,
                    }
                })
                .collect()
        })
        .collect();
    let last_ts = |w: usize| Timestamp(start + ((8 + w as i64) * 60 + 59) * 10_000_000);
    // Stored first, as ingestion does; then handed over back to back (a current-thread
    // runtime: the diagnostics task cannot run in between).
    for batch in &batches {
        store
            .append(
                batch.clone(),
                AppendOptions {
                    auto_register_wells: true,
                },
            )
            .await
            .unwrap();
    }
    for batch in batches {
        hub.submit(batch);
    }
    let status = hub.status();
    assert_eq!(status.queued_readings, 60, "{status:?}");
    assert_eq!(status.skipped_readings, 540, "{status:?}");
    assert_eq!(status.queue_capacity_readings, 100);
    for _ in 0..400 {
        if hub.status().queued_readings == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hub.status().queued_readings, 0, "{:?}", hub.status());
    // Without the rebuild Q-0 would stop at its first batch and Q-1 would be unknown.
    for (w, well) in wells.iter().enumerate() {
        let diagnosis = hub.diagnosis(well).await;
        assert_eq!(
            diagnosis["as_of"].as_str(),
            Some(last_ts(w).to_rfc3339().as_str()),
            "{well}: {diagnosis}"
        );
    }
    assert!(hub.status().rebuilds >= 2, "{:?}", hub.status());

    // The figures are on the readiness probe.
    let app = spawn_app_with(|c| c.diagnostics_queue_readings = 1234).await;
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    let diagnostics = &ready["checks"]["diagnostics"];
    assert_eq!(diagnostics["queue_capacity_readings"], 1234, "{ready}");
    assert_eq!(diagnostics["status"], "healthy", "{ready}");
    for key in [
        "queued_readings",
        "lag_ms",
        "skipped_readings",
        "diagnosed_readings",
    ] {
        assert!(diagnostics[key].is_u64(), "{key}: {ready}");
    }
    app.stop().await;
}

/// A store whose history reads of the wells named `SLOW-…` block their thread until the test
/// releases them: a rebuild from stored data that takes as long as the test wants (a 48 h
/// replay of a large well, a slow disk), without guessing how long.
struct HeldHistory {
    inner: std::sync::Arc<dyn espwatch_store::Store>,
    gate: std::sync::Arc<Gate>,
}

/// Where the held reads wait: each tells `parked` it arrived, then blocks (its thread, as
/// CPU-heavy work would) until `open`. Counts the reads waiting at once, and the most ever.
struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    parked: tokio::sync::mpsc::UnboundedSender<()>,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn wait(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        let _ = self.parked.send(());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
        self.in_flight.fetch_sub(1, SeqCst);
    }

    fn release(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }
}

#[async_trait::async_trait]
impl espwatch_store::Store for HeldHistory {
    async fn append(
        &self,
        readings: Vec<espwatch_core::Reading>,
        opts: espwatch_store::AppendOptions,
    ) -> espwatch_store::StoreResult<espwatch_store::AppendOutcome> {
        self.inner.append(readings, opts).await
    }

    async fn read_range(
        &self,
        well_id: &espwatch_core::WellId,
        range: espwatch_core::TimeRange,
    ) -> espwatch_store::StoreResult<Vec<espwatch_core::Point>> {
        if well_id.as_str().starts_with("SLOW-") {
            self.gate.wait();
        }
        self.inner.read_range(well_id, range).await
    }

    async fn query(
        &self,
        query: &espwatch_core::TelemetryQuery,
    ) -> espwatch_store::StoreResult<espwatch_core::Series> {
        self.inner.query(query).await
    }

    async fn fleet_query(
        &self,
        query: &espwatch_store::FleetQuery,
    ) -> espwatch_store::StoreResult<Vec<espwatch_store::WellSeries>> {
        self.inner.fleet_query(query).await
    }

    async fn latest(&self) -> espwatch_store::StoreResult<Vec<espwatch_store::LatestReading>> {
        self.inner.latest().await
    }

    async fn list_wells(&self) -> espwatch_store::StoreResult<Vec<espwatch_store::WellRecord>> {
        self.inner.list_wells().await
    }

    async fn get_well(
        &self,
        well_id: &espwatch_core::WellId,
    ) -> espwatch_store::StoreResult<Option<espwatch_store::WellRecord>> {
        self.inner.get_well(well_id).await
    }

    async fn create_well(
        &self,
        meta: espwatch_core::WellMeta,
    ) -> espwatch_store::StoreResult<espwatch_store::WellRecord> {
        self.inner.create_well(meta).await
    }

    async fn update_well(
        &self,
        meta: espwatch_core::WellMeta,
    ) -> espwatch_store::StoreResult<Option<espwatch_store::WellRecord>> {
        self.inner.update_well(meta).await
    }

    async fn delete_well(
        &self,
        well_id: &espwatch_core::WellId,
    ) -> espwatch_store::StoreResult<bool> {
        self.inner.delete_well(well_id).await
    }

    async fn health(&self) -> espwatch_store::StoreHealth {
        self.inner.health().await
    }

    async fn stats(&self) -> espwatch_store::StoreResult<espwatch_store::StoreStats> {
        self.inner.stats().await
    }

    fn spool_status(&self) -> Option<espwatch_store::spool::SpoolStatus> {
        self.inner.spool_status()
    }

    async fn close(&self) -> espwatch_store::StoreResult<()> {
        self.inner.close().await
    }
}

/// Bounds a wait that only a stalled server exceeds.
const STALLED: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STALLED, f)
        .await
        .unwrap_or_else(|_| panic!("{what} is held up behind SLOW-1's rebuild"))
}

/// A server on a runtime of one worker thread, started afresh on a store holding two hours of
/// history (one reading a minute, minutes 0..120 from [`HeldServer::at`]) of each of `wells`,
/// whose history reads of SLOW-1 block their thread until [`HeldServer::release`]: SLOW-1's
/// rebuild from stored data lasts as long as the test wants (a 48 h replay of a large well, a
/// slow disk), without guessing how long. No well has engine state yet.
struct HeldServer {
    address: std::net::SocketAddr,
    http: reqwest::Client,
    start: i64,
    gate: std::sync::Arc<Gate>,
    /// Tells each time a read of SLOW-1's history arrived at the gate.
    parked: tokio::sync::mpsc::UnboundedReceiver<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl HeldServer {
    fn start(wells: &[&str]) -> HeldServer {
        use std::sync::Arc;

        use espwatch_core::{Field, Measurements, Reading, WellId};
        use espwatch_store::AppendOptions;

        init();
        let dir = tempfile::tempdir().unwrap();
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (parked_tx, parked) = tokio::sync::mpsc::unbounded_channel();
        let gate = Arc::new(Gate {
            open: std::sync::Mutex::new(false),
            opened: std::sync::Condvar::new(),
            parked: parked_tx,
            in_flight: Default::default(),
            most: Default::default(),
        });
        let now = Timestamp::from_datetime(chrono::Utc::now()).0;
        let start = now - 3 * HOUR - now.rem_euclid(60_000_000);
        let (address, key, stop) = server.block_on(async {
            let config = espwatch_app::Config {
                data_dir: dir.path().to_path_buf(),
                jwt_secret: Some(espwatch_app::SecretString(test_jwt_secret().to_owned())),
                rate_limit_per_identity: 0.0,
                rate_limit_per_source: 0.0,
                telemetry_readings_per_identity: 0.0,
                max_connections_per_source: 0,
                ..espwatch_app::Config::default()
            };
            let opened = espwatch_app::open_store(&config).await.unwrap();
            for well in wells {
                let well = WellId::parse(well).unwrap();
                let history = (0..120i64)
                    .map(|minute| {
                        let mut values = Measurements::empty();
                        values.set(Field::FrequencyHz, Some(55.0));
                        values.set(Field::MotorCurrentA, Some(40.0 + (minute % 3) as f64));
                        values.set(Field::IntakePressurePsi, Some(850.0));
                        Reading {
                            well_id: well.clone(),
                            ts: Timestamp(start + minute * 60_000_000),
                            values,
                        }
                    })
                    .collect();
                let options = AppendOptions {
                    auto_register_wells: true,
                };
                opened.store.append(history, options).await.unwrap();
            }
            let role = espwatch_core::access::Role::Admin;
            let key = create_key(opened.security.as_ref(), "test-admin", role, None).await;
            let store = Arc::new(HeldHistory {
                inner: opened.store,
                gate: gate.clone(),
            });
            let state = espwatch_server::AppState::new(store, config, opened.security)
                .unwrap()
                .with_optional_alarms(opened.alarms);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(espwatch_server::serve(listener, state, async {
                let _ = stopped.await;
            }));
            (address, key, stop)
        });
        HeldServer {
            address,
            http: bearer_client(&key),
            start,
            gate,
            parked,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// The time of minute `minute` of the stored history, RFC 3339.
    fn at(&self, minute: i64) -> String {
        Timestamp(self.start + minute * 60_000_000).to_rfc3339()
    }

    /// `GET path`, as a future that owns what it needs (to be spawned).
    fn get(&self, path: &str) -> impl std::future::Future<Output = (u16, Value)> + 'static {
        let request = self.http.get(format!("http://{}{path}", self.address));
        async move { status_json(request.send().await.expect("request")).await }
    }

    /// Ingests one JSON body.
    async fn ingest(&self, body: &Value) -> (u16, Value) {
        let request = self
            .http
            .post(format!("http://{}/api/v1/telemetry", self.address))
            .header("content-type", "application/json")
            .body(body.to_string());
        status_json(request.send().await.expect("request")).await
    }

    /// Waits until `well`'s diagnosis is as of `minute`.
    async fn diagnosed_until(&self, well: &str, minute: i64) {
        let path = format!("/api/v1/wells/{well}/diagnosis");
        let what = format!("{well}'s diagnosis as of minute {minute}");
        bounded(&what, async {
            loop {
                let (status, diagnosis) = self.get(&path).await;
                assert_eq!(status, 200, "{diagnosis}");
                if diagnosis["as_of"].as_str() == Some(self.at(minute).as_str()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    fn release(&self) {
        self.gate.release();
    }
}

impl Drop for HeldServer {
    fn drop(&mut self) {
        // Released first: the runtime's shutdown waits for a held read.
        self.gate.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

/// Runs a test body on a runtime of its own, apart from the held server's.
fn client(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

/// Issue 17, bug 3: one well's rebuild from stored data holds up no other well. The first
/// `GET /diagnosis` of SLOW-1 after the start rebuilds it, and the rebuild is held at reading
/// its history (see [`HeldServer`]). Meanwhile another well's diagnosis is built and answered,
/// readings of both wells are ingested, and the other well's live diagnosis follows them. A
/// lock shared by all wells and held across the rebuild, or a rebuild on the runtime's one
/// worker instead of the blocking pool, holds all of that up (the test then fails at its first
/// bound instead of hanging).
#[test]
fn a_rebuild_for_a_diagnosis_holds_up_no_other_well() {
    let mut server = HeldServer::start(&["SLOW-1", "FREE-1"]);
    client(async {
        let held = tokio::spawn(server.get("/api/v1/wells/SLOW-1/diagnosis"));
        bounded(
            "SLOW-1's rebuild reaching its history",
            server.parked.recv(),
        )
        .await;

        let (status, diagnosis) = bounded(
            "FREE-1's diagnosis",
            server.get("/api/v1/wells/FREE-1/diagnosis"),
        )
        .await;
        assert_eq!(status, 200, "{diagnosis}");
        assert_eq!(diagnosis["as_of"].as_str(), Some(server.at(119).as_str()));
        let (status, body) = bounded(
            "ingesting",
            server.ingest(&reading("FREE-1", &server.at(120), 41.0)),
        )
        .await;
        assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
        server.diagnosed_until("FREE-1", 120).await;
        let (status, body) = bounded(
            "ingesting",
            server.ingest(&reading("SLOW-1", &server.at(120), 41.0)),
        )
        .await;
        assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");

        // All of that while SLOW-1's rebuild was held.
        assert!(!held.is_finished(), "SLOW-1's diagnosis was not held");
        server.release();
        let (status, diagnosis) = bounded("SLOW-1's diagnosis", held).await.unwrap();
        assert_eq!(status, 200, "{diagnosis}");
        assert_eq!(diagnosis["as_of"].as_str(), Some(server.at(120).as_str()));
    });
}

/// Issue 17, bug 3, in the live diagnostics: a batch carrying readings of several wells
/// rebuilds each one it has no state of, and one slow rebuild must not keep the batch's other
/// wells locked meanwhile. FREE-1 (built) and SLOW-1 (not yet) arrive in one batch; while
/// SLOW-1's rebuild is held, FREE-1's diagnosis answers and ingestion goes on.
#[test]
fn a_rebuild_in_the_live_diagnostics_keeps_no_other_well_locked() {
    let mut server = HeldServer::start(&["SLOW-1", "FREE-1"]);
    client(async {
        server.diagnosed_until("FREE-1", 119).await;
        let batch = json!([
            reading("FREE-1", &server.at(120), 41.0),
            reading("SLOW-1", &server.at(120), 41.0),
        ]);
        let (status, body) = bounded("ingesting", server.ingest(&batch)).await;
        assert_eq!((status, &body["accepted"]), (200, &json!(2)), "{body}");
        bounded(
            "SLOW-1's rebuild reaching its history",
            server.parked.recv(),
        )
        .await;

        let (status, diagnosis) = bounded(
            "FREE-1's diagnosis",
            server.get("/api/v1/wells/FREE-1/diagnosis"),
        )
        .await;
        assert_eq!(status, 200, "{diagnosis}");
        // Whether the batch's FREE-1 reading is in yet depends on the order the batch's wells
        // are handled in; that FREE-1 answers is the point.
        let as_of = diagnosis["as_of"].as_str().unwrap_or_default().to_owned();
        assert!(
            [server.at(119), server.at(120)].contains(&as_of),
            "{diagnosis}"
        );
        let (status, body) = bounded(
            "ingesting",
            server.ingest(&reading("FREE-1", &server.at(121), 41.0)),
        )
        .await;
        assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");

        server.release();
        server.diagnosed_until("SLOW-1", 120).await;
        server.diagnosed_until("FREE-1", 121).await;
    });
}

/// Issues 17 and 21: the wells of a batch that have no state yet (after a start, or wells that
/// moved to this node) are rebuilt from stored data several at once, not one after another
/// (each rebuild is mostly a wait for the store: one by one, a node that had to rebuild a third
/// of 10 000 wells fell 11 minutes behind), and never more than
/// [`espwatch_server::diagnostics::REBUILDS_IN_FLIGHT`] at once. Two batches carry nine wells
/// none of which has state; the history reads of their rebuilds are held (see [`HeldServer`]):
/// the bound of them must be waiting at once (one at a time, the second never arrives and the
/// test fails at its bound). Released, every well's readings are applied, in time order.
#[test]
fn a_batchs_rebuilds_run_several_at_once_within_the_bound() {
    use espwatch_server::diagnostics::REBUILDS_IN_FLIGHT;
    use std::sync::atomic::Ordering::SeqCst;

    let names: Vec<String> = (1..=2 * REBUILDS_IN_FLIGHT + 1)
        .map(|i| format!("SLOW-{i}"))
        .collect();
    let wells: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut server = HeldServer::start(&wells);
    client(async {
        for minute in [120, 121] {
            let batch: Vec<Value> = wells
                .iter()
                .map(|w| reading(w, &server.at(minute), 41.0))
                .collect();
            let (status, body) = bounded("ingesting", server.ingest(&json!(batch))).await;
            assert_eq!(
                (status, &body["accepted"]),
                (200, &json!(wells.len())),
                "{body}"
            );
        }
        for n in 1..=REBUILDS_IN_FLIGHT {
            bounded(
                &format!("rebuild {n} of {REBUILDS_IN_FLIGHT} reaching its history at once"),
                server.parked.recv(),
            )
            .await;
        }
        assert_eq!(server.gate.in_flight.load(SeqCst), REBUILDS_IN_FLIGHT);

        server.release();
        // Every batch diagnosed (the queue empty), before any diagnosis is asked for (a
        // `GET /diagnosis` could rebuild a well itself).
        bounded("the diagnostics catching up", async {
            loop {
                let (_, ready) = server.get("/health/ready").await;
                let diagnostics = &ready["checks"]["diagnostics"];
                if diagnostics["queued_readings"] == 0
                    && diagnostics["diagnosed_readings"] == json!(2 * wells.len())
                {
                    assert_eq!(diagnostics["rebuilds"], json!(wells.len()), "{ready}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(
            server.gate.most.load(SeqCst),
            REBUILDS_IN_FLIGHT,
            "history reads at once"
        );
        for well in &wells {
            server.diagnosed_until(well, 121).await;
        }
    });
}
