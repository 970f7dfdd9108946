"""Prometheus metrics of recorders, read from their counters at scrape time (nothing on the request path).

    from prometheus_client import start_http_server
    from trafficreel.producers.metrics import register
    register(middleware.recorder)          # into prometheus_client's default registry
    start_http_server(9464)

Needs ``prometheus-client`` (not a dependency of the recorder itself).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from ._recorder import Recorder

__all__ = ["RecorderCollector", "register"]


class RecorderCollector:
    """A prometheus_client collector over one or more recorders."""

    def __init__(self) -> None:
        self._recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()

    def add(self, recorder: Recorder) -> None:
        self._recorders.add(recorder)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        recorded = CounterMetricFamily(
            "trafficreel_recorder_records", "Exchanges captured for recording.", labels=["service"]
        )
        delivered = CounterMetricFamily(
            "trafficreel_recorder_delivered", "Records the broker acknowledged.", labels=["service"]
        )
        dropped = CounterMetricFamily(
            "trafficreel_recorder_dropped", "Records dropped, by reason.", labels=["service", "reason"]
        )
        errors = CounterMetricFamily(
            "trafficreel_recorder_broker_errors", "Errors reported by the Kafka client.", labels=["service"]
        )
        queued = GaugeMetricFamily(
            "trafficreel_recorder_queue_bytes",
            "Bytes of records waiting to be sent or acknowledged.",
            labels=["service"],
        )
        in_flight = GaugeMetricFamily(
            "trafficreel_recorder_in_flight", "Records not yet delivered or dropped.", labels=["service"]
        )
        for recorder in list(self._recorders):
            service = recorder.config.service_name
            stats = recorder.stats()
            recorded.add_metric([service], stats["recorded"])
            delivered.add_metric([service], stats["delivered"])
            for reason, count in sorted(stats["dropped"].items()):
                dropped.add_metric([service, reason], count)
            errors.add_metric([service], stats["broker_errors"])
            queued.add_metric([service], stats["queue_bytes"])
            in_flight.add_metric([service], stats["in_flight"])
        yield from (recorded, delivered, dropped, errors, queued, in_flight)


_DEFAULT: RecorderCollector | None = None


def register(recorder: Recorder, registry: Any = None) -> RecorderCollector:
    """Expose a recorder's counters in a prometheus_client registry (default: the global one)."""
    global _DEFAULT
    if registry is None:
        from prometheus_client import REGISTRY

        if _DEFAULT is None:
            _DEFAULT = RecorderCollector()
            REGISTRY.register(_DEFAULT)
        _DEFAULT.add(recorder)
        return _DEFAULT
    collector = RecorderCollector()
    collector.add(recorder)
    registry.register(collector)
    return collector
