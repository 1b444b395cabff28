//! Times the embedded store's backup and restore (the library calls behind `espwatch store
//! backup|restore`), each step apart, on a data directory of your choice:
//!
//! ```text
//! cargo run --release -p espwatch-store --example backup_time -- DATA_DIR WORK_DIR [RUNS] [--former]
//! cargo run --release -p espwatch-store --example backup_time -- --fill DIR WELLS DAYS [COPIES]
//! cargo run --release -p espwatch-store --example backup_time -- --hashes DATA_DIR [MB]
//! cargo run --release -p espwatch-store --example backup_time -- --parts DATA_DIR WORK_DIR [RUNS]
//! ```
//!
//! `--parts` times the steps of a backup of the telemetry database one by one: `VACUUM INTO`
//! alone (what `backup` copies with), a plain file copy of the same database (a lower bound
//! for any page copy; not consistent next to a writer, so only for timing), the SHA-256 of
//! the copy, and `check::verify_copy` of the copy; each step on its own, medians of RUNS.
//!
//! `--hashes` prints one core's XXH3-64 and SHA-256 speed over MB (default 512) of the store's
//! segment blobs (why segment checksums are XXH3: see `codec::segment_checksum`).
//!
//! `--fill` makes a store to time: WELLS wells × DAYS days at 10 s, 13 channels as random
//! walks at gauge precision (two decimals), sealed compact; then, to reach several GB
//! quickly, its wells, segments and rollups copied COPIES times under other well ids with SQL
//! (`X0001-FILL-0000`, ...; a segment's checksum does not cover its well id, so the copies
//! verify).
//!
//! Each run backs `DATA_DIR` up into `WORK_DIR/b<i>`, restores that into `WORK_DIR/r<i>`, and
//! verifies the restored copy once more on its own (`check::verify_copy`: by the segments'
//! checksums); with `--former`, also the one-thread decoding check of earlier releases. It
//! prints the seconds of each and the medians. `WORK_DIR` is emptied of what it made after
//! each run.

use std::path::PathBuf;
use std::time::Instant;

use espwatch_store::embedded::{backup, check};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fill(dir: &std::path::Path, wells: usize, days: i64) {
    use espwatch_core::{FIELD_COUNT, Measurements, Reading, Timestamp, WellId};
    use espwatch_store::{AppendOptions, EmbeddedOptions, EmbeddedStore, Store};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(dir, EmbeddedOptions::default()).expect("open");
        let base = 1_767_225_600_000_000i64;
        let steps = days * 8640;
        let mut state = vec![[100.0f64; FIELD_COUNT]; wells];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let ids: Vec<WellId> = (0..wells)
            .map(|w| WellId::parse(&format!("FILL-{w:04}")).expect("id"))
            .collect();
        for chunk in (0..steps).step_by(360) {
            let mut batch = Vec::with_capacity(wells * 360);
            for (w, id) in ids.iter().enumerate() {
                for step in chunk..(chunk + 360).min(steps) {
                    let mut raw = [f64::NAN; FIELD_COUNT];
                    for (c, v) in raw.iter_mut().enumerate() {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let walk = (seed % 201) as f64 / 100.0 - 1.0;
                        state[w][c] += walk * 0.1;
                        *v = (state[w][c] * 100.0).round() / 100.0;
                    }
                    batch.push(Reading {
                        well_id: id.clone(),
                        ts: Timestamp(base + step * 10_000_000),
                        values: Measurements::from_raw(raw),
                    });
                }
            }
            store
                .append(batch, AppendOptions::default())
                .await
                .expect("append");
        }
        store.compact().await.expect("compact");
        store.close().await.expect("close");
    });
}

