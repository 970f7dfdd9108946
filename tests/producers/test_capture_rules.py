"""Capture rules in isolation: body policy and states, redaction, settings, Kubernetes metadata."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from trafficreel.producers import MARKER, BodyCapture, BodyPolicy, RecorderConfig, Redactor
from trafficreel.producers._metadata import container_id, detect_source
from trafficreel.schemas import Redaction, blank_body

POLICY = BodyPolicy(RecorderConfig().body_types, 16)


@pytest.mark.parametrize(
    ("content_type", "kept"),
    [
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"application/vnd.api+json", True),
        (b"application/problem+json", True),
        (b"text/html", True),
        (b"text/event-stream", True),
        (b"application/x-www-form-urlencoded", True),
        (b"application/soap+xml", True),
        (b"application/graphql", True),
        (b"APPLICATION/JSON", True),
        (b"application/octet-stream", False),
        (b"image/png", False),
        (b"multipart/form-data; boundary=x", False),
        (b"application/jsonx", False),
        (None, False),
        (b"", False),
    ],
)
def test_text_like_types_are_kept(content_type: bytes | None, kept: bool) -> None:
    """JSON, +json, text/*, forms, XML and GraphQL bodies are kept; binary and unknown types are not."""
    assert POLICY.keeps(content_type) is kept


def _feed(capture: BodyCapture, *chunks: bytes) -> BodyCapture:
    for chunk in chunks:
        capture.feed(chunk)
    return capture


def test_body_states_say_exactly_what_happened() -> None:
    """Complete, truncated at the limit, not kept by policy, aborted and none are told apart."""
    whole = _feed(BodyCapture(16), b"0123456789", b"abc").result(True, "application/json", None)
    assert (whole["state"], whole["data"], whole["size"]) == ("COMPLETE", b"0123456789abc", 13)
    assert whole["sha256"] == hashlib.sha256(b"0123456789abc").digest()

    cut = _feed(BodyCapture(16), b"0123456789", b"abcdefghij").result(True, "text/plain", "gzip")
    assert (cut["state"], cut["data"], cut["size"]) == ("TRUNCATED", b"0123456789abcdef", 20)
    assert cut["sha256"] == hashlib.sha256(b"0123456789abcdefghij").digest()  # digest covers everything
    assert cut["content_encoding"] == "gzip"

    binary = _feed(BodyCapture(16), b"\x89PNG", b"....").result(False, "image/png", None)
    assert (binary["state"], binary["data"], binary["size"]) == ("NOT_KEPT", None, 8)
    assert binary["sha256"] == hashlib.sha256(b"\x89PNG....").digest()

    aborted = _feed(BodyCapture(16), b"partial")
    aborted.aborted = True
    result = aborted.result(True, "application/json", None, 100)
    assert (result["state"], result["data"], result["size"], result["sha256"], result["declared_length"]) == (
        "ABORTED",
        b"partial",
        7,
        None,
        100,
    )

    head = BodyCapture(16).result(True, "application/json", None, 1234)
    assert (head["state"], head["data"], head["size"], head["declared_length"]) == ("NONE", None, 0, 1234)


def _redact_headers(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], list[Redaction]]:
    found: list[Redaction] = []
    return list(Redactor().headers(headers, "request", found)), found


def test_credential_headers_are_redacted_and_listed() -> None:
    """Authorization keeps its scheme, cookies keep names and attributes, API keys vanish; each is listed."""
    headers = [
        (b"Host", b"svc"),
        (b"Authorization", b"Bearer eyJ.secret.sig"),
        (b"cookie", b"a=1; session=s3cr3t"),
        (b"x-api-key", b"k-123"),
        (b"X-Upstream-Token", b"t-456"),
        (b"accept", b"*/*"),
    ]
    redacted, found = _redact_headers(headers)
    assert redacted == [
        (b"Host", b"svc"),
        (b"Authorization", b"Bearer " + MARKER),
        (b"cookie", b"a=" + MARKER + b"; session=" + MARKER),
        (b"x-api-key", MARKER),
        (b"X-Upstream-Token", MARKER),
        (b"accept", b"*/*"),
    ]
    assert [r["location"] for r in found] == [
        "request.header:authorization",
        "request.header:cookie",
        "request.header:x-api-key",
        "request.header:x-upstream-token",
    ]
    assert not any(b"s3cr3t" in v or b"secret" in v or b"k-123" in v for _, v in redacted)


def test_set_cookie_keeps_attributes() -> None:
    """Set-Cookie loses its value only."""
    found: list[Redaction] = []
    out = Redactor().headers([(b"set-cookie", b"sid=abc123; Path=/; HttpOnly")], "response", found)
    assert list(out) == [(b"set-cookie", b"sid=" + MARKER + b"; Path=/; HttpOnly")]


def test_nothing_to_redact_returns_the_same_list() -> None:
    """Without credentials the header list is returned as is (no copy)."""
    headers = [(b"host", b"a"), (b"x-authenticated-user", b"bob")]
    assert Redactor().headers(headers, "request", []) is headers


def test_query_tokens_are_redacted_byte_exact_elsewhere() -> None:
    """Token-like parameters lose their value; every other byte of the raw query stays."""
    found: list[Redaction] = []
    query = b"a=%20x&access_token=abc.def&TOKEN=1&keep=token&api_key=&b=2;sig=zz"
    out = Redactor(extra_query=["b"]).query(query, "request", found)
    assert out == b"a=%20x&access_token=REDACTED&TOKEN=REDACTED&keep=token&api_key=&b=REDACTED;sig=REDACTED"
    assert [r["location"] for r in found] == [
        "request.query:access_token",
        "request.query:token",
        "request.query:b",
        "request.query:sig",
    ]


