"""Redaction in the stream, deeper than at source: the recorder's deep redaction run again.

Records from recorders with redaction off, body redaction off, or older rules are redacted here;
what the recorder already redacted is left alone. Redactions made here are listed with stage
``stream``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trafficreel.producers._deep import (
    DEFAULT_JSON_KEYS,
    DEFAULT_KEY_SUFFIXES,
    DEFAULT_PATTERNS,
    DeepRedactor,
)

__all__ = ["DEFAULT_JSON_KEYS", "DEFAULT_KEY_SUFFIXES", "DEFAULT_PATTERNS", "StreamRedactor"]


class StreamRedactor(DeepRedactor):
    """The deep redactor with stage ``stream``."""

    def __init__(
        self,
        *,
        json_keys: Iterable[str] = DEFAULT_JSON_KEYS,
        key_suffixes: Iterable[str] = DEFAULT_KEY_SUFFIXES,
        patterns: Mapping[str, str] | None = None,
        headers: Iterable[str] = (),
        query: Iterable[str] = (),
        keep: Iterable[str] = (),
    ) -> None:
        super().__init__(
            stage="stream",
            json_keys=json_keys,
            key_suffixes=key_suffixes,
            patterns=patterns,
            headers=headers,
            query=query,
            keep=keep,
        )
