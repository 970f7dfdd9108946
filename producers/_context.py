"""A context-variable switch: nothing is recorded while it is on.

The recorder's own thread turns it on, so trafficreel never records its own Kafka, schema registry
or ClickHouse calls; applications can use ``with not_recorded():`` for calls they want left out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["not_recorded", "suppress_recording"]

suppress_recording: ContextVar[bool] = ContextVar("trafficreel_suppress_recording", default=False)


@contextlib.contextmanager
def not_recorded() -> Iterator[None]:
    """Leave every HTTP exchange inside this block unrecorded (inbound and outbound)."""
    token = suppress_recording.set(True)
    try:
        yield
    finally:
        suppress_recording.reset(token)
