"""Shared measuring: interleaved rounds of candidate and baseline, medians, and figures with targets."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "median_rate", "median_time"]


@dataclass(frozen=True)
class Figure:
    """One reported number, its target and how it was obtained."""

    name: str
    value: float
    unit: str
    target: float | None = None
    lower_is_better: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.lower_is_better else self.value >= self.target

    def as_json(self) -> dict[str, Any]:
        return {
            "value": round(self.value, 3),
            "unit": self.unit,
            "target": self.target,
            "target_is_max": self.lower_is_better if self.target is not None else None,
            "met": self.met,
            **self.detail,
        }


def _rate(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - start)


def median_rate(
    candidate: Callable[[], int], baseline: Callable[[], int], rounds: int
) -> tuple[float, float]:
    """Median units per second of each callable over alternating rounds, after one warm-up each."""
    candidate()
    baseline()
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(_rate(candidate))
        theirs.append(_rate(baseline))
    return statistics.median(ours), statistics.median(theirs)


def median_time(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of what each callable returns (a time per unit), over interleaved rounds after a warm-up."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(fn())
    return {name: statistics.median(values) for name, values in samples.items()}
