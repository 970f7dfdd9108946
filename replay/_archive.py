"""Records rebuilt from their ClickHouse rows: the long-term replay archive.

The ``exchanges`` table keeps every field of the record (raw path and query bytes, headers in
order with duplicates, kept bodies, encodings, body states), so a row turns back into the record
it was loaded from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from trafficreel.schemas import Body, Exchange
from trafficreel.sinks._rows import COLUMNS

__all__ = ["rebuild_from_clickhouse", "row_to_exchange"]

# The sink's own column list, read back; aliases must not shadow columns (WHERE would see them).
_EXPRESSIONS = {
    "id": "toString(id) AS id_text",
    "start_time": "toUnixTimestamp64Micro(start_time) AS start_us",
}
_SELECT = ", ".join(_EXPRESSIONS.get(column, column) for column in COLUMNS)


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _body(row: dict[str, Any], prefix: str) -> Body:
    get = row.__getitem__
    return {
        "data": get(f"{prefix}_body_data"),
        "size": get(f"{prefix}_body_size"),
        "sha256": get(f"{prefix}_body_sha256"),
        "content_type": _text(get(f"{prefix}_body_content_type")),
        "content_encoding": _text(get(f"{prefix}_body_content_encoding")),
        "declared_length": get(f"{prefix}_body_declared_length"),
        "state": _text(get(f"{prefix}_body_state")),
    }


def _tuple(item: Any, *names: str) -> tuple[Any, ...]:
    # clickhouse-connect returns named tuples as dicts
    return tuple(item[n] for n in names) if isinstance(item, dict) else tuple(item)


def _headers(pairs: Sequence[Any]) -> list[Any]:
    return [{"name": n, "value": v} for n, v in (_tuple(p, "name", "value") for p in pairs)]


def row_to_exchange(row: dict[str, Any]) -> Exchange:
    """The record a row of ``exchanges`` was loaded from (bytes columns read as bytes)."""
    t = {
        k: _text(row[k]) for k in row if k not in ("path", "query", "request_body_data", "response_body_data")
    }
    return {
        "id": t["id_text"],
        "start_time": t["start_us"],
        "duration_us": t["duration_us"],
        "direction": t["direction"],
        "source": {
            k: t[k]
            for k in (
                "service",
                "service_version",
                "pod",
                "namespace",
                "node",
                "container_id",
                "k8s_api_host",
                "recorder",
            )
        },  # type: ignore[typeddict-item]
        "peer": {
            k: t[k] for k in ("remote_address", "remote_port", "local_address", "local_port", "forwarded_for")
        },  # type: ignore[typeddict-item]
        "request": {
            "method": t["method"],
            "scheme": t["scheme"],
            "host": t["host"],
            "path": row["path"],
            "query": row["query"],
            "http_version": t["http_version"],
            "headers": _headers(row["request_headers"]),
            "body": _body(row, "request"),
        },
        "response": {
            "status": t["status"],
            "headers": _headers(row["response_headers"]),
            "trailers": _headers(row["response_trailers"]),
            "body": _body(row, "response"),
        },
        "outcome": {
            "kind": t["outcome"],
            "exception_type": t["exception_type"],
            "exception_message": t["exception_message"],
            "response_started": bool(t["response_started"]),
        },
        "trace": {"trace_id": t["trace_id"], "span_id": t["span_id"], "sampled": t["trace_sampled"]},
        "traffic_class": t["traffic_class"] or None,
        "class_rule": t["class_rule"] or None,
        "route": t["route"] or None,
        "sample_weight": t["sample_weight"],
        "redactions": [
            {"location": _text(loc), "rule": _text(rule), "stage": _text(stage)}
            for loc, rule, stage in (_tuple(r, "location", "rule", "stage") for r in row["redactions"])
        ],
        "tags": {_text(k): _text(v) for k, v in row["tags"].items()},
    }


def rebuild_from_clickhouse(
    client: Any, ids: Sequence[str], chunk: int = 1000
) -> Iterator[tuple[Exchange, str, int, int]]:
    """Each id's record with its stored topic, partition and offset (ids not found are skipped)."""
    for i in range(0, len(ids), chunk):
        part = list(ids[i : i + chunk])
        result = client.query(
            # a fixed column list; the ids are bound parameters
            f"SELECT {_SELECT} FROM exchanges WHERE id IN {{ids:Array(UUID)}} LIMIT 1 BY id",  # noqa: S608
            parameters={"ids": part},
            query_formats={"String": "bytes", "FixedString": "bytes"},
        )
        for values in result.result_rows:
            row = dict(zip(result.column_names, values, strict=True))
            yield row_to_exchange(row), _text(row["kafka_topic"]), row["kafka_partition"], row["kafka_offset"]
