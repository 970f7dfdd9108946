"""Hypothesis strategies for exchange records, with arbitrary bytes where the wire allows them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from trafficreel.schemas import Exchange

_text = st.text(max_size=40)
_opt_text = st.none() | _text
_long = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_int = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_headers = st.lists(
    st.fixed_dictionaries({"name": st.binary(max_size=30), "value": st.binary(max_size=60)}), max_size=8
)
_body = st.fixed_dictionaries(
    {
        "data": st.none() | st.binary(max_size=300),
        "size": _long,
        "sha256": st.none() | st.binary(min_size=32, max_size=32),
        "content_type": _opt_text,
        "content_encoding": _opt_text,
        "declared_length": st.none() | _long,
        "state": st.sampled_from(["UNKNOWN", "NONE", "COMPLETE", "TRUNCATED", "NOT_KEPT", "ABORTED"]),
    }
)


def exchanges() -> st.SearchStrategy[Exchange]:
    """Records that fill every field, including bytes that are not valid UTF-8."""
    record: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "start_time": _long,
            "duration_us": _long,
            "direction": st.sampled_from(["UNKNOWN", "INBOUND", "OUTBOUND"]),
            "source": st.fixed_dictionaries(
                {
                    "service": _text,
                    "service_version": _opt_text,
                    "pod": _opt_text,
                    "namespace": _opt_text,
                    "node": _opt_text,
                    "container_id": _opt_text,
                    "k8s_api_host": _opt_text,
                    "recorder": _opt_text,
                }
            ),
            "peer": st.fixed_dictionaries(
                {
                    "remote_address": _opt_text,
                    "remote_port": st.none() | _int,
                    "local_address": _opt_text,
                    "local_port": st.none() | _int,
                    "forwarded_for": _opt_text,
                }
            ),
            "request": st.fixed_dictionaries(
                {
                    "method": _text,
                    "scheme": _text,
                    "host": _opt_text,
                    "path": st.binary(max_size=80),
                    "query": st.binary(max_size=80),
                    "http_version": _text,
                    "headers": _headers,
                    "body": _body,
                }
            ),
            "response": st.fixed_dictionaries(
                {
                    "status": st.none() | _int,
                    "headers": _headers,
                    "trailers": _headers,
                    "body": _body,
                }
            ),
            "outcome": st.fixed_dictionaries(
                {
                    "kind": st.sampled_from(["UNKNOWN", "COMPLETED", "RAISED", "DISCONNECTED"]),
                    "exception_type": _opt_text,
                    "exception_message": _opt_text,
                    "response_started": st.booleans(),
                }
            ),
            "trace": st.fixed_dictionaries(
                {"trace_id": _opt_text, "span_id": _opt_text, "sampled": st.none() | st.booleans()}
            ),
            "traffic_class": _opt_text,
            "class_rule": _opt_text,
            "route": _opt_text,
            "sample_weight": st.none() | st.floats(allow_nan=False),
            "redactions": st.lists(
                st.fixed_dictionaries({"location": _text, "rule": _text, "stage": _text}), max_size=3
            ),
            "tags": st.dictionaries(_text, _text, max_size=4),
        }
    )
    return record  # type: ignore[return-value]
