//! Integration tests of the embedded engine: the shared conformance suite (twice: default
//! tuning, and tuned to checkpoint constantly) plus engine-specific behaviour; the security
//! conformance suite on `security.sqlite`, and its multi-instance / multi-process behaviour.

mod conformance;
mod security_conformance;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conformance::{Harness, all_time, auto, reading, well};
use espwatch_core::access::Role;
use espwatch_store::{
    AuditFilter, CheckpointHook, EmbeddedOptions, EmbeddedSecurityStore, EmbeddedStore,
    InstallHook, InstallStep, LogTrimHook, LogTrimStep, ReadingOutcome, SecurityStore, Store,
    StoreError,
};

struct EmbeddedHarness {
    dir: tempfile::TempDir,
    opts: EmbeddedOptions,
    /// The store most recently opened, so `seal` can reach its inherent `checkpoint`.
    current: Mutex<Option<EmbeddedStore>>,
}

impl EmbeddedHarness {
    fn new() -> Self {
        Self::with(EmbeddedOptions::default())
    }

    /// Checkpoints after a handful of readings and uses one-hour windows, so every case
    /// runs through sealing, merging into existing segments and log truncation.
    fn aggressive() -> Self {
        Self::with(EmbeddedOptions {
            checkpoint_readings: 37,
            window_micros: 3600 * 1_000_000,
            max_readings_per_commit: 50,
            ..EmbeddedOptions::default()
        })
    }

    fn with(opts: EmbeddedOptions) -> Self {
        EmbeddedHarness {
            dir: tempfile::tempdir().unwrap(),
            opts,
            current: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Harness for EmbeddedHarness {
    async fn open(&self) -> Arc<dyn Store> {
        let store = EmbeddedStore::open(self.dir.path(), self.opts.clone()).unwrap();
        *self.current.lock().unwrap() = Some(store.clone());
        Arc::new(store)
    }

    async fn seal(&self, _store: &Arc<dyn Store>) {
        let store = self
            .current
            .lock()
            .unwrap()
            .clone()
            .expect("a store is open");
        store.checkpoint().await.unwrap();
    }

    async fn abandon(&self, store: Arc<dyn Store>) {
        // Dropping every handle stops the writer without a checkpoint: the next open must
        // replay the log. (A real kill -9 is covered by `recovers_from_a_copy_taken_mid_flight`.)
        self.current.lock().unwrap().take();
        drop(store);
    }

    fn alarms(&self) -> Arc<dyn espwatch_store::AlarmStore> {
        Arc::new(
            self.current
                .lock()
                .unwrap()
                .clone()
                .expect("a store is open"),
        )
    }
}

mod default_tuning {
    use super::*;
    conformance::conformance_tests!(EmbeddedHarness::new());
}

mod aggressive_checkpoints {
    use super::*;
    conformance::conformance_tests!(EmbeddedHarness::aggressive());
}

// ---------------------------------------------------------------------------------------------
// Engine-specific

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let before = store.stats().await.unwrap().commits;
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.append(vec![reading(&format!("G{}", i % 10), i, 1.0)], auto())
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().outcomes, vec![ReadingOutcome::Accepted]);
    }
    let commits = store.stats().await.unwrap().commits - before;
    assert!(
        commits > 0 && commits < n as u64,
        "{commits} commits for {n} appends"
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn second_open_of_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("in use"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    store.close().await.unwrap();
    // Released by close.
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    drop(store);
    // And by dropping the last handle.
    EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
}

fn copy_db(from: &Path, to: &Path) {
    for name in ["espwatch.db", "espwatch.db-wal"] {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).unwrap();
        }
    }
}

/// What a `kill -9` leaves behind is exactly the files as they are on disk while the store
/// runs; a copy taken after acknowledged appends must hold all of them, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_a_copy_taken_mid_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let sealed: Vec<_> = (0..1000).map(|i| reading("K", i * 10, i as f64)).collect();
    store.append(sealed, auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    let unsealed: Vec<_> = (1000..1500)
        .map(|i| reading("K", i * 10, i as f64))
        .collect();
    store.append(unsealed, auto()).await.unwrap();
    store
        .append(vec![reading("K", 5, 0.5)], auto())
        .await
        .unwrap();

    let copy = tempfile::tempdir().unwrap();
    copy_db(dir.path(), copy.path());
    let recovered = EmbeddedStore::open(copy.path(), EmbeddedOptions::default()).unwrap();
    let got = recovered.read_range(&well("K"), all_time()).await.unwrap();
    assert_eq!(got.len(), 1501);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    let stats = recovered.stats().await.unwrap();
    assert_eq!(stats.readings_in_log, 501);
    assert!(stats.segments > 0);
    recovered.close().await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_checkpoint_runs_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        checkpoint_interval: Duration::from_millis(50),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    store
        .append(vec![reading("I", 0, 1.0)], auto())
        .await
        .unwrap();
    let mut sealed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s = store.stats().await.unwrap();
        if s.checkpoints > 0 && s.readings_in_log == 0 {
            sealed = true;
            break;
        }
    }
    assert!(sealed, "no checkpoint within 2 s");
    assert_eq!(store.stats().await.unwrap().segments, 1);
    store.close().await.unwrap();
}

