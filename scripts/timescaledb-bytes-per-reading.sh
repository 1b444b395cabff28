#!/bin/bash
# Bytes per reading of an espwatch TimescaleDB database (issue 20), after the steps a
# compression policy leaves and after the cleanup it does not do.
# usage: scripts/timescaledb-bytes-per-reading.sh 'host=127.0.0.1 port=5433 user=postgres dbname=DB'
# Load it first, e.g.: espwatch simulate --wells 40 --duration 7d --family field --seed 7 --out F
#                      espwatch ingest --database-url postgres://postgres@127.0.0.1:5433/DB --parallel 4 F/*.csv
# It refreshes the 1m/1h/1d continuous aggregates in full and compresses every chunk (it changes DB).
set -euo pipefail
P=(psql -X -A -t -d "$1" -v ON_ERROR_STOP=1)
sz() { "${P[@]}" -c "select hypertable_size('telemetry'), pg_database_size(current_database()), (select coalesce(sum(hypertable_size(format('%I.%I',materialization_hypertable_schema,materialization_hypertable_name)::regclass)),0) from timescaledb_information.continuous_aggregates)"; }
N=$("${P[@]}" -c "select count(*) from telemetry")
report() { IFS='|' read -r ht db ca <<<"$(sz)"; printf '%-58s hypertable %6.1f  caggs %6.1f  whole db %6.1f  B/reading\n' "$1" "$(bc -l <<<"$ht/$N")" "$(bc -l <<<"$ca/$N")" "$(bc -l <<<"$db/$N")"; }
echo "$N readings; raw numeric size 112 B/reading (8 B timestamp + 13 x 8 B channels)"
"${P[@]}" -q -c "vacuum analyze"
report "as loaded"
"${P[@]}" -q -c "set statement_timeout=0" -c "call refresh_continuous_aggregate('telemetry_1m', null, null)" \
  -c "call refresh_continuous_aggregate('telemetry_1h', null, null)" -c "call refresh_continuous_aggregate('telemetry_1d', null, null)" \
  -c "select count(compress_chunk(c, true)) from show_chunks('telemetry') c" -c "vacuum analyze"
report "aggregates refreshed, raw chunks compressed"
for t in $("${P[@]}" -c "select format('%I.%I',chunk_schema,chunk_name) from timescaledb_information.chunks where hypertable_name='telemetry' and is_compressed"); do "${P[@]}" -q -c "reindex table $t"; done
report "+ emptied chunks' indexes rebuilt (REINDEX)"
for v in telemetry_1m telemetry_1h telemetry_1d; do "${P[@]}" -q -c "alter materialized view $v set (timescaledb.compress = true)"; done
"${P[@]}" -q -c "set statement_timeout=0" -c "select count(compress_chunk(c, true)) from (select show_chunks(format('%I.%I',materialization_hypertable_schema,materialization_hypertable_name)::regclass) c from timescaledb_information.continuous_aggregates) x" -c "vacuum analyze"
for t in $("${P[@]}" -c "select format('%I.%I',chunk_schema,chunk_name) from timescaledb_information.chunks where is_compressed"); do "${P[@]}" -q -c "reindex table $t"; done
report "+ continuous aggregates compressed too"
