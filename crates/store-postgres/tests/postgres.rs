//! The PostgreSQL backend: the shared conformance suite on a fresh database per test, plus
//! what only this backend has (rollups, reconnection, TimescaleDB, TLS settings).
//! Skips with a printed reason when PostgreSQL is unreachable, unless
//! ESPWATCH_REQUIRE_SERVICES=1.

#[path = "../../store/tests/conformance/mod.rs"]
mod conformance;
#[path = "../../store/tests/security_conformance/mod.rs"]
mod security_conformance;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conformance::{Harness, T0, all_time, auto, reading, ts, well};
use espwatch_core::series::evaluate;
use espwatch_core::{Agg, Field, Measurements, Reading, TelemetryQuery, TimeRange, Timestamp};
use espwatch_store::{ReadingOutcome, SecurityStore, Store, StoreError};
use espwatch_store_postgres::testing::{TestDatabase, admin_url};
use espwatch_store_postgres::{Flavor, PostgresOptions, PostgresStore, TimescaleMode};

fn fast() -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        // Maintenance stays out of the way; tests seal explicitly.
        rollup_interval: Duration::from_secs(3600),
        ..PostgresOptions::default()
    }
}

struct PgHarness {
    db: TestDatabase,
    current: Mutex<Option<PostgresStore>>,
}

impl PgHarness {
    async fn new() -> Option<PgHarness> {
        Some(PgHarness {
            db: TestDatabase::create().await?,
            current: Mutex::new(None),
        })
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::open(&self.db.url, fast())
            .await
            .expect("open PostgreSQL store")
    }
}

#[async_trait]
impl Harness for PgHarness {
    async fn open(&self) -> Arc<dyn Store> {
        let store = self.store().await;
        *self.current.lock().unwrap() = Some(store.clone());
        Arc::new(store)
    }

    async fn seal(&self, _store: &Arc<dyn Store>) {
        let store = self
            .current
            .lock()
            .unwrap()
            .clone()
            .expect("a store is open");
        store.refresh_rollups().await.unwrap();
    }

    async fn abandon(&self, store: Arc<dyn Store>) {
        self.current.lock().unwrap().take();
        drop(store);
    }

    fn alarms(&self) -> Arc<dyn espwatch_store::AlarmStore> {
        Arc::new(
            self.current
                .lock()
                .unwrap()
                .clone()
                .expect("a store is open"),
        )
    }
}

mod conformance_suite {
    use super::*;
    // A skipped harness (PostgreSQL unreachable) returns from the test early.
    conformance::conformance_tests!(match PgHarness::new().await {
        Some(harness) => harness,
        None => return,
    });
}

// ---------------------------------------------------------------------------------------------
// The security store: the shared suite, tampering through a raw connection.

struct PgSecurityHarness {
    inner: PgHarness,
}

impl PgSecurityHarness {
    async fn new() -> Option<PgSecurityHarness> {
        Some(PgSecurityHarness {
            inner: PgHarness::new().await?,
        })
    }

    async fn raw(&self, sql: &str, param: &(dyn tokio_postgres::types::ToSql + Sync)) {
        let (client, conn) = tokio_postgres::connect(&self.inner.db.url, tokio_postgres::NoTls)
            .await
            .expect("raw connection");
        tokio::spawn(conn);
        let n = client.execute(sql, &[param]).await.expect(sql);
        assert_eq!(n, 1, "{sql}");
    }

    async fn raw_batch(&self, sql: &str) {
        let (client, conn) = tokio_postgres::connect(&self.inner.db.url, tokio_postgres::NoTls)
            .await
            .expect("raw connection");
        tokio::spawn(conn);
        client.batch_execute(sql).await.expect(sql);
    }
}

#[async_trait]
impl security_conformance::SecurityHarness for PgSecurityHarness {
    async fn open(&self) -> Arc<dyn SecurityStore> {
        Arc::new(self.inner.store().await)
    }

    async fn open_keyed(&self, key: espwatch_store::AuditKey) -> Arc<dyn SecurityStore> {
        let options = PostgresOptions {
            audit_key: Some(key),
            ..fast()
        };
        Arc::new(
            PostgresStore::open(&self.inner.db.url, options)
                .await
                .expect("open PostgreSQL store"),
        )
    }

