"""Selecting what to replay from the real broker and ClickHouse: offsets, times, SQL, the archive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from trafficreel.replay import (
    Filters,
    KafkaSource,
    OffsetRange,
    SelectionError,
    parse_range,
    parse_status,
    select_offsets,
    select_sql,
    select_window,
)
from trafficreel.schemas import Deserializer, Serializer
from trafficreel.sinks import COLUMNS, migrate
from trafficreel.sinks._rows import Columns

from .support import record

pytestmark = pytest.mark.stack
BASE_US = 1_780_000_000_000_000


def _records(count: int) -> list[Any]:
    out = []
    for i in range(count):
        rec = record(
            i,
            method="POST" if i % 3 == 0 else "GET",
            path=b"/v1/items/%d" % i,
            headers=[(b"host", b"shop"), (b"x-tenant", b"acme" if i % 2 else b"globex")],
            start_us=BASE_US + i * 1_000_000,
            status=503 if i % 5 == 0 else 200,
            route="/v1/items/{id}",
            traffic_class="business",
            class_rule="default",
            sample_weight=1.0,
        )
        out.append(rec)
    return out


@pytest.fixture
def loaded(infra: Any, new_topic: Callable[..., str]) -> tuple[str, list[Any], dict[str, tuple[int, int]]]:
    """Twenty records on a two-partition topic, even ones in partition 0, odd ones in 1."""
    topic = new_topic(2)
    records = _records(20)
    producer = Producer(infra.kafka_conf())
    for i, rec in enumerate(records):
        producer.produce(
            topic, Serializer()(rec), rec["id"].encode(), partition=i % 2, timestamp=rec["start_time"] // 1000
        )
    assert producer.flush(30) == 0
    where = {rec["id"]: (i % 2, i // 2) for i, rec in enumerate(records)}
    return topic, records, where


def _source(infra: Any) -> KafkaSource:
    return KafkaSource(infra.kafka_conf(), Deserializer())


def test_offset_ranges_in_recorded_order(infra: Any, loaded: Any) -> None:
    """Ranges pick exact offsets; the selection is ordered by recorded start time."""
    topic, records, _ = loaded
    source = _source(infra)
    selection = select_offsets(source, topic, [OffsetRange(0, 2, 5), parse_range("1:8-")], Filters())
    source.close()
    assert [s.record["id"] for s in selection.records] == [records[i]["id"] for i in (4, 6, 8, 17, 19)]
    assert [(s.partition, s.offset) for s in selection.records][:3] == [(0, 2), (0, 3), (0, 4)]


def test_filters_on_method_status_header_and_route(infra: Any, loaded: Any) -> None:
    """Only records matching every filter are kept; the rest are counted as filtered out."""
    topic, records, _ = loaded
    source = _source(infra)
    filters = Filters(
        methods=("POST",),
        statuses=(parse_status("5xx"),),
        headers=(("X-Tenant", "^glob"),),
        routes=("/v1/items/*",),
    )
    selection = select_offsets(source, topic, [OffsetRange(0), OffsetRange(1)], filters)
    source.close()
    assert [s.record["id"] for s in selection.records] == [records[0]["id"]]  # only 0: POST, 503, globex
    assert selection.left_out["filtered-out"] == 19


def test_time_window_uses_offsets_for_times(infra: Any, loaded: Any) -> None:
    """--from/--to select exactly the records whose start time is in [from, to)."""
    topic, records, _ = loaded
    source = _source(infra)
    selection = select_window(source, topic, BASE_US + 5_000_000, BASE_US + 9_000_000, Filters())
    source.close()
    assert [s.record["id"] for s in selection.records] == [records[i]["id"] for i in range(5, 9)]


def test_unknown_topics_and_partitions_are_clear_errors(infra: Any, loaded: Any) -> None:
    """A missing topic or partition names what exists."""
    topic, _, _ = loaded
    source = _source(infra)
    with pytest.raises(SelectionError, match="has no partition 7"):
        select_offsets(source, topic, [OffsetRange(7)], Filters())
    with pytest.raises(SelectionError, match="does not exist"):
        select_offsets(source, "no.such.topic.here", [OffsetRange(0)], Filters())
    source.close()


def _load_rows(client: Any, rows: list[tuple[Any, str, int, int]]) -> None:
    migrate(client)
    columns = Columns()
    for rec, topic, partition, offset in rows:
        columns.add(rec, topic, partition, offset)
    client.insert("exchanges", columns.data, column_names=COLUMNS, column_oriented=True)


def test_sql_selection_reads_back_from_kafka_and_falls_back_to_the_archive(
    infra: Any, loaded: Any, clickhouse: Any
) -> None:
    """Rows selected by SQL come from Kafka; rows whose record Kafka no longer holds are rebuilt whole."""
    topic, records, where = loaded
    rows = [(rec, topic, *where[rec["id"]]) for rec in records]
    gone = records[1]
    rows[1] = (gone, "topic.deleted.long.ago", 0, 12)  # Kafka lost it
    moved = records[7]
    rows[7] = (moved, topic, 0, 0)  # the offset now holds another record (a restarted broker)
    _load_rows(clickhouse, rows)
    source = _source(infra)
    selection = select_sql(source, clickhouse, "status = 200 AND method = 'GET'", Filters())
    source.close()
    expected = [
        r["id"] for r in records if r["response"]["status"] == 200 and r["request"]["method"] == "GET"
    ]
    assert [s.record["id"] for s in selection.records] == expected
    origins = {s.record["id"]: s.origin for s in selection.records}
    assert origins[gone["id"]] == origins[moved["id"]] == "clickhouse"
    assert sum(o == "kafka" for o in origins.values()) == len(expected) - 2
    rebuilt = next(s.record for s in selection.records if s.record["id"] == gone["id"])
    assert rebuilt == gone  # the row holds everything the record held


def test_sql_errors_are_reported_with_the_server_message(infra: Any, clickhouse: Any) -> None:
    """A bad WHERE clause is a SelectionError carrying ClickHouse's reason."""
    migrate(clickhouse)
    source = _source(infra)
    with pytest.raises(SelectionError, match="no_such_column"):
        select_sql(source, clickhouse, "no_such_column = 1", Filters())
    source.close()


def test_offsets_are_committed_only_to_a_named_group(infra: Any, loaded: Any) -> None:
    """Reading commits nothing by default; with commit_group the read ends are committed there."""
    from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

    topic, _, _ = loaded
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    quiet = _source(infra)
    select_offsets(quiet, topic, [OffsetRange(0), OffsetRange(1)], Filters())
    quiet.close()
    probe = Consumer(infra.kafka_conf(**{"group.id": quiet.group_id, "enable.auto.commit": False}))
    assert [tp.offset for tp in probe.committed(parts, timeout=10)] == [OFFSET_INVALID, OFFSET_INVALID]
    probe.close()
    committing = KafkaSource(infra.kafka_conf(), Deserializer(), commit_group="replay-bookmark")
    select_offsets(committing, topic, [OffsetRange(0, 0, 4), OffsetRange(1)], Filters())
    committing.close()
    probe = Consumer(infra.kafka_conf(**{"group.id": "replay-bookmark", "enable.auto.commit": False}))
    committed = probe.committed(parts, timeout=10)
    probe.close()
    assert [tp.offset for tp in committed] == [4, 10]
