#!/usr/bin/env python3
"""Spec-conformance fuzzing of a running Pangolin catalog with Schemathesis.

Reads the operations the server advertises in `GET /v1/config` `endpoints`, selects the
matching operations of the REST catalog spec (plus `getConfig`, which is how the endpoints
are discovered), and runs Schemathesis against them with the catalog name fixed as the
`{prefix}` path parameter. Spec operations the server does not advertise are not fuzzed;
docs/spec-coverage.md says why each one is missing.

Schemathesis runs once per phase (examples, coverage, fuzzing, stateful); before each one
the seeded objects (namespace `fuzz`, tables `fuzz.t1` and `fuzz.t2`, views `fuzz.v1` and
`fuzz.v2`) are created again when an earlier phase dropped or renamed them, so every phase
reaches existing objects, not only random names that answer 404.

Before fuzzing it checks the operations table of docs/spec-coverage.md against the spec and
the advertised endpoints.

Usage (normally through tests/fuzz.sh, which prepares the venv and waits for the server):

    python tests/fuzz/run.py [--uri URL] [--catalog NAME] [--seed N] [--max-examples N]

Exits 0 when every selected operation passed every check, 1 on any failure or error
(including a run that exceeds --timeout), 2 on a setup problem (server unreachable, an
advertised endpoint missing from the spec, docs/spec-coverage.md out of date).
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
COVERAGE_DOC = ROOT / "docs" / "spec-coverage.md"
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
# - response_headers_conformance: documented response headers (only `ETag`, on loadTable,
#   createTable and commits, optional) have the documented schema.
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
    "response_headers_conformance",
)

# Advertised operations that are still not fuzzed: operationId -> reason. Keep empty unless
# the spec itself makes an operation untestable; document every entry in
# docs/spec-coverage.md as well.
EXCLUDED: dict[str, str] = {}

# Names of seeded objects (see seed() below), as Schemathesis dictionaries. The parameters and
# body fields in BINDINGS take a value from their dictionary about half the time, so the
# fuzzer reaches existing objects (loadTable on a real table, commits against real metadata)
# and names the catalog accepts, instead of only random strings answering 400/404 (most
# generated strings hold control characters, which names may not).
DICTIONARIES = {
    "namespaces": ["fuzz"],
    "tables": ["t1"],
    "views": ["v1"],
    # identifiers in bodies: existing tables and views, and a free name
    "names": ["t1", "t2", "v1", "v2", "fz_new"],
}
BINDINGS = {
    "path.namespace": "namespaces",
    "path.table": "tables",
    "path.view": "views",
    "body.name": "names",  # createTable, registerTable, createView, registerView
    "body.namespace[*]": "namespaces",  # createNamespace
    "body.source.namespace[*]": "namespaces",  # renameTable, renameView
    "body.source.name": "names",
    "body.destination.namespace[*]": "namespaces",
    "body.destination.name": "names",
    "body.identifier.namespace[*]": "namespaces",  # updateTable, replaceView
    "body.identifier.name": "names",
    "body.table-changes[*].identifier.namespace[*]": "namespaces",  # commitTransaction
    "body.table-changes[*].identifier.name": "names",
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


DOC_ROW = re.compile(r"^\| `([^`]+)` \| ([A-Z]+) \| `([^`]+)` \| (yes|no) \|")


def check_coverage_doc(doc: Path, ops: list[dict], endpoints: list[str]) -> list[str]:
    """Problems of docs/spec-coverage.md's table against the spec and the advertised endpoints."""
    if not doc.exists():
        return [f"{doc} is missing"]
    rows = [m.groups() for line in doc.read_text(encoding="utf-8").splitlines() if (m := DOC_ROW.match(line))]
    problems = []
    seen: dict[str, tuple] = {}
    for op_id, method, path, served in rows:
        if op_id in seen:
            problems.append(f"{op_id} is listed twice")
        seen[op_id] = (method, path, served)
    advertised = set(endpoints)
    for op in ops:
        row = seen.pop(op["id"], None)
        if row is None:
            problems.append(f"{op['id']} ({op['endpoint']}) is not in the table")
            continue
        method, path, served = row
        if (method, path) != (op["method"], op["path"]):
            problems.append(f"{op['id']} is listed as {method} {path}, the spec has {op['endpoint']}")
        is_served = op["id"] == "getConfig" or op["endpoint"] in advertised
        if (served == "yes") != is_served:
            problems.append(
                f"{op['id']} is marked served={served}, but the server "
                f"{'advertises' if is_served else 'does not advertise'} it"
            )
    problems += [f"{op_id} is in the table but not in the spec" for op_id in seen]
    total = re.search(r"Totals: (\d+) served", doc.read_text(encoding="utf-8"))
    n_served = sum(1 for op in ops if op["id"] == "getConfig" or op["endpoint"] in advertised)
    if total and int(total.group(1)) != n_served:
        problems.append(f"'Totals: {total.group(1)} served' should be {n_served}")
    return problems


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def write_config(path: Path, args: argparse.Namespace) -> None:
    lines = [
        f"seed = {args.seed}",
        f"workers = {args.workers}",
        "request-timeout = 30",
        # keep testing an operation after its first failure, so one known bug does not hide others
        "continue-on-failure = true",
        "",
        "[cache]",
        "enabled = false",  # no crash replay state between runs (and nothing written to the repo)
        "",
        "[generation]",
        f"max-examples = {args.max_examples}",
        'database = "none"',  # no example database: a run depends on the seed alone
        "",
        # Values harvested from earlier responses: off. With them, Schemathesis 4.32.5 sent one
        # request to each DELETE operation in the fuzzing phase once an earlier DELETE had
        # succeeded, instead of max-examples; the dictionaries below give real names anyway.
        "[phases.fuzzing.extra-data-sources]",
        "responses = false",
        "",
        "[phases.stateful]",
        f"max-steps = {args.stateful_steps}",
        "",
        "[parameters]",
        f'"path.prefix" = {toml_str(args.catalog)}',
    ]
    for key, dictionary in BINDINGS.items():
        lines.append(f'{toml_str(key)} = {{ dictionary = "{dictionary}", probability = 0.5 }}')
    for name, values in DICTIONARIES.items():
        lines += ["", f"[dictionaries.{name}]", f"values = {json.dumps(values)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- seeded state -------------------------------------------------------------------------

SEED_SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [
        {"id": 1, "name": "id", "type": "long", "required": True},
        {"id": 2, "name": "data", "type": "string", "required": False},
    ],
}


