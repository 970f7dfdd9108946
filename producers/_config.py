"""Recorder settings, declared once each: type, environment variable, default and meaning.

Stdlib only (the recorder runs inside user apps). Every field can be given as a keyword to
``RecorderConfig`` or read by ``RecorderConfig.from_env()`` from ``TRAFFICREEL_<NAME>``;
an unknown keyword is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

__all__ = ["DEFAULT_BODY_TYPES", "RecorderConfig"]

DEFAULT_BODY_TYPES = (
    "application/json",
    "application/*+json",
    "application/x-ndjson",
    "application/graphql",
    "application/graphql-response+json",
    "application/x-www-form-urlencoded",
    "application/xml",
    "application/*+xml",
    "application/javascript",
    "application/x-yaml",
    "application/yaml",
    "text/*",
)


def _doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True, kw_only=True)
class RecorderConfig:
    """How the in-app recorder captures and where it sends records."""

    enabled: bool = _doc(
        "Record at all. When false the middleware passes requests straight through.", default=True
    )
    service_name: str = _doc("Service name stored with every record (else OTEL_SERVICE_NAME).", default="")
    service_version: str = _doc("Service version or build stored with every record.", default="")
    kafka_bootstrap: str = _doc("Kafka bootstrap servers.", default="127.0.0.1:9092")
    kafka_config: Mapping[str, str] = _doc(
        "Extra librdkafka properties (JSON in the environment): security.protocol, sasl.*, ssl.*.",
        default_factory=dict,
    )
    topic_prefix: str = _doc("Records go to <prefix>.raw.", default="trafficreel")
    schema_registry_url: str = _doc(
        "Confluent Schema Registry URL; empty means single-object encoding.", default=""
    )
    body_limit: int = _doc(
        "Bytes of each text-like body kept; the rest is only counted and hashed.", default=65536
    )
    body_types: tuple[str, ...] = _doc(
        "Content types whose bodies are kept (comma-separated; `*` wildcards; +json/+xml suffixes).",
        default=DEFAULT_BODY_TYPES,
    )
    queue_bytes: int = _doc(
        "Memory bound of records waiting to be sent; beyond it records are dropped.", default=32 * 1024 * 1024
    )
    redact: bool = _doc("Redact credentials before records leave the process.", default=True)
    redact_bodies: bool = _doc(
        "Also redact inside kept bodies and query strings (JSON keys such as password or token, bearer "
        "tokens, JWTs, card numbers, e-mail addresses), on the background thread, never on the request path.",
        default=True,
    )
    redact_headers: tuple[str, ...] = _doc("More header names to redact (comma-separated).", default=())
    redact_query: tuple[str, ...] = _doc(
        "More query parameter names to redact (comma-separated).", default=()
    )
    redact_keep: tuple[str, ...] = _doc(
        "Header, query parameter and JSON key names never redacted, defaults included "
        "(comma-separated), e.g. next_page_token,x-csrf-token.",
        default=(),
    )
    exclude_paths: tuple[str, ...] = _doc(
        "Path prefixes not to record (comma-separated), e.g. /metrics.", default=()
    )
    flush_timeout: float = _doc(
        "Seconds to wait at shutdown for queued records to be delivered.", default=5.0
    )
    tags: Mapping[str, str] = _doc(
        "Labels stored with every record (JSON object in the environment).", default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.body_limit < 0 or self.queue_bytes <= 0 or self.flush_timeout < 0:
            raise ValueError("body_limit must be >= 0, queue_bytes > 0 and flush_timeout >= 0")
        if not self.service_name:
            object.__setattr__(self, "service_name", os.environ.get("OTEL_SERVICE_NAME", "unknown-service"))

    @property
    def topic(self) -> str:
        return f"{self.topic_prefix}.raw"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RecorderConfig:
        """Read every setting from ``TRAFFICREEL_<NAME>``; keyword overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"TRAFFICREEL_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = _parse(f.type if isinstance(f.type, str) else str(f.type), raw)
            except ValueError as exc:
                raise ValueError(f"TRAFFICREEL_{f.name.upper()}={raw!r}: {exc}") from exc
        return cls(**{**values, **overrides})

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, meaning) for every setting, for docs and --help."""
        rows = []
        for f in fields(cls):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            rows.append((f"TRAFFICREEL_{f.name.upper()}", repr(default), f.metadata["doc"]))
        return rows


def _parse(kind: str, raw: str) -> Any:
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("expected true or false")
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind.startswith("Mapping"):
        value = json.loads(raw or "{}")
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("expected a JSON object of strings")
        return value
    return raw
