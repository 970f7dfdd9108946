"""Tricky requests recorded by the middleware under uvicorn arrive byte-identical when replayed.

The originals are sent as raw bytes to a recorded app; the records go through the real broker;
the replay goes to a capturing target, which must see the same method, raw target, headers (order,
duplicates, bytes; hop-by-hop ones excepted) and body. ASGI servers hand header names to the app
lowercased, so the originals use lowercase names: the record can only keep what the app saw.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.producers.support import serving
from trafficreel.producers import RecorderConfig, TrafficRecorder
from trafficreel.replay import (
    Filters,
    KafkaSource,
    OffsetRange,
    Pacing,
    ReplayConfig,
    Replayer,
    select_offsets,
)
from trafficreel.replay.testing import CaptureServer
from trafficreel.schemas import Deserializer
from trafficreel.topics import create_topics

pytestmark = pytest.mark.stack

GZ = gzip.compress(b'{"items": [1, 2, 3], "note": "compressed"}')
# (raw request head lines after the request line, body, framed body as sent)
CASES: list[tuple[bytes, list[tuple[bytes, bytes]], bytes, bytes]] = [
    (b"GET /caf%C3%A9/a%2Fb?q=%20x&q=y&empty=&plus=a+b", [(b"host", b"shop.example")], b"", b""),
    (b"GET /raw/%E9t%E9/%FF?x=%FF%FE", [(b"host", b"shop.example"), (b"x-latin", b"\xe9t\xe9")], b"", b""),
    (
        b"POST /orders?expand=items&expand=notes",
        [
            (b"host", b"api.example.com:8443"),
            (b"x-dup", b"1"),
            (b"content-type", b"application/json"),
            (b"x-dup", b"2"),
            (b"content-length", b"16"),
        ],
        b'{"sku": "A-100"}',
        b'{"sku": "A-100"}',
    ),
    (
        b"PUT /gzipped",
        [
            (b"host", b"shop.example"),
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"content-length", b"%d" % len(GZ)),
        ],
        GZ,
        GZ,
    ),
    (
        b"POST /chunked",
        [(b"host", b"shop.example"), (b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")],
        b"hello, chunked world",
        b"5\r\nhello\r\n9\r\n, chunked\r\n6\r\n world\r\n0\r\n\r\n",
    ),
]


async def _app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_replayed_requests_arrive_byte_identical(infra: Any, new_topic: Callable[..., str]) -> None:
    """Percent-encoded and non-UTF-8 paths, repeated keys, duplicate headers, gzip, chunked, custom Host."""
    prefix = new_topic().replace("test.", "fid")
    create_topics(infra.kafka_conf(), [f"{prefix}.raw"], partitions=1)
    recorded = TrafficRecorder(
        _app,
        config=RecorderConfig(service_name="fidelity", kafka_bootstrap=infra.bootstrap, topic_prefix=prefix),
    )
    with serving(recorded) as port:
        for line, headers, _, framed in CASES:
            head = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
            response = _send_raw(port, line + b" HTTP/1.1\r\n" + head + b"connection: close\r\n\r\n" + framed)
            assert response.startswith(b"HTTP/1.1 200"), response[:200]
    recorded.recorder.close()

    source = KafkaSource(infra.kafka_conf(), Deserializer())
    selection = select_offsets(source, f"{prefix}.raw", [OffsetRange(0)], Filters())
    source.close()
    assert len(selection) == len(CASES)

    async def replay() -> list[Any]:
        async with CaptureServer() as target:
            config = ReplayConfig(target=target.url, allow=["127.0.0.1"], pacing=Pacing(mode="asap"))
            results = [r async for r in Replayer(config).run(selection.records)]
            assert {r.verdict for r in results} == {"match"}, [
                (r.target, r.reason, r.differences) for r in results
            ]
            return target.requests

    arrived = {c.target: c for c in asyncio.run(replay())}
    for line, headers, body, _ in CASES:
        method, target = line.split(b" ", 1)
        seen = arrived[target]
        assert seen.method == method
        assert seen.headers == headers, target
        assert seen.body == body