    async fn tamper_audit(&self, id: i64) {
        // The database refuses; someone able to disable the trigger is caught by the chain.
        let (client, conn) = tokio_postgres::connect(&self.inner.db.url, tokio_postgres::NoTls)
            .await
            .expect("raw connection");
        tokio::spawn(conn);
        let refused = client
            .execute("UPDATE audit SET status = status + 1 WHERE id = $1", &[&id])
            .await;
        assert!(refused.is_err(), "the audit table is append-only");
        self.raw_batch("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
            .await;
        self.raw("UPDATE audit SET status = status + 1 WHERE id = $1", &id)
            .await;
    }

    async fn delete_audit(&self, id: i64) {
        self.raw_batch("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
            .await;
        self.raw("DELETE FROM audit WHERE id = $1", &id).await;
    }

    async fn corrupt_role(&self, name: &str) {
        self.raw("UPDATE users SET role = 'wizard' WHERE name = $1", &name)
            .await;
    }
}

mod security_suite {
    use super::*;
    security_conformance::security_conformance_tests!(match PgSecurityHarness::new().await {
        Some(harness) => harness,
        None => return,
    });
}

// ---------------------------------------------------------------------------------------------
// Rollups answer exactly what raw data answers.

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Equal buckets, equal values; `avg` to 1e-9 relative (sums of partial sums round differently).
fn assert_same_series(got: &espwatch_core::Series, want: &espwatch_core::Series, what: &str) {
    assert_eq!(got.ts, want.ts, "{what}: buckets");
    for ((f, a), (g, b)) in got.columns.iter().zip(&want.columns) {
        assert_eq!(f, g);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            match (x, y) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                    "{what}: {f:?}[{i}] {x} vs {y}"
                ),
                _ => assert_eq!(x, y, "{what}: {f:?}[{i}]"),
            }
        }
    }
}

