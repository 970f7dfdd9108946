"""The sink against the real broker and ClickHouse: every record once, whatever is sent again."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.streams.support import exchange
from tests.streams.workers import make_topics, read_all
from trafficreel.schemas import Serializer
from trafficreel.sinks import ClickHouseSink, _lookup, migrate

from .support import (
    SERIALIZER,
    business_records,
    business_sink,
    client_factory,
    produce,
    row_count,
    run_until,
    running,
    stored_ids,
    wait_for,
)

pytestmark = pytest.mark.stack


def test_records_land_once_even_when_sent_again(infra: Any, clickhouse: Any) -> None:
    """Rows hold each id once: after a restart from scratch (a new group re-reading everything) and
    after upstream duplicates (same ids at new offsets). Undecodable values go to the DLQ."""
    prefix = make_topics(infra.bootstrap, partitions=3)
    migrate(clickhouse)
    assert migrate(clickhouse) == []  # idempotent
    records = business_records(300)
    produce(infra.bootstrap, f"{prefix}.business", records, [b"garbage"])
    first = business_sink(infra, clickhouse, prefix, "a")
    run_until(first, lambda: row_count(clickhouse) >= 300 and first.stats.dead_letters)
    # A second sink in a new group starts from the beginning of the topic: it finds the stored
    # offsets and skips what is already there.
    second = business_sink(infra, clickhouse, prefix, "b")
    produce(infra.bootstrap, f"{prefix}.business", records[:100] + business_records(50, start=300))
    # caught up: 350 rows, and no partition behind its end
    run_until(
        second,
        lambda: (
            row_count(clickhouse) >= 350 and bool(second.stats.lag) and set(second.stats.lag.values()) == {0}
        ),
    )
    time.sleep(1.5)  # give it the chance to (wrongly) insert more
    assert row_count(clickhouse) == 350
    assert int(clickhouse.command("SELECT uniqExact(id) FROM exchanges")) == 350
    assert second.stats.duplicates_skipped == 100
    row = clickhouse.query(
        "SELECT path, route, request_headers, kafka_topic FROM exchanges WHERE id = {id:UUID}",
        parameters={"id": records[7]["id"]},
    ).result_rows[0]
    assert row[0] == b"/v1/orders/7" or row[0] == "/v1/orders/7"
    assert row[1] == "/v1/orders/{id}" and row[3] == f"{prefix}.business"
    # The undecodable value went to the DLQ with its reason (once per sink group that read it).
    dead = read_all(infra.bootstrap, f"{prefix}.dlq")
    assert dead and {
        (m.value, m.headers["trafficreel-dlq-reason"], m.headers["trafficreel-dlq-stage"]) for m in dead
    } == {(b"garbage", b"bad-magic", b"sink")}


def test_query_prints_a_table_json_and_csv(infra: Any, clickhouse: Any) -> None:
    """`trafficreel query` runs SQL on the configured ClickHouse and prints it in the asked format;
    a bad query is a one-line error."""
    from typer.testing import CliRunner

    from trafficreel.cli import app

    migrate(clickhouse)
    url = f"{infra.clickhouse_url}/{clickhouse.database}"
    if infra.clickhouse_password:
        url = url.replace("://", f"://{infra.clickhouse_user}:{infra.clickhouse_password}@")
    runner = CliRunner()
    sql = "SELECT number AS n, toString(number * 2) AS twice FROM numbers(3)"
    table = runner.invoke(app, ["--clickhouse-url", url, "query", sql])
    assert table.exit_code == 0, table.output
    assert "twice" in table.output and "3 rows" in table.output
    as_json = runner.invoke(app, ["--clickhouse-url", url, "query", sql, "--format", "json"])
    assert as_json.output.splitlines()[-1] == '{"n": 2, "twice": "4"}'
    as_csv = runner.invoke(
        app, ["--clickhouse-url", url, "query", "SELECT count() AS c FROM exchanges", "-f", "csv"]
    )
    assert as_csv.output.split() == ["c", "0"]
    # Values of every kind print in every format; text is shown as it is, never as markup.
    typed = (
        "SELECT toUUID('0190f9e2-0000-7000-8000-000000000001') AS id, toDateTime64('2026-05-29 10:00:00', 6, 'UTC')"
        " AS start_time, toDecimal64(1.5, 2) AS d, [('host', 'x')] AS headers, 'filter[status]=open /x[/y]' AS q"
    )
    row = json.loads(runner.invoke(app, ["--clickhouse-url", url, "query", typed, "-f", "json"]).output)
    assert row == {
        "id": "0190f9e2-0000-7000-8000-000000000001",
        "start_time": "2026-05-29T10:00:00",
        "d": "1.50",
        "headers": [["host", "x"]],
        "q": "filter[status]=open /x[/y]",
    }
    shown = runner.invoke(app, ["--clickhouse-url", url, "query", "SELECT 'filter[status]=open /x[/y]' AS q"])
    assert shown.exit_code == 0 and "filter[status]=open /x[/y]" in shown.output, shown.output
    as_csv = runner.invoke(app, ["--clickhouse-url", url, "query", typed, "-f", "csv"])
    assert '"[[""host"", ""x""]]"' in as_csv.output
    # Printed to a pipe (as here), a table wider than 80 columns keeps every cell whole.
    values = [f"value-{i}-{'x' * 12}" for i in range(6)]
    wide = "SELECT " + ", ".join(f"'{v}' AS column_{i}" for i, v in enumerate(values))
    shown = runner.invoke(app, ["--clickhouse-url", url, "query", wide], env={"COLUMNS": ""})
    assert all(v in shown.output for v in values) and "…" not in shown.output, shown.output
    bad = runner.invoke(app, ["--clickhouse-url", url, "query", "SELEKT 1"])
    assert (
        bad.exit_code == 1
        and bad.output.startswith("error: the query failed")
        and "Traceback" not in bad.output
    )


class _CrashError(Exception):
    pass


class _DiesBeforeCommit(ClickHouseSink):
    def _commit(self, ends: dict[tuple[str, int], int]) -> None:
        raise _CrashError


def _crashed_before_commit(infra: Any, clickhouse: Any) -> tuple[str, tuple[Any, ...], int]:
    """200 records, and a sink that stored some of them and died before committing: the topic
    prefix, the arguments of a sink of the same group, and the rows stored."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    produce(infra.bootstrap, f"{prefix}.business", business_records(200))
    factory, conf = client_factory(infra, clickhouse.database), {"bootstrap.servers": infra.bootstrap}
    args = (factory, conf, [f"{prefix}.business"], f"{prefix}.dlq")
    with pytest.raises(_CrashError):
        _DiesBeforeCommit(*args, group=f"{prefix}-sink").run()
    stored = row_count(clickhouse)
    assert 0 < stored <= 200
    return prefix, args, stored


