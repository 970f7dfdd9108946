"""`python -m bench NAME --quick --json` runs from the repository root and ends with one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_codec_quick_json() -> None:
    """The codec benchmark prints a table and, last, JSON with each figure, its baseline and its target."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "codec", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["quick"] is True
    for name in ("codec.encode_vs_fastavro", "codec.decode_vs_fastavro"):
        figure = report["results"][name]
        assert figure["candidate_per_s"] > 0 and figure["baseline_per_s"] > 0
        assert abs(figure["value"] - figure["candidate_per_s"] / figure["baseline_per_s"]) < 0.01
        assert figure["met"] == (figure["value"] >= figure["target"])
    assert report["results"]["codec.encode_vs_fastavro"]["record_bytes_median"] > 0
