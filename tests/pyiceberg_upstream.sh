#!/usr/bin/env bash
# Runs PyIceberg 0.12.0's own REST integration tests against an already running Pangolin
# (`pangolin dev`: catalog on localhost:8181, embedded S3 on localhost:9000, catalog `demo`).
#
#   tests/pyiceberg_upstream.sh [extra pytest args...]
#
# Environment:
#   PYTHON                 interpreter with pyiceberg[pyarrow]==0.12.0 and pytest
#                          (default $HOME/.cache/pangolin/venv/bin/python)
#   PANGOLIN_PYICEBERG_SRC where the PyIceberg sdist is unpacked
#                          (default $HOME/.cache/pangolin/pyiceberg-src)
#   PANGOLIN_WAREHOUSE     warehouse of the PYICEBERG_TEST_CATALOG catalog (default demo)
#
# The upstream fixtures hard-code http://localhost:8181 and http://localhost:9000, so the
# server address cannot be changed here. Tests that need Spark, Hive or another catalog
# implementation are deselected below, each with its reason; docs/pyiceberg-conformance.md
# lists them too. Exits non-zero when any selected test fails or errors, or when a deselected
# id no longer names a collected test.
set -euo pipefail

PYTHON=${PYTHON:-$HOME/.cache/pangolin/venv/bin/python}
PYICEBERG_VERSION=0.12.0
SRC_CACHE=${PANGOLIN_PYICEBERG_SRC:-$HOME/.cache/pangolin/pyiceberg-src}
SRC=$SRC_CACHE/pyiceberg-$PYICEBERG_VERSION
WAREHOUSE=${PANGOLIN_WAREHOUSE:-demo}
CATALOG_URI=http://localhost:8181
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQUIREMENTS=$HERE/python/requirements-upstream.txt

TEST_FILES=(
  tests/integration/test_catalog.py
  tests/integration/test_rest_schema.py
)

# --- Deselected tests -------------------------------------------------------------------
# test_catalog.py runs each of these tests once per catalog fixture. Only the `rest_catalog`
# (uri only, no warehouse) and `rest_test_catalog` (PYICEBERG_TEST_CATALOG below) parameters
# talk to Pangolin; the other parameters are deselected for every test in this list.
PARAMETRIZED_CATALOG_TESTS=(
  test_create_table_with_default_location test_create_table_with_invalid_database
  test_create_duplicated_table test_create_table_if_not_exists_duplicated_table test_load_table
  test_list_tables test_rename_table test_rename_table_already_exists test_drop_table
  test_purge_table test_table_exists test_update_table_transaction test_update_schema_conflict
  test_create_table_transaction_simple test_create_table_transaction_multiple_schemas
  test_concurrent_create_transaction test_create_namespace test_create_duplicate_namespace
  test_create_namespace_if_not_exists test_create_namespace_with_comment test_list_namespaces
  test_drop_namespace test_load_namespace_properties test_update_namespace_properties
  test_update_table_spec test_update_table_spec_conflict test_update_table_spec_then_revert
  test_register_table test_register_table_existing test_incompatible_partitioned_schema_evolution
  test_namespace_with_slash test_incompatible_sorted_schema_evolution test_namespace_with_dot
  test_table_name_with_slash test_table_name_with_dot test_drop_missing_table
  test_drop_nonexistent_namespace test_rename_table_missing_source_table
  test_rename_table_destination_namespace_missing test_load_missing_table
)
# "<parameter id>|<reason>"
OTHER_CATALOG_PARAMS=(
  "memory_catalog|PyIceberg's in-process InMemoryCatalog; never talks to Pangolin"
  "sqlite_catalog_memory|PyIceberg's SqlCatalog on in-memory SQLite; never talks to Pangolin"
  "sqlite_catalog_file|PyIceberg's SqlCatalog on a SQLite file; never talks to Pangolin"
  "hive_catalog|needs a Hive metastore at thrift://localhost:9083; not Pangolin"
)
# "<test id>|<reason>"
DESELECTED=(
  "tests/integration/test_catalog.py::test_rest_custom_namespace_separator|asserts the reference fixture's '.' namespace separator; Pangolin keeps the spec default 0x1F (iceberg-rust always sends 0x1F, and '.' makes names like ('new.db',) ambiguous)"
)
for test in "${PARAMETRIZED_CATALOG_TESTS[@]}"; do
  for entry in "${OTHER_CATALOG_PARAMS[@]}"; do
    DESELECTED+=("tests/integration/test_catalog.py::${test}[${entry%%|*}]|${entry#*|}")
  done
done

log() { printf '[pyiceberg-upstream] %s\n' "$*" >&2; }

# --- The client ---------------------------------------------------------------------------
if ! "$PYTHON" -c "import importlib.metadata as m, sys; sys.exit(m.version('pyiceberg') != '$PYICEBERG_VERSION')" 2>/dev/null; then
  log "$PYTHON must have pyiceberg==$PYICEBERG_VERSION installed (pip install -r tests/python/requirements.txt)"
  exit 2
