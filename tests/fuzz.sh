#!/usr/bin/env bash
# Spec-conformance fuzzing: Schemathesis against tests/spec/rest-catalog-open-api.yaml, on the
# operations a running Pangolin advertises in `GET /v1/config` `endpoints`. Every response
# is checked for: no 5xx, a status the spec documents for the operation, a body valid
# against the spec's schema for that status, the documented media type.
# docs/spec-coverage.md lists every spec operation and why the others are not served.
#
#   tests/fuzz.sh [--prepare] [run.py options...]
#
#   --prepare   only create/refresh the fuzzer's venv and exit (e.g. before entering a
#               network namespace without PyPI access)
#   run.py options, e.g. --seed N, --max-examples N, --operation loadTable (repeatable),
#   --report-dir DIR; see `tests/fuzz/run.py --help`.
#
# Assumes a catalog is running (e.g. `pangolin dev`) with catalog $PANGOLIN_FUZZ_CATALOG.
# Seeds namespace `fuzz`, table `fuzz.t1` and view `fuzz.v1` (kept when they exist) so that
# fuzzed path parameters reach existing objects. The run mutates the catalog: use a
# throw-away one (`pangolin dev --fresh`).
#
# Environment:
#   PANGOLIN_URI               catalog base URL (default http://127.0.0.1:8181)
#   PANGOLIN_FUZZ_CATALOG      catalog name, the `{prefix}` (default demo)
#   PANGOLIN_FUZZ_VENV         venv of the fuzzer (default $HOME/.cache/pangolin/fuzz-venv)
#   PANGOLIN_FUZZ_SEED         Hypothesis seed (default 20240601)
#   PANGOLIN_FUZZ_MAX_EXAMPLES test cases per operation and phase (default 30)
#   PANGOLIN_FUZZ_TIMEOUT      hard limit of the Schemathesis run in seconds (default 270)
# Exit status: 0 all checks passed; 1 a check failed or the run timed out; 2 setup problem.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIREMENTS="$HERE/fuzz/requirements.txt"
VENV="${PANGOLIN_FUZZ_VENV:-$HOME/.cache/pangolin/fuzz-venv}"
URI="${PANGOLIN_URI:-http://127.0.0.1:8181}"
URI="${URI%/}"
CATALOG="${PANGOLIN_FUZZ_CATALOG:-demo}"
export PANGOLIN_URI="$URI" PANGOLIN_FUZZ_CATALOG="$CATALOG"

log() { printf '[fuzz] %s\n' "$*" >&2; }

# ---- the fuzzer's venv (reinstalled only when requirements.txt changed) -------------------
ensure_venv() {
  local stamp="$VENV/.pangolin-fuzz-requirements"
  if [ -x "$VENV/bin/python" ] && cmp -s "$REQUIREMENTS" "$stamp"; then return 0; fi
  log "preparing the fuzzer's venv at $VENV"
  local python
  python="$(command -v python3.11 || command -v python3)"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$stamp"
}

if [ "${1:-}" = "--prepare" ]; then
  ensure_venv
  exit 0
fi
ensure_venv || { log "cannot prepare the venv"; exit 2; }

# ---- the server ---------------------------------------------------------------------------
for _ in $(seq 1 60); do
  curl -fsS -o /dev/null "$URI/v1/config?warehouse=$CATALOG" 2>/dev/null && break
  sleep 0.5
done
if ! curl -fsS -o /dev/null "$URI/v1/config?warehouse=$CATALOG"; then
  log "no catalog '$CATALOG' answering at $URI/v1/config"
  exit 2
fi

# ---- seed state ---------------------------------------------------------------------------
# POST <path> <json>; 200 (created) and 409 (already there) are both fine.
seed() {
  local path="$1" body="$2" status
  status="$(curl -sS -o /tmp/pangolin-fuzz-seed.$$ -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' --data "$body" "$URI/v1/$CATALOG/$path")"
  case "$status" in
    200 | 409) ;;
    *)
      log "seeding POST $path answered $status: $(cat /tmp/pangolin-fuzz-seed.$$)"
      rm -f /tmp/pangolin-fuzz-seed.$$
      exit 2
      ;;
  esac
  rm -f /tmp/pangolin-fuzz-seed.$$
}
seed namespaces '{"namespace": ["fuzz"], "properties": {"owner": "fuzz"}}'
seed namespaces/fuzz/tables '{
  "name": "t1",
  "schema": {"type": "struct", "schema-id": 0, "fields": [
    {"id": 1, "name": "id", "type": "long", "required": true},
    {"id": 2, "name": "data", "type": "string", "required": false}]},
  "partition-spec": {"spec-id": 0, "fields": [
    {"source-id": 1, "field-id": 1000, "name": "id_bucket", "transform": "bucket[4]"}]},
  "properties": {"format-version": "2"}
}'
seed namespaces/fuzz/views '{
  "name": "v1",
  "schema": {"type": "struct", "schema-id": 0, "fields": [
    {"id": 1, "name": "id", "type": "long", "required": true}]},
  "view-version": {"version-id": 1, "timestamp-ms": 1700000000000, "schema-id": 0,
    "summary": {"engine-name": "fuzz"}, "default-namespace": ["fuzz"],
    "representations": [{"type": "sql", "sql": "SELECT id FROM fuzz.t1", "dialect": "spark"}]},
  "properties": {}
}'
log "seeded namespace fuzz, table fuzz.t1, view fuzz.v1 in catalog $CATALOG at $URI"

# ---- fuzz -----------------------------------------------------------------------------------
exec "$VENV/bin/python" "$HERE/fuzz/run.py" "$@"
