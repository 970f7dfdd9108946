"""Shared timing: interleaved rounds of candidate and baseline, medians, and a ratio."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    name: str
    unit: str
    candidate: float  # median rate of the project's code, per second
    baseline: float  # median rate of the baseline, per second
    target: float  # the least acceptable candidate/baseline ratio

    @property
    def ratio(self) -> float:
        return self.candidate / self.baseline

    @property
    def met(self) -> bool:
        return self.ratio >= self.target


def _rate(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - start)


def compare(
    name: str,
    unit: str,
    candidate: Callable[[], int],
    baseline: Callable[[], int],
    *,
    rounds: int,
    target: float,
) -> Comparison:
    """Run both callables ``rounds`` times, alternating, after one warm-up each; compare medians.

    Each callable does a fixed amount of work and returns how many units it processed.
    """
    candidate()
    baseline()
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(_rate(candidate))
        theirs.append(_rate(baseline))
    return Comparison(name, unit, statistics.median(ours), statistics.median(theirs), target)
