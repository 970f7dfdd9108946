"""Prometheus metrics of a sink, read from its counters at scrape time.

trafficreel_sink_rows_inserted_total        rows inserted into ClickHouse
trafficreel_sink_batches_inserted_total     inserts
trafficreel_sink_duplicates_skipped_total   records already stored (sent twice upstream)
trafficreel_sink_retries_total              ClickHouse or commit retries after transient errors
trafficreel_sink_dlq_total{reason}          records sent to the dead-letter topic
trafficreel_sink_assigned_partitions        partitions this sink loads
trafficreel_sink_lag{topic,partition}       records behind the partition's end after the last batch
                                            (refreshed every 5 s while a batch waits for ClickHouse)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["SinkCollector"]


class SinkCollector(Collector):
    """Register with ``registry.register(SinkCollector(sink))``."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Any]:
        stats = self._sink.stats
        for name, value, doc in (
            ("rows_inserted", stats.rows_inserted, "Rows inserted into ClickHouse."),
            ("batches_inserted", stats.batches_inserted, "Inserts into ClickHouse."),
            ("duplicates_skipped", stats.duplicates_skipped, "Records already stored, not inserted again."),
            ("retries", stats.retries, "Retries after transient ClickHouse or Kafka errors."),
        ):
            yield CounterMetricFamily(f"trafficreel_sink_{name}", doc, value=value)
        dlq = CounterMetricFamily(
            "trafficreel_sink_dlq", "Records sent to the dead-letter topic.", labels=["reason"]
        )
        for reason, count in sorted(stats.dead_letters.items()):
            dlq.add_metric([reason], count)
        yield dlq
        yield GaugeMetricFamily(
            "trafficreel_sink_assigned_partitions",
            "Partitions this sink loads.",
            value=len(self._sink.assigned),
        )
        lag = GaugeMetricFamily(
            "trafficreel_sink_lag",
            "Records behind the partition's end after the last batch loaded.",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(stats.lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
