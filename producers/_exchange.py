"""One exchange in flight: what the request path captured, and the record built from it later.

The middleware and hooks only fill a ``PendingExchange`` with references (header lists as the
server gave them, body captures, clock readings); building the Avro record — header lookups,
redaction, trace context, metadata — happens on the recorder's background thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trafficreel.schemas import Body, Direction, OutcomeKind, Redaction, blank_body, new_id

from ._body import BodyCapture

if TYPE_CHECKING:
    from ._recorder import Recorder

__all__ = ["PendingExchange"]

HeaderList = Sequence[Sequence[bytes]]
_EXC_MESSAGE_LIMIT = 2000


def _index(headers: HeaderList) -> tuple[dict[bytes, bytes], list[bytes]]:
    """First value of each header by lowercase name, and every X-Forwarded-For value, in one pass."""
    index: dict[bytes, bytes] = {}
    forwarded: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in index:
            index[lowered] = value
        if lowered == b"x-forwarded-for":
            forwarded.append(value)
    return index, forwarded


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _trace(traceparent: bytes | None) -> dict[str, Any]:
    # W3C traceparent: version-traceid-parentid-flags, lowercase hex.
    if traceparent:
        parts = traceparent.strip().split(b"-")
        if len(parts) >= 4 and len(parts[1]) == 32 and len(parts[2]) == 16 and len(parts[3]) == 2:
            try:
                flags = int(parts[3], 16)
                int(parts[1], 16), int(parts[2], 16)
            except ValueError:
                pass
            else:
                if parts[1] != b"0" * 32:
                    return {
                        "trace_id": parts[1].decode().lower(),
                        "span_id": parts[2].decode().lower(),
                        "sampled": bool(flags & 1),
                    }
    return {"trace_id": None, "span_id": None, "sampled": None}


class PendingExchange:
    """Captured state of one exchange; filled on the request path, built into a record later."""

    __slots__ = (
        "client",
        "direction",
        "end_mono",
        "exception",
        "host",
        "http_version",
        "method",
        "outcome",
        "path",
        "query",
        "req_body",
        "req_headers",
        "resp_body",
        "resp_decoded",
        "resp_headers",
        "response_started",
        "scheme",
        "server",
        "size_hint",
        "start_mono",
        "start_ns",
        "status",
        "trailers",
    )

    def __init__(
        self,
        direction: Direction,
        start_ns: int,
        start_mono: int,
        method: str,
        scheme: str,
        path: bytes,
        query: bytes,
        http_version: str,
        req_headers: HeaderList,
        req_body: BodyCapture,
        client: tuple[str, int | None] | None = None,
        server: tuple[str, int | None] | None = None,
        host: str | None = None,
    ) -> None:
        self.direction = direction
        self.start_ns = start_ns
        self.start_mono = start_mono
        self.end_mono = start_mono
        self.method = method
        self.scheme = scheme
        self.path = path
        self.query = query
        self.http_version = http_version
        self.req_headers = req_headers
        self.req_body = req_body
        self.client = client
        self.server = server
        self.host = host
        self.status: int | None = None
        self.resp_headers: HeaderList = ()
        self.resp_body: BodyCapture | None = None
        self.trailers: HeaderList = ()
        self.response_started = False
        self.outcome: OutcomeKind = "COMPLETED"
        self.exception: BaseException | None = None
        self.resp_decoded = False  # the client decoded the response body before we saw it
        self.size_hint = 0  # bytes held elsewhere until prepare() runs

    def size_estimate(self) -> int:
        """Bytes this record will hold while queued: kept bodies exactly, the rest estimated."""
        kept = self.req_body.kept_bytes + (self.resp_body.kept_bytes if self.resp_body else 0)
        headers = len(self.req_headers) + len(self.resp_headers) + len(self.trailers)
        return 1024 + kept + 64 * headers + self.size_hint

    @staticmethod
    def _body(
        recorder: Recorder,
        capture: BodyCapture | None,
        index: dict[bytes, bytes],
        decoded: bool = False,
        request: bool = False,
    ) -> Body:
        if capture is None:
            return blank_body()
        content_type = index.get(b"content-type")
        length = index.get(b"content-length")
        declared = int(length) if length is not None and length.strip().isdigit() else None
        if request and declared is not None and capture.size < declared:
            capture.aborted = True  # the app read less than the client declared: not the whole body
        encoding = None if decoded else _text(index.get(b"content-encoding"))
        return capture.result(recorder.policy.keeps(content_type), _text(content_type), encoding, declared)

    def prepare(self) -> None:
        """Work deferred from the request path (e.g. turning a WSGI environ into header pairs),
        run once by ``build()`` on the recorder's thread; subclasses override it."""

    def build(self, recorder: Recorder) -> dict[str, Any]:
        """The Avro record (runs on the recorder's thread)."""
        self.prepare()
        redactions: list[Redaction] = []
        req_headers, resp_headers, query = self.req_headers, self.resp_headers, self.query
        redactor = recorder.redactor
        if redactor is not None:
            req_headers = redactor.headers(req_headers, "request", redactions)
            resp_headers = redactor.headers(resp_headers, "response", redactions)
            query = redactor.query(query, "request", redactions)
        req_index, forwarded = _index(self.req_headers)
        resp_index, _ = _index(self.resp_headers)
        exc = self.exception
        record: dict[str, Any] = {
            "id": new_id(self.start_ns),
            "start_time": self.start_ns // 1000,
            "duration_us": max(0, (self.end_mono - self.start_mono) // 1000),
            "direction": self.direction,
            "source": recorder.source,
            "peer": {
                "remote_address": self.client[0] if self.client else None,
                "remote_port": self.client[1] if self.client else None,
                "local_address": self.server[0] if self.server else None,
                "local_port": self.server[1] if self.server else None,
                "forwarded_for": b", ".join(forwarded).decode("latin-1") if forwarded else None,
            },
            "request": {
                "method": self.method,
                "scheme": self.scheme,
                "host": self.host if self.host is not None else _text(req_index.get(b"host")),
                "path": self.path,
                "query": query,
                "http_version": self.http_version,
                "headers": req_headers,
                "body": self._body(recorder, self.req_body, req_index, request=True),
            },
            "response": {
                "status": self.status,
                "headers": resp_headers,
                "trailers": self.trailers,
                "body": self._body(recorder, self.resp_body, resp_index, self.resp_decoded),
            },
            "outcome": {
                "kind": self.outcome,
                "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}" if exc else None,
                "exception_message": str(exc)[:_EXC_MESSAGE_LIMIT] if exc else None,
                "response_started": self.response_started,
            },
            "trace": _trace(req_index.get(b"traceparent")),
            "traffic_class": None,
            "class_rule": None,
            "route": None,
            "sample_weight": None,
            "redactions": redactions,
            "tags": recorder.config.tags,
        }
        if recorder.deep is not None:
            recorder.deep.redact(record, credentials=False)  # type: ignore[arg-type]
        return record
