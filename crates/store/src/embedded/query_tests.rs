//! Bucketed queries use a window's rollup exactly when it is valid.

use espwatch_core::{
    Agg, Field, Measurements, Reading, TelemetryQuery, TimeRange, Timestamp, WellId,
};
use rusqlite::params;

use super::{EmbeddedOptions, EmbeddedStore, fleet_rollup, rollup, schema};
use crate::{AppendOptions, FleetQuery, Store};

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

/// Fleet aggregates use a window's fleet rollup exactly when it is valid, and a checkpoint
/// that seals late readings into a closed window builds it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_fleet_rollup_answers_and_a_stale_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let wells = [WellId::parse("A-1").unwrap(), WellId::parse("A-2").unwrap()];
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let readings: Vec<Reading> = wells
        .iter()
        .flat_map(|w| (0..2 * 1440).map(|m| reading(w, m, 50.0)))
        .collect();
    store
        .append(readings, AppendOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        store.checkpoint().await.unwrap();
    }
    let one = daily_max(&wells[0]);
    let daily_max = FleetQuery {
        wells: Vec::new(),
        range: one.range,
        fields: one.fields,
        step_micros: 1440 * MINUTE,
        agg: Agg::Max,
    };
    let max = |s: espwatch_core::Series| s.columns[0].1.clone();
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(50.0); 2]
    );
    let conn = schema::open_writer(&dir.path().join(schema::DB_FILE)).unwrap();
    let row = |conn: &rusqlite::Connection| -> (i64, Vec<u8>) {
        conn.query_row(
            "SELECT readings, data FROM fleet_rollups WHERE window_start = ?1",
            [T0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    // Every window has its row.
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM fleet_rollups", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 12);
    let (readings, data) = row(&conn);
    assert_eq!(readings, 2 * 240);

    // A row saying 99 somewhere: the answer shows it, so the row is what was read.
    let mut pieces = fleet_rollup::decode(&data).unwrap();
    pieces[3].channels[Field::FrequencyHz.index()].max = 99.0;
    conn.execute(
        "UPDATE fleet_rollups SET data = ?2 WHERE window_start = ?1",
        params![T0, fleet_rollup::encode(&pieces)],
    )
    .unwrap();
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(99.0), Some(50.0)]
    );
    // Made from another reading count: not used.
    conn.execute(
        "UPDATE fleet_rollups SET readings = readings + 1 WHERE window_start = ?1",
        [T0],
    )
    .unwrap();
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(50.0); 2]
    );
    conn.execute(
        "UPDATE fleet_rollups SET readings = readings - 1 WHERE window_start = ?1",
        [T0],
    )
    .unwrap();
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(99.0), Some(50.0)]
    );
    drop(conn);

    // A late reading, unsealed: the row answers for the sealed readings, the reading is added.
    let late = Reading {
        ts: Timestamp(T0 + 30 * 1_000_000),
        ..reading(&wells[1], 0, 60.0)
    };
    store
        .append(vec![late], AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(99.0), Some(50.0)]
    );
    store
        .append(
            vec![Reading {
                ts: Timestamp(T0 + 90 * 1_000_000),
                ..reading(&wells[1], 0, 160.0)
            }],
            AppendOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(160.0), Some(50.0)]
    );
    // Sealed: the checkpoint that seals it builds the row again, from both wells.
    store.checkpoint().await.unwrap();
    let conn = schema::open_writer(&dir.path().join(schema::DB_FILE)).unwrap();
    assert_eq!(row(&conn).0, 2 * 240 + 2);
    drop(conn);
    assert_eq!(
        max(store.fleet_aggregate(&daily_max).await.unwrap()),
        vec![Some(160.0), Some(50.0)]
    );
    store.close().await.unwrap();
}
