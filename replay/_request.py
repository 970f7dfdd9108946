"""Recorded exchanges to the exact bytes of the request to send.

Method, raw path and query (byte for byte, never decoded or re-encoded), headers in recorded order
with their case, duplicates and bytes, and the body as it was sent (still content-encoded).
Hop-by-hop headers are dropped: the replay's own connection management owns them. Two framing
rules keep the target's view the same: a chunked upload is sent chunked again, and a recorded
``Content-Length`` is kept unless the body sent differs from it in length (a rewrite, a stream
redaction, or an incomplete body sent on purpose), when it is set to the real length.
"""

from __future__ import annotations

from dataclasses import dataclass

from trafficreel.schemas import Exchange

from ._rewrite import Rewriter

__all__ = ["HOP_BY_HOP", "Prepared", "Skipped", "prepare"]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"http2-settings",
    }
)


@dataclass(slots=True)
class Prepared:
    """A request ready to send, and the record it came from."""

    record: Exchange
    method: str
    target: bytes  # raw path and query as sent in the request line
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool
    wire: bytes  # the exact bytes written to the connection
    redacted: int  # recorded header values that still carry a redaction marker
    incomplete: str | None = None  # the body state when a body not kept whole is sent anyway

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record that is not sent, and why (``request-body-not-kept`` …)."""

    record: Exchange
    reason: str


def _framed(body: bytes) -> bytes:
    return (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"


def wire_bytes(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, chunked: bool
) -> bytes:
    """The request exactly as written: request line, header lines, blank line, body."""
    lines = [method.encode("latin-1"), b" ", target or b"/", b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    lines.append(_framed(body) if chunked else body)
    return b"".join(lines)


def prepare(
    record: Exchange, rewriter: Rewriter, *, default_host: bytes, send_incomplete: bool = False
) -> Prepared | Skipped:
    """The request to send for ``record``, or why it is skipped."""
    request = record["request"]
    body_record = request["body"]
    state = body_record["state"]
    incomplete = None
    if state == "NONE":
        body = b""
    elif state == "COMPLETE" or send_incomplete:
        body = body_record["data"] or b""
        incomplete = None if state == "COMPLETE" else state
    else:
        return Skipped(record, f"request-body-{state.lower().replace('_', '-')}")

    raw = [(h["name"], h["value"]) for h in request["headers"]]
    connection_tokens = {
        token.strip().lower()
        for name, value in raw
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    drop = HOP_BY_HOP | connection_tokens
    headers: list[tuple[bytes, bytes]] = []
    chunked = False
    for name, value in raw:
        low = name.lower()
        if low == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
            headers.append((name, value))
        elif low not in drop:
            headers.append((name, value))

    path, query = request["path"], request["query"]
    if not rewriter.empty:
        path, query, headers, body = rewriter.apply(path, query, headers, body)
    target = path + b"?" + query if query else path

    lengths = [i for i, (name, _) in enumerate(headers) if name.lower() == b"content-length"]
    if chunked:
        headers = [h for i, h in enumerate(headers) if i not in lengths]  # chunked framing wins
    elif lengths:
        length = b"%d" % len(body)
        for i in lengths:
            if headers[i][1].strip() != length:
                headers[i] = (headers[i][0], length)
    elif body:
        headers.append((b"content-length", b"%d" % len(body)))

    if not any(name.lower() == b"host" for name, _ in headers):
        host = request["host"].encode("latin-1") if request["host"] else default_host
        headers.insert(0, (b"host", rewriter.host or host))

    redacted_names = {
        r["location"].split(":", 1)[1].encode("latin-1")
        for r in record["redactions"]
        if r["location"].startswith("request.header:")
    } - rewriter.set_names
    redacted = sum(1 for name, _ in headers if name.lower() in redacted_names) if redacted_names else 0
    method = request["method"]
    wire = wire_bytes(method, target, headers, body, chunked)
    return Prepared(record, method, target, headers, body, chunked, wire, redacted, incomplete)
