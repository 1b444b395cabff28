#!/usr/bin/env bash
# Batch ingest under an external load generator, wrk (issue 17: p99 across checkpoints; issue
# 23: re-sent data against new). Starts a real `espwatch serve` on a fresh embedded data
# directory (or PostgreSQL with DATABASE_URL) with the rate limits off, writes the request
# bodies to files before the clock starts (`espwatch-bench http --write-bodies`: 1 000-reading
# JSON batches, 100 wells × 10 s, gauge precision, as `bench ingest` (a)), then runs wrk: a
# closed loop of CONNECTIONS connections on THREADS threads, each thread sending its own share
# of the bodies once (so every reading is new), with wrk's latency percentiles.
#
#   scripts/wrk-ingest.sh [SECONDS] [READINGS]   wrk's -d (30 s; wrk waits for all of it, so
#                                                make it longer than a pass takes) and the
#                                                readings sent per pass (2 000 000: 4
#                                                checkpoints at the default 500 000)
#
# Environment: PROFILE=debug|release (debug), CARGO_TARGET_DIR (target), CONNECTIONS (8),
# THREADS (2), PORT (18082), RESEND=1 (send the bodies a second time after the first pass:
# all duplicates), BODIES=DIR (reuse bodies written before; new wells need new bodies),
# KEEP=1 keeps the work directory (server log with each checkpoint's duration, data), BUILD=0
# skips the cargo build, ESPWATCH_BIN / BENCH_BIN run other binaries (an older build's server).
# The server's log is at `info,espwatch_store=debug`, so each checkpoint (its duration and
# its install transaction's) is listed after the run.
set -euo pipefail
cd "$(dirname "$0")/.."

span=${1:-30}
readings=${2:-2000000}
profile=${PROFILE:-debug}
target=${CARGO_TARGET_DIR:-target}
if [ "${BUILD:-1}" = 1 ]; then
  if [ "$profile" = release ]; then
    nice cargo build --release -p espwatch -p espwatch-bench
  else
    nice cargo build -p espwatch -p espwatch-bench
  fi
fi
bin=${ESPWATCH_BIN:-$target/$profile/espwatch}
bench=${BENCH_BIN:-$target/$profile/espwatch-bench}
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }

work=$(mktemp -d /tmp/espwatch-wrk.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

bodies=${BODIES:-$work/bodies}
if [ -z "${BODIES:-}" ]; then
  "$bench" http --write-bodies "$bodies" --readings "$readings" --variants gauge
fi
nbodies=$(find "$bodies" -name 'body-*.json' | wc -l)

"$bin" secret init --out "$work/jwt.secret" >/dev/null
export ESPWATCH_JWT_SECRET_FILE=$work/jwt.secret
data=$work/data
if [ -n "${DATABASE_URL:-}" ]; then export ESPWATCH_DATABASE_URL=$DATABASE_URL; fi
key=$("$bin" apikeys create --name wrk --role api_client --data-dir "$data" 2>/dev/null)

port=${PORT:-18082}
RUST_LOG=${RUST_LOG:-info,espwatch_store=debug} \
ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY=0 ESPWATCH_RATE_LIMIT_PER_IDENTITY=0 \
ESPWATCH_RATE_LIMIT_PER_SOURCE=0 ESPWATCH_MAX_CONNECTIONS_PER_SOURCE=0 \
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null

cat >"$work/ingest.lua" <<'LUA'
-- Each thread sends its own share of the bodies (files k, k+T, k+2T, ...) once and stops
-- when it has handed out the last one (POSTs then still in flight are not counted). Rate:
-- POSTs answered / (last answer - first request), clock_gettime through LuaJIT's ffi.
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } wrk_timespec;
           int clock_gettime(int clk, wrk_timespec *ts); ]]
local function now()
  local t = ffi.new("wrk_timespec")
  ffi.C.clock_gettime(1, t)
  return tonumber(t.tv_sec) + tonumber(t.tv_nsec) * 1e-9
end
local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local dir, n, t = os.getenv("WRK_BODIES"), tonumber(os.getenv("WRK_NBODIES")), tonumber(os.getenv("WRK_THREADS"))
  local headers = { ["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer " .. os.getenv("WRK_KEY") }
  reqs = {}
  local i = id
  while i < n do
    local f = assert(io.open(string.format("%s/body-%05d.json", dir, i), "rb"))
    table.insert(reqs, wrk.format("POST", "/api/v1/telemetry", headers, f:read("*a")))
    f:close()
    i = i + t
  end
  filler_req = wrk.format("GET", "/health/live")
  handed, posts, filler, bad, accepted, duplicates = 0, 0, 0, 0, 0, 0
  t_first, t_last = 0, 0
end
function request()
  handed = handed + 1
  if handed == 1 then t_first = now() end
  if handed <= #reqs then return reqs[handed] end
  return filler_req
end
function response(status, headers, body)
  local a = body and body:match('"accepted":(%d+)')
  if a then
    posts = posts + 1
    t_last = now()
    accepted = accepted + tonumber(a)
    duplicates = duplicates + tonumber(body:match('"duplicates":(%d+)') or 0)
    if status ~= 200 then bad = bad + 1 end
  else
    filler = filler + 1
    if status ~= 200 then bad = bad + 1 end
  end
  if handed >= #reqs then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local p, f, b, a, d, first, last = 0, 0, 0, 0, 0, math.huge, 0
  for _, th in ipairs(threads) do
    p = p + th:get("posts"); f = f + th:get("filler"); b = b + th:get("bad")
    a = a + th:get("accepted"); d = d + th:get("duplicates")
    first = math.min(first, th:get("t_first")); last = math.max(last, th:get("t_last"))
  end
  local secs = last - first
  io.write(string.format("POSTs answered %d in %.2f s: %.0f requests/s, %.0f readings/s; accepted %d, duplicates %d; non-200 %d, filler GETs %d\n",
    p, secs, p / secs, (a + d) / secs, a, d, b, f))
  io.write(string.format("latency (wrk, µs): p50 %d p90 %d p99 %d max %d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
LUA

echo "server pid $pid on port $port ($profile build), $nbodies bodies, work directory $work"
threads=${THREADS:-2}
passes=new
if [ "${RESEND:-0}" = 1 ]; then passes="new resend"; fi
for pass in $passes; do
  cpu0=$(awk '{print $14+$15}' /proc/$pid/stat)
  echo "--- pass: $pass ($(date -u +%H:%M:%S), load average $(cut -d' ' -f1-3 /proc/loadavg))"
  WRK_BODIES=$bodies WRK_NBODIES=$nbodies WRK_THREADS=$threads WRK_KEY=$key \
    wrk -t "$threads" -c "${CONNECTIONS:-8}" -d "${span}s" --timeout 30s --latency \
    -s "$work/ingest.lua" "http://127.0.0.1:$port" | tee "$work/wrk-$pass.out"
  cpu1=$(awk '{print $14+$15}' /proc/$pid/stat)
  echo "server CPU $(( (cpu1 - cpu0) * 10 )) ms in this pass; load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "checkpoints (ms = from freeze to installed, install_ms = the install transaction):"
grep 'embedded store: checkpoint' "$work/server.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 20 || true
echo "server log: $(wc -l <"$work/server.log") lines, $(grep -c '"level":"ERROR"\| ERROR ' "$work/server.log" || true) at ERROR"
