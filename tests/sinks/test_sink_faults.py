"""A sink SIGKILLed mid-batch, again and again, under load: the table ends with exactly the ids produced."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.streams.workers import make_topics
from trafficreel.schemas import Serializer
from trafficreel.sinks import migrate

from .test_sink import _records

pytestmark = pytest.mark.stack
SHORT = os.environ.get("CI") is not None


def _sink(infra: Any, prefix: str, url: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "trafficreel", "--kafka-bootstrap", infra.bootstrap, "--topic-prefix", prefix,
        "--clickhouse-url", url, "sink", "--health-port", "0", "--group", f"{prefix}-sink",
    ]  # fmt: skip
    with log.open("a") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def test_killed_sink_loses_nothing_and_stores_nothing_twice(
    infra: Any, clickhouse: Any, tmp_path: Path
) -> None:
    """Kill -9 the sink at random moments while records stream in; restart it each time. At the end
    every produced id is in the table once."""
    prefix = make_topics(infra.bootstrap, partitions=3)
    migrate(clickhouse)
    url = f"{infra.clickhouse_url}/{clickhouse.database}"
    if infra.clickhouse_password:
        url = url.replace("://", f"://{infra.clickhouse_user}:{infra.clickhouse_password}@")
    total = 2000 if SHORT else 6000
    records = _records(total)
    serializer = Serializer()
    done = threading.Event()

    def produce() -> None:
        producer = Producer({"bootstrap.servers": infra.bootstrap, "linger.ms": 5})
        for i, record in enumerate(records):
            producer.produce(f"{prefix}.business", serializer(record), record["id"].encode())
            if i % 50 == 49:
                producer.poll(0)
                time.sleep(0.02)  # a steady stream: about 2,500 records/s
        producer.flush(30)
        done.set()

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    log = tmp_path / "sink.log"
    rng = random.Random(7)
    kills = 3 if SHORT else 6
    for _ in range(kills):
        process = _sink(infra, prefix, url, log)
        time.sleep(rng.uniform(3.0, 6.0))  # group join takes ~3 s on the embedded broker
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    feeder.join(60)
    assert done.is_set()
    process = _sink(infra, prefix, url, log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if int(clickhouse.command("SELECT count() FROM exchanges")) >= total:
                break
            time.sleep(0.5)
        time.sleep(2)  # anything more would be a duplicate
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()  # no sink left running after the test, whatever happened
            process.wait(10)
            raise AssertionError(
                "the sink did not stop within 30 s of SIGTERM\n" + log.read_text()[-3000:]
            ) from None
        assert code == 0, log.read_text()[-3000:]
    stored = [row[0] for row in clickhouse.query("SELECT toString(id) FROM exchanges").result_rows]
    assert len(stored) == len(set(stored)), "an id is stored twice"
    assert set(stored) == {r["id"] for r in records}, log.read_text()[-3000:]


def test_clickhouse_away_for_a_while_loses_nothing(infra: Any, tmp_path: Path) -> None:
    """ClickHouse frozen mid-load (requests time out): the sink backs off, commits nothing, and
    once ClickHouse answers again every record lands once — timed-out inserts that ClickHouse
    finished later are dropped as duplicates by their deduplication token."""
    import clickhouse_connect

    from trafficreel.sinks import ClickHouseSink
    from trafficreel.stack import EmbeddedClickHouse

    from .test_sink import _produce

    ch = EmbeddedClickHouse(tmp_path / "ch", tmp_path)
    ch.start()
    try:
        host, _, port = ch.url.removeprefix("http://").partition(":")

        def factory() -> Any:
            return clickhouse_connect.get_client(
                host=host, port=int(port), send_receive_timeout=2, connect_timeout=2
            )

        client = factory()
        migrate(client)
        prefix = make_topics(infra.bootstrap, partitions=2)
        records = _records(600)
        _produce(infra.bootstrap, f"{prefix}.business", records[:300])
        sink = ClickHouseSink(
            factory,
            {"bootstrap.servers": infra.bootstrap},
            [f"{prefix}.business"],
            f"{prefix}.dlq",
            group=f"{prefix}-f",
        )

        def count() -> int:
            return int(client.command("SELECT count() FROM exchanges"))

        thread = threading.Thread(target=sink.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while count() < 300 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count() == 300
        ch.signal(signal.SIGSTOP)
        try:
            _produce(infra.bootstrap, f"{prefix}.business", records[300:])
            time.sleep(8)
            assert sink.stats.retries > 0 and thread.is_alive()
        finally:
            ch.signal(signal.SIGCONT)
        settle_deadline = time.monotonic() + 90
        while count() < 600 and time.monotonic() < settle_deadline:
            time.sleep(0.3)
        time.sleep(2)
        sink.stop()
        thread.join(30)
        stored = [row[0] for row in client.query("SELECT toString(id) FROM exchanges").result_rows]
        assert len(stored) == len(set(stored)) == 600
        assert set(stored) == {r["id"] for r in records}
    finally:
        ch.stop()


def test_broker_frozen_for_20_seconds_loses_nothing(infra: Any, clickhouse: Any, tmp_path: Path) -> None:
    """A broker of its own frozen for 20 s (SIGSTOP/SIGCONT: the embedded broker keeps topics in
    memory) while records stream in: afterwards the table holds exactly the produced ids."""
    from trafficreel.sinks import ClickHouseSink
    from trafficreel.stack import EmbeddedBroker

    from .test_sink import _factory

    broker = EmbeddedBroker(tmp_path)
    broker.start()
    try:
        prefix = make_topics(broker.bootstrap, partitions=2)
        migrate(clickhouse)
        records = _records(1500)
        serializer = Serializer()
        produced = threading.Event()

        def produce() -> None:
            producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
            for i, record in enumerate(records):
                producer.produce(f"{prefix}.business", serializer(record), record["id"].encode())
                if i % 50 == 49:
                    producer.poll(0)
                    time.sleep(0.1)  # about 500 records/s: some before, the rest during and after the freeze
            assert producer.flush(120) == 0
            produced.set()

        sink = ClickHouseSink(
            _factory(infra, clickhouse.database),
            {"bootstrap.servers": broker.bootstrap},
            [f"{prefix}.business"],
            f"{prefix}.dlq",
            group=f"{prefix}-z",
        )
        thread = threading.Thread(target=sink.run, daemon=True)
        thread.start()
        feeder = threading.Thread(target=produce, daemon=True)
        feeder.start()
        time.sleep(6)
        broker.signal(signal.SIGSTOP)
        try:
            time.sleep(20)
        finally:
            broker.signal(signal.SIGCONT)
        feeder.join(180)
        assert produced.is_set()

        def count() -> int:
            return int(clickhouse.command("SELECT count() FROM exchanges"))

        deadline = time.monotonic() + 120
        while count() < len(records) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        sink.stop()
        thread.join(30)
        stored = [row[0] for row in clickhouse.query("SELECT toString(id) FROM exchanges").result_rows]
        assert len(stored) == len(set(stored)), "an id is stored twice"
        assert set(stored) == {r["id"] for r in records}
    finally:
        broker.stop()
