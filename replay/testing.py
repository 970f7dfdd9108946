"""A capturing HTTP/1.1 target: records every request exactly as it arrived and answers it.

Used to check replay fidelity (method, raw target, header order, case, duplicates and bytes, body)
and as a fast local target for benchmarks. Requests are parsed with httptools, which hands over the
raw bytes of the target and of every header line.

>>> import asyncio
>>> async def main() -> int:
...     async with CaptureServer() as server:
...         reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
...         writer.write(b"GET /a%2Fb?x=1&x=2 HTTP/1.1\\r\\nHost: h\\r\\n\\r\\n")
...         await reader.readuntil(b"ok")
...         writer.close()
...     return len(server.requests)
>>> asyncio.run(main())
1
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import httptools

__all__ = ["CaptureServer", "Captured", "Responder", "fixed_response"]


@dataclass(slots=True)
class Captured:
    """One request as it arrived."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    http_version: str = "1.1"


Responder = Callable[[Captured], bytes]
"""Builds the full response bytes (status line, headers, body) for a captured request."""


def fixed_response(
    status: int = 200, body: bytes = b"ok", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Responder:
    """A responder that always sends the same response."""
    head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n" % (status, len(body))
    raw = head + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body
    return lambda _request: raw


class _Protocol(asyncio.Protocol):
    def __init__(self, server: CaptureServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: Captured | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._open.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()

    def on_message_begin(self) -> None:
        self.current = Captured(b"", b"")
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method()
        self.current.target = self.url
        self.current.http_version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        assert self.transport is not None
        request.body = b"".join(self.body)
        if self.server.keep:
            self.server.requests.append(request)
        self.transport.write(self.server.respond(request))
        if not self.parser.should_keep_alive():
            self.transport.close()


class CaptureServer:
    """An HTTP/1.1 server on loopback that keeps every request (``keep=False`` only counts them)."""

    def __init__(self, respond: Responder | None = None, *, port: int = 0, keep: bool = True) -> None:
        self.respond = respond or fixed_response()
        self.keep = keep
        self.requests: list[Captured] = []
        self._port = port
        self._server: asyncio.Server | None = None
        self._open: set[_Protocol] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for protocol in list(self._open):  # connections the client left open
                if protocol.transport is not None:
                    protocol.transport.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> CaptureServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
