//! Bucketed queries use a window's rollup exactly when it is valid.

use espwatch_core::{
    Agg, Field, Measurements, Reading, TelemetryQuery, TimeRange, Timestamp, WellId,
};
use rusqlite::params;

use super::{EmbeddedOptions, EmbeddedStore, rollup, schema};
use crate::{AppendOptions, Store};

const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;

fn reading(well: &WellId, minute: i64, v: f64) -> Reading {
    let mut values = Measurements::empty();
    values.set(Field::FrequencyHz, Some(v));
    Reading {
        well_id: well.clone(),
        ts: Timestamp(T0 + minute * MINUTE),
        values,
    }
}

fn daily_max(well: &WellId) -> TelemetryQuery {
    TelemetryQuery {
        well_id: well.clone(),
        range: TimeRange {
            from: Timestamp(T0),
            to: Timestamp(T0 + 2 * 1440 * MINUTE),
        },
        fields: vec![Field::FrequencyHz],
        step_micros: Some(1440 * MINUTE),
        agg: Agg::Max,
        max_points: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_rollup_answers_and_a_stale_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let w = WellId::parse("R-1").unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let two_days: Vec<Reading> = (0..2 * 1440).map(|m| reading(&w, m, 50.0)).collect();
    store
        .append(two_days, AppendOptions::default())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    let max = |s: espwatch_core::Series| s.columns[0].1.clone();
    assert_eq!(
        max(store.query(&daily_max(&w)).await.unwrap()),
        vec![Some(50.0); 2]
    );

    // Replace the first window's rollup by one made from other values (same count): the
    // answer shows it, so the rollup is what was read.
    let first_window: Vec<_> = (0..240)
        .map(|m| {
            let r = reading(&w, m, if m == 7 { 99.0 } else { 50.0 });
            (r.ts, r.values)
        })
        .collect();
    let conn = schema::open_writer(&dir.path().join(schema::DB_FILE)).unwrap();
    let updated = conn
        .execute(
            "UPDATE rollups SET data = ?2 WHERE well_id = 'R-1' AND window_start = ?1",
            params![T0, rollup::encode(&first_window)],
        )
        .unwrap();
    assert_eq!(updated, 1);
    assert_eq!(
        max(store.query(&daily_max(&w)).await.unwrap()),
        vec![Some(99.0), Some(50.0)]
    );

    // A rollup made from fewer readings than the segment holds is stale: the segment answers.
    conn.execute(
        "UPDATE rollups SET data = ?2 WHERE well_id = 'R-1' AND window_start = ?1",
        params![T0, rollup::encode(&first_window[..100])],
    )
    .unwrap();
    assert_eq!(
        max(store.query(&daily_max(&w)).await.unwrap()),
        vec![Some(50.0); 2]
    );

    // Unsealed readings in a window: raw for that window, whatever its rollup says.
    conn.execute(
        "UPDATE rollups SET data = ?2 WHERE well_id = 'R-1' AND window_start = ?1",
        params![T0, rollup::encode(&first_window)],
    )
    .unwrap();
    drop(conn);
    store
        .append(
            vec![Reading {
                ts: Timestamp(T0 + 30 * 1_000_000),
                ..reading(&w, 0, 60.0)
            }],
            AppendOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        max(store.query(&daily_max(&w)).await.unwrap()),
        vec![Some(60.0), Some(50.0)]
    );
    store.close().await.unwrap();
}
