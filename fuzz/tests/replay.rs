//! Issue 17: every fuzz target's corpus (`fuzz/corpus/<target>`) and crash reproducers
//! (`fuzz/artifacts/<target>`) replayed through the same entry points on every `cargo test`,
//! so a fixed crash stays fixed and the seeds stay meaningful. Seconds, no fuzzing.

#[test]
fn every_corpus_and_reproducer_replays() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, run) in espwatch_fuzz::TARGETS {
        let mut replayed = 0;
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{target}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(replayed >= 3, "{target}: the seed corpus is missing");
    }
}
