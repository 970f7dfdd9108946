"""A Flask app for the WSGI tests, bare and recorded (``wsgi_app:bare`` / ``wsgi_app:recorded``).

Under gunicorn the recorded app sends to the broker named by TRAFFICREEL_KAFKA_BOOTSTRAP. With
TRAFFICREEL_TEST_PREWARM=1 the recorder sends one record at import, so that a ``--preload``
master owns a live producer thread before it forks its workers.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

from flask import Flask, Response, request, send_file

from trafficreel.producers import PendingExchange, Recorder, RecorderConfig, TrafficRecorderWSGI

BIG = bytes(range(256)) * 4096


def make_app() -> Flask:
    app = Flask(__name__)

    @app.route("/echo", methods=["POST", "GET", "HEAD"])
    def echo() -> Response:
        return Response(
            request.get_data(),
            content_type=request.content_type or "text/plain",
            headers={"Set-Cookie": "sid=abc; Path=/"},
        )

    @app.route("/lines", methods=["POST"])
    def lines() -> Response:
        stream = request.stream  # the server's wsgi.input, limited to Content-Length by Werkzeug
        first = stream.readline()
        rest = stream.readlines()
        return Response(f"{len(first)} {len(rest)}", content_type="text/plain")

    @app.route("/stream")
    def stream() -> Response:
        def gen() -> Any:
            for i in range(3):
                yield f"line {i}\n".encode()
                time.sleep(0.1)

        return Response(gen(), content_type="text/plain")

    @app.route("/download")
    def download() -> Response:
        return Response(BIG, content_type="application/octet-stream")

    @app.route("/file")
    def file() -> Response:
        return send_file(io.BytesIO(BIG), mimetype="application/octet-stream")

    @app.route("/boom")
    def boom() -> Response:
        raise RuntimeError("handler failed")

    @app.route("/empty")
    def empty() -> Response:
        return Response(status=204)

    @app.route("/pid")
    def pid() -> Response:  # which worker process answered (pre-fork server tests)
        return Response(str(os.getpid()), content_type="text/plain")

    @app.route("/metrics")
    def metrics() -> Response:  # every worker's, in prometheus_client's multi-process mode
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app


bare = make_app()
_flask = make_app()
_flask.wsgi_app = TrafficRecorderWSGI(_flask.wsgi_app, config=RecorderConfig.from_env())  # type: ignore[method-assign]
recorded = _flask

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    from trafficreel.producers.metrics import register

    register(_flask.wsgi_app.recorder)  # type: ignore[attr-defined]

if os.environ.get("TRAFFICREEL_TEST_PREWARM") == "1":
    from trafficreel.producers._body import BodyCapture

    _recorder: Recorder = _flask.wsgi_app.recorder  # type: ignore[attr-defined]
    _now = time.time_ns()
    _recorder.submit(
        PendingExchange(
            direction="INBOUND",
            start_ns=_now,
            start_mono=time.monotonic_ns(),
            method="GET",
            scheme="http",
            path=b"/prewarm",
            query=b"",
            http_version="1.1",
            req_headers=[(b"host", b"master")],
            req_body=BodyCapture(0),
        )
    )
