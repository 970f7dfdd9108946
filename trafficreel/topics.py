"""The project's Kafka topics, and creating and describing them.

raw        every exchange as recorded, one record each (producers write here)
business   business traffic, classified, redacted and sampled (stream workers write here)
k8s-api    the service's own calls to the Kubernetes API server
probe      kubelet liveness/readiness/startup probes
scrape     Prometheus scrapes
dlq        records that could not be processed, with the reason in the headers
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from .errors import KafkaError

__all__ = [
    "TOPIC_NAMES",
    "PartitionInfo",
    "TopicInfo",
    "create_topics",
    "describe_topics",
    "high_watermarks",
    "partition_counts",
    "project_topics",
]

TOPIC_NAMES = ("raw", "business", "k8s-api", "probe", "scrape", "dlq")


def project_topics(prefix: str = "trafficreel") -> list[str]:
    """Full names of the project's topics."""
    return [f"{prefix}.{name}" for name in TOPIC_NAMES]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    leader: int
    low: int
    high: int

    @property
    def messages(self) -> int:
        return max(0, self.high - self.low)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)


def _admin(conf: dict[str, Any]) -> AdminClient:
    try:
        return AdminClient(conf)
    except KafkaException as exc:
        raise KafkaError(f"invalid Kafka client settings: {exc.args[0]}") from exc


def create_topics(
    conf: dict[str, Any],
    names: list[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    topic_config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create topics that do not exist; return ``{name: "created" | "exists"}``."""
    admin = _admin(conf)
    new = [
        NewTopic(
            n, num_partitions=partitions, replication_factor=replication_factor, config=topic_config or {}
        )
        for n in names
    ]
    outcome: dict[str, str] = {}
    try:
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(
            f"could not create topics at {conf.get('bootstrap.servers')}: {exc.args[0]}"
        ) from exc
    for name, future in futures.items():
        try:
            future.result(timeout)
            outcome[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                outcome[name] = "exists"
            else:
                raise KafkaError(
                    f"could not create topic {name} at {conf.get('bootstrap.servers')}: {err}; "
                    "is the broker running (trafficreel up) and are the credentials right?"
                ) from exc
    return outcome


def high_watermarks(
    consumer: Consumer, partitions: list[TopicPartition], timeout: float = 10.0
) -> dict[int, int]:
    """Return the high watermark of each partition as reported by fetches.

    Fetch responses carry the broker's high watermark. The embedded broker (Tansu) answers
    ListOffsets(latest) inexactly when records arrive in multi-record batches, so this asks for the
    end offset, fetches from there to the real end (few records at most) and reads the watermark
    the fetches reported.
    """
    wanted = {tp.partition for tp in partitions}
    topic = partitions[0].topic
    result: dict[int, int] = {}
    consumer.assign([TopicPartition(topic, p, _end_offset(consumer, topic, p, timeout)) for p in wanted])
    deadline = time.monotonic() + timeout
    while wanted - result.keys() and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.2):
            err = msg.error()
            partition, offset = msg.partition(), msg.offset()
            is_eof = err is not None and err.code() == confluent_kafka.KafkaError._PARTITION_EOF
            if is_eof and partition is not None and offset is not None:
                result[partition] = offset
    consumer.unassign()
    for p in wanted - result.keys():  # no EOF in time: fall back to what the broker said
        result[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout, cached=False)[1]
    return result


def _end_offset(consumer: Consumer, topic: str, partition: int, timeout: float) -> int:
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)[1])
    except KafkaException as exc:
        raise KafkaError(f"could not read the offsets of {topic}[{partition}]: {exc.args[0]}") from exc


def _cluster_metadata(conf: dict[str, Any], timeout: float) -> Any:
    try:
        return _admin(conf).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(
            f"could not reach Kafka at {conf.get('bootstrap.servers')}: {exc.args[0]}; "
            "is the broker running (trafficreel up)?"
        ) from exc


def partition_counts(conf: dict[str, Any], names: list[str], timeout: float = 10.0) -> dict[str, int]:
    """How many partitions each of these topics has (topics that do not exist are left out)."""
    metadata = _cluster_metadata(conf, timeout)
    return {
        name: len(topic.partitions)
        for name in names
        if (topic := metadata.topics.get(name)) is not None and topic.error is None
    }


def describe_topics(conf: dict[str, Any], names: list[str], timeout: float = 10.0) -> list[TopicInfo]:
    """Partitions, leaders and offsets of existing topics (missing ones are left out)."""
    metadata = _cluster_metadata(conf, timeout)
    consumer = Consumer(
        {
            **conf,
            "group.id": "trafficreel-describe",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    infos = []
    try:
        for name in names:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            tps = [TopicPartition(name, p) for p in sorted(topic.partitions)]
            highs = high_watermarks(consumer, tps, timeout) if tps else {}
            parts = []
            for tp in tps:
                low, _ = consumer.get_watermark_offsets(tp, timeout, cached=False)
                parts.append(
                    PartitionInfo(
                        tp.partition, topic.partitions[tp.partition].leader, low, highs[tp.partition]
                    )
                )
            infos.append(TopicInfo(name, parts))
    finally:
        consumer.close()
    return infos
