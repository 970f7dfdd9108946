"""ASGI middleware under a real server (uvicorn): responses unchanged byte for byte, records exact."""

from __future__ import annotations

import contextlib
import gzip
import socket
import time
from typing import Any

import pytest

from tests.producers.support import (
    BIG,
    GZIPPED,
    CapturingRecorder,
    raw_request,
    serving,
    starlette_app,
    without_date,
)
from trafficreel.producers import MARKER, TrafficRecorder

REQUESTS: dict[str, bytes] = {
    "json-post": b"POST /echo/a%2Fb/c?x=%20y&x=2&token=t0p HTTP/1.1\r\nHost: orders.example:8080\r\n"
    b"Content-Type: application/json\r\nContent-Length: 13\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
    b'Authorization: Bearer s3cret\r\nConnection: close\r\n\r\n{"a": [1, 2]}',
    "chunked-upload": b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "get-latin1-header": b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n",
    "head": b"HEAD /echo/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "no-content": b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "not-modified": b'GET /cached HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\nConnection: close\r\n\r\n',
    "sse": b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
    "download": b"GET /download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "gzip": b"GET /gzip HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    "raises": b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "raises-midway": b"GET /boom-midway HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "not-found": b"DELETE /nowhere?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "expect-continue": b"POST /echo/e HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n"
    b"Expect: 100-continue\r\nConnection: close\r\n\r\nping",
}


@pytest.fixture(scope="module")
def servers() -> Any:
    recorder = CapturingRecorder()
    with (
        serving(starlette_app()) as bare,
        serving(TrafficRecorder(starlette_app(), recorder=recorder)) as recorded,
    ):
        yield bare, recorded, recorder


@pytest.mark.parametrize("shape", sorted(REQUESTS))
def test_responses_are_byte_identical(servers: Any, shape: str) -> None:
    """Every request shape gets the same response bytes (Date aside) with and without the middleware."""
    bare, recorded, _ = servers
    request = REQUESTS[shape]
    assert without_date(raw_request(recorded, request)) == without_date(raw_request(bare, request))


def _record_for(servers: Any, request: bytes) -> dict[str, Any]:
    _, port, recorder = servers
    before = len(recorder.records)
    raw_request(port, request)
    return dict(recorder.wait(before + 1)[before])


def test_request_is_recorded_as_sent(servers: Any) -> None:
    """Raw path and query bytes, Host, header order and duplicates, body and redactions are exact."""
    record = _record_for(servers, REQUESTS["json-post"])
    req = record["request"]
    assert (req["method"], req["host"], req["path"]) == ("POST", "orders.example:8080", b"/echo/a%2Fb/c")
    assert req["query"] == b"x=%20y&x=2&token=" + MARKER
    names = [h["name"] for h in req["headers"]]
    assert names == [
        b"host",
        b"content-type",
        b"content-length",
        b"x-dup",
        b"x-dup",
        b"authorization",
        b"connection",
    ]
    assert [h["value"] for h in req["headers"] if h["name"] == b"x-dup"] == [b"1", b"2"]
    assert {"name": b"authorization", "value": b"Bearer " + MARKER} in req["headers"]
    assert (req["body"]["state"], req["body"]["data"], req["body"]["declared_length"]) == (
        "COMPLETE",
        b'{"a": [1, 2]}',
        13,
    )
    resp = record["response"]
    assert resp["status"] == 200
    assert resp["body"]["data"] == b'{"a": [1, 2]}'
    assert {"name": b"set-cookie", "value": b"sid=" + MARKER + b"; Path=/"} in resp["headers"]
    assert record["outcome"]["kind"] == "COMPLETED"
    assert record["peer"]["remote_address"] == "127.0.0.1"
    assert {r["location"] for r in record["redactions"]} == {
        "request.header:authorization",
        "request.query:token",
        "response.header:set-cookie",
    }
    assert record["direction"] == "INBOUND"
    assert abs(record["start_time"] / 1e6 - time.time()) < 30
    assert b"s3cret" not in repr(record).encode() and b"t0p" not in repr(record).encode()


def test_bodies_by_kind(servers: Any) -> None:
    """Binary downloads keep size and digest only; gzip stays raw with its encoding; SSE is kept as sent."""
    import hashlib

    download = _record_for(servers, REQUESTS["download"])["response"]["body"]
    assert (download["state"], download["size"], download["data"]) == ("NOT_KEPT", len(BIG), None)
    assert download["sha256"] == hashlib.sha256(BIG).digest()
    gz = _record_for(servers, REQUESTS["gzip"])["response"]["body"]
    assert (gz["state"], gz["data"], gz["content_encoding"]) == ("COMPLETE", GZIPPED, "gzip")
    assert gzip.decompress(gz["data"]).startswith(b'{"compressed"')
    sse = _record_for(servers, REQUESTS["sse"])
    assert sse["response"]["body"]["data"] == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert sse["duration_us"] >= 400_000  # the record covers the whole stream
    upload = _record_for(servers, REQUESTS["chunked-upload"])["request"]["body"]
    assert (upload["state"], upload["size"]) == ("NOT_KEPT", 11)
    head = _record_for(servers, REQUESTS["head"])
    assert (head["request"]["method"], head["response"]["body"]["state"]) == ("HEAD", "NONE")
    assert _record_for(servers, REQUESTS["no-content"])["response"]["status"] == 204
    assert _record_for(servers, REQUESTS["not-modified"])["response"]["status"] == 304


