"""Outbound hooks: the real kubernetes client, httpx (sync and async) and requests, against local servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.producers.support import CapturingRecorder, serving, starlette_app
from trafficreel.producers import MARKER, instrument, not_recorded, uninstrument

POD_LIST = {
    "kind": "PodList",
    "apiVersion": "v1",
    "metadata": {"resourceVersion": "10"},
    "items": [{"metadata": {"name": "orders-1", "namespace": "shop"}}],
}
CONFIG_MAP = {
    "kind": "ConfigMap",
    "apiVersion": "v1",
    "metadata": {"name": "settings", "namespace": "shop"},
    "data": {"mode": "fast"},
}


def k8s_stub() -> Any:
    """A stub of the Kubernetes API server: list pods, get a configmap, watch pods."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def pods(request: Request) -> Response:
        if request.query_params.get("watch") in ("true", "1"):

            async def events() -> Any:
                for i in range(3):
                    event = {
                        "type": "ADDED",
                        "object": {
                            "kind": "Pod",
                            "apiVersion": "v1",
                            "metadata": {
                                "name": f"p{i}",
                                "namespace": "shop",
                                "resourceVersion": str(11 + i),
                            },
                        },
                    }
                    yield (json.dumps(event) + "\n").encode()
                    await asyncio.sleep(0.05)

            return StreamingResponse(events(), media_type="application/json")
        return JSONResponse(POD_LIST)

    async def config_map(request: Request) -> Response:
        return JSONResponse(CONFIG_MAP)

    return Starlette(
        routes=[
            Route("/api/v1/namespaces/{ns}/pods", pods),
            Route("/api/v1/namespaces/{ns}/configmaps/{name}", config_map),
        ]
    )


@pytest.fixture
def recorder() -> Iterator[CapturingRecorder]:
    rec = CapturingRecorder()
    instrument(rec)
    try:
        yield rec
    finally:
        uninstrument()


@pytest.fixture(scope="module")
def k8s_port() -> Iterator[int]:
    with serving(k8s_stub()) as port:
        yield port


@pytest.fixture(scope="module")
def service_port() -> Iterator[int]:
    with serving(starlette_app()) as port:
        yield port


def _k8s_api(port: int) -> Any:
    import kubernetes

    config = kubernetes.client.Configuration()
    config.host = f"http://127.0.0.1:{port}"
    config.api_key = {"authorization": "sa-token-s3cret"}
    config.api_key_prefix = {"authorization": "Bearer"}
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))


def test_kubernetes_client_calls_are_recorded(recorder: CapturingRecorder, k8s_port: int) -> None:
    """list pods and get configmap through the real kubernetes client each give an OUTBOUND record."""
    api = _k8s_api(k8s_port)
    pods = api.list_namespaced_pod("shop", limit=5)
    assert [p.metadata.name for p in pods.items] == ["orders-1"]
    assert api.read_namespaced_config_map("settings", "shop").data == {"mode": "fast"}
    listed, got = recorder.wait(2)[:2]
    assert listed["direction"] == "OUTBOUND"
    assert (listed["request"]["method"], listed["request"]["path"], listed["request"]["query"]) == (
        "GET",
        b"/api/v1/namespaces/shop/pods",
        b"limit=5",
    )
    assert listed["request"]["host"] == f"127.0.0.1:{k8s_port}"
    headers = {h["name"].lower(): h["value"] for h in listed["request"]["headers"]}
    assert headers[b"user-agent"].startswith(b"OpenAPI-Generator/")
    assert headers[b"authorization"] == b"Bearer " + MARKER
    assert json.loads(listed["response"]["body"]["data"]) == POD_LIST
    assert (listed["response"]["status"], listed["outcome"]["kind"]) == (200, "COMPLETED")
    assert got["request"]["path"] == b"/api/v1/namespaces/shop/configmaps/settings"
    assert b"s3cret" not in repr(recorder.records).encode()


def test_kubernetes_watch_stream_is_recorded(recorder: CapturingRecorder, k8s_port: int) -> None:
    """A watch streams events to the caller unchanged and is recorded once the stream ends."""
    import kubernetes

    api = _k8s_api(k8s_port)
    names = [
        event["object"].metadata.name
        for event in kubernetes.watch.Watch().stream(api.list_namespaced_pod, "shop", timeout_seconds=5)
    ]
    assert names == ["p0", "p1", "p2"]
    watch = next(r for r in recorder.wait(1) if b"watch=true" in r["request"]["query"])
    body = watch["response"]["body"]
    assert body["state"] == "COMPLETE"
    assert [json.loads(line)["object"]["metadata"]["name"] for line in body["data"].splitlines()] == [
        "p0",
        "p1",
        "p2",
    ]


def test_httpx_sync_and_async(recorder: CapturingRecorder, service_port: int) -> None:
    """httpx requests, sync and async, are recorded with the URL, Host and headers as sent."""
    import httpx

    base = f"http://127.0.0.1:{service_port}"
    with httpx.Client() as client:
        response = client.post(f"{base}/echo/x?q=%2F1", json={"n": 1}, headers={"X-Dup": "1"})
        assert response.json() == {"n": 1}

    async def call() -> int:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{base}/empty")).status_code

    assert asyncio.run(call()) == 204
    sync_record, async_record = recorder.wait(2)[:2]
    assert (sync_record["request"]["path"], sync_record["request"]["query"]) == (b"/echo/x", b"q=%2F1")
    assert sync_record["request"]["body"]["data"] == b'{"n":1}'
    assert sync_record["response"]["body"]["data"] == b'{"n":1}'
    assert {"name": b"X-Dup", "value": b"1"} in sync_record["request"]["headers"]
    assert async_record["response"]["status"] == 204


