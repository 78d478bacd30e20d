#!/usr/bin/env bash
# Runs PyIceberg 0.12.0's own integration tests against an already running Pangolin
# (`pangolin dev`: catalog on localhost:8181, embedded S3 on localhost:9000, catalog `demo`).
#
#   tests/pyiceberg_upstream.sh [extra pytest args...]
#   tests/pyiceberg_upstream.sh --list-deselected   # "<test id><TAB><reason>" lines; no server needed
#
# Environment:
#   PYTHON                 interpreter with pyiceberg[pyarrow]==0.12.0 and pytest
#                          (default $HOME/.cache/pangolin/venv/bin/python)
#   PANGOLIN_PYICEBERG_SRC where the PyIceberg sdist is unpacked
#                          (default $HOME/.cache/pangolin/pyiceberg-src)
#   PANGOLIN_WAREHOUSE     warehouse of the PYICEBERG_TEST_CATALOG catalog (default demo)
#
# The upstream fixtures hard-code http://localhost:8181 and http://localhost:9000, so the
# server address cannot be changed here. Tests that need Spark, Hive, another catalog
# implementation, the tables PyIceberg's Spark provisioning creates or the reference
# deployment's storage layout are deselected below, each with its reason;
# docs/pyiceberg-conformance.md lists them too. Exits non-zero when any selected test fails or
# errors, or when a deselection rule no longer matches a collected test.
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
  tests/integration/test_rest_catalog.py
  tests/integration/test_partition_evolution.py
  tests/integration/test_sort_order_update.py
  tests/integration/test_statistics_operations.py
  tests/integration/test_snapshot_operations.py
  tests/integration/test_writes/test_writes.py
  tests/integration/test_deletes.py
  tests/integration/test_reads.py
)

# --- Deselected tests -------------------------------------------------------------------
# Every rule must match at least one collected test, or the run stops (a stale rule would
# otherwise deselect nothing, silently).
#
# By catalog parameter: "<parameter>|<reason>" deselects every collected test, in any of the
# files, whose parameter id contains <parameter> (`test_x[<parameter>]`, `test_x[2-<parameter>]`).
# Only the `rest_catalog`, `rest_test_catalog` (PYICEBERG_TEST_CATALOG, below) and
# `session_catalog` parameters talk to Pangolin.
DESELECTED_PARAMS=(
  "memory_catalog|PyIceberg's in-process InMemoryCatalog; never talks to Pangolin"
  "sqlite_catalog_memory|PyIceberg's SqlCatalog on in-memory SQLite; never talks to Pangolin"
  "sqlite_catalog_file|PyIceberg's SqlCatalog on a SQLite file; never talks to Pangolin"
  "hive_catalog|needs a Hive metastore at thrift://localhost:9083; not Pangolin"
  "session_catalog_hive|the same test against PyIceberg's HiveCatalog (Hive metastore at thrift://localhost:9083); not Pangolin"
)

