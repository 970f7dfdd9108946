"""The benchmark's apps as importable objects, for real servers: ``uvicorn bench.apps:asgi_recorded``.

The recorded variants read their recorder settings from the environment (TRAFFICREEL_*).
"""

from __future__ import annotations

from trafficreel.producers import RecorderConfig, TrafficRecorder, TrafficRecorderWSGI

from .producer import flask_app, starlette_app

asgi_bare = starlette_app()
asgi_recorded = TrafficRecorder(starlette_app(), config=RecorderConfig.from_env())
wsgi_bare = flask_app()
wsgi_recorded = TrafficRecorderWSGI(flask_app(), config=RecorderConfig.from_env())
