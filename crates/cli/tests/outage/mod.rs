//! Issue 17: a PostgreSQL outage under load. The tests make their own throwaway cluster with
//! `initdb`/`pg_ctl` (never the machine's own on 5432), stop it mid-load and start it again,
//! against the real `espwatch serve` binary.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of the test's own, in a temporary directory, on a free port.
pub struct ScratchCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// Run the server binaries as `postgres` (initdb refuses root).
    as_postgres: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl ScratchCluster {
    /// `None` (with the reason printed) when PostgreSQL 15's binaries are missing, unless
    /// ESPWATCH_REQUIRE_SERVICES=1.
    pub fn create() -> Option<ScratchCluster> {
        let required = std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        if !Path::new(PG_BIN).join("initdb").exists() {
            assert!(!required, "PostgreSQL 15 binaries missing under {PG_BIN}");
            println!("skipped: PostgreSQL 15 binaries missing under {PG_BIN}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            chown_postgres(dir.path());
        }
        let cluster = ScratchCluster {
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = cluster.data_dir();
        let data = data.to_str().expect("utf-8");
        cluster.run(
            "initdb",
            &[
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.start();
        Some(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("pgdata")
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = Path::new(PG_BIN).join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn start(&self) {
        let data = self.data_dir();
        let data = data.to_str().expect("utf-8");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} -c max_connections=60",
            self.port
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data,
                "-o",
                &options,
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the cluster the hard way (`immediate`: connections cut, as when a database host dies).
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let program = Path::new(PG_BIN).join("pg_ctl");
        let args = [
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "stop",
        ];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown postgres {}", path.display());
}

/// The real binary serving on the scratch cluster, with an admin key made by the CLI.
fn start_server(cluster: &ScratchCluster, data_dir: &Path, envs: &[(&str, &str)]) -> ChildServer {
    let url = cluster.url();
    let dir = data_dir.to_str().expect("utf-8");
    let mut envs = envs.to_vec();
    envs.push(("ESPWATCH_DATABASE_URL", &url));
    let mut server = ChildServer::start_with_env(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir],
        &envs,
    );
    server.api_key = Some(cli_api_key(&["--database-url", &url], "admin"));
    server
}

type Acked = Arc<Mutex<Vec<(String, String)>>>;

/// Load: `clients` tasks post batches of 20 readings until `stop`; every 200 is recorded, and
/// readings answered as spooled are counted. Returns the task handles.
fn load(
    runtime: &tokio::runtime::Runtime,
    server: &ChildServer,
    prefix: &str,
    acked: &Acked,
    spooled: &Arc<AtomicUsize>,
    refused: &Arc<Mutex<Vec<(u16, String)>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|client| {
            let http = server.client();
            let url = server.url("/api/v1/telemetry");
            let (acked, spooled, refused, stop) = (
                acked.clone(),
                spooled.clone(),
                refused.clone(),
                stop.clone(),
            );
            let well = format!("{prefix}-{client}");
            runtime.spawn(async move {
                let mut batch = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    let readings: Vec<Value> = (0..20)
                        .map(|i| reading(&well, &ts(batch * 20 + i), 40.0 + i as f64))
                        .collect();
                    let response = match http.post(&url).json(&readings).send().await {
                        Ok(r) => r,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if status == 200 {
                        let mut a = acked.lock().expect("lock");
                        for r in &readings {
                            a.push((well.clone(), r["ts"].as_str().unwrap_or_default().into()));
                        }
                        spooled.fetch_add(
                            body["spooled"].as_u64().unwrap_or(0) as usize,
                            Ordering::SeqCst,
                        );
                        batch += 1;
                    } else {
                        let kind = body["error"]["type"].as_str().unwrap_or("").to_owned();
                        refused.lock().expect("lock").push((status, kind));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect()
}

async fn ready(server: &ChildServer) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(server.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until `/health/ready` shows an empty spool again; returns the last body.
async fn wait_drained(server: &ChildServer, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = ready(server).await;
        let spool = &body["checks"]["spool"];
        if status == 200 && spool["readings"] == 0 && spool["spooling"] == false {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "the spool did not drain within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_all_stored(acked: &[(String, String)], stored: &HashMap<String, BTreeSet<String>>) {
    let missing: Vec<_> = acked
        .iter()
        .filter(|(well, t)| !stored.get(well).is_some_and(|s| s.contains(t)))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged readings, some lost, e.g. {missing:?}",
        acked.len()
    );
}

/// PostgreSQL stopped mid-load: telemetry keeps being acknowledged (after `fsync` into the
/// spool), `/health/ready` stays 200 `degraded` and reports the spool, and the spool drains
/// into the database once it is back, losing nothing acknowledged. Then a second outage with a
/// small spool: beyond it 503 `spool_full`; `kill -9` while spooled, database back, restart:
/// the spool is replayed at start and nothing acknowledged is lost.
#[test]
fn database_outage_spools_telemetry_and_drains_it_when_the_database_returns() {
    init();
    let Some(cluster) = ScratchCluster::create() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let data = tempfile::tempdir().expect("temp dir");
    // Credentials re-checked every 200 ms: during the outage they come from the verified cache.
    let server = start_server(&cluster, data.path(), &[("ESPWATCH_AUTH_CACHE_MS", "200")]);

    // --- Outage 1, server running throughout.
    let acked: Acked = Arc::default();
    let spooled = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&runtime, &server, "OUT", &acked, &spooled, &refused, &stop);
    let wait_acked = |n: usize| {
        let started = Instant::now();
        while acked.lock().expect("lock").len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "only {} acknowledged; refusals: {:?}",
                acked.lock().expect("lock").len(),
                refused
                    .lock()
                    .expect("lock")
                    .iter()
                    .take(5)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_acked(2_000);
    let before_outage = acked.lock().expect("lock").len();
    cluster.stop();
    // Acknowledged while the database is down: into the spool.
    let started = Instant::now();
    while spooled.load(Ordering::SeqCst) < 2_000 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "telemetry not taken during the outage: {} spooled; refusals: {:?}",
            spooled.load(Ordering::SeqCst),
            refused
                .lock()
                .expect("lock")
                .iter()
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_acked(before_outage + 2_000);
    std::thread::sleep(Duration::from_millis(500));
    let n = acked.lock().expect("lock").len();
    wait_acked(n + 200);
    let (status, body) = runtime.block_on(ready(&server));
    assert_eq!(status, 200, "degraded but in rotation: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let spool = &body["checks"]["spool"];
    assert_eq!(spool["spooling"], true, "{body}");
    assert!(spool["readings"].as_u64().unwrap_or(0) > 0, "{body}");
    assert!(spool["bytes"].as_u64().unwrap_or(0) > 0, "{body}");
    assert!(
        spool["oldest_age_secs"].as_f64().unwrap_or(0.0) > 0.0,
        "{body}"
    );
    assert_eq!(body["checks"]["store"]["status"], "unhealthy", "{body}");
    assert!(
        body["checks"]["identity_store"]["auth_outage_grants_total"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the gateway's key was let in from the verified cache: {body}"
    );

    // The database returns under load: the spool drains, new telemetry goes straight in.
    cluster.start();
    let body = runtime.block_on(wait_drained(&server, Duration::from_secs(120)));
    assert!(
        body["checks"]["spool"]["drained_total"]
            .as_u64()
            .unwrap_or(0)
            >= 2_000,
        "{body}"
    );
    let spooled_after_drain = spooled.load(Ordering::SeqCst);
    let n = acked.lock().expect("lock").len();
    wait_acked(n + 1_000);
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let after = spooled.load(Ordering::SeqCst) - spooled_after_drain;
    assert!(
        after < 100,
        "after draining, telemetry goes to the database again ({after} spooled)"
    );
    let wells: Vec<String> = (0..4).map(|c| format!("OUT-{c}")).collect();
    let acked_1 = acked.lock().expect("lock").clone();
    let stored_1 = runtime.block_on(stored_timestamps(&server, &wells));
    assert_all_stored(&acked_1, &stored_1);
    drop(server);

    // --- Outage 2 with a small spool: full → 503; kill -9 while spooled; replay at start.
    let small = [("ESPWATCH_SPOOL_MAX_BYTES", "200000")];
    let mut server = start_server(&cluster, data.path(), &small);
    let acked: Acked = Arc::default();
    let spooled = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&runtime, &server, "KILL", &acked, &spooled, &refused, &stop);
    let started = Instant::now();
    while acked.lock().expect("lock").len() < 1_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.stop();
    let started = Instant::now();
    while !refused
        .lock()
        .expect("lock")
        .iter()
        .any(|(s, kind)| *s == 503 && kind == "spool_full")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the spool never filled: {} spooled; refusals {:?}",
            spooled.load(Ordering::SeqCst),
            refused
                .lock()
                .expect("lock")
                .iter()
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(spooled.load(Ordering::SeqCst) > 0);
    let (status, body) = runtime.block_on(ready(&server));
    assert_eq!(status, 503, "a full spool takes nothing: not ready: {body}");
    assert_eq!(body["checks"]["spool"]["status"], "full", "{body}");
    server.kill_9();
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let acked_2 = acked.lock().expect("lock").clone();
    cluster.start();
    let server = start_server(&cluster, data.path(), &small);
    runtime.block_on(wait_drained(&server, Duration::from_secs(120)));
    let wells: Vec<String> = (0..4).map(|c| format!("KILL-{c}")).collect();
    let stored_2 = runtime.block_on(stored_timestamps(&server, &wells));
    assert_all_stored(&acked_2, &stored_2);
    // And the first run's data is all still there.
    let wells: Vec<String> = (0..4).map(|c| format!("OUT-{c}")).collect();
    let stored_1 = runtime.block_on(stored_timestamps(&server, &wells));
    assert_all_stored(&acked_1, &stored_1);
    println!(
        "outage test: run 1 {} acknowledged, run 2 {} acknowledged ({} spooled) before kill -9",
        acked_1.len(),
        acked_2.len(),
        spooled.load(Ordering::SeqCst)
    );
}

/// The server's log lines at `level` (JSON log) whose text contains `needle`.
fn log_lines(server: &ChildServer, level: &str, needle: &str) -> Vec<String> {
    server
        .stderr
        .lock()
        .expect("lock")
        .iter()
        .filter(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| v["level"] == level)
                && line.contains(needle)
        })
        .cloned()
        .collect()
}

/// Audit records are not lost to an outage, and the outage does not flood the log: with the
/// database stopped, the audit writes fail and the records are held (`checks.audit.held`), the
/// failure is logged once at ERROR (not once per 50 ms batch), the telemetry refused once the
/// small spool is full is logged at ERROR once (the other refusals counted); when the database
/// is back every request answered during the outage has its audit record, and the chain
/// verifies.
#[test]
fn audit_records_of_an_outage_are_kept_and_repeated_errors_are_logged_once() {
    init();
    let Some(cluster) = ScratchCluster::create() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let data = tempfile::tempdir().expect("temp dir");
    let url = cluster.url();
    let dir = data.path().to_str().expect("utf-8");
    let mut server = ChildServer::start_logged(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir],
        &[
            ("ESPWATCH_DATABASE_URL", url.as_str()),
            ("ESPWATCH_AUTH_CACHE_MS", "200"),
            ("ESPWATCH_SPOOL_MAX_BYTES", "20000"),
            ("ESPWATCH_LOG_FORMAT", "json"),
            ("RUST_LOG", "warn"),
        ],
    );
    server.api_key = Some(cli_api_key(&["--database-url", &url], "admin"));

    // Two clients, each request with its own id; the ids answered while the database is down
    // (200 spooled, or 503 spool_full) are kept.
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let tasks: Vec<_> = (0..2)
        .map(|client| {
            let http = server.client();
            let ingest = server.url("/api/v1/telemetry");
            let (outage, stop, during) = (outage.clone(), stop.clone(), during.clone());
            runtime.spawn(async move {
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("aud-{client}-{n}");
                    let readings: Vec<Value> = (0..5)
                        .map(|i| reading(&format!("AUD-{client}"), &ts(n * 5 + i), 40.0))
                        .collect();
                    let in_outage = outage.load(Ordering::SeqCst);
                    let answer = http
                        .post(&ingest)
                        .header("x-request-id", &id)
                        .json(&readings)
                        .send()
                        .await;
                    if let Ok(response) = answer {
                        let status = response.status().as_u16();
                        if in_outage && outage.load(Ordering::SeqCst) {
                            during.lock().expect("lock").push((id, status));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    cluster.stop();
    outage.store(true, Ordering::SeqCst);
    // Until the spool is full and a few seconds of refusals and failing audit writes pass.
    let started = Instant::now();
    loop {
        let full = during
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, s)| *s == 503)
            .count();
        if full >= 50 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the spool never filled: {:?}",
            during
                .lock()
                .expect("lock")
                .iter()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (_, body) = runtime.block_on(ready(&server));
    assert!(
        body["checks"]["audit"]["held"].as_u64().unwrap_or(0) > 0,
        "audit records are held during the outage: {body}"
    );
    assert_eq!(body["checks"]["audit"]["status"], "degraded", "{body}");
    outage.store(false, Ordering::SeqCst);
    let answered = during.lock().expect("lock").clone();
    let refused = answered.iter().filter(|(_, s)| *s == 503).count();

    // The log: the audit outage once, the full spool's refusals once (the rest counted).
    let failing = log_lines(&server, "ERROR", "AUDIT WRITES FAILING");
    let per_batch = log_lines(&server, "ERROR", "AUDIT WRITE FAILED");
    let spool_full = log_lines(&server, "ERROR", "spool_full");
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(per_batch.is_empty(), "{per_batch:?}");
    assert_eq!(
        spool_full.len(),
        1,
        "{refused} refusals, logged at ERROR: {spool_full:?}"
    );

    // Back: the held records are written; every request answered during the outage is there.
    cluster.start();
    let started = Instant::now();
    loop {
        let (status, body) = runtime.block_on(ready(&server));
        if status == 200
            && body["checks"]["audit"]["held"] == 0
            && body["checks"]["spool"]["readings"] == 0
        {
            assert_eq!(body["checks"]["audit"]["write_failures"], 0, "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the held audit records were not written: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let recorded: BTreeSet<String> = runtime.block_on(async {
        let http = server.client();
        let mut ids = BTreeSet::new();
        let mut before: Option<i64> = None;
        loop {
            let mut url = server.url("/api/v1/audit?kind=request&limit=10000");
            if let Some(b) = before {
                url.push_str(&format!("&before_id={b}"));
            }
            let page: Value = http
                .get(&url)
                .send()
                .await
                .expect("audit")
                .json()
                .await
                .expect("json");
            let records = page["records"]
                .as_array()
                .or_else(|| page.as_array())
                .cloned()
                .unwrap_or_default();
            if records.is_empty() {
                break;
            }
            for r in &records {
                if let Some(id) = r["request_id"].as_str() {
                    ids.insert(id.to_owned());
                }
            }
            before = records.last().and_then(|r| r["id"].as_i64());
        }
        ids
    });
    let missing: Vec<_> = answered
        .iter()
        .filter(|(id, _)| !recorded.contains(id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} requests answered during the outage, audit records missing for e.g. {missing:?}",
        answered.len()
    );
    let (ok, stdout, stderr) = run_cli(
        &["audit", "verify", "--database-url", &url],
        &[],
        Path::new("."),
    );
    assert!(ok, "audit verify: {stdout} {stderr}");
    // What the outage put in the log, by level and message (for the README's figures).
    let mut seen: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for line in server.stderr.lock().expect("lock").iter() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            let level = v["level"].as_str().unwrap_or("?").to_owned();
            let message: String = v["message"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(60)
                .collect();
            *seen.entry((level, message)).or_default() += 1;
        }
    }
    // The other background tasks do not repeat themselves either: the outbox poller (every
    // second) once, the PostgreSQL writers once per failed round, not once per attempt.
    let outbox = log_lines(&server, "WARN", "notification outbox");
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let retries = log_lines(&server, "WARN", "PostgreSQL write failed; retrying");
    assert!(retries.len() <= 8, "{} lines: {retries:?}", retries.len());
    println!(
        "audit outage test: {} requests answered during the outage ({refused} refused spool_full), all audited after it; log lines: {seen:?}",
        answered.len()
    );
}