# By test: "<file>::<test>|<reason>" deselects every parametrization of <test>;
# "<file>::<test>[<parameter id>]|<reason>" deselects exactly that one.
SPARK="uses Spark (the \`spark\` fixture: Spark Connect at sc://localhost:15002)"
provisioned() { printf 'reads default.%s, which PyIceberg'"'"'s dev/provision.py creates and fills with Spark' "$1"; }
HIVE_ONLY="HiveCatalog only (Hive metastore at thrift://localhost:9083); not Pangolin"
REFERENCE_LOCATION="asserts data file paths under s3://warehouse/default/<table>/data/, the reference deployment's warehouse bucket and layout; Pangolin's warehouse here is s3://demo and its default table location is s3://<bucket>/<4 hex>/<namespace>/<table>-<uuid>"
DESELECTED=(
  # test_catalog.py
  "tests/integration/test_catalog.py::test_rest_custom_namespace_separator|asserts the reference fixture's '.' namespace separator; Pangolin keeps the spec default 0x1F (iceberg-rust always sends 0x1F, and '.' makes names like ('new.db',) ambiguous)"

  # Product decision: new tables get write.object-storage.enabled=true (hash-prefixed data
  # paths, ARCHITECTURE.md section 10); these tests compare the whole property map.
  "tests/integration/test_reads.py::test_table_properties[session_catalog]|compares a new table's whole property map with Java's defaults; Pangolin also sets write.object-storage.enabled=true by design (hash-prefixed data paths)"
  "tests/integration/test_reads.py::test_table_properties_dict[session_catalog]|as test_table_properties (Pangolin's write.object-storage.enabled=true default)"

  # test_snapshot_operations.py: the rollback tests create their own table and run
  "tests/integration/test_snapshot_operations.py::test_create_tag|$(provisioned test_table_snapshot_operations)"
  "tests/integration/test_snapshot_operations.py::test_create_branch|$(provisioned test_table_snapshot_operations)"
  "tests/integration/test_snapshot_operations.py::test_remove_tag|$(provisioned test_table_snapshot_operations)"
  "tests/integration/test_snapshot_operations.py::test_remove_branch|$(provisioned test_table_snapshot_operations)"
  "tests/integration/test_snapshot_operations.py::test_set_current_snapshot|$(provisioned test_table_snapshot_operations)"
  "tests/integration/test_snapshot_operations.py::test_set_current_snapshot_by_ref|$(provisioned test_table_snapshot_operations)"
  "tests/integration/test_snapshot_operations.py::test_set_current_snapshot_chained_with_create_tag|$(provisioned test_table_snapshot_operations)"

  # test_writes/test_writes.py
  "tests/integration/test_writes/test_writes.py::test_duckdb_url_import|PyIceberg's SqlCatalog (SQLite) on a local warehouse, read with DuckDB; never talks to Pangolin"
  "tests/integration/test_writes/test_writes.py::test_object_storage_data_files|$REFERENCE_LOCATION"
  "tests/integration/test_writes/test_writes.py::test_merge_manifests_file_content|$REFERENCE_LOCATION"
  "tests/integration/test_writes/test_writes.py::test_hive_catalog_storage_descriptor|$HIVE_ONLY"
  "tests/integration/test_writes/test_writes.py::test_hive_catalog_storage_descriptor_has_changed|$HIVE_ONLY"
  "tests/integration/test_writes/test_writes.py::test_append_record_batch_reader|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_append_record_batch_reader_multifile|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_branch_py_write_spark_read|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_branch_spark_write_py_read|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_create_view|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_cross_platform_special_character_compatibility|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_data_files|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_inspect_snapshots|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_overwrite_record_batch_reader|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_python_writes_dictionary_encoded_column_with_spark_reads|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_python_writes_special_character_column_with_spark_reads|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_python_writes_with_small_and_large_types_spark_reads|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_python_writes_with_spark_snapshot_reads|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_query_count|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_query_filter_appended_null|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_query_filter_null|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_query_filter_only_nulls|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_query_filter_v1_v2_append_null|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_query_filter_without_data|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_spark_writes_orc_pyiceberg_reads|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_stage_only_append|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_stage_only_delete|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_stage_only_overwrite_files|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_summaries|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_summaries_partial_overwrite|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_summaries_with_only_nulls|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_table_write_schema_with_valid_nullability_diff|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_table_write_schema_with_valid_upcast|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_uuid_partitioning|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_view_exists|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_write_all_timestamp_precision|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_write_bin_pack_data_files|$SPARK"
  "tests/integration/test_writes/test_writes.py::test_write_within_transaction|$SPARK"

  # test_deletes.py
  "tests/integration/test_deletes.py::test_delete_on_empty_table|$SPARK"
  "tests/integration/test_deletes.py::test_delete_partitioned_table_positional_deletes|$SPARK"
  "tests/integration/test_deletes.py::test_delete_partitioned_table_positional_deletes_empty_batch|$SPARK"
  "tests/integration/test_deletes.py::test_overwrite_partitioned_table|$SPARK"
  "tests/integration/test_deletes.py::test_partitioned_table_delete_full_file|$SPARK"
  "tests/integration/test_deletes.py::test_partitioned_table_no_match|$SPARK"
  "tests/integration/test_deletes.py::test_partitioned_table_positional_deletes_sequence_number|$SPARK"
  "tests/integration/test_deletes.py::test_partitioned_table_rewrite|$SPARK"
  "tests/integration/test_deletes.py::test_read_multiple_batches_in_task_with_position_deletes|$SPARK"
  "tests/integration/test_deletes.py::test_read_spark_written_puffin_dv|$SPARK"
  "tests/integration/test_deletes.py::test_rewrite_partitioned_table_with_null|$SPARK"

  # test_reads.py
  "tests/integration/test_reads.py::test_iceberg_property_deletion_not_restored_from_old_hms_state|$HIVE_ONLY"
  "tests/integration/test_reads.py::test_hive_locking|$HIVE_ONLY"
  "tests/integration/test_reads.py::test_hive_locking_with_retry|$HIVE_ONLY"
  "tests/integration/test_reads.py::test_initial_default|$SPARK"
  "tests/integration/test_reads.py::test_scan_source_field_missing_in_spec|$SPARK"
  "tests/integration/test_reads.py::test_pyarrow_nan|$(provisioned test_null_nan)"
  "tests/integration/test_reads.py::test_pyarrow_not_nan_count|$(provisioned test_null_nan)"
  "tests/integration/test_reads.py::test_pyarrow_batches_nan|$(provisioned test_null_nan)"
  "tests/integration/test_reads.py::test_pyarrow_batches_not_nan_count|$(provisioned test_null_nan)"
  "tests/integration/test_reads.py::test_pyarrow_nan_rewritten|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_pyarrow_batches_nan_rewritten|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_duckdb_nan|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_daft_nan|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_daft_nan_rewritten|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_bodo_nan|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_ray_nan|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_ray_nan_rewritten|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_ray_not_nan_count|$(provisioned test_null_nan_rewritten)"
  "tests/integration/test_reads.py::test_ray_all_types|$(provisioned test_all_types)"
  "tests/integration/test_reads.py::test_pyarrow_to_iceberg_all_types|$(provisioned test_all_types)"
  "tests/integration/test_reads.py::test_pyarrow_limit|$(provisioned test_limit)"
  "tests/integration/test_reads.py::test_pyarrow_limit_with_multiple_files|$(provisioned test_limit)"
  "tests/integration/test_reads.py::test_pyarrow_deletes|$(provisioned 'test_positional_mor_deletes_v{2,3}')"
  "tests/integration/test_reads.py::test_pyarrow_batches_deletes|$(provisioned 'test_positional_mor_deletes_v{2,3}')"
  "tests/integration/test_reads.py::test_scan_tag|$(provisioned 'test_positional_mor_deletes_v{2,3}')"
  "tests/integration/test_reads.py::test_scan_branch|$(provisioned 'test_positional_mor_deletes_v{2,3}')"
  "tests/integration/test_reads.py::test_pyarrow_deletes_double|$(provisioned 'test_positional_mor_double_deletes_v{2,3}')"
  "tests/integration/test_reads.py::test_pyarrow_batches_deletes_double|$(provisioned 'test_positional_mor_double_deletes_v{2,3}')"
  "tests/integration/test_reads.py::test_filter_after_arrow_scan|$(provisioned test_partitioned_by_hours)"
  "tests/integration/test_reads.py::test_partitioned_tables|$(provisioned 'test_partitioned_by_{identity,years,months,days,hours,truncate,bucket}')"
  "tests/integration/test_reads.py::test_unpartitioned_uuid_table|$(provisioned test_uuid_and_fixed_unpartitioned)"
  "tests/integration/test_reads.py::test_unpartitioned_fixed_table|$(provisioned test_uuid_and_fixed_unpartitioned)"
  "tests/integration/test_reads.py::test_filter_on_new_column|$(provisioned test_table_add_column)"
  "tests/integration/test_reads.py::test_filter_case_sensitive_by_default|$(provisioned test_table_add_column)"
  "tests/integration/test_reads.py::test_filter_case_sensitive|$(provisioned test_table_add_column)"
  "tests/integration/test_reads.py::test_filter_case_insensitive|$(provisioned test_table_add_column)"
  "tests/integration/test_reads.py::test_filters_on_top_level_struct|$(provisioned test_table_empty_list_and_map)"
  "tests/integration/test_reads.py::test_null_list_and_map|$(provisioned test_table_empty_list_and_map)"
  "tests/integration/test_reads.py::test_upgrade_table_version|$(provisioned test_table_version)"
  "tests/integration/test_reads.py::test_sanitize_character|$(provisioned test_table_sanitized_character)"
  "tests/integration/test_reads.py::test_empty_scan_ordered_str|$(provisioned test_empty_scan_ordered_str)"
  "tests/integration/test_reads.py::test_incremental_append_scan_append_only|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_ignores_non_append_snapshots|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_does_not_double_count_compacted_files|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_empty_range|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_schema_evolution_within_range|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_partition_pruning|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_metrics_pruning|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_selected_fields|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_limit|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_throws_on_disconnected_snapshots|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_unset_from_scans_from_oldest_ancestor|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_inclusive_from|$(provisioned test_incremental_read)"
  "tests/integration/test_reads.py::test_incremental_append_scan_builder_chain|$(provisioned test_incremental_read)"
)

