"""Prometheus metrics of a stream worker.

trafficreel_stream_records_in_total{topic}            records read
trafficreel_stream_records_out_total{class,reason}    records written (reason: sampled|error|slow)
trafficreel_stream_dropped_total{class,reason}        records dropped (reason: head|cap|class)
trafficreel_stream_dlq_total{reason}                  records sent to the dead-letter topic
trafficreel_stream_batch_seconds                      processing time per batch, sends included
trafficreel_stream_lag{topic,partition}               records behind the partition's end
trafficreel_stream_last_batch_timestamp_seconds       when the last batch was handled (Unix time)
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["StreamMetrics"]


class StreamMetrics:
    """The worker's counters, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.records_in = Counter(
            "trafficreel_stream_records_in",
            "Records read from the input topic.",
            ["topic"],
            registry=registry,
        )
        self.records_out = Counter(
            "trafficreel_stream_records_out",
            "Records written to a class topic, by class and why they were kept.",
            ["class", "reason"],
            registry=registry,
        )
        self.dropped = Counter(
            "trafficreel_stream_dropped",
            "Records not written, by class and reason (head: head sampling, cap: route cap, "
            "class: the class is dropped).",
            ["class", "reason"],
            registry=registry,
        )
        self.dlq = Counter(
            "trafficreel_stream_dlq",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "trafficreel_stream_batch_seconds",
            "Time to process and send one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.last_batch = Gauge(
            "trafficreel_stream_last_batch_timestamp_seconds",
            "Unix time at which the worker last finished a batch (delivered, ready to commit); "
            "with a lag above 0, a value that stops moving means a stuck worker.",
            registry=registry,
        )
        self.lag = Gauge(
            "trafficreel_stream_lag",
            "Records between the worker's position and the partition's end.",
            ["topic", "partition"],
            registry=registry,
        )

    def add(
        self,
        topic: str,
        read: int,
        out: Tally[tuple[str, str]],
        dropped: Tally[tuple[str, str]],
        dlq: Tally[str],
    ) -> None:
        """Count one batch (tallied locally first: a labelled counter costs a lock per increment)."""
        self.records_in.labels(topic).inc(read)
        for (cls, reason), n in out.items():
            self.records_out.labels(cls, reason).inc(n)
        for (cls, reason), n in dropped.items():
            self.dropped.labels(cls, reason).inc(n)
        for reason, n in dlq.items():
            self.dlq.labels(reason).inc(n)
