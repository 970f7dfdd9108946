"""Framework and server integrations: Django (WSGI and ASGI), FastAPI, hypercorn."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.producers.support import CapturingRecorder, raw_request, serving, starlette_app, without_date
from tests.producers.test_wsgi import _serve
from trafficreel.producers import TrafficRecorder, TrafficRecorderWSGI
from trafficreel.stack._processes import free_port, wait_for_port

POST = (
    b"POST /orders/7?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\n{}"
)


def _compare(
    bare_port: int, recorded_port: int, recorder: CapturingRecorder, request: bytes
) -> dict[str, Any]:
    assert without_date(raw_request(recorded_port, request)) == without_date(raw_request(bare_port, request))
    return dict(recorder.wait(1)[-1])


def test_django_wsgi_py_wrapping() -> None:
    """wsgi.py: application = TrafficRecorderWSGI(get_wsgi_application()); responses unchanged, recorded."""
    from django.core.wsgi import get_wsgi_application

    import tests.producers.django_app  # noqa: F401 - configures Django

    recorder = CapturingRecorder()
    bare_server, bare = _serve(get_wsgi_application())
    rec_server, rec = _serve(TrafficRecorderWSGI(get_wsgi_application(), recorder=recorder))
    try:
        record = _compare(bare, rec, recorder, POST)
    finally:
        for server in (bare_server, rec_server):
            server.shutdown()
            server.server_close()
    assert (record["request"]["path"], record["request"]["query"], record["response"]["status"]) == (
        b"/orders/7",
        b"x=1",
        200,
    )
    assert record["response"]["body"]["data"] == b'{"id": 7, "got": 2}'


def test_django_asgi_py_wrapping() -> None:
    """asgi.py: application = TrafficRecorder(get_asgi_application()) under uvicorn."""
    from django.core.asgi import get_asgi_application

    import tests.producers.django_app  # noqa: F401

    recorder = CapturingRecorder()
    with (
        serving(get_asgi_application()) as bare,
        serving(TrafficRecorder(get_asgi_application(), recorder=recorder)) as rec,
    ):
        record = _compare(bare, rec, recorder, POST)
    assert record["request"]["body"]["data"] == b"{}"
    assert {"name": b"X-Order", "value": b"7"} in record["response"]["headers"]  # case as Django sent it


def test_fastapi_add_middleware() -> None:
    """FastAPI: app.add_middleware(TrafficRecorder, recorder=...) records with routes unchanged."""
    from fastapi import FastAPI

    recorder = CapturingRecorder()

    def make() -> FastAPI:
        app = FastAPI()

        @app.post("/orders/{order_id}")
        async def order(order_id: int, body: dict[str, Any]) -> dict[str, Any]:
            return {"id": order_id, "body": body}

        return app

    recorded_app = make()
    recorded_app.add_middleware(TrafficRecorder, recorder=recorder)
    with serving(make()) as bare, serving(recorded_app) as rec:
        record = _compare(bare, rec, recorder, POST)
    assert record["response"]["body"]["data"] == b'{"id":7,"body":{}}'


@pytest.fixture
def hypercorn_pair() -> Iterator[tuple[int, int, CapturingRecorder]]:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    recorder = CapturingRecorder()
    stop = asyncio.Event()
    ports = (free_port(), free_port())

    def run() -> None:
        async def main() -> None:
            nonlocal stop
            stop = asyncio.Event()
            servers = []
            for port, app in zip(
                ports, (starlette_app(), TrafficRecorder(starlette_app(), recorder=recorder)), strict=True
            ):
                config = Config()
                config.bind = [f"127.0.0.1:{port}"]
                config.accesslog = config.errorlog = None
                servers.append(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
            await asyncio.gather(*servers)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for port in ports:
        assert wait_for_port("127.0.0.1", port, time.monotonic() + 20)
    yield ports[0], ports[1], recorder
    loop_stop = stop
    loop_stop.set()  # best effort: the thread is a daemon and ends with the test process


def test_hypercorn(hypercorn_pair: tuple[int, int, CapturingRecorder]) -> None:
    """Under hypercorn the recorded app answers byte for byte like the bare one, and is recorded."""
    bare, rec, recorder = hypercorn_pair
    request = (
        b"POST /echo/h?q=1 HTTP/1.1\r\nHost: hc\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello"
    )
    record = _compare(bare, rec, recorder, request)
    assert (record["request"]["body"]["data"], record["response"]["body"]["data"]) == (b"hello", b"hello")
    assert record["request"]["host"] == "hc"