# These tests take the `spark` fixture as an argument but never use it: they run with a
# stand-in for it that raises on any use (so a test that did touch Spark would fail, not pass).
SPARK_STANDIN=(
  tests/integration/test_writes/test_writes.py::test_write_parquet_compression_properties
  tests/integration/test_writes/test_writes.py::test_write_parquet_other_properties
  tests/integration/test_writes/test_writes.py::test_write_parquet_unsupported_properties
  tests/integration/test_writes/test_writes.py::test_invalid_arguments
  tests/integration/test_writes/test_writes.py::test_abort_table_transaction_on_exception
  tests/integration/test_writes/test_writes.py::test_double_commit_transaction
  tests/integration/test_writes/test_writes.py::test_evolve_and_write
  tests/integration/test_writes/test_writes.py::test_v3_write_and_read_row_lineage
)

log() { printf '[pyiceberg-upstream] %s\n' "$*" >&2; }

# --- The client ---------------------------------------------------------------------------
if ! "$PYTHON" -c "import importlib.metadata as m, sys; sys.exit(m.version('pyiceberg') != '$PYICEBERG_VERSION')" 2>/dev/null; then
  log "$PYTHON must have pyiceberg==$PYICEBERG_VERSION installed (pip install -r tests/python/requirements.txt)"
  exit 2
