"""The compiled decoders (the C one and the generated Python) read exactly what fastavro reads, and
bad bytes only ever give DecodeError."""

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
    _decoder,
    exchange_schema,
    sample_exchange,
)
from trafficreel.schemas._decoder import compile_decoder, compile_split_decoder
from trafficreel.schemas._schema import _strip_logical_types

SCHEMA = exchange_schema()
HEADER = b"\xc3\x01" + SCHEMA.fingerprint
PLAIN = _strip_logical_types(SCHEMA.json)
DECODERS = {
    "native": compile_decoder(PLAIN, native=True),
    "python": compile_decoder(PLAIN, native=False),
}
both = pytest.mark.parametrize("native", [True, False], ids=["native", "python"])


def test_the_c_decoder_is_built_and_used() -> None:
    """The package's C decoder is built and is what the codec uses (the stream worker's speed
    rests on it); TRAFFICREEL_PURE_PYTHON=1 would turn it off."""
    assert _decoder.NATIVE
    assert type(SCHEMA.decoder).__module__ == "trafficreel.schemas._cavro"


@given(exchanges())
@settings(max_examples=300, deadline=None)
def test_identical_to_fastavro(record: Exchange) -> None:
    """For any record both compiled decoders return what fastavro returns, field order included,
    and consume every byte."""
    data = Serializer()(record)
    buf = io.BytesIO(data)
    buf.seek(len(HEADER))
    expected = schemaless_reader(buf, SCHEMA.parsed, None)
    for decode in DECODERS.values():
        value, end = decode(data, len(HEADER))
        assert (value, end) == (expected, len(data))
        assert list(value) == list(expected)
        assert list(value["request"]) == list(expected["request"])


def test_every_truncation_is_a_decode_error() -> None:
    """A record cut at any byte raises DecodeError (truncated or malformed), never anything else;
    each decoder raises only the errors the codec turns into DecodeError."""
    data = Serializer()(sample_exchange(5))
    decoder = Deserializer()
    for end in range(len(HEADER), len(data)):
        with pytest.raises(DecodeError) as caught:
            decoder(data[:end])
        assert caught.value.reason in ("truncated", "malformed")
        for decode in DECODERS.values():
            with pytest.raises((IndexError, EOFError, ValueError)):
                decode(data[:end], len(HEADER))


@given(st.binary(max_size=600))
@settings(max_examples=500, deadline=None)
def test_random_bodies_only_raise_decode_error(body: bytes) -> None:
    """Random bytes behind a valid header decode or raise DecodeError; nothing else escapes. Where
    both decoders read a value, it is the same value."""
    try:
        Deserializer()(HEADER + body)
    except DecodeError:
        pass
    results = []
    for decode in DECODERS.values():
        try:
            results.append(decode(HEADER + body, len(HEADER)))
        except (IndexError, EOFError, ValueError, UnicodeDecodeError):
            results.append(None)
    if None not in results:
        assert results[0] == results[1]


@both
def test_huge_block_counts_are_refused_fast(native: bool) -> None:
    """An array claiming billions of items in a few bytes is malformed at once, not a long loop."""
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": {"type": "array", "items": "long"}}],
    }
    with pytest.raises(ValueError, match="beyond the data"):
        compile_decoder(schema, native=native)(b"\x80\x80\x80\x80\x10\x00", 0)


@both
def test_other_types_match_fastavro(native: bool) -> None:
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
    assert compile_decoder(schema, native=native)(out.getvalue(), 0) == (record, len(out.getvalue()))
    # A block with a negative count carries its byte size first (as Java writers may emit).
    blocked = {
        "type": "record",
        "name": "B",
        "fields": [{"name": "a", "type": {"type": "array", "items": "int"}}],
    }
    data = b"\x03\x04\x02\x04\x00"  # count -2, block size 2, items 1 and 2, end of array
    assert compile_decoder(blocked, native=native)(data, 0) == ({"a": [1, 2]}, 5)


@both
def test_varint_widths_and_out_of_range_indexes(native: bool) -> None:
    """Longs at every varint width boundary read like fastavro; a union branch or enum index
    beyond the schema is malformed, not a wrong value."""
    from fastavro import parse_schema, schemaless_writer

    schema = {
        "type": "record",
        "name": "V",
        "fields": [
            {"name": "n", "type": {"type": "array", "items": "long"}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "u", "type": ["null", "bytes"]},
        ],
    }
    edges = [0, -1, 63, -64, 64, -65, 8191, -8192, 8192, -8193, 1 << 20, (1 << 63) - 1, -(1 << 63)]
    record = {"n": edges, "e": "C", "u": b"x" * 200}
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), record)
    data = out.getvalue()
    decode = compile_decoder(schema, native=native)
    assert decode(data, 0) == (record, len(data))
    enum_at = data.index(b"\x04" + b"\x02\x90\x03")  # enum C (index 2) before union branch 1, length 200
    for position, byte in ((enum_at, 6), (enum_at, 3), (enum_at + 1, 4)):
        bad = data[:position] + bytes([byte]) + data[position + 1 :]
        with pytest.raises(ValueError, match="out of range"):
            decode(bad, 0)


