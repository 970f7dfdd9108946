"""Classification: Kubernetes API calls, probes and scrapes are told apart from business traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficreel.errors import ConfigError
from trafficreel.streams import Classifier, load_rules

from .support import exchange

CLASSIFIER = Classifier()


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            exchange(direction="OUTBOUND", host="kubernetes.default.svc", path=b"/version"),
            ("k8s-api", "k8s-api-host"),
        ),
        (
            exchange(direction="OUTBOUND", host="kubernetes.default.svc.cluster.local:443", path=b"/healthz"),
            ("k8s-api", "k8s-api-host"),
        ),
        # The KUBERNETES_SERVICE_HOST:PORT the recorder saw (sample source: 10.96.0.1:443).
        (
            exchange(direction="OUTBOUND", host="10.96.0.1:443", path=b"/api/v1/namespaces/x/pods"),
            ("k8s-api", "k8s-api-host"),
        ),
        (exchange(direction="OUTBOUND", host="10.96.0.1", path=b"/livez"), ("k8s-api", "k8s-api-host")),
        (
            exchange(
                direction="OUTBOUND",
                host="api.example.com",
                path=b"/x",
                headers={"user-agent": "OpenAPI-Generator/31.0.0/python"},
            ),
            ("k8s-api", "k8s-api-client"),
        ),
        # client-go's default user agent (kubectl, Go controllers, through a proxy).
        (
            exchange(
                direction="OUTBOUND",
                host="k8s-proxy.infra:8001",
                path=b"/x",
                headers={"user-agent": "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46"},
            ),
            ("k8s-api", "k8s-api-client"),
        ),
        (
            exchange(
                direction="OUTBOUND", host="proxy", path=b"/apis/apps/v1/namespaces/a/deployments", headers={}
            ),
            ("k8s-api", "k8s-api-path"),
        ),
        # Another service on the API server's address (another port) is not the API server.
        (
            exchange(direction="OUTBOUND", host="10.96.0.1:8080", path=b"/v1/stock", headers={}),
            ("business", "default"),
        ),
        # Business APIs that merely look similar stay business.
        (
            exchange(direction="OUTBOUND", host="users.shop", path=b"/api/v1/users/7", headers={}),
            ("business", "default"),
        ),
        (
            exchange(direction="OUTBOUND", host="users.shop", path=b"/version", headers={}),
            ("business", "default"),
        ),
        (exchange(path=b"/healthz", headers={"user-agent": "kube-probe/1.31"}), ("probe", "probe")),
        (exchange(path=b"/metrics", headers={"user-agent": "Prometheus/2.53.0"}), ("scrape", "scrape")),
        (
            exchange(
                path=b"/metrics",
                headers={"accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
            ),
            ("scrape", "scrape-accept"),
        ),
        (exchange(path=b"/v1/orders/1", headers={"user-agent": "curl/8"}), ("business", "default")),
        # An inbound call to /api/v1/namespaces on our own service is ours, not the API server's.
        (exchange(path=b"/api/v1/namespaces/a/pods", headers={}), ("business", "default")),
    ],
)
def test_builtin_classes(record: dict, expected: tuple[str, str]) -> None:
    """Each built-in rule catches its traffic and nothing else."""
    assert CLASSIFIER.classify(record) == expected  # type: ignore[arg-type]


def test_rules_file_comes_first_and_matches_every_condition(tmp_path: Path) -> None:
    """User rules are tried before the built-ins, and all their conditions must hold."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        """
rules:
  - name: internal-health
    class: probe
    direction: inbound
    method: [GET, HEAD]
    host: "*.shop.svc.cluster.local"
    path: /internal/**
    headers: {x-caller: "monitor-*"}
    source: {namespace: shop}
disable_rules: [scrape-accept]
"""
    )
    rules = load_rules(rules_file)
    classifier = Classifier((r.rule() for r in rules.rules), disable=rules.disable_rules)
    hit = exchange(path=b"/internal/health/deep", headers={"x-caller": "Monitor-7"})
    assert classifier.classify(hit) == ("probe", "internal-health")
    wrong_method = exchange(path=b"/internal/health/deep", headers={"x-caller": "monitor-7"}, method="POST")
    assert classifier.classify(wrong_method) == ("business", "default")
    scrape = exchange(path=b"/metrics", headers={"accept": "application/openmetrics-text"})
    assert classifier.classify(scrape) == ("business", "default")  # rule disabled


def test_path_glob_stays_within_a_segment() -> None:
    """In a path glob, * matches within one segment and ** across segments."""
    from trafficreel.streams import Rule

    classifier = Classifier(
        [Rule("one", "probe", path="/a/*/c"), Rule("deep", "scrape", path="/x/**")], builtin=False
    )
    assert classifier.classify(exchange(path=b"/a/b/c")) == ("probe", "one")
    assert classifier.classify(exchange(path=b"/a/b/b/c")) == ("business", "default")
    assert classifier.classify(exchange(path=b"/x/1/2/3")) == ("scrape", "deep")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [{name: a, class: b, colour: red}]", "rules.0.colour"),
        ("sampling: {rate: 2}", "between 0 and 1"),
        ("samplng: {}", "samplng"),
        ("- just a list", "mapping"),
        ("rules: [{name: a, class: b, path_regex: '('}]", "not a valid regex"),
        ("disable_rules: [no-such-rule]", "unknown built-in rule"),
    ],
)
def test_bad_rules_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    """A typo or a bad value in the rules file is an error naming the place, never silently ignored."""
    from trafficreel.streams import Processor

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(text)
    with pytest.raises((ConfigError, ValueError), match=message):
        Processor(load_rules(rules_file), {"business": "b", "k8s-api": "k", "probe": "p", "scrape": "s"})
