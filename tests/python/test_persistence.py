"""Catalog state survives a restart of `pangolin dev` on the same data dir.

Two phases, run by an outer script around a server restart:

1. start ``pangolin dev --data-dir DIR``
2. ``PANGOLIN_PHASE=write  python -m pytest tests/python/test_persistence.py``
   (equivalently ``-k write`` or ``-m persistence_write``): creates a nested namespace with
   properties, a table with three snapshots (two appends, a schema change, a third append)
   and records what it made (uuid, metadata location, snapshot ids) in a state file.
3. stop the server (SIGINT), start it again with the same ``--data-dir``
4. ``PANGOLIN_PHASE=verify python -m pytest tests/python/test_persistence.py``
   (equivalently ``-k verify`` or ``-m persistence_verify``): checks namespaces, properties,
   table listing, uuid, metadata location, schemas, snapshots, history and rows, and that the
   bucket still holds every file the metadata points to.

With ``PANGOLIN_PHASE`` set, the test of the other phase is skipped. Without it both run in
order, which checks the same things without a restart (a quick smoke test).

Settings:
- ``PANGOLIN_PERSIST_PREFIX`` (default ``persist``): first level of the fixed namespace
  ``(<prefix>, "nested")``; the table is ``<prefix>.nested.events``.
- ``PANGOLIN_PERSIST_STATE`` (default ``$TMPDIR/pangolin-persist-<prefix>.json``): where the
  write phase records ids for the verify phase.
- Server address: see support.py.

The write phase replaces (purges) whatever an earlier run left under the same prefix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

from support import list_objects, snapshot_ids

PHASE = os.environ.get("PANGOLIN_PHASE", "").strip().lower()
if PHASE not in ("", "write", "verify"):
    raise pytest.UsageError(f"PANGOLIN_PHASE must be 'write' or 'verify', not {PHASE!r}")

PREFIX = os.environ.get("PANGOLIN_PERSIST_PREFIX", "persist")
STATE_FILE = Path(
    os.environ.get("PANGOLIN_PERSIST_STATE", str(Path(tempfile.gettempdir()) / f"pangolin-persist-{PREFIX}.json"))
)

PARENT = (PREFIX,)
NAMESPACE = (PREFIX, "nested")
TABLE = (*NAMESPACE, "events")
PARENT_PROPERTIES = {"owner": "persistence-test", "purpose": "restart"}
TABLE_PROPERTIES = {"pangolin.test": "persistence"}

SCHEMA = Schema(
    NestedField(field_id=1, name="id", field_type=LongType(), required=False),
    NestedField(field_id=2, name="name", field_type=StringType(), required=False),
)
ARROW_V0 = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])
ARROW_V1 = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string()), pa.field("score", pa.float64())])
BATCH_1 = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]
BATCH_2 = [{"id": 3, "name": "three"}]
BATCH_3 = [{"id": 4, "name": "four", "score": 4.5}, {"id": 5, "name": None, "score": None}]
ALL_ROWS = [{**r, "score": None} for r in BATCH_1 + BATCH_2] + BATCH_3


def _phase_enabled(phase: str) -> None:
    if PHASE and PHASE != phase:
        pytest.skip(f"PANGOLIN_PHASE={PHASE}: the {phase} phase does not run")


def _rows(arrow_table: pa.Table) -> list[dict]:
    return sorted(arrow_table.to_pylist(), key=lambda row: row["id"])


def _remove_previous_run(catalog: RestCatalog) -> None:
    try:
        for namespace in (NAMESPACE, PARENT):
            for identifier in catalog.list_tables(namespace):
                catalog.purge_table(identifier)
            if catalog.namespace_exists(namespace):
                catalog.drop_namespace(namespace)
    except NoSuchNamespaceError:
        pass


@pytest.mark.persistence_write
def test_write_phase(catalog: RestCatalog) -> None:
    _phase_enabled("write")
    _remove_previous_run(catalog)
    STATE_FILE.unlink(missing_ok=True)

    catalog.create_namespace(PARENT, properties=PARENT_PROPERTIES)
    catalog.create_namespace(NAMESPACE)
    table = catalog.create_table(TABLE, SCHEMA, properties=TABLE_PROPERTIES)
    table.append(pa.Table.from_pylist(BATCH_1, schema=ARROW_V0))
    table.append(pa.Table.from_pylist(BATCH_2, schema=ARROW_V0))
    with table.update_schema() as update:
        update.add_column("score", DoubleType())
    table.append(pa.Table.from_pylist(BATCH_3, schema=ARROW_V1))

    table = catalog.load_table(TABLE)
    assert _rows(table.scan().to_arrow()) == ALL_ROWS
    snapshots = snapshot_ids(table)
    assert len(snapshots) == 3
    state = {
        "table_uuid": str(table.metadata.table_uuid),
        "metadata_location": table.metadata_location,
        "location": table.location(),
        "snapshot_ids": snapshots,
        "history": [[h.snapshot_id, h.timestamp_ms] for h in table.history()],
        "current_schema_id": table.schema().schema_id,
        "last_updated_ms": table.metadata.last_updated_ms,
    }
    STATE_FILE.write_text(json.dumps(state, indent=2))


@pytest.mark.persistence_verify
def test_verify_phase(catalog: RestCatalog, s3) -> None:
    _phase_enabled("verify")
    assert STATE_FILE.exists(), f"{STATE_FILE} is missing: run the write phase first (PANGOLIN_PHASE=write)"
    state = json.loads(STATE_FILE.read_text())

    # Namespaces and their properties.
    assert PARENT in catalog.list_namespaces()
    assert NAMESPACE in catalog.list_namespaces(PARENT)
    properties = catalog.load_namespace_properties(PARENT)
    for key, value in PARENT_PROPERTIES.items():
        assert properties.get(key) == value, properties

    # The table, its pointer and its metadata.
    assert catalog.list_tables(NAMESPACE) == [TABLE]
    table = catalog.load_table(TABLE)
    assert str(table.metadata.table_uuid) == state["table_uuid"]
    assert table.metadata_location == state["metadata_location"]
    assert table.location() == state["location"]
    assert table.metadata.last_updated_ms == state["last_updated_ms"]
    for key, value in TABLE_PROPERTIES.items():
        assert table.properties.get(key) == value, table.properties
    assert table.schema().schema_id == state["current_schema_id"]
    assert [f.name for f in table.schema().fields] == ["id", "name", "score"]
    assert snapshot_ids(table) == state["snapshot_ids"]
    assert table.current_snapshot().snapshot_id == state["snapshot_ids"][-1]
    assert [[h.snapshot_id, h.timestamp_ms] for h in table.history()] == state["history"]

    # The rows, now and at each earlier snapshot.
    assert _rows(table.scan().to_arrow()) == ALL_ROWS
    first, second, _ = state["snapshot_ids"]
    assert _rows(table.scan(snapshot_id=first).to_arrow()) == BATCH_1
    assert _rows(table.scan(snapshot_id=second).to_arrow()) == BATCH_1 + BATCH_2

    # Every file the current metadata names is still in the bucket.
    objects = set(list_objects(s3, table.location()))
    assert table.metadata_location.split("://", 1)[1] in objects
    for snapshot in table.snapshots():
        assert snapshot.manifest_list.split("://", 1)[1] in objects, snapshot.manifest_list
    for task in table.scan().plan_files():
        assert task.file.file_path.split("://", 1)[1] in objects, task.file.file_path
