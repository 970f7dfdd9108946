"""Test support for the recorder: a capturing recorder, sample apps, servers and a raw HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from trafficreel.producers import PendingExchange, Recorder, RecorderConfig
from trafficreel.schemas import Deserializer, Exchange, Serializer
from trafficreel.stack._processes import free_port

_SERIALIZER, _DESERIALIZER = Serializer(), Deserializer()


class CapturingRecorder(Recorder):
    """Builds each record at once and keeps it, after a real encode/decode round trip."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(RecorderConfig(**{"service_name": "test", **settings}))
        self.records: list[Exchange] = []
        self.event = threading.Event()

    def submit(self, exchange: PendingExchange) -> None:
        self.records.append(_DESERIALIZER(_SERIALIZER(exchange.build(self))))
        self.event.set()

    def wait(self, count: int, timeout: float = 10) -> list[Exchange]:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records


BIG = bytes(range(256)) * 4096  # 1 MiB of binary
GZIPPED = gzip.compress(b'{"compressed": true}' * 50)


def raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send raw request bytes, return every response byte until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def without_date(response: bytes) -> bytes:
    """A raw response with its Date headers removed (the one header that differs run to run), in
    every response head it holds (a 100 Continue comes before the real one)."""
    return re.sub(rb"(?i)\r\ndate: [^\r\n]*(?=\r\n)", b"", response)


class UvicornServer:
    """uvicorn serving an ASGI app on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="auto")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> UvicornServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    with UvicornServer(app) as server:
        yield server.port


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(
            body,
            media_type=request.headers.get("content-type", "application/octet-stream"),
            headers={"x-query-length": str(len(request.url.query)), "set-cookie": "sid=abc; Path=/"},
        )

    async def upload(request: Request) -> Response:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse({"size": size})

    async def sse(request: Request) -> Response:
        async def events() -> Any:
            for i in range(3):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(0.2)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def download(request: Request) -> Response:
        return Response(BIG, media_type="application/octet-stream")

    async def gz(request: Request) -> Response:
        return Response(GZIPPED, media_type="application/json", headers={"content-encoding": "gzip"})

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def cached(request: Request) -> Response:
        return Response(status_code=304, headers={"etag": '"v1"'})

    async def boom(request: Request) -> Response:
        raise RuntimeError("handler failed")

    async def boom_midway(request: Request) -> Response:
        async def events() -> Any:
            yield b"first "
            raise ValueError("stream failed")

        return StreamingResponse(events(), media_type="text/plain")

    async def headers(request: Request) -> Response:
        return PlainTextResponse("\n".join(f"{k}={v}" for k, v in request.headers.raw))

    return Starlette(
        routes=[
            Route("/echo/{rest:path}", echo, methods=["POST", "PUT", "GET", "HEAD"]),
            Route("/upload", upload, methods=["POST"]),
            Route("/sse", sse),
            Route("/download", download),
            Route("/gzip", gz),
            Route("/empty", empty),
            Route("/cached", cached),
            Route("/boom", boom),
            Route("/boom-midway", boom_midway),
            Route("/headers", headers),
        ]
    )
