#!/usr/bin/env bash
# Load a real `espwatch serve` process from a separate load generator (`espwatch-bench load`)
# and report shedding, latency, the server's RSS (from /proc), health-probe latency, and
# whether every acknowledged reading is stored. See README "Reliability".
#
#   scripts/load.sh overload [SECONDS]   measure the sustainable ingest rate (closed loop, 20 s),
#                                        then offer TIMES (10) x it open loop for SECONDS (60)
#   scripts/load.sh soak [DURATION]      1 000 wells at 1 Hz (one 1 000-reading request per
#                                        second, diagnostics on) for DURATION (30m)
#   scripts/load.sh mqtt-overload [SECONDS]  the same overload through the MQTT ingest
#   scripts/load.sh amqp-overload [SECONDS]  ... through the AMQP ingest (`espwatch-bench
#                                        broker-load`: sustainable rate through the broker, then
#                                        TIMES x it published open loop; espwatch's backlog and
#                                        RSS high-water, recovery time, every reading the broker
#                                        acknowledged read back)
#
# Environment: PROFILE=debug|release (debug), CARGO_TARGET_DIR (target), BUILD=0 (no cargo build), TIMES, KEYS (simulated gateways, 8), PORT (18080),
# KEEP=1 keeps the work directory (server log, data). Extra arguments after the mode's own go to
# `espwatch-bench load` (e.g. --batch 500 --max-outstanding 2048) or `broker-load`.
# Brokers: mqtt-overload starts a Mosquitto of its own on a free port with MOSQUITTO_SETTINGS
# (default `max_queued_messages 0`: the broker keeps every message the run publishes;
# Mosquitto's default of 1 000 drops the rest; README "Reliability" advises a bound above the
# longest backlog planned for) unless MQTT_URL names one;
# amqp-overload uses AMQP_URL (default the local RabbitMQ, guest) with queues of its own.
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
  overload|mqtt-overload|amqp-overload) span=${1:-60}; shift || true; span="${span%s}s" ;;
  soak) span=${1:-30m}; shift || true ;;
  *) echo "usage: $0 overload|mqtt-overload|amqp-overload [SECONDS] | soak [DURATION]" >&2; exit 2 ;;
esac

profile=${PROFILE:-debug}
if [ "${BUILD:-1}" = 0 ]; then
  : # BUILD=0: use the binaries already in ${CARGO_TARGET_DIR:-target}/$profile
elif [ "$profile" = release ]; then
  nice cargo build --release -p espwatch -p espwatch-bench
else
  nice cargo build -p espwatch -p espwatch-bench
fi
bin=${CARGO_TARGET_DIR:-target}/$profile/espwatch
bench=${CARGO_TARGET_DIR:-target}/$profile/espwatch-bench

work=$(mktemp -d /tmp/espwatch-load.XXXXXX)
pid=
broker_pid=
queue=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  if [ -n "$broker_pid" ] && [ "$mode" = mqtt-overload ] && [ -z "${MQTT_URL:-}" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  if [ -n "$queue" ] && command -v rabbitmqctl >/dev/null; then
    for q in "$queue" "$queue.dead"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The broker ingest's settings (none for plain overload/soak).
tag=load$RANDOM$RANDOM
field_env=()
case "$mode" in
  mqtt-overload)
    if [ -n "${MQTT_URL:-}" ]; then
      mqtt_url=$MQTT_URL
    else
      mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n%b\n' \
        "$mport" "${MOSQUITTO_SETTINGS:-max_queued_messages 0}" >"$work/mosquitto.conf"
      mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
      broker_pid=$!
      for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.1; done
      mqtt_url=mqtt://127.0.0.1:$mport
      echo "own mosquitto (pid $broker_pid) on $mqtt_url: ${MOSQUITTO_SETTINGS:-max_queued_messages 0}"
    fi
    field_env=(ESPWATCH_MQTT_URL="$mqtt_url" ESPWATCH_MQTT_TOPIC="$tag/+/telemetry"
      ESPWATCH_MQTT_ERROR_TOPIC="$tag/{well}/errors" ESPWATCH_MQTT_CLIENT_ID="$tag-server")
    ;;
  amqp-overload)
    amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
    queue=$tag.telemetry
    field_env=(ESPWATCH_AMQP_URL="$amqp_url" ESPWATCH_AMQP_QUEUE="$queue"
      ESPWATCH_AMQP_EXCHANGE="$tag.exchange" ESPWATCH_AMQP_DEAD_LETTER_EXCHANGE="$tag.dlx"
      ESPWATCH_AMQP_DEAD_LETTER_QUEUE="$queue.dead")
    broker_pid=$(pgrep -o -f beam.smp || true)
    ;;
esac

"$bin" secret init --out "$work/jwt.secret" >/dev/null
export ESPWATCH_JWT_SECRET_FILE=$work/jwt.secret
data=$work/data
keys=()
for i in $(seq 1 "${KEYS:-8}"); do
  keys+=("$("$bin" apikeys create --name "load-$i" --role api_client --data-dir "$data" 2>/dev/null)")
done
read_key=$("$bin" apikeys create --name load-read --role analyst --data-dir "$data" 2>/dev/null)

port=${PORT:-18080}
env ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY=0 ESPWATCH_RATE_LIMIT_PER_IDENTITY=0 \
  ESPWATCH_RATE_LIMIT_PER_SOURCE=0 ESPWATCH_MAX_CONNECTIONS_PER_SOURCE=0 "${field_env[@]}" \
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
  mqtt-overload)
    "$bench" broker-load --transport mqtt --url "http://127.0.0.1:$port" --pid "$pid" \
      ${broker_pid:+--broker-pid "$broker_pid"} --broker "$mqtt_url" --topic-prefix "$tag" \
      --duration "$span" --times "${TIMES:-10}" "$@"
    ;;
  amqp-overload)
    "$bench" broker-load --transport amqp --url "http://127.0.0.1:$port" --pid "$pid" \
      ${broker_pid:+--broker-pid "$broker_pid"} --broker "$amqp_url" --queue "$queue" \
      --duration "$span" --times "${TIMES:-10}" "$@"
    ;;
esac
echo "server log: $(wc -l <"$work/server.log") lines, $(grep -c '"level":"ERROR"\| ERROR ' "$work/server.log" || true) at ERROR"
