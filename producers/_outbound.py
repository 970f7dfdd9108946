"""Outbound hooks: record the service's own HTTP calls (direction OUTBOUND).

    from trafficreel.producers import instrument
    instrument(recorder)     # httpx (sync and async) and urllib3, hence requests and the kubernetes client

Each real request attempt is one record: method, scheme, Host, raw path and query, headers as sent,
the request body (given as bytes, or copied as the client reads it from a file, iterator or
stream), the response status, headers and body as the caller reads it. Calls made while
``not_recorded()`` is active, and the recorder's own calls, are skipped.
A failure inside the hook never reaches the caller; the caller's own errors propagate unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ._body import BodyCapture
from ._context import suppress_recording
from ._exchange import PendingExchange
from ._recorder import Recorder

__all__ = ["instrument", "uninstrument"]

_PATCHES: list[tuple[Any, str, Any]] = []


def _capture(recorder: Recorder) -> BodyCapture:
    return BodyCapture(recorder.policy.limit)


def _start(
    recorder: Recorder,
    method: str,
    scheme: str,
    host: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: Any,
    server: tuple[str, int] | None,
) -> PendingExchange:
    path, _, query = target.partition(b"?")
    capture = _capture(recorder)
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        capture.feed(bytes(body))
    return PendingExchange(
        direction="OUTBOUND",
        start_ns=time.time_ns(),
        start_mono=time.monotonic_ns(),
        method=method,
        scheme=scheme,
        path=path,
        query=query,
        http_version="1.1",
        req_headers=headers,
        req_body=capture,
        client=server,
        host=host,
    )


class _BodyTee:
    """Copies a request body given as a stream into the record as the client reads it to send."""

    def __init__(self, inner: Any, capture: BodyCapture) -> None:
        self._inner, self._capture = inner, capture
        self.done = False

    def feed(self, chunk: Any) -> None:
        with contextlib.suppress(Exception):  # a hook failure must not fail the call
            self._capture.feed(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk))

    def abort_unless_done(self) -> None:
        if not self.done:
            self._capture.aborted = True


class _ReadTee(_BodyTee):
    """A file-like request body for urllib3: ``read`` copies what it returns; anything else is the
    file's own. Text files are read as UTF-8 bytes, as urllib3 itself would send them."""

    def read(self, *args: Any) -> bytes:
        data = self._inner.read(*args)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data:
            self.feed(data)
        else:
            self.done = True
        return data  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[bytes]:
        # urllib3 1.26 sends chunked uploads by iterating the body
        for chunk in self._inner:
            if chunk:
                self.feed(chunk)
            yield chunk
        self.done = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _IterTee(_BodyTee):
    """An iterable request body for urllib3: each chunk copied as it is sent."""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self.feed(chunk)
            yield chunk
        self.done = True


def _urllib3_body(body: Any, ex: PendingExchange) -> tuple[Any, _BodyTee | None]:
    """The body to send and its tee, when urllib3 reads it from a file or an iterator."""
    if body is None or isinstance(body, (str, bytes, bytearray, memoryview)) or ex.req_body is None:
        return body, None
    try:
        view = memoryview(body)  # any other buffer (array, numpy): sent as is, length known
    except TypeError:
        pass
    else:
        ex.req_body.feed(view.tobytes())
        return body, None
    if isinstance(body, io.TextIOBase):
        return body, None  # urllib3 versions differ in how they encode text files: left alone
    if hasattr(body, "read"):
        tee: _BodyTee = _ReadTee(body, ex.req_body)
        return tee, tee
    try:
        iter(body)
    except TypeError:
        return body, None
    tee = _IterTee(body, ex.req_body)
    return tee, tee


