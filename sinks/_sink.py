"""The sink: class topics → ClickHouse, every record exactly once, whatever crashes.

Records of all assigned partitions are batched together (by rows, bytes and age: one insert per
flush, not one per partition) and inserted with clickhouse-connect as their own Avro bytes, which
ClickHouse parses itself (``_avro``: no decoding in Python for records written with the current
schema); the Kafka offsets are committed only after the insert succeeded. Three things keep a
record from being stored twice:

1. The rows carry their Kafka coordinates. When partitions are assigned, the sink reads the
   highest stored offset of each from ClickHouse and starts after it if that is past the committed
   offset — a sink killed between insert and commit does not insert the batch again.
2. An insert never spans two days (the table's partitions), so each writes one part: atomically
   there or not. Of each partition, a batch is inserted as runs of consecutive offsets of one day,
   in offset order, so every offset up to the highest stored one was handled (1. is exact, even
   at midnight). Each
   insert also carries a deduplication token from its topic/partition/offset range, so an
   identical retry is dropped by ClickHouse itself.
3. A record sent twice upstream (a stream worker that crashed re-sends its chunk: same id, new
   offset) is filtered out before insert by looking its id up in the same time range: the ids
   stored in the batch's time range are read back and compared, or, when that range holds many
   more rows than the batch, the batch's ids are sent and found through the bloom-filter index on
   id. ReplacingMergeTree collapses anything that still slips through.

ClickHouse unreachable or failing for any reason but the rows themselves (read-only, disk full,
memory, a missing table, a proxy's 502 …): the batch's insert is retried with capped exponential
backoff (tenacity) while consuming pauses; nothing is committed meanwhile. When ClickHouse refuses
a batch for its data (a parse, type or range error), its records are decoded in full: the
undecodable ones go to the dead-letter topic with the decoder's reason and the rest is inserted;
records ClickHouse still refuses are found by inserting halves and go to the dead-letter topic as
``clickhouse-rejected``.

The deduplication token also holds a digest of the batch's ids, so records of a recreated topic
at the offsets of earlier ones are not taken for them; the per-minute aggregate drops repeated
inserts too (``non_replicated_deduplication_window``).

Batches are pipelined, one deep: while ClickHouse stores a batch (a thread of its own, waiting on
the HTTP request without the GIL), the loop reads and prepares the next, record by record as it
reads them. A batch is due when it holds ``batch_rows`` records or ``batch_bytes`` bytes, or its
first record is ``batch_seconds`` old, or, after batches that filled up, a read finds nothing more
(the end of a catch-up); a due batch whose predecessor is still being stored goes
on growing, up to four times those limits, and is handed over as soon as that store is done. A
sink that is behind so sends fewer, larger inserts (each costs ClickHouse a fixed amount, about
as much as a few thousand rows, and makes a part to merge) and never stops reading while
ClickHouse works. Stores run one at a time, in order, and a batch's offsets are committed once
its store returned, before the next batch's store begins; so every rule above holds as if the
batches ran one after the other.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_exponential

from trafficreel.logs import get_logger
from trafficreel.schemas import DecodeError, Deserializer, Serializer
from trafficreel.streams._process import DeadLetter, dead_letter_headers
from trafficreel.streams._sender import Message

from ._avro import AvroBatch, AvroInsert
from ._batches import Batch, Item, Store, inserts, ranges
from ._errors import transient
from ._lookup import existing_ids

__all__ = ["ClickHouseSink", "SinkStats"]

log = get_logger("trafficreel.sinks")
_LAG_REFRESH_SECONDS = 5.0
_GROWTH = 4  # how far past its limits a batch grows while the one before is being stored


@dataclass
class SinkStats:
    rows_inserted: int = 0
    batches_inserted: int = 0
    duplicates_skipped: int = 0
    retries: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # records behind, per partition


def _message(raw: KafkaMessage) -> Message:
    # librdkafka gives headers as (str, bytes | None) pairs: kept as they are (only a dead letter
    # reads them). The timestamp is not needed here.
    headers: Any = raw.headers()  # a consumer's message: a list of pairs, or None
    return Message(raw.value(), raw.key(), headers, raw.topic() or "", raw.partition() or 0,
                   raw.offset() or 0, None)  # fmt: skip


class ClickHouseSink:
    """Consume ``topics`` as ``group`` and load them into ClickHouse; ``run()`` until ``stop()``.

    ``run()`` sets the process's GIL switch interval to 0.5 ms (``sys.setswitchinterval``), as
    ``trafficreel stream`` does: embedded in another program, the sink changes it for all of it."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        kafka_config: dict[str, Any],
        topics: list[str],
        dlq_topic: str,
        *,
        group: str = "trafficreel-sink",
        deserializer: Deserializer | None = None,
        batch_rows: int = 10_000,
        batch_bytes: int = 32 << 20,
        batch_seconds: float = 0.5,
        on_batch: Callable[[int, float], None] | None = None,
        on_insert: Callable[[int, float], None] | None = None,
    ) -> None:
        self._client_factory = client_factory
        self.client = client_factory()
        self.topics = topics
        self.dlq_topic = dlq_topic
        self.deserializer = deserializer or Deserializer()
        current = self.deserializer.reader
        self._avro = AvroInsert(current)
        self._serializer = Serializer(schema=current)
        self.batch_rows, self.batch_bytes, self.batch_seconds = batch_rows, batch_bytes, batch_seconds
        self.stats = SinkStats()
        self._on_batch = on_batch
        self._on_insert = on_insert  # rows and seconds of each insert that ClickHouse took
        self.failing_since: float | None = None  # monotonic time of the first failure being retried
        self.last_error = ""
        self._stop = threading.Event()
        self.assigned: set[tuple[str, int]] = set()
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "max.poll.interval.ms": 600_000,
                # A fetch at the end of the log is parked until this much time passed (Tansu parks
                # it for all of it even when records arrive): it bounds the added latency.
                "fetch.wait.max.ms": 100,
                # Once its fetch queue is full (queued.max.messages.kbytes), librdkafka waits this
                # long before fetching again (1 s by default): a sink catching up emptied the queue
                # long before that and sat idle, up to a second at a time.
                "fetch.queue.backoff.ms": 10,
            }
        )
        self._kafka_config = kafka_config
        self._producer = Producer({**kafka_config, "acks": "all", "linger.ms": 5})
        self._dlq_lock = threading.Lock()  # dead letters come from the loop and the insert thread
        self._dlq_failed: list[str] = []
        self._batch: Batch | None = None
        self._storing: Store | None = None
        self._handled: dict[tuple[str, int], int] = {}  # offset after each partition's last committed batch
        self._failed = False  # a store raised: nothing more is stored or committed
        self._behind = False  # the last batch due was due for its size: the sink is catching up
        self._lag_refreshed = time.monotonic()

    # -- partitions ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._stored()  # nothing is being stored while the stored offsets are read
        stored = self._stored_offsets({p.topic for p in partitions})
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(partitions, timeout=30)}
        ahead = {
            key: last for key, last in stored.items() if key in committed and last[0] + 1 > committed[key]
        }
        # Rows stored past the committed offset: inserted before a crash, not committed. Or rows
        # of an earlier topic of the same name (an embedded broker restarted without its data, a
        # recreated topic), whose offsets mean nothing now: only skip when the record at the
        # stored offset is the one stored there.
        same = self._still_there(ahead)
        for p in partitions:
            key = (p.topic, p.partition)
            if key in same:
                p.offset = ahead[key][0] + 1
                log.info(
                    "resuming after the last stored offset",
                    topic=p.topic,
                    partition=p.partition,
                    offset=p.offset,
                )
            elif key in ahead:
                log.warning(
                    "rows stored for this partition come from an earlier topic of the same name; "
                    "reading from the committed offset",
                    topic=p.topic,
                    partition=p.partition,
                    stored_offset=ahead[key][0],
                )
            self.assigned.add(key)
            if p.offset >= 0:  # where reading starts is what is handled so far
                self._handled[key] = p.offset
        consumer.assign(partitions)

    def _still_there(self, stored: dict[tuple[str, int], tuple[int, str]]) -> set[tuple[str, int]]:
        """The partitions whose record at the stored offset has the stored id (read with a
        short-lived consumer that joins no group)."""
        if not stored:
            return set()
        reader = Consumer(
            {
                **self._kafka_config,
                "group.id": "trafficreel-sink-check",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        found: set[tuple[str, int]] = set()
        try:
            # No high-watermark check first: the embedded broker reports the first offset of the
            # last record batch plus one, not the last offset plus one. A topic holding fewer
            # records than were stored from it answers with its end (an out-of-range offset
            # resets there) or an error: not the record stored.
            wanted = {key: offset for key, (offset, _) in stored.items()}
            reader.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
            deadline = time.monotonic() + 15
            while wanted and time.monotonic() < deadline:
                for raw in reader.consume(len(wanted), 1.0):
                    key = (raw.topic() or "", raw.partition() or 0)
                    if key not in wanted:
                        continue
                    offset = wanted.pop(key)
                    if raw.error() is None and raw.offset() == offset:
                        try:
                            record_id = self._item(_message(raw)).id
                        except DecodeError:
                            continue
                        if record_id.lower() == stored[key][1]:
                            found.add(key)
        finally:
            reader.close()
        return found

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flush_batch(wait=True)  # every partition's records, while they are still ours to commit
        for p in partitions:
            self.assigned.discard((p.topic, p.partition))
            self.stats.lag.pop((p.topic, p.partition), None)
            self._handled.pop((p.topic, p.partition), None)
        consumer.unassign()

    def _stored_offsets(self, topics: set[str]) -> dict[tuple[str, int], tuple[int, str]]:
        """The highest offset stored of each partition, and the id stored there.

        Read from ``kafka_offsets`` (a few rows per partition, kept at insert time), not by
        scanning ``exchanges``; a partition whose id there is no longer in ``exchanges`` (the table
        was truncated, or its partitions dropped, to load again) counts as not stored."""
        rows = self._rows(
            "SELECT kafka_topic, kafka_partition, max(max_offset), "
            "toString(argMaxMerge(id_at_max)) FROM kafka_offsets "
            "WHERE kafka_topic IN %(topics)s GROUP BY kafka_topic, kafka_partition",
            parameters={"topics": tuple(sorted(topics))},
        )
        stored = {(t, int(p)): (int(o), str(i)) for t, p, o, i in rows}
        ids = tuple(sorted({i for _, i in stored.values()}))
        if not ids:
            return stored
        present = self._rows(
            "SELECT DISTINCT toString(id) FROM exchanges WHERE id IN %(ids)s", parameters={"ids": ids}
        )
        kept = {row[0] for row in present}
        return {key: value for key, value in stored.items() if value[1] in kept}

    # -- the loop --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        # The insert thread sends each insert's body piece by piece, taking the GIL back after
        # every socket write; while the loop reads, each take waited up to the 5 ms default and an
        # insert of 30 MB took half a second to send. (Process-wide; the sink has its own.)
        sys.setswitchinterval(0.0005)
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                # While a batch is being stored, the loop comes back soon to commit it.
                messages = self._consumer.consume(1000, 0.2 if self._storing is None else 0.02)
                for raw in messages:
                    error = raw.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("kafka error", error=str(error))
                        continue
                    batch = self._batch
                    if batch is None:
                        batch = self._batch = Batch(time.perf_counter())
                    self._add(batch, _message(raw))
                    if batch.messages >= self.batch_rows or batch.size >= self.batch_bytes:
                        self._flush_if_due(batch)
                storing = self._storing
                if storing is not None and storing.done.done():
                    self._stored()  # commit as soon as it is stored (and raise what the store raised)
                elif storing is not None and time.monotonic() - self._lag_refreshed > _LAG_REFRESH_SECONDS:
                    self._refresh_lag()  # a store taking long (ClickHouse away): keep the lag current
                if self._batch is not None:
                    # Nothing more to read after batches that filled up: the sink has caught up.
                    self._flush_if_due(self._batch, caught_up=not messages and self._behind)
                self._producer.poll(0)
            self._flush_batch(wait=True)
        finally:
            self._producer.flush(30)
            self._consumer.close()

    # -- one batch -------------------------------------------------------------------------

    def _flush_if_due(self, batch: Batch, caught_up: bool = False) -> None:
        """Hand the batch over when it is due: full (``batch_rows``/``batch_bytes``), its first
        record ``batch_seconds`` old, or the last records of a catch-up (``caught_up``: batches
        filled up, and now nothing more came; waiting for more would only delay them). While
        ClickHouse still stores the batch before, a due batch goes on growing, up to ``_GROWTH``
        times the limits, and is handed over once that store is done: a sink behind its topics
        sends fewer, larger inserts (each has a fixed cost in ClickHouse, about as much as a few
        thousand rows), and reading goes on during a store."""
        rows, size = batch.messages, batch.size
        full = rows >= self.batch_rows or size >= self.batch_bytes
        if not (full or caught_up or time.perf_counter() - batch.started >= self.batch_seconds):
            return
        storing = self._storing
        if (
            storing is None
            or storing.done.done()
            or rows >= self.batch_rows * _GROWTH
            or size >= self.batch_bytes * _GROWTH
        ):
            self._behind = full  # flushed for its age, or at the end of a catch-up: keeping up
            self._flush_batch()

    def _flush_batch(self, wait: bool = False) -> None:
        """Hand the records of every partition read since the last flush to the insert thread,
        once the batch before them is stored and committed; ``wait``: until they are too."""
        batch, self._batch = self._batch, None
        if self._failed:
            return  # a batch before it failed: it is read again after a restart
        if batch is not None and batch.messages:
            self._stored()
            # Dead letters reach the broker before any row past them is stored.
            self._dead_letters_delivered()
            done: Future[None] = Future()
            store = threading.Thread(
                target=self._store_batch, args=(batch.by_partition, done), name="trafficreel-sink-insert"
            )
            store.daemon = True  # a store outliving the loop is only ever an uncommitted one
            store.start()
            self._storing = Store(done, batch.ends, batch.messages, batch.started)
        if wait:
            self._stored()

    def _stored(self) -> None:
        """Wait for the batch being stored, commit its offsets (raises what its store raised)."""
        storing, self._storing = self._storing, None
        if storing is None:
            return
        try:
            while not wait_futures([storing.done], timeout=_LAG_REFRESH_SECONDS).done:
                self._refresh_lag()  # ClickHouse slow or away: the lag gauge still says how far behind
            storing.done.result()
        except BaseException:
            # Its rows may be partly stored, partly not: no later batch may be stored or committed
            # (closing the consumer revokes the partitions, which would flush the next one).
            self._failed = True
            raise
        self._commit(storing.ends)
        self._handled.update(storing.ends)
        self._lag(storing.ends)
        self._lag_refreshed = time.monotonic()
        if self._on_batch is not None:
            self._on_batch(storing.messages, time.perf_counter() - storing.started)

    def _store_batch(self, by_partition: dict[tuple[str, int], list[Item]], done: Future[None]) -> None:
        """The insert thread's work: one batch's inserts, in order (``done`` tells how it went)."""
        try:
            for day, items in inserts(by_partition):
                self._insert_day(day, items)
                self._dead_letters_delivered()
        except BaseException as exc:  # noqa: BLE001 - raised again in the loop, by _stored()
            done.set_exception(exc)
        else:
            done.set_result(None)

    def _add(self, batch: Batch, message: Message) -> None:
        """Prepare a record read for its insert (as it is read, while the batch before may still be
        being stored); one that cannot be read goes to the dead-letter topic."""
        key = (message.topic, message.partition)
        batch.ends[key] = message.offset + 1
        batch.messages += 1
        batch.size += len(message.value or b"")
        try:
            item = self._item(message)
        except DecodeError as exc:
            self._dead_letter(message, exc.reason, str(exc))
        else:
            items = batch.by_partition.get(key)
            if items is None:
                items = batch.by_partition[key] = []
            items.append(item)

    def _item(self, message: Message) -> Item:
        """The record's id, start time and Avro body in the current schema, without decoding it
        when it was written with the current schema (DecodeError if it cannot be read)."""
        value = message.value or b""
        topic, partition, offset = message.topic, message.partition, message.offset
        found = self._avro.read(value, topic, partition, offset)
        if found is None:
            # Another writer schema, or Confluent framing: resolve to the current schema, re-encode.
            value = self._serializer(self.deserializer(value))
            found = self._avro.read(value, topic, partition, offset)
        assert found is not None  # the serializer frames with the current schema
        record_id, start_time, block = found
        return Item(message, record_id, start_time, value, block)

    def _refresh_lag(self) -> None:
        """Every assigned partition's lag, the high watermark asked of the broker (the consumer may
        not be fetching while a store waits for ClickHouse)."""
        self._lag_refreshed = time.monotonic()
        self._lag(sorted(self.assigned), cached=False)

    def _lag(self, partitions: Iterable[tuple[str, int]], *, cached: bool = True) -> None:
        """The lag of these partitions: records from the offset after their last committed batch
        to the high watermark (``cached``: as the last fetch reported it, no request)."""
        for key in partitions:
            handled = self._handled.get(key)
            if handled is None:
                continue
            where = TopicPartition(*key)
            try:
                if cached:
                    _, high = self._consumer.get_watermark_offsets(where, cached=True)
                else:
                    _, high = self._consumer.get_watermark_offsets(where, timeout=2.0)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.stats.lag[key] = max(0, high - handled)

    def _dead_letters_delivered(self) -> None:
        """Dead letters sent so far must be on the broker before any later offset is stored or
        committed (the producer sends nothing else)."""
        while len(self._producer):
            self._producer.flush(1.0)
        with self._dlq_lock:
            failed, self._dlq_failed = self._dlq_failed, []
        if failed:
            raise KafkaException(f"{len(failed)} dead letters were refused by the broker, e.g. {failed[0]}")

    def _on_dead_letter(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._dlq_lock:
                self._dlq_failed.append(str(err))

    def _commit(self, ends: dict[tuple[str, int], int]) -> None:
        # The rows are stored; a commit is what spares the next owner of a partition a re-read
        # (it resumes after the highest offset ClickHouse holds anyway). A retriable failure is
        # retried; a lost partition (rebalance) is left to its new owner.
        offsets = [TopicPartition(topic, partition, end) for (topic, partition), end in ends.items()]
        for attempt in range(10):
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or not error.retriable() or attempt == 9:
                    log.warning("offset commit failed", offsets=str(offsets)[:300], error=str(exc)[:300])
                    return
                self.stats.retries += 1
                time.sleep(min(5.0, 0.2 * 2**attempt))

    def _insert_day(self, day: int, items: list[Item]) -> None:
        existing = existing_ids(self._rows, items)
        rows = AvroBatch(self._avro)
        kept: list[Item] = []
        for item in items:
            record_id = item.id.lower()  # as ClickHouse prints a UUID
            if record_id in existing:
                self.stats.duplicates_skipped += 1
                continue
            existing.add(record_id)  # a duplicate inside the batch, too
            rows.blocks.append(item.block)
            kept.append(item)
        if not kept:
            return
        # Offsets name the batch; the ids tell this topic's records from an earlier topic's of
        # the same name (recreated, or an embedded broker restarted) at the same offsets.
        ids = hashlib.blake2b(",".join(item.id for item in kept).encode(), digest_size=8).hexdigest()
        token = f"{ranges(items)}:{day}:{ids}"
        try:
            self._retry(lambda: self._insert(rows, token))
        except Exception as exc:  # noqa: BLE001 - a refused batch: find the refused records
            log.warning("ClickHouse refused a batch; checking its records", error=str(exc)[:500])
            self._insert_refused(rows, kept, token)
            return
        self.stats.rows_inserted += len(rows)
        self.stats.batches_inserted += 1

    def _insert(self, rows: AvroBatch, token: str) -> None:
        started = time.perf_counter()
        self._avro.send(
            self.client,
            rows.chunks(),
            {
                "insert_deduplicate": 1,
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )
        if self._on_insert is not None:
            self._on_insert(len(rows), time.perf_counter() - started)

    def _insert_refused(self, rows: AvroBatch, items: list[Item], token: str) -> None:
        """A batch ClickHouse refused: records the full decoder rejects go to the DLQ with its
        reason and the rest is tried again; if that fails too, in halves."""
        valid: list[int] = []
        for index, item in enumerate(items):
            try:
                self.deserializer(item.data)
            except DecodeError as exc:
                self._dead_letter(item.message, exc.reason, str(exc))
            else:
                valid.append(index)
        self._dead_letters_delivered()  # on the broker before any later offset is stored
        if not valid:
            return
        if len(valid) < len(items):
            rows, items = rows.subset(valid), [items[i] for i in valid]
        self._insert_halves(rows, items, list(range(len(items))), f"{token}:valid")

    def _insert_halves(self, rows: AvroBatch, items: list[Item], indexes: list[int], token: str) -> None:
        """Insert these records; refused for their data, in halves until the refused ones are
        found (a few inserts for one bad record in thousands, not one insert per record)."""
        part = rows.subset(indexes) if len(indexes) < len(items) else rows
        self._dead_letters_delivered()  # a record refused earlier: on the broker before the rest
        try:
            self._retry(lambda: self._insert(part, f"{token}:{indexes[0]}-{indexes[-1]}"))
        except Exception as exc:  # noqa: BLE001 - refused for its data (the rest is retried)
            if len(indexes) == 1:
                self._dead_letter(items[indexes[0]].message, "clickhouse-rejected", str(exc)[:2000])
                return
            middle = len(indexes) // 2
            self._insert_halves(rows, items, indexes[:middle], token)
            self._insert_halves(rows, items, indexes[middle:], token)
        else:
            self.stats.rows_inserted += len(indexes)
            self.stats.batches_inserted += 1

    def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        letter = DeadLetter(reason, detail, "sink")
        headers = dead_letter_headers(
            message.headers, letter, message.topic, message.partition, message.offset
        )
        self._producer.produce(
            self.dlq_topic,
            message.value,
            message.key,
            headers=headers,  # type: ignore[arg-type]
            on_delivery=self._on_dead_letter,
        )
        with self._dlq_lock:
            self.stats.dead_letters[reason] = self.stats.dead_letters.get(reason, 0) + 1

    def _rows(self, sql: str, **kwargs: Any) -> Sequence[Sequence[Any]]:
        """The rows of a query, retried like every ClickHouse request."""
        rows: Sequence[Sequence[Any]] = self._retry(lambda: self.client.query(sql, **kwargs).result_rows)
        return rows

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` until it succeeds, backing off on transient failures (max.poll.interval.ms is
        10 minutes, so a long ClickHouse outage costs the group membership, and with it nothing)."""

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            self.last_error = str(state.outcome.exception())[:300] if state.outcome else ""
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            log.warning("retrying", attempt=state.attempt_number, error=self.last_error)

        for attempt in Retrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential(multiplier=0.2, max=10),
            stop=stop_never,
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                result = fn()
                self.failing_since = None
                return result
        return None  # pragma: no cover - Retrying never ends without a result or an exception
