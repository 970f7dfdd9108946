"""Recorder under real servers (uvicorn, gunicorn): latency and throughput with recording off and on,
and peak memory of a recorded app whose broker is down."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from trafficreel.stack._processes import free_port, wait_for_port

from ._harness import Figure
from ._load import LoadResult, run_load

__all__ = ["memory_figures", "server_figures"]

ROOT = Path(__file__).resolve().parent.parent


def _request() -> bytes:
    from .producer import BODY, REQUEST_HEADERS  # the same exchange as the in-process figures

    head = b"".join(n + b": " + v + b"\r\n" for n, v in REQUEST_HEADERS)
    return b"POST /v1/orders/42?expand=items HTTP/1.1\r\n" + head + b"\r\n" + BODY


SERVERS = {
    "uvicorn": lambda app, port: [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.apps:asgi_{app}",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ],
    "gunicorn": lambda app, port: [
        sys.executable,
        "-m",
        "gunicorn",
        "-w",
        "1",
        "-k",
        "gthread",
        "--threads",
        "4",
        "-b",
        f"127.0.0.1:{port}",
        f"bench.apps:wsgi_{app}",
    ],
}


def _serve_and_load(server: str, app: str, env: dict[str, str], seconds: float) -> LoadResult:
    port = free_port()
    proc = subprocess.Popen(
        SERVERS[server](app, port), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if not wait_for_port("127.0.0.1", port, time.monotonic() + 30):
            raise RuntimeError(f"{server} did not start")
        run_load(port, _request(), connections=4, seconds=1)  # warm-up
        return run_load(port, _request(), connections=4, seconds=seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _delivered(directory: Path, kind: str) -> dict[str, Any]:
    """The recorded servers' own counters, summed over their processes (warm-up included)."""
    total: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for path in directory.glob("*.json"):
        stats = json.loads(path.read_text())[kind]
        total.update(recorded=stats["recorded"], delivered=stats["delivered"])
        dropped.update(stats["dropped"])
        path.unlink()
    return {**total, "dropped": dict(dropped)}


def server_figures(bootstrap: str, quick: bool) -> list[Figure]:
    seconds = 3 if quick else 8
    with tempfile.TemporaryDirectory() as stats_dir:
        env = {
            **os.environ,
            "TRAFFICREEL_KAFKA_BOOTSTRAP": bootstrap,
            "TRAFFICREEL_TOPIC_PREFIX": "bench",
            "TRAFFICREEL_SERVICE_NAME": "bench",
            "BENCH_RECORDER_STATS": stats_dir,
        }
        return _server_figures(env, seconds, 1 if quick else 2, Path(stats_dir))


def _server_figures(env: dict[str, str], seconds: float, rounds: int, stats_dir: Path) -> list[Figure]:
    figures = []
    for server, kind in (("uvicorn", "asgi"), ("gunicorn", "wsgi")):
        runs: dict[str, list[LoadResult]] = {"bare": [], "recorded": []}
        for _ in range(rounds):
            for app in ("bare", "recorded"):
                runs[app].append(_serve_and_load(server, app, env, seconds))
        delivered = _delivered(stats_dir, kind)
        for app, results in runs.items():
            detail = {
                "connections": 4,
                "seconds": seconds,
                "runs": len(results),
                "errors": sum(r.errors for r in results),
            }
            figures += [
                Figure(
                    f"servers.{server}_{app}_p50_ms",
                    statistics.median(r.p50_ms for r in results),
                    "ms",
                    detail=detail,
                ),
                Figure(
                    f"servers.{server}_{app}_p99_ms",
                    statistics.median(r.p99_ms for r in results),
                    "ms",
                    detail=detail,
                ),
                Figure(
                    f"servers.{server}_{app}_rps",
                    statistics.median(r.rps for r in results),
                    "req/s",
                    detail=detail,
                ),
            ]
        share = delivered["delivered"] / delivered["recorded"] if delivered["recorded"] else 0.0
        figures.append(Figure(f"servers.{server}_recorded_delivered_share", share, "", detail=delivered))
    return figures


_MEMORY_SCRIPT = """
import asyncio, json, resource, sys
sys.path.insert(0, {root!r})
from bench.producer import asgi_driver, starlette_app
from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorder
recorded = sys.argv[1] == "recorded"
app = starlette_app()
recorder = None
if recorded:
    recorder = Recorder(RecorderConfig(service_name="bench", kafka_bootstrap="127.0.0.1:{port}",
                                       queue_bytes={queue}, flush_timeout=0.5,
                                       kafka_config={{"message.timeout.ms": "600000"}}))
    app = TrafficRecorder(app, recorder=recorder)
asgi_driver(app, {n})()
stats = recorder.stats() if recorder else {{}}
print(json.dumps({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "stats": stats}}))
import os; os._exit(0)
"""


def memory_figures(quick: bool) -> list[Figure]:
    n = 20_000 if quick else 100_000
    queue = 16 * 1024 * 1024
    script = _MEMORY_SCRIPT.format(root=str(ROOT), port=free_port(), queue=queue, n=n)
    results: dict[str, Any] = {}
    for kind in ("bare", "recorded"):
        done = subprocess.run(
            [sys.executable, "-c", script, kind], capture_output=True, text=True, timeout=600, check=True
        )
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    bare_mb = results["bare"]["maxrss_kb"] / 1024
    rec_mb = results["recorded"]["maxrss_kb"] / 1024
    stats = results["recorded"]["stats"]
    return [
        Figure(
            "memory.broker_down_held_mb",
            stats["queue_bytes"] / 2**20,
            "MiB",
            target=queue / 2**20,
            lower_is_better=True,
            detail={
                "exchanges": n,
                "recorded": stats["recorded"],
                "dropped": stats["dropped"],
                "bound": "TRAFFICREEL_QUEUE_BYTES",
            },
        ),
        Figure(
            "memory.broker_down_peak_rss_mb",
            rec_mb,
            "MiB",
            detail={
                "bare_app_peak_rss_mb": round(bare_mb, 1),
                "note": "peak RSS of the whole process, same driver; compare with the bare app",
            },
        ),
    ]
