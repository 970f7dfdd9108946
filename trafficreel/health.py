"""The HTTP endpoint of long-running workers: Prometheus metrics and Kubernetes probes.

    GET /metrics   Prometheus text format
    GET /live      200 while the process serves requests (liveness probe)
    GET /ready     200 once the worker does its job (e.g. has partitions and a producer),
                   503 with the reason otherwise (readiness probe)

One small thread with the standard library's HTTP server: probes and scrapes are rare, and the
worker's own event loop or threads are never involved in answering them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["HealthServer", "Readiness"]

Readiness = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves /metrics, /live and /ready on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        readiness: Readiness,
        *,
        host: str = "0.0.0.0",
        port: int = 9464,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._readiness = readiness
        self._registry = registry
        handler = self._handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="trafficreel-health", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(server._registry), CONTENT_TYPE_LATEST)
                elif path == "/live":
                    self._reply(200, b"live\n")
                elif path == "/ready":
                    try:
                        ready, reason = server._readiness()
                    except Exception as exc:  # noqa: BLE001 - a failing check means not ready
                        ready, reason = False, f"readiness check failed: {exc}"
                    self._reply(
                        200 if ready else 503,
                        (reason or ("ready" if ready else "not ready")).encode() + b"\n",
                    )
                else:
                    self._reply(404, b"try /metrics, /live or /ready\n")

            def _reply(
                self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Probes every few seconds would flood the log.
                pass

        return Handler
