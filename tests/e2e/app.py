"""The recorded app of the end-to-end fault run: answers each item, reports its recorder's counts."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorder

recorder = Recorder(RecorderConfig.from_env(service_name="faultapp", exclude_paths=("/_stats",)))


async def item(request: Request) -> Response:
    body = json.loads(await request.body())
    n = int(request.path_params["n"])
    return JSONResponse({"n": n, "ok": body.get("n") == n})


async def stats(request: Request) -> Response:
    return JSONResponse(recorder.stats())


app = TrafficRecorder(
    Starlette(routes=[Route("/items/{n}", item, methods=["POST"]), Route("/_stats", stats)]),
    recorder=recorder,
)