fi

# --- PyIceberg's source distribution (its tests/ are not in the wheel) ---------------------
# The tests run from the unpacked root (they import `tests.conftest`), which puts that root
# first on sys.path: its `pyiceberg/` sources must not be there, or they would shadow the
# installed wheel (and its compiled Avro decoder, without which reading a manifest warns and
# `filterwarnings = error` fails the test). The unpack leaves them out.
if [[ ! -f $SRC/tests/integration/test_catalog.py || ! -f $SRC/tests/conftest.py || -e $SRC/pyiceberg ]]; then
  log "unpacking pyiceberg $PYICEBERG_VERSION tests into $SRC"
  mkdir -p "$SRC_CACHE"
  sdist=$SRC_CACHE/pyiceberg-$PYICEBERG_VERSION.tar.gz
  if [[ ! -f $sdist ]]; then
    # Only pyiceberg itself must be a source distribution; its build requirements may be wheels.
    "$PYTHON" -m pip download --quiet --no-deps --no-binary pyiceberg "pyiceberg==$PYICEBERG_VERSION" -d "$SRC_CACHE"
  fi
  unpack=$(mktemp -d "$SRC_CACHE/unpack.XXXXXX")
  tar -xzf "$sdist" -C "$unpack" --exclude="pyiceberg-$PYICEBERG_VERSION/pyiceberg"
  # Swap directories so that a concurrent run sees either the old or the new tree.
  [[ ! -e $SRC ]] || mv "$SRC" "$unpack/old"
  mv "$unpack/pyiceberg-$PYICEBERG_VERSION" "$SRC"
  rm -rf "$unpack"
fi

