"""Recorded exchanges become the exact request bytes to send."""

from __future__ import annotations

from trafficreel.replay import Prepared, Rewriter, Rewrites, Skipped, prepare

from .support import record

NONE = Rewriter(Rewrites())


def _prepared(rec: object, rewriter: Rewriter = NONE, **kw: object) -> Prepared:
    result = prepare(rec, rewriter, default_host=b"target:80", **kw)  # type: ignore[arg-type]
    assert isinstance(result, Prepared), result
    return result


def test_raw_path_query_and_headers_are_sent_byte_for_byte() -> None:
    """Percent-encoding, non-UTF-8 bytes, repeated keys, header case, order and duplicates survive."""
    headers = [(b"Host", b"shop.example"), (b"X-Dup", b"1"), (b"accept", b"*/*"), (b"X-Dup", b"\xff2")]
    rec = record(path=b"/a%2Fb/\xe9t\xe9", query=b"x=1&x=2&q=%20+", headers=headers)
    wire = _prepared(rec).wire
    assert wire == (
        b"GET /a%2Fb/\xe9t\xe9?x=1&x=2&q=%20+ HTTP/1.1\r\n"
        b"Host: shop.example\r\nX-Dup: 1\r\naccept: */*\r\nX-Dup: \xff2\r\n\r\n"
    )


def test_hop_by_hop_headers_and_those_named_in_connection_are_dropped() -> None:
    """Connection, Keep-Alive, TE, Upgrade, Proxy-Authorization and Connection-named headers go."""
    headers = [
        (b"host", b"h"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"keep-alive", b"timeout=5"),
        (b"x-private", b"p"),
        (b"TE", b"trailers"),
        (b"Upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic x"),
        (b"x-kept", b"k"),
    ]
    prepared = _prepared(record(headers=headers))
    assert prepared.headers == [(b"host", b"h"), (b"x-kept", b"k")]


def test_recorded_content_length_kept_when_the_body_is_unchanged() -> None:
    """A recorded Content-Length that matches the body is sent as it was."""
    body = b'{"a": 1}'
    rec = record(method="POST", body=body, headers=[(b"host", b"h"), (b"Content-Length", b"8")])
    prepared = _prepared(rec)
    assert prepared.wire.endswith(b"Content-Length: 8\r\n\r\n" + body)


def test_content_length_recomputed_when_a_rewrite_changes_the_body() -> None:
    """A body rewrite sets Content-Length to the new length, in place."""
    rewrites = Rewrites.model_validate(
        {"substitute": [{"where": "body", "pattern": "prod", "replacement": "staging"}]}
    )
    rec = record(method="POST", body=b'{"env":"prod"}', headers=[(b"content-length", b"14"), (b"host", b"h")])
    prepared = _prepared(rec, Rewriter(rewrites))
    assert prepared.headers[0] == (b"content-length", b"17")
    assert prepared.body == b'{"env":"staging"}'


def test_a_chunked_upload_is_sent_chunked() -> None:
    """Transfer-Encoding: chunked is kept and the body framed as one chunk and the last chunk."""
    rec = record(method="POST", body=b"hello", headers=[(b"host", b"h"), (b"transfer-encoding", b"chunked")])
    prepared = _prepared(rec)
    assert prepared.wire.endswith(b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_host_is_added_from_the_record_when_no_header_carried_it() -> None:
    """Without a Host header the recorded host (else the target's) goes first."""
    rec = record(headers=[(b"accept", b"*/*")])
    assert _prepared(rec).headers[0] == (b"host", rec["request"]["host"].encode())  # type: ignore[union-attr]
    rec["request"]["host"] = None
    assert _prepared(rec).headers[0] == (b"host", b"target:80")


def test_records_without_a_whole_body_are_skipped_with_the_reason() -> None:
    """Digest-only and truncated bodies are skipped unless sending them is asked for."""
    for state, reason in (("NOT_KEPT", "request-body-not-kept"), ("TRUNCATED", "request-body-truncated")):
        rec = record(
            method="POST", body=b"part", state=state, headers=[(b"host", b"h"), (b"content-length", b"99")]
        )
        skipped = prepare(rec, NONE, default_host=b"t")
        assert isinstance(skipped, Skipped) and skipped.reason == reason
        sent = _prepared(rec, send_incomplete=True)
        assert sent.headers[1] == (b"content-length", b"4")  # the target must not wait for 99 bytes


def test_redacted_headers_are_counted_unless_a_rewrite_sets_them() -> None:
    """A header still holding a redaction marker is counted; setting it by rewrite clears the count."""
    rec = record(headers=[(b"host", b"h"), (b"authorization", b"REDACTED")])
    rec["redactions"] = [
        {"location": "request.header:authorization", "rule": "credential-header", "stage": "source"}
    ]
    assert _prepared(rec).redacted == 1
    token = Rewriter(Rewrites(set_headers={"Authorization": "Bearer fresh"}))
    prepared = _prepared(rec, token)
    assert prepared.redacted == 0
    assert prepared.headers == [(b"host", b"h"), (b"Authorization", b"Bearer fresh")]
