"""`trafficreel report` and the views it reads, on rows loaded into the real ClickHouse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.streams.support import exchange
from trafficreel.cli import app
from trafficreel.sinks import COLUMNS, migrate
from trafficreel.sinks._rows import Columns
from trafficreel.sinks.report import build_report

pytestmark = pytest.mark.stack
START_US = 1_780_000_000_000_000


def _row(
    i: int, cls: str, route: str, status: int, duration_ms: int, weight: float = 2.0, **changes: Any
) -> Any:
    record = exchange(i, status=status, path=changes.pop("path", b"/v1/orders/%d" % i), **changes)
    record["start_time"] = START_US + i * 1000
    record["duration_us"] = duration_ms * 1000
    record["outcome"]["kind"] = "COMPLETED"
    record.update(traffic_class=cls, class_rule="r", route=route, sample_weight=weight)
    return record


def _load(client: Any) -> None:
    migrate(client)
    columns = Columns()
    rows = [_row(i, "business", "/v1/orders/{id}", 500 if i < 10 else 200, i + 1) for i in range(100)]
    rows += [_row(100 + i, "probe", "/healthz", 200, 1, path=b"/healthz") for i in range(20)]
    for i in range(12):
        rec = _row(200 + i, "k8s-api", "/api/v1/namespaces/{name}/pods", 200, 5, direction="OUTBOUND",
                   path=b"/api/v1/namespaces/shop/pods")  # fmt: skip
        rec["request"]["query"] = b"watch=true" if i % 3 == 0 else b""
        rec["source"]["pod"] = "orders-1" if i % 2 else "orders-2"
        rows.append(rec)
    for offset, record in enumerate(rows):
        columns.add(record, "t", 0, offset)
    client.insert("exchanges", columns.data, column_names=COLUMNS, column_oriented=True)


def test_report_counts_errors_percentiles_and_api_load(clickhouse: Any) -> None:
    """By class with re-weighted estimates, top routes with error rate and p50/p99, API calls per pod and verb."""
    _load(clickhouse)
    report = build_report(clickhouse, START_US // 1000, None, 10)
    by_class = {row["traffic_class"]: row for row in report.by_class}
    assert (by_class["business"]["stored"], by_class["business"]["estimated"]) == (100, 200)
    assert by_class["probe"]["stored"] == 20 and by_class["k8s-api"]["stored"] == 12
    orders = next(r for r in report.top_routes if r["route"] == "/v1/orders/{id}")
    assert (orders["stored"], orders["estimated"], orders["error_rate"]) == (100, 200, 0.1)
    assert 40 <= orders["p50_ms"] <= 61 and 95 <= orders["p99_ms"] <= 100
    assert all(r["traffic_class"] != "k8s-api" for r in report.top_routes)
    calls = {(r["pod"], r["verb"], r["resource"]): r["stored"] for r in report.k8s_per_pod}
    assert calls == {
        ("orders-1", "list", "pods"): 4,
        ("orders-2", "list", "pods"): 4,
        ("orders-1", "watch", "pods"): 2,
        ("orders-2", "watch", "pods"): 2,
    }


def test_api_calls_carry_the_api_servers_verbs(clickhouse: Any) -> None:
    """The verb is the API server's: a named object or a collection, a watch, a write."""
    migrate(clickhouse)
    calls = [
        ("GET", b"/api/v1/namespaces/shop/pods/web-1", b"", "get", "pods"),
        ("GET", b"/api/v1/namespaces/shop/pods", b"", "list", "pods"),
        ("GET", b"/api/v1/namespaces/shop/pods", b"watch=true", "watch", "pods"),
        ("GET", b"/api/v1/namespaces/shop", b"", "get", "namespaces"),
        ("GET", b"/api/v1/nodes", b"", "list", "nodes"),
        ("POST", b"/apis/apps/v1/namespaces/shop/deployments", b"", "create", "deployments"),
        ("PUT", b"/apis/apps/v1/namespaces/shop/deployments/web", b"", "update", "deployments"),
        ("PATCH", b"/api/v1/namespaces/shop/configmaps/cfg", b"", "patch", "configmaps"),
        ("DELETE", b"/api/v1/namespaces/shop/pods/web-1", b"", "delete", "pods"),
        ("DELETE", b"/api/v1/namespaces/shop/pods", b"", "deletecollection", "pods"),
    ]
    columns = Columns()
    for i, (method, path, query, _, _) in enumerate(calls):
        record = _row(i, "k8s-api", "r", 200, 5, direction="OUTBOUND", path=path, method=method)
        record["request"]["query"] = query
        columns.add(record, "t", 0, i)
    clickhouse.insert("exchanges", columns.data, column_names=COLUMNS, column_oriented=True)
    result = clickhouse.query("SELECT verb, resource, sum(calls) FROM k8s_api_calls GROUP BY verb, resource")
    found = {(verb, resource): n for verb, resource, n in result.result_rows}
    expected: dict[tuple[str, str], int] = {}
    for _, _, _, verb, resource in calls:
        expected[(verb, resource)] = expected.get((verb, resource), 0) + 1
    assert found == expected


def test_error_rate_and_percentiles_are_weighted_like_the_counts(clickhouse: Any) -> None:
    """Sampling keeps every error at weight 1 and one in ten of the rest at weight 10: the report
    gives the real error rate and latency, not the stored rows'."""
    migrate(clickhouse)
    columns = Columns()
    errors = [_row(i, "business", "/pay", 503, 900, weight=1.0) for i in range(10)]
    kept = [_row(10 + i, "business", "/pay", 200, 10, weight=10.0) for i in range(90)]
    for offset, record in enumerate(errors + kept):
        columns.add(record, "t", 0, offset)
    clickhouse.insert("exchanges", columns.data, column_names=COLUMNS, column_oriented=True)
    (pay,) = build_report(clickhouse, START_US // 1000, None, 10).top_routes
    assert (pay["stored"], pay["estimated"]) == (100, 910)
    assert pay["error_rate"] == round(10 / 910, 4)  # stored rows would say 0.1
    assert pay["p50_ms"] == 10 and pay["p95_ms"] == 10  # the slow errors are about 1 % of real traffic


def test_report_command_prints_tables_and_json(infra: Any, clickhouse: Any) -> None:
    """The command prints the three sections, and the same data as JSON with --format json."""
    _load(clickhouse)
    url = f"{infra.clickhouse_url}/{clickhouse.database}"
    if infra.clickhouse_password:
        url = url.replace("://", f"://{infra.clickhouse_user}:{infra.clickhouse_password}@")
    since = str(START_US // 1000)
    table = CliRunner().invoke(app, ["--clickhouse-url", url, "report", "--since", since])
    assert table.exit_code == 0, table.output
    for title in ("Traffic by class and service", "Top routes", "Kubernetes API load per pod"):
        assert title in table.output
    as_json = CliRunner().invoke(app, ["--clickhouse-url", url, "report", "--since", since, "-f", "json"])
    data = json.loads(as_json.output)
    assert {row["traffic_class"] for row in data["traffic_by_class"]} == {"business", "probe", "k8s-api"}
