"""The terminal report: what the recorded traffic looks like, from the views, re-weighted to real counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Report", "build_report"]

_ERROR = "coalesce(status, 0) >= 500 OR outcome != 'COMPLETED'"  # as the route_minute view counts errors


@dataclass
class Report:
    since_ms: int
    service: str | None
    by_class: list[dict[str, Any]]
    top_routes: list[dict[str, Any]]
    k8s_per_pod: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "since_ms": self.since_ms,
            "service": self.service,
            "traffic_by_class": self.by_class,
            "top_routes": self.top_routes,
            "k8s_api_per_pod": self.k8s_per_pod,
        }


def _rows(client: Any, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def build_report(client: Any, since_ms: int, service: str | None = None, limit: int = 15) -> Report:
    """Traffic by class and service, top routes with error rate and latency percentiles, and
    Kubernetes API load per pod, since ``since_ms``; counts re-weighted by ``sample_weight``."""
    where = "start_time >= fromUnixTimestamp64Milli(%(since)s, 'UTC')"
    minute = "minute >= toStartOfMinute(fromUnixTimestamp64Milli(%(since)s, 'UTC'))"
    params: dict[str, Any] = {"since": since_ms, "limit": limit}
    if service:
        where += " AND service = %(service)s"
        minute += " AND service = %(service)s"
        params["service"] = service
    by_class = _rows(
        client,
        "SELECT traffic_class, service, count() AS stored, round(sum(sample_weight)) AS estimated "  # noqa: S608 - fixed fragments; values are bound parameters
        f"FROM exchanges WHERE {where} GROUP BY traffic_class, service ORDER BY estimated DESC",
        params,
    )
    # From the rows, not the per-minute aggregate: sampling keeps every error and slow exchange
    # at weight 1 and the rest at 1/rate, so the error rate and the percentiles must be weighted
    # too (stored counts would show a 1 % error rate as about 9 % at rate 0.1).
    weight = "toUInt32(round(sample_weight * 100))"  # relative weights, as integers
    # ClickHouse computes one aggregate written three times only once.
    latency = f"quantilesTDigestWeighted(0.5, 0.95, 0.99)(duration_us, {weight})"
    top_routes = _rows(
        client,
        "SELECT service, traffic_class, route, count() AS stored, "  # noqa: S608 - fixed fragments; values are bound parameters
        "round(sum(sample_weight)) AS estimated, "
        f"round(sumIf(sample_weight, {_ERROR}) / sum(sample_weight), 4) AS error_rate, "
        f"round({latency}[1] / 1000, 2) AS p50_ms, round({latency}[2] / 1000, 2) AS p95_ms, "
        f"round({latency}[3] / 1000, 2) AS p99_ms "
        f"FROM exchanges WHERE {where} AND traffic_class != 'k8s-api' "
        "GROUP BY service, traffic_class, route ORDER BY estimated DESC LIMIT %(limit)s",
        params,
    )
    k8s = _rows(
        client,
        "SELECT pod, verb, resource, sum(calls) AS stored, round(sum(weighted_calls)) AS estimated, "  # noqa: S608
        "sum(failures) AS failures, round(max(p99_us) / 1000, 2) AS p99_ms "
        f"FROM k8s_api_calls WHERE {minute} "
        "GROUP BY pod, verb, resource ORDER BY estimated DESC LIMIT %(limit)s",
        params,
    )
    return Report(since_ms, service, by_class, top_routes, k8s)
