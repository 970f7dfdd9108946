"""WSGI middleware: unchanged responses, exact wsgi.input semantics, close() always called, records exact."""

from __future__ import annotations

import gc
import io
import re
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from tests.producers.support import CapturingRecorder, raw_request, without_date
from tests.producers.wsgi_app import BIG, make_app
from trafficreel.producers import MARKER, TrafficRecorderWSGI


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(app: Any) -> tuple[Any, int]:
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_port


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int, CapturingRecorder]]:
    recorder = CapturingRecorder()
    flask = make_app()
    flask.wsgi_app = TrafficRecorderWSGI(flask.wsgi_app, recorder=recorder)  # type: ignore[method-assign]
    bare_server, bare = _serve(make_app())
    recorded_server, recorded = _serve(flask)
    yield bare, recorded, recorder
    for server in (bare_server, recorded_server):
        server.shutdown()
        server.server_close()


REQUESTS = {
    "post-json": b"POST /echo?x=%20y&api_key=k1 HTTP/1.0\r\nHost: orders:80\r\nContent-Type: application/json\r\n"
    b'Content-Length: 8\r\nAuthorization: Basic dTpw\r\n\r\n{"a": 1}',
    "readlines": b"POST /lines HTTP/1.0\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nab\ncd\nef\ngh\n",
    "stream": b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n",
    "download": b"GET /download HTTP/1.0\r\nHost: x\r\n\r\n",
    "file": b"GET /file HTTP/1.0\r\nHost: x\r\n\r\n",
    "raises": b"GET /boom HTTP/1.0\r\nHost: x\r\n\r\n",
    "no-content": b"GET /empty HTTP/1.0\r\nHost: x\r\n\r\n",
    "head": b"HEAD /echo HTTP/1.0\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("shape", sorted(REQUESTS))
def test_responses_are_byte_identical(servers: Any, shape: str) -> None:
    """Every request shape gets the same response bytes (Date aside) with and without the middleware."""
    bare, recorded, _ = servers
    assert without_date(raw_request(recorded, REQUESTS[shape])) == without_date(
        raw_request(bare, REQUESTS[shape])
    )


def _record_for(servers: Any, shape: str) -> dict[str, Any]:
    _, port, recorder = servers
    before = len(recorder.records)
    raw_request(port, REQUESTS[shape])
    return dict(recorder.wait(before + 1)[before])


def test_request_and_response_are_recorded(servers: Any) -> None:
    """Method, Host, raw query (redacted), headers, kept bodies and status are in the record."""
    record = _record_for(servers, "post-json")
    req, resp = record["request"], record["response"]
    assert (req["method"], req["host"], req["path"], req["http_version"]) == (
        "POST",
        "orders:80",
        b"/echo",
        "1.0",
    )
    assert req["query"] == b"x=%20y&api_key=" + MARKER
    assert {"name": b"authorization", "value": b"Basic " + MARKER} in req["headers"]
    assert (req["body"]["state"], req["body"]["data"]) == ("COMPLETE", b'{"a": 1}')
    assert (resp["status"], resp["body"]["data"]) == (200, b'{"a": 1}')
    assert {"name": b"set-cookie", "value": b"sid=" + MARKER + b"; Path=/"} in resp["headers"]
    assert record["outcome"]["kind"] == "COMPLETED"


def test_bodies_and_outcomes(servers: Any) -> None:
    """readline/readlines are teed; binary and file responses keep size only; a handled error is a 500."""
    lines = _record_for(servers, "readlines")
    assert lines["request"]["body"]["data"] == b"ab\ncd\nef\ngh\n"
    assert lines["response"]["body"]["data"] == b"3 3"
    download = _record_for(servers, "download")["response"]["body"]
    assert (download["state"], download["size"]) == ("NOT_KEPT", len(BIG))
    file = _record_for(servers, "file")["response"]["body"]  # the server's file path: size, no digest
    assert (file["state"], file["size"], file["sha256"]) == ("NOT_KEPT", len(BIG), None)
    stream = _record_for(servers, "stream")
    assert stream["response"]["body"]["data"] == b"line 0\nline 1\nline 2\n"
    assert stream["duration_us"] >= 200_000
    handled = _record_for(servers, "raises")  # Flask turns the exception into a 500 itself
    assert (handled["outcome"]["kind"], handled["response"]["status"]) == ("COMPLETED", 500)
    assert _record_for(servers, "no-content")["response"]["status"] == 204


class _Input(io.BytesIO):
    pass


def _environ(body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/p",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "h",
        "wsgi.input": _Input(body),
    }


def test_wsgi_input_semantics_are_exact() -> None:
    """read(n), readline(), readline(n), iteration and read() return exactly what the server's input does."""
    body = b"first line\nsecond\nthird line is longer\nlast"
    seen: list[Any] = []

    def app(environ: Any, start_response: Any) -> Any:
        stream = environ["wsgi.input"]
        seen.extend(
            [
                stream.read(3),
                stream.readline(),
                stream.readline(4),
                stream.readline(),
                list(stream),
                stream.read(),
            ]
        )
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    expected_stream = io.BytesIO(body)
    expected = [
        expected_stream.read(3),
        expected_stream.readline(),
        expected_stream.readline(4),
        expected_stream.readline(),
        list(expected_stream),
        expected_stream.read(),
    ]
    recorder = CapturingRecorder()
    result = TrafficRecorderWSGI(app, recorder=recorder)(_environ(body), lambda s, h, e=None: None)
    assert list(result) == [b"ok"]
    result.close()  # type: ignore[attr-defined]
    assert seen == expected
    assert recorder.records[0]["request"]["body"]["data"] == body


def _closable_response(
    chunks: Callable[[], Iterator[bytes]],
) -> tuple[Any, list[bool], CapturingRecorder]:
    """The recorded response of an app whose iterable yields ``chunks()`` and notes each close()."""
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            return chunks()

        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    recorder = CapturingRecorder()
    result = TrafficRecorderWSGI(app, recorder=recorder)(_environ(b""), lambda s, h, e=None: None)
    return result, closed, recorder


def test_close_is_always_called_and_early_close_is_a_disconnect() -> None:
    """The app iterable's close() runs even when the server stops early; that exchange is DISCONNECTED."""

    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    result, closed, recorder = _closable_response(chunks)
    iterator = iter(result)
    assert next(iterator) == b"a"
    result.close()  # type: ignore[attr-defined]
    assert closed == [True]
    (record,) = recorder.records
    assert (record["outcome"]["kind"], record["response"]["body"]["state"]) == ("DISCONNECTED", "ABORTED")


def test_an_exception_mid_body_propagates_and_close_still_reaches_the_app() -> None:
    """An iterable that raises after its first chunk: the exception reaches the server unchanged,
    the server's close() still reaches the app's iterable, and the record (RAISED, body cut short)
    is made once, not again at close()."""

    def chunks() -> Iterator[bytes]:
        yield b"a"
        raise ValueError("broken stream")

    result, closed, recorder = _closable_response(chunks)
    iterator = iter(result)
    assert next(iterator) == b"a"
    with pytest.raises(ValueError, match="broken stream"):
        next(iterator)
    result.close()  # type: ignore[attr-defined]
    assert closed == [True]
    (record,) = recorder.records
    assert (
        record["outcome"]["kind"],
        record["outcome"]["exception_type"],
        record["response"]["body"]["state"],
    ) == ("RAISED", "builtins.ValueError", "ABORTED")


def test_an_app_returning_no_iterable_fails_as_it_would_without_the_middleware() -> None:
    """An app that returns None: iterating its response raises TypeError, as iterating None
    does, so the server answers with its error page; the record is RAISED, not a clean 200."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return None

    recorder = CapturingRecorder()
    result = TrafficRecorderWSGI(app, recorder=recorder)(_environ(b""), lambda s, h, e=None: None)
    with pytest.raises(TypeError):
        list(result)
    result.close()  # type: ignore[attr-defined]
    (record,) = recorder.records
    assert (record["outcome"]["kind"], record["outcome"]["exception_type"]) == (
        "RAISED",
        "builtins.TypeError",
    )


class _KeepingRecorder(CapturingRecorder):
    """Keeps what is submitted, as a backlogged queue does."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[Any] = []

    def submit(self, exchange: Any) -> None:
        self.queued.append(exchange)


def test_a_queued_record_does_not_keep_the_servers_request_objects_alive() -> None:
    """Once the response is closed, what waits in the queue holds neither the server's
    start_response (its request handler, its live environ) nor the app's response iterable."""

    class Handler:  # what a server's start_response is bound to
        def start_response(self, status: str, headers: Any, exc_info: Any = None) -> None:
            return None

    class Body(list[bytes]):
        pass

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body([b"ok"])

    recorder = _KeepingRecorder()
    handler = Handler()
    result = TrafficRecorderWSGI(app, recorder=recorder)(_environ(b""), handler.start_response)
    body = weakref.ref(result.iterable)  # type: ignore[attr-defined]
    assert list(result) == [b"ok"]
    result.close()  # type: ignore[attr-defined]
    server = weakref.ref(handler)
    del handler, result
    gc.collect()
    assert (len(recorder.queued), server(), body()) == (1, None, None)
    record = recorder.queued[0].build(recorder)
    assert (record["response"]["status"], record["response"]["body"]["data"]) == (200, b"ok")


def test_exception_before_start_response_propagates() -> None:
    """An app that raises before start_response is recorded as RAISED and the exception reaches the server."""

    def app(environ: Any, start_response: Any) -> Any:
        raise KeyError("missing")

    recorder = CapturingRecorder()
    with pytest.raises(KeyError, match="missing"):
        TrafficRecorderWSGI(app, recorder=recorder)(_environ(b""), lambda s, h, e=None: None)
    (record,) = recorder.records
    assert (
        record["outcome"]["kind"],
        record["outcome"]["response_started"],
        record["response"]["status"],
    ) == ("RAISED", False, None)


def test_file_wrapper_response_is_handed_back_unchanged() -> None:
    """A wsgi.file_wrapper response is the very object the app returned (sendfile path kept); closing records it."""
    from wsgiref.util import FileWrapper

    returned: list[Any] = []

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "6")])
        wrapper = environ["wsgi.file_wrapper"](io.BytesIO(b"abcdef"))
        returned.append(wrapper)
        return wrapper

    recorder = CapturingRecorder()
    environ = _environ(b"") | {"wsgi.file_wrapper": FileWrapper, "REQUEST_METHOD": "GET"}
    result = TrafficRecorderWSGI(app, recorder=recorder)(environ, lambda s, h, e=None: None)
    assert result is returned[0]
    assert recorder.records == []  # finished when the server closes it
    result.close()  # type: ignore[attr-defined]
    (record,) = recorder.records
    assert (record["response"]["body"]["size"], record["response"]["body"]["state"]) == (6, "NOT_KEPT")


