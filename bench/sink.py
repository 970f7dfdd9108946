"""Sink throughput: the sink end to end vs the same rows inserted straight into ClickHouse.

Records with 1 KiB request and response bodies are preloaded into a 3-partition class topic on
the embedded broker; the embedded ClickHouse (chDB behind the HTTP interface) holds the table.

- ``rows_per_s``: one sink (in this process) from the first record read to the last row committed:
  consume, decode, duplicate check, convert, insert, commit;
- ``engine_rows_per_s``: the same rows, prepared in advance, inserted with clickhouse-connect in
  one go into an empty table (median of three rounds) — the ceiling on this machine, same run:
  the faster of a column-oriented Native insert (``engine_native_rows_per_s``) and the records'
  Avro bytes parsed by ClickHouse (``engine_avro_rows_per_s``, what the sink sends);
- ``ratio`` = rows_per_s / engine_rows_per_s (target ≥ 0.8);
- ``peak_rss_mib``: peak resident memory of a ``trafficreel sink`` process (default batch
  settings) loading the same topic from its start, into a database of its own;
- ``e2e_p99_ms`` and its companions: response sent → row queryable at a steady 1,000 requests/s
  through the whole pipeline (``bench/e2e.py``; target ≤ 2,000 ms).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import clickhouse_connect
from confluent_kafka import Producer

from trafficreel.schemas import Deserializer, Serializer, sample_exchange
from trafficreel.sinks import COLUMNS, ClickHouseSink, migrate
from trafficreel.sinks._avro import AvroBatch, AvroInsert
from trafficreel.sinks._rows import Columns
from trafficreel.stack import EmbeddedBroker, EmbeddedClickHouse
from trafficreel.stack._processes import ChildProcess
from trafficreel.topics import create_topics

from ._harness import Figure
from .e2e import e2e_figures

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
            native_rps, avro_rps = _ceiling(client("engine"), values, quick)
            engine_rps = max(native_rps, avro_rps)
            # The ceiling's decoded rows (millions of objects, freed when _ceiling returns) are
            # gone before the sink runs in this process: while they lived, each of the sink's full
            # garbage collections walked them all, holding the GIL for a few hundred ms (a
            # ``trafficreel sink`` process holds only its batches).
            gc.collect()
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
            # Timed by the sink's own batch callback (called once a batch is inserted and its
            # offsets committed), not by polling ClickHouse: the embedded server answers one
            # request at a time, so polling would hold the sink's inserts back.
            first: list[float] = []
            handled = [0]
            finished = threading.Event()
            done = [0.0]

            def on_batch(messages: int, seconds: float) -> None:
                now = time.perf_counter()
                if not first:
                    first.append(now - seconds)
                handled[0] += messages
                if handled[0] >= count:
                    done[0] = now
                    finished.set()

            sink = ClickHouseSink(
                lambda: client("sink"),
                {"bootstrap.servers": broker.bootstrap},
                ["bench.business"],
                "bench.dlq",
                group="bench-sink",
                on_batch=on_batch,
            )
            thread = threading.Thread(target=sink.run, daemon=True)
            thread.start()
            finished.wait(600)
            sink.stop()
            thread.join(60)
            stored = int(client("sink").command("SELECT count() FROM exchanges"))
            if stored != count:
                raise RuntimeError(f"the sink stored {stored} of {count} rows")
            rows_per_s = count / (done[0] - first[0])
            peak_rss = _sink_peak_rss(broker.bootstrap, clickhouse.url, client, count, Path(tmp) / "sink.log")
        finally:
            clickhouse.stop()
            broker.stop()
    detail = {"rows": count, "body_bytes": "1 KiB request + 1 KiB response", "partitions": 3}
    return [
        *_rows_figures(rows_per_s, engine_rps, native_rps, avro_rps, detail),
        Figure(
            "sink.peak_rss_mib",
            peak_rss,
            "MiB",
            detail={
                **detail,
                "process": "trafficreel sink, default batch settings, catching up the whole topic",
            },
        ),
        *e2e_figures(quick),
    ]


def _ceiling(engine: Any, values: list[bytes], quick: bool) -> tuple[float, float]:
    """The same rows, prepared in advance, inserted in one go into an empty table: rows/s as
    column-oriented Native data and as the records' Avro bytes for ClickHouse to parse (median of
    interleaved rounds; the first insert runs cold)."""
    count = len(values)
    decoder = Deserializer()
    columns = Columns()
    rows = AvroBatch(AvroInsert(decoder.reader))
    for offset, value in enumerate(values):
        columns.add(decoder(value), "bench.business", 0, offset)
        rows.add(value, 10, "bench.business", 0, offset)
    payload = rows.payload()
    insert = AvroInsert(decoder.reader)
    native_runs: list[float] = []
    avro_runs: list[float] = []
    for _ in range(1 if quick else 3):
        for runs, send in (
            (native_runs, lambda: engine.insert(
                "exchanges", columns.data, column_names=COLUMNS, column_oriented=True
            )),
            (avro_runs, lambda: insert.send(engine, payload)),
        ):  # fmt: skip
            engine.command("TRUNCATE TABLE exchanges")
            started = time.perf_counter()
            send()
            runs.append(count / (time.perf_counter() - started))
    return statistics.median(native_runs), statistics.median(avro_runs)


def _sink_peak_rss(bootstrap: str, url: str, client: Any, count: int, log: Path) -> float:
    """Peak resident memory (MiB) of a ``trafficreel sink`` process, default settings, loading
    the whole preloaded topic into a database of its own (a sink far behind: its batches grow)."""
    client().command("CREATE DATABASE IF NOT EXISTS rss")
    env = {
        "TRAFFICREEL_KAFKA_BOOTSTRAP": bootstrap,
        "TRAFFICREEL_TOPIC_PREFIX": "bench",
        "TRAFFICREEL_CLICKHOUSE_URL": f"{url}/rss",
        "TRAFFICREEL_HEALTH_PORT": "0",
    }
    command = [sys.executable, "-m", "trafficreel", "sink", "--topic", "business", "--group", "bench-rss"]
    sink = ChildProcess("sink", command, log, env)
    rss = client("rss")

    def loaded() -> bool:
        with contextlib.suppress(Exception):  # the table is made by the sink's migrations
            return int(rss.command("SELECT count() FROM exchanges")) >= count
        return False

    sink.start()
    try:
        sink.wait_ready(loaded, 600)
        status = Path(f"/proc/{sink.pid}/status").read_text()
        peak_kib = int(status.split("VmHWM:", 1)[1].split()[0])
    finally:
        sink.stop(60)
    return peak_kib / 1024


def _rows_figures(
    rows_per_s: float, engine_rps: float, native_rps: float, avro_rps: float, detail: dict[str, Any]
) -> list[Figure]:
    return [
        Figure("sink.rows_per_s", rows_per_s, "rows/s", detail=detail),
        Figure("sink.engine_rows_per_s", engine_rps, "rows/s", detail=detail),
        Figure("sink.engine_native_rows_per_s", native_rps, "rows/s", detail=detail),
        Figure("sink.engine_avro_rows_per_s", avro_rps, "rows/s", detail=detail),
        Figure("sink.ratio", rows_per_s / engine_rps, "x", target=0.8, detail=detail),
    ]
