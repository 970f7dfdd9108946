"""Realistic sample records for tests, benchmarks and examples."""

from __future__ import annotations

import hashlib
import random
import time

from ._ids import new_id
from ._records import Body, Exchange, Header

__all__ = ["sample_exchange"]

_PATHS = [
    b"/v1/orders/12345",
    b"/v1/users/9f1c2e7a-0b1d-4a55-9bbd-2c3a4e5f6a7b/profile",
    b"/healthz",
    b"/api/v1/namespaces/default/pods",
]


def _json_body(data: bytes) -> Body:
    return {
        "data": data,
        "size": len(data),
        "sha256": hashlib.sha256(data).digest(),
        "content_type": "application/json",
        "content_encoding": None,
        "declared_length": len(data),
        "state": "COMPLETE",
    }


def sample_exchange(seed: int | None = None, *, body_size: int = 256) -> Exchange:
    """Return a plausible inbound exchange with JSON bodies; ``seed`` makes it reproducible."""
    rng = random.Random(seed)
    start_ns = time.time_ns() if seed is None else 1_780_000_000_000_000_000 + seed * 1_000_000
    path = rng.choice(_PATHS)
    request_body = b'{"item":"%d","note":"' % rng.randrange(10**6) + b"x" * max(0, body_size - 30) + b'"}'
    headers: list[Header] = [
        {"name": b"host", "value": b"orders.shop.svc.cluster.local"},
        {"name": b"user-agent", "value": b"python-httpx/0.28.1"},
        {"name": b"accept", "value": b"*/*"},
        {"name": b"content-type", "value": b"application/json"},
        {"name": b"x-request-id", "value": b"%032x" % rng.getrandbits(128)},
        {"name": b"traceparent", "value": b"00-%032x-%016x-01" % (rng.getrandbits(128), rng.getrandbits(64))},
    ]
    return {
        "id": new_id(start_ns, random_bits=rng.getrandbits(62)) if seed is not None else new_id(start_ns),
        "start_time": start_ns // 1000,
        "duration_us": rng.randrange(200, 50_000),
        "direction": "INBOUND",
        "source": {
            "service": "orders",
            "service_version": "1.4.2",
            "pod": "orders-7d9f8b6c5-x2x9z",
            "namespace": "shop",
            "node": "node-a",
            "container_id": "%064x" % rng.getrandbits(256),
            "k8s_api_host": "10.96.0.1:443",
            "recorder": "trafficreel/0.1.0 asgi",
        },
        "peer": {
            "remote_address": "10.1.2.%d" % rng.randrange(1, 255),
            "remote_port": rng.randrange(30000, 60000),
            "local_address": "10.1.3.4",
            "local_port": 8080,
            "forwarded_for": None,
        },
        "request": {
            "method": "POST",
            "scheme": "http",
            "host": "orders.shop.svc.cluster.local",
            "path": path,
            "query": b"expand=items&limit=%d" % rng.randrange(100),
            "http_version": "1.1",
            "headers": headers,
            "body": _json_body(request_body),
        },
        "response": {
            "status": rng.choice([200, 200, 200, 201, 404, 500]),
            "headers": [
                {"name": b"content-type", "value": b"application/json"},
                {"name": b"set-cookie", "value": b"a=1"},
                {"name": b"set-cookie", "value": b"b=2"},
            ],
            "trailers": [],
            "body": _json_body(b'{"ok":true}'),
        },
        "outcome": {
            "kind": "COMPLETED",
            "exception_type": None,
            "exception_message": None,
            "response_started": True,
        },
        "trace": {
            "trace_id": "%032x" % rng.getrandbits(128),
            "span_id": "%016x" % rng.getrandbits(64),
            "sampled": True,
        },
        "traffic_class": None,
        "class_rule": None,
        "route": None,
        "sample_weight": None,
        "redactions": [],
        "tags": {"team": "checkout"},
    }
