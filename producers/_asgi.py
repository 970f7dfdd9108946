"""ASGI middleware: records each HTTP exchange at the handler entry, changing nothing the app sees.

    app = TrafficRecorder(app)                 # any ASGI app: Starlette, FastAPI, Django, Quart …

The request body is teed as the app pulls it through ``receive`` (never read ahead); response
chunks are copied by reference as they pass through ``send`` (never held back, so streaming keeps
its timing). The record is finished once: when the response completes, when the handler raises
(the exception propagates unchanged) or when the client disconnects. Websocket and lifespan
scopes pass straight through; at lifespan shutdown the recorder flushes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._body import BodyCapture
from ._config import RecorderConfig
from ._context import suppress_recording
from ._exchange import PendingExchange, _first
from ._recorder import Recorder

__all__ = ["TrafficRecorder"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _content_length(headers: Any) -> int | None:
    value = _first(headers, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class _Responder:
    """Per-request state: wraps receive and send, and finishes the record exactly once."""

    __slots__ = ("done", "exchange", "receive_inner", "recorder", "send_inner")

    def __init__(self, recorder: Recorder, exchange: PendingExchange, receive: Receive, send: Send) -> None:
        self.recorder = recorder
        self.exchange = exchange
        self.receive_inner = receive
        self.send_inner = send
        self.done = False

    async def receive(self) -> Message:
        message = await self.receive_inner()
        kind = message["type"]
        if kind == "http.request":
            self.exchange.req_body.feed(message.get("body", b""))
        elif kind == "http.disconnect" and not self.done:
            self.exchange.outcome = "DISCONNECTED"
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        ex = self.exchange
        if kind == "http.response.body":
            if ex.resp_body is not None:
                ex.resp_body.feed(message.get("body", b""))
            if not message.get("more_body", False) and not message.get("trailers_expected", False):
                self.complete()
        elif kind == "http.response.start":
            ex.status = message["status"]
            ex.resp_headers = message.get("headers", ())
            ex.response_started = True
            ex.resp_body = BodyCapture(
                self.recorder.policy.keeps(_first(ex.resp_headers, b"content-type")),
                self.recorder.policy.limit,
                _content_length(ex.resp_headers),
            )
        elif kind == "http.response.trailers":
            ex.trailers = message.get("headers", ())
            if not message.get("more_trailers", False):
                self.complete()
        try:
            await self.send_inner(message)
        except OSError:
            # The client went away mid-response (servers raise OSError or a subclass of it).
            if not self.done:
                ex.outcome = "DISCONNECTED"
                if ex.resp_body is not None:
                    ex.resp_body.aborted = True
            raise

    def complete(self) -> None:
        self.exchange.end_mono = time.monotonic_ns()
        self.done = True

    def finish(self, exc: BaseException | None) -> None:
        """Mark how the exchange ended and hand it to the recorder (once per request)."""
        ex = self.exchange
        if isinstance(exc, asyncio.CancelledError):
            # Servers cancel the handler when the client goes away.
            if not self.done:
                ex.outcome = "DISCONNECTED"
        elif exc is not None and ex.outcome != "DISCONNECTED":
            ex.outcome = "RAISED"  # before or after the response started; response_started tells
            ex.exception = exc
        if not self.done:
            ex.end_mono = time.monotonic_ns()
            if ex.resp_body is not None:
                ex.resp_body.aborted = True  # the response never completed
            if ex.outcome == "DISCONNECTED":
                ex.req_body.aborted = (
                    ex.req_body.declared is not None and ex.req_body.size < ex.req_body.declared
                )
        self.recorder.submit(ex)


class TrafficRecorder:
    """Pure ASGI middleware recording every HTTP exchange to Kafka through a ``Recorder``."""

    def __init__(
        self, app: ASGIApp, *, recorder: Recorder | None = None, config: RecorderConfig | None = None
    ) -> None:
        self.app = app
        self.recorder = recorder or Recorder(config, recorder_name="asgi")
        self._enabled = self.recorder.config.enabled
        self._policy = self.recorder.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled or suppress_recording.get():
            if scope["type"] == "lifespan" and self._enabled:
                await self.app(scope, self._lifespan_receive(receive), send)
                return
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        if self.recorder.exclude and self.recorder.excluded(raw_path):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        start_ns, start_mono = time.time_ns(), time.monotonic_ns()
        exchange = PendingExchange(
            direction="INBOUND",
            start_ns=start_ns,
            start_mono=start_mono,
            method=scope["method"],
            scheme=scope.get("scheme", "http"),
            path=raw_path.split(b"?", 1)[0],
            query=scope.get("query_string", b""),
            http_version=scope.get("http_version", "1.1"),
            req_headers=headers,
            req_body=BodyCapture(
                self._policy.keeps(_first(headers, b"content-type")),
                self._policy.limit,
                _content_length(headers),
            ),
            client=scope.get("client"),
            server=scope.get("server"),
        )
        responder = _Responder(self.recorder, exchange, receive, send)
        try:
            await self.app(scope, responder.receive, responder.send)
        except BaseException as exc:
            responder.finish(exc)
            raise
        responder.finish(None)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        recorder = self.recorder

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                # Flush off the event loop, bounded by flush_timeout, before the app shuts down.
                await asyncio.get_running_loop().run_in_executor(None, recorder.close)
            return message

        return wrapped
