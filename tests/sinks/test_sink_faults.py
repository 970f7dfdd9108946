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
from trafficreel.sinks import migrate

from .support import (
    SERIALIZER,
    business_records,
    business_sink,
    produce,
    produce_steadily,
    row_count,
    running,
    stored_ids,
    wait_for,
)

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
    kills = 3 if SHORT else 6
    pool = business_records(20_000)
    sent: list[dict[str, Any]] = []
    stop = threading.Event()

    def feed() -> None:  # about 150 records/s until the last kill, so every kill lands mid-stream
        producer = Producer({"bootstrap.servers": infra.bootstrap, "linger.ms": 5})
        for record in pool:
            if stop.is_set():
                break
            producer.produce(f"{prefix}.business", SERIALIZER(record), record["id"].encode())
            sent.append(record)
            if len(sent) % 15 == 0:
                producer.poll(0)
                time.sleep(0.1)
        assert producer.flush(120) == 0

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    log = tmp_path / "sink.log"
    rng = random.Random(7)
    at_kills: list[tuple[int, int]] = []
    for _ in range(kills):
        before = row_count(clickhouse)
        process = _sink(infra, prefix, url, log)
        # Killed while it loads: once it stored rows of its own, at a random moment after.
        assert wait_for(lambda before=before: row_count(clickhouse) > before, 60, 0.1), log.read_text()[
            -3000:
        ]
        time.sleep(rng.uniform(0.05, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        at_kills.append((row_count(clickhouse), len(sent)))
    stop.set()
    feeder.join(120)
    records, total = sent, len(sent)
    assert all(rows > 0 for rows, _ in at_kills) and len(pool) > total, at_kills
    process = _sink(infra, prefix, url, log)
    try:
        wait_for(lambda: row_count(clickhouse) >= total, 120, 0.5)
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
    stored = stored_ids(clickhouse)
    assert len(stored) == len(set(stored)), "an id is stored twice"
    assert set(stored) == {r["id"] for r in records}, log.read_text()[-3000:]


def test_clickhouse_away_for_a_while_loses_nothing(infra: Any, tmp_path: Path) -> None:
    """ClickHouse frozen mid-load (requests time out): the sink backs off, commits nothing, and
    once ClickHouse answers again every record lands once — timed-out inserts that ClickHouse
    finished later are dropped as duplicates by their deduplication token."""
    import clickhouse_connect

    from trafficreel.sinks import ClickHouseSink
    from trafficreel.stack import EmbeddedClickHouse

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
        records = business_records(600)
        produce(infra.bootstrap, f"{prefix}.business", records[:300])
        sink = ClickHouseSink(
            factory,
            {"bootstrap.servers": infra.bootstrap},
            [f"{prefix}.business"],
            f"{prefix}.dlq",
            group=f"{prefix}-f",
        )

        with running(sink) as thread:
            assert wait_for(lambda: row_count(client) >= 300, 60)
            assert row_count(client) == 300
            ch.signal(signal.SIGSTOP)
            try:
                produce(infra.bootstrap, f"{prefix}.business", records[300:])
                time.sleep(8)
                assert sink.stats.retries > 0 and thread.is_alive()
                # The lag gauge is kept current while the store waits for ClickHouse.
                assert sum(sink.stats.lag.values()) > 0
            finally:
                ch.signal(signal.SIGCONT)
            wait_for(lambda: row_count(client) >= 600, 90, 0.3)
            time.sleep(2)
        stored = stored_ids(client)
        assert len(stored) == len(set(stored)) == 600
        assert set(stored) == {r["id"] for r in records}
    finally:
        ch.stop()


def test_broker_frozen_for_20_seconds_loses_nothing(infra: Any, clickhouse: Any, tmp_path: Path) -> None:
    """A broker of its own frozen for 20 s (SIGSTOP/SIGCONT: the embedded broker keeps topics in
    memory) while records stream in: afterwards the table holds exactly the produced ids."""
    from trafficreel.stack import EmbeddedBroker

    broker = EmbeddedBroker(tmp_path)
    broker.start()
    try:
        prefix = make_topics(broker.bootstrap, partitions=2)
        migrate(clickhouse)
        records = business_records(1500)
        produced = threading.Event()
        sink = business_sink(infra, clickhouse, prefix, "z", bootstrap=broker.bootstrap)
        # About 50 records/s for 30 s: some before, the rest during and after the freeze.
        feeder = threading.Thread(
            target=produce_steadily,
            args=(broker.bootstrap, f"{prefix}.business", records, 1.0, produced),
            daemon=True,
        )
        with running(sink):
            feeder.start()
            assert wait_for(lambda: row_count(clickhouse) > 0, 60, 0.1)  # the sink is loading
            time.sleep(1)
            broker.signal(signal.SIGSTOP)
            try:
                at_freeze = row_count(clickhouse)
                assert 0 < at_freeze < len(records) and not produced.is_set()  # frozen mid-stream
                time.sleep(20)
            finally:
                broker.signal(signal.SIGCONT)
            feeder.join(180)
            assert produced.is_set()
            wait_for(lambda: row_count(clickhouse) >= len(records), 120, 0.5)
            time.sleep(2)
        stored = stored_ids(clickhouse)
        assert len(stored) == len(set(stored)), "an id is stored twice"
        assert set(stored) == {r["id"] for r in records}
    finally:
        broker.stop()
