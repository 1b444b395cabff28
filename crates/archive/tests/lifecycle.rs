//! The data lifecycle end to end on a real embedded store: retention archives expired days
//! to Parquet (a local directory, or S3 served by a real `moto_server`), verifies them,
//! deletes them from the store, and restore brings them back.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use espwatch_archive::{Archive, Policy, restore, run_retention};
use espwatch_core::{
    Agg, FIELD_COUNT, Field, Measurements, Point, Reading, TelemetryQuery, TimeRange, Timestamp,
    WellId,
};
use espwatch_store::retention::{DAY_MICROS, day_of};
use espwatch_store::{
    AppendOptions, EmbeddedOptions, EmbeddedStore, FleetQuery, Retention, RollupTier, Store,
    StoreError,
};

const MINUTE: i64 = 60_000_000;

fn well(s: &str) -> WellId {
    WellId::parse(s).unwrap()
}

fn now() -> Timestamp {
    Timestamp(espwatch_archive::target::now_micros())
}

/// A reading whose values depend on the well and the time, some channels missing.
fn reading(w: &WellId, ts: i64) -> Reading {
    let mut raw = [f64::NAN; FIELD_COUNT];
    let k = (ts / MINUTE) as f64;
    for (c, v) in raw.iter_mut().enumerate() {
        if (ts / MINUTE + c as i64) % 11 != 0 {
            *v = 50.0 + (k * 0.37 + c as f64).sin() * 10.0 + w.as_str().len() as f64;
        }
    }
    Reading {
        well_id: w.clone(),
        ts: Timestamp(ts),
        values: Measurements::from_raw(raw),
    }
}

/// One reading a minute for each well over `[from, to)`.
async fn fill(store: &dyn Store, wells: &[WellId], from: i64, to: i64) -> usize {
    let mut readings = Vec::new();
    for w in wells {
        let mut t = from;
        while t < to {
            readings.push(reading(w, t));
            t += MINUTE;
        }
    }
    let n = readings.len();
    let out = store
        .append(readings, AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(out.count(espwatch_store::ReadingOutcome::Accepted), n);
    n
}

fn range(from: i64, to: i64) -> TimeRange {
    TimeRange {
        from: Timestamp(from),
        to: Timestamp(to),
    }
}

fn same_points(a: &[Point], b: &[Point]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.0 == y.0
                && x.1
                    .raw()
                    .iter()
                    .zip(y.1.raw())
                    .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
        })
}

fn policy() -> Policy {
    Policy {
        raw: Some(30 * DAY_MICROS),
        rollups: vec![(RollupTier::Hour, 365 * DAY_MICROS)],
    }
}

