#!/usr/bin/env bash
# Load a real `espwatch serve` process from a separate load generator (`espwatch-bench load`)
# and report shedding, latency, the server's RSS (from /proc), health-probe latency, and
# whether every acknowledged reading is stored. See README "Reliability".
#
#   scripts/load.sh overload [SECONDS]   measure the sustainable ingest rate (closed loop, 20 s),
#                                        then offer TIMES (10) x it open loop for SECONDS (60)
#   scripts/load.sh soak [DURATION]      1 000 wells at 1 Hz (one 1 000-reading request per
#                                        second, diagnostics on) for DURATION (30m)
#
# Environment: PROFILE=debug|release (debug), TIMES, KEYS (simulated gateways, 8), PORT (18080),
# KEEP=1 keeps the work directory (server log, data). Extra arguments after the mode's own go to
# `espwatch-bench load` (e.g. --batch 500 --max-outstanding 2048).
#
# The embedded store on a fresh data directory. The per-identity and per-address limits are
# off: the simulated gateways are KEYS keys from one address, and what is measured here is the
# server-wide shedding (503 + Retry-After from `ingest_max_inflight_bytes`); the per-identity
# 429 is covered by the API tests.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-overload}
shift || true
case "$mode" in
  overload) span=${1:-60}; shift || true; span="${span%s}s" ;;
  soak) span=${1:-30m}; shift || true ;;
  *) echo "usage: $0 overload [SECONDS] | soak [DURATION]" >&2; exit 2 ;;
esac

profile=${PROFILE:-debug}
if [ "$profile" = release ]; then
  nice cargo build --release -p espwatch -p espwatch-bench
else
  nice cargo build -p espwatch -p espwatch-bench
fi
bin=target/$profile/espwatch
bench=target/$profile/espwatch-bench

work=$(mktemp -d /tmp/espwatch-load.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$bin" secret init --out "$work/jwt.secret" >/dev/null
export ESPWATCH_JWT_SECRET_FILE=$work/jwt.secret
data=$work/data
keys=()
for i in $(seq 1 "${KEYS:-8}"); do
  keys+=("$("$bin" apikeys create --name "load-$i" --role api_client --data-dir "$data" 2>/dev/null)")
done
read_key=$("$bin" apikeys create --name load-read --role analyst --data-dir "$data" 2>/dev/null)

port=${PORT:-18080}
ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY=0 ESPWATCH_RATE_LIMIT_PER_IDENTITY=0 \
ESPWATCH_RATE_LIMIT_PER_SOURCE=0 ESPWATCH_MAX_CONNECTIONS_PER_SOURCE=0 \
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null
echo "server pid $pid on port $port ($profile build), work directory $work"

export ESPWATCH_BENCH_API_KEYS
ESPWATCH_BENCH_API_KEYS=$(IFS=,; echo "${keys[*]}")
export ESPWATCH_BENCH_READ_KEY=$read_key
case "$mode" in
  overload)
    "$bench" load --url "http://127.0.0.1:$port" --pid "$pid" --duration "$span" \
      --times "${TIMES:-10}" "$@"
    ;;
  soak)
    "$bench" load --url "http://127.0.0.1:$port" --pid "$pid" --duration "$span" \
      --rate 1000 --wells 1000 --batch 1000 --start-ago 1h --max-outstanding 64 \
      --report-every 60s "$@"
    ;;
esac
echo "server log: $(wc -l <"$work/server.log") lines, $(grep -c '"level":"ERROR"\| ERROR ' "$work/server.log" || true) at ERROR"
