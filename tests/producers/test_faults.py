"""Broker faults under load: the app answers unchanged and on time, every record is accounted for."""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.producers.support import raw_request, serving, starlette_app
from tests.producers.test_recorder import _read_all
from trafficreel.producers import Recorder, RecorderConfig, TrafficRecorder
from trafficreel.stack import EmbeddedBroker
from trafficreel.topics import create_topics

REQUEST = (
    b"POST /echo/x HTTP/1.1\r\nHost: f\r\nContent-Type: application/json\r\nContent-Length: 12\r\n"
    b'Connection: close\r\n\r\n{"ok": true}'
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path)
    broker.start()
    create_topics({"bootstrap.servers": broker.bootstrap}, ["fault.raw"], partitions=2)
    try:
        yield broker
    finally:
        broker.stop()


def _drive(port: int, seconds: float, latencies: list[float], bodies: set[bytes]) -> int:
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        response = raw_request(port, REQUEST)
        latencies.append(time.perf_counter() - start)
        bodies.add(response.partition(b"\r\n\r\n")[2])
        assert response.startswith(b"HTTP/1.1 200 OK"), response
        sent += 1
    return sent


def test_frozen_broker_changes_nothing_for_the_app(broker: EmbeddedBroker) -> None:
    """With the broker frozen for 20 s mid-load the app's answers and latency hold, and no record is lost."""
    recorder = Recorder(
        RecorderConfig(
            service_name="fault", kafka_bootstrap=broker.bootstrap, topic_prefix="fault", flush_timeout=30
        )
    )
    before: list[float] = []
    frozen: list[float] = []
    after: list[float] = []
    bodies: set[bytes] = set()
    peak = 0
    with serving(TrafficRecorder(starlette_app(), recorder=recorder)) as port:
        sent = _drive(port, 4, before, bodies)
        broker.signal(signal.SIGSTOP)
        try:
            for _ in range(10):
                sent += _drive(port, 2, frozen, bodies)
                peak = max(peak, recorder.stats()["queue_bytes"])
        finally:
            broker.signal(signal.SIGCONT)
        sent += _drive(port, 4, after, bodies)
        recorder.wait_settled(120)
    recorder.close()
    stats = recorder.stats()
    assert bodies == {b'{"ok": true}'}
    assert stats["recorded"] == sent
    assert stats["delivered"] + sum(stats["dropped"].values()) == sent
    assert stats["dropped"] == {}  # the producer waits out a 20 s freeze (message.timeout.ms is 120 s)
    assert peak <= recorder.config.queue_bytes
    p50_before, p50_frozen = statistics.median(before), statistics.median(frozen)
    p99_frozen = statistics.quantiles(frozen, n=100)[98]
    assert p50_frozen < 2 * p50_before + 0.002, (p50_before, p50_frozen)
    assert p99_frozen < 0.1, p99_frozen
    assert len(_read_topic(broker, stats["delivered"])) == stats["delivered"]


def _read_topic(broker: EmbeddedBroker, expected: int) -> list[object]:
    from tests.conftest import Infra

    return _read_all(Infra(broker.bootstrap, "", "embedded"), "fault.raw", 2, expected)


def test_killed_and_restarted_broker_recording_resumes(broker: EmbeddedBroker) -> None:
    """A broker killed mid-load and started again (empty: memory storage) gets records again by itself."""
    recorder = Recorder(
        RecorderConfig(
            service_name="fault", kafka_bootstrap=broker.bootstrap, topic_prefix="fault", flush_timeout=30
        )
    )
    latencies: list[float] = []
    bodies: set[bytes] = set()
    with serving(TrafficRecorder(starlette_app(), recorder=recorder)) as port:
        sent = _drive(port, 3, latencies, bodies)
        broker.signal(signal.SIGKILL)
        broker.stop()
        sent += _drive(port, 3, latencies, bodies)
        broker.start()  # same port, empty: the topic must be created again
        create_topics({"bootstrap.servers": broker.bootstrap}, ["fault.raw"], partitions=2)
        sent_before_check = sent
        sent += _drive(port, 5, latencies, bodies)
        recorder.wait_settled(120)
    recorder.close()
    stats = recorder.stats()
    assert bodies == {b'{"ok": true}'}
    # The app's latency stays what it was, through the kill and the restart.
    assert statistics.quantiles(latencies, n=100)[98] < 0.1, max(latencies)
    assert stats["recorded"] == sent
    assert stats["delivered"] + sum(stats["dropped"].values()) == sent
    # What the restarted (empty) broker holds: at least everything sent after it came back.
    delivered_after = len(_read_topic(broker, sent - sent_before_check))
    assert delivered_after >= sent - sent_before_check, (stats, delivered_after)
