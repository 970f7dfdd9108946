"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, latencies per request."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

__all__ = ["LoadResult", "run_load"]


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def _connection(
    port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()


def run_load(port: int, request: bytes, *, connections: int, seconds: float) -> LoadResult:
    """Drive the server with `connections` keep-alive clients for `seconds`; return latency and rate."""
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(_connection(port, request, deadline, latencies, errors) for _ in range(connections))
        )
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    ordered = sorted(latencies)
    return LoadResult(
        len(ordered),
        elapsed,
        statistics.median(ordered) * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        len(errors),
    )
