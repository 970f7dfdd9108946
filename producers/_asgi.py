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
from ._exchange import PendingExchange
from ._recorder import Recorder

__all__ = ["TrafficRecorder"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _after_response() -> Message:
    # What a server answers to receive() once the response went out (the ASGI spec's disconnect).
    return {"type": "http.disconnect"}


async def _send_after_response(message: Message) -> None:
    raise RuntimeError(f"ASGI message {message['type']!r} sent after the response completed")


class _Exchange(PendingExchange):
    """One exchange plus the receive/send wrappers that fill it; finished exactly once."""

    __slots__ = ("done", "receive_inner", "recorder", "req_done", "send_inner", "trailers_expected")
    done: bool
    req_done: bool
    trailers_expected: bool
    receive_inner: Receive
    recorder: Recorder
    send_inner: Send

    async def receive(self) -> Message:
        message = await self.receive_inner()
        kind = message["type"]
        if kind == "http.request":
            self.req_body.feed(message.get("body", b""))
            if not message.get("more_body", False):
                self.req_done = True
        elif kind == "http.disconnect" and not self.done:
            self.outcome = "DISCONNECTED"
        return message

    async def send(self, message: Message) -> None:
        if self.done:  # past the response's end: the server's to refuse, nothing of it recorded
            await self.send_inner(message)
            return
        kind = message["type"]
        if kind == "http.response.body":
            if self.resp_body is not None:
                self.resp_body.feed(message.get("body", b""))
            if not message.get("more_body", False) and not self.trailers_expected:
                self.end_mono = time.monotonic_ns()
                self.done = True
        elif kind == "http.response.start":
            self.status = message["status"]
            # A copy: layers outside this one (GZip, CORS …) may edit the list after it passed.
            self.resp_headers = list(message.get("headers", ()))
            self.trailers_expected = message.get("trailers", False)
            self.response_started = True
            self.resp_body = BodyCapture(self.recorder.policy.limit)
        elif kind == "http.response.trailers":
            self.trailers = list(message.get("headers", ()))
            if not message.get("more_trailers", False):
                self.end_mono = time.monotonic_ns()
                self.done = True
        try:
            await self.send_inner(message)
        except OSError:
            # The client went away mid-response (servers raise OSError or a subclass of it).
            if not self.done:
                self.outcome = "DISCONNECTED"
                if self.resp_body is not None:
                    self.resp_body.aborted = True
            raise

    def finish(self, exc: BaseException | None) -> None:
        """Mark how the exchange ended and hand it to the recorder (once per request)."""
        if isinstance(exc, asyncio.CancelledError):
            # Servers cancel the handler when the client goes away.
            if not self.done:
                self.outcome = "DISCONNECTED"
        elif exc is not None and self.outcome != "DISCONNECTED":
            self.outcome = "RAISED"  # before or after the response started; response_started tells
            self.exception = exc
        if not self.done:
            self.end_mono = time.monotonic_ns()
            if self.resp_body is not None:
                self.resp_body.aborted = True  # the response never completed
        if not self.req_done and (self.outcome == "DISCONNECTED" or self.req_body.size):
            # The body never ended: cut short by the client, even if the app then answered (an
            # error page to a client that is gone), or the app stopped reading it. (A body the
            # app never read at all shows as shorter than its Content-Length.)
            self.req_body.aborted = True
        if self.done:
            # The server's receive and send are bound to its state for this request (scope,
            # transport, buffers): not held while the record waits for the recorder's thread.
            # Once the response went out, the server answers a late call as these do.
            self.receive_inner, self.send_inner = _after_response, _send_after_response
        self.recorder.submit(self)


class TrafficRecorder:
    """Pure ASGI middleware recording every HTTP exchange to Kafka through a ``Recorder``."""

    def __init__(
        self, app: ASGIApp, *, recorder: Recorder | None = None, config: RecorderConfig | None = None
    ) -> None:
        self.app = app
        self.recorder = recorder or Recorder(config, recorder_name="asgi")
        self._enabled = self.recorder.config.enabled
        self._limit = self.recorder.policy.limit

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
        headers = list(scope["headers"])  # as received: inner layers may edit the scope's list
        start_ns, start_mono = time.time_ns(), time.monotonic_ns()
        exchange = _Exchange(
            "INBOUND",
            start_ns,
            start_mono,
            scope["method"],
            scope.get("scheme", "http"),
            raw_path.partition(b"?")[0],
            scope.get("query_string", b""),
            scope.get("http_version", "1.1"),
            headers,
            BodyCapture(self._limit),
            scope.get("client"),
            scope.get("server"),
        )
        exchange.recorder = self.recorder
        exchange.receive_inner = receive
        exchange.send_inner = send
        exchange.done = exchange.req_done = exchange.trailers_expected = False
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            exchange.finish(exc)
            raise
        exchange.finish(None)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        recorder = self.recorder

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                # Flush off the event loop, bounded by flush_timeout, before the app shuts down.
                await asyncio.get_running_loop().run_in_executor(None, recorder.close)
            return message

        return wrapped
