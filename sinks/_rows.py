"""The columns of the ``exchanges`` table, and records as column-oriented rows.

The sink sends records as Avro for ClickHouse to parse (``_avro``); ``Columns`` builds the same
rows in Python for a column-oriented insert with clickhouse-connect (used by tests and the
benchmark's Native ceiling)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from trafficreel.schemas import Body, Exchange

__all__ = ["COLUMNS", "Columns"]

_BODY_FIELDS = ("data", "size", "sha256", "content_type", "content_encoding", "declared_length", "state")
COLUMNS: tuple[str, ...] = (
    "id",
    "start_time",
    "duration_us",
    "direction",
    "service",
    "service_version",
    "pod",
    "namespace",
    "node",
    "container_id",
    "k8s_api_host",
    "recorder",
    "remote_address",
    "remote_port",
    "local_address",
    "local_port",
    "forwarded_for",
    "method",
    "scheme",
    "host",
    "path",
    "query",
    "http_version",
    "request_headers",
    *(f"request_body_{f}" for f in _BODY_FIELDS),
    "status",
    "response_headers",
    "response_trailers",
    *(f"response_body_{f}" for f in _BODY_FIELDS),
    "outcome",
    "exception_type",
    "exception_message",
    "response_started",
    "trace_id",
    "span_id",
    "trace_sampled",
    "traffic_class",
    "class_rule",
    "route",
    "sample_weight",
    "redactions",
    "tags",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def _headers(headers: Sequence[Any]) -> list[tuple[bytes, bytes]]:
    return [(h["name"], h["value"]) for h in headers]


def _body(body: Body) -> list[Any]:
    return [body[f] for f in _BODY_FIELDS]  # type: ignore[literal-required]


class Columns:
    """A batch of rows, kept column by column."""

    def __init__(self) -> None:
        self.data: list[list[Any]] = [[] for _ in COLUMNS]
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, record: Exchange, topic: str, partition: int, offset: int) -> None:
        source, peer, request, response = (
            record["source"],
            record["peer"],
            record["request"],
            record["response"],
        )
        outcome, trace = record["outcome"], record["trace"]
        row = [
            uuid.UUID(record["id"]),
            datetime.fromtimestamp(record["start_time"] / 1e6, UTC),
            record["duration_us"],
            record["direction"],
            source["service"],
            source["service_version"],
            source["pod"],
            source["namespace"],
            source["node"],
            source["container_id"],
            source["k8s_api_host"],
            source["recorder"],
            peer["remote_address"],
            peer["remote_port"],
            peer["local_address"],
            peer["local_port"],
            peer["forwarded_for"],
            request["method"],
            request["scheme"],
            request["host"],
            request["path"],
            request["query"],
            request["http_version"],
            _headers(request["headers"]),
            *_body(request["body"]),
            response["status"],
            _headers(response["headers"]),
            _headers(response["trailers"]),
            *_body(response["body"]),
            outcome["kind"],
            outcome["exception_type"],
            outcome["exception_message"],
            outcome["response_started"],
            trace["trace_id"],
            trace["span_id"],
            trace["sampled"],
            record["traffic_class"] or "unclassified",
            record["class_rule"] or "",
            record["route"] or "",
            record["sample_weight"] if record["sample_weight"] is not None else 1.0,
            [(r["location"], r["rule"], r["stage"]) for r in record["redactions"]],
            record["tags"],
            topic,
            partition,
            offset,
        ]
        for column, value in zip(self.data, row, strict=True):
            column.append(value)
        self.ids.append(record["id"])

    def rows(self, index: int) -> Columns:
        """A batch holding only row ``index`` (to isolate a row ClickHouse refuses)."""
        one = Columns()
        one.data = [[column[index]] for column in self.data]
        one.ids = [self.ids[index]]
        return one