def test_a_crash_between_insert_and_commit_is_not_inserted_again(infra: Any, clickhouse: Any) -> None:
    """Rows inserted whose offsets were never committed (the sink died in between) are not inserted
    again by the next sink of the group: it resumes after the last stored offset."""
    prefix, args, _ = _crashed_before_commit(infra, clickhouse)
    after = ClickHouseSink(*args, group=f"{prefix}-sink")
    run_until(after, lambda: row_count(clickhouse) >= 200)
    time.sleep(1)
    assert row_count(clickhouse) == 200
    assert after.stats.duplicates_skipped == 0  # skipped by offset, not found again by id


def test_resuming_trusts_stored_offsets_only_while_their_rows_are_there(infra: Any, clickhouse: Any) -> None:
    """kafka_offsets keeps each partition's highest stored offset; after exchanges is truncated to
    load again, the next sink does not skip what it no longer holds. A migration counts the rows
    stored before kafka_offsets existed."""
    prefix, args, stored = _crashed_before_commit(infra, clickhouse)

    def offsets() -> list[tuple[Any, ...]]:
        return clickhouse.query(
            "SELECT kafka_topic, kafka_partition, max(max_offset) FROM kafka_offsets "
            "GROUP BY kafka_topic, kafka_partition"
        ).result_rows

    assert offsets() == [(f"{prefix}.business", 0, stored - 1)]
    # Counted again from exchanges by the migration (as for a table that predates it): the same.
    clickhouse.command("DROP VIEW kafka_offsets_mv")
    clickhouse.command("DROP TABLE kafka_offsets")
    clickhouse.command("ALTER TABLE schema_migrations DELETE WHERE version = 5 SETTINGS mutations_sync = 1")
    assert migrate(clickhouse) == [5]
    assert offsets() == [(f"{prefix}.business", 0, stored - 1)]
    after = ClickHouseSink(*args, group=f"{prefix}-sink")
    [(offset, _)] = after._stored_offsets({f"{prefix}.business"}).values()
    assert offset == stored - 1
    clickhouse.command("TRUNCATE TABLE exchanges")  # to load again; kafka_offsets is left as it was
    assert after._stored_offsets({f"{prefix}.business"}) == {}
    run_until(after, lambda: row_count(clickhouse) >= 200)
    time.sleep(1)
    assert row_count(clickhouse) == 200


