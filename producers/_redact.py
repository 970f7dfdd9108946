"""Redaction at source: credentials never leave the process.

Header values of credential headers are replaced by ``REDACTED`` (cookie and set-cookie keep
their names and attributes, only values go); query parameters with token-like names keep their
name and lose their value. Every replacement is listed in the record, never the secret itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from trafficreel.schemas import Redaction

__all__ = ["MARKER", "Redactor"]

MARKER = b"REDACTED"

_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
    "x-goog-iap-jwt-assertion",
    "x-vault-token",
    "private-token",
    "x-hub-signature",
    "x-hub-signature-256",
)
# Names that look like credentials whatever the header: x-foo-token, x-service-secret, x-api-key-2 …
_HEADER_LIKE = re.compile(rb"(?:^|-)(?:token|secret|password|passwd|api-?key|auth|session|signature)(?:-|$)")
_QUERY = (
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
    "code",
    "session",
    "sessionid",
    "jwt",
)

Header = Sequence[bytes]  # (name, value) as the server gives it


class Redactor:
    """Redacts headers and query strings; rules compiled once."""

    def __init__(
        self, extra_headers: Iterable[str] = (), extra_query: Iterable[str] = (), keep: Iterable[str] = ()
    ) -> None:
        # ``keep``: header and query parameter names never redacted, whatever the rules say (a
        # pagination token, a CSRF token a replay needs).
        kept = {k.strip().lower() for k in keep if k.strip()}
        self._keep = frozenset(k.encode() for k in kept)
        self._headers = frozenset(h.lower().encode() for h in (*_HEADERS, *extra_headers)) - self._keep
        self._verdicts: dict[bytes, bool] = {}
        names = sorted({q.lower() for q in (*_QUERY, *extra_query)} - kept, key=len, reverse=True)
        # Cheap pre-check: is any listed name followed by "="? Searched in the lowercased query
        # reversed, the regex starts at the literal "=" (a C-speed scan) instead of trying every
        # name at every byte. (Every name kept: an expression that never matches.)
        self._maybe = re.compile(
            b"=(?:" + b"|".join(re.escape(n.encode()[::-1]) for n in names) + rb")(?:[&;]|$)"
            if names
            else rb"(?!)"
        ).search
        # name=value pairs whose (case-insensitive, possibly percent-encoded-free) name is listed.
        self._query = re.compile(
            rb"(?i)(^|[&;])(" + b"|".join(re.escape(n.encode()) for n in names) + rb")=([^&;#]*)"
        )

    def sensitive(self, name: bytes) -> bool:
        found = self._verdicts.get(name)
        if found is None:
            lowered = name.lower()
            found = lowered not in self._keep and (
                lowered in self._headers or _HEADER_LIKE.search(lowered) is not None
            )
            if len(self._verdicts) < 4096:  # header names repeat; bound the cache against odd clients
                self._verdicts[name] = found
        return found

    def redact_value(self, name: bytes, value: bytes) -> bytes:
        """The value of a sensitive header with its secret replaced (names and attributes kept)."""
        lowered = name.lower()
        if lowered == b"cookie":
            return _cookie(value)
        if lowered == b"set-cookie":
            return _set_cookie(value)
        return _keep_scheme(value)

    def headers(
        self, headers: Sequence[Header], where: str, found: list[Redaction], stage: str = "source"
    ) -> Sequence[Header]:
        """Headers with credential values replaced; the same list when there is nothing to redact.

        Values already redacted (by an earlier stage) are left alone and not listed again.
        """
        out: list[Header] | None = None
        verdicts = self._verdicts
        for i, (name, value) in enumerate(headers):
            verdict = verdicts.get(name)
            if not (self.sensitive(name) if verdict is None else verdict):
                continue
            new = self.redact_value(name, value)
            if new == value:
                continue
            if out is None:
                out = list(headers)
            out[i] = (name, new)
            found.append(
                {
                    "location": f"{where}.header:{name.lower().decode('latin-1')}",
                    "rule": "header",
                    "stage": stage,
                }
            )
        return headers if out is None else out

    def query(self, query: bytes, where: str, found: list[Redaction], stage: str = "source") -> bytes:
        """The raw query with listed parameters' values replaced, byte-exact elsewhere."""
        if not query or b"=" not in query or self._maybe(query.lower()[::-1]) is None:
            return query

        def replace(match: re.Match[bytes]) -> bytes:
            if not match.group(3) or match.group(3) == MARKER:
                return match.group(0)
            found.append(
                {
                    "location": f"{where}.query:{match.group(2).decode('latin-1').lower()}",
                    "rule": "query",
                    "stage": stage,
                }
            )
            return match.group(1) + match.group(2) + b"=" + MARKER

        return self._query.sub(replace, query)


def _keep_scheme(value: bytes) -> bytes:
    # "Bearer abc" → "Bearer REDACTED": the scheme tells replay which credential to re-inject.
    if value == MARKER:
        return value
    scheme, sep, rest = value.partition(b" ")
    if sep and rest and scheme.isalpha() and len(scheme) <= 20:
        return scheme + b" " + MARKER
    return MARKER


def _cookie(value: bytes) -> bytes:
    parts = []
    for pair in value.split(b";"):
        name, sep, _ = pair.partition(b"=")
        parts.append(name + b"=" + MARKER if sep else pair)
    return b";".join(parts)


def _set_cookie(value: bytes) -> bytes:
    first, sep, attributes = value.partition(b";")
    name, eq, _ = first.partition(b"=")
    return (name + b"=" + MARKER if eq else MARKER) + sep + attributes
