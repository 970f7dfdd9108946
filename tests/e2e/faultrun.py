"""The end-to-end fault run: steady traffic through a recorded app, two stream workers and a sink,
while the broker is frozen, a worker and the sink are SIGKILLed, and ClickHouse is frozen.

``python -m tests.e2e.faultrun --seconds 120 --freeze 20`` runs the long form and prints the
outcome as JSON; the test runs a short form. Afterwards the caller checks: every request answered
correctly, every record the recorder delivered is in ClickHouse exactly once, every drop counted
with its reason, and the planted credentials appear in no topic, no ClickHouse column, no log.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx

from tests.streams.workers import read_all
from trafficreel.schemas import Deserializer
from trafficreel.stack import EmbeddedStack
from trafficreel.stack._processes import ChildProcess, free_port, wait_for_port
from trafficreel.topics import project_topics

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "authorization": "Bearer sk-live-PLANTED-bearer-0001",
    "cookie": "session=PLANTED-cookie-0002",
    "query": "PLANTED-query-token-0003",
    "json": "PLANTED-json-password-0004",
    "text": "PLANTED-text-bearer-0005",
}
PLANTED = [b"PLANTED-bearer-0001", b"PLANTED-cookie-0002", b"PLANTED-query-token-0003",
           b"PLANTED-json-password-0004", b"PLANTED-text-bearer-0005"]  # fmt: skip


@dataclass
class FaultRunResult:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    recorder: dict[str, Any] = field(default_factory=dict)
    raw_ids: int = 0
    raw_messages: int = 0
    rows: int = 0
    distinct_rows: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dlq: list[tuple[str, str, str]] = field(default_factory=list)  # (from topic, reason, stage)
    garbage: list[tuple[str, str, str]] = field(default_factory=list)  # what was written, expected
    leaks: list[str] = field(default_factory=list)
    redacted_rows: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Traffic(threading.Thread):
    """Steady POSTs with planted credentials; checks each answer and keeps latencies."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.latencies: list[tuple[float, float]] = []  # (start time, ms)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            start = time.monotonic()
            while not self.stop.is_set():
                n = self.sent
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                body = {"n": n, "password": SECRETS["json"], "note": f"Bearer {SECRETS['text']}"}
                began = time.monotonic()
                try:
                    response = client.post(
                        f"{self.url}/items/{n}?token={SECRETS['query']}&page=1",
                        json=body,
                        headers={"authorization": SECRETS["authorization"], "cookie": SECRETS["cookie"]},
                    )
                    if response.status_code != 200 or response.json() != {"n": n, "ok": True}:
                        self.failures.append(f"{n}: {response.status_code} {response.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{n}: {exc!r}")
                self.latencies.append((began, (time.monotonic() - began) * 1000))
                self.sent += 1


def _q(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else 0.0
    )


