//! Backend-independent conformance suite for [`Store`].
//!
//! Every backend runs the same cases through a [`Harness`]; instantiate them with
//! `conformance_tests!(make_harness_expression);` inside a test module.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use espwatch_core::series::evaluate;
use espwatch_core::{
    Agg, Field, Measurements, Point, Reading, Series, TelemetryQuery, TimeRange, Timestamp, WellId,
    WellMeta,
};
use espwatch_store::{
    Alarm, AlarmFilter, AlarmKey, AlarmState, AlarmStore, AppendOptions, FleetQuery,
    FleetTotalsQuery, NewAlarm, ReadingOutcome, Store, StoreError, Totals, WellTotals, fleet_total,
};

use ReadingOutcome::{Accepted, Duplicate, UnknownWell};

/// How the suite reaches a backend.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Opens a store over this harness's storage (the same storage on every call).
    async fn open(&self) -> Arc<dyn Store>;
    /// Seals pending data the way the backend's own maintenance would (no-op if meaningless).
    async fn seal(&self, store: &Arc<dyn Store>);
    /// Abandons a store without `close`, as a crash would (as close to one as in-process allows).
    async fn abandon(&self, store: Arc<dyn Store>);
    /// The alarm store of the store most recently opened.
    fn alarms(&self) -> Arc<dyn AlarmStore>;
}

/// Generates one `#[tokio::test]` per conformance case for the harness built by `$make`.
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance::conformance_tests!(@cases $make;
            accepted_and_duplicates,
            first_value_wins,
            duplicates_against_sealed_data,
            late_data_into_sealed_window,
            unknown_well_without_auto_register,
            auto_registration_creates_record,
            read_range_is_half_open_and_ordered,
            survives_close_and_reopen,
            survives_abandon_and_reopen,
            concurrent_appends_all_acknowledged,
            delete_well_removes_everything,
            create_and_update_semantics,
            latest_per_well,
            closed_store_is_unavailable,
            health_is_ok,
            random_workload_matches_model,
            bucketed_queries_match_raw_evaluation,
            fleet_queries_match_each_wells_raw_evaluation,
            fleet_totals_match_raw_computation,
            fleet_aggregates_match_the_raw_computation,
            alarm_pages_follow_one_stable_order_without_gaps_or_repeats,
            well_directives_keep_the_latest_retrain_and_merge_transient_marks,
            alarms_active_in_a_range_are_those_whose_episodes_overlap_it,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

// ---------------------------------------------------------------------------------------------
// Helpers

/// 2026-01-01T00:00:00Z, so test timestamps are realistic.
pub const T0: i64 = 1_767_225_600_000_000;
pub const SEC: i64 = 1_000_000;

pub fn well(s: &str) -> WellId {
    WellId::parse(s).unwrap()
}

pub fn ts(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * SEC)
}

pub fn values(v: f64) -> Measurements {
    let mut m = Measurements::empty();
    m.set(Field::FrequencyHz, Some(v));
    m.set(Field::IntakePressurePsi, Some(1000.0 + v));
    m
}

pub fn reading(w: &str, secs: i64, v: f64) -> Reading {
    Reading {
        well_id: well(w),
        ts: ts(secs),
        values: values(v),
    }
}

pub fn auto() -> AppendOptions {
    AppendOptions {
        auto_register_wells: true,
    }
}

pub fn strict() -> AppendOptions {
    AppendOptions {
        auto_register_wells: false,
    }
}

pub fn all_time() -> TimeRange {
    TimeRange {
        from: Timestamp(0),
        to: Timestamp(i64::MAX),
    }
}

pub fn range(from_secs: i64, to_secs: i64) -> TimeRange {
    TimeRange {
        from: ts(from_secs),
        to: ts(to_secs),
    }
}

