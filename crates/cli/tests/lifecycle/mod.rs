//! Data lifecycle through the binary: `espwatch archive run|list|restore` on a data
//! directory and on PostgreSQL, to S3 (a real `moto_server`) and to a directory; the Parquet
//! files read by pyarrow; nothing deleted while S3 is down; and the server's own retention
//! rounds with their report in `/health/ready`.

use std::net::TcpListener;
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

/// The motor current of the `i`-th reading a minute from a day start.
fn current(i: i64) -> f64 {
    40.0 + (i % 37) as f64 / 4.0
}

/// NDJSON of one reading a minute of `well` over `[from, from + days)` (seconds).
fn write_readings(path: &Path, well: &str, from: i64, days: i64) {
    let mut text = String::new();
    for i in 0..days * 1440 {
        let v = serde_json::json!({
            "well_id": well,
            "ts": rfc3339(from + i * 60),
            "frequency_hz": 50.0 + (i % 100) as f64 / 10.0,
            "motor_current_a": current(i),
            "intake_pressure_psi": 850.5,
        });
        text.push_str(&v.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn ingest(store: &[&str], file: &Path) {
    let mut args = vec!["ingest", file.to_str().unwrap()];
    args.extend_from_slice(store);
    let (ok, _, stderr) = run_cli(&args, &[], Path::new("."));
    assert!(ok, "ingest failed: {stderr}");
}

/// `python3 -c script args...`, or `None` (reason printed) without pyarrow, unless services
/// are required.
fn pyarrow(script: &str, args: &[&str]) -> Option<String> {
    let has = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            !require_services(),
            "pyarrow is missing: pip install pyarrow"
        );
        eprintln!("SKIPPED the pyarrow check: pyarrow is not installed (pip install pyarrow)");
        return None;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The S3 credentials, from the environment as documented (never from the config file).
const S3_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

fn s3_config(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            "retention_raw = \"30d\"\n\
             archive_url = \"s3://espwatch-archive/fleet\"\n\
             [archive_options]\n\
             aws_endpoint = \"http://127.0.0.1:{port}\"\n\
             aws_allow_http = \"true\"\n\
             aws_region = \"us-east-1\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn archive_commands_on_a_data_directory_s3_pyarrow_and_s3_down() {
    let Some(mut moto) = start_moto("espwatch-archive") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let data_s = data.to_str().unwrap();
    let store = ["--data-dir", data_s];
    let old = day_start(60);
    let file = work.path().join("readings.ndjson");
    write_readings(&file, "ARC-1", old, 2);
    ingest(&store, &file);
    write_readings(&file, "ARC-1", day_start(1), 1);
    ingest(&store, &file);
    let config = work.path().join("espwatch.toml");
    s3_config(&config, moto.port);
    let cfg = config.to_str().unwrap();

    // A secret in the configuration is refused: credentials come from the environment.
    let bad = work.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[archive_options]\naws_secret_access_key = \"oops\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run_cli(
        &["archive", "list", "--config", bad.to_str().unwrap()],
        &[],
        work.path(),
    );
    assert!(!ok);
    assert!(stderr.contains("is a credential"), "{stderr}");

    let (ok, stdout, stderr) = run_cli(
        &["archive", "run", "--config", cfg, "--data-dir", data_s],
        &S3_ENV,
        work.path(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("archived 2 well-days (2880 readings, ")
            && stdout.contains("and deleted 2880 readings"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run_cli(
        &["archive", "list", "--config", cfg, "--json"],
        &S3_ENV,
        work.path(),
    );
    assert!(ok, "{stderr}");
    let entries: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entries.len(), 2, "{stdout}");
    for (e, day) in entries.iter().zip([old, old + DAY]) {
        assert_eq!(e["well_id"], "ARC-1");
        assert_eq!(e["rows"], 1440);
        assert_eq!(e["from"].as_i64(), Some(day * 1_000_000));
    }

    // The second day's object opens in pyarrow, straight from S3, as it is: one row a
    // reading (its second is reading 1441 of the file ingested), UTC microsecond timestamps, the channels under their API names, missing ones
    // as nulls.
    let script = "import sys, pyarrow.parquet as pq, pyarrow.fs as fs\n\
                  s3 = fs.S3FileSystem(endpoint_override=sys.argv[1], scheme='http', \
                  access_key='testing', secret_key='testing', region='us-east-1')\n\
                  t = pq.read_table(sys.argv[2], filesystem=s3)\n\
                  print(t.num_rows, t.schema.field('ts').type, t.column('well_id')[0], \
                  t.column('motor_current_a')[1], t.column('intake_pressure_psi')[1439], \
                  t.column('motor_temp_c').null_count, t.column('ts')[0].value)";
    let object = format!(
        "espwatch-archive/fleet/{}",
        entries[1]["path"].as_str().unwrap()
    );
    let endpoint = format!("127.0.0.1:{}", moto.port);
    if let Some(text) = pyarrow(script, &[&endpoint, &object]) {
        assert_eq!(
            text,
            format!(
                "1440 timestamp[us, tz=UTC] ARC-1 {} 850.5 1440 {}",
                current(1440 + 1),
                (old + DAY) * 1_000_000
            )
        );
    }

    // Restore one day from S3; a second time everything is already stored.
    let restore = [
        "archive",
        "restore",
        "--config",
        cfg,
        "--data-dir",
        data_s,
        "--well",
        "ARC-1",
        "--from",
        &rfc3339(old + DAY),
        "--to",
        &rfc3339(old + 2 * DAY),
    ];
    let (ok, stdout, stderr) = run_cli(&restore, &S3_ENV, work.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .contains("restored 1440 readings of ARC-1 from 1 files (1440 new, 0 already stored)"),
        "{stdout}"
    );
    let (ok, stdout, _) = run_cli(&restore, &S3_ENV, work.path());
    assert!(ok);
    assert!(stdout.contains("(0 new, 1440 already stored)"), "{stdout}");

    // S3 goes down. Another day expires: the round fails and deletes nothing.
    write_readings(&file, "ARC-1", day_start(40), 1);
    ingest(&store, &file);
    moto.stop();
    let (ok, stdout, stderr) = run_cli(
        &["archive", "run", "--config", cfg, "--data-dir", data_s],
        &S3_ENV,
        work.path(),
    );
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("nothing deleted"), "{stderr}");

    // Proof: a working archive now gets both expired days, the restored one and the new one,
    // whole.
    let local = work.path().join("local-archive");
    let local_s = local.to_str().unwrap();
    let (ok, stdout, stderr) = run_cli(
        &[
            "archive",
            "run",
            "--config",
            cfg,
            "--data-dir",
            data_s,
            "--archive",
            local_s,
        ],
        &[],
        work.path(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("archived 2 well-days (2880 readings"),
        "{stdout}"
    );
    // A second run has nothing left to do.
    let (ok, stdout, _) = run_cli(
        &[
            "archive",
            "run",
            "--config",
            cfg,
            "--data-dir",
            data_s,
            "--archive",
            local_s,
        ],
        &[],
        work.path(),
    );
    assert!(ok);
    assert!(stdout.contains("archived 0 well-days"), "{stdout}");
    // The local archive is a directory of Parquet files pyarrow reads as one data set.
    let script = "import sys, pyarrow.dataset as ds\n\
                  t = ds.dataset(sys.argv[1], format='parquet').to_table()\n\
                  print(t.num_rows, len(set(t.column('ts').to_pylist())))";
    if let Some(text) = pyarrow(script, &[local.join("raw").to_str().unwrap()]) {
        assert_eq!(text, "2880 2880");
    }
}

async fn ready(server: &ChildServer) -> Value {
    reqwest::Client::new()
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Raw points of `well` in `[from, to)` (no step: rollups outlive raw readings on the
/// embedded store; up to 10 000, not downsampled).
async fn raw_points(server: &ChildServer, well: &str, from: i64, to: i64) -> usize {
    let (status, body) = status_json(
        server
            .client()
            .get(server.url(&format!(
                "/api/v1/wells/{well}/telemetry?from={}&to={}&max_points=10000",
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
    serve_with_admin_key(Path::new(data_s), config, &S3_ENV)
}

#[tokio::test]
async fn the_server_expires_old_readings_and_deletes_nothing_while_the_archive_fails() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let data_s = data.to_str().unwrap();
    let old = day_start(45);
    let file = work.path().join("old.ndjson");
    write_readings(&file, "SRV-1", old, 2);
    ingest(&["--data-dir", data_s], &file);

    // An S3 endpoint nobody listens on: every round fails, nothing may go.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.path().join("espwatch.toml");
    s3_config(&config, closed);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.insert_str(
        0,
        "retention_interval_secs = 1\nretention_1h = \"forever\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut server = start_server(data_s, &config);
    wait_for("two failed retention rounds", async || {
        ready(&server).await["checks"]["retention"]["consecutive_failures"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    })
    .await;
    let body = ready(&server).await;
    assert_eq!(body["status"], "ready", "{body}");
    let r = &body["checks"]["retention"];
    assert_eq!(r["status"], "degraded", "{body}");
    assert_eq!(r["archive"], "s3", "{body}");
    assert_eq!(r["last_error_stage"], "archive", "{body}");
    assert!(
        r["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("was not deleted")),
        "{body}"
    );
    // No internals (bucket, endpoint) in the unauthenticated answer; the log has them.
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    assert!(r["last_error_id"].as_str().is_some_and(|id| id.len() == 12));
    assert_eq!(r["totals"]["readings_deleted"], 0, "{body}");
    assert_eq!(r["policy"]["raw"], "30d");
    assert_eq!(r["policy"]["1h"], "forever");
    assert!(
        r["last_run"].is_string() && r["next_run"].is_string(),
        "{body}"
    );
    assert_eq!(raw_points(&server, "SRV-1", old, old + 2 * DAY).await, 2880);
    assert!(server.terminate().success());

    // A working archive (a directory): the server's rounds archive both days and delete them.
    let archive = work.path().join("archive");
    std::fs::write(
        &config,
        format!(
            "retention_raw = \"30d\"\nretention_interval_secs = 1\narchive_url = \"{}\"\n",
            archive.display()
        ),
    )
    .unwrap();
    let mut server = start_server(data_s, &config);
    wait_for("the old days to be archived and deleted", async || {
        ready(&server).await["checks"]["retention"]["totals"]["readings_deleted"] == 2880
    })
    .await;
    assert_eq!(raw_points(&server, "SRV-1", old, old + 2 * DAY).await, 0);
    let body = ready(&server).await;
    let r = &body["checks"]["retention"];
    assert_eq!(r["status"], "healthy", "{body}");
    assert_eq!(r["archive"], "directory", "{body}");
    assert_eq!(r["consecutive_failures"], 0, "{body}");
    assert_eq!(r["totals"]["days_archived"], 2, "{body}");
    assert_eq!(r["totals"]["readings_archived"], 2880, "{body}");
    assert!(r["last_success"].is_string(), "{body}");
    assert!(r["last_error"].is_null(), "{body}");
    assert!(server.terminate().success());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_commands_on_postgres_drop_the_emptied_day_partitions() {
    let Some(db) = espwatch_store_postgres::testing::TestDatabase::create().await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let store = ["--database-url", db.url.as_str()];
    let old = day_start(50);
    let file = work.path().join("readings.ndjson");
    write_readings(&file, "PGA-1", old, 2);
    ingest(&store, &file);
    write_readings(&file, "PGA-1", day_start(1), 1);
    ingest(&store, &file);
    let archive = work.path().join("archive");
    let archive_s = archive.to_str().unwrap();
    let env = [
        ("ESPWATCH_RETENTION_RAW", "30d"),
        ("ESPWATCH_RETENTION_1M", "30d"),
    ];
    let run = [
        "archive",
        "run",
        "--database-url",
        db.url.as_str(),
        "--archive",
        archive_s,
    ];
    let (ok, stdout, stderr) = run_cli(&run, &env, work.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("archived 2 well-days (2880 readings")
            && stdout.contains("and deleted 2880 readings")
            && stdout.contains("2 partitions/chunks dropped"),
        "{stdout}"
    );
    assert!(stdout.contains("expired 1m rollups"), "{stdout}");
    let (ok, stdout, _) = run_cli(&run, &env, work.path());
    assert!(ok);
    assert!(stdout.contains("archived 0 well-days"), "{stdout}");

    let restore = [
        "archive",
        "restore",
        "--database-url",
        db.url.as_str(),
        "--archive",
        archive_s,
        "--well",
        "PGA-1",
        "--from",
        &rfc3339(old),
        "--to",
        &rfc3339(old + 2 * DAY),
    ];
    let (ok, stdout, stderr) = run_cli(&restore, &[], work.path());
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .contains("restored 2880 readings of PGA-1 from 2 files (2880 new, 0 already stored)"),
        "{stdout}"
    );
    let (ok, stdout, _) = run_cli(&restore, &[], work.path());
    assert!(ok);
    assert!(stdout.contains("(0 new, 2880 already stored)"), "{stdout}");
}

/// Objects under `prefix` in moto's `bucket` (an unsigned listing: moto accepts it).
fn bucket_keys(port: u16, bucket: &str, prefix: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sf",
            &format!("http://127.0.0.1:{port}/{bucket}?list-type=2&prefix={prefix}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "listing the bucket");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 20: the embedded store's backups in S3 (a real `moto_server`). A full backup and a
/// backup chain go to `s3://bucket/prefix` (each file uploaded and read back against its
/// SHA-256, the manifest last); they restore from the bucket into fresh directories, whole
/// and as of the first backup of the chain; a server on the restored directory answers the
/// readings; an altered object and a bucket that went away fail loudly; the secret key never
/// appears in any output.
#[tokio::test]
async fn store_backup_and_restore_through_s3() {
    init();
    let Some(mut moto) = start_moto("espwatch-backup") else {
        return;
    };
    const SECRET: &str = "backup-secret-never-printed";
    let env = [
        ("AWS_ACCESS_KEY_ID", "espwatch-backup-key"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let work = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let (ok, stdout, stderr) = run_cli(args, &env, work.path());
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "the secret key was printed: {stdout}{stderr}"
        );
        (ok, stdout, stderr)
    };
    let data = work.path().join("data");
    let data_s = data.to_str().unwrap();
    let day0 = day_start(5);
    let file = work.path().join("readings.ndjson");
    write_readings(&file, "BK-1", day0, 2);
    ingest(&["--data-dir", data_s], &file);
    let config = work.path().join("espwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[backup_options]\n\
             aws_endpoint = \"http://127.0.0.1:{}\"\n\
             aws_allow_http = \"true\"\n\
             aws_region = \"us-east-1\"\n",
            moto.port
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let backup = |to: &str, incremental: bool| {
        let mut args = vec![
            "store",
            "backup",
            "--config",
            cfg,
            "--data-dir",
            data_s,
            "--to",
            to,
        ];
        if incremental {
            args.push("--incremental");
        }
        cli(&args)
    };
    let restore = |from: &str, into: &Path, until: Option<&str>| {
        let mut args = vec![
            "store",
            "restore",
            "--config",
            cfg,
            "--from",
            from,
            "--data-dir",
            into.to_str().unwrap(),
        ];
        if let Some(until) = until {
            args.extend(["--until", until]);
        }
        cli(&args)
    };

    // A full backup: in the bucket, not in a local directory named `s3:`.
    let (ok, stdout, stderr) = backup("s3://espwatch-backup/full", false);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("backed up to s3://espwatch-backup/full: 2880 readings")
            && stdout.contains("each read back and checked against its SHA-256"),
        "{stdout}"
    );
    assert!(!work.path().join("s3:").exists());
    let keys = bucket_keys(moto.port, "espwatch-backup", "full/");
    assert!(
        keys.contains("<Key>full/BACKUP.json</Key>")
            && keys.contains("<Key>full/espwatch.db</Key>"),
        "{keys}"
    );
    // The staging directory is gone.
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("staging"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A second full backup onto it is refused.
    let (ok, _, stderr) = backup("s3://espwatch-backup/full", false);
    assert!(!ok && stderr.contains("is not empty"), "{stderr}");

    // A chain: full, then a delta with a new well.
    let (ok, first, stderr) = backup("s3://espwatch-backup/chain", true);
    assert!(ok, "{first}{stderr}");
    assert!(
        first.contains("#0 full") && first.contains("2880 readings"),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(20));
    let between = espwatch_core::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64,
    )
    .to_rfc3339();
    std::thread::sleep(Duration::from_millis(20));
    write_readings(&file, "BK-2", day0, 1);
    ingest(&["--data-dir", data_s], &file);
    let (ok, second, stderr) = backup("s3://espwatch-backup/chain", true);
    assert!(ok, "{second}{stderr}");
    assert!(
        second.contains("#1 incremental") && second.contains("4320 readings"),
        "{second}"
    );
    let keys = bucket_keys(moto.port, "espwatch-backup", "chain/");
    assert!(
        keys.contains("<Key>chain/CHAIN.json</Key>")
            && keys.contains("<Key>chain/STATE.sqlite</Key>")
            && keys.contains("<Key>chain/0001/delta.sqlite</Key>"),
        "{keys}"
    );

    // Restores from the bucket into fresh directories.
    let full = work.path().join("from-full");
    let (ok, stdout, stderr) = restore("s3://espwatch-backup/full", &full, None);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("2880 readings"), "{stdout}");
    let (ok, _, stderr) = restore("s3://espwatch-backup/full", &full, None);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    let (ok, _, stderr) = restore(
        "s3://espwatch-backup/full",
        &work.path().join("x"),
        Some(&between),
    );
    assert!(!ok && stderr.contains("needs a backup chain"), "{stderr}");
    let past = work.path().join("from-chain-past");
    let (ok, stdout, stderr) = restore("s3://espwatch-backup/chain", &past, Some(&between));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("2880 readings from 1 backup(s)"),
        "{stdout}"
    );
    let whole = work.path().join("from-chain");
    let (ok, stdout, stderr) = restore("s3://espwatch-backup/chain", &whole, None);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("4320 readings from 2 backup(s)"),
        "{stdout}"
    );

    // A server on the restored chain answers every reading through the API.
    let whole_s = whole.to_str().unwrap();
    let mut server = start_server(whole_s, &config);
    assert_eq!(
        raw_points(&server, "BK-1", day0, day0 + 2 * DAY).await,
        2880
    );
    assert_eq!(raw_points(&server, "BK-2", day0, day0 + DAY).await, 1440);
    let (status, body) = status_json(
        server
            .client()
            .get(server.url(&format!(
                "/api/v1/wells/BK-1/telemetry?from={}&to={}&max_points=10000",
                rfc3339(day0),
                rfc3339(day0 + DAY)
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["fields"]["motor_current_a"][7].as_f64(),
        Some(current(7)),
        "{body}"
    );
    assert!(server.terminate().success());

    // An object altered in the bucket (a signed overwrite through boto3, which moto ships
    // with: moto refuses unsigned overwrites): the restore refuses it.
    let script = "import sys, boto3\n\
                  s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='k', \
                  aws_secret_access_key='s', region_name='us-east-1')\n\
                  s3.put_object(Bucket='espwatch-backup', Key='full/espwatch.db', Body=b'not a database')";
    let altered = Command::new("python3")
        .args(["-c", script, &format!("http://127.0.0.1:{}", moto.port)])
        .status()
        .unwrap();
    assert!(altered.success(), "altering an object with boto3");
    let (ok, _, stderr) = restore("s3://espwatch-backup/full", &work.path().join("bad"), None);
    assert!(
        !ok && stderr.contains("does not match its checksum"),
        "{stderr}"
    );

    // The bucket goes away: the backup fails and says so.
    moto.stop();
    let (ok, stdout, stderr) = backup("s3://espwatch-backup/later", false);
    assert!(!ok, "{stdout}");
    assert!(!stdout.contains("backed up"), "{stdout}");
    assert!(stderr.contains("s3://espwatch-backup/later"), "{stderr}");
}
