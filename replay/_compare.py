"""Compare an expected response with an actual one, noise-aware, the way Diffy does.

Status, the chosen headers and the body bytes are checked for equality first, which is all most
replayed requests need; only when they differ is a body decoded (Content-Encoding) and diffed as
JSON (leaf by leaf), text (first difference) or digest. A location is ``status``, ``header:<name>``,
``body`` or ``body:$.a.b[2]["c.d"]``; ignore rules and learned noise use the same form, with ``[*]``
for any index or key and ``$..key`` for a key at any depth.

JSON is walked here rather than with deepdiff because on a 2 KB body deepdiff 9.1 took about 6 ms
per compare (9 ms with ignores and unordered arrays) against 0.1 ms (0.4 ms, parsing included)
here, and its string paths cannot carry per-path unordered arrays or odd keys exactly.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, AnyStr, Final, Literal, cast

__all__ = ["Comparator", "CompareOptions", "Difference", "NoiseModel", "Observed"]


@dataclass(frozen=True, slots=True)
class Observed:
    """A response as recorded or as received from a target."""

    status: int | None
    headers: Sequence[tuple[bytes, bytes]]  # in order, duplicates kept, exact bytes
    body: bytes | None  # as transferred (still content-encoded); None: not available
    body_state: str = "COMPLETE"  # NONE, COMPLETE, TRUNCATED, NOT_KEPT, ABORTED or UNKNOWN
    body_sha256: bytes | None = None  # of the full body as transferred (recorded side)
    body_size: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None


@dataclass(frozen=True, slots=True)
class Difference:
    """One location where the actual response differs from the expected one."""

    location: str  # status, header:<name>, body, body:$.a.b[2].c
    kind: str  # changed, missing, added, type
    expected: str | None  # a short printable value, at most 120 characters
    actual: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareOptions:
    """What to compare and what to leave out."""

    headers: tuple[str, ...] = ()  # names of the headers to compare; others never are
    ignore: tuple[str, ...] = ()  # $.meta.id, $.items[*].id, $..updated_at, header:date, status, body
    unordered: tuple[str, ...] = ()  # JSON arrays compared as multisets: $, $.items, $..tags
    body: Literal["auto", "json", "text", "digest", "none"] = "auto"


class _Wild(enum.Enum):
    ANY = "[*]"
    DEEP = ".."


_Token = str | int | _Wild
_Headers = Sequence[tuple[bytes, bytes]]
_States = tuple[tuple[int, int], ...]  # (pattern, position of its next token)
_DEFAULTS: Final = CompareOptions()
_LIMIT: Final = 120  # characters in a printed value
_MAX_DECODED: Final = 64 << 20  # a body that inflates past this is reported, not decoded
_IGNORE, _UNORDERED = 1, 2
_TEXT_TYPES: Final = ("text/", "application/xml", "application/javascript", "application/x-www-form")
_CODECS: Final = {"br": ("brotli", "brotlicffi"), "zstd": ("compression.zstd", "backports.zstd")}
_JSON_TYPES: Final = {dict: "object", list: "array", str: "string", bool: "bool", type(None): "null"}
_LEAVES: Final = frozenset({str, int, float, bool, type(None)})  # equal leaves need no call
_NO_STEP: Final[tuple[_States, int]] = ((), 0)
_SHOW: Final = json.JSONEncoder(ensure_ascii=False).encode
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_JSON_START = re.compile(rb"\s*[\[{]")
_IDENT = re.compile(r"[A-Za-z_]\w*", re.ASCII)
_SEGMENT = re.compile(
    r'(\.\.?)(?:([A-Za-z_]\w*)|(\*))|(\.\.)?\[(?:(\d+)|(\*)|("(?:[^"\\]|\\.)*"))\]', re.ASCII
)
_PATH = re.compile(rf"\$(?:{_SEGMENT.pattern})*", re.ASCII)


@lru_cache(maxsize=1024)
def _parse(path: str) -> tuple[_Token, ...]:
    if not _PATH.fullmatch(path):
        raise ValueError(
            f"Cannot read the JSON path {path!r}: "
            """write $.a.b, $.items[3], $.items[*].id, $..key or $["odd.key"]."""
        )
    tokens: list[_Token] = []
    for match in _SEGMENT.finditer(path, 1):
        dots, name, star, deep, index, any_index, quoted = match.groups()
        if dots == ".." or deep:
            tokens.append(_Wild.DEEP)
        tokens.append(
            _Wild.ANY if star or any_index else name or (int(index) if index else str(json.loads(quoted)))
        )
    return tuple(tokens)


def _format(tokens: Sequence[_Token]) -> str:
    parts, deep = ["$"], False
    for token in tokens:
        if token is _Wild.DEEP:
            deep = True
            continue
        if isinstance(token, str) and _IDENT.fullmatch(token):
            parts.append((".." if deep else ".") + token)
        else:
            inner = "*" if token is _Wild.ANY else json.dumps(token, ensure_ascii=False)
            parts.append(f"{'..' if deep else ''}[{inner}]")
        deep = False
    return "".join(parts)


def _normalise(entry: str) -> str:
    text = entry.strip()
    if text.startswith("$"):
        text = "body:" + text
    if text.startswith("body:$"):
        return "body:" + _format(_parse(text[5:]))
    if text[:7].lower() == "header:" and text[7:].strip():
        return "header:" + text[7:].strip().lower()
    if text in ("status", "body"):
        return text
    raise ValueError(
        f"Cannot read the location {entry!r}: write status, body, header:<name> or a JSON path "
        "such as $.meta.request_id, $.items[*].id or $..updated_at."
    )


def _generalise(location: str) -> str:
    """The location with array indices as [*], so noise learned on one list applies to all."""
    if not location.startswith("body:$"):
        return location
    return "body:" + _format([_Wild.ANY if isinstance(t, int) else t for t in _parse(location[5:])])


@dataclass(frozen=True, slots=True)
class _Rules:
    """Compiled ignore and unordered rules: locations left out, and JSON path patterns."""

    locations: frozenset[str]
    patterns: tuple[tuple[tuple[_Token, ...], int], ...]  # tokens and _IGNORE or _UNORDERED
    root: int  # what "$" itself is
    start: _States
    memo: dict[tuple[_States, str | int], tuple[_States, int]] = field(default_factory=dict)

    def step(self, states: _States, segment: str | int) -> tuple[_States, int]:
        """States after descending into ``segment``, and the flags of the patterns it completes."""
        if (known := self.memo.get((states, segment))) is not None:
            return known  # documents repeat their keys, so most steps are looked up
        after: list[tuple[int, int]] = []
        flags = 0
        for rule, pos in states:
            tokens, flag = self.patterns[rule]
            token = tokens[pos]
            if token is _Wild.DEEP:
                after.append((rule, pos))  # $..key may still match further down
                pos += 1
                token = tokens[pos]
            if token is _Wild.ANY or (type(token) is type(segment) and token == segment):
                if pos + 1 == len(tokens):
                    flags |= flag
                else:
                    after.append((rule, pos + 1))
        if len(self.memo) > 10_000:
            self.memo.clear()
        self.memo[states, segment] = result = (tuple(after), flags)
        return result


@lru_cache(maxsize=256)
def _compile(ignore: frozenset[str], unordered: frozenset[str]) -> _Rules:
    locations: set[str] = set()
    patterns: list[tuple[tuple[_Token, ...], int]] = []
    root = 0
    for entries, flag in ((ignore, _IGNORE), (unordered, _UNORDERED)):
        for entry in entries:
            location = _normalise(entry)
            if not location.startswith("body:$"):
                if flag == _UNORDERED:
                    raise ValueError(
                        f"The unordered entry {entry!r} is not a JSON path: write $, $.items or $..tags."
                    )
                locations.add(location)
            elif tokens := _parse(location[5:]):
                patterns.append((tokens, flag))
            else:
                root |= flag
    return _Rules(frozenset(locations), tuple(patterns), root, tuple((i, 0) for i in range(len(patterns))))


def _clip(text: str) -> str:
    return text if len(text) <= _LIMIT else text[: _LIMIT - 1] + "…"


def _short(value: Any) -> str:
    return _clip(_SHOW(value[:_LIMIT] if isinstance(value, str) else value))


def _windows(a: AnyStr, b: AnyStr) -> tuple[str, str]:
    """Both values near their first difference, found a chunk at a time at C speed."""
    end, at = min(len(a), len(b)), 0
    while at < end and a[at : at + 4096] == b[at : at + 4096]:
        at += 4096
    while at < end and a[at] == b[at]:
        at += 1
    start = max(0, at - 20)
    return _clip(f"at {at}: {a[start : start + _LIMIT]!r}"), _clip(f"at {at}: {b[start : start + _LIMIT]!r}")


def _digest(data: bytes | None, sha: bytes | None = None, size: int | None = None) -> str:
    if data is not None:
        sha, size = hashlib.sha256(data).digest(), len(data)
    return f"sha256:{sha.hex()[:16] if sha else '?'} ({'?' if size is None else size} bytes)"


def _walk(x: Any, y: Any, path: tuple[str | int, ...], states: _States, flags: int, rules: _Rules,
          out: list[Difference]) -> None:  # fmt: skip
    """Appends the differences between two parsed JSON values; the hot loop of a compare."""
    tx, ty = type(x), type(y)
    if tx is ty and (tx is dict or (tx is list and not flags & _UNORDERED)):
        keys, in_x, in_y = (
            ([*x, *[k for k in y if k not in x]], x, y)
            if tx is dict
            else (range(max(len(x), len(y))), range(len(x)), range(len(y)))
        )
        for key in keys:
            inner, found = rules.step(states, key) if states else _NO_STEP
            if found & _IGNORE:
                continue
            if key not in in_y:
                out.append(Difference("body:" + _format((*path, key)), "missing", _short(x[key]), None))
            elif key not in in_x:
                out.append(Difference("body:" + _format((*path, key)), "added", None, _short(y[key])))
            elif type(x[key]) not in _LEAVES or x[key] != y[key] or type(x[key]) is not type(y[key]):
                _walk(x[key], y[key], (*path, key), inner, found, rules, out)
    elif tx is ty is list:  # unordered
        only_x, only_y = Counter(_items(x, states, rules)), Counter(_items(y, states, rules))
        if only_x != only_y:
            shown = (_clip("[" + ",".join(c.elements()) + "]") for c in (only_x - only_y, only_y - only_x))
            out.append(Difference("body:" + _format(path), "changed", *shown))
    elif _JSON_TYPES.get(tx, "number") != _JSON_TYPES.get(ty, "number"):  # int and float are numbers
        out.append(Difference("body:" + _format(path), "type", _short(x), _short(y)))
    elif (x != y or tx is not ty) and not (x != x and y != y):  # NaN equals NaN here
        out.append(Difference("body:" + _format(path), "changed", _short(x), _short(y)))


def _items(items: list[Any], states: _States, rules: _Rules) -> list[str]:
    """Canonical JSON of the elements not ignored, in order."""
    stepped = (rules.step(states, i) if states else _NO_STEP for i in range(len(items)))
    return [
        _canonical(item, *step, rules)
        for item, step in zip(items, stepped, strict=True)
        if not step[1] & _IGNORE
    ]


def _canonical(value: Any, states: _States, flags: int, rules: _Rules) -> str:
    """Canonical JSON of ``value`` without its ignored parts, its unordered arrays sorted."""
    if isinstance(value, dict) and states:
        stepped = ((key, rules.step(states, key)) for key in sorted(value))
        parts = (
            f"{_CANONICAL(k)}:{_canonical(value[k], *step, rules)}"
            for k, step in stepped
            if not step[1] & _IGNORE
        )
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list) and (states or flags & _UNORDERED):
        items = _items(value, states, rules)
        return "[" + ",".join(sorted(items) if flags & _UNORDERED else items) + "]"
    return _CANONICAL(value)


def _header(observed: Observed, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in observed.headers if k.lower() == name), "")


def _by_name(headers: _Headers, names: Collection[bytes] | None) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        key = name.lower()
        if names is None or key in names:
            found.setdefault(key, []).append(value)
    return found


def _inflate(data: bytes, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, _MAX_DECODED)
    except zlib.error:
        if wbits != zlib.MAX_WBITS:
            raise
        return _inflate(data, -zlib.MAX_WBITS)  # deflate is also sent raw, without the zlib wrapper
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(
            "it inflates past 64 MiB" if inflater.unconsumed_tail else "the compressed stream ends early"
        )
    return out


@lru_cache(maxsize=16)
def _decoder(coding: str) -> Callable[[bytes], bytes] | None:
    """The decoder of a content coding; br and zstd only where a library for them is installed."""
    if coding in ("gzip", "x-gzip", "deflate"):
        return lambda data: _inflate(data, zlib.MAX_WBITS | (16 if coding != "deflate" else 0))
    for name in _CODECS.get(coding, ()):
        try:
            return cast(Callable[[bytes], bytes], importlib.import_module(name).decompress)
        except ImportError:
            continue
    return None


def _decode(observed: Observed, data: bytes) -> tuple[bytes | None, str | None]:
    """The body with its content codings undone (None when one has no decoder here), or an error."""
    coding = observed.content_encoding or _header(observed, b"content-encoding")
    for name in reversed([c.strip() for c in coding.lower().split(",") if c.strip() not in ("", "identity")]):
        decoder = _decoder(name)
        if decoder is None:
            return None, None
        try:
            data = decoder(data)
        except Exception as exc:  # noqa: BLE001 - each codec library raises its own errors
            return None, _clip(f"cannot decode {name}: {exc}")
    return data, None


def _body(expected: Observed, actual: Observed, rules: _Rules, mode: str) -> list[Difference]:
    states = (expected.body_state, actual.body_state)
    if "ABORTED" in states or "UNKNOWN" in states:
        return []
    if "NOT_KEPT" in states:  # by digest (or size) of the whole body
        (sha_e, size_e), (sha_a, size_a) = sides = [
            (o.body_sha256, o.body_size) if o.body_state == "NOT_KEPT" or o.body is None
            else (hashlib.sha256(o.body).digest(), len(o.body))
            for o in (expected, actual)
        ]  # fmt: skip
        if (sha_e == sha_a) if sha_e and sha_a else (size_e is None or size_a is None or size_e == size_a):
            return []
        return [Difference("body", "changed", *(_digest(None, sha, size) for sha, size in sides))]
    e = b"" if expected.body_state == "NONE" and not expected.body else expected.body
    a = b"" if actual.body_state == "NONE" and not actual.body else actual.body
    if e is None or a is None or e == a:
        return []
    if not e or not a:
        shown = (_digest(data) if data else None for data in (e, a))
        return [Difference("body", "added" if a else "missing", *shown)]
    if "TRUNCATED" in states:  # only the kept prefix can be compared
        if (states[0] == "TRUNCATED" and a.startswith(e)) or (states[1] == "TRUNCATED" and e.startswith(a)):
            return []
        return [Difference("body", "changed", *_windows(e, a))]
    (de, error_e), (da, error_a) = _decode(expected, e), _decode(actual, a)
    if error_e or error_a or de is None or da is None:  # None: a coding with no decoder here
        return [Difference("body", "changed", error_e or _digest(e), error_a or _digest(a))]
    if de == da:
        return []
    types = [
        (o.content_type or _header(o, b"content-type")).split(";")[0].strip().lower()
        for o in (expected, actual)
    ]
    looks_json = any(t.endswith(("/json", "+json")) for t in types) or bool(
        _JSON_START.match(de) and _JSON_START.match(da)
    )
    if mode == "json" or (mode == "auto" and looks_json):
        try:
            value_e, value_a = json.loads(de), json.loads(da)
            out: list[Difference] = []
            if not rules.root & _IGNORE:
                _walk(value_e, value_a, (), rules.start, rules.root, rules, out)
            return out
        except (ValueError, RecursionError):
            pass  # not JSON after all (or nested too deep): compared as text
    if mode in ("json", "text") or (
        mode == "auto" and (looks_json or any(t.startswith(_TEXT_TYPES) or t.endswith("+xml") for t in types))
    ):  # surrogateescape keeps different bytes different
        texts = (data.decode(errors="surrogateescape") for data in (de, da))
        return [Difference("body", "changed", *_windows(*texts))]
    return [Difference("body", "changed", _digest(de), _digest(da))]


class Comparator:
    """Compares responses with fixed options; ``compare`` runs once per replayed request."""

    __slots__ = ("_headers", "_ignore", "_mode", "_rules", "_unordered")

    def __init__(self, options: CompareOptions = _DEFAULTS) -> None:
        self._headers = frozenset(h.strip().lower().encode("latin-1") for h in options.headers)
        self._ignore = frozenset(_normalise(entry) for entry in options.ignore)
        self._unordered = frozenset(options.unordered)
        self._rules = _compile(self._ignore, self._unordered)  # ValueError on an unreadable entry
        self._mode = options.body

    def compare(
        self, expected: Observed, actual: Observed, *, noise: Collection[str] = ()
    ) -> list[Difference]:
        """Differences that matter: not ignored by the options, not in ``noise`` (NoiseModel.noise)."""
        if (
            expected.status == actual.status
            and expected.body == actual.body
            and (
                not self._headers
                or _by_name(expected.headers, self._headers) == _by_name(actual.headers, self._headers)
            )
        ):
            return []
        rules = _compile(self._ignore | frozenset(noise), self._unordered) if noise else self._rules
        return self._differences(expected, actual, rules, self._headers)

    def _differences(
        self, expected: Observed, actual: Observed, rules: _Rules, names: Collection[bytes] | None
    ) -> list[Difference]:
        out: list[Difference] = []
        status_e, status_a = expected.status, actual.status
        if status_e != status_a and None not in (status_e, status_a) and "status" not in rules.locations:
            out.append(Difference("status", "changed", str(expected.status), str(actual.status)))
        by_e, by_a = _by_name(expected.headers, names), _by_name(actual.headers, names)
        for name in sorted(by_e.keys() | by_a.keys()):
            location, e, a = "header:" + name.decode("latin-1"), by_e.get(name), by_a.get(name)
            if e != a and location not in rules.locations:
                e_shown, a_shown = (_clip(b", ".join(v).decode("latin-1")) if v else None for v in (e, a))
                kind = "added" if e is None else "missing" if a is None else "changed"
                out.append(Difference(location, kind, e_shown, a_shown))
        if self._mode != "none" and "body" not in rules.locations:
            out.extend(_body(expected, actual, rules, self._mode))
        return out


class NoiseModel:
    """Learns, per key (a normalised route such as ``GET /users/{id}``), the locations that differ
    between two replays of one request against one build: generated ids, timestamps, Date headers.
    """

    def __init__(self, options: CompareOptions = _DEFAULTS) -> None:
        self._comparator = Comparator(options)
        self._noise: dict[str, frozenset[str]] = {}

    def learn(self, key: str, first: Observed, second: Observed) -> list[Difference]:
        """Records where ``first`` and ``second`` differ (every header compared) and returns that."""
        comparator = self._comparator
        found = comparator._differences(first, second, comparator._rules, None)
        if found:
            self._noise[key] = self.noise(key) | {_generalise(d.location) for d in found}
        return found

    def noise(self, key: str) -> frozenset[str]:
        """The locations learned as noisy for ``key``."""
        return self._noise.get(key, frozenset())

    def to_json(self) -> dict[str, list[str]]:
        """The learned noise, sorted, for a report."""
        return {key: sorted(self._noise[key]) for key in sorted(self._noise)}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[str]], options: CompareOptions = _DEFAULTS) -> NoiseModel:
        """A model holding noise written by ``to_json``; ValueError names an entry that cannot be read."""
        model = cls(options)
        for key, locations in data.items():
            if isinstance(locations, str):
                raise ValueError(f"The noise of {key!r} must be a list of locations, not one string.")
            model._noise[key] = frozenset(_normalise(location) for location in locations)
        return model
