#!/bin/bash
# Point-in-time-restore drill for an espwatch PostgreSQL deployment (issue 20).
# A scratch primary with WAL archiving, a pg_basebackup, readings acknowledged by
# `espwatch ingest` before and after a target time T, the primary killed (-9), the base
# backup restored into a second scratch cluster up to T, then checked: every reading
# acknowledged before T is there with the same values, none acknowledged after T is.
# usage: scripts/pitr-drill.sh [ESPWATCH_BINARY]   (runs the servers as the `postgres` OS user when root)
# Without an espwatch binary (ESPWATCH=none), set FLEET to a `espwatch simulate --out` directory:
# the telemetry table is then made by plain SQL and each file loaded by one psql \copy (one
# transaction, acknowledged when psql returns) instead of `espwatch migrate` / `espwatch ingest`.
set -euo pipefail
ESPWATCH=${1:-espwatch}
if ! command -v "$ESPWATCH" >/dev/null 2>&1; then ESPWATCH=none; fi
PORT_A=${PORT_A:-5491}
PORT_B=${PORT_B:-5492}
W=$(mktemp -d /tmp/pitr-drill.XXXXXX)
chmod 755 "$W"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$W/wal" && chown postgres "$W" "$W/wal" 2>/dev/null || true
t() { date -u +%H:%M:%S.%N | cut -c1-12; }
q() { psql -X -A -t -h 127.0.0.1 -p "$1" -U postgres -d espwatch -c "$2"; }
cleanup() {
  as_pg pg_ctl -D "$W/restore" -m immediate stop >/dev/null 2>&1 || true
  as_pg pg_ctl -D "$W/primary" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "[$(t)] scratch dir $W"
as_pg initdb -D "$W/primary" -U postgres -A trust >/dev/null
cat >>"$W/primary/postgresql.conf" <<EOF
port = $PORT_A
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $W/wal/%f && cp %p $W/wal/%f'
archive_timeout = 60
EOF
as_pg pg_ctl -D "$W/primary" -l "$W/primary.log" -w start >/dev/null
psql -X -q -h 127.0.0.1 -p "$PORT_A" -U postgres -d postgres -c "create database espwatch"
URL_A="postgres://postgres@127.0.0.1:$PORT_A/espwatch"
if [ "$ESPWATCH" != none ]; then
  "$ESPWATCH" migrate --database-url "$URL_A" >/dev/null
  "$ESPWATCH" simulate --wells 6 --duration 1d --seed 11 --out "$W/fleet" >/dev/null
  FLEET_DIR="$W/fleet"
else
  FLEET_DIR=${FLEET:?set FLEET to a simulated fleet directory when no espwatch binary is given}
  q "$PORT_A" "create table telemetry (well_id text not null, ts timestamptz not null, frequency_hz float8, motor_current_a float8, motor_voltage_v float8, intake_pressure_psi float8, discharge_pressure_psi float8, tubing_pressure_psi float8, intake_temp_c float8, motor_temp_c float8, vibration_x_g float8, vibration_y_g float8, flow_rate_bpd float8, gor_scf_bbl float8, water_cut_pct float8, primary key (well_id, ts))" >/dev/null
fi
ingest() {
  if [ "$ESPWATCH" != none ]; then
    "$ESPWATCH" ingest --database-url "$URL_A" "$@" | grep -E '^(done|  accepted)'
  else
    for f in "$@"; do
      psql -X -q -h 127.0.0.1 -p "$PORT_A" -U postgres -d espwatch -v ON_ERROR_STOP=1 \
        -c "\\copy telemetry from '$f' with (format csv, header true)"
      echo "  acknowledged $(basename "$f"): $(($(wc -l <"$f") - 1)) readings"
    done
  fi
}

# Telemetry: 6 wells; wells 1-3 are acknowledged before T, wells 4-6 after.
mapfile -t FILES < <(ls "$FLEET_DIR"/*.csv | grep -v -e labels.csv -e operations.csv | sort | head -6)
[ "${#FILES[@]}" = 6 ] || { echo "expected 6 well files, got ${#FILES[@]}"; exit 1; }

echo "[$(t)] base backup"
as_pg pg_basebackup -h 127.0.0.1 -p "$PORT_A" -U postgres -D "$W/base" -X stream -c fast

echo "[$(t)] phase A: ingest ${FILES[*]:0:3}"
ingest "${FILES[@]:0:3}"
FP_A=$(q "$PORT_A" "select well_id || ':' || count(*) || ':' || md5(string_agg(t::text, ',' order by ts)) from telemetry t group by well_id order by well_id")
N_A=$(q "$PORT_A" "select count(*) from telemetry")
sleep 1
TARGET=$(q "$PORT_A" "select now()::text")
echo "[$(t)] target time T = $TARGET ($N_A readings acknowledged before it)"
sleep 1

echo "[$(t)] phase B: ingest ${FILES[*]:3:3}"
ingest "${FILES[@]:3:3}"
N_AB=$(q "$PORT_A" "select count(*) from telemetry")
# Make sure the WAL holding phase B's commits is archived (so recovery has to *stop* at T).
LAST=$(q "$PORT_A" "select pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 100); do [ -f "$W/wal/$LAST" ] && break; sleep 0.1; done
[ -f "$W/wal/$LAST" ] || { echo "WAL $LAST was not archived"; exit 1; }
echo "[$(t)] primary holds $N_AB readings; WAL archived up to $LAST; kill -9 the primary"
kill -9 "$(head -1 "$W/primary/postmaster.pid")"

echo "[$(t)] restore the base backup into a scratch cluster, recovering to T"
RESTORE_START=$(date +%s.%N)
cp -a "$W/base" "$W/restore"
cat >>"$W/restore/postgresql.conf" <<EOF
port = $PORT_B
archive_mode = off
restore_command = 'cp $W/wal/%f %p'
recovery_target_time = '$TARGET'
recovery_target_action = 'promote'
EOF
as_pg touch "$W/restore/recovery.signal"
as_pg pg_ctl -D "$W/restore" -l "$W/restore.log" -w start >/dev/null
for _ in $(seq 1 300); do
  [ "$(q "$PORT_B" "select pg_is_in_recovery()" 2>/dev/null)" = f ] && break; sleep 0.1
done
[ "$(q "$PORT_B" "select pg_is_in_recovery()")" = f ] || { echo "restore did not promote"; tail "$W/restore.log"; exit 1; }
RESTORE_SECS=$(echo "$(date +%s.%N) - $RESTORE_START" | bc)
grep -E 'recovery stopping|last completed transaction' "$W/restore.log" | sed 's/^/  log: /'

FP_R=$(q "$PORT_B" "select well_id || ':' || count(*) || ':' || md5(string_agg(t::text, ',' order by ts)) from telemetry t group by well_id order by well_id")
N_R=$(q "$PORT_B" "select count(*) from telemetry")
echo "[$(t)] restored in ${RESTORE_SECS}s: $N_R readings (acknowledged before T: $N_A; on the primary at the end: $N_AB)"
if [ "$FP_R" != "$FP_A" ]; then
  echo "FAIL: the restored readings differ from those acknowledged before T"
  diff <(echo "$FP_A") <(echo "$FP_R") || true
  exit 1
fi
# espwatch itself runs against the restored cluster (migrations, a question answered from it).
URL_B="postgres://postgres@127.0.0.1:$PORT_B/espwatch"
if [ "$ESPWATCH" != none ]; then
"$ESPWATCH" migrate --database-url "$URL_B" >/dev/null
W1=$(basename "${FILES[0]}" .csv)
echo "  espwatch ask against the restore: $("$ESPWATCH" ask --database-url "$URL_B" "how many readings of $W1 yesterday" 2>&1 | head -2 | tr '\n' ' ')"
fi
echo "PASS: every reading acknowledged before T ($N_A, per well count and checksum) is restored; none of the $((N_AB - N_A)) acknowledged after T"
