"""Batches of raw messages through the processor and out to Kafka, at least once.

The faust agent (and the benchmark's plain loop) hands a batch of messages to ``BatchSender.send``,
which processes each one and produces the results with one confluent-kafka producer: class topics
for kept records, the dead-letter topic for records that cannot be processed. ``delivered()`` then
waits until the broker acknowledged every one of them; only after that may the input offsets be
committed, so a crash anywhere re-reads the batch rather than lose it. A re-read batch yields the
same record ids, which the sink absorbs.

A record the broker refuses for what it is (too large, invalid) would be refused again after any
restart: it goes to the dead-letter topic instead (reason ``output-refused``, the original bytes),
and the batch goes on. If the dead-letter topic refuses its bytes too, the dead letter is sent
without them (its headers still say where the record is). Anything else the broker does not take
(unreachable, timed out, not authorised) fails the batch, uncommitted.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from ._process import DeadLetter, Processed, Processor, dead_letter_headers

__all__ = ["BatchSender", "BatchTally", "Consumed", "DeliveryError", "Message"]


# Refusals of the record itself, not of the topic or the connection: sending it again cannot help.
_REFUSED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.POLICY_VIOLATION,
    }
)
_VALUE_DROPPED = "trafficreel-dlq-value"


class DeliveryError(Exception):
    """The broker did not take some output records; the batch must not be committed."""


KafkaHeaders = list[tuple[str, str | bytes | None]]


class Consumed(Protocol):
    """What the stream needs of a consumed Kafka message: a ``Message``, or an aiokafka
    ``ConsumerRecord`` as faust fetched it (the worker passes those on as they are)."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # milliseconds


@dataclass(slots=True)
class Message:
    """The parts of a consumed Kafka message the stream needs."""

    value: bytes | None
    key: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None
    topic: str
    partition: int
    offset: int
    timestamp: int | None  # milliseconds


@dataclass
class BatchTally:
    """What one batch did, for metrics and logs."""

    read: int = 0
    out: Counter[tuple[str, str]] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    dlq: Counter[str] = field(default_factory=Counter)


class BatchSender:
    """``send(batch)`` then ``delivered()``; one instance per worker."""

    def __init__(self, processor: Processor, producer_config: dict[str, Any], dlq_topic: str) -> None:
        self.processor = processor
        self.dlq_topic = dlq_topic
        config = {
            "acks": "all",
            # Not idempotent: a broker that loses its state (the embedded one) would leave an
            # idempotent producer fatally stuck; duplicates carry the same id and the sink absorbs them.
            "enable.idempotence": False,
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "message.timeout.ms": 300_000,
            # Only failures call back into Python (confluent-kafka filters the successes in C).
            "delivery.report.only.error": True,
            **producer_config,
        }
        self._config = config
        self._made: Producer | None = None
        self._failed: list[str] = []
        # (original message, the output's (class, reason) or None for a dead letter, refusal)
        self._refused: list[tuple[Consumed, tuple[str, str] | None, str]] = []
        # Outputs are written with this worker's schema, whatever the input's writer used.
        self._schema_header = ("trafficreel-schema", processor.serializer.schema.fingerprint.hex().encode())

    @property
    def _producer(self) -> Producer:
        # Made on first use: checking a configuration must not connect anywhere.
        if self._made is None:
            self._made = Producer(self._config)
        return self._made

    def _on_delivery(
        self, message: Consumed, counted: tuple[str, str] | None, topic: str, err: Any, msg: Any
    ) -> None:
        if err is None:
            return
        if err.code() in _REFUSED and not (counted is None and message.value is None):
            self._refused.append((message, counted, f"{topic}: {err.str()}"))
        else:
            self._failed.append(f"{topic}: {err}")

    def send(self, batch: Iterable[Consumed]) -> BatchTally:
        """Process and produce a batch (without waiting for the broker)."""
        tally = BatchTally()
        out, dropped = tally.out, tally.dropped
        process, on_delivery = self.processor.process, self._on_delivery
        produce = self._producer.produce
        schema_header = self._schema_header
        for message in batch:
            tally.read += 1
            result = process(message.value, message.topic, message.partition)
            if not isinstance(result, Processed):
                self._dead_letter(message, result)
                tally.dlq[result.reason] += 1
                continue
            counted = (result.traffic_class, result.reason)
            if result.topic is None:
                dropped[counted] += 1
                continue
            headers: KafkaHeaders = [h for h in message.headers or () if h[0] != "trafficreel-schema"]
            headers += (schema_header, ("trafficreel-class", result.traffic_class.encode()))
            report = functools.partial(on_delivery, message, counted, result.topic)
            try:
                produce(
                    result.topic, result.value, message.key,
                    headers=headers, timestamp=message.timestamp or 0, on_delivery=report,
                )  # fmt: skip
            except BufferError:  # the local queue is full: the slow path waits for room
                self._produce(result.topic, result.value, message.key, headers, message.timestamp, report)
            except KafkaException as exc:  # refused before sending (e.g. over message.max.bytes)
                report(exc.args[0], None)
            out[counted] += 1
        self._producer.poll(0)
        return tally

    def _dead_letter(self, message: Consumed, letter: DeadLetter, value_dropped: bool = False) -> None:
        headers: KafkaHeaders = [
            *dead_letter_headers(message.headers, letter, message.topic, message.partition, message.offset)
        ]
        if value_dropped:
            headers.append((_VALUE_DROPPED, b"dropped: refused by the dead-letter topic"))
        report = functools.partial(self._on_delivery, message, None, self.dlq_topic)
        self._produce(self.dlq_topic, message.value, message.key, headers, message.timestamp, report)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: KafkaHeaders,
        timestamp_ms: int | None,
        on_delivery: Any,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=headers, timestamp=timestamp_ms or 0, on_delivery=on_delivery
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let deliveries drain it
            except KafkaException as exc:  # refused before sending (e.g. over message.max.bytes)
                on_delivery(exc.args[0], None)
                return

    def delivered(self, timeout: float = 300.0, tally: BatchTally | None = None) -> None:
        """Block until every record sent so far is acknowledged or dead-lettered.

        ``DeliveryError`` if any was not taken for another reason than what it is. Outputs moved to
        the dead-letter topic are counted in ``tally`` (out of ``out``, into ``dlq``).
        """
        deadline = time.monotonic() + timeout
        while True:
            self._flush(deadline, timeout)
            if self._failed:
                failed, self._failed = self._failed, []
                self._refused.clear()
                raise DeliveryError(f"{len(failed)} output records refused, e.g. {failed[0]}")
            if not self._refused:
                return
            refused, self._refused = self._refused, []
            for message, counted, detail in refused:
                letter = DeadLetter("output-refused", detail, "produce")
                if counted is None:  # the dead letter itself was refused: send it without the value
                    without = Message(
                        None, message.key, message.headers, message.topic, message.partition,
                        message.offset, message.timestamp,
                    )  # fmt: skip
                    self._dead_letter(without, letter, value_dropped=True)
                    continue
                if tally is not None:
                    tally.out[counted] -= 1
                    tally.dlq["output-refused"] += 1
                self._dead_letter(message, letter)

    def _flush(self, deadline: float, timeout: float) -> None:
        while len(self._producer):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeliveryError(
                    f"{len(self._producer)} output records not acknowledged within {timeout:.0f}s"
                )
            try:
                self._producer.flush(min(left, 1.0))
            except KafkaException as exc:
                raise DeliveryError(str(exc)) from exc

    def close(self, timeout: float = 10.0) -> None:
        if self._made is not None:
            self._made.flush(timeout)