/// (seconds since T0, frequency) of each point, for compact assertions.
pub fn summary(points: &[Point]) -> Vec<(i64, f64)> {
    points
        .iter()
        .map(|(t, m)| {
            (
                (t.0 - T0) / SEC,
                m.get(Field::FrequencyHz).unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// Equality with missing channels equal (`Measurements: PartialEq` compares NaN slots as
/// unequal, so `==` is false for any reading with a missing channel).
pub fn same_point(a: &Point, b: &Point) -> bool {
    a.0 == b.0
        && a.1
            .raw()
            .iter()
            .zip(b.1.raw())
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
}

pub fn meta(id: &str, name: &str) -> WellMeta {
    let mut m = WellMeta::minimal(&well(id));
    m.name = Some(name.to_owned());
    m
}

async fn append(store: &Arc<dyn Store>, rs: Vec<Reading>) -> Vec<ReadingOutcome> {
    store.append(rs, auto()).await.unwrap().outcomes
}

// ---------------------------------------------------------------------------------------------
// Cases

pub async fn accepted_and_duplicates(h: &impl Harness) {
    let s = h.open().await;
    let out = append(
        &s,
        vec![
            reading("W1", 0, 1.0),
            reading("W1", 10, 2.0),
            reading("W1", 0, 3.0),
        ],
    )
    .await;
    assert_eq!(out, vec![Accepted, Accepted, Duplicate]);
    let out = append(
        &s,
        vec![
            reading("W1", 10, 4.0),
            reading("W1", 20, 5.0),
            reading("W2", 10, 6.0),
        ],
    )
    .await;
    assert_eq!(out, vec![Duplicate, Accepted, Accepted]);
    let got = s.read_range(&well("W1"), all_time()).await.unwrap();
    assert_eq!(summary(&got), vec![(0, 1.0), (10, 2.0), (20, 5.0)]);
    s.close().await.unwrap();
}

pub async fn first_value_wins(h: &impl Harness) {
    let s = h.open().await;
    append(&s, vec![reading("W1", 5, 1.0), reading("W1", 5, 2.0)]).await;
    append(&s, vec![reading("W1", 5, 3.0)]).await;
    let got = s.read_range(&well("W1"), all_time()).await.unwrap();
    assert_eq!(summary(&got), vec![(5, 1.0)]);
    assert!(same_point(&got[0], &(ts(5), values(1.0))));
    s.close().await.unwrap();
}

pub async fn duplicates_against_sealed_data(h: &impl Harness) {
    let s = h.open().await;
    let first: Vec<Reading> = (0..100).map(|i| reading("W1", i * 10, i as f64)).collect();
    assert!(append(&s, first).await.iter().all(|o| *o == Accepted));
    h.seal(&s).await;
    // Every one of them again, newest first, with different values: all duplicates.
    let again: Vec<Reading> = (0..100)
        .rev()
        .map(|i| reading("W1", i * 10, -1.0))
        .collect();
    assert!(append(&s, again).await.iter().all(|o| *o == Duplicate));
    // In between the sealed ones: new.
    let out = append(&s, vec![reading("W1", 5, 0.5), reading("W1", 995, 99.5)]).await;
    assert_eq!(out, vec![Accepted, Accepted]);
    let got = s.read_range(&well("W1"), range(0, 20)).await.unwrap();
    assert_eq!(summary(&got), vec![(0, 0.0), (5, 0.5), (10, 1.0)]);
    assert_eq!(
        s.read_range(&well("W1"), all_time()).await.unwrap().len(),
        102
    );
    s.close().await.unwrap();
}

pub async fn late_data_into_sealed_window(h: &impl Harness) {
    let s = h.open().await;
    // Two days of hourly data, sealed.
    let hourly: Vec<Reading> = (0..48).map(|i| reading("W1", i * 3600, i as f64)).collect();
    append(&s, hourly).await;
    h.seal(&s).await;
    // Late readings inside the sealed span, out of order, plus a duplicate of a sealed one.
    let late = vec![
        reading("W1", 30 * 3600 + 60, 30.5),
        reading("W1", 2 * 3600 + 60, 2.5),
        reading("W1", 30 * 3600, -1.0),
    ];
    assert_eq!(append(&s, late).await, vec![Accepted, Accepted, Duplicate]);
    let check = |got: Vec<Point>| {
        let sum = summary(&got);
        assert_eq!(sum.len(), 50);
        assert!(sum.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
        assert!(sum.contains(&(2 * 3600 + 60, 2.5)));
        assert!(sum.contains(&(30 * 3600, 30.0)));
    };
    check(s.read_range(&well("W1"), all_time()).await.unwrap());
    // Seal again: late data merges into existing windows.
    h.seal(&s).await;
    check(s.read_range(&well("W1"), all_time()).await.unwrap());
    assert_eq!(
        append(&s, vec![reading("W1", 2 * 3600 + 60, 9.0)]).await,
        vec![Duplicate]
    );
    s.close().await.unwrap();
}

pub async fn unknown_well_without_auto_register(h: &impl Harness) {
    let s = h.open().await;
    s.create_well(meta("KNOWN", "Known")).await.unwrap();
    let out = s
        .append(
            vec![
                reading("KNOWN", 0, 1.0),
                reading("NEW", 0, 2.0),
                reading("KNOWN", 0, 3.0),
            ],
            strict(),
        )
        .await
        .unwrap();
    assert_eq!(out.outcomes, vec![Accepted, UnknownWell, Duplicate]);
    assert!(out.registered_wells.is_empty());
    assert!(s.get_well(&well("NEW")).await.unwrap().is_none());
    assert!(
        s.read_range(&well("NEW"), all_time())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.list_wells().await.unwrap().len(), 1);
    s.close().await.unwrap();
}

pub async fn auto_registration_creates_record(h: &impl Harness) {
    let s = h.open().await;
    let out = s
        .append(
            vec![
                reading("A", 0, 1.0),
                reading("A", 10, 1.0),
                reading("B", 0, 1.0),
            ],
            auto(),
        )
        .await
        .unwrap();
    assert_eq!(out.registered_wells, vec![well("A"), well("B")]);
    let a = s.get_well(&well("A")).await.unwrap().unwrap();
    assert!(a.auto_registered);
    assert_eq!(a.meta, WellMeta::minimal(&well("A")));
    // Known now: no second registration.
    let out = s.append(vec![reading("A", 20, 1.0)], auto()).await.unwrap();
    assert!(out.registered_wells.is_empty());
    // Creating it for real replaces the placeholder and keeps its creation time.
    let created = s.create_well(meta("A", "Alpha")).await.unwrap();
    assert!(!created.auto_registered);
    assert_eq!(created.created_at, a.created_at);
    assert_eq!(created.meta.name.as_deref(), Some("Alpha"));
    // Telemetry is untouched by that.
    assert_eq!(s.read_range(&well("A"), all_time()).await.unwrap().len(), 3);
    // Now it is a real well: creating it again conflicts.
    assert!(matches!(
        s.create_well(meta("A", "Again")).await,
        Err(StoreError::Conflict(_))
    ));
    let ids: Vec<WellId> = s
        .list_wells()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.meta.well_id)
        .collect();
    assert_eq!(ids, vec![well("A"), well("B")]);
    s.close().await.unwrap();
}

pub async fn read_range_is_half_open_and_ordered(h: &impl Harness) {
    let s = h.open().await;
    let shuffled = [50, 10, 40, 0, 30, 20, 60];
    append(
        &s,
        shuffled
            .iter()
            .map(|&t| reading("W1", t, t as f64))
            .collect(),
    )
    .await;
    let w = well("W1");
    let secs = |got: Vec<Point>| summary(&got).into_iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(
        secs(s.read_range(&w, all_time()).await.unwrap()),
        vec![0, 10, 20, 30, 40, 50, 60]
    );
    assert_eq!(
        secs(s.read_range(&w, range(10, 40)).await.unwrap()),
        vec![10, 20, 30]
    );
    assert_eq!(
        secs(s.read_range(&w, range(11, 40)).await.unwrap()),
        vec![20, 30]
    );
    assert_eq!(
        secs(s.read_range(&w, range(10, 11)).await.unwrap()),
        vec![10]
    );
    assert!(s.read_range(&w, range(10, 10)).await.unwrap().is_empty());
    assert!(s.read_range(&w, range(40, 10)).await.unwrap().is_empty());
    assert!(s.read_range(&w, range(61, 1000)).await.unwrap().is_empty());
    assert!(
        s.read_range(&well("NOPE"), all_time())
            .await
            .unwrap()
            .is_empty()
    );
    h.seal(&s).await;
    assert_eq!(
        secs(s.read_range(&w, range(10, 40)).await.unwrap()),
        vec![10, 20, 30]
    );
    assert_eq!(
        secs(s.read_range(&w, range(11, 61)).await.unwrap()),
        vec![20, 30, 40, 50, 60]
    );
    s.close().await.unwrap();
}

async fn fill(s: &Arc<dyn Store>, w: &str, from: i64, n: i64) {
    let rs: Vec<Reading> = (from..from + n)
        .map(|i| reading(w, i * 10, i as f64 * 0.1))
        .collect();
    assert!(append(s, rs).await.iter().all(|o| *o == Accepted));
}

async fn assert_filled(s: &Arc<dyn Store>, w: &str, n: i64) {
    let got = s.read_range(&well(w), all_time()).await.unwrap();
    let want: Vec<(i64, f64)> = (0..n)
        .map(|i| {
            (
                i * 10,
                values(i as f64 * 0.1).get(Field::FrequencyHz).unwrap(),
            )
        })
        .collect();
    assert_eq!(summary(&got), want);
    for (_, m) in &got {
        let f = m.get(Field::FrequencyHz).unwrap();
        assert_eq!(m.get(Field::IntakePressurePsi), Some(1000.0 + f));
        assert_eq!(m.get(Field::MotorCurrentA), None);
    }
}

pub async fn survives_close_and_reopen(h: &impl Harness) {
    let s = h.open().await;
    fill(&s, "W1", 0, 500).await;
    s.create_well(meta("W2", "Two")).await.unwrap();
    s.close().await.unwrap();
    let s = h.open().await;
    assert_filled(&s, "W1", 500).await;
    assert_eq!(
        s.get_well(&well("W2"))
            .await
            .unwrap()
            .unwrap()
            .meta
            .name
            .as_deref(),
        Some("Two")
    );
    // Duplicates are still recognised, new data still accepted.
    assert_eq!(
        append(&s, vec![reading("W1", 0, 9.0)]).await,
        vec![Duplicate]
    );
    fill(&s, "W1", 500, 500).await;
    s.close().await.unwrap();
    let s = h.open().await;
    assert_filled(&s, "W1", 1000).await;
    assert_eq!(s.latest().await.unwrap()[0].point.0, ts(9990));
    s.close().await.unwrap();
}

pub async fn survives_abandon_and_reopen(h: &impl Harness) {
    // Before any seal: everything is recovered from the log.
    let s = h.open().await;
    fill(&s, "W1", 0, 300).await;
    h.abandon(s).await;
    let s = h.open().await;
    assert_filled(&s, "W1", 300).await;
    // Sealed part plus an unsealed part.
    h.seal(&s).await;
    fill(&s, "W1", 300, 300).await;
    append(&s, vec![reading("W1", 5, 0.5)]).await; // late, into sealed data
    h.abandon(s).await;
    let s = h.open().await;
    let got = s.read_range(&well("W1"), all_time()).await.unwrap();
    assert_eq!(got.len(), 601, "nothing lost, nothing counted twice");
    assert_eq!(
        append(&s, vec![reading("W1", 5, 9.0), reading("W1", 5990, 9.0)]).await,
        vec![Duplicate, Duplicate]
    );
    s.close().await.unwrap();
}

pub async fn concurrent_appends_all_acknowledged(h: &impl Harness) {
    let s = h.open().await;
    let tasks = 32;
    let per_task = 20;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut accepted = 0;
            for i in 0..per_task {
                // Tasks overlap pairwise on well and time, so some readings collide.
                let w = format!("W{}", t / 2);
                let rs: Vec<Reading> = (0..10)
                    .map(|k| reading(&w, i * 100 + k * 10, t as f64))
                    .collect();
                let out = s.append(rs, auto()).await.unwrap();
                accepted += out.count(Accepted);
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for hd in handles {
        accepted += hd.await.unwrap();
    }
    // Each of the 16 wells holds 20 * 10 distinct timestamps, each accepted exactly once.
    assert_eq!(accepted, 16 * 200);
    for w in 0..16 {
        let got = s
            .read_range(&well(&format!("W{w}")), all_time())
            .await
            .unwrap();
        assert_eq!(got.len(), 200);
    }
    s.close().await.unwrap();
}

pub async fn delete_well_removes_everything(h: &impl Harness) {
    let s = h.open().await;
    fill(&s, "GONE", 0, 200).await;
    fill(&s, "STAYS", 0, 200).await;
    h.seal(&s).await;
    fill(&s, "GONE", 200, 50).await; // unsealed part too
    fill(&s, "STAYS", 200, 50).await;
    assert!(s.delete_well(&well("GONE")).await.unwrap());
    assert!(!s.delete_well(&well("GONE")).await.unwrap());
    assert!(!s.delete_well(&well("NEVER")).await.unwrap());
    assert!(s.get_well(&well("GONE")).await.unwrap().is_none());
    assert!(
        s.read_range(&well("GONE"), all_time())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.latest()
            .await
            .unwrap()
            .iter()
            .all(|l| l.well_id != well("GONE"))
    );
    assert_filled(&s, "STAYS", 250).await;
    s.close().await.unwrap();
    // Still gone after reopening (not resurrected from a log), and the id is free again.
    let s = h.open().await;
    assert!(s.get_well(&well("GONE")).await.unwrap().is_none());
    assert!(
        s.read_range(&well("GONE"), all_time())
            .await
            .unwrap()
            .is_empty()
    );
    assert_filled(&s, "STAYS", 250).await;
    assert_eq!(
        append(&s, vec![reading("GONE", 0, 1.0)]).await,
        vec![Accepted]
    );
    assert_eq!(
        s.read_range(&well("GONE"), all_time()).await.unwrap().len(),
        1
    );
    s.close().await.unwrap();
}

pub async fn create_and_update_semantics(h: &impl Harness) {
    let s = h.open().await;
    assert!(s.update_well(meta("W1", "x")).await.unwrap().is_none());
    let created = s.create_well(meta("W1", "First")).await.unwrap();
    assert!(!created.auto_registered);
    assert_eq!(created.created_at, created.updated_at);
    assert!(matches!(
        s.create_well(meta("W1", "Second")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_well(&well("W1"))
            .await
            .unwrap()
            .unwrap()
            .meta
            .name
            .as_deref(),
        Some("First")
    );
    let updated = s.update_well(meta("W1", "Renamed")).await.unwrap().unwrap();
    assert_eq!(updated.meta.name.as_deref(), Some("Renamed"));
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(s.get_well(&well("W1")).await.unwrap().unwrap(), updated);
    // An auto-registered well updated by hand is no longer a placeholder.
    append(&s, vec![reading("AUTO", 0, 1.0)]).await;
    let upd = s
        .update_well(meta("AUTO", "Now real"))
        .await
        .unwrap()
        .unwrap();
    assert!(!upd.auto_registered);
    assert!(matches!(
        s.create_well(meta("AUTO", "x")).await,
        Err(StoreError::Conflict(_))
    ));
    s.close().await.unwrap();
    let s = h.open().await;
    assert_eq!(s.get_well(&well("W1")).await.unwrap().unwrap(), updated);
    assert_eq!(s.get_well(&well("AUTO")).await.unwrap().unwrap(), upd);
    s.close().await.unwrap();
}

pub async fn latest_per_well(h: &impl Harness) {
    let s = h.open().await;
    assert!(s.latest().await.unwrap().is_empty());
    s.create_well(meta("EMPTY", "no data")).await.unwrap();
    append(
        &s,
        vec![
            reading("A", 10, 1.0),
            reading("A", 30, 3.0),
            reading("B", 5, 5.0),
        ],
    )
    .await;
    append(&s, vec![reading("A", 20, 2.0)]).await; // older: not the latest
    let check = |l: Vec<espwatch_store::LatestReading>| {
        assert_eq!(l.len(), 2);
        let a = l.iter().find(|x| x.well_id == well("A")).unwrap();
        assert!(same_point(&a.point, &(ts(30), values(3.0))), "{a:?}");
        let b = l.iter().find(|x| x.well_id == well("B")).unwrap();
        assert!(same_point(&b.point, &(ts(5), values(5.0))), "{b:?}");
    };
    check(s.latest().await.unwrap());
    h.seal(&s).await;
    check(s.latest().await.unwrap());
    s.close().await.unwrap();
    let s = h.open().await;
    check(s.latest().await.unwrap());
    append(&s, vec![reading("B", 6, 6.0)]).await;
    let l = s.latest().await.unwrap();
    assert_eq!(
        l.iter().find(|x| x.well_id == well("B")).unwrap().point.0,
        ts(6)
    );
    s.close().await.unwrap();
}

pub async fn closed_store_is_unavailable(h: &impl Harness) {
    let s = h.open().await;
    append(&s, vec![reading("A", 0, 1.0)]).await;
    s.close().await.unwrap();
    let unavailable =
        |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    unavailable(
        s.append(vec![reading("A", 1, 1.0)], auto())
            .await
            .map(|_| ()),
    );
    unavailable(s.read_range(&well("A"), all_time()).await.map(|_| ()));
    unavailable(s.latest().await.map(|_| ()));
    unavailable(s.list_wells().await.map(|_| ()));
    unavailable(s.get_well(&well("A")).await.map(|_| ()));
    unavailable(s.create_well(meta("B", "b")).await.map(|_| ()));
    unavailable(s.stats().await.map(|_| ()));
    let health = s.health().await;
    assert!(!health.read.ok && !health.write.ok);
    drop(s);
    let s = h.open().await;
    assert_eq!(s.read_range(&well("A"), all_time()).await.unwrap().len(), 1);
    s.close().await.unwrap();
}

pub async fn health_is_ok(h: &impl Harness) {
    let s = h.open().await;
    let health = s.health().await;
    assert!(health.read.ok, "{:?}", health.read);
    assert!(health.write.ok, "{:?}", health.write);
    assert!(health.write.latency_ms >= 0.0);
    s.close().await.unwrap();
}

/// A deterministic random workload (late data, duplicates, several wells, seals and
/// reopenings) checked against a plain in-memory model.
pub async fn random_workload_matches_model(h: &impl Harness) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut model: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut s = h.open().await;
    for round in 0..40 {
        let mut batch = Vec::new();
        let mut expect = Vec::new();
        for _ in 0..next(60) + 1 {
            let w = format!("R{}", next(4));
            // Mostly moving forward in time, sometimes far back (across windows).
            let t = if next(5) == 0 {
                next(200_000) as i64
            } else {
                round * 5000 + next(5000) as i64
            };
            let v = next(10_000) as f64 / 10.0;
            let fresh = !model.contains_key(&(w.clone(), t));
            if fresh {
                model.insert((w.clone(), t), v);
            }
            expect.push(if fresh { Accepted } else { Duplicate });
            batch.push(reading(&w, t, v));
        }
        assert_eq!(append(&s, batch).await, expect, "round {round}");
        match next(8) {
            0 => h.seal(&s).await,
            1 => {
                s.close().await.unwrap();
                s = h.open().await;
            }
            2 => {
                h.abandon(s).await;
                s = h.open().await;
            }
            _ => {}
        }
        if round % 10 == 9 {
            for w in 0..4 {
                let name = format!("R{w}");
                let from = next(250_000) as i64;
                let to = from + next(100_000) as i64;
                let got = summary(&s.read_range(&well(&name), range(from, to)).await.unwrap());
                let want: Vec<(i64, f64)> = model
                    .range((name.clone(), from)..(name.clone(), to))
                    .map(|((_, t), v)| (*t, *v))
                    .collect();
                assert_eq!(got, want, "round {round} well {name} {from}..{to}");
            }
        }
    }
    for w in 0..4 {
        let name = format!("R{w}");
        let got = summary(&s.read_range(&well(&name), all_time()).await.unwrap());
        let want: Vec<(i64, f64)> = model
            .range((name.clone(), i64::MIN)..(name.clone(), i64::MAX))
            .map(|((_, t), v)| (*t, *v))
            .collect();
        assert_eq!(got, want);
    }
    s.close().await.unwrap();
}

/// Equal buckets, equal values; `avg` to 1e-9 relative (a backend may add partial sums).
fn assert_same_series(got: &Series, want: &Series, what: &str) {
    assert_eq!(got.ts, want.ts, "{what}: buckets");
    assert_eq!(got.columns.len(), want.columns.len(), "{what}: columns");
    for ((f, a), (g, b)) in got.columns.iter().zip(&want.columns) {
        assert_eq!(f, g);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            match (x, y) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                    "{what}: {f:?}[{i}] {x} vs {y}"
                ),
                _ => assert_eq!(x, y, "{what}: {f:?}[{i}]"),
            }
        }
    }
}

/// Bucketed queries (whatever precomputed aggregates a backend uses) answer exactly what
/// `series::evaluate` answers on the raw points: sealed and unsealed data, late readings into
/// sealed hours, missing channels, readings with no channel at all, partial edge buckets.
pub async fn bucketed_queries_match_raw_evaluation(h: &impl Harness) {
    let s = h.open().await;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // Four days of irregular readings with gaps; channels missing now and then, some
    // readings with none at all; two-decimal values and a few that are not decimal.
    let mut batch = Vec::new();
    let mut t = 0i64;
    while t < 4 * 86_400 {
        let mut m = Measurements::empty();
        if next(4) != 0 {
            m.set(Field::FrequencyHz, Some(next(6000) as f64 / 100.0));
        }
        if next(3) != 0 {
            m.set(Field::MotorCurrentA, Some(next(9000) as f64 / 100.0));
        }
        if next(10) == 0 {
            m.set(Field::IntakePressurePsi, Some(next(1_000_000) as f64 / 7.0));
        }
        batch.push(Reading {
            well_id: well("AGG"),
            ts: ts(t),
            values: m,
        });
        t += 5 + next(120) as i64 + if next(80) == 0 { 7_000 } else { 0 };
    }
    let fields = vec![
        Field::FrequencyHz,
        Field::MotorCurrentA,
        Field::IntakePressurePsi,
        Field::MotorTempC,
    ];
    let check = |s: Arc<dyn Store>, seed: u64, label: &'static str| {
        let fields = fields.clone();
        async move {
            let mut rng = seed;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let all = s.read_range(&well("AGG"), all_time()).await.unwrap();
            let day = 86_400i64;
            for step in [60, 3_600, 7_200, 3 * 3_600, day, 2 * day] {
                for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Last] {
                    let a = next(2 * day as u64) as i64 - 3_600;
                    let b = a + next(3 * day as u64) as i64 + 60;
                    for (a, b) in [(a, b), (-day, 6 * day), (0, 4 * day)] {
                        let query = TelemetryQuery {
                            well_id: well("AGG"),
                            range: TimeRange {
                                from: Timestamp(T0 + a * SEC + 17),
                                to: Timestamp(T0 + b * SEC - 3),
                            },
                            fields: fields.clone(),
                            step_micros: Some(step * SEC),
                            agg,
                            max_points: 2000,
                        };
                        let got = s.query(&query).await.unwrap();
                        assert_same_series(
                            &got,
                            &evaluate(&query, &all),
                            &format!("{label}: step {step} {agg:?} {a}..{b}"),
                        );
                    }
                }
            }
        }
    };
    for chunk in batch.chunks(3000) {
        append(&s, chunk.to_vec()).await;
    }
    check(s.clone(), 1, "unsealed").await;
    h.seal(&s).await;
    check(s.clone(), 2, "sealed").await;
    // Late readings into sealed hours (some in an hour's last second), not yet sealed.
    let late: Vec<Reading> = (0..40)
        .map(|i| reading("AGG", 3 + i * 7_001, 500.0 + i as f64))
        .chain((1..30).map(|h| reading("AGG", h * 3_600 + 3_599, 700.0 + h as f64)))
        .collect();
    append(&s, late).await;
    check(s.clone(), 3, "late data unsealed").await;
    h.seal(&s).await;
    check(s.clone(), 4, "late data sealed").await;
    s.close().await.unwrap();
    let s = h.open().await;
    check(s.clone(), 5, "reopened").await;
    s.close().await.unwrap();
}

/// A fleet query answers, for every well that has readings in the range, what evaluating
/// that well's raw points gives; wells without any are left out; the wells come by id.
pub async fn fleet_queries_match_each_wells_raw_evaluation(h: &impl Harness) {
    let s = h.open().await;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let names = ["F-3", "F-1", "F-4", "F-2"];
    let mut batch = Vec::new();
    for (k, name) in names.iter().enumerate() {
        // F-4 has readings only long before the ranges asked below.
        let (start, end) = if k == 2 {
            (-20 * 86_400, -19 * 86_400)
        } else {
            (0, 3 * 86_400)
        };
        let mut t = start + k as i64 * 7;
        while t < end {
            let mut m = Measurements::empty();
            if next(5) != 0 {
                m.set(Field::IntakePressurePsi, Some(next(300_000) as f64 / 100.0));
            }
            if next(3) != 0 {
                m.set(Field::MotorTempC, Some(next(1500) as f64 / 10.0));
            }
            batch.push(Reading {
                well_id: well(name),
                ts: ts(t),
                values: m,
            });
            t += 10 + next(200) as i64;
        }
    }
    for chunk in batch.chunks(4000) {
        append(&s, chunk.to_vec()).await;
    }
    let fields = vec![Field::IntakePressurePsi, Field::MotorTempC];
    let check = |s: Arc<dyn Store>, label: &'static str| {
        let fields = fields.clone();
        async move {
            let day = 86_400i64;
            for (a, b) in [
                (0, 3 * day),
                (3_600 * 5 + 17, 2 * day + 3_599),
                (100, 2_000),
            ] {
                for step in [60, 3_600, day] {
                    for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Last] {
                        let range = TimeRange {
                            from: ts(a),
                            to: ts(b),
                        };
                        let all = FleetQuery {
                            wells: Vec::new(),
                            range,
                            fields: fields.clone(),
                            step_micros: step * SEC,
                            agg,
                        };
                        let got = s.fleet_query(&all).await.unwrap();
                        let ids: Vec<&str> = got.iter().map(|w| w.well_id.as_str()).collect();
                        assert_eq!(ids, ["F-1", "F-2", "F-3"], "{label}");
                        for w in &got {
                            let points = s.read_range(&w.well_id, range).await.unwrap();
                            let want = evaluate(&all.for_well(w.well_id.clone()), &points);
                            assert_same_series(
                                &w.series,
                                &want,
                                &format!("{label}: {} step {step} {agg:?} {a}..{b}", w.well_id),
                            );
                        }
                        // Named wells: unknown and repeated ones are harmless.
                        let some = FleetQuery {
                            wells: vec![well("F-2"), well("NOPE"), well("F-2"), well("F-4")],
                            ..all.clone()
                        };
                        let got_some = s.fleet_query(&some).await.unwrap();
                        assert_eq!(got_some.len(), 1, "{label}");
                        assert_eq!(got_some[0].well_id, got[1].well_id, "{label}");
                        // Within rounding: a checkpoint between the two queries (the aggressive
                        // harness seals all the time) changes the order an average is summed in.
                        assert_same_series(&got_some[0].series, &got[1].series, label);
                    }
                }
            }
        }
    };
    check(s.clone(), "unsealed").await;
    h.seal(&s).await;
    check(s.clone(), "sealed").await;
    let late: Vec<Reading> = (0..30)
        .map(|i| reading("F-1", 11 + i * 6_007, 900.0 + i as f64))
        .collect();
    append(&s, late).await;
    check(s.clone(), "late data unsealed").await;
    s.close().await.unwrap();
}

