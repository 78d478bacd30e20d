"""Fixtures for the PyIceberg client tests of Pangolin; settings are described in support.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from pyarrow import fs as pafs
from pyiceberg.catalog.rest import RestCatalog

from support import CATALOG_URI, WAREHOUSE, bucket_filesystem, new_catalog


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: PyIceberg end-to-end test against a running pangolin dev")
    config.addinivalue_line("markers", "persistence_write: persistence test, phase 'write' (before a restart)")
    config.addinivalue_line("markers", "persistence_verify: persistence test, phase 'verify' (after a restart)")


@pytest.fixture(scope="session")
def server_config() -> dict:
    """The raw ``GET /v1/config?warehouse=...`` answer; fails (not skips) when no server answers."""
    url = f"{CATALOG_URI}/v1/config"
    try:
        response = requests.get(url, params={"warehouse": WAREHOUSE}, timeout=10)
    except requests.RequestException as exc:
        pytest.fail(f"no Pangolin catalog answers at {url}: {exc}; start `pangolin dev` first", pytrace=False)
    assert response.status_code == 200, f"GET {url}?warehouse={WAREHOUSE}: {response.status_code} {response.text}"
    return response.json()


@pytest.fixture()
def catalog(server_config: dict) -> RestCatalog:
    cat = new_catalog()
    assert isinstance(cat, RestCatalog)
    return cat


@pytest.fixture(scope="session")
def s3() -> pafs.S3FileSystem:
    return bucket_filesystem()


@pytest.fixture()
def run_id() -> str:
    """A short unique tag so that repeated runs against one data dir never collide."""
    return uuid.uuid4().hex[:12]


@pytest.fixture()
def namespace_cleanup(catalog: RestCatalog) -> Iterator[list[tuple[str, ...]]]:
    """Namespaces appended to the yielded list are purged (tables) and dropped after the test.

    Best effort: a failing cleanup never hides the test's own result. Children are dropped
    before their parents by dropping the longest namespaces first.
    """
    created: list[tuple[str, ...]] = []
    yield created
    for namespace in sorted(created, key=len, reverse=True):
        try:
            for identifier in catalog.list_tables(namespace):
                catalog.purge_table(identifier)
            catalog.drop_namespace(namespace)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test result
            pass
