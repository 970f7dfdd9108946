"""Errors of replay.

    ReplayError
    ├── TargetNotAllowedError   the target is not on the allowlist; nothing was sent
    ├── SelectionError     the selection (offsets, times, SQL) cannot be resolved
    ├── RewriteError       a rewrite rule is invalid
    └── SendError          one request could not be sent or answered (connect, reset, timeout)

Messages are full sentences that say what to do next.
"""

from __future__ import annotations

from trafficreel.errors import TrafficreelError

__all__ = ["ReplayError", "RewriteError", "SelectionError", "SendError", "TargetNotAllowedError"]


class ReplayError(TrafficreelError):
    """Base class of replay errors."""


class TargetNotAllowedError(ReplayError):
    """The target is not on the allowlist; nothing was sent to it."""


class SelectionError(ReplayError):
    """The records to replay could not be selected."""


class RewriteError(ReplayError):
    """A rewrite rule is invalid."""


class SendError(ReplayError):
    """A request could not be sent or its response not read.

    ``kind`` is one of ``connect``, ``reset``, ``timeout``, ``protocol`` or ``aborted`` (a fault
    injected on purpose).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