/// Issue 17, bug 5: a checkpoint no longer holds appends up. Its segments are encoded on a
/// thread of its own (held here half-way by the test hook, so the order of events is fixed,
/// not timed): appends are committed and acknowledged meanwhile, duplicates of readings
/// being sealed are still recognised, reads see every reading exactly once during and after
/// it, and after a restart the log holds exactly what the checkpoint did not seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_committed_while_a_checkpoint_encodes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let hook = {
        let armed = armed.clone();
        let entered_tx = Mutex::new(entered_tx);
        let release_rx = Mutex::new(release_rx);
        CheckpointHook(Arc::new(move || {
            if armed.load(Ordering::SeqCst) {
                let _ = entered_tx.lock().unwrap().send(());
                // Held until the test releases it (or gives up on it).
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(60));
            }
        }))
    };
    let opts = EmbeddedOptions {
        checkpoint_readings: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        window_micros: 3600 * 1_000_000,
        checkpoint_hook: Some(hook),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    let batch = |w: &str, from: i64, to: i64| -> Vec<_> {
        (from..to).map(|s| reading(w, s * 10, s as f64)).collect()
    };
    // Sealed: 7 000 s of each well; then unsealed readings in its last window and after.
    for w in ["A", "B"] {
        store.append(batch(w, 0, 700), auto()).await.unwrap();
    }
    store.checkpoint().await.unwrap();
    for w in ["A", "B"] {
        store.append(batch(w, 700, 1_000), auto()).await.unwrap();
    }
    assert_eq!(store.stats().await.unwrap().readings_in_log, 600);

    armed.store(true, Ordering::SeqCst);
    let sealing = tokio::spawn({
        let store = store.clone();
        async move { store.checkpoint().await }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the checkpoint thread never started encoding");

    // The checkpoint is now encoding and cannot finish until released.
    let mut during = batch("A", 1_000, 1_100);
    during.push(reading("A", 500 * 10, -1.0)); // sealed before
    during.push(reading("A", 800 * 10, -1.0)); // being sealed
    let outcome = tokio::time::timeout(Duration::from_secs(20), store.append(during, auto()))
        .await
        .expect("an append waited for the checkpoint's encoding")
        .unwrap();
    let accepted = outcome
        .outcomes
        .iter()
        .filter(|o| **o == ReadingOutcome::Accepted)
        .count();
    assert_eq!(accepted, 100);
    assert_eq!(outcome.outcomes[100], ReadingOutcome::Duplicate);
    assert_eq!(outcome.outcomes[101], ReadingOutcome::Duplicate);
    assert!(
        !sealing.is_finished(),
        "the checkpoint ended before release"
    );
    assert_eq!(store.stats().await.unwrap().readings_in_log, 700);

    let exactly_once = |points: &[espwatch_core::Point], n: i64| {
        let secs: Vec<i64> = points
            .iter()
            .map(|p| (p.0.0 - conformance::T0) / (10 * conformance::SEC))
            .collect();
        assert_eq!(secs, (0..n).collect::<Vec<_>>(), "gaps or repeats");
        assert!(
            points
                .iter()
                .all(|p| p.1.get(espwatch_core::Field::FrequencyHz) >= Some(0.0)),
            "a duplicate's value was stored"
        );
    };
    exactly_once(
        &store.read_range(&well("A"), all_time()).await.unwrap(),
        1_100,
    );
    exactly_once(
        &store.read_range(&well("B"), all_time()).await.unwrap(),
        1_000,
    );

    release_tx.send(()).unwrap();
    drop(release_tx);
    sealing.await.unwrap().unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.readings_in_log, 100,
        "only the append made during it is unsealed"
    );
    assert_eq!(stats.checkpoints, 2);
    exactly_once(
        &store.read_range(&well("A"), all_time()).await.unwrap(),
        1_100,
    );
    exactly_once(
        &store.read_range(&well("B"), all_time()).await.unwrap(),
        1_000,
    );

    // A restart replays exactly the unsealed part of the log.
    drop(store);
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.stats().await.unwrap().readings_in_log, 100);
    exactly_once(
        &store.read_range(&well("A"), all_time()).await.unwrap(),
        1_100,
    );
    exactly_once(
        &store.read_range(&well("B"), all_time()).await.unwrap(),
        1_000,
    );
    store.close().await.unwrap();
}

/// A writer hook that records each step that `counts` and holds the writer at the first: the
/// data directory is copied to the crash directory there (the files are what `kill -9` would
/// leave), `entered` is signalled, and the writer waits for `release` (60 s at most). The
/// order of events in the tests that use it is thus fixed, not timed.
fn hold_at_first_step<S: Send + 'static>(
    steps: Arc<Mutex<Vec<S>>>,
    (data, crash): (std::path::PathBuf, std::path::PathBuf),
    (entered, release): (std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>),
    counts: impl Fn(&S) -> bool + Send + Sync + 'static,
) -> impl Fn(S) + Send + Sync + 'static {
    let (entered, release) = (Mutex::new(entered), Mutex::new(release));
    move |step: S| {
        if !counts(&step) {
            return;
        }
        let first = {
            let mut steps = steps.lock().unwrap();
            steps.push(step);
            steps.len() == 1
        };
        if first {
            copy_db(&data, &crash);
            let _ = entered.lock().unwrap().send(());
            let _ = release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
        }
    }
}

