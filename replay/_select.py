"""What to replay: records from Kafka offset ranges, a time window, or a SQL selection on ClickHouse.

A selection is read whole, filtered, and put in recorded order (start time, then id), so the same
selection replays the same records in the same order every time. Reading never joins a consumer
group and never commits, unless the caller names a group to commit to. A SQL selection is resolved
to the stored topic, partition and offset of each row and read back from Kafka; when Kafka no
longer holds the record (retention passed, or the embedded broker was restarted and the offset now
holds another record) it is rebuilt from its ClickHouse row, which keeps everything replay needs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, TopicPartition

from trafficreel.schemas import DecodeError, Deserializer, Exchange
from trafficreel.topics import high_watermarks

from ._archive import rebuild_from_clickhouse
from .errors import SelectionError

__all__ = [
    "Filters",
    "KafkaSource",
    "OffsetRange",
    "Selected",
    "Selection",
    "parse_range",
    "parse_status",
    "select_offsets",
    "select_sql",
    "select_window",
]


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive; None = the end at reading time) of a partition."""

    partition: int
    start: int = 0
    end: int | None = None


def parse_range(text: str) -> OffsetRange:
    """``3``, ``3:100``, ``3:100-200`` or ``3:100-`` (partition 3 from offset 100 to 200, exclusive)."""
    try:
        partition, _, span = text.partition(":")
        start, _, end = span.partition("-")
        return OffsetRange(int(partition), int(start or 0), int(end) if end else None)
    except ValueError as exc:
        raise SelectionError(
            f"{text!r} is not an offset range; write PARTITION[:START[-END]], e.g. 0:100-200."
        ) from exc


def parse_status(text: str) -> tuple[int, int]:
    """``404``, ``5xx`` or ``400-499`` as an inclusive status range."""
    try:
        if len(text) == 3 and text.endswith("xx"):
            base = int(text[0]) * 100
            return base, base + 99
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError as exc:
        raise SelectionError(f"{text!r} is not a status filter; write 404, 5xx or 400-499.") from exc


