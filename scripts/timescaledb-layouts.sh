#!/bin/bash
# Bytes per reading of the same readings under other TimescaleDB layouts (issue 20): copies the
# `telemetry` table of an espwatch database into scratch hypertables that differ in one choice
# each, compresses every chunk, and prints the hypertable size per reading, plus where the
# bytes of the store's own layout go (per column of the compressed chunks).
# usage: scripts/timescaledb-layouts.sh 'host=127.0.0.1 port=5433 user=postgres dbname=DB'
# Load DB first (scripts/timescaledb-bytes-per-reading.sh says how). It creates and drops
# tables named layout_* in DB; the telemetry table is only read.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
P=(psql -X -A -t -q -d "$1" -v ON_ERROR_STOP=1)
N=$("${P[@]}" -c "select count(*) from telemetry")
COLS=(frequency_hz motor_current_a motor_voltage_v intake_pressure_psi discharge_pressure_psi
  tubing_pressure_psi intake_temp_c motor_temp_c vibration_x_g vibration_y_g flow_rate_bpd
  gor_scf_bbl water_cut_pct)
echo "$N readings"

# layout NAME TYPE CHUNK ORDER COMPRESS_CHUNK_INTERVAL [EXPR]: EXPR maps a channel name to
# the stored value (default: the column itself).
layout() {
  local name=$1 type=$2 chunk=$3 order=$4 cci=$5 expr=${6:-'%s'}
  local defs="" sel=""
  for c in "${COLS[@]}"; do
    defs+=", $c $type"
    # shellcheck disable=SC2059
    sel+=", $(printf "$expr" "$c")"
  done
  "${P[@]}" -c "drop table if exists layout_$name" \
    -c "create table layout_$name (well_id text collate \"C\" not null, ts timestamptz not null$defs, primary key (well_id, ts))" \
    -c "select create_hypertable('layout_$name', 'ts', chunk_time_interval => interval '$chunk')" >/dev/null
  "${P[@]}" -c "alter table layout_$name set (timescaledb.compress, timescaledb.compress_segmentby = 'well_id', timescaledb.compress_orderby = 'ts $order'$cci)"
  "${P[@]}" -c "set statement_timeout = 0" -c "insert into layout_$name select well_id, ts$sel from telemetry order by ts, well_id"
  "${P[@]}" -c "set statement_timeout = 0" -c "select count(compress_chunk(c, true)) from show_chunks('layout_$name') c" >/dev/null
  "${P[@]}" -c "vacuum analyze layout_$name"
  local bytes chunks
  bytes=$("${P[@]}" -c "select hypertable_size('layout_$name')")
  chunks=$("${P[@]}" -c "select count(*) from show_chunks('layout_$name')")
  printf '%-44s %3d chunks %7.2f B/reading\n' "$name ($type, chunk $chunk, ts $order)" "$chunks" "$(bc -l <<<"$bytes/$N")"
}

layout store_today float8 '1 day' DESC ''
# Where those bytes are: each column of the compressed chunks, summed (TOASTed values at their
# compressed size); the rest of the hypertable's size is row headers, indexes and the emptied
# row-store chunks.
cols="well_id _ts_meta_count _ts_meta_min_1 _ts_meta_max_1 ts ${COLS[*]}"
sums="count(*)"
for c in $cols; do sums+=", sum(pg_column_size($c))::bigint"; done
for chunk in $("${P[@]}" -c "select format('%I.%I', cc.schema_name, cc.table_name)
    from _timescaledb_catalog.chunk c join _timescaledb_catalog.chunk cc on cc.id = c.compressed_chunk_id
    join _timescaledb_catalog.hypertable h on h.id = c.hypertable_id where h.table_name = 'layout_store_today'"); do
  "${P[@]}" -F ' ' -c "select $sums from $chunk"
done | awk -v n="$N" -v cols="$cols" 'BEGIN { k = split(cols, name, " ") }
  { for (i = 1; i <= NF; i++) s[i] += $i }
  END { printf "  %d compressed batches, %.0f rows each on average\n", s[1], n / s[1]
        for (i = 1; i <= k; i++) { printf "  %-24s %6.2f B/reading\n", name[i], s[i + 1] / n; t += s[i + 1] }
        printf "  %-24s %6.2f B/reading\n", "all columns", t / n }'

layout ts_ascending float8 '1 day' ASC ''
layout chunk_7d float8 '7 days' DESC ''
layout chunk_1d_merged_7d float8 '1 day' DESC ", timescaledb.compress_chunk_time_interval = '7 days'"
# Not lossless in general (shown for the record): single precision.
layout float4 float4 '1 day' DESC ''
# Exact decimals as scaled integers (thousandths): what a lossless integer encoding would reach
# on gauge-precision data; counted below: values that do not survive the round trip.
layout int8_milli int8 '1 day' DESC '' 'round(%s * 1000)::int8'
bad=0
for c in "${COLS[@]}"; do
  b=$("${P[@]}" -c "select count(*) from telemetry where $c is not null and round($c * 1000)::float8 / 1000 <> $c")
  bad=$((bad + b))
done
echo "  values not exact in thousandths: $bad"
for t in store_today ts_ascending chunk_7d chunk_1d_merged_7d float4 int8_milli; do
  "${P[@]}" -c "drop table if exists layout_$t"
done
