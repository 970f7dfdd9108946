"""Sampling: deterministic head sampling, per-route caps, errors and slow exchanges always kept.

1. Errors (5xx, handler exceptions, client disconnects) and slow exchanges (a threshold, per route
   if configured) are always kept, with weight 1.
2. Head sampling keeps a record when ``hash(trace id or record id)`` falls under the class's rate:
   the same decision on every worker and after every restart, so a trace is kept or dropped whole.
   A kept record weighs ``1 / rate``.
3. Caps bound each (service, class, route) per time window (by the record's start time, so a
   re-run decides the same): the first ``cap`` records pass at their weight; beyond that 1 in
   ``k`` passes with ``k`` doubling each time the count doubles, and weighs ``k`` times more. Hot
   routes cannot drown rare ones, and ``sum(sample_weight)`` in SQL still estimates the real count.
   The counts live in a ``CapStore`` (a faust table in the worker, so they survive restarts).
   Each key counts its last few windows apart: records of neighbouring windows interleave (at
   window boundaries, and when a backlog drains), and one from an earlier window must not restart
   the count of a later one. A record older than every counted window is counted alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from trafficreel.schemas import Exchange

__all__ = ["CapStore", "Decision", "Sampler", "SamplingPolicy", "head_hash"]


_WINDOWS_COUNTED = 4  # per key, the most recent windows seen


class CapStore(Protocol):
    """Where cap counts live: ``store[key] -> [window, count, window, count, …]`` (newest first);
    a dict or a faust table."""

    def get(self, key: str, /) -> list[int] | None: ...
    def __setitem__(self, key: str, value: list[int], /) -> None: ...


@dataclass(frozen=True)
class SamplingPolicy:
    """What to keep; every field has a safe default (keep everything)."""

    rate: float = 1.0
    class_rates: Mapping[str, float] = field(default_factory=dict)
    cap: int | None = None  # records per (service, class, route) per window at full weight
    window_seconds: int = 60
    slow_ms: float | None = 1000.0
    slow_ms_routes: Mapping[str, float] = field(default_factory=dict)
    keep_errors: bool = True

    def __post_init__(self) -> None:
        for name, rate in {"rate": self.rate, **self.class_rates}.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"sampling rate {name!r} must be between 0 and 1, not {rate}")
        if self.cap is not None and self.cap < 1:
            raise ValueError(f"the cap must be at least 1 record per window, not {self.cap}")
        if self.window_seconds < 1:
            raise ValueError(f"the cap window must be at least 1 second, not {self.window_seconds}")


@dataclass(frozen=True)
class Decision:
    keep: bool
    weight: float
    reason: str  # kept: error | slow | sampled ; dropped: head | cap


def head_hash(key: str) -> float:
    """A number in [0, 1) from a trace or record id, the same on every machine and run."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Sampler:
    """``decide(record, traffic_class, route) -> Decision``."""

    def __init__(self, policy: SamplingPolicy | None = None, store: CapStore | None = None) -> None:
        self.policy = policy or SamplingPolicy()
        self.store: CapStore = _DictStore() if store is None else store

    def decide(self, record: Exchange, traffic_class: str, route: str, scope: str = "") -> Decision:
        """Keep or drop; ``scope`` separates cap counts (the worker passes the input partition)."""
        policy = self.policy
        if policy.keep_errors and _is_error(record):
            return Decision(True, 1.0, "error")
        slow = policy.slow_ms_routes.get(route, policy.slow_ms)
        if slow is not None and record["duration_us"] >= slow * 1000:
            return Decision(True, 1.0, "slow")
        rate = policy.class_rates.get(traffic_class, policy.rate)
        if rate < 1.0:
            key = record["trace"]["trace_id"] or record["id"]
            if head_hash(key) >= rate:
                return Decision(False, 0.0, "head")
        weight = 1.0 / rate if rate > 0 else 1.0
        if policy.cap is None:
            return Decision(True, weight, "sampled")
        window = record["start_time"] // (policy.window_seconds * 1_000_000)
        key = f"{scope}\x1f{record['source']['service']}\x1f{traffic_class}\x1f{route}"
        counts = dict(_pairs(self.store.get(key)))
        count = counts[window] = counts.get(window, 0) + 1
        newest = sorted(counts.items(), reverse=True)[:_WINDOWS_COUNTED]
        self.store[key] = [n for pair in newest for n in pair]
        if count <= policy.cap:
            return Decision(True, weight, "sampled")
        # Over the cap: keep 1 in k, k the power of two at or above count / cap.
        k = 1 << (-(-count // policy.cap) - 1).bit_length()
        if count % k:
            return Decision(False, 0.0, "cap")
        return Decision(True, weight * k, "sampled")


def _pairs(stored: list[int] | None) -> zip[tuple[int, int]]:
    flat = stored or []
    return zip(flat[::2], flat[1::2], strict=True)


def _is_error(record: Exchange) -> bool:
    status = record["response"]["status"]
    return (status is not None and status >= 500) or record["outcome"]["kind"] in ("RAISED", "DISCONNECTED")


class _DictStore(dict[str, list[int]]):
    """In-memory counts (tests, and workers without a table)."""
