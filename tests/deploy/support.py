"""What the deploy/ tests share: where things are, Helm's rendering, manifest validation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import typer
import yaml

from trafficreel.cli import app as cli_app
from trafficreel.config import ENV_PREFIX, Settings
from trafficreel.producers import RecorderConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "trafficreel"
VALUES_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
EXAMPLE_APP = DEPLOY / "examples" / "recorded-app"
RELEASE, NAMESPACE = "trafficreel", "trafficreel"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas bundled.
KUBE_VERSIONS = ("1.29", kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version()))
SETTINGS_ENV = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
RECORDER_ENV = {env for env, _, _ in RecorderConfig.describe()}
DOWNWARD_API = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "NODE_NAME": "spec.nodeName",
}
POD_FIELDS = {"metadata.name": "orders-7d4b9-x2x9k", "metadata.namespace": "shop", "spec.nodeName": "node-a"}
# Values that must fail the render, with the message an operator sees.
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "sasl-without-password": (
        {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"username": "u"}}},
        "kafka.sasl",
    ),
    "clickhouse-auth-without-password": ({"clickhouse": {"auth": {"enabled": True}}}, "clickhouse.auth"),
    "misspelt-key": ({"kafka": {"partitons": 3}}, "partitons"),
    "unknown-protocol": ({"kafka": {"securityProtocol": "TLS"}}, "securityProtocol"),
}

# Helm runs in a child process: its Go runtime installs signal handlers that do not belong in pytest.
HELM_SCRIPT = """
import json, sys
import helm_python as helm
request = json.load(sys.stdin)
result = {"rendered": {}, "errors": {}, "lint": {}}
with helm.Chart.load(request["chart"]) as chart:
    for key, values in request["values"].items():
        try:
            result["rendered"][key] = chart.render(values, name=request["release"], namespace=request["namespace"])
        except helm.HelmError as exc:
            result["errors"][key] = str(exc)
for key in request["lint"]:
    result["lint"][key] = helm.lint(request["chart"], request["values"][key], strict=True, namespace=request["namespace"])
json.dump(result, sys.stdout)
"""


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def docs_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


class Render:
    """The manifests of one values file, with the merged values that produced them."""

    def __init__(self, name: str, values: dict[str, Any], templates: dict[str, str]) -> None:
        self.name = name
        self.values = values
        self.docs = [
            doc
            for template, text in sorted(templates.items())
            if template.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        return found

    def settings(self) -> dict[str, str]:
        return self.one("ConfigMap", f"{RELEASE}-settings")["data"]

    def workloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "Job"):
                yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]

    def secret_value(self, name: str, key: str) -> str:
        """A rendered Secret's value, else a stand-in for a Secret the operator manages."""
        for doc in self.of("Secret"):
            if doc["metadata"]["name"] == name:
                return str(doc.get("stringData", {})[key])
        return f"pw-{name}-{key}".replace(".", "-")

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet builds it: envFrom, then env with $(VAR) expanded."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(self.one("ConfigMap", source["configMapRef"]["name"])["data"])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            elif "secretKeyRef" in var["valueFrom"]:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.secret_value(ref["name"], ref["key"])
            else:
                env[var["name"]] = POD_FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        return env


def expand(value: str, env: dict[str, str]) -> str:
    # Kubernetes' dependent variables: $(NAME) of an earlier variable, $$ for a literal $.
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted((DEPLOY / "schemas").glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


CRD_SCHEMAS = _crd_schemas()


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Why a manifest is invalid: CRD kinds against deploy/schemas/, the rest against Kubernetes'."""
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    schema = CRD_SCHEMAS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if schema is not None:
        errors = jsonschema.Draft202012Validator(schema).iter_errors(doc)
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    problems = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: no schema to validate it: {exc.message}")
    return problems


def cli_context(argv: list[str]) -> Any:
    """Parse a `trafficreel ...` command line as the CLI would, without running it (a click Context)."""
    command: Any = typer.main.get_command(cli_app)
    args = list(argv)
    # typer may bring its own click: groups are recognised by their commands, not by class.
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in command.commands, f"trafficreel has no command {name!r}"
        command = command.commands[name]
    return command.make_context("trafficreel", args)


def container_of(render: Render, workload: str) -> dict[str, Any]:
    (container,) = render.one("Deployment", f"{RELEASE}-{workload}")["spec"]["template"]["spec"]["containers"]
    return container


def assert_hardened(workload: str, pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, workload
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, workload
        assert ctx["allowPrivilegeEscalation"] is False, workload
        assert ctx["capabilities"]["drop"] == ["ALL"], workload
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), workload
        assert "memory" in container["resources"]["limits"], workload
