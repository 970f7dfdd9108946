"""The replay engine: pace prepared requests, send them, compare, yield one result per request.

``Replayer.run`` is an async iterator, so chaos tooling can drive a replay and act on each result
as it arrives; faults (added delay, aborted connections, for a share of requests) are injected
per request. Pacing keeps each record's offset from the first one in the recorded start times,
divided by the speed factor; a fixed rate or "as fast as possible" are the alternatives. Requests
are written by a dispatcher at their scheduled time; a concurrency bound caps the requests in
flight (when it is reached, requests wait and the lateness shows in the pacing figures).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from trafficreel.schemas import Exchange

from ._client import Reply, Target
from ._compare import Comparator, CompareOptions, Difference, NoiseModel, Observed
from ._request import Prepared, Skipped, prepare
from ._rewrite import Rewriter, Rewrites
from ._select import Selected
from .errors import SendError, TargetNotAllowedError

__all__ = [
    "Fault",
    "FaultHook",
    "Pacing",
    "ReplayConfig",
    "ReplayResult",
    "Replayer",
    "check_allowed",
    "observed_record",
    "observed_reply",
]

Verdict = Literal["match", "differ", "error", "skipped"]
_SPIN = 0.0015  # the last stretch before a send is due is spent yielding, not on a timer


@dataclass(frozen=True, kw_only=True)
class Pacing:
    """When to send: ``original`` timing divided by ``speed``, a fixed ``rate`` per second, or ``asap``."""

    mode: Literal["original", "rate", "asap"] = "original"
    speed: float = 1.0
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.mode == "original" and not 0.1 <= self.speed <= 100:
            raise ValueError(f"The speed factor must be between 0.1 and 100, not {self.speed:g}.")
        if self.mode == "rate" and self.rate <= 0:
            raise ValueError("A fixed rate must be above zero requests per second.")


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A fault injected into a share of requests, chosen by record id (the same ones every run).

    ``delay``: wait ``seconds`` before sending. ``abort``: write half the request, then reset the
    connection. ``routes`` limits the fault to routes (or raw paths) matching these globs.
    """

    kind: Literal["delay", "abort"]
    share: float = 1.0
    seconds: float = 0.0
    routes: tuple[str, ...] = ()

    def applies(self, record: Exchange) -> bool:
        if self.routes:
            route = record["route"] or record["request"]["path"].decode("latin-1")
            if not any(fnmatch.fnmatchcase(route, g) for g in self.routes):
                return False
        if self.share >= 1:
            return True
        digest = hashlib.blake2b(f"{self.kind}:{record['id']}".encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64 < self.share


FaultHook = Callable[[Prepared], "Fault | None"]
"""Chooses a fault for a request (or none); for chaos tooling that decides per request."""


@dataclass(kw_only=True)
class ReplayConfig:
    """Everything a replay needs besides the records."""

    target: str
    allow: Sequence[str] = ()
    baseline: str | None = None
    pacing: Pacing = field(default_factory=Pacing)
    concurrency: int = 32
    loops: int = 1
    timeout: float = 30.0
    rewrites: Rewrites = field(default_factory=Rewrites)
    send_incomplete: bool = False
    compare: CompareOptions = field(default_factory=CompareOptions)
    learn_noise: bool = False
    noise: NoiseModel | None = None
    faults: Sequence[Fault | FaultHook] = ()
    verify_tls: bool = True


@dataclass(slots=True, kw_only=True)
class ReplayResult:
    """One replayed request: what was sent, what came back, and the verdict."""

    id: str
    loop: int
    service: str
    method: str
    route: str
    target: bytes
    verdict: Verdict
    reason: str | None = None  # why skipped, or the error
    recorded_status: int | None = None
    status: int | None = None
    baseline_status: int | None = None
    differences: list[Difference] = field(default_factory=list)
    recorded_us: int = 0
    replayed_us: int | None = None
    baseline_us: int | None = None
    scheduled_at: float | None = None  # loop clock
    sent_at: float | None = None
    fault: str | None = None
    sent_incomplete: str | None = None  # the recorded body state, when a partial body was sent
    redacted_headers: int = 0  # headers sent with a redaction marker as their value
    reply: Reply | None = None
    baseline_reply: Reply | None = None
    record: Exchange | None = None

    @property
    def lateness_ms(self) -> float | None:
        """How late the first byte was written, against the schedule."""
        if self.scheduled_at is None or self.sent_at is None:
            return None
        return (self.sent_at - self.scheduled_at) * 1000


def check_allowed(url: str, allow: Sequence[str]) -> None:
    """Refuse a target that no allowlist entry names (``host``, ``host:port``, an origin or a glob)."""
    parts = urlsplit(url)
    names = {parts.netloc, parts.hostname or "", f"{parts.scheme}://{parts.netloc}"}
    for entry in allow:
        entry = entry.strip().rstrip("/")
        if any(fnmatch.fnmatchcase(name, entry) for name in names):
            return
    raise TargetNotAllowedError(
        f"The target {url} is not allowed; nothing was sent. Allow it explicitly with "
        f"--allow {parts.netloc} (or TRAFFICREEL_REPLAY_ALLOW) once you are sure it is not production."
    )


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def observed_record(record: Exchange) -> Observed:
    """The recorded response, for comparison."""
    response = record["response"]
    body = response["body"]
    return Observed(
        status=response["status"],
        headers=[(h["name"], h["value"]) for h in response["headers"]],
        body=body["data"],
        body_state=body["state"],
        body_sha256=body["sha256"],
        body_size=body["size"],
        content_type=body["content_type"],
        content_encoding=body["content_encoding"],
    )


def observed_reply(reply: Reply) -> Observed:
    """A replayed response, for comparison."""
    return Observed(
        status=reply.status,
        headers=reply.headers,
        body=reply.body,
        body_state="COMPLETE" if reply.body else "NONE",
        body_size=len(reply.body),
        content_type=_header(reply.headers, b"content-type"),
        content_encoding=_header(reply.headers, b"content-encoding"),
    )


class Replayer:
    """Replays selected records against a target (and a baseline), yielding results as they finish."""

    def __init__(self, config: ReplayConfig) -> None:
        check_allowed(config.target, config.allow)
        if config.baseline:
            check_allowed(config.baseline, config.allow)
        if config.concurrency < 1 or config.loops < 1:
            raise ValueError("Concurrency and loops must be at least 1.")
        self.config = config
        self.rewriter = Rewriter(config.rewrites)
        self.comparator = Comparator(config.compare)
        self.noise = config.noise or NoiseModel()
        self.target = Target(config.target, timeout=config.timeout, verify_tls=config.verify_tls)
        self.baseline = (
            Target(config.baseline, timeout=config.timeout, verify_tls=config.verify_tls)
            if config.baseline
            else None
        )
        self.default_host = (config.rewrites.host or self.target.netloc).encode("latin-1")

    def prepare(self, record: Exchange) -> Prepared | Skipped:
        return prepare(
            record, self.rewriter, default_host=self.default_host, send_incomplete=self.config.send_incomplete
        )

    def _schedule(self, items: Sequence[Prepared | Skipped]) -> list[float]:
        """Seconds from the start at which each item is due, across all loops."""
        pacing, count = self.config.pacing, len(items)
        if pacing.mode == "asap" or not count:
            return [0.0] * count * self.config.loops
        if pacing.mode == "rate":
            return [i / pacing.rate for i in range(count * self.config.loops)]
        starts = [item.record["start_time"] for item in items]
        first = starts[0]
        offsets = [(s - first) / 1e6 / pacing.speed for s in starts]
        span = offsets[-1] + (offsets[-1] / (count - 1) if count > 1 else 0.0)
        return [loop * span + o for loop in range(self.config.loops) for o in offsets]

    async def run(self, selected: Sequence[Selected]) -> AsyncIterator[ReplayResult]:
        """Replay ``selected`` (in the given order) ``loops`` times; yield each result when done."""
        items = [self.prepare(s.record) for s in selected]
        schedule = self._schedule(items)
        results: asyncio.Queue[ReplayResult | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.config.concurrency)
        warm = min(self.config.concurrency, max(1, len(items)), 64)
        await self.target.warm(warm)
        if self.baseline is not None:
            await self.baseline.warm(warm)
        tasks: set[asyncio.Task[None]] = set()

        async def one(item: Prepared, run: int, due: float) -> None:
            try:
                results.put_nowait(await self._one(item, run, due))
            finally:
                slots.release()

        async def dispatch() -> None:
            start = loop.time() + 0.01
            count = len(items)
            for index, offset in enumerate(schedule):
                item = items[index % count]
                run = index // count
                if isinstance(item, Skipped):
                    results.put_nowait(self._skipped(item, run))
                    continue
                due = start + offset
                delay = due - loop.time()
                if delay > _SPIN:
                    await asyncio.sleep(delay - _SPIN)
                while loop.time() < due:  # timers wake up to a millisecond late: yield until due
                    await asyncio.sleep(0)
                await slots.acquire()
                task = loop.create_task(one(item, run, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks))
            results.put_nowait(None)

        dispatcher = loop.create_task(dispatch())
        try:
            while (result := await results.get()) is not None:
                yield result
            await dispatcher
        finally:
            dispatcher.cancel()
            for task in list(tasks):
                task.cancel()
            self.target.close()
            if self.baseline is not None:
                self.baseline.close()

    def _skipped(self, item: Skipped, run: int) -> ReplayResult:
        record = item.record
        return ReplayResult(
            id=record["id"],
            loop=run,
            service=record["source"]["service"],
            method=record["request"]["method"],
            route=record["route"] or record["request"]["path"].decode("latin-1"),
            target=record["request"]["path"],
            verdict="skipped",
            reason=item.reason,
            recorded_status=record["response"]["status"],
            recorded_us=record["duration_us"],
            record=record,
        )

    def _fault(self, item: Prepared) -> Fault | None:
        for fault in self.config.faults:
            chosen = fault(item) if callable(fault) else (fault if fault.applies(item.record) else None)
            if chosen is not None:
                return chosen
        return None

    async def _send(self, target: Target, item: Prepared, cut: int | None) -> Reply:
        return await target.send(item.wire, head=item.head, cut=cut)

    async def _one(self, item: Prepared, run: int, due: float) -> ReplayResult:
        record = item.record
        route = record["route"] or item.record["request"]["path"].decode("latin-1")
        result = ReplayResult(
            id=record["id"],
            loop=run,
            service=record["source"]["service"],
            method=item.method,
            route=route,
            target=item.target,
            verdict="error",
            recorded_status=record["response"]["status"],
            recorded_us=record["duration_us"],
            scheduled_at=due,
            record=record,
            sent_incomplete=item.incomplete,
            redacted_headers=item.redacted,
        )
        fault = self._fault(item)
        cut = None
        if fault is not None:
            result.fault = f"{fault.kind}:{fault.seconds:g}s" if fault.kind == "delay" else fault.kind
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            else:
                cut = max(1, len(item.wire) // 2)
        sends: list[Awaitable[Reply]] = [self._send(self.target, item, cut)]
        if self.baseline is not None:
            sends.append(self._send(self.baseline, item, None))
        if self.config.learn_noise:
            sends.append(self._send(self.baseline or self.target, item, None))
        replies = await asyncio.gather(*sends, return_exceptions=True)
        candidate = replies[0]
        if isinstance(candidate, BaseException):
            if not isinstance(candidate, SendError):
                raise candidate
            result.reason = f"{candidate.kind}: {candidate}"
            return result
        result.reply, result.status = candidate, candidate.status
        result.sent_at, result.replayed_us = candidate.sent_at, candidate.elapsed_us
        expected = observed_record(record)
        if self.baseline is not None:
            baseline = replies[1]
            if isinstance(baseline, BaseException):
                result.reason = f"baseline {getattr(baseline, 'kind', 'error')}: {baseline}"
                return result
            result.baseline_reply, result.baseline_status = baseline, baseline.status
            result.baseline_us = baseline.elapsed_us
            expected = observed_reply(baseline)
        key = f"{item.method} {route}"
        if self.config.learn_noise:
            second = replies[-1]
            first = result.baseline_reply or candidate
            if isinstance(second, Reply):
                self.noise.learn(key, observed_reply(first), observed_reply(second))
        result.differences = self.comparator.compare(
            expected, observed_reply(candidate), noise=self.noise.noise(key)
        )
        result.verdict = "differ" if result.differences else "match"
        return result
