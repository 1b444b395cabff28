//! Issue 20: continuous archiving of the embedded store's durable log (`backup_ship_to`)
//! through the binary. The restore drill: ingest under load, back up (a chain), keep
//! ingesting, `kill -9` the server, restore into a new directory, and find every reading
//! acknowledged up to the recovery point there. And `store restore --until` to a second:
//! exactly the readings acknowledged up to it. The same drill with S3 (a real `moto_server`);
//! the bucket going down under load and coming back; a torn shipped object refused by name.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::*;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Where a test server ships its log and keeps its backup chain: a directory, or
/// `s3://bucket/prefix` on a real `moto_server`. The configuration file (shipping every
/// 100 ms, a checkpoint every second, so sealed batches wait in `ship_log` for the shipper
/// too; the bucket's endpoint) serves the server and the `store` commands alike.
struct Dest {
    url: String,
    config: std::path::PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl Dest {
    fn write(
        work: &Path,
        url: String,
        extra: &str,
        env: Vec<(&'static str, &'static str)>,
    ) -> Dest {
        let config = work.join("espwatch.toml");
        std::fs::write(
            &config,
            format!(
                "backup_ship_to = {url:?}\nbackup_ship_interval_ms = 100\ncheckpoint_interval_secs = 1\n{extra}"
            ),
        )
        .unwrap();
        Dest { url, config, env }
    }

    fn dir(work: &Path) -> Dest {
        let dir = work.join("backups");
        Dest::write(work, dir.to_str().unwrap().to_owned(), "", Vec::new())
    }

    /// `s3://<bucket>/<prefix>` on `moto`; credentials from the environment, as documented.
    fn s3(work: &Path, moto: &Moto, bucket: &str, prefix: &str) -> Dest {
        Dest::write(
            work,
            format!("s3://{bucket}/{prefix}"),
            &format!(
                "[backup_options]\n\
                 aws_endpoint = \"http://127.0.0.1:{}\"\n\
                 aws_allow_http = \"true\"\n\
                 aws_region = \"us-east-1\"\n",
                moto.port
            ),
            vec![
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ],
        )
    }

    /// `espwatch ARGS --config <this> ...` with the destination's environment.
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        run_cli(&all, &self.env, Path::new("."))
    }

    /// A server on `data` shipping here.
    fn serve(&self, data: &Path) -> ChildServer {
        serve_with_admin_key(data, &self.config, &self.env)
    }

    /// `store backup --incremental` of `data` (a chain here: full the first time).
    async fn backup_chain(&self, data: &Path) {
        let args: Vec<String> = [
            "store",
            "backup",
            "--incremental",
            "--data-dir",
            data.to_str().unwrap(),
            "--to",
            &self.url,
        ]
        .map(String::from)
        .to_vec();
        let (config, env) = (self.config.clone(), self.env.clone());
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.extend(["--config", config.to_str().unwrap()]);
            run_cli(&args, &env, Path::new("."))
        })
        .await
        .unwrap();
        assert!(ok, "backup failed: {out}\n{err}");
    }

    /// `store restore` from here into `into`; returns its stdout (asserting success).
    fn restore(&self, into: &Path, until: Option<&str>) -> String {
        let (ok, stdout, stderr) = self.try_restore(into, until);
        assert!(ok, "restore failed: {stdout}\n{stderr}");
        stdout
    }

    fn try_restore(&self, into: &Path, until: Option<&str>) -> (bool, String, String) {
        let mut args = vec![
            "store",
            "restore",
            "--from",
            &self.url,
            "--data-dir",
            into.to_str().unwrap(),
        ];
        if let Some(t) = until {
            args.extend(["--until", t]);
        }
        self.cli(&args)
    }
}

/// The recovery point the restore printed, UTC micros.
fn recovery_point(stdout: &str) -> i64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recovery point: "))
        .unwrap_or_else(|| panic!("no recovery point in: {stdout}"));
    let ts = line.split_whitespace().next().unwrap();
    espwatch_core::Timestamp::parse_rfc3339(ts)
        .unwrap_or_else(|e| panic!("{ts:?}: {e:?}"))
        .0
}

/// Posts `readings` of `well` (one batch), `true` when acknowledged.
async fn post(server: &ChildServer, readings: &[Value]) -> bool {
    matches!(
        server
            .client()
            .post(server.url("/api/v1/telemetry"))
            .json(&readings)
            .send()
            .await,
        Ok(r) if r.status() == 200
    )
}

