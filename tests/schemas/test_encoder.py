"""The compiled encoder writes exactly the bytes fastavro writes, and refuses what fastavro refuses."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings

from tests.strategies import exchanges
from trafficreel.schemas import EncodeError, Exchange, Serializer, exchange_schema, sample_exchange
from trafficreel.schemas._encoder import compile_encoder


def _fastavro(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


@given(exchanges())
@settings(max_examples=300, deadline=None)
def test_identical_to_fastavro(record: Exchange) -> None:
    """For any record the compiled encoder's bytes equal fastavro's for the same schema."""
    out = bytearray()
    exchange_schema().encoder(record, out)
    assert bytes(out) == _fastavro(exchange_schema().parsed, record)


def test_header_pairs_may_be_tuples() -> None:
    """Headers given as (name, value) tuples encode like the equivalent dicts."""
    record = sample_exchange(1)
    as_tuples: Any = dict(record)
    as_tuples["request"] = {
        **record["request"],
        "headers": [(h["name"], h["value"]) for h in record["request"]["headers"]],
    }
    assert Serializer()(as_tuples) == Serializer()(record)


def test_memoised_source_follows_a_new_object() -> None:
    """Encoding reuses the source block only for the same object; a different source is encoded anew."""
    first, second = sample_exchange(1), sample_exchange(1)
    second["source"] = {**second["source"], "pod": "another-pod"}
    serializer = Serializer()
    a, b, a2 = serializer(first), serializer(second), serializer(first)
    assert a == a2 != b
    assert b"another-pod" in b and b"another-pod" not in a


def test_missing_defaulted_fields_take_their_default() -> None:
    """Fields with a default may be absent, as with fastavro."""
    record: Any = dict(sample_exchange(2))
    del record["tags"], record["redactions"], record["route"]
    expected = dict(sample_exchange(2)) | {"tags": {}, "redactions": [], "route": None}
    assert Serializer()(record) == Serializer()(expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [("start_time", 2**63), ("direction", "SIDEWAYS"), ("duration_us", None), ("id", 17)],
)
def test_bad_values_raise_encode_error(field: str, value: Any) -> None:
    """Out-of-range longs, unknown enum symbols, nulls in required fields and wrong types raise EncodeError."""
    record: Any = dict(sample_exchange(3))
    record[field] = value
    with pytest.raises(EncodeError, match=record["id"] if field != "id" else "17"):
        Serializer()(record)


def test_wrong_fixed_size_is_refused() -> None:
    """A SHA-256 that is not 32 bytes is refused."""
    record: Any = dict(sample_exchange(4))
    record["request"] = {**record["request"], "body": {**record["request"]["body"], "sha256": b"short"}}
    with pytest.raises(EncodeError, match="fixed size"):
        Serializer()(record)


def test_other_schemas_compile() -> None:
    """Floats, booleans, maps of records and reversed nullable unions compile and match fastavro."""
    schema = {
        "type": "record",
        "name": "T",
        "fields": [
            {"name": "f", "type": "float"},
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
        ],
    }
    record = {"f": 1.5, "b": True, "u": "s", "m": {"k": {"x": -3}}, "again": {"x": 300}}
    out = bytearray()
    compile_encoder(schema)(record, out)
    assert bytes(out) == _fastavro(parse_schema(schema), record)


def test_a_missing_source_is_refused_even_first() -> None:
    """The memoised source is compared with what came before; a first record without one is
    refused, not written without its source."""
    from trafficreel.schemas._schema import _strip_logical_types

    fresh = compile_encoder(_strip_logical_types(exchange_schema().json), memo_fields=frozenset({"source"}))
    record: Any = dict(sample_exchange(5))
    record["source"] = None
    with pytest.raises(TypeError):
        fresh(record, bytearray())


def test_record_items_of_a_dict_subclass_are_read_by_name() -> None:
    """A header given as a dict subclass is read by field name, not unpacked as its keys."""

    class Header(dict[str, bytes]):
        pass

    record: Any = dict(sample_exchange(6))
    plain = Serializer()(record)
    record["request"] = {
        **record["request"],
        "headers": [Header(name=h["name"], value=h["value"]) for h in record["request"]["headers"]],
    }
    assert Serializer()(record) == plain
