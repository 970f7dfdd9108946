"""What operators rely on in the rendered chart: probes, settings, Secrets, topics, hardening,
disruption budgets, autoscaling on consumer lag, the ClickHouse user and the migrations job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import CLICKHOUSE_IMAGE, Infra
from trafficreel.config import ENV_PREFIX, Settings, load_settings
from trafficreel.sinks import MIGRATIONS
from trafficreel.streams import StreamRules, load_rules
from trafficreel.topics import project_topics

from .support import (
    CHART,
    DEPLOY,
    RELEASE,
    ROOT,
    SETTINGS_ENV,
    VALUES_FILES,
    Render,
    assert_hardened,
    cli_context,
    container_of,
    read_yaml,
)

# -- what operators rely on --------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUES_FILES)
def test_probes_and_metrics_use_the_health_port(renders: dict[str, Render], name: str) -> None:
    """Liveness is /live and readiness /ready on TRAFFICREEL_HEALTH_PORT; Services and monitors scrape /metrics there."""
    render = renders[name]
    port = int(render.settings()["TRAFFICREEL_HEALTH_PORT"])
    assert port == render.values["healthPort"]
    for component in ("stream", "sink"):
        container = container_of(render, component)
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
        Settings.model_fields["health_port"].default == 9464 == read_yaml(CHART / "values.yaml")["healthPort"]
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
        container = container_of(render, component)
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
    stream = container_of(render, "stream")["command"]
    assert stream[:2] == ["trafficreel", "stream"]
    cli_context(stream[1:])
    sink = container_of(render, "sink")["command"]
    assert sink[:2] == ["trafficreel", "sink"]
    params = cli_context(sink[1:]).params
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
        assert_hardened(workload, pod)
        assert pod["automountServiceAccountToken"] is False, workload


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
            assert meta["consumerGroup"] == cli_context(container["command"][1:]).params["group"]
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
    sink_env = next(v for v in container_of(render, "sink")["env"] if v["name"] == "CLICKHOUSE_PASSWORD")
    user = render.values["clickhouse"]["auth"]["username"]
    users = chi["spec"]["configuration"]["users"]
    assert users[f"{user}/password"]["valueFrom"] == sink_env["valueFrom"]
    url = render.environment(container_of(render, "sink"))["TRAFFICREEL_CLICKHOUSE_URL"]
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
