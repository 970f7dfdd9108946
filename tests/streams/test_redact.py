"""Redaction in the stream: planted secrets leave no trace, clean records are left alone."""

from __future__ import annotations

import gzip
import hashlib

from trafficreel.schemas import Exchange
from trafficreel.streams import StreamRedactor

from .support import exchange

REDACTOR = StreamRedactor()
CARD = b"4111 1111 1111 1111"  # Luhn-valid test number
SECRETS = [
    b"hunter2",
    b"ghp_plantedtoken123",
    b"s3cr3t-nested",
    b"bob@example.com",
    CARD,
    b"abcdefghijklmnop",
]


def _with_body(
    record: Exchange,
    part: str,
    data: bytes,
    content_type: str = "application/json",
    encoding: str | None = None,
    state: str = "COMPLETE",
) -> Exchange:
    record[part]["body"].update(  # type: ignore[literal-required]
        data=data,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        content_type=content_type,
        content_encoding=encoding,
        state=state,
    )
    return record


def _planted() -> Exchange:
    record = exchange()
    body = (
        b'{"user": "bob", "password": "hunter2", "profile": {"github_token": "ghp_plantedtoken123"},'
        b' "note": "write to bob@example.com, card 4111 1111 1111 1111"}'
    )
    _with_body(record, "request", body)
    _with_body(
        record,
        "response",
        gzip.compress(b'{"creds": {"client_secret": "s3cr3t-nested"}, "x": "Bearer abcdefghijklmnop"}'),
        encoding="gzip",
    )
    record["request"]["query"] = b"page=2&access_token=hunter2&contact=bob%40example.com"
    return record


def _all_bytes(record: Exchange) -> bytes:
    req, resp = record["request"], record["response"]
    parts = [
        req["query"],
        req["body"]["data"] or b"",
        gzip.decompress(resp["body"]["data"]) if resp["body"]["data"] else b"",
    ]
    parts += [h["value"] for h in [*req["headers"], *resp["headers"]]]
    return b"\n".join(parts)


def test_planted_secrets_are_gone_and_listed() -> None:
    """JSON keys at any depth, bearer tokens, cards, e-mails and query tokens are replaced and listed."""
    record = _planted()
    assert REDACTOR.redact(record) is True
    text = _all_bytes(record)
    assert [s for s in SECRETS if s in text] == []
    listed = {(r["location"], r["rule"]) for r in record["redactions"]}
    assert {
        ("request.body:json:password", "json-key"),
        ("request.body:json:github_token", "json-key"),
        ("request.body", "email"),
        ("request.body", "card"),
        ("response.body:json:client_secret", "json-key"),
        ("response.body", "bearer"),
        ("request.query:access_token", "query"),
        ("request.query", "email"),
    } <= listed
    assert all(r["stage"] == "stream" for r in record["redactions"])
    # The changed bodies describe what is now kept, so no digest of a secret goes on.
    body = record["request"]["body"]
    assert body["sha256"] == hashlib.sha256(body["data"] or b"").digest() and body["size"] == len(
        body["data"] or b""
    )
    assert b'"user": "bob"' in (body["data"] or b"")  # the rest is untouched, formatting included


def test_clean_records_are_unchanged() -> None:
    """A record with nothing to redact comes out identical, with no redactions listed."""
    record = exchange()
    before = repr(record)
    assert REDACTOR.redact(record) is False
    assert repr(record) == before


def test_a_second_pass_finds_nothing_new() -> None:
    """Redacting twice lists each redaction once (values already redacted are not redacted again)."""
    record = _planted()
    REDACTOR.redact(record)
    count = len(record["redactions"])
    assert REDACTOR.redact(record) is False
    assert len(record["redactions"]) == count


def test_luhn_invalid_numbers_and_long_numbers_stay() -> None:
    """Order numbers are not cards: only Luhn-valid 13-19 digit numbers standing alone are redacted."""
    record = _with_body(
        exchange(), "request", b'{"order": "4111 1111 1111 1112", "ts": 17800000000000000001}'
    )
    assert REDACTOR.redact(record) is False