async fn check_queries(store: &PostgresStore, rng: &mut u64, label: &str) {
    let w = well("ROLL");
    let fields = vec![
        Field::FrequencyHz,
        Field::MotorCurrentA,
        Field::IntakePressurePsi,
    ];
    let all = store.read_range(&w, all_time()).await.unwrap();
    let day = 86_400i64;
    for step in [60, 300, 3600, 7200, day, 2 * day, 90] {
        for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Last] {
            // Unaligned edges inside the data, and the whole span.
            let from = (xorshift(rng) % (2 * day as u64)) as i64 - 3600;
            let to = from + (xorshift(rng) % (3 * day as u64)) as i64 + 60;
            for (a, b) in [(from, to), (-day, 5 * day)] {
                let query = TelemetryQuery {
                    well_id: w.clone(),
                    range: TimeRange {
                        from: Timestamp(T0 + a * 1_000_000 + 17),
                        to: Timestamp(T0 + b * 1_000_000 - 3),
                    },
                    fields: fields.clone(),
                    step_micros: Some(step * 1_000_000),
                    agg,
                    max_points: 2000,
                };
                let got = store.query(&query).await.unwrap();
                let want = evaluate(&query, &all);
                assert_same_series(
                    &got,
                    &want,
                    &format!("{label} step {step} {agg:?} {a}..{b}"),
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_queries_equal_raw_evaluation() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let store = h.store().await;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    // Three days of irregular readings with gaps and missing channels.
    let mut batch = Vec::new();
    let mut t = 0i64;
    while t < 3 * 86_400 {
        let mut m = Measurements::empty();
        if !xorshift(&mut rng).is_multiple_of(4) {
            m.set(
                Field::FrequencyHz,
                Some((xorshift(&mut rng) % 6000) as f64 / 100.0),
            );
        }
        if !xorshift(&mut rng).is_multiple_of(3) {
            m.set(
                Field::MotorCurrentA,
                Some((xorshift(&mut rng) % 9000) as f64 / 100.0),
            );
        }
        batch.push(Reading {
            well_id: well("ROLL"),
            ts: Timestamp(T0 + t * 1_000_000),
            values: m,
        });
        t += 7
            + (xorshift(&mut rng) % 60) as i64
            + if xorshift(&mut rng).is_multiple_of(50) {
                5000
            } else {
                0
            };
    }
    for chunk in batch.chunks(5000) {
        store.append(chunk.to_vec(), auto()).await.unwrap();
    }
    check_queries(&store, &mut rng, "all queued (raw)").await;
    assert!(store.refresh_rollups().await.unwrap() > 0);
    check_queries(&store, &mut rng, "rolled up").await;
    // Late data into rolled-up hours, not yet refreshed: those buckets must come from raw.
    // Some land mid-hour, some in an hour's last second: the hour's `last` then comes from
    // the minute just rebuilt, not from the minutes read back.
    let late: Vec<Reading> = (0..50)
        .map(|i| reading("ROLL", 3 + i * 3_001, 99.0 + i as f64))
        .chain((1..40).map(|h| reading("ROLL", h * 3_600 + 3_599, 500.0 + h as f64)))
        // Alone, hours away from the others: their hours are partly rebuilt minutes and
        // partly minutes read back, and either part can hold the hour's last value.
        .chain([
            reading("ROLL", 2 * 86_400 + 1_807, 700.0),
            reading("ROLL", 2 * 86_400 + 6 * 3_600 + 3_599, 701.0),
        ])
        .collect();
    store.append(late, auto()).await.unwrap();
    check_queries(&store, &mut rng, "late data queued").await;
    store.refresh_rollups().await.unwrap();
    check_queries(&store, &mut rng, "late data rolled up").await;
    store.close().await.unwrap();
}

/// A new day's partition is attached without waiting for transactions that read telemetry
/// (a rollup refresh, a long query): ingestion into a new day does not stall behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_partitions_do_not_wait_for_open_readers() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let store = h.store().await;
    store
        .append(vec![reading("P", 0, 1.0)], auto())
        .await
        .unwrap();
    let (mut reader, conn) = tokio_postgres::connect(&h.db.url, tokio_postgres::NoTls)
        .await
        .expect("reader connection");
    tokio::spawn(conn);
    let open = reader.transaction().await.unwrap();
    let n: i64 = open
        .query_one("SELECT count(*) FROM telemetry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // Ten days later: a partition the writer has to create while the reader holds its lock.
    let later = reading("P", 10 * 86_400, 2.0);
    let appended = tokio::time::timeout(Duration::from_secs(10), store.append(vec![later], auto()))
        .await
        .expect("the append waited for the open reader")
        .unwrap();
    assert_eq!(appended.count(ReadingOutcome::Accepted), 1);
    open.commit().await.unwrap();
    let points = store.read_range(&well("P"), all_time()).await.unwrap();
    assert_eq!(points.len(), 2);
    store.close().await.unwrap();
}

/// The newest reading per well comes from `well_latest` (kept by the refresher) merged with raw
/// rows of wells that still have queued minutes; whichever side holds it, the answer is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_exact_whether_or_not_the_refresher_has_run() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let store = h.store().await;
    let newest = |l: Vec<espwatch_store::LatestReading>, w: &str| {
        l.iter()
            .find(|x| x.well_id == well(w))
            .map(|x| (x.point.0, x.point.1.get(Field::FrequencyHz)))
    };
    let batch = vec![
        reading("A", 10, 1.0),
        reading("A", 7_200, 2.0),
        reading("B", 5, 3.0),
    ];
    store.append(batch, auto()).await.unwrap();
    let l = store.latest().await.unwrap();
    assert_eq!(
        newest(l.clone(), "A"),
        Some((ts(7_200), Some(2.0))),
        "queued"
    );
    assert_eq!(newest(l, "B"), Some((ts(5), Some(3.0))), "queued");
    assert!(store.refresh_rollups().await.unwrap() > 0);
    let l = store.latest().await.unwrap();
    assert_eq!(
        newest(l.clone(), "A"),
        Some((ts(7_200), Some(2.0))),
        "refreshed"
    );
    assert_eq!(l.len(), 2);

    // Late data, older than what the refresher recorded: queued, but not the newest.
    store
        .append(vec![reading("A", 3_600, 9.0)], auto())
        .await
        .unwrap();
    assert_eq!(
        newest(store.latest().await.unwrap(), "A"),
        Some((ts(7_200), Some(2.0))),
        "late data queued"
    );
    store.refresh_rollups().await.unwrap();
    assert_eq!(
        newest(store.latest().await.unwrap(), "A"),
        Some((ts(7_200), Some(2.0))),
        "late data refreshed"
    );
    // Newer data shows before the refresher has seen it, and stays after.
    store
        .append(vec![reading("B", 9_000, 4.0)], auto())
        .await
        .unwrap();
    assert_eq!(
        newest(store.latest().await.unwrap(), "B"),
        Some((ts(9_000), Some(4.0)))
    );
    store.refresh_rollups().await.unwrap();
    let l = store.latest().await.unwrap();
    assert_eq!(newest(l.clone(), "B"), Some((ts(9_000), Some(4.0))));
    assert_eq!(newest(l, "A"), Some((ts(7_200), Some(2.0))));
    store.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Connections die; acknowledged data does not.

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client
}

async fn terminate_backends(admin: &tokio_postgres::Client, db: &str) -> u64 {
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .expect("terminate")
        .len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_under_load_lose_nothing_acknowledged() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let store = Arc::new(h.store().await);
    let admin = admin().await;
    let clients = 8;
    let per_client = 150;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut errors = 0;
            for i in 0..per_client {
                let batch: Vec<Reading> = (0..20)
                    .map(|k| reading(&format!("L{c}"), (i * 20 + k) as i64, i as f64))
                    .collect();
                // A client retries until acknowledged, as a gateway would.
                loop {
                    match store.append(batch.clone(), auto()).await {
                        Ok(out) => {
                            for (r, o) in batch.iter().zip(&out.outcomes) {
                                if *o == ReadingOutcome::Accepted {
                                    acknowledged.push((r.well_id.clone(), r.ts));
                                }
                            }
                            break;
                        }
                        Err(StoreError::Unavailable(_)) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
            (acknowledged, errors)
        }));
    }
    let mut killed = 0;
    let started = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        killed += terminate_backends(&admin, &h.db.name).await;
    }
    let mut acknowledged = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (a, e) = t.await.unwrap();
        acknowledged.extend(a);
        errors += e;
    }
    assert!(killed > 0, "no connection was terminated");
    eprintln!("terminated {killed} backends; {errors} appends saw Unavailable and were re-sent");
    // Every acknowledged reading is there, and every reading ended up stored exactly once.
    let mut stored = HashSet::new();
    for c in 0..clients {
        for (t, _) in store
            .read_range(&well(&format!("L{c}")), all_time())
            .await
            .unwrap()
        {
            stored.insert((well(&format!("L{c}")), t));
        }
    }
    for a in &acknowledged {
        assert!(stored.contains(a), "acknowledged reading {a:?} lost");
    }
    assert_eq!(stored.len(), clients * per_client * 20);
    assert!(store.health().await.read.ok);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_not_ready_until_it_returns() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let store = PostgresStore::open(
        &h.db.url,
        PostgresOptions {
            retry_window: Duration::from_millis(500),
            ..fast()
        },
    )
    .await
    .unwrap();
    store
        .append(vec![reading("U", 0, 1.0)], auto())
        .await
        .unwrap();
    let admin = admin().await;
    let name = &h.db.name;
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    terminate_backends(&admin, name).await;
    let health = store.health().await;
    assert!(!health.read.ok && !health.write.ok, "{health:?}");
    let refused = store.append(vec![reading("U", 1, 1.0)], auto()).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let health = store.health().await;
    assert!(health.read.ok && health.write.ok, "{health:?}");
    assert!(health.read.latency_ms > 0.0);
    assert_eq!(
        store
            .append(vec![reading("U", 1, 1.0)], auto())
            .await
            .unwrap()
            .outcomes,
        vec![ReadingOutcome::Accepted]
    );
    assert_eq!(
        store
            .read_range(&well("U"), all_time())
            .await
            .unwrap()
            .len(),
        2
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits_and_partitions_follow_the_data() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let store = h.store().await;
    assert_eq!(store.flavor(), Flavor::Partitioned);
    let before = store.stats().await.unwrap();
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = store.clone();
        // Spread over 20 days, backfilled far in the past: partitions are made on demand.
        tasks.push(tokio::spawn(async move {
            s.append(
                vec![reading(
                    &format!("G{}", i % 10),
                    (i % 20) * 86_400 - 400 * 86_400 + i,
                    1.0,
                )],
                auto(),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().outcomes, vec![ReadingOutcome::Accepted]);
    }
    let after = store.stats().await.unwrap();
    let commits = after.commits - before.commits;
    assert!(
        commits > 0 && commits < n as u64,
        "{commits} commits for {n} appends"
    );
    assert!(
        after.segments >= before.segments + 20,
        "{before:?} → {after:?}"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_tls_is_required_when_asked() {
    let Some(h) = PgHarness::new().await else {
        return;
    };
    let report = espwatch_store_postgres::migrate(&h.db.url, &PostgresOptions::default())
        .await
        .unwrap();
    assert!(report.applied.is_empty(), "{:?}", report.applied);
    // Our test server speaks plain TCP: asking for TLS must fail, not silently downgrade.
    let url = format!("{}?sslmode=require", h.db.url);
    match PostgresStore::open(&url, fast()).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("connecting"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => eprintln!("note: the test server accepted TLS"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_migration_upgrades_a_version_3_database() {
    use espwatch_core::access::Role;
    use security_conformance::{at, event, new_user};

    let Some(h) = PgHarness::new().await else {
        return;
    };
    // Roll the fresh database back to what a release before migration 4 left behind.
    let (client, conn) = tokio_postgres::connect(&h.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE audit, api_keys, refresh_tokens, sessions, users;
             DELETE FROM espwatch_migrations WHERE version = 4",
        )
        .await
        .unwrap();
    let report = espwatch_store_postgres::migrate(&h.db.url, &PostgresOptions::default())
        .await
        .unwrap();
    let applied: Vec<i32> = report.applied.iter().map(|(v, _)| *v).collect();
    assert_eq!(applied, [4]);
    let store = h.store().await;
    store
        .create_user(new_user("root", Role::Admin), at(0))
        .await
        .unwrap();
    store
        .append_audit(vec![event(1, "user_create", Some("cli"), 201)])
        .await
        .unwrap();
    let v = store.verify_audit().await.unwrap();
    assert_eq!((v.records, v.first_broken), (1, None));
    store.close().await.unwrap();
}

/// The TimescaleDB server the TimescaleDB tests run against: `ESPWATCH_TEST_TIMESCALE_URL`,
/// default the cluster `../shared/scripts/timescaledb-up` starts on 127.0.0.1:5433.
fn timescale_admin_url() -> String {
    std::env::var("ESPWATCH_TEST_TIMESCALE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".to_owned())
}

/// An admin connection to the TimescaleDB server, or `None` (reason printed) when it is not
/// running, unless ESPWATCH_REQUIRE_SERVICES=1.
async fn timescale_admin() -> Option<tokio_postgres::Client> {
    let url = timescale_admin_url();
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&url, tokio_postgres::NoTls),
    )
    .await;
    match connected {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            Some(client)
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            let msg = format!(
                "TimescaleDB unreachable at {} ({why}); run ../shared/scripts/timescaledb-up",
                espwatch_store_postgres::redact_url(&url)
            );
            if espwatch_store_postgres::testing::services_required() {
                panic!("{msg}; ESPWATCH_REQUIRE_SERVICES=1 forbids skipping");
            }
            eprintln!("skipping TimescaleDB test: {msg}");
            None
        }
    }
}

/// Runs `body` with the URL of a fresh, unmigrated database on the TimescaleDB cluster (so the
/// flavour is decided by the test), and drops the database afterwards, panic or not. `None`
/// when the cluster is unreachable (the skip is printed, or a failure under
/// `ESPWATCH_REQUIRE_SERVICES=1`).
async fn on_fresh_timescale_database<F, Fut>(prefix: &str, body: F) -> Option<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let admin = timescale_admin().await?;
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = espwatch_store_postgres::testing::url_for(&timescale_admin_url(), &name);
    let outcome = tokio::spawn(body(url)).await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_hypertable_and_aggregates() {
    let opts = PostgresOptions {
        timescale: TimescaleMode::Require,
        ..fast()
    };
    on_fresh_timescale_database("espwatch_tsdb", |url| async move {
        let store = PostgresStore::open(&url, opts)
            .await
            .expect("open on TimescaleDB with timescaledb = require");
        assert_eq!(store.flavor(), Flavor::Timescale);
        let rs: Vec<Reading> = (0..5000).map(|i| reading("TS", i * 37, i as f64)).collect();
        store.append(rs, auto()).await.unwrap();
        check_queries_ts(&store).await;
        store.refresh_rollups().await.unwrap();
        check_queries_ts(&store).await;
        let health = store.health().await;
        assert!(
            health
                .read
                .detail
                .unwrap_or_default()
                .contains("TimescaleDB")
        );
        store.close().await.unwrap();
        // `auto` picks TimescaleDB on a server that preloads it.
        let report = espwatch_store_postgres::migrate(&url, &PostgresOptions::default())
            .await
            .unwrap();
        assert_eq!(report.flavor, Flavor::Timescale);
    })
    .await;
}

/// Issue 23: a bulk load into TimescaleDB (`espwatch ingest --database-url`) does not refresh
/// the continuous aggregates when it closes (that took longer than the load): the loaded
/// minutes stay queued, queries and latest values are exact at once (queued minutes are read
/// from raw rows), and a server's refresher (here `refresh_rollups`) works the queue off
/// later, with the same answers. On plain PostgreSQL the close still brings the rollups up to
/// date (`ingest_into_postgres_stores_each_reading_once_and_leaves_rollups_current`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_bulk_load_leaves_rollups_queued_at_close_and_answers_exactly() {
    let opts = PostgresOptions {
        timescale: TimescaleMode::Require,
        ..fast()
    };
    on_fresh_timescale_database("espwatch_tsbulk", |url| async move {
        let bulk = PostgresStore::open(
            &url,
            PostgresOptions {
                bulk_load: true,
                ..opts.clone()
            },
        )
        .await
        .expect("open for a bulk load");
        assert_eq!(bulk.flavor(), Flavor::Timescale);
        for part in 0..4 {
            let rs: Vec<Reading> = (0..1500)
                .map(|i| {
                    let i = part * 1500 + i;
                    reading("TS", i * 37, i as f64)
                })
                .collect();
            bulk.append(rs, auto()).await.unwrap();
        }
        bulk.close().await.unwrap();

        let store = PostgresStore::open(&url, opts).await.unwrap();
        let queued = store.stats().await.unwrap().readings_in_log;
        assert!(queued > 0, "the loaded minutes are still queued at close");
        check_queries_ts(&store).await;
        let latest = store.latest().await.unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].point.0, ts(5999 * 37));
        assert_eq!(latest[0].point.1.get(Field::FrequencyHz), Some(5999.0));

        // A server's refresher works the queue off; the answers stay the same.
        while store.refresh_rollups().await.unwrap() > 0 {}
        assert_eq!(store.stats().await.unwrap().readings_in_log, 0);
        check_queries_ts(&store).await;
        assert_eq!(store.latest().await.unwrap()[0].point.0, ts(5999 * 37));
        store.close().await.unwrap();
    })
    .await;
}

/// Retention on TimescaleDB keeps the rollups of the days whose raw readings it deleted (the
/// archive holds those), as on plain PostgreSQL: the deletes and `drop_chunks` must not leave
/// invalidations behind, or the next refresh of the continuous aggregates (their policies
/// cover 3 / 14 / 90 days) recomputes those buckets from nothing and empties them. Also the
/// chunks are compressed first, as they are a week after ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_retention_keeps_rollups_of_deleted_days() {
    use espwatch_store::retention::{DAY_MICROS, Retention};
    let opts = PostgresOptions {
        timescale: TimescaleMode::Require,
        ..fast()
    };
    on_fresh_timescale_database("espwatch_tsret", |url| async move {
        let store = PostgresStore::open(&url, opts).await.unwrap();
        assert_eq!(store.flavor(), Flavor::Timescale);
        // Three days of one-minute readings; the first two expire.
        let rs: Vec<Reading> = (0..3 * 1440)
            .map(|i| reading("TS", i * 60, (i % 97) as f64))
            .collect();
        store.append(rs, auto()).await.unwrap();
        store.refresh_rollups().await.unwrap();
        let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let refresh_all = || async {
            for tier in ["1m", "1h", "1d"] {
                db.batch_execute(&format!(
                    "CALL refresh_continuous_aggregate('telemetry_{tier}', NULL, NULL)"
                ))
                .await
                .unwrap();
            }
        };
        refresh_all().await;
        // Chunk by chunk: the store's own compression policy may compress one meanwhile
        // (TimescaleDB then answers "already compressed" despite if_not_compressed).
        let chunks = db
            .query("SELECT c::text FROM show_chunks('telemetry') c", &[])
            .await
            .unwrap();
        for chunk in chunks {
            let chunk: String = chunk.get(0);
            if let Err(e) = db
                .batch_execute(&format!("SELECT compress_chunk('{chunk}', true)"))
                .await
            {
                let already = e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT);
                assert!(already, "compressing {chunk}: {e}");
            }
        }
        let queries: Vec<TelemetryQuery> = [(3600, Agg::Avg), (86_400, Agg::Max), (60, Agg::Last)]
            .into_iter()
            .map(|(step, agg)| TelemetryQuery {
                well_id: well("TS"),
                range: TimeRange {
                    from: ts(0),
                    to: ts(2 * 86_400),
                },
                fields: vec![Field::FrequencyHz],
                step_micros: Some(step * 1_000_000),
                agg,
                max_points: 10_000,
            })
            .collect();
        let all = store.read_range(&well("TS"), all_time()).await.unwrap();
        let mut before = Vec::new();
        for q in &queries {
            let series = store.query(q).await.unwrap();
            assert_same_series(&series, &evaluate(q, &all), "before retention");
            before.push(series);
        }
        assert_eq!(before[0].ts.len(), 48);

        let cutoff = Timestamp(T0 + 2 * DAY_MICROS);
        let days = store.raw_days_before(cutoff).await.unwrap();
        assert_eq!(days.len(), 2);
        for day in &days {
            let n = store
                .delete_raw(&day.well_id, day.range, 1440)
                .await
                .unwrap();
            assert_eq!(n, 1440);
        }
        assert_eq!(store.drop_emptied(cutoff).await.unwrap(), 2);
        let left = store.read_range(&well("TS"), all_time()).await.unwrap();
        assert_eq!(left.len(), 1440, "the third day's raw readings stay");
        // What the aggregates' refresh policies do next, over every bucket.
        refresh_all().await;
        for (q, was) in queries.iter().zip(&before) {
            let now = store.query(q).await.unwrap();
            assert_same_series(&now, was, "rollups after raw retention and refresh");
        }
        store.close().await.unwrap();
    })
    .await;
}

