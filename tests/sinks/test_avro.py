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