def test_exceptions_are_recorded_and_still_raised(servers: Any) -> None:
    """A handler exception before or after the response started is recorded as RAISED; the server sees it."""
    before = _record_for(servers, REQUESTS["raises"])
    assert before["outcome"]["kind"] == "RAISED"
    assert before["outcome"]["exception_type"] == "builtins.RuntimeError"
    assert before["outcome"]["exception_message"] == "handler failed"
    assert before["response"]["status"] == 500  # Starlette's error middleware answered, then re-raised
    midway = _record_for(servers, REQUESTS["raises-midway"])
    assert (midway["outcome"]["kind"], midway["outcome"]["exception_type"]) == (
        "RAISED",
        "builtins.ValueError",
    )
    assert (midway["response"]["status"], midway["response"]["body"]["state"]) == (200, "ABORTED")
    assert midway["response"]["body"]["data"] == b"first "


def test_client_disconnect_mid_stream(servers: Any) -> None:
    """A client that leaves during an SSE stream is recorded as DISCONNECTED with the body aborted."""
    _, port, recorder = servers
    before = len(recorder.records)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"data: 0" not in data:
            data += sock.recv(4096)
    record = recorder.wait(before + 1, timeout=15)[before]
    assert record["outcome"]["kind"] == "DISCONNECTED"
    assert record["response"]["body"]["state"] == "ABORTED"


def test_streaming_keeps_its_timing(servers: Any) -> None:
    """The first SSE event arrives as soon as it is sent: the middleware holds nothing back."""
    bare, recorded, _ = servers

    def first_event_after(port: int) -> float:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.monotonic()
            sock.sendall(b"GET /sse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while b"data: 0" not in data:
                data += sock.recv(4096)
            return time.monotonic() - start

    assert first_event_after(recorded) < 0.15  # the second event comes 0.2 s later
    assert first_event_after(bare) < 0.15


def test_websocket_and_lifespan_pass_through() -> None:
    """Non-HTTP scopes reach the app untouched and are not recorded."""
    import asyncio

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive, send))

    recorder = CapturingRecorder()
    middleware = TrafficRecorder(app, recorder=recorder)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        pass

    asyncio.run(middleware({"type": "websocket", "path": "/ws"}, receive, send))
    assert seen == [("websocket", receive, send)]
    assert recorder.records == []


def test_trailers_are_recorded() -> None:
    """HTTP trailers sent by the app are recorded and the record waits for them."""
    import asyncio

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
                "trailers": True,
            }
        )
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})
        await send(
            {"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": False}
        )

    recorder = CapturingRecorder()
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/t",
        "raw_path": b"/t",
        "query_string": b"",
        "headers": [(b"host", b"x")],
        "http_version": "2",
    }
    asyncio.run(TrafficRecorder(app, recorder=recorder)(scope, receive, send))
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.trailers",
    ]
    (record,) = recorder.records
    assert record["response"]["trailers"] == [{"name": b"x-checksum", "value": b"abc"}]
    assert (record["request"]["http_version"], record["response"]["body"]["state"]) == ("2", "COMPLETE")


def test_disabled_or_excluded_requests_pass_straight_through() -> None:
    """With recording off, or for an excluded path, nothing is recorded and the app gets the originals."""
    import asyncio

    calls: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((receive, send))

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/metrics", "raw_path": b"/metrics", "headers": []}
    for recorder in (CapturingRecorder(enabled=False), CapturingRecorder(exclude_paths=("/metrics",))):
        asyncio.run(TrafficRecorder(app, recorder=recorder)(scope, receive, send))
        assert calls[-1] == (receive, send)
        assert recorder.records == []


def test_secrets_inside_bodies_are_redacted_before_the_record_leaves(servers: Any) -> None:
    """JSON keys such as password and token, and bearer tokens in text, are redacted on the recorder's
    thread (stage source) while the app still gets and sends the original bytes."""
    body = b'{"user": "ann", "password": "hunter2-body", "nested": {"api_token": "tok-9f8e7d6c"}}'
    request = (
        b"POST /echo/secret HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    bare, recorded, _ = servers
    assert without_date(raw_request(recorded, request)) == without_date(raw_request(bare, request))
    record = _record_for(servers, request)
    kept = record["request"]["body"]["data"]
    assert b"hunter2-body" not in kept and b"tok-9f8e7d6c" not in kept and b'"user": "ann"' in kept
    assert b"hunter2-body" not in record["response"]["body"]["data"]  # the echo is redacted too
    assert {(r["location"], r["stage"]) for r in record["redactions"]} >= {
        ("request.body:json:password", "source"),
        ("request.body:json:api_token", "source"),
    }


def _run_direct(
    app: Any,
    messages: list[dict[str, Any]],
    headers: list[tuple[bytes, bytes]],
    raises: bool = False,
    around: Any = None,
) -> Any:
    """One request straight through the middleware (no server), or through ``around(middleware)``
    (a layer outside it); returns the record."""
    import asyncio

    recorder = CapturingRecorder()
    pending = list(messages)

    async def receive() -> Any:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/t",
        "raw_path": b"/t",
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
    }
    recorded = TrafficRecorder(app, recorder=recorder)
    with pytest.raises(RuntimeError) if raises else contextlib.nullcontext():
        asyncio.run((around(recorded) if around else recorded)(scope, receive, send))
    (record,) = recorder.records
    return record