def seed_requests() -> list[tuple[str, dict]]:
    """(path under /v1/{prefix}/, body) of every POST that creates the seeded objects."""

    def table(name: str) -> dict:
        return {
            "name": name,
            "schema": SEED_SCHEMA,
            "partition-spec": {
                "spec-id": 0,
                "fields": [{"source-id": 1, "field-id": 1000, "name": "id_bucket", "transform": "bucket[4]"}],
            },
            "properties": {"format-version": "2"},
        }

    def view(name: str) -> dict:
        return {
            "name": name,
            "schema": {"type": "struct", "schema-id": 0, "fields": [SEED_SCHEMA["fields"][0]]},
            "view-version": {
                "version-id": 1,
                "timestamp-ms": 1700000000000,
                "schema-id": 0,
                "summary": {"engine-name": "fuzz"},
                "default-namespace": ["fuzz"],
                "representations": [{"type": "sql", "sql": "SELECT id FROM fuzz.t1", "dialect": "spark"}],
            },
            "properties": {},
        }

    return [
        ("namespaces", {"namespace": ["fuzz"], "properties": {"owner": "fuzz"}}),
        ("namespaces/fuzz/tables", table("t1")),
        ("namespaces/fuzz/tables", table("t2")),  # source of the renameTable example
        ("namespaces/fuzz/views", view("v1")),
        ("namespaces/fuzz/views", view("v2")),  # source of the renameView example
    ]


def seed(uri: str, catalog: str) -> None:
    """Create the seeded objects; one that exists already (409) is fine."""
    for path, body in seed_requests():
        url = f"{uri}/v1/{urllib.parse.quote(catalog)}/{path}"
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=30):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise SystemExit(f"[fuzz] seeding POST {url} answered {exc.code}: {exc.read()[:500]!r}") from exc


# ---- reports ------------------------------------------------------------------------------


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