fn assert_same_totals(got: &Totals, want: &Totals, what: &str) {
    assert_eq!(got.n, want.n, "{what}: count");
    if want.n > 0 {
        assert_eq!((got.min, got.max), (want.min, want.max), "{what}: min/max");
        assert!(
            (got.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0),
            "{what}: sum {} vs {}",
            got.sum,
            want.sum
        );
    }
}

/// Fleet totals (count, sum, min, max per well and channel over a whole range, whatever
/// rollups a backend reads) equal what the raw points of each well give; the fleet's pooled
/// totals equal those of every raw point; wells without readings in the range are left out;
/// the wells come by id. Sealed and unsealed data, late readings into sealed hours, ranges with
/// and without whole hours, readings missing a channel.
pub async fn fleet_totals_match_raw_computation(h: &impl Harness) {
    let s = h.open().await;
    let mut rng = 0x51_7CC1_B727_220Au64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let names = ["T-3", "T-1", "T-4", "T-2"];
    let mut batch = Vec::new();
    for (k, name) in names.iter().enumerate() {
        // T-4 has readings only long before the ranges asked below.
        let (start, end) = if k == 2 {
            (-20 * 86_400, -19 * 86_400)
        } else {
            (0, 3 * 86_400)
        };
        let mut t = start + k as i64 * 7;
        while t < end {
            let mut m = Measurements::empty();
            if next(5) != 0 {
                m.set(Field::IntakePressurePsi, Some(next(300_000) as f64 / 100.0));
            }
            if next(3) != 0 {
                m.set(Field::MotorTempC, Some(next(1500) as f64 / 10.0));
            }
            if next(12) == 0 {
                m.set(Field::MotorCurrentA, Some(next(1_000_000) as f64 / 7.0));
            }
            batch.push(Reading {
                well_id: well(name),
                ts: ts(t),
                values: m,
            });
            t += 10 + next(200) as i64 + if next(300) == 0 { 9_000 } else { 0 };
        }
    }
    for chunk in batch.chunks(4000) {
        append(&s, chunk.to_vec()).await;
    }
    let fields = vec![
        Field::IntakePressurePsi,
        Field::MotorTempC,
        Field::MotorCurrentA,
        Field::FrequencyHz,
    ];
    let check = |s: Arc<dyn Store>, label: &'static str| {
        let fields = fields.clone();
        async move {
            let day = 86_400i64;
            for (a, b) in [
                (0, 3 * day),
                (day, 2 * day),
                (3_600 * 5 + 17, 2 * day + 3_599),
                (100, 2_000),
                (-day, 10 * day),
            ] {
                let range = TimeRange {
                    from: ts(a),
                    to: ts(b),
                };
                let all = FleetTotalsQuery {
                    wells: Vec::new(),
                    range,
                    fields: fields.clone(),
                };
                let got = s.fleet_totals(&all).await.unwrap();
                let ids: Vec<&str> = got.iter().map(|w| w.well_id.as_str()).collect();
                assert_eq!(ids, ["T-1", "T-2", "T-3"], "{label} {a}..{b}");
                let mut every = Vec::new();
                for w in &got {
                    let points = s.read_range(&w.well_id, range).await.unwrap();
                    let want = WellTotals::of_points(w.well_id.clone(), &points, &fields);
                    let what = format!("{label}: {} {a}..{b}", w.well_id);
                    assert_eq!(w.readings, want.readings, "{what}: readings");
                    assert_eq!(w.channels.len(), fields.len(), "{what}");
                    for (k, f) in fields.iter().enumerate() {
                        assert_same_totals(
                            &w.channels[k],
                            &want.channels[k],
                            &format!("{what} {f:?}"),
                        );
                    }
                    every.extend(points);
                }
                for (k, f) in fields.iter().enumerate() {
                    assert_same_totals(
                        &fleet_total(&got, k),
                        &Totals::of_points(&every, *f),
                        &format!("{label}: fleet {f:?} {a}..{b}"),
                    );
                }
                // Named wells: unknown, repeated and silent ones are harmless.
                let some = FleetTotalsQuery {
                    wells: vec![well("T-2"), well("NOPE"), well("T-2"), well("T-4")],
                    ..all.clone()
                };
                let got_some = s.fleet_totals(&some).await.unwrap();
                assert_eq!(got_some.len(), 1, "{label}");
                assert_eq!(got_some[0].well_id, got[1].well_id, "{label}");
                assert_eq!(got_some[0].readings, got[1].readings, "{label}");
                for k in 0..fields.len() {
                    assert_same_totals(&got_some[0].channels[k], &got[1].channels[k], label);
                }
            }
            // An empty range has no wells.
            let empty = FleetTotalsQuery {
                wells: Vec::new(),
                range: range(day, day),
                fields: fields.clone(),
            };
            assert!(s.fleet_totals(&empty).await.unwrap().is_empty(), "{label}");
        }
    };
    check(s.clone(), "unsealed").await;
    h.seal(&s).await;
    check(s.clone(), "sealed").await;
    // Late readings into sealed hours (some in an hour's last second), not yet sealed.
    let late: Vec<Reading> = (0..30)
        .map(|i| reading("T-1", 11 + i * 6_007, 900.0 + i as f64))
        .chain((1..20).map(|h| reading("T-3", h * 3_600 + 3_599, 700.0 + h as f64)))
        .collect();
    append(&s, late).await;
    check(s.clone(), "late data unsealed").await;
    h.seal(&s).await;
    check(s.clone(), "late data sealed").await;
    s.close().await.unwrap();
    let s = h.open().await;
    check(s.clone(), "reopened").await;
    s.close().await.unwrap();
}

