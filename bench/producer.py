"""Recorder cost: time added on the request path, and all CPU per recorded exchange.

In-process Starlette (ASGI) and Flask (WSGI) apps answer a 1 KiB JSON POST with a 1 KiB JSON
response, about ten headers each way, driven directly (no server, no sockets), so the numbers are
the middleware's own cost. Measured in the same run, interleaved, medians over rounds:

- ``*_inline_us``: per exchange, recorded app minus bare app, with the recorder's background
  thread held back (what the request itself pays);
- ``*_total_us``: per exchange, process CPU of the recorded app minus the bare app, with the
  background thread encoding and producing to a real broker (the embedded Tansu) until every record
  is acknowledged; its detail splits the recorded app's CPU by thread (Linux; each part the
  median of its rounds): the request thread's (the app, the middleware, the garbage collections
  its allocations start, and its polling until the records are delivered), the recorder's
  thread's (build, redact, encode, produce) and librdkafka's threads';
- ``otel_*_us``: per exchange, OpenTelemetry's ASGI / WSGI middleware (SDK, span processor with a
  no-op exporter) minus the bare app, as the peer.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorder, TrafficRecorderWSGI
from trafficreel.stack import EmbeddedBroker
from trafficreel.topics import create_topics

from . import _servers
from ._harness import Figure, median_time

__all__ = ["run"]

BODY = json.dumps(
    {"items": [{"sku": f"SKU-{i:05d}", "qty": i, "note": "x" * 20} for i in range(18)]}
).encode()[:1024]
REQUEST_HEADERS = [
    (b"host", b"orders.shop.svc.cluster.local"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"x-request-id", b"5f1c0d6e-8b1a-4f8e-9d3c-2a1b0c9d8e7f"),
    (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
    (b"x-forwarded-for", b"203.0.113.7"),
]
RESPONSE_HEADERS = {
    "cache-control": "no-store",
    "x-request-id": "5f1c0d6e-8b1a-4f8e-9d3c-2a1b0c9d8e7f",
    "vary": "accept-encoding",
    "etag": '"abc123"',
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000",
    "server-timing": "db;dur=1.2",
    "x-version": "1.4.2",
}


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def order(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json", headers=RESPONSE_HEADERS)

    return Starlette(routes=[Route("/v1/orders/{id}", order, methods=["POST"])])


def flask_app() -> Any:
    from flask import Flask, Response, request

    app = Flask("bench")

    @app.post("/v1/orders/<int:order_id>")
    def order(order_id: int) -> Response:
        request.get_data()
        return Response(BODY, content_type="application/json", headers=RESPONSE_HEADERS)

    return app.wsgi_app


class _Discard:
    def put(self, item: object) -> None:
        pass


class _Held(Recorder):
    """A recorder that does all of submit() but hands records to nobody: the request path alone."""

    def _reset(self) -> None:
        super()._reset()
        self._queue = _Discard()  # type: ignore[assignment]

    def _start(self) -> None:
        self._thread = threading.current_thread()

    def close(self, timeout: float | None = None) -> None:
        pass


def _otel_provider() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    trace.set_tracer_provider(provider)
    return provider


# -- drivers ---------------------------------------------------------------------------------------


def request_scope(path: bytes = b"/v1/orders/42", query: bytes = b"expand=items") -> dict[str, Any]:
    """The ASGI scope of one benchmark request (the 1 KiB JSON POST with about ten headers)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": query,
        "headers": REQUEST_HEADERS,
        "client": ("10.1.2.3", 41234),
        "server": ("10.1.3.4", 8080),
        "root_path": "",
    }


