"""Body capture: keep the first bytes of text-like bodies, count and hash all of them.

A ``BodyCapture`` is fed each chunk as it passes (O(1) bookkeeping plus the running SHA-256) and
never holds more than the keep limit. Whether a body is kept is decided once, from its
Content-Type, by a ``BodyPolicy`` compiled at start-up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from trafficreel.schemas import Body, BodyState

__all__ = ["BodyCapture", "BodyPolicy"]


class BodyPolicy:
    """Which content types are kept, and how much; computed once."""

    def __init__(self, types: Iterable[str], limit: int) -> None:
        exact: set[str] = set()
        patterns = []
        for t in types:
            t = t.strip().lower()
            if "*" in t:
                patterns.append(re.escape(t).replace(r"\*", "[^;]*"))
            else:
                exact.add(t)
        self._exact = frozenset(exact)
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        self.limit = limit
        self._cache: dict[bytes | None, bool] = {}

    def keeps(self, content_type: bytes | None) -> bool:
        """Whether a body of this Content-Type header value is kept (up to the limit)."""
        found = self._cache.get(content_type)
        if found is None:
            found = self._decide(content_type)
            if len(self._cache) < 1024:  # content types are few; bound it against odd clients
                self._cache[content_type] = found
        return found

    def _decide(self, content_type: bytes | None) -> bool:
        if not content_type or self.limit == 0:
            return False
        media = content_type.split(b";", 1)[0].strip().decode("latin-1").lower()
        return media in self._exact or bool(self._pattern and self._pattern.fullmatch(media))


class BodyCapture:
    """One body as it streams: kept prefix, total size, running digest."""

    __slots__ = ("_chunks", "_digest", "_keep", "_kept", "_limit", "aborted", "declared", "size")

    def __init__(self, keep: bool, limit: int, declared: int | None = None) -> None:
        self._keep = keep
        self._limit = limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self._digest = hashlib.sha256()
        self.size = 0
        self.declared = declared
        self.aborted = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        self._digest.update(chunk)
        if self._keep and self._kept < self._limit:
            room = self._limit - self._kept
            part = chunk if len(chunk) <= room else chunk[:room]
            self._chunks.append(part)
            self._kept += len(part)

    @property
    def kept_bytes(self) -> int:
        return self._kept

    def result(self, content_type: str | None, content_encoding: str | None) -> Body:
        """The body part of the record (built off the request path)."""
        state: BodyState
        data: bytes | None = None
        if self.aborted:
            state = "ABORTED"
            data = b"".join(self._chunks) if self._keep else None
        elif self.size == 0:
            state = "NONE"  # HEAD and 304 declare a length and send nothing: still no body
        elif not self._keep:
            state = "NOT_KEPT"
        elif self.size > self._kept:
            state = "TRUNCATED"
            data = b"".join(self._chunks)
        else:
            state = "COMPLETE"
            data = b"".join(self._chunks)
        return {
            "data": data,
            "size": self.size,
            "sha256": self._digest.digest() if self.size and not self.aborted else None,
            "content_type": content_type,
            "content_encoding": content_encoding,
            "declared_length": self.declared,
            "state": state,
        }
