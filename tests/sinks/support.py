"""What the sink tests share: records, producing them, a sink running in a thread, waiting."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import clickhouse_connect
from confluent_kafka import Producer

from tests.streams.support import exchange
from trafficreel.schemas import Serializer
from trafficreel.sinks import ClickHouseSink

SERIALIZER = Serializer()


def client_factory(infra: Any, database: str) -> Callable[[], Any]:
    """A factory of clickhouse-connect clients for ``database`` of the test ClickHouse."""
    host, _, port = infra.clickhouse_url.removeprefix("http://").partition(":")
    return lambda: clickhouse_connect.get_client(
        host=host,
        port=int(port),
        username=infra.clickhouse_user,
        password=infra.clickhouse_password,
        database=database,
    )


def business_records(count: int, start: int = 0) -> list[Any]:
    """Classified business records with ids and paths numbered from ``start``."""
    out = []
    for i in range(start, start + count):
        record = exchange(i, path=b"/v1/orders/%d" % i)
        record.update(
            traffic_class="business", class_rule="default", route="/v1/orders/{id}", sample_weight=1.0
        )
        out.append(record)
    return out


def produce(bootstrap: str, topic: str, batch: list[Any], extra: list[bytes] | None = None) -> None:
    """``batch`` encoded, then the raw values of ``extra``, all acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for record in batch:
        producer.produce(topic, SERIALIZER(record), record["id"].encode())
    for value in extra or ():
        producer.produce(topic, value, b"bad")
    assert producer.flush(30) == 0


def produce_steadily(
    bootstrap: str, topic: str, batch: list[Any], pause: float, done: threading.Event
) -> None:
    """``batch`` as a steady stream (``pause`` seconds after every 50 records); sets ``done``."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, record in enumerate(batch):
        producer.produce(topic, SERIALIZER(record), record["id"].encode())
        if i % 50 == 49:
            producer.poll(0)
            time.sleep(pause)
    assert producer.flush(120) == 0
    done.set()


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(interval)
    return condition()


@contextlib.contextmanager
def running(sink: ClickHouseSink) -> Iterator[threading.Thread]:
    """``sink.run()`` in a thread for the duration of the block; stopped and joined after it."""
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        sink.stop()
        thread.join(30)


def run_until(sink: ClickHouseSink, condition: Callable[[], Any], timeout: float = 60) -> None:
    """Run ``sink`` until ``condition`` holds (failing the test if it does not within ``timeout``)."""
    with running(sink):
        assert wait_for(lambda: bool(condition()), timeout), f"sink stats: {sink.stats}"


def stored_ids(client: Any) -> list[str]:
    """Every id in ``exchanges``, once per row."""
    return [row[0] for row in client.query("SELECT toString(id) FROM exchanges").result_rows]


def business_sink(
    infra: Any,
    clickhouse: Any,
    prefix: str,
    group: str = "sink",
    bootstrap: str | None = None,
    **options: Any,
) -> ClickHouseSink:
    """A sink of ``<prefix>.business`` into the test's database, dead letters to ``<prefix>.dlq``,
    in the group ``<prefix>-<group>``; ``options`` go to ClickHouseSink (batch sizes, …)."""
    return ClickHouseSink(
        client_factory(infra, clickhouse.database),
        {"bootstrap.servers": bootstrap or infra.bootstrap},
        [f"{prefix}.business"],
        f"{prefix}.dlq",
        group=f"{prefix}-{group}",
        **options,
    )


def row_count(client: Any) -> int:
    """Rows in ``exchanges``."""
    return int(client.command("SELECT count() FROM exchanges"))
