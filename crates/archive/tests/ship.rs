//! The shipped log's replay through `espwatch_archive::ship` on a directory destination:
//! objects that overlap (a batch range shipped again after an upload whose answer was lost)
//! replay each batch once, with no false gap; a missing range is still a gap.

use espwatch_archive::Archive;
use espwatch_archive::ship::{self, ObjectSpan};
use espwatch_core::{FIELD_COUNT, Measurements, Reading, TimeRange, Timestamp, WellId};
use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, LogRecord, Store};

const SECOND: i64 = 1_000_000;
const BASE: i64 = 1_767_225_600 * SECOND;

fn reading(well: &WellId, i: i64) -> Reading {
    let mut raw = [f64::NAN; FIELD_COUNT];
    raw[0] = 50.0 + i as f64;
    Reading {
        well_id: well.clone(),
        ts: Timestamp(BASE + i * SECOND),
        values: Measurements::from_raw(raw),
    }
}

/// Six log batches of ten readings each, as the store committed them.
async fn six_batches(well: &WellId) -> Vec<LogRecord> {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        keep_log_for_shipping: true,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    for batch in 0..6 {
        let readings = (0..10).map(|i| reading(well, batch * 10 + i)).collect();
        store
            .append(readings, AppendOptions::default())
            .await
            .unwrap();
    }
    let records = store.log_since(0, usize::MAX).unwrap();
    store.close().await.unwrap();
    assert_eq!(records.len(), 6);
    records
}

/// Writes `records` as one shipped object into the destination directory `root`.
fn put(root: &std::path::Path, records: &[LogRecord]) {
    let path = root.join(ship::object_name(records));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, ship::encode(records)).unwrap();
}

async fn stored(dir: &std::path::Path, well: &WellId) -> usize {
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap();
    let all = TimeRange {
        from: Timestamp(0),
        to: Timestamp(i64::MAX),
    };
    let n = store.read_range(well, all).await.unwrap().len();
    store.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_objects_replay_every_batch_once_and_a_missing_range_is_a_gap() {
    let well = WellId::parse("SHIP-1").unwrap();
    let records = six_batches(&well).await;
    let work = tempfile::tempdir().unwrap();

    // Batches 1-2 shipped; 1-4 shipped again (the first answer was lost); then 3-4 and 5-6.
    let root = work.path().join("dest");
    put(&root, &records[0..2]);
    put(&root, &records[0..4]);
    put(&root, &records[2..4]);
    put(&root, &records[4..6]);
    let dest = Archive::open(root.to_str().unwrap()).unwrap();
    let listed: Vec<ObjectSpan> = ship::list(&dest)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.first_id, s.last_id))
            .collect::<Vec<_>>(),
        [(1, 4), (1, 2), (3, 4), (5, 6)],
        "the object reaching further first"
    );
    let restored = work.path().join("restored");
    let report = ship::replay(&dest, &restored, 0, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            report.batches,
            report.readings,
            report.added,
            report.last_id
        ),
        (6, 60, 60, 6)
    );
    assert_eq!(report.overlapping, 2);
    assert_eq!(report.recovery_point, Some(records[5].committed_at));
    assert_eq!(stored(&restored, &well).await, 60);

    // Overlapping at the start only (1-3 then 2-6): each batch once.
    let root = work.path().join("dest2");
    put(&root, &records[0..3]);
    put(&root, &records[1..6]);
    let dest = Archive::open(root.to_str().unwrap()).unwrap();
    let restored = work.path().join("restored2");
    let report = ship::replay(&dest, &restored, 0, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.batches, report.readings, report.added), (6, 60, 60));
    assert_eq!(stored(&restored, &well).await, 60);

    // Batches 3-4 nowhere: a gap, named, with the --until that stops before it.
    let root = work.path().join("dest3");
    put(&root, &records[0..2]);
    put(&root, &records[4..6]);
    let dest = Archive::open(root.to_str().unwrap()).unwrap();
    let err = ship::replay(&dest, &work.path().join("restored3"), 0, None)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("gap: batch 3 is missing") && text.contains("--until"),
        "{text}"
    );
}

/// Polls `cond` (every 50 ms, up to `secs`): whether it came true.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cond()
}

/// Issue 20: a destination that takes the TCP connection and never answers (here a listener
/// that accepts and holds every connection, silent) fails each shipping round within
/// `backup_ship_timeout_ms` instead of holding the shipper: the failures are counted and
/// reported (`degraded`, `behind`, the error naming the timeout), the rounds retried, and
/// ingestion goes on being acknowledged meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_never_answers_fails_each_round_within_the_timeout() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    let silent = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            holder.lock().unwrap().push(conn);
        }
    });
    let options: Vec<(String, String)> = [
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_region", "us-east-1".into()),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let dest = Archive::open_with_options("s3://silent/chain", &options).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            keep_log_for_shipping: true,
            ..EmbeddedOptions::default()
        },
    )
    .unwrap();
    let shipper = ship::Shipper::start(
        store.clone(),
        dest,
        ship::ShipOptions {
            interval: std::time::Duration::from_millis(50),
            timeout: std::time::Duration::from_millis(300),
            ..ship::ShipOptions::new(std::time::Duration::from_millis(50))
        },
    );
    let well = WellId::parse("SILENT-1").unwrap();
    // Ingestion is acknowledged all along (the shipper is never in its way).
    for batch in 0..20 {
        let readings = (0..10).map(|i| reading(&well, batch * 10 + i)).collect();
        store
            .append(readings, AppendOptions::default())
            .await
            .unwrap();
    }
    let failed = eventually(20, || shipper.status().consecutive_failures >= 2).await;
    let status = shipper.status();
    assert!(
        failed,
        "no round failed: the shipper hangs on the destination: {status:?}"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the destination was reached"
    );
    assert_eq!(status.status, "degraded", "{status:?}");
    assert!(status.pending_batches >= 20, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no answer within 300 ms")),
        "{status:?}"
    );
    for batch in 20..30 {
        let readings = (0..10).map(|i| reading(&well, batch * 10 + i)).collect();
        store
            .append(readings, AppendOptions::default())
            .await
            .unwrap();
    }
    // Retried: more rounds fail, each bounded.
    let before = shipper.status().failures;
    assert!(
        eventually(20, || shipper.status().failures > before).await,
        "the shipper did not retry"
    );
    // Shutting down is bounded too (a last round, failing within the timeout).
    shipper.stop().await;
    store.close().await.unwrap();
    silent.abort();
}

