"""Bad input, property-based: the decoder, the stream processor, the classifier, the route
normaliser and the redactor turn anything into a result or a typed, exact error; secrets planted
anywhere in a body never survive redaction."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import exchanges
from tests.streams.support import TOPICS, exchange
from trafficreel.producers._deep import DeepRedactor
from trafficreel.schemas import DecodeError, DecodeReason, Deserializer, Exchange, Serializer
from trafficreel.streams import Classifier, DeadLetter, Processed, Processor, StreamRules
from trafficreel.streams._routes import normalise_path

SERIALIZER, DESERIALIZER = Serializer(), Deserializer()
PROCESSOR = Processor(StreamRules(), TOPICS)
REASONS = set(get_args(DecodeReason))
VALID = SERIALIZER(exchange())
BUDGET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid record with bytes flipped, cut, or inserted: the inputs a broken producer sends."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@given(st.binary(max_size=400) | damaged())
@BUDGET
def test_any_bytes_decode_or_fail_with_an_exact_reason(value: bytes) -> None:
    """The decoder returns a record or raises DecodeError with one of its fixed reasons, nothing else."""
    reason = None
    try:
        DESERIALIZER(value)
    except DecodeError as exc:
        reason = exc.reason
    assert reason is None or reason in REASONS


@given(st.binary(max_size=400) | damaged())
@BUDGET
def test_the_processor_routes_or_dead_letters_anything(value: bytes) -> None:
    """Any value becomes a routed (or counted) record or a dead letter whose reason is exact."""
    result = PROCESSOR.process(value, "t.raw")
    if isinstance(result, DeadLetter):  # only what the decoder refused; no crash hides behind one
        assert result.stage == "decode" and result.reason in REASONS, (
            result.stage,
            result.reason,
            result.detail,
        )
    else:
        assert isinstance(result, Processed)


@given(exchanges())
@BUDGET
def test_classification_and_routes_hold_for_arbitrary_records(record: Exchange) -> None:
    """Any record gets a class and a rule; any path gets a route with the same number of segments."""
    cls, rule = Classifier().classify(record)
    assert cls and rule
    path = record["request"]["path"].decode("latin-1")
    route = normalise_path(path)
    assert isinstance(route, str)
    if len(path) < 200:
        assert route.count("/") == path.count("/")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
SECRET = "s3cr3t-PLANTED-value-77"


@st.composite
def planted(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON document with a secret under a denylisted key at a random depth."""
    key = draw(st.sampled_from(["password", "api_key", "client_secret", "access_token", "db_password"]))
    document: Any = {key: SECRET}
    for _ in range(draw(st.integers(0, 4))):
        wrapper = draw(st.sampled_from(["object", "array"]))
        document = {draw(st.text(min_size=1, max_size=6)): document} if wrapper == "object" else [document]
    noise = draw(_json)
    return ([noise, document] if draw(st.booleans()) else {"noise": noise, "data": document}), key


@given(planted(), st.booleans(), st.sampled_from(["request", "response"]))
@BUDGET
def test_planted_json_secrets_never_survive_redaction(doc: tuple[Any, str], gzipped: bool, part: str) -> None:
    """A secret under a denylisted key, at any depth, plain or gzip, is gone from every byte of the
    record after redaction, and the redaction is listed."""
    document, _ = doc
    body = json.dumps(document).encode()
    record = copy.deepcopy(exchange())
    target = record[part]["body"]  # type: ignore[literal-required]
    target.update(
        data=gzip.compress(body) if gzipped else body,
        state="COMPLETE",
        content_type="application/json",
        content_encoding="gzip" if gzipped else None,
    )
    DeepRedactor().redact(record)
    out = SERIALIZER(record)
    kept = target["data"] or b""
    assert SECRET.encode() not in out
    assert SECRET.encode() not in (gzip.decompress(kept) if gzipped and kept else kept)
    assert record["redactions"], "a redaction was made and must be listed"


@given(
    st.text(max_size=60),
    st.text(max_size=60),
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded"]),
)
@BUDGET
def test_bearer_tokens_in_text_never_survive(before: str, after: str, content_type: str) -> None:
    """A bearer token anywhere in a kept text body is redacted, whatever surrounds it."""
    record = copy.deepcopy(exchange())
    body = f"{before} Bearer {SECRET} {after}".encode()
    record["request"]["body"].update(
        data=body, state="COMPLETE", content_type=content_type, content_encoding=None
    )
    DeepRedactor().redact(record)
    assert SECRET.encode() not in SERIALIZER(record)
