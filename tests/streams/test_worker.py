"""The stream worker against the real broker: classes to their topics, dead letters, no secrets
in any output, two workers sharing partitions and one of them killed, caps across a restart."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from trafficreel.schemas import Deserializer, Exchange, Serializer

from .support import exchange
from .workers import make_topics, read_all, running, wait_for

pytestmark = pytest.mark.stack
SERIALIZER, DESERIALIZER = Serializer(), Deserializer()
PLANTED = [b"hunter2-planted", b"ghp_PlantedToken0001", b"planted.person@example.com", b"4012888888881881"]


def _produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    # compressed as the recorder sends them: the worker must read lz4 batches
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    for key, value in values:
        producer.produce(topic, value, key, headers=[("trafficreel-service", b"test")])
    assert producer.flush(30) == 0


def _quiet(record: Exchange) -> Exchange:
    record["response"]["status"] = 200
    record["duration_us"] = 1000
    return record


def _mixed(count: int) -> dict[str, list[Exchange]]:
    """Records of every class; some business ones carry planted secrets."""
    by_class: dict[str, list[Exchange]] = {"business": [], "k8s-api": [], "probe": [], "scrape": []}
    for i in range(count):
        kind = ("business", "business", "k8s-api", "probe", "scrape")[i % 5]
        if kind == "k8s-api":
            record = exchange(
                i,
                direction="OUTBOUND",
                host="kubernetes.default.svc",
                path=b"/api/v1/namespaces/shop/pods",
                headers={"user-agent": "OpenAPI-Generator/31.0.0/python"},
            )
        elif kind == "probe":
            record = exchange(i, path=b"/healthz", headers={"user-agent": "kube-probe/1.31"})
        elif kind == "scrape":
            record = exchange(i, path=b"/metrics", headers={"user-agent": "Prometheus/2.53.0"})
        else:
            record = exchange(i, path=b"/v1/orders/%d" % i)
            if i % 10 == 0:
                body = b'{"password": "hunter2-planted", "deep": {"api_token": "ghp_PlantedToken0001"}, "note": "planted.person@example.com pays with 4012888888881881"}'
                record["request"]["body"].update(
                    data=body,
                    size=len(body),
                    content_type="application/json",
                    content_encoding=None,
                    state="COMPLETE",
                )
                record["request"]["query"] = b"access_token=hunter2-planted"
        by_class[kind].append(_quiet(record))
    return by_class


def test_worker_routes_every_class_and_dead_letters_the_rest(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each class lands in its topic with class, rule and route set; undecodable bytes land in the
    DLQ with reason and origin; planted secrets appear in no output; /ready and /metrics answer."""
    prefix = make_topics(infra.bootstrap, partitions=3)
    by_class = _mixed(200)
    values = [(r["id"].encode(), SERIALIZER(r)) for records in by_class.values() for r in records]
    garbage = [(b"g1", b"not avro at all"), (b"g2", values[0][1][:-30])]
    _produce(infra.bootstrap, f"{prefix}.raw", values + garbage)
    total = len(values) + len(garbage)
    started = time.time()
    with running(infra.bootstrap, prefix, tmp_path, partitions=3) as worker:
        worker.wait_ready()
        wait_for(
            lambda: worker.metric("trafficreel_stream_records_in_total") >= total,
            60,
            "all records read",
            worker,
        )
        # When the last batch was handled: a stuck-worker alert and the benchmark rest on it.
        last_batch = worker.metric("trafficreel_stream_last_batch_timestamp_seconds")
        assert started < last_batch <= time.time()
        status, body = worker.get("/ready")
        assert status == 200 and "partitions assigned" in body
        assert worker.metric("trafficreel_stream_dlq_total", reason="bad-magic") == 1
        assert worker.metric("trafficreel_stream_dlq_total", reason="truncated") == 1
        assert worker.metric("trafficreel_stream_records_out_total", **{"class": "k8s-api"}) == len(
            by_class["k8s-api"]
        )
        assert worker.stop() == 0  # SIGTERM: a clean, prompt stop
    assert not list(tmp_path.glob("*-data"))  # faust's data directory is not in the working directory
    for cls, records in by_class.items():
        out = read_all(infra.bootstrap, f"{prefix}.{cls}")
        decoded = [DESERIALIZER(m.value) for m in out]  # type: ignore[arg-type]
        assert sorted(r["id"] for r in decoded) == sorted(r["id"] for r in records)
        assert {r["traffic_class"] for r in decoded} == {cls}
        assert all(m.headers["trafficreel-class"] == cls.encode() for m in out)
        assert all(m.key == r["id"].encode() for m, r in zip(out, decoded, strict=True))  # the key is kept
        if cls == "business":
            assert {r["route"] for r in decoded} == {"/v1/orders/{id}"}
    dead = read_all(infra.bootstrap, f"{prefix}.dlq")
    assert sorted(m.value for m in dead) == sorted(v for _, v in garbage)  # type: ignore[type-var]
    for m in dead:
        assert m.headers["trafficreel-dlq-reason"] in (b"bad-magic", b"truncated")
        assert m.headers["trafficreel-dlq-topic"] == f"{prefix}.raw".encode()
        assert int(m.headers["trafficreel-dlq-offset"]) >= 0 and m.headers["trafficreel-service"] == b"test"
    everything = b"".join(
        m.value or b""
        for n in ("business", "k8s-api", "probe", "scrape")
        for m in read_all(infra.bootstrap, f"{prefix}.{n}")
    )
    assert [s for s in PLANTED if s in everything] == []
    assert any(s in b"".join(v for _, v in values) for s in PLANTED)  # they were there to begin with


