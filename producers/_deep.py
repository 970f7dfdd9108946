"""Deep redaction of a built record: credential headers and query parameters, then the bodies.

JSON bodies lose the values of keys on a denylist (at any depth), and kept text bodies and query
strings lose bearer tokens, JWTs, card numbers (Luhn-checked) and e-mail addresses. Each
replacement is listed in the record with its stage (``source`` in the recorder's background
thread, ``stream`` in the stream worker, which runs it again for records from recorders with
redaction off or older rules); the secret itself never is. Already redacted values are left alone.

A body whose content encoding cannot be inspected (e.g. ``br``) or whose JSON cannot be redacted
safely (a secret object in a truncated body) loses its kept bytes (``state`` becomes ``NOT_KEPT``)
rather than pass a secret on. A changed body gets the size and SHA-256 of what is now kept (a
truncated one no digest), so no digest of a secret leaves the stream.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import operator
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trafficreel.schemas import Body, Exchange, Redaction, _decoder

from ._redact import MARKER, Redactor

__all__ = ["DEFAULT_JSON_KEYS", "DEFAULT_KEY_SUFFIXES", "DEFAULT_PATTERNS", "DeepRedactor"]

DEFAULT_JSON_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "api_secret",
    "authorization",
    "private_key",
    "credit_card",
    "card_number",
    "cvv",
    "cvc",
    "ssn",
    "session_id",
    "otp",
    "credential",
)
# A key also counts when it ends with one of these (db_password, github_token, aws_secret …);
# either way also in the plural (apiKeys, secrets).
DEFAULT_KEY_SUFFIXES = ("password", "passwd", "secret", "token", "apikey", "privatekey")

DEFAULT_PATTERNS: dict[str, str] = {
    "bearer": r"\b(?i:bearer)\s+(?!REDACTED\b)[A-Za-z0-9\-._~+/]{8,}=*",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    "card": r"\d(?:[ -]?\d){12,18}",  # boundaries and the Luhn check in _card()
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
}
_BEARER = re.compile(rb"(?i)^(bearer)(\s+)")
_TEXT_MEDIA = re.compile(
    r"^(text/.*|application/(.*[+/])?(json|xml|x-www-form-urlencoded|graphql|javascript|x-ndjson|yaml))$"
)
_JSON_MEDIA = re.compile(r"^application/(.*\+)?json$|^application/x-ndjson$")
_JSON_KEY_VALUE = re.compile(
    rb'"((?:[^"\\]|\\.){1,128})"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*|true|false|null|[\[{])'
)
_JSON_START = re.compile(rb"\s*[\[{]")
# The end of a body cut short: what may be the start of a secret there (the group "secret" is
# replaced; the json-key rule's group "key" names the key).
_CUT_TAIL = 256
_CUT_SECRETS = {
    "json-key": re.compile(rb'"(?P<key>(?:[^"\\]|\\.){1,128})"\s*:\s*"(?P<secret>(?:[^"\\]|\\.)*\\?)\Z'),
    "bearer": re.compile(rb"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*)\Z"),
    "jwt": re.compile(rb"(?P<secret>\beyJ[A-Za-z0-9_.-]*)\Z"),
    "card": re.compile(rb"(?P<secret>(?<![0-9A-Za-z_-])\d(?:[ -]?\d){5,}[ -]?)\Z"),
    "email": re.compile(rb"(?P<secret>(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9.-]*)\Z"),
}
_INFLATE_LIMIT = 8 << 20  # what a decompressed kept body may grow to before it is withheld


def _normal_key(key: str) -> str:
    """A JSON key as the key rules compare it: without "-", "_" and ".", lowercased. The two
    characters beyond ASCII that lowercase to ASCII letters (the Kelvin sign to "k", "İ" to "i"
    and a dot) stay as written: a key matches only where its bytes show the word to the gates."""
    squeezed = key.replace("-", "").replace("_", "").replace(".", "")
    if squeezed.isascii() or ("\u212a" not in squeezed and "\u0130" not in squeezed):
        return squeezed.lower()
    return _NOT_KELVIN_OR_DOTTED_I.sub(lambda part: part.group(0).lower(), squeezed)


_NOT_KELVIN_OR_DOTTED_I = re.compile("[^\u212a\u0130]+")
# A \u escape of a character beyond ASCII (a surrogate pair as one); other escapes are kept as
# written, as the gates read them.
_WIDE_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\."
)


def _wide(match: re.Match[str]) -> str:
    high, low, code = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    if code is not None:
        value = int(code, 16)
        if value >= 0x80 and not 0xD800 <= value < 0xE000:  # beyond ASCII, and not a lone surrogate
            return chr(value)
    return match.group(0)


def _json_key(raw: bytes) -> str:
    """A key as it stands in JSON text, for the key rules: its UTF-8, with the \\u escapes of
    characters beyond ASCII read (Python's json.dumps writes "ä" as "\\u00e4"). Other escapes stay
    as written ("\\u0074oken" is not "token"), so that the rules see no more than the gates do."""
    key = raw.decode("utf-8", "replace")
    return _WIDE_ESCAPE.sub(_wide, key) if "\\" in key else key


def _escaped(key: str) -> str:
    """A key parsed from JSON, fit for a record's text: a lone surrogate ("\\ud800" in the body)
    is written as that escape (Avro strings are UTF-8)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[bytes]) -> bool:
    """A card number: not part of a longer number, and Luhn-valid."""
    text, start, end = match.string, match.start(), match.end()
    if (start and text[start - 1 : start] in _NUMBER_CHARS) or text[end : end + 1] in _NUMBER_CHARS:
        return False
    return _luhn(re.sub(rb"[ -]", b"", match.group(0)).decode())


