"""What the ``trafficreel`` commands share: consoles, error reporting, settings, time parsing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from trafficreel.schemas import Deserializer

from .config import Settings
from .errors import TrafficreelError
from .render import json_default, jsonable

__all__ = [
    "cell",
    "deserializer_for",
    "err",
    "fit_output",
    "key_values",
    "out",
    "parse_time",
    "plain",
    "reported",
    "settings_of",
]


out = Console(highlight=False, soft_wrap=True)


def fit_output() -> None:
    """Output to a file or a pipe is not cut to 80 columns (what rich assumes when there is no
    terminal to ask): a report's or a query's table keeps its cells whole. COLUMNS still rules.
    (Decided per command: the same process may print to a terminal and to a pipe.)"""
    out.width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 240  # type: ignore[assignment]


err = Console(stderr=True, highlight=False, soft_wrap=True)


def key_values(items: list[str] | None, option: str) -> dict[str, str] | None:
    if not items:
        return None
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        pairs[key.strip()] = value
    return pairs


@contextlib.contextmanager
def reported(code: int = 1) -> Iterator[None]:
    """Report trafficreel's own errors as one line on stderr and exit with ``code``; no traceback."""
    try:
        yield
    except TrafficreelError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(code) from exc


def settings_of(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> int:
    """Unix time in ms from ISO-8601 (UTC if no zone), a relative age (90s, 15m, 2h, 1d) or epoch ms."""
    text = text.strip()
    rel = _RELATIVE.match(text)
    if rel:
        age = float(rel.group(1)) * _UNIT_SECONDS[rel.group(2)]
        return int(((time.time() if now is None else now) - age) * 1000)
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not a time; use ISO-8601 (2026-11-26T10:00:00Z), an age (15m, 2h) or epoch ms",
            param_hint="--since",
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def deserializer_for(settings: Settings) -> Deserializer:
    from .codec import deserializer

    return deserializer(settings)


def cell(value: Any) -> str:
    """A value as a table or CSV cell: bytes as text (undecodable bytes escaped), None as nothing,
    arrays, tuples and maps as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(jsonable(value), default=json_default, ensure_ascii=False)
    return "" if value is None else str(value)


def plain(value: Any) -> Text:
    """A cell shown as it is: data such as ``filter[status]=open`` is not read as rich markup."""
    return Text(cell(value))
