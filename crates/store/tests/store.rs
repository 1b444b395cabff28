//! Integration tests of the embedded engine: the shared conformance suite (twice: default
//! tuning, and tuned to checkpoint constantly) plus engine-specific behaviour.

mod conformance;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conformance::{Harness, all_time, auto, reading, well};
use espwatch_store::{EmbeddedOptions, EmbeddedStore, ReadingOutcome, Store, StoreError};

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

#[tokio::test]
async fn corrupt_segment_is_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    store
        .append(vec![reading("C", 0, 1.0), reading("C", 10, 2.0)], auto())
        .await
        .unwrap();
    store.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("espwatch.db")).unwrap();
        let n = conn
            .execute("UPDATE segments SET data = x'01ff'", [])
            .unwrap();
        assert_eq!(n, 1);
    }
    // The newest segment is decoded at open for `latest`: refusing to start is the honest
    // answer to a corrupt database, with a message naming the segment.
    match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
        Err(StoreError::Internal(msg)) => assert!(msg.contains("segment (C,"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a corrupt store"),
    }
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
