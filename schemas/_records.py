"""Typed views of the Avro record, as the codec reads and writes it.

Records are plain dicts (fastavro's native form, no conversion cost); these TypedDicts give them
names and let mypy check producers and consumers. Timestamps are integers (microseconds since the
epoch) and ids are strings: the codec does not convert logical types.
"""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = [
    "Body",
    "BodyState",
    "Direction",
    "Exchange",
    "Header",
    "Outcome",
    "OutcomeKind",
    "Peer",
    "Redaction",
    "Request",
    "Response",
    "Source",
    "Trace",
    "blank_body",
]

Direction = Literal["UNKNOWN", "INBOUND", "OUTBOUND"]
BodyState = Literal["UNKNOWN", "NONE", "COMPLETE", "TRUNCATED", "NOT_KEPT", "ABORTED"]
OutcomeKind = Literal["UNKNOWN", "COMPLETED", "RAISED", "DISCONNECTED"]


class Header(TypedDict):
    name: bytes
    value: bytes


class Body(TypedDict):
    data: bytes | None
    size: int
    sha256: bytes | None
    content_type: str | None
    content_encoding: str | None
    declared_length: int | None
    state: BodyState


class Source(TypedDict):
    service: str
    service_version: str | None
    pod: str | None
    namespace: str | None
    node: str | None
    container_id: str | None
    k8s_api_host: str | None
    recorder: str | None


class Peer(TypedDict):
    remote_address: str | None
    remote_port: int | None
    local_address: str | None
    local_port: int | None
    forwarded_for: str | None


class Request(TypedDict):
    method: str
    scheme: str
    host: str | None
    path: bytes
    query: bytes
    http_version: str
    headers: list[Header]
    body: Body


class Response(TypedDict):
    status: int | None
    headers: list[Header]
    trailers: list[Header]
    body: Body


class Outcome(TypedDict):
    kind: OutcomeKind
    exception_type: str | None
    exception_message: str | None
    response_started: bool


class Trace(TypedDict):
    trace_id: str | None
    span_id: str | None
    sampled: bool | None


class Redaction(TypedDict):
    location: str
    rule: str
    stage: str


class Exchange(TypedDict):
    id: str
    start_time: int
    duration_us: int
    direction: Direction
    source: Source
    peer: Peer
    request: Request
    response: Response
    outcome: Outcome
    trace: Trace
    traffic_class: str | None
    class_rule: str | None
    route: str | None
    sample_weight: float | None
    redactions: list[Redaction]
    tags: dict[str, str]


def blank_body() -> Body:
    """Return the body of an exchange that carried none."""
    return {
        "data": None,
        "size": 0,
        "sha256": None,
        "content_type": None,
        "content_encoding": None,
        "declared_length": None,
        "state": "NONE",
    }
