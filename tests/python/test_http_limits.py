"""HTTP limits of the catalog listener against a running ``pangolin dev``, over raw sockets.

A client that sends half a request head used to be held open indefinitely, and a body sent
at 1 byte/s was accepted for as long as it kept coming. Now:

- 200 connections that each send a partial head are all closed by the server within
  ``catalog.header_read_timeout_ms`` (dev: the default, 10 s) plus a margin, without an answer;
- a body trickling in at 1 byte/s is cut off within ``catalog.body_read_timeout_ms`` (default
  60 s) plus a margin: a 408 in the Iceberg error model, or a closed connection;
- the catalog still answers normally meanwhile, with an ``x-request-id`` header;
- an internal failure never answers storage or SDK internals.

The expected timeouts come from ``PANGOLIN_CATALOG__HEADER_READ_TIMEOUT_MS`` and
``PANGOLIN_CATALOG__BODY_READ_TIMEOUT_MS`` when set (``pangolin dev`` passes them to its
nodes), else the defaults.

Run: ``$HOME/.cache/pangolin/venv/bin/python -m pytest tests/python/test_http_limits.py``
against ``pangolin dev``.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
import time
import uuid
from urllib.parse import urlparse

import requests

from support import CATALOG_URI, WAREHOUSE

HEADER_TIMEOUT_S = int(os.environ.get("PANGOLIN_CATALOG__HEADER_READ_TIMEOUT_MS", "10000")) / 1000
BODY_TIMEOUT_S = int(os.environ.get("PANGOLIN_CATALOG__BODY_READ_TIMEOUT_MS", "60000")) / 1000
MARGIN_S = 5.0
CONNECTIONS = 200

_url = urlparse(CATALOG_URI)
HOST, PORT = _url.hostname or "127.0.0.1", _url.port or 80


def _connect() -> socket.socket:
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.setblocking(False)
    return s


def test_partial_heads_are_closed_within_the_header_timeout() -> None:
    sockets = []
    try:
        for i in range(CONNECTIONS):
            s = _connect()
            s.sendall(f"GET /health/live HTTP/1.1\r\nHost: {HOST}\r\nX-Partial-{i}: ".encode())
            sockets.append(s)
        started = time.monotonic()
        deadline = started + HEADER_TIMEOUT_S + MARGIN_S
        sel = selectors.DefaultSelector()
        for s in sockets:
            sel.register(s, selectors.EVENT_READ)
        open_ = set(sockets)
        answered = []
        closed_at = []
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                if data:
                    answered.append(data[:80])
                    continue
                sel.unregister(s)
                open_.discard(s)
                closed_at.append(time.monotonic() - started)
        sel.close()
        assert not answered, f"answers to incomplete heads: {answered[:3]}"
        assert not open_, (
            f"{len(open_)} of {CONNECTIONS} half-sent heads still open after "
            f"{HEADER_TIMEOUT_S + MARGIN_S:.0f} s (header timeout {HEADER_TIMEOUT_S:.0f} s)"
        )
        assert max(closed_at) <= HEADER_TIMEOUT_S + MARGIN_S
        # The server did not close them before the timeout either (it is not refusing work).
        assert min(closed_at) >= HEADER_TIMEOUT_S * 0.5, f"closed after {min(closed_at):.1f} s"
        # Meanwhile and afterwards the catalog answers normally.
        r = requests.get(f"{CATALOG_URI}/v1/config", params={"warehouse": WAREHOUSE}, timeout=10)
        assert r.status_code == 200
        assert r.headers.get("x-request-id")
    finally:
        for s in sockets:
            s.close()


def test_a_one_byte_per_second_body_is_cut_off() -> None:
    body = json.dumps({"namespace": [f"slow_{uuid.uuid4().hex[:8]}"], "properties": {"k": "v" * 300}}).encode()
    assert len(body) > BODY_TIMEOUT_S + MARGIN_S, "the body must outlast the timeout at 1 byte/s"
    head = (
        f"POST /v1/{WAREHOUSE}/namespaces HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    s = socket.create_connection((HOST, PORT), timeout=10)
    s.sendall(head)
    started = time.monotonic()
    answer = b""
    outcome = {"closed": False}
    stop = threading.Event()

    def trickle() -> None:
        for i in range(len(body)):
            if stop.is_set():
                return
            try:
                s.send(body[i : i + 1])
            except OSError:
                return
            time.sleep(1)

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    s.settimeout(BODY_TIMEOUT_S + MARGIN_S)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                outcome["closed"] = True
                break
            answer += chunk
    except socket.timeout:
        pass
    except OSError:
        outcome["closed"] = True
    took = time.monotonic() - started
    stop.set()
    s.close()
    assert answer or outcome["closed"], f"the slow body was still accepted after {took:.0f} s"
    assert took <= BODY_TIMEOUT_S + MARGIN_S, f"cut off only after {took:.0f} s"
    assert took >= BODY_TIMEOUT_S * 0.5, f"cut off after {took:.1f} s, before the body timeout"
    if answer:
        text = answer.decode(errors="replace")
        status_line, _, rest = text.partition("\r\n")
        assert status_line.startswith("HTTP/1.1 408"), text
        error = json.loads(rest.partition("\r\n\r\n")[2])["error"]
        assert error["code"] == 408 and error["type"] == "RequestTimeoutException", error
        assert "connection: close" in rest.lower()


def test_answers_carry_a_request_id_and_errors_no_storage_internals() -> None:
    base = f"{CATALOG_URI}/v1/{WAREHOUSE}"
    ns = f"hl_{uuid.uuid4().hex[:8]}"
    r = requests.post(f"{base}/namespaces", json={"namespace": [ns]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers.get("x-request-id")
    # A caller's request id is kept.
    r = requests.get(f"{base}/namespaces/{ns}", headers={"x-request-id": "pytest-id-1"}, timeout=30)
    assert r.headers.get("x-request-id") == "pytest-id-1"
    schema = {"type": "struct", "schema-id": 0, "fields": [{"id": 1, "name": "id", "required": True, "type": "long"}]}
    attempts = [
        ("tables", {"name": "t1", "location": "s3://other/x", "schema": schema}),
        ("register", {"name": "t2", "metadata-location": "s3://nob/x.json"}),
        ("register", {"name": "t3", "metadata-location": f"s3://{WAREHOUSE}/a/../b.json"}),
    ]
    try:
        for op, body in attempts:
            r = requests.post(f"{base}/namespaces/{ns}/{op}", json=body, timeout=30)
            for internal in ("SdkError", "DispatchFailure", "ErrorMetadata", "Unhandled", "SdkBody", "extensions"):
                assert internal not in r.text, f"{op} {body}: {r.status_code} {r.text}"
            assert r.status_code in (400, 500), f"{op} {body}: {r.status_code} {r.text}"
            if r.status_code == 500:
                rid = r.headers.get("x-request-id")
                assert rid and r.json()["error"]["message"] == f"Internal server error; request id {rid}", r.text
    finally:
        requests.delete(f"{base}/namespaces/{ns}", timeout=30)
