"""The processor: one raw record in, a routed record, a counted drop or a dead letter out."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings

from tests.strategies import exchanges
from trafficreel.schemas import Deserializer, Exchange, Serializer
from trafficreel.streams import DeadLetter, Processed, Processor, StreamRules, dead_letter_headers

from .support import TOPICS, exchange

SERIALIZER, DESERIALIZER = Serializer(), Deserializer()
TAIL = ("traffic_class", "class_rule", "route", "sample_weight", "redactions")


def _process(record: Exchange, processor: Processor | None = None) -> Processed:
    result = (processor or Processor(StreamRules(), TOPICS)).process(SERIALIZER(record), "t.raw")
    assert isinstance(result, Processed)
    return result


@given(exchanges())
@settings(max_examples=150, deadline=None)
def test_output_is_the_input_plus_stream_fields(record: Exchange) -> None:
    """Whatever the record, the output decodes to it with class, rule, route and weight set (and any
    redaction listed), and its bytes are exactly what the serializer writes for that record."""
    record = copy.deepcopy(record)
    record["trace"]["trace_id"] = None
    record["response"]["status"] = 200
    result = _process(record)
    assert result.value is not None and result.topic in TOPICS.values()
    out = DESERIALIZER(result.value)
    assert SERIALIZER(out) == result.value
    assert out["id"] == record["id"]
    assert out["request"]["path"] == record["request"]["path"]  # the raw path is never changed
    assert out["traffic_class"] and out["class_rule"] and out["route"] is not None
    assert out["sample_weight"] == 1.0
    if len(out["redactions"]) == len(record["redactions"]):
        assert {k: v for k, v in out.items() if k not in TAIL} == {
            k: v for k, v in record.items() if k not in TAIL
        }


def test_fast_path_is_taken_for_recorder_output() -> None:
    """A clean record from a recorder is not re-encoded whole, yet the bytes are the same."""

    class Counting(Serializer):
        calls = 0

        def __call__(self, record, ctx=None):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().__call__(record, ctx)

    record = exchange(path=b"/v1/orders/9")
    result = _process(record, Processor(StreamRules(), TOPICS, serializer=Counting()))
    assert Counting.calls == 0 and result.value is not None
    out = DESERIALIZER(result.value)
    assert (out["traffic_class"], out["class_rule"], out["route"]) == (
        "business",
        "default",
        "/v1/orders/{id}",
    )
    assert SERIALIZER(out) == result.value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"garbage", "bad-magic"),
        (b"\xc3\x01\x00\x00", "truncated"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown-fingerprint"),
        (b"\x00\x00\x00\x00\x07rest", "registry-required"),
    ],
)
def test_undecodable_values_become_dead_letters(value: bytes, reason: str) -> None:
    """Bytes the decoder cannot read give a dead letter with the decoder's exact reason."""
    result = Processor(StreamRules(), TOPICS).process(value, "t.raw")
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.stage) == (reason, "decode")


def test_a_cut_record_is_a_dead_letter() -> None:
    """A record cut short after a valid header is 'truncated'; trailing junk is 'malformed'."""
    raw = SERIALIZER(exchange())
    processor = Processor(StreamRules(), TOPICS)
    cut, junk = processor.process(raw[:-40], "t.raw"), processor.process(raw + b"\x00", "t.raw")
    assert isinstance(cut, DeadLetter) and cut.reason == "truncated"
    assert isinstance(junk, DeadLetter) and junk.reason == "malformed"


def test_dead_letter_headers_keep_the_original_and_say_where_from() -> None:
    """The dead letter keeps the original headers and adds reason, stage, topic, partition and offset."""
    letter = DeadLetter("bad-magic", "starts with 6761", "decode")
    headers = dict(dead_letter_headers([("trafficreel-service", b"orders")], letter, "t.raw", 4, 1234))
    assert headers == {
        "trafficreel-service": b"orders",
        "trafficreel-dlq-reason": b"bad-magic",
        "trafficreel-dlq-detail": b"starts with 6761",
        "trafficreel-dlq-stage": b"decode",
        "trafficreel-dlq-topic": b"t.raw",
        "trafficreel-dlq-partition": b"4",
        "trafficreel-dlq-offset": b"1234",
    }


def test_classes_go_to_their_topics_or_are_dropped() -> None:
    """Each class has its topic; a class mapped to null is dropped and counted as such."""
    processor = Processor(StreamRules(), {**TOPICS, "probe": None})
    k8s = exchange(direction="OUTBOUND", host="kubernetes.default.svc", path=b"/api/v1/pods")
    probe = exchange(path=b"/healthz", headers={"user-agent": "kube-probe/1.31"})
    assert _process(k8s, processor).topic == "t.k8s-api"
    dropped = _process(probe, processor)
    assert (dropped.topic, dropped.value, dropped.reason) == (None, None, "class")


def test_every_class_needs_an_output() -> None:
    """A rule's class without an output topic is refused at start, with what to do."""
    rules = StreamRules.model_validate({"rules": [{"name": "x", "class": "internal", "path": "/i"}]})
    with pytest.raises(ValueError, match="outputs:"):
        Processor(rules, TOPICS)


def test_registry_framing_in_and_out() -> None:
    """With a Schema Registry, outputs are Confluent-framed under their topic's subject, and
    Confluent-framed input is read back."""
    from trafficreel.schemas import ConfluentRegistry

    registry = ConfluentRegistry("mock://streams-test")
    processor = Processor(
        StreamRules(),
        TOPICS,
        serializer=Serializer(registry=registry),
        deserializer=Deserializer(registry=registry),
    )
    first = _process(exchange(path=b"/v1/orders/1"), processor)
    assert first.value is not None and first.value[:1] == b"\x00"
    again = processor.process(first.value, "t.business")
    assert isinstance(again, Processed) and again.value == first.value
    assert Deserializer(registry=registry)(first.value)["route"] == "/v1/orders/{id}"
