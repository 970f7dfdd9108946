"""Helm renders every values file once per test session."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from .support import (
    BAD_VALUES,
    CHART,
    HELM_SCRIPT,
    NAMESPACE,
    RELEASE,
    VALUES_FILES,
    Render,
    merge,
    read_yaml,
)


@pytest.fixture(scope="session")
def helm_result() -> dict[str, Any]:
    """Every shipped values file and every bad one, rendered (and the good ones linted) by Helm."""
    values = {name: read_yaml(CHART / "ci" / name) or {} for name in VALUES_FILES}
    values.update({key: bad for key, (bad, _) in BAD_VALUES.items()})
    request = {
        "chart": str(CHART),
        "release": RELEASE,
        "namespace": NAMESPACE,
        "values": values,
        "lint": VALUES_FILES,
    }
    proc = subprocess.run(
        [sys.executable, "-c", HELM_SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="session")
def renders(helm_result: dict[str, Any]) -> dict[str, Render]:
    """The manifests of each shipped values file."""
    defaults = read_yaml(CHART / "values.yaml")
    missing = {name: helm_result["errors"][name] for name in VALUES_FILES if name in helm_result["errors"]}
    assert not missing, missing
    return {
        name: Render(
            name, merge(defaults, read_yaml(CHART / "ci" / name) or {}), helm_result["rendered"][name]
        )
        for name in VALUES_FILES
    }
