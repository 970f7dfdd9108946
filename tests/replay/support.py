"""Records shaped for replay tests."""

from __future__ import annotations

import copy
from typing import Any

from trafficreel.schemas import Exchange, sample_exchange


def record(
    seed: int = 1,
    *,
    method: str = "GET",
    path: bytes = b"/v1/items/1",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
    state: str | None = None,
    start_us: int | None = None,
    status: int = 200,
    response_body: bytes = b'{"ok": true}',
    route: str | None = None,
    **changes: Any,
) -> Exchange:
    """A recorded exchange with the request parts replay looks at set as given."""
    rec = copy.deepcopy(sample_exchange(seed))
    request = rec["request"]
    request["method"], request["path"], request["query"] = method, path, query
    request["headers"] = [
        {"name": n, "value": v} for n, v in (headers if headers is not None else [(b"host", b"shop")])
    ]
    request["body"].update(
        data=body,
        size=len(body or b""),
        state=state or ("COMPLETE" if body else "NONE"),  # type: ignore[typeddict-item]
        declared_length=len(body) if body else None,
    )
    if start_us is not None:
        rec["start_time"] = start_us
    rec["response"]["status"] = status
    rec["response"]["headers"] = [{"name": b"content-type", "value": b"application/json"}]
    rec["response"]["body"].update(
        data=response_body,
        size=len(response_body),
        state="COMPLETE" if response_body else "NONE",  # type: ignore[typeddict-item]
        content_type="application/json",
        content_encoding=None,
    )
    rec["route"] = route
    rec["redactions"] = []
    for key, value in changes.items():
        rec[key] = value  # type: ignore[literal-required]
    return rec


class ThreadedCapture:
    """A CaptureServer on its own event loop thread, for code that runs its own loop (the CLI)."""

    def __init__(self, respond: Any = None) -> None:
        import asyncio
        import threading

        from trafficreel.replay.testing import CaptureServer

        self.server = CaptureServer(respond)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedCapture:
        import asyncio

        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return self.server.url
