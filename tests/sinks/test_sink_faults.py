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

from tests.streams.workers import make_topics
from trafficreel.sinks import migrate

from .support import (
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
    total = 2000 if SHORT else 6000
    records = business_records(total)
    done = threading.Event()
    feeder = threading.Thread(  # a steady stream: about 2,500 records/s
        target=produce_steadily,
        args=(infra.bootstrap, f"{prefix}.business", records, 0.02, done),
        daemon=True,
    )
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
        # About 500 records/s: some before, the rest during and after the freeze.
        feeder = threading.Thread(
            target=produce_steadily,
            args=(broker.bootstrap, f"{prefix}.business", records, 0.1, produced),
            daemon=True,
        )
        with running(sink):
            feeder.start()
            time.sleep(6)
            broker.signal(signal.SIGSTOP)
            try:
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
