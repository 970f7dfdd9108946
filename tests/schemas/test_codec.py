"""The wire codec: single-object and Confluent framing, round trips, and typed decode errors."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import exchanges
from trafficreel.schemas import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    ConfluentRegistry,
    DecodeError,
    Deserializer,
    EncodeError,
    Exchange,
    Serializer,
    WriterSchema,
    exchange_schema,
    sample_exchange,
)


class _Topic:
    def __init__(self, topic: str) -> None:
        self.topic = topic


@given(exchanges())
@settings(max_examples=300, deadline=None)
def test_round_trip_keeps_every_byte(record: Exchange) -> None:
    """Any record, with arbitrary bytes in paths, queries, header values and bodies, decodes back equal."""
    assert Deserializer()(Serializer()(record)) == record


def test_default_framing_is_avro_single_object() -> None:
    """Without a registry the value is C3 01, the schema's CRC-64-AVRO fingerprint, then the body."""
    data = Serializer()(sample_exchange(1))
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert data[2:10] == exchange_schema().fingerprint
    assert len(exchange_schema().fingerprint) == 8


def test_confluent_framing_with_a_registry() -> None:
    """With a registry the value is 00 + the 4-byte schema id, and it decodes through the registry."""
    registry = ConfluentRegistry("mock://codec-test")
    data = Serializer(registry=registry)(sample_exchange(2), _Topic("trafficreel.raw"))
    assert data[:1] == CONFLUENT_MAGIC
    (schema_id,) = struct.unpack(">I", data[1:5])
    assert registry.schema_text(schema_id) == exchange_schema().text
    assert Deserializer(registry=registry)(data) == sample_exchange(2)


class _RecordingRegistry(ConfluentRegistry):
    def __init__(self) -> None:
        super().__init__("mock://subjects-test")
        self.subjects: list[str] = []

    def register(self, subject: str, schema_text: str) -> int:
        self.subjects.append(subject)
        return super().register(subject, schema_text)


def test_confluent_subjects_follow_the_topic() -> None:
    """Each topic registers the schema once, under <topic>-value (Confluent's TopicNameStrategy)."""
    registry = _RecordingRegistry()
    serializer = Serializer(registry=registry)
    for _ in range(3):
        serializer(sample_exchange(3), _Topic("a.raw"))
        serializer(sample_exchange(3), _Topic("a.business"))
    assert registry.subjects == ["a.raw-value", "a.business-value"]


def test_decoder_reads_both_framings() -> None:
    """One decoder reads single-object and Confluent-framed values alike."""
    registry = ConfluentRegistry("mock://both-test")
    decoder = Deserializer(registry=registry)
    single = Serializer()(sample_exchange(4))
    confluent = Serializer(registry=registry)(sample_exchange(5), _Topic("t"))
    assert decoder(single)["id"] == sample_exchange(4)["id"]
    assert decoder(confluent)["id"] == sample_exchange(5)["id"]


def _reason(data: bytes, decoder: Deserializer | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        (decoder or Deserializer())(data)
    assert info.value.data == data
    return info.value.reason


def test_decode_errors_name_their_reason() -> None:
    """Empty, wrong magic, cut headers, cut bodies, unknown fingerprints and trailing bytes each get a reason."""
    good = Serializer()(sample_exchange(6))
    assert _reason(b"") == "empty"
    assert _reason(b"{json}") == "bad-magic"
    assert _reason(good[:6]) == "truncated"
    assert _reason(good[:-3]) == "truncated"
    assert _reason(SINGLE_OBJECT_MAGIC + b"\x01" * 8 + good[10:]) == "unknown-fingerprint"
    assert _reason(good + b"\x00\x00") == "malformed"
    assert _reason(b"\x00\x00\x00") == "truncated"
    assert _reason(b"\x00\x00\x00\x00\x07" + good[10:]) == "registry-required"
    assert _reason(
        b"\x00\x00\x00\x03\xe7" + good[10:], Deserializer(registry=ConfluentRegistry("mock://e"))
    ) == ("unknown-schema-id")


def test_decode_error_carries_kafka_coordinates() -> None:
    """A decode error located at a topic, partition and offset says so and keeps the raw bytes."""
    with pytest.raises(DecodeError) as info:
        Deserializer()(b"nope")
    located = info.value.at("trafficreel.raw", 2, 41)
    assert (located.topic, located.partition, located.offset, located.data) == (
        "trafficreel.raw",
        2,
        41,
        b"nope",
    )
    assert "trafficreel.raw[2]@41" in str(located)
    assert "bad-magic" in str(located)


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    """Arbitrary bytes either decode or raise DecodeError, never anything else."""
    try:
        Deserializer()(data)
    except DecodeError:
        pass


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_corrupted_bodies_raise_only_decode_error(tail: bytes) -> None:
    """A valid header followed by arbitrary bytes raises DecodeError or decodes, never crashes."""
    header = SINGLE_OBJECT_MAGIC + exchange_schema().fingerprint
    try:
        Deserializer()(header + tail)
    except DecodeError:
        pass


def test_encode_error_names_the_record() -> None:
    """A record that does not match the schema raises EncodeError naming the record id."""
    record = dict(sample_exchange(7))
    record["duration_us"] = "slow"
    with pytest.raises(EncodeError, match=record["id"]):
        Serializer()(record)


def test_writer_schema_from_text_matches_file() -> None:
    """Parsing the schema text (as a registry returns it) gives the same fingerprint as the file."""
    assert WriterSchema.from_json(exchange_schema().text).fingerprint == exchange_schema().fingerprint
