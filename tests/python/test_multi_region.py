"""Multi-region acceptance tests of Pangolin against a running ``pangolin dev``.

``pangolin dev`` runs two catalog regions and a witness voter on loopback:

=========  =====================  =====================  ==============
child      catalog                S3                     control voter
=========  =====================  =====================  ==============
us-east-1  http://127.0.0.1:8181  http://127.0.0.1:9000  127.0.0.1:8190
eu-west-1  http://127.0.0.1:8281  http://127.0.0.1:9100  127.0.0.1:8290
witness    -                      -                      127.0.0.1:8390
=========  =====================  =====================  ==============

What is checked:

1. A client that only knows the secondary region (eu-west-1) writes through it: the writes are
   committed by the primary (us-east-1), the client wrote its files into its own region's
   bucket (the endpoint vended to it), and the primary has copied every file into its bucket
   so that a client of the primary reads the rows from the primary's bucket alone.
2. A planned switchover to eu-west-1 (``pangolin admin control switchover``) moves the primary
   and bumps the epoch; writes through either catalog endpoint then commit in eu-west-1. The
   test switches back to us-east-1 at the end.
3. Killing (SIGKILL) the child that hosts the control-plane leader: another voter is elected
   and writes resume; the measured election time and write-unavailability time are printed
   (run pytest with ``-s`` to see them). The dev supervisor restarts the child; the test waits
   until all three voters are back.

Replication to the secondary is asynchronous, so these tests read through the primary's
catalog (replication has its own tests in tests/it/replication.rs), and a test that switches
the primary reads only tables it created after the switch.

Each test starts from "us-east-1 is primary and writable" (the ``us_primary`` fixture switches
back when an earlier test left another primary), so the tests do not depend on their order.

Settings (environment):

- ``PANGOLIN_DEV_DATA_DIR``: the ``--data-dir`` of the running ``pangolin dev`` (test 3 reads
  the children's pid files from ``<dir>/dev/<name>.pid``). Required by test 3.
- ``PANGOLIN``: the ``pangolin`` binary (default ``$CARGO_TARGET_DIR/debug/pangolin``, with
  ``CARGO_TARGET_DIR`` defaulting to ``$HOME/.cache/pangolin/target``).
- ``PANGOLIN_WAREHOUSE`` (default ``demo``).
- ``PANGOLIN_MR_TIMINGS``: when set, test 3 also writes its measurements there as JSON.

Run: ``PANGOLIN_DEV_DATA_DIR=DIR $HOME/.cache/pangolin/venv/bin/python -m pytest -s
tests/python/test_multi_region.py`` (or ``tests/multi_region.sh``, which starts its own dev).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pytest
import requests
from pyarrow import fs as pafs
from pyiceberg.catalog import load_catalog
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.table import Table

# ---- the dev topology ---------------------------------------------------------------------

US, EU, WITNESS = "us-east-1", "eu-west-1", "witness"
CATALOG = {US: "http://127.0.0.1:8181", EU: "http://127.0.0.1:8281"}
S3 = {US: "http://127.0.0.1:9000", EU: "http://127.0.0.1:9100"}
VOTER = {US: "127.0.0.1:8190", EU: "127.0.0.1:8290", WITNESS: "127.0.0.1:8390"}
# The dev child that hosts each voter region (the children are named after their region).
DEV_CHILD = {US: "us-east-1", EU: "eu-west-1", WITNESS: "witness"}
S3_ACCESS_KEY, S3_SECRET_KEY = "admin", "password"

WAREHOUSE = os.environ.get("PANGOLIN_WAREHOUSE", "demo")
COMMITTED_IN = "x-pangolin-region"

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("region_seen", pa.string())])


def pangolin_binary() -> str:
    explicit = os.environ.get("PANGOLIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/pangolin/target"))
    return str(Path(target) / "debug" / "pangolin")


# ---- small helpers --------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 0.2) -> Any:
    """Calls ``probe`` until it returns something truthy; fails with the last observation.

    ``probe`` may raise: the exception is the observation and polling goes on.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last failure
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; last observation: {last}", pytrace=False)
        time.sleep(interval_s)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def catalog_prefix(uri: str) -> str:
    response = requests.get(f"{uri}/v1/config", params={"warehouse": WAREHOUSE}, timeout=10)
    assert response.status_code == 200, f"GET {uri}/v1/config: {response.status_code} {response.text}"
    body = response.json()
    return {**body.get("defaults", {}), **body.get("overrides", {})}.get("prefix", WAREHOUSE)


