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