def test_kept_names_are_never_redacted_at_source() -> None:
    """TRAFFICREEL_REDACT_KEEP spares headers, query parameters and JSON keys the defaults would
    redact (a pagination token a replay needs); the rest is redacted as before."""
    from trafficreel.producers._deep import DeepRedactor

    config = RecorderConfig.from_env({"TRAFFICREEL_REDACT_KEEP": "X-CSRF-Token, page_token,next_page_token"})
    assert config.redact_keep == ("X-CSRF-Token", "page_token", "next_page_token")
    keep = config.redact_keep
    found: list[Redaction] = []
    headers = [(b"x-csrf-token", b"c-1"), (b"x-xsrf-token", b"x-2"), (b"authorization", b"Basic YWI=")]
    assert list(Redactor(keep=keep).headers(headers, "request", found)) == [
        (b"x-csrf-token", b"c-1"),
        (b"x-xsrf-token", MARKER),
        (b"authorization", b"Basic " + MARKER),
    ]
    query = b"page_token=p-3&token=t-4"
    assert Redactor(keep=keep).query(query, "request", found) == b"page_token=p-3&token=REDACTED"
    # A default name kept outright ("token" is a default parameter name).
    assert Redactor(keep=["token"]).query(query, "request", found) == query
    record = {
        "request": {
            "headers": [],
            "query": b"",
            "body": {
                "data": b'{"nextPageToken": "n-5", "refresh_token": "r-6", "next_page_tokens": ["n-7"]}',
                "size": 80,
                "sha256": None,
                "content_type": "application/json",
                "content_encoding": None,
                "declared_length": None,
                "state": "COMPLETE",
            },
        },
        "response": {"headers": [], "body": {**blank_body()}},
        "redactions": [],
    }
    assert DeepRedactor(keep=keep).redact(record, credentials=False)  # type: ignore[arg-type]
    data = record["request"]["body"]["data"]  # type: ignore[index]
    assert b"n-5" in data and b"r-6" not in data and b"n-7" not in data


def test_settings_from_environment() -> None:
    """Every recorder setting reads from TRAFFICREEL_<NAME>; bad values name the variable."""
    env = {
        "TRAFFICREEL_SERVICE_NAME": "orders",
        "TRAFFICREEL_BODY_LIMIT": "1024",
        "TRAFFICREEL_ENABLED": "false",
        "TRAFFICREEL_EXCLUDE_PATHS": "/metrics, /healthz",
        "TRAFFICREEL_TAGS": '{"team": "checkout"}',
        "TRAFFICREEL_KAFKA_CONFIG": '{"security.protocol": "SSL"}',
    }
    config = RecorderConfig.from_env(env)
    assert (config.service_name, config.body_limit, config.enabled) == ("orders", 1024, False)
    assert config.exclude_paths == ("/metrics", "/healthz")
    assert dict(config.tags) == {"team": "checkout"}
    assert config.topic == "trafficreel.raw"
    with pytest.raises(ValueError, match="TRAFFICREEL_BODY_LIMIT"):
        RecorderConfig.from_env({"TRAFFICREEL_BODY_LIMIT": "lots"})
    with pytest.raises(TypeError):
        RecorderConfig(no_such_setting=1)  # type: ignore[call-arg]
    assert {row[0] for row in RecorderConfig.describe()} >= {
        "TRAFFICREEL_SERVICE_NAME",
        "TRAFFICREEL_QUEUE_BYTES",
    }


@pytest.mark.parametrize(
    ("file", "line"),
    [
        (
            "cgroup",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
            "cri-containerd-{id}.scope",
        ),
        ("cgroup", "12:memory:/kubepods/besteffort/pod1234/{id}"),
        ("cgroup", "0::/system.slice/docker-{id}.scope"),
        ("mountinfo", "1 2 0:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw"),
        (
            "mountinfo",
            "1 2 0:1 /var/lib/containers/storage/overlay-containers/{id}/userdata/hostname /etc/hostname rw",
        ),
    ],
)
def test_container_id_from_cgroup_or_mountinfo(tmp_path: Path, file: str, line: str) -> None:
    """The 64-hex container id is found in cgroup v1, v2 (systemd or cgroupfs) or mountinfo."""
    cid = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4
    (tmp_path / file).write_text("0::/\n" + line.format(id=cid) + "\n")
    assert container_id(tmp_path) == cid


def test_the_pod_sandbox_id_is_not_taken_for_the_container_id(tmp_path: Path) -> None:
    """containerd mounts /etc/hostname from the pod sandbox: that id is every container's of the
    pod, so with a private cgroup namespace (cgroup "0::/") there is no id, rather than a wrong one."""
    sandbox = "c" * 64
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text(
        f"1 2 0:1 /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/{sandbox}/hostname /etc/hostname rw\n"
    )
    assert container_id(tmp_path) is None


def test_source_from_downward_api_and_service_account(tmp_path: Path) -> None:
    """Pod, node and API host come from the Downward API env; namespace falls back to the SA file."""
    ns_file = tmp_path / "namespace"
    ns_file.write_text("shop\n")
    env = {
        "POD_NAME": "orders-1",
        "NODE_NAME": "node-a",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    source = detect_source(
        "orders", "1.2", "trafficreel/x asgi", environ=env, proc=tmp_path, sa_namespace=ns_file
    )
    assert source == {
        "service": "orders",
        "service_version": "1.2",
        "pod": "orders-1",
        "namespace": "shop",
        "node": "node-a",
        "container_id": None,
        "k8s_api_host": "10.96.0.1:443",
        "recorder": "trafficreel/x asgi",
    }
