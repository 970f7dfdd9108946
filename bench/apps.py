"""The benchmark's apps as importable objects, for real servers: ``uvicorn bench.apps:asgi_recorded``.

The recorded variants read their recorder settings from the environment (TRAFFICREEL_*). With
``BENCH_RECORDER_STATS`` set to a directory, each server process writes its recorders' final
counters there when it exits (``<pid>.json``), so a run can say how much of its traffic was
actually delivered rather than dropped.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

from trafficreel.producers import RecorderConfig, TrafficRecorder, TrafficRecorderWSGI

from .producer import flask_app, starlette_app

asgi_bare = starlette_app()
asgi_recorded = TrafficRecorder(starlette_app(), config=RecorderConfig.from_env())
wsgi_bare = flask_app()
wsgi_recorded = TrafficRecorderWSGI(flask_app(), config=RecorderConfig.from_env())

# Counted by bench runs (``BENCH_RECORDER_STATS``); taken before the ASGI app is wrapped below.
_RECORDERS = {"asgi": asgi_recorded.recorder, "wsgi": wsgi_recorded.recorder}


def _write_stats() -> None:
    stats = {}
    for name, recorder in _RECORDERS.items():
        recorder.close()  # what is still queued is delivered or counted as dropped
        stats[name] = recorder.stats()
    Path(os.environ["BENCH_RECORDER_STATS"], f"{os.getpid()}.json").write_text(json.dumps(stats))


class _StatsAtShutdown:
    """Writes the counters once the app has shut down: uvicorn ends by re-raising SIGTERM, so
    no ``atexit`` handler runs there. HTTP requests pass straight through."""

    def __init__(self, app: TrafficRecorder) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def on_send(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                _write_stats()
            await send(message)

        return await self.app(scope, receive, on_send)


if os.environ.get("BENCH_RECORDER_STATS"):
    asgi_recorded = _StatsAtShutdown(asgi_recorded)  # type: ignore[assignment]
    atexit.register(_write_stats)  # gunicorn's workers exit normally
