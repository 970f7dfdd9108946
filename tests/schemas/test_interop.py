"""Records written by the codec are read by Apache Avro's own Python implementation, from the .avsc alone."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema

from trafficreel.schemas import (
    SINGLE_OBJECT_MAGIC,
    Deserializer,
    Serializer,
    exchange_schema,
    exchange_schema_path,
    sample_exchange,
)


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def test_apache_avro_decodes_codec_output_from_the_avsc() -> None:
    """Apache avro reads our single-object bytes with nothing but the .avsc file."""
    avsc_text = exchange_schema_path().read_text()
    schema = avro.schema.parse(avsc_text)
    record = sample_exchange(20)
    data = Serializer()(record)

    assert data[:2] == SINGLE_OBJECT_MAGIC
    body = io.BytesIO(data[10:])
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(body))
    assert body.read() == b""
    # Apache avro applies logical types: the id comes back as a UUID string, the time as a datetime.
    assert str(decoded["id"]) == record["id"]
    assert int(decoded["start_time"].timestamp() * 1_000_000) == record["start_time"]
    assert decoded["request"]["path"] == record["request"]["path"]
    assert decoded["request"]["headers"] == record["request"]["headers"]
    assert decoded["response"]["body"]["sha256"] == record["response"]["body"]["sha256"]
    assert decoded["tags"] == record["tags"]


def test_fingerprint_is_the_specs_crc64_of_the_canonical_form() -> None:
    """The 8 fingerprint bytes equal Apache avro's CRC-64-AVRO of the schema's Parsing Canonical Form.

    The spec strips logicalType when forming the canonical form; avro 1.12's Python parser keeps
    {"type": "string"} for a logical-typed primitive instead of "string", so it is given the schema
    with logical types removed, which is exactly the canonical input the spec (and Java) use.
    """
    raw = json.loads(exchange_schema_path().read_text())
    apache = avro.schema.parse(json.dumps(_without_logical_types(raw)))
    data = Serializer()(sample_exchange(21))
    assert data[2:10] == apache.fingerprint("CRC-64-AVRO") == exchange_schema().fingerprint


def test_codec_reads_what_apache_avro_writes() -> None:
    """Bytes written by Apache avro, framed as single-object, decode with our codec."""
    schema = avro.schema.parse(exchange_schema_path().read_text())
    record = sample_exchange(22)
    datum: dict[str, Any] = json.loads(json.dumps(record, default=lambda b: b.decode("latin-1")))
    # Re-create the bytes fields and the logical-typed values the way Apache avro expects them.
    datum["request"] = dict(record["request"])
    datum["response"] = dict(record["response"])
    import datetime as dt
    import uuid

    datum["id"] = str(uuid.UUID(record["id"]))
    datum["start_time"] = dt.datetime.fromtimestamp(record["start_time"] / 1e6, tz=dt.UTC)
    out = io.BytesIO()
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(out))
    framed = SINGLE_OBJECT_MAGIC + exchange_schema().fingerprint + out.getvalue()
    assert Deserializer()(framed) == record
