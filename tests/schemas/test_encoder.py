"""The compiled encoder writes exactly the bytes fastavro writes, and refuses what fastavro refuses;
the C fast path in front of it writes the same bytes, and leaves everything else to it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings

from tests.strategies import exchanges
from trafficreel.schemas import EncodeError, Exchange, Serializer, _decoder, exchange_schema, sample_exchange
from trafficreel.schemas._encoder import compile_encoder
from trafficreel.schemas._schema import _strip_logical_types

SCHEMA = _strip_logical_types(exchange_schema().json)
NATIVE = compile_encoder(SCHEMA, memo_fields=frozenset({"source"}), native=True)
PYTHON = compile_encoder(SCHEMA, memo_fields=frozenset({"source"}), native=False)
both = pytest.mark.parametrize("native", [True, False], ids=["native", "python"])


def _fastavro(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


def test_the_c_fast_path_is_in_use() -> None:
    """The package is built with its C extension here, and the schema's encoder is its Writer."""
    assert _decoder.NATIVE
    assert isinstance(exchange_schema().encoder, _decoder._c().Writer)


@given(exchanges())
@settings(max_examples=300, deadline=None)
def test_identical_to_fastavro(record: Exchange) -> None:
    """For any record both encoders' bytes equal fastavro's for the same schema."""
    expected = _fastavro(exchange_schema().parsed, record)
    for encode in (NATIVE, PYTHON):
        out = bytearray()
        encode(record, out)
        assert bytes(out) == expected


def _outcome(encode: Any, record: Any) -> Any:
    out = bytearray(b"before")
    try:
        encode(record, out)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc), str(exc), bytes(out)
    return bytes(out)


class _Dict(dict[str, Any]):
    pass


class _Str(str):
    __slots__ = ()


def _changed(change: Any) -> Any:
    record: Any = {**sample_exchange(7)}
    record["request"] = {**record["request"], "body": {**record["request"]["body"]}}
    change(record)
    return record


_UNUSUAL = {
    "a dict subclass": lambda r: r.update(request=_Dict(r["request"])),
    "header pairs as lists": lambda r: r["request"].update(
        headers=[[h["name"], h["value"]] for h in r["request"]["headers"]]
    ),
    "headers as a tuple": lambda r: r["request"].update(headers=tuple(r["request"]["headers"])),
    "a bytearray body": lambda r: r["request"]["body"].update(data=bytearray(b"{}")),
    "a memoryview path": lambda r: r["request"].update(path=memoryview(b"/x")),
    "a bool for a long": lambda r: r.update(duration_us=True),
    "an int for a double": lambda r: r.update(sample_weight=3),
    "a str subclass": lambda r: r.update(id=_Str(r["id"])),
    "a str enum symbol subclass": lambda r: r.update(direction=_Str("INBOUND")),
    "None for an array": lambda r: r.update(redactions=None),
    "a missing defaulted field": lambda r: r.pop("tags"),
    "a key that is not a str": lambda r: r.update({1: "x"}),
    "a long out of range": lambda r: r.update(start_time=2**63),
    "an unknown enum symbol": lambda r: r.update(direction="SIDEWAYS"),
    "None where a value is required": lambda r: r.update(duration_us=None),
    "a wrong type": lambda r: r.update(id=17),
    "a lone surrogate": lambda r: r.update(route="/\ud800"),
    "a short fixed": lambda r: r["request"]["body"].update(sha256=b"short"),
    "a tuple of the wrong size": lambda r: r["request"].update(headers=[(b"a", b"b", b"c")]),
    "a missing required field": lambda r: r.pop("id"),
}


@pytest.mark.parametrize("change", list(_UNUSUAL.values()), ids=list(_UNUSUAL))
def test_unusual_records_are_written_or_refused_as_the_python_encoder_does(change: Any) -> None:
    """Subclasses, other buffer and sequence types, missing fields and bad values leave the C
    path to the Python encoder: the same bytes, or the same error with ``out`` untouched."""
    assert _outcome(NATIVE, _changed(change)) == _outcome(PYTHON, _changed(change))


