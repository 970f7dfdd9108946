"""deploy/: the Helm chart, the compose file and the examples are valid and agree with the code.

Every values file under deploy/helm/trafficreel/ci/ is rendered by Helm's own engine (the Helm SDK,
through helm-python-sdk) and every manifest is validated offline: core kinds against the Kubernetes
JSON schemas bundled by kubernetes-validate (strict: unknown fields fail), the operators' kinds
against deploy/schemas/. The compose file is validated against the Compose Specification schema
bundled by check-jsonschema. The other tests pin what operators rely on: probes, settings, Secrets,
topics, autoscaling and the recorder's Downward API environment.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from tests.conftest import CLICKHOUSE_IMAGE, KAFKA_IMAGE, Infra
from trafficreel.cli import app as cli_app
from trafficreel.config import ENV_PREFIX, Settings, load_settings
from trafficreel.producers import RecorderConfig, TrafficRecorder
from trafficreel.producers._metadata import detect_source
from trafficreel.sinks import MIGRATIONS
from trafficreel.streams import StreamRules, load_rules
from trafficreel.topics import project_topics

ROOT = Path(__file__).resolve().parent.parent
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
_HELM = """
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


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _docs(path: Path) -> list[dict[str, Any]]:
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
                env[var["name"]] = _expand(var["value"], env)
            elif "secretKeyRef" in var["valueFrom"]:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.secret_value(ref["name"], ref["key"])
            else:
                env[var["name"]] = POD_FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        return env


def _expand(value: str, env: dict[str, str]) -> str:
    # Kubernetes' dependent variables: $(NAME) of an earlier variable, $$ for a literal $.
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)


@pytest.fixture(scope="session")
def helm_result() -> dict[str, Any]:
    """Every shipped values file and every bad one, rendered (and the good ones linted) by Helm."""
    values = {name: _read_yaml(CHART / "ci" / name) or {} for name in VALUES_FILES}
    values.update({key: bad for key, (bad, _) in BAD_VALUES.items()})
    request = {
        "chart": str(CHART),
        "release": RELEASE,
        "namespace": NAMESPACE,
        "values": values,
        "lint": VALUES_FILES,
    }
    proc = subprocess.run(
        [sys.executable, "-c", _HELM], input=json.dumps(request), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="session")
