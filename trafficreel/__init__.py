"""trafficreel: record, analyse and replay the HTTP traffic of Python services on Kubernetes."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType

try:
    __version__ = version("trafficreel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

# Subpackages kept in folders beside this one ([tool.setuptools.package-dir] in pyproject.toml).
SOURCE_FOLDERS = ("producers", "schemas", "streams", "sinks", "replay")


class _SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Finds trafficreel.schemas & co. in their checkout folders, as an install would.

    Only needed when a checkout itself is on sys.path (``python -m bench`` or pytest from its
    root): this package is then found there before any installed copy, and its subpackages live
    in sibling folders, not inside it.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, leaf = fullname.rpartition(".")
        if parent != __name__ or leaf not in SOURCE_FOLDERS:
            return None
        folder = self._root / leaf
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def _map_source_tree() -> None:
    root = Path(__file__).resolve().parent.parent
    # An installed wheel has no pyproject.toml beside it, and then nothing changes.
    in_checkout = (root / "pyproject.toml").is_file() and (root / "schemas" / "__init__.py").is_file()
    if in_checkout and not any(isinstance(f, _SourceTreeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceTreeFinder(root))


_map_source_tree()