/// A fleet aggregate answers, per bucket, what evaluating every asked well's raw readings as
/// one series gives (well by well in id order, then stably by time): sealed and unsealed
/// data, late readings into sealed windows, a deleted well, a well deleted and sent other
/// values at the same timestamps, a reopen; every well or some named ones.
pub async fn fleet_aggregates_match_the_raw_computation(h: &impl Harness) {
    let s = h.open().await;
    let mut rng = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let day = 86_400i64;
    // Readings of `name` from `start` to `end`, values shifted by `shift`.
    let mut readings = |name: &str, (start, end): (i64, i64), shift: f64| {
        let mut out = Vec::new();
        let mut t = start;
        while t < end {
            let mut m = Measurements::empty();
            if next(5) != 0 {
                m.set(
                    Field::IntakePressurePsi,
                    Some(shift + next(300_000) as f64 / 100.0),
                );
            }
            if next(3) != 0 {
                m.set(Field::MotorTempC, Some(shift + next(1500) as f64 / 10.0));
            }
            out.push(Reading {
                well_id: well(name),
                ts: ts(t),
                values: m,
            });
            t += 1 + next(240) as i64;
        }
        out
    };
    let mut batch = Vec::new();
    for (k, name) in ["G-3", "G-1", "G-4", "G-2"].iter().enumerate() {
        batch.extend(readings(name, (k as i64 * 3, 3 * day), 0.0));
    }
    // G-5 has readings only long before most ranges asked below.
    batch.extend(readings("G-5", (-20 * day, -19 * day), 0.0));
    for chunk in batch.chunks(4000) {
        append(&s, chunk.to_vec()).await;
    }
    let fields = vec![Field::IntakePressurePsi, Field::MotorTempC];
    let check = |s: Arc<dyn Store>, alive: Vec<&'static str>, label: &'static str| {
        let fields = fields.clone();
        async move {
            for (a, b) in [
                (0, 3 * day),
                (3_600 * 5 + 17, 2 * day + 3_599),
                (100, 2_000),
                (-21 * day, 3 * day),
            ] {
                let range = TimeRange {
                    from: ts(a),
                    to: ts(b),
                };
                let mut raw: Vec<(&str, Vec<Point>)> = Vec::new();
                for name in &alive {
                    raw.push((name, s.read_range(&well(name), range).await.unwrap()));
                }
                for wells in [Vec::new(), vec!["G-4", "NOPE", "G-2", "G-4"]] {
                    let mut points: Vec<Point> = Vec::new();
                    let mut names: Vec<&str> = raw.iter().map(|(n, _)| *n).collect();
                    names.sort();
                    for name in names {
                        if wells.is_empty() || wells.contains(&name) {
                            let p = raw.iter().find(|(n, _)| *n == name).unwrap();
                            points.extend(p.1.iter().copied());
                        }
                    }
                    points.sort_by_key(|p| p.0);
                    for step in [60, 3_600, 2 * 3_600, day] {
                        for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Last] {
                            let query = FleetQuery {
                                wells: wells.iter().map(|w| well(w)).collect(),
                                range,
                                fields: fields.clone(),
                                step_micros: step * SEC,
                                agg,
                            };
                            let got = s.fleet_aggregate(&query).await.unwrap();
                            let want = evaluate(&query.for_well(well("fleet")), &points);
                            assert_same_series(
                                &got,
                                &want,
                                &format!("{label}: {wells:?} step {step} {agg:?} {a}..{b}"),
                            );
                        }
                    }
                }
            }
        }
    };
    // Sealing more than once: a backend may build fleet-wide aggregates a few windows at a
    // time in its maintenance.
    let seal = |s: Arc<dyn Store>| async move {
        for _ in 0..30 {
            h.seal(&s).await;
        }
    };
    let all = vec!["G-1", "G-2", "G-3", "G-4", "G-5"];
    check(s.clone(), all.clone(), "unsealed").await;
    seal(s.clone()).await;
    check(s.clone(), all.clone(), "sealed").await;
    // Late readings into sealed windows (odd seconds: no existing timestamp is hit, readings
    // above are at least a second apart from `k * 3`).
    let late: Vec<Reading> = (0..40)
        .map(|i| reading("G-2", 1 + i * 6_007 * 2 + 1, 900.0 + i as f64))
        .filter(|r| !batch.iter().any(|b| b.well_id == r.well_id && b.ts == r.ts))
        .collect();
    append(&s, late).await;
    check(s.clone(), all.clone(), "late data unsealed").await;
    seal(s.clone()).await;
    check(s.clone(), all.clone(), "late data sealed").await;
    assert!(s.delete_well(&well("G-3")).await.unwrap());
    let rest = vec!["G-1", "G-2", "G-4", "G-5"];
    check(s.clone(), rest.clone(), "a well deleted").await;
    // The same timestamps again with other values: the same reading counts everywhere.
    let again: Vec<Reading> = batch
        .iter()
        .filter(|r| r.well_id.as_str() == "G-3")
        .map(|r| {
            let mut r = r.clone();
            if let Some(v) = r.values.get(Field::IntakePressurePsi) {
                r.values.set(Field::IntakePressurePsi, Some(v + 5_000.0));
            }
            r
        })
        .collect();
    append(&s, again).await;
    seal(s.clone()).await;
    check(s.clone(), all.clone(), "a well sent again").await;
    s.close().await.unwrap();
    let s = h.open().await;
    check(s.clone(), all, "reopened").await;
    s.close().await.unwrap();
}

