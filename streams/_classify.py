"""Classification: which kind of traffic an exchange is, and the name of the rule that said so.

Rules are tried in order; the first that matches gives the class. User rules (from the rules file)
come first, then the built-in ones, then ``business`` for everything else. A rule matches when all
of its conditions hold: direction, method, host (glob), path (glob or regex), header values (glob)
and source labels (glob). Globs are case-insensitive for hosts and header values, case-sensitive
for paths; in a path glob ``*`` stays within one segment and ``**`` crosses segments.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trafficreel.schemas import Exchange

__all__ = ["BUILTIN_RULES", "DEFAULT_CLASS", "Classifier", "Rule", "glob_to_regex", "host_without_port"]

DEFAULT_CLASS = "business"
DEFAULT_RULE = "default"

# The names the in-cluster API server answers to (client-go and the Python client use these).
K8S_API_HOSTS = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# Paths only the Kubernetes API has: core resources, API groups, OpenAPI documents. Generic ones
# (/api/v1/users, /version, /healthz) are left to the host rule: business services use them too.
K8S_API_PATH = (
    r"^/api/v1/(namespaces|pods|nodes|services|configmaps|secrets|events|endpoints|serviceaccounts"
    r"|persistentvolumes|persistentvolumeclaims|componentstatuses|limitranges|resourcequotas"
    r"|replicationcontrollers|podtemplates|bindings)(/|$)"
    r"|^/apis/[a-z0-9.-]+/v[0-9][a-z0-9]*(/|$)|^/openapi/v[23](/|$)"
)
# The Python client's default user agent is "OpenAPI-Generator/<version>/python"; client-go's (and
# so kubectl's and every Go controller's) is "<program>/<version> (<os>/<arch>) kubernetes/<commit>".
K8S_CLIENT_AGENTS = (
    "openapi-generator/*/python",
    "kubectl/*",
    "*client-go/*",
    "* (*/*) kubernetes/*",
    "kubernetes-python-client*",
)


def glob_to_regex(pattern: str) -> str:
    """A path glob as a regex: ``*`` within a segment, ``**`` across segments, ``?`` one character."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "^" + "".join(out) + "$"


def host_without_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def _same_endpoint(host: str, api: str) -> bool:
    """Whether a Host names the API server's address: the same host, and the same port when both
    give one (another service listening on the same address is not the API server)."""
    bare, api_bare = host_without_port(host), host_without_port(api)
    if bare != api_bare:
        return False
    port, api_port = host[len(bare) + 1 :], api[len(api_bare) + 1 :]
    return not port or not api_port or port == api_port


def _globs(patterns: str | Sequence[str]) -> re.Pattern[str]:
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in items))


@dataclass(frozen=True)
class Rule:
    """One classification rule; every given condition must hold."""

    name: str
    traffic_class: str
    direction: str | None = None  # "inbound" | "outbound"
    methods: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()  # globs, matched without the port too
    path: str | None = None  # glob
    path_regex: str | None = None
    headers: Mapping[str, str | Sequence[str]] = field(default_factory=dict)  # name -> value glob(s)
    source: Mapping[str, str | Sequence[str]] = field(default_factory=dict)  # source field -> glob(s)
    api_server_host: bool = False  # host is the API server address recorded with the source

    def compile(self) -> _Compiled:
        if self.direction not in (None, "inbound", "outbound"):
            raise ValueError(
                f"rule {self.name!r}: direction must be inbound or outbound, not {self.direction!r}"
            )
        paths = []
        if self.path is not None:
            paths.append(re.compile(glob_to_regex(self.path)))
        if self.path_regex is not None:
            try:
                paths.append(re.compile(self.path_regex))
            except re.error as exc:
                raise ValueError(f"rule {self.name!r}: path_regex is not a valid regex: {exc}") from exc
        return _Compiled(
            rule=self,
            direction=self.direction.upper() if self.direction else None,
            methods=frozenset(m.upper() for m in self.methods),
            hosts=_globs(self.hosts) if self.hosts else None,
            paths=tuple(paths),
            headers=tuple((n.lower().encode("latin-1"), _globs(g)) for n, g in self.headers.items()),
            source=tuple((k, _globs(g)) for k, g in self.source.items()),
        )


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    direction: str | None
    methods: frozenset[str]
    hosts: re.Pattern[str] | None
    paths: tuple[re.Pattern[str], ...]
    headers: tuple[tuple[bytes, re.Pattern[str]], ...]
    source: tuple[tuple[str, re.Pattern[str]], ...]

    def matches(self, record: Exchange, view: _View) -> bool:
        if self.direction is not None and record["direction"] != self.direction:
            return False
        request = record["request"]
        if self.methods and request["method"].upper() not in self.methods:
            return False
        if self.hosts is not None and not (self.hosts.match(view.host) or self.hosts.match(view.bare_host)):
            return False
        if self.rule.api_server_host and not view.is_api_server:
            return False
        if self.paths and not any(p.search(view.path) for p in self.paths):
            return False
        for name, values in self.headers:
            if not any(map(values.match, view.header(name))):
                return False
        source: Any = record["source"]
        for key, values in self.source:
            value = source.get(key)
            if value is None or not values.match(str(value).lower()):
                return False
        return True


