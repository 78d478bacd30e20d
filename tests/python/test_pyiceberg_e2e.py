"""PyIceberg 0.12 end to end against a running `pangolin dev`.

The client is given only ``uri`` and ``warehouse``; it must find everything else (prefix, S3
endpoint, region, keys, path-style access) in what the server answers. Every test builds its
own uniquely named namespaces, so the suite can run again and again against one data dir.

Run: ``$HOME/.cache/pangolin/venv/bin/python -m pytest tests/python/test_pyiceberg_e2e.py``
(settings: see support.py).
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import (
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

from support import WAREHOUSE, list_objects, snapshot_ids, wait_until_empty

pytestmark = pytest.mark.e2e

SCHEMA = Schema(
    NestedField(field_id=1, name="id", field_type=LongType(), required=False),
    NestedField(field_id=2, name="name", field_type=StringType(), required=False),
)
ARROW_SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])
ARROW_SCHEMA_EVOLVED = pa.schema(
    [pa.field("id", pa.int64()), pa.field("name", pa.string()), pa.field("score", pa.float64())]
)

FIRST_ROWS = [{"id": 1, "name": "ant"}, {"id": 2, "name": "bee"}, {"id": 3, "name": "cat"}]
SECOND_ROWS = [{"id": 4, "name": "dog"}, {"id": 5, "name": "eel"}]
THIRD_ROWS = [{"id": 6, "name": "fox", "score": 0.5}, {"id": 7, "name": None, "score": 7.25}]


def rows_of(arrow_table: pa.Table) -> list[dict]:
    return sorted(arrow_table.to_pylist(), key=lambda row: row["id"])


def test_config_vends_prefix_and_storage(server_config: dict) -> None:
    """The client needs only uri + warehouse: /v1/config must give the prefix and the S3 settings."""
    overrides = server_config.get("overrides")
    defaults = server_config.get("defaults")
    assert isinstance(overrides, dict), server_config
    assert isinstance(defaults, dict), server_config
    merged = {**defaults, **overrides}
    assert merged.get("prefix") == WAREHOUSE, server_config
    for key in ("s3.endpoint", "s3.region", "s3.access-key-id", "s3.secret-access-key", "s3.path-style-access"):
        assert merged.get(key), f"/v1/config does not vend {key}: {server_config}"


def test_table_lifecycle_append_evolve_time_travel_rename_purge(
    catalog: RestCatalog, s3, run_id: str, namespace_cleanup: list
) -> None:
    parent = (f"e2e_{run_id}",)
    namespace = (*parent, "nested")
    namespace_cleanup.extend([parent, namespace])

    # Nested namespace.
    catalog.create_namespace(parent, properties={"owner": "pytest"})
    catalog.create_namespace(namespace)
    assert catalog.namespace_exists(namespace)
    assert namespace in catalog.list_namespaces(parent)
    assert catalog.load_namespace_properties(parent).get("owner") == "pytest"

    # Create.
    identifier = (*namespace, "events")
    table = catalog.create_table(identifier, SCHEMA)
    assert table.name() == identifier
    assert table.current_snapshot() is None
    assert rows_of(table.scan().to_arrow()) == []
    assert catalog.list_tables(namespace) == [identifier]

    # Two appends, read back exactly.
    table.append(pa.Table.from_pylist(FIRST_ROWS, schema=ARROW_SCHEMA))
    first_snapshot = table.current_snapshot()
    assert first_snapshot is not None
    first_snapshot_id = first_snapshot.snapshot_id
    assert first_snapshot.summary is not None
    assert first_snapshot.summary["added-records"] == str(len(FIRST_ROWS))

    table.append(pa.Table.from_pylist(SECOND_ROWS, schema=ARROW_SCHEMA))
    second_snapshot = table.current_snapshot()
    assert second_snapshot is not None
    second_snapshot_id = second_snapshot.snapshot_id
    assert second_snapshot_id != first_snapshot_id
    assert second_snapshot.parent_snapshot_id == first_snapshot_id

    loaded = catalog.load_table(identifier)
    assert loaded.metadata_location == table.metadata_location
    assert snapshot_ids(loaded) == [first_snapshot_id, second_snapshot_id]
    assert [h.snapshot_id for h in loaded.history()] == [first_snapshot_id, second_snapshot_id]
    assert rows_of(loaded.scan().to_arrow()) == sorted(FIRST_ROWS + SECOND_ROWS, key=lambda r: r["id"])

    # Schema evolution, then append and read with the new column.
    with loaded.update_schema() as update:
        update.add_column("score", DoubleType())
    evolved = catalog.load_table(identifier)
    assert [f.name for f in evolved.schema().fields] == ["id", "name", "score"]
    assert evolved.schema().schema_id == 1
    assert evolved.current_snapshot().snapshot_id == second_snapshot_id

    evolved.append(pa.Table.from_pylist(THIRD_ROWS, schema=ARROW_SCHEMA_EVOLVED))
    third_snapshot_id = evolved.current_snapshot().snapshot_id
    reread = catalog.load_table(identifier)
    expected_all = sorted(
        [{**row, "score": None} for row in FIRST_ROWS + SECOND_ROWS] + THIRD_ROWS, key=lambda r: r["id"]
    )
    assert rows_of(reread.scan().to_arrow()) == expected_all
    assert snapshot_ids(reread) == [first_snapshot_id, second_snapshot_id, third_snapshot_id]

    # Time travel to the first append: exactly its rows, in the schema of that snapshot.
    first_view = reread.scan(snapshot_id=first_snapshot_id).to_arrow()
    assert first_view.column_names == ["id", "name"]
    assert rows_of(first_view) == FIRST_ROWS
    second_view = reread.scan(snapshot_id=second_snapshot_id).to_arrow()
    assert rows_of(second_view) == sorted(FIRST_ROWS + SECOND_ROWS, key=lambda r: r["id"])

    # Rename within the nested namespace; data and history follow the table.
    location = reread.location()
    renamed_identifier = (*namespace, "events_renamed")
    catalog.rename_table(identifier, renamed_identifier)
    assert not catalog.table_exists(identifier)
    assert catalog.table_exists(renamed_identifier)
    assert catalog.list_tables(namespace) == [renamed_identifier]
    with pytest.raises(NoSuchTableError):
        catalog.load_table(identifier)
    renamed = catalog.load_table(renamed_identifier)
    assert renamed.name() == renamed_identifier
    assert renamed.metadata.table_uuid == reread.metadata.table_uuid
    assert renamed.metadata_location == reread.metadata_location
    assert renamed.location() == location
    assert snapshot_ids(renamed) == [first_snapshot_id, second_snapshot_id, third_snapshot_id]
    assert rows_of(renamed.scan().to_arrow()) == expected_all

    # The table's files are really in the bucket: metadata JSONs, manifest lists, manifests, data.
    objects = list_objects(s3, location)
    metadata_files = [o for o in objects if o.endswith(".metadata.json")]
    data_files = [o for o in objects if o.endswith(".parquet")]
    assert len(metadata_files) >= 5, objects  # create, 2 appends, schema change, 3rd append
    assert len(data_files) == 3, objects
    assert renamed.metadata_location.split("://", 1)[1] in objects

    # Purge: the table disappears from the catalog and every object under its location is deleted.
    catalog.purge_table(renamed_identifier)
    assert not catalog.table_exists(renamed_identifier)
    with pytest.raises(NoSuchTableError):
        catalog.load_table(renamed_identifier)
    assert catalog.list_tables(namespace) == []
    remaining = wait_until_empty(s3, location)
    assert remaining == [], f"purge left {len(remaining)} objects under {location}: {remaining[:10]}"

    catalog.drop_namespace(namespace)
    catalog.drop_namespace(parent)
    assert not catalog.namespace_exists(parent)


def test_load_missing_table_raises_no_such_table(catalog: RestCatalog, run_id: str, namespace_cleanup: list) -> None:
    namespace = (f"e2e_missing_{run_id}",)
    namespace_cleanup.append(namespace)
    catalog.create_namespace(namespace)
    with pytest.raises(NoSuchTableError):
        catalog.load_table((*namespace, "nope"))
    # In a namespace that does not exist either.
    with pytest.raises(NoSuchTableError):
        catalog.load_table((f"e2e_absent_{run_id}", "nope"))
    assert not catalog.table_exists((*namespace, "nope"))


def test_create_duplicate_table_raises_already_exists(
    catalog: RestCatalog, run_id: str, namespace_cleanup: list
) -> None:
    namespace = (f"e2e_dup_{run_id}",)
    namespace_cleanup.append(namespace)
    catalog.create_namespace(namespace)
    identifier = (*namespace, "t")
    original = catalog.create_table(identifier, SCHEMA)
    with pytest.raises(TableAlreadyExistsError):
        catalog.create_table(identifier, SCHEMA)
    # The failed create must not have replaced the existing table.
    assert catalog.load_table(identifier).metadata.table_uuid == original.metadata.table_uuid


def test_namespace_errors(catalog: RestCatalog, run_id: str, namespace_cleanup: list) -> None:
    namespace = (f"e2e_ns_{run_id}",)
    namespace_cleanup.append(namespace)
    catalog.create_namespace(namespace)
    with pytest.raises(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)

    catalog.create_table((*namespace, "keep"), SCHEMA)
    with pytest.raises(NamespaceNotEmptyError):
        catalog.drop_namespace(namespace)
    assert catalog.namespace_exists(namespace)
    assert catalog.table_exists((*namespace, "keep"))

    with pytest.raises(NoSuchNamespaceError):
        catalog.create_table((f"e2e_absent_{run_id}", "t"), SCHEMA)
    with pytest.raises(NoSuchNamespaceError):
        catalog.drop_namespace((f"e2e_absent_{run_id}",))
