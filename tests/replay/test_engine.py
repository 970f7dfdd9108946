"""The replay engine against local targets: allowlist, pacing, loops, comparison, noise, faults."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from trafficreel.replay import (
    Fault,
    Pacing,
    ReplayConfig,
    Replayer,
    ReplayResult,
    Selected,
    TargetNotAllowedError,
)
from trafficreel.replay.testing import Captured, CaptureServer, fixed_response

from .support import record


def _selected(records: Sequence[Any]) -> list[Selected]:
    return [Selected(r, "t", 0, i) for i, r in enumerate(records)]


def _run(config: ReplayConfig, records: Sequence[Any]) -> list[ReplayResult]:
    async def main() -> list[ReplayResult]:
        return [r async for r in Replayer(config).run(_selected(records))]

    return asyncio.run(main())


def _json_responder(make: Any) -> Any:
    def respond(request: Captured) -> bytes:
        body = json.dumps(make(request)).encode()
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )

    return respond


def test_a_target_not_allowed_is_refused_before_any_request() -> None:
    """Without an allowlist entry for the target nothing is sent and the error says how to allow it."""

    async def main() -> None:
        async with CaptureServer() as server:
            with pytest.raises(TargetNotAllowedError, match=r"--allow 127\.0\.0\.1"):
                Replayer(ReplayConfig(target=server.url, allow=["staging.svc", "10.0.0.1:80"]))
            with pytest.raises(TargetNotAllowedError):
                Replayer(ReplayConfig(target=server.url, allow=["127.0.0.1"], baseline="http://prod.svc:80"))
            assert server.requests == []
            Replayer(ReplayConfig(target=server.url, allow=["127.0.0.*"]))  # globs work

    asyncio.run(main())


def test_original_pacing_scaled_by_speed() -> None:
    """Requests go out at their recorded offsets divided by the speed factor, in recorded order."""
    base = 1_780_000_000_000_000
    offsets_ms = [0, 100, 300, 400]
    records = [record(i, path=b"/p/%d" % i, start_us=base + o * 1000) for i, o in enumerate(offsets_ms)]

    async def main() -> list[ReplayResult]:
        async with CaptureServer() as server:
            config = ReplayConfig(target=server.url, allow=["127.0.0.1"], pacing=Pacing(speed=2.0))
            results = [r async for r in Replayer(config).run(_selected(records))]
            assert [c.target for c in server.requests] == [b"/p/0", b"/p/1", b"/p/2", b"/p/3"]
            return results

    results = sorted(asyncio.run(main()), key=lambda r: r.target)
    sent = [r.sent_at for r in results]
    assert all(s is not None for s in sent)
    gaps = [(b - sent[0]) * 1000 for b in sent]  # type: ignore[operator]
    for gap, expected in zip(gaps, [0, 50, 150, 200], strict=True):
        assert expected - 5 <= gap <= expected + 40


def test_fixed_rate_and_loops() -> None:
    """A fixed rate spaces requests evenly; loops replay the selection again, counted per loop."""
    records = [record(i, path=b"/r/%d" % i) for i in range(10)]

    async def main() -> list[ReplayResult]:
        async with CaptureServer() as server:
            config = ReplayConfig(
                target=server.url, allow=["127.0.0.1"], pacing=Pacing(mode="rate", rate=200), loops=2
            )
            results = [r async for r in Replayer(config).run(_selected(records))]
            assert len(server.requests) == 20
            return results

    results = asyncio.run(main())
    assert sorted(r.loop for r in results) == [0] * 10 + [1] * 10
    sent = sorted(r.sent_at for r in results if r.sent_at is not None)
    assert (sent[-1] - sent[0]) >= 19 / 200 - 0.005


def test_comparison_against_the_recorded_response() -> None:
    """Same status and JSON body is a match; a changed field is a difference at its JSON path."""
    records = [
        record(1, path=b"/same", response_body=b'{"n": 1, "tags": ["a"]}'),
        record(2, path=b"/changed", response_body=b'{"n": 1, "tags": ["a"]}'),
    ]
    responder = _json_responder(lambda r: {"n": 2 if r.target == b"/changed" else 1, "tags": ["a"]})

    async def main() -> list[ReplayResult]:
        async with CaptureServer(responder) as server:
            config = ReplayConfig(target=server.url, allow=["127.0.0.1"], pacing=Pacing(mode="asap"))
            return [r async for r in Replayer(config).run(_selected(records))]

    verdicts = {r.target: r for r in asyncio.run(main())}
    assert verdicts[b"/same"].verdict == "match"
    changed = verdicts[b"/changed"]
    assert changed.verdict == "differ"
    assert [d.location for d in changed.differences] == ["body:$.n"]


def test_noise_learned_from_the_baseline_is_ignored_for_the_candidate() -> None:
    """Generated ids differ between two baseline replies and are ignored; a real change still shows."""
    records = [record(i, path=b"/orders/%d" % i, route="/orders/{id}") for i in range(6)]
    baseline = _json_responder(lambda r: {"id": str(uuid.uuid4()), "total": 10})
    candidate = _json_responder(
        lambda r: {"id": str(uuid.uuid4()), "total": 11 if r.target == b"/orders/3" else 10}
    )

    async def main() -> tuple[list[ReplayResult], dict[str, list[str]]]:
        async with CaptureServer(baseline) as base, CaptureServer(candidate) as cand:
            config = ReplayConfig(
                target=cand.url,
                baseline=base.url,
                allow=["127.0.0.1"],
                pacing=Pacing(mode="asap"),
                learn_noise=True,
            )
            replayer = Replayer(config)
            results = [r async for r in replayer.run(_selected(records))]
            assert len(base.requests) == 12 and len(cand.requests) == 6  # twice to the baseline
            return results, replayer.noise.to_json()

    results, noise = asyncio.run(main())
    by_target = {r.target: r for r in results}
    assert by_target[b"/orders/3"].verdict == "differ"
    assert [d.location for d in by_target[b"/orders/3"].differences] == ["body:$.total"]
    assert all(r.verdict == "match" for t, r in by_target.items() if t != b"/orders/3")
    assert "body:$.id" in noise["GET /orders/{id}"]


def test_faults_hit_the_same_share_every_run_and_hooks_choose_per_request() -> None:
    """Aborts hit a repeatable share of requests; a hook can delay chosen ones."""
    records = [record(i, path=b"/f/%d" % i) for i in range(40)]

    def run(faults: list[Any]) -> list[ReplayResult]:
        async def main() -> list[ReplayResult]:
            async with CaptureServer(fixed_response(200, b'{"ok": true}')) as server:
                config = ReplayConfig(
                    target=server.url, allow=["127.0.0.1"], pacing=Pacing(mode="asap"), faults=faults
                )
                return [r async for r in Replayer(config).run(_selected(records))]

        return asyncio.run(main())

    first = run([Fault(kind="abort", share=0.5)])
    aborted = {r.id for r in first if r.verdict == "error"}
    assert 8 <= len(aborted) <= 32
    assert all((r.reason or "").startswith("aborted") for r in first if r.verdict == "error")
    assert aborted == {r.id for r in run([Fault(kind="abort", share=0.5)]) if r.verdict == "error"}

    def hook(prepared: Any) -> Fault | None:
        return Fault(kind="delay", seconds=0.05) if prepared.target == b"/f/7" else None

    delayed = [r for r in run([hook]) if r.fault]
    assert [(r.target, r.fault) for r in delayed] == [(b"/f/7", "delay:0.05s")]


def test_records_without_a_whole_request_body_are_skipped_not_sent() -> None:
    """A digest-only request body yields a skipped result with the reason; nothing is sent for it."""
    records = [record(1, method="POST", body=b"x", state="NOT_KEPT"), record(2)]

    async def main() -> list[ReplayResult]:
        async with CaptureServer(fixed_response(200, b'{"ok": true}')) as server:
            config = ReplayConfig(target=server.url, allow=["127.0.0.1"], pacing=Pacing(mode="asap"))
            results = [r async for r in Replayer(config).run(_selected(records))]
            assert len(server.requests) == 1
            return results

    verdicts = sorted((r.verdict, r.reason) for r in asyncio.run(main()))
    assert verdicts == [("match", None), ("skipped", "request-body-not-kept")]


def test_incomplete_bodies_sent_on_request_are_counted() -> None:
    """With send_incomplete the kept part is sent, and the summary counts it by body state."""
    from trafficreel.replay import Summary

    records = [record(1, method="POST", body=b"part", state="TRUNCATED")]

    async def main() -> list[ReplayResult]:
        async with CaptureServer(fixed_response(200, b'{"ok": true}')) as server:
            config = ReplayConfig(
                target=server.url, allow=["127.0.0.1"], pacing=Pacing(mode="asap"), send_incomplete=True
            )
            results = [r async for r in Replayer(config).run(_selected(records))]
            assert [c.body for c in server.requests] == [b"part"]
            return results

    summary = Summary()
    for result in asyncio.run(main()):
        summary.add(result)
    assert summary.to_json()["sent_incomplete"] == {"request-body-truncated": 1}