def test_faust_command_line_runs_the_same_worker(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`faust -A trafficreel.streams.app worker`, configured by environment variables only, routes
    every class as `trafficreel stream` does and serves /ready and /metrics."""
    prefix = make_topics(infra.bootstrap, partitions=3)
    by_class = _mixed(50)
    values = [(r["id"].encode(), SERIALIZER(r)) for records in by_class.values() for r in records]
    _produce(infra.bootstrap, f"{prefix}.raw", values)
    with running(infra.bootstrap, prefix, tmp_path, partitions=3, faust_cli=True) as worker:
        worker.wait_ready(timeout=90)
        wait_for(
            lambda: worker.metric("trafficreel_stream_records_in_total") >= len(values),
            60,
            "all records read",
            worker,
        )
        status, body = worker.get("/ready")
        assert status == 200 and "partitions assigned" in body
        worker.stop()
    assert not list(tmp_path.glob("*-data"))
    for cls, records in by_class.items():
        out = [DESERIALIZER(m.value) for m in read_all(infra.bootstrap, f"{prefix}.{cls}")]  # type: ignore[arg-type]
        assert sorted(r["id"] for r in out) == sorted(r["id"] for r in records)
        assert {r["traffic_class"] for r in out} == {cls}


def test_two_workers_share_partitions_and_a_killed_one_loses_nothing(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two workers split six partitions; SIGKILL one while records stream in and every record
    still comes out."""
    prefix = make_topics(infra.bootstrap, partitions=6)
    records = [_quiet(exchange(i, path=b"/v1/items/%d" % i)) for i in range(3000)]
    ids = {r["id"] for r in records}
    values = [(r["id"].encode(), SERIALIZER(r)) for r in records]
    fed = threading.Event()

    def feed() -> None:  # about 200 records/s: the stream goes on through the kill and after it
        for first in range(0, len(values), 100):
            _produce(infra.bootstrap, f"{prefix}.raw", values[first : first + 100])
            time.sleep(0.5)
        fed.set()

    with (
        running(infra.bootstrap, prefix, tmp_path, partitions=6) as first,
        running(infra.bootstrap, prefix, tmp_path, partitions=6) as second,
    ):
        first.wait_ready()
        second.wait_ready()
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        wait_for(
            lambda: (
                first.metric("trafficreel_stream_records_in_total") > 0
                and second.metric("trafficreel_stream_records_in_total") > 0
            ),
            60,
            "both workers to get partitions and records",
            first,
        )
        assert not fed.is_set()  # killed mid-stream
        second.stop(signal.SIGKILL)
        feeder.join(60)
        assert fed.is_set()
        wait_for(
            lambda: (
                len({DESERIALIZER(m.value)["id"] for m in read_all(infra.bootstrap, f"{prefix}.business")})
                >= len(ids)
            ),
            90,
            "every record to come out",
            first,
        )  # type: ignore[arg-type]
    out = [DESERIALIZER(m.value)["id"] for m in read_all(infra.bootstrap, f"{prefix}.business")]  # type: ignore[arg-type]
    assert set(out) == ids  # nothing lost; duplicates (re-read after the kill) keep their ids


def test_route_caps_survive_a_restart(infra, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Cap counts live in a changelog-backed table: a restarted worker goes on from them."""
    prefix = make_topics(infra.bootstrap, partitions=1)
    rules = tmp_path / "rules.yaml"
    rules.write_text("sampling: {cap: 10, window_seconds: 3600, slow_ms: null}\n")
    records = [_quiet(exchange(i, path=b"/hot")) for i in range(20)]
    for r in records:
        r["trace"]["trace_id"] = None
    args = {"partitions": 1, "extra": ["--rules", str(rules)]}
    with running(infra.bootstrap, prefix, tmp_path, **args) as worker:  # type: ignore[arg-type]
        worker.wait_ready()
        _produce(infra.bootstrap, f"{prefix}.raw", [(r["id"].encode(), SERIALIZER(r)) for r in records[:10]])
        wait_for(lambda: worker.metric("trafficreel_stream_records_in_total") >= 10, 60, "first ten", worker)
        time.sleep(1)  # the table's changelog is written by faust's producer
        assert worker.stop() == 0
    with running(infra.bootstrap, prefix, tmp_path, **args) as worker:  # type: ignore[arg-type]
        worker.wait_ready()
        _produce(infra.bootstrap, f"{prefix}.raw", [(r["id"].encode(), SERIALIZER(r)) for r in records[10:]])
        wait_for(lambda: worker.metric("trafficreel_stream_records_in_total") >= 10, 60, "next ten", worker)
        kept = worker.metric("trafficreel_stream_records_out_total")
        capped = worker.metric("trafficreel_stream_dropped_total", reason="cap")
        assert worker.stop() == 0
    # Counts 11..20 of the window: past the cap of 10, one in two passes (weight 2).
    assert (kept, capped) == (5, 5)
    out = [DESERIALIZER(m.value) for m in read_all(infra.bootstrap, f"{prefix}.business")]  # type: ignore[arg-type]
    assert sorted(r["sample_weight"] for r in out) == [1.0] * 10 + [2.0] * 5
