#!/usr/bin/env bash
# Schemathesis against the real server's own /api/v1/openapi.json, authenticated as an admin
# (issue 17): a fresh data directory and secret, an admin API key made with the CLI, the
# server on a free port, then `st run` for SECONDS (default 90) of generated requests.
# Fails on any server error (5xx), any response whose status, content type, headers or body
# the document does not describe. Not run: the checks that judge the API's own validation
# against the schema's looser types (`positive_data_acceptance`, `negative_data_rejection`,
# `missing_required_header`, `unsupported_method`) and the stateful/authorization ones that
# need several identities (`ignored_auth`, `use_after_free`, `ensure_resource_availability`,
# `object_level_authorization`): role × route is covered by crates/cli/tests/security.
#
# Usage: scripts/schemathesis.sh [SECONDS] [ESPWATCH_BINARY]
# Needs: `pip install schemathesis` (4.x); the binary defaults to target/debug/espwatch.
set -euo pipefail
seconds=${1:-90}
root="$(cd "$(dirname "$0")/.." && pwd)"
bin=${2:-$root/target/debug/espwatch}
st=$(command -v st || command -v schemathesis || true)
if [ -z "$st" ]; then
  echo "schemathesis is not installed: pip install schemathesis" >&2
  exit 1
fi
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export ESPWATCH_JWT_SECRET_FILE="$work/jwt.secret"
export ESPWATCH_DATA_DIR="$work/data"
"$bin" secret init --out "$ESPWATCH_JWT_SECRET_FILE" >/dev/null
key=$("$bin" apikeys create --name schemathesis --role admin --expires 1d)
# Limits off: the generator is one client sending as fast as it can.
ESPWATCH_RATE_LIMIT_PER_IDENTITY=0 ESPWATCH_RATE_LIMIT_PER_SOURCE=0 \
ESPWATCH_TELEMETRY_READINGS_PER_IDENTITY=0 ESPWATCH_MAX_CONNECTIONS_PER_SOURCE=0 \
ESPWATCH_LOGIN_RATE_PER_MINUTE=1000000 ESPWATCH_LOG_FORMAT=json \
  "$bin" serve --listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
url=$(sed -n 's/^espwatch listening on //p' "$work/server.out")
if [ -z "$url" ]; then
  echo "the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi

status=0
cd "$work" # schemathesis keeps its cache (.schemathesis/) in the working directory
"$st" run "$url/api/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-time "$seconds" --workers 2 --seed 1 \
  --suppress-health-check all --no-color || status=$?
if grep -q '"status":5[0-9][0-9]' "$work/server.log"; then
  echo "server log lines with a 5xx status:" >&2
  grep '"status":5[0-9][0-9]' "$work/server.log" | head -20 >&2
  status=1
fi
exit $status