# A card number stands alone: not next to digits, letters or dashes (ids and hashes hold digit runs).
_NUMBER_CHARS = frozenset(
    bytes([c]) for c in b"0123456789-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


# Digits become "0", everything else "x", with separators deleted: 13 zeros in a row is a run of
# digits a card number could hide in (a superset of the pattern, found at C speed).
_DIGITS = bytes(48 if chr(c).isdigit() and c < 128 else 120 for c in range(256))
_DIGIT_RUN = b"0" * 13


def _always(text: bytes, lowered: bytes) -> bool:
    return True


# Cheap substring checks in front of the default patterns (a regex scan costs far more). A
# single byte is found by memchr, several times faster than a word: rare ones go first.
_GATES: dict[str, Callable[[bytes, bytes], bool]] = {
    "bearer": lambda text, lowered: b"bearer" in lowered,
    "jwt": lambda text, lowered: b"J" in text and b"eyJ" in text,
    "email": lambda text, lowered: b"@" in text or (b"%" in text and b"%40" in text),
    "card": lambda text, lowered: _DIGIT_RUN in text.translate(_DIGITS, b" -"),
}


def _squeeze(text: bytes) -> bytes:
    return text.translate(None, b"-_.")


def _key_regex(search: Callable[[bytes], re.Match[bytes] | None], text: bytes) -> bool:
    return search(_squeeze(text.lower())[::-1]) is not None


def _any_key(text: bytes) -> bool:
    return True


def _not_ascii_or_escaped(text: bytes) -> bool:
    """Whether a key holding a character beyond ASCII may be in ``text`` (raw or escaped)."""
    return not text.isascii() or b"\\u" in text


def _either(first: Callable[[bytes], bool], second: Callable[[bytes], bool], text: bytes) -> bool:
    return first(text) or second(text)


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


_NAME, _FIRST = operator.itemgetter("name"), operator.itemgetter(0)

_Codec = tuple[int, Callable[[bytes], bytes]]  # zlib's wbits to read it, and how to write it


def _inflate(data: bytes, wbits: int, whole: bool) -> bytes:
    """The decompressed body; of a body cut short (``whole`` false), what its bytes hold."""
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, _INFLATE_LIMIT)
    if inflater.unconsumed_tail or (whole and not inflater.eof):
        raise ValueError("compressed body is cut short or too large")
    return out


_CODECS: dict[str, _Codec] = {
    "gzip": (16 + zlib.MAX_WBITS, lambda d: gzip.compress(d, mtime=0)),
    "x-gzip": (16 + zlib.MAX_WBITS, lambda d: gzip.compress(d, mtime=0)),
    "deflate": (zlib.MAX_WBITS, zlib.compress),
}


