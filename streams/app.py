"""The faust-streaming worker: ``trafficreel stream``, or ``faust -A trafficreel.streams.app worker``.

A batch handler (see ``_faust_batch``: faust's per-message path costs more than all the work
done here) takes each fetched chunk of ``<prefix>.raw``, runs its records through the
``Processor`` and sends the results with a confluent-kafka producer: class topics, and the
dead-letter topic for what cannot be processed. A chunk's input offsets are acknowledged to faust
only after the broker acknowledged every output of the chunk, so the worker is at-least-once: a
crash re-reads at most the uncommitted chunks, and their records keep their ids, which the sink
deduplicates on.

Route caps live in a faust table (changelog-backed, so counts survive restarts and rebalances).
Its keys carry the input partition, and each key's changelog partition is that partition, so a
worker owns exactly the counts of the partitions it consumes; each partition gets an equal share
of the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import ssl
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from trafficreel._gc import tune_gc_for_worker
from trafficreel.codec import deserializer, serializer
from trafficreel.config import Settings, load_settings
from trafficreel.errors import KafkaError
from trafficreel.logs import get_logger
from trafficreel.topics import partition_counts

from ._config import StreamRules, load_rules
from ._faust_batch import BatchApp, install
from ._process import Processor
from ._sender import BatchSender, Consumed, DeliveryError
from .metrics import StreamMetrics

__all__ = ["CLASS_TOPICS", "StreamWorker", "build_app", "faust_credentials", "settle_partitions"]

log = get_logger("trafficreel.streams")

# The built-in classes and their topics (short names, prefixed by the settings).
CLASS_TOPICS = {"business": "business", "k8s-api": "k8s-api", "probe": "probe", "scrape": "scrape"}
_KEY_SEP = "\x1f"
CAPS_TABLE = "route-caps"


def faust_credentials(kafka_config: dict[str, Any]) -> faust.types.auth.CredentialsT | None:
    """faust (aiokafka) credentials from the librdkafka properties the other clients use."""
    protocol = str(kafka_config.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka_config.get("ssl.ca.location"))
        if kafka_config.get("ssl.certificate.location"):
            context.load_cert_chain(
                kafka_config["ssl.certificate.location"],
                kafka_config.get("ssl.key.location"),
                kafka_config.get("ssl.key.password"),
            )
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=kafka_config.get("sasl.username"),
            password=kafka_config.get("sasl.password"),
            mechanism=str(kafka_config.get("sasl.mechanism", "PLAIN")).upper(),
            ssl_context=context,
        )
    raise ValueError(f"security.protocol {protocol!r} is not supported by the stream worker")


class _PartitionCaps(faust.Table):  # type: ignore[type-arg]
    """A table whose keys start with the input partition, written to that changelog partition."""

    def partition_for_key(self, key: Any) -> int | None:
        return int(str(key).split(_KEY_SEP, 1)[0])


class _BatchStore:
    """The sampler's cap counts: read through to the table, written back once per key per batch."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.changed: dict[str, list[int]] = {}

    def get(self, key: str, /) -> list[int] | None:
        found = self.changed.get(key)
        if found is None:
            found = self.table.get(key)
        return list(found) if found is not None else None

    def __setitem__(self, key: str, value: list[int], /) -> None:
        self.changed[key] = value

    def flush(self) -> None:
        for key, value in self.changed.items():
            self.table[key] = value
        self.changed.clear()