/// Alarms read in pages (`list_alarms_page`, keyset: strictly after the previous page's last
/// alarm) are the whole list in the same order, newest start first and ties by id, with no
/// gap or repeat, also when alarms are raised and cleared between pages; the `open` and well
/// filters page the same way.
pub async fn alarm_pages_follow_one_stable_order_without_gaps_or_repeats(h: &impl Harness) {
    use espwatch_core::diagnostics::{Diagnosis, Severity};
    let s = h.open().await;
    let alarms = h.alarms();
    let raise = |w: String, condition: &str, secs: i64| {
        let alarms = alarms.clone();
        let condition: Diagnosis = condition.parse().unwrap();
        async move {
            alarms
                .raise_alarm(NewAlarm {
                    well_id: well(&w),
                    condition,
                    severity: Severity::Major,
                    confidence: 0.9,
                    started_at: ts(secs),
                    detail: serde_json::json!({}),
                })
                .await
                .unwrap()
                .0
        }
    };
    // 23 alarms, three at each start time (ties decided by id), on two conditions.
    let condition_of = |i: i64| if i < 12 { "gas_lock" } else { "pump_off" };
    for i in 0..23i64 {
        let condition = condition_of(i);
        raise(format!("A-{:02}", i % 12), condition, (i / 3) * 60).await;
    }
    for i in [1i64, 4, 9, 16] {
        let condition = condition_of(i);
        alarms
            .clear_alarm(
                &well(&format!("A-{:02}", i % 12)),
                condition.parse().unwrap(),
                ts(5_000),
            )
            .await
            .unwrap()
            .expect("open alarm cleared");
    }
    let key = |a: &Alarm| (a.started_at.0, a.id);
    let ids = |list: &[Alarm]| list.iter().map(|a| a.id).collect::<Vec<_>>();
    let every = AlarmFilter::default();
    let all = alarms.list_alarms(&every).await.unwrap();
    assert_eq!(all.len(), 23);
    assert!(
        all.windows(2).all(|p| key(&p[0]) > key(&p[1])),
        "newest start first, ties by id descending: {:?}",
        all.iter().map(key).collect::<Vec<_>>()
    );

    let read_in_pages = |filter: AlarmFilter, limit: usize| {
        let alarms = alarms.clone();
        async move {
            let mut out: Vec<Alarm> = Vec::new();
            let mut after: Option<AlarmKey> = None;
            loop {
                let page = alarms
                    .list_alarms_page(&filter, after, limit)
                    .await
                    .unwrap();
                assert!(page.len() <= limit);
                let Some(last) = page.last() else { break };
                after = Some(AlarmKey::of(last));
                let done = page.len() < limit;
                out.extend(page);
                if done {
                    break;
                }
            }
            out
        }
    };
    for limit in [1, 3, 4, 23, 100] {
        let paged = read_in_pages(every.clone(), limit).await;
        assert_eq!(ids(&paged), ids(&all), "pages of {limit}");
    }
    // Filters page the same way.
    let open = AlarmFilter {
        open: true,
        ..AlarmFilter::default()
    };
    let open_all = alarms.list_alarms(&open).await.unwrap();
    let want: Vec<i64> = all
        .iter()
        .filter(|a| a.state != AlarmState::Cleared)
        .map(|a| a.id)
        .collect();
    assert_eq!(ids(&open_all), want, "open: raised or acknowledged");
    assert_eq!(ids(&read_in_pages(open.clone(), 2).await), want);
    let cleared = AlarmFilter {
        state: Some(AlarmState::Cleared),
        ..AlarmFilter::default()
    };
    assert_eq!(alarms.list_alarms(&cleared).await.unwrap().len(), 4);
    let one_well = AlarmFilter {
        well_id: Some(well("A-03")),
        ..AlarmFilter::default()
    };
    let want: Vec<i64> = all
        .iter()
        .filter(|a| a.well_id.as_str() == "A-03")
        .map(|a| a.id)
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(ids(&read_in_pages(one_well, 1).await), want);

    // Between pages a newer alarm is raised and an older one cleared: the pages still
    // continue where they stopped (keyset, not offset).
    let first = alarms.list_alarms_page(&every, None, 5).await.unwrap();
    assert_eq!(ids(&first), ids(&all[..5]));
    raise("A-99".into(), "gas_lock", 10_000).await;
    alarms
        .clear_alarm(&well("A-00"), "gas_lock".parse().unwrap(), ts(5_000))
        .await
        .unwrap()
        .expect("A-00's gas lock open");
    let second = alarms
        .list_alarms_page(&every, Some(AlarmKey::of(&first[4])), 5)
        .await
        .unwrap();
    assert_eq!(ids(&second), ids(&all[5..10]));
    // Past the end: nothing.
    let last = all.last().unwrap();
    assert!(
        alarms
            .list_alarms_page(&every, Some(AlarmKey::of(last)), 5)
            .await
            .unwrap()
            .is_empty()
    );
    s.close().await.unwrap();
}

