"""The whole pipeline's promises under faults, in one run (short form; the long form is
`python -m tests.e2e.faultrun --seconds 120 --freeze 20`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .faultrun import run

pytestmark = pytest.mark.stack


def test_no_loss_no_duplicates_no_leaks_under_faults(tmp_path: Path) -> None:
    """Broker frozen, a worker and the sink SIGKILLed, ClickHouse frozen, garbage in every topic:
    every request answered, every delivered record stored exactly once, every bad value
    dead-lettered with its reason, no planted credential anywhere."""
    result = run(seconds=36, freeze=6, data_dir=tmp_path, rate=30)
    assert result.failures == [], result.failures[:5]
    assert result.requests > 500
    stats = result.recorder
    assert stats["recorded"] == result.requests
    assert stats["delivered"] + sum(stats["dropped"].values()) == stats["recorded"]
    assert result.raw_ids == stats["delivered"]  # a re-sent record keeps its id
    assert (result.missing, result.unexpected) == ([], [])
    assert result.rows == result.distinct_rows == result.raw_ids  # exactly once
    assert result.dlq == result.garbage  # garbage in every topic: each dead-lettered with its reason
    assert len(result.garbage) == 7
    assert result.leaks == []
    # ... and not because they went missing: every row lists where each one was redacted.
    assert set(result.redacted_rows.values()) == {result.rows}, result.redacted_rows
    # Recording never blocked the app: a 6 s broker freeze shows in no request's latency.
    assert result.latency_ms["max_while_broker_frozen"] < 1000, result.latency_ms