fn copy_wells(dir: &std::path::Path, copies: usize) {
    let conn = rusqlite::Connection::open(dir.join("espwatch.db")).expect("open");
    conn.execute_batch("PRAGMA synchronous=OFF;")
        .expect("pragma");
    for k in 1..=copies {
        let t = Instant::now();
        let prefix = format!("X{k:04}-");
        conn.execute_batch(&format!(
            "BEGIN;
             INSERT INTO wells SELECT '{prefix}' || well_id, meta, created_at, updated_at,
                 auto_registered FROM wells WHERE well_id >= 'FILL-' AND well_id < 'FILL.';
             INSERT INTO segments(well_id, window_start, min_ts, max_ts, count, data, checksum)
                 SELECT '{prefix}' || well_id, window_start, min_ts, max_ts, count, data,
                 checksum FROM segments WHERE well_id >= 'FILL-' AND well_id < 'FILL.';
             INSERT INTO rollups SELECT '{prefix}' || well_id, window_start, data
                 FROM rollups WHERE well_id >= 'FILL-' AND well_id < 'FILL.';
             COMMIT;"
        ))
        .expect("copying wells");
        if k % 25 == 0 || k == copies {
            println!("copy {k}/{copies}: {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
}

/// One core's hashing speed over the store's first `mb` MB of segment blobs: XXH3-64 (the
/// segment checksum) and SHA-256 (the manifest's), GB/s, best of three.
fn hash_speed(dir: &std::path::Path, mb: usize) {
    use sha2::Digest as _;
    let conn = rusqlite::Connection::open(dir.join("espwatch.db")).expect("open");
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut stmt = conn.prepare("SELECT data FROM segments").expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(row) = rows.next().expect("row") {
        let b: Vec<u8> = row.get(0).expect("blob");
        total += b.len();
        blobs.push(b);
        if total >= mb << 20 {
            break;
        }
    }
    let best = |f: &dyn Fn(&[u8]) -> u64| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let mut acc = 0u64;
                for b in &blobs {
                    acc ^= f(b);
                }
                std::hint::black_box(acc);
                total as f64 / t.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    };
    let xxh3 = best(&|b| xxhash_rust::xxh3::xxh3_64(b));
    let sha = best(&|b| {
        let d = sha2::Sha256::digest(b);
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    });
    println!(
        "{} segments, {:.1} MB: XXH3-64 {xxh3:.2} GB/s, SHA-256 {sha:.2} GB/s (one core, best of 3)",
        blobs.len(),
        total as f64 / 1e6
    );
}

/// Each step of a backup of `data`'s telemetry database timed alone (see the module doc).
fn parts(data: &std::path::Path, work: &std::path::Path, runs: usize) {
    use sha2::Digest as _;
    use std::io::Read as _;
    let db = data.join("espwatch.db");
    let bytes = std::fs::metadata(&db).expect("database").len();
    let (mut vacuums, mut copies, mut shas, mut verifies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let sync = |p: &std::path::Path| {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .expect("sync");
    };
    for i in 0..runs {
        let out = work.join(format!("p{i}"));
        std::fs::create_dir_all(&out).expect("work dir");
        let to = out.join("espwatch.db");
        let t = Instant::now();
        let conn = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open");
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
            .expect("vacuum into");
        drop(conn);
        sync(&to);
        vacuums.push(t.elapsed().as_secs_f64());
        let plain = work.join(format!("plain{i}.db"));
        let t = Instant::now();
        std::fs::copy(&db, &plain).expect("copy");
        sync(&plain);
        copies.push(t.elapsed().as_secs_f64());
        std::fs::remove_file(&plain).expect("cleaning up");
        let t = Instant::now();
        let mut file = std::fs::File::open(&to).expect("copy");
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        std::hint::black_box(hasher.finalize());
        shas.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (report, _) = check::verify_copy(&out).expect("verify");
        assert!(report.is_clean());
        verifies.push(t.elapsed().as_secs_f64());
        println!(
            "run {i}: {:.1} MB: VACUUM INTO {:.2} s, file copy {:.2} s, SHA-256 {:.2} s, \
             verify_copy {:.2} s",
            bytes as f64 / 1e6,
            vacuums[i],
            copies[i],
            shas[i],
            verifies[i]
        );
        std::fs::remove_dir_all(&out).expect("cleaning up");
    }
    println!(
        "medians of {runs}: VACUUM INTO {:.2} s, file copy {:.2} s, SHA-256 {:.2} s, \
         verify_copy {:.2} s",
        median(vacuums),
        median(copies),
        median(shas),
        median(verifies)
    );
}

fn main() {
    let args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--parts") {
        let a: Vec<String> = args.skip(1).collect();
        parts(
            std::path::Path::new(&a[0]),
            std::path::Path::new(&a[1]),
            a.get(2).map_or(3, |r| r.parse().expect("RUNS")),
        );
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--hashes") {
        let a: Vec<String> = args.skip(1).collect();
        hash_speed(
            std::path::Path::new(&a[0]),
            a.get(1).map_or(512, |m| m.parse().expect("MB")),
        );
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--fill") {
        let a: Vec<String> = args.skip(1).collect();
        let dir = std::path::Path::new(&a[0]);
        let t = Instant::now();
        fill(
            dir,
            a[1].parse().expect("WELLS"),
            a[2].parse().expect("DAYS"),
        );
        println!("filled in {:.1} s", t.elapsed().as_secs_f64());
        if let Some(copies) = a.get(3) {
            copy_wells(dir, copies.parse().expect("COPIES"));
        }
        return;
    }
    let former = std::env::args().any(|a| a == "--former");
    let mut args = args.filter(|a| a != "--former");
    let (Some(data), Some(work)) = (args.next(), args.next()) else {
        eprintln!("usage: backup_time DATA_DIR WORK_DIR [RUNS] [--former]");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(3, |r| r.parse().expect("RUNS"));
    let (data, work) = (PathBuf::from(data), PathBuf::from(work));
    let (mut backups, mut restores, mut verifies) = (Vec::new(), Vec::new(), Vec::new());
    let mut olds = Vec::new();
    for i in 0..runs {
        let (b, r) = (work.join(format!("b{i}")), work.join(format!("r{i}")));
        let t = Instant::now();
        let made = backup::backup(&data, &b).expect("backup");
        backups.push(t.elapsed().as_secs_f64());
        let bytes: u64 = made.manifest.files.iter().map(|f| f.bytes).sum();
        let t = Instant::now();
        let back = backup::restore(&b, &r).expect("restore");
        restores.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (report, readings) = check::verify_copy(&r).expect("verify");
        verifies.push(t.elapsed().as_secs_f64());
        assert!(report.is_clean() && readings == back.manifest.readings);
        if former {
            // The verification of earlier releases: one thread, every segment decoded.
            let t = Instant::now();
            let old = check::check(&r).expect("check");
            let counted = check::storage(&r).expect("storage").readings;
            olds.push(t.elapsed().as_secs_f64());
            assert!(old.is_clean() && counted == readings);
        }
        println!(
            "run {i}: {} readings, {:.1} MB, {} segments ({} by checksum): backup {:.2} s, \
             restore {:.2} s, verify alone {:.2} s{}",
            made.manifest.readings,
            bytes as f64 / 1e6,
            report.segments,
            report.checksummed,
            backups[i],
            restores[i],
            verifies[i],
            olds.get(i)
                .map(|s| format!(", the former verification {s:.2} s"))
                .unwrap_or_default()
        );
        std::fs::remove_dir_all(&b).expect("cleaning up");
        std::fs::remove_dir_all(&r).expect("cleaning up");
    }
    println!(
        "medians of {runs}: backup {:.2} s, restore {:.2} s, verify alone {:.2} s{}",
        median(backups),
        median(restores),
        median(verifies),
        if olds.is_empty() {
            String::new()
        } else {
            format!(", the former verification {:.2} s", median(olds))
        }
    );
}