PHASES = ("examples", "coverage", "fuzzing", "stateful")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", default=os.environ.get("PANGOLIN_URI", "http://127.0.0.1:8181"))
    p.add_argument("--catalog", default=os.environ.get("PANGOLIN_FUZZ_CATALOG", "demo"))
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    p.add_argument("--seed", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_SEED", "20240601")))
    p.add_argument("--max-examples", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_MAX_EXAMPLES", "50")),
                   help="test cases per operation in the fuzzing phase (and stateful scenarios)")
    p.add_argument("--stateful-steps", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_STATEFUL_STEPS", "10")))
    p.add_argument("--workers", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_WORKERS", "1")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("PANGOLIN_FUZZ_TIMEOUT", "270")),
                   help="hard limit in seconds for all Schemathesis runs together (the run fails when exceeded)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    p.add_argument("--report-dir", type=Path, default=None,
                   help="where to keep the JUnit/NDJSON reports (default: a temporary directory)")
    p.add_argument("--operation", action="append", default=[],
                   help="fuzz only this operationId (repeatable; for iterating on one failure)")
    p.add_argument("--print-operations", action="store_true",
                   help="print every spec operation (operationId, method, path) and exit; no server needed")
    args = p.parse_args()
    if args.print_operations:
        for op in spec_operations(args.spec):
            print(f"| `{op['id']}` | {op['method']} | `{op['path']}` |" + (" deprecated" if op["deprecated"] else ""))
        return 0
    uri = args.uri.rstrip("/")
    args.spec = args.spec.resolve()
    phases = [ph for ph in args.phases.split(",") if ph]
    if not phases or any(ph not in PHASES for ph in phases):
        log(f"--phases must be a comma-separated subset of {','.join(PHASES)}")
        return 2

    endpoints = fetch_endpoints(uri, args.catalog)
    ops = spec_operations(args.spec)
    by_endpoint = {op["endpoint"]: op for op in ops}
    unknown = [e for e in endpoints if e not in by_endpoint]
    if unknown:
        log(f"advertised endpoints that are not operations of {args.spec.name}: {unknown}")
        return 2

    problems = check_coverage_doc(COVERAGE_DOC, ops, endpoints)
    if problems:
        log(f"{COVERAGE_DOC.relative_to(ROOT)} is out of date:")
        for problem in problems:
            log(f"  - {problem}")
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
    log(f"not fuzzed (see docs/spec-coverage.md): {', '.join(not_fuzzed) or 'none'}")
    for op_id, why in EXCLUDED.items():
        log(f"excluded {op_id}: {why}")

    report_dir = (args.report_dir or Path(tempfile.mkdtemp(prefix="pangolin-fuzz."))).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    config_path = report_dir / "schemathesis.toml"
    write_config(config_path, args)
    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or "schemathesis"
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS=str(HERE / "hooks.py"),
        PANGOLIN_URI=uri,
        PANGOLIN_FUZZ_CATALOG=args.catalog,
    )
    log(f"seed {args.seed}, {args.max_examples} examples per operation, phases {','.join(phases)}, reports in {report_dir}")

    started = time.monotonic()
    results = []  # (phase, rc, passed, failed, skipped, failing)
    timed_out = False
    for phase in phases:
        remaining = args.timeout - (time.monotonic() - started)
        if remaining <= 1:
            timed_out = True
            log(f"no time left for the {phase} phase")
            break
        seed(uri, args.catalog)
        junit = report_dir / f"junit-{phase}.xml"
        if junit.exists():
            junit.unlink()
        cmd = [
            st, "--config-file", str(config_path), "--no-color",
            "run", str(args.spec),
            "--url", uri,
            "--checks", ",".join(CHECKS),
            "--phases", phase,
            "--report", "junit,ndjson",
            "--report-dir", str(report_dir / phase),
            "--report-junit-path", str(junit),
            "--output-truncate", "false",
        ]
        for op_id in selected:
            cmd += ["--include-operation-id", op_id]
        print(f"\n[fuzz] ==== phase {phase} ====", flush=True)
        try:
            # cwd: Hypothesis and Schemathesis keep state in ./.hypothesis and ./.schemathesis
            rc = subprocess.run(cmd, env=env, cwd=report_dir, timeout=remaining, check=False).returncode
        except subprocess.TimeoutExpired:
            timed_out = True
            rc = -1
            log(f"the {phase} phase did not finish within the {args.timeout}s budget")
        passed, failed, skipped, failing = junit_counts(junit)
        results.append((phase, rc, passed, failed, skipped, failing))
        if timed_out:
            break
    elapsed = time.monotonic() - started

    print("\n[fuzz] ==== summary ====")
    total_passed = total_failed = total_skipped = 0
    ok = not timed_out and len(results) == len(phases)
    for phase, rc, passed, failed, skipped, failing in results:
        # Schemathesis exits 1 on a failed check and 2+ on errors (e.g. unreachable server).
        if rc != 0 and failed == 0:
            failed = 1
        ok = ok and rc == 0
        total_passed += passed
        total_failed += failed
        total_skipped += skipped
        line = f"[fuzz] {phase:<9} exit {rc}: {passed} passed, {failed} failed, {skipped} skipped"
        if failing:
            line += " -- " + "; ".join(failing)
        print(line)
    if not ok and total_failed == 0:
        total_failed = 1
    print(
        f"spec fuzz: {len(selected)} operations, phases {','.join(phases)}, seed {args.seed}, "
        f"{elapsed:.0f}s: {'OK' if ok else 'FAILED'}; reports in {report_dir}"
    )
    print(f"fuzz: {total_passed} passed, {total_failed} failed" + (f", {total_skipped} skipped" if total_skipped else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
