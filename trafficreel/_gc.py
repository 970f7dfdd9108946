"""Garbage-collector settings for the long-running worker processes (stream worker, sink)."""

from __future__ import annotations

import gc

__all__ = ["tune_gc_for_worker"]


def tune_gc_for_worker() -> tuple[int, int, int]:
    """Freeze what exists now out of garbage collections and make young collections a fourteenth
    as frequent (every 10,000 allocations instead of 700); returns the thresholds before.

    For a process whose loop frees its garbage by reference counting: the objects made at startup
    (about 90k in a faust worker) live as long as the process, and the records a batch holds
    outlive young collections, yet every full collection walked them all with the GIL held (about
    0.3 s per 100k records in the stream worker; 130-170 ms pauses every 70k records in a sink,
    stalling its reading and the insert it was sending; gc.callbacks). Process-wide: called once
    by the process's entry point, never by a class a program may use many times (objects frozen
    in a cycle are never freed).
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    return before
