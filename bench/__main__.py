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
from pathlib import Path
from typing import Any

BENCHMARKS = {
    "codec": "bench.codec",
    "producer": "bench.producer",
    "streams": "bench.streams",
    "sink": "bench.sink",
    "replay": "bench.replay",
}


ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = "docs/benchmarks.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


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
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help=f"write the figures table into this Markdown page (default for `all`: {DOCS_PAGE})",
    )
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
    page = args.docs or (ROOT / DOCS_PAGE if args.name == "all" else None)
    if page is not None:
        write_docs(page, report, " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]))
        print(f"figures written to {page}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
    return 0


def _detail(figure: dict[str, Any]) -> str:
    skip = {"value", "unit", "target", "target_is_max", "met"}
    return ", ".join(f"{k} {v}" for k, v in figure.items() if k not in skip)


def write_docs(page: Path, report: dict[str, Any], command: str) -> None:
    """Put the figures table between the page's markers (the page is created if missing)."""
    machine = report["machine"]
    lines = [
        START,
        f"Measured with `{command}`{' (quick mode: less data, fewer rounds)' if report['quick'] else ''} "
        f"on {machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}.",
        "",
        "| figure | value | target | met | baseline and details (same run) |",
        "|---|---|---|---|---|",
    ]
    for name, fig in report["results"].items():
        target = "" if fig["target"] is None else f"{'≤' if fig['target_is_max'] else '≥'} {fig['target']:g}"
        met = {None: "", True: "yes", False: "**no**"}[fig["met"]]
        lines.append(f"| `{name}` | {fig['value']:g} {fig['unit']} | {target} | {met} | {_detail(fig)} |")
    lines.append(END)
    block = "\n".join(lines)
    text = page.read_text() if page.exists() else "# Benchmarks\n\n" + START + "\n" + END + "\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + "\n\n" + START + "\n" + END + "\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(before + block + after)


if __name__ == "__main__":
    sys.exit(main())
