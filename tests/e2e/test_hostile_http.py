"""Hostile HTTP through the middleware under a real server (uvicorn): the app behaves exactly as
without it, memory stays bounded, and each case is recorded with the right state.

The streamed upload is 256 MiB here; TRAFFICREEL_HOSTILE_UPLOAD_MB=1024 runs the 1 GiB form."""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import time
from typing import Any

import pytest

from tests.producers.support import CapturingRecorder, raw_request, serving, starlette_app, without_date
from trafficreel.producers import TrafficRecorder

UPLOAD_MB = int(os.environ.get("TRAFFICREEL_HOSTILE_UPLOAD_MB", "256"))


@pytest.fixture(scope="module")
def servers() -> Any:
    recorder = CapturingRecorder()
    with (
        serving(starlette_app()) as bare,
        serving(TrafficRecorder(starlette_app(), recorder=recorder)) as recorded,
    ):
        yield bare, recorded, recorder


def _both(servers: Any, request: bytes) -> tuple[bytes, bytes, dict[str, Any] | None]:
    bare, recorded, recorder = servers
    before = len(recorder.records)
    plain, seen = without_date(raw_request(bare, request)), without_date(raw_request(recorded, request))
    records = recorder.wait(before + 1, timeout=5)
    return plain, seen, (records[before] if len(records) > before else None)


def test_invalid_utf8_in_path_and_headers(servers: Any) -> None:
    """Percent-encoded invalid UTF-8 in the path and raw invalid bytes in a header value: same
    answer, recorded byte for byte; raw non-ASCII in the request line: the same refusal."""
    request = b"GET /echo/%FF%FE/x HTTP/1.1\r\nHost: h\r\nX-Bin: \xff\xfe\x80\r\nConnection: close\r\n\r\n"
    plain, seen, record = _both(servers, request)
    assert plain == seen and plain.startswith(b"HTTP/1.1 200")
    assert record is not None and record["request"]["path"] == b"/echo/%FF%FE/x"
    assert {"name": b"x-bin", "value": b"\xff\xfe\x80"} in record["request"]["headers"]
    refused = b"GET /echo/\xff HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    bare, recorded, _ = servers
    assert raw_request(bare, refused)[:12] == raw_request(recorded, refused)[:12] == b"HTTP/1.1 400"


def test_ten_thousand_headers(servers: Any) -> None:
    """10,000 request headers: the same response, and every one of them in the record, in order."""
    head = b"".join(b"X-H-%d: v%d\r\n" % (i, i) for i in range(10_000))
    request = b"GET /echo/many HTTP/1.1\r\nHost: h\r\n" + head + b"Connection: close\r\n\r\n"
    plain, seen, record = _both(servers, request)
    assert plain == seen
    if plain.startswith(b"HTTP/1.1 200"):
        assert record is not None
        names = [h["name"] for h in record["request"]["headers"] if h["name"].startswith(b"x-h-")]
        assert names == [b"x-h-%d" % i for i in range(10_000)]


def _upload(port: int, megabytes: int) -> tuple[bytes, bytes]:
    chunk = bytes(range(256)) * 4096  # 1 MiB, sent again and again: the client holds 1 MiB
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (megabytes << 20)
        )
        for _ in range(megabytes):
            sock.sendall(chunk)
            digest.update(chunk)
        response = b""
        while data := sock.recv(65536):
            response += data
    return without_date(response), digest.digest()


def test_huge_streamed_upload_keeps_memory_bounded(servers: Any) -> None:
    """A streamed upload of hundreds of MiB: the same answer, a record with its full size and
    SHA-256 and no kept bytes, and no growth of memory with its size."""
    bare, recorded, recorder = servers
    plain, _ = _upload(bare, UPLOAD_MB)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = len(recorder.records)
    seen, digest = _upload(recorded, UPLOAD_MB)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert plain == seen and b'{"size":%d}' % (UPLOAD_MB << 20) in seen
    body = recorder.wait(before + 1)[before]["request"]["body"]
    assert (body["state"], body["size"], body["sha256"], body["data"]) == (
        "NOT_KEPT",
        UPLOAD_MB << 20,
        digest,
        None,
    )
    assert growth_mb < 64, f"peak memory grew by {growth_mb:.0f} MiB for a {UPLOAD_MB} MiB upload"


def _lying(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo/lie HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(b"only ten b")
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while data := sock.recv(65536):
            response += data
    return response


def test_lying_content_length(servers: Any) -> None:
    """A body shorter than its Content-Length, then the client hangs up: the same outcome for the
    client, and a record saying the body was aborted and the client disconnected."""
    bare, recorded, recorder = servers
    before = len(recorder.records)
    assert without_date(_lying(bare)) == without_date(_lying(recorded))
    record = recorder.wait(before + 1)[before]
    body = record["request"]["body"]
    assert (record["outcome"]["kind"], body["state"], body["size"], body["data"]) == (
        "DISCONNECTED", "ABORTED", 10, b"only ten b",
    )  # fmt: skip
    assert body["declared_length"] == 1000


def _drip(port: int, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo/drip HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)
        )
        for i in range(len(body)):
            sock.sendall(body[i : i + 1])
            time.sleep(0.02)
        response = b""
        while data := sock.recv(65536):
            response += data
    return without_date(response)


def test_slow_drip_body(servers: Any) -> None:
    """A body sent a byte at a time: the same response, the whole body recorded."""
    bare, recorded, recorder = servers
    before = len(recorder.records)
    assert _drip(bare, b"drip-drip-drip-drip") == _drip(recorded, b"drip-drip-drip-drip")
    body = recorder.wait(before + 1)[before]["request"]["body"]
    assert (body["state"], body["data"]) == ("COMPLETE", b"drip-drip-drip-drip")


def test_client_disconnects_mid_response(servers: Any) -> None:
    """The client hangs up after the first streamed event: recorded as a disconnect with the
    response cut where it stopped."""
    _, recorded, recorder = servers
    before = len(recorder.records)
    with socket.create_connection(("127.0.0.1", recorded), timeout=10) as sock:
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: h\r\n\r\n")
        assert b"data: 0" in sock.recv(65536)
    record = recorder.wait(before + 1, timeout=10)[before]
    assert record["outcome"]["kind"] == "DISCONNECTED"
    assert record["response"]["body"]["state"] == "ABORTED"
    assert record["response"]["body"]["data"].startswith(b"data: 0")
