"""The recorder: a bounded hand-off from the request path to one background producer thread.

``submit()`` is the only call on the request path: it counts, checks the byte bound and enqueues
— it never blocks and never raises. The background thread builds each record (redaction,
metadata), encodes it with the schema codec and produces it with confluent-kafka. Whatever goes
wrong — a full queue, an encoding failure, a full producer buffer, a broker that never answers —
drops that record and counts it by reason, so that at rest
``recorded == delivered + sum(dropped.values())``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any, Protocol, get_args

# Imported here, not in the producer thread: a first import racing the app's own imports can
# see a half-initialised module.
from confluent_kafka import Producer

from trafficreel.schemas import ConfluentRegistry, Direction, Serializer, Source

from ._body import BodyPolicy
from ._config import RecorderConfig
from ._context import suppress_recording
from ._deep import DeepRedactor
from ._exchange import PendingExchange
from ._metadata import detect_source
from ._redact import Redactor

__all__ = ["Recorder", "RecorderStats"]

log = logging.getLogger("trafficreel.producers")
_GATHER_SECONDS = 0.005  # a pause when the queue ran dry; Kafka's linger.ms is 20
# While records wait, the GIL goes back to the app at least this often (CPython's own switch
# interval is 5 ms). Handing it back after every record cost about a third of this thread's CPU
# in thread switches and cold caches (bench producer: 105 -> 70 us per exchange).
_YIELD_SECONDS = 0.0005

_STOP = object()
_PAUSE = object()  # before a fork: flush, destroy the producer, end the thread; the next submit restarts
# A fork waits for the recorder (see _pause): only this long for the broker to take what was sent.
_FORK_FLUSH_SECONDS = 0.2


class _OncePerMinute(logging.Filter):
    """librdkafka logs every failed connection attempt; an app with a dead broker needs one line."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + 60
        return True


_LIBRDKAFKA_LOG = logging.getLogger("trafficreel.producers.librdkafka")
_LIBRDKAFKA_LOG.addFilter(_OncePerMinute())
_RECORDER_VERSION = "0.1.0"


class _Producer(Protocol):
    def produce(self, topic: str, value: Any = ..., key: Any = ..., *args: Any, **kwargs: Any) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self) -> None: ...
    def __len__(self) -> int: ...


@dataclass
class RecorderStats:
    """Counters of one recorder; read them with ``Recorder.stats()``."""

    recorded: int = 0
    delivered: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    queue_bytes: int = 0
    broker_errors: int = 0