def test_uninspectable_bodies_are_withheld() -> None:
    """A text body in an encoding the stream cannot read, or a truncated JSON with a secret object, loses its bytes."""
    brotli = _with_body(exchange(), "request", b"\x8b\x03\x80secret", encoding="br")
    truncated = _with_body(
        exchange(), "request", b'{"a": 1, "secret": {"k": "v", "more": "', state="TRUNCATED"
    )
    for record in (brotli, truncated):
        assert REDACTOR.redact(record) is True
        assert record["request"]["body"]["data"] is None
        assert record["request"]["body"]["state"] == "NOT_KEPT"
        assert record["redactions"][-1]["rule"].startswith("withheld:")


def test_headers_are_redacted_again_when_the_recorder_did_not() -> None:
    """Credential headers from a recorder with redaction off are redacted in the stream."""
    record = exchange(headers={"authorization": "Bearer abc.def.ghi", "x-api-key": "k-123", "accept": "*/*"})
    assert REDACTOR.redact(record) is True
    values = {h["name"]: h["value"] for h in record["request"]["headers"]}
    assert values == {b"authorization": b"Bearer REDACTED", b"x-api-key": b"REDACTED", b"accept": b"*/*"}


def test_binary_bodies_are_not_searched() -> None:
    """Bodies of binary types are left as they are (they are digest-only at source anyway)."""
    record = _with_body(exchange(), "request", b"password=hunter2", content_type="application/octet-stream")
    assert REDACTOR.redact(record) is False


def test_every_listed_key_is_found_however_spelled_and_spaced() -> None:
    """Each listed key, and suffixed, dashed, dotted or upper-case spellings of it, is redacted
    with any whitespace around the colon, in a few bytes of JSON or several KiB of it."""
    from trafficreel.producers._deep import DEFAULT_JSON_KEYS

    filler = '"filler": "' + "lorem ipsum dolor sit amet " * 60 + '", '
    spellings = (*DEFAULT_JSON_KEYS, "db_password", "Github-Token", "X.Api.Key", "PASS_WORD", "Api-Secret")
    for key in spellings:
        for padding in ("", filler):
            for colon in (":", " : ", "\n:\t"):
                body = f'{{{padding}"{key}"{colon}"planted-value"}}'.encode()
                record = _with_body(exchange(), "request", body)
                assert REDACTOR.redact(record) is True, (key, len(padding), colon)
                assert b"planted-value" not in (record["request"]["body"]["data"] or b""), key


def test_custom_keys_are_found_even_when_they_contain_another() -> None:
    """A configured key holding another one inside it (not at its end) is still found."""
    redactor = StreamRedactor(json_keys=["token", "tokenid", "pin"])
    for key in ("tokenId", "pin", "user_token"):
        record = _with_body(exchange(), "request", f'{{"{key}": "planted-value", "n": 1}}'.encode())
        assert redactor.redact(record) is True, key
        assert b"planted-value" not in (record["request"]["body"]["data"] or b""), key
    clean = _with_body(exchange(), "request", b'{"token_type": "bearer-less", "pinned": true}')
    assert redactor.redact(clean) is False


def test_a_secret_in_any_one_part_is_found_and_only_that_part_changes() -> None:
    """Query and bodies are checked together first; a hit in one part redacts that part alone."""
    clean_body = b'{"user": "bob", "n": 1}'
    cases = {
        "request.query": (b"page=2&contact=bob%40example.com", clean_body, clean_body),
        "request.body": (b"page=2", b'{"password": "planted-value"}', clean_body),
        "response.body": (b"page=2", clean_body, b"card 4111 1111 1111 1111 on file"),
    }
    for where, (query, request_body, response_body) in cases.items():
        record = _with_body(exchange(), "request", request_body)
        _with_body(record, "response", response_body, content_type="text/plain")
        record["request"]["query"] = query
        assert REDACTOR.redact(record) is True, where
        assert {r["location"].split(":")[0] for r in record["redactions"]} == {where}
        untouched = {"request.query": query, "request.body": request_body, "response.body": response_body}
        current = {
            "request.query": record["request"]["query"],
            "request.body": record["request"]["body"]["data"],
            "response.body": record["response"]["body"]["data"],
        }
        assert {k: v for k, v in current.items() if k != where} == {
            k: v for k, v in untouched.items() if k != where
        }


