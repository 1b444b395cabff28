//! Times the embedded store's backup and restore (the library calls behind `espwatch store
//! backup|restore`), each step apart, on a data directory of your choice:
//!
//! ```text
//! cargo run --release -p espwatch-store --example backup_time -- DATA_DIR WORK_DIR [RUNS]
//! ```
//!
//! Each run backs `DATA_DIR` up into `WORK_DIR/b<i>`, restores that into `WORK_DIR/r<i>`, and
//! verifies the restored copy once more on its own; it prints the seconds of each and the
//! medians. `WORK_DIR` is emptied of what it made after each run.

use std::path::PathBuf;
use std::time::Instant;

use espwatch_store::embedded::{backup, check};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(data), Some(work)) = (args.next(), args.next()) else {
        eprintln!("usage: backup_time DATA_DIR WORK_DIR [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(3, |r| r.parse().expect("RUNS"));
    let (data, work) = (PathBuf::from(data), PathBuf::from(work));
    let (mut backups, mut restores, mut verifies) = (Vec::new(), Vec::new(), Vec::new());
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
        println!(
            "run {i}: {} readings, {:.1} MB: backup {:.2} s, restore {:.2} s, verify alone {:.2} s",
            made.manifest.readings,
            bytes as f64 / 1e6,
            backups[i],
            restores[i],
            verifies[i]
        );
        std::fs::remove_dir_all(&b).expect("cleaning up");
        std::fs::remove_dir_all(&r).expect("cleaning up");
    }
    println!(
        "medians of {runs}: backup {:.2} s, restore {:.2} s, verify alone {:.2} s",
        median(backups),
        median(restores),
        median(verifies)
    );
}
