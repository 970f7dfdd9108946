"""Sampling: deterministic per trace, caps per route with honest weights, errors and slow kept."""

from __future__ import annotations

from trafficreel.streams import Sampler, SamplingPolicy, head_hash

from .support import exchange


def _traced(seed: int, trace: str, **kw: object) -> dict:
    record = exchange(seed, **kw)  # type: ignore[arg-type]
    record["trace"]["trace_id"] = trace
    return record  # type: ignore[return-value]


def test_head_sampling_is_deterministic_and_keeps_traces_whole() -> None:
    """Two samplers (two workers, or before and after a restart) decide alike; a trace is kept or dropped whole."""
    policy = SamplingPolicy(rate=0.3, slow_ms=None)
    a, b = Sampler(policy), Sampler(policy)
    traces = [f"{i:032x}" for i in range(400)]
    for trace in traces:
        decisions = {a.decide(_traced(s, trace), "business", "/r").keep for s in range(3)}
        decisions |= {b.decide(_traced(7, trace), "business", "/r").keep}
        assert len(decisions) == 1
    kept = sum(a.decide(_traced(1, t), "business", "/r").keep for t in traces)
    assert 80 < kept < 160  # about 30 %
    assert head_hash("x") == head_hash("x") and 0 <= head_hash("x") < 1


def test_kept_records_weigh_the_inverse_rate_per_class() -> None:
    """A record kept at rate r weighs 1/r; per-class rates apply."""
    sampler = Sampler(SamplingPolicy(rate=1.0, class_rates={"probe": 0.25}, slow_ms=None))
    weights = {sampler.decide(_traced(1, f"{i:032x}"), "probe", "/healthz").weight for i in range(200)}
    assert weights == {0.0, 4.0}
    assert sampler.decide(_traced(1, "ab" * 16), "business", "/r").weight == 1.0


def test_errors_and_slow_exchanges_are_always_kept() -> None:
    """5xx, handler exceptions, disconnects and slow exchanges pass even at rate 0, with weight 1."""
    sampler = Sampler(SamplingPolicy(rate=0.0, slow_ms=500, slow_ms_routes={"/search": 2000}))
    error = _traced(1, "a" * 32, status=503)
    raised = _traced(1, "b" * 32)
    raised["outcome"]["kind"] = "RAISED"
    slow = _traced(1, "c" * 32, duration_us=600_000)
    slow_search = _traced(1, "d" * 32, duration_us=600_000)
    assert sampler.decide(error, "business", "/r").reason == "error"
    assert sampler.decide(raised, "business", "/r").reason == "error"
    assert sampler.decide(slow, "business", "/r").reason == "slow"
    assert sampler.decide(slow_search, "business", "/search").keep is False  # its own threshold is 2 s


def test_caps_bound_hot_routes_and_weights_add_up() -> None:
    """Past the cap a hot route keeps a shrinking share, a rare route keeps all, and weights sum to the true count."""
    store: dict = {}
    sampler = Sampler(SamplingPolicy(cap=100, window_seconds=60, slow_ms=None), store)
    hot = [sampler.decide(_traced(i, f"{i:032x}"), "business", "/hot") for i in range(5000)]
    rare = [sampler.decide(_traced(i, f"{i:032x}"), "business", "/rare") for i in range(50)]
    kept_hot = [d for d in hot if d.keep]
    assert len(kept_hot) < 500
    assert abs(sum(d.weight for d in kept_hot) - 5000) < 5000 * 0.05
    assert all(d.keep and d.weight == 1.0 for d in rare)
    # The counts live in the store: a new sampler on the same store (a restarted worker) goes on capping.
    again = Sampler(SamplingPolicy(cap=100, window_seconds=60, slow_ms=None), store)
    assert again.decide(_traced(6000, "f" * 32), "business", "/hot").reason in ("cap", "sampled")
    assert sum(again.decide(_traced(i, f"{i:032x}"), "business", "/hot").keep for i in range(6000, 6100)) < 20


def test_a_new_window_starts_afresh() -> None:
    """Caps count per window of record start time."""
    sampler = Sampler(SamplingPolicy(cap=2, window_seconds=1, slow_ms=None))
    first = [
        sampler.decide(_traced(i, f"{i:032x}"), "business", "/r") for i in range(5)
    ]  # seeds 0-4: same second
    assert [d.keep for d in first[:2]] == [True, True]
    later = _traced(5000, "e" * 32)  # sample seeds are 1 ms apart: 5 s later
    assert sampler.decide(later, "business", "/r").weight == 1.0


def test_interleaved_windows_keep_their_own_counts() -> None:
    """Records of two neighbouring windows arriving interleaved (a window boundary, a draining
    backlog) are capped per window: an older record does not restart the newer window's count."""
    sampler = Sampler(SamplingPolicy(cap=10, window_seconds=1, slow_ms=None))
    kept = 0
    for i in range(1000):
        seed = i % 2 * 1000 + i // 2 % 1000  # alternately second 0 and second 1 (seeds are 1 ms apart)
        kept += sampler.decide(_traced(seed, f"{i:032x}"), "business", "/r").keep
    # 500 records per window, cap 10: 10 at full weight, then 1 in 2, 4, … 64 -> about 2 x 40.
    assert kept < 100
