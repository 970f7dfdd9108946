"""trafficreel: record, analyse and replay the HTTP traffic of Python services on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("trafficreel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]


def _map_source_tree() -> None:
    # In a checkout, trafficreel.schemas lives in schemas/ beside this folder (pyproject.toml,
    # [tool.setuptools.package-dir]). When the checkout itself is on sys.path (`python -m bench`
    # from its root) this package is found there first, so point it at its sibling folders the
    # way an install does. An installed wheel has no pyproject.toml beside it: nothing changes.
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "schemas" / "__init__.py").is_file():
        __path__.append(str(root))


_map_source_tree()