def test_views_answer_the_documented_questions(infra: Any, clickhouse: Any) -> None:
    """Per-minute route aggregates, Kubernetes API calls per pod/verb/resource, top remote
    addresses and the share of bodies kept, over records loaded by the sink."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    business = business_records(30)
    for i, record in enumerate(business):
        record["response"]["status"] = 503 if i < 3 else 200
        record["duration_us"] = 1000 * (i + 1)
        record["peer"]["remote_address"] = "10.0.0.1" if i < 20 else "10.0.0.2"
    k8s = []
    for i, (method, path, query) in enumerate(
        [
            ("GET", b"/api/v1/namespaces/shop/pods", b"watch=true"),
            ("GET", b"/api/v1/namespaces/shop/configmaps/app", b""),
            ("GET", b"/apis/apps/v1/namespaces/shop/deployments", b""),
            ("PATCH", b"/api/v1/namespaces/shop/configmaps/app", b""),
        ]
    ):
        record = exchange(
            100 + i, direction="OUTBOUND", host="kubernetes.default.svc", path=path, method=method
        )
        record["request"]["query"] = query
        record.update(traffic_class="k8s-api", class_rule="k8s-api-host", route="/x", sample_weight=1.0)
        k8s.append(record)
    produce(infra.bootstrap, f"{prefix}.business", business + k8s)
    sink = business_sink(infra, clickhouse, prefix, "v")
    run_until(sink, lambda: row_count(clickhouse) >= 34)

    per_route = clickhouse.query(
        "SELECT sum(requests), sum(errors), max(latency_us[3]) FROM route_minute WHERE route = '/v1/orders/{id}'"
    ).result_rows[0]
    assert per_route[0] == 30 and per_route[1] == 3 and 29_000 <= per_route[2] <= 30_000
    calls = {
        (verb, resource): n
        for verb, resource, n in clickhouse.query(
            "SELECT verb, resource, sum(calls) FROM k8s_api_calls GROUP BY verb, resource"
        ).result_rows
    }
    assert calls == {
        ("watch", "pods"): 1,
        ("get", "configmaps"): 1,
        ("list", "deployments"): 1,  # a collection: the API server's "list"
        ("patch", "configmaps"): 1,
    }
    remotes = clickhouse.query(
        "SELECT remote_address, requests FROM top_remote_addresses LIMIT 2"
    ).result_rows
    assert remotes[0] == ("10.0.0.1", 20)
    shares = clickhouse.query(
        "SELECT part, state, share FROM body_kept_share WHERE service = 'orders'"
    ).result_rows
    assert {(part, state) for part, state, _ in shares} >= {("request", "COMPLETE")}
    assert all(0 < share <= 1 for _, _, share in shares)


def test_row_ttl_follows_the_setting(clickhouse: Any) -> None:
    """A TTL in days is set on the table at start, changed when the setting changes, removed when unset."""

    def ddl() -> str:
        return str(
            clickhouse.command(
                "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'exchanges'"
            )
        )

    migrate(clickhouse, ttl_days=30)
    assert "toIntervalDay(30)" in ddl()
    migrate(clickhouse, ttl_days=7)
    assert "toIntervalDay(7)" in ddl()
    migrate(clickhouse)
    assert " TTL " not in ddl()


def test_metrics_read_the_sink_counters() -> None:
    """The collector exposes inserted rows, duplicates, retries, DLQ by reason and assigned partitions."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from trafficreel.sinks import SinkStats
    from trafficreel.sinks.metrics import SinkCollector

    stats = SinkStats(
        rows_inserted=10,
        batches_inserted=2,
        duplicates_skipped=3,
        retries=1,
        dead_letters={"bad-magic": 4},
        lag={("t", 1): 17},
    )
    registry = CollectorRegistry()
    registry.register(SinkCollector(SimpleNamespace(stats=stats, assigned={("t", 0), ("t", 1)})))
    text = generate_latest(registry).decode()
    for line in (
        "trafficreel_sink_rows_inserted_total 10.0",
        "trafficreel_sink_duplicates_skipped_total 3.0",
        'trafficreel_sink_dlq_total{reason="bad-magic"} 4.0',
        "trafficreel_sink_assigned_partitions 2.0",
        'trafficreel_sink_lag{partition="1",topic="t"} 17.0',
    ):
        assert line in text


