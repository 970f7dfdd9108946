"""Packaging: the wheel maps folders to trafficreel.* import names, ships the schemas, and keeps the recorder light."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = (
    "import trafficreel, trafficreel.schemas as s, trafficreel.producers, trafficreel.streams, "
    "trafficreel.sinks, trafficreel.replay, trafficreel.stack; "
    "r = s.sample_exchange(1); assert s.Deserializer()(s.Serializer()(r)) == r; "
    "print(s.__file__)"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("trafficreel-*.whl")
    return built


def test_wheel_maps_folders_to_import_names(wheel: Path) -> None:
    """The wheel holds trafficreel/schemas/exchange.v1.avsc and no top-level schemas or producers package."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "trafficreel/schemas/exchange.v1.avsc" in names
    assert "trafficreel/producers/__init__.py" in names
    assert "trafficreel/py.typed" in names
    top_levels = {n.split("/")[0] for n in names if not n.startswith("trafficreel-")}
    assert top_levels == {"trafficreel"}


def test_recording_needs_only_kafka_and_avro(wheel: Path) -> None:
    """Installing trafficreel without extras pulls in confluent-kafka and fastavro, nothing else."""
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    required = sorted(
        r.split(">")[0].split("=")[0].strip()
        for r in meta.get_all("Requires-Dist") or []
        if "extra ==" not in r
    )
    assert required == ["confluent-kafka", "fastavro"]
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"registry", "cli", "stream", "sink", "replay", "local", "dev", "all"} <= extras


def test_installed_wheel_imports_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """The wheel, installed into a fresh folder, imports and round-trips a record from anywhere."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target / "trafficreel" / "schemas" / "__init__.py")


def test_checkout_imports_from_its_folders(tmp_path: Path) -> None:
    """In this environment (editable install or the checkout on sys.path), trafficreel.schemas is schemas/."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(ROOT / "schemas" / "__init__.py")
    from_root = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert from_root.returncode == 0, from_root.stderr
    assert from_root.stdout.strip() == str(ROOT / "schemas" / "__init__.py")


def test_source_folders_match_pyproject() -> None:
    """The checkout's folder map in trafficreel/__init__.py is the one pyproject.toml declares."""
    import tomllib

    import trafficreel

    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    declared = {name.split(".", 1)[1]: folder for name, folder in mapping.items() if name != "trafficreel"}
    assert declared == {leaf: leaf for leaf in trafficreel.SOURCE_FOLDERS}