pub async fn well_directives_keep_the_latest_retrain_and_merge_transient_marks(h: &impl Harness) {
    use espwatch_store::TransientMark;
    let s = h.open().await;
    let alarms = h.alarms();
    let (a, b) = (well("DIRECTED-A"), well("DIRECTED-B"));
    assert_eq!(alarms.well_directives(&a).await.unwrap(), None);
    assert_eq!(alarms.directives_after(0, 10).await.unwrap(), vec![]);

    let first = alarms.record_retrain(&a, ts(0), ts(3600)).await.unwrap();
    assert_eq!(first.retrain, Some((ts(0), ts(3600))));
    assert_eq!(first.transient, None);
    let mark = |at: i64, until: i64| TransientMark {
        marked_at: ts(at),
        until: ts(until),
    };
    // A mark, then one made while it is in force: one mark from the first's start to the
    // later end; the retrain stays.
    let marked = alarms.record_transient(&a, mark(100, 500)).await.unwrap();
    let extended = alarms.record_transient(&a, mark(200, 900)).await.unwrap();
    assert_eq!(extended.transient, Some(mark(100, 900)));
    assert_eq!(extended.retrain, Some((ts(0), ts(3600))));
    // One made after it ended replaces it; a new retrain replaces the old window.
    let replaced = alarms.record_transient(&a, mark(1000, 1200)).await.unwrap();
    assert_eq!(replaced.transient, Some(mark(1000, 1200)));
    let retrained = alarms.record_retrain(&a, ts(50), ts(60)).await.unwrap();
    assert_eq!(retrained.retrain, Some((ts(50), ts(60))));
    assert_eq!(retrained.transient, Some(mark(1000, 1200)));
    let other = alarms.record_transient(&b, mark(0, 10)).await.unwrap();
    let revisions = [
        first.revision,
        marked.revision,
        extended.revision,
        replaced.revision,
        retrained.revision,
        other.revision,
    ];
    assert!(revisions.is_sorted() && revisions[0] > 0, "{revisions:?}");
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");

    // Read back, and as changes after a revision (each well once, at its latest).
    assert_eq!(
        alarms.well_directives(&a).await.unwrap(),
        Some(retrained.clone())
    );
    assert_eq!(
        alarms.directives_after(0, 10).await.unwrap(),
        vec![retrained.clone(), other.clone()]
    );
    assert_eq!(
        alarms
            .directives_after(retrained.revision, 10)
            .await
            .unwrap(),
        vec![other.clone()]
    );
    assert_eq!(
        alarms.directives_after(0, 1).await.unwrap(),
        vec![retrained]
    );
    s.close().await.unwrap();
}

