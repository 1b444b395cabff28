#!/usr/bin/env bash
# Coverage-guided fuzzing of espwatch's parsers with AFL++ on stable Rust (issue 17):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# builds `espwatch-fuzz` (fuzz/) instrumented for AFL++ and runs `afl-fuzz` on each target
# (default: all) for SECONDS (default 60), starting from fuzz/corpus/<target>. Findings land
# in target/afl-out/<target>/default/{crashes,hangs}: copy a crash into
# fuzz/artifacts/<target>/, fix it, and `cargo test -p espwatch-fuzz` replays it from then on.
# New coverage: `afl-cmin` the queue into fuzz/corpus/<target> (README "Reliability").
# FUZZ_CORE_ONLY=1 builds without espwatch-fuzz's default features: the decoder and text
# parser targets only, whose instrumented build is a few crates, not the whole server.
# OUT (default target/afl-out) is where afl-fuzz writes; each target's run starts afresh
# from its corpus (the previous run's directory is kept as <target>.prev).
#
# The fuzz targets run at SCHED_IDLE (`chrt --idle 0`): they get a CPU only when nothing else
# wants it, so fuzzing never slows the machine's other work (builds, tests, soaks). Where
# `chrt` is missing or SCHED_IDLE is refused they run at nice 19 instead; FUZZ_IDLE=0 runs them
# at the ordinary nice. A starved target can exceed afl-fuzz's 1 s timeout: on a busy machine
# `saved_hangs` may be starvation, so replay a hang (`$OUT/espwatch-fuzz TARGET < FILE`) before
# believing it.
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
features=()
if [ "${FUZZ_CORE_ONLY:-0}" = 1 ]; then
  features=(--no-default-features)
fi
CARGO_INCREMENTAL=0 nice cargo build -p espwatch-fuzz --bin espwatch-fuzz --target "$triple" \
  "${features[@]}"
# A copy is fuzzed, so that a later build cannot replace the binary under a running afl-fuzz.
built=target/$triple/debug/espwatch-fuzz
outdir=${OUT:-target/afl-out}
mkdir -p "$outdir"
bin=$outdir/espwatch-fuzz
cp "$built" "$bin.tmp" && mv "$bin.tmp" "$bin"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("$bin" --list)
fi
# No core-dump handler, CPU-frequency tuning or core of its own on a shared machine: tell
# AFL++ to go on.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
# How the targets are scheduled (see above).
idle=(nice -n 19)
if [ "${FUZZ_IDLE:-1}" = 0 ]; then
  idle=(nice)
elif command -v chrt >/dev/null && chrt --idle 0 true 2>/dev/null; then
  idle=(chrt --idle 0)
fi
echo "fuzz targets run under: ${idle[*]}"
status=0
for target in "${targets[@]}"; do
  out=$outdir/$target
  # afl-fuzz wants a fresh output directory; the previous run's (findings included) is kept
  # as $out.prev until the next run.
  if [ -d "$out" ]; then rm -rf "$out.prev" && mv "$out" "$out.prev"; fi
  mkdir -p "$out"
  echo "== $target: ${seconds}s"
  "${idle[@]}" afl-fuzz -V "$seconds" -m none -t 1000 -i "fuzz/corpus/$target" -o "$out" \
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