def control_status(uri: str) -> dict:
    """``GET /api/v1/control/status`` of a catalog node: ``{"control": ..., "node": ...}``."""
    response = requests.get(f"{uri}/api/v1/control/status", timeout=10)
    assert response.status_code == 200, f"GET {uri}/api/v1/control/status: {response.status_code} {response.text}"
    return response.json()


def admin(*args: str, endpoint: str | None = None) -> dict:
    """Runs ``pangolin admin [--endpoint E] --json <args>`` and returns its JSON answer."""
    command = [pangolin_binary(), "admin", "--json"]
    if endpoint:
        command += ["--endpoint", endpoint]
    command += list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (
        f"`{' '.join(command)}` exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"`{' '.join(command)}` did not print JSON ({exc}): {done.stdout!r}") from exc


def create_namespace_raw(uri: str, namespace: str, timeout_s: float = 10) -> requests.Response:
    return requests.post(
        f"{uri}/v1/{catalog_prefix(uri)}/namespaces",
        json={"namespace": [namespace], "properties": {"created-by": "test_multi_region"}},
        timeout=timeout_s,
    )


def create_namespace_when_writable(uri: str, namespace: str, timeout_s: float) -> tuple[requests.Response, float]:
    """Creates ``namespace`` through ``uri``, retrying while the deployment answers 503 (or the
    node is unreachable); returns the 200 answer and how long it took.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    observations: list[str] = []
    while True:
        try:
            response = create_namespace_raw(uri, namespace, timeout_s=5)
            if response.status_code == 200:
                return response, time.monotonic() - start
            observations.append(f"{response.status_code} {response.text[:200]}")
            # 409: an earlier attempt committed but its answer was lost: that is a success too.
            if response.status_code == 409:
                return response, time.monotonic() - start
            assert response.status_code == 503, f"POST {uri} namespaces {namespace}: {observations[-1]}"
        except requests.RequestException as exc:
            observations.append(f"{type(exc).__name__}: {exc}")
        if time.monotonic() >= deadline:
            pytest.fail(
                f"no write through {uri} succeeded within {timeout_s:.0f} s; last answers: {observations[-3:]}",
                pytrace=False,
            )
        time.sleep(0.1)


class RecordingCatalog:
    """A PyIceberg REST catalog configured with ``uri`` + ``warehouse`` only, recording every
    HTTP answer it gets (method, URL, status, committing region, JSON body).
    """

    def __init__(self, region: str) -> None:
        self.region = region
        self.uri = CATALOG[region]
        self.catalog: RestCatalog = load_catalog(f"pangolin-{region}", type="rest", uri=self.uri, warehouse=WAREHOUSE)
        self.responses: list[dict] = []
        self.catalog._session.hooks["response"].append(self._record)  # noqa: SLF001 - the client's own session

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        body = None
        if response.content and response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
        self.responses.append(
            {
                "method": response.request.method,
                "url": response.request.url,
                "status": response.status_code,
                "region": response.headers.get(COMMITTED_IN),
                "body": body,
            }
        )

    def writes(self) -> list[dict]:
        return [r for r in self.responses if r["method"] in ("POST", "PUT", "DELETE") and "/metrics" not in r["url"]]

    def table_configs(self) -> list[dict]:
        """The ``config`` of every loadTable/createTable answer received."""
        return [
            r["body"]["config"]
            for r in self.responses
            if isinstance(r["body"], dict) and "metadata" in r["body"] and isinstance(r["body"].get("config"), dict)
        ]


def s3_filesystem(region: str) -> pafs.S3FileSystem:
    endpoint = urlparse(S3[region])
    return pafs.S3FileSystem(
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        region=region,
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
        force_virtual_addressing=False,
    )


def bucket_path(location: str) -> str:
    parsed = urlparse(location)
    assert parsed.scheme in ("s3", "s3a", "s3n"), f"not an S3 location: {location}"
    return f"{parsed.netloc}{parsed.path}"


def files_of(table: Table) -> tuple[dict[str, int], list[str]]:
    """Every data file of the table's current snapshot (path -> size in bytes), and every
    metadata file the table's metadata references (metadata JSON, manifest lists, manifests).
    """
    io = table.io
    data: dict[str, int] = {}
    metadata = [table.metadata_location]
    for snapshot in table.snapshots():
        metadata.append(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            metadata.append(manifest.manifest_path)
            if snapshot.snapshot_id == table.current_snapshot().snapshot_id:
                for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                    data[entry.data_file.file_path] = entry.data_file.file_size_in_bytes
    return data, sorted(set(metadata))


def assert_files_in_bucket(region: str, table: Table) -> dict[str, int]:
    """Every data file of ``table`` is in ``region``'s bucket with the size the manifests
    record, and so is every metadata file. Returns the data files.
    """
    s3 = s3_filesystem(region)
    data, metadata = files_of(table)
    assert data, f"table {table.name()} has no data files"
    problems = []
    for path, size in sorted(data.items()):
        info = s3.get_file_info(bucket_path(path))
        if info.type != pafs.FileType.File:
            problems.append(f"data file missing from {region}'s bucket ({S3[region]}): {path}")
        elif info.size != size:
            problems.append(f"data file {path} in {region}'s bucket has {info.size} bytes, the manifest says {size}")
    for path in metadata:
        if s3.get_file_info(bucket_path(path)).type != pafs.FileType.File:
            problems.append(f"metadata file missing from {region}'s bucket ({S3[region]}): {path}")
    assert not problems, "\n".join(problems)
    return data


def rows(table: Table) -> list[dict]:
    return sorted(table.scan().to_arrow().to_pylist(), key=lambda r: r["id"])


def batch(ids: list[int], label: str) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "region_seen": label} for i in ids], schema=SCHEMA)


def drop_namespaces(uri: str, namespaces: list[str]) -> None:
    """Best effort: purges the tables of each namespace and drops it, through ``uri``."""
    try:
        catalog = load_catalog("pangolin-cleanup", type="rest", uri=uri, warehouse=WAREHOUSE)
    except Exception:  # noqa: BLE001 - cleanup never hides the test result
        return
    for namespace in namespaces:
        try:
            for identifier in catalog.list_tables(namespace):
                catalog.purge_table(identifier)
            catalog.drop_namespace(namespace)
        except Exception:  # noqa: BLE001
            pass


# ---- control-plane views --------------------------------------------------------------------


def voter_get(address: str, path: str, timeout_s: float = 2.0) -> requests.Response:
    return requests.get(f"http://{address}{path}", timeout=timeout_s)


def cluster_view(address: str, timeout_s: float = 1.0) -> dict:
    """``GET /control/v1/cluster`` of one voter: ``{"id", "leader", "voters": [...]}``."""
    response = voter_get(address, "/control/v1/cluster", timeout_s)
    if response.status_code == 404:
        raise AssertionError(
            f"GET http://{address}/control/v1/cluster answers 404: the voter has no cluster endpoint ({response.text[:200]})"
        )
    assert response.status_code == 200, f"GET http://{address}/control/v1/cluster: {response.status_code} {response.text[:300]}"
    return response.json()


def healthy_cluster() -> dict | None:
    """The cluster view when all three voters answer and agree on one leader, else None."""
    views = {region: cluster_view(address) for region, address in VOTER.items()}
    leaders = {view.get("leader") for view in views.values()}
    if len(leaders) != 1 or None in leaders:
        return None
    view = views[US]
    if len(view.get("voters", [])) != 3:
        return None
    return view


def stable_control_state(uri: str) -> dict | None:
    """The control state when a primary is set and no switchover is in progress."""
    control = control_status(uri)["control"]
    if control.get("primary") and not control.get("switchover_in_progress"):
        return control
    return None


def node_route(region: str) -> dict:
    return control_status(CATALOG[region])["node"]["route"]


def wait_primary_writable(primary: str, timeout_s: float = 60) -> None:
    """Both catalogs route writes to ``primary``: local there, forwarded to it elsewhere."""
    other = EU if primary == US else US

    def settled() -> bool:
        local, remote = node_route(primary), node_route(other)
        return local.get("writes") == "local" and remote.get("writes") == "forwarded" and remote.get("to") == primary

    wait_for(f"{primary} to take writes (route local there, forwarded from {other})", settled, timeout_s)


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture()
def us_primary() -> None:
    """us-east-1 is primary and both catalogs route writes to it (switches back if needed)."""
    for region in (US, EU):
        wait_for(f"{CATALOG[region]}/health/ready", lambda r=region: requests.get(f"{CATALOG[r]}/health/ready", timeout=2).status_code == 200, 60)
    control = wait_for("a stable primary (no switchover in progress)", lambda: stable_control_state(CATALOG[US]), 60)
    if control["primary"] != US:
        print(f"\n[setup] primary is {control['primary']} (epoch {control['epoch']}); switching back to {US}")
        admin("control", "switchover", "--to", US)
    wait_primary_writable(US)


@pytest.fixture()
def dev_data_dir() -> Path:
    value = os.environ.get("PANGOLIN_DEV_DATA_DIR")
    if not value:
        pytest.fail("PANGOLIN_DEV_DATA_DIR is not set: it must be the --data-dir of the running `pangolin dev`", pytrace=False)
    path = Path(value)
    assert (path / "dev").is_dir(), f"{path}/dev does not exist: is PANGOLIN_DEV_DATA_DIR the data dir of `pangolin dev`?"
    return path


@pytest.fixture()
def namespaces_to_drop() -> Iterator[list[tuple[str, str]]]:
    """(catalog uri, namespace) pairs appended here are dropped (best effort) after the test."""
    created: list[tuple[str, str]] = []
    yield created
    for uri, namespace in created:
        drop_namespaces(uri, [namespace])


# ---- 1. writes through the secondary ----------------------------------------------------------


def test_write_through_secondary_lands_in_primary_and_reads_from_primary_bucket(us_primary, namespaces_to_drop) -> None:
    namespace = unique("mr_secondary")
    namespaces_to_drop.append((CATALOG[US], namespace))

    # A plain createNamespace through the secondary is committed by the primary.
    response = create_namespace_raw(CATALOG[EU], namespace)
    assert response.status_code == 200, f"createNamespace through {EU}: {response.status_code} {response.text}"
    assert response.headers.get(COMMITTED_IN) == US, (
        f"createNamespace through {CATALOG[EU]} answered {COMMITTED_IN}={response.headers.get(COMMITTED_IN)!r}, expected {US}"
    )

    # A PyIceberg client that knows only the secondary creates a table and appends twice.
    eu = RecordingCatalog(EU)
    identifier = (namespace, "events")
    table = eu.catalog.create_table(identifier, schema=SCHEMA)
    table.append(batch([1, 2, 3], "first"))
    table.append(batch([4, 5], "second"))
    expected = [{"id": i, "region_seen": "first"} for i in (1, 2, 3)] + [{"id": i, "region_seen": "second"} for i in (4, 5)]

    configs = eu.table_configs()
    assert configs, f"the client got no createTable/loadTable answer with a config: {eu.responses}"
    for config in configs:
        assert config.get("s3.endpoint") == S3[EU], f"{EU} vended {config.get('s3.endpoint')!r}, expected its own S3 {S3[EU]}: {config}"
        assert config.get("s3.region") == EU, f"{EU} vended s3.region {config.get('s3.region')!r}: {config}"
    assert table.io.properties.get("s3.endpoint") == S3[EU], f"the client's FileIO used {table.io.properties.get('s3.endpoint')}"
    writes = eu.writes()
    assert len(writes) >= 3, f"expected createTable + 2 commits, the client sent: {writes}"
    wrong = [(w["method"], w["url"], w["status"], w["region"]) for w in writes if w["status"] != 200 or w["region"] != US]
    assert not wrong, f"writes through {EU} not committed by {US} (method, url, status, {COMMITTED_IN}): {wrong}"
    eu_metadata_location = table.metadata_location

    # A client of the primary reads exactly those rows, from the primary's bucket.
    us = RecordingCatalog(US)
    loaded = us.catalog.load_table(identifier)
    assert loaded.metadata_location == eu_metadata_location, "the primary serves another metadata file than the writer's last commit"
    assert loaded.metadata.table_uuid == table.metadata.table_uuid
    assert len(loaded.snapshots()) == 2, f"expected 2 snapshots, got {loaded.snapshots()}"
    for config in us.table_configs():
        assert config.get("s3.endpoint") == S3[US], f"{US} vended {config.get('s3.endpoint')!r} in loadTable: {config}"
    assert loaded.io.properties.get("s3.endpoint") == S3[US], f"the primary's client reads through {loaded.io.properties.get('s3.endpoint')}"
    assert rows(loaded) == expected

    data_files = assert_files_in_bucket(US, loaded)
    assert len(data_files) == 2, f"two appends should give two data files: {data_files}"


def test_create_transaction_with_data_through_secondary_pulls_its_files(us_primary, namespaces_to_drop) -> None:
    """A staged create whose commit carries a snapshot (PyIceberg's create_table_transaction)
    made through the secondary: the primary copies the files first, then publishes."""
    namespace = unique("mr_create_tx")
    namespaces_to_drop.append((CATALOG[US], namespace))
    eu = RecordingCatalog(EU)
    eu.catalog.create_namespace(namespace)
    identifier = (namespace, "born_with_data")
    with eu.catalog.create_table_transaction(identifier, schema=SCHEMA) as txn:
        txn.append(batch([7, 8, 9], "created"))

    loaded = RecordingCatalog(US).catalog.load_table(identifier)
    assert rows(loaded) == [{"id": i, "region_seen": "created"} for i in (7, 8, 9)]
    data_files = assert_files_in_bucket(US, loaded)
    assert len(data_files) == 1, f"one append should give one data file: {data_files}"


# ---- 2. planned switchover ------------------------------------------------------------------


def write_table_through(region: str, namespace: str, ids: list[int]) -> tuple[RecordingCatalog, Table]:
    client = RecordingCatalog(region)
    table = client.catalog.create_table((namespace, "events"), schema=SCHEMA)
    table.append(batch(ids, f"via-{region}"))
    return client, table


def test_switchover_to_eu_west_1_then_writes_through_both_endpoints(us_primary, namespaces_to_drop) -> None:
    before = wait_for("a stable control state", lambda: stable_control_state(CATALOG[US]), 30)
    status = admin("control", "status")["control"]
    assert status["primary"] == US, f"`admin control status` says primary {status['primary']}"
    assert status["epoch"] == before["epoch"], f"epoch moved between two reads: {before['epoch']} then {status['epoch']}"

    started = time.monotonic()
    after = admin("control", "switchover", "--to", EU)["control"]
    switch_s = time.monotonic() - started
    created: list[str] = []
    try:
        assert after["primary"] == EU, f"switchover answered primary {after['primary']}: {after}"
        assert after["epoch"] == before["epoch"] + 1, f"epoch {before['epoch']} -> {after['epoch']}, expected +1"
        last = after["history"][-1]
        assert (last["from"], last["to"], last["epoch"], last["planned"]) == (US, EU, after["epoch"], True), last
        for region in (US, EU):
            seen = admin("control", "status", endpoint=CATALOG[region])["control"]
            assert (seen["primary"], seen["epoch"]) == (EU, after["epoch"]), f"status at {CATALOG[region]}: {seen}"

        # Writes through both endpoints commit in eu-west-1 (tables created after the switch:
        # replication is asynchronous, so eu-west-1 may not know the newest older ones yet).
        namespaces = {}
        writable_after = {}
        for region in (EU, US):
            namespace = unique(f"mr_switched_{region.replace('-', '_')}")
            namespaces[region] = namespace
            created.append(namespace)
            response, waited = create_namespace_when_writable(CATALOG[region], namespace, timeout_s=30)
            writable_after[region] = waited
            assert response.status_code == 200 and response.headers.get(COMMITTED_IN) == EU, (
                f"createNamespace through {CATALOG[region]} after the switchover answered "
                f"{response.status_code} {COMMITTED_IN}={response.headers.get(COMMITTED_IN)!r}, expected 200 from {EU}"
            )
        print(
            f"\n[switchover] `admin control switchover` took {switch_s:.2f} s; then the first write through "
            f"{CATALOG[EU]} succeeded after {writable_after[EU]:.2f} s, the next through {CATALOG[US]} after {writable_after[US]:.2f} s"
        )

        ids = {EU: [10, 11], US: [20, 21, 22]}
        for region in (EU, US):
            client, table = write_table_through(region, namespaces[region], ids[region])
            wrong = [(w["method"], w["url"], w["status"], w["region"]) for w in client.writes() if w["status"] != 200 or w["region"] != EU]
            assert not wrong, f"writes through {CATALOG[region]} not committed by {EU} (method, url, status, {COMMITTED_IN}): {wrong}"
            assert table.io.properties.get("s3.endpoint") == S3[region], f"{region} vended {table.io.properties.get('s3.endpoint')}"

        reader = RecordingCatalog(EU)
        for region in (EU, US):
            loaded = reader.catalog.load_table((namespaces[region], "events"))
            assert loaded.io.properties.get("s3.endpoint") == S3[EU]
            assert rows(loaded) == [{"id": i, "region_seen": f"via-{region}"} for i in ids[region]]
            assert_files_in_bucket(EU, loaded)
    finally:
        # Clean up while eu-west-1 is primary (it alone holds these rows), then leave
        # us-east-1 primary for whatever runs next, whatever happened above.
        drop_namespaces(CATALOG[EU], created)
        current = wait_for("a stable control state", lambda: stable_control_state(CATALOG[US]), 60)
        back = admin("control", "switchover", "--to", US)["control"] if current["primary"] != US else None

    assert back is not None, "the primary was us-east-1 again before the test switched back"
    assert back["primary"] == US, f"switch back answered primary {back['primary']}: {back}"
    assert back["epoch"] == after["epoch"] + 1, f"epoch {after['epoch']} -> {back['epoch']} on the switch back, expected +1"
    wait_primary_writable(US)
    namespace = unique("mr_switched_back")
    namespaces_to_drop.append((CATALOG[US], namespace))
    response, _ = create_namespace_when_writable(CATALOG[EU], namespace, timeout_s=30)
    assert response.status_code == 200 and response.headers.get(COMMITTED_IN) == US, (
        f"after the switch back a write through {CATALOG[EU]} answered {response.status_code} {COMMITTED_IN}={response.headers.get(COMMITTED_IN)!r}"
    )


# ---- 3. losing the control-plane leader ------------------------------------------------------


def pid_of(data_dir: Path, child: str) -> int:
    pid_file = data_dir / "dev" / f"{child}.pid"
    assert pid_file.exists(), f"{pid_file} does not exist"
    pid = int(pid_file.read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert "pangolin" in cmdline and "serve" in cmdline and child in cmdline, f"pid {pid} from {pid_file} is not the {child} child: {cmdline!r}"
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def control_readable(address: str) -> bool:
    """Whether a voter answers ``GET /control/v1/state`` (read through the leader)."""
    try:
        return voter_get(address, "/control/v1/state", timeout_s=0.5).status_code == 200
    except requests.RequestException:
        return False


def fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


# After the killed child is back, how long the voters must keep agreeing on the old leader
# before the test concludes that no other leader will be elected (longer than openraft's
# follower timeout with the dev settings: leader lease 1.5 s + election timeout <= 1.5 s).
OLD_LEADER_STABLE_S = 5.0


def test_killing_control_plane_leader_elects_new_leader_and_writes_resume(us_primary, dev_data_dir) -> None:
    cluster = wait_for("3 reachable voters agreeing on a leader (GET /control/v1/cluster)", healthy_cluster, 30)
    leader_id = cluster["leader"]
    by_id = {v["id"]: v for v in cluster["voters"]}
    assert leader_id in by_id, f"leader {leader_id} is not among the voters {cluster['voters']}"
    leader = by_id[leader_id]
    leader_term = cluster.get("term")
    assert leader["region"] in DEV_CHILD, f"leader voter {leader} has an unknown region"
    assert leader["address"] == VOTER[leader["region"]], f"leader voter {leader} is not where dev runs {leader['region']}'s voter"
    child = DEV_CHILD[leader["region"]]
    pid = pid_of(dev_data_dir, child)
    survivors = {region: address for region, address in VOTER.items() if region != leader["region"]}
    # Writes go through a catalog that does not run in the killed child.
    write_region = EU if child == US else US
    write_uri = CATALOG[write_region]
    prefix = catalog_prefix(write_uri)
    primary = control_status(CATALOG[US])["control"]["primary"]
    print(
        f"\n[leader-kill] leader: voter {leader_id} ({leader['region']}, {leader['address']}, term {leader_term}); primary region {primary}; "
        f"SIGKILL to dev child {child} (pid {pid}); probing writes through {write_uri}"
    )

    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def now() -> float:
        return time.monotonic() - killed_at

    election_s: float | None = None  # a survivor reports another leader
    new_leader = None
    control_back_s: float | None = None  # a survivor answers GET /control/v1/state again
    restarted_s: float | None = None  # the supervisor has started the child again
    old_leader_stable_since: float | None = None  # all 3 voters report the old leader again
    first_write_s: float | None = None  # first successful write after the kill
    outage_start: float | None = None  # first failed write probe of the current outage
    longest_outage_s = 0.0
    last_write_ok = False
    committed_in: set[str] = set()
    write_answers: list[str] = []
    probes: list[str] = []
    last_views: dict[str, Any] = {}
    deadline = 60.0
    while now() < deadline:
        # Who the survivors say leads.
        for region, address in survivors.items():
            try:
                view = cluster_view(address, timeout_s=0.5)
            except Exception as exc:  # noqa: BLE001
                last_views[region] = f"{type(exc).__name__}: {exc}"
                continue
            last_views[region] = {"leader": view.get("leader"), "term": view.get("term")}
            if election_s is None and view.get("leader") not in (None, leader_id):
                election_s, new_leader = now(), view["leader"]
        if control_back_s is None and any(control_readable(a) for a in survivors.values()):
            control_back_s = now()
        # The killed child coming back.
        if restarted_s is None:
            try:
                restarted = pid_of(dev_data_dir, child)
                if restarted != pid and alive(restarted):
                    restarted_s = now()
            except (AssertionError, OSError, ValueError):
                pass
        if election_s is None and restarted_s is not None:
            try:
                healthy = healthy_cluster()
            except Exception:  # noqa: BLE001
                healthy = None
            if healthy and healthy["leader"] == leader_id:
                old_leader_stable_since = old_leader_stable_since if old_leader_stable_since is not None else now()
            else:
                old_leader_stable_since = None
        # One write probe.
        namespace = unique("mr_leader_kill")
        try:
            response = requests.post(
                f"{write_uri}/v1/{prefix}/namespaces", json={"namespace": [namespace]}, timeout=3
            )
            ok = response.status_code == 200
            if response.status_code == 409:
                ok = True  # committed by an earlier attempt whose answer was lost
            write_answers.append(f"{now():.2f}s {response.status_code} {response.headers.get(COMMITTED_IN)} {response.text[:120] if not ok else ''}")
            assert ok or response.status_code == 503, f"write through {write_uri} after the kill: {response.status_code} {response.text[:300]}"
            if ok:
                probes.append(namespace)
                committed_in.add(response.headers.get(COMMITTED_IN))
        except requests.RequestException as exc:
            ok = False
            write_answers.append(f"{now():.2f}s {type(exc).__name__}")
        if ok:
            if first_write_s is None:
                first_write_s = now()
            if outage_start is not None:
                longest_outage_s = max(longest_outage_s, now() - outage_start)
                outage_start = None
        elif outage_start is None:
            outage_start = now()
        last_write_ok = ok

        elected_and_back = election_s is not None and restarted_s is not None
        old_leader_resumed = (
            old_leader_stable_since is not None and now() - old_leader_stable_since >= OLD_LEADER_STABLE_S
        )
        if (elected_and_back or old_leader_resumed) and last_write_ok and control_back_s is not None:
            break
        time.sleep(0.1)
    if outage_start is not None:
        longest_outage_s = max(longest_outage_s, now() - outage_start)
    failed_writes = [a for a in write_answers if " 200 " not in a and " 409 " not in a]

    # The supervisor restarts the killed child; the cluster gets its three voters back.
    new_pid = wait_for(f"the dev supervisor to restart {child}", lambda: (p := pid_of(dev_data_dir, child)) != pid and alive(p) and p, 60)
    back = wait_for("3 reachable voters agreeing on a leader after the restart", healthy_cluster, 60)

    timings = {
        "killed_child": child,
        "old_leader": leader_id,
        "old_term": leader_term,
        "new_leader": new_leader,
        "leader_after_restart": back["leader"],
        "term_after_restart": back.get("term"),
        "election_s": election_s,
        "control_api_unavailable_s": control_back_s,
        "child_restarted_after_s": restarted_s,
        "writes_through": write_uri,
        "first_write_after_kill_s": first_write_s,
        "longest_write_outage_s": round(longest_outage_s, 3),
        "write_committed_in": sorted(r for r in committed_in if r),
        "failed_writes": failed_writes[:3] + (["..."] if len(failed_writes) > 6 else []) + failed_writes[3:][-3:],
    }
    print(
        f"[leader-kill] MEASURED: election of a new leader {fmt_s(election_s)} (voter {new_leader}); "
        f"control API unavailable {fmt_s(control_back_s)}; {child} restarted after {fmt_s(restarted_s)} (pid {new_pid}); "
        f"writes through {write_uri}: first success {fmt_s(first_write_s)} after the kill, longest outage {longest_outage_s:.2f} s; "
        f"leader once all voters were back: voter {back['leader']} (term {back.get('term')}); failed write probes: {timings['failed_writes']}"
    )
    if os.environ.get("PANGOLIN_MR_TIMINGS"):
        Path(os.environ["PANGOLIN_MR_TIMINGS"]).write_text(json.dumps(timings, indent=2) + "\n")
    drop_probe_namespaces(write_uri, prefix, probes)

    assert election_s is not None, (
        f"no new control-plane leader: the survivors {sorted(survivors)} still reported voter {leader_id} "
        f"when the dev supervisor restarted {child} {fmt_s(restarted_s)} after the kill, and it led again "
        f"(all voters agreed on voter {leader_id} for {OLD_LEADER_STABLE_S:.0f} s; term {leader_term} before the kill, "
        f"{back.get('term')} after); last views of the survivors: {last_views}"
    )
    assert new_leader in by_id and new_leader != leader_id, f"new leader {new_leader} is not another voter of {sorted(by_id)}"
    assert first_write_s is not None, f"no write through {write_uri} succeeded within 60 s; last answers: {write_answers[-5:]}"
    assert last_write_ok, f"writes through {write_uri} were failing when the observation ended; last answers: {write_answers[-5:]}"
    assert committed_in <= {US, EU}, f"writes were committed in {committed_in}"


def drop_probe_namespaces(uri: str, prefix: str, namespaces: list[str]) -> None:
    for namespace in namespaces:
        try:
            requests.delete(f"{uri}/v1/{prefix}/namespaces/{namespace}", timeout=5)
        except requests.RequestException:
            pass
