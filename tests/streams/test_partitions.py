"""The worker follows the input topic's partition count, which its cap counts depend on."""

from __future__ import annotations

from typing import Any

import pytest

from trafficreel.config import Settings
from trafficreel.streams.app import settle_partitions
from trafficreel.topics import create_topics

from .workers import make_topics

pytestmark = pytest.mark.stack


def _settings(infra: Any, prefix: str, partitions: int) -> Settings:
    return Settings(
        kafka_bootstrap=infra.bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        stream_group=f"{prefix}-g",
    )


def test_the_input_topics_partition_count_wins_over_the_setting(infra: Any) -> None:
    prefix = make_topics(infra.bootstrap, 6)
    assert settle_partitions(_settings(infra, prefix, 3)).partitions == 6
    assert settle_partitions(_settings(infra, prefix, 6)).partitions == 6


def test_a_changelog_of_another_size_is_refused_with_what_to_do(infra: Any) -> None:
    prefix = make_topics(infra.bootstrap, 6)
    changelog = f"{prefix}-g-route-caps-changelog"
    create_topics(infra.kafka_conf(), [changelog], partitions=3)
    with pytest.raises(ValueError, match=f"has 6 partitions but .* has 3; delete {changelog}"):
        settle_partitions(_settings(infra, prefix, 6))


def test_no_input_topic_yet_keeps_the_setting(infra: Any) -> None:
    settings = _settings(infra, "none-such-prefix", 4)
    assert settle_partitions(settings).partitions == 4


def test_lag_is_reported_only_for_partitions_the_worker_holds() -> None:
    """After a rebalance took a partition away, its last lag value is not left behind."""
    import faust
    from prometheus_client import CollectorRegistry

    from trafficreel.streams._sender import Message
    from trafficreel.streams.app import StreamWorker

    worker = StreamWorker(
        Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="lagtest"), registry=CollectorRegistry()
    )
    topic = worker.input_topic

    class Consumer:
        def __init__(self) -> None:
            self.held = {0, 1}

        def highwater(self, tp: faust.types.TP) -> int:
            return 100

        def assignment(self) -> set[faust.types.TP]:
            return {faust.types.TP(topic, p) for p in self.held}

    consumer = Consumer()
    worker.app.consumer = consumer  # type: ignore[assignment]

    def lag(partition: int) -> float | None:
        return worker.registry.get_sample_value(
            "trafficreel_stream_lag", {"topic": topic, "partition": str(partition)}
        )

    worker._lag([Message(b"", None, None, topic, p, 89, None) for p in (0, 1)])
    assert (lag(0), lag(1)) == (10.0, 10.0)
    consumer.held = {1}
    worker._lag([Message(b"", None, None, topic, 1, 94, None)])
    assert (lag(0), lag(1)) == (None, 5.0)
