"""Producer → broker → consumer, through the real broker, with the project's codec."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import Infra
from trafficreel.schemas import Deserializer, Serializer, sample_exchange
from trafficreel.topics import describe_topics, high_watermarks


def _consume_all(infra: Infra, topic: str, partitions: int, expected: int) -> list[bytes]:
    consumer = Consumer(infra.kafka_conf(**{"group.id": "rt", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    consumer.close()
    return values


def test_records_round_trip_through_the_broker(infra: Infra, new_topic: Callable[..., str]) -> None:
    """500 encoded records produced with acks=all come back from the broker byte-identical and decodable."""
    topic = new_topic(partitions=3)
    serializer, deserializer = Serializer(), Deserializer()
    records = [sample_exchange(i) for i in range(500)]
    producer = Producer(infra.kafka_conf(**{"acks": "all", "enable.idempotence": True, "linger.ms": 5}))
    delivered: list[str] = []
    for record in records:
        producer.produce(
            topic,
            key=record["id"].encode(),
            value=serializer(record),
            on_delivery=lambda e, m: delivered.append("ok" if e is None else str(e)),
        )
    assert producer.flush(30) == 0
    assert delivered == ["ok"] * 500

    values = _consume_all(infra, topic, 3, 500)
    decoded = sorted((deserializer(v) for v in values), key=lambda r: r["id"])
    assert decoded == sorted(records, key=lambda r: r["id"])


def test_describe_reports_true_offsets(infra: Infra, new_topic: Callable[..., str]) -> None:
    """Topic description counts every record, also those that arrived in multi-record batches."""
    topic = new_topic(partitions=2)
    producer = Producer(infra.kafka_conf(**{"linger.ms": 50}))
    for i in range(37):
        producer.produce(topic, value=b"x%d" % i, partition=i % 2)
    producer.flush(30)
    (info,) = describe_topics(infra.kafka_conf(), [topic])
    assert [(p.partition, p.low, p.high) for p in info.partitions] == [(0, 0, 19), (1, 0, 18)]
    assert info.messages == 37
    consumer = Consumer(infra.kafka_conf(**{"group.id": "hw", "enable.partition.eof": True}))
    assert high_watermarks(consumer, [TopicPartition(topic, 0), TopicPartition(topic, 1)]) == {0: 19, 1: 18}
    consumer.close()
