"""Location ownership against a running ``pangolin dev`` (both regions).

A table created, registered or moved onto another table's location (equal, inside or around
it) used to be accepted; dropping it with ``purgeRequested=true`` then deleted the other
table's files in us-east-1 and, once replicated, in eu-west-1 (its scans failed with
``FileNotFoundError``, eu-west-1's loadTable answered 500). These tests make those attempts
through the real clients and raw REST in both regions and check that every one is refused
with 400, that a legitimate purge next to the victim leaves it readable in both regions,
and that ``.``/``..`` names and impossible locations are client errors.

Run: ``$HOME/.cache/pangolin/venv/bin/python -m pytest tests/python/test_locations.py``
against ``pangolin dev`` (tests/multi_region.sh does).
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pytest
import requests
from pyiceberg.catalog import load_catalog

US, EU = "http://127.0.0.1:8181", "http://127.0.0.1:8281"
WAREHOUSE = "demo"
ROWS = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "item": ["apple", "pear", "fig"]})


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def prefix_of(uri: str) -> str:
    body = requests.get(f"{uri}/v1/config", params={"warehouse": WAREHOUSE}, timeout=10).json()
    return {**body.get("defaults", {}), **body.get("overrides", {})}.get("prefix", WAREHOUSE)


def tables_url(uri: str, ns: str) -> str:
    return f"{uri}/v1/{prefix_of(uri)}/namespaces/{ns}/tables"


def catalog(uri: str):
    return load_catalog(f"loc-{uri[-4:]}", type="rest", uri=uri, warehouse=WAREHOUSE)


def wait_for(what: str, probe, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - keep polling
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}; last: {last}", pytrace=False)


def schema_json() -> dict:
    return {"type": "struct", "schema-id": 0, "fields": [{"id": 1, "name": "id", "required": True, "type": "long"}]}


def assert_400(response: requests.Response) -> None:
    assert response.status_code == 400, f"{response.status_code} {response.text[:300]}"
    assert response.json()["error"]["type"] == "BadRequestException", response.text


@pytest.fixture(scope="module")
def victim():
    """A table with rows in us-east-1, replicated to eu-west-1."""
    us = catalog(US)
    ns = unique("loc")
    us.create_namespace(ns)
    table = us.create_table(f"{ns}.victim", schema=ROWS.schema)
    table.append(ROWS)
    eu = catalog(EU)
    wait_for("the victim in eu-west-1", lambda: len(eu.load_table(f"{ns}.victim").scan().to_arrow()) == 3)
    return ns, table


@pytest.mark.parametrize("uri", [US, EU], ids=["us-east-1", "eu-west-1"])
def test_creating_a_table_on_another_tables_location_is_refused(victim, uri):
    ns, table = victim
    location = table.location().rstrip("/")
    for bad in [location, f"{location}/", f"{location}/data", location.rsplit("/", 1)[0]]:
        response = requests.post(
            tables_url(uri, ns), json={"name": unique("attacker"), "schema": schema_json(), "location": bad}, timeout=30
        )
        assert_400(response)
        assert "overlaps" in response.json()["error"]["message"]


@pytest.mark.parametrize("uri", [US, EU], ids=["us-east-1", "eu-west-1"])
def test_registering_another_tables_metadata_is_refused(victim, uri):
    ns, table = victim
    response = requests.post(
        f"{uri}/v1/{prefix_of(uri)}/namespaces/{ns}/register",
        json={"name": unique("copy"), "metadata-location": table.metadata_location},
        timeout=30,
    )
    assert_400(response)


@pytest.mark.parametrize("uri", [US, EU], ids=["us-east-1", "eu-west-1"])
def test_moving_a_table_onto_another_is_refused(victim, uri):
    ns, table = victim
    mover = catalog(US).create_table(f"{ns}.{unique('mover')}", schema=ROWS.schema)
    name = mover.name()[-1]
    response = requests.post(
        f"{tables_url(uri, ns)}/{name}",
        json={"requirements": [], "updates": [{"action": "set-location", "location": table.location()}]},
        timeout=30,
    )
    assert_400(response)
    assert catalog(US).load_table(f"{ns}.{name}").metadata_location == mover.metadata_location


def test_purging_a_neighbour_keeps_the_victim_readable_in_both_regions(victim):
    ns, table = victim
    us = catalog(US)
    neighbour = us.create_table(
        f"{ns}.{unique('neighbour')}", schema=ROWS.schema, location=f"{table.location().rstrip('/')}-neighbour"
    )
    neighbour.append(ROWS)
    eu = catalog(EU)
    wait_for("the neighbour in eu-west-1", lambda: eu.table_exists(neighbour.name()))
    us.purge_table(neighbour.name())
    wait_for("the purge to replicate", lambda: not eu.table_exists(neighbour.name()))
    time.sleep(1)  # the secondary purges right after applying the drop
    for c in (us, eu):
        assert len(c.load_table(f"{ns}.victim").scan().to_arrow()) == 3


@pytest.mark.parametrize("uri", [US, EU], ids=["us-east-1", "eu-west-1"])
def test_impossible_locations_and_dot_names_are_client_errors(victim, uri):
    ns, _ = victim
    for bad in ["s3://other-bucket/x", "s3://demo/a/../b", "s3://demo"]:
        response = requests.post(
            tables_url(uri, ns), json={"name": unique("t"), "schema": schema_json(), "location": bad}, timeout=30
        )
        assert_400(response)
    for bad in ["s3://nob/x.json", "s3://demo/x/../y.metadata.json"]:
        response = requests.post(
            f"{uri}/v1/{prefix_of(uri)}/namespaces/{ns}/register",
            json={"name": unique("r"), "metadata-location": bad},
            timeout=30,
        )
        assert_400(response)
    for name in [".", ".."]:
        response = requests.post(f"{uri}/v1/{prefix_of(uri)}/namespaces", json={"namespace": [name]}, timeout=30)
        assert_400(response)
        response = requests.post(tables_url(uri, ns), json={"name": name, "schema": schema_json()}, timeout=30)
        assert_400(response)
