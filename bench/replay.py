"""Replay speed and pacing accuracy against a fast local target (another process, on uvloop).

- ``rps``: one replay process sending a selection at a fixed high rate (20,000/s asked, 64 in
  flight) with comparison on; the rate sustained from the first send to the last response;
- ``aiohttp_rps``: the same requests sent by aiohttp at the same concurrency, in the same run
  (a general client that does not keep bytes exact — the speed reference);
- ``pacing_p99_ms``: at 1x original pacing, a selection recorded at 500 requests/s (Poisson
  arrivals), the 99th percentile of |actual send time - scheduled send time|;
- ``timer_p99_ms``: the same schedule with only ``asyncio.sleep`` and no sending: the floor the
  event loop's timers allow on this machine.
"""

from __future__ import annotations

import asyncio
import copy
import random
import statistics
import subprocess
import sys
import time
from typing import Any

import uvloop

from trafficreel.replay import CompareOptions, Pacing, ReplayConfig, Replayer, Selected
from trafficreel.schemas import Exchange, sample_exchange
from trafficreel.stack._processes import free_port, wait_for_port

from ._harness import Figure
from ._target import BODY

__all__ = ["run"]


def _records(count: int, rate: float) -> list[Selected]:
    rng = random.Random(7)
    start = 1_780_000_000_000_000
    template = copy.deepcopy(sample_exchange(1))
    template["response"]["status"] = 200
    template["response"]["body"].update(data=BODY, size=len(BODY), content_type="application/json")
    out = []
    for i in range(count):
        record: Exchange = copy.deepcopy(template)
        record["id"] = f"{template['id'][:-12]}{i:012d}"
        record["request"]["path"] = b"/v1/items/%d" % i
        record["start_time"] = start
        start += int(rng.expovariate(rate) * 1e6)
        out.append(Selected(record, "bench", 0, i))
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


async def _replay(
    url: str, selected: list[Selected], pacing: Pacing, concurrency: int
) -> tuple[float, list[float]]:
    config = ReplayConfig(
        target=url, allow=["127.0.0.1"], pacing=pacing, concurrency=concurrency, compare=CompareOptions()
    )
    first = last = 0.0
    lateness, errors = [], 0
    async for result in Replayer(config).run(selected):
        if result.verdict != "match":
            errors += 1
        if result.sent_at is not None:
            first = result.sent_at if not first else min(first, result.sent_at)
        last = time.monotonic()
        if result.lateness_ms is not None:
            lateness.append(abs(result.lateness_ms))
    if errors:
        raise RuntimeError(f"{errors} replayed requests did not match; the benchmark target is broken")
    return len(selected) / (last - first), lateness


async def _aiohttp(url: str, selected: list[Selected], concurrency: int) -> float:
    import aiohttp

    requests = [
        (
            s.record["request"]["method"],
            url + s.record["request"]["path"].decode(),
            s.record["request"]["body"]["data"],
        )
        for s in selected
    ]
    queue = iter(requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            for method, target, body in queue:
                async with session.request(method, target, data=body) as response:
                    await response.read()

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(requests) / (time.monotonic() - start)


async def _timer_floor(selected: list[Selected]) -> list[float]:
    loop = asyncio.get_running_loop()
    first = selected[0].record["start_time"]
    start = loop.time() + 0.01
    lateness = []
    for s in selected:
        due = start + (s.record["start_time"] - first) / 1e6
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(abs(loop.time() - due) * 1000)
    return lateness


def run(quick: bool) -> list[Figure]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench._target", str(port)], stdout=subprocess.PIPE)
    try:
        if not wait_for_port("127.0.0.1", port, time.monotonic() + 20):
            raise RuntimeError("the benchmark target did not start")
        url = f"http://127.0.0.1:{port}"
        count = 10_000 if quick else 40_000
        fast = _records(count, 1000.0)
        paced = _records(2_500 if quick else 10_000, 500.0)
        rounds = 1 if quick else 3
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(uvloop.run(_replay(url, fast, Pacing(mode="rate", rate=20_000), 64))[0])
            theirs.append(uvloop.run(_aiohttp(url, fast, 64)))
        _, lateness = uvloop.run(_replay(url, paced, Pacing(mode="original", speed=1.0), 32))
        floor = uvloop.run(_timer_floor(paced))
    finally:
        server.terminate()
        server.wait(10)
    rps, base = statistics.median(ours), statistics.median(theirs)
    detail: dict[str, Any] = {"requests": count, "rounds": rounds, "concurrency": 64}
    return [
        Figure("replay.rps", rps, "req/s", 5000, detail={**detail, "rounds_rps": [round(x) for x in ours]}),
        Figure("replay.aiohttp_rps", base, "req/s", detail={"rounds_rps": [round(x) for x in theirs]}),
        Figure("replay.ratio_vs_aiohttp", rps / base, "x"),
        Figure(
            "replay.pacing_p99_ms",
            _p(lateness, 0.99),
            "ms",
            2.0,
            lower_is_better=True,
            detail={
                "requests": len(paced),
                "rate": 500,
                "p50_ms": round(_p(lateness, 0.5), 3),
                "max_ms": round(max(lateness), 3),
            },
        ),
        Figure("replay.timer_p99_ms", _p(floor, 0.99), "ms", lower_is_better=True),
    ]
