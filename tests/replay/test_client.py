"""The byte-exact sender against real local servers: exact bytes out, every response shape in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from trafficreel.replay import SendError, Target
from trafficreel.replay.testing import CaptureServer, fixed_response


async def _raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0)


def _url(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_request_bytes_arrive_exactly_and_connections_are_reused() -> None:
    """The target sees the raw target and headers as written; one connection serves many requests."""

    async def main() -> None:
        async with CaptureServer(fixed_response(201, b"made")) as server:
            target = Target(server.url)
            raw = b"POST /a%2F%FF?x=1&x=2 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\ncontent-length: 3\r\n\r\nabc"
            for _ in range(3):
                reply = await target.send(raw)
                assert (reply.status, reply.body) == (201, b"made")
            assert target.connections_opened == 1
            seen = server.requests[0]
            assert (seen.method, seen.target, seen.body) == (b"POST", b"/a%2F%FF?x=1&x=2", b"abc")
            assert seen.headers == [
                (b"Host", b"h"),
                (b"X-A", b"1"),
                (b"x-a", b"2"),
                (b"content-length", b"3"),
            ]
            target.close()

    asyncio.run(main())


def test_head_interim_chunked_and_close_delimited_responses() -> None:
    """HEAD ignores Content-Length, 100 Continue is skipped, chunked and read-to-close bodies are read."""
    responses = iter(
        [
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n",  # to HEAD: no body follows
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-close",
        ]
    )

    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError:
                break
            response = next(responses)
            writer.write(response)
            await writer.drain()
            if b"connection: close" in response:
                break
        writer.close()

    async def main() -> None:
        server = await _raw_server(handle)
        target = Target(_url(server))
        head = await target.send(b"HEAD / HTTP/1.1\r\nhost: h\r\n\r\n", head=True)
        assert (head.status, head.body) == (200, b"")
        raw = b"GET /\xe9t\xe9 HTTP/1.1\r\nHOST: h\r\nexpect: 100-continue\r\nX: \xff\r\n\r\n"
        chunked = await target.send(raw)
        assert heads[1] == raw  # written exactly, raw bytes and all
        assert (chunked.status, chunked.body) == (200, b"abcde")
        closing = await target.send(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        assert closing.body == b"until-close"
        assert target.connections_opened == 1
        target.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_timeouts_refusals_and_aborts_are_send_errors() -> None:
    """A silent target times out, a closed port is a connect error, an injected abort says so."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await reader.read()  # until the client gives up and closes
        writer.close()

    async def main() -> None:
        server = await _raw_server(silent)
        with pytest.raises(SendError) as timed_out:
            await Target(_url(server), timeout=0.2).send(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        assert timed_out.value.kind == "timeout"
        url = _url(server)
        server.close()
        await server.wait_closed()
        with pytest.raises(SendError) as refused:
            await Target(url).send(b"GET / HTTP/1.1\r\n\r\n")
        assert refused.value.kind == "connect"
        async with CaptureServer() as capture:
            with pytest.raises(SendError) as aborted:
                await Target(capture.url).send(b"POST / HTTP/1.1\r\ncontent-length: 4\r\n\r\nbody", cut=10)
            assert aborted.value.kind == "aborted"
            await asyncio.sleep(0.05)
            assert capture.requests == []

    asyncio.run(main())


def test_targets_are_origins() -> None:
    """A target with a path or another scheme is refused with what to do instead."""
    with pytest.raises(ValueError, match="path-prefix"):
        Target("http://h:1/prefix")
    with pytest.raises(ValueError, match="origin"):
        Target("ftp://h")
