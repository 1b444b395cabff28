//! Data directories written by earlier releases (version 1 segments) keep working: read as
//! they are, converted at the next checkpoints (closed windows, a bounded number each time) or
//! all at once by `compact`, with every reading unchanged throughout.

use std::path::Path;

use espwatch_core::{Field, Measurements, Point, Reading, TimeRange, Timestamp, WellId};
use rusqlite::params;

use super::check;
use super::codec;
use super::{EmbeddedOptions, EmbeddedStore, schema};
use crate::{AppendOptions, Store};

const T0: i64 = 1_767_225_600_000_000;
const HOUR: i64 = 3_600_000_000;

fn gauge(i: i64) -> Measurements {
    let mut m = Measurements::empty();
    m.set(Field::FrequencyHz, Some(((5000 + i % 7) as f64) / 100.0));
    m.set(
        Field::IntakePressurePsi,
        Some(((8500 + i % 13) as f64) / 10.0),
    );
    // A float32-noise channel, missing now and then.
    if i % 5 != 0 {
        m.set(
            Field::MotorTempC,
            Some(((120.0 + (i as f64 * 0.1).sin()) as f32) as f64),
        );
    }
    m
}

fn readings(well: &WellId, from: i64, n: i64) -> Vec<Reading> {
    (from..from + n)
        .map(|i| Reading {
            well_id: well.clone(),
            ts: Timestamp(T0 + i * 60_000_000),
            values: gauge(i),
        })
        .collect()
}

fn all() -> TimeRange {
    TimeRange {
        from: Timestamp(i64::MIN),
        to: Timestamp(i64::MAX),
    }
}

fn same(a: &[Point], b: &[Point]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.0 == y.0
                && x.1
                    .raw()
                    .iter()
                    .zip(y.1.raw())
                    .all(|(u, v)| (u.is_nan() && v.is_nan()) || u.to_bits() == v.to_bits())
        })
}

/// Rewrites every segment of a closed data directory in the version 1 format, as an earlier
/// release left it (without segment checksums).
fn downgrade(dir: &Path) -> usize {
    drop_checksums(dir);
    let conn = schema::open_writer(&dir.join(schema::DB_FILE)).unwrap();
    let rows: Vec<(String, i64, Vec<u8>)> = conn
        .prepare("SELECT well_id, window_start, data FROM segments")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (well, ws, data) in &rows {
        let points = codec::decode_segment(data).unwrap();
        conn.execute(
            "UPDATE segments SET data = ?3 WHERE well_id = ?1 AND window_start = ?2",
            params![well, ws, codec::encode_segment_v1(&points)],
        )
        .unwrap();
    }
    rows.len()
}

/// Removes the `segments.checksum` column of a closed data directory, as releases before
/// segment checksums left it.
fn drop_checksums(dir: &Path) {
    let conn = schema::open_writer(&dir.join(schema::DB_FILE)).unwrap();
    if schema::has_segment_checksums(&conn).unwrap() {
        conn.execute_batch("ALTER TABLE segments DROP COLUMN checksum")
            .unwrap();
    }
}

