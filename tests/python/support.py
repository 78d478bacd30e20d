"""Helpers shared by the PyIceberg client tests: server settings, catalog and bucket access.

The tests talk to an already running `pangolin dev` (one region on loopback):

- ``PANGOLIN_URI`` (default ``http://127.0.0.1:8181``): the Iceberg REST catalog.
- ``PANGOLIN_S3`` (default ``http://127.0.0.1:9000``): its embedded S3 endpoint, used only by
  the tests themselves to look at the bucket (``admin``/``password``, region ``us-east-1``).
- ``PANGOLIN_WAREHOUSE`` (default ``demo``): the warehouse (catalog) the client asks for.

The catalog client is configured with ``uri`` and ``warehouse`` only: every storage setting
(endpoint, region, keys, path-style access) must be vended by the server.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlparse

from pyarrow import fs as pafs
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table

CATALOG_URI = os.environ.get("PANGOLIN_URI", "http://127.0.0.1:8181").rstrip("/")
S3_ENDPOINT = os.environ.get("PANGOLIN_S3", "http://127.0.0.1:9000").rstrip("/")
WAREHOUSE = os.environ.get("PANGOLIN_WAREHOUSE", "demo")
S3_ACCESS_KEY = os.environ.get("PANGOLIN_S3_ACCESS_KEY", "admin")
S3_SECRET_KEY = os.environ.get("PANGOLIN_S3_SECRET_KEY", "password")
S3_REGION = os.environ.get("PANGOLIN_S3_REGION", "us-east-1")


def new_catalog() -> Catalog:
    """A PyIceberg REST catalog configured exactly like a user would: uri + warehouse, nothing else."""
    return load_catalog("pangolin", type="rest", uri=CATALOG_URI, warehouse=WAREHOUSE)


def bucket_filesystem() -> pafs.S3FileSystem:
    """Direct view of the embedded S3 endpoint, independent of anything the catalog vends."""
    endpoint = urlparse(S3_ENDPOINT)
    return pafs.S3FileSystem(
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        region=S3_REGION,
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme or "http",
        force_virtual_addressing=False,
    )


def bucket_key(location: str) -> str:
    """``s3://bucket/a/b`` -> ``bucket/a/b`` (the path form pyarrow's S3FileSystem uses)."""
    parsed = urlparse(location)
    assert parsed.scheme in ("s3", "s3a", "s3n"), f"table location is not an S3 URI: {location}"
    return f"{parsed.netloc}{parsed.path}".rstrip("/")


def list_objects(s3: pafs.S3FileSystem, location: str) -> list[str]:
    """Every object (file) stored under a table location, as ``bucket/key`` paths."""
    selector = pafs.FileSelector(bucket_key(location), recursive=True, allow_not_found=True)
    return sorted(info.path for info in s3.get_file_info(selector) if info.type == pafs.FileType.File)


def wait_until_empty(s3: pafs.S3FileSystem, location: str, timeout_s: float = 15.0) -> list[str]:
    """Objects left under ``location`` once they are all gone or ``timeout_s`` has passed.

    A purge may be carried out after the drop answers; the Iceberg spec allows that.
    """
    deadline = time.monotonic() + timeout_s
    remaining = list_objects(s3, location)
    while remaining and time.monotonic() < deadline:
        time.sleep(0.25)
        remaining = list_objects(s3, location)
    return remaining


def snapshot_ids(table: Table) -> list[int]:
    """Snapshot ids in commit order (by sequence number).

    The spec does not order the metadata's ``snapshots`` list; ``snapshot-log`` (history) is
    the ordered record and is checked separately.
    """
    return [s.snapshot_id for s in sorted(table.snapshots(), key=lambda s: s.sequence_number)]