/// The 1m/1h/1d continuous aggregates have compression policies (segmented by well, beyond
/// their refresh windows), the policies compress old rollups when they run, and compressed
/// rollups answer every query as before and as the raw computation, late data included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_rollups_are_compressed_and_answer_the_same() {
    let opts = PostgresOptions {
        timescale: TimescaleMode::Require,
        ..fast()
    };
    on_fresh_timescale_database("espwatch_tsroll", |url| async move {
        let store = PostgresStore::open(&url, opts).await.unwrap();
        assert_eq!(store.flavor(), Flavor::Timescale);
        let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // The policies: one per rollup, compress_after beyond the refresh policy's start.
        let rows = db
            .query(
                "SELECT c.view_name::text, (j.config->>'compress_after')::interval::text,
                        (r.config->>'start_offset')::interval::text,
                        (j.config->>'compress_after')::interval > (r.config->>'start_offset')::interval
                 FROM timescaledb_information.continuous_aggregates c
                 JOIN timescaledb_information.jobs j ON j.proc_name = 'policy_compression'
                      AND j.hypertable_name = c.view_name
                 JOIN timescaledb_information.jobs r ON r.proc_name = 'policy_refresh_continuous_aggregate'
                      AND r.hypertable_name = c.view_name
                 ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        let got: Vec<(String, String, bool)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(3)))
            .collect();
        assert_eq!(
            got,
            [
                ("telemetry_1d".to_owned(), "180 days".to_owned(), true),
                ("telemetry_1h".to_owned(), "30 days".to_owned(), true),
                ("telemetry_1m".to_owned(), "7 days".to_owned(), true),
            ]
        );
        let segmentby = db
            .query(
                "SELECT DISTINCT attname::text FROM timescaledb_information.compression_settings s
                 JOIN timescaledb_information.continuous_aggregates c
                   ON s.hypertable_name = c.materialization_hypertable_name
                 WHERE s.segmentby_column_index IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        let segmentby: Vec<String> = segmentby.iter().map(|r| r.get(0)).collect();
        assert_eq!(segmentby, ["well_id"]);

        // Three days of irregular readings (T0 is long past: every policy applies).
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut batch = Vec::new();
        let mut t = 0i64;
        while t < 3 * 86_400 {
            let mut m = Measurements::empty();
            if !xorshift(&mut rng).is_multiple_of(4) {
                m.set(
                    Field::FrequencyHz,
                    Some((xorshift(&mut rng) % 6000) as f64 / 100.0),
                );
            }
            if !xorshift(&mut rng).is_multiple_of(3) {
                m.set(
                    Field::MotorCurrentA,
                    Some((xorshift(&mut rng) % 9000) as f64 / 100.0),
                );
            }
            m.set(
                Field::IntakePressurePsi,
                Some((xorshift(&mut rng) % 30000) as f64 / 10.0),
            );
            batch.push(Reading {
                well_id: well("ROLL"),
                ts: Timestamp(T0 + t * 1_000_000),
                values: m,
            });
            t += 7 + (xorshift(&mut rng) % 60) as i64;
        }
        for chunk in batch.chunks(5000) {
            store.append(chunk.to_vec(), auto()).await.unwrap();
        }
        store.refresh_rollups().await.unwrap();
        for tier in ["1m", "1h", "1d"] {
            db.batch_execute(&format!(
                "CALL refresh_continuous_aggregate('telemetry_{tier}', NULL, NULL)"
            ))
            .await
            .unwrap();
        }
        let queries = fixed_queries();
        let mut before = Vec::new();
        for q in &queries {
            before.push(store.query(q).await.unwrap());
        }
        check_queries(&store, &mut rng, "rollups uncompressed").await;

        // Run the rollups' own compression policies now.
        let jobs = db
            .query(
                "SELECT j.job_id FROM timescaledb_information.jobs j
                 JOIN timescaledb_information.continuous_aggregates c
                   ON j.hypertable_name = c.view_name
                 WHERE j.proc_name = 'policy_compression'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(jobs.len(), 3);
        for job in jobs {
            let id: i32 = job.get(0);
            db.batch_execute(&format!("CALL run_job({id})"))
                .await
                .unwrap();
        }
        let compressed = db
            .query(
                "SELECT c.view_name::text, bool_and(k.is_compressed), count(*)
                 FROM timescaledb_information.continuous_aggregates c
                 JOIN timescaledb_information.chunks k
                   ON k.hypertable_name = c.materialization_hypertable_name
                 GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(compressed.len(), 3, "every rollup has chunks");
        for r in &compressed {
            let (view, all, n): (String, bool, i64) = (r.get(0), r.get(1), r.get(2));
            assert!(all && n > 0, "{view}: every chunk compressed ({n} chunks)");
        }
        for (q, was) in queries.iter().zip(&before) {
            let now = store.query(q).await.unwrap();
            assert_eq!(&now, was, "compressed rollups answer identically");
        }
        check_queries(&store, &mut rng, "rollups compressed").await;

        // Late data into compressed days: queued, then refreshed into compressed rollups.
        let late: Vec<Reading> = (0..50)
            .map(|i| reading("ROLL", 5 + i * 3_001, 99.0 + i as f64))
            .collect();
        store.append(late, auto()).await.unwrap();
        check_queries(&store, &mut rng, "late data into compressed rollups, queued").await;
        store.refresh_rollups().await.unwrap();
        for tier in ["1m", "1h", "1d"] {
            db.batch_execute(&format!(
                "CALL refresh_continuous_aggregate('telemetry_{tier}', NULL, NULL)"
            ))
            .await
            .unwrap();
        }
        check_queries(&store, &mut rng, "late data into compressed rollups, refreshed").await;
        store.close().await.unwrap();
    })
    .await;
}

/// Whole-span queries of every tier and aggregate over the well `ROLL`.
fn fixed_queries() -> Vec<TelemetryQuery> {
    let mut out = Vec::new();
    for step in [60, 3600, 86_400] {
        for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Last] {
            out.push(TelemetryQuery {
                well_id: well("ROLL"),
                range: all_time(),
                fields: vec![
                    Field::FrequencyHz,
                    Field::MotorCurrentA,
                    Field::IntakePressurePsi,
                ],
                step_micros: Some(step * 1_000_000),
                agg,
                max_points: 10_000,
            });
        }
    }
    out
}

