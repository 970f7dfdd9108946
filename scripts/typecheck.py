"""Run mypy (strict) on the package as it is installed: trafficreel.producers from producers/ ...

The import names differ from the folder names ([tool.setuptools.package-dir] in pyproject.toml),
which mypy cannot map by itself, so this builds a tree of symbolic links in .typecheck/ with the
installed layout and checks that. Usage: python scripts/typecheck.py [mypy options]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_tree() -> Path:
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    tree = ROOT / ".typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / "trafficreel"
    package.mkdir(parents=True)
    for entry in (ROOT / mapping["trafficreel"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        if name != "trafficreel":
            (tree / name.replace(".", "/")).symlink_to(ROOT / folder, target_is_directory=True)
    return tree


def main() -> int:
    tree = build_tree()
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        *sys.argv[1:],
        "-p",
        "trafficreel",
    ]
    return subprocess.call(cmd, cwd=tree)


if __name__ == "__main__":
    sys.exit(main())