class StreamWorker:
    """The app, its agent and what they share; ``build_app()`` returns ``worker.app``."""

    def __init__(
        self, settings: Settings, rules: StreamRules | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.rules = rules if rules is not None else load_rules(settings.stream_rules)
        kafka = settings.kafka_client_config()
        install()
        self.app = BatchApp(
            settings.stream_group,
            broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
            broker_credentials=faust_credentials(kafka),
            store="memory://",  # tables are rebuilt from their changelog at start
            # faust makes <name>-data/ in the working directory by default; with tables in memory
            # it holds nothing, so it goes where it cannot clutter the user's checkout.
            datadir=str(Path(tempfile.gettempdir()) / f"trafficreel-stream-{settings.stream_group}"),
            web_enabled=False,  # metrics and probes are served by trafficreel.health
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=6.0,
            # Commit by time: a bulk acknowledgement of a whole chunk must not commit every time.
            broker_commit_every=100_000,
            broker_commit_interval=2.8,
            topic_replication_factor=settings.replication_factor,
            topic_partitions=settings.partitions,
            processing_guarantee="at_least_once",
        )
        self.input_topic = settings.topic("raw")
        self.dlq_topic = settings.topic("dlq")
        outputs: dict[str, str | None] = {cls: settings.topic(short) for cls, short in CLASS_TOPICS.items()}
        outputs.update({cls: settings.topic(t) if t else None for cls, t in self.rules.outputs.items()})
        for cls, topic in outputs.items():
            if topic in (self.input_topic, self.dlq_topic):
                raise ValueError(
                    f"class {cls!r} would be written to {topic}, the worker's own "
                    f"{'input' if topic == self.input_topic else 'dead-letter'} topic; choose another topic "
                    "under 'outputs:' in the rules file"
                )
        self.outputs = outputs
        self.raw = self.app.topic(
            self.input_topic, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
        )
        self.caps = self.app.tables.add(
            _PartitionCaps(
                self.app,
                name=CAPS_TABLE,
                default=None,
                partitions=settings.partitions,
                beacon=self.app.tables.beacon,
            )
        )
        if registry is None:  # one registry per worker: the process's own metrics plus the stream's
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self.metrics = StreamMetrics(registry)
        self.ready = False
        self._lag_partitions: set[int] = set()
        self._store = _BatchStore(self.caps)
        cap = self.rules.sampling.cap
        policy_rules = self.rules
        if cap is not None:
            share = max(1, math.ceil(cap / settings.partitions))
            policy_rules = self.rules.model_copy(
                update={"sampling": self.rules.sampling.model_copy(update={"cap": share})}
            )
        self.processor = Processor(
            policy_rules,
            outputs,
            serializer=serializer(settings),
            deserializer=deserializer(settings),
            store=self._store,
        )
        self.sender = BatchSender(self.processor, kafka, self.dlq_topic)
        self.app.batch_agent(self.raw)(self._handle)
        self.app.task(self._started)

    async def _started(self) -> None:
        tune_gc_for_worker()  # what faust, aiokafka and mode made at startup is left out of collections
        self.ready = True
        log.info(
            "stream worker started",
            input=self.input_topic,
            outputs=self.outputs,
            group=self.settings.stream_group,
        )

    def readiness(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "starting"
        if self.app.rebalancing:
            return False, "rebalancing"
        return True, f"ready: {len(self.app.consumer.assignment())} partitions assigned"

    async def _handle(self, records: Sequence[Consumed]) -> None:
        """One fetched chunk of one partition (aiokafka ConsumerRecords, in offset order)."""
        # The chunk is acknowledged when this returns. Nothing may return early between sending
        # and delivery: an unexpected error stops the process at once (a restart re-reads the
        # chunk), and a cancelled wait (shutdown) still waits for what was sent.
        started = time.perf_counter()
        try:
            tally = self.sender.send(records)
            self._store.flush()
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(self.sender.delivered, tally=tally)
            )
        except asyncio.CancelledError:
            try:
                self.sender.delivered(timeout=30)
            except DeliveryError as exc:
                _stop_uncommitted("output records not delivered at shutdown", exc)
            raise
        except BaseException as exc:  # noqa: BLE001 - see above: never let a chunk be acknowledged
            _stop_uncommitted("the stream handler failed", exc)
        self.metrics.add(self.input_topic, tally.read, tally.out, tally.dropped, tally.dlq)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.last_batch.set_to_current_time()
        self._lag(records)

    def _lag(self, batch: Sequence[Consumed]) -> None:
        last: dict[int, int] = {}
        for message in batch:
            last[message.partition] = message.offset
        consumer = self.app.consumer
        for partition, offset in last.items():
            try:
                high = consumer.highwater(faust.types.TP(self.input_topic, partition))
            except Exception:  # noqa: BLE001, S112 - lag is best effort
                continue
            if high is not None:
                self.metrics.lag.labels(self.input_topic, str(partition)).set(max(0, high - offset - 1))
                self._lag_partitions.add(partition)
        # A partition handed to another worker is that worker's to report: no stale value here.
        assigned = {tp.partition for tp in consumer.assignment() if tp.topic == self.input_topic}
        for partition in self._lag_partitions - assigned:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(self.input_topic, str(partition))
        self._lag_partitions &= assigned


def settle_partitions(settings: Settings, timeout: float = 10.0) -> Settings:
    """The settings with ``partitions`` set to the input topic's, checked against the caps' changelog.

    Cap counts are kept per input partition in a changelog topic of as many partitions, and each
    partition's share of a cap is the cap divided by their number: both must follow the topic as
    it is, not ``TRAFFICREEL_PARTITIONS`` (which says how many partitions *new* topics get). A
    changelog of another size (left from before the input topic grew) cannot hold the counts.
    """
    raw = settings.topic("raw")
    changelog = f"{settings.stream_group}-{CAPS_TABLE}-changelog"
    try:
        counts = partition_counts(settings.kafka_client_config(), [raw, changelog], timeout)
    except KafkaError as exc:
        log.warning("cannot read the topics' partition counts; going on with the settings", error=str(exc))
        return settings
    found = counts.get(raw, settings.partitions)
    if found != settings.partitions:
        log.info(
            "input topic partitions differ from the setting; following the topic",
            topic=raw,
            partitions=found,
            setting=settings.partitions,
        )
        settings = settings.model_copy(update={"partitions": found})
    if counts.get(changelog, found) != found:
        raise ValueError(
            f"{raw} has {found} partitions but the cap counts' changelog {changelog} has "
            f"{counts[changelog]}; delete {changelog} (the route caps then count afresh) and start again"
        )
    return settings


def _stop_uncommitted(what: str, exc: BaseException) -> None:
    log.critical(f"{what}; stopping without committing, a restart re-reads the batch", error=repr(exc))
    os._exit(70)


def build_app(settings: Settings | None = None, rules: StreamRules | None = None) -> faust.App:
    """The faust app for these settings (default: from the environment)."""
    return StreamWorker(settings or load_settings(), rules).app


def _faust_cli_app() -> faust.App:
    """The app ``faust -A`` runs, set up as ``trafficreel stream`` sets up its own: partitions
    settled against the topics, and /metrics, /live and /ready served on TRAFFICREEL_HEALTH_PORT
    (0 turns them off) for as long as the process lives."""
    from trafficreel.health import HealthServer

    settings = settle_partitions(load_settings())
    worker = StreamWorker(settings)
    if settings.health_port:
        try:
            HealthServer(worker.readiness, port=settings.health_port, registry=worker.registry).start()
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve /metrics and /ready on port {settings.health_port}: {exc.strerror}; "
                "set TRAFFICREEL_HEALTH_PORT (0 turns it off)"
            ) from exc
    return worker.app


def __getattr__(name: str) -> Any:
    # `faust -A trafficreel.streams.app worker` looks up `app`: built on first access, from the
    # environment, so importing this module has no side effects.
    if name == "app":
        value = _faust_cli_app()
        globals()["app"] = value
        return value
    raise AttributeError(name)
