"""Semantically valid requests added to the Schemathesis "examples" phase (via hooks.py).

Random schema-valid data almost never passes a catalog's own rules (a schema-valid table
schema repeats field ids, a schema-valid commit violates its requirements), so without
these the success responses of createTable, updateTable, commitTransaction, registerTable,
createView, reportMetrics, ... would never be checked against the spec's result schemas.
Each request here is expected to succeed on a catalog seeded by run.py; whatever it gets
back still goes through every enabled check.

They create objects of their own (names starting `ex_`) or act on the seeded `fuzz.t1`,
`fuzz.v1` (commits, loads) and `fuzz.t2`, `fuzz.v2` (renamed). On a catalog that already
holds them from an earlier run a create answers 409, still a documented answer.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

URI = os.environ.get("PANGOLIN_URI", "http://127.0.0.1:8181").rstrip("/")
CATALOG = os.environ.get("PANGOLIN_FUZZ_CATALOG", "demo")
NS = "fuzz"

SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "data", "type": "string", "required": False},
        {"id": 3, "name": "ts", "type": "timestamptz", "required": False},
    ],
}
VIEW_SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [{"id": 1, "name": "id", "type": "long", "required": True}],
}


def view_version(version_id: int, sql: str) -> dict:
    return {
        "version-id": version_id,
        "timestamp-ms": 1700000000000,
        "schema-id": 0,
        "summary": {"engine-name": "fuzz", "engine-version": "1"},
        "representations": [{"type": "sql", "sql": sql, "dialect": "spark"}],
        "default-namespace": [NS],
    }


def _get(path: str) -> dict | None:
    url = f"{URI}/v1/{urllib.parse.quote(CATALOG)}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


_state: dict | None = None


def _seeded() -> dict:
    """Metadata of the seeded table and view, read once when the first example is built."""
    global _state
    if _state is None:
        table = _get(f"namespaces/{NS}/tables/t1") or {}
        view = _get(f"namespaces/{NS}/views/v1") or {}
        _state = {
            "table_location": table.get("metadata-location"),
            "table_uuid": (table.get("metadata") or {}).get("table-uuid"),
            "view_location": view.get("metadata-location"),
            "view_uuid": (view.get("metadata") or {}).get("view-uuid"),
        }
    return _state


def _ns(**extra) -> dict:
    return {"prefix": CATALOG, "namespace": NS, **extra}


def examples_for(label: str) -> list[dict]:
    """Requests for the operation `label` ("METHOD /path"): dicts of Case keyword arguments."""
    seeded = _seeded()
    t1 = _ns(table="t1")
    v1 = _ns(view="v1")
    table_id = {"namespace": [NS], "name": "t1"}
    out: dict[str, list[dict]] = {
        "GET /v1/config": [{"query": {"warehouse": CATALOG}}],
        "GET /v1/{prefix}/namespaces": [
            {"path_parameters": {"prefix": CATALOG}, "query": {"pageSize": 1}},
            {"path_parameters": {"prefix": CATALOG}, "query": {"parent": NS}},
        ],
        "POST /v1/{prefix}/namespaces": [
            {"path_parameters": {"prefix": CATALOG}, "body": {"namespace": ["ex_ns"], "properties": {"a": "b"}}},
            {"path_parameters": {"prefix": CATALOG}, "body": {"namespace": [NS, "ex_child"]}},
        ],
        "POST /v1/{prefix}/namespaces/{namespace}/properties": [
            {"path_parameters": _ns(), "body": {"removals": ["absent", "a"], "updates": {"ex": "1"}}},
        ],
        "GET /v1/{prefix}/namespaces/{namespace}/tables": [
            {"path_parameters": _ns(), "query": {"pageSize": 1}},
        ],
        "POST /v1/{prefix}/namespaces/{namespace}/tables": [
            {
                "path_parameters": _ns(),
                "body": {
                    "name": "ex_t",
                    "schema": SCHEMA,
                    "partition-spec": {
                        "spec-id": 0,
                        "fields": [{"source-id": 3, "field-id": 1000, "name": "ts_day", "transform": "day"}],
                    },
                    "write-order": {
                        "order-id": 1,
                        "fields": [
                            {"source-id": 1, "transform": "identity", "direction": "asc", "null-order": "nulls-first"}
                        ],
                    },
                    "properties": {"format-version": "2", "owner": "fuzz"},
                },
            },
            {"path_parameters": _ns(), "body": {"name": "ex_staged", "schema": SCHEMA, "stage-create": True}},
        ],
        "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}": [
            {"path_parameters": t1},
            {"path_parameters": t1, "query": {"snapshots": "refs"}},
        ],
        "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}": [
            {
                "path_parameters": t1,
                "body": {
                    "requirements": (
                        [{"type": "assert-table-uuid", "uuid": seeded["table_uuid"]}] if seeded["table_uuid"] else []
                    ),
                    "updates": [
                        {"action": "set-properties", "updates": {"ex.commit": "1"}},
                        {"action": "remove-properties", "removals": ["absent"]},
                    ],
                },
            },
            {
                "path_parameters": t1,
                "body": {
                    "requirements": [{"type": "assert-current-schema-id", "current-schema-id": 0}],
                    "updates": [
                        {
                            "action": "add-schema",
                            "schema": {
                                **SCHEMA,
                                "schema-id": 1,
                                "fields": [
                                    {"id": 1, "name": "id", "type": "long", "required": True},
                                    {"id": 2, "name": "data", "type": "string", "required": False},
                                    {"id": 4, "name": "extra", "type": "int", "required": False},
                                ],
                            },
                            "last-column-id": 4,
                        },
                        {"action": "set-current-schema", "schema-id": -1},
                    ],
                },
            },
        ],
        "POST /v1/{prefix}/namespaces/{namespace}/register": (
            [
                {"path_parameters": _ns(), "body": {"name": "ex_registered", "metadata-location": seeded["table_location"]}},
                # `overwrite` is part of RegisterTableRequest; the answer must be a documented one
                {
                    "path_parameters": _ns(),
                    "body": {"name": "t1", "metadata-location": seeded["table_location"], "overwrite": True},
                },
            ]
            if seeded["table_location"]
            else []
        ),
        "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics": [
            {
                "path_parameters": t1,
                "body": {
                    "report-type": "commit-report",
                    "table-name": "demo.fuzz.t1",
                    "snapshot-id": 1,
                    "sequence-number": 1,
                    "operation": "append",
                    "metrics": {
                        "total-duration": {"count": 1, "time-unit": "nanoseconds", "total-duration": 5},
                        "added-data-files": {"unit": "count", "value": 1},
                    },
                    "metadata": {"engine": "fuzz"},
                },
            },
            {
                "path_parameters": t1,
                "body": {
                    "report-type": "scan-report",
                    "table-name": "demo.fuzz.t1",
                    "snapshot-id": 1,
                    "filter": True,
                    "schema-id": 0,
                    "projected-field-ids": [1, 2],
                    "projected-field-names": ["id", "data"],
                    "metrics": {"result-data-files": {"unit": "count", "value": 1}},
                },
            },
        ],
        "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials": [{"path_parameters": t1}],
        "POST /v1/{prefix}/tables/rename": [
            {
                "path_parameters": {"prefix": CATALOG},
                "body": {
                    "source": {"namespace": [NS], "name": "t2"},
                    "destination": {"namespace": [NS], "name": "ex_t2_renamed"},
                },
            }
        ],
        "POST /v1/{prefix}/transactions/commit": [
            {
                "path_parameters": {"prefix": CATALOG},
                "body": {
                    "table-changes": [
                        {
                            "identifier": table_id,
                            "requirements": [],
                            "updates": [{"action": "set-properties", "updates": {"ex.transaction": "1"}}],
                        }
                    ]
                },
            }
        ],
        "GET /v1/{prefix}/namespaces/{namespace}/views": [{"path_parameters": _ns(), "query": {"pageSize": 1}}],
        "POST /v1/{prefix}/namespaces/{namespace}/views": [
            {
                "path_parameters": _ns(),
                "body": {
                    "name": "ex_v",
                    "schema": VIEW_SCHEMA,
                    "view-version": view_version(1, "SELECT id FROM fuzz.t1"),
                    "properties": {"comment": "fuzz"},
                },
            }
        ],
        "GET /v1/{prefix}/namespaces/{namespace}/views/{view}": [{"path_parameters": v1}],
        "POST /v1/{prefix}/namespaces/{namespace}/views/{view}": [
            {
                "path_parameters": v1,
                "body": {
                    "requirements": (
                        [{"type": "assert-view-uuid", "uuid": seeded["view_uuid"]}] if seeded["view_uuid"] else []
                    ),
                    "updates": [
                        {"action": "set-properties", "updates": {"ex.replace": "1"}},
                        {"action": "add-view-version", "view-version": view_version(2, "SELECT id FROM fuzz.t1 WHERE id > 0")},
                        {"action": "set-current-view-version", "view-version-id": -1},
                    ],
                },
            }
        ],
        "POST /v1/{prefix}/namespaces/{namespace}/register-view": (
            [{"path_parameters": _ns(), "body": {"name": "ex_v_registered", "metadata-location": seeded["view_location"]}}]
            if seeded["view_location"]
            else []
        ),
        "POST /v1/{prefix}/views/rename": [
            {
                "path_parameters": {"prefix": CATALOG},
                "body": {
                    "source": {"namespace": [NS], "name": "v2"},
                    "destination": {"namespace": [NS], "name": "ex_v2_renamed"},
                },
            }
        ],
    }
    return out.get(label, [])