def renders(helm_result: dict[str, Any]) -> dict[str, Render]:
    """The manifests of each shipped values file."""
    defaults = _read_yaml(CHART / "values.yaml")
    missing = {name: helm_result["errors"][name] for name in VALUES_FILES if name in helm_result["errors"]}
    assert not missing, missing
    return {
        name: Render(
            name, _merge(defaults, _read_yaml(CHART / "ci" / name) or {}), helm_result["rendered"][name]
        )
        for name in VALUES_FILES
    }


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted((DEPLOY / "schemas").glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


CRD_SCHEMAS = _crd_schemas()


def _schema_errors(doc: dict[str, Any]) -> list[str]:
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


def _cli(argv: list[str]) -> Any:
    """Parse a `trafficreel ...` command line as the CLI would, without running it (a click Context)."""
    command: Any = typer.main.get_command(cli_app)
    args = list(argv)
    # typer may bring its own click: groups are recognised by their commands, not by class.
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        name = args.pop(0)
        assert name in command.commands, f"trafficreel has no command {name!r}"
        command = command.commands[name]
    return command.make_context("trafficreel", args)


def _container(render: Render, workload: str) -> dict[str, Any]:
    (container,) = render.one("Deployment", f"{RELEASE}-{workload}")["spec"]["template"]["spec"]["containers"]
    return container


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
    problems = [p for doc in render.docs for p in _schema_errors(doc)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("path", ["kafka/topics.yaml", "examples/recorded-app/deployment.yaml"])
def test_plain_manifests_are_valid(path: str) -> None:
    """The manifests applied with kubectl as they are validate like the chart's."""
    docs = _docs(DEPLOY / path)
    assert docs
    problems = [p for doc in docs for p in _schema_errors(doc)]
    assert problems == [], "\n".join(problems)


def test_validation_is_strict(renders: dict[str, Render]) -> None:
    """A misspelt field fails validation, for core kinds and for the operators' kinds alike."""
    render = renders["production-values.yaml"]
    deployment = json.loads(json.dumps(render.one("Deployment", f"{RELEASE}-stream")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert _schema_errors(deployment)
    for _, kind in CRD_SCHEMAS:
        doc = json.loads(json.dumps(render.of(kind)[0]))
        doc["spec"]["replicaz"] = 1
        assert _schema_errors(doc), kind


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
    assert [p for doc in docs for p in _schema_errors(doc)] == []


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


# -- what operators rely on --------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES_FILES)
def test_probes_and_metrics_use_the_health_port(renders: dict[str, Render], name: str) -> None:
    """Liveness is /live and readiness /ready on TRAFFICREEL_HEALTH_PORT; Services and monitors scrape /metrics there."""
    render = renders[name]
    port = int(render.settings()["TRAFFICREEL_HEALTH_PORT"])
    assert port == render.values["healthPort"]
    for component in ("stream", "sink"):
        container = _container(render, component)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
            get = container[probe]["httpGet"]
            assert get["path"] == path
            assert ports.get(get["port"], get["port"]) == port
        service = render.one("Service", f"{RELEASE}-{component}")
        (service_port,) = service["spec"]["ports"]
        assert ports[service_port["targetPort"]] == port
        pod_labels = render.one("Deployment", f"{RELEASE}-{component}")["spec"]["template"]["metadata"][
            "labels"
        ]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for monitor in render.of("ServiceMonitor"):
            if monitor["metadata"]["name"] == service["metadata"]["name"]:
                assert (
                    monitor["spec"]["selector"]["matchLabels"].items()
                    <= service["metadata"]["labels"].items()
                )
                assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
                    (service_port["name"], "/metrics")
                ]
    monitors = render.of("ServiceMonitor")
    assert len(monitors) == (2 if render.values["serviceMonitor"]["enabled"] else 0)
    assert (
        Settings.model_fields["health_port"].default
        == 9464
        == _read_yaml(CHART / "values.yaml")["healthPort"]
    )


@pytest.mark.parametrize("name", VALUES_FILES)
def test_env_names_are_real_settings(renders: dict[str, Render], name: str) -> None:
    """Every TRAFFICREEL_* variable the chart sets is a field of trafficreel.config.Settings."""
    render = renders[name]
    names = set(render.settings())
    for _, pod in render.workloads():
        for container in pod["containers"]:
            names |= {var["name"] for var in container.get("env", [])}
    used = {n for n in names if n.startswith(ENV_PREFIX)}
    assert used, name
    assert used <= SETTINGS_ENV, used - SETTINGS_ENV


@pytest.mark.parametrize("name", VALUES_FILES)
def test_workers_environment_loads_as_settings(
    renders: dict[str, Render], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment the kubelet builds for each worker loads with load_settings(), credentials expanded."""
    render = renders[name]
    values = render.values
    for component in ("stream", "sink"):
        container = _container(render, component)
        pod = render.one("Deployment", f"{RELEASE}-{component}")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            monkeypatch.delenv(key)
        env = render.environment(container)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.kafka_bootstrap == values["kafka"]["bootstrap"]
        assert settings.topic_prefix == values["kafka"]["topicPrefix"]
        assert settings.partitions == values["kafka"]["partitions"]
        assert settings.health_port == values["healthPort"]
        assert str(settings.data_dir) == container["workingDir"] and str(settings.data_dir) in mounts
        conf = settings.kafka_client_config()
        assert conf["security.protocol"] == values["kafka"]["securityProtocol"]
        sasl = values["kafka"]["sasl"]
        if conf["security.protocol"].startswith("SASL_"):
            secret = sasl["existingSecret"] or f"{RELEASE}-kafka"
            assert conf["sasl.mechanism"] == sasl["mechanism"]
            assert conf["sasl.password"] == render.secret_value(secret, sasl["passwordKey"])
            assert conf["sasl.username"] == (
                sasl["username"] or render.secret_value(secret, sasl["usernameKey"])
            )
        else:
            assert not any(key.startswith("sasl.") for key in conf)
        if values["kafka"]["tls"]["caSecret"] and conf["security.protocol"] in ("SSL", "SASL_SSL"):
            ca = Path(conf["ssl.ca.location"])
            volume = mounts[str(ca.parent)]
            assert volume["secret"]["secretName"] == values["kafka"]["tls"]["caSecret"]
            assert {"key": values["kafka"]["tls"]["caKey"], "path": ca.name} in volume["secret"]["items"]
        if component == "stream":
            assert settings.stream_group == values["stream"]["group"]
            assert settings.stream_rules is not None
            rules_volume = mounts[str(settings.stream_rules.parent)]
            assert rules_volume["configMap"]["name"] == f"{RELEASE}-stream-rules"
        else:
            dsn = urlsplit(settings.clickhouse_url)
            auth = values["clickhouse"]["auth"]
            assert dsn.port == values["clickhouse"]["port"]
            if auth["enabled"]:
                secret = auth["existingSecret"] or f"{RELEASE}-clickhouse"
                assert (dsn.username, dsn.password) == (
                    auth["username"],
                    render.secret_value(secret, auth["passwordKey"]),
                )
            else:
                assert dsn.username is None


@pytest.mark.parametrize("name", VALUES_FILES)
def test_every_referenced_secret_and_configmap_exists(renders: dict[str, Render], name: str) -> None:
    """Each Secret and ConfigMap key a manifest references is rendered, or is a Secret the values say you manage."""
    render = renders[name]
    values = render.values
    managed = {values["kafka"]["sasl"]["existingSecret"], values["kafka"]["tls"]["caSecret"]}
    managed.add(values["clickhouse"]["auth"]["existingSecret"])
    refs: list[tuple[str, str, str | None]] = []
    for _, pod in render.workloads():
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                refs.append(("ConfigMap", source["configMapRef"]["name"], None))
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    refs.append(("Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]))
        for volume in pod.get("volumes", []):
            for kind, field, ref_name in (
                ("Secret", "secret", "secretName"),
                ("ConfigMap", "configMap", "name"),
            ):
                if field in volume:
                    items = volume[field].get("items") or [{"key": None}]
                    refs += [(kind, volume[field][ref_name], item["key"]) for item in items]
        if values["serviceAccount"]["create"]:
            render.one("ServiceAccount", pod["serviceAccountName"])
        else:
            assert pod["serviceAccountName"] == values["serviceAccount"]["name"]
    for auth in render.of("TriggerAuthentication"):
        refs += [("Secret", ref["name"], ref["key"]) for ref in auth["spec"].get("secretTargetRef", [])]
    for chi in render.of("ClickHouseInstallation"):
        for value in chi["spec"]["configuration"].get("users", {}).values():
            if isinstance(value, dict):
                ref = value["valueFrom"]["secretKeyRef"]
                refs.append(("Secret", ref["name"], ref["key"]))
    assert refs
    for kind, ref_name, key in refs:
        found = [d for d in render.of(kind) if d["metadata"]["name"] == ref_name]
        if not found:
            assert kind == "Secret" and ref_name in managed - {""}, (
                f"{kind} {ref_name} is neither rendered nor yours"
            )
            continue
        if key is not None:
            (doc,) = found
            assert key in {**doc.get("data", {}), **doc.get("stringData", {})}, (
                f"{kind} {ref_name} has no key {key}"
            )


@pytest.mark.parametrize("name", VALUES_FILES)
def test_workers_run_real_cli_commands(renders: dict[str, Render], name: str) -> None:
    """The containers' commands parse as `trafficreel stream` and `trafficreel sink` command lines."""
    render = renders[name]
    stream = _container(render, "stream")["command"]
    assert stream[:2] == ["trafficreel", "stream"]
    _cli(stream[1:])
    sink = _container(render, "sink")["command"]
    assert sink[:2] == ["trafficreel", "sink"]
    params = _cli(sink[1:]).params
    assert params["group"] == render.values["sink"]["group"]
    assert list(params["topics"] or ()) == render.values["sink"]["topics"]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_stream_rules_configmap_is_a_valid_rules_file(
    renders: dict[str, Render], name: str, tmp_path: Path
) -> None:
    """The rules ConfigMap the workers mount loads with the stream workers' own rules loader."""
    render = renders[name]
    text = render.one("ConfigMap", f"{RELEASE}-stream-rules")["data"]["rules.yaml"]
    (tmp_path / "rules.yaml").write_text(text)
    expected = StreamRules.model_validate(render.values["stream"]["rules"] or {})
    assert load_rules(tmp_path / "rules.yaml") == expected


def test_example_rules_file_is_valid() -> None:
    """deploy/stream-rules.example.yaml (mounted by compose.yaml) loads as a rules file."""
    assert load_rules(DEPLOY / "stream-rules.example.yaml").rules


@pytest.mark.parametrize("name", VALUES_FILES)
def test_pods_are_hardened_and_sized(renders: dict[str, Render], name: str) -> None:
    """Every pod runs as non-root with a read-only root, no capabilities, and resource requests and limits."""
    workloads = list(renders[name].workloads())
    assert {n for n, _ in workloads} >= {f"{RELEASE}-stream", f"{RELEASE}-sink"}
    for workload, pod in workloads:
        _assert_hardened(workload, pod)
        assert pod["automountServiceAccountToken"] is False, workload


def _assert_hardened(workload: str, pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, workload
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, workload
        assert ctx["allowPrivilegeEscalation"] is False, workload
        assert ctx["capabilities"]["drop"] == ["ALL"], workload
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), workload
        assert "memory" in container["resources"]["limits"], workload


@pytest.mark.parametrize("name", VALUES_FILES)
def test_each_deployment_has_its_own_disruption_budget(renders: dict[str, Render], name: str) -> None:
    """A PodDisruptionBudget per Deployment selects that Deployment's pods and no other's."""
    render = renders[name]
    budgets = render.of("PodDisruptionBudget")
    if not render.values["podDisruptionBudget"]["enabled"]:
        assert budgets == []
        return
    deployments = render.of("Deployment")
    assert len(budgets) == len(deployments) == 2
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"].items()
        selected = [d for d in deployments if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert [d["metadata"]["name"] for d in selected] == [budget["metadata"]["name"]]
        assert budget["spec"]["maxUnavailable"] == render.values["podDisruptionBudget"]["maxUnavailable"]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_autoscaling_follows_each_workers_consumer_lag(renders: dict[str, Render], name: str) -> None:
    """KEDA scales each Deployment on its own group's lag, within the partitions, with working credentials."""
    render = renders[name]
    scaled = render.of("ScaledObject")
    if not render.values["autoscaling"]["enabled"]:
        assert scaled == [] and render.of("TriggerAuthentication") == []
        assert all("replicas" in d["spec"] for d in render.of("Deployment"))
        return
    settings = render.settings()
    assert len(scaled) == 2
    auths = {a["metadata"]["name"]: a for a in render.of("TriggerAuthentication")}
    for obj in scaled:
        spec = obj["spec"]
        deployment = render.one("Deployment", spec["scaleTargetRef"]["name"])
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= int(settings["TRAFFICREEL_PARTITIONS"])
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["bootstrapServers"] == settings["TRAFFICREEL_KAFKA_BOOTSTRAP"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["name"] == "stream":
            assert meta["consumerGroup"] == settings["TRAFFICREEL_STREAM_GROUP"]
            assert meta["topic"] == f"{settings['TRAFFICREEL_TOPIC_PREFIX']}.raw"
        else:
            assert meta["consumerGroup"] == _cli(container["command"][1:]).params["group"]
        conf = json.loads(render.environment(container)["TRAFFICREEL_KAFKA_CONFIG"])
        mechanism = conf.get("sasl.mechanism")
        expected = {
            None: None,
            "PLAIN": "plaintext",
            "SCRAM-SHA-256": "scram_sha256",
            "SCRAM-SHA-512": "scram_sha512",
        }
        assert meta.get("sasl") == expected[mechanism]
        assert (meta.get("tls") == "enable") == (conf["security.protocol"] in ("SSL", "SASL_SSL"))
        if mechanism or "ssl.ca.location" in conf:
            auth = auths[trigger["authenticationRef"]["name"]]["spec"]
            params = {ref["parameter"] for ref in auth.get("secretTargetRef", [])}
            env_names = {var["name"] for var in container["env"]}
            for ref in auth.get("env", []):
                assert ref["name"] in env_names
                params.add(ref["parameter"])
            assert params >= ({"username", "password"} if mechanism else set()) | (
                {"ca"} if "ssl.ca.location" in conf else set()
            )


def test_chart_topics_are_the_project_topics(renders: dict[str, Render]) -> None:
    """The chart's KafkaTopics name exactly the project's topics, sized as the workers are configured."""
    render = renders["production-values.yaml"]
    settings = render.settings()
    topics = render.of("KafkaTopic")
    assert [t["spec"]["topicName"] for t in topics] == project_topics(settings["TRAFFICREEL_TOPIC_PREFIX"])
    for topic in topics:
        assert topic["spec"]["partitions"] == int(settings["TRAFFICREEL_PARTITIONS"])
        assert topic["spec"]["replicas"] == int(settings["TRAFFICREEL_REPLICATION_FACTOR"])
        assert (
            topic["metadata"]["labels"]["strimzi.io/cluster"] == render.values["strimzi"]["topics"]["cluster"]
        )
        assert int(topic["spec"]["config"]["min.insync.replicas"]) < topic["spec"]["replicas"]


def test_strimzi_topics_match_the_project_topics() -> None:
    """deploy/kafka/topics.yaml declares one KafkaTopic per project topic, with replicated settings."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kafka" / "topics.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"KafkaTopic"}
    assert [d["spec"]["topicName"] for d in docs] == project_topics()
    assert all(d["spec"]["replicas"] >= 3 and d["spec"]["config"]["min.insync.replicas"] == "2" for d in docs)


def test_clickhouse_installation_serves_the_sinks_user(renders: dict[str, Render]) -> None:
    """The ClickHouseInstallation creates the sink's user from the sink's Secret and is the sink's host."""
    render = renders["production-values.yaml"]
    (chi,) = render.of("ClickHouseInstallation")
    sink_env = next(v for v in _container(render, "sink")["env"] if v["name"] == "CLICKHOUSE_PASSWORD")
    user = render.values["clickhouse"]["auth"]["username"]
    users = chi["spec"]["configuration"]["users"]
    assert users[f"{user}/password"]["valueFrom"] == sink_env["valueFrom"]
    url = render.environment(_container(render, "sink"))["TRAFFICREEL_CLICKHOUSE_URL"]
    # clickhouse-operator names an installation's service clickhouse-<installation name>.
    assert urlsplit(url).hostname == f"clickhouse-{chi['metadata']['name']}"
    assert chi["spec"]["templates"]["podTemplates"][0]["spec"]["containers"][0]["image"] == CLICKHOUSE_IMAGE


@pytest.mark.stack
def test_migrations_job_applies_the_sinks_migrations(
    renders: dict[str, Render], infra: Infra, clickhouse: Any, tmp_path: Path
) -> None:
    """The migrations Job's command, run with its rendered environment, creates the sink's tables."""
    render = renders["production-values.yaml"]
    (job,) = render.of("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    env = render.environment(container)
    # Pointed at this session's ClickHouse, in a fresh database; everything else as rendered.
    server = urlsplit(infra.clickhouse_url)
    env["TRAFFICREEL_CLICKHOUSE_URL"] = (
        f"http://{infra.clickhouse_user}:{infra.clickhouse_password}@{server.netloc}/{clickhouse.database}"
    )
    env["TRAFFICREEL_DATA_DIR"] = str(tmp_path)
    assert set(env) - {"CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"} <= SETTINGS_ENV
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    proc = subprocess.run(
        [sys.executable, "-c", command[2]],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    versions = {row[0] for row in clickhouse.query("SELECT version FROM schema_migrations").result_rows}
    assert versions == {m.version for m in MIGRATIONS}
    assert clickhouse.command("EXISTS TABLE exchanges") == 1


# -- the example recorded application ------------------------------------------------------------


def test_example_app_gets_the_downward_api_env_the_recorder_reads() -> None:
    """The example Deployment gives POD_NAME, POD_NAMESPACE, NODE_NAME and the service-account namespace file."""
    docs = _docs(EXAMPLE_APP / "deployment.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    refs = {v["name"]: v["valueFrom"]["fieldRef"]["fieldPath"] for v in container["env"] if "valueFrom" in v}
    assert refs == DOWNWARD_API
    env = Render("example", {}, {}).environment(container)
    source = detect_source("orders", "0.1.0", "asgi", environ=env, proc=Path("/nonexistent"))
    assert (source["pod"], source["namespace"], source["node"]) == (
        POD_FIELDS["metadata.name"],
        POD_FIELDS["metadata.namespace"],
        POD_FIELDS["spec.nodeName"],
    )
    # The token volume the kubelet mounts when automountServiceAccountToken is true holds this file.
    default = inspect.signature(detect_source).parameters["sa_namespace"].default
    assert default == Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    assert pod["automountServiceAccountToken"] is True
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == pod["serviceAccountName"]
    assert account["automountServiceAccountToken"] is True
    recorder = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(recorder) <= RECORDER_ENV, set(recorder) - RECORDER_ENV
    config = RecorderConfig.from_env(recorder)
    assert config.service_name == "orders"
    assert config.topic == f"{env['TRAFFICREEL_TOPIC_PREFIX']}.raw"
    _assert_hardened("orders", pod)


def test_example_app_wraps_fastapi_with_the_recorder() -> None:
    """app.py is a FastAPI app with TrafficRecorder, and its Dockerfile ships it."""
    spec = importlib.util.spec_from_file_location("trafficreel_example_app", EXAMPLE_APP / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [m.cls for m in module.app.user_middleware] == [TrafficRecorder]
    assert "COPY deploy/examples/recorded-app/app.py" in (EXAMPLE_APP / "Dockerfile").read_text()


# -- the image and compose ---------------------------------------------------------------------


def test_dockerfile_installs_the_workers_from_every_package_folder() -> None:
    """deploy/Dockerfile copies every package folder, installs [stream,sink], and runs as the chart's user."""
    text = (DEPLOY / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", text, flags=re.MULTILINE))
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_dirs = set(re.findall(r'^"trafficreel(?:\.\w+)?" = "(\w+)"$', pyproject, flags=re.MULTILINE))
    assert package_dirs and package_dirs <= copied
    assert all((ROOT / folder).is_dir() for folder in copied)
    assert '".[stream,sink]"' in text
    assert 'ENTRYPOINT ["trafficreel"]' in text
    uid = _read_yaml(CHART / "values.yaml")["podSecurityContext"]["runAsUser"]
    assert f"USER {uid}:{uid}" in text and f"--uid {uid}" in text


def test_compose_file_validates_against_the_compose_spec() -> None:
    """deploy/compose.yaml is valid against the Compose Specification schema."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_runs_the_pipeline_from_the_official_images() -> None:
    """Compose runs Kafka and ClickHouse from the official images, then topics, a stream worker and a sink."""
    compose = _read_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"kafka", "clickhouse", "topics", "stream", "sink"}
    assert services["kafka"]["image"] == KAFKA_IMAGE
    assert services["clickhouse"]["image"] == CLICKHOUSE_IMAGE
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    commands = {"topics": ["topics", "create"], "stream": ["stream"], "sink": ["sink"]}
    for name, command in commands.items():
        service = services[name]
        assert service["command"] == command
        _cli(command)
        assert (
            DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]
        ).resolve() == DEPLOY / "Dockerfile"
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= SETTINGS_ENV, set(env) - SETTINGS_ENV
        assert env["TRAFFICREEL_KAFKA_BOOTSTRAP"].split(":")[0] == "kafka"
    for name, service in services.items():
        assert "healthcheck" in service or service.get("restart") == "no", f"{name} has no healthcheck"
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[target]
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert services[target].get("restart") == "no"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), source
            else:
                assert source in compose["volumes"]
    for name in ("stream", "sink"):
        assert {"kafka", "topics"} <= set(services[name]["depends_on"])
        port = services[name]["environment"].get("TRAFFICREEL_HEALTH_PORT", "9464")
        assert f"127.0.0.1:{port}/ready" in " ".join(services[name]["healthcheck"]["test"])
    assert "clickhouse" in services["sink"]["depends_on"]
    rules = services["stream"]["environment"]["TRAFFICREEL_STREAM_RULES"]
    assert any(v.split(":")[1] == rules for v in services["stream"]["volumes"])
    # The sink logs in as the user the ClickHouse image creates.
    dsn = urlsplit(_interpolate(services["sink"]["environment"]["TRAFFICREEL_CLICKHOUSE_URL"]))
    clickhouse_env = services["clickhouse"]["environment"]
    assert (dsn.hostname, dsn.port) == ("clickhouse", 8123)
    assert (dsn.username, dsn.password) == (
        clickhouse_env["CLICKHOUSE_USER"],
        _interpolate(clickhouse_env["CLICKHOUSE_PASSWORD"]),
    )


def _interpolate(value: str) -> str:
    # Compose's ${VAR:-default} with nothing set in the environment.
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


# -- the operator's guide ----------------------------------------------------------------------


def test_readme_names_only_existing_files_and_values() -> None:
    """deploy/README.md refers to files that exist and to --set keys the chart's values.yaml has."""
    text = (DEPLOY / "README.md").read_text()
    paths = set(re.findall(r"(deploy/[\w./-]+\.(?:yaml|py|json|md)|deploy/Dockerfile)", text))
    assert paths
    assert [p for p in paths if not (ROOT / p).exists()] == []
    values = _read_yaml(CHART / "values.yaml")
    keys = re.findall(r"--set(?:-string|-file)? ([\w.]+)=", text)
    assert keys
    for key in keys:
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: no such value"
            node = node[part]
