"""The Helm chart renders for every values file, lints clean, and every manifest is valid
(core kinds against Kubernetes' JSON schemas, strictly; the operators' kinds against deploy/schemas/)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .support import BAD_VALUES, CRD_SCHEMAS, DEPLOY, RELEASE, VALUES_FILES, Render, docs_of, schema_errors

# -- rendering and schema validation -----------------------------------------------------------


def test_helm_renders_every_values_file_and_lints_clean(helm_result: dict[str, Any]) -> None:
    """Helm renders each ci/*-values.yaml, and `helm lint --strict` reports no warning or error."""
    assert VALUES_FILES, "no values files under deploy/helm/trafficreel/ci/"
    assert not {
        name: helm_result["errors"].get(name) for name in VALUES_FILES if name in helm_result["errors"]
    }
    for name in VALUES_FILES:
        lint = helm_result["lint"][name]
        assert lint["errors"] == [], (name, lint)
        # Helm's severities: 1 info, 2 warning, 3 error.
        assert [m for m in lint["messages"] if m["severity"] >= 2] == [], (name, lint)


@pytest.mark.parametrize(("key", "message"), [(k, m) for k, (_, m) in BAD_VALUES.items()])
def test_bad_values_fail_the_render_with_a_message(
    helm_result: dict[str, Any], key: str, message: str
) -> None:
    """Missing credentials, misspelt keys and unknown protocols stop the install, naming the value."""
    assert key in helm_result["errors"], f"{key} rendered without error"
    assert message in helm_result["errors"][key]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_every_rendered_manifest_is_valid(renders: dict[str, Render], name: str) -> None:
    """Each manifest of a values file validates against the Kubernetes schemas or deploy/schemas/."""
    render = renders[name]
    assert render.docs
    problems = [p for doc in render.docs for p in schema_errors(doc)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("path", ["kafka/topics.yaml", "examples/recorded-app/deployment.yaml"])
def test_plain_manifests_are_valid(path: str) -> None:
    """The manifests applied with kubectl as they are validate like the chart's."""
    docs = docs_of(DEPLOY / path)
    assert docs
    problems = [p for doc in docs for p in schema_errors(doc)]
    assert problems == [], "\n".join(problems)


def test_validation_is_strict(renders: dict[str, Render]) -> None:
    """A misspelt field fails validation, for core kinds and for the operators' kinds alike."""
    render = renders["production-values.yaml"]
    deployment = json.loads(json.dumps(render.one("Deployment", f"{RELEASE}-stream")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert schema_errors(deployment)
    for _, kind in CRD_SCHEMAS:
        doc = json.loads(json.dumps(render.of(kind)[0]))
        doc["spec"]["replicaz"] = 1
        assert schema_errors(doc), kind


def test_operator_pod_and_volume_templates_are_valid_core_specs(renders: dict[str, Render]) -> None:
    """The ClickHouseInstallation's pod and volume claim templates validate as a Pod and a PVC spec."""
    (chi,) = renders["production-values.yaml"].of("ClickHouseInstallation")
    docs = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": t["name"]}, "spec": t["spec"]}
        for t in chi["spec"]["templates"]["podTemplates"]
    ] + [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": t["name"]},
            "spec": t["spec"],
        }
        for t in chi["spec"]["templates"]["volumeClaimTemplates"]
    ]
    assert [p for doc in docs for p in schema_errors(doc)] == []


def test_values_files_cover_every_optional_part(renders: dict[str, Render]) -> None:
    """The shipped values turn on every optional resource; the defaults need no operator at all."""
    kinds = {doc["kind"] for render in renders.values() for doc in render.docs}
    assert kinds >= {"ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "Job"}
    assert kinds >= {"PodDisruptionBudget", *(kind for _, kind in CRD_SCHEMAS)}
    # deploy/schemas/ has exactly one schema per custom kind the chart renders.
    custom = {(d["apiVersion"], d["kind"]) for r in renders.values() for d in r.docs if _is_custom(d)}
    assert set(CRD_SCHEMAS) == custom
    assert len(list((DEPLOY / "schemas").glob("*.json"))) == len(CRD_SCHEMAS)
    assert not [d["kind"] for d in renders["default-values.yaml"].docs if _is_custom(d)]


def _is_custom(doc: dict[str, Any]) -> bool:
    return "." in doc["apiVersion"].split("/")[0]