def _respond(
    recorder: Recorder, ex: PendingExchange, status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    ex.status = status
    ex.resp_headers = headers
    ex.response_started = True
    ex.resp_body = _capture(recorder)


def _finish(
    recorder: Recorder, ex: PendingExchange, *, aborted: bool = False, exc: BaseException | None = None
) -> None:
    ex.end_mono = time.monotonic_ns()
    if exc is not None:
        ex.outcome = "RAISED"
        ex.exception = exc
    if aborted and ex.resp_body is not None:
        ex.resp_body.aborted = True
    recorder.submit(ex)


def _patch(owner: Any, name: str, wrapper: Callable[[Any], Any]) -> None:
    original = getattr(owner, name)
    if getattr(original, "__trafficreel__", False):
        return
    replacement = wrapper(original)
    replacement.__trafficreel__ = True
    _PATCHES.append((owner, name, original))
    setattr(owner, name, replacement)


# -- httpx ----------------------------------------------------------------------------------------


def _httpx_start(recorder: Recorder, request: Any) -> PendingExchange | None:
    """The exchange for an httpx request, or None when not recorded (suppressed, or the hook failed)."""
    if suppress_recording.get():
        return None
    try:
        url = request.url
        body = request.content if type(request.stream).__name__ == "ByteStream" else None
        port = url.port or (443 if url.scheme == "https" else 80)
        host = request.headers.get("host", url.netloc.decode())
        return _start(
            recorder,
            request.method,
            url.scheme,
            host,
            url.raw_path,
            list(request.headers.raw),
            body,
            (url.host, port),
        )
    except Exception:  # noqa: BLE001 - a hook failure must not fail the call
        return None


class _HttpxTee:
    """Copies a response's chunks as the caller reads them; the record ends when the stream closes."""

    def __init__(self, inner: Any, recorder: Recorder, ex: PendingExchange) -> None:
        self._inner, self._recorder, self._ex = inner, recorder, ex
        self._done = False
        self._finished = False

    def _feed(self, chunk: bytes) -> None:
        if self._ex.resp_body is not None:
            self._ex.resp_body.feed(chunk)

    def _end(self) -> None:
        if not self._finished:
            self._finished = True
            _finish(self._recorder, self._ex, aborted=not self._done)


def _httpx_streams() -> tuple[type, type]:
    import httpx

    class SyncTee(_HttpxTee, httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._feed(chunk)
                yield chunk
            self._done = True

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._end()

    class AsyncTee(_HttpxTee, httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                self._feed(chunk)
                yield chunk
            self._done = True

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._end()

    return SyncTee, AsyncTee


def _httpx_request_streams() -> tuple[type, type]:
    import httpx

    class SyncRequestTee(_BodyTee, httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self.feed(chunk)
                yield chunk
            self.done = True

        def close(self) -> None:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()

    class AsyncRequestTee(_BodyTee, httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                self.feed(chunk)
                yield chunk
            self.done = True

        async def aclose(self) -> None:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()

    return SyncRequestTee, AsyncRequestTee


def _tee_httpx_request(ex: PendingExchange | None, request: Any, tee_type: type) -> _BodyTee | None:
    """Copy a streamed httpx request body (bytes content was captured whole at the start)."""
    if ex is None or ex.req_body is None or type(request.stream).__name__ == "ByteStream":
        return None
    try:
        tee: _BodyTee = tee_type(request.stream, ex.req_body)
        request.stream = tee
    except Exception:  # noqa: BLE001 - a hook failure must not fail the call
        return None
    return tee


def _instrument_httpx(recorder: Recorder) -> None:
    try:
        import httpx
    except ImportError:
        return

    sync_tee, async_tee = _httpx_streams()
    sync_request_tee, async_request_tee = _httpx_request_streams()

    def respond(ex: PendingExchange | None, response: Any, tee: type) -> Any:
        if ex is None:
            return response
        try:
            _respond(recorder, ex, response.status_code, list(response.headers.raw))
            version = response.extensions.get("http_version", b"HTTP/1.1")
            ex.http_version = version.decode().partition("/")[2] or "1.1"
            response.stream = tee(response.stream, recorder, ex)
        except Exception:  # noqa: BLE001, S110 - a hook failure must not fail the call
            pass
        return response

    @contextlib.contextmanager
    def call(request: Any, request_tee: type) -> Iterator[PendingExchange | None]:
        """One transport call, sync or async: the exchange started, the request body teed, the
        call's failure recorded, and the request's own stream put back afterwards."""
        ex = _httpx_start(recorder, request)
        stream = request.stream
        body = _tee_httpx_request(ex, request, request_tee)
        try:
            yield ex
        except BaseException as exc:
            if ex is not None:
                if body is not None:
                    body.abort_unless_done()
                _finish(recorder, ex, exc=exc)
            raise
        finally:
            request.stream = stream  # a redirect or auth flow sending it again gets the original

    def sync_wrapper(original: Any) -> Any:
        @functools.wraps(original)
        def handle_request(self: Any, request: Any) -> Any:
            with call(request, sync_request_tee) as ex:
                response = original(self, request)
            return respond(ex, response, sync_tee)

        return handle_request

    def async_wrapper(original: Any) -> Any:
        @functools.wraps(original)
        async def handle_async_request(self: Any, request: Any) -> Any:
            with call(request, async_request_tee) as ex:
                response = await original(self, request)
            return respond(ex, response, async_tee)

        return handle_async_request

    _patch(httpx.HTTPTransport, "handle_request", sync_wrapper)
    _patch(httpx.AsyncHTTPTransport, "handle_async_request", async_wrapper)


# -- urllib3 (requests, the kubernetes client) ----------------------------------------------------


def _urllib3_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    items = headers.items() if headers is not None else ()
    return [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in items]


_SKIP_HEADER = "@@@SKIP_HEADER@@@"  # urllib3's marker for "do not send this default header"


def _header_bytes(value: Any) -> bytes:
    # As http.client's putheader encodes what it sends.
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return str(value).encode("ascii")
    return str(value).encode("latin-1")


def _listen_headers(conn: Any) -> list[tuple[bytes, bytes]]:
    """The header lines ``conn`` sends for its next request, in order, as sent: what the caller
    gave plus what urllib3 and http.client add (Host, Accept-Encoding, User-Agent, Content-Length
    or Transfer-Encoding). Every header goes through ``putheader``; ``_unlisten`` undoes this."""
    sent: list[tuple[bytes, bytes]] = []
    original = conn.putheader

    def putheader(header: Any, *values: Any) -> None:
        original(header, *values)
        if not any(v == _SKIP_HEADER for v in values):  # urllib3 left it out
            sent.append((_header_bytes(header), b", ".join(_header_bytes(v) for v in values)))

    conn.putheader = putheader
    return sent


def _unlisten(conn: Any) -> None:
    with contextlib.suppress(AttributeError):
        del conn.putheader  # the class's own method again


def _note_decoding(response: Any, ex: PendingExchange, kwargs: dict[str, Any]) -> None:
    decode = kwargs.get("decode_content")
    if decode is None:
        decode = getattr(response, "decode_content", True)
    if decode and response.headers.get("content-encoding", "identity") != "identity":
        ex.resp_decoded = True  # the caller asked urllib3 for decoded bytes, so that is what we see


def _watch_response(response: Any, recorder: Recorder, ex: PendingExchange) -> None:
    """Copy what the caller reads from a streamed urllib3 response; finish when read out or released."""
    state = {"finished": False, "reading": False, "released": False}
    original_read, original_chunked = response.read, response.read_chunked
    original_release, original_close = response.release_conn, response.close

    def end(aborted: bool) -> None:
        if not state["finished"]:
            state["finished"] = True
            _finish(recorder, ex, aborted=aborted)

    def read(*args: Any, **kwargs: Any) -> bytes:
        # urllib3 releases the connection from inside read() once the body is exhausted, before
        # read() returns the last bytes: finish only after they are copied.
        state["reading"] = True
        try:
            data: bytes = original_read(*args, **kwargs)
        finally:
            state["reading"] = False
        if data and ex.resp_body is not None:
            ex.resp_body.feed(data)
            _note_decoding(response, ex, kwargs)
        if not data or state["released"] or response.isclosed():
            end(aborted=False)
        return data

    def read_chunked(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        state["reading"] = True
        try:
            _note_decoding(response, ex, kwargs)
            for chunk in original_chunked(*args, **kwargs):
                if ex.resp_body is not None:
                    ex.resp_body.feed(chunk)
                yield chunk
        finally:
            state["reading"] = False
        end(aborted=False)

    def release_conn() -> None:
        try:
            original_release()
        finally:
            if state["reading"]:
                state["released"] = True
            else:
                end(aborted=not response.isclosed())

    def close() -> None:
        try:
            original_close()
        finally:
            if not state["reading"]:
                end(aborted=True)

    response.read, response.read_chunked = read, read_chunked
    response.release_conn, response.close = release_conn, close


def _instrument_urllib3(recorder: Recorder) -> None:
    try:
        from urllib3.connectionpool import HTTPConnectionPool
    except ImportError:
        return

    def wrapper(original: Any) -> Any:
        @functools.wraps(original)
        def _make_request(
            self: Any,
            conn: Any,
            method: str,
            url: str,
            body: Any = None,
            headers: Any = None,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            if suppress_recording.get():
                return original(self, conn, method, url, body, headers, *args, **kwargs)
            try:
                default_port = 443 if self.scheme == "https" else 80
                host = self.host if self.port in (None, default_port) else f"{self.host}:{self.port}"
                target = url.encode("latin-1") if isinstance(url, str) else bytes(url)
                if target.startswith((b"http://", b"https://")):  # proxied absolute form
                    target = b"/" + target.split(b"/", 3)[-1] if target.count(b"/") >= 3 else b"/"
                ex = _start(
                    recorder,
                    method,
                    self.scheme,
                    host,
                    target,
                    _urllib3_headers(headers),
                    body,
                    (self.host, self.port or default_port),
                )
                sent, tee = _urllib3_body(body, ex)
            except Exception:  # noqa: BLE001 - a hook failure must not fail the call
                return original(self, conn, method, url, body, headers, *args, **kwargs)
            try:
                sent_headers = _listen_headers(conn)
            except Exception:  # noqa: BLE001 - then the headers the caller gave are recorded
                sent_headers = []
            try:
                response = original(self, conn, method, url, sent, headers, *args, **kwargs)
            except BaseException as exc:
                _unlisten(conn)
                if sent_headers:
                    ex.req_headers = sent_headers
                if tee is not None:
                    tee.abort_unless_done()
                _finish(recorder, ex, exc=exc)
                raise
            _unlisten(conn)
            if sent_headers:  # the request went out: record its headers as they were sent
                ex.req_headers = sent_headers
            try:
                _respond(recorder, ex, response.status, _urllib3_headers(response.headers))
                if kwargs.get("preload_content", True):
                    decoded = kwargs.get("decode_content", True) and response.headers.get("content-encoding")
                    if ex.resp_body is not None:
                        ex.resp_body.feed(response.data or b"")
                    # urllib3 already decoded it: the kept bytes are identity-encoded.
                    ex.resp_decoded = bool(decoded)
                    _finish(recorder, ex)
                else:
                    _watch_response(response, recorder, ex)
            except Exception:  # noqa: BLE001, S110 - a hook failure must not fail the call
                pass
            return response

        return _make_request

    _patch(HTTPConnectionPool, "_make_request", wrapper)


def instrument(recorder: Recorder) -> None:
    """Record outbound calls made with httpx and urllib3 (hence requests and the kubernetes client)."""
    _instrument_httpx(recorder)
    _instrument_urllib3(recorder)


def uninstrument() -> None:
    """Undo ``instrument``."""
    while _PATCHES:
        owner, name, original = _PATCHES.pop()
        setattr(owner, name, original)
