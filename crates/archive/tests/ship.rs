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
