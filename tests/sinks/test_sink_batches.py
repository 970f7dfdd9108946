"""The sink's batches against the real broker and ClickHouse: how a batch grows while the one
before it is stored, when a partial batch goes in, and that nothing is stored or committed after
a store that failed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.streams.workers import make_topics
from trafficreel.sinks import ClickHouseSink, migrate

from .support import business_records, business_sink, produce, row_count, run_until, running, wait_for

pytestmark = pytest.mark.stack


def _hold_first_insert(sink: ClickHouseSink) -> tuple[threading.Event, list[int]]:
    """Hold the sink's first insert until the returned event is set (ClickHouse busy with the first
    batch); the list gets the records of each batch handed to the insert thread."""
    insert, flush = sink._insert, sink._flush_batch
    release = threading.Event()
    handed: list[int] = []
    calls: list[int] = []

    def slow_first_insert(rows: Any, token: str) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            release.wait(60)
        insert(rows, token)

    def counted_flush(wait: bool = False) -> None:
        if sink._batch is not None:
            handed.append(sink._batch.messages)
        flush(wait)

    sink._insert = slow_first_insert  # type: ignore[method-assign]
    sink._flush_batch = counted_flush  # type: ignore[method-assign]
    return release, handed


def test_a_batch_grows_while_clickhouse_stores_the_one_before(infra: Any, clickhouse: Any) -> None:
    """While an insert is under way the sink goes on reading: the next batch grows past
    ``batch_rows``, up to four times it, and goes in one insert once the one before is stored.
    Every record lands once; each insert's offsets are committed after it."""
    prefix = make_topics(infra.bootstrap, partitions=3)
    migrate(clickhouse)
    records = business_records(3000)
    produce(infra.bootstrap, f"{prefix}.business", records)
    inserted: list[int] = []
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        batch_rows=300,
        batch_seconds=60,
        on_insert=lambda rows, _: inserted.append(rows),
    )
    release, handed = _hold_first_insert(sink)
    with running(sink):
        # The second batch grows to four times batch_rows while the first store waits; then the
        # loop waits for that store (memory stays bounded) and reads no further.
        assert wait_for(lambda: len(handed) >= 2, 30), handed
        time.sleep(0.5)
        assert handed == [300, 1200] and inserted == []
        release.set()
        assert wait_for(lambda: row_count(clickhouse) >= 3000, 60), inserted
    assert inserted[:2] == [300, 1200]
    assert sum(inserted) == 3000
    assert clickhouse.query("SELECT count(), uniqExact(id) FROM exchanges").result_rows[0] == (3000, 3000)


def test_the_end_of_a_catch_up_goes_in_without_waiting_for_batch_seconds(infra: Any, clickhouse: Any) -> None:
    """A sink behind its topic fills its batches; the records left once it has read everything go
    in as soon as nothing more comes, not ``batch_seconds`` after the first of them was read."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    produce(infra.bootstrap, f"{prefix}.business", business_records(1650))
    batches: list[tuple[int, float]] = []
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        batch_rows=300,
        batch_seconds=60,
        on_batch=lambda messages, seconds: batches.append((messages, seconds)),
    )
    release, handed = _hold_first_insert(sink)
    with running(sink):
        assert wait_for(lambda: handed == [300, 1200], 30), handed
        release.set()
        assert wait_for(lambda: row_count(clickhouse) >= 1650, 30), batches
    assert [messages for messages, _ in batches] == [300, 1200, 150]
    assert batches[-1][1] < 10, batches  # handed over without waiting for its age
    assert clickhouse.query("SELECT count(), uniqExact(id) FROM exchanges").result_rows[0] == (1650, 1650)


def test_a_sink_that_keeps_up_sends_a_partial_batch_at_its_age(infra: Any, clickhouse: Any) -> None:
    """Records arriving slower than batches fill: each batch goes in once its first record is
    ``batch_seconds`` old (a few inserts a second at most), not every time the topic runs dry."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    batches: list[tuple[int, float]] = []
    sink = business_sink(
        infra,
        clickhouse,
        prefix,
        batch_rows=300,
        batch_seconds=1.5,
        on_batch=lambda messages, seconds: batches.append((messages, seconds)),
    )
    records = business_records(40)
    with running(sink):
        for first in range(0, 40, 10):
            produce(infra.bootstrap, f"{prefix}.business", records[first : first + 10])
            time.sleep(0.3)
        assert wait_for(lambda: row_count(clickhouse) >= 40, 30), batches
    assert sum(messages for messages, _ in batches) == 40
    assert all(seconds >= 1.5 for _, seconds in batches), batches


class _StoreFailed(BaseException):
    """Escapes the insert's retries, as a refused dead letter or an interrupt does."""


def test_a_failed_store_stores_and_commits_nothing_after_it(infra: Any, clickhouse: Any) -> None:
    """The second batch's store fails while the third is being read: the sink stops with the
    error, and neither then nor while closing (which revokes its partitions) does it store or
    commit the third. A restarted sink loads every record exactly once."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    migrate(clickhouse)
    records = business_records(600)
    produce(infra.bootstrap, f"{prefix}.business", records)
    sink = business_sink(infra, clickhouse, prefix, batch_rows=100, batch_seconds=60)
    insert, calls = sink._insert, []

    def failing_second_insert(rows: Any, token: str) -> None:
        calls.append(len(rows))
        if len(calls) == 2:
            time.sleep(0.5)  # the third batch is being read meanwhile
            raise _StoreFailed
        insert(rows, token)

    sink._insert = failing_second_insert  # type: ignore[method-assign]
    with pytest.raises(_StoreFailed):
        sink.run()
    assert row_count(clickhouse) == 100 and len(calls) == 2
    restarted = business_sink(infra, clickhouse, prefix)  # the same group
    run_until(restarted, lambda: row_count(clickhouse) >= 600)
    time.sleep(1)
    assert clickhouse.query("SELECT count(), uniqExact(id) FROM exchanges").result_rows[0] == (600, 600)
