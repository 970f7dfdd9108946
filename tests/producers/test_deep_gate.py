"""The deep redactor's first check of a JSON body: could one of its keys be a listed one?

Most bodies are clean, so this gate decides whether the precise rules run at all; a key it misses
is a secret that leaves the process. The C extension's gate must answer exactly as the regex the
pure-Python install runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficreel.producers._deep import DEFAULT_JSON_KEYS, DeepRedactor
from trafficreel.schemas import _decoder, blank_body

NATIVE, PYTHON = DeepRedactor(native=True), DeepRedactor(native=False)
both = pytest.mark.parametrize("redactor", [NATIVE, PYTHON], ids=["native", "python"])


def test_the_c_gate_is_the_one_in_use() -> None:
    """The package is built with its C extension here; the default redactor uses its gate."""
    assert _decoder.NATIVE
    assert DeepRedactor()._has_key.func is _decoder._c().json_key_gate  # type: ignore[union-attr]


@both
@pytest.mark.parametrize(
    "text",
    [
        b'{"password": 1}',
        b'{"Access-Token" : "x"}',
        b'{"items": [], "X.Api.Key"\n:\t"x"}',
        b'{"apiKeys": ["a"]}',  # plural
        b'{"payload": "{\\"client_secret\\": \\"x\\"}"}',  # JSON held in a JSON string
        b'{"a": 1, "github_token":"x"}',
        b'{"SSN":"x"}',
        b'{"pass-word": 1}',  # separators anywhere in the key
    ],
)
def test_keys_that_may_be_listed_open_the_gate(redactor: DeepRedactor, text: bytes) -> None:
    assert redactor._maybe(text, True)


@both
@pytest.mark.parametrize(
    "text",
    [
        b'{"note": "token: x"}',  # the word is in a value, not before a key's colon
        b'{"tokenizer": 1, "monkey": 2, "passwords_reset_at": 3}',
        b'{"items": [{"sku": "SKU-1", "qty": 2}]}',
        b"token: x",  # no quote before the colon
        b'"token"',  # no colon
        b"",
    ],
)
def test_clean_json_keeps_the_gate_shut(redactor: DeepRedactor, text: bytes) -> None:
    assert not redactor._maybe(text, True)


@both
def test_configured_keys_and_a_separators_only_key(redactor: DeepRedactor) -> None:
    native = redactor is NATIVE
    pin = DeepRedactor(json_keys=["pin"], key_suffixes=(), patterns={}, native=native)
    assert pin._maybe(b'{"PIN": 1}', True)
    assert pin._maybe(b'{"user-pins" : 1}', True)
    assert not pin._maybe(b'{"pinned": 1}', True)
    anything = DeepRedactor(json_keys=["-"], key_suffixes=(), patterns={}, native=native)
    assert anything._maybe(b'{"a": 1}', True)  # a name of separators only: every key may be it


_WORDS = [*DEFAULT_JSON_KEYS, "apikey", "privatekey", "db_password", "Api-Secret"]
_WORD = st.sampled_from(_WORDS).flatmap(
    lambda w: st.sampled_from([w, w.upper(), w.capitalize(), w[:-1], w[1:]]).map(str.encode)
)
_PIECES = st.one_of(
    _WORD,
    st.sampled_from([b'"', b":", b"\\", b"s", b"S", b" ", b"\n", b"\t", b"-", b"_", b".", b"{", b","]),
    st.binary(max_size=4),
)
# Near-keys: a word, then what may stand between it and a colon, each part sometimes wrong.
_KEYISH = st.tuples(
    st.sampled_from([b"", b'"', b"x", b"-", b"_."]),
    _WORD,
    st.sampled_from([b"", b"s", b"S", b"es", b"-", b"x"]),
    st.sampled_from([b"", b"\\", b"\\\\", b"\\-"]),
    st.sampled_from([b'"', b"'", b"", b'".']),
    st.sampled_from([b"", b" ", b"\n\t", b"-", b" _ "]),
    st.sampled_from([b":", b";", b"", b"::"]),
).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(_KEYISH, _PIECES), max_size=12).map(b"".join))
def test_the_c_gate_answers_as_the_regex(text: bytes) -> None:
    """Keys, near-keys, separators, quotes, colons, backslashes and whitespace in any order: the
    same answer (about a fifth of the texts generated hold a listed key)."""
    assert NATIVE._has_key(text) == PYTHON._has_key(text)  # type: ignore[misc]


def _redacted(redactor: DeepRedactor, data: bytes) -> bytes:
    """A JSON request body as the redactor leaves it."""
    body = {
        **blank_body(),
        "data": data,
        "size": len(data),
        "content_type": "application/json",
        "state": "COMPLETE",
    }
    record: Any = {
        "request": {"headers": [], "query": b"", "body": body},
        "response": {"headers": [], "body": blank_body()},
        "redactions": [],
    }
    redactor.redact(record, credentials=False)
    return record["request"]["body"]["data"]  # type: ignore[no-any-return]


_ODD = ["ab\\", "x\\\\y", "\\s", 'q"', "s\\s", "k:"]
ODD_NATIVE = DeepRedactor(json_keys=_ODD, key_suffixes=(), patterns={}, native=True)
ODD_PYTHON = DeepRedactor(json_keys=_ODD, key_suffixes=(), patterns={}, native=False)
_ODD_PIECES = st.one_of(
    st.sampled_from([w.encode() for w in _ODD]),
    st.sampled_from([b'"', b":", b"\\", b"s", b"a", b"b", b" ", b"-", b"k", b"q"]),
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_ODD_PIECES, max_size=14).map(b"".join))
def test_words_with_backslashes_quotes_and_colons_get_the_same_answer(text: bytes) -> None:
    """Configured keys may hold what the gate reads as syntax (a key ending in a backslash, say):
    the C gate tries every place in a run of backslashes, as the regex backtracks."""
    assert ODD_NATIVE._has_key(text) == ODD_PYTHON._has_key(text)  # type: ignore[misc]


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_a_key_ending_in_a_backslash_is_found(native: bool) -> None:
    redactor = DeepRedactor(json_keys=["ab\\"], key_suffixes=(), patterns={}, native=native)
    assert redactor._maybe(b'{"ab\\\\": 1}', True)  # the key ab\ written in JSON
    assert redactor._maybe(b'{"p": "{\\"ab\\\\\\\\\\": 1}"}', True)  # and held in a JSON string


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_keys_beyond_ascii_are_redacted_raw_or_escaped(native: bool) -> None:
    """A configured key with letters beyond ASCII matches in any case, written raw or escaped."""
    redactor = DeepRedactor(json_keys=["Äpi-Schlüssel"], key_suffixes=(), patterns={}, native=native)
    for text in ('{"äpischlüssel": "s3cr3t"}'.encode(), b'{"\\u00c4PI_SCHL\\u00dcSSEL": "s3cr3t"}'):
        assert redactor._maybe(text, True)
        assert b"s3cr3t" not in _redacted(redactor, text)
    assert not redactor._maybe(b'{"apischlussel": "x"}', True)


def test_the_c_gate_refuses_what_it_cannot_read() -> None:
    gate = _decoder._c().json_key_gate
    with pytest.raises(TypeError):
        gate([b"token"], b"{}")
    with pytest.raises(TypeError):
        gate((b"",), b"{}")
    with pytest.raises(TypeError):
        gate((b"token",), "a str")
    assert gate((b"token",), bytearray(b'{"token": 1}')) is True
    assert gate((b"token",), memoryview(b'{"token": 1}')) is True


_KEY_PARTS = st.sampled_from(
    ["token", "TOKEN", "apiKey", "api\u212aey", "TOKEN\u0130", "\u0130d", "ä", "Ä", "pass-word", "s", "x",
     "\\", '"', "\ud800", "\U0001f511", "_", ".", "secret", "Äpi", "schlüssel", "client", "\u03a3API", "\u03c3"]
)  # fmt: skip
_KEYS = st.lists(_KEY_PARTS, min_size=1, max_size=4).map("".join)


_GATED = [
    DeepRedactor(native=True),
    DeepRedactor(native=False),
    DeepRedactor(json_keys=[*DEFAULT_JSON_KEYS, "Äpi-Schlüssel", "κλειδις"], native=True),
    DeepRedactor(json_keys=[*DEFAULT_JSON_KEYS, "Äpi-Schlüssel", "κλειδις"], native=False),
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(_KEYS, min_size=1, max_size=3), st.booleans(), st.sampled_from(range(len(_GATED))))
def test_a_key_the_rules_would_redact_always_opens_the_gate(
    keys: list[str], ascii_only: bool, which: int
) -> None:
    """Whatever the key's spelling (escaped or raw, letters beyond ASCII, a Kelvin sign, a lone
    surrogate, quotes, backslashes), when the key rule finds something in a JSON body, the gate in
    front of it is open: redaction never hangs on something else in the body opening it. With
    the default keys (ASCII only) and with keys beyond ASCII, C gate and regex."""
    redactor = _GATED[which]
    text = json.dumps(dict.fromkeys(keys, "s3cr3t"), ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    hits: list[Any] = []
    redactor._json(text, True, "request.body", hits)
    if hits:
        assert redactor._has_key(text)  # type: ignore[misc]


def test_a_lone_surrogate_in_a_key_leaves_the_record_encodable() -> None:
    """A client's "\\ud800" escape in a key: the secret is redacted and the record still encodes
    (its location names the key with the escape), flat or holding an object."""
    from trafficreel.schemas import Serializer, sample_exchange

    for data in (b'{"\\ud800password": "s3cr3t"}', b'{"\\ud800password": {"a": "s3cr3t"}, "b": "\\ud800"}'):
        record: Any = dict(sample_exchange(1))
        body = {
            **blank_body(),
            "data": data,
            "size": len(data),
            "content_type": "application/json",
            "state": "COMPLETE",
        }
        record["request"] = {**record["request"], "body": body}
        assert NATIVE.redact(record)
        assert b"s3cr3t" not in record["request"]["body"]["data"]
        assert "request.body:json:\\ud800password" in {r["location"] for r in record["redactions"]}
        Serializer()(record)
