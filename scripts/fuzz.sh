#!/usr/bin/env bash
# Coverage-guided fuzzing of espwatch's parsers with AFL++ on stable Rust (issue 17):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# builds `espwatch-fuzz` (fuzz/) instrumented for AFL++ and runs `afl-fuzz` on each target
# (default: all) for SECONDS (default 60), starting from fuzz/corpus/<target>. Findings land
# in target/afl-out/<target>/default/{crashes,hangs}: copy a crash into
# fuzz/artifacts/<target>/, fix it, and `cargo test -p espwatch-fuzz` replays it from then on.
# New coverage: `afl-cmin` the queue into fuzz/corpus/<target> (README "Fuzzing").
#
# Needs Debian's `afl++` (afl-fuzz, /usr/lib/afl/afl-compiler-rt.o). The instrumentation is
# LLVM's SanitizerCoverage (trace-pc-guard), which AFL++'s runtime reads, as cargo-afl does;
# with an explicit --target the flags reach the fuzzed code only, never build scripts or proc
# macros, whose host builds are shared with the ordinary ones in target/debug.
set -euo pipefail
seconds=${1:-60}
shift || true
cd "$(dirname "$0")/.."
runtime=${AFL_RUNTIME:-/usr/lib/afl/afl-compiler-rt.o}
if ! command -v afl-fuzz >/dev/null || [ ! -f "$runtime" ]; then
  echo "AFL++ is missing: apt-get install afl++" >&2
  exit 2
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=3 \
-C llvm-args=-sanitizer-coverage-trace-pc-guard -C llvm-args=-sanitizer-coverage-prune-blocks=0 \
-C debug-assertions -C overflow-checks --cfg fuzzing -C link-arg=$runtime"
CARGO_INCREMENTAL=0 nice cargo build -p espwatch-fuzz --bin espwatch-fuzz --target "$triple"
bin=target/$triple/debug/espwatch-fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/corpus)
fi
# No core-dump handler or CPU-frequency tuning on a shared machine: tell AFL++ to go on.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
status=0
for target in "${targets[@]}"; do
  out=target/afl-out/$target
  mkdir -p "$out"
  echo "== $target: ${seconds}s"
  nice afl-fuzz -V "$seconds" -m none -t 1000 -i "fuzz/corpus/$target" -o "$out" \
    -- "$bin" "$target" >"$out/log" 2>&1 || { tail -20 "$out/log" >&2; status=1; }
  stats=$out/default/fuzzer_stats
  if [ -f "$stats" ]; then
    grep -E '^(execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|edges_found|total_edges) ' "$stats" \
      | sed 's/^/   /'
    crashes=$(sed -n 's/^saved_crashes *: //p' "$stats")
    if [ "${crashes:-0}" != 0 ]; then
      echo "!! $target: $crashes crash(es) in $out/default/crashes/" >&2
      status=1
    fi
  fi
done
exit $status