def test_other_writers_land_and_cut_records_go_to_the_dlq(infra: Any, clickhouse: Any) -> None:
    """Records of a newer compatible writer are re-encoded and stored; a record cut short after
    its id (ClickHouse refuses the batch) goes to the DLQ with the decoder's reason, one whose
    status does not fit the column or whose id is no UUID (and holds SQL) as clickhouse-rejected;
    the rest of the batch lands."""
    import copy

    from trafficreel.schemas import Deserializer, WriterSchema, exchange_schema

    raw = copy.deepcopy(exchange_schema().json)
    raw["fields"].append({"name": "cost_units", "type": ["null", "long"], "default": None})
    newer = WriterSchema.from_json(raw)
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    current, later = business_records(20), business_records(5, start=100)
    cut = SERIALIZER(business_records(1, start=200)[0])[:80]
    out_of_range = business_records(1, start=300)[0]
    out_of_range["response"]["status"] = 70_000  # the column is UInt16
    refused = SERIALIZER(out_of_range)
    hostile_record = business_records(1, start=400)[0]
    hostile_record["id"] = "x'); DROP TABLE exchanges; --"  # not a UUID, and must not be run as SQL
    hostile = SERIALIZER(hostile_record)
    later_values = [Serializer(schema=newer)({**r, "cost_units": 7}) for r in later]  # type: ignore[typeddict-unknown-key]
    produce(infra.bootstrap, f"{prefix}.business", current[:10], [*later_values, cut, refused, hostile])
    produce(infra.bootstrap, f"{prefix}.business", current[10:])
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        deserializer=Deserializer(writers=[exchange_schema(), newer]),
    )
    run_until(sink, lambda: row_count(clickhouse) >= 25)
    stored = set(stored_ids(clickhouse))
    assert stored == {r["id"] for r in current + later}
    dead = read_all(infra.bootstrap, f"{prefix}.dlq")
    assert [(m.value, m.headers["trafficreel-dlq-reason"]) for m in dead] == [
        (cut, b"truncated"),
        (refused, b"clickhouse-rejected"),
        (hostile, b"clickhouse-rejected"),
    ]


def test_a_crash_inside_a_batch_spanning_midnight_loses_nothing(infra: Any, clickhouse: Any) -> None:
    """Records of two days interleaved in offset order (long requests started before midnight end
    after short ones started after it): a sink killed after its first insert, then a new one,
    store every record once."""

    class Killed(BaseException):  # not an Exception: nothing in the sink may handle it
        pass

    class DiesAfterFirstInsert(ClickHouseSink):
        def _insert(self, rows: Any, token: str) -> None:
            super()._insert(rows, token)
            raise Killed

    midnight_us = 1_780_012_800_000_000  # 2026-05-29 00:00:00 UTC
    records = business_records(12)
    for i, record in enumerate(records):
        record["start_time"] = midnight_us + (-1 if i % 2 else 1) * (1000 + i)
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    produce(infra.bootstrap, f"{prefix}.business", records)
    factory, conf = client_factory(infra, clickhouse.database), {"bootstrap.servers": infra.bootstrap}
    args = (factory, conf, [f"{prefix}.business"], f"{prefix}.dlq")
    with pytest.raises(Killed):
        DiesAfterFirstInsert(*args, group=f"{prefix}-sink").run()
    assert row_count(clickhouse) == 1
    after = ClickHouseSink(*args, group=f"{prefix}-sink")
    run_until(after, lambda: row_count(clickhouse) >= 12)
    time.sleep(1)
    stored = clickhouse.query("SELECT toString(id), toDate(start_time) FROM exchanges").result_rows
    assert sorted(r[0] for r in stored) == sorted(r["id"] for r in records)
    assert len({r[1] for r in stored}) == 2