def test_a_body_the_app_did_not_read_to_its_end_is_marked_cut() -> None:
    """The record never claims a whole request body the app did not read (part, or none of it)."""

    async def reads_one_chunk(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def reads_nothing(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    chunks = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    part = _run_direct(reads_one_chunk, chunks, [(b"content-type", b"application/json")])
    assert (part["request"]["body"]["state"], part["request"]["body"]["data"]) == ("ABORTED", b'{"a": ')
    headers = [(b"content-type", b"application/json"), (b"content-length", b"8")]
    unread = _run_direct(reads_nothing, chunks, headers)
    assert (unread["request"]["body"]["state"], unread["request"]["body"]["size"]) == ("ABORTED", 0)
    assert unread["request"]["body"]["declared_length"] == 8
    whole = _run_direct(
        reads_one_chunk, [{"type": "http.request", "body": b"{}", "more_body": False}], headers[:1]
    )
    assert whole["request"]["body"]["state"] == "COMPLETE"


def test_trailers_announced_but_never_sent_leave_the_response_unfinished() -> None:
    """``trailers: True`` on the start message: the exchange ends with the trailers, not the body."""

    async def raising(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})
        raise RuntimeError("no trailers after all")

    record = _run_direct(raising, [], [], raises=True)
    assert record["outcome"]["kind"] == "RAISED"
    assert record["response"]["body"]["state"] == "ABORTED"


def test_headers_are_recorded_as_they_passed_this_layer() -> None:
    """Layers around the recorder (GZip, CORS …) edit header lists in place after they passed;
    the record keeps them as the app sent them, and the request's as the server gave them."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["headers"].append((b"x-added-inside", b"1"))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"plain text"})

    def editing_layer(recorded: Any) -> Any:
        async def outer(scope: Any, receive: Any, send: Any) -> None:
            async def editing_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"].append((b"content-encoding", b"gzip"))
                await send(message)

            await recorded(scope, receive, editing_send)

        return outer

    request = [{"type": "http.request", "body": b"", "more_body": False}]
    record = _run_direct(app, request, [(b"host", b"x")], around=editing_layer)
    assert [h["name"] for h in record["response"]["headers"]] == [b"content-type"]
    assert [h["name"] for h in record["request"]["headers"]] == [b"host"]


def test_the_servers_request_state_is_let_go_once_the_response_went_out() -> None:
    """While a record waits for the recorder's thread it holds nothing of the server's: its
    receive and send (bound to the connection's per-request state) go at once. A task the app
    left behind still gets what a server answers after a response: a disconnect from receive,
    an error from send; the record is not touched by either."""
    import asyncio
    import gc
    import weakref

    from trafficreel.producers import Recorder, RecorderConfig

    held: list[Any] = []

    class Holding(Recorder):
        def submit(self, exchange: Any) -> None:
            held.append(exchange)  # queued, not yet built

    class Cycle:  # a server's per-request state, as uvicorn's RequestResponseCycle
        async def receive(self) -> Any:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(self, message: Any) -> None:
            pass

    left_behind: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})
        left_behind.extend((receive, send))

    scope = {"type": "http", "method": "POST", "path": "/t", "raw_path": b"/t", "headers": []}
    recorder = Holding(RecorderConfig(service_name="test"))
    cycle = Cycle()
    gone = weakref.ref(cycle)
    asyncio.run(TrafficRecorder(app, recorder=recorder)(scope, cycle.receive, cycle.send))
    del cycle
    gc.collect()
    assert gone() is None
    late_receive, late_send = left_behind
    assert asyncio.run(late_receive()) == {"type": "http.disconnect"}
    for message in (
        {"type": "http.response.start", "status": 500, "headers": [(b"x-late", b"1")]},
        {"type": "http.response.body", "body": b"more"},
        {"type": "http.response.trailers", "headers": [(b"x-late", b"2")]},
    ):
        with pytest.raises(RuntimeError, match="after the response completed"):
            asyncio.run(late_send(message))
    (exchange,) = held
    record = exchange.build(recorder)
    assert record["response"]["status"] == 200
    assert record["response"]["headers"] == [(b"content-type", b"text/plain")]
    assert not record["response"]["trailers"]
    assert record["response"]["body"]["data"] == b"ok"
    assert record["outcome"]["kind"] == "COMPLETED"
