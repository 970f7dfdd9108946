"""Replay results: the summary (match rate by route, status changes, latency, pacing), the JSON
report, and the stores results go to (a ClickHouse table, a Kafka topic as JSON)."""

from __future__ import annotations

import json
import re
import statistics
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any, Protocol

from ._engine import ReplayResult

__all__ = ["RESULTS_DDL", "ClickHouseResults", "KafkaResults", "ResultStore", "Summary", "result_json"]


_INDEX = re.compile(r"\[\d+\]")  # $.items[3].price and $.items[7].price count as one location


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, round(q * 1000) - 1)]


def result_json(result: ReplayResult, run_id: str) -> dict[str, Any]:
    """A result as a JSON object (no bodies: differences carry short excerpts only)."""
    return {
        "run_id": run_id,
        "id": result.id,
        "loop": result.loop,
        "service": result.service,
        "method": result.method,
        "route": result.route,
        "target": result.target.decode("latin-1"),
        "verdict": result.verdict,
        "reason": result.reason,
        "recorded_status": result.recorded_status,
        "status": result.status,
        "baseline_status": result.baseline_status,
        "recorded_ms": result.recorded_us / 1000,
        "replayed_ms": None if result.replayed_us is None else result.replayed_us / 1000,
        "lateness_ms": result.lateness_ms,
        "fault": result.fault,
        "differences": [
            {"location": d.location, "kind": d.kind, "expected": d.expected, "actual": d.actual}
            for d in result.differences
        ],
    }


