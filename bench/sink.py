"""Sink throughput: the sink end to end vs the same rows inserted straight into ClickHouse.

Records with 1 KiB request and response bodies are preloaded into a 3-partition class topic on
the embedded broker; the embedded ClickHouse (chDB behind the HTTP interface) holds the table.

- ``rows_per_s``: one sink (in this process) from its first insert to the last row committed:
  consume, decode, duplicate check, convert, insert, commit;
- ``engine_rows_per_s``: the same rows, converted in advance, inserted with clickhouse-connect
  in one go into a fresh table — the ceiling on this machine, same run;
- ``ratio`` = rows_per_s / engine_rows_per_s (target ≥ 0.8).
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import clickhouse_connect
from confluent_kafka import Producer

from trafficreel.schemas import Deserializer, Serializer, sample_exchange
from trafficreel.sinks import COLUMNS, ClickHouseSink, migrate
from trafficreel.sinks._rows import Columns
from trafficreel.stack import EmbeddedBroker, EmbeddedClickHouse
from trafficreel.topics import create_topics

from ._harness import Figure

__all__ = ["run"]


def _values(count: int) -> list[bytes]:
    serializer = Serializer()
    out = []
    for i in range(count):
        record = copy.deepcopy(sample_exchange(i, body_size=1024))
        record["response"]["body"] = copy.deepcopy(record["request"]["body"])
        record.update(
            traffic_class="business", class_rule="default", route="/v1/orders/{id}", sample_weight=1.0
        )
        out.append(serializer(record))
    return out


def run(quick: bool) -> list[Figure]:
    count = 10_000 if quick else 50_000
    values = _values(count)
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(Path(tmp))
        clickhouse = EmbeddedClickHouse(Path(tmp) / "ch", Path(tmp))
        broker.start()
        clickhouse.start()
        try:
            host, _, port = clickhouse.url.removeprefix("http://").partition(":")

            def client(database: str = "default") -> Any:
                return clickhouse_connect.get_client(host=host, port=int(port), database=database)

            admin = client()
            for database in ("sink", "engine"):
                admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
                migrate(client(database))
            # The ceiling: the same rows, prepared in advance, one insert.
            decoder = Deserializer()
            columns = Columns()
            for offset, value in enumerate(values):
                columns.add(decoder(value), "bench.business", 0, offset)
            engine = client("engine")
            started = time.perf_counter()
            engine.insert("exchanges", columns.data, column_names=COLUMNS, column_oriented=True)
            engine_rps = count / (time.perf_counter() - started)
            # The sink, end to end.
            create_topics(
                {"bootstrap.servers": broker.bootstrap}, ["bench.business", "bench.dlq"], partitions=3
            )
            producer = Producer(
                {"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "batch.size": 1_000_000}
            )
            for i, value in enumerate(values):
                producer.produce("bench.business", value, str(i).encode())
                if i % 1000 == 0:
                    producer.poll(0)
            producer.flush(60)
            first: list[float] = []
            sink = ClickHouseSink(
                lambda: client("sink"),
                {"bootstrap.servers": broker.bootstrap},
                ["bench.business"],
                "bench.dlq",
                group="bench-sink",
                on_batch=lambda n, s: first or first.append(time.perf_counter() - s),
            )
            thread = threading.Thread(target=sink.run, daemon=True)
            thread.start()
            check = client("sink")
            deadline = time.monotonic() + 600
            while int(check.command("SELECT count() FROM exchanges")) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            done = time.perf_counter()
            sink.stop()
            thread.join(60)
            rows_per_s = count / (done - first[0])
        finally:
            clickhouse.stop()
            broker.stop()
    detail = {"rows": count, "body_bytes": "1 KiB request + 1 KiB response", "partitions": 3}
    return [
        Figure("sink.rows_per_s", rows_per_s, "rows/s", detail=detail),
        Figure("sink.engine_rows_per_s", engine_rps, "rows/s", detail=detail),
        Figure("sink.ratio", rows_per_s / engine_rps, "x", target=0.8, detail=detail),
    ]