def test_a_body_cut_inside_a_secret_loses_the_start_of_it() -> None:
    """A truncated (or aborted) body can end inside a secret, too short or unclosed for the full
    rules: what may be its start is replaced, the rest of the body kept."""
    cut = {
        b'{"user": "bob", "password": "hunter2-supersec': b"hunter2",
        b'{"items": [1, 2], "note": "x", "Authorization": "Bearer abc': b"Bearer abc",
        b'{"note": "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIi': b"eyJhbGci",
        b'{"note": "pay with 4111 1111 1111': b"4111 1111",
        b'{"note": "write to bob.smith@exam': b"bob.smith@",
    }
    for state in ("TRUNCATED", "ABORTED"):
        for body, secret in cut.items():
            record = _with_body(exchange(), "request", body, state=state)
            assert REDACTOR.redact(record) is True, body
            data = record["request"]["body"]["data"] or b""
            assert secret not in data and data.endswith(b"REDACTED"), (state, data)
            assert data[:8] == body[:8]
            assert record["request"]["body"]["sha256"] is None
    innocent = b'{"user": "bob", "note": "lorem ips'
    record = _with_body(exchange(), "request", innocent, state="TRUNCATED")
    assert REDACTOR.redact(record) is False
    assert record["request"]["body"]["data"] == innocent


def test_json_after_leading_whitespace_is_read_as_json() -> None:
    """A text body holding JSON after blank lines is searched for listed keys like any JSON."""
    record = _with_body(
        exchange(), "request", b'\n  {"password": "planted-value"}', content_type="text/plain"
    )
    assert REDACTOR.redact(record) is True
    assert b"planted-value" not in (record["request"]["body"]["data"] or b"")


def test_replacing_the_defaults_leaves_only_the_given_keys_and_patterns() -> None:
    """``replace_defaults: true`` drops the default keys, key suffixes and patterns alike."""
    from trafficreel.streams import Processor, StreamRules

    rules = StreamRules.model_validate({"redact": {"json_keys": ["pin"], "replace_defaults": True}})
    topics = {c: f"t.{c}" for c in ("business", "k8s-api", "probe", "scrape")}
    redactor = Processor(rules, topics).redactor
    body = b'{"pin": "1234", "password": "kept", "db_token": "kept too", "mail": "bob@example.com"}'
    record = _with_body(exchange(), "request", body)
    assert redactor.redact(record) is True
    data = record["request"]["body"]["data"] or b""
    assert b'"pin":"REDACTED"' in data.replace(b" ", b"")
    assert b"kept" in data and b"kept too" in data and b"bob@example.com" in data


def test_names_to_keep_are_left_alone_by_the_stream() -> None:
    """``redact.keep`` in the rules file spares those header, query and JSON key names."""
    from trafficreel.streams import Processor, StreamRules

    rules = StreamRules.model_validate({"redact": {"keep": ["next_page_token", "x-csrf-token", "code"]}})
    topics = {c: f"t.{c}" for c in ("business", "k8s-api", "probe", "scrape")}
    redactor = Processor(rules, topics).redactor
    body = b'{"next_page_token": "n-1", "password": "hunter2"}'
    record = _with_body(exchange(), "request", body)
    record["request"]["headers"] = [{"name": b"x-csrf-token", "value": b"c-2"}]
    record["request"]["query"] = b"code=c-3&access_token=a-4"
    assert redactor.redact(record) is True
    data = record["request"]["body"]["data"] or b""
    assert b"n-1" in data and b"hunter2" not in data
    assert record["request"]["headers"] == [{"name": b"x-csrf-token", "value": b"c-2"}]
    assert record["request"]["query"] == b"code=c-3&access_token=REDACTED"


