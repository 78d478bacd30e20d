"""Schemathesis hooks for the spec-conformance fuzz run (loaded through SCHEMATHESIS_HOOKS).

Three things, each documented in docs/spec-coverage.md:

1. `before_load_schema`: one correction of a contradiction inside the spec (error bodies of
   the view operations).
2. `before_add_examples`: semantically valid requests (valid_requests.py) so success responses
   are checked too.
3. `before_call`: a client obligation the spec states (a fresh Idempotency-Key per
   operation).

Nothing here filters failures or rewrites server responses.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import schemathesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import valid_requests  # noqa: E402  (tests/fuzz/valid_requests.py)

IDEMPOTENCY_KEY = "idempotency-key"
ERROR_MODEL = "#/components/schemas/ErrorModel"
ERROR_RESPONSE = "#/components/schemas/IcebergErrorResponse"
HTTP_METHODS = ("get", "put", "post", "delete", "head", "patch", "options", "trace")


@schemathesis.hook
def before_load_schema(context, raw_schema):
    """Error responses that reference the bare `ErrorModel` are read as `IcebergErrorResponse`.

    The spec wraps every error body in `{"error": ErrorModel}` (`IcebergErrorResponse`, "JSON
    wrapper for all error responses (non-2xx)"), and apache/iceberg#8914 moved every table
    and namespace operation to it. The view operations (listViews, createView, loadView,
    replaceView, dropView, renameView) still give the bare `ErrorModel` as the schema of
    their 404/409/5xx responses, while the examples attached to those very responses
    (`NoSuchNamespaceError`, `NoSuchViewError`, ...) are wrapped, registerView uses the
    wrapper, and every client (Java `ErrorResponseParser`, PyIceberg) parses only the
    wrapped form. A server cannot satisfy both; this takes the wrapper, i.e. the error
    bodies of the view operations are still validated, against the schema every other
    operation uses. Only a response schema that is exactly a `$ref` to `ErrorModel` on a
    4xx/5xx status changes.
    """
    changed = []
    for path, item in (raw_schema.get("paths") or {}).items():
        for method, op in item.items():
            if method not in HTTP_METHODS or not isinstance(op, dict):
                continue
            for status, response in (op.get("responses") or {}).items():
                if not str(status)[:1] in ("4", "5") or not isinstance(response, dict):
                    continue
                for media in (response.get("content") or {}).values():
                    if media.get("schema") == {"$ref": ERROR_MODEL}:
                        media["schema"] = {"$ref": ERROR_RESPONSE}
                        changed.append(f"{op.get('operationId')} {status}")
    if changed:
        print(
            "[fuzz] spec correction (error bodies wrapped as IcebergErrorResponse): " + ", ".join(changed),
            file=sys.stderr,
            flush=True,
        )


def _uuid7() -> str:
    """A fresh RFC 9562 UUIDv7 (Python 3.11 has no uuid.uuid7)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 4122/9562 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


@schemathesis.hook
def before_add_examples(context, examples):
    """Append the valid requests of valid_requests.py for this operation to the examples phase."""
    operation = context.operation
    if operation is None:
        return
    for kwargs in valid_requests.examples_for(operation.label):
        examples.append(operation.Case(**kwargs))


@schemathesis.hook
def before_call(context, case, kwargs):
    """Give every request that carries a well-formed Idempotency-Key a key of its own.

    The spec (components/parameters/idempotency-key) requires clients to generate a new
    UUIDv7 key for every different operation ("no reuse across different operations").
    Left alone, Hypothesis reuses the spec's example key for unrelated requests, so the
    server correctly refuses the reuse (or replays an earlier answer) and the run would test
    the fuzzer's misuse instead of the operation. Malformed keys (negative tests of the
    header's format) are sent unchanged.
    """
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        if name.lower() != IDEMPOTENCY_KEY:
            continue
        value = headers[name]
        try:
            well_formed = isinstance(value, str) and len(value) == 36 and uuid.UUID(value) is not None
        except ValueError:
            well_formed = False
        if well_formed:
            headers[name] = _uuid7()