class Recorder:
    """Hands captured exchanges to Kafka without ever blocking or failing the app."""

    def __init__(
        self,
        config: RecorderConfig | None = None,
        *,
        producer: _Producer | None = None,
        recorder_name: str = "asgi",
    ) -> None:
        self.config = config or RecorderConfig.from_env()
        self.policy = BodyPolicy(self.config.body_types, self.config.body_limit)
        config = self.config
        self.redactor = (
            Redactor(config.redact_headers, config.redact_query, config.redact_keep)
            if config.redact
            else None
        )
        self.deep = (
            DeepRedactor(headers=config.redact_headers, query=config.redact_query, keep=config.redact_keep)
            if self.config.redact and self.config.redact_bodies
            else None
        )
        self.source: Source = detect_source(
            self.config.service_name,
            self.config.service_version,
            f"trafficreel/{_RECORDER_VERSION} {recorder_name}",
        )
        self.exclude = tuple(p.encode() for p in self.config.exclude_paths)
        self._given_producer = producer
        self._lock = threading.Lock()
        self._reset()
        ref = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _pause_before_fork(ref),
            after_in_child=lambda: _reset_after_fork(ref),
        )
        atexit.register(_close_at_exit, ref)

    def _reset(self) -> None:
        # Also runs in a forked child: the parent's thread and librdkafka handle do not exist there.
        self._lock = threading.Lock()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._stats = RecorderStats()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._fatal = False
        self._generation = 0  # a fork's pause moves it on: the thread of an earlier one stops

    # -- request path -----------------------------------------------------------------------

    def submit(self, exchange: PendingExchange) -> None:
        """Queue one exchange for sending, or count it as dropped. Never blocks, never raises."""
        try:
            size = exchange.size_estimate()
            stats = self._stats
            with self._lock:
                stats.recorded += 1
                if self._closed:
                    stats.dropped["closed"] += 1
                    return
                if stats.queue_bytes + size > self.config.queue_bytes:
                    stats.dropped["queue_full"] += 1
                    return
                stats.queue_bytes += size
                if self._thread is None:
                    self._start()
            self._queue.put((exchange, size))
        except Exception:  # noqa: BLE001 - recording must never break the app
            with contextlib.suppress(Exception):
                self._stats.dropped["submit_error"] += 1

    def excluded(self, path: bytes) -> bool:
        return bool(self.exclude) and path.startswith(self.exclude)

    # -- counters ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot: recorded, delivered, dropped by reason, queue bytes, broker errors."""
        with self._lock:
            s = self._stats
            return {
                "recorded": s.recorded,
                "delivered": s.delivered,
                "dropped": dict(s.dropped),
                "queue_bytes": s.queue_bytes,
                "broker_errors": s.broker_errors,
                "in_flight": s.recorded - s.delivered - sum(s.dropped.values()),
            }

    def wait_settled(self, timeout: float, poll: float = 0.01) -> bool:
        """Wait until every record so far is delivered or dropped; False if some still are not.

        For tests, benchmarks and orderly shutdowns; never call it on a request path.
        """
        deadline = time.monotonic() + timeout
        while self.stats()["in_flight"]:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    # -- background thread ------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(self._generation,), name="trafficreel-recorder", daemon=True
        )
        self._thread.start()

    def _make_producer(self) -> _Producer:
        if self._given_producer is not None:
            return self._given_producer
        conf: dict[str, Any] = {
            "bootstrap.servers": self.config.kafka_bootstrap,
            "client.id": f"trafficreel-{self.config.service_name}",
            # Not idempotent: a broker that restarts without its state (the embedded one, or a
            # rebuilt cluster) leaves an idempotent producer unable to send, fatally. Duplicates
            # from retries carry the same record id, which the sink deduplicates on. One request
            # in flight per broker keeps a partition's records (one trace's) in order across retries.
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "acks": "all",
            "compression.type": "lz4",  # a fraction of zstd's CPU, which the app's process pays
            "linger.ms": 20,
            "batch.size": 1_000_000,
            # Our own byte bound covers messages until the broker answers; this is a backstop.
            "queue.buffering.max.kbytes": max(1024, self.config.queue_bytes // 1024),
            "message.timeout.ms": 120_000,
            "error_cb": self._on_error,
            "logger": _LIBRDKAFKA_LOG,
            **self.config.kafka_config,
        }
        return Producer(conf)

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            # e.g. a restarted broker that forgot our idempotent producer id: this producer cannot
            # send any more; the thread replaces it.
            self._fatal = True
        with self._lock:
            self._stats.broker_errors += 1
            first = self._stats.broker_errors == 1
        if first or self._stats.broker_errors % 1000 == 0:
            log.warning("trafficreel: Kafka error (%s so far): %s", self._stats.broker_errors, err)

    def _on_delivery(self, handed: _Handed, err: Any, msg: Any) -> None:
        if handed.abandoned:
            return  # already counted as dropped, its bytes given back (a report after all)
        size = len(msg)  # the value's length, without copying the value out
        handed.count -= 1  # served on the thread of this producer, like its produce calls
        handed.bytes -= size
        with self._lock:
            self._stats.queue_bytes -= size  # held until the broker answered, so the bound covers it
            if err is None:
                self._stats.delivered += 1
            else:
                self._stats.dropped[f"delivery:{err.name()}"] += 1

    def _release(self, size: int) -> None:
        with self._lock:
            self._stats.queue_bytes -= size

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._stats.dropped[reason] += 1

    def _run(self, generation: int) -> None:
        suppress_recording.set(True)  # this thread's own HTTP calls (schema registry) are not recorded
        try:
            producer = self._make_producer()
            registry = (
                ConfluentRegistry(self.config.schema_registry_url)
                if self.config.schema_registry_url
                else None
            )
            serializer = Serializer(registry=registry, default_topic=self.config.topic)
        except Exception:
            log.exception("trafficreel: cannot start the Kafka producer; records will be dropped")
            self._drain_dropping("producer_unavailable")
            return
        topic = self.config.topic
        fingerprint = serializer.schema.fingerprint.hex().encode()
        base_headers = [
            ("content-type", b"application/vnd.trafficreel.exchange+avro"),
            ("trafficreel-schema", fingerprint),
            ("trafficreel-service", self.config.service_name.encode()),
        ]
        # Built once: confluent-kafka copies a message's headers, it does not keep the list.
        headers_of = {
            direction: [*base_headers, ("trafficreel-direction", direction.encode())]
            for direction in get_args(Direction)
        }
        context = _Topic(topic)
        handed = _Handed(self)
        sent = 0
        yield_at = 0.0
        ending: object = _STOP
        while True:
            if self._generation != generation:  # a fork is waiting: what is queued stays for the next thread
                ending = _PAUSE
                break
            if self._fatal:
                producer, handed = self._replace(producer, handed)
            try:
                item = self._queue.get(timeout=0.1)
            except Empty:
                self._poll(producer)
                continue
            if item is _PAUSE:
                continue  # the check above ends the thread when a fork waits; else a leftover
            if item is _STOP:
                ending = item
                break
            exchange, size = item
            del item
            try:
                record = exchange.build(self)
                value = serializer(record, context)
            except Exception as exc:  # noqa: BLE001
                del exchange
                self._release(size)
                self._drop("encode_error")
                log.debug("trafficreel: dropped a record that could not be encoded: %s", exc)
                continue
            self._release(size - len(value))  # from here the encoded bytes count, until delivery
            key = (record["trace"]["trace_id"] or record["id"]).encode()
            headers = headers_of[record["direction"]]  # one of the schema's symbols: it was encoded
            if self._produce(producer, handed, topic, value, key, exchange.start_ns // 1_000_000, headers):
                handed.count += 1
                handed.bytes += len(value)
            else:
                self._release(len(value))
            # Not kept alive by this frame while the thread waits for the next record.
            del exchange, record, value
            sent += 1
            if sent % 64 == 0 or self._queue.empty():
                # Delivery reports in batches: a poll per message costs more than it serves.
                self._poll(producer)
            if self._queue.empty():
                # Let records gather, then build them in a burst: woken for every record, this
                # thread spent about twice the CPU per record (cold caches, one wake-up each).
                time.sleep(_GATHER_SECONDS)
            elif time.monotonic() >= yield_at:
                # Let the app's threads run: otherwise one coming back from I/O waits for this
                # thread's switch interval (5 ms).
                time.sleep(0)
                yield_at = time.monotonic() + _YIELD_SECONDS
        if ending is _PAUSE:
            self._flush(producer, handed, _FORK_FLUSH_SECONDS, "fork")
        else:
            self._flush(producer, handed, self.config.flush_timeout, "shutdown")

    def _poll(self, producer: _Producer, timeout: float = 0) -> None:
        """Serve delivery reports; a client error here must never end the thread."""
        try:
            producer.poll(timeout)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc.args[0] if exc.args else None, "fatal", lambda: False)():
                self._fatal = True
            else:
                log.warning("trafficreel: Kafka client error: %s", exc)

    def _replace(self, old: _Producer, handed: _Handed) -> tuple[_Producer, _Handed]:
        """Swap a producer that hit a fatal error for a new one; what it still held is dropped."""
        self._fatal = False
        log.warning("trafficreel: the Kafka producer hit a fatal error; starting a new one")
        for step in (old.purge, lambda: old.flush(2)):  # purged messages report back as dropped
            with contextlib.suppress(Exception):  # the old producer is beyond use anyway
                step()
        self._abandon(handed, "producer_fatal")
        return self._make_producer(), _Handed(self)

    def _produce(
        self,
        producer: _Producer,
        handed: _Handed,
        topic: str,
        value: bytes,
        key: bytes,
        ts: int,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        """Hand one message to librdkafka; False (and counted) when it would not take it."""
        for attempt in range(2):
            try:
                producer.produce(
                    topic, value=value, key=key, timestamp=ts, headers=headers, on_delivery=handed
                )
                return True
            except BufferError:
                if attempt == 0:
                    producer.poll(0.05)  # serve delivery reports to make room, once
            except Exception as exc:  # noqa: BLE001 - e.g. a message larger than the broker accepts
                fatal = getattr(exc.args[0] if exc.args else None, "fatal", lambda: False)()
                if fatal:
                    self._fatal = True
                self._drop("producer_fatal" if fatal else "produce_error")
                return False
        self._drop("producer_full")
        return False

    def _flush(self, producer: _Producer, handed: _Handed, timeout: float, reason: str) -> None:
        deadline = time.monotonic() + timeout
        while handed.count > 0 and time.monotonic() < deadline:
            producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
        left = self._abandon(handed, reason)
        if left:
            log.warning("trafficreel: %d records not delivered within %.1fs (%s)", left, timeout, reason)

    def _abandon(self, handed: _Handed, reason: str) -> int:
        """Count as dropped what a producer about to go still holds; a report for it that comes
        after all is ignored."""
        handed.abandoned = True
        left = handed.count
        if left > 0:
            with self._lock:
                self._stats.dropped[reason] += left
                self._stats.queue_bytes -= handed.bytes  # what they held leaves the bound
        return left

    def _drain_dropping(self, reason: str) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or item is _PAUSE:
                return
            self._release(item[1])
            self._drop(reason)

    def _pause(self, timeout: float = 1.0) -> None:
        """Before a fork: no librdkafka threads may hold locks that the child would inherit locked.

        The thread stops after its current record, gives the broker ``_FORK_FLUSH_SECONDS`` for
        what was sent, counts the rest as dropped (``fork``) and ends; its producer is destroyed
        with it. The fork waits for that (a fraction of a second), not for the queue. Afterwards
        the parent's next record (or ``close()``) starts a thread for what is queued; the child
        (reset) starts afresh.
        """
        with self._lock:
            thread = self._thread
            if thread is None or self._closed or not thread.is_alive():
                return
            self._thread = None
            self._generation += 1
        self._queue.put(_PAUSE)  # wakes the thread if it waits for records
        thread.join(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (within ``flush_timeout``), then stop; later records are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is None and not self._queue.empty():
                self._start()  # records left queued by a fork's pause
            thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout if timeout is not None else self.config.flush_timeout + 5)


class _Handed:
    """One producer's messages handed to librdkafka and not yet reported back, and their encoded
    bytes; also the delivery callback of its messages. Not ``len(producer)``: that also counts
    librdkafka's queued events (a dead broker's errors). One per producer, so a report from an
    abandoned producer (one replaced after a fatal error, or paused for a fork) counts nothing."""

    __slots__ = ("abandoned", "bytes", "count", "recorder")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.count = 0
        self.bytes = 0
        self.abandoned = False

    def __call__(self, err: Any, msg: Any) -> None:
        self.recorder._on_delivery(self, err, msg)


class _Topic:
    __slots__ = ("topic",)

    def __init__(self, topic: str) -> None:
        self.topic = topic


def _pause_before_fork(ref: weakref.ref[Recorder]) -> None:
    recorder = ref()
    if recorder is not None:
        recorder._pause()


def _reset_after_fork(ref: weakref.ref[Recorder]) -> None:
    recorder = ref()
    if recorder is not None:
        recorder._reset()


def _close_at_exit(ref: weakref.ref[Recorder]) -> None:
    recorder = ref()
    if recorder is not None:
        recorder.close()
