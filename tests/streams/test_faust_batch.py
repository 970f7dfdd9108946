"""The batch consumer never loses fetched records it throws away: it seeks back to them.

A rebalance can stop the flow (or change the generation) while a fetch is in flight. faust then
seeks back to the committed offsets, which does nothing for a partition nobody has committed yet,
so the records already fetched would never be handled. The broker cannot be made to hit that
window on demand, so the fetch result and the consumer's seeks are faked here; everything else is
the real consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from trafficreel.streams._faust_batch import BatchApp, seek_back

RAW0, RAW1 = TP("raw", 0), TP("raw", 1)


def _records(first: int, count: int) -> list[Any]:
    return [SimpleNamespace(offset=o) for o in range(first, first + count)]


def _drain(
    fetched: dict[TP, list[Any]],
    *,
    flow_active: bool = True,
    assigned: Sequence[TP] = (RAW0, RAW1),
    on_handle: Callable[[BatchApp, list[int]], None] | None = None,
    seek_fails: bool = False,
) -> tuple[list[tuple[TP, int]], list[list[int]], Any]:
    """One pass of the consumer's drain loop over ``fetched``: (seeks, handled chunks, consumer)."""

    async def run() -> tuple[list[tuple[TP, int]], list[list[int]], Any]:
        app = BatchApp("test-rewind", broker="kafka://127.0.0.1:9")
        handled: list[list[int]] = []

        async def handler(records: Sequence[Any]) -> None:
            offsets = [r.offset for r in records]
            handled.append(offsets)
            if on_handle is not None:
                on_handle(app, offsets)

        app.batch_agent(app.topic("raw", value_serializer="raw"))(handler)
        await app.topics._update_indices()  # what subscribing does: acks on for the raw topic
        consumer: Any = app.consumer
        stopped = asyncio.Event()
        seeks: list[tuple[TP, int]] = []

        async def wait_next_records(timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
            stopped.set()  # one pass
            return fetched, set(fetched)

        async def no_committed_offsets() -> None:
            return None  # faust's seek to the committed offsets: nothing committed yet

        async def seek_back(tp: TP, offset: int) -> bool:
            seeks.append((tp, offset))
            if seek_fails:
                raise RuntimeError("revoked meanwhile")
            return True

        consumer._wait_next_records = wait_next_records
        consumer.perform_seek = no_committed_offsets
        consumer._seek_back = seek_back
        consumer.assignment = lambda: set(assigned)
        consumer.flow_active = flow_active
        try:
            await consumer._drain_messages(SimpleNamespace(_stopped=stopped))
        finally:
            consumer._thread.thread_loop.close()  # the consumer thread's loop; the thread never ran
        return seeks, handled, consumer

    return asyncio.run(run())


def test_records_fetched_while_the_flow_is_stopped_are_read_again() -> None:
    seeks, handled, _ = _drain({RAW0: _records(0, 5), RAW1: _records(40, 3)}, flow_active=False)
    assert handled == []
    assert seeks == [(RAW0, 0), (RAW1, 40)]


def test_a_partition_no_longer_assigned_is_left_to_its_new_owner() -> None:
    seeks, handled, _ = _drain(
        {RAW0: _records(0, 5), RAW1: _records(40, 3)}, flow_active=False, assigned=[RAW1]
    )
    assert (seeks, handled) == ([(RAW1, 40)], [])


def test_a_rebalance_during_a_chunk_rewinds_it_and_the_chunks_after_it() -> None:
    def rebalance(app: BatchApp, offsets: list[int]) -> None:
        app.consumer_generation_id += 1

    seeks, handled, consumer = _drain({RAW0: _records(0, 5), RAW1: _records(40, 3)}, on_handle=rebalance)
    assert handled == [[0, 1, 2, 3, 4]]
    assert seeks == [(RAW0, 0), (RAW1, 40)]  # not acknowledged: read again, nothing skipped
    assert not consumer._acked[RAW0]


def test_handled_chunks_are_acknowledged_and_not_rewound() -> None:
    seeks, handled, consumer = _drain({RAW0: _records(0, 5), RAW1: _records(40, 3)})
    assert handled == [[0, 1, 2, 3, 4], [40, 41, 42]]
    assert seeks == []
    assert sorted(consumer._acked[RAW0]) == [0, 1, 2, 3, 4]
    assert sorted(consumer._acked[RAW1]) == [40, 41, 42]


def test_a_failed_seek_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    seeks, handled, _ = _drain({RAW0: _records(7, 2)}, flow_active=False, seek_fails=True)
    assert (seeks, handled) == ([(RAW0, 7)], [])
    assert "Could not rewind" in caplog.text


def _aiokafka_consumer(position: int | None) -> Any:
    """An aiokafka consumer's real subscription state with RAW0 assigned at ``position``."""
    from aiokafka.consumer.subscription_state import SubscriptionState

    state = SubscriptionState()
    state.assign_from_user({RAW0})
    if position is not None:
        state.seek(RAW0, position)
    return SimpleNamespace(_subscription=state, seek=state.seek)


@pytest.mark.parametrize(
    ("position", "offset", "moved"),
    [
        (176, 0, True),  # records 0-175 fetched and thrown away: back to 0
        (50, 50, False),  # already there
        (40, 50, False),  # never forward (records of an earlier assignment)
        (None, 0, False),  # position not known yet: the assignment starts at its committed offset
    ],
)
def test_seek_back_only_ever_moves_a_partition_back(position: int | None, offset: int, moved: bool) -> None:
    async def run() -> tuple[Any, bool]:
        consumer = _aiokafka_consumer(position)  # aiokafka's state wants a running loop
        return consumer, await seek_back(consumer, RAW0, offset)

    consumer, result = asyncio.run(run())
    assert result is moved
    state = consumer._subscription.subscription.assignment.state_value(RAW0)
    if moved:
        assert state.position == offset
    elif position is not None:
        assert state.position == position
    else:
        assert not state.has_valid_position