/// Issue 20: while the destination stays away, the unshipped log the data directory keeps is
/// capped (`backup_ship_max_pending_mb`): past the cap the oldest sealed batches are given up,
/// loudly (`gap` in the status, `degraded`, dropped batches counted), their readings still
/// stored; ingestion is never refused. Once the destination is back, shipping continues after
/// the gap, and the shipped log shows it as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_keeps_the_unshipped_log_within_its_cap_and_reports_the_gap() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("dest");
    let dest = Archive::open(root.to_str().unwrap()).unwrap();
    // The destination goes away: its directory replaced by a file, every write fails.
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            keep_log_for_shipping: true,
            ..EmbeddedOptions::default()
        },
    )
    .unwrap();
    const CAP: u64 = 2 << 10;
    let shipper = ship::Shipper::start(
        store.clone(),
        dest.clone(),
        ship::ShipOptions {
            interval: std::time::Duration::from_millis(50),
            timeout: std::time::Duration::from_secs(5),
            max_pending_bytes: CAP,
        },
    );
    let well = WellId::parse("CAP-1").unwrap();
    let mut acked = 0i64;
    for round in 0..12 {
        for _ in 0..10 {
            let readings = (0..50).map(|i| reading(&well, acked + i)).collect();
            store
                .append(readings, AppendOptions::default())
                .await
                .unwrap();
            acked += 50;
        }
        // Sealed: these batches are now only kept for the shipper.
        store.checkpoint().await.unwrap();
        if round == 5 {
            assert!(
                eventually(20, || shipper.status().dropped_batches > 0).await,
                "the unshipped log grew past its cap: {:?}",
                shipper.status()
            );
        }
    }
    assert!(
        eventually(20, || shipper.status().dropped_batches > 0
            && shipper.status().pending_bytes <= CAP)
        .await,
        "{:?}",
        shipper.status()
    );
    let status = shipper.status();
    assert_eq!(status.status, "degraded", "{status:?}");
    let gap = status.gap.clone().expect("the gap is reported");
    assert!(
        gap.batches > 0 && gap.first_log_id <= gap.last_log_id,
        "{gap:?}"
    );
    assert_eq!(status.max_pending_bytes, CAP);
    // What the data directory keeps for the shipper past its latest gap stays near the cap.
    // The status read above may be from a round before the last appends (failed rounds back
    // off up to 5 s): the next rounds give up more, and move the gap.
    let kept = || {
        let gap = shipper.status().gap.expect("the gap is reported");
        store.ship_backlog(gap.last_log_id, u64::MAX).unwrap()
    };
    assert!(
        eventually(20, || kept().bytes <= CAP + (1 << 10)).await,
        "{:?} {:?}",
        kept(),
        shipper.status()
    );
    // Every acknowledged reading is stored all the same.
    let all = TimeRange {
        from: Timestamp(0),
        to: Timestamp(i64::MAX),
    };
    assert_eq!(
        store.read_range(&well, all).await.unwrap().len() as i64,
        acked
    );

    // The destination is back: shipping goes on after the gap.
    std::fs::remove_file(&root).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let last = store.last_log_batch().0;
    assert!(
        eventually(20, || shipper.status().shipped_log_id == last).await,
        "{:?}",
        shipper.status()
    );
    let listed: Vec<ObjectSpan> = ship::list(&dest)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert!(!listed.is_empty());
    assert!(
        listed[0].first_id > gap.last_log_id,
        "what was given up is not shipped: {listed:?} {gap:?}"
    );

    // A restart (a new shipper on the data directory) still reports the gap...
    shipper.stop().await;
    assert!(dir.path().join(ship::GAP_FILE).exists());
    let options = ship::ShipOptions {
        interval: std::time::Duration::from_millis(50),
        timeout: std::time::Duration::from_secs(5),
        max_pending_bytes: CAP,
    };
    let shipper = ship::Shipper::start(store.clone(), dest.clone(), options);
    let status = shipper.status();
    assert_eq!(status.status, "degraded", "{status:?}");
    let kept = status.gap.expect("the gap is kept across a restart");
    let file: espwatch_store::ShipGap =
        serde_json::from_slice(&std::fs::read(dir.path().join(ship::GAP_FILE)).unwrap()).unwrap();
    assert_eq!(
        (kept.first_log_id, kept.last_log_id),
        (file.first_id, file.last_id)
    );
    assert!(kept.last_log_id >= gap.last_log_id, "{kept:?} {gap:?}");
    // ... until a base backup into the chain is taken after it.
    let (from, to) = (dir.path().to_owned(), root.clone());
    tokio::task::spawn_blocking(move || {
        espwatch_store::embedded::incremental::backup_chain(&from, &to)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        eventually(20, || shipper.status().gap.is_none()).await,
        "{:?}",
        shipper.status()
    );
    assert!(!dir.path().join(ship::GAP_FILE).exists());
    shipper.stop().await;
    store.close().await.unwrap();
}
