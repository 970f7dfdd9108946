"""A fast HTTP/1.1 target for replay benchmarks: ``python -m bench._target PORT``, answers every
request with the same small JSON response, on uvloop."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from trafficreel.replay.testing import CaptureServer, fixed_response

BODY = b'{"ok": true}'


async def _serve(port: int) -> None:
    server = CaptureServer(
        fixed_response(200, BODY, ((b"content-type", b"application/json"),)), port=port, keep=False
    )
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1])))
