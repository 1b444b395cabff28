//! Issue 20: continuous archiving of the embedded store's durable log (`backup_ship_to`)
//! through the binary. The restore drill: ingest under load, back up (a chain), keep
//! ingesting, `kill -9` the server, restore into a new directory, and find every reading
//! acknowledged up to the recovery point there. And `store restore --until` to a second:
//! exactly the readings acknowledged up to it.

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

/// A server shipping its log to `dest` every 100 ms, checkpointing every second (so sealed
/// batches wait in `ship_log` for the shipper too).
fn start_shipping(data: &Path, dest: &Path, work: &Path) -> ChildServer {
    let config = work.join("espwatch.toml");
    std::fs::write(
        &config,
        format!(
            "backup_ship_to = {:?}\nbackup_ship_interval_ms = 100\ncheckpoint_interval_secs = 1\n",
            dest.to_str().unwrap()
        ),
    )
    .unwrap();
    let data_s = data.to_str().unwrap();
    let key = cli_api_key(&["--data-dir", data_s], "admin");
    let mut server = ChildServer::start_with(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_s,
        "--config",
        config.to_str().unwrap(),
    ]);
    server.api_key = Some(key);
    server
}

fn cli(args: &[&str]) -> (bool, String, String) {
    run_cli(args, &[], Path::new("."))
}

async fn cli_async(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args)
    })
    .await
    .unwrap()
}

fn backup_chain(data: &Path, dest: &Path) -> Vec<String> {
    [
        "store",
        "backup",
        "--incremental",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        dest.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// `store restore`; returns its stdout (asserting success).
fn restore(dest: &Path, into: &Path, until: Option<&str>) -> String {
    let mut args = vec![
        "store",
        "restore",
        "--from",
        dest.to_str().unwrap(),
        "--data-dir",
        into.to_str().unwrap(),
    ];
    if let Some(t) = until {
        args.extend(["--until", t]);
    }
    let (ok, stdout, stderr) = cli(&args);
    assert!(ok, "restore failed: {stdout}\n{stderr}");
    stdout
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_kill_9_loses_nothing_acknowledged_before_the_recovery_point() {
    init();
    let work = tempfile::tempdir().unwrap();
    let (data, dest) = (work.path().join("data"), work.path().join("backups"));
    let mut server = start_shipping(&data, &dest, work.path());

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let wells: Vec<String> = (0..4).map(|c| format!("DRILL-{c}")).collect();
    let tasks: Vec<_> = wells
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

    // Under load: a base backup (the chain's first), then more load after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, out, err) = cli_async(backup_chain(&data, &dest)).await;
    assert!(ok, "backup failed: {out}\n{err}");
    let backed_up = now_micros();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.kill_9();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    let restored = work.path().join("restored");
    let stdout = restore(&dest, &restored, None);
    let point = recovery_point(&stdout);
    let acked = acked.lock().unwrap().clone();
    let last_ack = acked.iter().map(|a| a.2).max().unwrap();
    let after_backup = acked.iter().filter(|a| a.2 > backed_up).count();
    assert!(after_backup > 0, "no reading acknowledged after the backup");
    let due: Vec<&(String, String, i64)> = acked.iter().filter(|a| a.2 <= point).collect();
    assert!(
        due.iter().any(|a| a.2 > backed_up),
        "the recovery point {point} is not after the backup ({backed_up}): {stdout}"
    );

    let check = ChildServer::start(&restored);
    let stored = stored_timestamps(&check, &wells).await;
    let missing: Vec<_> = due
        .iter()
        .filter(|(w, t, _)| !stored.get(w).is_some_and(|s| s.contains(t)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} readings acknowledged before the recovery point are missing, e.g. {:?}",
        missing.len(),
        due.len(),
        &missing[..missing.len().min(5)]
    );
    // The figure for the notes: how far the recovery point trails the last acknowledgement.
    println!(
        "restore drill: {} readings acknowledged, {} up to the recovery point, {} after the backup; recovery point {} ms before the last acknowledgement",
        acked.len(),
        due.len(),
        after_backup,
        (last_ack - point).max(0) / 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_until_a_second_gives_exactly_the_readings_acknowledged_up_to_it() {
    init();
    let work = tempfile::tempdir().unwrap();
    let (data, dest) = (work.path().join("data"), work.path().join("backups"));
    let server = start_shipping(&data, &dest, work.path());
    let well = "UNTIL-1".to_owned();
    let batch = |from: i64| -> Vec<Value> {
        (0..10)
            .map(|i| reading(&well, &ts(from + i), 41.0))
            .collect()
    };
    // The chain's first backup holds none of them.
    assert!(post(&server, &[reading("OTHER", &ts(0), 1.0)]).await);
    let (ok, out, err) = cli_async(backup_chain(&data, &dest)).await;
    assert!(ok, "backup failed: {out}\n{err}");

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
    let stdout = restore(&dest, &past, Some(&until));
    assert!(recovery_point(&stdout) <= second, "{stdout}");
    let latest = work.path().join("latest");
    restore(&dest, &latest, None);
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
