"""Stream workers as real processes, and reading topics back, for the worker tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from trafficreel.stack._processes import free_port
from trafficreel.topics import create_topics

SHORT_NAMES = ("raw", "business", "k8s-api", "probe", "scrape", "dlq")


@dataclass
class Consumed:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def make_topics(bootstrap: str, partitions: int) -> str:
    """A fresh topic prefix with every project topic created."""
    prefix = f"s{uuid.uuid4().hex[:10]}"
    create_topics(
        {"bootstrap.servers": bootstrap}, [f"{prefix}.{n}" for n in SHORT_NAMES], partitions=partitions
    )
    return prefix


def read_all(bootstrap: str, topic: str, timeout: float = 20) -> list[Consumed]:
    """Every message of a topic, from the beginning to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tests-read-all",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        at_end: set[int] = set()
        out: list[Consumed] = []
        deadline = time.monotonic() + timeout
        while len(at_end) < len(parts) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            out.append(
                Consumed(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    {k: v or b"" for k, v in (msg.headers() or [])},
                )
            )
        return out
    finally:
        consumer.close()


class Worker:
    """One ``trafficreel stream`` process (or ``faust -A trafficreel.streams.app worker``)."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        log_dir: Path,
        *,
        partitions: int,
        extra: list[str] = (),
        env: dict[str, str] | None = None,
        faust_cli: bool = False,
    ) -> None:  # type: ignore[assignment]
        self.port = free_port()
        self.log = log_dir / f"worker-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "trafficreel",
            "--kafka-bootstrap",
            bootstrap,
            "--topic-prefix",
            prefix,
            "stream",
            "--health-port",
            str(self.port),
            "--group",
            f"{prefix}-group",
            *extra,
        ]
        environ = {**os.environ, "TRAFFICREEL_PARTITIONS": str(partitions), **(env or {})}
        if faust_cli:  # the same worker through faust's own command line, configured by environment
            command = [sys.executable, "-m", "faust", "-A", "trafficreel.streams.app", "worker", "-l", "info"]
            environ.update(
                TRAFFICREEL_KAFKA_BOOTSTRAP=bootstrap,
                TRAFFICREEL_TOPIC_PREFIX=prefix,
                TRAFFICREEL_HEALTH_PORT=str(self.port),
                TRAFFICREEL_STREAM_GROUP=f"{prefix}-group",
            )
        with self.log.open("w") as log:
            # Run where the log goes: a worker must leave nothing in its working directory.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=log_dir
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching the labels, read from /metrics."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
            if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            if self.get("/ready")[0] == 200 and self.metric("trafficreel_stream_batch_seconds_count") >= 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(
                f"worker did not stop within {timeout}s:\n{self.log.read_text()[-3000:]}"
            ) from None


@contextmanager
def running(*args: Any, **kwargs: Any) -> Iterator[Worker]:
    worker = Worker(*args, **kwargs)
    try:
        yield worker
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def wait_for(condition: Any, timeout: float, what: str, worker: Worker | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    log = worker.log.read_text()[-3000:] if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log}")
