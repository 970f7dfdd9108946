"""The command line against the real broker: topics, tail (offsets, times, follow limits, bad records), help."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from tests.conftest import Infra
from trafficreel.cli import app, parse_time
from trafficreel.schemas import Serializer, sample_exchange

runner = CliRunner()


@pytest.fixture
def env(infra: Infra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import os

    for name in list(os.environ):
        if name.startswith("TRAFFICREEL_"):
            monkeypatch.delenv(name)
    return {
        "TRAFFICREEL_KAFKA_BOOTSTRAP": infra.bootstrap,
        "TRAFFICREEL_DATA_DIR": str(tmp_path),
        "TRAFFICREEL_TOPIC_PREFIX": "test",
    }


def _produce(infra: Infra, topic: str, values: list[bytes], timestamps: list[int] | None = None) -> None:
    producer = Producer(infra.kafka_conf(**{"linger.ms": 20}))
    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=0, timestamp=timestamps[i] if timestamps else 0)
    assert producer.flush(30) == 0


def _json_lines(output: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_topics_create_and_describe(env: dict[str, str]) -> None:
    """topics create makes the prefixed topics once; describe lists them with partitions and offsets."""
    first = runner.invoke(app, ["topics", "create", "raw", "dlq", "--partitions", "2"], env=env)
    assert first.exit_code == 0, first.output
    assert first.stdout.split() == ["test.raw", "created", "test.dlq", "created"]
    again = runner.invoke(app, ["topics", "create", "raw"], env=env)
    assert again.stdout.split() == ["test.raw", "exists"]
    described = runner.invoke(app, ["topics", "describe", "raw", "dlq", "--json"], env=env)
    info = json.loads(described.stdout)
    assert [(t["topic"], len(t["partitions"]), t["messages"]) for t in info] == [
        ("test.raw", 2, 0),
        ("test.dlq", 2, 0),
    ]
    table = runner.invoke(app, ["topics", "describe", "raw"], env=env)
    assert "test.raw" in table.stdout and "partitions" in table.stdout


def test_tail_from_offset_last_and_beginning(
    infra: Infra, env: dict[str, str], new_topic: Callable[..., str]
) -> None:
    """tail reads from the beginning, an offset, or the last N, and prints decodable JSON lines."""
    topic = new_topic()
    records = [sample_exchange(i) for i in range(12)]
    serializer = Serializer()
    _produce(infra, topic, [serializer(r) for r in records])

    everything = _json_lines(
        runner.invoke(app, ["tail", topic, "--from-beginning", "--format", "json"], env=env).stdout
    )
    assert [line["record"]["id"] for line in everything] == [r["id"] for r in records]
    assert everything[3]["offset"] == 3
    assert everything[0]["record"]["request"]["path"] == records[0]["request"]["path"].decode()

    from_offset = _json_lines(
        runner.invoke(app, ["tail", topic, "--offset", "9", "--format", "json"], env=env).stdout
    )
    assert [line["offset"] for line in from_offset] == [9, 10, 11]
    last = _json_lines(runner.invoke(app, ["tail", topic, "--last", "2", "--format", "json"], env=env).stdout)
    assert [line["offset"] for line in last] == [10, 11]
    capped = _json_lines(
        runner.invoke(app, ["tail", topic, "-b", "-n", "4", "--format", "json"], env=env).stdout
    )
    assert len(capped) == 4

    summary = runner.invoke(app, ["tail", topic, "--last", "1", "--format", "summary"], env=env)
    assert summary.stdout.startswith("0:11 ")
    assert records[11]["id"] in summary.stdout and "POST" in summary.stdout


def test_tail_since_a_time(infra: Infra, env: dict[str, str], new_topic: Callable[..., str]) -> None:
    """--since starts at the first record at or after the time, even inside a multi-record batch."""
    topic = new_topic()
    base = int(time.time() * 1000) - 60_000
    serializer = Serializer()
    _produce(
        infra, topic, [serializer(sample_exchange(i)) for i in range(6)], [base + i * 1000 for i in range(6)]
    )
    lines = _json_lines(
        runner.invoke(app, ["tail", topic, "--since", str(base + 3500), "--format", "json"], env=env).stdout
    )
    assert [line["offset"] for line in lines] == [4, 5]
    assert [line["timestamp_ms"] for line in lines] == [base + 4000, base + 5000]


def test_tail_reports_bad_records_and_goes_on(
    infra: Infra, env: dict[str, str], new_topic: Callable[..., str]
) -> None:
    """An undecodable message is reported on stderr with reason and offset; the rest still prints; exit 3."""
    topic = new_topic()
    serializer = Serializer()
    _produce(infra, topic, [serializer(sample_exchange(1)), b"not avro", serializer(sample_exchange(2))])
    result = runner.invoke(app, ["tail", topic, "-b", "--format", "json"], env=env)
    assert result.exit_code == 3
    assert [line["offset"] for line in _json_lines(result.stdout)] == [0, 2]
    assert "bad-magic" in result.stderr and f"{topic}[0]@1" in result.stderr


def test_tail_missing_topic_says_what_to_do(env: dict[str, str]) -> None:
    """Tailing a topic that does not exist fails with a message pointing at topics describe."""
    result = runner.invoke(app, ["tail", "no-such-topic-here"], env=env)
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and "topics describe" in result.stderr


def test_unreachable_broker_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no broker at the address, commands fail fast and suggest trafficreel up."""
    from trafficreel.stack._processes import free_port

    env = {"TRAFFICREEL_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "TRAFFICREEL_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["topics", "describe"], env=env)
    assert result.exit_code == 1
    assert "trafficreel up" in result.stderr


def test_every_command_explains_itself_with_an_example() -> None:
    """--help of every command describes it and shows an example invocation."""
    for args in (
        ["--help"],
        ["up", "--help"],
        ["tail", "--help"],
        ["topics", "create", "--help"],
        ["topics", "describe", "--help"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert "Example" in result.stdout, args


def test_version_names_schema_fingerprint() -> None:
    """version prints the package version and the record schema's fingerprint."""
    from trafficreel.schemas import exchange_schema

    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert exchange_schema().fingerprint.hex() in result.stdout


def test_parse_time_forms() -> None:
    """--since accepts ISO-8601 (UTC by default), ages and epoch milliseconds."""
    assert parse_time("2026-11-26T10:00:00Z") == 1795687200000
    assert parse_time("2026-11-26T10:00:00") == 1795687200000
    assert parse_time("2026-11-26T11:00:00+01:00") == 1795687200000
    assert parse_time("15m", now=1000.0) == 100_000
    assert parse_time("1795687200000") == 1795687200000


def test_tail_follow_prints_only_new_records(
    infra: Infra, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """tail --follow starts at the end and prints records as they arrive, until -n is reached."""
    import os
    import subprocess
    import sys

    topic = new_topic()
    serializer = Serializer()
    old = sample_exchange(100)
    _produce(infra, topic, [serializer(old)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICREEL_")}
    env |= {"TRAFFICREEL_KAFKA_BOOTSTRAP": infra.bootstrap, "TRAFFICREEL_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trafficreel", "tail", topic, "--follow", "-n", "2", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    sent = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        record = sample_exchange(len(sent) + 1)
        sent.append(record["id"])
        _produce(infra, topic, [serializer(record)])
        time.sleep(0.5)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    ids = [line["record"]["id"] for line in _json_lines(stdout)]
    assert len(ids) == 2
    assert old["id"] not in ids
    start = sent.index(ids[0])
    assert ids == sent[start : start + 2]
