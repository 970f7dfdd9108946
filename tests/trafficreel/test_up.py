"""`trafficreel up`: starts the stack, publishes its settings, stops on SIGTERM or with its parent, keeps data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRAFFICREEL = [sys.executable, "-m", "trafficreel"]


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: set[int], timeout: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICREEL_")}
    return {**env, "TRAFFICREEL_DATA_DIR": str(data_dir), "TRAFFICREEL_PARTITIONS": "2"}


def _start_up(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [*TRAFFICREEL, "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(data_dir)
    )
    settings: dict[str, str] = {}
    assert proc.stdout is not None
    while len(settings) < 3:
        line = proc.stdout.readline()
        if not line:
            code, stderr = _stop(proc)
            pytest.fail(f"up exited early ({code}): {stderr}")
        key, _, value = line.strip().partition("=")
        settings[key] = value
    return proc, settings


def _stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str]:
    """Signal the process, wait for it, close its pipes; return its exit code and stderr."""
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAFFICREEL, *args], capture_output=True, text=True, env=_env(data_dir), timeout=120
    )


def test_up_serves_stops_cleanly_and_keeps_clickhouse_data(tmp_path: Path) -> None:
    """up prints shell settings, other commands find the stack alone, SIGTERM stops all, data survives."""
    proc, settings = _start_up(tmp_path)
    try:
        assert set(settings) == {
            "TRAFFICREEL_KAFKA_BOOTSTRAP",
            "TRAFFICREEL_TOPIC_PREFIX",
            "TRAFFICREEL_CLICKHOUSE_URL",
        }
        assert (tmp_path / "stack.env").read_text().splitlines() == [f"{k}={v}" for k, v in settings.items()]
        children = _children(proc.pid)
        assert len(children) == 2  # broker and ClickHouse

        described = _cli(tmp_path, "topics", "describe", "--json")  # no endpoint given: found via stack.env
        assert described.returncode == 0, described.stderr
        topics = {t["topic"]: len(t["partitions"]) for t in json.loads(described.stdout)}
        assert topics == {
            f"trafficreel.{n}": 2 for n in ("raw", "business", "k8s-api", "probe", "scrape", "dlq")
        }

        import clickhouse_connect

        url = settings["TRAFFICREEL_CLICKHOUSE_URL"].removeprefix("http://")
        client = clickhouse_connect.get_client(host=url.split(":")[0], port=int(url.split(":")[1]))
        client.command("CREATE TABLE kept (a UInt8) ENGINE = MergeTree ORDER BY a")
        client.insert("kept", [[7]], column_names=["a"])
        client.close()
    finally:
        code, stderr = _stop(proc)
    assert code == 0, stderr
    assert _wait_gone(children) == set()
    assert not (tmp_path / "stack.env").exists()
    assert "memory only" in stderr

    proc, settings = _start_up(tmp_path)
    try:
        url = settings["TRAFFICREEL_CLICKHOUSE_URL"].removeprefix("http://")
        import clickhouse_connect

        client = clickhouse_connect.get_client(host=url.split(":")[0], port=int(url.split(":")[1]))
        assert client.query("SELECT a FROM kept").result_rows == [(7,)]
        client.close()
    finally:
        code, stderr = _stop(proc, signal.SIGINT)
    assert code == 0, stderr


def test_killed_up_leaves_no_orphans(tmp_path: Path) -> None:
    """When up is SIGKILLed its broker and ClickHouse go with it."""
    proc, _ = _start_up(tmp_path)
    children = _children(proc.pid)
    assert len(children) == 2
    _stop(proc, signal.SIGKILL)
    assert _wait_gone(children) == set()


def test_second_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """A second up on a data directory in use says which process holds it and exits non-zero."""
    proc, _ = _start_up(tmp_path)
    try:
        second = _cli(tmp_path, "up")
        assert second.returncode == 1
        assert f"pid {proc.pid}" in second.stderr
    finally:
        _stop(proc)


def test_embedded_clickhouse_refuses_a_data_dir_in_use(tmp_path: Path) -> None:
    """A second ClickHouse on a data directory already open fails with a message that explains why."""
    from trafficreel.errors import StackError
    from trafficreel.stack import EmbeddedClickHouse

    first = EmbeddedClickHouse(tmp_path / "ch", tmp_path / "logs1")
    first.start()
    try:
        second = EmbeddedClickHouse(tmp_path / "ch", tmp_path / "logs2")
        with pytest.raises(StackError, match="one process per data directory"):
            second.start(timeout=30)
    finally:
        first.stop()
