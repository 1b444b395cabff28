#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders (issue 17): runs each cargo-fuzz target for SECONDS
# (default 60) on the nightly toolchain, growing fuzz/corpus/<target>. A crash leaves its
# input in fuzz/artifacts/<target>/: commit it; `cargo test -p espwatch-core` replays every
# corpus file and reproducer on stable (ingest::tests::fuzz_corpora_and_reproducers_replay).
# Needs: rustup toolchain nightly, `cargo install cargo-fuzz`.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../fuzz"
targets=$(cargo +nightly fuzz list)
status=0
for target in $targets; do
  echo "== $target: ${seconds}s"
  if ! cargo +nightly fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1; then
    echo "!! $target found a crash: see fuzz/artifacts/$target/" >&2
    status=1
  fi
done
exit $status
