"""Sink throughput: the sink end to end vs the same rows inserted straight into ClickHouse.

Records with 1 KiB request and response bodies are preloaded into a 3-partition class topic on
the embedded broker; the embedded ClickHouse (chDB behind the HTTP interface) holds the table.

- ``rows_per_s``: one sink (in this process) from the first record read to the last row committed:
  consume, decode, duplicate check, convert, insert, commit; into an empty database under a new
  consumer group each round;
- ``engine_rows_per_s``: the same rows, prepared in advance, inserted with clickhouse-connect in
  one go into an empty table — the ceiling on this machine, same run:
  the faster of a column-oriented Native insert (``engine_native_rows_per_s``) and the records'
  Avro bytes parsed by ClickHouse (``engine_avro_rows_per_s``, what the sink sends);
- ``ratio`` = rows_per_s / engine_rows_per_s (target ≥ 0.8);
- ``peak_rss_mib``: peak resident memory of a ``trafficreel sink`` process (default batch
  settings) loading the same topic from its start, into a database of its own;
- ``e2e_p99_ms`` and its companions: response sent → row queryable at a steady 1,000 requests/s
  through the whole pipeline (``bench/e2e.py``; target ≤ 2,000 ms).

Sink and ceiling rounds alternate (three of each, one with ``--quick``), so both see the same
machine, each once ClickHouse merges nothing; each figure is the median of its rounds.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect
from confluent_kafka import Producer

from trafficreel._gc import tune_gc_for_worker
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
    rounds = 1 if quick else 3
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
            admin.command("CREATE DATABASE IF NOT EXISTS engine")
            migrate(client("engine"))
            ceiling = _Ceiling(client("engine"), values)
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
            # Rounds interleaved, so that the sink and its ceiling see the same machine; medians.
            native_runs: list[float] = []
            avro_runs: list[float] = []
            sink_runs: list[float] = []
            for round_ in range(rounds):
                native_rps, avro_rps = ceiling.round(lambda: _settle(admin))
                native_runs.append(native_rps)
                avro_runs.append(avro_rps)
                database = f"sink{round_}"
                admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
                migrate(client(database))
                _settle(admin)
                sink_runs.append(_sink_round(broker.bootstrap, client, database, count, round_))
            ceiling.close()
            peak_rss = _sink_peak_rss(broker.bootstrap, clickhouse.url, client, count, Path(tmp) / "sink.log")
        finally:
            clickhouse.stop()
            broker.stop()
    detail = {
        "rows": count,
        "body_bytes": "1 KiB request + 1 KiB response",
        "partitions": 3,
        "rounds": rounds,
    }
    return [
        *_rows_figures(sink_runs, native_runs, avro_runs, detail),
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


class _Ceiling:
    """The same rows, prepared in advance, inserted in one go into an empty table: as
    column-oriented Native data and as the records' Avro bytes for ClickHouse to parse."""

    def __init__(self, engine: Any, values: list[bytes]) -> None:
        self.engine = engine
        self.count = len(values)
        decoder = Deserializer()
        self.columns = Columns()
        self.rows = rows = AvroBatch(AvroInsert(decoder.reader))
        for offset, value in enumerate(values):
            self.columns.add(decoder(value), "bench.business", 0, offset)
            rows.add(value, 10, "bench.business", 0, offset)
        self.insert = AvroInsert(decoder.reader)
        # The decoded rows (millions of objects) live on while the sink runs in this process:
        # frozen, the sink's garbage collections do not walk them (a ``trafficreel sink``
        # process holds only its batches).
        gc.collect()
        gc.freeze()

    def round(self, settle: Callable[[], None]) -> tuple[float, float]:
        """Rows/s of one Native and one Avro insert, each once ``settle`` returns."""
        rates = []
        for send in (
            lambda: self.engine.insert(
                "exchanges", self.columns.data, column_names=COLUMNS, column_oriented=True
            ),
            # Streamed in 1 MiB pieces, as the sink sends: faster than one bytes body (about
            # 55k rows/s here against 40-50k), which clickhouse-connect copies whole first.
            lambda: self.insert.send(self.engine, self.rows.chunks()),
        ):
            self.engine.command("TRUNCATE TABLE exchanges")
            settle()
            started = time.perf_counter()
            send()
            rates.append(self.count / (time.perf_counter() - started))
        return rates[0], rates[1]

    def close(self) -> None:
        gc.unfreeze()
        del self.columns, self.rows
        gc.collect()


def _settle(admin: Any, timeout: float = 60) -> None:
    """Wait until ClickHouse merges no parts (the last round's inserts leave merges behind them,
    which would take CPU from the next round's)."""
    deadline = time.monotonic() + timeout
    while int(admin.command("SELECT count() FROM system.merges")) and time.monotonic() < deadline:
        time.sleep(0.1)


def _sink_round(
    bootstrap: str, client: Callable[[str], Any], database: str, count: int, round_: int
) -> float:
    """Rows/s of one sink, in this process, loading the whole topic into an empty database under
    a new consumer group; timed by the sink's own batch callback (called once a batch is inserted
    and its offsets committed), not by polling ClickHouse: the embedded server answers one
    request at a time, so polling would hold the sink's inserts back."""
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
        lambda: client(database),
        {"bootstrap.servers": bootstrap},
        ["bench.business"],
        "bench.dlq",
        group=f"bench-sink-{round_}",
        on_batch=on_batch,
    )
    # As in a ``trafficreel sink`` process; the ceiling's rounds run with the thresholds before.
    thresholds = tune_gc_for_worker()
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        finished.wait(600)
        sink.stop()
        thread.join(60)
    finally:
        gc.set_threshold(*thresholds)
    stored = int(client(database).command("SELECT count() FROM exchanges"))
    if stored != count:
        raise RuntimeError(f"the sink stored {stored} of {count} rows")
    return count / (done[0] - first[0])


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
    sink_runs: list[float], native_runs: list[float], avro_runs: list[float], detail: dict[str, Any]
) -> list[Figure]:
    """Medians of the rounds, each figure with its rounds (rows/s, in order) in its detail."""
    rows_per_s, native_rps, avro_rps = (
        statistics.median(runs) for runs in (sink_runs, native_runs, avro_runs)
    )
    engine_rps = max(native_rps, avro_rps)

    def runs(values: list[float]) -> dict[str, Any]:
        return {**detail, "runs": [round(value) for value in values]}

    return [
        Figure("sink.rows_per_s", rows_per_s, "rows/s", detail=runs(sink_runs)),
        Figure("sink.engine_rows_per_s", engine_rps, "rows/s", detail=detail),
        Figure("sink.engine_native_rows_per_s", native_rps, "rows/s", detail=runs(native_runs)),
        Figure("sink.engine_avro_rows_per_s", avro_rps, "rows/s", detail=runs(avro_runs)),
        Figure("sink.ratio", rows_per_s / engine_rps, "x", target=0.8, detail=detail),
    ]
