"""WSGI middleware: records each HTTP exchange at the handler entry, changing nothing the app sees.

    app = TrafficRecorderWSGI(app)             # Flask: app.wsgi_app = TrafficRecorderWSGI(app.wsgi_app)

``wsgi.input`` is replaced by a tee with the same ``read``/``readline``/``readlines``/iteration
semantics that copies what the app reads; the response iterable is wrapped so chunks are copied
as the server pulls them, and the original ``close()`` is always called. A ``wsgi.file_wrapper``
response is returned as is, so the server's sendfile fast path stays; its body is then counted
from Content-Length and not kept.

WSGI hands headers over as a dict (``HTTP_*`` keys), so their original order, case and duplicates
are not available here; the record rebuilds them in a stable order. ASGI keeps them exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

from ._body import BodyCapture
from ._config import RecorderConfig
from ._context import suppress_recording
from ._exchange import PendingExchange
from ._recorder import Recorder

__all__ = ["TrafficRecorderWSGI"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_CGI_HEADERS = {"CONTENT_TYPE": b"content-type", "CONTENT_LENGTH": b"content-length"}


_NAMES: dict[str, bytes | None] = {}  # environ key -> header name (None: not a header); keys repeat


def _header_name(key: str) -> bytes | None:
    if key.startswith("HTTP_"):
        return key[5:].replace("_", "-").lower().encode("latin-1")
    return _CGI_HEADERS.get(key)


def environ_headers(environ: Environ) -> list[tuple[bytes, bytes]]:
    """Request headers rebuilt from a WSGI environ (names lowercased, values as the server decoded them)."""
    headers = []
    names = _NAMES
    for key, value in environ.items():
        name = names.get(key, b"")
        if name == b"":
            name = _header_name(key)
            if len(names) < 4096:  # bounded against odd clients
                names[key] = name
        if name is None or (not value and key in _CGI_HEADERS):  # CGI's are there even when not sent
            continue
        headers.append((name, value.encode("latin-1") if isinstance(value, str) else bytes(value)))
    return headers


def _address(host: str | None, port: str | None) -> tuple[str, int | None] | None:
    """(host, port) from the environ; servers such as wsgiref give REMOTE_ADDR without REMOTE_PORT."""
    if not host and not port:
        return None
    return host or "", int(port) if port and port.isdigit() else None


class _TeeInput:
    """``wsgi.input`` that copies every byte the app reads into a body capture.

    It offers what the server's stream offers and no more: ``readinto`` and ``read1`` only when
    the stream has them (apps and frameworks probe for them), iteration as the stream iterates.
    """

    __slots__ = ("_capture", "_inner", "_lines")

    def __init__(self, inner: Any, capture: BodyCapture) -> None:
        self._inner = inner
        self._capture = capture
        self._lines: Iterator[bytes] | None = None

    def read(self, *args: Any) -> bytes:
        data: bytes = self._inner.read(*args)
        self._capture.feed(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._inner.readline(*args)
        self._capture.feed(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._inner.readlines(*args)
        for line in lines:
            self._capture.feed(line)
        return lines

    def __iter__(self) -> _TeeInput:
        return self

    def __next__(self) -> bytes:
        if self._lines is None:
            self._lines = iter(self._inner)
        line: bytes = next(self._lines)
        self._capture.feed(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # e.g. close(), or server-specific extras


class _ReadInto(_TeeInput):
    __slots__ = ()

    def readinto(self, buffer: Any) -> int | None:
        # Werkzeug (Flask) reads through readinto when the server's stream has it.
        count: int | None = self._inner.readinto(buffer)
        if count:
            # A copy: the caller reuses its buffer. A bytearray's slice is one (a view's is not).
            copied = buffer[:count] if type(buffer) is bytearray else bytes(memoryview(buffer)[:count])
            self._capture.feed(copied)
        return count


class _Read1(_TeeInput):
    __slots__ = ()

    def read1(self, *args: Any) -> bytes:
        data: bytes = self._inner.read1(*args)
        self._capture.feed(data)
        return data


class _ReadIntoRead1(_ReadInto, _Read1):
    __slots__ = ()


_TEES: dict[tuple[bool, bool], type[_TeeInput]] = {
    (False, False): _TeeInput,
    (True, False): _ReadInto,
    (False, True): _Read1,
    (True, True): _ReadIntoRead1,
}


def _tee(inner: Any, capture: BodyCapture) -> _TeeInput:
    return _TEES[hasattr(inner, "readinto"), hasattr(inner, "read1")](inner, capture)


def _target(environ: Environ) -> tuple[bytes, bytes]:
    """Path and query as the client sent them where the server says so, else rebuilt."""
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw_uri:
        path, _, query = raw_uri.encode("latin-1").partition(b"?")
        return path, query
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    return path, environ.get("QUERY_STRING", "").encode("latin-1")


_CLOSED: tuple[bytes, ...] = ()  # the response iterable once the server closed it


def _finished_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    raise RuntimeError("start_response called after the response was finished")


class _Exchange(PendingExchange):
    """One exchange, and everything the request path needs for it in one object (one allocation):
    the ``start_response`` wrapper, the response iterable handed to the server (chunks copied as
    they pass, ``close()`` always reaching the original) and finishing exactly once."""

    __slots__ = (
        "completed",
        "environ",
        "finished",
        "header_pairs",
        "iterable",
        "recorder",
        "start_response_inner",
        "status_line",
    )
    completed: bool
    environ: Environ | None  # a copy taken before the app ran: the request as the server gave it
    finished: bool
    header_pairs: Sequence[tuple[str, str]]
    iterable: Iterable[bytes] | None
    recorder: Recorder
    start_response_inner: StartResponse
    status_line: str | None

    def prepare(self) -> None:
        """Reads the request from the environ copy, and the response's status line and headers, on
        the recorder's thread: the request path only keeps references."""
        environ = self.environ
        assert environ is not None  # build() runs once per exchange
        self.environ = None
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self.path, self.query = _target(environ)
        self.http_version = environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1"
        self.client = _address(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))
        self.server = _address(environ.get("SERVER_NAME"), environ.get("SERVER_PORT"))
        self.req_headers = environ_headers(environ)
        if self.status_line is not None:
            try:
                self.status = int(self.status_line[:3])
            except ValueError:
                self.status = None
        self.resp_headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in self.header_pairs]

    # -- the request path ----------------------------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        write = self.start_response_inner(status, headers, *((exc_info,) if exc_info else ()))
        self.status_line = status
        self.header_pairs = headers[:]
        self.response_started = True
        self.resp_body = capture = BodyCapture(self.recorder.policy.limit)

        def tee_write(data: bytes) -> object:
            capture.feed(data)
            return write(data)

        return tee_write

    def finish(self, outcome: str | None = None, exc: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        self.end_mono = time.monotonic_ns()
        # The server's start_response leads to its request handler and live environ: not held
        # while the record waits for the recorder's thread (the app's iterable goes at close()).
        self.start_response_inner = _finished_start_response
        if exc is not None:
            self.outcome = "RAISED"
            self.exception = exc
        elif outcome == "DISCONNECTED":
            self.outcome = "DISCONNECTED"
        if not self.completed and self.resp_body is not None and outcome != "FILE":
            self.resp_body.aborted = True
        self.recorder.submit(self)

    # -- the response iterable the server gets -----------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        iterable = self.iterable
        try:
            # An app that returned no iterable (None) fails here, as it would without this layer.
            for chunk in iterable:  # type: ignore[union-attr]
                capture = self.resp_body
                if capture is not None:
                    capture.feed(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.finish(exc=exc)
            raise
        self.completed = True

    def close(self) -> None:
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self.finish(exc=exc)
            raise
        finally:
            self.iterable = _CLOSED  # not held while the record waits for the recorder's thread
            # Closed before the iterable was exhausted: the server stopped, the client went away.
            self.finish(None if self.completed else "DISCONNECTED")


class _SizedExchange(_Exchange):
    """For a response iterable with a length (a list of chunks): servers use ``len()`` to set
    Content-Length when there is one chunk, so it must stay visible."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class TrafficRecorderWSGI:
    """WSGI middleware recording every HTTP exchange to Kafka through a ``Recorder``."""

    def __init__(
        self, app: WSGIApp, *, recorder: Recorder | None = None, config: RecorderConfig | None = None
    ) -> None:
        self.app = app
        self.recorder = recorder or Recorder(config, recorder_name="wsgi")
        self._enabled = self.recorder.config.enabled
        self._limit = self.recorder.policy.limit

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self._enabled or suppress_recording.get():
            return self.app(environ, start_response)
        start_ns, start_mono = time.time_ns(), time.monotonic_ns()
        recorder = self.recorder
        if recorder.exclude and recorder.excluded(_target(environ)[0]):
            return self.app(environ, start_response)
        req_body = BodyCapture(self._limit)
        # Method, target, version, addresses and headers are read from the environ copy on the
        # recorder's thread (``_Exchange.prepare``).
        state = _Exchange("INBOUND", start_ns, start_mono, "", "", b"", b"", "", (), req_body)
        state.recorder = recorder
        state.start_response_inner = start_response
        state.environ = environ.copy()
        state.size_hint = 64 * len(environ)
        state.header_pairs = ()  # until start_response
        state.status_line = state.iterable = None
        state.finished = state.completed = False
        if "wsgi.input" in environ:
            environ["wsgi.input"] = _tee(environ["wsgi.input"], req_body)
        try:
            result = self.app(environ, state.start_response)
        except BaseException as exc:
            state.finish(exc=exc)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            files: Iterable[bytes] = self._file_response(result, state)
            return files
        state.iterable = result
        if hasattr(result, "__len__"):
            state.__class__ = _SizedExchange
        return state

    def _file_response(self, result: Any, state: _Exchange) -> Any:
        # Keep the server's sendfile path: hand back the very object, and finish when it closes.
        original_close = getattr(result, "close", None)

        def close() -> None:
            try:
                if original_close is not None:
                    original_close()
            finally:
                capture = state.resp_body
                length = next((v for n, v in state.header_pairs if n.lower() == "content-length"), "")
                if capture is not None:
                    capture.assume(int(length) if length.isdigit() else None)
                state.finish("FILE")

        try:
            result.close = close
        except AttributeError:  # a slotted wrapper: record now, without the transfer time
            state.finish("FILE")
        return result
