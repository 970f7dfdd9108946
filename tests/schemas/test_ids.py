"""Record ids are UUIDv7: unique, version 7, RFC variant, ordered by time."""

from __future__ import annotations

import time
import uuid

from trafficreel.schemas import id_time_ms, new_id


def test_ids_are_uuid7_with_the_rfc_variant() -> None:
    """Every id parses as a UUID of version 7 and the RFC 9562 variant."""
    value = uuid.UUID(new_id())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_ids_encode_their_time() -> None:
    """The id's embedded milliseconds are the time it was made for."""
    now = time.time_ns()
    assert id_time_ms(new_id(now)) == now // 1_000_000


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    """Ids made for increasing times sort in that order; 100,000 ids have no duplicate."""
    base = time.time_ns()
    ordered = [new_id(base + i * 1_000) for i in range(2_000)]  # 1 µs apart
    assert ordered == sorted(ordered)
    many = {new_id() for _ in range(100_000)}
    assert len(many) == 100_000


def test_a_forked_child_and_a_seeded_app_draw_other_ids() -> None:
    """Pre-fork servers: a worker forked from the app (by Python or below it) draws other random
    bits than its parent at the same instant; an app calling random.seed() changes nothing."""
    import ctypes
    import os
    import random

    at = time.time_ns()
    libc = ctypes.CDLL(None, use_errno=True)
    for fork in (os.fork, libc.fork):  # libc's: a fork below Python, as uWSGI's, runs no hook
        read, write = os.pipe()
        pid = fork()
        if pid == 0:  # the child: its next ids, to the parent
            os.write(write, ",".join(new_id(at) for _ in range(3)).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as pipe:
            child = set(pipe.read().split(","))
        parent = {new_id(at) for _ in range(3)}
        assert len(child) == 3
        assert not child & parent
    random.seed(7)
    first = new_id(at)
    random.seed(7)
    assert new_id(at) != first
