"""The compiled decoder reads exactly what fastavro reads, and bad bytes only ever give DecodeError."""

from __future__ import annotations

import io

import pytest
from fastavro import schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import exchanges
from trafficreel.schemas import (
    DecodeError,
    Deserializer,
    Exchange,
    Serializer,
    exchange_schema,
    sample_exchange,
)
from trafficreel.schemas._decoder import compile_decoder

SCHEMA = exchange_schema()
HEADER = b"\xc3\x01" + SCHEMA.fingerprint


@given(exchanges())
@settings(max_examples=300, deadline=None)
def test_identical_to_fastavro(record: Exchange) -> None:
    """For any record the compiled decoder returns what fastavro returns, and consumes every byte."""
    data = Serializer()(record)
    buf = io.BytesIO(data)
    buf.seek(len(HEADER))
    expected = schemaless_reader(buf, SCHEMA.parsed, None)
    assert SCHEMA.decoder(data, len(HEADER)) == (expected, len(data))


def test_every_truncation_is_a_decode_error() -> None:
    """A record cut at any byte raises DecodeError (truncated or malformed), never anything else."""
    data = Serializer()(sample_exchange(5))
    decoder = Deserializer()
    for end in range(len(HEADER), len(data)):
        with pytest.raises(DecodeError) as caught:
            decoder(data[:end])
        assert caught.value.reason in ("truncated", "malformed")


@given(st.binary(max_size=600))
@settings(max_examples=500, deadline=None)
def test_random_bodies_only_raise_decode_error(body: bytes) -> None:
    """Random bytes behind a valid header decode or raise DecodeError; nothing else escapes."""
    try:
        Deserializer()(HEADER + body)
    except DecodeError:
        pass


def test_huge_block_counts_are_refused_fast() -> None:
    """An array claiming billions of items in a few bytes is malformed at once, not a long loop."""
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}],
    }
    with pytest.raises(ValueError, match="beyond the data"):
        compile_decoder(schema)(b"\x80\x80\x80\x80\x10\x00", 0)


def test_other_types_match_fastavro() -> None:
    """Floats, booleans, maps of records, negative block counts and reversed unions read like fastavro."""
    from fastavro import parse_schema, schemaless_writer

    schema = {
        "type": "record",
        "name": "T",
        "fields": [
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "b", "type": "boolean"},
            {"name": "u", "type": ["string", "null"]},
            {
                "name": "m",
                "type": {
                    "type": "map",
                    "values": {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]},
                },
            },
            {"name": "again", "type": ["null", "R"]},
            {"name": "big", "type": "long"},
        ],
    }
    record = {
        "f": 1.5,
        "d": -2.25,
        "b": True,
        "u": None,
        "m": {"k": {"x": -3}, "j": {"x": 1 << 20}},
        "again": {"x": 300},
        "big": -(1 << 62),
    }
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), record)
    assert compile_decoder(schema)(out.getvalue(), 0) == (record, len(out.getvalue()))
    # A block with a negative count carries its byte size first (as Java writers may emit).
    blocked = {
        "type": "record",
        "name": "B",
        "fields": [{"name": "a", "type": {"type": "array", "items": "int"}}],
    }
    data = b"\x03\x04\x02\x04\x00"  # count -2, block size 2, items 1 and 2, end of array
    assert compile_decoder(blocked)(data, 0) == ({"a": [1, 2]}, 5)
