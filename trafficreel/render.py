"""Records as JSON-ready objects and as one-line summaries for people.

JSON: bytes that are valid UTF-8 become strings; other bytes become ``{"base64": "..."}``, so no
byte is lost or guessed; SHA-256 digests become hex; times stay integers (microseconds).
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from trafficreel.schemas import Body, Exchange

__all__ = ["json_default", "jsonable", "summary_line"]


def jsonable(value: Any, key: str = "") -> Any:
    """Turn a decoded record (or any part of it) into JSON-ready values."""
    if isinstance(value, bytes):
        if key == "sha256":
            return value.hex()
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: jsonable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """For ``json.dumps(default=…)``: what ClickHouse rows hold besides JSON's own types (UUIDs,
    times as ISO-8601, decimals and IP addresses as text)."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return jsonable(bytes(value))
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)  # UUID, Decimal, IPv4Address, IPv6Address …


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _body(body: Body) -> str:
    if body["state"] == "NONE":
        return "-"
    return f"{body['size']}B {body['state'].lower()}"


def summary_line(record: Exchange) -> str:
    """One readable line: time, direction, status, method, target, duration, bodies, class, id."""
    req, resp = record["request"], record["response"]
    when = dt.datetime.fromtimestamp(record["start_time"] / 1e6, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    target = _text(req["path"]) + ("?" + _text(req["query"]) if req["query"] else "")
    status = str(resp["status"]) if resp["status"] is not None else record["outcome"]["kind"].lower()
    arrow = "<-" if record["direction"] == "INBOUND" else "->"
    parts = [
        when,
        arrow,
        record["source"]["service"],
        status,
        req["method"],
        f"{req['host'] or ''}{target}",
        f"{record['duration_us'] / 1000:.1f}ms",
        f"req={_body(req['body'])}",
        f"resp={_body(resp['body'])}",
    ]
    if record["traffic_class"]:
        parts.append(f"class={record['traffic_class']}")
    if record["route"]:
        parts.append(f"route={record['route']}")
    parts.append(record["id"])
    return " ".join(parts)
