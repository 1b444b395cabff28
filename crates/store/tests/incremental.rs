//! Incremental backups of a running embedded store: a full backup, then deltas of only what
//! changed, restored whole or up to an earlier backup.

use std::collections::BTreeMap;

use espwatch_core::{FIELD_COUNT, Measurements, Point, Reading, TimeRange, Timestamp, WellId};
use espwatch_store::embedded::incremental::{
    CHAIN, ChainLock, Kind, LOCK, backup_chain, restore_chain,
};
use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store, StoreError};

const T0: i64 = 1_767_225_600_000_000;
const MIN: i64 = 60_000_000;
const HOUR: i64 = 60 * MIN;

fn well(s: &str) -> WellId {
    WellId::parse(s).unwrap()
}

fn reading(w: &str, t: i64) -> Reading {
    // Gauge-like noise, so segments are about as large as real ones.
    let mut h = (t as u64 ^ w.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut raw = [f64::NAN; FIELD_COUNT];
    for v in raw.iter_mut().take(8) {
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        *v = 100.0 + (h % 10_000) as f64 / 100.0;
    }
    Reading {
        well_id: well(w),
        ts: Timestamp(t),
        values: Measurements::from_raw(raw),
    }
}

async fn fill(store: &EmbeddedStore, wells: &[&str], from: i64, to: i64) {
    let mut rs = Vec::new();
    for w in wells {
        let mut t = from;
        while t < to {
            rs.push(reading(w, t));
            t += MIN;
        }
    }
    store.append(rs, AppendOptions::default()).await.unwrap();
}

const ALL: TimeRange = TimeRange {
    from: Timestamp(0),
    to: Timestamp(i64::MAX),
};

/// Every well's readings.
async fn contents(store: &EmbeddedStore) -> BTreeMap<String, Vec<Point>> {
    let mut out = BTreeMap::new();
    for w in store.list_wells().await.unwrap() {
        let id = w.meta.well_id;
        out.insert(
            id.as_str().to_owned(),
            store.read_range(&id, ALL).await.unwrap(),
        );
    }
    out
}

fn same(a: &BTreeMap<String, Vec<Point>>, b: &BTreeMap<String, Vec<Point>>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && va.len() == vb.len()
                && va.iter().zip(vb).all(|(x, y)| {
                    x.0 == y.0
                        && x.1
                            .raw()
                            .iter()
                            .zip(y.1.raw())
                            .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
                })
        })
}

async fn restored(repo: &std::path::Path, until: Option<i64>) -> BTreeMap<String, Vec<Point>> {
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("restored");
    let report = restore_chain(repo, &target, until).unwrap();
    let store = EmbeddedStore::open(&target, EmbeddedOptions::default()).unwrap();
    let c = contents(&store).await;
    assert_eq!(
        c.values().map(|v| v.len() as u64).sum::<u64>(),
        report.readings
    );
    store.close().await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_hold_only_what_changed_and_restore_to_each_backup() {
    let dir = tempfile::tempdir().unwrap();
    let chain = tempfile::tempdir().unwrap();
    let repo = chain.path().join("chain");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells = ["B-1", "B-2", "B-3", "B-4"];
    fill(&store, &wells, T0, T0 + 240 * HOUR).await;
    store.checkpoint().await.unwrap();

    // Full backup while the store is open (a server would be running on it).
    let full = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(full.entry.kind, Kind::Full);
    assert_eq!(full.entry.readings, 4 * 240 * 60);
    assert_eq!(full.entry.segments_copied, 4 * 60);
    let at_full = contents(&store).await;

    // A few hours more of every well (two new windows each, sealed), late readings into one
    // old window of B-1, B-4 deleted, and unsealed readings in the log.
    fill(&store, &wells, T0 + 240 * HOUR, T0 + 248 * HOUR).await;
    store
        .append(
            (0..5)
                .map(|i| reading("B-1", T0 + 5 * HOUR + i * MIN + 30_000_000))
                .collect(),
            AppendOptions::default(),
        )
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    store.delete_well(&well("B-4")).await.unwrap();
    fill(&store, &wells[..2], T0 + 248 * HOUR, T0 + 249 * HOUR).await;
    let second = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(second.entry.kind, Kind::Incremental);
    // Segments: 3 wells × 2 new windows, the window of B-1's late readings, and each well's
    // last window of the first day (written fast while open, rewritten compact once the data
    // moved past it: same readings, so its rollup is unchanged). B-4's 60 windows and rollups
    // gone; everything else unchanged.
    assert_eq!(second.entry.segments_copied, 10, "{second:?}");
    assert_eq!(second.entry.rollups_copied, 7, "{second:?}");
    assert_eq!(second.entry.removed, 2 * 60, "{second:?}");
    assert_eq!(second.unchanged, (3 * 60 - 4) + (3 * 60 - 1), "{second:?}");
    assert!(
        second.bytes * 10 < full.bytes,
        "a delta of a few windows is much smaller than the full copy: {} vs {}",
        second.bytes,
        full.bytes
    );
    let at_second = contents(&store).await;
    assert_eq!(
        second.entry.readings,
        at_second.values().map(|v| v.len() as u64).sum::<u64>()
    );

    // Nothing changed: an empty delta.
    let third = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!((third.entry.segments_copied, third.entry.removed), (0, 0));

    // More data, then the last backup.
    fill(&store, &wells[1..3], T0 + 249 * HOUR, T0 + 262 * HOUR).await;
    store.checkpoint().await.unwrap();
    let fourth = backup_chain(dir.path(), &repo).unwrap();
    let at_fourth = contents(&store).await;

    // Each point in time comes back exactly.
    assert!(same(&restored(&repo, None).await, &at_fourth));
    assert!(same(
        &restored(&repo, Some(fourth.entry.started_at)).await,
        &at_fourth
    ));
    assert!(same(
        &restored(&repo, Some(third.entry.started_at)).await,
        &at_second
    ));
    assert!(same(
        &restored(&repo, Some(second.entry.started_at)).await,
        &at_second
    ));
    assert!(same(
        &restored(&repo, Some(full.entry.started_at)).await,
        &at_full
    ));
    match restore_chain(
        &repo,
        &chain.path().join("x"),
        Some(full.entry.started_at - 1),
    ) {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected no backup that early, got {other:?}"),
    }

    // A damaged delta is refused before anything is restored.
    let delta = repo.join("0001").join("delta.sqlite");
    let mut bytes = std::fs::read(&delta).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&delta, bytes).unwrap();
    let err = restore_chain(&repo, &chain.path().join("y"), None).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    store.close().await.unwrap();
}

