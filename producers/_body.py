"""Body capture: keep the first bytes of text-like bodies, count and hash all of them.

A ``BodyCapture`` is fed each chunk as it passes and never holds more than the keep limit. To keep
the request path short, chunks up to the limit are only referenced there; the SHA-256 is computed
later on the recorder's thread. Only when a body outgrows the limit is the digest brought up to
date and then updated chunk by chunk, so memory stays bounded whatever the body size. Whether a
body is kept is decided once per Content-Type by a ``BodyPolicy`` compiled at start-up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

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
    """One body as it streams: the first ``limit`` bytes by reference, the total size, the digest.

    Nothing about headers is needed here: whether the kept bytes end up in the record (content type
    policy) and the declared length are settled off the request path, in ``result()``.
    """

    __slots__ = ("_chunks", "_digest", "_limit", "_seen", "aborted", "kept_bytes", "size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes | bytearray] = []  # the first `limit` bytes, by reference
        self.kept_bytes = 0  # the first bytes held, at most ``limit``
        self._digest: Any = None  # created once the body outgrows the limit
        self.size = 0
        self.aborted = False
        self._seen = True

    def feed(self, chunk: bytes | bytearray) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self._digest is None:
            if self.kept_bytes + len(chunk) <= self._limit:
                self._chunks.append(chunk)
                self.kept_bytes += len(chunk)
                return
            # Outgrown: hash what is held, keep only the first `limit` bytes, hash from here on.
            self._digest = hashlib.sha256()
            for held in self._chunks:
                self._digest.update(held)
            room = self._limit - self.kept_bytes
            if room > 0:
                self._chunks.append(chunk[:room])
                self.kept_bytes += room
        self._digest.update(chunk)

    def assume(self, size: int | None) -> None:
        """The body went out without passing here (a server's sendfile path): its declared size
        (0 when unknown), no bytes, no digest."""
        self.size = size or 0
        self._seen = False

    def result(
        self, keep: bool, content_type: str | None, content_encoding: str | None, declared: int | None = None
    ) -> Body:
        """The body part of the record (built off the request path)."""
        state: BodyState
        data: bytes | None = None
        if self.aborted:
            state = "ABORTED"
            data = b"".join(self._chunks) if keep else None
        elif not self._seen:
            state = "NOT_KEPT"  # the server sent it from a file, past this layer: nothing to keep
        elif self.size == 0:
            state = "NONE"  # HEAD and 304 declare a length and send nothing: still no body
        elif not keep:
            state = "NOT_KEPT"
        elif self._digest is not None:
            state = "TRUNCATED"
            data = b"".join(self._chunks)
        else:
            state = "COMPLETE"
            data = b"".join(self._chunks)
        digest = None
        if self.size and not self.aborted and self._seen:
            whole = self._digest if self._digest is not None else hashlib.sha256(b"".join(self._chunks))
            digest = whole.digest()
        return {
            "data": data,
            "size": self.size,
            "sha256": digest,
            "content_type": content_type,
            "content_encoding": content_encoding,
            "declared_length": declared,
            "state": state,
        }
