"""Prometheus metrics of recorders, read from their counters at scrape time (nothing on the request path).

    from prometheus_client import start_http_server
    from trafficreel.producers.metrics import register
    register(middleware.recorder)          # into prometheus_client's default registry
    start_http_server(9464)

Under a pre-fork server (gunicorn -w N) a scrape reaches one worker, which knows only its own
counters. With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's multi-process mode),
``register`` instead copies each worker's counters into prometheus_client's per-process files
once a second, from a thread of its own, and any worker serving a ``MultiProcessCollector``
answers for all of them: counters summed, gauges summed over live processes.

Needs ``prometheus-client`` (not a dependency of the recorder itself).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from ._recorder import Recorder

__all__ = ["RecorderCollector", "register"]

_MIRROR_SECONDS = 1.0


# Each recorder counter: its key in ``Recorder.stats()``, metric name, help, and whether it is a
# counter (else a gauge). Dropped records are one more counter, labelled by reason.
_SERIES = (
    ("recorded", "trafficreel_recorder_records", "Exchanges captured for recording.", True),
    ("delivered", "trafficreel_recorder_delivered", "Records the broker acknowledged.", True),
    ("broker_errors", "trafficreel_recorder_broker_errors", "Errors reported by the Kafka client.", True),
    (
        "queue_bytes",
        "trafficreel_recorder_queue_bytes",
        "Bytes of records waiting to be sent or acknowledged.",
        False,
    ),
    ("in_flight", "trafficreel_recorder_in_flight", "Records not yet delivered or dropped.", False),
)
_DROPPED = ("trafficreel_recorder_dropped", "Records dropped, by reason.")


class RecorderCollector:
    """A prometheus_client collector over one or more recorders."""

    def __init__(self) -> None:
        self._recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()

    def add(self, recorder: Recorder) -> None:
        self._recorders.add(recorder)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families = {
            key: (CounterMetricFamily if counter else GaugeMetricFamily)(name, text, labels=["service"])
            for key, name, text, counter in _SERIES
        }
        dropped = CounterMetricFamily(*_DROPPED, labels=["service", "reason"])
        for recorder in list(self._recorders):
            service = recorder.config.service_name
            stats = recorder.stats()
            for key, family in families.items():
                family.add_metric([service], stats[key])
            for reason, count in sorted(stats["dropped"].items()):
                dropped.add_metric([service, reason], count)
        yield from (*families.values(), dropped)


class _Mirror:
    """Copies recorders' counters into prometheus_client's multi-process metrics (one per process).

    Counters go up by what each recorder counted since the last copy; a forked child starts from
    its own recorder's counters, which start again at zero. Gauges are summed over live processes.
    The thread is started again in each child after a fork."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
        self._last: dict[tuple[int, str], float] = {}  # (id of the recorder, series) -> copied so far
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] = {
            key: Counter(name, text, ["service"])
            if counter
            else Gauge(name, text, ["service"], multiprocess_mode="livesum")
            for key, name, text, counter in _SERIES
        }
        self._counters = {key for key, _, _, counter in _SERIES if counter}
        self._dropped = Counter(*_DROPPED, ["service", "reason"])
        self._start()
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        if os.getpid() != self._pid:  # a forked child: its recorders' counters start from zero
            self._pid = os.getpid()
            self._last.clear()
        threading.Thread(target=self._loop, name="trafficreel-metrics", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(_MIRROR_SECONDS)
            with contextlib.suppress(Exception):  # metrics must never break the app
                self.sync()

    def _add(self, counter: Any, key: tuple[int, str], value: float, *labels: str) -> None:
        delta = value - self._last.get(key, 0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
            self._last[key] = value

    def sync(self) -> None:
        """Copy every recorder's counters now."""
        with self._lock:
            for recorder in list(self.recorders):
                service, stats, ident = recorder.config.service_name, recorder.stats(), id(recorder)
                for key, metric in self._metrics.items():
                    if key in self._counters:
                        self._add(metric, (ident, key), stats[key], service)
                    else:
                        metric.labels(service).set(stats[key])
                for reason, count in stats["dropped"].items():
                    self._add(self._dropped, (ident, f"dropped:{reason}"), count, service, reason)


_DEFAULT: RecorderCollector | None = None
_MIRROR: _Mirror | None = None


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def register(recorder: Recorder, registry: Any = None) -> RecorderCollector:
    """Expose a recorder's counters in a prometheus_client registry (default: the global one).

    In prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set, no registry
    given) the counters are copied into its per-process files instead; serve them with a
    ``MultiProcessCollector``. The collector returned then is not registered anywhere."""
    global _DEFAULT, _MIRROR
    if registry is None and _multiprocess():
        if _MIRROR is None:
            _MIRROR = _Mirror()
        _MIRROR.recorders.add(recorder)
        collector = RecorderCollector()
        collector.add(recorder)
        return collector
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
