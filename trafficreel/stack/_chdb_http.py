"""ClickHouse's HTTP interface, served by chDB: the embedded analytics store.

One process owns the chDB data directory (chDB allows one per directory) and answers on loopback
the subset of ClickHouse's HTTP protocol that clickhouse-connect, ``curl`` as ClickHouse documents
it, and the sink use: queries by URL parameter or body, ``INSERT … FORMAT X`` with the data streamed
from the body (chunked uploads and gzip/deflate/zstd/lz4 request bodies included), settings and
``param_*`` query parameters, ``default_format``, ``/ping``, and errors as ClickHouse reports them
(HTTP status, ``X-ClickHouse-Exception-Code``, ``Code: N. DB::Exception: …`` body).

chDB runs one statement at a time per connection, so requests are served one at a time; settings
given on a request apply to that request only. Run ``python -m trafficreel.stack.chdb_server``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

__all__ = ["ChdbEngine", "ClickHouseError", "make_handler"]

_ERROR_RE = re.compile(r"Code:\s*(\d+)\.")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# INSERT INTO <target> [SETTINGS …] FORMAT <name>, then the data. Target may be a table, a table
# with a column list, or a table function.
_INSERT_FORMAT_RE = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?",
    re.IGNORECASE | re.DOTALL,
)
# ClickHouse's input() table function (INSERT … SELECT … FROM input('structure') FORMAT X):
# chDB inserts only plain INSERTs from a stream, so the body is staged in a file and read by file().
_INPUT_RE = re.compile(r"\binput\s*\(\s*('(?:[^'\\]|\\.|'')*')\s*\)", re.IGNORECASE | re.DOTALL)
# Staged in memory where the system offers it; tempfile creates the file exclusively, mode 0600.
_SHM = "/dev/shm"  # noqa: S108
_STAGING_DIR = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None
# Where the system allows it the staged file has no name (it cannot outlive a killed server) and
# file() reads it through this process's descriptor.
_BY_DESCRIPTOR = os.path.isdir("/proc/self/fd")
_READ_STATEMENT_RE = re.compile(r"^\s*(?:\(\s*)*(SELECT|WITH)\b", re.IGNORECASE)
_COMMENT_RE = re.compile(r"^\s*(?:--[^\n]*\n|/\*.*?\*/)", re.DOTALL)

# Parameters that steer the HTTP interface itself rather than name a ClickHouse setting.
_TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "user",
        "password",
        "quota_key",
        "buffer_size",
        "wait_end_of_query",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_zlib_compression_level",
        "client_protocol_version",
        "role",
    }
)
_CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
# How ClickHouse maps exception codes to HTTP statuses (src/Server/HTTPHandler.cpp).
_STATUS_BY_CODE = {
    **dict.fromkeys((194, 192, 516, 195), 401),  # passwords, users, authentication
    **dict.fromkeys((497,), 403),  # ACCESS_DENIED
    **dict.fromkeys((60, 81, 46, 47, 50, 16, 115, 36), 404),  # unknown table/database/function/…
    **dict.fromkeys((62, 6, 27, 26, 38, 72, 69, 41, 53, 43, 44, 57, 117, 42, 386, 80), 400),
    **dict.fromkeys((48, 1), 501),  # NOT_IMPLEMENTED, UNSUPPORTED_METHOD
    **dict.fromkeys((202, 203), 503),  # too many simultaneous queries, no free connection
    159: 408,  # TIMEOUT_EXCEEDED → request timeout
    395: 500,
}


class ClickHouseError(Exception):
    """A ClickHouse error code and message, ready to be sent the way ClickHouse sends it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        text = str(exc).strip()
        matches = list(_ERROR_RE.finditer(text))
        if not matches:
            return cls(1000, text)
        # chDB wraps some errors ("Streaming query failed: Code: 60. …"): keep the innermost.
        return cls(int(matches[-1].group(1)), text[matches[-1].start() :])

    @property
    def status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        text = self.message
        if not text.startswith("Code:"):
            text = f"Code: {self.code}. DB::Exception: {text}"
        return f"{text} (version {version})\n".encode()


def _decompressor(encoding: str) -> Callable[[bytes], bytes] | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        return zlib.decompressobj().decompress
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress  # type: ignore[no-any-return]
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor().decompress  # type: ignore[no-any-return]
    raise ClickHouseError(48, f"Content-Encoding {encoding!r} is not supported by the embedded server")


