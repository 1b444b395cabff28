#!/usr/bin/env bash
# Ingest speed as clients see it (issue 23): start a real `espwatch serve` on a fresh embedded
# data directory (or PostgreSQL with DATABASE_URL) with the rate limits off, and drive it from a
# separate process, `espwatch-bench http` (bodies generated before the clock starts).
#
#   scripts/http-bench.sh [ARGS...]     ARGS go to `espwatch-bench http`, e.g.
#                                       --variants gauge,resend --runs 5 --readings 1000000
#
# Environment: PROFILE=debug|release (debug), PORT (18081), DATABASE_URL (a PostgreSQL-backed
# server; its scratch tables are not dropped), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-debug}
if [ "$profile" = release ]; then
  nice cargo build --release -p espwatch -p espwatch-bench
else
  nice cargo build -p espwatch -p espwatch-bench
fi
bin=target/$profile/espwatch
bench=target/$profile/espwatch-bench

work=$(mktemp -d /tmp/espwatch-http.XXXXXX)
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
if [ -n "${DATABASE_URL:-}" ]; then export ESPWATCH_DATABASE_URL=$DATABASE_URL; fi
keys=()
for i in 1 2 3 4; do
  keys+=("$("$bin" apikeys create --name "http-$i" --role api_client --data-dir "$data" 2>/dev/null)")
done

port=${PORT:-18081}
ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY=0 ESPWATCH_RATE_LIMIT_PER_IDENTITY=0 \
ESPWATCH_RATE_LIMIT_PER_SOURCE=0 ESPWATCH_MAX_CONNECTIONS_PER_SOURCE=0 \
  "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null
echo "server pid $pid on port $port ($profile build), work directory $work"

ESPWATCH_BENCH_API_KEYS=$(IFS=,; echo "${keys[*]}") \
  "$bench" http --url "http://127.0.0.1:$port" --pid "$pid" "$@"
echo "server log: $(wc -l <"$work/server.log") lines, $(grep -c '"level":"ERROR"\| ERROR ' "$work/server.log" || true) at ERROR"
