"""Where the recorder runs: service, pod, namespace, node, container, from what Kubernetes provides.

Read once per process: the Downward API environment (POD_NAME, POD_NAMESPACE, NODE_NAME), the
service-account namespace file, and /proc/self/cgroup or /proc/self/mountinfo for the container id.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

from trafficreel.schemas import Source

__all__ = ["container_id", "detect_source"]

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_CONTAINER_ID = re.compile(r"([0-9a-f]{64})")


def container_id(proc: Path = Path("/proc/self")) -> str | None:
    """The 64-hex container id from cgroup (v1 and v2 with systemd or cgroupfs) or mountinfo."""
    for name in ("cgroup", "mountinfo"):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            # cgroup v1 and v2 paths: .../docker-<id>.scope, .../cri-containerd-<id>.scope, /kubepods/.../<id>
            # mountinfo: Docker's /var/lib/docker/containers/<id>/…, CRI-O's …/overlay-containers/<id>/….
            # containerd mounts /etc/hostname from …/sandboxes/<id>/: the pod sandbox's id, the same for
            # every container of the pod, so no id beats that one.
            if name == "mountinfo" and ("/containers/" not in line or "/sandboxes/" in line):
                continue
            match = _CONTAINER_ID.search(line)
            if match:
                return match.group(1)
    return None


def detect_source(
    service: str,
    version: str,
    recorder: str,
    *,
    environ: Mapping[str, str] | None = None,
    proc: Path = Path("/proc/self"),
    sa_namespace: Path = _SA_NAMESPACE,
) -> Source:
    """The source block of every record from this process."""
    env = os.environ if environ is None else environ
    namespace = env.get("POD_NAMESPACE")
    if not namespace:
        try:
            namespace = sa_namespace.read_text().strip() or None
        except OSError:
            namespace = None
    api_host = env.get("KUBERNETES_SERVICE_HOST")
    api_port = env.get("KUBERNETES_SERVICE_PORT")
    if api_host and ":" in api_host and not api_host.startswith("["):
        api_host = f"[{api_host}]"  # IPv6 literal
    return {
        "service": service,
        "service_version": version or None,
        "pod": env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname(),
        "namespace": namespace,
        "node": env.get("NODE_NAME") or None,
        "container_id": container_id(proc),
        "k8s_api_host": f"{api_host}:{api_port}" if api_host and api_port else api_host or None,
        "recorder": recorder,
    }
