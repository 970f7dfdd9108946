"""`python -m bench NAME --quick --json` runs from the repository root and ends with one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _quick_json(name: str) -> dict[str, Any]:
    """Run `python -m bench NAME --quick --json` from the root; the JSON object it printed last."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_bench_codec_quick_json() -> None:
    """The codec benchmark prints a table and, last, JSON with each figure, its baseline and its target."""
    report = _quick_json("codec")
    assert report["quick"] is True
    for name in ("codec.encode_vs_fastavro", "codec.decode_vs_fastavro"):
        figure = report["results"][name]
        assert figure["candidate_per_s"] > 0 and figure["baseline_per_s"] > 0
        assert abs(figure["value"] - figure["candidate_per_s"] / figure["baseline_per_s"]) < 0.01
        assert figure["met"] == (figure["value"] >= figure["target"])
    assert report["results"]["codec.encode_vs_fastavro"]["record_bytes_median"] > 0


def test_bench_streams_quick_json() -> None:
    """The streams benchmark runs a real worker and the plain loop over the same input and reports both."""
    results = _quick_json("streams")["results"]
    faust, plain, ratio = (results[f"streams.{n}"] for n in ("faust_rps", "plain_rps", "ratio"))
    assert faust["value"] > 0 and plain["value"] > 0
    assert abs(ratio["value"] - faust["value"] / plain["value"]) < 0.01
    assert faust["target"] == 20_000 and ratio["target"] == 0.5


def test_bench_sink_quick_json() -> None:
    """The sink benchmark loads through a real sink and inserts the same rows directly, and reports both."""
    results = _quick_json("sink")["results"]
    sink, engine, ratio = (results[f"sink.{n}"] for n in ("rows_per_s", "engine_rows_per_s", "ratio"))
    assert sink["value"] > 0 and engine["value"] > 0
    assert abs(ratio["value"] - sink["value"] / engine["value"]) < 0.01
    assert 30 < results["sink.peak_rss_mib"]["value"] < 4096  # a real process's peak, in MiB
    assert ratio["target"] == 0.8
    # end to end at 1,000 requests/s: every row arrives, the latency figures are ordered
    p50, p99, most = (results[f"sink.e2e_{n}_ms"] for n in ("p50", "p99", "max"))
    assert results["sink.e2e_rows_missing"]["value"] == 0
    assert results["sink.e2e_rate"]["value"] > 900
    assert 0 < p50["value"] <= p99["value"] <= most["value"]
    assert p99["target"] == 2000 and p99["target_is_max"] is True


def test_bench_replay_quick_json() -> None:
    """The replay benchmark measures req/s against aiohttp and pacing lateness against the timer floor."""
    results = _quick_json("replay")["results"]
    rps, base, ratio = (results[f"replay.{n}"] for n in ("rps", "aiohttp_rps", "ratio_vs_aiohttp"))
    assert rps["value"] > 0 and base["value"] > 0
    assert abs(ratio["value"] - rps["value"] / base["value"]) < 0.01
    pacing = results["replay.pacing_p99_ms"]
    assert pacing["target"] == 2.0 and pacing["target_is_max"] is True
    assert pacing["requests"] == 2500 and 0 <= pacing["p50_ms"] <= pacing["value"] <= pacing["max_ms"]
    assert results["replay.timer_p99_ms"]["value"] > 0


def test_bench_all_writes_the_figures_between_the_page_markers(tmp_path: Path) -> None:
    """The figures table replaces what was between the markers; the rest of the page stays."""
    from bench.__main__ import END, START, write_docs

    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\nafter\n")
    report = {
        "machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux"},
        "quick": False,
        "results": {
            "replay.rps": {"value": 11495.5, "unit": "req/s", "target": 5000, "target_is_max": False, "met": True},
            "replay.pacing_p99_ms": {
                "value": 5.3, "unit": "ms", "target": 2.0, "target_is_max": True, "met": False, "p50_ms": 0.4,
            },
        },
    }  # fmt: skip
    write_docs(page, report, "python -m bench all --json")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and "`python -m bench all --json`" in text and "2 CPUs" in text
    assert "| `replay.rps` | 11495.5 req/s | ≥ 5000 | yes |" in text
    assert "| `replay.pacing_p99_ms` | 5.3 ms | ≤ 2 | **no** | p50_ms 0.4 |" in text
