"""The sink's insert path: records' own Avro bytes, parsed by ClickHouse, land field for field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import exchanges
from trafficreel.replay._archive import rebuild_from_clickhouse
from trafficreel.schemas import DecodeError, Exchange, Serializer, exchange_schema, sample_exchange
from trafficreel.sinks import migrate
from trafficreel.sinks._avro import AvroBatch, AvroInsert, clickhouse_structure, read_id_and_start

pytestmark = pytest.mark.stack
SERIALIZER = Serializer()
_YEAR_2001_US = 978_307_200_000_000
_YEAR_2099_US = 4_070_908_800_000_000


def _storable(record: dict[str, Any]) -> Exchange:
    """Bound the values to the table's column ranges (ports and status UInt16, sizes UInt64,
    times within DateTime64's range); everything else stays as drawn."""
    record["start_time"] = _YEAR_2001_US + record["start_time"] % (_YEAR_2099_US - _YEAR_2001_US)
    record["duration_us"] = abs(record["duration_us"]) % 2**62
    for side in ("request", "response"):
        body = record[side]["body"]
        body["size"] = abs(body["size"]) % 2**62
        if body["declared_length"] is not None:
            body["declared_length"] = abs(body["declared_length"]) % 2**62
    for key in ("remote_port", "local_port"):
        if record["peer"][key] is not None:
            record["peer"][key] %= 65536
    if record["response"]["status"] is not None:
        record["response"]["status"] %= 65536
    return record  # type: ignore[return-value]


def _as_stored(record: Exchange) -> Exchange:
    """What the table keeps for fields the stream fills in (an unclassified record's defaults)."""
    stored: Any = dict(record)
    stored["traffic_class"] = record["traffic_class"] or "unclassified"
    stored["class_rule"] = record["class_rule"] or None  # stored as '', read back as None
    stored["route"] = record["route"] or None
    stored["sample_weight"] = 1.0 if record["sample_weight"] is None else record["sample_weight"]
    return stored  # type: ignore[no-any-return]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(exchanges().map(_storable), min_size=1, max_size=8, unique_by=lambda r: r["id"]))
def test_records_read_back_equal_what_was_sent(clickhouse: Any, records: list[Exchange]) -> None:
    """Every field of arbitrary records (bytes that are not UTF-8 in paths, headers and bodies,
    nulls, empty lists, maps) survives ClickHouse's reading of the Avro bytes the sink sends."""
    migrate(clickhouse)
    clickhouse.command("TRUNCATE TABLE exchanges")
    insert = AvroInsert(exchange_schema())
    rows = AvroBatch(insert)
    for offset, record in enumerate(records):
        rows.add(SERIALIZER(record), 10, "topic.a", 4, 1000 + offset)
    insert.send(clickhouse, rows.payload())
    stored = {
        r["id"]: (r, t, p, o)
        for r, t, p, o in rebuild_from_clickhouse(clickhouse, [r["id"] for r in records])
    }
    for offset, record in enumerate(records):
        assert stored[record["id"]] == (_as_stored(record), "topic.a", 4, 1000 + offset)


def test_structure_is_how_clickhouse_reads_the_container(clickhouse: Any, tmp_path: Any) -> None:
    """The structure given to input() is the one ClickHouse itself infers from the container."""
    insert = AvroInsert(exchange_schema())
    rows = AvroBatch(insert)
    rows.add(SERIALIZER(sample_exchange(1)), 10, "t", 0, 0)
    path = tmp_path / "batch.avro"
    path.write_bytes(rows.payload())
    inferred = clickhouse.query(f"DESCRIBE file('{path}', Avro)").result_rows
    described = ", ".join(f"{name} {type_}" for name, type_, *_ in inferred)
    assert _normalise(described) == _normalise(clickhouse_structure(insert.extended))


def _normalise(structure: str) -> str:
    return " ".join(structure.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split())


def test_id_and_start_are_read_without_decoding() -> None:
    """The sink reads a record's id and start time from the first bytes; a cut record is refused."""
    record = sample_exchange(3)
    data = SERIALIZER(record)
    assert read_id_and_start(data, 10) == (record["id"], record["start_time"])
    with pytest.raises(DecodeError, match="id and start time"):
        read_id_and_start(data[:12], 10)


_INSERTS = {native: AvroInsert(exchange_schema(), native=native) for native in (True, False)}


