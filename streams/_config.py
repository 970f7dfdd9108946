"""The stream rules file (YAML): classification rules, route templates, redaction, sampling, outputs.

Every key is optional; an empty file (or none) means the built-in behaviour. Unknown keys are
rejected with the path to them, so a typo never silently turns a rule off::

    rules:                      # tried in order, before the built-in rules
      - name: internal-health
        class: probe
        direction: inbound
        path: /internal/health/**
    disable_rules: [scrape-accept]
    routes:                     # per service ("*" = every service); the first match wins
      orders: [/v1/orders/{order}, /v1/orders/{order}/items/{item}]
    redact:
      json_keys: [pin, iban]    # added to the defaults
      keep: [next_page_token]   # never redacted (header, query parameter or JSON key names)
      patterns: {iban: "[A-Z]{2}\\d{2}[A-Z0-9]{11,30}"}
    sampling:
      rate: 1.0
      class_rates: {probe: 0.01}
      cap: 600                  # per (service, class, route) per window
      window_seconds: 60
      slow_ms: 1000
      slow_ms_routes: {/v1/search: 3000}
    outputs:                    # class -> topic; null drops the class
      probe: null
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trafficreel.errors import ConfigError

from ._classify import Rule
from ._redact import DEFAULT_JSON_KEYS, DEFAULT_KEY_SUFFIXES, DEFAULT_PATTERNS
from ._sample import SamplingPolicy

__all__ = ["RuleSpec", "StreamRules", "load_rules"]

_Strings = str | list[str]


def _strings(value: _Strings | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RuleSpec(_Model):
    """One classification rule as written in the file."""

    name: str
    traffic_class: str = Field(alias="class")
    direction: Literal["inbound", "outbound"] | None = None
    method: _Strings | None = None
    host: _Strings | None = None
    path: str | None = None
    path_regex: str | None = None
    headers: dict[str, _Strings] = Field(default_factory=dict)
    source: dict[str, _Strings] = Field(default_factory=dict)

    def rule(self) -> Rule:
        return Rule(
            name=self.name,
            traffic_class=self.traffic_class,
            direction=self.direction,
            methods=_strings(self.method),
            hosts=_strings(self.host),
            path=self.path,
            path_regex=self.path_regex,
            headers={k: _strings(v) for k, v in self.headers.items()},
            source={k: _strings(v) for k, v in self.source.items()},
        )


class RedactSpec(_Model):
    json_keys: list[str] = Field(default_factory=list)  # added to the defaults
    patterns: dict[str, str] = Field(default_factory=dict)  # added to (or replacing) the defaults
    headers: list[str] = Field(default_factory=list)
    query: list[str] = Field(default_factory=list)
    keep: list[str] = Field(default_factory=list)  # header, query and JSON key names never redacted
    replace_defaults: bool = False

    def all_json_keys(self) -> tuple[str, ...]:
        return tuple(self.json_keys) if self.replace_defaults else (*DEFAULT_JSON_KEYS, *self.json_keys)

    def all_key_suffixes(self) -> tuple[str, ...]:
        return () if self.replace_defaults else DEFAULT_KEY_SUFFIXES

    def all_patterns(self) -> dict[str, str]:
        return dict(self.patterns) if self.replace_defaults else {**DEFAULT_PATTERNS, **self.patterns}


class SamplingSpec(_Model):
    rate: float = 1.0
    class_rates: dict[str, float] = Field(default_factory=dict)
    cap: int | None = None
    window_seconds: int = 60
    slow_ms: float | None = 1000.0
    slow_ms_routes: dict[str, float] = Field(default_factory=dict)
    keep_errors: bool = True

    def policy(self) -> SamplingPolicy:
        return SamplingPolicy(**self.model_dump())


class StreamRules(_Model):
    """The whole rules file."""

    rules: list[RuleSpec] = Field(default_factory=list)
    builtin_rules: bool = True
    disable_rules: list[str] = Field(default_factory=list)
    routes: dict[str, list[str]] = Field(default_factory=dict)
    redact: RedactSpec = Field(default_factory=RedactSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    outputs: dict[str, str | None] = Field(default_factory=dict)


def load_rules(path: Path | str | None) -> StreamRules:
    """Read and check a rules file; ``None`` gives the defaults."""
    if path is None:
        return StreamRules()
    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read the stream rules file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the stream rules file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the stream rules file {path} must hold a mapping at the top level")
    try:
        return StreamRules.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"the stream rules file {path} is invalid: {problems}") from exc
