//! Data lifecycle through the binary: `espwatch archive run|list|restore` on a data
//! directory, the Parquet files read by pyarrow, and the server's own retention rounds,
//! including an archive that cannot be written (nothing deleted, readiness says so).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const DAY: i64 = 86_400;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rfc3339(secs: i64) -> String {
    espwatch_core::Timestamp::from_secs(secs).to_rfc3339()
}

/// Midnight UTC `days_ago` days back.
fn day_start(days_ago: i64) -> i64 {
    (now_secs() - days_ago * DAY).div_euclid(DAY) * DAY
}

/// NDJSON of one reading a minute of `well` over `[from, from + days)` (seconds).
fn write_readings(path: &Path, well: &str, from: i64, days: i64) {
    let mut text = String::new();
    for i in 0..days * 1440 {
        let t = from + i * 60;
        let v = serde_json::json!({
            "well_id": well,
            "ts": rfc3339(t),
            "frequency_hz": 50.0 + (i % 100) as f64 / 10.0,
            "motor_current_a": 40.0 + (i % 37) as f64 / 4.0,
            "intake_pressure_psi": 850.5,
        });
        text.push_str(&v.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn ingest(data_dir: &str, file: &Path) {
    let (ok, _, stderr) = run_cli(
        &["ingest", file.to_str().unwrap(), "--data-dir", data_dir],
        &[],
        Path::new("."),
    );
    assert!(ok, "ingest failed: {stderr}");
}

fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

#[test]
fn archive_commands_expire_list_and_restore_a_data_directory() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let archive = work.path().join("archive");
    let (data_s, archive_s) = (data.to_str().unwrap(), archive.to_str().unwrap());
    let old = day_start(60);
    let file = work.path().join("old.ndjson");
    write_readings(&file, "ARC-1", old, 2);
    ingest(data_s, &file);
    write_readings(&file, "ARC-1", day_start(1), 1);
    ingest(data_s, &file);

    let retention = [("ESPWATCH_RETENTION_RAW", "30d")];
    let (ok, stdout, stderr) = run_cli(
        &[
            "archive",
            "run",
            "--data-dir",
            data_s,
            "--archive",
            archive_s,
        ],
        &retention,
        work.path(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("archived 2 well-days (2880 readings"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run_cli(
        &[
            "archive",
            "list",
            "--data-dir",
            data_s,
            "--archive",
            archive_s,
            "--json",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entries.len(), 2, "{stdout}");
    for e in &entries {
        assert_eq!(e["well_id"], "ARC-1");
        assert_eq!(e["rows"], 1440);
    }

    // Another tool reads the files as they are.
    let first = archive.join(entries[0]["path"].as_str().unwrap());
    let script = "import sys, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(t.num_rows, t.schema.field('ts').type, t.column('well_id')[0], \
                  t.column('motor_current_a')[1], t.column('motor_temp_c').null_count)";
    let has_pyarrow = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if has_pyarrow {
        let out = Command::new("python3")
            .args(["-c", script, first.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            "1440 timestamp[us, tz=UTC] ARC-1 40.25 1440",
            "{text}"
        );
    } else if require_services() {
        panic!("pyarrow is missing: pip install pyarrow");
    } else {
        eprintln!("SKIPPED the pyarrow check: pyarrow is not installed (pip install pyarrow)");
    }

    // A second run has nothing left to do.
    let (ok, stdout, _) = run_cli(
        &[
            "archive",
            "run",
            "--data-dir",
            data_s,
            "--archive",
            archive_s,
        ],
        &retention,
        work.path(),
    );
    assert!(ok);
    assert!(stdout.contains("archived 0 well-days"), "{stdout}");

    let restore = [
        "archive",
        "restore",
        "--data-dir",
        data_s,
        "--archive",
        archive_s,
        "--well",
        "ARC-1",
        "--from",
        &rfc3339(old + DAY),
        "--to",
        &rfc3339(old + 2 * DAY),
    ];
    let (ok, stdout, stderr) = run_cli(&restore, &[], work.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .contains("restored 1440 readings of ARC-1 from 1 files (1440 new, 0 already stored)"),
        "{stdout}"
    );
    let (ok, stdout, _) = run_cli(&restore, &[], work.path());
    assert!(ok);
    assert!(stdout.contains("(0 new, 1440 already stored)"), "{stdout}");
}

async fn ready(client: &reqwest::Client, server: &ChildServer) -> Value {
    client
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn hourly_buckets(server: &ChildServer, well: &str, from: i64, to: i64) -> usize {
    let (status, body) = status_json(
        server
            .client()
            .get(server.url(&format!(
                "/api/v1/wells/{well}/telemetry?from={}&to={}&step=1h&agg=avg",
                rfc3339(from),
                rfc3339(to)
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["ts"].as_array().map_or(0, Vec::len)
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_server(data_s: &str, config: &Path) -> ChildServer {
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

#[tokio::test]
async fn the_server_expires_old_readings_and_deletes_nothing_while_the_archive_fails() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let data_s = data.to_str().unwrap();
    let old = day_start(45);
    let file = work.path().join("old.ndjson");
    write_readings(&file, "SRV-1", old, 2);
    ingest(data_s, &file);
    let plain = reqwest::Client::new();

    // An S3 endpoint nobody listens on: every round fails, nothing may go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.path().join("espwatch.toml");
    std::fs::write(
        &config,
        format!(
            "retention_raw = \"30d\"\nretention_1h = \"400d\"\nretention_interval_secs = 1\n\
             archive_url = \"s3://espwatch/archive\"\n\
             [archive_options]\naws_endpoint = \"http://127.0.0.1:{closed}\"\n\
             aws_allow_http = \"true\"\naws_access_key_id = \"k\"\n\
             aws_secret_access_key = \"s\"\naws_region = \"us-east-1\"\n"
        ),
    )
    .unwrap();
    let mut server = start_server(data_s, &config);
    wait_for("a failed retention round", async || {
        let body = ready(&plain, &server).await;
        body["checks"]["retention"]["consecutive_failures"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    })
    .await;
    let body = ready(&plain, &server).await;
    assert_eq!(body["status"], "ready", "{body}");
    let retention = &body["checks"]["retention"];
    assert_eq!(retention["status"], "degraded", "{body}");
    assert!(
        retention["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing deleted")),
        "{body}"
    );
    assert_eq!(
        hourly_buckets(&server, "SRV-1", old, old + 2 * DAY).await,
        48
    );
    assert!(server.terminate().success());

    // A working archive: the server's rounds archive both days and delete them.
    let archive = work.path().join("archive");
    std::fs::write(
        &config,
        format!(
            "retention_raw = \"30d\"\nretention_interval_secs = 1\narchive_url = \"{}\"\n",
            archive.display()
        ),
    )
    .unwrap();
    let server = start_server(data_s, &config);
    wait_for("the old days to be archived and deleted", async || {
        hourly_buckets(&server, "SRV-1", old, old + 2 * DAY).await == 0
    })
    .await;
    let body = ready(&plain, &server).await;
    assert_eq!(body["checks"]["retention"]["status"], "healthy", "{body}");
    let (ok, stdout, stderr) = run_cli(
        &[
            "archive",
            "list",
            "--archive",
            archive.to_str().unwrap(),
            "--json",
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entries.len(), 2, "{stdout}");
    assert_eq!(
        entries
            .iter()
            .map(|e| e["rows"].as_u64().unwrap())
            .sum::<u64>(),
        2880
    );
}