class DeepRedactor:
    """``redact(record) -> bool``: redacts the record in place; True when anything changed."""

    def __init__(
        self,
        *,
        stage: str = "source",
        json_keys: Iterable[str] = DEFAULT_JSON_KEYS,
        key_suffixes: Iterable[str] = DEFAULT_KEY_SUFFIXES,
        patterns: Mapping[str, str] | None = None,
        headers: Iterable[str] = (),
        query: Iterable[str] = (),
        keep: Iterable[str] = (),
        native: bool | None = None,
    ) -> None:
        """``native``: whether the JSON key gate is the C extension's (default: where it was built)."""
        self.stage = stage
        keep = tuple(keep)
        self.source = Redactor(headers, query, keep)
        # JSON keys never redacted (compared as keys are: case, "-", "_" and "." aside).
        self._kept_keys = frozenset(_normal_key(k.strip()) for k in keep if k.strip())
        self._keys = frozenset(_normal_key(k) for k in json_keys)
        self._suffixes = tuple(_normal_key(k) for k in key_suffixes)
        patterns = DEFAULT_PATTERNS if patterns is None else patterns
        compiled = {name: re.compile(p.encode()) for name, p in patterns.items()}
        self._patterns = compiled
        # Most bodies are clean: cheap gates decide whether the real searches run at all.
        # A listed key, or a key ending in a listed suffix, ends in one of these words (maybe then
        # a plural "s") once lowercased with separators squeezed out ("API-Key" → "apikey"); only
        # words ending in no other are kept ("token" covers "access_token"). Searched in the
        # reversed text, the regex starts at the literal ':' after a key (a C-speed scan) rather
        # than trying every word at every letter: about 4 instead of 15 µs for 1 KiB of JSON. The C
        # extension's json_key_gate makes the same test in one pass without copies (the lowercased,
        # squeezed, reversed text cost as much as the search): 2 KiB of JSON 12.6 -> 1.3 µs.
        # These gates read bytes and lowercase ASCII only. A word with other characters ("äpi")
        # opens the gate for any text with a character beyond ASCII or a \u escape (the key
        # rules lowercase all of Unicode and read escapes: Python's json.dumps sends "\u00e4").
        words = {_normal_key(name).encode() for name in (*json_keys, *self._suffixes)}
        ends = sorted(w for w in words if w.isascii() and not any(o != w and w.endswith(o) for o in words))
        self._has_key: Callable[[bytes], bool] | None = None
        gates: list[Callable[[bytes], bool]] = []
        if b"" in words:  # a name of separators only: any key may be it
            gates.append(_any_key)
        elif ends and _decoder._native(native):
            gates.append(functools.partial(_decoder._c().json_key_gate, tuple(ends)))
        elif ends:
            alternatives = b"|".join(re.escape(w[::-1]) for w in ends)
            # Backslashes between the quote and the key: a key of JSON held in a JSON string (\"key\").
            search = re.compile(rb':\s*"\\*s?(?:' + alternatives + rb")").search
            gates.append(functools.partial(_key_regex, search))
        if not all(w.isascii() for w in words):
            gates.append(_not_ascii_or_escaped)
        if len(gates) == 1:
            self._has_key = gates[0]
        elif gates:
            self._has_key = functools.partial(_either, gates[0], gates[1])
        self._gates = {name: _GATES.get(name, _always) for name in compiled}
        self._gated = tuple((self._gates[name], p.search) for name, p in compiled.items())
        self._plain_names: set[bytes] = set()  # header names known not to be credentials

    def _maybe(self, text: bytes, is_json: bool) -> bool:
        """Whether a listed key (in JSON) or any pattern may occur in ``text``."""
        if is_json and self._has_key is not None and self._has_key(text):
            return True
        return self._maybe_pattern(text, text.lower())

    def _maybe_pattern(self, text: bytes, lowered: bytes) -> bool:
        for gate, search in self._gated:  # noqa: SIM110 - a loop, not any(genexpr): it runs per record
            if gate(text, lowered) and search(text) is not None:
                return True
        return False

    # -- the record ---------------------------------------------------------------------------

    def redact(self, record: Exchange, *, credentials: bool = True) -> bool:
        """Redact in place; True when anything changed.

        ``credentials=False`` skips the header and query-parameter rules, for a caller that ran
        them already (the recorder, on the pairs it captured).
        """
        found: list[Redaction] = []
        request, response = record["request"], record["response"]
        if credentials:
            self._credentials(request, response, found)
        query = request["query"]
        if query and credentials:
            query = request["query"] = self.source.query(query, "request", found, stage=self.stage)
        if not self._clean(query, request["body"], response["body"]):
            if query:
                request["query"] = self._text(query, "request.query", found)
            self._body(request["body"], "request.body", found)
            self._body(response["body"], "response.body", found)
        if not found:
            return False
        record["redactions"] = [*record["redactions"], *found]
        return True

    def _clean(self, query: bytes, *bodies: Body) -> bool:
        """True when neither the query nor a kept body can hold anything to redact.

        One pass of the gates over all of them together (most records are clean, and per part
        the calls cost more than the scans); a compressed body, or one cut short (which may end
        inside a secret), is only looked at part by part.
        """
        texts = [query]
        for body in bodies:
            data = body["data"]
            if data:
                encoding = (body["content_encoding"] or "identity").lower()
                if body["state"] != "COMPLETE" or encoding != "identity":
                    return False
                texts.append(data)
        return not self._maybe(b"\n".join(texts), True)

    def _credentials(self, request: Any, response: Any, found: list[Redaction]) -> None:
        sensitive = self.source.sensitive
        plain = self._plain_names
        for where, part in (("request", request), ("response", response)):
            headers: Any = part["headers"]
            # Decoded records hold headers as dicts; records the recorder builds, as (name, value) pairs.
            as_dicts = bool(headers) and isinstance(headers[0], dict)
            # Every name seen before and none sensitive (most records): one check at C speed.
            if plain.issuperset(map(_NAME if as_dicts else _FIRST, headers)):
                continue
            names = [h["name"] for h in headers] if as_dicts else [h[0] for h in headers]
            if not any(map(sensitive, names)):
                if len(plain) < 4096:  # header names repeat; bound the set against odd clients
                    plain.update(names)
                continue
            if as_dicts:
                pairs = [(h["name"], h["value"]) for h in headers]
            else:
                pairs = [(h[0], h[1]) for h in headers]
            redacted = self.source.headers(pairs, where, found, stage=self.stage)
            if redacted is not pairs:
                part["headers"] = (
                    [{"name": n, "value": v} for n, v in redacted] if as_dicts else list(redacted)
                )

    # -- bodies -------------------------------------------------------------------------------

    def _body(self, body: Body, where: str, found: list[Redaction]) -> None:
        data = body["data"]
        if not data:
            return
        media = _media(body["content_type"])
        encoding = (body["content_encoding"] or "identity").lower()
        if not _TEXT_MEDIA.match(media) and not (encoding == "identity" and _JSON_START.match(data)):
            return  # binary, unless it is JSON sent under another type
        complete = body["state"] == "COMPLETE"
        codec = _CODECS.get(encoding)
        if encoding != "identity":
            if codec is None:
                self._withhold(body, where, f"encoding:{encoding}", found)
                return
            try:
                text = _inflate(data, codec[0], whole=complete)
            except (ValueError, zlib.error):
                self._withhold(body, where, f"encoding:{encoding}", found)
                return
        else:
            text = data
        is_json = _JSON_MEDIA.match(media) is not None or _JSON_START.match(text) is not None
        # A compressed body cut short cannot be written again as it was: it is kept untouched
        # when clean and withheld when not, so its findings go to a scratch list.
        hits = found if complete or codec is None else []
        before = len(hits)
        if self._maybe(text, is_json):
            if is_json:
                cleaned = self._json(text, complete, where, hits)
                if cleaned is None:
                    self._withhold(body, where, "json-nested", found)
                    return
                text = cleaned
            text = self._text(text, where, hits)
        if not complete:
            text = self._cut(text, where, hits)
        if len(hits) == before:
            return
        if hits is not found:
            self._withhold(body, where, f"cut-short:{encoding}", found)
            return
        data = codec[1](text) if codec is not None else text
        body["data"] = data
        if body["state"] == "COMPLETE":
            body["size"] = len(data)
            body["sha256"] = hashlib.sha256(data).digest()
        else:
            body["sha256"] = None

    def _cut(self, text: bytes, where: str, found: list[Redaction]) -> bytes:
        """A body cut short (kept up to the limit, or aborted) may end inside a secret, too short
        or unclosed for the rules above: the start of a listed key's string value, of a bearer
        token, a JWT, a card number or an e-mail address at the very end is replaced."""
        head, tail = text[:-_CUT_TAIL], text[-_CUT_TAIL:]
        for rule, pattern in _CUT_SECRETS.items():
            if rule != "json-key" and rule not in self._patterns:
                continue  # a default pattern the rules replaced
            match = pattern.search(tail)
            if match is None or match.group("secret") == MARKER:
                continue
            if rule == "json-key":
                key = _json_key(match.group("key"))
                if not self._sensitive_key(key):
                    continue
                location = f"{where}:json:{key}"
            else:
                location = where
            tail = tail[: match.start("secret")] + MARKER
            found.append({"location": location, "rule": rule, "stage": self.stage})
        return head + tail

    def _withhold(self, body: Body, where: str, rule: str, found: list[Redaction]) -> None:
        body["data"] = None
        body["sha256"] = None if body["state"] != "COMPLETE" else body["sha256"]
        body["state"] = "NOT_KEPT"
        found.append({"location": where, "rule": f"withheld:{rule}", "stage": self.stage})

    def _sensitive_key(self, key: str) -> bool:
        """A listed key, or one ending in a listed suffix, also in the plural ("apiKeys", "secrets")."""
        normal = _normal_key(key)
        if normal in self._kept_keys:
            return False
        if normal.endswith("s") and self._listed(normal[:-1]):
            return True
        return self._listed(normal)

    def _listed(self, normal: str) -> bool:
        return normal in self._keys or normal.endswith(self._suffixes)

    def _json(self, text: bytes, complete: bool, where: str, found: list[Redaction]) -> bytes | None:
        """Listed keys' values replaced; None when a listed key holds an object or array that
        cannot be cut out safely (the body is then withheld)."""
        nested = False
        seen: set[str] = set()

        def replace(match: re.Match[bytes]) -> bytes:
            nonlocal nested
            key = _json_key(match.group(1))
            value = match.group(3)
            if not self._sensitive_key(key):
                if value[:1] == b'"' and b'\\"' in value:  # maybe JSON held in this string
                    inner = self._in_string(value, where, found)
                    if inner is not None:
                        return match.group(1).join((b'"', b'"')) + match.group(2) + inner
                return match.group(0)
            if value in (b"[", b"{"):
                nested = True
                return match.group(0)
            if value in (b"null", b'"' + MARKER + b'"'):
                return match.group(0)
            if key not in seen:
                seen.add(key)
                found.append({"location": f"{where}:json:{key}", "rule": "json-key", "stage": self.stage})
            return match.group(1).join((b'"', b'"')) + match.group(2) + b'"' + MARKER + b'"'

        out = _JSON_KEY_VALUE.sub(replace, text)
        if not nested:
            return out
        if not complete:
            return None
        try:
            document = json.loads(out)
        except ValueError:
            return None
        document = self._walk(document, where, seen, found)
        # A lone surrogate (a "\\ud800" the client sent) is written back as that escape.
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )

    def _in_string(self, value: bytes, where: str, found: list[Redaction]) -> bytes | None:
        """A JSON string value holding JSON itself (``"{\"password\": …}"``), redacted and written
        back as a string; None when it holds no JSON or nothing to redact."""
        try:
            text = json.loads(value)
        except ValueError:
            return None
        if not isinstance(text, str):
            return None
        cleaned = self._in_text(text, where, found)
        if cleaned is None:
            return None
        return json.dumps(cleaned, ensure_ascii=False).encode("utf-8", "backslashreplace")

    def _in_text(self, text: str, where: str, found: list[Redaction]) -> str | None:
        """``text`` redacted as a JSON body when it holds one; None when it is not JSON or clean."""
        raw = text.encode("utf-8", "surrogatepass")
        if _JSON_START.match(raw) is None or not self._maybe(raw, True):
            return None
        hits: list[Redaction] = []
        cleaned = self._json(raw, True, where, hits)
        if cleaned is None or not hits:
            return None
        found.extend(hits)
        return cleaned.decode("utf-8", "surrogatepass")

    def _walk(self, node: Any, where: str, seen: set[str], found: list[Redaction]) -> Any:
        if isinstance(node, str) and node[:1] in ("{", "[") and '"' in node:
            cleaned = self._in_text(node, where, found)
            return node if cleaned is None else cleaned
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if self._sensitive_key(key) and value is not None and value != MARKER.decode():
                    if key not in seen:
                        seen.add(key)
                        found.append(
                            {
                                "location": f"{where}:json:{_escaped(key)}",
                                "rule": "json-key",
                                "stage": self.stage,
                            }
                        )
                    out[key] = MARKER.decode()
                else:
                    out[key] = self._walk(value, where, seen, found)
            return out
        if isinstance(node, list):
            return [self._walk(v, where, seen, found) for v in node]
        return node

    def _text(self, text: bytes, where: str, found: list[Redaction]) -> bytes:
        lowered = text.lower()
        for name, pattern in self._patterns.items():
            if not self._gates[name](text, lowered):
                continue
            hits = 0

            def replace(match: re.Match[bytes], name: str = name) -> bytes:
                nonlocal hits
                value = match.group(0)
                if name == "card" and not _card(match):
                    return value
                hits += 1
                bearer = _BEARER.match(value)
                return bearer.group(1) + bearer.group(2) + MARKER if bearer else MARKER

            text = pattern.sub(replace, text)
            if hits:
                found.append({"location": where, "rule": name, "stage": self.stage})
        return text
