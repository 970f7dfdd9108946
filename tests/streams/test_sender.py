"""The batch sender against the real broker: a record the broker refuses for what it is goes to
the dead-letter topic, and the batch goes on."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from trafficreel.schemas import Serializer, sample_exchange
from trafficreel.streams import Processor, StreamRules
from trafficreel.streams._sender import BatchSender, BatchTally, DeliveryError, Message

from .workers import make_topics, read_all

pytestmark = pytest.mark.stack
LIMIT = 20_000  # message.max.bytes of the sender's producer: the big record is over it


def _sender(infra: Any, prefix: str) -> BatchSender:
    topics = {c: f"{prefix}.{c}" for c in ("business", "k8s-api", "probe", "scrape")}
    return BatchSender(
        Processor(StreamRules(), topics), infra.kafka_conf(**{"message.max.bytes": LIMIT}), f"{prefix}.dlq"
    )


def _message(prefix: str, offset: int, body_size: int) -> Message:
    record = sample_exchange(offset, body_size=body_size)
    value = Serializer()(record)
    headers = [("h", b"v"), ("trafficreel-schema", b"0123456789abcdef")]  # as an older writer's
    return Message(value, record["id"].encode(), headers, f"{prefix}.raw", 0, offset, 1_780_000_000_000)


def test_a_refused_output_goes_to_the_dlq_and_the_rest_lands(infra: Any) -> None:
    prefix = make_topics(infra.bootstrap, 1)
    sender = _sender(infra, prefix)
    batch = [_message(prefix, 0, 256), _message(prefix, 1, 40_000), _message(prefix, 2, 256)]
    tally = sender.send(batch)
    sender.delivered(timeout=30, tally=tally)
    sender.close()

    landed = read_all(infra.bootstrap, f"{prefix}.business")
    assert [m.offset for m in landed] == [0, 1]
    # Outputs are written with the worker's schema, and their header says so (not the input's).
    fingerprint = Serializer().schema.fingerprint.hex().encode()
    assert all(m.headers["trafficreel-schema"] == fingerprint and m.headers["h"] == b"v" for m in landed)
    [letter] = read_all(infra.bootstrap, f"{prefix}.dlq")
    # The original record is over the limit too: the dead letter says where it is, without it.
    assert letter.value is None
    assert letter.headers["trafficreel-dlq-reason"] == b"output-refused"
    assert b"too large" in letter.headers["trafficreel-dlq-detail"].lower()
    assert letter.headers["trafficreel-dlq-offset"] == b"1"
    assert letter.headers["trafficreel-dlq-value"].startswith(b"dropped")
    assert letter.headers["h"] == b"v"
    assert sum(tally.out.values()) == 2 and tally.dlq == {"output-refused": 1}


def test_a_refused_output_that_fits_the_dlq_keeps_its_bytes(infra: Any) -> None:
    prefix = make_topics(infra.bootstrap, 1)
    sender = _sender(infra, prefix)
    message = _message(prefix, 7, 256)
    tally = BatchTally()
    # The broker's answer for an output too large for its topic, as the delivery report gives it.
    sender._on_delivery(message, ("business", "sampled"), f"{prefix}.business", KafkaError(10), None)
    tally.out[("business", "sampled")] += 1
    sender.delivered(timeout=30, tally=tally)
    sender.close()
    [letter] = read_all(infra.bootstrap, f"{prefix}.dlq")
    assert letter.value == message.value and letter.key == message.key
    assert "trafficreel-dlq-value" not in letter.headers
    assert tally.out[("business", "sampled")] == 0 and tally.dlq == {"output-refused": 1}


def test_other_delivery_failures_fail_the_batch(infra: Any) -> None:
    """Anything else (not authorised, unknown topic, timed out) must leave the batch uncommitted."""
    prefix = make_topics(infra.bootstrap, 1)
    sender = _sender(infra, prefix)
    message = _message(prefix, 3, 256)
    sender._on_delivery(
        message, ("business", "sampled"), "x", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), None
    )
    with pytest.raises(DeliveryError, match="1 output records refused"):
        sender.delivered(timeout=30)
    sender.close()
    assert read_all(infra.bootstrap, f"{prefix}.dlq") == []