class Summary:
    """Adds up results as they arrive."""

    def __init__(self) -> None:
        self.run_id = str(uuid.uuid4())
        self.started = datetime.now(UTC)
        self.verdicts: Counter[str] = Counter()
        self.routes: dict[str, Counter[str]] = defaultdict(Counter)
        self.status_changes: Counter[tuple[int | None, int | None]] = Counter()
        self.skipped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.locations: Counter[str] = Counter()
        self.recorded_ms: list[float] = []
        self.replayed_ms: list[float] = []
        self.lateness_ms: list[float] = []
        self.faults: Counter[str] = Counter()
        self.sent_incomplete: Counter[str] = Counter()
        self.redacted = 0
        self.results: list[dict[str, Any]] = []

    def add(self, result: ReplayResult, keep: bool = True) -> None:
        self.verdicts[result.verdict] += 1
        self.routes[f"{result.method} {result.route}"][result.verdict] += 1
        if result.fault:
            self.faults[result.fault] += 1
        if result.sent_incomplete:
            self.sent_incomplete[f"request-body-{result.sent_incomplete.lower().replace('_', '-')}"] += 1
        if result.redacted_headers:
            self.redacted += 1
        if result.verdict == "skipped":
            self.skipped[result.reason or "unknown"] += 1
        elif result.verdict == "error":
            self.errors[(result.reason or "error").split(":", 1)[0]] += 1
        else:
            expected = result.baseline_status if result.baseline_reply is not None else result.recorded_status
            if expected != result.status:
                self.status_changes[(expected, result.status)] += 1
            self.recorded_ms.append(result.recorded_us / 1000)
            if result.replayed_us is not None:
                self.replayed_ms.append(result.replayed_us / 1000)
            for difference in result.differences:
                self.locations[_INDEX.sub("[*]", difference.location)] += 1
        if (lateness := result.lateness_ms) is not None:
            self.lateness_ms.append(max(0.0, lateness))
        if keep:
            self.results.append(result_json(result, self.run_id))

    @property
    def compared(self) -> int:
        return self.verdicts["match"] + self.verdicts["differ"]

    def to_json(self, noise: dict[str, list[str]] | None = None) -> dict[str, Any]:
        compared = self.compared
        return {
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "total": sum(self.verdicts.values()),
            "verdicts": dict(self.verdicts),
            "match_rate": round(self.verdicts["match"] / compared, 4) if compared else None,
            "routes": [
                {
                    "route": route,
                    "requests": sum(c.values()),
                    "match": c["match"],
                    "differ": c["differ"],
                    "error": c["error"],
                    "skipped": c["skipped"],
                    "match_rate": round(c["match"] / (c["match"] + c["differ"]), 4)
                    if c["match"] + c["differ"]
                    else None,
                }
                for route, c in sorted(self.routes.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
            ],
            "status_changes": [
                {"from": a, "to": b, "count": n} for (a, b), n in self.status_changes.most_common()
            ],
            "top_differences": [{"location": loc, "count": n} for loc, n in self.locations.most_common(20)],
            "skipped": dict(self.skipped),
            "errors": dict(self.errors),
            "faults": dict(self.faults),
            "sent_incomplete": dict(self.sent_incomplete),
            "sent_with_redacted_headers": self.redacted,
            "latency_ms": {
                "recorded": {
                    "p50": _quantile(self.recorded_ms, 0.5),
                    "p99": _quantile(self.recorded_ms, 0.99),
                },
                "replayed": {
                    "p50": _quantile(self.replayed_ms, 0.5),
                    "p99": _quantile(self.replayed_ms, 0.99),
                },
            },
            "pacing_lateness_ms": {
                "p50": _quantile(self.lateness_ms, 0.5),
                "p99": _quantile(self.lateness_ms, 0.99),
                "max": max(self.lateness_ms) if self.lateness_ms else None,
            },
            "noise": noise or {},
        }

    def report(self, noise: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """The JSON report file: the summary and every result."""
        return {**self.to_json(noise), "results": self.results}


class ResultStore(Protocol):
    """Where results go as they arrive."""

    def write(self, result: ReplayResult) -> None: ...

    def close(self) -> None: ...


RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS replay_results
(
    run_id UUID,
    replayed_at DateTime64(3, 'UTC'),
    id UUID,
    loop UInt32,
    service LowCardinality(String),
    method LowCardinality(String),
    route LowCardinality(String),
    target String,
    verdict LowCardinality(String),
    reason Nullable(String),
    recorded_status Nullable(UInt16),
    status Nullable(UInt16),
    baseline_status Nullable(UInt16),
    recorded_ms Float64,
    replayed_ms Nullable(Float64),
    lateness_ms Nullable(Float64),
    fault LowCardinality(Nullable(String)),
    differences Array(Tuple(location String, kind String, expected Nullable(String), actual Nullable(String)))
)
ENGINE = MergeTree
PARTITION BY toDate(replayed_at)
ORDER BY (run_id, service, route, id, loop)
"""

_RESULT_COLUMNS = [
    "run_id",
    "replayed_at",
    "id",
    "loop",
    "service",
    "method",
    "route",
    "target",
    "verdict",
    "reason",
    "recorded_status",
    "status",
    "baseline_status",
    "recorded_ms",
    "replayed_ms",
    "lateness_ms",
    "fault",
    "differences",
]


class ClickHouseResults:
    """Results into the ``replay_results`` table, in batches."""

    def __init__(self, client: Any, run_id: str, batch: int = 5000) -> None:
        self.client, self.run_id, self.batch = client, run_id, batch
        self.rows: list[list[Any]] = []
        client.command(RESULTS_DDL)

    def write(self, result: ReplayResult) -> None:
        data = result_json(result, self.run_id)
        data["replayed_at"] = datetime.now(UTC)
        data["run_id"] = uuid.UUID(self.run_id)
        data["id"] = uuid.UUID(result.id)
        data["differences"] = [(d.location, d.kind, d.expected, d.actual) for d in result.differences]
        self.rows.append([data[c] for c in _RESULT_COLUMNS])
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.client.insert("replay_results", self.rows, column_names=_RESULT_COLUMNS)
            self.rows = []

    def close(self) -> None:
        self.flush()


class KafkaResults:
    """Results as JSON objects on a topic, keyed by record id."""

    def __init__(self, conf: dict[str, Any], topic: str, run_id: str) -> None:
        from confluent_kafka import Producer

        self.producer = Producer({**conf, "linger.ms": 20})
        self.topic, self.run_id = topic, run_id

    def write(self, result: ReplayResult) -> None:
        value = json.dumps(result_json(result, self.run_id), separators=(",", ":")).encode()
        while True:
            try:
                self.producer.produce(self.topic, value, result.id.encode())
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def close(self) -> None:
        self.producer.flush(30)
