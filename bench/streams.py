"""Stream worker throughput: faust worker vs a plain confluent-kafka loop doing the same work.

Both read the same preloaded raw topic (6 partitions, recorder-shaped records of about 1 KiB: 80 %
business, 10 % Kubernetes API, 5 % probes, 5 % scrapes, a few planted secrets) on the embedded
broker and do the whole path — decode, classify, normalise, redact, sample, encode, produce, wait
for delivery, commit — as separate consumer groups writing to separate topics:

- ``faust_rps``: one ``trafficreel stream`` worker process, records per second from the first
  scrape of its /metrics that counts records read to the end of its last batch (its
  ``trafficreel_stream_last_batch_timestamp_seconds``);
- ``plain_rps``: a confluent-kafka consume → ``BatchSender`` → commit loop in this process, the
  ceiling for the same work;
- ``ratio``: faust_rps / plain_rps.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from trafficreel.schemas import Exchange, Serializer, sample_exchange
from trafficreel.stack import EmbeddedBroker
from trafficreel.stack._processes import free_port
from trafficreel.streams import Processor, StreamRules
from trafficreel.streams._sender import BatchSender, Message
from trafficreel.topics import create_topics

from ._harness import Figure

__all__ = ["run"]

PARTITIONS = 6
# Prometheus scrapes every 15-60 s; each scrape renders every metric under the worker's GIL, so
# this scrapes rarely and reads the end of the run from the worker's last-batch timestamp.
_POLL_SECONDS = 0.25
NAMES = ("raw", "business", "k8s-api", "probe", "scrape", "dlq")


def _records(count: int) -> list[bytes]:
    serializer = Serializer()
    distinct = []
    for i in range(min(count, 5000)):
        record: Exchange = copy.deepcopy(sample_exchange(i))
        # As the recorder writes them: credentials already redacted at source (a cookie on one
        # response in ten, as APIs behind a session layer do).
        record["response"]["headers"] = [
            {"name": h["name"], "value": h["value"].split(b"=")[0] + b"=REDACTED"}
            if h["name"] == b"set-cookie"
            else h
            for h in record["response"]["headers"]
            if h["name"] != b"set-cookie" or i % 10 == 0
        ]
        record["response"]["status"] = 200 if i % 50 else 503
        kind = i % 20
        if kind in (0, 1):
            record["direction"] = "OUTBOUND"
            record["request"]["host"] = "kubernetes.default.svc"
            record["request"]["path"] = b"/api/v1/namespaces/shop/pods"
        elif kind == 2:
            record["request"]["headers"][1]["value"] = b"kube-probe/1.31"
        elif kind == 3:
            record["request"]["headers"][1]["value"] = b"Prometheus/2.53.0"
        elif kind == 4 and i % 100 == 4:
            record["request"]["query"] = b"access_token=planted-secret"
        distinct.append(serializer(record))
    return [distinct[i % len(distinct)] for i in range(count)]


def _preload(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000})
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, str(i).encode())
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)


def _plain(bootstrap: str, prefix: str, count: int, batch: int) -> float:
    topics = {cls: f"{prefix}.plain-{cls}" for cls in ("business", "k8s-api", "probe", "scrape")}
    create_topics(
        {"bootstrap.servers": bootstrap}, [*topics.values(), f"{prefix}.plain-dlq"], partitions=PARTITIONS
    )
    sender = BatchSender(
        Processor(StreamRules(), topics), {"bootstrap.servers": bootstrap}, f"{prefix}.plain-dlq"
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}-plain",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([f"{prefix}.raw"])
    done = 0
    started: float | None = None
    try:
        while done < count:
            messages = consumer.consume(batch, 0.5)
            if not messages:
                continue
            if started is None:
                started = time.perf_counter()
            batch_in = [
                Message(
                    m.value(), m.key(), m.headers(), m.topic(), m.partition(), m.offset(), m.timestamp()[1]
                )
                for m in messages
                if not m.error()
            ]
            sender.send(batch_in)
            sender.delivered()
            consumer.commit(asynchronous=False)
            done += len(batch_in)
    finally:
        consumer.close()
    assert started is not None
    return done / (time.perf_counter() - started)


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _faust(bootstrap: str, prefix: str, count: int, log: Path) -> float:
    port = free_port()
    command = [
        sys.executable, "-m", "trafficreel", "--kafka-bootstrap", bootstrap, "--topic-prefix", prefix,
        "--log-level", "WARNING", "stream", "--health-port", str(port),
        "--group", f"{prefix}-faust",
    ]  # fmt: skip
    env = {**os.environ, "TRAFFICREEL_PARTITIONS": str(PARTITIONS)}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        first: tuple[float, float] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the stream worker exited: {log.read_text()[-2000:]}")
            seen = _metric(port, "trafficreel_stream_records_in_total")
            now = time.time()
            if seen and first is None:
                first = (now, seen)
            if seen >= count and first is not None:
                # The end is when the worker finished its last batch, not when this loop looked.
                last = _metric(port, "trafficreel_stream_last_batch_timestamp_seconds")
                return (seen - first[1]) / (last - first[0])
            time.sleep(_POLL_SECONDS)
        raise RuntimeError("the stream worker did not finish within 600 s")
    finally:
        process.terminate()
        process.wait(60)


def run(quick: bool) -> list[Figure]:
    count = 20_000 if quick else 100_000
    batch = 1000
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(Path(tmp))
        broker.start()
        try:
            prefix = "bench"
            create_topics(
                {"bootstrap.servers": broker.bootstrap},
                [f"{prefix}.{n}" for n in NAMES],
                partitions=PARTITIONS,
            )
            _preload(broker.bootstrap, f"{prefix}.raw", _records(count))
            plain = _plain(broker.bootstrap, prefix, count, batch)
            faust = _faust(broker.bootstrap, prefix, count, Path(tmp) / "worker.log")
        finally:
            broker.stop()
    detail: dict[str, Any] = {
        "records": count,
        "partitions": PARTITIONS,
        "batch": batch,
        "record_bytes": "~1.1 KiB",
    }
    return [
        Figure("streams.faust_rps", faust, "rec/s", target=20_000, detail=detail),
        Figure("streams.plain_rps", plain, "rec/s", detail=detail),
        Figure("streams.ratio", faust / plain, "x", target=0.5, detail=detail),
    ]
