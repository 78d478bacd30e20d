#!/usr/bin/env bash
# Spec-conformance fuzzing: Schemathesis against tests/spec/rest-catalog-open-api.yaml, on the
# operations a running Pangolin advertises in `GET /v1/config` `endpoints`. Every response
# is checked for: no 5xx, a status the spec documents for the operation, a body valid
# against the spec's schema for that status, the documented media type.
# docs/spec-coverage.md lists every spec operation and why the others are not served.
#
#   tests/fuzz.sh [--prepare | --help] [run.py options...]
#
#   --prepare   only create/refresh the fuzzer's venv and exit (e.g. before entering a
#               network namespace without PyPI access)
#   run.py options, e.g. --seed N, --max-examples N, --timeout S, --phases fuzzing,stateful,
#   --operation loadTable (repeatable), --report-dir DIR; see `tests/fuzz.sh --help`.
#
# Before fuzzing, run.py checks the table of docs/spec-coverage.md against the spec and the
# server's `endpoints` (exit 2 when it is out of date).
#
# Assumes a catalog is running (e.g. `pangolin dev`) with catalog $PANGOLIN_FUZZ_CATALOG.
# Before each Schemathesis phase, run.py seeds (plain HTTP POSTs) namespace `fuzz`, tables
# `fuzz.t1`, `fuzz.t2` and views `fuzz.v1`, `fuzz.v2` (kept when they exist) so fuzzed path
# parameters reach existing objects. The run mutates the catalog: use a throw-away one
# (`pangolin dev --fresh`).
#
# Environment:
#   PANGOLIN_URI               catalog base URL (default http://127.0.0.1:8181)
#   PANGOLIN_FUZZ_CATALOG      catalog name, the `{prefix}` (default demo)
#   PANGOLIN_FUZZ_VENV         venv of the fuzzer (default $HOME/.cache/pangolin/fuzz-venv)
#   PANGOLIN_FUZZ_SEED         Hypothesis seed (default 20240601)
#   PANGOLIN_FUZZ_MAX_EXAMPLES test cases per operation in the fuzzing phase (default 50)
#   PANGOLIN_FUZZ_TIMEOUT      hard limit of all Schemathesis phases together, seconds (default 270)
# Exit status: 0 all checks passed; 1 a check failed or the run timed out; 2 setup problem.
# The last line is `fuzz: N passed, N failed` (one test per operation and phase).
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

case "${1:-}" in
  --prepare)
    ensure_venv
    exit 0
    ;;
  -h | --help)
    ensure_venv
    exec "$VENV/bin/python" "$HERE/fuzz/run.py" --help
    ;;
esac
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

# ---- fuzz -----------------------------------------------------------------------------------
exec "$VENV/bin/python" "$HERE/fuzz/run.py" "$@"