@pytest.mark.parametrize("length", ["6", None])
def test_a_file_response_of_a_kept_type_is_not_claimed_complete(length: str | None) -> None:
    """A text file sent by the server's file path never passed the recorder: NOT_KEPT, no bytes,
    no digest (not an empty COMPLETE body), with or without a Content-Length."""
    from wsgiref.util import FileWrapper

    def app(environ: Any, start_response: Any) -> Any:
        headers = [("Content-Type", "text/css")] + ([("Content-Length", length)] if length else [])
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](io.BytesIO(b"a{b:c}"))

    recorder = CapturingRecorder()
    environ = _environ(b"") | {"wsgi.file_wrapper": FileWrapper, "REQUEST_METHOD": "GET"}
    TrafficRecorderWSGI(app, recorder=recorder)(environ, lambda s, h, e=None: None).close()  # type: ignore[attr-defined]
    body = recorder.records[0]["response"]["body"]
    assert (body["state"], body["data"], body["sha256"]) == ("NOT_KEPT", None, None)
    assert body["size"] == (6 if length else 0)


def test_a_plain_wsgi_app_is_byte_identical_under_wsgiref() -> None:
    """wsgiref (Django's runserver) sets Content-Length from len() of a one-chunk list: the
    recorded app's response keeps it (and every other byte)."""

    def plain(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello world"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    responses = []
    for app in (plain, TrafficRecorderWSGI(plain, recorder=CapturingRecorder())):
        server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
        thread = threading.Thread(target=server.handle_request)
        thread.start()
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        thread.join(5)
        server.server_close()
        responses.append(re.sub(rb"Date: [^\r]*\r\n", b"", data))
    assert b"Content-Length: 11" in responses[0]
    assert responses[1] == responses[0]


def _serve_once(app: Any, environ: dict[str, Any]) -> None:
    """What a server does with one request: call, iterate, close."""
    result = app(environ, lambda s, h, e=None: None)
    for _ in result:
        pass
    result.close()


class _GunicornLikeBody:
    """gunicorn's request body: an iterator with read/readline/readlines, and no readinto."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int | None = None) -> bytes:
        return self._data.read(size)

    def readline(self, size: int | None = None) -> bytes:
        return self._data.readline(size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return self._data.readlines(hint)

    def __iter__(self) -> _GunicornLikeBody:
        return self

    def __next__(self) -> bytes:
        line = self._data.readline()
        if not line:
            raise StopIteration
        return line


def test_the_input_wrapper_offers_what_the_servers_input_offers() -> None:
    """No readinto/read1 where the server's stream has none (frameworks probe for them), and
    next() works where it works on the stream."""
    seen: dict[str, Any] = {}

    def app(environ: Any, start_response: Any) -> Any:
        stream = environ["wsgi.input"]
        seen["readinto"], seen["read1"] = hasattr(stream, "readinto"), hasattr(stream, "read1")
        seen["lines"] = [next(stream), *stream]
        start_response("204 No Content", [])
        return []

    recorder = CapturingRecorder()
    environ = _environ(b"a\nb\nc") | {"wsgi.input": _GunicornLikeBody(b"a\nb\nc")}
    _serve_once(TrafficRecorderWSGI(app, recorder=recorder), environ)
    assert seen == {"readinto": False, "read1": False, "lines": [b"a\n", b"b\n", b"c"]}
    assert recorder.records[0]["request"]["body"]["data"] == b"a\nb\nc"
    _serve_once(TrafficRecorderWSGI(app, recorder=recorder), _environ(b"x\ny"))
    assert (seen["readinto"], seen["read1"]) == (True, True)  # BytesIO has both


def test_the_remote_address_is_kept_without_a_remote_port() -> None:
    """wsgiref and Django's runserver give REMOTE_ADDR but no REMOTE_PORT."""

    def app(environ: Any, start_response: Any) -> Any:
        start_response("204 No Content", [])
        return []

    recorder = CapturingRecorder()
    _serve_once(TrafficRecorderWSGI(app, recorder=recorder), _environ(b"") | {"REMOTE_ADDR": "10.0.0.7"})
    peer = recorder.records[0]["peer"]
    assert (peer["remote_address"], peer["remote_port"]) == ("10.0.0.7", None)


def test_gunicorn_responses_are_byte_identical(infra: Any) -> None:
    """Under gunicorn the recorded Flask app answers every request shape byte for byte like the bare one."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from trafficreel.stack._processes import free_port, wait_for_port

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICREEL_")}
    env |= {"TRAFFICREEL_KAFKA_BOOTSTRAP": infra.bootstrap, "TRAFFICREEL_TOPIC_PREFIX": "gunicorn-identical"}
    procs, ports = [], []
    try:
        for app in ("bare", "recorded"):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        "-w",
                        "1",
                        "-b",
                        f"127.0.0.1:{port}",
                        f"tests.producers.wsgi_app:{app}",
                    ],
                    cwd=root,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        for port in ports:
            assert wait_for_port("127.0.0.1", port, time.monotonic() + 30)
        for shape, request in sorted(REQUESTS.items()):
            bare, recorded = (without_date(raw_request(port, request)) for port in ports)
            assert recorded == bare, shape
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def test_request_headers_are_rebuilt_from_the_environ() -> None:
    """HTTP_* keys become lowercase dashed names (an empty value kept); CONTENT_TYPE and
    CONTENT_LENGTH count only when set, as servers put them in every environ; the rest is not a
    header. The same environ gives the same headers again (names are remembered per key)."""
    from trafficreel.producers._wsgi import environ_headers

    environ = {
        "REQUEST_METHOD": "POST",
        "HTTP_X_REQUEST_ID": "abc",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "",
        "HTTP_X_EMPTY": "",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "orders",
    }
    expected = [
        (b"x-request-id", b"abc"),
        (b"content-type", b"application/json"),
        (b"x-empty", b""),
        (b"accept-encoding", b"gzip"),
    ]
    assert environ_headers(environ) == expected
    assert environ_headers(environ) == expected
    assert environ_headers({**environ, "CONTENT_LENGTH": "2"})[2] == (b"content-length", b"2")