def test_json_held_in_a_json_string_is_redacted_at_any_depth() -> None:
    """A listed key inside JSON that a string value holds (an event payload, a queued message) is
    redacted too, two levels down as well; the string stays a string of JSON."""
    import json

    inner = {"password": "hunter2", "deeper": json.dumps({"api_token": "ghp_planted42"}), "n": 1}
    body = json.dumps({"payload": json.dumps(inner), "other": "x"}).encode()
    assert b"hunter2" in body and b"ghp_planted42" in body
    record = _with_body(exchange(), "request", body)
    assert REDACTOR.redact(record) is True
    data = record["request"]["body"]["data"] or b""
    assert b"hunter2" not in data and b"ghp_planted42" not in data
    outer = json.loads(data)
    payload = json.loads(outer["payload"])
    assert (outer["other"], payload["password"], payload["n"]) == ("x", "REDACTED", 1)
    assert json.loads(payload["deeper"]) == {"api_token": "REDACTED"}
    assert {r["location"] for r in record["redactions"]} >= {
        "request.body:json:password",
        "request.body:json:api_token",
    }
    # Under a listed key that holds an object (the document is parsed and walked), too.
    walked = json.dumps({"secret": {"a": 1}, "payload": json.dumps({"token": "t-planted"})}).encode()
    record = _with_body(exchange(), "request", walked)
    assert REDACTOR.redact(record) is True
    assert b"t-planted" not in (record["request"]["body"]["data"] or b"")
    # A string that holds no JSON, or clean JSON, is left exactly as it was.
    clean = json.dumps({"payload": json.dumps({"sku": 'a"b'}), "text": 'say "hi"'}).encode()
    record = _with_body(exchange(), "request", clean)
    REDACTOR.redact(record)
    assert record["request"]["body"]["data"] == clean


def test_plural_keys_and_json_under_another_type_are_redacted() -> None:
    """Plural keys ("secrets", "apiKeys", "credentials" holding objects) lose their values, and
    JSON sent as application/octet-stream is searched like JSON."""
    body = (
        b'{"secrets": ["s-one", "s-two"], "apiKeys": {"k": "key-one"}, '
        b'"credentials": {"user": "bob", "pass": "pw-one"}, "tokens": "tok-one", "status": "ok"}'
    )
    for content_type in ("application/json", "application/octet-stream"):
        record = _with_body(exchange(), "request", body, content_type=content_type)
        assert REDACTOR.redact(record) is True, content_type
        data = record["request"]["body"]["data"] or b""
        for secret in (b"s-one", b"s-two", b"key-one", b"pw-one", b"tok-one"):
            assert secret not in data, (content_type, secret)
        assert b'"status":"ok"' in data.replace(b" ", b"")
    image = b"\x89PNG\r\n\x1a\n password=hunter2"
    record = _with_body(exchange(), "request", image, content_type="image/png")
    assert REDACTOR.redact(record) is False


def test_a_compressed_body_cut_short_is_kept_when_clean_and_withheld_when_not() -> None:
    """A gzip body over the keep limit is cut inside its stream: what decompresses is searched;
    clean, the kept bytes stay exactly as they were; holding a secret, they are withheld."""
    import random

    # Letters that compress poorly (so the cut falls mid-stream) and hold nothing a rule matches.
    rng = random.Random(7)
    pads = ("".join(rng.choices("abcdfghkmnpqtvwxz", k=16)).encode() for _ in range(3000))
    clean_text = (
        b'{"items": [' + b",".join(b'{"n": %d, "pad": "%s"}' % (i, p) for i, p in enumerate(pads)) + b"]}"
    )
    secret_text = clean_text[:5000] + b'"password": "hunter2", ' + clean_text[5000:]
    for text, kept in ((clean_text, True), (secret_text, False)):
        cut = gzip.compress(text)[:20_000]
        record = _with_body(exchange(), "response", cut, encoding="gzip", state="TRUNCATED")
        record["response"]["body"]["sha256"] = None
        changed = REDACTOR.redact(record)
        body = record["response"]["body"]
        if kept:
            assert not changed and body["data"] == cut and body["state"] == "TRUNCATED"
        else:
            assert changed and body["data"] is None and body["state"] == "NOT_KEPT"
            assert record["redactions"][-1]["rule"] == "withheld:cut-short:gzip"