@dataclass(frozen=True, kw_only=True)
class Filters:
    """Keep only records matching every given filter (each filter: any of its values)."""

    services: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()  # globs on the route, or on the raw path when there is no route
    statuses: tuple[tuple[int, int], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # (request header name, regex on its value)
    _headers: tuple[tuple[bytes, re.Pattern[bytes]], ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        compiled = tuple((n.lower().encode("latin-1"), re.compile(v.encode())) for n, v in self.headers)
        object.__setattr__(self, "_headers", compiled)

    def __call__(self, record: Exchange) -> bool:
        if self.services and record["source"]["service"] not in self.services:
            return False
        if self.classes and (record["traffic_class"] or "") not in self.classes:
            return False
        request = record["request"]
        if self.methods and request["method"].upper() not in self.methods:
            return False
        if self.routes:
            route = record["route"] or request["path"].decode("latin-1")
            if not any(fnmatch.fnmatchcase(route, glob) for glob in self.routes):
                return False
        if self.statuses:
            status = record["response"]["status"]
            if status is None or not any(low <= status <= high for low, high in self.statuses):
                return False
        for name, pattern in self._headers:
            values = [h["value"] for h in request["headers"] if h["name"].lower() == name]
            if not any(pattern.search(v) for v in values):
                return False
        return True


@dataclass(slots=True)
class Selected:
    """A record to replay and where it was read from."""

    record: Exchange
    topic: str
    partition: int
    offset: int | None
    origin: str = "kafka"  # or "clickhouse" (rebuilt from the archive)


@dataclass
class Selection:
    """The selected records in replay order, and what was left out, by reason."""

    records: list[Selected]
    left_out: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.records)


def _order(records: Iterable[Selected]) -> list[Selected]:
    return sorted(records, key=lambda s: (s.record["start_time"], s.record["id"]))


class KafkaSource:
    """Reads records of one topic by explicit assignment."""

    def __init__(
        self,
        conf: dict[str, Any],
        deserializer: Deserializer,
        *,
        timeout: float = 10.0,
        commit_group: str | None = None,
    ) -> None:
        self.deserializer = deserializer
        self.timeout = timeout
        self.commit_group = commit_group
        # A group id is required by the client; nothing is committed unless commit_group.
        self.group_id = commit_group or f"trafficreel-replay-{uuid.uuid4().hex[:12]}"
        self.consumer = Consumer(
            {
                **conf,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        self.left_out: Counter[str] = Counter()

    def close(self) -> None:
        self.consumer.close()

    def partitions(self, topic: str) -> list[int]:
        try:
            metadata = self.consumer.list_topics(topic, timeout=self.timeout)
        except KafkaException as exc:
            raise SelectionError(
                f"Cannot reach Kafka to read {topic}: {exc.args[0]}. Is the broker up?"
            ) from exc
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise SelectionError(
                f"Topic {topic} does not exist; list topics with: trafficreel topics describe."
            )
        return sorted(meta.partitions)

    def _bounds(self, topic: str, ranges: Sequence[OffsetRange]) -> list[tuple[int, int, int]]:
        highs = high_watermarks(
            self.consumer, [TopicPartition(topic, r.partition) for r in ranges], self.timeout
        )
        bounds = []
        for r in ranges:
            low, _ = self.consumer.get_watermark_offsets(TopicPartition(topic, r.partition), self.timeout)
            start, end = (
                max(r.start, low),
                min(highs[r.partition] if r.end is None else r.end, highs[r.partition]),
            )
            if r.start < low:
                self.left_out["expired-from-kafka"] += min(low, end) - r.start
            if start < end:
                bounds.append((r.partition, start, end))
        return bounds

    def read(self, topic: str, ranges: Sequence[OffsetRange]) -> Iterator[Selected]:
        """Every record in the ranges (each range: as far as the partition holds records)."""
        known = self.partitions(topic)
        unknown = sorted({r.partition for r in ranges} - set(known))
        if unknown:
            raise SelectionError(f"Topic {topic} has no partition {unknown[0]}; it has {known}.")
        bounds = self._bounds(topic, ranges)
        if not bounds:
            return
        ends = {p: end for p, _, end in bounds}
        self.consumer.assign([TopicPartition(topic, p, start) for p, start, _ in bounds])
        done: set[int] = set()
        while len(done) < len(ends):
            for msg in self.consumer.consume(1000, 0.5):
                partition, offset, err = msg.partition() or 0, msg.offset() or 0, msg.error()
                if err is not None:
                    if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        done.add(partition)
                        continue
                    raise SelectionError(f"Reading {topic} failed: {err}.")
                if partition in done or offset >= ends[partition]:
                    done.add(partition)
                    continue
                if offset + 1 >= ends[partition]:
                    done.add(partition)
                try:
                    record = self.deserializer(msg.value() or b"")
                except DecodeError as exc:
                    self.left_out[f"undecodable-{exc.reason}"] += 1
                    continue
                yield Selected(record, topic, partition, offset)
        self.consumer.unassign()
        if self.commit_group:
            self.consumer.commit(
                offsets=[TopicPartition(topic, p, e) for p, e in ends.items()], asynchronous=False
            )

    def offsets_at(self, topic: str, partitions: list[int], time_ms: int) -> dict[int, int | None]:
        """First offset at or after ``time_ms`` in each partition (None: none yet)."""
        try:
            found = self.consumer.offsets_for_times(
                [TopicPartition(topic, p, time_ms) for p in partitions], self.timeout
            )
        except KafkaException as exc:
            raise SelectionError(f"The broker could not look up offsets by time: {exc.args[0]}.") from exc
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}


def select_offsets(
    source: KafkaSource, topic: str, ranges: Sequence[OffsetRange], filters: Filters, limit: int | None = None
) -> Selection:
    """Records in explicit offset ranges."""
    kept, dropped = [], Counter[str]()
    for item in source.read(topic, ranges):
        if filters(item.record):
            kept.append(item)
        else:
            dropped["filtered-out"] += 1
    ordered = _order(kept)
    if limit is not None and len(ordered) > limit:
        dropped["over-limit"] += len(ordered) - limit
        ordered = ordered[:limit]
    return Selection(ordered, dropped + source.left_out)


WINDOW_GRACE_MS = 60_000


def select_window(
    source: KafkaSource,
    topic: str,
    since_us: int,
    until_us: int | None,
    filters: Filters,
    limit: int | None = None,
    partitions: list[int] | None = None,
) -> Selection:
    """Records whose recorded start time is in [since, until), found with the broker's offsets-for-times.

    Message timestamps are the recorder's start times (the stream keeps them), so the lookup lands
    on the window; the start time of each record decides exactly.
    """
    chosen = partitions or source.partitions(topic)
    starts = source.offsets_at(topic, chosen, since_us // 1000)
    # The end: the first record a grace period past the window (records of several pods reach a
    # partition a little out of time order); some brokers answer a lookup with the start of the
    # batch holding the record, so an end not past the start means: read to the partition's end.
    ends: dict[int, int | None] = {}
    if until_us is not None:
        ends = source.offsets_at(topic, chosen, -(-until_us // 1000) + WINDOW_GRACE_MS)
    ranges = []
    for p, start in starts.items():
        if start is not None:
            end = ends.get(p)
            ranges.append(OffsetRange(p, start, end if end is not None and end > start else None))
    window = Filters()  # the time condition is applied here, the user's filters after it
    selection = select_offsets(source, topic, ranges, window)
    kept, dropped = [], selection.left_out
    for item in selection.records:
        start = item.record["start_time"]
        if start < since_us or (until_us is not None and start >= until_us):
            dropped["outside-window"] += 1
        elif filters(item.record):
            kept.append(item)
        else:
            dropped["filtered-out"] += 1
    if limit is not None and len(kept) > limit:
        dropped["over-limit"] += len(kept) - limit
        kept = kept[:limit]
    return Selection(kept, dropped)


def select_sql(
    source: KafkaSource, client: Any, where: str, filters: Filters, limit: int | None = None
) -> Selection:
    """Rows of ``exchanges`` matching ``where``, read back from Kafka, else rebuilt from ClickHouse."""
    # The condition is the user's own SQL, run with the user's ClickHouse credentials.
    sql = (
        "SELECT toString(id), kafka_topic, kafka_partition, kafka_offset FROM exchanges "  # noqa: S608
        f"WHERE ({where}) ORDER BY start_time, id LIMIT 1 BY id"
        + (f" LIMIT {int(limit)}" if limit is not None else "")
    )
    try:
        rows = client.query(sql).result_rows
    except Exception as exc:
        raise SelectionError(f"ClickHouse refused the selection: {str(exc).strip()[:400]}") from exc
    wanted: dict[str, dict[int, dict[int, str]]] = {}
    for record_id, topic, partition, offset in rows:
        wanted.setdefault(topic, {}).setdefault(partition, {})[offset] = record_id
    found: dict[str, Selected] = {}
    for topic, by_partition in wanted.items():
        for partition, offsets in by_partition.items():
            # the topic or partition may be gone: then every row of it is rebuilt below
            with contextlib.suppress(SelectionError):
                found.update(_read_offsets(source, topic, partition, offsets))
    missing = [row[0] for row in rows if row[0] not in found]
    dropped: Counter[str] = Counter(source.left_out)
    dropped.pop("expired-from-kafka", None)  # they are rebuilt below, not left out
    for record, topic, partition, offset in rebuild_from_clickhouse(client, missing):
        found[record["id"]] = Selected(record, topic, partition, offset, origin="clickhouse")
    kept = []
    for item in found.values():
        if filters(item.record):
            kept.append(item)
        else:
            dropped["filtered-out"] += 1
    return Selection(_order(kept), dropped)


def _read_offsets(
    source: KafkaSource, topic: str, partition: int, offsets: dict[int, str]
) -> dict[str, Selected]:
    """The wanted offsets of one partition whose record still has the expected id."""
    found: dict[str, Selected] = {}
    ordered = sorted(offsets)
    runs: list[list[int]] = [[ordered[0]]]
    for offset in ordered[1:]:
        if offset - runs[-1][-1] > 1000:  # a sparse selection: seek rather than read the gap
            runs.append([offset])
        else:
            runs[-1].append(offset)
    for run in runs:
        for item in source.read(topic, [OffsetRange(partition, run[0], run[-1] + 1)]):
            expected = offsets.get(item.offset or 0)
            if expected is not None and item.record["id"] == expected:
                found[expected] = item
    return found