/// The state right after installing the TimescaleDB package: available, not preloaded. A
/// `CREATE EXTENSION` probe there is answered FATAL and closes the connection; `auto` must fall
/// back to plain PostgreSQL (saying how to enable TimescaleDB) and `require` must fail with
/// the same explanation, on a connection that keeps working either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_installed_but_not_preloaded_falls_back_or_explains() {
    let Some(_h) = PgHarness::new().await else {
        return;
    };
    let admin = admin().await;
    let available = admin
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await
        .unwrap()
        .is_some();
    let preload: String = admin
        .query_one("SHOW shared_preload_libraries", &[])
        .await
        .unwrap()
        .get(0);
    if !available || preload.contains("timescaledb") {
        let msg = format!(
            "the server at {} is not in the installed-but-not-preloaded state \
             (available: {available}, shared_preload_libraries = {preload:?}); \
             run ../shared/scripts/timescaledb-up",
            espwatch_store_postgres::redact_url(&admin_url())
        );
        if espwatch_store_postgres::testing::services_required() {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
        return;
    }
    let mut names = Vec::new();
    for mode in ["auto", "require"] {
        let name = format!("{}_np_{mode}", _h.db.name);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        names.push(name);
    }
    let url = |i: usize| espwatch_store_postgres::testing::url_for(&admin_url(), &names[i]);
    let auto_report = espwatch_store_postgres::migrate(&url(0), &PostgresOptions::default()).await;
    let auto_open = PostgresStore::open(&url(0), fast()).await;
    let required = PostgresStore::open(
        &url(1),
        PostgresOptions {
            timescale: TimescaleMode::Require,
            ..fast()
        },
    )
    .await;
    let auto_closed = match &auto_open {
        Ok(store) => store.close().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    for name in &names {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    let report = auto_report.expect("auto falls back instead of failing");
    assert_eq!(report.flavor, Flavor::Partitioned);
    assert!(report.timescale_fallback, "{report:?}");
    let note = report.timescale_note.unwrap_or_default();
    assert!(
        note.contains("shared_preload_libraries") && note.contains("restart"),
        "{note}"
    );
    auto_closed.expect("a store opens (and closes) on the fallback database");
    match required {
        Err(StoreError::Unavailable(why)) => {
            assert!(why.contains("TimescaleDB required"), "{why}");
            assert!(why.contains("shared_preload_libraries"), "{why}");
            assert!(!why.contains("connection closed"), "{why}");
        }
        Err(e) => panic!("require: unexpected error {e}"),
        Ok(_) => panic!("require must fail where TimescaleDB is not preloaded"),
    }
}

async fn check_queries_ts(store: &PostgresStore) {
    let all = store.read_range(&well("TS"), all_time()).await.unwrap();
    for step in [60, 3600, 86_400] {
        let query = TelemetryQuery {
            well_id: well("TS"),
            range: all_time(),
            fields: vec![Field::FrequencyHz],
            step_micros: Some(step * 1_000_000),
            agg: Agg::Last,
            max_points: 2000,
        };
        assert_same_series(
            &store.query(&query).await.unwrap(),
            &evaluate(&query, &all),
            "tsdb",
        );
    }
    // Fleet totals from the continuous aggregate: the raw points' count, sum, min and max.
    for range in [
        all_time(),
        TimeRange {
            from: ts(100),
            to: ts(4_000 * 37),
        },
    ] {
        let points = store.read_range(&well("TS"), range).await.unwrap();
        let fields = vec![Field::FrequencyHz, Field::MotorCurrentA];
        let got = store
            .fleet_totals(&espwatch_store::FleetTotalsQuery {
                wells: Vec::new(),
                range,
                fields: fields.clone(),
            })
            .await
            .unwrap();
        let want = espwatch_store::WellTotals::of_points(well("TS"), &points, &fields);
        assert_eq!(got.len(), 1, "tsdb totals");
        assert_eq!(
            (got[0].readings, got[0].channels[0].n),
            (want.readings, want.channels[0].n)
        );
        let (g, w) = (&got[0].channels[0], &want.channels[0]);
        assert_eq!((g.min, g.max), (w.min, w.max), "tsdb totals");
        assert!(
            (g.sum - w.sum).abs() <= 1e-9 * w.sum.abs().max(1.0),
            "{} vs {}",
            g.sum,
            w.sum
        );
        assert_eq!(got[0].channels[1].n, want.channels[1].n, "tsdb totals");
    }
}
