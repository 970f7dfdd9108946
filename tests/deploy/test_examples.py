"""The example recorded application, the image, the compose file and the operator's guide agree
with the code."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import CLICKHOUSE_IMAGE, KAFKA_IMAGE
from trafficreel.config import ENV_PREFIX
from trafficreel.producers import RecorderConfig, TrafficRecorder
from trafficreel.producers._metadata import detect_source

from .support import (
    CHART,
    DEPLOY,
    DOWNWARD_API,
    EXAMPLE_APP,
    POD_FIELDS,
    RECORDER_ENV,
    ROOT,
    SETTINGS_ENV,
    Render,
    assert_hardened,
    cli_context,
    docs_of,
    read_yaml,
)

# -- the example recorded application ------------------------------------------------------------


def test_example_app_gets_the_downward_api_env_the_recorder_reads() -> None:
    """The example Deployment gives POD_NAME, POD_NAMESPACE, NODE_NAME and the service-account namespace file."""
    docs = docs_of(EXAMPLE_APP / "deployment.yaml")
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
    assert_hardened("orders", pod)


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
    """deploy/Dockerfile copies every package folder, installs [stream,sink] with the codec's C
    decoder built (and checked), keeps local builds out of the context, and runs as the chart's user."""
    text = (DEPLOY / "Dockerfile").read_text()
    build_stage = text.split("\nFROM ")[1]
    assert "gcc" in build_stage and "assert NATIVE" in build_stage
    assert "**/*.so" in (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    copied = set(re.findall(r"^COPY (\S+) \1$", text, flags=re.MULTILINE))
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_dirs = set(re.findall(r'^"trafficreel(?:\.\w+)?" = "(\w+)"$', pyproject, flags=re.MULTILINE))
    assert package_dirs and package_dirs <= copied
    assert all((ROOT / folder).is_dir() for folder in copied)
    assert '".[stream,sink]"' in text
    assert 'ENTRYPOINT ["trafficreel"]' in text
    uid = read_yaml(CHART / "values.yaml")["podSecurityContext"]["runAsUser"]
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
    compose = read_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"kafka", "clickhouse", "topics", "stream", "sink"}
    assert services["kafka"]["image"] == KAFKA_IMAGE
    assert services["clickhouse"]["image"] == CLICKHOUSE_IMAGE
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    commands = {"topics": ["topics", "create"], "stream": ["stream"], "sink": ["sink"]}
    for name, command in commands.items():
        service = services[name]
        assert service["command"] == command
        cli_context(command)
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
    values = read_yaml(CHART / "values.yaml")
    keys = re.findall(r"--set(?:-string|-file)? ([\w.]+)=", text)
    assert keys
    for key in keys:
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: no such value"
            node = node[part]
