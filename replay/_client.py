"""A byte-exact HTTP/1.1 client for replay.

General HTTP clients normalise what they send: header case and order, percent-encoding of the
path, an added ``User-Agent`` or ``Accept-Encoding``. Replay must send the recorded bytes, so a
request here is the exact bytes prepared from the record, written as they are. Responses are parsed
by httptools (llhttp, the parser uvicorn uses). A connection carries one request at a time and is
kept alive for the next; each target keeps a pool of idle connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from .errors import SendError

__all__ = ["Reply", "Target"]


@dataclass(slots=True)
class Reply:
    """A response as the target sent it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: str
    sent_at: float  # loop clock (time.monotonic) when the first request byte was written
    elapsed_us: int  # from the first byte written to the last byte of the response read


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange`` writes a request and waits for its response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.keep_alive = True
        self._head = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._sent_at = 0.0
        self._fresh_parser = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish()  # 101 Switching Protocols: the exchange is over for replay
            self.keep_alive = False
        except httptools.HttpParserError as exc:
            self._fail(SendError("protocol", f"The target sent a response that is not valid HTTP: {exc}."))
            self._close()
        if self._fresh_parser:
            # A response to HEAD has no body whatever Content-Length says; llhttp cannot know
            # the method, so the next response starts on a fresh parser.
            self._fresh_parser = False
            self.parser = httptools.HttpResponseParser(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self.parser.should_keep_alive():
            self._finish()  # a body delimited by the end of the connection
        else:
            self._fail(
                SendError("reset", "The target closed the connection before the response was complete.")
            )

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self._headers_done = True
        if self._head:
            self.keep_alive = self.parser.should_keep_alive()
            self._finish()
            self._fresh_parser = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._headers_done or self._head:
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # the exchange

    def _finish(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        now = time.monotonic()
        version = self.parser.get_http_version()
        reply = Reply(
            self.parser.get_status_code(),
            self._headers,
            b"".join(self._body),
            version,
            self._sent_at,
            int((now - self._sent_at) * 1e6),
        )
        waiter.set_result(reply)

    def _fail(self, exc: SendError) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def start(self, raw: bytes, head: bool, cut: int | None) -> asyncio.Future[Reply]:
        """Write a request now; the future resolves to its reply."""
        assert self.transport is not None
        self.waiter = waiter = self.loop.create_future()
        self._head = head
        self._headers_done = False
        self._sent_at = time.monotonic()
        if cut is None:
            self.transport.write(raw)
        else:
            self.transport.write(raw[:cut])
            self.transport.abort()
            self.closed = True
            waiter.set_exception(
                SendError("aborted", "The connection was aborted on purpose (fault injection).")
            )
        return waiter


class Target:
    """A pool of keep-alive connections to one origin (``http://host:port`` or ``https://…``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        verify_tls: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"A target is an origin like http://host:port, not {url!r}.")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(
                f"A target is an origin without a path ({url!r}); use a path-prefix rewrite to move paths."
            )
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context()
            if not verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._idle: list[_Connection] = []
        self.connections_opened = 0

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port, ssl=self._ssl
                )
        except (OSError, TimeoutError) as exc:
            raise SendError(
                "connect", f"Cannot connect to {self.url}: {exc or type(exc).__name__}. Is the target up?"
            ) from exc
        self.connections_opened += 1
        return conn

    async def warm(self, count: int) -> None:
        """Open ``count`` connections ahead, so the first requests do not wait for a handshake."""
        conns = await asyncio.gather(*(self._connect() for _ in range(count - len(self._idle))))
        self._idle.extend(conns)

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def send(self, raw: bytes, *, head: bool = False, cut: int | None = None) -> Reply:
        """Send one request's exact bytes and read the response.

        ``head`` says the response has no body (a HEAD request); ``cut`` writes only that many
        bytes and aborts the connection (a fault). Raises ``SendError``.
        """
        conn = self._idle_connection() or await self._connect()
        waiter = conn.start(raw, head, cut)
        timer = conn.loop.call_later(self.timeout, self._time_out, conn)
        try:
            reply = await waiter
        except BaseException:
            conn._close()
            raise
        finally:
            timer.cancel()
        if conn.keep_alive and not conn.closed:
            self._idle.append(conn)
        else:
            conn._close()
        return reply

    def _time_out(self, conn: _Connection) -> None:
        conn._fail(SendError("timeout", f"{self.url} did not answer within {self.timeout:g}s."))
        conn._close()

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn._close()
        self._idle.clear()