# --- Packages the upstream conftest and test modules import at module level ---------------
# Prints the pins that are missing, each as "deps <pin>" or "no-deps <pin>" (a line of the
# requirements file marked `# no-deps` is installed without its dependencies).
missing_requirements() {
  "$PYTHON" - "$REQUIREMENTS" <<'EOF'
import importlib.metadata as metadata
import re
import sys

for line in open(sys.argv[1]):
    pin, _, comment = line.partition("#")
    pin = pin.strip()
    if not pin:
        continue
    name, version = re.split(r"==", pin, maxsplit=1)
    try:
        installed = metadata.version(name.split("[")[0])
    except metadata.PackageNotFoundError:
        installed = None
    if installed != version:
        print("no-deps" if comment.strip().startswith("no-deps") else "deps", pin)
EOF
}
missing=$(missing_requirements)
if [[ -n $missing ]]; then
  log "installing from $REQUIREMENTS: $(awk '{print $2}' <<<"$missing" | xargs)"
  mapfile -t with_deps < <(awk '$1 == "deps" {print $2}' <<<"$missing")
  mapfile -t without_deps < <(awk '$1 == "no-deps" {print $2}' <<<"$missing")
  ((${#with_deps[@]} == 0)) || "$PYTHON" -m pip install --quiet "${with_deps[@]}"
  ((${#without_deps[@]} == 0)) || "$PYTHON" -m pip install --quiet --no-deps "${without_deps[@]}"
fi

# DuckDB looks for extensions in ~/.duckdb/extensions/<version>/<platform>/ and downloads
# them there on `INSTALL` when missing. The tests get a HOME of their own whose
# .duckdb/extensions is the duckdb-ext-* packages' directory, so `INSTALL iceberg` finds the
# extension installed and downloads nothing.
TEST_HOME=$SRC_CACHE/home
duckdb_extensions=$("$PYTHON" -c 'import os, duckdb_ext; print(os.path.join(list(duckdb_ext.__path__)[0], "extensions"))')
if [[ $(readlink "$TEST_HOME/.duckdb/extensions" 2>/dev/null) != "$duckdb_extensions" ]]; then
  mkdir -p "$TEST_HOME/.duckdb"
  ln -sfn "$duckdb_extensions" "$TEST_HOME/.duckdb/extensions"
fi

# --- Collection and deselection --------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyiceberg-upstream.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The stand-in for the `spark` fixture (SPARK_STANDIN above), as a pytest plugin. After the
# deselection it checks that every test still selected that asks for `spark` is listed in
# SPARK_STANDIN, and stops the run otherwise; it then answers every setup of `spark` with an
# object that raises on any use.
cat >"$WORK/pangolin_spark_standin.py" <<'EOF'
import os

import pytest

_ALLOWED = set(os.environ.get("PANGOLIN_SPARK_STANDIN", "").split())


class NoSpark:
    """Stands in for the SparkSession of a test whose body never uses it."""

    def __getattr__(self, name):
        raise RuntimeError(f"no Spark in this run: the test used spark.{name}; deselect it instead")

    def __repr__(self):
        return "NoSpark()"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if config.option.collectonly:  # the script's own listing, before it deselects anything
        return
    unexpected = [
        item.nodeid
        for item in items
        if "spark" in getattr(item, "fixturenames", ()) and item.nodeid.split("[", 1)[0] not in _ALLOWED
    ]
    if unexpected:
        raise pytest.UsageError(
            "selected tests ask for Spark; deselect them or list them in SPARK_STANDIN:\n  " + "\n  ".join(unexpected)
        )


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname != "spark":
        return None
    # Cache the stand-in the way pytest's own setup does, so that later requests of this
    # session-scoped fixture and its teardown see a set-up fixture.
    result = NoSpark()
    fixturedef.cached_result = (result, fixturedef.cache_key(request), None)
    return result
EOF
export PYTHONPATH=$WORK${PYTHONPATH:+:$PYTHONPATH}
export PANGOLIN_SPARK_STANDIN="${SPARK_STANDIN[*]}"

cd "$SRC"
export PYICEBERG_TEST_CATALOG=pangolin
export PYICEBERG_CATALOG__PANGOLIN__TYPE=rest
export PYICEBERG_CATALOG__PANGOLIN__URI=$CATALOG_URI
export PYICEBERG_CATALOG__PANGOLIN__WAREHOUSE=$WAREHOUSE
export PYICEBERG_HOME=$SRC_CACHE/empty-pyiceberg-home
mkdir -p "$PYICEBERG_HOME"
PYTEST=("$PYTHON" -m pytest -p no:cacheprovider -p pangolin_spark_standin -m integration)

collected=$("${PYTEST[@]}" --collect-only -q "${TEST_FILES[@]}" 2>&1) || {
  printf '%s\n' "$collected" >&2
  log "collection failed"
  exit 1
}
grep -E '^tests/.*::' <<<"$collected" >"$WORK/collected" || true

# Expand the rules into exact ids, as "<id><TAB><reason>" lines; a rule that matches nothing is
# stale.
stale=0
: >"$WORK/deselected"
with_reason() { awk -v reason="$1" '{print $0 "\t" reason}'; }
for entry in "${DESELECTED_PARAMS[@]}"; do
  param=${entry%%|*}
  grep -E "\[([^]]*-)?${param}(-[^]]*)?\]\$" "$WORK/collected" >"$WORK/match" || true
  [[ -s $WORK/match ]] || {
    log "deselection rule matches no collected test (stale?): [$param]"
    stale=1
  }
  with_reason "${entry#*|}" <"$WORK/match" >>"$WORK/deselected"
done
for entry in "${DESELECTED[@]}"; do
  id=${entry%%|*}
  if [[ $id == *\[* ]]; then
    grep -xF -- "$id" "$WORK/collected" >"$WORK/match" || true
  else
    awk -v id="$id" '$0 == id || index($0, id "[") == 1' "$WORK/collected" >"$WORK/match"
  fi
  [[ -s $WORK/match ]] || {
    log "deselected test not collected (stale?): $id"
    stale=1
  }
  with_reason "${entry#*|}" <"$WORK/match" >>"$WORK/deselected"
done
for id in "${SPARK_STANDIN[@]}"; do
  if ! awk -v id="$id" '$0 == id || index($0, id "[") == 1' "$WORK/collected" | grep -q .; then
    log "spark stand-in test not collected (stale?): $id"
    stale=1
  fi
done
((stale == 0)) || exit 1
# An id matched by several rules keeps the first rule's reason.
awk -F'\t' '!seen[$1]++' "$WORK/deselected" >"$WORK/match" && mv "$WORK/match" "$WORK/deselected"
if [[ ${1:-} == --list-deselected ]]; then
  cat "$WORK/deselected"
  exit 0
fi
mapfile -t deselect_ids < <(cut -f1 "$WORK/deselected")
deselect_args=()
for id in "${deselect_ids[@]}"; do deselect_args+=(--deselect "$id"); done

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
# that most of these tests write into; do that one step with PyIceberg itself.
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
log "running ${#TEST_FILES[@]} files against $CATALOG_URI ($(wc -l <"$WORK/collected") collected, ${#deselect_ids[@]} deselected)"
rc=0
HOME=$TEST_HOME "${PYTEST[@]}" -rfEs --junitxml="$WORK/junit.xml" "${deselect_args[@]}" "${TEST_FILES[@]}" "$@" || rc=$?

# Per-file counts (the junit report has one <testcase> per test that ran).
if [[ -f $WORK/junit.xml ]]; then
  "$PYTHON" - "$WORK/junit.xml" "$WORK/collected" "$WORK/deselected" "${TEST_FILES[@]}" <<'EOF' >&2 || true
import collections
import sys
import xml.etree.ElementTree as ET

junit, collected, deselected, *files = sys.argv[1:]
count = collections.defaultdict(collections.Counter)
for line in open(collected):
    count[line.split("::", 1)[0]]["collected"] += 1
for line in open(deselected):
    count[line.split("::", 1)[0]]["deselected"] += 1
for case in ET.parse(junit).iter("testcase"):
    path = case.get("classname", "").replace(".", "/") + ".py"
    outcome = "passed"
    for child in case:
        if child.tag in ("failure", "error"):
            outcome = "failed"
            break
        if child.tag == "skipped":
            outcome = "skipped"
    count[path][outcome] += 1
print("[pyiceberg-upstream] per file: collected / deselected / passed / failed (or errors) / skipped")
for path in files:
    c = count[path]
    print(f"  {path:50} {c['collected']:4} {c['deselected']:4} {c['passed']:4} {c['failed']:4} {c['skipped']:4}")
EOF
fi
exit $rc