/// Issue 17 (checkpoints stall appends): the log batches a checkpoint sealed are no longer
/// deleted in its install transaction, which held every append while a whole checkpoint's log
/// was freed, but afterwards, in bounded steps inside append commits and between them. The
/// hook holds the writer after the first step (so the order of events is fixed, not timed):
/// an append sent meanwhile is committed while sealed batches are still there, a copy of the
/// files taken at that step (what `kill -9` leaves) opens with every reading exactly once and
/// nothing replayed, and the deletion finishes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealed_log_is_deleted_in_bounded_steps_between_appends() {
    use std::sync::mpsc;

    let dir = tempfile::tempdir().unwrap();
    let crash = tempfile::tempdir().unwrap();
    let steps: Arc<Mutex<Vec<LogTrimStep>>> = Arc::default();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // Zero batches: nothing of the log (the shipping bookkeeping at open).
    let hook = LogTrimHook(Arc::new(hold_at_first_step(
        steps.clone(),
        (dir.path().to_path_buf(), crash.path().to_path_buf()),
        (entered_tx, release_rx),
        |step: &LogTrimStep| step.batches > 0,
    )));
    let opts = EmbeddedOptions {
        checkpoint_readings: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        window_micros: 3600 * 1_000_000,
        log_trim_hook: Some(hook),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    // 300 commits, so 300 log batches.
    for i in 0..300 {
        let batch = (0..10)
            .map(|k| reading("L", (i * 10 + k) * 10, 1.0))
            .collect();
        store.append(batch, auto()).await.unwrap();
    }
    // Answered once the log it sealed is deleted.
    let sealing = tokio::spawn({
        let store = store.clone();
        async move { store.checkpoint().await }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the sealed log was never deleted in steps");

    // Queue an append while the writer is held after the first step, then let it go on.
    let late = store.append(vec![reading("L", 3_000 * 10, 2.0)], auto());
    tokio::pin!(late);
    tokio::select! {
        biased;
        _ = &mut late => panic!("committed while the writer was held"),
        () = std::future::ready(()) => {}
    }
    release_tx.send(()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), late)
        .await
        .expect("the append waited for the whole log deletion")
        .unwrap();
    assert_eq!(outcome.outcomes, vec![ReadingOutcome::Accepted]);
    sealing.await.unwrap().unwrap();

    let steps = steps.lock().unwrap().clone();
    let sealed = steps[0].sealed;
    assert_eq!(steps.last().map(|s| s.deleted_through), Some(sealed));
    assert!(
        steps.iter().all(|s| s.sealed == sealed && s.batches <= 64),
        "{steps:?}"
    );
    assert!(steps.len() >= 300 / 64, "{steps:?}");
    assert_eq!(steps.iter().map(|s| s.batches).sum::<u64>(), 300);
    assert!(
        steps
            .iter()
            .any(|s| s.with_appends && s.newest > sealed && s.deleted_through < sealed),
        "no append was committed while sealed batches were left: {steps:?}"
    );
    let exactly = |points: &[espwatch_core::Point], n: i64| {
        let secs: Vec<i64> = points
            .iter()
            .map(|p| (p.0.0 - conformance::T0) / (10 * conformance::SEC))
            .collect();
        assert_eq!(secs, (0..n).collect::<Vec<_>>(), "gaps or repeats");
    };
    exactly(
        &store.read_range(&well("L"), all_time()).await.unwrap(),
        3_001,
    );
    store.close().await.unwrap();

    // The crash copy: the sealed batches still there are not replayed.
    let recovered = EmbeddedStore::open(crash.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(recovered.stats().await.unwrap().readings_in_log, 0);
    exactly(
        &recovered.read_range(&well("L"), all_time()).await.unwrap(),
        3_000,
    );
    recovered.close().await.unwrap();
    // Closed: the log is empty, the readings are all in segments.
    {
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM log_batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.stats().await.unwrap().readings_in_log, 0);
    exactly(
        &store.read_range(&well("L"), all_time()).await.unwrap(),
        3_001,
    );
    store.close().await.unwrap();
}

/// Issue 17 (checkpoints stall appends): a checkpoint's segments (400–500 for 500 k readings,
/// a few MB) are no longer written in one install transaction, which held every append for
/// tens of ms, but in bounded steps, inside append commits and between them; the last step
/// marks the log sealed. The hook holds the writer after the first step (the order of events
/// is fixed, not timed): reads meanwhile see every reading exactly once although some of the
/// checkpoint's segments are already in the database, an append sent meanwhile is committed
/// before the install ends (riding along with a step), and a copy of the files taken at that
/// step (what `kill -9` leaves) opens with every reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_installed_in_bounded_steps_between_appends() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    let dir = tempfile::tempdir().unwrap();
    let crash = tempfile::tempdir().unwrap();
    let steps: Arc<Mutex<Vec<InstallStep>>> = Arc::default();
    let armed = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let hook = {
        let armed = armed.clone();
        InstallHook(Arc::new(hold_at_first_step(
            steps.clone(),
            (dir.path().to_path_buf(), crash.path().to_path_buf()),
            (entered_tx, release_rx),
            move |_: &InstallStep| armed.load(Ordering::SeqCst),
        )))
    };
    let opts = EmbeddedOptions {
        checkpoint_readings: 1_000_000,
        checkpoint_interval: Duration::from_secs(3600),
        window_micros: 3600 * 1_000_000,
        install_hook: Some(hook),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    let series = |w: &str, from: i64, to: i64| -> Vec<espwatch_core::Reading> {
        (from..to).map(|i| reading(w, i * 10, 1.0)).collect()
    };
    // "M" has a sealed segment the next checkpoint merges into (same window).
    store.append(series("M", 0, 50), auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    // 200 wells of 20 readings, and "M" again: 201 segments to install, 7+ steps.
    store.append(series("M", 50, 100), auto()).await.unwrap();
    for w in 0..200 {
        store
            .append(series(&format!("W{w:03}"), 0, 20), auto())
            .await
            .unwrap();
    }
    armed.store(true, Ordering::SeqCst);
    let sealing = tokio::spawn({
        let store = store.clone();
        async move { store.checkpoint().await }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the checkpoint was never installed in steps");

    let exactly = |points: &[espwatch_core::Point], n: i64| {
        let secs: Vec<i64> = points
            .iter()
            .map(|p| (p.0.0 - conformance::T0) / (10 * conformance::SEC))
            .collect();
        assert_eq!(secs, (0..n).collect::<Vec<_>>(), "gaps or repeats");
    };
    // Part of the checkpoint's segments are in the database, the rest only in memory.
    exactly(
        &store.read_range(&well("M"), all_time()).await.unwrap(),
        100,
    );
    for w in [0, 63, 64, 199] {
        let points = store
            .read_range(&well(&format!("W{w:03}")), all_time())
            .await
            .unwrap();
        exactly(&points, 20);
    }

    // Queue an append while the writer is held after the first step, then let it go on.
    let late = store.append(
        vec![
            reading("M", 100 * 10, 2.0),
            reading("M", 70 * 10, 2.0), // being installed
            reading("M", 10 * 10, 2.0), // sealed before
        ],
        auto(),
    );
    tokio::pin!(late);
    tokio::select! {
        biased;
        _ = &mut late => panic!("committed while the writer was held"),
        () = std::future::ready(()) => {}
    }
    release_tx.send(()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), late)
        .await
        .expect("the append waited for the whole install")
        .unwrap();
    assert_eq!(
        outcome.outcomes,
        vec![
            ReadingOutcome::Accepted,
            ReadingOutcome::Duplicate,
            ReadingOutcome::Duplicate
        ]
    );
    sealing.await.unwrap().unwrap();

    let steps = steps.lock().unwrap().clone();
    assert!(steps.len() >= 7, "{steps:?}");
    assert!(steps.iter().all(|s| s.segments <= 32), "{steps:?}");
    assert_eq!(
        steps.iter().map(|s| s.segments).sum::<usize>(),
        201,
        "{steps:?}"
    );
    assert_eq!(
        steps.iter().filter(|s| s.sealed_mark).count(),
        1,
        "{steps:?}"
    );
    assert!(steps.last().unwrap().sealed_mark, "{steps:?}");
    assert!(
        steps.iter().any(|s| s.with_appends && !s.sealed_mark),
        "no append was committed while the install was under way: {steps:?}"
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.readings_in_log, 1, "only the late append is unsealed");
    exactly(
        &store.read_range(&well("M"), all_time()).await.unwrap(),
        101,
    );
    store.close().await.unwrap();

    // The crash copy: no mark yet, so the log since the first checkpoint is replayed; the
    // segments the first step wrote hold some of it again, and every reading is there once.
    let recovered = EmbeddedStore::open(crash.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(
        recovered.stats().await.unwrap().readings_in_log,
        50 + 200 * 20
    );
    exactly(
        &recovered.read_range(&well("M"), all_time()).await.unwrap(),
        100,
    );
    for w in 0..200 {
        let points = recovered
            .read_range(&well(&format!("W{w:03}")), all_time())
            .await
            .unwrap();
        exactly(&points, 20);
    }
    // And its next checkpoint seals it all, once.
    recovered.checkpoint().await.unwrap();
    assert_eq!(recovered.stats().await.unwrap().readings_in_log, 0);
    exactly(
        &recovered.read_range(&well("M"), all_time()).await.unwrap(),
        100,
    );
    exactly(
        &recovered
            .read_range(&well("W000"), all_time())
            .await
            .unwrap(),
        20,
    );
    recovered.close().await.unwrap();

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(store.stats().await.unwrap().readings_in_log, 0);
    exactly(
        &store.read_range(&well("M"), all_time()).await.unwrap(),
        101,
    );
    store.close().await.unwrap();
}

/// Issue 17 (checkpoints stall appends): the checkpoint thread runs at a lower CPU priority
/// than the writer (`checkpoint_nice` added to its nice value), so on a busy machine encoding
/// a checkpoint yields the cores to the appends instead of taking one from the writer.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_thread_runs_at_a_lower_priority_than_the_writer() {
    fn nice_of_this_thread() -> i32 {
        // SAFETY: reads this thread's scheduling priority.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(None));
    let hook = CheckpointHook(Arc::new({
        let seen = seen.clone();
        move || *seen.lock().unwrap() = Some(nice_of_this_thread())
    }));
    let opts = EmbeddedOptions {
        checkpoint_hook: Some(hook),
        checkpoint_nice: 5,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    store
        .append((0..10).map(|i| reading("N", i * 10, 1.0)).collect(), auto())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    // Threads start at the nice value of the thread that spawned them (the writer's is this
    // process's, as is this one's).
    let base = nice_of_this_thread();
    assert_eq!(*seen.lock().unwrap(), Some((base + 5).min(19)));
    store.close().await.unwrap();
}

/// Issue 17, bug 6: a damaged newest segment (decoded at open for `latest`) or log batch no
/// longer keeps the store from opening: it is moved to the `quarantine` table with its bytes,
/// the health probe names it, and everything else stays readable.
#[tokio::test]
async fn damaged_newest_segment_and_log_batch_are_quarantined_and_the_store_opens() {
    const HOUR: i64 = 3600;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    store
        .append(
            vec![
                reading("C", 0, 1.0),
                reading("C", 10, 2.0),
                reading("C", 5 * HOUR, 3.0),
                reading("D", 0, 4.0),
            ],
            auto(),
        )
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        let newest: i64 = conn
            .query_row(
                "SELECT max(window_start) FROM segments WHERE well_id = 'C'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = conn
            .execute(
                "UPDATE segments SET data = x'01ff' WHERE well_id = 'C' AND window_start = ?1",
                [newest],
            )
            .unwrap();
        assert_eq!(n, 1);
        conn.execute(
            "INSERT INTO log_batches (id, data) VALUES (1000000, x'00')",
            [],
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .expect("a damaged segment or log batch must not keep the store closed");
    let health = store.health().await;
    assert!(health.read.ok && health.write.ok, "{health:?}");
    let detail = health.read.detail.unwrap_or_default();
    assert!(detail.contains("segment (C,"), "{detail}");
    assert!(detail.contains("log batch 1000000"), "{detail}");
    // The rest is intact: the older segment of C, and D.
    let c = store.read_range(&well("C"), all_time()).await.unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        store
            .read_range(&well("D"), all_time())
            .await
            .unwrap()
            .len(),
        1
    );
    let latest = store.latest().await.unwrap();
    let c_latest = latest.iter().find(|l| l.well_id == well("C")).unwrap();
    assert_eq!(
        c_latest.point.0, c[1].0,
        "latest falls back to the older segment"
    );
    // New data still goes in.
    store
        .append(vec![reading("C", 6 * HOUR, 5.0)], auto())
        .await
        .unwrap();
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
    let kept: Vec<(String, i64)> = conn
        .prepare("SELECT kind, length(data) FROM quarantine ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kept,
        vec![("segment".to_owned(), 2), ("log_batch".to_owned(), 1)],
        "the damaged bytes are kept"
    );
    drop(conn);
    // Quarantined once: the next open is clean.
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(store.health().await.read.detail, None);
    assert_eq!(
        store
            .read_range(&well("C"), all_time())
            .await
            .unwrap()
            .len(),
        3
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn window_width_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let small = EmbeddedOptions {
        window_micros: 60 * 1_000_000,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), small).unwrap();
    store
        .append((0..600).map(|i| reading("W", i, 1.0)).collect(), auto())
        .await
        .unwrap();
    store.close().await.unwrap();
    assert_eq!(
        {
            let s = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
            let n = s.stats().await.unwrap().segments;
            let got = s.read_range(&well("W"), all_time()).await.unwrap().len();
            s.close().await.unwrap();
            (n, got)
        },
        (10, 600)
    );
}

/// Child half of `kill_9_loses_nothing_acknowledged`: appends until killed, printing each
/// acknowledged batch. Does nothing unless started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn crash_child() {
    let Some(dir) = std::env::var_os("ESPWATCH_CRASH_DIR") else {
        return;
    };
    let opts = EmbeddedOptions {
        checkpoint_readings: 3_000,
        window_micros: 600 * 1_000_000,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(Path::new(&dir), opts).unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0i64.. {
                let rs = (0..100)
                    .map(|k| reading(&format!("K{t}"), b * 100 + k, k as f64))
                    .collect();
                store.append(rs, auto()).await.unwrap();
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {t} {b}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("ESPWATCH_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = [-1i64; 4];
        let started = std::time::Instant::now();
        let mut lines = BufReader::new(stdout).lines();
        while started.elapsed() < Duration::from_millis(1500) {
            let Some(Ok(line)) = lines.next() else { break };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["ACK", t, b] = parts[..] {
                acked[t.parse::<usize>().unwrap()] = b.parse().unwrap();
            }
        }
        (acked, lines)
    });
    let (acked, lines) = reader.join().unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(lines);
    assert!(
        acked.iter().all(|b| *b > 5),
        "child made too little progress: {acked:?}"
    );

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert!(
        store.stats().await.unwrap().segments > 0,
        "no checkpoint happened before the kill"
    );
    for (t, &last) in acked.iter().enumerate() {
        let got = store
            .read_range(&well(&format!("K{t}")), all_time())
            .await
            .unwrap();
        // Every acknowledged batch is there; batches are atomic; nothing counted twice.
        assert!(
            got.len() as i64 >= (last + 1) * 100,
            "task {t}: {} < {}",
            got.len(),
            (last + 1) * 100
        );
        assert_eq!(got.len() % 100, 0, "task {t}: partial batch");
        let secs: Vec<i64> = got
            .iter()
            .map(|p| (p.0.0 - conformance::T0) / conformance::SEC)
            .collect();
        assert!(
            secs.iter().enumerate().all(|(i, s)| *s == i as i64),
            "task {t}: gaps or repeats"
        );
    }
    store.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The security store: conformance, then what only the embedded one has (several processes on
// one `security.sqlite`, next to a running telemetry store).

struct EmbeddedSecurityHarness {
    dir: tempfile::TempDir,
}

impl EmbeddedSecurityHarness {
    fn new() -> Self {
        EmbeddedSecurityHarness {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A raw connection to the file, as an attacker with file access would have.
    fn raw(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.dir.path().join("security.sqlite")).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }
}

#[async_trait]
impl security_conformance::SecurityHarness for EmbeddedSecurityHarness {
    async fn open(&self) -> Arc<dyn SecurityStore> {
        Arc::new(EmbeddedSecurityStore::open(self.dir.path()).unwrap())
    }

    async fn open_keyed(&self, key: espwatch_store::AuditKey) -> Arc<dyn SecurityStore> {
        Arc::new(
            EmbeddedSecurityStore::open(self.dir.path())
                .unwrap()
                .with_audit_key(Some(key)),
        )
    }

    async fn tamper_audit(&self, id: i64) {
        self.raw()
            .execute("UPDATE audit SET status = status + 1 WHERE id = ?1", [id])
            .expect_err("the database itself refuses changes to the audit log");
        // An attacker with the file drops the trigger first; the chain still tells.
        let raw = self.raw();
        raw.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        let n = raw
            .execute("UPDATE audit SET status = status + 1 WHERE id = ?1", [id])
            .unwrap();
        assert_eq!(n, 1);
    }

    async fn delete_audit(&self, id: i64) {
        let raw = self.raw();
        raw.execute_batch("DROP TRIGGER IF EXISTS audit_no_delete;")
            .unwrap();
        let n = raw
            .execute("DELETE FROM audit WHERE id = ?1", [id])
            .unwrap();
        assert_eq!(n, 1);
    }

    async fn corrupt_role(&self, name: &str) {
        let n = self
            .raw()
            .execute("UPDATE users SET role = 'wizard' WHERE name = ?1", [name])
            .unwrap();
        assert_eq!(n, 1);
    }
}

mod security_suite {
    use super::*;
    security_conformance::security_conformance_tests!(EmbeddedSecurityHarness::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_store_is_shared_with_a_running_server_and_the_cli() {
    use security_conformance::{at, event, new_user};

    let dir = tempfile::tempdir().unwrap();
    // The "server": telemetry store (holding the directory lock) and its security store.
    let telemetry = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let server = EmbeddedSecurityStore::open(dir.path()).unwrap();
    // The "CLI": opens the same directory's security store while the server runs.
    let cli = EmbeddedSecurityStore::open(dir.path()).unwrap();
    assert_eq!(cli.path(), dir.path().join("security.sqlite"));

    cli.create_user(new_user("root", Role::Admin), at(0))
        .await
        .unwrap();
    assert_eq!(
        server.get_user("root").await.unwrap().unwrap().role,
        Role::Admin
    );
    match server
        .create_user(new_user("root", Role::Viewer), at(1))
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }

    // Both append concurrently; one chain comes out.
    let mut tasks = Vec::new();
    for (who, store) in [("server", server.clone()), ("cli", cli.clone())] {
        for t in 0..3i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..20i64 {
                    let batch = (0..3)
                        .map(|i| event(t * 100 + b * 3 + i, "request", Some(who), 200))
                        .collect();
                    store.append_audit(batch).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for store in [&server, &cli] {
        let v = store.verify_audit().await.unwrap();
        assert_eq!((v.records, v.first_broken), (360, None), "{:?}", v.reason);
    }
    let all = cli
        .list_audit(&AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all[0].id, 360);
    for who in ["server", "cli"] {
        let n = all
            .iter()
            .filter(|r| r.event.actor.as_deref() == Some(who))
            .count();
        assert_eq!(n, 180, "{who}");
    }
    telemetry.close().await.unwrap();
}

/// Child half of `audit_appends_from_several_processes_form_one_chain`: appends 40 batches
/// to the security store of `ESPWATCH_AUDIT_CHILD_DIR`. Does nothing unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn audit_child() {
    let Some(dir) = std::env::var_os("ESPWATCH_AUDIT_CHILD_DIR") else {
        return;
    };
    let me = std::process::id().to_string();
    let store = EmbeddedSecurityStore::open(Path::new(&dir)).unwrap();
    for b in 0..40i64 {
        let batch = (0..(1 + b % 5))
            .map(|i| security_conformance::event(b * 10 + i, "request", Some(&me), 200))
            .collect();
        store.append_audit(batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_appends_from_several_processes_form_one_chain() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    // Create the file first so the children race on appends, not on the schema.
    let here = EmbeddedSecurityStore::open(dir.path()).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "audit_child", "--ignored", "--test-threads", "1"])
                .env("ESPWATCH_AUDIT_CHILD_DIR", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    for b in 0..40i64 {
        here.append_audit(vec![security_conformance::event(
            b,
            "request",
            Some("parent"),
            200,
        )])
        .await
        .unwrap();
    }
    for mut child in children {
        assert!(child.wait().unwrap().success(), "child failed");
    }
    // Each child appended 1+2+3+4+5 per 5 batches = 15 × 8 = 120 records.
    let expected = 3 * 120 + 40;
    let v = here.verify_audit().await.unwrap();
    assert_eq!(
        (v.records, v.first_broken),
        (expected, None),
        "{:?}",
        v.reason
    );
    let actors: std::collections::HashSet<_> = here
        .list_audit(&AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.event.actor)
        .collect();
    assert_eq!(actors.len(), 4);
}

#[cfg(unix)]
#[tokio::test]
async fn security_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedSecurityStore::open(dir.path()).unwrap();
    store
        .append_audit(vec![security_conformance::event(0, "request", None, 200)])
        .await
        .unwrap();
    for file in [
        "security.sqlite",
        "security.sqlite-wal",
        "security.sqlite-shm",
    ] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file}: {mode:o}");
    }
}

#[tokio::test]
async fn security_store_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedSecurityStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("security.sqlite")).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    match EmbeddedSecurityStore::open(dir.path()) {
        Err(StoreError::Internal(msg)) => assert!(msg.contains("newer"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

/// The data directory is the owner's only, and so are the telemetry and alarm databases (and
/// the WAL files SQLite makes next to them); an existing directory others could read is
/// tightened at open.
#[cfg(unix)]
#[tokio::test]
async fn data_directory_and_databases_are_private_to_their_owner() {
    use espwatch_store::{AlarmFilter, AlarmStore};
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
    let fresh = root.path().join("fresh");
    let store = EmbeddedStore::open(&fresh, EmbeddedOptions::default()).unwrap();
    store
        .append(vec![reading("W-1", 0, 1.0)], auto())
        .await
        .unwrap();
    store.list_alarms(&AlarmFilter::default()).await.unwrap();
    assert_eq!(mode(&fresh) & 0o777, 0o700, "{:o}", mode(&fresh));
    for file in ["espwatch.db", "espwatch.db-wal", "alarms.sqlite"] {
        let path = fresh.join(file);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{file}: {:o}", mode(&path));
        } else {
            assert_ne!(file, "espwatch.db", "the database exists");
        }
    }
    drop(store);
    // A directory created by someone else's umask is tightened.
    let loose = root.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(EmbeddedStore::open(&loose, EmbeddedOptions::default()).unwrap());
    assert_eq!(mode(&loose) & 0o077, 0, "{:o}", mode(&loose));
}

/// An online backup taken while readings are being appended holds every reading acknowledged
/// before it started, restores into a new directory that opens and reads, and a damaged
/// backup is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_restores_every_acknowledged_reading() {
    use espwatch_store::embedded::backup;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            checkpoint_readings: 2_000,
            ..EmbeddedOptions::default()
        },
    )
    .unwrap();
    let acked = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writer = {
        let store = store.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            for batch in 0..200i64 {
                let rs = (0..100)
                    .map(|i| reading("B1", batch * 100 + i, 1.5))
                    .collect();
                store.append(rs, auto()).await.unwrap();
                acked.store((batch + 1) * 100, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 5_000 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before = acked.load(std::sync::atomic::Ordering::SeqCst);
    let dest = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().to_owned(), dest.path().join("b"));
    let report = tokio::task::spawn_blocking(move || backup::backup(&from, &to))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    let backed_up = report.manifest.readings as i64;
    assert!(backed_up >= before, "{backed_up} < {before}");
    assert!(dest.path().join("b").join(backup::MANIFEST).exists());

    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("data");
    let (from, to) = (dest.path().join("b"), target.clone());
    let back = tokio::task::spawn_blocking(move || backup::restore(&from, &to))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.manifest.readings as i64, backed_up);
    let copy = EmbeddedStore::open(&target, EmbeddedOptions::default()).unwrap();
    let got = copy.read_range(&well("B1"), all_time()).await.unwrap();
    assert_eq!(got.len() as i64, backed_up);
    // A prefix of what was acknowledged, nothing else.
    for (i, (t, _)) in got.iter().enumerate() {
        assert_eq!(*t, conformance::ts(i as i64));
    }
    copy.close().await.unwrap();
    store.close().await.unwrap();

    // Restoring into a directory that is not empty, or from a damaged backup, is refused.
    let (from, to) = (dest.path().join("b"), target.clone());
    assert!(
        tokio::task::spawn_blocking(move || backup::restore(&from, &to))
            .await
            .unwrap()
            .is_err()
    );
    restore_refuses_a_damaged_copy(dest.path().join("b"), restored.path().join("other")).await;
}

/// Issue 23: re-sent data is decided from memory, with exact counts, and what is accepted among
/// it is durable. 100 wells (more than the 64 segments the duplicate check used to cache: a
/// step-major batch cycled through them, so every re-sent reading read its segment back) ×
/// 8 h at 60 s, two 4 h windows each; 10 wells irregular (every 7th reading missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sent_sealed_data_is_counted_exactly_and_checked_from_memory() {
    use espwatch_core::Reading;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let (wells, steps) = (100i64, 480i64);
    let name = |w: i64| format!("D{w:03}");
    let missing = |w: i64, step: i64| w < 10 && step % 7 == 3;
    // Step-major, as gateways forward: every well's reading of one minute, then the next.
    let all: Vec<Reading> = (0..steps)
        .flat_map(|s| {
            (0..wells)
                .filter(move |w| !missing(*w, s))
                .map(move |w| reading(&name(w), s * 60, (w * 1000 + s) as f64))
        })
        .collect();
    let send_all = |store: EmbeddedStore, want: ReadingOutcome| {
        let all = all.clone();
        async move {
            for chunk in all.chunks(1000) {
                let out = store.append(chunk.to_vec(), auto()).await.unwrap();
                assert!(
                    out.outcomes.iter().all(|o| *o == want),
                    "{:?}",
                    out.outcomes
                );
            }
        }
    };
    send_all(store.clone(), ReadingOutcome::Accepted).await;
    store.checkpoint().await.unwrap();
    assert_eq!(store.stats().await.unwrap().readings_in_log, 0);

    // Everything again: all duplicates. Only the irregular wells' segments are read back,
    // once each; the regular ones are decided by the grid kept when they were sealed.
    send_all(store.clone(), ReadingOutcome::Duplicate).await;
    assert_eq!(store.duplicate_check_loads(), 20);
    send_all(store.clone(), ReadingOutcome::Duplicate).await;
    assert_eq!(
        store.duplicate_check_loads(),
        20,
        "cached after the first time"
    );

    // New readings among re-sent ones: the irregular wells' gaps, off-grid times inside the
    // regular wells' segments, a repeat within the request (the first value wins).
    let mut mixed = Vec::new();
    let mut expect = Vec::new();
    for w in 0..10 {
        for s in (3..steps).step_by(7) {
            mixed.push(reading(&name(w), s * 60, -1.0));
            expect.push(ReadingOutcome::Accepted);
            mixed.push(reading(&name(w), s * 60 - 60, 7.0));
            expect.push(ReadingOutcome::Duplicate);
        }
    }
    for w in 10..20 {
        mixed.push(reading(&name(w), 100 * 60 + 30, -2.0));
        expect.push(ReadingOutcome::Accepted);
        mixed.push(reading(&name(w), 100 * 60, 7.0));
        expect.push(ReadingOutcome::Duplicate);
    }
    mixed.push(reading(&name(0), 3 * 60, -9.0));
    expect.push(ReadingOutcome::Duplicate);
    let out = store.append(mixed.clone(), auto()).await.unwrap();
    assert_eq!(out.outcomes, expect);
    let accepted = expect
        .iter()
        .filter(|o| **o == ReadingOutcome::Accepted)
        .count();
    assert_eq!(accepted, 10 * 69 + 10);

    // Acknowledged means durable: a crash image taken now holds every accepted reading once,
    // with the first value; and, its segments read from disk, it counts the whole re-send as
    // duplicates again, reading each segment back at most once.
    let copy = tempfile::tempdir().unwrap();
    copy_db(dir.path(), copy.path());
    let recovered = EmbeddedStore::open(copy.path(), EmbeddedOptions::default()).unwrap();
    let w0 = recovered
        .read_range(&well(&name(0)), all_time())
        .await
        .unwrap();
    assert_eq!(w0.len(), steps as usize);
    let at = |points: &[espwatch_core::Point], secs: i64| {
        points
            .iter()
            .find(|p| p.0 == conformance::ts(secs))
            .and_then(|p| p.1.get(espwatch_core::Field::FrequencyHz))
    };
    assert_eq!(at(&w0, 3 * 60), Some(-1.0));
    assert_eq!(at(&w0, 4 * 60), Some(4.0));
    let w12 = recovered
        .read_range(&well(&name(12)), all_time())
        .await
        .unwrap();
    assert_eq!(w12.len(), steps as usize + 1);
    assert_eq!(at(&w12, 6030), Some(-2.0));
    assert_eq!(at(&w12, 6000), Some(12_100.0));
    send_all(recovered.clone(), ReadingOutcome::Duplicate).await;
    let out = recovered.append(mixed, auto()).await.unwrap();
    assert!(out.outcomes.iter().all(|o| *o == ReadingOutcome::Duplicate));
    assert_eq!(recovered.duplicate_check_loads(), 200);
    recovered.close().await.unwrap();
    store.close().await.unwrap();
}

/// Log shipping (issue 20): a checkpoint keeps the log batches the shipper has not shipped
/// (readable by `log_since`, never replayed as unsealed), drops them once the shipper's floor
/// passes them, and log ids keep growing across checkpoints that empty the log and reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_the_log_the_shipper_has_not_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        keep_log_for_shipping: true,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    for batch in 0..3 {
        let readings: Vec<_> = (0..10)
            .map(|i| reading("S", batch * 10 + i, i as f64))
            .collect();
        store.append(readings, auto()).await.unwrap();
    }
    store.checkpoint().await.unwrap();
    let kept = store.log_since(0, usize::MAX).unwrap();
    assert_eq!(kept.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(kept.iter().all(|r| r.committed_at > 0));
    let readings = espwatch_store::decode_log_readings(&kept[1].data).unwrap();
    assert_eq!(readings.len(), 10);
    assert_eq!(readings[0].ts, reading("S", 10, 0.0).ts);
    assert_eq!(store.log_since(2, usize::MAX).unwrap().len(), 1);
    assert_eq!(store.last_log_batch().0, 3);

    // Reopened: the kept batches are sealed, not replayed (no reading twice), still there
    // for the shipper; the next id follows the last.
    store.close().await.unwrap();
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(store.stats().await.unwrap().readings_in_log, 0);
    assert_eq!(
        store
            .read_range(&well("S"), all_time())
            .await
            .unwrap()
            .len(),
        30
    );
    assert_eq!(store.log_since(0, usize::MAX).unwrap().len(), 3);
    store.set_ship_floor(3);
    store
        .append(vec![reading("S", 100, 1.0)], auto())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    let left = store.log_since(0, usize::MAX).unwrap();
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [4]);

    // Everything shipped and checkpointed: both tables empty, yet ids go on after a reopen.
    store
        .append(vec![reading("S", 101, 1.0)], auto())
        .await
        .unwrap();
    store.set_ship_floor(5);
    store.checkpoint().await.unwrap();
    assert!(store.log_since(0, usize::MAX).unwrap().is_empty());
    store.close().await.unwrap();
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    assert!(store.log_since(0, usize::MAX).unwrap().is_empty());
    store
        .append(vec![reading("S", 102, 1.0)], auto())
        .await
        .unwrap();
    assert_eq!(store.last_log_batch().0, 6);
    assert_eq!(
        store
            .read_range(&well("S"), all_time())
            .await
            .unwrap()
            .len(),
        33
    );
    store.close().await.unwrap();

    // Without shipping a checkpoint keeps nothing.
    let plain = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(plain.path(), EmbeddedOptions::default()).unwrap();
    store
        .append(vec![reading("P", 1, 1.0)], auto())
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    assert!(store.log_since(0, usize::MAX).unwrap().is_empty());
    store.close().await.unwrap();
}

/// Issue 20: the backup's verification (every segment decoded, now spread over the cores) still
/// refuses a copy holding a segment that does not decode, or one that decodes to another number
/// of readings than its row says, and names each of them.
#[tokio::test]
async fn a_backup_of_damaged_segments_is_refused_naming_each() {
    use espwatch_store::embedded::backup;
    const HOUR: i64 = 3600;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let wells: Vec<String> = (0..24).map(|i| format!("V{i:02}")).collect();
    let mut rs = Vec::new();
    for w in &wells {
        for t in (0..9 * HOUR).step_by(600) {
            rs.push(reading(w, t, 1.0 + t as f64 / 1e4));
        }
    }
    store.append(rs, auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();

    // A clean store backs up.
    let dest = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().to_owned(), dest.path().join("clean"));
    let ok = tokio::task::spawn_blocking(move || backup::backup(&from, &to))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.manifest.readings, 24 * 54);
    {
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        let n = conn
            .execute(
                "UPDATE segments SET data = x'01ff' WHERE well_id = 'V07' AND window_start =
                 (SELECT min(window_start) FROM segments WHERE well_id = 'V07')",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
        let n = conn
            .execute(
                "UPDATE segments SET count = count + 1 WHERE well_id = 'V19' AND window_start =
                 (SELECT min(window_start) FROM segments WHERE well_id = 'V19')",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let (from, to) = (dir.path().to_owned(), dest.path().join("damaged"));
    let refused = tokio::task::spawn_blocking(move || backup::backup(&from, &to))
        .await
        .unwrap();
    let text = format!("{refused:?}");
    assert!(refused.is_err(), "{text}");
    assert!(text.contains("segment (V07, "), "{text}");
    assert!(text.contains("segment (V19, "), "{text}");
    assert!(
        !dest.path().join("damaged").join(backup::MANIFEST).exists(),
        "no manifest for a refused backup"
    );
}

/// Issue 20: a segment is verified by the checksum recorded when it was written, so bytes
/// that changed afterwards are caught even when they still decode to as many readings (here
/// another well's segment of the same window written into the row: a misdirected write),
/// by the backup, by `store check` and `store repair`. The manifest records the checksum
/// verification, and a restore trusts it while still refusing a damaged file.
#[tokio::test]
async fn a_segment_changed_after_sealing_is_caught_by_its_checksum() {
    use espwatch_store::embedded::{backup, check};
    const HOUR: i64 = 3600;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut rs = Vec::new();
    for (w, v) in [("C1", 1.0), ("C2", 2.0)] {
        for t in (0..9 * HOUR).step_by(600) {
            rs.push(reading(w, t, v + t as f64 / 1e4));
        }
    }
    store.append(rs, auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();

    let dest = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().to_owned(), dest.path().join("clean"));
    let made = tokio::task::spawn_blocking(move || backup::backup(&from, &to))
        .await
        .unwrap()
        .unwrap();
    let verified = made
        .manifest
        .verified
        .clone()
        .expect("verification recorded");
    assert!(verified.segments_by_checksum >= 2, "{verified:?}");
    assert_eq!(verified.segments_decoded, 0, "{verified:?}");
    let (from, to) = (dest.path().join("clean"), dest.path().join("restored"));
    let back = tokio::task::spawn_blocking(move || backup::restore(&from, &to))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.manifest.readings, 2 * 54);

    let ws: i64 = {
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        let ws: i64 = conn
            .query_row(
                "SELECT min(window_start) FROM segments WHERE well_id = 'C2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = conn
            .execute(
                "UPDATE segments SET data = (SELECT data FROM segments
                                             WHERE well_id = 'C1' AND window_start = ?1)
                 WHERE well_id = 'C2' AND window_start = ?1",
                [ws],
            )
            .unwrap();
        assert_eq!(n, 1);
        ws
    };
    let named = format!("segment (C2, {ws}): does not match its checksum");
    let (from, to) = (dir.path().to_owned(), dest.path().join("damaged"));
    let refused = tokio::task::spawn_blocking(move || backup::backup(&from, &to))
        .await
        .unwrap();
    let text = format!("{refused:?}");
    assert!(refused.is_err() && text.contains(&named), "{text}");
    let report = check::check(dir.path()).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert!(report.damaged[0].starts_with(&named), "{report:?}");
    let repaired = check::repair(dir.path()).unwrap();
    assert_eq!(repaired.repaired, 1, "{repaired:?}");
    assert!(check::check(dir.path()).unwrap().is_clean());

    // A damaged backup file is still refused by a restore that trusts the verification.
    restore_refuses_a_damaged_copy(dest.path().join("clean"), dest.path().join("again")).await;
}

/// Issue 20: a backup made before segment checksums (its manifest records no verification)
/// is verified again when restored: a segment that changed in it is refused by name even
/// when the file's SHA-256 matches the manifest.
#[tokio::test]
async fn a_backup_without_a_recorded_verification_is_verified_on_restore() {
    use espwatch_store::embedded::backup;
    const HOUR: i64 = 3600;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let rs = (0..9 * HOUR)
        .step_by(600)
        .map(|t| reading("O1", t, 1.0 + t as f64 / 1e4))
        .collect();
    store.append(rs, auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    store.close().await.unwrap();
    let dest = tempfile::tempdir().unwrap();
    let b = dest.path().join("b");
    let (from, to) = (dir.path().to_owned(), b.clone());
    tokio::task::spawn_blocking(move || backup::backup(&from, &to))
        .await
        .unwrap()
        .unwrap();
    // As an older release wrote it: no verification record, and a segment that does not
    // decode, with the file's checksum matching the manifest.
    let db = b.join("espwatch.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n = conn
            .execute(
                "UPDATE segments SET data = x'01ff', checksum = NULL WHERE window_start =
                 (SELECT min(window_start) FROM segments)",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let path = b.join(backup::MANIFEST);
    let mut manifest: backup::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest.verified = None;
    let bytes = std::fs::read(&db).unwrap();
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(&bytes);
    let file = manifest
        .files
        .iter_mut()
        .find(|f| f.name == "espwatch.db")
        .unwrap();
    file.bytes = bytes.len() as u64;
    file.sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, serde_json::to_string(&manifest).unwrap()).unwrap();

    let (from, to) = (b.clone(), dest.path().join("restored"));
    let refused = tokio::task::spawn_blocking(move || backup::restore(&from, &to))
        .await
        .unwrap();
    let text = format!("{refused:?}");
    assert!(refused.is_err() && text.contains("segment (O1, "), "{text}");
}

/// Log shipping (issue 20): batches the shipper shipped or gave up (its floor raised) are
/// deleted by an idle store too, not left on disk until the next append or checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_store_deletes_the_log_below_a_raised_ship_floor() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        keep_log_for_shipping: true,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    for batch in 0..3 {
        let readings: Vec<_> = (0..10)
            .map(|i| reading("I", batch * 10 + i, i as f64))
            .collect();
        store.append(readings, auto()).await.unwrap();
    }
    store.checkpoint().await.unwrap();
    let ids = |store: &EmbeddedStore| {
        store
            .log_since(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&store), [1, 2, 3]);
    // Nothing else happens on the store from here on.
    store.set_ship_floor(2);
    let mut left = ids(&store);
    for _ in 0..1000 {
        if left == [3] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        left = ids(&store);
    }
    assert_eq!(left, [3], "the idle store kept the batches below the floor");
    store.close().await.unwrap();
}

/// Issue 20 (fleet aggregates < 50 ms): after a bulk load, every window gets its fleet
/// rollup row without further writes or checkpoints, so a fleet aggregate of every well is
/// answered from the rows, not well by well (a checkpoint builds a few rows only; before,
/// the rest stayed missing until later checkpoints, and the query read every well's
/// rollups there). The same after a late well writes into every window again. The answers
/// equal the raw computation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_bulk_load_fleet_aggregates_are_answered_from_the_fleet_tier() {
    use espwatch_core::series::evaluate;
    use espwatch_core::{Agg, Field, TimeRange, Timestamp};
    use espwatch_store::FleetQuery;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let days = 4i64;
    let wells = ["F-1", "F-2", "F-3"];
    // In time order, as a fleet reports: a minute of every well at a time.
    let mut batch = Vec::new();
    for minute in 0..days * 1440 {
        for (k, w) in wells.iter().enumerate() {
            batch.push(reading(
                w,
                minute * 60 + k as i64,
                (minute % 97) as f64 + k as f64,
            ));
        }
        if batch.len() >= 3000 {
            store
                .append(std::mem::take(&mut batch), auto())
                .await
                .unwrap();
        }
    }
    store.append(batch, auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    let windows = (days * 6) as u64;
    let query = FleetQuery {
        wells: Vec::new(),
        range: TimeRange {
            from: Timestamp(conformance::T0),
            to: Timestamp(conformance::T0 + days * 86_400 * conformance::SEC),
        },
        fields: vec![Field::IntakePressurePsi, Field::FrequencyHz],
        step_micros: 3_600 * conformance::SEC,
        agg: Agg::Avg,
    };
    let caught_up = |store: EmbeddedStore| async move {
        // No write from here on: the store builds what is missing by itself.
        for _ in 0..6000 {
            if store.fleet_tier().stale_windows == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            store.fleet_tier().stale_windows,
            0,
            "fleet rollups still missing with nothing else to do"
        );
    };
    let check = |store: EmbeddedStore, names: Vec<&'static str>, what: &'static str| {
        let query = query.clone();
        async move {
            let before = store.fleet_tier();
            let got = store.fleet_aggregate(&query).await.unwrap();
            let after = store.fleet_tier();
            assert_eq!(
                (
                    after.windows_from_rows - before.windows_from_rows,
                    after.windows_well_by_well - before.windows_well_by_well
                ),
                (windows, 0),
                "{what}: windows from fleet rows, well by well"
            );
            let mut points = Vec::new();
            for name in names {
                points.extend(store.read_range(&well(name), query.range).await.unwrap());
            }
            points.sort_by_key(|p| p.0);
            let want = evaluate(&query.for_well(well("fleet")), &points);
            assert_eq!(got.ts, want.ts, "{what}");
            for ((_, a), (_, b)) in got.columns.iter().zip(&want.columns) {
                for (x, y) in a.iter().zip(b) {
                    let (x, y) = (x.unwrap(), y.unwrap());
                    assert!(
                        (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                        "{what}: {x} vs {y}"
                    );
                }
            }
        }
    };
    caught_up(store.clone()).await;
    check(store.clone(), wells.to_vec(), "after the load").await;

    // A well sent later over the whole range writes into every window (as a long history
    // loaded after the fleet does): every row is out of date again.
    let late: Vec<_> = (0..days * 288)
        .map(|i| reading("F-LATE", i * 300 + 7, 500.0 + (i % 13) as f64))
        .collect();
    store.append(late, auto()).await.unwrap();
    store.checkpoint().await.unwrap();
    caught_up(store.clone()).await;
    check(
        store.clone(),
        vec!["F-1", "F-2", "F-3", "F-LATE"],
        "after a late well",
    )
    .await;
    store.close().await.unwrap();
}

/// Flips one byte near the end of a backup's database file: a restore from it into `to` must
/// be refused, naming the checksum that no longer matches.
async fn restore_refuses_a_damaged_copy(backup_dir: std::path::PathBuf, to: std::path::PathBuf) {
    use espwatch_store::embedded::backup;
    let db = backup_dir.join("espwatch.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0xFF;
    std::fs::write(&db, bytes).unwrap();
    let refused = tokio::task::spawn_blocking(move || backup::restore(&backup_dir, &to))
        .await
        .unwrap();
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("checksum")),
        "{refused:?}"
    );
}