/// `(window_start, checksum recorded)` of every segment.
fn checksummed(dir: &Path) -> Vec<(i64, bool)> {
    let conn = schema::open_reader(&dir.join(schema::DB_FILE)).unwrap();
    conn.prepare("SELECT window_start, checksum IS NOT NULL FROM segments ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Issue 20: a data directory of a release before segment checksums (no `checksum` column)
/// is verified by decoding, backs up and restores; opened, it gets the column, the next seal
/// of a window records that window's checksum, `compact` records the rest, and from then on
/// every segment is verified by its checksum, which catches a row changed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_stores_get_segment_checksums_and_verify_throughout() {
    use super::backup;
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        window_micros: HOUR,
        ..EmbeddedOptions::default()
    };
    let w = WellId::parse("SUM-1").unwrap();
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    store
        .append(readings(&w, 0, 600), AppendOptions::default())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    drop_checksums(dir.path());

    // As the older release left it: every segment decoded, by a backup and its restore too.
    let (report, n) = check::verify_copy(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.segments, report.checksummed, n), (10, 0, 600));
    let dest = tempfile::tempdir().unwrap();
    let made = backup::backup(dir.path(), &dest.path().join("b")).unwrap();
    assert_eq!(
        made.manifest.verified,
        Some(backup::Verified {
            segments_by_checksum: 0,
            segments_decoded: 10,
            log_batches: report.log_batches,
        })
    );
    let back = backup::restore(&dest.path().join("b"), &dest.path().join("r")).unwrap();
    assert_eq!(back.manifest.readings, 600);

    // Opened: the column is added, the old segments read as they are.
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    let written = store.read_range(&w, all()).await.unwrap();
    assert_eq!(written.len(), 600);
    // A late reading in the third window: its seal rewrites that window with a checksum.
    let late = Reading {
        well_id: w.clone(),
        ts: Timestamp(T0 + 150 * 60_000_000 + 30_000_000),
        values: gauge(150),
    };
    store
        .append(vec![late], AppendOptions::default())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let sums = checksummed(dir.path());
    assert_eq!(sums.len(), 10);
    assert!(sums[2].1, "{sums:?}");
    let without = sums.iter().filter(|s| !s.1).count();
    assert!(without > 0, "{sums:?}");
    let (report, n) = check::verify_copy(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.segments - report.checksummed, without as u64);
    assert_eq!(n, 601);

    // Compaction records the rest; every segment is then verified by its checksum.
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    store.compact().await.unwrap();
    assert_eq!(store.read_range(&w, all()).await.unwrap().len(), 601);
    store.close().await.unwrap();
    drop(store);
    assert!(checksummed(dir.path()).iter().all(|s| s.1));
    let (report, n) = check::verify_copy(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.segments, report.checksummed, n), (10, 10, 601));

    // A row changed afterwards (its count) no longer matches, and is named.
    {
        let conn = schema::open_writer(&dir.path().join(schema::DB_FILE)).unwrap();
        conn.execute(
            "UPDATE segments SET count = count + 1 WHERE window_start = ?1",
            [sums[4].0],
        )
        .unwrap();
    }
    let (report, _) = check::verify_copy(dir.path()).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert!(
        report.damaged[0].contains(&format!("segment (SUM-1, {}): does not match", sums[4].0)),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_are_read_then_converted() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        window_micros: HOUR,
        ..EmbeddedOptions::default()
    };
    let w = WellId::parse("OLD-1").unwrap();
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    // Ten hours at 1-minute steps: ten windows of 60 readings.
    store
        .append(readings(&w, 0, 600), AppendOptions::default())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    let written = store.read_range(&w, all()).await.unwrap();
    assert_eq!(written.len(), 600);
    store.close().await.unwrap();
    drop(store);
    assert_eq!(downgrade(dir.path()), 10);
    let before = check::storage(dir.path()).unwrap();
    assert_eq!((before.segments, before.compact_segments), (10, 0));

    // Read as they are.
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    assert!(same(&store.read_range(&w, all()).await.unwrap(), &written));
    // The next seal rewrites the closed windows compact (the newest stays fast: still open).
    store
        .append(readings(&w, 600, 30), AppendOptions::default())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    let mut expected = written.clone();
    expected.extend(readings(&w, 600, 30).into_iter().map(|r| (r.ts, r.values)));
    assert!(same(&store.read_range(&w, all()).await.unwrap(), &expected));
    store.close().await.unwrap();
    drop(store);
    let after_seal = check::storage(dir.path()).unwrap();
    assert_eq!((after_seal.segments, after_seal.compact_segments), (11, 10));
    assert_eq!(after_seal.readings, 630);

    // Compaction converts the rest, and the store reopens with every reading unchanged.
    downgrade(dir.path());
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    let report = store.compact().await.unwrap();
    assert_eq!(report.segments_rewritten, 11);
    assert!(report.bytes_after <= report.bytes_before);
    assert!(same(&store.read_range(&w, all()).await.unwrap(), &expected));
    // Duplicates are still recognised against the converted segments.
    let again = store
        .append(readings(&w, 100, 5), AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(again.count(crate::ReadingOutcome::Duplicate), 5);
    store.close().await.unwrap();
    drop(store);
    let compacted = check::storage(dir.path()).unwrap();
    assert_eq!((compacted.segments, compacted.compact_segments), (11, 11));
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert!(same(&store.read_range(&w, all()).await.unwrap(), &expected));
    assert!(check::check(dir.path()).unwrap().is_clean());
    store.close().await.unwrap();
}