/// Issue 20: two backups into one chain at once would both write their delta after the same
/// last backup. The second is refused while the first holds the chain's lock (naming its
/// owner); the lock goes with its backup, and one left by a backup that died expires.
#[tokio::test]
async fn a_backup_into_a_chain_another_backup_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let chain = tempfile::tempdir().unwrap();
    let repo = chain.path().join("chain");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    fill(&store, &["L-1", "L-2"], T0, T0 + 10 * HOUR).await;
    store.checkpoint().await.unwrap();

    let held = ChainLock::acquire(&repo).unwrap();
    let e = backup_chain(dir.path(), &repo).unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("being backed up by") && m.contains("pid")),
        "{e:?}"
    );
    assert!(
        !repo.join(CHAIN).exists(),
        "the refused backup wrote nothing"
    );
    drop(held);
    assert!(!repo.join(LOCK).exists());

    let full = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(full.entry.kind, Kind::Full);
    assert!(
        !repo.join(LOCK).exists(),
        "a finished backup leaves no lock"
    );

    // A lock whose backup died (never released, expired) is taken over.
    std::mem::forget(ChainLock::acquire_for(&repo, -1).unwrap());
    assert!(repo.join(LOCK).exists());
    fill(&store, &["L-1"], T0 + 10 * HOUR, T0 + 11 * HOUR).await;
    let second = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(second.entry.kind, Kind::Incremental);
    assert!(!repo.join(LOCK).exists());
    // A live lock taken over by nobody: the chain stays usable after it is released.
    let again = ChainLock::acquire(&repo).unwrap();
    assert!(ChainLock::acquire(&repo).is_err(), "one holder at a time");
    drop(again);
    let restored = tempfile::tempdir().unwrap();
    restore_chain(&repo, &restored.path().join("data"), None).unwrap();
}

/// Issue 20: a chain whose full backup was taken before segment checksums (no checksum
/// column) takes deltas made after the upgrade (with checksums): the restore applies them,
/// every reading comes back, and the restored copy verifies (old segments decoded, new ones
/// by their checksums).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_started_before_segment_checksums_restores_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let chain = tempfile::tempdir().unwrap();
    let repo = chain.path().join("chain");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    fill(&store, &["U1", "U2"], T0, T0 + 8 * HOUR).await;
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    {
        // As a release before segment checksums left the directory.
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        conn.execute_batch("ALTER TABLE segments DROP COLUMN checksum")
            .unwrap();
    }
    let full = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(full.entry.kind, Kind::Full);

    // Upgraded (opened by this release), more readings, a delta with checksums.
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    fill(&store, &["U1", "U3"], T0 + 8 * HOUR, T0 + 13 * HOUR).await;
    store.checkpoint().await.unwrap();
    let delta = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(delta.entry.kind, Kind::Incremental);
    assert!(delta.entry.segments_copied > 0);
    let expected = contents(&store).await;
    store.close().await.unwrap();

    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("restored");
    restore_chain(&repo, &target, None).unwrap();
    let (report, _) = espwatch_store::embedded::check::verify_copy(&target).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.checksummed > 0 && report.checksummed < report.segments,
        "{report:?}"
    );
    assert!(same(&restored(&repo, None).await, &expected));
}

/// Issue 20: segments that gain their checksum after a chain's base was taken (`store
/// compact` records it; a window that was already compact is rewritten to the same bytes)
/// are carried by the next delta, so the chain's restore verifies every segment by its
/// checksum instead of decoding the old ones at every restore. A delta after that, with
/// nothing changed, copies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_recorded_after_a_chain_began_are_carried_by_the_next_delta() {
    let dir = tempfile::tempdir().unwrap();
    let chain = tempfile::tempdir().unwrap();
    let repo = chain.path().join("chain");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    fill(&store, &["C1", "C2"], T0, T0 + 13 * HOUR).await;
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    {
        // As a release before segment checksums left the directory.
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        conn.execute_batch("ALTER TABLE segments DROP COLUMN checksum")
            .unwrap();
    }
    backup_chain(dir.path(), &repo).unwrap();

    // Upgraded, and compacted: every segment gets its checksum, nothing else changes.
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    store.compact().await.unwrap();
    let expected = contents(&store).await;
    store.close().await.unwrap();
    let delta = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(delta.entry.kind, Kind::Incremental);

    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("restored");
    restore_chain(&repo, &target, None).unwrap();
    let (report, _) = espwatch_store::embedded::check::verify_copy(&target).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checksummed, report.segments, "{report:?}");
    assert!(report.segments > 0);
    assert!(same(&restored(&repo, None).await, &expected));

    let again = backup_chain(dir.path(), &repo).unwrap();
    assert_eq!(again.entry.segments_copied, 0, "{:?}", again.entry);
}
