"""Rewrites applied to recorded requests before they are sent: headers, host, path prefix, regexes.

A rewrite file is YAML with the same keys as the model below, for example::

    set_headers:
      Authorization: "Bearer ${TOKEN}"     # replaces the redacted value
    remove_headers: [x-request-id]
    host: orders.staging.svc
    path_prefix:
      - {from: /v1/, to: /v2/}
    substitute:
      - {where: body, pattern: '"env":"prod"', replacement: '"env":"staging"'}
      - {where: "header:x-tenant", pattern: "^acme$", replacement: "acme-test"}

``${NAME}`` in a value is replaced by the environment variable ``NAME`` when the file is loaded, so
secrets stay out of the file. Everything works on bytes: nothing is decoded or re-encoded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RewriteError

__all__ = ["PathPrefix", "Rewriter", "Rewrites", "Substitution", "load_rewrites"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PathPrefix(BaseModel):
    """Replace a leading path prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str = Field(alias="from")
    to: str


class Substitution(BaseModel):
    """A regex substitution in one part of the request."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    where: str
    pattern: str
    replacement: str = ""

    @field_validator("where")
    @classmethod
    def _where(cls, value: str) -> str:
        if value in ("path", "query", "body") or (value.startswith("header:") and len(value) > 7):
            return value
        raise ValueError("where must be path, query, body or header:<name>")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value.encode())
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


class Rewrites(BaseModel):
    """What to change in every replayed request. Empty means: send the recorded request as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    set_headers: dict[str, str] = {}
    remove_headers: list[str] = []
    host: str | None = None
    path_prefix: list[PathPrefix] = []
    substitute: list[Substitution] = []

    def merged(self, other: Rewrites) -> Rewrites:
        """These rewrites followed by ``other`` (flags given on the command line win over a file)."""
        return Rewrites(
            set_headers={**self.set_headers, **other.set_headers},
            remove_headers=[*self.remove_headers, *other.remove_headers],
            host=other.host or self.host,
            path_prefix=[*self.path_prefix, *other.path_prefix],
            substitute=[*self.substitute, *other.substitute],
        )


def _expand(value: Any) -> Any:
    if isinstance(value, str):

        def env(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise RewriteError(
                    f"The rewrite file uses ${{{name}}} but {name} is not set in the environment."
                )
            return os.environ[name]

        return _ENV.sub(env, value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def load_rewrites(path: str | Path) -> Rewrites:
    """Read a YAML rewrite file; ``RewriteError`` says what is wrong with it."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RewriteError(f"Cannot read the rewrite file {path}: {exc}") from exc
    try:
        return Rewrites.model_validate(_expand(data))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RewriteError(f"The rewrite file {path} is invalid: {problems}.") from exc


@dataclass(frozen=True, slots=True)
class _Sub:
    where: str
    header: bytes
    pattern: re.Pattern[bytes]
    replacement: bytes


class Rewriter:
    """Rewrites compiled once; ``apply`` runs per request."""

    def __init__(self, rewrites: Rewrites) -> None:
        self.empty = rewrites == Rewrites()
        self.set_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in rewrites.set_headers.items()
        ]
        self.set_names = {k.lower() for k, _ in self.set_headers}
        self.remove = {h.lower().encode("latin-1") for h in rewrites.remove_headers} | self.set_names
        self.host = rewrites.host.encode("latin-1") if rewrites.host else None
        self.prefixes = [(p.from_.encode(), p.to.encode()) for p in rewrites.path_prefix]
        self.subs = [
            _Sub(
                s.where.split(":", 1)[0],
                s.where.split(":", 1)[1].lower().encode("latin-1") if s.where.startswith("header:") else b"",
                re.compile(s.pattern.encode()),
                s.replacement.encode(),
            )
            for s in rewrites.substitute
        ]

    def apply(
        self, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]:
        """The rewritten path, query, headers (in order) and body."""
        if self.remove:
            kept: list[tuple[bytes, bytes]] = []
            placed: set[bytes] = set()
            values = {k.lower(): (k, v) for k, v in self.set_headers}
            for name, value in headers:
                low = name.lower()
                if low in self.set_names:
                    if low not in placed:  # a set header takes the place of the first recorded one
                        placed.add(low)
                        kept.append(values[low])
                elif low not in self.remove:
                    kept.append((name, value))
            kept.extend(values[low] for low in values if low not in placed)
            headers = kept
        if self.host is not None:
            headers = [(n, self.host) if n.lower() == b"host" else (n, v) for n, v in headers]
        for old, new in self.prefixes:
            if path.startswith(old):
                path = new + path[len(old) :]
                break
        for sub in self.subs:
            if sub.where == "path":
                path = sub.pattern.sub(sub.replacement, path)
            elif sub.where == "query":
                query = sub.pattern.sub(sub.replacement, query)
            elif sub.where == "body":
                body = sub.pattern.sub(sub.replacement, body)
            else:
                headers = [
                    (n, sub.pattern.sub(sub.replacement, v)) if n.lower() == sub.header else (n, v)
                    for n, v in headers
                ]
        return path, query, headers, body
