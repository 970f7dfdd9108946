"""How the sink shapes a batch: its records, the inserts it is stored in, and their names.

A batch holds the records of every assigned partition read since the last flush. It is stored as
a sequence of inserts (``inserts``), each of one day and, of each partition, the next run of
consecutive offsets; an insert is named by its offset ranges (``ranges``) in its deduplication
token.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from trafficreel.streams._sender import Message

from ._avro import Block

__all__ = ["Batch", "Item", "Store", "inserts", "ranges"]

_DAY_US = 86_400_000_000  # the table's partitions are UTC days


@dataclass(slots=True)
class Item:
    message: Message
    id: str
    start_time: int  # µs since the epoch
    data: bytes  # framed record in the current schema (single-object: its Avro body starts at 10)
    block: Block  # the record as a block of the insert's Avro container (built as it is read)


@dataclass
class Batch:
    """Records read since the last flush, each prepared for the insert as it was read."""

    started: float  # perf_counter when its first record was read
    by_partition: dict[tuple[str, int], list[Item]] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset of each partition
    messages: int = 0  # read, dead letters included
    size: int = 0  # bytes of the records' values


@dataclass
class Store:
    """A batch being stored by the insert thread; its offsets are committed when it is done."""

    done: Future[None]
    ends: dict[tuple[str, int], int]  # next offset of each partition the batch read
    messages: int
    started: float  # perf_counter when its first record was read


def _day(item: Item) -> int:
    return item.start_time // _DAY_US


def inserts(by_partition: dict[tuple[str, int], list[Item]]) -> Iterator[tuple[int, list[Item]]]:
    """A batch's inserts, in order: each holds one day (one part, atomic) and, of each partition,
    the next run of consecutive offsets of that day. Whatever a crash interrupts, every offset of a
    partition up to its highest stored one was handled, so resuming after it is exact."""
    runs = {
        key: [(day, list(run)) for day, run in itertools.groupby(items, key=_day)]
        for key, items in by_partition.items()
    }
    while runs:
        by_day: dict[int, list[Item]] = {}
        for key in list(runs):
            day, run = runs[key].pop(0)
            by_day.setdefault(day, []).extend(run)
            if not runs[key]:
                del runs[key]
        for day in sorted(by_day):
            yield day, by_day[day]


def ranges(items: list[Item]) -> str:
    """topic:partition:first-last of each partition among ``items`` (each a run of offsets)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for item in items:
        key = (item.message.topic, item.message.partition)
        spans.setdefault(key, [item.message.offset, item.message.offset])[1] = item.message.offset
    return ",".join(f"{t}:{p}:{first}-{last}" for (t, p), (first, last) in sorted(spans.items()))