fi

# --- PyIceberg's source distribution (its tests/ are not in the wheel) ---------------------
if [[ ! -f $SRC/tests/integration/test_catalog.py || ! -f $SRC/tests/conftest.py ]]; then
  log "unpacking pyiceberg $PYICEBERG_VERSION sources into $SRC_CACHE"
  mkdir -p "$SRC_CACHE"
  sdist=$SRC_CACHE/pyiceberg-$PYICEBERG_VERSION.tar.gz
  if [[ ! -f $sdist ]]; then
    # Only pyiceberg itself must be a source distribution; its build requirements may be wheels.
    "$PYTHON" -m pip download --quiet --no-deps --no-binary pyiceberg "pyiceberg==$PYICEBERG_VERSION" -d "$SRC_CACHE"
  fi
  rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
  tar -xzf "$sdist" -C "$SRC.tmp"
  rm -rf "$SRC" && mv "$SRC.tmp/pyiceberg-$PYICEBERG_VERSION" "$SRC" && rm -rf "$SRC.tmp"
fi

# --- Packages the upstream conftest and test modules import at module level ---------------
requirements_met() {
  "$PYTHON" - "$REQUIREMENTS" <<'EOF'
import importlib.metadata as metadata
import re
import sys

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = re.split(r"(==)", line, maxsplit=1)
    try:
        if metadata.version(name.split("[")[0]) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
EOF
}
if ! requirements_met; then
  log "installing $REQUIREMENTS"
  "$PYTHON" -m pip install --quiet -r "$REQUIREMENTS"
fi

# --- The server -----------------------------------------------------------------------------
if ! "$PYTHON" - "$CATALOG_URI" <<'EOF'
import sys
import requests

try:
    response = requests.get(f"{sys.argv[1]}/v1/config", timeout=10)
except requests.RequestException as exc:
    sys.exit(f"no catalog answers at {sys.argv[1]}/v1/config: {exc}")
if response.status_code != 200:
    sys.exit(f"GET {sys.argv[1]}/v1/config (no warehouse) answered {response.status_code}: {response.text}")
EOF
then
  log "start Pangolin first (pangolin dev) so that it serves $CATALOG_URI and http://localhost:9000"
  exit 2
fi

# PyIceberg's own provisioning (dev/provision.py, with Spark) creates the namespace `default`
# that test_rest_schema.py writes into; do that one step with PyIceberg itself.
# A freshly started server may refuse writes (503) until its control plane has a primary;
# wait for that here, bounded and reported, rather than fail the first tests.
"$PYTHON" - "$CATALOG_URI" <<'EOF'
import sys
import time

from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import ServiceUnavailableError

started = time.monotonic()
while True:
    try:
        RestCatalog("provision", uri=sys.argv[1]).create_namespace_if_not_exists("default")
        break
    except ServiceUnavailableError as exc:
        if time.monotonic() - started > 30:
            sys.exit(f"the catalog still refuses writes after 30 s: {exc}")
        time.sleep(0.5)
if (waited := time.monotonic() - started) > 1:
    print(f"[pyiceberg-upstream] writes were refused (503) for {waited:.1f} s after start", file=sys.stderr)
EOF

# --- Run ------------------------------------------------------------------------------------
cd "$SRC"
export PYICEBERG_TEST_CATALOG=pangolin
export PYICEBERG_CATALOG__PANGOLIN__TYPE=rest
export PYICEBERG_CATALOG__PANGOLIN__URI=$CATALOG_URI
export PYICEBERG_CATALOG__PANGOLIN__WAREHOUSE=$WAREHOUSE
export PYICEBERG_HOME=$SRC_CACHE/empty-pyiceberg-home
mkdir -p "$PYICEBERG_HOME"
PYTEST=("$PYTHON" -m pytest -p no:cacheprovider -m integration)

# A deselect id that matches nothing is silently ignored by pytest: refuse stale ids.
collected=$("${PYTEST[@]}" --collect-only -q "${TEST_FILES[@]}" 2>&1) || {
  printf '%s\n' "$collected" >&2
  log "collection failed"
  exit 1
}
deselect_args=()
stale=0
for entry in "${DESELECTED[@]}"; do
  id=${entry%%|*}
  if ! grep -qxF -- "$id" <<<"$collected"; then
    log "deselected id not collected (stale?): $id"
    stale=1
  fi
  deselect_args+=(--deselect "$id")
done
((stale == 0)) || exit 1

log "running ${TEST_FILES[*]} against $CATALOG_URI (${#DESELECTED[@]} ids deselected)"
exec "${PYTEST[@]}" -rfEs "${deselect_args[@]}" "${TEST_FILES[@]}" "$@"