def test_requests_and_not_recorded(recorder: CapturingRecorder, service_port: int) -> None:
    """requests calls are recorded through urllib3; calls inside not_recorded() are not."""
    import requests

    base = f"http://127.0.0.1:{service_port}"
    assert requests.get(f"{base}/gzip", timeout=10).content.startswith(b'{"compressed": true}')
    with not_recorded():
        requests.get(f"{base}/empty", timeout=10)
    (record,) = recorder.wait(1)
    assert record["request"]["path"] == b"/gzip"
    body = record["response"]["body"]
    # urllib3 decoded the gzip body before anyone could see it: the kept bytes are identity-encoded.
    assert (body["content_encoding"], body["data"][:15]) == (None, b'{"compressed": ')


def test_failed_calls_are_recorded_and_raise(recorder: CapturingRecorder) -> None:
    """A connection failure reaches the caller unchanged and is recorded as RAISED with no status."""
    import httpx

    from trafficreel.stack._processes import free_port

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port()}/x", timeout=2)
    (record,) = recorder.wait(1)
    assert (record["outcome"]["kind"], record["response"]["status"]) == ("RAISED", None)
    assert record["outcome"]["exception_type"] == "httpx.ConnectError"


def test_streamed_request_bodies_are_copied_as_sent(recorder: CapturingRecorder, service_port: int) -> None:
    """Bodies given as generators, async generators and files reach the server unchanged and the
    record holds the bytes sent (httpx sync and async, requests from a generator and a file)."""
    import io

    import httpx
    import requests

    base = f"http://127.0.0.1:{service_port}/echo/stream"
    parts = [b'{"part": 1, ', b'"more": "', b"x" * 5000, b'"}']
    whole = b"".join(parts)
    text = {"content-type": "application/json"}

    def chunks() -> Any:
        yield from parts

    async def achunks() -> Any:
        for part in parts:
            yield part

    async def async_call() -> bytes:
        async with httpx.AsyncClient() as client:
            return (await client.post(base, content=achunks(), headers=text)).content

    with httpx.Client() as client:
        assert client.post(base, content=chunks(), headers=text).content == whole
    assert asyncio.run(async_call()) == whole
    assert requests.post(base, data=chunks(), headers=text, timeout=10).content == whole
    assert requests.post(base, data=io.BytesIO(whole), headers=text, timeout=10).content == whole
    records = recorder.wait(4)
    assert len(records) == 4
    for record in records:
        body = record["request"]["body"]
        assert (body["data"], body["size"], body["state"]) == (whole, len(whole), "COMPLETE")


def test_a_body_stream_that_fails_is_marked_aborted(recorder: CapturingRecorder, service_port: int) -> None:
    """A request body generator that raises: the caller gets its error, the record keeps what was
    sent and marks the body ABORTED."""
    import httpx

    def failing() -> Any:
        yield b'{"a": '
        raise RuntimeError("the body source broke")

    with httpx.Client() as client, pytest.raises(RuntimeError, match="body source broke"):
        client.post(
            f"http://127.0.0.1:{service_port}/echo/x",
            content=failing(),
            headers={"content-type": "application/json"},
        )
    (record,) = recorder.wait(1)
    body = record["request"]["body"]
    assert (body["data"], body["state"], record["outcome"]["kind"]) == (b'{"a": ', "ABORTED", "RAISED")


def test_buffer_bodies_are_sent_as_before(recorder: CapturingRecorder, service_port: int) -> None:
    """A body given as another buffer (array.array) still goes out whole with its length."""
    import array

    import urllib3

    body = array.array("B", b'{"n": 7}')
    http = urllib3.PoolManager()
    response = http.request(
        "POST",
        f"http://127.0.0.1:{service_port}/echo/buf",
        body=body,
        headers={"content-type": "application/json"},
    )
    assert response.data == b'{"n": 7}'
    (record,) = recorder.wait(1)
    assert record["request"]["body"]["data"] == b'{"n": 7}'


def test_urllib3_records_the_headers_as_sent(recorder: CapturingRecorder, service_port: int) -> None:
    """Through requests and urllib3, the record holds every header line the server received, in
    order: the caller's and those urllib3 and http.client add (Host, Accept-Encoding, User-Agent,
    Content-Length); a default header the caller asked urllib3 to skip is not listed."""
    import requests
    import urllib3

    base = f"http://127.0.0.1:{service_port}"
    received = requests.get(f"{base}/headers", headers={"X-Dup": "1"}, timeout=10).text
    pool = urllib3.PoolManager()
    skipped = pool.request("GET", f"{base}/headers", headers={"User-Agent": urllib3.util.SKIP_HEADER}).data
    via_requests, via_urllib3 = recorder.wait(2)[:2]
    for record, text in ((via_requests, received), (via_urllib3, skipped.decode())):
        server_saw = [line.split("=", 1) for line in text.splitlines()]
        recorded = [[repr(h["name"].lower()), repr(h["value"])] for h in record["request"]["headers"]]
        assert recorded == server_saw
    names = [h["name"].lower() for h in via_requests["request"]["headers"]]
    assert {b"host", b"accept-encoding", b"user-agent", b"x-dup"} <= set(names)
    assert b"user-agent" not in [h["name"].lower() for h in via_urllib3["request"]["headers"]]