async fn wait_shipped(server: &ChildServer) -> Value {
    let started = Instant::now();
    loop {
        let body: Value = reqwest::Client::new()
            .get(server.url("/health/ready"))
            .send()
            .await
            .expect("ready")
            .json()
            .await
            .expect("json");
        let ship = &body["checks"]["log_shipping"];
        if ship["pending_batches"] == 0 && ship["shipped_log_id"].as_i64().unwrap_or(0) > 0 {
            return ship.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the log was not shipped: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (well, ts, acknowledged at UTC micros) of every acknowledged reading.
type Acked = Arc<Mutex<Vec<(String, String, i64)>>>;

/// Clients posting batches of 20 readings for each of `wells` as fast as the server answers,
/// noting every acknowledged reading and when it was acknowledged.
struct Load {
    acked: Acked,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(server: &ChildServer, wells: &[String]) -> Load {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = wells
            .iter()
            .map(|well| {
                let (http, url) = (server.client(), server.url("/api/v1/telemetry"));
                let (acked, stop, well) = (acked.clone(), stop.clone(), well.clone());
                tokio::spawn(async move {
                    let mut batch = 0i64;
                    while !stop.load(Ordering::SeqCst) {
                        let readings: Vec<Value> = (0..20)
                            .map(|i| reading(&well, &ts(batch * 20 + i), 40.0 + i as f64))
                            .collect();
                        match http.post(&url).json(&readings).send().await {
                            Ok(r) if r.status() == 200 => {
                                let at = now_micros();
                                let mut a = acked.lock().unwrap();
                                for r in &readings {
                                    a.push((well.clone(), r["ts"].as_str().unwrap().into(), at));
                                }
                                batch += 1;
                            }
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Load { acked, stop, tasks }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the clients; every reading acknowledged.
    async fn stop(self) -> Vec<(String, String, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// The acknowledged readings `server` does not hold.
async fn missing<'a>(
    server: &ChildServer,
    wells: &[String],
    acked: &[&'a (String, String, i64)],
) -> Vec<&'a (String, String, i64)> {
    let stored = stored_timestamps(server, wells).await;
    acked
        .iter()
        .filter(|(w, t, _)| !stored.get(w).is_some_and(|s| s.contains(t)))
        .copied()
        .collect()
}

/// The drill on `dest`: ingest under load, a base backup, more load, `kill -9`, restore
/// into a new directory: every reading acknowledged up to the recovery point is there.
async fn restore_drill(dest: &Dest, work: &Path) {
    let data = work.join("data");
    let mut server = dest.serve(&data);
    let wells: Vec<String> = (0..4).map(|c| format!("DRILL-{c}")).collect();
    let load = Load::start(&server, &wells);

    // Under load: a base backup (the chain's first), then more load after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    dest.backup_chain(&data).await;
    let backed_up = now_micros();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.kill_9();
    let acked = load.stop().await;

    let restored = work.join("restored");
    let stdout = dest.restore(&restored, None);
    let point = recovery_point(&stdout);
    let last_ack = acked.iter().map(|a| a.2).max().unwrap();
    let after_backup = acked.iter().filter(|a| a.2 > backed_up).count();
    assert!(after_backup > 0, "no reading acknowledged after the backup");
    let due: Vec<&(String, String, i64)> = acked.iter().filter(|a| a.2 <= point).collect();
    assert!(
        due.iter().any(|a| a.2 > backed_up),
        "the recovery point {point} is not after the backup ({backed_up}): {stdout}"
    );

    let check = ChildServer::start(&restored);
    let missing = missing(&check, &wells, &due).await;
    assert!(
        missing.is_empty(),
        "{} of {} readings acknowledged before the recovery point are missing, e.g. {:?}",
        missing.len(),
        due.len(),
        &missing[..missing.len().min(5)]
    );
    // The figure for the notes: how far the recovery point trails the last acknowledgement.
    println!(
        "restore drill ({}): {} readings acknowledged, {} up to the recovery point, {} after the backup; recovery point {} ms before the last acknowledgement",
        dest.url,
        acked.len(),
        due.len(),
        after_backup,
        (last_ack - point).max(0) / 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_kill_9_loses_nothing_acknowledged_before_the_recovery_point() {
    init();
    let work = tempfile::tempdir().unwrap();
    restore_drill(&Dest::dir(work.path()), work.path()).await;
}

/// The drill with the backup chain and the shipped log in S3 (a real `moto_server`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_through_s3_loses_nothing_acknowledged_before_the_recovery_point() {
    init();
    let Some(moto) = start_moto("espwatch-ship") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dest = Dest::s3(work.path(), &moto, "espwatch-ship", "drill");
    restore_drill(&dest, work.path()).await;
}

/// `/health/ready`'s `checks.log_shipping`.
async fn shipping_status(server: &ChildServer) -> Value {
    let response = reqwest::Client::new()
        .get(server.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(
        response.status(),
        200,
        "shipping never takes the server out of rotation"
    );
    let body: Value = response.json().await.expect("json");
    body["checks"]["log_shipping"].clone()
}

/// Polls `checks.log_shipping` until `done` says so (at most a minute).
async fn wait_status(server: &ChildServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let ship = shipping_status(server).await;
        if done(&ship) {
            return ship;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waiting for {what}: {ship}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name` (with its labels, as exported) in `GET /metrics`.
async fn metric(server: &ChildServer, name: &str) -> Option<f64> {
    let text = server
        .client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Checkpoints the server finished so far.
async fn checkpoints(server: &ChildServer) -> f64 {
    metric(
        server,
        "espwatch_store_checkpoint_duration_seconds_count{backend=\"embedded\"}",
    )
    .await
    .unwrap_or(0.0)
}

/// Issue 20, the destination's failure: the bucket's server dies (`kill -9` of moto) while
/// readings come in. Ingestion goes on being acknowledged; checkpoints go on without dropping
/// what was not shipped; `/health/ready` (still 200) and the metrics say shipping is behind
/// and by how much. moto comes back (same port, same objects): shipping catches up, and a
/// restore from the bucket after a `kill -9` of the server holds every acknowledged reading,
/// those of the outage included: no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_to_s3_outlives_the_bucket_going_down_and_catches_up_without_a_gap() {
    init();
    let Some(mut moto) = start_moto("espwatch-ship") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dest = Dest::s3(work.path(), &moto, "espwatch-ship", "outage");
    let data = work.path().join("data");
    let mut server = dest.serve(&data);
    let wells: Vec<String> = (0..2).map(|c| format!("OUTAGE-{c}")).collect();
    assert!(post(&server, &[reading("BASE", &ts(0), 1.0)]).await);
    dest.backup_chain(&data).await;
    let load = Load::start(&server, &wells);
    let before = wait_status(&server, "a first object shipped", |s| {
        s["objects_shipped"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(before["behind"], false, "{before}");

    moto.stop();
    let down = Instant::now();
    let (acked_at_outage, checkpoints_at_outage) = (load.count(), checkpoints(&server).await);
    let behind = wait_status(&server, "shipping reported behind", |s| {
        s["behind"] == true && s["consecutive_failures"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(behind["status"], "degraded", "{behind}");
    assert!(
        behind["lag_ms"].as_u64() >= behind["behind_after_ms"].as_u64()
            && behind["pending_batches"].as_i64() > Some(0)
            && behind["oldest_unshipped_at"].is_string(),
        "{behind}"
    );
    let error = behind["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("s3://espwatch-ship/outage"), "{behind}");
    assert_eq!(
        metric(&server, "espwatch_log_shipping_behind").await,
        Some(1.0)
    );
    let lag = metric(&server, "espwatch_log_shipping_lag_seconds").await;
    assert!(lag.is_some_and(|l| l >= 1.0), "{lag:?}");
    assert!(
        metric(&server, "espwatch_log_shipping_pending_batches")
            .await
            .is_some_and(|n| n > 0.0)
    );
    // The outage lasts a few checkpoints; ingestion is acknowledged throughout.
    while down.elapsed() < Duration::from_secs(4)
        || checkpoints(&server).await < checkpoints_at_outage + 2.0
    {
        assert!(
            down.elapsed() < Duration::from_secs(60),
            "no checkpoints during the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked_in_outage = load.count() - acked_at_outage;
    assert!(
        acked_in_outage > 0,
        "nothing acknowledged while the bucket was down"
    );
    let still = shipping_status(&server).await;
    assert!(
        still["behind"] == true && still["lag_ms"].as_u64() > behind["lag_ms"].as_u64(),
        "the lag grows while the bucket is down: {still}"
    );

    moto.restart();
    let caught_up = wait_status(&server, "shipping to catch up", |s| {
        s["status"] == "healthy" && s["behind"] == false
    })
    .await;
    assert!(caught_up["failures"].as_u64() > Some(0), "{caught_up}");
    let acked = load.stop().await;
    wait_shipped(&server).await;
    assert_eq!(
        metric(&server, "espwatch_log_shipping_behind").await,
        Some(0.0)
    );
    server.kill_9();

    let restored = work.path().join("restored");
    let stdout = dest.restore(&restored, None);
    let check = ChildServer::start(&restored);
    let all: Vec<&(String, String, i64)> = acked.iter().collect();
    let missing = missing(&check, &wells, &all).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged readings are missing after the outage, e.g. {:?}\n{stdout}",
        missing.len(),
        all.len(),
        &missing[..missing.len().min(5)]
    );
    println!(
        "shipping outage: {} readings acknowledged, {acked_in_outage} while the bucket was down; peak lag reported {} ms; all restored",
        all.len(),
        still["lag_ms"]
    );
}

/// A shipped object torn after the fact (cut short in the destination): the restore refuses
/// it with its name and what to do, instead of restoring short without a word; `--until`
/// before it restores what precedes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_shipped_object_fails_the_restore_by_name() {
    init();
    let work = tempfile::tempdir().unwrap();
    let dest = Dest::dir(work.path());
    let data = work.path().join("data");
    let server = dest.serve(&data);
    let well = "TORN-1".to_owned();
    assert!(post(&server, &[reading("BASE", &ts(0), 1.0)]).await);
    dest.backup_chain(&data).await;
    let batch = |from: i64| -> Vec<Value> {
        (0..10)
            .map(|i| reading(&well, &ts(from + i), 41.0))
            .collect()
    };
    assert!(post(&server, &batch(0)).await);
    let first = wait_shipped(&server).await;
    assert!(post(&server, &batch(100)).await);
    let second = wait_shipped(&server).await;
    assert!(second["shipped_log_id"].as_i64() > first["shipped_log_id"].as_i64());
    drop(server);

    // The newest object, cut in half.
    let wal = Path::new(&dest.url).join("wal");
    let mut objects: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    objects.sort();
    let torn = objects.last().unwrap().clone();
    let bytes = std::fs::read(&torn).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();

    let (ok, stdout, stderr) = dest.try_restore(&work.path().join("short"), None);
    assert!(!ok, "a torn object was restored: {stdout}");
    let name = torn.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr.contains(name) && stderr.contains("damaged") && stderr.contains("checksum"),
        "{stderr}"
    );
    let until = stderr
        .split("--until ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no --until advice: {stderr}"));
    let before = work.path().join("before");
    dest.restore(&before, Some(until));
    let check = ChildServer::start(&before);
    let got = stored_timestamps(&check, std::slice::from_ref(&well)).await;
    let expect: BTreeSet<String> = (0..10).map(ts).collect();
    assert_eq!(got.get(&well), Some(&expect), "restored --until {until}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_until_a_second_gives_exactly_the_readings_acknowledged_up_to_it() {
    init();
    let work = tempfile::tempdir().unwrap();
    let dest = Dest::dir(work.path());
    let data = work.path().join("data");
    let server = dest.serve(&data);
    let well = "UNTIL-1".to_owned();
    let batch = |from: i64| -> Vec<Value> {
        (0..10)
            .map(|i| reading(&well, &ts(from + i), 41.0))
            .collect()
    };
    // The chain's first backup holds none of them.
    assert!(post(&server, &[reading("OTHER", &ts(0), 1.0)]).await);
    dest.backup_chain(&data).await;

    assert!(post(&server, &batch(0)).await);
    // The next whole second after the first batch's acknowledgement.
    let second = (now_micros() / 1_000_000 + 1) * 1_000_000;
    while now_micros() <= second + 20_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(post(&server, &batch(100)).await);
    let status = wait_shipped(&server).await;
    assert_eq!(status["status"], "healthy", "{status}");
    assert!(status["objects_shipped"].as_u64().unwrap() > 0, "{status}");

    let until = espwatch_core::Timestamp(second).to_rfc3339();
    let past = work.path().join("past");
    let stdout = dest.restore(&past, Some(&until));
    assert!(recovery_point(&stdout) <= second, "{stdout}");
    let latest = work.path().join("latest");
    dest.restore(&latest, None);
    drop(server);

    let expect = |from: i64| -> BTreeSet<String> { (0..10).map(|i| ts(from + i)).collect() };
    let wells = vec![well.clone()];
    let past_server = ChildServer::start(&past);
    let got = stored_timestamps(&past_server, &wells).await;
    assert_eq!(got.get(&well), Some(&expect(0)), "restored --until {until}");
    let latest_server = ChildServer::start(&latest);
    let got = stored_timestamps(&latest_server, &wells).await;
    let mut both = expect(0);
    both.extend(expect(100));
    assert_eq!(
        got.get(&well),
        Some(&both),
        "restored up to the last shipped batch"
    );
}