#[tokio::test]
async fn expired_days_are_archived_verified_deleted_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells = [well("W-1"), well("W-2")];
    let day0 = day_of(now().0 - 100 * DAY_MICROS).from.0;
    let old = fill(&store, &wells, day0, day0 + 3 * DAY_MICROS).await;
    let recent_from = now().0 - 2 * 3_600_000_000;
    let recent = fill(&store, &wells, recent_from, recent_from + 60 * MINUTE).await;
    store.checkpoint().await.unwrap();
    let before_w1 = store
        .read_range(&wells[0], range(day0, day0 + 3 * DAY_MICROS))
        .await
        .unwrap();
    assert_eq!(before_w1.len(), 3 * 1440);

    let hourly = |step: i64| TelemetryQuery {
        well_id: wells[0].clone(),
        range: range(day0, day0 + 3 * DAY_MICROS),
        fields: Field::ALL.to_vec(),
        step_micros: Some(step),
        agg: Agg::Avg,
        max_points: 10_000,
    };
    let hourly_before = store.query(&hourly(3_600_000_000)).await.unwrap();
    assert_eq!(hourly_before.ts.len(), 72);
    let fleet = FleetQuery {
        wells: Vec::new(),
        range: range(day0, day0 + 3 * DAY_MICROS),
        fields: vec![Field::MotorCurrentA, Field::IntakePressurePsi],
        step_micros: 6 * 3_600_000_000,
        agg: Agg::Max,
    };
    let fleet_before = store.fleet_query(&fleet).await.unwrap();
    assert_eq!(fleet_before.len(), 2);

    let archive = Archive::open(archive_dir.path().to_str().unwrap()).unwrap();
    let report = run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap();
    assert_eq!(report.days_archived, 6, "{report:?}");
    // The hourly tier outlives the raw one: step queries of whole hours still answer.
    assert_eq!(
        store.query(&hourly(3_600_000_000)).await.unwrap(),
        hourly_before
    );
    assert!(
        store
            .query(&hourly(60_000_000))
            .await
            .unwrap()
            .ts
            .is_empty()
    );
    assert_eq!(store.fleet_query(&fleet).await.unwrap(), fleet_before);
    assert_eq!(report.readings_archived as usize, old);
    assert_eq!(report.days_deferred, 0);
    assert!(report.bytes_written > 0);

    // Gone from the store, the recent hour kept.
    for w in &wells {
        let left = store
            .read_range(w, range(day0, day0 + 3 * DAY_MICROS))
            .await
            .unwrap();
        assert!(left.is_empty(), "{w}: {} old readings left", left.len());
        let kept = store
            .read_range(w, range(recent_from, recent_from + 60 * MINUTE))
            .await
            .unwrap();
        assert_eq!(kept.len() * 2, recent);
    }
    // Still gone after reopening (the index and the database agree).
    drop(store);
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert!(
        store
            .read_range(&wells[0], range(day0, day0 + 3 * DAY_MICROS))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.query(&hourly(3_600_000_000)).await.unwrap(),
        hourly_before
    );
    assert_eq!(store.fleet_query(&fleet).await.unwrap(), fleet_before);
    // Dropping the hourly tier past its own horizon leaves nothing for those days.
    let rollups_gone = run_retention(
        &store,
        &store,
        &archive,
        &Policy {
            raw: None,
            rollups: vec![(RollupTier::Hour, 31 * DAY_MICROS)],
        },
        now(),
    )
    .await
    .unwrap();
    assert_eq!(
        rollups_gone.rollups_deleted,
        vec![(RollupTier::Hour, 2 * 3 * 6)]
    );
    assert!(
        store
            .query(&hourly(3_600_000_000))
            .await
            .unwrap()
            .ts
            .is_empty()
    );

    // The manifest names every file; the files are Parquet on disk.
    let entries = archive.list(None).await.unwrap();
    assert_eq!(entries.len(), 6);
    for e in &entries {
        assert_eq!(e.rows, 1440, "{e:?}");
        assert_eq!(e.to.0 - e.from.0, DAY_MICROS);
        let file = std::fs::read(archive_dir.path().join(&e.path)).unwrap();
        assert_eq!(&file[..4], b"PAR1");
        assert_eq!(&file[file.len() - 4..], b"PAR1");
    }
    assert_eq!(archive.list(Some(&wells[1])).await.unwrap().len(), 3);

    // A second round finds nothing more to do.
    let again = run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap();
    assert_eq!(again.days_archived, 0);

    // Restore one day of W-1: exactly what was there, values bit for bit; twice is harmless.
    let day1 = range(day0 + DAY_MICROS, day0 + 2 * DAY_MICROS);
    let r = restore(&store, &archive, &wells[0], day1).await.unwrap();
    assert_eq!(
        (r.files, r.readings, r.accepted, r.duplicates),
        (1, 1440, 1440, 0)
    );
    let back = store.read_range(&wells[0], day1).await.unwrap();
    assert!(same_points(&back, &before_w1[1440..2880]));
    let r = restore(&store, &archive, &wells[0], day1).await.unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, 1440));
    assert_eq!(store.read_range(&wells[0], day1).await.unwrap().len(), 1440);

    // A part of a day restores only that part.
    let part = range(day0 + 10 * 60 * MINUTE, day0 + 11 * 60 * MINUTE);
    let r = restore(&store, &archive, &wells[1], part).await.unwrap();
    assert_eq!(r.accepted, 60);
    store.close().await.unwrap();
}

#[tokio::test]
async fn late_readings_of_an_archived_day_get_their_own_file_and_a_changed_count_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        window_micros: 3_600_000_000,
        checkpoint_readings: 500,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    let w = well("LATE-1");
    let day0 = day_of(now().0 - 40 * DAY_MICROS).from.0;
    fill(&store, std::slice::from_ref(&w), day0, day0 + DAY_MICROS).await;
    let archive = Archive::open(archive_dir.path().to_str().unwrap()).unwrap();
    let report = run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap();
    assert_eq!(report.days_archived, 1);

    // Late readings of that day arrive (unsealed: in the log only), at the half minute.
    let late: Vec<Reading> = (0..5)
        .map(|i| reading(&w, day0 + 600 * MINUTE + i * MINUTE + 30_000_000))
        .collect();
    store.append(late, AppendOptions::default()).await.unwrap();

    // The store refuses a delete whose count does not match what was archived.
    let d = range(day0, day0 + DAY_MICROS);
    match store.delete_raw(&w, d, 4).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.read_range(&w, d).await.unwrap().len(), 5);

    let report = run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap();
    assert_eq!((report.days_archived, report.readings_archived), (1, 5));
    assert!(store.read_range(&w, d).await.unwrap().is_empty());
    let entries = archive.list(Some(&w)).await.unwrap();
    assert_eq!(entries.len(), 2);
    let r = restore(&store, &archive, &w, d).await.unwrap();
    assert_eq!((r.files, r.accepted), (2, 1445));
    // The well's newest reading is right after the old days went and came back.
    let latest = store.latest().await.unwrap();
    assert_eq!(latest[0].point.0.0, day0 + DAY_MICROS - MINUTE);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_damaged_archive_file_is_refused_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let w = well("DMG-1");
    let day0 = day_of(now().0 - 50 * DAY_MICROS).from.0;
    fill(&store, std::slice::from_ref(&w), day0, day0 + DAY_MICROS).await;
    let archive = Archive::open(archive_dir.path().to_str().unwrap()).unwrap();
    run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap();
    let entry = archive.list(Some(&w)).await.unwrap().remove(0);
    let path = archive_dir.path().join(&entry.path);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = restore(&store, &archive, &w, range(day0, day0 + DAY_MICROS))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    assert!(
        store
            .read_range(&w, range(day0, day0 + DAY_MICROS))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// S3, against a real S3-compatible server (moto)

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_services() -> bool {
    std::env::var("ESPWATCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Starts `moto_server` on a free port; `None` (with the reason printed) when it is not
/// installed, unless services are required.
fn start_moto() -> Option<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "moto_server not available ({e}); install it with pip install 'moto[server]'"
            );
            if require_services() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        }
    };
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