def request_receive() -> Callable[[], Awaitable[dict[str, Any]]]:
    """``receive`` of one benchmark request: its body in one message, then a disconnect."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    return receive


def asgi_driver(app: Any, n: int) -> Callable[[], float]:
    """Returns a callable running n requests, giving µs of wall time per request."""
    loop = asyncio.new_event_loop()
    scope = request_scope()

    async def send(message: dict[str, Any]) -> None:
        pass

    async def many() -> None:
        for _ in range(n):
            await app(dict(scope), request_receive(), send)

    def go() -> float:
        start = time.perf_counter()
        loop.run_until_complete(many())
        return (time.perf_counter() - start) / n * 1e6

    return go


def _environ_template() -> dict[str, Any]:
    """The environ of one benchmark request, without its per-request streams."""
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/v1/orders/42",
        "QUERY_STRING": "expand=items",
        "SERVER_NAME": "orders",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.1.2.3",
        "REMOTE_PORT": "41234",
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
    }
    for name, value in REQUEST_HEADERS:
        if name not in (b"content-type", b"content-length"):
            environ["HTTP_" + name.decode().upper().replace("-", "_")] = value.decode()
    return environ


def wsgi_driver(app: Any, n: int) -> Callable[[], float]:
    """Returns a callable running n requests, giving µs of wall time per request.

    Each environ is made as a server makes it, per request, and dropped after it: holding
    prebuilt environs would keep every request's objects alive (frameworks hang their request
    objects on the environ) and bill the garbage collector's growing work to the app.
    """
    template = _environ_template()

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def go() -> float:
        start = time.perf_counter()
        for _ in range(n):
            environ = {**template, "wsgi.input": io.BytesIO(BODY), "wsgi.errors": io.StringIO()}
            result = app(environ, start_response)
            for _ in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return (time.perf_counter() - start) / n * 1e6

    return go


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each live thread of this process by native id, from the scheduler's
    nanosecond counts (Linux; empty elsewhere)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    cpu = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as stat:
                cpu[int(tid)] = int(stat.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # the thread ended
    return cpu


def _cpu_per_exchange(
    driver: Callable[[], float],
    recorder: Recorder | None,
    n: int,
    split: list[dict[str, float]] | None = None,
) -> float:
    """µs of process CPU per exchange; ``split`` gets, per call, the µs per exchange of the
    request thread, the recorder's thread and the other threads (librdkafka's)."""
    before = _thread_cpu()
    start = time.process_time()
    driver()
    if recorder is not None:
        recorder.wait_settled(120, poll=0.001)
    total = (time.process_time() - start) / n * 1e6
    if split is not None and before:
        after = _thread_cpu()
        used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
        request = used.pop(threading.get_native_id(), 0.0)
        thread = recorder._thread if recorder is not None else None
        background = used.pop(thread.native_id, 0.0) if thread is not None and thread.native_id else 0.0
        split.append(
            {
                "request_thread_us": request / n * 1e6,
                "recorder_thread_us": background / n * 1e6,
                "other_threads_us": sum(used.values()) / n * 1e6,
            }
        )
    return total


def _median_split(split: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(s[name] for s in split), 1) for name in split[0]} if split else {}


def run(quick: bool) -> list[Figure]:
    n = 2_000 if quick else 10_000
    rounds = 3 if quick else 7
    provider = _otel_provider()
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGI
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGI

    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(Path(tmp))
        broker.start()
        try:
            create_topics({"bootstrap.servers": broker.bootstrap}, ["bench.raw"], partitions=3)
            config = RecorderConfig(
                service_name="bench",
                kafka_bootstrap=broker.bootstrap,
                topic_prefix="bench",
                queue_bytes=1 << 30,
                flush_timeout=30,
            )
            held_asgi, live_asgi = _Held(config), Recorder(config)
            held_wsgi, live_wsgi = _Held(config, recorder_name="wsgi"), Recorder(config, recorder_name="wsgi")
            asgi = {
                "bare": asgi_driver(starlette_app(), n),
                "inline": asgi_driver(TrafficRecorder(starlette_app(), recorder=held_asgi), n),
                "otel": asgi_driver(OtelASGI(starlette_app()), n),
            }
            wsgi = {
                "bare": wsgi_driver(flask_app(), n),
                "inline": wsgi_driver(TrafficRecorderWSGI(flask_app(), recorder=held_wsgi), n),
                "otel": wsgi_driver(OtelWSGI(flask_app()), n),
            }
            live_asgi_driver = asgi_driver(TrafficRecorder(starlette_app(), recorder=live_asgi), n)
            live_wsgi_driver = wsgi_driver(TrafficRecorderWSGI(flask_app(), recorder=live_wsgi), n)
            wall_asgi = median_time(asgi, rounds)
            wall_wsgi = median_time(wsgi, rounds)
            splits: dict[str, list[dict[str, float]]] = {"asgi": [], "wsgi": []}
            cpu = median_time(
                {
                    "asgi_bare": lambda: _cpu_per_exchange(asgi["bare"], None, n),
                    "asgi_live": lambda: _cpu_per_exchange(live_asgi_driver, live_asgi, n, splits["asgi"]),
                    "wsgi_bare": lambda: _cpu_per_exchange(wsgi["bare"], None, n),
                    "wsgi_live": lambda: _cpu_per_exchange(live_wsgi_driver, live_wsgi, n, splits["wsgi"]),
                },
                rounds,
            )
            delivered = live_asgi.stats()["delivered"] + live_wsgi.stats()["delivered"]
            dropped = sum(live_asgi.stats()["dropped"].values()) + sum(live_wsgi.stats()["dropped"].values())
            live_asgi.close()
            live_wsgi.close()
            server_results = _servers.server_figures(broker.bootstrap, quick)
        finally:
            broker.stop()
            provider.shutdown()
    memory = _servers.memory_figures(quick)
    common = {"exchanges_per_round": n, "rounds": rounds}
    return [
        *server_results,
        *memory,
        *(
            figure
            for kind, wall in (("asgi", wall_asgi), ("wsgi", wall_wsgi))
            for figure in (
                Figure(f"producer.{kind}_bare_us", wall["bare"], "us", detail=common),
                Figure(
                    f"producer.{kind}_inline_us",
                    wall["inline"] - wall["bare"],
                    "us",
                    target=8,
                    lower_is_better=True,
                    detail=common,
                ),
                Figure(
                    f"producer.{kind}_total_us",
                    cpu[f"{kind}_live"] - cpu[f"{kind}_bare"],
                    "us",
                    target=25,
                    lower_is_better=True,
                    detail={
                        **common,
                        "bare_cpu_us": round(cpu[f"{kind}_bare"], 2),
                        **_median_split(splits[kind][1:]),  # the first round is the warm-up
                    },
                ),
                Figure(f"producer.otel_{kind}_us", wall["otel"] - wall["bare"], "us", detail=common),
            )
        ),
        Figure("producer.records_delivered", delivered, "records", detail={"dropped": dropped}),
    ]
