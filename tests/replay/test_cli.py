"""`trafficreel replay` end to end on the real broker and ClickHouse."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from tests.streams.workers import read_all
from trafficreel.cli import app
from trafficreel.replay.testing import Captured
from trafficreel.schemas import Serializer

from .support import ThreadedCapture, record

pytestmark = pytest.mark.stack


def _respond(request: Captured) -> bytes:
    body = b'{"n": 2}' if request.target == b"/items/3" else b'{"n": 1}'
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


@pytest.fixture
def recorded(infra: Any, new_topic: Callable[..., str]) -> str:
    """Five business records on a topic; the target will answer one of them differently."""
    topic = new_topic(1)
    producer = Producer(infra.kafka_conf())
    for i in range(5):
        rec = record(i, path=b"/items/%d" % i, route="/items/{id}", response_body=b'{"n": 1}')
        producer.produce(topic, Serializer()(rec), rec["id"].encode())
    assert producer.flush(30) == 0
    return topic


def _cli(infra: Any, *args: str, database: str | None = None) -> Any:
    base = ["--kafka-bootstrap", infra.bootstrap]
    if database:
        base += ["--clickhouse-url", f"{infra.clickhouse_url}/{database}"]
    return CliRunner().invoke(app, [*base, "replay", *args])


def test_a_target_not_allowed_is_refused_before_anything_is_read_or_sent(infra: Any, recorded: str) -> None:
    """No --allow (and no TRAFFICREEL_REPLAY_ALLOW): exit 1, a one-line error, no request."""
    with ThreadedCapture() as target:
        result = _cli(infra, "--target", target.url, "--topic", recorded, "--range", "0")
        assert result.exit_code == 1
        assert result.output.startswith("error: The target") and "--allow" in result.output
        assert target.server.requests == []


def test_replay_compares_reports_and_stores_results(
    infra: Any, recorded: str, clickhouse: Any, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A replay prints the summary, writes the JSON report, stores results in ClickHouse and a topic,
    and --fail-on-diff exits 3 when a response changed."""
    results_topic = new_topic(1)
    report = tmp_path / "report.json"
    with ThreadedCapture(_respond) as target:
        result = _cli(
            infra,
            "--target", target.url, "--allow", "127.0.0.1", "--topic", recorded, "--range", "0",
            "--asap", "--report", str(report), "--results-table", "--results-topic", results_topic,
            "--fail-on-diff",
            database=clickhouse.database,
        )  # fmt: skip
        assert len(target.server.requests) == 5
    assert result.exit_code == 3, result.output
    assert "replayed 5: 4 match, 1 differ" in result.output and "By route" in result.output
    data = json.loads(report.read_text())
    assert data["verdicts"] == {"match": 4, "differ": 1}
    [changed] = [r for r in data["results"] if r["verdict"] == "differ"]
    assert changed["target"] == "/items/3" and changed["differences"][0]["location"] == "body:$.n"
    rows = clickhouse.query("SELECT verdict, count() FROM replay_results GROUP BY verdict ORDER BY verdict")
    assert rows.result_rows == [("differ", 1), ("match", 4)]
    assert len(read_all(infra.bootstrap, results_topic)) == 5


def test_dry_run_prints_the_requests_and_sends_nothing(infra: Any, recorded: str) -> None:
    """--dry-run prints each request line and headers, and sends nothing."""
    with ThreadedCapture() as target:
        result = _cli(infra, "--target", target.url, "--topic", recorded, "--range", "0:1-3", "--dry-run")
        assert target.server.requests == []
    assert result.exit_code == 0, result.output
    assert "GET /items/1 HTTP/1.1" in result.output and "GET /items/2 HTTP/1.1" in result.output
    assert "2 requests would be sent" in result.output


def test_selection_flags_are_checked(infra: Any) -> None:
    """No selection, or two at once, is a usage error saying what to choose."""
    none = _cli(infra, "--target", "http://127.0.0.1:1", "--allow", "127.0.0.1")
    assert none.exit_code == 2 and "--range, --from or --where" in none.output
    both = _cli(infra, "--target", "http://127.0.0.1:1", "--range", "0", "--from", "1h")
    assert both.exit_code == 2 and "only one of" in both.output