@both
def test_lengths_at_every_width_and_negative_lengths(native: bool) -> None:
    """Strings and bytes of every varint width of length read like fastavro; a negative length is
    malformed at any width, and data cut inside the last value is truncated."""
    from fastavro import parse_schema, schemaless_writer

    schema = {
        "type": "record",
        "name": "L",
        "fields": [
            {"name": "s", "type": {"type": "array", "items": "string"}},
            {"name": "b", "type": "bytes"},
        ],
    }
    record = {"s": ["x" * n for n in (0, 1, 63, 64, 8191, 8192, 70_000)], "b": b"\x00\xff" * 40}
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), record)
    data = out.getvalue()
    decode = compile_decoder(schema, native=native)
    assert decode(data, 0) == (record, len(data))
    with pytest.raises(EOFError):
        decode(data[:-1], 0)
    for negative in (b"\x01", b"\x81\x01", b"\x81\x80\x80\x01"):  # -1 in one byte, -65 in two, more
        with pytest.raises(ValueError, match="negative length"):
            decode(b"\x02" + negative + b"abc\x00\x00", 0)


@given(exchanges())
@settings(max_examples=100, deadline=None)
def test_split_decoder_says_where_a_field_starts(record: Exchange) -> None:
    """The split decoder returns what the decoder returns, and the bytes from the split on are
    exactly the encoding of the fields from the named one on (what the stream worker rewrites)."""
    from trafficreel.schemas._encoder import compile_encoder

    data = Serializer()(record)
    decoded, end, split = SCHEMA.split_decoder("traffic_class")(data, len(HEADER))
    assert (decoded, end) == SCHEMA.decoder(data, len(HEADER))
    python = compile_split_decoder(PLAIN, "traffic_class", native=False)(data, len(HEADER))
    assert python == (decoded, end, split)
    fields = SCHEMA.json["fields"]
    first = [f["name"] for f in fields].index("traffic_class")
    tail = compile_encoder({"type": "record", "name": "Tail", "fields": fields[first:]})
    out = bytearray()
    tail(decoded, out)
    assert data[split:] == bytes(out)
    with pytest.raises(ValueError, match="no field"):
        SCHEMA.split_decoder("no_such_field")


@both
def test_padded_enum_indexes_read_and_overlong_varints_are_malformed(native: bool) -> None:
    """An enum index padded to more bytes reads as fastavro reads it; a varint whose tenth byte
    carries bits beyond 64 is malformed, not a number no Avro long can hold."""
    schema = {
        "type": "record",
        "name": "P",
        "fields": [
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "n", "type": "long"},
        ],
    }
    decode = compile_decoder(schema, native=native)
    assert decode(b"\x84\x00\x02", 0) == ({"e": "C", "n": 1}, 3)
    assert decode(b"\x00" + b"\xfe" + b"\xff" * 8 + b"\x01", 0) == ({"e": "A", "n": (1 << 63) - 1}, 11)
    with pytest.raises(ValueError, match="64 bits"):
        decode(b"\x00" + b"\xff" * 9 + b"\x7f", 0)


@both
def test_arrays_of_items_that_take_no_bytes_are_refused(native: bool) -> None:
    """A few bytes could claim billions of null items: such schemas are not compiled at all."""
    for items in (
        "null",
        {"type": "record", "name": "Empty", "fields": []},
        {"type": "fixed", "name": "F", "size": 0},
    ):
        schema = {
            "type": "record",
            "name": "Z",
            "fields": [{"name": "a", "type": {"type": "array", "items": items}}],
        }
        with pytest.raises(ValueError, match="may take no bytes"):
            compile_decoder(schema, native=native)


def test_the_c_decoder_refuses_trees_nested_too_deep() -> None:
    """A hand-made tree deeper than any schema is refused, not a crash of the C stack."""
    from trafficreel.schemas import _cavro

    tree: tuple[object, ...] = (2,)
    for _ in range(500):
        tree = (10, tree)
    with pytest.raises(ValueError, match="deeper than"):
        _cavro.Program(tree)
