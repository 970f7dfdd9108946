"""A faust app that hands whole fetched chunks of a topic to one handler: the stream worker's engine.

faust pushes every message through a per-message path (``Consumer._drain_messages`` → two tasks
per message in ``wait_first`` → ``Conductor.on_message`` → channel queue → ``Stream`` → ``take()``
buffer → ack), about 200 µs of event-loop CPU per record: a worker topped out at 3,400-4,600
records/s with its CPU mostly idle. Two things held it back, both fixed here:

1. Starved fetches. faust runs aiokafka's consumer in its own thread while agents run on the main
   thread. When the main thread is busy, every socket read of the consumer thread has to win the
   GIL back, which takes up to ``sys.getswitchinterval()`` (5 ms) each time; a multi-megabyte fetch
   response needs about a hundred such hand-offs. ``install()`` lowers the switch interval. And
   aiokafka keeps at most one FetchRequest in flight per broker: when that request holds only
   partitions at the end of their log, the broker parks it for ``fetch_max_wait_ms``, which faust
   hard-codes to 1500 ms, and no other partition can be fetched meanwhile (faust's
   ``getmany(timeout=1.0)`` then returns empty after 1 s). ``FastFetchConsumerThread`` lowers it.
2. The per-message path. ``BatchApp.batch_agent(topic)`` registers ``async def handler(records)``
   that receives each fetched chunk of one partition (aiokafka ``ConsumerRecord``s, in order).
   Offsets are acknowledged in bulk only after the handler returned, so commits keep faust's
   at-least-once semantics; tables, rebalancing, the commit interval, the consumer thread and
   ordinary agents on other topics (table changelogs) are untouched.

It overrides ``faust.transport.drivers.aiokafka.Consumer._drain_messages`` (faust-streaming
0.15): pinned by the tests that run real workers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock

__all__ = ["BatchApp", "BatchHandler", "install", "seek_back"]

BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


def install(switch_interval: float = 0.0005) -> None:
    """Shorten the GIL switch interval so faust's consumer thread is not starved by the handler."""
    sys.setswitchinterval(switch_interval)


#: Long-poll time of aiokafka's FetchRequests.  faust hard-codes 1500 ms
#: (faust/transport/drivers/aiokafka.py, AIOKafkaConsumerThread._create_worker_consumer).
FETCH_MAX_WAIT_MS = 100
#: aiokafka's Fetcher waits this long (default 0.1 s, not settable through AIOKafkaConsumer) after
#: buffering a partition's records before it sends the next FetchRequest to that broker for the
#: *other* partitions (fetcher.py, _get_actions_per_node: ``if node_id in backoff_by_nodes:
#: continue``).  Tansu puts one partition (~6 MB) in each Fetch response, so refilling six drained
#: partitions costs six round trips plus 6 x 100 ms of this backoff.
PREFETCH_BACKOFF = 0.0


async def seek_back(consumer: Any, tp: TP, offset: int) -> bool:
    """Seek an aiokafka consumer's partition to ``offset`` if its position is past it; True if it
    moved. A partition whose position is not known yet (being reset, or waiting for its committed
    offset) or is at or before ``offset`` is left alone."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(tp) if assignment is not None else None
    if state is None or not state.has_valid_position or state.position <= offset:
        return False
    consumer.seek(tp, offset)
    return True


class FastFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """aiokafka consumer thread whose FetchRequests long-poll for FETCH_MAX_WAIT_MS, not 1500 ms.

    aiokafka keeps at most one FetchRequest in flight per broker (fetcher.py, _get_actions_per_node:
    ``elif node_id in self._in_flight: continue``).  When that request holds only partitions that
    are at the end of their log, the broker parks it for fetch_max_wait_ms (Tansu: the full wait, and
    data arriving meanwhile is only answered at max_wait/2 steps) and every other partition -- even
    ones whose buffer the worker has just drained and that have records waiting -- cannot be
    fetched until it returns.  faust's getmany(timeout=1.0) then comes back empty after 1 s.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def on_start(self) -> None:
        await super().on_start()  # creates and starts the AIOKafkaConsumer (its Fetcher is made in start())
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None and PREFETCH_BACKOFF is not None:
            fetcher._prefetch_backoff = PREFETCH_BACKOFF


class FastFetchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka Consumer using FastFetchConsumerThread."""

    def _new_consumer_thread(self) -> FastFetchConsumerThread:
        return FastFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


class BatchConsumer(FastFetchConsumer):
    """faust's aiokafka Consumer, with a batch path for topics that have a batch handler."""

    _batch_idle_event: asyncio.Event | None = None
    _first_read_by_tp: dict[TP, int] | None = None

    @property
    def _first_read(self) -> dict[TP, int]:
        """The generation in which each partition's first chunk was logged."""
        if self._first_read_by_tp is None:
            self._first_read_by_tp = {}
        return self._first_read_by_tp

    @property
    def _batch_idle(self) -> asyncio.Event:
        if self._batch_idle_event is None:
            self._batch_idle_event = asyncio.Event()
            self._batch_idle_event.set()
        return self._batch_idle_event

    @property
    def _batch_handlers(self) -> dict[str, BatchHandler]:
        return getattr(self.app, "batch_handlers", {})

    async def wait_empty(self) -> None:
        # Rebalance/shutdown: let the batch in progress finish (and be acked) before faust commits.
        await self._batch_idle.wait()
        await super().wait_empty()

    def _ack_offsets(self, tp: TP, first: int, last: int) -> None:
        committed = self._committed_offset[tp]
        if committed is not None and first < committed:
            first = committed
        if first > last:
            return
        offsets = range(first, last + 1)
        with ack_lock:
            index = self._acked_index[tp]
            new = [o for o in offsets if o not in index] if index else list(offsets)
            index.update(new)
            self._acked[tp].extend(new)
            self._n_acked += len(new)

    async def _rewind(self, chunks: Sequence[tuple[TP, Sequence[Any]]]) -> None:
        """Seek partitions whose fetched records are thrown away back to the first of them.

        The records were fetched, so the consumer's position is past them. faust seeks back to
        the committed offset, but aiokafka's ``seek_to_committed`` leaves a partition that has no
        committed offset (or offset 0) where it is: without this, a partition's first records
        fetched while a rebalance stops the flow were never handled by anyone. A partition is
        only ever moved back (``seek_back``): records of an earlier assignment, while the new one
        starts from its committed offset, leave it alone.
        """
        assigned = self.assignment()
        for tp, recs in chunks:
            if tp.topic not in self._batch_handlers or tp not in assigned:
                continue
            offset = recs[0].offset
            try:
                moved = await self._seek_back(tp, offset)
            except Exception as exc:  # noqa: BLE001 - revoked meanwhile: the new owner re-reads
                self.log.warning("Could not rewind %r to offset %s: %r", tp, offset, exc)
                continue
            if moved:
                self._read_offset[tp] = offset if offset else None  # as faust's own seek does
                self.log.info("Rewound %s[%s] to offset %s", tp.topic, tp.partition, offset)

    async def _seek_back(self, tp: TP, offset: int) -> bool:
        """``seek_back`` on the consumer's own thread (aiokafka's state belongs to its loop)."""
        thread: Any = self._thread
        return bool(await thread.call_thread(seek_back, thread._ensure_consumer(), tp, offset))

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in the worker
        handlers = self._batch_handlers
        if not handlers:
            await super()._drain_messages(fetcher)
            return
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        to_message = self._to_message
        monitor = self.app.monitor
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                generation_id = self.app.consumer_generation_id
                if records is None or self.should_stop:
                    continue
                chunks = [(tp, recs) for tp, recs in records.items() if recs]
                if not self.flow_active:
                    # As Consumer.getmany: records fetched while the flow was stopped are thrown
                    # away and the partitions seek back to their committed offsets. A partition
                    # with no committed offset is not moved by that seek, so it is rewound here.
                    if chunks:
                        await self.perform_seek()
                        await self._rewind(chunks)
                    continue
                for index, (tp, recs) in enumerate(chunks):
                    if not self.flow_active or self.app.consumer_generation_id != generation_id:
                        await self._rewind(chunks[index:])
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        await self._rewind(chunks[index : index + 1])
                        continue
                    r_offset = read_offset[tp]
                    # As faust does, keep offset == read offset: after a seek to the committed
                    # position the read offset is the *next* record to read, not the last one read.
                    if r_offset is not None and recs[0].offset < r_offset:
                        recs = [r for r in recs if r.offset >= r_offset]
                        if not recs:
                            continue
                    handler = handlers.get(tp.topic)
                    if handler is not None and self._first_read.get(tp) != generation_id:
                        self._first_read[tp] = generation_id
                        self.log.info(
                            "Reading %s[%s] from offset %s (generation %s, committed %s)",
                            tp.topic, tp.partition, recs[0].offset, generation_id,
                            self._committed_offset.get(tp),
                        )  # fmt: skip
                    if handler is None:
                        # ordinary faust path (agents, table changelogs): as Consumer._drain_messages
                        for rec in recs:
                            message = to_message(tp, rec)
                            offset = message.offset
                            r_offset = read_offset[tp]
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            read_offset[tp] = offset
                        continue
                    # Acknowledge from just after the last record read, so offsets the log skips
                    # (compaction, transaction markers) do not hold commits back.
                    first = recs[0].offset if r_offset is None else min(recs[0].offset, r_offset + 1)
                    last = recs[-1].offset
                    self._batch_idle.clear()
                    try:
                        if monitor is not None:
                            monitor.stream_inbound_time[tp] = monotonic()
                        await handler(recs)
                    finally:
                        self._batch_idle.set()
                    if self.app.consumer_generation_id != generation_id or tp not in self.assignment():
                        # rebalanced while the handler ran: do not ack, the new owner re-reads them.
                        await self._rewind([(tp, recs), *chunks[index + 1 :]])
                        break
                    if acks_enabled_for(tp.topic):
                        self._ack_offsets(tp, first, last)
                    read_offset[tp] = last
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """faust.App whose consumer delivers whole fetched chunks to ``@app.batch_agent`` handlers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_handlers: dict[str, BatchHandler] = {}
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)

    def batch_agent(self, topic: Any) -> Callable[[BatchHandler], BatchHandler]:
        """Register ``async def handler(records)`` for every partition chunk of ``topic``."""

        def register(fn: BatchHandler) -> BatchHandler:
            for name in topic.topics:
                self.batch_handlers[name] = fn
            self.topics.add(topic)  # subscribe (the conductor builds the subscription from its topics)
            return fn

        return register
