"""Watermark reports of the replication API against a running ``pangolin dev`` (both regions).

``GET /api/v1/replication/changes?region=<r>&applied=<seq>`` is how a secondary's replicator
tells the primary how far it applied (sync-mode commits wait on it). Regression test of the
defect where any HTTP client could report any watermark for any region name:

1. A region outside the deployment's topology (``ghost-region``, long invented names) is
   refused with 400 in the Iceberg error model, and never appears in the status.
2. A report for a real region without the deployment's peer secret (or with a wrong one) is
   refused with 401 and moves no watermark.
3. With the secret (read from ``<PANGOLIN_DEV_DATA_DIR>/dev/peer_secret`` when that variable
   is set), a watermark beyond the log head is still refused with 400.
4. Plain reads of the change log (no ``region``/``applied``) stay open for now.

Settings (environment): ``PANGOLIN_DEV_DATA_DIR`` (required by check 3, which fails without
it: the ``--data-dir`` of the running ``pangolin dev``).

Run: ``$HOME/.cache/pangolin/venv/bin/python -m pytest -v tests/python/test_replication_reports.py``
with ``pangolin dev`` running.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

US, EU = "us-east-1", "eu-west-1"
CATALOG = {US: "http://127.0.0.1:8181", EU: "http://127.0.0.1:8281"}
OTHER = {US: EU, EU: US}
SECRET_HEADER = "x-pangolin-peer-secret"
FORGED = 999_999_999


def changes(uri: str, params: dict, headers: dict | None = None) -> requests.Response:
    return requests.get(f"{uri}/api/v1/replication/changes", params=params, headers=headers or {}, timeout=30)


def status(uri: str) -> dict:
    response = requests.get(f"{uri}/api/v1/replication/status", timeout=10)
    assert response.status_code == 200, f"GET {uri}/api/v1/replication/status: {response.status_code} {response.text}"
    return response.json()


def assert_error(response: requests.Response, code: int, kind: str) -> None:
    assert response.status_code == code, f"{response.request.url[:120]}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert error["code"] == code, error


def secondaries(uri: str) -> dict[str, dict]:
    return {s["region"]: s for s in status(uri)["secondaries"]}


def dev_secret() -> str | None:
    data_dir = os.environ.get("PANGOLIN_DEV_DATA_DIR")
    if not data_dir:
        return None
    path = Path(data_dir) / "dev" / "peer_secret"
    return path.read_text().strip() if path.exists() else None


@pytest.fixture(scope="module", autouse=True)
def both_regions_answer() -> None:
    for region, uri in CATALOG.items():
        try:
            status(uri)
        except requests.RequestException as exc:
            pytest.fail(f"{region} does not answer at {uri}: {exc}; start `pangolin dev` first", pytrace=False)


@pytest.mark.parametrize("region", [US, EU])
def test_unknown_regions_are_refused_and_never_listed(region: str) -> None:
    uri = CATALOG[region]
    names = ["ghost-region", region, "", "g" * 4096] + [f"ghost-{i}-{'x' * 500}" for i in range(50)]
    for name in names:
        for params in ({"after": 0, "region": name, "applied": 0}, {"after": 0, "region": name, "applied": FORGED}):
            response = changes(uri, params)
            assert_error(response, 400, "BadRequestException")
            assert len(response.text) < 1000, "the invented name is not echoed in full"
    raw = requests.get(f"{uri}/api/v1/replication/status", timeout=10).text
    assert len(raw) < 64 * 1024, f"status grew to {len(raw)} bytes"
    listed = [s["region"] for s in status(uri)["secondaries"]]
    assert set(listed) <= {OTHER[region]}, listed
    assert "ghost" not in raw
    metrics = requests.get(f"{uri}/metrics", timeout=10).text
    assert "ghost" not in metrics


@pytest.mark.parametrize("region", [US, EU])
def test_reports_without_the_peer_secret_are_refused(region: str) -> None:
    uri, other = CATALOG[region], OTHER[region]
    before = secondaries(uri).get(other, {}).get("applied")
    for headers in (None, {SECRET_HEADER: "not-the-secret-of-this-deployment"}, {SECRET_HEADER: ""}):
        for params in (
            {"after": 0, "region": other, "applied": FORGED},
            {"after": FORGED, "region": other, "applied": FORGED},
            {"after": 0, "region": other, "applied": 0},
            {"after": 0, "region": other},
        ):
            response = changes(uri, params, headers)
            assert_error(response, 401, "NotAuthorizedException")
    after = secondaries(uri).get(other, {}).get("applied")
    assert after != FORGED
    assert after is None or before is None or after >= before, (before, after)
    assert not any(s.get("applied") == FORGED for s in status(uri)["secondaries"])


def test_a_watermark_beyond_the_head_is_refused_even_with_the_secret() -> None:
    secret = dev_secret()
    if secret is None:
        pytest.fail(
            "this check needs the dev peer secret: set PANGOLIN_DEV_DATA_DIR to the --data-dir of the "
            "running pangolin dev (tests/multi_region.sh does)",
            pytrace=False,
        )
    for region, uri in CATALOG.items():
        other = OTHER[region]
        response = changes(uri, {"after": 0, "region": other, "applied": FORGED}, {SECRET_HEADER: secret})
        assert_error(response, 400, "BadRequestException")
        assert secret not in response.text
        assert secondaries(uri).get(other, {}).get("applied") != FORGED


def test_plain_reads_of_the_change_log_stay_open() -> None:
    for uri in CATALOG.values():
        response = changes(uri, {"after": 0, "limit": 5})
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        assert isinstance(body["records"], list) and body["head"] >= 0


def test_status_names_no_invented_region_and_no_forged_watermark() -> None:
    for region, uri in CATALOG.items():
        listed = secondaries(uri)
        assert set(listed) <= {OTHER[region]}, listed
        assert "ghost-region" not in listed
        eu = listed.get(EU)
        if eu is not None:
            assert eu["applied"] != FORGED, eu
