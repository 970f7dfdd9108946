"""The workers' HTTP endpoint: metrics for Prometheus, liveness and readiness for the kubelet."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from trafficreel.health import HealthServer


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_and_metrics() -> None:
    """/ready follows the readiness check (503 with the reason), /live is 200, /metrics serves the registry."""
    registry = CollectorRegistry()
    Counter("things", "Things done.", registry=registry).inc(3)
    state = {"ready": (False, "rebalancing")}
    server = HealthServer(lambda: state["ready"], host="127.0.0.1", port=0, registry=registry).start()
    try:
        assert _get(server.port, "/ready") == (503, "rebalancing\n")
        state["ready"] = (True, "ready: 3 partitions")
        assert _get(server.port, "/ready") == (200, "ready: 3 partitions\n")
        assert _get(server.port, "/live") == (200, "live\n")
        status, text = _get(server.port, "/metrics")
        assert status == 200 and "things_total 3.0" in text
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_a_failing_check_means_not_ready() -> None:
    """An exception in the readiness check answers 503 with the error, and the server goes on."""

    def broken() -> tuple[bool, str]:
        raise RuntimeError("no consumer yet")

    server = HealthServer(broken, host="127.0.0.1", port=0, registry=CollectorRegistry()).start()
    try:
        status, text = _get(server.port, "/ready")
        assert status == 503 and "no consumer yet" in text
        assert _get(server.port, "/live")[0] == 200
    finally:
        server.stop()
