"""The recorder against the real broker: delivery, accounting, a dead broker, the byte bound, forks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tests.conftest import Infra
from tests.producers.support import raw_request
from trafficreel.producers import PendingExchange, Recorder, RecorderConfig
from trafficreel.producers._body import BodyCapture
from trafficreel.schemas import Deserializer, Exchange
from trafficreel.stack._processes import free_port, wait_for_port
from trafficreel.topics import create_topics

ROOT = Path(__file__).resolve().parents[2]


def _exchange(i: int, body: bytes = b'{"n": 1}') -> PendingExchange:
    capture = BodyCapture(65536)
    capture.feed(body)
    ex = PendingExchange(
        direction="INBOUND",
        start_ns=time.time_ns(),
        start_mono=time.monotonic_ns(),
        method="POST",
        scheme="http",
        path=b"/v1/items/%d" % i,
        query=b"",
        http_version="1.1",
        req_headers=[(b"host", b"svc"), (b"content-type", b"application/json")],
        req_body=capture,
    )
    ex.status = 200
    return ex


def _read_all(infra: Infra, topic: str, partitions: int, expected: int, timeout: float = 60) -> list[Any]:
    consumer = Consumer(infra.kafka_conf(**{"group.id": "rec-test", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(500, 0.5) if m.error() is None]
    time.sleep(0.5)
    messages += [m for m in consumer.consume(500, 0.5) if m.error() is None]
    consumer.close()
    return messages


def _prefix(new_topic: Callable[..., str], infra: Infra) -> str:
    prefix = new_topic().replace("test.", "rec")  # a unique prefix; its .raw topic created below
    create_topics(infra.kafka_conf(), [f"{prefix}.raw"], partitions=2)
    return prefix


def test_records_reach_kafka_with_key_headers_and_timestamp(
    infra: Infra, new_topic: Callable[..., str]
) -> None:
    """Every submitted exchange arrives once, decodable, keyed, with the request start as its timestamp."""
    prefix = _prefix(new_topic, infra)
    recorder = Recorder(
        RecorderConfig(service_name="orders", kafka_bootstrap=infra.bootstrap, topic_prefix=prefix)
    )
    exchanges = [_exchange(i) for i in range(200)]
    for ex in exchanges:
        recorder.submit(ex)
    recorder.close()
    stats = recorder.stats()
    assert (stats["recorded"], stats["delivered"], stats["dropped"], stats["in_flight"]) == (200, 200, {}, 0)
    messages = _read_all(infra, f"{prefix}.raw", 2, 200)
    decode = Deserializer()
    records: list[Exchange] = [decode(m.value()) for m in messages]
    assert sorted(r["request"]["path"] for r in records) == sorted(b"/v1/items/%d" % i for i in range(200))
    assert len({r["id"] for r in records}) == 200
    first = messages[0]
    record = decode(first.value())
    assert first.key() == record["id"].encode()  # no trace context: the record id is the key
    assert first.timestamp()[1] == record["start_time"] // 1000
    headers = dict(first.headers())
    assert headers["trafficreel-service"] == b"orders"
    assert headers["trafficreel-direction"] == b"INBOUND"
    assert record["source"]["service"] == "orders"


def test_every_direction_the_schema_allows_is_sent(infra: Infra, new_topic: Callable[..., str]) -> None:
    """UNKNOWN is a direction too: its record is delivered with its header, and the thread goes on."""
    prefix = _prefix(new_topic, infra)
    recorder = Recorder(
        RecorderConfig(service_name="orders", kafka_bootstrap=infra.bootstrap, topic_prefix=prefix)
    )
    directions = ["UNKNOWN", "OUTBOUND", "INBOUND"]
    for i, direction in enumerate(directions):
        ex = _exchange(i)
        ex.direction = direction  # type: ignore[assignment]
        recorder.submit(ex)
    recorder.close()
    stats = recorder.stats()
    assert (stats["delivered"], stats["dropped"], stats["in_flight"]) == (3, {}, 0)
    messages = _read_all(infra, f"{prefix}.raw", 2, 3)
    assert sorted(dict(m.headers())["trafficreel-direction"] for m in messages) == sorted(
        d.encode() for d in directions
    )


def test_dead_broker_drops_and_counts_without_blocking() -> None:
    """With no broker at all, submit never blocks or raises, and every record ends up counted as dropped."""
    port = free_port()
    recorder = Recorder(
        RecorderConfig(
            kafka_bootstrap=f"127.0.0.1:{port}",
            flush_timeout=1.0,
            kafka_config={"message.timeout.ms": "1500", "socket.connection.setup.timeout.ms": "1000"},
        )
    )
    start = time.perf_counter()
    for i in range(500):
        recorder.submit(_exchange(i))
    submit_time = time.perf_counter() - start
    assert submit_time < 1.0  # 500 submits: no waiting on the broker
    recorder.wait_settled(20)
    recorder.close()
    stats = recorder.stats()
    assert stats["recorded"] == 500
    assert stats["delivered"] == 0
    assert sum(stats["dropped"].values()) == 500
    assert set(stats["dropped"]) <= {"delivery:_MSG_TIMED_OUT", "delivery:_TRANSPORT", "shutdown"}
    assert stats["broker_errors"] >= 1


def test_queue_bound_in_bytes_drops_the_excess() -> None:
    """Past the byte bound, records are dropped as queue_full, and queue bytes return to zero."""
    recorder = Recorder(
        RecorderConfig(
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            queue_bytes=200_000,
            flush_timeout=0.5,
            kafka_config={"message.timeout.ms": "1000"},
        )
    )
    big = b"x" * 20_000
    for i in range(100):
        recorder.submit(_exchange(i, big))
    stats = recorder.stats()
    assert stats["dropped"].get("queue_full", 0) >= 85  # 200 KB holds fewer than ten 21 KB records in flight
    assert stats["queue_bytes"] <= 200_000
    recorder.wait_settled(15)
    recorder.close()
    final = recorder.stats()
    assert final["queue_bytes"] == 0
    assert final["recorded"] == final["delivered"] + sum(final["dropped"].values())


def _gunicorn(infra: Infra, prefix: str, port: int, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The recorded Flask app under gunicorn -w 2, sending to ``prefix``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICREEL_")}
    environ |= {
        "TRAFFICREEL_KAFKA_BOOTSTRAP": infra.bootstrap,
        "TRAFFICREEL_TOPIC_PREFIX": prefix,
        "TRAFFICREEL_SERVICE_NAME": "flask-app",
        **env,
    }
    command = [sys.executable, "-m", "gunicorn", "-w", "2", *args, "-b", f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*command, "tests.producers.wsgi_app:recorded"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _ask_both_workers(port: int) -> tuple[set[bytes], int]:
    """Ask /pid until both workers answered (gunicorn picks one per request): their pids, and how
    many requests that took."""
    served: set[bytes] = set()
    asked = 0
    while len(served) < 2 and asked < 400:
        served.add(raw_request(port, b"GET /pid HTTP/1.0\r\nHost: g\r\n\r\n").rsplit(b"\r\n\r\n", 1)[1])
        asked += 1
    assert len(served) == 2, served
    return served, asked


def test_gunicorn_preforked_workers_each_record(infra: Infra, new_topic: Callable[..., str]) -> None:
    """Under gunicorn -w 2 --preload, workers forked from a master with a live producer each
    record with their own producer, and every record arrives."""
    prefix = _prefix(new_topic, infra)
    port = free_port()
    proc = _gunicorn(infra, prefix, port, {"TRAFFICREEL_TEST_PREWARM": "1"}, "--preload")
    try:
        assert wait_for_port("127.0.0.1", port, time.monotonic() + 30)
        for i in range(40):
            response = raw_request(
                port,
                b"POST /echo?i=%d HTTP/1.0\r\nHost: g\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\n\r\n{}" % i,
            )
            assert response.split(b"\r\n", 1)[0].endswith(b" 200 OK"), response
        served, asked = _ask_both_workers(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    messages = _read_all(infra, f"{prefix}.raw", 2, 41 + asked)
    decode = Deserializer()
    paths = sorted(
        decode(m.value())["request"]["query"]
        for m in messages
        if decode(m.value())["request"]["path"] == b"/echo"
    )
    assert paths == sorted(b"i=%d" % i for i in range(40)), output
    assert sum(1 for m in messages if decode(m.value())["request"]["path"] == b"/prewarm") == 1
    pids = [
        decode(m.value())["response"]["body"]["data"]
        for m in messages
        if decode(m.value())["request"]["path"] == b"/pid"
    ]
    assert len(pids) == asked and set(pids) == served  # each worker's own records, all delivered


def test_gunicorn_workers_metrics_add_up(infra: Infra, new_topic: Callable[..., str], tmp_path: Path) -> None:
    """Under gunicorn -w 2 in prometheus_client's multi-process mode, a scrape answered by either
    worker counts every worker's records: recorded and delivered add up to the requests sent."""
    prefix = _prefix(new_topic, infra)
    port = free_port()
    env = {"TRAFFICREEL_EXCLUDE_PATHS": "/metrics", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = _gunicorn(infra, prefix, port, env)

    def total(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    try:
        assert wait_for_port("127.0.0.1", port, time.monotonic() + 30)
        for i in range(60):
            response = raw_request(
                port, b"POST /echo?i=%d HTTP/1.0\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}" % i
            )
            assert response.split(b"\r\n", 1)[0].endswith(b" 200 OK"), response
        _, asked = _ask_both_workers(port)  # each answered (and recorded) one
        sent = 60 + asked
        deadline = time.monotonic() + 20
        scraped = ""
        while time.monotonic() < deadline:
            scraped = raw_request(port, b"GET /metrics HTTP/1.0\r\nHost: g\r\n\r\n").decode()
            if total(scraped, "trafficreel_recorder_delivered_total") >= sent:
                break
            time.sleep(0.5)
        assert total(scraped, "trafficreel_recorder_records_total") == sent, scraped
        assert total(scraped, "trafficreel_recorder_delivered_total") == sent, scraped
        assert total(scraped, "trafficreel_recorder_in_flight") == 0, scraped
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_fork_with_a_live_producer(infra: Infra, new_topic: Callable[..., str]) -> None:
    """Forking while the producer runs: it is flushed and stopped first; parent and child both deliver."""
    prefix = _prefix(new_topic, infra)
    recorder = Recorder(
        RecorderConfig(service_name="forker", kafka_bootstrap=infra.bootstrap, topic_prefix=prefix)
    )
    recorder.submit(_exchange(1))
    deadline = time.monotonic() + 30
    while recorder.stats()["delivered"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = os.fork()
    if pid == 0:  # the child: record, flush, leave without running the parent's test machinery
        code = 1
        try:
            recorder.submit(_exchange(2))
            recorder.close()
            code = 0 if recorder.stats()["delivered"] == 1 else 2
        finally:
            os._exit(code)
    recorder.submit(_exchange(3))
    recorder.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert recorder.stats()["delivered"] == 2
    paths = sorted(
        Deserializer()(m.value())["request"]["path"] for m in _read_all(infra, f"{prefix}.raw", 2, 3)
    )
    assert paths == [b"/v1/items/1", b"/v1/items/2", b"/v1/items/3"]


def test_a_fork_with_the_broker_down_neither_stalls_nor_leaks_the_bound() -> None:
    """With records the broker never takes, a fork waits a fraction of a second (not seconds) for
    the recorder; what it held is dropped as ``fork`` with its bytes given back to the bound, and
    the parent goes on with what was still queued."""
    recorder = Recorder(RecorderConfig(kafka_bootstrap=f"127.0.0.1:{free_port()}", flush_timeout=1))
    recorder.submit(_exchange(1))
    deadline = time.monotonic() + 10
    while recorder.stats()["queue_bytes"] == 0 or recorder.stats()["broker_errors"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    took = time.monotonic() - started
    os.waitpid(pid, 0)
    stats = recorder.stats()
    assert took < 1.0, took  # before: the full flush of 1.5 s and a join of up to 2 s
    assert stats["dropped"] == {"fork": 1} and stats["queue_bytes"] == 0 and stats["in_flight"] == 0
    recorder.submit(_exchange(2))  # the parent records on, with a new producer
    assert recorder.stats()["recorded"] == 2
    recorder.close(timeout=5)
    stats = recorder.stats()
    assert stats["recorded"] == stats["delivered"] + sum(stats["dropped"].values())


class _UnansweredProducer:
    """librdkafka with a broker that never answers, made exact: messages are never reported back,
    and ``len()`` also counts queued client events (a dead broker's connection errors), as
    librdkafka's does. A poll can raise a fatal error once, as a fenced producer's does."""

    def __init__(self, events: int = 5) -> None:
        self.messages = 0
        self.events = events
        self.fail_next_poll = False
        self.reports: list[tuple[Any, bytes]] = []  # (callback, value): a report it could still make

    def produce(self, topic: str, *, value: bytes, on_delivery: Any, **_: Any) -> None:
        self.messages += 1
        self.reports.append((on_delivery, value))

    def poll(self, timeout: float = 0) -> int:
        if self.fail_next_poll:
            self.fail_next_poll = False
            raise KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
        return 0

    def flush(self, timeout: float = 0) -> int:
        time.sleep(min(timeout, 0.01))
        return len(self)

    def purge(self, *_: Any) -> None:
        """A purge that reports nothing back (it raised, or the reports never came)."""

    def __len__(self) -> int:
        return self.messages + self.events


def test_what_the_broker_never_took_is_counted_once_per_record_not_per_client_event() -> None:
    """Records left undelivered at shutdown are dropped once each, however many other events the
    client holds, and their bytes leave the bound; ``recorded == delivered + dropped`` holds."""
    producer = _UnansweredProducer(events=5)
    recorder = Recorder(RecorderConfig(flush_timeout=0.2), producer=producer)  # type: ignore[arg-type]
    for i in range(3):
        recorder.submit(_exchange(i))
    assert recorder.wait_settled(0.5) is False  # all three wait on the broker
    recorder.close(timeout=5)
    stats = recorder.stats()
    assert producer.messages == 3
    assert stats["dropped"] == {"shutdown": 3}  # before: 8, the five client events counted as records
    assert stats["queue_bytes"] == 0 and stats["in_flight"] == 0


def test_a_producer_replaced_after_a_fatal_error_gives_back_what_it_held() -> None:
    """A producer that hits a fatal error is replaced; what it still held is dropped as
    ``producer_fatal``, once per record, and leaves the byte bound."""
    producer = _UnansweredProducer(events=2)
    recorder = Recorder(RecorderConfig(flush_timeout=0.2), producer=producer)  # type: ignore[arg-type]
    recorder.submit(_exchange(1))
    deadline = time.monotonic() + 5
    while producer.messages == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    producer.fail_next_poll = True
    while recorder.stats()["in_flight"] > 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stats = recorder.stats()
    assert stats["dropped"] == {"producer_fatal": 1}  # before: 3, counting the client's events
    assert stats["queue_bytes"] == 0  # before: the record's encoded bytes stayed counted
    # The abandoned producer reports after all: the record is not counted a second time.
    report, value = producer.reports[0]
    report(None, value)
    stats = recorder.stats()
    assert stats["delivered"] == 0 and stats["queue_bytes"] == 0 and stats["in_flight"] == 0
    recorder.close(timeout=5)