class _FairLock:
    """A lock granted in arrival order. ``threading.Lock`` is not fair: a client sending request
    after request (a sink inserting) can take it again and again while another client's request
    (a dashboard's query) waits for seconds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class ChdbEngine:
    """A chDB connection shared by all requests, one statement at a time, in arrival order."""

    def __init__(self, path: str) -> None:
        from chdb import connect

        self._conn: Any = cast(Any, connect)(path)
        self.lock = _FairLock()
        self.version = str(self._conn.query("SELECT version()", "TabSeparated")).strip()
        self.timezone = str(self._conn.query("SELECT timezone()", "TabSeparated")).strip()
        names = str(self._conn.query("SELECT name FROM system.settings", "TabSeparated")).split()
        self.settings = frozenset(names)

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    def query(self, sql: str, fmt: str, params: dict[str, str]) -> Any:
        try:
            return self._conn.query(sql, fmt, params=params)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc

    def stream(self, sql: str, fmt: str, params: dict[str, str]) -> Iterator[bytes]:
        try:
            result = self._conn.send_query(sql, fmt, params=params)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc
        try:
            while True:
                try:
                    chunk = result.fetch()
                except Exception as exc:
                    raise ClickHouseError.from_engine(exc) from exc
                if chunk is None:
                    return
                data = chunk.bytes() if hasattr(chunk, "bytes") else bytes(chunk)
                if not data:
                    return
                yield data
        finally:
            result.close()

    def insert(self, statement: str, fmt: str, chunks: Iterator[bytes]) -> tuple[int, int]:
        try:
            inserter = self._conn.send_insert(statement, fmt)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc
        with inserter:
            try:
                for chunk in chunks:
                    if chunk:
                        inserter.append(chunk)
                result = inserter.finish()
            except ClickHouseError:
                raise
            except Exception as exc:
                raise ClickHouseError.from_engine(exc.__cause__ or exc) from exc
        return int(result.rows_written), int(result.bytes_written)

    def insert_select(self, statement: str, fmt: str, chunks: Iterator[bytes]) -> tuple[int, int]:
        """``INSERT … SELECT … FROM input('structure')``: the data is staged in a file for file()."""
        stage = tempfile.TemporaryFile if _BY_DESCRIPTOR else tempfile.NamedTemporaryFile
        with stage(dir=_STAGING_DIR, prefix="trafficreel-input-") as staged:
            for chunk in chunks:
                staged.write(chunk)
            staged.flush()
            path = _quote(f"/proc/self/fd/{staged.fileno()}" if _BY_DESCRIPTOR else staged.name)
            sql = _INPUT_RE.sub(lambda m: f"file({path}, {_quote(fmt)}, {m.group(1)})", statement, count=1)
            result = self.query(sql, "TabSeparated", {})
        return int(result.rows_written()), int(result.bytes_written())

    def set_settings(self, settings: dict[str, str]) -> None:
        for name, value in settings.items():
            self.query(f"SET {name} = {_quote(value)}", "TabSeparated", {})

    def reset_settings(self, names: list[str]) -> None:
        for name in names:
            # A setting that cannot be reset keeps no state worth failing a request for.
            with contextlib.suppress(ClickHouseError):
                self.query(f"SET {name} = DEFAULT", "TabSeparated", {})


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _strip_comments(sql: str) -> str:
    while True:
        stripped = _COMMENT_RE.sub("", sql, count=1)
        if stripped == sql:
            return sql
        sql = stripped


def make_handler(engine: ChdbEngine) -> type[BaseHTTPRequestHandler]:
    """Return a request handler class bound to one engine."""

    class Handler(_Handler):
        pass

    Handler.engine = engine
    return Handler


class _Handler(BaseHTTPRequestHandler):
    engine: ChdbEngine
    protocol_version = "HTTP/1.1"
    server_version = "trafficreel-chdb"
    # Headers and body leave in separate writes; with Nagle's algorithm on, the body of every
    # reply waits for the client's delayed ACK (about 40 ms per request on Linux).
    disable_nagle_algorithm = True

    # -- plumbing -----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is noise for an embedded store; errors are reported to the client

    def _body_chunks(self) -> Iterator[bytes]:
        """Yield the request body as it arrives: Content-Length or chunked, then decompressed."""
        decompress = _decompressor(self.headers.get("Content-Encoding", ""))
        for raw in self._raw_body_chunks():
            yield decompress(raw) if decompress else raw

    def _raw_body_chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    if not data:
                        raise ClickHouseError(33, "the request body ended inside a chunk")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(3)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    raise ClickHouseError(33, "the request body ended before Content-Length bytes")
                remaining -= len(data)
                yield data

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, exc: ClickHouseError, query_id: str) -> None:
        self.close_connection = True  # the request body may be half read
        self._send(
            exc.status,
            exc.body(self.engine.version),
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(exc.code),
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": self.engine.timezone,
                "Connection": "close",
            },
        )

    # -- HTTP methods -------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status") or (
            url.path == "/" and not url.query and self.command != "POST"
        ):
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            if url.path not in ("/", ""):
                raise ClickHouseError(
                    1, f"no handler for {url.path}; the embedded server answers on / and /ping only"
                )
            if params.get("decompress") == "1" or params.get("compress") == "1":
                raise ClickHouseError(
                    48,
                    "ClickHouse block compression (compress/decompress=1) is not supported by the "
                    "embedded server; use Content-Encoding instead",
                )
            self._execute(params, query_id)
        except ClickHouseError as exc:
            self._send_error(exc, query_id)

    def _execute(self, params: dict[str, str], query_id: str) -> None:
        engine = self.engine
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {
            k: v for k, v in params.items() if k not in _TRANSPORT_PARAMS and not k.startswith("param_")
        }
        unknown = sorted(set(settings) - engine.settings)
        if unknown:
            raise ClickHouseError(
                115,
                f"Setting {unknown[0]} is neither a builtin setting nor started "
                "with the prefix 'custom_' registered for user-defined settings. (UNKNOWN_SETTING)",
            )
        database = params.get("database", "")
        if database and not _IDENT_RE.match(database):
            raise ClickHouseError(81, f"Database {database!r} is not a valid name. (UNKNOWN_DATABASE)")
        fmt = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        url_query = params.get("query", "").encode()
        body = self._body_chunks()

        with engine.lock:
            engine.set_settings(settings)
            try:
                if database:
                    engine.query(f"USE {database}", "TabSeparated", {})
                self._dispatch(url_query, body, fmt, query_params, query_id)
            finally:
                if database:
                    engine.query("USE default", "TabSeparated", {})
                engine.reset_settings(list(settings))

    def _dispatch(
        self, url_query: bytes, body: Iterator[bytes], fmt: str, params: dict[str, str], query_id: str
    ) -> None:
        started = time.monotonic_ns()
        head = url_query
        pending: list[bytes] = []
        if not head:
            # The statement is at the start of the body; read just enough of it to see its shape.
            for chunk in body:
                pending.append(chunk)
                if sum(map(len, pending)) >= 65536:
                    break
            head = b"".join(pending)
            pending = []
        insert = _INSERT_FORMAT_RE.match(head)
        if insert:
            statement, data_format = insert.group(1).decode(), insert.group(2).decode()
            leftover = head[insert.end() :] if not url_query else b""
            # URL-parameter form: the whole body is data. Body form: data follows the FORMAT clause.
            chunks = _chain(leftover, body)
            if _INPUT_RE.search(statement):
                rows, written = self.engine.insert_select(statement, data_format, chunks)
            else:
                rows, written = self.engine.insert(statement, data_format, chunks)
            summary = {"written_rows": str(rows), "written_bytes": str(written), "result_rows": "0"}
            self._reply(b"", "TabSeparated", query_id, summary, started)
            return
        rest = b"".join(body)
        sql_bytes = head + (b"\n" + rest if url_query and rest else rest)
        if not sql_bytes.strip():
            raise ClickHouseError(62, "Empty query. (SYNTAX_ERROR)")
        try:
            sql = sql_bytes.decode()
        except UnicodeDecodeError as exc:
            raise ClickHouseError(
                27, f"The query is not valid UTF-8: {exc}. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"
            ) from exc
        if _READ_STATEMENT_RE.match(_strip_comments(sql)) and self.command != "HEAD":
            self._reply_stream(sql, fmt, params, query_id)
            return
        result = self.engine.query(sql, fmt, params)
        data = result.bytes() if hasattr(result, "bytes") else b""
        summary = {
            "read_rows": str(getattr(result, "rows_read", lambda: 0)()),
            "read_bytes": str(getattr(result, "bytes_read", lambda: 0)()),
            "written_rows": str(getattr(result, "rows_written", lambda: 0)()),
            "written_bytes": str(getattr(result, "bytes_written", lambda: 0)()),
        }
        self._reply(data, fmt, query_id, summary, started)

    def _headers(self, fmt: str, query_id: str, summary: dict[str, str], started: int) -> dict[str, str]:
        summary = {**summary, "elapsed_ns": str(time.monotonic_ns() - started)}
        return {
            "Content-Type": _CONTENT_TYPES.get(fmt, "text/tab-separated-values; charset=UTF-8"),
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "X-ClickHouse-Server-Display-Name": "trafficreel-chdb",
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
        }

    def _reply(self, data: bytes, fmt: str, query_id: str, summary: dict[str, str], started: int) -> None:
        self._send(200, data, self._headers(fmt, query_id, summary, started))

    def _reply_stream(self, sql: str, fmt: str, params: dict[str, str], query_id: str) -> None:
        started = time.monotonic_ns()
        chunks = self.engine.stream(sql, fmt, params)
        first = next(chunks, b"")  # errors found before any output become proper error responses
        self.send_response(200)
        for name, value in self._headers(fmt, query_id, {}, started).items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in _chain(first, chunks):
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except ClickHouseError as exc:
            # Mid-stream failure: like ClickHouse, append the error text and cut the stream short.
            self.wfile.write(
                b"%x\r\n%s\r\n" % (len(exc.body(self.engine.version)), exc.body(self.engine.version))
            )
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
