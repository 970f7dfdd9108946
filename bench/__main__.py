"""``python -m bench NAME [--quick] [--json]``: run benchmarks and print medians and ratios.

With ``--json`` the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from typing import Any

BENCHMARKS = {"codec": "bench.codec"}


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run trafficreel benchmarks; each reports medians against a baseline from the same run.",
        epilog="Example: python -m bench codec --quick --json",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run, or all")
    parser.add_argument("--quick", action="store_true", help="less data and fewer rounds (for CI)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON holding every figure")
    args = parser.parse_args(argv)

    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    report: dict[str, Any] = {"machine": _machine(), "quick": args.quick, "results": {}}
    failed = []
    print(f"{'benchmark':<18} {'candidate/s':>14} {'baseline/s':>14} {'ratio':>7} {'target':>7}  met")
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        comparisons, extra = module.run(args.quick)
        for c in comparisons:
            print(
                f"{c.name:<18} {c.candidate:>14,.0f} {c.baseline:>14,.0f} {c.ratio:>7.2f} {c.target:>7.2f}  "
                f"{'yes' if c.met else 'NO'}"
            )
            report["results"][c.name] = {
                "unit": c.unit,
                "candidate_per_s": round(c.candidate, 1),
                "baseline_per_s": round(c.baseline, 1),
                "ratio": round(c.ratio, 4),
                "target_ratio": c.target,
                "met": c.met,
            }
            if not c.met:
                failed.append(c.name)
        report["results"][f"{name}.details"] = extra
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    if failed:
        print(f"below target: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
