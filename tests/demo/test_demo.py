"""`trafficreel demo` end to end (a short run), and the data it leaves for report and query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack


def _trafficreel(data_dir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICREEL_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "trafficreel", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_demo_runs_the_pipeline_and_leaves_its_data(tmp_path: Path) -> None:
    """The demo records both services, separates classes, reports, replays with the v2 change found,
    stops what it started, and report/query work on its data afterwards."""
    done = _trafficreel(tmp_path, "demo", "--seconds", "8", "--rate", "25", timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = done.stdout
    for expected in (
        "Traffic by class and service",
        "Top routes",
        "Kubernetes API load per pod",
        "configmaps",
        "watch",
        "Replay of the order lookups",
        "body:$.status",
        "/v1/orders/{id}",
        "done; the ClickHouse data stays",
    ):
        assert expected in printed, expected
    by_class = {
        line.split()[0]
        for line in printed.splitlines()
        if line.strip().startswith(("business", "k8s-api", "probe", "scrape"))
    }
    assert by_class == {"business", "k8s-api", "probe", "scrape"}

    report = _trafficreel(tmp_path, "report", "--since", "1h", "--format", "json", timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    data = json.loads(report.stdout)
    services = {(row["traffic_class"], row["service"]) for row in data["traffic_by_class"]}
    assert {("business", "orders"), ("business", "inventory"), ("k8s-api", "orders")} <= services
    query = _trafficreel(
        tmp_path,
        "query",
        "SELECT count() AS n FROM exchanges WHERE has(arrayMap(r -> r.1, redactions), 'request.header:authorization')",
        "--format",
        "json",
        timeout=120,
    )
    assert query.returncode == 0, query.stderr[-2000:]
    assert (
        json.loads(query.stdout.strip().splitlines()[-1])["n"] > 0
    )  # the demo's bearer tokens were redacted
    assert "demo-user-token" not in (tmp_path / "logs" / "demo-sink.log").read_text()