def _write_garbage(bootstrap: str, result: FaultRunResult) -> None:
    """Values no recorder would write, straight into the raw topic and every class topic."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    raw = [
        (b"", "empty"),
        (b"garbage", "bad-magic"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown-fingerprint"),
    ]
    for value, reason in raw:
        producer.produce("fr.raw", value, b"garbage")
        result.garbage.append(("fr.raw", reason, "decode"))
    for topic in ("fr.business", "fr.k8s-api", "fr.probe", "fr.scrape"):
        producer.produce(topic, b"garbage", b"garbage")
        result.garbage.append((topic, "bad-magic", "sink"))
    producer.flush(30)
    result.garbage.sort()


def run(seconds: float, freeze: float, data_dir: Path, rate: float = 40.0) -> FaultRunResult:
    result = FaultRunResult(seconds=seconds)
    logs = data_dir / "logs"
    stack = EmbeddedStack(data_dir=data_dir, partitions=3, topic_prefix="fr")
    stack.start()
    env = {**stack.env(), "TRAFFICREEL_HEALTH_PORT": "0", "TRAFFICREEL_LOG_FORMAT": "json"}
    children: list[ChildProcess] = []

    def start(name: str, argv: list[str], **extra: str) -> ChildProcess:
        child = ChildProcess(name, argv, logs / f"{name}.log", {**env, **extra})
        child.start()
        children.append(child)
        return child

    python = [sys.executable, "-m"]
    try:
        workers = [start(f"stream-{i}", [*python, "trafficreel", "stream"]) for i in range(2)]
        sink = start("sink", [*python, "trafficreel", "sink"])
        port = free_port()
        app = start("app", [*python, "uvicorn", "tests.e2e.app:app", "--port", str(port), "--no-access-log"],
                    PYTHONPATH=str(ROOT))  # fmt: skip
        app.wait_ready(lambda: wait_for_port("127.0.0.1", port, time.monotonic() + 0.2), 60)
        url = f"http://127.0.0.1:{port}"
        traffic = _Traffic(url, rate)
        began = time.monotonic()
        traffic.start()

        def at(fraction: float) -> None:
            time.sleep(max(0.0, began + fraction * seconds - time.monotonic()))

        def log(event: str) -> None:
            result.faults.append(f"{time.monotonic() - began:6.1f}s {event}")

        at(0.12)
        workers[0].signal(signal.SIGKILL)
        log("SIGKILL stream worker 0 (its partitions rebalance to worker 1)")
        at(0.22)
        stack.broker.signal(signal.SIGSTOP)
        log(f"SIGSTOP broker for {freeze:g}s")
        time.sleep(freeze)
        stack.broker.signal(signal.SIGCONT)
        log("SIGCONT broker")
        workers[0].stop(timeout=1)
        workers[0] = start("stream-0b", [*python, "trafficreel", "stream"])
        log("stream worker 0 restarted")
        at(0.4)
        _write_garbage(stack.broker.bootstrap, result)
        log("garbage written into every topic")
        at(0.5)
        sink.signal(signal.SIGKILL)
        log("SIGKILL sink mid-batch")
        sink.stop(timeout=1)
        time.sleep(1.0)
        sink = start("sink-b", [*python, "trafficreel", "sink"])
        log("sink restarted")
        at(0.62)
        stack.clickhouse.signal(signal.SIGSTOP)
        log(f"SIGSTOP ClickHouse for {freeze:g}s")
        time.sleep(freeze)
        stack.clickhouse.signal(signal.SIGCONT)
        log("SIGCONT ClickHouse")
        at(1.0)
        traffic.stop.set()
        traffic.join(30)
        result.requests, result.failures = traffic.sent, traffic.failures

        with httpx.Client(timeout=10) as client:
            deadline = time.monotonic() + 120
            while (stats := client.get(f"{url}/_stats").json())["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.2)
        result.recorder = stats
        app.stop()

        all_ms = [ms for _, ms in traffic.latencies]
        frozen = [ms for t, ms in traffic.latencies if 0.22 * seconds <= t - began <= 0.22 * seconds + freeze]
        result.latency_ms = {
            "p50": _q(all_ms, 0.5), "p99": _q(all_ms, 0.99), "max": max(all_ms, default=0.0),
            "p99_while_broker_frozen": _q(frozen, 0.99), "max_while_broker_frozen": max(frozen, default=0.0),
        }  # fmt: skip

        decode = Deserializer()
        raw = read_all(stack.broker.bootstrap, "fr.raw")
        raw_ids = {decode(m.value or b"")["id"] for m in raw if m.key != b"garbage"}
        result.raw_messages, result.raw_ids = len(raw) - 3, len(raw_ids)
        client = clickhouse_connect.get_client(dsn=stack.clickhouse.url)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            count = client.query("SELECT count(), uniqExact(id) FROM exchanges").result_rows[0]
            if count[1] >= len(raw_ids):
                break
            time.sleep(1)
        time.sleep(3)  # anything still arriving would be a duplicate: give it the chance to show
        result.rows, result.distinct_rows = client.query(
            "SELECT count(), uniqExact(id) FROM exchanges"
        ).result_rows[0]
        stored = {str(r[0]) for r in client.query("SELECT id FROM exchanges").result_rows}
        result.missing = sorted(raw_ids - stored)[:20]
        result.unexpected = sorted(stored - raw_ids)[:20]
        result.dlq = sorted(
            (m.headers["trafficreel-dlq-topic"].decode(), m.headers["trafficreel-dlq-reason"].decode(),
             m.headers["trafficreel-dlq-stage"].decode())
            for m in read_all(stack.broker.bootstrap, "fr.dlq")
        )  # fmt: skip
        where = ("request.header:authorization", "request.header:cookie", "request.query:token",
                 "request.body:json:password", "request.body")  # fmt: skip
        for location in where:
            result.redacted_rows[location] = client.query(
                "SELECT countIf(has(arrayMap(r -> r.1, redactions), {l:String})) FROM exchanges",
                parameters={"l": location},
            ).result_rows[0][0]

        topic_bytes = b"".join(
            (m.value or b"") + b"".join(m.headers.values())
            for topic in project_topics("fr")
            for m in read_all(stack.broker.bootstrap, topic)
        )
        table = client.raw_query("SELECT * FROM exchanges FORMAT TabSeparated")
        for secret in PLANTED:
            for where, haystack in (("topics", topic_bytes), ("clickhouse", table)):
                if secret in haystack:
                    result.leaks.append(f"{secret.decode()} in {where}")
        for child in list(children):
            child.stop()
        for path in logs.glob("*.log"):
            text = path.read_bytes()
            result.leaks += [f"{s.decode()} in {path.name}" for s in PLANTED if s in text]
    finally:
        for child in children:
            child.stop()
        stack.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Run the end-to-end fault run and print its outcome as JSON."
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of traffic")
    parser.add_argument(
        "--freeze", type=float, default=20.0, help="seconds the broker and ClickHouse stay frozen"
    )
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.seconds, args.freeze, Path(tmp), args.rate)
    print(json.dumps(asdict(result), indent=1))


if __name__ == "__main__":
    main()