fn s3_options(port: u16) -> Vec<(String, String)> {
    [
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "testing".into()),
        ("aws_secret_access_key", "testing".into()),
        ("aws_region", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test]
async fn archive_to_s3_and_nothing_is_deleted_while_s3_is_down() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(moto) = start_moto() else {
        return;
    };
    // moto accepts an unsigned bucket creation.
    let created = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{}/espwatch-archive", moto.port))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells = [well("S3-1"), well("S3-2")];
    let day0 = day_of(now().0 - 60 * DAY_MICROS).from.0;
    fill(&store, &wells, day0, day0 + 2 * DAY_MICROS).await;
    let archive =
        Archive::open_with_options("s3://espwatch-archive/fleet", &s3_options(moto.port)).unwrap();
    let report = run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap();
    assert_eq!(report.days_archived, 4);
    let entries = archive.list(None).await.unwrap();
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|e| e.path.starts_with("raw/")));
    // The objects really are in the bucket, under the prefix.
    let listing = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/espwatch-archive?list-type=2&prefix=fleet/raw/",
            moto.port
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(listing.matches(".parquet</Key>").count(), 4, "{listing}");

    let d = range(day0 + DAY_MICROS, day0 + 2 * DAY_MICROS);
    let r = restore(&store, &archive, &wells[1], d).await.unwrap();
    assert_eq!(r.accepted, 1440);

    // S3 goes away; a new expired day must stay in the store.
    drop(moto);
    let day5 = day_of(now().0 - 45 * DAY_MICROS).from.0;
    fill(&store, &wells[..1], day5, day5 + DAY_MICROS).await;
    let err = run_retention(&store, &store, &archive, &policy(), now())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("nothing deleted"), "{err:#}");
    assert_eq!(
        store
            .read_range(&wells[0], range(day5, day5 + DAY_MICROS))
            .await
            .unwrap()
            .len(),
        1440
    );
    store.close().await.unwrap();
}

/// Issue 20: two incremental backups into one S3 prefix at once would both write their delta
/// after the same last backup. The second is refused while the first holds the prefix's
/// `LOCK.json` (created only if absent), naming its owner; the lock goes with its backup, and
/// one left by a backup that died expires.
#[tokio::test]
async fn a_backup_into_an_s3_chain_another_backup_holds_is_refused() {
    use espwatch_archive::backup::{ChainLease, backup_chain};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(moto) = start_moto() else {
        return;
    };
    let created = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{}/espwatch-backups", moto.port))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells = [well("L-1")];
    let day0 = day_of(now().0 - 2 * DAY_MICROS).from.0;
    fill(&store, &wells, day0, day0 + DAY_MICROS / 4).await;
    store.checkpoint().await.unwrap();
    let bucket =
        Archive::open_with_options("s3://espwatch-backups/chain", &s3_options(moto.port)).unwrap();
    let staging = tempfile::tempdir().unwrap();

    let held = ChainLease::acquire(&bucket).await.unwrap();
    assert!(
        ChainLease::acquire(&bucket).await.is_err(),
        "one holder at a time"
    );
    let err = backup_chain(dir.path(), &bucket, &staging.path().join("a"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("being backed up by"), "{err:#}");
    held.release().await.unwrap();

    let first = backup_chain(dir.path(), &bucket, &staging.path().join("b"))
        .await
        .unwrap();
    assert_eq!(first.report.entry.seq, 0);
    // Released after the backup: the next one goes ahead.
    let lease = ChainLease::acquire(&bucket).await.unwrap();
    lease.release().await.unwrap();

    // A lease never released (its backup died) expires and is taken over.
    let stale = ChainLease::acquire_for(&bucket, -1).await.unwrap();
    std::mem::forget(stale);
    fill(&store, &wells, day0 + DAY_MICROS / 4, day0 + DAY_MICROS / 2).await;
    let second = backup_chain(dir.path(), &bucket, &staging.path().join("c"))
        .await
        .unwrap();
    assert_eq!(second.report.entry.seq, 1);
    ChainLease::acquire(&bucket)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    store.close().await.unwrap();
}
