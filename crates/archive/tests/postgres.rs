//! Retention on PostgreSQL (plain, daily partitions): expired well-days archived, verified,
//! deleted in one checked transaction each, emptied day partitions dropped, rollups trimmed,
//! and restored into recreated partitions.

use std::time::Duration;

use espwatch_archive::{Archive, Policy, restore, run_retention};
use espwatch_core::{FIELD_COUNT, Measurements, Reading, TimeRange, Timestamp, WellId};
use espwatch_store::retention::{DAY_MICROS, day_of};
use espwatch_store::{AppendOptions, Retention, RollupTier, Store, StoreError};
use espwatch_store_postgres::testing::TestDatabase;
use espwatch_store_postgres::{PostgresOptions, PostgresStore};

const MINUTE: i64 = 60_000_000;

fn reading(w: &WellId, ts: i64) -> Reading {
    let mut raw = [f64::NAN; FIELD_COUNT];
    for (c, v) in raw.iter_mut().enumerate() {
        if (ts / MINUTE + c as i64) % 5 != 0 {
            *v = ((ts / MINUTE) % 1000) as f64 * 0.5 + c as f64;
        }
    }
    Reading {
        well_id: w.clone(),
        ts: Timestamp(ts),
        values: Measurements::from_raw(raw),
    }
}

fn range(from: i64, to: i64) -> TimeRange {
    TimeRange {
        from: Timestamp(from),
        to: Timestamp(to),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention_archives_deletes_drops_partitions_and_restores() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let opts = PostgresOptions {
        pool_size: 4,
        rollup_interval: Duration::from_secs(3600),
        ..PostgresOptions::default()
    };
    let store = PostgresStore::open(&db.url, opts).await.unwrap();
    let wells = [
        WellId::parse("PG-1").unwrap(),
        WellId::parse("PG-2").unwrap(),
    ];
    let now = Timestamp(espwatch_archive::target::now_micros());
    let day0 = day_of(now.0 - 60 * DAY_MICROS).from.0;
    let mut readings = Vec::new();
    for w in &wells {
        for i in 0..(2 * 1440) {
            readings.push(reading(w, day0 + i * MINUTE));
        }
        for i in 0..30 {
            readings.push(reading(w, now.0 - 3_600_000_000 + i * MINUTE));
        }
    }
    store
        .append(readings, AppendOptions::default())
        .await
        .unwrap();
    store.refresh_rollups().await.unwrap();
    let original = store
        .read_range(&wells[0], range(day0, day0 + 2 * DAY_MICROS))
        .await
        .unwrap();
    assert_eq!(original.len(), 2880);

    // A delete whose count is not the archived one changes nothing.
    match store
        .delete_raw(&wells[0], range(day0, day0 + DAY_MICROS), 1439)
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store
            .read_range(&wells[0], range(day0, day0 + DAY_MICROS))
            .await
            .unwrap()
            .len(),
        1440
    );

    let archive_dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(archive_dir.path().to_str().unwrap()).unwrap();
    let policy = Policy {
        raw: Some(30 * DAY_MICROS),
        rollups: vec![
            (RollupTier::Minute, 30 * DAY_MICROS),
            (RollupTier::Hour, 365 * DAY_MICROS),
        ],
    };
    let report = run_retention(&store, &store, &archive, &policy, now)
        .await
        .unwrap();
    assert_eq!(report.days_archived, 4, "{report:?}");
    assert_eq!(report.readings_archived, 4 * 1440);
    assert_eq!(
        report.units_dropped, 2,
        "both emptied day partitions dropped"
    );
    // 1-minute rollups of the old days went (each well-minute one row), 1-hour ones stayed.
    let minute = report
        .rollups_deleted
        .iter()
        .find(|(t, _)| *t == RollupTier::Minute)
        .unwrap()
        .1;
    assert_eq!(minute, 4 * 1440);
    let hour = report
        .rollups_deleted
        .iter()
        .find(|(t, _)| *t == RollupTier::Hour)
        .unwrap()
        .1;
    assert_eq!(hour, 0);
    for w in &wells {
        assert!(
            store
                .read_range(w, range(day0, day0 + 2 * DAY_MICROS))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .read_range(w, range(now.0 - 3_600_000_000, now.0))
                .await
                .unwrap()
                .len(),
            30
        );
    }
    assert!(
        store
            .raw_days_before(Timestamp(now.0 - 30 * DAY_MICROS))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(archive.list(None).await.unwrap().len(), 4);

    // Back again, into partitions the writer recreates; values bit for bit.
    let r = restore(
        &store,
        &archive,
        &wells[0],
        range(day0, day0 + 2 * DAY_MICROS),
    )
    .await
    .unwrap();
    assert_eq!((r.files, r.accepted, r.duplicates), (2, 2880, 0));
    let back = store
        .read_range(&wells[0], range(day0, day0 + 2 * DAY_MICROS))
        .await
        .unwrap();
    assert_eq!(back.len(), original.len());
    for (a, b) in back.iter().zip(&original) {
        assert_eq!(a.0, b.0);
        for (x, y) in a.1.raw().iter().zip(b.1.raw()) {
            assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
        }
    }
    let r = restore(
        &store,
        &archive,
        &wells[0],
        range(day0, day0 + 2 * DAY_MICROS),
    )
    .await
    .unwrap();
    assert_eq!((r.accepted, r.duplicates), (0, 2880));
    store.close().await.unwrap();
    drop(db);
}
