"""End-to-end latency: from a response sent by a recorded app to its row being queryable.

The whole pipeline on the embedded stack: a Starlette app behind ``TrafficRecorder`` (called
in-process, one request every millisecond, each to its own path ``/e2e/<n>``), a
``trafficreel stream`` worker and a ``trafficreel sink`` as child processes with their default
settings, ClickHouse polled every 100 ms. A request's latency is the time from the end of its
response (the middleware's last ``send`` returned) to the start of the first poll that saw its
row, so each figure is an upper bound, at most one poll interval above the true one.

- ``e2e_p50_ms``, ``e2e_p99_ms`` (target ≤ 2,000), ``e2e_max_ms``;
- ``e2e_rate``: the request rate reached (target of the driver: 1,000/s), and how many rows
  arrived of those sent.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import clickhouse_connect

from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorder
from trafficreel.stack import EmbeddedStack
from trafficreel.stack._processes import ChildProcess, free_port

from ._harness import Figure
from .producer import request_receive, request_scope, starlette_app

__all__ = ["e2e_figures"]

RATE = 1000.0
POLL_SECONDS = 0.1


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class _Poller(threading.Thread):
    """Records, for each path, the start of the first poll whose result held its row. Each poll
    asks only for rows past the highest offset seen per partition."""

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.seen: dict[bytes, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        highest: dict[int, int] = {}
        while not self.stop.is_set():
            began = time.time()
            known = " OR ".join(f"(kafka_partition = {p} AND kafka_offset > {o})" for p, o in highest.items())
            others = f"kafka_partition NOT IN ({', '.join(map(str, highest))})" if highest else "1"
            rows = self.client.query(
                f"SELECT path, kafka_partition, kafka_offset FROM exchanges WHERE {others}"  # noqa: S608
                + (f" OR {known}" if known else ""),
                query_formats={"String": "bytes"},
            ).result_rows
            for path, partition, offset in rows:
                self.seen.setdefault(path, began)
                highest[partition] = max(highest.get(partition, -1), offset)
            self.stop.wait(max(0.0, POLL_SECONDS - (time.time() - began)))


async def _drive(app: Any, seconds: float, sent: dict[bytes, float]) -> None:
    start = time.perf_counter()
    wall = time.time() - start
    total = int(seconds * RATE)
    for n in range(total):
        due = start + n / RATE
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        path = b"/e2e/%d" % n

        async def send(message: dict[str, Any], path: bytes = path) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                sent[path] = wall + time.perf_counter()

        await app(request_scope(path, b""), request_receive(), send)


def e2e_figures(quick: bool) -> list[Figure]:
    seconds = 10.0 if quick else 60.0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        stack = EmbeddedStack(data_dir=data, partitions=3, topic_prefix="e2e")
        stack.start()
        children: list[ChildProcess] = []
        recorder = None
        try:
            env = {**stack.env(), "TRAFFICREEL_LOG_FORMAT": "json"}
            ports = []
            for name in ("stream", "sink"):
                port = free_port()
                child = ChildProcess(
                    name,
                    [sys.executable, "-m", "trafficreel", name],
                    data / f"{name}.log",
                    {**env, "TRAFFICREEL_HEALTH_PORT": str(port)},
                )
                child.start()
                children.append(child)
                ports.append(port)
            for child, port in zip(children, ports, strict=True):
                child.wait_ready(lambda port=port: _ready(port), 120)  # type: ignore[misc]
            recorder = Recorder(
                RecorderConfig(service_name="e2e", kafka_bootstrap=stack.broker.bootstrap, topic_prefix="e2e")
            )
            app = TrafficRecorder(starlette_app_for_any_path(), recorder=recorder)
            host, _, port_text = stack.clickhouse.url.removeprefix("http://").partition(":")
            client = clickhouse_connect.get_client(host=host, port=int(port_text))
            sent: dict[bytes, float] = {}
            poller = _Poller(client)
            poller.start()
            began = time.perf_counter()
            asyncio.run(_drive(app, seconds, sent))
            elapsed = time.perf_counter() - began
            deadline = time.monotonic() + 60
            while len(poller.seen) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.2)
            poller.stop.set()
            poller.join(10)
        finally:
            if recorder is not None:
                recorder.close()
            for child in reversed(children):
                child.stop()
            stack.stop()
    latencies = sorted((poller.seen[p] - t) * 1000 for p, t in sent.items() if p in poller.seen)
    if not latencies:
        raise RuntimeError("no row reached ClickHouse; see the stream and sink logs")
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 100 else latencies[-1]
    detail = {
        "requests": len(sent),
        "rows_seen": len(latencies),
        "seconds": round(elapsed, 1),
        "poll_ms": POLL_SECONDS * 1000,
        "pipeline": "Starlette + TrafficRecorder (in-process) -> Tansu -> trafficreel stream -> "
        "trafficreel sink -> chDB, default settings",
    }
    return [
        Figure("sink.e2e_rate", len(sent) / elapsed, "req/s", detail=detail),
        Figure("sink.e2e_p50_ms", statistics.median(latencies), "ms", detail=detail),
        Figure("sink.e2e_p99_ms", p99, "ms", target=2000, lower_is_better=True, detail=detail),
        Figure("sink.e2e_max_ms", latencies[-1], "ms", detail=detail),
        Figure("sink.e2e_rows_missing", float(len(sent) - len(latencies)), "rows", detail=detail),
    ]


def starlette_app_for_any_path() -> Any:
    """The benchmark's order endpoint, answering on every path."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    order = starlette_app().routes[0].endpoint
    return Starlette(routes=[Route("/e2e/{n}", order, methods=["POST"])])