def _read(native: bool, data: bytes, offset: int = 7) -> Any:
    """What ``AvroInsert.read`` gives, with the block's parts as bytes (comparable)."""
    found = _INSERTS[native].read(data, "topic.c", 3, offset)
    if found is None:
        return None
    record_id, start_time, (head, body) = found
    return record_id, start_time, bytes(head), bytes(body)


@settings(max_examples=200, deadline=None)
@given(exchanges(), st.integers(min_value=0, max_value=2**62))
def test_a_record_is_read_the_same_by_the_c_and_the_python_code(record: Exchange, offset: int) -> None:
    """The sink reads a record's id and start time and builds its container block the same way
    in C and in Python: the block is the coordinates' head and the record's own Avro body."""
    data = SERIALIZER(record)
    native = _read(True, data, offset)
    assert native == _read(False, data, offset)
    assert native[:2] == (record["id"], record["start_time"])
    assert native[3] == data[10:]
    head = native[2]
    coordinates = b"\x0etopic.c\x06" + _zigzag(offset)
    assert head == b"\x02" + _zigzag(len(coordinates) + len(data) - 10) + coordinates


def _zigzag(value: int) -> bytes:
    n, out = (value << 1) ^ (value >> 63), bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_a_record_that_cannot_be_read_is_refused_or_left_to_the_decoder(native: bool) -> None:
    """Another framing (another schema's fingerprint, Confluent's) is None: the sink decodes it in
    full. A record cut inside its id or start time, or whose id is not UTF-8, is a DecodeError."""
    data = SERIALIZER(sample_exchange(4))
    assert _read(native, data[:2] + bytes(8) + data[10:]) is None
    assert _read(native, b"\x00\x00\x00\x00\x01" + data[10:]) is None
    assert _read(native, data[:9]) is None
    id_and_start_end = 10 + 1 + 36 + 8  # a 36-character id, an 8-byte start time
    for end in range(10, id_and_start_end):
        with pytest.raises(DecodeError, match="id and start time"):
            _read(native, data[:end])
    assert _read(native, data[:id_and_start_end]) is not None  # the rest is ClickHouse's to refuse
    not_utf8 = data[:11] + b"\xff" + data[12:]
    with pytest.raises(DecodeError, match="id and start time"):
        _read(native, not_utf8)
    assert _read(native, bytearray(data)) == _read(native, data)  # any bytes-like value
    too_long = data[:10] + b"\x00" + b"\xff" * 9 + b"\x7f"  # an empty id, a start time past 64 bits
    with pytest.raises(DecodeError, match="64 bits"):
        _read(native, too_long)
    assert _read(native, data[:10] + b"\x00" + b"\xfe" + b"\xff" * 8 + b"\x01")[1] == 2**63 - 1


def test_bytes_after_a_record_do_not_change_its_row(clickhouse: Any) -> None:
    """A record followed by stray bytes keeps its own coordinates: they precede the record."""
    migrate(clickhouse)
    insert = AvroInsert(exchange_schema())
    rows = AvroBatch(insert)
    record = sample_exchange(5)
    rows.add(SERIALIZER(record) + b"\x02\x04stray", 10, "topic.b", 2, 77)
    rows.add(SERIALIZER(sample_exchange(6)), 10, "topic.b", 2, 78)
    insert.send(clickhouse, rows.payload())
    stored = clickhouse.query(
        "SELECT toString(id), kafka_topic, kafka_partition, kafka_offset FROM exchanges ORDER BY kafka_offset"
    ).result_rows
    assert stored == [
        (record["id"], "topic.b", 2, 77),
        (sample_exchange(6)["id"], "topic.b", 2, 78),
    ]


def test_numbers_out_of_the_columns_range_are_refused(clickhouse: Any) -> None:
    """A status above 65,535 or a negative size is refused by ClickHouse, not stored wrapped."""
    migrate(clickhouse)
    insert = AvroInsert(exchange_schema())
    for change in ({"status": 70_000}, {"size": -1}):
        record: Any = sample_exchange(8)
        if "status" in change:
            record["response"]["status"] = change["status"]
        else:
            record["request"]["body"]["size"] = change["size"]
        rows = AvroBatch(insert)
        rows.add(SERIALIZER(record), 10, "t", 0, 0)
        with pytest.raises(Exception, match="cannot be safely converted"):
            insert.send(clickhouse, rows.payload())
    assert int(clickhouse.command("SELECT count() FROM exchanges")) == 0
