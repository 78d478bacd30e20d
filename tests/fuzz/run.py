#!/usr/bin/env python3
"""Spec-conformance fuzzing of a running Pangolin catalog with Schemathesis.

Reads the operations the server advertises in `GET /v1/config` `endpoints`, selects the
matching operations of the REST catalog spec (plus `getConfig`, which is how the endpoints
are discovered), and runs Schemathesis against them with the catalog name fixed as the
`{prefix}` path parameter. Spec operations the server does not advertise are not fuzzed;
docs/spec-coverage.md says why each one is missing.

Usage (normally through tests/fuzz.sh, which prepares the venv and seeds state):

    python tests/fuzz/run.py [--uri URL] [--catalog NAME] [--seed N] [--max-examples N]

Exits 0 when every selected operation passed every check, 1 on any failure or error
(including a run that exceeds --timeout), 2 on a setup problem (server unreachable, an
advertised endpoint missing from the spec).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_SPEC = ROOT / "tests" / "spec" / "rest-catalog-open-api.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "head", "patch", "options", "trace")

# What each response is checked for. Each check is one Schemathesis check name.
#
# - not_a_server_error: no 5xx for any generated request, valid or not.
# - response_schema_conformance: every response whose status the spec documents has a body
#   valid against that response's schema (errors against IcebergErrorResponse, results
#   against LoadTableResult, ...).
# - status_code_conformance: every status the server answers is one the spec documents for
#   that operation (explicitly or through its 4XX/5XX ranges). Enabled: the spec documents
#   error statuses per operation in enough detail that an undocumented status is a real
#   deviation clients can trip over (e.g. a 404 where only 400/409 are documented).
# - content_type_conformance: every response carries the media type the spec documents.
#
# Not enabled, with the reason:
# - negative_data_rejection: demands a 4xx for every schema-violating request. The spec's
#   request schemas are looser and stricter than the catalog's real rules in places
#   (free-form `properties` maps, `additionalProperties` left open, string formats such as
#   `uri` that a catalog may accept in other spellings), so it would mostly report the
#   spec's own slack, not server bugs.
# - positive_data_acceptance: demands a 2xx for every schema-valid request. Schema-valid is
#   not semantically valid here (a schema-valid createTable names a namespace that does
#   not exist, a schema-valid commit violates its own requirements), so a 4xx is correct.
# - response_headers_conformance: the only documented response header is `ETag` on
#   loadTable / createTable / commits; covered by tests/rest_api.rs instead.
# - use_after_free / ensure_resource_availability: need response links (the spec has none)
#   and assume create-then-read on the same identifiers, which random names seldom give.
# - unsupported_method, missing_required_header, ignored_auth and the other security
#   checks: authentication is not built yet (the spec's OAuth2/Bearer `security` is not
#   enforced), and methods outside the spec are answered 405 by design.
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
)

# Advertised operations that are still not fuzzed: operationId -> reason. Keep empty unless
# the spec itself makes an operation untestable; document every entry in
# docs/spec-coverage.md as well.
EXCLUDED: dict[str, str] = {}

# Names seeded by tests/fuzz.sh. Path parameters take one of these about half the time, so
# the fuzzer reaches existing objects (loadTable on a real table, commits against real
# metadata) instead of answering 404 on random names only.
SEEDED = {
    "namespace": ["fuzz"],
    "table": ["t1"],
    "view": ["v1"],
}


def log(msg: str) -> None:
    print(f"[fuzz] {msg}", file=sys.stderr, flush=True)


def fetch_endpoints(uri: str, catalog: str) -> list[str]:
    url = f"{uri}/v1/config?{urllib.parse.urlencode({'warehouse': catalog})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            config = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SystemExit(f"[fuzz] cannot read {url}: {exc}") from exc
    prefix = (config.get("overrides") or {}).get("prefix")
    if prefix not in (None, catalog):
        raise SystemExit(f"[fuzz] {url} returned prefix {prefix!r}, expected {catalog!r}")
    endpoints = config.get("endpoints")
    if endpoints is None:
        raise SystemExit(f"[fuzz] {url} has no `endpoints`; Pangolin always advertises them")
    return [" ".join(e.split()) for e in endpoints]


def spec_operations(spec_path: Path) -> list[dict]:
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                ops.append(
                    {
                        "id": op["operationId"],
                        "method": method.upper(),
                        "path": path,
                        "endpoint": f"{method.upper()} {path}",
                        "deprecated": bool(op.get("deprecated")),
                    }
                )
    return ops


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def write_config(path: Path, args: argparse.Namespace) -> None:
    lines = [
        f"seed = {args.seed}",
        f"workers = {args.workers}",
        "request-timeout = 30",
        "",
        "[generation]",
        f"max-examples = {args.max_examples}",
        'database = "none"',  # no example database: a run depends on the seed alone
        "",
        "[phases.stateful]",
        f"max-steps = {args.stateful_steps}",
        "",
        "[parameters]",
        f'"path.prefix" = {toml_str(args.catalog)}',
    ]
    for name in SEEDED:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}s", probability = 0.5 }}')
    for name, values in SEEDED.items():
        lines += ["", f"[dictionaries.{name}s]", f"values = {json.dumps(values)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def junit_counts(path: Path) -> tuple[int, int, int, list[str]]:
    """(passed, failed, skipped, failing test names) from Schemathesis' JUnit report."""
    passed = failed = skipped = 0
    failing: list[str] = []
    if not path.exists():
        return passed, failed, skipped, failing
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            failing.append(case.get("name", "?"))
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, failing


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", default=os.environ.get("PANGOLIN_URI", "http://127.0.0.1:8181"))
    p.add_argument("--catalog", default=os.environ.get("PANGOLIN_FUZZ_CATALOG", "demo"))
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    p.add_argument("--seed", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_SEED", "20240601")))
    p.add_argument("--max-examples", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_MAX_EXAMPLES", "30")))
    p.add_argument("--stateful-steps", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_STATEFUL_STEPS", "10")))
    p.add_argument("--workers", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_WORKERS", "1")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_TIMEOUT", "270")),
                   help="hard limit in seconds for the Schemathesis run (it fails when exceeded)")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="where to keep the JUnit/NDJSON reports (default: a temporary directory)")
    p.add_argument("--operation", action="append", default=[],
                   help="fuzz only this operationId (repeatable; for iterating on one failure)")
    args = p.parse_args()
    uri = args.uri.rstrip("/")

    endpoints = fetch_endpoints(uri, args.catalog)
    ops = spec_operations(args.spec)
    by_endpoint = {op["endpoint"]: op for op in ops}
    unknown = [e for e in endpoints if e not in by_endpoint]
    if unknown:
        log(f"advertised endpoints that are not operations of {args.spec.name}: {unknown}")
        return 2

    selected = ["getConfig"] + [by_endpoint[e]["id"] for e in endpoints]
    selected = [op_id for op_id in dict.fromkeys(selected) if op_id not in EXCLUDED]
    if args.operation:
        missing = [o for o in args.operation if o not in selected]
        if missing:
            log(f"not advertised or excluded: {missing}")
            return 2
        selected = args.operation
    not_fuzzed = [op["id"] for op in ops if op["id"] not in selected]
    log(f"{len(ops)} spec operations; fuzzing {len(selected)} (advertised by {uri}/v1/config)")
    log(f"not fuzzed (see docs/spec-coverage.md): {', '.join(not_fuzzed)}")
    for op_id, why in EXCLUDED.items():
        log(f"excluded {op_id}: {why}")

    report_dir = args.report_dir or Path(tempfile.mkdtemp(prefix="pangolin-fuzz."))
    report_dir.mkdir(parents=True, exist_ok=True)
    config_path = report_dir / "schemathesis.toml"
    write_config(config_path, args)
    junit = report_dir / "junit.xml"
    if junit.exists():
        junit.unlink()

    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or "schemathesis"
    cmd = [
        st, "--config-file", str(config_path), "--no-color",
        "run", str(args.spec),
        "--url", uri,
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--report", "junit,ndjson",
        "--report-dir", str(report_dir),
        "--report-junit-path", str(junit),
        "--output-truncate", "false",
    ]
    for op_id in selected:
        cmd += ["--include-operation-id", op_id]
    env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HERE / "hooks.py"))
    log(f"seed {args.seed}, {args.max_examples} examples per operation and phase, reports in {report_dir}")

    started = time.monotonic()
    timed_out = False
    try:
        rc = subprocess.run(cmd, env=env, timeout=args.timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        timed_out = True
        rc = 1
    elapsed = time.monotonic() - started

    passed, failed, skipped, failing = junit_counts(junit)
    if timed_out:
        log(f"Schemathesis did not finish within {args.timeout}s")
    if failing:
        log("failing operations: " + "; ".join(failing))
    ok = rc == 0 and not timed_out
    if not ok and failed == 0:
        failed = 1  # an error or time-out without a JUnit failure still fails the run
    print(
        f"spec fuzz: {len(selected)} operations, seed {args.seed}, {elapsed:.0f}s, "
        f"{'OK' if ok else 'FAILED'} (schemathesis exit {rc})"
    )
    print(f"fuzz: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