def test_a_batch_of_only_undecodable_values_is_dead_lettered_and_committed(
    infra: Any, clickhouse: Any
) -> None:
    """A batch holding nothing but garbage: every value dead-lettered, the offsets committed, and
    the sink goes on to store what comes next."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    produce(infra.bootstrap, f"{prefix}.business", [], [b"garbage-1", b"garbage-2"])
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        batch_seconds=0.2,
    )
    with running(sink) as thread:
        assert wait_for(lambda: sum(sink.stats.dead_letters.values()) >= 2, 60, 0.1)
        time.sleep(1)  # the next batch starts after the garbage
        produce(infra.bootstrap, f"{prefix}.business", business_records(3))
        assert wait_for(lambda: row_count(clickhouse) >= 3, 60)
        assert thread.is_alive()
    assert sink.stats.dead_letters == {"bad-magic": 2}
    assert row_count(clickhouse) == 3


def test_a_batch_too_big_for_one_lookup_still_skips_every_duplicate(infra: Any, clickhouse: Any) -> None:
    """A batch of 9,000 records, all sent again: the duplicate lookup is split (one statement
    holding 9,000 ids exceeds ClickHouse's max_query_size) and every copy is skipped."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    records = business_records(9000)
    produce(infra.bootstrap, f"{prefix}.business", records)
    produce(infra.bootstrap, f"{prefix}.business", records)  # the same ids at new offsets
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        batch_rows=10_000,
        batch_bytes=64 << 20,
        batch_seconds=3,  # batches by rows: the topic holds all 18,000 before the sink starts
    )
    run_until(sink, lambda: sink.stats.rows_inserted + sink.stats.duplicates_skipped >= 18_000, timeout=120)
    assert sink.stats.duplicates_skipped == 9000
    assert clickhouse.query("SELECT count(), uniqExact(id) FROM exchanges").result_rows[0] == (9000, 9000)


