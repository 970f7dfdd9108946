"""Normalised routes: ``/users/123/orders/9f1c…`` → ``/users/{id}/orders/{uuid}``.

The raw path is never changed; the route is a separate field that groups exchanges for analysis
and caps. A service's own templates win over the heuristics: ``/v1/orders/{order}`` matches any
one segment where the braces are, ``{rest*}`` as the last segment matches the rest of the path.
The heuristics replace a whole segment (percent-decoded for the test only) when it is an integer,
a UUID, a date, an e-mail address, a long hex string or a long base64-ish token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

__all__ = ["RouteNormaliser", "normalise_path"]

_SEGMENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("{id}", re.compile(r"^[-+]?\d+$")),
    ("{uuid}", re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    ("{date}", re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")),
    ("{email}", re.compile(r"^[^@/\s]+@[^@/\s]+\.[A-Za-z]{2,}$")),
    ("{hex}", re.compile(r"^(?=[^g-zG-Z]*\d)[0-9a-fA-F]{16,}$")),
    # Opaque ids and tokens: long, URL-safe base64 alphabet, mixing digits with letters.
    ("{token}", re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-=~.]{20,}$")),
)
_MAX_ROUTE = 512


def _segment(segment: str) -> str:
    if not segment:
        return segment
    probe = unquote(segment) if "%" in segment else segment
    for placeholder, pattern in _SEGMENT_RULES:
        if pattern.match(probe):
            return placeholder
    return segment


def normalise_path(path: str) -> str:
    """The heuristic route of a raw path (query excluded)."""
    return "/".join(_segment(s) for s in path.split("/"))[:_MAX_ROUTE]


class _Template:
    __slots__ = ("parts", "rest", "text")

    def __init__(self, text: str) -> None:
        if not text.startswith("/"):
            raise ValueError(f"route template {text!r} must start with '/'")
        self.text = text
        parts = text.split("/")
        self.rest = bool(parts) and parts[-1].startswith("{") and parts[-1].endswith("*}")
        if self.rest:
            parts = parts[:-1]
        self.parts = tuple(None if p.startswith("{") and p.endswith("}") else p for p in parts)

    def match(self, segments: list[str]) -> bool:
        if len(segments) < len(self.parts) or (not self.rest and len(segments) != len(self.parts)):
            return False
        return all(p is None or p == s for p, s in zip(self.parts, segments, strict=False))


class RouteNormaliser:
    """``route(service, raw_path) -> str``: the first matching template of the service (or of
    ``"*"``, for every service), else the heuristics."""

    def __init__(self, templates: Mapping[str, Iterable[str]] | None = None) -> None:
        self._templates = {
            service: [_Template(t) for t in items] for service, items in (templates or {}).items()
        }
        self._cache: dict[tuple[str, bytes], str] = {}

    def route(self, service: str, path: bytes) -> str:
        key = (service, path)
        found = self._cache.get(key)
        if found is not None:
            return found
        text = path.decode("latin-1")
        route = None
        templates = [*self._templates.get(service, ()), *self._templates.get("*", ())]
        if templates:
            segments = text.split("/")
            route = next((t.text for t in templates if t.match(segments)), None)
        if route is None:
            route = normalise_path(text)
        if len(self._cache) >= 50_000:  # raw paths with ids are unbounded; keep the cache small
            self._cache.clear()
        self._cache[key] = route
        return route