def test_a_key_that_runs_code_when_compared_cannot_upset_the_c_path() -> None:
    """A dict key whose __eq__ clears the record it sits in (as a hostile or buggy object may):
    the C code never compares it, the Python encoder meets it, and nothing crashes."""

    def hostile() -> Any:
        record: Any = {}

        class Key:
            def __hash__(self) -> int:
                return hash("id")

            def __eq__(self, other: object) -> bool:
                record.clear()
                return False

        record[Key()] = "x"
        record.update(sample_exchange(8))
        return record

    assert _outcome(NATIVE, hostile()) == _outcome(PYTHON, hostile())


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


_OTHER = {
    "type": "record",
    "name": "T",
    "fields": [
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "u", "type": ["string", "null"]},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
        {"name": "x", "type": {"type": "fixed", "name": "X", "size": 4}},
        {"name": "a", "type": {"type": "array", "items": "long"}},
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


@both
@pytest.mark.parametrize(
    "record",
    [
        {"f": 1.5, "d": -2.25, "b": True, "u": "s", "e": "C", "x": b"abcd", "a": [1, -300, 2**40],
         "m": {"k": {"x": -3}, "é": {"x": 0}}, "again": {"x": 300}},
        {"f": -0.0, "d": 1e300, "b": False, "u": None, "e": "A", "x": b"\x00" * 4, "a": [], "m": {},
         "again": None},
    ],
    ids=["values", "nulls-and-empties"],
)  # fmt: skip
def test_other_schemas_compile(native: bool, record: dict[str, Any]) -> None:
    """Floats, booleans, enums, fixed, arrays, maps of records and reversed nullable unions (the
    null second) compile and match fastavro, with values and with nulls and empty containers."""
    out = bytearray()
    compile_encoder(_OTHER, native=native)(record, out)
    assert bytes(out) == _fastavro(parse_schema(_OTHER), record)


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


_EDGES = {
    "no-fields": ({"type": "record", "name": "N", "fields": []}, {}),
    "fixed-0": ({"type": "record", "name": "Z", "fields": [{"name": "z", "type": {"type": "fixed", "name": "Z0", "size": 0}}]}, {"z": b""}),
    "array-of-null": ({"type": "record", "name": "A", "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}]}, {"a": [None, None]}),
    "array-of-empty-records": ({"type": "record", "name": "R", "fields": [{"name": "r", "type": {"type": "array", "items": {"type": "record", "name": "X", "fields": []}}}]}, {"r": [{}, ()]}),
    "twice-listed-symbol": ({"type": "record", "name": "E", "fields": [{"name": "e", "type": {"type": "enum", "name": "S", "symbols": ["a", "b", "a"]}}]}, {"e": "a"}),
}  # fmt: skip


@pytest.mark.parametrize(("schema", "record"), list(_EDGES.values()), ids=list(_EDGES))
def test_edge_schemas_give_the_same_bytes_on_both_paths(
    schema: dict[str, Any], record: dict[str, Any]
) -> None:
    """Schemas the C tree may not hold (an array of nulls) fall back to Python when the C path is
    not demanded; the rest give Python's bytes (a symbol listed twice takes its last index)."""
    python, default = bytearray(), bytearray()
    compile_encoder(schema, native=False)(record, python)
    compile_encoder(schema)(record, default)
    assert default == python


def test_a_field_named_by_a_str_subclass_runs_none_of_its_code() -> None:
    """Field names are copied as exact str when the C tree is built: a subclass's __hash__ and
    __eq__ (which could free what the writer holds) are never called while a record is written."""
    calls: list[str] = []

    class Name(str):
        __slots__ = ()

        def __hash__(self) -> int:
            calls.append("hash")
            return str.__hash__(self)

        def __eq__(self, other: object) -> bool:
            calls.append("eq")
            return str.__eq__(self, other)

    schema = {"type": "record", "name": "R", "fields": [{"name": Name("a"), "type": "long"}]}
    writer = compile_encoder(schema, native=True)
    calls.clear()
    out = bytearray()
    writer({"a": 300}, out)
    assert bytes(out) == b"\xd8\x04"
    assert calls == []