@pytest.mark.parametrize("lookup", ["time range read back", "ids sent"])
def test_ids_in_capitals_are_recognised_when_sent_again(
    infra: Any, clickhouse: Any, lookup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer spelling ids in capitals: a copy sent again is still found (ClickHouse prints
    UUIDs in lower case) and stored once, by either way of looking ids up."""
    if lookup == "ids sent":  # as when the batch's time range holds many more rows than it
        monkeypatch.setattr(_lookup, "_RANGE_LOOKUP_ROWS", 0)
        monkeypatch.setattr(_lookup, "_RANGE_LOOKUP_FACTOR", 0)
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    batch = business_records(20)
    for record in batch:
        record["id"] = record["id"].upper()
    produce(infra.bootstrap, f"{prefix}.business", batch)
    produce(infra.bootstrap, f"{prefix}.business", batch)
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        batch_rows=20,  # the copies come in a batch of their own, after the originals are stored
    )
    run_until(sink, lambda: sink.stats.rows_inserted + sink.stats.duplicates_skipped >= 40)
    assert (sink.stats.rows_inserted, sink.stats.duplicates_skipped) == (20, 20)
    assert clickhouse.query("SELECT count(), uniqExact(id) FROM exchanges").result_rows[0] == (20, 20)


@pytest.mark.parametrize("stored_up_to", [29, 9])
def test_rows_of_an_earlier_topic_of_the_same_name_do_not_hide_new_records(
    infra: Any, clickhouse: Any, stored_up_to: int
) -> None:
    """The table holds rows from an earlier life of the topic (an embedded broker restarted
    without its data: offsets start again at 0). The sink must not take their offsets for its
    own: every new record is stored, whether the new topic is shorter than the old one (29) or
    already longer (9: the record at the stored offset is another one)."""
    from trafficreel.sinks import COLUMNS
    from trafficreel.sinks._rows import Columns

    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    earlier = Columns()
    for offset, record in enumerate(business_records(stored_up_to + 1, start=5000)):
        earlier.add(record, f"{prefix}.business", 0, offset)
    clickhouse.insert("exchanges", earlier.data, column_names=COLUMNS, column_oriented=True)
    fresh = business_records(20)
    produce(infra.bootstrap, f"{prefix}.business", fresh)
    sink = business_sink(infra, clickhouse, prefix)
    run_until(sink, lambda: sink.stats.rows_inserted >= 20)
    assert {r["id"] for r in fresh} <= set(stored_ids(clickhouse))


def test_clickhouse_refusing_for_other_reasons_is_waited_out(infra: Any, clickhouse: Any) -> None:
    """A ClickHouse that refuses writes for reasons other than the rows (here the table is away,
    as in maintenance; read-only mode, a full disk or a proxy's 502 are alike) is retried with
    back-off: nothing goes to the DLQ, nothing is committed, and everything lands once it is back."""
    from trafficreel._cli_sink import _sink_readiness

    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    records = business_records(20)
    produce(infra.bootstrap, f"{prefix}.business", records)
    clickhouse.command("RENAME TABLE exchanges TO exchanges_away")
    inserts: list[int] = []
    sink = business_sink(infra, clickhouse, prefix, on_insert=lambda rows, _: inserts.append(rows))
    with running(sink):
        assert wait_for(lambda: sink.stats.retries >= 2, 30), sink.stats
        assert sink.failing_since is not None and "code: 60" in sink.last_error
        assert "ClickHouse failing" not in _sink_readiness(sink)[1]  # not for 30 s yet
        sink.failing_since -= 31
        ready, why = _sink_readiness(sink)
        assert not ready and "ClickHouse failing for 3" in why and "code: 60" in why
        clickhouse.command("RENAME TABLE exchanges_away TO exchanges")
        assert wait_for(lambda: row_count(clickhouse) == 20, 60), sink.stats
    assert sink.failing_since is None and sum(inserts) == 20
    assert sink.stats.dead_letters == {}
    assert read_all(infra.bootstrap, f"{prefix}.dlq") == []
    assert sorted(stored_ids(clickhouse)) == sorted(r["id"] for r in records)


def test_a_topic_of_the_same_name_on_a_new_broker_lands_too(
    infra: Any, clickhouse: Any, tmp_path: Any
) -> None:
    """The embedded broker restarted without its data (or a topic recreated): the new records sit
    at the same offsets as earlier ones, the same day. The insert token tells them apart."""
    from trafficreel.stack import EmbeddedBroker
    from trafficreel.topics import create_topics

    migrate(clickhouse)
    first, second = business_records(3), business_records(3, start=100)
    for record in second:
        record["start_time"] = first[0]["start_time"] + 1  # the same day
    prefix = make_topics(infra.bootstrap, partitions=1)
    for life, records in enumerate((first, second)):
        broker = EmbeddedBroker(tmp_path / f"broker-{life}")
        broker.start()
        try:
            create_topics(
                {"bootstrap.servers": broker.bootstrap}, [f"{prefix}.business", f"{prefix}.dlq"], partitions=1
            )
            produce(broker.bootstrap, f"{prefix}.business", records)
            sink = business_sink(infra, clickhouse, prefix, bootstrap=broker.bootstrap)
            ids = {r["id"] for r in records}
            run_until(sink, lambda ids=ids: ids <= set(stored_ids(clickhouse)))  # type: ignore[misc]
        finally:
            broker.stop()
    assert sorted(stored_ids(clickhouse)) == sorted(r["id"] for r in first + second)


def test_a_repeated_insert_is_counted_once_in_the_views(clickhouse: Any) -> None:
    """An insert repeated with its token (a retry after a timeout) is dropped by exchanges and by
    the per-minute aggregate its materialized view fills."""
    from trafficreel.schemas import Deserializer
    from trafficreel.sinks._avro import AvroBatch, AvroInsert

    migrate(clickhouse)
    deserializer = Deserializer()
    insert = AvroInsert(deserializer.reader)
    batch = AvroBatch(insert)
    for offset, record in enumerate(business_records(5)):
        batch.add(SERIALIZER(record), 10, "t", 0, offset)
    settings = {
        "insert_deduplicate": 1,
        "insert_deduplication_token": "t:0:0-4:1",
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }
    for _ in range(2):
        insert.send(clickhouse, batch.payload(), settings)
    assert row_count(clickhouse) == 5
    assert int(clickhouse.command("SELECT sum(requests) FROM route_minute")) == 5
