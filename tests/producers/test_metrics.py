"""Recorder counters are exposed as Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tests.producers.support import CapturingRecorder
from trafficreel.producers.metrics import register


def test_counters_appear_in_the_exposition() -> None:
    """Recorded, delivered, dropped by reason, queue bytes and in-flight are scraped from the counters."""
    recorder = CapturingRecorder(service_name="orders")
    with recorder._lock:
        recorder._stats.recorded = 7
        recorder._stats.delivered = 5
        recorder._stats.dropped["queue_full"] = 2
    registry = CollectorRegistry()
    register(recorder, registry)
    text = generate_latest(registry).decode()
    assert 'trafficreel_recorder_records_total{service="orders"} 7.0' in text
    assert 'trafficreel_recorder_delivered_total{service="orders"} 5.0' in text
    assert 'trafficreel_recorder_dropped_total{reason="queue_full",service="orders"} 2.0' in text
    assert 'trafficreel_recorder_in_flight{service="orders"} 0.0' in text
