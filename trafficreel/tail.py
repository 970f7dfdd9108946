"""Read a topic from an offset, a time or its tail, decoding each record; optionally follow it.

The reader never joins a consumer group and never commits offsets: it assigns partitions
explicitly, so reading a topic changes nothing for anyone else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from trafficreel.schemas import DecodeError, Deserializer, Exchange

from .errors import KafkaError
from .topics import high_watermarks

__all__ = ["Position", "TailItem", "read_topic"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where to start in each partition."""

    kind: Literal["beginning", "end", "offset", "time", "last"]
    value: int = 0  # the offset, the Unix time in milliseconds, or the number of last records


@dataclass(slots=True)
class TailItem:
    """One message: its coordinates, and the decoded record or the decode error."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    record: Exchange | None = None
    error: DecodeError | None = None


def _start_offsets(
    consumer: Consumer, topic: str, partitions: list[int], position: Position, timeout: float
) -> list[TopicPartition]:
    tps = [TopicPartition(topic, p) for p in partitions]
    if position.kind == "beginning":
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if position.kind == "end":
        return [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    if position.kind == "offset":
        return [TopicPartition(topic, p, position.value) for p in partitions]
    if position.kind == "time":
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, position.value) for p in partitions], timeout
        )
        # -1: no record at or after that time yet, so start at the end.
        return [
            TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found
        ]
    highs = high_watermarks(consumer, tps, timeout)
    starts = []
    for p in partitions:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout, cached=False)
        starts.append(TopicPartition(topic, p, max(low, highs[p] - position.value)))
    return starts


def read_topic(
    conf: dict[str, Any],
    topic: str,
    position: Position,
    *,
    deserializer: Deserializer,
    partitions: list[int] | None = None,
    follow: bool = False,
    max_records: int | None = None,
    timeout: float = 10.0,
    poll_interval: float = 0.5,
) -> Iterator[TailItem]:
    """Yield the messages of ``topic`` from ``position``; stop at the end unless ``follow``."""
    consumer = Consumer(
        {
            **conf,
            "group.id": "trafficreel-tail",  # required by the client; never joined, nothing is committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise KafkaError(
                f"could not reach Kafka at {conf.get('bootstrap.servers')}: {exc.args[0]}; "
                "is the broker running (trafficreel up)?"
            ) from exc
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaError(f"topic {topic} does not exist; list topics with: trafficreel topics describe")
        available = sorted(meta.partitions)
        chosen = available if partitions is None else partitions
        missing = sorted(set(chosen) - set(available))
        if missing:
            raise KafkaError(f"topic {topic} has no partition {missing[0]}; it has {available}")
        consumer.assign(_start_offsets(consumer, topic, chosen, position, timeout))
        yield from _consume(consumer, chosen, position, deserializer, follow, max_records, poll_interval)
    finally:
        consumer.close()


def _headers(msg: confluent_kafka.Message) -> list[tuple[str, bytes]]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in pairs]


def _consume(
    consumer: Consumer,
    partitions: list[int],
    position: Position,
    deserializer: Deserializer,
    follow: bool,
    max_records: int | None,
    poll_interval: float,
) -> Iterator[TailItem]:
    at_end: set[int] = set()
    emitted = 0
    since = position.value if position.kind == "time" else None
    while follow or len(at_end) < len(partitions):
        for msg in consumer.consume(500, poll_interval):
            err = msg.error()
            partition = msg.partition() or 0
            if err is not None:
                if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(partition)
                    continue
                raise KafkaError(f"reading {msg.topic()} failed: {err}")
            at_end.discard(partition)
            ts = msg.timestamp()[1]
            if since is not None and ts < since:
                continue  # the broker may answer a time lookup with the start of the batch holding it
            value = msg.value() or b""
            item = TailItem(str(msg.topic()), partition, msg.offset() or 0, ts, msg.key(), _headers(msg))
            try:
                item.record = deserializer(value)
            except DecodeError as exc:
                item.error = exc.at(item.topic, item.partition, item.offset)
            yield item
            emitted += 1
            if max_records is not None and emitted >= max_records:
                return