class _View:
    """Views of one record that several rules look at, each worked out when first asked for."""

    __slots__ = ("_api", "_bare_host", "_decoded", "_path", "host", "record")

    def __init__(self, record: Exchange) -> None:
        self.record = record
        self.host = (record["request"]["host"] or "").lower()
        self._bare_host: str | None = None
        self._api: bool | None = None
        self._path: str | None = None
        self._decoded: dict[bytes, list[str]] | None = None

    @property
    def bare_host(self) -> str:
        if self._bare_host is None:
            self._bare_host = host_without_port(self.host)
        return self._bare_host

    @property
    def is_api_server(self) -> bool:
        if self._api is None:
            api = (self.record["source"].get("k8s_api_host") or "").lower()
            self._api = self.bare_host in K8S_API_HOSTS or (bool(api) and _same_endpoint(self.host, api))
        return self._api

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = self.record["request"]["path"].decode("latin-1")
        return self._path

    def header(self, name: bytes) -> list[str]:
        """The values of a request header (lowercase name), decoded and lowercased."""
        if self._decoded is None:
            self._decoded = {}
        decoded = self._decoded.get(name)
        if decoded is None:
            # Rules ask for one or two names: a scan per name costs less than indexing them all.
            decoded = self._decoded[name] = [
                h["value"].decode("latin-1").lower()
                for h in self.record["request"]["headers"]
                if h["name"].lower() == name
            ]
        return decoded


BUILTIN_RULES: tuple[Rule, ...] = (
    # Outbound calls to the API server, by its address: the in-cluster names, or the
    # KUBERNETES_SERVICE_HOST[:PORT] the recorder saw in the pod.
    Rule("k8s-api-host", "k8s-api", direction="outbound", api_server_host=True),
    # Outbound calls made by Kubernetes clients (the Python client, kubectl, client-go).
    Rule("k8s-api-client", "k8s-api", direction="outbound", headers={"user-agent": K8S_CLIENT_AGENTS}),
    # Outbound calls shaped like the Kubernetes API (e.g. through a proxy or an out-of-cluster config).
    Rule("k8s-api-path", "k8s-api", direction="outbound", path_regex=K8S_API_PATH),
    Rule("probe", "probe", direction="inbound", headers={"user-agent": "kube-probe/*"}),
    Rule("scrape", "scrape", direction="inbound", headers={"user-agent": "prometheus/*"}),
    Rule(
        "scrape-accept",
        "scrape",
        direction="inbound",
        methods=("GET",),
        path="/metrics",
        headers={"accept": ("*application/openmetrics-text*", "*text/plain;*version=0.0.4*")},
    ),
)


class Classifier:
    """Gives each record a class and the rule that matched: ``classify(record) -> (class, rule)``."""

    def __init__(
        self, rules: Iterable[Rule] = (), *, builtin: bool = True, disable: Iterable[str] = ()
    ) -> None:
        disabled = set(disable)
        unknown = disabled - {r.name for r in BUILTIN_RULES}
        if unknown:
            raise ValueError(
                f"cannot disable unknown built-in rule(s) {sorted(unknown)}; "
                f"built-in rules are {[r.name for r in BUILTIN_RULES]}"
            )
        chosen = [*rules, *(r for r in BUILTIN_RULES if builtin and r.name not in disabled)]
        names = [r.name for r in chosen]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {duplicates}")
        self.rules = tuple(chosen)
        self._compiled = tuple(r.compile() for r in chosen)
        # The rules that can match each direction, in order: a record is tried against those only.
        self._by_direction = {
            direction: tuple(c for c in self._compiled if c.direction in (None, direction))
            for direction in ("INBOUND", "OUTBOUND")
        }

    @property
    def classes(self) -> set[str]:
        return {DEFAULT_CLASS, *(r.traffic_class for r in self.rules)}

    def classify(self, record: Exchange) -> tuple[str, str]:
        view = _View(record)
        for compiled in self._by_direction.get(record["direction"], self._compiled):
            if compiled.matches(record, view):
                return compiled.rule.traffic_class, compiled.rule.name
        return DEFAULT_CLASS, DEFAULT_RULE
