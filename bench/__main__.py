"""``python -m bench NAME [--quick] [--json]``: run benchmarks and print their figures.

Every figure is measured against a baseline from the same run; with ``--json`` the last line of
output is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from typing import Any

BENCHMARKS = {
    "codec": "bench.codec",
    "producer": "bench.producer",
    "streams": "bench.streams",
    "sink": "bench.sink",
    "replay": "bench.replay",
}


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run trafficreel benchmarks; each reports figures against a baseline from the same run.",
        epilog="Example: python -m bench producer --quick --json",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run, or all")
    parser.add_argument("--quick", action="store_true", help="less data and fewer rounds (for CI)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON holding every figure")
    args = parser.parse_args(argv)

    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    report: dict[str, Any] = {"machine": _machine(), "quick": args.quick, "results": {}}
    print(f"{'figure':<34} {'value':>12} {'unit':<8} {'target':>10}  met")
    for name in names:
        for fig in importlib.import_module(BENCHMARKS[name]).run(args.quick):
            target = "" if fig.target is None else f"{'<=' if fig.lower_is_better else '>='}{fig.target:g}"
            met = {None: "-", True: "yes", False: "NO"}[fig.met]
            print(f"{fig.name:<34} {fig.value:>12.2f} {fig.unit:<8} {target:>10}  {met}", flush=True)
            report["results"][fig.name] = fig.as_json()
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
