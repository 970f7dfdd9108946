"""The demo's sample services, recorded by trafficreel, and a stub of the Kubernetes API server.

- ``orders``: FastAPI (ASGI) under uvicorn. Order lookups call ``inventory`` over HTTP; a
  background loop reads its ConfigMap, lists and watches pods through the real ``kubernetes``
  client, as controllers and operators do. Build ``v2`` has one deliberate behaviour change: an
  order's ``status`` is lower case.
- ``inventory``: Flask (WSGI) under gunicorn; stock lookups, a binary upload, and a ConfigMap read.
- the Kubernetes API stub: ``/version``, pods (with ``watch=true`` streaming events) and ConfigMaps.

Run one with ``python -m trafficreel.demo.services orders|inventory|k8s-api PORT [--build v2]``;
recording settings come from ``TRAFFICREEL_*`` variables, as in a real pod.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run
# time, and the names they use (Request) are imported inside orders_app.
import argparse
import asyncio
import hashlib
import json
import os
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["inventory_app", "k8s_api_server", "orders_app"]

NAMESPACE = "shop"
ITEMS = ["A-100", "B-200", "C-300", "D-400", "E-500"]


def _kubernetes() -> Any:
    """A CoreV1Api of the real kubernetes client, pointed at the stub (DEMO_K8S_API)."""
    from kubernetes import client

    config = client.Configuration()
    config.host = os.environ["DEMO_K8S_API"]
    config.api_key = {"authorization": "Bearer demo-service-account-token"}
    return client.CoreV1Api(client.ApiClient(config))


def _controller_loop(component: str, interval: float) -> None:
    """What an operator-style service does against the API server: read config, list, watch."""
    from kubernetes import watch

    api = _kubernetes()
    while True:
        try:
            api.read_namespaced_config_map(f"{component}-config", NAMESPACE)
            api.list_namespaced_pod(NAMESPACE, label_selector=f"app={component}")
            events = watch.Watch().stream(  # type: ignore[no-untyped-call]
                api.list_namespaced_pod, NAMESPACE, timeout_seconds=1
            )
            for _ in events:
                pass
        except Exception as exc:  # noqa: BLE001 - the demo keeps going whatever the stub says
            print(f"{component}: API call failed: {exc}", flush=True)
        time.sleep(interval)


def orders_app(build: str = "v1") -> Any:
    """The orders service (FastAPI), recorded by the ASGI middleware."""
    import httpx
    from fastapi import FastAPI, HTTPException, Request, Response
    from fastapi.middleware.gzip import GZipMiddleware
    from fastapi.responses import PlainTextResponse, StreamingResponse

    from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorder, instrument

    inventory = os.environ.get("DEMO_INVENTORY_URL", "http://127.0.0.1:1")
    app = FastAPI(title="orders")
    app.add_middleware(GZipMiddleware, minimum_size=500)
    client = httpx.AsyncClient(base_url=inventory, timeout=5)

    def order(order_id: int) -> dict[str, Any]:
        status = "SHIPPED" if order_id % 3 else "PENDING"
        return {
            "id": order_id,
            "item": ITEMS[order_id % len(ITEMS)],
            "quantity": order_id % 7 + 1,
            "status": status.lower() if build == "v2" else status,  # the v2 change
            "request_id": str(uuid.uuid4()),
            "served_at": datetime.now(UTC).isoformat(),
        }

    @app.get("/v1/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, Any]:
        if order_id >= 9000:
            raise HTTPException(404, "no such order")
        found = order(order_id)
        stock = await client.get(f"/v1/stock/{found['item']}")
        found["in_stock"] = stock.json()["available"] > 0
        return found

    @app.get("/v1/orders")
    async def list_orders(limit: int = 20) -> list[dict[str, Any]]:
        return [order(i) for i in range(1, min(limit, 200) + 1)]

    @app.post("/v1/orders", status_code=201)
    async def create_order(request: Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict) or "item" not in body:
            raise HTTPException(422, "an order needs an item")
        return {"id": random.randint(1, 8999), "item": body["item"], "status": "PENDING"}  # noqa: S311

    @app.get("/v1/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.3)
        return {"done": "slowly"}

    @app.get("/v1/fail")
    async def fail() -> dict[str, str]:
        raise RuntimeError("the demo's deliberate failure")

    @app.get("/v1/export")
    async def export() -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(32):
                yield bytes([i]) * 65536  # 2 MiB, binary

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse("# TYPE demo_up gauge\ndemo_up 1\n", media_type="text/plain; version=0.0.4")

    recorder = Recorder(RecorderConfig.from_env(service_name="orders", service_version=build))
    if os.environ.get("DEMO_K8S_API"):
        instrument(recorder)
        threading.Thread(target=_controller_loop, args=("orders", 2.0), daemon=True).start()
    return TrafficRecorder(app, recorder=recorder)


def inventory_app() -> Any:
    """The inventory service (Flask), recorded by the WSGI middleware."""
    from flask import Flask, jsonify, request

    from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorderWSGI, instrument

    app = Flask("inventory")

    @app.get("/v1/stock/<sku>")
    def stock(sku: str) -> Any:
        if sku not in ITEMS:
            return jsonify(error="unknown sku"), 404
        return jsonify(sku=sku, available=(sum(map(ord, sku)) % 40), warehouse="eu-1")

    @app.post("/v1/uploads")
    def upload() -> Any:
        data = request.get_data()
        return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest()), 201

    @app.get("/v1/stock/refresh")
    def refresh() -> Any:
        config = _kubernetes().read_namespaced_config_map("inventory-config", NAMESPACE)
        return jsonify(refreshed=True, source=config.metadata.name)

    @app.get("/healthz")
    def healthz() -> Any:
        return "ok"

    recorder = Recorder(RecorderConfig.from_env(service_name="inventory", service_version="v1"))
    if os.environ.get("DEMO_K8S_API"):
        instrument(recorder)
    app.wsgi_app = TrafficRecorderWSGI(app.wsgi_app, recorder=recorder)  # type: ignore[method-assign]
    return app


class _K8sHandler(BaseHTTPRequestHandler):
    """Just enough of the API server for the demo's client calls."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if path == "/version":
            self._json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-demo"})
        elif len(parts) == 5 and parts[:2] == ["api", "v1"] and parts[4] == "pods":
            pods = [_pod(parts[3], f"orders-{i}") for i in range(3)]
            if "watch=true" in query or "watch=1" in query:
                self._watch(pods)
            else:
                self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
        elif len(parts) == 6 and parts[:2] == ["api", "v1"] and parts[4] == "configmaps":
            self._json(
                200,
                {
                    "kind": "ConfigMap",
                    "apiVersion": "v1",
                    "metadata": {"name": parts[5], "namespace": parts[3]},
                    "data": {"feature.fast-path": "true"},
                },
            )
        else:
            self._json(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

    def _watch(self, pods: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for pod in pods:
            line = json.dumps({"type": "ADDED", "object": pod}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.write(b"0\r\n\r\n")


def _pod(namespace: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name.split("-")[0]}},
        "status": {"phase": "Running"},
    }


def k8s_api_server(port: int) -> ThreadingHTTPServer:
    """The stub API server on loopback (call ``serve_forever`` in a thread)."""
    return ThreadingHTTPServer(("127.0.0.1", port), _K8sHandler)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one of the demo's services.")
    parser.add_argument("service", choices=["orders", "inventory", "k8s-api"])
    parser.add_argument("port", type=int)
    parser.add_argument("--build", default="v1", choices=["v1", "v2"])
    args = parser.parse_args()
    if args.service == "orders":
        import uvicorn

        uvicorn.run(
            orders_app(args.build), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
        )
    elif args.service == "inventory":
        from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

        class _Gunicorn(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in {
                    "bind": f"127.0.0.1:{args.port}",
                    "workers": 1,
                    "threads": 8,
                    "worker_class": "gthread",
                    "loglevel": "warning",
                }.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                return inventory_app()

        _Gunicorn().run()
    else:
        k8s_api_server(args.port).serve_forever()


if __name__ == "__main__":
    main()