/// `from`/`to` keep the alarms whose episodes overlap the range: started at or before `to`,
/// and open or cleared at or after `from` (an episode that began long before the range and
/// lasts into it included); paged like the whole list, and combined with the well filter.
pub async fn alarms_active_in_a_range_are_those_whose_episodes_overlap_it(h: &impl Harness) {
    use espwatch_core::diagnostics::{Diagnosis, Severity};
    let s = h.open().await;
    let alarms = h.alarms();
    // (well, condition, start, end or open) in seconds.
    let episodes: [(&str, &str, i64, Option<i64>); 8] = [
        ("R-1", "gas_lock", 100, Some(200)),     // ends before the range
        ("R-1", "pump_off", 300, Some(1_000)),   // began before, lasts into it
        ("R-1", "gas_lock", 400, Some(500)),     // ends exactly where the range begins
        ("R-1", "closed_valve", 600, Some(700)), // inside
        ("R-2", "gas_lock", 650, None),          // open, begun inside
        ("R-1", "overload", 900, Some(2_000)),   // begins exactly at the end
        ("R-2", "pump_off", 901, Some(950)),     // begins after the end
        ("R-3", "overload", 50, None),           // open since long before
    ];
    let mut ids = Vec::new();
    for (w, condition, start, end) in episodes {
        let condition: Diagnosis = condition.parse().unwrap();
        let (alarm, _) = alarms
            .raise_alarm(NewAlarm {
                well_id: well(w),
                condition,
                severity: Severity::Major,
                confidence: 0.9,
                started_at: ts(start),
                detail: serde_json::json!({}),
            })
            .await
            .unwrap();
        if let Some(end) = end {
            alarms
                .clear_alarm(&well(w), condition, ts(end))
                .await
                .unwrap()
                .expect("open");
        }
        ids.push(alarm.id);
    }
    let listed = |filter: AlarmFilter, limit: usize| {
        let alarms = alarms.clone();
        async move {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = alarms
                    .list_alarms_page(&filter, after, limit)
                    .await
                    .unwrap();
                let Some(last) = page.last() else { break };
                after = Some(AlarmKey::of(last));
                let done = page.len() < limit;
                out.extend(page.iter().map(|a| a.id));
                if done {
                    break;
                }
            }
            out
        }
    };
    let range = AlarmFilter {
        from: Some(ts(500)),
        to: Some(ts(900)),
        ..AlarmFilter::default()
    };
    // Newest start first.
    let want = vec![ids[5], ids[4], ids[3], ids[2], ids[1], ids[7]];
    assert_eq!(listed(range.clone(), 100).await, want);
    assert_eq!(listed(range.clone(), 1).await, want, "pages of one");
    let r1 = AlarmFilter {
        well_id: Some(well("R-1")),
        ..range.clone()
    };
    assert_eq!(
        listed(r1, 2).await,
        vec![ids[5], ids[3], ids[2], ids[1]],
        "one well"
    );
    let from_only = AlarmFilter {
        from: Some(ts(960)),
        ..AlarmFilter::default()
    };
    assert_eq!(
        listed(from_only, 3).await,
        vec![ids[5], ids[4], ids[1], ids[7]]
    );
    let to_only = AlarmFilter {
        to: Some(ts(100)),
        ..AlarmFilter::default()
    };
    assert_eq!(listed(to_only, 3).await, vec![ids[0], ids[7]]);
    s.close().await.unwrap();
}
